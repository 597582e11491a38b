/* Errors, warnings, the clock, callback references and the pool of
 * registry slots: what every layer above needs, calling nothing of the
 * module. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include "cr.h"

void cr_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  luaL_where(L, 1);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  lua_error(L);
  abort(); /* not reached: lua_error does not return, but is not declared so */
}

/* Through the global warn() when there is one, so programs (and specs)
 * can route warnings; else the C warning function. */
void cr_report(lua_State *L, const char *msg) {
  if (lua_getglobal(L, "warn") == LUA_TFUNCTION) {
    lua_pushstring(L, msg);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lua_warning(L, msg, 0);
  }
}

const char *cr_error_text(lua_State *L, int err) {
  err = lua_absindex(L, err);
  if (lua_type(L, err) == LUA_TSTRING || lua_type(L, err) == LUA_TNUMBER) {
    lua_pushvalue(L, err);
    return lua_tostring(L, -1);
  }
  if (lua_isboolean(L, err)) return lua_pushstring(L, lua_toboolean(L, err) ? "true" : "false");
  return lua_pushfstring(L, "(a %s error value)", luaL_typename(L, err));
}

double cr_now(lua_State *L, cr_state *S) {
  if (S->clock_ref != LUA_NOREF) {
    double t;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->clock_ref);
    lua_call(L, 0, 1);
    /* an expiry computed from NaN or an infinity cannot be compared:
     * expired entries would stay and the expiry heap lose its order */
    if (lua_type(L, -1) != LUA_TNUMBER)
      cr_error(L, "cache_resource: the clock set with set_clock must return a finite number of seconds, got a %s",
               luaL_typename(L, -1));
    t = (double)lua_tonumber(L, -1);
    if (!isfinite(t))
      cr_error(L, "cache_resource: the clock set with set_clock must return a finite number of seconds, got %s",
               t != t ? "nan" : t > 0 ? "inf" : "-inf");
    lua_pop(L, 1);
    return t;
  } else {
    struct timespec ts;
    /* read on every call while something has a ttl: the coarse clock
     * (a few ms of resolution, far finer than any sensible ttl) costs a
     * fraction of the precise one where the kernel has it */
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
  }
}

void cr_ref_replace(lua_State *L, int *ref, int idx) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (idx != 0 && !lua_isnoneornil(L, idx)) {
    lua_pushvalue(L, idx);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

int cr_ref(lua_State *L, cr_refpool *p) {
  int ref;
  if (p->n == 0 || lua_isnil(L, -1)) return luaL_ref(L, LUA_REGISTRYINDEX); /* nil: LUA_REFNIL, no slot */
  ref = p->slots[--p->n];
  lua_rawseti(L, LUA_REGISTRYINDEX, ref); /* the key is there already: nothing allocates */
  return ref;
}

void cr_unref(lua_State *L, cr_refpool *p, int ref) {
  if (ref < 0) return; /* LUA_NOREF, LUA_REFNIL: nothing held */
  if (p->n == CR_REF_POOL || !lua_checkstack(L, 1)) { /* growing the stack runs no Lua code */
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return;
  }
  lua_pushinteger(L, 0);
  lua_rawseti(L, LUA_REGISTRYINDEX, ref);
  p->slots[p->n++] = ref;
}

void cr_refpool_drain(lua_State *L, cr_refpool *p) {
  while (p->n > 0) luaL_unref(L, LUA_REGISTRYINDEX, p->slots[--p->n]);
}

int cr_set_hook(lua_State *L, int *ref) {
  luaL_argexpected(L, lua_isnoneornil(L, 1) || lua_isfunction(L, 1), 1, "function or nil");
  cr_ref_replace(L, ref, 1);
  return 0;
}
