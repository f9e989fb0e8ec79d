/*
 * cpu_tier.c - an LRU cache of chunk payloads in host memory.
 *
 * A chained hash table for lookup and a doubly linked list for recency,
 * under one mutex.  Entries are pinned while a reader copies out of them
 * and are never evicted while pinned; an entry being filled is invisible
 * until committed, so a reader never sees a half-written chunk.  Freed
 * blocks of the common (full-chunk) size are kept for reuse, so a busy tier
 * does not pay page faults for every insert.
 */
#include "cpu_tier.h"

#include "key.h"

#include <pthread.h>
#include <string.h>

struct kvs_cpu_entry {
    uint8_t key[KVS_KEY_BYTES];
    uint64_t bytes;
    void *data;
    uint32_t pins;
    bool committed;
    kvs_cpu_entry *hnext;         /* hash chain */
    kvs_cpu_entry *prev, *next;   /* LRU list, most recent at head */
};

#define NBUCKETS 4096u
#define SPARE_BLOCKS 4u

struct kvs_cpu_tier {
    pthread_mutex_t mu;
    uint64_t capacity;
    uint64_t used;                /* bytes of entries, committed or not */
    kvs_cpu_tier_stats stats;
    kvs_host_allocator alloc;
    kvs_cpu_entry *buckets[NBUCKETS];
    kvs_cpu_entry *head, *tail;
    void *spare[SPARE_BLOCKS];    /* freed blocks of spare_bytes, for reuse */
    uint32_t nspare;
    uint64_t spare_bytes;
};

static void *default_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    return kvs__aligned_alloc(4096, bytes);
}

static void default_free(void *ctx, void *p, size_t bytes)
{
    (void)ctx;
    (void)bytes;
    kvs__free(p);
}

kvs_status kvs__cpu_tier_create(uint64_t capacity_bytes, const kvs_host_allocator *alloc,
                                kvs_cpu_tier **out)
{
    kvs_cpu_tier *t = kvs__calloc(1, sizeof *t);
    if (!t)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory creating the CPU tier");
    t->capacity = capacity_bytes;
    t->alloc = alloc ? *alloc : (kvs_host_allocator){default_alloc, default_free, NULL};
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return KVS_OK;
}

static kvs_cpu_entry **bucket(kvs_cpu_tier *t, const uint8_t *key)
{
    uint32_t h;
    memcpy(&h, key, 4);
    return &t->buckets[h % NBUCKETS];
}

static void release_block(kvs_cpu_tier *t, void *p, uint64_t bytes)
{
    if (bytes == t->spare_bytes && t->nspare < SPARE_BLOCKS) {
        t->spare[t->nspare++] = p;
        return;
    }
    t->alloc.free(t->alloc.ctx, p, bytes);
}

static void *get_block(kvs_cpu_tier *t, uint64_t bytes)
{
    if (bytes == t->spare_bytes && t->nspare > 0)
        return t->spare[--t->nspare];
    return t->alloc.alloc(t->alloc.ctx, bytes);
}

