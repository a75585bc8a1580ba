/* HTTP/2 on the h1_server API: a raw nghttp2 client over real loopback TLS
 * (ALPN h2) against h1_server_add, plus an HTTP/1.1 client on the same
 * listener. */
#include <nghttp2/nghttp2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/h1_client.h"
#include "protocols/h1_server.h"
#include "runtime/err.h"
#include "runtime/net.h"

#define SAFETY_MS 10000
#define MAXS      8

enum mode { ANSWER_NOW, ANSWER_LATER, HOLD };

struct cstream {
    int32_t id;
    int status;
    char body[512];
    size_t blen;
    int closed;
    uint32_t err;
    int has_ctype, has_clen;
    const uint8_t *send;
    size_t send_len, send_off;
};

struct t {
    uv_loop_t loop;
    uv_timer_t safety, later;
    struct h1_server *srv;
    struct rt_listener *l;
    struct rt_tls_ctx *stls, *ctls, *ctls1;
    enum mode mode;
    struct h1_req *held[MAXS];
    size_t nheld;
    void (*on_held)(struct t *t);
    size_t want_held;
    /* raw h2 client */
    struct rt_stream *s;
    nghttp2_session *ng;
    struct cstream st[MAXS];
    size_t nst;
    int32_t close_order[MAXS];
    size_t nclosed;
    size_t want_closed;
    int goaway;
    int eof;
    void (*on_connected)(struct t *t);
    int drained;
    /* h1 client */
    int h1_status;
    int h1_calls;
};

static char g_pki[512];

static void on_safety(uv_timer_t *tm)
{
    (void)tm;
    fail_msg("test loop did not finish in time");
}

static void answer(struct h1_req *req)
{
    struct span target = h1_req_target(req);
    struct span body = h1_req_body(req);
    char out[512];
    int n = snprintf(out, sizeof(out), "%s %.*s %.*s", h1_req_method(req), (int)target.len,
                     (const char *)target.p, (int)body.len, (const char *)body.p);
    struct h1_header extra[] = {{"X-Test", "yes"}, {"Connection", "keep-alive"}};
    assert_int_equal(
        h1_req_respond(req, 200, "text/plain", (const uint8_t *)out, (size_t)n, extra, 2), 0);
}

static void on_later(uv_timer_t *tm)
{
    struct t *t = tm->data;
    for (size_t i = 0; i < t->nheld; i++) {
        answer(t->held[i]);
        t->held[i] = NULL;
    }
    t->nheld = 0;
}

static void on_request(struct h1_req *req, void *ud)
{
    struct t *t = ud;
    if (t->mode == ANSWER_NOW) {
        answer(req);
        return;
    }
    assert_true(t->nheld < MAXS);
    t->held[t->nheld++] = req;
    if (t->mode == ANSWER_LATER)
        uv_timer_start(&t->later, on_later, 20, 0);
    else if (t->on_held && t->nheld == t->want_held)
        t->on_held(t);
}

static void on_accept(struct rt_stream *s, void *ud)
{
    struct t *t = ud;
    assert_int_equal(h1_server_add(t->srv, s), 0);
}

static void t_init(struct t *t, const struct h1_server_opts *o, enum mode mode)
{
    memset(t, 0, sizeof(*t));
    t->mode = mode;
    assert_int_equal(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->safety);
    uv_timer_start(&t->safety, on_safety, SAFETY_MS, 0);
    uv_unref((uv_handle_t *)&t->safety);
    uv_timer_init(&t->loop, &t->later);
    t->later.data = t;
    char cert[600], key[600], ca[600], err[256];
    snprintf(cert, sizeof(cert), "%s/server.pem", g_pki);
    snprintf(key, sizeof(key), "%s/server.key", g_pki);
    snprintf(ca, sizeof(ca), "%s/ca.pem", g_pki);
    static const char *const salpn[] = {"h2", "http/1.1", NULL};
    static const char *const calpn[] = {"h2", NULL};
    static const char *const calpn1[] = {"http/1.1", NULL};
    struct rt_tls_server_opts so = {cert, key, salpn};
    struct rt_tls_client_opts co = {ca, NULL, NULL, calpn};
    struct rt_tls_client_opts co1 = {ca, NULL, NULL, calpn1};
    t->stls = rt_tls_ctx_server_new(&so, err, sizeof(err));
    t->ctls = rt_tls_ctx_client_new(&co, err, sizeof(err));
    t->ctls1 = rt_tls_ctx_client_new(&co1, err, sizeof(err));
    assert_non_null(t->stls);
    assert_non_null(t->ctls);
    assert_non_null(t->ctls1);
    t->srv = h1_server_new(&t->loop, o, on_request, t);
    assert_int_equal(rt_listen(&t->loop, "127.0.0.1:0", t->stls, 0, on_accept, t, &t->l), 0);
}

