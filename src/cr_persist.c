/* Persisted cache_data entries: the envelope a store keeps, and the C side
 * of the path between a cache_data function and its store.
 *
 * Where the line between C and Lua goes. A hit in memory stays on the C
 * hit path and never touches a store. Everything that calls a store runs
 * in Lua (lua/cache_resource/persist.lua): a store method may yield (the
 * Redis store does, inside cqueues), raise, or return garbage, and Lua's
 * pcall catches the last two while letting the first through, with no C
 * continuation to write per method. The call path enters that Lua code at
 * points that are already protected and yieldable: the generation check
 * (a lua_pcallk step before a lookup, at most once a second per function)
 * and the miss (a Lua step that the computation's lua_pcallk runs in place
 * of fn: it reads the store, runs fn only when it must, writes the store);
 * the clears of the module's face end in a lua_callk. C keeps what needs
 * the core's internals and must not trust what it reads: the envelope
 * below (built from the values and the call's recording, checked and
 * decoded when it comes back), key digests, counters, the replayables by
 * name. No C pointer is held across a store call: the Lua side holds Lua
 * values (the call record's userdata, the cache as a light userdata:
 * caches live until lua_close), and each function here looks again at
 * what it needs.
 *
 * The envelope (the bytes given to store:set)
 * -------------------------------------------
 *   envelope = MAGIC VERSION identity varint(keylen) key{keylen}
 *              expiry varint(paylen) payload{paylen} checksum
 *   MAGIC    = "CRDE"                 a cache_data entry
 *   VERSION  = 0x01                   this layout
 *   identity = byte{16}               the function's identity (its ns: these in hex)
 *   key      = the canonical bytes of the arguments (cr_key.c), whole
 *   expiry   = u64                    IEEE-754 bits, little-endian, of the
 *                                     wall-clock time (seconds since the epoch,
 *                                     or the set_clock clock) the entry goes
 *                                     stale; +inf without a ttl
 *   payload  = varint(vallen) values{vallen} varint(nrecords) record{nrecords}
 *   values   = a value codec encoding in named mode (cr_codec.c)
 *   record   = varint(namelen) name{namelen} varint(nargs) argument{nargs}
 *                                     a recorded UI call, by the name of its
 *                                     replayable
 *   argument = value                  one value of the codec, no header, no
 *                                     metatables, numbered on its own
 *            | RESULT varint(i)       what record i (from 0, before this one)
 *                                     returned: a container block
 *   checksum = u64                    XXH3-64 (unseeded), little-endian, of
 *                                     every byte before it
 *   varint   = LEB128, 7 bits a byte, least significant first, at most 10
 *
 * The payload ends exactly where the checksum starts, and the checksum
 * ends the bytes. RESULT is the record format's R_RESULT (above the codec's
 * tags). Decoding checks the checksum first, then every length against
 * the bytes left, and hands the values to the codec's decoder, which
 * trusts nothing either: whatever a store returns is an entry, a refusal
 * (damaged, foreign, another version, another key: a miss), or expired. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <time.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "cr.h"

/***
Persisted entries.
@module cache_resource.data
*/

#define MAGIC "CRDE"
#define MAGIC_LEN 4
#define VERSION 1
#define FIXED_LEN (MAGIC_LEN + 1 + 16 + 8 + 8) /* magic, version, identity, expiry, checksum */

/* What the Lua step returns first for an entry found in the store: this
 * address, as a light userdata, which no Lua code can make. */
static const char store_hit_mark = 0;

#if LUA_VERSION_NUM >= 504
#define BUF_ADDR(b) ((const unsigned char *)luaL_buffaddr(b))
#define BUF_LEN(b) luaL_bufflen(b)
#else
#define BUF_ADDR(buf) ((const unsigned char *)(buf)->b)
#define BUF_LEN(buf) ((buf)->n)
#endif

/* ---- small pieces ---------------------------------------------------- */

static void put_varint(luaL_Buffer *b, uint64_t v) {
  char tmp[10];
  int n = 0;
  do {
    unsigned char c = (unsigned char)(v & 0x7f);
    v >>= 7;
    tmp[n++] = (char)(c | (v ? 0x80 : 0));
  } while (v);
  luaL_addlstring(b, tmp, (size_t)n);
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >>= 7) n++;
  return n;
}

