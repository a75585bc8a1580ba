/* Connecting under a deadline, and URL / host:port parsing (listening is
 * runtime/listener.c).
 *
 * A connect attempt is a small state machine owned by struct connect_op:
 * RESOLVE (uv_getaddrinfo on the thread pool) -> CONNECT (each address in
 * turn) -> HANDSHAKE (TLS) -> done. The deadline timer may end it in any
 * state; the op is freed only once every libuv request it started has
 * reported back, so late callbacks never touch freed memory. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>

#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net_int.h"
#include "runtime/span.h"

#define NET_MAX_HOSTPORT 300

/* ---- parsing ---- */

int rt__is_ip_literal(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return uv_inet_pton(AF_INET, host, &a4) == 0 || uv_inet_pton(AF_INET6, host, &a6) == 0;
}

/* parse_port reads a decimal port 1..65535 that must fill all of |s|. */
static int parse_port(struct span s, uint16_t *port)
{
    uint64_t v;
    if (!span_get_decimal(&s, 65535, &v) || s.len != 0 || v == 0)
        return ENS_EPARSE;
    *port = (uint16_t)v;
    return 0;
}

/* split_authority parses "host[:port]" / "[v6][:port]"; |port| keeps its value
 * when the authority has none and |need_port| is 0. */
static int split_authority(struct span a, char *host, size_t hostlen, uint16_t *port, int need_port)
{
    struct span h;
    struct span rest;
    if (a.len && a.p[0] == '[') {
        size_t i = 1;
        while (i < a.len && a.p[i] != ']')
            i++;
        if (i == a.len || i == 1)
            return ENS_EPARSE;
        h = span_make(a.p + 1, i - 1);
        rest = span_make(a.p + i + 1, a.len - i - 1);
        if (rest.len && rest.p[0] != ':')
            return ENS_EPARSE;
    } else {
        size_t i = a.len;
        while (i > 0 && a.p[i - 1] != ':')
            i--;
        if (i == 0) {
            h = a;
            rest = span_make(a.p + a.len, 0);
        } else {
            h = span_make(a.p, i - 1);
            rest = span_make(a.p + i - 1, a.len - i + 1);
        }
        for (size_t k = 0; k < h.len; k++)
            if (h.p[k] == ':')
                return ENS_EPARSE; /* bare IPv6 needs brackets */
    }
    if (h.len == 0 || h.len >= hostlen)
        return ENS_EPARSE;
    for (size_t k = 0; k < h.len; k++) {
        uint8_t c = h.p[k];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == '@' || c == '?' || c == '#' || c == '[' ||
            c == ']')
            return ENS_EPARSE;
    }
    if (rest.len) {
        rest.p++;
        rest.len--;
        if (parse_port(rest, port) != 0)
            return ENS_EPARSE;
    } else if (need_port) {
        return ENS_EPARSE;
    }
    memcpy(host, h.p, h.len);
    host[h.len] = '\0';
    return 0;
}

int rt_hostport_split(const char *hostport, char *host, size_t hostlen, uint16_t *port)
{
    if (!hostport || !host || !port)
        return ENS_EINVAL;
    size_t n = strnlen(hostport, NET_MAX_HOSTPORT + 1);
    if (n > NET_MAX_HOSTPORT)
        return ENS_EPARSE;
    return split_authority(span_make(hostport, n), host, hostlen, port, 1);
}

int rt_url_parse(const char *url, struct rt_url *out)
{
    if (!url || !out)
        return ENS_EINVAL;
    size_t n = strnlen(url, sizeof(out->path) + 512);
    struct span s = span_make(url, n);
    struct rt_url u;
    memset(&u, 0, sizeof(u));
    if (span_has_prefix(s, "https://") || span_has_prefix(s, "HTTPS://")) {
        memcpy(u.scheme, "https", 6);
        u.port = 443;
        s.p += 8;
        s.len -= 8;
    } else if (span_has_prefix(s, "http://") || span_has_prefix(s, "HTTP://")) {
        memcpy(u.scheme, "http", 5);
        u.port = 80;
        s.p += 7;
        s.len -= 7;
    } else {
        return ENS_EPARSE;
    }
    size_t i = 0;
    while (i < s.len && s.p[i] != '/' && s.p[i] != '?')
        i++;
    struct span auth = span_make(s.p, i);
    struct span path = span_make(s.p + i, s.len - i);
    for (size_t k = 0; k < auth.len; k++)
        if (auth.p[k] == '@' || auth.p[k] == '#')
            return ENS_EPARSE;
    if (split_authority(auth, u.host, sizeof(u.host), &u.port, 0) != 0)
        return ENS_EPARSE;
    for (size_t k = 0; k < path.len; k++) {
        uint8_t c = path.p[k];
        if (c == '#' || c <= 0x20 || c >= 0x7f)
            return ENS_EPARSE;
    }
    size_t off = 0;
    if (path.len == 0 || path.p[0] == '?')
        u.path[off++] = '/';
    if (off + path.len >= sizeof(u.path))
        return ENS_EPARSE;
    memcpy(u.path + off, path.p, path.len);
    u.path[off + path.len] = '\0';
    *out = u;
    return 0;
}

