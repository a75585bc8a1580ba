/* HTTP/1.1 server connections: parse with h1_parser, answer in order.
 *
 * Each connection keeps its requests in arrival order. A response is built
 * when the handler answers, but written only once every earlier request has
 * been written, so handlers may finish in any order. Errors the server
 * answers itself (400/413/431) join the same queue as an already-answered
 * request, so they never overtake earlier answers either.
 *
 * Lifetime: a request outlives its connection. When the connection dies, the
 * requests the handler still holds are orphaned (conn = NULL) and freed by
 * h1_req_respond. Connection memory is released only after both its stream
 * and its timer have closed, never from inside a stream callback.
 *
 * HTTP/2: a TLS connection whose ALPN is "h2" is handed over, at its first
 * bytes (the ALPN is known once the handshake is done), to an
 * h2_server_conn (protocols/h2_server.c). Its streams arrive here as the same
 * struct h1_req, so the application never knows; a small ops table per
 * transport does the answering. */
#include "protocols/h1_server.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "protocols/h1_parser.h"
#include "protocols/h2_server.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/clock.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"

/* Unparsed input held while the connection is paused (pipelining limit):
 * reading stops then, so this only needs a couple of read chunks. */
#define H1_SERVER_INBUF_MAX (256 * 1024)
/* After the last answer we send FIN and keep reading (discarding) this long so
 * that unread request bytes do not make the kernel reset the connection and
 * destroy the answer before the client has read it. */
#define H1_LINGER_MS 2000
static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Response head: status line plus our headers plus the caller's extras. */
#define H1_MAX_RESPONSE_HEAD (16 * 1024)
#define H1_MAX_RESPONSE      (64 * 1024 * 1024)

enum timer_mode { TM_NONE = 0, TM_IDLE, TM_READ, TM_LINGER };

struct h1_conn;
struct h1_req;
struct h2_link;

/* How a request is answered on its transport. The caller has validated the
 * answer; respond frees |req|. */
struct h1_req_ops {
    int (*alive)(const struct h1_req *req);
    int (*respond)(struct h1_req *req, int status, const char *ctype, const uint8_t *body,
                   size_t len, const struct h1_header *extra, size_t nextra);
};

struct h1_req {
    const struct h1_req_ops *ops;
    struct h1_conn *conn;      /* HTTP/1.1: NULL once orphaned */
    struct h2_server_conn *h2; /* HTTP/2: NULL once orphaned */
    int32_t h2_stream;
    struct h1_req *next;
    struct h1_message *msg; /* NULL for the server's own error answers */
    uint8_t *resp;
    size_t resp_len;
    unsigned dispatched : 1;
    unsigned answered : 1;
    unsigned close_after : 1;
    char peer[sizeof(((struct rt_stream *)0)->peer)]; /* a copy: requests outlive connections */
};

struct h1_server {
    uv_loop_t *loop;
    struct h1_server_opts opts;
    h1_request_cb cb;
    void *ud;
    struct h1_conn *conns;
    struct h2_link *h2conns;
    size_t nconns;          /* both kinds */
    uv_timer_t drain_timer; /* runs the drain callback outside h1_server_drain */
    h1_server_drain_cb drain_cb;
    void *drain_ud;
    int draining;
};

struct h1_conn {
    struct h1_server *srv; /* NULL once detached from a freed registry */
    struct h1_conn *prev, *next;
    uv_loop_t *loop;
    struct rt_stream *s;
    struct h1_parser *parser;
    struct h1_server_opts opts;
    h1_request_cb cb;
    void *ud;
    uv_timer_t timer;
    enum timer_mode tmode;
    struct rt_buf inbuf;
    struct h1_req *head, *tail;
    size_t nout; /* requests queued and not yet written */
    int handles;
    unsigned closing : 1;
    unsigned lingering : 1;
    unsigned no_more : 1; /* take no further requests (close / error / drain) */
    unsigned peer_eof : 1;
    unsigned reading : 1;
    unsigned in_process : 1;
    unsigned again : 1;
    unsigned sniffed : 1; /* ALPN looked at (first bytes seen) */
};

