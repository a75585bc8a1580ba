#include "persistence/store_redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "persistence/store_uv_int.h"
#include "runtime/alloc.h"
#include "runtime/buf.h"
#include "runtime/err.h"
#include "runtime/log.h"
#include "runtime/span.h"

#define STORE_MAX_DB 1000000

/* One command or one MULTI/EXEC in flight. hiredis holds a pointer to it as
 * privdata for each command it sent, so it lives until the last of those
 * replies (or NULL replies at disconnect) has come back, even when its user
 * callback already ran with ENS_ETIMEDOUT or ENS_ECANCELED. */
struct store_op {
    struct store_op *prev, *next; /* in store.waiting while the callback is owed */
    struct store *s;
    store_reply_cb cb;
    void *ud;
    uint64_t deadline;
    int remaining; /* replies hiredis still owes us */
    int done;      /* callback has run */
    int broken;    /* not every command could be sent */
    int probe;     /* our own health PING, not a caller's command */
};

struct store_tx {
    struct rt_buf buf;              /* RESP-encoded commands, back to back */
    size_t ends[STORE_TX_MAX_CMDS]; /* end offset of each command in buf */
    int n;
};

struct store {
    uv_loop_t *loop;
    char *host; /* NULL for a unix socket */
    char *path;
    int port;
    int db;

    redisAsyncContext *ac; /* NULL while down; detached before we free it */
    int ready;
    int established; /* ac got as far as ready once: its loss is not a failed attempt */
    int closing;
    uint64_t backoff_ms;
    store_ready_cb watch;
    void *watch_ud;

    uv_timer_t timer;    /* reconnect backoff, or connect timeout while connecting */
    uv_timer_t deadline; /* earliest deadline among waiting ops */
    uint64_t deadline_at;
    uv_timer_t health;    /* probes a connection that has gone quiet */
    uint64_t last_reply;  /* uv_now() of the last reply on ac */
    int timeouts_run;     /* deadlines passed in a row with no reply between */
    int probes;           /* health PINGs whose callback is owed */
    uint32_t probes_held; /* health PINGs hiredis still references */
    int handles_open;
    uv_getaddrinfo_t gai;
    int gai_busy;

    struct store_op waiting; /* sentinel of the list of ops whose callback is owed */
    uint32_t inflight;       /* ops hiredis still references */
    struct store_stats st;
};

static void connect_start(struct store *s);
static void on_timer(uv_timer_t *t);
static void drop_and_retry(struct store *s, enum store_drop_reason why);

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses the whole of |s| as a decimal no larger than |max|. */
static int parse_num(struct span s, uint64_t max, uint64_t *out)
{
    return span_get_decimal(&s, max, out) && s.len == 0;
}

