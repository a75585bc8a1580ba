/* A bounded LRU of mailbox memos; see memo.h. Entries sit in one array that
 * grows up to the capacity and are linked by 32-bit indices (the LRU list and
 * the hash chains), so an entry costs its payload and 16 bytes. */
#include "actors/memo.h"

#include <string.h>

#include <openssl/mem.h>

#include "runtime/alloc.h"

#define NONE UINT32_MAX

struct entry {
    uint8_t key[ACT_MEMO_KEY_SIZE];
    struct act_memo v;
    uint32_t prev, next; /* LRU list, most recent at the head */
    uint32_t hnext;      /* hash chain, or the free list */
};

struct act_memo_cache {
    struct entry *e;
    uint32_t n_alloc; /* slots in e[] */
    uint32_t cap;
    uint32_t used;
    uint32_t free_head;
    uint32_t *buckets;
    uint32_t nbuckets; /* a power of two */
    uint32_t head, tail;
    uint64_t hits, misses, evictions;
};

/* Mailbox ids are keyed-HMAC outputs (actors/ids.c) that a client cannot
 * choose; FNV-1a over their text spreads them. */
static uint32_t key_hash(const uint8_t *k)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < ACT_MEMO_KEY_SIZE; i++)
        h = (h ^ k[i]) * 16777619u;
    return h;
}

struct act_memo_cache *act_memo_cache_new(size_t capacity)
{
    struct act_memo_cache *c = ens_calloc(1, sizeof(*c));
    if (capacity < ACT_MEMO_MIN_CAP)
        capacity = ACT_MEMO_MIN_CAP;
    if (capacity > NONE / 2)
        capacity = NONE / 2;
    c->cap = (uint32_t)capacity;
    c->free_head = c->head = c->tail = NONE;
    c->nbuckets = 64;
    c->buckets = ens_malloc(c->nbuckets * sizeof(*c->buckets));
    memset(c->buckets, 0xff, c->nbuckets * sizeof(*c->buckets));
    return c;
}

void act_memo_cache_free(struct act_memo_cache *c)
{
    if (c == NULL)
        return;
    if (c->e)
        OPENSSL_cleanse(c->e, c->n_alloc * sizeof(*c->e));
    ens_free(c->e);
    ens_free(c->buckets);
    ens_free(c);
}

static void lru_unlink(struct act_memo_cache *c, uint32_t i)
{
    struct entry *x = &c->e[i];
    if (x->prev != NONE)
        c->e[x->prev].next = x->next;
    else
        c->head = x->next;
    if (x->next != NONE)
        c->e[x->next].prev = x->prev;
    else
        c->tail = x->prev;
}

static void lru_push_head(struct act_memo_cache *c, uint32_t i)
{
    struct entry *x = &c->e[i];
    x->prev = NONE;
    x->next = c->head;
    if (c->head != NONE)
        c->e[c->head].prev = i;
    c->head = i;
    if (c->tail == NONE)
        c->tail = i;
}

/* chain_find returns the link that points at |key|'s entry (its value is NONE
 * when there is none). */
static uint32_t *chain_find(struct act_memo_cache *c, const uint8_t *key)
{
    uint32_t *pp = &c->buckets[key_hash(key) & (c->nbuckets - 1)];
    while (*pp != NONE && memcmp(c->e[*pp].key, key, ACT_MEMO_KEY_SIZE) != 0)
        pp = &c->e[*pp].hnext;
    return pp;
}

/* forget unlinks entry |i| (found through |link|), wipes it and frees its slot. */
static void forget(struct act_memo_cache *c, uint32_t *link, uint32_t i)
{
    *link = c->e[i].hnext;
    lru_unlink(c, i);
    OPENSSL_cleanse(&c->e[i], sizeof(c->e[i]));
    c->e[i].hnext = c->free_head;
    c->free_head = i;
    c->used--;
}

static void rehash(struct act_memo_cache *c, uint32_t nbuckets)
{
    ens_free(c->buckets);
    c->nbuckets = nbuckets;
    c->buckets = ens_malloc(nbuckets * sizeof(*c->buckets));
    memset(c->buckets, 0xff, nbuckets * sizeof(*c->buckets));
    for (uint32_t i = c->head; i != NONE; i = c->e[i].next) {
        uint32_t *b = &c->buckets[key_hash(c->e[i].key) & (nbuckets - 1)];
        c->e[i].hnext = *b;
        *b = i;
    }
}

/* slot_get returns a free slot, growing the array (never past the capacity). */
static uint32_t slot_get(struct act_memo_cache *c)
{
    if (c->free_head != NONE) {
        uint32_t i = c->free_head;
        c->free_head = c->e[i].hnext;
        return i;
    }
    if (c->n_alloc == c->cap)
        return NONE;
    uint32_t n = c->n_alloc ? c->n_alloc * 2 : 64;
    if (n > c->cap)
        n = c->cap;
    struct entry *e = ens_malloc(n * sizeof(*e));
    if (c->e) {
        memcpy(e, c->e, c->n_alloc * sizeof(*e));
        OPENSSL_cleanse(c->e, c->n_alloc * sizeof(*e));
        ens_free(c->e);
    }
    c->e = e;
    for (uint32_t i = n; i-- > c->n_alloc + 1;) {
        e[i].hnext = c->free_head;
        c->free_head = i;
    }
    uint32_t i = c->n_alloc;
    c->n_alloc = n;
    return i;
}

int act_memo_take(struct act_memo_cache *c, const uint8_t key[ACT_MEMO_KEY_SIZE],
                  struct act_memo *out)
{
    uint32_t *link = chain_find(c, key);
    if (*link == NONE) {
        memset(out, 0, sizeof(*out));
        c->misses++;
        return 0;
    }
    uint32_t i = *link;
    *out = c->e[i].v;
    forget(c, link, i);
    c->hits++;
    return 1;
}

void act_memo_put(struct act_memo_cache *c, const uint8_t key[ACT_MEMO_KEY_SIZE],
                  const struct act_memo *in)
{
    uint32_t *link = chain_find(c, key);
    if (*link != NONE)
        forget(c, link, *link);
    uint32_t i = slot_get(c);
    if (i == NONE) {
        /* Full: the least recently used entry makes room. */
        uint32_t victim = c->tail;
        forget(c, chain_find(c, c->e[victim].key), victim);
        c->evictions++;
        i = slot_get(c);
    }
    struct entry *x = &c->e[i];
    memcpy(x->key, key, ACT_MEMO_KEY_SIZE);
    x->v = *in;
    uint32_t *b = &c->buckets[key_hash(key) & (c->nbuckets - 1)];
    x->hnext = *b;
    *b = i;
    lru_push_head(c, i);
    if (++c->used > c->nbuckets)
        rehash(c, c->nbuckets * 2);
}

void act_memo_cache_stats(const struct act_memo_cache *c, struct act_memo_stats *out)
{
    out->entries = c->used;
    out->capacity = c->cap;
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
}
