/* EWS SOAP codec: the requests ENS sends to Exchange (Subscribe, GetItem,
 * GetFolder), the answers it reads back, and the SendNotification callbacks that
 * Exchange POSTs to us (docs: shared/protocols/exchange.md sections 1 and 2).
 *
 * No I/O happens here: builders append bytes to an rt_buf, parsers read a span
 * through protocols/soap_xml. Every parser fills a caller-provided struct with
 * owned copies; call its _cleanup function afterwards, whatever the parser
 * returned (a zeroed struct is safe to clean up). All functions are pure and may
 * run on any thread after soap_init(). */
#ifndef ENS_PROTOCOLS_SOAP_EWS_H
#define ENS_PROTOCOLS_SOAP_EWS_H

#include <stddef.h>
#include <stdint.h>

#include "protocols/limits.h"
#include "runtime/buf.h"
#include "runtime/span.h"

/* Items in one GetItem call and in its answer. Private to this module (no
 * SOAP_MAX_ITEMS in limits.h yet); as many as a SendNotification's events. */
#define SOAP_EWS_MAX_ITEMS SOAP_MAX_EVENTS
/* Callback URL length accepted by Exchange: more than 0 and less than 2083. */
#define SOAP_EWS_MAX_URL              2082
#define SOAP_EWS_MIN_STATUS_FREQUENCY 1
#define SOAP_EWS_MAX_STATUS_FREQUENCY 1440
/* Folders in one GetFolder answer: the named Inbox and the caller's own. */
#define SOAP_EWS_MAX_FOLDERS 2
/* An SMTP address named in a t:Mailbox: whatever an enrollment may carry. */
#define SOAP_EWS_MAX_MAILBOX ENROLL_MAX_EMAIL

/* ResponseClass of an EWS response message. */
enum soap_ews_class {
    SOAP_EWS_SUCCESS = 0,
    SOAP_EWS_WARNING,
    SOAP_EWS_ERROR,
};

/* soap_ews_class_name returns "Success", "Warning" or "Error" (static). */
const char *soap_ews_class_name(enum soap_ews_class cls);

/* The outcome of a call or of one response message. A SOAP Fault (HTTP 500,
 * e.g. ErrorServerBusy) is reported as |fault| = 1, class Error, |code| taken
 * from the fault detail's ResponseCode (else from faultcode). */
struct soap_ews_status {
    enum soap_ews_class cls;
    char *code;          /* ResponseCode, e.g. "NoError"; owned; NULL if absent */
    int fault;           /* 1 when the answer was a SOAP Fault */
    uint64_t backoff_ms; /* MessageXml BackOffMilliseconds, 0 when absent */
};

/* ---- Requests ------------------------------------------------------------- */

/* soap_ews_subscribe_build appends a push Subscribe request for the Inbox (all
 * event types but FreeBusyChanged) to |buf|: header RequestServerVersion
 * Exchange2013; children FolderIds, EventTypes, [Watermark], StatusFrequency,
 * URL, in the schema's order. |mailbox| (an SMTP address, or NULL for the
 * caller's own) is named in the folder id, so Exchange subscribes that very
 * mailbox or refuses credentials without rights on it. |watermark| NULL or ""
 * means none. Every value is XML-escaped. Returns 0; ENS_EINVAL when the URL is
 * empty, longer than SOAP_EWS_MAX_URL or not http(s), the frequency is outside
 * 1..1440, the mailbox is not an address of at most SOAP_EWS_MAX_MAILBOX bytes,
 * or a value holds a character XML cannot carry; ENS_ETOOBIG when |buf|'s cap
 * is reached. On error |buf| is left as it was. Borrows every argument. */
int soap_ews_subscribe_build(struct rt_buf *buf, const char *mailbox, const char *callback_url,
                             int status_frequency_min, const char *watermark);

/* soap_ews_getitem_build appends a GetItem request for the |n| ItemIds in
 * |item_ids| (1..SOAP_EWS_MAX_ITEMS): BaseShape IdOnly plus item:Subject,
 * message:From, message:IsRead and item:DateTimeReceived. Same returns and
 * guarantees as soap_ews_subscribe_build. */
int soap_ews_getitem_build(struct rt_buf *buf, const char *const *item_ids, size_t n);

/* soap_ews_getfolder_build appends a GetFolder request for the Inbox's
 * folder:UnreadCount (BaseShape IdOnly) of |mailbox| (NULL: the caller's own).
 * With |with_own| and a mailbox, the caller's own Inbox is asked second in the
 * same request: equal folder ids in the answer prove that the credentials are
 * that mailbox's owner's, not a delegate's. Returns 0, ENS_EINVAL (mailbox as
 * in soap_ews_subscribe_build) or ENS_ETOOBIG; on error |buf| is unchanged. */
int soap_ews_getfolder_build(struct rt_buf *buf, const char *mailbox, int with_own);

/* ---- Responses ------------------------------------------------------------ */

struct soap_ews_subscribe_resp {
    struct soap_ews_status st;
    char *subscription_id; /* owned; NULL unless given (Success) */
    char *watermark;       /* owned; NULL unless given */
};

/* soap_ews_subscribe_parse reads a SubscribeResponse or a SOAP Fault from |in|
 * into |out| (zeroed first). Returns 0 when the answer was understood, whatever
 * its class; ENS_EPARSE when it is not a SubscribeResponse/Fault or is
 * malformed; ENS_ETOOBIG past SOAP_MAX_BODY or an id past SOAP_MAX_ID_BYTES. */
