/* The call path of a cached function.
 *
 * Fast path (a plain hit): serialize the arguments into the state's reused
 * buffer, probe the store, push the stored values, replay the entry's UI
 * calls (cr_replay.c keeps that loop's state on the stack). No allocation,
 * no clock read unless some entry in the process has a ttl.
 *
 * Everything else (miss, validate, a stale entry, waiting for another
 * coroutine) runs as a small state machine on a cr_call userdata pushed at
 * stack slot `base` = nargs + 2. Each step that calls Lua code does so with
 * lua_callk/lua_pcallk and continues in resume(), so the cached function,
 * validate and the scheduler's wait (or the waiter) may all yield to a
 * coroutine scheduler. The continuation context packs base and the phase.
 *
 * A computing call is its key's owner: waiters park on its token and are
 * woken when it ends, however it ends (done, failed, its coroutine closed:
 * the slot is to-be-closed; or collected: __gc). A background refresh
 * (cr_refresh.c) runs the same compute step in a coroutine of the
 * scheduler, with the refresh's call record at its own `base`. */
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include "cr.h"

enum { PHASE_WAIT = 1, PHASE_VALIDATE, PHASE_COMPUTE, PHASE_GENERATION };
#define CTX(base, phase) ((lua_KContext)(base) * 8 + (phase))

static int resume(lua_State *L, int status, lua_KContext ctx);

/* ---- the list of calls in flight ------------------------------------- */

static void call_link(cr_state *S, cr_call *call) {
  call->prev = NULL;
  call->next = S->calls;
  if (S->calls) S->calls->prev = call;
  S->calls = call;
  call->linked = 1;
  if (call->kind == CR_REFRESH_BG) S->refreshing++;
}

static void call_unlink(cr_call *call) {
  cr_state *S = call->S;
  if (!call->linked || S->closed) return;
  if (call->prev) call->prev->next = call->next;
  else S->calls = call->next;
  if (call->next) call->next->prev = call->prev;
  call->linked = 0;
  call->computing = 0;
  call->storing = 0;
  if (call->kind == CR_REFRESH_BG) S->refreshing--;
}

void cr_call_link(cr_state *S, cr_call *call) {
  call_link(S, call);
}

/* The calls coroutine L computes, innermost first (calls are linked at the
 * head): the first one after `after`, or the innermost when `after` is
 * NULL; NULL past the outermost. A computing call stays linked until its
 * coroutine returns from it, so a loop may run Lua code in that coroutine
 * between two steps. */
cr_call *cr_call_computing(const cr_state *S, const lua_State *L, const cr_call *after) {
  cr_call *c = after ? after->next : S->calls;
  while (c && !(c->computing && c->owner == L)) c = c->next;
  return c;
}

/* The owner is done with its key: it leaves the list, then the coroutines
 * waiting on it are woken (Lua code: `call` may be gone afterwards). */
static void owner_done(lua_State *L, cr_call *call) {
  call_unlink(call);
  cr_sched_wake(L, call);
}

/* Ends a call record for good: not computing, nothing recorded, waiters woken. */
void cr_call_finish(lua_State *L, cr_call *call) {
  cr_state *S = call->S;
  cr_cache *c = call->cache;
  int was_storing = call->storing;
  cr_replay_free_frame(L, call);
  owner_done(L, call); /* Lua code: call may be gone afterwards */
  /* a store step that never ended (its coroutine raised in it) may have
   * kept widget sets that nothing uses any more */
  if (was_storing && !S->closed) cr_widget_sets_trim(L, c, NULL);
}

/* ---- the pool of call records ----------------------------------------
 *
 * A miss used to leave its call record (a userdata with a finalizer) to
 * the collector: an allocation, a finalizer call and a free per miss. A
 * record whose to-be-closed slot is closed is done with: its call returned
 * or raised, or its coroutine was closed, and only then. So __close puts
 * it back in the state's pool (a registry table), and the next miss takes
 * it. Only the call path's own records are poolable: a background
 * refresh's record is also an upvalue of the function given to the
 * scheduler, and a persisted cache's record is handed to Lua code (the
 * store step), either of which may still hold it. Records of a suspended
 * coroutine that is dropped are collected as before (__gc). Neither
 * putting back nor taking allocates, so no Lua code runs in either. */

/* Puts back the record at idx if it is a poolable one that is done with
 * (its call unlinked) while the state is open. */
static void pool_put(lua_State *L, int idx, cr_call *call) {
  cr_state *S = call->S;
  int i;
  if (!call->poolable || call->linked || S->closed) return;
  cr_replay_free_frame(L, call);
  if (S->call_pool_n >= CR_CALL_POOL) return; /* the collector takes this one */
  luaL_checkstack(L, 3, "cache_resource: call records");
  /* what a uservalue holds would live on in the pool, and an argument key
   * left in 3 would make the next call a widget call */
  for (i = 1; i <= 3; i += 2) {
    if (i == 1 ? call->owner_set : call->argkey_set) {
      lua_pushnil(L);
      lua_setiuservalue(L, idx, i);
    }
  }
  call->poolable = 0; /* once: a record in the pool is nobody's */
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->call_pool_ref);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, ++S->call_pool_n);
  lua_pop(L, 1);
}

/* Pushes a record from the pool, or returns NULL and pushes nothing. */
static cr_call *pool_take(lua_State *L, cr_state *S) {
  cr_call *call;
  if (S->call_pool_n == 0) return NULL;
  luaL_checkstack(L, 3, "cache_resource: call records");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->call_pool_ref);
  lua_rawgeti(L, -1, S->call_pool_n);
  lua_pushnil(L);
  lua_rawseti(L, -3, S->call_pool_n--);
  lua_remove(L, -2);
  call = (cr_call *)lua_touserdata(L, -1);
  return call;
}

/* __gc. A coroutine that dropped its computation (collected) ends it here. */
int cr_call_gc(lua_State *L) {
  cr_call *call = (cr_call *)luaL_checkudata(L, 1, CR_CALL_MT);
  if (call->linked) cr_call_finish(L, call);
  else cr_replay_free_frame(L, call);
  return 0;
}

