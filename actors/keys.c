#include "actors/keys.h"

#include <openssl/mem.h>
#include <openssl/rand.h>
#include <string.h>

#include "persistence/store_admin.h"
#include "protocols/seal.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/log.h"

#define KEYS_RETRY_MS   1000
#define KEYS_MAX_BLOB   8192
#define SEAL_BLOB_BYTES (4 + ENS_KEY_BYTES)

enum key_kind { KEY_EC, KEY_RSA, KEY_SEAL };

/* One row per key kept in Redis: its name there and the AAD label of its
 * wrapping, so a blob can never be unwrapped as another kind of key. */
struct key_row {
    enum key_kind kind;
    const char *name;
    const char *label;
};

static const struct key_row kKeys[] = {
    {KEY_EC, "enroll-ec", "ens-key-enroll-ec-v1"},
    {KEY_RSA, "enroll-rsa", "ens-key-enroll-rsa-v1"},
    {KEY_SEAL, "seal", "ens-key-seal-v1"},
};
#define NKEYS (sizeof(kKeys) / sizeof(kKeys[0]))

struct keys_loader {
    struct ens_app *app;
    struct store *store;
    uv_timer_t retry;
    size_t step;
    struct act_keyset *ks;
    struct rt_buf fresh; /* wrapped blob of a key we generated, for SET NX */
};

static void loader_next(struct keys_loader *l);

static void loader_retry_cb(uv_timer_t *t)
{
    loader_next(t->data);
}

static void loader_fail(struct keys_loader *l, int err, const char *what)
{
    RT_LOG_W("keys.load", "key=%s step=%s err=%s, retrying", kKeys[l->step].name, what,
             ens_err_name(err));
    uv_timer_start(&l->retry, loader_retry_cb, KEYS_RETRY_MS, 0);
}

/* install_key unwraps |blob| and stores the key in the set; 0 or an error. */
static int install_key(struct keys_loader *l, struct span blob)
{
    const struct key_row *row = &kKeys[l->step];
    struct rt_buf plain;
    rt_buf_init(&plain, KEYS_MAX_BLOB);
    int rc = seal_unwrap(l->app->master, row->label, blob, &plain);
    if (rc == 0) {
        if (row->kind == KEY_SEAL) {
            struct span s = rt_buf_span(&plain);
            uint32_t kid;
            if (plain.len != SEAL_BLOB_BYTES || !span_get_u32(&s, &kid) ||
                !span_copy_bytes(&s, l->ks->seal_key, ENS_KEY_BYTES))
                rc = ENS_EPARSE;
            else
                l->ks->seal_kid = kid;
        } else {
            struct jwk_key *k = jwk_key_parse(rt_buf_span(&plain));
            if (k == NULL ||
                k->alg != (row->kind == KEY_EC ? JWK_ALG_ECDH_ES : JWK_ALG_RSA_OAEP_256)) {
                jwk_key_free(k);
                rc = ENS_EPARSE;
            } else if (row->kind == KEY_EC) {
                l->ks->enroll_ec = k;
            } else {
                l->ks->enroll_rsa = k;
            }
        }
    }
    rt_buf_cleanup_secret(&plain);
    return rc;
}

/* make_key generates a new key of this step's kind and wraps it into l->fresh. */
static int make_key(struct keys_loader *l)
{
    const struct key_row *row = &kKeys[l->step];
    struct rt_buf plain;
    rt_buf_init(&plain, KEYS_MAX_BLOB);
    int rc = 0;
    if (row->kind == KEY_SEAL) {
        uint8_t raw[SEAL_BLOB_BYTES];
        RAND_bytes(raw, sizeof(raw)); /* a random 32-bit key id, then the key */
        rc = rt_buf_append(&plain, raw, sizeof(raw));
        OPENSSL_cleanse(raw, sizeof(raw));
    } else {
        struct jwk_key *k =
            jwk_key_generate(row->kind == KEY_EC ? JWK_ALG_ECDH_ES : JWK_ALG_RSA_OAEP_256);
        rc = k ? jwk_key_marshal(k, &plain) : ENS_ECRYPTO;
        jwk_key_free(k);
    }
    rt_buf_reset(&l->fresh);
    if (rc == 0)
        rc = seal_wrap(l->app->master, row->label, rt_buf_span(&plain), &l->fresh);
    rt_buf_cleanup_secret(&plain);
    return rc;
}

static void loader_close_cb(uv_handle_t *h)
{
    ens_free(h->data); /* the loader embeds the timer */
}

