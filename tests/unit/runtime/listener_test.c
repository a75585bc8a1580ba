/* Tests for runtime/listener.c: the connection cap and descriptor exhaustion
 * pause accepting instead of spinning, and accepting resumes when a stream
 * closes or descriptors come back. Real loopback sockets; descriptor
 * exhaustion is made real by lowering RLIMIT_NOFILE in this process. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "runtime/err.h"
#include "runtime/net.h"

#define MAX_STREAMS 16
#define MAX_FILLERS 512

struct ctx {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps the loop turning, and counts its turns */
    unsigned ticks;
    struct rt_listener *l;
    struct rt_stream *acc[MAX_STREAMS];
    unsigned accepted;
    int clients[MAX_STREAMS];
    unsigned nclients;
};

static void on_tick(uv_timer_t *t)
{
    struct ctx *c = t->data;
    c->ticks++;
}

static void on_accept(struct rt_stream *s, void *ud)
{
    struct ctx *c = ud;
    assert_true(c->accepted < MAX_STREAMS);
    c->acc[c->accepted++] = s;
}

static void ctx_init(struct ctx *c, unsigned cap)
{
    memset(c, 0, sizeof(*c));
    assert_int_equal(uv_loop_init(&c->loop), 0);
    uv_timer_init(&c->loop, &c->tick);
    c->tick.data = c;
    uv_timer_start(&c->tick, on_tick, 5, 5);
    rt_listen_set_conn_cap(cap);
    assert_int_equal(rt_listen(&c->loop, "127.0.0.1:0", NULL, 0, on_accept, c, &c->l), 0);
    if (cap)
        assert_int_equal(rt_listen_conn_cap(), cap);
}

static void ctx_finish(struct ctx *c)
{
    for (unsigned i = 0; i < c->accepted; i++)
        if (c->acc[i])
            rt_stream_close(c->acc[i], NULL, NULL);
    for (unsigned i = 0; i < c->nclients; i++)
        close(c->clients[i]);
    rt_listener_close(c->l);
    uv_close((uv_handle_t *)&c->tick, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    rt_listen_set_conn_cap(0);
    struct rt_listen_stats st;
    rt_listen_stats_get(&st);
    assert_int_equal(st.open, 0); /* every accepted stream was counted out */
    assert_int_equal(st.paused, 0);
}

/* connect_clients makes |n| loopback connections; the kernel completes them
 * into the listener's backlog whether or not it accepts. */
static void connect_clients(struct ctx *c, unsigned n)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(rt_listener_port(c->l))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (unsigned i = 0; i < n; i++) {
        assert_true(c->nclients < MAX_STREAMS);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        c->clients[c->nclients++] = fd;
    }
}

/* run_for turns the loop for |ms| or until |want| streams were accepted
 * (0: the full time); returns the milliseconds it took. */
static uint64_t run_for(struct ctx *c, uint64_t ms, unsigned want)
{
    uv_update_time(&c->loop);
    uint64_t t0 = uv_now(&c->loop);
    while (uv_now(&c->loop) - t0 < ms && (want == 0 || c->accepted < want))
        uv_run(&c->loop, UV_RUN_ONCE);
    return uv_now(&c->loop) - t0;
}

/* The log goes to descriptor 2; capture it to count lines per episode. */
struct logcap {
    int saved;
    int fd;
    char text[8192];
};

static void logcap_start(struct logcap *lc)
{
    char path[] = "/tmp/listener_test.XXXXXX";
    lc->fd = mkstemp(path);
    assert_true(lc->fd >= 0);
    unlink(path);
    lc->saved = dup(STDERR_FILENO);
    assert_true(lc->saved >= 0);
    assert_true(dup2(lc->fd, STDERR_FILENO) >= 0);
}

static void logcap_end(struct logcap *lc)
{
    assert_true(dup2(lc->saved, STDERR_FILENO) >= 0);
    close(lc->saved);
    ssize_t n = pread(lc->fd, lc->text, sizeof(lc->text) - 1, 0);
    close(lc->fd);
    lc->text[n > 0 ? n : 0] = '\0';
    fputs(lc->text, stderr);
}

