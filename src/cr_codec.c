/* The value codec: cache_data entries and the arguments of recorded UI
 * calls, as bytes that decode to exact copies.
 *
 * The format
 * ----------
 *   encoding = VERSION flags varint(nvalues) varint(ntables) varint(nstrings)
 *              varint(bodylen) value{nvalues}
 *                                  bodylen: the bytes of the values, which end
 *                                  the encoding exactly; ntables, nstrings: how
 *                                  many tables and strings are numbered below
 *   flags    = 0                   metatables by index (memory)
 *            | 1                   metatables by registered name (named)
 *   value    = NIL | FALSE | TRUE
 *            | INT varint(zigzag(i))         any integer, small ones short
 *            | FLOAT u64                     IEEE-754 bits, little-endian: -0.0,
 *                                            infinities and every NaN payload
 *            | STR varint(len) byte{len}     a string met once, NULs included
 *            | STR_KEEP varint(len) byte{len}  a string met again later: it takes
 *                                            the next string number (from 0)
 *            | STR_REF varint(n)             string number n
 *            | table
 *            | TABLE_REF varint(n)           table number n, reached again: a
 *                                            shared table or a cycle
 *   table    = (TABLE | TABLE_KEEP) counts elements
 *            | (TABLE_MT | TABLE_MT_KEEP) counts meta elements
 *   counts   = varint(narr) varint(nhash)    exact; decoding presizes with them
 *   elements = value{narr} (value value){nhash}
 *                                            t[1..narr] (none nil), then the
 *                                            other pairs, key then value
 *   meta     = varint(i)                     memory: the metatable at index i
 *                                            (from 0) of the list kept with the
 *                                            bytes
 *            | STR.. value                   named: the name it was registered
 *                                            under (a string value)
 *   varint   = LEB128: 7 bits a byte, least significant first, at most 10
 *
 * A _KEEP table takes its number when its tag is read, before its
 * elements, so a cycle closes on the table being filled. Tables and strings
 * reached more than once anywhere in the value list are numbered (the
 * sharing graph of the whole list is kept); the others are not, so a tree
 * of tables costs no numbering. A returned table is level 1; no table is
 * deeper than level 100.
 *
 * A recorded UI argument (cr_replay.c) is one `value` with no header, its
 * numbers counted on their own; its strings are never numbered, and a table
 * with a metatable is not copyable there.
 *
 * Encoding reads raw contents (lua_next, lua_rawgeti, lua_getmetatable: no
 * metamethod runs) in two passes over the values, with no Lua code in
 * between: the first finds what is reached twice and checks that every
 * value can be copied (naming the path of the first that cannot), the
 * second writes. Decoding trusts nothing: every length and count is bounded
 * by the bytes left, tables may claim no more slots in all than the body
 * has bytes, numbers refer only to what was decoded before, nesting stops
 * at level 100, and the body must end exactly where the header says. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cr.h"
#include "cr_codec.h"

#define HEADER_MAX (2 + 4 * 10) /* VERSION, flags, four varints */
#define FLAG_NAMED 1

/* ---- scratch memory -------------------------------------------------- */

static void map_free(cr_codec_map *m) {
  free(m->objs);
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static void map_clear(cr_codec_map *m) {
  if (m->nobjs && m->slots) memset(m->slots, 0, (m->mask + 1) * sizeof *m->slots);
  m->nobjs = 0;
}

/* Big scratch sets are not kept from one encoding to the next. */
#define SCRATCH_KEEP (64 * 1024)

static void map_trim(cr_codec_map *m) {
  if (m->capobjs * sizeof *m->objs > SCRATCH_KEEP) map_free(m);
  else map_clear(m);
}

void cr_codec_bufs_free(cr_codec_bufs *b) {
  cr_buffer_free(&b->out);
  map_free(&b->tables);
  map_free(&b->strings);
  map_free(&b->metas);
}

int cr_codec_bufs_gc(lua_State *L) {
  cr_codec_bufs_free((cr_codec_bufs *)lua_touserdata(L, 1));
  return 0;
}

/* `own` when it is free, else a set boxed in a userdata left on the stack
 * (freed by its __gc). */
cr_codec_bufs *cr_codec_bufs_take(lua_State *L, cr_codec_bufs *own) {
  cr_codec_bufs *b = own;
  if (b->busy) {
    b = (cr_codec_bufs *)lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, CR_CODEC_MT);
  }
  b->busy = 1;
  b->out.len = 0;
  return b;
}

void cr_codec_bufs_release(cr_codec_bufs *b) {
  b->busy = 0;
  if (b->out.cap > SCRATCH_KEEP) cr_buffer_free(&b->out);
  map_trim(&b->tables);
  map_trim(&b->strings);
  map_trim(&b->metas);
}

static size_t ptr_hash(const void *p) {
  uint64_t h = (uint64_t)(uintptr_t)p;
  h ^= h >> 29;
  h *= UINT64_C(0xBF58476D1CE4E5B9);
  h ^= h >> 32;
  return (size_t)h;
}

