/* The front index: the hit path for the commonest calls — no argument, or
 * one string, integer or boolean argument (a connection by URL, a model by
 * name) — finds the entry before any serialization or hashing.
 *
 * Per cache, for its global store: `front_empty` points at the entry of
 * the empty key, and a Lua table (upvalue 2 of every cached function of the
 * cache) maps the raw argument to a light userdata of its entry — or, when
 * no hit needs the entry (no max_entries, so no recency to refresh; one
 * value, not nil and not a light userdata; nothing to replay), straight to
 * the value: a hit in a big cache then touches one table node, like a plain
 * Lua table, instead of the node, the entry and the registry. Floats are
 * never indexed (a table would merge 1 and 1.0, which are different keys).
 * A session cache has the same per session store instead (st->front_empty,
 * st->front_ref), read by cr_func_call_session for the current session and
 * dropped when the session ends.
 *
 * The call path reads the table first thing, before it even looks at the
 * cache, so the table itself must be right: it is empty while the cache's
 * options rule the index out (cr_front_reset), a closure whose first
 * parameter is skipped gets an empty table of its own (cr_wrap), and the
 * state empties every table that maps entries when it closes.
 *
 * Invariant: a mapping exists only while its entry is alive in the global
 * store. cr_front_add (from cr_store_insert) maps an entry after a step that
 * may run Lua code (pushing the key value may collect garbage and run
 * finalizers), so it finds the entry again by its key before mapping it;
 * cr_front_forget (from cr_entry_release) runs once the entry is already
 * unlinked and freed, and only ever clears a mapping (whatever it holds by
 * then: removing one is always safe). Losing a mapping only sends calls
 * down the general path, which finds the same entry. */
/*
 * Ballast. A table whose keys come and go at a steady count (a cache at
 * max_entries: every miss evicts one key and adds another) rehashes on a
 * schedule set by that count. Lua takes a new node for a key only from
 * below its `lastfree` mark, a removed key's node stays dead until the
 * next rehash, and a rehash sizes the node array to the power of two just
 * above the live keys: 1,000 live keys get 1,024 nodes, 24 free ones, and
 * a rehash of all of them every few dozen misses (at 700 keys, 324 free:
 * a cliff that depends on where the count falls against a power of two).
 * So a bounded cache's table also holds ballast, keys no call can look up
 * (odd light userdata; lookups are by string, integer or boolean), so that
 * live keys + ballast sit just above a power of two P (at most 1.25 P): a
 * rehash then sizes the node array to 2 P and leaves at least 3/8 of it
 * free, and its cost is spread over as many misses. A count that leaves
 * that band moves the ballast back into it: 700 live keys filled from
 * empty end with 383 ballast keys (1,083 in 2,048 nodes), 1,000, 1,024
 * and 1,100 with 126. The ballast follows the count both ways (a clear takes
 * it away again) and goes with cr_front_reset. */
#include <string.h>
#include "cr.h"

/* Keeps c's table (at idx) in shape for churn, as the header says. Only
 * rawsets of light userdata keys: no allocation that could collect. */
static void front_balance(lua_State *L, cr_cache *c, int idx) {
  size_t n = c->front_count, total = n + c->front_ballast, below, want = n;
  if (c->max_entries <= 0 || (n < 64 && c->front_ballast == 0)) return; /* small tables rehash cheaply */
  if (total > c->front_below && total <= c->front_below + c->front_below / 4 + 1) return; /* in shape */
  if (n >= 64) {
    for (below = 32; below * 2 < n; below *= 2) continue; /* below < n <= 2 below */
    if (n > below + below / 4) want = 2 * below + 1;
  }
  for (; c->front_ballast < want - n; c->front_ballast++) {
    lua_pushlightuserdata(L, (void *)(uintptr_t)(2 * (c->front_ballast + 1) + 1));
    lua_pushboolean(L, 1);
    lua_rawset(L, idx); /* may grow the table: nothing runs */
  }
  for (; c->front_ballast > want - n; c->front_ballast--) {
    lua_pushlightuserdata(L, (void *)(uintptr_t)(2 * c->front_ballast + 1));
    lua_pushnil(L);
    lua_rawset(L, idx);
  }
  for (below = 1; below * 2 < want; below *= 2) continue;
  c->front_below = below;
}

/* Pushes the raw value keyed by e's key bytes (copied to keybuf) if it is
 * an indexable single scalar whose key serializes back to exactly those
 * bytes. */