static unsigned count(const char *text, const char *needle)
{
    unsigned n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void test_cap_pauses_and_resumes_on_close(void **state)
{
    struct ctx c;
    struct rt_listen_stats before, st;
    struct logcap lc;
    rt_listen_stats_get(&before);
    ctx_init(&c, 2);
    logcap_start(&lc);
    connect_clients(&c, 5);
    run_for(&c, 2000, 2);
    assert_int_equal(c.accepted, 2);
    /* The other three wait in the backlog: none is taken past the cap, none
     * is closed, and the loop keeps turning. */
    unsigned ticks = c.ticks;
    run_for(&c, 100, 0);
    assert_int_equal(c.accepted, 2);
    assert_true(c.ticks - ticks >= 10);
    rt_listen_stats_get(&st);
    assert_int_equal(st.open, 2);
    assert_int_equal(st.paused, 1);
    assert_int_equal(st.pauses_cap - before.pauses_cap, 1);
    /* One closes: the next waiting client is taken at once, not on a timer. */
    rt_stream_close(c.acc[0], NULL, NULL);
    c.acc[0] = NULL;
    assert_true(run_for(&c, 2000, 3) < 50);
    assert_int_equal(c.accepted, 3);
    run_for(&c, 50, 0);
    assert_int_equal(c.accepted, 3); /* and only one */
    /* All close: the rest come in, the backlog empties, the episode ends;
     * it was one episode however often it paused. */
    rt_stream_close(c.acc[1], NULL, NULL);
    rt_stream_close(c.acc[2], NULL, NULL);
    c.acc[1] = c.acc[2] = NULL;
    run_for(&c, 2000, 5);
    assert_int_equal(c.accepted, 5);
    rt_stream_close(c.acc[3], NULL, NULL);
    rt_stream_close(c.acc[4], NULL, NULL);
    c.acc[3] = c.acc[4] = NULL;
    run_for(&c, 50, 0);
    rt_listen_stats_get(&st);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.paused, 0);
    assert_int_equal(st.pauses_cap - before.pauses_cap, 1);
    /* One line when it began, one when the backlog was empty again. */
    logcap_end(&lc);
    assert_int_equal(count(lc.text, "\n"), 2);
    assert_int_equal(count(lc.text, "net.accept_paused"), 1);
    assert_int_equal(count(lc.text, "reason=connections"), 1);
    assert_int_equal(count(lc.text, "net.accept_resumed"), 1);
    assert_int_equal(count(lc.text, "accepted=3"), 1);
    assert_int_equal(count(lc.text, "(backlog empty)"), 1);
    ctx_finish(&c);
}

/* exhaust lowers the soft descriptor limit and takes every descriptor left,
 * so that the next accept(2) fails with EMFILE. */
static unsigned exhaust(int *fillers, struct rlimit *saved)
{
    assert_int_equal(getrlimit(RLIMIT_NOFILE, saved), 0);
    struct rlimit low = {MAX_FILLERS, saved->rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    unsigned n = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            assert_int_equal(errno, EMFILE);
            break;
        }
        assert_true(n < MAX_FILLERS);
        fillers[n++] = fd;
    }
    return n;
}

static void restore(int *fillers, unsigned n, const struct rlimit *saved)
{
    for (unsigned i = 0; i < n; i++)
        close(fillers[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, saved), 0);
}

