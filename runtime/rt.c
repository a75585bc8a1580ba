/* Scheduler threads, the actor registry, mailboxes and timers. See rt.h. */
#include "runtime/rt.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/limits.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"

/* ---- Mailbox: Vyukov's intrusive MPSC queue with a stub node ---- */

struct mbox {
    struct rt_msg *_Atomic head; /* producers exchange here */
    struct rt_msg *tail;         /* the consumer's end */
    struct rt_msg stub;
    _Atomic size_t depth;
};

static void mbox_init(struct mbox *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
    atomic_store_explicit(&q->depth, 0, memory_order_relaxed);
}

static void mbox_push(struct mbox *q, struct rt_msg *m)
{
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    /* acq_rel: the release publishes m's contents to the consumer that will
     * read it through prev->next; the acquire orders us after the previous
     * producer's store. */
    struct rt_msg *prev = atomic_exchange_explicit(&q->head, m, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, m, memory_order_release);
}

/* mbox_pop returns the oldest message or NULL. NULL can also mean a producer
 * is between its exchange and its link store; the depth counter tells the
 * scheduler to come back. Consumer thread only. */
static struct rt_msg *mbox_pop(struct mbox *q)
{
    struct rt_msg *tail = q->tail;
    struct rt_msg *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (next == NULL)
            return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return NULL;
    mbox_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* ---- Types ---- */

struct rt_timer {
    uv_timer_t handle;
    struct rt_actor *actor;
    uint32_t msg_type;
    struct rt_timer *next;
};

#define RT_DEAD_TEARDOWN 2 /* rt_actor.dead: taken by sched_teardown */

struct rt_actor {
    const struct rt_actor_type *type;
    void *state;
    rt_actor_id id;
    struct rt_sched *sched;
    struct mbox mbox;
    _Atomic int queued;        /* on its scheduler's run list */
    struct rt_actor *run_next; /* run list link, under sched->lock */
    int suspended;             /* actor thread only */
    int dead;                  /* actor thread only; 1 stopped, RT_DEAD_TEARDOWN being reaped */
    struct rt_timer *timers;
    struct rt_actor *all_prev, *all_next; /* registry list, under rt->lock */
    /* Keyed actors only (key_len > 0): their scheduler's registry, that
     * thread only. The key is stored right after the struct. */
    struct rt_actor *key_next;
    uint64_t key_hash;
    uint8_t key_len;
    char *key;
};

/* A keyed message on its way to the scheduler that owns its key. */
struct rt_keyenv {
    struct rt_msg hdr; /* in the scheduler's inbox */
    struct rt_msg *msg;
    uint64_t hash;
    uint8_t len;
    char key[RT_MAX_KEY];
};

struct rt_sched {
    struct rt *rt;
    int index;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t grace;
    uv_mutex_t lock; /* guards the run list and |closed| */
    struct rt_actor *run_head, *run_tail;
    int closed;
    void *_Atomic data; /* written once by the start hook, read by any thread */
    int stopping;       /* sched thread only */
    int finished;       /* sched thread only */
    /* Keyed actors: the inbox any thread pushes onto, the budget it checks,
     * and the registry only this thread touches. */
    struct mbox inbox;
    _Atomic size_t keyed_pending; /* sent, not yet taken by an actor's receive */
    _Atomic size_t keyed_resident;
    struct rt_actor **keyed; /* buckets, chained through key_next */
    size_t nkeyed_buckets;
    /* The inbox's wake-up handle may be used only while accepting; teardown
     * clears it and waits for senders still inside rt_send_key. */
    _Atomic int accepting;
    _Atomic int senders;
};

struct rt_slot {
    struct rt_actor *actor;
    uint32_t gen;
    uint32_t next_free;
};

struct rt {
    int nscheds;
    struct rt_sched *scheds;
    struct rt_sched_hooks hooks;
    uv_mutex_t lock; /* guards the registry */
    struct rt_slot *slots;
    uint32_t nslots, cap_slots, free_head;
    size_t nactors;
    struct rt_actor *all; /* every live actor */
    _Atomic int stop_requested;
    _Atomic uint64_t grace_ms;
    int started;
    struct rt_keyed_class keyed_class; /* type NULL: none */
};

#define KEYED_INITIAL_BUCKETS 1024

#define SLOT_NONE  UINT32_MAX
#define RUN_ROUNDS 64

/* The scheduler that owns the calling thread (runtime-private global state). */
static _Thread_local struct rt_sched *tls_sched;

void rt_msg_free(struct rt_msg *m)
{
    if (m == NULL)
        return;
    if (m->free)
        m->free(m);
    else
        ens_free(m);
}

void *rt_msg_new(size_t size, uint32_t type)
{
    struct rt_msg *m = ens_calloc(1, size < sizeof(*m) ? sizeof(*m) : size);
    m->type = type;
    return m;
}

/* ---- Scheduling ---- */

/* actor_schedule puts |a| on its scheduler's run list unless it is already
 * there. Any thread; the caller guarantees |a| is alive (registry lock held, or
 * the actor's own thread). */
static void actor_schedule(struct rt_actor *a)
{
    if (atomic_exchange_explicit(&a->queued, 1, memory_order_acq_rel))
        return;
    struct rt_sched *s = a->sched;
    uv_mutex_lock(&s->lock);
    int was_empty = s->run_head == NULL;
    a->run_next = NULL;
    if (s->run_tail)
        s->run_tail->run_next = a;
    else
        s->run_head = a;
    s->run_tail = a;
    int closed = s->closed;
    uv_mutex_unlock(&s->lock);
    /* Only the empty-to-non-empty transition needs a wake-up; libuv coalesces
     * the rest anyway. */
    if (was_empty && !closed)
        uv_async_send(&s->wake);
}

static void timer_close_cb(uv_handle_t *h)
{
    ens_free(h->data);
}

static void registry_unlink(struct rt *rt, struct rt_actor *a)
{
    uint32_t slot = (uint32_t)(a->id & 0xffffffffu);
    if (rt->slots[slot].actor == a) {
        rt->slots[slot].actor = NULL;
        rt->slots[slot].gen++;
        rt->slots[slot].next_free = rt->free_head;
        rt->free_head = slot;
        rt->nactors--;
        if (a->all_prev)
            a->all_prev->all_next = a->all_next;
        else
            rt->all = a->all_next;
        if (a->all_next)
            a->all_next->all_prev = a->all_prev;
    }
}

/* actor_reap frees a stopped actor: its undelivered messages, its timers, its
 * state. Runs from the scheduler loop, never from inside the actor's handler. */
static void actor_reap(struct rt_actor *a)
{
    struct rt_msg *m;
    while ((m = mbox_pop(&a->mbox)) != NULL) {
        if (m == &a->mbox.stub)
            continue;
        if (a->key_len)
            atomic_fetch_sub_explicit(&a->sched->keyed_pending, 1, memory_order_relaxed);
        rt_msg_free(m);
    }
    while (a->timers) {
        struct rt_timer *t = a->timers;
        a->timers = t->next;
        t->handle.data = t;
        uv_close((uv_handle_t *)&t->handle, timer_close_cb);
    }
    if (a->type->destroy)
        a->type->destroy(a);
    ens_free(a);
}

static void inbox_drain(struct rt_sched *s);

static void sched_run(struct rt_sched *s)
{
    for (int round = 0; round < RUN_ROUNDS; round++) {
        inbox_drain(s);
        uv_mutex_lock(&s->lock);
        struct rt_actor *list = s->run_head;
        s->run_head = s->run_tail = NULL;
        uv_mutex_unlock(&s->lock);
        if (list == NULL)
            return;
        while (list) {
            struct rt_actor *a = list;
            list = a->run_next;
            atomic_store_explicit(&a->queued, 0, memory_order_release);
            if (a->dead) {
                actor_reap(a);
                continue;
            }
            if (a->suspended)
                continue; /* rt_actor_resume re-queues it */
            int n = 0;
            struct rt_msg *m;
            while (n < RT_ACTOR_BATCH && !a->suspended && !a->dead &&
                   (m = mbox_pop(&a->mbox)) != NULL) {
                atomic_fetch_sub_explicit(&a->mbox.depth, 1, memory_order_relaxed);
                if (a->key_len)
                    atomic_fetch_sub_explicit(&s->keyed_pending, 1, memory_order_relaxed);
                a->type->receive(a, m);
                n++;
            }
            if (a->dead ||
                (!a->suspended && atomic_load_explicit(&a->mbox.depth, memory_order_relaxed) > 0))
                actor_schedule(a);
        }
    }
    /* Still busy after RUN_ROUNDS: let the loop poll I/O, then come back. */
    uv_mutex_lock(&s->lock);
    int more =
        (s->run_head != NULL || atomic_load_explicit(&s->inbox.depth, memory_order_relaxed) > 0) &&
        !s->closed;
    uv_mutex_unlock(&s->lock);
    if (more)
        uv_async_send(&s->wake);
}

/* ---- Keyed actors: the scheduler's own registry ---- */

static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a; rt_place mixes it further */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)key[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static struct rt_actor **keyed_slot(struct rt_sched *s, uint64_t hash, const char *key, size_t len)
{
    struct rt_actor **pp = &s->keyed[hash & (s->nkeyed_buckets - 1)];
    while (*pp &&
           !((*pp)->key_hash == hash && (*pp)->key_len == len && memcmp((*pp)->key, key, len) == 0))
        pp = &(*pp)->key_next;
    return pp;
}

static void keyed_grow(struct rt_sched *s)
{
    size_t n = s->nkeyed_buckets * 2;
    struct rt_actor **b = ens_calloc(n, sizeof(*b));
    for (size_t i = 0; i < s->nkeyed_buckets; i++) {
        for (struct rt_actor *a = s->keyed[i], *next; a; a = next) {
            next = a->key_next;
            a->key_next = b[a->key_hash & (n - 1)];
            b[a->key_hash & (n - 1)] = a;
        }
    }
    ens_free(s->keyed);
    s->keyed = b;
    s->nkeyed_buckets = n;
}

static void keyed_unlink(struct rt_actor *a)
{
    struct rt_sched *s = a->sched;
    struct rt_actor **pp = keyed_slot(s, a->key_hash, a->key, a->key_len);
    if (*pp == a) {
        *pp = a->key_next;
        a->key_next = NULL;
        atomic_fetch_sub_explicit(&s->keyed_resident, 1, memory_order_relaxed);
    }
}

/* keyed_activate makes the resident actor of a key; this scheduler's thread. */
static struct rt_actor *keyed_activate(struct rt_sched *s, const struct rt_keyenv *e)
{
    const struct rt_keyed_class *kc = &s->rt->keyed_class;
    struct rt_actor *a = ens_calloc(1, sizeof(*a) + e->len + 1);
    a->key = (char *)(a + 1);
    memcpy(a->key, e->key, e->len);
    a->key_len = e->len;
    a->key_hash = e->hash;
    a->type = kc->type;
    a->sched = s;
    mbox_init(&a->mbox);
    a->state = kc->activate(s, e->key, e->len, kc->ud);
    size_t n = atomic_fetch_add_explicit(&s->keyed_resident, 1, memory_order_relaxed) + 1;
    struct rt_actor **slot = &s->keyed[e->hash & (s->nkeyed_buckets - 1)];
    a->key_next = *slot;
    *slot = a;
    if (n > s->nkeyed_buckets)
        keyed_grow(s);
    return a;
}

/* inbox_drain hands each keyed message to its resident actor, activating it
 * first when there is none. This thread alone resolves keys, so a message
 * never meets an actor that is leaving: passivation happened before (and the
 * key activates a successor) or cannot happen until this message is taken. */
static void inbox_drain(struct rt_sched *s)
{
    struct rt_msg *m;
    while ((m = mbox_pop(&s->inbox)) != NULL) {
        if (m == &s->inbox.stub)
            continue;
        atomic_fetch_sub_explicit(&s->inbox.depth, 1, memory_order_relaxed);
        struct rt_keyenv *e = (struct rt_keyenv *)m;
        struct rt_actor *a = *keyed_slot(s, e->hash, e->key, e->len);
        if (a == NULL)
            a = keyed_activate(s, e);
        atomic_fetch_add_explicit(&a->mbox.depth, 1, memory_order_relaxed);
        mbox_push(&a->mbox, e->msg);
        ens_free(e);
        actor_schedule(a);
    }
}

static void sched_grace_cb(uv_timer_t *t)
{
    struct rt_sched *s = t->data;
    RT_LOG_W("rt.stop", "scheduler=%d grace period over, stopping with work in flight", s->index);
    rt_sched_stopped(s);
}

static void sched_wake_cb(uv_async_t *h)
{
    struct rt_sched *s = h->data;
    if (!s->stopping && atomic_load_explicit(&s->rt->stop_requested, memory_order_acquire)) {
        s->stopping = 1;
        uv_timer_start(&s->grace, sched_grace_cb,
                       atomic_load_explicit(&s->rt->grace_ms, memory_order_relaxed), 0);
        if (s->rt->hooks.stop)
            s->rt->hooks.stop(s, s->rt->hooks.ud);
        else
            rt_sched_stopped(s);
    }
    if (!s->finished)
        sched_run(s);
}

void rt_sched_stopped(struct rt_sched *s)
{
    if (s->finished)
        return;
    s->finished = 1;
    uv_stop(&s->loop);
}

static void walk_close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* sched_teardown reaps the actors still living here and closes the loop. One
 * pass over the registry takes all of them at once (the registry is shared by
 * every scheduler, so taking one actor per pass would be quadratic); passes
 * repeat for actors that a destroy hook spawned here meanwhile. */
/* keyed_take_all empties this scheduler's keyed registry for teardown: the
 * messages still in its inbox are freed, and its actors are returned as a
 * list through all_next, marked RT_DEAD_TEARDOWN. */
static struct rt_actor *keyed_take_all(struct rt_sched *s)
{
    struct rt_msg *m;
    while ((m = mbox_pop(&s->inbox)) != NULL) {
        if (m == &s->inbox.stub)
            continue;
        struct rt_keyenv *e = (struct rt_keyenv *)m;
        atomic_fetch_sub_explicit(&s->keyed_pending, 1, memory_order_relaxed);
        rt_msg_free(e->msg);
        ens_free(e);
    }
    struct rt_actor *victims = NULL;
    for (size_t i = 0; i < s->nkeyed_buckets; i++) {
        while (s->keyed[i]) {
            struct rt_actor *a = s->keyed[i];
            s->keyed[i] = a->key_next;
            atomic_fetch_sub_explicit(&s->keyed_resident, 1, memory_order_relaxed);
            a->dead = RT_DEAD_TEARDOWN;
            a->all_next = victims;
            victims = a;
        }
    }
    return victims;
}

static void sched_teardown(struct rt_sched *s)
{
    struct rt *rt = s->rt;
    atomic_store_explicit(&s->accepting, 0, memory_order_seq_cst);
    while (atomic_load_explicit(&s->senders, memory_order_seq_cst) > 0)
        uv_sleep(0);
    for (;;) {
        struct rt_actor *victims = keyed_take_all(s);
        uv_mutex_lock(&rt->lock);
        for (struct rt_actor *a = rt->all, *next; a; a = next) {
            next = a->all_next;
            if (a->sched != s)
                continue;
            a->dead = RT_DEAD_TEARDOWN;
            registry_unlink(rt, a);
            a->all_next = victims; /* out of the registry: the link is ours now */
            victims = a;
        }
        uv_mutex_unlock(&rt->lock);
        if (victims == NULL)
            break;
        /* Keep them off the run list: they are reaped right here, and so are
         * actors that stopped earlier and were still waiting there to be. */
        uv_mutex_lock(&s->lock);
        struct rt_actor **pp = &s->run_head;
        s->run_tail = NULL;
        while (*pp) {
            struct rt_actor *a = *pp;
            if (a->dead) {
                *pp = a->run_next;
                if (a->dead != RT_DEAD_TEARDOWN) {
                    a->dead = RT_DEAD_TEARDOWN;
                    a->all_next = victims;
                    victims = a;
                }
            } else {
                s->run_tail = a;
                pp = &a->run_next;
            }
        }
        uv_mutex_unlock(&s->lock);
        while (victims) {
            struct rt_actor *v = victims;
            victims = v->all_next;
            actor_reap(v);
        }
    }
    uv_mutex_lock(&s->lock);
    s->closed = 1;
    uv_mutex_unlock(&s->lock);
    uv_walk(&s->loop, walk_close_cb, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&s->loop) != 0)
        RT_LOG_W("rt.stop", "scheduler=%d loop closed with busy handles", s->index);
}