static int map_grow(cr_codec_map *m) {
  size_t n = m->slots ? (m->mask + 1) * 2 : 64, i;
  uint32_t *slots = (uint32_t *)calloc(n, sizeof *slots);
  if (slots == NULL) return 0;
  for (i = 0; i < m->nobjs; i++) {
    size_t k = ptr_hash(m->objs[i].p) & (n - 1);
    while (slots[k]) k = (k + 1) & (n - 1);
    slots[k] = (uint32_t)(i + 1);
  }
  free(m->slots);
  m->slots = slots;
  m->mask = n - 1;
  return 1;
}

/* The index of p's object, or -1. */
static long map_find(const cr_codec_map *m, const void *p) {
  size_t k;
  if (m->nobjs == 0) return -1;
  for (k = ptr_hash(p) & m->mask; m->slots[k]; k = (k + 1) & m->mask)
    if (m->objs[m->slots[k] - 1].p == p) return (long)m->slots[k] - 1;
  return -1;
}

/* Adds p (known absent); returns its index, or -1 when memory runs out. */
static long map_add(cr_codec_map *m, const void *p) {
  size_t k;
  cr_codec_obj *o;
  if (m->nobjs >= UINT32_MAX - 1) return -1;
  if (m->slots == NULL || (m->nobjs + 1) * 2 > m->mask + 1) {
    if (!map_grow(m)) return -1;
  }
  if (m->nobjs == m->capobjs) {
    size_t cap = m->capobjs ? m->capobjs * 2 : 32;
    cr_codec_obj *objs = (cr_codec_obj *)realloc(m->objs, cap * sizeof *objs);
    if (objs == NULL) return -1;
    m->objs = objs;
    m->capobjs = cap;
  }
  o = &m->objs[m->nobjs];
  memset(o, 0, sizeof *o);
  o->p = p;
  o->kept = -1;
  for (k = ptr_hash(p) & m->mask; m->slots[k]; k = (k + 1) & m->mask) continue;
  m->slots[k] = (uint32_t)(++m->nobjs);
  return (long)m->nobjs - 1;
}

/* ---- encoding: the path of a value, for messages ---------------------- */

enum { SEG_INDEX, SEG_VALUE, SEG_KEY };

typedef struct seg {
  int kind;          /* SEG_INDEX t[i]; SEG_VALUE the value at the key at stack `idx`; SEG_KEY that key itself */
  int idx;
  lua_Integer i;
} seg;

typedef struct enc {
  lua_State *L;
  cr_codec_bufs *b;
  cr_buffer *out;
  enum cr_codec_mode mode;
  int names;                    /* named: metatable -> name */
  int metalist;                 /* memory: the metatable list being made */
  int strings;                  /* number repeated strings (not in UI arguments) */
  int32_t ntables, nstrings;    /* numbers given so far, while writing */
  const char *label;
  int root;                     /* label[root] is the value being encoded */
  seg path[CR_CODEC_MAX_DEPTH + 2];
  int npath;
  cr_codec_error *err;
} enc;

static int is_identifier(const char *s, size_t len) {
  static const char *const reserved[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while", NULL
  };
  size_t i;
  int k;
  if (len == 0 || len > 40 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
    return 0;
  for (i = 1; i < len; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return 0;
  }
  for (k = 0; reserved[k]; k++)
    if (strlen(reserved[k]) == len && memcmp(reserved[k], s, len) == 0) return 0;
  return 1;
}

/* Appends to buf (size bytes, NUL-terminated) what printf makes. */
static void add(char *buf, size_t size, const char *fmt, ...) {
  size_t used = strlen(buf);
  va_list ap;
  if (used + 1 >= size) return;
  va_start(ap, fmt);
  vsnprintf(buf + used, size - used, fmt, ap);
  va_end(ap);
}

/* A key as a path step: .field, ["any string"], [3], [1.5], [true]. Reads
 * the key without converting it (lua_next must get it back unchanged). */
static void add_key(lua_State *L, char *buf, size_t size, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len, i;
      const char *s = lua_tolstring(L, idx, &len);
      if (is_identifier(s, len)) {
        add(buf, size, ".%s", s);
        break;
      }
      add(buf, size, "[\"");
      for (i = 0; i < len && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') add(buf, size, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f) add(buf, size, "%c", c);
        else add(buf, size, "\\%u", (unsigned)c);
      }
      add(buf, size, len > 40 ? "...\"]" : "\"]");
      break;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) add(buf, size, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)lua_tointeger(L, idx));
      else add(buf, size, "[" LUA_NUMBER_FMT "]", (LUAI_UACNUMBER)lua_tonumber(L, idx));
      break;
    case LUA_TBOOLEAN: add(buf, size, lua_toboolean(L, idx) ? "[true]" : "[false]"); break;
    default: add(buf, size, "[a %s key]", luaL_typename(L, idx)); break;
  }
}

/* The path of the value being looked at, into buf; `key`: it is a table
 * key (the last step is SEG_KEY), which reads "a key in PATH". A step into
 * a table used as a key reads "a key in PATH is a table whose ...". */