static int parse_url(struct store *s, const char *url, char *err, size_t errlen)
{
    struct span u = span_cstr(url);
    uint64_t v;
    if (u.len == 0 || u.len > STORE_MAX_URL) {
        seterr(err, errlen, "redis url: empty or longer than %d bytes", STORE_MAX_URL);
        return ENS_EINVAL;
    }
    if (span_has_prefix(u, "unix://")) {
        u.p += 7;
        u.len -= 7;
        size_t i = 0;
        while (i < u.len && u.p[i] != '?')
            i++;
        if (i == 0 || u.p[0] != '/') {
            seterr(err, errlen, "redis url: unix:// needs an absolute socket path");
            return ENS_EINVAL;
        }
        s->path = ens_memdup(u.p, i);
        u.p += i;
        u.len -= i;
        if (u.len) {
            if (!span_has_prefix(u, "?db=") ||
                !parse_num(span_make(u.p + 4, u.len - 4), STORE_MAX_DB, &v)) {
                seterr(err, errlen, "redis url: only ?db=N may follow the socket path");
                return ENS_EINVAL;
            }
            s->db = (int)v;
        }
        return 0;
    }
    if (!span_has_prefix(u, "redis://")) {
        seterr(err, errlen, "redis url: scheme must be redis:// or unix://");
        return ENS_EINVAL;
    }
    u.p += 8;
    u.len -= 8;
    for (size_t i = 0; i < u.len; i++) {
        if (u.p[i] == '@') {
            seterr(err, errlen, "redis url: credentials in the url are not supported");
            return ENS_EINVAL;
        }
    }
    struct span host;
    if (u.len && u.p[0] == '[') {
        size_t i = 1;
        while (i < u.len && u.p[i] != ']')
            i++;
        if (i == u.len || i == 1) {
            seterr(err, errlen, "redis url: unterminated [IPv6] host");
            return ENS_EINVAL;
        }
        host = span_make(u.p + 1, i - 1);
        u.p += i + 1;
        u.len -= i + 1;
    } else {
        size_t i = 0;
        while (i < u.len && u.p[i] != ':' && u.p[i] != '/')
            i++;
        host = span_make(u.p, i);
        u.p += i;
        u.len -= i;
    }
    if (host.len == 0 || host.len > 255) {
        seterr(err, errlen, "redis url: missing or overlong host");
        return ENS_EINVAL;
    }
    s->port = 6379;
    if (u.len && u.p[0] == ':') {
        u.p++;
        u.len--;
        if (!span_get_decimal(&u, 65535, &v) || v == 0) {
            seterr(err, errlen, "redis url: bad port");
            return ENS_EINVAL;
        }
        s->port = (int)v;
    }
    if (u.len && u.p[0] == '/') {
        u.p++;
        u.len--;
        if (u.len) {
            if (!parse_num(u, STORE_MAX_DB, &v)) {
                seterr(err, errlen, "redis url: bad database number");
                return ENS_EINVAL;
            }
            s->db = (int)v;
            u.len = 0;
        }
    }
    if (u.len) {
        seterr(err, errlen, "redis url: unexpected text after host");
        return ENS_EINVAL;
    }
    s->host = ens_memdup(host.p, host.len);
    return 0;
}

/* Every change of ready goes through here so that the watcher hears it. */
static void set_ready(struct store *s, int ready)
{
    if (s->ready == ready)
        return;
    s->ready = ready;
    if (s->watch)
        s->watch(ready, s->watch_ud);
}

/* ---- op list and deadlines ---- */

static void op_link(struct store *s, struct store_op *op)
{
    op->prev = s->waiting.prev;
    op->next = &s->waiting;
    s->waiting.prev->next = op;
    s->waiting.prev = op;
}

static void op_unlink(struct store_op *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    op->prev = op->next = op;
}

static void op_finish(struct store_op *op, int err, redisReply *r)
{
    struct store *s = op->s;
    op_unlink(op);
    op->done = 1;
    if (err == ENS_ETIMEDOUT)
        s->timeouts_run++;
    if (!op->probe && err == ENS_ETIMEDOUT)
        s->st.timeouts++;
    else if (!op->probe && err == ENS_ESTORE)
        s->st.errors++;
    op->cb(err, r, op->ud);
}

static void on_deadline(uv_timer_t *t);

static void deadline_arm(struct store *s, uint64_t at)
{
    if (s->closing)
        return;
    if (uv_is_active((uv_handle_t *)&s->deadline) && s->deadline_at <= at)
        return;
    uint64_t now = uv_now(s->loop);
    s->deadline_at = at;
    uv_timer_start(&s->deadline, on_deadline, at > now ? at - now : 0, 0);
}

