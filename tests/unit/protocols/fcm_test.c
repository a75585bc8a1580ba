/* Tests for protocols/fcm.c: payloads, error bodies and classes, the service
 * account and its RS256 assertion, token responses, Retry-After. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "protocols/fcm.h"
#include "protocols/limits.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "tests/support/utf8_check.h"

#define TOK "cXr4:APA91bH-x_y.z0"

/* ---- payloads ---- */

static void payload_is(const struct fcm_new_mail *m, const char *want)
{
    struct rt_buf b;
    rt_buf_init(&b, FCM_MAX_PAYLOAD);
    assert_int_equal(fcm_payload_new_mail(&b, m), 0);
    assert_string_equal(rt_buf_cstr(&b), want);
    rt_buf_cleanup(&b);
}

static void test_new_mail_preview_full(void **state)
{
    struct fcm_new_mail m = {TOK, "u1", "Ann Smith", "Lunch?", FCM_PREVIEW_FULL, 1, 3};
    payload_is(&m, "{\"message\":{\"token\":\"" TOK "\",\"data\":{\"type\":\"new-mail\","
                   "\"title\":\"Ann Smith\",\"body\":\"Lunch?\",\"badge\":\"3\",\"userId\":\"u1\"},"
                   "\"android\":{\"priority\":\"high\"}}}");
}

static void test_new_mail_preview_sender_no_badge(void **state)
{
    struct fcm_new_mail m = {TOK, "u1", "Ann Smith", "Secret", FCM_PREVIEW_SENDER, 0, 3};
    payload_is(&m, "{\"message\":{\"token\":\"" TOK "\",\"data\":{\"type\":\"new-mail\","
                   "\"title\":\"Ann Smith\",\"body\":\"New message\",\"userId\":\"u1\"},"
                   "\"android\":{\"priority\":\"high\"}}}");
}

static void test_new_mail_preview_none(void **state)
{
    struct fcm_new_mail m = {TOK, "u1", "Ann Smith", "Secret", FCM_PREVIEW_NONE, 1, 0};
    payload_is(&m, "{\"message\":{\"token\":\"" TOK "\",\"data\":{\"type\":\"new-mail\","
                   "\"title\":\"New message\",\"badge\":\"0\",\"userId\":\"u1\"},"
                   "\"android\":{\"priority\":\"high\"}}}");
}

static void test_new_mail_escaping(void **state)
{
    /* quotes, backslash, control chars, CR/LF/TAB, invalid UTF-8 (0xff) */
    struct fcm_new_mail m = {TOK, "u\"1", "A \"B\" \\C", "x\r\ny\tz\x01\xff!", FCM_PREVIEW_FULL,
                             0,   0};
    payload_is(&m, "{\"message\":{\"token\":\"" TOK "\",\"data\":{\"type\":\"new-mail\","
                   "\"title\":\"A \\\"B\\\" \\\\C\",\"body\":\"x  y z\\u0001\xef\xbf\xbd!\","
                   "\"userId\":\"u\\\"1\"},\"android\":{\"priority\":\"high\"}}}");
}

static void test_badge_and_checkin(void **state)
{
    struct rt_buf b;
    rt_buf_init(&b, FCM_MAX_PAYLOAD);
    assert_int_equal(fcm_payload_badge(&b, TOK, 7), 0);
    assert_string_equal(rt_buf_cstr(&b),
                        "{\"message\":{\"token\":\"" TOK "\",\"data\":{\"type\":\"badge\","
                        "\"badge\":\"7\"},\"android\":{\"priority\":\"normal\"}}}");
    assert_int_equal(fcm_payload_checkin(&b, TOK), 0);
    assert_string_equal(rt_buf_cstr(&b),
                        "{\"message\":{\"token\":\"" TOK "\",\"data\":{\"type\":\"checkin\"},"
                        "\"android\":{\"priority\":\"normal\"}}}");
    rt_buf_cleanup(&b);
}

