/* libFuzzer target for seal_token_parse, and for seal_open_creds on whatever the token opens:
 * the callback path hands both untrusted bytes (the URL) and stored bytes (the blob). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/seal.h"
#include "runtime/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t kServerKey[SEAL_KEY_BYTES] = {1};
    size_t tlen = size < SEAL_TOKEN_CHARS ? size : SEAL_TOKEN_CHARS;
    struct seal_token t;
    int rc = seal_token_parse(span_make(data, size), &t);
    if (rc == 0) {
        /* a token that parses re-encodes to exactly its input */
        char text[SEAL_TOKEN_CHARS + 1];
        seal_token_encode(&t, text);
        if (size != SEAL_TOKEN_CHARS || memcmp(text, data, size) != 0)
            abort();
        seal_token_cleanup(&t);
    } else if (rc != ENS_EPARSE) {
        abort();
    }
    /* The first SEAL_TOKEN_CHARS bytes as a token, the rest as a blob. */
    if (size > SEAL_TOKEN_CHARS && seal_token_parse(span_make(data, tlen), &t) == 0) {
        struct rt_buf out;
        rt_buf_init(&out, SEAL_MAX_CREDS);
        rc = seal_open_creds(&t, kServerKey, span_make(data + tlen, size - tlen), &out);
        if (rc != ENS_ECRYPTO || out.len != 0)
            abort();
        rt_buf_cleanup_secret(&out);
        seal_token_cleanup(&t);
    }
    return 0;
}
