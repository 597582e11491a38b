/* Shared types of the cache_resource module.
 *
 * Ownership, in one paragraph: the module state (a userdata kept in the
 * registry) owns every cache ever created; a cache is identified by its
 * function identity and owns one store (global scope) or one store per
 * session; a store owns its entries; an entry owns registry references to
 * its values. A cached function is a C closure over cr_func_call whose
 * upvalue 1 is a cr_func userdata (the wrapped fn is its uservalue); the
 * cr_func only points at its cache, so a script re-run that re-creates the
 * same closure finds the old entries. Calls that leave the fast path get a cr_call userdata on their own
 * Lua stack: it holds a copy of the key across yields and, while it computes,
 * is the in-flight marker other coroutines wait on and the recording frame
 * that replayable UI calls append to.
 *
 * The reentrancy rule. Lua code may run at every call into Lua (lua_call*,
 * lua_pcall*, cr_now, cr_report, the spinner and widget hooks) and at every
 * API call that allocates a Lua object (lua_push*string, lua_newtable,
 * lua_createtable, lua_newuserdatauv, lua_pushcclosure with upvalues,
 * luaL_Buffer...): a garbage-collection step may run __gc finalizers there.
 * That code may clear any cache, end any session, call cached functions,
 * change hooks or raise. So, across any such point:
 *  - an entry pointer, the expiry heap's top and a store's bucket or LRU
 *    position are stale: look them up again afterwards (by key, by gen);
 *  - a store pointer is valid only while pinned (st->pins++ ...
 *    cr_store_unpin); a pinned store whose session ended has `dead` set and
 *    takes no new entries. A cr_call's `store` is kept valid by
 *    cr_detach_calls (it becomes NULL when its store goes or is cleared
 *    under it);
 *  - cr_cache and cr_state pointers stay valid: caches live until lua_close,
 *    and lua_close cannot start while a call is running; code that can run
 *    from a finalizer at lua_close checks S->closed first;
 *  - a replay buffer lives while its owner (frame, entry) or a running
 *    replay (`active`) holds it.
 * Steps that must not be interrupted (linking an entry) use only API calls
 * that never collect: lua_rawget/rawset/rawgeti/rawseti, luaL_ref/unref,
 * pushes of non-collectable values. */
#ifndef CR_H
#define CR_H

/* System and Lua headers first: declared under the pragma below, the Lua
 * API would be taken for functions of this module and called directly,
 * which does not link. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "lua.h"
#include "lauxlib.h"

/* Only luaopen_cache_resource is exported (it says so where it is
 * defined): every other symbol is private to the module, so calls between
 * its files are direct, not through the PLT, whatever flags build it.
 * Every header of the module comes after this line. */
#if defined(__GNUC__) && __GNUC__ >= 4
#pragma GCC visibility push(hidden)
#define CR_EXPORT __attribute__((visibility("default")))
#else
#define CR_EXPORT
#endif

#include "cr_compat.h"
#include "cr_buffer.h"
#include "cr_base.h"
#include "cr_codec.h"

#define CR_FUNC_MT "cache_resource.function"
#define CR_CALL_MT "cache_resource.call"
#define CR_BOX_MT "cache_resource.buffers"
#define CR_STATE_MT "cache_resource.state"
#define CR_REPLAY_MT "cache_resource.replay"
#define CR_CODEC_MT "cache_resource.codec"

#define CR_MAX_DEPTH 100       /* table nesting accepted in a key */
#define CR_KEY_INLINE_MAX 256  /* longer keys are kept as a seeded 128-bit digest */
#define CR_MAX_PARAMS 256      /* Lua functions have at most 255 parameters */
#define CR_COMPILE_AFTER 8     /* default: a buffer's n-th replay compiles it */
#define CR_FRONT_MAX_STRING 40 /* longer strings are not in the front index */
#define CR_FRONT_MAX_KEY 64    /* room for the key of one such string */
#define CR_CALL_POOL 8         /* call records kept for reuse (cr_call.c) */
#define CR_CALL_POOL_KEY 64    /* ... each with room for a key this long */

