/* Tests for protocols/h1_parser.c: byte arrays in, messages out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/h1_parser.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/err.h"

#define MAX_MSGS 8

struct got {
    struct h1_message *m[MAX_MSGS];
    size_t n;
    int pause_each;
};

static int on_msg(struct h1_message *m, void *ud)
{
    struct got *g = ud;
    assert_true(g->n < MAX_MSGS);
    g->m[g->n++] = m;
    return g->pause_each ? H1_PARSER_PAUSE : 0;
}

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n; i++)
        h1_message_free(g->m[i]);
    g->n = 0;
}

static ssize_t feed_str(struct h1_parser *p, const char *s)
{
    return h1_parser_feed(p, (const uint8_t *)s, strlen(s));
}

static const char kTwo[] = "POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                           "X-Empty:\r\n\r\nhello"
                           "GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";

static void check_two(struct got *g)
{
    assert_int_equal(g->n, 2);
    struct h1_message *a = g->m[0], *b = g->m[1];
    assert_string_equal(a->method, "POST");
    assert_int_equal(a->target_len, 6);
    assert_memory_equal(a->target, "/a?x=1", 6);
    assert_int_equal(a->body.len, 5);
    assert_memory_equal(a->body.data, "hello", 5);
    assert_true(a->keep_alive);
    struct span h = h1_message_header(a, "content-LENGTH");
    assert_true(span_eq(h, "5"));
    struct span e = h1_message_header(a, "x-empty");
    assert_non_null(e.p);
    assert_int_equal(e.len, 0);
    assert_null(h1_message_header(a, "absent").p);
    assert_string_equal(b->method, "GET");
    assert_false(b->keep_alive);
    assert_int_equal(b->body.len, 0);
}

static void test_pipelined_one_buffer(void **state)
{
    struct got g = {0};
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 1024, on_msg, &g);
    assert_int_equal(feed_str(p, kTwo), (ssize_t)strlen(kTwo));
    check_two(&g);
    /* Anything after "Connection: close" is refused. */
    assert_true(feed_str(p, "GET / HTTP/1.1\r\n\r\n") < 0);
    got_free(&g);
    h1_parser_free(p);
}

static void test_byte_by_byte(void **state)
{
    struct got g = {0};
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 1024, on_msg, &g);
    for (size_t i = 0; i < strlen(kTwo); i++)
        assert_int_equal(h1_parser_feed(p, (const uint8_t *)kTwo + i, 1), 1);
    check_two(&g);
    got_free(&g);
    h1_parser_free(p);
}

static void test_pause_between_messages(void **state)
{
    struct got g = {.pause_each = 1};
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 1024, on_msg, &g);
    size_t len = strlen(kTwo);
    ssize_t n = feed_str(p, kTwo);
    assert_true(n > 0 && (size_t)n < len);
    assert_int_equal(g.n, 1);
    assert_false(h1_parser_in_message(p));
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)kTwo + n, len - (size_t)n),
                     (ssize_t)(len - (size_t)n));
    check_two(&g);
    got_free(&g);
    h1_parser_free(p);
}

static void test_header_limit(void **state)
{
    struct got g = {0};
    /* Just under the limit parses; just over is a 431, even fed in pieces and
     * before the head is complete. */
    char *big = ens_malloc(H1_MAX_HEADER_BYTES + 100);
    const char *start = "GET / HTTP/1.1\r\nX-Big: ";
    size_t fill = H1_MAX_HEADER_BYTES - strlen(start) - 4 - 20;
    memcpy(big, start, strlen(start));
    memset(big + strlen(start), 'a', fill);
    memcpy(big + strlen(start) + fill, "\r\n\r\n", 5);
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 1024, on_msg, &g);
    assert_int_equal(feed_str(p, big), (ssize_t)strlen(big));
    assert_int_equal(g.n, 1);
    h1_parser_free(p);
    got_free(&g);

    memset(big + strlen(start), 'a', fill + 60);
    big[strlen(start) + fill + 60] = '\0'; /* no end of head yet */
    p = h1_parser_new(H1_PARSE_REQUEST, 1024, on_msg, &g);
    size_t half = strlen(big) / 2;
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)big, half), (ssize_t)half);
    assert_int_equal(feed_str(p, big + half), ENS_ETOOBIG);
    assert_int_equal(h1_parser_error(p), H1_ERR_HEADERS_TOO_BIG);
    assert_int_equal(h1_parser_error_status(p), 431);
    assert_int_equal(feed_str(p, "x"), ENS_ETOOBIG); /* sticky */
    assert_int_equal(g.n, 0);
    h1_parser_free(p);
    ens_free(big);
}

