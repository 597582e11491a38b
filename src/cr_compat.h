/* Lua 5.3 compatibility: the module is written against the Lua 5.4 C API;
 * when it is compiled against 5.3 headers, this file supplies what 5.4 has
 * and 5.3 lacks, under the 5.4 names, so the logic files need no version
 * checks. Against 5.4 it only defines CR_SRCLEN.
 *
 * - lua_newuserdatauv / lua_getiuservalue / lua_setiuservalue: a 5.3 full
 *   userdata has one user value; a userdata made with n > 0 user values gets
 *   a table there whose element 0 is n, and the i-th "user value" is that
 *   table's i-th element. Return values match 5.4: the getter returns the pushed
 *   value's type (LUA_TNONE, pushing nil, when the slot does not exist), the
 *   setter pops the value and returns 0 when the slot does not exist.
 * - luaL_typeerror / luaL_argexpected: the "X expected, got Y" argument
 *   error of 5.4, naming a value by its __name metafield like 5.4 does.
 * - lua_warning: 5.3 has no warning system; messages go to stderr with the
 *   prefix of 5.4's default warning function ("Lua warning: "), and pieces
 *   sent with tocont set are joined on one line.
 * - CR_SRCLEN(ar): the length of lua_Debug's source, a 5.4 field (srclen)
 *   that 5.3 lacks (there the source is a C string).
 * - lua_toclose: 5.3 has no to-be-closed slots (nor coroutine.close), so
 *   marking one does nothing; an abandoned computation ends when its
 *   record is collected. */
#ifndef CR_COMPAT_H
#define CR_COMPAT_H

#include "lua.h"
#include "lauxlib.h"

#if LUA_VERSION_NUM >= 504

#define CR_SRCLEN(ar) ((ar).srclen)

#elif LUA_VERSION_NUM == 503

#include <stdio.h>
#include <string.h>

#define CR_SRCLEN(ar) strlen((ar).source)

static inline void *cr_compat_newuserdatauv(lua_State *L, size_t size, int nuvalue) {
  void *p = lua_newuserdata(L, size);
  if (nuvalue > 0) {
    lua_createtable(L, nuvalue, 1);
    lua_pushinteger(L, nuvalue); /* slot 0: how many user values it has */
    lua_rawseti(L, -2, 0);
    lua_setuservalue(L, -2);
  }
  return p;
}

/* Pushes the slot table of the userdata at idx and returns 1 when it has a
 * user value n; else pushes nothing and returns 0. */
static inline int cr_compat_uvslots(lua_State *L, int idx, int n) {
  lua_Integer count;
  if (lua_getuservalue(L, idx) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  lua_rawgeti(L, -1, 0);
  count = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (n < 1 || n > count) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

static inline int cr_compat_getiuservalue(lua_State *L, int idx, int n) {
  int t;
  if (!cr_compat_uvslots(L, idx, n)) {
    lua_pushnil(L);
    return LUA_TNONE;
  }
  t = lua_rawgeti(L, -1, n);
  lua_remove(L, -2);
  return t;
}

static inline int cr_compat_setiuservalue(lua_State *L, int idx, int n) {
  if (!cr_compat_uvslots(L, idx, n)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_rotate(L, -2, 1); /* slots, value */
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
  return 1;
}

static inline int cr_compat_typeerror(lua_State *L, int arg, const char *tname) {
  const char *got;
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING)
    got = lua_tostring(L, -1);
  else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA)
    got = "light userdata";
  else
    got = luaL_typename(L, arg);
  return luaL_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, got));
}

static inline void cr_compat_warning(lua_State *L, const char *msg, int tocont) {
  static int continuing = 0;
  (void)L;
  if (!continuing) fputs("Lua warning: ", stderr);
  fputs(msg, stderr);
  if (!tocont) fputc('\n', stderr);
  fflush(stderr);
  continuing = tocont;
}

#define lua_newuserdatauv(L, size, n) cr_compat_newuserdatauv((L), (size), (n))
#define lua_getiuservalue(L, idx, n) cr_compat_getiuservalue((L), (idx), (n))
#define lua_setiuservalue(L, idx, n) cr_compat_setiuservalue((L), (idx), (n))
#define luaL_typeerror(L, arg, tname) cr_compat_typeerror((L), (arg), (tname))
#define luaL_argexpected(L, cond, arg, tname) \
  ((void)((cond) || luaL_typeerror((L), (arg), (tname))))
#define lua_warning(L, msg, tocont) cr_compat_warning((L), (msg), (tocont))
#define lua_toclose(L, idx) ((void)(L), (void)(idx))

#else
#error "cache_resource needs Lua 5.3 or 5.4"
#endif

#endif
