/* A growable byte buffer with a hard cap fixed at init (curl's dynbuf).
 *
 * Appends that would pass the cap fail with ENS_ETOOBIG and leave the buffer
 * as it was. The data is always followed by a NUL byte (not counted in len) so
 * that text we built ourselves can be handed to C APIs; network input must
 * still be read through spans. */
#ifndef ENS_RUNTIME_BUF_H
#define ENS_RUNTIME_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/span.h"

struct rt_buf {
    uint8_t *data;
    size_t len;
    size_t cap; /* allocated bytes */
    size_t max; /* the hard cap on len */
    int secret; /* growth wipes the old allocation (see rt_buf_init_secret) */
};

/* rt_buf_init prepares an empty buffer that will never hold more than |max| bytes. */
void rt_buf_init(struct rt_buf *b, size_t max);

/* rt_buf_init_secret is rt_buf_init for a buffer that will hold a secret:
 * when it grows, the old allocation is wiped before it is freed, so no copy
 * of the secret is left in freed memory. Release it with
 * rt_buf_cleanup_secret. */
void rt_buf_init_secret(struct rt_buf *b, size_t max);

/* rt_buf_cleanup frees the storage; the buffer may be re-initialised. */
void rt_buf_cleanup(struct rt_buf *b);

/* rt_buf_cleanup_secret wipes the whole allocation before freeing it. */
void rt_buf_cleanup_secret(struct rt_buf *b);

/* rt_buf_reset empties the buffer and keeps its storage. */
void rt_buf_reset(struct rt_buf *b);

/* rt_buf_append adds |n| bytes; 0 or ENS_ETOOBIG. */
int rt_buf_append(struct rt_buf *b, const void *p, size_t n);
int rt_buf_append_str(struct rt_buf *b, const char *s);
int rt_buf_append_span(struct rt_buf *b, struct span s);

/* rt_buf_appendf appends printf-formatted text; 0 or ENS_ETOOBIG. Never pass a
 * secret through it: formatted text is the stuff logs are made of. */
int rt_buf_appendf(struct rt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int rt_buf_vappendf(struct rt_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* rt_buf_consume drops the first |n| bytes (n <= len). */
void rt_buf_consume(struct rt_buf *b, size_t n);

/* rt_buf_take hands the storage to the caller (free with ens_free) and empties
 * the buffer. Returns a NUL-terminated allocation even when empty. */
uint8_t *rt_buf_take(struct rt_buf *b, size_t *len_out);

/* rt_buf_cstr returns the contents as a NUL-terminated string (borrowed). */
const char *rt_buf_cstr(struct rt_buf *b);

static inline struct span rt_buf_span(const struct rt_buf *b)
{
    return span_make(b->data, b->len);
}

#endif
