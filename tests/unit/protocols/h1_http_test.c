/* HTTP/1.1 server and client over real loopback sockets (TCP and TLS). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/h1_client.h"
#include "protocols/h1_parser.h"
#include "protocols/h1_server.h"
#include "runtime/err.h"
#include "runtime/net.h"

#define SAFETY_MS 10000

enum mode { ANSWER_NOW, HOLD };

struct t {
    uv_loop_t loop;
    uv_timer_t safety;
    struct h1_server *srv;
    struct rt_listener *l;
    enum mode mode;
    struct h1_req *held[8];
    size_t nheld;
    size_t nreq;
    int accepts;
    /* client side */
    int cli_err;
    int cli_status;
    char cli_body[256];
    size_t cli_body_len;
    int cli_calls;
    /* raw client */
    struct rt_stream *raw;
    struct h1_parser *rp;
    struct h1_message *msgs[4];
    size_t nmsgs;
    size_t want_msgs;
    int raw_end;
    const char *raw_send;
    const char *after_continue; /* sent once a "100 Continue" has come */
    int drained;
};

static char g_pki[512];

static void on_safety(uv_timer_t *tm)
{
    fail_msg("test loop did not finish in time");
}

static void on_request(struct h1_req *req, void *ud)
{
    struct t *t = ud;
    t->nreq++;
    if (t->mode == HOLD) {
        assert_true(t->nheld < 8);
        t->held[t->nheld++] = req;
        return;
    }
    struct span target = h1_req_target(req);
    struct span body = h1_req_body(req);
    char out[512];
    int n = snprintf(out, sizeof(out), "%s %.*s %.*s", h1_req_method(req), (int)target.len,
                     (const char *)target.p, (int)body.len, (const char *)body.p);
    struct h1_header extra[] = {{"X-Test", "yes"}};
    assert_int_equal(
        h1_req_respond(req, 200, "text/plain", (const uint8_t *)out, (size_t)n, extra, 1), 0);
}

static void on_accept(struct rt_stream *s, void *ud)
{
    struct t *t = ud;
    t->accepts++;
    assert_int_equal(h1_server_add(t->srv, s), 0);
}

static void t_init(struct t *t, const struct h1_server_opts *o, struct rt_tls_ctx *tls)
{
    memset(t, 0, sizeof(*t));
    assert_int_equal(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->safety);
    uv_timer_start(&t->safety, on_safety, SAFETY_MS, 0);
    uv_unref((uv_handle_t *)&t->safety);
    t->srv = h1_server_new(&t->loop, o, on_request, t);
    assert_int_equal(rt_listen(&t->loop, "127.0.0.1:0", tls, 0, on_accept, t, &t->l), 0);
    t->cli_err = 1;
}

