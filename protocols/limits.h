/* Every resource limit of the server, in one place. Limits before
 * authentication are tighter than after (redis). Sizes are bytes. */
#ifndef ENS_PROTOCOLS_LIMITS_H
#define ENS_PROTOCOLS_LIMITS_H

#include "runtime/limits.h"

/* HTTP/1.1 */
#define H1_MAX_HEADER_BYTES    (16 * 1024) /* request line + all header lines */
#define H1_MAX_HEADERS         64
#define H1_DEFAULT_MAX_BODY    (1024 * 1024) /* http.max_body_bytes default */
#define H1_MAX_PIPELINED       16            /* parsed, unanswered requests per connection */
#define H1_IDLE_TIMEOUT_MS     30000         /* keep-alive connection with no request */
#define H1_READ_TIMEOUT_MS     15000         /* a started request must complete within this */
#define H1_CLIENT_MAX_RESPONSE (4 * 1024 * 1024)
#define H1_MAX_CONNECTIONS     RT_FD_MAX_CONNS /* per listener per scheduler */

/* HTTP/2 client */
#define H2_MAX_CONCURRENT_STREAMS 1000
#define H2_MAX_RESPONSE_BODY      (64 * 1024)
#define H2_CONNECT_TIMEOUT_MS     10000
#define H2_STREAM_TIMEOUT_MS      15000
#define H2_MAX_QUEUED_REQUESTS    10000

/* SOAP / EWS */
#define SOAP_MAX_BODY          (1024 * 1024)
#define SOAP_MAX_DEPTH         32
#define SOAP_MAX_EVENTS        256 /* events in one SendNotification */
#define SOAP_MAX_NOTIFICATIONS 16
#define SOAP_MAX_ID_BYTES      1024 /* ItemId, SubscriptionId, watermark */
#define SOAP_MAX_TEXT_BYTES    4096 /* subject, names */
/* Structure a body may have before libxml2 sees it (protocols/xml_prescan.c):
 * libxml2 2.9 checks duplicate attributes in time quadratic in their number,
 * so one element with 80,000 attributes cost 10 s. Real Exchange answers stay
 * far below: a dozen attributes and namespace declarations on the envelope,
 * a few thousand elements for the largest GetItem or SendNotification. */
#define SOAP_MAX_ATTRIBUTES       64    /* on one element, namespace declarations included */
#define SOAP_MAX_NS_DECLS         16    /* xmlns declarations on one element */
#define SOAP_MAX_ELEMENTS         20000 /* in one body */
#define SOAP_MAX_NAME_BYTES       256   /* an element or attribute name, prefix included */
#define SOAP_MAX_ATTRIBUTES_TOTAL 40000 /* in one body: two per element at the element cap */
#define SOAP_MAX_NS_IN_SCOPE      64    /* declarations in scope at once: each lookup walks them */

/* JOSE */
#define JOSE_MAX_COMPACT     (64 * 1024)
#define JOSE_MAX_HEADER_JSON 4096
#define JOSE_MAX_PLAINTEXT   (48 * 1024)

/* Enrollment payload (API.md 1.2), after decryption */
#define ENROLL_MAX_EMAIL      320
#define ENROLL_MAX_URL        2048
#define ENROLL_MAX_DEVICE_ID  128
#define ENROLL_MAX_PUSH_TOKEN 512 /* FCM registration tokens; APNs tokens are hex, at most 200 */
#define ENROLL_MAX_APNS_TOKEN 200
#define ENROLL_MAX_APP_ID     256
#define ENROLL_MAX_USERNAME   512
#define ENROLL_MAX_PASSWORD   1024
#define ENROLL_MAX_OAUTH      16384 /* OAuth access tokens run to several KB */
#define ENROLL_IAT_WINDOW_S   600

/* Push */
#define APNS_MAX_PAYLOAD 4096
#define FCM_MAX_PAYLOAD  4096

/* HTTP/2 server (device API over ALPN h2) */
#define H2_SERVER_MAX_CONCURRENT_STREAMS 64          /* advertised; nghttp2 refuses more */
#define H2_SERVER_MAX_HEADER_LIST        (16 * 1024) /* like H1_MAX_HEADER_BYTES; 431 past it */
#define H2_SERVER_MAX_CONN_BUFFERED      (8 * 1024 * 1024) /* request bodies held per connection */
#define H2_SERVER_MAX_WRITE_PENDING      (4 * 1024 * 1024) /* unread output: slow reader, close */
#define H2_SERVER_MAX_OUTBOUND_ACK       1000              /* queued PING/SETTINGS ACKs (flood) */
#define H2_SERVER_MAX_SETTINGS           32                /* entries per SETTINGS frame */
#define H2_SERVER_MAX_CONTINUATIONS      8    /* CONTINUATION frames per header block */
#define H2_SERVER_RESET_BURST            1000 /* client RST_STREAM token bucket (rapid reset) */
#define H2_SERVER_RESET_RATE             33   /* tokens per second */
#define H2_SERVER_MAX_GLITCHES           100  /* refused/malformed streams before GOAWAY */
#define H2_SERVER_LINGER_MS              2000 /* after our GOAWAY+FIN, wait this for the peer's */

#endif
