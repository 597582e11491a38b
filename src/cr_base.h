/* The floor every other file stands on: raising errors, reporting
 * warnings, reading the clock, holding callbacks. Nothing here calls into
 * another file of the module. */
#ifndef CR_BASE_H
#define CR_BASE_H

#include "lua.h"

#if defined(__GNUC__) || defined(__clang__) || defined(__CPPCHECK__)
#define CR_NORETURN __attribute__((noreturn))
#else
#define CR_NORETURN
#endif

typedef struct cr_state cr_state;

/* cr_base.c */

/* Raises an error exactly like luaL_error (position prefix, the formats of
 * lua_pushfstring), but declared noreturn, so compilers and static
 * analyzers know the paths after it do not exist. */
CR_NORETURN void cr_error(lua_State *L, const char *fmt, ...);
/* A warning: through the global warn() when there is one, else the C
 * warning function. Lua code may run. */
void cr_report(lua_State *L, const char *msg);
/* Pushes a readable form of the error value at err (a raised error object,
 * the second value of a failure result) and returns it. No metamethod
 * runs: this is for reports. */
const char *cr_error_text(lua_State *L, int err);
/* Seconds on the module's clock: the one set with set_clock (Lua code), or
 * the monotonic clock. */
double cr_now(lua_State *L, cr_state *S);
/* Replaces the registry reference *ref by one to the value at idx, or by
 * none (LUA_NOREF) when idx is 0 or holds nil. */
void cr_ref_replace(lua_State *L, int *ref, int idx);
/* The setter of a hook: argument 1, a function or nil, replaces *ref. */
int cr_set_hook(lua_State *L, int *ref);

/* Registry slots kept for reuse. luaL_ref and luaL_unref each walk the
 * registry's free list (three or four table reads and writes); a bounded
 * cache at capacity drops two references and takes two on every miss. A
 * slot given back here holds the integer 0 (nothing the collector keeps
 * alive, and not an object: like luaL_unref's own free list) until it is
 * taken again, which is then a single write. Neither call allocates when
 * the pool has a slot (or room for one), so neither can run Lua code. */
#define CR_REF_POOL 32
typedef struct cr_refpool {
  int n;
  int slots[CR_REF_POOL];
} cr_refpool;
/* luaL_ref(L, LUA_REGISTRYINDEX) of the value on top, from the pool when it has a slot. */
int cr_ref(lua_State *L, cr_refpool *p);
/* luaL_unref(L, LUA_REGISTRYINDEX, ref), keeping the slot when the pool has room. */
void cr_unref(lua_State *L, cr_refpool *p, int ref);
/* Gives every pooled slot back to the registry (the state closes). */
void cr_refpool_drain(lua_State *L, cr_refpool *p);

#endif
