/* Listening, connecting and TLS contexts: how the runtime makes streams.
 *
 * Implemented by runtime/stream_tcp.c (plain TCP), runtime/stream_tls.c
 * (BoringSSL over any stream, memory BIOs), runtime/listener.c (listen and
 * accept within the descriptor budget) and runtime/net.c (async DNS + connect
 * with deadlines, URL parsing). Every function must be called on
 * the loop's thread.
 *
 * Async contract (house rule 5): if an async call returns an error its callback
 * never runs; if it returns 0 the callback runs exactly once, with ENS_ECANCELED
 * when the loop is being torn down. */
#ifndef ENS_RUNTIME_NET_H
#define ENS_RUNTIME_NET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/stream.h"

/* ---- TLS contexts (shared, read-only after creation; any thread) ---- */

struct rt_tls_server_opts {
    const char *cert_file; /* PEM chain, leaf first */
    const char *key_file;  /* PEM private key */
    const char *const
        *alpn; /* NULL-terminated preference list, e.g. {"h2","http/1.1",NULL}; NULL for none */
};

struct rt_tls_client_opts {
    const char *ca_file;     /* PEM bundle to trust; NULL = the system store */
    const char *cert_file;   /* optional client certificate (PEM) */
    const char *key_file;    /* its key */
    const char *const *alpn; /* NULL-terminated offer list or NULL */
};

/* rt_tls_ctx_server_new / rt_tls_ctx_client_new build a context allowing TLS 1.2
 * and 1.3 only, ECDHE key exchange and AES-GCM (plus TLS 1.3's fixed suites).
 * Client contexts verify the peer chain and the host name (or IP address when
 * the host is a literal). On failure they return NULL and write a reason
 * (never key material) to |err| (capacity |errlen|). Free with rt_tls_ctx_free. */
struct rt_tls_ctx *rt_tls_ctx_server_new(const struct rt_tls_server_opts *o, char *err,
                                         size_t errlen);
struct rt_tls_ctx *rt_tls_ctx_client_new(const struct rt_tls_client_opts *o, char *err,
                                         size_t errlen);
void rt_tls_ctx_free(struct rt_tls_ctx *ctx);

/* ---- URLs ---- */

struct rt_url {
    char scheme[8];  /* "http" or "https" */
    char host[256];  /* without brackets for IPv6 literals */
    uint16_t port;   /* explicit or the scheme's default */
    char path[2048]; /* path and query, "/" when empty */
};

/* rt_url_parse parses an absolute http(s) URL; 0 or ENS_EPARSE. No userinfo,
 * no fragment. */
int rt_url_parse(const char *url, struct rt_url *out);

/* ---- Listening ---- */

struct rt_listener;

/* Accept callback: |s| is a new stream owned by the callee (already wrapped in
 * TLS when the listener has a context; the handshake completes lazily). */
typedef void (*rt_accept_cb)(struct rt_stream *s, void *ud);

/* rt_listen binds "host:port" ("0.0.0.0:8443", "127.0.0.1:0", "[::1]:9090"),
 * with SO_REUSEPORT when |reuseport| so that several loops can accept on one
 * port. |tls| may be NULL (plain TCP) and must outlive the listener.
 * 0 and *out set, or a negative ENS_E* code.
 *
 * A listener never holds more than rt_listen_conn_cap() accepted streams open
 * at once; past that, and whenever accept(2) fails for want of descriptors or
 * memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), it stops accepting: waiting
 * clients stay in the kernel's backlog. It tries again when one of its streams
 * closes and, after a descriptor shortage, also on a timer from
 * RT_ACCEPT_BACKOFF_MIN_MS doubling to RT_ACCEPT_BACKOFF_MAX_MS. Each such
 * episode logs one line when it starts (net.accept_paused) and one when the
 * backlog is empty again (net.accept_resumed, with how often it paused). */
int rt_listen(uv_loop_t *loop, const char *hostport, struct rt_tls_ctx *tls, int reuseport,
              rt_accept_cb cb, void *ud, struct rt_listener **out);

/* rt_listener_port returns the bound port (useful after binding port 0). */
uint16_t rt_listener_port(const struct rt_listener *l);

/* rt_listener_close stops accepting (also when paused; a pending retry is
 * cancelled) and closes the socket; existing streams are unaffected. The
 * memory goes once the handles have closed and the last stream it accepted
 * has closed. */
void rt_listener_close(struct rt_listener *l);

/* rt_listen_set_conn_cap sets the cap of every listener created afterwards
 * (rt_fdlimit_setup derives it from RLIMIT_NOFILE). Call before the loop
 * threads start; 0 restores the default, RT_FD_MAX_CONNS. */
void rt_listen_set_conn_cap(unsigned cap);
unsigned rt_listen_conn_cap(void);

/* Process-wide listener figures, for metrics; any thread, relaxed reads. */
struct rt_listen_stats {
    uint64_t open;       /* accepted streams not yet closed, all listeners */
    uint64_t paused;     /* listeners not accepting right now */
    uint64_t pauses_fd;  /* episodes begun by a descriptor or memory shortage */
    uint64_t pauses_cap; /* episodes begun at the connection cap */
};
void rt_listen_stats_get(struct rt_listen_stats *out);

/* ---- Connecting ---- */

struct rt_connect_opts {
    const char *host; /* name or literal; resolved on the thread pool */
    uint16_t port;
    struct rt_tls_ctx *tls; /* NULL for plain TCP; must outlive the stream */
    uint64_t deadline_ms;   /* absolute, on uv_now(loop)'s clock; covers DNS+TCP+TLS */
    int deny_private;       /* skip loopback, private, link-local and unspecified
                               addresses, whatever the name resolved to (SSRF) */
};

/* Connect callback: on success |status| is 0 and |s| a stream owned by the
 * callee, with the TLS handshake complete (so rt_stream_alpn answers). On
 * failure |s| is NULL and |status| one of ENS_EDNS, ENS_ECONNECT, ENS_ETLS,
 * ENS_ETIMEDOUT, ENS_ECANCELED. */
typedef void (*rt_connect_cb)(struct rt_stream *s, int status, void *ud);

/* rt_connect starts resolving and connecting; see the async contract above.
 * The strings in |o| are copied. */
int rt_connect(uv_loop_t *loop, const struct rt_connect_opts *o, rt_connect_cb cb, void *ud);

/* rt_addr_is_private reports whether |sa| (IPv4 or IPv6) is loopback,
 * private (RFC 1918, RFC 4193), link-local, CGNAT, unspecified or an
 * IPv4-mapped form of one of those: an address a server reachable from the
 * outside must not be made to call. Any thread. */
int rt_addr_is_private(const struct sockaddr *sa);

/* rt_host_is_private_literal is rt_addr_is_private for a host string: an IP
 * literal in such a range, or "localhost" / "*.localhost". Names are not
 * resolved here; rt_connect's deny_private checks what they resolve to. */
int rt_host_is_private_literal(const char *host);

/* rt_hostport_split splits "host:port" / "[v6]:port" into |host| (capacity
 * |hostlen|) and |port|; 0 or ENS_EPARSE. */
int rt_hostport_split(const char *hostport, char *host, size_t hostlen, uint16_t *port);

#endif
