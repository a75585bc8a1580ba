/* HTTP/2 client over nghttp2, driven from memory (see h2_client.h).
 *
 * Structure: a client owns requests (queued, in flight, or done and awaiting
 * their callback) and at most one live connection. A connection (struct conn)
 * owns its rt_stream and nghttp2 session and outlives its detachment from the
 * client until the stream's close callback, so a loss can be handled while the
 * next connection is already being made.
 *
 * Re-entrancy: nghttp2 callbacks only move requests between lists; user
 * callbacks run from client_run(), after nghttp2 has returned, so a callback may
 * submit new requests or free the client without pulling state from under
 * nghttp2 (house rule 7). */
#include "protocols/h2_client.h"

#include <nghttp2/nghttp2.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/h2_client_int.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net.h"

/* Private limits; candidates for protocols/limits.h. */
#define H2_MAX_RESPONSE_HEADERS      64
#define H2_MAX_RESPONSE_HEADER_BYTES (16 * 1024)
#define H2_RECONNECT_MIN_MS          1000
#define H2_RECONNECT_MAX_MS          60000
/* Our advertised receive window: responses are small, and a large window
 * keeps WINDOW_UPDATE chatter away. */
#define H2_LOCAL_WINDOW (1 << 20)

enum req_where { REQ_NONE, REQ_QUEUED, REQ_INFLIGHT, REQ_DONE };

struct req_list {
    struct h2_req *head, *tail;
    size_t n;
};

struct h2_req {
    struct h2_req *prev, *next;
    enum req_where where;
    struct conn *conn; /* while in flight */
    int32_t stream_id;
    int headers_sent;
    int complete; /* END_STREAM received */
    int err;
    uint64_t deadline_ms;
    h2_response_cb cb;
    void *ud;
    /* request */
    nghttp2_nv *nva;
    size_t nnv;
    uint8_t *body;
    size_t body_len, body_off;
    /* response */
    int status;
    struct h2_header *rhdrs;
    size_t nrhdrs;
    size_t rhdr_bytes;
    struct rt_buf rbody;
};

enum client_state { CS_IDLE, CS_CONNECTING, CS_CONNECTED, CS_BACKOFF };

struct conn {
    struct h2_client *c;     /* NULL once detached */
    struct h2_client *owner; /* kept: the client's memory outlives its conns */
    struct rt_stream *s;
    nghttp2_session *ng;
    int goaway;             /* no new streams */
    int32_t goaway_last_id; /* valid when goaway came from the peer */
    int peer_goaway;
    int probe_open;   /* a 200 was seen (probe_first) */
    int got_response; /* the server answered something: it works */
    size_t inflight;
    int closing;
};

struct h2_client {
    uv_loop_t *loop;
    char *host;
    uint16_t port;
    struct rt_tls_ctx *tls;
    enum client_state state;
    struct conn *conn;     /* the one new streams go to */
    struct conn *draining; /* told to finish its streams (h2_client_reconnect) */
    struct req_list queue, inflight, done;
    uv_timer_t kick;     /* zero-delay run, for work requested outside client_run */
    uv_timer_t deadline; /* earliest request deadline */
    uv_timer_t backoff;  /* reconnect */
    uint64_t backoff_ms;
    int probe_first;
    int depth;        /* client_run / callback nesting */
    int free_pending; /* h2_client_free was called inside a callback */
    int freeing;
    int handles_open; /* timers, a pending connect and live conns hold the memory */
    void (*freed_cb)(void *ud);
    void *freed_ud;
    struct h2_client_stats st;
};

static void client_run(struct h2_client *c);
static void conn_lost(struct conn *k, int err);
static void backoff_cb(uv_timer_t *t);
static void deadline_cb(uv_timer_t *t);

/* ---- request lists ---- */

static void list_push(struct req_list *l, struct h2_req *r, enum req_where w, int front)
{
    r->where = w;
    r->prev = r->next = NULL;
    if (!l->head) {
        l->head = l->tail = r;
    } else if (front) {
        r->next = l->head;
        l->head->prev = r;
        l->head = r;
    } else {
        r->prev = l->tail;
        l->tail->next = r;
        l->tail = r;
    }
    l->n++;
}

