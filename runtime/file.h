/* Whole-file reads for start-up: configuration, keys, service accounts.
 * Blocking; never call it from a loop that serves traffic. */
#ifndef ENS_RUNTIME_FILE_H
#define ENS_RUNTIME_FILE_H

#include "runtime/buf.h"

/* rt_file_read appends the contents of |path| to |out|, whose cap (set by the
 * caller with rt_buf_init or rt_buf_init_secret) is the size limit. Returns 0;
 * ENS_ENOTFOUND (cannot open: errno tells why), ENS_ETOOBIG (larger than the
 * cap) or ENS_EIO (read error). On error |out| is left as it was. The read
 * buffer on the stack is wiped, so a secret file leaves no copy behind. */
int rt_file_read(const char *path, struct rt_buf *out);

#endif
