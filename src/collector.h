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

#include "lease.h"

#include <stdatomic.h>

/* ---- walking every file of the store ------------------------------------ */

typedef enum kvs_entry_kind {
    KVS_ENTRY_CHUNK = 0, /* a chunk file name (st says whether it is a file) */
    KVS_ENTRY_TEMP = 1,  /* a temporary file name */
} kvs_entry_kind;

typedef struct kvs_walk_entry {
    uint32_t root;           /* index of the store path */
    uint32_t ns;             /* index in kvs_walk.ns_names; UINT32_MAX: none */
    const char *path;        /* full path */
    const char *name;        /* its last component */
    int dirfd;               /* its folder, open during the call: act on the
                                file by name from here (never by path) */
    kvs_entry_kind kind;
    uint8_t key[KVS_KEY_BYTES]; /* CHUNK */
    struct stat st;          /* lstat, when kvs_walk.stat_files */
} kvs_walk_entry;

typedef struct kvs_walk {
    const char *const *roots;
    uint32_t nroots;
    const char *only_ns;     /* NULL: every namespace */
    bool stat_files;         /* lstat every file; else st is zero */
    /* Each file; nonzero stops the walk. */
    int (*on_entry)(void *ctx, const kvs_walk_entry *e);
    /* After each leaf folder; nonzero stops the walk. */
    int (*on_dir)(void *ctx);
    void *ctx;
    /* Filled by the walk: namespace folder names seen (index = entry.ns). */
    char **ns_names;
    uint32_t nns, ns_cap;
    uint64_t dirs;           /* leaf folders visited */
    uint64_t skipped;        /* folders outside the layout, not entered */
    int first_error;         /* errno of the first folder that could not be
                                read (ENOENT ignored: removed under us) */
} kvs_walk;

/* KVS_OK (also when a callback stopped it) or NOMEM. */
kvs_status kvs__walk(kvs_walk *w);
void kvs__walk_clear(kvs_walk *w);

/* Last access of a chunk file: the later of atime and mtime (readers set
 * atime at most once per access_interval_s; mtime covers filesystems that
 * never update atime), in wall-clock ns. */
int64_t kvs__access_ns(const struct stat *st);

/* ---- the last measurement, kept on the store (<root>/.kvstash/usage.json) - */

typedef struct kvs_usage_record {
    uint64_t used_bytes;        /* chunk and live temporary files after the pass */
    uint64_t chunks;
    uint64_t temp_files;
    uint64_t namespaces;
    uint64_t fs_used_baseline;  /* filesystem bytes in use when the pass ended:
                                   growth past this (or past the lowest value
                                   seen since, as filesystems free blocks of
                                   removed files late) is growth of the store
                                   or of other tenants */
    uint64_t pass_end_wall_ns;
    uint64_t pass_ns;           /* how long the pass took */
    uint64_t evicted_files;
    uint64_t evicted_bytes;
    uint64_t orphans_removed;
    uint64_t starved;           /* 1: a target was missed, nothing left to evict */
    uint64_t pid;
    char host[64];
} kvs_usage_record;

int kvs__usage_read(const char *root, kvs_usage_record *r);   /* 0 or -errno */

/* A record no longer describes the store once its filesystem's usage moved
 * by more than an eighth of what it recorded (at least 16 MiB) since: the
 * store (or another tenant) wrote or removed that much since the pass, so
 * the record is not shown as the store's size (kvstash du measures again,
 * doctor shows the change, the collector measures again). */
bool kvs__usage_stale(const kvs_usage_record *r, uint64_t fs_used_now);
/* How much the filesystem's usage grew since the record (0 if it shrank). */
uint64_t kvs__usage_growth(const kvs_usage_record *r, uint64_t fs_used_now);
/* Records a measurement made outside a collection (kvstash du --measure)
 * on path `root`: used bytes, chunks, temporary files, namespaces. */
int kvs__usage_record_measure(const char *root, uint64_t used, uint64_t chunks, uint64_t temps,
                              uint64_t namespaces, uint32_t file_mode);
/* file_mode: of the file and of .kvstash if it is made (0: 0644). */
int kvs__usage_write(const char *root, const kvs_usage_record *r, uint32_t file_mode);
/* lstat of usage.json (to see whether it changed); 0 or -errno. */
int kvs__usage_stat(const char *root, struct stat *st);

