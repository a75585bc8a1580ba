#include "protocols/seal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"

#define NONCE_BYTES  12
#define TAG_BYTES    16
#define WRAP_VERSION 1
#define SEAL_SALT    "ens-seal-v1"
/* version | skid | uid | cred_id */
#define SEAL_AAD_BYTES (1 + 4 + SEAL_UID_BYTES + SEAL_CRED_ID_BYTES)
/* Labels are ours, short and fixed ("enroll-key:<kid>"); a long one is a bug. */
#define WRAP_MAX_LABEL 256
/* A master key file holds 32 raw bytes or about 45 characters of base64; more is not a key. */
#define MASTER_FILE_MAX 128

static const char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int seal_key_new(uint8_t out[SEAL_KEY_BYTES])
{
    RAND_bytes(out, SEAL_KEY_BYTES);
    return 0;
}

int seal_token_new(uint32_t skid, const uint8_t uid[SEAL_UID_BYTES], struct seal_token *out)
{
    out->version = SEAL_TOKEN_VERSION;
    out->skid = skid;
    memcpy(out->uid, uid, SEAL_UID_BYTES);
    RAND_bytes(out->cred_id, SEAL_CRED_ID_BYTES);
    RAND_bytes(out->k, SEAL_K_BYTES);
    return 0;
}

static void token_to_bytes(const struct seal_token *t, uint8_t raw[SEAL_TOKEN_BYTES])
{
    raw[0] = t->version;
    raw[1] = (uint8_t)(t->skid >> 24);
    raw[2] = (uint8_t)(t->skid >> 16);
    raw[3] = (uint8_t)(t->skid >> 8);
    raw[4] = (uint8_t)t->skid;
    memcpy(raw + 5, t->uid, SEAL_UID_BYTES);
    memcpy(raw + 5 + SEAL_UID_BYTES, t->cred_id, SEAL_CRED_ID_BYTES);
    memcpy(raw + 5 + SEAL_UID_BYTES + SEAL_CRED_ID_BYTES, t->k, SEAL_K_BYTES);
}

void seal_token_encode(const struct seal_token *t, char out[SEAL_TOKEN_CHARS + 1])
{
    /* Encoded here on the stack rather than through an rt_buf, whose growth by realloc would
     * leave pieces of K in freed heap. */
    uint8_t raw[SEAL_TOKEN_BYTES];
    token_to_bytes(t, raw);
    size_t o = 0, i = 0;
    for (; i + 3 <= SEAL_TOKEN_BYTES; i += 3) {
        uint32_t v = ((uint32_t)raw[i] << 16) | ((uint32_t)raw[i + 1] << 8) | raw[i + 2];
        out[o++] = kB64Url[v >> 18];
        out[o++] = kB64Url[(v >> 12) & 63];
        out[o++] = kB64Url[(v >> 6) & 63];
        out[o++] = kB64Url[v & 63];
    }
    if (SEAL_TOKEN_BYTES - i == 1) {
        uint32_t v = (uint32_t)raw[i] << 16;
        out[o++] = kB64Url[v >> 18];
        out[o++] = kB64Url[(v >> 12) & 63];
    } else if (SEAL_TOKEN_BYTES - i == 2) {
        uint32_t v = ((uint32_t)raw[i] << 16) | ((uint32_t)raw[i + 1] << 8);
        out[o++] = kB64Url[v >> 18];
        out[o++] = kB64Url[(v >> 12) & 63];
        out[o++] = kB64Url[(v >> 6) & 63];
    }
    out[o] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
}

