/* FCM HTTP v1 payloads, error parsing, service-account OAuth2 and the client
 * (see fcm.h). */
#include "protocols/fcm.h"

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "protocols/h1_client.h"
#include "protocols/h2_client.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/file.h"
#include "runtime/log.h"
#include "runtime/net.h"
#include "protocols/json_text.h"

/* ---- payloads ---- */

/* Registration tokens are base64url-ish with ':' (e.g. "cXr...:APA91b..."). We
 * refuse anything else so that a token never needs escaping. */
static int reg_token_ok(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > FCM_MAX_REG_TOKEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == ':' || ch == '.'))
            return 0;
    }
    return 1;
}

static int message_open(struct rt_buf *out, const char *token, const char *type)
{
    rt_buf_reset(out);
    int rv = rt_buf_append_str(out, "{\"message\":{\"token\":\"");
    rv = rv ? rv : rt_buf_append_str(out, token);
    rv = rv ? rv : rt_buf_appendf(out, "\",\"data\":{\"type\":\"%s\"", type);
    return rv;
}

static int message_close(struct rt_buf *out, const char *priority)
{
    int rv = rt_buf_appendf(out, "},\"android\":{\"priority\":\"%s\"}}}", priority);
    if (rv == 0 && out->len > FCM_MAX_PAYLOAD)
        rv = ENS_ETOOBIG;
    return rv;
}

static int build_new_mail(struct rt_buf *out, const struct fcm_new_mail *m, size_t subject_budget,
                          size_t sender_budget)
{
    static const char generic[] = "New message";
    int rv = message_open(out, m->token, "new-mail");
    rv = rv ? rv : rt_buf_append_str(out, ",\"title\":");
    if (m->preview == FCM_PREVIEW_NONE) {
        rv = rv ? rv : json_str_append(out, generic, FCM_MAX_PAYLOAD);
    } else {
        rv = rv ? rv : json_str_append(out, m->sender ? m->sender : "", sender_budget);
        rv = rv ? rv : rt_buf_append_str(out, ",\"body\":");
        if (m->preview == FCM_PREVIEW_FULL)
            rv = rv ? rv : json_str_append(out, m->subject ? m->subject : "", subject_budget);
        else
            rv = rv ? rv : json_str_append(out, generic, FCM_MAX_PAYLOAD);
    }
    if (m->badge_on)
        rv = rv ? rv : rt_buf_appendf(out, ",\"badge\":\"%u\"", (unsigned)m->badge);
    rv = rv ? rv : rt_buf_append_str(out, ",\"userId\":");
    rv = rv ? rv : json_str_append(out, m->user_id, FCM_MAX_PAYLOAD);
    rv = rv ? rv : message_close(out, "high");
    return rv;
}

int fcm_payload_new_mail(struct rt_buf *out, const struct fcm_new_mail *m)
{
    if (!out || !m || !m->user_id || !reg_token_ok(m->token) || out->max < FCM_MAX_PAYLOAD ||
        (unsigned)m->preview > FCM_PREVIEW_NONE)
        return ENS_EINVAL;
    if (build_new_mail(out, m, FCM_MAX_PAYLOAD, FCM_MAX_SENDER_BYTES) == 0)
        return 0;
    /* Too long: measure the message around an empty subject, then give the
     * subject exactly what is left. json_text_append never exceeds its budget. */
    struct fcm_new_mail empty = *m;
    empty.subject = "";
    int rv = build_new_mail(out, &empty, 0, FCM_MAX_SENDER_BYTES);
    if (rv == 0 && m->preview == FCM_PREVIEW_FULL)
        rv = build_new_mail(out, m, FCM_MAX_PAYLOAD - out->len, FCM_MAX_SENDER_BYTES);
    if (rv != 0)
        rt_buf_reset(out);
    return rv;
}

int fcm_payload_badge(struct rt_buf *out, const char *token, uint32_t badge)
{
    if (!out || !reg_token_ok(token))
        return ENS_EINVAL;
    int rv = message_open(out, token, "badge");
    rv = rv ? rv : rt_buf_appendf(out, ",\"badge\":\"%u\"", (unsigned)badge);
    rv = rv ? rv : message_close(out, "normal");
    if (rv != 0)
        rt_buf_reset(out);
    return rv;
}

