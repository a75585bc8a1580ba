/* HTTP/2 server sessions and connections on nghttp2 (see h2_server.h).
 *
 * Stream life: RECEIVING (headers and body arriving) -> READY (complete,
 * queued for delivery) -> HELD (the application has it) -> SENDING (answered,
 * nghttp2 owns the output) -> freed in on_stream_close. A stream that breaks a
 * limit skips READY/HELD: the session answers it (400/413/431) and, if the
 * client is still sending, resets it with NO_ERROR once the answer is out
 * (RFC 9113 8.1).
 *
 * Re-entrancy: nghttp2 callbacks only move streams between states. Requests
 * are delivered from h2_server_session_feed after nghttp2_session_mem_recv has
 * returned, and output is produced only by h2_server_session_flush, which the
 * connection never calls while a feed is running (house rule 7). */
#include "protocols/h2_server.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/clock.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/span.h"

enum sstate { ST_RECEIVING, ST_READY, ST_HELD, ST_SENDING };

struct sstream {
    struct sstream *prev, *next; /* every stream of the session */
    struct sstream *next_ready;
    struct h2_server_session *s;
    int32_t id;
    enum sstate state;
    struct h1_message *msg; /* until delivered */
    size_t hdr_bytes;
    size_t buffered; /* body bytes counted in s->buffered */
    int bad;         /* status the session answers instead of delivering */
    const char *bad_code, *bad_text;
    unsigned rst_after : 1; /* client still sending when we answered */
    void *cookie;
    uint8_t *resp;
    size_t resp_len, resp_off;
};

struct h2_server_session {
    nghttp2_session *ng;
    struct h2_server_cbs cbs;
    void *ud;
    struct h2_server_conn *k; /* passed to callbacks; NULL for a bare session */
    size_t max_body;
    struct sstream *all;
    struct sstream *ready_head, *ready_tail;
    size_t receiving, held, sending;
    size_t buffered;
    uint64_t requests, glitches;
    unsigned dead : 1;
    unsigned calm : 1; /* terminated for abuse */
    unsigned goaway : 1;
    unsigned freeing : 1;
    unsigned progress : 1; /* a stream completed a phase since the last look */
};

/* Methods are delivered as static names, as the HTTP/1.1 parser does. */
static const char *const kMethods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};

/* Fields HTTP/2 forbids (RFC 9113 8.2.2) or that we set ourselves. */
static const char *const kDropped[] = {"connection",        "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade",    "content-length",
                                       "content-type",      "te"};

static void glitch(struct h2_server_session *s)
{
    s->glitches++;
}

static void set_bad(struct sstream *st, int status, const char *code, const char *text)
{
    if (st->bad)
        return;
    st->bad = status;
    st->bad_code = code;
    st->bad_text = text;
}

static void stream_free(struct sstream *st)
{
    struct h2_server_session *s = st->s;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->all = st->next;
    if (st->next)
        st->next->prev = st->prev;
    s->buffered -= st->buffered;
    h1_message_free(st->msg);
    ens_free(st->resp);
    ens_free(st);
}

