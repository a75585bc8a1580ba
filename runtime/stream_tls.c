/* The TLS stream: BoringSSL over memory BIOs on top of any rt_stream, plus the
 * TLS context constructors.
 *
 * The SSL object never touches a socket: ciphertext read from the lower stream
 * goes into |rbio|, whatever SSL produces in |wbio| is written to the lower
 * stream. That keeps every byte on the loop thread and lets the same code run
 * over TCP or, in tests, anything else. */
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net_int.h"

/* Plaintext written before the handshake completes is held here; HTTP
 * clients write the request right after connecting, so this bounds a
 * misbehaving caller rather than normal traffic. */
#define TLS_MAX_EARLY_BYTES (1024 * 1024)
/* SSL_write / SSL_read granularity: one maximal TLS record. */
#define TLS_RECORD_CHUNK  (16 * 1024)
#define TLS_MAX_ALPN_WIRE 256

/* TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are fixed by
 * BoringSSL (AES-GCM and ChaCha20-Poly1305). */
static const char kCiphers12[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

struct rt_tls_ctx {
    SSL_CTX *ssl_ctx;
    int server;
    uint8_t alpn[TLS_MAX_ALPN_WIRE]; /* wire format: len-prefixed names */
    size_t alpn_len;
};

struct tls_stream {
    struct rt_stream base;
    struct rt_stream *lower;
    struct rt_tls_ctx *ctx;
    SSL *ssl;
    BIO *rbio; /* ciphertext in (owned by ssl) */
    BIO *wbio; /* ciphertext out (owned by ssl) */
    rt_stream_read_cb read_cb;
    void *read_ud;
    rt__tls_handshake_cb hs_cb;
    void *hs_ud;
    rt_stream_close_cb close_cb;
    void *close_ud;
    struct rt_buf early;
    uv_idle_t kick; /* resumes delivery of already-decrypted data after read_start */
    int pending_err;
    int handles; /* lower stream + kick still open */
    unsigned hs_started : 1;
    unsigned hs_done : 1;
    unsigned reading : 1;
    unsigned lower_reading : 1;
    unsigned finished : 1;
    unsigned shut_pending : 1;
    unsigned shut : 1;
    unsigned closing : 1;
    unsigned in_pump : 1;
    char alpn_sel[32]; /* negotiated protocol, NUL-terminated */
};

static void tls_pump(struct tls_stream *ts);

static void set_err(char *err, size_t errlen, const char *what)
{
    if (!err || errlen == 0)
        return;
    char reason[160];
    unsigned long e = ERR_get_error();
    if (e) {
        ERR_error_string_n(e, reason, sizeof(reason));
        snprintf(err, errlen, "%s: %s", what, reason);
    } else {
        snprintf(err, errlen, "%s", what);
    }
    ERR_clear_error();
}

static int alpn_encode(struct rt_tls_ctx *c, const char *const *alpn)
{
    c->alpn_len = 0;
    for (size_t i = 0; alpn && alpn[i]; i++) {
        size_t n = strlen(alpn[i]);
        if (n == 0 || n > 255 || c->alpn_len + 1 + n > sizeof(c->alpn))
            return ENS_EINVAL;
        c->alpn[c->alpn_len++] = (uint8_t)n;
        memcpy(c->alpn + c->alpn_len, alpn[i], n);
        c->alpn_len += n;
    }
    return 0;
}

/* Server preference: the first of our protocols that the client offers. */
static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
                       unsigned inlen, void *arg)
{
    const struct rt_tls_ctx *c = arg;
    size_t i = 0;
    while (i < c->alpn_len) {
        uint8_t n = c->alpn[i];
        const uint8_t *name = c->alpn + i + 1;
        struct span offer = span_make(in, inlen);
        struct span proto;
        uint8_t plen;
        while (span_get_u8(&offer, &plen) && span_get_bytes(&offer, &proto, plen)) {
            if (plen == n && memcmp(proto.p, name, n) == 0) {
                *out = name;
                *outlen = n;
                return SSL_TLSEXT_ERR_OK;
            }
        }
        i += 1 + (size_t)n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static struct rt_tls_ctx *ctx_new_common(int server, char *err, size_t errlen)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_method());
    if (!sc) {
        set_err(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(sc, TLS1_3_VERSION) ||
        !SSL_CTX_set_strict_cipher_list(sc, kCiphers12)) {
        set_err(err, errlen, "TLS version/cipher setup");
        SSL_CTX_free(sc);
        return NULL;
    }
    struct rt_tls_ctx *c = ens_calloc(1, sizeof(*c));
    c->ssl_ctx = sc;
    c->server = server;
    return c;
}

struct rt_tls_ctx *rt_tls_ctx_server_new(const struct rt_tls_server_opts *o, char *err,
                                         size_t errlen)
{
    if (!o || !o->cert_file || !o->key_file) {
        set_err(err, errlen, "server TLS needs cert_file and key_file");
        return NULL;
    }
    struct rt_tls_ctx *c = ctx_new_common(1, err, errlen);
    if (!c)
        return NULL;
    if (!SSL_CTX_use_certificate_chain_file(c->ssl_ctx, o->cert_file)) {
        set_err(err, errlen, "cannot load certificate chain");
        goto fail;
    }
    if (!SSL_CTX_use_PrivateKey_file(c->ssl_ctx, o->key_file, SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(c->ssl_ctx)) {
        set_err(err, errlen, "cannot load private key or it does not match the certificate");
        goto fail;
    }
    if (alpn_encode(c, o->alpn) != 0) {
        set_err(err, errlen, "bad ALPN list");
        goto fail;
    }
    if (c->alpn_len)
        SSL_CTX_set_alpn_select_cb(c->ssl_ctx, alpn_select, c);
    return c;
fail:
    rt_tls_ctx_free(c);
    return NULL;
}

struct rt_tls_ctx *rt_tls_ctx_client_new(const struct rt_tls_client_opts *o, char *err,
                                         size_t errlen)
{
    struct rt_tls_ctx *c = ctx_new_common(0, err, errlen);
    if (!c)
        return NULL;
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    int ok = (o && o->ca_file) ? SSL_CTX_load_verify_locations(c->ssl_ctx, o->ca_file, NULL)
                               : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
    if (!ok) {
        set_err(err, errlen, "cannot load trusted CAs");
        goto fail;
    }
    if (o && o->cert_file) {
        if (!o->key_file || !SSL_CTX_use_certificate_chain_file(c->ssl_ctx, o->cert_file) ||
            !SSL_CTX_use_PrivateKey_file(c->ssl_ctx, o->key_file, SSL_FILETYPE_PEM) ||
            !SSL_CTX_check_private_key(c->ssl_ctx)) {
            set_err(err, errlen, "cannot load client certificate or key");
            goto fail;
        }
    }
    if (alpn_encode(c, o ? o->alpn : NULL) != 0) {
        set_err(err, errlen, "bad ALPN list");
        goto fail;
    }
    /* SSL_CTX_set_alpn_protos returns 0 on success, unlike the rest of the API. */
    if (c->alpn_len && SSL_CTX_set_alpn_protos(c->ssl_ctx, c->alpn, c->alpn_len) != 0) {
        set_err(err, errlen, "cannot set ALPN");
        goto fail;
    }
    return c;
fail:
    rt_tls_ctx_free(c);
    return NULL;
}

void rt_tls_ctx_free(struct rt_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    ens_free(ctx);
}

/* ---- the stream ---- */

static void flush_out(struct tls_stream *ts)
{
    uint8_t buf[TLS_RECORD_CHUNK + 512];
    while (!ts->closing && BIO_pending(ts->wbio) > 0) {
        int n = BIO_read(ts->wbio, buf, sizeof(buf));
        if (n <= 0)
            break;
        /* A failure here comes back through the lower read callback. */
        (void)rt_stream_write(ts->lower, buf, (size_t)n);
    }
    ens_wipe(buf, sizeof(buf));
}

static void lower_read_stop(struct tls_stream *ts)
{
    if (ts->lower_reading) {
        rt_stream_read_stop(ts->lower);
        ts->lower_reading = 0;
    }
}

/* fail ends the stream with |err|: the handshake waiter hears it first,
 * otherwise the reader, otherwise it waits for the next read_start. */
static void fail(struct tls_stream *ts, int err)
{
    if (ts->finished || ts->closing)
        return;
    ts->finished = 1;
    lower_read_stop(ts);
    if (ts->hs_cb) {
        rt__tls_handshake_cb cb = ts->hs_cb;
        ts->hs_cb = NULL;
        cb(&ts->base, err, ts->hs_ud);
        return;
    }
    if (ts->reading && ts->read_cb) {
        ts->reading = 0;
        ts->read_cb(&ts->base, err, NULL, 0, ts->read_ud);
        return;
    }
    ts->pending_err = err;
}

static void do_shutdown(struct tls_stream *ts)
{
    if (ts->shut)
        return;
    ts->shut = 1;
    SSL_shutdown(ts->ssl);
    flush_out(ts);
    rt_stream_shutdown(ts->lower);
}

static void write_plain(struct tls_stream *ts, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int chunk = n > TLS_RECORD_CHUNK ? TLS_RECORD_CHUNK : (int)n;
        /* Memory BIOs grow, so SSL_write completes unless the connection failed. */
        int w = SSL_write(ts->ssl, p, chunk);
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
    flush_out(ts);
}

static void log_hs_failure(struct tls_stream *ts)
{
    char reason[160] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    long vr = SSL_get_verify_result(ts->ssl);
    RT_LOG_I("tls.handshake_failed", "peer=%s reason=%s verify=%s", ts->base.peer, reason,
             vr == X509_V_OK ? "ok" : X509_verify_cert_error_string(vr));
    ERR_clear_error();
}

static void tls_pump(struct tls_stream *ts)
{
    if (ts->closing || ts->finished || ts->in_pump)
        return;
    ts->in_pump = 1;
    if (!ts->hs_done) {
        ts->hs_started = 1;
        int r = SSL_do_handshake(ts->ssl);
        flush_out(ts);
        if (r != 1) {
            int e = SSL_get_error(ts->ssl, r);
            ts->in_pump = 0;
            if (e != SSL_ERROR_WANT_READ) {
                log_hs_failure(ts);
                fail(ts, ENS_ETLS);
            }
            return;
        }
        ts->hs_done = 1;
        const uint8_t *sel;
        unsigned sel_len;
        SSL_get0_alpn_selected(ts->ssl, &sel, &sel_len);
        if (sel != NULL && sel_len < sizeof(ts->alpn_sel)) {
            memcpy(ts->alpn_sel, sel, sel_len);
            ts->alpn_sel[sel_len] = '\0';
        }
        if (ts->early.len) {
            write_plain(ts, ts->early.data, ts->early.len);
            rt_buf_cleanup_secret(&ts->early);
        }
        if (ts->shut_pending)
            do_shutdown(ts);
        if (ts->hs_cb) {
            rt__tls_handshake_cb cb = ts->hs_cb;
            ts->hs_cb = NULL;
            cb(&ts->base, 0, ts->hs_ud);
            if (ts->closing) {
                ts->in_pump = 0;
                return;
            }
        }
        if (!ts->reading)
            lower_read_stop(ts);
    }
    uint8_t buf[TLS_RECORD_CHUNK];
    while (ts->reading && !ts->closing && !ts->finished) {
        int n = SSL_read(ts->ssl, buf, sizeof(buf));
        if (n > 0) {
            ts->read_cb(&ts->base, 0, buf, (size_t)n, ts->read_ud);
            continue;
        }
        int e = SSL_get_error(ts->ssl, n);
        flush_out(ts);
        if (e == SSL_ERROR_WANT_READ)
            break;
        ts->in_pump = 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            fail(ts, ENS_ECLOSED);
        } else {
            ERR_clear_error();
            fail(ts, ENS_ETLS);
        }
        ens_wipe(buf, sizeof(buf));
        return;
    }
    ens_wipe(buf, sizeof(buf));
    /* Post-handshake messages (tickets, key updates) may need answers. */
    flush_out(ts);
    ts->in_pump = 0;
}

static void on_lower_read(struct rt_stream *lower, int status, const uint8_t *data, size_t len,
                          void *ud)
{
    struct tls_stream *ts = ud;
    if (ts->closing || ts->finished)
        return;
    if (status != 0) {
        ts->lower_reading = 0;
        fail(ts, ts->hs_done ? status : ENS_ETLS);
        return;
    }
    if (BIO_write(ts->rbio, data, (int)len) != (int)len) {
        fail(ts, ENS_ENOMEM);
        return;
    }
    tls_pump(ts);
}

static int lower_read_start(struct tls_stream *ts)
{
    if (ts->lower_reading)
        return 0;
    int rc = rt_stream_read_start(ts->lower, on_lower_read, ts);
    if (rc == 0)
        ts->lower_reading = 1;
    return rc;
}

static void on_kick(uv_idle_t *h)
{
    struct tls_stream *ts = h->data;
    uv_idle_stop(&ts->kick);
    if (ts->pending_err && ts->reading && !ts->closing) {
        int err = ts->pending_err;
        ts->pending_err = 0;
        ts->reading = 0;
        ts->read_cb(&ts->base, err, NULL, 0, ts->read_ud);
        return;
    }
    tls_pump(ts);
}

static int tls_read_start(struct rt_stream *s, rt_stream_read_cb cb, void *ud)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->closing)
        return ENS_ECLOSED;
    if (ts->finished && !ts->pending_err)
        return ENS_ECLOSED;
    ts->read_cb = cb;
    ts->read_ud = ud;
    ts->reading = 1;
    if (ts->pending_err) {
        uv_idle_start(&ts->kick, on_kick);
        return 0;
    }
    int rc = lower_read_start(ts);
    if (rc)
        return rc;
    /* Records already decrypted or buffered must not wait for new network
     * bytes; deliver them from the loop, not from inside read_start. */
    if (ts->hs_done && (SSL_pending(ts->ssl) > 0 || BIO_pending(ts->rbio) > 0))
        uv_idle_start(&ts->kick, on_kick);
    return 0;
}

