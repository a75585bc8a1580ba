/* Tests for runtime/rt.c: ordering, cross-thread sends, stopped actors,
 * suspension, timers and the stop hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/limits.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/rt.h"

enum { MSG_NUM = 1, MSG_TICK, MSG_SUSPEND, MSG_RESUME_LATER, MSG_STOP };

#define SENDERS    4
#define PER_SENDER 20000

struct num_msg {
    struct rt_msg hdr;
    int sender;
    int seq;
};

struct counter {
    int next[SENDERS];
    _Atomic int received;
    _Atomic int out_of_order;
    _Atomic int wrong_thread;
    struct rt_sched *home;
    _Atomic int ticks;
    int suspended_seen;
    struct rt_timer *timer;
    uv_timer_t *resume_timer;
    _Atomic int destroyed;
};

static struct rt_actor *g_suspended_actor;

static void resume_cb(uv_timer_t *t)
{
    rt_actor_resume(g_suspended_actor);
    uv_close((uv_handle_t *)t, (uv_close_cb)ens_free);
}

static void counter_receive(struct rt_actor *a, struct rt_msg *m)
{
    struct counter *c = rt_actor_state(a);
    if (rt_sched_current() != rt_actor_sched(a))
        atomic_fetch_add(&c->wrong_thread, 1);
    switch (m->type) {
    case MSG_NUM: {
        struct num_msg *n = (struct num_msg *)m;
        if (c->next[n->sender] != n->seq)
            atomic_fetch_add(&c->out_of_order, 1);
        c->next[n->sender] = n->seq + 1;
        atomic_fetch_add(&c->received, 1);
        break;
    }
    case MSG_TICK:
        atomic_fetch_add(&c->ticks, 1);
        break;
    case MSG_SUSPEND: {
        /* stay suspended for 50 ms: nothing may be delivered meanwhile */
        rt_actor_suspend(a);
        c->suspended_seen = atomic_load(&c->received);
        g_suspended_actor = a;
        uv_timer_t *t = ens_malloc(sizeof(*t));
        uv_timer_init(rt_actor_loop(a), t);
        uv_timer_start(t, resume_cb, 50, 0);
        break;
    }
    case MSG_STOP:
        rt_actor_stop(a);
        break;
    }
    rt_msg_free(m);
}

static void counter_destroy(struct rt_actor *a)
{
    struct counter *c = rt_actor_state(a);
    atomic_store(&c->destroyed, 1);
}

static const struct rt_actor_type kCounter = {"counter", counter_receive, counter_destroy};

struct sender_arg {
    struct rt *rt;
    rt_actor_id to;
    int sender;
};

static void sender_main(void *p)
{
    struct sender_arg *s = p;
    for (int i = 0; i < PER_SENDER; i++) {
        struct num_msg *m = rt_msg_new(sizeof(*m), MSG_NUM);
        m->sender = s->sender;
        m->seq = i;
        while (rt_send(s->rt, s->to, &m->hdr) == ENS_EFULL)
            uv_sleep(1);
    }
}

static void wait_for(_Atomic int *v, int want)
{
    for (int i = 0; i < 5000 && atomic_load(v) < want; i++)
        uv_sleep(1);
}

static void test_cross_thread_sends_keep_per_sender_order(void **state)
{
    struct rt *rt = rt_new(2, NULL);
    assert_non_null(rt);
    assert_int_equal(rt_start(rt), 0);
    struct counter c = {0};
    rt_actor_id id;
    assert_int_equal(rt_spawn(rt, 1, &kCounter, &c, &id), 0);
    assert_int_not_equal(id, 0);

    uv_thread_t th[SENDERS];
    struct sender_arg args[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        args[i] = (struct sender_arg){rt, id, i};
        uv_thread_create(&th[i], sender_main, &args[i]);
    }
    for (int i = 0; i < SENDERS; i++)
        uv_thread_join(&th[i]);
    wait_for(&c.received, SENDERS * PER_SENDER);
    assert_int_equal(atomic_load(&c.received), SENDERS * PER_SENDER);
    assert_int_equal(atomic_load(&c.out_of_order), 0);
    assert_int_equal(atomic_load(&c.wrong_thread), 0);

    /* a stopped actor's id is dead for good, even when its slot is reused */
    struct rt_msg *stop = rt_msg_new(sizeof(*stop), MSG_STOP);
    assert_int_equal(rt_send(rt, id, stop), 0);
    wait_for(&c.destroyed, 1);
    assert_int_equal(atomic_load(&c.destroyed), 1);
    struct rt_msg *late = rt_msg_new(sizeof(*late), MSG_TICK);
    assert_int_equal(rt_send(rt, id, late), ENS_ENOACTOR);
    struct counter c2 = {0};
    rt_actor_id id2;
    assert_int_equal(rt_spawn(rt, 0, &kCounter, &c2, &id2), 0);
    assert_int_not_equal(id2, id);
    assert_int_equal(rt_send(rt, id, late), ENS_ENOACTOR);
    rt_msg_free(late);
    assert_int_equal(rt_actor_count(rt), 1);

    rt_stop(rt, 1000);
    rt_join(rt);
    /* actors still alive at stop are destroyed by their scheduler */
    assert_int_equal(atomic_load(&c2.destroyed), 1);
    rt_free(rt);
}

