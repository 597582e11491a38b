/* The value codec: exact copies of Lua values as bytes, for cache_data
 * entries and for the arguments of recorded UI calls. The grammar is at the
 * top of cr_codec.c. */
#ifndef CR_CODEC_H
#define CR_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "lua.h"
#include "cr_buffer.h"

/* Value tags. Every tag is below CR_CODEC_TAG_LIMIT, so a format that
 * embeds codec values (the replay records) has the tags above it. */
enum {
  CR_C_NIL = 0x01, CR_C_FALSE, CR_C_TRUE, CR_C_INT, CR_C_FLOAT,
  CR_C_STR, CR_C_STR_KEEP, CR_C_STR_REF,
  CR_C_TABLE, CR_C_TABLE_KEEP, CR_C_TABLE_MT, CR_C_TABLE_MT_KEEP, CR_C_TABLE_REF,
  CR_CODEC_TAG_LIMIT = 0x20
};

#define CR_CODEC_VERSION 1
#define CR_CODEC_MAX_DEPTH 100   /* a returned table is level 1 */

/* How metatables are written. */
enum cr_codec_mode {
  CR_CODEC_MEMORY, /* the index of the metatable in a list kept with the bytes */
  CR_CODEC_NAMED,  /* the name it was registered under (bytes that leave the process) */
  CR_CODEC_PLAIN   /* no table with a metatable can be copied (recorded UI arguments) */
};

/* Why a value list cannot be encoded. */
enum cr_codec_status {
  CR_CODEC_OK,
  CR_CODEC_UNCOPYABLE,  /* a function, thread or userdata (message: "PATH is WHAT") */
  CR_CODEC_TOO_DEEP,    /* "result[i] nests deeper than 100 levels" */
  CR_CODEC_UNREGISTERED,/* named mode: a metatable without a registered name */
  CR_CODEC_HAS_MT,      /* plain mode: a table with a metatable */
  CR_CODEC_NOMEM        /* memory ran out (the C heap, or the Lua stack) */
};

/* One distinct table or string met while encoding. */
typedef struct cr_codec_obj {
  const void *p;
  size_t narr, nhash;           /* tables: the counts written */
  uint32_t refs;                /* times it was reached */
  int32_t kept;                 /* its back-reference number once written, else -1 */
  uint32_t meta;                /* tables: 0, or 1 + its metatable's index in the list */
} cr_codec_obj;

/* A pointer -> object index hash map (open addressing). */
typedef struct cr_codec_map {
  cr_codec_obj *objs;
  size_t nobjs, capobjs;
  uint32_t *slots;              /* 1 + object index, 0 = empty */
  size_t mask;
} cr_codec_map;

/* The encoder's memory, reused from one encoding to the next: the state
 * owns one set; an encoding that starts while it is busy (a finalizer run
 * by the final string's allocation) gets a set boxed in a userdata. */
typedef struct cr_codec_bufs {
  cr_buffer out;
  cr_codec_map tables, strings, metas;
  int busy;
} cr_codec_bufs;

/* What the encoder reports when it fails: message is "PATH is WHAT" (or
 * "PATH nests deeper than 100 levels"), for the caller to raise. */
typedef struct cr_codec_error {
  enum cr_codec_status status;
  char message[640];
} cr_codec_error;

/* Encodes the n values at first.. (read raw: no metamethod runs, and no
 * Lua code runs at all until the result is pushed) and pushes the bytes as
 * a string. In memory mode it also pushes the metatable list (a table, or
 * nil when there is none) above them; in named mode `names` is the stack
 * index of the table metatable -> registered name. `label` names the
 * values in messages ("result" gives result[1], result[2], ...). On
 * failure pushes nothing, fills *err and returns its status; the caller
 * raises (cr_error) or falls back. */
enum cr_codec_status cr_codec_encode(lua_State *L, cr_codec_bufs *bufs, int first, int n, enum cr_codec_mode mode,
                                     int names, const char *label, cr_codec_error *err);