int fcm_payload_checkin(struct rt_buf *out, const char *token)
{
    if (!out || !reg_token_ok(token))
        return ENS_EINVAL;
    int rv = message_open(out, token, "checkin");
    rv = rv ? rv : message_close(out, "normal");
    if (rv != 0)
        rt_buf_reset(out);
    return rv;
}

/* ---- error bodies and classification ---- */

#define FCM_ERROR_TYPE "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#define FCM_BAD_TOKEN  "not a valid FCM registration token"

/* Copies a 1..FCM_MAX_CODE [A-Z0-9_] string into |dst| (FCM_MAX_CODE + 1). */
static int code_copy(char *dst, const cJSON *v)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return 0;
    size_t n = strlen(v->valuestring);
    if (n == 0 || n > FCM_MAX_CODE)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v->valuestring[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    memcpy(dst, v->valuestring, n + 1);
    return 1;
}

int fcm_parse_error_body(struct span body, struct fcm_error *out)
{
    if (!out)
        return ENS_EINVAL;
    memset(out, 0, sizeof(*out));
    if (body.len == 0 || body.len > FCM_MAX_ERROR_BODY)
        return ENS_EPARSE;
    /* cJSON reads exactly body.len bytes and copies what it keeps, so the
     * strings below are its NUL-terminated copies, not the network bytes. */
    cJSON *root = cJSON_ParseWithLength((const char *)body.p, body.len);
    struct fcm_error e = {{0}, {0}, 0};
    int rv = ENS_EPARSE;
    if (!cJSON_IsObject(root))
        goto out;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (!cJSON_IsObject(err))
        goto out;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(err, "status");
    if (st && !code_copy(e.status, st))
        goto out;
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    if (msg) {
        if (!cJSON_IsString(msg) || !msg->valuestring)
            goto out;
        e.invalid_token = strstr(msg->valuestring, FCM_BAD_TOKEN) != NULL;
    }
    const cJSON *details = cJSON_GetObjectItemCaseSensitive(err, "details");
    if (details && !cJSON_IsArray(details))
        goto out;
    const cJSON *d;
    cJSON_ArrayForEach(d, details)
    {
        if (!cJSON_IsObject(d))
            continue;
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(d, "@type");
        if (!cJSON_IsString(type) || !type->valuestring ||
            strcmp(type->valuestring, FCM_ERROR_TYPE) != 0)
            continue; /* google.rpc.BadRequest and friends: not ours to read */
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(d, "errorCode");
        if (e.code[0] == 0 && code && !code_copy(e.code, code))
            goto out;
    }
    /* An error with neither a status nor an FCM code tells us nothing. */
    if (e.status[0] == 0 && e.code[0] == 0)
        goto out;
    *out = e;
    rv = 0;
out:
    cJSON_Delete(root);
    return rv;
}

/* The FCM rows of push.md 8's retry table. First match wins; a NULL code
 * matches any body. The code compared is errorCode, else error.status. */
static const struct {
    int status;
    const char *code;
    int need_invalid_token; /* the message must say the token is not valid */
    enum fcm_class cls;
} kClassTable[] = {
    {200, NULL, 0, FCM_OK},
    {404, "UNREGISTERED", 0, FCM_UNREGISTERED},
    {403, "SENDER_ID_MISMATCH", 0, FCM_UNREGISTERED},
    {400, "INVALID_ARGUMENT", 1, FCM_UNREGISTERED},
    {429, NULL, 0, FCM_RETRY}, /* QUOTA_EXCEEDED / RESOURCE_EXHAUSTED */
    {500, NULL, 0, FCM_RETRY}, /* INTERNAL */
    {503, NULL, 0, FCM_RETRY}, /* UNAVAILABLE */
};

