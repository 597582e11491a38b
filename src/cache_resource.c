/* Module entry: luaopen_cache_resource, the module state, and the
 * module-level setters and helpers. Every function gets the state
 * userdata as upvalue 1 (the lua-cjson pattern). */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "cr.h"

/***
Streamlit's `st.cache_resource` for Lua: functions whose results are shared
by every caller with equal arguments.

    local cache_resource = require "cache_resource"
    local get_db = cache_resource(function(path) return open_db(path) end, { ttl = "1h" })
    assert(get_db("app.db") == get_db("app.db"))   -- the same object, computed once

The module table is callable (see `cache_resource`). A cached function is a
plain Lua function; it is managed through `clear`, `stats`, `info` and
`peek`. UI calls made through a `replayable` while a cached function
computes are replayed on every hit.
@module cache_resource
*/

/* The state; raises once it was closed (a finalizer running at lua_close
 * may still call the module). */
static cr_state *state_of(lua_State *L) {
  cr_state *S = (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
  cr_check_open(L, S);
  return S;
}

/* Frees what the state owns, at lua_close (its __gc). Memory only: no
 * callback runs (Streamlit does not release resources at shutdown either;
 * they have their own __gc). The stores go first: their entries point at
 * their caches. */
static void state_free(lua_State *L, cr_state *S) {
  cr_cache *c, *next;
  cr_store_free_all(L, S);
  cr_refpool_drain(L, &S->refpool);
  for (c = S->caches; c; c = next) {
    next = c->next;
    cr_cache_free(L, c);
  }
  S->caches = S->caches_tail = NULL;
  S->calls = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, S->clock_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->waiter_ref);
  cr_sched_free(L, S);
  luaL_unref(L, LUA_REGISTRYINDEX, S->spinner_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->widget_source_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->replayables_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->replay_fns_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->identities_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->fnids_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->call_pool_ref);
  S->call_pool_n = 0;
  luaL_unref(L, LUA_REGISTRYINDEX, S->named_mts_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->mt_names_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->replayable_names_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->persist_mod_ref);
  cr_keybufs_free(&S->keybufs);
  cr_codec_bufs_free(&S->codec);
  cr_buffer_free(&S->dumpbuf);
  S->closed = 1;
}

static int state_gc(lua_State *L) {
  cr_state *S = (cr_state *)luaL_checkudata(L, 1, CR_STATE_MT);
  if (!S->closed) state_free(L, S);
  return 0;
}

/***
Wraps a function: `cache_resource(fn [, opts])` or `cache_resource(opts)(fn)`.
The first call with some arguments runs `fn`; later calls with equal
arguments (compared by value: tables by content, whatever their insertion
order) return the same values without running it. A call for a key that
another coroutine is computing waits for it (see `set_waiter`).
@function cache_resource
@tparam function|table fn the function to cache: a Lua or C function, or a
table with a `__call` metamethod
@tparam[opt] table opts `ttl` (seconds or a duration such as `"1h"`),
`max_entries`, `validate`, `on_release`, `hash_funcs`, `show_spinner`,
`show_time`, `experimental_allow_widgets`, `scope` (`"global"` or
`"session"`), `name`, `refresh_mode`, `max_stale`, `failure_ttl`; an unknown
option or a wrong type is an error naming it
@treturn function the cached function, or (given only `opts`) a function
that wraps its argument with those options
@usage local get_model = cache_resource(load_model, { max_entries = 4 })
local get_conf = cache_resource { ttl = 60 } (read_conf)
*/
/***
Releases every entry whose lifetime is over. Expired entries are also
released as cached functions are called; this does it now.
@function expire
@treturn integer how many entries were released
*/
static int m_expire(lua_State *L) {
  cr_state *S = state_of(L);
  double now;
  if (S->heap_len == 0) {
    lua_pushinteger(L, 0);
    return 1;
  }
  now = cr_now(L, S); /* Lua code, maybe: the sweep reads the heap after it */
  lua_pushinteger(L, (lua_Integer)cr_sweep(L, S, now));
  return 1;
}