int seal_token_parse(struct span text, struct seal_token *out)
{
    if (text.len != SEAL_TOKEN_CHARS)
        return ENS_EPARSE;
    /* The cap makes the buffer's single allocation exactly big enough: no realloc, so no stray
     * copy of K. b64_decode refuses non-canonical trailing bits. */
    struct rt_buf b;
    rt_buf_init(&b, SEAL_TOKEN_BYTES);
    int rc = b64_decode(&b, text, 1);
    if (rc == 0 && (b.len != SEAL_TOKEN_BYTES || b.data[0] != SEAL_TOKEN_VERSION))
        rc = ENS_EPARSE;
    if (rc == 0) {
        struct span s = rt_buf_span(&b);
        span_get_u8(&s, &out->version);
        span_get_u32(&s, &out->skid);
        span_copy_bytes(&s, out->uid, SEAL_UID_BYTES);
        span_copy_bytes(&s, out->cred_id, SEAL_CRED_ID_BYTES);
        span_copy_bytes(&s, out->k, SEAL_K_BYTES);
    } else {
        rc = ENS_EPARSE;
    }
    rt_buf_cleanup_secret(&b);
    return rc;
}

int seal_token_equal(const struct seal_token *a, const struct seal_token *b)
{
    /* field by field: the struct has padding */
    int diff = (a->version != b->version) | (a->skid != b->skid);
    diff |= CRYPTO_memcmp(a->uid, b->uid, sizeof(a->uid)) != 0;
    diff |= CRYPTO_memcmp(a->cred_id, b->cred_id, sizeof(a->cred_id)) != 0;
    diff |= CRYPTO_memcmp(a->k, b->k, sizeof(a->k)) != 0;
    return !diff;
}

void seal_token_cleanup(struct seal_token *t)
{
    OPENSSL_cleanse(t, sizeof(*t));
}

/* gcm_seal appends prefix || nonce || AES-256-GCM(plaintext) || tag to |out| in one step. */
static int gcm_seal(const uint8_t key[32], const uint8_t *prefix, size_t prefix_len,
                    struct span aad, struct span pt, struct rt_buf *out)
{
    size_t total = prefix_len + NONCE_BYTES + pt.len + TAG_BYTES;
    uint8_t *buf = ens_malloc(total);
    if (prefix_len)
        memcpy(buf, prefix, prefix_len);
    uint8_t *nonce = buf + prefix_len;
    RAND_bytes(nonce, NONCE_BYTES);
    EVP_AEAD_CTX ctx;
    size_t ct_len = 0;
    int rc = ENS_ECRYPTO;
    if (EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), key, 32, TAG_BYTES, NULL)) {
        if (EVP_AEAD_CTX_seal(&ctx, nonce + NONCE_BYTES, &ct_len, pt.len + TAG_BYTES, nonce,
                              NONCE_BYTES, pt.p, pt.len, aad.p, aad.len) &&
            ct_len == pt.len + TAG_BYTES)
            rc = rt_buf_append(out, buf, total);
        EVP_AEAD_CTX_cleanup(&ctx);
        OPENSSL_cleanse(&ctx, sizeof(ctx));
    }
    ens_free(buf);
    return rc;
}

/* gcm_open decrypts nonce || ciphertext || tag and appends the plaintext to |out|. */
static int gcm_open(const uint8_t key[32], struct span aad, struct span in, size_t max_pt,
                    struct rt_buf *out)
{
    if (in.len < NONCE_BYTES + TAG_BYTES || in.len - NONCE_BYTES - TAG_BYTES > max_pt)
        return ENS_ECRYPTO;
    size_t cap = in.len - NONCE_BYTES - TAG_BYTES;
    uint8_t *pt = ens_malloc(cap);
    size_t pt_len = 0;
    EVP_AEAD_CTX ctx;
    int rc = ENS_ECRYPTO;
    if (EVP_AEAD_CTX_init(&ctx, EVP_aead_aes_256_gcm(), key, 32, TAG_BYTES, NULL)) {
        if (EVP_AEAD_CTX_open(&ctx, pt, &pt_len, cap, in.p, NONCE_BYTES, in.p + NONCE_BYTES,
                              in.len - NONCE_BYTES, aad.p, aad.len))
            rc = rt_buf_append(out, pt, pt_len);
        EVP_AEAD_CTX_cleanup(&ctx);
        OPENSSL_cleanse(&ctx, sizeof(ctx));
    }
    OPENSSL_cleanse(pt, cap);
    ens_free(pt);
    return rc;
}

