/* Tests for protocols/apns.c (payloads, error bodies, classes) and protocols/apns_jwt.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "protocols/apns.h"
#include "protocols/apns_jwt.h"
#include "protocols/limits.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "tests/support/utf8_check.h"

static void payload_is(const struct apns_new_mail *m, const char *want)
{
    struct rt_buf b;
    rt_buf_init(&b, APNS_MAX_PAYLOAD);
    assert_int_equal(apns_payload_new_mail(&b, m), 0);
    assert_string_equal(rt_buf_cstr(&b), want);
    rt_buf_cleanup(&b);
}

static void test_new_mail_preview_full(void **state)
{
    struct apns_new_mail m = {"u1", "Ann Smith", "Lunch?", APNS_PREVIEW_FULL, 1, 3};
    payload_is(&m, "{\"aps\":{\"alert\":{\"title\":\"Ann Smith\",\"body\":\"Lunch?\"},\"badge\":3,"
                   "\"sound\":\"default\",\"mutable-content\":1,\"thread-id\":\"u1\"},"
                   "\"ens\":{\"type\":\"new-mail\",\"userId\":\"u1\"}}");
}

static void test_new_mail_preview_sender_no_badge(void **state)
{
    struct apns_new_mail m = {"u1", "Ann Smith", "Secret", APNS_PREVIEW_SENDER, 0, 3};
    payload_is(&m, "{\"aps\":{\"alert\":{\"title\":\"Ann Smith\",\"body\":\"New message\"},"
                   "\"sound\":\"default\",\"mutable-content\":1,\"thread-id\":\"u1\"},"
                   "\"ens\":{\"type\":\"new-mail\",\"userId\":\"u1\"}}");
}

static void test_new_mail_preview_none(void **state)
{
    struct apns_new_mail m = {"u1", "Ann Smith", "Secret", APNS_PREVIEW_NONE, 1, 0};
    payload_is(&m, "{\"aps\":{\"alert\":{\"title\":\"New message\"},\"badge\":0,"
                   "\"sound\":\"default\",\"mutable-content\":1,\"thread-id\":\"u1\"},"
                   "\"ens\":{\"type\":\"new-mail\",\"userId\":\"u1\"}}");
}

static void test_new_mail_escaping(void **state)
{
    /* quotes, backslash, control chars, CR/LF/TAB, invalid UTF-8 (0xff) */
    struct apns_new_mail m = {"u\"1", "A \"B\" \\C", "x\r\ny\tz\x01\xff!", APNS_PREVIEW_FULL, 0, 0};
    payload_is(&m,
               "{\"aps\":{\"alert\":{\"title\":\"A \\\"B\\\" \\\\C\",\"body\":\"x  y "
               "z\\u0001\xef\xbf\xbd!\"},\"sound\":\"default\",\"mutable-content\":1,"
               "\"thread-id\":\"u\\\"1\"},\"ens\":{\"type\":\"new-mail\",\"userId\":\"u\\\"1\"}}");
}

static void test_badge_and_checkin(void **state)
{
    struct rt_buf b;
    rt_buf_init(&b, APNS_MAX_PAYLOAD);
    assert_int_equal(apns_payload_badge(&b, 7), 0);
    assert_string_equal(rt_buf_cstr(&b), "{\"aps\":{\"badge\":7}}");
    assert_int_equal(apns_payload_checkin(&b), 0);
    assert_string_equal(rt_buf_cstr(&b),
                        "{\"aps\":{\"content-available\":1},\"ens\":{\"type\":\"checkin\"}}");
    rt_buf_cleanup(&b);
}

static void check_long_subject(const char *unit, size_t reps, const char *sender)
{
    size_t ul = strlen(unit);
    char *subject = malloc(ul * reps + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(subject + i * ul, unit, ul);
    subject[ul * reps] = 0;
    struct apns_new_mail m = {"user-42", sender, subject, APNS_PREVIEW_FULL, 1, 12};
    struct rt_buf b;
    rt_buf_init(&b, APNS_MAX_PAYLOAD);
    assert_int_equal(apns_payload_new_mail(&b, &m), 0);
    assert_true(b.len <= APNS_MAX_PAYLOAD);
    assert_true(b.len > APNS_MAX_PAYLOAD - 8); /* the budget is used, not wasted */
    assert_true(valid_utf8(b.data, b.len));
    cJSON *doc = cJSON_ParseWithLength((const char *)b.data, b.len);
    assert_non_null(doc);
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(doc, "aps");
    const cJSON *alert = cJSON_GetObjectItemCaseSensitive(aps, "alert");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(alert, "body");
    assert_true(cJSON_IsString(body));
    size_t bl = strlen(body->valuestring);
    /* The subject is cut and marked with a raw "…" (U+2026). */
    assert_true(bl > 3 && memcmp(body->valuestring + bl - 3, "\xe2\x80\xa6", 3) == 0);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(aps, "badge")->valueint, 12);
    cJSON_Delete(doc);
    rt_buf_cleanup(&b);
    free(subject);
}

