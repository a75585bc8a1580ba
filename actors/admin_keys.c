/* POST /admin/v1/keys/rotate (API.md 4): the admin face of act_keys_rotate.
 * Kept apart from admin_api.c so that file only routes to it. */
#include <string.h>

#include "actors/app.h"
#include "actors/keys.h"
#include "persistence/store_redis.h"
#include "protocols/h1_server.h"
#include "runtime/err.h"
#include "runtime/log.h"

static void on_rotated(int err, const char *summary_json, void *ud)
{
    struct h1_req *req = ud;
    if (err == 0) {
        h1_req_respond(req, 200, "application/json", (const uint8_t *)summary_json,
                       strlen(summary_json), NULL, 0);
    } else if (err == ENS_EFULL) {
        h1_req_respond_error(req, 409, "too_many_generations",
                             "too many live key generations: retire old ones first");
    } else if (err == ENS_ECRYPTO) {
        h1_req_respond_error(req, 500, "internal", "key generation failed");
    } else {
        RT_LOG_W("admin.keys", "rotation failed: err=%s", ens_err_name(err));
        h1_req_respond_error(req, 503, "unavailable", "storage unavailable; keys unchanged");
    }
}

void act_admin_keys_rotate(struct ens_sched_ctx *ctx, struct h1_req *req)
{
    /* Fail fast rather than queue behind a Redis that is away: the keeper's
     * own commands would fail the same way a moment later. */
    if (!store_ready(ctx->store)) {
        h1_req_respond_error(req, 503, "unavailable", "storage unavailable; keys unchanged");
        return;
    }
    int rc = act_keys_rotate(ctx->app, on_rotated, req);
    if (rc)
        h1_req_respond_error(req, 503, "unavailable", "keys are not loaded yet");
}