/* __close of an owner's stack slot: coroutine.close(owner) ends the
 * computation at once. Every computing call passes here when it returns
 * (or raises), by then finished: one test. */
int cr_call_close(lua_State *L) {
  cr_call *call = (cr_call *)lua_touserdata(L, 1); /* only ever our own slot */
  if (call->linked) cr_call_finish(L, call);
  pool_put(L, 1, call);
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
  if (co == NULL) return OWNER_SUSPENDED; /* a background refresh not started yet */
  if (co == L) return OWNER_BLOCKS_US;
  switch (lua_status(co)) {
    case LUA_YIELD: return OWNER_SUSPENDED;
    case LUA_OK: return lua_getstack(co, 0, &ar) ? OWNER_BLOCKS_US : OWNER_DEAD;
    default: return OWNER_DEAD;
  }
}

/* ---- steps ----------------------------------------------------------- */

static int outermost(cr_state *S, lua_State *L);

/* The nvalues values of a hit are on top of the stack: replay the entry's
 * UI calls (if any), then return them. */
static int replay_and_return(lua_State *L, cr_state *S, cr_replay *rp, int nvalues) {
  if (rp == NULL) return nvalues;
  return cr_replay_run(L, S, rp, nvalues, outermost(S, L), 0);
}

/* Pushes the values of a hit of e, replays its UI calls, returns the
 * values. A cache_data hit decodes a fresh copy first, which allocates (a
 * finalizer may release e): its recorded calls are held before that, and e
 * is not used after. */
static int push_and_replay(lua_State *L, cr_state *S, cr_entry *e) {
  cr_replay *rp = e->replay;
  int held = 0, n;
  if (!e->store->cache->data) {
    cr_push_values(L, e);
    return replay_and_return(L, S, rp, e->nvalues);
  }
  if (rp) held = cr_replay_hold(L, rp);
  n = cr_entry_push(L, e);
  return rp ? cr_replay_run(L, S, rp, n, outermost(S, L), held) : n;
}

/* A hit on the slow path. The call record is done with: a replay keeps its
 * state on the stack. */
static int finish_hit(lua_State *L, cr_call *call, cr_replay *rp) {
  call_unlink(call);
  return replay_and_return(L, call->S, rp, call->nvalues);
}

static int hit(lua_State *L, cr_call *call, cr_entry *e, int stale) {
  cr_store_touch(e->store, e);
  if (stale) call->cache->stale_hits++;
  else call->cache->hits++;
  luaL_checkstack(L, e->nvalues + 1, "cache_resource: too many values to return");
  call_unlink(call); /* the call record is done with */
  return push_and_replay(L, call->S, e);
}

/* The spinner: a transient UI element, started only by the
 * outermost computation of a coroutine and never recorded. */
static void spinner_event(lua_State *L, cr_call *call, int start, int nargs) {
  cr_state *S = call->S;
  cr_cache *c = call->cache;
  int n = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->spinner_ref);
  lua_pushstring(L, start ? "start" : "stop");
  if (start) {
    if (c->spinner_ref != LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, c->spinner_ref);
    else lua_pushfstring(L, "Running `%s(%s)`.", c->name, nargs ? "..." : "");
    lua_pushboolean(L, c->show_time);
    n = 3;
  }
  if (lua_pcall(L, n, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, "cache_resource: the spinner hook raised an error: %s", msg ? msg : luaL_typename(L, -1));
    cr_report(L, lua_tostring(L, -1));
    lua_pop(L, 2);
  }
}

static int outermost(cr_state *S, lua_State *L) {
  return cr_call_computing(S, L, NULL) == NULL;
}

static int compute(lua_State *L, int base, cr_call *call) {
  int nargs = base - 2, i, extra = 0;
  if (call->kind != CR_REFRESH_BG && call->cache->show_spinner && call->S->spinner_ref != LUA_NOREF &&
      outermost(call->S, L)) {
    spinner_event(L, call, 1, nargs);
    call->spinner = 1;
  }
  luaL_checkstack(L, nargs + 6, "cache_resource: too many arguments"); /* before it owns the key */
  call->computing = 1;
  call->owner = L;
  if (lua_pushthread(L)) { /* the main thread lives as long as the state */
    lua_pop(L, 1);
  } else { /* a coroutine: kept valid as long as this record */
    lua_setiuservalue(L, base, 1);
    call->owner_set = 1;
  }
  /* Where fn can yield, its coroutine may be closed while suspended:
   * coroutine.close(owner) then ends the computation at once through the
   * to-be-closed slot. Where it cannot (the main thread, a C call
   * boundary), the computation starts and ends inside this C call, and
   * the protected call below catches what fn raises: the record is ended
   * and put back by the steps after it, without a to-be-closed slot. A
   * persisted cache's store step keeps the slot. */
  call->untracked = !lua_isyieldable(L) && call->cache->persist_ref == LUA_NOREF;
  if (!call->untracked) lua_toclose(L, base);
  if (call->kind == CR_REFRESH_FG) call->cache->refreshes++;
  if (call->cache->persist_ref != LUA_NOREF) { /* the store's step, which runs fn when the store has no entry */
    cr_persist_push_miss(L, call->cache);      /* (and counts the miss then) */
    lua_pushvalue(L, base);
    lua_pushvalue(L, 1);
    extra = 4; /* the handle, the call record, the cr_func, fn */
  } else if (call->kind == CR_MISS) {
    call->cache->misses++;
  }
  lua_getiuservalue(L, 1, 1);
  for (i = 2; i <= nargs + 1; i++) lua_pushvalue(L, i);
  return resume(L, lua_pcallk(L, nargs + extra, LUA_MULTRET, 0, CTX(base, PHASE_COMPUTE), resume),
                CTX(base, PHASE_COMPUTE));
}

int cr_call_compute(lua_State *L, int base, cr_call *call) {
  return compute(L, base, call);
}

