/* The call path of a cached function.
 *
 * Fast path (a plain hit): serialize the arguments into the state's reused
 * buffer, probe the store, push the stored values. No allocation, no clock
 * read unless some entry in the process has a ttl.
 *
 * Everything else (miss, validate, waiting for another coroutine, replay)
 * runs as a small state machine on a cr_call userdata pushed at stack slot
 * `base` = nargs + 2. Each step that calls Lua code does so with
 * lua_callk/lua_pcallk and continues in resume(), so the cached function,
 * validate and the waiter may all yield to a coroutine scheduler. The
 * continuation context packs base and the phase. */
#include <string.h>
#include <stdlib.h>
#include "cr.h"

enum { PHASE_WAIT = 1, PHASE_VALIDATE = 2, PHASE_COMPUTE = 3 };
#define CTX(base, phase) ((lua_KContext)(base) * 4 + (phase))

static int resume(lua_State *L, int status, lua_KContext ctx);

/* ---- the list of calls in flight ------------------------------------- */

static void call_link(cr_state *S, cr_call *call) {
  call->prev = NULL;
  call->next = S->calls;
  if (S->calls) S->calls->prev = call;
  S->calls = call;
  call->linked = 1;
}

static void call_unlink(cr_call *call) {
  cr_state *S = call->S;
  if (!call->linked || S->closed) return;
  if (call->prev) call->prev->next = call->next;
  else S->calls = call->next;
  if (call->next) call->next->prev = call->prev;
  call->linked = 0;
  call->computing = 0;
}

/* A coroutine that dropped its computation (closed, or collected) unlinks
 * here; until then waiters see it as dead and take over. */
int cr_call_gc(lua_State *L) {
  call_unlink((cr_call *)luaL_checkudata(L, 1, CR_CALL_MT));
  return 0;
}

static cr_call *find_owner(cr_state *S, const cr_call *me) {
  cr_call *c;
  for (c = S->calls; c; c = c->next)
    if (c != me && c->computing && c->store == me->store && c->hash == me->hash &&
        c->keylen == me->keylen && c->is_digest == me->is_digest &&
        memcmp(c->key, me->key, me->keylen) == 0)
      return c;
  return NULL;
}

enum { OWNER_BLOCKS_US, OWNER_SUSPENDED, OWNER_DEAD };

/* The owner either runs (it is us, or it resumed us: waiting would never
 * end), is suspended (wait for it), or is gone (take over). */
static int owner_state(lua_State *L, lua_State *co) {
  lua_Debug ar;
  if (co == L) return OWNER_BLOCKS_US;
  switch (lua_status(co)) {
    case LUA_YIELD: return OWNER_SUSPENDED;
    case LUA_OK: return lua_getstack(co, 0, &ar) ? OWNER_BLOCKS_US : OWNER_DEAD;
    default: return OWNER_DEAD;
  }
}

/* ---- steps ----------------------------------------------------------- */

static int hit(lua_State *L, cr_call *call, cr_entry *e) {
  cr_store_touch(e->store, e);
  call->cache->hits++;
  call_unlink(call);
  luaL_checkstack(L, e->nvalues + 1, "cache_resource: too many values to return");
  cr_push_values(L, e);
  return e->nvalues;
}

static int compute(lua_State *L, int base, cr_call *call) {
  int nargs = base - 2, i;
  call->computing = 1;
  call->owner = L;
  lua_pushthread(L); /* keeps call->owner valid as long as this record */
  lua_setiuservalue(L, base, 1);
  call->cache->misses++;
  luaL_checkstack(L, nargs + 2, "cache_resource: too many arguments");
  lua_getiuservalue(L, 1, 1);
  for (i = 2; i <= nargs + 1; i++) lua_pushvalue(L, i);
  return resume(L, lua_pcallk(L, nargs, LUA_MULTRET, 0, CTX(base, PHASE_COMPUTE), resume),
                CTX(base, PHASE_COMPUTE));
}

