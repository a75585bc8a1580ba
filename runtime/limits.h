/* The runtime's resource limits, in one place (protocols/limits.h has the
 * protocols' and includes this). Sizes are bytes. */
#ifndef ENS_RUNTIME_LIMITS_H
#define ENS_RUNTIME_LIMITS_H

/* Runtime */
#define RT_MBOX_MAX_DEPTH 100000
#define RT_INBOX_MAX_DEPTH                                                                         \
    200000 /* keyed messages a scheduler holds before their actors take them */
#define RT_ACTOR_BATCH 100

/* Descriptors and accepting (runtime/fdlimit.c, runtime/listener.c). The
 * connection cap per listener is
 *   (RLIMIT_NOFILE - RT_FD_RESERVE_BASE - schedulers * RT_FD_RESERVE_PER_SCHED)
 *     * (100 - RT_FD_OUTBOUND_PCT) / 100 / schedulers
 * clamped to [RT_FD_MIN_CONNS, RT_FD_MAX_CONNS]; docs/operations.md explains it. */
#define RT_FD_SOFT_MAX           (1u << 20) /* raise the soft limit at most this far */
#define RT_FD_RESERVE_BASE       64 /* stdio, config and key files, main loop, DNS, thread pool */
#define RT_FD_RESERVE_PER_SCHED  16 /* epoll, wake-ups, libuv's spare, Redis, APNs, FCM */
#define RT_FD_OUTBOUND_PCT       25 /* of the rest, kept for outgoing EWS calls */
#define RT_FD_MIN_CONNS          16
#define RT_FD_MAX_CONNS          10000 /* per listener per scheduler; also h1_server's cap */
#define RT_ACCEPT_BATCH          64    /* accepts per readiness before other handles run */
#define RT_ACCEPT_BACKOFF_MIN_MS 10    /* first retry after EMFILE/ENFILE */
#define RT_ACCEPT_BACKOFF_MAX_MS 1000  /* doubling stops here */

/* Config */
#define CONFIG_MAX_FILE_BYTES (256 * 1024)

#endif