/* Stack: [1] f, [2..base-1] args, [base] call; top == base.
 * A fresh entry is a hit. A stale one (past its ttl, within max_stale) is
 * served at once in the background mode while a refresh runs (started here
 * through the scheduler's spawn, or already running), else recomputed by
 * this call with the stale values as the fallback. No entry: compute, or
 * wait for the coroutine computing it. */
static int lookup(lua_State *L, int base, cr_call *call) {
  cr_cache *c = call->cache;
  cr_state *S = call->S;
  for (;;) {
    cr_entry *e;
    cr_call *other;
    double now = -HUGE_VAL; /* with an empty heap no entry can be stale */
    if (S->heap_len) {
      now = cr_now(L, S); /* Lua code, maybe: everything below is looked up after it */
      if (S->heap_len && S->heap[0]->expires_at <= now) cr_sweep(L, S, now);
    }
    if (call->store == NULL) return compute(L, base, call); /* detached: not stored */
    e = cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest);
    if (e && c->validate_ref != LUA_NOREF && !e->failure && e->gen != call->validated) {
      int n = e->nvalues;
      luaL_checkstack(L, 2 * n + 4, "cache_resource: too many values to validate");
      cr_push_values(L, e);
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->validate_ref);
      cr_push_values(L, e);
      call->nvalues = n;
      call->gen = e->gen;
      call->validating_stale = e->stale_at <= now;
      /* protected: a validate that raises counts as falsy (a closed
       * connection's ping raises in most drivers) */
      return resume(L, lua_pcallk(L, n, 1, 0, CTX(base, PHASE_VALIDATE), resume), CTX(base, PHASE_VALIDATE));
    }
    if (e && e->stale_at > now) return hit(L, call, e, 0);
    other = find_owner(S, call);
    if (other) switch (owner_state(L, other->owner)) {
      case OWNER_DEAD:
        other->store = NULL; /* its result, if it ever comes, is not stored */
        cr_sched_wake(L, other);
        continue;
      case OWNER_BLOCKS_US:
        cr_error(L, "%s: recursive call of %s with the same arguments: this key is "
                    "already being computed by this coroutine (or one that resumed it)",
                 cr_kind(c), c->name);
      default: break;
    }
    if (e) { /* stale */
      if (c->refresh_background) {
        if (other || now < e->retry_at || call->spawned) return hit(L, call, e, 1);
        if (S->spawn_ref != LUA_NOREF && cr_refresh_spawn(L, base, call)) {
          call->spawned = 1; /* one per call, whatever the scheduler did with it */
          continue;
        }
        call->kind = CR_REFRESH_FG; /* no scheduler to run it: this call refreshes */
      }
      if (other == NULL) {
        call->stale_ok = 1;
        return compute(L, base, call);
      }
    } else if (other == NULL) {
      return compute(L, base, call);
    }
    if (S->wait_ref != LUA_NOREF) {
      cr_sched_wait(L, other, CTX(base, PHASE_WAIT), resume);
      lua_settop(L, base); /* woken (or returned early) without yielding: look again */
      continue;
    }
    if (S->waiter_ref == LUA_NOREF)
      cr_error(L, "%s: %s: this key is being computed by another coroutine; "
                  "set a scheduler to wait for it (require \"cache_resource.cqueues\", or "
                  "cache_resource.set_scheduler{ wait = ..., wake = ... }) or a polling waiter, "
                  "e.g. cache_resource.set_waiter(function() cqueues.sleep(0) end)",
               cr_kind(c), c->name);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->waiter_ref);
    lua_callk(L, 0, 0, CTX(base, PHASE_WAIT), resume);
    lua_settop(L, base); /* the waiter returned without yielding: look again */
  }
}

/* ---- widgets ------------------------------------------------------ */

/* Pushes the current value of widget `id` (at idx) from the UI's source. */
static void push_widget_value(lua_State *L, cr_state *S, int idx) {
  if (S->widget_source_ref == LUA_NOREF) {
    lua_pushnil(L);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->widget_source_ref);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
}

/* Pushes the argument key as a string, flagged digest or not. */
static void push_argkey(lua_State *L, const cr_key *key) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, key->is_digest ? 'D' : 'K');
  luaL_addlstring(&b, (const char *)key->bytes, key->len);
  luaL_pushresult(&b);
}

/* Lookup key: the argument key (string at argkey) + the current values of
 * the widgets this function read before for those arguments. */
static void widget_lookup_key(lua_State *L, cr_cache *c, int argkey, cr_key *key) {
  int ids, values, i, n;
  luaL_checkstack(L, 8, "cache_resource: widget key");
  if (!cr_widget_sets_push(L, c, 0)) lua_newtable(L); /* a lookup adds no table */
  lua_pushvalue(L, argkey);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  ids = lua_gettop(L);
  n = (int)lua_rawlen(L, ids);
  lua_createtable(L, n, 0);
  values = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, ids, i);
    push_widget_value(L, c->S, lua_gettop(L));
    lua_rawseti(L, values, i);
    lua_pop(L, 1);
  }
  cr_key_widgets(L, c->S, argkey, values, n, key);
}

/* Widget caches: builds the key to store under. The widgets read by this
 * run widen the set kept for the arguments (string at argkey), and their
 * values (as read) complete the key. Pushes the ids table the key was
 * built from (the shared one, or a new one the commit puts in place) and
 * returns its index. Calls the widget source: Lua code. */
