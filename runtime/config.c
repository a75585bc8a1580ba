/* Configuration loading: defaults, then the JSON file, then ENS_* variables.
 *
 * Every key is one row of kKeys. Defaults are written as text and go through the
 * same validation as an environment value, so a default can never be a value a
 * user would be refused. */
#include "runtime/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "runtime/limits.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/file.h"
#include "runtime/span.h"

enum cfg_type { CFG_STRING, CFG_PATH, CFG_HOSTPORT, CFG_URL, CFG_INT, CFG_BOOL, CFG_ENUM };

enum {
    CFG_SECRET = 1u << 0,       /* never rendered: not in errors, not in dumps */
    CFG_ENV_ONLY = 1u << 1,     /* secrets do not belong in a file that gets copied around */
    CFG_DEFAULT_NCPU = 1u << 2, /* default is the number of online cores */
};

struct cfg_row {
    const char *section;
    const char *key;
    enum cfg_type type;
    const char *dflt; /* as a user would write it in the environment; NULL: unset */
    int64_t min, max; /* CFG_INT */
    /* CFG_ENUM: the names, index = stored value; CFG_URL: the accepted schemes. */
    const char *const *choices;
    size_t offset;
    unsigned flags;
    /* An extra rule for one key; returns NULL or what was expected. */
    const char *(*check)(const char *value);
};

static const char *const kHttpSchemes[] = {"http", "https", NULL};
static const char *const kRedisSchemes[] = {"redis", "rediss", "unix", NULL};
static const char *const kLogLevels[] = {"debug", "info", "warn", "error", NULL};
static const char *const kLogFormats[] = {"json", "text", NULL};

/* kLogLevels and kLogFormats are indexed by the enum values they are stored as. */
_Static_assert(RT_LOG_DEBUG == 0 && RT_LOG_INFO == 1 && RT_LOG_WARN == 2 && RT_LOG_ERROR == 3,
               "kLogLevels order");
_Static_assert(RT_LOG_JSON == 0 && RT_LOG_TEXT == 1, "kLogFormats order");
_Static_assert(sizeof(enum rt_log_level) == sizeof(int) &&
                   sizeof(enum rt_log_format) == sizeof(int),
               "enums are stored as int");

static const char *check_base_path(const char *v);
static const char *check_base64(const char *v);

#define OFF(member) offsetof(struct ens_config, member)
#define STR(sec, key, dflt, member)                                                                \
    {                                                                                              \
        sec, key, CFG_STRING, dflt, 0, 0, NULL, OFF(member), 0, NULL                               \
    }
#define PATH(sec, key, dflt, member)                                                               \
    {                                                                                              \
        sec, key, CFG_PATH, dflt, 0, 0, NULL, OFF(member), 0, NULL                                 \
    }
#define HOSTPORT(sec, key, dflt, member)                                                           \
    {                                                                                              \
        sec, key, CFG_HOSTPORT, dflt, 0, 0, NULL, OFF(member), 0, NULL                             \
    }
#define URL(sec, key, dflt, schemes, member)                                                       \
    {                                                                                              \
        sec, key, CFG_URL, dflt, 0, 0, schemes, OFF(member), 0, NULL                               \
    }
#define INT(sec, key, dflt, lo, hi, member)                                                        \
    {                                                                                              \
        sec, key, CFG_INT, dflt, lo, hi, NULL, OFF(member), 0, NULL                                \
    }
#define BOOL(sec, key, dflt, member)                                                               \
    {                                                                                              \
        sec, key, CFG_BOOL, dflt, 0, 0, NULL, OFF(member), 0, NULL                                 \
    }
#define ENUM(sec, key, dflt, names, member)                                                        \
    {                                                                                              \
        sec, key, CFG_ENUM, dflt, 0, 0, names, OFF(member), 0, NULL                                \
    }