static void list_remove(struct req_list *l, struct h2_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    r->where = REQ_NONE;
    l->n--;
}

static struct req_list *list_of(struct h2_client *c, struct h2_req *r)
{
    switch (r->where) {
    case REQ_QUEUED:
        return &c->queue;
    case REQ_INFLIGHT:
        return &c->inflight;
    case REQ_DONE:
        return &c->done;
    default:
        return NULL;
    }
}

static void req_move(struct h2_client *c, struct h2_req *r, enum req_where w, int front)
{
    struct req_list *from = list_of(c, r);
    if (from)
        list_remove(from, r);
    if (w == REQ_QUEUED)
        list_push(&c->queue, r, w, front);
    else if (w == REQ_INFLIGHT)
        list_push(&c->inflight, r, w, front);
    else if (w == REQ_DONE)
        list_push(&c->done, r, w, front);
}

static void req_reset_response(struct h2_req *r)
{
    for (size_t i = 0; i < r->nrhdrs; i++) {
        ens_free((char *)r->rhdrs[i].name);
        ens_free((char *)r->rhdrs[i].value);
    }
    ens_free(r->rhdrs);
    r->rhdrs = NULL;
    r->nrhdrs = 0;
    r->rhdr_bytes = 0;
    r->status = 0;
    r->complete = 0;
    r->err = 0;
    rt_buf_reset(&r->rbody);
}

static void req_free(struct h2_req *r)
{
    req_reset_response(r);
    rt_buf_cleanup(&r->rbody);
    for (size_t i = 0; i < r->nnv; i++) {
        ens_free(r->nva[i].name);
        /* values include authorization: a provider token or OAuth bearer */
        ens_wipe(r->nva[i].value, r->nva[i].valuelen);
        ens_free(r->nva[i].value);
    }
    ens_free(r->nva);
    ens_free(r->body);
    ens_free(r);
}

/* Detaches |r| from its stream (if any) and moves it to the done list. */
static void req_finish(struct h2_client *c, struct h2_req *r, int err)
{
    if (r->where == REQ_INFLIGHT && r->conn) {
        struct conn *k = r->conn;
        if (k->ng && r->stream_id > 0)
            nghttp2_session_set_stream_user_data(k->ng, r->stream_id, NULL);
        if (k->inflight)
            k->inflight--;
        r->conn = NULL;
    }
    r->err = err;
    req_move(c, r, REQ_DONE, 0);
}

/* Puts a request the server never processed back at the head of the queue. */
static void req_requeue(struct h2_client *c, struct h2_req *r)
{
    if (r->where == REQ_INFLIGHT && r->conn) {
        struct conn *k = r->conn;
        if (k->ng && r->stream_id > 0)
            nghttp2_session_set_stream_user_data(k->ng, r->stream_id, NULL);
        if (k->inflight)
            k->inflight--;
        r->conn = NULL;
    }
    req_reset_response(r);
    r->stream_id = 0;
    r->headers_sent = 0;
    r->body_off = 0;
    c->st.retried++;
    req_move(c, r, REQ_QUEUED, 1);
}

/* ---- nghttp2 callbacks: they only update state ---- */

