/* Replay of UI calls: the record format, the recording frames of
 * computations and the replay loop (the replayable UI functions that
 * record, and the hooks: cr_ui.c).
 *
 * The record format
 * -----------------
 *   records  = record*
 *   record   = varint(replayable id) varint(nargs) argument{nargs}
 *   argument = value                  a copy: one value of the value codec
 *                                     (cr_codec.c), numbered on its own
 *            | R_REF varint(i)        the value kept by registry reference i
 *            | R_RESULT varint(i)     what recorded call i of this
 *                                     computation returned
 *   varint   = LEB128, as in the codec
 *
 * Arguments that are nil, booleans, numbers, strings or tables of those
 * without metatables (shared subtables and cycles included) are copied, so
 * later mutation by the caller changes nothing and every replay gets fresh
 * tables; a value that an earlier recorded call of the same computation
 * returned (a container block) is written as R_RESULT, so replay binds it
 * to what the replayed call returned; anything else (functions, userdata,
 * objects with a metatable) is kept by registry reference until the entry
 * goes. R_REF and R_RESULT are above the codec's tags. */
#include <stdlib.h>
#include <string.h>
#include "cr.h"

/* ---- buffers ----------------------------------------------------------- */

/* A new buffer, owned by the caller through self_ref. */
static cr_replay *replay_new(lua_State *L) {
  cr_replay *rp = (cr_replay *)lua_newuserdatauv(L, sizeof *rp, 2);
  memset(rp, 0, sizeof *rp);
  rp->self_ref = LUA_NOREF;
  luaL_setmetatable(L, CR_REPLAY_MT);
  rp->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return rp;
}

/* Frees the records and their references; the userdata shell stays for
 * the collector. Idempotent. */
static void replay_free_records(lua_State *L, cr_replay *rp) {
  size_t i;
  for (i = 0; i < rp->nrefs; i++) luaL_unref(L, LUA_REGISTRYINDEX, rp->refs[i]);
  free(rp->refs);
  rp->refs = NULL;
  rp->nrefs = rp->caprefs = 0;
  cr_buffer_free(&rp->buf);
}

/* The C owner lets go. The records go now unless a replay runs over them
 * (then the last one frees them): freeing does not wait for __gc, which
 * Lua may skip (a C stack overflow while finalizing). */
void cr_replay_unref(lua_State *L, cr_replay *rp) {
  if (rp == NULL) return;
  luaL_unref(L, LUA_REGISTRYINDEX, rp->self_ref);
  rp->self_ref = LUA_NOREF;
  if (rp->active == 0) replay_free_records(L, rp);
}

/* A replay over rp ended. */
static void replay_done(lua_State *L, cr_replay *rp) {
  if (--rp->active == 0 && rp->self_ref == LUA_NOREF) replay_free_records(L, rp);
}

/* __gc, also run for every buffer at lua_close (possibly before the state's
 * own __gc, which then only drops self_ref): the fallback for a buffer
 * whose replay was abandoned. */
int cr_replay_gc(lua_State *L) {
  replay_free_records(L, (cr_replay *)lua_touserdata(L, 1));
  return 0;
}

/* Keeps the value at idx by reference; -1 when memory runs out. */
static long add_ref(lua_State *L, cr_replay *rp, int idx) {
  if (rp->nrefs == rp->caprefs) {
    size_t cap = rp->caprefs ? rp->caprefs * 2 : 4;
    int *r = (int *)realloc(rp->refs, cap * sizeof *r);
    if (r == NULL) return -1;
    rp->refs = r;
    rp->caprefs = cap;
  }
  lua_pushvalue(L, idx);
  rp->refs[rp->nrefs] = luaL_ref(L, LUA_REGISTRYINDEX);
  return (long)rp->nrefs++;
}

/* A tag and a varint, or 0 when memory runs out. */
static int put_tagged(cr_buffer *b, int tag, uint64_t v) {
  if (!cr_buffer_grow(b, 11)) return 0;
  if (tag >= 0) b->data[b->len++] = (unsigned char)tag;
  do {
    unsigned char c = (unsigned char)(v & 0x7f);
    v >>= 7;
    b->data[b->len++] = (unsigned char)(c | (v ? 0x80 : 0));
  } while (v);
  return 1;
}

/* Appends one record to a computation's frame: replayable id, then the
 * arguments first..first+n-1; `result` (a stack index, or 0) is what the
 * call returned, which later records may refer to. */
