#include "persistence/store_user.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <math.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/log.h"

#define STORE_MAX_KEY    (STORE_MAX_SUB_ID + 64)
#define STORE_MAX_REMOVE (2 * STORE_MAX_DEVICES)
#define JSON_MAX_INT     9007199254740992.0 /* 2^53: doubles are exact below */

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

/* ---- device JSON ---- */

enum dfield_type { DF_STR, DF_BOOL, DF_I64 };

struct dfield {
    const char *name;
    enum dfield_type type;
    size_t off;
    size_t cap; /* array size for DF_STR */
    int required;
};

#define DSTR(n, f, req)                                                                            \
    {                                                                                              \
        n, DF_STR, offsetof(struct store_device, f), sizeof(((struct store_device *)0)->f), req    \
    }
#define DBOOL(n, f)                                                                                \
    {                                                                                              \
        n, DF_BOOL, offsetof(struct store_device, f), 0, 0                                         \
    }
#define DI64(n, f)                                                                                 \
    {                                                                                              \
        n, DF_I64, offsetof(struct store_device, f), 0, 0                                          \
    }

/* Short member names: a mailbox aims at well under 1 KiB in Redis. */
static const struct dfield kDeviceFields[] = {
    DSTR("c", client_id, 1), DSTR("p", platform, 1),    DSTR("t", push_token, 1),
    DSTR("a", app_id, 0),    DSTR("e", environment, 1), DSTR("k", key_hash, 1),
    DSTR("v", preview, 1),   DBOOL("b", badge),         DBOOL("x", blocked),
    DI64("ct", created_at),  DI64("lp", last_push_at),  DSTR("lr", last_push_result, 0),
};
#define N_DEVICE_FIELDS (sizeof(kDeviceFields) / sizeof(kDeviceFields[0]))

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
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return ENS_ENOMEM;
    const char *base = (const char *)d;
    for (size_t i = 0; i < N_DEVICE_FIELDS; i++) {
        const struct dfield *f = &kDeviceFields[i];
        cJSON *item = NULL;
        switch (f->type) {
        case DF_STR:
            if (!f->required && base[f->off] == '\0')
                continue; /* absent reads back as "" */
            item = cJSON_CreateString(base + f->off);
            break;
        case DF_BOOL:
            item = cJSON_CreateBool(*(const int *)(base + f->off));
            break;
        case DF_I64: {
            int64_t v;
            memcpy(&v, base + f->off, sizeof(v));
            if (v == 0)
                continue;
            item = cJSON_CreateNumber((double)v);
            break;
        }
        }
        if (item == NULL || !cJSON_AddItemToObject(o, f->name, item)) {
            cJSON_Delete(item);
            cJSON_Delete(o);
            return ENS_ENOMEM;
        }
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (txt == NULL)
        return ENS_ENOMEM;
    int rc = strlen(txt) > STORE_MAX_DEVICE_JSON ? ENS_ETOOBIG : rt_buf_append_str(out, txt);
    cJSON_free(txt);
    return rc;
}

int store_device_decode(struct span json, struct store_device *out)
{
    if (json.len > STORE_MAX_DEVICE_JSON)
        return ENS_ETOOBIG;
    if (json.len == 0)
        return ENS_EPARSE;
    cJSON *o = cJSON_ParseWithLength((const char *)json.p, json.len);
    if (o == NULL)
        return ENS_EPARSE;
    int rc = cJSON_IsObject(o) ? 0 : ENS_EPARSE;
    char device_id[sizeof(out->device_id)];
    memcpy(device_id, out->device_id, sizeof(device_id));
    memset(out, 0, sizeof(*out));
    memcpy(out->device_id, device_id, sizeof(device_id));
    char *base = (char *)out;
    unsigned seen = 0;
    for (size_t i = 0; rc == 0 && i < N_DEVICE_FIELDS; i++) {
        const struct dfield *f = &kDeviceFields[i];
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, f->name);
        if (item == NULL)
            continue;
        seen |= 1u << i;
        switch (f->type) {
        case DF_STR: {
            if (!cJSON_IsString(item) || item->valuestring == NULL) {
                rc = ENS_EPARSE;
                break;
            }
            size_t n = strlen(item->valuestring);
            if (n >= f->cap) {
                rc = ENS_ETOOBIG;
                break;
            }
            memcpy(base + f->off, item->valuestring, n + 1);
            break;
        }
        case DF_BOOL:
            if (!cJSON_IsBool(item))
                rc = ENS_EPARSE;
            else
                *(int *)(base + f->off) = cJSON_IsTrue(item) ? 1 : 0;
            break;
        case DF_I64: {
            double v = item->valuedouble;
            if (!cJSON_IsNumber(item) || !isfinite(v) || v < -JSON_MAX_INT || v > JSON_MAX_INT ||
                v != floor(v)) {
                rc = ENS_EPARSE;
                break;
            }
            int64_t iv = (int64_t)v;
            memcpy(base + f->off, &iv, sizeof(iv));
            break;
        }
        }
    }
    cJSON_Delete(o);
    for (size_t i = 0; rc == 0 && i < N_DEVICE_FIELDS; i++)
        if (kDeviceFields[i].required && !(seen & (1u << i)))
            rc = ENS_EPARSE;
    if (rc == 0 && !device_check(out))
        rc = ENS_EPARSE;
    return rc;
}

