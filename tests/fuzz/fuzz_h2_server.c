/* libFuzzer target: arbitrary client bytes, after the connection preface, into
 * an HTTP/2 server session with no I/O. Requests are answered at once, held
 * (answered after the next chunk) or left to be orphaned by the session's
 * free, so every stream path runs under ASan. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "protocols/h2_server.h"
#include "runtime/buf.h"

#define MAX_HELD 8

struct fz {
    struct h2_server_session *s;
    int32_t held[MAX_HELD];
    void *cookies[MAX_HELD];
    size_t nheld;
    uint8_t mode;
};

static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void on_request(void *ud, struct h2_server_conn *k, int32_t id, struct h1_message *msg,
                       void **cookie)
{
    (void)k;
    struct fz *f = ud;
    struct span b = rt_buf_span(&msg->body);
    h1_message_free(msg);
    if ((f->mode & 1) && f->nheld < MAX_HELD) {
        *cookie = &f->cookies[f->nheld];
        f->held[f->nheld++] = id;
        return;
    }
    struct h1_header x[] = {{"X-Fuzz", "1"}, {"Connection", "close"}};
    (void)b;
    h2_server_session_respond(f->s, id, 200, "text/plain", (const uint8_t *)"ok", 2, x, 2,
                              (f->mode & 2) != 0);
}

static void on_gone(void *ud, void *cookie)
{
    (void)ud;
    *(void **)cookie = cookie; /* touch it: must still be valid */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f;
    memset(&f, 0, sizeof(f));
    if (size > 0) {
        f.mode = data[0];
        data++;
        size--;
    }
    const struct h2_server_cbs cbs = {on_request, on_gone, NULL};
    struct h1_server_opts o = {.max_body = 1024};
    f.s = h2_server_session_new(&o, &cbs, &f);
    struct rt_buf out;
    rt_buf_init(&out, 64 * 1024 * 1024);
    h2_server_session_flush(f.s, &out);
    int ok = h2_server_session_feed(f.s, (const uint8_t *)kPreface, sizeof(kPreface) - 1) >= 0;
    /* Feed in chunks so that held requests get answered between them. */
    size_t chunk = 1 + (f.mode >> 2) * 7;
    while (ok && size > 0) {
        size_t n = size < chunk ? size : chunk;
        ok = h2_server_session_feed(f.s, data, n) >= 0;
        data += n;
        size -= n;
        if (f.nheld && (f.mode & 4)) {
            h2_server_session_respond(f.s, f.held[--f.nheld], 404, NULL, NULL, 0, NULL, 0, 0);
        }
        rt_buf_reset(&out);
        if (h2_server_session_flush(f.s, &out) != 0)
            break;
        if (f.mode & 8)
            h2_server_session_goaway(f.s);
    }
    (void)h2_server_session_done(f.s);
    h2_server_session_free(f.s);
    rt_buf_cleanup(&out);
    return 0;
}
