/* Tests for protocols/jwe.c and protocols/jwk.c against vectors made by python3-jwcrypto
 * (tests/data/jwe/make_vectors.py), and our JWKS against tools/jwe_make.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "protocols/jwe.h"
#include "protocols/jwk.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"

struct keyring {
    struct jwk_key *ec;
    struct jwk_key *rsa;
    int lookups;
};

static struct keyring g_ring;

static int read_data(const char *name, struct rt_buf *out)
{
    const char *dir = getenv("ENS_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof(path), "%s/jwe/%s", dir ? dir : "tests/data", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    uint8_t chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(rt_buf_append(out, chunk, n), 0);
    fclose(f);
    while (out->len && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r'))
        out->data[--out->len] = '\0';
    return 0;
}

static struct jwk_key *load_key(const char *name)
{
    struct rt_buf der;
    rt_buf_init(&der, 1 << 16);
    assert_int_equal(read_data(name, &der), 0);
    struct jwk_key *k = jwk_key_parse(rt_buf_span(&der));
    rt_buf_cleanup_secret(&der);
    assert_non_null(k);
    return k;
}

static const struct jwk_key *ring_lookup(const char *kid, enum jwk_alg alg, void *ud)
{
    struct keyring *r = ud;
    r->lookups++;
    const struct jwk_key *keys[2] = {r->ec, r->rsa};
    for (size_t i = 0; i < 2; i++)
        if (keys[i] && keys[i]->alg == alg && strcmp(keys[i]->kid, kid) == 0)
            return keys[i];
    return NULL;
}

static const struct jwk_key *no_lookup(const char *kid, enum jwk_alg alg, void *ud)
{
    (*(int *)ud)++;
    return NULL;
}

static int setup(void **state)
{
    g_ring.ec = load_key("ec_key.der");
    g_ring.rsa = load_key("rsa_key.der");
    return 0;
}

static int teardown(void **state)
{
    jwk_key_free(g_ring.ec);
    jwk_key_free(g_ring.rsa);
    return 0;
}

/* decrypt_text runs jwe_decrypt over |jwe| with the test keys; the lookup count goes to
 * *lookups when non-NULL. */
static int decrypt_text(struct span jwe, struct rt_buf *pt, struct jwe_info *info, int *lookups)
{
    g_ring.lookups = 0;
    int rc = jwe_decrypt(jwe, ring_lookup, &g_ring, pt, info);
    if (lookups)
        *lookups = g_ring.lookups;
    return rc;
}

static int decrypt_file(const char *name, struct rt_buf *pt, struct jwe_info *info)
{
    struct rt_buf jwe;
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    assert_int_equal(read_data(name, &jwe), 0);
    int rc = decrypt_text(rt_buf_span(&jwe), pt, info, NULL);
    rt_buf_cleanup(&jwe);
    return rc;
}

/* The five parts of a vector, still base64url, NUL-terminated. */
struct parts {
    char seg[5][JOSE_MAX_COMPACT];
};

static struct parts *split_file(const char *name)
{
    struct rt_buf jwe;
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    assert_int_equal(read_data(name, &jwe), 0);
    struct parts *p = ens_calloc(1, sizeof(*p));
    const char *s = rt_buf_cstr(&jwe);
    for (int i = 0; i < 5; i++) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        memcpy(p->seg[i], s, n);
        s += n + (dot ? 1 : 0);
    }
    rt_buf_cleanup(&jwe);
    return p;
}

static void join(struct rt_buf *out, const char *h, const char *ek, const char *iv, const char *ct,
                 const char *tag)
{
    rt_buf_reset(out);
    assert_int_equal(rt_buf_appendf(out, "%s.%s.%s.%s.%s", h, ek, iv, ct, tag), 0);
}

static void header_b64(struct rt_buf *out, const char *json)
{
    rt_buf_reset(out);
    assert_int_equal(b64_encode(out, span_cstr(json), 1), 0);
}

/* expect_rejected asserts jwe_decrypt refuses |jwe| with ENS_EJWE, leaving |pt| untouched, and
 * returns how many times the key lookup ran. */
