/* The user actor. See user.h for its role; this file is its state machine.
 *
 * Every message is handled with the actor suspended, and each handler ends in
 * exactly one user_done(), which resumes it. Between the two the handler may
 * wait for Redis or Exchange any number of times; the continuation is the next
 * function of the chain, never a nested callback. */
#include "actors/user.h"

#include "actors/health.h"
#include "actors/memo.h"
#include "persistence/store_health.h"
#include "runtime/b64.h"
#include "runtime/clock.h"

#include <cjson/cJSON.h>
#include <openssl/mem.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "actors/ews.h"
#include "actors/keys.h"
#include "actors/msgs.h"
#include "actors/push.h"
#include "protocols/apns.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/ratelimit.h"

#define USER_MAX_SOAP (64 * 1024)

struct user;
typedef void (*user_step_fn)(struct user *u, int err);

struct fetched_item {
    char *sender;
    char *subject;
};

struct user {
    struct ens_app *app;
    char uid[ENS_ID_CHARS + 1];
    struct rt_actor *actor;
    struct store_user *rec;      /* NULL until loaded */
    int persisted;               /* rec exists in Redis */
    struct rt_msg *cur;          /* the message being handled */
    struct rt_timer *idle_timer; /* passivation once the work is done */

    /* Memory only, never Redis: the token of the current subscription, so the
     * actor can repair the subscription itself (ARCHITECTURE.md). While the
     * actor is passivated these wait in its scheduler's memo cache. */
    struct seal_token token;
    int has_token;
    uint64_t last_checkin_push_ms;

    int counted_state; /* the state this mailbox adds to subs_by_state, or -1 */

    uint64_t recent[ACT_USER_RECENT_ITEMS]; /* hashes of item ids already pushed */
    size_t recent_next, recent_count;

    /* The operation in progress. */
    struct {
        struct rt_buf creds; /* secret: opened or enrolled credentials */
        struct rt_buf soap;
        struct seal_token token; /* secret: a subscription being created */
        struct rt_buf blob;
        char old_cred_id[STORE_CRED_ID_CHARS + 1];
        char new_cred_id[STORE_CRED_ID_CHARS + 1];
        char device_key[64]; /* secret: returned once to a new device */
        char removed[STORE_MAX_DEVICES][STORE_ID_CHARS + 1];
        size_t n_removed;
        int used_watermark;
        uint16_t fp;
        user_step_fn then;       /* continuation after a subscribe */
        user_step_fn saved_then; /* continuation after a save */
        char *items[ACT_USER_MAX_FETCH];
        size_t n_items;
        struct fetched_item fetched[ACT_USER_MAX_FETCH];
        size_t n_fetched;
        int badge_changed;
        uint64_t t0_ns; /* when the callback being handled arrived (uv_hrtime) */
        int gap;        /* PreviousWatermark did not match: events were missed */
        char gap_watermark[STORE_MAX_WATERMARK + 1]; /* the last one we did get */
        const char *fail_code; /* static API error code of a failed subscribe */
        const char *fail_message;
    } op;
};

/* ---- Messages ---- */

static void enroll_msg_free(struct rt_msg *m)
{
    struct act_enroll_msg *e = (struct act_enroll_msg *)m;
    rt_buf_cleanup_secret(&e->creds);
    ens_free(e);
}

struct act_enroll_msg *act_enroll_msg_new(void)
{
    struct act_enroll_msg *e = rt_msg_new(sizeof(*e), ACT_MSG_ENROLL);
    e->hdr.free = enroll_msg_free;
    rt_buf_init_secret(&e->creds, SEAL_MAX_CREDS);
    return e;
}

static void callback_msg_free(struct rt_msg *m)
{
    struct act_callback_msg *c = (struct act_callback_msg *)m;
    seal_token_cleanup(&c->token);
    soap_notification_batch_cleanup(&c->batch);
    ens_free(c);
}

struct act_callback_msg *act_callback_msg_new(void)
{
    struct act_callback_msg *c = rt_msg_new(sizeof(*c), ACT_MSG_CALLBACK);
    c->hdr.free = callback_msg_free;
    return c;
}

/* ---- Helpers ---- */

/* user_store returns this scheduler's Redis connection, or NULL once the
 * scheduler is shutting down; every caller treats NULL as "unavailable". */
static struct store *user_store(void)
{
    return ens_sched_ctx_current()->store;
}

/* STORE_CALL runs a store call when the store still exists, else yields
 * ENS_ESTORE without calling, so shutdown never touches a freed store. */
#define STORE_CALL(fn, ...) (user_store() ? fn(user_store(), __VA_ARGS__) : ENS_ESTORE)

static uint64_t user_deadline(struct user *u)
{
    return uv_now(rt_actor_loop(u->actor)) + ENS_STORE_DEADLINE_MS;
}

static int64_t wall_now(void)
{
    return rt_wall_ms() / 1000;
}

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char kHex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = kHex[p[i] >> 4];
        out[2 * i + 1] = kHex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void op_reset(struct user *u)
{
    rt_buf_cleanup_secret(&u->op.creds);
    rt_buf_cleanup(&u->op.soap);
    rt_buf_cleanup(&u->op.blob);
    seal_token_cleanup(&u->op.token);
    OPENSSL_cleanse(u->op.device_key, sizeof(u->op.device_key));
    for (size_t i = 0; i < u->op.n_items; i++)
        ens_free(u->op.items[i]);
    for (size_t i = 0; i < u->op.n_fetched; i++) {
        ens_free(u->op.fetched[i].sender);
        ens_free(u->op.fetched[i].subject);
    }
    memset(&u->op, 0, sizeof(u->op));
    rt_buf_init_secret(&u->op.creds, SEAL_MAX_CREDS);
    rt_buf_init(&u->op.soap, USER_MAX_SOAP);
    rt_buf_init(&u->op.blob, STORE_MAX_CRED_BLOB);
}

/* gauge_sync moves this mailbox between the subscriptions-by-state gauges
 * after every message, so no state change can be missed. */
static void gauge_sync(struct user *u)
{
    int now = u->rec && u->persisted ? (int)u->rec->sub.state : -1;
    if (now == u->counted_state)
        return;
    _Atomic int64_t *g = u->app->counters.subs_by_state;
    if (u->counted_state >= 0)
        atomic_fetch_sub_explicit(&g[u->counted_state], 1, memory_order_relaxed);
    if (now >= 0 && now < ENS_SUB_STATES)
        atomic_fetch_add_explicit(&g[now], 1, memory_order_relaxed);
    u->counted_state = now < ENS_SUB_STATES ? now : -1;
}

/* user_done ends the handling of the current message and resumes delivery. */
static void user_done(struct user *u)
{
    gauge_sync(u);
    rt_msg_free(u->cur);
    u->cur = NULL;
    op_reset(u);
    rt_actor_resume(u->actor);
}

static const struct act_reply_to *cur_reply(struct user *u)
{
    if (u->cur == NULL)
        return NULL;
    switch (u->cur->type) {
    case ACT_MSG_ENROLL:
        return &((struct act_enroll_msg *)u->cur)->reply;
    case ACT_MSG_CALLBACK:
        return &((struct act_callback_msg *)u->cur)->reply;
    case ACT_MSG_DEVICE_OP:
        return &((struct act_device_msg *)u->cur)->reply;
    case ACT_MSG_INSPECT:
        return &((struct act_inspect_msg *)u->cur)->reply;
    default:
        return NULL;
    }
}

static void reply_error(struct user *u, int status, const char *code, const char *message)
{
    const struct act_reply_to *to = cur_reply(u);
    if (to && to->req) {
        act_reply_error(u->app->rt, to, status, code, message);
        ((struct act_reply_to *)to)->req = NULL; /* answered */
    }
}

/* reply_error_to answers a request that is not the enrollment or callback kind. */
static void reply_error_to(struct user *u, struct act_reply_to *to, int status, const char *code,
                           const char *message)
{
    if (to->req) {
        act_reply_error(u->app->rt, to, status, code, message);
        to->req = NULL;
    }
}

static int device_active_count(const struct store_user *rec)
{
    int n = 0;
    for (size_t i = 0; i < rec->n_devices; i++)
        n += !rec->devices[i].blocked;
    return n;
}

