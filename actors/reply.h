/* Answering HTTP requests from any actor.
 *
 * A request is parsed on the scheduler whose loop accepted its connection, and
 * must be answered on that loop. Each scheduler runs one responder actor; an
 * actor elsewhere answers by sending it ACT_MSG_REPLY, which carries the
 * request handle (valid until answered, per h1_req_respond's contract). */
#ifndef ENS_ACTORS_REPLY_H
#define ENS_ACTORS_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/rt.h"

struct h1_req;
struct cJSON;

/* Where an answer goes: the request and the responder of its scheduler. */
struct act_reply_to {
    struct h1_req *req;
    rt_actor_id responder;
};

/* act_responder_spawn starts the responder of scheduler |sched_index|. */
int act_responder_spawn(struct rt *rt, int sched_index, rt_actor_id *out);

/* act_reply answers |to| with |status| and a copy of |body|. Any thread; each
 * request must be answered exactly once. */
void act_reply(struct rt *rt, const struct act_reply_to *to, int status, const char *content_type,
               const void *body, size_t len);

/* act_reply_json answers with the JSON text of |json| (borrowed). */
void act_reply_json(struct rt *rt, const struct act_reply_to *to, int status,
                    const struct cJSON *json);

/* act_reply_error answers with API.md's {"error":code,"message":message}. */
void act_reply_error(struct rt *rt, const struct act_reply_to *to, int status, const char *code,
                     const char *message);

/* act_reply_error_retry is act_reply_error with a Retry-After of
 * |retry_after_s| seconds (0: none), for 429 and 503 answers. */
void act_reply_error_retry(struct rt *rt, const struct act_reply_to *to, int status,
                           const char *code, const char *message, uint32_t retry_after_s);

#endif
