/* The push actor: the one owner of the APNs and FCM HTTP/2 clients
 * (connections are expensive and both services want them long-lived and few,
 * so every mailbox shares them). User actors send it ACT_MSG_PUSH; it answers
 * each with ACT_MSG_PUSH_RESULT to the mailbox, after retries of transient
 * failures. */
#ifndef ENS_ACTORS_PUSH_H
#define ENS_ACTORS_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include "actors/app.h"
#include "actors/ids.h"
#include "protocols/apns.h"
#include "protocols/fcm.h"

/* A push's stream deadline doubles with each of its timeouts up to this many
 * times push.stream_timeout_ms: a slow service is waited for, not lost. */
#define ACT_PUSH_MAX_STREAM_FACTOR 4

/* How a push ended, whichever service carried it. */
enum act_push_class {
    ACT_PUSH_OK,
    ACT_PUSH_UNREGISTERED, /* the token is dead: remove the device */
    ACT_PUSH_RETRY,        /* transient, and push.expiry_s passed before a try got through */
    ACT_PUSH_FATAL,        /* our bug or configuration */
};

const char *act_push_class_name(enum act_push_class cls);

struct act_push_msg {
    struct rt_msg hdr;
    enum ens_push_provider provider;
    char uid[ENS_ID_CHARS + 1];
    char device_id[ENS_ID_CHARS + 1];
    char token[APNS_MAX_TOKEN_HEX + 1];
    char topic[257];
    char environment[16];
    char push_type[16];
    int priority;
    uint8_t *payload; /* owned */
    size_t payload_len;
    char kind[16];  /* "new-mail", "badge", "checkin": for results and metrics */
    uint64_t t0_ns; /* the callback's arrival for new mail (uv_hrtime), else 0 */
    /* set by the push actor */
    int attempt;
    int timeouts;                    /* tries that passed their stream deadline */
    uint64_t expires_ms;             /* uv_now() time past which it is dropped */
    uint64_t expires_unix;           /* the same, UNIX seconds: apns-expiration */
    char apns_id[APNS_ID_CHARS + 1]; /* also the apns-collapse-id; the same on every try */
};

struct act_push_result_msg {
    struct rt_msg hdr;
    char device_id[ENS_ID_CHARS + 1];
    char kind[16];
    enum act_push_class cls;
    int status;
    char reason[APNS_MAX_REASON + 1];
};

/* act_push_msg_new allocates a push message; |payload| is copied. */
struct act_push_msg *act_push_msg_new(const uint8_t *payload, size_t len);

/* act_push_start creates the APNs and FCM clients and the push actor on the
 * calling scheduler (scheduler 0) and records its id in app->push_actor.
 * Without a service's credentials in the configuration its pushes fail with
 * reason "NotConfigured". 0 or a negative code. */
int act_push_start(struct ens_app *app, struct rt_sched *s);

#endif
