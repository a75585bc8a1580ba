/* The public listener: the device API and the Exchange callback (API.md 1, 2).
 *
 * A request is parsed, authenticated, decrypted and validated on the loop
 * where it landed; what concerns a mailbox then becomes one message to that
 * mailbox's actor, which answers through this scheduler's responder. Nothing
 * here keeps state between requests. */
#include "actors/http_api.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "actors/ews.h"
#include "actors/ids.h"
#include "actors/keys.h"
#include "actors/msgs.h"
#include "actors/user.h"
#include "persistence/store_admin.h"
#include "protocols/apns.h"
#include "protocols/enroll.h"
#include "protocols/h1_server.h"
#include "protocols/jwe.h"
#include "protocols/limits.h"
#include "protocols/soap_ews.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net.h"
#include "runtime/ratelimit.h"

#define API_MAX_TOKEN_BYTES   512
#define API_MAX_ALLOW_ENTRIES 256

/* ---- Small helpers ---- */

static void respond_json_text(struct h1_req *req, int status, const char *text)
{
    h1_req_respond(req, status, "application/json", (const uint8_t *)text, strlen(text), NULL, 0);
}

static struct act_reply_to reply_to(struct h1_req *req)
{
    struct act_reply_to to = {req, ens_sched_ctx_current()->responder};
    return to;
}

/* bearer_token extracts the token of "Authorization: Bearer <token>". */
static int bearer_token(struct h1_req *req, struct span *out)
{
    struct span v = h1_req_header(req, "authorization");
    if (v.p == NULL || v.len < 8 || !span_eq_nocase(span_make(v.p, 7), "bearer "))
        return 0;
    *out = span_make(v.p + 7, v.len - 7);
    return out->len > 0 && out->len <= API_MAX_TOKEN_BYTES;
}

static int path_is(struct span rest, const char *lit)
{
    return span_eq(rest, lit);
}

static uint64_t deadline(void)
{
    struct ens_sched_ctx *ctx = ens_sched_ctx_current();
    return uv_now(rt_sched_loop(ctx->sched)) + ENS_STORE_DEADLINE_MS;
}

/* ---- Rate limits (ratelimit.*) ---- */

/* address_key reduces "ip:port" to what one client controls: the IPv4
 * address, or the /64 of an IPv6 one (a host gets a whole /64 to pick from).
 * Returns the key's length in |out|, 0 when the peer is unknown. */
static size_t address_key(const char *peer, uint8_t out[16])
{
    char ip[INET6_ADDRSTRLEN];
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : 0;
    if (n == 0 || n >= sizeof(ip))
        return 0;
    memcpy(ip, peer, n);
    ip[n] = '\0';
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (inet_pton(AF_INET, ip, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, ip, out) != 1)
        return 0;
    if (memcmp(out, kMapped, sizeof(kMapped)) == 0) {
        memmove(out, out + 12, 4);
        return 4;
    }
    return 8;
}

/* rate_limited spends one request of |key| under limit |which|; when there is
 * none left it answers 429 with Retry-After and returns 1. */
static int rate_limited(struct ens_app *app, struct h1_req *req, enum ens_limit which,
                        struct span key)
{
    static const char *const kWhat[ENS_LIMITS] = {"this address", "this API token", "this mailbox"};
    if (key.len == 0)
        return 0;
    struct ens_sched_ctx *ctx = ens_sched_ctx_current();
    uint64_t wait_ms =
        rt_ratelimit_take(app->limits[which], key, uv_now(rt_sched_loop(ctx->sched)));
    if (wait_ms == 0)
        return 0;
    atomic_fetch_add_explicit(&app->counters.rate_limited[which], 1, memory_order_relaxed);
    char retry[24], msg[96];
    snprintf(retry, sizeof(retry), "%llu", (unsigned long long)((wait_ms + 999) / 1000));
    snprintf(msg, sizeof(msg), "too many requests for %s; retry after %s s", kWhat[which], retry);
    struct rt_buf body;
    rt_buf_init(&body, 256);
    h1_error_json(&body, "rate_limited", msg);
    const struct h1_header extra[] = {{"Retry-After", retry}};
    h1_req_respond(req, 429, "application/json", body.data, body.len, extra, 1);
    rt_buf_cleanup(&body);
    return 1;
}

