/* The health index in Redis; see store_health.h. */
#include "persistence/store_health.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/alloc.h"
#include "runtime/err.h"

#define HEALTH_KEY_MAX 32

/* Takes what is due and leases it, atomically, on one key. */
static const char kTakeScript[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])\n"
    "for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end\n"
    "return due\n";

struct health_req {
    store_done_cb done;
    store_health_cb take;
    store_health_due_cb due;
    void *ud;
};

int store_health_shard(const char *uid)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = uid; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return (int)(h % STORE_HEALTH_SHARDS);
}

static void shard_key(int shard, char out[HEALTH_KEY_MAX])
{
    snprintf(out, HEALTH_KEY_MAX, "ens:health:{h%02d}", shard);
}

static void on_done(int err, redisReply *r, void *ud)
{
    (void)r;
    struct health_req *q = ud;
    q->done(err, q->ud);
    ens_free(q);
}

/* send_cmd sends one command whose reply |cb| hands to the caller's callback
 * in |req| (copied to the heap, freed by |cb| or here when nothing was sent). */
static int send_cmd(struct store *s, int argc, const char **argv, uint64_t deadline_ms,
                    store_reply_cb cb, struct health_req req)
{
    struct health_req *q = (struct health_req *)ens_memdup(&req, sizeof(req));
    int rc = store_cmdargv(s, argc, argv, NULL, deadline_ms, cb, q);
    if (rc)
        ens_free(q);
    return rc;
}

int store_health_set(struct store *s, const char *uid, int64_t due_ms, uint64_t deadline_ms,
                     store_done_cb cb, void *ud)
{
    if (!store_id_valid(uid) || due_ms < 0 || cb == NULL)
        return ENS_EINVAL;
    char key[HEALTH_KEY_MAX], score[24];
    shard_key(store_health_shard(uid), key);
    snprintf(score, sizeof(score), "%lld", (long long)due_ms);
    const char *argv[4] = {"ZADD", key, score, uid};
    return send_cmd(s, 4, argv, deadline_ms, on_done, (struct health_req){.done = cb, .ud = ud});
}

int store_health_del(struct store *s, const char *uid, uint64_t deadline_ms, store_done_cb cb,
                     void *ud)
{
    if (!store_id_valid(uid) || cb == NULL)
        return ENS_EINVAL;
    char key[HEALTH_KEY_MAX];
    shard_key(store_health_shard(uid), key);
    const char *argv[3] = {"ZREM", key, uid};
    return send_cmd(s, 3, argv, deadline_ms, on_done, (struct health_req){.done = cb, .ud = ud});
}

static void on_take(int err, redisReply *r, void *ud)
{
    struct health_req *q = ud;
    const char *uids[STORE_HEALTH_MAX_TAKE];
    size_t n = 0;
    if (err == 0 && r->type != REDIS_REPLY_ARRAY)
        err = ENS_EPROTO;
    if (err == 0) {
        for (size_t i = 0; i < r->elements && n < STORE_HEALTH_MAX_TAKE; i++) {
            const redisReply *e = r->element[i];
            /* Only ids we could have written: anything else in the key is
             * skipped, never sent on as a mailbox key. */
            if (e->type == REDIS_REPLY_STRING && e->len == STORE_ID_CHARS &&
                strlen(e->str) == STORE_ID_CHARS && store_id_valid(e->str))
                uids[n++] = e->str;
        }
    }
    q->take(err, uids, n, q->ud);
    ens_free(q);
}

int store_health_take(struct store *s, int shard, int64_t now_ms, int64_t lease_ms, size_t max,
                      uint64_t deadline_ms, store_health_cb cb, void *ud)
{
    if (shard < 0 || shard >= STORE_HEALTH_SHARDS || now_ms < 0 || lease_ms < 0 || max == 0 ||
        max > STORE_HEALTH_MAX_TAKE || cb == NULL)
        return ENS_EINVAL;
    char key[HEALTH_KEY_MAX], now[24], until[24], limit[16];
    shard_key(shard, key);
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    snprintf(until, sizeof(until), "%lld", (long long)(now_ms + lease_ms));
    snprintf(limit, sizeof(limit), "%zu", max);
    const char *argv[7] = {"EVAL", kTakeScript, "1", key, now, until, limit};
    return send_cmd(s, 7, argv, deadline_ms, on_take, (struct health_req){.take = cb, .ud = ud});
}

static void on_due(int err, redisReply *r, void *ud)
{
    struct health_req *q = ud;
    int64_t due = 0;
    if (err == 0 && r->type == REDIS_REPLY_STRING)
        due = (int64_t)strtod(r->str, NULL); /* Redis prints scores as doubles */
    else if (err == 0 && r->type != REDIS_REPLY_NIL)
        err = ENS_EPROTO;
    q->due(err, due, q->ud);
    ens_free(q);
}

int store_health_due_get(struct store *s, const char *uid, uint64_t deadline_ms,
                         store_health_due_cb cb, void *ud)
{
    if (!store_id_valid(uid) || cb == NULL)
        return ENS_EINVAL;
    char key[HEALTH_KEY_MAX];
    shard_key(store_health_shard(uid), key);
    const char *argv[3] = {"ZSCORE", key, uid};
    return send_cmd(s, 3, argv, deadline_ms, on_due, (struct health_req){.due = cb, .ud = ud});
}
