#include "protocols/soap_ews.h"

#include <string.h>

#include "protocols/soap_xml.h"
#include "runtime/alloc.h"
#include "runtime/err.h"

/* ---- Tables --------------------------------------------------------------- */

static const char *const kClassNames[] = {
    [SOAP_EWS_SUCCESS] = "Success",
    [SOAP_EWS_WARNING] = "Warning",
    [SOAP_EWS_ERROR] = "Error",
};

static const struct {
    enum soap_event_type type;
    const char *element;
} kEventTypes[] = {
    {SOAP_EVENT_STATUS, "StatusEvent"},     {SOAP_EVENT_NEW_MAIL, "NewMailEvent"},
    {SOAP_EVENT_CREATED, "CreatedEvent"},   {SOAP_EVENT_DELETED, "DeletedEvent"},
    {SOAP_EVENT_MODIFIED, "ModifiedEvent"}, {SOAP_EVENT_MOVED, "MovedEvent"},
    {SOAP_EVENT_COPIED, "CopiedEvent"},     {SOAP_EVENT_FREE_BUSY_CHANGED, "FreeBusyChangedEvent"},
};
#define N_EVENT_TYPES (sizeof(kEventTypes) / sizeof(kEventTypes[0]))

/* What ENS subscribes to. FreeBusyChanged is calendar noise for a mail badge,
 * and StatusEvent cannot be requested (Exchange always sends it). */
static const char *const kSubscribedEvents[] = {
    "NewMailEvent", "CreatedEvent", "ModifiedEvent", "DeletedEvent", "MovedEvent", "CopiedEvent",
};

/* The properties GetItem asks for: enough for a notification, nothing else. */
static const char *const kItemFields[] = {
    "item:Subject",
    "message:From",
    "message:IsRead",
    "item:DateTimeReceived",
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* BackOffMilliseconds beyond a day is nonsense; cap it rather than trust it. */
#define SOAP_EWS_MAX_BACKOFF_MS (24ULL * 3600 * 1000)

const char *soap_ews_class_name(enum soap_ews_class cls)
{
    return (unsigned)cls < N_ELEMS(kClassNames) ? kClassNames[cls] : "?";
}

const char *soap_event_type_name(enum soap_event_type t)
{
    for (size_t i = 0; i < N_EVENT_TYPES; i++)
        if (kEventTypes[i].type == t)
            return kEventTypes[i].element;
    return "?";
}

/* ---- Builders ------------------------------------------------------------- */

static const char kEnvelopeHead[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
    "<soap:Envelope xmlns:soap=\"" SOAP_NS_ENVELOPE "\" xmlns:t=\"" SOAP_NS_TYPES
    "\" xmlns:m=\"" SOAP_NS_MESSAGES "\">"
    "<soap:Header><t:RequestServerVersion Version=\"Exchange2013\"/></soap:Header>"
    "<soap:Body>";
static const char kEnvelopeTail[] = "</soap:Body></soap:Envelope>";

/* xml_escapable reports whether |s| holds only characters XML 1.0 can carry
 * (no C0 controls but tab, LF, CR); anything else would make Exchange reject
 * the whole request, so it is refused here with a clear error. */
static int xml_escapable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r')
            return 0;
    return 1;
}

/* append_escaped escapes the five XML specials, attribute- and text-safe. */
static int append_escaped(struct rt_buf *b, const char *s)
{
    const char *run = s;
    int rc = 0;
    for (const char *p = s; *p && rc == 0; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&apos;";
            break;
        default:
            continue;
        }
        rc = rt_buf_append(b, run, (size_t)(p - run));
        if (rc == 0)
            rc = rt_buf_append_str(b, rep);
        run = p + 1;
    }
    if (rc == 0)
        rc = rt_buf_append_str(b, run);
    return rc;
}

