#include "actors/reply.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "actors/msgs.h"
#include "protocols/h1_server.h"
#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"

#define REPLY_MAX_ERROR_BODY 1024

struct reply_msg {
    struct rt_msg hdr;
    struct h1_req *req;
    int status;
    const char *content_type; /* static string */
    uint8_t *body;            /* owned */
    size_t len;
    uint32_t retry_after_s; /* sent as Retry-After when not 0 */
};

static void reply_msg_free(struct rt_msg *m)
{
    struct reply_msg *r = (struct reply_msg *)m;
    ens_free(r->body);
    ens_free(r);
}

static void responder_receive(struct rt_actor *a, struct rt_msg *m)
{
    if (m->type == ACT_MSG_REPLY) {
        struct reply_msg *r = (struct reply_msg *)m;
        /* ENS_ECLOSED only means the client left before its answer: nothing to do */
        char retry[16];
        snprintf(retry, sizeof(retry), "%u", r->retry_after_s);
        const struct h1_header extra[] = {{"Retry-After", retry}};
        h1_req_respond(r->req, r->status, r->content_type, r->body, r->len, extra,
                       r->retry_after_s ? 1 : 0);
    }
    rt_msg_free(m);
}

static const struct rt_actor_type kResponder = {"responder", responder_receive, NULL};

int act_responder_spawn(struct rt *rt, int sched_index, rt_actor_id *out)
{
    return rt_spawn(rt, sched_index, &kResponder, NULL, out);
}

static void reply_send(struct rt *rt, const struct act_reply_to *to, int status,
                       const char *content_type, const void *body, size_t len,
                       uint32_t retry_after_s)
{
    struct reply_msg *r = rt_msg_new(sizeof(*r), ACT_MSG_REPLY);
    r->retry_after_s = retry_after_s;
    r->hdr.free = reply_msg_free;
    r->req = to->req;
    r->status = status;
    r->content_type = content_type;
    r->body = (uint8_t *)ens_memdup(body, len);
    r->len = len;
    int rc = rt_send(rt, to->responder, &r->hdr);
    if (rc) {
        /* Only at shutdown: the scheduler and its connections are going away. */
        RT_LOG_W("http.reply", "responder gone (%s): answer dropped", ens_err_name(rc));
        rt_msg_free(&r->hdr);
    }
}

void act_reply_json(struct rt *rt, const struct act_reply_to *to, int status,
                    const struct cJSON *json)
{
    char *text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        act_reply_error(rt, to, 500, "internal", "cannot encode the answer");
        return;
    }
    act_reply(rt, to, status, "application/json", text, strlen(text));
    cJSON_free(text);
}

void act_reply(struct rt *rt, const struct act_reply_to *to, int status, const char *content_type,
               const void *body, size_t len)
{
    reply_send(rt, to, status, content_type, body, len, 0);
}

void act_reply_error_retry(struct rt *rt, const struct act_reply_to *to, int status,
                           const char *code, const char *message, uint32_t retry_after_s)
{
    struct rt_buf b;
    rt_buf_init(&b, REPLY_MAX_ERROR_BODY);
    if (h1_error_json(&b, code, message) != 0) {
        rt_buf_reset(&b);
        h1_error_json(&b, code, "");
    }
    reply_send(rt, to, status, "application/json", b.data, b.len, retry_after_s);
    rt_buf_cleanup(&b);
}

void act_reply_error(struct rt *rt, const struct act_reply_to *to, int status, const char *code,
                     const char *message)
{
    act_reply_error_retry(rt, to, status, code, message, 0);
}
