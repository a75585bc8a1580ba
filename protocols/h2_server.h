/* HTTP/2 server side (RFC 9113) on nghttp2, for the device API's ALPN "h2".
 *
 * Two layers in one module:
 *
 *  - struct h2_server_session is the protocol core and does no I/O (house rule
 *    11): feed it client bytes, take the bytes it wants sent, get one callback
 *    per complete request. It enforces the limits of protocols/limits.h
 *    (H2_SERVER_*): bounded SETTINGS_MAX_CONCURRENT_STREAMS, a 16 KiB header
 *    list (431), the body cap (413), per-connection buffered bodies, and
 *    nghttp2's flood guards (outbound ACKs, SETTINGS entries, CONTINUATION
 *    frames, rapid reset). Abuse past H2_SERVER_MAX_GLITCHES ends the session
 *    with GOAWAY(ENHANCE_YOUR_CALM). The fuzzer drives this layer.
 *
 *  - struct h2_server_conn runs a session over an rt_stream with idle and read
 *    timeouts, graceful GOAWAY drain and lingering close. protocols/h1_server.c
 *    uses it to serve h2 connections behind the unchanged h1_req API; most
 *    callers want h1_server_add, not this.
 *
 * Requests are delivered as struct h1_message (protocols/h1_parser.h) so the
 * HTTP/1.1 accessors work unchanged: method is a static name, target is
 * :path, ":authority" appears as a "host" field, header names are lowercase.
 *
 * Threading: a session or connection and every call on it belong to one
 * thread (the loop's, for a connection). Callbacks never run inside nghttp2:
 * requests are handed over after nghttp2 has returned, so a callback may
 * answer at once. */
#ifndef ENS_PROTOCOLS_H2_SERVER_H
#define ENS_PROTOCOLS_H2_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "protocols/h1_parser.h"
#include "protocols/h1_server.h"
#include "runtime/buf.h"
#include "runtime/stream.h"

struct h2_server_session;
struct h2_server_conn;

/* Callbacks of a session (and of a connection, which passes them through).
 * on_request: a complete, well-formed request on |stream_id|; takes ownership
 *   of |msg|. The receiver answers it later with h2_server_session_respond
 *   (or h2_server_conn_respond). Before doing anything that could answer it,
 *   it may store a cookie in *|cookie|: that value is given back to
 *   on_stream_gone if the stream dies unanswered.
 * on_stream_gone: a delivered, unanswered stream was reset by the client or
 *   the session is being freed; any later respond for it returns ENS_ECLOSED.
 *   Runs possibly inside nghttp2: it must only record the fact.
 * on_closed (connections only): the connection has closed and its memory is
 *   released right after this returns; never called from inside a call on
 *   the connection. */
struct h2_server_cbs {
    void (*on_request)(void *ud, struct h2_server_conn *k, int32_t stream_id,
                       struct h1_message *msg, void **cookie);
    void (*on_stream_gone)(void *ud, void *cookie);
    void (*on_closed)(void *ud, struct h2_server_conn *k);
};

/* ---- the protocol core ---- */

/* h2_server_session_new makes a server session and queues our SETTINGS.
 * |o| may be NULL (H1_* defaults; only max_body is used here); |cbs| is
 * copied, its on_closed ignored. Callbacks get k == NULL. Never NULL. */
struct h2_server_session *h2_server_session_new(const struct h1_server_opts *o,
                                                const struct h2_server_cbs *cbs, void *ud);

/* h2_server_session_free releases |s|; every delivered, unanswered stream gets
 * on_stream_gone first. NULL is fine. */
void h2_server_session_free(struct h2_server_session *s);

/* h2_server_session_feed consumes client bytes (the connection preface
 * first) and then delivers complete requests. Returns |len|, or a negative
 * code after which the session is dead (send what flush gives, then close):
 * ENS_EPROTO (bad preface, flood, fatal protocol error). */
ssize_t h2_server_session_feed(struct h2_server_session *s, const uint8_t *p, size_t len);

/* h2_server_session_flush appends every byte the session wants to send to
 * |out| (uncapped buffer). 0 or ENS_EPROTO (session dead). */
int h2_server_session_flush(struct h2_server_session *s, struct rt_buf *out);

/* h2_server_session_respond answers |stream_id| with :status |status|,
 * content-type (when not NULL), content-length, the |extra| fields (names
 * lowercased; connection-specific ones dropped) and a copy of |body| (not
 * sent when |head_only|). The caller validated status and header text.
 * 0, or ENS_ECLOSED when the stream is gone (nothing sent). Output waits for
 * the next flush. */
int h2_server_session_respond(struct h2_server_session *s, int32_t stream_id, int status,
                              const char *ctype, const uint8_t *body, size_t len,
                              const struct h1_header *extra, size_t nextra, int head_only);

/* h2_server_session_goaway queues a graceful GOAWAY(NO_ERROR) naming the
 * last stream received: those still finish, later ones are refused. */
void h2_server_session_goaway(struct h2_server_session *s);

/* h2_server_session_done reports whether the session neither wants to read
 * nor to write (GOAWAY exchanged and no stream left, or a fatal error). */
int h2_server_session_done(const struct h2_server_session *s);

/* Stream counts, for timers and tests: receiving (request incomplete),
 * held (delivered, unanswered), sending (answered, not yet closed). */
struct h2_server_session_counts {
    size_t receiving, held, sending;
    uint64_t requests, glitches;
};
void h2_server_session_get_counts(const struct h2_server_session *s,
                                  struct h2_server_session_counts *out);

/* ---- a connection over an rt_stream ---- */

/* h2_server_conn_new wraps |s| (ownership taken) without touching it yet;
 * |o| and |cbs| are copied. Never NULL. Start it with h2_server_conn_start. */
struct h2_server_conn *h2_server_conn_new(struct rt_stream *s, const struct h1_server_opts *o,
                                          const struct h2_server_cbs *cbs, void *ud);

/* h2_server_conn_start takes over reading |s| (replacing any read callback,
 * which is safe from inside that callback) and feeds |first|/|len| (bytes
 * already read, borrowed). From here on_closed runs exactly once, from the
 * loop, whatever happens. */
void h2_server_conn_start(struct h2_server_conn *k, const uint8_t *first, size_t len);

/* h2_server_conn_respond is h2_server_session_respond on the connection's
 * session, then sends. 0 or ENS_ECLOSED (stream or connection gone). */
int h2_server_conn_respond(struct h2_server_conn *k, int32_t stream_id, int status,
                           const char *ctype, const uint8_t *body, size_t len,
                           const struct h1_header *extra, size_t nextra, int head_only);

/* h2_server_conn_drain sends GOAWAY; the connection closes once the streams
 * it already took are answered and sent (on_closed follows). */
void h2_server_conn_drain(struct h2_server_conn *k);

/* h2_server_conn_close closes at once: unanswered streams get on_stream_gone
 * now, on_closed follows from the loop. */
void h2_server_conn_close(struct h2_server_conn *k);

#endif
