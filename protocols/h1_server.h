/* HTTP/1.1 server connections over any rt_stream.
 *
 * A struct h1_server is a per-loop registry: it owns its connections, answers
 * protocol errors itself (400, 413, 431 with the API.md error JSON) and hands
 * every well-formed request to one callback. Requests are answered
 * asynchronously with h1_req_respond, in any order; responses go out strictly
 * in request order (pipelining). At most H1_MAX_PIPELINED requests per
 * connection wait for an answer; beyond that the connection stops reading.
 *
 * HTTP/2: a TLS stream that negotiated ALPN "h2" is served by an HTTP/2
 * connection (protocols/h2_server.h) behind the same API: each stream becomes
 * one struct h1_req, answered with h1_req_respond in any order. Drain sends
 * GOAWAY and waits for the streams already taken; a stream the client resets
 * orphans its request (h1_req_respond then returns ENS_ECLOSED).
 *
 * Threading: everything runs on the server's loop thread.
 * Lifetime: h1_server_drain() asks every connection to finish what it has and
 * close; h1_server_free() closes the rest abruptly. */
#ifndef ENS_PROTOCOLS_H1_SERVER_H
#define ENS_PROTOCOLS_H1_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/span.h"
#include "runtime/stream.h"

struct h1_server_opts {
    size_t max_body;          /* 0 = H1_DEFAULT_MAX_BODY */
    uint64_t idle_timeout_ms; /* 0 = H1_IDLE_TIMEOUT_MS: keep-alive with no request */
    uint64_t read_timeout_ms; /* 0 = H1_READ_TIMEOUT_MS: a started request must arrive within */
};

/* An extra response header; both strings must be free of CR and LF. */
struct h1_header {
    const char *name;
    const char *value;
};

struct h1_req;
struct h1_server;

/* Request callback: |req| stays valid until h1_req_respond is called for it,
 * even if the connection dies first. Called on the loop thread. */
typedef void (*h1_request_cb)(struct h1_req *req, void *ud);
typedef void (*h1_server_drain_cb)(struct h1_server *srv, void *ud);

/* h1_server_new creates a registry on |loop|; |o| may be NULL (defaults) and
 * is copied. Never NULL. */
struct h1_server *h1_server_new(uv_loop_t *loop, const struct h1_server_opts *o, h1_request_cb cb,
                                void *ud);

/* h1_server_add takes ownership of |s| (a fresh stream, e.g. from an accept
 * callback) and starts serving it. 0, or a negative ENS_E* code after which
 * |s| has been closed: ENS_ECLOSED while draining, ENS_EFULL past
 * H1_MAX_CONNECTIONS. */
int h1_server_add(struct h1_server *srv, struct rt_stream *s);

/* h1_server_conn_count returns the number of open connections. */
size_t h1_server_conn_count(const struct h1_server *srv);

/* h1_server_drain stops keep-alive: idle connections close now, busy ones
 * after their outstanding responses; new streams are refused. |cb| runs once,
 * from the loop (never inside this call), when the last connection has been
 * closed and released. Calling it twice replaces the callback. */
void h1_server_drain(struct h1_server *srv, h1_server_drain_cb cb, void *ud);

/* h1_server_free closes every remaining connection abruptly (pending
 * requests are orphaned: their h1_req_respond returns ENS_ECLOSED) and frees
 * the registry. Run the loop afterwards so the streams finish closing. NULL is
 * fine. */
void h1_server_free(struct h1_server *srv);

/* ---- request accessors: borrowed, valid until h1_req_respond ---- */

/* h1_req_method returns the method name ("GET"). */
const char *h1_req_method(const struct h1_req *req);
/* h1_req_target returns the request-target as sent ("/api/ens/v1/keys?x=1"). */
struct span h1_req_target(const struct h1_req *req);
/* h1_req_header returns the first header named |name| (case-insensitive);
 * p == NULL when absent. */
struct span h1_req_header(const struct h1_req *req, const char *name);
/* h1_req_peer returns the connection's peer as "ip:port" ("?:0" when it was
 * not known), for logs and per-address limits; valid as long as |req|. */
const char *h1_req_peer(const struct h1_req *req);
/* h1_req_body returns the complete request body (possibly empty). */
struct span h1_req_body(const struct h1_req *req);

/* h1_req_respond answers |req| and frees it: call exactly once per request,
 * on the loop thread, at any later time. Adds Content-Length, Connection and
 * (when |content_type| is not NULL) Content-Type; |body| is copied. Returns 0;
 * ENS_ECLOSED if the connection died meanwhile (the answer is dropped);
 * ENS_EINVAL if an extra header contains CR/LF or the status is not 100..999
 * (a 500 is sent instead). */
int h1_req_respond(struct h1_req *req, int status, const char *content_type, const uint8_t *body,
                   size_t len, const struct h1_header *extra, size_t nextra);

/* h1_req_respond_error answers with the API.md error body
 * {"error":"<code>","message":"<message>"} (|message| may be NULL and is
 * JSON-escaped). Same contract as h1_req_respond. */
int h1_req_respond_error(struct h1_req *req, int status, const char *code, const char *message);

/* h1_req_respond_error_with is h1_req_respond_error with extra header fields
 * (|extra| borrowed for the call): Allow on a 405, Retry-After. */
int h1_req_respond_error_with(struct h1_req *req, int status, const char *code, const char *message,
                              const struct h1_header *extra, size_t nextra);

/* h1_error_json appends {"error":..,"message":..} to |out|; 0 or ENS_ETOOBIG. */
struct rt_buf;
int h1_error_json(struct rt_buf *out, const char *code, const char *message);

#endif
