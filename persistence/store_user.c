#include "persistence/store_user.h"

#include <hiredis/hiredis.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/log.h"

#define STORE_MAX_KEY                                                                              \
    96 /* "ens:idx:dev:", "ens:u:{}" or "ens:seen:{}:" + digest around a 22-char id */
#define STORE_MAX_REMOVE (2 * STORE_MAX_DEVICES)

/* ---- names ---- */

static const char *const kSubStateNames[STORE_SUB_STATE_COUNT] = {
    "none", "subscribing", "active", "pending", "stale", "lost", "blocked",
};

const char *store_sub_state_name(enum store_sub_state st)
{
    if ((int)st < 0 || (int)st >= STORE_SUB_STATE_COUNT)
        return kSubStateNames[0];
    return kSubStateNames[st];
}

int store_sub_state_parse(struct span name, enum store_sub_state *out)
{
    for (int i = 0; i < STORE_SUB_STATE_COUNT; i++) {
        if (span_eq(name, kSubStateNames[i])) {
            *out = (enum store_sub_state)i;
            return 1;
        }
    }
    return 0;
}

static const char *const kPlatforms[] = {"ios", "android", NULL};
static const char *const kEnvironments[] = {"production", "sandbox", NULL};
static const char *const kPreviews[] = {"full", "sender", "none", NULL};
static const char *const kAuthTypes[] = {"", "basic", "oauth", "certificate", NULL};

static int in_set(const char *v, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(v, *set) == 0)
            return 1;
    return 0;
}

/* ---- ids ---- */