static const struct cfg_row kKeys[] = {
    HOSTPORT("listen", "public", "0.0.0.0:8443", listen.public_addr),
    HOSTPORT("listen", "admin", "127.0.0.1:9090", listen.admin),
    PATH("tls", "cert", NULL, tls.cert),
    PATH("tls", "key", NULL, tls.key),
    {"http", "base_path", CFG_STRING, "/api/ens", 0, 0, NULL, OFF(http.base_path), 0,
     check_base_path},
    URL("http", "public_url", NULL, kHttpSchemes, http.public_url),
    INT("http", "max_body_bytes", "1048576", 1024, 64 * 1024 * 1024, http.max_body_bytes),
    PATH("secrets", "master_key_file", "ens-master.key", secrets.master_key_file),
    {"secrets", "master_key", CFG_STRING, NULL, 0, 0, NULL, OFF(secrets.master_key),
     CFG_SECRET | CFG_ENV_ONLY, check_base64},
    URL("redis", "url", "redis://127.0.0.1:6379/0", kRedisSchemes, redis.url),
    PATH("ews", "ca_file", NULL, ews.ca_file),
    INT("ews", "timeout_ms", "15000", 1, 600000, ews.timeout_ms),
    INT("ews", "status_frequency_min", "5", 1, 1440, ews.status_frequency_min),
    BOOL("ews", "allow_private_networks", "false", ews.allow_private_networks),
    URL("apns", "url", "https://api.push.apple.com", kHttpSchemes, apns.url),
    URL("apns", "sandbox_url", "https://api.sandbox.push.apple.com", kHttpSchemes,
        apns.sandbox_url),
    STR("apns", "team_id", NULL, apns.team_id),
    STR("apns", "key_id", NULL, apns.key_id),
    PATH("apns", "key_file", NULL, apns.key_file),
    PATH("apns", "cert_file", NULL, apns.cert_file),
    PATH("apns", "ca_file", NULL, apns.ca_file),
    INT("apns", "connections", "2", 1, 64, apns.connections),
    URL("fcm", "url", "https://fcm.googleapis.com", kHttpSchemes, fcm.url),
    URL("fcm", "token_url", "https://oauth2.googleapis.com/token", kHttpSchemes, fcm.token_url),
    PATH("fcm", "service_account_file", NULL, fcm.service_account_file),
    PATH("fcm", "ca_file", NULL, fcm.ca_file),
    INT("mailbox", "passivate_after_ms", "2000", 0, 3600000, mailbox.passivate_after_ms),
    INT("mailbox", "max_resident", "100000", 16, 100000000, mailbox.max_resident),
    INT("mailbox", "cache_entries", "1000000", 16, 100000000, mailbox.cache_entries),
    INT("push", "expiry_s", "3600", 10, 2419200, push.expiry_s),
    INT("push", "retry_max_ms", "300000", 100, 3600000, push.retry_max_ms),
    INT("push", "stream_timeout_ms", "15000", 100, 120000, push.stream_timeout_ms),
    PATH("admin", "token_file", "ens-admin.token", admin.token_file),
    INT("ratelimit", "address_per_minute", "600", 0, 10000000, ratelimit.address_per_minute),
    INT("ratelimit", "address_burst", "100", 0, 1000000, ratelimit.address_burst),
    INT("ratelimit", "token_per_minute", "6000", 0, 10000000, ratelimit.token_per_minute),
    INT("ratelimit", "token_burst", "1000", 0, 1000000, ratelimit.token_burst),
    INT("ratelimit", "mailbox_per_minute", "6", 0, 10000000, ratelimit.mailbox_per_minute),
    INT("ratelimit", "mailbox_burst", "10", 0, 1000000, ratelimit.mailbox_burst),
    INT("ratelimit", "entries", "65536", 128, 16777216, ratelimit.entries),
    {"runtime", "threads", CFG_INT, NULL, 1, ENS_CONFIG_MAX_THREADS, NULL, OFF(runtime.threads),
     CFG_DEFAULT_NCPU, NULL},
    ENUM("log", "level", "info", kLogLevels, log.level),
    ENUM("log", "format", "json", kLogFormats, log.format),
};