static void t_finish(struct t *t)
{
    if (t->l)
        rt_listener_close(t->l);
    h1_server_free(t->srv);
    for (size_t i = 0; i < t->nheld; i++)
        if (t->held[i])
            assert_int_equal(h1_req_respond(t->held[i], 200, NULL, NULL, 0, NULL, 0), ENS_ECLOSED);
    uv_close((uv_handle_t *)&t->safety, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    h1_parser_free(t->rp);
    for (size_t i = 0; i < t->nmsgs; i++)
        h1_message_free(t->msgs[i]);
}

static void stop_listening(struct t *t)
{
    if (t->l) {
        rt_listener_close(t->l);
        t->l = NULL;
    }
}

/* ---- h1_client against our server ---- */

static void on_client(int err, const struct h1_response *r, void *ud)
{
    struct t *t = ud;
    t->cli_calls++;
    t->cli_err = err;
    if (r) {
        t->cli_status = r->status;
        t->cli_body_len = r->body.len < sizeof(t->cli_body) ? r->body.len : sizeof(t->cli_body);
        memcpy(t->cli_body, r->body.p, t->cli_body_len);
        struct span x = h1_response_header(r, "x-test");
        if (x.p)
            assert_true(span_eq(x, "yes"));
    }
    stop_listening(t);
}

static void client_go(struct t *t, const char *scheme, const char *method, const char *body,
                      struct rt_tls_ctx *tls, uint64_t in_ms)
{
    char url[128];
    snprintf(url, sizeof(url), "%s://%s:%u/p/q?x=1", scheme, tls ? "localhost" : "127.0.0.1",
             rt_listener_port(t->l));
    struct h1_header h[] = {{"Accept", "*/*"}};
    struct h1_client_req r = {
        method, url, h, 1, (const uint8_t *)body, body ? strlen(body) : 0, uv_now(&t->loop) + in_ms,
        0,      tls, 0};
    assert_int_equal(h1_client_request(&t->loop, &r, on_client, t), 0);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(t->cli_calls, 1);
}

static void test_get_and_post(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    client_go(&t, "http", "POST", "payload", NULL, 5000);
    assert_int_equal(t.cli_err, 0);
    assert_int_equal(t.cli_status, 200);
    assert_int_equal(t.cli_body_len, strlen("POST /p/q?x=1 payload"));
    assert_memory_equal(t.cli_body, "POST /p/q?x=1 payload", t.cli_body_len);
    t_finish(&t);
}

static void test_https(void **state)
{
    char cert[600], key[600], ca[600];
    snprintf(cert, sizeof(cert), "%s/server.pem", g_pki);
    snprintf(key, sizeof(key), "%s/server.key", g_pki);
    snprintf(ca, sizeof(ca), "%s/ca.pem", g_pki);
    static const char *const alpn[] = {"http/1.1", NULL};
    struct rt_tls_server_opts so = {cert, key, alpn};
    struct rt_tls_client_opts co = {ca, NULL, NULL, alpn};
    char err[256];
    struct rt_tls_ctx *stls = rt_tls_ctx_server_new(&so, err, sizeof(err));
    struct rt_tls_ctx *ctls = rt_tls_ctx_client_new(&co, err, sizeof(err));
    assert_non_null(stls);
    assert_non_null(ctls);
    struct t t;
    t_init(&t, NULL, stls);
    client_go(&t, "https", "GET", NULL, ctls, 5000);
    assert_int_equal(t.cli_err, 0);
    assert_int_equal(t.cli_status, 200);
    assert_memory_equal(t.cli_body, "GET /p/q?x=1 ", t.cli_body_len);
    /* https without a TLS context is refused up front. */
    struct h1_client_req r = {"GET", "https://localhost/", NULL, 0, NULL, 0, 0, 0, NULL, 0};
    assert_int_equal(h1_client_request(&t.loop, &r, on_client, &t), ENS_EINVAL);
    t_finish(&t);
    rt_tls_ctx_free(stls);
    rt_tls_ctx_free(ctls);
}

static void test_body_too_large(void **state)
{
    struct h1_server_opts o = {.max_body = 10};
    struct t t;
    t_init(&t, &o, NULL);
    client_go(&t, "http", "POST", "this body is longer than ten bytes", NULL, 5000);
    assert_int_equal(t.cli_err, 0);
    assert_int_equal(t.cli_status, 413);
    assert_non_null(memmem(t.cli_body, t.cli_body_len, "\"error\":\"too_large\"", 19));
    assert_int_equal(t.nreq, 0); /* the handler never saw it */
    t_finish(&t);
}

static void test_client_deadline(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    t.mode = HOLD; /* the server never answers */
    uint64_t t0 = uv_now(&t.loop);
    client_go(&t, "http", "GET", NULL, NULL, 300);
    assert_int_equal(t.cli_err, ENS_ETIMEDOUT);
    assert_true(uv_now(&t.loop) - t0 >= 250);
    assert_int_equal(t.nheld, 1);
    /* t_finish frees the server first: the held request is orphaned and its
     * late answer reports ENS_ECLOSED. */
    t_finish(&t);
}

/* ---- raw client: exact bytes out, parsed answers in ---- */

static int raw_msg(struct h1_message *m, void *ud)
{
    struct t *t = ud;
    assert_true(t->nmsgs < 4);
    t->msgs[t->nmsgs++] = m;
    return 0;
}

static void raw_read(struct rt_stream *s, int status, const uint8_t *d, size_t n, void *ud)
{
    struct t *t = ud;
    if (status != 0) {
        t->raw_end = status;
        rt_stream_close(s, NULL, NULL);
        t->raw = NULL;
        stop_listening(t);
        return;
    }
    assert_true(h1_parser_feed(t->rp, d, n) >= 0);
    if (t->after_continue && t->nmsgs >= 1 && t->msgs[0]->status == 100) {
        assert_int_equal(
            rt_stream_write(s, (const uint8_t *)t->after_continue, strlen(t->after_continue)), 0);
        t->after_continue = NULL;
    }
    if (t->want_msgs && t->nmsgs >= t->want_msgs) {
        rt_stream_close(s, NULL, NULL);
        t->raw = NULL;
        stop_listening(t);
    }
}

static void raw_connected(struct rt_stream *s, int status, void *ud)
{
    struct t *t = ud;
    assert_int_equal(status, 0);
    t->raw = s;
    if (t->raw_send)
        assert_int_equal(rt_stream_write(s, (const uint8_t *)t->raw_send, strlen(t->raw_send)), 0);
    assert_int_equal(rt_stream_read_start(s, raw_read, t), 0);
}

static void raw_go(struct t *t, const char *send, size_t want_msgs)
{
    t->rp = h1_parser_new(H1_PARSE_RESPONSE, 4096, raw_msg, t);
    t->raw_send = send;
    t->want_msgs = want_msgs;
    struct rt_connect_opts o = {"127.0.0.1", rt_listener_port(t->l), NULL, uv_now(&t->loop) + 5000,
                                0};
    assert_int_equal(rt_connect(&t->loop, &o, raw_connected, t), 0);
}

/* Answer the held requests in reverse once both have arrived. */
static void on_check(uv_idle_t *h)
{
    struct t *t = h->data;
    if (t->nheld < 2)
        return;
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    assert_int_equal(
        h1_req_respond(t->held[1], 200, "text/plain", (const uint8_t *)"second", 6, NULL, 0), 0);
    assert_int_equal(
        h1_req_respond(t->held[0], 200, "text/plain", (const uint8_t *)"first", 5, NULL, 0), 0);
    t->held[0] = t->held[1] = NULL;
    t->nheld = 0;
    t->mode = ANSWER_NOW;
    /* Keep-alive: a third request on the same connection. */
    static const char third[] = "GET /third HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rt_stream_write(t->raw, (const uint8_t *)third, sizeof(third) - 1), 0);
}

static void test_pipelined_out_of_order_keepalive(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    t.mode = HOLD;
    uv_idle_t idle;
    uv_idle_init(&t.loop, &idle);
    idle.data = &t;
    uv_idle_start(&idle, on_check);
    raw_go(&t, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", 3);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.nmsgs, 3);
    assert_memory_equal(t.msgs[0]->body.data, "first", 5);
    assert_memory_equal(t.msgs[1]->body.data, "second", 6);
    assert_memory_equal(t.msgs[2]->body.data, "GET /third ", 11);
    assert_true(t.msgs[0]->keep_alive);
    assert_int_equal(t.accepts, 1); /* all three over one connection */
    t_finish(&t);
}

/* Exchange's callbacks come from .NET, which sends "Expect: 100-continue" and
 * waits for the interim answer before the body: the server sends it as soon
 * as the head is in, and the body's request is then answered as usual. */
static void test_expect_100_continue(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    t.after_continue = "hello";
    raw_go(&t,
           "POST /cb HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           "Expect: 100-Continue\r\n\r\n",
           2);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.nmsgs, 2);
    assert_int_equal(t.msgs[0]->status, 100);
    assert_int_equal(t.msgs[1]->status, 200);
    assert_memory_equal(t.msgs[1]->body.data, "POST /cb hello", 14);
    assert_non_null(h1_message_header(t.msgs[1], "date").p); /* every final answer has a Date */
    t_finish(&t);

    /* A body sent with the head needs no interim answer, and gets none. */
    t_init(&t, NULL, NULL);
    raw_go(&t,
           "POST /cb HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           "Expect: 100-continue\r\n\r\nhello",
           1);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.nmsgs, 1);
    assert_int_equal(t.msgs[0]->status, 200);
    t_finish(&t);
}

