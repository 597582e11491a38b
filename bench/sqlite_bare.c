/* make bench only: the baseline of the SQLite store's rows. The point
 * read and write a developer would write by hand through SQLite's C API,
 * with the store's connection settings (WAL, synchronous=NORMAL, mmap off)
 * and prepared statements, one table (k TEXT PRIMARY KEY, v BLOB, used):
 *
 *   local bare = require("bench_sqlite_bare").open(path)
 *   bare:set(k, v)     INSERT OR REPLACE, one implicit transaction
 *   bare:get(k)        SELECT v WHERE k, copied into a Lua string
 *   bare:get_used(k)   get, then UPDATE of a last-used column (its own
 *                      transaction): what keeping LRU order at every read
 *                      costs
 *
 * Errors raise: a bench has no use for a failing baseline. */
#include <string.h>
#include <time.h>
#include <sqlite3.h>
#include "lua.h"
#include "lauxlib.h"

#define BARE_MT "bench_sqlite_bare"

typedef struct {
  sqlite3 *db;
  sqlite3_stmt *get, *set, *used;
} bare;

static bare *check(lua_State *L) {
  return (bare *)luaL_checkudata(L, 1, BARE_MT);
}

static int fail(lua_State *L, bare *b) {
  return luaL_error(L, "bench_sqlite_bare: %s", sqlite3_errmsg(b->db));
}

static int b_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  bare *b = (bare *)lua_newuserdata(L, sizeof(bare));
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, BARE_MT);
  if (sqlite3_open(path, &b->db) != SQLITE_OK ||
      sqlite3_exec(b->db, "PRAGMA mmap_size = 0; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                   "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB, used INTEGER)",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(b->db, "SELECT v FROM kv WHERE k = ?1", -1, &b->get, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(b->db, "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)", -1, &b->set, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(b->db, "UPDATE kv SET used = ?2 WHERE k = ?1", -1, &b->used, NULL) != SQLITE_OK)
    return fail(L, b);
  return 1;
}

static int b_set(lua_State *L) {
  bare *b = check(L);
  size_t klen, vlen;
  const char *k = luaL_checklstring(L, 2, &klen), *v = luaL_checklstring(L, 3, &vlen);
  int rc;
  sqlite3_bind_text(b->set, 1, k, (int)klen, SQLITE_STATIC);
  sqlite3_bind_blob(b->set, 2, v, (int)vlen, SQLITE_STATIC);
  rc = sqlite3_step(b->set);
  sqlite3_reset(b->set);
  if (rc != SQLITE_DONE) return fail(L, b);
  return 0;
}

static int read_value(lua_State *L, bare *b, const char *k, size_t klen) {
  int rc;
  sqlite3_bind_text(b->get, 1, k, (int)klen, SQLITE_STATIC);
  rc = sqlite3_step(b->get);
  if (rc == SQLITE_ROW) {
    const char *p = (const char *)sqlite3_column_blob(b->get, 0);
    lua_pushlstring(L, p ? p : "", (size_t)sqlite3_column_bytes(b->get, 0));
  } else {
    lua_pushnil(L);
  }
  sqlite3_reset(b->get);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(L, b);
  return 1;
}

static int b_get(lua_State *L) {
  bare *b = check(L);
  size_t klen;
  const char *k = luaL_checklstring(L, 2, &klen);
  return read_value(L, b, k, klen);
}

static int b_get_used(lua_State *L) {
  bare *b = check(L);
  size_t klen;
  const char *k = luaL_checklstring(L, 2, &klen);
  int rc;
  read_value(L, b, k, klen);
  sqlite3_bind_text(b->used, 1, k, (int)klen, SQLITE_STATIC);
  sqlite3_bind_int64(b->used, 2, (sqlite3_int64)time(NULL));
  rc = sqlite3_step(b->used);
  sqlite3_reset(b->used);
  if (rc != SQLITE_DONE) return fail(L, b);
  return 1;
}

static int b_gc(lua_State *L) {
  bare *b = check(L);
  sqlite3_finalize(b->get);
  sqlite3_finalize(b->set);
  sqlite3_finalize(b->used);
  sqlite3_close(b->db);
  b->db = NULL;
  b->get = b->set = b->used = NULL;
  return 0;
}

int luaopen_bench_sqlite_bare(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "get", b_get }, { "set", b_set }, { "get_used", b_get_used }, { NULL, NULL },
  };
  luaL_newmetatable(L, BARE_MT);
  lua_pushcfunction(L, b_gc);
  lua_setfield(L, -2, "__gc");
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, b_open);
  lua_setfield(L, -2, "open");
  return 1;
}
