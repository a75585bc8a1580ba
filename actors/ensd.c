/* ensd: the server's composition root.
 *
 * Loads the configuration, the master key and the admin token, builds the TLS
 * contexts, and starts runtime.threads schedulers. Each scheduler accepts on
 * the public port (SO_REUSEPORT), owns one Redis connection and one responder;
 * scheduler 0 also serves the admin listener, loads the server's keys and runs
 * the push actor. SIGTERM/SIGINT: stop accepting, let in-flight requests
 * finish, exit 0 within 5 s. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/app.h"
#include "actors/health.h"
#include "actors/http_api.h"
#include "actors/ids.h"
#include "actors/keys.h"
#include "actors/memo.h"
#include "actors/push.h"
#include "actors/reply.h"
#include "actors/user.h"
#include "persistence/store_redis.h"
#include "protocols/h1_server.h"
#include "protocols/seal.h"
#include "protocols/soap_xml.h"
#include "runtime/clock.h"
#include "runtime/alloc.h"
#include "runtime/err.h"
#include "runtime/fdlimit.h"
#include "runtime/log.h"
#include "runtime/net.h"
#include "runtime/ratelimit.h"

extern char **environ;

#define ENSD_GRACE_MS           4500 /* under the 5 s promised to orchestrators */
#define ENSD_MAX_ADMIN_TOKEN    512
#define ENSD_OPEN_POLL_MS       50    /* how often a waiting scheduler checks keys and Redis */
#define ENSD_OPEN_WARN_FIRST_MS 10000 /* first warning that the public port is still shut */
#define ENSD_OPEN_WARN_EVERY_MS 30000

/* ---- Start-up helpers ---- */

/* load_admin_token reads the admin token file, creating it (0600, random)
 * when absent, and keeps only its SHA-256. */
static int load_admin_token(struct ens_app *app, const char *path)
{
    char tok[ENSD_MAX_ADMIN_TOKEN + 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        char rnd[64];
        ens_random_id(32, rnd, sizeof(rnd));
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            size_t n = strlen(rnd);
            int ok = write(fd, rnd, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
            close(fd);
            OPENSSL_cleanse(rnd, sizeof(rnd));
            if (!ok) {
                fprintf(stderr, "ensd: cannot write the admin token file %s\n", path);
                return ENS_EIO;
            }
            RT_LOG_W("admin.token", "created a new admin token in %s (mode 0600)", path);
        } else {
            OPENSSL_cleanse(rnd, sizeof(rnd));
        }
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        fprintf(stderr, "ensd: cannot read the admin token file %s: %s\n", path, strerror(errno));
        return ENS_EIO;
    }
    ssize_t n = read(fd, tok, sizeof(tok) - 1);
    close(fd);
    if (n <= 0) {
        fprintf(stderr, "ensd: the admin token file %s is empty\n", path);
        return ENS_ECONFIG;
    }
    while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
        n--;
    if (n < 16) {
        OPENSSL_cleanse(tok, sizeof(tok));
        fprintf(stderr, "ensd: the admin token in %s is shorter than 16 characters\n", path);
        return ENS_ECONFIG;
    }
    SHA256((const uint8_t *)tok, (size_t)n, app->admin_token_hash);
    OPENSSL_cleanse(tok, sizeof(tok));
    return 0;
}

/* derive_urls fixes the base path and the callback base Exchange is given. */
static int derive_urls(struct ens_app *app)
{
    const struct ens_config *cfg = app->cfg;
    snprintf(app->base_path, sizeof(app->base_path), "%s",
             cfg->http.base_path ? cfg->http.base_path : "");
    size_t bl = strlen(app->base_path);
    while (bl > 0 && app->base_path[bl - 1] == '/')
        app->base_path[--bl] = '\0';
    char pub[1024];
    if (cfg->http.public_url) {
        snprintf(pub, sizeof(pub), "%s", cfg->http.public_url);
    } else {
        char host[256];
        uint16_t port;
        if (ens_config_hostport_split(cfg->listen.public_addr, host, sizeof(host), &port) != 0)
            return ENS_ECONFIG;
        int wildcard = strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
        snprintf(pub, sizeof(pub), "%s://%s:%u%s", cfg->tls.cert ? "https" : "http",
                 wildcard ? "127.0.0.1" : host, port, app->base_path);
        RT_LOG_W("config",
                 "http.public_url is not set: Exchange will be told to call back %s, "
                 "which only works on this machine",
                 pub);
    }
    size_t pl = strlen(pub);
    while (pl > 0 && pub[pl - 1] == '/')
        pub[--pl] = '\0';
    int n = snprintf(app->callback_base, sizeof(app->callback_base), "%s/v1/ews/", pub);
    /* Exchange refuses URLs of 2,083 characters or more; leave room for the token. */
    if (n < 0 || (size_t)n + SEAL_TOKEN_CHARS >= 2083) {
        fprintf(stderr, "ensd: http.public_url is too long for an Exchange callback URL\n");
        return ENS_ECONFIG;
    }
    return 0;
}

