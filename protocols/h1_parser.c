/* HTTP/1.1 codec over llhttp.
 *
 * The header-size limit is counted on raw bytes, not on the callback spans,
 * so optional whitespace and line folding count too. llhttp does not report
 * where a message's head starts or ends, so the parser pauses itself in
 * on_message_begin and on_headers_complete and reads the position from
 * llhttp_get_error_pos before resuming: two cheap pauses per message buy an
 * exact count. */
#include "protocols/h1_parser.h"

#include <string.h>

#include <llhttp.h>

#include "protocols/limits.h"
#include "runtime/alloc.h"
#include "runtime/err.h"

enum pause_reason { PAUSE_NONE = 0, PAUSE_BEGIN, PAUSE_HEADERS, PAUSE_USER };

struct h1_parser {
    llhttp_t ll;
    llhttp_settings_t settings;
    enum h1_parser_mode mode;
    size_t max_body;
    h1_message_cb cb;
    void *ud;
    struct h1_message *cur;
    struct rt_buf field;
    struct rt_buf value;
    struct rt_buf target;
    size_t fields_cap;
    size_t header_bytes;      /* raw bytes of the current head so far */
    const uint8_t *head_from; /* where counting resumes inside the current feed */
    enum pause_reason pause;
    enum h1_parse_error perr;
    int err;
    int in_head;
    int in_message;
    int no_body;
    int continue_due; /* the message asked for 100 Continue; not yet reported */
    int upgraded;
    int closed;
};

/* RFC 9110 tchar: the bytes allowed in a header field name. llhttp as built
 * here is lenient about names, and names reach handlers, so check them. */
static const uint8_t kTchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* field_ok checks a name (tchar+) and a value (no CR, LF or NUL). */
static int field_ok(struct span name, struct span value)
{
    if (name.len == 0)
        return 0;
    for (size_t i = 0; i < name.len; i++)
        if (!kTchar[name.p[i]])
            return 0;
    for (size_t i = 0; i < value.len; i++)
        if (value.p[i] == '\r' || value.p[i] == '\n' || value.p[i] == 0)
            return 0;
    return 1;
}

static struct h1_parser *from_ll(llhttp_t *ll)
{
    return (struct h1_parser *)ll->data;
}

static int limit_fail(struct h1_parser *p, enum h1_parse_error e)
{
    if (!p->perr)
        p->perr = e;
    return -1;
}

void h1_message_free(struct h1_message *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nheaders; i++) {
        ens_free(m->headers[i].name);
        ens_free(m->headers[i].value);
    }
    ens_free(m->headers);
    ens_free(m->target);
    rt_buf_cleanup(&m->body);
    ens_free(m);
}

struct span h1_message_header(const struct h1_message *m, const char *name)
{
    for (size_t i = 0; m && i < m->nheaders; i++) {
        struct span n = span_make(m->headers[i].name, m->headers[i].name_len);
        if (span_eq_nocase(n, name))
            return span_make(m->headers[i].value, m->headers[i].value_len);
    }
    return span_make(NULL, 0);
}

