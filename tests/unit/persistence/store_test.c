/* persistence/ against a real redis-server: what the user actor, the HTTP
 * handlers and the admin API rely on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "persistence/store_admin.h"
#include "persistence/store_health.h"
#include "persistence/store_redis.h"
#include "persistence/store_user.h"
#include "runtime/err.h"
#include "tests/support/redis_fixture.h"

static uv_loop_t loop;
static struct redis_fixture F;
static struct store *S;

struct res {
    int done;
    int calls;
    int err;
    int created;
    struct store_user *u;
    struct store_tenant *t;
    char id[STORE_ID_CHARS + 1];
    uint8_t blob[256];
    size_t blob_len;
};

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag is set or |ms| pass; returns *flag. */
static int run_until(const int *flag, uint64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + ms;
    while (!*flag && uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag;
}

/* Lets close callbacks run; the shared store keeps the loop alive, so
 * UV_RUN_DEFAULT would not return. */
static void settle(void)
{
    int never = 0;
    run_until(&never, 50);
}

static int ready_flag;
static void on_ready_tick(uv_timer_t *t)
{
    ready_flag = store_ready(t->data);
}

static int wait_ready(struct store *s, uint64_t ms)
{
    uv_timer_t t;
    ready_flag = store_ready(s);
    uv_timer_init(&loop, &t);
    t.data = s;
    uv_timer_start(&t, on_ready_tick, 5, 5);
    run_until(&ready_flag, ms);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ready_flag;
}

static uint64_t dl(uint64_t ms)
{
    uv_update_time(&loop);
    return uv_now(&loop) + ms;
}

static void on_done(int err, void *ud)
{
    struct res *r = ud;
    r->err = err;
    r->calls++;
    r->done = 1;
}

static void on_user(int err, struct store_user *u, void *ud)
{
    struct res *r = ud;
    r->err = err;
    r->u = u;
    r->calls++;
    r->done = 1;
}

static void on_uid(int err, const char *uid, void *ud)
{
    struct res *r = ud;
    r->err = err;
    if (err == 0)
        snprintf(r->id, sizeof(r->id), "%s", uid);
    r->calls++;
    r->done = 1;
}

static void on_blob(int err, struct span blob, void *ud)
{
    struct res *r = ud;
    r->err = err;
    if (err == 0 && blob.len <= sizeof(r->blob)) {
        memcpy(r->blob, blob.p, blob.len);
        r->blob_len = blob.len;
    }
    r->calls++;
    r->done = 1;
}

static void on_reply(int err, struct redisReply *reply, void *ud)
{
    struct res *r = ud;
    r->err = err;
    r->calls++;
    r->done = 1;
}

static void on_created(int err, int created, void *ud)
{
    struct res *r = ud;
    r->err = err;
    r->created = created;
    r->calls++;
    r->done = 1;
}

static void on_tenant(int err, struct store_tenant *t, void *ud)
{
    struct res *r = ud;
    r->err = err;
    r->t = t;
    r->calls++;
    r->done = 1;
}

static void fill_device(struct store_device *d, const char *client, const char *platform)
{
    store_id_new(d->device_id);
    snprintf(d->client_id, sizeof(d->client_id), "%s", client);
    snprintf(d->platform, sizeof(d->platform), "%s", platform);
    memset(d->push_token, 'a', 64);
    snprintf(d->app_id, sizeof(d->app_id), "com.example.mail");
    snprintf(d->environment, sizeof(d->environment), "production");
    memset(d->key_hash, 'f', STORE_KEY_HASH_CHARS);
    snprintf(d->preview, sizeof(d->preview), "full");
    d->badge = 1;
    d->created_at = 1764000000;
}

static struct store_user *make_user(size_t ndev)
{
    struct store_user *u = store_user_new();
    store_id_new(u->user_id);
    store_id_new(u->tenant_id);
    snprintf(u->email, sizeof(u->email), "Alice@Contoso.com");
    snprintf(u->ews_url, sizeof(u->ews_url), "https://mail.contoso.com/EWS/Exchange.asmx");
    snprintf(u->auth_type, sizeof(u->auth_type), "basic");
    u->cred_fp = 0xbeef;
    u->badge = 3;
    u->created_at = 1764000000;
    u->updated_at = 1764000100;
    snprintf(u->sub.id, sizeof(u->sub.id), "EQBtYWlsMDEuY29udG9zby5jb20=");
    u->sub.state = STORE_SUB_ACTIVE;
    snprintf(u->sub.watermark, sizeof(u->sub.watermark), "AQAAAEn6");
    snprintf(u->sub.cred_id, sizeof(u->sub.cred_id), "0123456789abcdef");
    u->sub.sealing_kid = 7;
    u->sub.status_frequency_min = 5;
    u->sub.last_status_at = 1764000050;
    u->counters.notifications = 42;
    for (size_t i = 0; i < ndev; i++)
        fill_device(store_user_add_device(u), i ? "client-2" : "client-1", i ? "android" : "ios");
    return u;
}

static void save(const struct store_user *u, const char *const *removed, size_t nrem)
{
    struct res r = {0};
    assert_int_equal(store_user_save(S, u, removed, nrem, STORE_SAVE_INDEX, dl(2000), on_done, &r),
                     0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.calls, 1);
}

static struct store_user *load(const char *uid, int expect_err)
{
    struct res r = {0};
    assert_int_equal(store_user_load(S, uid, dl(2000), on_user, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, expect_err);
    return r.u;
}

/* Looks a device id up in the device index. */
static int find(const char *device_id, char *out)
{
    struct res r = {0};
    assert_int_equal(store_user_find_by_device(S, device_id, dl(2000), on_uid, &r), 0);
    assert_true(run_until(&r.done, 3000));
    if (out)
        memcpy(out, r.id, sizeof(r.id));
    return r.err;
}

static int group_setup(void **state)
{
    uv_loop_init(&loop);
    if (redis_fixture_start(&F, 0) != 0)
        return -1;
    char err[128];
    S = store_new(&loop, F.url, err, sizeof(err));
    return S && wait_ready(S, 3000) ? 0 : -1;
}

static int group_teardown(void **state)
{
    store_free(S);
    uv_run(&loop, UV_RUN_DEFAULT);
    redis_fixture_stop(&F);
    return uv_loop_close(&loop) == 0 ? 0 : -1;
}

static int flush(void **state)
{
    return redis_fixture_cmd(&F, "FLUSHALL");
}

static void cred_put(const char *uid, const char *cred_id, const void *blob, size_t len)
{
    struct res r = {0};
    assert_int_equal(store_cred_put(S, uid, cred_id, blob, len, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
}

/* Reads a blob into |r| and returns the error. */
static int cred_get(const char *uid, const char *cred_id, struct res *r)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(store_cred_get(S, uid, cred_id, dl(2000), on_blob, r), 0);
    assert_true(run_until(&r->done, 3000));
    return r->err;
}

static long long dbsize(void)
{
    redisContext *c = redisConnectUnix(F.sock);
    assert_non_null(c);
    redisReply *n = redisCommand(c, "DBSIZE");
    assert_non_null(n);
    assert_int_equal(n->type, REDIS_REPLY_INTEGER);
    long long v = n->integer;
    freeReplyObject(n);
    redisFree(c);
    return v;
}

static void test_save_load_two_devices(void **state)
{
    struct store_user *u = make_user(2);
    /* every field set, so every row of the record tables is exercised */
    snprintf(u->auth_type, sizeof(u->auth_type), "certificate");
    u->sub.created_at = 1764000010;
    u->counters.callbacks = 9;
    u->counters.pushes_ok = 8;
    u->counters.pushes_failed = 1;
    u->devices[1].blocked = 1;
    u->devices[1].last_push_at = 1764000123;
    snprintf(u->devices[1].last_push_result, sizeof(u->devices[1].last_push_result),
             "410 Unregistered");
    /* (arrays zeroed first: the comparison below is of whole structs) */
    memset(u->devices[1].push_token, 0, sizeof(u->devices[1].push_token));
    snprintf(u->devices[1].push_token, sizeof(u->devices[1].push_token), "fcm:APA91b-Tok_en");
    memset(u->devices[1].environment, 0, sizeof(u->devices[1].environment));
    snprintf(u->devices[1].environment, sizeof(u->devices[1].environment), "sandbox");
    memset(u->devices[1].preview, 0, sizeof(u->devices[1].preview));
    snprintf(u->devices[1].preview, sizeof(u->devices[1].preview), "sender");
    save(u, NULL, 0);
    struct store_user *got = load(u->user_id, 0);
    assert_non_null(got);
    assert_string_equal(got->user_id, u->user_id);
    assert_string_equal(got->tenant_id, u->tenant_id);
    assert_string_equal(got->email, u->email);
    assert_string_equal(got->ews_url, u->ews_url);
    assert_string_equal(got->auth_type, "certificate");
    assert_int_equal(got->cred_fp, 0xbeef);
    assert_int_equal(got->badge, 3);
    assert_int_equal(got->created_at, 1764000000);
    assert_int_equal(got->updated_at, 1764000100);
    assert_string_equal(got->sub.id, u->sub.id);
    assert_int_equal(got->sub.state, STORE_SUB_ACTIVE);
    assert_string_equal(got->sub.watermark, "AQAAAEn6");
    assert_string_equal(got->sub.cred_id, "0123456789abcdef");
    assert_int_equal(got->sub.sealing_kid, 7);
    assert_int_equal(got->sub.status_frequency_min, 5);
    assert_int_equal(got->sub.last_status_at, 1764000050);
    assert_int_equal(got->sub.created_at, 1764000010);
    assert_int_equal(got->counters.callbacks, 9);
    assert_int_equal(got->counters.notifications, 42);
    assert_int_equal(got->counters.pushes_ok, 8);
    assert_int_equal(got->counters.pushes_failed, 1);
    assert_int_equal(got->n_devices, 2);
    for (size_t i = 0; i < 2; i++) {
        struct store_device *d = store_user_find_device(got, u->devices[i].device_id);
        assert_non_null(d);
        assert_memory_equal(d, &u->devices[i], sizeof(*d));
    }
    store_user_free(got);
    store_user_free(u);
}

static void test_device_index(void **state)
{
    struct store_user *u = make_user(2);
    save(u, NULL, 0);
    char uid[STORE_ID_CHARS + 1];
    assert_int_equal(find(u->devices[0].device_id, uid), 0);
    assert_string_equal(uid, u->user_id);
    assert_int_equal(find(u->devices[1].device_id, uid), 0);
    assert_string_equal(uid, u->user_id);
    char other[STORE_ID_CHARS + 1];
    store_id_new(other);
    assert_int_equal(find(other, NULL), ENS_ENOTFOUND);
    /* the mailbox hash and one index entry per device: nothing else */
    assert_int_equal(dbsize(), 3);
    store_user_free(u);
}

static void del_mailbox(const char *uid, int expect)
{
    struct res r = {0};
    assert_int_equal(store_user_delete(S, uid, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, expect);
}

/* The device index lives outside the mailbox's hash slot, so it is written
 * beside the mailbox, never in one transaction with it: a removal or a delete
 * only drops an entry that still names this mailbox, and a stale entry is
 * repaired on read. */
static void test_index_beside_the_mailbox(void **state)
{
    struct store_user *a = make_user(1), *b = make_user(1);
    char dev[STORE_ID_CHARS + 1], uid[STORE_ID_CHARS + 1];
    memcpy(dev, a->devices[0].device_id, sizeof(dev));
    save(a, NULL, 0);
    /* the device re-enrolls into mailbox b: its entry names b now */
    memcpy(b->devices[0].device_id, dev, sizeof(dev));
    save(b, NULL, 0);
    assert_int_equal(find(dev, uid), 0);
    assert_string_equal(uid, b->user_id);
    /* a forgets the device: b's entry stays */
    assert_int_equal(store_user_remove_device(a, dev), 0);
    const char *removed[] = {dev};
    save(a, removed, 1);
    assert_int_equal(find(dev, uid), 0);
    assert_string_equal(uid, b->user_id);
    /* a mailbox deleted while its record still lists the device: the same */
    struct store_user *c = make_user(1);
    memcpy(c->devices[0].device_id, dev, sizeof(dev));
    char c_uid[STORE_ID_CHARS + 1];
    memcpy(c_uid, c->user_id, sizeof(c_uid));
    save(c, NULL, 0); /* names c */
    save(b, NULL, 0); /* names b again */
    del_mailbox(c_uid, 0);
    assert_int_equal(find(dev, uid), 0);
    assert_string_equal(uid, b->user_id);
    /* repair drops an entry only while it names the given mailbox */
    struct res r = {0};
    assert_int_equal(store_user_index_repair(S, dev, a->user_id, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(find(dev, NULL), 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_user_index_repair(S, dev, b->user_id, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(find(dev, NULL), ENS_ENOTFOUND);
    assert_int_equal(store_user_index_repair(S, "x}", b->user_id, dl(2000), on_done, &r),
                     ENS_EINVAL);
    store_user_free(a);
    store_user_free(b);
    store_user_free(c);
}

/* A save that changes no device (a callback's) is the record alone: one
 * write; the index is written by the saves that ask for it. */
static void test_save_without_index(void **state)
{
    struct store_user *u = make_user(1);
    struct res r = {0};
    assert_int_equal(store_user_save(S, u, NULL, 0, 0, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(find(u->devices[0].device_id, NULL), ENS_ENOTFOUND);
    assert_int_equal(dbsize(), 1);
    save(u, NULL, 0); /* with STORE_SAVE_INDEX */
    assert_int_equal(find(u->devices[0].device_id, NULL), 0);
    assert_int_equal(dbsize(), 2);
    store_user_free(u);
}

static void test_removed_device_and_replaced_sub(void **state)
{
    struct store_user *u = make_user(2);
    save(u, NULL, 0);
    char gone[STORE_ID_CHARS + 1], kept[STORE_ID_CHARS + 1];
    memcpy(gone, u->devices[0].device_id, sizeof(gone));
    memcpy(kept, u->devices[1].device_id, sizeof(kept));
    assert_int_equal(store_user_remove_device(u, gone), 0);
    snprintf(u->sub.id, sizeof(u->sub.id), "NEW-SUBSCRIPTION-ID");
    const char *removed[] = {gone};
    save(u, removed, 1);

    struct store_user *got = load(u->user_id, 0);
    assert_int_equal(got->n_devices, 1);
    assert_string_equal(got->devices[0].device_id, kept);
    assert_string_equal(got->sub.id, "NEW-SUBSCRIPTION-ID");
    store_user_free(got);
    assert_int_equal(find(gone, NULL), ENS_ENOTFOUND);
    assert_int_equal(find(kept, NULL), 0);
    assert_int_equal(dbsize(), 2);
    store_user_free(u);
}

/* The blob is stored before the mailbox's first save (enrollment), and every
 * later save rewrites the mailbox: no save may lose it. */
static void test_save_keeps_cred_blobs(void **state)
{
    struct store_user *u = make_user(1);
    const uint8_t blob[] = {0x00, 0xff, 'b', 'l', 'o', 'b', 0x00};
    cred_put(u->user_id, u->sub.cred_id, blob, sizeof(blob));
    cred_put(u->user_id, "fedcba9876543210", "old", 3);
    /* a blob without a mailbox is not a mailbox */
    assert_null(load(u->user_id, ENS_ENOTFOUND));
    save(u, NULL, 0);
    u->counters.notifications++;
    u->badge = 0;
    u->sub.watermark[0] = '\0'; /* a field going back to its default */
    save(u, NULL, 0);
    struct res r;
    assert_int_equal(cred_get(u->user_id, u->sub.cred_id, &r), 0);
    assert_int_equal(r.blob_len, sizeof(blob));
    assert_memory_equal(r.blob, blob, sizeof(blob));
    assert_int_equal(cred_get(u->user_id, "fedcba9876543210", &r), 0);
    assert_int_equal(r.blob_len, 3);
    struct store_user *got = load(u->user_id, 0);
    assert_int_equal(got->counters.notifications, 43);
    assert_int_equal(got->badge, 0);
    assert_string_equal(got->sub.watermark, "");
    assert_int_equal(got->n_devices, 1);
    store_user_free(got);
    /* deleting one blob leaves the other and the mailbox */
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cred_del(S, u->user_id, "fedcba9876543210", dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(cred_get(u->user_id, "fedcba9876543210", &r), ENS_ENOTFOUND);
    assert_int_equal(cred_get(u->user_id, u->sub.cred_id, &r), 0);
    got = load(u->user_id, 0);
    store_user_free(got);
    store_user_free(u);
}

/* Bytes that are not a mailbox record fail the load, not the process; the
 * delete still clears the mailbox. */
static void test_corrupt_record(void **state)
{
    struct store_user *u = make_user(1);
    save(u, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "HSET ens:u:{%s} m garbage", u->user_id);
    assert_int_equal(redis_fixture_cmd(&F, cmd), 0);
    assert_null(load(u->user_id, ENS_EPARSE));
    struct res r = {0};
    assert_int_equal(store_user_delete(S, u->user_id, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_null(load(u->user_id, ENS_ENOTFOUND));
    store_user_free(u);
}

static void test_cred_blobs_are_binary_safe(void **state)
{
    char uid[STORE_ID_CHARS + 1];
    store_id_new(uid);
    const uint8_t blob[] = {0x00, 0x01, 0xff, 0x00, '\r', '\n', 0x00, 0x7f};
    struct res r = {0};
    assert_int_equal(
        store_cred_put(S, uid, "00112233aabbccdd", blob, sizeof(blob), dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cred_get(S, uid, "00112233aabbccdd", dl(2000), on_blob, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.blob_len, sizeof(blob));
    assert_memory_equal(r.blob, blob, sizeof(blob));
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cred_del(S, uid, "00112233aabbccdd", dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cred_get(S, uid, "00112233aabbccdd", dl(2000), on_blob, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, ENS_ENOTFOUND);
    /* ids that would break out of the key layout are refused up front */
    assert_int_equal(store_cred_get(S, uid, "../../etc", dl(2000), on_blob, &r), ENS_EINVAL);
    assert_int_equal(store_cred_get(S, "x}", "00112233aabbccdd", dl(2000), on_blob, &r),
                     ENS_EINVAL);
}

/* A request digest is claimed once per ttl, in the mailbox's hash slot. */
static void test_request_claim(void **state)
{
    char uid[STORE_ID_CHARS + 1];
    store_id_new(uid);
    const char digest[] = "0123456789abcdef0123456789abcdef";
    struct res r = {0};
    assert_int_equal(store_request_claim(S, uid, digest, 1200, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    for (int i = 0; i < 2; i++) {
        memset(&r, 0, sizeof(r));
        assert_int_equal(store_request_claim(S, uid, digest, 1200, dl(2000), on_done, &r), 0);
        assert_true(run_until(&r.done, 3000));
        assert_int_equal(r.err, ENS_EEXIST);
    }
    /* another mailbox is another claim */
    char other[STORE_ID_CHARS + 1];
    store_id_new(other);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_request_claim(S, other, digest, 1200, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    /* it expires: a ttl of 1 s */
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_request_claim(S, uid, "ff", 1, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    int never = 0;
    run_until(&never, 1200);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_request_claim(S, uid, "ff", 1, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    /* digests that would break out of the key, or are no digest, are refused */
    assert_int_equal(store_request_claim(S, uid, "0A", 10, dl(2000), on_done, &r), ENS_EINVAL);
    assert_int_equal(store_request_claim(S, uid, "}x", 10, dl(2000), on_done, &r), ENS_EINVAL);
    assert_int_equal(store_request_claim(S, uid, "", 10, dl(2000), on_done, &r), ENS_EINVAL);
    assert_int_equal(
        store_request_claim(S, uid, "0123456789abcdef0123456789abcdef0", 10, dl(2000), on_done, &r),
        ENS_EINVAL);
    assert_int_equal(store_request_claim(S, uid, digest, 0, dl(2000), on_done, &r), ENS_EINVAL);
    assert_int_equal(store_request_claim(S, "x}", digest, 10, dl(2000), on_done, &r), ENS_EINVAL);
}

struct take_res {
    int done, err;
    size_t n;
    char uids[8][STORE_ID_CHARS + 1];
    int64_t due;
};

static void on_take(int err, const char *const *uids, size_t n, void *ud)
{
    struct take_res *r = ud;
    r->err = err;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(r->uids[i], sizeof(r->uids[i]), "%s", uids[i]);
    r->done = 1;
}

static void on_due(int err, int64_t due, void *ud)
{
    struct take_res *r = ud;
    r->err = err;
    r->due = due;
    r->done = 1;
}

static struct take_res take(int shard, int64_t now, int64_t lease, size_t max)
{
    struct take_res r = {0};
    assert_int_equal(store_health_take(S, shard, now, lease, max, dl(2000), on_take, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    return r;
}

static int64_t due_of(const char *uid)
{
    struct take_res r = {0};
    assert_int_equal(store_health_due_get(S, uid, dl(2000), on_due, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    return r.due;
}

static void health_set(const char *uid, int64_t due)
{
    struct res r = {0};
    assert_int_equal(store_health_set(S, uid, due, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
}

/* The health index: what is due is taken once and leased, what is not due
 * stays, a later set replaces the due time, a delete forgets the mailbox, and
 * a member we never wrote is never handed on as a mailbox id. */
static void test_health_index(void **state)
{
    char a[STORE_ID_CHARS + 1], b[STORE_ID_CHARS + 1];
    /* two mailboxes of one shard */
    store_id_new(a);
    do
        store_id_new(b);
    while (store_health_shard(b) != store_health_shard(a));
    int shard = store_health_shard(a);
    assert_true(shard >= 0 && shard < STORE_HEALTH_SHARDS);
    health_set(a, 1000);
    health_set(b, 5000);
    assert_int_equal(due_of(a), 1000);
    struct take_res t = take(shard, 2000, 60000, 10);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.uids[0], a);
    assert_int_equal(due_of(a), 62000); /* leased */
    assert_int_equal(take(shard, 2000, 60000, 10).n, 0);
    t = take(shard, 70000, 1000, 1); /* both due: the limit holds */
    assert_int_equal(t.n, 1);
    t = take(shard, 70000, 1000, 10);
    assert_int_equal(t.n, 1);
    /* the mailbox writes its real next due time over the lease */
    health_set(a, 900000);
    assert_int_equal(due_of(a), 900000);
    struct res r = {0};
    assert_int_equal(store_health_del(S, a, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(due_of(a), 0);
    /* junk in the key is skipped */
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "ZADD ens:health:{h%02d} 1 x}not-an-id", shard);
    assert_int_equal(redis_fixture_cmd(&F, cmd), 0);
    t = take(shard, 10000000, 1000, 10);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.uids[0], b);
    assert_int_equal(store_health_set(S, "x}", 1, dl(2000), on_done, &r), ENS_EINVAL);
    assert_int_equal(store_health_take(S, STORE_HEALTH_SHARDS, 1, 1, 1, dl(2000), on_take, &r),
                     ENS_EINVAL);
    assert_int_equal(
        store_health_take(S, 0, 1, 1, STORE_HEALTH_MAX_TAKE + 1, dl(2000), on_take, &r),
        ENS_EINVAL);
}

static void test_not_found(void **state)
{
    char uid[STORE_ID_CHARS + 1];
    store_id_new(uid);
    assert_null(load(uid, ENS_ENOTFOUND));
    assert_int_equal(find(uid, NULL), ENS_ENOTFOUND);
    struct res r = {0};
    assert_int_equal(store_user_delete(S, uid, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, ENS_ENOTFOUND);
    /* blobs left by an enrollment that never saved go with the delete too */
    cred_put(uid, "00112233aabbccdd", "x", 1);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_user_delete(S, uid, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, ENS_ENOTFOUND);
    assert_int_equal(dbsize(), 0);
}

static void test_delete_removes_everything(void **state)
{
    struct store_user *u = make_user(2);
    save(u, NULL, 0);
    cred_put(u->user_id, u->sub.cred_id, "sealed", 6);
    cred_put(u->user_id, "fedcba9876543210", "stale", 5);
    struct res r = {0};
    assert_int_equal(store_user_delete(S, u->user_id, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.calls, 1);
    assert_null(load(u->user_id, ENS_ENOTFOUND));
    assert_int_equal(find(u->devices[0].device_id, NULL), ENS_ENOTFOUND);
    assert_int_equal(find(u->devices[1].device_id, NULL), ENS_ENOTFOUND);
    /* nothing at all is left behind, credential blobs included */
    assert_int_equal(dbsize(), 0);
    store_user_free(u);
}

/* The budget in ARCHITECTURE.md: one enrolled mailbox (one iOS device, an
 * active subscription, its sealed credentials) takes well under 1 KiB of Redis
 * memory, counting every key it owns and its device's index entry. Values are
 * sized like production ones, not like the simulator's: Exchange Online
 * subscription ids are ~100 characters. docs/redis.md has the breakdown. */
#define MAILBOX_BUDGET_BYTES 1024

static long long memory_usage(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "MEMORY USAGE %s SAMPLES 0", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void test_mailbox_is_small(void **state)
{
    struct store_user *u = make_user(1);
    struct store_device *d = &u->devices[0];
    snprintf(d->client_id, sizeof(d->client_id), "9F3C2A51-4B7E-4D0A-8C1E-6A2B5D7E9F01");
    for (int i = 0; i < 64; i++)
        d->push_token[i] = "0123456789abcdef"[(i * 7) % 16]; /* an APNs token: 32 bytes hex */
    snprintf(u->email, sizeof(u->email), "firstname.lastname@contoso.com");
    snprintf(u->ews_url, sizeof(u->ews_url), "https://outlook.office365.com/EWS/Exchange.asmx");
    snprintf(u->sub.id, sizeof(u->sub.id), "%s",
             "JwBibHhwcjAybWIxNDQ5Lm5hbXByZDAyLnByb2Qub3V0bG9vay5jb20QAAAAlc5vOI8l5EyhYDSv3wF2U7sG"
             "kC8DTtgIEAAAAA==");
    snprintf(u->sub.watermark, sizeof(u->sub.watermark), "%s",
             "AQAAAEn6mTHEnsRLlMRF5q6zVZQ2iQAAAAAAAAA=");
    u->sub.sealing_kid = 3735928559u;
    u->sub.created_at = 1764000000;
    u->counters.callbacks = 1200;
    u->counters.notifications = 340;
    u->counters.pushes_ok = 338;
    u->counters.pushes_failed = 2;
    uint8_t blob[150]; /* seal_creds of basic credentials: nonce, ~120 bytes, tag */
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 131 + 7);
    cred_put(u->user_id, u->sub.cred_id, blob, sizeof(blob));
    save(u, NULL, 0);

    redisContext *c = redisConnectUnix(F.sock);
    assert_non_null(c);
    char key[64];
    snprintf(key, sizeof(key), "ens:u:{%s}", u->user_id);
    long long hash = memory_usage(c, key);
    snprintf(key, sizeof(key), "ens:idx:dev:%s", d->device_id);
    long long idx = memory_usage(c, key);
    redisFree(c);
    /* those two keys are all the mailbox owns */
    assert_int_equal(dbsize(), 2);
    print_message("mailbox: ens:u:{uid} %lld + ens:idx:dev %lld = %lld bytes\n", hash, idx,
                  hash + idx);
    assert_true(hash + idx < MAILBOX_BUDGET_BYTES);
    store_user_free(u);
}

static void test_deadline_expiry(void **state)
{
    struct store_stats before, after;
    store_stats(S, &before);
    assert_int_equal(redis_fixture_cmd(&F, "CLIENT PAUSE 600"), 0);
    struct res r = {0};
    const char *argv[] = {"PING"};
    assert_int_equal(store_cmdargv(S, 1, argv, NULL, dl(100), on_reply, &r), 0);
    assert_true(run_until(&r.done, 2000));
    assert_int_equal(r.err, ENS_ETIMEDOUT);
    /* the late reply arrives and is dropped: no second callback */
    int never = 0;
    run_until(&never, 800);
    assert_int_equal(r.calls, 1);
    store_stats(S, &after);
    assert_int_equal(after.timeouts, before.timeouts + 1);
    assert_int_equal(after.pending, 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cmdargv(S, 1, argv, NULL, dl(1000), on_reply, &r), 0);
    assert_true(run_until(&r.done, 2000));
    assert_int_equal(r.err, 0);
    /* a deadline already in the past is refused without a callback */
    assert_int_equal(store_cmdargv(S, 1, argv, NULL, 0, on_reply, &r), ENS_ETIMEDOUT);
}

static void test_error_reply_is_estore(void **state)
{
    struct res r = {0};
    const char *argv[] = {"NOSUCHCOMMAND", "x"};
    assert_int_equal(store_cmdargv(S, 2, argv, NULL, dl(1000), on_reply, &r), 0);
    assert_true(run_until(&r.done, 2000));
    assert_int_equal(r.err, ENS_ESTORE);
}

static void test_free_cancels_pending(void **state)
{
    char err[128];
    struct store *s2 = store_new(&loop, F.url, err, sizeof(err));
    assert_non_null(s2);
    assert_true(wait_ready(s2, 3000));
    assert_int_equal(redis_fixture_cmd(&F, "CLIENT PAUSE 300"), 0);
    struct res r = {0};
    const char *argv[] = {"PING"};
    assert_int_equal(store_cmdargv(s2, 1, argv, NULL, dl(5000), on_reply, &r), 0);
    store_free(s2);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.err, ENS_ECANCELED);
    int never = 0;
    run_until(&never, 400);
    assert_int_equal(r.calls, 1);
}

static int full_answers;
static void on_counted(int err, struct redisReply *reply, void *ud)
{
    if (err == 0)
        full_answers++;
}

static void test_pending_cap(void **state)
{
    assert_int_equal(redis_fixture_cmd(&F, "CLIENT PAUSE 300"), 0);
    const char *argv[] = {"PING"};
    uint64_t d = dl(5000);
    full_answers = 0;
    for (int i = 0; i < STORE_MAX_PENDING; i++)
        assert_int_equal(store_cmdargv(S, 1, argv, NULL, d, on_counted, NULL), 0);
    struct res r = {0};
    assert_int_equal(store_cmdargv(S, 1, argv, NULL, d, on_reply, &r), ENS_EFULL);
    int never = 0;
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + 4000;
    while (full_answers < STORE_MAX_PENDING && uv_now(&loop) < end)
        run_until(&never, 20);
    assert_int_equal(full_answers, STORE_MAX_PENDING);
    assert_int_equal(r.calls, 0);
}

static void test_tenants_tokens_keys(void **state)
{
    struct res r = {0};
    assert_int_equal(store_tenant_create(S, "Contoso", "sender", "[\"contoso.com\"]", 1764000000,
                                         dl(2000), on_uid, &r),
                     0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    char tid[STORE_ID_CHARS + 1];
    memcpy(tid, r.id, sizeof(tid));
    assert_true(store_id_valid(tid));

    memset(&r, 0, sizeof(r));
    assert_int_equal(store_tenant_get(S, tid, dl(2000), on_tenant, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_string_equal(r.t->id, tid);
    assert_string_equal(r.t->name, "Contoso");
    assert_string_equal(r.t->preview_cap, "sender");
    assert_string_equal(r.t->ews_allow_json, "[\"contoso.com\"]");
    assert_int_equal(r.t->created_at, 1764000000);
    store_tenant_free(r.t);

    char missing[STORE_ID_CHARS + 1];
    store_id_new(missing);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_tenant_get(S, missing, dl(2000), on_tenant, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, ENS_ENOTFOUND);

    uint8_t hash[32], other[32];
    for (int i = 0; i < 32; i++) {
        hash[i] = (uint8_t)(i * 7);
        other[i] = (uint8_t)(i * 7 + 1);
    }
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_apitoken_add(S, tid, hash, dl(2000), on_done, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_apitoken_lookup(S, hash, dl(2000), on_uid, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_string_equal(r.id, tid);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_apitoken_lookup(S, other, dl(2000), on_uid, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, ENS_ENOTFOUND);

    const uint8_t k1[] = {1, 0, 2, 0, 3}, k2[] = {9, 9};
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_keys_setnx(S, "enroll.v1", k1, sizeof(k1), dl(2000), on_created, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.created, 1);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_keys_setnx(S, "enroll.v1", k2, sizeof(k2), dl(2000), on_created, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.created, 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_keys_get(S, "enroll.v1", dl(2000), on_blob, &r), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, 0);
    assert_int_equal(r.blob_len, sizeof(k1));
    assert_memory_equal(r.blob, k1, sizeof(k1));
    assert_int_equal(store_keys_get(S, "../x", dl(2000), on_blob, &r), ENS_EINVAL);
}

/* Own server: stopped, then restarted on the same socket. */
static void test_redis_down_then_back(void **state)
{
    struct redis_fixture f2;
    assert_int_equal(redis_fixture_start(&f2, 0), 0);
    char err[128];
    struct store *s = store_new(&loop, f2.url, err, sizeof(err));
    assert_non_null(s);
    assert_true(wait_ready(s, 3000));

    /* a command in flight when Redis dies gets ENS_ESTORE */
    assert_int_equal(redis_fixture_cmd(&f2, "CLIENT PAUSE 2000"), 0);
    struct res r = {0};
    const char *argv[] = {"PING"};
    assert_int_equal(store_cmdargv(s, 1, argv, NULL, dl(5000), on_reply, &r), 0);
    assert_int_equal(redis_fixture_kill(&f2), 0);
    assert_true(run_until(&r.done, 3000));
    assert_int_equal(r.err, ENS_ESTORE);
    assert_false(store_ready(s));
    assert_int_equal(store_cmdargv(s, 1, argv, NULL, dl(1000), on_reply, &r), ENS_ESTORE);

    /* let a reconnect attempt or two fail, then bring Redis back */
    int never = 0;
    run_until(&never, 300);
    assert_false(store_ready(s));
    assert_int_equal(redis_fixture_restart(&f2), 0);
    assert_true(wait_ready(s, 8000));
    memset(&r, 0, sizeof(r));
    assert_int_equal(store_cmdargv(s, 1, argv, NULL, dl(1000), on_reply, &r), 0);
    assert_true(run_until(&r.done, 2000));
    assert_int_equal(r.err, 0);
    struct store_stats st;
    store_stats(s, &st);
    assert_true(st.connects >= 2);

    store_free(s);
    settle();
    redis_fixture_stop(&f2);
}

static void test_tcp_url(void **state)
{
    struct redis_fixture f2;
    assert_int_equal(redis_fixture_start(&f2, 1), 0);
    char err[128], url[160];
    snprintf(url, sizeof(url), "redis://localhost:%d/3", f2.port);
    struct store *s = store_new(&loop, url, err, sizeof(err));
    assert_non_null(s);
    assert_true(wait_ready(s, 3000));
    struct res r = {0};
    const char *set[] = {"SET", "k", "in-db-3"};
    assert_int_equal(store_cmdargv(s, 3, set, NULL, dl(1000), on_reply, &r), 0);
    assert_true(run_until(&r.done, 2000));
    assert_int_equal(r.err, 0);
    /* the key went to database 3, as the URL asked */
    assert_int_equal(redis_fixture_exists(&f2, "k"), 0);
    store_free(s);
    settle();

    s = store_new(&loop, f2.url, err, sizeof(err));
    assert_non_null(s);
    assert_true(wait_ready(s, 3000));
    store_free(s);
    settle();
    redis_fixture_stop(&f2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_save_load_two_devices, flush),
        cmocka_unit_test_setup(test_device_index, flush),
        cmocka_unit_test_setup(test_removed_device_and_replaced_sub, flush),
        cmocka_unit_test_setup(test_index_beside_the_mailbox, flush),
        cmocka_unit_test_setup(test_save_without_index, flush),
        cmocka_unit_test_setup(test_save_keeps_cred_blobs, flush),
        cmocka_unit_test_setup(test_corrupt_record, flush),
        cmocka_unit_test_setup(test_cred_blobs_are_binary_safe, flush),
        cmocka_unit_test_setup(test_request_claim, flush),
        cmocka_unit_test_setup(test_not_found, flush),
        cmocka_unit_test_setup(test_health_index, flush),
        cmocka_unit_test_setup(test_delete_removes_everything, flush),
        cmocka_unit_test_setup(test_mailbox_is_small, flush),
        cmocka_unit_test_setup(test_deadline_expiry, flush),
        cmocka_unit_test_setup(test_error_reply_is_estore, flush),
        cmocka_unit_test_setup(test_free_cancels_pending, flush),
        cmocka_unit_test_setup(test_pending_cap, flush),
        cmocka_unit_test_setup(test_tenants_tokens_keys, flush),
        cmocka_unit_test(test_redis_down_then_back),
        cmocka_unit_test(test_tcp_url),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
