/* The Redis connection: one async hiredis client on one libuv loop.
 *
 * A store belongs to the loop it was created on: every function here must be
 * called on that loop's thread, and every callback runs there. The store
 * connects by itself, SELECTs the configured database and reconnects with
 * jittered backoff after any disconnect; while it is down commands fail at once
 * with ENS_ESTORE rather than queueing, so callers never wait on a dead Redis.
 *
 * A connection counts as dead, is torn down and reconnected, when hiredis sees
 * it close, when libuv reports a poll error on its socket (a reset), or after
 * STORE_DEAD_TIMEOUTS command deadlines in a row pass with no reply from Redis
 * in between (a paused server, a peer gone without a reset). An idle
 * connection is probed with PING so that a silent one is found without
 * traffic; those probes are not counted in store_stats' commands.
 *
 * Async contract (house rule 5): if a call returns an error its callback never
 * runs; if it returns 0 the callback runs exactly once, later, never from inside
 * the call: with the reply, ENS_ESTORE (Redis error reply or lost connection),
 * ENS_ETIMEDOUT (the deadline passed first; the late reply is dropped) or
 * ENS_ECANCELED (store_free). */
#ifndef ENS_PERSISTENCE_STORE_REDIS_H
#define ENS_PERSISTENCE_STORE_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Limits of this module. They belong in protocols/limits.h, which is not ours
 * to edit; kept here under their final names until the lead moves them. */
#define STORE_MAX_PENDING        10000 /* commands sent and not yet answered */
#define STORE_BACKOFF_MIN_MS     100
#define STORE_BACKOFF_MAX_MS     5000
#define STORE_CONNECT_TIMEOUT_MS 3000 /* connect + SELECT must finish within this */
#define STORE_MAX_URL            1024
#define STORE_TX_MAX_CMDS        256          /* commands in one MULTI/EXEC */
#define STORE_TX_MAX_BYTES       (512 * 1024) /* encoded size of one MULTI/EXEC */
#define STORE_DEAD_TIMEOUTS      3            /* deadlines in a row, no reply between: dead */
#define STORE_PING_INTERVAL_MS   500          /* silence after which an idle link is probed */
#define STORE_PING_TIMEOUT_MS    1000         /* deadline of one probe */

struct redisReply;
struct store;
struct store_tx;

/* store_reply_cb receives the outcome of one command or transaction. |reply| is
 * borrowed, valid only during the call, and NULL whenever |err| is not 0. The
 * callback may issue new commands or call store_free. */
typedef void (*store_reply_cb)(int err, struct redisReply *reply, void *ud);

/* Why a connection was torn down, the labels of ens_redis_disconnects_total. */
enum store_drop_reason {
    STORE_DROP_CLOSED,     /* Redis closed it, or a read or write failed */
    STORE_DROP_POLL_ERROR, /* the socket reported an error (reset) */
    STORE_DROP_TIMEOUTS,   /* STORE_DEAD_TIMEOUTS deadlines in a row */
    STORE_DROP_CONNECT,    /* an attempt failed: refused, timed out, SELECT refused */
    STORE_DROP_REASONS
};

struct store_stats {
    uint64_t round_trips;               /* commands/transactions answered by Redis */
    uint64_t errors;                    /* error replies and commands lost with the connection */
    uint64_t timeouts;                  /* deadlines that passed before the reply */
    uint64_t connects;                  /* successful (re)connections */
    uint64_t drops[STORE_DROP_REASONS]; /* connections and attempts torn down */
    uint32_t pending;                   /* commands in flight right now */
    int ready;
};

/* store_drop_reason_name returns a short lower-case label ("poll_error"). */
const char *store_drop_reason_name(enum store_drop_reason r);

/* store_ready_cb is told each change of store_ready, with the new value. It
 * runs on the loop thread from inside store and hiredis callbacks, so it must
 * not call into the store: publish a flag for other threads, no more. */
typedef void (*store_ready_cb)(int ready, void *ud);

/* store_new creates a store on |loop| for |url| and starts connecting at once.
 * URLs: redis://host[:port][/db] (port 6379, db 0 by default; [v6] in brackets)
 * and unix:///path/to/redis.sock[?db=N]. Host names are resolved on the libuv
 * thread pool, never on the loop. Returns NULL on a malformed URL, with a
 * message in |err| (|errlen| bytes, may be 0). A Redis that is not up yet is
 * not an error: the store keeps trying and store_ready says when it is usable.
 * The caller owns the store and releases it with store_free. Loop thread only. */
