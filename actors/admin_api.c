/* The admin listener (API.md 4): tenants, API tokens and metrics. Loopback by
 * default and always behind the admin bearer token. */
#include <cjson/cJSON.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "actors/app.h"
#include "actors/http_api.h"
#include "actors/ids.h"
#include "actors/keys.h"
#include "actors/msgs.h"
#include "actors/user.h"
#include "persistence/store_admin.h"
#include "protocols/h1_server.h"
#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net.h"

#define ADMIN_TOKEN_PREFIX    "ens_"
#define ADMIN_MAX_METRICS     (64 * 1024)
#define ADMIN_MAX_ALLOW       64
#define ADMIN_MAX_TENANT_SCAN 256 /* tenants searched for an address without ?tenant= */

static uint64_t deadline(struct ens_sched_ctx *ctx)
{
    return uv_now(rt_sched_loop(ctx->sched)) + ENS_STORE_DEADLINE_MS;
}

static int admin_authorized(struct ens_app *app, struct h1_req *req)
{
    struct span v = h1_req_header(req, "authorization");
    if (v.p == NULL || v.len < 8 || !span_eq_nocase(span_make(v.p, 7), "bearer "))
        return 0;
    uint8_t hash[32];
    SHA256(v.p + 7, v.len - 7, hash);
    return ens_consttime_eq(hash, app->admin_token_hash, sizeof(hash));
}

static void respond_json(struct h1_req *req, int status, cJSON *j)
{
    char *text = cJSON_PrintUnformatted(j);
    if (text == NULL) {
        h1_req_respond_error(req, 500, "internal", "cannot encode the answer");
        return;
    }
    h1_req_respond(req, status, "application/json", (const uint8_t *)text, strlen(text), NULL, 0);
    OPENSSL_cleanse(text, strlen(text)); /* may hold a freshly made token */
    cJSON_free(text);
}

/* ---- POST /admin/v1/tenants ---- */

struct tenant_req {
    struct h1_req *req;
    char name[STORE_MAX_TENANT_NAME + 1];
};

static void on_tenant_created(int err, const char *id, void *ud)
{
    struct tenant_req *r = ud;
    if (err) {
        h1_req_respond_error(r->req, 503, "unavailable", "storage unavailable");
    } else {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "id", id);
        cJSON_AddStringToObject(j, "name", r->name);
        respond_json(r->req, 201, j);
        cJSON_Delete(j);
        RT_LOG_I("admin.tenant", "tenant=%s created", id);
    }
    ens_free(r);
}

static void tenant_create(struct ens_sched_ctx *ctx, struct h1_req *req)
{
    struct span body = h1_req_body(req);
    cJSON *j = cJSON_ParseWithLength((const char *)body.p, body.len);
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "name"));
    cJSON *capj = cJSON_GetObjectItemCaseSensitive(j, "previewCap");
    cJSON *allow = cJSON_GetObjectItemCaseSensitive(j, "ewsAllow");
    const char *cap = capj ? cJSON_GetStringValue(capj) : "full";
    const char *bad = NULL;
    if (!cJSON_IsObject(j))
        bad = "body: expected a JSON object";
    else if (name == NULL || name[0] == '\0' || strlen(name) > STORE_MAX_TENANT_NAME)
        bad = "name";
    else if (cap == NULL ||
             (strcmp(cap, "full") != 0 && strcmp(cap, "sender") != 0 && strcmp(cap, "none") != 0))
        bad = "previewCap";
    else if (allow && !cJSON_IsNull(allow)) {
        if (!cJSON_IsArray(allow) || cJSON_GetArraySize(allow) > ADMIN_MAX_ALLOW)
            bad = "ewsAllow";
        cJSON *it;
        cJSON_ArrayForEach(it, allow)
        {
            const char *d = cJSON_GetStringValue(it);
            if (d == NULL || d[0] == '\0' || strlen(d) > 253 || strpbrk(d, " /:@"))
                bad = "ewsAllow";
        }
    }
    if (bad) {
        h1_req_respond_error(req, 422, "invalid_field", bad);
        cJSON_Delete(j);
        return;
    }
    char *allow_json = allow && cJSON_IsArray(allow) ? cJSON_PrintUnformatted(allow) : NULL;
    struct tenant_req *r = ens_calloc(1, sizeof(*r));
    r->req = req;
    snprintf(r->name, sizeof(r->name), "%s", name);
    int rc = store_tenant_create(ctx->store, name, cap, allow_json ? allow_json : "",
                                 (int64_t)time(NULL), deadline(ctx), on_tenant_created, r);
    if (allow_json)
        cJSON_free(allow_json);
    cJSON_Delete(j);
    if (rc)
        on_tenant_created(rc, NULL, r);
}