static void on_deadline(uv_timer_t *t)
{
    struct store *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct store_op expired;
    expired.prev = expired.next = &expired;

    /* Move first, call later: a callback may add ops or free the store. */
    for (struct store_op *op = s->waiting.next, *nx; op != &s->waiting; op = nx) {
        nx = op->next;
        if (op->deadline <= now) {
            op_unlink(op);
            op->prev = expired.prev;
            op->next = &expired;
            expired.prev->next = op;
            expired.prev = op;
        }
    }
    while (expired.next != &expired)
        op_finish(expired.next, ENS_ETIMEDOUT, NULL);

    /* Redis answers in order, so this many deadlines with no reply between
     * mean the oldest waited its whole deadline on a link that delivered
     * nothing: paused, wedged, or a peer gone without a reset. A fresh
     * connection costs less than waiting to find out. */
    if (!s->closing && s->ac && s->established && s->timeouts_run >= STORE_DEAD_TIMEOUTS) {
        RT_LOG_W("store.unresponsive", "timeouts=%d", s->timeouts_run);
        drop_and_retry(s, STORE_DROP_TIMEOUTS);
    }

    uint64_t next = UINT64_MAX;
    for (struct store_op *op = s->waiting.next; op != &s->waiting; op = op->next)
        if (op->deadline < next)
            next = op->deadline;
    if (next != UINT64_MAX)
        deadline_arm(s, next);
}

/* ---- release ---- */

/* Runs only from libuv completion callbacks (handle close, getaddrinfo), never
 * under a hiredis callback: by then hiredis has run every NULL reply and the
 * disconnect callback of the context store_free dropped. */
static void maybe_release(struct store *s)
{
    if (!s->closing || s->handles_open || s->gai_busy)
        return;
    if (s->ac != NULL || s->inflight) {
        RT_LOG_E("store.leak", "inflight=%u", s->inflight); /* never expected */
        return;
    }
    ens_free(s->host);
    ens_free(s->path);
    ens_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct store *s = h->data;
    s->handles_open--;
    maybe_release(s);
}

/* ---- replies ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct store_op *op = priv;
    struct store *s = op->s;
    redisReply *r = reply;
    op->remaining--;
    if (r == NULL && s->ac == ac)
        set_ready(s, 0); /* the connection is going: nobody may send on it now */
    if (r != NULL && s->ac == ac) {
        /* any reply, even one too late for its caller, shows the link alive */
        s->timeouts_run = 0;
        s->last_reply = uv_now(s->loop);
    }
    if (!op->done) {
        if (r == NULL)
            op_finish(op, s->closing ? ENS_ECANCELED : ENS_ESTORE, NULL);
        else if (op->remaining == 0) {
            if (!op->probe)
                s->st.round_trips++;
            if (op->broken || r->type == REDIS_REPLY_ERROR)
                op_finish(op, ENS_ESTORE, NULL);
            else
                op_finish(op, 0, r);
        }
    }
    if (op->remaining == 0) {
        s->inflight--;
        if (op->probe)
            s->probes_held--;
        ens_free(op);
    }
}

/* ---- connection ---- */

static const char *const kDropNames[STORE_DROP_REASONS] = {"closed", "poll_error", "timeouts",
                                                           "connect"};

const char *store_drop_reason_name(enum store_drop_reason r)
{
    return (unsigned)r < STORE_DROP_REASONS ? kDropNames[r] : "unknown";
}

/* Half to all of |ms|, at random: after a Redis restart every scheduler of
 * every ensd reconnects, and the jitter keeps them from doing it in step. */
static uint64_t jittered(uint64_t ms)
{
    uint32_t r = 0;
    if (!RAND_bytes((uint8_t *)&r, sizeof(r)))
        r = 0; /* BoringSSL aborts rather than fail; the plain delay would do */
    return ms / 2 + r % (ms / 2 + 1);
}

static void schedule_reconnect(struct store *s)
{
    if (s->closing)
        return;
    uint64_t delay = jittered(s->backoff_ms);
    s->backoff_ms =
        s->backoff_ms * 2 > STORE_BACKOFF_MAX_MS ? STORE_BACKOFF_MAX_MS : s->backoff_ms * 2;
    uv_timer_stop(&s->timer);
    uv_timer_start(&s->timer, on_timer, delay, 0);
}

/* Forgets the current context without freeing it (hiredis does, or we did). */
static void forget_context(struct store *s)
{
    s->ac = NULL;
    s->established = 0;
    s->timeouts_run = 0;
    set_ready(s, 0);
}

