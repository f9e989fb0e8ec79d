/*
 * config.h - the parsed configuration.  config.c owns the one table of keys
 * (name, environment variable, aliases, type, unit, default, bounds, doc)
 * from which the parser, `kvstash config` and docs/config.md are all made;
 * the rest of the library reads only the typed fields of struct kvs_config,
 * parsed once, never the environment.
 */
#ifndef KVS_CONFIG_H
#define KVS_CONFIG_H

#include "internal.h"

#define KVS_MAX_STORE_PATHS 16

typedef enum kvs_io_path_mode {
    KVS_IO_PATH_AUTO = 0,   /* cuFile when its self-test passes, else POSIX */
    KVS_IO_PATH_CUFILE = 1, /* cuFile required for CUDA memory */
    KVS_IO_PATH_POSIX = 2,  /* never cuFile */
} kvs_io_path_mode;

typedef enum kvs_direct_io_mode {
    KVS_DIRECT_IO_OFF = 0,  /* buffered I/O through the page cache */
    KVS_DIRECT_IO_ON = 1,   /* O_DIRECT where the filesystem supports it */
} kvs_direct_io_mode;

/* codec: whether chunks are stored compressed (docs/codec.md).  Readers
 * take compressed and plain files whatever the setting. */
typedef enum kvs_codec_mode {
    KVS_CODEC_MODE_AUTO = 0, /* compress what is stored from CUDA memory (GPU
                                encode), not from host memory; off with auth */
    KVS_CODEC_MODE_ON = 1,   /* compress on both paths (CPU encode on host) */
    KVS_CODEC_MODE_OFF = 2,  /* never compress */
} kvs_codec_mode;

/* retrieve_order: which pieces of a retrieve's chunks are read first
 * (docs/design.md, "Retrieve order"). */
typedef enum kvs_retrieve_order {
    KVS_RETRIEVE_ORDER_CHUNK = 0, /* chunk by chunk: the prefix grows in order */
    KVS_RETRIEVE_ORDER_LAYER = 1, /* first pieces of every chunk, then second...:
                                     layers arrive in order across the prefix */
} kvs_retrieve_order;

typedef enum kvs_dev_pinned_mode {
    KVS_DEV_PINNED_REGISTER = 0, /* ordinary (huge-page) memory, cudaHostRegister */
    KVS_DEV_PINNED_ALLOC = 1,    /* cudaHostAlloc */
} kvs_dev_pinned_mode;

/* Index of every key in the table, in table order. */
typedef enum kvs_config_key {
    KVS_CFG_CHUNK_SIZE,
    KVS_CFG_LOCAL_CPU,
    KVS_CFG_MAX_LOCAL_CPU_SIZE,
    KVS_CFG_WEKA_PATH,
    KVS_CFG_CUFILE_BUFFER_SIZE,
    KVS_CFG_SAVE_UNFULL_CHUNK,
    KVS_CFG_LOOKUP_TIMEOUT_MS,
    /* extra_config entries */
    KVS_CFG_GDS_IO_THREADS,
    KVS_CFG_USE_DIRECT_IO,
    KVS_CFG_IO_PATH,
    KVS_CFG_IO_TIMEOUT_MS,
    KVS_CFG_STORE_TIMEOUT_MS,
    KVS_CFG_NEGATIVE_CACHE_MS,
    KVS_CFG_MAX_PENDING_STORE_SIZE,
    KVS_CFG_MAX_STORE_SIZE,
    KVS_CFG_STORE_HIGH_WATERMARK,
    KVS_CFG_STORE_LOW_WATERMARK,
    KVS_CFG_MIN_FREE_SPACE,
    KVS_CFG_ACCESS_INTERVAL_S,
    KVS_CFG_TMP_GRACE_S,
    KVS_CFG_LEASE_TTL_S,
    KVS_CFG_COLLECT_INTERVAL_S,
    KVS_CFG_FAILURE_THRESHOLD,
    KVS_CFG_FILE_MODE,
    KVS_CFG_DURABLE_WRITES,
    KVS_CFG_NAMESPACE_SALT,
    KVS_CFG_AUTH_KEY_FILE,
    KVS_CFG_STRICT_OWNERSHIP,
    KVS_CFG_STORE_UID,
    KVS_CFG_STORE_GID,
    KVS_CFG_LOG_LEVEL,
    KVS_CFG_STRICT,
    KVS_CFG_DEV_PIECE_MB,
    KVS_CFG_DEV_UNIT_KB,
    KVS_CFG_DEV_RING,
    KVS_CFG_DEV_PINNED,
    KVS_CFG_CODEC,
    KVS_CFG_RETRIEVE_ORDER,
    KVS_CFG_NKEYS
} kvs_config_key;

