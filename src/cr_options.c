/* Wrapping a function: option checking, durations, identity
 * and the parameter skip mask, all computed once here so the
 * call path never touches the debug library. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cr.h"

/* The options of each decorator, for suggestions (`did you mean`). */
static const char *const resource_options[] = {
  "ttl", "max_entries", "validate", "on_release", "hash_funcs", "show_spinner",
  "show_time", "experimental_allow_widgets", "scope", "name", "refresh_mode", "max_stale",
  "failure_ttl", NULL
};
static const char *const data_options[] = {
  "ttl", "max_entries", "hash_funcs", "show_spinner", "show_time", "experimental_allow_widgets",
  "scope", "name", "refresh_mode", "max_stale", "failure_ttl", "persist", "max_size", NULL
};

typedef struct cr_opts {
  int data;                     /* cache_data's options (its errors start with cache_data:) */
  const char *kind;             /* "cache_resource" or "cache_data" */
  double ttl, max_stale, failure_ttl;
  int refresh_background, has_max_stale, has_failure_ttl;
  lua_Integer max_entries, max_size;
  int validate, on_release, hash_funcs, spinner_text; /* present in the table */
  int show_spinner, show_time, allow_widgets, session_scope;
  int persist;                  /* cache_data: persist given and not false */
  const char *name;
} cr_opts;

/* ---- durations ------------------------------------------------------- */

static const struct { const char *unit; double seconds; } units[] = {
  {"ms", 0.001}, {"msec", 0.001}, {"msecs", 0.001}, {"millisecond", 0.001}, {"milliseconds", 0.001},
  {"s", 1}, {"sec", 1}, {"secs", 1}, {"second", 1}, {"seconds", 1},
  {"m", 60}, {"min", 60}, {"mins", 60}, {"minute", 60}, {"minutes", 60},
  {"h", 3600}, {"hr", 3600}, {"hrs", 3600}, {"hour", 3600}, {"hours", 3600},
  {"d", 86400}, {"day", 86400}, {"days", 86400},
  {"w", 604800}, {"week", 604800}, {"weeks", 604800},
  {NULL, 0}
};

/* Reads a quantity at *s: spaces (and commas, between the parts of a
 * duration), a decimal number, spaces, a unit of letters (lowercased into
 * unit, `size` bytes with its NUL). Returns 0 when there is no number or
 * the unit does not fit; *s moves past what was read. */
static int read_quantity(const char **s, double *num, char *unit, size_t size) {
  const char *p = *s;
  double scale = 0.1;
  size_t ul = 0;
  int digits = 0;
  *num = 0;
  while (isspace((unsigned char)*p) || *p == ',') p++;
  while (isdigit((unsigned char)*p)) *num = *num * 10 + (*p++ - '0'), digits++;
  if (*p == '.') {
    p++;
    while (isdigit((unsigned char)*p)) *num += (*p++ - '0') * scale, scale /= 10, digits++;
  }
  if (!digits) return 0;
  while (isspace((unsigned char)*p)) p++;
  while (isalpha((unsigned char)*p)) {
    if (ul + 1 >= size) return 0;
    unit[ul++] = (char)tolower((unsigned char)*p++);
  }
  unit[ul] = '\0';
  *s = p;
  return 1;
}

/* "90s", "1.5h", "1d2h34m", "500ms", "2 days", "30 minutes": one or more
 * number-unit parts, spaces allowed between and inside parts. */
static int parse_duration(const char *s, double *out) {
  double total = 0;
  int parts = 0;
  for (;;) {
    double num;
    char unit[16];
    int i, found = 0;
    while (isspace((unsigned char)*s) || *s == ',') s++;
    if (*s == '\0') break;
    if (!read_quantity(&s, &num, unit, sizeof unit) || unit[0] == '\0') return 0;
    for (i = 0; units[i].unit; i++)
      if (strcmp(units[i].unit, unit) == 0) {
        total += num * units[i].seconds;
        found = 1;
        break;
      }
    if (!found) return 0;
    parts++;
  }
  if (!parts) return 0;
  *out = total;
  return 1;
}