static int is_b64url(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int is_hex_lower(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

void store_id_new(char out[STORE_ID_CHARS + 1])
{
    uint8_t raw[16];
    struct rt_buf b;
    RAND_bytes(raw, sizeof(raw));
    rt_buf_init(&b, STORE_ID_CHARS);
    b64_encode(&b, span_make(raw, sizeof(raw)), 1);
    memcpy(out, b.data, STORE_ID_CHARS);
    out[STORE_ID_CHARS] = '\0';
    rt_buf_cleanup(&b);
}

int store_id_valid(const char *id)
{
    if (id == NULL)
        return 0;
    for (size_t i = 0; i < STORE_ID_CHARS; i++)
        if (!is_b64url((uint8_t)id[i]))
            return 0;
    return id[STORE_ID_CHARS] == '\0';
}

static int cred_id_valid(const char *id)
{
    if (id == NULL)
        return 0;
    for (size_t i = 0; i < STORE_CRED_ID_CHARS; i++)
        if (!is_hex_lower((uint8_t)id[i]))
            return 0;
    return id[STORE_CRED_ID_CHARS] == '\0';
}

/* A C string that fits its array with its NUL (fixed arrays in our structs). */
#define FITS(arr) (memchr((arr), '\0', sizeof(arr)) != NULL)

/* ---- user object ---- */

struct store_user *store_user_new(void)
{
    return ens_calloc(1, sizeof(struct store_user));
}

void store_user_free(struct store_user *u)
{
    if (u == NULL)
        return;
    ens_free(u->devices);
    ens_free(u);
}

struct store_device *store_user_add_device(struct store_user *u)
{
    if (u->n_devices >= STORE_MAX_DEVICES)
        return NULL;
    u->devices = ens_realloc(u->devices, (u->n_devices + 1) * sizeof(*u->devices));
    struct store_device *d = &u->devices[u->n_devices++];
    memset(d, 0, sizeof(*d));
    return d;
}

struct store_device *store_user_find_device(struct store_user *u, const char *device_id)
{
    for (size_t i = 0; i < u->n_devices; i++)
        if (strcmp(u->devices[i].device_id, device_id) == 0)
            return &u->devices[i];
    return NULL;
}

int store_user_remove_device(struct store_user *u, const char *device_id)
{
    struct store_device *d = store_user_find_device(u, device_id);
    if (d == NULL)
        return ENS_ENOTFOUND;
    size_t i = (size_t)(d - u->devices);
    memmove(&u->devices[i], &u->devices[i + 1], (u->n_devices - i - 1) * sizeof(*d));
    u->n_devices--;
    return 0;
}
/* ---- records ----
 *
 * The mailbox and its devices are stored as compact binary records rather than
 * one hash field per value: a hash holding any value longer than
 * hash-max-listpack-value (64 bytes by default) becomes a real hashtable, which
 * costs about 60 bytes per field, and a subscription id, an EWS URL or a
 * sealed blob is often longer than that. See docs/redis.md for the figures.
 *
 * A record is a run of items, each a tag byte and a value; tags rise strictly
 * (so no field appears twice), and a field at its default (empty string, zero,
 * the first name of its set) is left out and refused when present. Numbers
 * are minimal LEB128 varints, signed ones zigzagged. A string is a varint
 * header (stored length << 2 | kind) and the stored bytes; the kind says
 * whether they are the text itself or the bytes its canonical hex, base64 or
 * base64url spelling encodes (enum str_kind), which shrinks push tokens, key
 * hashes, subscription ids, watermarks and our ids by a quarter to a half. So
 * every record has exactly one encoding: decoding then encoding gives back the
 * same bytes, which the fuzzer checks. */

#define REC_MAX_VARINT  10   /* bytes of a 64-bit LEB128 varint */
#define REC_VERSION     1    /* first byte of a mailbox record */
#define REC_TAG_DEVICE  0x80 /* a device inside a mailbox record; repeats */
#define REC_MAX_DEV_REC (STORE_ID_CHARS + 2 + STORE_MAX_DEVICE_RECORD) /* id, then body */

enum rtype { RT_STR, RT_ENUM, RT_BOOL, RT_U16, RT_U32, RT_U64, RT_INT, RT_I64, RT_STATE };

/* One row per field; the tag of row i is i + 1. */
struct rfield {
    const char *name; /* for logs and docs */
    enum rtype type;
    size_t off;
    size_t cap;               /* array size for RT_STR and RT_ENUM */
    const char *const *names; /* RT_ENUM: the set, names[0] is the default */
};

#define RSTR(T, n, f)                                                                              \
    {                                                                                              \
        n, RT_STR, offsetof(T, f), sizeof(((T *)0)->f), NULL                                       \
    }
#define RENUM(T, n, f, set)                                                                        \
    {                                                                                              \
        n, RT_ENUM, offsetof(T, f), sizeof(((T *)0)->f), set                                       \
    }
#define RNUM(T, n, t, f)                                                                           \
    {                                                                                              \
        n, t, offsetof(T, f), 0, NULL                                                              \
    }

static const struct rfield kDeviceFields[] = {
    RSTR(struct store_device, "client_id", client_id),
    RENUM(struct store_device, "platform", platform, kPlatforms),
    RSTR(struct store_device, "push_token", push_token),
    RSTR(struct store_device, "app_id", app_id),
    RENUM(struct store_device, "environment", environment, kEnvironments),
    RSTR(struct store_device, "key_hash", key_hash),
    RENUM(struct store_device, "preview", preview, kPreviews),
    RNUM(struct store_device, "badge", RT_BOOL, badge),
    RNUM(struct store_device, "blocked", RT_BOOL, blocked),
    RNUM(struct store_device, "created_at", RT_I64, created_at),
    RNUM(struct store_device, "last_push_at", RT_I64, last_push_at),
    RSTR(struct store_device, "last_push_result", last_push_result),
    RNUM(struct store_device, "cred_fp", RT_U16, cred_fp),
};
#define N_DEVICE_FIELDS (sizeof(kDeviceFields) / sizeof(kDeviceFields[0]))

static const struct rfield kUserFields[] = {
    RSTR(struct store_user, "tenant_id", tenant_id),
    RSTR(struct store_user, "email", email),
    RSTR(struct store_user, "ews_url", ews_url),
    RENUM(struct store_user, "auth_type", auth_type, kAuthTypes),
    RNUM(struct store_user, "cred_fp", RT_U16, cred_fp),
    RNUM(struct store_user, "badge", RT_INT, badge),
    RNUM(struct store_user, "created_at", RT_I64, created_at),
    RNUM(struct store_user, "updated_at", RT_I64, updated_at),
    RSTR(struct store_user, "sub.id", sub.id),
    RNUM(struct store_user, "sub.state", RT_STATE, sub.state),
    RSTR(struct store_user, "sub.watermark", sub.watermark),
    RSTR(struct store_user, "sub.cred_id", sub.cred_id),
    RNUM(struct store_user, "sub.sealing_kid", RT_U32, sub.sealing_kid),
    RNUM(struct store_user, "sub.status_frequency_min", RT_U32, sub.status_frequency_min),
    RNUM(struct store_user, "sub.last_status_at", RT_I64, sub.last_status_at),
    RNUM(struct store_user, "sub.created_at", RT_I64, sub.created_at),
    RNUM(struct store_user, "counters.callbacks", RT_U64, counters.callbacks),
    RNUM(struct store_user, "counters.notifications", RT_U64, counters.notifications),
    RNUM(struct store_user, "counters.pushes_ok", RT_U64, counters.pushes_ok),
    RNUM(struct store_user, "counters.pushes_failed", RT_U64, counters.pushes_failed),
};
#define N_USER_FIELDS (sizeof(kUserFields) / sizeof(kUserFields[0]))

static int put_varint(struct rt_buf *out, uint64_t v)
{
    uint8_t b[REC_MAX_VARINT];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            b[n] |= 0x80;
        n++;
    } while (v);
    return rt_buf_append(out, b, n);
}

/* Reads a minimal LEB128 varint; advances only on success. */
static int get_varint(struct span *s, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < s->len && i < REC_MAX_VARINT; i++) {
        uint8_t c = s->p[i];
        if (i == REC_MAX_VARINT - 1 && c > 1)
            return 0; /* past 64 bits */
        v |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            if (c == 0 && i > 0)
                return 0; /* not minimal */
            s->p += i + 1;
            s->len -= i + 1;
            *out = v;
            return 1;
        }
    }
    return 0;
}

static uint64_t zigzag(int64_t v)
{
    return v < 0 ? ~((uint64_t)v << 1) : (uint64_t)v << 1;
}

static int64_t unzigzag(uint64_t z)
{
    return (z & 1) ? -(int64_t)(z >> 1) - 1 : (int64_t)(z >> 1);
}

/* How a string is stored: as text, or as the bytes its spelling encodes when
 * that spelling is canonical, so the bytes give the same string back. */
enum str_kind {
    STR_TEXT = 0,
    STR_HEX = 1,    /* lower-case hex, even length: push tokens, hashes, cred ids */
    STR_B64 = 2,    /* standard base64, padded: EWS subscription ids, watermarks */
    STR_B64URL = 3, /* base64url, unpadded: our ids */
};
#define STR_KIND_BITS 2

static int hex_packable(const char *s, size_t len)
{
    if (len == 0 || len % 2)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_hex_lower((uint8_t)s[i]))
            return 0;
    return 1;
}

static uint8_t hex_val(char c)
{
    return (uint8_t)(c <= '9' ? c - '0' : c - 'a' + 10);
}

