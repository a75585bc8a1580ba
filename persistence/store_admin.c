#include "persistence/store_admin.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/err.h"

#define ADMIN_MAX_KEY 128

static const char *const kPreviewCaps[] = {"full", "sender", "none", NULL};

struct admin_req {
    store_uid_cb uid_cb;
    store_done_cb done_cb;
    store_tenant_cb tenant_cb;
    store_blob_cb blob_cb;
    store_created_cb created_cb;
    store_list_cb list_cb;
    void *ud;
    int ncmds;
    char id[STORE_ID_CHARS + 1];
};

static struct admin_req *areq_new(void *ud)
{
    struct admin_req *q = ens_calloc(1, sizeof(*q));
    q->ud = ud;
    return q;
}

static int in_set(const char *v, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(v, *set) == 0)
            return 1;
    return 0;
}

static int key_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > STORE_MAX_KEY_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void key_apitok(char *out, const uint8_t hash[32])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "ens:apitok:", 11);
    for (size_t i = 0; i < 32; i++) {
        out[11 + 2 * i] = hex[hash[i] >> 4];
        out[12 + 2 * i] = hex[hash[i] & 15];
    }
    out[11 + 64] = '\0';
}

/* A reply string copied into |out| when it fits with its NUL and holds none. */
static int reply_copy(const redisReply *r, char *out, size_t cap)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len >= cap || memchr(r->str, '\0', r->len))
        return 0;
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return 1;
}

/* ---- tenants ---- */

void store_tenant_free(struct store_tenant *t)
{
    if (t == NULL)
        return;
    ens_free(t->ews_allow_json);
    ens_free(t);
}

static void on_tenant_created(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    if (err == 0 && !store_reply_array_ok(r, 2))
        err = ENS_ESTORE;
    q->uid_cb(err, err ? NULL : q->id, q->ud);
    ens_free(q);
}

int store_tenant_create(struct store *s, const char *name, const char *preview_cap,
                        const char *ews_allow_json, int64_t created_at, uint64_t deadline_ms,
                        store_uid_cb cb, void *ud)
{
    if (cb == NULL || name == NULL || name[0] == '\0' || strlen(name) > STORE_MAX_TENANT_NAME ||
        preview_cap == NULL || !in_set(preview_cap, kPreviewCaps) ||
        (ews_allow_json && strlen(ews_allow_json) > STORE_MAX_EWS_ALLOW_JSON))
        return ENS_EINVAL;
    struct admin_req *q = areq_new(ud);
    q->uid_cb = cb;
    store_id_new(q->id);
    char key[ADMIN_MAX_KEY];
    snprintf(key, sizeof(key), "ens:tenant:%s", q->id);
    struct store_tx *tx = store_tx_new();
    struct store_args a;
    int rc;
    store_args_init(&a);
    store_args_str(&a, "HSET");
    store_args_str(&a, key);
    store_args_str(&a, "name");
    store_args_str(&a, name);
    store_args_str(&a, "pc");
    store_args_str(&a, preview_cap);
    store_args_str(&a, "ews");
    store_args_str(&a, ews_allow_json ? ews_allow_json : "");
    store_args_str(&a, "ct");
    store_args_i64(&a, created_at);
    rc = store_tx_add_args(tx, &a);
    store_args_init(&a);
    store_args_str(&a, "SADD");
    store_args_str(&a, "ens:tenants");
    store_args_str(&a, q->id);
    if (rc == 0)
        rc = store_tx_add_args(tx, &a);
    if (rc) {
        store_tx_free(tx);
        ens_free(q);
        return rc;
    }
    rc = store_tx_exec(s, tx, deadline_ms, on_tenant_created, q);
    if (rc)
        ens_free(q);
    return rc;
}

