/* The mailbox actor answers Exchange: callbacks, the fetch of new mail and
 * the unread count, push results, and the health index's wake-ups. */
#include "actors/user_int.h"

#include "actors/ews.h"
#include "actors/keys.h"
#include "actors/push.h"
#include "runtime/alloc.h"
#include "runtime/clock.h"

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
    if (u->op->gap) {
        snprintf(u->rec->sub.watermark, sizeof(u->rec->sub.watermark), "%s", u->op->gap_watermark);
        user_subscribe(u, on_repair_subscribed);
        return;
    }
    user_save(u, user_step_finish);
}

static void on_getfolder(const struct ews_result *r, void *ud)
{
    struct user *u = ud;
    struct soap_ews_getfolder_resp resp = {0};
    if (r->err == 0 && soap_ews_getfolder_parse(r->body, &resp) == 0 && resp.has_unread_count) {
        if (u->rec->badge != (int)resp.unread_count)
            u->op->badge_changed = 1;
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
    rt_buf_reset(&u->op->soap);
    int rc = soap_ews_getfolder_build(&u->op->soap, u->rec->email, 0);
    if (rc == 0)
        rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_GETFOLDER, u->rec->ews_url,
                      u->rec->email, rt_buf_span(&u->op->creds), &u->op->soap, on_getfolder, u);
    if (rc)
        after_fetch(u);
}

static void on_getitem(const struct ews_result *r, void *ud)
{
    struct user *u = ud;
    if (r->err == ENS_EAUTH) {
        RT_LOG_W("ews.getitem", "user=%s credentials refused: subscription lost", u->uid);
        u->rec->sub.state = STORE_SUB_LOST;
        user_push_checkin(u);
        user_health_recheck(u);
        user_save(u, user_step_finish);
        return;
    }
    struct soap_ews_getitem_resp resp = {0};
    if (r->err == 0 && soap_ews_getitem_parse(r->body, &resp) == 0) {
        for (size_t i = 0; i < resp.n_items && u->op->n_fetched < ACT_USER_MAX_FETCH; i++) {
            struct soap_ews_item *it = &resp.items[i];
            if (it->st.cls != SOAP_EWS_SUCCESS || it->is_read == 1)
                continue; /* gone (moved by a rule) or already read elsewhere */
            struct fetched_item *f = &u->op->fetched[u->op->n_fetched++];
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
    for (size_t i = 0; i < u->op->n_fetched; i++)
        user_push_new_mail(u, &u->op->fetched[i]);
    if (u->op->n_fetched == 0 && u->op->badge_changed)
        user_push_badge(u);
    u->rec->counters.notifications += u->op->n_fetched;
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
        user_push_checkin(u);
        user_health_recheck(u);
        user_save(u, user_step_finish);
        return;
    }
    user_done(u);
}

static void callback_process(struct user *u)
{
    struct act_callback_msg *c = (struct act_callback_msg *)u->cur;
    struct store_user *rec = u->rec;
    int error_seen = 0;
    u->op->t0_ns = c->t0_ns;
    uint32_t folder_unread = 0;
    int have_folder_unread = 0;
    for (size_t i = 0; i < c->batch.n_msgs; i++) {
        struct soap_notification_msg *nm = &c->batch.msgs[i];
        if (nm->cls == SOAP_EWS_ERROR)
            error_seen = 1;
        struct soap_notification *n = nm->notification;
        if (n == NULL)
            continue;
        if (n->previous_watermark && rec->sub.watermark[0] && !u->op->gap &&
            strcmp(n->previous_watermark, rec->sub.watermark) != 0) {
            RT_LOG_W("ews.callback", "user=%s watermark gap: a notification was missed", u->uid);
            u->op->gap = 1;
            snprintf(u->op->gap_watermark, sizeof(u->op->gap_watermark), "%s", rec->sub.watermark);
        }
        for (size_t k = 0; k < n->n_events; k++) {
            struct soap_event *ev = &n->events[k];
            if (ev->watermark)
                snprintf(rec->sub.watermark, sizeof(rec->sub.watermark), "%s", ev->watermark);
            if (ev->type == SOAP_EVENT_NEW_MAIL && ev->item_id && !user_item_seen(u, ev->item_id) &&
                u->op->n_items < ACT_USER_MAX_FETCH) {
                user_item_remember(u, ev->item_id);
                u->op->items[u->op->n_items++] = ens_strdup(ev->item_id);
            } else if (ev->type == SOAP_EVENT_MODIFIED && ev->folder_id && ev->has_unread_count) {
                folder_unread = ev->unread_count;
                have_folder_unread = 1;
            }
        }
    }
    rec->counters.callbacks++;
    rec->sub.last_status_at = user_wall_now();
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
    user_health_arm(u, 0);
    if (u->op->n_items) {
        rt_buf_reset(&u->op->soap);
        int rc =
            soap_ews_getitem_build(&u->op->soap, (const char *const *)u->op->items, u->op->n_items);
        if (rc == 0)
            rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_GETITEM, rec->ews_url,
                          rec->email, rt_buf_span(&u->op->creds), &u->op->soap, on_getitem, u);
        if (rc == 0)
            return;
        RT_LOG_W("ews.getitem", "user=%s cannot start the fetch: %s", u->uid, ens_err_name(rc));
    }
    if (have_folder_unread && (int)folder_unread != rec->badge) {
        rec->badge = (int)folder_unread;
        user_push_badge(u);
    }
    callback_finish(u);
}

