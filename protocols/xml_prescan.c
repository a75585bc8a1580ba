/* One pass over the bytes; see xml_prescan.h. The scanner is a small state
 * machine over markup only: text between tags is skipped with memchr, and
 * every step moves the cursor forward, so the time is linear. Anything it
 * does not understand it steps over and leaves for libxml2 to refuse: the
 * scan only has to be right about cost, never about well-formedness. */
#include "protocols/xml_prescan.h"

#include <string.h>

#include "protocols/limits.h"

/* A namespace prefix, as declared (xmlns:p) or as used (p:name). The hash is
 * compared first so that a lookup among the declarations in scope is a few
 * integer compares, not a memcmp per declaration. */
struct prefix {
    const uint8_t *p;
    size_t len; /* 0 for a default declaration (xmlns=), which binds no prefix */
    uint32_t hash;
};

struct scan {
    const uint8_t *p, *end;
    size_t depth; /* open elements */
    size_t elements, attributes;
    size_t nbound; /* declarations in scope, innermost last */
    struct prefix bound[SOAP_MAX_NS_IN_SCOPE];
    size_t mark[SOAP_MAX_DEPTH]; /* nbound when each open element started */
};

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* find moves past the first |lit| at or after the cursor; 0 when absent
 * (the body ends inside the construct: libxml2 will refuse it). */
static int find(struct scan *s, const char *lit, size_t n)
{
    while ((size_t)(s->end - s->p) >= n) {
        const uint8_t *q = memchr(s->p, lit[0], (size_t)(s->end - s->p) - n + 1);
        if (q == NULL)
            break;
        if (memcmp(q, lit, n) == 0) {
            s->p = q + n;
            return 1;
        }
        s->p = q + 1;
    }
    s->p = s->end;
    return 0;
}

static int has(const struct scan *s, const char *lit, size_t n)
{
    return (size_t)(s->end - s->p) >= n && memcmp(s->p, lit, n) == 0;
}

#define HAS(s, lit)  has((s), (lit), sizeof(lit) - 1)
#define FIND(s, lit) find((s), (lit), sizeof(lit) - 1)

/* name reads a name at the cursor and returns its length (0 if none), or
 * SOAP_MAX_NAME_BYTES + 1 as soon as it is too long. */
static size_t name(struct scan *s)
{
    const uint8_t *start = s->p;
    while (s->p < s->end && !is_space(*s->p) && *s->p != '=' && *s->p != '>' && *s->p != '/' &&
           *s->p != '<' && *s->p != '"' && *s->p != '\'') {
        s->p++;
        if ((size_t)(s->p - start) > SOAP_MAX_NAME_BYTES)
            return SOAP_MAX_NAME_BYTES + 1;
    }
    return (size_t)(s->p - start);
}

static void skip_space(struct scan *s)
{
    while (s->p < s->end && is_space(*s->p))
        s->p++;
}

static struct prefix prefix_make(const uint8_t *p, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    struct prefix x = {p, len, h};
    return x;
}

/* prefix_of sets |out| to the prefix of the qualified name |n|, |len| and
 * returns 1, or returns 0 for a name without one. A name that starts with a
 * colon is malformed; libxml2 judges it. */
static int prefix_of(const uint8_t *n, size_t len, struct prefix *out)
{
    const uint8_t *colon = memchr(n, ':', len);
    if (colon == NULL || colon == n)
        return 0;
    *out = prefix_make(n, (size_t)(colon - n));
    return 1;
}

static int is_bound(const struct scan *s, const struct prefix *x)
{
    if (x->len == 3 && memcmp(x->p, "xml", 3) == 0)
        return 1; /* bound by the Namespaces spec itself */
    for (size_t i = s->nbound; i-- > 0;) {
        const struct prefix *b = &s->bound[i];
        if (b->hash == x->hash && b->len == x->len && memcmp(b->p, x->p, x->len) == 0)
            return 1;
    }
    return 0;
}

/* start_tag scans "<name attr='v' ...>" from just after the '<'. The
 * prefixes it uses are resolved only at the end of the tag, because the tag's
 * own declarations are in scope for its name and attributes. */
