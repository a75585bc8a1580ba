/* Tests for protocols/h2_client.c against an in-memory nghttp2 server session. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "protocols/h2_client.h"
#include "protocols/h2_client_int.h"
#include "protocols/limits.h"
#include "runtime/err.h"

#define MAX_SEEN 64

struct server {
    nghttp2_session *ng;
    int32_t ready[MAX_SEEN]; /* request streams complete, unanswered */
    int nready;
    int open, max_open;
    int rst_cancel;
    int path_no_index; /* :path arrived as never-indexed */
};

struct fixture {
    uv_loop_t loop;
    struct h2_client *c;
    struct rt_buf sink; /* client -> server bytes */
    struct server srv;
    int results[MAX_SEEN];
    int statuses[MAX_SEEN];
    size_t body_len[MAX_SEEN];
    int ncb;
};

static int srv_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    struct server *s = ud;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0 && (flags & NGHTTP2_NV_FLAG_NO_INDEX))
        s->path_no_index = 1;
    return 0;
}

static int srv_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct server *s = ud;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        s->open++;
        if (s->open > s->max_open)
            s->max_open = s->open;
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->nready < MAX_SEEN)
        s->ready[s->nready++] = f->hd.stream_id;
    if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code == NGHTTP2_CANCEL)
        s->rst_cancel++;
    return 0;
}

static int srv_on_close(nghttp2_session *ng, int32_t sid, uint32_t ec, void *ud)
{
    struct server *s = ud;
    s->open--;
    return 0;
}

static void server_init(struct server *s, uint32_t max_streams)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, srv_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, srv_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, srv_on_close);
    nghttp2_session_server_new(&s->ng, cb, s);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams}};
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, 1);
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(struct fixture *fx)
{
    for (int i = 0; i < 100; i++) {
        h2__client_kick(fx->c);
        int moved = 0;
        if (fx->sink.len) {
            assert_true(nghttp2_session_mem_recv(fx->srv.ng, fx->sink.data, fx->sink.len) >= 0);
            rt_buf_reset(&fx->sink);
            moved = 1;
        }
        const uint8_t *out;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(fx->srv.ng, &out)) > 0) {
            h2__client_feed(fx->c, out, (size_t)n);
            moved = 1;
        }
        if (!moved)
            return;
    }
}

static int setup_n(void **state, uint32_t max_streams)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    uv_loop_init(&fx->loop);
    rt_buf_init(&fx->sink, 1 << 20);
    fx->c = h2_client_new(&fx->loop, "127.0.0.1", 1, NULL);
    server_init(&fx->srv, max_streams);
    assert_int_equal(h2__client_attach(fx->c, h2__memstream_new(&fx->loop, &fx->sink)), 0);
    pump(fx);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_n(state, 2);
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    h2_client_free(fx->c);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    nghttp2_session_del(fx->srv.ng);
    rt_buf_cleanup(&fx->sink);
    free(fx);
    return 0;
}

static void on_resp(int err, const struct h2_response *r, void *ud)
{
    struct fixture *fx = ud;
    if (fx->ncb >= MAX_SEEN) {
        fx->ncb++;
        return;
    }
    fx->results[fx->ncb] = err;
    fx->statuses[fx->ncb] = r ? r->status : 0;
    fx->body_len[fx->ncb] = r ? r->body.len : 0;
    fx->ncb++;
}

static int request(struct fixture *fx, uint64_t deadline)
{
    struct h2_header h[] = {{"apns-topic", "t", 0}, {"authorization", "bearer x", 1}};
    static const uint8_t body[] = "{\"aps\":{}}";
    return h2_client_request(fx->c, "POST", "/3/device/ab", h, 2, body, sizeof(body) - 1, deadline,
                             on_resp, fx);
}

static ssize_t body_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    size_t *left = src->ptr;
    size_t n = *left < len ? *left : len;
    memset(buf, 'x', n);
    *left -= n;
    if (*left == 0)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void answer(struct fixture *fx, int32_t sid, const char *status, size_t body_len)
{
    /* One counter per response; a test answers at most MAX_SEEN. */
    static size_t left[MAX_SEEN];
    static int next;
    size_t *l = &left[next++ % MAX_SEEN];
    *l = body_len;
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)status, 7, 3, 0}};
    nghttp2_data_provider prd = {.source = {.ptr = l}, .read_callback = body_read};
    assert_int_equal(nghttp2_submit_response(fx->srv.ng, sid, nv, 1, body_len ? &prd : NULL), 0);
}

static void answer_all(struct fixture *fx, const char *status, size_t body_len)
{
    int n = fx->srv.nready;
    for (int i = 0; i < n; i++)
        answer(fx, fx->srv.ready[i], status, body_len);
    fx->srv.nready = 0;
    pump(fx);
}