/* ---- Enrollment: subscribe and check-in ---- */

/* What the request carries across its Redis look-ups and the replay claim. */
struct enroll_req {
    struct h1_req *req;
    struct ens_app *app;
    int checkin;
    char tenant_id[STORE_ID_CHARS + 1];
    struct act_enroll_msg *msg; /* built, waiting for the replay claim */
    char uid[ENS_ID_CHARS + 1];
};

/* jwe_digest names one JWE for the replay check: a hash of its decoded
 * authentication tag. The tag is unique to one sealing, and decoding it first
 * means no other base64 spelling of the same bytes passes as new. */
static int jwe_digest(struct span jwe, char out[STORE_REQUEST_DIGEST_CHARS + 1])
{
    const uint8_t *dot = NULL;
    while (jwe.len && (jwe.p[jwe.len - 1] == '\n' || jwe.p[jwe.len - 1] == '\r' ||
                       jwe.p[jwe.len - 1] == ' ' || jwe.p[jwe.len - 1] == '\t'))
        jwe.len--;
    for (size_t i = jwe.len; i > 0; i--) {
        if (jwe.p[i - 1] == '.') {
            dot = jwe.p + i;
            break;
        }
    }
    if (dot == NULL)
        return ENS_EPARSE;
    struct rt_buf tag;
    rt_buf_init(&tag, 64);
    int rc = b64_decode(&tag, span_make(dot, (size_t)(jwe.p + jwe.len - dot)), 1);
    if (rc == 0 && tag.len == 0)
        rc = ENS_EPARSE;
    if (rc == 0) {
        uint8_t h[32];
        SHA256(tag.data, tag.len, h);
        static const char kHex[] = "0123456789abcdef";
        for (size_t i = 0; i < STORE_REQUEST_DIGEST_CHARS / 2; i++) {
            out[2 * i] = kHex[h[i] >> 4];
            out[2 * i + 1] = kHex[h[i] & 15];
        }
        out[STORE_REQUEST_DIGEST_CHARS] = '\0';
    }
    rt_buf_cleanup(&tag);
    return rc;
}

static void enroll_req_free(struct enroll_req *r)
{
    if (r->msg)
        rt_msg_free(&r->msg->hdr);
    ens_free(r);
}

static int str_field(cJSON *obj, const char *name, size_t min, size_t max, const char **out)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return 0;
    size_t n = strlen(it->valuestring);
    if (n < min || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)it->valuestring[i] < 0x20)
            return 0;
    }
    *out = it->valuestring;
    return 1;
}

/* host_allowed reports whether the EWS URL's host is in the tenant's allow-list
 * (JSON array of host names or domains; empty or absent allows any). */
static int host_allowed(const char *allow_json, const char *url)
{
    if (allow_json == NULL || allow_json[0] == '\0')
        return 1;
    cJSON *list = cJSON_Parse(allow_json);
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0) {
        cJSON_Delete(list);
        return 1;
    }
    struct rt_url u;
    int ok = 0;
    if (rt_url_parse(url, &u) == 0) {
        size_t hl = strlen(u.host);
        cJSON *it;
        cJSON_ArrayForEach(it, list)
        {
            const char *d = cJSON_GetStringValue(it);
            if (d == NULL)
                continue;
            size_t dl = strlen(d);
            if (dl == 0 || dl > hl)
                continue;
            /* the host itself, or a subdomain of the listed domain */
            if (strcasecmp(u.host + hl - dl, d) == 0 && (hl == dl || u.host[hl - dl - 1] == '.')) {
                ok = 1;
                break;
            }
        }
    }
    cJSON_Delete(list);
    return ok;
}

/* enroll_build validates the decrypted payload into |e|. On a refusal it
 * writes the HTTP status, error code and message and returns 0. */
/* enroll_build turns the decrypted payload into |e| under the tenant's policy.
 * On a refusal it writes the HTTP status, error code and message and returns 0. */