/* RFC 9112: exactly one Host in an HTTP/1.1 request (else 400 and close);
 * HTTP/1.0 needs none; an absolute-form target routes by its path. */
static void test_host_and_absolute_form(void **state)
{
    static const char *const bad[] = {
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    };
    for (size_t i = 0; i < 2; i++) {
        struct t t;
        t_init(&t, NULL, NULL);
        raw_go(&t, bad[i], 0);
        uv_run(&t.loop, UV_RUN_DEFAULT);
        assert_int_equal(t.nmsgs, 1);
        assert_int_equal(t.msgs[0]->status, 400);
        assert_int_equal(t.nreq, 0); /* never reached the handler */
        assert_int_equal(t.raw_end, ENS_ECLOSED);
        t_finish(&t);
    }
    struct t t;
    t_init(&t, NULL, NULL);
    raw_go(&t,
           "GET HTTP://ens.example.com/abs?q=1 HTTP/1.1\r\nHost: ens.example.com\r\n\r\n"
           "GET /ten HTTP/1.0\r\n\r\n",
           2);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    /* the second, closing one is answered too: pipelined answers are never lost */
    assert_int_equal(t.nmsgs, 2);
    assert_int_equal(t.msgs[0]->status, 200);
    assert_memory_equal(t.msgs[0]->body.data, "GET /abs?q=1 ", 13);
    assert_true(t.msgs[0]->keep_alive);
    assert_int_equal(t.msgs[1]->status, 200);
    assert_memory_equal(t.msgs[1]->body.data, "GET /ten ", 9);
    t_finish(&t);
}