static void sched_main(void *arg)
{
    struct rt_sched *s = arg;
    tls_sched = s;
    if (s->rt->hooks.start)
        s->rt->hooks.start(s, s->rt->hooks.ud);
    /* A stop requested before this thread was ready must not be lost. */
    uv_async_send(&s->wake);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    sched_teardown(s);
    tls_sched = NULL;
}

/* ---- Public API ---- */

struct rt *rt_new(int nthreads, const struct rt_sched_hooks *hooks)
{
    if (nthreads < 1 || nthreads > RT_MAX_SCHEDS)
        return NULL;
    struct rt *rt = ens_calloc(1, sizeof(*rt));
    rt->nscheds = nthreads;
    if (hooks)
        rt->hooks = *hooks;
    uv_mutex_init(&rt->lock);
    rt->free_head = SLOT_NONE;
    rt->grace_ms = 5000;
    rt->scheds = ens_calloc((size_t)nthreads, sizeof(*rt->scheds));
    for (int i = 0; i < nthreads; i++) {
        struct rt_sched *s = &rt->scheds[i];
        s->rt = rt;
        s->index = i;
        uv_loop_init(&s->loop);
        uv_mutex_init(&s->lock);
        uv_async_init(&s->loop, &s->wake, sched_wake_cb);
        s->wake.data = s;
        uv_timer_init(&s->loop, &s->grace);
        s->grace.data = s;
        mbox_init(&s->inbox);
        s->nkeyed_buckets = KEYED_INITIAL_BUCKETS;
        s->keyed = ens_calloc(s->nkeyed_buckets, sizeof(*s->keyed));
        atomic_store_explicit(&s->accepting, 1, memory_order_relaxed);
    }
    return rt;
}

