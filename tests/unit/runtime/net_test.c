/* Tests for runtime/net.c, stream_tcp.c and stream_tls.c over real loopback
 * sockets and the test PKI in tests/data/pki. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/err.h"
#include "runtime/net.h"
#include "runtime/net_int.h"

#define SAFETY_MS 10000

static char g_pki[512];

static const char *pki(const char *name)
{
    static char path[4][600];
    static int i;
    i = (i + 1) % 4;
    snprintf(path[i], sizeof(path[i]), "%s/%s", g_pki, name);
    return path[i];
}

struct ctx {
    uv_loop_t loop;
    uv_timer_t safety;
    struct rt_listener *l;
    struct rt_tls_ctx *srv_tls;
    struct rt_tls_ctx *cli_tls;
    int status;
    int connect_calls;
    char alpn[16];
    char got[64];
    size_t got_len;
    size_t expect;
    struct rt_stream *cli;
    int server_mode_silent; /* accept and never answer */
    struct rt_stream *silent;
};

static void on_safety(uv_timer_t *t)
{
    fail_msg("test loop did not finish in time");
}

static void ctx_init(struct ctx *c)
{
    memset(c, 0, sizeof(*c));
    assert_int_equal(uv_loop_init(&c->loop), 0);
    uv_timer_init(&c->loop, &c->safety);
    uv_timer_start(&c->safety, on_safety, SAFETY_MS, 0);
    uv_unref((uv_handle_t *)&c->safety);
    c->status = 1;
}