static int enroll_build(struct enroll_req *r, const struct store_tenant *t, struct span plain,
                        struct act_enroll_msg *e, int *status, const char **code, char *msg,
                        size_t msglen)
{
    static const struct {
        enum enroll_result r;
        int status;
        const char *code;
    } kResults[] = {
        {ENROLL_NOT_JSON, 400, "bad_request"},
        {ENROLL_STALE, 400, "stale_request"},
        {ENROLL_INVALID, 422, "invalid_field"},
        {ENROLL_UNSUPPORTED, 422, "invalid_field"},
    };
    struct enroll_payload p;
    const char *field;
    int64_t now = (int64_t)time(NULL);
    enum enroll_result res = enroll_parse(plain, now, &p, &field);
    *status = 422;
    *code = "invalid_field";
    int ok = 0;
    if (res != ENROLL_OK) {
        for (size_t i = 0; i < sizeof(kResults) / sizeof(kResults[0]); i++) {
            if (kResults[i].r == res) {
                *status = kResults[i].status;
                *code = kResults[i].code;
            }
        }
        if (res == ENROLL_STALE)
            snprintf(msg, msglen, "iat is outside the accepted window of %d seconds",
                     ENROLL_IAT_WINDOW_S);
        else if (res == ENROLL_UNSUPPORTED)
            snprintf(msg, msglen, "%s: not supported by this server yet", field);
        else if (res == ENROLL_NOT_JSON)
            snprintf(msg, msglen, "the decrypted payload is not a JSON object");
        else
            snprintf(msg, msglen, "%s", field);
        goto out;
    }
    char why[128];
    if (p.ews_url[0] == '\0') {
        *status = 502;
        *code = "autodiscover_failed";
        snprintf(msg, msglen, "Autodiscover is not available on this server yet: send ewsUrl");
    } else if (strncmp(p.ews_url, "https://", 8) != 0) {
        snprintf(msg, msglen, "ewsUrl: expected an https URL");
    } else if (ews_url_check(r->app, p.ews_url, why, sizeof(why)) != 0) {
        snprintf(msg, msglen, "%s", why);
    } else if (!host_allowed(t->ews_allow_json, p.ews_url)) {
        snprintf(msg, msglen, "ewsUrl: host not allowed for this tenant");
    } else if (rt_buf_append_span(&e->creds, rt_buf_span(&p.creds)) != 0) {
        snprintf(msg, msglen, "auth: too large");
    } else {
        ok = 1;
    }
    if (!ok)
        goto out;
    e->now = now;
    snprintf(e->email, sizeof(e->email), "%s", p.email);
    snprintf(e->ews_url, sizeof(e->ews_url), "%s", p.ews_url);
    snprintf(e->auth_type, sizeof(e->auth_type), "%s", p.auth_type);
    struct store_device *d = &e->dev;
    snprintf(d->client_id, sizeof(d->client_id), "%s", p.device_id);
    snprintf(d->platform, sizeof(d->platform), "%s", p.platform);
    snprintf(d->push_token, sizeof(d->push_token), "%s", p.push_token);
    snprintf(d->app_id, sizeof(d->app_id), "%s", p.app_id);
    snprintf(d->environment, sizeof(d->environment), "%s", p.environment);
    snprintf(d->preview, sizeof(d->preview), "%s", p.preview);
    d->badge = p.badge;
    /* The tenant's cap wins over the device's wish. */
    if (enroll_preview_rank(t->preview_cap) >= 0 &&
        enroll_preview_rank(t->preview_cap) < enroll_preview_rank(d->preview))
        snprintf(d->preview, sizeof(d->preview), "%s", t->preview_cap);
out:
    enroll_payload_cleanup(&p);
    return ok;
}

/* enroll_claimed hands an enrollment whose JWE was not seen before to its
 * mailbox's actor. */
static void enroll_claimed(int err, void *ud)
{
    struct enroll_req *r = ud;
    if (err == ENS_EEXIST) {
        atomic_fetch_add_explicit(&r->app->counters.replays, 1, memory_order_relaxed);
        RT_LOG_W("api.enroll", "user=%s refused: the same JWE was received before", r->uid);
        h1_req_respond_error(r->req, 400, "stale_request",
                             "this request was received before: seal a new one");
        enroll_req_free(r);
        return;
    }
    if (err) {
        h1_req_respond_error(r->req, 503, "unavailable", "storage unavailable");
        enroll_req_free(r);
        return;
    }
    atomic_fetch_add_explicit(r->checkin ? &r->app->counters.checkins
                                         : &r->app->counters.subscribes,
                              1, memory_order_relaxed);
    int rc = act_user_send(r->app, r->uid, &r->msg->hdr);
    if (rc)
        h1_req_respond_error(r->req, 503, "unavailable", "the server is overloaded or stopping");
    else
        r->msg = NULL; /* the actor owns it */
    enroll_req_free(r);
}

