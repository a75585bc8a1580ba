#include "runtime/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/err.h"

#define LOG_LINE_MAX 4096

/* Process-wide settings, written once before threads start. */
static _Atomic int g_level = RT_LOG_INFO;
static _Atomic int g_format = RT_LOG_JSON;

static const char *const kLevelNames[] = {"debug", "info", "warn", "error", "off"};

void rt_log_setup(enum rt_log_level level, enum rt_log_format format)
{
    atomic_store_explicit(&g_level, level, memory_order_relaxed);
    atomic_store_explicit(&g_format, format, memory_order_relaxed);
}

int rt_log_enabled(enum rt_log_level level)
{
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

/* Each rule names a marker; what follows it up to a delimiter is secret. */
struct redact_rule {
    const char *marker;
    const char *stop; /* characters that end the secret */
};

static const struct redact_rule kRedactRules[] = {
    {"/ews/", " ?\"'\\\t\r\n"},  {"Bearer ", " \"'\\\t\r\n,"}, {"bearer ", " \"'\\\t\r\n,"},
    {"Basic ", " \"'\\\t\r\n,"}, {"\"password\":\"", "\""},    {"\"accessToken\":\"", "\""},
    {"\"token\":\"", "\""},      {"password=", " &\"\t\r\n"},
};

void rt_log_redact(const char *in, char *out, size_t cap)
{
    static const char kMask[] = "<redacted>";
    size_t o = 0;
    if (cap == 0)
        return;
    while (*in && o + 1 < cap) {
        const struct redact_rule *hit = NULL;
        for (size_t r = 0; r < sizeof(kRedactRules) / sizeof(kRedactRules[0]); r++) {
            size_t n = strlen(kRedactRules[r].marker);
            if (strncmp(in, kRedactRules[r].marker, n) == 0) {
                hit = &kRedactRules[r];
                break;
            }
        }
        if (hit == NULL) {
            out[o++] = *in++;
            continue;
        }
        size_t n = strlen(hit->marker);
        for (size_t i = 0; i < n && o + 1 < cap; i++)
            out[o++] = *in++;
        if (*in == '\0' || strchr(hit->stop, *in) != NULL)
            continue; /* nothing follows the marker */
        while (*in && strchr(hit->stop, *in) == NULL)
            in++;
        for (size_t i = 0; kMask[i] && o + 1 < cap; i++)
            out[o++] = kMask[i];
    }
    out[o] = '\0';
}

static size_t json_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; *in && o + 7 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

void rt_log(enum rt_log_level level, const char *event, const char *fmt, ...)
{
    if (!rt_log_enabled(level))
        return;
    char msg[LOG_LINE_MAX], clean[LOG_LINE_MAX], esc[LOG_LINE_MAX], line[LOG_LINE_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rt_log_redact(msg, clean, sizeof(clean));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000));
    int n;
    if (atomic_load_explicit(&g_format, memory_order_relaxed) == RT_LOG_JSON) {
        json_escape(clean, esc, sizeof(esc));
        n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"%s\"}\n", when,
                     kLevelNames[level], event, esc);
    } else {
        n = snprintf(line, sizeof(line), "%s %-5s %s %s\n", when, kLevelNames[level], event, clean);
    }
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (line[len - 1] != '\n')
        line[len - 1] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failed log write */
}
