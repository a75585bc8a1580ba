/* ensctl: the command-line face of the admin API (API.md section 4).
 *
 * Exit codes: 0 done; 1 the server answered with an error; 2 usage or local
 * setup error; 3 the server could not be reached. The admin token is read,
 * sent and wiped; it is never printed. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/config.h"
#include "runtime/err.h"
#include "tools/ensctl_http.h"

extern char **environ;

enum { EXIT_OK = 0, EXIT_SERVER = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define ENSCTL_DEFAULT_URL        "http://127.0.0.1:9090"
#define ENSCTL_DEFAULT_TOKEN_FILE "./ens-admin.token"
#define ENSCTL_TIMEOUT_MS         10000
#define ENSCTL_MAX_TOKEN_BYTES    4096
#define ENSCTL_MAX_PATH_BYTES     2048
#define ENSCTL_MAX_BODY_BYTES     (16 * 1024)

struct opts {
    const char *url;
    const char *token_file;
    const char *config;
    const char *preview_cap;
    const char *ews_allow;
    int json;
    int raw;
};

struct ctl {
    struct opts o;
    struct ensctl_url url;
    char *token; /* secret: wiped on exit */
    const char *token_source;
};

struct cmd {
    const char *noun;
    const char *verb; /* NULL: the noun alone */
    int nargs;
    int (*run)(struct ctl *c, char **args);
    const char *usage;
};

static void usage(FILE *f);

/* print_safe writes server text without control characters, so that a hostile
 * answer cannot drive the terminal. */
static void print_safe(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
    }
}

static int read_token_file(struct ctl *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "ensctl: cannot read the admin token from %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    char *buf = ens_malloc(ENSCTL_MAX_TOKEN_BYTES + 1);
    size_t n = fread(buf, 1, ENSCTL_MAX_TOKEN_BYTES + 1, f);
    fclose(f);
    if (n > ENSCTL_MAX_TOKEN_BYTES) {
        ens_wipe(buf, ENSCTL_MAX_TOKEN_BYTES + 1);
        ens_free(buf);
        fprintf(stderr, "ensctl: %s is too large to be an admin token\n", path);
        return EXIT_USAGE;
    }
    buf[n] = '\0';
    c->token = buf;
    c->token_source = path;
    return EXIT_OK;
}

/* check_token trims the file's trailing newline and refuses anything that could
 * break out of the header line. */
