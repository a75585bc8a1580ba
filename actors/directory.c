#include "actors/directory.h"

#include <string.h>

#include "runtime/alloc.h"
#include "runtime/err.h"

#define DIR_INITIAL_BUCKETS 1024

struct dir_entry {
    char *uid;
    rt_actor_id id;
    struct dir_entry *next;
};

struct act_directory {
    struct rt *rt;
    act_spawn_fn spawn;
    void *ud;
    uv_mutex_t lock;
    struct dir_entry **buckets;
    size_t nbuckets, count;
};

static uint64_t dir_hash(const char *s)
{
    /* FNV-1a: ids are random already, this only has to be stable */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

struct act_directory *act_directory_new(struct rt *rt, act_spawn_fn spawn, void *ud)
{
    struct act_directory *d = ens_calloc(1, sizeof(*d));
    d->rt = rt;
    d->spawn = spawn;
    d->ud = ud;
    uv_mutex_init(&d->lock);
    d->nbuckets = DIR_INITIAL_BUCKETS;
    d->buckets = ens_calloc(d->nbuckets, sizeof(*d->buckets));
    return d;
}

void act_directory_free(struct act_directory *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nbuckets; i++) {
        struct dir_entry *e = d->buckets[i];
        while (e) {
            struct dir_entry *next = e->next;
            ens_free(e->uid);
            ens_free(e);
            e = next;
        }
    }
    ens_free(d->buckets);
    uv_mutex_destroy(&d->lock);
    ens_free(d);
}

static void dir_grow(struct act_directory *d)
{
    size_t n = d->nbuckets * 2;
    struct dir_entry **b = ens_calloc(n, sizeof(*b));
    for (size_t i = 0; i < d->nbuckets; i++) {
        struct dir_entry *e = d->buckets[i];
        while (e) {
            struct dir_entry *next = e->next;
            size_t k = dir_hash(e->uid) & (n - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    ens_free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
}

int act_directory_place(const struct act_directory *d, const char *uid)
{
    return rt_place(d->rt, dir_hash(uid));
}

/* dir_lookup_or_spawn returns the resident actor of |uid|, spawning it if
 * needed; |stale| (when non-zero) is an id known to be dead and replaced. */
static int dir_lookup_or_spawn(struct act_directory *d, const char *uid, rt_actor_id stale,
                               rt_actor_id *out)
{
    int rc = 0;
    uv_mutex_lock(&d->lock);
    size_t k = dir_hash(uid) & (d->nbuckets - 1);
    struct dir_entry *e = d->buckets[k];
    while (e && strcmp(e->uid, uid) != 0)
        e = e->next;
    if (e && e->id != stale) {
        *out = e->id;
    } else {
        rt_actor_id id;
        rc = d->spawn(d->rt, act_directory_place(d, uid), uid, d->ud, &id);
        if (rc == 0) {
            if (e == NULL) {
                e = ens_calloc(1, sizeof(*e));
                e->uid = ens_strdup(uid);
                e->next = d->buckets[k];
                d->buckets[k] = e;
                if (++d->count > d->nbuckets)
                    dir_grow(d);
            }
            e->id = id;
            *out = id;
        }
    }
    uv_mutex_unlock(&d->lock);
    return rc;
}

int act_directory_send(struct act_directory *d, const char *uid, struct rt_msg *m)
{
    rt_actor_id id = 0;
    int rc = dir_lookup_or_spawn(d, uid, 0, &id);
    if (rc)
        return rc;
    rc = rt_send(d->rt, id, m);
    if (rc == ENS_ENOACTOR) {
        /* it hibernated between the lookup and the send */
        rc = dir_lookup_or_spawn(d, uid, id, &id);
        if (rc == 0)
            rc = rt_send(d->rt, id, m);
    }
    return rc;
}

void act_directory_remove(struct act_directory *d, const char *uid, rt_actor_id id)
{
    uv_mutex_lock(&d->lock);
    size_t k = dir_hash(uid) & (d->nbuckets - 1);
    struct dir_entry **pp = &d->buckets[k];
    while (*pp) {
        struct dir_entry *e = *pp;
        if (strcmp(e->uid, uid) == 0 && e->id == id) {
            *pp = e->next;
            ens_free(e->uid);
            ens_free(e);
            d->count--;
            break;
        }
        pp = &e->next;
    }
    uv_mutex_unlock(&d->lock);
}

size_t act_directory_count(struct act_directory *d)
{
    uv_mutex_lock(&d->lock);
    size_t n = d->count;
    uv_mutex_unlock(&d->lock);
    return n;
}
