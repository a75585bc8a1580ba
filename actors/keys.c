/* The key keeper: loads, creates, rotates and republishes the server's keys
 * (the contract and the Redis layout are in keys.h, the operator's view in
 * docs/keys.md).
 *
 * The keeper is an actor on scheduler 0. It does one operation at a time (a
 * load, a periodic check or a rotation), suspending its mailbox meanwhile, so
 * operations never interleave and need no locks; its timer and its state end
 * with the runtime like any actor's. Key generation (RSA takes up to a second)
 * runs on the libuv thread pool, never on the loop. */
#include "actors/keys.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "persistence/store_admin.h"
#include "protocols/seal.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"

#define KEYS_MAX_BLOB        8192
#define KEYS_MASTER_RETRY_MS (KEYS_RETRY_MS * 30)
#define KEYS_FIRST_LOAD_MS   50
#define KEYS_ROTATE_TRIES    5 /* commits lost to concurrent rotations before giving up */
#define KEYS_MAX_JWKS        (KEYS_MAX_GENERATIONS * 2 * JWK_MAX_PUBLIC_JSON + 64)
#define SEAL_BLOB_BYTES      (4 + ENS_KEY_BYTES)
#define RING_VERSION         1
#define RING_LABEL_PREFIX    "ens-keys-ring-v1:"
#define GEN_NAME             "gen"

/* Private message types: only the keeper receives them. */
enum { KEYS_MSG_TICK = 0x4b00, KEYS_MSG_ROTATE };

struct act_keygen {
    uint64_t gen;
    /* Key sets (and a load in progress) holding this generation. Changed only
     * on the keeper's thread, and at exit after every scheduler has joined. */
    int refs;
    struct jwk_key *ec;
    struct jwk_key *rsa;
    uint32_t seal_kid;
    uint8_t seal_key[ENS_KEY_BYTES];
};

/* ---- Generations ---- */

static void keygen_unref(struct act_keygen *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    jwk_key_free(g->ec);
    jwk_key_free(g->rsa);
    OPENSSL_cleanse(g->seal_key, sizeof(g->seal_key));
    ens_free(g);
}

static struct act_keygen *keygen_new(uint64_t gen)
{
    struct act_keygen *g = ens_calloc(1, sizeof(*g));
    g->gen = gen;
    g->refs = 1;
    return g;
}

/* ring_marshal writes generation |g| as version | seal kid | seal key |
 * u16-prefixed EC PKCS#8 | u16-prefixed RSA PKCS#8 and wraps it under the
 * master key with the generation number in the label, so a blob moved to
 * another generation's name does not open. */
static int ring_marshal(const uint8_t master[ENS_KEY_BYTES], const struct act_keygen *g,
                        struct rt_buf *out)
{
    struct rt_buf ec, rsa;
    rt_buf_init(&ec, KEYS_MAX_BLOB);
    rt_buf_init(&rsa, KEYS_MAX_BLOB);
    int rc = jwk_key_marshal(g->ec, &ec);
    if (rc == 0)
        rc = jwk_key_marshal(g->rsa, &rsa);
    if (rc == 0 && (ec.len > UINT16_MAX || rsa.len > UINT16_MAX))
        rc = ENS_ETOOBIG;
    if (rc == 0) {
        /* One exact allocation, so no reallocation leaves a copy behind. */
        size_t n = 1 + 4 + ENS_KEY_BYTES + 2 + ec.len + 2 + rsa.len;
        uint8_t *p = ens_malloc(n), *w = p;
        *w++ = RING_VERSION;
        for (int i = 3; i >= 0; i--)
            *w++ = (uint8_t)(g->seal_kid >> (8 * i));
        memcpy(w, g->seal_key, ENS_KEY_BYTES);
        w += ENS_KEY_BYTES;
        *w++ = (uint8_t)(ec.len >> 8);
        *w++ = (uint8_t)ec.len;
        memcpy(w, ec.data, ec.len);
        w += ec.len;
        *w++ = (uint8_t)(rsa.len >> 8);
        *w++ = (uint8_t)rsa.len;
        memcpy(w, rsa.data, rsa.len);
        char label[64];
        snprintf(label, sizeof(label), RING_LABEL_PREFIX "%" PRIu64, g->gen);
        rc = seal_wrap(master, label, span_make(p, n), out);
        OPENSSL_cleanse(p, n);
        ens_free(p);
    }
    rt_buf_cleanup_secret(&ec);
    rt_buf_cleanup_secret(&rsa);
    return rc;
}

/* ring_parse unwraps and reads generation |gen|'s blob; a new generation
 * (refs 1) or NULL with *err set. */