static int check_token(struct ctl *c)
{
    size_t n = strlen(c->token);
    while (n > 0 && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r' || c->token[n - 1] == ' ' ||
                     c->token[n - 1] == '\t'))
        c->token[--n] = '\0';
    if (n == 0) {
        fprintf(stderr, "ensctl: the admin token from %s is empty\n", c->token_source);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)c->token[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            fprintf(stderr,
                    "ensctl: the admin token from %s holds characters a token cannot have\n",
                    c->token_source);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

/* config_url turns listen.admin into a URL a client can connect to: a wildcard
 * listen address means "this machine". */
static int config_url(const char *hostport, char *out, size_t cap)
{
    char host[ENS_CONFIG_MAX_HOST_BYTES];
    uint16_t port;
    if (ens_config_hostport_split(hostport, host, sizeof(host), &port) != 0)
        return ENS_EINVAL;
    if (strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "::1");
    if (strchr(host, ':') != NULL)
        snprintf(out, cap, "http://[%s]:%u", host, port);
    else
        snprintf(out, cap, "http://%s:%u", host, port);
    return 0;
}

/* find_server resolves the URL and the token separately, each from the first
 * source that has it: flags, environment, --config, defaults (API.md 4). */
static int find_server(struct ctl *c)
{
    const char *url = c->o.url;
    const char *env_url = getenv("ENS_ADMIN_URL");
    const char *env_token = getenv("ENS_ADMIN_TOKEN");
    if (url == NULL && env_url != NULL && env_url[0] != '\0')
        url = env_url;
    const char *token_file = c->o.token_file;
    int need_config = url == NULL || (token_file == NULL && (env_token == NULL || !*env_token));

    struct ens_config cfg = {0};
    char cfg_url[ENSCTL_URL_MAX_TEXT];
    int rc = EXIT_OK;
    if (need_config && c->o.config != NULL) {
        char err[512];
        if (ens_config_load(c->o.config, environ, &cfg, err, sizeof(err)) != 0) {
            fprintf(stderr, "ensctl: %s\n", err);
            return EXIT_USAGE;
        }
        if (url == NULL) {
            if (config_url(cfg.listen.admin, cfg_url, sizeof(cfg_url)) != 0) {
                fprintf(stderr, "ensctl: listen.admin in %s is not host:port\n", c->o.config);
                ens_config_cleanup(&cfg);
                return EXIT_USAGE;
            }
            url = cfg_url;
        }
    }
    if (url == NULL)
        url = ENSCTL_DEFAULT_URL;

    char err[256];
    if (ensctl_url_parse(url, &c->url, err, sizeof(err)) != 0) {
        fprintf(stderr, "ensctl: %s\n", err);
        rc = EXIT_USAGE;
    } else if (token_file != NULL) {
        rc = read_token_file(c, token_file);
    } else if (env_token != NULL && env_token[0] != '\0') {
        c->token = ens_strdup(env_token);
        c->token_source = "ENS_ADMIN_TOKEN";
    } else if (cfg.admin.token_file != NULL) {
        rc = read_token_file(c, cfg.admin.token_file);
    } else {
        rc = read_token_file(c, ENSCTL_DEFAULT_TOKEN_FILE);
    }
    if (rc == EXIT_OK)
        rc = check_token(c);
    /* The token's source path points into cfg, so keep it only as long as needed. */
    if (c->token_source != NULL && cfg.admin.token_file != NULL &&
        c->token_source == cfg.admin.token_file)
        c->token_source = "admin.token_file";
    ens_config_cleanup(&cfg);
    return rc;
}

/* encode appends |s| percent-encoded, keeping only RFC 3986 unreserved bytes. */
static int encode(struct rt_buf *b, const char *s)
{
    static const char kHex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        char esc[3] = {'%', kHex[ch >> 4], kHex[ch & 15]};
        int rc = plain ? rt_buf_append(b, &ch, 1) : rt_buf_append(b, esc, 3);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* make_path builds "<before><encoded arg><after>" into |b|. */
static int make_path(struct rt_buf *b, const char *before, const char *arg, const char *after)
{
    rt_buf_init(b, ENSCTL_MAX_PATH_BYTES);
    int rc = rt_buf_append_str(b, before);
    if (rc == 0 && arg != NULL)
        rc = encode(b, arg);
    if (rc == 0 && after != NULL)
        rc = rt_buf_append_str(b, after);
    if (rc != 0) {
        rt_buf_cleanup(b);
        fprintf(stderr, "ensctl: argument too long\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static void print_body(const struct ensctl_response *r)
{
    fwrite(r->body.data, 1, r->body.len, stdout);
    if (r->body.len == 0 || r->body.data[r->body.len - 1] != '\n')
        fputc('\n', stdout);
}

static void report_server_error(const struct ctl *c, const struct ensctl_response *r)
{
    if (r->status == 401) {
        fprintf(stderr, "ensctl: the admin token was refused (check admin.token_file)\n");
        return;
    }
    cJSON *j = cJSON_ParseWithLength((const char *)r->body.data, r->body.len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    fprintf(stderr, "ensctl: ");
    if (cJSON_IsString(code)) {
        print_safe(stderr, code->valuestring);
        if (cJSON_IsString(msg) && msg->valuestring[0]) {
            fprintf(stderr, ": ");
            print_safe(stderr, msg->valuestring);
        }
        fprintf(stderr, " (HTTP %d)\n", r->status);
    } else {
        fprintf(stderr, "the admin API at %s answered HTTP %d\n", c->url.text, r->status);
    }
    cJSON_Delete(j);
}

/* call runs one request and handles every outcome but success: on EXIT_OK the
 * caller owns |resp| and the status is 2xx. */
static int call(struct ctl *c, const char *method, const char *path, const char *body,
                struct ensctl_response *resp)
{
    char err[256];
    int rc = ensctl_http_request(&c->url, method, path, c->token, body, ENSCTL_TIMEOUT_MS, resp,
                                 err, sizeof(err));
    if (rc == ENS_ECONNECT || rc == ENS_EDNS) {
        fprintf(stderr, "ensctl: cannot reach the admin API at %s: %s\n", c->url.text, err);
        return EXIT_UNREACHABLE;
    }
    if (rc == ENS_ETIMEDOUT) {
        fprintf(stderr, "ensctl: the admin API at %s did not answer within %d s\n", c->url.text,
                ENSCTL_TIMEOUT_MS / 1000);
        return EXIT_UNREACHABLE;
    }
    if (rc != 0) {
        fprintf(stderr, "ensctl: bad answer from the admin API at %s: %s\n", c->url.text, err);
        return EXIT_SERVER;
    }
    if (resp->status >= 200 && resp->status < 300)
        return EXIT_OK;
    /* Scripts asking for JSON get the error body too, to read its code. */
    if (c->o.json && resp->body.len > 0)
        print_body(resp);
    report_server_error(c, resp);
    ensctl_response_cleanup(resp);
    return EXIT_SERVER;
}

/* parse_answer parses a 2xx body as JSON; a server that sends anything else is
 * answering with an error of its own. */
static cJSON *parse_answer(const struct ctl *c, const struct ensctl_response *r)
{
    cJSON *j = cJSON_ParseWithLength((const char *)r->body.data, r->body.len);
    if (j == NULL)
        fprintf(stderr, "ensctl: the admin API at %s answered something that is not JSON\n",
                c->url.text);
    return j;
}

/* Rendering JSON values for people. */

static const char *text_of(const cJSON *v, char *tmp, size_t cap)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsNumber(v)) {
        snprintf(tmp, cap, "%.15g", v->valuedouble);
        return tmp;
    }
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v) ? "yes" : "no";
    return "-";
}

static const char *field(const cJSON *obj, const char *key, char *tmp, size_t cap)
{
    return text_of(cJSON_GetObjectItemCaseSensitive(obj, key), tmp, cap);
}

static const char *time_of(const cJSON *v, char *tmp, size_t cap)
{
    if (!cJSON_IsNumber(v) || v->valuedouble <= 0)
        return text_of(v, tmp, cap);
    time_t t = (time_t)v->valuedouble;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(tmp, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        return text_of(v, tmp, cap);
    return tmp;
}

static void row(const char *label, const char *value)
{
    printf("%-14s", label);
    print_safe(stdout, value);
    fputc('\n', stdout);
}

static void print_scalars(const cJSON *obj, const char *indent)
{
    for (const cJSON *it = obj ? obj->child : NULL; it; it = it->next) {
        char tmp[64];
        if (cJSON_IsObject(it) || cJSON_IsArray(it) || it->string == NULL)
            continue;
        printf("%s", indent);
        print_safe(stdout, it->string);
        printf(": ");
        print_safe(stdout, text_of(it, tmp, sizeof(tmp)));
        fputc('\n', stdout);
    }
}

#define DEVICE_COLS 5
#define DEVICE_CELL 160

static void device_cells(const cJSON *d, char cells[DEVICE_COLS][DEVICE_CELL])
{
    char tmp[96];
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(d, "lastPush");
    snprintf(cells[0], DEVICE_CELL, "%s", field(d, "deviceId", tmp, sizeof(tmp)));
    snprintf(cells[1], DEVICE_CELL, "%s", field(d, "platform", tmp, sizeof(tmp)));
    snprintf(cells[2], DEVICE_CELL, "%s", field(d, "environment", tmp, sizeof(tmp)));
    snprintf(cells[3], DEVICE_CELL, "%s", field(d, "blocked", tmp, sizeof(tmp)));
    if (cJSON_IsObject(lp)) {
        char when[64], res[64];
        snprintf(when, sizeof(when), "%s",
                 time_of(cJSON_GetObjectItemCaseSensitive(lp, "at"), tmp, sizeof(tmp)));
        snprintf(res, sizeof(res), "%s", field(lp, "result", tmp, sizeof(tmp)));
        snprintf(cells[4], DEVICE_CELL, "%s %s", when, res);
    } else {
        snprintf(cells[4], DEVICE_CELL, "never");
    }
}

/* print_cells writes one table line: columns padded to |width|, two spaces apart. */
static void print_cells(const char *const *cells, const int *width)
{
    printf("  ");
    for (int k = 0; k < DEVICE_COLS; k++) {
        print_safe(stdout, cells[k]);
        if (k + 1 < DEVICE_COLS)
            printf("%*s", width[k] - (int)strlen(cells[k]) + 2, "");
    }
    printf("\n");
}

static void print_devices(const cJSON *devices)
{
    static const char *const kHead[DEVICE_COLS] = {"DEVICE", "PLATFORM", "ENVIRONMENT", "BLOCKED",
                                                   "LAST PUSH"};
    int n = cJSON_GetArraySize(devices);
    printf("\nDevices (%d)\n", n);
    if (n == 0)
        return;
    int width[DEVICE_COLS];
    for (int k = 0; k < DEVICE_COLS; k++)
        width[k] = (int)strlen(kHead[k]);
    char cells[DEVICE_COLS][DEVICE_CELL];
    const cJSON *d;
    cJSON_ArrayForEach(d, devices)
    {
        device_cells(d, cells);
        for (int k = 0; k < DEVICE_COLS; k++) {
            int w = (int)strlen(cells[k]);
            width[k] = w > width[k] ? w : width[k];
        }
    }
    const char *head[DEVICE_COLS];
    for (int k = 0; k < DEVICE_COLS; k++)
        head[k] = kHead[k];
    print_cells(head, width);
    cJSON_ArrayForEach(d, devices)
    {
        device_cells(d, cells);
        const char *line[DEVICE_COLS];
        for (int k = 0; k < DEVICE_COLS; k++)
            line[k] = cells[k];
        print_cells(line, width);
    }
}

static void print_user(const cJSON *u)
{
    char tmp[96];
    row("User", field(u, "userId", tmp, sizeof(tmp)));
    row("Mailbox", field(u, "email", tmp, sizeof(tmp)));
    row("Tenant", field(u, "tenantId", tmp, sizeof(tmp)));
    row("Badge", field(u, "badge", tmp, sizeof(tmp)));
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(u, "subscription");
    printf("\n");
    if (!cJSON_IsObject(s)) {
        row("Subscription", "none");
    } else {
        row("Subscription", field(s, "id", tmp, sizeof(tmp)));
        row("  state", field(s, "state", tmp, sizeof(tmp)));
        row("  last status",
            time_of(cJSON_GetObjectItemCaseSensitive(s, "lastStatusAt"), tmp, sizeof(tmp)));
        const cJSON *age = cJSON_GetObjectItemCaseSensitive(s, "watermarkAge");
        if (cJSON_IsNumber(age)) {
            snprintf(tmp, sizeof(tmp), "%.0f s old", age->valuedouble);
            row("  watermark", tmp);
        } else {
            row("  watermark", text_of(age, tmp, sizeof(tmp)));
        }
        row("  expires",
            time_of(cJSON_GetObjectItemCaseSensitive(s, "expiresAt"), tmp, sizeof(tmp)));
    }
    print_devices(cJSON_GetObjectItemCaseSensitive(u, "devices"));
    const cJSON *counters = cJSON_GetObjectItemCaseSensitive(u, "counters");
    if (cJSON_IsObject(counters) && counters->child != NULL) {
        printf("\nCounters\n");
        print_scalars(counters, "  ");
    }
}

/* run_simple performs a request whose answer needs no special rendering. */
static int run_simple(struct ctl *c, const char *method, const char *path, const char *body,
                      const char *done)
{
    struct ensctl_response r;
    int rc = call(c, method, path, body, &r);
    if (rc != EXIT_OK)
        return rc;
    if (c->o.json) {
        print_body(&r);
    } else {
        printf("%s\n", done);
        cJSON *j = r.body.len ? cJSON_ParseWithLength((const char *)r.body.data, r.body.len) : NULL;
        print_scalars(j, "  ");
        cJSON_Delete(j);
    }
    ensctl_response_cleanup(&r);
    return EXIT_OK;
}

static int cmd_tenant_add(struct ctl *c, char **args)
{
    static const char *const kCaps[] = {"full", "sender", "none"};
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", args[0]);
    if (c->o.preview_cap != NULL) {
        int ok = 0;
        for (size_t i = 0; i < sizeof(kCaps) / sizeof(kCaps[0]); i++)
            ok |= strcmp(c->o.preview_cap, kCaps[i]) == 0;
        if (!ok) {
            fprintf(stderr, "ensctl: --preview-cap is full, sender or none\n");
            cJSON_Delete(body);
            return EXIT_USAGE;
        }
        cJSON_AddStringToObject(body, "previewCap", c->o.preview_cap);
    }
    if (c->o.ews_allow != NULL) {
        cJSON *list = cJSON_AddArrayToObject(body, "ewsAllow");
        const char *p = c->o.ews_allow;
        while (*p) {
            size_t n = strcspn(p, ",");
            const char *b = p, *e = p + n;
            while (b < e && (*b == ' ' || *b == '\t'))
                b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e > b) {
                char *dom = ens_memdup(b, (size_t)(e - b));
                cJSON_AddItemToArray(list, cJSON_CreateString(dom));
                ens_free(dom);
            }
            p += n;
            if (*p == ',')
                p++;
        }
    }
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (text == NULL || strlen(text) > ENSCTL_MAX_BODY_BYTES) {
        cJSON_free(text);
        fprintf(stderr, "ensctl: arguments too long\n");
        return EXIT_USAGE;
    }
    struct ensctl_response r;
    int rc = call(c, "POST", "/admin/v1/tenants", text, &r);
    cJSON_free(text);
    if (rc != EXIT_OK)
        return rc;
    if (c->o.json) {
        print_body(&r);
    } else {
        cJSON *j = parse_answer(c, &r);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
        char tmp[64];
        if (j == NULL || id == NULL) {
            rc = EXIT_SERVER;
            if (j != NULL)
                fprintf(stderr, "ensctl: the answer holds no tenant id\n");
        } else {
            print_safe(stdout, text_of(id, tmp, sizeof(tmp)));
            fputc('\n', stdout);
        }
        cJSON_Delete(j);
    }
    ensctl_response_cleanup(&r);
    return rc;
}

static int cmd_token_create(struct ctl *c, char **args)
{
    struct rt_buf path;
    int rc = make_path(&path, "/admin/v1/tenants/", args[0], "/tokens");
    if (rc != EXIT_OK)
        return rc;
    struct ensctl_response r;
    rc = call(c, "POST", rt_buf_cstr(&path), "{}", &r);
    rt_buf_cleanup(&path);
    if (rc != EXIT_OK)
        return rc;
    if (c->o.json) {
        print_body(&r);
    } else {
        cJSON *j = parse_answer(c, &r);
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
        if (!cJSON_IsString(tok)) {
            if (j != NULL)
                fprintf(stderr, "ensctl: the answer holds no token\n");
            rc = EXIT_SERVER;
        } else {
            print_safe(stdout, tok->valuestring);
            fputc('\n', stdout);
            fprintf(stderr, "note: this API token is shown only once; the server keeps only "
                            "its hash. Store it now.\n");
        }
        cJSON_Delete(j);
    }
    /* The body holds a fresh credential: wipe it rather than just free it. */
    rt_buf_cleanup_secret(&r.body);
    return rc;
}

static int cmd_user(struct ctl *c, char **args)
{
    struct rt_buf path;
    int rc = strchr(args[0], '@') != NULL
                 ? make_path(&path, "/admin/v1/users?email=", args[0], NULL)
                 : make_path(&path, "/admin/v1/users/", args[0], NULL);
    if (rc != EXIT_OK)
        return rc;
    struct ensctl_response r;
    rc = call(c, "GET", rt_buf_cstr(&path), NULL, &r);
    rt_buf_cleanup(&path);
    if (rc != EXIT_OK)
        return rc;
    if (c->o.json) {
        print_body(&r);
    } else {
        cJSON *j = parse_answer(c, &r);
        if (j == NULL)
            rc = EXIT_SERVER;
        else
            print_user(j);
        cJSON_Delete(j);
    }
    ensctl_response_cleanup(&r);
    return rc;
}

static int device_action(struct ctl *c, const char *id, const char *method, const char *suffix,
                         const char *done)
{
    struct rt_buf path;
    int rc = make_path(&path, "/admin/v1/devices/", id, suffix);
    if (rc != EXIT_OK)
        return rc;
    char msg[300];
    snprintf(msg, sizeof(msg), "device %.200s %s", id, done);
    rc = run_simple(c, method, rt_buf_cstr(&path), suffix ? "{}" : NULL, msg);
    rt_buf_cleanup(&path);
    return rc;
}

static int cmd_device_block(struct ctl *c, char **args)
{
    return device_action(c, args[0], "POST", "/block", "blocked");
}

static int cmd_device_unblock(struct ctl *c, char **args)
{
    return device_action(c, args[0], "POST", "/unblock", "unblocked");
}

static int cmd_device_rm(struct ctl *c, char **args)
{
    return device_action(c, args[0], "DELETE", NULL, "removed");
}

static int cmd_keys_rotate(struct ctl *c, char **args)
{
    return run_simple(c, "POST", "/admin/v1/keys/rotate", "{}", "keys rotated");
}

/* print_metrics keeps what a person scans for: samples, not help text or
 * histogram buckets. */
static void print_metrics(const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        int skip = n == 0 || p[0] == '#';
        if (!skip) {
            char line[1024];
            snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1), p);
            char *sp = strrchr(line, ' ');
            if (strstr(line, "_bucket{") != NULL || sp == NULL) {
                skip = 1;
            } else {
                *sp = '\0';
                printf("  %-56s ", line);
                print_safe(stdout, sp + 1);
                fputc('\n', stdout);
            }
        }
        p = nl ? nl + 1 : end;
    }
}