/* An HTTP/2 connection in a registry (srv NULL once the registry is gone). */
struct h2_link {
    struct h1_server *srv;
    struct h2_link *prev, *next;
    struct h2_server_conn *k;
    char peer[sizeof(((struct rt_stream *)0)->peer)];
    h1_request_cb cb;
    void *ud;
};

static void conn_process(struct h1_conn *c);
static int h1_alive(const struct h1_req *req);
static int h1_respond(struct h1_req *req, int status, const char *content_type, const uint8_t *body,
                      size_t len, const struct h1_header *extra, size_t nextra);
static const struct h1_req_ops kH1Ops = {h1_alive, h1_respond};
static void conn_close(struct h1_conn *c);
static int stream_read_on(struct h1_conn *c);

/* ---- responses ---- */

static const struct {
    int code;
    const char *reason;
} kReasons[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {413, "Content Too Large"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Content"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

static const char *reason_phrase(int status)
{
    for (size_t i = 0; i < sizeof(kReasons) / sizeof(kReasons[0]); i++)
        if (kReasons[i].code == status)
            return kReasons[i].reason;
    return "Status";
}

static int header_text_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

static void build_response(struct rt_buf *out, int status, const char *ctype, const uint8_t *body,
                           size_t len, const struct h1_header *extra, size_t nextra, int close,
                           int head_only)
{
    rt_buf_init(out, H1_MAX_RESPONSE_HEAD + len);
    rt_buf_appendf(out, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    if (ctype)
        rt_buf_appendf(out, "Content-Type: %s\r\n", ctype);
    rt_buf_appendf(out, "Content-Length: %zu\r\n", len);
    char date[RT_HTTP_DATE_CHARS + 1];
    rt_http_date(date);
    rt_buf_appendf(out, "Date: %s\r\n", date);
    rt_buf_append_str(out, close ? "Connection: close\r\n" : "Connection: keep-alive\r\n");
    for (size_t i = 0; i < nextra; i++)
        if (out->len + strlen(extra[i].name) + strlen(extra[i].value) + 4 < H1_MAX_RESPONSE_HEAD)
            rt_buf_appendf(out, "%s: %s\r\n", extra[i].name, extra[i].value);
    rt_buf_append_str(out, "\r\n");
    if (!head_only && len)
        rt_buf_append(out, body, len);
}

int h1_error_json(struct rt_buf *out, const char *code, const char *message)
{
    static const char hex[] = "0123456789abcdef";
    int rc = rt_buf_append_str(out, "{\"error\":\"");
    const char *parts[2] = {code ? code : "error", message};
    for (int k = 0; k < 2 && rc == 0; k++) {
        if (k == 1) {
            if (!message)
                break;
            rc = rt_buf_append_str(out, "\",\"message\":\"");
        }
        for (const unsigned char *p = (const unsigned char *)parts[k]; *p && rc == 0; p++) {
            if (*p == '"' || *p == '\\') {
                char esc[2] = {'\\', (char)*p};
                rc = rt_buf_append(out, esc, 2);
            } else if (*p < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
                rc = rt_buf_append(out, esc, 6);
            } else {
                rc = rt_buf_append(out, p, 1);
            }
        }
    }
    if (rc == 0)
        rc = rt_buf_append_str(out, "\"}");
    return rc;
}

static void req_free(struct h1_req *r)
{
    h1_message_free(r->msg);
    ens_free(r->resp);
    ens_free(r);
}

static void conn_linger(struct h1_conn *c);

/* conn_flush writes every answered request at the head of the queue. */
static void conn_flush(struct h1_conn *c)
{
    int close_now = 0;
    while (!c->closing && c->head && c->head->answered) {
        struct h1_req *r = c->head;
        c->head = r->next;
        if (!c->head)
            c->tail = NULL;
        c->nout--;
        if (!c->lingering)
            (void)rt_stream_write(c->s, r->resp, r->resp_len); /* failures come via read */
        close_now |= r->close_after;
        req_free(r);
    }
    if (c->closing)
        return;
    if (close_now || (c->no_more && c->nout == 0))
        conn_linger(c);
    else if (c->peer_eof && c->nout == 0)
        conn_close(c);
}

/* queue_error appends the server's own answer (400/413/431/408) behind the
 * requests already queued and stops taking new ones. */
static void queue_error(struct h1_conn *c, int status, const char *code, const char *message)
{
    struct rt_buf body, out;
    rt_buf_init(&body, 1024);
    h1_error_json(&body, code, message);
    build_response(&out, status, "application/json", body.data, body.len, NULL, 0, 1, 0);
    rt_buf_cleanup(&body);
    struct h1_req *r = ens_calloc(1, sizeof(*r));
    r->ops = &kH1Ops;
    r->answered = r->dispatched = r->close_after = 1;
    r->resp = rt_buf_take(&out, &r->resp_len);
    r->conn = c;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->nout++;
    c->no_more = 1;
    conn_flush(c);
}

int h1_req_respond(struct h1_req *req, int status, const char *content_type, const uint8_t *body,
                   size_t len, const struct h1_header *extra, size_t nextra)
{
    if (!req->ops->alive(req)) {
        req_free(req);
        return ENS_ECLOSED;
    }
    int rc = 0;
    int ok = status >= 100 && status <= 999 && len <= H1_MAX_RESPONSE &&
             (!content_type || header_text_ok(content_type));
    for (size_t i = 0; ok && i < nextra; i++)
        ok = extra[i].name && extra[i].value && extra[i].name[0] && header_text_ok(extra[i].name) &&
             header_text_ok(extra[i].value);
    if (!ok) {
        static const char kBody[] = "{\"error\":\"internal\",\"message\":\"bad response\"}";
        status = 500;
        content_type = "application/json";
        body = (const uint8_t *)kBody;
        len = sizeof(kBody) - 1;
        extra = NULL;
        nextra = 0;
        rc = ENS_EINVAL;
    }
    int rc2 = req->ops->respond(req, status, content_type, body, len, extra, nextra);
    return rc ? rc : rc2;
}

static int h1_alive(const struct h1_req *req)
{
    return req->conn != NULL;
}

static int h1_respond(struct h1_req *req, int status, const char *content_type, const uint8_t *body,
                      size_t len, const struct h1_header *extra, size_t nextra)
{
    struct h1_conn *c = req->conn;
    /* Only the last request in the queue may end the connection: an earlier
     * one answered while a later one is closing (or is an error of ours)
     * keeps it, or the later one's answer would be lost (RFC 9112 9.3.2). */
    int close =
        req->close_after || ((c->no_more || (c->srv && c->srv->draining)) && req->next == NULL);
    int head_only = req->msg && req->msg->method && strcmp(req->msg->method, "HEAD") == 0;
    struct rt_buf out;
    build_response(&out, status, content_type, body, len, extra, nextra, close, head_only);
    req->close_after = close;
    req->resp = rt_buf_take(&out, &req->resp_len);
    req->answered = 1;
    h1_message_free(req->msg);
    req->msg = NULL;
    conn_flush(c);
    conn_process(c); /* a slot may have opened for paused pipelined input */
    return 0;
}

/* ---- HTTP/2 requests ---- */

static int h2_alive(const struct h1_req *req)
{
    return req->h2 != NULL;
}

static int h2_respond(struct h1_req *req, int status, const char *content_type, const uint8_t *body,
                      size_t len, const struct h1_header *extra, size_t nextra)
{
    int head_only = req->msg && req->msg->method && strcmp(req->msg->method, "HEAD") == 0;
    int rc = h2_server_conn_respond(req->h2, req->h2_stream, status, content_type, body, len, extra,
                                    nextra, head_only);
    req_free(req);
    return rc;
}

static const struct h1_req_ops kH2Ops = {h2_alive, h2_respond};

static void h2_on_request(void *ud, struct h2_server_conn *k, int32_t stream_id,
                          struct h1_message *msg, void **cookie)
{
    struct h2_link *g = ud;
    struct h1_req *r = ens_calloc(1, sizeof(*r));
    r->ops = &kH2Ops;
    r->h2 = k;
    memcpy(r->peer, g->peer, sizeof(r->peer));
    r->h2_stream = stream_id;
    r->msg = msg;
    r->dispatched = 1;
    *cookie = r; /* before the callback: it may answer and free |r| */
    g->cb(r, g->ud);
}

static void h2_on_stream_gone(void *ud, void *cookie)
{
    (void)ud;
    struct h1_req *r = cookie;
    if (r)
        r->h2 = NULL; /* the handler still holds it; respond just frees it */
}

static void srv_conn_gone(struct h1_server *srv);

static void h2_on_closed(void *ud, struct h2_server_conn *k)
{
    (void)k;
    struct h2_link *g = ud;
    struct h1_server *srv = g->srv;
    if (srv) {
        if (g->prev)
            g->prev->next = g->next;
        else
            srv->h2conns = g->next;
        if (g->next)
            g->next->prev = g->prev;
        srv->nconns--;
    }
    ens_free(g);
    if (srv)
        srv_conn_gone(srv);
}

static const struct h2_server_cbs kH2Cbs = {h2_on_request, h2_on_stream_gone, h2_on_closed};

int h1_req_respond_error_with(struct h1_req *req, int status, const char *code, const char *message,
                              const struct h1_header *extra, size_t nextra)
{
    struct rt_buf body;
    rt_buf_init(&body, 4096);
    if (h1_error_json(&body, code, message) != 0) {
        rt_buf_reset(&body);
        h1_error_json(&body, code, NULL);
    }
    int rc = h1_req_respond(req, status, "application/json", body.data, body.len, extra, nextra);
    rt_buf_cleanup(&body);
    return rc;
}

int h1_req_respond_error(struct h1_req *req, int status, const char *code, const char *message)
{
    return h1_req_respond_error_with(req, status, code, message, NULL, 0);
}

/* ---- accessors ---- */

const char *h1_req_method(const struct h1_req *req)
{
    return req->msg ? req->msg->method : "";
}

struct span h1_req_target(const struct h1_req *req)
{
    if (!req->msg)
        return span_make(NULL, 0);
    struct span t = span_make(req->msg->target, req->msg->target_len);
    /* RFC 9112 3.2.2: absolute-form ("http://host/path", as proxies send)
     * is accepted; routes see its path. */
    static const char *const kSchemes[] = {"http://", "https://"};
    for (size_t i = 0; i < 2; i++) {
        size_t at = strlen(kSchemes[i]);
        if (t.len < at || !span_eq_nocase(span_make(t.p, at), kSchemes[i]))
            continue;
        while (at < t.len && t.p[at] != '/' && t.p[at] != '?')
            at++;
        if (at == t.len)
            return span_make("/", 1);
        return span_make(t.p + at, t.len - at);
    }
    return t;
}

struct span h1_req_header(const struct h1_req *req, const char *name)
{
    return h1_message_header(req->msg, name);
}

const char *h1_req_peer(const struct h1_req *req)
{
    return req->peer;
}

struct span h1_req_body(const struct h1_req *req)
{
    return req->msg ? rt_buf_span(&req->msg->body) : span_make(NULL, 0);
}

/* ---- the connection ---- */

/* host_count returns how many Host fields |m| has (0, 1, or 2 for "more"). */
static int host_count(const struct h1_message *m)
{
    int n = 0;
    for (size_t i = 0; i < m->nheaders && n < 2; i++)
        n += m->headers[i].name_len == 4 && strncasecmp(m->headers[i].name, "host", 4) == 0;
    return n;
}

static int on_message(struct h1_message *m, void *ud)
{
    struct h1_conn *c = ud;
    /* RFC 9112 3.2: an HTTP/1.1 request without a Host, or with two, is 400
     * (and the connection ends, as for any malformed request). */
    if (m->http_major == 1 && m->http_minor >= 1 && host_count(m) != 1) {
        h1_message_free(m);
        queue_error(c, 400, "bad_request", "an HTTP/1.1 request has exactly one Host field");
        return H1_PARSER_PAUSE;
    }
    struct h1_req *r = ens_calloc(1, sizeof(*r));
    r->ops = &kH1Ops;
    r->conn = c;
    r->msg = m;
    memcpy(r->peer, c->s->peer, sizeof(r->peer));
    r->close_after = !m->keep_alive;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->nout++;
    if (r->close_after) {
        c->no_more = 1;
        return H1_PARSER_PAUSE;
    }
    return c->nout >= H1_MAX_PIPELINED ? H1_PARSER_PAUSE : 0;
}

static void on_timer(uv_timer_t *t)
{
    struct h1_conn *c = t->data;
    if (c->tmode == TM_READ)
        RT_LOG_I("h1.read_timeout", "peer=%s", c->s->peer);
    c->tmode = TM_NONE;
    conn_close(c);
}

static void timer_set(struct h1_conn *c, enum timer_mode mode, uint64_t ms)
{
    if (mode == c->tmode)
        return;
    c->tmode = mode;
    if (mode == TM_NONE)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void conn_update(struct h1_conn *c)
{
    if (c->closing || c->lingering)
        return;
    if (h1_parser_in_message(c->parser))
        timer_set(c, TM_READ, c->opts.read_timeout_ms);
    else if (c->nout == 0)
        timer_set(c, TM_IDLE, c->opts.idle_timeout_ms);
    else
        timer_set(c, TM_NONE, 0);
    int want = !c->no_more && !c->peer_eof && c->nout < H1_MAX_PIPELINED && c->inbuf.len == 0;
    if (want && !c->reading)
        c->reading = stream_read_on(c) == 0;
    else if (!want && c->reading) {
        rt_stream_read_stop(c->s);
        c->reading = 0;
    }
}

static void dispatch_new(struct h1_conn *c)
{
    for (;;) {
        struct h1_req *r = c->head;
        while (r && r->dispatched)
            r = r->next;
        if (!r || c->closing)
            return;
        r->dispatched = 1;
        c->cb(r, c->ud);
    }
}

static void conn_process(struct h1_conn *c)
{
    if (c->in_process) {
        c->again = 1;
        return;
    }
    c->in_process = 1;
    do {
        c->again = 0;
        while (!c->closing && !c->no_more && c->nout < H1_MAX_PIPELINED && c->inbuf.len) {
            ssize_t n = h1_parser_feed(c->parser, c->inbuf.data, c->inbuf.len);
            if (n < 0) {
                rt_buf_reset(&c->inbuf);
                int st = h1_parser_error_status(c->parser);
                RT_LOG_I("h1.bad_request", "peer=%s status=%d", c->s->peer, st);
                if (st == 413)
                    queue_error(c, 413, "too_large", "request body too large");
                else if (st == 431)
                    queue_error(c, 431, "too_large", "request headers too large");
                else
                    queue_error(c, 400, "bad_request", "malformed HTTP request");
                break;
            }
            rt_buf_consume(&c->inbuf, (size_t)n);
            /* The interim answer goes out only when nothing is owed before
             * it; a pipelining client that asked for one just waits longer. */
            if (h1_parser_continue_due(c->parser) && c->nout == 0)
                (void)rt_stream_write(c->s, (const uint8_t *)kContinue, sizeof(kContinue) - 1);
        }
        if (c->no_more && c->inbuf.len)
            rt_buf_reset(&c->inbuf); /* bytes after a closing request are ignored */
        if (!c->closing)
            dispatch_new(c);
        if (!c->closing)
            conn_flush(c);
    } while (c->again && !c->closing);
    c->in_process = 0;
    conn_update(c);
}

static void on_timer_closed(uv_handle_t *h);

/* conn_to_h2 gives the stream of a connection that negotiated "h2" (and the
 * bytes just read from it) to an HTTP/2 connection and retires this one
 * without closing the stream. Safe from inside the stream's read callback:
 * the new reader takes over the rest of the current delivery. */
static void conn_to_h2(struct h1_conn *c, const uint8_t *data, size_t len)
{
    struct h2_link *g = ens_calloc(1, sizeof(*g));
    g->srv = c->srv;
    g->cb = c->cb;
    g->ud = c->ud;
    memcpy(g->peer, c->s->peer, sizeof(g->peer));
    if (g->srv) {
        g->next = g->srv->h2conns;
        if (g->srv->h2conns)
            g->srv->h2conns->prev = g;
        g->srv->h2conns = g;
        g->srv->nconns++;
    }
    struct rt_stream *s = c->s;
    c->s = NULL;
    c->closing = 1;
    c->handles--; /* the stream is no longer ours to close */
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    g->k = h2_server_conn_new(s, &c->opts, &kH2Cbs, g);
    h2_server_conn_start(g->k, data, len);
}

static void on_read(struct rt_stream *s, int status, const uint8_t *data, size_t len, void *ud)
{
    struct h1_conn *c = ud;
    if (c->closing)
        return;
    if (c->lingering) {
        if (status != 0)
            conn_close(c);
        return;
    }
    if (status != 0) {
        c->reading = 0;
        c->peer_eof = 1;
        if (status != ENS_ECLOSED || c->nout == 0) {
            conn_close(c);
            return;
        }
        /* Half-closed client with answers pending: finish them, then close. */
        c->no_more = 1;
        conn_update(c);
        return;
    }
    if (!c->sniffed) {
        c->sniffed = 1;
        const char *alpn = rt_stream_alpn(s);
        if (alpn && strcmp(alpn, "h2") == 0) {
            conn_to_h2(c, data, len);
            return;
        }
    }
    if (rt_buf_append(&c->inbuf, data, len) != 0) {
        conn_close(c);
        return;
    }
    conn_process(c);
}

static int stream_read_on(struct h1_conn *c)
{
    return rt_stream_read_start(c->s, on_read, c);
}

static void conn_linger(struct h1_conn *c)
{
    if (c->lingering || c->closing)
        return;
    c->lingering = 1;
    c->no_more = 1;
    rt_stream_shutdown(c->s);
    c->tmode = TM_LINGER;
    uv_timer_start(&c->timer, on_timer, H1_LINGER_MS, 0);
    if (!c->peer_eof && !c->reading && stream_read_on(c) == 0)
        c->reading = 1;
    if (c->peer_eof)
        conn_close(c);
}

static void conn_release(struct h1_conn *c)
{
    struct h1_server *srv = c->srv;
    h1_parser_free(c->parser);
    rt_buf_cleanup(&c->inbuf);
    if (srv) {
        if (c->prev)
            c->prev->next = c->next;
        else
            srv->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        srv->nconns--;
    }
    ens_free(c);
    if (srv)
        srv_conn_gone(srv);
}

/* srv_conn_gone runs the drain callback once the last connection is gone. */
static void srv_conn_gone(struct h1_server *srv)
{
    if (srv->draining && srv->nconns == 0 && srv->drain_cb) {
        h1_server_drain_cb cb = srv->drain_cb;
        srv->drain_cb = NULL;
        cb(srv, srv->drain_ud);
    }
}

static void on_handle_closed(struct h1_conn *c)
{
    if (--c->handles == 0)
        conn_release(c);
}

static void on_stream_closed(struct rt_stream *s, void *ud)
{
    on_handle_closed(ud);
}

static void on_timer_closed(uv_handle_t *h)
{
    on_handle_closed(h->data);
}

static void conn_close(struct h1_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    struct h1_req *r = c->head;
    while (r) {
        struct h1_req *next = r->next;
        if (r->dispatched && !r->answered) {
            r->conn = NULL; /* the handler still holds it */
            r->next = NULL;
        } else {
            req_free(r);
        }
        r = next;
    }
    c->head = c->tail = NULL;
    c->nout = 0;
    rt_stream_close(c->s, on_stream_closed, c);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static int conn_new(struct h1_server *srv, uv_loop_t *loop, struct rt_stream *s,
                    const struct h1_server_opts *o, h1_request_cb cb, void *ud)
{
    struct h1_conn *c = ens_calloc(1, sizeof(*c));
    c->srv = srv;
    c->loop = loop;
    c->s = s;
    c->cb = cb;
    c->ud = ud;
    if (o)
        c->opts = *o;
    if (!c->opts.max_body)
        c->opts.max_body = H1_DEFAULT_MAX_BODY;
    if (!c->opts.idle_timeout_ms)
        c->opts.idle_timeout_ms = H1_IDLE_TIMEOUT_MS;
    if (!c->opts.read_timeout_ms)
        c->opts.read_timeout_ms = H1_READ_TIMEOUT_MS;
    if (uv_timer_init(loop, &c->timer) != 0) {
        ens_free(c);
        rt_stream_close(s, NULL, NULL);
        return ENS_EIO;
    }
    c->timer.data = c;
    c->handles = 2;
    c->parser = h1_parser_new(H1_PARSE_REQUEST, c->opts.max_body, on_message, c);
    rt_buf_init(&c->inbuf, H1_SERVER_INBUF_MAX);
    if (srv) {
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
    }
    int rc = stream_read_on(c);
    if (rc) {
        conn_close(c);
        return rc;
    }
    c->reading = 1;
    timer_set(c, TM_IDLE, c->opts.idle_timeout_ms);
    return 0;
}

/* ---- the registry ---- */

struct h1_server *h1_server_new(uv_loop_t *loop, const struct h1_server_opts *o, h1_request_cb cb,
                                void *ud)
{
    struct h1_server *srv = ens_calloc(1, sizeof(*srv));
    srv->loop = loop;
    if (o)
        srv->opts = *o;
    srv->cb = cb;
    srv->ud = ud;
    uv_timer_init(loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
    return srv;
}

int h1_server_add(struct h1_server *srv, struct rt_stream *s)
{
    if (srv->draining) {
        rt_stream_close(s, NULL, NULL);
        return ENS_ECLOSED;
    }
    if (srv->nconns >= H1_MAX_CONNECTIONS) {
        RT_LOG_W("h1.too_many_connections", "peer=%s", s->peer);
        rt_stream_close(s, NULL, NULL);
        return ENS_EFULL;
    }
    return conn_new(srv, srv->loop, s, &srv->opts, srv->cb, srv->ud);
}

size_t h1_server_conn_count(const struct h1_server *srv)
{
    return srv->nconns;
}

static void on_drain_timer(uv_timer_t *t)
{
    struct h1_server *srv = t->data;
    if (srv->nconns == 0 && srv->drain_cb) {
        h1_server_drain_cb cb = srv->drain_cb;
        srv->drain_cb = NULL;
        cb(srv, srv->drain_ud);
    }
}

void h1_server_drain(struct h1_server *srv, h1_server_drain_cb cb, void *ud)
{
    srv->draining = 1;
    srv->drain_cb = cb;
    srv->drain_ud = ud;
    for (struct h1_conn *c = srv->conns; c; c = c->next) {
        if (c->closing || c->lingering)
            continue;
        c->no_more = 1;
        if (c->nout == 0)
            conn_linger(c); /* idle, or mid-request: nothing owed */
        else
            conn_update(c);
    }
    /* GOAWAY; each closes once the streams it took are answered. */
    for (struct h2_link *g = srv->h2conns; g; g = g->next)
        h2_server_conn_drain(g->k);
    if (srv->nconns == 0)
        uv_timer_start(&srv->drain_timer, on_drain_timer, 0, 0);
}

static void on_srv_closed(uv_handle_t *h)
{
    ens_free(h->data);
}

void h1_server_free(struct h1_server *srv)
{
    if (!srv)
        return;
    struct h1_conn *c = srv->conns;
    while (c) {
        struct h1_conn *next = c->next;
        c->srv = NULL;
        c->prev = c->next = NULL;
        conn_close(c);
        c = next;
    }
    srv->conns = NULL;
    struct h2_link *g = srv->h2conns;
    while (g) {
        struct h2_link *next = g->next;
        g->srv = NULL;
        g->prev = g->next = NULL;
        h2_server_conn_close(g->k); /* orphans its requests; frees |g| later */
        g = next;
    }
    srv->h2conns = NULL;
    srv->nconns = 0;
    uv_close((uv_handle_t *)&srv->drain_timer, on_srv_closed);
}
