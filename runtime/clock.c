/* See clock.h. The offset is runtime/'s one piece of clock state. */
#include "runtime/clock.h"

#include <stdatomic.h>
#include <time.h>

static _Atomic int64_t g_offset_ms;

int64_t rt_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
           atomic_load_explicit(&g_offset_ms, memory_order_relaxed);
}

void rt_clock_advance(int64_t ms)
{
    if (ms > 0)
        atomic_fetch_add_explicit(&g_offset_ms, ms, memory_order_relaxed);
}
