/* Structured logging, JSON or text, one line per record, to stderr.
 *
 * Secrets never reach this module by design: credentials travel in wiped
 * buffers and are never formatted. As a second line of defence the sink itself
 * redacts what looks like a callback token (".../ews/<token>"), an
 * Authorization value ("Bearer x", "Basic x") and "password"/"token" JSON
 * members before the line is written. Thread-safe: each record is one write(2). */
#ifndef ENS_RUNTIME_LOG_H
#define ENS_RUNTIME_LOG_H

#include <stddef.h>

enum rt_log_level { RT_LOG_DEBUG = 0, RT_LOG_INFO, RT_LOG_WARN, RT_LOG_ERROR, RT_LOG_OFF };
enum rt_log_format { RT_LOG_JSON = 0, RT_LOG_TEXT };

/* rt_log_setup sets the level and format; call before starting threads. */
void rt_log_setup(enum rt_log_level level, enum rt_log_format format);

int rt_log_enabled(enum rt_log_level level);

/* rt_log writes one record: |event| is a short fixed identifier ("ews.callback"),
 * |fmt| a printf message of key=value pairs. */
void rt_log(enum rt_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* rt_log_redact copies |in| to |out| (capacity |cap|, NUL-terminated, truncated if
 * needed) with every secret-looking part replaced by "<redacted>". Exposed so
 * that tests and access logs use the exact same rules. */
void rt_log_redact(const char *in, char *out, size_t cap);

#define RT_LOG_D(ev, ...) rt_log(RT_LOG_DEBUG, ev, __VA_ARGS__)
#define RT_LOG_I(ev, ...) rt_log(RT_LOG_INFO, ev, __VA_ARGS__)
#define RT_LOG_W(ev, ...) rt_log(RT_LOG_WARN, ev, __VA_ARGS__)
#define RT_LOG_E(ev, ...) rt_log(RT_LOG_ERROR, ev, __VA_ARGS__)

#endif
