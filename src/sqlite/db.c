/* The SQLite side of the store: the connection, the schema, one
 * transaction per write, least-recently-used bounds, damage.
 *
 * The schema (format 1)
 * ---------------------
 * A store file is recognised by `PRAGMA application_id` = CRS_APP_ID and
 * its format by `PRAGMA user_version` = CRS_FORMAT.
 *
 *   entries(ns, key, size, expires, bounded, bytes)   one row an entry, UNIQUE (ns, key)
 *     size     length(bytes); the small columns come before the blob, so
 *              that reading them never walks the blob's overflow pages
 *     expires  wall-clock seconds since the epoch, NULL: never
 *     bounded  1: set with limits, so it has a row in recency
 *   recency(entry, ns, size, used)   an entry set with limits: its rowid,
 *                                    and its last use (ns since the epoch),
 *                                    the LRU order. A table of its own so
 *                                    that a read's update of `used`
 *                                    rewrites a small row, not the entry.
 *   spaces(ns, gen, count, size)     per ns: clears so far; the number and
 *                                    total size of its recency rows
 *   meta(name, value)                'generation': clear(nil)s so far, from
 *                                    a random start
 *
 * Invariant (kept by the triggers below, whatever statement removes a
 * row): a bounded entry has exactly one recency row, and spaces.count and
 * spaces.size are the number and total size of the ns's recency rows.
 * generation(ns) is meta.generation + spaces.gen: both
 * only grow, so the sum changes at every clear of ns or of everything, and
 * the random start makes a store that was emptied after damage unlikely to
 * repeat a generation some process remembers.
 *
 * A file that is not an SQLite database, or whose pages are damaged (every
 * SQLITE_CORRUPT and SQLITE_NOTADB), and a store file of another format
 * are emptied in place (SQLITE_DBCONFIG_RESET_DATABASE and VACUUM) and
 * made again: in place, under SQLite's own locks, so that processes that
 * have the file open go on with the new, empty database instead of a
 * file that was renamed or removed under them. An SQLite database of
 * another application is never touched: open refuses it.
 *
 * Concurrency: WAL mode (readers never wait for the writer), a busy
 * timeout, and BEGIN IMMEDIATE for every write so that two writers queue
 * for the write lock instead of both reading first and failing to
 * upgrade. A transaction never spans two calls of a method.
 *
 * Least recently used: updating `used` at every read would make each read
 * a write transaction of its own (make bench, "bare read + last-used
 * UPDATE"), so reads of bounded entries are remembered in the store
 * (crs_touch, one per entry: a hot entry read again costs nothing more)
 * and written in one transaction: with this process's next write (before
 * it evicts anything, so eviction in one process sees all of its reads),
 * when CRS_TOUCHES are pending, when the oldest waited CRS_TOUCH_AGE
 * seconds, and at close. Another process's reads count once it wrote
 * them. Unbounded entries have no recency and cost nothing. A touch names
 * the entry by rowid; one that outlived its entry (the rowid reused) has
 * no effect, as `used` only grows and the new entry's is newer. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store.h"

#define CRS_APP_ID 0x43526463 /* "CRdc": a cache_resource cache_data store */
#define CRS_FORMAT 1
#define CRS_PRUNE "16"        /* expired rows removed by each write, at most */

static const char *const SCHEMA =
  "CREATE TABLE entries ("
  "  ns TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, expires REAL,"
  "  bounded INTEGER NOT NULL, bytes BLOB NOT NULL, UNIQUE (ns, key));"
  "CREATE INDEX entries_expiry ON entries (expires) WHERE expires IS NOT NULL;"
  "CREATE TABLE recency ("
  "  entry INTEGER PRIMARY KEY, ns TEXT NOT NULL, size INTEGER NOT NULL, used INTEGER NOT NULL);"
  "CREATE INDEX recency_order ON recency (ns, used);"
  "CREATE TABLE spaces ("
  "  ns TEXT PRIMARY KEY, gen INTEGER NOT NULL, count INTEGER NOT NULL, size INTEGER NOT NULL"
  ") WITHOUT ROWID;"
  "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
  "CREATE TRIGGER entries_forgotten AFTER DELETE ON entries WHEN old.bounded BEGIN"
  "  DELETE FROM recency WHERE entry = old.rowid;"
  "END;"
  "CREATE TRIGGER recency_counted AFTER INSERT ON recency BEGIN"
  "  INSERT INTO spaces (ns, gen, count, size) VALUES (new.ns, 0, 1, new.size)"
  "  ON CONFLICT (ns) DO UPDATE SET count = count + 1, size = size + excluded.size;"
  "END;"
  "CREATE TRIGGER recency_uncounted AFTER DELETE ON recency BEGIN"
  "  UPDATE spaces SET count = count - 1, size = size - old.size WHERE ns = old.ns;"
  "END;";