static struct act_keygen *ring_parse(const uint8_t master[ENS_KEY_BYTES], uint64_t gen,
                                     struct span blob, int *err)
{
    char label[64];
    snprintf(label, sizeof(label), RING_LABEL_PREFIX "%" PRIu64, gen);
    struct rt_buf plain;
    rt_buf_init_secret(&plain, KEYS_MAX_BLOB * 2);
    struct act_keygen *g = NULL;
    int rc = seal_unwrap(master, label, blob, &plain);
    if (rc == 0) {
        struct span s = rt_buf_span(&plain), ec, rsa;
        uint8_t version;
        g = keygen_new(gen);
        if (!span_get_u8(&s, &version) || version != RING_VERSION ||
            !span_get_u32(&s, &g->seal_kid) || !span_copy_bytes(&s, g->seal_key, ENS_KEY_BYTES) ||
            !span_get_u16_prefixed(&s, &ec) || !span_get_u16_prefixed(&s, &rsa) || s.len != 0 ||
            (g->ec = jwk_key_parse(ec)) == NULL || g->ec->alg != JWK_ALG_ECDH_ES ||
            (g->rsa = jwk_key_parse(rsa)) == NULL || g->rsa->alg != JWK_ALG_RSA_OAEP_256) {
            keygen_unref(g);
            g = NULL;
            rc = ENS_EPARSE;
        }
    }
    rt_buf_cleanup_secret(&plain);
    *err = rc;
    return g;
}

/* ---- Generation 1: one blob per key, as before rotation existed ---- */

enum key_kind { KEY_EC, KEY_RSA, KEY_SEAL };

/* One row per generation-1 key: its name in Redis and the AAD label of its
 * wrapping, so a blob can never be unwrapped as another kind of key. */
struct legacy_row {
    enum key_kind kind;
    const char *name;
    const char *label;
};

static const struct legacy_row kLegacy[] = {
    {KEY_EC, "enroll-ec", "ens-key-enroll-ec-v1"},
    {KEY_RSA, "enroll-rsa", "ens-key-enroll-rsa-v1"},
    {KEY_SEAL, "seal", "ens-key-seal-v1"},
};
#define NLEGACY (sizeof(kLegacy) / sizeof(kLegacy[0]))

/* legacy_install unwraps one generation-1 |blob| into |g|; 0 or an error. */
static int legacy_install(const uint8_t master[ENS_KEY_BYTES], const struct legacy_row *row,
                          struct span blob, struct act_keygen *g)
{
    struct rt_buf plain;
    rt_buf_init_secret(&plain, KEYS_MAX_BLOB);
    int rc = seal_unwrap(master, row->label, blob, &plain);
    if (rc == 0) {
        if (row->kind == KEY_SEAL) {
            struct span s = rt_buf_span(&plain);
            uint32_t kid;
            if (plain.len != SEAL_BLOB_BYTES || !span_get_u32(&s, &kid) ||
                !span_copy_bytes(&s, g->seal_key, ENS_KEY_BYTES))
                rc = ENS_EPARSE;
            else
                g->seal_kid = kid;
        } else {
            enum jwk_alg want = row->kind == KEY_EC ? JWK_ALG_ECDH_ES : JWK_ALG_RSA_OAEP_256;
            struct jwk_key *k = jwk_key_parse(rt_buf_span(&plain));
            struct jwk_key **slot = row->kind == KEY_EC ? &g->ec : &g->rsa;
            if (k == NULL || k->alg != want) {
                jwk_key_free(k);
                rc = ENS_EPARSE;
            } else {
                jwk_key_free(*slot);
                *slot = k;
            }
        }
    }
    rt_buf_cleanup_secret(&plain);
    return rc;
}

/* legacy_marshal wraps one key of |g| as its generation-1 blob. */
static int legacy_marshal(const uint8_t master[ENS_KEY_BYTES], const struct legacy_row *row,
                          const struct act_keygen *g, struct rt_buf *out)
{
    struct rt_buf plain;
    rt_buf_init_secret(&plain, KEYS_MAX_BLOB);
    int rc;
    if (row->kind == KEY_SEAL) {
        uint8_t raw[SEAL_BLOB_BYTES];
        for (int i = 0; i < 4; i++)
            raw[i] = (uint8_t)(g->seal_kid >> (8 * (3 - i)));
        memcpy(raw + 4, g->seal_key, ENS_KEY_BYTES);
        rc = rt_buf_append(&plain, raw, sizeof(raw));
        OPENSSL_cleanse(raw, sizeof(raw));
    } else {
        rc = jwk_key_marshal(row->kind == KEY_EC ? g->ec : g->rsa, &plain);
    }
    if (rc == 0)
        rc = seal_wrap(master, row->label, rt_buf_span(&plain), out);
    rt_buf_cleanup_secret(&plain);
    return rc;
}

/* ---- Key sets ---- */

