/* libFuzzer host for `make fuzz`: a Lua state with cache_resource linked in
 * (a standalone program needs its own VM; the module itself never links
 * liblua). Each input goes to fuzz_one() of the script CR_FUZZ_SCRIPT names
 * (fuzz/fuzz_keys.lua: keys and recorded UI arguments; fuzz/fuzz_codec.lua:
 * the value codec), which checks its invariants on it; a failed check
 * aborts, so libFuzzer keeps the input. */
#include <stdio.h>
#include <stdlib.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

int luaopen_cache_resource(lua_State *L);

static lua_State *state;

static lua_State *setup(void) {
  lua_State *L = luaL_newstate();
  const char *script = getenv("CR_FUZZ_SCRIPT");
  luaL_openlibs(L);
  luaL_requiref(L, "cache_resource", luaopen_cache_resource, 0);
  lua_pop(L, 1);
  if (luaL_dofile(L, script ? script : "fuzz/fuzz_keys.lua") != LUA_OK) {
    fprintf(stderr, "fuzz host: %s\n", lua_tostring(L, -1));
    abort();
  }
  return L;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  if (state == NULL) state = setup();
  lua_getglobal(state, "fuzz_one");
  lua_pushlstring(state, (const char *)data, size);
  if (lua_pcall(state, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "invariant broken: %s\n", lua_tostring(state, -1));
    abort();
  }
  lua_settop(state, 0);
  return 0;
}
