/* Stores: per cache (and per session for scope "session") a chained hash
 * table of entries plus an LRU list; one process-wide min-heap orders every
 * expiring entry so "has anything expired?" is one comparison per call.
 * Sessions are found by id, and a cache's store of a session by the pair
 * (cache, session), through two hash maps of the module state: O(1) however
 * many sessions are live.
 *
 * Releasing an entry unlinks it from everything *before* any Lua code
 * (on_release) runs, and every loop that releases entries pins its store
 * and bounds itself to the entries present when it started (by their
 * generation), so callbacks may clear, end sessions, call cached functions
 * or re-warm the cache without leaving us a dangling pointer or an endless
 * loop. See the reentrancy rule in cr.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
/* inlined from the header, as in cr_key.c: the module does not link libxxhash */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "cr.h"

/* ---- expiry heap ----------------------------------------------------- */

static void heap_set(cr_state *S, size_t i, cr_entry *e) {
  S->heap[i] = e;
  e->heap_pos = i;
}

static void heap_up(cr_state *S, size_t i) {
  cr_entry *e = S->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (S->heap[parent]->expires_at <= e->expires_at) break;
    heap_set(S, i, S->heap[parent]);
    i = parent;
  }
  heap_set(S, i, e);
}

static void heap_down(cr_state *S, size_t i) {
  cr_entry *e = S->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= S->heap_len) break;
    if (c + 1 < S->heap_len && S->heap[c + 1]->expires_at < S->heap[c]->expires_at) c++;
    if (e->expires_at <= S->heap[c]->expires_at) break;
    heap_set(S, i, S->heap[c]);
    i = c;
  }
  heap_set(S, i, e);
}

/* Room for one more entry; raises before anything is linked. */
static void heap_reserve(lua_State *L, cr_state *S) {
  if (S->heap_len == S->heap_cap) {
    size_t cap = S->heap_cap ? S->heap_cap * 2 : 64;
    cr_entry **h = (cr_entry **)realloc(S->heap, cap * sizeof *h);
    if (h == NULL) cr_error(L, "cache_resource: out of memory (expiry heap)");
    S->heap = h;
    S->heap_cap = cap;
  }
}

static void heap_push(cr_state *S, cr_entry *e) {
  S->heap[S->heap_len++] = e;
  heap_up(S, S->heap_len - 1);
}

static void heap_remove(cr_state *S, cr_entry *e) {
  size_t i = e->heap_pos;
  cr_entry *last = S->heap[--S->heap_len];
  e->heap_pos = CR_NO_HEAP;
  if (last == e) return;
  heap_set(S, i, last);
  if (i > 0 && S->heap[(i - 1) / 2]->expires_at > last->expires_at) heap_up(S, i);
  else heap_down(S, i);
}

/* Releases what has expired by `now`. Bounded by the heap's size when it
 * starts: an on_release that stores entries expiring at once (ttl = 0)
 * cannot keep it going; what is left waits for the next call. */
size_t cr_sweep(lua_State *L, cr_state *S, double now) {
  size_t n = 0, budget = S->heap_len;
  while (n < budget && S->heap_len && S->heap[0]->expires_at <= now) {
    cr_entry_release(L, S->heap[0], CR_EXPIRE);
    n++;
  }
  return n;
}

/* ---- the (cache, session) -> store map -------------------------------- */

static size_t store_slot(const cr_state *S, const cr_cache *c, const cr_session *ss) {
  uint64_t h = (uint64_t)(uintptr_t)c * UINT64_C(0x9E3779B97F4A7C15) ^
               (uint64_t)(uintptr_t)ss * UINT64_C(0xC2B2AE3D27D4EB4F);
  h ^= h >> 31;
  return (size_t)(h & S->store_mask);
}

static cr_store *store_map_find(const cr_state *S, const cr_cache *c, const cr_session *ss) {
  cr_store *st;
  if (S->nstores == 0) return NULL;
  for (st = S->store_map[store_slot(S, c, ss)]; st; st = st->mnext)
    if (st->cache == c && st->session == ss) return st;
  return NULL;
}

/* Rehashes into n buckets (a power of two); keeps the old table when the
 * allocation fails (longer chains, still correct). */