static void on_health_written(int err, void *ud)
{
    (void)ud;
    /* The next callback writes it again; a subscription with no callback
     * left is found by its devices' next check-in. */
    if (err)
        RT_LOG_W("user.health", "health index not written: %s", ens_err_name(err));
}

/* health_write sets when the health index wakes this mailbox (UNIX ms).
 * Fire and forget: the answer may come after the actor has left memory, so
 * nothing of the actor is passed along. */
static void health_write(struct user *u, int64_t due_ms)
{
    STORE_CALL(store_health_set, u->uid, due_ms, user_deadline(u), on_health_written, NULL);
}

static void health_forget(struct user *u)
{
    STORE_CALL(store_health_del, u->uid, user_deadline(u), on_health_written, NULL);
}

/* status_due_ms is when a status event is overdue: 2 x StatusFrequency after
 * the last callback, plus slack (UNIX ms). */
static int64_t status_due_ms(const struct store_sub *sub)
{
    int64_t freq = sub->status_frequency_min ? sub->status_frequency_min : 5;
    return sub->last_status_at * 1000 + 2 * freq * 60 * 1000 + ACT_USER_STATUS_SLACK_MS;
}

/* health_arm expects the next status event of the active subscription. */
static void health_arm(struct user *u)
{
    health_write(u, status_due_ms(&u->rec->sub));
}

/* health_recheck wakes a stale or lost mailbox again when its devices may be
 * asked to check in once more. */
static void health_recheck(struct user *u)
{
    health_write(u, rt_wall_ms() + ACT_USER_CHECKIN_EVERY_MS);
}

static uint64_t item_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *id; id++) {
        h ^= (uint8_t)*id;
        h *= 0x100000001b3ULL;
    }
    return h ? h : 1;
}

static int item_seen(struct user *u, const char *id)
{
    uint64_t h = item_hash(id);
    for (size_t i = 0; i < ACT_USER_RECENT_ITEMS; i++) {
        if (u->recent[i] == h)
            return 1;
    }
    return 0;
}

static void item_remember(struct user *u, const char *id)
{
    u->recent[u->recent_next] = item_hash(id);
    u->recent_next = (u->recent_next + 1) % ACT_USER_RECENT_ITEMS;
    if (u->recent_count < ACT_USER_RECENT_ITEMS)
        u->recent_count++;
}

/* ---- Saving ---- */

static void on_saved(int err, void *ud)
{
    struct user *u = ud;
    if (err) {
        RT_LOG_W("user.save", "user=%s err=%s", u->uid, ens_err_name(err));
    } else {
        u->persisted = 1;
    }
    u->op.saved_then(u, err);
}

/* user_save writes the record in one transaction, then continues with |then|. */
static void user_save(struct user *u, user_step_fn then)
{
    u->rec->updated_at = wall_now();
    u->op.saved_then = then;
    const char *removed[STORE_MAX_DEVICES];
    for (size_t i = 0; i < u->op.n_removed; i++)
        removed[i] = u->op.removed[i];
    int rc = STORE_CALL(store_user_save, u->rec, removed, u->op.n_removed, user_deadline(u),
                        on_saved, u);
    if (rc)
        then(u, rc);
}

static void on_cred_deleted(int err, void *ud)
{
    (void)ud;
    if (err)
        RT_LOG_W("user.cred", "stale credential blob not deleted: %s", ens_err_name(err));
}

static void cred_delete(struct user *u, const char *cred_id)
{
    if (cred_id[0] == '\0')
        return;
    /* Best effort: an orphaned blob opens nothing without its token. */
    STORE_CALL(store_cred_del, u->uid, cred_id, user_deadline(u), on_cred_deleted, NULL);
}

static void step_finish(struct user *u, int err)
{
    (void)err;
    user_done(u);
}

/* ---- Pushes ---- */

_Static_assert(APNS_PREVIEW_FULL == (int)FCM_PREVIEW_FULL &&
                   APNS_PREVIEW_SENDER == (int)FCM_PREVIEW_SENDER &&
                   APNS_PREVIEW_NONE == (int)FCM_PREVIEW_NONE,
               "payload_new_mail passes one preview level to both services");

static enum apns_preview preview_parse(const char *s)
{
    if (strcmp(s, "none") == 0)
        return APNS_PREVIEW_NONE;
    if (strcmp(s, "sender") == 0)
        return APNS_PREVIEW_SENDER;
    return APNS_PREVIEW_FULL;
}

static int is_ios(const struct store_device *d)
{
    return strcmp(d->platform, "ios") == 0;
}

/* push_to_device hands one payload for |d| to the push actor. */
static void push_to_device(struct user *u, const struct store_device *d, const char *kind,
                           const char *push_type, int priority, const struct rt_buf *payload)
{
    struct act_push_msg *p = act_push_msg_new(payload->data, payload->len);
    p->provider = is_ios(d) ? ENS_PUSH_APNS : ENS_PUSH_FCM;
    snprintf(p->uid, sizeof(p->uid), "%s", u->uid);
    snprintf(p->device_id, sizeof(p->device_id), "%s", d->device_id);
    snprintf(p->token, sizeof(p->token), "%.*s", (int)sizeof(p->token) - 1, d->push_token);
    snprintf(p->topic, sizeof(p->topic), "%s", d->app_id);
    snprintf(p->environment, sizeof(p->environment), "%s", d->environment);
    snprintf(p->push_type, sizeof(p->push_type), "%s", push_type);
    snprintf(p->kind, sizeof(p->kind), "%s", kind);
    p->priority = priority;
    p->t0_ns = strcmp(kind, "new-mail") == 0 ? u->op.t0_ns : 0;
    if (rt_send(u->app->rt, u->app->push_actor, &p->hdr) != 0)
        rt_msg_free(&p->hdr);
}

static uint32_t badge_value(const struct user *u)
{
    return (uint32_t)(u->rec->badge > 0 ? u->rec->badge : 0);
}

/* Each kind of push, for each platform: the payload is the only difference. */
static int payload_new_mail(const struct user *u, const struct store_device *d, const void *arg,
                            struct rt_buf *out)
{
    const struct fetched_item *it = arg;
    enum apns_preview pv = preview_parse(d->preview);
    const char *sender = it->sender ? it->sender : "", *subject = it->subject ? it->subject : "";
    if (is_ios(d)) {
        struct apns_new_mail nm = {u->uid, sender, subject, pv, d->badge, badge_value(u)};
        return apns_payload_new_mail(out, &nm);
    }
    /* the two preview enums list the same three levels in the same order */
    struct fcm_new_mail nm = {d->push_token,        u->uid,   sender,        subject,
                              (enum fcm_preview)pv, d->badge, badge_value(u)};
    return fcm_payload_new_mail(out, &nm);
}

static int payload_badge(const struct user *u, const struct store_device *d, const void *arg,
                         struct rt_buf *out)
{
    (void)arg;
    return is_ios(d) ? apns_payload_badge(out, badge_value(u))
                     : fcm_payload_badge(out, d->push_token, badge_value(u));
}

static int payload_checkin(const struct user *u, const struct store_device *d, const void *arg,
                           struct rt_buf *out)
{
    (void)u, (void)arg;
    return is_ios(d) ? apns_payload_checkin(out) : fcm_payload_checkin(out, d->push_token);
}

struct push_kind {
    const char *name;
    const char *apns_push_type;
    int priority; /* APNs; FCM's priority is inside its payload */
    int needs_badge_pref;
    int (*build)(const struct user *u, const struct store_device *d, const void *arg,
                 struct rt_buf *out);
};

static const struct push_kind kNewMail = {"new-mail", "alert", 10, 0, payload_new_mail};
static const struct push_kind kBadge = {"badge", "alert", 5, 1, payload_badge};
static const struct push_kind kCheckin = {"checkin", "background", 5, 0, payload_checkin};

/* push_all sends one kind of push to every unblocked device that wants it. */
static void push_all(struct user *u, const struct push_kind *k, const void *arg)
{
    for (size_t i = 0; i < u->rec->n_devices; i++) {
        const struct store_device *d = &u->rec->devices[i];
        if (d->blocked || (k->needs_badge_pref && !d->badge))
            continue;
        struct rt_buf payload;
        rt_buf_init(&payload,
                    APNS_MAX_PAYLOAD > FCM_MAX_PAYLOAD ? APNS_MAX_PAYLOAD : FCM_MAX_PAYLOAD);
        if (k->build(u, d, arg, &payload) == 0)
            push_to_device(u, d, k->name, k->apns_push_type, k->priority, &payload);
        else
            RT_LOG_W("push.build", "user=%s device=%s kind=%s: payload not built", u->uid,
                     d->device_id, k->name);
        rt_buf_cleanup(&payload);
    }
}

