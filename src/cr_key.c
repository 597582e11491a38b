/* Argument keys and function identities.
 *
 * The canonical form
 * ------------------
 * A key is the bytes of the hashed arguments, one encoded value after the
 * other (skipped `_` parameters left out, trailing nils dropped). The key's
 * length is kept with it, and every value below is self-delimiting: it
 * starts with a tag byte, and its payload is fixed-size, length-prefixed, or
 * a list closed by a tag that can never start a value. So the encodings of
 * values form a prefix-free set, a key decodes back to exactly one argument
 * list, and two argument lists that differ never share bytes.
 *
 *   key       = value*
 *   value     = NIL | FALSE | TRUE
 *             | INT u64                two's complement, little-endian
 *             | FLOAT u64              IEEE bits, little-endian; every NaN as 0x7ff8000000000000
 *             | STRING varint(len) byte{len}
 *             | TABLE mtname value* ARRAY_END pair* END
 *             | CYCLE varint(depth)    the table at that depth of the current path
 *             | LFUNC byte{16} upvalues     digest of chunk name, line range, stripped bytecode
 *             | CFUNC u64 upvalues          the C function's address
 *             | CACHED byte{16}             the identity of a cached function's cache
 *             | REPLACED value              what a hash_funcs entry returned
 *             | OPAQUE byte(type) mtname    identities only: a userdata or thread in the options
 *   mtname    = varint(0)                   no metatable __name
 *             | varint(len + 1) byte{len}   the __name string, embedded NULs included
 *   upvalues  = varint(count) (varint(index) value){count}
 *                                           scalar upvalues only, indices increasing
 *   pair      = value value                 key then value, sorted by their bytes
 *   varint    = LEB128, 7 bits a byte, least significant first, minimal
 *
 * A table's array part is 1..n up to the first nil, in order; its other
 * pairs follow sorted by the bytes of the key (then of the value), so equal
 * tables give equal bytes whatever their insertion order. The tags
 * ARRAY_END and END close lists and never start a value. A depth counts the
 * tables and REPLACED values enclosing a value, 0 for the argument itself.
 *
 * An identity (one cache per identity) is either NAME varint(len) byte{len}
 * (the `name` option), or CALLABLE u64 value(__call) [value(options)] for a
 * callable table, or value(fn) [value(options)], options left out when
 * absent or empty; the identity of a cache_data cache is DATA followed by
 * one of those, so the same function under both decorators has two
 * caches. A widget key is WIDGETS varint(len) byte{len} value*:
 * the argument key, then the values of the widgets read.
 *
 * The bytes are hashed with XXH3 and, up to CR_KEY_INLINE_MAX, kept in the
 * entry and compared on lookup; longer keys are kept as a seeded 128-bit
 * digest. spec/keydecode.lua decodes this format for the tests and the
 * fuzzer; cache_resource.key_bytes(...) shows it. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
/* Inlined from the header: keys are short, and a call into the shared
 * library costs more than hashing them (make bench, scalar rows). */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "cr.h"

/***
Argument keys.
@module cache_resource
*/

enum {
  TAG_NIL = 0x00, TAG_FALSE, TAG_TRUE, TAG_INT, TAG_FLOAT, TAG_STRING,
  TAG_TABLE, TAG_CYCLE, TAG_LFUNC, TAG_CFUNC, TAG_REPLACED, TAG_CACHED,
  TAG_ARRAY_END, TAG_END, TAG_CALLABLE, TAG_OPAQUE, TAG_NAME, TAG_WIDGETS, TAG_DATA
};

/* Scratch buffers grown past this are freed once their key is done, so one
 * huge argument does not keep its memory for the life of the state. */
#define CR_KEY_SCRATCH_MAX (64 * 1024)

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
  const char *kind;       /* how its errors start: cache_resource or cache_data */
  const cr_func *func;    /* names parameters in errors; NULL outside calls */
  int fidx;               /* where its cr_func userdata is (a stack or upvalue index) */
  const char *argname;    /* a fixed name for errors, else looked up */
  int argpos;
  int identity;           /* an identity: userdata and threads are OPAQUE, not errors */
  int hf_name;            /* stack index of the hash_funcs key whose result is being written, 0 = none */
  int hf_depth;           /* the depth of that result */
  const void *path[CR_MAX_DEPTH + 2]; /* tables on the current path; NULL for REPLACED */
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