static void store_map_resize(cr_state *S, size_t n) {
  cr_store **b = (cr_store **)calloc(n, sizeof *b), *st, *next;
  size_t i, old = S->store_map ? S->store_mask + 1 : 0;
  if (b == NULL) return;
  S->store_mask = n - 1;
  for (i = 0; i < old; i++)
    for (st = S->store_map[i]; st; st = next) {
      size_t k = store_slot(S, st->cache, st->session);
      next = st->mnext;
      st->mnext = b[k];
      b[k] = st;
    }
  free(S->store_map);
  S->store_map = b;
}

/* The map exists (cr_store_for made it); growing it may fail harmlessly. */
static void store_map_add(cr_state *S, cr_store *st) {
  size_t k;
  if (S->nstores >= S->store_mask + 1) store_map_resize(S, (S->store_mask + 1) * 2);
  k = store_slot(S, st->cache, st->session);
  st->mnext = S->store_map[k];
  S->store_map[k] = st;
  S->nstores++;
}

static void store_map_remove(cr_state *S, cr_store *st) {
  cr_store **pp = &S->store_map[store_slot(S, st->cache, st->session)];
  while (*pp != st) pp = &(*pp)->mnext;
  *pp = st->mnext;
  S->nstores--;
  if (S->store_mask >= 64 && S->nstores < (S->store_mask + 1) / 8) store_map_resize(S, (S->store_mask + 1) / 2);
}

/* ---- stores ---------------------------------------------------------- */

static cr_store *store_new(lua_State *L, cr_cache *c, cr_session *ss) {
  cr_store *st = (cr_store *)calloc(1, sizeof *st);
  if (st) st->buckets = (cr_entry **)calloc(8, sizeof *st->buckets);
  if (st == NULL || st->buckets == NULL) {
    free(st);
    cr_error(L, "cache_resource: out of memory (store)");
  }
  st->mask = 7;
  st->cache = c;
  st->session = ss;
  st->cleared_gen = c->S->next_gen; /* a clear running now has nothing to do here */
  st->front_ref = LUA_NOREF;
  return st;
}

static void store_free(cr_store *st) {
  free(st->spare);
  free(st->buckets);
  free(st);
}

void cr_store_unpin(cr_store *st) {
  if (--st->pins == 0 && st->dead) store_free(st);
}

cr_store *cr_store_for(lua_State *L, cr_cache *c, int create) {
  cr_state *S = c->S;
  cr_session *ss;
  cr_store *st;
  if (!c->session_scope) {
    if (c->global == NULL && create) c->global = store_new(L, c, NULL);
    return c->global;
  }
  ss = S->current;
  if (ss == NULL)
    cr_error(L, "%s: %s has scope 'session' but no session is set: call "
                  "cache_resource.set_session(id) first (the UI runtime does it for each run)",
               cr_kind(c), c->name);
  if (c->last_store && c->last_store->session == ss) return c->last_store;
  st = store_map_find(S, c, ss);
  if (st) return c->last_store = st;
  if (!create) return NULL;
  if (S->store_map == NULL) {
    store_map_resize(S, 16);
    if (S->store_map == NULL) cr_error(L, "cache_resource: out of memory (store map)");
  }
  st = store_new(L, c, ss);
  store_map_add(S, st);
  st->prev_of_cache = NULL;
  st->next_of_cache = c->session_stores;
  if (c->session_stores) c->session_stores->prev_of_cache = st;
  c->session_stores = st;
  st->next_of_session = ss->stores;
  ss->stores = st;
  return c->last_store = st;
}