static int widget_store_key(lua_State *L, cr_call *call, int argkey, cr_key *key) {
  cr_cache *c = call->cache;
  int ids, reads, values, i, count;
  luaL_checkstack(L, 12, "cache_resource: widget key");
  if (cr_widget_sets_push(L, c, 0)) {
    lua_pushvalue(L, argkey);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  } else {
    lua_pushnil(L);
  }
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  ids = lua_gettop(L);
  if (call->widgets_ref != LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, call->widgets_ref);
  else lua_newtable(L);
  reads = lua_gettop(L);
  if (lua_getfield(L, reads, "ids") == LUA_TTABLE) { /* widen: append ids not seen before */
    int nr = (int)lua_rawlen(L, -1), j;
    for (j = 1; j <= nr; j++) {
      int known = 0, k, nk = (int)lua_rawlen(L, ids);
      lua_rawgeti(L, -1, j);
      for (k = 1; k <= nk && !known; k++) {
        lua_rawgeti(L, ids, k);
        known = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
      }
      if (!known) lua_rawseti(L, ids, nk + 1);
      else lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, reads, "values");
  count = (int)lua_rawlen(L, ids);
  lua_createtable(L, count, 0);
  values = lua_gettop(L);
  for (i = 1; i <= count; i++) {
    lua_rawgeti(L, ids, i);
    if (lua_istable(L, values - 1) && (lua_pushvalue(L, -1), lua_rawget(L, values - 1)) == LUA_TTABLE) {
      lua_rawgeti(L, -1, 1); /* the value this run read */
      lua_replace(L, -2);
    } else {
      if (lua_istable(L, values - 1)) lua_pop(L, 1);
      push_widget_value(L, c->S, lua_gettop(L));
    }
    lua_rawseti(L, values, i);
    lua_pop(L, 1);
  }
  cr_key_widgets(L, c->S, argkey, values, count, key);
  lua_settop(L, ids);
  return ids;
}

/* cache_data: encodes the n values at first.. and pushes what the entry
 * keeps (CR_DATA_NREFS values: the bytes, their metatable list or nil, nil
 * for the compiled copy to come): returns how many values it pushed, and
 * the bytes' length in *bytes. A result that cannot be copied pushes the
 * error instead and returns 0. No Lua code runs while the values are read. */
static int encode_result(lua_State *L, cr_call *call, int first, int n, size_t *bytes) {
  cr_cache *c = call->cache;
  cr_codec_error err;
  cr_codec_bufs *b;
  enum cr_codec_status st;
  int top;
  luaL_checkstack(L, 4, "cache_data: copying a result");
  b = cr_codec_bufs_take(L, &c->S->codec); /* may leave a boxed set on the stack */
  top = lua_gettop(L);
  st = cr_codec_encode(L, b, first, n, CR_CODEC_MEMORY, 0, "result", &err);
  cr_codec_bufs_release(b);
  if (st != CR_CODEC_OK) {
    lua_pushfstring(L, "cache_data: cannot copy the result of %s: %s%s", c->name, err.message, cr_codec_fix(st));
    return 0;
  }
  *bytes = lua_rawlen(L, top + 1);
  lua_pushnil(L);
  return CR_DATA_NREFS;
}

/* The key a call's store step links its entry under: the record's bytes
 * (arg: where the one argument is, or 0). */
static void store_key(const cr_call *call, int arg, cr_key *key) {
  key->bytes = call->key;
  key->len = call->keylen;
  key->hash = call->hash;
  key->is_digest = call->is_digest;
  key->bufs = NULL;
  key->arg = arg;
}

/* The store step of a computation: stores the n values above base (a
 * failure result when `failure`, kept for failure_ttl); a cache_data
 * computation stores instead the `count` values at `first` that
 * encode_result pushed, `bytes` long. Every callback
 * (clock, widget source) and every allocation runs first; then the call's
 * store is read again, since a clear or end_session meanwhile detaches the
 * call (its values are returned, not stored), and the entry is linked with
 * no Lua code in between. The recording stays with the call frame until
 * the entry takes it: if anything here raises, the frame's to-be-closed
 * slot ends the call and frees it. */
static void store_result(lua_State *L, int base, cr_call *call, int n, int failure, int first, int count,
                         size_t bytes) {
  cr_cache *c = call->cache;
  cr_key key;
  int argkey = 0, ids = 0;
  double now = 0;
  if ((failure ? c->failure_ttl : c->ttl) != HUGE_VAL) {
    now = cr_now(L, call->S);
    /* an entry found in the store lives what is left of its ttl */
    if (call->from_store && call->lifetime < c->ttl) now -= c->ttl - call->lifetime;
  }
  store_key(call, base == 3 ? 2 : 0, &key); /* one argument, at 2: [1] the cr_func, [base] the call */
  if (call->argkey_set && lua_getiuservalue(L, base, 3) == LUA_TSTRING) { /* the call was keyed with widgets */
    key.arg = 0;
    argkey = lua_gettop(L);
    if (call->kind == CR_REFRESH_BG) { /* a refresh keeps the key it refreshes */
      lua_newtable(L);
      ids = lua_gettop(L);
    } else {
      ids = widget_store_key(L, call, argkey, &key);
    }
    cr_widget_sets_push(L, c, 1); /* the commit needs it: made here, where Lua may run */
  }
  if (call->store)
    cr_store_insert(L, call->store, &key, c->data ? first : base + 1, c->data ? count : n, bytes,
                    &call->recording, failure, now, argkey, ids);
  cr_key_done(&key);
  if (argkey) cr_widget_sets_trim(L, c, call); /* made for an entry that was not stored */
}

/* Stores a failure result kept for failure_ttl: cache_data keeps a copy,
 * when it has one (one that cannot be copied is returned, not kept). */
static void store_copied(lua_State *L, int base, cr_call *call, int n, int failure) {
  size_t bytes = 0;
  int top = lua_gettop(L), count;
  if (!call->cache->data) {
    store_result(L, base, call, n, failure, 0, 0, 0);
    return;
  }
  count = encode_result(L, call, base + 1, n, &bytes);
  if (count && call->store) store_result(L, base, call, n, failure, lua_gettop(L) - count + 1, count, bytes);
  lua_settop(L, top);
}

/* A result Lua calls a failure: nil followed by a value that is not nil. */
static int is_failure(lua_State *L, int base, int n) {
  return n >= 2 && lua_isnil(L, base + 1) && !lua_isnil(L, base + 2);
}

/* The computation raised (error object on top) or returned a failure (n
 * values above base). A background refresh keeps the stale entry. A
 * recompute of a stale entry serves it if it is still within max_stale.
 * Otherwise the caller gets the error or the failure, which is kept for
 * failure_ttl when that is set. Waiters are woken either way: one of them
 * computes next. */
static int compute_failed(lua_State *L, int base, cr_call *call, int raised, int n) {
  cr_cache *c = call->cache;
  int err = raised ? lua_gettop(L) : base + 2;
  cr_entry *e = NULL;
  double now = 0;
  if (call->kind == CR_REFRESH_BG) {
    cr_refresh_failed(L, call, err);
    cr_call_finish(L, call);
    return 0;
  }
  if (call->stale_ok && call->store) {
    now = cr_now(L, call->S);
    if (call->store) e = cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest);
  }
  if (e && !e->failure && now < e->expires_at) {
    cr_refresh_fallback(L, call, err, now);
    /* still linked, so a session ending meanwhile detaches it: call->store
     * is valid or NULL below */
    call->computing = 0;
    cr_replay_free_frame(L, call);
    cr_sched_wake(L, call);
    e = call->store ? cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest) : NULL;
    if (e && !e->failure && now < e->expires_at) {
      lua_settop(L, base);
      return hit(L, call, e, 1);
    }
    call_unlink(call);
  } else {
    if (call->kind == CR_REFRESH_FG) c->refresh_failures++;
    else c->failures++;
    if (!raised && c->failure_ttl > 0 && call->store) store_copied(L, base, call, n, 1);
    cr_call_finish(L, call);
  }
  if (raised) return lua_error(L); /* the error object, unchanged */
  lua_settop(L, base + n);
  return n;
}