/* Drops the current context. Detaching first makes every later hiredis
 * callback for it (NULL replies, disconnect) see a context that is not ours. */
static void drop_context(struct store *s)
{
    redisAsyncContext *ac = s->ac;
    if (ac == NULL)
        return;
    forget_context(s);
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* Counts why the connection went, then frees it and retries later. Not from
 * inside a hiredis callback (redisAsyncFree is not allowed there). */
static void drop_and_retry(struct store *s, enum store_drop_reason why)
{
    s->st.drops[why]++;
    drop_context(s);
    schedule_reconnect(s);
}

/* The adapter's poll error: the socket failed (a reset, a refused connect)
 * and hiredis will never notice on its own. */
static void on_poll_error(redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;
    if (s == NULL || s->ac != ac)
        return;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(ac->c.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr == 0)
        soerr = -status; /* the socket's own error says more when there is one */
    if (s->established)
        RT_LOG_W("store.poll_error", "err=\"%s\"", uv_strerror(-soerr));
    else
        RT_LOG_W("store.connect_failed", "err=\"%s\"", uv_strerror(-soerr));
    drop_and_retry(s, s->established ? STORE_DROP_POLL_ERROR : STORE_DROP_CONNECT);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;
    if (s == NULL || s->ac != ac)
        return;
    if (status != REDIS_OK) {
        RT_LOG_W("store.connect_failed", "err=\"%s\"", ac->errstr);
        s->st.drops[STORE_DROP_CONNECT]++;
        forget_context(s); /* hiredis frees it when we return */
        schedule_reconnect(s);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct store *s = ac->data;
    if (s == NULL || s->ac != ac)
        return;
    RT_LOG_W("store.disconnected", "status=%d err=\"%s\"", status, ac->err ? ac->errstr : "");
    s->st.drops[s->established ? STORE_DROP_CLOSED : STORE_DROP_CONNECT]++;
    forget_context(s);
    schedule_reconnect(s);
}

static void on_select(redisAsyncContext *ac, void *reply, void *priv)
{
    struct store *s = priv;
    redisReply *r = reply;
    /* a dropped context has data NULL: |s| may be gone, do not read it */
    if (ac->data != s || r == NULL || s->ac != ac)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        /* also "-LOADING" from a server still reading its AOF: retry later */
        RT_LOG_E("store.select_failed", "db=%d err=\"%.*s\"", s->db, (int)r->len, r->str);
        drop_and_retry(s, STORE_DROP_CONNECT);
        return;
    }
    s->established = 1;
    s->timeouts_run = 0;
    s->last_reply = uv_now(s->loop);
    s->backoff_ms = STORE_BACKOFF_MIN_MS;
    s->st.connects++;
    uv_timer_stop(&s->timer);
    set_ready(s, 1);
    RT_LOG_I("store.connected", "db=%d", s->db);
}

static void attach(struct store *s, redisAsyncContext *ac)
{
    if (ac == NULL || ac->err) {
        RT_LOG_W("store.connect_failed", "err=\"%s\"", ac ? ac->errstr : "no memory");
        if (ac)
            redisAsyncFree(ac);
        s->st.drops[STORE_DROP_CONNECT]++;
        schedule_reconnect(s);
        return;
    }
    ac->data = s;
    if (store__uv_attach(ac, s->loop, on_poll_error) != REDIS_OK) {
        RT_LOG_E("store.connect_failed", "err=\"cannot poll the socket\"");
        ac->data = NULL;
        redisAsyncFree(ac);
        s->st.drops[STORE_DROP_CONNECT]++;
        schedule_reconnect(s);
        return;
    }
    s->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* hiredis 0.14 only notices the end of a non-blocking connect once a
     * command asks for write readiness: SELECT doubles as that trigger. */
    char db[16];
    snprintf(db, sizeof(db), "%d", s->db);
    const char *argv[2] = {"SELECT", db};
    if (redisAsyncCommandArgv(ac, on_select, s, 2, argv, NULL) != REDIS_OK) {
        drop_and_retry(s, STORE_DROP_CONNECT);
        return;
    }
    uv_timer_stop(&s->timer);
    uv_timer_start(&s->timer, on_timer, STORE_CONNECT_TIMEOUT_MS, 0);
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct store *s = req->data;
    s->gai_busy = 0;
    if (s->closing) {
        uv_freeaddrinfo(res);
        maybe_release(s); /* the request is finished: libuv no longer touches it */
        return;
    }
    char ip[64] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
        else
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
    }
    uv_freeaddrinfo(res);
    if (ip[0] == '\0') {
        RT_LOG_W("store.resolve_failed", "err=\"%s\"", uv_strerror(status));
        s->st.drops[STORE_DROP_CONNECT]++;
        schedule_reconnect(s);
        return;
    }
    attach(s, redisAsyncConnect(ip, s->port));
}

