/*
 * collector.h - capacity of the shared store: measuring it, evicting the
 * least recently accessed chunks, removing temporary files of crashed
 * writers; one collector at a time for all instances, by lease.
 *
 * The limit (max_store_size with its watermarks) is per list of store paths:
 * it counts every namespace on every path of weka_path, whichever instance
 * wrote them, and every instance configured with that list enforces it
 * together.  It is not per instance, per rank or per namespace.  The
 * free-space floor (min_free_space) is per filesystem.
 */
#ifndef KVS_COLLECTOR_H
#define KVS_COLLECTOR_H

#include "collect.h"

#include <stdatomic.h>

/* ---- the background collector of an engine -------------------------------- */

typedef struct kvs_collector kvs_collector;

/* Starts the engine's collector thread for the store paths of cfg. */
kvs_status kvs__collector_start(const kvs_config *cfg, kvs_collector **out);
/* Stops it (waits a bounded time for a pass under way to notice). */
void kvs__collector_stop(kvs_collector *c);
/* A write on path `root` failed with ENOSPC or EDQUOT: collect now. */
void kvs__collector_kick(kvs_collector *c, uint32_t root);
/* Free space is below min_free_space on some path: refuse new stores. */
bool kvs__collector_refuse_stores(kvs_collector *c);
/* Adds the collector's counters to s (evictions, evicted_bytes,
 * orphans_removed, collections, store_used_bytes). */
void kvs__collector_stats(kvs_collector *c, kvs_stats *s);

#endif
