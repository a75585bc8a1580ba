/* libFuzzer: the stored record decoders (bytes read back from Redis are
 * untrusted). The first byte picks the decoder: even for a device record,
 * odd for a whole mailbox record. Whatever decodes must encode again; a
 * device must give back exactly the input bytes (one encoding per device),
 * and a mailbox must decode again to the same user. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "persistence/store_user.h"
#include "runtime/buf.h"

static void device(const uint8_t *data, size_t size)
{
    struct store_device d, again;
    memset(&d, 0, sizeof(d));
    if (store_device_decode(span_make(data, size), &d) != 0)
        return;
    struct rt_buf b;
    rt_buf_init(&b, STORE_MAX_DEVICE_RECORD);
    if (store_device_encode(&d, &b) != 0 || b.len != size || memcmp(b.data, data, size) != 0)
        abort();
    memset(&again, 0, sizeof(again));
    if (store_device_decode(rt_buf_span(&b), &again) != 0 || memcmp(&d, &again, sizeof(d)) != 0)
        abort();
    rt_buf_cleanup(&b);
}

static void mailbox(const uint8_t *data, size_t size)
{
    static const char uid[] = "AAAAAAAAAAAAAAAAAAAAAA";
    struct store_user *u = NULL, *again = NULL;
    if (store_user_decode(span_make(data, size), uid, &u) != 0)
        return;
    struct rt_buf b;
    rt_buf_init(&b, STORE_MAX_MAILBOX_RECORD);
    if (store_user_encode(u, &b) != 0)
        abort();
    if (store_user_decode(rt_buf_span(&b), uid, &again) != 0 || again->n_devices != u->n_devices ||
        (u->n_devices &&
         memcmp(again->devices, u->devices, u->n_devices * sizeof(*u->devices)) != 0))
        abort();
    struct store_device *d1 = u->devices, *d2 = again->devices;
    u->devices = again->devices = NULL;
    if (memcmp(u, again, sizeof(*u)) != 0)
        abort();
    u->devices = d1;
    again->devices = d2;
    rt_buf_cleanup(&b);
    store_user_free(again);
    store_user_free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        mailbox(data + 1, size - 1);
    else
        device(data + 1, size - 1);
    return 0;
}