#define CFG_NKEYS (sizeof(kKeys) / sizeof(kKeys[0]))

/* The longest env name is ENS_ + section + _ + key; generous and checked. */
#define CFG_MAX_ENV_NAME 96
/* How much of a refused value an error message repeats. */
#define CFG_MAX_SHOWN 64

struct cfg_load {
    struct ens_config *cfg;
    char *err;
    size_t errlen;
};

static void cfg_errorf(struct cfg_load *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void cfg_errorf(struct cfg_load *L, const char *fmt, ...)
{
    if (L->err == NULL || L->errlen == 0)
        return;
    int n = snprintf(L->err, L->errlen, "config: ");
    if (n < 0 || (size_t)n >= L->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err + n, L->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void *row_member(const struct cfg_row *r, struct ens_config *cfg)
{
    return (char *)cfg + r->offset;
}

static const void *row_cmember(const struct cfg_row *r, const struct ens_config *cfg)
{
    return (const char *)cfg + r->offset;
}

static void env_name(const struct cfg_row *r, char *out, size_t cap)
{
    snprintf(out, cap, "ENS_%s_%s", r->section, r->key);
    for (char *p = out; *p; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
}

/* url_userinfo_span finds "user:pass@" in a URL so that it is never repeated:
 * a redis URL may carry a password. Returns 1 and the range, or 0. */
static int url_userinfo_span(const char *v, size_t *start, size_t *len)
{
    const char *sep = strstr(v, "://");
    if (sep == NULL)
        return 0;
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    for (size_t i = alen; i > 0; i--) {
        if (auth[i - 1] == '@') {
            *start = (size_t)(auth - v);
            *len = i;
            return 1;
        }
    }
    return 0;
}

/* show_text renders a user's value for a message: quoted, escaped, shortened,
 * URL passwords elided. */
static void show_text(const struct cfg_row *r, const char *v, char *out, size_t cap)
{
    size_t skip_at = (size_t)-1, skip_len = 0, o = 0;
    if (r->type != CFG_URL || !url_userinfo_span(v, &skip_at, &skip_len))
        skip_at = (size_t)-1;
    if (cap < 16)
        return;
    out[o++] = '"';
    size_t shown = 0;
    for (size_t i = 0; v[i] && o + 16 < cap; i++) {
        if (i == skip_at) {
            o += (size_t)snprintf(out + o, cap - o, "<redacted>@");
            i += skip_len - 1;
            continue;
        }
        if (shown++ == CFG_MAX_SHOWN) {
            o += (size_t)snprintf(out + o, cap - o, "...");
            break;
        }
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (o > cap - 2)
        o = cap - 2;
    out[o++] = '"';
    out[o] = '\0';
}

static void show_json(const struct cfg_row *r, const cJSON *item, char *out, size_t cap)
{
    if (cJSON_IsString(item))
        show_text(r, item->valuestring, out, cap);
    else if (cJSON_IsNumber(item))
        snprintf(out, cap, "%.17g", item->valuedouble);
    else if (cJSON_IsTrue(item))
        snprintf(out, cap, "true");
    else if (cJSON_IsFalse(item))
        snprintf(out, cap, "false");
    else if (cJSON_IsArray(item))
        snprintf(out, cap, "an array");
    else if (cJSON_IsObject(item))
        snprintf(out, cap, "an object");
    else
        snprintf(out, cap, "something else");
}

static const char *check_base_path(const char *v)
{
    static const char kWant[] = "\"\" or a path like /api/ens (no trailing /, no ? or #)";
    size_t n = strlen(v);
    if (n == 0)
        return NULL;
    if (v[0] != '/' || v[n - 1] == '/')
        return kWant;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#' || c == '%')
            return kWant;
    }
    return NULL;
}

static const char *check_base64(const char *v)
{
    struct rt_buf raw;
    rt_buf_init(&raw, ENS_CONFIG_MAX_VALUE_BYTES);
    int rc = b64_decode(&raw, span_cstr(v), 0);
    if (rc != 0) {
        rt_buf_reset(&raw);
        rc = b64_decode(&raw, span_cstr(v), 1);
    }
    int empty = raw.len == 0;
    rt_buf_cleanup_secret(&raw);
    return rc == 0 && !empty ? NULL : "base64 (the value is not shown)";
}

/* parse_port reads 0..65535 and nothing else. */
static int parse_port(struct span s, uint16_t *port)
{
    uint64_t v;
    if (s.len == 0 || s.len > 5 || !span_get_decimal(&s, 65535, &v) || s.len != 0)
        return 0;
    *port = (uint16_t)v;
    return 1;
}

static int host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static int v6_char(unsigned char c)
{
    return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') || c == ':' ||
           c == '.';
}

int ens_config_hostport_split(const char *hostport, char *host, size_t hostcap, uint16_t *port)
{
    if (hostport == NULL || host == NULL || port == NULL)
        return ENS_EINVAL;
    const char *colon;
    const char *hbeg = hostport, *hend;
    if (hostport[0] == '[') {
        hbeg = hostport + 1;
        hend = strchr(hbeg, ']');
        if (hend == NULL || hend[1] != ':')
            return ENS_EINVAL;
        for (const char *p = hbeg; p < hend; p++) {
            if (!v6_char((unsigned char)*p))
                return ENS_EINVAL;
        }
        colon = hend + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (colon == NULL)
            return ENS_EINVAL;
        hend = colon;
        for (const char *p = hbeg; p < hend; p++) {
            if (!host_char((unsigned char)*p))
                return ENS_EINVAL;
        }
    }
    size_t hlen = (size_t)(hend - hbeg);
    if (hlen == 0 || hlen >= hostcap || hlen >= ENS_CONFIG_MAX_HOST_BYTES)
        return ENS_EINVAL;
    uint16_t p;
    if (!parse_port(span_cstr(colon + 1), &p))
        return ENS_EINVAL;
    memcpy(host, hbeg, hlen);
    host[hlen] = '\0';
    *port = p;
    return 0;
}

/* url_ok accepts scheme://authority[/rest] with one of |schemes|; unix:// has an
 * empty authority and a path instead. */
static int url_ok(const char *v, const char *const *schemes)
{
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    const char *sep = strstr(v, "://");
    if (sep == NULL)
        return 0;
    struct span scheme = span_make(v, (size_t)(sep - v));
    int known = 0;
    for (size_t i = 0; schemes[i]; i++)
        known |= span_eq_nocase(scheme, schemes[i]);
    if (!known)
        return 0;
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    if (span_eq_nocase(scheme, "unix"))
        return alen == 0 && auth[0] == '/' && auth[1] != '\0';
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++) {
        if (auth[i] == '@')
            at = auth + i;
    }
    const char *host = at ? at + 1 : auth;
    const char *end = auth + alen;
    if (host == end)
        return 0;
    const char *port = NULL;
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (rb == NULL || rb == host + 1)
            return 0;
        for (const char *p = host + 1; p < rb; p++) {
            if (!v6_char((unsigned char)*p))
                return 0;
        }
        if (rb + 1 < end) {
            if (rb[1] != ':')
                return 0;
            port = rb + 2;
        }
    } else {
        const char *p = host;
        while (p < end && *p != ':') {
            if (!host_char((unsigned char)*p))
                return 0;
            p++;
        }
        if (p == host)
            return 0;
        if (p < end)
            port = p + 1;
    }
    uint16_t pv;
    if (port && (!parse_port(span_make(port, (size_t)(end - port)), &pv) || pv == 0))
        return 0;
    return 1;
}

/* parse_int reads an optional '-' and decimal digits, and nothing else. */
static int parse_int(const char *v, int64_t *out)
{
    struct span s = span_cstr(v);
    int neg = 0;
    if (s.len > 0 && s.p[0] == '-') {
        neg = 1;
        s.p++;
        s.len--;
    }
    uint64_t u;
    if (!span_get_decimal(&s, (uint64_t)INT64_MAX, &u) || s.len != 0)
        return 0;
    *out = neg ? -(int64_t)u : (int64_t)u;
    return 1;
}

static int parse_bool(const char *v, bool *out)
{
    static const struct {
        const char *word;
        bool value;
    } kWords[] = {{"true", true}, {"false", false}, {"1", true},  {"0", false},
                  {"yes", true},  {"no", false},    {"on", true}, {"off", false}};
    for (size_t i = 0; i < sizeof(kWords) / sizeof(kWords[0]); i++) {
        if (span_eq_nocase(span_cstr(v), kWords[i].word)) {
            *out = kWords[i].value;
            return 1;
        }
    }
    return 0;
}

static void set_string(struct ens_config *cfg, const struct cfg_row *r, char *owned)
{
    char **slot = row_member(r, cfg);
    if (r->flags & CFG_SECRET)
        ens_free_secret(*slot);
    else
        ens_free(*slot);
    *slot = owned;
}

static char *resolve_path(const struct ens_config *cfg, const char *v)
{
    if (v[0] == '/')
        return ens_strdup(v);
    size_t dl = strlen(cfg->dir), vl = strlen(v);
    int slash = dl > 0 && cfg->dir[dl - 1] != '/';
    char *out = ens_malloc(dl + (size_t)slash + vl + 1);
    memcpy(out, cfg->dir, dl);
    if (slash)
        out[dl] = '/';
    memcpy(out + dl + slash, v, vl + 1);
    return out;
}

static void choices_text(const char *const *names, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; names[i] && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "|" : "", names[i]);
}

/* set_text stores a textual value (environment, default, or a JSON string) for a
 * row of any textual type. |source| names where it came from. */
static int set_text(struct cfg_load *L, const struct cfg_row *r, const char *v, const char *source)
{
    char shown[CFG_MAX_SHOWN * 4 + 32], want[128];
    if (r->flags & CFG_SECRET)
        snprintf(shown, sizeof(shown), "a value that is not shown");
    else
        show_text(r, v, shown, sizeof(shown));

    if (strlen(v) > ENS_CONFIG_MAX_VALUE_BYTES) {
        cfg_errorf(L, "%s.%s (from %s): longer than %d bytes", r->section, r->key, source,
                   ENS_CONFIG_MAX_VALUE_BYTES);
        return ENS_ECONFIG;
    }
    /* An empty value unsets a key that has no default: that is how an
     * environment variable switches off, say, tls.cert from the file. */
    if (v[0] == '\0' && r->dflt == NULL && r->type != CFG_INT && r->type != CFG_BOOL) {
        set_string(L->cfg, r, NULL);
        return 0;
    }

    const char *expected = NULL;
    switch (r->type) {
    case CFG_STRING:
    case CFG_PATH:
        if (v[0] == '\0' && r->check == NULL)
            expected = "a non-empty string";
        break;
    case CFG_HOSTPORT: {
        char host[ENS_CONFIG_MAX_HOST_BYTES];
        uint16_t port;
        if (ens_config_hostport_split(v, host, sizeof(host), &port) != 0)
            expected = "host:port or [v6]:port";
        break;
    }
    case CFG_URL:
        if (!url_ok(v, r->choices)) {
            char s[64];
            choices_text(r->choices, s, sizeof(s));
            snprintf(want, sizeof(want), "an absolute URL (%s)", s);
            expected = want;
        }
        break;
    case CFG_ENUM: {
        for (int i = 0; r->choices[i]; i++) {
            if (strcmp(v, r->choices[i]) == 0) {
                memcpy(row_member(r, L->cfg), &i, sizeof(i));
                return 0;
            }
        }
        char s[64];
        choices_text(r->choices, s, sizeof(s));
        snprintf(want, sizeof(want), "one of %s", s);
        expected = want;
        break;
    }
    case CFG_INT: {
        int64_t n;
        if (!parse_int(v, &n) || n < r->min || n > r->max) {
            snprintf(want, sizeof(want), "an integer in %lld..%lld", (long long)r->min,
                     (long long)r->max);
            expected = want;
            break;
        }
        int iv = (int)n;
        memcpy(row_member(r, L->cfg), &iv, sizeof(iv));
        return 0;
    }
    case CFG_BOOL: {
        bool b;
        if (!parse_bool(v, &b)) {
            expected = "true or false";
            break;
        }
        memcpy(row_member(r, L->cfg), &b, sizeof(b));
        return 0;
    }
    }
    if (expected == NULL && r->check != NULL)
        expected = r->check(v);
    if (expected != NULL) {
        cfg_errorf(L, "%s.%s (from %s): expected %s, got %s", r->section, r->key, source, expected,
                   shown);
        return ENS_ECONFIG;
    }
    set_string(L->cfg, r, r->type == CFG_PATH ? resolve_path(L->cfg, v) : ens_strdup(v));
    return 0;
}

/* set_json stores a value from the file: JSON types must match the key's type,
 * so that "15000" (a string) for an integer is an error rather than a guess. */
static int set_json(struct cfg_load *L, const struct cfg_row *r, const cJSON *item,
                    const char *source)
{
    char shown[CFG_MAX_SHOWN * 4 + 32], want[128];
    if (cJSON_IsNull(item))
        return 0; /* null keeps the default */
    switch (r->type) {
    case CFG_INT:
        if (cJSON_IsNumber(item)) {
            double d = item->valuedouble;
            if (d >= (double)r->min && d <= (double)r->max && d == (double)(int64_t)d) {
                int iv = (int)d;
                memcpy(row_member(r, L->cfg), &iv, sizeof(iv));
                return 0;
            }
        }
        snprintf(want, sizeof(want), "an integer in %lld..%lld", (long long)r->min,
                 (long long)r->max);
        break;
    case CFG_BOOL:
        if (cJSON_IsBool(item)) {
            bool b = cJSON_IsTrue(item);
            memcpy(row_member(r, L->cfg), &b, sizeof(b));
            return 0;
        }
        snprintf(want, sizeof(want), "true or false");
        break;
    default:
        if (cJSON_IsString(item))
            return set_text(L, r, item->valuestring, source);
        snprintf(want, sizeof(want), "a string");
        break;
    }
    show_json(r, item, shown, sizeof(shown));
    cfg_errorf(L, "%s.%s (from %s): expected %s, got %s", r->section, r->key, source, want, shown);
    return ENS_ECONFIG;
}

static const struct cfg_row *find_row(const char *section, const char *key)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        if (strcmp(kKeys[i].section, section) == 0 && strcmp(kKeys[i].key, key) == 0)
            return &kKeys[i];
    }
    return NULL;
}