static int resume(lua_State *L, int status, lua_KContext ctx) {
  int base = (int)(ctx / 8), phase = (int)(ctx % 8), n;
  cr_call *call = (cr_call *)lua_touserdata(L, base);
  /* a coroutine suspended in a call, resumed by a finalizer at lua_close:
   * the caches the call points at are gone */
  cr_check_open(L, call->S);
  switch (phase) {
    case PHASE_WAIT:
    case PHASE_GENERATION: /* the check reports its own failures */
      lua_settop(L, base);
      return lookup(L, base, call);
    case PHASE_VALIDATE: {
      int ok = status == LUA_OK || status == LUA_YIELD;
      cr_entry *e = NULL;
      if (!ok) { /* reported, then taken as false */
        const char *msg = cr_error_text(L, -1);
        lua_pushfstring(L, "cache_resource: validate of %s raised an error (%s); the entry is dropped and "
                           "recomputed", call->cache->name, msg);
        cr_report(L, lua_tostring(L, -1));
        lua_pop(L, 3);
        lua_pushboolean(L, 0);
      }
      ok = lua_toboolean(L, -1);
      lua_pop(L, 1);
      if (call->store) e = cr_store_find(call->store, call->hash, call->key, call->keylen, call->is_digest);
      if (e && e->gen != call->gen) e = NULL; /* replaced while validate yielded */
      if (ok && call->validating_stale) { /* the stale rules decide, without validating again */
        call->validated = call->gen;
        lua_settop(L, base);
        return lookup(L, base, call);
      }
      if (ok) {
        if (e) cr_store_touch(e->store, e);
        call->cache->hits++;
        return finish_hit(L, call, e ? e->replay : NULL);
      }
      if (e) cr_entry_release(L, e, CR_DROP);
      lua_settop(L, base);
      return lookup(L, base, call);
    }
    default: /* PHASE_COMPUTE */
      call->computing = 0;
      call->owner = NULL;
      call->storing = 1; /* a clear from here on still keeps the values out */
      if (call->spinner) {
        call->spinner = 0;
        spinner_event(L, call, 0, 0);
      }
      if (status != LUA_OK && status != LUA_YIELD) return compute_failed(L, base, call, 1, 1);
      n = lua_gettop(L) - base;
      if (call->cache->persist_ref != LUA_NOREF && cr_persist_took(L, base + 1, &n, &call->lifetime)) {
        call->from_store = 1;
        call->cache->store_hits++;
      }
      if (is_failure(L, base, n)) return compute_failed(L, base, call, 0, n);
      if (call->cache->data) { /* what is not copyable fails like a raise, and is not stored */
        size_t bytes = 0;
        int count = encode_result(L, call, base + 1, n, &bytes);
        if (count == 0) return compute_failed(L, base, call, 1, 1);
        /* counted from the top: a boxed set of codec buffers (an encoding
         * already running, from a finalizer) may sit below them */
        if (call->store) store_result(L, base, call, n, 0, lua_gettop(L) - count + 1, count, bytes);
      } else if (call->store) {
        store_result(L, base, call, n, 0, 0, 0, 0);
      }
      cr_call_finish(L, call); /* after storing: woken waiters find the entry */
      if (call->kind == CR_REFRESH_BG) return 0;
      lua_settop(L, base + n);
      if (call->untracked) pool_put(L, base, call); /* no to-be-closed slot will */
      return n;
  }
}

/* ---- entry points ---------------------------------------------------- */

static void infer_name(lua_State *L, cr_cache *c) {
  lua_Debug ar;
  c->name_fixed = 1;
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name && ar.name[0] != '?') {
    size_t len = strlen(ar.name) + 1;
    char *name = (char *)malloc(len);
    if (name == NULL) return;
    memcpy(name, ar.name, len);
    free(c->name);
    c->name = name;
  }
}

/* Fills a call record for cache c and a key (copied in): unlinked,
 * owning nothing yet. */
static void call_init(cr_call *call, cr_cache *c, uint64_t hash, const unsigned char *key, size_t keylen,
                      int is_digest) {
  memset(call, 0, sizeof *call);
  call->S = c->S;
  call->cache = c;
  call->hash = hash;
  call->keylen = keylen;
  call->is_digest = is_digest;
  call->results_ref = call->widgets_ref = LUA_NOREF;
  memcpy(call->key, key, keylen);
}

