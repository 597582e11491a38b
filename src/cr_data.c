/* cache_data: the decorator whose cached functions give every caller its
 * own copy of the values (the call path encodes a miss's values with the
 * value codec and decodes every hit: cr_call.c, cr_store.c), its clear(),
 * and the registry of metatables that copies leaving the process refer to
 * by name. */
#include <string.h>
#include "cr.h"

/***
Streamlit's `st.cache_data` for Lua: cached functions that hand every caller
its own copy of the values, so no caller's change reaches the cache.

    local cache_data = require "cache_resource.data"   -- also require("cache_resource").data
    local load_rows = cache_data(function(path) return read_csv(path) end, { ttl = "1h" })
    local rows = load_rows("sales.csv")                 -- a miss: the function's own table
    rows[1].amount = 0                                  -- the cache is not affected
    assert(load_rows("sales.csv")[1].amount ~= 0)       -- a hit: a fresh copy

A `cache_data` function is managed like any cached function:
`cache_resource.clear(f [, ...])`, `stats`, `info` and `peek` take it.
@module cache_resource.data
*/

static cr_state *state_of(lua_State *L) {
  cr_state *S = (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
  cr_check_open(L, S);
  return S;
}

/***
Wraps a function: `cache_data(fn [, opts])` or `cache_data(opts)(fn)`. The
first call with some arguments runs `fn` and returns its own values, after
encoding a copy of them into the entry; every later call with equal
arguments (keyed as `cache_resource` keys them) returns a fresh copy. A copy
is exact: integer and float subtypes, float bits, strings byte for byte,
`nil`s and the number of values; tables are copied from their raw contents
(no metamethod runs), a table reached twice (in one value or in two) is one
table in the copy, cycles close on the copy, and a copied table gets the
same metatable. Only `nil`, booleans, numbers, strings and tables of those
(nested up to 100 levels) can be copied: any other result raises an error
naming the path of the first bad value (`result[2].conn is a userdata
'FILE*'`), nothing is stored, and `stats().failures` counts it. UI calls
made through a `cache_resource.replayable` are recorded and replayed on
every hit. The same `fn` wrapped by `cache_resource` and by `cache_data` has
two caches.
@function cache_data
@tparam function|table fn the function to cache: a Lua or C function, or a
table with a `__call` metamethod
@tparam[opt] table opts `ttl`, `max_entries`, `hash_funcs`, `show_spinner`,
`show_time`, `experimental_allow_widgets`, `scope`, `name`, `refresh_mode`,
`max_stale` and `failure_ttl` as for `cache_resource`, plus `max_size`
(bytes, or a size such as `"500KB"`, `"1.5 MB"`, `"2gb"`: least recently used
entries are evicted once their encoded sizes add up past it, and an entry
larger than it alone is returned without being stored) and `persist`:
`true` or `"disk"` (the default store, an SQLite database at `store_path()`),
a store object (any table or userdata with the methods `get`, `set`,
`delete`, `clear` and `generation`, such as
`require("cache_resource.redis").connect{...}`) or `false` (the default).
With a store, a miss in memory looks in the store before running `fn` (an
entry found there counts in `stats().store_hits`, replays its recorded UI
calls and lives what is left of its `ttl`, in wall-clock time), each new
entry is written to it, and a clear in any process that shares it reaches
the others within a second. A store that fails never makes the call fail:
the function works from memory, `stats().store_errors` counts it, and
`warn()` says so once. Not with `scope = "session"` nor
`experimental_allow_widgets`. `validate` and `on_release` are refused:
copies need no releasing
@treturn function the cached function, or (given only `opts`) a function
that wraps its argument with those options
@usage local rows = cache_data(function(sql) return db:query(sql) end, { ttl = "10m", max_size = "50MB" })
local parse = cache_data { max_entries = 100 } (parse_file)
local shared = cache_data(load_report, { ttl = "1h", persist = true })  -- kept across restarts
*/
/***
Releases every entry of every `cache_data` function and session (the twin
of `cache_resource.clear()`, which clears only `cache_resource` functions),
clears the store of every function wrapped with `persist`, and empties the
default store (`store_path()`) whole, entries of functions this process
never wrapped included. Other processes sharing those stores drop their
copies within a second. `cache_resource.clear(f [, ...])` clears one
`cache_data` function or entry, in memory and in its store.
@function clear
*/
static int d_clear(lua_State *L) {
  cr_state *S = state_of(L);
  uint64_t gen0 = S->next_gen; /* the entries present now */
  cr_cache *c;
  for (c = S->caches; c; c = c->next)
    if (c->data) cr_cache_clear(L, c, 1, gen0);
  return cr_persist_clear_all(L, S); /* the stores: Lua code that may yield */
}

/***
Registers a metatable under a name, so that copies of tables with it that
are kept outside the process find it again by that name. One name per
metatable and one metatable per name; registering the same pair again does
nothing.
@function register_metatable
@tparam string name a name unique in the program, such as `"myapp.Point"`
@tparam table mt the metatable
*/
static int d_register_metatable(lua_State *L) {
  cr_state *S = state_of(L);
  size_t len;
  const char *name = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
  if (name == NULL || len == 0)
    cr_error(L, "bad argument #1 to 'cache_data.register_metatable' (a non-empty string name expected, got %s)",
             lua_type(L, 1) == LUA_TSTRING ? "an empty string" : luaL_typename(L, 1));
  if (!lua_istable(L, 2))
    cr_error(L, "bad argument #2 to 'cache_data.register_metatable' (a metatable expected, got %s)",
             luaL_typename(L, 2));
  lua_settop(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->named_mts_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->mt_names_ref);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 3) != LUA_TNIL && !lua_rawequal(L, -1, 2))
    cr_error(L, "cache_data.register_metatable: the name '%s' is already registered for another metatable "
                "(one metatable per name: pick another name)", name);
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, 4) == LUA_TSTRING && !lua_rawequal(L, -1, 1))
    cr_error(L, "cache_data.register_metatable: this metatable is already registered as '%s' (one name per "
                "metatable)", lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, 3);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  lua_rawset(L, 4);
  return 0;
}

