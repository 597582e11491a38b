/* Where the store lives, and making its directory and file private.
 *
 * The default path is the first of
 *   $CR_CACHE_DIR/cache_data.sqlite3
 *   $XDG_CACHE_HOME/cache_resource/cache_data.sqlite3   (an absolute path only)
 *   $HOME/.cache/cache_resource/cache_data.sqlite3
 * whose variable is set and not empty (the XDG base directory rules: a
 * relative XDG_CACHE_HOME is ignored).
 *
 * Opening a store creates the missing directories above its file with mode
 * 0700 and a missing file with mode 0600, whatever the umask: mkdir and
 * open apply the umask, so the mode is set again on what was just created.
 * SQLite gives its -wal and -shm files the mode of the database file.
 * Directories and files that exist are left as they are. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "store.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static const char *env(const char *name) {
  const char *v = getenv(name);
  return (v && *v) ? v : NULL;
}

/* dir + "/" + tail into out, without doubling a slash dir ends with. */
static int join(char *out, size_t cap, const char *dir, const char *tail) {
  size_t n = strlen(dir);
  int len;
  while (n > 1 && dir[n - 1] == '/') n--;
  len = snprintf(out, cap, "%.*s/%s", (int)n, dir, tail);
  return len > 0 && (size_t)len < cap;
}

int crs_default_path(char *out, size_t cap, char *err, size_t errcap) {
  const char *dir;
  int ok;
  if ((dir = env("CR_CACHE_DIR")) != NULL)
    ok = join(out, cap, dir, CRS_FILE_NAME);
  else if ((dir = env("XDG_CACHE_HOME")) != NULL && dir[0] == '/')
    ok = join(out, cap, dir, "cache_resource/" CRS_FILE_NAME);
  else if ((dir = env("HOME")) != NULL)
    ok = join(out, cap, dir, ".cache/cache_resource/" CRS_FILE_NAME);
  else {
    crs_say(err, errcap, "cache_resource.sqlite: no place for the store: "
             "set CR_CACHE_DIR (or HOME, or XDG_CACHE_HOME)");
    return 0;
  }
  if (!ok) crs_say(err, errcap, "cache_resource.sqlite: the store's path under %s is too long", dir);
  return ok;
}

/* Creates dir (one component) private, or accepts an existing directory. */
static int make_dir(const char *dir, char *err, size_t errcap) {
  struct stat sb;
  if (mkdir(dir, 0700) == 0) {
    if (chmod(dir, 0700) == 0) return 1;
  } else if (errno == EEXIST && stat(dir, &sb) == 0) {
    if (S_ISDIR(sb.st_mode)) return 1;
    errno = ENOTDIR;
  }
  crs_say(err, errcap, "cache_resource.sqlite: cannot create the directory %s (%s)", dir, strerror(errno));
  return 0;
}

/* Every missing directory above path, outermost first. */
static int make_parents(const char *path, char *err, size_t errcap) {
  struct stat sb;
  size_t n = strlen(path), i;
  char *dir;
  int ok = 1;
  while (n > 0 && path[n - 1] != '/') n--;  /* the parent, with its slash */
  while (n > 1 && path[n - 1] == '/') n--;
  if (n == 0 || (n == 1 && path[0] == '/')) return 1;
  dir = (char *)malloc(n + 1);
  if (!dir) {
    crs_say(err, errcap, "cache_resource.sqlite: out of memory");
    return 0;
  }
  memcpy(dir, path, n);
  dir[n] = '\0';
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) { /* else: the common case, nothing to make */
    for (i = 1; ok && i <= n; i++) {
      if (i < n && dir[i] != '/') continue;
      if (i < n && dir[i - 1] == '/') continue; /* a doubled slash */
      dir[i] = '\0';
      ok = make_dir(dir, err, errcap);
      if (i < n) dir[i] = '/';
    }
  }
  free(dir);
  return ok;
}

/* A missing file is created 0600 (O_EXCL: never through someone's link);
 * an existing one is SQLite's to judge. */
static int make_file(const char *path, char *err, size_t errcap) {
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    int ok = fchmod(fd, 0600) == 0;
    int saved = errno;
    close(fd);
    if (ok) return 1;
    errno = saved;
  } else if (errno == EEXIST) {
    return 1;
  }
  crs_say(err, errcap, "cache_resource.sqlite: cannot create %s (%s)", path, strerror(errno));
  return 0;
}

int crs_prepare_path(const char *path, char *err, size_t errcap) {
  if (strcmp(path, ":memory:") == 0) return 1; /* SQLite's private in-memory database */
  return make_parents(path, err, errcap) && make_file(path, err, errcap);
}