static void test_garbage_gets_400_and_close(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    raw_go(&t, "HELLO THERE\r\n\r\n", 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.nmsgs, 1);
    assert_int_equal(t.msgs[0]->status, 400);
    assert_false(t.msgs[0]->keep_alive);
    assert_non_null(
        memmem(t.msgs[0]->body.data, t.msgs[0]->body.len, "\"error\":\"bad_request\"", 21));
    assert_int_equal(t.raw_end, ENS_ECLOSED);
    assert_int_equal(t.nreq, 0);
    t_finish(&t);
}

static void test_header_too_large_431(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    size_t n = 20000;
    char *req = malloc(n + 64);
    strcpy(req, "GET / HTTP/1.1\r\nX-Big: ");
    size_t off = strlen(req);
    memset(req + off, 'a', n);
    strcpy(req + off + n, "\r\n\r\n");
    raw_go(&t, req, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    free(req);
    assert_int_equal(t.nmsgs, 1);
    assert_int_equal(t.msgs[0]->status, 431);
    t_finish(&t);
}

static void test_idle_timeout_closes(void **state)
{
    struct h1_server_opts o = {.idle_timeout_ms = 200};
    struct t t;
    t_init(&t, &o, NULL);
    uint64_t t0 = uv_now(&t.loop);
    raw_go(&t, NULL, 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.raw_end, ENS_ECLOSED);
    assert_int_equal(t.nmsgs, 0);
    uint64_t el = uv_now(&t.loop) - t0;
    assert_true(el >= 150 && el < 3000);
    t_finish(&t);
}

static void test_read_timeout_closes(void **state)
{
    struct h1_server_opts o = {.read_timeout_ms = 200};
    struct t t;
    t_init(&t, &o, NULL);
    raw_go(&t, "GET / HTTP/1.1\r\nHost: x\r\n", 0); /* never finishes its head */
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.raw_end, ENS_ECLOSED);
    assert_int_equal(t.nreq, 0);
    t_finish(&t);
}

