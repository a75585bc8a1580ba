/* One EWS SOAP call toward a mailbox's Exchange server, with its credentials.
 *
 * The credentials arrive as the JSON object the device sealed ({"type":"basic",
 * "username","password"} or {"type":"oauth","accessToken"}), are turned into an
 * Authorization header for this one request, and that header is wiped as soon
 * as the request is queued. Failures map onto API.md's error codes. */
#ifndef ENS_ACTORS_EWS_H
#define ENS_ACTORS_EWS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "actors/app.h"
#include "runtime/buf.h"
#include "runtime/span.h"

struct ews_result {
    int err;         /* 0: HTTP 200 with a body; else ENS_EAUTH, ENS_EREMOTE, or a transport code */
    int http_status; /* 0 without an answer */
    const char *api_error; /* "ews_auth_failed", "ews_unreachable", "ews_error" when err != 0 */
    struct span body;      /* the SOAP answer (borrowed for the callback) */
};

typedef void (*ews_cb)(const struct ews_result *r, void *ud);

/* ews_url_check reports whether |url| may be called: https or http, and not a
 * loopback, private or link-local literal address unless
 * ews.allow_private_networks. 0, or ENS_EINVAL with a reason in |why|. */
int ews_url_check(const struct ens_app *app, const char *url, char *why, size_t whylen);

/* ews_call POSTs |soap| (operation |op|, for the metrics) to |url| with |creds| (borrowed, secret)
 * on |loop|, for |mailbox| (sent as X-AnchorMailbox; NULL sends none). The async contract holds:
 * an error return means |cb| never runs. */
int ews_call(uv_loop_t *loop, struct ens_app *app, enum ens_ews_op op, const char *url,
             const char *mailbox, struct span creds, const struct rt_buf *soap, ews_cb cb,
             void *ud);

#endif