static int expect_rejected(struct rt_buf *jwe)
{
    struct rt_buf pt;
    rt_buf_init(&pt, JOSE_MAX_PLAINTEXT);
    struct jwe_info info = {0};
    int lookups = 0;
    assert_int_equal(decrypt_text(rt_buf_span(jwe), &pt, &info, &lookups), ENS_EJWE);
    assert_int_equal(pt.len, 0);
    assert_int_equal(info.alg, 0);
    rt_buf_cleanup_secret(&pt);
    return lookups;
}

static void test_kid_is_the_jwcrypto_thumbprint(void **state)
{
    struct rt_buf kid;
    rt_buf_init(&kid, 256);
    assert_int_equal(read_data("ec_kid.txt", &kid), 0);
    assert_string_equal(g_ring.ec->kid, rt_buf_cstr(&kid));
    rt_buf_reset(&kid);
    assert_int_equal(read_data("rsa_kid.txt", &kid), 0);
    assert_string_equal(g_ring.rsa->kid, rt_buf_cstr(&kid));
    rt_buf_cleanup(&kid);
    assert_int_equal(g_ring.ec->alg, JWK_ALG_ECDH_ES);
    assert_int_equal(g_ring.rsa->alg, JWK_ALG_RSA_OAEP_256);
}

static void test_decrypts_jwcrypto_vectors(void **state)
{
    static const struct {
        const char *file;
        enum jwk_alg alg;
        enum jwe_enc enc;
    } kCases[] = {
        {"ecdh_es_a256gcm.jwe", JWK_ALG_ECDH_ES, JWE_ENC_A256GCM},
        {"ecdh_es_a128gcm.jwe", JWK_ALG_ECDH_ES, JWE_ENC_A128GCM},
        {"ecdh_es_apu_apv_a256gcm.jwe", JWK_ALG_ECDH_ES, JWE_ENC_A256GCM},
        {"rsa_oaep_256_a256gcm.jwe", JWK_ALG_RSA_OAEP_256, JWE_ENC_A256GCM},
        {"rsa_oaep_256_a128gcm.jwe", JWK_ALG_RSA_OAEP_256, JWE_ENC_A128GCM},
    };
    struct rt_buf want;
    rt_buf_init(&want, JOSE_MAX_PLAINTEXT);
    assert_int_equal(read_data("plaintext.json", &want), 0);
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        struct rt_buf pt;
        rt_buf_init(&pt, JOSE_MAX_PLAINTEXT);
        struct jwe_info info;
        assert_int_equal(decrypt_file(kCases[i].file, &pt, &info), 0);
        assert_int_equal(pt.len, want.len);
        assert_memory_equal(pt.data, want.data, want.len);
        assert_int_equal(info.alg, kCases[i].alg);
        assert_int_equal(info.enc, kCases[i].enc);
        assert_string_equal(info.kid,
                            kCases[i].alg == JWK_ALG_ECDH_ES ? g_ring.ec->kid : g_ring.rsa->kid);
        rt_buf_cleanup_secret(&pt);
    }
    rt_buf_cleanup(&want);
}

