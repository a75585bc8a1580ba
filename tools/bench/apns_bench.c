/* apns_bench: push throughput of protocols/apns (the shared nghttp2 client)
 * toward an HTTP/2 sink, for tools/bench/run.
 *
 * usage: apns_bench URL CA P8 TEAM KID N CONCURRENCY
 *
 * Sends N alert pushes through one apns_client (one TLS + h2 connection) with
 * at most CONCURRENCY in flight, and prints one line of key=value pairs:
 *   pushes=N ok=K failed=F seconds=S pushes_per_s=R
 * The clock runs from the first apns_send to the last result, so it includes
 * the connect and TLS handshake, as h2load's does. Exit 0 when every push was
 * answered 200, 1 otherwise, 2 on usage errors. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "protocols/apns.h"
#include "protocols/limits.h"
#include "runtime/err.h"

#define BENCH_MAX_PUSHES      10000000L
#define BENCH_MAX_CONCURRENCY 1000L
#define BENCH_DEADLINE_MS     30000

struct bench {
    uv_loop_t *loop;
    struct apns_client *apns;
    long total;    /* pushes to send */
    long conc;     /* in-flight cap */
    long sent;     /* apns_send calls accepted */
    long answered; /* callbacks run */
    long ok;
    long failed;
    int first_err; /* first non-200 outcome, for the report */
    int first_status;
    uint64_t t0_ns, t1_ns;
    uint8_t payload[APNS_MAX_PAYLOAD];
    size_t payload_len;
    char token[65];
};

static void bench_fill(struct bench *b);

static void bench_on_result(const struct apns_result *r, void *ud)
{
    struct bench *b = ud;
    b->answered++;
    if (r->err == 0 && r->status == 200) {
        b->ok++;
    } else {
        if (b->failed == 0) {
            b->first_err = r->err;
            b->first_status = r->status;
        }
        b->failed++;
    }
    if (b->answered == b->sent && b->sent == b->total) {
        b->t1_ns = uv_hrtime();
        /* Not from inside the callback (apns.h): free it once this stack unwinds. */
        return;
    }
    bench_fill(b);
}

/* bench_fill tops the window up to |conc| pushes in flight. */
static void bench_fill(struct bench *b)
{
    while (b->sent < b->total && b->sent - b->answered < b->conc) {
        struct apns_push p = {
            .device_token_hex = b->token,
            .topic = "com.example.mail",
            .push_type = "alert",
            .priority = 10,
            .environment = "production",
            .payload = b->payload,
            .payload_len = b->payload_len,
            .deadline_ms = uv_now(b->loop) + BENCH_DEADLINE_MS,
        };
        int rv = apns_send(b->apns, &p, bench_on_result, b);
        if (rv != 0) {
            /* The callback never runs for this one: count it and stop feeding,
             * so a broken client ends the run instead of spinning. */
            fprintf(stderr, "apns_send: %s\n", ens_err_name(rv));
            b->failed++;
            b->total = b->sent;
            if (b->answered == b->sent && b->t1_ns == 0)
                b->t1_ns = uv_hrtime();
            return;
        }
        b->sent++;
    }
}

/* bench_on_check runs after each loop iteration's I/O: the place to free the
 * client once every push is answered, outside any of its callbacks. */
static void bench_on_check(uv_check_t *h)
{
    struct bench *b = h->data;
    if (b->t1_ns == 0 || !b->apns)
        return;
    apns_client_free(b->apns);
    b->apns = NULL;
    uv_close((uv_handle_t *)h, NULL);
}

static int bench_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!s[0] || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

int main(int argc, char **argv)
{
    static struct bench b;
    if (argc != 8 || !bench_parse_long(argv[6], 1, BENCH_MAX_PUSHES, &b.total) ||
        !bench_parse_long(argv[7], 1, BENCH_MAX_CONCURRENCY, &b.conc)) {
        fprintf(stderr, "usage: %s URL CA P8 TEAM KID N CONCURRENCY\n", argv[0]);
        return 2;
    }
    b.loop = uv_default_loop();
    struct apns_opts o = {.url = argv[1],
                          .sandbox_url = argv[1],
                          .ca_file = argv[2],
                          .key_file = argv[3],
                          .team_id = argv[4],
                          .key_id = argv[5]};
    char err[256];
    b.apns = apns_client_new(b.loop, &o, err, sizeof(err));
    if (!b.apns) {
        fprintf(stderr, "apns_client_new: %s\n", err);
        return 1;
    }
    memset(b.token, 'a', 64);
    struct rt_buf pb;
    rt_buf_init(&pb, APNS_MAX_PAYLOAD);
    struct apns_new_mail m = {.user_id = "bench-user",
                              .sender = "Ann Smith",
                              .subject = "Quarterly figures",
                              .preview = APNS_PREVIEW_FULL,
                              .badge_on = 1,
                              .badge = 3};
    if (apns_payload_new_mail(&pb, &m) != 0) {
        fprintf(stderr, "apns_payload_new_mail failed\n");
        return 1;
    }
    memcpy(b.payload, pb.data, pb.len);
    b.payload_len = pb.len;
    rt_buf_cleanup(&pb);

    uv_check_t check;
    uv_check_init(b.loop, &check);
    check.data = &b;
    uv_check_start(&check, bench_on_check);

    b.t0_ns = uv_hrtime();
    bench_fill(&b);
    uv_run(b.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(b.loop);
    if (b.t1_ns == 0)
        b.t1_ns = uv_hrtime();
    double secs = (double)(b.t1_ns - b.t0_ns) / 1e9;
    printf("pushes=%ld ok=%ld failed=%ld seconds=%.3f pushes_per_s=%.1f payload_bytes=%zu\n",
           b.total, b.ok, b.failed, secs, secs > 0 ? (double)b.ok / secs : 0.0, b.payload_len);
    if (b.failed)
        fprintf(stderr, "first failure: err=%s status=%d\n",
                b.first_err ? ens_err_name(b.first_err) : "none", b.first_status);
    if (rc != 0)
        fprintf(stderr, "loop not closed cleanly: %s\n", uv_strerror(rc));
    return b.failed || b.ok != b.total ? 1 : 0;
}
