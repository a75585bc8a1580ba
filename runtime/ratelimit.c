/* Token buckets in a bounded, striped, set-associative table. See ratelimit.h.
 *
 * Levels are kept in units of 1/60000 request, so that a bucket refills by
 * exactly |per_minute| units each millisecond and no division is needed on
 * the common path. */
#include "runtime/ratelimit.h"

#include <openssl/rand.h>
#include <openssl/siphash.h>
#include <pthread.h>
#include <string.h>

#include "runtime/alloc.h"

#define UNITS_PER_REQUEST 60000u /* ms in a minute */

struct bucket {
    uint64_t key; /* SipHash of the key; 0: free */
    uint64_t level;
    uint64_t at_ms;
};

struct rt_ratelimit {
    uint64_t sip_key[2];
    uint64_t per_minute;
    uint64_t capacity; /* burst, in units */
    size_t nsets;
    struct bucket *buckets; /* nsets * RT_RATELIMIT_WAYS */
    pthread_mutex_t stripes[RT_RATELIMIT_STRIPES];
};

struct rt_ratelimit *rt_ratelimit_new(size_t slots, uint32_t per_minute, uint32_t burst)
{
    if (slots < RT_RATELIMIT_MIN_SLOTS || slots > RT_RATELIMIT_MAX_SLOTS)
        return NULL;
    struct rt_ratelimit *rl = ens_calloc(1, sizeof(*rl));
    RAND_bytes((uint8_t *)rl->sip_key, sizeof(rl->sip_key));
    rl->per_minute = per_minute;
    rl->capacity = (uint64_t)burst * UNITS_PER_REQUEST;
    rl->nsets = slots / RT_RATELIMIT_WAYS;
    if (per_minute && burst)
        rl->buckets = ens_calloc(rl->nsets * RT_RATELIMIT_WAYS, sizeof(*rl->buckets));
    for (size_t i = 0; i < RT_RATELIMIT_STRIPES; i++)
        pthread_mutex_init(&rl->stripes[i], NULL);
    return rl;
}

void rt_ratelimit_free(struct rt_ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < RT_RATELIMIT_STRIPES; i++)
        pthread_mutex_destroy(&rl->stripes[i]);
    ens_free(rl->buckets);
    ens_free(rl);
}

/* refill brings |b| up to |now_ms|. Clocks of different loops may disagree
 * by a millisecond or two: time never runs backwards for a bucket. */
static void refill(const struct rt_ratelimit *rl, struct bucket *b, uint64_t now_ms)
{
    if (now_ms <= b->at_ms)
        return;
    uint64_t add = (now_ms - b->at_ms) * rl->per_minute;
    b->level = add >= rl->capacity - b->level ? rl->capacity : b->level + add;
    b->at_ms = now_ms;
}

/* slot_for finds |key|'s bucket in its set, or takes the least useful one. */
static struct bucket *slot_for(struct rt_ratelimit *rl, struct bucket *set, uint64_t key,
                               uint64_t now_ms)
{
    struct bucket *victim = NULL;
    for (size_t i = 0; i < RT_RATELIMIT_WAYS; i++) {
        struct bucket *b = &set[i];
        if (b->key == key) {
            refill(rl, b, now_ms);
            return b;
        }
    }
    for (size_t i = 0; i < RT_RATELIMIT_WAYS && victim == NULL; i++) {
        struct bucket *b = &set[i];
        if (b->key == 0)
            victim = b;
        else if (refill(rl, b, now_ms), b->level == rl->capacity)
            victim = b; /* as good as new: forgetting it changes nothing */
    }
    if (victim == NULL) {
        /* Forgetting a bucket refills it: forget the one with the most left,
         * so a key that is being held back is the last to go. */
        victim = &set[0];
        for (size_t i = 1; i < RT_RATELIMIT_WAYS; i++) {
            if (set[i].level > victim->level ||
                (set[i].level == victim->level && set[i].at_ms < victim->at_ms))
                victim = &set[i];
        }
    }
    victim->key = key;
    victim->level = rl->capacity;
    victim->at_ms = now_ms;
    return victim;
}

uint64_t rt_ratelimit_take(struct rt_ratelimit *rl, struct span key, uint64_t now_ms)
{
    if (rl == NULL || rl->buckets == NULL)
        return 0;
    uint64_t h = SIPHASH_24(rl->sip_key, key.p, key.len);
    if (h == 0)
        h = 1;
    size_t set = (size_t)((h >> 17) % rl->nsets);
    pthread_mutex_t *mu = &rl->stripes[set % RT_RATELIMIT_STRIPES];
    pthread_mutex_lock(mu);
    struct bucket *b = slot_for(rl, &rl->buckets[set * RT_RATELIMIT_WAYS], h, now_ms);
    uint64_t wait = 0;
    if (b->level >= UNITS_PER_REQUEST) {
        b->level -= UNITS_PER_REQUEST;
    } else {
        uint64_t missing = UNITS_PER_REQUEST - b->level;
        wait = (missing + rl->per_minute - 1) / rl->per_minute;
        if (wait == 0)
            wait = 1;
    }
    pthread_mutex_unlock(mu);
    return wait;
}