typedef struct cr_cache cr_cache;
typedef struct cr_store cr_store;
typedef struct cr_entry cr_entry;
typedef struct cr_session cr_session;
typedef struct cr_call cr_call;
typedef struct cr_replay cr_replay;

/* Recorded UI calls of one computation, in a userdata: its one
 * C owner (the recording frame, then the entry) anchors it by `self_ref`,
 * and a replay in progress keeps it on its own Lua stack and counts itself
 * in `active`, so the entry may be released (or the replaying coroutine
 * abandoned) mid-replay without a dangling buffer. The owner frees the
 * records when it lets go and no replay runs, else the last replay does;
 * __gc is only the fallback (an abandoned replay). Uservalues: 1 offset
 * of a string argument -> that string decoded, made on first replay; 2 the
 * compiled replay (cr_compile.c). */
struct cr_replay {
  int self_ref;                 /* LUA_NOREF once no C owner holds it */
  int uses_results;             /* some record refers to an earlier call's result */
  cr_cache *cache;              /* whose records: cache_resource.replaying() names it */
  size_t nrecords;
  unsigned replays;             /* hits so far, until compiled */
  int compiled;                 /* 1: uservalue 2 is the compiled replay; -1: never */
  unsigned active;              /* replays running (or suspended) over it */
  cr_buffer buf;                /* records: id, nargs, arguments */
  int *refs;                    /* arguments kept by registry reference */
  size_t nrefs, caprefs;
};

/* Argument tags of the record format (cr_replay.c). */
enum { R_REF = CR_CODEC_TAG_LIMIT, R_RESULT };

/* What a computation is: a miss, or a refresh of a stale entry run by the
 * caller (foreground) or in a coroutine of the scheduler (background). */
enum { CR_MISS, CR_REFRESH_FG, CR_REFRESH_BG };

/* Why an entry leaves its store: decides the statistic and on_release. */
enum cr_reason { CR_EVICT, CR_EXPIRE, CR_CLEAR, CR_DROP };

/* Scratch buffers of the key serializer. The state owns one set; a
 * serialization that starts while it is busy (a hash_funcs callback calling
 * a cached function) uses a set boxed in a userdata instead. */
typedef struct cr_keybufs {
  cr_buffer out;    /* the canonical key bytes */
  cr_buffer pairs;  /* stack of table-pair records being sorted */
  cr_buffer tmp;    /* room for sorting and reordering */
  int busy;
} cr_keybufs;

/* A finished key. `bytes` points into the serializer's buffer (valid until
 * the next serialization) or at `digest` for long keys. */
typedef struct cr_key {
  const unsigned char *bytes;
  size_t len;
  uint64_t hash;          /* seeded XXH3, picks the bucket */
  int is_digest;
  unsigned char digest[16];
  cr_keybufs *bufs;       /* to mark free once the key is used */
  int arg;                /* a key to store: the stack index of the one raw argument
                             it was made from, for the front index; else 0 */
} cr_key;

/* Marks the key's scratch buffers free (the scalar path used none). Inline:
 * the hit path calls it on every call. */
static inline void cr_key_done(cr_key *key) {
  if (key->bufs) key->bufs->busy = 0;
  key->bufs = NULL;
}