static void test_suspended_actor_gets_nothing_until_resumed(void **state)
{
    struct rt *rt = rt_new(1, NULL);
    assert_int_equal(rt_start(rt), 0);
    struct counter c = {0};
    rt_actor_id id;
    assert_int_equal(rt_spawn(rt, 0, &kCounter, &c, &id), 0);
    assert_int_equal(rt_send(rt, id, rt_msg_new(sizeof(struct rt_msg), MSG_SUSPEND)), 0);
    uv_sleep(10);
    for (int i = 0; i < 10; i++) {
        struct num_msg *m = rt_msg_new(sizeof(*m), MSG_NUM);
        m->seq = i;
        assert_int_equal(rt_send(rt, id, &m->hdr), 0);
    }
    uv_sleep(20);
    assert_int_equal(atomic_load(&c.received), 0); /* still suspended */
    wait_for(&c.received, 10);
    assert_int_equal(atomic_load(&c.received), 10);
    assert_int_equal(atomic_load(&c.out_of_order), 0);
    rt_stop(rt, 1000);
    rt_join(rt);
    rt_free(rt);
}

/* An actor that arms a timer on its first message. */
static void ticker_receive(struct rt_actor *a, struct rt_msg *m)
{
    struct counter *c = rt_actor_state(a);
    if (m->type == MSG_NUM) {
        c->timer = rt_timer_new(a, MSG_TICK);
        rt_timer_arm(c->timer, 20);
    } else if (m->type == MSG_TICK) {
        if (atomic_fetch_add(&c->ticks, 1) + 1 < 3)
            rt_timer_arm(c->timer, 10);
    }
    rt_msg_free(m);
}

static const struct rt_actor_type kTicker = {"ticker", ticker_receive, counter_destroy};

static void test_timers_deliver_messages(void **state)
{
    struct rt *rt = rt_new(1, NULL);
    assert_int_equal(rt_start(rt), 0);
    struct counter c = {0};
    rt_actor_id id;
    assert_int_equal(rt_spawn(rt, 0, &kTicker, &c, &id), 0);
    assert_int_equal(rt_send(rt, id, rt_msg_new(sizeof(struct num_msg), MSG_NUM)), 0);
    wait_for(&c.ticks, 3);
    uv_sleep(30);
    assert_int_equal(atomic_load(&c.ticks), 3);
    rt_stop(rt, 1000);
    rt_join(rt);
    assert_int_equal(atomic_load(&c.destroyed), 1);
    rt_free(rt);
}

static _Atomic int g_stop_hooks;

static void hook_stop(struct rt_sched *s, void *ud)
{
    atomic_fetch_add(&g_stop_hooks, 1);
    rt_sched_stopped(s);
}

static void never_stop(struct rt_sched *s, void *ud)
{
    atomic_fetch_add(&g_stop_hooks, 1); /* the grace timer must end it */
}

static void test_stop_runs_hooks_and_grace_bounds_it(void **state)
{
    struct rt_sched_hooks hooks = {NULL, hook_stop, NULL};
    struct rt *rt = rt_new(3, &hooks);
    assert_int_equal(rt_start(rt), 0);
    rt_stop(rt, 1000);
    rt_join(rt);
    assert_int_equal(atomic_load(&g_stop_hooks), 3);
    rt_free(rt);

    atomic_store(&g_stop_hooks, 0);
    struct rt_sched_hooks stuck = {NULL, never_stop, NULL};
    rt = rt_new(1, &stuck);
    assert_int_equal(rt_start(rt), 0);
    uint64_t t0 = uv_hrtime();
    rt_stop(rt, 100);
    rt_join(rt);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(atomic_load(&g_stop_hooks), 1);
    assert_true(ms >= 90 && ms < 2000);
    rt_free(rt);
}