static void trim(cr_buffer *b) {
  if (b->cap > CR_KEY_SCRATCH_MAX) cr_buffer_free(b);
}

static void trim_bufs(cr_keybufs *kb) {
  trim(&kb->out);
  trim(&kb->pairs);
  trim(&kb->tmp);
}

/* The state's buffers when free, else a boxed set left on the stack. */
static cr_keybufs *take_bufs(lua_State *L, cr_state *S) {
  cr_keybufs *kb = &S->keybufs;
  if (kb->busy) kb = cr_keybufs_box(L);
  else trim_bufs(kb); /* outsized by a serialization that was interrupted */
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

/* Lets go of the buffers: nothing holds them once the key is done or the
 * error unwinds. */
static void ser_release(ser *s) {
  s->kb->busy = 0;
  trim_bufs(s->kb);
}

CR_NORETURN static void ser_fail(ser *s, const char *fmt, ...) {
  char msg[640];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ser_release(s);
  cr_error(s->L, "%s", msg);
}

/* The metatable's __name (read raw: no metamethod runs), with its length. */
static const char *mt_name(lua_State *L, int idx, size_t *len) {
  const char *name = NULL;
  *len = 0;
  if (lua_getmetatable(L, idx)) {
    lua_pushliteral(L, "__name");
    if (lua_rawget(L, -2) == LUA_TSTRING) name = lua_tolstring(L, -1, len);
    lua_pop(L, 2); /* the string stays alive: the metatable still holds it */
  }
  return name;
}

CR_NORETURN static void unhashable(ser *s, int idx, int depth) {
  lua_State *L = s->L;
  char arg[128], what[200];
  size_t ml;
  const char *tname = luaL_typename(L, idx);
  const char *mname = mt_name(L, idx, &ml);
  const char *fix_key = mname ? mname : tname;
  if (mname) snprintf(what, sizeof what, "a %s '%s'", tname, mname);
  else snprintf(what, sizeof what, "a %s", tname);
  arg_desc(s, arg, sizeof arg);
  if (s->hf_name) /* inside what a hash function returned: that is the mistake */
    ser_fail(s,
             "%s: hash_funcs['%s'] of %s returned %s%s for argument '%s', which cannot be "
             "hashed: a hash function must return nil, a boolean, a number, a string, a table or a function",
             s->kind, lua_tostring(L, s->hf_name), s->fname, depth > s->hf_depth ? "a table holding " : "", what, arg);
  if (s->func == NULL) /* cache_resource.hash, key_bytes, widget values: no hash_funcs to give */
    ser_fail(s, "%s: cannot hash argument '%s' (%s%s) of %s: userdata and threads have no value to hash",
             s->kind, arg, depth ? "a table holding " : "", what, s->fname);
  if (s->argname == NULL) /* an extra `...` argument or a C function's: it has no name to change */
    ser_fail(s,
             "%s: cannot hash argument '%s' (%s%s) of %s: an extra argument is always part of the "
             "key; give hash_funcs = { [\"%s\"] = function(v) return <a hashable value> end }",
             s->kind, arg, depth ? "a table holding " : "", what, s->fname, fix_key);
  ser_fail(s,
           "%s: cannot hash argument '%s' (%s%s) of %s: prefix the parameter "
           "with an underscore ('_%s') to leave it out of the key, or give "
           "hash_funcs = { [\"%s\"] = function(v) return <a hashable value> end }",
           s->kind, arg, depth ? "a table holding " : "", what, s->fname, s->argname, fix_key);
}

/* ---- writing --------------------------------------------------------- */

static void out_of_memory(ser *s, const cr_buffer *b, size_t n) {
  ser_fail(s, "%s: out of memory while building a key for %s (%zu bytes written, %zu more needed)",
           s->kind, s->fname, b->len, n);
}

/* Room for n more bytes of b; an allocation failure releases the buffers
 * before the error unwinds. */
static inline unsigned char *room(ser *s, cr_buffer *b, size_t n) {
  if (b->cap - b->len < n && !cr_buffer_grow(b, n)) out_of_memory(s, b, n);
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

static void put_byte(ser *s, unsigned char c) {
  cr_buffer *b = &s->kb->out;
  *room(s, b, 1) = c;
  b->len++;
}

/* tag, varint(n), n bytes */
static void put_framed(ser *s, unsigned char tag, const void *bytes, size_t n) {
  cr_buffer *b = &s->kb->out;
  unsigned char *p = room(s, b, 11 + n);
  *p++ = tag;
  p = put_varint(p, n);
  if (n) memcpy(p, bytes, n);
  b->len = (size_t)(p + n - b->data);
}

static void put_tag_u64(ser *s, int tag, uint64_t v) {
  cr_buffer *b = &s->kb->out;
  unsigned char *p = room(s, b, 9);
  *p++ = (unsigned char)tag;
  put_u64(p, v);
  b->len += 9;
}

static void put_varint_v(ser *s, uint64_t v) {
  cr_buffer *b = &s->kb->out;
  b->len = (size_t)(put_varint(room(s, b, 10), v) - b->data);
}

static void put_bytes(ser *s, const void *p, size_t n) {
  cr_buffer *b = &s->kb->out;
  if (n == 0) return;
  memcpy(room(s, b, n), p, n);
  b->len += n;
}

/* mtname: varint(0), or varint(len + 1) and the __name bytes. */
static void put_mtname(ser *s, const char *name, size_t len) {
  if (name == NULL) {
    put_byte(s, 0);
    return;
  }
  put_varint_v(s, (uint64_t)len + 1);
  put_bytes(s, name, len);
}

/* ---- scalars --------------------------------------------------------- */

static uint64_t float_bits(lua_Number n) {
  double d = (double)n;
  uint64_t bits;
  if (d != d) return UINT64_C(0x7ff8000000000000); /* every NaN is one key */
  memcpy(&bits, &d, sizeof bits);                 /* keeps -0.0 apart from 0.0 */
  return bits;
}

/* One scalar of type t. */
static void ser_scalar_t(ser *s, int idx, int t) {
  lua_State *L = s->L;
  if (t == LUA_TSTRING) {
    size_t len;
    const char *str = lua_tolstring(L, idx, &len);
    put_framed(s, TAG_STRING, str, len);
  } else if (t == LUA_TNUMBER) {
    if (lua_isinteger(L, idx)) put_tag_u64(s, TAG_INT, (uint64_t)lua_tointeger(L, idx));
    else put_tag_u64(s, TAG_FLOAT, float_bits(lua_tonumber(L, idx)));
  } else if (t == LUA_TBOOLEAN) {
    put_byte(s, lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE);
  } else {
    put_byte(s, TAG_NIL);
  }
}

static int is_scalar(int t) {
  return t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING;
}

/* ---- functions ------------------------------------------------------- */

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  cr_buffer *b = (cr_buffer *)ud;
  (void)L;
  if (b->cap - b->len < sz && !cr_buffer_grow(b, sz)) return 1; /* stops lua_dump */
  memcpy(b->data + b->len, p, sz);
  b->len += sz;
  return 0;
}

/* Chunk name, line range and stripped bytecode of a Lua function, as 16
 * bytes; memoized per function object in a weak table. */
static void lfunc_static_id(ser *s, int idx, unsigned char out[16]) {
  lua_State *L = s->L;
  cr_state *S = s->S;
  lua_Debug ar;
  XXH128_hash_t h;
  XXH128_canonical_t canon;
  unsigned char parts[48];
  size_t len;
  const char *memo;
  int failed;
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
  h = XXH3_128bits(ar.source, CR_SRCLEN(ar)); /* the whole chunk name */
  XXH128_canonicalFromHash(&canon, h);
  memcpy(parts, canon.digest, 16);
  put_u64(parts + 16, (uint64_t)ar.linedefined);
  put_u64(parts + 24, (uint64_t)ar.lastlinedefined);
  S->dumpbuf.len = 0;
  lua_pushvalue(L, idx);
  failed = lua_dump(L, dump_writer, &S->dumpbuf, 1) != 0;
  lua_pop(L, 1);
  if (failed) {
    lua_pop(L, 1);
    out_of_memory(s, &S->dumpbuf, 0);
  }
  h = XXH3_128bits(S->dumpbuf.data, S->dumpbuf.len);
  trim(&S->dumpbuf);
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

/* Scalar upvalues: their count, then each index and value. Tables and
 * functions do not count. */
static void ser_upvalues(ser *s, int idx) {
  lua_State *L = s->L;
  uint64_t n = 0;
  int i;
  for (i = 1; lua_getupvalue(L, idx, i) != NULL; i++) {
    n += is_scalar(lua_type(L, -1));
    lua_pop(L, 1);
  }
  put_varint_v(s, n);
  for (i = 1; n > 0 && lua_getupvalue(L, idx, i) != NULL; i++) {
    int t = lua_type(L, -1);
    if (is_scalar(t)) {
      put_varint_v(s, (uint64_t)i);
      ser_scalar_t(s, lua_gettop(L), t);
      n--;
    }
    lua_pop(L, 1);
  }
}

/* The cr_func of the cached function at idx, or NULL when it is not one.
 * A cached function is the only C closure whose upvalue 1 is a userdata
 * with the cr_func metatable (cr_wrap makes them; only the debug library
 * could make another). Known by that rather than by its C function, so
 * keys do not depend on the call path. */
cr_func *cr_func_of(lua_State *L, int idx) {
  cr_func *f;
  if (!lua_iscfunction(L, idx) || lua_getupvalue(L, idx, 1) == NULL) return NULL;
  f = (cr_func *)luaL_testudata(L, -1, CR_FUNC_MT);
  lua_pop(L, 1);
  return f;
}

static void ser_function(ser *s, int idx) {
  lua_State *L = s->L;
  cr_func *cached;
  luaL_checkstack(L, 4, "cache_resource: function key");
  if ((cached = cr_func_of(L, idx)) != NULL) { /* a cached function: by its cache's identity */
    put_byte(s, TAG_CACHED);
    put_bytes(s, cached->cache->id, 16);
    return;
  }
  if (lua_iscfunction(L, idx)) {
    lua_CFunction cf = lua_tocfunction(L, idx);
    unsigned char p[8] = {0};
    uint64_t v = 0;
    int i;
    memcpy(p, &cf, sizeof cf < sizeof p ? sizeof cf : sizeof p);
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    put_tag_u64(s, TAG_CFUNC, v);
  } else {
    unsigned char id[16];
    lfunc_static_id(s, idx, id);
    put_byte(s, TAG_LFUNC);
    put_bytes(s, id, 16);
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
  cr_keybufs *kb = s->kb;
  size_t n = kb->pairs.len / sizeof(pair_rec) - first_rec, i, w;
  size_t bytes = kb->out.len - region;
  pair_rec *recs;
  if (n < 2) return;
  recs = (pair_rec *)(void *)kb->pairs.data + first_rec;
  for (i = 1; i < n && pair_cmp(kb->out.data, &recs[i - 1], &recs[i]) < 0; i++) {}
  if (i == n) return; /* already in canonical order */
  kb->tmp.len = 0;
  room(s, &kb->tmp, n * sizeof(pair_rec) > bytes ? n * sizeof(pair_rec) : bytes);
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
  size_t ml, first_rec, region;
  lua_Integer n = 0;
  int i;
  for (i = 0; i < depth; i++)
    if (s->path[i] == p) { /* a cycle: back to the ancestor at depth i */
      put_byte(s, TAG_CYCLE);
      put_varint_v(s, (uint64_t)i);
      return;
    }
  if (depth > CR_MAX_DEPTH) {
    char arg[128];
    arg_desc(s, arg, sizeof arg);
    ser_fail(s, "%s: cannot hash argument '%s' of %s: tables nested deeper than %d levels",
             s->kind, arg, s->fname, CR_MAX_DEPTH);
  }
  s->path[depth] = p;
  luaL_checkstack(L, 6, "cache_resource: table key");
  put_byte(s, TAG_TABLE);
  mname = mt_name(L, idx, &ml);
  put_mtname(s, mname, ml);
  /* array part: 1..n up to the first nil, in order */
  while (lua_rawgeti(L, idx, n + 1) != LUA_TNIL) {
    ser_value(s, lua_gettop(L), depth + 1, 1);
    lua_pop(L, 1);
    n++;
  }
  lua_pop(L, 1);
  put_byte(s, TAG_ARRAY_END);
  /* everything else, sorted by serialized key */
  first_rec = kb->pairs.len / sizeof(pair_rec);
  region = kb->out.len;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    pair_rec r;
    size_t j;
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
    r.prefix = 0;
    for (j = 0; j < 8; j++) r.prefix = (r.prefix << 8) | (j < r.klen ? kb->out.data[r.off + j] : 0);
    ser_value(s, top, depth + 1, 1);
    r.len = kb->out.len - r.off;
    memcpy(room(s, &kb->pairs, sizeof r), &r, sizeof r);
    kb->pairs.len += sizeof r;
    lua_pop(L, 1);
  }
  order_pairs(s, first_rec, region);
  kb->pairs.len = first_rec * sizeof(pair_rec);
  put_byte(s, TAG_END);
}

/* ---- hash_funcs ------------------------------------------------------ */

/* Pushes the hash function for the value at idx, if any: metatable first,
 * then its __name, then the type name. *which names the match for errors.
 * Any value counts: the option check let only callables in. */
static int hf_find(ser *s, int idx, const char **which) {
  lua_State *L = s->L;
  if (lua_getmetatable(L, idx)) {
    lua_pushvalue(L, -1);
    if (lua_rawget(L, s->hf) != LUA_TNIL) {
      lua_remove(L, -2);
      *which = "<metatable>";
      return 1;
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "__name");
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      *which = lua_tostring(L, -1);
      lua_pushvalue(L, -1);
      if (lua_rawget(L, s->hf) != LUA_TNIL) {
        lua_replace(L, -3);
        lua_pop(L, 1);
        return 1;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  *which = luaL_typename(L, idx);
  if (lua_getfield(L, s->hf, *which) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  return 0;
}

static int try_hash_func(ser *s, int idx, int depth) {
  lua_State *L = s->L;
  const char *which;
  int name_idx, saved_name = s->hf_name, saved_depth = s->hf_depth;
  luaL_checkstack(L, 8, "cache_resource: hash_funcs");
  if (!hf_find(s, idx, &which)) return 0;
  lua_pushstring(L, which); /* kept below the result for error messages */
  lua_insert(L, -2);
  name_idx = lua_gettop(L) - 1;
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    char arg[128];
    const char *msg = lua_tostring(L, -1);
    arg_desc(s, arg, sizeof arg);
    ser_fail(s, "%s: hash_funcs['%s'] of %s raised an error while hashing argument '%s': %s",
             s->kind, lua_tostring(L, name_idx), s->fname, arg, msg ? msg : luaL_typename(L, -1));
  }
  put_byte(s, TAG_REPLACED);
  s->path[depth] = NULL;
  s->hf_name = name_idx;
  s->hf_depth = depth + 1;
  /* the replacement is not passed to hash_funcs again, its contents are */
  ser_value(s, lua_gettop(L), depth + 1, 0);
  s->hf_name = saved_name;
  s->hf_depth = saved_depth;
  lua_pop(L, 2);
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
    default:
      if (s->identity) { /* a callback object in the options: its kind stands for it */
        size_t ml;
        const char *mname = mt_name(L, idx, &ml);
        put_byte(s, TAG_OPAQUE);
        put_byte(s, (unsigned char)t);
        put_mtname(s, mname, ml);
      } else {
        unhashable(s, idx, depth);
      }
      break;
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
  s->identity = 0;
  s->hf_name = 0;
  s->hf_depth = 0;
  s->fidx = 0;
  s->kind = func ? cr_kind(func->cache) : "cache_resource";
}

/* The unseeded 128-bit digest of what was serialized (hash(), identities). */
static void ser_digest(ser *s, unsigned char out[16]) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits(s->kb->out.data, s->kb->out.len));
  memcpy(out, canon.digest, 16);
  ser_release(s);
}

static inline int skipped(const cr_func *f, int i) {
  return f->any_skip && i <= f->nparams && f->skip[i - 1];
}

/* The hit path's serializer: argument lists of scalars only, no hash_funcs,
 * written into buf (CR_KEY_INLINE_MAX bytes) with exactly the bytes the
 * general serializer writes. Returns 0 when it does not apply. */
int cr_key_scalars(lua_State *L, cr_state *S, const cr_func *f, int first, int nargs, cr_key *key,
                   unsigned char *buf) {
  size_t len = 0, keep = 0; /* keep: the length up to the last hashed non-nil argument */
  int i, any_skip = f->any_skip; /* read once: stores to buf may alias *f */
  for (i = 1; i <= nargs; i++) {
    int idx = first + i - 1, t = lua_type(L, idx);
    if (any_skip && skipped(f, i)) continue; /* not in the key, so never "the last argument" */
    if (len + 10 + 9 > CR_KEY_INLINE_MAX) return 0;
    switch (t) {
      case LUA_TNIL: buf[len++] = TAG_NIL; continue; /* trailing nils drop out below */
      case LUA_TBOOLEAN: buf[len++] = lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE; break;
      case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
          buf[len++] = TAG_INT;
          put_u64(buf + len, (uint64_t)lua_tointeger(L, idx));
        } else {
          buf[len++] = TAG_FLOAT;
          put_u64(buf + len, float_bits(lua_tonumber(L, idx)));
        }
        len += 8;
        break;
      case LUA_TSTRING: {
        size_t sl;
        const char *p = lua_tolstring(L, idx, &sl);
        if (len + 10 + sl > CR_KEY_INLINE_MAX) return 0;
        buf[len++] = TAG_STRING;
        if (sl < 0x80) buf[len++] = (unsigned char)sl; /* a one-byte varint */
        else len = (size_t)(put_varint(buf + len, sl) - buf); /* as put_framed writes it */
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
  trim(&kb->pairs);
  trim(&kb->tmp);
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
    trim(&kb->out); /* the bytes are no longer needed */
  }
}

/* Serializes a call's arguments into s's buffer, as a call keys them. */
static void ser_call(ser *s, lua_State *L, cr_state *S, const cr_func *f, int fidx, int first, int nargs) {
  int i, last = 0;
  /* trailing nils are judged once the skipped parameters are left out */
  for (i = nargs; i >= 1 && last == 0; i--)
    if (!skipped(f, i) && !lua_isnil(L, first + i - 1)) last = i;
  ser_begin(s, L, S, f->cache->name, f, NULL);
  s->fidx = fidx;
  if (f->cache->hash_funcs_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->cache->hash_funcs_ref);
    s->hf = lua_gettop(L);
  }
  for (i = 1; i <= last; i++) {
    int idx = first + i - 1, t;
    if (skipped(f, i)) continue;
    t = lua_type(L, idx);
    /* scalars without hash_funcs: the common case, no bookkeeping */
    if (!s->hf && is_scalar(t)) {
      ser_scalar_t(s, idx, t);
      continue;
    }
    s->argpos = i;
    s->argname = NULL;
    ser_value(s, idx, 0, 1);
  }
  if (s->hf) lua_remove(L, s->hf);
}

void cr_key_for_call(lua_State *L, cr_state *S, const cr_func *f, int fidx, int first, int nargs, cr_key *key) {
  ser s;
  ser_call(&s, L, S, f, fidx, first, nargs);
  finish_key(S, s.kb, key);
}

/* The whole key bytes of a call, never a digest (a persisted entry keeps
 * them, to tell a digest collision from a hit), pushed as a string. */
void cr_key_push_full(lua_State *L, cr_state *S, const cr_func *f, int fidx, int first, int nargs) {
  ser s;
  ser_call(&s, L, S, f, fidx, first, nargs);
  lua_pushlstring(L, (const char *)s.kb->out.data, s.kb->out.len);
  ser_release(&s);
}

/* Serializes arguments first..first+nargs-1, trailing nils dropped, as
 * cache_resource.hash and key_bytes see them (no skipping, no hash_funcs). */
static void ser_args(ser *s, int first, int nargs) {
  int i;
  while (nargs > 0 && lua_isnil(s->L, first + nargs - 1)) nargs--;
  for (i = 1; i <= nargs; i++) {
    s->argpos = i;
    ser_value(s, first + i - 1, 0, 1);
  }
}

void cr_key_hash_args(lua_State *L, cr_state *S, int first, int nargs, unsigned char out[16]) {
  ser s;
  ser_begin(&s, L, S, "cache_resource.hash", NULL, NULL);
  ser_args(&s, first, nargs);
  ser_digest(&s, out);
}

/* The identity of a cache: `name` when given, else the function and the
 * options it was wrapped with, so the same code wrapped with another ttl is
 * another cache. */
void cr_key_identity(lua_State *L, cr_state *S, int fn, int opts, const char *name, int data,
                     unsigned char out[16]) {
  ser s;
  ser_begin(&s, L, S, data ? "cache_data" : "cache_resource", NULL, "fn");
  s.argpos = 1;
  s.identity = 1;
  if (data) {
    s.kind = "cache_data";
    put_byte(&s, TAG_DATA);
  }
  fn = lua_absindex(L, fn);
  if (opts) {
    opts = lua_absindex(L, opts);
    lua_pushnil(L);
    if (lua_next(L, opts)) lua_pop(L, 2); /* options given */
    else opts = 0;                         /* {} is no options */
  }
  if (name) {
    size_t len = strlen(name);
    int pushed = opts != 0;
    if (pushed) { /* the string itself: a NUL inside must not cut the identity short */
      lua_pushliteral(L, "name");
      if (lua_rawget(L, opts) == LUA_TSTRING) name = lua_tolstring(L, -1, &len);
    }
    put_framed(&s, TAG_NAME, name, len);
    if (pushed) lua_pop(L, 1);
  } else {
    if (lua_istable(L, fn)) {
      /* a callable table is its own cache: tables carry state a __call reads */
      const void *p = lua_topointer(L, fn);
      put_tag_u64(&s, TAG_CALLABLE, (uint64_t)(uintptr_t)p);
      luaL_getmetafield(L, fn, "__call");
      ser_value(&s, lua_gettop(L), 0, 0);
      lua_pop(L, 1);
    } else {
      ser_value(&s, fn, 0, 0);
    }
    if (opts) {
      s.argname = "options";
      ser_value(&s, opts, 0, 0);
    }
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
  put_framed(&s, TAG_WIDGETS, a, len);
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

/* ---- debugging entry points ------------------------------------------ */

/***
The canonical bytes of an argument list: what `hash` digests. No `_`
parameter is left out and no `hash_funcs` apply; trailing `nil`s are
dropped. For debugging and tests.
@function key_bytes
@param ... the arguments
@treturn string the bytes, one encoded value after the other
*/

/***
How many bytes the key serializer keeps allocated between calls (its
scratch buffers, which are reused from call to call). For debugging and
tests.
@function key_scratch_bytes
@treturn integer a byte count
*/

/* cache_resource.key_bytes(...): the canonical bytes that
 * cache_resource.hash(...) digests. For tests and debugging. */
static int m_key_bytes(lua_State *L) {
  ser s;
  ser_begin(&s, L, (cr_state *)lua_touserdata(L, lua_upvalueindex(1)), "cache_resource.key_bytes", NULL, NULL);
  ser_args(&s, 1, lua_gettop(L));
  lua_pushlstring(L, (const char *)s.kb->out.data, s.kb->out.len);
  ser_release(&s);
  return 1;
}

/* cache_resource.key_scratch_bytes(): bytes the key serializer keeps
 * allocated between calls. For tests and debugging. */
static int m_key_scratch_bytes(lua_State *L) {
  cr_state *S = (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
  const cr_keybufs *kb = &S->keybufs;
  lua_pushinteger(L, (lua_Integer)(kb->out.cap + kb->pairs.cap + kb->tmp.cap + S->dumpbuf.cap));
  return 1;
}

/* Adds the functions above to the module table at -1; the state is at -2. */
void cr_key_open(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"key_bytes", m_key_bytes}, {"key_scratch_bytes", m_key_scratch_bytes}, {NULL, NULL}
  };
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
}