static int push_front_value(lua_State *L, cr_state *S, const unsigned char *key, size_t len) {
  static const cr_func plain; /* no skipped parameters */
  unsigned char buf[CR_KEY_INLINE_MAX];
  cr_key again;
  if (!cr_key_push_single(L, key, len)) return 0;
  if (!cr_key_scalars(L, S, &plain, lua_gettop(L), 1, &again, buf) || again.len != len ||
      memcmp(again.bytes, key, len) != 0) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Whether the index may hold the argument at arg: the key was made from
 * it alone, so only its type and length are left to check. */
static int front_arg_ok(lua_State *L, int arg) {
  switch (lua_type(L, arg)) {
    case LUA_TSTRING:
      if (lua_rawlen(L, arg) > CR_FRONT_MAX_STRING) return 0;
      break;
    case LUA_TNUMBER:
      if (!lua_isinteger(L, arg)) return 0;
      break;
    case LUA_TBOOLEAN: break;
    default: return 0;
  }
  return 1;
}

/* Maps e, just linked in st; arg is the stack index of the one raw argument
 * its key was made from, or 0 (the key is decoded back to a value then). */
void cr_front_add(lua_State *L, cr_store *st, cr_entry *e, int arg) {
  cr_cache *c = st->cache;
  unsigned char key[CR_FRONT_MAX_KEY];
  size_t len = e->keylen;
  uint64_t hash = e->hash;
  int global = st == c->global;
  if (e->is_digest || !(global ? c->front_ok : c->front_session)) return;
  if (len == 0) {
    if (global) c->front_empty = e;
    else st->front_empty = e;
    e->front = CR_FRONT_EMPTY;
    return;
  }
  if (len > sizeof key || (global && c->front_ref == LUA_NOREF)) return;
  /* copied while e is sure to be there: the key is decoded below after an
   * allocation (a session store's first table, or none from the argument) */
  if (!arg || (!global && st->front_ref == LUA_NOREF)) memcpy(key, CR_ENTRY_KEY(e), len);
  luaL_checkstack(L, 4, "cache_resource: front index");
  if (!global && st->front_ref == LUA_NOREF) { /* a session store's first mapping makes its table */
    lua_newtable(L); /* may run finalizers: st is pinned by the insert, but may have ended */
    if (st->dead || !c->front_session || st->front_ref != LUA_NOREF) {
      lua_pop(L, 1);
      return;
    }
    st->front_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    arg = 0; /* e is found again below */
  }
  if (arg) { /* no allocation: e stands */
    if (!front_arg_ok(L, arg)) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, global ? c->front_ref : st->front_ref);
    lua_pushvalue(L, arg);
  } else {
    if (!push_front_value(L, c->S, key, len)) return;
    /* the push may have run finalizers (which may even re-wrap the cache with
     * options that rule the index out, or end st's session): check again,
     * find the entry again */
    e = NULL;
    if (global ? c->front_ok && c->global == st : c->front_session && !st->dead && st->front_ref != LUA_NOREF)
      e = cr_store_find(st, hash, key, len, 0);
    if (e == NULL) {
      lua_pop(L, 1);
      return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, global ? c->front_ref : st->front_ref);
    lua_insert(L, -2);
  }
  e->front = CR_FRONT_TABLE;
  if (c->front_values && e->nvalues == 1 && e->replay == NULL) { /* checked after the push too */
    int t = lua_rawgeti(L, LUA_REGISTRYINDEX, e->refs[0]);
    if (t != LUA_TNIL && t != LUA_TLIGHTUSERDATA) e->front = CR_FRONT_VALUE;
    else lua_pop(L, 1);
  }
  if (e->front == CR_FRONT_TABLE) {
    lua_pushlightuserdata(L, e);
    if (global) c->front_pointers = 1;
  }
  if (global && c->max_entries > 0) { /* ballast is for bounded caches: they count their mappings */
    c->front_count++;
    /* entries come and go here: a string key is kept to be pushed again when
     * the entry goes, instead of interned anew (a walk through the string
     * table, the slowest part of an eviction) */
    if (lua_type(L, -2) == LUA_TSTRING && e->front_key_ref == LUA_NOREF) {
      lua_pushvalue(L, -2);
      e->front_key_ref = cr_ref(L, &c->S->refpool); /* no collection: may only grow the registry */
    }
  }
  lua_rawset(L, -3); /* no allocation that could collect: a new slot may grow the table, nothing runs */
  if (global) front_balance(L, c, lua_gettop(L));
  lua_pop(L, 1);
}

