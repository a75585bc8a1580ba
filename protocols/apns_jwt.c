/* ES256 provider tokens for APNs (see apns_jwt.h). */
#include "protocols/apns_jwt.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/file.h"

#define APNS_JWT_MAX_ID  32
#define APNS_JWT_MAX_LEN 512 /* header + claims + signature, encoded */

struct apns_jwt {
    EVP_PKEY *key;
    char team_id[APNS_JWT_MAX_ID + 1];
    char key_id[APNS_JWT_MAX_ID + 1];
    struct rt_buf token; /* current JWT, empty when none */
    uint64_t iat;
    int force;
    uint64_t signs;
    apns_jwt_clock_fn clock;
    void *clock_ud;
};

static uint64_t wall_clock(void *ud)
{
    return (uint64_t)time(NULL);
}

static int id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > APNS_JWT_MAX_ID)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
            return 0;
    }
    return 1;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

struct apns_jwt *apns_jwt_new(const char *key_file, const char *team_id, const char *key_id,
                              char *err, size_t errlen)
{
    if (!key_file || !id_ok(team_id) || !id_ok(key_id)) {
        set_err(err, errlen, "apns: team_id and key_id must be 1-32 letters or digits");
        return NULL;
    }
    struct rt_buf pem;
    rt_buf_init(&pem, APNS_JWT_MAX_KEY_FILE);
    if (rt_file_read(key_file, &pem) != 0) {
        rt_buf_cleanup_secret(&pem);
        set_err(err, errlen, "apns: cannot read the key file");
        return NULL;
    }
    EVP_PKEY *key = NULL;
    BIO *bio = BIO_new_mem_buf(pem.data, pem.len);
    if (bio) {
        key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    rt_buf_cleanup_secret(&pem);
    const EC_KEY *ec = key ? EVP_PKEY_get0_EC_KEY(key) : NULL;
    if (!ec || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1) {
        EVP_PKEY_free(key);
        set_err(err, errlen, "apns: the key file is not a PKCS#8 P-256 private key");
        return NULL;
    }
    struct apns_jwt *j = ens_calloc(1, sizeof(*j));
    j->key = key;
    memcpy(j->team_id, team_id, strlen(team_id) + 1);
    memcpy(j->key_id, key_id, strlen(key_id) + 1);
    rt_buf_init(&j->token, APNS_JWT_MAX_LEN);
    j->clock = wall_clock;
    return j;
}

void apns_jwt_free(struct apns_jwt *j)
{
    if (!j)
        return;
    EVP_PKEY_free(j->key);
    rt_buf_cleanup_secret(&j->token);
    ens_wipe(j, sizeof(*j));
    ens_free(j);
}

void apns_jwt_set_clock(struct apns_jwt *j, apns_jwt_clock_fn fn, void *ud)
{
    j->clock = fn ? fn : wall_clock;
    j->clock_ud = ud;
}

static int sign(struct apns_jwt *j, uint64_t now)
{
    struct rt_buf t, part;
    rt_buf_init(&t, APNS_JWT_MAX_LEN);
    rt_buf_init(&part, APNS_JWT_MAX_LEN);
    int rv = ENS_ECRYPTO;
    ECDSA_SIG *sig = NULL;

    /* The ids were checked to be alphanumeric, so they need no JSON escaping. */
    if (rt_buf_appendf(&part, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", j->key_id) ||
        b64_encode(&t, rt_buf_span(&part), 1) || rt_buf_append_str(&t, "."))
        goto out;
    rt_buf_reset(&part);
    if (rt_buf_appendf(&part, "{\"iss\":\"%s\",\"iat\":%llu}", j->team_id,
                       (unsigned long long)now) ||
        b64_encode(&t, rt_buf_span(&part), 1))
        goto out;

    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(t.data, t.len, digest);
    sig = ECDSA_do_sign(digest, sizeof(digest), EVP_PKEY_get0_EC_KEY(j->key));
    if (!sig)
        goto out;
    /* JOSE wants the raw fixed-width R||S, not DER (RFC 7518 3.4). */
    const BIGNUM *r, *s;
    uint8_t rs[64];
    ECDSA_SIG_get0(sig, &r, &s);
    if (!BN_bn2bin_padded(rs, 32, r) || !BN_bn2bin_padded(rs + 32, 32, s))
        goto out;
    if (rt_buf_append_str(&t, ".") || b64_encode(&t, span_make(rs, sizeof(rs)), 1))
        goto out;

    rt_buf_cleanup_secret(&j->token);
    j->token = t;
    rt_buf_init(&t, APNS_JWT_MAX_LEN);
    j->iat = now;
    j->force = 0;
    j->signs++;
    rv = 0;
out:
    ECDSA_SIG_free(sig);
    rt_buf_cleanup_secret(&t);
    rt_buf_cleanup(&part);
    return rv;
}

int apns_jwt_get0(struct apns_jwt *j, const char **out)
{
    uint64_t now = j->clock(j->clock_ud);
    /* A clock stepping backwards must not pin an old token forever, hence the
     * "now < iat" case. */
    int stale = j->token.len == 0 || j->force || now < j->iat || now - j->iat >= APNS_JWT_REFRESH_S;
    if (stale) {
        int rv = sign(j, now);
        if (rv != 0 && j->token.len == 0)
            return rv;
    }
    *out = rt_buf_cstr(&j->token);
    return 0;
}

int apns_jwt_expired(struct apns_jwt *j, const char *rejected)
{
    if (!rejected || j->token.len == 0 || strcmp(rejected, rt_buf_cstr(&j->token)) != 0)
        return 0;
    j->force = 1;
    return 1;
}

uint64_t apns_jwt_issued_at(const struct apns_jwt *j)
{
    return j->token.len ? j->iat : 0;
}

uint64_t apns_jwt_signs(const struct apns_jwt *j)
{
    return j->signs;
}
