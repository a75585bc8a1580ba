/* What the files of the mailbox actor share (actors/user*.c): its state and
 * the steps one file hands to another. Private to the actor; see user.h for
 * what others may use. */
#ifndef ENS_ACTORS_USER_INT_H
#define ENS_ACTORS_USER_INT_H

#include "actors/user.h"
#include "runtime/err.h"

#define USER_MAX_SOAP (64 * 1024)

struct user;
typedef void (*user_step_fn)(struct user *u, int err);

struct fetched_item {
    char *sender;
    char *subject;
};

/* What one message's handling needs, allocated when it starts and wiped and
 * freed when it ends (user_done): a mailbox between messages carries none of
 * it. */
struct user_op {
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
    const char *fail_code;                       /* static API error code of a failed subscribe */
    const char *fail_message;
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
    int64_t last_checkin_push_ms; /* UNIX ms (runtime/clock.h) of the last check-in request */

    int counted_state; /* the state this mailbox adds to subs_by_state, or -1 */

    uint64_t recent[ACT_USER_RECENT_ITEMS]; /* hashes of item ids already pushed */
    size_t recent_next, recent_count;
    int64_t due_written_ms; /* what the health index was last told (UNIX ms); 0 unknown */

    /* The operation in progress. */
    struct user_op *op; /* scratch of the message being handled; NULL between messages */
};

/* user_store returns this scheduler's Redis connection, or NULL once the
 * scheduler is shutting down; every caller treats NULL as "unavailable". */
struct store *user_store(void);

/* STORE_CALL runs a store call when the store still exists, else yields
 * ENS_ESTORE without calling, so shutdown never touches a freed store. */
#define STORE_CALL(fn, ...) (user_store() ? fn(user_store(), __VA_ARGS__) : ENS_ESTORE)

/* user.c: lifecycle, helpers, saving and dispatch */
uint64_t user_deadline(struct user *u);
int64_t user_wall_now(void);
void user_hex_encode(const uint8_t *p, size_t n, char *out);
void user_done(struct user *u);
const struct act_reply_to *user_cur_reply(struct user *u);
void user_reply_error(struct user *u, int status, const char *code, const char *message);
void user_reply_error_to(struct user *u, struct act_reply_to *to, int status, const char *code,
                         const char *message);
int user_device_active_count(const struct store_user *rec);
void user_health_forget(struct user *u);
int64_t user_status_due_ms(const struct store_sub *sub);
void user_health_arm(struct user *u, int force);
void user_health_recheck(struct user *u);
int user_item_seen(struct user *u, const char *id);
void user_item_remember(struct user *u, const char *id);
void user_save(struct user *u, user_step_fn then);
void user_cred_delete(struct user *u, const char *cred_id);
void user_step_finish(struct user *u, int err);

/* user_push.c: pushes */
void user_push_new_mail(struct user *u, const struct fetched_item *it);
void user_push_badge(struct user *u);
void user_push_checkin(struct user *u);

/* user_subscribe.c: subscribing and enrollment */
void user_subscribe(struct user *u, user_step_fn then);
void user_on_enroll(struct user *u, struct rt_msg *m);

/* user_callback.c: Exchange callbacks, push results and the health index */
void user_on_callback(struct user *u, struct rt_msg *m);
void user_on_push_result(struct user *u, struct rt_msg *m);
void user_on_health_due(struct user *u, struct rt_msg *m);

/* user_devices.c: devices and inspection */
void user_on_device_op(struct user *u, struct rt_msg *m);
void user_on_inspect(struct user *u, struct rt_msg *m);

#endif
