/* The enrollment payload of subscribe and check-in (API.md 1.2): the JSON a
 * device seals into its JWE, parsed and checked field by field.
 *
 * This is the syntax only: types, sizes, allowed values and the iat window.
 * Policy (private networks, a tenant's allow-list and preview cap) is the
 * caller's. Pure: no I/O, any thread. */
#ifndef ENS_PROTOCOLS_ENROLL_H
#define ENS_PROTOCOLS_ENROLL_H

#include <stdint.h>

#include "protocols/limits.h"
#include "runtime/buf.h"
#include "runtime/span.h"

struct enroll_payload {
    char email[ENROLL_MAX_EMAIL + 1];
    char ews_url[ENROLL_MAX_URL + 1]; /* "" when absent: Autodiscover would be needed */
    char auth_type[12];               /* "basic" | "oauth" */
    struct rt_buf creds;              /* secret: the "auth" object as compact JSON */
    char device_id[ENROLL_MAX_DEVICE_ID + 1];
    char platform[8]; /* "ios" | "android" */
    char push_token[ENROLL_MAX_PUSH_TOKEN + 1];
    char app_id[ENROLL_MAX_APP_ID + 1];
    char environment[12]; /* "production" (default) | "sandbox" */
    char preview[8];      /* "full" (default) | "sender" | "none" */
    int badge;            /* default on */
    int64_t iat;
};

enum enroll_result {
    ENROLL_OK = 0,
    ENROLL_NOT_JSON,    /* 400 bad_request */
    ENROLL_STALE,       /* 400 stale_request */
    ENROLL_INVALID,     /* 422 invalid_field; *field names it */
    ENROLL_UNSUPPORTED, /* 422 invalid_field: a valid value this server cannot use yet */
};

/* enroll_parse checks |json| (untrusted, borrowed) against the contract with
 * the clock |now| and fills |out| (initialise nothing: it is reset here). On
 * ENROLL_INVALID or ENROLL_UNSUPPORTED, *field is a static string naming the
 * field ("device.pushToken"). Whatever the result, release |out| with
 * enroll_payload_cleanup, which wipes the credentials. */
enum enroll_result enroll_parse(struct span json, int64_t now, struct enroll_payload *out,
                                const char **field);

void enroll_payload_cleanup(struct enroll_payload *p);

/* enroll_preview_rank orders the preview levels: none 0, sender 1, full 2;
 * -1 for anything else. A tenant cap lowers a device's wish to it. */
int enroll_preview_rank(const char *preview);

#endif
