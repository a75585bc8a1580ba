/* A one-shot HTTP/1.1 client: one request, one connection, one answer.
 *
 * Threading: call on |loop|'s thread; the callback runs there too.
 * Async contract (house rule 5): if h1_client_request returns an error the
 * callback never runs; if it returns 0 the callback runs exactly once. */
#ifndef ENS_PROTOCOLS_H1_CLIENT_H
#define ENS_PROTOCOLS_H1_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "protocols/h1_server.h" /* struct h1_header */
#include "runtime/span.h"

struct rt_tls_ctx;
struct h1_message;

struct h1_client_req {
    const char *method;              /* "GET", "POST", ... */
    const char *url;                 /* absolute http:// or https:// URL */
    const struct h1_header *headers; /* extra headers; Host, Content-Length and
                                        Connection are added */
    size_t nheaders;
    const uint8_t *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    uint64_t deadline_ms;   /* absolute, uv_now(loop) clock: DNS+connect+TLS+exchange */
    size_t max_response;    /* body cap; 0 = H1_CLIENT_MAX_RESPONSE */
    struct rt_tls_ctx *tls; /* required for https; must outlive the request */
    int deny_private;       /* refuse private/loopback addresses, even behind a name */
};

/* The answer, borrowed for the duration of the callback. */
struct h1_response {
    int status;
    struct span body;
    const struct h1_message *msg;
};

/* h1_response_header returns the first header named |name| (case-insensitive),
 * p == NULL when absent; borrowed like the response. */
struct span h1_response_header(const struct h1_response *r, const char *name);

/* Completion: |err| 0 and |resp| set, or |resp| NULL and |err| one of
 * ENS_EDNS, ENS_ECONNECT, ENS_ETLS, ENS_ETIMEDOUT, ENS_ECLOSED (the server
 * closed before a full answer), ENS_EPARSE (malformed answer), ENS_ETOOBIG
 * (answer over max_response). */
typedef void (*h1_client_cb)(int err, const struct h1_response *resp, void *ud);

/* h1_client_request sends |req| (everything in it is copied) and calls |cb|
 * with the answer. Returns 0 or ENS_EINVAL (bad URL, method or header, https
 * without a TLS context) / ENS_ETOOBIG (request too large); see the async
 * contract above. 1xx interim answers are skipped. */
int h1_client_request(uv_loop_t *loop, const struct h1_client_req *req, h1_client_cb cb, void *ud);

#endif
