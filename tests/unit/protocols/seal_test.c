/* Tests for protocols/seal.c: the callback token, credential sealing and the master key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "protocols/seal.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"

static const uint8_t kUid[SEAL_UID_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const char kCreds[] = "{\"type\":\"basic\",\"username\":\"alice\",\"password\":\"canary\"}";

struct sealed {
    struct seal_token tok;
    uint8_t server_key[SEAL_KEY_BYTES];
    struct rt_buf blob;
};

static void make_sealed(struct sealed *s)
{
    seal_key_new(s->server_key);
    assert_int_equal(seal_token_new(7, kUid, &s->tok), 0);
    rt_buf_init(&s->blob, SEAL_MAX_CREDS + SEAL_BLOB_OVERHEAD);
    assert_int_equal(seal_creds(&s->tok, s->server_key, span_cstr(kCreds), &s->blob), 0);
    assert_int_equal(s->blob.len, strlen(kCreds) + SEAL_BLOB_OVERHEAD);
}

static void cleanup_sealed(struct sealed *s)
{
    seal_token_cleanup(&s->tok);
    rt_buf_cleanup(&s->blob);
}

static int open_with(const struct seal_token *t, const uint8_t key[SEAL_KEY_BYTES],
                     struct span blob)
{
    struct rt_buf out;
    rt_buf_init(&out, SEAL_MAX_CREDS);
    int rc = seal_open_creds(t, key, blob, &out);
    if (rc == 0) {
        assert_int_equal(out.len, strlen(kCreds));
        assert_memory_equal(out.data, kCreds, out.len);
    } else {
        assert_int_equal(out.len, 0);
    }
    rt_buf_cleanup_secret(&out);
    return rc;
}

static void test_seal_round_trip_through_the_token_text(void **state)
{
    struct sealed s;
    make_sealed(&s);
    /* what Exchange holds is the text; the server rebuilds the token from it */
    char text[SEAL_TOKEN_CHARS + 1];
    seal_token_encode(&s.tok, text);
    assert_int_equal(strlen(text), SEAL_TOKEN_CHARS);
    assert_true(strlen(text) < 100);
    struct seal_token back;
    assert_int_equal(seal_token_parse(span_cstr(text), &back), 0);
    assert_int_equal(back.version, SEAL_TOKEN_VERSION);
    assert_int_equal(back.skid, 7);
    assert_memory_equal(back.uid, kUid, SEAL_UID_BYTES);
    assert_memory_equal(back.cred_id, s.tok.cred_id, SEAL_CRED_ID_BYTES);
    assert_memory_equal(back.k, s.tok.k, SEAL_K_BYTES);
    assert_int_equal(open_with(&back, s.server_key, rt_buf_span(&s.blob)), 0);
    seal_token_cleanup(&back);
    uint8_t zero[sizeof(back)] = {0};
    assert_memory_equal(&back, zero, sizeof(back));
    cleanup_sealed(&s);
}

