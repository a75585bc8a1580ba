/* persistence/ without Redis: the device record codec, names, ids, URLs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "persistence/store_redis.h"
#include "persistence/store_user.h"
#include "runtime/buf.h"
#include "runtime/err.h"

static void sample(struct store_device *d)
{
    memset(d, 0, sizeof(*d));
    store_id_new(d->device_id);
    snprintf(d->client_id, sizeof(d->client_id), "3f2c\"quote\\slash");
    snprintf(d->platform, sizeof(d->platform), "android");
    memset(d->push_token, 'T', STORE_MAX_PUSH_TOKEN);
    snprintf(d->app_id, sizeof(d->app_id), "com.example.mail");
    snprintf(d->environment, sizeof(d->environment), "sandbox");
    memset(d->key_hash, '0', STORE_KEY_HASH_CHARS);
    snprintf(d->preview, sizeof(d->preview), "none");
    d->blocked = 1;
    d->created_at = 1764000000;
    d->last_push_at = 1764000123;
    snprintf(d->last_push_result, sizeof(d->last_push_result), "410 Unregistered");
}

static int decode_str(const char *json, struct store_device *d)
{
    return store_device_decode(span_cstr(json), d);
}

static void test_device_round_trip(void **state)
{
    struct store_device d, back;
    struct rt_buf b;
    sample(&d);
    rt_buf_init(&b, STORE_MAX_DEVICE_JSON);
    assert_int_equal(store_device_encode(&d, &b), 0);
    memset(&back, 0, sizeof(back));
    memcpy(back.device_id, d.device_id, sizeof(d.device_id));
    assert_int_equal(store_device_decode(rt_buf_span(&b), &back), 0);
    assert_memory_equal(&back, &d, sizeof(d));
    rt_buf_cleanup(&b);
}

static void test_device_rejects_bad_records(void **state)
{
    struct store_device d;
    const char *hash = "\"k\":\"0000000000000000000000000000000000000000000000000000000000000000\"";
    char ok[512], bad[512];
    snprintf(ok, sizeof(ok),
             "{\"c\":\"x\",\"p\":\"ios\",\"t\":\"ab\",\"e\":\"production\",%s,\"v\":\"full\"}",
             hash);
    assert_int_equal(decode_str(ok, &d), 0);
    assert_int_equal(d.badge, 0);
    assert_string_equal(d.app_id, "");

    assert_int_equal(decode_str("[]", &d), ENS_EPARSE);
    assert_int_equal(decode_str("", &d), ENS_EPARSE);
    assert_int_equal(decode_str("{\"c\":", &d), ENS_EPARSE);
    snprintf(bad, sizeof(bad),
             "{\"c\":\"x\",\"p\":\"windows\",\"t\":\"ab\",\"e\":\"production\",%s,\"v\":\"full\"}",
             hash);
    assert_int_equal(decode_str(bad, &d), ENS_EPARSE);
    /* missing push token */
    snprintf(bad, sizeof(bad), "{\"c\":\"x\",\"p\":\"ios\",\"e\":\"production\",%s,\"v\":\"full\"}",
             hash);
    assert_int_equal(decode_str(bad, &d), ENS_EPARSE);
    /* wrong types */
    snprintf(bad, sizeof(bad),
             "{\"c\":1,\"p\":\"ios\",\"t\":\"ab\",\"e\":\"production\",%s,\"v\":\"full\"}", hash);
    assert_int_equal(decode_str(bad, &d), ENS_EPARSE);
    snprintf(
        bad, sizeof(bad),
        "{\"c\":\"x\",\"p\":\"ios\",\"t\":\"ab\",\"e\":\"production\",%s,\"v\":\"full\",\"b\":1}",
        hash);
    assert_int_equal(decode_str(bad, &d), ENS_EPARSE);
    snprintf(bad, sizeof(bad),
             "{\"c\":\"x\",\"p\":\"ios\",\"t\":\"ab\",\"e\":\"production\",%s,\"v\":\"full\","
             "\"ct\":1.5}",
             hash);
    assert_int_equal(decode_str(bad, &d), ENS_EPARSE);
    snprintf(bad, sizeof(bad),
             "{\"c\":\"x\",\"p\":\"ios\",\"t\":\"ab\",\"e\":\"production\",%s,\"v\":\"full\","
             "\"ct\":1e300}",
             hash);
    assert_int_equal(decode_str(bad, &d), ENS_EPARSE);
    /* a key hash that is not 64 lower-case hex chars */
    assert_int_equal(decode_str("{\"c\":\"x\",\"p\":\"ios\",\"t\":\"ab\",\"e\":\"production\","
                                "\"k\":\"abc\",\"v\":\"full\"}",
                                &d),
                     ENS_EPARSE);
    /* an oversized field, and an oversized record */
    char big[STORE_MAX_DEVICE_JSON + 64];
    char tok[STORE_MAX_PUSH_TOKEN + 2];
    memset(tok, 'a', sizeof(tok) - 1);
    tok[sizeof(tok) - 1] = '\0';
    snprintf(big, sizeof(big),
             "{\"c\":\"x\",\"p\":\"ios\",\"t\":\"%s\",\"e\":\"production\",%s,\"v\":\"full\"}", tok,
             hash);
    assert_int_equal(decode_str(big, &d), ENS_ETOOBIG);
    memset(big, ' ', sizeof(big) - 1);
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(decode_str(big, &d), ENS_ETOOBIG);
    /* bytes after a NUL are not silently ignored */
    const char nul[] = "{\"c\":\"x\"}\0garbage";
    assert_int_not_equal(store_device_decode(span_make(nul, sizeof(nul) - 1), &d), 0);
}

