/* The Lua side of cache_resource.sqlite: the module table, the store
 * userdata and its methods. Arguments are checked here (a wrong type is a
 * programming error and raises); what fails at run time returns nil and a
 * message. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include "store.h"

/***
The default store of `cache_data`: entries in one SQLite database that
outlives the process and is shared by the processes of a machine.

    local sqlite = require "cache_resource.sqlite"
    local store = assert(sqlite.open())            -- sqlite.default_path()
    store:set(ns, key, bytes, 3600)                -- an hour
    assert(store:get(ns, key) == bytes)

A store object has the five methods every `cache_data` store has (`get`,
`set`, `delete`, `clear`, `generation`), `close`, and `tostring(store)`,
its path. Failures at run time (a busy, full or damaged file) return nil
and a message; only arguments of the wrong type raise. See docs/stores.md.
@module cache_resource.sqlite
*/

static crs_store *check_store(lua_State *L) {
  return (crs_store *)luaL_checkudata(L, 1, CRS_MT);
}

/* A string argument (not a number: ids and entries are strings). */
static const char *check_bytes(lua_State *L, int i, size_t *len) {
  if (lua_type(L, i) != LUA_TSTRING) luaL_typeerror(L, i, "string");
  return lua_tolstring(L, i, len);
}

static const char *opt_bytes(lua_State *L, int i, size_t *len) {
  *len = 0;
  return lua_isnoneornil(L, i) ? NULL : check_bytes(L, i, len);
}

static int fail(lua_State *L, const crs_store *st) {
  lua_pushnil(L);
  lua_pushstring(L, st->err);
  return 2;
}

static int done(lua_State *L, const crs_store *st, int rc) {
  if (rc != SQLITE_OK) return fail(L, st);
  lua_pushboolean(L, 1);
  return 1;
}

/* limits.max_entries / limits.max_size: a number >= 1; absent or
 * math.huge: unbounded (INT64_MAX). */
static int64_t opt_bound(lua_State *L, int limits, const char *name) {
  lua_Number v;
  int64_t n = INT64_MAX;
  lua_getfield(L, limits, name);
  if (!lua_isnil(L, -1)) {
    v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(v >= 1)) {
      lua_pushfstring(L, "limits.%s must be a number >= 1 (or nil)", name);
      luaL_argerror(L, limits, lua_tostring(L, -1));
    }
    if (v < 9.2e18) n = (int64_t)v;
  }
  lua_pop(L, 1);
  return n;
}

/***
Opens (creating it private when missing) the store at `path`.
Missing directories are created with mode 0700, a missing file with mode
0600. A file that is damaged or holds another format of the store is
emptied; an SQLite database of another application is refused.
@function open
@tparam[opt] string path the database file; default `default_path()`
@tparam[opt] table opts `timeout`: seconds to wait for another process's
write (default 5)
@return the store, and a note (a string) when the file had to be emptied;
or nil and a message
*/
static int l_open(lua_State *L) {
  char defpath[4096], err[CRS_MSG], note[CRS_MSG];
  const char *path;
  size_t len;
  int timeout_ms = CRS_TIMEOUT_MS;
  crs_store *st;
  if (lua_isnoneornil(L, 1)) {
    if (!crs_default_path(defpath, sizeof defpath, err, sizeof err)) {
      lua_pushnil(L);
      lua_pushstring(L, err);
      return 2;
    }
    path = defpath;
    len = strlen(defpath);
  } else {
    path = check_bytes(L, 1, &len);
    luaL_argcheck(L, len > 0, 1, "the path is empty");
    luaL_argcheck(L, strlen(path) == len, 1, "the path contains a NUL byte");
  }
  if (!lua_isnoneornil(L, 2)) {
    lua_Number t;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "timeout");
    t = lua_tonumber(L, -1);
    if (!lua_isnil(L, -1)) {
      luaL_argcheck(L, lua_type(L, -1) == LUA_TNUMBER && t >= 0 && t <= 86400, 2,
                    "opts.timeout must be seconds from 0 to 86400");
      timeout_ms = (int)(t * 1000 + 0.5);
    }
    lua_pop(L, 1);
  }
  if (!crs_prepare_path(path, err, sizeof err)) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  st = (crs_store *)lua_newuserdatauv(L, sizeof(crs_store) + len + 1, 0);
  memset(st, 0, sizeof(crs_store));
  memcpy(st->path, path, len + 1);
  st->timeout_ms = timeout_ms;
  luaL_setmetatable(L, CRS_MT);
  if (crs_open(st, note, sizeof note) != SQLITE_OK) return fail(L, st);
  if (!note[0]) return 1;
  lua_pushstring(L, note);
  return 2;
}

/***
The default store's path: `$CR_CACHE_DIR/cache_data.sqlite3`, else
`$XDG_CACHE_HOME/cache_resource/cache_data.sqlite3`, else
`$HOME/.cache/cache_resource/cache_data.sqlite3`.
@function default_path
@treturn string the path, or nil and a message when none of those
variables is set
*/
static int l_default_path(lua_State *L) {
  char path[4096], err[CRS_MSG];
  if (!crs_default_path(path, sizeof path, err, sizeof err)) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushstring(L, path);
  return 1;
}

/***
Methods of a store returned by `open`.
@type store
*/

