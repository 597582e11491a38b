/* UI integration: what a UI library calls so that cached functions record
 * and replay what it shows. `replayable` wraps a UI function into one that
 * records its calls into every computation of the calling coroutine;
 * `widget_used` lets widget values into the keys of the computations that
 * allow widgets; `computing` and `replaying` name the cached function at
 * work, for messages; the spinner and widget-source hooks. The record
 * format and the replay loop are cr_replay.c's. */
#include "cr.h"

/***
UI integration.
@module cache_resource
*/

static cr_state *state_up(lua_State *L) {
  return (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
}

/* cache_resource.replaying(): the display name of the innermost cached
 * function whose recorded UI calls this coroutine is replaying, or nil.
 * A replay is found by its anchor among the temporaries of a cached
 * function's frame; only error messages ask, so walking the stack is fine. */
/***
The cached function whose recorded UI calls are being replayed.
@function replaying
@treturn string|nil the display name of the innermost cached function whose
recorded UI calls this coroutine is replaying, or `nil`
@within UI integration
*/
static int m_replaying(lua_State *L) {
  lua_Debug ar;
  int level;
  for (level = 1; lua_getstack(L, level, &ar); level++) {
    int i, ours;
    lua_getinfo(L, "f", &ar);
    ours = cr_func_of(L, -1) != NULL;
    lua_pop(L, 1);
    for (i = 1; ours && lua_getlocal(L, &ar, i) != NULL; i++) {
      cr_replay *rp = (cr_replay *)luaL_testudata(L, -1, CR_REPLAY_MT);
      lua_pop(L, 1);
      if (rp && rp->cache) {
        lua_pushstring(L, rp->cache->name);
        return 1;
      }
    }
  }
  lua_pushnil(L);
  return 1;
}

/* ---- replayables ------------------------------------------------------- */

/* After the live call: record into every computation of this coroutine,
 * innermost first. Upvalues: 1 state, 2 fn, 3 id. */
static int replayable_done(lua_State *L, int status, lua_KContext ctx) {
  cr_state *S = state_up(L);
  int nargs = (int)ctx, nres = lua_gettop(L) - nargs;
  lua_Integer id = lua_tointeger(L, lua_upvalueindex(3));
  cr_call *c;
  (void)status;
  for (c = cr_call_computing(S, L, NULL); c; c = cr_call_computing(S, L, c))
    cr_replay_record(L, c, id, 1, nargs, nres > 0 ? nargs + 1 : 0);
  return nres;
}

static int replayable_call(lua_State *L) {
  int nargs = lua_gettop(L), i;
  cr_state *S = state_up(L);
  /* a background refresh records what it shows, but no page is being built for it */
  if (S->refreshing && cr_refresh_running(S, L)) return replayable_done(L, LUA_OK, nargs);
  luaL_checkstack(L, nargs + 2, "cache_resource: too many arguments");
  lua_pushvalue(L, lua_upvalueindex(2));
  for (i = 1; i <= nargs; i++) lua_pushvalue(L, i);
  lua_callk(L, nargs, LUA_MULTRET, nargs, replayable_done);
  return replayable_done(L, LUA_OK, nargs);
}

/* A name for the replayable at r (the name at idx): its records can then
 * leave the process (a persisted entry keeps the name, cr_persist.c). A
 * replayable keeps its first name; a name goes to the replayable it was
 * given last (a script re-run makes new functions under the old names). */
static void name_replayable(lua_State *L, cr_state *S, int idx, int r) {
  lua_Integer id;
  lua_getupvalue(L, r, 3);
  id = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->replayable_names_ref);
  if (lua_rawgeti(L, -1, id) == LUA_TNIL) {
    lua_pushvalue(L, idx);
    lua_rawseti(L, -3, id);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushvalue(L, r);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* cache_resource.replayable(fn [, name]): the same fn gives the same UI
 * call, so script re-runs do not grow the table of replayables. */
/***
Makes a UI call that cached functions record and replay. Calling it always
calls `fn` live; while the calling coroutine computes cached functions, the
call and its arguments are also recorded into each of them, and every later
hit of those entries calls `fn` again with the same arguments, in order,
before returning the cached values.
@function replayable
@tparam function fn what shows something (writes text, adds an element)
@tparam[opt] string name a name for it: in error messages, and in the
entries of a `cache_data` function with `persist`, whose recorded calls are
kept in the store only when every replayable has a name (after a restart,
the replay calls the replayable given that name last)
@treturn function the UI call; the same `fn` always gives the same one
@usage local text = cache_resource.replayable(function(s) io.write(s, "\n") end, "text")
local foo = cache_resource(function(x) text(x); return x end)
foo(1); text("---"); foo(1)     --> 1, ---, 1
@within UI integration
*/
static int m_replayable(lua_State *L) {
  cr_state *S = state_up(L);
  cr_check_open(L, S); /* its tables are gone after lua_close freed the state */
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TSTRING);
  lua_settop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->replayables_ref);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushinteger(L, ++S->next_replayable);
    lua_pushcclosure(L, replayable_call, 3);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, S->next_replayable);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->replay_fns_ref);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, S->next_replayable); /* the plain fn, for replays nobody records */
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  if (lua_isstring(L, 2)) name_replayable(L, S, 2, lua_gettop(L));
  return 1;
}