const struct jwk_key *act_keyset_lookup(const char *kid, enum jwk_alg alg, void *ud)
{
    const struct act_keyset *ks = ud;
    for (size_t i = 0; ks && i < ks->ngens; i++) {
        const struct jwk_key *k = alg == JWK_ALG_ECDH_ES ? ks->gens[i]->ec : ks->gens[i]->rsa;
        if (k && k->alg == alg && strcmp(k->kid, kid) == 0)
            return k;
    }
    return NULL;
}

const uint8_t *act_keyset_seal_key(const struct act_keyset *ks, uint32_t kid)
{
    for (size_t i = 0; ks && i < ks->ngens; i++) {
        if (ks->gens[i]->seal_kid == kid)
            return ks->gens[i]->seal_key;
    }
    return NULL;
}

void act_keyset_free(struct act_keyset *ks)
{
    while (ks) {
        struct act_keyset *older = ks->superseded;
        for (size_t i = 0; i < ks->ngens; i++)
            keygen_unref(ks->gens[i]);
        ens_free(ks->gens);
        OPENSSL_cleanse(ks->seal_key, sizeof(ks->seal_key));
        ens_free(ks->jwks);
        ens_free(ks);
        ks = older;
    }
}

/* keyset_find returns generation |gen| of |ks|, or NULL. */
static struct act_keygen *keyset_find(const struct act_keyset *ks, uint64_t gen)
{
    for (size_t i = 0; ks && i < ks->ngens; i++) {
        if (ks->gens[i]->gen == gen)
            return ks->gens[i];
    }
    return NULL;
}

/* keyset_summary appends the rotation answer for |ks| to |out|. Only public
 * values: kids, algorithm names and the sealing key's id. */
static int keyset_summary(const struct act_keyset *ks, struct rt_buf *out)
{
    int rc = rt_buf_appendf(out, "{\"generation\":%" PRIu64 ",\"enrollment\":[", ks->generation);
    for (size_t i = 0; rc == 0 && i < ks->ngens; i++) {
        const struct jwk_key *k[2] = {ks->gens[i]->ec, ks->gens[i]->rsa};
        for (size_t j = 0; rc == 0 && j < 2; j++)
            rc = rt_buf_appendf(out, "%s{\"kid\":\"%s\",\"alg\":\"%s\"}", i + j ? "," : "",
                                k[j]->kid, jwk_alg_name(k[j]->alg));
    }
    if (rc == 0)
        rc = rt_buf_appendf(out, "],\"sealingKeyId\":\"%08" PRIx32 "\"}", ks->seal_kid);
    return rc;
}

/* ---- The keeper ---- */

/* What the keeper is doing; each state names what it waits for. */
enum keeper_state {
    KS_IDLE,
    KS_READ_GEN,       /* GET ens:keys:gen */
    KS_FETCH_RING,     /* GET ens:keys:ring.<next> */
    KS_FETCH_LEGACY,   /* GET one generation-1 key */
    KS_GENERATE,       /* keys being made on the thread pool */
    KS_CREATE_LEGACY,  /* SET NX one generation-1 key */
    KS_COMMIT_ROTATION /* the Lua script adding generation <rot_gen> */
};

struct rotate_msg {
    struct rt_msg hdr;
    act_keys_rotate_cb cb; /* NULL once called */
    void *ud;
};

struct keys_work;

struct keeper {
    struct ens_app *app;
    struct store *store; /* scheduler 0's; see keeper_store */
    struct rt_actor *actor;
    rt_actor_id self;
    struct rt_timer *tick;
    enum keeper_state state;
    /* The load in progress: generations target..1, newest first. */
    int forced;
    uint64_t target;
    uint64_t next;
    struct act_keygen **cand; /* each holds one ref */
    size_t ncand;
    struct act_keygen *legacy; /* generation 1 being read */
    size_t legacy_step;
    int legacy_created;
    /* Keys made on the pool, for a first start or a rotation. */
    struct keys_work *work;
    struct act_keygen *fresh;
    struct rt_buf blob;
    /* The rotation in progress. */
    struct rotate_msg *rot;
    uint64_t rot_gen;
    int rot_tries;
};

struct keys_work {
    uv_work_t req;
    struct keeper *kk; /* NULL once the keeper is gone: then this frees itself */
    struct act_keygen *g;
    int rc;
};

static void load_step(struct keeper *kk);
static void load_finish(struct keeper *kk, int err);
static void rotate_commit(struct keeper *kk);
static void legacy_create(struct keeper *kk);

static uint64_t keeper_deadline(struct keeper *kk)
{
    return rt_now_ms(rt_actor_sched(kk->actor)) + ENS_STORE_DEADLINE_MS;
}

/* keeper_store returns the scheduler's Redis connection, or NULL once ensd has
 * begun to close it: the context drops its pointer before freeing the store,
 * so the keeper never issues a command on a store being torn down. */