/***
The entry's bytes, exactly as they were set, or nil (missing or expired).
@function store:get
@tparam string ns the function identity
@tparam string key the argument key
@return the bytes, nil, or nil and a message
*/
static int m_get(lua_State *L) {
  crs_store *st = check_store(L);
  size_t nslen, keylen;
  const char *ns = check_bytes(L, 2, &nslen);
  const char *key = check_bytes(L, 3, &keylen);
  sqlite3_stmt *row = NULL;
  int64_t bounded = 0;
  int rc = crs_lookup(st, ns, nslen, key, keylen, &row, &bounded);
  if (rc == SQLITE_DONE) {
    lua_pushnil(L);
    return 1;
  }
  if (rc != SQLITE_ROW) return fail(L, st);
  {
    /* blob before bytes (SQLite's order), then straight into the Lua
     * string: lua_pushlstring copies before it may collect */
    const char *p = (const char *)sqlite3_column_blob(row, 3);
    int n = sqlite3_column_bytes(row, 3);
    lua_pushlstring(L, p ? p : "", p ? (size_t)n : 0);
  }
  crs_lookup_done(st);
  if (bounded && st->db) crs_touch(st, bounded);
  return 1;
}

/***
Stores an entry, replacing the one there, in one transaction.
With `limits`, the ns's least recently used entries past them are
removed in the same transaction (an entry larger than `max_size` alone is
not kept).
@function store:set
@tparam string ns the function identity
@tparam string key the argument key
@tparam string bytes the entry (any bytes)
@tparam[opt] number ttl seconds until it expires; nil: never
@tparam[opt] table limits `max_entries`, `max_size` (bytes): the ns's bounds
@return true, or nil and a message
*/
static int m_set(lua_State *L) {
  crs_store *st = check_store(L);
  crs_put p;
  memset(&p, 0, sizeof p);
  p.ns = check_bytes(L, 2, &p.nslen);
  p.key = check_bytes(L, 3, &p.keylen);
  p.bytes = check_bytes(L, 4, &p.len);
  p.keep = 1;
  if (!lua_isnoneornil(L, 5)) {
    lua_Number ttl = luaL_checknumber(L, 5);
    luaL_argcheck(L, ttl == ttl, 5, "the ttl is NaN");
    if (ttl <= 0) p.keep = 0;
    else if (ttl < DBL_MAX) {
      p.expires_set = 1;
      p.expires = crs_wall_now() + ttl;
    }
  }
  p.max_entries = p.max_size = INT64_MAX;
  if (!lua_isnoneornil(L, 6)) {
    luaL_checktype(L, 6, LUA_TTABLE);
    p.max_entries = opt_bound(L, 6, "max_entries");
    p.max_size = opt_bound(L, 6, "max_size");
    p.bounded = p.max_entries != INT64_MAX || p.max_size != INT64_MAX;
  }
  return done(L, st, crs_set(st, &p));
}

/***
Removes one entry (nothing to remove is no error).
@function store:delete
@tparam string ns the function identity
@tparam string key the argument key
@return true, or nil and a message
*/
static int m_delete(lua_State *L) {
  crs_store *st = check_store(L);
  size_t nslen, keylen;
  const char *ns = check_bytes(L, 2, &nslen);
  const char *key = check_bytes(L, 3, &keylen);
  return done(L, st, crs_delete(st, ns, nslen, key, keylen));
}

/***
Removes every entry of `ns`, or of the whole store, and changes the
generation of what it cleared.
@function store:clear
@tparam[opt] string ns the function identity; nil: everything
@return true, or nil and a message
*/
static int m_clear(lua_State *L) {
  crs_store *st = check_store(L);
  size_t nslen;
  const char *ns = opt_bytes(L, 2, &nslen);
  return done(L, st, crs_clear(st, ns, nslen));
}

/***
An integer that changes whenever `ns`, or the whole store, is cleared (by
any process). Without a clear it stays the same.
@function store:generation
@tparam[opt] string ns the function identity; nil: the whole store's
@return the integer, or nil and a message
*/
static int m_generation(lua_State *L) {
  crs_store *st = check_store(L);
  size_t nslen;
  const char *ns = opt_bytes(L, 2, &nslen);
  lua_Integer gen = 0;
  if (crs_generation(st, ns, nslen, &gen) != SQLITE_OK) return fail(L, st);
  lua_pushinteger(L, gen);
  return 1;
}

/***
Closes the database (also done when the store is collected, or leaves a
`<close>` variable's scope). Calls after it return nil and a message.
@function store:close
@return true
*/
static int m_close(lua_State *L) {
  crs_close(check_store(L));
  lua_pushboolean(L, 1);
  return 1;
}

static int m_gc(lua_State *L) {
  crs_close(check_store(L));
  return 0;
}

static int m_tostring(lua_State *L) {
  lua_pushstring(L, check_store(L)->path);
  return 1;
}

static const luaL_Reg METHODS[] = {
  { "get", m_get },
  { "set", m_set },
  { "delete", m_delete },
  { "clear", m_clear },
  { "generation", m_generation },
  { "close", m_close },
  { NULL, NULL },
};

static const luaL_Reg META[] = {
  { "__gc", m_gc },
  { "__close", m_gc },
  { "__tostring", m_tostring },
  { NULL, NULL },
};

static const luaL_Reg FUNCTIONS[] = {
  { "open", l_open },
  { "default_path", l_default_path },
  { NULL, NULL },
};

CRS_EXPORT int luaopen_cache_resource_sqlite(lua_State *L) {
  luaL_newmetatable(L, CRS_MT);
  luaL_setfuncs(L, META, 0);
  luaL_newlib(L, METHODS);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, FUNCTIONS);
  return 1;
}