static int decode_tenant(const char *id, const redisReply *r, struct store_tenant **out)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
        return ENS_EPARSE;
    if (r->element[0]->type == REDIS_REPLY_NIL)
        return ENS_ENOTFOUND;
    struct store_tenant *t = ens_calloc(1, sizeof(*t));
    memcpy(t->id, id, sizeof(t->id));
    char ct[24];
    struct span sct;
    uint64_t v = 0;
    int ok = reply_copy(r->element[0], t->name, sizeof(t->name)) &&
             reply_copy(r->element[1], t->preview_cap, sizeof(t->preview_cap)) &&
             in_set(t->preview_cap, kPreviewCaps) && reply_copy(r->element[3], ct, sizeof(ct));
    if (ok) {
        sct = span_cstr(ct);
        ok = span_get_decimal(&sct, INT64_MAX, &v) && sct.len == 0;
        t->created_at = (int64_t)v;
    }
    const redisReply *ews = r->element[2];
    if (ok && ews->type == REDIS_REPLY_STRING && ews->len <= STORE_MAX_EWS_ALLOW_JSON &&
        !memchr(ews->str, '\0', ews->len))
        t->ews_allow_json = ens_memdup(ews->str, ews->len);
    else if (ok && ews->type == REDIS_REPLY_NIL)
        t->ews_allow_json = ens_strdup("");
    else
        ok = 0;
    if (!ok) {
        store_tenant_free(t);
        return ENS_EPARSE;
    }
    *out = t;
    return 0;
}

static void on_tenant(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    struct store_tenant *t = NULL;
    if (err == 0)
        err = decode_tenant(q->id, r, &t);
    q->tenant_cb(err, t, q->ud);
    ens_free(q);
}

int store_tenant_get(struct store *s, const char *tenant_id, uint64_t deadline_ms,
                     store_tenant_cb cb, void *ud)
{
    if (cb == NULL || !store_id_valid(tenant_id))
        return ENS_EINVAL;
    char key[ADMIN_MAX_KEY];
    snprintf(key, sizeof(key), "ens:tenant:%s", tenant_id);
    const char *argv[] = {"HMGET", key, "name", "pc", "ews", "ct"};
    struct admin_req *q = areq_new(ud);
    q->tenant_cb = cb;
    memcpy(q->id, tenant_id, sizeof(q->id));
    int rc = store_cmdargv(s, 6, argv, NULL, deadline_ms, on_tenant, q);
    if (rc)
        ens_free(q);
    return rc;
}

static void on_tenant_list(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    const char *ids[STORE_MAX_TENANTS];
    size_t n = 0;
    if (err == 0 && r->type != REDIS_REPLY_ARRAY)
        err = ENS_EPARSE;
    for (size_t i = 0; err == 0 && i < r->elements && n < STORE_MAX_TENANTS; i++) {
        const redisReply *e = r->element[i];
        /* ids are ours, but Redis is still outside the process: keep only valid ones */
        if (e->type == REDIS_REPLY_STRING && e->len == STORE_ID_CHARS && store_id_valid(e->str))
            ids[n++] = e->str;
    }
    q->list_cb(err, ids, n, q->ud);
    ens_free(q);
}

int store_tenant_list(struct store *s, uint64_t deadline_ms, store_list_cb cb, void *ud)
{
    if (cb == NULL)
        return ENS_EINVAL;
    const char *argv[] = {"SMEMBERS", "ens:tenants"};
    struct admin_req *q = areq_new(ud);
    q->list_cb = cb;
    int rc = store_cmdargv(s, 2, argv, NULL, deadline_ms, on_tenant_list, q);
    if (rc)
        ens_free(q);
    return rc;
}

/* ---- API tokens ---- */

static void on_ok(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    q->done_cb(err, q->ud);
    ens_free(q);
}

static int simple(struct store *s, int argc, const char **argv, const size_t *lens,
                  uint64_t deadline_ms, store_done_cb cb, void *ud)
{
    struct admin_req *q = areq_new(ud);
    q->done_cb = cb;
    int rc = store_cmdargv(s, argc, argv, lens, deadline_ms, on_ok, q);
    if (rc)
        ens_free(q);
    return rc;
}