int rt__listen_addr_parse(const char *hostport, char *host, size_t hostlen, uint16_t *port)
{
    size_t n = hostport ? strnlen(hostport, NET_MAX_HOSTPORT + 1) : 0;
    if (n == 0 || n > NET_MAX_HOSTPORT || !host || !port)
        return ENS_EPARSE;
    /* Port 0 is legal here (tests, ephemeral), so it is split off by hand. */
    if (n >= 2 && hostport[n - 1] == '0' && hostport[n - 2] == ':') {
        if (split_authority(span_make(hostport, n - 2), host, hostlen, port, 0) != 0)
            return ENS_EPARSE;
        *port = 0;
        return 0;
    }
    return rt_hostport_split(hostport, host, hostlen, port);
}

/* ---- connecting ---- */

struct connect_op {
    uv_loop_t *loop;
    rt_connect_cb cb;
    void *ud;
    char host[256];
    uint16_t port;
    struct rt_tls_ctx *tls;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    struct addrinfo *addrs;
    struct addrinfo *next_addr;
    struct rt_stream *s; /* TCP, then TLS once wrapped */
    int last_err;
    int deny_private;
    int skipped_private; /* addresses refused by deny_private */
    unsigned gai_pending : 1;
    unsigned connect_pending : 1;
    unsigned timer_open : 1;
    unsigned done : 1;
};

static void op_maybe_free(struct connect_op *op)
{
    if (op->timer_open || op->gai_pending || op->connect_pending)
        return;
    if (op->addrs)
        uv_freeaddrinfo(op->addrs);
    ens_free(op);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct connect_op *op = h->data;
    op->timer_open = 0;
    op_maybe_free(op);
}

/* op_finish reports the outcome once and releases whatever is still running. */
static void op_finish(struct connect_op *op, int status)
{
    if (op->done)
        return;
    op->done = 1;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, on_timer_closed);
    if (op->gai_pending)
        uv_cancel((uv_req_t *)&op->gai); /* if it already runs, its callback sees done */
    struct rt_stream *s = op->s;
    op->s = NULL;
    if (status != 0 && s) {
        rt_stream_close(s, NULL, NULL); /* cancels a pending connect */
        s = NULL;
    }
    rt_connect_cb cb = op->cb;
    void *ud = op->ud;
    cb(s, status, ud);
}

static void on_deadline(uv_timer_t *t)
{
    struct connect_op *op = t->data;
    RT_LOG_I("net.connect_timeout", "host=%s port=%u", op->host, op->port);
    op_finish(op, ENS_ETIMEDOUT);
}

static void on_handshake(struct rt_stream *s, int status, void *ud)
{
    struct connect_op *op = ud;
    op_finish(op, status == 0 ? 0 : ENS_ETLS);
}

static void try_next_addr(struct connect_op *op);

static void on_tcp_connect(uv_connect_t *req, int status)
{
    struct connect_op *op = req->data;
    op->connect_pending = 0;
    if (op->done) {
        op_maybe_free(op);
        return;
    }
    if (status < 0) {
        op->last_err = status;
        rt_stream_close(op->s, NULL, NULL);
        op->s = NULL;
        try_next_addr(op);
        return;
    }
    rt__tcp_stream_set_peer(op->s);
    if (!op->tls) {
        op_finish(op, 0);
        return;
    }
    op->s = rt__tls_stream_new(op->s, op->tls, op->host);
    if (!op->s) {
        op_finish(op, ENS_ETLS);
        return;
    }
    int rc = rt__tls_stream_handshake(op->s, on_handshake, op);
    if (rc)
        op_finish(op, ENS_ETLS);
}