/* Indexed by enum crs_stmt. Every value is a bound parameter. */
static const char *const SQL[S_COUNT] = {
  /* S_GET: the blob last (module.c copies it out after the others are read) */
  "SELECT rowid, expires, bounded, bytes FROM entries WHERE ns = ?1 AND key = ?2",
  "BEGIN IMMEDIATE",
  "COMMIT",
  "ROLLBACK",
  "DELETE FROM entries WHERE rowid IN"
  " (SELECT rowid FROM entries WHERE expires <= ?1 LIMIT " CRS_PRUNE ")",
  "DELETE FROM entries WHERE ns = ?1 AND key = ?2",
  "INSERT INTO entries (ns, key, size, expires, bounded, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
  "INSERT INTO recency (entry, ns, size, used) VALUES (last_insert_rowid(), ?1, ?2, ?3)",
  "SELECT count, size FROM spaces WHERE ns = ?1",
  "DELETE FROM entries WHERE rowid = (SELECT entry FROM recency WHERE ns = ?1 ORDER BY used LIMIT 1)",
  "UPDATE recency SET used = max(used, ?2) WHERE entry = ?1",
  "DELETE FROM entries WHERE ns = ?1",
  "INSERT INTO spaces (ns, gen, count, size) VALUES (?1, 1, 0, 0)"
  " ON CONFLICT (ns) DO UPDATE SET gen = gen + 1",
  "DELETE FROM entries",
  "UPDATE meta SET value = value + 1 WHERE name = 'generation'",
  "SELECT (SELECT value FROM meta WHERE name = 'generation')"
  " + coalesce((SELECT gen FROM spaces WHERE ns = ?1), 0)",
};

/* ---- clocks ------------------------------------------------------------ */

double crs_wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A `used` value: the wall clock in ns, strictly after the previous one
 * this store gave, so uses in one process are ordered even within a tick. */
static int64_t next_used(crs_store *st) {
  struct timespec ts;
  int64_t t;
  clock_gettime(CLOCK_REALTIME, &ts);
  t = (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
  if (t <= st->last_used) t = st->last_used + 1;
  st->last_used = t;
  return t;
}

/* ---- failures ---------------------------------------------------------- */

/* snprintf into a message buffer: a message longer than the buffer (a
 * very long path) is cut, never overrun. */
void crs_say(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
}

static int is_damage(int rc) {
  return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

/* Keeps SQLite's message for rc (before anything else runs on db), with
 * the system's reason for an I/O failure ("disk I/O error (File too
 * large)"). */
static int note_failure(crs_store *st, int rc) {
  const char *msg = st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc);
  int sys = st->db ? sqlite3_system_errno(st->db) : 0;
  if (sys && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_CANTOPEN))
    crs_say(st->why, sizeof st->why, "%s (%s)", msg ? msg : sqlite3_errstr(rc), strerror(sys));
  else
    crs_say(st->why, sizeof st->why, "%s", msg ? msg : sqlite3_errstr(rc));
  return rc;
}