/* Picks the kind of |s| and, for a packed kind, appends its bytes to |raw|
 * (NULL to only pick). The smallest kind wins; ties go to the lower kind. */
static enum str_kind str_pack(const char *s, size_t len, struct rt_buf *raw)
{
    if (hex_packable(s, len)) {
        for (size_t i = 0; raw && i < len; i += 2) {
            uint8_t byte = (uint8_t)(hex_val(s[i]) << 4 | hex_val(s[i + 1]));
            if (rt_buf_append(raw, &byte, 1) != 0)
                return STR_TEXT;
        }
        return STR_HEX;
    }
    struct rt_buf tmp;
    enum str_kind kind = STR_TEXT;
    rt_buf_init(&tmp, len);
    if (len && b64_decode(&tmp, span_make(s, len), 0) == 0)
        kind = STR_B64;
    else if (len && b64_decode(&tmp, span_make(s, len), 1) == 0)
        kind = STR_B64URL;
    if (kind != STR_TEXT && raw && rt_buf_append_span(raw, rt_buf_span(&tmp)) != 0)
        kind = STR_TEXT;
    rt_buf_cleanup(&tmp);
    return kind;
}

/* Appends a string value: varint (stored length << STR_KIND_BITS | kind) and
 * the stored bytes. */
static int str_put(struct rt_buf *out, const char *s, size_t len)
{
    struct rt_buf raw;
    rt_buf_init(&raw, len);
    enum str_kind kind = str_pack(s, len, &raw);
    struct span v = kind == STR_TEXT ? span_make(s, len) : rt_buf_span(&raw);
    int rc = put_varint(out, (uint64_t)v.len << STR_KIND_BITS | kind);
    if (rc == 0)
        rc = rt_buf_append_span(out, v);
    rt_buf_cleanup(&raw);
    return rc;
}

static int enum_index(const char *v, const char *const *set, uint64_t *out)
{
    for (uint64_t i = 0; set[i]; i++) {
        if (strcmp(v, set[i]) == 0) {
            *out = i;
            return 1;
        }
    }
    return 0;
}

/* The value of a numeric field as the varint we store (0 = default). */
static int num_get(const void *obj, const struct rfield *f, uint64_t *out)
{
    const char *p = (const char *)obj + f->off;
    switch (f->type) {
    case RT_BOOL:
    case RT_INT: {
        int v;
        memcpy(&v, p, sizeof(v));
        if (f->type == RT_BOOL && v != 0 && v != 1)
            return 0;
        *out = f->type == RT_BOOL ? (uint64_t)v : zigzag(v);
        return 1;
    }
    case RT_U16: {
        uint16_t v;
        memcpy(&v, p, sizeof(v));
        *out = v;
        return 1;
    }
    case RT_U32: {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        *out = v;
        return 1;
    }
    case RT_U64:
        memcpy(out, p, sizeof(*out));
        return 1;
    case RT_I64: {
        int64_t v;
        memcpy(&v, p, sizeof(v));
        *out = zigzag(v);
        return 1;
    }
    case RT_STATE: {
        enum store_sub_state v;
        memcpy(&v, p, sizeof(v));
        if ((int)v < 0 || (int)v >= STORE_SUB_STATE_COUNT)
            return 0;
        *out = (uint64_t)v;
        return 1;
    }
    case RT_STR:
    case RT_ENUM:
        break;
    }
    return 0;
}

/* Stores a decoded varint into a numeric field; 0 when out of range. */
static int num_set(void *obj, const struct rfield *f, uint64_t v)
{
    char *p = (char *)obj + f->off;
    switch (f->type) {
    case RT_BOOL:
    case RT_INT: {
        int64_t y = f->type == RT_BOOL ? (int64_t)v : unzigzag(v);
        if ((f->type == RT_BOOL && v > 1) || y < INT_MIN || y > INT_MAX)
            return 0;
        int w = (int)y;
        memcpy(p, &w, sizeof(w));
        return 1;
    }
    case RT_U16: {
        if (v > UINT16_MAX)
            return 0;
        uint16_t w = (uint16_t)v;
        memcpy(p, &w, sizeof(w));
        return 1;
    }
    case RT_U32: {
        if (v > UINT32_MAX)
            return 0;
        uint32_t w = (uint32_t)v;
        memcpy(p, &w, sizeof(w));
        return 1;
    }
    case RT_U64:
        memcpy(p, &v, sizeof(v));
        return 1;
    case RT_I64: {
        int64_t w = unzigzag(v);
        memcpy(p, &w, sizeof(w));
        return 1;
    }
    case RT_STATE: {
        if (v >= STORE_SUB_STATE_COUNT)
            return 0;
        enum store_sub_state w = (enum store_sub_state)v;
        memcpy(p, &w, sizeof(w));
        return 1;
    }
    case RT_STR:
    case RT_ENUM:
        break;
    }
    return 0;
}

/* Appends every non-default field of |obj|. The caller has checked |obj|
 * (strings fit their arrays, enums are in their sets). */
static int record_encode(const struct rfield *tab, size_t n, const void *obj, struct rt_buf *out)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct rfield *f = &tab[i];
        const char *s = (const char *)obj + f->off;
        uint8_t tag = (uint8_t)(i + 1);
        uint64_t v;
        if (f->type == RT_STR) {
            size_t len = strlen(s);
            if (len == 0)
                continue;
            rc = rt_buf_append(out, &tag, 1);
            if (rc == 0)
                rc = str_put(out, s, len);
            continue;
        }
        if (f->type == RT_ENUM) {
            if (!enum_index(s, f->names, &v))
                return ENS_EINVAL;
        } else if (!num_get(obj, f, &v)) {
            return ENS_EINVAL;
        }
        if (v == 0)
            continue;
        rc = rt_buf_append(out, &tag, 1);
        if (rc == 0)
            rc = put_varint(out, v);
    }
    return rc;
}

