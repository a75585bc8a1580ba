/* Tests for protocols/enroll.c: the enrollment payload of API.md 1.2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "protocols/enroll.h"

#define NOW 1764000000

static const char kGood[] =
    "{\"email\":\"alice@contoso.com\",\"ewsUrl\":\"https://mail.contoso.com/EWS/Exchange.asmx\","
    "\"auth\":{\"type\":\"basic\",\"username\":\"CONTOSO\\\\alice\",\"password\":\"s3cret\"},"
    "\"device\":{\"id\":\"3f2c\",\"platform\":\"ios\",\"pushToken\":\"A1b2c3d4a1b2c3d4\","
    "\"appId\":\"com.example.mail\",\"environment\":\"sandbox\"},"
    "\"preferences\":{\"preview\":\"sender\",\"badge\":false},\"iat\":1764000000}";

static enum enroll_result parse(const char *json, struct enroll_payload *p, const char **field)
{
    return enroll_parse(span_cstr(json), NOW, p, field);
}

static void test_a_full_payload_parses(void **state)
{
    struct enroll_payload p;
    const char *field;
    assert_int_equal(parse(kGood, &p, &field), ENROLL_OK);
    assert_string_equal(p.email, "alice@contoso.com");
    assert_string_equal(p.ews_url, "https://mail.contoso.com/EWS/Exchange.asmx");
    assert_string_equal(p.auth_type, "basic");
    assert_string_equal(p.device_id, "3f2c");
    assert_string_equal(p.platform, "ios");
    assert_string_equal(p.push_token, "A1b2c3d4a1b2c3d4");
    assert_string_equal(p.environment, "sandbox");
    assert_string_equal(p.preview, "sender");
    assert_int_equal(p.badge, 0);
    assert_int_equal(p.iat, NOW);
    /* the credentials are kept as the auth object, for sealing */
    assert_string_equal(
        rt_buf_cstr(&p.creds),
        "{\"type\":\"basic\",\"username\":\"CONTOSO\\\\alice\",\"password\":\"s3cret\"}");
    enroll_payload_cleanup(&p);
}

static void test_defaults_and_optional_fields(void **state)
{
    static const char kMin[] =
        "{\"email\":\"bob@contoso.com\",\"auth\":{\"type\":\"oauth\",\"accessToken\":\"eyJ0\"},"
        "\"device\":{\"id\":\"p\",\"platform\":\"android\",\"pushToken\":\"cXr:APA91b-x_y\","
        "\"appId\":\"com.example.mail\"},\"iat\":1764000300}";
    struct enroll_payload p;
    const char *field;
    assert_int_equal(parse(kMin, &p, &field), ENROLL_OK);
    assert_string_equal(p.ews_url, ""); /* Autodiscover would be needed: the caller decides */
    assert_string_equal(p.environment, "production");
    assert_string_equal(p.preview, "full");
    assert_int_equal(p.badge, 1);
    assert_string_equal(p.auth_type, "oauth");
    enroll_payload_cleanup(&p);
}

/* Each row changes one thing in the good payload and names the field that
 * must be reported. */
