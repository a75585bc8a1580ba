/* Fuzz target: FCM v1 JSON error bodies (fcm_parse_error_body + fcm_classify),
 * token endpoint answers (fcm_parse_token_response) and Retry-After values. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "protocols/fcm.h"
#include "protocols/limits.h"

static int code_ok(const char *s)
{
    size_t n = strnlen(s, FCM_MAX_CODE + 1);
    if (n > FCM_MAX_CODE)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fcm_error e;
    int rv = fcm_parse_error_body(span_make(data, size), &e);
    if (!code_ok(e.status) || !code_ok(e.code))
        __builtin_trap();
    if (rv == 0 && e.status[0] == 0 && e.code[0] == 0)
        __builtin_trap();
    if (rv != 0 && (e.status[0] || e.code[0] || e.invalid_token))
        __builtin_trap();
    int status = size ? 400 + data[0] % 200 : 200;
    if ((unsigned)fcm_classify(status, rv == 0 ? &e : NULL) > FCM_FATAL)
        __builtin_trap();

    struct rt_buf tok;
    rt_buf_init(&tok, FCM_MAX_ACCESS_TOKEN);
    uint32_t exp;
    rv = fcm_parse_token_response(span_make(data, size), &tok, &exp);
    if (rv == 0 && (tok.len == 0 || exp == 0 || exp > 86400))
        __builtin_trap();
    if (rv != 0 && tok.len != 0)
        __builtin_trap();
    rt_buf_cleanup_secret(&tok);

    if (fcm_parse_retry_after(span_make(data, size < 64 ? size : 64)) > FCM_MAX_RETRY_AFTER_S)
        __builtin_trap();
    return 0;
}