/* ---- scalar hash ---- */

enum ufield_type { UF_STR, UF_U16, UF_U32, UF_U64, UF_INT, UF_I64, UF_STATE };

struct ufield {
    const char *name;
    enum ufield_type type;
    size_t off;
    size_t cap;
};

#define USTR(n, f)                                                                                 \
    {                                                                                              \
        n, UF_STR, offsetof(struct store_user, f), sizeof(((struct store_user *)0)->f)             \
    }
#define UNUM(n, t, f)                                                                              \
    {                                                                                              \
        n, t, offsetof(struct store_user, f), 0                                                    \
    }

static const struct ufield kUserFields[] = {
    USTR("tid", tenant_id),
    USTR("em", email),
    USTR("ews", ews_url),
    USTR("at", auth_type),
    UNUM("fp", UF_U16, cred_fp),
    UNUM("bd", UF_INT, badge),
    UNUM("ct", UF_I64, created_at),
    UNUM("ut", UF_I64, updated_at),
    USTR("sid", sub.id),
    UNUM("ss", UF_STATE, sub.state),
    USTR("wm", sub.watermark),
    USTR("cid", sub.cred_id),
    UNUM("kid", UF_U32, sub.sealing_kid),
    UNUM("sf", UF_U32, sub.status_frequency_min),
    UNUM("sl", UF_I64, sub.last_status_at),
    UNUM("sc", UF_I64, sub.created_at),
    UNUM("nc", UF_U64, counters.callbacks),
    UNUM("nn", UF_U64, counters.notifications),
    UNUM("np", UF_U64, counters.pushes_ok),
    UNUM("nf", UF_U64, counters.pushes_failed),
};
#define N_USER_FIELDS (sizeof(kUserFields) / sizeof(kUserFields[0]))

static void user_field_arg(const struct store_user *u, const struct ufield *f, struct store_args *a)
{
    const char *base = (const char *)u;
    store_args_str(a, f->name);
    switch (f->type) {
    case UF_STR:
        store_args_str(a, base + f->off);
        break;
    case UF_U16: {
        uint16_t v;
        memcpy(&v, base + f->off, sizeof(v));
        store_args_u64(a, v);
        break;
    }
    case UF_U32: {
        uint32_t v;
        memcpy(&v, base + f->off, sizeof(v));
        store_args_u64(a, v);
        break;
    }
    case UF_U64: {
        uint64_t v;
        memcpy(&v, base + f->off, sizeof(v));
        store_args_u64(a, v);
        break;
    }
    case UF_INT: {
        int v;
        memcpy(&v, base + f->off, sizeof(v));
        store_args_i64(a, v);
        break;
    }
    case UF_I64: {
        int64_t v;
        memcpy(&v, base + f->off, sizeof(v));
        store_args_i64(a, v);
        break;
    }
    case UF_STATE:
        store_args_str(a, store_sub_state_name(u->sub.state));
        break;
    }
}