/* ---- options --------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), i, j, prev[64], cur[64];
  if (la >= 63 || lb >= 63) return 99;
  for (j = 0; j <= lb; j++) prev[j] = j;
  for (i = 1; i <= la; i++) {
    cur[0] = i;
    for (j = 1; j <= lb; j++) {
      size_t del = prev[j] + 1, ins = cur[j - 1] + 1, sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      cur[j] = del < ins ? del : ins;
      if (sub < cur[j]) cur[j] = sub;
    }
    memcpy(prev, cur, (lb + 1) * sizeof *prev);
  }
  return prev[lb];
}

CR_NORETURN static void unknown_option(lua_State *L, const cr_opts *o, const char *key) {
  const char *const *names = o->data ? data_options : resource_options;
  const char *best = NULL;
  size_t bestd = 3;
  int i;
  luaL_Buffer b;
  if (o->data && (strcmp(key, "validate") == 0 || strcmp(key, "on_release") == 0))
    cr_error(L, "cache_data: unknown option '%s' (cache_data returns copies; use cache_resource for values "
                "that need releasing)", key);
  for (i = 0; names[i]; i++) {
    size_t d = edit_distance(key, names[i]);
    if (d < bestd) bestd = d, best = names[i];
  }
  if (best) cr_error(L, "%s: unknown option '%s' (did you mean '%s'?)", o->kind, key, best);
  luaL_buffinit(L, &b);
  for (i = 0; names[i]; i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addstring(&b, names[i]);
  }
  luaL_pushresult(&b);
  cr_error(L, "%s: unknown option '%s' (known options: %s)", o->kind, key, lua_tostring(L, -1));
}

static int is_callable(lua_State *L, int idx) {
  if (lua_isfunction(L, idx)) return 1;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* Pushes what was given, for messages: `a string "10"`, `2.5`, `a boolean
 * (true)`, `a table`. */
static const char *given(lua_State *L, int idx) {
  luaL_Buffer b;
  size_t len;
  const char *s;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
      s = lua_tolstring(L, idx, &len);
      luaL_buffinit(L, &b);
      luaL_addstring(&b, "a string \"");
      luaL_addlstring(&b, s, len > 40 ? 40 : len);
      luaL_addstring(&b, len > 40 ? "...\"" : "\"");
      luaL_pushresult(&b);
      return lua_tostring(L, -1);
    case LUA_TNUMBER: return luaL_tolstring(L, idx, NULL);
    case LUA_TBOOLEAN: return lua_pushstring(L, lua_toboolean(L, idx) ? "a boolean (true)" : "a boolean (false)");
    default: return lua_pushfstring(L, "a %s", luaL_typename(L, idx));
  }
}

CR_NORETURN static void bad_option(lua_State *L, const cr_opts *o, const char *name, const char *expected, int idx) {
  cr_error(L, "%s: option '%s' must be %s, got %s", o->kind, name, expected, given(L, idx));
}

/* A duration option like ttl: seconds >= 0 (math.huge: forever) or a
 * duration string. */
static double duration_option(lua_State *L, const cr_opts *o, const char *name, int v) {
  double d = 0;
  if (lua_type(L, v) == LUA_TNUMBER) {
    d = (double)lua_tonumber(L, v);
    if (!(d >= 0)) bad_option(L, o, name, ">= 0 seconds", v);
  } else if (lua_type(L, v) == LUA_TSTRING) {
    if (strlen(lua_tostring(L, v)) != lua_rawlen(L, v) || !parse_duration(lua_tostring(L, v), &d))
      cr_error(L, "%s: option '%s': cannot read the duration '%s' (write it like "
                    "\"90s\", \"1.5h\", \"1d2h34m\", \"500ms\", \"2 days\" or give seconds as a number)",
                 o->kind, name, lua_tostring(L, v));
  } else {
    bad_option(L, o, name, "a number of seconds or a duration string like \"1h\"", v);
  }
  return d;
}

/* "500KB", "1.5 MB", "2gb", "10 b": a number, a unit (B, KB, MB, GB, any
 * case; 1 KB = 1024 B), spaces around and between; rounded down to whole
 * bytes. 0 for anything else, or a size below one byte or past 2^62. */