/* ---- POST /admin/v1/tenants/{id}/tokens ---- */

struct token_req {
    struct h1_req *req;
    struct ens_sched_ctx *ctx;
    char tenant[STORE_ID_CHARS + 1];
    char token[64]; /* secret until answered */
    uint8_t hash[32];
};

static void token_req_free(struct token_req *r)
{
    OPENSSL_cleanse(r->token, sizeof(r->token));
    ens_free(r);
}

static void on_token_added(int err, void *ud)
{
    struct token_req *r = ud;
    if (err) {
        h1_req_respond_error(r->req, 503, "unavailable", "storage unavailable");
    } else {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "token", r->token);
        respond_json(r->req, 201, j);
        cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "token");
        OPENSSL_cleanse(t->valuestring, strlen(t->valuestring));
        cJSON_Delete(j);
        RT_LOG_I("admin.token", "tenant=%s API token created", r->tenant);
    }
    token_req_free(r);
}

static void on_token_tenant(int err, struct store_tenant *t, void *ud)
{
    struct token_req *r = ud;
    store_tenant_free(t);
    if (err) {
        if (err == ENS_ENOTFOUND)
            h1_req_respond_error(r->req, 404, "not_found", "no such tenant");
        else
            h1_req_respond_error(r->req, 503, "unavailable", "storage unavailable");
        token_req_free(r);
        return;
    }
    char rnd[48];
    ens_random_id(32, rnd, sizeof(rnd));
    snprintf(r->token, sizeof(r->token), ADMIN_TOKEN_PREFIX "%s", rnd);
    OPENSSL_cleanse(rnd, sizeof(rnd));
    SHA256((const uint8_t *)r->token, strlen(r->token), r->hash);
    int rc =
        store_apitoken_add(r->ctx->store, r->tenant, r->hash, deadline(r->ctx), on_token_added, r);
    if (rc)
        on_token_added(rc, r);
}

static void token_create(struct ens_sched_ctx *ctx, struct h1_req *req, struct span tenant)
{
    if (tenant.len == 0 || tenant.len > STORE_ID_CHARS) {
        h1_req_respond_error(req, 404, "not_found", "no such tenant");
        return;
    }
    struct token_req *r = ens_calloc(1, sizeof(*r));
    r->req = req;
    r->ctx = ctx;
    memcpy(r->tenant, tenant.p, tenant.len);
    int rc = store_tenant_get(ctx->store, r->tenant, deadline(ctx), on_token_tenant, r);
    if (rc)
        on_token_tenant(rc, NULL, r);
}

/* ---- Mailboxes and devices ---- */

/* A look-up that ends in a message to a mailbox actor. */
struct lookup_req {
    struct h1_req *req;
    struct ens_sched_ctx *ctx;
    struct rt_msg *msg; /* an act_inspect_msg or act_device_msg, sent once the mailbox is known */
    struct act_reply_to *reply;
    char email[STORE_MAX_EMAIL + 1];
    char tenants[ADMIN_MAX_TENANT_SCAN][STORE_ID_CHARS + 1];
    size_t n_tenants, next_tenant;
};

static void lookup_fail(struct lookup_req *r, int status, const char *code, const char *message)
{
    h1_req_respond_error(r->req, status, code, message);
    rt_msg_free(r->msg);
    ens_free(r);
}

static void lookup_send(struct lookup_req *r, const char *uid)
{
    r->reply->req = r->req;
    r->reply->responder = r->ctx->responder;
    int rc = act_user_send(r->ctx->app, uid, r->msg);
    if (rc) {
        lookup_fail(r, 503, "unavailable", "the server is overloaded or stopping");
        return;
    }
    ens_free(r);
}