/* Word-wise: keys are short, and a memcmp call costs more than comparing. */
static inline uint64_t load8(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline int same_bytes(const unsigned char *a, const unsigned char *b, size_t n) {
  size_t i;
  if (n < 8) {
    for (i = 0; i < n; i++)
      if (a[i] != b[i]) return 0;
    return 1;
  }
  for (i = 0; i + 8 < n; i += 8)
    if (load8(a + i) != load8(b + i)) return 0;
  return load8(a + n - 8) == load8(b + n - 8); /* the last word, overlapping the one before */
}

cr_entry *cr_store_find(cr_store *st, uint64_t hash, const unsigned char *key, size_t len, int is_digest) {
  cr_entry *e;
  for (e = st->buckets[hash & st->mask]; e; e = e->hnext)
    if (e->hash == hash && e->keylen == len && e->is_digest == is_digest && same_bytes(CR_ENTRY_KEY(e), key, len))
      return e;
  return NULL;
}

static void lru_unlink(cr_store *st, cr_entry *e) {
  if (e->newer) e->newer->older = e->older;
  if (e->older) e->older->newer = e->newer;
  /* by identity, not by the neighbours: the ends never point at an unlinked entry */
  if (st->newest == e) st->newest = e->older;
  if (st->oldest == e) st->oldest = e->newer;
}

static void lru_push(cr_store *st, cr_entry *e) {
  e->newer = NULL;
  e->older = st->newest;
  if (st->newest) st->newest->newer = e;
  else st->oldest = e;
  st->newest = e;
}

void cr_store_relink(cr_store *st, cr_entry *e) {
  lru_unlink(st, e);
  lru_push(st, e);
}

static void grow_buckets(cr_store *st) {
  size_t n = (st->mask + 1) * 2, i;
  cr_entry **b = (cr_entry **)calloc(n, sizeof *b);
  if (b == NULL) return; /* keep the longer chains; still correct */
  for (i = 0; i <= st->mask; i++) {
    cr_entry *e = st->buckets[i], *next;
    for (; e; e = next) {
      next = e->hnext;
      e->hnext = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  }
  free(st->buckets);
  st->buckets = b;
  st->mask = n - 1;
}

/* ---- widget sets ----------------------------------------------------- */

/* Pushes the cache's table of widget ids per argument key and returns 1;
 * without one, creates it when `create` (an allocation: Lua code may run)
 * or pushes nothing and returns 0. */
int cr_widget_sets_push(lua_State *L, cr_cache *c, int create) {
  if (c->widget_sets_ref == LUA_NOREF) {
    if (!create) return 0;
    lua_newtable(L);
    /* a finalizer run by that allocation may have made one meanwhile */
    if (c->widget_sets_ref == LUA_NOREF) {
      lua_pushvalue(L, -1);
      c->widget_sets_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->widget_sets_ref);
  return 1;
}

/* Is a call of c other than `self` in its store step? Between making sure
 * the widget sets exist and linking its entry, it counts on them. */
static int cache_storing(const cr_state *S, const cr_cache *c, const cr_call *self) {
  const cr_call *call;
  for (call = S->calls; call; call = call->next)
    if (call != self && call->cache == c && call->storing) return 1;
  return 0;
}

/* Drops c's widget sets when no argument key is left in them (a store
 * step made them, then stored nothing). */
void cr_widget_sets_trim(lua_State *L, cr_cache *c, const cr_call *self) {
  if (c->widget_keys == 0 && c->widget_sets_ref != LUA_NOREF && !cache_storing(c->S, c, self)) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->widget_sets_ref);
    c->widget_sets_ref = LUA_NOREF;
  }
}

/* Counts an entry stored under the argument key at argkey; `ids` is the
 * ids table its key was built from, put in place when the key has none
 * (the last entry of that key went while the store step ran). Uses no
 * allocating API call. Returns the ref the entry keeps, or LUA_NOREF. */
static int widget_count(lua_State *L, cr_cache *c, int argkey, int ids) {
  lua_Integer n;
  if (c->widget_sets_ref == LUA_NOREF) return LUA_NOREF; /* the caller made it: cannot happen */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->widget_sets_ref);
  lua_pushvalue(L, argkey);
  if (lua_rawget(L, -2) == LUA_TTABLE) {
    lua_rawgeti(L, -1, 0);
    n = lua_tointeger(L, -1) + 1;
    lua_pop(L, 1);
  } else { /* no entry has this key: the table's old count, if any, is stale */
    lua_pop(L, 1);
    lua_pushvalue(L, argkey);
    lua_pushvalue(L, ids);
    lua_rawset(L, -3);
    lua_pushvalue(L, ids);
    c->widget_keys++;
    n = 1;
  }
  lua_pushinteger(L, n);
  lua_rawseti(L, -2, 0);
  lua_pop(L, 2);
  lua_pushvalue(L, argkey);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The entry of argument key `ref` went: when it was the last one, the key
 * leaves the widget sets, and the table itself goes with its last key
 * (unless a call of the cache is in its store step, which uses it).
 * Uses no allocating API call. */
static void widget_uncount(lua_State *L, cr_cache *c, int ref) {
  if (c->widget_sets_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->widget_sets_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_Integer n;
      lua_rawgeti(L, -1, 0);
      n = lua_tointeger(L, -1) - 1;
      lua_pop(L, 1);
      if (n > 0) {
        lua_pushinteger(L, n);
        lua_rawseti(L, -2, 0);
      } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_pushnil(L);
        lua_rawset(L, -4);
        c->widget_keys--;
      }
    }
    lua_pop(L, 2);
    cr_widget_sets_trim(L, c, NULL);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* ---- entries ---------------------------------------------------------- */

/* Under AddressSanitizer a released entry is freed at once, so that a
 * pointer kept past its release is reported, not handed a new entry. */
#if defined(__SANITIZE_ADDRESS__)
#define CR_NO_SPARE
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CR_NO_SPARE
#endif
#endif

static size_t entry_size(int nvalues, size_t keylen) {
  return sizeof(cr_entry) + (size_t)nvalues * sizeof(int) + keylen;
}

/* An entry of size bytes: the store's spare when it fits without wasting
 * more than a quarter of it, else new memory. */
static cr_entry *entry_alloc(cr_store *st, size_t size) {
  cr_entry *e = st->spare;
  if (e && size <= st->spare_size && size >= st->spare_size - st->spare_size / 4) {
    st->spare = NULL;
    return e;
  }
  return (cr_entry *)malloc(size);
}

/* Unlinks e from st (its store) and frees it. When on_release is to be
 * called, pushes it and e's values (room checked by the caller) and
 * returns how many values; else returns -1. Runs no Lua code: what the
 * front index must forget is left in *gone, for cr_front_forget. */
static int entry_detach(lua_State *L, cr_store *st, cr_entry *e, enum cr_reason why, cr_front_gone *gone) {
  cr_cache *c = st->cache;
  cr_state *S = c->S;
  cr_entry **pp;
  int i, n = e->nvalues;
  int notify = why != CR_DROP && c->on_release_ref != LUA_NOREF;
  cr_front_note(e, gone);
  if (notify) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_release_ref);
    cr_push_values(L, e);
  }
  for (pp = &st->buckets[e->hash & st->mask]; *pp != e; pp = &(*pp)->hnext) {}
  *pp = e->hnext;
  lru_unlink(st, e);
  if (e->heap_pos != CR_NO_HEAP) heap_remove(S, e);
  st->count--;
  S->released++;
  st->bytes -= e->bytes;
  c->bytes -= e->bytes;
  if (why == CR_EVICT) c->evictions++;
  else if (why == CR_EXPIRE) c->expirations++;
  for (i = 0; i < n; i++) {
    if (e->refs[i] != LUA_REFNIL) S->live_refs--;
    cr_unref(L, &S->refpool, e->refs[i]);
  }
  if (e->replay) {
    c->replay_bytes -= e->replay->buf.len;
    cr_replay_unref(L, e->replay);
  }
  if (e->argkey_ref != LUA_NOREF) widget_uncount(L, c, e->argkey_ref);