static void put_u64(luaL_Buffer *b, uint64_t v) {
  char tmp[8];
  int i;
  for (i = 0; i < 8; i++) tmp[i] = (char)(unsigned char)(v >> (8 * i));
  luaL_addlstring(b, tmp, 8);
}

/* A varint of bytes that may be anything: 0 when cut short or longer than
 * 10 bytes. */
static int get_varint(const unsigned char *p, size_t end, size_t *pos, uint64_t *v) {
  int shift = 0, i;
  *v = 0;
  for (i = 0; i < 10 && *pos < end; i++) {
    unsigned char c = p[(*pos)++];
    *v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return 1;
    shift += 7;
  }
  return 0;
}

static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static void push_hex(lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char out[64];
  size_t i;
  for (i = 0; i < n && 2 * i + 1 < sizeof out; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  lua_pushlstring(L, out, 2 * i);
}

/* The store's key of some canonical key bytes: an unseeded 128-bit digest,
 * the same in every process, as 32 hex digits. */
static void push_key_digest(lua_State *L, const unsigned char *key, size_t len) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits(key, len));
  push_hex(L, canon.digest, 16);
}

/* Wall-clock seconds: the module's clock when set_clock set one (tests
 * move both), else the system's real time. */
static double wall_now(lua_State *L, cr_state *S) {
  struct timespec ts;
  if (S->clock_ref != LUA_NOREF) return cr_now(L, S);
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t double_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double bits_double(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static cr_state *state_up(lua_State *L) {
  cr_state *S = (cr_state *)lua_touserdata(L, lua_upvalueindex(1));
  cr_check_open(L, S);
  return S;
}

/* Argument idx as the cache it names (a light userdata the C side gave). */
static cr_cache *cache_arg(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TLIGHTUSERDATA);
  return (cr_cache *)lua_touserdata(L, idx);
}

/* ---- sealing: values and records into an envelope -------------------- */

/* Skips one codec value (a recorded argument: no metatables), returning 0
 * at bad bytes. Iterative: a table only adds to what is left to skip. */
static int skip_value(const unsigned char *p, size_t end, size_t *pos) {
  uint64_t left = 1;
  while (left > 0) {
    cr_codec_item it;
    if (!cr_codec_read_item(p, end, pos, &it)) return 0;
    left--;
    if (it.tag == CR_C_TABLE || it.tag == CR_C_TABLE_KEEP) {
      if (it.u > end || it.nhash > end) return 0;
      left += it.u + 2 * it.nhash;
    } else if (it.tag == CR_C_TABLE_MT || it.tag == CR_C_TABLE_MT_KEEP) {
      return 0;
    }
  }
  return 1;
}

/* Translates the recording (a copy of its bytes at stack index rec) into
 * the envelope's records, pushed as a string; returns their count, or -1
 * (pushing the reason) when they cannot leave the process: an argument
 * kept by reference (not copyable) or a replayable without a name. */
static long translate_records(lua_State *L, cr_state *S, int rec) {
  size_t len, pos = 0;
  const unsigned char *p = (const unsigned char *)lua_tolstring(L, rec, &len);
  long count = 0;
  int names;
  luaL_Buffer b;
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->replayable_names_ref);
  names = lua_gettop(L);
  luaL_buffinit(L, &b);
  while (pos < len) {
    uint64_t id, nargs, i;
    if (!get_varint(p, len, &pos, &id) || !get_varint(p, len, &pos, &nargs)) goto bad;
    if (lua_rawgeti(L, names, (lua_Integer)id) != LUA_TSTRING) {
      lua_pop(L, 1);
      luaL_pushresult(&b);
      lua_pushliteral(L, "a recorded UI call's replayable has no name (cache_resource.replayable(fn, name))");
      return -1;
    }
    put_varint(&b, lua_rawlen(L, -1));
    luaL_addvalue(&b);
    put_varint(&b, nargs);
    for (i = 0; i < nargs; i++) {
      size_t start = pos;
      if (pos >= len) goto bad;
      if (p[pos] == R_REF) {
        luaL_pushresult(&b);
        lua_pushliteral(L, "a recorded UI call has an argument that cannot be copied");
        return -1;
      }
      if (p[pos] == R_RESULT) {
        uint64_t k;
        pos++;
        if (!get_varint(p, len, &pos, &k)) goto bad;
      } else if (!skip_value(p, len, &pos)) {
        goto bad;
      }
      luaL_addlstring(&b, (const char *)p + start, pos - start);
    }
    count++;
  }
  luaL_pushresult(&b);
  lua_remove(L, names);
  return count;
bad: /* our own recording: not expected, but never trusted blindly */
  luaL_pushresult(&b);
  lua_pushliteral(L, "the recorded UI calls could not be read");
  return -1;
}

