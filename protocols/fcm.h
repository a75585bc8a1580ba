/* Firebase Cloud Messaging HTTP v1: data-message payloads (API.md section 3),
 * the service-account OAuth2 flow (push.md 2.1 and 8) and an HTTP/2 client
 * (push.md 2), shaped like protocols/apns.h so the push actor drives both alike.
 *
 * Secrets: the service account's private key, the signed assertions and the
 * access tokens are wiped when released and never logged.
 *
 * Threading: an fcm_client and its callbacks belong to its loop's thread. The
 * payload builders, parsers and fcm_account functions are pure and
 * thread-safe (an fcm_account is read-only after loading). */
#ifndef ENS_PROTOCOLS_FCM_H
#define ENS_PROTOCOLS_FCM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "runtime/buf.h"
#include "runtime/span.h"

#define FCM_DEFAULT_URL       "https://fcm.googleapis.com"
#define FCM_DEFAULT_TOKEN_URL "https://oauth2.googleapis.com/token"
#define FCM_OAUTH_SCOPE       "https://www.googleapis.com/auth/firebase.messaging"

#define FCM_MAX_CODE           64          /* longest error.status / errorCode we keep */
#define FCM_MAX_ERROR_BODY     (16 * 1024) /* Google error bodies are a few hundred bytes */
#define FCM_MAX_NAME           256         /* "projects/<id>/messages/<id>" of a 200 */
#define FCM_MAX_REG_TOKEN      1024        /* registration tokens are ~160 bytes today */
#define FCM_MAX_SENDER_BYTES   256         /* sender name budget inside the payload, escaped */
#define FCM_MAX_RETRY_AFTER_S  86400       /* a larger Retry-After is clamped */
#define FCM_MAX_ACCOUNT_FILE   (64 * 1024) /* a service-account JSON is ~2.4 KB */
#define FCM_MAX_PROJECT_ID     128
#define FCM_MAX_EMAIL          256
#define FCM_MAX_URL            1024
#define FCM_MAX_ASSERTION      4096 /* RS256 JWT with a 4096-bit key: ~1.2 KB */
#define FCM_MAX_ACCESS_TOKEN   2048
#define FCM_MAX_TOKEN_RESPONSE (16 * 1024) /* body cap for the token endpoint's answer */
#define FCM_ASSERTION_LIFE_S   3600        /* exp - iat, Google's maximum */
#define FCM_TOKEN_REFRESH_S    (50 * 60)   /* re-fetch an access token this old */
#define FCM_TOKEN_MARGIN_S     60          /* ...or this long before Google's expiry */
#define FCM_OAUTH_TIMEOUT_MS   10000       /* one token request: DNS+connect+TLS+exchange */
#define FCM_MAX_WAITING        10000       /* pushes parked while a token is fetched */

/* ---- payloads ---- */

enum fcm_preview { FCM_PREVIEW_FULL, FCM_PREVIEW_SENDER, FCM_PREVIEW_NONE };

struct fcm_new_mail {
    const char *token;   /* the device's registration token */
    const char *user_id; /* data.userId */
    const char *sender;  /* display name (or address) */
    const char *subject;
    enum fcm_preview preview;
    int badge_on; /* include data.badge */
    uint32_t badge;
};

/* fcm_payload_new_mail resets |out| (whose cap must be at least
 * FCM_MAX_PAYLOAD) and writes the Android new-mail data message of API.md
 * section 3:
 *   {"message":{"token":T,"data":{"type":"new-mail","title":..,"body":..,
 *    "badge":"3","userId":U},"android":{"priority":"high"}}}
 * Every data value is a JSON string. preview SENDER: title = sender, body "New
 * message"; NONE: title "New message" and no body. Text is escaped for JSON,
 * invalid UTF-8 becomes U+FFFD, CR/LF/TAB become spaces, and the subject (then
 * the sender) is cut on a code-point boundary with a trailing "…" so that the
 * whole message fits FCM_MAX_PAYLOAD.
 * 0, ENS_EINVAL (missing field, or a token that is not 1..FCM_MAX_REG_TOKEN of
 * [A-Za-z0-9_:.-]) or ENS_ETOOBIG if even an empty subject does not fit. */