static void push_new_mail(struct user *u, const struct fetched_item *it)
{
    push_all(u, &kNewMail, it);
}

static void push_badge(struct user *u)
{
    push_all(u, &kBadge, NULL);
}

static void push_checkin(struct user *u)
{
    uint64_t now = uv_now(rt_actor_loop(u->actor));
    if (u->last_checkin_push_ms && now - u->last_checkin_push_ms < ACT_USER_CHECKIN_EVERY_MS)
        return;
    u->last_checkin_push_ms = now;
    push_all(u, &kCheckin, NULL);
}

/* ---- Subscribing (enrollment and self-repair) ---- */

static void subscribe_send(struct user *u);

static void subscribe_fail(struct user *u, int status, const char *code, const char *message)
{
    cred_delete(u, u->op.new_cred_id);
    RT_LOG_W("ews.subscribe", "user=%s failed: %s (%s)", u->uid, code, message);
    u->op.fail_code = code;
    u->op.fail_message = message;
    u->op.then(u, status);
}

static void on_subscribed_saved(struct user *u, int err);

/* The response codes with which Exchange says "these credentials have no
 * business with that mailbox" (not a transient failure). */
static const char *const kMismatchCodes[] = {
    "ErrorAccessDenied",
    "ErrorNonExistentMailbox",
    "ErrorFolderNotFound",
    "ErrorSubscriptionDelegateAccessNotSupported",
    "ErrorInvalidSmtpAddress",
    "ErrorImpersonateUserDenied",
    "ErrorMailboxConfiguration",
    "ErrorNotDelegate",
    "ErrorSubscriptionAccessDenied",
};

static int ews_code_is_mismatch(const char *code)
{
    for (size_t i = 0; code && i < sizeof(kMismatchCodes) / sizeof(kMismatchCodes[0]); i++) {
        if (strcmp(code, kMismatchCodes[i]) == 0)
            return 1;
    }
    return 0;
}

/* ews_failure names a call that got no EWS answer to read: refused
 * credentials, or no Exchange at all. Static strings. */
static void ews_failure(int err, const char **code, const char **message)
{
    int auth = err == ENS_EAUTH;
    *code = auth ? "ews_auth_failed" : "ews_unreachable";
    *message = auth ? "Exchange refused the credentials" : "Exchange could not be reached";
}

static void on_subscribe_answer(const struct ews_result *r, void *ud)
{
    struct user *u = ud;
    const char *code, *msg;
    if (r->err && r->err != ENS_EREMOTE) {
        ews_failure(r->err, &code, &msg);
        subscribe_fail(u, 502, code, msg);
        return;
    }
    struct soap_ews_subscribe_resp resp = {0};
    int rc = r->err ? r->err : soap_ews_subscribe_parse(r->body, &resp);
    if (rc == 0 && resp.st.cls != SOAP_EWS_SUCCESS && resp.st.code &&
        strcmp(resp.st.code, "ErrorInvalidWatermark") == 0 && u->op.used_watermark) {
        /* The watermark is too old to replay from: start afresh. */
        soap_ews_subscribe_resp_cleanup(&resp);
        RT_LOG_W("ews.subscribe", "user=%s watermark refused, subscribing without it", u->uid);
        u->rec->sub.watermark[0] = '\0';
        subscribe_send(u);
        return;
    }
    if (rc == 0 && resp.st.cls == SOAP_EWS_ERROR && ews_code_is_mismatch(resp.st.code)) {
        RT_LOG_W("ews.subscribe", "user=%s Exchange refused the mailbox: %s", u->uid, resp.st.code);
        soap_ews_subscribe_resp_cleanup(&resp);
        subscribe_fail(u, 403, "mailbox_mismatch",
                       "the credentials do not prove this mailbox (email)");
        return;
    }
    if (rc || resp.st.cls == SOAP_EWS_ERROR || resp.subscription_id == NULL) {
        RT_LOG_W("ews.subscribe", "user=%s Exchange answered %s", u->uid,
                 rc ? "something unreadable" : (resp.st.code ? resp.st.code : "an error"));
        soap_ews_subscribe_resp_cleanup(&resp);
        subscribe_fail(u, 502, "ews_error", "Exchange refused the subscription");
        return;
    }
    struct store_sub *sub = &u->rec->sub;
    snprintf(u->op.old_cred_id, sizeof(u->op.old_cred_id), "%s", sub->cred_id);
    snprintf(sub->id, sizeof(sub->id), "%s", resp.subscription_id);
    if (resp.watermark)
        snprintf(sub->watermark, sizeof(sub->watermark), "%s", resp.watermark);
    snprintf(sub->cred_id, sizeof(sub->cred_id), "%s", u->op.new_cred_id);
    sub->sealing_kid = u->op.token.skid;
    sub->state = STORE_SUB_ACTIVE;
    sub->status_frequency_min = (uint32_t)u->app->cfg->ews.status_frequency_min;
    sub->created_at = sub->last_status_at = wall_now();
    u->rec->cred_fp = u->op.fp;
    soap_ews_subscribe_resp_cleanup(&resp);
    /* The new token becomes the one kept in memory for self-repair. */
    seal_token_cleanup(&u->token);
    u->token = u->op.token;
    u->has_token = 1;
    RT_LOG_I("ews.subscribe", "user=%s subscription active", u->uid);
    user_save(u, on_subscribed_saved);
}

static void on_subscribed_saved(struct user *u, int err)
{
    if (err) {
        /* Exchange has a subscription we could not record; its callbacks will
         * not match and will be answered Unsubscribe, which ends it. */
        subscribe_fail(u, 503, "unavailable", "storage unavailable");
        return;
    }
    if (strcmp(u->op.old_cred_id, u->op.new_cred_id) != 0)
        cred_delete(u, u->op.old_cred_id);
    health_arm(u);
    u->op.then(u, 0);
}

static void subscribe_send(struct user *u)
{
    char token[SEAL_TOKEN_CHARS + 1];
    char url[sizeof(u->app->callback_base) + SEAL_TOKEN_CHARS + 1];
    seal_token_encode(&u->op.token, token);
    snprintf(url, sizeof(url), "%s%s", u->app->callback_base, token);
    OPENSSL_cleanse(token, sizeof(token));
    rt_buf_reset(&u->op.soap);
    const char *wm = u->rec->sub.watermark[0] ? u->rec->sub.watermark : NULL;
    u->op.used_watermark = wm != NULL;
    int rc = soap_ews_subscribe_build(&u->op.soap, u->rec->email, url,
                                      u->app->cfg->ews.status_frequency_min, wm);
    OPENSSL_cleanse(url, sizeof(url));
    if (rc == 0)
        rc =
            ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_SUBSCRIBE, u->rec->ews_url,
                     u->rec->email, rt_buf_span(&u->op.creds), &u->op.soap, on_subscribe_answer, u);
    if (rc)
        subscribe_fail(u, 502, "ews_error", "cannot build the Subscribe request");
}

static void on_cred_put(int err, void *ud)
{
    struct user *u = ud;
    if (err) {
        u->op.new_cred_id[0] = '\0';
        subscribe_fail(u, 503, "unavailable", "storage unavailable");
        return;
    }
    subscribe_send(u);
}

/* user_subscribe creates a new Exchange subscription with u->op.creds: seal
 * the credentials under a fresh token, store the blob, then Subscribe (from the
 * last watermark, so nothing between the old and new one is missed). Ends in
 * u->op.then(u, 0 or an HTTP status). */