static void format_path(const enc *e, char *buf, size_t size, int key) {
  int i, n = key ? e->npath - 1 : e->npath;
  char tail[380];
  buf[0] = '\0';
  tail[0] = '\0';
  add(tail, sizeof tail, "%s[%d]", e->label, e->root);
  for (i = 0; i < n; i++) {
    const seg *s = &e->path[i];
    if (s->kind == SEG_INDEX) {
      add(tail, sizeof tail, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)s->i);
    } else if (s->kind == SEG_VALUE) {
      add_key(e->L, tail, sizeof tail, s->idx);
    } else { /* a table key: what follows is inside it */
      add(buf, size, "%s%s is a table whose ", buf[0] ? "key in " : "a key in ", tail);
      tail[0] = '\0';
    }
  }
  if (!key) add(buf, size, "%s", tail);
  else if (!buf[0]) add(buf, size, "a key in %s", tail);
  else if (tail[0]) add(buf, size, "key in %s", tail);
  else add(buf, size, "key"); /* "... is a table whose key is a function" */
}

/* What the value at idx is, for messages: "a function", "a userdata 'FILE*'". */
static void describe(lua_State *L, int idx, char *buf, size_t size) {
  const char *name = NULL;
  int t = lua_type(L, idx);
  if (t == LUA_TLIGHTUSERDATA) {
    snprintf(buf, size, "a light userdata");
    return;
  }
  if ((t == LUA_TUSERDATA || t == LUA_TTABLE) && lua_getmetatable(L, idx)) {
    /* only on the way out of a failed encoding: what a finalizer run by
     * this push does cannot change the outcome */
    lua_pushliteral(L, "__name");
    if (lua_rawget(L, -2) == LUA_TSTRING) name = lua_tostring(L, -1);
    if (name) snprintf(buf, size, "a %s '%.60s'", lua_typename(L, t), name);
    lua_pop(L, 2);
    if (name) return;
  }
  snprintf(buf, size, "a %s", lua_typename(L, t));
}

static enum cr_codec_status fail(enc *e, enum cr_codec_status status, int idx, int key) {
  char path[380], what[100];
  e->err->status = status;
  e->err->message[0] = '\0';
  if (status == CR_CODEC_NOMEM) {
    snprintf(e->err->message, sizeof e->err->message, "out of memory while copying %s[%d]", e->label, e->root);
  } else if (status == CR_CODEC_TOO_DEEP) {
    snprintf(e->err->message, sizeof e->err->message, "%s[%d] nests deeper than %d levels", e->label, e->root,
             CR_CODEC_MAX_DEPTH);
  } else if (status == CR_CODEC_UNCOPYABLE) {
    format_path(e, path, sizeof path, key);
    describe(e->L, idx, what, sizeof what);
    snprintf(e->err->message, sizeof e->err->message, "%s is %s", path, what);
  } else if (status == CR_CODEC_UNREGISTERED) {
    format_path(e, path, sizeof path, key);
    describe(e->L, idx, what, sizeof what);
    snprintf(e->err->message, sizeof e->err->message, "%s is %s whose metatable is not registered", path, what);
  }
  return status;
}

const char *cr_codec_fix(enum cr_codec_status status) {
  switch (status) {
    case CR_CODEC_UNCOPYABLE:
      return " (only nil, booleans, numbers, strings and tables can be copied; use cache_resource for objects such "
             "as connections)";
    case CR_CODEC_TOO_DEEP: return " (a copy holds at most 100 levels of nested tables)";
    case CR_CODEC_UNREGISTERED:
      return " (a copy kept outside the process finds its metatable by name: register it with "
             "cache_data.register_metatable(name, mt))";
    default: return "";
  }
}

/* ---- encoding: pass 1, what is reached and whether it can be copied ---- */

static enum cr_codec_status scan(enc *e, int idx, int level, int key);

static enum cr_codec_status scan_string(enc *e, int idx) {
  long i;
  const char *p;
  if (!e->strings) return CR_CODEC_OK;
  p = lua_tostring(e->L, idx);
  i = map_find(&e->b->strings, p);
  if (i < 0 && (i = map_add(&e->b->strings, p)) < 0) return fail(e, CR_CODEC_NOMEM, idx, 0);
  e->b->strings.objs[i].refs++;
  return CR_CODEC_OK;
}

/* The metatable of the table at idx: plain mode refuses it, named mode
 * needs its name, memory mode numbers it in the list. Pops what it pushed. */
static enum cr_codec_status scan_meta(enc *e, int idx, int key, uint32_t *meta) {
  lua_State *L = e->L;
  long m;
  *meta = 0;
  if (!lua_getmetatable(L, idx)) return CR_CODEC_OK;
  if (e->mode == CR_CODEC_PLAIN) {
    lua_pop(L, 1);
    e->err->status = CR_CODEC_HAS_MT;
    return CR_CODEC_HAS_MT;
  }
  if (e->mode == CR_CODEC_NAMED) {
    enum cr_codec_status st;
    if (lua_rawget(L, e->names) != LUA_TSTRING) { /* the registry keeps the name alive */
      lua_pop(L, 1);
      return fail(e, CR_CODEC_UNREGISTERED, idx, key);
    }
    st = scan_string(e, lua_gettop(L));
    lua_pop(L, 1);
    *meta = 1;
    return st;
  }
  m = map_find(&e->b->metas, lua_topointer(L, -1));
  if (m < 0) {
    if ((m = map_add(&e->b->metas, lua_topointer(L, -1))) < 0) {
      lua_pop(L, 1);
      return fail(e, CR_CODEC_NOMEM, idx, 0);
    }
    lua_rawseti(L, e->metalist, m + 1); /* raw sets never collect: no Lua code runs */
  } else {
    lua_pop(L, 1);
  }
  *meta = (uint32_t)m + 1;
  return CR_CODEC_OK;
}