/* A miss's call record: from the pool when it has one and the key fits. */
static cr_call *miss_call(lua_State *L, cr_cache *c, const cr_key *key) {
  cr_call *call;
  if (key->len > CR_CALL_POOL_KEY || c->persist_ref != LUA_NOREF) /* see the pool's comment */
    return cr_call_new(L, c, key->hash, key->bytes, key->len, key->is_digest);
  call = pool_take(L, c->S);
  if (call == NULL) {
    call = (cr_call *)lua_newuserdatauv(L, sizeof *call + CR_CALL_POOL_KEY, 3);
    luaL_setmetatable(L, CR_CALL_MT);
  }
  call_init(call, c, key->hash, key->bytes, key->len, key->is_digest);
  call->poolable = 1;
  return call;
}

/* Pushes a new call record of cache c for a key (copied in), unlinked and
 * owning nothing yet. The allocation may run finalizers: key bytes must
 * not live in buffers they could reuse (the caller keeps them busy). */
cr_call *cr_call_new(lua_State *L, cr_cache *c, uint64_t hash, const unsigned char *key, size_t keylen,
                     int is_digest) {
  cr_call *call = (cr_call *)lua_newuserdatauv(L, sizeof *call + keylen, 3);
  call_init(call, c, hash, key, keylen, is_digest);
  luaL_setmetatable(L, CR_CALL_MT);
  return call;
}

/* ---- a miss where nothing can yield ----------------------------------
 *
 * Where fn cannot yield (the main thread, or a coroutine under a C call),
 * a miss starts and ends inside this C call, so its record needs no Lua
 * object: it lives in quick_miss's C frame, linked in S->calls only while
 * fn runs (others see the key being computed, a clear or end_session
 * detaches it, UI calls record into it). The hazard is an error leaving
 * S->calls pointing into a dead frame, so the record is unlinked before
 * anything that can raise: fn runs protected, and the store step comes
 * after the unlink. Nothing is lost by that: the store step runs no Lua
 * code before its entry is linked (the C clock only; with a Lua clock the
 * general path runs), so no clear can fall between fn's return and the
 * commit. A frame that recorded UI calls is stored protected, so that an
 * error there (out of memory) frees what it recorded. */

/* Stores a quick miss's n values at first (a failure result when
 * `failure`); arg: where the one argument is, or 0. */
static void quick_store(lua_State *L, cr_call *call, int first, int n, int failure, int arg) {
  cr_cache *c = call->cache;
  cr_key key;
  double now = (failure ? c->failure_ttl : c->ttl) != HUGE_VAL ? cr_now(L, call->S) : 0; /* the C clock */
  store_key(call, arg, &key);
  cr_store_insert(L, call->store, &key, first, n, 0, &call->recording, failure, now, 0, 0);
}

/* quick_store under lua_pcall: [1] the record, [2] failure, [3..] the values. */
static int quick_store_protected(lua_State *L) {
  quick_store(L, (cr_call *)lua_touserdata(L, 1), 3, lua_gettop(L) - 2, lua_toboolean(L, 2), 0);
  return 0;
}

/* Can a miss of c, whose key is len bytes, run as a quick miss? */
static inline int quick_ok(lua_State *L, const cr_state *S, const cr_cache *c, size_t len) {
  return c->quick_miss && len <= CR_CALL_POOL_KEY && !lua_isyieldable(L) &&
         !(c->show_spinner && S->spinner_ref != LUA_NOREF) &&
         (S->clock_ref == LUA_NOREF || (c->ttl == HUGE_VAL && (c->failure_ttl <= 0 || c->failure_ttl == HUGE_VAL)));
}

/* A miss of key in st (which has no entry for it), the nargs arguments at
 * 1..: returns what the call returns, or -1 when another call computes the
 * same key (the general path decides then; key is untouched). */
static int quick_miss(lua_State *L, cr_func *f, cr_store *st, int nargs, cr_key *key) {
  union { /* a record with room for its key */
    cr_call call;
    unsigned char room[sizeof(cr_call) + CR_CALL_POOL_KEY];
  } rec;
  cr_call *call = &rec.call;
  cr_cache *c = f->cache;
  cr_state *S = f->S;
  int i, top, n, failure;
  call_init(call, c, key->hash, key->bytes, key->len, key->is_digest);
  call->store = st;
  if (find_owner(S, call)) return -1;
  cr_key_done(key); /* copied: nothing below reads it, and a raise below leaves the buffers free */
  luaL_checkstack(L, nargs + 4, "cache_resource: too many arguments"); /* before it is linked */
  top = lua_gettop(L);
  lua_getiuservalue(L, lua_upvalueindex(1), 1); /* fn */
  for (i = 1; i <= nargs; i++) lua_pushvalue(L, i);
  call->computing = 1;
  call->owner = L;
  call_link(S, call);
  c->misses++;
  i = lua_pcall(L, nargs, LUA_MULTRET, 0);
  call_unlink(call); /* from here on nothing points into this frame */
  if (i != LUA_OK) { /* fn raised: the error object, unchanged */
    c->failures++;
    cr_replay_free_frame(L, call);
    cr_sched_wake(L, call);
    return lua_error(L);
  }
  n = lua_gettop(L) - top;
  failure = is_failure(L, top, n);
  if (failure) c->failures++;
  if (call->store && (!failure || c->failure_ttl > 0)) {
    if (call->recording == NULL && call->results_ref == LUA_NOREF && call->widgets_ref == LUA_NOREF) {
      quick_store(L, call, top + 1, n, failure, nargs == 1 ? 1 : 0);
    } else if (!lua_checkstack(L, n + 3)) { /* not luaL_checkstack: the frame is freed first */
      cr_replay_free_frame(L, call);
      cr_error(L, "cache_resource: too many values to store");
    } else {
      lua_pushcfunction(L, quick_store_protected);
      lua_pushlightuserdata(L, call);
      lua_pushboolean(L, failure);
      for (i = 1; i <= n; i++) lua_pushvalue(L, top + i);
      if (lua_pcall(L, n + 2, 0, 0) != LUA_OK) {
        cr_replay_free_frame(L, call);
        return lua_error(L);
      }
    }
  }
  cr_replay_free_frame(L, call); /* what the entry did not take */
  cr_sched_wake(L, call);        /* nobody can wait on it (its owner runs), but should one */
  return n;
}

