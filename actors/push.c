#include "actors/push.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "actors/msgs.h"
#include "actors/user.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"

#define PUSH_BACKOFF_BASE_MS    1000
#define PUSH_BACKOFF_JITTER_PCT 20 /* each wait is the back-off +-20% (push.md 8) */

static const char *const kProviders[ENS_PUSH_PROVIDERS] = {"apns", "fcm"};

struct push_actor {
    struct ens_app *app;
    struct apns_client *apns; /* NULL when APNs is not configured */
    struct fcm_client *fcm;   /* NULL when FCM is not configured */
    rt_actor_id self;
    struct rt_actor *actor;
};

/* A push waiting for its retry timer. */
struct push_retry {
    uv_timer_t timer;
    struct push_actor *pa;
    struct act_push_msg *msg;
};

/* A push in flight at APNs or FCM. */
struct push_flight {
    struct push_actor *pa;
    struct act_push_msg *msg;
};

/* What one answer says, whichever service gave it. */
struct push_outcome {
    enum act_push_class cls;
    int status;
    const char *reason;
    uint32_t retry_after_s; /* 0 = our own back-off */
};

const char *act_push_class_name(enum act_push_class cls)
{
    static const char *const kNames[] = {"ok", "unregistered", "retry", "fatal"};
    return (unsigned)cls < 4 ? kNames[cls] : "unknown";
}

static void push_msg_free(struct rt_msg *m)
{
    struct act_push_msg *p = (struct act_push_msg *)m;
    ens_free(p->payload);
    ens_free(p);
}

struct act_push_msg *act_push_msg_new(const uint8_t *payload, size_t len)
{
    struct act_push_msg *p = rt_msg_new(sizeof(*p), ACT_MSG_PUSH);
    p->hdr.free = push_msg_free;
    p->payload = (uint8_t *)ens_memdup(payload, len);
    p->payload_len = len;
    return p;
}

static void push_report(struct push_actor *pa, const struct act_push_msg *p,
                        const struct push_outcome *o)
{
    struct ens_counters *c = &pa->app->counters;
    static const enum ens_push_outcome kOutcome[] = {
        [ACT_PUSH_OK] = ENS_PUSH_OUT_OK,
        [ACT_PUSH_UNREGISTERED] = ENS_PUSH_OUT_UNREGISTERED,
        [ACT_PUSH_RETRY] =
            ENS_PUSH_OUT_EXPIRED, /* a transient failure reported is one that expired */
        [ACT_PUSH_FATAL] = ENS_PUSH_OUT_FAILED,
    };
    enum ens_push_outcome out = kOutcome[o->cls];
    atomic_fetch_add_explicit(&c->pushes[p->provider][out], 1, memory_order_relaxed);
    if (o->cls == ACT_PUSH_OK && p->t0_ns)
        rt_histogram_observe(&c->callback_to_push, (double)(uv_hrtime() - p->t0_ns) / 1e9);
    RT_LOG_I("push.result",
             "user=%s device=%s provider=%s kind=%s id=%s status=%d reason=%s class=%s attempt=%d",
             p->uid, p->device_id, kProviders[p->provider], p->kind, p->apns_id, o->status,
             o->reason, act_push_class_name(o->cls), p->attempt);
    struct act_push_result_msg *r = rt_msg_new(sizeof(*r), ACT_MSG_PUSH_RESULT);
    snprintf(r->device_id, sizeof(r->device_id), "%s", p->device_id);
    snprintf(r->kind, sizeof(r->kind), "%s", p->kind);
    snprintf(r->reason, sizeof(r->reason), "%s", o->reason);
    r->cls = o->cls;
    r->status = o->status;
    if (act_user_send(pa->app, p->uid, &r->hdr) != 0)
        rt_msg_free(&r->hdr);
}

static void push_send(struct push_actor *pa, struct act_push_msg *p);

static void retry_close_cb(uv_handle_t *h)
{
    ens_free(h->data);
}

static void retry_fire_cb(uv_timer_t *t)
{
    struct push_retry *r = t->data;
    struct push_actor *pa = r->pa;
    struct act_push_msg *p = r->msg;
    uv_close((uv_handle_t *)&r->timer, retry_close_cb);
    push_send(pa, p);
}

/* backoff_ms is the wait before try |attempt| + 1: the service's Retry-After
 * when it gave one, else 1 s doubling per try, +-20% so that pushes failed
 * together do not come back together; never over |cap_ms|. */
static uint64_t backoff_ms(int attempt, uint32_t retry_after_s, uint64_t cap_ms)
{
    uint64_t d;
    if (retry_after_s) {
        d = (uint64_t)retry_after_s * 1000;
    } else {
        int shift = attempt > 1 ? attempt - 1 : 0;
        d = shift >= 32 ? cap_ms : (uint64_t)PUSH_BACKOFF_BASE_MS << shift;
        if (d > cap_ms)
            d = cap_ms;
        uint16_t r;
        RAND_bytes((uint8_t *)&r, sizeof(r));
        uint64_t span = d * 2 * PUSH_BACKOFF_JITTER_PCT / 100;
        d = d - d * PUSH_BACKOFF_JITTER_PCT / 100 + (span ? r % (span + 1) : 0);
    }
    return d > cap_ms ? cap_ms : d;
}

