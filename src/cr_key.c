/* Argument keys (SPEC 3.2) and function identities (SPEC 3.1).
 *
 * Every value is written as a type tag followed by its bytes, so 1, 1.0,
 * "1", true and {1} never meet. Tables are written as the canonical array
 * part 1..n (up to the first nil) and then the remaining pairs sorted by
 * their serialized key, so equal tables give equal bytes whatever their
 * insertion order. The bytes are hashed with XXH3 and, up to
 * CR_KEY_INLINE_MAX, kept in the entry and compared on lookup. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
/* Inlined from the header: keys are short, and a call into the shared
 * library costs more than hashing them (make bench, scalar rows). */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "cr.h"

enum {
  TAG_NIL = 0x00, TAG_FALSE, TAG_TRUE, TAG_INT, TAG_FLOAT, TAG_STRING,
  TAG_TABLE, TAG_CYCLE, TAG_LFUNC, TAG_CFUNC, TAG_REPLACED, TAG_CACHED,
  TAG_ARRAY_END, TAG_END, TAG_CALLABLE
};

typedef struct pair_rec {
  uint64_t prefix; /* first 8 key bytes, big-endian, zero-padded: most compares end here */
  size_t off;      /* offset of the pair in out */
  size_t klen;     /* bytes of its key */
  size_t len;      /* bytes of key and value */
} pair_rec;

typedef struct ser {
  lua_State *L;
  cr_state *S;
  cr_keybufs *kb;
  int hf;                 /* stack index of the hash_funcs table, 0 = none */
  const char *fname;      /* display name, for errors */
  const cr_func *func;    /* names parameters in errors; NULL outside calls */
  int fidx;               /* where its cr_func userdata is (a stack or upvalue index) */
  const char *argname;    /* a fixed name for errors, else looked up */
  int argpos;
  const void *path[CR_MAX_DEPTH + 2]; /* tables on the current path */
} ser;

static void ser_value(ser *s, int idx, int depth, int use_hf);

/* ---- scratch buffers ------------------------------------------------- */

void cr_keybufs_free(cr_keybufs *kb) {
  cr_buffer_free(&kb->out);
  cr_buffer_free(&kb->pairs);
  cr_buffer_free(&kb->tmp);
}

int cr_keybufs_gc(lua_State *L) {
  cr_keybufs_free((cr_keybufs *)luaL_checkudata(L, 1, CR_BOX_MT));
  return 0;
}

cr_keybufs *cr_keybufs_box(lua_State *L) {
  cr_keybufs *kb = (cr_keybufs *)lua_newuserdatauv(L, sizeof *kb, 0);
  memset(kb, 0, sizeof *kb);
  luaL_setmetatable(L, CR_BOX_MT);
  return kb;
}

/* The state's buffers when free, else a boxed set left on the stack. */
static cr_keybufs *take_bufs(lua_State *L, cr_state *S) {
  cr_keybufs *kb = &S->keybufs;
  if (kb->busy) kb = cr_keybufs_box(L);
  kb->busy = 1;
  kb->out.len = kb->pairs.len = kb->tmp.len = 0;
  return kb;
}

/* ---- errors ---------------------------------------------------------- */

static const char *param_name(lua_State *L, const cr_func *f, int fidx, int i) {
  /* only on the error path: the wrapped function is uservalue 1 of the cr_func */
  const char *name = NULL;
  if (i > f->nparams) return NULL;
  if (lua_getiuservalue(L, fidx, 1) == LUA_TTABLE) {
    if (lua_getmetatable(L, -1)) {
      lua_getfield(L, -1, "__call");
      lua_replace(L, -3);
      lua_pop(L, 1);
    }
    i++; /* self comes first */
  }
  if (lua_isfunction(L, -1) && !lua_iscfunction(L, -1)) name = lua_getlocal(L, NULL, i);
  lua_pop(L, 1);
  return name;
}


/* The parameter's name, else '#position' (varargs, C functions). */
static void arg_desc(ser *s, char *buf, size_t size) {
  if (s->argname == NULL && s->func) s->argname = param_name(s->L, s->func, s->fidx, s->argpos);
  if (s->argname) snprintf(buf, size, "%s", s->argname);
  else snprintf(buf, size, "#%d", s->argpos);
}

