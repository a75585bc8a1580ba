/* Base64 and base64url (RFC 4648), as JOSE and HTTP Basic need them. */
#ifndef ENS_RUNTIME_B64_H
#define ENS_RUNTIME_B64_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/buf.h"
#include "runtime/span.h"

/* b64_encode appends the encoding of |in| to |out|: |url| selects the URL-safe
 * alphabet without padding (JOSE), else the standard one with padding.
 * 0 or ENS_ETOOBIG. */
int b64_encode(struct rt_buf *out, struct span in, int url);

/* b64_decode appends the decoding of |in| to |out|. With |url| it accepts the
 * URL-safe alphabet without padding; otherwise the standard alphabet with
 * mandatory padding. Whitespace and any other byte are rejected, as are
 * non-canonical trailing bits. 0, ENS_EPARSE or ENS_ETOOBIG; |out| is unchanged
 * on error. */
int b64_decode(struct rt_buf *out, struct span in, int url);

#endif
