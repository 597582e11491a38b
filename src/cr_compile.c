/* Compiled replays. A replay buffer hit often enough is turned into a Lua
 * function that makes the same calls with the same arguments: a Lua-to-Lua
 * call with constant arguments costs far less than decoding a record and
 * entering the VM again through lua_callk for each one (make bench, replay
 * row). The C buffer stays the record (stats, releases, the fallback for
 * buffers this does not take); the function is a cache of it, kept as
 * uservalue 2 of the buffer's userdata so both go together.
 *
 * The generated chunk, for records 0, 1, 2, ...:
 *
 *   local R = ...              -- values kept by reference, non-finite floats
 *   return function(F)         -- F: replayable id -> function to call
 *   local T = {}               -- only when a record uses an earlier result
 *   F[3]("element 1",0x...)    -- record 0
 *   T[2] = F[5]()              -- record 1, whose result record 2 uses
 *   F[6](T[2],{["a"]=...})     -- record 2
 *   end
 *
 * Every literal is exact: integers in hexadecimal (Lua wraps them to the
 * same 64 bits), finite floats as hexadecimal literals built from their
 * bits, strings with every byte outside printable ASCII as a three-digit
 * decimal escape; NaN and the
 * infinities go through R, so even a NaN's sign survives. Tables are
 * constructors (the array part positional), so each replay passes a fresh
 * table, as the C loop does; an argument whose copy shares a table with
 * itself (a cycle, a subtable reached twice) is not taken. */
#include <stdio.h>
#include <string.h>
#include <math.h>
#include "cr.h"

/* Beyond these the C loop replays: a Lua function has at most 255
 * registers, and compiling a huge buffer costs more than it saves. */
#define COMPILE_MAX_BYTES 16384
#define COMPILE_MAX_ARGS 64
#define COMPILE_MAX_DEPTH 16

/* Pass 1: checks an argument fits the limits and marks the records whose
 * results are referred to. Returns 0 when it does not fit: a copy that
 * shares tables or strings (numbered in the codec) needs the C loop. */
