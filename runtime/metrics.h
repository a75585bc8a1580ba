/* Prometheus-style histograms, safe to observe from any thread.
 *
 * The buckets are fixed at compile time (seconds), so an observation is one
 * relaxed atomic add per bucket boundary crossed and no lock. Rendering reads
 * the counters without stopping writers: a scrape may see an observation in
 * _count but not yet in _sum, which Prometheus tolerates. */
#ifndef ENS_RUNTIME_METRICS_H
#define ENS_RUNTIME_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "runtime/buf.h"

#define RT_HISTOGRAM_BUCKETS 12

struct rt_histogram {
    _Atomic uint64_t buckets[RT_HISTOGRAM_BUCKETS]; /* observations <= kBounds[i] */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us; /* microseconds, so the sum stays an integer */
};

/* rt_histogram_observe records one duration in seconds. Any thread. */
void rt_histogram_observe(struct rt_histogram *h, double seconds);

/* rt_histogram_render appends the histogram in Prometheus text format with
 * the given metric name and help text. 0 or ENS_ETOOBIG. */
int rt_histogram_render(const struct rt_histogram *h, const char *name, const char *help,
                        struct rt_buf *out);

#endif