static void enroll_with_tenant(int err, struct store_tenant *t, void *ud)
{
    struct enroll_req *r = ud;
    struct h1_req *req = r->req;
    if (err || t == NULL) {
        h1_req_respond_error(req, err == ENS_ENOTFOUND ? 401 : 503,
                             err == ENS_ENOTFOUND ? "unauthorized" : "unavailable",
                             err == ENS_ENOTFOUND ? "unknown API token" : "storage unavailable");
        ens_free(r);
        return;
    }
    struct act_keyset *ks = ens_app_keys(r->app);
    if (ks == NULL) {
        h1_req_respond_error(req, 503, "unavailable", "keys are not loaded yet");
        goto out;
    }
    struct rt_buf plain;
    rt_buf_init_secret(&plain, JOSE_MAX_PLAINTEXT);
    int rc = jwe_decrypt(h1_req_body(req), act_keyset_lookup, ks, &plain, NULL);
    if (rc) {
        rt_buf_cleanup_secret(&plain);
        if (rc == ENS_EUNKNOWNKID)
            h1_req_respond_error(req, 400, "unknown_kid",
                                 "the key id is not one of ours (fetch /v1/keys again)");
        else
            h1_req_respond_error(req, 400, "bad_jwe",
                                 "the body is not a JWE this server can decrypt");
        goto out;
    }
    struct act_enroll_msg *e = act_enroll_msg_new();
    e->reply = reply_to(req);
    e->checkin = r->checkin;
    snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", t->id);
    int status;
    const char *code;
    char msg[160];
    int ok = enroll_build(r, t, rt_buf_span(&plain), e, &status, &code, msg, sizeof(msg));
    rt_buf_cleanup_secret(&plain);
    if (!ok) {
        rt_msg_free(&e->hdr);
        h1_req_respond_error(req, status, code, msg);
        goto out;
    }
    ens_user_id(r->app->id_key, e->tenant_id, span_cstr(e->email), r->uid);
    ens_device_id(r->app->id_key, e->tenant_id, span_cstr(e->dev.client_id), e->dev.device_id);
    store_tenant_free(t);
    t = NULL;
    r->msg = e;
    char digest[STORE_REQUEST_DIGEST_CHARS + 1];
    if (jwe_digest(h1_req_body(req), digest) != 0) {
        h1_req_respond_error(req, 400, "bad_jwe", "the body is not a JWE this server can decrypt");
        goto out;
    }
    /* A JWE is accepted while its iat is within the window either side of
     * now, so it must be remembered for twice the window. */
    rc = store_request_claim(ens_sched_ctx_current()->store, r->uid, digest,
                             2 * ENROLL_IAT_WINDOW_S, deadline(), enroll_claimed, r);
    if (rc == 0)
        return;
    h1_req_respond_error(req, 503, "unavailable", "storage unavailable");
out:
    store_tenant_free(t);
    enroll_req_free(r);
}

static void enroll_with_token(int err, const char *tenant_id, void *ud)
{
    struct enroll_req *r = ud;
    if (err) {
        if (err == ENS_ENOTFOUND)
            h1_req_respond_error(r->req, 401, "unauthorized", "unknown API token");
        else
            h1_req_respond_error(r->req, 503, "unavailable", "storage unavailable");
        ens_free(r);
        return;
    }
    snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", tenant_id);
    struct ens_sched_ctx *ctx = ens_sched_ctx_current();
    int rc = store_tenant_get(ctx->store, r->tenant_id, deadline(), enroll_with_tenant, r);
    if (rc)
        enroll_with_tenant(rc, NULL, r);
}