/* seal(cache, call, keybytes, expiry, ...): the envelope of the values
 * `...` and of the UI calls the computation `call` recorded; or nil, why,
 * kind: "copy" (a value cannot be copied: why is the error a miss
 * raises), "skip" (the records cannot leave the process), "detached" (a
 * clear came during the computation: nothing is kept). */
static int p_seal(lua_State *L) {
  cr_state *S = state_up(L);
  cr_cache *c = cache_arg(L, 1);
  cr_call *call = (cr_call *)luaL_checkudata(L, 2, CR_CALL_MT);
  size_t keylen, vallen, reclen;
  const char *key = luaL_checklstring(L, 3, &keylen), *vals, *recs;
  double expiry = luaL_checknumber(L, 4);
  int n = lua_gettop(L) - 4, names, top, vidx;
  long nrec = 0;
  cr_codec_bufs *cb;
  cr_codec_error err;
  enum cr_codec_status st;
  luaL_Buffer b;
  uint64_t sum;
  luaL_checkstack(L, 12, "cache_data: writing an entry");
  if (call->store == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "cleared while it was computed");
    lua_pushliteral(L, "detached");
    return 3;
  }
  /* a copy of the records first: a finalizer run by any allocation below
   * may record into this computation and move its buffer */
  if (call->recording && call->recording->buf.len)
    lua_pushlstring(L, (const char *)call->recording->buf.data, call->recording->buf.len);
  else
    lua_pushliteral(L, "");
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->mt_names_ref);
  names = lua_gettop(L);
  cb = cr_codec_bufs_take(L, &S->codec);
  top = lua_gettop(L);
  st = cr_codec_encode(L, cb, 5, n, CR_CODEC_NAMED, names, "result", &err);
  cr_codec_bufs_release(cb);
  if (st != CR_CODEC_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "cache_data: cannot copy the result of %s: %s%s", c->name, err.message, cr_codec_fix(st));
    lua_pushliteral(L, "copy");
    return 3;
  }
  vidx = top + 1;
  nrec = translate_records(L, S, names - 1);
  if (nrec < 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    lua_pushliteral(L, "skip");
    return 3;
  }
  vals = lua_tolstring(L, vidx, &vallen);
  recs = lua_tolstring(L, -1, &reclen);
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, MAGIC, MAGIC_LEN);
  luaL_addchar(&b, (char)VERSION);
  luaL_addlstring(&b, (const char *)c->id, 16);
  put_varint(&b, keylen);
  luaL_addlstring(&b, key, keylen);
  put_u64(&b, double_bits(expiry));
  put_varint(&b, varint_len(vallen) + vallen + varint_len((uint64_t)nrec) + reclen);
  put_varint(&b, vallen);
  luaL_addlstring(&b, vals, vallen);
  put_varint(&b, (uint64_t)nrec);
  luaL_addlstring(&b, recs, reclen);
  sum = XXH3_64bits(BUF_ADDR(&b), BUF_LEN(&b));
  put_u64(&b, sum);
  luaL_pushresult(&b);
  return 1;
}

/* ---- opening: an envelope back into values and records -------------- */

/* Pushes the records of an envelope (at stack index src, from pos to end)
 * as a list { name = ..., n = nargs, [1..n] = arguments, results = { [i] =
 * record } }, or false when there are none. Returns 0 (pushing nothing)
 * with *why set at bad bytes. */
