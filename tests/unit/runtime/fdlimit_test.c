/* Tests for runtime/fdlimit.c: the cap formula at the limits operators meet,
 * and the soft limit really raised to the hard one in this process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "runtime/limits.h"
#include "runtime/fdlimit.h"
#include "runtime/net.h"

static void test_conn_cap_formula(void **state)
{
    /* systemd's default with two schedulers: (1024 - 64 - 2*16) * 75% / 2 */
    assert_int_equal(rt_fdlimit_conn_cap(1024, 2), 348);
    assert_int_equal(rt_fdlimit_conn_cap(1024, 1), 708);
    assert_int_equal(rt_fdlimit_conn_cap(65536, 4),
                     12240 < RT_FD_MAX_CONNS ? 12240 : RT_FD_MAX_CONNS);
    /* Every scheduler's share plus the reserves fit in the limit. */
    for (uint64_t soft = 256; soft <= 40000; soft += 997)
        for (int n = 1; n <= 8; n++) {
            unsigned cap = rt_fdlimit_conn_cap(soft, n);
            if (cap > RT_FD_MIN_CONNS)
                assert_true((uint64_t)cap * n + RT_FD_RESERVE_BASE + n * RT_FD_RESERVE_PER_SCHED <
                            soft);
        }
    /* Absurd inputs stay in bounds. */
    assert_int_equal(rt_fdlimit_conn_cap(0, 2), RT_FD_MIN_CONNS);
    assert_int_equal(rt_fdlimit_conn_cap(100, 64), RT_FD_MIN_CONNS);
    assert_int_equal(rt_fdlimit_conn_cap(UINT64_MAX, 1), RT_FD_MAX_CONNS);
    assert_int_equal(rt_fdlimit_conn_cap(1024, 0), rt_fdlimit_conn_cap(1024, 1));
    assert_int_equal(rt_fdlimit_conn_cap(1024, -3), rt_fdlimit_conn_cap(1024, 1));
}

static void test_setup_raises_soft_to_hard(void **state)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max <= 512)
        skip(); /* nothing to raise */
    uint64_t hard = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
    uint64_t want = hard < RT_FD_SOFT_MAX ? hard : RT_FD_SOFT_MAX;
    struct rlimit low = {256, rl.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    struct rt_fdlimit f;
    assert_int_equal(rt_fdlimit_setup(2, &f), 0);
    assert_int_equal(f.soft_was, 256);
    assert_int_equal(f.soft, want);
    assert_int_equal(f.hard, hard);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_int_equal(rl.rlim_cur, want);
    assert_int_equal(f.conn_cap, rt_fdlimit_conn_cap(want, 2));
    assert_int_equal(rt_listen_conn_cap(), f.conn_cap);
    /* Already raised: a second call changes nothing. */
    assert_int_equal(rt_fdlimit_setup(2, &f), 0);
    assert_int_equal(f.soft_was, want);
    assert_int_equal(f.soft, want);
    rt_listen_set_conn_cap(0);
    assert_int_equal(rt_listen_conn_cap(), RT_FD_MAX_CONNS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conn_cap_formula),
        cmocka_unit_test(test_setup_raises_soft_to_hard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
