#include "protocols/jwe.h"

#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/aead.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdh.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"

#define JWE_SEGMENTS     5
#define GCM_IV_BYTES     12
#define GCM_TAG_BYTES    16
#define CEK_MAX_BYTES    32
#define P256_COORD_BYTES 32
#define P256_POINT_BYTES (1 + 2 * P256_COORD_BYTES)
/* base64url of JOSE_MAX_HEADER_JSON bytes, rounded up: anything longer cannot decode within it. */
#define HEADER_B64_MAX ((JOSE_MAX_HEADER_JSON * 4 + 2) / 3)
/* An RSA-OAEP encrypted key is one modulus long, and we take no key above JWK_RSA_MAX_BITS. */
#define EK_MAX_BYTES (JWK_RSA_MAX_BITS / 8)

struct alg_row {
    const char *name;
    enum jwk_alg alg;
};

static const struct alg_row kAlgs[] = {
    {"ECDH-ES", JWK_ALG_ECDH_ES},
    {"RSA-OAEP-256", JWK_ALG_RSA_OAEP_256},
};

struct enc_row {
    const char *name;
    enum jwe_enc enc;
    size_t key_len;
    const EVP_AEAD *(*aead)(void);
};

static const struct enc_row kEncs[] = {
    {"A256GCM", JWE_ENC_A256GCM, 32, EVP_aead_aes_256_gcm},
    {"A128GCM", JWE_ENC_A128GCM, 16, EVP_aead_aes_128_gcm},
};

/* Header members whose presence alone makes us refuse the JWE: we implement no compression and
 * no critical extensions (RFC 7516 4.1.3, RFC 7515 4.1.11). */
static const char *const kRefusedMembers[] = {"zip", "crit"};

struct jwe_header {
    const struct alg_row *alg;
    const struct enc_row *enc;
    char kid[JWE_MAX_KID + 1];
    uint8_t epk[P256_POINT_BYTES]; /* uncompressed point, ECDH-ES only */
    struct rt_buf apu;
    struct rt_buf apv;
};

static const struct enc_row *enc_by_id(enum jwe_enc enc)
{
    for (size_t i = 0; i < sizeof(kEncs) / sizeof(kEncs[0]); i++)
        if (kEncs[i].enc == enc)
            return &kEncs[i];
    return NULL;
}

/* split_compact cuts |in| at its dots into exactly JWE_SEGMENTS parts. */
static int split_compact(struct span in, struct span seg[JWE_SEGMENTS])
{
    size_t n = 0;
    struct span rest = in;
    for (;;) {
        const uint8_t *dot = rest.len ? memchr(rest.p, '.', rest.len) : NULL;
        if (dot == NULL)
            break;
        if (n == JWE_SEGMENTS - 1)
            return 0;
        size_t len = (size_t)(dot - rest.p);
        seg[n++] = span_make(rest.p, len);
        rest = span_make(dot + 1, rest.len - len - 1);
    }
    if (n != JWE_SEGMENTS - 1)
        return 0;
    seg[n] = rest;
    return 1;
}

/* decode_exact decodes base64url |in| into |out| (a fixed array of |len| bytes) only if it
 * decodes to exactly |len| bytes. */
static int decode_exact(struct span in, uint8_t *out, size_t len)
{
    if (in.len != (len * 4 + 2) / 3)
        return 0;
    struct rt_buf b;
    rt_buf_init(&b, len);
    int ok = b64_decode(&b, in, 1) == 0 && b.len == len;
    if (ok)
        memcpy(out, b.data, len);
    rt_buf_cleanup(&b);
    return ok;
}

/* header_bytes_ok refuses what cJSON would silently accept but could make two readers disagree:
 * raw control characters (invalid JSON) and "\u0000", which cJSON turns into a truncated C string.
 * A harmless "\\u0000" is refused too; no honest header contains it. */