static enum xml_prescan_result start_tag(struct scan *s)
{
    const uint8_t *en = s->p;
    size_t el = name(s);
    if (el > SOAP_MAX_NAME_BYTES)
        return XML_PRESCAN_NAME;
    if (++s->elements > SOAP_MAX_ELEMENTS)
        return XML_PRESCAN_ELEMENTS;
    /* counted as the SAX guard of soap_xml.c counts: an empty element nests too */
    if (s->depth >= SOAP_MAX_DEPTH)
        return XML_PRESCAN_DEPTH;
    struct prefix used[SOAP_MAX_ATTRIBUTES + 1];
    size_t nused = 0, attrs = 0, decls = 0, base = s->nbound;
    if (prefix_of(en, el, &used[nused]))
        nused++;
    for (;;) {
        skip_space(s);
        if (s->p >= s->end)
            return XML_PRESCAN_OK; /* cut inside the tag: libxml2 refuses it */
        int empty = HAS(s, "/>");
        if (empty || *s->p == '>') {
            s->p += empty ? 2 : 1;
            for (size_t i = 0; i < nused; i++)
                if (!is_bound(s, &used[i]))
                    return XML_PRESCAN_UNBOUND_PREFIX;
            if (empty)
                s->nbound = base;
            else
                s->mark[s->depth++] = base;
            return XML_PRESCAN_OK;
        }
        const uint8_t *an = s->p;
        size_t al = name(s);
        if (al > SOAP_MAX_NAME_BYTES)
            return XML_PRESCAN_NAME;
        if (al == 0) {
            s->p++; /* stray byte: malformed, libxml2 decides */
            continue;
        }
        if (++attrs > SOAP_MAX_ATTRIBUTES)
            return XML_PRESCAN_ATTRIBUTES;
        if (++s->attributes > SOAP_MAX_ATTRIBUTES_TOTAL)
            return XML_PRESCAN_ATTRIBUTES_TOTAL;
        int is_default = al == 5 && memcmp(an, "xmlns", 5) == 0;
        if (is_default || (al > 6 && memcmp(an, "xmlns:", 6) == 0)) {
            if (++decls > SOAP_MAX_NS_DECLS)
                return XML_PRESCAN_NS_DECLS;
            if (s->nbound == SOAP_MAX_NS_IN_SCOPE)
                return XML_PRESCAN_NS_IN_SCOPE;
            s->bound[s->nbound++] = is_default ? prefix_make(an, 0) : prefix_make(an + 6, al - 6);
        } else if (prefix_of(an, al, &used[nused])) {
            nused++; /* at most one per attribute, and attrs <= SOAP_MAX_ATTRIBUTES */
        }
        skip_space(s);
        if (s->p < s->end && *s->p == '=') {
            s->p++;
            skip_space(s);
            if (s->p < s->end && (*s->p == '"' || *s->p == '\'')) {
                uint8_t q = *s->p++;
                const uint8_t *close = memchr(s->p, q, (size_t)(s->end - s->p));
                s->p = close ? close + 1 : s->end;
            }
        }
    }
}

/* end_tag scans "</name>" from just after the "</". Names are not matched
 * against the open elements (libxml2 does that); the depth is what matters. */
static enum xml_prescan_result end_tag(struct scan *s)
{
    if (name(s) > SOAP_MAX_NAME_BYTES)
        return XML_PRESCAN_NAME;
    if (s->depth > 0)
        s->nbound = s->mark[--s->depth];
    FIND(s, ">");
    return XML_PRESCAN_OK;
}

enum xml_prescan_result xml_prescan(struct span in)
{
    struct scan s;
    s.p = in.p;
    s.end = in.p + in.len;
    s.depth = s.elements = s.attributes = s.nbound = 0;
    while (s.p < s.end) {
        const uint8_t *lt = memchr(s.p, '<', (size_t)(s.end - s.p));
        if (lt == NULL)
            break;
        s.p = lt + 1;
        enum xml_prescan_result r = XML_PRESCAN_OK;
        if (HAS(&s, "!--")) {
            s.p += 3;
            FIND(&s, "-->");
        } else if (HAS(&s, "![CDATA[")) {
            FIND(&s, "]]>");
        } else if (HAS(&s, "!")) {
            return XML_PRESCAN_DOCTYPE; /* <!DOCTYPE, <!ENTITY, ...: no DTD in SOAP */
        } else if (HAS(&s, "?")) {
            FIND(&s, "?>");
        } else if (HAS(&s, "/")) {
            s.p++;
            r = end_tag(&s);
        } else {
            r = start_tag(&s);
        }
        if (r != XML_PRESCAN_OK)
            return r;
    }
    return XML_PRESCAN_OK;
}

const char *xml_prescan_name(enum xml_prescan_result r)
{
    static const char *const kNames[] = {
        [XML_PRESCAN_OK] = "ok",
        [XML_PRESCAN_ATTRIBUTES] = "attributes",
        [XML_PRESCAN_ATTRIBUTES_TOTAL] = "attributes in the body",
        [XML_PRESCAN_NS_DECLS] = "namespace declarations",
        [XML_PRESCAN_NS_IN_SCOPE] = "namespace declarations in scope",
        [XML_PRESCAN_UNBOUND_PREFIX] = "unbound prefix",
        [XML_PRESCAN_ELEMENTS] = "elements",
        [XML_PRESCAN_DEPTH] = "depth",
        [XML_PRESCAN_NAME] = "name length",
        [XML_PRESCAN_DOCTYPE] = "doctype",
    };
    return (size_t)r < sizeof(kNames) / sizeof(kNames[0]) ? kNames[r] : "?";
}
