/* Drives protocols/fcm over real TLS + HTTP/2 (and the OAuth token endpoint over
 * TLS + HTTP/1.1) for tests/integration/fcm_live.py.
 *
 * usage: fcm_live_driver URL TOKEN_URL CA SERVICE_ACCOUNT STEP...
 * Each STEP is a comma-separated list of registration tokens pushed at the
 * same time (a fixed new-mail message each); the next step starts when all of
 * them have answered. The step "pause" prints {"pause":N} and waits for a line
 * on stdin, so the test can change the simulator between two pushes of one
 * client. Every result is printed as one JSON line, then {"fetches":N}.
 * Exit 0 when every push got a result, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "protocols/fcm.h"
#include "protocols/limits.h"
#include "runtime/err.h"

#define MAX_STEP 4096

struct driver {
    uv_loop_t *loop;
    struct fcm_client *fcm;
    char **steps;
    int nsteps, step;
    int pending;
    int failures;
};

struct one {
    struct driver *d;
    char token[256];
};

static void next_step(struct driver *d);

static void on_result(const struct fcm_result *r, void *ud)
{
    struct one *o = ud;
    struct driver *d = o->d;
    printf("{\"step\":%d,\"token\":\"%s\",\"err\":\"%s\",\"status\":%d,\"error_status\":\"%s\","
           "\"error_code\":\"%s\",\"name\":\"%s\",\"retry_after\":%u,\"class\":\"%s\"}\n",
           d->step, o->token, r->err ? ens_err_name(r->err) : "", r->status, r->error_status,
           r->error_code, r->name, (unsigned)r->retry_after_s, fcm_class_name(r->cls));
    fflush(stdout);
    free(o);
    if (--d->pending == 0) {
        d->step++;
        next_step(d);
    }
}

static void push_one(struct driver *d, const char *token)
{
    struct one *o = calloc(1, sizeof(*o));
    o->d = d;
    snprintf(o->token, sizeof(o->token), "%s", token);
    struct rt_buf b;
    rt_buf_init(&b, FCM_MAX_PAYLOAD);
    struct fcm_new_mail m = {.token = o->token,
                             .user_id = "u1",
                             .sender = "Ann \"A\" Smith",
                             .subject = "H\xc3\xa9llo \xe2\x9c\x93",
                             .preview = FCM_PREVIEW_FULL,
                             .badge_on = 1,
                             .badge = 3};
    int rv = fcm_payload_new_mail(&b, &m);
    if (rv == 0) {
        struct fcm_push p = {.payload = b.data, .payload_len = b.len};
        d->pending++;
        rv = fcm_send(d->fcm, &p, on_result, o);
        if (rv != 0)
            d->pending--;
    }
    rt_buf_cleanup(&b);
    if (rv != 0) {
        fprintf(stderr, "fcm push %s: %s\n", token, ens_err_name(rv));
        d->failures++;
        free(o);
    }
}

static void next_step(struct driver *d)
{
    while (d->step < d->nsteps && strcmp(d->steps[d->step], "pause") == 0) {
        printf("{\"pause\":%d}\n", d->step);
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof(line), stdin))
            d->failures++;
        d->step++;
    }
    if (d->step >= d->nsteps) {
        printf("{\"fetches\":%llu}\n", (unsigned long long)fcm_client_token_fetches(d->fcm));
        fflush(stdout);
        fcm_client_free(d->fcm);
        d->fcm = NULL;
        return;
    }
    char buf[MAX_STEP];
    snprintf(buf, sizeof(buf), "%s", d->steps[d->step]);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        push_one(d, tok);
    if (d->pending == 0) {
        d->step++;
        next_step(d);
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s URL TOKEN_URL CA SERVICE_ACCOUNT STEP...\n", argv[0]);
        return 2;
    }
    struct driver d = {.loop = uv_default_loop(), .steps = argv + 5, .nsteps = argc - 5};
    struct fcm_opts o = {
        .url = argv[1], .token_url = argv[2], .ca_file = argv[3], .service_account_file = argv[4]};
    char err[256];
    d.fcm = fcm_client_new(d.loop, &o, err, sizeof(err));
    if (!d.fcm) {
        fprintf(stderr, "fcm_client_new: %s\n", err);
        return 1;
    }
    next_step(&d);
    uv_run(d.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(d.loop);
    if (rc != 0)
        fprintf(stderr, "loop not closed cleanly: %s\n", uv_strerror(rc));
    return d.failures || d.step != d.nsteps || rc != 0 ? 1 : 0;
}
