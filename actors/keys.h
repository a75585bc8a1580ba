/* The server's own keys: enrollment keys (ECDH-ES P-256 and RSA-OAEP-256, the
 * JWKS devices seal their credentials to) and the sealing key that, with the
 * K inside each callback token, encrypts credentials at rest.
 *
 * Keys come in generations. A generation is one EC key, one RSA key and one
 * sealing key; rotation adds the next generation and makes it current, and the
 * older ones keep opening what was made with them until they are retired
 * (docs/keys.md). They live in Redis wrapped under the master key (seal_wrap),
 * so a copy of Redis alone opens nothing:
 *
 *   ens:keys:enroll-ec, ens:keys:enroll-rsa, ens:keys:seal
 *                        generation 1, one blob per key (the layout from before
 *                        rotation existed, so old deployments load unchanged)
 *   ens:keys:ring.<n>    generation n >= 2: one blob holding all three keys
 *   ens:keys:gen         the current generation, decimal; absent means 1
 *
 * Every blob is written once (SET NX, or inside one Lua script together with
 * the counter) and never changed, so several ensd starting or rotating at once
 * agree on one set, and a crash leaves either the old generation or the whole
 * new one.
 *
 * One keeper actor on scheduler 0 loads the keys, rotates them and checks
 * Redis's counter every KEYS_CHECK_MS, so a rotation made by another ensd is
 * picked up. It publishes immutable key sets into app->keys; readers on any
 * thread use the published set without locks. */
#ifndef ENS_ACTORS_KEYS_H
#define ENS_ACTORS_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "actors/app.h"
#include "protocols/jwk.h"
#include "runtime/buf.h"

/* Limits of this module (they belong in protocols/limits.h, not ours to edit). */
#define KEYS_MAX_GENERATIONS 1000  /* live generations; rotation past it is refused */
#define KEYS_CHECK_MS        30000 /* how often Redis's generation counter is read */
#define KEYS_RETRY_MS        1000  /* retry of a first load while Redis is away */

/* One generation of keys; private to keys.c. */
struct act_keygen;

struct act_keyset {
    /* The current generation: what new enrollments and tokens use. */
    struct jwk_key *enroll_ec;  /* borrowed from gens[0] */
    struct jwk_key *enroll_rsa; /* borrowed from gens[0] */
    uint32_t seal_kid;
    uint8_t seal_key[ENS_KEY_BYTES];
    char *jwks; /* GET /v1/keys: every live enrollment key, current first */
    uint64_t generation;
    /* Every live generation, newest first; gens[0] is the current one. */
    struct act_keygen **gens;
    size_t ngens;
    rt_actor_id keeper; /* the actor that published this set (rotation) */
    /* The set this one replaced. Readers on other threads may still hold it,
     * so it lives until the whole chain is freed at exit: at most one set per
     * generation change, bounded by KEYS_MAX_GENERATIONS. */
    struct act_keyset *superseded;
};

/* act_keys_load_start spawns the key keeper on the calling scheduler (ensd
 * uses scheduler 0), which loads (or, on a first start, creates) the keys
 * through |store|, retrying every KEYS_RETRY_MS while Redis is unavailable,
 * and publishes them into app->keys. Afterwards it reloads whenever Redis's
 * generation counter changes. Scheduler thread only; nothing to free: the
 * keeper ends with the runtime. */
void act_keys_load_start(struct ens_app *app, struct store *store);

/* act_keys_rotate_cb receives the outcome of act_keys_rotate: 0 and a JSON
 * summary (borrowed for the call) {"generation":N,"enrollment":[{"kid","alg"},
 * …current first],"sealingKeyId":"<8 hex>"}, or an error and NULL:
 * ENS_ESTORE / ENS_ETIMEDOUT (Redis), ENS_EFULL (KEYS_MAX_GENERATIONS live),
 * ENS_ECRYPTO (key generation), ENS_ECANCELED (shutdown). */
typedef void (*act_keys_rotate_cb)(int err, const char *summary_json, void *ud);

/* act_keys_rotate makes a new generation (fresh EC, RSA and sealing keys,
 * generated off the loop), stores it in Redis as the next generation and
 * publishes a key set in which it is current while older generations keep
 * working. Concurrent rotations, here or in another ensd, each add their own
 * generation. Returns 0 (|cb| then runs exactly once, later, on the keeper's
 * scheduler thread, scheduler 0 in ensd) or ENS_EAGAIN when no key set is
 * published yet, ENS_ENOACTOR when the keeper is gone (shutdown); on error
 * |cb| never runs. Thread-safe. */
int act_keys_rotate(struct ens_app *app, act_keys_rotate_cb cb, void *ud);

/* act_keyset_lookup is a jwe_key_lookup_fn over a key set (|ud|): the
 * enrollment key of any live generation with this |kid| and |alg|, or NULL.
 * Any thread. */
const struct jwk_key *act_keyset_lookup(const char *kid, enum jwk_alg alg, void *ud);

/* act_keyset_seal_key returns the sealing key of any live generation with id
 * |kid| (borrowed from |ks|), or NULL. Any thread. */
const uint8_t *act_keyset_seal_key(const struct act_keyset *ks, uint32_t kid);

/* act_keyset_free releases a key set and every set it superseded, wiping the
 * sealing keys; NULL is fine. Only once no thread can read them (ensd: after
 * the schedulers joined). */
void act_keyset_free(struct act_keyset *ks);

struct h1_req;
struct ens_sched_ctx;

/* act_admin_keys_rotate serves POST /admin/v1/keys/rotate (actors/admin_keys.c):
 * 200 with the act_keys_rotate summary, 503 while keys or Redis are
 * unavailable, 409 past KEYS_MAX_GENERATIONS. Admin listener thread only. */
void act_admin_keys_rotate(struct ens_sched_ctx *ctx, struct h1_req *req);

#endif