static _Atomic int g_reaped;

static void idle_receive(struct rt_actor *a, struct rt_msg *m)
{
    if (m->type == MSG_STOP)
        rt_actor_stop(a);
    rt_msg_free(m);
}

static void idle_destroy(struct rt_actor *a)
{
    (void)a;
    atomic_fetch_add(&g_reaped, 1);
}

static const struct rt_actor_type kIdle = {"idle", idle_receive, idle_destroy};

/* Stopping reaps every actor still resident, in time linear in their number:
 * 100,000 of them, interleaved over two schedulers in the shared registry (one
 * pass per actor took 8.5 s here), with some stopped but not yet reaped. */
static void test_stop_reaps_many_actors(void **state)
{
    enum { N = 100000 };
    atomic_store(&g_reaped, 0);
    struct rt *rt = rt_new(2, NULL);
    assert_int_equal(rt_start(rt), 0);
    for (int i = 0; i < N; i++) {
        rt_actor_id id;
        assert_int_equal(rt_spawn(rt, i % 2, &kIdle, NULL, &id), 0);
        if (i % 1000 == 0)
            assert_int_equal(rt_send(rt, id, rt_msg_new(sizeof(struct rt_msg), MSG_STOP)), 0);
    }
    uint64_t t0 = uv_hrtime();
    rt_stop(rt, 1000);
    rt_join(rt);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(atomic_load(&g_reaped), N);
    assert_int_equal(rt_actor_count(rt), 0);
    /* generous for a loaded machine: the quadratic teardown took seconds */
    assert_true(ms < 2000);
    rt_free(rt);
}

static void test_place_spreads_keys(void **state)
{
    struct rt *rt = rt_new(4, NULL);
    int hits[4] = {0};
    for (uint64_t k = 0; k < 4000; k++)
        hits[rt_place(rt, k)]++;
    for (int i = 0; i < 4; i++)
        assert_true(hits[i] > 800 && hits[i] < 1200);
    assert_int_equal(rt_place(rt, 42), rt_place(rt, 42));
    rt_free(rt);
    assert_null(rt_new(0, NULL));
}

/* ---- Keyed actors ---- */

#define KEYS             64
#define KEYED_PER_SENDER 5000

enum { MSG_KEYED = 100, MSG_PASSIVATE_TRY };

struct keyed_msg {
    struct rt_msg hdr;
    int sender;
    int seq;
};

/* What the keys' actors saw, across all their incarnations. Per key, the last
 * sequence number seen from each sender survives passivation here, so an
 * incarnation that got a message out of order (or twice, or never) shows. */
struct keyed_world {
    _Atomic int activations;
    _Atomic int received;
    _Atomic int out_of_order;
    _Atomic int wrong_thread;
    _Atomic int busy_refusals;
    _Atomic int destroyed;
    int next[KEYS][SENDERS]; /* the owning scheduler's thread only */
    int passivate_every;     /* try to passivate after this many messages */
    struct rt *rt;
};

struct keyed_state {
    struct keyed_world *w;
    int key;
    int handled;
    struct rt_sched *home;
};

static void *keyed_activate(struct rt_sched *s, const char *key, size_t len, void *ud)
{
    struct keyed_world *w = ud;
    struct keyed_state *k = ens_calloc(1, sizeof(*k));
    k->w = w;
    k->home = s;
    char buf[16];
    assert_true(len < sizeof(buf));
    memcpy(buf, key, len);
    buf[len] = '\0';
    k->key = (int)strtol(buf + 1, NULL, 10); /* "k<N>" */
    atomic_fetch_add(&w->activations, 1);
    return k;
}

static void keyed_receive(struct rt_actor *a, struct rt_msg *m)
{
    struct keyed_state *k = rt_actor_state(a);
    struct keyed_world *w = k->w;
    if (rt_sched_current() != k->home)
        atomic_fetch_add(&w->wrong_thread, 1);
    if (m->type == MSG_KEYED) {
        struct keyed_msg *km = (struct keyed_msg *)m;
        if (w->next[k->key][km->sender] != km->seq)
            atomic_fetch_add(&w->out_of_order, 1);
        w->next[k->key][km->sender] = km->seq + 1;
        atomic_fetch_add(&w->received, 1);
    }
    rt_msg_free(m);
    if (w->passivate_every && ++k->handled % w->passivate_every == 0) {
        /* while suspended it must refuse, whatever is waiting */
        rt_actor_suspend(a);
        assert_int_equal(rt_actor_passivate(a), ENS_EAGAIN);
        rt_actor_resume(a);
        if (rt_actor_passivate(a) == ENS_EAGAIN)
            atomic_fetch_add(&w->busy_refusals, 1); /* messages wait: they come first */
    }
}

