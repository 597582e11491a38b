/* make bench only: what any C function that caches by the values of its
 * scalar arguments pays through Lua's C API before it does any caching of
 * its own. The cached function it stands beside makes exactly these calls
 * on a hit:
 *
 *   lua_gettop                      how many arguments
 *   lua_touserdata(upvalue 1)       its state
 *   lua_type, then one reader       each argument (lua_tolstring,
 *                                   lua_isinteger + lua_tointeger,
 *                                   lua_tonumber, lua_toboolean)
 *   lua_rawgeti(registry)           the cached value
 *
 * and then keys, hashes and probes, which this function does not. So its
 * time is the floor of a hit made through the C API, and the distance from
 * it to cache_resource's hit is the key, the hash and the probe.
 *
 *   local floor = require("bench_api_floor").new(value)
 *   floor(a, b, c)    --> value, whatever the arguments
 */
#include <stdint.h>
#include "lua.h"
#include "lauxlib.h"

typedef struct {
  int ref;        /* the value, in the registry */
  uintptr_t sink; /* what the readers returned, so the compiler keeps them */
} api_floor;

static int floor_call(lua_State *L) {
  int nargs = lua_gettop(L), i;
  api_floor *fl = (api_floor *)lua_touserdata(L, lua_upvalueindex(1));
  uintptr_t acc = 0;
  for (i = 1; i <= nargs; i++) {
    size_t len;
    switch (lua_type(L, i)) {
      case LUA_TSTRING: acc += (uintptr_t)lua_tolstring(L, i, &len) + len; break;
      case LUA_TNUMBER:
        if (lua_isinteger(L, i)) acc += (uintptr_t)lua_tointeger(L, i);
        else acc += (uintptr_t)(int64_t)lua_tonumber(L, i);
        break;
      case LUA_TBOOLEAN: acc += (uintptr_t)lua_toboolean(L, i); break;
      default: break;
    }
  }
  fl->sink ^= acc;
  lua_rawgeti(L, LUA_REGISTRYINDEX, fl->ref);
  return 1;
}

static int floor_gc(lua_State *L) {
  api_floor *fl = (api_floor *)lua_touserdata(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, fl->ref);
  return 0;
}

/* new(value): a floor function over value. Its state is a full userdata
 * kept in the closure's second upvalue (the first is the light pointer the
 * call reads, as the cached function reads its own); its __gc gives the
 * value's reference back. */
static int floor_new(lua_State *L) {
  api_floor *fl;
  luaL_checkany(L, 1);
  fl = (api_floor *)lua_newuserdata(L, sizeof *fl);
  fl->ref = LUA_NOREF;
  if (luaL_newmetatable(L, "bench_api_floor")) {
    lua_pushcfunction(L, floor_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 1);
  fl->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  fl->sink = 0;
  lua_pushlightuserdata(L, fl);
  lua_insert(L, -2);
  lua_pushcclosure(L, floor_call, 2);
  return 1;
}

int luaopen_bench_api_floor(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, floor_new);
  lua_setfield(L, -2, "new");
  return 1;
}