/* st->err: "cache_resource.sqlite: cannot WHAT PATH: WHY[, more]" */
static void describe(crs_store *st, int rc, const char *what) {
  size_t n;
  crs_say(st->err, sizeof st->err, "cache_resource.sqlite: cannot %s %s: %s", what, st->path, st->why);
  n = strlen(st->err);
  if ((rc & 0xff) == SQLITE_BUSY)
    crs_say(st->err + n, sizeof st->err - n, " (another writer held the lock past the timeout of %g s)",
            st->timeout_ms / 1000.0);
  else if ((rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_PERM)
    crs_say(st->err + n, sizeof st->err - n, " (a store needs its file and its directory writable: "
            "SQLite keeps the files %s-wal and %s-shm beside it)", st->path, st->path);
}

/* Runs one statement that returns no row wanted; resets it. */
static int run(crs_store *st, sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  else note_failure(st, rc);
  sqlite3_reset(s);
  return rc;
}

static int exec(crs_store *st, const char *sql) {
  int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? rc : note_failure(st, rc);
}

/* Strings are bound without a copy (SQLITE_STATIC): they are the method's
 * arguments, on the Lua stack for the whole call. A binding outlives the
 * call, but every statement has all its parameters bound again before it
 * is stepped, so an old one is never read. */
static int bind_id(sqlite3_stmt *s, int i, const char *p, size_t n) {
  return sqlite3_bind_text64(s, i, p, (sqlite3_uint64)n, SQLITE_STATIC, SQLITE_UTF8);
}

/* ---- statements -------------------------------------------------------- */

static void finalize_all(crs_store *st) {
  int i;
  for (i = 0; i < S_COUNT; i++) {
    sqlite3_finalize(st->stmt[i]);
    st->stmt[i] = NULL;
  }
}

static int prepare_all(crs_store *st) {
  int i, rc;
  for (i = 0; i < S_COUNT; i++) {
    rc = sqlite3_prepare_v3(st->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
    if (rc != SQLITE_OK) {
      note_failure(st, rc);
      finalize_all(st);
      return rc;
    }
  }
  return SQLITE_OK;
}

/* Releases whatever read the statements hold (one may have been left
 * stepped when pushing its value ran out of memory). */
static void reset_all(crs_store *st) {
  int i;
  for (i = 0; i < S_COUNT; i++)
    if (st->stmt[i]) sqlite3_reset(st->stmt[i]);
}

/* ---- the schema -------------------------------------------------------- */

enum { F_CURRENT, F_EMPTY, F_OTHER_FORMAT, F_FOREIGN };

/* What the file is: ours at this format, empty, ours at another format,
 * or some other application's database. */
static int identify(crs_store *st, int *kind, int *format) {
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(st->db,
    "SELECT (SELECT application_id FROM pragma_application_id),"
    " (SELECT user_version FROM pragma_user_version),"
    " (SELECT count(*) FROM sqlite_master)", -1, &s, NULL);
  if (rc != SQLITE_OK) return note_failure(st, rc);
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    int id = sqlite3_column_int(s, 0);
    *format = sqlite3_column_int(s, 1);
    if (id == CRS_APP_ID) *kind = *format == CRS_FORMAT ? F_CURRENT : F_OTHER_FORMAT;
    else *kind = id == 0 && sqlite3_column_int(s, 2) == 0 ? F_EMPTY : F_FOREIGN;
    rc = SQLITE_OK;
  } else {
    note_failure(st, rc);
  }
  sqlite3_finalize(s);
  return rc;
}

/* Empties the database in place, however damaged (see the top). */
static int empty_file(crs_store *st) {
  int rc;
  sqlite3_db_config(st->db, SQLITE_DBCONFIG_RESET_DATABASE, 1, (int *)NULL);
  rc = exec(st, "VACUUM");
  sqlite3_db_config(st->db, SQLITE_DBCONFIG_RESET_DATABASE, 0, (int *)NULL);
  return rc;
}

/* PRAGMA journal_mode=WAL needs a lock of its own and can answer busy
 * without calling the busy handler: retried until the timeout. */
static int use_wal(crs_store *st) {
  double deadline = mono_now() + st->timeout_ms / 1000.0;
  for (;;) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(s);
      if (rc == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(s, 0);
        int ok = mode && (strcmp(mode, "wal") == 0 || strcmp(mode, "memory") == 0);
        if (!ok) crs_say(st->why, sizeof st->why, "WAL mode is not available (journal mode %s)", mode ? mode : "?");
        sqlite3_finalize(s);
        return ok ? SQLITE_OK : SQLITE_ERROR;
      }
      note_failure(st, rc);
      sqlite3_finalize(s);
    } else {
      note_failure(st, rc);
    }
    if ((rc & 0xff) != SQLITE_BUSY || mono_now() >= deadline) return rc;
    sqlite3_sleep(5);
  }
}

