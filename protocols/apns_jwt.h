/* The APNs provider token: an ES256 JWT signed with the team's .p8 key.
 *
 * push.md 1.4 and 8: header {"alg":"ES256","kid":<KeyID>}, claims
 * {"iss":<TeamID>,"iat":<unix seconds>}, signature raw R||S base64url. One token
 * is shared by every connection of a credential, re-signed after
 * APNS_JWT_REFRESH_S and never sooner than APNS_JWT_MIN_AGE_S unless APNs said
 * ExpiredProviderToken. The key and tokens are wiped when freed and never
 * logged.
 *
 * Threading: an apns_jwt is used from one thread (its client's loop). */
#ifndef ENS_PROTOCOLS_APNS_JWT_H
#define ENS_PROTOCOLS_APNS_JWT_H

#include <stddef.h>
#include <stdint.h>

#define APNS_JWT_REFRESH_S    (45 * 60)
#define APNS_JWT_MIN_AGE_S    (20 * 60)
#define APNS_JWT_MAX_KEY_FILE 16384 /* a P-256 .p8 is ~250 bytes */

struct apns_jwt;

/* Clock returning UNIX seconds; tests inject one. */
typedef uint64_t (*apns_jwt_clock_fn)(void *ud);

/* apns_jwt_new loads the PKCS#8 PEM P-256 key in |key_file| for |team_id| and
 * |key_id| (each 1-32 ASCII letters or digits). NULL on failure with a reason
 * (never key material) in |err| (capacity |errlen|). */
struct apns_jwt *apns_jwt_new(const char *key_file, const char *team_id, const char *key_id,
                              char *err, size_t errlen);

/* apns_jwt_free wipes and frees; NULL is fine. */
void apns_jwt_free(struct apns_jwt *j);

/* apns_jwt_set_clock replaces the wall clock (time(NULL)) by |fn|. */
void apns_jwt_set_clock(struct apns_jwt *j, apns_jwt_clock_fn fn, void *ud);

/* apns_jwt_get0 sets |*out| to the current token (borrowed, NUL-terminated,
 * valid until the next call on |j|), signing one first if there is none or it is
 * APNS_JWT_REFRESH_S old. 0 or ENS_ECRYPTO. */
int apns_jwt_get0(struct apns_jwt *j, const char **out);

/* apns_jwt_expired reports that APNs rejected |rejected| with
 * ExpiredProviderToken. If it is still the current token, the next get0 signs a
 * new one whatever its age; a stale report about an older token changes
 * nothing. Returns 1 when a re-sign was scheduled, else 0. */
int apns_jwt_expired(struct apns_jwt *j, const char *rejected);

/* apns_jwt_issued_at returns the current token's iat, 0 if none yet. */
uint64_t apns_jwt_issued_at(const struct apns_jwt *j);

/* apns_jwt_signs returns how many tokens |j| has signed (metrics, tests). */
uint64_t apns_jwt_signs(const struct apns_jwt *j);

#endif