static int header_bytes_ok(struct span h)
{
    for (size_t i = 0; i < h.len; i++) {
        uint8_t c = h.p[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return 0;
        if (c == '\\' && i + 5 < h.len && h.p[i + 1] == 'u' && h.p[i + 2] == '0' &&
            h.p[i + 3] == '0' && h.p[i + 4] == '0' && h.p[i + 5] == '0')
            return 0;
    }
    return 1;
}

/* members_unique refuses duplicate member names: RFC 7515 4 lets a parser either reject them or
 * keep the last, and cJSON keeps the first, so two implementations could read different headers. */
static int members_unique(const cJSON *obj)
{
    for (const cJSON *a = obj->child; a; a = a->next) {
        if (a->string == NULL)
            return 0;
        for (const cJSON *b = a->next; b; b = b->next)
            if (b->string == NULL || strcmp(a->string, b->string) == 0)
                return 0;
    }
    return 1;
}

static const char *get_string(const cJSON *obj, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int kid_ok(const char *kid)
{
    size_t n = 0;
    for (; kid[n]; n++) {
        unsigned char c = (unsigned char)kid[n];
        if (n >= JWE_MAX_KID || c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return n > 0;
}

/* parse_epk reads a public P-256 JWK into an uncompressed point; the on-curve check comes later,
 * in epk_point. */
static int parse_epk(const cJSON *epk, uint8_t out[P256_POINT_BYTES])
{
    if (!cJSON_IsObject(epk) || !members_unique(epk))
        return 0;
    const char *kty = get_string(epk, "kty");
    const char *crv = get_string(epk, "crv");
    const char *x = get_string(epk, "x");
    const char *y = get_string(epk, "y");
    if (!kty || !crv || !x || !y || strcmp(kty, "EC") != 0 || strcmp(crv, "P-256") != 0)
        return 0;
    /* A private "d" in an ephemeral public key means the sender leaked it; refuse rather than
     * pretend the exchange is confidential. */
    if (cJSON_GetObjectItemCaseSensitive(epk, "d") != NULL)
        return 0;
    out[0] = POINT_CONVERSION_UNCOMPRESSED;
    return decode_exact(span_cstr(x), out + 1, P256_COORD_BYTES) &&
           decode_exact(span_cstr(y), out + 1 + P256_COORD_BYTES, P256_COORD_BYTES);
}

static int parse_party_info(const cJSON *root, const char *name, struct rt_buf *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
    if (it == NULL)
        return 1;
    return cJSON_IsString(it) && b64_decode(out, span_cstr(it->valuestring), 1) == 0;
}

static int parse_header_json(const cJSON *root, struct jwe_header *h)
{
    if (!cJSON_IsObject(root) || !members_unique(root))
        return 0;
    for (size_t i = 0; i < sizeof(kRefusedMembers) / sizeof(kRefusedMembers[0]); i++)
        if (cJSON_GetObjectItemCaseSensitive(root, kRefusedMembers[i]) != NULL)
            return 0;
    const char *alg = get_string(root, "alg");
    const char *enc = get_string(root, "enc");
    const char *kid = get_string(root, "kid");
    if (!alg || !enc || !kid || !kid_ok(kid))
        return 0;
    for (size_t i = 0; i < sizeof(kAlgs) / sizeof(kAlgs[0]); i++)
        if (strcmp(alg, kAlgs[i].name) == 0)
            h->alg = &kAlgs[i];
    for (size_t i = 0; i < sizeof(kEncs) / sizeof(kEncs[0]); i++)
        if (strcmp(enc, kEncs[i].name) == 0)
            h->enc = &kEncs[i];
    if (h->alg == NULL || h->enc == NULL)
        return 0;
    memcpy(h->kid, kid, strlen(kid) + 1);
    const cJSON *epk = cJSON_GetObjectItemCaseSensitive(root, "epk");
    if (h->alg->alg == JWK_ALG_ECDH_ES) {
        if (!parse_epk(epk, h->epk))
            return 0;
    } else if (epk != NULL) {
        return 0;
    }
    return parse_party_info(root, "apu", &h->apu) && parse_party_info(root, "apv", &h->apv);
}

static int parse_header(struct span b64, struct jwe_header *h)
{
    if (b64.len == 0 || b64.len > HEADER_B64_MAX)
        return 0;
    struct rt_buf json;
    rt_buf_init(&json, JOSE_MAX_HEADER_JSON);
    int ok = b64_decode(&json, b64, 1) == 0 && json.len > 0 && header_bytes_ok(rt_buf_span(&json));
    if (ok) {
        /* cJSON wants the terminating NUL inside the length to accept the end of input, and
         * stops at an embedded NUL: require that it consumed every byte. */
        const char *end = NULL;
        cJSON *root =
            cJSON_ParseWithLengthOpts((const char *)json.data, json.len + 1, &end, cJSON_True);
        ok =
            root != NULL && end == (const char *)json.data + json.len && parse_header_json(root, h);
        cJSON_Delete(root);
    }
    rt_buf_cleanup(&json);
    return ok;
}

/* Concat KDF (NIST SP 800-56A 5.8.1, RFC 7518 4.6.2) with SHA-256; one round suffices for the
 * at most 256 bits we need. */
static void concat_kdf(const uint8_t *z, size_t z_len, const struct enc_row *enc, struct span apu,
                       struct span apv, uint8_t *out)
{
    static const uint8_t kCounter[4] = {0, 0, 0, 1};
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, kCounter, sizeof(kCounter));
    SHA256_Update(&c, z, z_len);
    const struct span fields[3] = {span_cstr(enc->name), apu, apv};
    for (size_t i = 0; i < 3; i++) {
        uint8_t len[4] = {(uint8_t)(fields[i].len >> 24), (uint8_t)(fields[i].len >> 16),
                          (uint8_t)(fields[i].len >> 8), (uint8_t)fields[i].len};
        SHA256_Update(&c, len, sizeof(len));
        if (fields[i].len)
            SHA256_Update(&c, fields[i].p, fields[i].len);
    }
    uint32_t bits = (uint32_t)(enc->key_len * 8);
    uint8_t supp_pub[4] = {(uint8_t)(bits >> 24), (uint8_t)(bits >> 16), (uint8_t)(bits >> 8),
                           (uint8_t)bits};
    SHA256_Update(&c, supp_pub, sizeof(supp_pub));
    SHA256_Final(digest, &c);
    memcpy(out, digest, enc->key_len);
    OPENSSL_cleanse(digest, sizeof(digest));
    OPENSSL_cleanse(&c, sizeof(c));
}

/* epk_point loads the sender's ephemeral key; EC_POINT_oct2point refuses points off the curve,
 * which is what stops invalid-curve attacks on our static key. */
static EC_POINT *epk_point(const EC_GROUP *group, const uint8_t epk[P256_POINT_BYTES])
{
    EC_POINT *pt = EC_POINT_new(group);
    if (pt && EC_POINT_oct2point(group, pt, epk, P256_POINT_BYTES, NULL))
        return pt;
    EC_POINT_free(pt);
    return NULL;
}

static int ecdh_es_cek(const struct jwk_key *key, const struct jwe_header *h, uint8_t *cek)
{
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key->pkey);
    if (ec == NULL)
        return 0;
    EC_POINT *peer = epk_point(EC_KEY_get0_group(ec), h->epk);
    if (peer == NULL)
        return 0;
    uint8_t z[P256_COORD_BYTES];
    int ok = ECDH_compute_key(z, sizeof(z), peer, ec, NULL) == (int)sizeof(z);
    if (ok)
        concat_kdf(z, sizeof(z), h->enc, rt_buf_span(&h->apu), rt_buf_span(&h->apv), cek);
    OPENSSL_cleanse(z, sizeof(z));
    EC_POINT_free(peer);
    return ok;
}

/* rsa_oaep_cek always yields a CEK: on any OAEP failure a random one, so that a bad padding and a
 * bad tag fail at the same place and look alike (RFC 7516 11.5, Bleichenbacher/Manger). */
static void rsa_oaep_cek(const struct jwk_key *key, struct span ek, size_t cek_len, uint8_t *cek)
{
    uint8_t fake[CEK_MAX_BYTES];
    RAND_bytes(fake, cek_len);
    size_t cap = EVP_PKEY_size(key->pkey);
    uint8_t *dec = ens_calloc(1, cap);
    size_t dec_len = cap;
    int ok = 0;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key->pkey, NULL);
    if (ctx && EVP_PKEY_decrypt_init(ctx) > 0 &&
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) > 0 &&
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) > 0 &&
        EVP_PKEY_decrypt(ctx, dec, &dec_len, ek.p, ek.len) > 0)
        ok = dec_len == cek_len;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    uint8_t mask = (uint8_t)(0u - (unsigned)ok);
    for (size_t i = 0; i < cek_len; i++)
        cek[i] = (uint8_t)((dec[i] & mask) | (fake[i] & (uint8_t)~mask));
    OPENSSL_cleanse(dec, cap);
    ens_free(dec);
    OPENSSL_cleanse(fake, sizeof(fake));
}