static void user_subscribe(struct user *u, user_step_fn then)
{
    u->op.then = then;
    struct act_keyset *ks = ens_app_keys(u->app);
    if (ks == NULL) {
        then(u, 503);
        return;
    }
    struct rt_buf raw;
    rt_buf_init(&raw, 32);
    int rc = b64_decode(&raw, span_cstr(u->uid), 1);
    if (rc == 0 && raw.len != SEAL_UID_BYTES)
        rc = ENS_EPARSE;
    if (rc == 0)
        rc = seal_token_new(ks->seal_kid, raw.data, &u->op.token);
    rt_buf_cleanup(&raw);
    if (rc == 0)
        rc = seal_creds(&u->op.token, ks->seal_key, rt_buf_span(&u->op.creds), &u->op.blob);
    if (rc) {
        then(u, 503);
        return;
    }
    hex_encode(u->op.token.cred_id, SEAL_CRED_ID_BYTES, u->op.new_cred_id);
    u->rec->sub.state = STORE_SUB_SUBSCRIBING;
    rc = STORE_CALL(store_cred_put, u->uid, u->op.new_cred_id, u->op.blob.data, u->op.blob.len,
                    user_deadline(u), on_cred_put, u);
    if (rc) {
        u->op.new_cred_id[0] = '\0';
        then(u, 503);
    }
}

/* ---- Enrollment ---- */

static void enroll_answer(struct user *u, int status)
{
    struct act_enroll_msg *e = (struct act_enroll_msg *)u->cur;
    if (status == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "userId", u->uid);
        cJSON_AddStringToObject(j, "deviceId", e->dev.device_id);
        if (u->op.device_key[0])
            cJSON_AddStringToObject(j, "deviceKey", u->op.device_key);
        cJSON *sub = cJSON_AddObjectToObject(j, "subscription");
        cJSON_AddStringToObject(sub, "state", store_sub_state_name(u->rec->sub.state));
        act_reply_json(u->app->rt, &e->reply, 200, j);
        /* cJSON holds a copy of the device key: wipe it before freeing */
        cJSON *dk = cJSON_GetObjectItemCaseSensitive(j, "deviceKey");
        if (dk && dk->valuestring)
            OPENSSL_cleanse(dk->valuestring, strlen(dk->valuestring));
        cJSON_Delete(j);
        e->reply.req = NULL;
        RT_LOG_I("user.enroll", "user=%s device=%s %s state=%s", u->uid, e->dev.device_id,
                 e->checkin ? "checkin" : "subscribe", store_sub_state_name(u->rec->sub.state));
    }
    user_done(u);
}

static void on_enroll_saved(struct user *u, int err)
{
    if (err) {
        reply_error(u, 503, "unavailable", "storage unavailable; nothing was changed");
        /* what we hold in memory may be ahead of Redis: reload next time */
        store_user_free(u->rec);
        u->rec = NULL;
        user_done(u);
        return;
    }
    enroll_answer(u, 0);
}

static void on_enroll_subscribed(struct user *u, int status)
{
    if (status == 0) {
        /* already saved by the subscribe chain */
        enroll_answer(u, 0);
        return;
    }
    if (u->op.fail_code)
        reply_error(u, status, u->op.fail_code, u->op.fail_message);
    else
        reply_error(u, 503, "unavailable", "storage or keys unavailable; nothing was changed");
    /* Nothing of this enrollment was written: forget the in-memory changes. */
    store_user_free(u->rec);
    u->rec = NULL;
    user_done(u);
}

/* enroll_forget ends a refused enrollment: nothing of it was written, so the
 * in-memory record is dropped and the next message reloads it. */
static void enroll_forget(struct user *u)
{
    store_user_free(u->rec);
    u->rec = NULL;
    user_done(u);
}

/* device_unchanged: every field the device sends is what is stored. */
static int device_unchanged(const struct store_device *d, const struct store_device *n)
{
    return strcmp(d->client_id, n->client_id) == 0 && strcmp(d->platform, n->platform) == 0 &&
           strcmp(d->push_token, n->push_token) == 0 && strcmp(d->app_id, n->app_id) == 0 &&
           strcmp(d->environment, n->environment) == 0 && strcmp(d->preview, n->preview) == 0 &&
           d->badge == n->badge;
}

/* enroll_is_repeat decides the one case that skips Exchange: the same device,
 * unchanged, with the very credentials that last proved it (a fingerprint of 0
 * means never proved), on a healthy subscription. The 16-bit fingerprint only
 * makes repeats cheap; a device it would admit must already be in. */
static int enroll_is_repeat(const struct user *u, const struct act_enroll_msg *e,
                            const struct store_device *d)
{
    const struct store_user *rec = u->rec;
    return d && d->cred_fp != 0 && d->cred_fp == u->op.fp && device_unchanged(d, &e->dev) &&
           rec->sub.state == STORE_SUB_ACTIVE && rec->sub.id[0] &&
           strcmp(rec->ews_url, e->ews_url) == 0 && strcmp(rec->auth_type, e->auth_type) == 0;
}

/* enroll_apply writes the proven enrollment into the record, then saves it or,
 * when the subscription needs them, subscribes with the new credentials. */
static void enroll_apply(struct user *u)
{
    struct act_enroll_msg *e = (struct act_enroll_msg *)u->cur;
    struct store_user *rec = u->rec;
    if (!u->persisted) {
        snprintf(rec->user_id, sizeof(rec->user_id), "%s", u->uid);
        snprintf(rec->tenant_id, sizeof(rec->tenant_id), "%s", e->tenant_id);
        snprintf(rec->email, sizeof(rec->email), "%s", e->email);
        rec->created_at = e->now;
        rec->sub.state = STORE_SUB_NONE;
    }
    struct store_device *d = store_user_find_device(rec, e->dev.device_id);
    if (d == NULL) {
        d = store_user_add_device(rec);
        *d = e->dev;
        d->created_at = e->now;
        ens_random_id(32, u->op.device_key, sizeof(u->op.device_key));
        ens_sha256_hex(span_cstr(u->op.device_key), d->key_hash);
    } else {
        char key_hash[sizeof(d->key_hash)];
        int64_t created = d->created_at, last_at = d->last_push_at;
        char last_res[sizeof(d->last_push_result)];
        memcpy(key_hash, d->key_hash, sizeof(key_hash));
        memcpy(last_res, d->last_push_result, sizeof(last_res));
        *d = e->dev;
        memcpy(d->key_hash, key_hash, sizeof(key_hash));
        memcpy(d->last_push_result, last_res, sizeof(last_res));
        d->created_at = created;
        d->last_push_at = last_at;
    }
    d->cred_fp = u->op.fp;
    int url_changed = strcmp(rec->ews_url, e->ews_url) != 0;
    snprintf(rec->ews_url, sizeof(rec->ews_url), "%s", e->ews_url);
    snprintf(rec->auth_type, sizeof(rec->auth_type), "%s", e->auth_type);
    int healthy = rec->sub.state == STORE_SUB_ACTIVE && rec->sub.id[0] && !url_changed &&
                  rec->cred_fp == u->op.fp;
    if (healthy) {
        user_save(u, on_enroll_saved);
        return;
    }
    user_subscribe(u, on_enroll_subscribed);
}

/* on_enroll_verified judges the ownership probe: the named mailbox's Inbox and
 * the credentials' own Inbox must be one folder. A delegate's credentials open
 * the first but own another; a stranger's open neither. */
static void on_enroll_verified(const struct ews_result *r, void *ud)
{
    struct user *u = ud;
    const char *code = NULL, *msg = NULL;
    if (r->err && r->err != ENS_EREMOTE) {
        ews_failure(r->err, &code, &msg);
        reply_error(u, 502, code, msg);
        enroll_forget(u);
        return;
    }
    struct soap_ews_getfolder_resp resp = {0};
    int rc = r->err ? r->err : soap_ews_getfolder_parse(r->body, &resp);
    const struct soap_ews_folder *named = &resp.folders[0], *own = &resp.folders[1];
    int status = 0;
    if (rc || resp.st.fault || resp.n_folders != 2) {
        status = 502, code = "ews_error", msg = "Exchange could not confirm the mailbox";
    } else if (named->st.cls == SOAP_EWS_ERROR && !ews_code_is_mismatch(named->st.code)) {
        status = 502, code = "ews_error", msg = "Exchange could not confirm the mailbox";
    } else if (named->st.cls == SOAP_EWS_ERROR || own->st.cls == SOAP_EWS_ERROR ||
               !named->folder_id || !own->folder_id ||
               strcmp(named->folder_id, own->folder_id) != 0) {
        status = 403, code = "mailbox_mismatch", msg = "the credentials do not prove this mailbox";
    }
    if (status) {
        RT_LOG_W("user.enroll", "user=%s refused: %s (Exchange said %s)", u->uid, code,
                 rc ? "something unreadable"
                    : (named->st.code ? named->st.code : (resp.st.code ? resp.st.code : "-")));
        soap_ews_getfolder_resp_cleanup(&resp);
        reply_error(u, status, code, msg);
        enroll_forget(u);
        return;
    }
    if (named->has_unread_count)
        u->rec->badge = (int)named->unread_count;
    soap_ews_getfolder_resp_cleanup(&resp);
    enroll_apply(u);
}