static void handle_enroll(struct ens_sched_ctx *ctx, struct h1_req *req, int checkin)
{
    struct span tok;
    if (!bearer_token(req, &tok)) {
        h1_req_respond_error(req, 401, "unauthorized", "missing or malformed API token");
        return;
    }
    struct span ct = h1_req_header(req, "content-type");
    if (ct.p == NULL || !span_has_prefix(ct, "application/jose")) {
        h1_req_respond_error(req, 400, "bad_request", "Content-Type must be application/jose");
        return;
    }
    /* Limits before any work: a stranger's junk costs no Redis read and no
     * RSA decryption once the address's budget is spent. */
    uint8_t addr[16];
    size_t alen = address_key(h1_req_peer(req), addr);
    if (rate_limited(ctx->app, req, ENS_LIMIT_ADDRESS, span_make(addr, alen)))
        return;
    uint8_t hash[32];
    SHA256(tok.p, tok.len, hash);
    if (rate_limited(ctx->app, req, ENS_LIMIT_TOKEN, span_make(hash, sizeof(hash))))
        return;
    struct enroll_req *r = ens_calloc(1, sizeof(*r));
    r->req = req;
    r->app = ctx->app;
    r->checkin = checkin;
    int rc = store_apitoken_lookup(ctx->store, hash, deadline(), enroll_with_token, r);
    if (rc)
        enroll_with_token(rc == ENS_ENOTFOUND ? ENS_ESTORE : rc, NULL, r);
}

/* ---- Unsubscribe (API.md 1.3) ---- */

struct unsub_req {
    struct h1_req *req;
    struct ens_app *app;
    struct act_device_msg *msg;
};

static void unsub_fail(struct unsub_req *r, int status, const char *code, const char *message)
{
    h1_req_respond_error(r->req, status, code, message);
    rt_msg_free(&r->msg->hdr);
    ens_free(r);
}

static void unsub_with_uid(int err, const char *uid, void *ud)
{
    struct unsub_req *r = ud;
    if (err) {
        if (err == ENS_ENOTFOUND)
            unsub_fail(r, 404, "not_found", "unknown device");
        else
            unsub_fail(r, 503, "unavailable", "storage unavailable");
        return;
    }
    r->msg->reply = reply_to(r->req);
    int rc = act_user_send(r->app, uid, &r->msg->hdr);
    if (rc) {
        unsub_fail(r, 503, "unavailable", "the server is overloaded or stopping");
        return;
    }
    ens_free(r);
}

/* unsub_parse reads the body's deviceId and deviceKey into |r|'s message, or
 * answers 400/422 and returns 0. The key is wiped from the parsed body. */
static int unsub_parse(struct unsub_req *r)
{
    struct span body = h1_req_body(r->req);
    cJSON *j = cJSON_ParseWithLength((const char *)body.p, body.len);
    const char *dev = NULL, *key = NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        unsub_fail(r, 400, "bad_request", "the body is not a JSON object");
        return 0;
    }
    int ok_dev = str_field(j, "deviceId", STORE_ID_CHARS, STORE_ID_CHARS, &dev);
    int ok_key = str_field(j, "deviceKey", 1, 128, &key);
    if (!ok_dev || !ok_key) {
        if (key)
            OPENSSL_cleanse((void *)key, strlen(key));
        cJSON_Delete(j);
        unsub_fail(r, 422, "invalid_field", !ok_dev ? "deviceId" : "deviceKey");
        return 0;
    }
    snprintf(r->msg->device_id, sizeof(r->msg->device_id), "%s", dev);
    ens_sha256_hex(span_cstr(key), r->msg->key_hash);
    OPENSSL_cleanse((void *)key, strlen(key));
    cJSON_Delete(j);
    return 1;
}

/* unsub_with_token: the API token is judged before the body is read, so a
 * stranger learns nothing of what a well-formed body would have got (API.md
 * 1.3: 401 whatever the body). */
