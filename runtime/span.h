/* A span is a borrowed, length-delimited view of untrusted bytes.
 *
 * Every reader checks the remaining length, returns 1 on success or 0 on
 * failure, and advances the span only on success (BoringSSL's CBS). Network
 * bytes are never treated as NUL-terminated strings. */
#ifndef ENS_RUNTIME_SPAN_H
#define ENS_RUNTIME_SPAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct span {
    const uint8_t *p;
    size_t len;
};

static inline struct span span_make(const void *p, size_t len)
{
    struct span s = {(const uint8_t *)p, len};
    return s;
}

static inline struct span span_cstr(const char *s)
{
    return span_make(s, s ? strlen(s) : 0);
}

static inline int span_get_u8(struct span *s, uint8_t *out)
{
    if (s->len < 1)
        return 0;
    *out = s->p[0];
    s->p++;
    s->len--;
    return 1;
}

static inline int span_get_u16(struct span *s, uint16_t *out)
{
    if (s->len < 2)
        return 0;
    *out = (uint16_t)((s->p[0] << 8) | s->p[1]);
    s->p += 2;
    s->len -= 2;
    return 1;
}

static inline int span_get_u32(struct span *s, uint32_t *out)
{
    if (s->len < 4)
        return 0;
    *out = ((uint32_t)s->p[0] << 24) | ((uint32_t)s->p[1] << 16) | ((uint32_t)s->p[2] << 8) |
           (uint32_t)s->p[3];
    s->p += 4;
    s->len -= 4;
    return 1;
}

/* span_get_bytes sets |out| to the next |n| bytes of |s|. */
static inline int span_get_bytes(struct span *s, struct span *out, size_t n)
{
    if (s->len < n)
        return 0;
    *out = span_make(s->p, n);
    s->p += n;
    s->len -= n;
    return 1;
}

/* span_copy_bytes copies the next |n| bytes of |s| into |dst|. */
static inline int span_copy_bytes(struct span *s, void *dst, size_t n)
{
    if (s->len < n)
        return 0;
    if (n)
        memcpy(dst, s->p, n);
    s->p += n;
    s->len -= n;
    return 1;
}

/* span_get_u16_prefixed reads a big-endian u16 length and that many bytes. */
static inline int span_get_u16_prefixed(struct span *s, struct span *out)
{
    struct span copy = *s;
    uint16_t n;
    if (!span_get_u16(&copy, &n) || !span_get_bytes(&copy, out, n))
        return 0;
    *s = copy;
    return 1;
}

/* span_get_decimal parses a run of ASCII digits (at least one) whose value is at
 * most |max|, stopping at the first non-digit. No sign, no spaces. */
static inline int span_get_decimal(struct span *s, uint64_t max, uint64_t *out)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < s->len && s->p[i] >= '0' && s->p[i] <= '9') {
        uint64_t d = (uint64_t)(s->p[i] - '0');
        if (v > (max - d) / 10)
            return 0;
        v = v * 10 + d;
        i++;
    }
    if (i == 0)
        return 0;
    *out = v;
    s->p += i;
    s->len -= i;
    return 1;
}

/* span_eq reports whether |s| holds exactly the bytes of the C string |lit|. */
static inline int span_eq(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.p, lit, n) == 0);
}

/* span_eq_nocase is span_eq ignoring ASCII case. */
static inline int span_eq_nocase(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = s.p[i], b = (uint8_t)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a + 32);
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b + 32);
        if (a != b)
            return 0;
    }
    return 1;
}

/* span_has_prefix reports whether |s| starts with |lit|. */
static inline int span_has_prefix(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= n && memcmp(s.p, lit, n) == 0;
}

#endif
