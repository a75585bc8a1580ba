/* The plain TCP stream: struct rt_stream over a uv_tcp_t.
 *
 * Memory is released only from the handle's close callback, so a read
 * callback may close its own stream (house rule 7). libuv completes every
 * pending write request (with UV_ECANCELED) before that close callback runs,
 * which is why write requests may point back at the stream. */
#include <stdio.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net_int.h"

struct tcp_stream {
    struct rt_stream base;
    uv_tcp_t tcp;
    rt_stream_read_cb read_cb;
    void *read_ud;
    rt_stream_close_cb close_cb;
    void *close_ud;
    rt__tcp_release_cb release_cb; /* the listener that counts this connection */
    void *release_ud;
    size_t pending; /* bytes queued in uv_write requests */
    int write_err;  /* first write failure, reported through read_cb */
    unsigned reading : 1;
    unsigned finished : 1; /* a non-zero status was delivered: no more reads */
    unsigned shut : 1;
    unsigned closing : 1;
    uint8_t rbuf[RT__READ_CHUNK];
};

struct tcp_write {
    uv_write_t req;
    struct tcp_stream *ts;
    size_t len;
    uint8_t data[]; /* copy of the caller's bytes */
};

static int uv_to_ens(int uverr)
{
    switch (uverr) {
    case UV_EOF:
        return ENS_ECLOSED;
    case UV_ECANCELED:
        return ENS_ECANCELED;
    case UV_ENOMEM:
        return ENS_ENOMEM;
    case UV_ETIMEDOUT:
        return ENS_ETIMEDOUT;
    default:
        return ENS_EIO;
    }
}

/* deliver_final reports a terminal status once; the owner must still close. */
static void deliver_final(struct tcp_stream *ts, int status)
{
    if (ts->finished || ts->closing || !ts->read_cb)
        return;
    ts->finished = 1;
    ts->reading = 0;
    uv_read_stop((uv_stream_t *)&ts->tcp);
    ts->read_cb(&ts->base, status, NULL, 0, ts->read_ud);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct tcp_stream *ts = h->data;
    *buf = uv_buf_init((char *)ts->rbuf, sizeof(ts->rbuf));
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    struct tcp_stream *ts = h->data;
    if (ts->closing || ts->finished)
        return;
    if (n > 0) {
        ts->read_cb(&ts->base, 0, ts->rbuf, (size_t)n, ts->read_ud);
        return;
    }
    if (n < 0)
        deliver_final(ts, uv_to_ens((int)n));
}

static int tcp_read_start(struct rt_stream *s, rt_stream_read_cb cb, void *ud)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    if (ts->closing || ts->finished)
        return ENS_ECLOSED;
    ts->read_cb = cb;
    ts->read_ud = ud;
    if (ts->reading)
        return 0;
    int rc = uv_read_start((uv_stream_t *)&ts->tcp, on_alloc, on_read);
    if (rc)
        return uv_to_ens(rc);
    ts->reading = 1;
    return 0;
}

static int tcp_read_stop(struct rt_stream *s)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    if (ts->reading && !ts->closing)
        uv_read_stop((uv_stream_t *)&ts->tcp);
    ts->reading = 0;
    return 0;
}

static void on_write(uv_write_t *req, int status)
{
    struct tcp_write *w = (struct tcp_write *)req;
    struct tcp_stream *ts = w->ts;
    ts->pending -= w->len;
    ens_free(w);
    if (status < 0 && status != UV_ECANCELED && !ts->closing) {
        if (!ts->write_err)
            ts->write_err = uv_to_ens(status);
        deliver_final(ts, ts->write_err);
    }
}

static int tcp_write(struct rt_stream *s, const uint8_t *p, size_t n)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    if (ts->closing || ts->shut)
        return ENS_ECLOSED;
    if (ts->write_err)
        return ts->write_err;
    if (n == 0)
        return 0;
    struct tcp_write *w = ens_malloc(sizeof(*w) + n);
    memcpy(w->data, p, n);
    w->ts = ts;
    w->len = n;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    int rc = uv_write(&w->req, (uv_stream_t *)&ts->tcp, &b, 1, on_write);
    if (rc) {
        ens_free(w);
        return rc == UV_EPIPE || rc == UV_EBADF ? ENS_ECLOSED : uv_to_ens(rc);
    }
    ts->pending += n;
    return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    ens_free(req);
}

static int tcp_shutdown(struct rt_stream *s)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    if (ts->closing)
        return ENS_ECLOSED;
    if (ts->shut)
        return 0;
    uv_shutdown_t *req = ens_malloc(sizeof(*req));
    int rc = uv_shutdown(req, (uv_stream_t *)&ts->tcp, on_shutdown);
    if (rc) {
        ens_free(req);
        return ENS_ECLOSED;
    }
    ts->shut = 1;
    return 0;
}

static void on_close(uv_handle_t *h)
{
    struct tcp_stream *ts = h->data;
    if (ts->close_cb)
        ts->close_cb(&ts->base, ts->close_ud);
    /* Last: the descriptor is gone now, so the listener may accept again. */
    if (ts->release_cb)
        ts->release_cb(ts->release_ud);
    ens_free(ts);
}

static void tcp_close(struct rt_stream *s, rt_stream_close_cb cb, void *ud)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    if (ts->closing)
        return;
    ts->closing = 1;
    ts->close_cb = cb;
    ts->close_ud = ud;
    uv_close((uv_handle_t *)&ts->tcp, on_close);
}

static size_t tcp_write_pending(const struct rt_stream *s)
{
    return ((const struct tcp_stream *)s)->pending;
}

static const char *tcp_alpn(const struct rt_stream *s)
{
    return NULL;
}

static const struct rt_stream_ops tcp_ops = {
    .name = "tcp",
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .write_pending = tcp_write_pending,
    .alpn = tcp_alpn,
};

struct rt_stream *rt__tcp_stream_new(uv_loop_t *loop, uv_tcp_t **tcp_out)
{
    struct tcp_stream *ts = ens_calloc(1, sizeof(*ts));
    if (uv_tcp_init(loop, &ts->tcp) != 0) {
        ens_free(ts);
        return NULL;
    }
    ts->tcp.data = ts;
    ts->base.ops = &tcp_ops;
    ts->base.loop = loop;
    *tcp_out = &ts->tcp;
    return &ts->base;
}

void rt__tcp_stream_on_release(struct rt_stream *s, rt__tcp_release_cb cb, void *ud)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    ts->release_cb = cb;
    ts->release_ud = ud;
}

void rt__tcp_stream_set_peer(struct rt_stream *s)
{
    struct tcp_stream *ts = (struct tcp_stream *)s;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&ts->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(s->peer, sizeof(s->peer), "%s:%d", ip, port);
    /* Requests and pushes are small and latency matters more than packet count. */
    uv_tcp_nodelay(&ts->tcp, 1);
}