int rt_start(struct rt *rt)
{
    for (int i = 0; i < rt->nscheds; i++) {
        int rc = uv_thread_create(&rt->scheds[i].thread, sched_main, &rt->scheds[i]);
        if (rc != 0) {
            /* The threads already running are stopped by the caller's rt_stop. */
            rt->started = i;
            return ENS_EFATAL;
        }
    }
    rt->started = rt->nscheds;
    return 0;
}

void rt_stop(struct rt *rt, uint64_t grace_ms)
{
    atomic_store_explicit(&rt->grace_ms, grace_ms, memory_order_relaxed);
    atomic_store_explicit(&rt->stop_requested, 1, memory_order_release);
    for (int i = 0; i < rt->started; i++) {
        struct rt_sched *s = &rt->scheds[i];
        uv_mutex_lock(&s->lock);
        if (!s->closed)
            uv_async_send(&s->wake);
        uv_mutex_unlock(&s->lock);
    }
}

void rt_join(struct rt *rt)
{
    for (int i = 0; i < rt->started; i++)
        uv_thread_join(&rt->scheds[i].thread);
    rt->started = 0;
}

void rt_free(struct rt *rt)
{
    if (rt == NULL)
        return;
    for (int i = 0; i < rt->nscheds; i++) {
        struct rt_sched *s = &rt->scheds[i];
        if (!s->closed) {
            /* never started: its handles still need closing */
            struct rt_msg *m;
            while ((m = mbox_pop(&s->inbox)) != NULL) {
                if (m == &s->inbox.stub)
                    continue;
                rt_msg_free(((struct rt_keyenv *)m)->msg);
                ens_free(m);
            }
            s->closed = 1;
            uv_walk(&s->loop, walk_close_cb, NULL);
            uv_run(&s->loop, UV_RUN_DEFAULT);
            uv_loop_close(&s->loop);
        }
        uv_mutex_destroy(&s->lock);
        ens_free(s->keyed);
    }
    uv_mutex_destroy(&rt->lock);
    ens_free(rt->slots);
    ens_free(rt->scheds);
    ens_free(rt);
}