static void test_encode_refuses_invalid_device(void **state)
{
    struct store_device d;
    struct rt_buf b;
    sample(&d);
    snprintf(d.platform, sizeof(d.platform), "web");
    rt_buf_init(&b, STORE_MAX_DEVICE_JSON);
    assert_int_equal(store_device_encode(&d, &b), ENS_EINVAL);
    rt_buf_cleanup(&b);
}

static void test_sub_state_names(void **state)
{
    const char *names[] = {"none", "subscribing", "active", "pending", "stale", "lost", "blocked"};
    for (int i = 0; i < STORE_SUB_STATE_COUNT; i++) {
        enum store_sub_state st;
        assert_string_equal(store_sub_state_name((enum store_sub_state)i), names[i]);
        assert_int_equal(store_sub_state_parse(span_cstr(names[i]), &st), 1);
        assert_int_equal(st, i);
    }
    enum store_sub_state st;
    assert_int_equal(store_sub_state_parse(span_cstr("Active"), &st), 0);
    assert_string_equal(store_sub_state_name((enum store_sub_state)99), "none");
}

static void test_ids(void **state)
{
    char a[STORE_ID_CHARS + 1], b[STORE_ID_CHARS + 1];
    store_id_new(a);
    store_id_new(b);
    assert_int_equal(strlen(a), STORE_ID_CHARS);
    assert_true(store_id_valid(a));
    assert_string_not_equal(a, b);
    assert_false(store_id_valid("short"));
    assert_false(store_id_valid("AAAAAAAAAAAAAAAAAAAAA}"));
    assert_false(store_id_valid("AAAAAAAAAAAAAAAAAAAAAAA"));
}

static void test_urls(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *bad[] = {"",
                         "http://x",
                         "redis://",
                         "redis://h:0",
                         "redis://h:70000",
                         "redis://h/x",
                         "redis://:pw@h",
                         "unix://relative.sock",
                         "unix:///s.sock?db=x",
                         "redis://[::1",
                         "redis://h:1/2/3"};
    char err[128];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_null(store_new(&loop, bad[i], err, sizeof(err)));
        assert_true(err[0] != '\0');
    }
    const char *good[] = {"redis://127.0.0.1", "redis://127.0.0.1:1/15", "redis://[::1]:1/0",
                          "unix:///nonexistent/redis.sock?db=2"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct store *s = store_new(&loop, good[i], err, sizeof(err));
        assert_non_null(s);
        assert_false(store_ready(s));
        const char *argv[] = {"PING"};
        assert_int_equal(store_cmdargv(s, 1, argv, NULL, UINT64_MAX, NULL, NULL), ENS_EINVAL);
        store_free(s);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_tx_limits(void **state)
{
    struct store_tx *tx = store_tx_new();
    const char *argv[] = {"PING"};
    for (int i = 0; i < STORE_TX_MAX_CMDS; i++)
        assert_int_equal(store_tx_add(tx, 1, argv, NULL), 0);
    assert_int_equal(store_tx_add(tx, 1, argv, NULL), ENS_ETOOBIG);
    assert_int_equal(store_tx_count(tx), STORE_TX_MAX_CMDS);
    store_tx_free(tx);
    struct store_args a;
    store_args_init(&a);
    for (int i = 0; i < STORE_ARGS_MAX + 1; i++)
        store_args_u64(&a, (uint64_t)i);
    tx = store_tx_new();
    assert_int_equal(store_tx_add_args(tx, &a), ENS_ETOOBIG);
    store_tx_free(tx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_round_trip),
        cmocka_unit_test(test_device_rejects_bad_records),
        cmocka_unit_test(test_encode_refuses_invalid_device),
        cmocka_unit_test(test_sub_state_names),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_tx_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
