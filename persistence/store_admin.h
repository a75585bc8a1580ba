/* Server-wide state in Redis: tenants, API tokens and the server's own keys.
 *
 *   ens:tenant:<id>     HASH name, pc (preview cap), ews (allow list JSON), ct
 *   ens:tenants         SET  of tenant ids
 *   ens:apitok:<hex>    STRING tenant id; <hex> is the SHA-256 of the token, so
 *                       a copy of Redis reveals no usable token
 *   ens:keys:<name>     STRING blob the caller encrypted under the master key
 *
 * Loop thread only; async contract as in store_redis.h (error return: no
 * callback; 0: exactly one callback, later). */
#ifndef ENS_PERSISTENCE_STORE_ADMIN_H
#define ENS_PERSISTENCE_STORE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "persistence/store_redis.h"
#include "persistence/store_user.h"
#include "runtime/span.h"

#define STORE_MAX_TENANT_NAME    128
#define STORE_MAX_EWS_ALLOW_JSON (16 * 1024)
#define STORE_MAX_KEY_NAME       64
#define STORE_MAX_KEY_BLOB       (64 * 1024)

struct store_tenant {
    char id[STORE_ID_CHARS + 1];
    char name[STORE_MAX_TENANT_NAME + 1];
    char preview_cap[8];  /* "full" | "sender" | "none" */
    char *ews_allow_json; /* owned, NUL-terminated, "" when unset */
    int64_t created_at;
};

/* store_tenant_free releases a tenant from store_tenant_get; NULL is fine. */
void store_tenant_free(struct store_tenant *t);

typedef void (*store_tenant_cb)(int err, struct store_tenant *t, void *ud);
typedef void (*store_created_cb)(int err, int created, void *ud);

/* store_tenant_create makes a tenant with a fresh id. |name| (1..128 bytes),
 * |preview_cap| ("full", "sender", "none") and |ews_allow_json| (the allow list
 * as JSON text, may be NULL) are copied during the call; |created_at| is Unix
 * seconds. The callback's tenant id is borrowed for the call. ENS_EINVAL for
 * bad arguments. */
int store_tenant_create(struct store *s, const char *name, const char *preview_cap,
                        const char *ews_allow_json, int64_t created_at, uint64_t deadline_ms,
                        store_uid_cb cb, void *ud);

/* store_tenant_get reads a tenant; the callback owns |t| (store_tenant_free).
 * ENS_ENOTFOUND when absent, ENS_EPARSE when the record is damaged. */
/* store_tenant_list lists the tenant ids (at most STORE_MAX_TENANTS, in no
 * order). |ids| is borrowed for the duration of the callback. */
#define STORE_MAX_TENANTS 4096
typedef void (*store_list_cb)(int err, const char *const *ids, size_t n, void *ud);
int store_tenant_list(struct store *s, uint64_t deadline_ms, store_list_cb cb, void *ud);

int store_tenant_get(struct store *s, const char *tenant_id, uint64_t deadline_ms,
                     store_tenant_cb cb, void *ud);

/* store_apitoken_add maps the SHA-256 |hash| of an API token to |tenant_id|. */
int store_apitoken_add(struct store *s, const char *tenant_id, const uint8_t hash[32],
                       uint64_t deadline_ms, store_done_cb cb, void *ud);

/* store_apitoken_lookup finds the tenant of a token hash; the tenant id is
 * borrowed for the call. ENS_ENOTFOUND for an unknown token. */
int store_apitoken_lookup(struct store *s, const uint8_t hash[32], uint64_t deadline_ms,
                          store_uid_cb cb, void *ud);

/* store_keys_get reads the key blob |name| ([A-Za-z0-9._-], 1..64 chars); the
 * span is borrowed for the call. ENS_ENOTFOUND when absent. */
int store_keys_get(struct store *s, const char *name, uint64_t deadline_ms, store_blob_cb cb,
                   void *ud);

/* store_keys_setnx stores |len| bytes at |blob| (copied during the call) under
 * |name| unless it exists, so that two first starts agree on one key: the
 * callback gets created 1 when this call wrote it, 0 when it was there (then
 * read it back with store_keys_get). */
int store_keys_setnx(struct store *s, const char *name, const void *blob, size_t len,
                     uint64_t deadline_ms, store_created_cb cb, void *ud);

#endif
