#include "runtime/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *alloc_check(void *p, size_t n)
{
    if (p == NULL && n != 0) {
        fprintf(stderr, "ens: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}

void *ens_malloc(size_t n)
{
    return alloc_check(malloc(n ? n : 1), n ? n : 1);
}

void *ens_calloc(size_t count, size_t n)
{
    return alloc_check(calloc(count ? count : 1, n ? n : 1), 1);
}

void *ens_realloc(void *p, size_t n)
{
    return alloc_check(realloc(p, n ? n : 1), n ? n : 1);
}

char *ens_strdup(const char *s)
{
    return ens_memdup(s, strlen(s));
}

char *ens_memdup(const void *p, size_t n)
{
    char *out = ens_malloc(n + 1);
    if (n)
        memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

void ens_free(void *p)
{
    free(p);
}

void ens_wipe(void *p, size_t n)
{
    if (p == NULL || n == 0)
        return;
    /* A volatile function pointer keeps the compiler from proving the store dead;
     * same effect as OPENSSL_cleanse without making the base module link BoringSSL. */
    static void *(*const volatile wipe_memset)(void *, int, size_t) = memset;
    wipe_memset(p, 0, n);
}

void ens_free_secret(char *s)
{
    if (s == NULL)
        return;
    ens_wipe(s, strlen(s));
    free(s);
}
