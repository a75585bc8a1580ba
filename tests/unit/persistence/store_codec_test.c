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

static void test_device_round_trip(void **state)
{
    struct store_device d, back;
    struct rt_buf b, again;
    sample(&d);
    rt_buf_init(&b, STORE_MAX_DEVICE_RECORD);
    assert_int_equal(store_device_encode(&d, &b), 0);
    memset(&back, 0, sizeof(back));
    memcpy(back.device_id, d.device_id, sizeof(d.device_id));
    assert_int_equal(store_device_decode(rt_buf_span(&b), &back), 0);
    assert_memory_equal(&back, &d, sizeof(d));
    /* one encoding only: encoding what was decoded gives the same bytes */
    rt_buf_init(&again, STORE_MAX_DEVICE_RECORD);
    assert_int_equal(store_device_encode(&back, &again), 0);
    assert_int_equal(again.len, b.len);
    assert_memory_equal(again.data, b.data, b.len);
    rt_buf_cleanup(&again);
    rt_buf_cleanup(&b);
}

/* An iOS device: hex token and key hash are packed to half their size, and
 * fields at their default (ios, production, full, zero times) are left out. */
static void test_device_is_compact(void **state)
{
    struct store_device d, back;
    struct rt_buf b;
    memset(&d, 0, sizeof(d));
    snprintf(d.client_id, sizeof(d.client_id), "bench-device-0000");
    snprintf(d.platform, sizeof(d.platform), "ios");
    for (int i = 0; i < 64; i++)
        d.push_token[i] = "0123456789abcdef"[i % 16];
    snprintf(d.app_id, sizeof(d.app_id), "com.example.mail");
    snprintf(d.environment, sizeof(d.environment), "production");
    memset(d.key_hash, 'f', STORE_KEY_HASH_CHARS);
    snprintf(d.preview, sizeof(d.preview), "full");
    d.badge = 1;
    d.created_at = 1764000000;
    rt_buf_init(&b, STORE_MAX_DEVICE_RECORD);
    assert_int_equal(store_device_encode(&d, &b), 0);
    /* tag, header, bytes: client 1+1+17, token 1+2+32, app 1+1+16, key hash
     * 1+2+32, badge 1+1, created 1+5 */
    assert_int_equal(b.len, 19 + 35 + 18 + 35 + 2 + 6);
    memset(&back, 0, sizeof(back));
    assert_int_equal(store_device_decode(rt_buf_span(&b), &back), 0);
    assert_memory_equal(&back, &d, sizeof(d));
    rt_buf_cleanup(&b);
}

/* A minimal valid device: client "x", token "t", a zero key hash. */
static size_t minimal(uint8_t *out)
{
    size_t n = 0;
    out[n++] = 1;      /* client_id */
    out[n++] = 1 << 2; /* text, 1 byte */
    out[n++] = 'x';
    out[n++] = 3; /* push_token */
    out[n++] = 1 << 2;
    out[n++] = 't';
    out[n++] = 6;    /* key_hash */
    out[n++] = 0x81; /* varint 129: hex (1), 32 bytes */
    out[n++] = 0x01;
    memset(out + n, 0, 32);
    return n + 32;
}

static int decode_bytes(const uint8_t *p, size_t n)
{
    struct store_device d;
    memset(&d, 0, sizeof(d));
    return store_device_decode(span_make(p, n), &d);
}

/* |m| plus |extra| bytes appended. */
static int decode_plus(const void *extra, size_t n)
{
    uint8_t buf[256];
    size_t m = minimal(buf);
    memcpy(buf + m, extra, n);
    return decode_bytes(buf, m + n);
}

