/* The mailbox actor subscribes: enrollment (subscribe, check-in) and the
 * self-repair that re-creates a subscription from the last watermark. */
#include "actors/user_int.h"

#include <cjson/cJSON.h>
#include <openssl/mem.h>

#include "actors/ews.h"
#include "actors/keys.h"
#include "runtime/b64.h"
#include "runtime/ratelimit.h"

/* ---- Subscribing (enrollment and self-repair) ---- */

static void subscribe_send(struct user *u);

static void subscribe_fail(struct user *u, int status, const char *code, const char *message)
{
    user_cred_delete(u, u->op->new_cred_id);
    RT_LOG_W("ews.subscribe", "user=%s failed: %s (%s)", u->uid, code, message);
    u->op->fail_code = code;
    u->op->fail_message = message;
    u->op->then(u, status);
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
        strcmp(resp.st.code, "ErrorInvalidWatermark") == 0 && u->op->used_watermark) {
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
    snprintf(u->op->old_cred_id, sizeof(u->op->old_cred_id), "%s", sub->cred_id);
    snprintf(sub->id, sizeof(sub->id), "%s", resp.subscription_id);
    if (resp.watermark)
        snprintf(sub->watermark, sizeof(sub->watermark), "%s", resp.watermark);
    snprintf(sub->cred_id, sizeof(sub->cred_id), "%s", u->op->new_cred_id);
    sub->sealing_kid = u->op->token.skid;
    sub->state = STORE_SUB_ACTIVE;
    sub->status_frequency_min = (uint32_t)u->app->cfg->ews.status_frequency_min;
    sub->created_at = sub->last_status_at = user_wall_now();
    u->rec->cred_fp = u->op->fp;
    soap_ews_subscribe_resp_cleanup(&resp);
    /* The new token becomes the one kept in memory for self-repair. */
    seal_token_cleanup(&u->token);
    u->token = u->op->token;
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
    if (strcmp(u->op->old_cred_id, u->op->new_cred_id) != 0)
        user_cred_delete(u, u->op->old_cred_id);
    user_health_arm(u, 1); /* a new subscription */
    u->op->then(u, 0);
}

static void subscribe_send(struct user *u)
{
    char token[SEAL_TOKEN_CHARS + 1];
    char url[sizeof(u->app->callback_base) + SEAL_TOKEN_CHARS + 1];
    seal_token_encode(&u->op->token, token);
    snprintf(url, sizeof(url), "%s%s", u->app->callback_base, token);
    OPENSSL_cleanse(token, sizeof(token));
    rt_buf_reset(&u->op->soap);
    const char *wm = u->rec->sub.watermark[0] ? u->rec->sub.watermark : NULL;
    u->op->used_watermark = wm != NULL;
    int rc = soap_ews_subscribe_build(&u->op->soap, u->rec->email, url,
                                      u->app->cfg->ews.status_frequency_min, wm);
    OPENSSL_cleanse(url, sizeof(url));
    if (rc == 0)
        rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_SUBSCRIBE, u->rec->ews_url,
                      u->rec->email, rt_buf_span(&u->op->creds), &u->op->soap, on_subscribe_answer,
                      u);
    if (rc)
        subscribe_fail(u, 502, "ews_error", "cannot build the Subscribe request");
}

static void on_cred_put(int err, void *ud)
{
    struct user *u = ud;
    if (err) {
        u->op->new_cred_id[0] = '\0';
        subscribe_fail(u, 503, "unavailable", "storage unavailable");
        return;
    }
    subscribe_send(u);
}

/* user_subscribe creates a new Exchange subscription with u->op->creds: seal
 * the credentials under a fresh token, store the blob, then Subscribe (from the
 * last watermark, so nothing between the old and new one is missed). Ends in
 * u->op->then(u, 0 or an HTTP status). */
