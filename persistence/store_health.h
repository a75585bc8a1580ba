/* The health index: when each mailbox's subscription next needs a look.
 *
 * A mailbox with an active subscription expects a status event from Exchange
 * every StatusFrequency minutes; if none comes it must repair the
 * subscription or ask its devices to check in. That deadline lives here, in
 * Redis, not in a timer of the mailbox actor: the actor leaves memory seconds
 * after its work, and a restart loses no deadline. One sorted set per shard,
 * member the mailbox id, score the due time in UNIX milliseconds:
 *   ens:health:{h<NN>}   NN = 00 .. STORE_HEALTH_SHARDS-1
 * Each shard is its own hash slot, so a Redis Cluster spreads them; every
 * command here touches one key. Writes are idempotent (ZADD sets, ZREM
 * forgets), so a write that timed out and may have happened is simply
 * written again by the next event.
 *
 * Threading: like every store call, on the store's loop. */
#ifndef ENS_PERSISTENCE_STORE_HEALTH_H
#define ENS_PERSISTENCE_STORE_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "persistence/store_redis.h"
#include "persistence/store_user.h"

#define STORE_HEALTH_SHARDS   16
#define STORE_HEALTH_MAX_TAKE 512 /* mailboxes one take returns at most */

/* store_health_shard returns the shard of mailbox |uid| (0..SHARDS-1). */
int store_health_shard(const char *uid);

/* store_health_set records that |uid| is due at |due_ms| (UNIX ms), replacing
 * any earlier due time. 0 (|cb| runs once) or a negative code. */
int store_health_set(struct store *s, const char *uid, int64_t due_ms, uint64_t deadline_ms,
                     store_done_cb cb, void *ud);

/* store_health_del forgets |uid| (its subscription ended). */
int store_health_del(struct store *s, const char *uid, uint64_t deadline_ms, store_done_cb cb,
                     void *ud);

/* Mailboxes a take returned; |uids| and its strings are borrowed for the call. */
typedef void (*store_health_cb)(int err, const char *const *uids, size_t n, void *ud);

/* store_health_take returns up to |max| (<= STORE_HEALTH_MAX_TAKE) mailboxes of
 * |shard| due at or before |now_ms|, and in the same script moves each one's
 * due time to |now_ms| + |lease_ms|: the mailbox that is woken writes its real
 * next due time, and one that could not be woken comes back after the lease
 * instead of at every take. */
int store_health_take(struct store *s, int shard, int64_t now_ms, int64_t lease_ms, size_t max,
                      uint64_t deadline_ms, store_health_cb cb, void *ud);

/* store_health_due_get reads |uid|'s due time into *due_ms (0 when it has
 * none). The tests read it; the admin inspection shows the same time
 * computed from the record (expiresAt). */
typedef void (*store_health_due_cb)(int err, int64_t due_ms, void *ud);
int store_health_due_get(struct store *s, const char *uid, uint64_t deadline_ms,
                         store_health_due_cb cb, void *ud);

#endif
