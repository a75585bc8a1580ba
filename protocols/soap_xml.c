#include "protocols/soap_xml.h"

#include <pthread.h>
#include <string.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlmemory.h>

#include "protocols/limits.h"
#include "protocols/xml_prescan.h"
#include "runtime/alloc.h"
#include "runtime/err.h"

/* libxml2's xmlStrdupFunc takes a const char *; ens_strdup matches it exactly. */
static pthread_once_t soap_once = PTHREAD_ONCE_INIT;

static void soap_init_once(void)
{
    /* The allocator must be swapped before libxml2 allocates anything, or memory
     * from one allocator would be freed by the other. ens_* sit on malloc, so a
     * stray early allocation would still be freed correctly. */
    xmlMemSetup(ens_free, ens_malloc, ens_realloc, ens_strdup);
    xmlInitParser();
}

int soap_init(void)
{
    pthread_once(&soap_once, soap_init_once);
    return 0;
}

/* Per-parse state, reached through ctxt->_private from the SAX callbacks. */
struct parse_guard {
    int depth;
    int refused;
};

static void guard_refuse(xmlParserCtxtPtr ctxt)
{
    struct parse_guard *g = ctxt->_private;
    g->refused = 1;
    xmlStopParser(ctxt);
}

/* Counting depth in the SAX layer refuses a hostile document while it is being
 * read, before a deep tree exists that a recursive walk could trip over. */
static void guard_start_element(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                                const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                                int nb_attributes, int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_guard *g = ctxt->_private;
    if (++g->depth > SOAP_MAX_DEPTH) {
        guard_refuse(ctxt);
        return;
    }
    xmlSAX2StartElementNs(ctx, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
                          nb_defaulted, attributes);
}

static void guard_end_element(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                              const xmlChar *uri)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_guard *g = ctxt->_private;
    g->depth--;
    xmlSAX2EndElementNs(ctx, localname, prefix, uri);
}

/* SOAP forbids a DTD (SOAP 1.1 section 3), and every XXE and entity-expansion
 * attack needs one, so the first sign of a DOCTYPE ends the parse before its
 * internal subset is even read. */
static void guard_internal_subset(void *ctx, const xmlChar *name, const xmlChar *external_id,
                                  const xmlChar *system_id)
{
    guard_refuse(ctx);
}

static void guard_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                              const xmlChar *system_id, xmlChar *content)
{
    guard_refuse(ctx);
}

static xmlEntityPtr guard_get_entity(void *ctx, const xmlChar *name)
{
    /* Only the five predefined entities exist in a document without a DTD, and
     * libxml2 resolves those itself; any other reference is refused. */
    guard_refuse(ctx);
    return NULL;
}

static void guard_silent_error(void *data, xmlErrorPtr err)
{
    /* libxml2 messages quote document text, which may be mail content: drop them. */
}

int soap_xml_parse(struct span in, xmlDoc **out)
{
    *out = NULL;
    if (in.len > SOAP_MAX_BODY)
        return ENS_ETOOBIG;
    if (in.len == 0)
        return ENS_EPARSE;
    /* Before libxml2: some shapes cost it quadratic time before any guard
     * below can run. */
    if (xml_prescan(in) != XML_PRESCAN_OK)
        return ENS_EPARSE;
    soap_init();

    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (ctxt == NULL)
        return ENS_ENOMEM;
    struct parse_guard guard = {0, 0};
    ctxt->_private = &guard;
    ctxt->sax->startElementNs = guard_start_element;
    ctxt->sax->endElementNs = guard_end_element;
    ctxt->sax->internalSubset = guard_internal_subset;
    ctxt->sax->externalSubset = guard_internal_subset;
    ctxt->sax->entityDecl = guard_entity_decl;
    ctxt->sax->getEntity = guard_get_entity;
    ctxt->sax->getParameterEntity = guard_get_entity;
    ctxt->sax->serror = guard_silent_error;

    /* Deliberately absent: XML_PARSE_NOENT, XML_PARSE_DTDLOAD, XML_PARSE_DTDATTR,
     * XML_PARSE_DTDVALID, XML_PARSE_HUGE, XML_PARSE_XINCLUDE. */
    int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
    xmlDoc *doc = xmlCtxtReadMemory(ctxt, (const char *)in.p, (int)in.len, NULL, NULL, options);
    int ok = doc != NULL && !guard.refused && ctxt->wellFormed && ctxt->nsWellFormed &&
             doc->intSubset == NULL && xmlDocGetRootElement(doc) != NULL;
    ctxt->_private = NULL;
    xmlFreeParserCtxt(ctxt);
    if (!ok) {
        xmlFreeDoc(doc);
        return ENS_EPARSE;
    }
    *out = doc;
    return 0;
}