static void unsub_with_token(int err, const char *tenant_id, void *ud)
{
    struct unsub_req *r = ud;
    if (err) {
        if (err == ENS_ENOTFOUND)
            unsub_fail(r, 401, "unauthorized", "unknown API token");
        else
            unsub_fail(r, 503, "unavailable", "storage unavailable");
        return;
    }
    if (!unsub_parse(r))
        return;
    snprintf(r->msg->tenant_id, sizeof(r->msg->tenant_id), "%s", tenant_id);
    int rc = store_user_find_by_device(ens_sched_ctx_current()->store, r->msg->device_id,
                                       deadline(), unsub_with_uid, r);
    if (rc)
        unsub_with_uid(rc == ENS_EINVAL ? ENS_ENOTFOUND : rc, NULL, r);
}

static void handle_unsubscribe(struct ens_sched_ctx *ctx, struct h1_req *req)
{
    struct span tok;
    if (!bearer_token(req, &tok)) {
        h1_req_respond_error(req, 401, "unauthorized", "missing or malformed API token");
        return;
    }
    struct unsub_req *r = ens_calloc(1, sizeof(*r));
    r->req = req;
    r->app = ctx->app;
    r->msg = rt_msg_new(sizeof(*r->msg), ACT_MSG_DEVICE_OP);
    r->msg->op = ACT_DEVICE_UNSUBSCRIBE;
    uint8_t hash[32];
    SHA256(tok.p, tok.len, hash);
    int rc = store_apitoken_lookup(ctx->store, hash, deadline(), unsub_with_token, r);
    if (rc)
        unsub_with_token(ENS_ESTORE, NULL, r);
}

/* ---- The Exchange callback ---- */

static void respond_soap(struct h1_req *req, int unsubscribe)
{
    struct span body = soap_notification_result(unsubscribe);
    h1_req_respond(req, 200, "text/xml; charset=utf-8", body.p, body.len, NULL, 0);
}

static void handle_callback(struct ens_sched_ctx *ctx, struct h1_req *req, struct span token)
{
    struct ens_app *app = ctx->app;
    /* Unsubscribe is final at Exchange, so it is said only of a token that
     * certainly does not belong; without keys or Redis nothing is certain, and
     * a 503 makes Exchange send the same notification again. */
    if (ens_app_keys(app) == NULL || !store_ready(ctx->store)) {
        atomic_fetch_add_explicit(&app->counters.callbacks_unjudged, 1, memory_order_relaxed);
        h1_req_respond_error(req, 503, "unavailable",
                             ens_app_keys(app) ? "storage unavailable" : "keys are not loaded yet");
        return;
    }
    struct act_callback_msg *c = act_callback_msg_new();
    c->t0_ns = uv_hrtime();
    if (seal_token_parse(token, &c->token) != 0) {
        rt_msg_free(&c->hdr);
        atomic_fetch_add_explicit(&app->counters.callbacks_unsubscribe, 1, memory_order_relaxed);
        RT_LOG_I("ews.callback", "answer=Unsubscribe reason=token does not parse");
        respond_soap(req, 1);
        return;
    }
    int rc = soap_notification_parse(h1_req_body(req), &c->batch);
    if (rc) {
        rt_msg_free(&c->hdr);
        atomic_fetch_add_explicit(&app->counters.callbacks_bad, 1, memory_order_relaxed);
        if (rc == ENS_ETOOBIG)
            h1_req_respond_error(req, 413, "too_large", "too many notifications or events");
        else
            h1_req_respond_error(req, 400, "bad_request", "not a SendNotification request");
        return;
    }
    char uid[ENS_ID_CHARS + 1];
    struct rt_buf b;
    rt_buf_init(&b, 64);
    b64_encode(&b, span_make(c->token.uid, SEAL_UID_BYTES), 1);
    snprintf(uid, sizeof(uid), "%s", rt_buf_cstr(&b));
    rt_buf_cleanup(&b);
    c->reply = reply_to(req);
    rc = act_user_send(app, uid, &c->hdr);
    if (rc) {
        rt_msg_free(&c->hdr);
        atomic_fetch_add_explicit(&app->counters.callbacks_unjudged, 1, memory_order_relaxed);
        /* Exchange retries a failed delivery; a 503 keeps the subscription. */
        h1_req_respond_error(req, 503, "unavailable", "the server is overloaded or stopping");
    }
}

/* ---- Routing ---- */

/* Ready means every scheduler can serve: a request lands on any of them, so
 * one loop's dead Redis connection would fail its share of enrollments and
 * callbacks while this loop's own connection looked fine. */
