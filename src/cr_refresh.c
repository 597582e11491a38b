/* Stale entries: background refresh (stale-while-revalidate) and the
 * stale fallback when recomputing an expired entry fails (stale-if-error).
 *
 * A background refresh is a call record of its own (kind CR_REFRESH_BG)
 * linked and marked computing *before* s.spawn is called, so every other
 * refresh or miss of the key finds it as the key's owner from then on: a
 * stale hit serves the stale values, a miss waits for it. Until the spawned
 * function starts, the record has no owner coroutine; if the scheduler
 * drops the function unrun, the record is collected and its waiters are
 * woken by __gc. Once started, it runs the cached function through the call
 * path's compute step, in the scheduler's coroutine. While it runs, UI calls
 * of that coroutine are recorded into the new entry but not made: no page
 * is being built for them. */
#include <string.h>
#include "cr.h"

/* The record's upvalues: 1 the refresh's call record, 2 the cr_func,
 * 3 the arguments { n = count, ... }. */
static int refresh_main(lua_State *L) {
  cr_call *m = (cr_call *)lua_touserdata(L, lua_upvalueindex(1));
  int nargs, i;
  if (!m->linked || m->owner != NULL || m->S->closed) return 0; /* abandoned, or run already */
  if (m->store == NULL) { /* cleared (or its session ended) before it started */
    cr_call_finish(L, m);
    return 0;
  }
  lua_settop(L, 0);
  lua_getfield(L, lua_upvalueindex(3), "n");
  nargs = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, nargs + LUA_MINSTACK, "cache_resource: too many arguments to refresh");
  lua_pushvalue(L, lua_upvalueindex(2));
  for (i = 1; i <= nargs; i++) lua_rawgeti(L, lua_upvalueindex(3), i);
  lua_pushvalue(L, lua_upvalueindex(1));
  return cr_call_compute(L, nargs + 2, m);
}

/* Starts a background refresh of call's key (stale in call->store) through
 * the scheduler's spawn. Stack: [1] cr_func, [2..base-1] args, [base] call.
 * Returns 0 when there is nothing to wait for: the caller then refreshes in
 * the foreground (spawn raised an error, which is reported). */
int cr_refresh_spawn(lua_State *L, int base, cr_call *call) {
  cr_state *S = call->S;
  cr_cache *c = call->cache;
  int nargs = base - 2, i, rec;
  cr_call *m;
  luaL_checkstack(L, 8, "cache_resource: starting a refresh");
  m = cr_call_new(L, c, call->hash, call->key, call->keylen, call->is_digest); /* the key lives in `call` */
  m->kind = CR_REFRESH_BG;
  rec = lua_gettop(L);
  if (lua_getiuservalue(L, base, 3) == LUA_TSTRING) { /* widgets: its argument key */
    lua_setiuservalue(L, rec, 3);
    m->argkey_set = 1;
  } else {
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->spawn_ref);
  lua_pushvalue(L, rec);
  lua_pushvalue(L, 1);
  lua_createtable(L, nargs, 1);
  for (i = 1; i <= nargs; i++) {
    lua_pushvalue(L, i + 1);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  lua_pushcclosure(L, refresh_main, 3);
  /* the allocations above may have run finalizers: look at the store now */
  if (call->store == NULL) {
    lua_settop(L, base);
    return 0;
  }
  m->store = call->store;
  m->computing = 1;
  cr_call_link(S, m);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, "%s: the scheduler's spawn raised an error (%s); refreshing %s in the "
                       "foreground", cr_kind(c), msg ? msg : luaL_typename(L, -1), c->name);
    cr_report(L, lua_tostring(L, -1));
    cr_call_finish(L, m); /* anchored at rec */
    lua_settop(L, base);
    return 0;
  }
  c->refreshes++;
  lua_settop(L, base);
  return 1;
}

/* Is L running a background refresh? Its UI calls are then recorded only. */
int cr_refresh_running(cr_state *S, lua_State *L) {
  cr_call *c;
  for (c = cr_call_computing(S, L, NULL); c; c = cr_call_computing(S, L, c))
    if (c->kind == CR_REFRESH_BG) return 1;
  return 0;
}

static double retry_delay(const cr_cache *c) {
  return c->ttl < 60 ? c->ttl : 60;
}

/* A background refresh failed: the stale entry stays, served as before,
 * and no new refresh of the key starts for min(ttl, 60 s). */
void cr_refresh_failed(lua_State *L, cr_call *call, int err) {
  cr_cache *c = call->cache;
  cr_entry *e = NULL;
  double now, delay = retry_delay(c);
  int top = lua_gettop(L);
  const char *msg;
  c->refresh_failures++;
  luaL_checkstack(L, 4, "cache_resource: reporting a failed refresh");
  msg = cr_error_text(L, err);
  now = cr_now(L, c->S);
  if (call->store) e = cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest);
  if (e) e->retry_at = now + delay;
  if (e) lua_pushfstring(L, "%s: the background refresh of %s failed: %s; its stale values are served "
                            "until it expires, and the next refresh starts in %f s", cr_kind(c), c->name, msg, delay);
  else lua_pushfstring(L, "%s: the background refresh of %s failed: %s", cr_kind(c), c->name, msg);
  cr_report(L, lua_tostring(L, -1));
  lua_settop(L, top);
}

/* Recomputing a stale entry failed and its values will be served instead:
 * counts it, delays the next refresh (background mode), warns. */
void cr_refresh_fallback(lua_State *L, cr_call *call, int err, double now) {
  cr_cache *c = call->cache;
  cr_entry *e;
  int top = lua_gettop(L);
  const char *msg;
  luaL_checkstack(L, 4, "cache_resource: reporting a failed refresh");
  msg = cr_error_text(L, err);
  if (call->kind == CR_REFRESH_FG) c->refresh_failures++;
  else c->failures++;
  e = call->store ? cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest) : NULL;
  if (e && call->kind == CR_REFRESH_FG) e->retry_at = now + retry_delay(c);
  lua_pushfstring(L, "%s: recomputing an expired entry of %s failed: %s; serving its stale values "
                     "(released in %f s)", cr_kind(c), c->name, msg, e ? e->expires_at - now : 0.0);
  cr_report(L, lua_tostring(L, -1));
  lua_settop(L, top);
}