static ssize_t body_read_cb(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct h2_req *r = src->ptr;
    size_t left = r->body_len - r->body_off;
    size_t n = left < len ? left : len;
    if (n)
        memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    if (r->body_off == r->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type == NGHTTP2_HEADERS) {
        struct h2_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (r)
            r->headers_sent = 1;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    return 0;
}

static int parse_status(const uint8_t *v, size_t len, int *out)
{
    struct span s = span_make(v, len);
    uint64_t st;
    if (len != 3 || !span_get_decimal(&s, 999, &st) || s.len || st < 100)
        return 0;
    *out = (int)st;
    return 1;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!r || r->err)
        return 0;
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS && r->status >= 100 && r->status < 200) {
        /* A final response after an informational one starts afresh. */
        req_reset_response(r);
    }
    struct span n = span_make(name, namelen);
    if (span_eq(n, ":status")) {
        if (!parse_status(value, valuelen, &r->status))
            r->err = ENS_EPROTO;
        return 0;
    }
    if (namelen && name[0] == ':')
        return 0;
    r->rhdr_bytes += namelen + valuelen;
    if (r->nrhdrs >= H2_MAX_RESPONSE_HEADERS || r->rhdr_bytes > H2_MAX_RESPONSE_HEADER_BYTES) {
        r->err = ENS_ETOOBIG;
        return 0;
    }
    if (!r->rhdrs)
        r->rhdrs = ens_calloc(H2_MAX_RESPONSE_HEADERS, sizeof(*r->rhdrs));
    r->rhdrs[r->nrhdrs].name = ens_memdup(name, namelen);
    r->rhdrs[r->nrhdrs].value = ens_memdup(value, valuelen);
    r->rhdrs[r->nrhdrs].no_index = 0;
    r->nrhdrs++;
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
    struct h2_req *r = nghttp2_session_get_stream_user_data(ng, sid);
    if (!r || r->err)
        return 0;
    if (rt_buf_append(&r->rbody, data, len) != 0) {
        r->err = ENS_ETOOBIG;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
    }
    return 0;
}