static void test_bad_arguments(void **state)
{
    struct rt_buf b;
    rt_buf_init(&b, FCM_MAX_PAYLOAD);
    struct fcm_new_mail m = {"bad\"token", "u1", "A", "S", FCM_PREVIEW_FULL, 0, 0};
    assert_int_equal(fcm_payload_new_mail(&b, &m), ENS_EINVAL);
    m.token = "";
    assert_int_equal(fcm_payload_new_mail(&b, &m), ENS_EINVAL);
    m.token = TOK;
    m.user_id = NULL;
    assert_int_equal(fcm_payload_new_mail(&b, &m), ENS_EINVAL);
    assert_int_equal(fcm_payload_badge(&b, NULL, 1), ENS_EINVAL);
    assert_int_equal(fcm_payload_checkin(&b, "a b"), ENS_EINVAL);
    rt_buf_cleanup(&b);
    /* a buffer whose cap cannot hold a full payload is refused */
    rt_buf_init(&b, 100);
    m.user_id = "u1";
    assert_int_equal(fcm_payload_new_mail(&b, &m), ENS_EINVAL);
    rt_buf_cleanup(&b);
}

static void check_long_subject(const char *unit, size_t reps, const char *sender)
{
    size_t ul = strlen(unit);
    char *subject = malloc(ul * reps + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(subject + i * ul, unit, ul);
    subject[ul * reps] = 0;
    struct fcm_new_mail m = {TOK, "user-42", sender, subject, FCM_PREVIEW_FULL, 1, 12};
    struct rt_buf b;
    rt_buf_init(&b, FCM_MAX_PAYLOAD);
    assert_int_equal(fcm_payload_new_mail(&b, &m), 0);
    assert_true(b.len <= FCM_MAX_PAYLOAD);
    assert_true(b.len > FCM_MAX_PAYLOAD - 8); /* the budget is used, not wasted */
    assert_true(valid_utf8(b.data, b.len));
    cJSON *doc = cJSON_ParseWithLength((const char *)b.data, b.len);
    assert_non_null(doc);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(doc, "message");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(msg, "data");
    const cJSON *v;
    cJSON_ArrayForEach(v, data) assert_true(cJSON_IsString(v)); /* FCM data: strings only */
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(data, "body");
    assert_true(cJSON_IsString(body));
    size_t bl = strlen(body->valuestring);
    /* The subject is cut and marked with a raw "…" (U+2026). */
    assert_true(bl > 3 && memcmp(body->valuestring + bl - 3, "\xe2\x80\xa6", 3) == 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(data, "badge")->valuestring, "12");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(data, "userId")->valuestring, "user-42");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(msg, "token")->valuestring, TOK);
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
    check_long_subject("\x01", 2000, "Bob"); /* 6-byte escapes */
    /* A huge sender is capped too, and the subject still gets the rest. */
    char sender[9000];
    memset(sender, 'S', sizeof(sender) - 1);
    sender[sizeof(sender) - 1] = 0;
    check_long_subject("\xe2\x9c\x93", 3400, sender);
}

/* ---- error bodies, classes, Retry-After ---- */

#define FCMERR(code)                                                                               \
    "{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\","                          \
    "\"errorCode\":\"" code "\"}"