static enum cr_codec_status scan_table(enc *e, int idx, int level, int key) {
  lua_State *L = e->L;
  const void *p = lua_topointer(L, idx);
  long o = map_find(&e->b->tables, p);
  size_t narr, nhash = 0;
  uint32_t meta;
  enum cr_codec_status st;
  lua_Integer i;
  if (o >= 0) { /* shared, or a cycle: written once, then by number */
    e->b->tables.objs[o].refs++;
    return CR_CODEC_OK;
  }
  if (level > CR_CODEC_MAX_DEPTH) return fail(e, CR_CODEC_TOO_DEEP, idx, 0);
  if (e->npath >= CR_CODEC_MAX_DEPTH + 1 || !lua_checkstack(L, 6)) return fail(e, CR_CODEC_NOMEM, idx, 0);
  if ((o = map_add(&e->b->tables, p)) < 0) return fail(e, CR_CODEC_NOMEM, idx, 0);
  e->b->tables.objs[o].refs = 1;
  if ((st = scan_meta(e, idx, key, &meta)) != CR_CODEC_OK) return st;
  for (i = 1;; i++) {
    if (lua_rawgeti(L, idx, i) == LUA_TNIL) {
      lua_pop(L, 1);
      break;
    }
    e->path[e->npath].kind = SEG_INDEX;
    e->path[e->npath++].i = i;
    st = scan(e, lua_gettop(L), level + 1, 0);
    e->npath--;
    lua_pop(L, 1);
    if (st != CR_CODEC_OK) return st;
  }
  narr = (size_t)(i - 1);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    if (lua_isinteger(L, k)) {
      lua_Integer n = lua_tointeger(L, k);
      if (n >= 1 && (lua_Unsigned)n <= narr) { /* written in the array part */
        lua_pop(L, 1);
        continue;
      }
    }
    nhash++;
    e->path[e->npath].kind = SEG_KEY;
    e->path[e->npath++].idx = k;
    st = scan(e, k, level + 1, 1);
    e->path[e->npath - 1].kind = SEG_VALUE;
    if (st == CR_CODEC_OK) st = scan(e, k + 1, level + 1, 0);
    e->npath--;
    if (st != CR_CODEC_OK) {
      lua_pop(L, 2);
      return st;
    }
    lua_pop(L, 1);
  }
  /* by index: the object array may have moved while the elements were added */
  e->b->tables.objs[o].narr = narr;
  e->b->tables.objs[o].nhash = nhash;
  e->b->tables.objs[o].meta = meta;
  return CR_CODEC_OK;
}

/* `key`: the value is a table key, and the last step of the path is the
 * SEG_KEY one that names it. */
static enum cr_codec_status scan(enc *e, int idx, int level, int key) {
  switch (lua_type(e->L, idx)) {
    case LUA_TNIL: case LUA_TBOOLEAN: case LUA_TNUMBER: return CR_CODEC_OK;
    case LUA_TSTRING: return scan_string(e, idx);
    case LUA_TTABLE: return scan_table(e, idx, level, key);
    default: return fail(e, CR_CODEC_UNCOPYABLE, idx, key);
  }
}

/* ---- encoding: pass 2, writing ---------------------------------------- */

static inline unsigned char *put_varint(unsigned char *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *p++ = (unsigned char)v;
  return p;
}

/* Room for n more bytes; 0 when memory ran out. */
static inline unsigned char *room(enc *e, size_t n) {
  cr_buffer *b = e->out;
  if (b->cap - b->len < n && !cr_buffer_grow(b, n)) return NULL;
  return b->data + b->len;
}

static inline void done(enc *e, const unsigned char *p) {
  e->out->len = (size_t)(p - e->out->data);
}

static enum cr_codec_status put(enc *e, int idx);

static enum cr_codec_status put_string(enc *e, int idx) {
  size_t len;
  const char *s = lua_tolstring(e->L, idx, &len);
  unsigned char *p;
  int tag = CR_C_STR;
  if (e->strings) {
    cr_codec_obj *o = &e->b->strings.objs[map_find(&e->b->strings, s)];
    if (o->kept >= 0) {
      if ((p = room(e, 11)) == NULL) return fail(e, CR_CODEC_NOMEM, idx, 0);
      *p++ = CR_C_STR_REF;
      done(e, put_varint(p, (uint64_t)o->kept));
      return CR_CODEC_OK;
    }
    if (o->refs > 1) {
      o->kept = e->nstrings++;
      tag = CR_C_STR_KEEP;
    }
  }
  if (len > SIZE_MAX - 11 || (p = room(e, 11 + len)) == NULL) return fail(e, CR_CODEC_NOMEM, idx, 0);
  *p++ = (unsigned char)tag;
  p = put_varint(p, len);
  memcpy(p, s, len);
  done(e, p + len);
  return CR_CODEC_OK;
}

