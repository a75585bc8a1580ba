#include "runtime/buf.h"

#include <stdio.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/err.h"

void rt_buf_init(struct rt_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->secret = 0;
}

void rt_buf_init_secret(struct rt_buf *b, size_t max)
{
    rt_buf_init(b, max);
    b->secret = 1;
}

void rt_buf_cleanup(struct rt_buf *b)
{
    ens_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void rt_buf_cleanup_secret(struct rt_buf *b)
{
    ens_wipe(b->data, b->cap);
    rt_buf_cleanup(b);
}

void rt_buf_reset(struct rt_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* buf_reserve makes room for |n| more bytes plus the trailing NUL. */
static int buf_reserve(struct rt_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return ENS_ETOOBIG;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    if (b->secret && b->data) {
        /* realloc may move the bytes and free the old block unwiped */
        uint8_t *fresh = ens_malloc(cap);
        memcpy(fresh, b->data, b->len + 1);
        ens_wipe(b->data, b->cap);
        ens_free(b->data);
        b->data = fresh;
    } else {
        b->data = ens_realloc(b->data, cap);
    }
    b->cap = cap;
    return 0;
}

int rt_buf_append(struct rt_buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int rt_buf_append_str(struct rt_buf *b, const char *s)
{
    return rt_buf_append(b, s, strlen(s));
}

int rt_buf_append_span(struct rt_buf *b, struct span s)
{
    return rt_buf_append(b, s.p, s.len);
}

int rt_buf_vappendf(struct rt_buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        return ENS_EINVAL;
    int rc = buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int rt_buf_appendf(struct rt_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = rt_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void rt_buf_consume(struct rt_buf *b, size_t n)
{
    if (n >= b->len) {
        rt_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

uint8_t *rt_buf_take(struct rt_buf *b, size_t *len_out)
{
    uint8_t *p = b->data;
    if (len_out)
        *len_out = b->len;
    if (p == NULL)
        p = (uint8_t *)ens_memdup("", 0);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

const char *rt_buf_cstr(struct rt_buf *b)
{
    return b->data ? (const char *)b->data : "";
}