static int make_tls(struct ens_app *app)
{
    const struct ens_config *cfg = app->cfg;
    char err[256];
    if (cfg->tls.cert) {
        static const char *const kAlpn[] = {"h2", "http/1.1", NULL};
        struct rt_tls_server_opts so = {cfg->tls.cert, cfg->tls.key, kAlpn};
        app->server_tls = rt_tls_ctx_server_new(&so, err, sizeof(err));
        if (app->server_tls == NULL) {
            fprintf(stderr, "ensd: tls.cert/tls.key: %s\n", err);
            return ENS_ECONFIG;
        }
    }
    struct rt_tls_client_opts co = {cfg->ews.ca_file, NULL, NULL, NULL};
    app->ews_tls = rt_tls_ctx_client_new(&co, err, sizeof(err));
    if (app->ews_tls == NULL) {
        fprintf(stderr, "ensd: ews.ca_file: %s\n", err);
        return ENS_ECONFIG;
    }
    return 0;
}

/* ---- Schedulers ---- */

static void fatal_start(struct ens_app *app, const char *what, int err)
{
    RT_LOG_E("ensd.start", "%s: %s", what, ens_strerror(err));
    atomic_store(&app->exit_code, 1);
    uv_async_send(app->main_wake);
}

static void on_public_accept(struct rt_stream *s, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    h1_server_add(ctx->public_http, s); /* on error it closes the stream */
}

static void on_admin_accept(struct rt_stream *s, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    h1_server_add(ctx->admin_http, s);
}

_Static_assert(ENS_REDIS_DROP_REASONS == STORE_DROP_REASONS, "app.h counts the drop reasons");

/* The store's watcher: publishes this loop's Redis readiness for /ready,
 * which may run on any scheduler (relaxed: the flag carries nothing else). */
static void on_store_ready(int ready, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    atomic_store_explicit(&ctx->redis_ready, ready, memory_order_relaxed);
    if (ctx->store == NULL)
        return; /* store_free at shutdown: not news */
    if (ready)
        RT_LOG_I("redis.ready", "sched=%d", rt_sched_index(ctx->sched));
    else
        RT_LOG_W("redis.down", "sched=%d: /ready answers 503 until it is back",
                 rt_sched_index(ctx->sched));
}

static void stats_tick(uv_timer_t *t)
{
    struct ens_sched_ctx *ctx = t->data;
    if (ctx->store == NULL)
        return;
    struct store_stats st;
    store_stats(ctx->store, &st);
    atomic_store_explicit(&ctx->redis_round_trips, st.round_trips, memory_order_relaxed);
    atomic_store_explicit(&ctx->redis_errors, st.errors, memory_order_relaxed);
    atomic_store_explicit(&ctx->redis_timeouts, st.timeouts, memory_order_relaxed);
    for (int i = 0; i < STORE_DROP_REASONS; i++)
        atomic_store_explicit(&ctx->redis_drops[i], st.drops[i], memory_order_relaxed);
    struct act_memo_stats ms;
    act_memo_cache_stats(ctx->memo, &ms);
    atomic_store_explicit(&ctx->memo_entries, ms.entries, memory_order_relaxed);
    atomic_store_explicit(&ctx->memo_evictions, ms.evictions, memory_order_relaxed);
}

/* public_open_try opens this scheduler's public listener once there is
 * something to serve: the keys are loaded and its own Redis connection is up.
 * Until then nothing is listening, so a load balancer sends elsewhere and
 * Exchange retries, where an open port would have had to answer callbacks it
 * cannot judge. Polled, since both conditions are other threads' news. */