struct cr_entry {
  cr_entry *hnext;              /* bucket chain */
  cr_entry *newer, *older;      /* LRU list of the store */
  cr_store *store;
  uint64_t hash;
  uint64_t gen;                 /* unique per stored entry, survives yields */
  double stale_at;              /* past it a hit is stale; HUGE_VAL without ttl */
  double expires_at;            /* released then: stale_at + max_stale */
  double retry_at;              /* a failed refresh: no new one before it */
  int failure;                  /* a failure result kept for failure_ttl */
  size_t heap_pos;              /* index in the expiry heap, or CR_NO_HEAP */
  cr_replay *replay;            /* UI calls to replay on a hit, or NULL */
  size_t keylen;
  int is_digest;
  unsigned char front;          /* how the front index knows it (cr_front.c) */
  unsigned decodes;             /* cache_data: hits decoded by C so far; CR_NEVER_COMPILE */
  int nvalues;                  /* refs below; cache_data: 3 (CR_DATA_*) */
  int argkey_ref;               /* widget caches: the argument key (a string), else LUA_NOREF */
  int front_key_ref;            /* its string in the front index, when a bounded cache's (cr_front.c) */
  size_t bytes;                 /* cache_data: the length of the encoded values, else 0 */
  int refs[];                   /* registry refs of the values, then key bytes */
};
/* A cache_data entry's refs: its encoded values (a string), their metatable
 * list (or nil), the compiled copy of them (or nil until hot). */
enum { CR_DATA_BYTES, CR_DATA_METAS, CR_DATA_COMPILED, CR_DATA_NREFS };
#define CR_NEVER_COMPILE ((unsigned)-1)
#define CR_NO_HEAP ((size_t)-1)
enum { CR_FRONT_NONE, CR_FRONT_EMPTY, CR_FRONT_TABLE, CR_FRONT_VALUE };
#define CR_ENTRY_KEY(e) ((unsigned char *)((e)->refs + (e)->nvalues))

/* Pushes e's stored values (room for them made first): a cache_resource
 * entry's values, a cache_data entry's bytes (cr_entry_push decodes). */
static inline void cr_push_values(lua_State *L, const cr_entry *e) {
  int i;
  if (e->nvalues >= LUA_MINSTACK - 2) luaL_checkstack(L, e->nvalues + 2, "cache_resource: too many values");
  for (i = 0; i < e->nvalues; i++) lua_rawgeti(L, LUA_REGISTRYINDEX, e->refs[i]);
}

struct cr_store {
  cr_cache *cache;
  cr_session *session;          /* NULL for the global store */
  cr_store *mnext;              /* chain in S's (cache, session) -> store map */
  cr_store *prev_of_cache, *next_of_cache; /* the cache's session stores */
  cr_store *next_of_session;    /* the session's stores */
  cr_entry **buckets;
  size_t mask;                  /* bucket count - 1 */
  size_t count;
  size_t bytes;                 /* cache_data: the sum of its entries' bytes */
  cr_entry *newest, *oldest;
  uint64_t cleared_gen;         /* no entry with gen <= this is left (clear progress) */
  int pins;                     /* loops that call Lua while holding this store */
  int dead;                     /* its session ended: takes no entries, freed once unpinned */
  cr_entry *spare;              /* the memory of the entry released last, for the next one */
  size_t spare_size;            /* ... its size in bytes */
  int front_ref;                /* a session store: its front index (cr_front.c), or LUA_NOREF */
  cr_entry *front_empty;        /* ... and its entry of the empty key */
};

struct cr_session {
  cr_session *hnext;            /* chain in S->sessions */
  uint64_t hash;                /* seeded XXH3 of the id */
  cr_store *stores;
  size_t idlen;
  char id[];
};