static void test_device_rejects_bad_records(void **state)
{
    uint8_t buf[STORE_MAX_DEVICE_RECORD + 64];
    size_t m = minimal(buf);
    struct store_device d;
    memset(&d, 0, sizeof(d));
    assert_int_equal(store_device_decode(span_make(buf, m), &d), 0);
    assert_string_equal(d.platform, "ios");
    assert_string_equal(d.environment, "production");
    assert_string_equal(d.preview, "full");
    assert_string_equal(d.app_id, "");
    assert_int_equal(d.badge, 0);
    assert_string_equal(d.key_hash,
                        "0000000000000000000000000000000000000000000000000000000000000000");

    /* empty, truncated, and missing required fields */
    assert_int_equal(decode_bytes(buf, 0), ENS_EPARSE);
    for (size_t i = 1; i < m; i++)
        assert_int_equal(decode_bytes(buf, i), ENS_EPARSE);
    assert_int_equal(decode_bytes(buf + 3, m - 3), ENS_EPARSE);
    /* a tag again, a tag out of order, an unknown tag, trailing bytes */
    const uint8_t again[] = {6, 32 << 1 | 1};
    assert_int_equal(decode_plus(again, 2), ENS_EPARSE);
    const uint8_t order[] = {2, 1};
    uint8_t swapped[64];
    memcpy(swapped, order, 2);
    memcpy(swapped + 2, buf, m);
    assert_int_equal(decode_bytes(swapped, m + 2), ENS_EPARSE);
    const uint8_t unknown[] = {14, 1}, trailing[] = {0};
    assert_int_equal(decode_plus(unknown, 2), ENS_EPARSE);
    /* the proving fingerprint: tag 13, 16 bits at most */
    const uint8_t fp[] = {13, 0xff, 0xff, 0x03}, fp_big[] = {13, 0x80, 0x80, 0x04};
    assert_int_equal(decode_plus(fp, 4), 0);
    assert_int_equal(decode_plus(fp_big, 4), ENS_EPARSE);
    assert_int_equal(decode_plus(trailing, 1), ENS_EPARSE);
    /* defaults written out, values out of range */
    const uint8_t badge0[] = {8, 0}, badge2[] = {8, 2}, badge1[] = {8, 1};
    assert_int_equal(decode_plus(badge0, 2), ENS_EPARSE);
    assert_int_equal(decode_plus(badge2, 2), ENS_EPARSE);
    assert_int_equal(decode_plus(badge1, 2), 0);
    const uint8_t preview3[] = {7, 3}, preview2[] = {7, 2};
    assert_int_equal(decode_plus(preview3, 2), ENS_EPARSE);
    assert_int_equal(decode_plus(preview2, 2), 0);
    const uint8_t empty_result[] = {12, 0};
    assert_int_equal(decode_plus(empty_result, 2), ENS_EPARSE);
    /* numbers: not minimal, past 64 bits; a negative one is fine */
    const uint8_t long_zero[] = {10, 0x82, 0x00}, neg[] = {10, 0x01};
    assert_int_equal(decode_plus(long_zero, 3), ENS_EPARSE);
    assert_int_equal(decode_plus(neg, 2), 0);
    const uint8_t huge[] = {11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    assert_int_equal(decode_plus(huge, sizeof(huge)), ENS_EPARSE);
    const uint8_t max[] = {11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(decode_plus(max, sizeof(max)), 0);
    /* strings: hex or base64 stored as text, a NUL inside, longer than the field */
    const uint8_t hex_text[] = {12, 2 << 2, 'a', 'b'}, nul[] = {12, 2 << 2, 'a', 0};
    const uint8_t b64_text[] = {12, 4 << 2, 'Q', 'U', 'J', 'D'};
    const uint8_t text[] = {12, 8 << 2, '4', '1', '0', ' ', 'G', 'o', 'n', 'e'};
    const uint8_t b64url_text[] = {12, 3 << 2, '4', '1', '0'}; /* is 2 bytes' base64url */
    assert_int_equal(decode_plus(hex_text, sizeof(hex_text)), ENS_EPARSE);
    assert_int_equal(decode_plus(b64_text, sizeof(b64_text)), ENS_EPARSE);
    assert_int_equal(decode_plus(b64url_text, sizeof(b64url_text)), ENS_EPARSE);
    assert_int_equal(decode_plus(nul, sizeof(nul)), ENS_EPARSE);
    assert_int_equal(decode_plus(text, sizeof(text)), 0);
    /* the same strings stored as their bytes are fine */
    const uint8_t hex_packed[] = {12, 1 << 2 | 1, 0xab},
                  b64url_packed[] = {12, 2 << 2 | 3, 0xe3, 0x5d};
    assert_int_equal(decode_plus(hex_packed, sizeof(hex_packed)), 0);
    assert_int_equal(decode_plus(b64url_packed, sizeof(b64url_packed)), 0);
    uint8_t longr[3 + STORE_MAX_PUSH_RESULT + 1];
    longr[0] = 12;
    longr[1] = 0x84; /* varint 132: text, 33 bytes */
    longr[2] = 0x01;
    memset(longr + 3, '.', STORE_MAX_PUSH_RESULT + 1);
    assert_int_equal(decode_plus(longr, sizeof(longr)), ENS_EPARSE);
    longr[1] = 0x80; /* 128: text, 32 bytes */
    assert_int_equal(decode_plus(longr, sizeof(longr) - 1), 0);
    /* a key hash of the wrong length does not validate */
    uint8_t short_hash[64];
    memcpy(short_hash, buf, 7);
    short_hash[7] = 31 << 2 | 1;
    memset(short_hash + 8, 0, 31);
    assert_int_equal(decode_bytes(short_hash, 8 + 31), ENS_EPARSE);
    /* an oversized record */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(decode_bytes(buf, STORE_MAX_DEVICE_RECORD + 1), ENS_ETOOBIG);
}

static void test_encode_refuses_invalid_device(void **state)
{
    struct store_device d;
    struct rt_buf b;
    sample(&d);
    snprintf(d.platform, sizeof(d.platform), "web");
    rt_buf_init(&b, STORE_MAX_DEVICE_RECORD);
    assert_int_equal(store_device_encode(&d, &b), ENS_EINVAL);
    sample(&d);
    d.badge = 2;
    assert_int_equal(store_device_encode(&d, &b), ENS_EINVAL);
    assert_int_equal(b.len, 0);
    rt_buf_cleanup(&b);
}

static struct store_user *full_user(void)
{
    struct store_user *u = store_user_new();
    store_id_new(u->user_id);
    store_id_new(u->tenant_id);
    snprintf(u->email, sizeof(u->email), "Alice@Contoso.com");
    snprintf(u->ews_url, sizeof(u->ews_url), "https://mail.contoso.com/EWS/Exchange.asmx");
    snprintf(u->auth_type, sizeof(u->auth_type), "oauth");
    u->cred_fp = 0xbeef;
    u->badge = -3;
    u->created_at = 1764000000;
    u->updated_at = 1764000100;
    memset(u->sub.id, 'S', STORE_MAX_SUB_ID);
    u->sub.state = STORE_SUB_BLOCKED;
    memset(u->sub.watermark, 'W', STORE_MAX_WATERMARK);
    snprintf(u->sub.cred_id, sizeof(u->sub.cred_id), "0123456789abcdef");
    u->sub.sealing_kid = UINT32_MAX;
    u->sub.status_frequency_min = 5;
    u->sub.last_status_at = INT64_MIN;
    u->sub.created_at = INT64_MAX;
    u->counters.callbacks = UINT64_MAX;
    u->counters.notifications = 1;
    u->counters.pushes_ok = 2;
    u->counters.pushes_failed = 3;
    for (int i = 0; i < STORE_MAX_DEVICES; i++) {
        struct store_device *d = store_user_add_device(u);
        sample(d);
    }
    return u;
}

static void test_mailbox_round_trip(void **state)
{
    struct store_user *u = full_user(), *got = NULL;
    struct rt_buf b, again;
    rt_buf_init(&b, STORE_MAX_MAILBOX_RECORD);
    assert_int_equal(store_user_encode(u, &b), 0);
    assert_int_equal(store_user_decode(rt_buf_span(&b), u->user_id, &got), 0);
    assert_non_null(got);
    assert_int_equal(got->n_devices, u->n_devices);
    assert_memory_equal(got->devices, u->devices, u->n_devices * sizeof(*u->devices));
    struct store_device *keep_dev = got->devices, *keep_u = u->devices;
    got->devices = u->devices = NULL;
    assert_memory_equal(got, u, sizeof(*u));
    got->devices = keep_dev;
    u->devices = keep_u;
    rt_buf_init(&again, STORE_MAX_MAILBOX_RECORD);
    assert_int_equal(store_user_encode(got, &again), 0);
    assert_int_equal(again.len, b.len);
    assert_memory_equal(again.data, b.data, b.len);

    /* a device more than allowed, a wrong version, bad scalars: refused */
    struct store_user *bad = NULL;
    uint8_t *p = b.data;
    p[0] = 2;
    assert_int_equal(store_user_decode(rt_buf_span(&b), u->user_id, &bad), ENS_EPARSE);
    assert_null(bad);
    p[0] = 1;
    assert_int_equal(store_user_decode(span_make(b.data, b.len - 1), u->user_id, &bad), ENS_EPARSE);
    assert_int_equal(store_user_decode(span_make(b.data, 1), u->user_id, &bad), ENS_EPARSE);
    assert_int_equal(store_user_decode(rt_buf_span(&b), "bad}", &bad), ENS_EINVAL);
    rt_buf_cleanup(&again);
    rt_buf_cleanup(&b);
    store_user_free(got);

    /* two devices with one id do not encode */
    memcpy(u->devices[1].device_id, u->devices[0].device_id, sizeof(u->devices[0].device_id));
    rt_buf_init(&b, STORE_MAX_MAILBOX_RECORD);
    assert_int_equal(store_user_encode(u, &b), ENS_EINVAL);
    rt_buf_cleanup(&b);
    store_user_free(u);
}

/* A device whose body does not decode is skipped, the rest of the mailbox is kept. */
static void test_mailbox_skips_bad_device(void **state)
{
    struct store_user *u = store_user_new(), *got = NULL;
    store_id_new(u->user_id);
    store_id_new(u->tenant_id);
    snprintf(u->email, sizeof(u->email), "a@b");
    sample(store_user_add_device(u));
    sample(store_user_add_device(u));
    struct rt_buf b;
    rt_buf_init(&b, STORE_MAX_MAILBOX_RECORD);
    assert_int_equal(store_user_encode(u, &b), 0);
    /* the first device's body starts with client_id (tag 1): make it tag 0,
     * which no table knows */
    struct rt_buf body;
    rt_buf_init(&body, STORE_MAX_DEVICE_RECORD);
    assert_int_equal(store_device_encode(&u->devices[0], &body), 0);
    uint8_t *p = b.data;
    size_t at = 0;
    for (size_t i = 0; at == 0 && i + body.len <= b.len; i++)
        if (memcmp(p + i, body.data, body.len) == 0)
            at = i;
    rt_buf_cleanup(&body);
    assert_true(at > 0);
    assert_int_equal(p[at], 1);
    p[at] = 0;
    assert_int_equal(store_user_decode(rt_buf_span(&b), u->user_id, &got), 0);
    assert_int_equal(got->n_devices, 1);
    assert_string_equal(got->devices[0].device_id, u->devices[1].device_id);
    store_user_free(got);
    rt_buf_cleanup(&b);
    store_user_free(u);
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
        cmocka_unit_test(test_device_is_compact),
        cmocka_unit_test(test_device_rejects_bad_records),
        cmocka_unit_test(test_encode_refuses_invalid_device),
        cmocka_unit_test(test_mailbox_round_trip),
        cmocka_unit_test(test_mailbox_skips_bad_device),
        cmocka_unit_test(test_sub_state_names),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_tx_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
