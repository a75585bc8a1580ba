/* The stream interface: the only way protocol sessions touch the network.
 *
 * A stream is a bidirectional byte pipe bound to one libuv loop, implemented
 * over TCP (runtime/stream_tcp.c) or BoringSSL TLS (runtime/stream_tls.c).
 * HTTP and HTTP/2 code holds a struct rt_stream * and calls only the functions
 * below, so it never includes <openssl/ssl.h> and can be tested over any
 * implementation (redis ConnectionType, curl cfilters).
 *
 * Threading: every call must be made on the stream's loop thread.
 * Ownership: whoever receives a stream (accept or connect callback) owns it and
 * must end it with rt_stream_close(); the memory is released after the close
 * callback has run, never inside a read callback. */
#ifndef ENS_RUNTIME_STREAM_H
#define ENS_RUNTIME_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct rt_stream;
struct rt_tls_ctx;

/* Read callback. |status| 0: |data|/|len| hold new bytes (borrowed for the
 * duration of the call). ENS_ECLOSED: orderly end of stream. Any other negative
 * code: the stream failed (reset, TLS alert, write error). After a non-zero
 * status no further read callback runs; the owner must still close the stream. */
typedef void (*rt_stream_read_cb)(struct rt_stream *s, int status, const uint8_t *data, size_t len,
                                  void *ud);
typedef void (*rt_stream_close_cb)(struct rt_stream *s, void *ud);

struct rt_stream_ops {
    const char *name; /* "tcp" or "tls" */
    int (*read_start)(struct rt_stream *s, rt_stream_read_cb cb, void *ud);
    int (*read_stop)(struct rt_stream *s);
    int (*write)(struct rt_stream *s, const uint8_t *p, size_t n);
    int (*shutdown)(struct rt_stream *s);
    void (*close)(struct rt_stream *s, rt_stream_close_cb cb, void *ud);
    size_t (*write_pending)(const struct rt_stream *s);
    const char *(*alpn)(const struct rt_stream *s);
};

struct rt_stream {
    const struct rt_stream_ops *ops;
    uv_loop_t *loop;
    char peer[64]; /* "ip:port" of the other side, for logs */
};

/* rt_stream_read_start delivers incoming bytes to |cb| until read_stop, end of
 * stream or error. 0 or a negative ENS_E* code (then |cb| never runs). */
static inline int rt_stream_read_start(struct rt_stream *s, rt_stream_read_cb cb, void *ud)
{
    return s->ops->read_start(s, cb, ud);
}

/* rt_stream_read_stop pauses delivery (back-pressure); read_start resumes it. */
static inline int rt_stream_read_stop(struct rt_stream *s)
{
    return s->ops->read_stop(s);
}

/* rt_stream_write queues |n| bytes, copying them: the caller keeps |p|. Writes
 * are sent in call order. A failure after queueing surfaces through the read
 * callback. Returns 0, or ENS_ECLOSED after close/shutdown. */
static inline int rt_stream_write(struct rt_stream *s, const uint8_t *p, size_t n)
{
    return s->ops->write(s, p, n);
}

/* rt_stream_shutdown sends end-of-stream (TCP FIN, TLS close_notify) once all
 * queued writes have gone out. */
static inline int rt_stream_shutdown(struct rt_stream *s)
{
    return s->ops->shutdown(s);
}

/* rt_stream_close abandons queued writes, closes the transport, and calls |cb|
 * (may be NULL) from the loop once; after that |s| is freed. */
static inline void rt_stream_close(struct rt_stream *s, rt_stream_close_cb cb, void *ud)
{
    s->ops->close(s, cb, ud);
}

/* rt_stream_write_pending returns the number of queued, unsent bytes. */
static inline size_t rt_stream_write_pending(const struct rt_stream *s)
{
    return s->ops->write_pending(s);
}

/* rt_stream_alpn returns the negotiated ALPN protocol ("h2", "http/1.1") or NULL. */
static inline const char *rt_stream_alpn(const struct rt_stream *s)
{
    return s->ops->alpn(s);
}

#endif