struct cr_cache {
  cr_cache *next;
  cr_state *S;
  int data;                     /* a cache_data cache: its entries hold encoded copies */
  unsigned char id[16];         /* digest of the identity */
  char *name;                   /* display name */
  char *where;                  /* short_src:first-last */
  int name_fixed;               /* from `name`, or already inferred */
  double ttl;                   /* seconds, HUGE_VAL = forever */
  double max_stale;             /* seconds past ttl an entry may be served */
  double failure_ttl;           /* seconds a failure result is kept; 0 never */
  int refresh_background;       /* refresh_mode = "background" */
  lua_Integer max_entries;      /* 0 = unbounded */
  lua_Integer max_size;         /* cache_data: bytes, 0 = unbounded */
  int validate_ref, on_release_ref, hash_funcs_ref, spinner_ref;
  int anchor_ref;               /* a callable table: its address is its identity */
  int widget_sets_ref;          /* table: argument key -> widget ids read; [0] of
                                   an ids table counts the entries stored under that key */
  size_t widget_keys;           /* argument keys in it: the table goes when none is left */
  int options_ref;              /* the options of the latest wrap, for info() */
  int show_spinner, show_time, allow_widgets, session_scope;
  int hit_slow;                 /* a hit needs more than find + push + replay */
  int quick_miss;               /* a miss where nothing yields may keep its record in C (cr_call.c) */
  int front_ok;                 /* calls may use the front index (cr_front.c) */
  int front_values;             /* ... or its session stores' indexes: they may map straight to the value */
  int front_session;            /* session scope: each session store has a front index */
  int front_ref;                /* table: raw argument -> light userdata entry */
  size_t front_count;           /* mappings in that table (cr_front.c) */
  size_t front_ballast;         /* keys that keep it from rehashing under churn (cr_front.c) */
  size_t front_below;           /* the power of two below mappings + ballast, last seen */
  int front_pointers;           /* that table has mapped an entry (not a value) since it was last emptied */
  cr_entry *front_empty;        /* the global store's entry of the empty key */
  lua_Integer hits, misses, evictions, expirations;
  lua_Integer stale_hits, failures, refreshes, refresh_failures;
  size_t replay_bytes;
  size_t bytes;                 /* cache_data: encoded bytes in memory, every store */
  lua_Integer store_hits, store_writes, store_errors, persist_skipped; /* cache_data, persisted */
  int persist_ref;              /* cache_data with persist: its handle (cache_resource.persist), else LUA_NOREF */
  double persist_due;           /* with persist: the module clock's time to read the store's generation again */
  cr_store *global;             /* scope "global" */
  cr_store *session_stores;     /* scope "session" */
  cr_store *last_store;         /* the session store found last: one compare on a hit */
};

/* Upvalue 1 of a cached function (a C closure over cr_func_call);
 * uservalue 1 is the wrapped fn. */
typedef struct cr_func {
  cr_state *S;                  /* checked for `closed` before cache is used */
  cr_cache *cache;
  int nparams;
  int any_skip;
  int callable_table;           /* fn is a table: its __call gets it as self */
  unsigned char skip[CR_MAX_PARAMS]; /* 1 = parameter named _x, not hashed */
} cr_func;

/* A call that left the fast path; lives on the caller's Lua stack.
 * Uservalues: 1 the owner thread, 3 the argument key before widget
 * values were added (2 is unused). */
struct cr_call {
  cr_state *S;
  cr_cache *cache;
  cr_store *store;              /* NULL once a clear/end_session detached it */
  lua_State *owner;             /* the computing coroutine, while computing */
  cr_call *prev, *next;         /* S->calls: every call in flight */
  int linked;
  int computing;                /* owns the key: others wait on it */
  int storing;                  /* in the store step: a clear still detaches it */
  int nvalues;                  /* values pushed for validate or replay */
  uint64_t gen;                 /* entry being validated */
  int spinner;                  /* this computation started the spinner */
  int kind;                     /* CR_MISS, CR_REFRESH_FG or CR_REFRESH_BG */
  int stale_ok;                 /* replaces a stale entry: on failure, serve it */
  int spawned;                  /* this call started a background refresh */
  int validating_stale;         /* the entry being validated was stale */
  uint64_t validated;           /* gen of the entry validate accepted */
  lua_Integer token;            /* what waiters wait on; 0 until the first */
  int waited;                   /* someone waits through the scheduler */
  cr_replay *recording;         /* UI calls recorded while computing */
  int results_ref;              /* table: value returned by a recorded call -> its index */
  int widgets_ref;              /* table: ids (in order) and values of widgets read */
  int from_store;               /* persisted: the values came from the store, not from fn */
  int poolable;                 /* a miss's record with room for CR_CALL_POOL_KEY key bytes:
                                   it goes back to the pool once its slot is closed */
  int owner_set, argkey_set;    /* uservalues 1 and 3 hold something */
  int untracked;                /* computing where nothing can yield: no to-be-closed slot (compute) */
  double lifetime;              /* ... with this much of their ttl left */
  uint64_t hash;
  size_t keylen;
  int is_digest;
  unsigned char key[];
};

