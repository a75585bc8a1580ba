/* Raising RLIMIT_NOFILE and deriving the connection cap from it.
 *
 * Raising the soft limit past 1,024 is safe here because nothing in the
 * process uses select(2) (libuv uses epoll, hiredis runs on libuv), which is
 * the only reason the soft default is that low. */
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "runtime/limits.h"
#include "runtime/err.h"
#include "runtime/fdlimit.h"
#include "runtime/log.h"
#include "runtime/net.h"

unsigned rt_fdlimit_conn_cap(uint64_t soft, int nscheds)
{
    uint64_t n = nscheds > 0 ? (uint64_t)nscheds : 1;
    uint64_t reserve = RT_FD_RESERVE_BASE + n * RT_FD_RESERVE_PER_SCHED;
    uint64_t cap = 0;
    if (soft > (uint64_t)1 << 40)
        soft = (uint64_t)1 << 40; /* "unlimited": keeps the product in range */
    if (soft > reserve)
        cap = (soft - reserve) * (100 - RT_FD_OUTBOUND_PCT) / 100 / n;
    if (cap < RT_FD_MIN_CONNS)
        cap = RT_FD_MIN_CONNS;
    if (cap > RT_FD_MAX_CONNS)
        cap = RT_FD_MAX_CONNS;
    return (unsigned)cap;
}

static uint64_t lim(rlim_t v)
{
    return v == RLIM_INFINITY ? UINT64_MAX : (uint64_t)v;
}

int rt_fdlimit_setup(int nscheds, struct rt_fdlimit *out)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return ENS_EIO;
    struct rt_fdlimit f = {lim(rl.rlim_cur), lim(rl.rlim_cur), lim(rl.rlim_max), 0};
    /* The kernel refuses more than fs.nr_open (2^20 by default) even under an
     * unlimited hard limit, and nobody needs more. */
    uint64_t want = f.hard < RT_FD_SOFT_MAX ? f.hard : RT_FD_SOFT_MAX;
    if (f.soft < want) {
        struct rlimit raised = {(rlim_t)want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            f.soft = want;
        else
            RT_LOG_W("fd.limit", "cannot raise the descriptor soft limit from %llu to %llu: %s",
                     (unsigned long long)f.soft, (unsigned long long)want, strerror(errno));
    }
    f.conn_cap = rt_fdlimit_conn_cap(f.soft, nscheds);
    rt_listen_set_conn_cap(f.conn_cap);
    RT_LOG_I("fd.limit",
             "descriptors soft=%llu (started with %llu) hard=%llu schedulers=%d "
             "connections_per_listener=%u",
             (unsigned long long)f.soft, (unsigned long long)f.soft_was, (unsigned long long)f.hard,
             nscheds, f.conn_cap);
    if (out)
        *out = f;
    return 0;
}