static void try_next_addr(struct connect_op *op)
{
    while (op->next_addr) {
        struct addrinfo *ai = op->next_addr;
        op->next_addr = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (op->deny_private && rt_addr_is_private(ai->ai_addr)) {
            op->skipped_private++;
            continue;
        }
        uv_tcp_t *tcp;
        op->s = rt__tcp_stream_new(op->loop, &tcp);
        if (!op->s)
            break;
        op->creq.data = op;
        int rc = uv_tcp_connect(&op->creq, tcp, ai->ai_addr, on_tcp_connect);
        if (rc == 0) {
            op->connect_pending = 1;
            return;
        }
        op->last_err = rc;
        rt_stream_close(op->s, NULL, NULL);
        op->s = NULL;
    }
    RT_LOG_I("net.connect_failed", "host=%s port=%u err=%s", op->host, op->port,
             op->last_err
                 ? uv_strerror(op->last_err)
                 : (op->skipped_private ? "only private addresses, refused" : "no address"));
    op_finish(op, ENS_ECONNECT);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct connect_op *op = req->data;
    op->gai_pending = 0;
    op->addrs = res;
    if (op->done) {
        op_maybe_free(op);
        return;
    }
    if (status < 0 || !res) {
        RT_LOG_I("net.dns_failed", "host=%s err=%s", op->host, uv_strerror(status));
        op_finish(op, ENS_EDNS);
        return;
    }
    op->next_addr = res;
    try_next_addr(op);
}

int rt_addr_is_private(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        return (a >> 24) == 127 || (a >> 24) == 10 ||
               (a >> 24) == 0 ||                            /* loopback, RFC 1918, "this" */
               (a >> 20) == 0xac1 || (a >> 16) == 0xc0a8 || /* 172.16/12, 192.168/16 */
               (a >> 16) == 0xa9fe || (a >> 22) == ((100u << 2) | 1) || /* link-local, CGNAT */
               (a >> 28) >= 0xe;                                        /* multicast, reserved */
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t kZero[16] = {0};
        if (memcmp(b, kZero, 10) == 0 && b[10] == 0xff && b[11] == 0xff) {
            struct sockaddr_in v4 = {.sin_family = AF_INET};
            memcpy(&v4.sin_addr, b + 12, 4);
            return rt_addr_is_private((const struct sockaddr *)&v4);
        }
        return (memcmp(b, kZero, 15) == 0 && (b[15] == 0 || b[15] == 1)) || /* ::, ::1 */
               (b[0] & 0xfe) == 0xfc ||                                     /* ULA */
               (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||                   /* link-local */
               b[0] == 0xff;                                                /* multicast */
    }
    return 1; /* anything else is not an internet address */
}

int rt_host_is_private_literal(const char *host)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1)
        return rt_addr_is_private((const struct sockaddr *)&v4);
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1)
        return rt_addr_is_private((const struct sockaddr *)&v6);
    size_t n = strlen(host);
    return strcasecmp(host, "localhost") == 0 ||
           (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0);
}

int rt_connect(uv_loop_t *loop, const struct rt_connect_opts *o, rt_connect_cb cb, void *ud)
{
    if (!loop || !o || !o->host || !cb || o->port == 0)
        return ENS_EINVAL;
    size_t hl = strnlen(o->host, 256);
    if (hl == 0 || hl >= 256)
        return ENS_EINVAL;
    struct connect_op *op = ens_calloc(1, sizeof(*op));
    op->loop = loop;
    op->cb = cb;
    op->ud = ud;
    memcpy(op->host, o->host, hl);
    op->port = o->port;
    op->tls = o->tls;
    op->deny_private = o->deny_private;
    if (uv_timer_init(loop, &op->timer) != 0) {
        ens_free(op);
        return ENS_EIO;
    }
    op->timer.data = op;
    op->timer_open = 1;
    uint64_t now = uv_now(loop);
    uv_timer_start(&op->timer, on_deadline, o->deadline_ms > now ? o->deadline_ms - now : 0, 0);

    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", o->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    if (rt__is_ip_literal(op->host))
        hints.ai_flags = AI_NUMERICHOST;
    op->gai.data = op;
    int rc = uv_getaddrinfo(loop, &op->gai, on_resolved, op->host, portstr, &hints);
    if (rc) {
        op->done = 1;
        uv_close((uv_handle_t *)&op->timer, on_timer_closed);
        return ENS_EDNS;
    }
    op->gai_pending = 1;
    return 0;
}