/* Decodes one string value into a field of |cap| bytes (NUL included). The
 * string must be one the encoder would have stored this way. */
static int str_decode(struct span *in, char *dst, size_t cap)
{
    uint64_t hdr;
    struct span v;
    if (!get_varint(in, &hdr) || hdr >> STR_KIND_BITS == 0 || hdr >> STR_KIND_BITS >= cap)
        return 0;
    enum str_kind kind = (enum str_kind)(hdr & ((1u << STR_KIND_BITS) - 1));
    if (!span_get_bytes(in, &v, (size_t)(hdr >> STR_KIND_BITS)))
        return 0;
    /* Zero the whole array, so equal values make equal structs (the fuzzer
     * compares them with memcmp). */
    memset(dst, 0, cap);
    size_t len;
    if (kind == STR_TEXT) {
        if (memchr(v.p, '\0', v.len))
            return 0; /* it would cut the string */
        memcpy(dst, v.p, v.len);
        len = v.len;
    } else if (kind == STR_HEX) {
        static const char kHex[] = "0123456789abcdef";
        if (2 * v.len >= cap)
            return 0;
        for (size_t i = 0; i < v.len; i++) {
            dst[2 * i] = kHex[v.p[i] >> 4];
            dst[2 * i + 1] = kHex[v.p[i] & 15];
        }
        len = 2 * v.len;
    } else {
        struct rt_buf txt;
        rt_buf_init(&txt, cap - 1);
        int rc = b64_encode(&txt, v, kind == STR_B64URL);
        len = txt.len;
        if (rc == 0)
            memcpy(dst, txt.data, len);
        rt_buf_cleanup(&txt);
        if (rc)
            return 0;
    }
    return str_pack(dst, len, NULL) == kind;
}

/* Decodes the items of |tab| at the front of |in| into |obj|, stopping at the
 * first tag outside the table; advances |in| past them. Fields not present
 * keep their defaults, which the caller set. 1 or 0 (malformed). */
static int record_decode(struct span *in, const struct rfield *tab, size_t n, void *obj)
{
    size_t last = 0;
    while (in->len && in->p[0] >= 1 && in->p[0] <= n) {
        size_t tag = in->p[0];
        if (tag <= last)
            return 0;
        last = tag;
        in->p++;
        in->len--;
        const struct rfield *f = &tab[tag - 1];
        char *dst = (char *)obj + f->off;
        uint64_t v;
        if (f->type == RT_STR) {
            if (!str_decode(in, dst, f->cap))
                return 0;
            continue;
        }
        if (!get_varint(in, &v) || v == 0)
            return 0;
        if (f->type == RT_ENUM) {
            size_t k = 0;
            while (f->names[k])
                k++;
            if (v >= k)
                return 0;
            memset(dst, 0, f->cap);
            snprintf(dst, f->cap, "%s", f->names[v]);
        } else if (!num_set(obj, f, v)) {
            return 0;
        }
    }
    return 1;
}

static void record_defaults(const struct rfield *tab, size_t n, void *obj)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i].type == RT_ENUM)
            snprintf((char *)obj + tab[i].off, tab[i].cap, "%s", tab[i].names[0]);
}

/* ---- devices ---- */

/* The rules a device must meet to be written and to be read back. */
static int device_check(const struct store_device *d)
{
    if (!FITS(d->client_id) || !FITS(d->platform) || !FITS(d->push_token) || !FITS(d->app_id) ||
        !FITS(d->environment) || !FITS(d->key_hash) || !FITS(d->preview) ||
        !FITS(d->last_push_result))
        return 0;
    if (d->client_id[0] == '\0' || d->push_token[0] == '\0')
        return 0;
    if (!in_set(d->platform, kPlatforms) || !in_set(d->environment, kEnvironments) ||
        !in_set(d->preview, kPreviews))
        return 0;
    for (size_t i = 0; i < STORE_KEY_HASH_CHARS; i++)
        if (!is_hex_lower((uint8_t)d->key_hash[i]))
            return 0;
    return d->key_hash[STORE_KEY_HASH_CHARS] == '\0' && (d->badge == 0 || d->badge == 1) &&
           (d->blocked == 0 || d->blocked == 1);
}

int store_device_encode(const struct store_device *d, struct rt_buf *out)
{
    if (!device_check(d))
        return ENS_EINVAL;
    size_t start = out->len;
    int rc = record_encode(kDeviceFields, N_DEVICE_FIELDS, d, out);
    if (rc == 0 && out->len - start > STORE_MAX_DEVICE_RECORD)
        rc = ENS_ETOOBIG;
    if (rc)
        out->len = start;
    return rc;
}

int store_device_decode(struct span rec, struct store_device *out)
{
    if (rec.len > STORE_MAX_DEVICE_RECORD)
        return ENS_ETOOBIG;
    char device_id[sizeof(out->device_id)];
    memcpy(device_id, out->device_id, sizeof(device_id));
    memset(out, 0, sizeof(*out));
    memcpy(out->device_id, device_id, sizeof(device_id));
    record_defaults(kDeviceFields, N_DEVICE_FIELDS, out);
    if (!record_decode(&rec, kDeviceFields, N_DEVICE_FIELDS, out) || rec.len != 0 ||
        !device_check(out))
        return ENS_EPARSE;
    return 0;
}