static int gcm_open(const struct enc_row *enc, const uint8_t *cek, const uint8_t *iv,
                    struct span ct, const uint8_t *tag, struct span aad, uint8_t *out)
{
    static const uint8_t kEmpty[1] = {0};
    EVP_AEAD_CTX ctx;
    if (!EVP_AEAD_CTX_init(&ctx, enc->aead(), cek, enc->key_len, GCM_TAG_BYTES, NULL))
        return 0;
    int ok = EVP_AEAD_CTX_open_gather(&ctx, out, iv, GCM_IV_BYTES, ct.len ? ct.p : kEmpty, ct.len,
                                      tag, GCM_TAG_BYTES, aad.p, aad.len);
    EVP_AEAD_CTX_cleanup(&ctx);
    OPENSSL_cleanse(&ctx, sizeof(ctx));
    return ok;
}

int jwe_decrypt(struct span compact, jwe_key_lookup_fn lookup, void *ud, struct rt_buf *plaintext,
                struct jwe_info *info)
{
    struct span seg[JWE_SEGMENTS];
    if (compact.len > JOSE_MAX_COMPACT || !split_compact(compact, seg))
        return ENS_EJWE;

    struct jwe_header h;
    memset(&h, 0, sizeof(h));
    rt_buf_init(&h.apu, JOSE_MAX_HEADER_JSON);
    rt_buf_init(&h.apv, JOSE_MAX_HEADER_JSON);
    struct rt_buf ek, ct;
    rt_buf_init(&ek, EK_MAX_BYTES);
    rt_buf_init(&ct, JOSE_MAX_PLAINTEXT);
    uint8_t iv[GCM_IV_BYTES], tag[GCM_TAG_BYTES], cek[CEK_MAX_BYTES];
    uint8_t *out = NULL;
    const struct jwk_key *key = NULL;
    int rc = ENS_EJWE;

