/* Compiled replays and compiled copies. A replay buffer hit often enough
 * is turned into a Lua function that makes the same calls with the same
 * arguments: a Lua-to-Lua call with constant arguments costs far less than
 * decoding a record and entering the VM again through lua_callk for each
 * one (make bench, replay row). The C buffer stays the record (stats,
 * releases, the fallback for buffers this does not take); the function is
 * a cache of it, kept as uservalue 2 of the buffer's userdata so both go
 * together. A cache_data entry hit often enough is turned the same way into
 * a function that returns a fresh copy of its values: its strings become
 * constants of the function, made once, instead of strings made from the
 * bytes on every hit (make bench, cache_data rows).
 *
 * The generated chunk for a replay, records 0, 1, 2, ...:
 *
 *   local R = ...              -- values kept by reference, non-finite floats
 *   return function(F)         -- F: replayable id -> function to call
 *   local T = {}               -- only when a record uses an earlier result
 *   F[3]("element 1",0x...)    -- record 0
 *   T[2] = F[5]()              -- record 1, whose result record 2 uses
 *   F[6](T[2],{["a"]=...})     -- record 2
 *   end
 *
 * and for a cache_data entry's values:
 *
 *   local R = ...              -- non-finite floats
 *   return function() return {{["id"]=0x...,["name"]="..."},...},"second" end
 *
 * Every literal is exact: integers in hexadecimal (Lua wraps them to the
 * same 64 bits), finite floats as hexadecimal literals built from their
 * bits, strings with every byte outside printable ASCII as a three-digit
 * decimal escape; NaN and the
 * infinities go through R, so even a NaN's sign survives. Tables are
 * constructors (the array part positional), so each call makes fresh
 * tables, as the C decoder does; values whose copy shares a table (a
 * cycle, a subtable reached twice) or has a metatable are not taken, nor
 * what a Lua function cannot hold (the limits below, or registers and
 * constants past Lua's own: the chunk then fails to load). */
#include <stdio.h>
#include <string.h>
#include <math.h>
#include "cr.h"

/* Beyond these the C loop replays and the C decoder copies: a Lua function
 * has at most 255 registers, and compiling a huge buffer costs more than
 * it saves. */
#define COMPILE_MAX_BYTES 16384
#define COMPILE_MAX_ARGS 64
#define COMPILE_MAX_DEPTH 16
#define COMPILE_DATA_MAX_BYTES (1024 * 1024)
#define COMPILE_DATA_MAX_VALUES 200

/* What the passes read: the bytes, and for replays what records refer to. */
typedef struct reader {
  const unsigned char *p;
  size_t end;
  unsigned char *used;          /* replays: records whose results later records use */
  size_t nrecords;              /* replays: 0 for a cache_data entry */
  int data;                     /* a cache_data entry: numbered strings allowed, */
  uint64_t nkept, maxkept;      /* ... so many of them, as its header says */
} reader;

/* Pass 1: checks a value fits the limits and, in a replay, marks the
 * records whose results are referred to. Returns 0 when it does not fit. */
static int scan_value(reader *r, size_t *pos, int depth) {
  cr_codec_item it;
  uint64_t i;
  int tag;
  if (*pos >= r->end) return 0;
  tag = r->p[*pos];
  if (!r->data && (tag == R_REF || tag == R_RESULT)) {
    cr_buffer b;
    uint64_t k;
    b.data = (unsigned char *)r->p;
    b.len = b.cap = r->end;
    (*pos)++;
    k = cr_buffer_get_varint(&b, pos);
    if (tag == R_RESULT) {
      if (k >= r->nrecords) return 0;
      r->used[k] = 1;
    }
    return 1;
  }
  if (!cr_codec_read_item(r->p, r->end, pos, &it)) return 0;
  switch (it.tag) {
    case CR_C_NIL: case CR_C_FALSE: case CR_C_TRUE: case CR_C_INT: case CR_C_FLOAT: case CR_C_STR: return 1;
    case CR_C_STR_KEEP: return r->data && r->nkept++ < r->maxkept;
    case CR_C_STR_REF: return r->data && it.u < r->nkept;
    case CR_C_TABLE:
      if (depth >= COMPILE_MAX_DEPTH) return 0;
      for (i = 0; i < it.u + 2 * it.nhash; i++)
        if (!scan_value(r, pos, depth + 1)) return 0;
      return 1;
    default: return 0;
  }
}

/* A finite double as an exact hexadecimal float literal, written from its
 * bits: printf's "%a" would follow the C locale's decimal point. */
