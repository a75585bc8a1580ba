#include "runtime/err.h"

#include <stddef.h>

struct err_row {
    int code;
    const char *name;
    const char *msg;
};

static const struct err_row kErrors[] = {{ENS_OK, "OK", "success"},
#define ERR_ROW(name, value, msg) {value, #name, msg},
                                         ENS_ERRNO_MAP(ERR_ROW)
#undef ERR_ROW
};

static const struct err_row *err_find(int err)
{
    for (size_t i = 0; i < sizeof(kErrors) / sizeof(kErrors[0]); i++) {
        if (kErrors[i].code == err)
            return &kErrors[i];
    }
    return NULL;
}

const char *ens_strerror(int err)
{
    const struct err_row *row = err_find(err);
    return row ? row->msg : "unknown error";
}

const char *ens_err_name(int err)
{
    const struct err_row *row = err_find(err);
    return row ? row->name : "EUNKNOWN";
}
