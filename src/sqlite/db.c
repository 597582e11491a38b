/* The SQLite side of the store: the connection, the schema, one
 * transaction per write, least-recently-used bounds, damage.
 *
 * The schema (format 1)
 * ---------------------
 * A store file is recognised by `PRAGMA application_id` = CRS_APP_ID and
 * its format by `PRAGMA user_version` = CRS_FORMAT.
 *
 *   entries(ns, key, bytes, size, expires, used)   one row an entry, UNIQUE (ns, key)
 *     size     length(bytes), so that removing a row never reads the blob
 *     expires  wall-clock seconds since the epoch, NULL: never
 *     used     for an entry set with limits: its last use (ns since the
 *              epoch, growing), the LRU order; NULL for an unbounded entry
 *   spaces(ns, gen, count, size)   per ns: clears so far; count and sum of
 *                                  size of its rows with `used` set
 *   meta(name, value)              'generation': clear(nil)s so far, from
 *                                  a random start
 *
 * Invariant (kept by the triggers below, whatever statement removes a
 * row): spaces.count and spaces.size are the number and total size of the
 * ns's bounded rows. generation(ns) is meta.generation + spaces.gen: both
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
 * a write transaction (make bench, "bare read + last-used UPDATE", puts it
 * at several times the read itself), so reads of bounded entries are
 * remembered in the store (crs_touch) and written in one batch: with this
 * process's next write (before it evicts anything, so eviction in one
 * process sees all of its reads), when CRS_TOUCHES are pending, when the
 * oldest waited CRS_TOUCH_AGE seconds, and at close. Another process's
 * reads count once it wrote them. */
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
  "  ns TEXT NOT NULL, key TEXT NOT NULL, bytes BLOB NOT NULL, size INTEGER NOT NULL,"
  "  expires REAL, used INTEGER, UNIQUE (ns, key));"
  "CREATE INDEX entries_expiry ON entries (expires) WHERE expires IS NOT NULL;"
  "CREATE INDEX entries_lru ON entries (ns, used) WHERE used IS NOT NULL;"
  "CREATE TABLE spaces ("
  "  ns TEXT PRIMARY KEY, gen INTEGER NOT NULL, count INTEGER NOT NULL, size INTEGER NOT NULL"
  ") WITHOUT ROWID;"
  "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
  "CREATE TRIGGER entries_counted AFTER INSERT ON entries WHEN new.used IS NOT NULL BEGIN"
  "  INSERT INTO spaces (ns, gen, count, size) VALUES (new.ns, 0, 1, new.size)"
  "  ON CONFLICT (ns) DO UPDATE SET count = count + 1, size = size + excluded.size;"
  "END;"
  "CREATE TRIGGER entries_uncounted AFTER DELETE ON entries WHEN old.used IS NOT NULL BEGIN"
  "  UPDATE spaces SET count = count - 1, size = size - old.size WHERE ns = old.ns;"
  "END;";

