/* Replay of UI calls: the record format, the recording frames of
 * computations and the replay loop (the replayable UI functions that
 * record, and the hooks: cr_ui.c).
 *
 * A record is [varint replayable id][varint nargs][argument]*; a string
 * argument is [R_STR][varint string number][varint length][bytes]. Arguments
 * that are nil, booleans, numbers, strings or plain tables of those are
 * copied (later mutation by the caller changes nothing); a value that an
 * earlier recorded call of the same computation returned (a container
 * block) is written as RESULT(i), so replay binds it to what the replayed
 * call i returned; anything else is kept by registry reference until the
 * entry goes. */
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

static size_t add_ref(lua_State *L, cr_replay *rp, int idx) {
  if (rp->nrefs == rp->caprefs) {
    size_t cap = rp->caprefs ? rp->caprefs * 2 : 4;
    int *r = (int *)realloc(rp->refs, cap * sizeof *r);
    if (r == NULL) cr_error(L, "cache_resource: out of memory (replay references)");
    rp->refs = r;
    rp->caprefs = cap;
  }
  lua_pushvalue(L, idx);
  rp->refs[rp->nrefs] = luaL_ref(L, LUA_REGISTRYINDEX);
  return rp->nrefs++;
}

/* Copies the value at idx; 0 when it cannot be copied (the caller then
 * keeps a reference instead). */
static int copy_value(lua_State *L, cr_replay *rp, int idx, int depth, const void **path) {
  cr_buffer *b = &rp->buf;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: cr_buffer_byte(L, b, R_NIL); return 1;
    case LUA_TBOOLEAN: cr_buffer_byte(L, b, lua_toboolean(L, idx) ? R_TRUE : R_FALSE); return 1;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        cr_buffer_byte(L, b, R_INT);
        cr_buffer_u64(L, b, (uint64_t)lua_tointeger(L, idx));
      } else {
        double d = (double)lua_tonumber(L, idx);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        cr_buffer_byte(L, b, R_FLOAT);
        cr_buffer_u64(L, b, bits);
      }
      return 1;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      cr_buffer_byte(L, b, R_STR);
      cr_buffer_varint(L, b, ++rp->nstrings); /* its slot in the decoded-string table */
      cr_buffer_varint(L, b, len);
      cr_buffer_put(L, b, s, len);
      return 1;
    }
    case LUA_TTABLE: {
      const void *p = lua_topointer(L, idx);
      int i;
      if (depth >= CR_MAX_DEPTH) return 0;
      if (lua_getmetatable(L, idx)) { /* objects are not plain data */
        lua_pop(L, 1);
        return 0;
      }
      for (i = 0; i < depth; i++)
        if (path[i] == p) return 0;
      path[depth] = p;
      luaL_checkstack(L, 4, "cache_resource: recording a table");
      cr_buffer_byte(L, b, R_TABLE);
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        int top = lua_gettop(L);
        if (!copy_value(L, rp, top - 1, depth + 1, path) || !copy_value(L, rp, top, depth + 1, path)) {
          lua_pop(L, 2);
          return 0;
        }
        lua_pop(L, 1);
      }
      cr_buffer_byte(L, b, R_END);
      return 1;
    }
    default: return 0;
  }
}

/* Appends one record to a computation's frame: replayable id, then the
 * arguments first..first+n-1; `result` (a stack index, or 0) is what the
 * call returned, which later records may refer to. */
