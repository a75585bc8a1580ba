/* The actor runtime: scheduler threads, actors, mailboxes, timers.
 *
 * rt_new() makes N schedulers, each a thread running one libuv loop. An actor
 * lives on exactly one scheduler for its whole life, so its handler never runs
 * on two threads at once and its state needs no locks. Actors are addressed by
 * generation-checked ids (rt_actor_id), never by pointer: a message to an actor
 * that has stopped fails with ENS_ENOACTOR instead of touching freed memory.
 *
 * Messages start with struct rt_msg. Sending never blocks: the message is
 * linked into the target's intrusive MPSC mailbox and, only when the actor was
 * not already queued, the actor is put on its scheduler's run list; a scheduler
 * on another thread is woken with one uv_async_send, which libuv coalesces, so
 * a burst of messages costs one wake-up. An actor handles at most
 * RT_ACTOR_BATCH messages per turn and then yields to I/O.
 *
 * An actor that waits for I/O (Redis, Exchange) calls rt_actor_suspend(); its
 * mailbox keeps filling but no message is delivered until rt_actor_resume().
 * That keeps per-mailbox work strictly ordered without nesting callbacks. */
#ifndef ENS_RUNTIME_RT_H
#define ENS_RUNTIME_RT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef uint64_t rt_actor_id; /* generation << 32 | slot; 0 is never a valid id */

struct rt;
struct rt_sched;
struct rt_actor;
struct rt_timer;

/* Every message begins with this header. |free| releases the whole message;
 * NULL means ens_free(). The runtime owns the message from a successful send
 * until it hands it to the handler, which then owns it. */
struct rt_msg {
    struct rt_msg *_Atomic next; /* mailbox link, runtime-private */
    uint32_t type;
    void (*free)(struct rt_msg *m);
};

/* rt_msg_free releases |m| with its own free function; NULL is fine. */
void rt_msg_free(struct rt_msg *m);

/* rt_msg_new allocates a zeroed message of |size| bytes (>= sizeof(struct
 * rt_msg)) with the given type; freed with ens_free. */
void *rt_msg_new(size_t size, uint32_t type);

struct rt_actor_type {
    const char *name;
    /* receive handles one message and owns it afterwards. Runs on the actor's
     * scheduler thread. */
    void (*receive)(struct rt_actor *a, struct rt_msg *m);
    /* destroy frees the actor's state after it stopped and its mailbox was
     * drained (undelivered messages are freed by the runtime). May be NULL. */
    void (*destroy)(struct rt_actor *a);
};

/* Called on each scheduler thread: |start| before it processes anything,
 * |stop| when the runtime is asked to stop (close listeners, drain). The stop
 * hook calls rt_sched_stopped() once everything on that scheduler is done. */
struct rt_sched_hooks {
    void (*start)(struct rt_sched *s, void *ud);
    void (*stop)(struct rt_sched *s, void *ud);
    void *ud;
};

/* rt_new creates |nthreads| (1..RT_MAX_SCHEDS) schedulers; nothing runs yet.
 * Returns NULL on a bad count. */
struct rt *rt_new(int nthreads, const struct rt_sched_hooks *hooks);

/* rt_start starts the scheduler threads; 0 or a negative ENS_E* code. */
int rt_start(struct rt *rt);

/* rt_stop asks every scheduler to run its stop hook; thread-safe and
 * idempotent. A scheduler whose hook has not called rt_sched_stopped() within
 * |grace_ms| is stopped anyway. */
void rt_stop(struct rt *rt, uint64_t grace_ms);

/* rt_join waits for every scheduler thread to end. */
void rt_join(struct rt *rt);

/* rt_free releases the runtime after rt_join (or if never started). */
void rt_free(struct rt *rt);

int rt_nscheds(const struct rt *rt);
struct rt_sched *rt_sched_at(struct rt *rt, int index);

/* rt_sched_current returns the scheduler running on the calling thread, or
 * NULL on any other thread. */
struct rt_sched *rt_sched_current(void);

uv_loop_t *rt_sched_loop(struct rt_sched *s);
int rt_sched_index(const struct rt_sched *s);

/* Per-scheduler user context (the store connection, HTTP server...), set by
 * the start hook on that thread; readable from any thread (release/acquire),
 * so what it points to must be safe to share or only read through atomics. */
void rt_sched_set_data(struct rt_sched *s, void *data);
void *rt_sched_data(struct rt_sched *s);

/* rt_sched_stopped tells the runtime that this scheduler has finished its stop
 * work; its loop then ends. Call on the scheduler's thread. */
void rt_sched_stopped(struct rt_sched *s);

/* rt_place maps a placement key (a hash of the actor's id) to a scheduler index. */
int rt_place(const struct rt *rt, uint64_t key);

/* rt_spawn creates an actor of |type| with |state| (owned by the actor from now
 * on, released by type->destroy) on scheduler |sched_index|. Thread-safe.
 * 0 and *out set, or ENS_EINVAL. */
int rt_spawn(struct rt *rt, int sched_index, const struct rt_actor_type *type, void *state,
             rt_actor_id *out);

/* rt_send delivers |m| to actor |to|. Thread-safe, never blocks. Takes ownership
 * of |m| on success; on error (ENS_ENOACTOR: the actor has stopped; ENS_EFULL:
 * its mailbox holds RT_MBOX_MAX_DEPTH messages) the caller still owns it. */
int rt_send(struct rt *rt, rt_actor_id to, struct rt_msg *m);

/* Inside a handler (actor's thread only). */
void *rt_actor_state(struct rt_actor *a);
rt_actor_id rt_actor_self(const struct rt_actor *a);
struct rt_sched *rt_actor_sched(struct rt_actor *a);
uv_loop_t *rt_actor_loop(struct rt_actor *a);

/* rt_actor_suspend stops delivery until rt_actor_resume; both on the actor's
 * thread. Suspension nests: resume must be called as often as suspend. */
void rt_actor_suspend(struct rt_actor *a);
void rt_actor_resume(struct rt_actor *a);

/* rt_actor_stop unregisters the actor at once (later sends fail with
 * ENS_ENOACTOR); its remaining messages are freed and destroy runs from the
 * scheduler, never inside this call. On the actor's thread. */
void rt_actor_stop(struct rt_actor *a);

/* rt_actor_count returns the number of live actors (for metrics); thread-safe. */
size_t rt_actor_count(struct rt *rt);

/* Timers belong to an actor and deliver a message of |msg_type| (a bare
 * struct rt_msg) to it when they fire. They are closed with the actor. */
struct rt_timer *rt_timer_new(struct rt_actor *a, uint32_t msg_type);
void rt_timer_arm(struct rt_timer *t, uint64_t delay_ms);
void rt_timer_disarm(struct rt_timer *t);

/* rt_now_ms returns the scheduler loop's cached millisecond clock (uv_now). */
uint64_t rt_now_ms(struct rt_sched *s);

#define RT_MAX_SCHEDS 256

#endif