    if (!parse_header(seg[0], &h) || !decode_exact(seg[2], iv, sizeof(iv)) ||
        !decode_exact(seg[4], tag, sizeof(tag)) || b64_decode(&ek, seg[1], 1) != 0 ||
        b64_decode(&ct, seg[3], 1) != 0)
        goto done;
    /* Direct key agreement has no encrypted key (RFC 7518 4.6); OAEP must have one. */
    if ((h.alg->alg == JWK_ALG_ECDH_ES) != (ek.len == 0))
        goto done;
    if (h.alg->alg == JWK_ALG_ECDH_ES) {
        /* Check the point before asking for the key, so a malformed JWE is one whatever its kid. */
        EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
        EC_POINT *pt = group ? epk_point(group, h.epk) : NULL;
        int point_ok = pt != NULL;
        EC_POINT_free(pt);
        EC_GROUP_free(group);
        if (!point_ok)
            goto done;
    }

    key = lookup(h.kid, h.alg->alg, ud);
    if (key == NULL || key->alg != h.alg->alg) {
        rc = ENS_EUNKNOWNKID;
        goto done;
    }
    if (h.alg->alg == JWK_ALG_ECDH_ES) {
        if (!ecdh_es_cek(key, &h, cek))
            goto done;
    } else {
        rsa_oaep_cek(key, rt_buf_span(&ek), h.enc->key_len, cek);
    }

    out = ens_malloc(ct.len);
    if (!gcm_open(h.enc, cek, iv, rt_buf_span(&ct), tag, seg[0], out))
        goto done;
    if (rt_buf_append(plaintext, out, ct.len) != 0)
        goto done;
    if (info) {
        info->alg = h.alg->alg;
        info->enc = h.enc->enc;
        memcpy(info->kid, h.kid, sizeof(info->kid));
    }
    rc = 0;
done:
    if (out) {
        OPENSSL_cleanse(out, ct.len);
        ens_free(out);
    }
    OPENSSL_cleanse(cek, sizeof(cek));
    rt_buf_cleanup(&h.apu);
    rt_buf_cleanup(&h.apv);
    rt_buf_cleanup(&ek);
    rt_buf_cleanup(&ct);
    return rc;
}

static int append_b64(struct rt_buf *out, const void *p, size_t n)
{
    return b64_encode(out, span_make(p, n), 1);
}

