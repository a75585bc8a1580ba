/* A blocking HTTP/1.1 client for ensctl; see ensctl_http.h for why blocking is
 * acceptable here. */
#include "tools/ensctl_http.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

#include "protocols/limits.h"
#include "runtime/err.h"
#include "runtime/span.h"

/* Headers plus body: whatever the server sends beyond this is refused. */
#define ENSCTL_MAX_RESPONSE_BYTES (H1_CLIENT_MAX_RESPONSE + H1_MAX_HEADER_BYTES)
#define ENSCTL_MAX_REQUEST_BYTES  (64 * 1024)

static int host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

int ensctl_url_parse(const char *url, struct ensctl_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    struct span s = span_cstr(url);
    static const char kScheme[] = "http://";
    if (!span_has_prefix(s, kScheme)) {
        snprintf(err, errlen, "the admin URL must start with http:// (the admin API has no TLS)");
        return ENS_EINVAL;
    }
    const char *auth = url + sizeof(kScheme) - 1;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (memchr(auth, '@', alen) != NULL) {
        snprintf(err, errlen, "the admin URL may not carry a user or password");
        return ENS_EINVAL;
    }
    const char *hb = auth, *he, *port = NULL;
    const char *aend = auth + alen;
    if (*auth == '[') {
        hb = auth + 1;
        he = memchr(hb, ']', (size_t)(aend - hb));
        if (he == NULL) {
            snprintf(err, errlen, "bad IPv6 address in the admin URL");
            return ENS_EINVAL;
        }
        for (const char *p = hb; p < he; p++) {
            if (!host_char((unsigned char)*p) && *p != ':') {
                snprintf(err, errlen, "bad IPv6 address in the admin URL");
                return ENS_EINVAL;
            }
        }
        if (he + 1 < aend) {
            if (he[1] != ':') {
                snprintf(err, errlen, "bad admin URL");
                return ENS_EINVAL;
            }
            port = he + 2;
        }
    } else {
        he = hb;
        while (he < aend && *he != ':') {
            if (!host_char((unsigned char)*he)) {
                snprintf(err, errlen, "bad host in the admin URL");
                return ENS_EINVAL;
            }
            he++;
        }
        if (he < aend)
            port = he + 1;
    }
    size_t hlen = (size_t)(he - hb);
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        snprintf(err, errlen, "bad host in the admin URL");
        return ENS_EINVAL;
    }
    memcpy(out->host, hb, hlen);
    if (port != NULL) {
        struct span ps = span_make(port, (size_t)(aend - port));
        uint64_t pv;
        if (ps.len == 0 || !span_get_decimal(&ps, 65535, &pv) || ps.len != 0 || pv == 0) {
            snprintf(err, errlen, "bad port in the admin URL");
            return ENS_EINVAL;
        }
        snprintf(out->port, sizeof(out->port), "%u", (unsigned)pv);
    } else {
        snprintf(out->port, sizeof(out->port), "80");
    }
    size_t plen = strlen(rest);
    while (plen > 0 && rest[plen - 1] == '/')
        plen--;
    if (plen >= sizeof(out->prefix) || strcspn(rest, "?# \t") < plen) {
        snprintf(err, errlen, "bad path in the admin URL");
        return ENS_EINVAL;
    }
    memcpy(out->prefix, rest, plen);
    size_t tlen = (size_t)(rest - url) + plen;
    if (tlen >= sizeof(out->text)) {
        snprintf(err, errlen, "the admin URL is too long");
        return ENS_EINVAL;
    }
    memcpy(out->text, url, tlen);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* wait_fd polls |fd| for |events| until |deadline|; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* connect_any tries each address of the host in turn; the first error is the
 * one reported, since it is usually the informative one (IPv4 refused, say). */
static int connect_any(const struct ensctl_url *u, int64_t deadline, int *fd_out, char *err,
                       size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(u->host, u->port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s", gai_strerror(gai));
        return ENS_EDNS;
    }
    int first_errno = 0, timed_out = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            if (!first_errno)
                first_errno = errno;
            continue;
        }
        int e = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            e = errno;
            if (e == EINPROGRESS) {
                int w = wait_fd(fd, POLLOUT, deadline);
                socklen_t el = sizeof(e);
                if (w == 0) {
                    e = ETIMEDOUT;
                    timed_out = 1;
                } else if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) {
                    e = errno;
                }
            }
        }
        if (e == 0) {
            freeaddrinfo(res);
            *fd_out = fd;
            return 0;
        }
        close(fd);
        if (!first_errno)
            first_errno = e;
        if (timed_out)
            break;
    }
    freeaddrinfo(res);
    if (timed_out) {
        snprintf(err, errlen, "no answer in time");
        return ENS_ETIMEDOUT;
    }
    snprintf(err, errlen, "%s", strerror(first_errno ? first_errno : ECONNREFUSED));
    return ENS_ECONNECT;
}

