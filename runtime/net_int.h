/* Internals shared by runtime/stream_tcp.c, runtime/stream_tls.c,
 * runtime/net.c and runtime/listener.c. Never included from outside runtime/. */
#ifndef ENS_RUNTIME_NET_INT_H
#define ENS_RUNTIME_NET_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/net.h"
#include "runtime/stream.h"

/* Bytes handed to the kernel per read; libuv reads in a loop up to this size. */
#define RT__READ_CHUNK (64 * 1024)

/* rt__tcp_stream_new allocates a TCP stream whose uv_tcp_t is initialised on
 * |loop| but not connected; *tcp_out receives the handle so that net.c can
 * accept or connect it. Closing the stream closes the handle. */
struct rt_stream *rt__tcp_stream_new(uv_loop_t *loop, uv_tcp_t **tcp_out);

/* rt__tcp_stream_set_peer fills s->peer from the connected socket. */
void rt__tcp_stream_set_peer(struct rt_stream *s);

typedef void (*rt__tcp_release_cb)(void *ud);

/* rt__tcp_stream_on_release makes the stream call |cb|(|ud|) once, from its
 * handle's close callback, after its descriptor is closed and its owner's
 * close callback has run. The listener uses it to count open connections, so
 * |ud| must stay valid until then. */
void rt__tcp_stream_on_release(struct rt_stream *s, rt__tcp_release_cb cb, void *ud);

/* rt__tls_stream_new wraps |lower| (ownership taken, also on failure: then
 * |lower| is closed) in a TLS stream. |host| (client only) drives SNI and the
 * name/IP check; it is copied. NULL on failure. */
struct rt_stream *rt__tls_stream_new(struct rt_stream *lower, struct rt_tls_ctx *ctx,
                                     const char *host);

typedef void (*rt__tls_handshake_cb)(struct rt_stream *s, int status, void *ud);

/* rt__tls_stream_handshake drives the handshake now (reading from the lower
 * stream) and calls |cb| once with 0 or ENS_ETLS / ENS_ECLOSED. It is not
 * called if the stream is closed first. */
int rt__tls_stream_handshake(struct rt_stream *s, rt__tls_handshake_cb cb, void *ud);

/* rt__is_ip_literal reports whether |host| is an IPv4 or IPv6 address. */
int rt__is_ip_literal(const char *host);

/* rt__listen_addr_parse is rt_hostport_split that also takes port 0 (bind an
 * ephemeral port); 0 or ENS_EPARSE. */
int rt__listen_addr_parse(const char *hostport, char *host, size_t hostlen, uint16_t *port);

#endif
