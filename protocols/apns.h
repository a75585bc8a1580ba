/* Apple Push Notification service: payloads (API.md section 3) and a token-auth
 * HTTP/2 client (push.md sections 1 and 8).
 *
 * Threading: an apns_client and its callbacks belong to its loop's thread. The
 * payload builders and parsers are pure and thread-safe. */
#ifndef ENS_PROTOCOLS_APNS_H
#define ENS_PROTOCOLS_APNS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/buf.h"
#include "runtime/span.h"

#define APNS_DEFAULT_URL         "https://api.push.apple.com"
#define APNS_DEFAULT_SANDBOX_URL "https://api.sandbox.push.apple.com"
#define APNS_MAX_REASON          64   /* longest reason string we keep */
#define APNS_MAX_ERROR_BODY      4096 /* error bodies are ~60 bytes; more is not APNs */
#define APNS_MAX_TOKEN_HEX       200  /* tokens are 64 hex today; Apple says don't assume */
#define APNS_MAX_SENDER_BYTES    256  /* sender name budget inside the payload, escaped */

/* ---- payloads ---- */

enum apns_preview { APNS_PREVIEW_FULL, APNS_PREVIEW_SENDER, APNS_PREVIEW_NONE };

struct apns_new_mail {
    const char *user_id; /* thread-id and ens.userId */
    const char *sender;  /* display name (or address) */
    const char *subject;
    enum apns_preview preview;
    int badge_on; /* include "badge" */
    uint32_t badge;
};

/* apns_payload_new_mail resets |out| (whose cap must be at least
 * APNS_MAX_PAYLOAD) and writes the new-mail alert of API.md section 3 to it.
 * The text is escaped for JSON, invalid UTF-8 becomes U+FFFD, CR/LF/TAB become
 * spaces, and the subject (then the sender) is cut on a code-point boundary with
 * a trailing "…" so that the whole payload fits APNS_MAX_PAYLOAD.
 * 0, ENS_EINVAL, or ENS_ETOOBIG if even an empty subject does not fit. */
int apns_payload_new_mail(struct rt_buf *out, const struct apns_new_mail *m);

/* apns_payload_badge writes {"aps":{"badge":N}}; 0 or ENS_ETOOBIG. */
int apns_payload_badge(struct rt_buf *out, uint32_t badge);

/* apns_payload_checkin writes {"aps":{"content-available":1},"ens":{"type":"checkin"}}. */
int apns_payload_checkin(struct rt_buf *out);

/* ---- results ---- */

/* What the caller should do with the device and the push (push.md 8). */
enum apns_class {
    APNS_OK,           /* delivered to APNs */
    APNS_UNREGISTERED, /* the token is dead for this topic/environment: remove the device */
    APNS_RETRY,        /* transient: retry later with back-off (same apns-id) */
    APNS_FATAL,        /* our bug or configuration: do not retry, alarm */
};

struct apns_result {
    int err;               /* 0 when APNs answered; else the transport error */
    int status;            /* HTTP status, 0 without an answer */
    const char *reason;    /* APNs reason ("" when none); borrowed */
    const char *apns_id;   /* the push's apns-id; borrowed */
    uint64_t timestamp_ms; /* 410 only: when the token became invalid; else 0 */
    enum apns_class cls;
};

/* apns_parse_error_body reads APNs's JSON error body {"reason":"...",
 * "timestamp":N}. |reason| (capacity |cap| >= 1) receives the reason, which must
 * be 1..APNS_MAX_REASON ASCII letters/digits; |*timestamp_ms| gets the timestamp
 * or 0. 0 on success, ENS_EPARSE for anything else (then |reason| is ""). */
int apns_parse_error_body(struct span body, char *reason, size_t cap, uint64_t *timestamp_ms);

/* apns_classify maps a status and reason (may be "" or NULL) to a class. */
enum apns_class apns_classify(int status, const char *reason);

/* apns_class_name returns "ok", "unregistered", "retry" or "fatal". */
const char *apns_class_name(enum apns_class cls);

/* ---- the client ---- */

struct apns_opts {
    const char *url;         /* production origin; NULL = APNS_DEFAULT_URL */
    const char *sandbox_url; /* NULL = APNS_DEFAULT_SANDBOX_URL */
    const char *team_id;
    const char *key_id;
    const char *key_file; /* .p8 */
    const char *ca_file;  /* NULL = system store */
};

struct apns_push {
    const char *device_token_hex;
    const char *topic;       /* bundle id */
    const char *push_type;   /* "alert", "background", ... */
    int priority;            /* 10, 5 or 1 */
    const char *environment; /* "production" or "sandbox" */
    const uint8_t *payload;
    size_t payload_len;
    const char *apns_id;  /* optional (apns_id_new): the same on every try of one push */
    uint64_t deadline_ms; /* absolute (uv_now); 0 = now + H2_STREAM_TIMEOUT_MS */
    /* Optional: sent as apns-collapse-id, at most APNS_MAX_COLLAPSE_ID bytes.
     * The device shows notifications that share it as one, so a push tried
     * again after a try whose fate is unknown (reset past its deadline) never
     * shows twice. */
    const char *collapse_id;
    uint64_t expiration_s; /* optional: apns-expiration, UNIX seconds; 0 = not sent */
};

#define APNS_ID_CHARS        36 /* canonical lowercase UUID */
#define APNS_MAX_COLLAPSE_ID 64 /* Apple's limit, bytes */

/* apns_id_new writes a fresh random apns-id (a version 4 UUID) and its NUL. */
void apns_id_new(char out[APNS_ID_CHARS + 1]);

struct apns_client;

/* Result callback; |r| and its strings are borrowed for the call. */
typedef void (*apns_result_cb)(const struct apns_result *r, void *ud);

/* apns_client_new loads the key, builds the TLS context (ALPN h2) and one
 * HTTP/2 client per environment; no I/O happens before the first push. NULL on
 * failure with a reason in |err| (capacity |errlen|). */
struct apns_client *apns_client_new(uv_loop_t *loop, const struct apns_opts *o, char *err,
                                    size_t errlen);

/* apns_client_free cancels outstanding pushes (their callbacks run with err
 * ENS_ECANCELED and class APNS_RETRY) and releases everything once the loop has
 * closed the handles. Not from inside one of its callbacks. NULL is fine. */
void apns_client_free(struct apns_client *c);

/* apns_send sends one push. Everything in |p| is copied.
 * Async contract: on an error return (ENS_EINVAL for a malformed push,
 * ENS_ECRYPTO if no token can be signed, ENS_EFULL when the queue is full)
 * |cb| never runs; on 0 it runs exactly once, never before apns_send returns.
 * A 403 ExpiredProviderToken is handled inside: re-sign, reconnect, resend once. */
int apns_send(struct apns_client *c, const struct apns_push *p, apns_result_cb cb, void *ud);

#endif