static int ser_fail(ser *s, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  s->kb->busy = 0; /* nothing holds the buffers once we unwind */
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return luaL_error(s->L, "%s", msg);
}

static const char *mt_name(lua_State *L, int idx) {
  const char *name = NULL;
  if (lua_getmetatable(L, idx)) {
    if (lua_getfield(L, -1, "__name") == LUA_TSTRING) name = lua_tostring(L, -1);
    lua_pop(L, 2); /* the string stays alive: the metatable still holds it */
  }
  return name;
}

static void unhashable(ser *s, int idx, int depth) {
  lua_State *L = s->L;
  char arg[128], under[130];
  const char *tname = luaL_typename(L, idx);
  const char *mname = mt_name(L, idx);
  char what[160];
  arg_desc(s, arg, sizeof arg);
  snprintf(under, sizeof under, "_%s", s->argname ? s->argname : "conn");
  if (mname) snprintf(what, sizeof what, "%s '%s'", tname, mname);
  else snprintf(what, sizeof what, "%s", tname);
  ser_fail(s,
           "cache_resource: cannot hash argument '%s' (%s%s) of %s: prefix the parameter "
           "with an underscore ('%s') to leave it out of the key, or give "
           "hash_funcs = { [\"%s\"] = function(v) return <a hashable value> end }",
           arg, depth ? "a table holding a " : "a ", what, s->fname,
           under, mname ? mname : tname);
}

/* ---- scalars --------------------------------------------------------- */

static inline unsigned char *room(lua_State *L, cr_buffer *b, size_t n) {
  if (b->cap - b->len < n) cr_buffer_reserve(L, b, n);
  return b->data + b->len;
}

/* 8 bytes, little-endian on every host: one store where the host is. */
static inline unsigned char *put_u64(unsigned char *p, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(p, &v, 8);
#else
  int i;
  for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
#endif
  return p + 8;
}

/* memcpy, but short strings (most keys) without a library call. */
static inline void copy_bytes(unsigned char *p, const char *s, size_t n) {
  if (n > 16) {
    memcpy(p, s, n);
    return;
  }
  while (n--) *p++ = (unsigned char)*s++;
}

static inline unsigned char *put_varint(unsigned char *p, uint64_t v) {
  do {
    unsigned char c = (unsigned char)(v & 0x7f);
    v >>= 7;
    *p++ = (unsigned char)(c | (v ? 0x80 : 0));
  } while (v);
  return p;
}

/* One scalar of type t, with a single capacity check. */
static void ser_scalar_t(ser *s, int idx, int t) {
  lua_State *L = s->L;
  cr_buffer *b = &s->kb->out;
  unsigned char *p;
  if (t == LUA_TSTRING) {
    size_t len;
    const char *str = lua_tolstring(L, idx, &len);
    p = room(L, b, 11 + len);
    *p++ = TAG_STRING;
    p = put_varint(p, len);
    memcpy(p, str, len);
    b->len = (size_t)(p + len - b->data);
    return;
  }
  p = room(L, b, 9);
  if (t == LUA_TNUMBER) {
    if (lua_isinteger(L, idx)) {
      *p++ = TAG_INT;
      p = put_u64(p, (uint64_t)lua_tointeger(L, idx));
    } else {
      double d = (double)lua_tonumber(L, idx);
      uint64_t bits;
      if (d != d) bits = UINT64_C(0x7ff8000000000000); /* every NaN is one key */
      else memcpy(&bits, &d, sizeof bits);            /* keeps -0.0 apart from 0.0 */
      *p++ = TAG_FLOAT;
      p = put_u64(p, bits);
    }
  } else if (t == LUA_TBOOLEAN) {
    *p++ = lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE;
  } else {
    *p++ = TAG_NIL;
  }
  b->len = (size_t)(p - b->data);
}

static int is_scalar(int t) {
  return t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING;
}

static void ser_scalar(ser *s, int idx) {
  ser_scalar_t(s, idx, lua_type(s->L, idx));
}