struct store *store_new(uv_loop_t *loop, const char *url, char *err, size_t errlen);

/* store_ready returns 1 while connected with the database selected, else 0. */
int store_ready(const struct store *s);

/* store_watch_ready makes |cb| hear every later change of store_ready (one
 * watcher per store; NULL removes it). The last call it gets is 0, from
 * store_free. Loop thread only. */
void store_watch_ready(struct store *s, store_ready_cb cb, void *ud);

/* store_free cancels every pending command (callbacks get ENS_ECANCELED before
 * this returns) and closes the connection. Memory is released from a later
 * close callback, after hiredis has let go, so calling it from inside a store
 * callback is safe. The loop must run afterwards for the handles to close.
 * NULL is accepted. */
void store_free(struct store *s);

/* store_cmdargv sends one command (binary-safe arguments) with an absolute
 * deadline in uv_now() milliseconds. Returns 0 (the callback will run once),
 * ENS_ESTORE when not connected, ENS_EFULL past STORE_MAX_PENDING,
 * ENS_ETIMEDOUT when |deadline_ms| has already passed, ENS_EINVAL on bad
 * arguments. An error reply from Redis reaches the callback as ENS_ESTORE. */
int store_cmdargv(struct store *s, int argc, const char **argv, const size_t *argvlen,
                  uint64_t deadline_ms, store_reply_cb cb, void *ud);

/* store_stats copies the counters into |out|. */
void store_stats(const struct store *s, struct store_stats *out);

/* store_tx_new returns an empty MULTI/EXEC transaction (never NULL). */
struct store_tx *store_tx_new(void);

/* store_tx_add appends one command (arguments are copied). Returns 0,
 * ENS_ETOOBIG past STORE_TX_MAX_CMDS or STORE_TX_MAX_BYTES (the transaction is
 * left as it was), ENS_EINVAL when argc < 1. */
int store_tx_add(struct store_tx *tx, int argc, const char *const *argv, const size_t *argvlen);

/* store_args collects the arguments of one command. Byte arguments are
 * borrowed (they must outlive store_tx_add / store_cmdargv); numbers are
 * formatted into the struct itself. Overflowing STORE_ARGS_MAX is remembered
 * and reported as ENS_ETOOBIG by store_tx_add_args. Embed it; no cleanup. */
#define STORE_ARGS_MAX 80
struct store_args {
    int n;
    int overflow;
    const char *v[STORE_ARGS_MAX];
    size_t l[STORE_ARGS_MAX];
    char num[STORE_ARGS_MAX][24];
};

/* store_args_init empties |a|. */
void store_args_init(struct store_args *a);

/* store_args_add appends |len| bytes at |p| (borrowed). */
void store_args_add(struct store_args *a, const void *p, size_t len);

/* store_args_str appends the NUL-terminated |str| (borrowed). */
void store_args_str(struct store_args *a, const char *str);

/* store_args_i64 / store_args_u64 append a number in decimal. */
void store_args_i64(struct store_args *a, int64_t v);
void store_args_u64(struct store_args *a, uint64_t v);

/* store_tx_add_args is store_tx_add over |a|: 0, ENS_ETOOBIG or ENS_EINVAL. */
int store_tx_add_args(struct store_tx *tx, const struct store_args *a);

/* store_tx_count returns the number of commands added so far. */
int store_tx_count(const struct store_tx *tx);

/* store_tx_free releases a transaction that was never executed; NULL is fine. */
void store_tx_free(struct store_tx *tx);

/* store_tx_exec sends MULTI, the commands and EXEC back to back; Redis applies
 * them all or none. Takes ownership of |tx| in every case. On success the
 * callback's reply is the EXEC array, one element per command; an element may
 * itself be an error reply (a runtime error inside EXEC), which callers check
 * with store_reply_array_ok. Returns and callbacks as store_cmdargv. */
int store_tx_exec(struct store *s, struct store_tx *tx, uint64_t deadline_ms, store_reply_cb cb,
                  void *ud);

/* store_reply_array_ok returns 1 if |r| is an array of |n| elements none of
 * which is an error reply, else 0. */
int store_reply_array_ok(const struct redisReply *r, size_t n);

#endif
