/* persistence/store_redis.c and store_uv.c: the connection's health. A store
 * whose socket is reset, whose peer goes silent, or whose Redis stops answering
 * must notice, say so through store_ready and its watcher, and come back by
 * itself once Redis does; it must not spin while Redis refuses it.
 *
 * The store talks to a real redis-server, either directly or through a small
 * TCP proxy on the same loop that can pass bytes, go silent (a peer gone
 * without a reset), or reset connections (what a killed server's kernel
 * answers to data it will never read). */
#include <arpa/inet.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "persistence/store_redis.h"
#include "runtime/err.h"
#include "tests/support/redis_fixture.h"

static uv_loop_t loop;
static struct redis_fixture F;

/* ---- loop helpers ---- */

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void on_tick_closed(uv_handle_t *h)
{
    free(h);
}

/* Runs the loop until *flag is set or |ms| pass; returns *flag. */
static int run_until(const int *flag, uint64_t ms)
{
    uv_timer_t *tick = malloc(sizeof(*tick));
    uv_timer_init(&loop, tick);
    uv_timer_start(tick, on_tick, 5, 5);
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + ms;
    while (!*flag && uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)tick, on_tick_closed);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag;
}

static void run_for(uint64_t ms)
{
    int never = 0;
    run_until(&never, ms);
}

static uint64_t now_ms(void)
{
    uv_update_time(&loop);
    return uv_now(&loop);
}

/* Polls store_ready until it equals |want| or |ms| pass; returns the time it
 * took, or UINT64_MAX. */
static uint64_t wait_state(struct store *s, int want, uint64_t ms)
{
    uint64_t t0 = now_ms();
    while (now_ms() - t0 < ms) {
        if (store_ready(s) == want)
            return now_ms() - t0;
        run_for(5);
    }
    return store_ready(s) == want ? now_ms() - t0 : UINT64_MAX;
}

struct res {
    int done;
    int calls;
    int err;
};

static void on_reply(int err, struct redisReply *reply, void *ud)
{
    (void)reply;
    struct res *r = ud;
    r->err = err;
    r->calls++;
    r->done = 1;
}

/* Sends PING with a deadline |ms| away and waits for its callback. */
static int ping(struct store *s, uint64_t ms)
{
    struct res r = {0};
    const char *argv[] = {"PING"};
    int rc = store_cmdargv(s, 1, argv, NULL, now_ms() + ms, on_reply, &r);
    if (rc != 0)
        return rc;
    assert_true(run_until(&r.done, ms + 2000));
    assert_int_equal(r.calls, 1);
    return r.err;
}

/* The watcher's view: every value it heard, in order. */
struct watch {
    int seen[64];
    int n;
};

static void on_watch(int ready, void *ud)
{
    struct watch *w = ud;
    if (w->n < (int)(sizeof(w->seen) / sizeof(w->seen[0])))
        w->seen[w->n++] = ready;
}

/* The store of the running test, freed by the teardown if the test fails. */
static struct store *cur;

static struct store *store_at(const char *url, struct watch *w)
{
    char err[128];
    struct store *s = store_new(&loop, url, err, sizeof(err));
    assert_non_null(s);
    cur = s;
    if (w)
        store_watch_ready(s, on_watch, w);
    assert_true(wait_state(s, 1, 3000) != UINT64_MAX);
    return s;
}

static void store_done(struct store *s)
{
    cur = NULL;
    store_free(s);
    run_for(30);
}

static uint64_t drops(struct store *s, enum store_drop_reason why)
{
    struct store_stats st;
    store_stats(s, &st);
    return st.drops[why];
}

/* ---- the proxy ---- */

enum proxy_mode { PROXY_PASS, PROXY_SILENT, PROXY_RESET_ON_ACCEPT };

struct pconn;

struct proxy {
    uv_tcp_t listener;
    int port;
    enum proxy_mode mode;
    int accepted;
    struct pconn *conns;
};

struct pconn {
    struct proxy *px;
    struct pconn *next;
    uv_tcp_t down; /* the store's side */
    uv_tcp_t up;   /* redis-server's side */
    uv_connect_t creq;
    int open;    /* handles not yet closed */
    int closing; /* unlinked from px->conns */
};

struct pwrite {
    uv_write_t req;
    char *data;
};

static void pconn_closed(uv_handle_t *h)
{
    struct pconn *c = h->data;
    if (--c->open == 0)
        free(c);
}