static int parse_size(const char *s, lua_Integer *out) {
  static const char *const units[] = { "b", "kb", "mb", "gb", NULL };
  double num, bytes;
  char unit[4];
  int i;
  if (strchr(s, ',') || !read_quantity(&s, &num, unit, sizeof unit)) return 0;
  while (isspace((unsigned char)*s)) s++;
  if (*s != '\0') return 0;
  for (i = 0; units[i]; i++)
    if (strcmp(units[i], unit) == 0) break;
  if (units[i] == NULL) return 0;
  bytes = floor(num * (double)((lua_Integer)1 << (10 * i)));
  if (!(bytes >= 1 && bytes < 4611686018427387904.0)) return 0;
  *out = (lua_Integer)bytes;
  return 1;
}

static void size_option(lua_State *L, const cr_opts *o, const char *name, int v, lua_Integer *out) {
  int isint;
  if (lua_type(L, v) == LUA_TNUMBER) {
    *out = lua_tointegerx(L, v, &isint);
    if (!isint || *out < 1) bad_option(L, o, name, "an integer >= 1 (bytes) or a size string like \"500KB\"", v);
  } else if (lua_type(L, v) == LUA_TSTRING) {
    if (strlen(lua_tostring(L, v)) != lua_rawlen(L, v) || !parse_size(lua_tostring(L, v), out))
      cr_error(L, "%s: option '%s': cannot read the size '%s' (write it like \"500KB\", \"1.5 MB\", \"2gb\": "
                  "B, KB, MB or GB, 1 KB = 1024 B; or give bytes as an integer)", o->kind, name, lua_tostring(L, v));
  } else {
    bad_option(L, o, name, "an integer >= 1 (bytes) or a size string like \"500KB\"", v);
  }
}

static void check_hash_funcs(lua_State *L, const cr_opts *o, int t) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int kt = lua_type(L, -2);
    if (kt != LUA_TSTRING && kt != LUA_TTABLE)
      cr_error(L, "%s: option 'hash_funcs' keys must be type names, __name strings or "
                    "metatables, got a %s key", o->kind, luaL_typename(L, -2));
    if (!is_callable(L, -1))
      cr_error(L, "%s: option 'hash_funcs' must map each key to a function, got a %s for key '%s'",
                 o->kind, luaL_typename(L, -1), kt == LUA_TSTRING ? lua_tostring(L, -2) : "<metatable>");
    lua_pop(L, 1);
  }
}

/* The options that only cache_data has, and what it does not take. */
static int data_option(lua_State *L, cr_opts *o, const char *k, int v) {
  if (!o->data) return 0;
  if (strcmp(k, "max_size") == 0) {
    size_option(L, o, k, v, &o->max_size);
    return 1;
  }
  if (strcmp(k, "persist") == 0) {
    int t = lua_type(L, v);
    if (t == LUA_TBOOLEAN) o->persist = lua_toboolean(L, v);
    else if (t == LUA_TTABLE || t == LUA_TUSERDATA) o->persist = 1;
    else if (t == LUA_TSTRING && strcmp(lua_tostring(L, v), "disk") == 0) o->persist = 1;
    else bad_option(L, o, k, "true, \"disk\", a store or false", v);
    return 1;
  }
  return 0;
}