/* ---- internal hooks: the codec from Lua, for specs and the fuzzer ------ */

static enum cr_codec_mode mode_arg(lua_State *L, int idx) {
  static const char *const modes[] = { "memory", "named", "plain", NULL };
  static const enum cr_codec_mode values[] = { CR_CODEC_MEMORY, CR_CODEC_NAMED, CR_CODEC_PLAIN };
  return values[luaL_checkoption(L, idx, NULL, modes)];
}

/* _internal.encode(mode, ...): the bytes (and, in memory mode, the
 * metatable list or nil). Plain mode encodes one value as a recorded UI
 * argument is. Raises what a cached function's miss would report. */
static int t_encode(lua_State *L) {
  cr_state *S = state_of(L);
  enum cr_codec_mode mode = mode_arg(L, 1);
  int n = lua_gettop(L) - 1, names = 0, top;
  cr_codec_error err;
  cr_codec_bufs *b;
  enum cr_codec_status st;
  if (mode == CR_CODEC_PLAIN) {
    cr_buffer out;
    luaL_checkany(L, 2);
    cr_buffer_init(&out);
    b = cr_codec_bufs_take(L, &S->codec);
    st = cr_codec_append_value(L, b, &out, 2, &err);
    cr_codec_bufs_release(b);
    if (st != CR_CODEC_OK) {
      cr_buffer_free(&out);
      lua_pushnil(L);
      return 1;
    }
    lua_pushlstring(L, (const char *)out.data, out.len); /* may raise: out is lost then, a test hook */
    cr_buffer_free(&out);
    return 1;
  }
  if (mode == CR_CODEC_NAMED) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->mt_names_ref);
    names = lua_gettop(L);
  }
  b = cr_codec_bufs_take(L, &S->codec);
  top = lua_gettop(L);
  st = cr_codec_encode(L, b, 2, n, mode, names, "result", &err);
  cr_codec_bufs_release(b);
  if (st != CR_CODEC_OK) cr_error(L, "cache_data: cannot copy: %s", err.message);
  return lua_gettop(L) - top;
}

/* _internal.decode(mode, bytes [, metatable list]): the values; raises
 * "damaged: WHY" for bytes it refuses. Plain mode decodes one value. */
static int t_decode(lua_State *L) {
  cr_state *S = state_of(L);
  enum cr_codec_mode mode = mode_arg(L, 1);
  const char *why = NULL;
  int n, metas = 0;
  luaL_checktype(L, 2, LUA_TSTRING);
  lua_settop(L, 3);
  if (mode == CR_CODEC_PLAIN) {
    cr_codec_dec d;
    size_t len;
    const char *s = lua_tolstring(L, 2, &len); /* anchored at 2 while it decodes */
    cr_codec_dec_init(&d, L, (const unsigned char *)s, 0, len);
    if (!cr_codec_decode_value(&d)) cr_error(L, "damaged: %s", d.error);
    if (d.pos != d.end) cr_error(L, "damaged: bytes after the value");
    return 1;
  }
  if (mode == CR_CODEC_NAMED) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->named_mts_ref);
    metas = lua_gettop(L);
  } else if (lua_istable(L, 3)) {
    metas = 3;
  }
  n = cr_codec_decode(L, 2, metas, mode, &why);
  if (n < 0) cr_error(L, "damaged: %s", why);
  return n;
}

/* Makes the cache_data object (a callable table) field `data` of the
 * module table at the top; the state userdata is below it. */
void cr_data_open(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"clear", d_clear}, {"register_metatable", d_register_metatable}, {NULL, NULL}
  };
  cr_state *S = (cr_state *)lua_touserdata(L, -2);
  lua_newtable(L);
  S->named_mts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  S->mt_names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lua_pushvalue(L, -3);
  luaL_setfuncs(L, fns, 1);
  /* test hooks, not part of the API (and not in the reference) */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -4);
  lua_pushcclosure(L, t_encode, 1);
  lua_setfield(L, -2, "encode");
  lua_pushvalue(L, -4);
  lua_pushcclosure(L, t_decode, 1);
  lua_setfield(L, -2, "decode");
  lua_setfield(L, -2, "_internal");
  cr_persist_open(L, -3);
  cr_decorator_callable(L, -3, 1); /* cache_data(fn [, opts]) */
  lua_setfield(L, -2, "data");
}