static void keyed_destroy(struct rt_actor *a)
{
    struct keyed_state *k = rt_actor_state(a);
    atomic_fetch_add(&k->w->destroyed, 1);
    ens_free(k);
}

static const struct rt_actor_type kKeyed = {"keyed", keyed_receive, keyed_destroy};

struct keyed_sender {
    struct keyed_world *w;
    int sender;
};

static void keyed_sender_main(void *p)
{
    struct keyed_sender *ks = p;
    char key[16];
    int seq[KEYS] = {0}; /* per key, this sender's next sequence number */
    for (int i = 0; i < KEYED_PER_SENDER; i++) {
        for (int k = 0; k < KEYS; k += 8) {
            int kk = (k + i) % KEYS;
            int n = snprintf(key, sizeof(key), "k%d", kk);
            struct keyed_msg *m = rt_msg_new(sizeof(*m), MSG_KEYED);
            m->sender = ks->sender;
            m->seq = seq[kk]++;
            int rc;
            while ((rc = rt_send_key(ks->w->rt, key, (size_t)n, &m->hdr)) == ENS_EFULL)
                uv_sleep(1);
            assert_int_equal(rc, 0);
        }
    }
}

/* Four threads send to 64 keys over two schedulers with no lock on the send
 * path: each key has one actor on its own scheduler's thread, per-sender order
 * holds per key, and with |passivate_every| the actors leave memory and come
 * back all along without losing, repeating or reordering a message. */
static void run_keyed(int passivate_every)
{
    struct keyed_world *w = ens_calloc(1, sizeof(*w));
    w->passivate_every = passivate_every;
    struct rt *rt = rt_new(2, NULL);
    w->rt = rt;
    struct rt_keyed_class kc = {&kKeyed, keyed_activate, w};
    rt_keyed_set(rt, &kc);
    assert_int_equal(rt_start(rt), 0);
    uv_thread_t th[SENDERS];
    struct keyed_sender args[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        args[i] = (struct keyed_sender){w, i};
        uv_thread_create(&th[i], keyed_sender_main, &args[i]);
    }
    for (int i = 0; i < SENDERS; i++)
        uv_thread_join(&th[i]);
    int total = SENDERS * KEYED_PER_SENDER * (KEYS / 8);
    for (int i = 0; i < 30000 && atomic_load(&w->received) < total; i++)
        uv_sleep(1);
    assert_int_equal(atomic_load(&w->received), total);
    assert_int_equal(atomic_load(&w->wrong_thread), 0);
    assert_int_equal(atomic_load(&w->out_of_order), 0);
    if (passivate_every == 0) {
        assert_int_equal(atomic_load(&w->activations), KEYS);
        assert_int_equal(rt_keyed_resident(rt), KEYS);
    } else {
        /* each message again tries to passivate (refused while more wait): at
         * rest nothing is resident */
        for (int i = 0; i < 5000 && rt_keyed_resident(rt) > 0; i++)
            uv_sleep(1);
        assert_int_equal(rt_keyed_resident(rt), 0);
        /* and a further round brings every key back, in order after its
         * predecessor's last message */
        int before = atomic_load(&w->activations);
        struct keyed_sender more = {w, 0};
        char key[16];
        for (int k = 0; k < KEYS; k++) {
            int n = snprintf(key, sizeof(key), "k%d", k);
            struct keyed_msg *m = rt_msg_new(sizeof(*m), MSG_KEYED);
            m->sender = more.sender;
            /* each sender sent every key this many, numbered from 0 */
            m->seq = KEYED_PER_SENDER * (KEYS / 8) / KEYS;
            assert_int_equal(rt_send_key(rt, key, (size_t)n, &m->hdr), 0);
        }
        for (int i = 0; i < 5000 && atomic_load(&w->received) < total + KEYS; i++)
            uv_sleep(1);
        assert_int_equal(atomic_load(&w->received), total + KEYS);
        assert_int_equal(atomic_load(&w->out_of_order), 0);
        assert_int_equal(atomic_load(&w->activations), before + KEYS);
    }
    assert_int_equal(rt_actor_count(rt), 0); /* not in the id registry */
    rt_stop(rt, 1000);
    rt_join(rt);
    assert_int_equal(atomic_load(&w->destroyed), atomic_load(&w->activations));
    assert_int_equal(rt_keyed_resident(rt), 0);
    rt_free(rt);
    ens_free(w);
}