static struct store *keeper_store(struct keeper *kk)
{
    struct ens_sched_ctx *ctx = ens_sched_ctx_current();
    if (ctx && ctx->app == kk->app)
        return ctx->store;
    return kk->store;
}

static void cand_clear(struct keeper *kk)
{
    for (size_t i = 0; i < kk->ncand; i++)
        keygen_unref(kk->cand[i]);
    kk->ncand = 0;
    keygen_unref(kk->legacy);
    kk->legacy = NULL;
}

/* keeper_idle ends an operation: the tick comes back after |delay_ms| and the
 * mailbox (suspended when the operation began) is delivered again. */
static void keeper_idle(struct keeper *kk, uint64_t delay_ms)
{
    kk->state = KS_IDLE;
    rt_timer_arm(kk->tick, delay_ms);
    rt_actor_resume(kk->actor);
}

/* ---- Thread pool: key generation ---- */

static void work_cb(uv_work_t *w)
{
    struct keys_work *kw = w->data;
    struct act_keygen *g = keygen_new(0);
    g->ec = jwk_key_generate(JWK_ALG_ECDH_ES);
    g->rsa = jwk_key_generate(JWK_ALG_RSA_OAEP_256);
    uint8_t kid[4];
    if (g->ec == NULL || g->rsa == NULL || !RAND_bytes(kid, sizeof(kid)) ||
        !RAND_bytes(g->seal_key, sizeof(g->seal_key)))
        kw->rc = ENS_ECRYPTO;
    g->seal_kid = (uint32_t)kid[0] << 24 | (uint32_t)kid[1] << 16 | (uint32_t)kid[2] << 8 | kid[3];
    kw->g = g;
}

static void on_generated(struct keeper *kk, int err, struct act_keygen *g);

static void after_work_cb(uv_work_t *w, int status)
{
    struct keys_work *kw = w->data;
    struct keeper *kk = kw->kk;
    struct act_keygen *g = kw->g;
    int rc = status ? ENS_ECANCELED : kw->rc;
    ens_free(kw);
    if (kk == NULL) { /* the keeper ended meanwhile */
        keygen_unref(g);
        return;
    }
    kk->work = NULL;
    on_generated(kk, rc, g);
}

/* generate_start makes a generation on the pool; on_generated follows. */
static int generate_start(struct keeper *kk)
{
    struct keys_work *kw = ens_calloc(1, sizeof(*kw));
    kw->kk = kk;
    kw->req.data = kw;
    int rc = uv_queue_work(rt_actor_loop(kk->actor), &kw->req, work_cb, after_work_cb);
    if (rc) {
        ens_free(kw);
        return ENS_EIO;
    }
    kk->work = kw;
    kk->state = KS_GENERATE;
    return 0;
}

static void on_generated(struct keeper *kk, int err, struct act_keygen *g)
{
    if (err) {
        keygen_unref(g);
        load_finish(kk, err); /* reports to the rotation's caller, if any */
        return;
    }
    /* Sealing key ids must be unique among live generations, or tokens of the
     * older one would stop opening. A clash among 2^32 ids is rare; redraw. */
    const struct act_keyset *ks = ens_app_keys(kk->app);
    while (act_keyset_seal_key(ks, g->seal_kid) != NULL) {
        uint8_t kid[4];
        RAND_bytes(kid, sizeof(kid));
        g->seal_kid =
            (uint32_t)kid[0] << 24 | (uint32_t)kid[1] << 16 | (uint32_t)kid[2] << 8 | kid[3];
    }
    keygen_unref(kk->fresh);
    kk->fresh = g;
    if (kk->rot) {
        kk->rot_gen = (ks ? ks->generation : 1) + 1;
        kk->rot_tries = 0;
        rotate_commit(kk);
    } else {
        kk->fresh->gen = 1;
        kk->legacy_step = 0;
        legacy_create(kk);
    }
}

/* ---- Loading ---- */