static void public_open_try(uv_timer_t *t)
{
    struct ens_sched_ctx *ctx = t->data;
    struct ens_app *app = ctx->app;
    if (ctx->public_listener || ctx->stopping)
        return;
    if (ens_app_keys(app) == NULL || ctx->store == NULL || !store_ready(ctx->store)) {
        uint64_t waited = uv_now(t->loop) - ctx->open_since_ms;
        if (waited >= ctx->open_warn_ms) {
            RT_LOG_W("ensd.start", "sched=%d not listening yet after %llu s: waiting for %s",
                     rt_sched_index(ctx->sched), (unsigned long long)(waited / 1000),
                     ens_app_keys(app) == NULL ? "the keys to load" : "Redis");
            ctx->open_warn_ms = waited + ENSD_OPEN_WARN_EVERY_MS;
        }
        return;
    }
    uv_timer_stop(t);
    int rc = rt_listen(t->loop, app->cfg->listen.public_addr, app->server_tls, 1, on_public_accept,
                       ctx, &ctx->public_listener);
    if (rc) {
        fatal_start(app, "listen.public", rc);
        return;
    }
    if (rt_sched_index(ctx->sched) == 0)
        RT_LOG_I("ensd.start", "listening public=%s (%s) admin=%s threads=%d version=" ENS_VERSION,
                 app->cfg->listen.public_addr, app->server_tls ? "TLS" : "plain HTTP",
                 app->cfg->listen.admin, rt_nscheds(app->rt));
}

static void sched_start(struct rt_sched *s, void *ud)
{
    struct ens_app *app = ud;
    const struct ens_config *cfg = app->cfg;
    uv_loop_t *loop = rt_sched_loop(s);
    struct ens_sched_ctx *ctx = ens_calloc(1, sizeof(*ctx));
    ctx->app = app;
    ctx->sched = s;
    rt_sched_set_data(s, ctx);
    char err[256];
    ctx->store = store_new(loop, cfg->redis.url, err, sizeof(err));
    if (ctx->store == NULL) {
        RT_LOG_E("ensd.start", "redis.url: %s", err);
        fatal_start(app, "redis", ENS_ECONFIG);
        return;
    }
    store_watch_ready(ctx->store, on_store_ready, ctx);
    size_t memo_cap = (size_t)cfg->mailbox.cache_entries / (size_t)rt_nscheds(app->rt);
    ctx->memo = act_memo_cache_new(memo_cap);
    act_health_start(ctx);
    uv_timer_init(loop, &ctx->stats_timer);
    ctx->stats_timer.data = ctx;
    uv_timer_start(&ctx->stats_timer, stats_tick, 1000, 1000);
    int rc = act_responder_spawn(app->rt, rt_sched_index(s), &ctx->responder);
    if (rc) {
        fatal_start(app, "responder", rc);
        return;
    }
    struct h1_server_opts ho = {.max_body = (size_t)cfg->http.max_body_bytes};
    ctx->public_http = h1_server_new(loop, &ho, act_http_public, ctx);
    uv_timer_init(loop, &ctx->open_timer);
    ctx->open_timer.data = ctx;
    ctx->open_since_ms = uv_now(loop);
    ctx->open_warn_ms = ENSD_OPEN_WARN_FIRST_MS;
    uv_timer_start(&ctx->open_timer, public_open_try, 0, ENSD_OPEN_POLL_MS);
    if (rt_sched_index(s) == 0) {
        struct h1_server_opts ao = {.max_body = 64 * 1024};
        ctx->admin_http = h1_server_new(loop, &ao, act_http_admin, ctx);
        rc =
            rt_listen(loop, cfg->listen.admin, NULL, 0, on_admin_accept, ctx, &ctx->admin_listener);
        if (rc) {
            fatal_start(app, "listen.admin", rc);
            return;
        }
        act_keys_load_start(app, ctx->store);
        rc = act_push_start(app, s);
        if (rc) {
            fatal_start(app, "apns", rc);
            return;
        }
        RT_LOG_I("ensd.start",
                 "admin=%s listening; public=%s opens once the keys are loaded "
                 "and Redis answers",
                 cfg->listen.admin, cfg->listen.public_addr);
    }
}

/* sched_finish closes the Redis connection (pending commands get
 * ENS_ECANCELED; the actors see the store gone) and ends the loop. */
