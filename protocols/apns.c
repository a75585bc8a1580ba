/* APNs payloads, error parsing and the token-auth client (see apns.h). */
#include "protocols/apns.h"

#include <cjson/cJSON.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "protocols/apns_jwt.h"
#include "protocols/h2_client.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net.h"
#include "protocols/json_text.h"

/* ---- payloads ---- */

static int build_new_mail(struct rt_buf *out, const struct apns_new_mail *m, size_t subject_budget,
                          size_t sender_budget)
{
    static const char generic[] = "New message";
    rt_buf_reset(out);
    int rv = rt_buf_append_str(out, "{\"aps\":{\"alert\":{\"title\":");
    if (m->preview == APNS_PREVIEW_NONE) {
        rv = rv ? rv : json_str_append(out, generic, APNS_MAX_PAYLOAD);
    } else {
        rv = rv ? rv : json_str_append(out, m->sender ? m->sender : "", sender_budget);
        rv = rv ? rv : rt_buf_append_str(out, ",\"body\":");
        if (m->preview == APNS_PREVIEW_FULL)
            rv = rv ? rv : json_str_append(out, m->subject ? m->subject : "", subject_budget);
        else
            rv = rv ? rv : json_str_append(out, generic, APNS_MAX_PAYLOAD);
    }
    rv = rv ? rv : rt_buf_append_str(out, "}");
    if (m->badge_on)
        rv = rv ? rv : rt_buf_appendf(out, ",\"badge\":%u", (unsigned)m->badge);
    rv = rv ? rv
            : rt_buf_append_str(out, ",\"sound\":\"default\",\"mutable-content\":1,\"thread-id\":");
    rv = rv ? rv : json_str_append(out, m->user_id, APNS_MAX_PAYLOAD);
    rv = rv ? rv : rt_buf_append_str(out, "},\"ens\":{\"type\":\"new-mail\",\"userId\":");
    rv = rv ? rv : json_str_append(out, m->user_id, APNS_MAX_PAYLOAD);
    rv = rv ? rv : rt_buf_append_str(out, "}}");
    if (rv == 0 && out->len > APNS_MAX_PAYLOAD)
        rv = ENS_ETOOBIG;
    return rv;
}

int apns_payload_new_mail(struct rt_buf *out, const struct apns_new_mail *m)
{
    if (!out || !m || !m->user_id || out->max < APNS_MAX_PAYLOAD)
        return ENS_EINVAL;
    if (build_new_mail(out, m, APNS_MAX_PAYLOAD, APNS_MAX_SENDER_BYTES) == 0)
        return 0;
    /* Too long: measure the payload around an empty subject, then give the
     * subject exactly what is left. json_text_append never exceeds its budget. */
    struct apns_new_mail empty = *m;
    empty.subject = "";
    int rv = build_new_mail(out, &empty, 0, APNS_MAX_SENDER_BYTES);
    if (rv == 0 && m->preview == APNS_PREVIEW_FULL)
        rv = build_new_mail(out, m, APNS_MAX_PAYLOAD - out->len, APNS_MAX_SENDER_BYTES);
    if (rv != 0)
        rt_buf_reset(out);
    return rv;
}

int apns_payload_badge(struct rt_buf *out, uint32_t badge)
{
    rt_buf_reset(out);
    return rt_buf_appendf(out, "{\"aps\":{\"badge\":%u}}", (unsigned)badge);
}

int apns_payload_checkin(struct rt_buf *out)
{
    rt_buf_reset(out);
    return rt_buf_append_str(out,
                             "{\"aps\":{\"content-available\":1},\"ens\":{\"type\":\"checkin\"}}");
}

/* ---- error bodies and classification ---- */

