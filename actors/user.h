/* The user actor: one per mailbox (userId). It alone owns that mailbox's
 * Exchange subscription lifecycle, the opening of its sealed credentials, its
 * badge and its devices; every request that concerns the mailbox becomes a
 * message to it, so per-mailbox work is ordered without locks.
 *
 * Life cycle of the subscription (ARCHITECTURE.md):
 *   none → subscribing → active → (stale | lost) → subscribing → active …
 * While the actor waits for Redis or Exchange it is suspended: later messages
 * (a callback that races the Subscribe answer, say) wait in its mailbox and are
 * handled in order afterwards, so they are recognised rather than refused. */
#ifndef ENS_ACTORS_USER_H
#define ENS_ACTORS_USER_H

#include "actors/app.h"
#include "actors/ids.h"
#include "actors/reply.h"
#include "persistence/store_user.h"
#include "protocols/seal.h"
#include "protocols/soap_ews.h"
#include "runtime/buf.h"

#define ACT_USER_STATUS_SLACK_MS  (60 * 1000)          /* grace on top of 2 x StatusFrequency */
#define ACT_USER_CHECKIN_EVERY_MS (20 * 60 * 1000)     /* at most 3 check-in requests an hour */
#define ACT_USER_CHECKIN_MAX_MS   (6 * 60 * 60 * 1000) /* and at least one every 6 hours */
#define ACT_USER_RECENT_ITEMS     64                   /* item ids remembered to drop duplicates */
#define ACT_USER_MAX_FETCH        32                   /* new items fetched in one GetItem */

/* ACT_MSG_ENROLL: subscribe or check-in, already authenticated and decrypted. */
struct act_enroll_msg {
    struct rt_msg hdr;
    struct act_reply_to reply;
    int checkin;
    char tenant_id[STORE_ID_CHARS + 1];
    char email[STORE_MAX_EMAIL + 1];
    char ews_url[STORE_MAX_EWS_URL + 1];
    char auth_type[12];
    struct rt_buf creds;     /* secret: the sealed "auth" object as JSON; wiped on free */
    struct store_device dev; /* device_id derived; key_hash unset */
    int64_t now;
};

/* ACT_MSG_CALLBACK: an Exchange SendNotification whose token parsed. */
struct act_callback_msg {
    struct rt_msg hdr;
    struct act_reply_to reply;
    struct seal_token token; /* secret: holds K; wiped on free */
    struct soap_notification_batch batch;
    uint64_t t0_ns; /* arrival (uv_hrtime), for the callback-to-push histogram */
};

/* ACT_MSG_DEVICE_OP: what to do to one device of the mailbox. */
enum act_device_op {
    ACT_DEVICE_UNSUBSCRIBE, /* the device itself, proving it holds its deviceKey */
    ACT_DEVICE_BLOCK,       /* an operator: no pushes, no re-registration */
    ACT_DEVICE_UNBLOCK,
    ACT_DEVICE_REMOVE, /* an operator: forget it without its cooperation */
};

struct act_device_msg {
    struct rt_msg hdr;
    struct act_reply_to reply;
    enum act_device_op op;
    char device_id[STORE_ID_CHARS + 1];
    char tenant_id[STORE_ID_CHARS + 1];      /* UNSUBSCRIBE: the API token's tenant */
    char key_hash[STORE_KEY_HASH_CHARS + 1]; /* UNSUBSCRIBE: SHA-256 of the presented key */
};

/* ACT_MSG_INSPECT: answer the mailbox's live state (API.md 4). */
struct act_inspect_msg {
    struct rt_msg hdr;
    struct act_reply_to reply;
};

struct act_enroll_msg *act_enroll_msg_new(void);
struct act_callback_msg *act_callback_msg_new(void);

/* act_user_class sets |out| to the keyed class of mailbox actors (their key
 * is the userId) for rt_keyed_set; |app| is their shared context. */
void act_user_class(struct ens_app *app, struct rt_keyed_class *out);

/* act_user_send delivers |m| to the mailbox actor of |uid|, activating it on
 * its scheduler when it is not in memory (rt_send_key: lock-free, any thread).
 * Takes |m| on success; on an error (ENS_EFULL, ENS_ENOACTOR while stopping)
 * the caller still owns it and answers for it. */
int act_user_send(struct ens_app *app, const char *uid, struct rt_msg *m);

#endif