static void on_drained(struct h1_server *srv, void *ud)
{
    struct t *t = ud;
    t->drained++;
    stop_listening(t);
}

static void on_drain_check(uv_idle_t *h)
{
    struct t *t = h->data;
    if (t->nheld < 1)
        return;
    if (!t->drained && h1_server_conn_count(t->srv) == 1 && t->nmsgs == 0) {
        static int asked;
        if (!asked) {
            asked = 1;
            h1_server_drain(t->srv, on_drained, t);
            return;
        }
        /* Draining waits for the answer owed; give it now. */
        uv_idle_stop(h);
        uv_close((uv_handle_t *)h, NULL);
        assert_int_equal(t->drained, 0);
        assert_int_equal(h1_req_respond_error(t->held[0], 503, "unavailable", "bye \"now\""), 0);
        t->held[0] = NULL;
        t->nheld = 0;
    }
}

static void test_drain_finishes_inflight(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    t.mode = HOLD;
    uv_idle_t idle;
    uv_idle_init(&t.loop, &idle);
    idle.data = &t;
    uv_idle_start(&idle, on_drain_check);
    raw_go(&t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.drained, 1);
    assert_int_equal(h1_server_conn_count(t.srv), 0);
    assert_int_equal(t.nmsgs, 1);
    assert_int_equal(t.msgs[0]->status, 503);
    assert_false(t.msgs[0]->keep_alive); /* draining answers with Connection: close */
    assert_non_null(memmem(t.msgs[0]->body.data, t.msgs[0]->body.len,
                           "{\"error\":\"unavailable\",\"message\":\"bye \\\"now\\\"\"}", 45));
    t_finish(&t);
}

static void test_client_connect_refused(void **state)
{
    struct t t;
    t_init(&t, NULL, NULL);
    uint16_t port = rt_listener_port(t.l);
    stop_listening(&t);
    uv_run(&t.loop, UV_RUN_NOWAIT);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", port);
    struct h1_client_req r = {"GET", url, NULL, 0, NULL, 0, uv_now(&t.loop) + 2000, 0, NULL, 0};
    assert_int_equal(h1_client_request(&t.loop, &r, on_client, &t), 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.cli_calls, 1);
    assert_int_equal(t.cli_err, ENS_ECONNECT);
    struct h1_client_req bad = {"G ET", url, NULL, 0, NULL, 0, 0, 0, NULL, 0};
    assert_int_equal(h1_client_request(&t.loop, &bad, on_client, &t), ENS_EINVAL);
    struct h1_header evil[] = {{"X", "a\r\nInjected: 1"}};
    struct h1_client_req inj = {"GET", url, evil, 1, NULL, 0, 0, 0, NULL, 0};
    assert_int_equal(h1_client_request(&t.loop, &inj, on_client, &t), ENS_EINVAL);
    assert_int_equal(t.cli_calls, 1);
    t_finish(&t);
}

int main(void)
{
    const char *d = getenv("ENS_TEST_DATA");
    snprintf(g_pki, sizeof(g_pki), "%s/pki", d ? d : "tests/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_post),
        cmocka_unit_test(test_https),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_client_deadline),
        cmocka_unit_test(test_pipelined_out_of_order_keepalive),
        cmocka_unit_test(test_expect_100_continue),
        cmocka_unit_test(test_host_and_absolute_form),
        cmocka_unit_test(test_garbage_gets_400_and_close),
        cmocka_unit_test(test_header_too_large_431),
        cmocka_unit_test(test_idle_timeout_closes),
        cmocka_unit_test(test_read_timeout_closes),
        cmocka_unit_test(test_drain_finishes_inflight),
        cmocka_unit_test(test_client_connect_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
