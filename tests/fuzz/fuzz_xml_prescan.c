/* libFuzzer target: the XML pre-scan and libxml2 behind it, as every SOAP body
 * from the network meets them. Besides memory errors it fails on time: the
 * pre-scan exists to keep libxml2's cost linear, so an input whose scan and
 * parse take longer than a linear budget is a finding. The budget is checked
 * twice before it aborts, so one scheduling hiccup on a busy machine is not. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "protocols/soap_xml.h"
#include "protocols/xml_prescan.h"

/* Generous for an instrumented build: libxml2 parses at tens of MB/s there;
 * the 80,000-attribute body took it 10 s, far past any budget here. */
#define BUDGET_FIXED_NS    (20 * 1000 * 1000)
#define BUDGET_PER_BYTE_NS 2000

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long run(const uint8_t *data, size_t size)
{
    long long t0 = now_ns();
    struct span in = span_make(data, size);
    (void)xml_prescan_name(xml_prescan(in));
    xmlDoc *doc = NULL;
    if (soap_xml_parse(in, &doc) == 0)
        soap_xml_free(doc);
    return now_ns() - t0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready)
        ready = soap_init() == 0;
    long long budget = BUDGET_FIXED_NS + (long long)size * BUDGET_PER_BYTE_NS;
    if (run(data, size) > budget && run(data, size) > budget) {
        fprintf(stderr, "xml_prescan: %zu bytes took over %lld ns twice\n", size, budget);
        abort();
    }
    return 0;
}
