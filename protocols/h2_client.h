/* An HTTP/2 client: one kept connection to one origin, multiplexing requests.
 *
 * The connection is opened lazily by the first request (rt_connect, TLS with
 * ALPN "h2"), kept open, and reopened with jittered back-off after a loss. The
 * HTTP/2 protocol work is nghttp2 driven purely from memory (mem_recv /
 * mem_send); bytes travel through the rt_stream interface only.
 *
 * Flow control of our own (push.md section 8): nghttp2 would queue excess
 * HEADERS without bound, so the client keeps at most
 * min(peer SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_CONCURRENT_STREAMS) streams in
 * flight and holds the rest in a queue bounded by H2_MAX_QUEUED_REQUESTS.
 *
 * Retry policy: a request the server provably never processed (REFUSED_STREAM,
 * a stream above a GOAWAY's last-stream-id, a request whose HEADERS never left,
 * or one still queued when the connection dropped) is resent on the next
 * connection. A request that was sent and lost with the connection fails with
 * ENS_ECLOSED: only the caller knows whether resending it is safe.
 *
 * Threading: a client and every call on it belong to its loop's thread. */
#ifndef ENS_PROTOCOLS_H2_CLIENT_H
#define ENS_PROTOCOLS_H2_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/span.h"

struct h2_client;
struct rt_tls_ctx;

/* One header field. With |no_index| set the field is sent as an HPACK literal
 * never indexed (push.md 1.3: APNs wants :path and authorization so). */
struct h2_header {
    const char *name;
    const char *value;
    int no_index;
};

/* A complete response. Everything is borrowed for the duration of the
 * callback only; header names are lowercase as HTTP/2 requires. */
struct h2_response {
    int status;
    const struct h2_header *headers; /* regular fields, pseudo-headers excluded */
    size_t nheaders;
    struct span body; /* at most H2_MAX_RESPONSE_BODY bytes */
};

/* Response callback. |err| is 0 with |resp| set, or a negative code with |resp|
 * NULL: ENS_ETIMEDOUT (deadline passed; the stream was reset with CANCEL),
 * ENS_ECLOSED (sent, then the connection or stream was lost), ENS_ETOOBIG
 * (response too large), ENS_EPROTO (malformed response), ENS_ECANCELED (the
 * client is being freed). The callback may issue new requests. */
typedef void (*h2_response_cb)(int err, const struct h2_response *resp, void *ud);

/* h2_client_new makes a client for https://|host|:|port|. |tls| is borrowed and
 * must offer ALPN "h2" and outlive the client. No I/O happens until the first
 * request. Returns NULL only for bad arguments. */
struct h2_client *h2_client_new(uv_loop_t *loop, const char *host, uint16_t port,
                                struct rt_tls_ctx *tls);

/* h2_client_free fails every outstanding request with ENS_ECANCELED (their
 * callbacks run before it returns, unless it is called from inside one of this
 * client's callbacks, in which case teardown happens as that callback returns),
 * closes the connection and releases the memory once the loop has run the
 * handles' close callbacks. NULL is fine. */
void h2_client_free(struct h2_client *c);

/* h2_client_on_freed registers |cb| to run once the client's memory is
 * released after h2_client_free: every connection closed, no connect pending.
 * Anything the client borrows (the TLS context) may be freed from there. */
void h2_client_on_freed(struct h2_client *c, void (*cb)(void *ud), void *ud);

/* h2_client_request queues a request. |method|, |path|, the headers and the
 * body are copied. |deadline_ms| is absolute on uv_now()'s clock and covers
 * queueing, connecting and the exchange.
 *
 * Async contract: on an error return (ENS_EINVAL, ENS_EFULL when
 * H2_MAX_QUEUED_REQUESTS are waiting, ENS_ECANCELED while freeing) |cb| never
 * runs; on 0 it runs exactly once, never before this call returns. */
int h2_client_request(struct h2_client *c, const char *method, const char *path,
                      const struct h2_header *hdrs, size_t n, const uint8_t *body, size_t len,
                      uint64_t deadline_ms, h2_response_cb cb, void *ud);

/* h2_client_set_probe_first makes each new connection carry a single request
 * until one is answered with :status 200, and only then open up to the stream
 * limit. APNs with token auth demands this (push.md 1.1). Off by default. */
void h2_client_set_probe_first(struct h2_client *c, int on);

/* h2_client_reconnect stops new streams on the current connection, lets the
 * ones in flight finish, and makes the next request open a fresh connection
 * (used after 403 ExpiredProviderToken, push.md 8). */
void h2_client_reconnect(struct h2_client *c);

/* Introspection for metrics and tests. */
struct h2_client_stats {
    uint64_t connects;     /* connections established */
    uint64_t retried;      /* requests requeued because the server never saw them */
    size_t inflight;       /* streams open on the current connection */
    size_t queued;         /* requests waiting for a stream */
    uint32_t stream_limit; /* current min(peer, ours, probe) */
    uint32_t max_inflight; /* high-water mark of inflight on any connection */
};
void h2_client_get_stats(const struct h2_client *c, struct h2_client_stats *out);

#endif