#ifdef CR_NO_SPARE
  free(e);
#else
  /* kept for the next entry: a bounded store at capacity releases one
   * entry per miss and allocates one, often of the same size */
  free(st->spare);
  st->spare = e;
  st->spare_size = entry_size(n, e->keylen);
#endif
  return notify ? n : -1;
}

/* Calls on_release (pushed by entry_detach with n values). Errors in it
 * become warnings. */
static void entry_notify(lua_State *L, cr_cache *c, int n) {
  if (n < 0) return;
  if (lua_pcall(L, n, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, "cache_resource: on_release of %s raised an error: %s", c->name,
                    msg ? msg : luaL_typename(L, -1));
    cr_report(L, lua_tostring(L, -1));
    lua_pop(L, 2);
  }
}

/* Unlinks and frees e, then calls on_release with its values (except for
 * CR_DROP, a failed validate). The caller must not use e afterwards, nor
 * its store unless pinned. */
static void store_release(lua_State *L, cr_store *st, cr_entry *e, enum cr_reason why) {
  cr_cache *c = st->cache;
  cr_front_gone gone;
  int n;
  if (why != CR_DROP && c->on_release_ref != LUA_NOREF)
    luaL_checkstack(L, e->nvalues + 4, "cache_resource: releasing an entry");
  n = entry_detach(L, st, e, why, &gone);
  cr_front_forget(L, &gone); /* may run Lua: e is gone from every structure */
  entry_notify(L, c, n);
}

void cr_entry_release(lua_State *L, cr_entry *e, enum cr_reason why) {
  store_release(L, e->store, e, why);
}

