#include "protocols/json_text.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "runtime/err.h"

static const char ELLIPSIS[] = "\xe2\x80\xa6"; /* U+2026, 3 bytes raw (push.md 8) */

/* Decodes one code point from |s| (at most |n| bytes). Returns its length in
 * bytes, or 0 for an invalid sequence (overlongs, surrogates, > U+10FFFF). */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    size_t len;
    uint32_t v, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if ((b & 0xe0) == 0xc0) {
        len = 2, v = b & 0x1f, min = 0x80;
    } else if ((b & 0xf0) == 0xe0) {
        len = 3, v = b & 0x0f, min = 0x800;
    } else if ((b & 0xf8) == 0xf0) {
        len = 4, v = b & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

int json_text_append(struct rt_buf *out, const char *s, size_t budget)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s), used = 0;
    size_t start = out->len;
    while (n) {
        uint32_t cp;
        size_t k = utf8_next(p, n, &cp);
        char esc[8];
        const char *w;
        size_t wl;
        if (k == 0) {
            /* Replace one bad byte with U+FFFD and resynchronise after it. */
            w = "\xef\xbf\xbd", wl = 3, k = 1;
        } else if (cp == '"' || cp == '\\') {
            esc[0] = '\\', esc[1] = (char)cp, w = esc, wl = 2;
        } else if (cp == '\r' || cp == '\n' || cp == '\t') {
            w = " ", wl = 1;
        } else if (cp < 0x20 || cp == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
            w = esc, wl = 6;
        } else {
            w = (const char *)p, wl = k;
        }
        size_t left = n - k;
        /* Keep room for the ellipsis unless this is the last code point. */
        size_t reserve = left ? sizeof(ELLIPSIS) - 1 : 0;
        if (used + wl + reserve > budget) {
            if (used + sizeof(ELLIPSIS) - 1 > budget) {
                out->len = start;
                return ENS_ETOOBIG;
            }
            return rt_buf_append(out, ELLIPSIS, sizeof(ELLIPSIS) - 1);
        }
        if (rt_buf_append(out, w, wl) != 0)
            return ENS_ETOOBIG;
        used += wl;
        p += k;
        n = left;
    }
    return 0;
}

int json_str_append(struct rt_buf *out, const char *s, size_t budget)
{
    if (rt_buf_append(out, "\"", 1))
        return ENS_ETOOBIG;
    int rv = json_text_append(out, s, budget);
    if (rv == 0)
        rv = rt_buf_append(out, "\"", 1);
    return rv;
}
