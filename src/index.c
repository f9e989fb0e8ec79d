/*
 * index.c - the in-memory index of one engine.
 *
 * An open-addressing hash table keyed by the 32-byte chunk key (already a
 * SHA-256, so its first 8 bytes are the hash) under one mutex: lookups are a
 * few cache lines and far cheaper than the metadata call they save.  It is a
 * cache of the store, never the truth: other instances add and remove files
 * behind its back, so PRESENT means "try it" (a vanished file is a miss at
 * read time) and ABSENT expires after negative_cache_ms.  Entries are never
 * counted on for capacity accounting (that is the collector's job).
 */
#include "index.h"

#include "key.h"

#include <pthread.h>
#include <string.h>

typedef struct slot {
    uint8_t key[KVS_KEY_BYTES];
    uint8_t state;     /* kvs_index_state, or SLOT_EMPTY / SLOT_DEAD */
    uint64_t t;        /* ABSENT: expiry; PRESENT: last access refresh */
} slot;

#define SLOT_EMPTY 0xff
#define SLOT_DEAD 0xfe
#define MIN_CAP 1024u

struct kvs_index {
    pthread_mutex_t mu;
    slot *slots;
    uint64_t cap;      /* power of two */
    uint64_t used;     /* live + dead slots */
    uint64_t live;
    uint64_t present;
};

static uint64_t hash_of(const uint8_t *key)
{
    uint64_t h;
    memcpy(&h, key, 8);
    return h;
}

static slot *alloc_slots(uint64_t cap)
{
    slot *s = kvs__malloc(cap * sizeof *s);
    if (s)
        for (uint64_t i = 0; i < cap; i++)
            s[i].state = SLOT_EMPTY;
    return s;
}

kvs_status kvs__index_create(kvs_index **out)
{
    kvs_index *idx = kvs__calloc(1, sizeof *idx);
    if (!idx)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory creating the index");
    idx->cap = MIN_CAP;
    idx->slots = alloc_slots(idx->cap);
    if (!idx->slots) {
        kvs__free(idx);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory creating the index");
    }
    pthread_mutex_init(&idx->mu, NULL);
    *out = idx;
    return KVS_OK;
}

void kvs__index_destroy(kvs_index *idx)
{
    if (!idx)
        return;
    pthread_mutex_destroy(&idx->mu);
    kvs__free(idx->slots);
    kvs__free(idx);
}

/* Returns the slot holding key, or NULL. */
static slot *find(kvs_index *idx, const uint8_t *key)
{
    uint64_t mask = idx->cap - 1;
    for (uint64_t i = hash_of(key) & mask;; i = (i + 1) & mask) {
        slot *s = &idx->slots[i];
        if (s->state == SLOT_EMPTY)
            return NULL;
        if (s->state != SLOT_DEAD && memcmp(s->key, key, KVS_KEY_BYTES) == 0)
            return s;
    }
}

/* Rebuilds the table at new_cap without dead slots.  On allocation failure
 * the old table stays (still correct, only fuller). */
static void rehash(kvs_index *idx, uint64_t new_cap)
{
    slot *ns = alloc_slots(new_cap);
    if (!ns)
        return;
    uint64_t mask = new_cap - 1;
    for (uint64_t i = 0; i < idx->cap; i++) {
        slot *s = &idx->slots[i];
        if (s->state == SLOT_EMPTY || s->state == SLOT_DEAD)
            continue;
        uint64_t j = hash_of(s->key) & mask;
        while (ns[j].state != SLOT_EMPTY)
            j = (j + 1) & mask;
        ns[j] = *s;
    }
    kvs__free(idx->slots);
    idx->slots = ns;
    idx->cap = new_cap;
    idx->used = idx->live;
}

/* Returns the slot for key, inserting an UNKNOWN one if needed; NULL only
 * when the table is full and cannot grow. */