/* Links a new entry for key holding the n values at first.. and the
 * recorded calls *rpp (taken: *rpp becomes NULL). This is the commit of a
 * store step: the caller has run every callback it needed (the clock read
 * `now`, when the entry has a lifetime) and checked that st is live; no
 * Lua code runs here until the entry is linked. Then the front index
 * learns of it, and the entry it replaces and what max_entries and
 * max_size evict are released, with st pinned. A value is fresh for ttl,
 * then stale for max_stale; a failure result lives failure_ttl and is never
 * stale. A cache_data entry's values are its encoded bytes (a string of
 * `bytes` bytes) and their metatable list, if any; one larger than max_size
 * is not stored. Widget caches pass the stack indexes of the argument key
 * string and of the ids table the key was built from (else 0, 0). */
void cr_store_insert(lua_State *L, cr_store *st, const cr_key *key, int first, int n, size_t bytes,
                     cr_replay **rpp, int failure, double now, int argkey, int ids) {
  cr_cache *c = st->cache;
  cr_state *S = c->S;
  cr_entry *e, *old;
  cr_front_gone gone;
  int i, released = -1;
  size_t excess;
  uint64_t gen;
  double stale = HUGE_VAL, expires = HUGE_VAL, ttl = failure ? c->failure_ttl : c->ttl;
  if (st->dead || (c->max_size > 0 && bytes > (size_t)c->max_size)) return;
  if (ttl != HUGE_VAL) {
    stale = now + ttl;
    expires = failure ? stale : stale + c->max_stale;
  }
  old = cr_store_find(st, key->hash, key->bytes, key->len, key->is_digest);
  /* everything that may raise, before anything changes */
  if (old && c->on_release_ref != LUA_NOREF)
    luaL_checkstack(L, old->nvalues + 4, "cache_resource: releasing an entry");
  if (stale != HUGE_VAL) heap_reserve(L, S);
  e = entry_alloc(st, entry_size(n, key->len));
  if (e == NULL) cr_error(L, "cache_resource: out of memory (entry)");
  e->store = st;
  e->hash = key->hash;
  e->gen = gen = ++S->next_gen;
  e->stale_at = stale;
  e->expires_at = expires;
  e->retry_at = -HUGE_VAL;
  e->failure = failure;
  e->heap_pos = CR_NO_HEAP;
  e->keylen = key->len;
  e->is_digest = key->is_digest;
  e->front = CR_FRONT_NONE;
  e->nvalues = n;
  e->bytes = bytes;
  e->decodes = 0;
  e->replay = *rpp;
  *rpp = NULL;
  if (e->replay) c->replay_bytes += e->replay->buf.len;
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    e->refs[i] = cr_ref(L, &S->refpool);
    if (e->refs[i] != LUA_REFNIL) S->live_refs++;
  }
  memcpy(CR_ENTRY_KEY(e), key->bytes, key->len);
  /* counted before the replaced entry uncounts the same argument key */
  e->front_key_ref = LUA_NOREF;
  e->argkey_ref = argkey ? widget_count(L, c, argkey, ids) : LUA_NOREF;
  if (old) released = entry_detach(L, st, old, CR_CLEAR, &gone); /* a takeover raced an owner */
  /* in the heap as soon as it can go stale: the hit path then reads the clock */
  if (stale != HUGE_VAL) heap_push(S, e);
  e->hnext = st->buckets[e->hash & st->mask];
  st->buckets[e->hash & st->mask] = e;
  lru_push(st, e);
  st->bytes += bytes;
  c->bytes += bytes;
  /* load factor <= 1/2: a hit in a big store then rarely walks past a
   * second entry, each of which is a cache miss */
  if (++st->count > (st->mask + 1) / 2) grow_buckets(st);
  /* linked: from here Lua code may run */
  st->pins++;
  if (old) { /* first: it clears whatever its key maps to, and may run Lua code */
    cr_front_forget(L, &gone);
    e = cr_store_find(st, key->hash, key->bytes, key->len, key->is_digest);
  }
  if (e && e->gen == gen) cr_front_add(L, st, e, key->arg);
  entry_notify(L, c, released);
  /* bounded: an on_release that stores entries cannot keep this going */
  excess = (c->max_entries > 0 && (lua_Integer)st->count > c->max_entries)
             ? st->count - (size_t)c->max_entries : 0;
  while (excess-- > 0 && !st->dead && c->max_entries > 0 && (lua_Integer)st->count > c->max_entries &&
         st->oldest)
    store_release(L, st, st->oldest, CR_EVICT);
  /* the same for max_size; the new entry fits alone, so it stays */
  excess = st->count;
  while (excess-- > 0 && !st->dead && c->max_size > 0 && st->bytes > (size_t)c->max_size && st->oldest &&
         st->oldest != st->newest)
    store_release(L, st, st->oldest, CR_EVICT);
  cr_store_unpin(st);
}