static void lookup_next_tenant(struct lookup_req *r);

static void on_uid(int err, const char *uid, void *ud)
{
    struct lookup_req *r = ud;
    if (err == 0) {
        lookup_send(r, uid);
        return;
    }
    if (err != ENS_ENOTFOUND) {
        lookup_fail(r, 503, "unavailable", "storage unavailable");
        return;
    }
    lookup_fail(r, 404, "not_found", "unknown id");
}

/* By address: a mailbox's id is derived from (tenant, address), so each
 * tenant is a candidate; the first whose mailbox exists answers. */
static void on_candidate(int err, struct store_user *u, void *ud)
{
    struct lookup_req *r = ud;
    if (err == 0) {
        char uid[STORE_ID_CHARS + 1];
        memcpy(uid, u->user_id, sizeof(uid));
        store_user_free(u);
        lookup_send(r, uid);
        return;
    }
    if (err != ENS_ENOTFOUND) {
        lookup_fail(r, 503, "unavailable", "storage unavailable");
        return;
    }
    lookup_next_tenant(r);
}

static void lookup_next_tenant(struct lookup_req *r)
{
    if (r->next_tenant >= r->n_tenants) {
        lookup_fail(r, 404, "not_found", "no mailbox with that address");
        return;
    }
    char uid[ENS_ID_CHARS + 1];
    ens_user_id(r->ctx->app->id_key, r->tenants[r->next_tenant++], span_cstr(r->email), uid);
    int rc = store_user_load(r->ctx->store, uid, deadline(r->ctx), on_candidate, r);
    if (rc)
        on_candidate(rc, NULL, r);
}

static void on_tenants(int err, const char *const *ids, size_t n, void *ud)
{
    struct lookup_req *r = ud;
    if (err) {
        lookup_fail(r, 503, "unavailable", "storage unavailable");
        return;
    }
    for (size_t i = 0; i < n && r->n_tenants < ADMIN_MAX_TENANT_SCAN; i++)
        snprintf(r->tenants[r->n_tenants++], sizeof(r->tenants[0]), "%s", ids[i]);
    lookup_next_tenant(r);
}

static struct lookup_req *lookup_new(struct ens_sched_ctx *ctx, struct h1_req *req,
                                     struct rt_msg *msg, struct act_reply_to *reply)
{
    struct lookup_req *r = ens_calloc(1, sizeof(*r));
    r->req = req;
    r->ctx = ctx;
    r->msg = msg;
    r->reply = reply;
    return r;
}