struct cr_state {
  uint64_t seed;                /* per-process, for bucket hashes and digests */
  cr_keybufs keybufs;
  cr_buffer dumpbuf;            /* string.dump output while computing identities */
  cr_codec_bufs codec;          /* the value codec's scratch memory */
  int mt_names_ref;             /* table: registered metatable -> its name (cache_data) */
  int named_mts_ref;            /* table: name -> registered metatable */
  cr_cache *caches;             /* newest first */
  cr_cache *caches_tail;        /* stats() lists caches oldest first */
  cr_session **sessions;        /* hash map: session id -> session */
  size_t session_mask, nsessions;
  cr_store **store_map;         /* hash map: (cache, session) -> that session's store */
  size_t store_mask, nstores;
  cr_session *current;
  cr_entry **heap;              /* min-heap of expiring entries */
  size_t heap_len, heap_cap;
  cr_call *calls;
  int call_pool_ref;            /* table: call records done with, for the next misses (cr_call.c) */
  int call_pool_n;              /* how many it holds, at most CR_CALL_POOL */
  int clock_ref, waiter_ref;
  int wait_ref, wake_ref, spawn_ref; /* the scheduler's functions */
  int scheduler_ref;            /* the table given to set_scheduler */
  lua_Integer next_token;
  int refreshing;               /* background refreshes in S->calls */
  int spinner_ref;              /* UI hook: spinner("start", text, show_time) / ("stop") */
  int widget_source_ref;        /* UI hook: current value of a widget id */
  int replayables_ref;          /* table: id -> replayable, fn -> replayable */
  int replay_fns_ref;           /* table: id -> the plain UI function */
  int replayable_names_ref;     /* table: id -> name, name -> the replayable last given it */
  int persist_mod_ref;          /* the Lua side of persistence (cache_resource.persist), once loaded */
  lua_Integer next_replayable;
  int identities_ref;           /* table: identity digest -> light userdata cache */
  int fnids_ref;                /* weak table: Lua function -> static identity */
  uint64_t next_gen;
  uint64_t released;            /* entries released so far: a step that may run Lua
                                   code compares it to know an entry is still there */
  lua_Integer live_refs;        /* registry refs held for values: leak checks */
  cr_refpool refpool;           /* registry slots of released values and keys, for the next entries */
  unsigned compile_after;       /* the replay that compiles a buffer; 0 never */
  int closed;
};

/* How a cache's errors start. */
static inline const char *cr_kind(const cr_cache *c) {
  return c->data ? "cache_data" : "cache_resource";
}

/* Raises unless the module state is still open: code reachable from a
 * finalizer running at lua_close, after the state was freed, calls it. */
static inline void cr_check_open(lua_State *L, const cr_state *S) {
  if (S->closed) cr_error(L, "cache_resource: the module was closed (lua_close is running)");
}

/* ---- what each file defines, top layer first (src/layers.txt) ---- */

/* cache_resource.c: luaopen_cache_resource, the state */

/* cr_data.c: cache_data, registered metatables */
void cr_data_open(lua_State *L);

/* cr_ui.c: replayable, widget_used, computing, replaying, UI hooks */
void cr_ui_open(lua_State *L);

/* cr_manage.c: clear, stats, info, peek */
void cr_manage_open(lua_State *L);