static slot *find_or_insert(kvs_index *idx, const uint8_t *key)
{
    slot *s = find(idx, key);
    if (s)
        return s;
    if ((idx->used + 1) * 10 > idx->cap * 7)
        rehash(idx, idx->live * 2 * 10 > idx->cap * 7 ? idx->cap * 2 : idx->cap);
    if ((idx->used + 1) >= idx->cap)
        return NULL;
    uint64_t mask = idx->cap - 1;
    for (uint64_t i = hash_of(key) & mask;; i = (i + 1) & mask) {
        s = &idx->slots[i];
        if (s->state == SLOT_EMPTY || s->state == SLOT_DEAD) {
            if (s->state == SLOT_EMPTY)
                idx->used++;
            memcpy(s->key, key, KVS_KEY_BYTES);
            s->state = KVS_IDX_UNKNOWN;
            s->t = 0;
            idx->live++;
            return s;
        }
    }
}

static void set_state(kvs_index *idx, slot *s, uint8_t state)
{
    if (s->state == KVS_IDX_PRESENT)
        idx->present--;
    if (state == KVS_IDX_PRESENT)
        idx->present++;
    s->state = state;
}

static void kill(kvs_index *idx, slot *s)
{
    set_state(idx, s, SLOT_DEAD);
    idx->live--;
}

kvs_index_state kvs__index_get(kvs_index *idx, const uint8_t *key, uint64_t now_ns)
{
    pthread_mutex_lock(&idx->mu);
    slot *s = find(idx, key);
    kvs_index_state st = KVS_IDX_UNKNOWN;
    if (s) {
        st = (kvs_index_state)s->state;
        if (st == KVS_IDX_ABSENT && now_ns >= s->t) {
            kill(idx, s);
            st = KVS_IDX_UNKNOWN;
        }
    }
    pthread_mutex_unlock(&idx->mu);
    return st;
}

void kvs__index_set_present(kvs_index *idx, const uint8_t *key, uint64_t fresh_ns)
{
    pthread_mutex_lock(&idx->mu);
    slot *s = find_or_insert(idx, key);
    if (s) {
        if (s->state != KVS_IDX_PRESENT)
            s->t = fresh_ns;
        set_state(idx, s, KVS_IDX_PRESENT);
    }
    pthread_mutex_unlock(&idx->mu);
}

void kvs__index_set_absent(kvs_index *idx, const uint8_t *key, uint64_t expires_ns)
{
    pthread_mutex_lock(&idx->mu);
    slot *s = find_or_insert(idx, key);
    /* A chunk this engine is writing stays WRITING: a concurrent reader's
     * miss must not hide the store that is about to land. */
    if (s && s->state != KVS_IDX_WRITING) {
        set_state(idx, s, KVS_IDX_ABSENT);
        s->t = expires_ns;
    }
    pthread_mutex_unlock(&idx->mu);
}

void kvs__index_forget(kvs_index *idx, const uint8_t *key)
{
    pthread_mutex_lock(&idx->mu);
    slot *s = find(idx, key);
    if (s)
        kill(idx, s);
    pthread_mutex_unlock(&idx->mu);
}

bool kvs__index_begin_write(kvs_index *idx, const uint8_t *key, uint64_t now_ns)
{
    (void)now_ns;
    pthread_mutex_lock(&idx->mu);
    slot *s = find_or_insert(idx, key);
    bool mine = s && s->state != KVS_IDX_PRESENT && s->state != KVS_IDX_WRITING;
    if (mine)
        set_state(idx, s, KVS_IDX_WRITING);
    pthread_mutex_unlock(&idx->mu);
    return mine;
}

bool kvs__index_touch(kvs_index *idx, const uint8_t *key, uint64_t now_ns, uint64_t interval_ns)
{
    pthread_mutex_lock(&idx->mu);
    slot *s = find(idx, key);
    bool refresh = false;
    if (s && s->state == KVS_IDX_PRESENT && now_ns - s->t >= interval_ns) {
        s->t = now_ns;
        refresh = true;
    }
    pthread_mutex_unlock(&idx->mu);
    return refresh;
}

uint64_t kvs__index_present(kvs_index *idx)
{
    pthread_mutex_lock(&idx->mu);
    uint64_t n = idx->present;
    pthread_mutex_unlock(&idx->mu);
    return n;
}