static void publish(struct keeper *kk)
{
    struct act_keyset *old = ens_app_keys(kk->app);
    struct act_keyset *ks = ens_calloc(1, sizeof(*ks));
    ks->gens = ens_calloc(kk->ncand, sizeof(*ks->gens));
    memcpy(ks->gens, kk->cand, kk->ncand * sizeof(*ks->gens));
    ks->ngens = kk->ncand;
    kk->ncand = 0; /* the set has taken the candidates' refs */
    struct act_keygen *cur = ks->gens[0];
    ks->enroll_ec = cur->ec;
    ks->enroll_rsa = cur->rsa;
    ks->seal_kid = cur->seal_kid;
    memcpy(ks->seal_key, cur->seal_key, ENS_KEY_BYTES);
    ks->generation = cur->gen;
    ks->keeper = kk->self;
    const struct jwk_key **pub = ens_calloc(ks->ngens * 2, sizeof(*pub));
    for (size_t i = 0; i < ks->ngens; i++) {
        pub[2 * i] = ks->gens[i]->ec;
        pub[2 * i + 1] = ks->gens[i]->rsa;
    }
    struct rt_buf jwks;
    rt_buf_init(&jwks, KEYS_MAX_JWKS);
    int rc = jwk_jwks_build(pub, ks->ngens * 2, &jwks);
    ens_free(pub);
    if (rc != 0) {
        rt_buf_cleanup(&jwks);
        RT_LOG_E("keys.load", "cannot build the JWKS document (err=%s)", ens_err_name(rc));
        act_keyset_free(ks);
        return;
    }
    ks->jwks = (char *)rt_buf_take(&jwks, NULL);
    /* Readers may hold |old| for as long as they like: it is chained here and
     * freed with the newest set at exit, never now. */
    ks->superseded = old;
    /* Release: the set is complete before any thread can load the pointer. */
    atomic_store_explicit(&kk->app->keys, ks, memory_order_release);
    RT_LOG_I("keys.load",
             "generation=%" PRIu64 " live=%zu enrollment keys ec=%s rsa=%s, sealing key id=%08x "
             "ready",
             ks->generation, ks->ngens, ks->enroll_ec->kid, ks->enroll_rsa->kid, ks->seal_kid);
}

static void rotate_answer(struct keeper *kk, int err)
{
    struct rotate_msg *r = kk->rot;
    kk->rot = NULL;
    act_keys_rotate_cb cb = r->cb;
    r->cb = NULL;
    if (err == 0) {
        struct rt_buf out;
        rt_buf_init(&out, KEYS_MAX_JWKS);
        err = keyset_summary(ens_app_keys(kk->app), &out);
        if (err == 0)
            cb(0, rt_buf_cstr(&out), r->ud);
        rt_buf_cleanup(&out);
    }
    if (err)
        cb(err, NULL, r->ud);
    rt_msg_free(&r->hdr);
}

/* load_finish ends a load (or a rotation, whose last step is a load). */
static void load_finish(struct keeper *kk, int err)
{
    const struct act_keyset *ks = ens_app_keys(kk->app);
    if (err == 0 && kk->ncand > 0 && (ks == NULL || ks->generation != kk->cand[0]->gen))
        publish(kk);
    cand_clear(kk);
    if (kk->rot)
        rotate_answer(kk, err);
    uint64_t delay = ens_app_keys(kk->app) ? KEYS_CHECK_MS : KEYS_RETRY_MS;
    if (err == ENS_ECRYPTO || err == ENS_EPARSE)
        delay = KEYS_MASTER_RETRY_MS; /* retrying at once cannot help */
    keeper_idle(kk, delay);
}

static void load_fail(struct keeper *kk, int err, const char *what)
{
    RT_LOG_W("keys.load", "generation=%" PRIu64 " step=%s err=%s, retrying", kk->next, what,
             ens_err_name(err));
    load_finish(kk, err);
}

/* master_mismatch reports a blob that does not unwrap: the master key is not
 * the one the keys were made with. Retrying soon cannot fix that, and making
 * new keys would orphan every enrollment, so say so loudly and keep /ready at
 * 503 (or keep serving the set already loaded). */
static void master_mismatch(struct keeper *kk, const char *name, int err)
{
    RT_LOG_E("keys.load",
             "key=%s does not open with this master key (err=%s): check "
             "secrets.master_key_file / ENS_SECRETS_MASTER_KEY",
             name, ens_err_name(err));
    load_finish(kk, err);
}

static void cand_add(struct keeper *kk, struct act_keygen *g)
{
    kk->cand[kk->ncand++] = g; /* takes the caller's ref */
}

static void on_gen(int err, struct span blob, void *ud)
{
    struct keeper *kk = ud;
    uint64_t g = 1;
    if (err == 0) {
        struct span s = blob;
        if (!span_get_decimal(&s, UINT32_MAX, &g) || s.len != 0 || g == 0)
            err = ENS_EPARSE;
    } else if (err == ENS_ENOTFOUND) {
        err = 0; /* no rotation ever: generation 1 */
    }
    if (err) {
        load_fail(kk, err, "read-generation");
        return;
    }
    const struct act_keyset *ks = ens_app_keys(kk->app);
    if (!kk->forced && ks && ks->generation == g) {
        load_finish(kk, 0); /* nothing changed: the usual periodic check */
        return;
    }
    if (ks && g < ks->generation) {
        /* The counter only moves forward; a smaller one is a restored backup
         * or a different database. Keep what we have rather than lose keys. */
        RT_LOG_E("keys.load", "Redis says generation=%" PRIu64 ", older than ours=%" PRIu64, g,
                 ks->generation);
        load_finish(kk, ENS_EPARSE);
        return;
    }
    kk->target = g;
    kk->next = g;
    RT_LOG_I("keys.load", "loading generation=%" PRIu64, g);
    load_step(kk);
}

