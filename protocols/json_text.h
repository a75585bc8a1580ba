/* JSON string values with a byte budget, for push payloads whose total size
 * is capped (APNs and FCM: 4,096 bytes).
 *
 * Text is escaped as JSON needs, invalid UTF-8 bytes become U+FFFD, control
 * characters are escaped (CR, LF and TAB become spaces: a notification line
 * has no use for them), and text that does not fit is cut on a code-point
 * boundary with "…" added within the budget. */
#ifndef ENS_PROTOCOLS_JSON_TEXT_H
#define ENS_PROTOCOLS_JSON_TEXT_H

#include <stddef.h>

#include "runtime/buf.h"

/* json_text_append appends |s| (NUL-terminated, any bytes) as the inside of a
 * JSON string using at most |budget| bytes. 0, or ENS_ETOOBIG when not even the
 * ellipsis fits or |out| is full (then nothing of |s| was appended). */
int json_text_append(struct rt_buf *out, const char *s, size_t budget);

/* json_str_append is json_text_append between double quotes (the quotes are
 * not counted in |budget|). */
int json_str_append(struct rt_buf *out, const char *s, size_t budget);

#endif
