/* One-shot HTTP/1.1 client: connect (runtime/net), write, parse, answer.
 *
 * Each request uses its own connection and sends "Connection: close", which
 * keeps the state machine small: CONNECTING -> EXCHANGING -> done. The
 * deadline covers everything: rt_connect enforces it until the stream exists,
 * our own timer (started only then, so the op is never freed while the
 * connect callback is still due) afterwards. */
#include "protocols/h1_client.h"

#include <string.h>

#include "protocols/h1_parser.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net.h"

#define H1_CLIENT_MAX_REQUEST_HEAD (16 * 1024)
#define H1_CLIENT_MAX_METHOD       16

struct h1_cop {
    uv_loop_t *loop;
    h1_client_cb cb;
    void *ud;
    uint8_t *reqbytes;
    size_t reqlen;
    struct h1_parser *parser;
    struct h1_message *answer;
    struct rt_stream *s;
    uv_timer_t timer;
    int timer_open;
    int done;
    int head_req;
    uint64_t deadline_ms;
};

struct span h1_response_header(const struct h1_response *r, const char *name)
{
    return h1_message_header(r->msg, name);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct h1_cop *op = h->data;
    h1_parser_free(op->parser);
    h1_message_free(op->answer);
    /* the request may carry credentials (Authorization) */
    ens_wipe(op->reqbytes, op->reqlen);
    ens_free(op->reqbytes);
    ens_free(op);
}

/* op_finish runs the callback once, then releases the stream and the op. */
static void op_finish(struct h1_cop *op, int err)
{
    if (op->done)
        return;
    op->done = 1;
    if (op->s) {
        rt_stream_close(op->s, NULL, NULL);
        op->s = NULL;
    }
    if (err == 0 && op->answer) {
        struct h1_response r = {op->answer->status, rt_buf_span(&op->answer->body), op->answer};
        op->cb(0, &r, op->ud);
    } else {
        op->cb(err ? err : ENS_ECLOSED, NULL, op->ud);
    }
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, on_timer_closed);
}

static void on_deadline(uv_timer_t *t)
{
    op_finish(t->data, ENS_ETIMEDOUT);
}

static int on_message(struct h1_message *m, void *ud)
{
    struct h1_cop *op = ud;
    if (m->status >= 100 && m->status < 200 && m->status != 101) {
        h1_message_free(m); /* interim answer: the real one follows */
        h1_parser_expect_no_body(op->parser, op->head_req);
        return 0;
    }
    op->answer = m;
    return H1_PARSER_PAUSE;
}

static void on_read(struct rt_stream *s, int status, const uint8_t *data, size_t len, void *ud)
{
    struct h1_cop *op = ud;
    if (op->done)
        return;
    if (status != 0) {
        int rc = h1_parser_finish(op->parser);
        op_finish(op, op->answer ? 0 : (rc < 0 && rc != ENS_ECLOSED ? rc : ENS_ECLOSED));
        return;
    }
    ssize_t n = h1_parser_feed(op->parser, data, len);
    if (op->answer) {
        op_finish(op, 0);
        return;
    }
    if (n < 0)
        op_finish(op, (int)n);
}

static void on_connected(struct rt_stream *s, int status, void *ud)
{
    struct h1_cop *op = ud;
    if (status != 0) {
        op_finish(op, status);
        return;
    }
    op->s = s;
    uint64_t now = uv_now(op->loop);
    uv_timer_start(&op->timer, on_deadline, op->deadline_ms > now ? op->deadline_ms - now : 0, 0);
    int rc = rt_stream_write(s, op->reqbytes, op->reqlen);
    if (rc == 0)
        rc = rt_stream_read_start(s, on_read, op);
    if (rc)
        op_finish(op, ENS_ECLOSED);
}

static int token_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || s[n] <= 0x20 || s[n] >= 0x7f || s[n] == ':')
            return 0;
    return n > 0;
}

static int value_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

int h1_client_request(uv_loop_t *loop, const struct h1_client_req *req, h1_client_cb cb, void *ud)
{
    struct rt_url u;
    if (!loop || !req || !cb || !req->method || !req->url ||
        !token_ok(req->method, H1_CLIENT_MAX_METHOD) || rt_url_parse(req->url, &u) != 0)
        return ENS_EINVAL;
    int https = strcmp(u.scheme, "https") == 0;
    if (https && !req->tls)
        return ENS_EINVAL;
    if (req->body_len && !req->body)
        return ENS_EINVAL;

    struct rt_buf b;
    rt_buf_init_secret(&b, H1_CLIENT_MAX_REQUEST_HEAD + req->body_len);
    int rc = rt_buf_appendf(&b, "%s %s HTTP/1.1\r\n", req->method, u.path);
    int v6 = strchr(u.host, ':') != NULL; /* our own parsed copy, not network bytes */
    int default_port = u.port == (https ? 443 : 80);
    if (!rc)
        rc = default_port
                 ? rt_buf_appendf(&b, v6 ? "Host: [%s]\r\n" : "Host: %s\r\n", u.host)
                 : rt_buf_appendf(&b, v6 ? "Host: [%s]:%u\r\n" : "Host: %s:%u\r\n", u.host, u.port);
    for (size_t i = 0; !rc && i < req->nheaders; i++) {
        const struct h1_header *h = &req->headers[i];
        if (!h->name || !h->value || !token_ok(h->name, 256) || !value_ok(h->value)) {
            rt_buf_cleanup_secret(&b);
            return ENS_EINVAL;
        }
        rc = rt_buf_appendf(&b, "%s: %s\r\n", h->name, h->value);
    }
    if (!rc)
        rc = rt_buf_appendf(&b, "Content-Length: %zu\r\nConnection: close\r\n\r\n", req->body_len);
    if (!rc && req->body_len)
        rc = rt_buf_append(&b, req->body, req->body_len);
    if (rc) {
        rt_buf_cleanup_secret(&b);
        return ENS_ETOOBIG;
    }

    struct h1_cop *op = ens_calloc(1, sizeof(*op));
    op->loop = loop;
    op->cb = cb;
    op->ud = ud;
    op->deadline_ms = req->deadline_ms;
    op->head_req = strcmp(req->method, "HEAD") == 0;
    op->reqbytes = rt_buf_take(&b, &op->reqlen);
    op->parser = h1_parser_new(H1_PARSE_RESPONSE,
                               req->max_response ? req->max_response : H1_CLIENT_MAX_RESPONSE,
                               on_message, op);
    h1_parser_expect_no_body(op->parser, op->head_req);
    uv_timer_init(loop, &op->timer);
    op->timer.data = op;
    struct rt_connect_opts co = {u.host, u.port, https ? req->tls : NULL, req->deadline_ms,
                                 req->deny_private};
    rc = rt_connect(loop, &co, on_connected, op);
    if (rc) {
        op->done = 1;
        uv_close((uv_handle_t *)&op->timer, on_timer_closed);
        return rc == ENS_EINVAL ? ENS_EINVAL : rc;
    }
    return 0;
}
