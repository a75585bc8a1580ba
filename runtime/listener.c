/* Listening and accepting within the descriptor budget.
 *
 * The listener owns its socket and watches it with a uv_poll_t rather than
 * uv_listen(). libuv 1.44's accept loop (src/unix/stream.c, uv__server_io)
 * reports EMFILE to the connection callback and calls accept(2) again at once,
 * without returning to the loop, for as long as the error lasts; its one spare
 * descriptor (the "EMFILE trick") is lost for good as soon as another thread
 * takes the descriptor it freed. With several schedulers that is an endless
 * spin inside one callback: no timer, no signal, no close ever runs again.
 * Calling accept4(2) ourselves lets us stop watching the socket instead, so
 * waiting clients stay in the kernel's backlog until we can take them.
 *
 * A listener is ACCEPTING (poll running) or PAUSED (poll stopped), paused at
 * its connection cap or by a shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM). A
 * pause ends when one of its streams closes (the retry timer fires at once)
 * or, after a shortage, when the back-off timer fires. An episode runs from
 * the first pause until an accept finds the backlog empty; it logs one line at
 * each end and nothing in between, so its cost in log volume is constant. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "runtime/limits.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net_int.h"

#define LISTEN_BACKLOG 511

enum pause_reason { NOT_PAUSED, PAUSED_SHORTAGE, PAUSED_CAP };

struct rt_listener {
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t retry; /* back-off after a shortage; 0 ms after a stream closes */
    int fd;
    struct rt_tls_ctx *tls;
    rt_accept_cb cb;
    void *ud;
    uint16_t port;
    unsigned cap;
    unsigned open; /* accepted streams not yet closed */
    int handles;   /* poll and retry, until their close callbacks */
    enum pause_reason paused;
    uint64_t backoff_ms; /* the wait after the next shortage */
    /* The current episode, when in_episode. */
    uint64_t episode_start_ms;
    uint64_t episode_accepted;
    unsigned episode_pauses;
    unsigned in_episode : 1;
    unsigned closing : 1;
};

/* Written before the loop threads start, read only afterwards. */
static unsigned g_conn_cap;

/* Statistics for /metrics: relaxed, nothing is ordered by them. */
static _Atomic uint64_t g_open, g_paused, g_pauses_fd, g_pauses_cap;

void rt_listen_set_conn_cap(unsigned cap)
{
    g_conn_cap = cap;
}

unsigned rt_listen_conn_cap(void)
{
    return g_conn_cap ? g_conn_cap : RT_FD_MAX_CONNS;
}

void rt_listen_stats_get(struct rt_listen_stats *out)
{
    out->open = atomic_load_explicit(&g_open, memory_order_relaxed);
    out->paused = atomic_load_explicit(&g_paused, memory_order_relaxed);
    out->pauses_fd = atomic_load_explicit(&g_pauses_fd, memory_order_relaxed);
    out->pauses_cap = atomic_load_explicit(&g_pauses_cap, memory_order_relaxed);
}

static void on_readable(uv_poll_t *p, int status, int events);
static void on_retry(uv_timer_t *t);

static void maybe_free(struct rt_listener *l)
{
    if (l->closing && l->handles == 0 && l->open == 0)
        ens_free(l);
}

static void episode_end(struct rt_listener *l, const char *why)
{
    if (!l->in_episode)
        return;
    l->in_episode = 0;
    l->backoff_ms = RT_ACCEPT_BACKOFF_MIN_MS;
    RT_LOG_I("net.accept_resumed",
             "port=%u paused_ms=%llu pauses=%u accepted=%llu open=%u cap=%u (%s)", l->port,
             (unsigned long long)(uv_now(l->loop) - l->episode_start_ms), l->episode_pauses,
             (unsigned long long)l->episode_accepted, l->open, l->cap, why);
}

/* arm_retry schedules on_retry; a timer that cannot start would leave the
 * listener deaf for good, so that is the one failure worth an error line. */
static void arm_retry(struct rt_listener *l, uint64_t ms)
{
    int rc = uv_timer_start(&l->retry, on_retry, ms, 0);
    if (rc)
        RT_LOG_E("net.accept_retry", "port=%u cannot arm the retry timer: %s", l->port,
                 uv_strerror(rc));
}

/* pause_accepting stops watching the socket; |uverr| is the (libuv,
 * negative) error of a shortage, 0 at the cap. Only the first pause of an
 * episode is logged. */