/* cache_resource.widget_used(id, value): a widget function reports the
 * value it returned. Computations that allow widgets remember it (their key
 * grows by it); returns true when some enclosing computation does not
 * allow widgets, so the UI shows CachedWidgetWarning. */
/***
Reports the value a widget returned, from a widget function. A cached
function wrapped with `experimental_allow_widgets` remembers it: its entry
is keyed by its arguments and the values of the widgets it read.
@function widget_used
@param id the widget's id
@param value the value it returned
@treturn boolean `true` when a cached function computing in this coroutine
does not allow widgets (the UI then shows a `CachedWidgetWarning`)
@within UI integration
*/
static int m_widget_used(lua_State *L) {
  cr_state *S = state_up(L);
  cr_call *c;
  int warn = 0;
  luaL_checkany(L, 1);
  lua_settop(L, 2);
  for (c = cr_call_computing(S, L, NULL); c; c = cr_call_computing(S, L, c)) {
    if (!c->cache->allow_widgets) {
      warn = 1;
      continue;
    }
    /* allocations first (finalizers may run and use this frame), then the
     * bookkeeping, which allocates nothing */
    if (c->widgets_ref == LUA_NOREF) {
      lua_createtable(L, 0, 2);
      lua_newtable(L);
      lua_setfield(L, -2, "ids");
      lua_newtable(L);
      lua_setfield(L, -2, "values");
      if (c->widgets_ref == LUA_NOREF) c->widgets_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      else lua_pop(L, 1);
    }
    lua_createtable(L, 1, 0); /* boxed: a nil or false value is a value too */
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->widgets_ref);
    lua_getfield(L, -1, "values");
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TNIL) { /* first read of this id: keep its order */
      lua_getfield(L, -3, "ids");
      lua_pushvalue(L, 1);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -4);
    lua_rawset(L, -3);
    lua_pop(L, 3);
  }
  lua_pushboolean(L, warn);
  return 1;
}

/* cache_resource.computing(): the display name of the innermost cached
 * function this coroutine is computing, or nil. */
/***
The cached function this coroutine is computing.
@function computing
@treturn string|nil the display name of the innermost one, or `nil`
@within UI integration
*/
static int m_computing(lua_State *L) {
  cr_state *S = state_up(L);
  cr_call *c = cr_call_computing(S, L, NULL);
  if (c) lua_pushstring(L, c->cache->name);
  else lua_pushnil(L);
  return 1;
}

/***
Sets the UI's spinner. While the outermost cached function of a coroutine
computes a miss (with `show_spinner` on), `hook("start", text, show_time)` is
called before and `hook("stop")` after; the spinner is never recorded.
@function set_spinner
@tparam[opt] function hook `nil` removes it
@within UI integration
*/
static int m_set_spinner(lua_State *L) {
  return cr_set_hook(L, &state_up(L)->spinner_ref);
}

/***
Sets where the current value of a widget comes from, for cached functions
keyed by widget values: `source(id)` returns it.
@function set_widget_source
@tparam[opt] function source `nil` removes it
@within UI integration
*/
static int m_set_widget_source(lua_State *L) {
  return cr_set_hook(L, &state_up(L)->widget_source_ref);
}

/* Adds the UI integration functions to the module table at the top of the
 * stack; the state userdata is just below it. */
void cr_ui_open(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"replayable", m_replayable}, {"widget_used", m_widget_used}, {"computing", m_computing}, {"replaying", m_replaying},
    {"set_spinner", m_set_spinner}, {"set_widget_source", m_set_widget_source}, {NULL, NULL}
  };
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
}
