/* Tests for runtime/buf.c, runtime/span.h, runtime/err.c and the log redactor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "runtime/b64.h"
#include "runtime/clock.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/span.h"

static void test_buf_cap_is_hard(void **state)
{
    struct rt_buf b;
    rt_buf_init(&b, 8);
    assert_int_equal(rt_buf_append_str(&b, "12345"), 0);
    assert_int_equal(rt_buf_append_str(&b, "6789"), ENS_ETOOBIG);
    /* a failed append leaves the buffer as it was */
    assert_int_equal(b.len, 5);
    assert_string_equal(rt_buf_cstr(&b), "12345");
    assert_int_equal(rt_buf_appendf(&b, "%d", 678), 0);
    assert_string_equal(rt_buf_cstr(&b), "12345678");
    assert_int_equal(rt_buf_appendf(&b, "x"), ENS_ETOOBIG);
    rt_buf_consume(&b, 3);
    assert_string_equal(rt_buf_cstr(&b), "45678");
    rt_buf_cleanup(&b);
}

static void test_span_readers_advance_only_on_success(void **state)
{
    const uint8_t raw[] = {0x00, 0x03, 'a', 'b'};
    struct span s = span_make(raw, sizeof(raw));
    struct span out;
    assert_int_equal(span_get_u16_prefixed(&s, &out), 0);
    assert_int_equal(s.len, 4);
    uint16_t v;
    assert_int_equal(span_get_u16(&s, &v), 1);
    assert_int_equal(v, 3);
    assert_int_equal(span_get_bytes(&s, &out, 3), 0);
    assert_int_equal(s.len, 2);
}

static void test_span_decimal_bounds(void **state)
{
    struct span s = span_cstr("1048576x");
    uint64_t v;
    assert_int_equal(span_get_decimal(&s, 1048576, &v), 1);
    assert_int_equal(v, 1048576);
    assert_true(span_eq(s, "x"));
    s = span_cstr("1048577");
    assert_int_equal(span_get_decimal(&s, 1048576, &v), 0);
    s = span_cstr("99999999999999999999999");
    assert_int_equal(span_get_decimal(&s, UINT64_MAX, &v), 0);
    s = span_cstr("-1");
    assert_int_equal(span_get_decimal(&s, 10, &v), 0);
}

static void test_err_names(void **state)
{
    assert_string_equal(ens_err_name(ENS_ETOOBIG), "ETOOBIG");
    assert_string_equal(ens_strerror(ENS_OK), "success");
    assert_string_equal(ens_err_name(-12345), "EUNKNOWN");
}

static void test_log_redacts_secrets(void **state)
{
    char out[256];
    rt_log_redact("POST /api/ens/v1/ews/AbC-123_x HTTP/1.1", out, sizeof(out));
    assert_string_equal(out, "POST /api/ens/v1/ews/<redacted> HTTP/1.1");
    rt_log_redact("authorization: Bearer s3cr3t, next", out, sizeof(out));
    assert_string_equal(out, "authorization: Bearer <redacted>, next");
    rt_log_redact("{\"password\":\"hunter2\",\"u\":1}", out, sizeof(out));
    assert_string_equal(out, "{\"password\":\"<redacted>\",\"u\":1}");
    rt_log_redact("path=/ews/", out, sizeof(out));
    assert_string_equal(out, "path=/ews/");
    /* truncation keeps the output terminated and never leaks the tail */
    rt_log_redact("x /ews/secrettoken", out, 8);
    assert_int_equal(strlen(out), 7);
}

static void test_b64_round_trip_and_strictness(void **state)
{
    struct rt_buf b;
    rt_buf_init(&b, 1024);
    assert_int_equal(b64_encode(&b, span_cstr("any carnal pleas"), 0), 0);
    assert_string_equal(rt_buf_cstr(&b), "YW55IGNhcm5hbCBwbGVhcw==");
    rt_buf_reset(&b);
    const uint8_t raw[] = {0xfb, 0xff, 0xfe};
    assert_int_equal(b64_encode(&b, span_make(raw, 3), 1), 0);
    assert_string_equal(rt_buf_cstr(&b), "-__-");
    rt_buf_reset(&b);
    assert_int_equal(b64_decode(&b, span_cstr("YW55IGNhcm5hbCBwbGVhcw=="), 0), 0);
    assert_string_equal(rt_buf_cstr(&b), "any carnal pleas");
    rt_buf_reset(&b);
    assert_int_equal(b64_decode(&b, span_cstr("YQ"), 1), 0);
    assert_string_equal(rt_buf_cstr(&b), "a");
    rt_buf_reset(&b);
    assert_int_equal(b64_decode(&b, span_cstr("YR"), 1), ENS_EPARSE); /* non-zero tail bits */
    assert_int_equal(b64_decode(&b, span_cstr("Y W"), 1), ENS_EPARSE);
    assert_int_equal(b64_decode(&b, span_cstr("YQ=="), 1), ENS_EPARSE);
    assert_int_equal(b64_decode(&b, span_cstr("Y"), 1), ENS_EPARSE);
    assert_int_equal(b64_decode(&b, span_cstr("YQ="), 0), ENS_EPARSE);
    assert_int_equal(b.len, 0);
    rt_buf_cleanup(&b);
}

static void test_secret_buf_grows_and_keeps_contents(void **state)
{
    struct rt_buf b;
    rt_buf_init_secret(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rt_buf_appendf(&b, "%04d", i), 0);
    assert_int_equal(b.len, 4000);
    assert_memory_equal(b.data + 3996, "0999", 4);
    assert_memory_equal(b.data, "0000", 4);
    rt_buf_cleanup_secret(&b);
    assert_null(b.data);
}

/* Every response carries an HTTP date (RFC 9110 5.6.7): IMF-fixdate, GMT. */
static void test_http_date(void **state)
{
    (void)state;
    char d[RT_HTTP_DATE_CHARS + 1];
    rt_http_date(d);
    assert_int_equal(strlen(d), RT_HTTP_DATE_CHARS);
    assert_memory_equal(d + 3, ", ", 2);
    assert_memory_equal(d + 25, " GMT", 4);
    /* the same second as time(), through gmtime */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char year[24];
    snprintf(year, sizeof(year), " %04d ", tm.tm_year + 1900);
    assert_non_null(strstr(d, year));
    static const char *const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    int known = 0;
    for (int i = 0; i < 7; i++)
        known |= memcmp(d, kDays[i], 3) == 0;
    assert_true(known);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap_is_hard),
        cmocka_unit_test(test_span_readers_advance_only_on_success),
        cmocka_unit_test(test_span_decimal_bounds),
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_log_redacts_secrets),
        cmocka_unit_test(test_b64_round_trip_and_strictness),
        cmocka_unit_test(test_secret_buf_grows_and_keeps_contents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