/* ---- functions (SPEC 3.1) -------------------------------------------- */

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  cr_buffer_put(L, (cr_buffer *)ud, p, sz);
  return 0;
}

/* Chunk name, line range and stripped bytecode of a Lua function, as 16
 * bytes; memoized per function object in a weak table. */
static void lfunc_static_id(lua_State *L, cr_state *S, int idx, unsigned char out[16]) {
  lua_Debug ar;
  XXH128_hash_t h;
  XXH128_canonical_t canon;
  unsigned char parts[48];
  size_t len;
  const char *memo;
  luaL_checkstack(L, 4, "cache_resource: function identity");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->fnids_ref);
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  memo = lua_tolstring(L, -1, &len);
  if (memo && len == 16) {
    memcpy(out, memo, 16);
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">S", &ar);
  h = XXH3_128bits(ar.source, CR_SRCLEN(ar));
  XXH128_canonicalFromHash(&canon, h);
  memcpy(parts, canon.digest, 16);
  {
    uint64_t a = (uint64_t)ar.linedefined, b = (uint64_t)ar.lastlinedefined;
    int i;
    for (i = 0; i < 8; i++) {
      parts[16 + i] = (unsigned char)(a >> (8 * i));
      parts[24 + i] = (unsigned char)(b >> (8 * i));
    }
  }
  S->dumpbuf.len = 0;
  lua_pushvalue(L, idx);
  lua_dump(L, dump_writer, &S->dumpbuf, 1);
  lua_pop(L, 1);
  h = XXH3_128bits(S->dumpbuf.data, S->dumpbuf.len);
  XXH128_canonicalFromHash(&canon, h);
  memcpy(parts + 32, canon.digest, 16);
  h = XXH3_128bits(parts, sizeof parts);
  XXH128_canonicalFromHash(&canon, h);
  memcpy(out, canon.digest, 16);
  lua_pushvalue(L, idx);
  lua_pushlstring(L, (const char *)out, 16);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Scalar upvalues, each with its index; tables and functions do not count. */