static int create_schema(crs_store *st) {
  char sql[160];
  uint64_t start;
  int rc = exec(st, SCHEMA);
  if (rc != SQLITE_OK) return rc;
  sqlite3_randomness((int)sizeof start, &start);
  snprintf(sql, sizeof sql,
           "INSERT INTO meta VALUES ('generation', %llu);"
           "PRAGMA application_id = %d; PRAGMA user_version = %d;",
           (unsigned long long)(start >> 16), CRS_APP_ID, CRS_FORMAT);
  return exec(st, sql);
}

/* Makes the file a store of this format: created when empty, emptied and
 * made again when damaged or of another format. note gets what was done. */
static int settle(crs_store *st, char *note, size_t notecap) {
  int rc, kind = F_CURRENT, format = 0, pass;
  for (pass = 0; pass < 2; pass++) {
    rc = identify(st, &kind, &format);
    if (rc == SQLITE_OK && kind == F_CURRENT) return use_wal(st);
    if (rc == SQLITE_OK && kind == F_FOREIGN) {
      crs_say(st->why, sizeof st->why, "it is an SQLite database of another application "
               "(cache_resource changes nothing in it): choose another path");
      return SQLITE_ERROR;
    }
    if (rc != SQLITE_OK && !is_damage(rc)) return rc;
    if (rc != SQLITE_OK || kind == F_OTHER_FORMAT) {
      if (note && notecap && rc != SQLITE_OK)
        crs_say(note, notecap, "cache_resource.sqlite: %s was damaged (%s); it has been emptied", st->path, st->why);
      else if (note && notecap)
        crs_say(note, notecap, "cache_resource.sqlite: %s was a store of format %d; it has been emptied for format %d",
                st->path, format, CRS_FORMAT);
      if ((rc = empty_file(st)) != SQLITE_OK) return rc;
    }
    if ((rc = use_wal(st)) != SQLITE_OK) return rc;
    /* Under the write lock, so that one of the processes opening the file
     * at once makes the schema; the others find it made. */
    if ((rc = exec(st, "BEGIN IMMEDIATE")) != SQLITE_OK) return rc;
    rc = identify(st, &kind, &format);
    if (rc == SQLITE_OK && kind == F_EMPTY) rc = create_schema(st);
    if (rc == SQLITE_OK && (kind == F_EMPTY || kind == F_CURRENT)) {
      rc = exec(st, "COMMIT");
      if (rc == SQLITE_OK) return rc;
    }
    if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    if (rc != SQLITE_OK && !is_damage(rc)) return rc;
    /* another process wrote something else in between: judge it again */
  }
  crs_say(st->why, sizeof st->why, "another process keeps changing the file");
  return SQLITE_BUSY;
}

/* The connection's settings, the schema, the statements. */
static int setup(crs_store *st, char *note, size_t notecap) {
  /* mmap off: a file truncated under a mapping faults (SIGBUS) instead of
   * failing a read. synchronous=NORMAL: in WAL mode a crash of the process
   * loses nothing committed, a power loss at most the last commits; the
   * file stays consistent either way. temp_store=MEMORY: the counting
   * triggers give each write a statement journal, which holds the pages a
   * replaced entry frees; in a temporary file that doubled the cost of
   * replacing a large entry (make bench, "SQLite set 100 KB"). */
  int rc = exec(st, "PRAGMA mmap_size = 0; PRAGMA synchronous = NORMAL;"
                    " PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;");
  if (rc == SQLITE_OK || is_damage(rc)) rc = settle(st, note, notecap);
  if (rc == SQLITE_OK) rc = prepare_all(st);
  return rc;
}

int crs_open(crs_store *st, char *note, size_t notecap) {
  int rc;
  if (note && notecap) note[0] = '\0';
  if (sqlite3_libversion_number() < CRS_MIN_SQLITE) {
    crs_say(st->err, sizeof st->err, "cache_resource.sqlite: needs SQLite 3.24 or later (this is %s)",
             sqlite3_libversion());
    return SQLITE_ERROR;
  }
  rc = sqlite3_open_v2(st->path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                       NULL);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, st->timeout_ms);
    rc = setup(st, note, notecap);
  } else {
    note_failure(st, rc);
  }
  if (rc != SQLITE_OK) {
    describe(st, rc, "open");
    finalize_all(st);
    sqlite3_close_v2(st->db);
    st->db = NULL;
  }
  return rc;
}

