/* The one safe way we run libxml2.
 *
 * Every XML document that reaches ENS comes from the network (Exchange
 * callbacks, EWS answers), so it is parsed here and only here: from memory,
 * never from the network (XML_PARSE_NONET), without entity substitution or DTD
 * loading, refusing any document that carries a DOCTYPE at all (XXE, billion
 * laughs), with a size cap (SOAP_MAX_BODY) and a nesting cap (SOAP_MAX_DEPTH)
 * enforced while parsing, and with libxml2's own error output silenced.
 *
 * The helpers below look elements up by (namespace URI, local name) so that any
 * prefix (soap11:, s:, soap:, a default namespace) is accepted. */
#ifndef ENS_PROTOCOLS_SOAP_XML_H
#define ENS_PROTOCOLS_SOAP_XML_H

#include <stddef.h>

#include <libxml/tree.h>

#include "runtime/span.h"

#define SOAP_NS_ENVELOPE "http://schemas.xmlsoap.org/soap/envelope/"
#define SOAP_NS_MESSAGES "http://schemas.microsoft.com/exchange/services/2006/messages"
#define SOAP_NS_TYPES    "http://schemas.microsoft.com/exchange/services/2006/types"
#define SOAP_NS_ERRORS   "http://schemas.microsoft.com/exchange/services/2006/errors"

/* soap_init initialises libxml2 once for the whole process and routes its
 * allocations through ens_malloc & co. libxml2 2.9's global initialisation is not
 * thread-safe (its first use from two threads at once races on the global
 * state), so the server calls this from main() before starting scheduler
 * threads. Safe to call again (pthread_once); returns 0. */
int soap_init(void);

/* soap_xml_parse parses the |in| bytes into a document. Returns 0 and sets
 * |*out| (owned by the caller, free with soap_xml_free); ENS_ETOOBIG when |in| is
 * larger than SOAP_MAX_BODY; ENS_EPARSE when the bytes are not well-formed
 * namespace-correct XML, carry a DOCTYPE or entity declaration, or nest elements
 * deeper than SOAP_MAX_DEPTH. Never reads past |in|, never touches the network
 * or the file system, never writes to stderr. Any thread, after soap_init. */
int soap_xml_parse(struct span in, xmlDoc **out);

/* soap_xml_free frees a document from soap_xml_parse; NULL is fine. */
void soap_xml_free(xmlDoc *doc);

/* soap_xml_is reports whether |n| is an element named |local| in namespace |ns|
 * (NULL |ns| means "no namespace"). */
int soap_xml_is(const xmlNode *n, const char *ns, const char *local);

/* soap_xml_child returns the first element child of |parent| named (|ns|,
 * |local|), or NULL. The node is borrowed from the document. */
xmlNode *soap_xml_child(const xmlNode *parent, const char *ns, const char *local);

/* soap_xml_next returns the next element sibling after |n| named (|ns|,
 * |local|), or NULL. A NULL |local| matches any element (then |ns| is ignored). */
xmlNode *soap_xml_next(const xmlNode *n, const char *ns, const char *local);

/* soap_xml_first_element returns the first element child of |parent|, or NULL. */
xmlNode *soap_xml_first_element(const xmlNode *parent);

/* How soap_xml_text treats text longer than its cap. */
enum soap_xml_overflow {
    SOAP_XML_STRICT = 0, /* fail with ENS_ETOOBIG (identifiers: a cut one is wrong) */
    SOAP_XML_TRUNCATE,   /* cut on a UTF-8 boundary (display text such as subjects) */
};

/* soap_xml_text copies the text directly inside element |n| (text and CDATA
 * children, concatenated) into a new NUL-terminated string in |*out| (free with
 * ens_free). With |trim|, leading and trailing XML whitespace is dropped. Text
 * longer than |cap| bytes gives ENS_ETOOBIG or is truncated, per |overflow|.
 * Returns 0 or ENS_ETOOBIG; on error |*out| is NULL. */
int soap_xml_text(const xmlNode *n, size_t cap, int trim, enum soap_xml_overflow overflow,
                  char **out);

/* soap_xml_attr copies the value of the unqualified attribute |name| of |n| into
 * |*out| (free with ens_free), at most |cap| bytes. Returns 0, ENS_ENOTFOUND when
 * the attribute is absent, or ENS_ETOOBIG. */
int soap_xml_attr(const xmlNode *n, const char *name, size_t cap, char **out);

/* soap_xml_attr_eq reports whether unqualified attribute |name| of |n| equals
 * |value| exactly. */
int soap_xml_attr_eq(const xmlNode *n, const char *name, const char *value);

#endif
