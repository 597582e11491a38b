/* A tiny growable byte string. The key serializer, the identity builder and
 * (later) the replay recorder all append into one of these. */
#ifndef CR_BUFFER_H
#define CR_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "lua.h"

typedef struct cr_buffer {
  unsigned char *data;
  size_t len;
  size_t cap;
} cr_buffer;

void cr_buffer_init(cr_buffer *b);
void cr_buffer_free(cr_buffer *b);
/* Grows the buffer so `extra` more bytes fit; 0 when the size overflows or
 * memory runs out (the buffer is left as it was). */
int cr_buffer_grow(cr_buffer *b, size_t extra);
/* The same, raising a Lua error instead of returning 0. */
unsigned char *cr_buffer_reserve(lua_State *L, cr_buffer *b, size_t extra);
void cr_buffer_varint(lua_State *L, cr_buffer *b, uint64_t v);

static inline void cr_buffer_put(lua_State *L, cr_buffer *b, const void *p, size_t n) {
  if (b->cap - b->len < n) cr_buffer_reserve(L, b, n);
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
}

static inline void cr_buffer_byte(lua_State *L, cr_buffer *b, unsigned char c) {
  if (b->cap == b->len) cr_buffer_reserve(L, b, 1);
  b->data[b->len++] = c;
}

/* 8 bytes, little-endian whatever the host, so keys are canonical. */
static inline void cr_buffer_u64(lua_State *L, cr_buffer *b, uint64_t v) {
  unsigned char *p;
  int i;
  if (b->cap - b->len < 8) cr_buffer_reserve(L, b, 8);
  p = b->data + b->len;
  for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
  b->len += 8;
}

/* Readers for what the writers above produced; the caller knows the
 * bytes are there (it wrote them). */
static inline uint64_t cr_buffer_get_varint(const cr_buffer *b, size_t *pos) {
  uint64_t v = 0;
  int shift = 0;
  while (*pos < b->len) {
    unsigned char c = b->data[(*pos)++];
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) break;
    shift += 7;
  }
  return v;
}

static inline uint64_t cr_buffer_get_u64(const cr_buffer *b, size_t *pos) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < 8; i++) v |= (uint64_t)b->data[*pos + i] << (8 * i);
  *pos += 8;
  return v;
}

#endif