static int on_message_begin(llhttp_t *ll)
{
    struct h1_parser *p = from_ll(ll);
    h1_message_free(p->cur);
    p->cur = ens_calloc(1, sizeof(*p->cur));
    p->cur->is_request = p->mode == H1_PARSE_REQUEST;
    rt_buf_init(&p->cur->body, p->max_body);
    rt_buf_reset(&p->field);
    rt_buf_reset(&p->value);
    rt_buf_reset(&p->target);
    p->fields_cap = 0;
    p->in_message = 1;
    p->pause = PAUSE_BEGIN;
    return HPE_PAUSED;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = from_ll(ll);
    if (rt_buf_append(&p->target, at, n) != 0)
        return limit_fail(p, H1_ERR_HEADERS_TOO_BIG);
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = from_ll(ll);
    if (rt_buf_append(&p->field, at, n) != 0)
        return limit_fail(p, H1_ERR_HEADERS_TOO_BIG);
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = from_ll(ll);
    if (rt_buf_append(&p->value, at, n) != 0)
        return limit_fail(p, H1_ERR_HEADERS_TOO_BIG);
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct h1_parser *p = from_ll(ll);
    struct h1_message *m = p->cur;
    if (m->nheaders >= H1_MAX_HEADERS)
        return limit_fail(p, H1_ERR_TOO_MANY_HEADERS);
    if (!field_ok(rt_buf_span(&p->field), rt_buf_span(&p->value)))
        return limit_fail(p, H1_ERR_MALFORMED);
    if (m->nheaders == p->fields_cap) {
        p->fields_cap = p->fields_cap ? p->fields_cap * 2 : 8;
        m->headers = ens_realloc(m->headers, p->fields_cap * sizeof(*m->headers));
    }
    struct h1_field *f = &m->headers[m->nheaders++];
    f->name = ens_memdup(p->field.data ? (const void *)p->field.data : "", p->field.len);
    f->name_len = p->field.len;
    f->value = ens_memdup(p->value.data ? (const void *)p->value.data : "", p->value.len);
    f->value_len = p->value.len;
    rt_buf_reset(&p->field);
    rt_buf_reset(&p->value);
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct h1_parser *p = from_ll(ll);
    struct h1_message *m = p->cur;
    m->http_major = ll->http_major;
    m->http_minor = ll->http_minor;
    if (p->mode == H1_PARSE_REQUEST) {
        m->method = llhttp_method_name((llhttp_method_t)ll->method);
        m->target = ens_memdup(p->target.data ? (const void *)p->target.data : "", p->target.len);
        m->target_len = p->target.len;
    } else {
        m->status = ll->status_code;
    }
    /* Refuse a declared body before reading it, so a server can answer 413
     * without swallowing megabytes first. */
    if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length > p->max_body)
        return limit_fail(p, H1_ERR_BODY_TOO_BIG);
    /* RFC 9110 10.1.1: a client that sent "Expect: 100-continue" may wait
     * for an interim answer before sending its body (.NET waits 350 ms, and
     * Exchange's callbacks are .NET). Only a body still to come needs one. */
    p->continue_due = 0;
    if (p->mode == H1_PARSE_REQUEST && !(ll->http_major == 1 && ll->http_minor == 0) &&
        (((ll->flags & F_CONTENT_LENGTH) && ll->content_length > 0) || (ll->flags & F_CHUNKED))) {
        struct span ex = h1_message_header(m, "expect");
        p->continue_due = ex.p != NULL && span_eq_nocase(ex, "100-continue");
    }
    if (p->no_body) {
        /* Returning 1 (skip the body) rules out pausing here; the head of a
         * HEAD answer is still bounded by the span buffers' caps. */
        p->in_head = 0;
        return 1;
    }
    p->pause = PAUSE_HEADERS;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    struct h1_parser *p = from_ll(ll);
    if (rt_buf_append(&p->cur->body, at, n) != 0)
        return limit_fail(p, H1_ERR_BODY_TOO_BIG);
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct h1_parser *p = from_ll(ll);
    struct h1_message *m = p->cur;
    p->cur = NULL;
    p->in_message = 0;
    p->no_body = 0;
    m->keep_alive = llhttp_should_keep_alive(ll);
    int last = !m->keep_alive;
    if (p->cb(m, p->ud) == H1_PARSER_PAUSE || last) {
        /* After a message that ends the connection nothing may follow; stop
         * here so that the next feed can refuse it. */
        p->closed = last;
        p->pause = PAUSE_USER;
        return HPE_PAUSED;
    }
    return 0;
}

struct h1_parser *h1_parser_new(enum h1_parser_mode mode, size_t max_body, h1_message_cb cb,
                                void *ud)
{
    struct h1_parser *p = ens_calloc(1, sizeof(*p));
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_url = on_url;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_value = on_header_value;
    p->settings.on_header_value_complete = on_header_value_complete;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    llhttp_init(&p->ll, mode == H1_PARSE_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &p->settings);
    p->ll.data = p;
    p->mode = mode;
    p->max_body = max_body;
    p->cb = cb;
    p->ud = ud;
    rt_buf_init(&p->field, H1_MAX_HEADER_BYTES);
    rt_buf_init(&p->value, H1_MAX_HEADER_BYTES);
    rt_buf_init(&p->target, H1_MAX_HEADER_BYTES);
    return p;
}