static int slow_path(lua_State *L, cr_func *f, int nargs, cr_key *key, int check, double now) {
  cr_cache *c = f->cache;
  cr_state *S = c->S;
  int base = nargs + 2, argkey = 0;
  cr_call *call;
  if (c->allow_widgets) {
    push_argkey(L, key);
    argkey = lua_gettop(L);
    cr_key_done(key);
    widget_lookup_key(L, c, argkey, key);
  }
  /* key->bufs stays busy until the bytes are copied: a finalizer run by
   * this allocation may serialize another key meanwhile */
  call = miss_call(L, c, key);
  cr_key_done(key);
  if (argkey) {
    lua_pushvalue(L, argkey);
    lua_setiuservalue(L, -2, 3);
    call->argkey_set = 1;
  }
  if (lua_gettop(L) > base) { /* key buffers or widget tables sat above the args */
    lua_replace(L, base);
    lua_settop(L, base);
  }
  call->store = cr_store_for(L, c, 1);
  call_link(S, call);
  if (check && c->persist_ref != LUA_NOREF) { /* the store's generation first: a clear elsewhere drops entries */
    int n = cr_persist_push_check(L, c, now);
    return resume(L, lua_pcallk(L, n, 0, 0, CTX(base, PHASE_GENERATION), resume), CTX(base, PHASE_GENERATION));
  }
  return lookup(L, base, call);
}

/* A hit that needs nothing but the entry: recency, count, values, replay. */
static inline int fast_hit(lua_State *L, cr_state *S, cr_store *st, cr_entry *e) {
  cr_cache *c = st->cache;
  cr_store_touch(st, e);
  c->hits++;
  if (e->replay == NULL && !c->data) { /* values only: pushed here, without a call */
    cr_push_values(L, e);
    return e->nvalues;
  }
  return push_and_replay(L, S, e);
}

/* A cached function: a C closure over this function, upvalue 1 its
 * cr_func. Arguments start at 1; a call that leaves the fast path moves the
 * cr_func into slot 1 so the slow path's layout is [1] cr_func, [2..] args. */
static int general_path(lua_State *L, int nargs, int front_missed);

/* True when no entry in the process has expired. Only the C clock is read
 * here: it runs no Lua code, so an entry found before stays valid (with a
 * Lua clock this says no and the general path reads it). */
static inline int nothing_expired(lua_State *L, cr_state *S) {
  return S->heap_len == 0 || (S->clock_ref == LUA_NOREF && S->heap[0]->expires_at > cr_now(L, S));
}

/* Looks the one argument up in the front index (upvalue 2): pushes what it
 * finds and returns its type — a light userdata entry, the value itself,
 * or nil — or returns LUA_TNONE, pushing nothing, when the argument is not
 * indexable (floats never are). */
static inline int front_lookup(lua_State *L) {
  int t = lua_type(L, 1);
  if (!(t == LUA_TSTRING || t == LUA_TBOOLEAN || (t == LUA_TNUMBER && lua_isinteger(L, 1)))) return LUA_TNONE;
  lua_pushvalue(L, 1);
  return lua_rawget(L, lua_upvalueindex(2));
}

int cr_func_call(lua_State *L) {
  int nargs = lua_gettop(L), front_missed = 0;
  if (nargs == 1) { /* one string/integer/boolean: the front index, before anything else */
    int found = front_lookup(L);
    if (found == LUA_TLIGHTUSERDATA) {
      cr_entry *e = (cr_entry *)lua_touserdata(L, 2);
      cr_store *st = e->store;
      cr_state *S = st->cache->S;
      if (nothing_expired(L, S)) return fast_hit(L, S, st, e); /* the argument and the lookup stay below */
    } else if (found == LUA_TNIL) {
      front_missed = 1;
    } else if (found != LUA_TNONE) { /* the value itself */
      cr_func *f = (cr_func *)lua_touserdata(L, lua_upvalueindex(1));
      if (!f->S->closed && nothing_expired(L, f->S)) {
        f->cache->hits++;
        return 1;
      }
    }
    lua_settop(L, 1);
  } else if (nargs == 0) { /* no argument: the cache's pointer to its entry */
    cr_func *f = (cr_func *)lua_touserdata(L, lua_upvalueindex(1));
    cr_state *S = f->S;
    cr_cache *c = f->cache;
    cr_entry *e;
    if (!S->closed && c->front_ok && (e = c->front_empty) != NULL && nothing_expired(L, S))
      return fast_hit(L, S, c->global, e);
  } else { /* several scalars: their key and one probe, where the front index could be used */
    cr_func *f = (cr_func *)lua_touserdata(L, lua_upvalueindex(1));
    cr_state *S = f->S;
    cr_cache *c = f->cache;
    cr_key key;
    cr_entry *e;
    unsigned char buf[CR_KEY_INLINE_MAX];
    /* front_ok: global scope, no hash_funcs, validate, widgets, max_stale or
     * persist; nothing expired: every entry is fresh. cr_key_scalars runs
     * no Lua code, so the entry found is valid. */
    if (!S->closed && c->front_ok && c->global && c->name_fixed && nothing_expired(L, S) &&
        cr_key_scalars(L, S, f, 1, nargs, &key, buf) &&
        (e = cr_store_find(c->global, key.hash, key.bytes, key.len, 0)) != NULL) {
      if (e->replay || c->data) return fast_hit(L, S, c->global, e);
      cr_store_touch(c->global, e); /* fast_hit's plain case, written out: the compiler */
      c->hits++;                    /* does not inline it at this site */
      cr_push_values(L, e);
      return e->nvalues;
    }
  }
  return general_path(L, nargs, front_missed);
}

/* The one argument looked up in a session store's front index: pushes
 * what it finds and returns its type, or LUA_TNONE (nothing pushed) when
 * the argument is not indexable. */