int apns_parse_error_body(struct span body, char *reason, size_t cap, uint64_t *timestamp_ms)
{
    if (!reason || cap == 0)
        return ENS_EINVAL;
    reason[0] = 0;
    if (timestamp_ms)
        *timestamp_ms = 0;
    if (body.len == 0 || body.len > APNS_MAX_ERROR_BODY)
        return ENS_EPARSE;
    cJSON *root = cJSON_ParseWithLength((const char *)body.p, body.len);
    int rv = ENS_EPARSE;
    if (!root || !cJSON_IsObject(root))
        goto out;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "reason");
    if (!cJSON_IsString(r) || !r->valuestring)
        goto out;
    size_t n = strlen(r->valuestring);
    if (n == 0 || n > APNS_MAX_REASON || n >= cap)
        goto out;
    for (size_t i = 0; i < n; i++) {
        char ch = r->valuestring[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
            goto out;
    }
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "timestamp");
    if (ts && timestamp_ms) {
        /* 2^53 keeps the double exact; real values are ~1.7e12. */
        if (!cJSON_IsNumber(ts) || ts->valuedouble < 0 || ts->valuedouble > 9007199254740992.0)
            goto out;
        *timestamp_ms = (uint64_t)ts->valuedouble;
    }
    memcpy(reason, r->valuestring, n + 1);
    rv = 0;
out:
    cJSON_Delete(root);
    if (rv != 0 && timestamp_ms)
        *timestamp_ms = 0;
    return rv;
}

/* The retry table of push.md section 8. First match wins; a NULL reason
 * matches any reason for that status, status 0 any status in the hundred. */
static const struct {
    int status;
    const char *reason;
    enum apns_class cls;
} kClassTable[] = {
    {200, NULL, APNS_OK},
    {410, NULL, APNS_UNREGISTERED},
    {400, "BadDeviceToken", APNS_UNREGISTERED},
    {400, "DeviceTokenNotForTopic", APNS_UNREGISTERED},
    {400, "IdleTimeout", APNS_RETRY},
    {403, "ExpiredProviderToken", APNS_RETRY},
    {429, NULL, APNS_RETRY},
    {500, NULL, APNS_RETRY},
    {502, NULL, APNS_RETRY},
    {503, NULL, APNS_RETRY},
    {504, NULL, APNS_RETRY},
};

enum apns_class apns_classify(int status, const char *reason)
{
    for (size_t i = 0; i < sizeof(kClassTable) / sizeof(kClassTable[0]); i++) {
        if (kClassTable[i].status != status)
            continue;
        if (kClassTable[i].reason && (!reason || strcmp(reason, kClassTable[i].reason) != 0))
            continue;
        return kClassTable[i].cls;
    }
    if (status >= 500 && status < 600)
        return APNS_RETRY;
    return APNS_FATAL;
}

const char *apns_class_name(enum apns_class cls)
{
    static const char *const names[] = {"ok", "unregistered", "retry", "fatal"};
    return (unsigned)cls < 4 ? names[cls] : "?";
}

/* ---- the client ---- */

struct apns_client {
    uv_loop_t *loop;
    struct rt_tls_ctx *tls;
    struct apns_jwt *jwt;
    struct h2_client *prod, *sandbox;
    int h2_alive; /* h2 clients not yet released */
};

/* One push in flight: everything needed to resend it once. */
struct apns_send {
    struct apns_client *c;
    struct h2_client *h2;
    char path[sizeof("/3/device/") + APNS_MAX_TOKEN_HEX];
    char *topic, *push_type;
    char priority[4];
    char apns_id[APNS_ID_CHARS + 1];
    char collapse_id[APNS_MAX_COLLAPSE_ID + 1]; /* "" = none */
    char expiration[24];                        /* "" = none */
    uint8_t *payload;
    size_t payload_len;
    uint64_t deadline_ms;
    char *bearer; /* "bearer <jwt>" as sent; a secret */
    int resent;
    apns_result_cb cb;
    void *ud;
};

static const char *const kPushTypes[] = {
    "alert",        "background", "voip",       "complication", "fileprovider", "mdm",
    "liveactivity", "location",   "pushtotalk", "widgets",      "controls",
};

static int push_type_ok(const char *t)
{
    for (size_t i = 0; i < sizeof(kPushTypes) / sizeof(kPushTypes[0]); i++)
        if (strcmp(t, kPushTypes[i]) == 0)
            return 1;
    return 0;
}

static int hex_token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n % 2 || n > APNS_MAX_TOKEN_HEX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return 1;
}