void h1_parser_free(struct h1_parser *p)
{
    if (!p)
        return;
    h1_message_free(p->cur);
    rt_buf_cleanup(&p->field);
    rt_buf_cleanup(&p->value);
    rt_buf_cleanup(&p->target);
    ens_free(p);
}

static ssize_t set_error(struct h1_parser *p, enum h1_parse_error e)
{
    if (!p->perr)
        p->perr = e;
    p->err = p->perr == H1_ERR_MALFORMED ? ENS_EPARSE : ENS_ETOOBIG;
    h1_message_free(p->cur);
    p->cur = NULL;
    return p->err;
}

/* head_add counts raw head bytes up to |upto| and checks the limit. */
static int head_add(struct h1_parser *p, const uint8_t *upto)
{
    p->header_bytes += (size_t)(upto - p->head_from);
    p->head_from = upto;
    return p->header_bytes > H1_MAX_HEADER_BYTES ? -1 : 0;
}

ssize_t h1_parser_feed(struct h1_parser *p, const uint8_t *data, size_t len)
{
    if (p->err)
        return p->err;
    if ((p->upgraded || p->closed) && len)
        return set_error(p, H1_ERR_MALFORMED);
    const uint8_t *pos = data;
    const uint8_t *end = data + len;
    p->head_from = data;
    /* After a pause llhttp may owe callbacks that need no input (a message
     * without body completes right after its head), so run it once more even
     * when every byte has been seen. */
    int resumed = 0;
    while (pos < end || resumed) {
        resumed = 0;
        p->pause = PAUSE_NONE;
        llhttp_errno_t e = llhttp_execute(&p->ll, (const char *)pos, (size_t)(end - pos));
        if (e == HPE_OK) {
            if (p->in_head && head_add(p, end) != 0)
                return set_error(p, H1_ERR_HEADERS_TOO_BIG);
            break;
        }
        if (e == HPE_PAUSED) {
            const uint8_t *at = (const uint8_t *)llhttp_get_error_pos(&p->ll);
            llhttp_resume(&p->ll);
            switch (p->pause) {
            case PAUSE_BEGIN:
                p->in_head = 1;
                p->header_bytes = 0;
                p->head_from = at;
                break;
            case PAUSE_HEADERS:
                p->in_head = 0;
                if (head_add(p, at) != 0)
                    return set_error(p, H1_ERR_HEADERS_TOO_BIG);
                break;
            case PAUSE_USER:
                return at - data;
            case PAUSE_NONE:
                return set_error(p, H1_ERR_MALFORMED);
            }
            pos = at;
            resumed = 1;
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            /* We speak no other protocol on this connection: whatever follows
             * an Upgrade/CONNECT message is refused. The message itself has
             * been delivered. */
            p->upgraded = 1;
            return (const uint8_t *)llhttp_get_error_pos(&p->ll) - data;
        }
        return set_error(p, p->perr ? p->perr : H1_ERR_MALFORMED);
    }
    return (ssize_t)len;
}

int h1_parser_finish(struct h1_parser *p)
{
    if (p->err)
        return p->err;
    int was_in_message = p->in_message;
    llhttp_errno_t e = llhttp_finish(&p->ll);
    if (e == HPE_OK || e == HPE_PAUSED)
        return p->in_message ? ENS_ECLOSED : 0;
    if (p->perr)
        return (int)set_error(p, p->perr);
    (void)was_in_message;
    return ENS_ECLOSED;
}

void h1_parser_expect_no_body(struct h1_parser *p, int on)
{
    p->no_body = on;
}

int h1_parser_continue_due(struct h1_parser *p)
{
    int due = p->continue_due && p->in_message;
    p->continue_due = 0;
    return due;
}

int h1_parser_in_message(const struct h1_parser *p)
{
    return p->in_message;
}

enum h1_parse_error h1_parser_error(const struct h1_parser *p)
{
    return p->err ? p->perr : H1_ERR_NONE;
}

int h1_parser_error_status(const struct h1_parser *p)
{
    static const int kStatus[] = {
        [H1_ERR_NONE] = 0,
        [H1_ERR_MALFORMED] = 400,
        [H1_ERR_HEADERS_TOO_BIG] = 431,
        [H1_ERR_TOO_MANY_HEADERS] = 431,
        [H1_ERR_BODY_TOO_BIG] = 413,
    };
    return kStatus[h1_parser_error(p)];
}