static int tls_read_stop(struct rt_stream *s)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    ts->reading = 0;
    if (ts->closing)
        return 0;
    uv_idle_stop(&ts->kick);
    /* A client handshake in progress keeps reading; it stops itself once done. */
    if (ts->hs_done || !ts->hs_cb)
        lower_read_stop(ts);
    return 0;
}

static int tls_write(struct rt_stream *s, const uint8_t *p, size_t n)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->closing || ts->shut || ts->shut_pending)
        return ENS_ECLOSED;
    if (ts->finished)
        return ENS_ECLOSED;
    if (n == 0)
        return 0;
    if (!ts->hs_done) {
        if (rt_buf_append(&ts->early, p, n) != 0)
            return ENS_ETOOBIG;
        if (!ts->hs_started && !ts->ctx->server) {
            int rc = lower_read_start(ts);
            if (rc)
                return rc;
            tls_pump(ts);
        }
        return 0;
    }
    write_plain(ts, p, n);
    return 0;
}

static int tls_shutdown(struct rt_stream *s)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->closing)
        return ENS_ECLOSED;
    if (!ts->hs_done) {
        ts->shut_pending = 1;
        if (ts->finished)
            rt_stream_shutdown(ts->lower);
        return 0;
    }
    do_shutdown(ts);
    return 0;
}