/* A damaged file: emptied and made again. Appends the outcome to st->err.
 * When that fails (another process holds the lock), the store is left
 * without statements and ready() sets it up at the next call. */
static void recover(crs_store *st) {
  size_t n = strlen(st->err);
  int rc;
  reset_all(st);
  finalize_all(st);
  rc = empty_file(st);
  if (rc == SQLITE_OK) rc = setup(st, NULL, 0);
  if (rc == SQLITE_OK)
    crs_say(st->err + n, sizeof st->err - n, "; the file was damaged and has been emptied (the store works again)");
  else
    crs_say(st->err + n, sizeof st->err - n, "; the file is damaged, and emptying it failed (%s): "
             "tried again at the next call", st->why);
}

/* Fills st->err for a failed call; a damaged file is recovered. */
static int failed(crs_store *st, int rc, const char *what) {
  describe(st, rc, what);
  if (st->db && !sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  if (is_damage(rc) && st->db) recover(st);
  return rc;
}

/* The start of every method. A store whose last recovery failed has no
 * statements: it is set up again (which empties the file if it is still
 * damaged; another process may have done so meanwhile). S_GET is reset
 * first: it is the one statement a method can leave stepped (when copying
 * its value out raised out of memory), and a finalizer run by that copy
 * may call another method before get resets it. */
static int ready(crs_store *st) {
  if (!st->db) {
    crs_say(st->err, sizeof st->err, "cache_resource.sqlite: the store %s is closed", st->path);
    return SQLITE_MISUSE;
  }
  if (!st->stmt[S_GET]) {
    int rc = setup(st, NULL, 0);
    if (rc != SQLITE_OK) {
      describe(st, rc, "use");
      return rc;
    }
  }
  sqlite3_reset(st->stmt[S_GET]);
  return SQLITE_OK;
}

/* ---- touches (see the top) --------------------------------------------- */

static void forget_touches(crs_store *st) {
  if (st->ntouches) memset(st->touches, 0, sizeof st->touches);
  st->ntouches = 0;
}

/* Inside a write transaction. The touches are gone afterwards either way. */
static int write_touches(crs_store *st) {
  sqlite3_stmt *s = st->stmt[S_TOUCH];
  size_t i;
  int rc = SQLITE_OK;
  for (i = 0; i < CRS_TOUCH_SLOTS && rc == SQLITE_OK && st->ntouches; i++) {
    if (!st->touches[i].entry) continue;
    sqlite3_bind_int64(s, 1, st->touches[i].entry);
    sqlite3_bind_int64(s, 2, st->touches[i].used);
    rc = run(st, s);
  }
  forget_touches(st);
  return rc;
}

/* Outside a write: a transaction of its own that never waits for the
 * lock (a read must not wait for other processes' writes); busy leaves the
 * touches for later. */
static void flush_touches(crs_store *st) {
  int rc;
  if (!st->db || !st->stmt[S_BEGIN] || st->ntouches == 0) return;
  sqlite3_busy_timeout(st->db, 0);
  rc = run(st, st->stmt[S_BEGIN]);
  sqlite3_busy_timeout(st->db, st->timeout_ms);
  if ((rc & 0xff) == SQLITE_BUSY) return;
  if (rc == SQLITE_OK) rc = write_touches(st);
  if (rc == SQLITE_OK) rc = run(st, st->stmt[S_COMMIT]);
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(st->db)) run(st, st->stmt[S_ROLLBACK]);
  forget_touches(st); /* written, or lost to an error: the order is advice */
}

void crs_flush_if_due(crs_store *st) {
  if (st->ntouches >= CRS_TOUCHES || (st->ntouches > 0 && mono_now() - st->touches_since >= CRS_TOUCH_AGE))
    flush_touches(st);
}