static void pconn_unlink(struct pconn *c)
{
    for (struct pconn **pp = &c->px->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    c->closing = 1;
}

/* Closes both sides; |reset| makes the store's side end with a TCP RST. */
static void pconn_close(struct pconn *c, int reset)
{
    if (c->closing)
        return;
    pconn_unlink(c);
    if (reset)
        assert_int_equal(uv_tcp_close_reset(&c->down, pconn_closed), 0);
    else
        uv_close((uv_handle_t *)&c->down, pconn_closed);
    uv_close((uv_handle_t *)&c->up, pconn_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(hint);
    buf->len = hint;
}

static void on_written(uv_write_t *req, int status)
{
    (void)status;
    struct pwrite *w = (struct pwrite *)req;
    free(w->data);
    free(w);
}

static void on_read(uv_stream_t *from, ssize_t n, const uv_buf_t *buf)
{
    struct pconn *c = from->data;
    if (n < 0) {
        free(buf->base);
        pconn_close(c, 0);
        return;
    }
    if (n == 0 || c->px->mode == PROXY_SILENT) {
        free(buf->base); /* silent: swallowed, as by a peer that is gone */
        return;
    }
    uv_stream_t *to =
        from == (uv_stream_t *)&c->down ? (uv_stream_t *)&c->up : (uv_stream_t *)&c->down;
    struct pwrite *w = malloc(sizeof(*w));
    w->data = buf->base;
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)n);
    if (uv_write(&w->req, to, &out, 1, on_written) != 0) {
        free(w->data);
        free(w);
        pconn_close(c, 0);
    }
}

static void on_up_connected(uv_connect_t *req, int status)
{
    struct pconn *c = req->data;
    if (c->closing)
        return;
    if (status != 0) {
        pconn_close(c, 0);
        return;
    }
    /* read the store only now: nothing it says can be lost before Redis is there */
    uv_read_start((uv_stream_t *)&c->down, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&c->up, on_alloc, on_read);
}

static void on_accept(uv_stream_t *l, int status)
{
    struct proxy *px = l->data;
    assert_int_equal(status, 0);
    struct pconn *c = calloc(1, sizeof(*c));
    c->px = px;
    uv_tcp_init(&loop, &c->down);
    uv_tcp_init(&loop, &c->up);
    c->down.data = c->up.data = c->creq.data = c;
    c->open = 2;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->down), 0);
    px->accepted++;
    c->next = px->conns;
    px->conns = c;
    if (px->mode == PROXY_RESET_ON_ACCEPT) {
        pconn_close(c, 1);
        return;
    }
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", F.port, &a);
    if (uv_tcp_connect(&c->creq, &c->up, (const struct sockaddr *)&a, on_up_connected) != 0)
        pconn_close(c, 0);
}

/* The one proxy of a test; static so that a failed test's teardown can still
 * close it before the loop is closed. */
static struct proxy px;
static int px_open;

static void proxy_start(struct proxy *p)
{
    memset(p, 0, sizeof(*p));
    px_open = 1;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &p->listener);
    p->listener.data = p;
    assert_int_equal(uv_tcp_bind(&p->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&p->listener, 16, on_accept), 0);
    int len = sizeof(a);
    assert_int_equal(uv_tcp_getsockname(&p->listener, (struct sockaddr *)&a, &len), 0);
    p->port = ntohs(a.sin_port);
}

static void proxy_url(const struct proxy *p, char *url, size_t cap)
{
    snprintf(url, cap, "redis://127.0.0.1:%d/0", p->port);
}

/* Resets every connection the proxy holds: the store's sockets see an RST. */
static void proxy_reset_all(struct proxy *p)
{
    while (p->conns)
        pconn_close(p->conns, 1);
}

static void proxy_stop(struct proxy *p)
{
    if (!px_open)
        return;
    px_open = 0;
    while (p->conns)
        pconn_close(p->conns, 0);
    uv_close((uv_handle_t *)&p->listener, NULL);
    run_for(20);
}

/* ---- tests ---- */

/* A reset arrives on an idle, healthy connection. libuv reports it as a poll
 * error; the store must drop the context at once, say so, and reconnect. With
 * hiredis's own libuv adapter the error is ignored: store_ready stays 1 and
 * every later command times out. */
