#include "persistence/store_uv_int.h"

#include <hiredis/hiredis.h>

#include "runtime/alloc.h"
#include "runtime/log.h"

/* One per context: hiredis's ev.data. Freed from the poll handle's close
 * callback, so it outlives the context by one loop turn. */
struct store_uv {
    redisAsyncContext *ac; /* NULL once hiredis has let go */
    uv_poll_t poll;
    int events; /* UV_READABLE | UV_WRITABLE hiredis asked for */
    store_uv_error_cb on_error;
};

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct store_uv *p = h->data;
    if (p->ac == NULL)
        return;
    if (status < 0) {
        /* libuv has already stopped the handle; the owner drops the context,
         * which may free it, so nothing here is read afterwards. */
        p->events = 0;
        p->on_error(p->ac, status);
        return;
    }
    if (events & UV_READABLE)
        redisAsyncHandleRead(p->ac);
    /* the read may have freed the context (a disconnect): cleanup cleared ac */
    if (p->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void set_events(struct store_uv *p, int events)
{
    if (events == p->events)
        return;
    p->events = events;
    int rc = events ? uv_poll_start(&p->poll, events, on_poll) : uv_poll_stop(&p->poll);
    /* libuv fails these only on a closing handle or bad flags, neither of
     * which can happen here. Should it ever, no I/O would take place and the
     * store's run-of-timeouts rule tears the context down: this hook runs
     * inside hiredis, where freeing the context is not allowed. */
    if (rc != 0)
        RT_LOG_E("store.poll", "err=\"%s\"", uv_strerror(rc));
}

static void add_read(void *priv)
{
    struct store_uv *p = priv;
    set_events(p, p->events | UV_READABLE);
}

static void del_read(void *priv)
{
    struct store_uv *p = priv;
    set_events(p, p->events & ~UV_READABLE);
}

static void add_write(void *priv)
{
    struct store_uv *p = priv;
    set_events(p, p->events | UV_WRITABLE);
}

static void del_write(void *priv)
{
    struct store_uv *p = priv;
    set_events(p, p->events & ~UV_WRITABLE);
}

static void on_closed(uv_handle_t *h)
{
    ens_free(h->data);
}

/* hiredis calls this from redisAsyncFree, before it closes the descriptor:
 * uv_close stops watching it at once, so the close that follows is safe. */
static void cleanup(void *priv)
{
    struct store_uv *p = priv;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, on_closed);
}

int store__uv_attach(redisAsyncContext *ac, uv_loop_t *loop, store_uv_error_cb on_error)
{
    if (ac == NULL || loop == NULL || on_error == NULL || ac->ev.data != NULL)
        return REDIS_ERR;
    struct store_uv *p = ens_calloc(1, sizeof(*p));
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        ens_free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->on_error = on_error;
    p->poll.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}