static int scan_value(const cr_buffer *b, size_t *pos, int depth, unsigned char *used, size_t nrecords) {
  cr_codec_item it;
  uint64_t i;
  int tag = b->data[*pos];
  if (tag == R_REF || tag == R_RESULT) {
    uint64_t k;
    (*pos)++;
    k = cr_buffer_get_varint(b, pos);
    if (tag == R_RESULT) {
      if (k >= nrecords) return 0;
      used[k] = 1;
    }
    return 1;
  }
  if (!cr_codec_read_item(b->data, b->len, pos, &it)) return 0;
  switch (it.tag) {
    case CR_C_NIL: case CR_C_FALSE: case CR_C_TRUE: case CR_C_INT: case CR_C_FLOAT: case CR_C_STR: return 1;
    case CR_C_TABLE:
      if (depth >= COMPILE_MAX_DEPTH) return 0;
      for (i = 0; i < it.u + 2 * it.nhash; i++)
        if (!scan_value(b, pos, depth + 1, used, nrecords)) return 0;
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

/* Pass 2: writes one argument (scanned already) as a Lua expression. `R`
 * indexes the table of values passed by reference; *nextra counts the ones
 * added after refs. */
static void emit_value(lua_State *L, cr_buffer *out, const cr_replay *rp, size_t *pos, int R, size_t *nextra) {
  const cr_buffer *b = &rp->buf;
  cr_codec_item it;
  char num[64];
  uint64_t i;
  int tag = b->data[*pos];
  if (tag == R_REF || tag == R_RESULT) {
    (*pos)++;
    snprintf(num, sizeof num, "%s[%llu]", tag == R_REF ? "R" : "T", (unsigned long long)cr_buffer_get_varint(b, pos) + 1);
    put(L, out, num);
    return;
  }
  cr_codec_read_item(b->data, b->len, pos, &it);
  switch (it.tag) {
    case CR_C_NIL: put(L, out, "nil"); break;
    case CR_C_FALSE: put(L, out, "false"); break;
    case CR_C_TRUE: put(L, out, "true"); break;
    case CR_C_INT: /* zigzag back to the integer's bits */
      snprintf(num, sizeof num, "0x%016llx", (unsigned long long)((it.u >> 1) ^ (0 - (it.u & 1))));
      put(L, out, num);
      break;
    case CR_C_FLOAT: {
      double d;
      memcpy(&d, &it.u, sizeof d);
      if (isfinite(d)) {
        format_float(num, sizeof num, it.u);
      } else { /* no literal keeps every bit of these */
        lua_pushnumber(L, (lua_Number)d);
        lua_rawseti(L, R, (lua_Integer)(rp->nrefs + ++*nextra));
        snprintf(num, sizeof num, "R[%zu]", rp->nrefs + *nextra);
      }
      put(L, out, num);
      break;
    }
    case CR_C_STR:
      cr_buffer_byte(L, out, '"');
      for (i = 0; i < it.u; i++) {
        unsigned char c = b->data[it.off + i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
          cr_buffer_byte(L, out, c);
        } else {
          snprintf(num, sizeof num, "\\%03u", (unsigned)c);
          put(L, out, num);
        }
      }
      cr_buffer_byte(L, out, '"');
      break;
    default: /* a table: the array part in order, then the pairs */
      cr_buffer_byte(L, out, '{');
      for (i = 0; i < it.u; i++) {
        emit_value(L, out, rp, pos, R, nextra);
        cr_buffer_byte(L, out, ',');
      }
      for (i = 0; i < it.nhash; i++) {
        cr_buffer_byte(L, out, '[');
        emit_value(L, out, rp, pos, R, nextra);
        put(L, out, "]=");
        emit_value(L, out, rp, pos, R, nextra);
        cr_buffer_byte(L, out, ',');
      }
      cr_buffer_byte(L, out, '}');
      break;
  }
}

/* Turns rp's records into a function, stored as uservalue 2 of the
 * buffer's userdata at index `anchor`. Sets rp->compiled to 1, or to -1
 * when the buffer is beyond the limits (the C loop then replays it). */
void cr_replay_compile(lua_State *L, cr_state *S, cr_replay *rp, int anchor) {
  cr_buffer *out;
  const cr_buffer *b = &rp->buf;
  unsigned char *used;
  size_t pos = 0, index, nextra = 0, i;
  int R, top = lua_gettop(L);
  (void)S;
  rp->compiled = -1;
  if (b->len > COMPILE_MAX_BYTES) return;
  luaL_checkstack(L, 8, "cache_resource: compiling a replay");
  /* its own buffer: the allocations below may run finalizers that compute
   * identities or compile other replays */
  out = &cr_keybufs_box(L)->out;
  used = (unsigned char *)lua_newuserdatauv(L, rp->nrecords + 1, 0);
  memset(used, 0, rp->nrecords + 1);
  for (index = 0; pos < b->len; index++) {
    size_t n;
    cr_buffer_get_varint(b, &pos);
    n = (size_t)cr_buffer_get_varint(b, &pos);
    if (n > COMPILE_MAX_ARGS) goto done;
    for (i = 0; i < n; i++)
      if (!scan_value(b, &pos, 0, used, rp->nrecords)) goto done;
  }
  lua_createtable(L, (int)rp->nrefs, 0);
  R = lua_gettop(L);
  for (i = 0; i < rp->nrefs; i++) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rp->refs[i]);
    lua_rawseti(L, R, (lua_Integer)i + 1);
  }
  out->len = 0;
  put(L, out, "local R = ...\nreturn function(F)\n");
  if (rp->uses_results) put(L, out, "local T = {}\n");
  for (pos = 0, index = 0; pos < b->len; index++) {
    char head[64];
    uint64_t id = cr_buffer_get_varint(b, &pos), n = cr_buffer_get_varint(b, &pos), k;
    if (used[index]) snprintf(head, sizeof head, "T[%zu]=F[%llu](", index + 1, (unsigned long long)id);
    else snprintf(head, sizeof head, "F[%llu](", (unsigned long long)id);
    put(L, out, head);
    for (k = 0; k < n; k++) {
      if (k) cr_buffer_byte(L, out, ',');
      emit_value(L, out, rp, &pos, R, &nextra);
    }
    put(L, out, ")\n");
  }
  put(L, out, "end\n");
  if (luaL_loadbufferx(L, (const char *)out->data, out->len, "=cache_resource replay", "t") != LUA_OK) goto done;
  lua_pushvalue(L, R);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isfunction(L, -1)) goto done;
  lua_setiuservalue(L, anchor, 2);
  rp->compiled = 1;
done:
  cr_buffer_free(out);
  lua_settop(L, top);
}