/* Parses a signed decimal that must fill |s|. */
static int parse_i64(struct span s, int64_t *out)
{
    int neg = 0;
    uint64_t v;
    if (s.len && s.p[0] == '-') {
        neg = 1;
        s.p++;
        s.len--;
    }
    if (!span_get_decimal(&s, (uint64_t)INT64_MAX, &v) || s.len)
        return 0;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 1;
}

static int parse_u64(struct span s, uint64_t max, uint64_t *out)
{
    return span_get_decimal(&s, max, out) && s.len == 0;
}

static int user_field_set(struct store_user *u, const struct ufield *f, struct span v)
{
    char *base = (char *)u;
    uint64_t x;
    int64_t y;
    switch (f->type) {
    case UF_STR:
        if (v.len >= f->cap || memchr(v.p, '\0', v.len))
            return 0;
        memcpy(base + f->off, v.p, v.len);
        base[f->off + v.len] = '\0';
        return 1;
    case UF_U16: {
        if (!parse_u64(v, UINT16_MAX, &x))
            return 0;
        uint16_t w = (uint16_t)x;
        memcpy(base + f->off, &w, sizeof(w));
        return 1;
    }
    case UF_U32: {
        if (!parse_u64(v, UINT32_MAX, &x))
            return 0;
        uint32_t w = (uint32_t)x;
        memcpy(base + f->off, &w, sizeof(w));
        return 1;
    }
    case UF_U64:
        if (!parse_u64(v, UINT64_MAX, &x))
            return 0;
        memcpy(base + f->off, &x, sizeof(x));
        return 1;
    case UF_INT: {
        if (!parse_i64(v, &y) || y < INT_MIN || y > INT_MAX)
            return 0;
        int w = (int)y;
        memcpy(base + f->off, &w, sizeof(w));
        return 1;
    }
    case UF_I64:
        if (!parse_i64(v, &y))
            return 0;
        memcpy(base + f->off, &y, sizeof(y));
        return 1;
    case UF_STATE:
        return store_sub_state_parse(v, &u->sub.state);
    }
    return 0;
}

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
    for (size_t i = 0; i < u->n_devices; i++)
        if (!store_id_valid(u->devices[i].device_id) || !device_check(&u->devices[i]))
            return 0;
    return 1;
}

/* ---- keys ---- */

static void key_user(char *out, const char *uid, const char *suffix)
{
    snprintf(out, STORE_MAX_KEY, "ens:u:{%s}%s", uid, suffix);
}

static void key_cred(char *out, const char *uid, const char *cred_id)
{
    snprintf(out, STORE_MAX_KEY, "ens:u:{%s}:cred:%s", uid, cred_id);
}

static void key_idx(char *out, const char *kind, const char *id)
{
    snprintf(out, STORE_MAX_KEY, "ens:idx:%s:%s", kind, id);
}

static void key_email(char *out, const char *tenant_id, const char *email)
{
    int n = snprintf(out, STORE_MAX_KEY, "ens:idx:email:%s:", tenant_id);
    size_t i = (size_t)n;
    for (; *email && i + 1 < STORE_MAX_KEY; email++, i++) {
        char c = *email;
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[i] = '\0';
}

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

static int tx_add(struct store_tx *tx, int *rc, struct store_args *a)
{
    if (*rc == 0)
        *rc = store_tx_add_args(tx, a);
    return *rc;
}

/* ---- load ---- */

static int decode_user(const char *uid, const redisReply *h, const redisReply *dev,
                       struct store_user **out)
{
    if (h->type != REDIS_REPLY_ARRAY || dev->type != REDIS_REPLY_ARRAY || h->elements % 2 ||
        dev->elements % 2)
        return ENS_EPARSE;
    if (h->elements == 0)
        return ENS_ENOTFOUND;
    if (h->elements > 2 * STORE_MAX_HASH_FIELDS)
        return ENS_EPARSE;
    struct store_user *u = store_user_new();
    memcpy(u->user_id, uid, STORE_ID_CHARS + 1);
    for (size_t i = 0; i < h->elements; i += 2) {
        const redisReply *k = h->element[i], *v = h->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            v->len > STORE_MAX_FIELD_VALUE) {
            store_user_free(u);
            return ENS_EPARSE;
        }
        struct span name = span_make(k->str, k->len);
        for (size_t j = 0; j < N_USER_FIELDS; j++) {
            if (span_eq(name, kUserFields[j].name)) {
                if (!user_field_set(u, &kUserFields[j], span_make(v->str, v->len))) {
                    RT_LOG_W("store.bad_field", "field=%s", kUserFields[j].name);
                    store_user_free(u);
                    return ENS_EPARSE;
                }
                break;
            }
        }
    }
    for (size_t i = 0; i < dev->elements; i += 2) {
        const redisReply *k = dev->element[i], *v = dev->element[i + 1];
        struct store_device d;
        memset(&d, 0, sizeof(d));
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            k->len != STORE_ID_CHARS) {
            RT_LOG_W("store.bad_device", "reason=key");
            continue;
        }
        memcpy(d.device_id, k->str, STORE_ID_CHARS);
        if (!store_id_valid(d.device_id) || store_device_decode(span_make(v->str, v->len), &d)) {
            RT_LOG_W("store.bad_device", "reason=record");
            continue;
        }
        struct store_device *slot = store_user_add_device(u);
        if (slot == NULL) {
            RT_LOG_W("store.bad_device", "reason=too_many");
            break;
        }
        *slot = d;
    }
    *out = u;
    return 0;
}