void crs_touch(crs_store *st, int64_t entry) {
  int64_t used = next_used(st);
  size_t i = (size_t)(((uint64_t)entry * 0x9e3779b97f4a7c15u) >> 53) & (CRS_TOUCH_SLOTS - 1);
  if (st->ntouches >= CRS_TOUCHES) flush_touches(st);
  if (st->ntouches >= CRS_TOUCHES) return; /* still busy: this read goes uncounted */
  while (st->touches[i].entry && st->touches[i].entry != entry) i = (i + 1) & (CRS_TOUCH_SLOTS - 1);
  if (!st->touches[i].entry) {
    st->touches[i].entry = entry;
    if (st->ntouches++ == 0) st->touches_since = mono_now();
  }
  st->touches[i].used = used;
}

/* ---- writes ------------------------------------------------------------ */

/* BEGIN IMMEDIATE, this process's pending reads, and the bounded pruning
 * of expired rows: the start of every write. */
static int begin(crs_store *st) {
  sqlite3_stmt *prune = st->stmt[S_PRUNE];
  int rc = run(st, st->stmt[S_BEGIN]);
  if (rc == SQLITE_OK) rc = write_touches(st);
  if (rc == SQLITE_OK) {
    sqlite3_bind_double(prune, 1, crs_wall_now());
    rc = run(st, prune);
  }
  return rc;
}

static int commit(crs_store *st) {
  return run(st, st->stmt[S_COMMIT]);
}

static int remove_entry(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen) {
  sqlite3_stmt *s = st->stmt[S_DELETE];
  bind_id(s, 1, ns, nslen);
  bind_id(s, 2, key, keylen);
  return run(st, s);
}

static int insert(crs_store *st, const crs_put *p) {
  sqlite3_stmt *s = st->stmt[S_INSERT];
  int rc;
  bind_id(s, 1, p->ns, p->nslen);
  bind_id(s, 2, p->key, p->keylen);
  rc = sqlite3_bind_blob64(s, 6, p->bytes, (sqlite3_uint64)p->len, SQLITE_STATIC);
  if (rc != SQLITE_OK) { /* too big for SQLite */
    note_failure(st, rc);
    sqlite3_clear_bindings(s);
    return rc;
  }
  sqlite3_bind_int64(s, 3, (sqlite3_int64)p->len);
  if (p->expires_set) sqlite3_bind_double(s, 4, p->expires);
  else sqlite3_bind_null(s, 4);
  sqlite3_bind_int(s, 5, p->bounded);
  rc = run(st, s);
  if (rc == SQLITE_OK && p->bounded) {
    s = st->stmt[S_RANK];
    bind_id(s, 1, p->ns, p->nslen);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)p->len);
    sqlite3_bind_int64(s, 3, next_used(st));
    rc = run(st, s);
  }
  return rc;
}

/* Removes the ns's least recently used entries until it is within bounds. */
static int evict(crs_store *st, const crs_put *p) {
  sqlite3_stmt *bounds = st->stmt[S_BOUNDS], *lru = st->stmt[S_EVICT];
  for (;;) {
    sqlite3_int64 count = 0, size = 0;
    int rc;
    bind_id(bounds, 1, p->ns, p->nslen);
    rc = sqlite3_step(bounds);
    if (rc == SQLITE_ROW) {
      count = sqlite3_column_int64(bounds, 0);
      size = sqlite3_column_int64(bounds, 1);
    } else if (rc != SQLITE_DONE) {
      note_failure(st, rc);
    }
    sqlite3_reset(bounds);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
    if (count <= p->max_entries && size <= p->max_size) return SQLITE_OK;
    bind_id(lru, 1, p->ns, p->nslen);
    if ((rc = run(st, lru)) != SQLITE_OK) return rc;
    if (sqlite3_changes(st->db) == 0) return SQLITE_OK; /* nothing left to remove */
  }
}

int crs_set(crs_store *st, const crs_put *p) {
  int rc = ready(st);
  if (rc != SQLITE_OK) return rc;
  rc = begin(st);
  if (rc == SQLITE_OK) rc = remove_entry(st, p->ns, p->nslen, p->key, p->keylen);
  /* an entry larger than its bound alone is not kept */
  if (rc == SQLITE_OK && p->keep && !(p->bounded && (int64_t)p->len > p->max_size)) rc = insert(st, p);
  if (rc == SQLITE_OK && p->bounded) rc = evict(st, p);
  if (rc == SQLITE_OK) rc = commit(st);
  return rc == SQLITE_OK ? rc : failed(st, rc, "write to");
}