static void ser_upvalues(ser *s, int idx) {
  lua_State *L = s->L;
  int i;
  for (i = 1; lua_getupvalue(L, idx, i) != NULL; i++) {
    if (is_scalar(lua_type(L, -1))) {
      cr_buffer_varint(L, &s->kb->out, (uint64_t)i);
      ser_scalar(s, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
  cr_buffer_byte(L, &s->kb->out, TAG_END);
}

static void ser_function(ser *s, int idx) {
  lua_State *L = s->L;
  cr_func *cached;
  luaL_checkstack(L, 4, "cache_resource: function key");
  if ((cached = cr_func_of(L, idx)) != NULL) { /* a cached function: by its cache's identity */
    cr_buffer_byte(L, &s->kb->out, TAG_CACHED);
    cr_buffer_put(L, &s->kb->out, cached->cache->id, 16);
    return;
  }
  if (lua_iscfunction(L, idx)) {
    lua_CFunction cf = lua_tocfunction(L, idx);
    unsigned char p[sizeof cf];
    memcpy(p, &cf, sizeof cf);
    cr_buffer_byte(L, &s->kb->out, TAG_CFUNC);
    cr_buffer_put(L, &s->kb->out, p, sizeof p);
  } else {
    unsigned char id[16];
    lfunc_static_id(L, s->S, idx, id);
    cr_buffer_byte(L, &s->kb->out, TAG_LFUNC);
    cr_buffer_put(L, &s->kb->out, id, 16);
  }
  ser_upvalues(s, idx);
}

/* ---- tables ---------------------------------------------------------- */

static int pair_cmp(const unsigned char *base, const pair_rec *a, const pair_rec *b) {
  size_t m = a->klen < b->klen ? a->klen : b->klen;
  int c;
  if (a->prefix != b->prefix) return a->prefix < b->prefix ? -1 : 1; /* same order as memcmp */
  c = memcmp(base + a->off, base + b->off, m);
  if (c) return c;
  if (a->klen != b->klen) return a->klen < b->klen ? -1 : 1;
  /* equal keys only come from equal-content table keys: order by value */
  m = a->len < b->len ? a->len : b->len;
  c = memcmp(base + a->off, base + b->off, m);
  if (c) return c;
  return a->len < b->len ? -1 : (a->len > b->len);
}

/* Stable merge sort; qsort has no context argument in C99. */
static void sort_pairs(const unsigned char *base, pair_rec *v, pair_rec *tmp, size_t n) {
  size_t i, j, k, mid;
  if (n < 2) return;
  if (n <= 8) {
    for (i = 1; i < n; i++) {
      pair_rec x = v[i];
      for (j = i; j > 0 && pair_cmp(base, &x, &v[j - 1]) < 0; j--) v[j] = v[j - 1];
      v[j] = x;
    }
    return;
  }
  mid = n / 2;
  sort_pairs(base, v, tmp, mid);
  sort_pairs(base, v + mid, tmp, n - mid);
  for (i = 0, j = mid, k = 0; i < mid || j < n;) {
    if (j >= n || (i < mid && pair_cmp(base, &v[i], &v[j]) <= 0)) tmp[k++] = v[i++];
    else tmp[k++] = v[j++];
  }
  memcpy(v, tmp, n * sizeof *v);
}

static void order_pairs(ser *s, size_t first_rec, size_t region) {
  lua_State *L = s->L;
  cr_keybufs *kb = s->kb;
  size_t n = kb->pairs.len / sizeof(pair_rec) - first_rec, i, w;
  size_t bytes = kb->out.len - region;
  pair_rec *recs;
  if (n < 2) return;
  recs = (pair_rec *)(void *)kb->pairs.data + first_rec;
  for (i = 1; i < n && pair_cmp(kb->out.data, &recs[i - 1], &recs[i]) < 0; i++) {}
  if (i == n) return; /* already in canonical order */
  kb->tmp.len = 0;
  cr_buffer_reserve(L, &kb->tmp, n * sizeof(pair_rec) > bytes ? n * sizeof(pair_rec) : bytes);
  recs = (pair_rec *)(void *)kb->pairs.data + first_rec;
  sort_pairs(kb->out.data, recs, (pair_rec *)(void *)kb->tmp.data, n);
  /* rewrite the region in sorted order */
  memcpy(kb->tmp.data, kb->out.data + region, bytes);
  for (i = 0, w = region; i < n; i++) {
    memcpy(kb->out.data + w, kb->tmp.data + (recs[i].off - region), recs[i].len);
    w += recs[i].len;
  }
}

static void ser_table(ser *s, int idx, int depth) {
  lua_State *L = s->L;
  cr_keybufs *kb = s->kb;
  const void *p = lua_topointer(L, idx);
  const char *mname;
  lua_Integer n = 0;
  size_t first_rec, region;
  int i;
  if (depth > CR_MAX_DEPTH) {
    char arg[128];
    arg_desc(s, arg, sizeof arg);
    ser_fail(s, "cache_resource: cannot hash argument '%s' of %s: tables nested deeper than %d levels",
             arg, s->fname, CR_MAX_DEPTH);
  }
  for (i = 0; i < depth; i++)
    if (s->path[i] == p) {  /* a cycle back to an ancestor: fixed placeholder */
      cr_buffer_byte(L, &kb->out, TAG_CYCLE);
      return;
    }
  s->path[depth] = p;
  luaL_checkstack(L, 6, "cache_resource: table key");
  cr_buffer_byte(L, &kb->out, TAG_TABLE);
  mname = mt_name(L, idx);
  if (mname) {
    size_t ml = strlen(mname);
    cr_buffer_varint(L, &kb->out, ml + 1);
    cr_buffer_put(L, &kb->out, mname, ml);
  } else {
    cr_buffer_byte(L, &kb->out, 0);
  }
  /* array part: 1..n up to the first nil, in order */
  while (lua_rawgeti(L, idx, n + 1) != LUA_TNIL) {
    ser_value(s, lua_gettop(L), depth + 1, 1);
    lua_pop(L, 1);
    n++;
  }
  lua_pop(L, 1);
  cr_buffer_byte(L, &kb->out, TAG_ARRAY_END);
  /* everything else, sorted by serialized key */
  first_rec = kb->pairs.len / sizeof(pair_rec);
  region = kb->out.len;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    pair_rec r;
    if (n > 0 && lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k >= 1 && k <= n) {
        lua_pop(L, 1);
        continue;
      }
    }
    r.off = kb->out.len;
    ser_value(s, top - 1, depth + 1, 1);
    r.klen = kb->out.len - r.off;
    {
      size_t j;
      r.prefix = 0;
      for (j = 0; j < 8; j++) r.prefix = (r.prefix << 8) | (j < r.klen ? kb->out.data[r.off + j] : 0);
    }
    ser_value(s, top, depth + 1, 1);
    r.len = kb->out.len - r.off;
    cr_buffer_put(L, &kb->pairs, &r, sizeof r);
    lua_pop(L, 1);
  }
  order_pairs(s, first_rec, region);
  kb->pairs.len = first_rec * sizeof(pair_rec);
  cr_buffer_byte(L, &kb->out, TAG_END);
}

/* ---- hash_funcs ------------------------------------------------------ */

/* Pushes the hash function for the value at idx, if any: metatable first,
 * then its __name, then the type name. *which names the match for errors. */
static int hf_find(ser *s, int idx, const char **which) {
  lua_State *L = s->L;
  if (lua_getmetatable(L, idx)) {
    lua_pushvalue(L, -1);
    if (lua_rawget(L, s->hf) == LUA_TFUNCTION) {
      lua_remove(L, -2);
      *which = "<metatable>";
      return 1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, -1, "__name") == LUA_TSTRING) {
      *which = lua_tostring(L, -1);
      lua_pushvalue(L, -1);
      if (lua_rawget(L, s->hf) == LUA_TFUNCTION) {
        lua_replace(L, -3);
        lua_pop(L, 1);
        return 1;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  *which = luaL_typename(L, idx);
  if (lua_getfield(L, s->hf, *which) == LUA_TFUNCTION) return 1;
  lua_pop(L, 1);
  return 0;
}

static int try_hash_func(ser *s, int idx, int depth) {
  lua_State *L = s->L;
  const char *which;
  char whichbuf[128];
  luaL_checkstack(L, 8, "cache_resource: hash_funcs");
  if (!hf_find(s, idx, &which)) return 0;
  snprintf(whichbuf, sizeof whichbuf, "%s", which);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    char arg[128];
    const char *msg = lua_tostring(L, -1);
    arg_desc(s, arg, sizeof arg);
    ser_fail(s, "cache_resource: hash_funcs['%s'] of %s raised an error while hashing argument '%s': %s",
             whichbuf, s->fname, arg, msg ? msg : luaL_typename(L, -1));
  }
  cr_buffer_byte(L, &s->kb->out, TAG_REPLACED);
  s->path[depth] = NULL;
  /* the replacement is not passed to hash_funcs again, its contents are */
  ser_value(s, lua_gettop(L), depth + 1, 0);
  lua_pop(L, 1);
  return 1;
}

/* ---- values ---------------------------------------------------------- */

static void ser_value(ser *s, int idx, int depth, int use_hf) {
  lua_State *L = s->L;
  int t = lua_type(L, idx);
  if (s->hf && use_hf && t != LUA_TNIL && try_hash_func(s, idx, depth)) return;
  switch (t) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
    case LUA_TNUMBER:
    case LUA_TSTRING: ser_scalar_t(s, idx, t); break;
    case LUA_TTABLE: ser_table(s, idx, depth); break;
    case LUA_TFUNCTION: ser_function(s, idx); break;
    default: unhashable(s, idx, depth); break;
  }
}

/* ---- entry points ---------------------------------------------------- */

/* A serializer over fresh buffers; fname/func/argname name things in errors. */
static void ser_begin(ser *s, lua_State *L, cr_state *S, const char *fname, const cr_func *func,
                      const char *argname) {
  s->L = L;
  s->S = S;
  s->kb = take_bufs(L, S);
  s->fname = fname;
  s->func = func;
  s->argname = argname;
  s->argpos = 0;
  s->hf = 0;
  s->fidx = 0;
}

/* The unseeded 128-bit digest of what was serialized (hash(), identities). */
static void ser_digest(ser *s, unsigned char out[16]) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits(s->kb->out.data, s->kb->out.len));
  memcpy(out, canon.digest, 16);
  s->kb->busy = 0;
}