static enum cr_codec_status put_table(enc *e, int idx) {
  lua_State *L = e->L;
  long oi = map_find(&e->b->tables, lua_topointer(L, idx));
  cr_codec_obj *o = &e->b->tables.objs[oi];
  size_t narr = o->narr, i;
  uint32_t meta = o->meta;
  enum cr_codec_status st;
  unsigned char *p = room(e, 32);
  int tag;
  if (p == NULL) return fail(e, CR_CODEC_NOMEM, idx, 0);
  if (o->kept >= 0) {
    *p++ = CR_C_TABLE_REF;
    done(e, put_varint(p, (uint64_t)o->kept));
    return CR_CODEC_OK;
  }
  tag = meta ? CR_C_TABLE_MT : CR_C_TABLE;
  if (o->refs > 1) {
    o->kept = e->ntables++;
    tag++; /* the _KEEP form */
  }
  *p++ = (unsigned char)tag;
  p = put_varint(p, narr);
  p = put_varint(p, o->nhash);
  if (meta && e->mode == CR_CODEC_MEMORY) p = put_varint(p, meta - 1);
  done(e, p);
  if (meta && e->mode == CR_CODEC_NAMED) {
    lua_getmetatable(L, idx);
    lua_rawget(L, e->names);
    st = put_string(e, lua_gettop(L));
    lua_pop(L, 1);
    if (st != CR_CODEC_OK) return st;
  }
  for (i = 1; i <= narr; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i);
    st = put(e, lua_gettop(L));
    lua_pop(L, 1);
    if (st != CR_CODEC_OK) return st;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    if (lua_isinteger(L, k)) {
      lua_Integer n = lua_tointeger(L, k);
      if (n >= 1 && (lua_Unsigned)n <= narr) {
        lua_pop(L, 1);
        continue;
      }
    }
    if ((st = put(e, k)) != CR_CODEC_OK || (st = put(e, k + 1)) != CR_CODEC_OK) {
      lua_pop(L, 2);
      return st;
    }
    lua_pop(L, 1);
  }
  return CR_CODEC_OK;
}

static enum cr_codec_status put(enc *e, int idx) {
  lua_State *L = e->L;
  unsigned char *p;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: return put_string(e, idx);
    case LUA_TTABLE: return put_table(e, idx);
    default: break;
  }
  if ((p = room(e, 11)) == NULL) return fail(e, CR_CODEC_NOMEM, idx, 0);
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: *p++ = lua_toboolean(L, idx) ? CR_C_TRUE : CR_C_FALSE; break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        uint64_t u = (uint64_t)lua_tointeger(L, idx);
        *p++ = CR_C_INT;
        p = put_varint(p, (u << 1) ^ (0 - (u >> 63))); /* zigzag: small negatives stay short */
      } else {
        double d = (double)lua_tonumber(L, idx);
        uint64_t bits;
        int i;
        memcpy(&bits, &d, sizeof bits);
        *p++ = CR_C_FLOAT;
        for (i = 0; i < 8; i++) *p++ = (unsigned char)(bits >> (8 * i));
      }
      break;
    default: *p++ = CR_C_NIL; break;
  }
  done(e, p);
  return CR_CODEC_OK;
}

/* ---- encoding: entry points ---------------------------------------------- */

static void enc_begin(enc *e, lua_State *L, cr_codec_bufs *b, cr_buffer *out, enum cr_codec_mode mode,
                      cr_codec_error *err) {
  memset(e, 0, sizeof *e);
  e->L = L;
  e->b = b;
  e->out = out;
  e->mode = mode;
  e->err = err;
  e->label = "result";
  err->status = CR_CODEC_OK;
  err->message[0] = '\0';
  map_clear(&b->tables);
  map_clear(&b->strings);
  map_clear(&b->metas);
}