static int known_section(const char *section)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        if (strcmp(kKeys[i].section, section) == 0)
            return 1;
    }
    return 0;
}

static int load_defaults(struct cfg_load *L)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_row *r = &kKeys[i];
        if (r->flags & CFG_DEFAULT_NCPU) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            int iv = n < 1 ? 1 : n > r->max ? (int)r->max : (int)n;
            memcpy(row_member(r, L->cfg), &iv, sizeof(iv));
            continue;
        }
        if (r->dflt == NULL)
            continue;
        int rc = set_text(L, r, r->dflt, "default");
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int set_dir(struct cfg_load *L, const char *path)
{
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        cfg_errorf(L, "cannot find the current directory: %s", strerror(errno));
        return ENS_ECONFIG;
    }
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (slash == NULL) {
        L->cfg->dir = ens_strdup(cwd);
        return 0;
    }
    if (slash == path) {
        L->cfg->dir = ens_strdup("/");
        return 0;
    }
    char *d = ens_memdup(path, (size_t)(slash - path));
    if (d[0] == '/') {
        L->cfg->dir = d;
        return 0;
    }
    struct rt_buf b;
    rt_buf_init(&b, sizeof(cwd) * 2);
    int rc = rt_buf_appendf(&b, "%s/%s", cwd, d);
    ens_free(d);
    if (rc != 0) {
        rt_buf_cleanup(&b);
        cfg_errorf(L, "%s: path too long", path);
        return ENS_ECONFIG;
    }
    L->cfg->dir = (char *)rt_buf_take(&b, NULL);
    return 0;
}