static void connect_start(struct store *s)
{
    if (s->closing || s->ac || s->gai_busy)
        return;
    if (s->path) {
        attach(s, redisAsyncConnectUnix(s->path));
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    s->gai.data = s;
    if (uv_getaddrinfo(s->loop, &s->gai, on_gai, s->host, NULL, &hints) != 0) {
        schedule_reconnect(s);
        return;
    }
    s->gai_busy = 1;
}

static void on_timer(uv_timer_t *t)
{
    struct store *s = t->data;
    if (s->ac == NULL) {
        connect_start(s);
    } else if (!s->ready) {
        RT_LOG_W("store.connect_timeout", "ms=%d", STORE_CONNECT_TIMEOUT_MS);
        drop_and_retry(s, STORE_DROP_CONNECT);
    }
}

/* ---- health probe ---- */

static int op_send(struct store *s, struct store_op *op, const char *const *cmd, const size_t *len,
                   int n);
static struct store_op *op_new(struct store *s, uint64_t deadline_ms, store_reply_cb cb, void *ud);

static void on_probe(int err, struct redisReply *reply, void *ud)
{
    (void)err;
    (void)reply;
    struct store *s = ud; /* probes finish before store_free returns */
    s->probes--;
}

/* A quiet connection gets a PING every STORE_PING_INTERVAL_MS until a reply
 * comes, so a link that died without a reset is found by the run-of-timeouts
 * rule even when no caller is sending. At most STORE_DEAD_TIMEOUTS are owed,
 * which is all the rule needs. */
static void on_health(uv_timer_t *t)
{
    struct store *s = t->data;
    if (!store_ready(s) || s->probes >= STORE_DEAD_TIMEOUTS)
        return;
    uint64_t now = uv_now(s->loop);
    if (now - s->last_reply < STORE_PING_INTERVAL_MS)
        return;
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    const char *cmd = ping;
    size_t len = sizeof(ping) - 1;
    struct store_op *op = op_new(s, now + STORE_PING_TIMEOUT_MS, on_probe, s);
    op->probe = 1;
    if (op_send(s, op, &cmd, &len, 1) == 0) {
        s->probes++;
        s->probes_held++;
    }
}

/* ---- public ---- */

struct store *store_new(uv_loop_t *loop, const char *url, char *err, size_t errlen)
{
    if (loop == NULL || url == NULL) {
        seterr(err, errlen, "redis url: missing");
        return NULL;
    }
    struct store *s = ens_calloc(1, sizeof(*s));
    s->loop = loop;
    if (parse_url(s, url, err, errlen) != 0) {
        ens_free(s->host);
        ens_free(s->path);
        ens_free(s);
        return NULL;
    }
    s->waiting.prev = s->waiting.next = &s->waiting;
    s->backoff_ms = STORE_BACKOFF_MIN_MS;
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->deadline);
    uv_timer_init(loop, &s->health);
    s->timer.data = s;
    s->deadline.data = s;
    s->health.data = s;
    s->handles_open = 3;
    uv_timer_start(&s->health, on_health, STORE_PING_INTERVAL_MS, STORE_PING_INTERVAL_MS);
    uv_unref((uv_handle_t *)&s->health); /* a probe alone never keeps a loop running */
    connect_start(s);
    return s;
}