static void on_ring(int err, struct span blob, void *ud)
{
    struct keeper *kk = ud;
    if (err == ENS_ENOTFOUND && kk->next != kk->target) {
        kk->next--; /* retired (docs/keys.md): it opens nothing any more */
        load_step(kk);
        return;
    }
    if (err) {
        load_fail(kk, err, "read-ring");
        return;
    }
    struct act_keygen *g = ring_parse(kk->app->master, kk->next, blob, &err);
    if (g == NULL) {
        char name[32];
        snprintf(name, sizeof(name), "ring.%" PRIu64, kk->next);
        master_mismatch(kk, name, err);
        return;
    }
    cand_add(kk, g);
    kk->next--;
    load_step(kk);
}

static void fetch_legacy(struct keeper *kk);

static void on_legacy(int err, struct span blob, void *ud)
{
    struct keeper *kk = ud;
    const struct legacy_row *row = &kLegacy[kk->legacy_step];
    if (err == ENS_ENOTFOUND) {
        if (kk->target > 1 && kk->legacy_step == 0) {
            keygen_unref(kk->legacy); /* generation 1 was retired */
            kk->legacy = NULL;
            kk->next = 0;
            load_step(kk);
            return;
        }
        if (kk->target == 1 && !kk->legacy_created) {
            /* A first start: make generation 1. Another ensd may be doing the
             * same; SET NX makes every key's first writer win. */
            RT_LOG_I("keys.create", "no keys in Redis yet, creating generation 1");
            int rc = generate_start(kk);
            if (rc)
                load_fail(kk, rc, "generate");
            return;
        }
        err = ENS_EPARSE; /* part of generation 1 is missing */
    }
    if (err) {
        load_fail(kk, err, row->name);
        return;
    }
    int rc = legacy_install(kk->app->master, row, blob, kk->legacy);
    if (rc) {
        master_mismatch(kk, row->name, rc);
        return;
    }
    kk->legacy_step++;
    fetch_legacy(kk);
}

static void fetch_legacy(struct keeper *kk)
{
    if (kk->legacy_step == NLEGACY) {
        cand_add(kk, kk->legacy);
        kk->legacy = NULL;
        kk->next = 0;
        load_step(kk);
        return;
    }
    struct store *st = keeper_store(kk);
    int rc =
        st ? store_keys_get(st, kLegacy[kk->legacy_step].name, keeper_deadline(kk), on_legacy, kk)
           : ENS_ECANCELED;
    if (rc)
        load_fail(kk, rc, kLegacy[kk->legacy_step].name);
}

/* load_step fetches generation kk->next (reusing what the published set
 * already holds: a generation never changes once written), or finishes. */
static void load_step(struct keeper *kk)
{
    const struct act_keyset *ks = ens_app_keys(kk->app);
    while (kk->next >= 1) {
        if (kk->ncand == KEYS_MAX_GENERATIONS) {
            RT_LOG_E("keys.load",
                     "more than %d live generations; generations up to %" PRIu64
                     " are not loaded: retire old ones",
                     KEYS_MAX_GENERATIONS, kk->next);
            break;
        }
        struct act_keygen *have = keyset_find(ks, kk->next);
        if (have == NULL)
            break;
        have->refs++;
        cand_add(kk, have);
        kk->next--;
    }
    if (kk->next == 0 || kk->ncand == KEYS_MAX_GENERATIONS) {
        load_finish(kk, 0);
        return;
    }
    struct store *st = keeper_store(kk);
    int rc;
    if (st == NULL) {
        rc = ENS_ECANCELED;
    } else if (kk->next >= 2) {
        char name[32];
        snprintf(name, sizeof(name), "ring.%" PRIu64, kk->next);
        kk->state = KS_FETCH_RING;
        rc = store_keys_get(st, name, keeper_deadline(kk), on_ring, kk);
    } else {
        kk->state = KS_FETCH_LEGACY;
        keygen_unref(kk->legacy);
        kk->legacy = keygen_new(1);
        kk->legacy_step = 0;
        fetch_legacy(kk);
        return;
    }
    if (rc)
        load_fail(kk, rc, "read");
}

static void load_start(struct keeper *kk, int forced)
{
    cand_clear(kk);
    kk->forced = forced;
    kk->legacy_created = 0;
    kk->next = 0;
    kk->state = KS_READ_GEN;
    struct store *st = keeper_store(kk);
    int rc = st ? store_keys_get(st, GEN_NAME, keeper_deadline(kk), on_gen, kk) : ENS_ECANCELED;
    if (rc)
        load_fail(kk, rc, "read-generation");
}

/* ---- First start: create generation 1 ---- */