/* buf_rollback undoes a partial build so a failed builder leaves |b| as it was. */
static void buf_rollback(struct rt_buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

static int append_all(struct rt_buf *b, const char *const *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = rt_buf_append_str(b, parts[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int url_acceptable(const char *url)
{
    static const char *const schemes[] = {"http://", "https://"};
    size_t n = strlen(url);
    if (n == 0 || n > SOAP_EWS_MAX_URL || !xml_escapable(url))
        return 0;
    for (size_t i = 0; i < N_ELEMS(schemes); i++) {
        size_t k = strlen(schemes[i]);
        if (n > k && span_eq_nocase(span_make(url, k), schemes[i]))
            return 1;
    }
    return 0;
}

/* mailbox_acceptable: an SMTP address we may name in a t:Mailbox element. */
static int mailbox_acceptable(const char *mailbox)
{
    size_t n = strlen(mailbox);
    return n > 0 && n <= SOAP_EWS_MAX_MAILBOX && xml_escapable(mailbox) &&
           memchr(mailbox, '@', n) != NULL;
}

/* append_inbox writes the Inbox's DistinguishedFolderId, naming |mailbox| when
 * it is not NULL (then Exchange checks the caller's rights on that mailbox
 * instead of taking the caller's own). */
static int append_inbox(struct rt_buf *b, const char *mailbox)
{
    if (mailbox == NULL)
        return rt_buf_append_str(b, "<t:DistinguishedFolderId Id=\"inbox\"/>");
    int rc = rt_buf_append_str(b, "<t:DistinguishedFolderId Id=\"inbox\"><t:Mailbox>"
                                  "<t:EmailAddress>");
    if (rc == 0)
        rc = append_escaped(b, mailbox);
    if (rc == 0)
        rc = rt_buf_append_str(b, "</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>");
    return rc;
}

int soap_ews_subscribe_build(struct rt_buf *buf, const char *mailbox, const char *callback_url,
                             int status_frequency_min, const char *watermark)
{
    if (mailbox && !mailbox_acceptable(mailbox))
        return ENS_EINVAL;
    if (callback_url == NULL || !url_acceptable(callback_url) ||
        status_frequency_min < SOAP_EWS_MIN_STATUS_FREQUENCY ||
        status_frequency_min > SOAP_EWS_MAX_STATUS_FREQUENCY)
        return ENS_EINVAL;
    if (watermark && (!xml_escapable(watermark) || strlen(watermark) > SOAP_MAX_ID_BYTES))
        return ENS_EINVAL;

    size_t start = buf->len;
    int rc = rt_buf_append_str(buf, kEnvelopeHead);
    if (rc == 0)
        rc = rt_buf_append_str(buf, "<m:Subscribe><m:PushSubscriptionRequest><t:FolderIds>");
    if (rc == 0)
        rc = append_inbox(buf, mailbox);
    if (rc == 0)
        rc = rt_buf_append_str(buf, "</t:FolderIds><t:EventTypes>");
    for (size_t i = 0; rc == 0 && i < N_ELEMS(kSubscribedEvents); i++)
        rc = rt_buf_appendf(buf, "<t:EventType>%s</t:EventType>", kSubscribedEvents[i]);
    if (rc == 0)
        rc = rt_buf_append_str(buf, "</t:EventTypes>");
    if (rc == 0 && watermark && *watermark) {
        rc = rt_buf_append_str(buf, "<t:Watermark>");
        if (rc == 0)
            rc = append_escaped(buf, watermark);
        if (rc == 0)
            rc = rt_buf_append_str(buf, "</t:Watermark>");
    }
    if (rc == 0)
        rc = rt_buf_appendf(buf, "<t:StatusFrequency>%d</t:StatusFrequency><t:URL>",
                            status_frequency_min);
    if (rc == 0)
        rc = append_escaped(buf, callback_url);
    if (rc == 0) {
        const char *tail[] = {"</t:URL></m:PushSubscriptionRequest></m:Subscribe>", kEnvelopeTail};
        rc = append_all(buf, tail, N_ELEMS(tail));
    }
    if (rc)
        buf_rollback(buf, start);
    return rc;
}

/* append_shape writes IdOnly plus |fields| as AdditionalProperties. */
static int append_shape(struct rt_buf *b, const char *const *fields, size_t n)
{
    int rc = rt_buf_append_str(b, "<t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>");
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = rt_buf_appendf(b, "<t:FieldURI FieldURI=\"%s\"/>", fields[i]);
    if (rc == 0)
        rc = rt_buf_append_str(b, "</t:AdditionalProperties>");
    return rc;
}

int soap_ews_getitem_build(struct rt_buf *buf, const char *const *item_ids, size_t n)
{
    if (item_ids == NULL || n == 0 || n > SOAP_EWS_MAX_ITEMS)
        return ENS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (item_ids[i] == NULL || item_ids[i][0] == '\0' || !xml_escapable(item_ids[i]) ||
            strlen(item_ids[i]) > SOAP_MAX_ID_BYTES)
            return ENS_EINVAL;

    size_t start = buf->len;
    int rc = rt_buf_append_str(buf, kEnvelopeHead);
    if (rc == 0)
        rc = rt_buf_append_str(buf, "<m:GetItem><m:ItemShape>");
    if (rc == 0)
        rc = append_shape(buf, kItemFields, N_ELEMS(kItemFields));
    if (rc == 0)
        rc = rt_buf_append_str(buf, "</m:ItemShape><m:ItemIds>");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = rt_buf_append_str(buf, "<t:ItemId Id=\"");
        if (rc == 0)
            rc = append_escaped(buf, item_ids[i]);
        if (rc == 0)
            rc = rt_buf_append_str(buf, "\"/>");
    }
    if (rc == 0) {
        const char *tail[] = {"</m:ItemIds></m:GetItem>", kEnvelopeTail};
        rc = append_all(buf, tail, N_ELEMS(tail));
    }
    if (rc)
        buf_rollback(buf, start);
    return rc;
}

int soap_ews_getfolder_build(struct rt_buf *buf, const char *mailbox, int with_own)
{
    static const char *const fields[] = {"folder:UnreadCount"};
    if (mailbox && !mailbox_acceptable(mailbox))
        return ENS_EINVAL;
    size_t start = buf->len;
    int rc = rt_buf_append_str(buf, kEnvelopeHead);
    if (rc == 0)
        rc = rt_buf_append_str(buf, "<m:GetFolder><m:FolderShape>");
    if (rc == 0)
        rc = append_shape(buf, fields, N_ELEMS(fields));
    if (rc == 0)
        rc = rt_buf_append_str(buf, "</m:FolderShape><m:FolderIds>");
    if (rc == 0)
        rc = append_inbox(buf, mailbox);
    if (rc == 0 && with_own && mailbox)
        rc = append_inbox(buf, NULL);
    if (rc == 0) {
        const char *tail[] = {"</m:FolderIds></m:GetFolder>", kEnvelopeTail};
        rc = append_all(buf, tail, N_ELEMS(tail));
    }
    if (rc)
        buf_rollback(buf, start);
    return rc;
}

/* ---- Shared parsing helpers ----------------------------------------------- */

/* child_text copies the trimmed text of the optional child (|ns|, |local|) of
 * |parent|; absent leaves |*out| NULL and returns 0. */
static int child_text(const xmlNode *parent, const char *ns, const char *local, size_t cap,
                      enum soap_xml_overflow overflow, int trim, char **out)
{
    *out = NULL;
    xmlNode *c = soap_xml_child(parent, ns, local);
    return c ? soap_xml_text(c, cap, trim, overflow, out) : 0;
}

static int child_id_text(const xmlNode *parent, const char *ns, const char *local, char **out)
{
    return child_text(parent, ns, local, SOAP_MAX_ID_BYTES, SOAP_XML_STRICT, 1, out);
}

static int child_display_text(const xmlNode *parent, const char *local, char **out)
{
    return child_text(parent, SOAP_NS_TYPES, local, SOAP_MAX_TEXT_BYTES, SOAP_XML_TRUNCATE, 0, out);
}

/* parse_bool reads an xs:boolean ("true", "false", "1", "0"). */
static int parse_bool(const xmlNode *n, int *out)
{
    char *t;
    int rc = soap_xml_text(n, 8, 1, SOAP_XML_STRICT, &t);
    if (rc)
        return ENS_EPARSE;
    struct span s = span_cstr(t);
    if (span_eq(s, "true") || span_eq(s, "1"))
        *out = 1;
    else if (span_eq(s, "false") || span_eq(s, "0"))
        *out = 0;
    else
        rc = ENS_EPARSE;
    ens_free(t);
    return rc;
}

/* parse_uint reads a non-negative decimal of at most |max|, whole text only. */
static int parse_uint(const xmlNode *n, uint64_t max, uint64_t *out)
{
    char *t;
    if (soap_xml_text(n, 24, 1, SOAP_XML_STRICT, &t))
        return ENS_EPARSE;
    struct span s = span_cstr(t);
    int ok = span_get_decimal(&s, max, out) && s.len == 0;
    ens_free(t);
    return ok ? 0 : ENS_EPARSE;
}

/* id_attr copies attribute |name| of an id element; a missing or empty value is
 * malformed, an oversized one too big. */
static int id_attr(const xmlNode *n, const char *name, int required, char **out)
{
    int rc = soap_xml_attr(n, name, SOAP_MAX_ID_BYTES, out);
    if (rc == ENS_ENOTFOUND)
        return required ? ENS_EPARSE : 0;
    if (rc == 0 && required && (*out)[0] == '\0') {
        ens_free(*out);
        *out = NULL;
        return ENS_EPARSE;
    }
    return rc;
}

static int parse_class(const xmlNode *msg, enum soap_ews_class *out)
{
    for (size_t i = 0; i < N_ELEMS(kClassNames); i++) {
        if (soap_xml_attr_eq(msg, "ResponseClass", kClassNames[i])) {
            *out = (enum soap_ews_class)i;
            return 0;
        }
    }
    return ENS_EPARSE;
}

/* parse_backoff finds MessageXml/Value[@Name=BackOffMilliseconds] under
 * |parent|. Exchange puts MessageXml in t: inside faults and in m: inside
 * response messages, so both are looked at. A bad value is ignored: it is
 * advice, and the caller backs off on its own anyway. */
static void parse_backoff(const xmlNode *parent, uint64_t *out)
{
    xmlNode *mx = soap_xml_child(parent, SOAP_NS_TYPES, "MessageXml");
    if (mx == NULL)
        mx = soap_xml_child(parent, SOAP_NS_MESSAGES, "MessageXml");
    for (xmlNode *v = soap_xml_child(mx, SOAP_NS_TYPES, "Value"); v;
         v = soap_xml_next(v, SOAP_NS_TYPES, "Value")) {
        uint64_t ms;
        if (soap_xml_attr_eq(v, "Name", "BackOffMilliseconds") &&
            parse_uint(v, SOAP_EWS_MAX_BACKOFF_MS, &ms) == 0) {
            *out = ms;
            return;
        }
    }
}

/* parse_status reads ResponseClass, ResponseCode and any back-off advice of one
 * response message. */
static int parse_status(const xmlNode *msg, struct soap_ews_status *st)
{
    int rc = parse_class(msg, &st->cls);
    if (rc == 0)
        rc = child_id_text(msg, SOAP_NS_MESSAGES, "ResponseCode", &st->code);
    if (rc == 0)
        parse_backoff(msg, &st->backoff_ms);
    return rc;
}

static void status_cleanup(struct soap_ews_status *st)
{
    ens_free(st->code);
    memset(st, 0, sizeof(*st));
}

/* parse_fault reads a SOAP 1.1 Fault. Its faultcode/detail children are
 * unqualified; the ResponseCode inside detail is in the errors namespace. */
static int parse_fault(const xmlNode *fault, struct soap_ews_status *st)
{
    st->cls = SOAP_EWS_ERROR;
    st->fault = 1;
    xmlNode *detail = soap_xml_child(fault, NULL, "detail");
    int rc = child_id_text(detail, SOAP_NS_ERRORS, "ResponseCode", &st->code);
    if (rc == 0 && st->code == NULL) {
        /* No detail: fall back to faultcode's local part ("a:ErrorServerBusy"). */
        char *fc;
        rc = child_id_text(fault, NULL, "faultcode", &fc);
        if (rc == 0 && fc) {
            const char *colon = memchr(fc, ':', strlen(fc));
            st->code = ens_strdup(colon ? colon + 1 : fc);
            ens_free(fc);
        }
    }
    if (rc == 0 && detail)
        parse_backoff(detail, &st->backoff_ms);
    return rc;
}

/* open_response parses |in| and walks Envelope/Body to the answer element. If
 * it is a Fault, the fault goes into |st| and |*messages| is NULL; otherwise it
 * must be m:|op| and |*messages| is its m:ResponseMessages. */
static int open_response(struct span in, const char *op, xmlDoc **doc, xmlNode **messages,
                         struct soap_ews_status *st)
{
    *messages = NULL;
    int rc = soap_xml_parse(in, doc);
    if (rc)
        return rc;
    xmlNode *env = xmlDocGetRootElement(*doc);
    if (!soap_xml_is(env, SOAP_NS_ENVELOPE, "Envelope"))
        return ENS_EPARSE;
    xmlNode *body = soap_xml_child(env, SOAP_NS_ENVELOPE, "Body");
    xmlNode *answer = soap_xml_first_element(body);
    if (soap_xml_is(answer, SOAP_NS_ENVELOPE, "Fault"))
        return parse_fault(answer, st);
    if (!soap_xml_is(answer, SOAP_NS_MESSAGES, op))
        return ENS_EPARSE;
    *messages = soap_xml_child(answer, SOAP_NS_MESSAGES, "ResponseMessages");
    return *messages ? 0 : ENS_EPARSE;
}

/* ---- Subscribe ------------------------------------------------------------ */

void soap_ews_subscribe_resp_cleanup(struct soap_ews_subscribe_resp *r)
{
    status_cleanup(&r->st);
    ens_free(r->subscription_id);
    ens_free(r->watermark);
    memset(r, 0, sizeof(*r));
}

int soap_ews_subscribe_parse(struct span in, struct soap_ews_subscribe_resp *out)
{
    memset(out, 0, sizeof(*out));
    xmlDoc *doc = NULL;
    xmlNode *msgs;
    int rc = open_response(in, "SubscribeResponse", &doc, &msgs, &out->st);
    if (rc == 0 && msgs) {
        xmlNode *msg = soap_xml_child(msgs, SOAP_NS_MESSAGES, "SubscribeResponseMessage");
        rc = msg ? parse_status(msg, &out->st) : ENS_EPARSE;
        if (rc == 0)
            rc = child_id_text(msg, SOAP_NS_MESSAGES, "SubscriptionId", &out->subscription_id);
        if (rc == 0)
            rc = child_id_text(msg, SOAP_NS_MESSAGES, "Watermark", &out->watermark);
        /* A success without an id is useless to the caller: call it malformed. */
        if (rc == 0 && out->st.cls != SOAP_EWS_ERROR && out->subscription_id == NULL)
            rc = ENS_EPARSE;
    }
    soap_xml_free(doc);
    if (rc)
        soap_ews_subscribe_resp_cleanup(out);
    return rc;
}

/* ---- GetItem -------------------------------------------------------------- */

static void item_cleanup(struct soap_ews_item *it)
{
    status_cleanup(&it->st);
    ens_free(it->item_id);
    ens_free(it->change_key);
    ens_free(it->subject);
    ens_free(it->from_name);
    ens_free(it->from_email);
    ens_free(it->received);
}

void soap_ews_getitem_resp_cleanup(struct soap_ews_getitem_resp *r)
{
    for (size_t i = 0; r->items && i < r->n_items; i++)
        item_cleanup(&r->items[i]);
    ens_free(r->items);
    status_cleanup(&r->st);
    memset(r, 0, sizeof(*r));
}

static int parse_item(const xmlNode *msg, struct soap_ews_item *it)
{
    it->is_read = -1;
    int rc = parse_status(msg, &it->st);
    /* Any item type (Message, MeetingRequest, ...) may sit in Items. */
    xmlNode *item = soap_xml_first_element(soap_xml_child(msg, SOAP_NS_MESSAGES, "Items"));
    if (rc || item == NULL)
        return rc;
    xmlNode *id = soap_xml_child(item, SOAP_NS_TYPES, "ItemId");
    if (id) {
        rc = id_attr(id, "Id", 1, &it->item_id);
        if (rc == 0)
            rc = id_attr(id, "ChangeKey", 0, &it->change_key);
    }
    if (rc == 0)
        rc = child_display_text(item, "Subject", &it->subject);
    xmlNode *mbox =
        soap_xml_child(soap_xml_child(item, SOAP_NS_TYPES, "From"), SOAP_NS_TYPES, "Mailbox");
    if (rc == 0)
        rc = child_display_text(mbox, "Name", &it->from_name);
    if (rc == 0)
        rc = child_display_text(mbox, "EmailAddress", &it->from_email);
    if (rc == 0)
        rc = child_id_text(item, SOAP_NS_TYPES, "DateTimeReceived", &it->received);
    xmlNode *read = soap_xml_child(item, SOAP_NS_TYPES, "IsRead");
    if (rc == 0 && read)
        rc = parse_bool(read, &it->is_read);
    return rc;
}

int soap_ews_getitem_parse(struct span in, struct soap_ews_getitem_resp *out)
{
    memset(out, 0, sizeof(*out));
    xmlDoc *doc = NULL;
    xmlNode *msgs;
    int rc = open_response(in, "GetItemResponse", &doc, &msgs, &out->st);
    if (rc == 0 && msgs) {
        static const char kMsg[] = "GetItemResponseMessage";
        size_t n = 0;
        for (xmlNode *m = soap_xml_child(msgs, SOAP_NS_MESSAGES, kMsg); m;
             m = soap_xml_next(m, SOAP_NS_MESSAGES, kMsg))
            n++;
        if (n == 0)
            rc = ENS_EPARSE;
        else if (n > SOAP_EWS_MAX_ITEMS)
            rc = ENS_ETOOBIG;
        else
            out->items = ens_calloc(n, sizeof(*out->items));
        for (xmlNode *m = soap_xml_child(msgs, SOAP_NS_MESSAGES, kMsg); rc == 0 && m;
             m = soap_xml_next(m, SOAP_NS_MESSAGES, kMsg))
            rc = parse_item(m, &out->items[out->n_items++]);
    }
    soap_xml_free(doc);
    if (rc)
        soap_ews_getitem_resp_cleanup(out);
    return rc;
}

/* ---- GetFolder ------------------------------------------------------------ */

void soap_ews_getfolder_resp_cleanup(struct soap_ews_getfolder_resp *r)
{
    status_cleanup(&r->st);
    for (size_t i = 0; i < r->n_folders; i++) {
        status_cleanup(&r->folders[i].st);
        ens_free(r->folders[i].folder_id);
    }
    memset(r, 0, sizeof(*r));
}

/* parse_folder reads one GetFolderResponseMessage: its status and, on
 * success, the folder's id and unread count. */
static int parse_folder(const xmlNode *msg, struct soap_ews_folder *f)
{
    int rc = parse_status(msg, &f->st);
    xmlNode *folder = soap_xml_first_element(soap_xml_child(msg, SOAP_NS_MESSAGES, "Folders"));
    if (rc == 0 && folder) {
        xmlNode *fid = soap_xml_child(folder, SOAP_NS_TYPES, "FolderId");
        if (fid)
            rc = id_attr(fid, "Id", 1, &f->folder_id);
    }
    xmlNode *uc = soap_xml_child(folder, SOAP_NS_TYPES, "UnreadCount");
    uint64_t v;
    if (rc == 0 && uc) {
        rc = parse_uint(uc, INT32_MAX, &v);
        f->unread_count = (uint32_t)v;
        f->has_unread_count = rc == 0;
    }
    return rc;
}

int soap_ews_getfolder_parse(struct span in, struct soap_ews_getfolder_resp *out)
{
    static const char kMsg[] = "GetFolderResponseMessage";
    memset(out, 0, sizeof(*out));
    xmlDoc *doc = NULL;
    xmlNode *msgs;
    int rc = open_response(in, "GetFolderResponse", &doc, &msgs, &out->st);
    if (rc == 0 && msgs) {
        xmlNode *m = soap_xml_child(msgs, SOAP_NS_MESSAGES, kMsg);
        if (m == NULL)
            rc = ENS_EPARSE;
        for (; rc == 0 && m; m = soap_xml_next(m, SOAP_NS_MESSAGES, kMsg)) {
            if (out->n_folders == SOAP_EWS_MAX_FOLDERS) {
                rc = ENS_ETOOBIG;
                break;
            }
            rc = parse_folder(m, &out->folders[out->n_folders++]);
        }
        if (rc == 0) {
            /* The first message speaks for the call, as with one folder. */
            const struct soap_ews_folder *f = &out->folders[0];
            out->st.cls = f->st.cls;
            out->st.code = f->st.code ? ens_strdup(f->st.code) : NULL;
            out->st.backoff_ms = f->st.backoff_ms;
            out->has_unread_count = f->has_unread_count;
            out->unread_count = f->unread_count;
        }
    }
    soap_xml_free(doc);
    if (rc)
        soap_ews_getfolder_resp_cleanup(out);
    return rc;
}

/* ---- SendNotification ----------------------------------------------------- */

static void event_cleanup(struct soap_event *e)
{
    char *fields[] = {e->watermark,   e->timestamp,     e->item_id,
                      e->change_key,  e->folder_id,     e->parent_folder_id,
                      e->old_item_id, e->old_folder_id, e->old_parent_folder_id};
    for (size_t i = 0; i < N_ELEMS(fields); i++)
        ens_free(fields[i]);
}

static void notification_free(struct soap_notification *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; n->events && i < n->n_events; i++)
        event_cleanup(&n->events[i]);
    ens_free(n->events);
    ens_free(n->subscription_id);
    ens_free(n->previous_watermark);
    ens_free(n);
}

void soap_notification_batch_cleanup(struct soap_notification_batch *b)
{
    for (size_t i = 0; b->msgs && i < b->n_msgs; i++) {
        ens_free(b->msgs[i].code);
        notification_free(b->msgs[i].notification);
    }
    ens_free(b->msgs);
    memset(b, 0, sizeof(*b));
}

/* event_type_of maps a Notification child to its event type; 0 if it is not one. */
static int event_type_of(const xmlNode *n, enum soap_event_type *out)
{
    for (size_t i = 0; i < N_EVENT_TYPES; i++) {
        if (soap_xml_is(n, SOAP_NS_TYPES, kEventTypes[i].element)) {
            *out = kEventTypes[i].type;
            return 1;
        }
    }
    return 0;
}

/* optional_id reads the Id (and, if |change_key| is non-NULL, ChangeKey) of the
 * optional id element (t:|local|) of |ev|. */
static int optional_id(const xmlNode *ev, const char *local, char **id, char **change_key)
{
    xmlNode *n = soap_xml_child(ev, SOAP_NS_TYPES, local);
    if (n == NULL)
        return 0;
    int rc = id_attr(n, "Id", 1, id);
    if (rc == 0 && change_key)
        rc = id_attr(n, "ChangeKey", 0, change_key);
    return rc;
}

static int parse_event(const xmlNode *n, enum soap_event_type type, struct soap_event *e)
{
    e->type = type;
    int rc = child_id_text(n, SOAP_NS_TYPES, "Watermark", &e->watermark);
    if (rc == 0)
        rc = child_id_text(n, SOAP_NS_TYPES, "TimeStamp", &e->timestamp);
    if (rc == 0)
        rc = optional_id(n, "ItemId", &e->item_id, &e->change_key);
    if (rc == 0 && e->item_id == NULL)
        rc = optional_id(n, "FolderId", &e->folder_id, &e->change_key);
    if (rc == 0)
        rc = optional_id(n, "ParentFolderId", &e->parent_folder_id, NULL);
    if (rc == 0)
        rc = optional_id(n, "OldItemId", &e->old_item_id, NULL);
    if (rc == 0)
        rc = optional_id(n, "OldFolderId", &e->old_folder_id, NULL);
    if (rc == 0)
        rc = optional_id(n, "OldParentFolderId", &e->old_parent_folder_id, NULL);
    xmlNode *uc = soap_xml_child(n, SOAP_NS_TYPES, "UnreadCount");
    if (rc == 0 && uc) {
        uint64_t v;
        rc = parse_uint(uc, INT32_MAX, &v);
        e->unread_count = (uint32_t)v;
        e->has_unread_count = rc == 0;
    }
    return rc;
}

/* parse_notification reads one m:Notification; |*budget| is the number of
 * events still allowed in this SendNotification. */
static int parse_notification(const xmlNode *n, size_t *budget, struct soap_notification *out)
{
    int rc = child_id_text(n, SOAP_NS_TYPES, "SubscriptionId", &out->subscription_id);
    if (rc == 0)
        rc = child_id_text(n, SOAP_NS_TYPES, "PreviousWatermark", &out->previous_watermark);
    xmlNode *more = soap_xml_child(n, SOAP_NS_TYPES, "MoreEvents");
    if (rc == 0 && more)
        rc = parse_bool(more, &out->more_events);
    if (rc)
        return rc;

    /* Count first so the array is allocated once and the cap is checked before
     * any copy is made. */
    size_t count = 0;
    enum soap_event_type type;
    for (xmlNode *c = soap_xml_first_element(n); c; c = soap_xml_next(c, NULL, NULL))
        if (event_type_of(c, &type))
            count++;
    if (count > *budget)
        return ENS_ETOOBIG;
    *budget -= count;
    if (count == 0)
        return 0;
    out->events = ens_calloc(count, sizeof(*out->events));
    for (xmlNode *c = soap_xml_first_element(n); c && rc == 0; c = soap_xml_next(c, NULL, NULL))
        if (event_type_of(c, &type))
            rc = parse_event(c, type, &out->events[out->n_events++]);
    return rc;
}

static int parse_notification_msg(const xmlNode *msg, size_t *budget,
                                  struct soap_notification_msg *out)
{
    int rc = parse_class(msg, &out->cls);
    if (rc == 0)
        rc = child_id_text(msg, SOAP_NS_MESSAGES, "ResponseCode", &out->code);
    xmlNode *n = soap_xml_child(msg, SOAP_NS_MESSAGES, "Notification");
    if (rc == 0 && n) {
        out->notification = ens_calloc(1, sizeof(*out->notification));
        rc = parse_notification(n, budget, out->notification);
    }
    return rc;
}

int soap_notification_parse(struct span in, struct soap_notification_batch *out)
{
    memset(out, 0, sizeof(*out));
    xmlDoc *doc = NULL;
    int rc = soap_xml_parse(in, &doc);
    if (rc)
        return rc;
    static const char kMsg[] = "SendNotificationResponseMessage";
    xmlNode *env = xmlDocGetRootElement(doc);
    xmlNode *body = soap_xml_child(env, SOAP_NS_ENVELOPE, "Body");
    xmlNode *send = soap_xml_first_element(body);
    xmlNode *msgs = soap_xml_child(send, SOAP_NS_MESSAGES, "ResponseMessages");
    size_t n = 0;
    for (xmlNode *m = soap_xml_child(msgs, SOAP_NS_MESSAGES, kMsg); m;
         m = soap_xml_next(m, SOAP_NS_MESSAGES, kMsg))
        n++;
    if (!soap_xml_is(env, SOAP_NS_ENVELOPE, "Envelope") ||
        !soap_xml_is(send, SOAP_NS_MESSAGES, "SendNotification") || n == 0)
        rc = ENS_EPARSE;
    else if (n > SOAP_MAX_NOTIFICATIONS)
        rc = ENS_ETOOBIG;
    else
        out->msgs = ens_calloc(n, sizeof(*out->msgs));

    size_t budget = SOAP_MAX_EVENTS;
    for (xmlNode *m = soap_xml_child(msgs, SOAP_NS_MESSAGES, kMsg); rc == 0 && m;
         m = soap_xml_next(m, SOAP_NS_MESSAGES, kMsg))
        rc = parse_notification_msg(m, &budget, &out->msgs[out->n_msgs++]);
    soap_xml_free(doc);
    if (rc)
        soap_notification_batch_cleanup(out);
    return rc;
}

/* Fixed bodies: nothing from the request is echoed, so nothing can push them
 * past Exchange's 1024-byte read limit. */
#define RESULT_BODY(status)                                                                        \
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"                                                 \
    "<soap:Envelope xmlns:soap=\"" SOAP_NS_ENVELOPE "\" xmlns:m=\"" SOAP_NS_MESSAGES "\">"         \
    "<soap:Body><m:SendNotificationResult><m:SubscriptionStatus>" status                           \
    "</m:SubscriptionStatus></m:SendNotificationResult></soap:Body></soap:Envelope>"

static const char kResultOk[] = RESULT_BODY("OK");
static const char kResultUnsubscribe[] = RESULT_BODY("Unsubscribe");

_Static_assert(sizeof(kResultUnsubscribe) < 600, "SendNotificationResult must stay small");

struct span soap_notification_result(int unsubscribe)
{
    return unsubscribe ? span_make(kResultUnsubscribe, sizeof(kResultUnsubscribe) - 1)
                       : span_make(kResultOk, sizeof(kResultOk) - 1);
}