static void on_enroll(struct user *u, struct rt_msg *m)
{
    struct act_enroll_msg *e = (struct act_enroll_msg *)m;
    struct store_user *rec = u->rec;
    if (u->persisted && strcmp(rec->tenant_id, e->tenant_id) != 0) {
        /* ids are derived per tenant, so this is a broken invariant, not a user error */
        reply_error(u, 503, "unavailable", "mailbox record does not match its tenant");
        user_done(u);
        return;
    }
    struct store_device *d = u->persisted ? store_user_find_device(rec, e->dev.device_id) : NULL;
    if (d && d->blocked) {
        reply_error(u, 403, "device_blocked", "this device was blocked by an operator");
        user_done(u);
        return;
    }
    if (d == NULL && e->checkin) {
        reply_error(u, 404, "not_found", "unknown device: subscribe first");
        user_done(u);
        return;
    }
    if (d == NULL && rec->n_devices >= STORE_MAX_DEVICES) {
        reply_error(u, 422, "invalid_field", "device: this mailbox has too many devices");
        user_done(u);
        return;
    }
    u->op.fp = ens_cred_fingerprint(u->app->fp_key, rt_buf_span(&e->creds));
    if (enroll_is_repeat(u, e, d)) {
        /* Idempotent: nothing to ask Exchange, only timestamps change. */
        user_save(u, on_enroll_saved);
        return;
    }
    /* Every try that Exchange must judge counts against the mailbox, whoever
     * sends it: online password guessing gets a handful of guesses a minute,
     * while proven devices checking in (above) are never held back. */
    uint64_t wait_ms = rt_ratelimit_take(u->app->limits[ENS_LIMIT_MAILBOX], span_cstr(u->uid),
                                         uv_now(rt_actor_loop(u->actor)));
    if (wait_ms) {
        atomic_fetch_add_explicit(&u->app->counters.rate_limited[ENS_LIMIT_MAILBOX], 1,
                                  memory_order_relaxed);
        const struct act_reply_to *to = cur_reply(u);
        act_reply_error_retry(u->app->rt, to, 429, "rate_limited",
                              "too many enrollments for this mailbox; retry later",
                              (uint32_t)((wait_ms + 999) / 1000));
        ((struct act_reply_to *)to)->req = NULL;
        user_done(u);
        return;
    }
    if (rt_buf_append_span(&u->op.creds, rt_buf_span(&e->creds)) != 0) {
        reply_error(u, 422, "invalid_field", "auth: too large");
        user_done(u);
        return;
    }
    /* Nothing is written before Exchange says these credentials own the mailbox. */
    rt_buf_reset(&u->op.soap);
    int rc = soap_ews_getfolder_build(&u->op.soap, e->email, 1);
    if (rc == 0)
        rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_GETFOLDER, e->ews_url, e->email,
                      rt_buf_span(&u->op.creds), &u->op.soap, on_enroll_verified, u);
    if (rc) {
        reply_error(u, 502, "ews_error", "cannot build the request to Exchange");
        enroll_forget(u);
    }
}

/* ---- Exchange callbacks ---- */

static void callback_answer(struct user *u, int unsubscribe, const char *why)
{
    struct act_callback_msg *c = (struct act_callback_msg *)u->cur;
    struct span body = soap_notification_result(unsubscribe);
    act_reply(u->app->rt, &c->reply, 200, "text/xml; charset=utf-8", body.p, body.len);
    c->reply.req = NULL;
    struct ens_counters *k = &u->app->counters;
    if (unsubscribe) {
        atomic_fetch_add_explicit(&k->callbacks_unsubscribe, 1, memory_order_relaxed);
        RT_LOG_I("ews.callback", "user=%s answer=Unsubscribe reason=%s", u->uid, why);
    } else {
        atomic_fetch_add_explicit(&k->callbacks_ok, 1, memory_order_relaxed);
    }
}

static void after_fetch(struct user *u);
static void on_repair_subscribed(struct user *u, int status);

/* callback_finish ends a callback's handling: normally a save; after a
 * watermark gap, a new subscription from the last watermark we did get, so
 * Exchange replays what was missed (the recent-items ring drops repeats). */
static void callback_finish(struct user *u)
{
    if (u->op.gap) {
        snprintf(u->rec->sub.watermark, sizeof(u->rec->sub.watermark), "%s", u->op.gap_watermark);
        user_subscribe(u, on_repair_subscribed);
        return;
    }
    user_save(u, step_finish);
}

static void on_getfolder(const struct ews_result *r, void *ud)
{
    struct user *u = ud;
    struct soap_ews_getfolder_resp resp = {0};
    if (r->err == 0 && soap_ews_getfolder_parse(r->body, &resp) == 0 && resp.has_unread_count) {
        if (u->rec->badge != (int)resp.unread_count)
            u->op.badge_changed = 1;
        u->rec->badge = (int)resp.unread_count;
    } else {
        RT_LOG_W("ews.getfolder", "user=%s unread count unavailable (%s)", u->uid,
                 r->api_error ? r->api_error : "unparsable");
    }
    soap_ews_getfolder_resp_cleanup(&resp);
    after_fetch(u);
}

static void fetch_badge(struct user *u)
{
    rt_buf_reset(&u->op.soap);
    int rc = soap_ews_getfolder_build(&u->op.soap, u->rec->email, 0);
    if (rc == 0)
        rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_GETFOLDER, u->rec->ews_url,
                      u->rec->email, rt_buf_span(&u->op.creds), &u->op.soap, on_getfolder, u);
    if (rc)
        after_fetch(u);
}

static void on_getitem(const struct ews_result *r, void *ud)
{
    struct user *u = ud;
    if (r->err == ENS_EAUTH) {
        RT_LOG_W("ews.getitem", "user=%s credentials refused: subscription lost", u->uid);
        u->rec->sub.state = STORE_SUB_LOST;
        push_checkin(u);
        health_recheck(u);
        user_save(u, step_finish);
        return;
    }
    struct soap_ews_getitem_resp resp = {0};
    if (r->err == 0 && soap_ews_getitem_parse(r->body, &resp) == 0) {
        for (size_t i = 0; i < resp.n_items && u->op.n_fetched < ACT_USER_MAX_FETCH; i++) {
            struct soap_ews_item *it = &resp.items[i];
            if (it->st.cls != SOAP_EWS_SUCCESS || it->is_read == 1)
                continue; /* gone (moved by a rule) or already read elsewhere */
            struct fetched_item *f = &u->op.fetched[u->op.n_fetched++];
            const char *sender = it->from_name && it->from_name[0] ? it->from_name : it->from_email;
            f->sender = ens_strdup(sender ? sender : "");
            f->subject = ens_strdup(it->subject ? it->subject : "");
        }
    } else {
        RT_LOG_W("ews.getitem", "user=%s fetch failed (%s)", u->uid,
                 r->api_error ? r->api_error : "unparsable");
    }
    soap_ews_getitem_resp_cleanup(&resp);
    fetch_badge(u);
}

static void after_fetch(struct user *u)
{
    for (size_t i = 0; i < u->op.n_fetched; i++)
        push_new_mail(u, &u->op.fetched[i]);
    if (u->op.n_fetched == 0 && u->op.badge_changed)
        push_badge(u);
    u->rec->counters.notifications += u->op.n_fetched;
    callback_finish(u);
}

static void on_repair_subscribed(struct user *u, int status)
{
    if (status)
        RT_LOG_W("ews.repair", "user=%s self-repair failed (status %d)", u->uid, status);
    else
        RT_LOG_I("ews.repair", "user=%s subscription re-created from the last watermark", u->uid);
    if (status) {
        u->rec->sub.state = STORE_SUB_STALE;
        push_checkin(u);
        health_recheck(u);
        user_save(u, step_finish);
        return;
    }
    user_done(u);
}