static void format_float(char *out, size_t size, uint64_t bits) {
  const char *sign = (bits >> 63) ? "-" : "";
  int exponent = (int)((bits >> 52) & 0x7ff);
  unsigned long long mantissa = (unsigned long long)(bits & ((UINT64_C(1) << 52) - 1));
  if (exponent == 0) /* zero or subnormal */
    snprintf(out, size, "(%s0x0.%013llxp-1022)", sign, mantissa);
  else
    snprintf(out, size, "(%s0x1.%013llxp%+d)", sign, mantissa, exponent - 1023);
}

static void put(lua_State *L, cr_buffer *out, const char *s) {
  cr_buffer_put(L, out, s, strlen(s));
}

/* Pass 2 writes into `out`; R is the index of the table of values the
 * chunk gets (replays: the values kept by reference first), nR how many it
 * holds. `kept`: a cache_data entry's numbered strings (offset, length). */
typedef struct emitter {
  lua_State *L;
  cr_buffer *out;
  int R;
  size_t nR;
  size_t *kept;
  size_t nkept;
} emitter;

static void emit_string(emitter *em, const unsigned char *p, size_t len) {
  char esc[8];
  size_t i;
  cr_buffer_byte(em->L, em->out, '"');
  for (i = 0; i < len; i++) {
    unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      cr_buffer_byte(em->L, em->out, c);
    } else {
      snprintf(esc, sizeof esc, "\\%03u", (unsigned)c);
      put(em->L, em->out, esc);
    }
  }
  cr_buffer_byte(em->L, em->out, '"');
}

/* Pass 2: writes one value (scanned already) as a Lua expression. */
static void emit_value(emitter *em, const reader *r, size_t *pos) {
  lua_State *L = em->L;
  cr_codec_item it;
  char num[64];
  uint64_t i;
  int tag = r->p[*pos];
  if (!r->data && (tag == R_REF || tag == R_RESULT)) {
    cr_buffer b;
    b.data = (unsigned char *)r->p;
    b.len = b.cap = r->end;
    (*pos)++;
    snprintf(num, sizeof num, "%s[%llu]", tag == R_REF ? "R" : "T", (unsigned long long)cr_buffer_get_varint(&b, pos) + 1);
    put(L, em->out, num);
    return;
  }
  cr_codec_read_item(r->p, r->end, pos, &it);
  switch (it.tag) {
    case CR_C_NIL: put(L, em->out, "nil"); break;
    case CR_C_FALSE: put(L, em->out, "false"); break;
    case CR_C_TRUE: put(L, em->out, "true"); break;
    case CR_C_INT: /* zigzag back to the integer's bits */
      snprintf(num, sizeof num, "0x%016llx", (unsigned long long)((it.u >> 1) ^ (0 - (it.u & 1))));
      put(L, em->out, num);
      break;
    case CR_C_FLOAT: {
      double d;
      memcpy(&d, &it.u, sizeof d);
      if (isfinite(d)) {
        format_float(num, sizeof num, it.u);
      } else { /* no literal keeps every bit of these */
        lua_pushnumber(L, (lua_Number)d);
        lua_rawseti(L, em->R, (lua_Integer)++em->nR);
        snprintf(num, sizeof num, "R[%zu]", em->nR);
      }
      put(L, em->out, num);
      break;
    }
    case CR_C_STR: case CR_C_STR_KEEP:
      if (it.tag == CR_C_STR_KEEP) { /* numbered: STR_REF writes it again */
        em->kept[2 * em->nkept] = it.off;
        em->kept[2 * em->nkept++ + 1] = (size_t)it.u;
      }
      emit_string(em, r->p + it.off, (size_t)it.u);
      break;
    case CR_C_STR_REF:
      emit_string(em, r->p + em->kept[2 * it.u], em->kept[2 * it.u + 1]);
      break;
    default: /* a table: the array part in order, then the pairs */
      cr_buffer_byte(L, em->out, '{');
      for (i = 0; i < it.u; i++) {
        emit_value(em, r, pos);
        cr_buffer_byte(L, em->out, ',');
      }
      for (i = 0; i < it.nhash; i++) {
        cr_buffer_byte(L, em->out, '[');
        emit_value(em, r, pos);
        put(L, em->out, "]=");
        emit_value(em, r, pos);
        cr_buffer_byte(L, em->out, ',');
      }
      cr_buffer_byte(L, em->out, '}');
      break;
  }
}

/* Loads the chunk in out and calls it with the table at R: pushes the
 * function it returns, or nothing and returns 0 (beyond Lua's limits). */
static int load_chunk(lua_State *L, const cr_buffer *out, const char *name, int R) {
  if (luaL_loadbufferx(L, (const char *)out->data, out->len, name, "t") != LUA_OK) return 0;
  lua_pushvalue(L, R);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isfunction(L, -1)) return 0;
  return 1;
}

/* Turns rp's records into a function, stored as uservalue 2 of the
 * buffer's userdata at index `anchor`. Sets rp->compiled to 1, or to -1
 * when the buffer is beyond the limits (the C loop then replays it). */