static int uuid_ok(const char *s)
{
    if (strlen(s) != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-')
                return 0;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

void apns_id_new(char out[APNS_ID_CHARS + 1])
{
    uint8_t b[16];
    RAND_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static void send_free(struct apns_send *s)
{
    ens_free(s->topic);
    ens_free(s->push_type);
    ens_free(s->payload);
    ens_free_secret(s->bearer);
    ens_free(s);
}

static void on_response(int err, const struct h2_response *resp, void *ud);

static int send_issue(struct apns_send *s)
{
    const char *jwt;
    int rv = apns_jwt_get0(s->c->jwt, &jwt);
    if (rv != 0)
        return rv;
    ens_free_secret(s->bearer);
    size_t n = strlen(jwt) + sizeof("bearer ");
    s->bearer = ens_malloc(n);
    snprintf(s->bearer, n, "bearer %s", jwt);
    /* apns-id is unique per push, so indexing it would only churn APNs's
     * small HPACK table; :path (set by h2_client) and authorization are
     * never indexed as Apple asks (push.md 1.3). */
    struct h2_header hdrs[7] = {
        {"authorization", s->bearer, 1},   {"apns-push-type", s->push_type, 0},
        {"apns-priority", s->priority, 0}, {"apns-topic", s->topic, 0},
        {"apns-id", s->apns_id, 1},
    };
    size_t n_hdrs = 5;
    if (s->collapse_id[0])
        hdrs[n_hdrs++] = (struct h2_header){"apns-collapse-id", s->collapse_id, 1};
    if (s->expiration[0])
        hdrs[n_hdrs++] = (struct h2_header){"apns-expiration", s->expiration, 1};
    return h2_client_request(s->h2, "POST", s->path, hdrs, n_hdrs, s->payload, s->payload_len,
                             s->deadline_ms, on_response, s);
}

static const char *find_header(const struct h2_response *resp, const char *name)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

static void on_response(int err, const struct h2_response *resp, void *ud)
{
    struct apns_send *s = ud;
    char reason[APNS_MAX_REASON + 1] = "";
    struct apns_result res = {.err = err, .reason = reason, .apns_id = s->apns_id};
    if (err != 0) {
        /* Connection loss, timeout, cancel: the push may not have arrived and
         * resending with the same apns-id is safe (duplicates collapse). */
        res.cls = APNS_RETRY;
    } else {
        res.status = resp->status;
        if (resp->status != 200)
            apns_parse_error_body(resp->body, reason, sizeof(reason), &res.timestamp_ms);
        const char *id = find_header(resp, "apns-id");
        if (id && uuid_ok(id))
            res.apns_id = id;
        res.cls = apns_classify(resp->status, reason);
        if (resp->status == 403 && strcmp(reason, "ExpiredProviderToken") == 0) {
            if (!s->resent) {
                /* Re-sign, move to a fresh connection (pushy PR#783), resend once. */
                s->resent = 1;
                apns_jwt_expired(s->c->jwt, s->bearer + sizeof("bearer ") - 1);
                h2_client_reconnect(s->h2);
                RT_LOG_W("apns.jwt_expired", "apns_id=%s action=resign_resend", s->apns_id);
                if (send_issue(s) == 0)
                    return;
            }
            /* Rejected again right after re-signing: our clock or key is off. */
            res.cls = APNS_FATAL;
        }
    }
    if (res.cls != APNS_OK)
        RT_LOG_I("apns.result", "apns_id=%s status=%d reason=%s class=%s err=%s", res.apns_id,
                 res.status, reason, apns_class_name(res.cls), err ? ens_err_name(err) : "none");
    s->cb(&res, s->ud);
    send_free(s);
}

int apns_send(struct apns_client *c, const struct apns_push *p, apns_result_cb cb, void *ud)
{
    if (!c || !p || !cb || !p->device_token_hex || !p->topic || !p->topic[0] || !p->push_type ||
        !p->environment || !p->payload || p->payload_len == 0 ||
        p->payload_len > APNS_MAX_PAYLOAD || !hex_token_ok(p->device_token_hex) ||
        !push_type_ok(p->push_type) ||
        (p->priority != 10 && p->priority != 5 && p->priority != 1) ||
        (p->apns_id && !uuid_ok(p->apns_id)) ||
        (p->collapse_id && (!p->collapse_id[0] || strlen(p->collapse_id) > APNS_MAX_COLLAPSE_ID)))
        return ENS_EINVAL;
    struct h2_client *h2;
    if (strcmp(p->environment, "production") == 0)
        h2 = c->prod;
    else if (strcmp(p->environment, "sandbox") == 0)
        h2 = c->sandbox;
    else
        return ENS_EINVAL;

    struct apns_send *s = ens_calloc(1, sizeof(*s));
    s->c = c;
    s->h2 = h2;
    snprintf(s->path, sizeof(s->path), "/3/device/%s", p->device_token_hex);
    s->topic = ens_strdup(p->topic);
    s->push_type = ens_strdup(p->push_type);
    snprintf(s->priority, sizeof(s->priority), "%d", p->priority);
    if (p->collapse_id)
        snprintf(s->collapse_id, sizeof(s->collapse_id), "%s", p->collapse_id);
    if (p->expiration_s)
        snprintf(s->expiration, sizeof(s->expiration), "%llu", (unsigned long long)p->expiration_s);
    if (p->apns_id)
        memcpy(s->apns_id, p->apns_id, APNS_ID_CHARS + 1);
    else
        apns_id_new(s->apns_id);
    s->payload = ens_malloc(p->payload_len);
    memcpy(s->payload, p->payload, p->payload_len);
    s->payload_len = p->payload_len;
    s->deadline_ms = p->deadline_ms ? p->deadline_ms : uv_now(c->loop) + H2_STREAM_TIMEOUT_MS;
    s->cb = cb;
    s->ud = ud;
    int rv = send_issue(s);
    if (rv != 0)
        send_free(s);
    return rv;
}

static struct h2_client *h2_for(uv_loop_t *loop, struct rt_tls_ctx *tls, const char *url, char *err,
                                size_t errlen)
{
    struct rt_url u;
    if (rt_url_parse(url, &u) != 0 || strcmp(u.scheme, "https") != 0) {
        snprintf(err, errlen, "apns: bad url %s (https://host[:port] expected)", url);
        return NULL;
    }
    return h2_client_new(loop, u.host, u.port, tls);
}

struct apns_client *apns_client_new(uv_loop_t *loop, const struct apns_opts *o, char *err,
                                    size_t errlen)
{
    char dummy[1];
    if (!err || !errlen)
        err = dummy, errlen = sizeof(dummy);
    err[0] = 0;
    if (!loop || !o || !o->key_file || !o->team_id || !o->key_id) {
        snprintf(err, errlen, "apns: team_id, key_id and key_file are required");
        return NULL;
    }
    struct apns_client *c = ens_calloc(1, sizeof(*c));
    c->loop = loop;
    c->jwt = apns_jwt_new(o->key_file, o->team_id, o->key_id, err, errlen);
    if (!c->jwt)
        goto fail;
    static const char *const alpn[] = {"h2", NULL};
    struct rt_tls_client_opts to = {.ca_file = o->ca_file, .alpn = alpn};
    c->tls = rt_tls_ctx_client_new(&to, err, errlen);
    if (!c->tls)
        goto fail;
    c->prod = h2_for(loop, c->tls, o->url ? o->url : APNS_DEFAULT_URL, err, errlen);
    if (!c->prod)
        goto fail;
    c->sandbox = h2_for(loop, c->tls, o->sandbox_url ? o->sandbox_url : APNS_DEFAULT_SANDBOX_URL,
                        err, errlen);
    if (!c->sandbox)
        goto fail;
    h2_client_set_probe_first(c->prod, 1);
    h2_client_set_probe_first(c->sandbox, 1);
    return c;
fail:
    apns_client_free(c);
    return NULL;
}

static void client_release(struct apns_client *c)
{
    rt_tls_ctx_free(c->tls);
    apns_jwt_free(c->jwt);
    ens_free(c);
}

/* The TLS context must outlive every stream made with it (net.h), and the h2
 * clients close theirs asynchronously: release it after both are gone. */
static void on_h2_freed(void *ud)
{
    struct apns_client *c = ud;
    if (--c->h2_alive == 0)
        client_release(c);
}

void apns_client_free(struct apns_client *c)
{
    if (!c)
        return;
    struct h2_client *h[2] = {c->prod, c->sandbox};
    c->prod = c->sandbox = NULL;
    for (int i = 0; i < 2; i++) {
        if (h[i]) {
            c->h2_alive++;
            h2_client_on_freed(h[i], on_h2_freed, c);
        }
    }
    if (c->h2_alive == 0) {
        client_release(c);
        return;
    }
    /* The h2 clients cancel their requests, which frees each apns_send. */
    for (int i = 0; i < 2; i++)
        h2_client_free(h[i]);
}