static void callback_process(struct user *u)
{
    struct act_callback_msg *c = (struct act_callback_msg *)u->cur;
    struct store_user *rec = u->rec;
    int error_seen = 0;
    u->op.t0_ns = c->t0_ns;
    uint32_t folder_unread = 0;
    int have_folder_unread = 0;
    for (size_t i = 0; i < c->batch.n_msgs; i++) {
        struct soap_notification_msg *nm = &c->batch.msgs[i];
        if (nm->cls == SOAP_EWS_ERROR)
            error_seen = 1;
        struct soap_notification *n = nm->notification;
        if (n == NULL)
            continue;
        if (n->previous_watermark && rec->sub.watermark[0] && !u->op.gap &&
            strcmp(n->previous_watermark, rec->sub.watermark) != 0) {
            RT_LOG_W("ews.callback", "user=%s watermark gap: a notification was missed", u->uid);
            u->op.gap = 1;
            snprintf(u->op.gap_watermark, sizeof(u->op.gap_watermark), "%s", rec->sub.watermark);
        }
        for (size_t k = 0; k < n->n_events; k++) {
            struct soap_event *ev = &n->events[k];
            if (ev->watermark)
                snprintf(rec->sub.watermark, sizeof(rec->sub.watermark), "%s", ev->watermark);
            if (ev->type == SOAP_EVENT_NEW_MAIL && ev->item_id && !item_seen(u, ev->item_id) &&
                u->op.n_items < ACT_USER_MAX_FETCH) {
                item_remember(u, ev->item_id);
                u->op.items[u->op.n_items++] = ens_strdup(ev->item_id);
            } else if (ev->type == SOAP_EVENT_MODIFIED && ev->folder_id && ev->has_unread_count) {
                folder_unread = ev->unread_count;
                have_folder_unread = 1;
            }
        }
    }
    rec->counters.callbacks++;
    rec->sub.last_status_at = wall_now();
    if (error_seen) {
        /* Exchange deletes a subscription after an Error notification:
         * re-create it now, while we hold the credentials. */
        RT_LOG_W("ews.callback", "user=%s Error notification: re-creating the subscription",
                 u->uid);
        rec->sub.state = STORE_SUB_LOST;
        user_subscribe(u, on_repair_subscribed);
        return;
    }
    if (rec->sub.state != STORE_SUB_ACTIVE)
        rec->sub.state = STORE_SUB_ACTIVE;
    health_arm(u);
    if (u->op.n_items) {
        rt_buf_reset(&u->op.soap);
        int rc =
            soap_ews_getitem_build(&u->op.soap, (const char *const *)u->op.items, u->op.n_items);
        if (rc == 0)
            rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_GETITEM, rec->ews_url,
                          rec->email, rt_buf_span(&u->op.creds), &u->op.soap, on_getitem, u);
        if (rc == 0)
            return;
        RT_LOG_W("ews.getitem", "user=%s cannot start the fetch: %s", u->uid, ens_err_name(rc));
    }
    if (have_folder_unread && (int)folder_unread != rec->badge) {
        rec->badge = (int)folder_unread;
        push_badge(u);
    }
    callback_finish(u);
}

static void on_callback_cred(int err, struct span blob, void *ud)
{
    struct user *u = ud;
    struct act_callback_msg *c = (struct act_callback_msg *)u->cur;
    struct act_keyset *ks = ens_app_keys(u->app);
    const uint8_t *key = act_keyset_seal_key(ks, c->token.skid);
    int rc = err ? err : (key ? seal_open_creds(&c->token, key, blob, &u->op.creds) : ENS_ECRYPTO);
    if (err == ENS_ESTORE || err == ENS_ETIMEDOUT || err == ENS_ECANCELED || ks == NULL) {
        /* Not Unsubscribe (the subscription is fine) and not OK (the events
         * would be lost): Exchange resends the same notification later. */
        RT_LOG_W("ews.callback", "user=%s %s: asking Exchange to retry", u->uid,
                 ks ? "Redis unavailable" : "keys not loaded");
        atomic_fetch_add_explicit(&u->app->counters.callbacks_unjudged, 1, memory_order_relaxed);
        reply_error(u, 503, "unavailable", "storage unavailable");
        user_done(u);
        return;
    }
    if (rc) {
        callback_answer(u, 1, err ? "credentials gone" : "token does not open");
        user_done(u);
        return;
    }
    /* Exchange gets its answer now; the fetch and the pushes follow. */
    callback_answer(u, 0, NULL);
    seal_token_cleanup(&u->token);
    u->token = c->token;
    u->has_token = 1;
    callback_process(u);
}

/* batch_needs_creds tells whether handling |c| may call Exchange, which
 * needs the opened credentials: new mail to fetch, an Error notification or a
 * watermark gap (both re-subscribe). Status events and folder changes do not.
 * More than one notification is judged as needing them, since the watermark
 * chain is followed only while processing. */
static int batch_needs_creds(struct user *u, const struct act_callback_msg *c)
{
    if (c->batch.n_msgs != 1)
        return 1;
    const struct soap_notification_msg *nm = &c->batch.msgs[0];
    const struct soap_notification *n = nm->notification;
    if (nm->cls == SOAP_EWS_ERROR || n == NULL)
        return 1;
    const char *wm = u->rec->sub.watermark;
    if (n->previous_watermark && wm[0] && strcmp(n->previous_watermark, wm) != 0)
        return 1;
    for (size_t k = 0; k < n->n_events; k++) {
        const struct soap_event *ev = &n->events[k];
        if (ev->type == SOAP_EVENT_NEW_MAIL && ev->item_id && !item_seen(u, ev->item_id))
            return 1;
    }
    return 0;
}

static void on_callback(struct user *u, struct rt_msg *m)
{
    struct act_callback_msg *c = (struct act_callback_msg *)m;
    struct store_user *rec = u->rec;
    char cred_id[STORE_CRED_ID_CHARS + 1];
    hex_encode(c->token.cred_id, SEAL_CRED_ID_BYTES, cred_id);
    const char *why = NULL;
    if (!u->persisted)
        why = "unknown mailbox";
    else if (rec->sub.cred_id[0] == '\0' || strcmp(cred_id, rec->sub.cred_id) != 0)
        why = "not the current subscription";
    else if (device_active_count(rec) == 0)
        why = "no active device";
    for (size_t i = 0; why == NULL && i < c->batch.n_msgs; i++) {
        struct soap_notification *n = c->batch.msgs[i].notification;
        if (n && n->subscription_id && strcmp(n->subscription_id, rec->sub.id) != 0)
            why = "superseded subscription id";
    }
    if (why) {
        callback_answer(u, 1, why);
        user_done(u);
        return;
    }
    if (u->has_token && seal_token_equal(&c->token, &u->token) && !batch_needs_creds(u, c)) {
        /* The token already opened this subscription's credentials, and
         * nothing here calls Exchange: no blob read, no decryption. Most
         * callbacks are status events and take this way. */
        callback_answer(u, 0, NULL);
        callback_process(u);
        return;
    }
    atomic_fetch_add_explicit(&u->app->counters.callback_cred_reads, 1, memory_order_relaxed);
    int rc = STORE_CALL(store_cred_get, u->uid, cred_id, user_deadline(u), on_callback_cred, u);
    if (rc)
        on_callback_cred(rc, span_make(NULL, 0), u);
}

/* ---- Push results and timers ---- */

static void on_push_result(struct user *u, struct rt_msg *m)
{
    struct act_push_result_msg *r = (struct act_push_result_msg *)m;
    struct store_device *d = u->persisted ? store_user_find_device(u->rec, r->device_id) : NULL;
    if (d == NULL) {
        user_done(u);
        return;
    }
    d->last_push_at = wall_now();
    snprintf(d->last_push_result, sizeof(d->last_push_result), "%.*s",
             (int)sizeof(d->last_push_result) - 1,
             r->cls == ACT_PUSH_OK ? "ok"
                                   : (r->reason[0] ? r->reason : act_push_class_name(r->cls)));
    if (r->cls == ACT_PUSH_OK)
        u->rec->counters.pushes_ok++;
    else
        u->rec->counters.pushes_failed++;
    if (r->cls == ACT_PUSH_UNREGISTERED) {
        RT_LOG_I("user.device", "user=%s device=%s removed: the push service says %s", u->uid,
                 d->device_id, r->reason);
        snprintf(u->op.removed[0], sizeof(u->op.removed[0]), "%s", d->device_id);
        u->op.n_removed = 1;
        store_user_remove_device(u->rec, r->device_id);
    }
    user_save(u, step_finish);
}