static int open_records(lua_State *L, int src, size_t pos, size_t end, const char **why) {
  const unsigned char *p = (const unsigned char *)lua_tostring(L, src);
  uint64_t nrec, r;
  int list;
  if (!get_varint(p, end, &pos, &nrec) || nrec > end - pos) return *why = "a bad record count", 0;
  if (nrec == 0) {
    if (pos != end) return *why = "bytes after the records", 0;
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_createtable(L, (int)(nrec < 64 ? nrec : 64), 0);
  list = lua_gettop(L);
  for (r = 0; r < nrec; r++) {
    uint64_t namelen, nargs, i;
    int rec;
    if (!get_varint(p, end, &pos, &namelen) || namelen == 0 || namelen > end - pos) goto bad_name;
    lua_createtable(L, 0, 3);
    rec = lua_gettop(L);
    lua_pushlstring(L, (const char *)p + pos, (size_t)namelen);
    lua_setfield(L, rec, "name");
    pos += namelen;
    if (!get_varint(p, end, &pos, &nargs) || nargs > end - pos || nargs > CR_MAX_PARAMS) goto bad_args;
    lua_pushinteger(L, (lua_Integer)nargs);
    lua_setfield(L, rec, "n");
    for (i = 0; i < nargs; i++) {
      if (pos >= end) goto bad_args;
      if (p[pos] == R_RESULT) {
        uint64_t k;
        pos++;
        if (!get_varint(p, end, &pos, &k) || k >= r) goto bad_args;
        if (lua_getfield(L, rec, "results") != LUA_TTABLE) {
          lua_pop(L, 1);
          lua_newtable(L);
          lua_pushvalue(L, -1);
          lua_setfield(L, rec, "results");
        }
        lua_pushinteger(L, (lua_Integer)k);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        lua_pop(L, 1);
      } else {
        cr_codec_dec d;
        cr_codec_dec_init(&d, L, p, pos, end);
        if (!cr_codec_decode_value(&d)) {
          *why = d.error;
          lua_settop(L, list - 1);
          return 0;
        }
        pos = d.pos;
        lua_rawseti(L, rec, (lua_Integer)i + 1);
      }
      p = (const unsigned char *)lua_tostring(L, src); /* the same string, anchored: refreshed for the analyzers */
    }
    lua_rawseti(L, list, (lua_Integer)r + 1);
  }
  if (pos != end) {
    *why = "bytes after the records";
    lua_settop(L, list - 1);
    return 0;
  }
  return 1;
bad_name:
  *why = "a bad replayable name";
  lua_settop(L, list - 1);
  return 0;
bad_args:
  *why = "bad recorded arguments";
  lua_settop(L, list - 1);
  return 0;
}

/* open(cache, bytes, keybytes): what a store returned for the key.
 *   true, lifetime, records, values...   a live entry: lifetime is what
 *                                        is left of its ttl (math.huge
 *                                        without one); records as
 *                                        open_records pushes them
 *   false, "expired"                     past its ttl
 *   false, why                           refused: damaged, cut, foreign,
 *                                        another version, another key */
static int p_open(lua_State *L) {
  cr_state *S = state_up(L);
  cr_cache *c = cache_arg(L, 1);
  size_t len, keylen, pos = MAGIC_LEN + 1 + 16, end;
  const unsigned char *p;
  const char *key, *why = NULL;
  uint64_t klen, paylen, vallen;
  double expiry, now;
  int n, rec;
  if (lua_type(L, 2) != LUA_TSTRING) return luaL_typeerror(L, 2, "string");
  p = (const unsigned char *)lua_tolstring(L, 2, &len);
  key = luaL_checklstring(L, 3, &keylen);
  lua_settop(L, 3);
  luaL_checkstack(L, 8, "cache_data: reading an entry");
  lua_pushboolean(L, 0);
  if (len < FIXED_LEN + 3 || memcmp(p, MAGIC, MAGIC_LEN) != 0) {
    lua_pushliteral(L, "not a cache_data entry");
    return 2;
  }
  if (get_u64(p + len - 8) != XXH3_64bits(p, len - 8)) {
    lua_pushliteral(L, "damaged (its checksum does not match)");
    return 2;
  }
  if (p[MAGIC_LEN] != VERSION) {
    lua_pushfstring(L, "written by another version of the entry format (%d)", (int)p[MAGIC_LEN]);
    return 2;
  }
  if (memcmp(p + MAGIC_LEN + 1, c->id, 16) != 0) {
    lua_pushliteral(L, "an entry of another function");
    return 2;
  }
  end = len - 8;
  if (!get_varint(p, end, &pos, &klen) || klen > end - pos) goto damaged;
  if (klen != keylen || memcmp(p + pos, key, keylen) != 0) {
    lua_pushliteral(L, "an entry of other arguments (a digest collision)");
    return 2;
  }
  pos += klen;
  if (end - pos < 8) goto damaged;
  expiry = bits_double(get_u64(p + pos));
  pos += 8;
  if (!get_varint(p, end, &pos, &paylen) || paylen != end - pos) goto damaged;
  if (expiry != expiry) goto damaged;
  now = wall_now(L, S);
  p = (const unsigned char *)lua_tostring(L, 2); /* the clock may be Lua code; the string is anchored at 2 */
  if (expiry <= now) {
    lua_pushliteral(L, "expired");
    return 2;
  }
  if (!get_varint(p, end, &pos, &vallen) || vallen > end - pos) goto damaged;
  lua_settop(L, 3);
  lua_pushboolean(L, 1);
  lua_pushnumber(L, expiry == HUGE_VAL ? HUGE_VAL : expiry - now);
  if (!open_records(L, 2, pos + (size_t)vallen, end, &why)) goto refused;
  rec = lua_gettop(L);
  p = (const unsigned char *)lua_tostring(L, 2);
  lua_pushlstring(L, (const char *)p + pos, (size_t)vallen); /* the codec decodes a whole string */
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->named_mts_ref);
  n = cr_codec_decode(L, rec + 1, rec + 2, CR_CODEC_NAMED, &why);
  if (n < 0) goto refused;
  lua_remove(L, rec + 1); /* the values' bytes and the names go from under the values */
  lua_remove(L, rec + 1);
  return 3 + n;
damaged:
  why = "damaged (its lengths do not add up)";
refused:
  lua_settop(L, 3);
  lua_pushboolean(L, 0);
  lua_pushfstring(L, "damaged (%s)", why ? why : "bad bytes");
  return 2;
}