static void on_callback_cred(int err, struct span blob, void *ud)
{
    struct user *u = ud;
    struct act_callback_msg *c = (struct act_callback_msg *)u->cur;
    struct act_keyset *ks = ens_app_keys(u->app);
    const uint8_t *key = act_keyset_seal_key(ks, c->token.skid);
    int rc = err ? err : (key ? seal_open_creds(&c->token, key, blob, &u->op->creds) : ENS_ECRYPTO);
    if (err == ENS_ESTORE || err == ENS_ETIMEDOUT || err == ENS_ECANCELED || ks == NULL) {
        /* Not Unsubscribe (the subscription is fine) and not OK (the events
         * would be lost): Exchange resends the same notification later. */
        RT_LOG_W("ews.callback", "user=%s %s: asking Exchange to retry", u->uid,
                 ks ? "Redis unavailable" : "keys not loaded");
        atomic_fetch_add_explicit(&u->app->counters.callbacks_unjudged, 1, memory_order_relaxed);
        user_reply_error(u, 503, "unavailable", "storage unavailable");
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
        if (ev->type == SOAP_EVENT_NEW_MAIL && ev->item_id && !user_item_seen(u, ev->item_id))
            return 1;
    }
    return 0;
}

void user_on_callback(struct user *u, struct rt_msg *m)
{
    struct act_callback_msg *c = (struct act_callback_msg *)m;
    struct store_user *rec = u->rec;
    char cred_id[STORE_CRED_ID_CHARS + 1];
    user_hex_encode(c->token.cred_id, SEAL_CRED_ID_BYTES, cred_id);
    const char *why = NULL;
    if (!u->persisted)
        why = "unknown mailbox";
    else if (rec->sub.cred_id[0] == '\0' || strcmp(cred_id, rec->sub.cred_id) != 0)
        why = "not the current subscription";
    else if (user_device_active_count(rec) == 0)
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

/* ---- Push results and the health index ---- */

void user_on_push_result(struct user *u, struct rt_msg *m)
{
    struct act_push_result_msg *r = (struct act_push_result_msg *)m;
    struct store_device *d = u->persisted ? store_user_find_device(u->rec, r->device_id) : NULL;
    if (d == NULL) {
        user_done(u);
        return;
    }
    d->last_push_at = user_wall_now();
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
        snprintf(u->op->removed[0], sizeof(u->op->removed[0]), "%s", d->device_id);
        u->op->n_removed = 1;
        store_user_remove_device(u->rec, r->device_id);
    }
    user_save(u, user_step_finish);
}

static void on_repair_cred(int err, struct span blob, void *ud)
{
    struct user *u = ud;
    const uint8_t *key = act_keyset_seal_key(ens_app_keys(u->app), u->token.skid);
    int rc = err ? err : (key ? seal_open_creds(&u->token, key, blob, &u->op->creds) : ENS_ECRYPTO);
    if (rc) {
        on_repair_subscribed(u, 503);
        return;
    }
    user_subscribe(u, on_repair_subscribed);
}

/* user_on_health_due: the health index says this mailbox is due a look. It judges
 * for itself, since a callback may have come after the index was read. */
void user_on_health_due(struct user *u, struct rt_msg *m)
{
    (void)m;
    struct store_user *rec = u->rec;
    enum store_sub_state st = u->persisted ? rec->sub.state : STORE_SUB_NONE;
    if (st != STORE_SUB_ACTIVE && st != STORE_SUB_STALE && st != STORE_SUB_LOST) {
        /* Nothing to watch (ended, blocked, or the mailbox is gone): without
         * this the lease would bring it back every minute. */
        user_health_forget(u);
        user_done(u);
        return;
    }
    if (st == STORE_SUB_ACTIVE && user_status_due_ms(&rec->sub) > rt_wall_ms()) {
        user_health_arm(u, 1); /* a status event came meanwhile: not overdue yet */
        user_done(u);
        return;
    }
    if (st == STORE_SUB_LOST) {
        /* Exchange ended it: only a check-in with credentials helps. */
        user_push_checkin(u);
        user_health_recheck(u);
        user_done(u);
        return;
    }
    RT_LOG_W("ews.status", "user=%s no status from Exchange in time", u->uid);
    if (u->has_token && user_device_active_count(rec) > 0) {
        /* Self-repair first: re-create from the last watermark with the token
         * we still hold. */
        int rc = STORE_CALL(store_cred_get, u->uid, rec->sub.cred_id, user_deadline(u),
                            on_repair_cred, u);
        if (rc == 0)
            return;
    }
    rec->sub.state = STORE_SUB_STALE;
    user_push_checkin(u);
    user_health_recheck(u);
    user_save(u, user_step_finish);
}
