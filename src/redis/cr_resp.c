/* cache_resource.redis_resp: the Redis protocol (RESP2) for the Redis
 * store, lua/cache_resource/redis.lua. Commands are formatted by hiredis
 * (redisFormatCommandArgv) and replies parsed by its incremental reader
 * (redisReader); this file does no I/O. The store moves the bytes through
 * cqueues sockets, so that inside a cqueues coroutine a call yields to the
 * event loop instead of blocking it, which hiredis's own blocking and async
 * contexts cannot do for a Lua coroutine.
 *
 *   local codec = resp.codec(max)      -- one per connection
 *   sock:send(codec:command("GET", key))
 *   codec:feed(bytes_read)             -- true, or nil, message
 *   codec:reply([split])               -- a reply, or nil (more bytes needed),
 *                                      -- or nil, message (protocol error)
 *
 * A reply, as Lua values (the grammar of RESP2, what hiredis parses):
 *
 *   reply  = string                 a bulk string (byte for byte) or a status ("OK")
 *          | integer                an integer reply
 *          | false                  a nil bulk string or nil array
 *          | { err = string }       an error reply ("ERR ...", "WRONGPASS ...")
 *          | { reply* }             an array, elements 1..n in order
 *          | { head = string, tail = string }
 *                                   with split = n > 0, a bulk string of n bytes or
 *                                   more: its first n bytes and the rest, so that a
 *                                   fixed-size header is read apart from the bytes
 *                                   after it without copying them once more
 *
 * The bytes come from a server, so they are hostile: hiredis bounds every
 * length against the bytes it has; this file bounds what a codec buffers
 * (`max` bytes not yet consumed by complete replies, else feed fails) and
 * the element count of an array (an element takes at least 3 bytes on the
 * wire, so an array of more than max / 3 elements could never complete
 * within max: it is refused before hiredis allocates for it). Nothing
 * decoded here ever runs code.
 *
 * The reentrancy hazard: pushing a Lua string or table allocates, and an
 * allocation may run a __gc finalizer, which may call back into this codec
 * (a finalizer that uses the store). While a method walks its reply tree or
 * pushes its formatted command, `busy` is set and a re-entered call gets
 * nil, message instead of freeing what the outer call is reading. A raise
 * (out of memory) past that point leaves the codec busy for good; the
 * store discards a connection after any error, and __gc frees what the
 * codec still holds. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "lua.h"
#include "lauxlib.h"
#include "../cr_compat.h"

#define CODEC_MT "cache_resource.redis_codec"
#define SMALL_ARGC 8 /* commands with at most this many arguments need no malloc */

/* One connection's protocol state. The reader is created with the codec
 * and freed by __gc only; `held` and `out` are NULL except inside a method
 * (or after a raise there, until __gc). */
typedef struct codec {
  redisReader *reader;
  redisReply *held; /* the reply being converted to Lua values */
  char *out;        /* the command being pushed as a Lua string */
  size_t max;       /* bytes buffered for replies not yet complete, at most */
  int busy;
  int refused;      /* an array was refused for its size */
  /* hiredis's reply functions with createArray bounded (the reader's fn
   * points here; privdata points at this codec) */
  redisReplyObjectFunctions fn;
  void *(*create_array)(const redisReadTask *, int);
} codec;

/* hiredis's array, unless it could never complete within `max` bytes (or
 * has a negative length, which hiredis versions without range checks let
 * through: their array would claim SIZE_MAX elements): then NULL, which
 * hiredis takes for out of memory (refused tells them apart). */
static void *create_array(const redisReadTask *task, int elements) {
  codec *c = (codec *)task->privdata;
  if (elements < 0 || (size_t)elements > c->max / 3) {
    c->refused = 1;
    return NULL;
  }
  return c->create_array(task, elements);
}

static codec *check_codec(lua_State *L) {
  return (codec *)luaL_checkudata(L, 1, CODEC_MT);
}

/* nil, message for a call made while another one on this codec runs. */
static int refuse_reentry(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "the Redis codec is in use (called again from a finalizer, or unusable after an error)");
  return 2;
}

static void release_held(codec *c) {
  if (c->held != NULL) {
    freeReplyObject(c->held);
    c->held = NULL;
  }
  free(c->out);
  c->out = NULL;
}

static int codec_gc(lua_State *L) {
  codec *c = check_codec(L);
  release_held(c);
  if (c->reader != NULL) {
    redisReaderFree(c->reader);
    c->reader = NULL;
  }
  return 0;
}

/* codec:command(arg, ...) -> the RESP bytes of one command, or nil, message.
 * Arguments are strings (numbers are converted); any bytes. */
static int codec_command(lua_State *L) {
  codec *c = check_codec(L);
  int argc = lua_gettop(L) - 1, i, len;
  const char *sargv[SMALL_ARGC];
  size_t slen[SMALL_ARGC], total = 0;
  const char **argv = sargv;
  size_t *argvlen = slen;
  luaL_argcheck(L, argc >= 1, 2, "a command name expected");
  /* Converting a number allocates: every argument is a string on the stack
   * before any pointer into one is taken, and no Lua allocation happens
   * between taking the pointers and formatting. */
  for (i = 2; i <= argc + 1; i++) {
    size_t n;
    luaL_checklstring(L, i, &n);
    total += n;
  }
  if (c->busy) return refuse_reentry(L);
  if (total > (size_t)INT_MAX / 2) {
    lua_pushnil(L);
    lua_pushfstring(L, "a command of %I bytes is too large to send", (lua_Integer)total);
    return 2;
  }
  if (argc > SMALL_ARGC) {
    argv = (const char **)malloc((size_t)argc * sizeof *argv);
    argvlen = (size_t *)malloc((size_t)argc * sizeof *argvlen);
    if (argv == NULL || argvlen == NULL) {
      free((void *)argv);
      free(argvlen);
      lua_pushnil(L);
      lua_pushliteral(L, "out of memory formatting a Redis command");
      return 2;
    }
  }
  for (i = 0; i < argc; i++) argv[i] = lua_tolstring(L, i + 2, &argvlen[i]);
  len = redisFormatCommandArgv(&c->out, argc, argv, argvlen);
  if (argv != sargv) {
    free((void *)argv);
    free(argvlen);
  }
  if (len < 0) {
    c->out = NULL;
    lua_pushnil(L);
    lua_pushliteral(L, "out of memory formatting a Redis command");
    return 2;
  }
  c->busy = 1;
  lua_pushlstring(L, c->out, (size_t)len);
  free(c->out);
  c->out = NULL;
  c->busy = 0;
  return 1;
}