static void test_error_body_parser(void **state)
{
    struct fcm_error e;
    const char *unreg = "{\"error\":{\"code\":404,\"message\":\"Requested entity was not found.\","
                        "\"status\":\"NOT_FOUND\",\"details\":[" FCMERR("UNREGISTERED") "]}}";
    assert_int_equal(fcm_parse_error_body(span_cstr(unreg), &e), 0);
    assert_string_equal(e.status, "NOT_FOUND");
    assert_string_equal(e.code, "UNREGISTERED");
    assert_int_equal(e.invalid_token, 0);

    /* Other detail types are skipped; the FcmError one is found after them. */
    const char *bad_tok =
        "{\"error\":{\"code\":400,\"message\":\"The registration token is not a valid FCM "
        "registration token\",\"status\":\"INVALID_ARGUMENT\",\"details\":["
        "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\",\"fieldViolations\":"
        "[{\"field\":\"message.token\"}]}," FCMERR("INVALID_ARGUMENT") "]}}";
    assert_int_equal(fcm_parse_error_body(span_cstr(bad_tok), &e), 0);
    assert_string_equal(e.code, "INVALID_ARGUMENT");
    assert_int_equal(e.invalid_token, 1);

    /* A 401 for our access token has a status and no FcmError. */
    const char *unauth = "{\"error\":{\"code\":401,\"message\":\"Request had invalid "
                         "authentication credentials.\",\"status\":\"UNAUTHENTICATED\"}}";
    assert_int_equal(fcm_parse_error_body(span_cstr(unauth), &e), 0);
    assert_string_equal(e.status, "UNAUTHENTICATED");
    assert_string_equal(e.code, "");

    const char *bad[] = {
        "",
        "{}",
        "[]",
        "{\"error\":\"x\"}",
        "{\"error\":{}}",
        "{\"error\":{\"status\":1}}",
        "{\"error\":{\"status\":\"\"}}",
        "{\"error\":{\"status\":\"not_found\"}}",
        "{\"error\":{\"status\":\"A B\"}}",
        "{\"error\":{\"status\":\"NOT_FOUND\",\"message\":7}}",
        "{\"error\":{\"status\":\"NOT_FOUND\",\"details\":{}}}",
        "{\"error\":{\"details\":[" FCMERR("bad code") "]}}",
        "{\"error\":{\"details\":[{\"errorCode\":\"UNREGISTERED\"}]}}", /* no @type */
        "{\"error\":{\"status\":\"NOT_FOUND\"}",
        "{\"error\":{\"status\":"
        "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAA\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e.status[0] = 'x';
        assert_int_equal(fcm_parse_error_body(span_cstr(bad[i]), &e), ENS_EPARSE);
        assert_string_equal(e.status, "");
        assert_string_equal(e.code, "");
        assert_int_equal(e.invalid_token, 0);
    }
    /* The parser reads only the given length: the same bytes cut short fail. */
    assert_int_equal(fcm_parse_error_body(span_make(unreg, 40), &e), ENS_EPARSE);
}

static enum fcm_class classify_body(int status, const char *body)
{
    struct fcm_error e;
    fcm_parse_error_body(span_cstr(body), &e);
    return fcm_classify(status, &e);
}

#define BODY(st, code) "{\"error\":{\"status\":\"" st "\",\"details\":[" FCMERR(code) "]}}"

static void test_classification(void **state)
{
    assert_int_equal(fcm_classify(200, NULL), FCM_OK);
    assert_int_equal(classify_body(404, BODY("NOT_FOUND", "UNREGISTERED")), FCM_UNREGISTERED);
    assert_int_equal(classify_body(403, BODY("PERMISSION_DENIED", "SENDER_ID_MISMATCH")),
                     FCM_UNREGISTERED);
    assert_int_equal(classify_body(400, "{\"error\":{\"status\":\"INVALID_ARGUMENT\",\"message\":"
                                        "\"The registration token is not a valid FCM "
                                        "registration token\"}}"),
                     FCM_UNREGISTERED);
    assert_int_equal(classify_body(400, BODY("INVALID_ARGUMENT", "INVALID_ARGUMENT")), FCM_FATAL);
    assert_int_equal(classify_body(429, BODY("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")), FCM_RETRY);
    assert_int_equal(classify_body(500, BODY("INTERNAL", "INTERNAL")), FCM_RETRY);
    assert_int_equal(classify_body(503, BODY("UNAVAILABLE", "UNAVAILABLE")), FCM_RETRY);
    assert_int_equal(fcm_classify(502, NULL), FCM_RETRY);
    assert_int_equal(classify_body(401, BODY("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")),
                     FCM_FATAL);
    assert_int_equal(classify_body(401, "{\"error\":{\"status\":\"UNAUTHENTICATED\"}}"), FCM_FATAL);
    assert_int_equal(fcm_classify(404, NULL), FCM_FATAL); /* wrong project or path: our bug */
    assert_int_equal(classify_body(404, BODY("NOT_FOUND", "SENDER_ID_MISMATCH")), FCM_FATAL);
    assert_string_equal(fcm_class_name(FCM_UNREGISTERED), "unregistered");
    assert_string_equal(fcm_class_name(FCM_RETRY), "retry");
}