void soap_xml_free(xmlDoc *doc)
{
    if (doc)
        xmlFreeDoc(doc);
}

int soap_xml_is(const xmlNode *n, const char *ns, const char *local)
{
    if (n == NULL || n->type != XML_ELEMENT_NODE || !xmlStrEqual(n->name, BAD_CAST local))
        return 0;
    if (ns == NULL)
        return n->ns == NULL;
    return n->ns != NULL && n->ns->href != NULL && xmlStrEqual(n->ns->href, BAD_CAST ns);
}

static xmlNode *next_match(xmlNode *n, const char *ns, const char *local)
{
    for (; n != NULL; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (local == NULL || soap_xml_is(n, ns, local))
            return n;
    }
    return NULL;
}

xmlNode *soap_xml_child(const xmlNode *parent, const char *ns, const char *local)
{
    return parent ? next_match(parent->children, ns, local) : NULL;
}

xmlNode *soap_xml_next(const xmlNode *n, const char *ns, const char *local)
{
    return n ? next_match(n->next, ns, local) : NULL;
}

xmlNode *soap_xml_first_element(const xmlNode *parent)
{
    return parent ? next_match(parent->children, NULL, NULL) : NULL;
}

static int is_xml_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* utf8_cut returns the largest length <= |cap| that does not split a UTF-8
 * sequence of |s| (which is at least |cap| bytes long). */
static size_t utf8_cut(const uint8_t *s, size_t len, size_t cap)
{
    if (len <= cap)
        return len;
    size_t n = cap;
    while (n > 0 && (s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

int soap_xml_text(const xmlNode *n, size_t cap, int trim, enum soap_xml_overflow overflow,
                  char **out)
{
    *out = NULL;
    size_t total = 0;
    for (const xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content)
            total += strlen((const char *)c->content);

    uint8_t *text = ens_malloc(total + 1);
    size_t len = 0;
    for (const xmlNode *c = n ? n->children : NULL; c; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            size_t k = strlen((const char *)c->content);
            memcpy(text + len, c->content, k);
            len += k;
        }
    }
    size_t start = 0;
    if (trim) {
        while (start < len && is_xml_space(text[start]))
            start++;
        while (len > start && is_xml_space(text[len - 1]))
            len--;
    }
    len -= start;
    if (len > cap) {
        if (overflow == SOAP_XML_STRICT) {
            ens_free(text);
            return ENS_ETOOBIG;
        }
        len = utf8_cut(text + start, len, cap);
    }
    memmove(text, text + start, len);
    text[len] = '\0';
    *out = (char *)text;
    return 0;
}

int soap_xml_attr(const xmlNode *n, const char *name, size_t cap, char **out)
{
    *out = NULL;
    if (n == NULL || n->type != XML_ELEMENT_NODE)
        return ENS_ENOTFOUND;
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    if (v == NULL)
        return ENS_ENOTFOUND;
    size_t len = strlen((const char *)v);
    if (len > cap) {
        xmlFree(v);
        return ENS_ETOOBIG;
    }
    *out = ens_memdup(v, len);
    xmlFree(v);
    return 0;
}

int soap_xml_attr_eq(const xmlNode *n, const char *name, const char *value)
{
    if (n == NULL || n->type != XML_ELEMENT_NODE)
        return 0;
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    int eq = v != NULL && xmlStrEqual(v, BAD_CAST value);
    xmlFree(v);
    return eq;
}