int rt_nscheds(const struct rt *rt)
{
    return rt->nscheds;
}

struct rt_sched *rt_sched_at(struct rt *rt, int index)
{
    return index >= 0 && index < rt->nscheds ? &rt->scheds[index] : NULL;
}

struct rt_sched *rt_sched_current(void)
{
    return tls_sched;
}

uv_loop_t *rt_sched_loop(struct rt_sched *s)
{
    return &s->loop;
}

int rt_sched_index(const struct rt_sched *s)
{
    return s->index;
}

void rt_sched_set_data(struct rt_sched *s, void *data)
{
    atomic_store_explicit(&s->data, data, memory_order_release);
}

void *rt_sched_data(struct rt_sched *s)
{
    return atomic_load_explicit(&s->data, memory_order_acquire);
}

int rt_place(const struct rt *rt, uint64_t key)
{
    /* splitmix64 finaliser: ids that share prefixes still spread evenly */
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ULL;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebULL;
    key ^= key >> 31;
    return (int)(key % (uint64_t)rt->nscheds);
}

int rt_spawn(struct rt *rt, int sched_index, const struct rt_actor_type *type, void *state,
             rt_actor_id *out)
{
    if (sched_index < 0 || sched_index >= rt->nscheds || type == NULL || type->receive == NULL)
        return ENS_EINVAL;
    struct rt_actor *a = ens_calloc(1, sizeof(*a));
    a->type = type;
    a->state = state;
    a->sched = &rt->scheds[sched_index];
    mbox_init(&a->mbox);
    uv_mutex_lock(&rt->lock);
    uint32_t slot;
    if (rt->free_head != SLOT_NONE) {
        slot = rt->free_head;
        rt->free_head = rt->slots[slot].next_free;
    } else {
        if (rt->nslots == rt->cap_slots) {
            rt->cap_slots = rt->cap_slots ? rt->cap_slots * 2 : 1024;
            rt->slots = ens_realloc(rt->slots, rt->cap_slots * sizeof(*rt->slots));
        }
        slot = rt->nslots++;
        rt->slots[slot].gen = 1;
    }
    rt->slots[slot].actor = a;
    a->id = ((uint64_t)rt->slots[slot].gen << 32) | slot;
    a->all_next = rt->all;
    if (rt->all)
        rt->all->all_prev = a;
    rt->all = a;
    rt->nactors++;
    uv_mutex_unlock(&rt->lock);
    *out = a->id;
    return 0;
}

