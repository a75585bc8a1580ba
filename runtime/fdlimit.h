/* The process's descriptor budget: RLIMIT_NOFILE and what it allows.
 *
 * systemd and most shells start services with a soft limit of 1,024 and a
 * much higher hard limit; a server that keeps the soft one runs out at a
 * thousand clients. rt_fdlimit_setup raises the soft limit to the hard one
 * and derives the per-listener connection cap from the result, leaving
 * headroom for what is not an accepted connection (Redis, outgoing EWS, APNs
 * and FCM connections, files, libuv's own descriptors). The formula and its
 * constants are in runtime/limits.h; docs/operations.md explains them. */
#ifndef ENS_RUNTIME_FDLIMIT_H
#define ENS_RUNTIME_FDLIMIT_H

#include <stdint.h>

struct rt_fdlimit {
    uint64_t soft_was; /* the soft limit the process was started with */
    uint64_t soft;     /* after raising it */
    uint64_t hard;     /* UINT64_MAX for unlimited */
    unsigned conn_cap; /* accepted connections per listener */
};

/* rt_fdlimit_conn_cap computes the connection cap per listener for a soft
 * limit of |soft| descriptors shared by |nscheds| schedulers, each with one
 * public listener. Pure; any thread. */
unsigned rt_fdlimit_conn_cap(uint64_t soft, int nscheds);

/* rt_fdlimit_setup raises the soft limit to the hard one (at most
 * RT_FD_SOFT_MAX), sets the listeners' cap (rt_listen_set_conn_cap) and logs
 * the figures once. A refused raise is a warning, not an error: the lower
 * limit still gets a cap that fits it. Returns 0, or ENS_EIO when the limit
 * cannot even be read. |out| may be NULL. Call once, before the loop threads
 * start. */
int rt_fdlimit_setup(int nscheds, struct rt_fdlimit *out);

#endif