/* The hit path's serializer: argument lists of scalars only, no hash_funcs,
 * written into buf (CR_KEY_INLINE_MAX bytes) with exactly the bytes the
 * general serializer writes. Returns 0 when it does not apply. */
int cr_key_scalars(lua_State *L, cr_state *S, const cr_func *f, int first, int nargs, cr_key *key,
                   unsigned char *buf) {
  size_t len = 0, keep = 0; /* keep: the length up to the last non-nil argument */
  int i;
  for (i = 1; i <= nargs; i++) {
    int idx = first + i - 1, t = lua_type(L, idx);
    if (f->any_skip && i <= f->nparams && f->skip[i - 1]) {
      if (t != LUA_TNIL) keep = len;
      continue;
    }
    if (len + 10 + 9 > CR_KEY_INLINE_MAX) return 0;
    switch (t) {
      case LUA_TNIL: buf[len++] = TAG_NIL; continue; /* trailing nils drop out below */
      case LUA_TBOOLEAN: buf[len++] = lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE; break;
      case LUA_TNUMBER: {
        uint64_t v;
        if (lua_isinteger(L, idx)) {
          buf[len++] = TAG_INT;
          v = (uint64_t)lua_tointeger(L, idx);
        } else {
          double d = (double)lua_tonumber(L, idx);
          buf[len++] = TAG_FLOAT;
          if (d != d) v = UINT64_C(0x7ff8000000000000);
          else memcpy(&v, &d, sizeof v);
        }
        put_u64(buf + len, v);
        len += 8;
        break;
      }
      case LUA_TSTRING: {
        size_t sl;
        const char *p = lua_tolstring(L, idx, &sl);
        if (len + 10 + sl > CR_KEY_INLINE_MAX) return 0;
        buf[len++] = TAG_STRING;
        if (sl < 0x80) buf[len++] = (unsigned char)sl; /* a one-byte varint */
        else len = (size_t)(put_varint(buf + len, sl) - buf); /* as cr_buffer_varint writes it */
        copy_bytes(buf + len, p, sl);
        len += sl;
        break;
      }
      default: return 0;
    }
    keep = len;
  }
  key->bytes = buf;
  key->len = len = keep;
  key->is_digest = 0;
  key->bufs = NULL;
  key->hash = XXH3_64bits_withSeed(buf, len, S->seed);
  return 1;
}