static void parse_options(lua_State *L, int t, cr_opts *o, int data) {
  memset(o, 0, sizeof *o);
  o->data = data;
  o->kind = data ? "cache_data" : "cache_resource";
  o->ttl = HUGE_VAL;
  o->show_spinner = 1;
  if (t == 0) return;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int v = lua_gettop(L);
    const char *k;
    if (lua_type(L, -2) != LUA_TSTRING)
      cr_error(L, "%s: option names must be strings, got a %s key", o->kind, luaL_typename(L, -2));
    k = lua_tostring(L, -2);
    if (data_option(L, o, k, v)) {
      /* persist, max_size */
    } else if (strcmp(k, "ttl") == 0) {
      o->ttl = duration_option(L, o, k, v);
    } else if (strcmp(k, "max_entries") == 0) {
      int isint;
      o->max_entries = lua_tointegerx(L, v, &isint);
      if (!isint || lua_type(L, v) != LUA_TNUMBER || o->max_entries < 1)
        bad_option(L, o, k, "an integer >= 1", v);
    } else if (!data && (strcmp(k, "validate") == 0 || strcmp(k, "on_release") == 0)) {
      if (!is_callable(L, v)) bad_option(L, o, k, "a function", v);
      if (k[0] == 'v') o->validate = 1;
      else o->on_release = 1;
    } else if (strcmp(k, "hash_funcs") == 0) {
      if (!lua_istable(L, v)) bad_option(L, o, k, "a table of functions", v);
      check_hash_funcs(L, o, v);
      o->hash_funcs = 1;
    } else if (strcmp(k, "show_spinner") == 0) {
      if (lua_type(L, v) == LUA_TSTRING) o->show_spinner = 1, o->spinner_text = 1;
      else if (lua_isboolean(L, v)) o->show_spinner = lua_toboolean(L, v);
      else bad_option(L, o, k, "a boolean or a string", v);
    } else if (strcmp(k, "show_time") == 0 || strcmp(k, "experimental_allow_widgets") == 0) {
      if (!lua_isboolean(L, v)) bad_option(L, o, k, "a boolean", v);
      if (k[0] == 's') o->show_time = lua_toboolean(L, v);
      else o->allow_widgets = lua_toboolean(L, v);
    } else if (strcmp(k, "scope") == 0) {
      const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : NULL;
      if (s && strcmp(s, "session") == 0) o->session_scope = 1;
      else if (!s || strcmp(s, "global") != 0)
        bad_option(L, o, k, "\"global\" or \"session\"", v);
    } else if (strcmp(k, "refresh_mode") == 0) {
      const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : NULL;
      if (s && strcmp(s, "background") == 0) o->refresh_background = 1;
      else if (!s || strcmp(s, "foreground") != 0)
        bad_option(L, o, k, "\"foreground\" or \"background\"", v);
    } else if (strcmp(k, "max_stale") == 0) {
      o->max_stale = duration_option(L, o, k, v);
      o->has_max_stale = 1;
    } else if (strcmp(k, "failure_ttl") == 0) {
      o->failure_ttl = duration_option(L, o, k, v);
      o->has_failure_ttl = 1;
    } else if (strcmp(k, "name") == 0) {
      if (lua_type(L, v) != LUA_TSTRING || lua_rawlen(L, v) == 0) bad_option(L, o, k, "a non-empty string", v);
      o->name = lua_tostring(L, v);
    } else {
      unknown_option(L, o, k);
    }
    lua_settop(L, v - 1);
  }
  if (o->refresh_background && !(o->ttl > 0 && o->ttl != HUGE_VAL))
    cr_error(L, "%s: option 'refresh_mode' = \"background\" requires option 'ttl' > 0 (the age at "
                  "which an entry is refreshed)", o->kind);
  if (!o->has_max_stale) o->max_stale = o->refresh_background ? o->ttl : 0;
  if (o->persist && o->session_scope)
    cr_error(L, "cache_data: option 'persist' cannot be used with scope = \"session\" (a persisted entry is "
                "shared by every session and process: drop one of the two options)");
  if (o->persist && o->allow_widgets)
    cr_error(L, "cache_data: option 'persist' cannot be used with experimental_allow_widgets = true (widget "
                "values belong to one session: drop one of the two options)");
}

/* ---- caches ---------------------------------------------------------- */

static char *dup_string(lua_State *L, const char *s) {
  size_t len = strlen(s) + 1;
  char *p = (char *)malloc(len);
  if (p == NULL) cr_error(L, "cache_resource: out of memory");
  return (char *)memcpy(p, s, len);
}

/* Pushes a shallow copy of the table at idx (a new empty table when idx is
 * 0): raw keys and values, no metatable. */
