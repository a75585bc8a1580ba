#include "actors/ews.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "protocols/h1_client.h"
#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/b64.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/net.h"

#define EWS_MAX_AUTH_HEADER (16 * 1024) /* OAuth access tokens run to several KB */
#define EWS_USER_AGENT      "MailNotificationService/" ENS_VERSION " (ens)"

struct ews_call {
    ews_cb cb;
    void *ud;
    struct ens_app *app;
    enum ens_ews_op op;
};

int ews_url_check(const struct ens_app *app, const char *url, char *why, size_t whylen)
{
    struct rt_url u;
    if (rt_url_parse(url, &u) != 0) {
        snprintf(why, whylen, "ewsUrl is not an absolute http(s) URL");
        return ENS_EINVAL;
    }
    if (!app->cfg->ews.allow_private_networks && rt_host_is_private_literal(u.host)) {
        snprintf(why, whylen, "ewsUrl points at a private or loopback address");
        return ENS_EINVAL;
    }
    return 0;
}

/* auth_header builds the Authorization value from the sealed credentials into
 * |out| (secret). 0 or ENS_EINVAL for credentials we cannot use. */
static int auth_header(struct span creds, struct rt_buf *out)
{
    cJSON *j = cJSON_ParseWithLength((const char *)creds.p, creds.len);
    if (j == NULL)
        return ENS_EINVAL;
    int rc = ENS_EINVAL;
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    if (type && strcmp(type, "basic") == 0) {
        const char *user = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "username"));
        const char *pass = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "password"));
        if (user && pass) {
            struct rt_buf raw;
            rt_buf_init_secret(&raw, EWS_MAX_AUTH_HEADER);
            rc = rt_buf_append_str(&raw, user);
            if (rc == 0)
                rc = rt_buf_append(&raw, ":", 1);
            if (rc == 0)
                rc = rt_buf_append_str(&raw, pass);
            if (rc == 0)
                rc = rt_buf_append_str(out, "Basic ");
            if (rc == 0)
                rc = b64_encode(out, rt_buf_span(&raw), 0);
            rt_buf_cleanup_secret(&raw);
        }
    } else if (type && strcmp(type, "oauth") == 0) {
        const char *tok = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "accessToken"));
        if (tok) {
            rc = rt_buf_append_str(out, "Bearer ");
            if (rc == 0)
                rc = rt_buf_append_str(out, tok);
        }
    }
    /* cJSON keeps its own copies of the secrets: wipe them before freeing. */
    for (cJSON *it = j->child; it; it = it->next) {
        if (cJSON_IsString(it) && it->valuestring)
            ens_wipe(it->valuestring, strlen(it->valuestring));
    }
    cJSON_Delete(j);
    return rc;
}

static void ews_done(int err, const struct h1_response *resp, void *ud)
{
    struct ews_call *c = ud;
    struct ews_result r = {0};
    if (err) {
        r.err = err;
        r.api_error = "ews_unreachable";
    } else {
        r.http_status = resp->status;
        r.body = resp->body;
        if (resp->status == 401 || resp->status == 403) {
            r.err = ENS_EAUTH;
            r.api_error = "ews_auth_failed";
        } else if (resp->status != 200 && resp->status != 500) {
            /* EWS sends SOAP faults (ErrorServerBusy...) with 500: let the caller parse them */
            r.err = ENS_EREMOTE;
            r.api_error = "ews_error";
        }
    }
    enum ens_ews_outcome outcome = ENS_EWS_OK;
    if (r.err == ENS_EAUTH)
        outcome = ENS_EWS_AUTH_FAILED;
    else if (err)
        outcome = ENS_EWS_UNREACHABLE;
    else if (r.err || resp->status != 200)
        outcome = ENS_EWS_ERROR;
    atomic_fetch_add_explicit(&c->app->counters.ews_calls[c->op][outcome], 1, memory_order_relaxed);
    c->cb(&r, c->ud);
    ens_free(c);
}

int ews_call(uv_loop_t *loop, struct ens_app *app, enum ens_ews_op op, const char *url,
             const char *mailbox, struct span creds, const struct rt_buf *soap, ews_cb cb, void *ud)
{
    struct rt_buf auth;
    rt_buf_init_secret(&auth, EWS_MAX_AUTH_HEADER);
    int rc = auth_header(creds, &auth);
    if (rc) {
        rt_buf_cleanup_secret(&auth);
        return rc;
    }
    /* X-AnchorMailbox routes the request to the mailbox's own server, and
     * with Exchange Online it is what the token is checked against. */
    const struct h1_header hdrs[] = {
        {"Content-Type", "text/xml; charset=utf-8"},
        {"Accept", "text/xml"},
        {"User-Agent", EWS_USER_AGENT},
        {"Authorization", rt_buf_cstr(&auth)},
        {"X-AnchorMailbox", mailbox},
    };
    struct ews_call *c = ens_calloc(1, sizeof(*c));
    c->cb = cb;
    c->ud = ud;
    c->app = app;
    c->op = op;
    struct h1_client_req req = {
        .method = "POST",
        .url = url,
        .headers = hdrs,
        .nheaders = sizeof(hdrs) / sizeof(hdrs[0]) - (mailbox == NULL),
        .body = soap->data,
        .body_len = soap->len,
        .deadline_ms = uv_now(loop) + (uint64_t)app->cfg->ews.timeout_ms,
        .max_response = H1_CLIENT_MAX_RESPONSE,
        .tls = app->ews_tls,
        /* a public name may still resolve to a private address */
        .deny_private = !app->cfg->ews.allow_private_networks,
    };
    rc = h1_client_request(loop, &req, ews_done, c);
    /* The request is serialized by now; our copy of the secret goes. */
    rt_buf_cleanup_secret(&auth);
    if (rc)
        ens_free(c);
    return rc;
}