static void test_streams_capped_by_peer_settings(void **state)
{
    struct fixture *fx = *state;
    uint64_t dl = uv_now(&fx->loop) + 10000;
    for (int i = 0; i < 5; i++)
        assert_int_equal(request(fx, dl), 0);
    assert_int_equal(fx->ncb, 0); /* never before the call returns */
    pump(fx);
    assert_int_equal(fx->srv.open, 2);
    assert_true(fx->srv.path_no_index);
    for (int round = 0; round < 3 && fx->ncb < 5; round++)
        answer_all(fx, "200", 0);
    assert_int_equal(fx->ncb, 5);
    assert_int_equal(fx->srv.max_open, 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fx->results[i], 0);
        assert_int_equal(fx->statuses[i], 200);
    }
}

static void test_deadline_resets_stream(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(request(fx, uv_now(&fx->loop) + 30), 0);
    pump(fx);
    assert_int_equal(fx->srv.nready, 1);
    uv_run(&fx->loop, UV_RUN_DEFAULT); /* the deadline timer fires */
    assert_int_equal(fx->ncb, 1);
    assert_int_equal(fx->results[0], ENS_ETIMEDOUT);
    pump(fx);
    assert_int_equal(fx->srv.rst_cancel, 1);
}

static void test_refused_stream_is_retried(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(request(fx, uv_now(&fx->loop) + 10000), 0);
    pump(fx);
    assert_int_equal(fx->srv.nready, 1);
    nghttp2_submit_rst_stream(fx->srv.ng, NGHTTP2_FLAG_NONE, fx->srv.ready[0],
                              NGHTTP2_REFUSED_STREAM);
    fx->srv.nready = 0;
    pump(fx);
    assert_int_equal(fx->ncb, 0);
    assert_int_equal(fx->srv.nready, 1); /* sent again */
    answer_all(fx, "200", 10);
    assert_int_equal(fx->ncb, 1);
    assert_int_equal(fx->results[0], 0);
    assert_int_equal(fx->body_len[0], 10);
    struct h2_client_stats st;
    h2_client_get_stats(fx->c, &st);
    assert_int_equal(st.retried, 1);
}

static void test_body_is_capped(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(request(fx, uv_now(&fx->loop) + 10000), 0);
    pump(fx);
    answer_all(fx, "200", H2_MAX_RESPONSE_BODY + 1);
    pump(fx);
    assert_int_equal(fx->ncb, 1);
    assert_int_equal(fx->results[0], ENS_ETOOBIG);
}

static void test_goaway_requeues_unprocessed(void **state)
{
    struct fixture *fx = *state;
    uint64_t dl = uv_now(&fx->loop) + 10000;
    assert_int_equal(request(fx, dl), 0);
    assert_int_equal(request(fx, dl), 0);
    pump(fx);
    assert_int_equal(fx->srv.nready, 2);
    /* The server processed only the first stream. */
    answer(fx, fx->srv.ready[0], "200", 0);
    nghttp2_submit_goaway(fx->srv.ng, NGHTTP2_FLAG_NONE, fx->srv.ready[0], NGHTTP2_NO_ERROR,
                          (const uint8_t *)"{\"reason\":\"Shutdown\"}", 21);
    fx->srv.nready = 0;
    pump(fx);
    assert_int_equal(fx->ncb, 1);
    assert_int_equal(fx->results[0], 0);
    struct h2_client_stats st;
    h2_client_get_stats(fx->c, &st);
    assert_int_equal(st.retried, 1);
    /* The second waits for a new connection (rt_connect, not in this test). */
    assert_int_equal(st.queued, 1);
}

static void test_free_cancels_and_queue_is_bounded(void **state)
{
    struct fixture *fx = *state;
    uint64_t dl = uv_now(&fx->loop) + 10000;
    int full = 0;
    for (int i = 0; i < H2_MAX_QUEUED_REQUESTS + 1; i++) {
        int rv = h2_client_request(fx->c, "GET", "/", NULL, 0, NULL, 0, dl, on_resp, fx);
        if (rv == ENS_EFULL)
            full++;
        else
            assert_int_equal(rv, 0);
    }
    assert_int_equal(full, 1);
    assert_int_equal(h2_client_request(fx->c, "GET", "x", NULL, 0, NULL, 0, dl, on_resp, fx),
                     ENS_EINVAL);
    fx->ncb = 0;
    struct h2_client *c = fx->c;
    fx->c = NULL;
    h2_client_free(c);
    assert_int_equal(fx->ncb, H2_MAX_QUEUED_REQUESTS);
    assert_int_equal(fx->results[0], ENS_ECANCELED);
}

static int cancel_count;
static void count_cancel(int err, const struct h2_response *r, void *ud)
{
    if (err == ENS_ECANCELED)
        cancel_count++;
}

static void test_free_runs_every_callback_once(void **state)
{
    struct fixture *fx = *state;
    uint64_t dl = uv_now(&fx->loop) + 10000;
    cancel_count = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(
            h2_client_request(fx->c, "GET", "/", NULL, 0, NULL, 0, dl, count_cancel, NULL), 0);
    pump(fx);
    h2_client_free(fx->c);
    fx->c = NULL;
    assert_int_equal(cancel_count, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_streams_capped_by_peer_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_resets_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_stream_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_is_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_requeues_unprocessed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_cancels_and_queue_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_runs_every_callback_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