enum fcm_class fcm_classify(int status, const struct fcm_error *e)
{
    const char *code = "";
    if (e)
        code = e->code[0] ? e->code : e->status;
    for (size_t i = 0; i < sizeof(kClassTable) / sizeof(kClassTable[0]); i++) {
        if (kClassTable[i].status != status)
            continue;
        if (kClassTable[i].code && strcmp(code, kClassTable[i].code) != 0)
            continue;
        if (kClassTable[i].need_invalid_token && !(e && e->invalid_token))
            continue;
        return kClassTable[i].cls;
    }
    if (status >= 500 && status < 600)
        return FCM_RETRY;
    return FCM_FATAL; /* 401 THIRD_PARTY_AUTH_ERROR, other 400s, 404 without a code... */
}

const char *fcm_class_name(enum fcm_class cls)
{
    static const char *const names[] = {"ok", "unregistered", "retry", "fatal"};
    return (unsigned)cls < 4 ? names[cls] : "?";
}

uint32_t fcm_parse_retry_after(struct span v)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t'))
        v.p++, v.len--;
    while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
        v.len--;
    size_t digits = 0;
    while (digits < v.len && v.p[digits] >= '0' && v.p[digits] <= '9')
        digits++;
    if (digits == 0 || digits != v.len)
        return 0; /* empty, an HTTP-date or junk */
    /* A long digit run still means "a lot": clamp rather than fail. */
    uint64_t n;
    if (digits > 9 || !span_get_decimal(&v, FCM_MAX_RETRY_AFTER_S * 10ULL, &n))
        return FCM_MAX_RETRY_AFTER_S;
    return n > FCM_MAX_RETRY_AFTER_S ? FCM_MAX_RETRY_AFTER_S : (uint32_t)n;
}

/* ---- the service account ---- */

struct fcm_account {
    EVP_PKEY *key;
    char project_id[FCM_MAX_PROJECT_ID + 1];
    char client_email[FCM_MAX_EMAIL + 1];
    char token_uri[FCM_MAX_URL + 1];
};

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

static int project_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FCM_MAX_PROJECT_ID)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

