/* Stores: per cache (and per session for scope "session") a chained hash
 * table of entries plus an LRU list; one process-wide min-heap orders every
 * expiring entry so "has anything expired?" is one comparison per call.
 *
 * Releasing an entry unlinks it from everything *before* any Lua code
 * (on_release) runs, so callbacks may clear, end sessions or call cached
 * functions without leaving us a dangling pointer. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cr.h"

/* ---- clock ----------------------------------------------------------- */

double cr_now(lua_State *L, cr_state *S) {
  if (S->clock_ref != LUA_NOREF) {
    int isnum;
    double t;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->clock_ref);
    lua_call(L, 0, 1);
    t = (double)lua_tonumberx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum) luaL_error(L, "cache_resource: the clock set with set_clock must return a number of seconds");
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

/* ---- warnings -------------------------------------------------------- */

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

static void heap_push(lua_State *L, cr_state *S, cr_entry *e) {
  if (S->heap_len == S->heap_cap) {
    size_t cap = S->heap_cap ? S->heap_cap * 2 : 64;
    cr_entry **h = (cr_entry **)realloc(S->heap, cap * sizeof *h);
    if (h == NULL) luaL_error(L, "cache_resource: out of memory (expiry heap)");
    S->heap = h;
    S->heap_cap = cap;
  }
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

size_t cr_sweep(lua_State *L, cr_state *S, double now) {
  size_t n = 0;
  while (S->heap_len && S->heap[0]->expires_at <= now) {
    cr_entry_release(L, S->heap[0], CR_EXPIRE);
    n++;
  }
  return n;
}

/* ---- stores ---------------------------------------------------------- */

static cr_store *store_new(lua_State *L, cr_cache *c, cr_session *ss) {
  cr_store *st = (cr_store *)calloc(1, sizeof *st);
  if (st) st->buckets = (cr_entry **)calloc(8, sizeof *st->buckets);
  if (st == NULL || st->buckets == NULL) {
    free(st);
    luaL_error(L, "cache_resource: out of memory (store)");
  }
  st->mask = 7;
  st->cache = c;
  st->session = ss;
  return st;
}

static void store_free(cr_store *st) {
  free(st->buckets);
  free(st);
}

void cr_store_unpin(cr_store *st) {
  if (--st->pins == 0 && st->dead) store_free(st);
}

cr_store *cr_store_for(lua_State *L, cr_cache *c, int create) {
  cr_session *ss;
  cr_store *st;
  if (!c->session_scope) {
    if (c->global == NULL && create) c->global = store_new(L, c, NULL);
    return c->global;
  }
  ss = c->S->current;
  if (ss == NULL)
    luaL_error(L, "cache_resource: %s has scope 'session' but no session is set: call "
                  "cache_resource.set_session(id) first (the UI runtime does it for each run)",
               c->name);
  if (c->last_store && c->last_store->session == ss) return c->last_store;
  for (st = c->session_stores; st; st = st->next_of_cache)
    if (st->session == ss) return c->last_store = st;
  if (!create) return NULL;
  st = store_new(L, c, ss);
  st->next_of_cache = c->session_stores;
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
  else st->newest = e->older;
  if (e->older) e->older->newer = e->newer;
  else st->oldest = e->newer;
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

/* Stores the n values at first.. under key, with its recorded UI calls
 * (ownership of rp moves to the entry); evicts over max_entries. A value
 * is fresh for ttl, then stale for max_stale; a failure result lives
 * failure_ttl and is never stale. */
cr_entry *cr_store_insert(lua_State *L, cr_store *st, const cr_key *key, int first, int n, cr_replay *rp,
                          int failure) {
  cr_cache *c = st->cache;
  cr_state *S = c->S;
  cr_entry *e, *old;
  int i;
  double stale = HUGE_VAL, expires = HUGE_VAL, ttl = failure ? c->failure_ttl : c->ttl;
  if (ttl != HUGE_VAL) {
    stale = cr_now(L, S) + ttl;
    expires = failure ? stale : stale + c->max_stale;
  }
  old = cr_store_find(st, key->hash, key->bytes, key->len, key->is_digest);
  if (old) cr_entry_release(L, old, CR_CLEAR); /* a takeover raced an owner */
  e = (cr_entry *)malloc(sizeof *e + (size_t)n * sizeof(int) + key->len);
  if (e == NULL) {
    cr_replay_unref(L, rp);
    luaL_error(L, "cache_resource: out of memory (entry)");
  }
  e->store = st;
  e->hash = key->hash;
  e->gen = ++S->next_gen;
  e->stale_at = stale;
  e->expires_at = expires;
  e->retry_at = -HUGE_VAL;
  e->failure = failure;
  e->heap_pos = CR_NO_HEAP;
  e->keylen = key->len;
  e->is_digest = key->is_digest;
  e->front = CR_FRONT_NONE;
  e->nvalues = n;
  e->replay = rp;
  if (rp) c->replay_bytes += rp->buf.len;
  for (i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    e->refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    if (e->refs[i] != LUA_REFNIL) S->live_refs++;
  }
  memcpy(CR_ENTRY_KEY(e), key->bytes, key->len);
  /* in the heap as soon as it can go stale: the hit path then reads the clock */
  if (stale != HUGE_VAL) heap_push(L, S, e); /* before linking: may raise */
  e->hnext = st->buckets[e->hash & st->mask];
  st->buckets[e->hash & st->mask] = e;
  lru_push(st, e);
  /* load factor <= 1/2: a hit in a big store then rarely walks past a
   * second entry, each of which is a cache miss */
  if (++st->count > (st->mask + 1) / 2) grow_buckets(st);
  cr_front_add(L, st, e); /* may run Lua (global store only, which is never freed) */
  if (c->max_entries > 0 && (lua_Integer)st->count > c->max_entries) {
    st->pins++;
    while ((lua_Integer)st->count > c->max_entries && st->oldest) cr_entry_release(L, st->oldest, CR_EVICT);
    cr_store_unpin(st);
  }
  return e;
}

/* Unlinks and frees e, then calls on_release with its values (except for
 * CR_DROP, a failed validate). Errors in on_release become warnings. */
void cr_entry_release(lua_State *L, cr_entry *e, enum cr_reason why) {
  cr_store *st = e->store;
  cr_cache *c = st->cache;
  cr_state *S = c->S;
  cr_entry **pp;
  int i, n = e->nvalues;
  int notify = why != CR_DROP && c->on_release_ref != LUA_NOREF;
  cr_front_gone gone;
  cr_front_note(e, &gone);
  if (notify) {
    luaL_checkstack(L, n + 4, "cache_resource: releasing an entry");
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_release_ref);
    cr_push_values(L, e);
  }
  for (pp = &st->buckets[e->hash & st->mask]; *pp != e; pp = &(*pp)->hnext) {}
  *pp = e->hnext;
  lru_unlink(st, e);
  if (e->heap_pos != CR_NO_HEAP) heap_remove(S, e);
  st->count--;
  if (why == CR_EVICT) c->evictions++;
  else if (why == CR_EXPIRE) c->expirations++;
  for (i = 0; i < n; i++) {
    if (e->refs[i] != LUA_REFNIL) S->live_refs--;
    luaL_unref(L, LUA_REGISTRYINDEX, e->refs[i]);
  }
  if (e->replay) {
    c->replay_bytes -= e->replay->buf.len;
    cr_replay_unref(L, e->replay);
  }
  free(e);
  cr_front_forget(L, &gone); /* may run Lua: e is gone from every structure */
  if (notify && lua_pcall(L, n, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    lua_pushfstring(L, "cache_resource: on_release of %s raised an error: %s", c->name,
                    msg ? msg : luaL_typename(L, -1));
    cr_report(L, lua_tostring(L, -1));
    lua_pop(L, 2);
  }
}

void cr_store_drain(lua_State *L, cr_store *st) {
  st->pins++;
  while (st->oldest) cr_entry_release(L, st->oldest, CR_CLEAR);
  cr_store_unpin(st);
}

/* Calls on st stop using it. A computing call still returns its values to
 * its caller but does not store them (SPEC 5); when the store itself goes
 * (end of session) waiting and validating calls let go of it too. */
void cr_detach_calls(cr_state *S, cr_store *st, int only_computing) {
  cr_call *call;
  for (call = S->calls; call; call = call->next)
    if ((st == NULL || call->store == st) && (call->computing || !only_computing)) call->store = NULL;
}

void cr_cache_clear(lua_State *L, cr_cache *c, int all_sessions) {
  cr_store *st;
  if (!c->session_scope) {
    if (c->global) {
      cr_detach_calls(c->S, c->global, 1);
      cr_store_drain(L, c->global);
    }
    return;
  }
  if (!all_sessions) {
    st = cr_store_for(L, c, 0);
    if (st) {
      cr_detach_calls(c->S, st, 1);
      cr_store_drain(L, st);
    }
    return;
  }
  /* a callback may end sessions meanwhile: restart from the list head */
  for (;;) {
    for (st = c->session_stores; st && st->count == 0; st = st->next_of_cache) cr_detach_calls(c->S, st, 1);
    if (st == NULL) break;
    cr_detach_calls(c->S, st, 1);
    cr_store_drain(L, st);
  }
}

/* ---- sessions -------------------------------------------------------- */

cr_session *cr_session_find(cr_state *S, const char *id, size_t len) {
  cr_session *ss;
  for (ss = S->sessions; ss; ss = ss->next)
    if (ss->idlen == len && memcmp(ss->id, id, len) == 0) return ss;
  return NULL;
}

cr_session *cr_session_open(lua_State *L, cr_state *S, const char *id, size_t len) {
  cr_session *ss = cr_session_find(S, id, len);
  if (ss) return ss;
  ss = (cr_session *)malloc(sizeof *ss + len + 1);
  if (ss == NULL) luaL_error(L, "cache_resource: out of memory (session)");
  ss->stores = NULL;
  ss->idlen = len;
  memcpy(ss->id, id, len);
  ss->id[len] = '\0';
  ss->next = S->sessions;
  S->sessions = ss;
  return ss;
}

static void unlink_from_cache(cr_store *st) {
  cr_cache *c = st->cache;
  cr_store **pp;
  for (pp = &c->session_stores; *pp; pp = &(*pp)->next_of_cache)
    if (*pp == st) {
      *pp = st->next_of_cache;
      break;
    }
  if (c->last_store == st) c->last_store = NULL;
}

/* Detach first (nobody can find the session or its stores any more), then
 * release entries, then free: callbacks may re-open a session of that id. */
void cr_session_end(lua_State *L, cr_state *S, cr_session *ss) {
  cr_session **pp;
  cr_store *st, *next;
  for (pp = &S->sessions; *pp != ss; pp = &(*pp)->next) {}
  *pp = ss->next;
  if (S->current == ss) S->current = NULL;
  for (st = ss->stores; st; st = st->next_of_session) {
    unlink_from_cache(st);
    cr_detach_calls(S, st, 0);
    st->session = NULL;
    st->pins++;
  }
  for (st = ss->stores; st; st = next) {
    next = st->next_of_session;
    while (st->oldest) cr_entry_release(L, st->oldest, CR_CLEAR);
    st->dead = 1;
    cr_store_unpin(st);
  }
  free(ss);
}

/* At lua_close: free memory only; no callbacks run (Streamlit does not
 * release resources at shutdown either; they have their own __gc). */
static void store_free_entries(lua_State *L, cr_store *st) {
  cr_entry *e, *older;
  int i;
  for (e = st->newest; e; e = older) {
    older = e->older;
    for (i = 0; i < e->nvalues; i++) luaL_unref(L, LUA_REGISTRYINDEX, e->refs[i]);
    cr_replay_unref(L, e->replay);
    free(e);
  }
  store_free(st);
}

void cr_state_free(lua_State *L, cr_state *S) {
  cr_cache *c, *cnext;
  cr_session *ss, *snext;
  for (c = S->caches; c; c = cnext) {
    cr_store *st, *next;
    cnext = c->next;
    cr_front_reset(L, c); /* a finalizer calling a cached function now takes the path that sees `closed` */
    if (c->global) store_free_entries(L, c->global);
    for (st = c->session_stores; st; st = next) {
      next = st->next_of_cache;
      store_free_entries(L, st);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, c->validate_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_release_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->hash_funcs_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->spinner_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->anchor_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->widget_sets_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->options_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->front_ref);
    free(c->name);
    free(c->where);
    free(c);
  }
  for (ss = S->sessions; ss; ss = snext) {
    snext = ss->next;
    free(ss);
  }
  free(S->heap);
  luaL_unref(L, LUA_REGISTRYINDEX, S->clock_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->waiter_ref);
  cr_sched_free(L, S);
  luaL_unref(L, LUA_REGISTRYINDEX, S->spinner_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->widget_source_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->replayables_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->replay_fns_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->identities_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, S->fnids_ref);
  cr_keybufs_free(&S->keybufs);
  cr_buffer_free(&S->dumpbuf);
  S->caches = NULL;
  S->sessions = NULL;
  S->heap = NULL;
  S->heap_len = S->heap_cap = 0;
  S->closed = 1;
}