/* Indexed by enum crs_stmt. Every value is a bound parameter. */
static const char *const SQL[S_COUNT] = {
  /* S_GET: columns read in the order 1, 2, 0 (the blob last: see module.c) */
  "SELECT bytes, expires, used IS NOT NULL FROM entries WHERE ns = ?1 AND key = ?2",
  "BEGIN IMMEDIATE",
  "COMMIT",
  "ROLLBACK",
  "DELETE FROM entries WHERE rowid IN"
  " (SELECT rowid FROM entries WHERE expires <= ?1 LIMIT " CRS_PRUNE ")",
  "DELETE FROM entries WHERE ns = ?1 AND key = ?2",
  "INSERT INTO entries (ns, key, bytes, size, expires, used) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
  "SELECT count, size FROM spaces WHERE ns = ?1",
  "DELETE FROM entries WHERE rowid ="
  " (SELECT rowid FROM entries WHERE ns = ?1 AND used IS NOT NULL ORDER BY used LIMIT 1)",
  "UPDATE entries SET used = max(used, ?3) WHERE ns = ?1 AND key = ?2 AND used IS NOT NULL",
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
   * file stays consistent either way. */
  int rc = exec(st, "PRAGMA mmap_size = 0; PRAGMA synchronous = NORMAL;"
                    " PRAGMA journal_size_limit = 67108864;");
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

/* A damaged file: emptied and made again. Appends the outcome to st->err. */
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

/* A store whose last recovery failed has no statements: it tries again. */
static int ready(crs_store *st) {
  if (!st->db) {
    crs_say(st->err, sizeof st->err, "cache_resource.sqlite: the store %s is closed", st->path);
    return SQLITE_MISUSE;
  }
  if (!st->stmt[S_GET]) {
    crs_say(st->err, sizeof st->err, "cache_resource.sqlite: cannot use %s", st->path);
    recover(st);
    if (!st->stmt[S_GET]) return SQLITE_CORRUPT;
  }
  reset_all(st);
  return SQLITE_OK;
}

/* ---- touches (see the top) --------------------------------------------- */

static void drop_touches(crs_store *st) {
  size_t i;
  for (i = 0; i < st->ntouches; i++) free(st->touches[i].id);
  st->ntouches = 0;
}

/* Inside a write transaction. */
static int write_touches(crs_store *st) {
  sqlite3_stmt *s = st->stmt[S_TOUCH];
  size_t i;
  int rc = SQLITE_OK;
  for (i = 0; i < st->ntouches && rc == SQLITE_OK; i++) {
    const crs_read *t = &st->touches[i];
    bind_id(s, 1, t->id, t->nslen);
    bind_id(s, 2, t->id + t->nslen, t->keylen);
    sqlite3_bind_int64(s, 3, t->used);
    rc = run(st, s);
  }
  drop_touches(st);
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
  drop_touches(st); /* written, or lost to an error: the order is advice */
}

void crs_flush_if_due(crs_store *st) {
  if (st->ntouches == CRS_TOUCHES || (st->ntouches > 0 && mono_now() - st->touches_since >= CRS_TOUCH_AGE))
    flush_touches(st);
}

void crs_touch(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen) {
  int64_t used = next_used(st);
  crs_read *t;
  size_t i;
  for (i = 0; i < st->ntouches; i++) {
    t = &st->touches[i];
    if (t->nslen == nslen && t->keylen == keylen && memcmp(t->id, ns, nslen) == 0 &&
        memcmp(t->id + nslen, key, keylen) == 0) {
      t->used = used;
      return;
    }
  }
  if (st->ntouches == CRS_TOUCHES) flush_touches(st);
  if (st->ntouches == CRS_TOUCHES || nslen > SIZE_MAX - keylen - 1) return; /* still busy: this read goes uncounted */
  t = &st->touches[st->ntouches];
  t->id = (char *)malloc(nslen + keylen + 1);
  if (!t->id) return;
  memcpy(t->id, ns, nslen);
  memcpy(t->id + nslen, key, keylen);
  t->nslen = nslen;
  t->keylen = keylen;
  t->used = used;
  if (st->ntouches++ == 0) st->touches_since = mono_now();
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
  rc = sqlite3_bind_blob64(s, 3, p->bytes, (sqlite3_uint64)p->len, SQLITE_STATIC);
  if (rc != SQLITE_OK) { /* too big for SQLite */
    note_failure(st, rc);
    sqlite3_clear_bindings(s);
    return rc;
  }
  sqlite3_bind_int64(s, 4, (sqlite3_int64)p->len);
  if (p->expires_set) sqlite3_bind_double(s, 5, p->expires);
  else sqlite3_bind_null(s, 5);
  if (p->bounded) sqlite3_bind_int64(s, 6, next_used(st));
  else sqlite3_bind_null(s, 6);
  rc = run(st, s);
  sqlite3_bind_null(s, 3); /* the blob is the caller's string: not kept bound */
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
 * entry (module.c copies the blob out, then calls crs_lookup_done), and
 * *bounded says whether it has limits. SQLITE_DONE: a miss (or expired).
 * Else a failure, in st->err. */
int crs_lookup(crs_store *st, const char *ns, size_t nslen, const char *key, size_t keylen,
               sqlite3_stmt **row, int *bounded) {
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
      *bounded = sqlite3_column_int(s, 2);
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
  drop_touches(st);
  finalize_all(st);
  sqlite3_close_v2(st->db);
  st->db = NULL;
}