static int session_lookup(lua_State *L, const cr_store *st) {
  int t = lua_type(L, 1);
  if (!(t == LUA_TSTRING || t == LUA_TBOOLEAN || (t == LUA_TNUMBER && lua_isinteger(L, 1)))) return LUA_TNONE;
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->front_ref);
  lua_pushvalue(L, 1);
  return lua_rawget(L, -2);
}

/* A hit through st's index, for the one argument: returns how many values
 * it returns, or -1 when the index has nothing for it (the caller resets
 * the stack). */
static inline int session_front_hit(lua_State *L, cr_state *S, cr_store *st) {
  cr_entry *e;
  switch (session_lookup(L, st)) {
    case LUA_TNONE: case LUA_TNIL: return -1;
    case LUA_TLIGHTUSERDATA:
      e = (cr_entry *)lua_touserdata(L, -1);
      lua_settop(L, 1);
      return fast_hit(L, S, st, e);
    default: st->cache->hits++; return 1; /* the value itself */
  }
}

/* A cached function of a session cache: the index of the store of the
 * current session (the one found last) first, as cr_func_call reads the
 * global one; its global index stays empty, so it is never read. */
int cr_func_call_session(lua_State *L) {
  int nargs = lua_gettop(L);
  if (nargs <= 1) {
    cr_func *f = (cr_func *)lua_touserdata(L, lua_upvalueindex(1));
    cr_state *S = f->S;
    cr_cache *c = f->cache;
    cr_store *st = c->last_store;
    cr_entry *e;
    int n;
    if (!S->closed && c->front_session && !f->any_skip && st && S->current && st->session == S->current &&
        nothing_expired(L, S)) {
      if (nargs == 0) {
        if ((e = st->front_empty) != NULL) return fast_hit(L, S, st, e);
      } else if (st->front_ref != LUA_NOREF && (n = session_front_hit(L, S, st)) >= 0) {
        return n;
      }
      lua_settop(L, nargs);
    }
  }
  return general_path(L, nargs, 1);
}

/* Everything but a one-argument front hit: kept apart so that path's frame
 * stays small. */
static int general_path(lua_State *L, int nargs, int front_missed) {
  cr_func *f;
  cr_state *S;
  cr_cache *c;
  cr_store *st;
  cr_entry *e;
  cr_key key;
  unsigned char buf[CR_KEY_INLINE_MAX];
  int check, n;
  double now = -HUGE_VAL; /* with an empty heap no entry can be stale */
  f = (cr_func *)lua_touserdata(L, lua_upvalueindex(1));
  S = f->S;
  if (S->closed)
    cr_error(L, "cache_resource: a cached function was called after the module was closed "
                         "(from a finalizer running at lua_close)");
  c = f->cache;
  if (S->heap_len || c->persist_ref != LUA_NOREF) { /* one comparison unless something has expired */
    now = cr_now(L, S);
    /* the clock may be Lua code that released entries: read the heap again */
    if (S->heap_len && S->heap[0]->expires_at <= now) cr_sweep(L, S, now);
  }
  check = cr_persist_due(c, now); /* persisted: a hit too reads the generation once a second */
  if (!c->name_fixed) infer_name(L, c); /* first call: errors below may need it */
  if (c->front_ok) { /* the index again: the clock or a sweep may have changed it */
    if (nargs == 0) {
      if ((e = c->front_empty) != NULL) return fast_hit(L, S, c->global, e);
    } else if (nargs == 1 && !front_missed) { /* a skipped first parameter has an empty index */
      switch (front_lookup(L)) {
        case LUA_TNONE: break;
        case LUA_TNIL: lua_settop(L, 1); break;
        case LUA_TLIGHTUSERDATA: return fast_hit(L, S, c->global, (cr_entry *)lua_touserdata(L, 2));
        default: c->hits++; return 1; /* the value itself */
      }
    }
  } else if (c->front_session && nargs <= 1 && !f->any_skip && S->current) {
    st = cr_store_for(L, c, 0); /* the session's store, if it has one: runs no Lua code */
    if (st && nargs == 0 && (e = st->front_empty) != NULL) return fast_hit(L, S, st, e);
    if (st && nargs == 1 && st->front_ref != LUA_NOREF && (n = session_front_hit(L, S, st)) >= 0) return n;
    lua_settop(L, nargs);
  }
  if (c->session_scope && S->current == NULL) cr_store_for(L, c, 0); /* raises: no session */
  if (c->hash_funcs_ref != LUA_NOREF || !cr_key_scalars(L, S, f, 1, nargs, &key, buf))
    cr_key_for_call(L, S, f, lua_upvalueindex(1), 1, nargs, &key);
  /* looked up after hashing: a finalizer run meanwhile may have ended a session */
  st = c->session_scope ? cr_store_for(L, c, 0) : c->global;
  if (!c->hit_slow && !check) {
    e = st ? cr_store_find(st, key.hash, key.bytes, key.len, key.is_digest) : NULL;
    if (e && e->stale_at > now) { /* a stale entry takes the slow path */
      cr_key_done(&key);
      return fast_hit(L, S, st, e);
    }
    if (e == NULL && quick_ok(L, S, c, key.len)) {
      if (st == NULL) st = cr_store_for(L, c, 1); /* the first miss: memory only */
      if ((n = quick_miss(L, f, st, nargs, &key)) >= 0) return n;
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  return slow_path(L, f, nargs, &key, check, now);
}

/* The key a call of f with the nargs arguments at first.. would look up,
 * widget values included, so clear and peek find what a call would hit.
 * fidx: where f's cr_func is. May leave temporaries on the stack. */
void cr_call_key(lua_State *L, cr_func *f, int fidx, int first, int nargs, cr_key *key) {
  cr_key_for_call(L, f->S, f, fidx, first, nargs, key);
  if (f->cache->allow_widgets) {
    push_argkey(L, key);
    cr_key_done(key);
    widget_lookup_key(L, f->cache, lua_gettop(L), key);
  }
}