/* Printable ASCII without '"' or '\\': the e-mail goes into the claims as is. */
static int email_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FCM_MAX_EMAIL || !strchr(s, '@'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

static const char *json_get_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

struct fcm_account *fcm_account_load(const char *path, char *err, size_t errlen)
{
    if (!path) {
        set_err(err, errlen, "fcm: service_account_file is required");
        return NULL;
    }
    struct rt_buf file;
    rt_buf_init(&file, FCM_MAX_ACCOUNT_FILE);
    if (rt_file_read(path, &file) != 0) {
        rt_buf_cleanup_secret(&file);
        set_err(err, errlen, "fcm: cannot read the service account file");
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)file.data, file.len);
    rt_buf_cleanup_secret(&file);
    struct fcm_account *a = NULL;
    EVP_PKEY *key = NULL;
    const char *pid = json_get_str(root, "project_id");
    const char *email = json_get_str(root, "client_email");
    const char *pem = json_get_str(root, "private_key");
    const char *uri = json_get_str(root, "token_uri");
    if (!cJSON_IsObject(root) || !pid || !email || !pem) {
        set_err(err, errlen,
                "fcm: the service account file lacks project_id, client_email "
                "or private_key");
        goto out;
    }
    if (!project_id_ok(pid) || !email_ok(email) || (uri && strlen(uri) > FCM_MAX_URL)) {
        set_err(err, errlen,
                "fcm: bad project_id, client_email or token_uri in the service "
                "account file");
        goto out;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
    if (bio) {
        key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    if (!key || EVP_PKEY_id(key) != EVP_PKEY_RSA || EVP_PKEY_bits(key) < 2048 ||
        EVP_PKEY_bits(key) > 4096) {
        set_err(err, errlen, "fcm: private_key is not a PEM RSA key of 2048 to 4096 bits");
        goto out;
    }
    a = ens_calloc(1, sizeof(*a));
    a->key = key;
    key = NULL;
    memcpy(a->project_id, pid, strlen(pid) + 1);
    memcpy(a->client_email, email, strlen(email) + 1);
    if (uri)
        memcpy(a->token_uri, uri, strlen(uri) + 1);
out:
    EVP_PKEY_free(key);
    /* cJSON_Delete does not wipe: clear the PEM copy it holds first. */
    if (pem)
        ens_wipe((void *)pem, strlen(pem));
    cJSON_Delete(root);
    return a;
}

void fcm_account_free(struct fcm_account *a)
{
    if (!a)
        return;
    EVP_PKEY_free(a->key);
    ens_wipe(a, sizeof(*a));
    ens_free(a);
}

const char *fcm_account_get0_project_id(const struct fcm_account *a)
{
    return a->project_id;
}

const char *fcm_account_get0_token_uri(const struct fcm_account *a)
{
    return a->token_uri;
}

int fcm_account_assertion(const struct fcm_account *a, const char *aud, uint64_t now,
                          struct rt_buf *out)
{
    if (!a || !aud || !out)
        return ENS_EINVAL;
    rt_buf_reset(out);
    struct rt_buf part;
    rt_buf_init(&part, FCM_MAX_ASSERTION);
    uint8_t sig[512]; /* RSA-4096 */
    size_t siglen = sizeof(sig);
    EVP_MD_CTX md;
    EVP_MD_CTX_init(&md);
    int rv = ENS_ETOOBIG;
    if (b64_encode(out, span_cstr("{\"alg\":\"RS256\",\"typ\":\"JWT\"}"), 1) ||
        rt_buf_append_str(out, "."))
        goto out;
    /* client_email was checked to need no escaping; the URL is escaped. */
    if (rt_buf_appendf(&part, "{\"iss\":\"%s\",\"scope\":\"%s\",\"aud\":", a->client_email,
                       FCM_OAUTH_SCOPE) ||
        json_str_append(&part, aud, FCM_MAX_URL) ||
        rt_buf_appendf(&part, ",\"iat\":%llu,\"exp\":%llu}", (unsigned long long)now,
                       (unsigned long long)(now + FCM_ASSERTION_LIFE_S)) ||
        b64_encode(out, rt_buf_span(&part), 1))
        goto out;
    rv = ENS_ECRYPTO;
    /* RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 3.3): the default padding of an
     * RSA EVP_PKEY. */
    if (!EVP_DigestSignInit(&md, NULL, EVP_sha256(), NULL, a->key) ||
        !EVP_DigestSign(&md, sig, &siglen, out->data, out->len))
        goto out;
    rv = ENS_ETOOBIG;
    if (rt_buf_append_str(out, ".") || b64_encode(out, span_make(sig, siglen), 1))
        goto out;
    rv = 0;
out:
    EVP_MD_CTX_cleanup(&md);
    rt_buf_cleanup(&part);
    if (rv != 0)
        rt_buf_reset(out);
    return rv;
}

static int access_token_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FCM_MAX_ACCESS_TOKEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '~' || ch == '+' || ch == '/' || ch == '=' ||
              ch == '-'))
            return 0;
    }
    return 1;
}

int fcm_parse_token_response(struct span body, struct rt_buf *token, uint32_t *expires_in_s)
{
    if (!token || !expires_in_s)
        return ENS_EINVAL;
    rt_buf_reset(token);
    *expires_in_s = 0;
    if (body.len == 0 || body.len > FCM_MAX_TOKEN_RESPONSE)
        return ENS_EPARSE;
    cJSON *root = cJSON_ParseWithLength((const char *)body.p, body.len);
    int rv = ENS_EPARSE;
    const char *t = json_get_str(root, "access_token");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "token_type");
    if (!cJSON_IsObject(root) || !t || !access_token_ok(t) || !cJSON_IsNumber(exp) ||
        exp->valuedouble < 1 || exp->valuedouble > 86400)
        goto out;
    if (type && (!cJSON_IsString(type) || !type->valuestring ||
                 !span_eq_nocase(span_cstr(type->valuestring), "Bearer")))
        goto out;
    if (rt_buf_append_str(token, t) != 0)
        goto out;
    *expires_in_s = (uint32_t)exp->valuedouble;
    rv = 0;
out:
    if (t)
        ens_wipe((void *)t, strlen(t));
    cJSON_Delete(root);
    return rv;
}

/* ---- the client ----
 *
 * The access token is a small state machine (house rule 14):
 *   TOKEN_NONE --push--> TOKEN_FETCHING --200--> TOKEN_VALID --50 min or 401--> TOKEN_NONE
 *                                       --fail--> TOKEN_NONE (parked pushes fail)
 * Pushes that arrive while a token is being fetched wait in c->waiting. */