static int id_ok(struct span id)
{
    if (id.len != STORE_ID_CHARS)
        return 0;
    for (size_t i = 0; i < id.len; i++) {
        uint8_t c = id.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* query_param finds "name=" in a query string and percent-decodes its value
 * into |out|; 0 when absent, malformed or too long. */
static int query_param(struct span q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < q.len) {
        size_t end = i;
        while (end < q.len && q.p[end] != '&')
            end++;
        if (end - i > nl && memcmp(q.p + i, name, nl) == 0 && q.p[i + nl] == '=') {
            size_t o = 0;
            for (size_t k = i + nl + 1; k < end; k++) {
                uint8_t c = q.p[k];
                if (c == '%') {
                    static const char kHex[] = "0123456789abcdef0123456789ABCDEF";
                    if (k + 2 >= end) /* both hex digits must be inside the value */
                        return 0;
                    const char *h1 = memchr(kHex, q.p[k + 1], 32),
                               *h2 = memchr(kHex, q.p[k + 2], 32);
                    if (h1 == NULL || h2 == NULL)
                        return 0;
                    c = (uint8_t)((((h1 - kHex) & 15) << 4) | ((h2 - kHex) & 15));
                    k += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (c < 0x20 || o + 1 >= cap)
                    return 0;
                out[o++] = (char)c;
            }
            out[o] = '\0';
            return o > 0;
        }
        i = end + 1;
    }
    return 0;
}

static void users_get(struct ens_sched_ctx *ctx, struct h1_req *req, struct span id,
                      struct span query)
{
    struct act_inspect_msg *m = rt_msg_new(sizeof(*m), ACT_MSG_INSPECT);
    if (id.len) {
        if (!id_ok(id)) {
            rt_msg_free(&m->hdr);
            h1_req_respond_error(req, 404, "not_found", "unknown id");
            return;
        }
        char uid[STORE_ID_CHARS + 1];
        memcpy(uid, id.p, id.len);
        uid[id.len] = '\0';
        lookup_send(lookup_new(ctx, req, &m->hdr, &m->reply), uid);
        return;
    }
    struct lookup_req *r = lookup_new(ctx, req, &m->hdr, &m->reply);
    char tenant[STORE_ID_CHARS + 2];
    if (!query_param(query, "email", r->email, sizeof(r->email)) || strchr(r->email, '@') == NULL) {
        lookup_fail(r, 422, "invalid_field", "email");
        return;
    }
    if (query_param(query, "tenant", tenant, sizeof(tenant))) {
        if (!id_ok(span_cstr(tenant))) {
            lookup_fail(r, 404, "not_found", "unknown tenant");
            return;
        }
        memcpy(r->tenants[0], tenant, STORE_ID_CHARS + 1);
        r->n_tenants = 1;
        lookup_next_tenant(r);
        return;
    }
    int rc = store_tenant_list(ctx->store, deadline(ctx), on_tenants, r);
    if (rc)
        on_tenants(rc, NULL, 0, r);
}

static void device_op(struct ens_sched_ctx *ctx, struct h1_req *req, struct span id,
                      enum act_device_op op)
{
    if (!id_ok(id)) {
        h1_req_respond_error(req, 404, "not_found", "unknown device");
        return;
    }
    struct act_device_msg *m = rt_msg_new(sizeof(*m), ACT_MSG_DEVICE_OP);
    m->op = op;
    memcpy(m->device_id, id.p, id.len);
    struct lookup_req *r = lookup_new(ctx, req, &m->hdr, &m->reply);
    int rc = store_user_find_by_device(ctx->store, m->device_id, deadline(ctx), on_uid, r);
    if (rc)
        on_uid(rc == ENS_EINVAL ? ENS_ENOTFOUND : rc, NULL, r);
}

/* ---- GET /metrics ---- */

struct metric_row {
    const char *name;
    const char *labels;
    const char *help;
    size_t offset; /* into struct ens_counters */
};

#define COUNTER(field) offsetof(struct ens_counters, field)

static const struct metric_row kCounters[] = {
    {"ens_callbacks_total", "result=\"ok\"", "Exchange callbacks by answer", COUNTER(callbacks_ok)},
    {"ens_callbacks_total", "result=\"unsubscribe\"", NULL, COUNTER(callbacks_unsubscribe)},
    {"ens_callbacks_total", "result=\"malformed\"", NULL, COUNTER(callbacks_bad)},
    {"ens_actor_hibernations_total", "", "Mailbox actors passivated once their work was done",
     COUNTER(hibernations)},
    {"ens_callback_cred_reads_total", "",
     "Callbacks that read and opened the sealed credentials (the others needed no Exchange call "
     "and came with the token already proven)",
     COUNTER(callback_cred_reads)},
    {"ens_health_due_total", "", "Mailboxes the health index woke for a look at their subscription",
     COUNTER(health_due)},
    {"ens_enrollments_total", "kind=\"subscribe\"", "Device API enrollments", COUNTER(subscribes)},
    {"ens_enrollments_total", "kind=\"checkin\"", NULL, COUNTER(checkins)},
    {"ens_rate_limited_total", "limit=\"address\"",
     "Device API requests answered 429, by the limit they met",
     COUNTER(rate_limited[ENS_LIMIT_ADDRESS])},
    {"ens_rate_limited_total", "limit=\"token\"", NULL, COUNTER(rate_limited[ENS_LIMIT_TOKEN])},
    {"ens_rate_limited_total", "limit=\"mailbox\"", NULL, COUNTER(rate_limited[ENS_LIMIT_MAILBOX])},
    {"ens_enrollment_replays_total", "", "Enrollments refused because their JWE was seen before",
     COUNTER(replays)},
    {"ens_callbacks_total", "result=\"unavailable\"",
     "Exchange callbacks answered 503 (keys not loaded, Redis down, stopping): Exchange retries",
     COUNTER(callbacks_unjudged)},
};

static const char *const kEwsOps[ENS_EWS_OPS] = {"Subscribe", "GetItem", "GetFolder"};
static const char *const kEwsOutcomes[ENS_EWS_OUTCOMES] = {"ok", "auth_failed", "unreachable",
                                                           "error"};
static const char *const kSubStates[ENS_SUB_STATES] = {"none",  "subscribing", "active", "pending",
                                                       "stale", "lost",        "blocked"};

/* Redis statistics are per scheduler; each copies its own into atomics
 * every second (ensd.c), and this sums them. */
struct redis_row {
    const char *name;
    const char *help;
    size_t offset; /* into struct ens_sched_ctx */
};

static const struct redis_row kRedis[] = {
    {"ens_redis_round_trips_total", "Redis commands and transactions answered",
     offsetof(struct ens_sched_ctx, redis_round_trips)},
    {"ens_redis_errors_total", "Redis error replies and commands lost with a connection",
     offsetof(struct ens_sched_ctx, redis_errors)},
    {"ens_redis_timeouts_total", "Redis commands whose deadline passed",
     offsetof(struct ens_sched_ctx, redis_timeouts)},
};

static void metrics(struct ens_sched_ctx *ctx, struct h1_req *req)
{
    struct ens_app *app = ctx->app;
    struct ens_counters *k = &app->counters;
    struct rt_buf b;
    rt_buf_init(&b, ADMIN_MAX_METRICS);
    for (size_t i = 0; i < sizeof(kCounters) / sizeof(kCounters[0]); i++) {
        const struct metric_row *m = &kCounters[i];
        if (m->help)
            rt_buf_appendf(&b, "# HELP %s %s\n# TYPE %s counter\n", m->name, m->help, m->name);
        _Atomic uint64_t *v = (_Atomic uint64_t *)((char *)k + m->offset);
        unsigned long long n = atomic_load_explicit(v, memory_order_relaxed);
        if (m->labels[0])
            rt_buf_appendf(&b, "%s{%s} %llu\n", m->name, m->labels, n);
        else
            rt_buf_appendf(&b, "%s %llu\n", m->name, n);
    }
    static const char *const kProv[ENS_PUSH_PROVIDERS] = {"apns", "fcm"};
    static const char *const kOut[ENS_PUSH_OUTCOMES] = {"ok", "failed", "unregistered", "expired"};
    rt_buf_appendf(&b, "# HELP ens_pushes_total Pushes by provider and outcome\n"
                       "# TYPE ens_pushes_total counter\n");
    for (int pv = 0; pv < ENS_PUSH_PROVIDERS; pv++) {
        for (int o = 0; o < ENS_PUSH_OUTCOMES; o++)
            rt_buf_appendf(
                &b, "ens_pushes_total{provider=\"%s\",outcome=\"%s\"} %llu\n", kProv[pv], kOut[o],
                (unsigned long long)atomic_load_explicit(&k->pushes[pv][o], memory_order_relaxed));
    }
    rt_buf_appendf(&b, "# HELP ens_ews_calls_total Exchange calls by operation and outcome\n"
                       "# TYPE ens_ews_calls_total counter\n");
    for (int op = 0; op < ENS_EWS_OPS; op++) {
        for (int o = 0; o < ENS_EWS_OUTCOMES; o++)
            rt_buf_appendf(&b, "ens_ews_calls_total{op=\"%s\",outcome=\"%s\"} %llu\n", kEwsOps[op],
                           kEwsOutcomes[o],
                           (unsigned long long)atomic_load_explicit(&k->ews_calls[op][o],
                                                                    memory_order_relaxed));
    }
    rt_buf_appendf(&b, "# HELP ens_subscriptions Subscriptions of the resident mailboxes by state\n"
                       "# TYPE ens_subscriptions gauge\n");
    for (int st = 0; st < ENS_SUB_STATES; st++)
        rt_buf_appendf(
            &b, "ens_subscriptions{state=\"%s\"} %lld\n", kSubStates[st],
            (long long)atomic_load_explicit(&k->subs_by_state[st], memory_order_relaxed));
    for (size_t r = 0; r < sizeof(kRedis) / sizeof(kRedis[0]); r++) {
        uint64_t sum = 0;
        for (int i = 0; i < rt_nscheds(app->rt); i++) {
            struct ens_sched_ctx *c = rt_sched_data(rt_sched_at(app->rt, i));
            if (c)
                sum += atomic_load_explicit((_Atomic uint64_t *)((char *)c + kRedis[r].offset),
                                            memory_order_relaxed);
        }
        rt_buf_appendf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", kRedis[r].name,
                       kRedis[r].help, kRedis[r].name, kRedis[r].name, (unsigned long long)sum);
    }
    rt_buf_appendf(&b, "# HELP ens_redis_disconnects_total Redis connections torn down and "
                       "connection attempts failed, by reason; each is followed by a reconnect\n"
                       "# TYPE ens_redis_disconnects_total counter\n");
    for (int why = 0; why < ENS_REDIS_DROP_REASONS; why++) {
        uint64_t sum = 0;
        for (int i = 0; i < rt_nscheds(app->rt); i++) {
            struct ens_sched_ctx *c = rt_sched_data(rt_sched_at(app->rt, i));
            if (c)
                sum += atomic_load_explicit(&c->redis_drops[why], memory_order_relaxed);
        }
        rt_buf_appendf(&b, "ens_redis_disconnects_total{reason=\"%s\"} %llu\n",
                       store_drop_reason_name((enum store_drop_reason)why),
                       (unsigned long long)sum);
    }
    rt_buf_appendf(&b, "# HELP ens_redis_connected 1 while the scheduler's Redis connection is "
                       "ready\n# TYPE ens_redis_connected gauge\n");
    for (int i = 0; i < rt_nscheds(app->rt); i++) {
        struct ens_sched_ctx *c = rt_sched_data(rt_sched_at(app->rt, i));
        rt_buf_appendf(&b, "ens_redis_connected{sched=\"%d\"} %d\n", i,
                       c ? atomic_load_explicit(&c->redis_ready, memory_order_relaxed) : 0);
    }
    rt_histogram_render(&k->callback_to_push, "ens_callback_to_push_seconds",
                        "From an Exchange callback's arrival to APNs accepting its new-mail push",
                        &b);
    rt_buf_appendf(
        &b,
        "# HELP ens_actors_resident Mailbox actors in memory\n# TYPE ens_actors_resident gauge\n"
        "ens_actors_resident %zu\n",
        rt_keyed_resident(app->rt));
    size_t memo_entries = 0;
    uint64_t memo_evictions = 0;
    for (int i = 0; i < rt_nscheds(app->rt); i++) {
        struct ens_sched_ctx *c = rt_sched_data(rt_sched_at(app->rt, i));
        if (c == NULL)
            continue;
        memo_entries += atomic_load_explicit(&c->memo_entries, memory_order_relaxed);
        memo_evictions += atomic_load_explicit(&c->memo_evictions, memory_order_relaxed);
    }
    rt_buf_appendf(&b,
                   "# HELP ens_mailbox_cache_entries Passivated mailboxes whose memo (callback "
                   "token, last pushes) is in memory\n# TYPE ens_mailbox_cache_entries gauge\n"
                   "ens_mailbox_cache_entries %zu\n"
                   "# HELP ens_mailbox_cache_evictions_total Memos dropped to make room\n"
                   "# TYPE ens_mailbox_cache_evictions_total counter\n"
                   "ens_mailbox_cache_evictions_total %llu\n",
                   memo_entries, (unsigned long long)memo_evictions);
    struct rt_listen_stats ls;
    rt_listen_stats_get(&ls);
    rt_buf_appendf(&b,
                   "# HELP ens_connections_open Accepted connections not yet closed\n"
                   "# TYPE ens_connections_open gauge\nens_connections_open %llu\n"
                   "# HELP ens_connections_cap Open connections allowed per listener, from "
                   "RLIMIT_NOFILE\n# TYPE ens_connections_cap gauge\nens_connections_cap %u\n"
                   "# HELP ens_accept_paused Listeners not accepting right now\n"
                   "# TYPE ens_accept_paused gauge\nens_accept_paused %llu\n"
                   "# HELP ens_accept_pauses_total Episodes of paused accepting by cause\n"
                   "# TYPE ens_accept_pauses_total counter\n"
                   "ens_accept_pauses_total{reason=\"descriptors\"} %llu\n"
                   "ens_accept_pauses_total{reason=\"connections\"} %llu\n",
                   (unsigned long long)ls.open, rt_listen_conn_cap(), (unsigned long long)ls.paused,
                   (unsigned long long)ls.pauses_fd, (unsigned long long)ls.pauses_cap);
    rt_buf_appendf(
        &b,
        "# HELP ens_ready 1 when every scheduler reaches Redis and keys are loaded (as /ready)\n"
        "# TYPE ens_ready gauge\nens_ready %d\n",
        ens_app_keys(app) != NULL && ens_app_redis_down(app) < 0);
    h1_req_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len, NULL, 0);
    rt_buf_cleanup(&b);
}

