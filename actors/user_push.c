/* The mailbox actor's pushes: one payload per device and service (API.md 3),
 * handed to the push actor. */
#include "actors/user_int.h"

#include "runtime/clock.h"

#include "actors/push.h"

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
    p->t0_ns = strcmp(kind, "new-mail") == 0 ? u->op->t0_ns : 0;
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

void user_push_new_mail(struct user *u, const struct fetched_item *it)
{
    push_all(u, &kNewMail, it);
}

void user_push_badge(struct user *u)
{
    push_all(u, &kBadge, NULL);
}

void user_push_checkin(struct user *u)
{
    int64_t now = rt_wall_ms();
    if (u->last_checkin_push_ms && now - u->last_checkin_push_ms < ACT_USER_CHECKIN_EVERY_MS)
        return;
    u->last_checkin_push_ms = now;
    push_all(u, &kCheckin, NULL);
}
