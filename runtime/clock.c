/* See clock.h. The offset is runtime/'s one piece of clock state. */
#include "runtime/clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int64_t g_offset_ms;

int64_t rt_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
           atomic_load_explicit(&g_offset_ms, memory_order_relaxed);
}

void rt_http_date(char out[RT_HTTP_DATE_CHARS + 1])
{
    /* One formatting per second and thread: responses are many, seconds few. */
    static _Thread_local time_t cached_at = -1;
    static _Thread_local char cached[RT_HTTP_DATE_CHARS + 1];
    static const char kDays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char kMonths[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        char tmp[64]; /* roomy: the compiler cannot bound the year */
        snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7],
                 tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        memcpy(cached, tmp, RT_HTTP_DATE_CHARS);
        cached[RT_HTTP_DATE_CHARS] = '\0';
        cached_at = now;
    }
    memcpy(out, cached, RT_HTTP_DATE_CHARS + 1);
}

void rt_clock_advance(int64_t ms)
{
    if (ms > 0)
        atomic_fetch_add_explicit(&g_offset_ms, ms, memory_order_relaxed);
}