static void on_legacy_created(int err, int created, void *ud)
{
    struct keeper *kk = ud;
    if (err) {
        load_fail(kk, err, "create");
        return;
    }
    if (created)
        RT_LOG_I("keys.create", "key=%s created", kLegacy[kk->legacy_step].name);
    kk->legacy_step++;
    legacy_create(kk);
}

/* legacy_create writes each generation-1 key with SET NX (a key another ensd
 * wrote first is kept), then reads generation 1 back, whoever made it. */
static void legacy_create(struct keeper *kk)
{
    if (kk->legacy_step == NLEGACY) {
        keygen_unref(kk->fresh);
        kk->fresh = NULL;
        kk->legacy_created = 1;
        kk->legacy_step = 0;
        kk->state = KS_FETCH_LEGACY;
        fetch_legacy(kk);
        return;
    }
    kk->state = KS_CREATE_LEGACY;
    rt_buf_cleanup_secret(&kk->blob);
    rt_buf_init(&kk->blob, STORE_MAX_KEY_BLOB);
    const struct legacy_row *row = &kLegacy[kk->legacy_step];
    struct store *st = keeper_store(kk);
    int rc = legacy_marshal(kk->app->master, row, kk->fresh, &kk->blob);
    if (rc == 0)
        rc = st ? store_keys_setnx(st, row->name, kk->blob.data, kk->blob.len, keeper_deadline(kk),
                                   on_legacy_created, kk)
                : ENS_ECANCELED;
    if (rc)
        load_fail(kk, rc, "create");
}

/* ---- Rotation ---- */

/* The whole commit is one script, so it is atomic: the blob of generation n
 * appears together with the counter's move to n, or not at all, and only if n
 * is the next generation and nobody wrote it first. Otherwise it returns
 * minus the current generation and writes nothing. */
static const char kCommitScript[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '1')\n"
    "local n = tonumber(ARGV[1])\n"
    "if cur + 1 ~= n or redis.call('EXISTS', KEYS[2]) == 1 then return -cur end\n"
    "redis.call('SET', KEYS[2], ARGV[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "return n\n";

static void on_committed(int err, redisReply *r, void *ud)
{
    struct keeper *kk = ud;
    rt_buf_cleanup_secret(&kk->blob);
    rt_buf_init(&kk->blob, STORE_MAX_KEY_BLOB);
    if (err == 0 && (r == NULL || r->type != REDIS_REPLY_INTEGER))
        err = ENS_ESTORE;
    if (err) {
        RT_LOG_W("keys.rotate", "generation=%" PRIu64 " commit failed: err=%s", kk->rot_gen,
                 ens_err_name(err));
        keygen_unref(kk->fresh);
        kk->fresh = NULL;
        load_finish(kk, err);
        return;
    }
    if (r->integer < 0) {
        /* Another rotation took generation n first: ours becomes the next. */
        uint64_t cur = (uint64_t)(-r->integer);
        RT_LOG_I("keys.rotate", "generation=%" PRIu64 " taken (current=%" PRIu64 "), retrying",
                 kk->rot_gen, cur);
        if (++kk->rot_tries >= KEYS_ROTATE_TRIES || cur >= UINT32_MAX) {
            keygen_unref(kk->fresh);
            kk->fresh = NULL;
            load_finish(kk, ENS_ESTORE);
            return;
        }
        kk->rot_gen = cur + 1;
        rotate_commit(kk);
        return;
    }
    RT_LOG_I("keys.rotate", "generation=%" PRIu64 " committed, sealing key id=%08x", kk->rot_gen,
             kk->fresh->seal_kid);
    keygen_unref(kk->fresh);
    kk->fresh = NULL;
    /* Read it back like any other ensd would: one code path for every set. */
    cand_clear(kk);
    load_start(kk, 1);
}

static void rotate_commit(struct keeper *kk)
{
    kk->state = KS_COMMIT_ROTATION;
    kk->fresh->gen = kk->rot_gen;
    if (kk->rot_gen - 1 >= KEYS_MAX_GENERATIONS) {
        keygen_unref(kk->fresh);
        kk->fresh = NULL;
        load_finish(kk, ENS_EFULL);
        return;
    }
    rt_buf_cleanup_secret(&kk->blob);
    rt_buf_init(&kk->blob, STORE_MAX_KEY_BLOB);
    int rc = ring_marshal(kk->app->master, kk->fresh, &kk->blob);
    struct store *st = keeper_store(kk);
    if (rc == 0 && st == NULL)
        rc = ENS_ECANCELED;
    if (rc == 0) {
        char ring_key[48], num[24];
        snprintf(ring_key, sizeof(ring_key), "ens:keys:ring.%" PRIu64, kk->rot_gen);
        snprintf(num, sizeof(num), "%" PRIu64, kk->rot_gen);
        const char *argv[] = {"EVAL",
                              kCommitScript,
                              "2",
                              "ens:keys:" GEN_NAME,
                              ring_key,
                              num,
                              (const char *)kk->blob.data};
        size_t argvlen[] = {4,
                            sizeof(kCommitScript) - 1,
                            1,
                            strlen(argv[3]),
                            strlen(ring_key),
                            strlen(num),
                            kk->blob.len};
        rc = store_cmdargv(st, 7, argv, argvlen, keeper_deadline(kk), on_committed, kk);
    }
    if (rc) {
        keygen_unref(kk->fresh);
        kk->fresh = NULL;
        load_finish(kk, rc);
    }
}