static void stop_listening(struct t *t)
{
    if (t->l) {
        rt_listener_close(t->l);
        t->l = NULL;
    }
}

static void t_finish(struct t *t)
{
    stop_listening(t);
    if (t->srv)
        h1_server_free(t->srv);
    for (size_t i = 0; i < t->nheld; i++)
        if (t->held[i])
            assert_int_equal(h1_req_respond(t->held[i], 200, NULL, NULL, 0, NULL, 0), ENS_ECLOSED);
    uv_close((uv_handle_t *)&t->safety, NULL);
    uv_close((uv_handle_t *)&t->later, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    nghttp2_session_del(t->ng);
    rt_tls_ctx_free(t->stls);
    rt_tls_ctx_free(t->ctls);
    rt_tls_ctx_free(t->ctls1);
}

/* ---- raw nghttp2 client ---- */

static struct cstream *cs_find(struct t *t, int32_t id)
{
    for (size_t i = 0; i < t->nst; i++)
        if (t->st[i].id == id)
            return &t->st[i];
    return NULL;
}

static void cli_close(struct t *t)
{
    if (t->s) {
        rt_stream_close(t->s, NULL, NULL);
        t->s = NULL;
    }
    stop_listening(t);
}

static void cli_flush(struct t *t)
{
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(t->ng, &d);
        assert_true(n >= 0);
        if (n == 0)
            break;
        if (t->s)
            rt_stream_write(t->s, d, (size_t)n);
    }
}

static int c_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                       void *ud)
{
    (void)ng;
    (void)flags;
    struct cstream *c = cs_find(ud, f->hd.stream_id);
    if (!c)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        c->status = atoi((const char *)value);
    if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
        c->has_ctype = 1;
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
        c->has_clen = 1;
    assert_false(namelen == 10 && memcmp(name, "connection", 10) == 0);
    (void)valuelen;
    return 0;
}

static int c_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                     size_t len, void *ud)
{
    (void)ng;
    (void)flags;
    struct cstream *c = cs_find(ud, id);
    if (c && c->blen + len < sizeof(c->body)) {
        memcpy(c->body + c->blen, data, len);
        c->blen += len;
    }
    return 0;
}

static int c_on_frame(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ng;
    struct t *t = ud;
    if (f->hd.type == NGHTTP2_GOAWAY)
        t->goaway = 1;
    return 0;
}

static int c_on_close(nghttp2_session *ng, int32_t id, uint32_t err, void *ud)
{
    (void)ng;
    struct t *t = ud;
    struct cstream *c = cs_find(t, id);
    if (c) {
        c->closed = 1;
        c->err = err;
        t->close_order[t->nclosed++] = id;
    }
    return 0;
}

static void cli_read(struct rt_stream *s, int status, const uint8_t *data, size_t len, void *ud)
{
    (void)s;
    struct t *t = ud;
    if (status != 0) {
        t->eof = 1;
        cli_close(t);
        return;
    }
    assert_true(nghttp2_session_mem_recv(t->ng, data, len) == (ssize_t)len);
    cli_flush(t);
    if (t->want_closed && t->nclosed >= t->want_closed && !t->goaway)
        cli_close(t);
}