/* ---- mailbox record ---- */

static int user_check(const struct store_user *u)
{
    if (!store_id_valid(u->user_id) || !store_id_valid(u->tenant_id))
        return 0;
    if (!FITS(u->email) || !FITS(u->ews_url) || !FITS(u->auth_type) || !FITS(u->sub.id) ||
        !FITS(u->sub.watermark) || !FITS(u->sub.cred_id))
        return 0;
    if (u->email[0] == '\0' || !in_set(u->auth_type, kAuthTypes))
        return 0;
    if ((int)u->sub.state < 0 || (int)u->sub.state >= STORE_SUB_STATE_COUNT)
        return 0;
    if (u->sub.cred_id[0] && !cred_id_valid(u->sub.cred_id))
        return 0;
    if (u->n_devices > STORE_MAX_DEVICES)
        return 0;
    for (size_t i = 0; i < u->n_devices; i++) {
        if (!store_id_valid(u->devices[i].device_id) || !device_check(&u->devices[i]))
            return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(u->devices[i].device_id, u->devices[j].device_id) == 0)
                return 0;
    }
    return 1;
}

int store_user_encode(const struct store_user *u, struct rt_buf *out)
{
    if (!user_check(u))
        return ENS_EINVAL;
    size_t start = out->len;
    const uint8_t version = REC_VERSION, tag = REC_TAG_DEVICE;
    int rc = rt_buf_append(out, &version, 1);
    if (rc == 0)
        rc = record_encode(kUserFields, N_USER_FIELDS, u, out);
    struct rt_buf dev;
    rt_buf_init(&dev, REC_MAX_DEV_REC);
    for (size_t i = 0; rc == 0 && i < u->n_devices; i++) {
        rt_buf_reset(&dev);
        rc = str_put(&dev, u->devices[i].device_id, STORE_ID_CHARS);
        if (rc == 0)
            rc = store_device_encode(&u->devices[i], &dev);
        if (rc == 0)
            rc = rt_buf_append(out, &tag, 1);
        if (rc == 0)
            rc = put_varint(out, dev.len);
        if (rc == 0)
            rc = rt_buf_append_span(out, rt_buf_span(&dev));
    }
    rt_buf_cleanup(&dev);
    if (rc == 0 && out->len - start > STORE_MAX_MAILBOX_RECORD)
        rc = ENS_ETOOBIG;
    if (rc)
        out->len = start;
    return rc;
}

/* Parses a mailbox record. Framing and scalar fields are strict; a device
 * whose id or body does not decode is skipped with a warning, so one bad
 * device cannot lock a mailbox (the next save drops it). When |ids| is not
 * NULL it receives every well-formed device id, skipped ones included. */
static int user_parse(struct span rec, const char *uid, struct store_user *u,
                      char ids[][STORE_ID_CHARS + 1], size_t *n_ids)
{
    uint8_t version;
    if (rec.len > STORE_MAX_MAILBOX_RECORD)
        return ENS_ETOOBIG;
    if (!span_get_u8(&rec, &version) || version != REC_VERSION)
        return ENS_EPARSE;
    memcpy(u->user_id, uid, STORE_ID_CHARS + 1);
    record_defaults(kUserFields, N_USER_FIELDS, u);
    if (!record_decode(&rec, kUserFields, N_USER_FIELDS, u))
        return ENS_EPARSE;
    size_t framed = 0;
    while (rec.len) {
        uint8_t tag;
        uint64_t len;
        struct span body;
        struct store_device d;
        if (!span_get_u8(&rec, &tag) || tag != REC_TAG_DEVICE || !get_varint(&rec, &len) ||
            len > REC_MAX_DEV_REC || !span_get_bytes(&rec, &body, len) ||
            ++framed > STORE_MAX_DEVICES)
            return ENS_EPARSE;
        memset(&d, 0, sizeof(d));
        if (!str_decode(&body, d.device_id, sizeof(d.device_id)) || !store_id_valid(d.device_id)) {
            RT_LOG_W("store.bad_device", "reason=id");
            continue;
        }
        if (ids)
            memcpy(ids[(*n_ids)++], d.device_id, sizeof(d.device_id));
        if (store_device_decode(body, &d) != 0) {
            RT_LOG_W("store.bad_device", "reason=record");
            continue;
        }
        if (store_user_find_device(u, d.device_id) != NULL) {
            RT_LOG_W("store.bad_device", "reason=duplicate");
            continue;
        }
        *store_user_add_device(u) = d; /* framed <= STORE_MAX_DEVICES: never NULL */
    }
    /* Device problems were forgiven above; the mailbox itself must be whole. */
    size_t n = u->n_devices;
    u->n_devices = 0;
    int ok = user_check(u);
    u->n_devices = n;
    return ok ? 0 : ENS_EPARSE;
}

