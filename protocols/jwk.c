#include "protocols/jwk.h"

#include <string.h>

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"

#define P256_COORD_BYTES 32
/* Room for base64url of the biggest member: an RSA modulus of JWK_RSA_MAX_BITS. */
#define MEMBER_B64_MAX ((JWK_RSA_MAX_BITS / 8 * 4 + 2) / 3 + 4)

/* The two public members of a key, base64url: x and y for EC, n and e for RSA. */
struct pub_members {
    struct rt_buf a;
    struct rt_buf b;
};

const char *jwk_alg_name(enum jwk_alg alg)
{
    switch (alg) {
    case JWK_ALG_ECDH_ES:
        return "ECDH-ES";
    case JWK_ALG_RSA_OAEP_256:
        return "RSA-OAEP-256";
    }
    return NULL;
}

static int append_bn_b64(struct rt_buf *out, const BIGNUM *bn, size_t width)
{
    /* JWK wants EC coordinates at full field width and RSA integers minimal (RFC 7518 6.2.1.2,
     * 6.3.1.1); width 0 means minimal. */
    size_t n = width ? width : BN_num_bytes(bn);
    if (n == 0 || n > JWK_RSA_MAX_BITS / 8)
        return ENS_ECRYPTO;
    uint8_t *raw = ens_malloc(n);
    int rc = ENS_ECRYPTO;
    if (BN_bn2bin_padded(raw, n, bn))
        rc = b64_encode(out, span_make(raw, n), 1);
    ens_free(raw);
    return rc;
}

static int pub_members_get(const struct jwk_key *key, struct pub_members *m)
{
    rt_buf_init(&m->a, MEMBER_B64_MAX);
    rt_buf_init(&m->b, MEMBER_B64_MAX);
    int rc = ENS_ECRYPTO;
    if (key->alg == JWK_ALG_ECDH_ES) {
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key->pkey);
        const EC_POINT *pt = ec ? EC_KEY_get0_public_key(ec) : NULL;
        BIGNUM *x = BN_new(), *y = BN_new();
        if (pt && x && y &&
            EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(ec), pt, x, y, NULL)) {
            rc = append_bn_b64(&m->a, x, P256_COORD_BYTES);
            if (rc == 0)
                rc = append_bn_b64(&m->b, y, P256_COORD_BYTES);
        }
        BN_free(x);
        BN_free(y);
    } else if (key->alg == JWK_ALG_RSA_OAEP_256) {
        const RSA *rsa = EVP_PKEY_get0_RSA(key->pkey);
        if (rsa) {
            rc = append_bn_b64(&m->a, RSA_get0_n(rsa), 0);
            if (rc == 0)
                rc = append_bn_b64(&m->b, RSA_get0_e(rsa), 0);
        }
    }
    if (rc) {
        rt_buf_cleanup(&m->a);
        rt_buf_cleanup(&m->b);
    }
    return rc;
}

static void pub_members_cleanup(struct pub_members *m)
{
    rt_buf_cleanup(&m->a);
    rt_buf_cleanup(&m->b);
}

/* RFC 7638: SHA-256 over the required members only, in lexicographic order, no whitespace. */
static int compute_kid(struct jwk_key *key)
{
    struct pub_members m;
    int rc = pub_members_get(key, &m);
    if (rc)
        return rc;
    struct rt_buf canon;
    rt_buf_init(&canon, 2 * MEMBER_B64_MAX + 64);
    if (key->alg == JWK_ALG_ECDH_ES)
        rc = rt_buf_appendf(&canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                            rt_buf_cstr(&m.a), rt_buf_cstr(&m.b));
    else
        rc = rt_buf_appendf(&canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}",
                            rt_buf_cstr(&m.b), rt_buf_cstr(&m.a));
    pub_members_cleanup(&m);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    struct rt_buf kid;
    rt_buf_init(&kid, JWK_KID_CHARS);
    if (rc == 0) {
        SHA256(canon.data, canon.len, digest);
        rc = b64_encode(&kid, span_make(digest, sizeof(digest)), 1);
    }
    if (rc == 0 && kid.len == JWK_KID_CHARS)
        memcpy(key->kid, kid.data, JWK_KID_CHARS + 1);
    else if (rc == 0)
        rc = ENS_ECRYPTO;
    rt_buf_cleanup(&kid);
    rt_buf_cleanup(&canon);
    return rc;
}

/* key_adopt checks that |pkey| is a kind of key we serve and wraps it; it takes ownership of
 * |pkey| in every case. */