static void pause_accepting(struct rt_listener *l, enum pause_reason why, int uverr)
{
    uv_poll_stop(&l->poll);
    if (l->paused == NOT_PAUSED)
        atomic_fetch_add_explicit(&g_paused, 1, memory_order_relaxed);
    l->paused = why;
    if (!l->in_episode) {
        l->in_episode = 1;
        l->episode_start_ms = uv_now(l->loop);
        l->episode_accepted = 0;
        l->episode_pauses = 0;
        atomic_fetch_add_explicit(why == PAUSED_CAP ? &g_pauses_cap : &g_pauses_fd, 1,
                                  memory_order_relaxed);
        if (why == PAUSED_CAP)
            RT_LOG_W("net.accept_paused",
                     "port=%u reason=connections open=%u cap=%u: waiting for one to close", l->port,
                     l->open, l->cap);
        else
            RT_LOG_W("net.accept_paused",
                     "port=%u reason=descriptors err=%s open=%u cap=%u: retrying every "
                     "%d..%d ms",
                     l->port, uv_strerror(uverr), l->open, l->cap, RT_ACCEPT_BACKOFF_MIN_MS,
                     RT_ACCEPT_BACKOFF_MAX_MS);
    }
    l->episode_pauses++;
    if (why == PAUSED_SHORTAGE) {
        arm_retry(l, l->backoff_ms);
        l->backoff_ms *= 2;
        if (l->backoff_ms > RT_ACCEPT_BACKOFF_MAX_MS)
            l->backoff_ms = RT_ACCEPT_BACKOFF_MAX_MS;
    }
}

static void on_stream_released(void *ud)
{
    struct rt_listener *l = ud;
    l->open--;
    atomic_fetch_sub_explicit(&g_open, 1, memory_order_relaxed);
    if (l->closing) {
        maybe_free(l);
        return;
    }
    /* A descriptor came free: try now rather than at the end of the back-off,
     * but from the timer, not from inside another stream's close callback. */
    if (l->paused != NOT_PAUSED)
        arm_retry(l, 0);
}

/* adopt wraps an accepted descriptor in a stream and hands it over. */
static void adopt(struct rt_listener *l, int fd)
{
    uv_tcp_t *tcp;
    struct rt_stream *s = rt__tcp_stream_new(l->loop, &tcp);
    if (!s) {
        close(fd);
        return;
    }
    int rc = uv_tcp_open(tcp, fd);
    if (rc) {
        RT_LOG_W("net.accept_failed", "port=%u err=%s", l->port, uv_strerror(rc));
        close(fd);
        rt_stream_close(s, NULL, NULL);
        return;
    }
    l->open++;
    l->episode_accepted++;
    atomic_fetch_add_explicit(&g_open, 1, memory_order_relaxed);
    rt__tcp_stream_on_release(s, on_stream_released, l);
    rt__tcp_stream_set_peer(s);
    if (l->tls) {
        s = rt__tls_stream_new(s, l->tls, NULL); /* closes the TCP stream on failure */
        if (!s)
            return;
    }
    l->cb(s, l->ud);
}

/* backlog_waiting asks the kernel, without blocking, whether a connection
 * is queued on |fd|. */
static int backlog_waiting(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* accept_burst takes up to RT_ACCEPT_BATCH waiting connections; the poll is
 * level-triggered, so any left over come back on the next loop turn. */
static void accept_burst(struct rt_listener *l)
{
    for (int i = 0; i < RT_ACCEPT_BATCH && !l->closing; i++) {
        if (l->open >= l->cap) {
            /* Having just taken the last allowed connection is no episode
             * yet, and may be the end of one: only a client still waiting
             * makes it a pause. */
            if (backlog_waiting(l->fd))
                pause_accepting(l, PAUSED_CAP, 0);
            else
                episode_end(l, "backlog empty");
            return;
        }
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            adopt(l, fd);
            continue;
        }
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            episode_end(l, "backlog empty");
            return;
        }
        /* accept(2) on Linux: a connection that failed while queued comes back
         * as its error and is gone; the next one may be fine. */
        if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM ||
            err == ENETDOWN || err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET ||
            err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH)
            continue;
        /* EMFILE, ENFILE, ENOBUFS, ENOMEM, and anything unexpected: calling
         * again at once would fail again, so wait. */
        pause_accepting(l, PAUSED_SHORTAGE, uv_translate_sys_error(err));
        return;
    }
    /* The batch ran out. If it took the last waiting client, no EAGAIN and
     * no further readiness would ever end the episode. */
    if (l->in_episode && !l->closing && !backlog_waiting(l->fd))
        episode_end(l, "backlog empty");
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    struct rt_listener *l = p->data;
    if (status < 0) {
        pause_accepting(l, PAUSED_SHORTAGE, status);
        return;
    }
    accept_burst(l);
}