/* Pushes a hot cache_data entry's compiled copy (the bytes are at src),
 * after its S->compile_after-th hit decoded by C, and returns 1; or
 * returns 0. Compiling allocates, and a finalizer run meanwhile may release
 * e, or hit it and compile it first: e takes the function only if no entry
 * was released and e has none yet, else the function makes this copy (and,
 * when e was released, the next hit tries again). */
static int compiled_copy(lua_State *L, cr_state *S, cr_entry *e, int src) {
  uint64_t released = S->released;
  if (e->decodes == CR_NEVER_COMPILE || S->compile_after == 0 || ++e->decodes < S->compile_after) return 0;
  if (!cr_data_compile(L, src)) {
    if (S->released == released) e->decodes = CR_NEVER_COMPILE; /* beyond the compiler: the C decoder copies */
    return 0;
  }
  if (S->released == released && e->refs[CR_DATA_COMPILED] == LUA_REFNIL) {
    lua_pushvalue(L, -1);
    e->refs[CR_DATA_COMPILED] = luaL_ref(L, LUA_REGISTRYINDEX);
    S->live_refs++;
  }
  return 1;
}

/* Pushes what a hit of e returns and returns how many: its values, or a
 * cache_data entry's copy made afresh from its bytes (by its compiled copy,
 * once it has one, else by the C decoder). Both allocate (a finalizer may
 * release e), so the bytes are anchored on the stack first and e is not
 * used once copying starts. */
int cr_entry_push(lua_State *L, cr_entry *e) {
  cr_cache *c = e->store->cache;
  const char *why;
  int base, n, top = lua_gettop(L);
  if (!c->data) {
    cr_push_values(L, e);
    return e->nvalues;
  }
  luaL_checkstack(L, 6, "cache_data: copying an entry");
  if (e->refs[CR_DATA_COMPILED] != LUA_REFNIL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->refs[CR_DATA_COMPILED]);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - top;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->refs[CR_DATA_BYTES]);
  base = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->refs[CR_DATA_METAS]); /* nil when none */
  if (compiled_copy(L, c->S, e, base)) {
    lua_call(L, 0, LUA_MULTRET);
    n = lua_gettop(L) - base - 1;
  } else {
    n = cr_codec_decode(L, base, lua_isnil(L, base + 1) ? 0 : base + 1, CR_CODEC_MEMORY, &why);
    if (n < 0) cr_error(L, "cache_data: an entry of %s could not be decoded (%s)", c->name, why);
  }
  lua_rotate(L, base, -2); /* the bytes and the list go from under the values */
  lua_pop(L, 2);
  return n;
}

/* ---- clearing --------------------------------------------------------- */

/* Releases st's entries stored up to generation gen0 (those present when
 * the clear started); entries stored meanwhile by callbacks stay, so this
 * ends however on_release re-warms the cache. The caller pins st. */
static void store_clear_upto(lua_State *L, cr_store *st, uint64_t gen0) {
  for (;;) {
    cr_entry *e = st->oldest;
    while (e && e->gen > gen0) e = e->newer;
    if (e == NULL) break;
    store_release(L, st, e, CR_CLEAR);
  }
  if (st->cleared_gen < gen0) st->cleared_gen = gen0;
}

/* The same for a store nobody pinned yet. */
static void store_clear_pinned(lua_State *L, cr_store *st, uint64_t gen0) {
  st->pins++;
  store_clear_upto(L, st, gen0);
  cr_store_unpin(st);
}

/* Calls on st stop using it. A computing call still returns its values to
 * its caller but does not store them; when the store itself goes
 * (end of session) waiting and validating calls let go of it too. */
void cr_detach_calls(cr_state *S, cr_store *st, int only_computing) {
  cr_call *call;
  for (call = S->calls; call; call = call->next)
    if ((st == NULL || call->store == st) && (call->computing || call->storing || !only_computing))
      call->store = NULL;
}

/* Every session store of c, pinned (NULL when it has none), for a walk
 * that calls Lua code: a snapshot, so stores made meanwhile are not in it
 * (their entries are newer than the walk) and a store whose session ends
 * meanwhile stays allocated, marked dead. Let go with stores_unpin. */
