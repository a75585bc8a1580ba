/* The health poller: one per scheduler, it wakes the mailboxes whose
 * subscription is due a look (persistence/store_health.h).
 *
 * Every ACT_HEALTH_POLL_MS it takes, from each shard of the health index this
 * scheduler owns (shard % schedulers == its index), the mailboxes due by now,
 * leases them for ACT_HEALTH_LEASE_MS, and sends each an ACT_MSG_HEALTH_DUE.
 * The mailbox judges for itself (a status event may have come meanwhile),
 * repairs the subscription or asks its devices to check in, and writes its
 * next due time. No per-mailbox timer runs while a mailbox sleeps, and a
 * restart loses no deadline: they are in Redis.
 *
 * Threading: the scheduler's thread. */
#ifndef ENS_ACTORS_HEALTH_H
#define ENS_ACTORS_HEALTH_H

#include "actors/app.h"

#define ACT_HEALTH_POLL_MS  1000
#define ACT_HEALTH_LEASE_MS (60 * 1000) /* a woken mailbox that writes nothing comes back then */
#define ACT_HEALTH_BATCH    256         /* mailboxes taken from one shard per poll */

/* act_health_start starts the poller of |ctx|'s scheduler (its store must
 * exist). */
void act_health_start(struct ens_sched_ctx *ctx);

/* act_health_stop stops it; takes already sent are answered into the void. */
void act_health_stop(struct ens_sched_ctx *ctx);

#endif