/* codec:feed(bytes) -> true, or nil, message when the reader is broken or
 * the bytes would make it buffer more than `max`. */
static int codec_feed(lua_State *L) {
  codec *c = check_codec(L);
  size_t n, buffered;
  const char *s = luaL_checklstring(L, 2, &n);
  if (c->busy) return refuse_reentry(L);
  buffered = c->reader->len - c->reader->pos;
  if (n > c->max || buffered > c->max - n) {
    lua_pushnil(L);
    lua_pushfstring(L, "a reply larger than %I bytes", (lua_Integer)c->max);
    return 2;
  }
  if (redisReaderFeed(c->reader, s, n) != REDIS_OK) {
    lua_pushnil(L);
    lua_pushstring(L, c->reader->errstr);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Pushes r as the Lua value of the grammar above; 0 when the Lua stack
 * cannot grow or the tree is inconsistent (nothing pushed then). hiredis
 * nests arrays at most 7 deep. */
static int push_reply(lua_State *L, const redisReply *r, size_t split) {
  size_t i;
  if (!lua_checkstack(L, 3)) return 0;
  switch (r->type) {
  case REDIS_REPLY_STRING:
    if (split > 0 && r->len >= split) {
      lua_createtable(L, 0, 2);
      lua_pushlstring(L, r->str, split);
      lua_setfield(L, -2, "head");
      lua_pushlstring(L, r->str + split, r->len - split);
      lua_setfield(L, -2, "tail");
      return 1;
    }
    lua_pushlstring(L, r->str, r->len);
    return 1;
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    return 1;
  case REDIS_REPLY_INTEGER:
    lua_pushinteger(L, (lua_Integer)r->integer);
    return 1;
  case REDIS_REPLY_ERROR:
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, r->str, r->len);
    lua_setfield(L, -2, "err");
    return 1;
  case REDIS_REPLY_ARRAY:
    if (r->elements > 0 && r->element == NULL) return 0; /* never built by hiredis; not trusted */
    lua_createtable(L, r->elements > INT_MAX ? INT_MAX : (int)r->elements, 0);
    for (i = 0; i < r->elements; i++) {
      if (!push_reply(L, r->element[i], split)) {
        lua_pop(L, 1);
        return 0;
      }
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
  default: /* REDIS_REPLY_NIL: a nil bulk string or array */
    lua_pushboolean(L, 0);
    return 1;
  }
}

/* codec:reply([split]) -> the next complete reply; nil when more bytes are
 * needed; nil, message on a protocol error (the connection is unusable). */
static int codec_reply(lua_State *L) {
  codec *c = check_codec(L);
  lua_Integer split = luaL_optinteger(L, 2, 0);
  void *reply = NULL;
  int ok;
  luaL_argcheck(L, split >= 0, 2, "a length >= 0 expected");
  if (c->busy) return refuse_reentry(L);
  if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
    lua_pushnil(L);
    if (c->refused)
      lua_pushfstring(L, "an array reply too large for %I bytes", (lua_Integer)c->max);
    else
      lua_pushfstring(L, "a malformed reply (%s)", c->reader->errstr);
    return 2;
  }
  if (reply == NULL) {
    lua_pushnil(L);
    return 1;
  }
  c->held = (redisReply *)reply;
  c->busy = 1;
  ok = push_reply(L, c->held, (size_t)split);
  freeReplyObject(c->held);
  c->held = NULL;
  c->busy = 0;
  if (!ok) {
    lua_pushnil(L);
    lua_pushliteral(L, "a reply nested too deep for the Lua stack, or inconsistent");
    return 2;
  }
  return 1;
}

/* resp.codec(max) -> a codec that buffers at most max bytes of replies. */
static int new_codec(lua_State *L) {
  lua_Integer max = luaL_checkinteger(L, 1);
  codec *c;
  luaL_argcheck(L, max >= 64 && (lua_Unsigned)max <= (lua_Unsigned)(SIZE_MAX / 2), 1,
    "a buffer size of at least 64 bytes expected");
  c = (codec *)lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->max = (size_t)max;
  luaL_setmetatable(L, CODEC_MT);
  c->reader = redisReaderCreate();
  if (c->reader == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "out of memory creating a Redis reply reader");
    return 2;
  }
  c->fn = *c->reader->fn;
  c->create_array = c->fn.createArray;
  c->fn.createArray = create_array;
  c->reader->fn = &c->fn;
  c->reader->privdata = c;
  return 1;
}

static const luaL_Reg codec_methods[] = {
  { "command", codec_command },
  { "feed", codec_feed },
  { "reply", codec_reply },
  { NULL, NULL },
};

int luaopen_cache_resource_redis_resp(lua_State *L) {
  if (luaL_newmetatable(L, CODEC_MT)) {
    luaL_newlib(L, codec_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, codec_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, CODEC_MT);
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, new_codec);
  lua_setfield(L, -2, "codec");
  return 1;
}