static void handle_ready(struct ens_sched_ctx *ctx, struct h1_req *req)
{
    int down = ens_app_redis_down(ctx->app);
    char msg[64];
    if (ens_app_keys(ctx->app) == NULL) {
        h1_req_respond_error(req, 503, "unavailable", "keys are not loaded yet");
    } else if (down >= 0) {
        snprintf(msg, sizeof(msg), "Redis is not reachable from scheduler %d", down);
        h1_req_respond_error(req, 503, "unavailable", msg);
    } else {
        respond_json_text(req, 200, "{\"status\":\"ready\"}");
    }
}

static void route_alive(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    (void)ctx, (void)tail;
    respond_json_text(req, 200, "{\"status\":\"ok\",\"version\":\"" ENS_VERSION "\"}");
}

static void route_ready(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    (void)tail;
    handle_ready(ctx, req);
}

static void route_keys(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    (void)tail;
    struct act_keyset *ks = ens_app_keys(ctx->app);
    if (ks)
        respond_json_text(req, 200, ks->jwks);
    else
        h1_req_respond_error(req, 503, "unavailable", "keys are not loaded yet");
}

static void route_subscribe(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    (void)tail;
    handle_enroll(ctx, req, 0);
}

static void route_checkin(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    (void)tail;
    handle_enroll(ctx, req, 1);
}

static void route_unsubscribe(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    (void)tail;
    handle_unsubscribe(ctx, req);
}

static void route_callback(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail)
{
    handle_callback(ctx, req, tail);
}

#define ROUTE_GET  1u /* and HEAD */
#define ROUTE_POST 2u

/* The device API and the callback (API.md 1, 2): a path that exists but not
 * for the method is 405 with the methods it has in Allow; HEAD goes wherever
 * GET does. */
static const struct route {
    const char *path;
    int prefix; /* the path is a prefix; the rest goes to the handler */
    unsigned methods;
    void (*fn)(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tail);
} kRoutes[] = {
    {"/alive", 0, ROUTE_GET, route_alive},
    {"/ready", 0, ROUTE_GET, route_ready},
    {"/v1/keys", 0, ROUTE_GET, route_keys},
    {"/v1/subscribe", 0, ROUTE_POST, route_subscribe},
    {"/v1/checkin", 0, ROUTE_POST, route_checkin},
    {"/v1/unsubscribe", 0, ROUTE_POST, route_unsubscribe},
    {"/v1/ews/", 1, ROUTE_POST, route_callback},
};

void act_http_public(struct h1_req *req, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    struct ens_app *app = ctx->app;
    struct span target = h1_req_target(req);
    const char *method = h1_req_method(req);
    /* drop the query string: no route takes one */
    for (size_t i = 0; i < target.len; i++) {
        if (target.p[i] == '?') {
            target.len = i;
            break;
        }
    }
    size_t bl = strlen(app->base_path);
    if (target.len < bl || memcmp(target.p, app->base_path, bl) != 0) {
        h1_req_respond_error(req, 404, "not_found", "no such endpoint");
        return;
    }
    struct span rest = span_make(target.p + bl, target.len - bl);
    unsigned m = strcmp(method, "GET") == 0    ? ROUTE_GET
                 : strcmp(method, "HEAD") == 0 ? ROUTE_GET /* answered as GET, without body */
                 : strcmp(method, "POST") == 0 ? ROUTE_POST
                                               : 0;
    for (size_t i = 0; i < sizeof(kRoutes) / sizeof(kRoutes[0]); i++) {
        const struct route *r = &kRoutes[i];
        if (r->prefix ? !span_has_prefix(rest, r->path) : !path_is(rest, r->path))
            continue;
        if (!(m & r->methods)) {
            const struct h1_header allow[] = {
                {"Allow", r->methods == ROUTE_GET ? "GET, HEAD" : "POST"}};
            h1_req_respond_error_with(req, 405, "method_not_allowed",
                                      "wrong method for this endpoint", allow, 1);
            return;
        }
        r->fn(ctx, req, span_make(rest.p + strlen(r->path), rest.len - strlen(r->path)));
        return;
    }
    h1_req_respond_error(req, 404, "not_found", "no such endpoint");
}