static void log_goaway(const nghttp2_goaway *g)
{
    /* The debug data is the peer's text (APNs: {"reason":...}); keep only
     * printable ASCII so nothing odd reaches the log. */
    char reason[129];
    size_t n = 0;
    for (size_t i = 0; i < g->opaque_data_len && n < sizeof(reason) - 1; i++) {
        uint8_t ch = g->opaque_data[i];
        reason[n++] = (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') ? (char)ch : '.';
    }
    reason[n] = 0;
    RT_LOG_W("h2.goaway", "error_code=%u last_stream_id=%d debug=\"%s\"", g->error_code,
             g->last_stream_id, reason);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct conn *k = ud;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct h2_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (r)
            r->complete = 1;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        k->goaway = 1;
        k->peer_goaway = 1;
        k->goaway_last_id = f->goaway.last_stream_id;
        log_goaway(&f->goaway);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t error_code, void *ud)
{
    struct conn *k = ud;
    struct h2_req *r = nghttp2_session_get_stream_user_data(ng, sid);
    if (!r || !k->c)
        return 0;
    struct h2_client *c = k->c;
    if (error_code == NGHTTP2_REFUSED_STREAM ||
        (k->peer_goaway && sid > k->goaway_last_id && r->status == 0)) {
        req_requeue(c, r);
        return 0;
    }
    int err = r->err;
    if (!err && !(r->complete && r->status >= 200))
        err = ENS_ECLOSED;
    if (r->status >= 200)
        k->got_response = 1;
    if (!err && r->status == 200)
        k->probe_open = 1;
    req_finish(c, r, err);
    return 0;
}

static ssize_t no_send(nghttp2_session *ng, const uint8_t *d, size_t n, int flags, void *ud)
{
    /* Only mem_send is used; reaching this would be a bug. */
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static nghttp2_session_callbacks *callbacks(void)
{
    /* Built once; nghttp2 copies it into each session. */
    static nghttp2_session_callbacks *cbs;
    if (!cbs) {
        if (nghttp2_session_callbacks_new(&cbs) != 0)
            abort();
        nghttp2_session_callbacks_set_send_callback(cbs, no_send);
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    }
    return cbs;
}

/* nghttp2 allocates through our allocator so leak counting covers it. */
static void *ng_malloc(size_t n, void *ud)
{
    return ens_malloc(n ? n : 1);
}
static void ng_free(void *p, void *ud)
{
    ens_free(p);
}
static void *ng_calloc(size_t a, size_t b, void *ud)
{
    return ens_calloc(a ? a : 1, b ? b : 1);
}
static void *ng_realloc(void *p, size_t n, void *ud)
{
    return ens_realloc(p, n ? n : 1);
}
static nghttp2_mem ng_mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};

/* ---- connections ---- */

static void client_unref(struct h2_client *c)
{
    if (--c->handles_open == 0 && c->freeing) {
        if (c->freed_cb)
            c->freed_cb(c->freed_ud);
        ens_free(c);
    }
}

static void conn_free(struct conn *k)
{
    if (k->ng)
        nghttp2_session_del(k->ng);
    struct h2_client *owner = k->owner;
    ens_free(k);
    client_unref(owner);
}

static void on_stream_closed(struct rt_stream *s, void *ud)
{
    conn_free(ud);
}

/* Detaches |k| from its client and closes it; memory goes in the close cb. */
static void conn_close(struct conn *k)
{
    if (k->closing)
        return;
    k->closing = 1;
    if (k->c && k->c->conn == k) {
        k->c->conn = NULL;
        k->c->state = CS_IDLE;
    }
    if (k->c && k->c->draining == k)
        k->c->draining = NULL;
    k->c = NULL;
    if (k->s)
        rt_stream_close(k->s, on_stream_closed, k);
    else
        conn_free(k);
}

/* Moves every request on |k| off it: never-sent or refused ones are queued
 * again, the rest fail with |err|. */
static void conn_drain(struct conn *k, int err)
{
    struct h2_client *c = k->c;
    if (!c)
        return;
    struct h2_req *r = c->inflight.head;
    while (r) {
        struct h2_req *next = r->next;
        if (r->conn == k) {
            int unseen = !r->headers_sent || (k->peer_goaway && r->stream_id > k->goaway_last_id);
            if (unseen)
                req_requeue(c, r);
            else
                req_finish(c, r, err);
        }
        r = next;
    }
}

static void schedule_reconnect(struct h2_client *c, int failed)
{
    if (!failed) {
        c->state = CS_IDLE;
        return;
    }
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : H2_RECONNECT_MIN_MS;
    if (c->backoff_ms > H2_RECONNECT_MAX_MS)
        c->backoff_ms = H2_RECONNECT_MAX_MS;
    /* +-20% jitter so that many clients do not reconnect in step. */
    uint64_t span = c->backoff_ms / 5;
    uint32_t r = 0;
    RAND_bytes((uint8_t *)&r, sizeof(r)); /* rand() is global state shared by all threads */
    uint64_t wait = c->backoff_ms - span + (span ? (uint64_t)r % (2 * span + 1) : 0);
    c->state = CS_BACKOFF;
    uv_timer_start(&c->backoff, backoff_cb, wait, 0);
}

static void conn_lost(struct conn *k, int err)
{
    struct h2_client *c = k->c;
    if (c) {
        RT_LOG_W("h2.conn_lost", "host=%s port=%u err=%s", c->host, (unsigned)c->port,
                 ens_err_name(err));
        int current = c->conn == k;
        conn_drain(k, ENS_ECLOSED);
        conn_close(k);
        /* A connection that had answered something reconnects at once; one
         * that died before any answer backs off, so a server that accepts and
         * drops never sees us loop (push.md 1.2). */
        if (current) {
            if (k->got_response)
                c->backoff_ms = 0;
            schedule_reconnect(c, !k->got_response);
        }
    } else {
        conn_close(k);
    }
}

static int conn_flush(struct conn *k)
{
    for (;;) {
        const uint8_t *out;
        ssize_t n = nghttp2_session_mem_send(k->ng, &out);
        if (n < 0)
            return ENS_EPROTO;
        if (n == 0)
            break;
        if (rt_stream_write(k->s, out, (size_t)n) != 0)
            return ENS_ECLOSED;
    }
    return 0;
}

static void on_read(struct rt_stream *s, int status, const uint8_t *data, size_t len, void *ud);

static struct conn *conn_new(struct h2_client *c, struct rt_stream *s)
{
    struct conn *k = ens_calloc(1, sizeof(*k));
    k->c = c;
    k->owner = c;
    k->s = s;
    if (nghttp2_session_client_new3(&k->ng, callbacks(), k, NULL, &ng_mem) != 0) {
        ens_free(k);
        return NULL;
    }
    c->handles_open++;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_LOCAL_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_RESPONSE_HEADER_BYTES},
    };
    nghttp2_submit_settings(k->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    return k;
}