static void loader_publish(struct keys_loader *l)
{
    struct act_keyset *ks = l->ks;
    const struct jwk_key *pub[2] = {ks->enroll_ec, ks->enroll_rsa};
    struct rt_buf jwks;
    rt_buf_init(&jwks, 16384);
    if (jwk_jwks_build(pub, 2, &jwks) != 0) {
        rt_buf_cleanup(&jwks);
        RT_LOG_E("keys.load", "cannot build the JWKS document");
        return;
    }
    ks->jwks = (char *)rt_buf_take(&jwks, NULL);
    atomic_store_explicit(&l->app->keys, ks, memory_order_release);
    RT_LOG_I("keys.load", "enrollment keys ec=%s rsa=%s, sealing key id=%08x ready",
             ks->enroll_ec->kid, ks->enroll_rsa->kid, ks->seal_kid);
    l->ks = NULL;
    rt_buf_cleanup_secret(&l->fresh);
    uv_close((uv_handle_t *)&l->retry, loader_close_cb);
}

static void on_get(int err, struct span blob, void *ud);

static void on_setnx(int err, int created, void *ud)
{
    struct keys_loader *l = ud;
    if (err) {
        loader_fail(l, err, "setnx");
        return;
    }
    if (created) {
        RT_LOG_I("keys.create", "key=%s created", kKeys[l->step].name);
        int rc = install_key(l, rt_buf_span(&l->fresh));
        if (rc) {
            loader_fail(l, rc, "install");
            return;
        }
        l->step++;
        loader_next(l);
        return;
    }
    /* Another ensd won the race: use its key. */
    int rc = store_keys_get(l->store, kKeys[l->step].name,
                            uv_now(store_loop(l->store)) + ENS_STORE_DEADLINE_MS, on_get, l);
    if (rc)
        loader_fail(l, rc, "get");
}

static void on_get(int err, struct span blob, void *ud)
{
    struct keys_loader *l = ud;
    if (err == ENS_ENOTFOUND) {
        int rc = make_key(l);
        if (rc == 0)
            rc =
                store_keys_setnx(l->store, kKeys[l->step].name, l->fresh.data, l->fresh.len,
                                 uv_now(store_loop(l->store)) + ENS_STORE_DEADLINE_MS, on_setnx, l);
        if (rc)
            loader_fail(l, rc, "create");
        return;
    }
    if (err) {
        loader_fail(l, err, "get");
        return;
    }
    int rc = install_key(l, blob);
    if (rc) {
        /* A key that does not unwrap means the master key is not the one the
         * keys were made with: retrying cannot fix that, and making new keys
         * would orphan every enrollment. Say so loudly and keep /ready at 503. */
        RT_LOG_E("keys.load",
                 "key=%s does not open with this master key (err=%s): check "
                 "secrets.master_key_file / ENS_SECRETS_MASTER_KEY",
                 kKeys[l->step].name, ens_err_name(rc));
        uv_timer_start(&l->retry, loader_retry_cb, KEYS_RETRY_MS * 30, 0);
        return;
    }
    l->step++;
    loader_next(l);
}

static void loader_next(struct keys_loader *l)
{
    if (l->step == NKEYS) {
        loader_publish(l);
        return;
    }
    int rc = store_keys_get(l->store, kKeys[l->step].name,
                            uv_now(store_loop(l->store)) + ENS_STORE_DEADLINE_MS, on_get, l);
    if (rc)
        loader_fail(l, rc, "get");
}

void act_keys_load_start(struct ens_app *app, struct store *store)
{
    struct keys_loader *l = ens_calloc(1, sizeof(*l));
    l->app = app;
    l->store = store;
    l->ks = ens_calloc(1, sizeof(*l->ks));
    rt_buf_init(&l->fresh, KEYS_MAX_BLOB);
    uv_timer_init(store_loop(store), &l->retry);
    l->retry.data = l;
    /* The store may still be connecting: the first attempt waits a moment. */
    uv_timer_start(&l->retry, loader_retry_cb, 50, 0);
}

const struct jwk_key *act_keyset_lookup(const char *kid, enum jwk_alg alg, void *ud)
{
    const struct act_keyset *ks = ud;
    const struct jwk_key *keys[2] = {ks->enroll_ec, ks->enroll_rsa};
    for (size_t i = 0; i < 2; i++) {
        if (keys[i] && keys[i]->alg == alg && strcmp(keys[i]->kid, kid) == 0)
            return keys[i];
    }
    return NULL;
}

const uint8_t *act_keyset_seal_key(const struct act_keyset *ks, uint32_t kid)
{
    return ks && ks->seal_kid == kid ? ks->seal_key : NULL;
}

void act_keyset_free(struct act_keyset *ks)
{
    if (ks == NULL)
        return;
    jwk_key_free(ks->enroll_ec);
    jwk_key_free(ks->enroll_rsa);
    OPENSSL_cleanse(ks->seal_key, sizeof(ks->seal_key));
    ens_free(ks->jwks);
    ens_free(ks);
}