void cr_replay_compile(lua_State *L, cr_state *S, cr_replay *rp, int anchor) {
  cr_buffer *out;
  const cr_buffer *b = &rp->buf;
  reader r;
  emitter em;
  size_t pos = 0, index, i;
  int top = lua_gettop(L);
  (void)S;
  rp->compiled = -1;
  if (b->len > COMPILE_MAX_BYTES) return;
  luaL_checkstack(L, 8, "cache_resource: compiling a replay");
  /* its own buffer: the allocations below may run finalizers that compute
   * identities or compile other replays */
  out = &cr_keybufs_box(L)->out;
  memset(&r, 0, sizeof r);
  r.p = b->data; /* the records stay put: a replay runs over them (rp->active) */
  r.end = b->len;
  r.nrecords = rp->nrecords;
  r.used = (unsigned char *)lua_newuserdatauv(L, rp->nrecords + 1, 0);
  memset(r.used, 0, rp->nrecords + 1);
  for (index = 0; pos < b->len; index++) {
    size_t n;
    cr_buffer_get_varint(b, &pos);
    n = (size_t)cr_buffer_get_varint(b, &pos);
    if (n > COMPILE_MAX_ARGS) goto done;
    for (i = 0; i < n; i++)
      if (!scan_value(&r, &pos, 0)) goto done;
  }
  memset(&em, 0, sizeof em);
  em.L = L;
  em.out = out;
  lua_createtable(L, (int)rp->nrefs, 0);
  em.R = lua_gettop(L);
  for (i = 0; i < rp->nrefs; i++) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rp->refs[i]);
    lua_rawseti(L, em.R, (lua_Integer)i + 1);
  }
  em.nR = rp->nrefs;
  out->len = 0;
  put(L, out, "local R = ...\nreturn function(F)\n");
  if (rp->uses_results) put(L, out, "local T = {}\n");
  for (pos = 0, index = 0; pos < b->len; index++) {
    char head[64];
    uint64_t id = cr_buffer_get_varint(b, &pos), n = cr_buffer_get_varint(b, &pos), k;
    if (r.used[index]) snprintf(head, sizeof head, "T[%zu]=F[%llu](", index + 1, (unsigned long long)id);
    else snprintf(head, sizeof head, "F[%llu](", (unsigned long long)id);
    put(L, out, head);
    for (k = 0; k < n; k++) {
      if (k) cr_buffer_byte(L, out, ',');
      emit_value(&em, &r, &pos);
    }
    put(L, out, ")\n");
  }
  put(L, out, "end\n");
  if (!load_chunk(L, out, "=cache_resource replay", em.R)) goto done;
  lua_setiuservalue(L, anchor, 2);
  rp->compiled = 1;
done:
  cr_buffer_free(out);
  lua_settop(L, top);
}

/* Turns the cache_data encoding in the string at src (anchored there while
 * this runs) into a function returning a fresh copy of its values, and
 * pushes it; returns 0, pushing nothing, when the encoding is one it does
 * not take. */
int cr_data_compile(lua_State *L, int src) {
  cr_codec_head h;
  cr_buffer *out;
  reader r;
  emitter em;
  size_t len, pos;
  uint64_t i;
  int top = lua_gettop(L), ok = 0;
  const unsigned char *p = (const unsigned char *)lua_tolstring(L, src, &len);
  if (len > COMPILE_DATA_MAX_BYTES || !cr_codec_header(p, len, &h) || h.named || h.ntables > 0 ||
      h.nvalues > COMPILE_DATA_MAX_VALUES)
    return 0;
  memset(&r, 0, sizeof r);
  r.p = p;
  r.end = len;
  r.data = 1;
  r.maxkept = h.nstrings;
  for (pos = h.body, i = 0; i < h.nvalues; i++)
    if (!scan_value(&r, &pos, 0)) return 0;
  luaL_checkstack(L, 8, "cache_data: compiling a copy");
  out = &cr_keybufs_box(L)->out; /* its own buffer, as for replays */
  memset(&em, 0, sizeof em);
  em.L = L;
  em.out = out;
  em.kept = (size_t *)lua_newuserdatauv(L, (size_t)(2 * h.nstrings + 1) * sizeof *em.kept, 0);
  lua_newtable(L);
  em.R = lua_gettop(L);
  put(L, out, "local R = ...\nreturn function() return ");
  for (pos = h.body, i = 0; i < h.nvalues; i++) {
    if (i) cr_buffer_byte(L, out, ',');
    emit_value(&em, &r, &pos);
  }
  put(L, out, " end\n");
  if (load_chunk(L, out, "=cache_data copy", em.R)) {
    lua_replace(L, top + 1);
    ok = 1;
  }
  cr_buffer_free(out);
  lua_settop(L, top + ok);
  return ok;
}