void user_subscribe(struct user *u, user_step_fn then)
{
    u->op->then = then;
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
        rc = seal_token_new(ks->seal_kid, raw.data, &u->op->token);
    rt_buf_cleanup(&raw);
    if (rc == 0)
        rc = seal_creds(&u->op->token, ks->seal_key, rt_buf_span(&u->op->creds), &u->op->blob);
    if (rc) {
        then(u, 503);
        return;
    }
    user_hex_encode(u->op->token.cred_id, SEAL_CRED_ID_BYTES, u->op->new_cred_id);
    u->rec->sub.state = STORE_SUB_SUBSCRIBING;
    rc = STORE_CALL(store_cred_put, u->uid, u->op->new_cred_id, u->op->blob.data, u->op->blob.len,
                    user_deadline(u), on_cred_put, u);
    if (rc) {
        u->op->new_cred_id[0] = '\0';
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
        if (u->op->device_key[0])
            cJSON_AddStringToObject(j, "deviceKey", u->op->device_key);
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
        user_reply_error(u, 503, "unavailable", "storage unavailable; nothing was changed");
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
    if (u->op->fail_code)
        user_reply_error(u, status, u->op->fail_code, u->op->fail_message);
    else
        user_reply_error(u, 503, "unavailable", "storage or keys unavailable; nothing was changed");
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
    return d && d->cred_fp != 0 && d->cred_fp == u->op->fp && device_unchanged(d, &e->dev) &&
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
        ens_random_id(32, u->op->device_key, sizeof(u->op->device_key));
        ens_sha256_hex(span_cstr(u->op->device_key), d->key_hash);
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
    d->cred_fp = u->op->fp;
    int url_changed = strcmp(rec->ews_url, e->ews_url) != 0;
    snprintf(rec->ews_url, sizeof(rec->ews_url), "%s", e->ews_url);
    snprintf(rec->auth_type, sizeof(rec->auth_type), "%s", e->auth_type);
    int healthy = rec->sub.state == STORE_SUB_ACTIVE && rec->sub.id[0] && !url_changed &&
                  rec->cred_fp == u->op->fp;
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
        user_reply_error(u, 502, code, msg);
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
        user_reply_error(u, status, code, msg);
        enroll_forget(u);
        return;
    }
    if (named->has_unread_count)
        u->rec->badge = (int)named->unread_count;
    soap_ews_getfolder_resp_cleanup(&resp);
    enroll_apply(u);
}

void user_on_enroll(struct user *u, struct rt_msg *m)
{
    struct act_enroll_msg *e = (struct act_enroll_msg *)m;
    struct store_user *rec = u->rec;
    if (u->persisted && strcmp(rec->tenant_id, e->tenant_id) != 0) {
        /* ids are derived per tenant, so this is a broken invariant, not a user error */
        user_reply_error(u, 503, "unavailable", "mailbox record does not match its tenant");
        user_done(u);
        return;
    }
    struct store_device *d = u->persisted ? store_user_find_device(rec, e->dev.device_id) : NULL;
    if (d && d->blocked) {
        user_reply_error(u, 403, "device_blocked", "this device was blocked by an operator");
        user_done(u);
        return;
    }
    if (d == NULL && e->checkin) {
        user_reply_error(u, 404, "not_found", "unknown device: subscribe first");
        user_done(u);
        return;
    }
    if (d == NULL && rec->n_devices >= STORE_MAX_DEVICES) {
        user_reply_error(u, 422, "invalid_field", "device: this mailbox has too many devices");
        user_done(u);
        return;
    }
    u->op->fp = ens_cred_fingerprint(u->app->fp_key, rt_buf_span(&e->creds));
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
        const struct act_reply_to *to = user_cur_reply(u);
        act_reply_error_retry(u->app->rt, to, 429, "rate_limited",
                              "too many enrollments for this mailbox; retry later",
                              (uint32_t)((wait_ms + 999) / 1000));
        ((struct act_reply_to *)to)->req = NULL;
        user_done(u);
        return;
    }
    if (rt_buf_append_span(&u->op->creds, rt_buf_span(&e->creds)) != 0) {
        user_reply_error(u, 422, "invalid_field", "auth: too large");
        user_done(u);
        return;
    }
    /* Nothing is written before Exchange says these credentials own the mailbox. */
    rt_buf_reset(&u->op->soap);
    int rc = soap_ews_getfolder_build(&u->op->soap, e->email, 1);
    if (rc == 0)
        rc = ews_call(rt_actor_loop(u->actor), u->app, ENS_EWS_GETFOLDER, e->ews_url, e->email,
                      rt_buf_span(&u->op->creds), &u->op->soap, on_enroll_verified, u);
    if (rc) {
        user_reply_error(u, 502, "ews_error", "cannot build the request to Exchange");
        enroll_forget(u);
    }
}