static void sched_finish(struct ens_sched_ctx *ctx)
{
    struct store *st = ctx->store;
    stats_tick(&ctx->stats_timer); /* the last figures survive the store */
    uv_timer_stop(&ctx->stats_timer);
    act_health_stop(ctx);
    ctx->store = NULL;
    store_free(st);
    rt_sched_stopped(ctx->sched);
}

static void sched_drained(struct h1_server *srv, void *ud)
{
    struct ens_sched_ctx *ctx = ud;
    if (srv == ctx->public_http)
        ctx->public_http = NULL;
    else
        ctx->admin_http = NULL;
    h1_server_free(srv);
    if (ctx->public_http == NULL && ctx->admin_http == NULL)
        sched_finish(ctx);
}

static void sched_stop(struct rt_sched *s, void *ud)
{
    (void)ud;
    struct ens_sched_ctx *ctx = rt_sched_data(s);
    if (ctx == NULL) {
        rt_sched_stopped(s);
        return;
    }
    ctx->stopping = 1;
    uv_timer_stop(&ctx->open_timer);
    if (ctx->public_listener)
        rt_listener_close(ctx->public_listener);
    if (ctx->admin_listener)
        rt_listener_close(ctx->admin_listener);
    ctx->public_listener = ctx->admin_listener = NULL;
    if (ctx->public_http == NULL && ctx->admin_http == NULL) {
        sched_finish(ctx);
        return;
    }
    /* In-flight requests finish (their mailbox actors keep running meanwhile);
     * the runtime's grace timer bounds the wait. */
    if (ctx->public_http)
        h1_server_drain(ctx->public_http, sched_drained, ctx);
    if (ctx->admin_http)
        h1_server_drain(ctx->admin_http, sched_drained, ctx);
}

/* ---- Main thread: signals ---- */

struct main_ctx {
    struct ens_app *app;
    uv_signal_t sigint, sigterm;
#ifdef ENS_TEST_CLOCK
    uv_signal_t sigusr2;
    int64_t clock_step_ms;
#endif
    uv_async_t wake;
    int stopping;
};

static void main_stop(struct main_ctx *m, const char *why)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    RT_LOG_I("ensd.stop", "%s: stopping (in-flight work gets %d ms)", why, ENSD_GRACE_MS);
    rt_stop(m->app->rt, ENSD_GRACE_MS);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->wake, NULL);
#ifdef ENS_TEST_CLOCK
    uv_close((uv_handle_t *)&m->sigusr2, NULL);
#endif
}

#ifdef ENS_TEST_CLOCK
/* ensd_test only: each SIGUSR2 moves the wall clock of mailbox deadlines
 * forward by ENS_TEST_CLOCK_STEP_MS (default one minute), so tests see
 * "no status event for 2 x StatusFrequency" without waiting for it. */
static void on_clock_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    struct main_ctx *m = h->data;
    rt_clock_advance(m->clock_step_ms);
    RT_LOG_W("ensd.test_clock", "clock moved forward by %lld ms", (long long)m->clock_step_ms);
}

static void test_clock_start(struct main_ctx *m, uv_loop_t *loop)
{
    const char *step = getenv("ENS_TEST_CLOCK_STEP_MS");
    m->clock_step_ms = step ? strtoll(step, NULL, 10) : 60000;
    uv_signal_init(loop, &m->sigusr2);
    m->sigusr2.data = m;
    uv_signal_start(&m->sigusr2, on_clock_signal, SIGUSR2);
    RT_LOG_W("ensd.test_clock", "test build: SIGUSR2 moves the clock by %lld ms",
             (long long)m->clock_step_ms);
}
#endif