static void ctx_finish(struct ctx *c)
{
    uv_close((uv_handle_t *)&c->safety, NULL);
    if (c->silent)
        rt_stream_close(c->silent, NULL, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    rt_tls_ctx_free(c->srv_tls);
    rt_tls_ctx_free(c->cli_tls);
}

static struct rt_tls_ctx *server_ctx(void)
{
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    struct rt_tls_server_opts o = {pki("server.pem"), pki("server.key"), alpn};
    char err[256];
    struct rt_tls_ctx *t = rt_tls_ctx_server_new(&o, err, sizeof(err));
    if (!t)
        fail_msg("server ctx: %s", err);
    return t;
}

static struct rt_tls_ctx *client_ctx(const char *ca)
{
    static const char *const alpn[] = {"http/1.1", "h2", NULL};
    struct rt_tls_client_opts o = {ca, NULL, NULL, alpn};
    char err[256];
    struct rt_tls_ctx *t = rt_tls_ctx_client_new(&o, err, sizeof(err));
    if (!t)
        fail_msg("client ctx: %s", err);
    return t;
}

/* Echo server: writes back whatever it reads and closes on end of stream,
 * from inside its own read callback. */
static void srv_read(struct rt_stream *s, int status, const uint8_t *d, size_t n, void *ud)
{
    if (status != 0) {
        rt_stream_close(s, NULL, NULL);
        return;
    }
    assert_int_equal(rt_stream_write(s, d, n), 0);
}

static void on_accept(struct rt_stream *s, void *ud)
{
    struct ctx *c = ud;
    if (c->server_mode_silent) {
        if (c->silent)
            rt_stream_close(c->silent, NULL, NULL);
        c->silent = s; /* never reads: a TLS handshake can never finish */
        return;
    }
    assert_int_equal(rt_stream_read_start(s, srv_read, c), 0);
}

static void cli_read(struct rt_stream *s, int status, const uint8_t *d, size_t n, void *ud)
{
    struct ctx *c = ud;
    if (status != 0) {
        c->status = status;
        rt_stream_close(s, NULL, NULL);
        rt_listener_close(c->l);
        return;
    }
    assert_true(c->got_len + n <= sizeof(c->got));
    memcpy(c->got + c->got_len, d, n);
    c->got_len += n;
    if (c->got_len >= c->expect) {
        c->status = 0;
        rt_stream_close(s, NULL, NULL); /* close from inside the read callback */
        rt_listener_close(c->l);
    }
}

static void on_connect_echo(struct rt_stream *s, int status, void *ud)
{
    struct ctx *c = ud;
    c->connect_calls++;
    if (status != 0) {
        c->status = status;
        rt_listener_close(c->l);
        return;
    }
    const char *a = rt_stream_alpn(s);
    snprintf(c->alpn, sizeof(c->alpn), "%s", a ? a : "");
    static const char msg[] = "hello, stream";
    c->expect = sizeof(msg) - 1;
    assert_int_equal(rt_stream_write(s, (const uint8_t *)msg, c->expect), 0);
    assert_int_equal(rt_stream_read_start(s, cli_read, c), 0);
}

static void on_connect_status(struct rt_stream *s, int status, void *ud)
{
    struct ctx *c = ud;
    c->connect_calls++;
    c->status = status;
    if (s)
        rt_stream_close(s, NULL, NULL);
    if (c->l)
        rt_listener_close(c->l);
}

static void run_connect(struct ctx *c, const char *host, struct rt_tls_ctx *cli, uint64_t in_ms,
                        rt_connect_cb cb)
{
    struct rt_connect_opts o = {host, rt_listener_port(c->l), cli, uv_now(&c->loop) + in_ms, 0};
    assert_int_equal(rt_connect(&c->loop, &o, cb, c), 0);
    uv_run(&c->loop, UV_RUN_DEFAULT);
}

static void test_tls_echo_alpn(void **state)
{
    struct ctx c;
    ctx_init(&c);
    c.srv_tls = server_ctx();
    c.cli_tls = client_ctx(pki("ca.pem"));
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", c.srv_tls, 0, on_accept, &c, &c.l), 0);
    assert_true(rt_listener_port(c.l) > 0);
    run_connect(&c, "localhost", c.cli_tls, 5000, on_connect_echo);
    assert_int_equal(c.connect_calls, 1);
    assert_int_equal(c.status, 0);
    assert_string_equal(c.alpn, "h2"); /* server preference wins */
    assert_int_equal(c.got_len, c.expect);
    assert_memory_equal(c.got, "hello, stream", c.expect);
    ctx_finish(&c);
}

static void test_tls_ip_literal_verifies(void **state)
{
    struct ctx c;
    ctx_init(&c);
    c.srv_tls = server_ctx();
    c.cli_tls = client_ctx(pki("ca.pem"));
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", c.srv_tls, 0, on_accept, &c, &c.l), 0);
    run_connect(&c, "127.0.0.1", c.cli_tls, 5000, on_connect_echo);
    assert_int_equal(c.status, 0);
    assert_int_equal(c.got_len, c.expect);
    ctx_finish(&c);
}

/* Name mismatch: TCP to 127.0.0.1, then TLS expecting another host name. */
static void on_hs_status(struct rt_stream *s, int status, void *ud)
{
    struct ctx *c = ud;
    c->status = status;
    rt_stream_close(s, NULL, NULL);
    rt_listener_close(c->l);
}

static void on_tcp_then_tls(struct rt_stream *s, int status, void *ud)
{
    struct ctx *c = ud;
    assert_int_equal(status, 0);
    struct rt_stream *t = rt__tls_stream_new(s, c->cli_tls, "not-this-host.example");
    assert_non_null(t);
    assert_int_equal(rt__tls_stream_handshake(t, on_hs_status, c), 0);
}

static void test_tls_name_mismatch(void **state)
{
    struct ctx c;
    ctx_init(&c);
    c.srv_tls = server_ctx();
    c.cli_tls = client_ctx(pki("ca.pem"));
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", c.srv_tls, 0, on_accept, &c, &c.l), 0);
    run_connect(&c, "127.0.0.1", NULL, 5000, on_tcp_then_tls);
    assert_int_equal(c.status, ENS_ETLS);
    ctx_finish(&c);
}

static void test_tls_untrusted_ca(void **state)
{
    struct ctx c;
    ctx_init(&c);
    c.srv_tls = server_ctx();
    c.cli_tls = client_ctx(NULL); /* system store: does not know the test CA */
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", c.srv_tls, 0, on_accept, &c, &c.l), 0);
    run_connect(&c, "localhost", c.cli_tls, 5000, on_connect_status);
    assert_int_equal(c.connect_calls, 1);
    assert_int_equal(c.status, ENS_ETLS);
    ctx_finish(&c);
}

static void test_connect_closed_port(void **state)
{
    struct ctx c;
    ctx_init(&c);
    struct rt_listener *l;
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", NULL, 0, on_accept, &c, &l), 0);
    uint16_t port = rt_listener_port(l);
    rt_listener_close(l);
    uv_run(&c.loop, UV_RUN_NOWAIT);
    struct rt_connect_opts o = {"127.0.0.1", port, NULL, uv_now(&c.loop) + 5000, 0};
    assert_int_equal(rt_connect(&c.loop, &o, on_connect_status, &c), 0);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    assert_int_equal(c.connect_calls, 1);
    assert_int_equal(c.status, ENS_ECONNECT);
    ctx_finish(&c);
}

/* deny_private refuses a listening loopback port, whether it is named by a
 * literal or by a name that resolves to it. */
static void test_connect_deny_private(void **state)
{
    const char *hosts[] = {"127.0.0.1", "localhost"};
    for (size_t i = 0; i < 2; i++) {
        struct ctx c;
        ctx_init(&c);
        assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", NULL, 0, on_accept, &c, &c.l), 0);
        struct rt_connect_opts o = {hosts[i], rt_listener_port(c.l), NULL, uv_now(&c.loop) + 5000,
                                    1};
        assert_int_equal(rt_connect(&c.loop, &o, on_connect_status, &c), 0);
        while (c.connect_calls == 0)
            uv_run(&c.loop, UV_RUN_ONCE);
        assert_int_equal(c.status, ENS_ECONNECT); /* on_connect_status closed the listener */
        ctx_finish(&c);
    }
}

static void test_private_literals(void **state)
{
    static const struct {
        const char *host;
        int private;
    } kCases[] = {
        {"127.0.0.1", 1},   {"10.1.2.3", 1},
        {"172.16.0.1", 1},  {"172.32.0.1", 0},
        {"192.168.1.1", 1}, {"169.254.169.254", 1},
        {"100.64.0.1", 1},  {"0.0.0.0", 1},
        {"8.8.8.8", 0},     {"::1", 1},
        {"::", 1},          {"fd00::1", 1},
        {"fe80::1", 1},     {"::ffff:127.0.0.1", 1},
        {"2001:db8::1", 0}, {"localhost", 1},
        {"a.localhost", 1}, {"mail.contoso.com", 0},
    };
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        if (rt_host_is_private_literal(kCases[i].host) != kCases[i].private)
            fail_msg("%s: expected private=%d", kCases[i].host, kCases[i].private);
    }
}