static void finish_key(cr_state *S, cr_keybufs *kb, cr_key *key) {
  key->bufs = kb;
  if (kb->out.len <= CR_KEY_INLINE_MAX) {
    key->bytes = kb->out.data;
    key->len = kb->out.len;
    key->is_digest = 0;
    key->hash = XXH3_64bits_withSeed(kb->out.data, kb->out.len, S->seed);
  } else {
    XXH128_hash_t h = XXH3_128bits_withSeed(kb->out.data, kb->out.len, S->seed);
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, h);
    memcpy(key->digest, canon.digest, 16);
    key->bytes = key->digest;
    key->len = 16;
    key->is_digest = 1;
    key->hash = h.low64;
  }
}

void cr_key_for_call(lua_State *L, cr_state *S, const cr_func *f, int fidx, int first, int nargs, cr_key *key) {
  ser s;
  int i;
  while (nargs > 0 && lua_isnil(L, first + nargs - 1)) nargs--; /* trailing nils */
  ser_begin(&s, L, S, f->cache->name, f, NULL);
  s.fidx = fidx;
  if (f->cache->hash_funcs_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->cache->hash_funcs_ref);
    s.hf = lua_gettop(L);
  }
  for (i = 1; i <= nargs; i++) {
    int idx = first + i - 1, t;
    if (f->any_skip && i <= f->nparams && f->skip[i - 1]) continue;
    t = lua_type(L, idx);
    /* scalars without hash_funcs: the common case, no bookkeeping */
    if (!s.hf && is_scalar(t)) {
      ser_scalar(&s, idx);
      continue;
    }
    s.argpos = i;
    s.argname = NULL;
    ser_value(&s, idx, 0, 1);
  }
  if (s.hf) lua_remove(L, s.hf);
  finish_key(S, s.kb, key);
}