struct kvs_config {
    /* top-level keys (LMCache names) */
    uint32_t chunk_size;          /* tokens per chunk */
    bool local_cpu;               /* CPU tier on */
    double max_local_cpu_size;    /* GB (10^9 bytes) for the CPU tier */
    char *weka_path;              /* raw text: one path or a comma list;
                                     NULL: the local default folder */
    uint64_t cufile_buffer_size;  /* MiB of VRAM registered with cuFile */
    bool save_unfull_chunk;       /* store a partial last chunk too */
    uint32_t lookup_timeout_ms;   /* the vLLM scheduler's wait for a lookup */

    /* extra_config entries */
    uint32_t gds_io_threads;      /* I/O worker threads */
    kvs_direct_io_mode use_direct_io;
    kvs_io_path_mode io_path;
    uint32_t io_timeout_ms;       /* deadline of a lookup or retrieve */
    uint32_t store_timeout_ms;    /* deadline of one chunk write */
    uint32_t negative_cache_ms;   /* how long a miss is remembered */
    double max_pending_store_size; /* GB of stores queued before dropping */
    double max_store_size;        /* GB the shared store may hold; 0: no cap */
    double store_high_watermark;  /* fraction of max_store_size: collect */
    double store_low_watermark;   /* fraction of max_store_size: stop */
    double min_free_space;        /* GB kept free on the filesystem */
    uint32_t access_interval_s;   /* refresh a chunk's access time at most
                                     once per interval */
    uint32_t tmp_grace_s;         /* age before a temp file is an orphan */
    uint32_t lease_ttl_s;         /* collector lease lifetime */
    uint32_t collect_interval_s;  /* re-measure the store at least this often */
    uint32_t failure_threshold;   /* consecutive I/O failures before the
                                     store is marked unhealthy; 0: never */
    uint32_t file_mode;           /* permission bits of chunk files */
    bool durable_writes;          /* fsync a chunk before publishing it */
    char *namespace_salt;         /* default tenancy salt; NULL: none */
    char *auth_key_file;          /* key of the chunk MACs; NULL: chunks
                                     are not authenticated */
    bool strict_ownership;        /* refuse folders and files not owned by
                                     this uid, or writable by others */
    char *store_uid;              /* strict_ownership: the owner expected
                                     (user name or number); NULL: ours */
    char *store_gid;              /* strict_ownership: the group of a
                                     group-shared store; NULL: none */
    kvs_log_level log_level;
    bool strict;                  /* unknown keys and variables are errors */

    /* benchmark tuning of the device data path (dev_cuda.c); the defaults
     * are the measured best (bench/RESULTS.md) */
    uint32_t dev_piece_mb;        /* MiB per retrieve piece */
    uint32_t dev_unit_kb;         /* KiB per system call and copy */
    uint32_t dev_ring;            /* units in flight per slot */
    kvs_dev_pinned_mode dev_pinned;

    kvs_codec_mode codec;         /* compression of stored chunks */
    kvs_retrieve_order retrieve_order; /* chunk or layer first */

    /* derived at parse time */
    uint32_t num_store_paths;                  /* >= 1 after resolution */
    char *store_paths[KVS_MAX_STORE_PATHS];    /* absolute, no trailing '/' */

    kvs_config_source source[KVS_CFG_NKEYS];   /* where each value came from */
};

/* A numeric setting in the library's units, converted in this one place
 * from the unit of its row in the table: bytes for sizes (GB are 10^9
 * bytes, MiB, KiB), nanoseconds for times (ms, seconds), the number itself
 * for counts.  For T_UINT and T_GB keys (a fraction has no unit). */
uint64_t kvs__config_canon(const kvs_config *cfg, kvs_config_key key);

/* Resolves weka_path (or the default folder: $XDG_CACHE_HOME/kvstash, else
 * $HOME/.cache/kvstash, else ./kvstash-cache) into store_paths.  Called by
 * every loader; exposed for tests. */
kvs_status kvs__config_resolve_paths(kvs_config *cfg);

/* The local default folder as described above; caller frees. */
char *kvs__config_default_path(void);

/* kvs_config_apply_file on text already in memory, as if read from a file
 * called name (for the fuzzer and tests). */
kvs_status kvs__config_apply_yaml(kvs_config *cfg, const char *name, const char *text,
                                  size_t len);

#endif /* KVS_CONFIG_H */