void act_http_admin(struct h1_req *req, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    if (!admin_authorized(ctx->app, req)) {
        h1_req_respond_error(req, 401, "unauthorized", "missing or wrong admin token");
        return;
    }
    struct span t = h1_req_target(req), query = span_make(NULL, 0);
    for (size_t i = 0; i < t.len; i++) {
        if (t.p[i] == '?') {
            query = span_make(t.p + i + 1, t.len - i - 1);
            t.len = i;
            break;
        }
    }
    const char *method = h1_req_method(req);
    /* HEAD goes wherever GET does; the server sends the head alone. */
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0, del = strcmp(method, "DELETE") == 0;
    static const char kUsers[] = "/admin/v1/users", kDevices[] = "/admin/v1/devices/";
    size_t ul = sizeof(kUsers) - 1, dl = sizeof(kDevices) - 1;
    static const char kTenants[] = "/admin/v1/tenants";
    static const char kTokens[] = "/tokens";
    size_t tl = sizeof(kTenants) - 1, kl = sizeof(kTokens) - 1;
    if (span_eq(t, "/metrics") && get) {
        metrics(ctx, req);
    } else if (get && span_eq(t, kUsers)) {
        users_get(ctx, req, span_make(NULL, 0), query);
    } else if (get && t.len > ul + 1 && memcmp(t.p, kUsers, ul) == 0 && t.p[ul] == '/') {
        users_get(ctx, req, span_make(t.p + ul + 1, t.len - ul - 1), query);
    } else if (t.len > dl && memcmp(t.p, kDevices, dl) == 0 && (post || del)) {
        struct span rest = span_make(t.p + dl, t.len - dl);
        size_t slash = 0;
        while (slash < rest.len && rest.p[slash] != '/')
            slash++;
        struct span id = span_make(rest.p, slash);
        struct span verb = span_make(rest.p + slash, rest.len - slash);
        if (del && verb.len == 0)
            device_op(ctx, req, id, ACT_DEVICE_REMOVE);
        else if (post && span_eq(verb, "/block"))
            device_op(ctx, req, id, ACT_DEVICE_BLOCK);
        else if (post && span_eq(verb, "/unblock"))
            device_op(ctx, req, id, ACT_DEVICE_UNBLOCK);
        else
            h1_req_respond_error(req, 404, "not_found", "no such endpoint");
    } else if (span_eq(t, "/admin/v1/keys/rotate") && post) {
        act_admin_keys_rotate(ctx, req);
    } else if (span_eq(t, kTenants) && post) {
        tenant_create(ctx, req);
    } else if (post && t.len > tl + 1 + kl && memcmp(t.p, kTenants, tl) == 0 && t.p[tl] == '/' &&
               memcmp(t.p + t.len - kl, kTokens, kl) == 0) {
        token_create(ctx, req, span_make(t.p + tl + 1, t.len - tl - 1 - kl));
    } else if (span_has_prefix(t, "/admin/v1/")) {
        h1_req_respond_error(req, 501, "not_implemented",
                             "this admin endpoint is not implemented yet");
    } else {
        h1_req_respond_error(req, 404, "not_found", "no such endpoint");
    }
}