static void on_load(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    struct store_user *u = NULL;
    if (err == 0)
        err = store_reply_array_ok(r, 2) ? decode_user(q->uid, r->element[0], r->element[1], &u)
                                         : ENS_ESTORE;
    q->user_cb(err, u, q->ud);
    ens_free(q);
}

int store_user_load(struct store *s, const char *uid, uint64_t deadline_ms, store_user_cb cb,
                    void *ud)
{
    if (!store_id_valid(uid) || cb == NULL)
        return ENS_EINVAL;
    char k1[STORE_MAX_KEY], k2[STORE_MAX_KEY];
    key_user(k1, uid, "");
    key_user(k2, uid, ":dev");
    struct store_tx *tx = store_tx_new();
    struct store_args a;
    int rc = 0;
    store_args_init(&a);
    store_args_str(&a, "HGETALL");
    store_args_str(&a, k1);
    tx_add(tx, &rc, &a);
    a.n = 1;
    store_args_str(&a, k2);
    tx_add(tx, &rc, &a);
    if (rc) {
        store_tx_free(tx);
        return rc;
    }
    struct req *q = req_new(s, ud, deadline_ms);
    q->user_cb = cb;
    memcpy(q->uid, uid, sizeof(q->uid));
    rc = store_tx_exec(s, tx, deadline_ms, on_load, q);
    if (rc)
        ens_free(q);
    return rc;
}

/* ---- save ---- */

static void on_exec_done(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    if (err == 0 && !store_reply_array_ok(r, (size_t)q->ncmds))
        err = ENS_ESTORE;
    q->done_cb(err, q->ud);
    ens_free(q);
}

static int exec_done(struct store *s, struct store_tx *tx, uint64_t deadline_ms, store_done_cb cb,
                     void *ud)
{
    struct req *q = req_new(s, ud, deadline_ms);
    q->done_cb = cb;
    q->ncmds = store_tx_count(tx);
    int rc = store_tx_exec(s, tx, deadline_ms, on_exec_done, q);
    if (rc)
        ens_free(q);
    return rc;
}

static int is_removed_and_back(const struct store_user *u, const char *id)
{
    for (size_t i = 0; i < u->n_devices; i++)
        if (strcmp(u->devices[i].device_id, id) == 0)
            return 1;
    return 0;
}