static int read_file(struct cfg_load *L, const char *path, struct rt_buf *out)
{
    rt_buf_init(out, CONFIG_MAX_FILE_BYTES);
    int rc = rt_file_read(path, out);
    if (rc == ENS_ENOTFOUND)
        cfg_errorf(L, "%s: cannot open: %s", path, strerror(errno));
    else if (rc == ENS_ETOOBIG)
        cfg_errorf(L, "%s: larger than the limit of %d bytes", path, CONFIG_MAX_FILE_BYTES);
    else if (rc)
        cfg_errorf(L, "%s: cannot read: %s", path, strerror(errno));
    if (rc != 0) {
        rt_buf_cleanup(out);
        return ENS_ECONFIG;
    }
    return 0;
}

static void where(const struct rt_buf *text, const char *at, int *line, int *col)
{
    *line = 1;
    *col = 1;
    const char *p = (const char *)text->data;
    const char *end = p + text->len;
    if (at == NULL || at < p || at > end)
        at = end;
    for (; p < at; p++) {
        if (*p == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

static int has_twin(const cJSON *item)
{
    for (const cJSON *o = item->next; o; o = o->next) {
        if (strcmp(o->string, item->string) == 0)
            return 1;
    }
    return 0;
}

static int load_file(struct cfg_load *L, const char *path)
{
    struct rt_buf text;
    int rc = read_file(L, path, &text);
    if (rc != 0)
        return rc;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)text.data, text.len, &end, 0);
    if (root != NULL && end != NULL) {
        /* cJSON stops after the first value; anything but blanks after it means
         * the file is not the one JSON document we expect. */
        const char *tail = (const char *)text.data + text.len;
        for (const char *p = end; p < tail; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
                cJSON_Delete(root);
                root = NULL;
                end = p;
                break;
            }
        }
    }
    if (root == NULL) {
        int line, col;
        where(&text, end, &line, &col);
        cfg_errorf(L, "%s: not valid JSON (line %d, column %d)", path, line, col);
        rt_buf_cleanup(&text);
        return ENS_ECONFIG;
    }
    rt_buf_cleanup(&text);
    if (!cJSON_IsObject(root)) {
        cfg_errorf(L, "%s: expected a JSON object of sections", path);
        cJSON_Delete(root);
        return ENS_ECONFIG;
    }
    rc = 0;
    for (const cJSON *sec = root->child; sec && rc == 0; sec = sec->next) {
        if (!known_section(sec->string)) {
            cfg_errorf(L, "unknown section \"%.64s\" in %s", sec->string, path);
            rc = ENS_ECONFIG;
        } else if (has_twin(sec)) {
            cfg_errorf(L, "section \"%s\" appears twice in %s", sec->string, path);
            rc = ENS_ECONFIG;
        } else if (!cJSON_IsObject(sec)) {
            char shown[CFG_MAX_SHOWN * 4 + 32];
            static const struct cfg_row kAny = {0};
            show_json(&kAny, sec, shown, sizeof(shown));
            cfg_errorf(L, "%s (from %s): expected an object of keys, got %s", sec->string, path,
                       shown);
            rc = ENS_ECONFIG;
        }
        for (const cJSON *it = sec->child; it && rc == 0; it = it->next) {
            const struct cfg_row *r = find_row(sec->string, it->string);
            if (r == NULL || (r->flags & CFG_ENV_ONLY)) {
                cfg_errorf(L, "unknown key \"%s.%.64s\" in %s%s", sec->string, it->string, path,
                           r ? " (it may only come from the environment)" : "");
                rc = ENS_ECONFIG;
            } else if (has_twin(it)) {
                cfg_errorf(L, "%s.%s appears twice in %s", r->section, r->key, path);
                rc = ENS_ECONFIG;
            } else {
                rc = set_json(L, r, it, path);
            }
        }
    }
    cJSON_Delete(root);
    return rc;
}

