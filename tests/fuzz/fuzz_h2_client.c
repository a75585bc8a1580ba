/* Fuzz target: arbitrary server bytes into an h2_client session with requests in flight. */
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "protocols/h2_client.h"
#include "protocols/h2_client_int.h"
#include "runtime/buf.h"
#include "runtime/log.h"

static void on_resp(int err, const struct h2_response *r, void *ud)
{
    /* Touch everything the client hands out so ASan sees bad lengths. */
    if (r) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < r->body.len; i++)
            sink ^= r->body.p[i];
        for (size_t i = 0; i < r->nheaders; i++)
            sink ^= (uint8_t)r->headers[i].name[0] ^ (uint8_t)r->headers[i].value[0];
        (void)sink;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        rt_log_setup(RT_LOG_OFF, RT_LOG_TEXT);
        once = 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rt_buf sink;
    rt_buf_init(&sink, 1 << 20);
    /* Port 9 on loopback: a reconnect attempt is refused at once. */
    struct h2_client *c = h2_client_new(&loop, "127.0.0.1", 9, NULL);
    h2__client_attach(c, h2__memstream_new(&loop, &sink));
    struct h2_header h[] = {{"apns-topic", "t", 0}};
    for (int i = 0; i < 3; i++)
        h2_client_request(c, "POST", "/3/device/ab", h, 1, (const uint8_t *)"{}", 2,
                          uv_now(&loop) + 10000, on_resp, NULL);
    h2__client_kick(c);
    /* A valid connection preface first (an empty SETTINGS frame) lets the input
     * reach frame parsing rather than dying on a bad preface every time. */
    static const uint8_t settings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    h2__client_feed(c, settings, sizeof(settings));
    /* Feed in two pieces so that frame reassembly is exercised too. */
    size_t half = size / 2;
    if (h2__client_feed(c, data, half) == 0)
        h2__client_feed(c, data + half, size - half);
    h2_client_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rt_buf_cleanup(&sink);
    return 0;
}