static void test_reset_is_noticed_and_reconnected(void **state)
{
    (void)state;
    proxy_start(&px);
    char url[64];
    proxy_url(&px, url, sizeof(url));
    struct watch w = {0};
    struct store *s = store_at(url, &w);
    assert_int_equal(ping(s, 1000), 0);
    assert_int_equal(px.accepted, 1);

    proxy_reset_all(&px);
    uint64_t took = wait_state(s, 0, 1000);
    assert_true(took < 200); /* no command needed to find out */
    assert_int_equal(drops(s, STORE_DROP_POLL_ERROR), 1);
    const char *argv[] = {"PING"};
    struct res r = {0};
    assert_int_equal(store_cmdargv(s, 1, argv, NULL, now_ms() + 500, on_reply, &r), ENS_ESTORE);

    /* back by itself, on a new connection, within the first back-off step */
    assert_true(wait_state(s, 1, 1000) != UINT64_MAX);
    assert_int_equal(px.accepted, 2);
    assert_int_equal(ping(s, 1000), 0);

    /* a reset under a command in flight: the caller hears ENS_ESTORE, not a timeout */
    px.mode = PROXY_SILENT;
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cmdargv(s, 1, argv, NULL, now_ms() + 5000, on_reply, &r), 0);
    run_for(20);
    proxy_reset_all(&px);
    px.mode = PROXY_PASS;
    assert_true(run_until(&r.done, 1000));
    assert_int_equal(r.err, ENS_ESTORE);
    assert_int_equal(drops(s, STORE_DROP_POLL_ERROR), 2);
    assert_true(wait_state(s, 1, 1000) != UINT64_MAX);
    assert_int_equal(ping(s, 1000), 0);

    store_done(s);
    /* the watcher heard every edge, ending with store_free's 0 */
    int want[] = {1, 0, 1, 0, 1, 0};
    assert_int_equal(w.n, 6);
    assert_memory_equal(w.seen, want, sizeof(want));
    proxy_stop(&px);
}

/* Abuse: a Redis (or something in its place) that resets every connection
 * as it accepts it. The store keeps trying, with growing jittered back-off
 * rather than a spin, and is never ready meanwhile; then it recovers. */
static void test_resets_on_every_connect_back_off(void **state)
{
    (void)state;
    proxy_start(&px);
    char url[64];
    proxy_url(&px, url, sizeof(url));
    struct store *s = store_at(url, NULL);
    px.mode = PROXY_RESET_ON_ACCEPT;
    proxy_reset_all(&px);
    assert_true(wait_state(s, 0, 1000) != UINT64_MAX);
    int before = px.accepted;
    uint64_t t0 = now_ms();
    int ever_ready = 0;
    while (now_ms() - t0 < 1600) {
        ever_ready |= store_ready(s);
        run_for(5);
    }
    assert_false(ever_ready);
    /* back-off of 100, 200, 400, 800, 1600 ms, each jittered to 50-100 %: at
     * least 2 and at most 5 attempts fit in 1.6 s (the fifth no sooner than
     * 50+100+200+400+800 = 1550 ms). Without back-off there would be hundreds. */
    int attempts = px.accepted - before;
    print_message("attempts in 1.6 s: %d\n", attempts);
    assert_true(attempts >= 2);
    assert_true(attempts <= 5);
    assert_true(drops(s, STORE_DROP_CONNECT) >= (uint64_t)attempts);
    assert_int_equal(drops(s, STORE_DROP_POLL_ERROR), 1); /* only the first, established one */

    px.mode = PROXY_PASS;
    assert_true(wait_state(s, 1, 3000) != UINT64_MAX);
    assert_int_equal(ping(s, 1000), 0);
    store_done(s);
    proxy_stop(&px);
}

/* A peer that stops answering without a reset or a FIN (a host gone, a
 * partition). Nobody sends commands; the store's own probes must find it and
 * tear the connection down in a few seconds, then reconnect when the path
 * works again. */
static void test_silent_peer_is_found_while_idle(void **state)
{
    (void)state;
    proxy_start(&px);
    char url[64];
    proxy_url(&px, url, sizeof(url));
    struct store *s = store_at(url, NULL);
    assert_int_equal(ping(s, 1000), 0);

    px.mode = PROXY_SILENT;
    /* first probe after STORE_PING_INTERVAL_MS of silence, one more each
     * interval, dead at the third deadline: about 2.5 s */
    uint64_t bound = STORE_PING_INTERVAL_MS * STORE_DEAD_TIMEOUTS + STORE_PING_TIMEOUT_MS + 2000;
    uint64_t took = wait_state(s, 0, bound);
    print_message("silent peer found after %llu ms\n", (unsigned long long)took);
    assert_true(took != UINT64_MAX);
    assert_int_equal(drops(s, STORE_DROP_TIMEOUTS), 1);
    /* the probes are the store's own: callers' statistics do not count them */
    struct store_stats st;
    store_stats(s, &st);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.pending, 0);

    px.mode = PROXY_PASS;
    assert_true(wait_state(s, 1, STORE_CONNECT_TIMEOUT_MS + 2000) != UINT64_MAX);
    assert_int_equal(ping(s, 1000), 0);
    store_done(s);
    proxy_stop(&px);
}

