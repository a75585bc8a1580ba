/* The health poller; see health.h. */
#include "actors/health.h"

#include "actors/msgs.h"
#include "actors/user.h"
#include "persistence/store_health.h"
#include "runtime/alloc.h"
#include "runtime/clock.h"
#include "runtime/err.h"
#include "runtime/log.h"

static void on_taken(int err, const char *const *uids, size_t n, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    ctx->health_inflight--;
    if (err) {
        /* Redis is down or slow: the next poll tries again, nothing is lost. */
        RT_LOG_D("health.take", "err=%s", ens_err_name(err));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct rt_msg *m = rt_msg_new(sizeof(*m), ACT_MSG_HEALTH_DUE);
        if (act_user_send(ctx->app, uids[i], m) != 0) {
            rt_msg_free(m); /* leased: it comes back after ACT_HEALTH_LEASE_MS */
            continue;
        }
        atomic_fetch_add_explicit(&ctx->app->counters.health_due, 1, memory_order_relaxed);
    }
}

static void health_tick(uv_timer_t *t)
{
    struct ens_sched_ctx *ctx = t->data;
    if (ctx->stopping || ctx->store == NULL || !store_ready(ctx->store) || ctx->health_inflight)
        return;
    int n = rt_nscheds(ctx->app->rt), me = rt_sched_index(ctx->sched);
    int64_t now = rt_wall_ms();
    uint64_t deadline = uv_now(t->loop) + ENS_STORE_DEADLINE_MS;
    for (int shard = me; shard < STORE_HEALTH_SHARDS; shard += n) {
        if (store_health_take(ctx->store, shard, now, ACT_HEALTH_LEASE_MS, ACT_HEALTH_BATCH,
                              deadline, on_taken, ctx) == 0)
            ctx->health_inflight++;
    }
}

void act_health_start(struct ens_sched_ctx *ctx)
{
    uv_loop_t *loop = rt_sched_loop(ctx->sched);
    uv_timer_init(loop, &ctx->health_timer);
    ctx->health_timer.data = ctx;
    uv_timer_start(&ctx->health_timer, health_tick, ACT_HEALTH_POLL_MS, ACT_HEALTH_POLL_MS);
}

void act_health_stop(struct ens_sched_ctx *ctx)
{
    uv_timer_stop(&ctx->health_timer);
}
