/* Token-bucket rate limits keyed by arbitrary bytes (a source address, an API
 * token's hash, a mailbox id), shared by every scheduler thread.
 *
 * The table is bounded: a fixed number of buckets in sets of
 * RT_RATELIMIT_WAYS, placed by a keyed SipHash of the key (the key is random
 * per process, so a stranger cannot aim many keys at one set). A key that
 * finds no bucket takes the set's least useful one: a bucket that has refilled
 * completely (indistinguishable from a new one), else the one with the most
 * requests left (then the one touched longest ago), so a key being held back
 * is the last to go. Evicting a bucket that was still limiting forgets that
 * limit, so the
 * table must be sized well above the number of keys active within one refill
 * time (docs/configuration.md, ratelimit.entries).
 *
 * Thread-safe: the table is striped over RT_RATELIMIT_STRIPES mutexes; a take
 * holds one of them for a few dozen instructions. */
#ifndef ENS_RUNTIME_RATELIMIT_H
#define ENS_RUNTIME_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/span.h"

#define RT_RATELIMIT_WAYS      8  /* buckets per set */
#define RT_RATELIMIT_STRIPES   16 /* mutexes over the sets */
#define RT_RATELIMIT_MIN_SLOTS (RT_RATELIMIT_WAYS * RT_RATELIMIT_STRIPES)
#define RT_RATELIMIT_MAX_SLOTS (1u << 24)

struct rt_ratelimit;

/* rt_ratelimit_new returns a table of about |slots| buckets (rounded to whole
 * sets, RT_RATELIMIT_MIN_SLOTS..RT_RATELIMIT_MAX_SLOTS) that each allow |burst|
 * requests at once and |per_minute| more each minute. |per_minute| or |burst|
 * 0 makes a table that allows everything. Returns NULL on bad arguments. The
 * caller frees it with rt_ratelimit_free once no thread uses it. */
struct rt_ratelimit *rt_ratelimit_new(size_t slots, uint32_t per_minute, uint32_t burst);

void rt_ratelimit_free(struct rt_ratelimit *rl);

/* rt_ratelimit_take spends one request of |key|'s bucket at |now_ms| (any
 * monotonic millisecond clock, the same for every caller: uv_now of any loop).
 * Returns 0 when the request is allowed, else how many milliseconds until it
 * would be (at least 1): the request is then refused and nothing is spent.
 * A NULL table allows everything. Any thread. */
uint64_t rt_ratelimit_take(struct rt_ratelimit *rl, struct span key, uint64_t now_ms);

#endif