static void test_unknown_kid(void **state)
{
    struct rt_buf jwe, pt;
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    rt_buf_init(&pt, JOSE_MAX_PLAINTEXT);
    const char *files[] = {"ecdh_es_a256gcm.jwe", "rsa_oaep_256_a256gcm.jwe"};
    for (size_t i = 0; i < 2; i++) {
        rt_buf_reset(&jwe);
        assert_int_equal(read_data(files[i], &jwe), 0);
        int calls = 0;
        assert_int_equal(jwe_decrypt(rt_buf_span(&jwe), no_lookup, &calls, &pt, NULL),
                         ENS_EUNKNOWNKID);
        assert_int_equal(calls, 1);
        assert_int_equal(pt.len, 0);
    }
    /* A kid we know, but for the other algorithm, is unknown too. */
    struct parts *p = split_file("rsa_oaep_256_a256gcm.jwe");
    struct rt_buf h;
    rt_buf_init(&h, 8192);
    char json[512];
    snprintf(json, sizeof(json), "{\"alg\":\"RSA-OAEP-256\",\"enc\":\"A256GCM\",\"kid\":\"%s\"}",
             g_ring.ec->kid);
    header_b64(&h, json);
    join(&jwe, rt_buf_cstr(&h), p->seg[1], p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(decrypt_text(rt_buf_span(&jwe), &pt, NULL, NULL), ENS_EUNKNOWNKID);
    ens_free(p);
    rt_buf_cleanup(&h);
    rt_buf_cleanup(&jwe);
    rt_buf_cleanup_secret(&pt);
}

/* flip changes one base64url character to another that keeps the encoding canonical. */
static void flip(char *s, size_t i)
{
    s[i] = s[i] == 'A' ? 'Q' : 'A';
}

static void test_tampering_fails(void **state)
{
    const char *files[] = {"ecdh_es_a256gcm.jwe", "ecdh_es_a128gcm.jwe", "rsa_oaep_256_a256gcm.jwe",
                           "rsa_oaep_256_a128gcm.jwe"};
    struct rt_buf jwe;
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    for (size_t f = 0; f < 4; f++) {
        struct parts *p = split_file(files[f]);
        char *s[5];
        for (int i = 0; i < 5; i++)
            s[i] = p->seg[i];
        /* every segment except an empty encrypted key */
        for (int seg = 0; seg < 5; seg++) {
            if (s[seg][0] == '\0')
                continue;
            char saved = s[seg][0];
            flip(s[seg], 0);
            join(&jwe, s[0], s[1], s[2], s[3], s[4]);
            expect_rejected(&jwe);
            s[seg][0] = saved;
        }
        /* the last ciphertext character, and the header re-encoded with extra whitespace */
        size_t ct_len = strlen(s[3]);
        char saved = s[3][ct_len - 2];
        flip(s[3], ct_len - 2);
        join(&jwe, s[0], s[1], s[2], s[3], s[4]);
        expect_rejected(&jwe);
        s[3][ct_len - 2] = saved;
        join(&jwe, s[0], s[1], s[2], s[3], s[4]);
        struct rt_buf pt;
        rt_buf_init(&pt, JOSE_MAX_PLAINTEXT);
        assert_int_equal(decrypt_text(rt_buf_span(&jwe), &pt, NULL, NULL), 0);
        rt_buf_cleanup_secret(&pt);
        ens_free(p);
    }
    rt_buf_cleanup(&jwe);
}

static void test_header_reencoded_fails(void **state)
{
    /* The AAD is the header as sent: the same JSON with one more space must not decrypt. */
    struct parts *p = split_file("ecdh_es_a256gcm.jwe");
    struct rt_buf json, h, jwe;
    rt_buf_init(&json, 8192);
    rt_buf_init(&h, 8192);
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    assert_int_equal(b64_decode(&json, span_cstr(p->seg[0]), 1), 0);
    assert_int_equal(rt_buf_append_str(&json, " "), 0);
    header_b64(&h, rt_buf_cstr(&json));
    join(&jwe, rt_buf_cstr(&h), p->seg[1], p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 1);
    ens_free(p);
    rt_buf_cleanup(&json);
    rt_buf_cleanup(&h);
    rt_buf_cleanup(&jwe);
}

/* bad_header builds a JWE from |json| and the other parts of an ECDH-ES vector, and asserts it is
 * refused before any key lookup. */
static void assert_bad_header(const char *json)
{
    struct parts *p = split_file("ecdh_es_a256gcm.jwe");
    struct rt_buf h, jwe;
    rt_buf_init(&h, 1 << 16);
    rt_buf_init(&jwe, 1 << 17);
    header_b64(&h, json);
    join(&jwe, rt_buf_cstr(&h), p->seg[1], p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    ens_free(p);
    rt_buf_cleanup(&h);
    rt_buf_cleanup(&jwe);
}

/* The epk of the committed ECDH-ES vector, as "x" and "y" strings. */
static void vector_epk(char x[64], char y[64])
{
    struct parts *p = split_file("ecdh_es_a256gcm.jwe");
    struct rt_buf json;
    rt_buf_init(&json, 8192);
    assert_int_equal(b64_decode(&json, span_cstr(p->seg[0]), 1), 0);
    const char *s = rt_buf_cstr(&json);
    const char *xs = strstr(s, "\"x\":\"");
    const char *ys = strstr(s, "\"y\":\"");
    assert_non_null(xs);
    assert_non_null(ys);
    memcpy(x, xs + 5, 43);
    x[43] = '\0';
    memcpy(y, ys + 5, 43);
    y[43] = '\0';
    rt_buf_cleanup(&json);
    ens_free(p);
}

/* fill expands |tmpl| into |out|, replacing $K with |kid|, $X with |x| and $Y with |y|
 * (templates rather than printf formats keep -Wformat-nonliteral happy). */
static void fill(char *out, size_t cap, const char *tmpl, const char *kid, const char *x,
                 const char *y)
{
    size_t o = 0;
    for (const char *t = tmpl; *t; t++) {
        const char *rep = NULL;
        if (t[0] == '$' && t[1] == 'K')
            rep = kid;
        else if (t[0] == '$' && t[1] == 'X')
            rep = x;
        else if (t[0] == '$' && t[1] == 'Y')
            rep = y;
        if (rep) {
            size_t n = strlen(rep);
            assert_true(o + n < cap);
            memcpy(out + o, rep, n);
            o += n;
            t++;
            continue;
        }
        assert_true(o + 1 < cap);
        out[o++] = *t;
    }
    out[o] = '\0';
}

static void test_refuses_other_algorithms_and_members(void **state)
{
    char x[64], y[64], json[1024];
    vector_epk(x, y);
    const char *kid = g_ring.ec->kid;
    const char *fmts[] = {
        "{\"alg\":\"none\",\"enc\":\"A256GCM\",\"kid\":\"$K\"}",
        "{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"kid\":\"$K\"}",
        "{\"alg\":\"RSA1_5\",\"enc\":\"A256GCM\",\"kid\":\"$K\"}",
        "{\"alg\":\"ECDH-ES+A256KW\",\"enc\":\"A256GCM\",\"kid\":\"$K\"}",
        "{\"alg\":\"ecdh-es\",\"enc\":\"A256GCM\",\"kid\":\"$K\"}",
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256CBC-HS512\",\"kid\":\"$K\"}",
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A192GCM\",\"kid\":\"$K\"}",
        "{\"alg\":\"ECDH-ES\",\"kid\":\"$K\"}",
        "{\"enc\":\"A256GCM\",\"kid\":\"$K\"}",
        "[\"alg\",\"ECDH-ES\",\"$K\"]",
    };
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        fill(json, sizeof(json), fmts[i], kid, x, y);
        assert_bad_header(json);
    }
    /* well-formed ECDH-ES headers with one thing wrong */
    const char *epk_fmts[] = {
        /* zip and crit are refused outright */
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"zip\":\"DEF\",\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"crit\":[\"exp\"],\"exp\":1,\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
        /* a duplicate member */
        "{\"alg\":\"ECDH-ES\",\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
        /* the wrong curve, the wrong key type */
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"$X\",\"y\":\"$Y\"}}",
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"OKP\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
        /* padded coordinates are not base64url */
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X=\",\"y\":\"$Y\"}}",
        /* apu that is not base64url */
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"apu\":\"a+b/\",\"kid\":\"$K\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
    };
    for (size_t i = 0; i < sizeof(epk_fmts) / sizeof(epk_fmts[0]); i++) {
        fill(json, sizeof(json), epk_fmts[i], kid, x, y);
        assert_bad_header(json);
    }
    /* no kid, an empty kid, no epk */
    fill(json, sizeof(json),
         "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\","
         "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
         kid, x, y);
    assert_bad_header(json);
    fill(json, sizeof(json),
         "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"\","
         "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
         kid, x, y);
    assert_bad_header(json);
    fill(json, sizeof(json), "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"$K\"}", kid, x, y);
    assert_bad_header(json);
    /* a NUL smuggled into alg through an escape */
    fill(json, sizeof(json),
         "{\"alg\":\"ECDH-ES\\u0000x\",\"enc\":\"A256GCM\",\"kid\":\"$K\","
         "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$X\",\"y\":\"$Y\"}}",
         kid, x, y);
    assert_bad_header(json);
}

static void test_zip_vector_refused(void **state)
{
    struct rt_buf jwe;
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    assert_int_equal(read_data("zip_def.jwe", &jwe), 0);
    assert_int_equal(expect_rejected(&jwe), 0);
    rt_buf_cleanup(&jwe);
}

static void test_point_not_on_curve(void **state)
{
    char x[64], y[64], json[1024];
    vector_epk(x, y);
    flip(y, 10);
    snprintf(json, sizeof(json),
             "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"%s\","
             "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}}",
             g_ring.ec->kid, x, y);
    assert_bad_header(json);
    /* (0, 0) is not on P-256 either */
    const char *zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    snprintf(json, sizeof(json),
             "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"%s\","
             "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}}",
             g_ring.ec->kid, zero, zero);
    assert_bad_header(json);
}

static void test_segments(void **state)
{
    struct parts *p = split_file("ecdh_es_a256gcm.jwe");
    struct parts *r = split_file("rsa_oaep_256_a256gcm.jwe");
    struct rt_buf jwe;
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    /* four segments, six segments, three */
    rt_buf_reset(&jwe);
    rt_buf_appendf(&jwe, "%s.%s.%s.%s", p->seg[0], p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    rt_buf_reset(&jwe);
    rt_buf_appendf(&jwe, "%s..%s.%s.%s.", p->seg[0], p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    rt_buf_reset(&jwe);
    rt_buf_appendf(&jwe, "%s..%s", p->seg[0], p->seg[2]);
    assert_int_equal(expect_rejected(&jwe), 0);
    /* truncated tag and IV, an empty tag, an empty header */
    join(&jwe, p->seg[0], "", p->seg[2], p->seg[3], "AAAAAAAAAAAAAAAAAAAA");
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, p->seg[0], "", "AAAAAAAAAAAAAAA", p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, p->seg[0], "", p->seg[2], p->seg[3], "");
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, "", "", p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    /* ECDH-ES with an encrypted key, RSA-OAEP without one */
    join(&jwe, p->seg[0], "AAAA", p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, r->seg[0], "", r->seg[2], r->seg[3], r->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    /* a truncated RSA encrypted key fails like a bad tag: after the lookup */
    r->seg[1][300] = '\0'; /* 225 bytes, canonical base64url */
    join(&jwe, r->seg[0], r->seg[1], r->seg[2], r->seg[3], r->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 1);
    /* non-canonical base64url: padding, a stray character, non-zero trailing bits */
    rt_buf_reset(&jwe);
    rt_buf_appendf(&jwe, "%s..%s.%s.%s==", p->seg[0], p->seg[2], p->seg[3], p->seg[4]);
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, p->seg[0], "", p->seg[2], p->seg[3], "AAAAAAAAAAAAAAAAAAAA+A");
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, p->seg[0], "", p->seg[2], p->seg[3], "AAAAAAAAAAAAAAAAAAAAAB");
    assert_int_equal(expect_rejected(&jwe), 0);
    join(&jwe, p->seg[0], "", p->seg[2], p->seg[3], "AAAAAAAAAAAAAAAAAAAAAA\n");
    assert_int_equal(expect_rejected(&jwe), 0);
    ens_free(p);
    ens_free(r);
    rt_buf_cleanup(&jwe);
}

static void test_oversize(void **state)
{
    struct parts *p = split_file("ecdh_es_a256gcm.jwe");
    struct rt_buf jwe;
    rt_buf_init(&jwe, 2 * JOSE_MAX_COMPACT);
    /* one byte over the compact limit, the excess in the ciphertext */
    rt_buf_appendf(&jwe, "%s..%s.", p->seg[0], p->seg[2]);
    size_t pad = JOSE_MAX_COMPACT + 1 - jwe.len - 1 - strlen(p->seg[4]);
    for (size_t i = 0; i < pad; i++)
        rt_buf_append(&jwe, "A", 1);
    rt_buf_appendf(&jwe, ".%s", p->seg[4]);
    assert_int_equal(jwe.len, JOSE_MAX_COMPACT + 1);
    assert_int_equal(expect_rejected(&jwe), 0);
    /* a header over JOSE_MAX_HEADER_JSON, otherwise valid-looking */
    char x[64], y[64];
    vector_epk(x, y);
    struct rt_buf json;
    rt_buf_init(&json, 2 * JOSE_MAX_HEADER_JSON);
    rt_buf_appendf(
        &json,
        "{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\",\"kid\":\"%s\","
        "\"epk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},\"pad\":\"",
        g_ring.ec->kid, x, y);
    while (json.len < JOSE_MAX_HEADER_JSON - 1)
        rt_buf_append(&json, "p", 1);
    rt_buf_append_str(&json, "\"}");
    assert_bad_header(rt_buf_cstr(&json));
    rt_buf_cleanup(&json);
    rt_buf_cleanup(&jwe);
    ens_free(p);
}

static void test_output_too_small_leaves_it_untouched(void **state)
{
    struct rt_buf pt;
    rt_buf_init(&pt, 16);
    assert_int_equal(rt_buf_append_str(&pt, "keep"), 0);
    assert_int_equal(decrypt_file("ecdh_es_a256gcm.jwe", &pt, NULL), ENS_EJWE);
    assert_string_equal(rt_buf_cstr(&pt), "keep");
    rt_buf_cleanup_secret(&pt);
}

static void test_generate_marshal_parse_encrypt(void **state)
{
    struct jwk_key *k = jwk_key_generate(JWK_ALG_ECDH_ES);
    assert_non_null(k);
    struct rt_buf der, jwe, pt;
    rt_buf_init(&der, 1 << 16);
    rt_buf_init(&jwe, JOSE_MAX_COMPACT);
    rt_buf_init(&pt, JOSE_MAX_PLAINTEXT);
    assert_int_equal(jwk_key_marshal(k, &der), 0);
    struct jwk_key *back = jwk_key_parse(rt_buf_span(&der));
    assert_non_null(back);
    assert_string_equal(back->kid, k->kid);
    /* trailing garbage after the DER is refused */
    assert_int_equal(rt_buf_append(&der, "", 1), 0);
    assert_null(jwk_key_parse(rt_buf_span(&der)));
    assert_null(jwk_key_parse(span_make("\x30\x00", 2)));

    const char *msg = "{\"hello\":\"world\"}";
    for (int enc = JWE_ENC_A256GCM; enc <= JWE_ENC_A128GCM; enc++) {
        rt_buf_reset(&jwe);
        rt_buf_reset(&pt);
        assert_int_equal(jwe_encrypt_ecdh_es(k, (enum jwe_enc)enc, span_cstr(msg), &jwe), 0);
        struct keyring ring = {back, NULL, 0};
        struct jwe_info info;
        assert_int_equal(jwe_decrypt(rt_buf_span(&jwe), ring_lookup, &ring, &pt, &info), 0);
        assert_string_equal(rt_buf_cstr(&pt), msg);
        assert_int_equal(info.enc, enc);
    }
    /* the empty plaintext is a valid message */
    rt_buf_reset(&jwe);
    rt_buf_reset(&pt);
    assert_int_equal(jwe_encrypt_ecdh_es(k, JWE_ENC_A256GCM, span_make(NULL, 0), &jwe), 0);
    struct keyring ring = {back, NULL, 0};
    assert_int_equal(jwe_decrypt(rt_buf_span(&jwe), ring_lookup, &ring, &pt, NULL), 0);
    assert_int_equal(pt.len, 0);
    /* an RSA key cannot be used for ECDH-ES */
    assert_int_equal(jwe_encrypt_ecdh_es(g_ring.rsa, JWE_ENC_A256GCM, span_cstr(msg), &jwe),
                     ENS_EINVAL);
    jwk_key_free(back);
    jwk_key_free(k);
    rt_buf_cleanup_secret(&der);
    rt_buf_cleanup(&jwe);
    rt_buf_cleanup_secret(&pt);
}

static void test_public_json_shape(void **state)
{
    struct rt_buf j;
    rt_buf_init(&j, 8192);
    const struct jwk_key *keys[2] = {g_ring.ec, g_ring.rsa};
    assert_int_equal(jwk_jwks_build(keys, 2, &j), 0);
    const char *s = rt_buf_cstr(&j);
    const char *prefix = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"";
    assert_true(strncmp(s, prefix, strlen(prefix)) == 0);
    assert_non_null(strstr(s, "\"alg\":\"ECDH-ES\",\"use\":\"enc\",\"kid\":\""));
    assert_non_null(strstr(s, "{\"kty\":\"RSA\",\"n\":\""));
    assert_non_null(strstr(s, "\"e\":\"AQAB\",\"alg\":\"RSA-OAEP-256\",\"use\":\"enc\""));
    assert_non_null(strstr(s, g_ring.ec->kid));
    assert_non_null(strstr(s, g_ring.rsa->kid));
    /* no private member ever */
    assert_null(strstr(s, "\"d\""));
    assert_null(strstr(s, "\"p\""));
    /* a cap too small leaves the buffer as it was */
    struct rt_buf small;
    rt_buf_init(&small, 64);
    assert_int_equal(jwk_jwks_build(keys, 2, &small), ENS_ETOOBIG);
    assert_int_equal(small.len, 0);
    rt_buf_cleanup(&small);
    rt_buf_cleanup(&j);
}

/* Our JWKS, read by jwcrypto through tools/jwe_make.py, yields JWEs we decrypt. */
static void test_jwks_interop_with_jwe_make(void **state)
{
    const char *data = getenv("ENS_TEST_DATA");
    if (data == NULL || access("/usr/bin/python3", X_OK) != 0)
        skip();
    struct jwk_key *ec = jwk_key_generate(JWK_ALG_ECDH_ES);
    struct jwk_key *rsa = jwk_key_generate(JWK_ALG_RSA_OAEP_256);
    assert_non_null(ec);
    assert_non_null(rsa);
    const struct jwk_key *keys[2] = {ec, rsa};
    struct rt_buf jwks;
    rt_buf_init(&jwks, 16384);
    assert_int_equal(jwk_jwks_build(keys, 2, &jwks), 0);

    char jwks_path[] = "/tmp/ens-jwks-XXXXXX";
    int fd = mkstemp(jwks_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, jwks.data, jwks.len), (ssize_t)jwks.len);
    close(fd);
    char pay_path[] = "/tmp/ens-payload-XXXXXX";
    const char *msg = "{\"email\":\"alice@contoso.com\",\"iat\":1764000000}";
    fd = mkstemp(pay_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, msg, strlen(msg)), (ssize_t)strlen(msg));
    close(fd);

    const char *algs[] = {"ECDH-ES", "RSA-OAEP-256"};
    const char *encs[] = {"A256GCM", "A128GCM"};
    for (int a = 0; a < 2; a++) {
        for (int e = 0; e < 2; e++) {
            char cmd[2048];
            snprintf(cmd, sizeof(cmd),
                     "/usr/bin/python3 '%s/../../tools/jwe_make.py' --jwks '%s' --payload '%s' "
                     "--alg %s --enc %s",
                     data, jwks_path, pay_path, algs[a], encs[e]);
            FILE *f = popen(cmd, "r");
            assert_non_null(f);
            static char out[JOSE_MAX_COMPACT];
            size_t n = fread(out, 1, sizeof(out) - 1, f);
            assert_int_equal(pclose(f), 0);
            while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
                n--;
            struct keyring ring = {ec, rsa, 0};
            struct rt_buf pt;
            rt_buf_init(&pt, JOSE_MAX_PLAINTEXT);
            struct jwe_info info;
            assert_int_equal(jwe_decrypt(span_make(out, n), ring_lookup, &ring, &pt, &info), 0);
            assert_string_equal(rt_buf_cstr(&pt), msg);
            assert_string_equal(info.kid, a == 0 ? ec->kid : rsa->kid);
            rt_buf_cleanup_secret(&pt);
        }
    }
    unlink(jwks_path);
    unlink(pay_path);
    rt_buf_cleanup(&jwks);
    jwk_key_free(ec);
    jwk_key_free(rsa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kid_is_the_jwcrypto_thumbprint),
        cmocka_unit_test(test_decrypts_jwcrypto_vectors),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_tampering_fails),
        cmocka_unit_test(test_header_reencoded_fails),
        cmocka_unit_test(test_refuses_other_algorithms_and_members),
        cmocka_unit_test(test_zip_vector_refused),
        cmocka_unit_test(test_point_not_on_curve),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_output_too_small_leaves_it_untouched),
        cmocka_unit_test(test_generate_marshal_parse_encrypt),
        cmocka_unit_test(test_public_json_shape),
        cmocka_unit_test(test_jwks_interop_with_jwe_make),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
