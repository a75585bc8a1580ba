/* Test support: a strict UTF-8 validator, independent of the code under
 * test, for asserting that truncated payloads stay valid text. */
#ifndef ENS_TESTS_SUPPORT_UTF8_CHECK_H
#define ENS_TESTS_SUPPORT_UTF8_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* Strict UTF-8 check (no overlongs, surrogates or out-of-range). */
static inline int valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t v;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, v = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, v = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, v = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            v = (v << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && v < 0x80) || (len == 3 && v < 0x800) || (len == 4 && v < 0x10000) ||
            v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

#endif
