/* Internals of protocols/h2_client.c shared with its tests and fuzzers only. */
#ifndef ENS_PROTOCOLS_H2_CLIENT_INT_H
#define ENS_PROTOCOLS_H2_CLIENT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocols/h2_client.h"
#include "runtime/buf.h"
#include "runtime/stream.h"

/* h2__client_attach hands the client an already connected stream, as if
 * rt_connect had produced it; the client takes ownership. It skips the ALPN
 * check. 0, or ENS_EINVAL when a connection exists already. */
int h2__client_attach(struct h2_client *c, struct rt_stream *s);

/* h2__client_feed delivers |n| server bytes to the current connection as if the
 * stream had read them, then runs the client (callbacks, queue, output).
 * Returns 0, ENS_ECLOSED when there is no connection, or the error that made the
 * client drop the connection (ENS_EPROTO for bytes nghttp2 rejected). */
int h2__client_feed(struct h2_client *c, const uint8_t *p, size_t n);

/* h2__client_kick runs the client now, as its zero-delay timer would. */
void h2__client_kick(struct h2_client *c);

/* h2__memstream_new makes an in-memory rt_stream whose writes append to |sink|
 * (borrowed; appends past its cap make writes fail with ENS_ECLOSED). Reads
 * never produce data by themselves: use h2__client_feed. Close frees it from a
 * zero-delay timer on |loop|. */
struct rt_stream *h2__memstream_new(uv_loop_t *loop, struct rt_buf *sink);

#endif