static void lru_unlink(kvs_cpu_tier *t, kvs_cpu_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else if (t->head == e)
        t->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else if (t->tail == e)
        t->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(kvs_cpu_tier *t, kvs_cpu_entry *e)
{
    e->prev = NULL;
    e->next = t->head;
    if (t->head)
        t->head->prev = e;
    t->head = e;
    if (!t->tail)
        t->tail = e;
}

static void drop(kvs_cpu_tier *t, kvs_cpu_entry *e)
{
    for (kvs_cpu_entry **pp = bucket(t, e->key); *pp; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    if (e->committed) {
        lru_unlink(t, e);
        t->stats.chunks--;
    }
    t->used -= e->bytes;
    t->stats.bytes = t->used;
    release_block(t, e->data, e->bytes);
    kvs__free(e);
}

static kvs_cpu_entry *lookup(kvs_cpu_tier *t, const uint8_t *key)
{
    for (kvs_cpu_entry *e = *bucket(t, key); e; e = e->hnext)
        if (memcmp(e->key, key, KVS_KEY_BYTES) == 0)
            return e;
    return NULL;
}

kvs_cpu_entry *kvs__cpu_tier_begin(kvs_cpu_tier *t, const uint8_t *key, uint64_t bytes)
{
    if (!t || bytes > t->capacity)
        return NULL;
    kvs_cpu_entry *e = NULL;
    pthread_mutex_lock(&t->mu);
    if (lookup(t, key))
        goto out;
    /* Evict from the cold end, skipping pinned entries. */
    for (kvs_cpu_entry *v = t->tail; v && t->used + bytes > t->capacity;) {
        kvs_cpu_entry *prev = v->prev;
        if (v->pins == 0) {
            if (t->spare_bytes == 0)
                t->spare_bytes = v->bytes;
            drop(t, v);
            t->stats.evictions++;
        }
        v = prev;
    }
    if (t->used + bytes > t->capacity)
        goto out;
    e = kvs__calloc(1, sizeof *e);
    if (!e)
        goto out;
    if (t->spare_bytes == 0)
        t->spare_bytes = bytes;
    e->data = get_block(t, bytes);
    if (!e->data) {
        kvs__free(e);
        e = NULL;
        goto out;
    }
    memcpy(e->key, key, KVS_KEY_BYTES);
    e->bytes = bytes;
    e->pins = 1; /* the filler's */
    kvs_cpu_entry **b = bucket(t, key);
    e->hnext = *b;
    *b = e;
    t->used += bytes;
    t->stats.bytes = t->used;
out:
    pthread_mutex_unlock(&t->mu);
    return e;
}

void *kvs__cpu_entry_data(kvs_cpu_entry *e)
{
    return e->data;
}

uint64_t kvs__cpu_entry_bytes(const kvs_cpu_entry *e)
{
    return e->bytes;
}

void kvs__cpu_tier_commit(kvs_cpu_tier *t, kvs_cpu_entry *e)
{
    pthread_mutex_lock(&t->mu);
    e->committed = true;
    e->pins--;
    lru_push_front(t, e);
    t->stats.chunks++;
    t->stats.inserts++;
    pthread_mutex_unlock(&t->mu);
}

void kvs__cpu_tier_abort(kvs_cpu_tier *t, kvs_cpu_entry *e)
{
    pthread_mutex_lock(&t->mu);
    drop(t, e);
    pthread_mutex_unlock(&t->mu);
}

kvs_cpu_entry *kvs__cpu_tier_get(kvs_cpu_tier *t, const uint8_t *key)
{
    if (!t)
        return NULL;
    pthread_mutex_lock(&t->mu);
    kvs_cpu_entry *e = lookup(t, key);
    if (e && e->committed) {
        e->pins++;
        lru_unlink(t, e);
        lru_push_front(t, e);
    } else {
        e = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    return e;
}

void kvs__cpu_tier_release(kvs_cpu_tier *t, kvs_cpu_entry *e)
{
    pthread_mutex_lock(&t->mu);
    e->pins--;
    pthread_mutex_unlock(&t->mu);
}

bool kvs__cpu_tier_contains(kvs_cpu_tier *t, const uint8_t *key)
{
    if (!t)
        return false;
    pthread_mutex_lock(&t->mu);
    kvs_cpu_entry *e = lookup(t, key);
    bool yes = e && e->committed;
    pthread_mutex_unlock(&t->mu);
    return yes;
}

void kvs__cpu_tier_remove(kvs_cpu_tier *t, const uint8_t *key)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    kvs_cpu_entry *e = lookup(t, key);
    if (e && e->committed && e->pins == 0)
        drop(t, e);
    pthread_mutex_unlock(&t->mu);
}

void kvs__cpu_tier_stats(kvs_cpu_tier *t, kvs_cpu_tier_stats *out)
{
    if (!t) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&t->mu);
    *out = t->stats;
    pthread_mutex_unlock(&t->mu);
}

void kvs__cpu_tier_destroy(kvs_cpu_tier *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < NBUCKETS; i++) {
        kvs_cpu_entry *e = t->buckets[i];
        while (e) {
            kvs_cpu_entry *n = e->hnext;
            t->alloc.free(t->alloc.ctx, e->data, e->bytes);
            kvs__free(e);
            e = n;
        }
    }
    for (uint32_t i = 0; i < t->nspare; i++)
        t->alloc.free(t->alloc.ctx, t->spare[i], t->spare_bytes);
    pthread_mutex_destroy(&t->mu);
    kvs__free(t);
}