static void test_retry_after(void **state)
{
    assert_int_equal(fcm_parse_retry_after(span_cstr("120")), 120);
    assert_int_equal(fcm_parse_retry_after(span_cstr(" 7 ")), 7);
    assert_int_equal(fcm_parse_retry_after(span_cstr("0")), 0);
    assert_int_equal(fcm_parse_retry_after(span_cstr("99999999999999999999999")),
                     FCM_MAX_RETRY_AFTER_S);
    assert_int_equal(fcm_parse_retry_after(span_cstr("100000")), FCM_MAX_RETRY_AFTER_S);
    assert_int_equal(fcm_parse_retry_after(span_cstr("Wed, 21 Oct 2015 07:28:00 GMT")), 0);
    assert_int_equal(fcm_parse_retry_after(span_cstr("-1")), 0);
    assert_int_equal(fcm_parse_retry_after(span_cstr("12x")), 0);
    assert_int_equal(fcm_parse_retry_after(span_cstr("")), 0);
    assert_int_equal(fcm_parse_retry_after(span_make("123", 2)), 12);
}

static void test_token_response(void **state)
{
    struct rt_buf t;
    rt_buf_init(&t, FCM_MAX_ACCESS_TOKEN);
    uint32_t exp;
    assert_int_equal(fcm_parse_token_response(span_cstr("{\"access_token\":\"ya29.c-_x/+=\","
                                                        "\"expires_in\":3599,\"token_type\":"
                                                        "\"Bearer\"}"),
                                              &t, &exp),
                     0);
    assert_string_equal(rt_buf_cstr(&t), "ya29.c-_x/+=");
    assert_int_equal(exp, 3599);
    const char *bad[] = {
        "",
        "{}",
        "{\"access_token\":\"a\"}",
        "{\"access_token\":\"a b\",\"expires_in\":3599}",
        "{\"access_token\":\"a\\\"b\",\"expires_in\":3599}",
        "{\"access_token\":\"\",\"expires_in\":3599}",
        "{\"access_token\":\"a\",\"expires_in\":0}",
        "{\"access_token\":\"a\",\"expires_in\":\"3599\"}",
        "{\"access_token\":\"a\",\"expires_in\":100000}",
        "{\"access_token\":\"a\",\"expires_in\":3599,\"token_type\":\"MAC\"}",
        "[\"access_token\"]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(fcm_parse_token_response(span_cstr(bad[i]), &t, &exp), ENS_EPARSE);
        assert_int_equal(t.len, 0);
    }
    rt_buf_cleanup_secret(&t);
}

/* ---- service account and assertion ---- */

static char tmpdir[256];

static int setup_tmp(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fcm_test.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* PEM of |key| (PKCS#8 private), escaped for a JSON string by cJSON. */
static char *key_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
    const uint8_t *p;
    size_t n;
    assert_int_equal(BIO_mem_contents(bio, &p, &n), 1);
    char *s = strndup((const char *)p, n);
    BIO_free(bio);
    return s;
}

static EVP_PKEY *rsa_key(unsigned bits)
{
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, RSA_F4);
    assert_int_equal(RSA_generate_key_ex(rsa, (int)bits, e, NULL), 1);
    BN_free(e);
    EVP_PKEY *k = EVP_PKEY_new();
    EVP_PKEY_assign_RSA(k, rsa);
    return k;
}

static const char *write_account(const char *name, const char *project, const char *email,
                                 EVP_PKEY *key, const char *token_uri)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "service_account");
    if (project)
        cJSON_AddStringToObject(o, "project_id", project);
    if (key) {
        char *pem = key_pem(key);
        cJSON_AddStringToObject(o, "private_key", pem);
        free(pem);
    }
    if (email)
        cJSON_AddStringToObject(o, "client_email", email);
    if (token_uri)
        cJSON_AddStringToObject(o, "token_uri", token_uri);
    char *text = cJSON_Print(o);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(o);
    return path;
}

static cJSON *decode_part(const char *p, size_t n, char **raw)
{
    struct rt_buf b;
    rt_buf_init(&b, 4096);
    assert_int_equal(b64_decode(&b, span_make(p, n), 1), 0);
    *raw = strdup(rt_buf_cstr(&b));
    cJSON *j = cJSON_ParseWithLength((const char *)b.data, b.len);
    rt_buf_cleanup(&b);
    assert_non_null(j);
    return j;
}