static void rotate_start(struct keeper *kk, struct rotate_msg *r)
{
    kk->rot = r;
    const struct act_keyset *ks = ens_app_keys(kk->app);
    int rc = 0;
    if (ks == NULL)
        rc = ENS_EAGAIN;
    else if (ks->ngens >= KEYS_MAX_GENERATIONS)
        rc = ENS_EFULL;
    else
        rc = generate_start(kk);
    if (rc)
        load_finish(kk, rc);
}

/* ---- The actor ---- */

static void keeper_receive(struct rt_actor *a, struct rt_msg *m)
{
    struct keeper *kk = rt_actor_state(a);
    if (kk->actor == NULL) {
        /* The first message, from act_keys_load_start. The store is likely
         * still connecting: load a moment later rather than fail at once. */
        kk->actor = a;
        kk->tick = rt_timer_new(a, KEYS_MSG_TICK);
        if (m->type == KEYS_MSG_TICK) {
            rt_msg_free(m);
            rt_timer_arm(kk->tick, KEYS_FIRST_LOAD_MS);
            return;
        }
    }
    /* One operation at a time: the mailbox waits until keeper_idle. */
    rt_actor_suspend(a);
    if (m->type == KEYS_MSG_ROTATE) {
        rotate_start(kk, (struct rotate_msg *)m);
        return;
    }
    int forced = ens_app_keys(kk->app) == NULL;
    rt_msg_free(m);
    load_start(kk, forced);
}

static void keeper_destroy(struct rt_actor *a)
{
    struct keeper *kk = rt_actor_state(a);
    if (kk->work)
        kk->work->kk = NULL; /* its after_work_cb frees it later */
    if (kk->rot) {
        struct rotate_msg *r = kk->rot;
        kk->rot = NULL;
        rt_msg_free(&r->hdr); /* calls back with ENS_ECANCELED */
    }
    cand_clear(kk);
    ens_free(kk->cand);
    keygen_unref(kk->fresh);
    rt_buf_cleanup_secret(&kk->blob);
    ens_free(kk);
}

static const struct rt_actor_type kKeeper = {"keys", keeper_receive, keeper_destroy};

void act_keys_load_start(struct ens_app *app, struct store *store)
{
    struct rt_sched *s = rt_sched_current();
    struct keeper *kk = ens_calloc(1, sizeof(*kk));
    kk->app = app;
    kk->store = store;
    kk->cand = ens_calloc(KEYS_MAX_GENERATIONS, sizeof(*kk->cand));
    rt_buf_init(&kk->blob, STORE_MAX_KEY_BLOB);
    int rc = rt_spawn(app->rt, s ? rt_sched_index(s) : 0, &kKeeper, kk, &kk->self);
    if (rc) {
        RT_LOG_E("keys.load", "cannot start the key keeper: %s", ens_err_name(rc));
        ens_free(kk->cand);
        ens_free(kk);
        return;
    }
    /* A timer belongs to the actor and exists only once it runs: this first
     * message creates it and schedules the first load. */
    struct rt_msg *m = rt_msg_new(sizeof(*m), KEYS_MSG_TICK);
    if (rt_send(app->rt, kk->self, m) != 0)
        rt_msg_free(m);
}

static void rotate_msg_free(struct rt_msg *m)
{
    struct rotate_msg *r = (struct rotate_msg *)m;
    if (r->cb) /* never handled: the keeper ended first */
        r->cb(ENS_ECANCELED, NULL, r->ud);
    ens_free(r);
}

int act_keys_rotate(struct ens_app *app, act_keys_rotate_cb cb, void *ud)
{
    const struct act_keyset *ks = ens_app_keys(app);
    if (ks == NULL)
        return ENS_EAGAIN;
    struct rotate_msg *r = rt_msg_new(sizeof(*r), KEYS_MSG_ROTATE);
    r->hdr.free = rotate_msg_free;
    r->cb = cb;
    r->ud = ud;
    int rc = rt_send(app->rt, ks->keeper, &r->hdr);
    if (rc) {
        r->cb = NULL; /* an error return means no callback */
        rt_msg_free(&r->hdr);
    }
    return rc;
}
