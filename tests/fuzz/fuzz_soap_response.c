/* libFuzzer target: every EWS answer parser (Subscribe, GetItem, GetFolder),
 * each fed the same bytes, since a hostile or broken server chooses which
 * answer we get. */
#include <stddef.h>
#include <stdint.h>

#include "protocols/soap_ews.h"
#include "protocols/soap_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready)
        ready = soap_init() == 0;
    struct span in = span_make(data, size);

    struct soap_ews_subscribe_resp sr;
    (void)soap_ews_subscribe_parse(in, &sr);
    soap_ews_subscribe_resp_cleanup(&sr);

    struct soap_ews_getitem_resp gi;
    if (soap_ews_getitem_parse(in, &gi) == 0)
        for (size_t i = 0; i < gi.n_items; i++)
            (void)soap_ews_class_name(gi.items[i].st.cls);
    soap_ews_getitem_resp_cleanup(&gi);

    struct soap_ews_getfolder_resp gf;
    (void)soap_ews_getfolder_parse(in, &gf);
    soap_ews_getfolder_resp_cleanup(&gf);
    return 0;
}