void cr_table_copy(lua_State *L, int idx) {
  if (idx != 0) idx = lua_absindex(L, idx); /* before the push moves relative indices */
  lua_newtable(L);
  if (idx == 0) return;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

/* Points *ref at opts[field] when present. */
static void set_ref(lua_State *L, int *ref, int present, int opts, const char *field) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (present) {
    lua_getfield(L, opts, field);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* Latest wrap wins: the same identity (same code, same options, or the same
 * `name`) re-wrapped in a script re-run brings fresh callback closures. */
static void apply_options(lua_State *L, cr_cache *c, const cr_opts *o, int opts) {
  if (c->data) cr_persist_configure(L, c, opts); /* first: a store without its methods raises */
  c->ttl = o->ttl;
  c->max_stale = o->max_stale;
  c->failure_ttl = o->failure_ttl;
  c->refresh_background = o->refresh_background;
  c->max_entries = o->max_entries;
  c->max_size = o->max_size;
  set_ref(L, &c->validate_ref, o->validate, opts, "validate");
  set_ref(L, &c->on_release_ref, o->on_release, opts, "on_release");
  set_ref(L, &c->spinner_ref, o->spinner_text, opts, "show_spinner");
  luaL_unref(L, LUA_REGISTRYINDEX, c->hash_funcs_ref);
  c->hash_funcs_ref = LUA_NOREF;
  if (o->hash_funcs) { /* a copy: later edits of the caller's table do not move keys */
    lua_getfield(L, opts, "hash_funcs");
    cr_table_copy(L, -1);
    c->hash_funcs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
  }
  c->show_spinner = o->show_spinner;
  c->show_time = o->show_time;
  c->allow_widgets = o->allow_widgets;
  c->session_scope = o->session_scope;
  /* every per-cache reason to leave the hit fast path, in one flag */
  c->hit_slow = c->validate_ref != LUA_NOREF || c->allow_widgets;
  /* a miss whose store step is one insert: no widget key, copy or store */
  c->quick_miss = !c->hit_slow && !c->data && c->persist_ref == LUA_NOREF;
  {
    int was_values = c->front_values, was_session = c->front_session;
    /* its hits trust that nothing in the process expired: an entry that
     * can be stale before it expires (max_stale) is looked up by key */
    c->front_ok = !c->session_scope && c->hash_funcs_ref == LUA_NOREF && !c->hit_slow && c->max_stale == 0 &&
                  c->persist_ref == LUA_NOREF; /* a persisted hit may first read the store's generation */
    /* a hit by value skips the entry: only where no hit needs to touch it
     * (a cache_data hit decodes the entry's bytes) */
    c->front_session = c->session_scope && c->hash_funcs_ref == LUA_NOREF && !c->hit_slow && c->max_stale == 0 &&
                       c->persist_ref == LUA_NOREF;
    c->front_values = (c->front_ok || c->front_session) && c->max_entries == 0 && !c->data;
    if (!c->front_ok || (was_values && !c->front_values))
      cr_front_reset(L, c); /* calls read the index before these options */
    if (was_session && (!c->front_session || (was_values && !c->front_values))) cr_front_reset_sessions(L, c);
  }
}

/* Pushes the Lua function that describes fn (fn, or a table's __call). */
static void push_target(lua_State *L, int fn) {
  if (lua_istable(L, fn)) luaL_getmetafield(L, fn, "__call");
  else lua_pushvalue(L, fn);
}

static cr_cache *cache_new(lua_State *L, cr_state *S, int fn, const unsigned char id[16], const char *name,
                           int data) {
  cr_cache *c = (cr_cache *)calloc(1, sizeof *c);
  lua_Debug ar;
  char buf[LUA_IDSIZE + 64];
  if (c == NULL) cr_error(L, "%s: out of memory (cache)", data ? "cache_data" : "cache_resource");
  c->S = S;
  c->data = data; /* part of the identity: a cache never changes kind */
  memcpy(c->id, id, 16);
  c->validate_ref = c->on_release_ref = c->hash_funcs_ref = c->spinner_ref = LUA_NOREF;
  c->anchor_ref = c->widget_sets_ref = c->options_ref = c->persist_ref = LUA_NOREF;
  lua_newtable(L);
  c->front_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (lua_istable(L, fn) && name == NULL) { /* no other table may reuse the address */
    lua_pushvalue(L, fn);
    c->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  push_target(L, fn);
  lua_getinfo(L, ">S", &ar);
  if (ar.what[0] == 'C') {
    strcpy(buf, "[C]");
  } else {
    snprintf(buf, sizeof buf, "%s:%d-%d", ar.short_src, ar.linedefined, ar.lastlinedefined);
  }
  c->where = dup_string(L, buf);
  if (ar.what[0] != 'C') snprintf(buf, sizeof buf, "%s:%d", ar.short_src, ar.linedefined);
  else strcpy(buf, "C function");
  c->name = dup_string(L, name ? name : buf);
  c->name_fixed = name != NULL;
  if (S->caches_tail) S->caches_tail->next = c;
  else S->caches = c;
  S->caches_tail = c;
  return c;
}

/* Frees c, made by cache_new: at lua_close, once its stores are gone. */
void cr_cache_free(lua_State *L, cr_cache *c) {
  luaL_unref(L, LUA_REGISTRYINDEX, c->validate_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->on_release_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->hash_funcs_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->spinner_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->anchor_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->widget_sets_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->options_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->front_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c->persist_ref);
  free(c->name);
  free(c->where);
  free(c);
}

/* Parameter names are read once, here: '_'-prefixed ones are not hashed. */
static void fill_params(lua_State *L, cr_func *f, int fn) {
  lua_Debug ar;
  int i, shift = lua_istable(L, fn) ? 1 : 0;
  f->nparams = 0;
  f->any_skip = 0;
  f->callable_table = shift;
  memset(f->skip, 0, sizeof f->skip);
  push_target(L, fn);
  if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">u", &ar);
  for (i = 1 + shift; i <= ar.nparams; i++) {
    const char *name = lua_getlocal(L, NULL, i);
    if (name && name[0] == '_') f->skip[i - 1 - shift] = 1, f->any_skip = 1;
  }
  f->nparams = ar.nparams - shift;
  lua_pop(L, 1);
}

/* A copy of the options for info(): durations in seconds, max_size in
 * bytes, hash_funcs and persist as given. Kept per cache; the latest wrap
 * wins like the options themselves. */
static void keep_options(lua_State *L, cr_cache *c, const cr_opts *o, int opts) {
  luaL_unref(L, LUA_REGISTRYINDEX, c->options_ref);
  cr_table_copy(L, opts);
  if (o->ttl != HUGE_VAL) {
    lua_pushnumber(L, o->ttl);
    lua_setfield(L, -2, "ttl");
  }
  if (o->has_max_stale) {
    lua_pushnumber(L, o->max_stale);
    lua_setfield(L, -2, "max_stale");
  }
  if (o->has_failure_ttl) {
    lua_pushnumber(L, o->failure_ttl);
    lua_setfield(L, -2, "failure_ttl");
  }
  if (o->max_size) {
    lua_pushinteger(L, o->max_size);
    lua_setfield(L, -2, "max_size");
  }
  c->options_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* The options that make the identity: all but `persist` (where entries
 * are kept changes nothing about them, and a store object is no value
 * two processes share). Pushes a copy without it when it is there. */
static int identity_options(lua_State *L, int opts) {
  if (opts == 0) return 0;
  lua_pushliteral(L, "persist");
  if (lua_rawget(L, opts) == LUA_TNIL) {
    lua_pop(L, 1);
    return opts;
  }
  lua_pop(L, 1);
  cr_table_copy(L, opts);
  lua_pushliteral(L, "persist");
  lua_pushnil(L);
  lua_rawset(L, -3);
  return lua_gettop(L);
}

/* Returns the cached function: a C closure over cr_func_call, so
 * type(f) == "function". Upvalue 1: the cr_func userdata; upvalue 2: the
 * cache's front index table (cr_front.c). `data`: wrapped by cache_data. */
int cr_wrap(lua_State *L, cr_state *S, int fn, int opts, int data) {
  cr_opts o;
  unsigned char id[16];
  cr_cache *c;
  cr_func *f;
  int t = lua_type(L, fn);
  fn = lua_absindex(L, fn);
  if (opts) opts = lua_absindex(L, opts);
  if (!(t == LUA_TFUNCTION ||
        (t == LUA_TTABLE && luaL_getmetafield(L, fn, "__call") == LUA_TFUNCTION && (lua_pop(L, 1), 1))))
    cr_error(L, "bad argument #1 to '%s' (function or callable table expected, got %s)",
             data ? "cache_data" : "cache_resource", luaL_typename(L, fn));
  parse_options(L, opts, &o, data);
  cr_key_identity(L, S, fn, identity_options(L, opts), o.name, data, id);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->identities_ref);
  lua_pushlstring(L, (const char *)id, 16);
  lua_rawget(L, -2);
  c = (cr_cache *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL) {
    c = cache_new(L, S, fn, id, o.name, data);
    lua_pushlstring(L, (const char *)id, 16);
    lua_pushlightuserdata(L, c);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  apply_options(L, c, &o, opts);
  keep_options(L, c, &o, opts);
  f = (cr_func *)lua_newuserdatauv(L, sizeof *f, 1);
  f->S = S;
  f->cache = c;
  fill_params(L, f, fn);
  luaL_setmetatable(L, CR_FUNC_MT);
  lua_pushvalue(L, fn);
  lua_setiuservalue(L, -2, 1);
  /* a skipped first parameter: one argument is not the key, so this
   * closure gets an index of its own that stays empty */
  if (f->any_skip && f->skip[0]) lua_newtable(L);
  else lua_rawgeti(L, LUA_REGISTRYINDEX, c->front_ref);
  /* a session cache's calls skip the global index: it stays empty */
  lua_pushcclosure(L, c->session_scope ? cr_func_call_session : cr_func_call, 2);
  return 1;
}

/* ---- the decorators ---------------------------------------------------- */

static int is_plain_table(lua_State *L, int idx) {
  if (!lua_istable(L, idx)) return 0;
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* DECORATOR(opts)(fn): upvalues 1 the state, 2 the checked options, 3
 * whether it is cache_data. */
static int decorate(lua_State *L) {
  cr_state *S = (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
  cr_check_open(L, S);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(2));
  return cr_wrap(L, S, 1, 2, lua_toboolean(L, lua_upvalueindex(3)));
}

/* The __call of cache_resource and of cache_data (upvalue 1: the state;
 * argument 1: the decorator itself): DECORATOR(fn [, opts]), or
 * DECORATOR(opts), which checks the options at once (mistakes surface
 * where they are written) and returns the function that wraps. */
static int decorator_call(lua_State *L, int data) {
  cr_state *S = (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
  int n = lua_gettop(L);
  cr_check_open(L, S);
  if (n == 2 && is_plain_table(L, 2)) {
    cr_opts o;
    parse_options(L, 2, &o, data);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    lua_pushboolean(L, data);
    lua_pushcclosure(L, decorate, 3);
    return 1;
  }
  if (n >= 3 && !lua_isnil(L, 3) && !is_plain_table(L, 3))
    cr_error(L, "bad argument #2 to '%s' (options table expected, got %s)", data ? "cache_data" : "cache_resource",
             luaL_typename(L, 3));
  if (n < 2) lua_settop(L, 2);
  return cr_wrap(L, S, 2, (n >= 3 && lua_istable(L, 3)) ? 3 : 0, data);
}

static int call_resource(lua_State *L) {
  return decorator_call(L, 0);
}

static int call_data(lua_State *L) {
  return decorator_call(L, 1);
}

/* Makes the table at the top a decorator: cache_resource (the module) or
 * cache_data. `state`: the index of the state userdata. */
void cr_decorator_callable(lua_State *L, int state, int data) {
  state = lua_absindex(L, state);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, state);
  lua_pushcclosure(L, data ? call_data : call_resource, 1);
  lua_setfield(L, -2, "__call");
  lua_setmetatable(L, -2);
}