static int load_env(struct cfg_load *L, char *const *envp)
{
    if (envp == NULL)
        return 0;
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        char name[CFG_MAX_ENV_NAME];
        env_name(&kKeys[i], name, sizeof(name));
        size_t nl = strlen(name);
        for (char *const *e = envp; *e; e++) {
            if (strncmp(*e, name, nl) == 0 && (*e)[nl] == '=') {
                int rc = set_text(L, &kKeys[i], *e + nl + 1, name);
                if (rc != 0)
                    return rc;
                break;
            }
        }
    }
    return 0;
}

int ens_config_load(const char *path, char *const *envp, struct ens_config *out, char *err,
                    size_t errlen)
{
    if (out == NULL)
        return ENS_EINVAL;
    memset(out, 0, sizeof(*out));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    struct cfg_load L = {out, err, errlen};
    int rc = set_dir(&L, path);
    if (rc == 0)
        rc = load_defaults(&L);
    if (rc == 0 && path != NULL) {
        out->file = ens_strdup(path);
        rc = load_file(&L, path);
    }
    if (rc == 0)
        rc = load_env(&L, envp);
    if (rc != 0)
        ens_config_cleanup(out);
    return rc;
}

void ens_config_cleanup(struct ens_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_row *r = &kKeys[i];
        if (r->type != CFG_INT && r->type != CFG_BOOL && r->type != CFG_ENUM)
            set_string(cfg, r, NULL);
    }
    ens_free(cfg->file);
    ens_free(cfg->dir);
    memset(cfg, 0, sizeof(*cfg));
}

