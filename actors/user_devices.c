/* The mailbox actor's devices (unsubscribe, block, unblock, remove) and its
 * inspection by operators. */
#include "actors/user_int.h"

#include <cjson/cJSON.h>

/* ---- Devices: unsubscribe, block, unblock, remove ---- */

/* end_subscription forgets the mailbox's subscription once no device may
 * receive anything: Exchange's next callback no longer matches and is answered
 * Unsubscribe (push subscriptions cannot be ended any other way). The last
 * watermark stays, so a later re-subscription misses nothing. */
static void end_subscription(struct user *u, enum store_sub_state state)
{
    struct store_sub *sub = &u->rec->sub;
    snprintf(u->op->old_cred_id, sizeof(u->op->old_cred_id), "%s", sub->cred_id);
    sub->id[0] = '\0';
    sub->cred_id[0] = '\0';
    sub->state = state;
    seal_token_cleanup(&u->token);
    u->has_token = 0;
    user_health_forget(u);
    RT_LOG_I("user.subscription", "user=%s subscription ended (%s)", u->uid,
             store_sub_state_name(state));
}

static void on_device_saved(struct user *u, int err)
{
    struct act_device_msg *d = (struct act_device_msg *)u->cur;
    if (err) {
        user_reply_error_to(u, &d->reply, 503, "unavailable",
                            "storage unavailable; nothing was changed");
        store_user_free(u->rec);
        u->rec = NULL;
        user_done(u);
        return;
    }
    user_cred_delete(u, u->op->old_cred_id);
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

static void on_index_repaired(int err, void *ud)
{
    (void)ud;
    if (err)
        RT_LOG_W("user.device", "stale device index entry not repaired: %s", ens_err_name(err));
}

void user_on_device_op(struct user *u, struct rt_msg *m)
{
    static const char *const kOpNames[] = {"unsubscribe", "block", "unblock", "remove"};
    struct act_device_msg *d = (struct act_device_msg *)m;
    struct store_device *dev = u->persisted ? store_user_find_device(u->rec, d->device_id) : NULL;
    /* A device of another tenant is as unknown as a missing one. */
    if (dev == NULL) {
        /* Sent here by the device index, perhaps: an entry naming a mailbox
         * that does not hold the device is stale (its write beside a save or
         * delete failed) and goes, on this read. */
        STORE_CALL(store_user_index_repair, d->device_id, u->uid, user_deadline(u),
                   on_index_repaired, NULL);
    }
    if (dev == NULL ||
        (d->op == ACT_DEVICE_UNSUBSCRIBE && strcmp(u->rec->tenant_id, d->tenant_id) != 0)) {
        user_reply_error_to(u, &d->reply, 404, "not_found", "unknown device");
        user_done(u);
        return;
    }
    if (d->op == ACT_DEVICE_UNSUBSCRIBE &&
        !ens_consttime_eq((const uint8_t *)dev->key_hash, (const uint8_t *)d->key_hash,
                          STORE_KEY_HASH_CHARS)) {
        user_reply_error_to(u, &d->reply, 403, "forbidden", "wrong deviceKey");
        user_done(u);
        return;
    }
    int had_active = user_device_active_count(u->rec) > 0;
    if (d->op == ACT_DEVICE_BLOCK || d->op == ACT_DEVICE_UNBLOCK) {
        dev->blocked = d->op == ACT_DEVICE_BLOCK;
    } else {
        snprintf(u->op->removed[0], sizeof(u->op->removed[0]), "%s", d->device_id);
        u->op->n_removed = 1;
        store_user_remove_device(u->rec, d->device_id);
    }
    RT_LOG_I("user.device", "user=%s device=%s %s", u->uid, d->device_id, kOpNames[d->op]);
    if (had_active && user_device_active_count(u->rec) == 0 && u->rec->sub.id[0])
        end_subscription(u, u->rec->n_devices ? STORE_SUB_BLOCKED : STORE_SUB_NONE);
    user_save(u, on_device_saved);
}

/* ---- Inspection ---- */

void user_on_inspect(struct user *u, struct rt_msg *m)
{
    struct act_inspect_msg *q = (struct act_inspect_msg *)m;
    if (!u->persisted) {
        user_reply_error_to(u, &q->reply, 404, "not_found", "unknown mailbox");
        user_done(u);
        return;
    }
    const struct store_user *rec = u->rec;
    int64_t now = user_wall_now();
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
