/* The user actor. See user.h for its role. This file holds its lifecycle
 * (activation, passivation and the memo cache), the helpers every step uses,
 * saving, and dispatch; the steps themselves are in user_subscribe.c,
 * user_callback.c, user_devices.c and user_push.c (shared: user_int.h).
 *
 * Every message is handled with the actor suspended, and each handler ends in
 * exactly one user_done(), which resumes it. Between the two the handler may
 * wait for Redis or Exchange any number of times; the continuation is the next
 * function of the chain, never a nested callback. */
#include "actors/user_int.h"

#include <openssl/mem.h>

#include "actors/memo.h"
#include "actors/msgs.h"
#include "persistence/store_health.h"
#include "runtime/alloc.h"
#include "runtime/clock.h"

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

struct store *user_store(void)
{
    return ens_sched_ctx_current()->store;
}

uint64_t user_deadline(struct user *u)
{
    return uv_now(rt_actor_loop(u->actor)) + ENS_STORE_DEADLINE_MS;
}

int64_t user_wall_now(void)
{
    return rt_wall_ms() / 1000;
}

void user_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char kHex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = kHex[p[i] >> 4];
        out[2 * i + 1] = kHex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* op_end wipes and frees the scratch of the message just handled. */
static void op_end(struct user *u)
{
    if (u->op == NULL)
        return;
    rt_buf_cleanup_secret(&u->op->creds);
    rt_buf_cleanup(&u->op->soap);
    rt_buf_cleanup(&u->op->blob);
    seal_token_cleanup(&u->op->token);
    OPENSSL_cleanse(u->op->device_key, sizeof(u->op->device_key));
    for (size_t i = 0; i < u->op->n_items; i++)
        ens_free(u->op->items[i]);
    for (size_t i = 0; i < u->op->n_fetched; i++) {
        ens_free(u->op->fetched[i].sender);
        ens_free(u->op->fetched[i].subject);
    }
    OPENSSL_cleanse(u->op, sizeof(*u->op));
    ens_free(u->op);
    u->op = NULL;
}

/* op_begin gives the message about to be handled a fresh scratch. */
static void op_begin(struct user *u)
{
    op_end(u);
    u->op = ens_calloc(1, sizeof(*u->op));
    rt_buf_init_secret(&u->op->creds, SEAL_MAX_CREDS);
    rt_buf_init(&u->op->soap, USER_MAX_SOAP);
    rt_buf_init(&u->op->blob, STORE_MAX_CRED_BLOB);
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
void user_done(struct user *u)
{
    gauge_sync(u);
    rt_msg_free(u->cur);
    u->cur = NULL;
    op_end(u);
    rt_actor_resume(u->actor);
}

const struct act_reply_to *user_cur_reply(struct user *u)
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

void user_reply_error(struct user *u, int status, const char *code, const char *message)
{
    const struct act_reply_to *to = user_cur_reply(u);
    if (to && to->req) {
        act_reply_error(u->app->rt, to, status, code, message);
        ((struct act_reply_to *)to)->req = NULL; /* answered */
    }
}

/* user_reply_error_to answers a request that is not the enrollment or callback kind. */
void user_reply_error_to(struct user *u, struct act_reply_to *to, int status, const char *code,
                         const char *message)
{
    if (to->req) {
        act_reply_error(u->app->rt, to, status, code, message);
        to->req = NULL;
    }
}

int user_device_active_count(const struct store_user *rec)
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
    u->due_written_ms = due_ms;
    STORE_CALL(store_health_set, u->uid, due_ms, user_deadline(u), on_health_written, NULL);
}

void user_health_forget(struct user *u)
{
    u->due_written_ms = 0;
    STORE_CALL(store_health_del, u->uid, user_deadline(u), on_health_written, NULL);
}

/* user_status_due_ms is when a status event is overdue: 2 x StatusFrequency after
 * the last callback, plus slack (UNIX ms). */
int64_t user_status_due_ms(const struct store_sub *sub)
{
    int64_t freq = sub->status_frequency_min ? sub->status_frequency_min : 5;
    return sub->last_status_at * 1000 + 2 * freq * 60 * 1000 + ACT_USER_STATUS_SLACK_MS;
}

/* user_health_arm expects the next status event of the active subscription. */
void user_health_arm(struct user *u, int force)
{
    const struct store_sub *sub = &u->rec->sub;
    int64_t freq_ms = (int64_t)(sub->status_frequency_min ? sub->status_frequency_min : 5) * 60000;
    /* The due time the index holds still lies a whole status interval (and
     * the slack) ahead: this status event need not move it, the next one
     * will. So a healthy subscription writes it every other status event,
     * and a dead one is still found 2 x StatusFrequency + slack after its last
     * one (an earlier wake-up only re-arms: user_on_health_due judges). */
    if (!force && u->due_written_ms >= rt_wall_ms() + freq_ms + ACT_USER_STATUS_SLACK_MS)
        return;
    health_write(u, user_status_due_ms(sub));
}