static int client_attach(struct h2_client *c, struct rt_stream *s)
{
    struct conn *k = conn_new(c, s);
    if (!k) {
        rt_stream_close(s, NULL, NULL);
        return ENS_ENOMEM;
    }
    int rv = rt_stream_read_start(s, on_read, k);
    if (rv != 0) {
        k->c = NULL;
        conn_close(k);
        return rv;
    }
    c->conn = k;
    c->state = CS_CONNECTED;
    c->st.connects++;
    return 0;
}

static void on_connect(struct rt_stream *s, int status, void *ud)
{
    struct h2_client *c = ud;
    if (c->freeing) {
        /* h2_client_free waited for this callback to release the client. */
        if (s)
            rt_stream_close(s, NULL, NULL);
        c->state = CS_IDLE;
        client_unref(c);
        return;
    }
    c->handles_open--;
    if (status == 0) {
        const char *alpn = rt_stream_alpn(s);
        if (!alpn || strcmp(alpn, "h2") != 0) {
            rt_stream_close(s, NULL, NULL);
            status = ENS_EPROTO;
        }
    }
    if (status == 0)
        status = client_attach(c, s);
    if (status != 0) {
        RT_LOG_W("h2.connect_failed", "host=%s port=%u err=%s", c->host, (unsigned)c->port,
                 ens_err_name(status));
        schedule_reconnect(c, 1);
    }
    client_run(c);
}

static int client_connect(struct h2_client *c)
{
    struct rt_connect_opts o = {
        .host = c->host,
        .port = c->port,
        .tls = c->tls,
        .deadline_ms = uv_now(c->loop) + H2_CONNECT_TIMEOUT_MS,
    };
    c->state = CS_CONNECTING;
    int rv = rt_connect(c->loop, &o, on_connect, c);
    if (rv != 0) {
        RT_LOG_W("h2.connect_failed", "host=%s port=%u err=%s", c->host, (unsigned)c->port,
                 ens_err_name(rv));
        schedule_reconnect(c, 1);
        return rv;
    }
    /* The pending connect callback keeps the client memory alive. */
    c->handles_open++;
    return 0;
}

static void on_read(struct rt_stream *s, int status, const uint8_t *data, size_t len, void *ud)
{
    struct conn *k = ud;
    struct h2_client *c = k->c;
    if (!c)
        return;
    c->depth++;
    if (status != 0) {
        conn_lost(k, status);
    } else {
        ssize_t rv = nghttp2_session_mem_recv(k->ng, data, len);
        if (rv < 0) {
            RT_LOG_W("h2.protocol_error", "host=%s err=%s", c->host, nghttp2_strerror((int)rv));
            conn_lost(k, ENS_EPROTO);
        }
    }
    c->depth--;
    client_run(c);
}

/* ---- the run loop ---- */