/* cr_options.c: wrapping, options, caches */
void cr_decorator_callable(lua_State *L, int state, int data);
int cr_wrap(lua_State *L, cr_state *S, int fn, int opts, int data);
void cr_table_copy(lua_State *L, int idx);
void cr_cache_free(lua_State *L, cr_cache *c);

/* cr_call.c: the call path, call records and the list of calls in flight */
int cr_func_call(lua_State *L);
int cr_func_call_session(lua_State *L);
int cr_call_gc(lua_State *L);
int cr_call_close(lua_State *L);
cr_call *cr_call_new(lua_State *L, cr_cache *c, uint64_t hash, const unsigned char *key, size_t keylen,
                     int is_digest);
void cr_call_link(cr_state *S, cr_call *call);
cr_call *cr_call_computing(const cr_state *S, const lua_State *L, const cr_call *after);
void cr_call_finish(lua_State *L, cr_call *call);
int cr_call_compute(lua_State *L, int base, cr_call *call);
void cr_call_key(lua_State *L, cr_func *f, int fidx, int first, int nargs, cr_key *key);

/* cr_refresh.c: stale entries and background refreshes */
int cr_refresh_spawn(lua_State *L, int base, cr_call *call);
int cr_refresh_running(cr_state *S, lua_State *L);
void cr_refresh_failed(lua_State *L, cr_call *call, int err);
void cr_refresh_fallback(lua_State *L, cr_call *call, int err, double now);

/* cr_sched.c: set_scheduler, waiting and waking */
void cr_sched_wait(lua_State *L, cr_call *owner, lua_KContext ctx, lua_KFunction k);
void cr_sched_wake(lua_State *L, cr_call *call);
void cr_sched_free(lua_State *L, cr_state *S);
void cr_sched_open(lua_State *L);

/* cr_persist.c: the envelope of persisted entries, the C side of the persist path */
void cr_persist_open(lua_State *L, int state);
void cr_persist_configure(lua_State *L, cr_cache *c, int opts);
int cr_persist_push_check(lua_State *L, cr_cache *c, double now);
void cr_persist_push_miss(lua_State *L, cr_cache *c);
int cr_persist_took(lua_State *L, int first, int *n, double *lifetime);
int cr_persist_clear(lua_State *L, cr_cache *c, const cr_func *f, int fidx, int first, int nargs);
int cr_persist_clear_all(lua_State *L, cr_state *S);
int cr_persist_done(lua_State *L, int status, lua_KContext ctx);
void cr_persist_push_description(lua_State *L, cr_cache *c);

/* Is c persisted, with its store's generation due to be read at `now`? */
static inline int cr_persist_due(const cr_cache *c, double now) {
  return c->persist_ref != LUA_NOREF && now >= c->persist_due;
}

/* cr_store.c: stores, entries, the expiry heap, sessions, widget sets */
cr_store *cr_store_for(lua_State *L, cr_cache *c, int create);
cr_entry *cr_store_find(cr_store *st, uint64_t hash, const unsigned char *key, size_t len, int is_digest);
void cr_store_relink(cr_store *st, cr_entry *e);
void cr_store_insert(lua_State *L, cr_store *st, const cr_key *key, int first, int n, size_t bytes,
                     cr_replay **rpp, int failure, double now, int argkey, int ids);
int cr_entry_push(lua_State *L, cr_entry *e);
void cr_entry_release(lua_State *L, cr_entry *e, enum cr_reason why);
void cr_store_unpin(cr_store *st);
size_t cr_sweep(lua_State *L, cr_state *S, double now);
cr_session *cr_session_find(cr_state *S, const char *id, size_t len);
cr_session *cr_session_open(lua_State *L, cr_state *S, const char *id, size_t len);
void cr_session_end(lua_State *L, cr_state *S, cr_session *ss);
void cr_cache_clear(lua_State *L, cr_cache *c, int all_sessions, uint64_t gen0);
void cr_store_clear_key(lua_State *L, cr_store *st, const cr_key *key, uint64_t gen0);
void cr_cache_clear_key(lua_State *L, cr_cache *c, const cr_key *key, uint64_t gen0);
void cr_detach_calls(cr_state *S, cr_store *st, int only_computing);
int cr_widget_sets_push(lua_State *L, cr_cache *c, int create);
void cr_widget_sets_trim(lua_State *L, cr_cache *c, const cr_call *self);
void cr_store_free_all(lua_State *L, cr_state *S);