int store_ready(const struct store *s)
{
    return s && s->ready && s->ac && !s->closing;
}

void store_watch_ready(struct store *s, store_ready_cb cb, void *ud)
{
    s->watch = cb;
    s->watch_ud = ud;
}

void store_free(struct store *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    set_ready(s, 0);
    while (s->waiting.next != &s->waiting)
        op_finish(s->waiting.next, ENS_ECANCELED, NULL);
    if (s->gai_busy)
        uv_cancel((uv_req_t *)&s->gai);
    drop_context(s);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&s->health, on_handle_closed);
}

void store_stats(const struct store *s, struct store_stats *out)
{
    *out = s->st;
    out->pending = s->inflight - s->probes_held;
    out->ready = store_ready(s);
}

/* Common admission check: 0 or the error the caller returns. */
static int admit(struct store *s, uint64_t deadline_ms, store_reply_cb cb)
{
    if (s == NULL || cb == NULL)
        return ENS_EINVAL;
    if (!store_ready(s))
        return ENS_ESTORE;
    if (s->inflight - s->probes_held >= STORE_MAX_PENDING)
        return ENS_EFULL; /* probes are outside the cap: at most a few, and ours */
    if (deadline_ms <= uv_now(s->loop))
        return ENS_ETIMEDOUT;
    return 0;
}

static struct store_op *op_new(struct store *s, uint64_t deadline_ms, store_reply_cb cb, void *ud)
{
    struct store_op *op = ens_calloc(1, sizeof(*op));
    op->s = s;
    op->cb = cb;
    op->ud = ud;
    op->deadline = deadline_ms;
    op->prev = op->next = op;
    return op;
}

/* Sends |n| RESP commands for |op|. Returns 0 once at least one is queued. */
static int op_send(struct store *s, struct store_op *op, const char *const *cmd, const size_t *len,
                   int n)
{
    int sent = 0;
    for (int i = 0; i < n; i++) {
        if (redisAsyncFormattedCommand(s->ac, on_reply, op, cmd[i], len[i]) != REDIS_OK)
            break;
        sent++;
    }
    if (sent == 0) {
        ens_free(op);
        return ENS_ESTORE;
    }
    /* A partial send only happens on a dying connection, whose NULL replies
     * will finish the op with ENS_ESTORE. */
    op->broken = sent < n;
    op->remaining = sent;
    s->inflight++;
    op_link(s, op);
    deadline_arm(s, op->deadline);
    return 0;
}

static int resp_append(struct rt_buf *b, int argc, const char *const *argv, const size_t *argvlen)
{
    if (rt_buf_appendf(b, "*%d\r\n", argc) != 0)
        return ENS_ETOOBIG;
    for (int i = 0; i < argc; i++) {
        size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
        if (rt_buf_appendf(b, "$%zu\r\n", l) != 0 || rt_buf_append(b, argv[i], l) != 0 ||
            rt_buf_append(b, "\r\n", 2) != 0)
            return ENS_ETOOBIG;
    }
    return 0;
}

int store_cmdargv(struct store *s, int argc, const char **argv, const size_t *argvlen,
                  uint64_t deadline_ms, store_reply_cb cb, void *ud)
{
    if (argc < 1 || argv == NULL)
        return ENS_EINVAL;
    int rc = admit(s, deadline_ms, cb);
    if (rc != 0)
        return rc;
    struct rt_buf b;
    rt_buf_init(&b, STORE_TX_MAX_BYTES);
    if (resp_append(&b, argc, argv, argvlen) != 0) {
        rt_buf_cleanup(&b);
        return ENS_ETOOBIG;
    }
    const char *cmd = (const char *)b.data;
    size_t len = b.len;
    rc = op_send(s, op_new(s, deadline_ms, cb, ud), &cmd, &len, 1);
    rt_buf_cleanup(&b); /* hiredis copied it into its output buffer */
    return rc;
}