/* ---- the rest of what the Lua side needs ------------------------------ */

/* key(f, ...): the store's key of a call of f with those arguments (32
 * hex digits) and the whole canonical key bytes. */
static int p_key(lua_State *L) {
  cr_state *S = state_up(L);
  cr_func *f = (cr_func *)luaL_checkudata(L, 1, CR_FUNC_MT);
  size_t len;
  const char *bytes;
  cr_key_push_full(L, S, f, 1, 2, lua_gettop(L) - 1);
  bytes = lua_tolstring(L, -1, &len);
  push_key_digest(L, (const unsigned char *)bytes, len);
  lua_insert(L, -2);
  return 2;
}

/* info(cache): ns (the identity in hex), display name, ttl, max_stale,
 * limits ({ max_entries, max_size } or nil). */
static int p_info(lua_State *L) {
  cr_cache *c;
  (void)state_up(L);
  c = cache_arg(L, 1);
  push_hex(L, c->id, 16);
  lua_pushstring(L, c->name);
  lua_pushnumber(L, c->ttl);
  lua_pushnumber(L, c->max_stale);
  if (c->max_entries > 0 || c->max_size > 0) {
    lua_createtable(L, 0, 2);
    if (c->max_entries > 0) {
      lua_pushinteger(L, c->max_entries);
      lua_setfield(L, -2, "max_entries");
    }
    if (c->max_size > 0) {
      lua_pushinteger(L, c->max_size);
      lua_setfield(L, -2, "max_size");
    }
  } else {
    lua_pushnil(L);
  }
  return 5;
}

/* count(cache, what [, call]): one more store_hits, store_writes,
 * store_errors or persist_skipped; "miss" counts a miss when the call is
 * one (not a refresh). */
static int p_count(lua_State *L) {
  static const char *const names[] = { "store_writes", "store_errors", "persist_skipped", "miss", NULL };
  cr_cache *c;
  int which;
  (void)state_up(L);
  c = cache_arg(L, 1);
  which = luaL_checkoption(L, 2, NULL, names);
  switch (which) {
    case 0: c->store_writes++; break;
    case 1: c->store_errors++; break;
    case 2: c->persist_skipped++; break;
    default: {
      const cr_call *call = (const cr_call *)luaL_checkudata(L, 3, CR_CALL_MT);
      if (call->kind == CR_MISS) c->misses++;
    }
  }
  return 0;
}

/* drop(cache): its entries in memory go (the store's generation changed:
 * another process cleared it). Computations in flight keep their values
 * out of memory and out of the store. */