/* Called by cr_entry_release before it unlinks e: what to forget later.
 * No Lua code runs between the two, so the index's reference stays the
 * one noted (a session store's goes only when its session ends). */
void cr_front_note(cr_entry *e, cr_front_gone *gone) {
  cr_store *st = e->store;
  cr_cache *c = st->cache;
  gone->len = 0;
  gone->cache = c;
  gone->global = st == c->global;
  gone->ref = gone->global ? c->front_ref : st->front_ref;
  gone->key_ref = e->front_key_ref;
  e->front_key_ref = LUA_NOREF;
  if (e->front == CR_FRONT_EMPTY) {
    if (gone->global && c->front_empty == e) c->front_empty = NULL;
    if (!gone->global && st->front_empty == e) st->front_empty = NULL;
  }
  if ((e->front == CR_FRONT_TABLE || e->front == CR_FRONT_VALUE) && e->keylen <= sizeof gone->key) {
    gone->len = e->keylen;
    memcpy(gone->key, CR_ENTRY_KEY(e), e->keylen);
  }
}

/* After e is unlinked and freed: clear its mapping. The table is on the
 * stack before the key is pushed: should that allocation run a finalizer
 * that ends the session (and drops its index), the table is only an
 * orphan then. */
void cr_front_forget(lua_State *L, const cr_front_gone *gone) {
  cr_cache *c = gone->cache;
  int counted = gone->global && c->max_entries > 0;
  if (gone->len == 0 || gone->ref == LUA_NOREF) {
    cr_unref(L, &c->S->refpool, gone->key_ref);
    return;
  }
  luaL_checkstack(L, 4, "cache_resource: front index");
  lua_rawgeti(L, LUA_REGISTRYINDEX, gone->ref);
  if (gone->key_ref != LUA_NOREF) { /* the key itself: nothing to intern */
    lua_rawgeti(L, LUA_REGISTRYINDEX, gone->key_ref);
    cr_unref(L, &c->S->refpool, gone->key_ref);
  } else if (!cr_key_push_single(L, gone->key, gone->len)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  lua_rawset(L, -3);
  if (counted && c->front_count) { /* 0: mapped while the cache was unbounded, uncounted */
    c->front_count--;
    if (c->front_ref == gone->ref) front_balance(L, c, lua_gettop(L));
  }
  lua_pop(L, 1);
}

/* Removes every key of the table ref refers to. No allocation, so no Lua
 * code runs. */
static void clear_table(lua_State *L, int ref) {
  if (ref == LUA_NOREF) return;
  luaL_checkstack(L, 4, "cache_resource: front index");
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, -4); /* clearing a field during traversal is allowed */
  }
  lua_pop(L, 1);
}

/* Empties c's index: its options no longer allow it, or the state closes. */
void cr_front_reset(lua_State *L, cr_cache *c) {
  cr_entry *e;
  c->front_empty = NULL;
  /* no entry is mapped any more: the count of mappings starts again at 0 */
  for (e = c->global ? c->global->newest : NULL; e; e = e->older) e->front = CR_FRONT_NONE;
  c->front_count = c->front_ballast = c->front_below = 0;
  c->front_pointers = 0;
  clear_table(L, c->front_ref);
}

/* At lua_close, before c's entries are freed: a finalizer that runs later
 * may still call c's function, and the one read of the global index not
 * preceded by the closed check is that of an entry pointer (cr_func_call).
 * So only a table that has mapped entries is emptied; values, ballast and
 * session stores' indexes (read only once the state is known open) stay
 * until the state frees them, which spares an unbounded cache a walk over
 * every key. */
void cr_front_close(lua_State *L, cr_cache *c) {
  c->front_empty = NULL;
  if (c->front_pointers) clear_table(L, c->front_ref);
  c->front_pointers = 0;
}

/* Empties the index of each of c's session stores: its options no longer
 * allow them. */
void cr_front_reset_sessions(lua_State *L, cr_cache *c) {
  cr_store *st;
  for (st = c->session_stores; st; st = st->next_of_cache) {
    st->front_empty = NULL;
    clear_table(L, st->front_ref);
  }
}

/* A session store's index goes with its session (or at lua_close). */
void cr_front_drop(lua_State *L, cr_store *st) {
  st->front_empty = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, st->front_ref);
  st->front_ref = LUA_NOREF;
}
