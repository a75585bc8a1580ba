/* The wall clock of mailbox deadlines (the health index, status times).
 *
 * rt_wall_ms is CLOCK_REALTIME in milliseconds plus an offset that is zero in
 * every production binary. Test binaries (ensd_test, built with the tests)
 * move the offset forward with rt_clock_advance, so that a subscription's
 * "2 x StatusFrequency without a status event" passes in a test in
 * milliseconds rather than minutes, through the same code paths. Any thread. */
#ifndef ENS_RUNTIME_CLOCK_H
#define ENS_RUNTIME_CLOCK_H

#include <stdint.h>

/* rt_wall_ms returns UNIX time in milliseconds (plus the test offset). */
int64_t rt_wall_ms(void);

#define RT_HTTP_DATE_CHARS 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* rt_http_date writes the current time as an HTTP date (RFC 9110 5.6.7,
 * IMF-fixdate) and a NUL into |out|. Formatted at most once a second per
 * thread; any thread. Real time: the test offset does not apply. */
void rt_http_date(char out[RT_HTTP_DATE_CHARS + 1]);

/* rt_clock_advance moves the clock forward by |ms| (>= 0) for every thread.
 * For tests only: nothing in the server calls it. */
void rt_clock_advance(int64_t ms);

#endif