/* Stack: [1] f, [2..base-1] args, [base] call; top == base. */
static int lookup(lua_State *L, int base, cr_call *call) {
  cr_cache *c = call->cache;
  cr_state *S = call->S;
  for (;;) {
    cr_entry *e;
    cr_call *other;
    if (S->heap_len) {
      double now = cr_now(L, S);
      if (S->heap[0]->expires_at <= now) cr_sweep(L, S, now);
    }
    if (call->store == NULL) return compute(L, base, call); /* detached: not stored */
    e = cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest);
    if (e && c->validate_ref != LUA_NOREF) {
      int n = e->nvalues;
      luaL_checkstack(L, 2 * n + 4, "cache_resource: too many values to validate");
      cr_push_values(L, e);
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->validate_ref);
      cr_push_values(L, e);
      call->nvalues = n;
      call->gen = e->gen;
      lua_callk(L, n, 1, CTX(base, PHASE_VALIDATE), resume);
      return resume(L, LUA_OK, CTX(base, PHASE_VALIDATE));
    }
    if (e) return hit(L, call, e);
    other = find_owner(S, call);
    if (other == NULL) return compute(L, base, call);
    switch (owner_state(L, other->owner)) {
      case OWNER_DEAD:
        other->store = NULL; /* its result, if it ever comes, is not stored */
        continue;
      case OWNER_BLOCKS_US:
        return luaL_error(L, "cache_resource: recursive call of %s with the same arguments: this key is "
                             "already being computed by this coroutine (or one that resumed it)",
                          c->name);
      default: break;
    }
    if (S->waiter_ref == LUA_NOREF)
      return luaL_error(L, "cache_resource: %s: this key is being computed by another coroutine; "
                           "set a waiter to wait for it, e.g. cache_resource.set_waiter(function() "
                           "cqueues.sleep(0) end)",
                        c->name);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->waiter_ref);
    lua_callk(L, 0, 0, CTX(base, PHASE_WAIT), resume);
    return resume(L, LUA_OK, CTX(base, PHASE_WAIT));
  }
}

static int resume(lua_State *L, int status, lua_KContext ctx) {
  int base = (int)(ctx / 4), phase = (int)(ctx % 4), n;
  cr_call *call = (cr_call *)lua_touserdata(L, base);
  switch (phase) {
    case PHASE_WAIT:
      lua_settop(L, base);
      return lookup(L, base, call);
    case PHASE_VALIDATE: {
      int ok = lua_toboolean(L, -1);
      cr_entry *e = NULL;
      lua_pop(L, 1);
      if (call->store) e = cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest);
      if (e && e->gen != call->gen) e = NULL; /* replaced while validate yielded */
      if (ok) {
        if (e) cr_store_touch(e->store, e);
        call->cache->hits++;
        call_unlink(call);
        return call->nvalues;
      }
      if (e) cr_entry_release(L, e, CR_DROP);
      lua_settop(L, base);
      return lookup(L, base, call);
    }
    default: /* PHASE_COMPUTE */
      call->computing = 0;
      call->owner = NULL;
      if (status != LUA_OK && status != LUA_YIELD) {
        call_unlink(call);
        return lua_error(L); /* the error object, unchanged */
      }
      n = lua_gettop(L) - base;
      if (call->store) cr_store_insert(L, call->store, call, base + 1, n);
      call_unlink(call);
      return n;
  }
}

/* ---- entry points ---------------------------------------------------- */

static void infer_name(lua_State *L, cr_cache *c) {
  lua_Debug ar;
  c->name_fixed = 1;
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name && ar.name[0] != '?') {
    char *name = (char *)malloc(strlen(ar.name) + 1);
    if (name == NULL) return;
    strcpy(name, ar.name);
    free(c->name);
    c->name = name;
  }
}

