/* HTTP/1.1 message codec over llhttp: bytes in, complete messages out.
 *
 * Pure protocol code (house rule 11): no I/O, no timers. The parser enforces
 * H1_MAX_HEADER_BYTES over the request/status line plus all header lines,
 * H1_MAX_HEADERS header fields and a body cap chosen at creation, and tells the
 * caller which limit failed so that a server can answer 400, 413 or 431.
 * Not thread-safe; one parser per connection. */
#ifndef ENS_PROTOCOLS_H1_PARSER_H
#define ENS_PROTOCOLS_H1_PARSER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/buf.h"
#include "runtime/span.h"

enum h1_parser_mode { H1_PARSE_REQUEST = 0, H1_PARSE_RESPONSE = 1 };

/* Why parsing stopped for good. */
enum h1_parse_error {
    H1_ERR_NONE = 0,
    H1_ERR_MALFORMED,        /* syntax error: answer 400 */
    H1_ERR_HEADERS_TOO_BIG,  /* more than H1_MAX_HEADER_BYTES: answer 431 */
    H1_ERR_TOO_MANY_HEADERS, /* more than H1_MAX_HEADERS fields: answer 431 */
    H1_ERR_BODY_TOO_BIG,     /* body (declared or received) over the cap: answer 413 */
};

/* One header field; |name| and |value| are owned, NUL-terminated copies (the
 * lengths are authoritative: values may contain NUL bytes). */
struct h1_field {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
};

/* A complete message. Owned by whoever receives it from the callback; free
 * with h1_message_free. */
struct h1_message {
    int is_request;
    const char *method; /* request: static name ("GET"); response: NULL */
    char *target;       /* request: owned, NUL-terminated request-target */
    size_t target_len;
    int status; /* response: status code */
    uint8_t http_major;
    uint8_t http_minor;
    struct h1_field *headers;
    size_t nheaders;
    struct rt_buf body; /* decoded body (chunked framing removed) */
    int keep_alive;     /* the connection may carry another message after this one */
};

/* h1_message_free frees |m| and everything it owns; NULL is fine. */
void h1_message_free(struct h1_message *m);

/* h1_message_header returns the value of the first field named |name| (ASCII
 * case-insensitive) borrowed from |m|, or a span with p == NULL if absent. */
struct span h1_message_header(const struct h1_message *m, const char *name);

/* Message callback: takes ownership of |m|. Return 0 to go on parsing the same
 * buffer, or H1_PARSER_PAUSE to make h1_parser_feed return right after this
 * message (the caller feeds the rest later). Must not free the parser. */
#define H1_PARSER_PAUSE 1
typedef int (*h1_message_cb)(struct h1_message *m, void *ud);

struct h1_parser;

/* h1_parser_new creates a parser for requests or responses whose bodies are at
 * most |max_body| bytes. Never NULL (allocation aborts). */
struct h1_parser *h1_parser_new(enum h1_parser_mode mode, size_t max_body, h1_message_cb cb,
                                void *ud);

/* h1_parser_free releases |p| and any partial message; NULL is fine. */
void h1_parser_free(struct h1_parser *p);

/* h1_parser_feed parses up to |len| bytes and returns how many it consumed
 * (fewer than |len| only after a callback asked to pause), or a negative code:
 * ENS_ETOOBIG when a limit was passed (see h1_parser_error), ENS_EPARSE for
 * malformed input or bytes after a message that ends the connection. Errors are
 * sticky: later calls return the same code. */
ssize_t h1_parser_feed(struct h1_parser *p, const uint8_t *data, size_t len);

/* h1_parser_finish signals end of input. A response whose body is delimited by
 * the connection's end is completed and delivered here. 0 if the input ended
 * between messages (or completed one), ENS_EPARSE / ENS_ECLOSED if it ended in
 * the middle of a message. */
int h1_parser_finish(struct h1_parser *p);

/* h1_parser_expect_no_body tells a response parser that the next response
 * answers a HEAD request (no body whatever its headers say). */
void h1_parser_expect_no_body(struct h1_parser *p, int on);

/* h1_parser_continue_due returns 1 once when the request being received asked
 * for "Expect: 100-continue" and its body has not all arrived: the server
 * sends "100 Continue" now, or the client waits before sending the body. */
int h1_parser_continue_due(struct h1_parser *p);

/* h1_parser_in_message reports whether part of a message has been received. */
int h1_parser_in_message(const struct h1_parser *p);

/* h1_parser_error returns why the parser failed (H1_ERR_NONE if it has not). */
enum h1_parse_error h1_parser_error(const struct h1_parser *p);

/* h1_parser_error_status maps h1_parser_error to the HTTP status a server
 * should answer with (400, 413, 431), or 0 if there is no error. */
int h1_parser_error_status(const struct h1_parser *p);

#endif