/* user_health_recheck wakes a stale or lost mailbox again when its devices may be
 * asked to check in once more. */
void user_health_recheck(struct user *u)
{
    /* Asked again after as long as the subscription has been silent, from
     * ACT_USER_CHECKIN_EVERY_MS up to ACT_USER_CHECKIN_MAX_MS: a phone that is
     * off for a while is not sent a silent push three times an hour. */
    int64_t now = rt_wall_ms();
    int64_t quiet = now - u->rec->sub.last_status_at * 1000;
    if (quiet < ACT_USER_CHECKIN_EVERY_MS)
        quiet = ACT_USER_CHECKIN_EVERY_MS;
    if (quiet > ACT_USER_CHECKIN_MAX_MS)
        quiet = ACT_USER_CHECKIN_MAX_MS;
    health_write(u, now + quiet);
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

int user_item_seen(struct user *u, const char *id)
{
    uint64_t h = item_hash(id);
    for (size_t i = 0; i < ACT_USER_RECENT_ITEMS; i++) {
        if (u->recent[i] == h)
            return 1;
    }
    return 0;
}

void user_item_remember(struct user *u, const char *id)
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
    u->op->saved_then(u, err);
}

/* user_save writes the record in one transaction, then continues with |then|. */
void user_save(struct user *u, user_step_fn then)
{
    u->rec->updated_at = user_wall_now();
    u->op->saved_then = then;
    const char *removed[STORE_MAX_DEVICES];
    for (size_t i = 0; i < u->op->n_removed; i++)
        removed[i] = u->op->removed[i];
    /* The device index is written when devices may have changed: an
     * enrollment or check-in (which also repairs it, device by device), a
     * device operation, a removal. A callback's save is the record alone. */
    uint32_t t = u->cur ? u->cur->type : 0;
    unsigned flags =
        (t == ACT_MSG_ENROLL || t == ACT_MSG_DEVICE_OP || u->op->n_removed) ? STORE_SAVE_INDEX : 0;
    int rc = STORE_CALL(store_user_save, u->rec, removed, u->op->n_removed, flags, user_deadline(u),
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

void user_cred_delete(struct user *u, const char *cred_id)
{
    if (cred_id[0] == '\0')
        return;
    /* Best effort: an orphaned blob opens nothing without its token. */
    STORE_CALL(store_cred_del, u->uid, cred_id, user_deadline(u), on_cred_deleted, NULL);
}

void user_step_finish(struct user *u, int err)
{
    (void)err;
    user_done(u);
}

_Static_assert(ACT_MEMO_KEY_SIZE == sizeof(((struct user *)0)->uid) - 1,
               "the memo cache is keyed by the mailbox id's text");

/* memo_save leaves what must outlive the actor in its scheduler's cache. */
static void memo_save(struct user *u)
{
    struct ens_sched_ctx *ctx = ens_sched_ctx_current();
    if (ctx == NULL || ctx->memo == NULL)
        return;
    if (!u->has_token && u->last_checkin_push_ms == 0 && u->recent_count == 0 &&
        u->due_written_ms == 0)
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
    m.due_written_ms = u->due_written_ms;
    act_memo_put(ctx->memo, (const uint8_t *)u->uid, &m);
    OPENSSL_cleanse(&m, sizeof(m));
}

static void memo_restore(struct user *u, struct ens_sched_ctx *ctx)
{
    struct act_memo m;
    if (ctx == NULL || ctx->memo == NULL || !act_memo_take(ctx->memo, (const uint8_t *)u->uid, &m))
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
    u->due_written_ms = m.due_written_ms;
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

/* ---- Dispatch ---- */

struct user_handler {
    uint32_t type;
    int needs_record;
    void (*fn)(struct user *u, struct rt_msg *m);
};

static const struct user_handler kHandlers[] = {
    {ACT_MSG_ENROLL, 1, user_on_enroll},
    {ACT_MSG_CALLBACK, 1, user_on_callback},
    {ACT_MSG_PUSH_RESULT, 1, user_on_push_result},
    {ACT_MSG_HEALTH_DUE, 1, user_on_health_due},
    {ACT_MSG_TIMER_IDLE, 0, on_idle},
    {ACT_MSG_DEVICE_OP, 1, user_on_device_op},
    {ACT_MSG_INSPECT, 1, user_on_inspect},
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
            user_reply_error(u, 503, "unavailable", "storage unavailable");
        } else {
            user_reply_error(u, 503, "unavailable", "storage unavailable; nothing was changed");
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
    op_begin(u);
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
    op_end(u);
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