static void on_repair_cred(int err, struct span blob, void *ud)
{
    struct user *u = ud;
    const uint8_t *key = act_keyset_seal_key(ens_app_keys(u->app), u->token.skid);
    int rc = err ? err : (key ? seal_open_creds(&u->token, key, blob, &u->op.creds) : ENS_ECRYPTO);
    if (rc) {
        on_repair_subscribed(u, 503);
        return;
    }
    user_subscribe(u, on_repair_subscribed);
}

/* on_health_due: the health index says this mailbox is due a look. It judges
 * for itself, since a callback may have come after the index was read. */
static void on_health_due(struct user *u, struct rt_msg *m)
{
    (void)m;
    struct store_user *rec = u->rec;
    enum store_sub_state st = u->persisted ? rec->sub.state : STORE_SUB_NONE;
    if (st != STORE_SUB_ACTIVE && st != STORE_SUB_STALE && st != STORE_SUB_LOST) {
        /* Nothing to watch (ended, blocked, or the mailbox is gone): without
         * this the lease would bring it back every minute. */
        health_forget(u);
        user_done(u);
        return;
    }
    if (st == STORE_SUB_ACTIVE && status_due_ms(&rec->sub) > rt_wall_ms()) {
        health_arm(u); /* a status event came meanwhile: not overdue yet */
        user_done(u);
        return;
    }
    if (st == STORE_SUB_LOST) {
        /* Exchange ended it: only a check-in with credentials helps. */
        push_checkin(u);
        health_recheck(u);
        user_done(u);
        return;
    }
    RT_LOG_W("ews.status", "user=%s no status from Exchange in time", u->uid);
    if (u->has_token && device_active_count(rec) > 0) {
        /* Self-repair first: re-create from the last watermark with the token
         * we still hold. */
        int rc = STORE_CALL(store_cred_get, u->uid, rec->sub.cred_id, user_deadline(u),
                            on_repair_cred, u);
        if (rc == 0)
            return;
    }
    rec->sub.state = STORE_SUB_STALE;
    push_checkin(u);
    health_recheck(u);
    user_save(u, step_finish);
}

/* memo_key is the mailbox id as the memo cache keys it (decoded); 0 or -1. */
static int memo_key(const char *uid, uint8_t key[ACT_MEMO_KEY_SIZE])
{
    struct rt_buf b;
    rt_buf_init(&b, 32);
    int rc = b64_decode(&b, span_cstr(uid), 1);
    if (rc == 0 && b.len == ACT_MEMO_KEY_SIZE)
        memcpy(key, b.data, ACT_MEMO_KEY_SIZE);
    else
        rc = -1;
    rt_buf_cleanup(&b);
    return rc;
}

/* memo_save leaves what must outlive the actor in its scheduler's cache. */
static void memo_save(struct user *u)
{
    struct ens_sched_ctx *ctx = ens_sched_ctx_current();
    uint8_t key[ACT_MEMO_KEY_SIZE];
    if (ctx == NULL || ctx->memo == NULL || memo_key(u->uid, key) != 0)
        return;
    if (!u->has_token && u->last_checkin_push_ms == 0 && u->recent_count == 0)
        return; /* nothing worth a slot */
    struct act_memo m;
    memset(&m, 0, sizeof(m));
    m.has_token = (uint8_t)u->has_token;
    if (u->has_token)
        m.token = u->token;
    for (size_t i = 0; i < ACT_MEMO_RECENT; i++) /* the newest, oldest first */
        m.recent[i] = u->recent[(u->recent_next + ACT_USER_RECENT_ITEMS - ACT_MEMO_RECENT + i) %
                                ACT_USER_RECENT_ITEMS];
    m.last_checkin_ms = u->last_checkin_push_ms;
    act_memo_put(ctx->memo, key, &m);
    OPENSSL_cleanse(&m, sizeof(m));
}

static void memo_restore(struct user *u, struct ens_sched_ctx *ctx)
{
    uint8_t key[ACT_MEMO_KEY_SIZE];
    struct act_memo m;
    if (ctx == NULL || ctx->memo == NULL || memo_key(u->uid, key) != 0 ||
        !act_memo_take(ctx->memo, key, &m))
        return;
    u->has_token = m.has_token;
    if (m.has_token)
        u->token = m.token;
    for (size_t i = 0; i < ACT_MEMO_RECENT; i++) {
        if (m.recent[i] == 0)
            continue;
        u->recent[u->recent_next] = m.recent[i];
        u->recent_next = (u->recent_next + 1) % ACT_USER_RECENT_ITEMS;
        u->recent_count++;
    }
    u->last_checkin_push_ms = m.last_checkin_ms;
    OPENSSL_cleanse(&m, sizeof(m));
}

/* on_idle: the work is done; the actor leaves memory unless messages came
 * meanwhile (they go first, and each re-arms the timer). */
static void on_idle(struct user *u, struct rt_msg *m)
{
    (void)m;
    user_done(u);
    if (rt_actor_passivate(u->actor) != 0)
        return;
    memo_save(u);
    atomic_fetch_add_explicit(&u->app->counters.hibernations, 1, memory_order_relaxed);
}

/* ---- Devices: unsubscribe, block, unblock, remove ---- */

/* end_subscription forgets the mailbox's subscription once no device may
 * receive anything: Exchange's next callback no longer matches and is answered
 * Unsubscribe (push subscriptions cannot be ended any other way). The last
 * watermark stays, so a later re-subscription misses nothing. */
static void end_subscription(struct user *u, enum store_sub_state state)
{
    struct store_sub *sub = &u->rec->sub;
    snprintf(u->op.old_cred_id, sizeof(u->op.old_cred_id), "%s", sub->cred_id);
    sub->id[0] = '\0';
    sub->cred_id[0] = '\0';
    sub->state = state;
    seal_token_cleanup(&u->token);
    u->has_token = 0;
    health_forget(u);
    RT_LOG_I("user.subscription", "user=%s subscription ended (%s)", u->uid,
             store_sub_state_name(state));
}

static void on_device_saved(struct user *u, int err)
{
    struct act_device_msg *d = (struct act_device_msg *)u->cur;
    if (err) {
        reply_error_to(u, &d->reply, 503, "unavailable",
                       "storage unavailable; nothing was changed");
        store_user_free(u->rec);
        u->rec = NULL;
        user_done(u);
        return;
    }
    cred_delete(u, u->op.old_cred_id);
    cJSON *j = cJSON_CreateObject();
    if (d->op == ACT_DEVICE_BLOCK || d->op == ACT_DEVICE_UNBLOCK) {
        cJSON_AddStringToObject(j, "deviceId", d->device_id);
        cJSON_AddBoolToObject(j, "blocked", d->op == ACT_DEVICE_BLOCK);
    } else {
        cJSON_AddBoolToObject(j, "removed", 1);
    }
    act_reply_json(u->app->rt, &d->reply, 200, j);
    d->reply.req = NULL;
    cJSON_Delete(j);
    user_done(u);
}

static void on_device_op(struct user *u, struct rt_msg *m)
{
    static const char *const kOpNames[] = {"unsubscribe", "block", "unblock", "remove"};
    struct act_device_msg *d = (struct act_device_msg *)m;
    struct store_device *dev = u->persisted ? store_user_find_device(u->rec, d->device_id) : NULL;
    /* A device of another tenant is as unknown as a missing one. */
    if (dev == NULL ||
        (d->op == ACT_DEVICE_UNSUBSCRIBE && strcmp(u->rec->tenant_id, d->tenant_id) != 0)) {
        reply_error_to(u, &d->reply, 404, "not_found", "unknown device");
        user_done(u);
        return;
    }
    if (d->op == ACT_DEVICE_UNSUBSCRIBE &&
        !ens_consttime_eq((const uint8_t *)dev->key_hash, (const uint8_t *)d->key_hash,
                          STORE_KEY_HASH_CHARS)) {
        reply_error_to(u, &d->reply, 403, "forbidden", "wrong deviceKey");
        user_done(u);
        return;
    }
    int had_active = device_active_count(u->rec) > 0;
    if (d->op == ACT_DEVICE_BLOCK || d->op == ACT_DEVICE_UNBLOCK) {
        dev->blocked = d->op == ACT_DEVICE_BLOCK;
    } else {
        snprintf(u->op.removed[0], sizeof(u->op.removed[0]), "%s", d->device_id);
        u->op.n_removed = 1;
        store_user_remove_device(u->rec, d->device_id);
    }
    RT_LOG_I("user.device", "user=%s device=%s %s", u->uid, d->device_id, kOpNames[d->op]);
    if (had_active && device_active_count(u->rec) == 0 && u->rec->sub.id[0])
        end_subscription(u, u->rec->n_devices ? STORE_SUB_BLOCKED : STORE_SUB_NONE);
    user_save(u, on_device_saved);
}

