/* A linear scan of an XML body before libxml2 parses it.
 *
 * libxml2 2.9 spends time super-linear in some shapes of input before any of
 * our SAX guards run: its duplicate-attribute check is quadratic in the
 * attributes of one element, namespace lookups walk every declaration in
 * scope, and each unbound prefix costs a formatted error. This scan walks the
 * bytes once, understands just enough XML to find tags (quoted attribute
 * values, comments, processing instructions, CDATA), and refuses a body whose
 * structure exceeds the SOAP_MAX_* limits of protocols/limits.h. It also
 * refuses any DOCTYPE (SOAP forbids one) and any prefix not declared in scope
 * (libxml2 would refuse the document anyway, slowly). It does not check
 * well-formedness: what it lets through, libxml2 still judges.
 *
 * soap_xml_parse calls it first, so every SOAP body from the network (Exchange
 * callbacks, EWS answers) goes through it. Pure; any thread. */
#ifndef ENS_PROTOCOLS_XML_PRESCAN_H
#define ENS_PROTOCOLS_XML_PRESCAN_H

#include "runtime/span.h"

/* What a refused body exceeded, for logs and tests. */
enum xml_prescan_result {
    XML_PRESCAN_OK = 0,
    XML_PRESCAN_ATTRIBUTES,       /* more than SOAP_MAX_ATTRIBUTES on one element */
    XML_PRESCAN_ATTRIBUTES_TOTAL, /* more than SOAP_MAX_ATTRIBUTES_TOTAL in the body */
    XML_PRESCAN_NS_DECLS,         /* more than SOAP_MAX_NS_DECLS on one element */
    XML_PRESCAN_NS_IN_SCOPE,      /* more than SOAP_MAX_NS_IN_SCOPE declarations in scope */
    XML_PRESCAN_UNBOUND_PREFIX,   /* a prefix no declaration in scope binds */
    XML_PRESCAN_ELEMENTS,         /* more than SOAP_MAX_ELEMENTS */
    XML_PRESCAN_DEPTH,            /* nested deeper than SOAP_MAX_DEPTH */
    XML_PRESCAN_NAME,             /* a name longer than SOAP_MAX_NAME_BYTES */
    XML_PRESCAN_DOCTYPE,          /* a DTD or other <! declaration */
};

/* xml_prescan scans |in| in one pass, never reading past in.len, and returns
 * XML_PRESCAN_OK when libxml2 may have it, else what the body exceeded. Time
 * is linear in in.len; it allocates nothing and uses about 3 KB of stack. */
enum xml_prescan_result xml_prescan(struct span in);

/* xml_prescan_name returns a static name for |r| ("attributes"), "?" for a
 * value outside the enum. */
const char *xml_prescan_name(enum xml_prescan_result r);

#endif
