#include "runtime/b64.h"

#include "runtime/err.h"

static const char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int b64_encode(struct rt_buf *out, struct span in, int url)
{
    const char *alpha = url ? kUrl : kStd;
    size_t start = out->len;
    size_t i = 0;
    int rc = 0;
    for (; i + 3 <= in.len && rc == 0; i += 3) {
        uint32_t v = ((uint32_t)in.p[i] << 16) | ((uint32_t)in.p[i + 1] << 8) | in.p[i + 2];
        char q[4] = {alpha[v >> 18], alpha[(v >> 12) & 63], alpha[(v >> 6) & 63], alpha[v & 63]};
        rc = rt_buf_append(out, q, 4);
    }
    size_t rest = in.len - i;
    if (rc == 0 && rest) {
        uint32_t v = (uint32_t)in.p[i] << 16;
        if (rest == 2)
            v |= (uint32_t)in.p[i + 1] << 8;
        char q[4] = {alpha[v >> 18], alpha[(v >> 12) & 63], alpha[(v >> 6) & 63], '='};
        if (rest == 1)
            q[2] = '=';
        size_t n = url ? rest + 1 : 4;
        rc = rt_buf_append(out, q, n);
    }
    if (rc) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return rc;
}

/* 0..63 for alphabet bytes, 64 for '=', 255 for anything else. */
static uint8_t b64_value(uint8_t c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return (uint8_t)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (uint8_t)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (uint8_t)(c - '0' + 52);
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    if (c == '=' && !url)
        return 64;
    return 255;
}

int b64_decode(struct rt_buf *out, struct span in, int url)
{
    size_t start = out->len;
    size_t n = in.len;
    if (!url) {
        if (n % 4 != 0)
            return ENS_EPARSE;
        /* strip at most two padding bytes; any other '=' is rejected below */
        if (n && in.p[n - 1] == '=')
            n--;
        if (n && in.p[n - 1] == '=')
            n--;
    }
    if (n % 4 == 1)
        return ENS_EPARSE;
    uint32_t acc = 0;
    int bits = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t v = b64_value(in.p[i], url);
        if (v >= 64) {
            rc = ENS_EPARSE;
            break;
        }
        acc = (acc << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            uint8_t byte = (uint8_t)(acc >> bits);
            rc = rt_buf_append(out, &byte, 1);
        }
    }
    /* the leftover bits must be zero, or two encodings would decode alike */
    if (rc == 0 && (acc & ((1u << bits) - 1)) != 0)
        rc = ENS_EPARSE;
    if (rc) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return rc;
}