int fcm_payload_new_mail(struct rt_buf *out, const struct fcm_new_mail *m);

/* fcm_payload_badge writes a normal-priority
 * {"message":{"token":T,"data":{"type":"badge","badge":"N"},"android":{"priority":"normal"}}}.
 * 0, ENS_EINVAL or ENS_ETOOBIG. */
int fcm_payload_badge(struct rt_buf *out, const char *token, uint32_t badge);

/* fcm_payload_checkin writes a normal-priority
 * {"message":{"token":T,"data":{"type":"checkin"},"android":{"priority":"normal"}}}.
 * 0, ENS_EINVAL or ENS_ETOOBIG. */
int fcm_payload_checkin(struct rt_buf *out, const char *token);

/* ---- results ---- */

/* What the caller should do with the device and the push (push.md 8). */
enum fcm_class {
    FCM_OK,           /* accepted by FCM */
    FCM_UNREGISTERED, /* the token is dead or not ours: remove the device */
    FCM_RETRY,        /* transient: retry later, honouring retry_after_s */
    FCM_FATAL,        /* our bug or configuration: do not retry, alarm */
};

/* A v1 error body, {"error":{"code":N,"message":M,"status":S,"details":[
 * {"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":C}]}}. */
struct fcm_error {
    char status[FCM_MAX_CODE + 1]; /* error.status, "" when absent */
    char code[FCM_MAX_CODE + 1];   /* the FcmError errorCode, "" when absent */
    int invalid_token;             /* message says "not a valid FCM registration token" */
};

struct fcm_result {
    int err;                  /* 0 when FCM answered; else the transport or token error */
    int status;               /* HTTP status, 0 without an answer */
    const char *error_status; /* error.status ("" when none); borrowed */
    const char *error_code;   /* FcmError errorCode ("" when none); borrowed */
    const char *name;         /* 200: the message name ("" when none); borrowed */
    uint32_t retry_after_s;   /* Retry-After delta seconds, 0 when absent */
    enum fcm_class cls;
};

/* fcm_parse_error_body reads a v1 error body into |out| (always reset first).
 * status and errorCode must be 1..FCM_MAX_CODE of [A-Z0-9_]; other detail types
 * are skipped. 0 on success, ENS_EPARSE for anything else (then |out| is
 * empty). Reads exactly |body|, at most FCM_MAX_ERROR_BODY bytes. */
int fcm_parse_error_body(struct span body, struct fcm_error *out);

/* fcm_classify maps an HTTP status and a parsed error body (NULL or empty when
 * none) to a class, per the retry table of push.md 8. */
enum fcm_class fcm_classify(int status, const struct fcm_error *e);

/* fcm_class_name returns "ok", "unregistered", "retry" or "fatal". */
const char *fcm_class_name(enum fcm_class cls);

/* fcm_parse_retry_after reads a Retry-After value of delta seconds (clamped to
 * FCM_MAX_RETRY_AFTER_S). An HTTP-date or garbage gives 0. */
uint32_t fcm_parse_retry_after(struct span v);

/* ---- the service account and OAuth2 (push.md 2.1) ---- */

struct fcm_account;

/* fcm_account_load reads Google's service-account JSON at |path|: project_id
 * (1..FCM_MAX_PROJECT_ID of [a-z0-9-]), client_email, private_key (PEM RSA,
 * 2048 to 4096 bits) and the optional token_uri. NULL on failure with a reason
 * (never key material) in |err| (capacity |errlen|). The file's bytes are
 * wiped after parsing. */
struct fcm_account *fcm_account_load(const char *path, char *err, size_t errlen);

/* fcm_account_free wipes and frees; NULL is fine. */
void fcm_account_free(struct fcm_account *a);

/* fcm_account_get0_project_id / _token_uri return borrowed strings ("" for a
 * token_uri the file did not have). */