/* creds_key derives the per-credential key. K and the server key are both input keying material,
 * so neither alone determines it; uid and cred_id bind it to one mailbox's one credential set. */
static int creds_key(const struct seal_token *t, const uint8_t server_key[SEAL_KEY_BYTES],
                     uint8_t out[32], uint8_t aad[SEAL_AAD_BYTES])
{
    uint8_t ikm[SEAL_K_BYTES + SEAL_KEY_BYTES];
    memcpy(ikm, t->k, SEAL_K_BYTES);
    memcpy(ikm + SEAL_K_BYTES, server_key, SEAL_KEY_BYTES);
    uint8_t info[SEAL_UID_BYTES + SEAL_CRED_ID_BYTES];
    memcpy(info, t->uid, SEAL_UID_BYTES);
    memcpy(info + SEAL_UID_BYTES, t->cred_id, SEAL_CRED_ID_BYTES);
    int ok = HKDF(out, 32, EVP_sha256(), ikm, sizeof(ikm), (const uint8_t *)SEAL_SALT,
                  sizeof(SEAL_SALT) - 1, info, sizeof(info));
    OPENSSL_cleanse(ikm, sizeof(ikm));
    aad[0] = t->version;
    aad[1] = (uint8_t)(t->skid >> 24);
    aad[2] = (uint8_t)(t->skid >> 16);
    aad[3] = (uint8_t)(t->skid >> 8);
    aad[4] = (uint8_t)t->skid;
    memcpy(aad + 5, info, sizeof(info));
    return ok ? 0 : ENS_ECRYPTO;
}

int seal_creds(const struct seal_token *t, const uint8_t server_key[SEAL_KEY_BYTES],
               struct span creds, struct rt_buf *blob)
{
    if (t->version != SEAL_TOKEN_VERSION || creds.len > SEAL_MAX_CREDS)
        return ENS_EINVAL;
    uint8_t key[32], aad[SEAL_AAD_BYTES];
    int rc = creds_key(t, server_key, key, aad);
    if (rc == 0)
        rc = gcm_seal(key, NULL, 0, span_make(aad, sizeof(aad)), creds, blob);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int seal_open_creds(const struct seal_token *t, const uint8_t server_key[SEAL_KEY_BYTES],
                    struct span blob, struct rt_buf *creds_out)
{
    if (t->version != SEAL_TOKEN_VERSION)
        return ENS_ECRYPTO;
    uint8_t key[32], aad[SEAL_AAD_BYTES];
    int rc = creds_key(t, server_key, key, aad);
    if (rc == 0)
        rc = gcm_open(key, span_make(aad, sizeof(aad)), blob, SEAL_MAX_CREDS, creds_out);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* wrap_aad is version || label: the label says what the bytes are, so a wrapped sealing key
 * cannot be swapped in where an enrollment key is expected. */
static int wrap_aad(const char *label, uint8_t aad[1 + WRAP_MAX_LABEL], size_t *len)
{
    size_t n = label ? strlen(label) : 0;
    if (n > WRAP_MAX_LABEL)
        return ENS_EINVAL;
    aad[0] = WRAP_VERSION;
    if (n)
        memcpy(aad + 1, label, n);
    *len = 1 + n;
    return 0;
}

int seal_wrap(const uint8_t master[SEAL_KEY_BYTES], const char *label, struct span plaintext,
              struct rt_buf *out)
{
    uint8_t aad[1 + WRAP_MAX_LABEL];
    size_t aad_len;
    if (plaintext.len > SEAL_MAX_WRAP || wrap_aad(label, aad, &aad_len) != 0)
        return ENS_EINVAL;
    static const uint8_t kPrefix[1] = {WRAP_VERSION};
    return gcm_seal(master, kPrefix, sizeof(kPrefix), span_make(aad, aad_len), plaintext, out);
}

int seal_unwrap(const uint8_t master[SEAL_KEY_BYTES], const char *label, struct span wrapped,
                struct rt_buf *out)
{
    uint8_t aad[1 + WRAP_MAX_LABEL];
    size_t aad_len;
    uint8_t version;
    if (wrap_aad(label, aad, &aad_len) != 0 || !span_get_u8(&wrapped, &version) ||
        version != WRAP_VERSION)
        return ENS_ECRYPTO;
    return gcm_open(master, span_make(aad, aad_len), wrapped, SEAL_MAX_WRAP, out);
}

/* master_decode accepts base64 (padded) or base64url (unpadded) text of exactly 32 bytes. */
static int master_decode(struct span text, uint8_t out[SEAL_KEY_BYTES])
{
    while (text.len && (text.p[text.len - 1] == '\n' || text.p[text.len - 1] == '\r'))
        text.len--;
    /* The cap keeps the buffer to one allocation, so no partial copy of the key is left behind. */
    struct rt_buf b;
    rt_buf_init(&b, SEAL_KEY_BYTES);
    int rc = ENS_ECONFIG;
    if ((b64_decode(&b, text, 0) == 0 || b64_decode(&b, text, 1) == 0) && b.len == SEAL_KEY_BYTES) {
        memcpy(out, b.data, SEAL_KEY_BYTES);
        rc = 0;
    }
    rt_buf_cleanup_secret(&b);
    return rc;
}

/* read_small reads at most |cap| bytes of |fd|; 0 or ENS_EIO, and ENS_ECONFIG if there is more. */
static int read_small(int fd, uint8_t *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ENS_EIO;
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap)
            return ENS_ECONFIG;
    }
    *len = n;
    return 0;
}