/* The fix a message about a value that cannot be copied ends with, with a
 * leading space ("" when there is none to give). */
const char *cr_codec_fix(enum cr_codec_status status);

/* One value at idx, appended to out with no header, its back-references
 * numbered on their own (a recorded UI argument). Plain mode: a table with
 * a metatable, like a function, makes it uncopyable. Returns CR_CODEC_OK
 * or the reason, with *err filled (out is then as it was). */
enum cr_codec_status cr_codec_append_value(lua_State *L, cr_codec_bufs *bufs, cr_buffer *out, int idx,
                                           cr_codec_error *err);

/* Decoding. The bytes must stay where they are while it runs: a Lua string
 * anchored on the stack, or a buffer its owner keeps (a running replay).
 * Every allocation in it may run finalizers, which may do anything but
 * move or free those bytes; positions are offsets into them. */
typedef struct cr_codec_dec {
  lua_State *L;
  const unsigned char *p;       /* the bytes (anchored by the caller) */
  size_t pos, end;              /* read offset; end of the bytes */
  size_t budget;                /* table slots still allowed (bounded by the bytes) */
  int metas;                    /* memory: stack index of the metatable list; named: name -> metatable */
  enum cr_codec_mode mode;
  int tables, strings;          /* stack indices of the back-reference lists, 0 until needed */
  lua_Integer ntables, nstrings;
  int strcache;                 /* 0, or a table: offset of a string -> that string (replays) */
  int last_nan;                 /* the last float decoded was a NaN */
  const char *error;            /* why the bytes were refused */
} cr_codec_dec;

/* Decodes a whole encoding (what cr_codec_encode pushed) held in the string
 * at stack index src, pushing its values; `metas` as in cr_codec_dec.
 * Returns the number of values, or -1 with *why set (a damaged, cut,
 * extended or foreign buffer; nothing is left pushed). Never raises for
 * bad bytes; only memory errors of the Lua API escape. */
int cr_codec_decode(lua_State *L, int src, int metas, enum cr_codec_mode mode, const char **why);

/* The header of an encoding: 0 when it is damaged (or the body does not
 * end the bytes exactly). */
typedef struct cr_codec_head {
  uint64_t nvalues, ntables, nstrings;
  size_t body;                  /* offset of the values */
  int named;                    /* metatables by name */
} cr_codec_head;
int cr_codec_header(const unsigned char *p, size_t len, cr_codec_head *h);

/* A decoder over bytes the caller anchors, for single values with no
 * header (recorded UI arguments): set up, then cr_codec_decode_value once
 * per value; 0 when the bytes are bad (d->error says why). */
void cr_codec_dec_init(cr_codec_dec *d, lua_State *L, const unsigned char *p, size_t pos, size_t end);
int cr_codec_decode_value(cr_codec_dec *d);

/* A reader for what the compiler of replays turns into Lua source: one tag
 * and its fixed payload at a time (tables: their counts; strings: their
 * offset and length). Returns 0 at bad bytes. */
typedef struct cr_codec_item {
  int tag;
  uint64_t u;                   /* INT: the value's bits; FLOAT: its bits; STR: length; TABLE: narr; REF: number */
  uint64_t nhash;               /* TABLE: hash pairs */
  uint64_t meta;                /* TABLE_MT: the metatable reference (memory mode) */
  size_t off;                   /* STR: offset of the bytes */
} cr_codec_item;
int cr_codec_read_item(const unsigned char *p, size_t end, size_t *pos, cr_codec_item *it);

cr_codec_bufs *cr_codec_bufs_take(lua_State *L, cr_codec_bufs *own);
void cr_codec_bufs_release(cr_codec_bufs *b);
void cr_codec_bufs_free(cr_codec_bufs *b);
int cr_codec_bufs_gc(lua_State *L);

#endif
