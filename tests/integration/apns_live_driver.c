/* Drives protocols/apns over real TLS + HTTP/2 for tests/integration/apns_live.py.
 *
 * usage: apns_live_driver URL CA P8 TEAM KID TOPIC STEP...
 * Each STEP is a comma-separated list of 64-hex device tokens pushed at the same
 * time; the next step starts when all of them have answered. Every result is
 * printed as one JSON line. The payload is a fixed new-mail alert. Exit 0 when
 * every push got a result, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "protocols/apns.h"
#include "protocols/limits.h"
#include "runtime/err.h"

#define MAX_PAR 16

struct driver {
    uv_loop_t *loop;
    struct apns_client *apns;
    const char *topic;
    char **steps;
    int nsteps, step;
    int pending;
    int failures;
    uint8_t payload[APNS_MAX_PAYLOAD];
    size_t payload_len;
};

struct one {
    struct driver *d;
    char token[80];
};

static void next_step(struct driver *d);

static void on_result(const struct apns_result *r, void *ud)
{
    struct one *o = ud;
    struct driver *d = o->d;
    printf("{\"step\":%d,\"token\":\"%s\",\"err\":\"%s\",\"status\":%d,\"reason\":\"%s\","
           "\"class\":\"%s\",\"apns_id\":\"%s\",\"timestamp\":%llu}\n",
           d->step, o->token, r->err ? ens_err_name(r->err) : "", r->status, r->reason,
           apns_class_name(r->cls), r->apns_id, (unsigned long long)r->timestamp_ms);
    fflush(stdout);
    free(o);
    if (--d->pending == 0) {
        d->step++;
        next_step(d);
    }
}

static void next_step(struct driver *d)
{
    if (d->step >= d->nsteps) {
        apns_client_free(d->apns);
        d->apns = NULL;
        return;
    }
    char buf[MAX_PAR * 80];
    snprintf(buf, sizeof(buf), "%s", d->steps[d->step]);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        struct one *o = calloc(1, sizeof(*o));
        o->d = d;
        snprintf(o->token, sizeof(o->token), "%s", tok);
        struct apns_push p = {
            .device_token_hex = o->token,
            .topic = d->topic,
            .push_type = "alert",
            .priority = 10,
            .environment = "production",
            .payload = d->payload,
            .payload_len = d->payload_len,
        };
        d->pending++;
        int rv = apns_send(d->apns, &p, on_result, o);
        if (rv != 0) {
            fprintf(stderr, "apns_send: %s\n", ens_err_name(rv));
            d->pending--;
            d->failures++;
            free(o);
        }
    }
    if (d->pending == 0) {
        d->step++;
        next_step(d);
    }
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: %s URL CA P8 TEAM KID TOPIC STEP...\n", argv[0]);
        return 2;
    }
    struct driver d = {
        .loop = uv_default_loop(), .topic = argv[6], .steps = argv + 7, .nsteps = argc - 7};
    struct apns_opts o = {.url = argv[1],
                          .ca_file = argv[2],
                          .key_file = argv[3],
                          .team_id = argv[4],
                          .key_id = argv[5]};
    char err[256];
    d.apns = apns_client_new(d.loop, &o, err, sizeof(err));
    if (!d.apns) {
        fprintf(stderr, "apns_client_new: %s\n", err);
        return 1;
    }
    struct rt_buf b;
    rt_buf_init(&b, APNS_MAX_PAYLOAD);
    struct apns_new_mail m = {.user_id = "u1",
                              .sender = "Ann \"A\" Smith",
                              .subject = "H\xc3\xa9llo \xe2\x9c\x93",
                              .preview = APNS_PREVIEW_FULL,
                              .badge_on = 1,
                              .badge = 3};
    if (apns_payload_new_mail(&b, &m) != 0)
        return 1;
    memcpy(d.payload, b.data, b.len);
    d.payload_len = b.len;
    rt_buf_cleanup(&b);

    next_step(&d);
    uv_run(d.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(d.loop);
    if (rc != 0)
        fprintf(stderr, "loop not closed cleanly: %s\n", uv_strerror(rc));
    return d.failures || d.step != d.nsteps || rc != 0 ? 1 : 0;
}