/***
The digest of an argument list, in the canonical form keys use (unseeded):
equal argument lists give equal digests in every process. For debugging and
tests.
@function hash
@param ... the arguments
@treturn string 32 hexadecimal digits
*/
static int m_hash(lua_State *L) {
  unsigned char d[16];
  char hex[33];
  int i;
  cr_key_hash_args(L, state_of(L), 1, lua_gettop(L), d);
  for (i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  lua_pushlstring(L, hex, 32);
  return 1;
}

/***
Replaces the monotonic clock that lifetimes are measured with (for tests).
@function set_clock
@tparam[opt] function clock returns the time in seconds; `nil` restores the
monotonic clock
*/
static int m_set_clock(lua_State *L) {
  return cr_set_hook(L, &state_of(L)->clock_ref);
}

/***
Sets how a coroutine waits while another one computes the key it asked for:
`waiter()` is called repeatedly until the computation ends (it should yield
to the scheduler). A scheduler set with `set_scheduler` is used instead.
@function set_waiter
@tparam[opt] function waiter `nil` removes it: a call that would wait is then
an error
*/
static int m_set_waiter(lua_State *L) {
  return cr_set_hook(L, &state_of(L)->waiter_ref);
}

static const char *session_id(lua_State *L, int idx, size_t *len) {
  luaL_argexpected(L, lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER, idx, "string");
  return lua_tolstring(L, idx, len);
}

/***
Sets the current session, whose cache session-scoped functions
(`scope = "session"`) use. `cache_resource.ui` sets it for every run.
@function set_session
@tparam[opt] string id the session; `nil`: no current session
*/
static int m_set_session(lua_State *L) {
  cr_state *S = state_of(L);
  size_t len;
  if (lua_isnoneornil(L, 1)) {
    S->current = NULL;
    return 0;
  }
  {
    const char *id = session_id(L, 1, &len); /* sets len: not in the same call's arguments */
    S->current = cr_session_open(L, S, id, len);
  }
  return 0;
}

/***
Ends a session: releases its session-scoped entries (their `on_release`
runs).
@function end_session
@tparam string id the session
*/
static int m_end_session(lua_State *L) {
  cr_state *S = state_of(L);
  size_t len;
  const char *id = session_id(L, 1, &len);
  cr_session *ss = cr_session_find(S, id, len);
  if (ss) cr_session_end(L, S, ss);
  return 0;
}

/***
The current session.
@function session
@treturn string|nil its id, or `nil` when there is none
*/
static int m_session(lua_State *L) {
  cr_state *S = state_of(L);
  if (S->current) lua_pushlstring(L, S->current->id, S->current->idlen);
  else lua_pushnil(L);
  return 1;
}

/***
Sets when recorded UI calls are compiled: from its n-th replay on, an
entry's recorded calls are replayed by a Lua function made for them instead
of being decoded one by one. The same holds for the copies `cache_data`
hits return: after its n-th hit, an entry's copies are made by a Lua
function made for them.
@function set_replay_compile
@tparam integer|boolean n replays (and cache_data hits) before compiling
(default 8); `0` or `false`: never compile
*/
static int m_set_replay_compile(lua_State *L) {
  cr_state *S = state_of(L);
  lua_Integer n = 0;
  if (!lua_isboolean(L, 1) || lua_toboolean(L, 1)) {
    n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 1000000000, 1, "a replay count from 0 to 10^9 (0: never compile)");
  }
  S->compile_after = (unsigned)n;
  return 0;
}

/***
How many Lua values the module holds by registry reference (cached values,
recorded arguments, callbacks): for leak checks in tests.
@function live_refs
@treturn integer
*/
static int m_live_refs(lua_State *L) {
  lua_pushinteger(L, state_of(L)->live_refs);
  return 1;
}

static uint64_t random_seed(const void *salt) {
  uint64_t seed = 0;
  FILE *fp = fopen("/dev/urandom", "rb");
  if (fp) {
    if (fread(&seed, sizeof seed, 1, fp) != 1) seed = 0;
    fclose(fp);
  }
  if (seed == 0) {
    uintptr_t p = (uintptr_t)salt;
    seed = (uint64_t)time(NULL) * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)p ^ (uint64_t)clock();
  }
  return seed;
}

CR_EXPORT int luaopen_cache_resource(lua_State *L) {
  static const luaL_Reg module_fns[] = {
    {"expire", m_expire}, {"hash", m_hash},
    {"set_clock", m_set_clock}, {"set_waiter", m_set_waiter}, {"set_session", m_set_session},
    {"end_session", m_end_session}, {"session", m_session}, {"live_refs", m_live_refs},
    {"set_replay_compile", m_set_replay_compile},
    {NULL, NULL}
  };
  cr_state *S;
  luaL_checkversion(L);
  if (luaL_newmetatable(L, CR_FUNC_MT)) { /* the cr_func upvalue of cached functions */
    lua_pushliteral(L, CR_FUNC_MT);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CR_CALL_MT)) {
    lua_pushcfunction(L, cr_call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, cr_call_close); /* an owner's slot is to-be-closed */
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CR_REPLAY_MT)) {
    lua_pushcfunction(L, cr_replay_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, CR_REPLAY_MT);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CR_BOX_MT)) {
    lua_pushcfunction(L, cr_keybufs_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CR_CODEC_MT)) {
    lua_pushcfunction(L, cr_codec_bufs_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CR_STATE_MT)) {
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);

  S = (cr_state *)lua_newuserdatauv(L, sizeof *S, 0);
  memset(S, 0, sizeof *S);
  S->clock_ref = S->waiter_ref = S->spinner_ref = S->widget_source_ref = LUA_NOREF;
  S->wait_ref = S->wake_ref = S->spawn_ref = S->scheduler_ref = LUA_NOREF;
  S->seed = random_seed(S);
  S->compile_after = CR_COMPILE_AFTER;
  luaL_setmetatable(L, CR_STATE_MT);
  lua_newtable(L);
  S->identities_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, CR_CALL_POOL, 0); /* sized once: putting a record back never grows it */
  S->call_pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  S->fnids_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  S->replayables_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  S->replay_fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* anchored until lua_close: caches and cached functions point into it */
  lua_pushvalue(L, -1);
  luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L);                /* the module */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, module_fns, 1);
  cr_ui_open(L);
  cr_manage_open(L);
  cr_sched_open(L);
  cr_key_open(L);
  cr_data_open(L);
  lua_pushliteral(L, "0.2.0");
  lua_setfield(L, -2, "_VERSION");
  cr_decorator_callable(L, -2, 0); /* the module is callable: cache_resource(fn [, opts]) */
  lua_remove(L, -2);
  return 1;
}