/* A read or write refreshes recency, which only eviction reads: without
 * max_entries or max_size the list stays in store order (no writes to two
 * random neighbours on every hit of a big cache). Both are >= 0, so their
 * bits or'ed are > 0 when either bounds the store. */
static inline void cr_store_touch(cr_store *st, cr_entry *e) {
  if (st->newest != e && (st->cache->max_entries | st->cache->max_size) > 0) cr_store_relink(st, e);
}

/* cr_front.c: the front index */
typedef struct cr_front_gone {  /* what a released entry leaves to forget */
  cr_cache *cache;
  int ref;                      /* the index it was in: the cache's, or its session store's */
  int key_ref;                  /* the entry's front_key_ref, now owned here */
  int global;
  size_t len;
  unsigned char key[CR_FRONT_MAX_KEY];
} cr_front_gone;
void cr_front_add(lua_State *L, cr_store *st, cr_entry *e, int arg);
void cr_front_note(cr_entry *e, cr_front_gone *gone);
void cr_front_forget(lua_State *L, const cr_front_gone *gone);
void cr_front_reset(lua_State *L, cr_cache *c);
void cr_front_close(lua_State *L, cr_cache *c);
void cr_front_reset_sessions(lua_State *L, cr_cache *c);
void cr_front_drop(lua_State *L, cr_store *st);

/* cr_replay.c: recording frames, the record format, the replay loop */
void cr_replay_record(lua_State *L, cr_call *frame, lua_Integer id, int first, int n, int result);
void cr_replay_free_frame(lua_State *L, cr_call *call);
void cr_replay_unref(lua_State *L, cr_replay *rp);
int cr_replay_hold(lua_State *L, cr_replay *rp);
int cr_replay_run(lua_State *L, cr_state *S, cr_replay *rp, int nvalues, int direct, int held);
int cr_replay_gc(lua_State *L);

/* cr_compile.c: compiled replays and compiled copies */
void cr_replay_compile(lua_State *L, cr_state *S, cr_replay *rp, int anchor);
int cr_data_compile(lua_State *L, int src);

/* cr_key.c: keys, identities, the serializer's buffers */
void cr_key_for_call(lua_State *L, cr_state *S, const cr_func *f, int fidx, int first, int nargs, cr_key *key);
void cr_key_push_full(lua_State *L, cr_state *S, const cr_func *f, int fidx, int first, int nargs);
int cr_key_scalars(lua_State *L, cr_state *S, const cr_func *f, int first, int nargs, cr_key *key,
                   unsigned char *buf);
void cr_key_widgets(lua_State *L, cr_state *S, int argkey, int values, int n, cr_key *key);
void cr_key_hash_args(lua_State *L, cr_state *S, int first, int nargs, unsigned char out[16]);
void cr_key_identity(lua_State *L, cr_state *S, int fn, int opts, const char *name, int data,
                     unsigned char out[16]);
int cr_key_push_single(lua_State *L, const unsigned char *key, size_t len);
cr_func *cr_func_of(lua_State *L, int idx);
cr_keybufs *cr_keybufs_box(lua_State *L);
void cr_keybufs_free(cr_keybufs *kb);
int cr_keybufs_gc(lua_State *L);
void cr_key_open(lua_State *L);

/* cr_base.c (cr_base.h): cr_error, cr_report, cr_now, callback references.
 * cr_buffer.c (cr_buffer.h): the byte buffer. */

#if defined(__GNUC__) && __GNUC__ >= 4
#pragma GCC visibility pop
#endif

#endif