static void handle_gone(struct tls_stream *ts)
{
    if (--ts->handles > 0)
        return;
    if (ts->close_cb)
        ts->close_cb(&ts->base, ts->close_ud);
    SSL_free(ts->ssl);
    rt_buf_cleanup_secret(&ts->early);
    ens_free(ts);
}

static void on_lower_closed(struct rt_stream *lower, void *ud)
{
    handle_gone(ud);
}

static void on_kick_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void tls_close(struct rt_stream *s, rt_stream_close_cb cb, void *ud)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->closing)
        return;
    ts->closing = 1;
    ts->close_cb = cb;
    ts->close_ud = ud;
    ts->hs_cb = NULL;
    uv_close((uv_handle_t *)&ts->kick, on_kick_closed);
    rt_stream_close(ts->lower, on_lower_closed, ts);
}

static size_t tls_write_pending(const struct rt_stream *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    return ts->early.len + rt_stream_write_pending(ts->lower);
}

static const char *tls_alpn(const struct rt_stream *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    return ts->alpn_sel[0] ? ts->alpn_sel : NULL;
}

static const struct rt_stream_ops tls_ops = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .write_pending = tls_write_pending,
    .alpn = tls_alpn,
};

struct rt_stream *rt__tls_stream_new(struct rt_stream *lower, struct rt_tls_ctx *ctx,
                                     const char *host)
{
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (!ssl || !rbio || !wbio)
        goto fail;
    BIO_set_mem_eof_return(rbio, -1);
    BIO_set_mem_eof_return(wbio, -1);
    if (ctx->server) {
        SSL_set_accept_state(ssl);
    } else {
        /* A client without a name to check would accept any valid certificate. */
        if (!host || !*host)
            goto fail;
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        if (rt__is_ip_literal(host)) {
            if (!X509_VERIFY_PARAM_set1_ip_asc(param, host))
                goto fail;
        } else {
            if (!SSL_set_tlsext_host_name(ssl, host) ||
                !X509_VERIFY_PARAM_set1_host(param, host, strlen(host)))
                goto fail;
        }
        SSL_set_connect_state(ssl);
    }
    struct tls_stream *ts = ens_calloc(1, sizeof(*ts));
    if (uv_idle_init(lower->loop, &ts->kick) != 0) {
        ens_free(ts);
        goto fail;
    }
    SSL_set_bio(ssl, rbio, wbio);
    ts->kick.data = ts;
    ts->base.ops = &tls_ops;
    ts->base.loop = lower->loop;
    memcpy(ts->base.peer, lower->peer, sizeof(ts->base.peer));
    ts->lower = lower;
    ts->ctx = ctx;
    ts->ssl = ssl;
    ts->rbio = rbio;
    ts->wbio = wbio;
    ts->handles = 2;
    rt_buf_init(&ts->early, TLS_MAX_EARLY_BYTES);
    return &ts->base;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    BIO_free(rbio);
    BIO_free(wbio);
    rt_stream_close(lower, NULL, NULL);
    return NULL;
}

int rt__tls_stream_handshake(struct rt_stream *s, rt__tls_handshake_cb cb, void *ud)
{
    struct tls_stream *ts = (struct tls_stream *)s;
    if (ts->closing || ts->finished || ts->hs_done)
        return ENS_EINVAL;
    int rc = lower_read_start(ts);
    if (rc)
        return rc;
    ts->hs_cb = cb;
    ts->hs_ud = ud;
    tls_pump(ts);
    return 0;
}