const char *fcm_account_get0_project_id(const struct fcm_account *a);
const char *fcm_account_get0_token_uri(const struct fcm_account *a);

/* fcm_account_assertion resets |out| and writes an RS256 JWT bearer assertion:
 * header {"alg":"RS256","typ":"JWT"}, claims {"iss":client_email,
 * "scope":FCM_OAUTH_SCOPE,"aud":|aud|,"iat":|now|,"exp":|now|+3600}. |out| is
 * a secret: release it with rt_buf_cleanup_secret. 0, ENS_EINVAL, ENS_ETOOBIG
 * or ENS_ECRYPTO. */
int fcm_account_assertion(const struct fcm_account *a, const char *aud, uint64_t now,
                          struct rt_buf *out);

/* fcm_parse_token_response reads {"access_token":T,"expires_in":N,...} from
 * the token endpoint. T must be 1..FCM_MAX_ACCESS_TOKEN bytes of
 * [A-Za-z0-9._~+/=-] and N 1..86400; a token_type, when present, must be
 * "Bearer" (any case). On success |token| (a secret) holds T and
 * |*expires_in_s| N; 0 or ENS_EPARSE (then |token| is empty). */
int fcm_parse_token_response(struct span body, struct rt_buf *token, uint32_t *expires_in_s);

/* ---- the client ---- */

struct fcm_opts {
    const char *url;                  /* NULL = FCM_DEFAULT_URL */
    const char *token_url;            /* NULL = the file's token_uri, else FCM_DEFAULT_TOKEN_URL */
    const char *service_account_file; /* required */
    const char *ca_file;              /* NULL = system store; used for both endpoints */
};

struct fcm_push {
    const uint8_t *payload; /* a whole {"message":...} (the token is inside) */
    size_t payload_len;     /* 1..FCM_MAX_PAYLOAD */
    uint64_t deadline_ms;   /* absolute (uv_now); 0 = now + H2_STREAM_TIMEOUT_MS */
};

struct fcm_client;

/* Result callback; |r| and its strings are borrowed for the call. */
typedef void (*fcm_result_cb)(const struct fcm_result *r, void *ud);

/* fcm_client_new loads the service account, builds the TLS contexts (ALPN h2
 * toward FCM, http/1.1 toward the token endpoint) and the HTTP/2 client; no I/O
 * happens before the first push. NULL on failure with a reason in |err|
 * (capacity |errlen|). */
struct fcm_client *fcm_client_new(uv_loop_t *loop, const struct fcm_opts *o, char *err,
                                  size_t errlen);

/* fcm_client_free cancels outstanding pushes (their callbacks run with err
 * ENS_ECANCELED and class FCM_RETRY) and releases everything once the loop has
 * closed the handles and a token request in flight has ended (it is bounded by
 * FCM_OAUTH_TIMEOUT_MS). Not from inside one of its callbacks. NULL is fine. */
void fcm_client_free(struct fcm_client *c);

/* fcm_send sends one push: POST /v1/projects/<project>/messages:send with the
 * shared access token, fetching one first when there is none or it is
 * FCM_TOKEN_REFRESH_S old. Everything in |p| is copied.
 * Async contract: on an error return (ENS_EINVAL for a malformed push,
 * ENS_ECRYPTO if no assertion can be signed, ENS_EFULL when a queue is full,
 * ENS_ECANCELED while freeing, or h1_client_request's error when the token
 * request cannot be started)
 * |cb| never runs; on 0 it runs exactly once, never before fcm_send returns.
 * A 401 UNAUTHENTICATED is handled inside: fetch a new token, resend once. A
 * failed token request ends the push with err ENS_EAUTH (class FCM_FATAL when
 * the endpoint refused the assertion with a 4xx, else FCM_RETRY). */
int fcm_send(struct fcm_client *c, const struct fcm_push *p, fcm_result_cb cb, void *ud);

/* fcm_client_token_fetches returns how many access tokens were obtained
 * (metrics: push_oauth_refresh_total; tests). */
uint64_t fcm_client_token_fetches(const struct fcm_client *c);

#endif