void cr_replay_record(lua_State *L, cr_call *frame, lua_Integer id, int first, int n, int result) {
  cr_state *S = frame->S;
  cr_replay *rp;
  cr_buffer *b;
  cr_codec_bufs *cb;
  cr_codec_error err;
  enum cr_codec_status st;
  size_t index, mark;
  int i;
  if (frame->recording == NULL) {
    rp = replay_new(L); /* allocates: a finalizer may record into this frame meanwhile */
    if (frame->recording == NULL) {
      rp->cache = frame->cache;
      frame->recording = rp;
    } else {
      cr_replay_unref(L, rp);
    }
  }
  cb = cr_codec_bufs_take(L, &S->codec); /* may box a set (allocates): before the record starts */
  /* from here to the end of the record nothing runs Lua code: records never
   * interleave; and a record is whole or not there (memory running out
   * takes it back before the error) */
  rp = frame->recording;
  b = &rp->buf;
  mark = b->len;
  index = rp->nrecords;
  if (!put_tagged(b, -1, (uint64_t)id) || !put_tagged(b, -1, (uint64_t)n)) goto out_of_memory;
  for (i = first; i < first + n; i++) {
    int t = lua_type(L, i);
    long ref;
    if (frame->results_ref != LUA_NOREF && (t == LUA_TTABLE || t == LUA_TUSERDATA || t == LUA_TFUNCTION)) {
      lua_Integer k;
      lua_rawgeti(L, LUA_REGISTRYINDEX, frame->results_ref);
      lua_pushvalue(L, i);
      t = lua_rawget(L, -2);
      k = lua_tointeger(L, -1);
      lua_pop(L, 2);
      if (t == LUA_TNUMBER) {
        if (!put_tagged(b, R_RESULT, (uint64_t)k)) goto out_of_memory;
        rp->uses_results = 1;
        continue;
      }
    }
    st = cr_codec_append_value(L, cb, b, i, &err);
    if (st == CR_CODEC_NOMEM) goto out_of_memory;
    if (st == CR_CODEC_OK) continue;
    if ((ref = add_ref(L, rp, i)) < 0 || !put_tagged(b, R_REF, (uint64_t)ref)) goto out_of_memory;
  }
  cr_codec_bufs_release(cb);
  rp->nrecords++;
  if (result) { /* remember what this call returned: later records may use it */
    int t = lua_type(L, result);
    if (t == LUA_TTABLE || t == LUA_TUSERDATA || t == LUA_TFUNCTION) {
      if (frame->results_ref == LUA_NOREF) {
        lua_newtable(L); /* allocates: a finalizer may have made one meanwhile */
        if (frame->results_ref == LUA_NOREF) frame->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else lua_pop(L, 1);
      }
      lua_rawgeti(L, LUA_REGISTRYINDEX, frame->results_ref);
      lua_pushvalue(L, result);
      lua_pushinteger(L, (lua_Integer)index);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }
  return;
out_of_memory:
  b->len = mark;
  cr_codec_bufs_release(cb);
  cr_error(L, "cache_resource: out of memory (recording a UI call into a buffer of %I bytes)", (lua_Integer)mark);
}

/* Drops a computation's recording state (done, failed or abandoned). */
void cr_replay_free_frame(lua_State *L, cr_call *call) {
  if (call->recording == NULL && call->results_ref == LUA_NOREF && call->widgets_ref == LUA_NOREF) return;
  cr_replay_unref(L, call->recording);
  call->recording = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, call->results_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, call->widgets_ref);
  call->results_ref = call->widgets_ref = LUA_NOREF;
}

/* ---- decoding ------------------------------------------------------------ */

/* Pushes one recorded argument. `strings` indexes a table caching the
 * strings already decoded from this buffer, by their offset in it:
 * interning them anew on every replay costs more than the call. The
 * buffer stays put while a replay runs over it (rp->active). */
static void push_argument(lua_State *L, const cr_replay *rp, size_t *pos, int results, int strings) {
  const cr_buffer *b = &rp->buf;
  cr_codec_dec d;
  int tag = b->data[*pos];
  if (tag == R_REF || tag == R_RESULT) {
    lua_Integer i;
    (*pos)++;
    i = (lua_Integer)cr_buffer_get_varint(b, pos);
    if (tag == R_REF) lua_rawgeti(L, LUA_REGISTRYINDEX, rp->refs[i]);
    else lua_rawgeti(L, results, i);
    return;
  }
  cr_codec_dec_init(&d, L, b->data, *pos, b->len);
  d.strcache = strings;
  if (!cr_codec_decode_value(&d)) cr_error(L, "cache_resource: a damaged replay record (%s)", d.error);
  *pos = d.pos;
}

/* ---- replay ------------------------------------------------------------ */

/* A replay keeps its state in six stack slots above the values it will
 * return, so that a replayed UI call may yield (the C frame is then gone)
 * and nothing is allocated per hit. The continuation context is the read
 * position in the buffer. */