static void ready_remove(struct h2_server_session *s, struct sstream *st)
{
    struct sstream **pp = &s->ready_head;
    struct sstream *prev = NULL;
    while (*pp && *pp != st) {
        prev = *pp;
        pp = &(*pp)->next_ready;
    }
    if (!*pp)
        return;
    *pp = st->next_ready;
    if (s->ready_tail == st)
        s->ready_tail = prev;
    st->next_ready = NULL;
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    struct sstream *st = src->ptr;
    size_t n = st->resp_len - st->resp_off;
    if (n > length)
        n = length;
    memcpy(buf, st->resp + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == st->resp_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int dropped_name(const char *name)
{
    if (name[0] == ':')
        return 1;
    for (size_t i = 0; i < sizeof(kDropped) / sizeof(kDropped[0]); i++)
        if (strcasecmp(name, kDropped[i]) == 0)
            return 1;
    return 0;
}

static nghttp2_nv make_nv(const char *name, size_t nlen, const char *value)
{
    nghttp2_nv nv = {(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, nlen, strlen(value),
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* submit moves |st| to SENDING with the given answer. nghttp2 copies the
 * fields; the body is copied into the stream for the data provider. */
static int submit(struct h2_server_session *s, struct sstream *st, int status, const char *ctype,
                  const uint8_t *body, size_t len, const struct h1_header *extra, size_t nextra,
                  int head_only)
{
    char code[16], clen[24], date[RT_HTTP_DATE_CHARS + 1];
    snprintf(code, sizeof(code), "%03d", status);
    snprintf(clen, sizeof(clen), "%zu", len);
    rt_http_date(date);
    nghttp2_nv *nva = ens_calloc(4 + nextra, sizeof(*nva));
    char **lower = ens_calloc(nextra ? nextra : 1, sizeof(*lower));
    size_t n = 0;
    nva[n++] = make_nv(":status", 7, code);
    if (ctype)
        nva[n++] = make_nv("content-type", 12, ctype);
    nva[n++] = make_nv("content-length", 14, clen);
    nva[n++] = make_nv("date", 4, date);
    for (size_t i = 0; i < nextra; i++) {
        if (dropped_name(extra[i].name))
            continue;
        lower[i] = ens_strdup(extra[i].name);
        for (char *p = lower[i]; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        nva[n++] = make_nv(lower[i], strlen(lower[i]), extra[i].value);
    }
    h1_message_free(st->msg);
    st->msg = NULL;
    s->buffered -= st->buffered;
    st->buffered = 0;
    if (len && !head_only) {
        st->resp = ens_malloc(len);
        memcpy(st->resp, body, len);
        st->resp_len = len;
    }
    nghttp2_data_provider prov = {.source.ptr = st, .read_callback = read_body};
    int rv = nghttp2_submit_response(s->ng, st->id, nva, n, st->resp_len ? &prov : NULL);
    for (size_t i = 0; i < nextra; i++)
        ens_free(lower[i]);
    ens_free(lower);
    ens_free(nva);
    st->state = ST_SENDING;
    s->sending++;
    s->progress = 1;
    if (rv != 0) {
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return ENS_ECLOSED;
    }
    return 0;
}

/* answer_bad answers a stream that broke a rule, from inside nghttp2. */
static void answer_bad(struct h2_server_session *s, struct sstream *st, int end_stream)
{
    struct rt_buf body;
    rt_buf_init(&body, 1024);
    h1_error_json(&body, st->bad_code, st->bad_text);
    if (st->state == ST_RECEIVING)
        s->receiving--;
    st->rst_after = !end_stream;
    glitch(s);
    RT_LOG_I("h2.bad_request", "stream=%d status=%d", (int)st->id, st->bad);
    (void)submit(s, st, st->bad, "application/json", body.data, body.len, NULL, 0, 0);
    rt_buf_cleanup(&body);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_server_session *s = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct sstream *st = ens_calloc(1, sizeof(*st));
    st->s = s;
    st->id = f->hd.stream_id;
    st->state = ST_RECEIVING;
    st->msg = ens_calloc(1, sizeof(*st->msg));
    st->msg->is_request = 1;
    st->msg->http_major = 2;
    st->msg->keep_alive = 1;
    rt_buf_init(&st->msg->body, s->max_body);
    st->next = s->all;
    if (s->all)
        s->all->prev = st;
    s->all = st;
    s->receiving++;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static void add_field(struct sstream *st, const char *name, size_t nlen, const uint8_t *value,
                      size_t vlen)
{
    struct h1_message *m = st->msg;
    if (m->nheaders >= H1_MAX_HEADERS) {
        set_bad(st, 431, "too_large", "too many request headers");
        return;
    }
    m->headers = ens_realloc(m->headers, (m->nheaders + 1) * sizeof(*m->headers));
    struct h1_field *fl = &m->headers[m->nheaders++];
    fl->name = ens_memdup(name, nlen);
    fl->name_len = nlen;
    fl->value = ens_memdup(value, vlen);
    fl->value_len = vlen;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    struct sstream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || st->state != ST_RECEIVING)
        return 0;
    st->hdr_bytes += namelen + valuelen + 32; /* RFC 9113 6.5.2 accounting */
    if (st->hdr_bytes > H2_SERVER_MAX_HEADER_LIST)
        set_bad(st, 431, "too_large", "request headers too large");
    if (st->bad || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are counted, not kept */
    struct span n = span_make(name, namelen);
    struct h1_message *m = st->msg;
    if (span_eq(n, ":method")) {
        for (size_t i = 0; i < sizeof(kMethods) / sizeof(kMethods[0]); i++)
            if (span_eq(span_make(value, valuelen), kMethods[i]))
                m->method = kMethods[i];
        if (!m->method)
            set_bad(st, 501, "not_implemented", "method not supported");
    } else if (span_eq(n, ":path")) {
        if (!m->target) {
            m->target = ens_memdup(value, valuelen);
            m->target_len = valuelen;
        }
    } else if (span_eq(n, ":authority")) {
        add_field(st, "host", 4, value, valuelen);
    } else if (namelen && name[0] != ':') {
        add_field(st, (const char *)name, namelen, value, valuelen);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct h2_server_session *s = ud;
    struct sstream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || st->state != ST_RECEIVING || st->bad)
        return 0;
    if (s->buffered + len > H2_SERVER_MAX_CONN_BUFFERED) {
        /* Many streams each under max_body can still add up: refuse this one. */
        glitch(s);
        s->receiving--;
        st->state = ST_SENDING; /* nothing more to do but close */
        s->sending++;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if (rt_buf_append(&st->msg->body, data, len) != 0) {
        set_bad(st, 413, "too_large", "request body too large");
        answer_bad(s, st, 0);
        return 0;
    }
    st->buffered += len;
    s->buffered += len;
    return 0;
}

static int too_long(const struct h1_message *m, size_t max)
{
    struct span cl = h1_message_header(m, "content-length");
    uint64_t v;
    return cl.p && span_get_decimal(&cl, UINT64_MAX / 2, &v) && v > max;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_server_session *s = ud;
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct sstream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!st || st->state != ST_RECEIVING)
        return 0;
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && !st->bad) {
        if (!st->msg->method || !st->msg->target)
            set_bad(st, 400, "bad_request", "missing :method or :path");
        else if (too_long(st->msg, s->max_body))
            set_bad(st, 413, "too_large", "request body too large");
    }
    if (st->bad) {
        answer_bad(s, st, end);
        return 0;
    }
    if (end) {
        st->state = ST_READY;
        s->receiving--;
        s->progress = 1;
        if (s->ready_tail)
            s->ready_tail->next_ready = st;
        else
            s->ready_head = st;
        s->ready_tail = st;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct sstream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (st && st->rst_after) {
        st->rst_after = 0;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    (void)error_code;
    struct h2_server_session *s = ud;
    struct sstream *st = nghttp2_session_get_stream_user_data(ng, id);
    if (!st || s->freeing)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    switch (st->state) {
    case ST_RECEIVING:
        s->receiving--;
        break;
    case ST_READY:
        ready_remove(s, st);
        break;
    case ST_HELD:
        s->held--;
        if (s->cbs.on_stream_gone)
            s->cbs.on_stream_gone(s->ud, st->cookie);
        break;
    case ST_SENDING:
        s->sending--;
        break;
    }
    s->progress = 1;
    stream_free(st);
    return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int lib_error, void *ud)
{
    (void)ng;
    (void)f;
    (void)lib_error;
    glitch(ud);
    return 0;
}

/* ---- the session ---- */

struct h2_server_session *h2_server_session_new(const struct h1_server_opts *o,
                                                const struct h2_server_cbs *cbs, void *ud)
{
    struct h2_server_session *s = ens_calloc(1, sizeof(*s));
    s->cbs = *cbs;
    s->ud = ud;
    s->max_body = o && o->max_body ? o->max_body : H1_DEFAULT_MAX_BODY;
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        abort(); /* allocation failure, as ens_malloc does */
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    nghttp2_option_set_max_outbound_ack(opt, H2_SERVER_MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(opt, H2_SERVER_MAX_SETTINGS);
    nghttp2_option_set_max_continuations(opt, H2_SERVER_MAX_CONTINUATIONS);
    nghttp2_option_set_stream_reset_rate_limit(opt, H2_SERVER_RESET_BURST, H2_SERVER_RESET_RATE);
    int rv = nghttp2_session_server_new2(&s->ng, cb, s, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv != 0)
        abort();
    const nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_SERVER_MAX_CONCURRENT_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_SERVER_MAX_HEADER_LIST},
    };
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    return s;
}

void h2_server_session_free(struct h2_server_session *s)
{
    if (!s)
        return;
    s->freeing = 1;
    while (s->all) {
        struct sstream *st = s->all;
        if (st->state == ST_HELD && s->cbs.on_stream_gone)
            s->cbs.on_stream_gone(s->ud, st->cookie);
        stream_free(st);
    }
    nghttp2_session_del(s->ng);
    ens_free(s);
}

static void dispatch(struct h2_server_session *s)
{
    while (s->ready_head && !s->dead && !s->calm) {
        struct sstream *st = s->ready_head;
        s->ready_head = st->next_ready;
        if (!s->ready_head)
            s->ready_tail = NULL;
        st->next_ready = NULL;
        st->state = ST_HELD;
        s->held++;
        s->requests++;
        struct h1_message *m = st->msg;
        st->msg = NULL;
        /* |st| may be answered (never freed: no output runs here) inside. */
        s->cbs.on_request(s->ud, s->k, st->id, m, &st->cookie);
    }
}

ssize_t h2_server_session_feed(struct h2_server_session *s, const uint8_t *p, size_t len)
{
    if (s->dead)
        return ENS_EPROTO;
    ssize_t rv = nghttp2_session_mem_recv(s->ng, p, len);
    if (rv < 0) {
        RT_LOG_I("h2.session_error", "err=%s", nghttp2_strerror((int)rv));
        s->dead = 1;
        return ENS_EPROTO;
    }
    if (s->glitches >= H2_SERVER_MAX_GLITCHES && !s->calm) {
        RT_LOG_W("h2.abuse", "glitches=%llu", (unsigned long long)s->glitches);
        s->calm = 1;
        nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    dispatch(s);
    return (ssize_t)len;
}

int h2_server_session_flush(struct h2_server_session *s, struct rt_buf *out)
{
    if (s->dead)
        return ENS_EPROTO;
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(s->ng, &d);
        if (n < 0) {
            s->dead = 1;
            return ENS_EPROTO;
        }
        if (n == 0)
            return 0;
        if (rt_buf_append(out, d, (size_t)n) != 0) {
            s->dead = 1;
            return ENS_EPROTO;
        }
    }
}

int h2_server_session_respond(struct h2_server_session *s, int32_t stream_id, int status,
                              const char *ctype, const uint8_t *body, size_t len,
                              const struct h1_header *extra, size_t nextra, int head_only)
{
    struct sstream *st = s->dead ? NULL : nghttp2_session_get_stream_user_data(s->ng, stream_id);
    if (!st || st->state != ST_HELD)
        return ENS_ECLOSED;
    st->cookie = NULL;
    s->held--;
    return submit(s, st, status, ctype, body, len, extra, nextra, head_only);
}

void h2_server_session_goaway(struct h2_server_session *s)
{
    if (s->goaway || s->dead)
        return;
    s->goaway = 1;
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

int h2_server_session_done(const struct h2_server_session *s)
{
    return s->dead || (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng));
}

void h2_server_session_get_counts(const struct h2_server_session *s,
                                  struct h2_server_session_counts *out)
{
    out->receiving = s->receiving;
    out->held = s->held;
    out->sending = s->sending;
    out->requests = s->requests;
    out->glitches = s->glitches;
}

/* ---- a connection over an rt_stream ---- */

enum ktimer { KT_NONE = 0, KT_IDLE, KT_READ, KT_LINGER };

struct h2_server_conn {
    struct rt_stream *s;
    struct h2_server_session *sess;
    struct h1_server_opts opts;
    struct h2_server_cbs cbs;
    void *ud;
    uv_timer_t timer;
    enum ktimer tmode;
    struct rt_buf out;
    int handles;
    unsigned closing : 1;
    unsigned lingering : 1;
    unsigned in_feed : 1;
    unsigned close_pending : 1;
};

static void conn_close(struct h2_server_conn *k);
static void conn_check(struct h2_server_conn *k);

static void on_timer(uv_timer_t *t)
{
    struct h2_server_conn *k = t->data;
    enum ktimer mode = k->tmode;
    k->tmode = KT_NONE;
    if (mode == KT_LINGER || mode == KT_READ) {
        if (mode == KT_READ)
            RT_LOG_I("h2.read_timeout", "peer=%s", k->s->peer);
        conn_close(k);
        return;
    }
    h2_server_session_goaway(k->sess); /* idle: say goodbye properly */
    conn_check(k);
}

static void timer_set(struct h2_server_conn *k, enum ktimer mode, uint64_t ms, int restart)
{
    if (mode == k->tmode && !restart)
        return;
    k->tmode = mode;
    if (mode == KT_NONE)
        uv_timer_stop(&k->timer);
    else
        uv_timer_start(&k->timer, on_timer, ms, 0);
}

static void conn_linger(struct h2_server_conn *k)
{
    if (k->lingering || k->closing)
        return;
    k->lingering = 1;
    rt_stream_shutdown(k->s);
    timer_set(k, KT_LINGER, H2_SERVER_LINGER_MS, 1);
}

/* conn_send writes whatever the session has to say. */
static void conn_send(struct h2_server_conn *k)
{
    if (k->closing || k->lingering || k->in_feed)
        return;
    rt_buf_reset(&k->out);
    int rc = h2_server_session_flush(k->sess, &k->out);
    if (k->out.len)
        (void)rt_stream_write(k->s, k->out.data, k->out.len); /* failures come via read */
    if (rc != 0) {
        conn_close(k);
        return;
    }
    if (rt_stream_write_pending(k->s) > H2_SERVER_MAX_WRITE_PENDING) {
        RT_LOG_W("h2.slow_reader", "peer=%s", k->s->peer);
        conn_close(k);
    }
}

/* conn_check closes a finished session and keeps the timer honest. */
static void conn_check(struct h2_server_conn *k)
{
    conn_send(k);
    if (k->closing || k->lingering || k->in_feed)
        return;
    if (h2_server_session_done(k->sess)) {
        conn_linger(k);
        return;
    }
    struct h2_server_session *s = k->sess;
    int progress = s->progress;
    s->progress = 0;
    if (s->receiving || s->sending)
        timer_set(k, KT_READ, k->opts.read_timeout_ms, progress);
    else if (s->held)
        timer_set(k, KT_NONE, 0, 0); /* the application owes the answer */
    else
        timer_set(k, KT_IDLE, k->opts.idle_timeout_ms, 0);
}

static void conn_input(struct h2_server_conn *k, const uint8_t *p, size_t n)
{
    k->in_feed = 1;
    ssize_t r = h2_server_session_feed(k->sess, p, n);
    k->in_feed = 0;
    if (k->close_pending) {
        conn_close(k);
        return;
    }
    if (r < 0) {
        conn_send(k); /* a GOAWAY nghttp2 may have queued */
        conn_close(k);
        return;
    }
    conn_check(k);
}

static void on_read(struct rt_stream *s, int status, const uint8_t *data, size_t len, void *ud)
{
    (void)s;
    struct h2_server_conn *k = ud;
    if (k->closing)
        return;
    if (status != 0) {
        conn_close(k); /* the peer is gone: unanswered streams are orphaned */
        return;
    }
    if (k->lingering)
        return; /* discard until the peer's FIN or the linger timer */
    conn_input(k, data, len);
}

static void on_handle_closed(struct h2_server_conn *k)
{
    if (--k->handles > 0)
        return;
    if (k->cbs.on_closed)
        k->cbs.on_closed(k->ud, k);
    rt_buf_cleanup(&k->out);
    ens_free(k);
}

static void on_stream_closed(struct rt_stream *s, void *ud)
{
    (void)s;
    on_handle_closed(ud);
}

static void on_timer_closed(uv_handle_t *h)
{
    on_handle_closed(h->data);
}

static void conn_close(struct h2_server_conn *k)
{
    if (k->closing)
        return;
    if (k->in_feed) {
        k->close_pending = 1; /* never free the session under its own feed */
        return;
    }
    k->closing = 1;
    h2_server_session_free(k->sess);
    k->sess = NULL;
    rt_stream_close(k->s, on_stream_closed, k);
    uv_close((uv_handle_t *)&k->timer, on_timer_closed);
}

struct h2_server_conn *h2_server_conn_new(struct rt_stream *s, const struct h1_server_opts *o,
                                          const struct h2_server_cbs *cbs, void *ud)
{
    struct h2_server_conn *k = ens_calloc(1, sizeof(*k));
    k->s = s;
    k->cbs = *cbs;
    k->ud = ud;
    if (o)
        k->opts = *o;
    if (!k->opts.max_body)
        k->opts.max_body = H1_DEFAULT_MAX_BODY;
    if (!k->opts.idle_timeout_ms)
        k->opts.idle_timeout_ms = H1_IDLE_TIMEOUT_MS;
    if (!k->opts.read_timeout_ms)
        k->opts.read_timeout_ms = H1_READ_TIMEOUT_MS;
    uv_timer_init(s->loop, &k->timer);
    k->timer.data = k;
    k->handles = 2;
    rt_buf_init(&k->out, 2 * (size_t)H2_SERVER_MAX_WRITE_PENDING);
    k->sess = h2_server_session_new(&k->opts, cbs, ud);
    k->sess->k = k;
    return k;
}

void h2_server_conn_start(struct h2_server_conn *k, const uint8_t *first, size_t len)
{
    if (rt_stream_read_start(k->s, on_read, k) != 0) {
        conn_close(k);
        return;
    }
    if (len)
        conn_input(k, first, len);
    else
        conn_check(k);
}

int h2_server_conn_respond(struct h2_server_conn *k, int32_t stream_id, int status,
                           const char *ctype, const uint8_t *body, size_t len,
                           const struct h1_header *extra, size_t nextra, int head_only)
{
    if (k->closing)
        return ENS_ECLOSED;
    int rc = h2_server_session_respond(k->sess, stream_id, status, ctype, body, len, extra, nextra,
                                       head_only);
    conn_check(k); /* a no-op inside a feed: output follows the feed */
    return rc;
}

void h2_server_conn_drain(struct h2_server_conn *k)
{
    if (k->closing || k->lingering)
        return;
    h2_server_session_goaway(k->sess);
    conn_check(k);
}

void h2_server_conn_close(struct h2_server_conn *k)
{
    conn_close(k);
}