int rt_send(struct rt *rt, rt_actor_id to, struct rt_msg *m)
{
    uint32_t slot = (uint32_t)(to & 0xffffffffu);
    uint32_t gen = (uint32_t)(to >> 32);
    int rc = 0;
    uv_mutex_lock(&rt->lock);
    struct rt_actor *a =
        slot < rt->nslots && rt->slots[slot].gen == gen ? rt->slots[slot].actor : NULL;
    if (a == NULL) {
        rc = ENS_ENOACTOR;
    } else if (atomic_load_explicit(&a->mbox.depth, memory_order_relaxed) >= RT_MBOX_MAX_DEPTH) {
        rc = ENS_EFULL;
    } else {
        atomic_fetch_add_explicit(&a->mbox.depth, 1, memory_order_relaxed);
        mbox_push(&a->mbox, m);
        /* Still under the registry lock, so the actor cannot be reaped before
         * it is scheduled. */
        actor_schedule(a);
    }
    uv_mutex_unlock(&rt->lock);
    return rc;
}

void *rt_actor_state(struct rt_actor *a)
{
    return a->state;
}

rt_actor_id rt_actor_self(const struct rt_actor *a)
{
    return a->id;
}

struct rt_sched *rt_actor_sched(struct rt_actor *a)
{
    return a->sched;
}