static struct jwk_key *key_adopt(EVP_PKEY *pkey)
{
    if (pkey == NULL)
        return NULL;
    enum jwk_alg alg;
    if (EVP_PKEY_id(pkey) == EVP_PKEY_EC) {
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
        if (ec == NULL || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1 ||
            EC_KEY_get0_public_key(ec) == NULL || EC_KEY_get0_private_key(ec) == NULL ||
            !EC_KEY_check_key(ec))
            goto fail;
        alg = JWK_ALG_ECDH_ES;
    } else if (EVP_PKEY_id(pkey) == EVP_PKEY_RSA) {
        RSA *rsa = EVP_PKEY_get0_RSA(pkey);
        if (rsa == NULL || RSA_bits(rsa) < JWK_RSA_BITS || RSA_bits(rsa) > JWK_RSA_MAX_BITS ||
            RSA_get0_d(rsa) == NULL || !RSA_check_key(rsa))
            goto fail;
        alg = JWK_ALG_RSA_OAEP_256;
    } else {
        goto fail;
    }
    struct jwk_key *key = ens_calloc(1, sizeof(*key));
    key->alg = alg;
    key->pkey = pkey;
    if (compute_kid(key) != 0) {
        jwk_key_free(key);
        return NULL;
    }
    return key;
fail:
    EVP_PKEY_free(pkey);
    return NULL;
}

static EVP_PKEY *generate_ec(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (ec && pkey && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(pkey, ec))
        return pkey;
    EC_KEY_free(ec);
    EVP_PKEY_free(pkey);
    return NULL;
}

static EVP_PKEY *generate_rsa(void)
{
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    EVP_PKEY *pkey = EVP_PKEY_new();
    if (rsa && e && pkey && BN_set_word(e, RSA_F4) &&
        RSA_generate_key_ex(rsa, JWK_RSA_BITS, e, NULL) && EVP_PKEY_assign_RSA(pkey, rsa)) {
        BN_free(e);
        return pkey;
    }
    RSA_free(rsa);
    BN_free(e);
    EVP_PKEY_free(pkey);
    return NULL;
}

struct jwk_key *jwk_key_generate(enum jwk_alg alg)
{
    switch (alg) {
    case JWK_ALG_ECDH_ES:
        return key_adopt(generate_ec());
    case JWK_ALG_RSA_OAEP_256:
        return key_adopt(generate_rsa());
    }
    return NULL;
}

struct jwk_key *jwk_key_parse(struct span der)
{
    CBS cbs;
    CBS_init(&cbs, der.p, der.len);
    EVP_PKEY *pkey = EVP_parse_private_key(&cbs);
    if (pkey && CBS_len(&cbs) != 0) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return key_adopt(pkey);
}

int jwk_key_marshal(const struct jwk_key *key, struct rt_buf *out)
{
    CBB cbb;
    uint8_t *der = NULL;
    size_t len = 0;
    if (!CBB_init(&cbb, 2048))
        return ENS_ECRYPTO;
    if (!EVP_marshal_private_key(&cbb, key->pkey) || !CBB_finish(&cbb, &der, &len)) {
        /* BoringSSL's allocator wipes what it frees, partial encodings included. */
        CBB_cleanup(&cbb);
        return ENS_ECRYPTO;
    }
    int rc = rt_buf_append(out, der, len);
    OPENSSL_cleanse(der, len);
    OPENSSL_free(der);
    return rc;
}

int jwk_key_public_json(const struct jwk_key *key, struct rt_buf *out)
{
    struct pub_members m;
    int rc = pub_members_get(key, &m);
    if (rc)
        return rc;
    /* Build aside and append once, so that |out| is untouched on error. */
    struct rt_buf j;
    rt_buf_init(&j, JWK_MAX_PUBLIC_JSON);
    if (key->alg == JWK_ALG_ECDH_ES)
        rc = rt_buf_appendf(&j,
                            "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\","
                            "\"alg\":\"ECDH-ES\",\"use\":\"enc\",\"kid\":\"%s\"}",
                            rt_buf_cstr(&m.a), rt_buf_cstr(&m.b), key->kid);
    else
        rc = rt_buf_appendf(&j,
                            "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\","
                            "\"alg\":\"RSA-OAEP-256\",\"use\":\"enc\",\"kid\":\"%s\"}",
                            rt_buf_cstr(&m.a), rt_buf_cstr(&m.b), key->kid);
    pub_members_cleanup(&m);
    if (rc == 0)
        rc = rt_buf_append(out, j.data, j.len);
    rt_buf_cleanup(&j);
    return rc;
}

int jwk_jwks_build(const struct jwk_key *const *keys, size_t n, struct rt_buf *out)
{
    size_t start = out->len;
    int rc = rt_buf_append_str(out, "{\"keys\":[");
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
            rc = rt_buf_append_str(out, ",");
        if (rc == 0)
            rc = jwk_key_public_json(keys[i], out);
    }
    if (rc == 0)
        rc = rt_buf_append_str(out, "]}");
    if (rc) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return rc;
}

void jwk_key_free(struct jwk_key *key)
{
    if (key == NULL)
        return;
    EVP_PKEY_free(key->pkey);
    ens_free(key);
}
