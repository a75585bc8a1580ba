/* The mailbox memo cache: what outlives a passivated actor is found again,
 * stays within its capacity by dropping the least recently used, and is
 * wiped when it goes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "actors/memo.h"

static void key_of(uint32_t n, uint8_t key[ACT_MEMO_KEY_SIZE])
{
    /* spread like HMAC output: the cache hashes the leading bytes */
    uint64_t x = n * 0x9e3779b97f4a7c15ULL + 1;
    for (int i = 0; i < ACT_MEMO_KEY_SIZE; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ULL;
        key[i] = (uint8_t)(x >> 56);
    }
}

static struct act_memo memo_of(uint32_t n)
{
    struct act_memo m;
    memset(&m, 0, sizeof(m));
    m.has_token = 1;
    m.token.skid = n;
    memset(m.token.k, (int)(n & 0xff), sizeof(m.token.k));
    for (int i = 0; i < ACT_MEMO_RECENT; i++)
        m.recent[i] = (uint64_t)n * 100 + (uint64_t)i + 1;
    m.last_checkin_ms = n;
    return m;
}

static void test_take_returns_what_was_put_once(void **state)
{
    (void)state;
    struct act_memo_cache *c = act_memo_cache_new(1000);
    uint8_t k[ACT_MEMO_KEY_SIZE];
    struct act_memo out;
    key_of(7, k);
    assert_int_equal(act_memo_take(c, k, &out), 0);
    assert_int_equal(out.has_token, 0);
    struct act_memo in = memo_of(7);
    act_memo_put(c, k, &in);
    in.token.skid = 99; /* a copy was stored */
    assert_int_equal(act_memo_take(c, k, &out), 1);
    assert_int_equal(out.token.skid, 7);
    assert_int_equal(out.recent[ACT_MEMO_RECENT - 1], 7 * 100 + ACT_MEMO_RECENT);
    /* taken: the resident actor holds it now */
    assert_int_equal(act_memo_take(c, k, &out), 0);
    /* a second put of one key replaces, never duplicates */
    struct act_memo a = memo_of(1), b = memo_of(2);
    act_memo_put(c, k, &a);
    act_memo_put(c, k, &b);
    struct act_memo_stats st;
    act_memo_cache_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(act_memo_take(c, k, &out), 1);
    assert_int_equal(out.token.skid, 2);
    act_memo_cache_stats(c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    act_memo_cache_free(c);
}

/* 100,000 mailboxes through a cache of 10,000: it never holds more, it keeps
 * exactly the most recently used ones, and each entry comes back intact. */
static void test_capacity_and_lru(void **state)
{
    (void)state;
    enum { CAP = 10000, N = 100000 };
    struct act_memo_cache *c = act_memo_cache_new(CAP);
    uint8_t k[ACT_MEMO_KEY_SIZE];
    for (uint32_t n = 0; n < N; n++) {
        key_of(n, k);
        struct act_memo m = memo_of(n);
        act_memo_put(c, k, &m);
        if (n == CAP / 2) {
            /* touch an old one: taking and putting it back makes it recent */
            key_of(0, k);
            struct act_memo old;
            assert_int_equal(act_memo_take(c, k, &old), 1);
            act_memo_put(c, k, &old);
        }
    }
    struct act_memo_stats st;
    act_memo_cache_stats(c, &st);
    assert_int_equal(st.entries, CAP);
    assert_int_equal(st.evictions, N - CAP); /* N + 1 puts, one take */
    struct act_memo out;
    for (uint32_t n = N - CAP; n < N; n++) {
        key_of(n, k);
        assert_int_equal(act_memo_take(c, k, &out), 1);
        assert_int_equal(out.token.skid, n);
        assert_int_equal(out.last_checkin_ms, n);
        assert_int_equal(out.token.k[5], n & 0xff);
    }
    key_of(N - CAP - 1, k); /* the newest of the evicted */
    assert_int_equal(act_memo_take(c, k, &out), 0);
    key_of(0, k); /* touched at the middle, then evicted like the rest */
    assert_int_equal(act_memo_take(c, k, &out), 0);
    act_memo_cache_free(c);
}

static void test_tiny_capacity_is_raised(void **state)
{
    (void)state;
    struct act_memo_cache *c = act_memo_cache_new(0);
    struct act_memo_stats st;
    act_memo_cache_stats(c, &st);
    assert_int_equal(st.capacity, ACT_MEMO_MIN_CAP);
    uint8_t k[ACT_MEMO_KEY_SIZE];
    for (uint32_t n = 0; n < 3 * ACT_MEMO_MIN_CAP; n++) {
        key_of(n, k);
        struct act_memo m = memo_of(n);
        act_memo_put(c, k, &m);
    }
    act_memo_cache_stats(c, &st);
    assert_int_equal(st.entries, ACT_MEMO_MIN_CAP);
    act_memo_cache_free(c);
    act_memo_cache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_returns_what_was_put_once),
        cmocka_unit_test(test_capacity_and_lru),
        cmocka_unit_test(test_tiny_capacity_is_raised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
