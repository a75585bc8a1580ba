/* libFuzzer: the stored device record decoder (bytes read back from Redis are
 * untrusted). Whatever decodes must encode and decode again to the same device. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "persistence/store_user.h"
#include "runtime/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_device d, again;
    memset(&d, 0, sizeof(d));
    if (store_device_decode(span_make(data, size), &d) != 0)
        return 0;
    struct rt_buf b;
    rt_buf_init(&b, STORE_MAX_DEVICE_JSON);
    if (store_device_encode(&d, &b) != 0)
        abort();
    memset(&again, 0, sizeof(again));
    if (store_device_decode(rt_buf_span(&b), &again) != 0 || memcmp(&d, &again, sizeof(d)) != 0)
        abort();
    rt_buf_cleanup(&b);
    return 0;
}