int store_apitoken_add(struct store *s, const char *tenant_id, const uint8_t hash[32],
                       uint64_t deadline_ms, store_done_cb cb, void *ud)
{
    if (cb == NULL || hash == NULL || !store_id_valid(tenant_id))
        return ENS_EINVAL;
    char key[ADMIN_MAX_KEY];
    key_apitok(key, hash);
    const char *argv[] = {"SET", key, tenant_id};
    return simple(s, 3, argv, NULL, deadline_ms, cb, ud);
}

static void on_tenant_id(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    char id[STORE_ID_CHARS + 1];
    if (err == 0) {
        if (r->type == REDIS_REPLY_NIL)
            err = ENS_ENOTFOUND;
        else if (!reply_copy(r, id, sizeof(id)) || !store_id_valid(id))
            err = ENS_EPARSE;
    }
    q->uid_cb(err, err ? NULL : id, q->ud);
    ens_free(q);
}

int store_apitoken_lookup(struct store *s, const uint8_t hash[32], uint64_t deadline_ms,
                          store_uid_cb cb, void *ud)
{
    if (cb == NULL || hash == NULL)
        return ENS_EINVAL;
    char key[ADMIN_MAX_KEY];
    key_apitok(key, hash);
    const char *argv[] = {"GET", key};
    struct admin_req *q = areq_new(ud);
    q->uid_cb = cb;
    int rc = store_cmdargv(s, 2, argv, NULL, deadline_ms, on_tenant_id, q);
    if (rc)
        ens_free(q);
    return rc;
}

/* ---- server keys ---- */

static void on_key_blob(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    struct span blob = span_make(NULL, 0);
    if (err == 0) {
        if (r->type == REDIS_REPLY_NIL)
            err = ENS_ENOTFOUND;
        else if (r->type != REDIS_REPLY_STRING || r->len > STORE_MAX_KEY_BLOB)
            err = ENS_EPARSE;
        else
            blob = span_make(r->str, r->len);
    }
    q->blob_cb(err, blob, q->ud);
    ens_free(q);
}

int store_keys_get(struct store *s, const char *name, uint64_t deadline_ms, store_blob_cb cb,
                   void *ud)
{
    if (cb == NULL || !key_name_valid(name))
        return ENS_EINVAL;
    char key[ADMIN_MAX_KEY];
    snprintf(key, sizeof(key), "ens:keys:%s", name);
    const char *argv[] = {"GET", key};
    struct admin_req *q = areq_new(ud);
    q->blob_cb = cb;
    int rc = store_cmdargv(s, 2, argv, NULL, deadline_ms, on_key_blob, q);
    if (rc)
        ens_free(q);
    return rc;
}

static void on_setnx(int err, redisReply *r, void *ud)
{
    struct admin_req *q = ud;
    int created = 0;
    if (err == 0) {
        if (r->type == REDIS_REPLY_STATUS)
            created = 1;
        else if (r->type != REDIS_REPLY_NIL)
            err = ENS_ESTORE;
    }
    q->created_cb(err, created, q->ud);
    ens_free(q);
}

int store_keys_setnx(struct store *s, const char *name, const void *blob, size_t len,
                     uint64_t deadline_ms, store_created_cb cb, void *ud)
{
    if (cb == NULL || !key_name_valid(name) || (blob == NULL && len) || len > STORE_MAX_KEY_BLOB)
        return ENS_EINVAL;
    char key[ADMIN_MAX_KEY];
    size_t klen = (size_t)snprintf(key, sizeof(key), "ens:keys:%s", name);
    const char *argv[] = {"SET", key, len ? blob : "", "NX"};
    const size_t lens[] = {3, klen, len, 2};
    struct admin_req *q = areq_new(ud);
    q->created_cb = cb;
    int rc = store_cmdargv(s, 4, argv, lens, deadline_ms, on_setnx, q);
    if (rc)
        ens_free(q);
    return rc;
}
