/* Enrollment keys as JSON Web Keys (RFC 7517): generation, public JWK/JWKS export, and a
 * private-key storage format.
 *
 * Two kinds of key exist, one per accepted JWE "alg" (API.md 1.1): EC P-256 for ECDH-ES and RSA
 * (2048 bits or more) for RSA-OAEP-256. A key's "kid" is its RFC 7638 thumbprint, so it is derived
 * from the key itself and never needs storing separately. Keys are immutable once built and may
 * be shared read-only between threads; no function here keeps global state. */
#ifndef ENS_PROTOCOLS_JWK_H
#define ENS_PROTOCOLS_JWK_H

#include <stddef.h>

#include <openssl/base.h>

#include "runtime/buf.h"
#include "runtime/span.h"

/* The base64url (unpadded) SHA-256 thumbprint is always 43 characters. */
#define JWK_KID_CHARS 43
/* Size of generated RSA keys; parsed RSA keys may be larger but never smaller. */
#define JWK_RSA_BITS 2048
/* Upper bound for RSA keys we accept from storage, so a bad blob cannot make us slow. */
#define JWK_RSA_MAX_BITS 8192
/* An upper bound for one public JWK's JSON (an 8192-bit RSA modulus is 1366 characters). */
#define JWK_MAX_PUBLIC_JSON 2048

enum jwk_alg {
    JWK_ALG_ECDH_ES = 1,      /* EC P-256, "ECDH-ES" */
    JWK_ALG_RSA_OAEP_256 = 2, /* RSA, "RSA-OAEP-256" */
};

struct jwk_key {
    char kid[JWK_KID_CHARS + 1]; /* NUL-terminated RFC 7638 thumbprint */
    enum jwk_alg alg;
    EVP_PKEY *pkey; /* owned; holds the private key */
};

/* jwk_alg_name returns the static JOSE name of |alg| ("ECDH-ES", "RSA-OAEP-256"), or NULL. */
const char *jwk_alg_name(enum jwk_alg alg);

/* jwk_key_generate makes a fresh private key for |alg| (P-256, or RSA of JWK_RSA_BITS) and
 * computes its kid. Returns a new key to free with jwk_key_free, or NULL on failure. RSA
 * generation takes tens to hundreds of milliseconds: keep it off the event loop. */
struct jwk_key *jwk_key_generate(enum jwk_alg alg);

/* jwk_key_parse loads a private key from its DER PKCS#8 PrivateKeyInfo (what jwk_key_marshal
 * writes; also what `openssl pkcs8 -topk8 -nocrypt -outform DER` makes). Accepts EC P-256 and RSA
 * of JWK_RSA_BITS..JWK_RSA_MAX_BITS bits, nothing else, and no trailing bytes. |der| is borrowed.
 * Returns a new key to free with jwk_key_free, or NULL. */
struct jwk_key *jwk_key_parse(struct span der);

/* jwk_key_marshal appends the DER PKCS#8 encoding of the private key to |out|. This is secret
 * material: hand it only to seal_wrap, and release |out| with rt_buf_cleanup_secret. Pass an empty
 * |out| so that growing it leaves no copy behind. Returns 0, ENS_ECRYPTO or ENS_ETOOBIG; |out| is
 * unchanged on error. */
int jwk_key_marshal(const struct jwk_key *key, struct rt_buf *out);

/* jwk_key_public_json appends the public JWK of |key| to |out|, members in this order:
 * {"kty":"EC","crv":"P-256","x":…,"y":…,"alg":"ECDH-ES","use":"enc","kid":…} or
 * {"kty":"RSA","n":…,"e":…,"alg":"RSA-OAEP-256","use":"enc","kid":…}.
 * Returns 0, ENS_ECRYPTO or ENS_ETOOBIG; |out| is unchanged on error. */
int jwk_key_public_json(const struct jwk_key *key, struct rt_buf *out);

/* jwk_jwks_build appends {"keys":[…]} with the public JWK of each of the |n| keys (borrowed) in
 * order, for GET /v1/keys. Returns 0, ENS_ECRYPTO or ENS_ETOOBIG; |out| is unchanged on error. */
int jwk_jwks_build(const struct jwk_key *const *keys, size_t n, struct rt_buf *out);

/* jwk_key_free releases |key| (NULL is fine); BoringSSL wipes the private key as it frees it. */
void jwk_key_free(struct jwk_key *key);

#endif