static int build_save(struct store_tx *tx, const struct store_user *u, const char *old_sub_id,
                      const char *const *removed_ids, size_t n_removed)
{
    char key[STORE_MAX_KEY];
    struct store_args a;
    int rc = 0;

    key_user(key, u->user_id, "");
    store_args_init(&a);
    store_args_str(&a, "DEL");
    store_args_str(&a, key);
    tx_add(tx, &rc, &a);
    store_args_init(&a);
    store_args_str(&a, "HSET");
    store_args_str(&a, key);
    for (size_t i = 0; i < N_USER_FIELDS; i++)
        user_field_arg(u, &kUserFields[i], &a);
    tx_add(tx, &rc, &a);

    key_user(key, u->user_id, ":dev");
    store_args_init(&a);
    store_args_str(&a, "DEL");
    store_args_str(&a, key);
    tx_add(tx, &rc, &a);
    if (u->n_devices) {
        struct rt_buf json[STORE_MAX_DEVICES];
        store_args_init(&a);
        store_args_str(&a, "HSET");
        store_args_str(&a, key);
        for (size_t i = 0; i < u->n_devices; i++) {
            rt_buf_init(&json[i], STORE_MAX_DEVICE_JSON);
            if (rc == 0)
                rc = store_device_encode(&u->devices[i], &json[i]);
            store_args_str(&a, u->devices[i].device_id);
            store_args_add(&a, json[i].data, json[i].len);
        }
        tx_add(tx, &rc, &a);
        for (size_t i = 0; i < u->n_devices; i++)
            rt_buf_cleanup(&json[i]);
    }

    key_email(key, u->tenant_id, u->email);
    store_args_init(&a);
    store_args_str(&a, "SET");
    store_args_str(&a, key);
    store_args_str(&a, u->user_id);
    tx_add(tx, &rc, &a);

    /* Index removals go before the SETs so a device that came back keeps its entry. */
    for (size_t i = 0; i < n_removed; i++) {
        if (is_removed_and_back(u, removed_ids[i]))
            continue;
        key_idx(key, "dev", removed_ids[i]);
        store_args_init(&a);
        store_args_str(&a, "DEL");
        store_args_str(&a, key);
        tx_add(tx, &rc, &a);
    }
    for (size_t i = 0; i < u->n_devices; i++) {
        key_idx(key, "dev", u->devices[i].device_id);
        store_args_init(&a);
        store_args_str(&a, "SET");
        store_args_str(&a, key);
        store_args_str(&a, u->user_id);
        tx_add(tx, &rc, &a);
    }
    if (old_sub_id && old_sub_id[0] && strcmp(old_sub_id, u->sub.id) != 0) {
        key_idx(key, "sub", old_sub_id);
        store_args_init(&a);
        store_args_str(&a, "DEL");
        store_args_str(&a, key);
        tx_add(tx, &rc, &a);
    }
    if (u->sub.id[0]) {
        key_idx(key, "sub", u->sub.id);
        store_args_init(&a);
        store_args_str(&a, "SET");
        store_args_str(&a, key);
        store_args_str(&a, u->user_id);
        tx_add(tx, &rc, &a);
    }
    return rc;
}

int store_user_save(struct store *s, const struct store_user *u, const char *old_sub_id,
                    const char *const *removed_ids, size_t n_removed, uint64_t deadline_ms,
                    store_done_cb cb, void *ud)
{
    if (u == NULL || cb == NULL || !user_check(u) || n_removed > STORE_MAX_REMOVE ||
        (n_removed && removed_ids == NULL))
        return ENS_EINVAL;
    if (old_sub_id && strlen(old_sub_id) > STORE_MAX_SUB_ID)
        return ENS_EINVAL;
    for (size_t i = 0; i < n_removed; i++)
        if (!store_id_valid(removed_ids[i]))
            return ENS_EINVAL;
    struct store_tx *tx = store_tx_new();
    int rc = build_save(tx, u, old_sub_id, removed_ids, n_removed);
    if (rc) {
        store_tx_free(tx);
        return rc;
    }
    return exec_done(s, tx, deadline_ms, cb, ud);
}

/* ---- delete: read what to remove, then remove it in one MULTI ---- */

static int reply_str(const redisReply *r, char *out, size_t cap)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= cap || memchr(r->str, '\0', r->len))
        return 0;
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return 1;
}