static cJSON *dump_value(const struct cfg_row *r, const struct ens_config *cfg)
{
    const void *m = row_cmember(r, cfg);
    int iv;
    bool bv;
    switch (r->type) {
    case CFG_INT:
        memcpy(&iv, m, sizeof(iv));
        return cJSON_CreateNumber(iv);
    case CFG_BOOL:
        memcpy(&bv, m, sizeof(bv));
        return cJSON_CreateBool(bv);
    case CFG_ENUM:
        memcpy(&iv, m, sizeof(iv));
        return cJSON_CreateString(r->choices[iv]);
    default:
        break;
    }
    const char *s = *(char *const *)m;
    if (s == NULL)
        return cJSON_CreateNull();
    if (r->flags & CFG_SECRET)
        return cJSON_CreateString("<redacted>");
    size_t at, len;
    if (r->type == CFG_URL && url_userinfo_span(s, &at, &len)) {
        struct rt_buf b;
        rt_buf_init(&b, ENS_CONFIG_MAX_VALUE_BYTES + 16);
        rt_buf_append(&b, s, at);
        rt_buf_append_str(&b, "<redacted>@");
        rt_buf_append_str(&b, s + at + len);
        cJSON *v = cJSON_CreateString(rt_buf_cstr(&b));
        rt_buf_cleanup(&b);
        return v;
    }
    return cJSON_CreateString(s);
}

int ens_config_dump(const struct ens_config *cfg, struct rt_buf *out)
{
    if (cfg == NULL || out == NULL)
        return ENS_EINVAL;
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_row *r = &kKeys[i];
        cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, r->section);
        if (sec == NULL)
            sec = cJSON_AddObjectToObject(root, r->section);
        cJSON_AddItemToObject(sec, r->key, dump_value(r, cfg));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        return ENS_ENOMEM;
    size_t before = out->len;
    int rc = rt_buf_append_str(out, text);
    if (rc == 0)
        rc = rt_buf_append_str(out, "\n");
    if (rc != 0) {
        out->len = before;
        if (out->data != NULL)
            out->data[before] = '\0';
    }
    cJSON_free(text);
    return rc;
}
