/* Fuzz target: APNs JSON error bodies (apns_parse_error_body + apns_classify). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "protocols/apns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char reason[APNS_MAX_REASON + 1];
    uint64_t ts;
    int rv = apns_parse_error_body(span_make(data, size), reason, sizeof(reason), &ts);
    if (rv == 0 && (strlen(reason) == 0 || strlen(reason) > APNS_MAX_REASON))
        __builtin_trap();
    if (rv != 0 && (reason[0] != 0 || ts != 0))
        __builtin_trap();
    int status = size ? 400 + data[0] % 200 : 200;
    (void)apns_classify(status, reason);
    return 0;
}