enum fcm_token_state { TOKEN_NONE, TOKEN_FETCHING, TOKEN_VALID };

struct fcm_client {
    uv_loop_t *loop;
    struct rt_tls_ctx *tls_h2, *tls_h1;
    struct fcm_account *acct;
    struct h2_client *h2;
    char *token_url;
    char path[sizeof("/v1/projects//messages:send") + FCM_MAX_PROJECT_ID];
    enum fcm_token_state state;
    struct rt_buf bearer;     /* "Bearer <access token>"; a secret */
    uint64_t refresh_at_ms;   /* uv_now() after which the token is re-fetched */
    struct fcm_send *waiting; /* FIFO of pushes parked for a token */
    struct fcm_send **waiting_tail;
    size_t nwaiting;
    uint64_t fetches;
    int alive; /* h2 client and token request not yet finished, while freeing */
    int freeing;
    uint64_t (*clock)(void *ud);
    void *clock_ud;
};

/* One push in flight: everything needed to resend it once. */
struct fcm_send {
    struct fcm_client *c;
    struct fcm_send *next;
    uint8_t *payload;
    size_t payload_len;
    uint64_t deadline_ms;
    char *bearer; /* the authorization value as sent; a secret */
    int resent;
    fcm_result_cb cb;
    void *ud;
};

static uint64_t wall_clock(void *ud)
{
    return (uint64_t)time(NULL);
}

static void send_free(struct fcm_send *s)
{
    ens_free(s->payload);
    ens_free_secret(s->bearer);
    ens_free(s);
}

/* Ends |s| without an answer from FCM. */
static void send_fail(struct fcm_send *s, int err, enum fcm_class cls)
{
    struct fcm_result res = {
        .err = err, .error_status = "", .error_code = "", .name = "", .cls = cls};
    RT_LOG_I("fcm.result", "status=0 class=%s err=%s", fcm_class_name(cls), ens_err_name(err));
    s->cb(&res, s->ud);
    send_free(s);
}

static void on_response(int err, const struct h2_response *resp, void *ud);

/* Sends |s| with the current token (TOKEN_VALID). */
static int send_issue(struct fcm_send *s)
{
    struct fcm_client *c = s->c;
    ens_free_secret(s->bearer);
    s->bearer = ens_strdup(rt_buf_cstr(&c->bearer));
    /* authorization is a secret and must never enter an HPACK table (push.md 8). */
    struct h2_header hdrs[] = {
        {"authorization", s->bearer, 1},
        {"content-type", "application/json; charset=UTF-8", 0},
    };
    return h2_client_request(c->h2, "POST", c->path, hdrs, sizeof(hdrs) / sizeof(hdrs[0]),
                             s->payload, s->payload_len, s->deadline_ms, on_response, s);
}

static int fetch_start(struct fcm_client *c);

/* Sends |s| now if the token is fresh, else parks it and makes sure a token
 * request is under way. On an error return |s| is neither sent nor parked. */
static int send_start(struct fcm_send *s)
{
    struct fcm_client *c = s->c;
    if (c->state == TOKEN_VALID && uv_now(c->loop) >= c->refresh_at_ms) {
        c->state = TOKEN_NONE;
        rt_buf_cleanup_secret(&c->bearer);
        rt_buf_init(&c->bearer, FCM_MAX_ACCESS_TOKEN + sizeof("Bearer "));
    }
    if (c->state == TOKEN_VALID)
        return send_issue(s);
    if (c->nwaiting >= FCM_MAX_WAITING)
        return ENS_EFULL;
    if (c->state == TOKEN_NONE) {
        int rv = fetch_start(c);
        if (rv != 0)
            return rv;
    }
    s->next = NULL;
    *c->waiting_tail = s;
    c->waiting_tail = &s->next;
    c->nwaiting++;
    return 0;
}

static const char *find_header(const struct h2_response *resp, const char *name)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

