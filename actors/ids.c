#include "actors/ids.h"

#include <openssl/crypto.h>
#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>

#include "runtime/b64.h"

static void derive(const uint8_t master[32], const char *info, uint8_t out[32])
{
    HKDF(out, 32, EVP_sha256(), master, 32, (const uint8_t *)"ens-derive-v1", 13,
         (const uint8_t *)info, strlen(info));
}

void ens_ids_derive_keys(const uint8_t master[32], uint8_t id_key[32], uint8_t fp_key[32])
{
    derive(master, "ids", id_key);
    derive(master, "cred-fingerprint", fp_key);
}

/* keyed_id hashes a domain label, the tenant and a value, with lengths so that
 * no two (tenant, value) pairs can collide by concatenation. */
static void keyed_id(const uint8_t key[32], const char *domain, const char *tenant,
                     struct span value, int lower, char out[ENS_ID_CHARS + 1])
{
    HMAC_CTX ctx;
    HMAC_CTX_init(&ctx);
    HMAC_Init_ex(&ctx, key, 32, EVP_sha256(), NULL);
    uint8_t len[4];
    size_t tl = strlen(tenant);
    HMAC_Update(&ctx, (const uint8_t *)domain, strlen(domain) + 1);
    len[0] = (uint8_t)(tl >> 24), len[1] = (uint8_t)(tl >> 16), len[2] = (uint8_t)(tl >> 8),
    len[3] = (uint8_t)tl;
    HMAC_Update(&ctx, len, 4);
    HMAC_Update(&ctx, (const uint8_t *)tenant, tl);
    for (size_t i = 0; i < value.len; i++) {
        uint8_t c = value.p[i];
        if (lower && c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        HMAC_Update(&ctx, &c, 1);
    }
    uint8_t mac[32];
    unsigned maclen = 0;
    HMAC_Final(&ctx, mac, &maclen);
    HMAC_CTX_cleanup(&ctx);
    struct rt_buf b;
    rt_buf_init(&b, 64);
    b64_encode(&b, span_make(mac, 16), 1);
    memcpy(out, b.data, ENS_ID_CHARS);
    out[ENS_ID_CHARS] = '\0';
    rt_buf_cleanup(&b);
}

void ens_user_id(const uint8_t id_key[32], const char *tenant, struct span email,
                 char out[ENS_ID_CHARS + 1])
{
    keyed_id(id_key, "user", tenant, email, 1, out);
}

void ens_device_id(const uint8_t id_key[32], const char *tenant, struct span client_id,
                   char out[ENS_ID_CHARS + 1])
{
    keyed_id(id_key, "device", tenant, client_id, 0, out);
}

void ens_random_id(size_t nbytes, char *out, size_t outcap)
{
    uint8_t raw[32];
    if (nbytes > sizeof(raw))
        nbytes = sizeof(raw);
    RAND_bytes(raw, nbytes);
    struct rt_buf b;
    rt_buf_init(&b, 64);
    b64_encode(&b, span_make(raw, nbytes), 1);
    OPENSSL_cleanse(raw, sizeof(raw));
    size_t n = b.len < outcap - 1 ? b.len : outcap - 1;
    memcpy(out, b.data, n);
    out[n] = '\0';
    rt_buf_cleanup_secret(&b);
}

void ens_sha256_hex(struct span data, char out[65])
{
    static const char kHex[] = "0123456789abcdef";
    uint8_t d[32];
    SHA256(data.p, data.len, d);
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = kHex[d[i] >> 4];
        out[2 * i + 1] = kHex[d[i] & 15];
    }
    out[64] = '\0';
}

uint16_t ens_cred_fingerprint(const uint8_t fp_key[32], struct span creds)
{
    uint8_t mac[32];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), fp_key, 32, creds.p, creds.len, mac, &maclen);
    uint16_t fp = (uint16_t)((mac[0] << 8) | mac[1]);
    OPENSSL_cleanse(mac, sizeof(mac));
    return fp ? fp : 1; /* 0 means "never proved" in a device record */
}

int ens_consttime_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