static void on_retry(uv_timer_t *t)
{
    struct rt_listener *l = t->data;
    if (l->closing || l->paused == NOT_PAUSED)
        return;
    int rc = uv_poll_start(&l->poll, UV_READABLE, on_readable);
    if (rc) {
        pause_accepting(l, PAUSED_SHORTAGE, rc);
        return;
    }
    l->paused = NOT_PAUSED;
    atomic_fetch_sub_explicit(&g_paused, 1, memory_order_relaxed);
    accept_burst(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct rt_listener *l = h->data;
    if (--l->handles == 0) {
        close(l->fd); /* no longer polled: both handles are gone */
        l->fd = -1;
    }
    maybe_free(l);
}

static int sockaddr_from(const char *host, uint16_t port, struct sockaddr_storage *ss,
                         socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) {
        *len = sizeof(struct sockaddr_in);
        return AF_INET;
    }
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) {
        *len = sizeof(struct sockaddr_in6);
        return AF_INET6;
    }
    return -1;
}

/* open_socket creates, binds and listens; the descriptor or -errno. */
static int open_socket(int family, const struct sockaddr_storage *ss, socklen_t len, int reuseport)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    /* As uv_tcp_bind did: restartable while old connections sit in
     * TIME_WAIT, and dual-stack on "::". */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int rt_listen(uv_loop_t *loop, const char *hostport, struct rt_tls_ctx *tls, int reuseport,
              rt_accept_cb cb, void *ud, struct rt_listener **out)
{
    char host[256];
    uint16_t port = 0;
    if (!loop || !cb || !out)
        return ENS_EINVAL;
    if (rt__listen_addr_parse(hostport, host, sizeof(host), &port) != 0)
        return ENS_EPARSE;
    struct sockaddr_storage ss;
    socklen_t sslen;
    int family = sockaddr_from(host, port, &ss, &sslen);
    if (family < 0)
        return ENS_EINVAL; /* listeners bind literal addresses only */
    int fd = open_socket(family, &ss, sslen, reuseport);
    if (fd < 0) {
        RT_LOG_W("net.listen_failed", "addr=%s err=%s", hostport,
                 uv_strerror(uv_translate_sys_error(-fd)));
        return fd == -EADDRINUSE || fd == -EACCES ? ENS_EEXIST : ENS_EIO;
    }
    struct rt_listener *l = ens_calloc(1, sizeof(*l));
    l->loop = loop;
    l->fd = fd;
    l->tls = tls;
    l->cb = cb;
    l->ud = ud;
    l->cap = rt_listen_conn_cap();
    l->backoff_ms = RT_ACCEPT_BACKOFF_MIN_MS;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        l->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                   : ((struct sockaddr_in6 *)&bound)->sin6_port);
    int rc = uv_poll_init_socket(loop, &l->poll, fd);
    if (rc) {
        RT_LOG_W("net.listen_failed", "addr=%s err=%s", hostport, uv_strerror(rc));
        close(fd);
        ens_free(l);
        return ENS_EIO;
    }
    l->poll.data = l;
    l->handles = 1;
    rc = uv_timer_init(loop, &l->retry);
    if (rc) {
        l->closing = 1;
        uv_close((uv_handle_t *)&l->poll, on_handle_closed);
    } else {
        l->retry.data = l;
        l->handles = 2;
        rc = uv_poll_start(&l->poll, UV_READABLE, on_readable);
        if (rc)
            rt_listener_close(l);
    }
    if (rc) {
        RT_LOG_W("net.listen_failed", "addr=%s err=%s", hostport, uv_strerror(rc));
        return ENS_EIO;
    }
    *out = l;
    return 0;
}

uint16_t rt_listener_port(const struct rt_listener *l)
{
    return l->port;
}

void rt_listener_close(struct rt_listener *l)
{
    if (!l || l->closing)
        return;
    l->closing = 1;
    if (l->paused != NOT_PAUSED)
        atomic_fetch_sub_explicit(&g_paused, 1, memory_order_relaxed);
    l->paused = NOT_PAUSED;
    episode_end(l, "listener closed");
    uv_close((uv_handle_t *)&l->poll, on_handle_closed);
    uv_close((uv_handle_t *)&l->retry, on_handle_closed);
}