static int master_read(const char *file, uint8_t out[SEAL_KEY_BYTES])
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? ENS_ENOTFOUND : ENS_EIO;
    uint8_t buf[MASTER_FILE_MAX];
    size_t len = 0;
    int rc = read_small(fd, buf, sizeof(buf), &len);
    close(fd);
    if (rc == 0 && len == SEAL_KEY_BYTES)
        memcpy(out, buf, SEAL_KEY_BYTES);
    else if (rc == 0)
        rc = master_decode(span_make(buf, len), out);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return ENS_EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* master_create writes a new key as base64 text; ENS_EEXIST if someone else made the file first. */
static int master_create(const char *file, uint8_t out[SEAL_KEY_BYTES])
{
    /* O_EXCL also refuses to follow a symlink planted at |file|. */
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? ENS_EEXIST : ENS_EIO;
    uint8_t key[SEAL_KEY_BYTES];
    seal_key_new(key);
    struct rt_buf text;
    rt_buf_init(&text, 64); /* one allocation: 44 characters and a newline */
    int rc = b64_encode(&text, span_make(key, sizeof(key)), 0);
    if (rc == 0)
        rc = rt_buf_append(&text, "\n", 1);
    if (rc == 0)
        rc = write_all(fd, text.data, text.len);
    if (rc == 0 && fsync(fd) != 0)
        rc = ENS_EIO;
    if (close(fd) != 0 && rc == 0)
        rc = ENS_EIO;
    rt_buf_cleanup_secret(&text);
    if (rc == 0)
        memcpy(out, key, SEAL_KEY_BYTES);
    else
        unlink(file);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int seal_master_load(const char *file, const char *env_b64, uint8_t out[SEAL_KEY_BYTES],
                     int *created)
{
    if (created)
        *created = 0;
    if (env_b64 && env_b64[0])
        return master_decode(span_cstr(env_b64), out);
    if (file == NULL || file[0] == '\0')
        return ENS_ECONFIG;
    int rc = master_read(file, out);
    if (rc != ENS_ENOTFOUND)
        return rc;
    rc = master_create(file, out);
    if (rc == ENS_EEXIST) /* lost a race with another starting process: use its key */
        return master_read(file, out) == 0 ? 0 : ENS_EIO;
    if (rc == 0 && created)
        *created = 1;
    return rc;
}
