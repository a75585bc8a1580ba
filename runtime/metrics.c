#include "runtime/metrics.h"

/* From 5 ms (a push on a quiet system) to 30 s (Exchange or APNs at its worst). */
static const double kBounds[RT_HISTOGRAM_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                                     0.5,   1.0,  2.5,   5.0,  10.0, 30.0};

void rt_histogram_observe(struct rt_histogram *h, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    for (int i = 0; i < RT_HISTOGRAM_BUCKETS; i++) {
        if (seconds <= kBounds[i])
            atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

int rt_histogram_render(const struct rt_histogram *h, const char *name, const char *help,
                        struct rt_buf *out)
{
    int rc = rt_buf_appendf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; rc == 0 && i < RT_HISTOGRAM_BUCKETS; i++)
        rc = rt_buf_appendf(
            out, "%s_bucket{le=\"%g\"} %llu\n", name, kBounds[i],
            (unsigned long long)atomic_load_explicit(&h->buckets[i], memory_order_relaxed));
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (rc == 0)
        rc = rt_buf_appendf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
                            (unsigned long long)count, name,
                            (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6,
                            name, (unsigned long long)count);
    return rc;
}