/* push_done takes a push's outcome: try it again later while it is worth
 * sending (push.expiry_s), or report it and free it. Bounded by time, not by
 * tries: a service that fails for minutes and then recovers loses nothing. */
static void push_done(struct push_actor *pa, struct act_push_msg *p, const struct push_outcome *o)
{
    uint64_t now = uv_now(rt_actor_loop(pa->actor));
    uint64_t delay =
        backoff_ms(p->attempt, o->retry_after_s, (uint64_t)pa->app->cfg->push.retry_max_ms);
    if (o->cls == ACT_PUSH_RETRY && now + delay < p->expires_ms) {
        RT_LOG_W("push.retry",
                 "user=%s device=%s provider=%s id=%s status=%d reason=%s attempt=%d "
                 "delay_ms=%llu",
                 p->uid, p->device_id, kProviders[p->provider], p->apns_id, o->status, o->reason,
                 p->attempt, (unsigned long long)delay);
        struct push_retry *r = ens_calloc(1, sizeof(*r));
        r->pa = pa;
        r->msg = p;
        uv_timer_init(rt_actor_loop(pa->actor), &r->timer);
        r->timer.data = r;
        uv_timer_start(&r->timer, retry_fire_cb, delay, 0);
        return;
    }
    struct push_outcome final = *o;
    if (o->cls == ACT_PUSH_RETRY)
        final.reason = "Expired"; /* transient until its expiry: counted as expired */
    push_report(pa, p, &final);
    rt_msg_free(&p->hdr);
}

/* The two services' classes onto ours: the same four outcomes. */
static const enum act_push_class kFromApns[] = {
    [APNS_OK] = ACT_PUSH_OK,
    [APNS_UNREGISTERED] = ACT_PUSH_UNREGISTERED,
    [APNS_RETRY] = ACT_PUSH_RETRY,
    [APNS_FATAL] = ACT_PUSH_FATAL,
};
static const enum act_push_class kFromFcm[] = {
    [FCM_OK] = ACT_PUSH_OK,
    [FCM_UNREGISTERED] = ACT_PUSH_UNREGISTERED,
    [FCM_RETRY] = ACT_PUSH_RETRY,
    [FCM_FATAL] = ACT_PUSH_FATAL,
};

static void on_apns_result(const struct apns_result *res, void *ud)
{
    struct push_flight *f = ud;
    struct push_actor *pa = f->pa;
    struct act_push_msg *p = f->msg;
    ens_free(f);
    if (res->err == ENS_ETIMEDOUT)
        p->timeouts++;
    struct push_outcome o = {
        .cls = kFromApns[res->cls],
        .status = res->status,
        .reason =
            res->reason && res->reason[0] ? res->reason : (res->err ? ens_err_name(res->err) : ""),
    };
    push_done(pa, p, &o);
}

static void on_fcm_result(const struct fcm_result *res, void *ud)
{
    struct push_flight *f = ud;
    struct push_actor *pa = f->pa;
    struct act_push_msg *p = f->msg;
    ens_free(f);
    if (res->err == ENS_ETIMEDOUT)
        p->timeouts++;
    const char *reason = res->error_code && res->error_code[0]       ? res->error_code
                         : res->error_status && res->error_status[0] ? res->error_status
                         : res->err                                  ? ens_err_name(res->err)
                                                                     : "";
    struct push_outcome o = {
        .cls = kFromFcm[res->cls],
        .status = res->status,
        .reason = reason,
        .retry_after_s = res->retry_after_s,
    };
    push_done(pa, p, &o);
}