int jwe_encrypt_ecdh_es(const struct jwk_key *recipient, enum jwe_enc enc_id, struct span plaintext,
                        struct rt_buf *out)
{
    const struct enc_row *enc = enc_by_id(enc_id);
    const EC_KEY *peer = recipient && recipient->alg == JWK_ALG_ECDH_ES
                             ? EVP_PKEY_get0_EC_KEY(recipient->pkey)
                             : NULL;
    if (enc == NULL || peer == NULL || plaintext.len > JOSE_MAX_PLAINTEXT)
        return ENS_EINVAL;

    const EC_GROUP *group = EC_KEY_get0_group(peer);
    EC_KEY *eph = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    uint8_t epk[P256_POINT_BYTES], z[P256_COORD_BYTES], cek[CEK_MAX_BYTES], iv[GCM_IV_BYTES];
    struct rt_buf hdr, jwe;
    rt_buf_init(&hdr, JOSE_MAX_HEADER_JSON);
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    uint8_t *ct = ens_malloc(plaintext.len + GCM_TAG_BYTES);
    size_t ct_len = 0;
    EVP_AEAD_CTX ctx;
    int ctx_live = 0;
    int rc = ENS_ECRYPTO;

    if (eph == NULL || !EC_KEY_generate_key(eph) ||
        EC_POINT_point2oct(group, EC_KEY_get0_public_key(eph), POINT_CONVERSION_UNCOMPRESSED, epk,
                           sizeof(epk), NULL) != sizeof(epk) ||
        ECDH_compute_key(z, sizeof(z), EC_KEY_get0_public_key(peer), eph, NULL) != (int)sizeof(z))
        goto done;
    concat_kdf(z, sizeof(z), enc, span_make(NULL, 0), span_make(NULL, 0), cek);
    RAND_bytes(iv, sizeof(iv));

    if ((rc = rt_buf_appendf(&hdr, "{\"alg\":\"ECDH-ES\",\"enc\":\"%s\",\"kid\":\"%s\",", enc->name,
                             recipient->kid)) != 0 ||
        (rc = rt_buf_append_str(&hdr, "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"")) != 0 ||
        (rc = append_b64(&hdr, epk + 1, P256_COORD_BYTES)) != 0 ||
        (rc = rt_buf_append_str(&hdr, "\",\"y\":\"")) != 0 ||
        (rc = append_b64(&hdr, epk + 1 + P256_COORD_BYTES, P256_COORD_BYTES)) != 0 ||
        (rc = rt_buf_append_str(&hdr, "\"}}")) != 0 ||
        (rc = append_b64(&jwe, hdr.data, hdr.len)) != 0)
        goto done;

    rc = ENS_ECRYPTO;
    if (!EVP_AEAD_CTX_init(&ctx, enc->aead(), cek, enc->key_len, GCM_TAG_BYTES, NULL))
        goto done;
    ctx_live = 1;
    /* The AAD is the encoded header, which is what |jwe| holds so far. */
    if (!EVP_AEAD_CTX_seal(&ctx, ct, &ct_len, plaintext.len + GCM_TAG_BYTES, iv, sizeof(iv),
                           plaintext.p, plaintext.len, jwe.data, jwe.len) ||
        ct_len != plaintext.len + GCM_TAG_BYTES)
        goto done;
    if ((rc = rt_buf_append_str(&jwe, "..")) != 0 || (rc = append_b64(&jwe, iv, sizeof(iv))) != 0 ||
        (rc = rt_buf_append_str(&jwe, ".")) != 0 ||
        (rc = append_b64(&jwe, ct, plaintext.len)) != 0 ||
        (rc = rt_buf_append_str(&jwe, ".")) != 0 ||
        (rc = append_b64(&jwe, ct + plaintext.len, GCM_TAG_BYTES)) != 0 ||
        (rc = rt_buf_append(out, jwe.data, jwe.len)) != 0)
        goto done;
    rc = 0;
done:
    if (ctx_live) {
        EVP_AEAD_CTX_cleanup(&ctx);
        OPENSSL_cleanse(&ctx, sizeof(ctx));
    }
    OPENSSL_cleanse(z, sizeof(z));
    OPENSSL_cleanse(cek, sizeof(cek));
    ens_free(ct);
    EC_KEY_free(eph);
    rt_buf_cleanup(&hdr);
    rt_buf_cleanup(&jwe);
    return rc;
}