static void test_connect_deadline(void **state)
{
    struct ctx c;
    ctx_init(&c);
    c.cli_tls = client_ctx(pki("ca.pem"));
    c.server_mode_silent = 1;
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", NULL, 0, on_accept, &c, &c.l), 0);
    uint64_t t0 = uv_now(&c.loop);
    run_connect(&c, "127.0.0.1", c.cli_tls, 300, on_connect_status);
    assert_int_equal(c.connect_calls, 1);
    assert_int_equal(c.status, ENS_ETIMEDOUT);
    uv_update_time(&c.loop);
    assert_true(uv_now(&c.loop) - t0 >= 250);
    assert_true(uv_now(&c.loop) - t0 < 3000);
    ctx_finish(&c);
}

static void test_connect_bad_args(void **state)
{
    struct ctx c;
    ctx_init(&c);
    struct rt_connect_opts o = {NULL, 80, NULL, 0, 0};
    assert_int_equal(rt_connect(&c.loop, &o, on_connect_status, &c), ENS_EINVAL);
    assert_int_equal(c.connect_calls, 0);
    ctx_finish(&c);
}

static void test_tcp_echo(void **state)
{
    struct ctx c;
    ctx_init(&c);
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", NULL, 0, on_accept, &c, &c.l), 0);
    run_connect(&c, "127.0.0.1", NULL, 5000, on_connect_echo);
    assert_int_equal(c.status, 0);
    assert_string_equal(c.alpn, "");
    assert_memory_equal(c.got, "hello, stream", c.expect);
    ctx_finish(&c);
}