enum {
  SLOT_ANCHOR,   /* the cr_replay userdata */
  SLOT_FNS,      /* replayable id -> function to call */
  SLOT_STRINGS,  /* decoded strings (uservalue 1 of the anchor) */
  SLOT_RESULTS,  /* index -> what replayed call `index` returned, or nil */
  SLOT_NVALUES,  /* how many values sit below the anchor */
  SLOT_INDEX,    /* records replayed so far (kept only when results are used) */
  NSLOTS
};

static int replay_resume(lua_State *L, int status, lua_KContext ctx);

/* After a replayed call: keep its result when later records refer to it,
 * then drop it. */
static void replay_step_done(lua_State *L, int slots, const cr_replay *rp) {
  if (rp->uses_results) {
    lua_Integer index = lua_tointeger(L, slots + SLOT_INDEX);
    if (!lua_isnil(L, -1)) lua_rawseti(L, slots + SLOT_RESULTS, index);
    lua_pushinteger(L, index + 1);
    lua_replace(L, slots + SLOT_INDEX);
  }
  lua_settop(L, slots + NSLOTS - 1);
}

/* Replays the records from pos on, then returns the values. A loop, not a
 * recursion: the continuation is only entered after a call yielded. */
static int replay_loop(lua_State *L, int slots, size_t pos) {
  cr_replay *rp = (cr_replay *)lua_touserdata(L, slots + SLOT_ANCHOR);
  int nvalues;
  while (pos < rp->buf.len) {
    lua_Integer id = (lua_Integer)cr_buffer_get_varint(&rp->buf, &pos);
    int n = (int)cr_buffer_get_varint(&rp->buf, &pos), i;
    if (n > LUA_MINSTACK - 2) luaL_checkstack(L, n + 2, "cache_resource: too many recorded arguments");
    lua_rawgeti(L, slots + SLOT_FNS, id);
    for (i = 0; i < n; i++) push_argument(L, rp, &pos, slots + SLOT_RESULTS, slots + SLOT_STRINGS);
    lua_callk(L, n, 1, (lua_KContext)pos, replay_resume);
    replay_step_done(L, slots, rp);
  }
  nvalues = (int)lua_tointeger(L, slots + SLOT_NVALUES);
  replay_done(L, rp);
  lua_settop(L, slots - 1);
  return nvalues;
}

/* Entered when a replayed call yielded and has now returned. */
static int replay_resume(lua_State *L, int status, lua_KContext ctx) {
  int slots = lua_gettop(L) - NSLOTS; /* one result above the slots */
  (void)status;
  replay_step_done(L, slots, (const cr_replay *)lua_touserdata(L, slots + SLOT_ANCHOR));
  return replay_loop(L, slots, (size_t)ctx);
}

/* After the compiled replay: the anchor is on top, the values below it. */
static int compiled_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  replay_done(L, (cr_replay *)lua_touserdata(L, -1));
  lua_pop(L, 1);
  return (int)ctx;
}

/* Keeps rp's records alive whatever happens to its owner (the entry may
 * be released while a cache_data hit decodes its values, which allocates):
 * pushes its anchor and counts a replay. Allocates nothing. Returns the
 * anchor's index, for cr_replay_run. */
int cr_replay_hold(lua_State *L, cr_replay *rp) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rp->self_ref);
  rp->active++;
  return lua_gettop(L);
}

/* Replays rp's records in order, then returns the nvalues values on top of
 * the stack. `direct`: nothing would record these calls (no
 * computation of this coroutine encloses the hit), so call the UI functions
 * themselves rather than their replayables (one C layer less). `held`: the
 * index cr_replay_hold returned (below the values), or 0. */
int cr_replay_run(lua_State *L, cr_state *S, cr_replay *rp, int nvalues, int direct, int held) {
  int slots;
  luaL_checkstack(L, NSLOTS + LUA_MINSTACK, "cache_resource: replaying");
  if (held) {
    lua_pushvalue(L, held);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, rp->self_ref);
    rp->active++; /* before compiling: it allocates, and finalizers may release the entry */
  }
  slots = lua_gettop(L);
  if (rp->compiled == 0 && S->compile_after && ++rp->replays >= S->compile_after)
    cr_replay_compile(L, S, rp, slots);
  if (rp->compiled == 1) lua_getiuservalue(L, slots, 2); /* called with the table below */
  lua_rawgeti(L, LUA_REGISTRYINDEX, direct ? S->replay_fns_ref : S->replayables_ref);
  if (rp->compiled == 1) {
    lua_callk(L, 1, 0, (lua_KContext)nvalues, compiled_done);
    return compiled_done(L, LUA_OK, (lua_KContext)nvalues);
  }
  if (lua_getiuservalue(L, slots, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, slots, 1);
  }
  if (rp->uses_results) lua_newtable(L); /* only when a record refers back to a result */
  else lua_pushnil(L);
  lua_pushinteger(L, nvalues);
  lua_pushinteger(L, 0);
  return replay_loop(L, slots, 0);
}