uv_loop_t *rt_actor_loop(struct rt_actor *a)
{
    return &a->sched->loop;
}

void rt_actor_suspend(struct rt_actor *a)
{
    a->suspended++;
}

void rt_actor_resume(struct rt_actor *a)
{
    if (a->suspended > 0 && --a->suspended == 0 && !a->dead &&
        atomic_load_explicit(&a->mbox.depth, memory_order_relaxed) > 0)
        actor_schedule(a);
}

void rt_actor_stop(struct rt_actor *a)
{
    if (a->dead)
        return;
    a->dead = 1;
    if (a->key_len) {
        keyed_unlink(a);
    } else {
        struct rt *rt = a->sched->rt;
        uv_mutex_lock(&rt->lock);
        registry_unlink(rt, a);
        uv_mutex_unlock(&rt->lock);
    }
    actor_schedule(a);
}

int rt_actor_passivate(struct rt_actor *a)
{
    if (a->key_len == 0)
        return ENS_EINVAL;
    if (a->dead)
        return 0;
    if (a->suspended || atomic_load_explicit(&a->mbox.depth, memory_order_relaxed) > 0)
        return ENS_EAGAIN;
    rt_actor_stop(a);
    return 0;
}

void rt_keyed_set(struct rt *rt, const struct rt_keyed_class *cls)
{
    rt->keyed_class = *cls;
}