static void test_long_subject_fits_on_utf8_boundary(void **state)
{
    /* 10 KB of 2-, 3- and 4-byte code points and escapes, against every phase. */
    check_long_subject("\xc3\xa9", 5000, "Ann");
    check_long_subject("\xe2\x9c\x93", 3400, "Ann");
    check_long_subject("\xf0\x9f\x98\x80", 2600, "Ann");
    check_long_subject("a\xe2\x9c\x93\"", 2000, "Ann");
    check_long_subject("ab\xf0\x9f\x98\x80", 1700, "Bob");
    /* A huge sender is capped too, and the subject still gets the rest. */
    char sender[9000];
    memset(sender, 'S', sizeof(sender) - 1);
    sender[sizeof(sender) - 1] = 0;
    check_long_subject("\xe2\x9c\x93", 3400, sender);
}

static void test_error_body_parser(void **state)
{
    char reason[APNS_MAX_REASON + 1];
    uint64_t ts;
    const char *ok = "{\"reason\":\"Unregistered\",\"timestamp\":1700000000123}";
    assert_int_equal(apns_parse_error_body(span_cstr(ok), reason, sizeof(reason), &ts), 0);
    assert_string_equal(reason, "Unregistered");
    assert_true(ts == 1700000000123ULL);
    assert_int_equal(apns_parse_error_body(span_cstr("{\"reason\":\"BadDeviceToken\"}"), reason,
                                           sizeof(reason), &ts),
                     0);
    assert_string_equal(reason, "BadDeviceToken");
    assert_true(ts == 0);
    const char *bad[] = {
        "",
        "{}",
        "[\"reason\"]",
        "{\"reason\":1}",
        "{\"reason\":\"\"}",
        "{\"reason\":\"Bad Device\"}",
        "{\"reason\":\"x\",\"timestamp\":\"soon\"}",
        "{\"reason\":\"x\",\"timestamp\":-5}",
        "{\"reason\":\"Unregistered\"",
        "{\"reason\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(apns_parse_error_body(span_cstr(bad[i]), reason, sizeof(reason), &ts),
                         ENS_EPARSE);
        assert_string_equal(reason, "");
    }
    /* The parser reads only the given length: the same bytes cut short fail. */
    assert_int_equal(apns_parse_error_body(span_make(ok, 20), reason, sizeof(reason), &ts),
                     ENS_EPARSE);
}

static void test_classification(void **state)
{
    assert_int_equal(apns_classify(200, ""), APNS_OK);
    assert_int_equal(apns_classify(410, "Unregistered"), APNS_UNREGISTERED);
    assert_int_equal(apns_classify(410, "ExpiredToken"), APNS_UNREGISTERED);
    assert_int_equal(apns_classify(400, "BadDeviceToken"), APNS_UNREGISTERED);
    assert_int_equal(apns_classify(400, "DeviceTokenNotForTopic"), APNS_UNREGISTERED);
    assert_int_equal(apns_classify(400, "BadTopic"), APNS_FATAL);
    assert_int_equal(apns_classify(400, "IdleTimeout"), APNS_RETRY);
    assert_int_equal(apns_classify(429, "TooManyRequests"), APNS_RETRY);
    assert_int_equal(apns_classify(500, "InternalServerError"), APNS_RETRY);
    assert_int_equal(apns_classify(503, "ServiceUnavailable"), APNS_RETRY);
    assert_int_equal(apns_classify(403, "InvalidProviderToken"), APNS_FATAL);
    assert_int_equal(apns_classify(413, "PayloadTooLarge"), APNS_FATAL);
    assert_int_equal(apns_classify(404, NULL), APNS_FATAL);
}

/* ---- JWT ---- */

static uint64_t fake_now;
static uint64_t fake_clock(void *ud)
{
    return fake_now;
}

static char *data_path(const char *rel)
{
    const char *d = getenv("ENS_TEST_DATA");
    static char buf[1024];
    snprintf(buf, sizeof(buf), "%s/%s", d ? d : "tests/data", rel);
    return buf;
}

static cJSON *decode_part(const char *p, size_t n)
{
    struct rt_buf b;
    rt_buf_init(&b, 4096);
    assert_int_equal(b64_decode(&b, span_make(p, n), 1), 0);
    cJSON *j = cJSON_ParseWithLength((const char *)b.data, b.len);
    rt_buf_cleanup(&b);
    assert_non_null(j);
    return j;
}