static int build_delete(struct store_tx *tx, const char *uid, const redisReply *h,
                        const redisReply *devs, const redisReply *creds)
{
    char key[STORE_MAX_KEY], key2[STORE_MAX_KEY], key3[STORE_MAX_KEY];
    char tid[STORE_ID_CHARS + 1], email[STORE_MAX_EMAIL + 1], sid[STORE_MAX_SUB_ID + 1];
    struct store_args a;
    int rc = 0;

    key_user(key, uid, "");
    key_user(key2, uid, ":dev");
    key_user(key3, uid, ":creds");
    store_args_init(&a);
    store_args_str(&a, "DEL");
    store_args_str(&a, key);
    store_args_str(&a, key2);
    store_args_str(&a, key3);
    tx_add(tx, &rc, &a);
    if (reply_str(h->element[0], tid, sizeof(tid)) &&
        reply_str(h->element[1], email, sizeof(email))) {
        key_email(key, tid, email);
        store_args_init(&a);
        store_args_str(&a, "DEL");
        store_args_str(&a, key);
        tx_add(tx, &rc, &a);
    }
    if (reply_str(h->element[2], sid, sizeof(sid)) && sid[0]) {
        key_idx(key, "sub", sid);
        store_args_init(&a);
        store_args_str(&a, "DEL");
        store_args_str(&a, key);
        tx_add(tx, &rc, &a);
    }
    for (size_t i = 0; i < devs->elements && i < STORE_MAX_DEVICES * 2; i++) {
        char id[STORE_ID_CHARS + 1];
        if (!reply_str(devs->element[i], id, sizeof(id)) || !store_id_valid(id))
            continue;
        key_idx(key, "dev", id);
        store_args_init(&a);
        store_args_str(&a, "DEL");
        store_args_str(&a, key);
        tx_add(tx, &rc, &a);
    }
    for (size_t i = 0; i < creds->elements && i < STORE_TX_MAX_CMDS / 2; i++) {
        char id[STORE_CRED_ID_CHARS + 1];
        if (!reply_str(creds->element[i], id, sizeof(id)) || !cred_id_valid(id))
            continue;
        key_cred(key, uid, id);
        store_args_init(&a);
        store_args_str(&a, "DEL");
        store_args_str(&a, key);
        tx_add(tx, &rc, &a);
    }
    return rc;
}