static uint32_t stream_limit(struct h2_client *c, struct conn *k)
{
    uint32_t lim =
        nghttp2_session_get_remote_settings(k->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (lim > H2_MAX_CONCURRENT_STREAMS)
        lim = H2_MAX_CONCURRENT_STREAMS;
    if (c->probe_first && !k->probe_open && lim > 1)
        lim = 1;
    return lim;
}

static int submit_one(struct h2_client *c, struct conn *k, struct h2_req *r)
{
    nghttp2_data_provider prd = {.source = {.ptr = r}, .read_callback = body_read_cb};
    int32_t sid = nghttp2_submit_request(k->ng, NULL, r->nva, r->nnv, r->body ? &prd : NULL, r);
    if (sid < 0)
        return sid;
    r->stream_id = sid;
    r->conn = k;
    k->inflight++;
    req_move(c, r, REQ_INFLIGHT, 0);
    if (k->inflight > c->st.max_inflight)
        c->st.max_inflight = (uint32_t)k->inflight;
    return 0;
}

static void expire(struct h2_client *c, uint64_t now)
{
    struct h2_req *r = c->inflight.head;
    while (r) {
        struct h2_req *next = r->next;
        if (r->deadline_ms <= now) {
            struct conn *k = r->conn;
            if (k && k->ng && r->stream_id > 0)
                nghttp2_submit_rst_stream(k->ng, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL);
            req_finish(c, r, ENS_ETIMEDOUT);
        }
        r = next;
    }
    r = c->queue.head;
    while (r) {
        struct h2_req *next = r->next;
        if (r->deadline_ms <= now)
            req_finish(c, r, ENS_ETIMEDOUT);
        r = next;
    }
}

static void arm_deadline(struct h2_client *c, uint64_t now)
{
    uint64_t min = UINT64_MAX;
    for (struct h2_req *r = c->inflight.head; r; r = r->next)
        if (r->deadline_ms < min)
            min = r->deadline_ms;
    for (struct h2_req *r = c->queue.head; r; r = r->next)
        if (r->deadline_ms < min)
            min = r->deadline_ms;
    if (min == UINT64_MAX) {
        uv_timer_stop(&c->deadline);
        return;
    }
    uv_timer_start(&c->deadline, deadline_cb, min > now ? min - now : 0, 0);
}

static void dispatch_done(struct h2_client *c)
{
    struct h2_req *r;
    while ((r = c->done.head) != NULL) {
        list_remove(&c->done, r);
        if (r->err == 0) {
            struct h2_response resp = {
                .status = r->status,
                .headers = r->rhdrs,
                .nheaders = r->nrhdrs,
                .body = rt_buf_span(&r->rbody),
            };
            r->cb(0, &resp, r->ud);
        } else {
            r->cb(r->err, NULL, r->ud);
        }
        req_free(r);
    }
}

static void client_free_now(struct h2_client *c);

/* Writes what nghttp2 has for |k| and notices when the session is over. */
static void conn_service(struct conn *k)
{
    if (!k->ng)
        return;
    int rv = conn_flush(k);
    if (rv == 0 && !nghttp2_session_want_read(k->ng) && !nghttp2_session_want_write(k->ng))
        rv = ENS_ECLOSED;
    if (rv != 0) {
        conn_lost(k, rv);
        return;
    }
    if (k->c && k->c->draining == k && k->inflight == 0)
        conn_close(k);
}

/* Does everything that is due: expiries, callbacks, connecting, submitting,
 * writing. Loops because callbacks may queue more work. */
static void client_run(struct h2_client *c)
{
    if (c->depth > 0)
        return;
    c->depth++;
    for (int round = 0; round < 16; round++) {
        uint64_t now = uv_now(c->loop);
        expire(c, now);
        dispatch_done(c);
        if (c->free_pending)
            break;
        if (c->draining)
            conn_service(c->draining);
        struct conn *k = c->conn;
        if (k && k->goaway && k->inflight == 0) {
            conn_close(k);
            k = NULL;
        }
        if (!k && c->state == CS_IDLE && c->queue.n)
            client_connect(c);
        if (k && c->state == CS_CONNECTED && !k->goaway) {
            uint32_t lim = stream_limit(c, k);
            while (c->queue.head && k->inflight < lim) {
                if (submit_one(c, k, c->queue.head) != 0) {
                    /* Stream ids exhausted or session shutting down: finish
                     * this connection and continue on a new one. */
                    k->goaway = 1;
                    break;
                }
            }
        }
        if (k)
            conn_service(k);
        if (!c->done.head)
            break;
    }
    arm_deadline(c, uv_now(c->loop));
    c->depth--;
    if (c->free_pending && c->depth == 0)
        client_free_now(c);
}

static void deadline_cb(uv_timer_t *t)
{
    client_run(t->data);
}

static void backoff_cb(uv_timer_t *t)
{
    struct h2_client *c = t->data;
    if (c->state == CS_BACKOFF)
        c->state = CS_IDLE;
    client_run(c);
}

static void kick_cb(uv_timer_t *t)
{
    client_run(t->data);
}

/* ---- public API ---- */

struct h2_client *h2_client_new(uv_loop_t *loop, const char *host, uint16_t port,
                                struct rt_tls_ctx *tls)
{
    if (!loop || !host || !*host || !port)
        return NULL;
    struct h2_client *c = ens_calloc(1, sizeof(*c));
    c->loop = loop;
    c->host = ens_strdup(host);
    c->port = port;
    c->tls = tls;
    uv_timer_init(loop, &c->kick);
    uv_timer_init(loop, &c->deadline);
    uv_timer_init(loop, &c->backoff);
    c->kick.data = c->deadline.data = c->backoff.data = c;
    return c;
}

static void on_handle_closed(uv_handle_t *h)
{
    client_unref(h->data);
}

static void client_free_now(struct h2_client *c)
{
    c->freeing = 1;
    c->depth++;
    struct h2_req *r;
    while ((r = c->inflight.head) != NULL) {
        if (r->conn && r->conn->ng && r->stream_id > 0)
            nghttp2_submit_rst_stream(r->conn->ng, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL);
        req_finish(c, r, ENS_ECANCELED);
    }
    while ((r = c->queue.head) != NULL)
        req_finish(c, r, ENS_ECANCELED);
    for (r = c->done.head; r; r = r->next)
        if (r->err == 0)
            r->err = ENS_ECANCELED;
    dispatch_done(c);
    if (c->draining)
        conn_close(c->draining);
    if (c->conn) {
        struct conn *k = c->conn;
        if (k->ng) {
            nghttp2_submit_goaway(k->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(k->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
            conn_flush(k);
        }
        conn_close(k);
    }
    ens_free(c->host);
    c->host = NULL;
    c->handles_open += 3;
    uv_close((uv_handle_t *)&c->kick, on_handle_closed);
    uv_close((uv_handle_t *)&c->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&c->backoff, on_handle_closed);
}

void h2_client_free(struct h2_client *c)
{
    if (!c || c->freeing || c->free_pending)
        return;
    if (c->depth > 0) {
        c->free_pending = 1;
        return;
    }
    client_free_now(c);
}

static char *lower_dup(const char *s)
{
    char *d = ens_strdup(s);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return d;
}

static void nv_set(nghttp2_nv *nv, char *name, char *value, int no_index)
{
    nv->name = (uint8_t *)name;
    nv->value = (uint8_t *)value;
    nv->namelen = strlen(name);
    nv->valuelen = strlen(value);
    nv->flags = no_index ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
}

int h2_client_request(struct h2_client *c, const char *method, const char *path,
                      const struct h2_header *hdrs, size_t n, const uint8_t *body, size_t len,
                      uint64_t deadline_ms, h2_response_cb cb, void *ud)
{
    if (!c || !method || !path || !cb || (n && !hdrs) || (len && !body) || path[0] != '/')
        return ENS_EINVAL;
    if (c->freeing || c->free_pending)
        return ENS_ECANCELED;
    if (c->queue.n >= H2_MAX_QUEUED_REQUESTS)
        return ENS_EFULL;
    for (size_t i = 0; i < n; i++)
        if (!hdrs[i].name || !hdrs[i].value || !hdrs[i].name[0])
            return ENS_EINVAL;

    struct h2_req *r = ens_calloc(1, sizeof(*r));
    r->nva = ens_calloc(n + 4, sizeof(*r->nva));
    /* :path may carry a device token; keep it out of the HPACK table. */
    nv_set(&r->nva[r->nnv++], ens_strdup(":method"), ens_strdup(method), 0);
    nv_set(&r->nva[r->nnv++], ens_strdup(":scheme"), ens_strdup("https"), 0);
    nv_set(&r->nva[r->nnv++], ens_strdup(":authority"), ens_strdup(c->host), 0);
    nv_set(&r->nva[r->nnv++], ens_strdup(":path"), ens_strdup(path), 1);
    for (size_t i = 0; i < n; i++)
        nv_set(&r->nva[r->nnv++], lower_dup(hdrs[i].name), ens_strdup(hdrs[i].value),
               hdrs[i].no_index);
    if (len) {
        r->body = ens_malloc(len);
        memcpy(r->body, body, len);
        r->body_len = len;
    }
    r->deadline_ms = deadline_ms;
    r->cb = cb;
    r->ud = ud;
    rt_buf_init(&r->rbody, H2_MAX_RESPONSE_BODY);
    list_push(&c->queue, r, REQ_QUEUED, 0);
    uv_timer_start(&c->kick, kick_cb, 0, 0);
    return 0;
}

void h2_client_on_freed(struct h2_client *c, void (*cb)(void *ud), void *ud)
{
    c->freed_cb = cb;
    c->freed_ud = ud;
}

void h2_client_set_probe_first(struct h2_client *c, int on)
{
    c->probe_first = on;
}

void h2_client_reconnect(struct h2_client *c)
{
    if (c->conn && c->state == CS_CONNECTED) {
        /* One draining connection at most: an older one is cut short. */
        if (c->draining)
            conn_lost(c->draining, ENS_ECLOSED);
        struct conn *k = c->conn;
        k->goaway = 1;
        /* The next request must not wait for this connection to drain. */
        c->conn = NULL;
        c->state = CS_IDLE;
        if (k->inflight == 0) {
            conn_close(k);
        } else {
            c->draining = k;
            nghttp2_submit_goaway(k->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(k->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
        }
    }
    uv_timer_start(&c->kick, kick_cb, 0, 0);
}

void h2_client_get_stats(const struct h2_client *c, struct h2_client_stats *out)
{
    *out = c->st;
    out->inflight = c->conn ? c->conn->inflight : 0;
    out->queued = c->queue.n;
    out->stream_limit = c->conn && c->conn->ng ? stream_limit((struct h2_client *)c, c->conn) : 0;
}

/* ---- internal entries for tests and fuzzers ---- */

int h2__client_attach(struct h2_client *c, struct rt_stream *s)
{
    if (c->conn || c->state == CS_CONNECTING)
        return ENS_EINVAL;
    int rv = client_attach(c, s);
    client_run(c);
    return rv;
}

int h2__client_feed(struct h2_client *c, const uint8_t *p, size_t n)
{
    struct conn *k = c->conn;
    if (!k)
        return ENS_ECLOSED;
    int rv = 0;
    c->depth++;
    ssize_t got = nghttp2_session_mem_recv(k->ng, p, n);
    if (got < 0) {
        conn_lost(k, ENS_EPROTO);
        rv = ENS_EPROTO;
    }
    c->depth--;
    client_run(c);
    return rv;
}

void h2__client_kick(struct h2_client *c)
{
    client_run(c);
}

struct memstream {
    struct rt_stream base;
    struct rt_buf *sink;
    uv_timer_t t;
    rt_stream_close_cb close_cb;
    void *close_ud;
    int closed;
};

static int ms_read_start(struct rt_stream *s, rt_stream_read_cb cb, void *ud)
{
    return 0;
}
static int ms_read_stop(struct rt_stream *s)
{
    return 0;
}
static int ms_write(struct rt_stream *s, const uint8_t *p, size_t n)
{
    struct memstream *m = (struct memstream *)s;
    if (m->closed || rt_buf_append(m->sink, p, n) != 0)
        return ENS_ECLOSED;
    return 0;
}
static int ms_shutdown(struct rt_stream *s)
{
    return 0;
}
static void ms_handle_closed(uv_handle_t *h)
{
    ens_free(h->data);
}
static void ms_close_timer(uv_timer_t *t)
{
    struct memstream *m = t->data;
    if (m->close_cb)
        m->close_cb(&m->base, m->close_ud);
    uv_close((uv_handle_t *)&m->t, ms_handle_closed);
}
static void ms_close(struct rt_stream *s, rt_stream_close_cb cb, void *ud)
{
    struct memstream *m = (struct memstream *)s;
    m->closed = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    uv_timer_start(&m->t, ms_close_timer, 0, 0);
}
static size_t ms_write_pending(const struct rt_stream *s)
{
    return 0;
}
static const char *ms_alpn(const struct rt_stream *s)
{
    return "h2";
}
static const struct rt_stream_ops ms_ops = {
    "mem", ms_read_start, ms_read_stop, ms_write, ms_shutdown, ms_close, ms_write_pending, ms_alpn,
};

struct rt_stream *h2__memstream_new(uv_loop_t *loop, struct rt_buf *sink)
{
    struct memstream *m = ens_calloc(1, sizeof(*m));
    m->base.ops = &ms_ops;
    m->base.loop = loop;
    memcpy(m->base.peer, "mem", 4);
    m->sink = sink;
    uv_timer_init(loop, &m->t);
    m->t.data = m;
    return &m->base;
}