int crs_delete(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen) {
  int rc = ready(st);
  if (rc != SQLITE_OK) return rc;
  rc = begin(st);
  if (rc == SQLITE_OK) rc = remove_entry(st, ns, nslen, key, keylen);
  if (rc == SQLITE_OK) rc = commit(st);
  return rc == SQLITE_OK ? rc : failed(st, rc, "write to");
}

/* ns NULL: everything. */
int crs_clear(crs_store *st, const char *ns, size_t nslen) {
  int rc = ready(st);
  if (rc != SQLITE_OK) return rc;
  rc = begin(st);
  if (rc == SQLITE_OK && ns) {
    bind_id(st->stmt[S_CLEAR_NS], 1, ns, nslen);
    rc = run(st, st->stmt[S_CLEAR_NS]);
    if (rc == SQLITE_OK) {
      bind_id(st->stmt[S_BUMP_NS], 1, ns, nslen);
      rc = run(st, st->stmt[S_BUMP_NS]);
    }
  } else if (rc == SQLITE_OK) {
    rc = run(st, st->stmt[S_CLEAR_ALL]);
    if (rc == SQLITE_OK) rc = run(st, st->stmt[S_BUMP_ALL]);
  }
  if (rc == SQLITE_OK) rc = commit(st);
  return rc == SQLITE_OK ? rc : failed(st, rc, "write to");
}

/* ---- reads ------------------------------------------------------------- */

/* ns NULL: the generation of clear(nil) alone. */
int crs_generation(crs_store *st, const char *ns, size_t nslen, lua_Integer *gen) {
  sqlite3_stmt *s;
  int rc = ready(st);
  if (rc != SQLITE_OK) return rc;
  crs_flush_if_due(st);
  s = st->stmt[S_GENERATION];
  if (ns) bind_id(s, 1, ns, nslen);
  else sqlite3_bind_null(s, 1);
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    *gen = (lua_Integer)sqlite3_column_int64(s, 0);
    rc = SQLITE_OK;
  } else {
    note_failure(st, rc);
  }
  sqlite3_reset(s);
  return rc == SQLITE_OK ? rc : failed(st, rc, "read");
}

/* Steps S_GET for (ns, key). SQLITE_ROW: *row is positioned on a live
 * entry (module.c copies the blob out of column 3, then calls
 * crs_lookup_done), and *bounded is its rowid when it was set with limits
 * (a touch to remember), else 0. SQLITE_DONE: a miss (or expired).
 * Else a failure, in st->err. */
int crs_lookup(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen,
               sqlite3_stmt **row, int64_t *bounded) {
  sqlite3_stmt *s;
  int rc = ready(st);
  if (rc != SQLITE_OK) return rc;
  crs_flush_if_due(st);
  s = st->stmt[S_GET];
  bind_id(s, 1, ns, nslen);
  bind_id(s, 2, key, keylen);
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_type(s, 1) == SQLITE_NULL || sqlite3_column_double(s, 1) > crs_wall_now()) {
      *bounded = sqlite3_column_int(s, 2) ? sqlite3_column_int64(s, 0) : 0;
      *row = s;
      return rc;
    }
    rc = SQLITE_DONE; /* expired: never returned, removed by a later write */
  } else if (rc != SQLITE_DONE) {
    note_failure(st, rc);
  }
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? rc : failed(st, rc, "read");
}

/* After the row's value was pushed: Lua may have run a finalizer that
 * used or closed this store, so the statement is looked up again. */
void crs_lookup_done(crs_store *st) {
  if (st->db && st->stmt[S_GET]) sqlite3_reset(st->stmt[S_GET]);
}

/* ---- closing ------------------------------------------------------------ */

void crs_close(crs_store *st) {
  if (!st->db) return;
  reset_all(st);
  flush_touches(st);
  finalize_all(st);
  sqlite3_close_v2(st->db);
  st->db = NULL;
}
