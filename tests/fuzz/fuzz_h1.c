/* libFuzzer targets fuzz_h1_request and fuzz_h1_response: HTTP/1.1 messages
 * through h1_parser, whole and in pieces. FUZZ_H1_MODE picks the parser mode. */
#include <stddef.h>
#include <stdint.h>

#include "protocols/h1_parser.h"

static int on_msg(struct h1_message *m, void *ud)
{
    /* Touch what consumers read so that bad lengths surface under ASan. */
    struct span h = h1_message_header(m, "content-type");
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < h.len; i++)
        sink ^= h.p[i];
    for (size_t i = 0; i < m->body.len; i++)
        sink ^= m->body.data[i];
    (void)sink;
    h1_message_free(m);
    return (*(int *)ud)++ % 3 == 2 ? H1_PARSER_PAUSE : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int count = 0;
    struct h1_parser *p = h1_parser_new(FUZZ_H1_MODE, 4096, on_msg, &count);
    /* The first byte picks a split point so that message boundaries inside a
     * feed and across feeds are both exercised. */
    size_t split = size ? data[0] % (size + 1) : 0;
    const uint8_t *parts[2] = {data, data + split};
    size_t lens[2] = {split, size - split};
    for (int k = 0; k < 2; k++) {
        const uint8_t *q = parts[k];
        size_t left = lens[k];
        while (left) {
            ssize_t n = h1_parser_feed(p, q, left);
            if (n <= 0)
                break;
            q += n;
            left -= (size_t)n;
        }
    }
    (void)h1_parser_finish(p);
    h1_parser_free(p);
    return 0;
}