/* push_send hands |p| (owned) to its service. */
static void push_send(struct push_actor *pa, struct act_push_msg *p)
{
    int configured = p->provider == ENS_PUSH_APNS ? pa->apns != NULL : pa->fcm != NULL;
    if (!configured) {
        struct push_outcome o = {ACT_PUSH_FATAL, 0, "NotConfigured", 0};
        push_report(pa, p, &o);
        rt_msg_free(&p->hdr);
        return;
    }
    p->attempt++;
    /* A try's deadline: the configured one, doubled per earlier timeout of
     * this push, never past the push's expiry. Past it the h2 client resets
     * the stream before the push is tried again. */
    uint64_t now = uv_now(rt_actor_loop(pa->actor));
    uint64_t factor = 1;
    for (int i = 0; i < p->timeouts && factor < ACT_PUSH_MAX_STREAM_FACTOR; i++)
        factor *= 2;
    uint64_t deadline = now + (uint64_t)pa->app->cfg->push.stream_timeout_ms * factor;
    if (deadline > p->expires_ms)
        deadline = p->expires_ms > now ? p->expires_ms : now + 1;
    struct push_flight *f = ens_calloc(1, sizeof(*f));
    f->pa = pa;
    f->msg = p;
    int rc;
    if (p->provider == ENS_PUSH_APNS) {
        struct apns_push ap = {
            .device_token_hex = p->token,
            .topic = p->topic,
            .push_type = p->push_type,
            .priority = p->priority,
            .environment = p->environment,
            .payload = p->payload,
            .payload_len = p->payload_len,
            .apns_id = p->apns_id,
            .collapse_id = p->apns_id,
            .expiration_s = p->expires_unix,
            .deadline_ms = deadline,
        };
        rc = apns_send(pa->apns, &ap, on_apns_result, f);
    } else {
        struct fcm_push fp = {
            .payload = p->payload, .payload_len = p->payload_len, .deadline_ms = deadline};
        rc = fcm_send(pa->fcm, &fp, on_fcm_result, f);
    }
    if (rc) {
        ens_free(f);
        struct push_outcome o = {ACT_PUSH_FATAL, 0, ens_err_name(rc), 0};
        push_report(pa, p, &o);
        rt_msg_free(&p->hdr);
    }
}

static void push_receive(struct rt_actor *a, struct rt_msg *m)
{
    struct push_actor *pa = rt_actor_state(a);
    pa->actor = a;
    if (m->type != ACT_MSG_PUSH) {
        rt_msg_free(m);
        return;
    }
    struct act_push_msg *p = (struct act_push_msg *)m;
    uint64_t expiry_ms = (uint64_t)pa->app->cfg->push.expiry_s * 1000;
    p->expires_ms = uv_now(rt_actor_loop(a)) + expiry_ms;
    p->expires_unix = (uint64_t)time(NULL) + (uint64_t)pa->app->cfg->push.expiry_s;
    /* One id for every try: APNs echoes it, and as the collapse id it makes a
     * device show a push tried twice once. FCM pushes carry it in logs only. */
    apns_id_new(p->apns_id);
    push_send(pa, p);
}

static void push_destroy(struct rt_actor *a)
{
    struct push_actor *pa = rt_actor_state(a);
    apns_client_free(pa->apns);
    fcm_client_free(pa->fcm);
    ens_free(pa);
}

static const struct rt_actor_type kPushActor = {"push", push_receive, push_destroy};

int act_push_start(struct ens_app *app, struct rt_sched *s)
{
    const struct ens_config *cfg = app->cfg;
    struct push_actor *pa = ens_calloc(1, sizeof(*pa));
    pa->app = app;
    char err[256];
    /* Accepted by the configuration (API.md 5) but not built yet: say so
     * rather than ignore them silently. */
    if (cfg->apns.cert_file)
        RT_LOG_W("push.start",
                 "apns.cert_file is set but certificate authentication is not "
                 "implemented: use token authentication (apns.key_file, team_id, key_id)");
    if (cfg->apns.connections > 1)
        RT_LOG_I("push.start",
                 "apns.connections=%d: one connection per APNs environment is used "
                 "for now",
                 cfg->apns.connections);
    if (cfg->apns.key_file && cfg->apns.team_id && cfg->apns.key_id) {
        struct apns_opts o = {
            .url = cfg->apns.url,
            .sandbox_url = cfg->apns.sandbox_url,
            .team_id = cfg->apns.team_id,
            .key_id = cfg->apns.key_id,
            .key_file = cfg->apns.key_file,
            .ca_file = cfg->apns.ca_file,
        };
        pa->apns = apns_client_new(rt_sched_loop(s), &o, err, sizeof(err));
        if (pa->apns == NULL) {
            RT_LOG_E("push.start", "APNs client: %s", err);
            ens_free(pa);
            return ENS_ECONFIG;
        }
    } else {
        RT_LOG_W(
            "push.start",
            "apns.key_file, apns.team_id and apns.key_id are not all set: iOS pushes will fail");
    }
    if (cfg->fcm.service_account_file) {
        struct fcm_opts o = {
            .url = cfg->fcm.url,
            .token_url = cfg->fcm.token_url,
            .service_account_file = cfg->fcm.service_account_file,
            .ca_file = cfg->fcm.ca_file,
        };
        pa->fcm = fcm_client_new(rt_sched_loop(s), &o, err, sizeof(err));
        if (pa->fcm == NULL) {
            RT_LOG_E("push.start", "FCM client: %s", err);
            apns_client_free(pa->apns);
            ens_free(pa);
            return ENS_ECONFIG;
        }
    } else {
        RT_LOG_W("push.start", "fcm.service_account_file is not set: Android pushes will fail");
    }
    int rc = rt_spawn(app->rt, rt_sched_index(s), &kPushActor, pa, &pa->self);
    if (rc) {
        apns_client_free(pa->apns);
        fcm_client_free(pa->fcm);
        ens_free(pa);
        return rc;
    }
    app->push_actor = pa->self;
    return 0;
}