/* Reads the "name" of a 200 answer into |name| (FCM_MAX_NAME + 1), else "". */
static void parse_name(struct span body, char *name)
{
    name[0] = 0;
    if (body.len == 0 || body.len > FCM_MAX_ERROR_BODY)
        return;
    cJSON *root = cJSON_ParseWithLength((const char *)body.p, body.len);
    const char *n = json_get_str(root, "name");
    if (n && strlen(n) <= FCM_MAX_NAME) {
        size_t i = 0;
        for (; n[i] && n[i] > 0x20 && n[i] < 0x7f; i++)
            name[i] = n[i];
        name[n[i] ? 0 : i] = 0;
    }
    cJSON_Delete(root);
}

static void on_response(int err, const struct h2_response *resp, void *ud)
{
    struct fcm_send *s = ud;
    struct fcm_client *c = s->c;
    struct fcm_error e = {{0}, {0}, 0};
    char name[FCM_MAX_NAME + 1] = "";
    struct fcm_result res = {
        .err = err, .error_status = e.status, .error_code = e.code, .name = name};
    if (err != 0) {
        /* Connection loss, timeout, cancel: FCM may not have the message; the
         * caller retries with back-off (push.md 8). */
        res.cls = FCM_RETRY;
    } else {
        res.status = resp->status;
        if (resp->status == 200)
            parse_name(resp->body, name);
        else
            fcm_parse_error_body(resp->body, &e);
        const char *ra = find_header(resp, "retry-after");
        if (ra)
            res.retry_after_s = fcm_parse_retry_after(span_cstr(ra));
        res.cls = fcm_classify(resp->status, &e);
        if (resp->status == 401 && strcmp(e.code, "THIRD_PARTY_AUTH_ERROR") != 0 && !c->freeing) {
            if (!s->resent) {
                /* Our access token was refused (expired or revoked early):
                 * drop it unless a newer one already replaced it, then resend
                 * once with a fresh one (push.md 8). */
                s->resent = 1;
                if (c->state == TOKEN_VALID && strcmp(s->bearer, rt_buf_cstr(&c->bearer)) == 0) {
                    c->state = TOKEN_NONE;
                    rt_buf_cleanup_secret(&c->bearer);
                    rt_buf_init(&c->bearer, FCM_MAX_ACCESS_TOKEN + sizeof("Bearer "));
                }
                RT_LOG_W("fcm.token_rejected", "action=refresh_resend");
                int rv = send_start(s);
                if (rv == 0)
                    return;
                res.err = rv; /* could not even start: try again later */
                res.cls = FCM_RETRY;
            } else {
                /* Refused again with a brand-new token: credentials or clock. */
                res.cls = FCM_FATAL;
            }
        }
    }
    if (res.cls != FCM_OK)
        RT_LOG_I("fcm.result", "status=%d error_status=%s error_code=%s class=%s err=%s",
                 res.status, e.status, e.code, fcm_class_name(res.cls),
                 res.err ? ens_err_name(res.err) : "none");
    s->cb(&res, s->ud);
    send_free(s);
}

int fcm_send(struct fcm_client *c, const struct fcm_push *p, fcm_result_cb cb, void *ud)
{
    if (!c || !p || !cb || !p->payload || p->payload_len == 0 || p->payload_len > FCM_MAX_PAYLOAD)
        return ENS_EINVAL;
    if (c->freeing)
        return ENS_ECANCELED;
    struct fcm_send *s = ens_calloc(1, sizeof(*s));
    s->c = c;
    s->payload = ens_malloc(p->payload_len);
    memcpy(s->payload, p->payload, p->payload_len);
    s->payload_len = p->payload_len;
    s->deadline_ms = p->deadline_ms ? p->deadline_ms : uv_now(c->loop) + H2_STREAM_TIMEOUT_MS;
    s->cb = cb;
    s->ud = ud;
    int rv = send_start(s);
    if (rv != 0)
        send_free(s);
    return rv;
}

/* ---- the token request ---- */

static void client_release(struct fcm_client *c);

/* Hands every parked push to FCM (err 0) or fails it. The list is detached
 * first: a callback may call fcm_send, which may park new pushes. */
static void waiting_flush(struct fcm_client *c, int err, enum fcm_class cls)
{
    struct fcm_send *list = c->waiting;
    c->waiting = NULL;
    c->waiting_tail = &c->waiting;
    c->nwaiting = 0;
    int rv;
    while (list) {
        struct fcm_send *s = list;
        list = s->next;
        s->next = NULL;
        if (err != 0)
            send_fail(s, err, cls);
        else if ((rv = send_issue(s)) != 0)
            send_fail(s, rv, FCM_RETRY); /* the h2 queue is full: transient */
    }
}