static int p_drop(lua_State *L) {
  cr_state *S = state_up(L);
  cr_cache *c = cache_arg(L, 1);
  cr_cache_clear(L, c, 1, S->next_gen);
  return 0;
}

/* replayable(name): the replayable last given that name, or nil. */
static int p_replayable(lua_State *L) {
  cr_state *S = state_up(L);
  luaL_checktype(L, 1, LUA_TSTRING);
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->replayable_names_ref);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TFUNCTION) lua_pushnil(L);
  return 1;
}

static int p_wallclock(lua_State *L) {
  lua_pushnumber(L, wall_now(L, state_up(L)));
  return 1;
}

/* reseal(bytes): the bytes with their last 8 replaced by the checksum of
 * the rest, for specs that damage an envelope's inside. */
static int p_reseal(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  (void)state_up(L);
  if (len < 8) return luaL_argerror(L, 1, "at least 8 bytes expected");
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, p, len - 8);
  put_u64(&b, XXH3_64bits(p, len - 8));
  luaL_pushresult(&b);
  return 1;
}

static int p_report(lua_State *L) {
  (void)state_up(L);
  cr_report(L, luaL_checkstring(L, 1));
  return 0;
}

/* ---- what the C core calls ------------------------------------------- */

/* Pushes the Lua side's function `name` (loading the module once). */
static void push_lua_side(lua_State *L, cr_state *S, const char *name) {
  luaL_checkstack(L, 4, "cache_data: persistence");
  if (S->persist_mod_ref == LUA_NOREF) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cache_resource.persist");
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1)) cr_error(L, "cache_data: the module cache_resource.persist did not load");
    if (S->persist_mod_ref == LUA_NOREF) S->persist_mod_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else lua_pop(L, 1);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->persist_mod_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

/* From the wrap: opts.persist (a store object, true, "disk" or false)
 * gives the cache its handle on the Lua side, or none. The handle checks a
 * store object's methods (raising for a missing one) and is kept while
 * the same store is given again: a script re-run re-wraps every function. */
void cr_persist_configure(lua_State *L, cr_cache *c, int opts) {
  cr_state *S = c->S;
  int on = 0;
  if (opts) {
    lua_pushliteral(L, "persist");
    on = lua_rawget(L, opts) != LUA_TNIL && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
    lua_pop(L, 1);
  }
  if (!on) {
    if (c->persist_ref != LUA_NOREF) {
      luaL_unref(L, LUA_REGISTRYINDEX, c->persist_ref);
      c->persist_ref = LUA_NOREF;
    }
    return;
  }
  push_lua_side(L, S, "handle");
  lua_pushlightuserdata(L, c);
  lua_pushliteral(L, "persist");
  lua_rawget(L, opts);
  if (c->persist_ref != LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, c->persist_ref);
  else lua_pushnil(L);
  lua_call(L, 3, 1); /* raises for a store without the five methods */
  if (c->persist_ref == LUA_NOREF) {
    c->persist_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->persist_due = -HUGE_VAL;
  } else {
    lua_rawseti(L, LUA_REGISTRYINDEX, c->persist_ref);
  }
}

/* The generation check of c, due at `now`: pushes the Lua side's check
 * and its argument, returns how many arguments (the caller pcalls it). */
int cr_persist_push_check(lua_State *L, cr_cache *c, double now) {
  c->persist_due = now + 1;
  push_lua_side(L, c->S, "check");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->persist_ref);
  return 1;
}

/* A miss of c: pushes the Lua step that runs in place of fn and its first
 * argument (the handle); the caller pushes the call record, the cr_func,
 * fn and the arguments, and pcalls it. */
void cr_persist_push_miss(lua_State *L, cr_cache *c) {
  push_lua_side(L, c->S, "miss");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->persist_ref);
}

/* Pushes the mark the step returns first for an entry found in a store. */
static int p_hit_mark(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&store_hit_mark);
  return 1;
}

/* After the step: were the *n values at first.. an entry found in the
 * store (the mark, its lifetime, its values)? Then the mark and the
 * lifetime go, *n counts the values, *lifetime is what is left of the
 * ttl, and 1 is returned. */
int cr_persist_took(lua_State *L, int first, int *n, double *lifetime) {
  if (*n < 2 || lua_touserdata(L, first) != (void *)&store_hit_mark || !lua_islightuserdata(L, first)) return 0;
  *lifetime = lua_tonumber(L, first + 1);
  lua_remove(L, first);
  lua_remove(L, first);
  *n -= 2;
  return 1;
}