/* ---- Inspection ---- */

static void on_inspect(struct user *u, struct rt_msg *m)
{
    struct act_inspect_msg *q = (struct act_inspect_msg *)m;
    if (!u->persisted) {
        reply_error_to(u, &q->reply, 404, "not_found", "unknown mailbox");
        user_done(u);
        return;
    }
    const struct store_user *rec = u->rec;
    int64_t now = wall_now();
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "userId", rec->user_id);
    cJSON_AddStringToObject(j, "email", rec->email);
    cJSON_AddStringToObject(j, "tenantId", rec->tenant_id);
    cJSON_AddNumberToObject(j, "badge", rec->badge);
    cJSON *devs = cJSON_AddArrayToObject(j, "devices");
    for (size_t i = 0; i < rec->n_devices; i++) {
        const struct store_device *d = &rec->devices[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "deviceId", d->device_id);
        cJSON_AddStringToObject(o, "platform", d->platform);
        cJSON_AddStringToObject(o, "environment", d->environment);
        cJSON_AddStringToObject(o, "appId", d->app_id);
        cJSON_AddStringToObject(o, "preview", d->preview);
        cJSON_AddBoolToObject(o, "blocked", d->blocked);
        cJSON *lp = cJSON_AddObjectToObject(o, "lastPush");
        if (d->last_push_at) {
            cJSON_AddNumberToObject(lp, "at", (double)d->last_push_at);
            cJSON_AddStringToObject(lp, "result", d->last_push_result);
        } else {
            cJSON_AddNullToObject(lp, "at");
            cJSON_AddNullToObject(lp, "result");
        }
        cJSON_AddItemToArray(devs, o);
    }
    const struct store_sub *sub = &rec->sub;
    cJSON *so = cJSON_AddObjectToObject(j, "subscription");
    if (sub->id[0])
        cJSON_AddStringToObject(so, "id", sub->id);
    else
        cJSON_AddNullToObject(so, "id");
    cJSON_AddStringToObject(so, "state", store_sub_state_name(sub->state));
    if (sub->last_status_at) {
        uint64_t freq = sub->status_frequency_min ? sub->status_frequency_min : 5;
        cJSON_AddNumberToObject(so, "lastStatusAt", (double)sub->last_status_at);
        cJSON_AddNumberToObject(so, "watermarkAge", (double)(now - sub->last_status_at));
        /* A push subscription has no fixed end: it is considered gone when no
         * status arrives for 2 x StatusFrequency (plus slack). */
        cJSON_AddNumberToObject(so, "expiresAt",
                                (double)(sub->last_status_at + (int64_t)(2 * freq * 60) +
                                         ACT_USER_STATUS_SLACK_MS / 1000));
    } else {
        cJSON_AddNullToObject(so, "lastStatusAt");
        cJSON_AddNullToObject(so, "watermarkAge");
        cJSON_AddNullToObject(so, "expiresAt");
    }
    cJSON_AddNumberToObject(so, "statusFrequencyMin", sub->status_frequency_min);
    cJSON_AddBoolToObject(so, "selfRepair", u->has_token);
    cJSON *c = cJSON_AddObjectToObject(j, "counters");
    cJSON_AddNumberToObject(c, "callbacks", (double)rec->counters.callbacks);
    cJSON_AddNumberToObject(c, "notifications", (double)rec->counters.notifications);
    cJSON_AddNumberToObject(c, "pushesOk", (double)rec->counters.pushes_ok);
    cJSON_AddNumberToObject(c, "pushesFailed", (double)rec->counters.pushes_failed);
    act_reply_json(u->app->rt, &q->reply, 200, j);
    q->reply.req = NULL;
    cJSON_Delete(j);
    user_done(u);
}

/* ---- Dispatch ---- */

struct user_handler {
    uint32_t type;
    int needs_record;
    void (*fn)(struct user *u, struct rt_msg *m);
};

static const struct user_handler kHandlers[] = {
    {ACT_MSG_ENROLL, 1, on_enroll},           {ACT_MSG_CALLBACK, 1, on_callback},
    {ACT_MSG_PUSH_RESULT, 1, on_push_result}, {ACT_MSG_HEALTH_DUE, 1, on_health_due},
    {ACT_MSG_TIMER_IDLE, 0, on_idle},         {ACT_MSG_DEVICE_OP, 1, on_device_op},
    {ACT_MSG_INSPECT, 1, on_inspect},
};

static const struct user_handler *handler_for(uint32_t type)
{
    for (size_t i = 0; i < sizeof(kHandlers) / sizeof(kHandlers[0]); i++) {
        if (kHandlers[i].type == type)
            return &kHandlers[i];
    }
    return NULL;
}

static void on_loaded(int err, struct store_user *rec, void *ud)
{
    struct user *u = ud;
    if (err == ENS_ENOTFOUND) {
        u->rec = store_user_new();
        u->persisted = 0;
    } else if (err) {
        RT_LOG_W("user.load", "user=%s err=%s", u->uid, ens_err_name(err));
        if (u->cur->type == ACT_MSG_CALLBACK) {
            /* Not Unsubscribe: the subscription may be fine; Exchange retries. */
            atomic_fetch_add_explicit(&u->app->counters.callbacks_unjudged, 1,
                                      memory_order_relaxed);
            reply_error(u, 503, "unavailable", "storage unavailable");
        } else {
            reply_error(u, 503, "unavailable", "storage unavailable; nothing was changed");
        }
        user_done(u);
        return;
    } else {
        u->rec = rec;
        u->persisted = 1;
    }
    handler_for(u->cur->type)->fn(u, u->cur);
}

static void user_receive(struct rt_actor *a, struct rt_msg *m)
{
    struct user *u = rt_actor_state(a);
    if (u->actor == NULL) {
        u->actor = a;
        u->idle_timer = rt_timer_new(a, ACT_MSG_TIMER_IDLE);
    }
    const struct user_handler *h = handler_for(m->type);
    if (h == NULL) {
        rt_msg_free(m);
        return;
    }
    /* Over the resident cap, leave as soon as the work is done. */
    const struct ens_config *cfg = u->app->cfg;
    rt_timer_arm(u->idle_timer, rt_keyed_resident(u->app->rt) > (size_t)cfg->mailbox.max_resident
                                    ? 0
                                    : (uint64_t)cfg->mailbox.passivate_after_ms);
    rt_actor_suspend(a);
    u->cur = m;
    if (h->needs_record && u->rec == NULL) {
        int rc = STORE_CALL(store_user_load, u->uid, user_deadline(u), on_loaded, u);
        if (rc)
            on_loaded(rc, NULL, u);
        return;
    }
    h->fn(u, m);
}

static void user_destroy(struct rt_actor *a)
{
    struct user *u = rt_actor_state(a);
    store_user_free(u->rec);
    u->rec = NULL;
    gauge_sync(u);
    rt_msg_free(u->cur);
    op_reset(u);
    rt_buf_cleanup(&u->op.creds);
    rt_buf_cleanup(&u->op.soap);
    rt_buf_cleanup(&u->op.blob);
    seal_token_cleanup(&u->token);
    store_user_free(u->rec);
    ens_free(u);
}

static const struct rt_actor_type kUserActor = {"user", user_receive, user_destroy};

static void *user_activate(struct rt_sched *s, const char *key, size_t len, void *app)
{
    struct user *u = ens_calloc(1, sizeof(*u));
    u->app = app;
    u->counted_state = -1;
    snprintf(u->uid, sizeof(u->uid), "%.*s", (int)len, key);
    op_reset(u);
    memo_restore(u, rt_sched_data(s));
    return u;
}

void act_user_class(struct ens_app *app, struct rt_keyed_class *out)
{
    *out = (struct rt_keyed_class){&kUserActor, user_activate, app};
}

int act_user_send(struct ens_app *app, const char *uid, struct rt_msg *m)
{
    return rt_send_key(app->rt, uid, strlen(uid), m);
}
