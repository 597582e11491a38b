/* Schedulers: cache_resource.set_scheduler{ wait, wake, spawn }.
 *
 * A coroutine that finds its key being computed by another one parks once
 * on the owner's token (s.wait(token)) and is woken when the owner ends
 * (s.wake(token)), instead of polling a waiter. Tokens are integers handed
 * out on demand, one per computing call that someone waits on: making one
 * allocates nothing, so no finalizer can run between finding the owner and
 * parking on it, and nothing has to be released when the owner goes.
 * s.spawn(fn) runs background refreshes (cr_refresh.c). */
#include <string.h>
#include "cr.h"

/***
Schedulers: waiting without polling, background refreshes.
@module cache_resource
*/

static cr_state *state_of(lua_State *L) {
  return (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
}

/* Parks the running coroutine on the owner's token. Returns when wait
 * returns without yielding; after a yield, k continues. */
void cr_sched_wait(lua_State *L, cr_call *owner, lua_KContext ctx, lua_KFunction k) {
  cr_state *S = owner->S;
  if (owner->token == 0) owner->token = ++S->next_token;
  owner->waited = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->wait_ref);
  lua_pushinteger(L, owner->token);
  lua_callk(L, 1, 0, ctx, k);
}

/* Wakes whoever waits on call's token. Called once the call no longer
 * owns its key; runs Lua code, so the caller must not use `call` after
 * this unless it is anchored and still linked. An error in wake is
 * reported with warn(): the owner's own result stands. */
void cr_sched_wake(lua_State *L, cr_call *call) {
  cr_state *S = call->S;
  lua_Integer token = call->token;
  if (!call->waited) return;
  call->waited = 0;
  if (S->closed || S->wake_ref == LUA_NOREF) return;
  luaL_checkstack(L, 3, "cache_resource: waking waiters");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->wake_ref);
  lua_pushinteger(L, token);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, "cache_resource: the scheduler's wake raised an error: %s", msg ? msg : luaL_typename(L, -1));
    cr_report(L, lua_tostring(L, -1));
    lua_pop(L, 2);
  }
}

void cr_sched_free(lua_State *L, cr_state *S) {
  cr_ref_replace(L, &S->wait_ref, 0);
  cr_ref_replace(L, &S->wake_ref, 0);
  cr_ref_replace(L, &S->spawn_ref, 0);
  cr_ref_replace(L, &S->scheduler_ref, 0);
}

/***
Connects the module to a coroutine scheduler. A coroutine that asks for a
key another one is computing calls `s.wait(token)` once and is resumed by
`s.wake(token)` when the owner ends; background refreshes
(`refresh_mode = "background"`) run through `s.spawn(fn)`. Used instead of
the waiter set with `set_waiter`. `require "cache_resource.cqueues"` sets one
for lua-cqueues.
@function set_scheduler
@tparam[opt] table s a table with the functions `wait` and `wake` (they go
together) and/or `spawn`: a scheduler object as it is, whose other fields
are its own and ignored; `nil` removes the scheduler
@treturn ?table the scheduler it replaces
*/

/***
The scheduler set with `set_scheduler`, or nil.
@function scheduler
@treturn ?table the table given to `set_scheduler`
*/

/* set_scheduler(s): s has wait, wake, spawn (any other field is ignored)
 * or is nil. wait and wake go together; spawn alone is fine (background refreshes
 * then run through it while waiting keeps polling the waiter). The
 * functions are read now: later changes to the table change nothing.
 * Returns the scheduler it replaces. */
static int m_set_scheduler(lua_State *L) {
  static const char *const fields[] = { "wait", "wake", "spawn", NULL };
  cr_state *S = state_of(L);
  int i, present[3];
  lua_settop(L, 1);
  if (!lua_isnil(L, 1) && !lua_istable(L, 1))
    cr_error(L, "bad argument #1 to 'cache_resource.set_scheduler' (a table { wait = fn, wake = fn, "
                         "spawn = fn } or nil expected, got %s)", luaL_typename(L, 1));
  if (lua_istable(L, 1)) { /* a scheduler object as it is: its other fields are its own */
    for (i = 0; fields[i]; i++) {
      int t = lua_getfield(L, 1, fields[i]); /* through __index too: methods of a class */
      present[i] = t != LUA_TNIL;
      if (present[i] && t != LUA_TFUNCTION) { /* a callable object will do */
        if (luaL_getmetafield(L, -1, "__call") == LUA_TNIL)
          cr_error(L, "cache_resource.set_scheduler: field '%s' must be a function, got %s", fields[i],
                   luaL_typename(L, -1));
        lua_pop(L, 1);
      }
    }
    if (present[0] != present[1])
      cr_error(L, "cache_resource.set_scheduler: field '%s' is missing (wait and wake go together: "
                           "wake(token) resumes what wait(token) suspended)", present[0] ? "wake" : "wait");
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushnil(L);
  }
  /* the previous scheduler is returned; pushed before its ref goes */
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->scheduler_ref);
  cr_ref_replace(L, &S->wait_ref, 2); /* nil: none */
  cr_ref_replace(L, &S->wake_ref, 3);
  cr_ref_replace(L, &S->spawn_ref, 4);
  cr_ref_replace(L, &S->scheduler_ref, 1);
  return 1;
}

/* scheduler(): the table given to set_scheduler, or nil. */
static int m_scheduler(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, state_of(L)->scheduler_ref);
  return 1;
}

/* Adds set_scheduler and scheduler to the module table at the top of the
 * stack; the state userdata is just below it. */
void cr_sched_open(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"set_scheduler", m_set_scheduler}, {"scheduler", m_scheduler}, {NULL, NULL}
  };
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
}