static int cmd_stats(struct ctl *c, char **args)
{
    struct ensctl_response r;
    int rc = call(c, "GET", "/metrics", NULL, &r);
    if (rc != EXIT_OK)
        return rc;
    if (c->o.json || c->o.raw)
        print_body(&r);
    else
        print_metrics((const char *)r.body.data, r.body.len);
    ensctl_response_cleanup(&r);
    return EXIT_OK;
}

static const struct cmd kCommands[] = {
    {"tenant", "add", 1, cmd_tenant_add,
     "tenant add <name> [--preview-cap full|sender|none] [--ews-allow a.com,b.com]"},
    {"token", "create", 1, cmd_token_create, "token create <tenantId>"},
    {"user", NULL, 1, cmd_user, "user <email|userId>"},
    {"device", "block", 1, cmd_device_block, "device block <deviceId>"},
    {"device", "unblock", 1, cmd_device_unblock, "device unblock <deviceId>"},
    {"device", "rm", 1, cmd_device_rm, "device rm <deviceId>"},
    {"keys", "rotate", 0, cmd_keys_rotate, "keys rotate"},
    {"stats", NULL, 0, cmd_stats, "stats [--raw]"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ensctl [--url URL] [--token-file FILE] [--config FILE] [--json] "
               "<command>\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(kCommands) / sizeof(kCommands[0]); i++)
        fprintf(f, "  ensctl %s\n", kCommands[i].usage);
    fprintf(f,
            "\nThe server is found with --url/--token-file, else ENS_ADMIN_URL/ENS_ADMIN_TOKEN,\n"
            "else listen.admin/admin.token_file of --config, else " ENSCTL_DEFAULT_URL
            " and " ENSCTL_DEFAULT_TOKEN_FILE ".\n"
            "Exit codes: 0 ok, 1 the server answered an error, 2 usage, 3 unreachable.\n");
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "ensctl: %s%s\n", what, arg);
    usage(stderr);
    return EXIT_USAGE;
}