static int slow_path(lua_State *L, cr_func *f, int nargs, cr_key *key) {
  cr_cache *c = f->cache;
  cr_state *S = c->S;
  int base = nargs + 2;
  /* key->bufs stays busy until the bytes are copied: a finalizer run by
   * this allocation may serialize another key meanwhile */
  cr_call *call = (cr_call *)lua_newuserdatauv(L, sizeof *call + key->len, 1);
  memset(call, 0, sizeof *call);
  call->S = S;
  call->cache = c;
  call->hash = key->hash;
  call->keylen = key->len;
  call->is_digest = key->is_digest;
  memcpy(call->key, key->bytes, key->len);
  cr_key_done(key);
  luaL_setmetatable(L, CR_CALL_MT);
  if (lua_gettop(L) > base) { /* a boxed key buffer sat at base */
    lua_replace(L, base);
    lua_settop(L, base);
  }
  call->store = cr_store_for(L, c, 1);
  call_link(S, call);
  return lookup(L, base, call);
}

int cr_func_call(lua_State *L) {
  cr_func *f = (cr_func *)luaL_checkudata(L, 1, CR_FUNC_MT);
  cr_cache *c = f->cache;
  cr_state *S = c->S;
  int nargs = lua_gettop(L) - 1;
  cr_store *st;
  cr_entry *e;
  cr_key key;
  if (S->heap_len) { /* one comparison unless something has expired */
    double now = cr_now(L, S);
    if (S->heap[0]->expires_at <= now) cr_sweep(L, S, now);
  }
  if (!c->name_fixed) infer_name(L, c); /* first call: errors below may need it */
  if (c->session_scope && S->current == NULL) cr_store_for(L, c, 0); /* raises: no session */
  cr_key_for_call(L, S, f, 2, nargs, &key);
  /* looked up after hashing: a finalizer run meanwhile may have ended a session */
  st = cr_store_for(L, c, 0);
  if (st && c->validate_ref == LUA_NOREF &&
      (e = cr_store_find(st, key.hash, key.bytes, key.len, key.is_digest)) != NULL) {
    cr_key_done(&key);
    cr_store_touch(st, e);
    c->hits++;
    luaL_checkstack(L, e->nvalues + 1, "cache_resource: too many values to return");
    cr_push_values(L, e);
    return e->nvalues;
  }
  return slow_path(L, f, nargs, &key);
}

/* f:clear(), f.clear(), f:clear(...), f.clear(...): upvalue 1 is f. */
int cr_func_clear(lua_State *L) {
  cr_func *f = (cr_func *)lua_touserdata(L, lua_upvalueindex(1));
  cr_cache *c = f->cache;
  cr_state *S = c->S;
  int n = lua_gettop(L);
  cr_key key;
  cr_store *one, *st;
  unsigned char *bytes;
  if (n >= 1 && lua_rawequal(L, 1, lua_upvalueindex(1))) lua_remove(L, 1), n--;
  if (n == 0) {
    cr_cache_clear(L, c, S->current == NULL);
    return 0;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1); /* the key builder names parameters from arg 1 */
  cr_key_for_call(L, S, f, 2, n, &key);
  /* copy the key: releasing runs on_release, which may hash other keys */
  bytes = (unsigned char *)lua_newuserdatauv(L, key.len ? key.len : 1, 0);
  memcpy(bytes, key.bytes, key.len);
  cr_key_done(&key);
  one = (c->session_scope && S->current == NULL) ? NULL : cr_store_for(L, c, 0);
  st = one ? one : (c->session_scope ? c->session_stores : c->global);
  while (st) {
    cr_entry *e = cr_store_find(st, key.hash, bytes, key.len, key.is_digest);
    cr_call *call;
    cr_store *next = one ? NULL : st->next_of_cache;
    for (call = S->calls; call; call = call->next)
      if (call->computing && call->store == st && call->hash == key.hash && call->keylen == key.len &&
          memcmp(call->key, bytes, key.len) == 0)
        call->store = NULL;
    if (e) {
      st->pins++;
      cr_entry_release(L, e, CR_CLEAR);
      next = (one || st->dead) ? NULL : st->next_of_cache;
      cr_store_unpin(st);
    }
    st = next;
  }
  return 0;
}
