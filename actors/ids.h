/* Stable identifiers and keyed digests.
 *
 * userId and deviceId are derived, not drawn: HMAC-SHA256 under a key derived
 * from the master key, over (tenant, lower-cased address) and (tenant, the
 * app's device id). Two concurrent first enrollments of one mailbox therefore
 * agree on its id without a lock or a Redis round trip, and the ids reveal
 * nothing about the address. */
#ifndef ENS_ACTORS_IDS_H
#define ENS_ACTORS_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/span.h"

#define ENS_ID_CHARS 22 /* base64url of 16 bytes */

/* ens_ids_derive_keys fills the id and fingerprint keys from the master key. */
void ens_ids_derive_keys(const uint8_t master[32], uint8_t id_key[32], uint8_t fp_key[32]);

/* ens_user_id writes the mailbox id of (|tenant|, |email|) to |out|. */
void ens_user_id(const uint8_t id_key[32], const char *tenant, struct span email,
                 char out[ENS_ID_CHARS + 1]);

/* ens_device_id writes the server's id for (|tenant|, app device id). */
void ens_device_id(const uint8_t id_key[32], const char *tenant, struct span client_id,
                   char out[ENS_ID_CHARS + 1]);

/* ens_random_id writes |nbytes| (<= 32) random bytes as base64url. */
void ens_random_id(size_t nbytes, char *out, size_t outcap);

/* ens_sha256_hex writes the hex SHA-256 of |data| (65 bytes with the NUL). */
void ens_sha256_hex(struct span data, char out[65]);

/* ens_cred_fingerprint returns a 16-bit keyed digest of the credentials: enough
 * to notice that they changed, too short to test password guesses against. It
 * is never 0, which device records keep for "never proved". */
uint16_t ens_cred_fingerprint(const uint8_t fp_key[32], struct span creds);

/* ens_consttime_eq compares |n| bytes without an early exit. */
int ens_consttime_eq(const uint8_t *a, const uint8_t *b, size_t n);

#endif