void cr_replay_record(lua_State *L, cr_call *frame, lua_Integer id, int first, int n, int result) {
  cr_replay *rp;
  cr_buffer *b;
  const void *path[CR_MAX_DEPTH + 1];
  size_t index;
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
  /* from here to the end of the record nothing runs Lua code: records never interleave */
  rp = frame->recording;
  b = &rp->buf;
  index = rp->nrecords;
  cr_buffer_varint(L, b, (uint64_t)id);
  cr_buffer_varint(L, b, (uint64_t)n);
  for (i = first; i < first + n; i++) {
    size_t mark = b->len, mark_strings = rp->nstrings;
    int t = lua_type(L, i);
    if (frame->results_ref != LUA_NOREF && (t == LUA_TTABLE || t == LUA_TUSERDATA || t == LUA_TFUNCTION)) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, frame->results_ref);
      lua_pushvalue(L, i);
      if (lua_rawget(L, -2) == LUA_TNUMBER) {
        cr_buffer_byte(L, b, R_RESULT);
        rp->uses_results = 1;
        cr_buffer_varint(L, b, (uint64_t)lua_tointeger(L, -1));
        lua_pop(L, 2);
        continue;
      }
      lua_pop(L, 2);
    }
    if (!copy_value(L, rp, i, 0, path)) {
      b->len = mark;
      rp->nstrings = mark_strings;
      cr_buffer_byte(L, b, R_REF);
      cr_buffer_varint(L, b, add_ref(L, rp, i));
    }
  }
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
}

/* Drops a computation's recording state (done, failed or abandoned). */
void cr_replay_free_frame(lua_State *L, cr_call *call) {
  cr_replay_unref(L, call->recording);
  call->recording = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, call->results_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, call->widgets_ref);
  call->results_ref = call->widgets_ref = LUA_NOREF;
}

/* ---- decoding ------------------------------------------------------------ */

/* Pushes one decoded value; returns its tag (R_END ends a table).
 * `strings` indexes a table caching the strings already decoded from this
 * buffer, by their number in it (a dense array): interning them anew on
 * every replay costs more than the call. */
static int push_value(lua_State *L, const cr_replay *rp, size_t *pos, int results, int strings) {
  const cr_buffer *b = &rp->buf;
  int tag = b->data[(*pos)++];
  switch (tag) {
    case R_NIL: lua_pushnil(L); break;
    case R_FALSE: lua_pushboolean(L, 0); break;
    case R_TRUE: lua_pushboolean(L, 1); break;
    case R_INT: lua_pushinteger(L, (lua_Integer)cr_buffer_get_u64(b, pos)); break;
    case R_FLOAT: {
      uint64_t bits = cr_buffer_get_u64(b, pos);
      double d;
      memcpy(&d, &bits, sizeof d);
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case R_STR: {
      lua_Integer slot = (lua_Integer)cr_buffer_get_varint(b, pos);
      size_t len = (size_t)cr_buffer_get_varint(b, pos);
      if (lua_rawgeti(L, strings, slot) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushlstring(L, (const char *)b->data + *pos, len);
        lua_pushvalue(L, -1);
        lua_rawseti(L, strings, slot);
      }
      *pos += len;
      break;
    }
    case R_TABLE: /* a fresh table every replay: callees may change it */
      luaL_checkstack(L, 4, "cache_resource: replaying a table");
      lua_newtable(L);
      while (push_value(L, rp, pos, results, strings) != R_END) {
        push_value(L, rp, pos, results, strings);
        lua_rawset(L, -3);
      }
      break;
    case R_REF: lua_rawgeti(L, LUA_REGISTRYINDEX, rp->refs[cr_buffer_get_varint(b, pos)]); break;
    case R_RESULT: lua_rawgeti(L, results, (lua_Integer)cr_buffer_get_varint(b, pos)); break;
    default: break; /* R_END pushes nothing */
  }
  return tag;
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
    for (i = 0; i < n; i++) push_value(L, rp, &pos, slots + SLOT_RESULTS, slots + SLOT_STRINGS);
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

/* Replays rp's records in order, then returns the nvalues values on top of
 * the stack. `direct`: nothing would record these calls (no
 * computation of this coroutine encloses the hit), so call the UI functions
 * themselves rather than their replayables (one C layer less). */
int cr_replay_run(lua_State *L, cr_state *S, cr_replay *rp, int nvalues, int direct) {
  int slots;
  luaL_checkstack(L, NSLOTS + LUA_MINSTACK, "cache_resource: replaying");
  lua_rawgeti(L, LUA_REGISTRYINDEX, rp->self_ref);
  slots = lua_gettop(L);
  rp->active++; /* before compiling: it allocates, and finalizers may release the entry */
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