int store_user_decode(struct span rec, const char *uid, struct store_user **out)
{
    *out = NULL;
    if (!store_id_valid(uid))
        return ENS_EINVAL;
    struct store_user *u = store_user_new();
    int rc = user_parse(rec, uid, u, NULL, NULL);
    if (rc) {
        store_user_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* ---- keys ---- */

/* Ids are validated STORE_ID_CHARS strings; the precision makes that bound
 * visible to the compiler too. */
static void key_user(char *out, const char *uid)
{
    snprintf(out, STORE_MAX_KEY, "ens:u:{%.*s}", STORE_ID_CHARS, uid);
}

static void key_dev_idx(char *out, const char *device_id)
{
    snprintf(out, STORE_MAX_KEY, "ens:idx:dev:%.*s", STORE_ID_CHARS, device_id);
}

/* The hash field of a credential blob: "c:" and 16 hex chars. */
static void field_cred(char *out, const char *cred_id)
{
    snprintf(out, STORE_CRED_ID_CHARS + 3, "c:%s", cred_id);
}

#define FIELD_MAILBOX "m"

/* ---- request contexts ---- */

struct req {
    struct store *s;
    store_user_cb user_cb;
    store_done_cb done_cb;
    store_uid_cb uid_cb;
    store_blob_cb blob_cb;
    void *ud;
    uint64_t deadline;
    int ncmds;
    int result; /* what a delete reports once its transaction is through */
    char uid[STORE_ID_CHARS + 1];
};

static struct req *req_new(struct store *s, void *ud, uint64_t deadline)
{
    struct req *r = ens_calloc(1, sizeof(*r));
    r->s = s;
    r->ud = ud;
    r->deadline = deadline;
    return r;
}

/* req_send sends one command for |q|, which the reply callback frees; on an
 * error return nothing will call back, so |q| is freed here. */
static int req_send(struct req *q, int argc, const char **argv, const size_t *lens,
                    store_reply_cb cb)
{
    int rc = store_cmdargv(q->s, argc, argv, lens, q->deadline, cb, q);
    if (rc)
        ens_free(q);
    return rc;
}

/* ---- load ---- */

static void on_load(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    struct store_user *u = NULL;
    if (err == 0) {
        if (r->type == REDIS_REPLY_NIL)
            err = ENS_ENOTFOUND;
        else if (r->type != REDIS_REPLY_STRING)
            err = ENS_ESTORE;
        else if ((err = store_user_decode(span_make(r->str, r->len), q->uid, &u)) != 0)
            RT_LOG_W("store.bad_mailbox", "err=%s", ens_err_name(err));
    }
    q->user_cb(err, u, q->ud);
    ens_free(q);
}

/* mailbox_read sends HGET of |uid|'s record with |q| (taken on success, freed
 * on error) as the reply's context. Load and delete both start with it. */
static int mailbox_read(struct store *s, const char *uid, uint64_t deadline_ms, store_reply_cb fn,
                        struct req *q)
{
    char key[STORE_MAX_KEY];
    key_user(key, uid);
    const char *argv[3] = {"HGET", key, FIELD_MAILBOX};
    memcpy(q->uid, uid, sizeof(q->uid));
    int rc = store_cmdargv(s, 3, argv, NULL, deadline_ms, fn, q);
    if (rc)
        ens_free(q);
    return rc;
}

int store_user_load(struct store *s, const char *uid, uint64_t deadline_ms, store_user_cb cb,
                    void *ud)
{
    if (!store_id_valid(uid) || cb == NULL)
        return ENS_EINVAL;
    struct req *q = req_new(s, ud, deadline_ms);
    q->user_cb = cb;
    return mailbox_read(s, uid, deadline_ms, on_load, q);
}

/* ---- save ---- */

/* ---- save and delete: one command per key ----
 *
 * The mailbox's own key decides the outcome; its devices' index entries live
 * in other hash slots (a Redis Cluster spreads them) and are written beside
 * it, pipelined on the same connection, each its own idempotent command: a
 * failed SET is written again by the next save, a DEL only removes an entry
 * that still names this mailbox (a device that moved to another keeps its
 * entry), and an entry left stale is dropped on read
 * (store_user_index_repair). No transaction spans two slots. */

/* Deletes KEYS[1] only while it names ARGV[1]. */
static const char kDelIfScript[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

struct join {
    store_done_cb cb;
    void *ud;
    int pending;
    int err;      /* of the mailbox's own command */
    int idx_errs; /* index commands that failed: repaired later, logged now */
    int result;   /* reported when the mailbox's command succeeded */
};

static void join_done(struct join *j)
{
    if (--j->pending > 0)
        return;
    if (j->idx_errs)
        RT_LOG_W("store.index",
                 "%d device index write(s) failed: the next save or a lookup "
                 "repairs them",
                 j->idx_errs);
    j->cb(j->err ? j->err : j->result, j->ud);
    ens_free(j);
}

static void on_join_main(int err, redisReply *r, void *ud)
{
    (void)r;
    struct join *j = ud;
    j->err = err;
    join_done(j);
}

static void on_join_index(int err, redisReply *r, void *ud)
{
    (void)r;
    struct join *j = ud;
    if (err)
        j->idx_errs++;
    join_done(j);
}

/* join_index sends one index command for |j|; a command that cannot even be
 * sent counts as a failed index write. */
static void join_index(struct store *s, struct join *j, int argc, const char **argv,
                       uint64_t deadline_ms)
{
    j->pending++;
    if (store_cmdargv(s, argc, argv, NULL, deadline_ms, on_join_index, j) != 0) {
        j->pending--;
        j->idx_errs++;
    }
}

static void index_set(struct store *s, struct join *j, const char *device_id, const char *uid,
                      uint64_t deadline_ms)
{
    char key[STORE_MAX_KEY];
    key_dev_idx(key, device_id);
    const char *argv[3] = {"SET", key, uid};
    join_index(s, j, 3, argv, deadline_ms);
}

static void index_del_if(struct store *s, struct join *j, const char *device_id, const char *uid,
                         uint64_t deadline_ms)
{
    char key[STORE_MAX_KEY];
    key_dev_idx(key, device_id);
    const char *argv[5] = {"EVAL", kDelIfScript, "1", key, uid};
    join_index(s, j, 5, argv, deadline_ms);
}

/* join_start sends the mailbox's own command; 0 and the join is under way
 * (its callback will run once, after the index commands added next), or the
 * send error with nothing sent and |j| freed. The extra pending count is the
 * caller's, dropped by join_done once every index command is added. */
static int join_start(struct store *s, struct join *j, int argc, const char **argv,
                      const size_t *lens, uint64_t deadline_ms)
{
    j->pending = 2;
    int rc = store_cmdargv(s, argc, argv, lens, deadline_ms, on_join_main, j);
    if (rc)
        ens_free(j);
    return rc;
}

static int is_removed_and_back(const struct store_user *u, const char *id)
{
    for (size_t i = 0; i < u->n_devices; i++)
        if (strcmp(u->devices[i].device_id, id) == 0)
            return 1;
    return 0;
}

int store_user_save(struct store *s, const struct store_user *u, const char *const *removed_ids,
                    size_t n_removed, unsigned flags, uint64_t deadline_ms, store_done_cb cb,
                    void *ud)
{
    if (u == NULL || cb == NULL || !user_check(u) || n_removed > STORE_MAX_REMOVE ||
        (n_removed && removed_ids == NULL))
        return ENS_EINVAL;
    for (size_t i = 0; i < n_removed; i++)
        if (!store_id_valid(removed_ids[i]))
            return ENS_EINVAL;
    struct rt_buf rec;
    rt_buf_init(&rec, STORE_MAX_MAILBOX_RECORD);
    int rc = store_user_encode(u, &rec);
    if (rc) {
        rt_buf_cleanup(&rec);
        return rc;
    }
    /* One HSET of the record leaves the credential fields of the hash alone,
     * so a blob stored before the save (store_cred_put runs first at
     * enrollment) is never lost. */
    char key[STORE_MAX_KEY];
    key_user(key, u->user_id);
    const char *argv[4] = {"HSET", key, FIELD_MAILBOX, (const char *)rec.data};
    const size_t lens[4] = {4, strlen(key), strlen(FIELD_MAILBOX), rec.len};
    struct join *j = ens_calloc(1, sizeof(*j));
    j->cb = cb;
    j->ud = ud;
    rc = join_start(s, j, 4, argv, lens, deadline_ms);
    rt_buf_cleanup(&rec);
    if (rc)
        return rc;
    /* Removals before the SETs, so a device that came back keeps its entry. */
    for (size_t i = 0; i < n_removed; i++)
        if (!is_removed_and_back(u, removed_ids[i]))
            index_del_if(s, j, removed_ids[i], u->user_id, deadline_ms);
    for (size_t i = 0; (flags & STORE_SAVE_INDEX) && i < u->n_devices; i++)
        index_set(s, j, u->devices[i].device_id, u->user_id, deadline_ms);
    join_done(j);
    return 0;
}

/* ---- delete: read the device ids, then the mailbox key and its index ---- */

static void on_delete_read(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    char ids[STORE_MAX_DEVICES][STORE_ID_CHARS + 1];
    size_t n_ids = 0;
    int result = 0;
    if (err == 0) {
        if (r->type == REDIS_REPLY_NIL) {
            /* No mailbox; blobs stored before a save that never happened may
             * still be there, and go too. */
            result = ENS_ENOTFOUND;
        } else if (r->type != REDIS_REPLY_STRING) {
            err = ENS_ESTORE;
        } else {
            struct store_user *u = store_user_new();
            if (user_parse(span_make(r->str, r->len), q->uid, u, ids, &n_ids) != 0) {
                /* Remove what we can: the mailbox goes, index entries may stay
                 * (a lookup through one then finds no mailbox). */
                RT_LOG_W("store.bad_mailbox", "delete without its device index entries");
                n_ids = 0;
            }
            store_user_free(u);
        }
    }
    if (err == 0) {
        char key[STORE_MAX_KEY];
        key_user(key, q->uid);
        const char *argv[2] = {"DEL", key};
        struct join *j = ens_calloc(1, sizeof(*j));
        j->cb = q->done_cb;
        j->ud = q->ud;
        j->result = result;
        err = join_start(q->s, j, 2, argv, NULL, q->deadline);
        if (err == 0) {
            for (size_t i = 0; i < n_ids; i++)
                index_del_if(q->s, j, ids[i], q->uid, q->deadline);
            join_done(j);
            ens_free(q);
            return;
        }
    }
    q->done_cb(err, q->ud);
    ens_free(q);
}

int store_user_delete(struct store *s, const char *uid, uint64_t deadline_ms, store_done_cb cb,
                      void *ud)
{
    if (!store_id_valid(uid) || cb == NULL)
        return ENS_EINVAL;
    struct req *q = req_new(s, ud, deadline_ms);
    q->done_cb = cb;
    return mailbox_read(s, uid, deadline_ms, on_delete_read, q);
}

int store_user_index_repair(struct store *s, const char *device_id, const char *uid,
                            uint64_t deadline_ms, store_done_cb cb, void *ud)
{
    if (!store_id_valid(device_id) || !store_id_valid(uid) || cb == NULL)
        return ENS_EINVAL;
    char key[STORE_MAX_KEY];
    key_dev_idx(key, device_id);
    const char *argv[5] = {"EVAL", kDelIfScript, "1", key, uid};
    struct join *j = ens_calloc(1, sizeof(*j));
    j->cb = cb;
    j->ud = ud;
    int rc = join_start(s, j, 5, argv, NULL, deadline_ms);
    if (rc == 0)
        join_done(j);
    return rc;
}

/* ---- index lookups ---- */

static int reply_str(const redisReply *r, char *out, size_t cap)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= cap || memchr(r->str, '\0', r->len))
        return 0;
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return 1;
}

static void on_uid(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    char uid[STORE_ID_CHARS + 1];
    if (err == 0) {
        if (r->type == REDIS_REPLY_NIL)
            err = ENS_ENOTFOUND;
        else if (!reply_str(r, uid, sizeof(uid)) || !store_id_valid(uid))
            err = ENS_EPARSE;
    }
    q->uid_cb(err, err ? NULL : uid, q->ud);
    ens_free(q);
}

int store_user_find_by_device(struct store *s, const char *device_id, uint64_t deadline_ms,
                              store_uid_cb cb, void *ud)
{
    if (!store_id_valid(device_id) || cb == NULL)
        return ENS_EINVAL;
    char key[STORE_MAX_KEY];
    key_dev_idx(key, device_id);
    const char *argv[2] = {"GET", key};
    struct req *q = req_new(s, ud, deadline_ms);
    q->uid_cb = cb;
    return req_send(q, 2, argv, NULL, on_uid);
}

/* ---- credential blobs: fields "c:<credId>" of the mailbox hash ---- */

static void on_cmd_done(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    (void)r;
    q->done_cb(err, q->ud);
    ens_free(q);
}

/* Sends HSET/HDEL/HGET |key| |field| [value] with |cb| over a fresh req. */
static int cred_cmd(struct store *s, const char *cmd, const char *uid, const char *cred_id,
                    struct span value, int argc, uint64_t deadline_ms, store_reply_cb cb,
                    struct req *q)
{
    char key[STORE_MAX_KEY], field[STORE_CRED_ID_CHARS + 3];
    key_user(key, uid);
    field_cred(field, cred_id);
    const char *argv[4] = {cmd, key, field, value.len ? (const char *)value.p : ""};
    size_t lens[4] = {strlen(cmd), strlen(key), strlen(field), value.len};
    int rc = store_cmdargv(s, argc, argv, lens, deadline_ms, cb, q);
    if (rc)
        ens_free(q);
    return rc;
}

int store_cred_put(struct store *s, const char *uid, const char *cred_id, const void *blob,
                   size_t len, uint64_t deadline_ms, store_done_cb cb, void *ud)
{
    if (!store_id_valid(uid) || !cred_id_valid(cred_id) || cb == NULL || (blob == NULL && len) ||
        len > STORE_MAX_CRED_BLOB)
        return ENS_EINVAL;
    struct req *q = req_new(s, ud, deadline_ms);
    q->done_cb = cb;
    return cred_cmd(s, "HSET", uid, cred_id, span_make(blob, len), 4, deadline_ms, on_cmd_done, q);
}

static void on_blob(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    struct span blob = span_make(NULL, 0);
    if (err == 0) {
        if (r->type == REDIS_REPLY_NIL)
            err = ENS_ENOTFOUND;
        else if (r->type != REDIS_REPLY_STRING || r->len > STORE_MAX_CRED_BLOB)
            err = ENS_EPARSE;
        else
            blob = span_make(r->str, r->len);
    }
    q->blob_cb(err, blob, q->ud);
    ens_free(q);
}

int store_cred_get(struct store *s, const char *uid, const char *cred_id, uint64_t deadline_ms,
                   store_blob_cb cb, void *ud)
{
    if (!store_id_valid(uid) || !cred_id_valid(cred_id) || cb == NULL)
        return ENS_EINVAL;
    struct req *q = req_new(s, ud, deadline_ms);
    q->blob_cb = cb;
    return cred_cmd(s, "HGET", uid, cred_id, span_make(NULL, 0), 3, deadline_ms, on_blob, q);
}

int store_cred_del(struct store *s, const char *uid, const char *cred_id, uint64_t deadline_ms,
                   store_done_cb cb, void *ud)
{
    if (!store_id_valid(uid) || !cred_id_valid(cred_id) || cb == NULL)
        return ENS_EINVAL;
    struct req *q = req_new(s, ud, deadline_ms);
    q->done_cb = cb;
    return cred_cmd(s, "HDEL", uid, cred_id, span_make(NULL, 0), 3, deadline_ms, on_cmd_done, q);
}

/* ---- request replay ---- */

static void on_claim(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    /* SET NX answers nil when the key was there: this request was seen. */
    if (err == 0 && r->type == REDIS_REPLY_NIL)
        err = ENS_EEXIST;
    q->done_cb(err, q->ud);
    ens_free(q);
}

int store_request_claim(struct store *s, const char *uid, const char *digest, uint32_t ttl_s,
                        uint64_t deadline_ms, store_done_cb cb, void *ud)
{
    size_t dl = digest ? strlen(digest) : 0;
    if (!store_id_valid(uid) || dl == 0 || dl > STORE_REQUEST_DIGEST_CHARS || ttl_s == 0 ||
        cb == NULL)
        return ENS_EINVAL;
    for (size_t i = 0; i < dl; i++) {
        if (!((digest[i] >= '0' && digest[i] <= '9') || (digest[i] >= 'a' && digest[i] <= 'f')))
            return ENS_EINVAL;
    }
    char key[STORE_MAX_KEY], ttl[16];
    snprintf(key, sizeof(key), "ens:seen:{%.*s}:%s", STORE_ID_CHARS, uid, digest);
    snprintf(ttl, sizeof(ttl), "%u", ttl_s);
    const char *argv[6] = {"SET", key, "1", "NX", "EX", ttl};
    struct req *q = req_new(s, ud, deadline_ms);
    q->done_cb = cb;
    return req_send(q, 6, argv, NULL, on_claim);
}