static void cli_connected(struct rt_stream *s, int status, void *ud)
{
    struct t *t = ud;
    assert_int_equal(status, 0);
    t->s = s;
    assert_int_equal(rt_stream_read_start(s, cli_read, t), 0);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
    assert_int_equal(nghttp2_session_client_new(&t->ng, cb, t), 0);
    nghttp2_session_callbacks_del(cb);
    assert_int_equal(nghttp2_submit_settings(t->ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    t->on_connected(t);
    cli_flush(t);
}

static ssize_t c_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    struct cstream *c = src->ptr;
    size_t n = c->send_len - c->send_off;
    if (n > length)
        n = length;
    memcpy(buf, c->send + c->send_off, n);
    c->send_off += n;
    if (c->send_off == c->send_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

static struct cstream *cli_request(struct t *t, const char *method, const char *path,
                                   const char *body, size_t body_len)
{
    assert_true(t->nst < MAXS);
    struct cstream *c = &t->st[t->nst++];
    nghttp2_nv nva[] = {NV(":method", method), NV(":scheme", "https"),
                        NV(":authority", "localhost"), NV(":path", path ? path : "")};
    c->send = (const uint8_t *)body;
    c->send_len = body_len;
    nghttp2_data_provider prov = {.source.ptr = c, .read_callback = c_read_body};
    c->id = nghttp2_submit_request(t->ng, NULL, nva, path ? 4 : 3, body ? &prov : NULL, NULL);
    assert_true(c->id > 0);
    return c;
}

static void run_client(struct t *t, void (*on_connected)(struct t *t), size_t want_closed)
{
    t->on_connected = on_connected;
    t->want_closed = want_closed;
    struct rt_connect_opts o = {.host = "localhost",
                                .port = rt_listener_port(t->l),
                                .tls = t->ctls,
                                .deadline_ms = uv_now(&t->loop) + 5000};
    assert_int_equal(rt_connect(&t->loop, &o, cli_connected, t), 0);
    uv_run(&t->loop, UV_RUN_DEFAULT);
}

/* ---- tests ---- */

static void send_get_post(struct t *t)
{
    cli_request(t, "GET", "/api/ens/alive", NULL, 0);
    cli_request(t, "POST", "/p?x=1", "hello", 5);
}

static void check_get_post(struct t *t)
{
    assert_int_equal(t->nclosed, 2);
    assert_int_equal(t->st[0].status, 200);
    assert_true(t->st[0].has_ctype && t->st[0].has_clen);
    assert_int_equal(t->st[0].blen, strlen("GET /api/ens/alive "));
    assert_memory_equal(t->st[0].body, "GET /api/ens/alive ", t->st[0].blen);
    assert_int_equal(t->st[1].status, 200);
    assert_int_equal(t->st[1].blen, strlen("POST /p?x=1 hello"));
    assert_memory_equal(t->st[1].body, "POST /p?x=1 hello", t->st[1].blen);
}

static void test_get_and_post(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, ANSWER_NOW);
    run_client(&t, send_get_post, 2);
    check_get_post(&t);
    t_finish(&t);
}

static void test_deferred_answer(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, ANSWER_LATER);
    run_client(&t, send_get_post, 2);
    check_get_post(&t);
    t_finish(&t);
}

static char g_big[4096];

static void send_big(struct t *t)
{
    memset(g_big, 'x', sizeof(g_big));
    cli_request(t, "POST", "/big", g_big, sizeof(g_big));
    cli_request(t, "GET", "/after", NULL, 0); /* the connection keeps working */
}

static void test_body_too_large(void **state)
{
    (void)state;
    struct t t;
    struct h1_server_opts o = {.max_body = 100};
    t_init(&t, &o, ANSWER_NOW);
    run_client(&t, send_big, 2);
    assert_int_equal(t.st[0].status, 413);
    assert_non_null(strstr(t.st[0].body, "\"error\":\"too_large\""));
    assert_int_equal(t.st[1].status, 200);
    t_finish(&t);
}

static void send_two_get(struct t *t)
{
    cli_request(t, "GET", "/one", NULL, 0);
    cli_request(t, "GET", "/two", NULL, 0);
}

static void answer_reversed(struct t *t)
{
    answer(t->held[1]);
    answer(t->held[0]);
    t->held[0] = t->held[1] = NULL;
    t->nheld = 0;
}

static void test_out_of_order(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, HOLD);
    t.want_held = 2;
    t.on_held = answer_reversed;
    run_client(&t, send_two_get, 2);
    assert_int_equal(t.st[0].status, 200);
    assert_int_equal(t.st[1].status, 200);
    assert_memory_equal(t.st[1].body, "GET /two ", 9);
    assert_int_equal(t.close_order[0], t.st[1].id); /* the second finished first */
    assert_int_equal(t.close_order[1], t.st[0].id);
    t_finish(&t);
}

static void send_one_get(struct t *t)
{
    cli_request(t, "GET", "/held", NULL, 0);
}

static void on_after_reset(uv_timer_t *tm)
{
    struct t *t = tm->data;
    /* The stream is gone: the answer is dropped and the request freed. */
    assert_int_equal(
        h1_req_respond(t->held[0], 200, "text/plain", (const uint8_t *)"x", 1, NULL, 0),
        ENS_ECLOSED);
    t->held[0] = NULL;
    t->nheld = 0;
    cli_close(t);
}

