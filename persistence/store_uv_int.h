/* The hiredis event adapter for libuv, private to persistence/.
 *
 * Used instead of hiredis's own adapters/libuv.h, which returns without a word
 * when uv_poll reports an error. libuv reports POLLERR (a reset connection, a
 * refused connect) by stopping the poll handle and calling back with a
 * negative status; hiredis then never hears of it, every later command sits in
 * its output buffer, and the connection looks alive for good. This adapter
 * hands that status to the owner instead, who tears the context down. */
#ifndef ENS_PERSISTENCE_STORE_UV_INT_H
#define ENS_PERSISTENCE_STORE_UV_INT_H

#include <hiredis/async.h>
#include <uv.h>

/* store_uv_error_cb receives a poll error (a negative UV_* status) on |ac|.
 * It runs from the loop, never from inside hiredis, so it may redisAsyncFree
 * |ac|; the adapter touches nothing after it returns. */
typedef void (*store_uv_error_cb)(redisAsyncContext *ac, int status);

/* store__uv_attach hooks |ac| to |loop|: hiredis's read and write readiness go
 * through one uv_poll_t, released after hiredis frees the context. |on_error|
 * is required. Returns REDIS_OK, or REDIS_ERR (nothing attached; the caller
 * still frees |ac|). Loop thread only. */
int store__uv_attach(redisAsyncContext *ac, uv_loop_t *loop, store_uv_error_cb on_error);

#endif
