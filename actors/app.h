/* The server's composition: what every actor and handler of one ensd process
 * shares. Built once by ensd before the schedulers start and read-only
 * afterwards, except for the members marked atomic. Passed explicitly (through
 * the runtime's hooks and per-scheduler data), never as a global. */
#ifndef ENS_ACTORS_APP_H
#define ENS_ACTORS_APP_H

#include <stdatomic.h>
#include <stdint.h>

#include "runtime/config.h"
#include "runtime/metrics.h"
#include "runtime/rt.h"

struct act_keyset;
struct act_memo_cache;
struct rt_tls_ctx;
struct store;
struct rt_listener;
struct rt_ratelimit;
struct h1_server;

#define ENS_KEY_BYTES 32

/* Exchange operations and outcomes, the labels of ens_ews_calls_total. */
enum ens_ews_op { ENS_EWS_SUBSCRIBE, ENS_EWS_GETITEM, ENS_EWS_GETFOLDER, ENS_EWS_OPS };
enum ens_ews_outcome {
    ENS_EWS_OK,
    ENS_EWS_AUTH_FAILED,
    ENS_EWS_UNREACHABLE,
    ENS_EWS_ERROR,
    ENS_EWS_OUTCOMES
};

#define ENS_SUB_STATES 7 /* enum store_sub_state */

#define ENS_REDIS_DROP_REASONS 4 /* enum store_drop_reason */

/* Push services and outcomes, the labels of ens_pushes_total. */
enum ens_push_provider { ENS_PUSH_APNS, ENS_PUSH_FCM, ENS_PUSH_PROVIDERS };
enum ens_push_outcome {
    ENS_PUSH_OUT_OK,
    ENS_PUSH_OUT_FAILED,
    ENS_PUSH_OUT_UNREGISTERED,
    ENS_PUSH_OUT_EXPIRED, /* transient failures until push.expiry_s */
    ENS_PUSH_OUTCOMES
};

/* What the device API rate-limits by (ratelimit.*), the labels of
 * ens_rate_limited_total. */
enum ens_limit { ENS_LIMIT_ADDRESS, ENS_LIMIT_TOKEN, ENS_LIMIT_MAILBOX, ENS_LIMITS };

/* Process-wide counters, any thread, relaxed: they are statistics. */
struct ens_counters {
    _Atomic uint64_t callbacks_ok, callbacks_unsubscribe, callbacks_bad;
    _Atomic uint64_t pushes[ENS_PUSH_PROVIDERS][ENS_PUSH_OUTCOMES];
    _Atomic uint64_t ews_calls[ENS_EWS_OPS][ENS_EWS_OUTCOMES];
    _Atomic uint64_t subscribes, checkins;
    _Atomic uint64_t rate_limited[ENS_LIMITS]; /* device API requests answered 429 */
    _Atomic uint64_t replays;                  /* enrollments refused as a replayed JWE */
    _Atomic uint64_t callbacks_unjudged;       /* callbacks answered 503: keys or Redis not there */
    _Atomic uint64_t hibernations;             /* mailbox actors passivated */
    _Atomic uint64_t health_due;               /* mailboxes the health index woke */
    _Atomic uint64_t callback_cred_reads;      /* callbacks that read and opened the sealed blob */
    _Atomic int64_t subs_by_state[ENS_SUB_STATES]; /* resident mailboxes only */
    struct rt_histogram callback_to_push;          /* Exchange callback in, APNs 200 out */
};

struct ens_app {
    const struct ens_config *cfg;
    struct rt *rt;
    struct rt_tls_ctx *server_tls; /* NULL: plain HTTP behind a TLS proxy */
    struct rt_tls_ctx *ews_tls;    /* client context toward Exchange */
    struct rt_tls_ctx *apns_tls;   /* client context toward APNs, ALPN h2 */
    char callback_base[2048];      /* http.public_url + "/v1/ews/" */
    char base_path[256];           /* http.base_path without trailing '/' */
    /* Derived from the master key at start (HKDF); secret, never logged. */
    uint8_t id_key[ENS_KEY_BYTES]; /* userId / deviceId derivation */
    uint8_t fp_key[ENS_KEY_BYTES]; /* 16-bit credential fingerprints */
    uint8_t master[ENS_KEY_BYTES]; /* wraps the server's keys in Redis */
    uint8_t admin_token_hash[32];  /* SHA-256 of the admin bearer token */
    /* The enrollment and sealing keys, published by the key loader once they
     * are in Redis; NULL until then (/ready answers 503). */
    struct act_keyset *_Atomic keys;
    rt_actor_id push_actor;                  /* lives on scheduler 0 */
    struct rt_ratelimit *limits[ENS_LIMITS]; /* subscribe and checkin; shared by all threads */
    struct ens_counters counters;
    uv_async_t *main_wake; /* wakes the main thread to stop (a fatal start error) */
    _Atomic int exit_code;
};

/* Per-scheduler context, owned by that scheduler's thread. */
struct ens_sched_ctx {
    struct ens_app *app;
    struct rt_sched *sched;
    struct store *store; /* this loop's Redis connection */
    struct rt_listener *public_listener;
    struct rt_listener *admin_listener;
    struct h1_server *public_http;
    struct h1_server *admin_http;
    rt_actor_id responder; /* answers HTTP requests that landed here */
    /* The public listener opens only once keys and Redis are there (ensd.c). */
    uv_timer_t open_timer;
    uint64_t open_since_ms, open_warn_ms;
    int stopping;
    /* This loop's Redis statistics, copied every second so that the metrics
     * page (on scheduler 0) never reads another thread's store. */
    uv_timer_t stats_timer;
    _Atomic uint64_t redis_round_trips, redis_errors, redis_timeouts;
    _Atomic uint64_t redis_drops[ENS_REDIS_DROP_REASONS]; /* by enum store_drop_reason */
    /* store_ready of this loop's connection, published by its watcher the
     * moment it changes, so /ready on any thread sees every scheduler. */
    _Atomic int redis_ready;
    /* What passivated mailboxes keep in memory (actors/memo.h), and the
     * health poller (actors/health.h): this thread only. */
    struct act_memo_cache *memo;
    uv_timer_t health_timer;
    int health_inflight;
    _Atomic size_t memo_entries; /* copied by stats_tick for the metrics page */
    _Atomic uint64_t memo_evictions;
};

/* ens_app_redis_down returns the index of the first scheduler whose Redis
 * connection is not ready (or that has not started), or -1 when every one is.
 * Any thread; relaxed loads: each flag stands alone and publishes nothing. */
static inline int ens_app_redis_down(struct ens_app *app)
{
    for (int i = 0; i < rt_nscheds(app->rt); i++) {
        struct ens_sched_ctx *c = rt_sched_data(rt_sched_at(app->rt, i));
        if (c == NULL || !atomic_load_explicit(&c->redis_ready, memory_order_relaxed))
            return i;
    }
    return -1;
}

/* ens_sched_ctx_current returns the calling scheduler's context. */
static inline struct ens_sched_ctx *ens_sched_ctx_current(void)
{
    struct rt_sched *s = rt_sched_current();
    return s ? (struct ens_sched_ctx *)rt_sched_data(s) : NULL;
}

/* ens_app_keys returns the published key set or NULL (acquire: the set was
 * fully built before it was published). */
static inline struct act_keyset *ens_app_keys(struct ens_app *app)
{
    return atomic_load_explicit(&app->keys, memory_order_acquire);
}

/* Deadline for one Redis command issued from a handler. */
#define ENS_STORE_DEADLINE_MS 2000

#endif