static const struct cmd *find_command(int argc, char **argv, int *consumed)
{
    for (size_t i = 0; i < sizeof(kCommands) / sizeof(kCommands[0]); i++) {
        const struct cmd *k = &kCommands[i];
        if (argc < 1 || strcmp(argv[0], k->noun) != 0)
            continue;
        if (k->verb == NULL) {
            *consumed = 1;
            return k;
        }
        if (argc >= 2 && strcmp(argv[1], k->verb) == 0) {
            *consumed = 2;
            return k;
        }
    }
    return NULL;
}

enum { OPT_URL = 1000, OPT_TOKEN_FILE, OPT_CONFIG, OPT_JSON, OPT_RAW, OPT_PREVIEW, OPT_EWS_ALLOW };

int main(int argc, char **argv)
{
    static const struct option kLong[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"json", no_argument, NULL, OPT_JSON},
        {"raw", no_argument, NULL, OPT_RAW},
        {"preview-cap", required_argument, NULL, OPT_PREVIEW},
        {"ews-allow", required_argument, NULL, OPT_EWS_ALLOW},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct ctl c = {0};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "hV", kLong, NULL)) != -1) {
        switch (ch) {
        case OPT_URL:
            c.o.url = optarg;
            break;
        case OPT_TOKEN_FILE:
            c.o.token_file = optarg;
            break;
        case OPT_CONFIG:
            c.o.config = optarg;
            break;
        case OPT_JSON:
            c.o.json = 1;
            break;
        case OPT_RAW:
            c.o.raw = 1;
            break;
        case OPT_PREVIEW:
            c.o.preview_cap = optarg;
            break;
        case OPT_EWS_ALLOW:
            c.o.ews_allow = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf("ensctl " ENS_VERSION "\n");
            return EXIT_OK;
        default:
            return usage_error("unknown or incomplete option ", argv[optind - 1]);
        }
    }
    int consumed = 0;
    char **rest = argv + optind;
    int nrest = argc - optind;
    if (nrest == 0)
        return usage_error("no command given", "");
    const struct cmd *k = find_command(nrest, rest, &consumed);
    if (k == NULL)
        return usage_error("unknown command ", rest[0]);
    if (nrest - consumed != k->nargs) {
        fprintf(stderr, "ensctl: usage: ensctl %s\n", k->usage);
        return EXIT_USAGE;
    }
    if ((c.o.preview_cap || c.o.ews_allow) && k->run != cmd_tenant_add)
        return usage_error("--preview-cap and --ews-allow go with \"tenant add\"", "");
    if (c.o.raw && k->run != cmd_stats)
        return usage_error("--raw goes with \"stats\"", "");
    for (int i = consumed; i < nrest; i++) {
        if (rest[i][0] == '\0')
            return usage_error("empty argument", "");
    }

    int rc = find_server(&c);
    if (rc == EXIT_OK)
        rc = k->run(&c, rest + consumed);
    ens_free_secret(c.token);
    fflush(stdout);
    return rc;
}