enum cr_codec_status cr_codec_encode(lua_State *L, cr_codec_bufs *b, int first, int n, enum cr_codec_mode mode,
                                     int names, const char *label, cr_codec_error *err) {
  enc e;
  int i, top;
  enum cr_codec_status st = CR_CODEC_OK;
  size_t body, hlen;
  unsigned char header[HEADER_MAX], *h = header;
  first = lua_absindex(L, first);
  if (names) names = lua_absindex(L, names);
  enc_begin(&e, L, b, &b->out, mode, err);
  e.names = names;
  e.strings = 1;
  if (label) e.label = label;
  if (mode == CR_CODEC_MEMORY) { /* made first: no Lua code may run once the passes start */
    lua_newtable(L);
    e.metalist = lua_gettop(L);
  }
  top = lua_gettop(L);
  for (i = 0; i < n && st == CR_CODEC_OK; i++) {
    e.root = i + 1;
    st = scan(&e, first + i, 1, 0);
  }
  if (st == CR_CODEC_OK) {
    if (!cr_buffer_grow(&b->out, HEADER_MAX)) {
      st = fail(&e, CR_CODEC_NOMEM, first, 0);
    } else {
      b->out.len = HEADER_MAX; /* the header goes in front once the body's length is known */
      for (i = 0; i < n && st == CR_CODEC_OK; i++) {
        e.root = i + 1;
        st = put(&e, first + i);
      }
    }
  }
  lua_settop(L, top);
  if (st != CR_CODEC_OK) {
    if (e.metalist) lua_pop(L, 1);
    return st;
  }
  body = b->out.len - HEADER_MAX;
  *h++ = CR_CODEC_VERSION;
  *h++ = mode == CR_CODEC_NAMED ? FLAG_NAMED : 0;
  h = put_varint(h, (uint64_t)n);
  h = put_varint(h, (uint64_t)e.ntables);
  h = put_varint(h, (uint64_t)e.nstrings);
  h = put_varint(h, (uint64_t)body);
  hlen = (size_t)(h - header);
  memcpy(b->out.data + HEADER_MAX - hlen, header, hlen);
  /* allocations from here on: finalizers may run, the bytes are final */
  lua_pushlstring(L, (const char *)b->out.data + HEADER_MAX - hlen, hlen + body);
  if (e.metalist) {
    if (b->metas.nobjs == 0) { /* no list: the bytes take its slot */
      lua_replace(L, e.metalist);
      lua_pushnil(L);
    } else {
      lua_insert(L, e.metalist); /* bytes, then the list */
    }
  }
  return CR_CODEC_OK;
}

enum cr_codec_status cr_codec_append_value(lua_State *L, cr_codec_bufs *b, cr_buffer *out, int idx,
                                           cr_codec_error *err) {
  enc e;
  size_t mark = out->len;
  enum cr_codec_status st;
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  enc_begin(&e, L, b, out, CR_CODEC_PLAIN, err);
  e.root = 1;
  st = scan(&e, idx, 1, 0);
  if (st == CR_CODEC_OK) st = put(&e, idx);
  lua_settop(L, top);
  if (st != CR_CODEC_OK) out->len = mark;
  return st;
}

/* ---- decoding ------------------------------------------------------------ */

static inline int get_varint(cr_codec_dec *d, uint64_t *v) {
  uint64_t r = 0;
  int shift;
  for (shift = 0; shift < 64; shift += 7) {
    unsigned char c;
    if (d->pos >= d->end) return 0;
    c = d->p[d->pos++];
    r |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      if (shift == 63 && c > 1) return 0; /* past 64 bits */
      *v = r;
      return 1;
    }
  }
  return 0;
}

static int bad(cr_codec_dec *d, const char *why) {
  d->error = why;
  return 0;
}

/* Reads a tag and its fixed payload (a table's elements are not read). */
static inline int read_item(cr_codec_dec *d, cr_codec_item *it) {
  it->u = it->nhash = it->meta = 0;
  it->off = 0;
  if (d->pos >= d->end) return bad(d, "the bytes end inside a value");
  it->tag = d->p[d->pos++];
  switch (it->tag) {
    case CR_C_NIL: case CR_C_FALSE: case CR_C_TRUE: return 1;
    case CR_C_INT: return get_varint(d, &it->u) || bad(d, "a damaged integer");
    case CR_C_FLOAT: {
      int i;
      if (d->end - d->pos < 8) return bad(d, "the bytes end inside a float");
      it->u = 0;
      for (i = 0; i < 8; i++) it->u |= (uint64_t)d->p[d->pos + i] << (8 * i);
      d->pos += 8;
      return 1;
    }
    case CR_C_STR: case CR_C_STR_KEEP:
      if (!get_varint(d, &it->u) || it->u > d->end - d->pos) return bad(d, "a string longer than the bytes left");
      it->off = d->pos;
      d->pos += (size_t)it->u;
      return 1;
    case CR_C_STR_REF: case CR_C_TABLE_REF: return get_varint(d, &it->u) || bad(d, "a damaged reference");
    case CR_C_TABLE: case CR_C_TABLE_KEEP: case CR_C_TABLE_MT: case CR_C_TABLE_MT_KEEP:
      if (!get_varint(d, &it->u) || !get_varint(d, &it->nhash)) return bad(d, "a damaged table size");
      /* every element takes a byte at least, every pair two: claims past
       * the bytes are damage, so presizing never allocates past them */
      if (it->u > d->budget || it->nhash > (d->budget - it->u) / 2) return bad(d, "a table larger than the bytes");
      d->budget -= (size_t)(it->u + 2 * it->nhash);
      it->meta = 0;
      if ((it->tag == CR_C_TABLE_MT || it->tag == CR_C_TABLE_MT_KEEP) && d->mode != CR_CODEC_NAMED &&
          !get_varint(d, &it->meta))
        return bad(d, "a damaged metatable reference");
      return 1;
    default: return bad(d, "an unknown tag");
  }
}

int cr_codec_read_item(const unsigned char *p, size_t end, size_t *pos, cr_codec_item *it) {
  cr_codec_dec d;
  int ok;
  memset(&d, 0, sizeof d);
  d.p = p;
  d.pos = *pos;
  d.end = end;
  d.budget = end;
  ok = read_item(&d, it);
  *pos = d.pos;
  return ok;
}