static void reset_it(struct t *t)
{
    assert_int_equal(
        nghttp2_submit_rst_stream(t->ng, NGHTTP2_FLAG_NONE, t->st[0].id, NGHTTP2_CANCEL), 0);
    cli_flush(t);
    uv_timer_start(&t->later, on_after_reset, 100, 0);
}

static void test_client_reset_orphans(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, HOLD);
    t.want_held = 1;
    t.on_held = reset_it;
    run_client(&t, send_one_get, 0);
    assert_int_equal(t.nheld, 0);
    t_finish(&t);
}

static void on_drained(struct h1_server *srv, void *ud)
{
    (void)srv;
    struct t *t = ud;
    t->drained = 1;
}

static void on_drain_answer(uv_timer_t *tm)
{
    struct t *t = tm->data;
    assert_int_equal(t->goaway, 1); /* GOAWAY came before the answer */
    assert_int_equal(t->drained, 0);
    answer(t->held[0]);
    t->held[0] = NULL;
    t->nheld = 0;
}

static void drain_now(struct t *t)
{
    stop_listening(t);
    h1_server_drain(t->srv, on_drained, t);
    uv_timer_start(&t->later, on_drain_answer, 100, 0);
}

static void test_drain_goaway(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, HOLD);
    t.want_held = 1;
    t.on_held = drain_now;
    run_client(&t, send_one_get, 1);
    assert_int_equal(t.goaway, 1);
    assert_int_equal(t.st[0].status, 200);
    assert_int_equal(t.eof, 1); /* the server closed after the last stream */
    assert_int_equal(t.drained, 1);
    assert_int_equal(h1_server_conn_count(t.srv), 0);
    t_finish(&t);
}

static void send_no_path(struct t *t)
{
    cli_request(t, "GET", NULL, NULL, 0);
    cli_request(t, "GET", "/ok", NULL, 0);
}

static void test_missing_path_reset(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, ANSWER_NOW);
    run_client(&t, send_no_path, 2);
    assert_int_equal(t.st[0].status, 0);
    assert_int_not_equal(t.st[0].err, 0); /* RST_STREAM(PROTOCOL_ERROR) */
    assert_int_equal(t.st[1].status, 200);
    t_finish(&t);
}

static void send_nothing(struct t *t)
{
    (void)t;
}

static void test_idle_timeout_goaway(void **state)
{
    (void)state;
    struct t t;
    struct h1_server_opts o = {.idle_timeout_ms = 50};
    t_init(&t, &o, ANSWER_NOW);
    run_client(&t, send_nothing, 0);
    assert_int_equal(t.goaway, 1);
    assert_int_equal(t.eof, 1);
    t_finish(&t);
}

static void on_h1(int err, const struct h1_response *r, void *ud)
{
    struct t *t = ud;
    t->h1_calls++;
    assert_int_equal(err, 0);
    t->h1_status = r->status;
    assert_true(r->body.len == strlen("GET /h1 ") && memcmp(r->body.p, "GET /h1 ", 8) == 0);
    stop_listening(t);
}

static void test_http1_same_listener(void **state)
{
    (void)state;
    struct t t;
    t_init(&t, NULL, ANSWER_NOW);
    char url[128];
    snprintf(url, sizeof(url), "https://localhost:%u/h1", rt_listener_port(t.l));
    struct h1_client_req r = {
        .method = "GET", .url = url, .deadline_ms = uv_now(&t.loop) + 5000, .tls = t.ctls1};
    assert_int_equal(h1_client_request(&t.loop, &r, on_h1, &t), 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.h1_calls, 1);
    assert_int_equal(t.h1_status, 200);
    t_finish(&t);
}

int main(void)
{
    const char *d = getenv("ENS_TEST_DATA");
    snprintf(g_pki, sizeof(g_pki), "%s/pki", d ? d : "tests/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_post),         cmocka_unit_test(test_deferred_answer),
        cmocka_unit_test(test_body_too_large),       cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_client_reset_orphans), cmocka_unit_test(test_drain_goaway),
        cmocka_unit_test(test_missing_path_reset),   cmocka_unit_test(test_http1_same_listener),
        cmocka_unit_test(test_idle_timeout_goaway),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