static void verify_jwt(const char *jwt, uint64_t iat)
{
    const char *d1 = strchr(jwt, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    cJSON *h = decode_part(jwt, (size_t)(d1 - jwt));
    assert_int_equal(cJSON_GetArraySize(h), 2);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(h, "alg")->valuestring, "ES256");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(h, "kid")->valuestring, "KEY1234567");
    cJSON_Delete(h);
    cJSON *c = decode_part(d1 + 1, (size_t)(d2 - d1 - 1));
    assert_int_equal(cJSON_GetArraySize(c), 2);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "iss")->valuestring, "TEAM123456");
    assert_true((uint64_t)cJSON_GetObjectItemCaseSensitive(c, "iat")->valuedouble == iat);
    cJSON_Delete(c);

    struct rt_buf sig;
    rt_buf_init(&sig, 256);
    assert_int_equal(b64_decode(&sig, span_cstr(d2 + 1), 1), 0);
    assert_int_equal(sig.len, 64);
    FILE *f = fopen(data_path("pki/apns-pub.pem"), "rb");
    assert_non_null(f);
    char pem[2048];
    size_t n = fread(pem, 1, sizeof(pem), f);
    fclose(f);
    BIO *bio = BIO_new_mem_buf(pem, n);
    EVP_PKEY *pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(pub);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)jwt, (size_t)(d2 - jwt), digest);
    ECDSA_SIG *s = ECDSA_SIG_new();
    ECDSA_SIG_set0(s, BN_bin2bn(sig.data, 32, NULL), BN_bin2bn(sig.data + 32, 32, NULL));
    assert_int_equal(ECDSA_do_verify(digest, sizeof(digest), s, EVP_PKEY_get0_EC_KEY(pub)), 1);
    ECDSA_SIG_free(s);
    EVP_PKEY_free(pub);
    rt_buf_cleanup(&sig);
}

static void test_jwt_signs_verifies_and_caches(void **state)
{
    char err[256];
    struct apns_jwt *j =
        apns_jwt_new(data_path("pki/apns.p8"), "TEAM123456", "KEY1234567", err, sizeof(err));
    assert_non_null(j);
    fake_now = 1700000000;
    apns_jwt_set_clock(j, fake_clock, NULL);
    const char *t;
    assert_int_equal(apns_jwt_get0(j, &t), 0);
    char *first = strdup(t);
    verify_jwt(first, 1700000000);

    /* Reused for 45 minutes... */
    fake_now += APNS_JWT_REFRESH_S - 1;
    assert_int_equal(apns_jwt_get0(j, &t), 0);
    assert_string_equal(t, first);
    assert_int_equal(apns_jwt_signs(j), 1);
    /* ...then re-signed with a fresh iat. */
    fake_now += 1;
    assert_int_equal(apns_jwt_get0(j, &t), 0);
    assert_string_not_equal(t, first);
    verify_jwt(t, 1700000000 + APNS_JWT_REFRESH_S);
    assert_int_equal(apns_jwt_signs(j), 2);

    /* ExpiredProviderToken forces a re-sign, but only for the current token. */
    char *second = strdup(t);
    assert_int_equal(apns_jwt_expired(j, first), 0);
    assert_int_equal(apns_jwt_get0(j, &t), 0);
    assert_string_equal(t, second);
    assert_int_equal(apns_jwt_expired(j, second), 1);
    fake_now += 5;
    assert_int_equal(apns_jwt_get0(j, &t), 0);
    assert_string_not_equal(t, second);
    assert_true(apns_jwt_issued_at(j) == fake_now);
    assert_int_equal(apns_jwt_signs(j), 3);
    free(first);
    free(second);
    apns_jwt_free(j);
}

static void test_jwt_rejects_bad_config(void **state)
{
    char err[256];
    assert_null(
        apns_jwt_new(data_path("pki/nope.p8"), "TEAM123456", "KEY1234567", err, sizeof(err)));
    assert_true(strlen(err) > 0);
    /* an RSA or non-P-256 key, or a certificate, is refused */
    assert_null(
        apns_jwt_new(data_path("pki/ca.pem"), "TEAM123456", "KEY1234567", err, sizeof(err)));
    assert_null(apns_jwt_new(data_path("pki/apns.p8"), "TEAM\"1", "KEY1234567", err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_mail_preview_full),
        cmocka_unit_test(test_new_mail_preview_sender_no_badge),
        cmocka_unit_test(test_new_mail_preview_none),
        cmocka_unit_test(test_new_mail_escaping),
        cmocka_unit_test(test_badge_and_checkin),
        cmocka_unit_test(test_long_subject_fits_on_utf8_boundary),
        cmocka_unit_test(test_error_body_parser),
        cmocka_unit_test(test_classification),
        cmocka_unit_test(test_jwt_signs_verifies_and_caches),
        cmocka_unit_test(test_jwt_rejects_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