static void test_keyed_actors_one_per_key_in_order(void **state)
{
    (void)state;
    run_keyed(0);
}

static void test_keyed_passivation_loses_nothing(void **state)
{
    (void)state;
    run_keyed(1);
}

static void test_keyed_refusals(void **state)
{
    (void)state;
    struct rt *rt = rt_new(1, NULL);
    struct rt_msg *m = rt_msg_new(sizeof(*m), MSG_KEYED);
    assert_int_equal(rt_send_key(rt, "k1", 2, m), ENS_EINVAL); /* no keyed class */
    struct keyed_world w = {0};
    w.rt = rt;
    struct rt_keyed_class kc = {&kKeyed, keyed_activate, &w};
    rt_keyed_set(rt, &kc);
    char big[RT_MAX_KEY + 1];
    memset(big, 'k', sizeof(big));
    assert_int_equal(rt_send_key(rt, big, sizeof(big), m), ENS_EINVAL);
    assert_int_equal(rt_send_key(rt, "k1", 0, m), ENS_EINVAL);
    assert_int_equal(rt_key_place(rt, "k1", 2), 0);
    /* taken before start: delivered once it runs, or freed with the runtime */
    assert_int_equal(rt_send_key(rt, "k1", 2, m), 0);
    /* the budget is per scheduler and counts what actors have not taken */
    int taken = 1, rc = 0;
    while (taken < RT_INBOX_MAX_DEPTH + 1) {
        struct rt_msg *x = rt_msg_new(sizeof(*x), MSG_TICK);
        rc = rt_send_key(rt, "k2", 2, x);
        if (rc) {
            rt_msg_free(x);
            break;
        }
        taken++;
    }
    assert_int_equal(rc, ENS_EFULL);
    assert_int_equal(taken, RT_INBOX_MAX_DEPTH);
    rt_free(rt); /* never started: frees the inbox */
}

/* Stopping with 100,000 keyed actors resident reaps them all, in time linear
 * in their number (ISSUE: shutdown of a full node within a second). */
static void test_keyed_stop_reaps_many(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct keyed_world *w = ens_calloc(1, sizeof(*w));
    struct rt *rt = rt_new(2, NULL);
    w->rt = rt;
    struct rt_keyed_class kc = {&kKeyed, keyed_activate, w};
    rt_keyed_set(rt, &kc);
    assert_int_equal(rt_start(rt), 0);
    char key[16];
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        struct rt_msg *m = rt_msg_new(sizeof(*m), MSG_PASSIVATE_TRY);
        int rc;
        while ((rc = rt_send_key(rt, key, (size_t)n, m)) == ENS_EFULL)
            uv_sleep(1);
        assert_int_equal(rc, 0);
    }
    for (int i = 0; i < 10000 && rt_keyed_resident(rt) < N; i++)
        uv_sleep(1);
    assert_int_equal(rt_keyed_resident(rt), N);
    uint64_t t0 = uv_hrtime();
    rt_stop(rt, 1000);
    rt_join(rt);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(atomic_load(&w->destroyed), N);
    assert_int_equal(rt_keyed_resident(rt), 0);
    assert_true(ms < 2000); /* generous for a loaded machine; about 0.1 s here */
    rt_free(rt);
    ens_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_thread_sends_keep_per_sender_order),
        cmocka_unit_test(test_suspended_actor_gets_nothing_until_resumed),
        cmocka_unit_test(test_timers_deliver_messages),
        cmocka_unit_test(test_stop_runs_hooks_and_grace_bounds_it),
        cmocka_unit_test(test_stop_reaps_many_actors),
        cmocka_unit_test(test_place_spreads_keys),
        cmocka_unit_test(test_keyed_actors_one_per_key_in_order),
        cmocka_unit_test(test_keyed_passivation_loses_nothing),
        cmocka_unit_test(test_keyed_refusals),
        cmocka_unit_test(test_keyed_stop_reaps_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
