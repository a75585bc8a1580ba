/* What a mailbox must keep in memory while its actor is passivated.
 *
 * A mailbox actor leaves memory seconds after its work is done; its state is
 * in Redis. Three things are not, and must outlive the actor: the callback
 * token of the active subscription (key material never stored, needed to
 * repair the subscription without the phone), the item ids last pushed (so a
 * replay after a watermark gap pushes nothing twice) and when devices were
 * last asked to check in (at most ACT_USER_CHECKIN_EVERY_MS apart), and the
 * health index's due time as last written (so a healthy subscription moves it
 * only every other status event). They live here, one bounded cache per
 * scheduler, about 200 bytes an entry (payload, key, links, bucket), least
 * recently used evicted first. Losing an entry (eviction, restart) only means
 * the devices are asked to check in where the actor would have repaired
 * alone.
 *
 * Threading: one cache per scheduler, used only on its thread. */
#ifndef ENS_ACTORS_MEMO_H
#define ENS_ACTORS_MEMO_H

#include <stddef.h>
#include <stdint.h>

#include "actors/ids.h"
#include "protocols/seal.h"

#define ACT_MEMO_RECENT   8 /* item-id hashes kept of the actor's last pushes */
#define ACT_MEMO_MIN_CAP  16
#define ACT_MEMO_KEY_SIZE ENS_ID_CHARS /* the mailbox id as the actor is keyed by it */

struct act_memo {
    struct seal_token token; /* secret: valid when has_token */
    uint8_t has_token;
    uint64_t recent[ACT_MEMO_RECENT]; /* newest last; 0 = empty */
    int64_t last_checkin_ms;          /* UNIX ms of the last check-in push; 0 = never */
    int64_t due_written_ms;           /* the health index's due time as last written */
};

struct act_memo_cache;

struct act_memo_stats {
    size_t entries, capacity;
    uint64_t hits, misses, evictions;
};

/* act_memo_cache_new makes a cache of at most |capacity| entries (at least
 * ACT_MEMO_MIN_CAP); its memory grows with use, never past the capacity. */
struct act_memo_cache *act_memo_cache_new(size_t capacity);

/* act_memo_cache_free wipes every entry and frees the cache; NULL is fine. */
void act_memo_cache_free(struct act_memo_cache *c);

/* act_memo_take moves the entry of |key| into |out| and forgets it (the
 * resident actor holds it now): 1, or 0 with |out| zeroed when there is none. */
int act_memo_take(struct act_memo_cache *c, const uint8_t key[ACT_MEMO_KEY_SIZE],
                  struct act_memo *out);

/* act_memo_put stores a copy of |in| for |key| as the most recently used
 * entry, replacing any, and evicting (and wiping) the least recently used one
 * when the cache is full. */
void act_memo_put(struct act_memo_cache *c, const uint8_t key[ACT_MEMO_KEY_SIZE],
                  const struct act_memo *in);

void act_memo_cache_stats(const struct act_memo_cache *c, struct act_memo_stats *out);

#endif
