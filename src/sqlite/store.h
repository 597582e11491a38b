/* cache_resource.sqlite: a store of encoded cache_data entries in one
 * SQLite database, shared by the processes of a machine.
 *
 * Files: module.c is the Lua side (arguments, results, the store
 * userdata), db.c the SQLite side (the connection, the schema, one
 * transaction per write, damage), files.c where the database lives and
 * how its directory and file are created. db.c and files.c never call Lua.
 *
 * The reentrancy rule, as it applies here: the only Lua code that can run
 * during a method is a finalizer, at an API call that allocates (pushing a
 * string). Such a finalizer may call any method of this very store, close
 * it included. So a method pushes nothing while it holds a pointer into
 * SQLite's memory except the one lua_pushlstring that copies the value out
 * of the result row (Lua copies the bytes before it collects), and after
 * that push it looks at the store again: `db` is NULL once closed, and a
 * statement may have been reset and used by the nested call. */
#ifndef CRS_STORE_H
#define CRS_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include "lua.h"
#include "lauxlib.h"
#include "../cr_compat.h"

/* UPSERT and SQLITE_DBCONFIG_RESET_DATABASE came with SQLite 3.24. */
#if defined(SQLITE_VERSION_NUMBER) && SQLITE_VERSION_NUMBER < 3024000
#error "cache_resource.sqlite needs SQLite 3.24 or later"
#endif
#define CRS_MIN_SQLITE 3024000

/* Only luaopen_cache_resource_sqlite is exported. */
#if defined(__GNUC__) && __GNUC__ >= 4
#pragma GCC visibility push(hidden)
#define CRS_EXPORT __attribute__((visibility("default")))
#else
#define CRS_EXPORT
#endif

#define CRS_MT "cache_resource.sqlite"
#define CRS_FILE_NAME "cache_data.sqlite3"
#define CRS_TIMEOUT_MS 5000   /* default wait for another process's write */
#define CRS_TOUCHES 1024      /* bounded entries whose reads are remembered before a flush */
#define CRS_TOUCH_SLOTS 2048  /* the hash table holding them: a power of 2, half full at most */
#define CRS_TOUCH_AGE 1.0     /* seconds a remembered read waits at most for a flush */
#define CRS_MSG 512           /* room for one error message */

/* The prepared statements, made once per connection (db.c has the SQL). */
enum crs_stmt {
  S_GET, S_BEGIN, S_COMMIT, S_ROLLBACK, S_PRUNE, S_DELETE, S_INSERT, S_RANK, S_BOUNDS,
  S_EVICT, S_TOUCH, S_CLEAR_NS, S_BUMP_NS, S_CLEAR_ALL, S_BUMP_ALL, S_GENERATION,
  S_COUNT
};

/* A read of an entry set with limits, not yet written to its recency:
 * the entry's rowid (0: a free slot) and the time of its last read. */
typedef struct {
  int64_t entry, used;
} crs_read;

/* The store userdata. `path` is inline (it lives as long as the userdata,
 * so nothing frees it under a method). Once closed, `db` is NULL and every
 * statement slot is NULL. */
typedef struct {
  sqlite3 *db;
  sqlite3_stmt *stmt[S_COUNT];
  int timeout_ms;
  int64_t last_used;            /* the newest `used` value given: they only grow */
  size_t ntouches;              /* slots in use in touches */
  double touches_since;         /* monotonic time of the oldest pending touch */
  crs_read touches[CRS_TOUCH_SLOTS]; /* open addressing by rowid, linear probing */
  char why[CRS_MSG];            /* SQLite's message for the last failure */
  char err[2 * CRS_MSG];        /* the message a failing method returns */
  char path[];
} crs_store;

/* What a set writes. */
typedef struct {
  const char *ns, *key, *bytes;
  size_t nslen, keylen, len;
  int keep;                     /* 0: a ttl that already ran out, only remove the old entry */
  int expires_set;              /* 0: never expires */
  double expires;               /* wall-clock seconds since the epoch */
  int bounded;                  /* the function has limits: LRU-ordered and counted */
  int64_t max_entries, max_size;
} crs_put;

/* db.c. Every int-returning function returns SQLITE_OK or fills st->err. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void crs_say(char *buf, size_t cap, const char *fmt, ...);
int crs_open(crs_store *st, char *note, size_t notecap);
void crs_close(crs_store *st);
int crs_set(crs_store *st, const crs_put *p);
int crs_delete(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen);
int crs_clear(crs_store *st, const char *ns, size_t nslen);
int crs_generation(crs_store *st, const char *ns, size_t nslen, lua_Integer *gen);
int crs_lookup(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen,
               sqlite3_stmt **row, int64_t *bounded);
void crs_lookup_done(crs_store *st);
void crs_touch(crs_store *st, int64_t entry);
void crs_flush_if_due(crs_store *st);
double crs_wall_now(void);

/* files.c */
int crs_default_path(char *out, size_t cap, char *err, size_t errcap);
int crs_prepare_path(const char *path, char *err, size_t errcap);

#endif
