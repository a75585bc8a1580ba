/* Token buckets: what a client is allowed, how long it is told to wait, and
 * that strangers flooding the table cannot reset a limited key cheaply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/ratelimit.h"

static struct span key(const char *s)
{
    return span_cstr(s);
}

static void test_burst_then_rate(void **state)
{
    (void)state;
    struct rt_ratelimit *rl = rt_ratelimit_new(1024, 60, 5); /* 1 per second, 5 at once */
    uint64_t t = 1000000;
    for (int i = 0; i < 5; i++)
        assert_int_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t), 0);
    /* the sixth waits exactly one refill period */
    assert_int_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t), 1000);
    /* a refusal spends nothing: half a second later half remains to wait */
    assert_int_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t + 500), 500);
    assert_int_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t + 1000), 0);
    assert_int_not_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t + 1000), 0);
    /* other keys are not affected */
    assert_int_equal(rt_ratelimit_take(rl, key("10.0.0.2"), t + 1000), 0);
    /* idle refills up to the burst, never beyond */
    for (int i = 0; i < 5; i++)
        assert_int_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t + 3600 * 1000), 0);
    assert_int_not_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t + 3600 * 1000), 0);
    /* a clock a little behind another loop's does not refill or underflow */
    assert_int_not_equal(rt_ratelimit_take(rl, key("10.0.0.1"), t + 3600 * 1000 - 5), 0);
    rt_ratelimit_free(rl);
}

static void test_slow_rates_and_disabled(void **state)
{
    (void)state;
    /* 6 a minute: the wait is ten seconds, not rounded to a minute */
    struct rt_ratelimit *rl = rt_ratelimit_new(1024, 6, 1);
    assert_int_equal(rt_ratelimit_take(rl, key("m"), 50), 0);
    assert_int_equal(rt_ratelimit_take(rl, key("m"), 50), 10000);
    rt_ratelimit_free(rl);
    /* 0 disables; NULL allows; bad sizes are refused */
    rl = rt_ratelimit_new(1024, 0, 10);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rt_ratelimit_take(rl, key("x"), 1), 0);
    rt_ratelimit_free(rl);
    assert_int_equal(rt_ratelimit_take(NULL, key("x"), 1), 0);
    assert_null(rt_ratelimit_new(RT_RATELIMIT_MIN_SLOTS - 1, 1, 1));
    assert_null(rt_ratelimit_new((size_t)RT_RATELIMIT_MAX_SLOTS + 1, 1, 1));
}

/* The abuse: a key under limit while many other keys arrive. Keys that come
 * once and are refilled are evicted before a bucket that is still limiting. */
static void test_flood_does_not_reset_a_limited_key(void **state)
{
    (void)state;
    struct rt_ratelimit *rl = rt_ratelimit_new(4096, 1, 3);
    uint64_t t = 10;
    for (int i = 0; i < 3; i++)
        assert_int_equal(rt_ratelimit_take(rl, key("victim@contoso.com"), t), 0);
    assert_int_not_equal(rt_ratelimit_take(rl, key("victim@contoso.com"), t), 0);
    /* 100,000 one-off keys over 100 ms, 25 times the table: each uses one of
     * its three requests, so none is full again and each set must evict; the
     * bucket with the most left goes first, and the limited one has none. */
    char k[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(k, sizeof(k), "stranger-%d", i);
        rt_ratelimit_take(rl, key(k), t + (uint64_t)i / 1000);
        if (i % 1000 == 0)
            assert_int_not_equal(rt_ratelimit_take(rl, key("victim@contoso.com"), t + i / 1000), 0);
    }
    assert_int_not_equal(rt_ratelimit_take(rl, key("victim@contoso.com"), t + 100), 0);
    rt_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_slow_rates_and_disabled),
        cmocka_unit_test(test_flood_does_not_reset_a_limited_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