static void on_token(int err, const struct h1_response *resp, void *ud)
{
    struct fcm_client *c = ud;
    c->alive--;
    if (c->freeing) {
        /* fcm_client_free already failed the parked pushes. */
        if (c->alive == 0)
            client_release(c);
        return;
    }
    enum fcm_class cls = FCM_RETRY;
    int rv = ENS_EAUTH;
    if (err != 0) {
        RT_LOG_W("fcm.token_failed", "err=%s", ens_err_name(err));
    } else if (resp->status != 200) {
        /* 400 invalid_grant / 401 unauthorized_client: the key, e-mail or
         * clock is wrong and retrying will not help; 5xx and 429 may pass. */
        if (resp->status >= 400 && resp->status < 500 && resp->status != 429)
            cls = FCM_FATAL;
        RT_LOG_E("fcm.token_failed", "status=%d", resp->status);
    } else {
        struct rt_buf tok;
        rt_buf_init(&tok, FCM_MAX_ACCESS_TOKEN);
        uint32_t expires_in;
        if (fcm_parse_token_response(resp->body, &tok, &expires_in) == 0) {
            rt_buf_reset(&c->bearer);
            if (rt_buf_append_str(&c->bearer, "Bearer ") == 0 &&
                rt_buf_append(&c->bearer, tok.data, tok.len) == 0) {
                uint64_t life = FCM_TOKEN_REFRESH_S;
                if (expires_in > FCM_TOKEN_MARGIN_S && expires_in - FCM_TOKEN_MARGIN_S < life)
                    life = expires_in - FCM_TOKEN_MARGIN_S;
                else if (expires_in <= FCM_TOKEN_MARGIN_S)
                    life = expires_in / 2;
                c->refresh_at_ms = uv_now(c->loop) + life * 1000;
                c->state = TOKEN_VALID;
                c->fetches++;
                rv = 0;
                RT_LOG_I("fcm.token", "expires_in=%u refresh_in=%llu", (unsigned)expires_in,
                         (unsigned long long)life);
            }
        } else {
            RT_LOG_E("fcm.token_failed", "status=200 reason=malformed_answer");
        }
        rt_buf_cleanup_secret(&tok);
    }
    if (rv != 0)
        c->state = TOKEN_NONE;
    waiting_flush(c, rv, cls);
}

static int fetch_start(struct fcm_client *c)
{
    struct rt_buf assertion, form;
    rt_buf_init(&assertion, FCM_MAX_ASSERTION);
    rt_buf_init(&form, FCM_MAX_ASSERTION + 128);
    int rv = fcm_account_assertion(c->acct, c->token_url, c->clock(c->clock_ud), &assertion);
    if (rv == 0)
        rv = rt_buf_append_str(&form, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3A"
                                      "jwt-bearer&assertion=");
    /* base64url and '.' need no form encoding. */
    if (rv == 0)
        rv = rt_buf_append(&form, assertion.data, assertion.len);
    if (rv == 0) {
        static const struct h1_header hdrs[] = {
            {"Content-Type", "application/x-www-form-urlencoded"},
            {"Accept", "application/json"},
        };
        struct h1_client_req req = {
            .method = "POST",
            .url = c->token_url,
            .headers = hdrs,
            .nheaders = sizeof(hdrs) / sizeof(hdrs[0]),
            .body = form.data,
            .body_len = form.len,
            .deadline_ms = uv_now(c->loop) + FCM_OAUTH_TIMEOUT_MS,
            .max_response = FCM_MAX_TOKEN_RESPONSE,
            .tls = c->tls_h1,
        };
        rv = h1_client_request(c->loop, &req, on_token, c);
    }
    rt_buf_cleanup_secret(&assertion);
    rt_buf_cleanup_secret(&form);
    if (rv == 0) {
        c->state = TOKEN_FETCHING;
        c->alive++;
    } else {
        RT_LOG_E("fcm.token_failed", "err=%s phase=request", ens_err_name(rv));
    }
    return rv;
}