struct store_tx *store_tx_new(void)
{
    struct store_tx *tx = ens_calloc(1, sizeof(*tx));
    rt_buf_init(&tx->buf, STORE_TX_MAX_BYTES);
    return tx;
}

int store_tx_add(struct store_tx *tx, int argc, const char *const *argv, const size_t *argvlen)
{
    if (argc < 1 || argv == NULL)
        return ENS_EINVAL;
    if (tx->n >= STORE_TX_MAX_CMDS)
        return ENS_ETOOBIG;
    size_t before = tx->buf.len;
    if (resp_append(&tx->buf, argc, argv, argvlen) != 0) {
        tx->buf.len = before;
        return ENS_ETOOBIG;
    }
    tx->ends[tx->n++] = tx->buf.len;
    return 0;
}

void store_args_init(struct store_args *a)
{
    a->n = 0;
    a->overflow = 0;
}

void store_args_add(struct store_args *a, const void *p, size_t len)
{
    if (a->n >= STORE_ARGS_MAX) {
        a->overflow = 1;
        return;
    }
    a->v[a->n] = p;
    a->l[a->n] = len;
    a->n++;
}

void store_args_str(struct store_args *a, const char *str)
{
    store_args_add(a, str, strlen(str));
}

void store_args_i64(struct store_args *a, int64_t v)
{
    if (a->n >= STORE_ARGS_MAX) {
        a->overflow = 1;
        return;
    }
    int n = snprintf(a->num[a->n], sizeof(a->num[0]), "%lld", (long long)v);
    store_args_add(a, a->num[a->n], (size_t)n);
}

void store_args_u64(struct store_args *a, uint64_t v)
{
    if (a->n >= STORE_ARGS_MAX) {
        a->overflow = 1;
        return;
    }
    int n = snprintf(a->num[a->n], sizeof(a->num[0]), "%llu", (unsigned long long)v);
    store_args_add(a, a->num[a->n], (size_t)n);
}

int store_tx_add_args(struct store_tx *tx, const struct store_args *a)
{
    if (a->overflow)
        return ENS_ETOOBIG;
    return store_tx_add(tx, a->n, a->v, a->l);
}

int store_tx_count(const struct store_tx *tx)
{
    return tx->n;
}

void store_tx_free(struct store_tx *tx)
{
    if (tx == NULL)
        return;
    rt_buf_cleanup(&tx->buf);
    ens_free(tx);
}

int store_tx_exec(struct store *s, struct store_tx *tx, uint64_t deadline_ms, store_reply_cb cb,
                  void *ud)
{
    int rc = tx && tx->n > 0 ? admit(s, deadline_ms, cb) : ENS_EINVAL;
    if (rc != 0) {
        store_tx_free(tx);
        return rc;
    }
    static const char multi[] = "*1\r\n$5\r\nMULTI\r\n";
    static const char exec[] = "*1\r\n$4\r\nEXEC\r\n";
    const char **cmd = ens_malloc(sizeof(*cmd) * (size_t)(tx->n + 2));
    size_t *len = ens_malloc(sizeof(*len) * (size_t)(tx->n + 2));
    cmd[0] = multi;
    len[0] = sizeof(multi) - 1;
    size_t start = 0;
    for (int i = 0; i < tx->n; i++) {
        cmd[i + 1] = (const char *)tx->buf.data + start;
        len[i + 1] = tx->ends[i] - start;
        start = tx->ends[i];
    }
    cmd[tx->n + 1] = exec;
    len[tx->n + 1] = sizeof(exec) - 1;
    rc = op_send(s, op_new(s, deadline_ms, cb, ud), cmd, len, tx->n + 2);
    ens_free(cmd);
    ens_free(len);
    store_tx_free(tx);
    return rc;
}

int store_reply_array_ok(const struct redisReply *r, size_t n)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (r->element[i] == NULL || r->element[i]->type == REDIS_REPLY_ERROR)
            return 0;
    return 1;
}