static void test_header_count(void **state)
{
    struct got g = {0};
    char buf[4096];
    size_t off = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= H1_MAX_HEADERS; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "X-%d: v\r\n", i);
    snprintf(buf + off, sizeof(buf) - off, "\r\n");
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 1024, on_msg, &g);
    assert_int_equal(feed_str(p, buf), ENS_ETOOBIG);
    assert_int_equal(h1_parser_error(p), H1_ERR_TOO_MANY_HEADERS);
    assert_int_equal(h1_parser_error_status(p), 431);
    h1_parser_free(p);
}

static void test_body_limit(void **state)
{
    struct got g = {0};
    /* Declared too large: refused at the end of the head, before any body. */
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 10, on_msg, &g);
    assert_int_equal(feed_str(p, "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"), ENS_ETOOBIG);
    assert_int_equal(h1_parser_error(p), H1_ERR_BODY_TOO_BIG);
    assert_int_equal(h1_parser_error_status(p), 413);
    h1_parser_free(p);
    /* Exactly the cap is fine. */
    p = h1_parser_new(H1_PARSE_REQUEST, 10, on_msg, &g);
    assert_true(feed_str(p, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789") > 0);
    assert_int_equal(g.n, 1);
    got_free(&g);
    h1_parser_free(p);
    /* Chunked bodies are capped as they arrive. */
    p = h1_parser_new(H1_PARSE_REQUEST, 10, on_msg, &g);
    assert_int_equal(feed_str(p, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n"),
                     ENS_ETOOBIG);
    assert_int_equal(h1_parser_error_status(p), 413);
    assert_int_equal(g.n, 0);
    h1_parser_free(p);
}

static void test_chunked(void **state)
{
    struct got g = {0};
    struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 100, on_msg, &g);
    const char *req = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
    for (size_t i = 0; i < strlen(req); i++)
        assert_int_equal(h1_parser_feed(p, (const uint8_t *)req + i, 1), 1);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.m[0]->body.len, 12);
    assert_memory_equal(g.m[0]->body.data, "hello, world", 12);
    got_free(&g);
    h1_parser_free(p);
}

static void test_garbage(void **state)
{
    static const char *const bad[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET / HTTP/9.9\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct got g = {0};
        struct h1_parser *p = h1_parser_new(H1_PARSE_REQUEST, 100, on_msg, &g);
        assert_int_equal(feed_str(p, bad[i]), ENS_EPARSE);
        assert_int_equal(h1_parser_error_status(p), 400);
        assert_int_equal(g.n, 0);
        h1_parser_free(p);
    }
}

static void test_response_mode(void **state)
{
    struct got g = {0};
    struct h1_parser *p = h1_parser_new(H1_PARSE_RESPONSE, 100, on_msg, &g);
    assert_true(feed_str(p, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"
                            "HTTP/1.1 204 No Content\r\n\r\n") > 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.m[0]->status, 201);
    assert_memory_equal(g.m[0]->body.data, "ok", 2);
    assert_true(span_eq(h1_message_header(g.m[0], "x-a"), "b"));
    assert_int_equal(g.m[1]->status, 204);
    got_free(&g);
    /* A body delimited by the end of the connection completes on finish. */
    assert_true(feed_str(p, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof") > 0);
    assert_int_equal(g.n, 0);
    assert_int_equal(h1_parser_finish(p), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.m[0]->body.len, 9);
    got_free(&g);
    h1_parser_free(p);
    /* Truncated mid-body. */
    p = h1_parser_new(H1_PARSE_RESPONSE, 100, on_msg, &g);
    assert_true(feed_str(p, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab") > 0);
    assert_true(h1_parser_finish(p) < 0);
    assert_int_equal(g.n, 0);
    h1_parser_free(p);
    /* HEAD answers carry no body whatever Content-Length says. */
    p = h1_parser_new(H1_PARSE_RESPONSE, 100, on_msg, &g);
    h1_parser_expect_no_body(p, 1);
    assert_true(feed_str(p, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n") > 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.m[0]->body.len, 0);
    got_free(&g);
    h1_parser_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_one_buffer),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_pause_between_messages),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_header_count),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_response_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
