/* One allocator entry point. Small allocations abort on exhaustion (h2o's
 * policy): a server that cannot allocate a few bytes cannot do anything useful
 * and recovering paths would be untested. Sizes that come from the network are
 * always capped by a limit in protocols/limits.h or runtime/limits.h before they reach here. */
#ifndef ENS_RUNTIME_ALLOC_H
#define ENS_RUNTIME_ALLOC_H

#include <stddef.h>

void *ens_malloc(size_t n);
void *ens_calloc(size_t count, size_t n);
void *ens_realloc(void *p, size_t n);
/* ens_strdup copies the NUL-terminated |s|; ens_memdup copies |n| bytes and adds a NUL. */
char *ens_strdup(const char *s);
char *ens_memdup(const void *p, size_t n);
void ens_free(void *p);

/* ens_wipe overwrites |n| bytes at |p| in a way the compiler may not elide. */
void ens_wipe(void *p, size_t n);

/* ens_free_secret wipes the NUL-terminated string |s| and frees it; NULL is fine. */
void ens_free_secret(char *s);

#endif
