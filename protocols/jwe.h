/* JSON Web Encryption (RFC 7516), compact serialization, the narrow profile of API.md 1.2:
 * alg "ECDH-ES" (P-256, direct key agreement, Concat KDF of RFC 7518 4.6) or "RSA-OAEP-256";
 * enc "A256GCM" or "A128GCM"; the protected header names the recipient key by "kid".
 *
 * The decryptor does no I/O and keeps no state: it may run on any thread, concurrently, as long
 * as the key lookup it is given is itself safe there. */
#ifndef ENS_PROTOCOLS_JWE_H
#define ENS_PROTOCOLS_JWE_H

#include "protocols/jwk.h"
#include "runtime/buf.h"
#include "runtime/span.h"

/* The longest "kid" we look up; longer ones are malformed rather than unknown. */
#define JWE_MAX_KID 128

enum jwe_enc {
    JWE_ENC_A256GCM = 1,
    JWE_ENC_A128GCM = 2,
};

/* What a successful jwe_decrypt learned from the protected header. */
struct jwe_info {
    enum jwk_alg alg;
    enum jwe_enc enc;
    char kid[JWE_MAX_KID + 1]; /* NUL-terminated, printable ASCII */
};

/* jwe_key_lookup_fn returns the private key named |kid| (NUL-terminated, 1..JWE_MAX_KID
 * printable ASCII characters, never '"' or '\\') if it exists and serves |alg|, else NULL. The key
 * is borrowed: it must stay valid until jwe_decrypt returns. Called at most once per jwe_decrypt,
 * on the caller's thread, and only once the whole header is known to be well-formed. */
typedef const struct jwk_key *(*jwe_key_lookup_fn)(const char *kid, enum jwk_alg alg, void *ud);

/* jwe_decrypt checks and decrypts the compact JWE |compact| (untrusted, borrowed) and appends the
 * plaintext to |plaintext|. |info| may be NULL.
 *
 * Returns 0; ENS_EUNKNOWNKID if |lookup| knows no key for the header's kid and alg; or ENS_EJWE
 * for everything else: malformed input of any kind, an unsupported alg or enc, "zip" or "crit"
 * present, an "epk" that is not a P-256 point, sizes over JOSE_MAX_COMPACT, JOSE_MAX_HEADER_JSON
 * or JOSE_MAX_PLAINTEXT, a failed decryption, or |plaintext| too small for the result. RSA-OAEP
 * failures are not distinguishable from tag failures (no padding oracle).
 *
 * The plaintext is secret: release |plaintext| with rt_buf_cleanup_secret, and pass it empty so
 * that growing it leaves no copy behind. On error |plaintext| and |info| are unchanged and every
 * intermediate secret has been wiped. */
int jwe_decrypt(struct span compact, jwe_key_lookup_fn lookup, void *ud, struct rt_buf *plaintext,
                struct jwe_info *info);

/* jwe_encrypt_ecdh_es seals |plaintext| to the public half of |recipient| (an ECDH-ES key) with
 * |enc| and appends the compact JWE to |out|; the protected header holds alg, enc, kid and epk.
 * A device does this, not the server: it exists for tests, tools and fuzz seeds. Returns 0,
 * ENS_EINVAL (wrong key kind, plaintext over JOSE_MAX_PLAINTEXT), ENS_ECRYPTO or ENS_ETOOBIG;
 * |out| is unchanged on error. */
int jwe_encrypt_ecdh_es(const struct jwk_key *recipient, enum jwe_enc enc, struct span plaintext,
                        struct rt_buf *out);

#endif