static void test_each_piece_alone_opens_nothing(void **state)
{
    struct sealed s;
    make_sealed(&s);
    struct seal_token t;

    /* wrong K */
    t = s.tok;
    t.k[31] ^= 1;
    assert_int_equal(open_with(&t, s.server_key, rt_buf_span(&s.blob)), ENS_ECRYPTO);
    /* wrong server key */
    uint8_t other[SEAL_KEY_BYTES];
    memcpy(other, s.server_key, sizeof(other));
    other[0] ^= 0x80;
    assert_int_equal(open_with(&s.tok, other, rt_buf_span(&s.blob)), ENS_ECRYPTO);
    /* another mailbox's or another credential's token with the right K */
    t = s.tok;
    t.uid[0] ^= 1;
    assert_int_equal(open_with(&t, s.server_key, rt_buf_span(&s.blob)), ENS_ECRYPTO);
    t = s.tok;
    t.cred_id[7] ^= 1;
    assert_int_equal(open_with(&t, s.server_key, rt_buf_span(&s.blob)), ENS_ECRYPTO);
    t = s.tok;
    t.skid = 8;
    assert_int_equal(open_with(&t, s.server_key, rt_buf_span(&s.blob)), ENS_ECRYPTO);
    /* every single-bit change of the blob, and truncations */
    for (size_t i = 0; i < s.blob.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            s.blob.data[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(open_with(&s.tok, s.server_key, rt_buf_span(&s.blob)), ENS_ECRYPTO);
            s.blob.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(open_with(&s.tok, s.server_key, span_make(s.blob.data, s.blob.len - 1)),
                     ENS_ECRYPTO);
    assert_int_equal(open_with(&s.tok, s.server_key, span_make(s.blob.data, 27)), ENS_ECRYPTO);
    assert_int_equal(open_with(&s.tok, s.server_key, span_make(NULL, 0)), ENS_ECRYPTO);
    /* and the original still opens */
    assert_int_equal(open_with(&s.tok, s.server_key, rt_buf_span(&s.blob)), 0);
    cleanup_sealed(&s);
}

static void test_sealing_is_randomised(void **state)
{
    struct sealed a, b;
    make_sealed(&a);
    make_sealed(&b);
    assert_memory_not_equal(a.tok.k, b.tok.k, SEAL_K_BYTES);
    assert_memory_not_equal(a.tok.cred_id, b.tok.cred_id, SEAL_CRED_ID_BYTES);
    /* the same credentials sealed twice under one token differ (fresh nonce) */
    struct rt_buf again;
    rt_buf_init(&again, SEAL_MAX_CREDS + SEAL_BLOB_OVERHEAD);
    assert_int_equal(seal_creds(&a.tok, a.server_key, span_cstr(kCreds), &again), 0);
    assert_memory_not_equal(again.data, a.blob.data, a.blob.len);
    /* the plaintext does not appear in the blob */
    assert_null(memmem(a.blob.data, a.blob.len, "canary", 6));
    rt_buf_cleanup(&again);
    cleanup_sealed(&a);
    cleanup_sealed(&b);
}

static void test_token_parse_is_strict(void **state)
{
    struct seal_token t, out;
    seal_token_new(0xdeadbeef, kUid, &t);
    char text[SEAL_TOKEN_CHARS + 2];
    seal_token_encode(&t, text);
    memset(&out, 0x5a, sizeof(out));
    struct seal_token untouched = out;

    /* length minus one, plus one */
    assert_int_equal(seal_token_parse(span_make(text, SEAL_TOKEN_CHARS - 1), &out), ENS_EPARSE);
    text[SEAL_TOKEN_CHARS] = 'A';
    text[SEAL_TOKEN_CHARS + 1] = '\0';
    assert_int_equal(seal_token_parse(span_make(text, SEAL_TOKEN_CHARS + 1), &out), ENS_EPARSE);
    text[SEAL_TOKEN_CHARS] = '\0';
    /* characters outside base64url, padding */
    const char bad[] = {'+', '/', '=', '.', ' ', '%', '\0'};
    for (size_t i = 0; i < sizeof(bad); i++) {
        char copy[SEAL_TOKEN_CHARS + 1];
        memcpy(copy, text, sizeof(copy));
        copy[40] = bad[i];
        assert_int_equal(seal_token_parse(span_make(copy, SEAL_TOKEN_CHARS), &out), ENS_EPARSE);
    }
    /* non-zero trailing bits: 82 characters carry 4 spare bits in the last one */
    char copy[SEAL_TOKEN_CHARS + 1];
    memcpy(copy, text, sizeof(copy));
    copy[SEAL_TOKEN_CHARS - 1] = copy[SEAL_TOKEN_CHARS - 1] == 'B' ? 'C' : 'B';
    assert_int_equal(seal_token_parse(span_cstr(copy), &out), ENS_EPARSE);
    /* an unknown version */
    struct seal_token v2 = t;
    v2.version = 2;
    seal_token_encode(&v2, copy);
    assert_int_equal(seal_token_parse(span_cstr(copy), &out), ENS_EPARSE);
    assert_memory_equal(&out, &untouched, sizeof(out));
    /* and the good one parses, skid big-endian round trip */
    assert_int_equal(seal_token_parse(span_cstr(text), &out), 0);
    assert_int_equal(out.skid, 0xdeadbeef);
    seal_token_cleanup(&t);
    seal_token_cleanup(&v2);
    seal_token_cleanup(&out);
}

static void test_wrap_binds_label_and_key(void **state)
{
    uint8_t master[SEAL_KEY_BYTES], other[SEAL_KEY_BYTES];
    seal_key_new(master);
    seal_key_new(other);
    struct rt_buf w, out;
    rt_buf_init(&w, SEAL_MAX_WRAP + SEAL_WRAP_OVERHEAD);
    rt_buf_init(&out, SEAL_MAX_WRAP);
    const char secret[] = "private key bytes";
    assert_int_equal(seal_wrap(master, "enroll-key:abc", span_cstr(secret), &w), 0);
    assert_int_equal(w.len, strlen(secret) + SEAL_WRAP_OVERHEAD);
    assert_int_equal(seal_unwrap(master, "enroll-key:abc", rt_buf_span(&w), &out), 0);
    assert_string_equal(rt_buf_cstr(&out), secret);
    rt_buf_reset(&out);
    assert_int_equal(seal_unwrap(master, "seal-key:1", rt_buf_span(&w), &out), ENS_ECRYPTO);
    assert_int_equal(seal_unwrap(other, "enroll-key:abc", rt_buf_span(&w), &out), ENS_ECRYPTO);
    w.data[w.len - 1] ^= 1;
    assert_int_equal(seal_unwrap(master, "enroll-key:abc", rt_buf_span(&w), &out), ENS_ECRYPTO);
    w.data[w.len - 1] ^= 1;
    w.data[0] = 9; /* unknown format version */
    assert_int_equal(seal_unwrap(master, "enroll-key:abc", rt_buf_span(&w), &out), ENS_ECRYPTO);
    assert_int_equal(seal_unwrap(master, "x", span_make(NULL, 0), &out), ENS_ECRYPTO);
    assert_int_equal(out.len, 0);
    rt_buf_cleanup(&w);
    rt_buf_cleanup_secret(&out);
}

static void test_master_key_file_created_0600_and_reloaded(void **state)
{
    char dir[] = "/tmp/ens-seal-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/ens-master.key", dir);

    uint8_t k1[SEAL_KEY_BYTES], k2[SEAL_KEY_BYTES];
    int created = -1;
    assert_int_equal(seal_master_load(path, NULL, k1, &created), 0);
    assert_int_equal(created, 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    created = -1;
    assert_int_equal(seal_master_load(path, "", k2, &created), 0);
    assert_int_equal(created, 0);
    assert_memory_equal(k1, k2, SEAL_KEY_BYTES);

    /* a file that is not a key stops the start */
    char bad[256];
    snprintf(bad, sizeof(bad), "%s/bad.key", dir);
    FILE *f = fopen(bad, "w");
    fputs("not a key\n", f);
    fclose(f);
    assert_int_equal(seal_master_load(bad, NULL, k2, &created), ENS_ECONFIG);
    /* a raw 32-byte file is accepted too */
    f = fopen(bad, "wb");
    fwrite(k1, 1, sizeof(k1), f);
    fclose(f);
    memset(k2, 0, sizeof(k2));
    assert_int_equal(seal_master_load(bad, NULL, k2, &created), 0);
    assert_memory_equal(k1, k2, SEAL_KEY_BYTES);
    /* an unwritable place is an I/O error, not a silent fallback */
    assert_int_equal(seal_master_load("/nonexistent-dir/ens.key", NULL, k2, NULL), ENS_EIO);

    unlink(bad);
    unlink(path);
    rmdir(dir);
}

static void test_master_key_env_wins(void **state)
{
    uint8_t want[SEAL_KEY_BYTES], got[SEAL_KEY_BYTES];
    for (size_t i = 0; i < sizeof(want); i++)
        want[i] = (uint8_t)(i * 7 + 1);
    struct rt_buf b64;
    rt_buf_init(&b64, 128);
    assert_int_equal(b64_encode(&b64, span_make(want, sizeof(want)), 0), 0);
    int created = -1;
    /* the file is never touched when the environment has the key */
    assert_int_equal(seal_master_load("/nonexistent-dir/ens.key", rt_buf_cstr(&b64), got, &created),
                     0);
    assert_int_equal(created, 0);
    assert_memory_equal(got, want, sizeof(want));
    /* 31 or 33 bytes, or garbage, is a configuration error */
    rt_buf_reset(&b64);
    assert_int_equal(b64_encode(&b64, span_make(want, 31), 0), 0);
    assert_int_equal(seal_master_load(NULL, rt_buf_cstr(&b64), got, NULL), ENS_ECONFIG);
    uint8_t longer[33] = {0};
    rt_buf_reset(&b64);
    assert_int_equal(b64_encode(&b64, span_make(longer, 33), 0), 0);
    assert_int_equal(seal_master_load(NULL, rt_buf_cstr(&b64), got, NULL), ENS_ECONFIG);
    assert_int_equal(seal_master_load(NULL, "!!!!", got, NULL), ENS_ECONFIG);
    assert_int_equal(seal_master_load(NULL, NULL, got, NULL), ENS_ECONFIG);
    rt_buf_cleanup(&b64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_round_trip_through_the_token_text),
        cmocka_unit_test(test_each_piece_alone_opens_nothing),
        cmocka_unit_test(test_sealing_is_randomised),
        cmocka_unit_test(test_token_parse_is_strict),
        cmocka_unit_test(test_wrap_binds_label_and_key),
        cmocka_unit_test(test_master_key_file_created_0600_and_reloaded),
        cmocka_unit_test(test_master_key_env_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