static void test_each_bad_field_is_named(void **state)
{
    static const struct {
        const char *from, *to;
        enum enroll_result want;
        const char *field;
    } kCases[] = {
        {"\"email\":\"alice@contoso.com\"", "\"email\":\"alice.contoso.com\"", ENROLL_INVALID,
         "email"},
        {"\"email\":\"alice@contoso.com\"", "\"email\":\"a@b@c\"", ENROLL_INVALID, "email"},
        {"\"email\":\"alice@contoso.com\"", "\"email\":42", ENROLL_INVALID, "email"},
        {"\"ewsUrl\":\"https", "\"ewsUrl\":\"https \\u0001", ENROLL_INVALID, "ewsUrl"},
        {"\"type\":\"basic\"", "\"type\":\"ntlm\"", ENROLL_INVALID, "auth.type"},
        {"\"type\":\"basic\"", "\"type\":\"certificate\"", ENROLL_UNSUPPORTED, "auth.type"},
        {"\"password\":\"s3cret\"", "\"password\":\"\"", ENROLL_INVALID, "auth.password"},
        {"\"username\":\"CONTOSO\\\\alice\",", "", ENROLL_INVALID, "auth.username"},
        {"\"platform\":\"ios\"", "\"platform\":\"symbian\"", ENROLL_INVALID, "device.platform"},
        {"\"pushToken\":\"A1b2c3d4a1b2c3d4\"", "\"pushToken\":\"not hex!\"", ENROLL_INVALID,
         "device.pushToken"},
        {"\"pushToken\":\"A1b2c3d4a1b2c3d4\"", "\"pushToken\":\"a1b2c3d4a1b2c3d\"", ENROLL_INVALID,
         "device.pushToken"}, /* odd length */
        {"\"appId\":\"com.example.mail\"", "\"appId\":\"com example\"", ENROLL_INVALID,
         "device.appId"},
        {"\"environment\":\"sandbox\"", "\"environment\":\"staging\"", ENROLL_INVALID,
         "device.environment"},
        {"\"preview\":\"sender\"", "\"preview\":\"everything\"", ENROLL_INVALID,
         "preferences.preview"},
        {"\"badge\":false", "\"badge\":\"no\"", ENROLL_INVALID, "preferences.badge"},
        {"\"iat\":1764000000", "\"iat\":\"now\"", ENROLL_INVALID, "iat"},
        {"\"iat\":1764000000", "\"iat\":1763999399", ENROLL_STALE, "iat"},
        {"\"iat\":1764000000", "\"iat\":1764000601", ENROLL_STALE, "iat"},
        {"\"device\":{\"id\":\"3f2c\",", "\"device\":{\"id\":\"\",", ENROLL_INVALID, "device.id"},
    };
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        char json[2048];
        const char *at = strstr(kGood, kCases[i].from);
        assert_non_null(at);
        snprintf(json, sizeof(json), "%.*s%s%s", (int)(at - kGood), kGood, kCases[i].to,
                 at + strlen(kCases[i].from));
        struct enroll_payload p;
        const char *field = NULL;
        enum enroll_result r = parse(json, &p, &field);
        if (r != kCases[i].want || strcmp(field, kCases[i].field) != 0)
            fail_msg("case %zu: got %d %s, want %d %s", i, r, field, kCases[i].want,
                     kCases[i].field);
        enroll_payload_cleanup(&p);
    }
}

static void test_not_json_or_not_an_object(void **state)
{
    static const char *const kBad[] = {"", "{", "[]", "\"x\"", "null", "{\"email\":}"};
    for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++) {
        struct enroll_payload p;
        const char *field;
        assert_int_equal(parse(kBad[i], &p, &field), ENROLL_NOT_JSON);
        enroll_payload_cleanup(&p);
    }
    /* a device that is not an object is a field error, not a parse error */
    struct enroll_payload p;
    const char *field;
    assert_int_equal(parse("{\"iat\":1764000000,\"email\":\"a@b\",\"device\":[]}", &p, &field),
                     ENROLL_INVALID);
    assert_string_equal(field, "device.id");
    enroll_payload_cleanup(&p);
}

static void test_preview_rank(void **state)
{
    assert_true(enroll_preview_rank("none") < enroll_preview_rank("sender"));
    assert_true(enroll_preview_rank("sender") < enroll_preview_rank("full"));
    assert_int_equal(enroll_preview_rank("all"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_full_payload_parses),
        cmocka_unit_test(test_defaults_and_optional_fields),
        cmocka_unit_test(test_each_bad_field_is_named),
        cmocka_unit_test(test_not_json_or_not_an_object),
        cmocka_unit_test(test_preview_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
