/* libFuzzer target: the SendNotification callback parser, the first code that
 * sees bytes POSTed by anyone who knows a callback URL. */
#include <stddef.h>
#include <stdint.h>

#include "protocols/soap_ews.h"
#include "protocols/soap_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready)
        ready = soap_init() == 0;
    struct soap_notification_batch nb;
    if (soap_notification_parse(span_make(data, size), &nb) == 0) {
        /* touch what a caller would read, so ASan sees any bad pointer */
        for (size_t i = 0; i < nb.n_msgs; i++) {
            const struct soap_notification *n = nb.msgs[i].notification;
            for (size_t e = 0; n && e < n->n_events; e++)
                (void)soap_event_type_name(n->events[e].type);
        }
    }
    soap_notification_batch_cleanup(&nb);
    return 0;
}