static void on_counted(int err, struct redisReply *reply, void *ud)
{
    (void)reply;
    int *timeouts = ud;
    if (err == ENS_ETIMEDOUT)
        (*timeouts)++;
}

/* Sends |n| PINGs with a deadline |ms| away and waits until all timed out. */
static void time_out(struct store *s, int n, uint64_t ms)
{
    int timeouts = 0;
    const char *argv[] = {"PING"};
    for (int i = 0; i < n; i++)
        assert_int_equal(store_cmdargv(s, 1, argv, NULL, now_ms() + ms, on_counted, &timeouts), 0);
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + ms + 1000;
    while (timeouts < n && now_ms() < end)
        run_for(5);
    assert_int_equal(timeouts, n);
}

/* Redis itself stops (SIGSTOP): the connection is up, the kernel even
 * accepts new ones, nothing is answered. STORE_DEAD_TIMEOUTS deadlines in a
 * row mark it dead at once; when Redis continues the store is back. */
static void test_run_of_timeouts_reconnects(void **state)
{
    (void)state;
    struct store *s = store_at(F.url, NULL);
    assert_int_equal(kill(F.pid, SIGSTOP), 0);
    time_out(s, STORE_DEAD_TIMEOUTS - 1, 150);
    assert_true(store_ready(s)); /* not yet a run */
    time_out(s, 1, 150);
    assert_false(store_ready(s)); /* the last of the run tore it down */
    assert_int_equal(drops(s, STORE_DROP_TIMEOUTS), 1);
    assert_int_equal(kill(F.pid, SIGCONT), 0);
    uint64_t took = wait_state(s, 1, STORE_CONNECT_TIMEOUT_MS + 2000);
    assert_true(took != UINT64_MAX);
    assert_int_equal(ping(s, 1000), 0);
    store_done(s);
}

/* Abuse of the rule: timeouts separated by a reply are a slow Redis, not a
 * dead one, and must not cost the connection. */
static void test_timeouts_with_replies_between_keep_the_connection(void **state)
{
    (void)state;
    struct store *s = store_at(F.url, NULL);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(kill(F.pid, SIGSTOP), 0);
        time_out(s, STORE_DEAD_TIMEOUTS - 1, 100);
        assert_int_equal(kill(F.pid, SIGCONT), 0);
        assert_int_equal(ping(s, 1000), 0); /* the late replies and this one reset the run */
    }
    assert_true(store_ready(s));
    assert_int_equal(drops(s, STORE_DROP_TIMEOUTS), 0);
    struct store_stats st;
    store_stats(s, &st);
    assert_int_equal(st.timeouts, 3 * (STORE_DEAD_TIMEOUTS - 1));
    assert_int_equal(st.connects, 1);
    store_done(s);
}

static int resume(void **state)
{
    (void)state;
    kill(F.pid, SIGCONT); /* a failed test must not leave the server stopped */
    if (cur) {
        store_watch_ready(cur, NULL, NULL); /* its watch lived on the test's stack */
        store_done(cur);
    }
    proxy_stop(&px);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    return redis_fixture_start(&F, 1);
}

static int group_teardown(void **state)
{
    (void)state;
    kill(F.pid, SIGCONT);
    redis_fixture_stop(&F);
    run_for(20);
    uv_run(&loop, UV_RUN_NOWAIT);
    return uv_loop_close(&loop) == 0 ? 0 : -1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reset_is_noticed_and_reconnected, resume),
        cmocka_unit_test_teardown(test_resets_on_every_connect_back_off, resume),
        cmocka_unit_test_teardown(test_silent_peer_is_found_while_idle, resume),
        cmocka_unit_test_teardown(test_run_of_timeouts_reconnects, resume),
        cmocka_unit_test_teardown(test_timeouts_with_replies_between_keep_the_connection, resume),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