static int decode(cr_codec_dec *d, int level);

/* Numbers the value at the top in a list (of tables or strings). The
 * list's slot is below the values: presized from the header, or nil until
 * first used (single values have no header). */
static void keep(cr_codec_dec *d, int list, lua_Integer n) {
  lua_State *L = d->L;
  if (lua_type(L, list) != LUA_TTABLE) {
    lua_newtable(L);
    lua_replace(L, list);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, list, n);
}

static void decode_string(cr_codec_dec *d, const cr_codec_item *it) {
  lua_State *L = d->L;
  size_t at = it->off;
  if (d->strcache) { /* a replayed argument: the string made by an earlier replay */
    if (lua_rawgeti(L, d->strcache, (lua_Integer)at + 1) == LUA_TSTRING) return;
    lua_pop(L, 1);
  }
  lua_pushlstring(L, (const char *)d->p + at, (size_t)it->u);
  if (d->strcache) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->strcache, (lua_Integer)at + 1);
  }
  if (it->tag == CR_C_STR_KEEP) keep(d, d->strings, ++d->nstrings);
}

/* Pushes the metatable of a table being decoded, or returns 0. */
static int decode_meta(cr_codec_dec *d, const cr_codec_item *it, int level) {
  lua_State *L = d->L;
  if (d->metas == 0) return bad(d, "a metatable where none can be");
  if (d->mode == CR_CODEC_NAMED) {
    size_t at = d->pos;
    if (at >= d->end || (d->p[at] != CR_C_STR && d->p[at] != CR_C_STR_KEEP && d->p[at] != CR_C_STR_REF))
      return bad(d, "a metatable name that is not a string");
    if (!decode(d, level)) return 0;
    if (lua_rawget(L, d->metas) != LUA_TTABLE) {
      lua_pop(L, 1);
      return bad(d, "a metatable name not registered in this process");
    }
    return 1;
  }
  if (it->meta >= lua_rawlen(L, d->metas) || lua_rawgeti(L, d->metas, (lua_Integer)it->meta + 1) != LUA_TTABLE) {
    if (it->meta < lua_rawlen(L, d->metas)) lua_pop(L, 1);
    return bad(d, "a metatable reference past the list");
  }
  return 1;
}

static int decode_table(cr_codec_dec *d, const cr_codec_item *it, int level) {
  lua_State *L = d->L;
  uint64_t i;
  int t, has_meta = it->tag == CR_C_TABLE_MT || it->tag == CR_C_TABLE_MT_KEEP;
  if (level > CR_CODEC_MAX_DEPTH) return bad(d, "tables nested deeper than 100 levels");
  if (!lua_checkstack(L, 6)) return bad(d, "no room on the Lua stack");
  lua_createtable(L, it->u > INT_MAX ? INT_MAX : (int)it->u, it->nhash > INT_MAX ? INT_MAX : (int)it->nhash);
  t = lua_gettop(L);
  if (it->tag == CR_C_TABLE_KEEP || it->tag == CR_C_TABLE_MT_KEEP) keep(d, d->tables, ++d->ntables);
  if (has_meta && !decode_meta(d, it, level)) return 0;
  /* decode() returns the tag it read: no API call to look at the value */
  for (i = 1; i <= it->u; i++) {
    int tag = decode(d, level + 1);
    if (tag == 0) return 0;
    if (tag == CR_C_NIL) return bad(d, "a nil in an array part");
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; i < it->nhash; i++) {
    int tag = decode(d, level + 1);
    if (tag == 0) return 0;
    if (tag == CR_C_NIL || (tag == CR_C_FLOAT && d->last_nan)) return bad(d, "a nil or NaN table key");
    if ((tag = decode(d, level + 1)) == 0) return 0;
    if (tag == CR_C_NIL) return bad(d, "a nil table value");
    lua_rawset(L, t);
  }
  if (has_meta) lua_setmetatable(L, t); /* raw: its __metatable field does not apply here */
  return 1;
}

/* Pushes one value and returns its tag; 0 on bad bytes (d->error says
 * why; what was pushed stays for the caller to drop). */
static int decode(cr_codec_dec *d, int level) {
  lua_State *L = d->L;
  cr_codec_item it;
  if (!read_item(d, &it)) return 0;
  switch (it.tag) {
    case CR_C_NIL: lua_pushnil(L); break;
    case CR_C_FALSE: lua_pushboolean(L, 0); break;
    case CR_C_TRUE: lua_pushboolean(L, 1); break;
    case CR_C_INT: lua_pushinteger(L, (lua_Integer)((it.u >> 1) ^ (0 - (it.u & 1)))); break;
    case CR_C_FLOAT: {
      double v;
      memcpy(&v, &it.u, sizeof v);
      d->last_nan = v != v;
      lua_pushnumber(L, (lua_Number)v);
      break;
    }
    case CR_C_STR: case CR_C_STR_KEEP: decode_string(d, &it); break;
    case CR_C_STR_REF:
      if (it.u >= (uint64_t)d->nstrings) return bad(d, "a reference to a string not decoded yet");
      lua_rawgeti(L, d->strings, (lua_Integer)it.u + 1);
      break;
    case CR_C_TABLE_REF:
      if (it.u >= (uint64_t)d->ntables) return bad(d, "a reference to a table not decoded yet");
      lua_rawgeti(L, d->tables, (lua_Integer)it.u + 1);
      break;
    default:
      if (!decode_table(d, &it, level)) return 0;
      break;
  }
  return it.tag;
}

