/* Split-knowledge sealing of mailbox credentials, and wrapping of the server's own keys at rest
 * (ARCHITECTURE.md "Secrets", API.md 2).
 *
 * The callback token that Exchange holds in its URL carries a random per-subscription key K.
 * Credentials rest in Redis only as AES-256-GCM ciphertext under
 *     HKDF-SHA256(ikm = K || server_key, salt = "ens-seal-v1", info = uid || cred_id),
 * so the blob in Redis, the server's sealing key and the token each open nothing alone.
 * The server's sealing and enrollment keys are in turn wrapped under a master key that comes from
 * the environment or a file.
 *
 * Everything here is stateless and thread-safe, except seal_master_load which does blocking file
 * I/O and belongs at startup. Every secret (K, keys, credentials) is wiped by the function that
 * made a temporary copy of it, and is never formatted into text other than the token itself. */
#ifndef ENS_PROTOCOLS_SEAL_H
#define ENS_PROTOCOLS_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/buf.h"
#include "runtime/span.h"

#define SEAL_TOKEN_VERSION 1
#define SEAL_UID_BYTES     16
#define SEAL_CRED_ID_BYTES 8
#define SEAL_K_BYTES       32
#define SEAL_KEY_BYTES     32 /* a server sealing key, and the master key */
/* version (1) | skid (4, big-endian) | uid (16) | cred_id (8) | K (32) */
#define SEAL_TOKEN_BYTES (1 + 4 + SEAL_UID_BYTES + SEAL_CRED_ID_BYTES + SEAL_K_BYTES)
/* base64url without padding of SEAL_TOKEN_BYTES: 82 characters. */
#define SEAL_TOKEN_CHARS ((SEAL_TOKEN_BYTES * 4 + 2) / 3)
/* nonce (12) | ciphertext | tag (16): what seal_creds adds to the credentials' length. */
#define SEAL_BLOB_OVERHEAD (12 + 16)
/* version (1) | nonce (12) | ciphertext | tag (16): what seal_wrap adds. */
#define SEAL_WRAP_OVERHEAD (1 + 12 + 16)
/* The largest credentials we seal: they come out of one enrollment JWE. */
#define SEAL_MAX_CREDS (48 * 1024)
/* The largest payload seal_wrap takes (a private key, a key ring). */
#define SEAL_MAX_WRAP (64 * 1024)

/* A parsed callback token. |k| is secret: end its life with seal_token_cleanup. */
struct seal_token {
    uint8_t version;
    uint32_t skid; /* which server sealing key */
    uint8_t uid[SEAL_UID_BYTES];
    uint8_t cred_id[SEAL_CRED_ID_BYTES];
    uint8_t k[SEAL_K_BYTES];
};

/* seal_key_new fills |out| with a fresh random server sealing key (or master key). Always 0. */
int seal_key_new(uint8_t out[SEAL_KEY_BYTES]);

/* seal_token_new makes a token for mailbox |uid| under server key |skid|, with a fresh random
 * credential id and K. Always 0. */
int seal_token_new(uint32_t skid, const uint8_t uid[SEAL_UID_BYTES], struct seal_token *out);

/* seal_token_encode writes the token as SEAL_TOKEN_CHARS base64url characters and a NUL into
 * |out|. The text carries K: it goes into the callback URL and nowhere else (never a log). */
void seal_token_encode(const struct seal_token *t, char out[SEAL_TOKEN_CHARS + 1]);

/* seal_token_parse reads a token from the untrusted |text| (borrowed): exactly SEAL_TOKEN_CHARS
 * canonical base64url characters of a known version. Returns 0 or ENS_EPARSE; |out| is written
 * only on success. */
int seal_token_parse(struct span text, struct seal_token *out);

/* seal_token_equal returns 1 when |a| and |b| are the same token (every
 * field, K included), comparing in constant time; 0 otherwise. */
int seal_token_equal(const struct seal_token *a, const struct seal_token *b);

/* seal_token_cleanup wipes |t|, K included. */
void seal_token_cleanup(struct seal_token *t);

/* seal_creds encrypts |creds| (at most SEAL_MAX_CREDS bytes) for token |t| and server key
 * |server_key| (the key numbered t->skid), and appends nonce || ciphertext || tag to |blob|.
 * Returns 0, ENS_EINVAL, ENS_ECRYPTO or ENS_ETOOBIG; |blob| is unchanged on error. */
int seal_creds(const struct seal_token *t, const uint8_t server_key[SEAL_KEY_BYTES],
               struct span creds, struct rt_buf *blob);

/* seal_open_creds reverses seal_creds: it appends the credentials to |creds_out| (secret: release
 * with rt_buf_cleanup_secret; pass it empty so growing leaves no copy). Returns 0, ENS_ECRYPTO
 * when anything differs (K, server key, uid, cred id, skid, version, a bit of the blob), or
 * ENS_ETOOBIG; |creds_out| is unchanged on error. */
int seal_open_creds(const struct seal_token *t, const uint8_t server_key[SEAL_KEY_BYTES],
                    struct span blob, struct rt_buf *creds_out);

/* seal_wrap encrypts |plaintext| (at most SEAL_MAX_WRAP bytes) under |master| with AES-256-GCM,
 * binding the NUL-terminated |label| (what the bytes are, e.g. "enroll-key:<kid>") as associated
 * data, and appends version || nonce || ciphertext || tag to |out|. Returns 0, ENS_EINVAL,
 * ENS_ECRYPTO or ENS_ETOOBIG; |out| is unchanged on error. */
int seal_wrap(const uint8_t master[SEAL_KEY_BYTES], const char *label, struct span plaintext,
              struct rt_buf *out);

/* seal_unwrap reverses seal_wrap with the same |label|, appending the plaintext to |out| (secret:
 * rt_buf_cleanup_secret). Returns 0, ENS_ECRYPTO (wrong master key or label, or altered bytes) or
 * ENS_ETOOBIG; |out| is unchanged on error. */
int seal_unwrap(const uint8_t master[SEAL_KEY_BYTES], const char *label, struct span wrapped,
                struct rt_buf *out);

/* seal_master_load finds the master key. A non-empty |env_b64| wins: standard base64 (or
 * base64url) of exactly 32 bytes. Otherwise |file| is read: 32 raw bytes, or their base64 with an
 * optional trailing newline. If |file| does not exist it is created (O_EXCL, mode 0600) holding a
 * fresh random key as base64 and a newline, and *created is set to 1 so that the caller can log a
 * warning; otherwise *created is 0. |created| may be NULL.
 * Returns 0, ENS_ECONFIG (bad key text, wrong length, no source given) or ENS_EIO; |out| is
 * written only on success. Blocking file I/O: call at startup, never on the event loop. */
int seal_master_load(const char *file, const char *env_b64, uint8_t out[SEAL_KEY_BYTES],
                     int *created);

#endif