static void test_reuseport(void **state)
{
    struct ctx c;
    ctx_init(&c);
    struct rt_listener *a, *b, *x = NULL;
    char hp[64];
    assert_int_equal(rt_listen(&c.loop, "127.0.0.1:0", NULL, 1, on_accept, &c, &a), 0);
    snprintf(hp, sizeof(hp), "127.0.0.1:%u", rt_listener_port(a));
    assert_int_equal(rt_listen(&c.loop, hp, NULL, 1, on_accept, &c, &b), 0);
    assert_int_equal(rt_listener_port(a), rt_listener_port(b));
    /* Without the option the port is taken. */
    assert_int_not_equal(rt_listen(&c.loop, hp, NULL, 0, on_accept, &c, &x), 0);
    rt_listener_close(a);
    rt_listener_close(b);
    ctx_finish(&c);
}

static void test_url_parse(void **state)
{
    struct rt_url u;
    assert_int_equal(rt_url_parse("https://ex.com/a/b?c=d", &u), 0);
    assert_string_equal(u.scheme, "https");
    assert_string_equal(u.host, "ex.com");
    assert_int_equal(u.port, 443);
    assert_string_equal(u.path, "/a/b?c=d");
    assert_int_equal(rt_url_parse("http://[::1]:8080", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 8080);
    assert_string_equal(u.path, "/");
    assert_int_equal(rt_url_parse("http://h?x", &u), 0);
    assert_string_equal(u.path, "/?x");
    assert_int_equal(u.port, 80);
    assert_int_equal(rt_url_parse("ftp://h/", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://u:p@h/", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://h/#frag", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://h:0/", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://h:65536/", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://:80/", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://h:8a/", &u), ENS_EPARSE);
    assert_int_equal(rt_url_parse("http://h/a b", &u), ENS_EPARSE);
}

static void test_hostport_split(void **state)
{
    char h[64];
    uint16_t p;
    assert_int_equal(rt_hostport_split("0.0.0.0:8443", h, sizeof(h), &p), 0);
    assert_string_equal(h, "0.0.0.0");
    assert_int_equal(p, 8443);
    assert_int_equal(rt_hostport_split("[::1]:9090", h, sizeof(h), &p), 0);
    assert_string_equal(h, "::1");
    assert_int_equal(p, 9090);
    assert_int_equal(rt_hostport_split("::1:9090", h, sizeof(h), &p), ENS_EPARSE);
    assert_int_equal(rt_hostport_split("host", h, sizeof(h), &p), ENS_EPARSE);
    assert_int_equal(rt_hostport_split("host:", h, sizeof(h), &p), ENS_EPARSE);
    assert_int_equal(rt_hostport_split("averyveryverylonghostname:1", h, 8, &p), ENS_EPARSE);
}

int main(void)
{
    const char *d = getenv("ENS_TEST_DATA");
    snprintf(g_pki, sizeof(g_pki), "%s/pki", d ? d : "tests/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_echo_alpn),       cmocka_unit_test(test_tls_ip_literal_verifies),
        cmocka_unit_test(test_tls_name_mismatch),   cmocka_unit_test(test_tls_untrusted_ca),
        cmocka_unit_test(test_connect_closed_port), cmocka_unit_test(test_connect_deadline),
        cmocka_unit_test(test_connect_bad_args),    cmocka_unit_test(test_tcp_echo),
        cmocka_unit_test(test_reuseport),           cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_hostport_split),      cmocka_unit_test(test_connect_deny_private),
        cmocka_unit_test(test_private_literals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