static void on_delete_read(int err, redisReply *r, void *ud)
{
    struct req *q = ud;
    if (err == 0 && !store_reply_array_ok(r, 3))
        err = ENS_ESTORE;
    if (err == 0) {
        const redisReply *h = r->element[0], *devs = r->element[1], *creds = r->element[2];
        if (h->type != REDIS_REPLY_ARRAY || h->elements != 3 || devs->type != REDIS_REPLY_ARRAY ||
            creds->type != REDIS_REPLY_ARRAY)
            err = ENS_ESTORE;
        else if (h->element[0]->type == REDIS_REPLY_NIL && devs->elements == 0)
            err = ENS_ENOTFOUND;
        else {
            struct store_tx *tx = store_tx_new();
            err = build_delete(tx, q->uid, h, devs, creds);
            if (err)
                store_tx_free(tx);
            else {
                /* the second step reports to the caller's callback instead */
                err = exec_done(q->s, tx, q->deadline, q->done_cb, q->ud);
                if (err == 0) {
                    ens_free(q);
                    return;
                }
            }
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
    char k1[STORE_MAX_KEY], k2[STORE_MAX_KEY], k3[STORE_MAX_KEY];
    key_user(k1, uid, "");
    key_user(k2, uid, ":dev");
    key_user(k3, uid, ":creds");
    struct store_tx *tx = store_tx_new();
    struct store_args a;
    int rc = 0;
    store_args_init(&a);
    store_args_str(&a, "HMGET");
    store_args_str(&a, k1);
    store_args_str(&a, "tid");
    store_args_str(&a, "em");
    store_args_str(&a, "sid");
    tx_add(tx, &rc, &a);
    store_args_init(&a);
    store_args_str(&a, "HKEYS");
    store_args_str(&a, k2);
    tx_add(tx, &rc, &a);
    store_args_init(&a);
    store_args_str(&a, "SMEMBERS");
    store_args_str(&a, k3);
    tx_add(tx, &rc, &a);
    if (rc) {
        store_tx_free(tx);
        return rc;
    }
    struct req *q = req_new(s, ud, deadline_ms);
    q->done_cb = cb;
    memcpy(q->uid, uid, sizeof(q->uid));
    rc = store_tx_exec(s, tx, deadline_ms, on_delete_read, q);
    if (rc)
        ens_free(q);
    return rc;
}

/* ---- index lookups ---- */

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

static int get_uid(struct store *s, const char *key, uint64_t deadline_ms, store_uid_cb cb,
                   void *ud)
{
    if (cb == NULL)
        return ENS_EINVAL;
    const char *argv[2] = {"GET", key};
    struct req *q = req_new(s, ud, deadline_ms);
    q->uid_cb = cb;
    int rc = store_cmdargv(s, 2, argv, NULL, deadline_ms, on_uid, q);
    if (rc)
        ens_free(q);
    return rc;
}

int store_user_find_by_email(struct store *s, const char *tenant_id, const char *email,
                             uint64_t deadline_ms, store_uid_cb cb, void *ud)
{
    if (!store_id_valid(tenant_id) || email == NULL || email[0] == '\0' ||
        strlen(email) > STORE_MAX_EMAIL)
        return ENS_EINVAL;
    char key[STORE_MAX_KEY];
    key_email(key, tenant_id, email);
    return get_uid(s, key, deadline_ms, cb, ud);
}

int store_user_find_by_device(struct store *s, const char *device_id, uint64_t deadline_ms,
                              store_uid_cb cb, void *ud)
{
    if (!store_id_valid(device_id))
        return ENS_EINVAL;
    char key[STORE_MAX_KEY];
    key_idx(key, "dev", device_id);
    return get_uid(s, key, deadline_ms, cb, ud);
}

int store_user_find_by_sub(struct store *s, const char *sub_id, uint64_t deadline_ms,
                           store_uid_cb cb, void *ud)
{
    if (sub_id == NULL || sub_id[0] == '\0' || strlen(sub_id) > STORE_MAX_SUB_ID)
        return ENS_EINVAL;
    char key[STORE_MAX_KEY];
    key_idx(key, "sub", sub_id);
    return get_uid(s, key, deadline_ms, cb, ud);
}

/* ---- credential blobs ---- */

int store_cred_put(struct store *s, const char *uid, const char *cred_id, const void *blob,
                   size_t len, uint64_t deadline_ms, store_done_cb cb, void *ud)
{
    if (!store_id_valid(uid) || !cred_id_valid(cred_id) || cb == NULL || (blob == NULL && len) ||
        len > STORE_MAX_CRED_BLOB)
        return ENS_EINVAL;
    char key[STORE_MAX_KEY], set[STORE_MAX_KEY];
    key_cred(key, uid, cred_id);
    key_user(set, uid, ":creds");
    struct store_tx *tx = store_tx_new();
    struct store_args a;
    int rc = 0;
    store_args_init(&a);
    store_args_str(&a, "SET");
    store_args_str(&a, key);
    store_args_add(&a, len ? blob : "", len);
    tx_add(tx, &rc, &a);
    store_args_init(&a);
    store_args_str(&a, "SADD");
    store_args_str(&a, set);
    store_args_str(&a, cred_id);
    tx_add(tx, &rc, &a);
    if (rc) {
        store_tx_free(tx);
        return rc;
    }
    return exec_done(s, tx, deadline_ms, cb, ud);
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
    char key[STORE_MAX_KEY];
    key_cred(key, uid, cred_id);
    const char *argv[2] = {"GET", key};
    struct req *q = req_new(s, ud, deadline_ms);
    q->blob_cb = cb;
    int rc = store_cmdargv(s, 2, argv, NULL, deadline_ms, on_blob, q);
    if (rc)
        ens_free(q);
    return rc;
}

int store_cred_del(struct store *s, const char *uid, const char *cred_id, uint64_t deadline_ms,
                   store_done_cb cb, void *ud)
{
    if (!store_id_valid(uid) || !cred_id_valid(cred_id) || cb == NULL)
        return ENS_EINVAL;
    char key[STORE_MAX_KEY], set[STORE_MAX_KEY];
    key_cred(key, uid, cred_id);
    key_user(set, uid, ":creds");
    struct store_tx *tx = store_tx_new();
    struct store_args a;
    int rc = 0;
    store_args_init(&a);
    store_args_str(&a, "DEL");
    store_args_str(&a, key);
    tx_add(tx, &rc, &a);
    store_args_init(&a);
    store_args_str(&a, "SREM");
    store_args_str(&a, set);
    store_args_str(&a, cred_id);
    tx_add(tx, &rc, &a);
    if (rc) {
        store_tx_free(tx);
        return rc;
    }
    return exec_done(s, tx, deadline_ms, cb, ud);
}