/* ---- one collection ------------------------------------------------------- */

#define KVS_NO_TARGET UINT64_MAX

typedef struct kvs_collect_params {
    const char *const *roots;
    uint32_t nroots;
    kvs_lease *leases;          /* nroots leases, held by the caller */
    const char *only_ns;        /* NULL: every namespace */
    /* What to evict.  The configured limits (cap > 0: above high, down to
     * low; a floor: until free space is back above it), an explicit size
     * target, an age, and the paths whose writes failed for lack of space
     * (evicted down to low/high of their current size) all apply. */
    uint64_t cap_bytes;         /* 0: no cap */
    double high, low;           /* watermarks, fractions of cap_bytes */
    uint64_t floor_bytes;       /* 0: none */
    uint64_t target_bytes;      /* KVS_NO_TARGET: none */
    uint64_t older_than_ns;     /* 0: none */
    uint32_t nospace_mask;      /* bit r: a write on path r failed with ENOSPC */
    uint64_t tmp_grace_ns;      /* temporary files older than this are orphans */
    bool dry_run;               /* remove nothing, report what would go */
    bool record;                /* write usage.json and the log (a full,
                                   unfiltered pass) */
    uint32_t max_candidates;    /* 0: the default bound (262144) */
    const char *purpose;        /* for the log */
    uint32_t file_mode;         /* of .kvstash and its files (0: 0644) */
    /* Called between folders: returns nonzero to stop; *urgent may be set
     * to drop the pacing.  NULL: never stop, never pace. */
    int (*tick)(void *ctx, bool *urgent);
    void *tick_ctx;
    bool urgent;                /* no pacing from the start */
    /* Each file evicted (or, with dry_run, that would be). */
    void (*on_evict)(void *ctx, const char *path, uint64_t bytes, int64_t access_ns);
    void *on_evict_ctx;
} kvs_collect_params;

typedef struct kvs_collect_result {
    uint64_t used_before;       /* bytes measured by the (first) pass */
    uint64_t used_after;
    uint64_t chunks_before, chunks_after;
    uint64_t temp_files;        /* live temporary files */
    uint64_t evicted_files, evicted_bytes;
    uint64_t skipped_touched;   /* candidates read again since the scan: kept */
    uint64_t orphans_removed, orphan_bytes;
    uint64_t scanned_files;
    uint32_t passes;
    bool starved;               /* a target was missed: nothing left to evict */
    bool lease_lost;            /* stopped because the lease ran out */
    uint64_t scan_ns, evict_ns;
    uint64_t used_path[KVS_MAX_STORE_PATHS];
    uint64_t freed_path[KVS_MAX_STORE_PATHS];    /* bytes evicted per path */
    uint64_t fs_used_start[KVS_MAX_STORE_PATHS]; /* filesystem usage at the start */
    uint64_t fs_used_low[KVS_MAX_STORE_PATHS];   /* ... right after the removals */
} kvs_collect_result;

/* Runs one collection (one or more passes).  The caller holds the leases. */
kvs_status kvs__collect(const kvs_collect_params *p, kvs_collect_result *r);

/* The one builder of a collection from the configuration, shared by the
 * engines' collector and kvs_admin_gc so the two cannot drift apart: the
 * store paths in the order every collector takes their leases
 * (kvs__roots_order) with those leases initialised (lease_ttl_s,
 * file_mode, purpose), and the configured policy in bytes and nanoseconds
 * (cap and watermarks, free-space floor, orphan age, file mode).  roots[]
 * and leases[] have num_store_paths entries; map (may be NULL) gets, for
 * each path in weka_path order, its index in roots.  The caller adds what
 * is particular to it (only_ns, a target, an age, tick, dry_run, ...). */
void kvs__collect_params_init(kvs_collect_params *p, const kvs_config *cfg,
                              const char *purpose, const char **roots, kvs_lease *leases,
                              uint32_t *map);

/* The order in which every instance takes the leases of these paths: by
 * store id, so two collectors never hold one path each. */
void kvs__roots_order(char *const *paths, uint32_t n, uint32_t *order);

/* Takes the leases of every root, in order, or none: KVS_OK or BUSY. */
kvs_status kvs__leases_try(kvs_lease *leases, uint32_t n);
void kvs__leases_release(kvs_lease *leases, uint32_t n);

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
