/* The server's own keys: enrollment keys (ECDH-ES P-256 and RSA-OAEP-256, the
 * JWKS devices seal their credentials to) and the sealing key that, with the
 * K inside each callback token, encrypts credentials at rest.
 *
 * They live in Redis wrapped under the master key (seal_wrap), so a copy of
 * Redis alone opens nothing. The first ensd to start creates them with SET NX,
 * so several starting at once agree on one set. A key set is immutable once
 * published; readers on any thread use it without locks. */
#ifndef ENS_ACTORS_KEYS_H
#define ENS_ACTORS_KEYS_H

#include <stdint.h>

#include "actors/app.h"
#include "protocols/jwk.h"
#include "runtime/buf.h"

struct act_keyset {
    struct jwk_key *enroll_ec;
    struct jwk_key *enroll_rsa;
    uint32_t seal_kid;
    uint8_t seal_key[ENS_KEY_BYTES];
    char *jwks; /* the JWKS document served by GET /v1/keys */
};

/* act_keys_load_start begins loading (or creating) the key set through
 * |store| on the calling scheduler's loop, retrying every second while Redis
 * is unavailable, and publishes it into app->keys when done. */
void act_keys_load_start(struct ens_app *app, struct store *store);

/* act_keyset_lookup is a jwe_key_lookup_fn over a key set (|ud|). */
const struct jwk_key *act_keyset_lookup(const char *kid, enum jwk_alg alg, void *ud);

/* act_keyset_seal_key returns the sealing key with id |kid|, or NULL. */
const uint8_t *act_keyset_seal_key(const struct act_keyset *ks, uint32_t kid);

/* act_keyset_free releases a key set (wiping the sealing key); NULL is fine. */
void act_keyset_free(struct act_keyset *ks);

#endif