static void test_assertion_verifies(void **state)
{
    EVP_PKEY *key = rsa_key(2048);
    const char *path = write_account("sa.json", "demo-project", "ens@demo-project.iam.example", key,
                                     "https://oauth2.example/token");
    char err[256];
    struct fcm_account *a = fcm_account_load(path, err, sizeof(err));
    assert_non_null(a);
    assert_string_equal(fcm_account_get0_project_id(a), "demo-project");
    assert_string_equal(fcm_account_get0_token_uri(a), "https://oauth2.example/token");

    struct rt_buf jwt;
    rt_buf_init(&jwt, FCM_MAX_ASSERTION);
    assert_int_equal(fcm_account_assertion(a, "https://127.0.0.1:1/token", 1700000000, &jwt), 0);
    const char *s = rt_buf_cstr(&jwt);
    const char *d1 = strchr(s, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    char *hraw, *craw;
    cJSON *h = decode_part(s, (size_t)(d1 - s), &hraw);
    assert_string_equal(hraw, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
    cJSON *c = decode_part(d1 + 1, (size_t)(d2 - d1 - 1), &craw);
    assert_string_equal(craw, "{\"iss\":\"ens@demo-project.iam.example\",\"scope\":\"https://"
                              "www.googleapis.com/auth/firebase.messaging\",\"aud\":\"https://"
                              "127.0.0.1:1/token\",\"iat\":1700000000,\"exp\":1700003600}");
    cJSON_Delete(h);
    cJSON_Delete(c);
    free(hraw);
    free(craw);

    /* RSASSA-PKCS1-v1_5 SHA-256 over "header.claims", with the public key. */
    struct rt_buf sig;
    rt_buf_init(&sig, 1024);
    assert_int_equal(b64_decode(&sig, span_cstr(d2 + 1), 1), 0);
    assert_int_equal(sig.len, 256);
    EVP_MD_CTX md;
    EVP_MD_CTX_init(&md);
    assert_int_equal(EVP_DigestVerifyInit(&md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestVerify(&md, sig.data, sig.len, (const uint8_t *)s, (size_t)(d2 - s)),
                     1);
    EVP_MD_CTX_cleanup(&md);
    /* ...and a flipped byte does not verify. */
    EVP_MD_CTX_init(&md);
    sig.data[10] ^= 1;
    assert_int_equal(EVP_DigestVerifyInit(&md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestVerify(&md, sig.data, sig.len, (const uint8_t *)s, (size_t)(d2 - s)),
                     0);
    EVP_MD_CTX_cleanup(&md);
    rt_buf_cleanup(&sig);
    rt_buf_cleanup_secret(&jwt);
    fcm_account_free(a);
    EVP_PKEY_free(key);
}

static void test_account_rejects_bad_files(void **state)
{
    char err[256];
    EVP_PKEY *rsa = rsa_key(2048);
    err[0] = 0;
    assert_null(fcm_account_load("/nonexistent/sa.json", err, sizeof(err)));
    assert_true(strlen(err) > 0);
    assert_null(
        fcm_account_load(write_account("a.json", NULL, "a@b", rsa, NULL), err, sizeof(err)));
    assert_null(fcm_account_load(write_account("b.json", "p", NULL, rsa, NULL), err, sizeof(err)));
    assert_null(
        fcm_account_load(write_account("c.json", "p", "a@b", NULL, NULL), err, sizeof(err)));
    assert_null(fcm_account_load(write_account("d.json", "Bad/Project", "a@b", rsa, NULL), err,
                                 sizeof(err)));
    assert_null(
        fcm_account_load(write_account("e.json", "p", "a\"@b", rsa, NULL), err, sizeof(err)));
    /* A P-256 key is not RS256 material; nor is a 1024-bit RSA key. */
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    assert_int_equal(EC_KEY_generate_key(ec), 1);
    EVP_PKEY *eck = EVP_PKEY_new();
    EVP_PKEY_assign_EC_KEY(eck, ec);
    assert_null(fcm_account_load(write_account("f.json", "p", "a@b", eck, NULL), err, sizeof(err)));
    assert_null(strstr(err, "PRIVATE"));
    EVP_PKEY *small = rsa_key(1024);
    assert_null(
        fcm_account_load(write_account("g.json", "p", "a@b", small, NULL), err, sizeof(err)));
    /* not JSON at all */
    char path[512];
    snprintf(path, sizeof(path), "%s/h.json", tmpdir);
    FILE *f = fopen(path, "wb");
    fputs("-----BEGIN PRIVATE KEY-----", f);
    fclose(f);
    assert_null(fcm_account_load(path, err, sizeof(err)));
    EVP_PKEY_free(small);
    EVP_PKEY_free(eck);
    EVP_PKEY_free(rsa);
}

static void test_client_new_validates(void **state)
{
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    EVP_PKEY *key = rsa_key(2048);
    const char *path = write_account("ok.json", "demo", "a@b", key, NULL);
    struct fcm_opts o = {.service_account_file = path};
    struct fcm_client *c = fcm_client_new(&loop, &o, err, sizeof(err));
    assert_non_null(c);
    struct fcm_push p = {(const uint8_t *)"{}", 0, 0};
    assert_int_equal(fcm_send(c, &p, (fcm_result_cb)1, NULL), ENS_EINVAL);
    fcm_client_free(c);
    o.url = "http://fcm.example";
    assert_null(fcm_client_new(&loop, &o, err, sizeof(err)));
    o.url = NULL;
    o.token_url = "ftp://x";
    assert_null(fcm_client_new(&loop, &o, err, sizeof(err)));
    o.token_url = NULL;
    o.service_account_file = NULL;
    assert_null(fcm_client_new(&loop, &o, err, sizeof(err)));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    EVP_PKEY_free(key);
}

struct outcome {
    int calls;
    int err;
    enum fcm_class cls;
};

static void on_outcome(const struct fcm_result *r, void *ud)
{
    struct outcome *o = ud;
    o->calls++;
    o->err = r->err;
    o->cls = r->cls;
}

/* The token endpoint is unreachable: the parked push ends with ENS_EAUTH and
 * FCM_RETRY. Then: freeing the client while a token request is in flight
 * cancels the parked push at once and releases everything after the request
 * ends (ASan checks the order). */
static void test_token_failure_and_free_while_fetching(void **state)
{
    char err[256];
    uv_loop_t loop;
    uv_loop_init(&loop);
    EVP_PKEY *key = rsa_key(2048);
    const char *path = write_account("ok2.json", "demo", "a@b", key, NULL);
    struct fcm_opts o = {.service_account_file = path,
                         .url = "https://127.0.0.1:1",
                         .token_url = "https://127.0.0.1:1/token"};
    struct fcm_client *c = fcm_client_new(&loop, &o, err, sizeof(err));
    assert_non_null(c);
    struct rt_buf b;
    rt_buf_init(&b, FCM_MAX_PAYLOAD);
    assert_int_equal(fcm_payload_checkin(&b, TOK), 0);
    struct fcm_push p = {b.data, b.len, 0};

    struct outcome a = {0, 0, FCM_OK};
    assert_int_equal(fcm_send(c, &p, on_outcome, &a), 0);
    assert_int_equal(a.calls, 0); /* never before fcm_send returns */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.err, ENS_EAUTH);
    assert_int_equal(a.cls, FCM_RETRY);
    assert_int_equal(fcm_client_token_fetches(c), 0);

    struct outcome z = {0, 0, FCM_OK};
    assert_int_equal(fcm_send(c, &p, on_outcome, &z), 0);
    fcm_client_free(c);
    assert_int_equal(z.calls, 1);
    assert_int_equal(z.err, ENS_ECANCELED);
    assert_int_equal(z.cls, FCM_RETRY);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(z.calls, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    rt_buf_cleanup(&b);
    EVP_PKEY_free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_mail_preview_full),
        cmocka_unit_test(test_new_mail_preview_sender_no_badge),
        cmocka_unit_test(test_new_mail_preview_none),
        cmocka_unit_test(test_new_mail_escaping),
        cmocka_unit_test(test_badge_and_checkin),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_long_subject_fits_on_utf8_boundary),
        cmocka_unit_test(test_error_body_parser),
        cmocka_unit_test(test_classification),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_token_response),
        cmocka_unit_test(test_assertion_verifies),
        cmocka_unit_test(test_account_rejects_bad_files),
        cmocka_unit_test(test_client_new_validates),
        cmocka_unit_test(test_token_failure_and_free_while_fetching),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
