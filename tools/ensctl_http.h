/* ensctl's HTTP/1.1 client: one blocking request per call over a plain TCP
 * socket, for the admin API on loopback. A short-lived CLI may block; the
 * server never uses this. Every wait is bounded by one deadline and the
 * response body by H1_CLIENT_MAX_RESPONSE. */
#ifndef ENS_TOOLS_ENSCTL_HTTP_H
#define ENS_TOOLS_ENSCTL_HTTP_H

#include <stddef.h>

#include "runtime/buf.h"

#define ENSCTL_URL_MAX_HOST   256
#define ENSCTL_URL_MAX_PREFIX 256
#define ENSCTL_URL_MAX_TEXT   600

/* An admin API base URL, http://host[:port][/prefix]. */
struct ensctl_url {
    char host[ENSCTL_URL_MAX_HOST]; /* without IPv6 brackets */
    char port[8];
    char prefix[ENSCTL_URL_MAX_PREFIX]; /* "" or "/x", no trailing slash */
    char text[ENSCTL_URL_MAX_TEXT];     /* as shown to the user: no trailing slash */
};

struct ensctl_response {
    int status;
    struct rt_buf body; /* NUL-terminated; owned, free with ensctl_response_cleanup */
};

/* ensctl_url_parse parses |url| into |out|. Only http:// is accepted (the admin
 * listener has no TLS) and userinfo is refused so that no credential can end up
 * in a message. Returns 0 or ENS_EINVAL with a reason in |err|. */
int ensctl_url_parse(const char *url, struct ensctl_url *out, char *err, size_t errlen);

/* ensctl_http_request sends |method| |path| (prefixed with the URL's prefix,
 * already percent-encoded) with "Authorization: Bearer |token|" and an optional
 * JSON |body| (NULL: none), and waits at most |timeout_ms| in total for the whole
 * answer. |token| is borrowed; the request bytes holding it are wiped.
 *
 * Returns 0 with |resp| filled (any HTTP status; the caller cleans |resp|), or
 * ENS_ECONNECT / ENS_EDNS (server unreachable), ENS_ETIMEDOUT, ENS_EPROTO
 * (not HTTP), ENS_ETOOBIG (response over the cap); then |err| says why and
 * |resp| needs no cleanup. */
int ensctl_http_request(const struct ensctl_url *url, const char *method, const char *path,
                        const char *token, const char *body, int timeout_ms,
                        struct ensctl_response *resp, char *err, size_t errlen);

/* ensctl_response_cleanup frees the body. */
void ensctl_response_cleanup(struct ensctl_response *resp);

#endif
