/*
 * cpu_tier.h - the host-memory tier in front of the store (local_cpu,
 * max_local_cpu_size).
 */
#ifndef KVS_CPU_TIER_H
#define KVS_CPU_TIER_H

#include "internal.h"

typedef struct kvs_cpu_tier kvs_cpu_tier;
typedef struct kvs_cpu_entry kvs_cpu_entry;

/* How the tier gets its blocks: plain aligned memory by default; the CUDA
 * build swaps in pinned memory so that copies to the GPU run at full speed. */
typedef struct kvs_host_allocator {
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p, size_t bytes);
    void *ctx;
} kvs_host_allocator;

kvs_status kvs__cpu_tier_create(uint64_t capacity_bytes, const kvs_host_allocator *alloc,
                                kvs_cpu_tier **out);
void kvs__cpu_tier_destroy(kvs_cpu_tier *t);

/* Makes room for a chunk of `bytes` (evicting least recently used entries
 * that nobody is reading) and returns an entry to fill, invisible until
 * committed; NULL when it cannot fit or the key is already there. */
kvs_cpu_entry *kvs__cpu_tier_begin(kvs_cpu_tier *t, const uint8_t *key, uint64_t bytes);
void *kvs__cpu_entry_data(kvs_cpu_entry *e);
uint64_t kvs__cpu_entry_bytes(const kvs_cpu_entry *e);
void kvs__cpu_tier_commit(kvs_cpu_tier *t, kvs_cpu_entry *e);
void kvs__cpu_tier_abort(kvs_cpu_tier *t, kvs_cpu_entry *e);

/* Finds a committed entry and pins it (it is not evicted until released). */
kvs_cpu_entry *kvs__cpu_tier_get(kvs_cpu_tier *t, const uint8_t *key);
void kvs__cpu_tier_release(kvs_cpu_tier *t, kvs_cpu_entry *e);
bool kvs__cpu_tier_contains(kvs_cpu_tier *t, const uint8_t *key);
void kvs__cpu_tier_remove(kvs_cpu_tier *t, const uint8_t *key);

typedef struct kvs_cpu_tier_stats {
    uint64_t bytes;
    uint64_t chunks;
    uint64_t inserts;
    uint64_t evictions;
} kvs_cpu_tier_stats;

void kvs__cpu_tier_stats(kvs_cpu_tier *t, kvs_cpu_tier_stats *out);

#endif