void cr_key_hash_args(lua_State *L, cr_state *S, int first, int nargs, unsigned char out[16]) {
  ser s;
  int i;
  while (nargs > 0 && lua_isnil(L, first + nargs - 1)) nargs--;
  ser_begin(&s, L, S, "cache_resource.hash", NULL, NULL);
  for (i = 1; i <= nargs; i++) {
    s.argpos = i;
    ser_value(&s, first + i - 1, 0, 1);
  }
  ser_digest(&s, out);
}

/* The identity of a cache: `name` when given, else the function (SPEC 3.1)
 * and the options it was wrapped with, so the same code wrapped with another
 * ttl is another cache. */
void cr_key_identity(lua_State *L, cr_state *S, int fn, int opts, const char *name, unsigned char out[16]) {
  ser s;
  ser_begin(&s, L, S, "cache_resource", NULL, "fn");
  s.argpos = 1;
  fn = lua_absindex(L, fn);
  if (name) {
    cr_buffer_byte(L, &s.kb->out, 'N');
    cr_buffer_put(L, &s.kb->out, name, strlen(name));
  } else {
    if (lua_istable(L, fn)) {
      /* a callable table is its own cache: tables carry state a __call reads */
      const void *p = lua_topointer(L, fn);
      unsigned char b[sizeof p];
      memcpy(b, &p, sizeof p);
      cr_buffer_byte(L, &s.kb->out, TAG_CALLABLE);
      cr_buffer_put(L, &s.kb->out, b, sizeof b);
      luaL_getmetafield(L, fn, "__call");
      ser_value(&s, lua_gettop(L), 0, 0);
      lua_pop(L, 1);
    } else {
      ser_value(&s, fn, 0, 0);
    }
    if (opts) ser_value(&s, opts, 0, 0);
  }
  ser_digest(&s, out);
}

/* The key of an entry of a cache with experimental_allow_widgets: the
 * argument key (a Lua string at argkey) followed by the values (the array
 * at `values`, n of them) of the widgets the function has read. */
void cr_key_widgets(lua_State *L, cr_state *S, int argkey, int values, int n, cr_key *key) {
  ser s;
  size_t len;
  const char *a = lua_tolstring(L, argkey, &len);
  int i;
  values = lua_absindex(L, values);
  ser_begin(&s, L, S, "a widget value", NULL, "widget");
  cr_buffer_byte(L, &s.kb->out, 'W');
  cr_buffer_varint(L, &s.kb->out, len);
  cr_buffer_put(L, &s.kb->out, a, len);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, values, i);
    ser_value(&s, lua_gettop(L), 0, 0);
    lua_pop(L, 1);
  }
  finish_key(S, s.kb, key);
}

/* For the front index (cr_front.c): when `key` is exactly the key of one
 * string (of at most CR_FRONT_MAX_STRING bytes), integer or boolean
 * argument, pushes that value and returns 1; else pushes nothing and
 * returns 0. The caller checks the result by serializing it again, so a
 * change of the key format can never make the index wrong. */
int cr_key_push_single(lua_State *L, const unsigned char *key, size_t len) {
  size_t pos = 1, slen = 0;
  int shift = 0;
  if (len == 0) return 0;
  switch (key[0]) {
    case TAG_TRUE: case TAG_FALSE:
      if (len != 1) return 0;
      lua_pushboolean(L, key[0] == TAG_TRUE);
      return 1;
    case TAG_INT: {
      uint64_t v = 0;
      int i;
      if (len != 9) return 0;
      for (i = 0; i < 8; i++) v |= (uint64_t)key[1 + i] << (8 * i);
      lua_pushinteger(L, (lua_Integer)v);
      return 1;
    }
    case TAG_STRING:
      while (pos < len && shift < 64) {
        unsigned char c = key[pos++];
        slen |= (size_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) break;
        shift += 7;
      }
      if (slen > CR_FRONT_MAX_STRING || pos + slen != len) return 0;
      lua_pushlstring(L, (const char *)key + pos, slen);
      return 1;
    default: return 0;
  }
}