/* From clear(f [, ...]): the store's part, f's whole ns or (nargs >= 0)
 * the entry of those arguments. Ends in a lua_callk to the Lua side (a
 * store may yield): the caller returns what this returns. */
int cr_persist_clear(lua_State *L, cr_cache *c, const cr_func *f, int fidx, int first, int nargs) {
  int top;
  fidx = lua_absindex(L, fidx);
  first = lua_absindex(L, first);
  push_lua_side(L, c->S, "clear");
  top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->persist_ref);
  if (nargs >= 0) {
    size_t len;
    const char *bytes;
    cr_key_push_full(L, c->S, f, fidx, first, nargs);
    bytes = lua_tolstring(L, -1, &len);
    push_key_digest(L, (const unsigned char *)bytes, len);
    lua_remove(L, -2);
  }
  lua_callk(L, lua_gettop(L) - top, 0, 0, cr_persist_done);
  return 0;
}

/* cache_data.clear(): every persisted function's ns in its store (the
 * caches given in a table, as light userdata) and the default store whole. */
int cr_persist_clear_all(lua_State *L, cr_state *S) {
  cr_cache *c;
  lua_Integer i = 0;
  push_lua_side(L, S, "clear_all");
  lua_newtable(L);
  for (c = S->caches; c; c = c->next)
    if (c->data && c->persist_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->persist_ref);
      lua_rawseti(L, -2, ++i);
    }
  lua_callk(L, 1, 0, 0, cr_persist_done);
  return 0;
}

/* The continuation of the two clears: nothing to return. */
int cr_persist_done(lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  return 0;
}

/* Pushes what stats() shows as c's `persist`: its store's description,
 * or false. */
void cr_persist_push_description(lua_State *L, cr_cache *c) {
  if (c->persist_ref == LUA_NOREF) {
    lua_pushboolean(L, 0);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->persist_ref);
  lua_pushliteral(L, "description");
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

/***
Where `persist = true` keeps entries: `$CR_CACHE_DIR/cache_data.sqlite3`,
else `$XDG_CACHE_HOME/cache_resource/cache_data.sqlite3` (an absolute
`XDG_CACHE_HOME`), else `$HOME/.cache/cache_resource/cache_data.sqlite3`.
The directories are created `0700` and the file `0600` when the first
entry is stored. The SQLite store module (`cache_resource.sqlite`) keeps it;
without that module, or when the file cannot be opened, `persist = true`
keeps entries in memory only and says so once with `warn()`.
@function store_path
@treturn string|nil the path, or `nil` and a message when none of those
variables is set
*/
static int d_store_path(lua_State *L) {
  cr_state *S = state_up(L);
  push_lua_side(L, S, "store_path");
  lua_call(L, 0, 2);
  return 2;
}

/* Adds the persistence functions to the cache_data object at the top
 * (store_path, and the Lua side's internals as _persist); the state
 * userdata is at `state`. */
void cr_persist_open(lua_State *L, int state) {
  /* not luaL_Reg: these are no API, and the reference leaves them out */
  static const struct { const char *name; lua_CFunction fn; } internals[] = {
    {"key", p_key}, {"seal", p_seal}, {"open", p_open}, {"info", p_info}, {"count", p_count},
    {"drop", p_drop}, {"replayable", p_replayable}, {"wallclock", p_wallclock}, {"report", p_report},
    {"hit_mark", p_hit_mark}, {"reseal", p_reseal}
  };
  cr_state *S = (cr_state *)lua_touserdata(L, state);
  size_t i;
  state = lua_absindex(L, state);
  S->persist_mod_ref = LUA_NOREF;
  lua_newtable(L);
  S->replayable_names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, state);
  lua_pushcclosure(L, d_store_path, 1);
  lua_setfield(L, -2, "store_path");
  lua_createtable(L, 0, (int)(sizeof internals / sizeof internals[0]));
  for (i = 0; i < sizeof internals / sizeof internals[0]; i++) {
    lua_pushvalue(L, state);
    lua_pushcclosure(L, internals[i].fn, 1);
    lua_setfield(L, -2, internals[i].name);
  }
  lua_setfield(L, -2, "_persist");
}