static cr_store **stores_pin(lua_State *L, cr_cache *c, size_t *n) {
  cr_store *st, **all;
  size_t i = 0;
  *n = 0;
  for (st = c->session_stores; st; st = st->next_of_cache) (*n)++;
  if (*n == 0) return NULL;
  all = (cr_store **)malloc(*n * sizeof *all);
  if (all == NULL) cr_error(L, "cache_resource: out of memory (clearing %s)", c->name);
  for (st = c->session_stores; st; st = st->next_of_cache) {
    st->pins++;
    all[i++] = st;
  }
  return all;
}

static void stores_unpin(cr_store **all, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) cr_store_unpin(all[i]);
  free(all);
}

/* Clears c: its global store, or the current session's store, or (with
 * all_sessions) every session's. gen0: the generation when the clear began
 * (S->next_gen then); only entries up to it go. */
void cr_cache_clear(lua_State *L, cr_cache *c, int all_sessions, uint64_t gen0) {
  cr_state *S = c->S;
  cr_store *st, **all;
  size_t i, n;
  if (!c->session_scope) {
    if (c->global) {
      cr_detach_calls(S, c->global, 1);
      store_clear_pinned(L, c->global, gen0);
    }
    return;
  }
  if (!all_sessions) {
    st = cr_store_for(L, c, 0);
    if (st) {
      cr_detach_calls(S, st, 1);
      store_clear_pinned(L, st, gen0);
    }
    return;
  }
  all = stores_pin(L, c, &n);
  for (i = 0; i < n; i++) {
    st = all[i];
    if (st->dead || st->cleared_gen >= gen0) continue; /* ended, or cleared by a nested clear */
    cr_detach_calls(S, st, 1);
    store_clear_upto(L, st, gen0);
  }
  stores_unpin(all, n);
}

/* Releases the entry of key in st, if present when the clear began;
 * a computation of that key in st keeps its values out of the cache. */
void cr_store_clear_key(lua_State *L, cr_store *st, const cr_key *key, uint64_t gen0) {
  cr_call *call;
  cr_entry *e;
  if (st == NULL) return;
  for (call = st->cache->S->calls; call; call = call->next)
    if ((call->computing || call->storing) && call->store == st && call->hash == key->hash &&
        call->keylen == key->len && call->is_digest == key->is_digest &&
        memcmp(call->key, key->bytes, key->len) == 0)
      call->store = NULL;
  e = cr_store_find(st, key->hash, key->bytes, key->len, key->is_digest);
  if (e && e->gen <= gen0) store_release(L, st, e, CR_CLEAR);
}

/* The same in every session's store of c. */
void cr_cache_clear_key(lua_State *L, cr_cache *c, const cr_key *key, uint64_t gen0) {
  size_t i, n;
  cr_store **all = stores_pin(L, c, &n);
  for (i = 0; i < n; i++)
    if (!all[i]->dead) cr_store_clear_key(L, all[i], key, gen0);
  stores_unpin(all, n);
}

/* ---- sessions -------------------------------------------------------- */

static uint64_t session_hash(const cr_state *S, const char *id, size_t len) {
  return XXH3_64bits_withSeed(id, len, S->seed);
}

cr_session *cr_session_find(cr_state *S, const char *id, size_t len) {
  uint64_t h;
  cr_session *ss;
  if (S->nsessions == 0) return NULL;
  h = session_hash(S, id, len);
  for (ss = S->sessions[h & S->session_mask]; ss; ss = ss->hnext)
    if (ss->hash == h && ss->idlen == len && memcmp(ss->id, id, len) == 0) return ss;
  return NULL;
}

/* Rehashes the session map into n buckets; keeps the old one when the
 * allocation fails. */
static void sessions_resize(cr_state *S, size_t n) {
  cr_session **b = (cr_session **)calloc(n, sizeof *b), *ss, *next;
  size_t i, old = S->sessions ? S->session_mask + 1 : 0;
  if (b == NULL) return;
  for (i = 0; i < old; i++)
    for (ss = S->sessions[i]; ss; ss = next) {
      next = ss->hnext;
      ss->hnext = b[ss->hash & (n - 1)];
      b[ss->hash & (n - 1)] = ss;
    }
  free(S->sessions);
  S->sessions = b;
  S->session_mask = n - 1;
}

