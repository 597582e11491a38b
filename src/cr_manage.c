/* Managing cached functions from the module: clear, stats, info and peek.
 * A cached function is a plain Lua function, so it has no methods; these
 * take it as their first argument and check that it is one. */
#include <math.h>
#include <string.h>
#include "cr.h"

/***
Managing cached functions.
@module cache_resource
*/

static cr_state *state_of(lua_State *L) {
  return (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
}

/* The cr_func of argument idx, or an error naming the function. */
static cr_func *check_cached(lua_State *L, int idx, const char *fname) {
  cr_func *f = cr_func_of(L, idx);
  if (f == NULL)
    cr_error(L, "bad argument #%d to 'cache_resource.%s' (a cached function expected, got %s: "
                  "pass the function cache_resource(fn) returned)",
               idx, fname, lua_isfunction(L, idx) ? "a function that is not a cached function" : luaL_typename(L, idx));
  if (f->S->closed) cr_error(L, "cache_resource.%s: the module was closed (lua_close)", fname);
  return f;
}

/* Copies the key out of the serializer's buffers onto the stack: releasing
 * entries runs on_release, which may serialize other keys. */
static unsigned char *keep_key(lua_State *L, cr_key *key) {
  unsigned char *bytes = (unsigned char *)lua_newuserdatauv(L, key->len ? key->len : 1, 0);
  memcpy(bytes, key->bytes, key->len);
  cr_key_done(key);
  key->bytes = bytes;
  return bytes;
}

/* clear(): everything; clear(f): f's entries (the current session's for
 * scope "session", every session's when none is set); clear(f, ...): the
 * one entry a call with those arguments would hit. */
/***
Releases entries (their `on_release` runs). `clear()`: every entry of every
`cache_resource` function and session (`cache_data.clear()` is its twin for
`cache_data` functions); `clear(f)`: every entry of `f` (the current
session's, for `scope = "session"`); `clear(f, ...)`: the one entry a call
`f(...)` would hit. A computation in progress still returns its values to
its caller; they are not stored. A `cache_data` function with `persist`
loses the entries in its store too, and the other processes sharing the
store drop their copies within a second.
@function clear
@tparam[opt] function f a cached function
@param ... arguments, keyed exactly like a call's
*/
static int m_clear(lua_State *L) {
  cr_state *S = state_of(L);
  int n = lua_gettop(L);
  cr_func *f;
  cr_cache *c;
  cr_key key;
  cr_store *one;
  /* only the entries present now go: on_release may store new ones */
  uint64_t gen0 = S->next_gen;
  if (n == 0) {
    cr_check_open(L, S);
    for (c = S->caches; c; c = c->next)
      if (!c->data) cr_cache_clear(L, c, 1, gen0);
    return 0;
  }
  f = check_cached(L, 1, "clear");
  c = f->cache;
  if (n == 1) {
    cr_cache_clear(L, c, S->current == NULL, gen0);
    if (c->persist_ref != LUA_NOREF) return cr_persist_clear(L, c, f, 1, 2, -1); /* and its store */
    return 0;
  }
  lua_getupvalue(L, 1, 1);
  cr_call_key(L, f, lua_gettop(L), 2, n - 1, &key);
  keep_key(L, &key);
  one = (c->session_scope && S->current == NULL) ? NULL : cr_store_for(L, c, 0);
  if (one || !c->session_scope) cr_store_clear_key(L, one ? one : c->global, &key, gen0);
  else cr_cache_clear_key(L, c, &key, gen0);
  if (c->persist_ref != LUA_NOREF) return cr_persist_clear(L, c, f, n + 1, 2, n - 1); /* and its store */
  return 0;
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* One stats() row. */
static void push_stats(lua_State *L, cr_cache *c) {
  size_t entries = c->global ? c->global->count : 0;
  cr_store *st;
  for (st = c->session_stores; st; st = st->next_of_cache) entries += st->count;
  lua_createtable(L, 0, c->data ? 24 : 17);
  set_str(L, "kind", c->data ? "data" : "resource");
  set_str(L, "name", c->name);
  set_str(L, "where", c->where);
  set_str(L, "scope", c->session_scope ? "session" : "global");
  set_num(L, "ttl", c->ttl);
  if (c->max_entries > 0) set_int(L, "max_entries", c->max_entries);
  else set_num(L, "max_entries", HUGE_VAL);
  set_str(L, "refresh_mode", c->refresh_background ? "background" : "foreground");
  set_int(L, "entries", (lua_Integer)entries);
  set_int(L, "hits", c->hits);
  set_int(L, "stale_hits", c->stale_hits);
  set_int(L, "misses", c->misses);
  set_int(L, "failures", c->failures);
  set_int(L, "refreshes", c->refreshes);
  set_int(L, "refresh_failures", c->refresh_failures);
  set_int(L, "evictions", c->evictions);
  set_int(L, "expirations", c->expirations);
  set_int(L, "replay_bytes", (lua_Integer)c->replay_bytes);
  if (c->data) {
    cr_persist_push_description(L, c);
    lua_setfield(L, -2, "persist");
    if (c->max_size > 0) set_int(L, "max_size", c->max_size);
    else set_num(L, "max_size", HUGE_VAL);
    set_int(L, "bytes", (lua_Integer)c->bytes);
    set_int(L, "store_hits", c->store_hits);
    set_int(L, "store_writes", c->store_writes);
    set_int(L, "store_errors", c->store_errors);
    set_int(L, "persist_skipped", c->persist_skipped);
  }
}

/* stats(): one row per cached function, oldest first; stats(f): f's row. */
/***
Statistics: `stats()` returns one row per cached function, oldest first;
`stats(f)` the row of `f`. A row has `kind` (`"resource"` or `"data"`),
`name`, `where`, `scope`, `ttl` (seconds, `math.huge` without one),
`max_entries`, `refresh_mode`, `entries`, `hits`, `stale_hits`, `misses`,
`failures`, `refreshes`, `refresh_failures`, `evictions`, `expirations` and
`replay_bytes`; a `cache_data` row also `persist` (where its entries are
kept besides memory: the store's description, `tostring(store)`, or
`false`), `max_size` (bytes, `math.huge` when unbounded), `bytes` (the
encoded bytes of its entries), `store_hits`, `store_writes`, `store_errors`
and `persist_skipped`.
@function stats
@tparam[opt] function f a cached function
@treturn table a row, or an array of rows
*/
static int m_stats(lua_State *L) {
  cr_state *S = state_of(L);
  cr_cache *c;
  lua_Integer i = 0;
  if (!lua_isnone(L, 1)) {
    push_stats(L, check_cached(L, 1, "stats")->cache);
    return 1;
  }
  lua_newtable(L);
  for (c = S->caches; c; c = c->next) {
    push_stats(L, c);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* info(f): stats(f) plus `options`, a copy of what f was wrapped with. */
/***
What `stats(f)` returns, plus `options`: the options `f` was wrapped with
(durations in seconds).
@function info
@tparam function f a cached function
@treturn table
*/
static int m_info(lua_State *L) {
  cr_cache *c = check_cached(L, 1, "info")->cache;
  push_stats(L, c);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->options_ref);
  cr_table_copy(L, lua_istable(L, -1) ? -1 : 0); /* a copy: callers may change it */
  lua_remove(L, -2);
  lua_setfield(L, -2, "options");
  return 1;
}

/* peek(f, ...): the entry a call would hit, without computing, validating,
 * replaying, waiting, refreshing or touching recency and statistics.
 * Returns nothing, or the remaining lifetime in seconds (negative while
 * stale) followed by the values. */
/***
Looks up the entry a call `f(...)` would hit without computing, validating,
replaying, waiting or refreshing, and without changing recency or statistics. Returns
nothing at all when there is no entry.
@function peek
@tparam function f a cached function
@param ... arguments, keyed exactly like a call's
@treturn number the entry's remaining lifetime in seconds (`math.huge`
without `ttl`, negative while stale)
@return ... the stored values
*/
static int m_peek(lua_State *L) {
  cr_func *f = check_cached(L, 1, "peek");
  cr_state *S = f->S;
  cr_cache *c = f->cache;
  int n = lua_gettop(L);
  double now = -HUGE_VAL;
  cr_key key;
  cr_store *st;
  cr_entry *e;
  if (S->heap_len) now = cr_now(L, S); /* Lua code, maybe: before any lookup */
  if (c->session_scope && S->current == NULL) cr_store_for(L, c, 0); /* raises: no session */
  lua_getupvalue(L, 1, 1);
  cr_call_key(L, f, lua_gettop(L), 2, n - 1, &key);
  cr_key_done(&key); /* nothing below serializes: the bytes stay put */
  st = c->session_scope ? cr_store_for(L, c, 0) : c->global;
  e = st ? cr_store_find(st, key.hash, key.bytes, key.len, key.is_digest) : NULL;
  if (e == NULL || e->expires_at <= now) return 0;
  luaL_checkstack(L, e->nvalues + 2, "cache_resource.peek: too many values");
  lua_pushnumber(L, (lua_Number)(e->stale_at == HUGE_VAL ? HUGE_VAL : e->stale_at - now));
  return cr_entry_push(L, e) + 1; /* cache_data: a fresh copy */
}

/* Adds clear, stats, info and peek to the module table at the top of the
 * stack; the state userdata is just below it. */
void cr_manage_open(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"clear", m_clear}, {"stats", m_stats}, {"info", m_info}, {"peek", m_peek}, {NULL, NULL}
  };
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, fns, 1);
}