static void on_signal(uv_signal_t *h, int signum)
{
    main_stop(h->data, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_wake(uv_async_t *h)
{
    main_stop(h->data, "fatal start-up error");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ensd [--config FILE] [--check-config] [--version]\n"
            "  --config FILE    the JSON configuration (every key also from ENS_<SECTION>_<KEY>)\n"
            "  --check-config   print the effective configuration (secrets elided) and exit\n");
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("ensd " ENS_VERSION "\n");
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    struct ens_config cfg;
    char err[512];
    if (ens_config_load(config_path, environ, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "ensd: %s\n", err);
        return 2;
    }
    rt_log_setup(cfg.log.level, cfg.log.format);
    if (check) {
        struct rt_buf b;
        rt_buf_init(&b, 1 << 20);
        int rc = ens_config_dump(&cfg, &b);
        if (rc == 0)
            printf("%s\n", rt_buf_cstr(&b));
        rt_buf_cleanup(&b);
        ens_config_cleanup(&cfg);
        return rc ? 1 : 0;
    }
    signal(SIGPIPE, SIG_IGN);
    soap_init();

    struct ens_app *app = ens_calloc(1, sizeof(*app));
    app->cfg = &cfg;
    int created = 0;
    int rc = seal_master_load(cfg.secrets.master_key_file, cfg.secrets.master_key, app->master,
                              &created);
    if (rc) {
        fprintf(stderr,
                "ensd: cannot load the master key (secrets.master_key_file %s or "
                "ENS_SECRETS_MASTER_KEY): %s\n",
                cfg.secrets.master_key_file, ens_strerror(rc));
        return 2;
    }
    if (created)
        RT_LOG_W("secrets",
                 "created a new master key in %s: back it up, losing it orphans every "
                 "enrollment",
                 cfg.secrets.master_key_file);
    ens_ids_derive_keys(app->master, app->id_key, app->fp_key);
    if (load_admin_token(app, cfg.admin.token_file) != 0 || derive_urls(app) != 0 ||
        make_tls(app) != 0)
        return 2;

    const struct {
        int per_minute, burst;
    } limits[ENS_LIMITS] = {
        [ENS_LIMIT_ADDRESS] = {cfg.ratelimit.address_per_minute, cfg.ratelimit.address_burst},
        [ENS_LIMIT_TOKEN] = {cfg.ratelimit.token_per_minute, cfg.ratelimit.token_burst},
        [ENS_LIMIT_MAILBOX] = {cfg.ratelimit.mailbox_per_minute, cfg.ratelimit.mailbox_burst},
    };
    for (int i = 0; i < ENS_LIMITS; i++)
        app->limits[i] =
            rt_ratelimit_new((size_t)cfg.ratelimit.entries, (uint32_t)limits[i].per_minute,
                             (uint32_t)limits[i].burst);

    struct main_ctx m = {.app = app};
    uv_loop_t *loop = uv_default_loop();
    uv_signal_init(loop, &m.sigint);
    uv_signal_init(loop, &m.sigterm);
    uv_async_init(loop, &m.wake, on_wake);
    m.sigint.data = m.sigterm.data = m.wake.data = &m;
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
#ifdef ENS_TEST_CLOCK
    test_clock_start(&m, loop);
#endif
    app->main_wake = &m.wake;

    struct rt_sched_hooks hooks = {sched_start, sched_stop, app};
    app->rt = rt_new(cfg.runtime.threads, &hooks);
    struct rt_keyed_class users;
    act_user_class(app, &users);
    rt_keyed_set(app->rt, &users);
    if (rt_fdlimit_setup(rt_nscheds(app->rt), NULL) != 0)
        RT_LOG_W("fd.limit", "cannot read RLIMIT_NOFILE: connection caps stay at the default");
    rc = rt_start(app->rt);
    if (rc) {
        RT_LOG_E("ensd.start", "cannot start the scheduler threads");
        atomic_store(&app->exit_code, 1);
        main_stop(&m, "start failure");
    }
    uv_run(loop, UV_RUN_DEFAULT);
    rt_join(app->rt);
    uv_loop_close(loop);

    /* The schedulers are gone: their contexts and the shared objects go now. */
    for (int i = 0; i < rt_nscheds(app->rt); i++) {
        struct ens_sched_ctx *ctx = rt_sched_data(rt_sched_at(app->rt, i));
        if (ctx)
            act_memo_cache_free(ctx->memo);
        ens_free(ctx);
    }
    int code = atomic_load(&app->exit_code);
    rt_free(app->rt);
    act_keyset_free(ens_app_keys(app));
    rt_tls_ctx_free(app->server_tls);
    rt_tls_ctx_free(app->ews_tls);
    for (int i = 0; i < ENS_LIMITS; i++)
        rt_ratelimit_free(app->limits[i]);
    OPENSSL_cleanse(app->master, sizeof(app->master));
    OPENSSL_cleanse(app->id_key, sizeof(app->id_key));
    OPENSSL_cleanse(app->fp_key, sizeof(app->fp_key));
    ens_free(app);
    ens_config_cleanup(&cfg);
    RT_LOG_I("ensd.stop", "stopped");
    return code;
}