int rt_key_place(const struct rt *rt, const char *key, size_t len)
{
    return rt_place(rt, key_hash(key, len));
}

int rt_send_key(struct rt *rt, const char *key, size_t len, struct rt_msg *m)
{
    if (rt->keyed_class.type == NULL || key == NULL || len == 0 || len > RT_MAX_KEY)
        return ENS_EINVAL;
    uint64_t h = key_hash(key, len);
    struct rt_sched *s = &rt->scheds[rt_place(rt, h)];
    if (atomic_fetch_add_explicit(&s->keyed_pending, 1, memory_order_relaxed) >=
        RT_INBOX_MAX_DEPTH) {
        atomic_fetch_sub_explicit(&s->keyed_pending, 1, memory_order_relaxed);
        return ENS_EFULL;
    }
    atomic_fetch_add_explicit(&s->senders, 1, memory_order_seq_cst);
    if (!atomic_load_explicit(&s->accepting, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&s->senders, 1, memory_order_seq_cst);
        atomic_fetch_sub_explicit(&s->keyed_pending, 1, memory_order_relaxed);
        return ENS_ENOACTOR;
    }
    struct rt_keyenv *e = ens_malloc(sizeof(*e));
    e->msg = m;
    e->hash = h;
    e->len = (uint8_t)len;
    memcpy(e->key, key, len);
    atomic_fetch_add_explicit(&s->inbox.depth, 1, memory_order_relaxed);
    mbox_push(&s->inbox, &e->hdr);
    uv_async_send(&s->wake); /* libuv coalesces: one wake-up for a burst */
    atomic_fetch_sub_explicit(&s->senders, 1, memory_order_seq_cst);
    return 0;
}

size_t rt_keyed_resident(struct rt *rt)
{
    size_t n = 0;
    for (int i = 0; i < rt->nscheds; i++)
        n += atomic_load_explicit(&rt->scheds[i].keyed_resident, memory_order_relaxed);
    return n;
}

size_t rt_actor_count(struct rt *rt)
{
    uv_mutex_lock(&rt->lock);
    size_t n = rt->nactors;
    uv_mutex_unlock(&rt->lock);
    return n;
}

static void timer_fire_cb(uv_timer_t *h)
{
    struct rt_timer *t = h->data;
    struct rt_actor *a = t->actor;
    /* On the actor's own thread and the timer is closed before the actor is
     * reaped, so the actor is alive; skip the registry. */
    struct rt_msg *m = rt_msg_new(sizeof(struct rt_msg), t->msg_type);
    if (a->key_len) /* taken out of the budget like any keyed message */
        atomic_fetch_add_explicit(&a->sched->keyed_pending, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->mbox.depth, 1, memory_order_relaxed);
    mbox_push(&a->mbox, m);
    actor_schedule(a);
}

struct rt_timer *rt_timer_new(struct rt_actor *a, uint32_t msg_type)
{
    struct rt_timer *t = ens_calloc(1, sizeof(*t));
    uv_timer_init(&a->sched->loop, &t->handle);
    t->handle.data = t;
    t->actor = a;
    t->msg_type = msg_type;
    t->next = a->timers;
    a->timers = t;
    return t;
}

void rt_timer_arm(struct rt_timer *t, uint64_t delay_ms)
{
    uv_timer_start(&t->handle, timer_fire_cb, delay_ms, 0);
}

void rt_timer_disarm(struct rt_timer *t)
{
    uv_timer_stop(&t->handle);
}

uint64_t rt_now_ms(struct rt_sched *s)
{
    return uv_now(&s->loop);
}
