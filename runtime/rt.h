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

/* rt_actor_count returns the number of live actors addressed by id (for
 * metrics); thread-safe. Keyed actors are counted by rt_keyed_resident. */
size_t rt_actor_count(struct rt *rt);

/* ---- Keyed actors: addressed by a key, resident only while they have work ----
 *
 * A keyed actor (one per mailbox) is addressed by a byte key, never by id. A
 * key is placed on one scheduler by a hash (rt_key_place), and only that
 * scheduler's thread looks the actor up in its own registry, activates it when
 * it is not resident, and passivates it: the send path takes no lock, only an
 * atomic budget check and a lock-free push onto the owning scheduler's inbox.
 * Because activation and passivation happen on the one thread that also takes
 * the key's messages, a message never finds an actor half gone: it reaches the
 * resident actor, or the successor activated for it. */

#define RT_MAX_KEY 64 /* bytes in a key */

struct rt_keyed_class {
    const struct rt_actor_type *type;
    /* activate returns the state of a new actor for |key| (|len| bytes, not
     * NUL-terminated), on the owning scheduler's thread, when a message finds
     * no resident actor; the actor's first message follows at once. */
    void *(*activate)(struct rt_sched *s, const char *key, size_t len, void *ud);
    void *ud;
};

/* rt_keyed_set installs the runtime's keyed class (|cls| copied); before
 * rt_start, once. */
void rt_keyed_set(struct rt *rt, const struct rt_keyed_class *cls);

/* rt_key_place returns the index of the scheduler that owns |key|. */
int rt_key_place(const struct rt *rt, const char *key, size_t len);

/* rt_send_key delivers |m| to the actor of |key|, activating it on its
 * scheduler when it is not resident. Thread-safe, lock-free, never blocks.
 * Takes ownership of |m| on success. Errors, with |m| still the caller's:
 * ENS_EINVAL (no keyed class, or a key of 0 or more than RT_MAX_KEY bytes),
 * ENS_EFULL (the owning scheduler holds RT_INBOX_MAX_DEPTH messages not yet
 * taken by their actors), ENS_ENOACTOR (the runtime is stopping). */
int rt_send_key(struct rt *rt, const char *key, size_t len, struct rt_msg *m);

/* rt_actor_passivate takes a keyed actor out of memory: on its thread, from
 * its handler, when it has no message waiting and is not suspended, it leaves
 * its scheduler's registry (the next message for its key activates a
 * successor, which reloads whatever it needs) and is reaped as after
 * rt_actor_stop; 0. Otherwise ENS_EAGAIN and nothing changes: the waiting
 * messages come first. ENS_EINVAL for an actor addressed by id. */
int rt_actor_passivate(struct rt_actor *a);

/* rt_keyed_resident returns the number of keyed actors in memory; any thread. */
size_t rt_keyed_resident(struct rt *rt);

/* Timers belong to an actor and deliver a message of |msg_type| (a bare
 * struct rt_msg) to it when they fire. They are closed with the actor. */
struct rt_timer *rt_timer_new(struct rt_actor *a, uint32_t msg_type);
void rt_timer_arm(struct rt_timer *t, uint64_t delay_ms);
void rt_timer_disarm(struct rt_timer *t);

/* rt_now_ms returns the scheduler loop's cached millisecond clock (uv_now). */
uint64_t rt_now_ms(struct rt_sched *s);

#define RT_MAX_SCHEDS 256

#endif