static void test_emfile_pauses_without_spinning(void **state)
{
    struct ctx c;
    struct rt_listen_stats before, st;
    static int fillers[MAX_FILLERS];
    struct rlimit saved;
    rt_listen_stats_get(&before);
    ctx_init(&c, 0);
    connect_clients(&c, 1);
    run_for(&c, 2000, 1);
    assert_int_equal(c.accepted, 1);
    connect_clients(&c, 4); /* queued: the loop does not run before exhaustion */
    struct logcap lc;
    logcap_start(&lc);
    unsigned nf = exhaust(fillers, &saved);

    double cpu0 = cpu_ms();
    unsigned ticks = c.ticks;
    run_for(&c, 300, 0);
    double cpu = cpu_ms() - cpu0;
    assert_int_equal(c.accepted, 1);
    /* The loop kept turning (timers ran) and accept(2) was retried on a
     * back-off, not in a loop: a spin would burn the whole 300 ms. */
    assert_true(c.ticks - ticks >= 30);
    assert_true(cpu < 60);
    rt_listen_stats_get(&st);
    assert_int_equal(st.paused, 1);
    assert_int_equal(st.pauses_fd - before.pauses_fd, 1);

    /* Closing a stream frees a descriptor: one client is taken at once,
     * long before the back-off (grown past 100 ms by now) would retry. */
    rt_stream_close(c.acc[0], NULL, NULL);
    c.acc[0] = NULL;
    assert_true(run_for(&c, 2000, 2) < 50);
    assert_int_equal(c.accepted, 2);

    /* Descriptors come back: the rest within the longest back-off. */
    restore(fillers, nf, &saved);
    assert_true(run_for(&c, 3000, 5) <= 1100);
    assert_int_equal(c.accepted, 5);
    run_for(&c, 20, 0);
    rt_listen_stats_get(&st);
    assert_int_equal(st.paused, 0);
    assert_int_equal(st.pauses_fd - before.pauses_fd, 1); /* one episode */
    logcap_end(&lc);
    assert_int_equal(count(lc.text, "\n"), 2);
    assert_int_equal(count(lc.text, "reason=descriptors err=too many open files"), 1);
    assert_int_equal(count(lc.text, "(backlog empty)"), 1);
    ctx_finish(&c);
}

/* A listener closed while paused, with a retry pending and streams still
 * open, releases everything exactly once (ASan checks the memory). */
static void test_close_while_paused(void **state)
{
    struct ctx c;
    static int fillers[MAX_FILLERS];
    struct rlimit saved;
    ctx_init(&c, 0);
    connect_clients(&c, 1);
    run_for(&c, 2000, 1);
    connect_clients(&c, 2);
    unsigned nf = exhaust(fillers, &saved);
    run_for(&c, 30, 0);
    struct rt_listen_stats st;
    rt_listen_stats_get(&st);
    assert_int_equal(st.paused, 1);
    rt_listener_close(c.l);
    restore(fillers, nf, &saved);
    run_for(&c, 50, 0);
    rt_listen_stats_get(&st);
    assert_int_equal(st.paused, 0);
    assert_int_equal(st.open, 1);
    assert_int_equal(c.accepted, 1); /* closed means closed: nothing more */
    c.l = NULL;
    ctx_finish(&c); /* the stream outlives its listener and closes last */
}

static void test_bad_addresses(void **state)
{
    uv_loop_t loop;
    struct rt_listener *l = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(rt_listen(&loop, "localhost:0", NULL, 0, on_accept, NULL, &l), ENS_EINVAL);
    assert_int_equal(rt_listen(&loop, "127.0.0.1", NULL, 0, on_accept, NULL, &l), ENS_EPARSE);
    assert_int_equal(rt_listen(&loop, "", NULL, 0, on_accept, NULL, &l), ENS_EPARSE);
    assert_int_equal(rt_listen(&loop, NULL, NULL, 0, on_accept, NULL, &l), ENS_EPARSE);
    assert_int_equal(rt_listen(&loop, "127.0.0.1:0", NULL, 0, NULL, NULL, &l), ENS_EINVAL);
    assert_null(l);
    /* [::1] may be missing in a container; when it binds, it reports a port. */
    if (rt_listen(&loop, "[::1]:0", NULL, 0, on_accept, NULL, &l) == 0) {
        assert_true(rt_listener_port(l) > 0);
        rt_listener_close(l);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_pauses_and_resumes_on_close),
        cmocka_unit_test(test_emfile_pauses_without_spinning),
        cmocka_unit_test(test_close_while_paused),
        cmocka_unit_test(test_bad_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
