#include "runtime/file.h"

#include <errno.h>
#include <stdio.h>

#include "runtime/alloc.h"
#include "runtime/err.h"

int rt_file_read(const char *path, struct rt_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return ENS_ENOTFOUND;
    size_t start = out->len;
    uint8_t chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (rt_buf_append(out, chunk, n) != 0) {
            rc = ENS_ETOOBIG;
            break;
        }
    }
    if (rc == 0 && ferror(f))
        rc = ENS_EIO;
    int saved = errno;
    fclose(f);
    ens_wipe(chunk, sizeof(chunk));
    if (rc) {
        ens_wipe(out->data + start, out->len - start);
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    errno = saved;
    return rc;
}