int soap_ews_subscribe_parse(struct span in, struct soap_ews_subscribe_resp *out);
void soap_ews_subscribe_resp_cleanup(struct soap_ews_subscribe_resp *r);

/* One GetItemResponseMessage: an item or, e.g., ErrorItemNotFound. */
struct soap_ews_item {
    struct soap_ews_status st;
    char *item_id;    /* owned; NULL when the message carries no item */
    char *change_key; /* owned; may be NULL */
    char *subject;    /* owned; may be NULL; truncated to SOAP_MAX_TEXT_BYTES */
    char *from_name;  /* owned; may be NULL; truncated to SOAP_MAX_TEXT_BYTES */
    char *from_email; /* owned; may be NULL; truncated to SOAP_MAX_TEXT_BYTES */
    char *received;   /* owned DateTimeReceived text; may be NULL */
    int is_read;      /* 1 read, 0 unread, -1 not given */
};

struct soap_ews_getitem_resp {
    struct soap_ews_status st; /* the Fault, else Success (see each item) */
    struct soap_ews_item *items;
    size_t n_items;
};

/* soap_ews_getitem_parse reads a GetItemResponse or a Fault. Returns 0, or
 * ENS_EPARSE / ENS_ETOOBIG (more than SOAP_EWS_MAX_ITEMS messages, an id too
 * long). */
int soap_ews_getitem_parse(struct span in, struct soap_ews_getitem_resp *out);
void soap_ews_getitem_resp_cleanup(struct soap_ews_getitem_resp *r);

/* One GetFolderResponseMessage. */
struct soap_ews_folder {
    struct soap_ews_status st;
    char *folder_id; /* owned; NULL when the message carries no folder */
    int has_unread_count;
    uint32_t unread_count;
};

struct soap_ews_getfolder_resp {
    struct soap_ews_status st; /* the Fault, else the first message's status */
    int has_unread_count;      /* the first folder's count */
    uint32_t unread_count;
    struct soap_ews_folder folders[SOAP_EWS_MAX_FOLDERS]; /* in request order */
    size_t n_folders;
};

/* soap_ews_getfolder_parse reads a GetFolderResponse or a Fault. Returns 0,
 * ENS_EPARSE or ENS_ETOOBIG (more than SOAP_EWS_MAX_FOLDERS messages). */
int soap_ews_getfolder_parse(struct span in, struct soap_ews_getfolder_resp *out);
void soap_ews_getfolder_resp_cleanup(struct soap_ews_getfolder_resp *r);

/* ---- SendNotification (the push callback) --------------------------------- */

enum soap_event_type {
    SOAP_EVENT_STATUS = 0,
    SOAP_EVENT_NEW_MAIL,
    SOAP_EVENT_CREATED,
    SOAP_EVENT_DELETED,
    SOAP_EVENT_MODIFIED,
    SOAP_EVENT_MOVED,
    SOAP_EVENT_COPIED,
    SOAP_EVENT_FREE_BUSY_CHANGED,
};

/* soap_event_type_name returns the element name ("NewMailEvent"), static. */
const char *soap_event_type_name(enum soap_event_type t);

struct soap_event {
    enum soap_event_type type;
    char *watermark;        /* owned; may be NULL */
    char *timestamp;        /* owned TimeStamp text; NULL for StatusEvent */
    char *item_id;          /* owned; set when the event names an item */
    char *change_key;       /* owned; the item's or folder's ChangeKey; may be NULL */
    char *folder_id;        /* owned; set when the event names a folder */
    char *parent_folder_id; /* owned; may be NULL */
    char *old_item_id;      /* owned; Moved/Copied only; may be NULL */
    char *old_folder_id;    /* owned; Moved/Copied only; may be NULL */
    char *old_parent_folder_id;
    int has_unread_count; /* ModifiedEvent of a folder may carry UnreadCount */
    uint32_t unread_count;
};

struct soap_notification {
    char *subscription_id;    /* owned; may be NULL */
    char *previous_watermark; /* owned; may be NULL */
    int more_events;
    struct soap_event *events;
    size_t n_events;
};

/* One SendNotificationResponseMessage. An Error message (ResponseClass Error,
 * e.g. ErrorReadEventsFailed) has no Notification: the subscription is dead. */
struct soap_notification_msg {
    enum soap_ews_class cls;
    char *code;                             /* owned ResponseCode; may be NULL */
    struct soap_notification *notification; /* owned; NULL when absent */
};

struct soap_notification_batch {
    struct soap_notification_msg *msgs;
    size_t n_msgs;
};

/* soap_notification_parse reads an Exchange SendNotification request body.
 * Any namespace prefixes; events in any order; optional fields optional;
 * unknown elements ignored. Returns 0; ENS_ETOOBIG past SOAP_MAX_BODY, more
 * than SOAP_MAX_NOTIFICATIONS messages, more than SOAP_MAX_EVENTS events in
 * total, or an id/watermark longer than SOAP_MAX_ID_BYTES; ENS_EPARSE when the
 * body is not a SendNotification or is malformed. On error |out| holds nothing
 * (but cleaning it up is still fine). */
int soap_notification_parse(struct span in, struct soap_notification_batch *out);
void soap_notification_batch_cleanup(struct soap_notification_batch *b);

/* soap_notification_result returns the fixed SendNotificationResult body to
 * answer a callback with: SubscriptionStatus "OK", or "Unsubscribe" when
 * |unsubscribe| is non-zero (exact case; Exchange parses it case-sensitively
 * and reads at most 1024 bytes). The span points at static storage. */
struct span soap_notification_result(int unsubscribe);

#endif