static int send_all(int fd, const uint8_t *p, size_t n, int64_t deadline, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r == 0) {
                snprintf(err, errlen, "no answer in time");
                return ENS_ETIMEDOUT;
            }
            if (r > 0)
                continue;
        }
        snprintf(err, errlen, "%s", strerror(errno));
        return ENS_ECONNECT;
    }
    return 0;
}

struct reader {
    struct rt_buf *body;
    int complete;
    int too_big;
};

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct reader *r = p->data;
    if (rt_buf_append(r->body, at, len) != 0) {
        r->too_big = 1;
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct reader *r = p->data;
    r->complete = 1;
    /* Pausing stops llhttp from reading whatever follows as a second answer. */
    return HPE_PAUSED;
}

static int build_request(struct rt_buf *req, const struct ensctl_url *u, const char *method,
                         const char *path, const char *token, const char *body)
{
    int v6 = strchr(u->host, ':') != NULL;
    size_t blen = body ? strlen(body) : 0;
    int rc = rt_buf_appendf(req,
                            "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
                            "User-Agent: ensctl/" ENS_VERSION "\r\nAccept: application/json\r\n"
                            "Connection: close\r\nContent-Length: %zu\r\n",
                            method, u->prefix, path, v6 ? "[" : "", u->host, v6 ? "]" : "", u->port,
                            blen);
    if (rc == 0 && body != NULL)
        rc = rt_buf_append_str(req, "Content-Type: application/json\r\n");
    /* The token goes in by plain appends, never through a format string. */
    if (rc == 0)
        rc = rt_buf_append_str(req, "Authorization: Bearer ");
    if (rc == 0)
        rc = rt_buf_append_str(req, token);
    if (rc == 0)
        rc = rt_buf_append_str(req, "\r\n\r\n");
    if (rc == 0 && body != NULL)
        rc = rt_buf_append(req, body, blen);
    return rc;
}

static int read_response(int fd, int64_t deadline, struct ensctl_response *resp, char *err,
                         size_t errlen)
{
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    struct reader r = {.body = &resp->body};
    parser.data = &r;
    size_t total = 0;
    char chunk[16384];
    while (!r.complete) {
        int w = wait_fd(fd, POLLIN, deadline);
        if (w == 0) {
            snprintf(err, errlen, "no answer in time");
            return ENS_ETIMEDOUT;
        }
        ssize_t n = w < 0 ? -1 : recv(fd, chunk, sizeof(chunk), 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            return ENS_ECONNECT;
        }
        llhttp_errno_t e;
        if (n == 0) {
            e = llhttp_finish(&parser);
            if (e == HPE_OK && !r.complete)
                e = HPE_INVALID_EOF_STATE;
        } else {
            total += (size_t)n;
            if (total > ENSCTL_MAX_RESPONSE_BYTES) {
                snprintf(err, errlen, "the answer is larger than %d bytes",
                         ENSCTL_MAX_RESPONSE_BYTES);
                return ENS_ETOOBIG;
            }
            e = llhttp_execute(&parser, chunk, (size_t)n);
        }
        if (e == HPE_PAUSED && r.complete)
            break;
        if (r.too_big) {
            snprintf(err, errlen, "the answer is larger than %d bytes", H1_CLIENT_MAX_RESPONSE);
            return ENS_ETOOBIG;
        }
        if (e != HPE_OK) {
            snprintf(err, errlen, "not an HTTP answer (%s)", llhttp_errno_name(e));
            return ENS_EPROTO;
        }
        if (n == 0)
            break;
    }
    resp->status = parser.status_code;
    return 0;
}

int ensctl_http_request(const struct ensctl_url *url, const char *method, const char *path,
                        const char *token, const char *body, int timeout_ms,
                        struct ensctl_response *resp, char *err, size_t errlen)
{
    memset(resp, 0, sizeof(*resp));
    int64_t deadline = now_ms() + timeout_ms;
    struct rt_buf req;
    rt_buf_init(&req, ENSCTL_MAX_REQUEST_BYTES);
    int rc = build_request(&req, url, method, path, token, body);
    if (rc != 0) {
        rt_buf_cleanup_secret(&req);
        snprintf(err, errlen, "the request is too large");
        return rc;
    }
    int fd = -1;
    rc = connect_any(url, deadline, &fd, err, errlen);
    if (rc == 0)
        rc = send_all(fd, req.data, req.len, deadline, err, errlen);
    rt_buf_cleanup_secret(&req);
    if (rc != 0) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    rt_buf_init(&resp->body, H1_CLIENT_MAX_RESPONSE);
    rc = read_response(fd, deadline, resp, err, errlen);
    close(fd);
    if (rc != 0)
        ensctl_response_cleanup(resp);
    return rc;
}

void ensctl_response_cleanup(struct ensctl_response *resp)
{
    rt_buf_cleanup(&resp->body);
    resp->status = 0;
}