cr_session *cr_session_open(lua_State *L, cr_state *S, const char *id, size_t len) {
  cr_session *ss = cr_session_find(S, id, len);
  size_t k;
  if (ss) return ss;
  if (S->sessions == NULL) sessions_resize(S, 16);
  else if (S->nsessions >= S->session_mask + 1) sessions_resize(S, (S->session_mask + 1) * 2);
  if (S->sessions == NULL) cr_error(L, "cache_resource: out of memory (sessions)");
  ss = (cr_session *)malloc(sizeof *ss + len + 1);
  if (ss == NULL) cr_error(L, "cache_resource: out of memory (session)");
  ss->stores = NULL;
  ss->idlen = len;
  memcpy(ss->id, id, len);
  ss->id[len] = '\0';
  ss->hash = session_hash(S, id, len);
  k = ss->hash & S->session_mask;
  ss->hnext = S->sessions[k];
  S->sessions[k] = ss;
  S->nsessions++;
  return ss;
}

static void session_unlink(cr_state *S, cr_session *ss) {
  cr_session **pp = &S->sessions[ss->hash & S->session_mask];
  while (*pp != ss) pp = &(*pp)->hnext;
  *pp = ss->hnext;
  S->nsessions--;
  if (S->session_mask >= 64 && S->nsessions < (S->session_mask + 1) / 8)
    sessions_resize(S, (S->session_mask + 1) / 2);
}

static void unlink_from_cache(cr_store *st) {
  cr_cache *c = st->cache;
  if (st->prev_of_cache) st->prev_of_cache->next_of_cache = st->next_of_cache;
  else c->session_stores = st->next_of_cache;
  if (st->next_of_cache) st->next_of_cache->prev_of_cache = st->prev_of_cache;
  st->prev_of_cache = st->next_of_cache = NULL;
  if (c->last_store == st) c->last_store = NULL;
}

/* Detach first (nobody can find the session or its stores any more, and
 * they take no new entries), then release entries, then free: callbacks
 * may re-open a session of that id, which is a new session. */
void cr_session_end(lua_State *L, cr_state *S, cr_session *ss) {
  cr_store *st, *next;
  uint64_t gen0 = S->next_gen;
  session_unlink(S, ss);
  if (S->current == ss) S->current = NULL;
  for (st = ss->stores; st; st = st->next_of_session) {
    store_map_remove(S, st);
    unlink_from_cache(st);
    cr_detach_calls(S, st, 0);
    cr_front_drop(L, st); /* before any entry goes: nothing is left to forget there */
    st->session = NULL;
    st->dead = 1;
    st->pins++;
  }
  for (st = ss->stores; st; st = next) {
    next = st->next_of_session;
    store_clear_upto(L, st, gen0);
    cr_store_unpin(st);
  }
  free(ss);
}

/* ---- lua_close -------------------------------------------------------- */

/* Frees st and its entries: memory only, no callback runs (on_release
 * does not run at lua_close). */
static void store_free_entries(lua_State *L, cr_store *st) {
  cr_entry *e, *older;
  /* the registry goes with the state: its slots are not given back one by
   * one (no finalizer can reach an entry's values through the module once
   * it is closed, and lua_close frees them all) */
  for (e = st->newest; e; e = older) {
    older = e->older;
    cr_replay_unref(L, e->replay);
    free(e);
  }
  cr_front_drop(L, st);
  store_free(st);
}

/* Frees every store of every cache with its entries, the sessions, the
 * (cache, session) -> store map and the expiry heap: at lua_close, when the
 * state goes. The global front indexes lose their entry pointers first: a
 * finalizer calling a cached function afterwards takes the path that sees
 * `closed`. */
void cr_store_free_all(lua_State *L, cr_state *S) {
  cr_cache *c;
  size_t i;
  for (c = S->caches; c; c = c->next) {
    cr_store *st, *next;
    cr_front_close(L, c);
    if (c->global) store_free_entries(L, c->global);
    for (st = c->session_stores; st; st = next) {
      next = st->next_of_cache;
      store_free_entries(L, st);
    }
    c->global = c->session_stores = c->last_store = NULL;
  }
  for (i = 0; S->sessions && i <= S->session_mask; i++) {
    cr_session *ss, *snext;
    for (ss = S->sessions[i]; ss; ss = snext) {
      snext = ss->hnext;
      free(ss);
    }
  }
  free(S->sessions);
  free(S->store_map);
  free(S->heap);
  S->sessions = NULL;
  S->nsessions = 0;
  S->store_map = NULL;
  S->nstores = 0;
  S->current = NULL;
  S->heap = NULL;
  S->heap_len = S->heap_cap = 0;
}