void cr_codec_dec_init(cr_codec_dec *d, lua_State *L, const unsigned char *p, size_t pos, size_t end) {
  memset(d, 0, sizeof *d);
  d->L = L;
  d->p = p;
  d->pos = pos;
  d->end = end;
  d->budget = end - pos;
  d->mode = CR_CODEC_PLAIN;
}

int cr_codec_decode_value(cr_codec_dec *d) {
  lua_State *L = d->L;
  int top = lua_gettop(L), ok;
  if (!lua_checkstack(L, 8)) return bad(d, "no room on the Lua stack");
  lua_pushnil(L); /* the slots of the numbered lists, filled when needed */
  lua_pushnil(L);
  d->tables = top + 1;
  d->strings = top + 2;
  d->ntables = d->nstrings = 0;
  ok = decode(d, 1);
  if (ok) lua_replace(L, top + 1);
  lua_settop(L, ok ? top + 1 : top);
  return ok;
}

/* The header: version, mode, counts bounded by the bytes, and a body that
 * ends the bytes exactly. */
static int read_header(cr_codec_dec *d, enum cr_codec_mode mode, uint64_t *nvalues, uint64_t *ntables,
                       uint64_t *nstrings) {
  uint64_t body;
  if (d->end < 2) return bad(d, "too short to be an encoding");
  if (d->p[0] != CR_CODEC_VERSION) return bad(d, "another format or version");
  if (d->p[1] != (mode == CR_CODEC_NAMED ? FLAG_NAMED : 0)) return bad(d, "encoded for another use");
  d->pos = 2;
  if (!get_varint(d, nvalues) || !get_varint(d, ntables) || !get_varint(d, nstrings) || !get_varint(d, &body))
    return bad(d, "a damaged header");
  if (body != d->end - d->pos) return bad(d, "cut short or extended (its length is not the recorded one)");
  if (*nvalues > body || *ntables > body / 3 || *nstrings > body / 2) return bad(d, "counts larger than the bytes");
  d->budget = (size_t)body;
  return 1;
}

int cr_codec_header(const unsigned char *p, size_t len, cr_codec_head *h) {
  cr_codec_dec d;
  memset(&d, 0, sizeof d);
  memset(h, 0, sizeof *h);
  d.p = p;
  d.end = len;
  h->named = len > 1 && p[1] == FLAG_NAMED;
  if (!read_header(&d, h->named ? CR_CODEC_NAMED : CR_CODEC_MEMORY, &h->nvalues, &h->ntables, &h->nstrings))
    return 0;
  h->body = d.pos;
  return 1;
}

int cr_codec_decode(lua_State *L, int src, int metas, enum cr_codec_mode mode, const char **why) {
  cr_codec_dec d;
  uint64_t nvalues, ntables, nstrings, i;
  size_t len = 0;
  int base = lua_gettop(L);
  /* the string stays at src while this runs: the pointer into it does too
   * (Lua never moves a string) */
  const char *s = lua_type(L, src) == LUA_TSTRING ? lua_tolstring(L, src, &len) : NULL;
  memset(&d, 0, sizeof d);
  d.L = L;
  d.p = (const unsigned char *)s;
  d.end = s ? len : 0;
  d.mode = mode;
  d.metas = metas ? lua_absindex(L, metas) : 0;
  *why = NULL;
  if (s == NULL) {
    *why = "not a string";
    return -1;
  }
  if (!read_header(&d, mode, &nvalues, &ntables, &nstrings)) {
    *why = d.error;
    return -1;
  }
  if (nvalues > INT_MAX - 8 || !lua_checkstack(L, (int)nvalues + 8)) {
    *why = "more values than the Lua stack holds";
    return -1;
  }
  /* the slots of the numbered lists, presized when the header counts some */
  if (ntables) lua_createtable(L, ntables > INT_MAX ? INT_MAX : (int)ntables, 0);
  else lua_pushnil(L);
  if (nstrings) lua_createtable(L, nstrings > INT_MAX ? INT_MAX : (int)nstrings, 0);
  else lua_pushnil(L);
  d.tables = base + 1;
  d.strings = base + 2;
  for (i = 0; i < nvalues; i++) {
    if (!decode(&d, 1)) break;
  }
  if (i < nvalues || d.pos != d.end || (uint64_t)d.ntables != ntables || (uint64_t)d.nstrings != nstrings) {
    *why = d.error ? d.error : "counts that do not match its contents";
    lua_settop(L, base);
    return -1;
  }
  lua_rotate(L, base + 1, -2); /* the lists go on top, then go */
  lua_pop(L, 2);
  return (int)nvalues;
}
