#include <stdlib.h>
#include "cr.h"

void cr_buffer_init(cr_buffer *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}

void cr_buffer_free(cr_buffer *b) {
  free(b->data);
  cr_buffer_init(b);
}

int cr_buffer_grow(cr_buffer *b, size_t extra) {
  size_t need = b->len + extra, cap = b->cap ? b->cap : 64;
  unsigned char *p;
  if (need < b->len) return 0;
  if (need <= b->cap) return 1;
  while (cap < need) cap = cap * 2 > cap ? cap * 2 : need;
  p = (unsigned char *)realloc(b->data, cap);
  if (p == NULL) return 0;
  b->data = p;
  b->cap = cap;
  return 1;
}

unsigned char *cr_buffer_reserve(lua_State *L, cr_buffer *b, size_t extra) {
  if (!cr_buffer_grow(b, extra)) {
    if (b->len + extra < b->len) cr_error(L, "cache_resource: buffer size overflow");
    /* lua_pushfstring knows no %zu: sizes go out as lua_Integer (%I) */
    cr_error(L, "cache_resource: out of memory (growing a buffer of %I bytes by %I)", (lua_Integer)b->len,
             (lua_Integer)extra);
  }
  return b->data + b->len;
}

void cr_buffer_varint(lua_State *L, cr_buffer *b, uint64_t v) {
  unsigned char tmp[10];
  size_t n = 0;
  do {
    unsigned char c = (unsigned char)(v & 0x7f);
    v >>= 7;
    tmp[n++] = (unsigned char)(c | (v ? 0x80 : 0));
  } while (v);
  cr_buffer_put(L, b, tmp, n);
}