/* ---- lifecycle ---- */

struct fcm_client *fcm_client_new(uv_loop_t *loop, const struct fcm_opts *o, char *err,
                                  size_t errlen)
{
    char dummy[1];
    if (!err || !errlen)
        err = dummy, errlen = sizeof(dummy);
    err[0] = 0;
    if (!loop || !o || !o->service_account_file) {
        snprintf(err, errlen, "fcm: service_account_file is required");
        return NULL;
    }
    struct fcm_client *c = ens_calloc(1, sizeof(*c));
    c->loop = loop;
    c->clock = wall_clock;
    c->waiting_tail = &c->waiting;
    rt_buf_init(&c->bearer, FCM_MAX_ACCESS_TOKEN + sizeof("Bearer "));
    c->acct = fcm_account_load(o->service_account_file, err, errlen);
    if (!c->acct)
        goto fail;
    const char *token_url = o->token_url                 ? o->token_url
                            : c->acct->token_uri[0] != 0 ? c->acct->token_uri
                                                         : FCM_DEFAULT_TOKEN_URL;
    struct rt_url u;
    if (strlen(token_url) > FCM_MAX_URL || rt_url_parse(token_url, &u) != 0 ||
        strcmp(u.scheme, "https") != 0) {
        snprintf(err, errlen, "fcm: bad token_url (https URL expected)");
        goto fail;
    }
    c->token_url = ens_strdup(token_url);
    const char *url = o->url ? o->url : FCM_DEFAULT_URL;
    if (rt_url_parse(url, &u) != 0 || strcmp(u.scheme, "https") != 0 || strcmp(u.path, "/") != 0) {
        snprintf(err, errlen, "fcm: bad url %s (https://host[:port] expected)", url);
        goto fail;
    }
    snprintf(c->path, sizeof(c->path), "/v1/projects/%s/messages:send", c->acct->project_id);
    static const char *const alpn_h2[] = {"h2", NULL};
    static const char *const alpn_h1[] = {"http/1.1", NULL};
    struct rt_tls_client_opts t2 = {.ca_file = o->ca_file, .alpn = alpn_h2};
    struct rt_tls_client_opts t1 = {.ca_file = o->ca_file, .alpn = alpn_h1};
    c->tls_h2 = rt_tls_ctx_client_new(&t2, err, errlen);
    if (!c->tls_h2)
        goto fail;
    c->tls_h1 = rt_tls_ctx_client_new(&t1, err, errlen);
    if (!c->tls_h1)
        goto fail;
    c->h2 = h2_client_new(loop, u.host, u.port, c->tls_h2);
    if (!c->h2) {
        snprintf(err, errlen, "fcm: cannot make the HTTP/2 client");
        goto fail;
    }
    return c;
fail:
    fcm_client_free(c);
    return NULL;
}

static void client_release(struct fcm_client *c)
{
    rt_tls_ctx_free(c->tls_h2);
    rt_tls_ctx_free(c->tls_h1);
    fcm_account_free(c->acct);
    rt_buf_cleanup_secret(&c->bearer);
    ens_free(c->token_url);
    ens_free(c);
}

/* The TLS contexts must outlive every stream made with them (net.h): release
 * them after the h2 client and any token request are gone. */
static void on_h2_freed(void *ud)
{
    struct fcm_client *c = ud;
    if (--c->alive == 0)
        client_release(c);
}

void fcm_client_free(struct fcm_client *c)
{
    if (!c || c->freeing)
        return;
    c->freeing = 1;
    /* alive already counts a token request in flight (fetch_start). */
    c->alive++; /* held by this function until the end */
    waiting_flush(c, ENS_ECANCELED, FCM_RETRY);
    struct h2_client *h2 = c->h2;
    c->h2 = NULL;
    if (h2) {
        c->alive++;
        h2_client_on_freed(h2, on_h2_freed, c);
        /* Cancels the requests in flight, which frees each fcm_send. */
        h2_client_free(h2);
    }
    if (--c->alive == 0)
        client_release(c);
}

uint64_t fcm_client_token_fetches(const struct fcm_client *c)
{
    return c->fetches;
}
