/*
 * config.c - the configuration: one table of keys, and the loaders that fill
 * struct kvs_config from it.
 *
 * Every key kvstash reads is one row of `fields` below (UCX's
 * ucs_config_field_t idea): name, environment variable, alias, type, unit,
 * default as text, bounds, one line of documentation, whether it sits at the
 * top level or inside extra_config, and where its typed value lives in
 * struct kvs_config.  The parser, kvs_config_get/to_json/to_text and the
 * reference page (docs/config.md) are all walks over that table, so they
 * cannot disagree; even the defaults are text parsed by the same code.
 *
 * Sources apply in order, each value remembering its source and origin
 * (file:line, variable name): defaults, the YAML file, LMCACHE_* variables,
 * LMCACHE_EXTRA_CONFIG, KVSTASH_* variables, kvs_config_set().  Every public
 * loader works on a scratch copy and swaps it in only when the whole source
 * parsed, the cross-checks passed and the store paths resolved, so a failed
 * call leaves the caller's configuration exactly as it was.  YAML and JSON
 * both go through libyaml's document loader.  The LMCache Weka docs print
 * their YAML indented by one space with the extra_config entry pushed to
 * column 0; a uniformly indented file is therefore dedented first, and an
 * extra_config entry found at the top level is read as one, with a warning.
 *
 * A kvs_config is the first member of a private box that also holds the
 * origin text of each value, so configurations are only ever made by
 * kvs_config_new/load/copy, never declared or copied by value.
 */
#include "config.h"
#include "units.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

extern char **environ;

/* ------------------------------------------------------------------------ */
/* The table                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum cfg_type {
    T_UINT,     /* decimal integer; uint32_t or uint64_t field */
    T_GB,       /* decimal number of GB (10^9 bytes); double */
    T_FRACTION, /* decimal number; double */
    T_BOOL,     /* bool, or an enum whose 0/1 mean off/on */
    T_ENUM,     /* one of names[]; an enum field */
    T_MODE,     /* octal permission bits; uint32_t */
    T_STRING,   /* any text; "" means none (NULL) */
    T_PATHS,    /* one path or a comma-separated list; char * */
} cfg_type;

#define F_EXTRA 0x1u    /* an extra_config entry (env KVSTASH_<NAME>) */
#define F_MIN_EXCL 0x2u /* min itself is not accepted */
#define F_MAX_EXCL 0x4u /* max itself is not accepted */

typedef struct cfg_name {
    const char *name;
    unsigned value;
    bool hidden; /* accepted, but not printed */
} cfg_name;

typedef struct cfg_field {
    const char *name;
    const char *env;
    const char *alias;     /* a later LMCache name, or NULL */
    const char *alias_env;
    cfg_type type;
    unsigned flags;        /* F_* */
    const char *unit;      /* printed after numbers */
    const char *def;       /* default, as text; NULL: unset */
    double min, max;       /* inclusive unless F_*_EXCL */
    const cfg_name *names; /* T_ENUM */
    size_t offset, size;   /* of the typed field in struct kvs_config */
    const char *doc;
} cfg_field;

static const cfg_name io_path_names[] = {
    {"auto", KVS_IO_PATH_AUTO, false},
    {"cufile", KVS_IO_PATH_CUFILE, false},
    {"posix", KVS_IO_PATH_POSIX, false},
    {NULL, 0, false},
};

static const cfg_name dev_pinned_names[] = {
    {"register", KVS_DEV_PINNED_REGISTER, false},
    {"alloc", KVS_DEV_PINNED_ALLOC, false},
    {NULL, 0, false},
};

static const cfg_name codec_names[] = {
    {"auto", KVS_CODEC_MODE_AUTO, false},
    {"on", KVS_CODEC_MODE_ON, false},
    {"off", KVS_CODEC_MODE_OFF, false},
    {NULL, 0, false},
};

static const cfg_name retrieve_order_names[] = {
    {"chunk", KVS_RETRIEVE_ORDER_CHUNK, false},
    {"layer", KVS_RETRIEVE_ORDER_LAYER, false},
    {NULL, 0, false},
};

static const cfg_name log_level_names[] = {
    {"error", KVS_LOG_ERROR, false},
    {"warning", KVS_LOG_WARN, false},
    {"info", KVS_LOG_INFO, false},
    {"debug", KVS_LOG_DEBUG, false},
    {"warn", KVS_LOG_WARN, true},
    {NULL, 0, false},
};

_Static_assert(sizeof(kvs_io_path_mode) == sizeof(uint32_t), "enum fields are 32-bit");
_Static_assert(sizeof(kvs_direct_io_mode) == sizeof(uint32_t), "enum fields are 32-bit");
_Static_assert(sizeof(kvs_log_level) == sizeof(uint32_t), "enum fields are 32-bit");
_Static_assert(sizeof(kvs_dev_pinned_mode) == sizeof(uint32_t), "enum fields are 32-bit");
_Static_assert(sizeof(kvs_codec_mode) == sizeof(uint32_t), "enum fields are 32-bit");
_Static_assert(sizeof(kvs_retrieve_order) == sizeof(uint32_t), "enum fields are 32-bit");

#define FIELD(m)                                                                   \
    .offset = offsetof(struct kvs_config, m),                                      \
    .size = sizeof(((struct kvs_config *)0)->m)

static const cfg_field fields[] = {
    [KVS_CFG_CHUNK_SIZE] = {
        .name = "chunk_size", .env = "LMCACHE_CHUNK_SIZE",
        .type = T_UINT, .unit = "tokens", .def = "256", .min = 1, .max = 1048576,
        FIELD(chunk_size),
        .doc = "Tokens per chunk: the unit of keys, files and hits. Part of the "
               "namespace, so chunks stored with another chunk size are never read.",
    },
    [KVS_CFG_LOCAL_CPU] = {
        .name = "local_cpu", .env = "LMCACHE_LOCAL_CPU",
        .type = T_BOOL, .def = "true",
        FIELD(local_cpu),
        .doc = "Keep recently used chunks in host memory (the CPU tier) in front of "
               "the store. The Weka docs turn it off so the CPU stays out of the "
               "GPUDirect path.",
    },
    [KVS_CFG_MAX_LOCAL_CPU_SIZE] = {
        .name = "max_local_cpu_size", .env = "LMCACHE_MAX_LOCAL_CPU_SIZE",
        .type = T_GB, .unit = "GB", .def = "5", .min = 0, .max = 65536,
        FIELD(max_local_cpu_size),
        .doc = "Host memory the CPU tier may hold; 0 keeps nothing there.",
    },
    [KVS_CFG_WEKA_PATH] = {
        .name = "weka_path", .env = "LMCACHE_WEKA_PATH",
        .alias = "gds_path", .alias_env = "LMCACHE_GDS_PATH",
        .type = T_PATHS,
        FIELD(weka_path),
        .doc = "Directory for chunk files on the shared mount, or a comma-separated "
               "list of up to 16. Unset: a local folder, $XDG_CACHE_HOME/kvstash, "
               "else $HOME/.cache/kvstash, else ./kvstash-cache.",
    },
    [KVS_CFG_CUFILE_BUFFER_SIZE] = {
        .name = "cufile_buffer_size", .env = "LMCACHE_CUFILE_BUFFER_SIZE",
        .alias = "gds_buffer_size", .alias_env = "LMCACHE_GDS_BUFFER_SIZE",
        .type = T_UINT, .unit = "MiB", .def = "1024", .min = 1, .max = 1048576,
        FIELD(cufile_buffer_size),
        .doc = "GPU memory registered with cuFile as the staging buffer. It comes "
               "out of what vLLM may use: leave room with --gpu-memory-utilization.",
    },
    [KVS_CFG_SAVE_UNFULL_CHUNK] = {
        .name = "save_unfull_chunk", .env = "LMCACHE_SAVE_UNFULL_CHUNK",
        .type = T_BOOL, .def = "false",
        FIELD(save_unfull_chunk),
        .doc = "Store the trailing partial chunk of a prompt too.",
    },
    [KVS_CFG_LOOKUP_TIMEOUT_MS] = {
        .name = "lookup_timeout_ms", .env = "LMCACHE_LOOKUP_TIMEOUT_MS",
        .type = T_UINT, .unit = "ms", .def = "5", .min = 0, .max = 600000,
        FIELD(lookup_timeout_ms),
        .doc = "Longest the vLLM connector's scheduler waits for a lookup; a lookup "
               "still running then answers \"not known yet\" (a miss on vLLM "
               "versions without that answer) and completes in the background.",
    },
    [KVS_CFG_GDS_IO_THREADS] = {
        .name = "gds_io_threads", .env = "KVSTASH_GDS_IO_THREADS",
        .alias = "disk_io_threads", .alias_env = "KVSTASH_DISK_IO_THREADS",
        .type = T_UINT, .flags = F_EXTRA, .unit = "threads", .def = "4",
        .min = 1, .max = 1024,
        FIELD(gds_io_threads),
        .doc = "I/O worker threads reading and writing chunk files; each holds a 2 MiB "
               "buffer (a host read or write call).",
    },
    [KVS_CFG_USE_DIRECT_IO] = {
        .name = "use_direct_io", .env = "KVSTASH_USE_DIRECT_IO",
        .type = T_BOOL, .flags = F_EXTRA, .def = "true",
        FIELD(use_direct_io),
        .doc = "O_DIRECT where the filesystem supports it, detected at open; false: "
               "buffered I/O through the page cache.",
    },
    [KVS_CFG_IO_PATH] = {
        .name = "io_path", .env = "KVSTASH_IO_PATH",
        .type = T_ENUM, .flags = F_EXTRA, .def = "auto", .names = io_path_names,
        FIELD(io_path),
        .doc = "Data path: auto uses cuFile when its start-up self-test passes and "
               "POSIX I/O otherwise; cufile requires cuFile for GPU memory; posix "
               "never uses cuFile.",
    },
    [KVS_CFG_IO_TIMEOUT_MS] = {
        .name = "io_timeout_ms", .env = "KVSTASH_IO_TIMEOUT_MS",
        .type = T_UINT, .flags = F_EXTRA, .unit = "ms", .def = "5000",
        .min = 1, .max = 3600000,
        FIELD(io_timeout_ms),
        .doc = "Deadline of a lookup or retrieve; chunks not loaded by then are misses.",
    },
    [KVS_CFG_STORE_TIMEOUT_MS] = {
        .name = "store_timeout_ms", .env = "KVSTASH_STORE_TIMEOUT_MS",
        .type = T_UINT, .flags = F_EXTRA, .unit = "ms", .def = "30000",
        .min = 1, .max = 3600000,
        FIELD(store_timeout_ms),
        .doc = "Deadline of one chunk write.",
    },
    [KVS_CFG_NEGATIVE_CACHE_MS] = {
        .name = "negative_cache_ms", .env = "KVSTASH_NEGATIVE_CACHE_MS",
        .type = T_UINT, .flags = F_EXTRA, .unit = "ms", .def = "1000",
        .min = 0, .max = 600000,
        FIELD(negative_cache_ms),
        .doc = "How long a chunk found absent on the store is remembered as absent; "
               "0: never.",
    },
    [KVS_CFG_MAX_PENDING_STORE_SIZE] = {
        .name = "max_pending_store_size", .env = "KVSTASH_MAX_PENDING_STORE_SIZE",
        .type = T_GB, .flags = F_EXTRA | F_MIN_EXCL, .unit = "GB", .def = "20",
        .min = 0, .max = 65536,
        FIELD(max_pending_store_size),
        .doc = "Stores queued or being written; chunks past it are dropped, counted and "
               "logged, never waited for. The default holds two 65536-token prompts of "
               "Llama-3.1-8B in bf16 (8.6 GB each). It allocates nothing itself: a queued "
               "chunk holds the caller's memory (host stores) or its GPU staging slice "
               "(bounded by cufile_buffer_size), and the CPU tier is bounded by "
               "max_local_cpu_size.",
    },
    [KVS_CFG_MAX_STORE_SIZE] = {
        .name = "max_store_size", .env = "KVSTASH_MAX_STORE_SIZE",
        .type = T_GB, .flags = F_EXTRA, .unit = "GB", .def = "0",
        .min = 0, .max = 1e9,
        FIELD(max_store_size),
        .doc = "What the shared store may hold before the least recently used "
               "chunks are evicted; 0: no cap. It counts every namespace on every "
               "path of weka_path, and all instances configured with those paths "
               "enforce it together (one collector at a time): it is per store, not "
               "per instance or rank.",
    },
    [KVS_CFG_STORE_HIGH_WATERMARK] = {
        .name = "store_high_watermark", .env = "KVSTASH_STORE_HIGH_WATERMARK",
        .type = T_FRACTION, .flags = F_EXTRA | F_MIN_EXCL, .def = "0.9",
        .min = 0, .max = 1,
        FIELD(store_high_watermark),
        .doc = "Fraction of max_store_size at which eviction starts.",
    },
    [KVS_CFG_STORE_LOW_WATERMARK] = {
        .name = "store_low_watermark", .env = "KVSTASH_STORE_LOW_WATERMARK",
        .type = T_FRACTION, .flags = F_EXTRA | F_MIN_EXCL | F_MAX_EXCL, .def = "0.8",
        .min = 0, .max = 1,
        FIELD(store_low_watermark),
        .doc = "Fraction of max_store_size eviction brings the store down to; "
               "must be below store_high_watermark.",
    },
    [KVS_CFG_MIN_FREE_SPACE] = {
        .name = "min_free_space", .env = "KVSTASH_MIN_FREE_SPACE",
        .type = T_GB, .flags = F_EXTRA, .unit = "GB", .def = "1",
        .min = 0, .max = 1e9,
        FIELD(min_free_space),
        .doc = "Free space kept on each filesystem of the store: below it new stores "
               "are refused and the least recently used chunks are evicted (at most "
               "half of a filesystem is kept free).",
    },
    [KVS_CFG_ACCESS_INTERVAL_S] = {
        .name = "access_interval_s", .env = "KVSTASH_ACCESS_INTERVAL_S",
        .type = T_UINT, .flags = F_EXTRA, .unit = "seconds", .def = "60",
        .min = 0, .max = 86400,
        FIELD(access_interval_s),
        .doc = "A read refreshes a chunk's access time (its eviction order) at "
               "most once per interval; 0: on every read.",
    },
    [KVS_CFG_TMP_GRACE_S] = {
        .name = "tmp_grace_s", .env = "KVSTASH_TMP_GRACE_S",
        .type = T_UINT, .flags = F_EXTRA, .unit = "seconds", .def = "600",
        .min = 1, .max = 2592000,
        FIELD(tmp_grace_s),
        .doc = "Age after which a temporary file of a crashed writer is removed.",
    },
    [KVS_CFG_LEASE_TTL_S] = {
        .name = "lease_ttl_s", .env = "KVSTASH_LEASE_TTL_S",
        .type = T_UINT, .flags = F_EXTRA, .unit = "seconds", .def = "30",
        .min = 1, .max = 86400,
        FIELD(lease_ttl_s),
        .doc = "Lifetime of the lease that lets one instance at a time evict from "
               "the shared store; a dead holder's lease expires after it.",
    },
    [KVS_CFG_COLLECT_INTERVAL_S] = {
        .name = "collect_interval_s", .env = "KVSTASH_COLLECT_INTERVAL_S",
        .type = T_UINT, .flags = F_EXTRA, .unit = "seconds", .def = "300",
        .min = 1, .max = 86400,
        FIELD(collect_interval_s),
        .doc = "How often one instance re-measures the whole store (in the background, "
               "at a quarter of a core at most) and removes orphaned temporary files. "
               "A write failing for lack of space, the filesystem growing past the high "
               "watermark or free space below min_free_space start a collection at once.",
    },
    [KVS_CFG_FAILURE_THRESHOLD] = {
        .name = "failure_threshold", .env = "KVSTASH_FAILURE_THRESHOLD",
        .type = T_UINT, .flags = F_EXTRA, .unit = "failures", .def = "8",
        .min = 0, .max = 1000000,
        FIELD(failure_threshold),
        .doc = "Consecutive I/O failures after which the store is marked "
               "unhealthy; 0: never.",
    },
    [KVS_CFG_FILE_MODE] = {
        .name = "file_mode", .env = "KVSTASH_FILE_MODE",
        .type = T_MODE, .flags = F_EXTRA, .def = "0644",
        FIELD(file_mode),
        .doc = "Permission bits of chunk files (octal); their folders get the same plus "
               "search (x) wherever read is allowed.  The process umask applies, as to any "
               "file created: with umask 022, 0664 gives 0644, so set umask 002 (or 0) for "
               "a store shared by a group.",
    },
    [KVS_CFG_DURABLE_WRITES] = {
        .name = "durable_writes", .env = "KVSTASH_DURABLE_WRITES",
        .type = T_BOOL, .flags = F_EXTRA, .def = "false",
        FIELD(durable_writes),
        .doc = "fsync each chunk file before publishing it.",
    },
    [KVS_CFG_NAMESPACE_SALT] = {
        .name = "namespace_salt", .env = "KVSTASH_NAMESPACE_SALT",
        .type = T_STRING, .flags = F_EXTRA, .def = "",
        FIELD(namespace_salt),
        .doc = "Default tenancy salt: instances with different salts never share "
               "chunks. Only its SHA-256 is stored.",
    },
    [KVS_CFG_AUTH_KEY_FILE] = {
        .name = "auth_key_file", .env = "KVSTASH_AUTH_KEY_FILE",
        .type = T_STRING, .flags = F_EXTRA, .def = "",
        FIELD(auth_key_file),
        .doc = "Authenticated chunks: a file of 32 to 4096 secret bytes (a regular file "
               "not readable by group or others). Every chunk written carries an "
               "HMAC-SHA256 over its header and payload under this key, and only chunks "
               "that verify are served; other files are misses (miss_unauthenticated). "
               "Empty: off.",
    },
    [KVS_CFG_STRICT_OWNERSHIP] = {
        .name = "strict_ownership", .env = "KVSTASH_STRICT_OWNERSHIP",
        .type = T_BOOL, .flags = F_EXTRA, .def = "false",
        FIELD(strict_ownership),
        .doc = "Like ssh's StrictModes: refuse a namespace folder or .kvstash not owned "
               "by this process's user (or store_uid; folders: or root) or writable by "
               "group or others (an error at open), and serve no chunk file not owned "
               "that way (a miss, miss_ownership). With store_gid, anything of that "
               "group that others cannot write is accepted too (a group-shared store).",
    },
    [KVS_CFG_STORE_UID] = {
        .name = "store_uid", .env = "KVSTASH_STORE_UID",
        .type = T_STRING, .flags = F_EXTRA, .def = "",
        FIELD(store_uid),
        .doc = "strict_ownership: the user (name or number) that must own the store's "
               "folders and chunk files, when not this process's. Empty: this process's "
               "effective user.",
    },
    [KVS_CFG_STORE_GID] = {
        .name = "store_gid", .env = "KVSTASH_STORE_GID",
        .type = T_STRING, .flags = F_EXTRA, .def = "",
        FIELD(store_gid),
        .doc = "strict_ownership: the group (name or number) of a group-shared store: "
               "folders and files of this group are accepted, group-writable or not, "
               "whoever owns them, as long as others cannot write them. Empty: none.",
    },
    [KVS_CFG_LOG_LEVEL] = {
        .name = "log_level", .env = "KVSTASH_LOG_LEVEL",
        .type = T_ENUM, .flags = F_EXTRA, .def = "info", .names = log_level_names,
        FIELD(log_level),
        .doc = "Most verbose log lines printed once an engine opens (warn is "
               "accepted for warning). LMCACHE_LOG_LEVEL (LMCache's variable) is read "
               "too; KVSTASH_LOG_LEVEL wins over it. Inside Python the lines go to the "
               "logger \"kvstash\" at this level.",
    },
    [KVS_CFG_STRICT] = {
        .name = "strict", .env = "KVSTASH_STRICT",
        .type = T_BOOL, .flags = F_EXTRA, .def = "false",
        FIELD(strict),
        .doc = "Unknown keys, extra_config entries and LMCACHE_*/KVSTASH_* variables "
               "are errors rather than warnings (kvstash --strict; kvstash.strict in "
               "the vLLM connector's extra config).",
    },
    /* Benchmark tuning of the device path (docs/gpu.md); the defaults are
     * the measured best (bench/RESULTS.md).  Read by a CUDA build only. */
    [KVS_CFG_DEV_PIECE_MB] = {
        .name = "dev_piece_mb", .env = "KVSTASH_DEV_PIECE_MB",
        .type = T_UINT, .flags = F_EXTRA, .unit = "MiB", .def = "8", .min = 1, .max = 4096,
        FIELD(dev_piece_mb),
        .doc = "Benchmark tuning, GPU memory: bytes of one retrieve piece (several I/O "
               "threads read one chunk in pieces).",
    },
    [KVS_CFG_DEV_UNIT_KB] = {
        .name = "dev_unit_kb", .env = "KVSTASH_DEV_UNIT_KB",
        .type = T_UINT, .flags = F_EXTRA, .unit = "KiB", .def = "2048", .min = 1, .max = 4096,
        FIELD(dev_unit_kb),
        .doc = "Benchmark tuning, GPU memory: bytes per system call and per copy of the "
               "pinned bounce path.",
    },
    [KVS_CFG_DEV_RING] = {
        .name = "dev_ring", .env = "KVSTASH_DEV_RING",
        .type = T_UINT, .flags = F_EXTRA, .unit = "units", .def = "4", .min = 1, .max = 4096,
        FIELD(dev_ring),
        .doc = "Benchmark tuning, GPU memory: units of the pinned bounce path in flight "
               "per staging slot.",
    },
    [KVS_CFG_DEV_PINNED] = {
        .name = "dev_pinned", .env = "KVSTASH_DEV_PINNED",
        .type = T_ENUM, .flags = F_EXTRA, .def = "register", .names = dev_pinned_names,
        FIELD(dev_pinned),
        .doc = "Benchmark tuning, GPU memory: register pins ordinary (huge-page) memory "
               "with cudaHostRegister; alloc takes the pinned slices from cudaHostAlloc.",
    },
    [KVS_CFG_CODEC] = {
        .name = "codec", .env = "KVSTASH_CODEC",
        .type = T_ENUM, .flags = F_EXTRA, .def = "auto", .names = codec_names,
        FIELD(codec),
        .doc = "Lossless compression of stored chunks (docs/codec.md): auto compresses "
               "chunks stored from GPU memory (encoded on the GPU) and not those stored "
               "from host memory; on compresses on both paths (host memory: encoded on "
               "the CPU, slower); off never compresses. Readers take compressed and "
               "plain files whatever this says. Not with auth_key_file: on is an error "
               "there and auto means off.",
    },
    [KVS_CFG_RETRIEVE_ORDER] = {
        .name = "retrieve_order", .env = "KVSTASH_RETRIEVE_ORDER",
        .type = T_ENUM, .flags = F_EXTRA, .def = "chunk", .names = retrieve_order_names,
        FIELD(retrieve_order),
        .doc = "Which parts of a retrieve's chunk files are read first (docs/design.md, "
               "\"Retrieve order\"): chunk reads each chunk whole before the next, so the "
               "loaded prefix grows in order and a retrieve cut short by its deadline keeps "
               "the most whole chunks; layer reads the first layers of every chunk, then "
               "the next, so a forward that waits layer by layer (kvstash.layerwise) can "
               "compute early layers while later ones load. The vLLM connector asks for "
               "layer when kvstash.layerwise is on and this key is not set.",
    },
};

_Static_assert(KVS_ARRAY_LEN(fields) == KVS_CFG_NKEYS, "one row per kvs_config_key");

/* LMCache settings kvstash accepts and ignores with a warning. */
static const char *const lmcache_unused[] = {
    "local_disk", "max_local_disk_size", "local_disk_path_sharding",
    "reserve_local_cpu_size", "remote_url", "remote_serde", "remote_storage_plugins",
    "storage_plugins", "use_layerwise", "enable_blending", "blend_recompute_ratios",
    "blend_min_tokens", "blend_special_str", "blend_check_layers",
    "save_decode_cache", "use_gds", "gds_backend", "gds_path_sharding",
    "pre_caching_hash_algorithm", "lmcache_instance_id", "enable_async_loading",
    "cache_policy", "blocking_timeout_secs",
    "min_retrieve_tokens", "enable_p2p", "enable_pd", "enable_controller",
    "controller_url", "lmcache_worker_port", "distributed_url", "pd_role",
    "pd_buffer_size", "pd_buffer_device", "nixl_role", "nixl_buffer_size",
    "nixl_buffer_device", "priority_limit", "py_enable_gc", "numa_mode",
    "internal_api_server_enabled", "external_lookup_client", NULL,
};

/* LMCache extra_config entries kvstash accepts and ignores with a warning. */
static const char *const lmcache_unused_extra[] = {
    "use_cufile", "max_alloc_attempts", "allocation_attempt_delay_secs",
    "save_only_first_rank", "audit_backend_enabled", "enable_nixl_storage",
    "force_store_wait", NULL,
};

/* Variables the loaders read that are not table keys. */
#define ENV_CONFIG_FILE "LMCACHE_CONFIG_FILE"
#define ENV_EXTRA_CONFIG "LMCACHE_EXTRA_CONFIG"
#define ENV_EXPERIMENTAL "LMCACHE_USE_EXPERIMENTAL"

/* KVSTASH_* variables read by other parts of kvstash, not configuration
 * keys: known, so not warned about (python/kvstash: where the library is,
 * the connector's metrics port). */
static const char *const kvstash_other_vars[] = {
    "KVSTASH_LIBRARY",
    "KVSTASH_METRICS_PORT",
    "KVSTASH_METRICS_HOST",
};
/* LMCache's log level variable: read as log_level, before KVSTASH_LOG_LEVEL. */
#define ENV_LMCACHE_LOG_LEVEL "LMCACHE_LOG_LEVEL"
#define API_SOURCE "kvs_config_set()"
#define CONFIG_FILE_MAX (1u << 20)
#define JSON_EXAMPLE "{\"gds_io_threads\": 32}"

/* ------------------------------------------------------------------------ */
/* The object                                                                */
/* ------------------------------------------------------------------------ */

typedef struct cfg_box {
    struct kvs_config pub;       /* first: a kvs_config * points here */
    char *origin[KVS_CFG_NKEYS]; /* "path:line" or a variable; NULL: default, api */
    char *unknown;               /* "; "-separated unknown settings seen; NULL: none */
} cfg_box;

static cfg_box *box_of(const kvs_config *cfg)
{
    return (cfg_box *)(uintptr_t)cfg;
}

/* A parsed value, before it is stored. */
typedef struct cfg_val {
    uint64_t u; /* T_UINT, T_BOOL, T_ENUM, T_MODE */
    double d;   /* T_GB, T_FRACTION */
    char *s;    /* T_STRING, T_PATHS; NULL: none */
} cfg_val;

static bool is_text(const cfg_field *f)
{
    return f->type == T_STRING || f->type == T_PATHS;
}

static bool is_real(const cfg_field *f)
{
    return f->type == T_GB || f->type == T_FRACTION;
}

static cfg_val get_val(const struct kvs_config *c, const cfg_field *f)
{
    const char *p = (const char *)c + f->offset;
    cfg_val v = {0, 0, NULL};
    if (is_text(f)) {
        memcpy(&v.s, p, sizeof v.s);
    } else if (is_real(f)) {
        memcpy(&v.d, p, sizeof v.d);
    } else if (f->size == sizeof(bool)) {
        bool b;
        memcpy(&b, p, sizeof b);
        v.u = b;
    } else if (f->size == sizeof(uint32_t)) {
        uint32_t u;
        memcpy(&u, p, sizeof u);
        v.u = u;
    } else {
        memcpy(&v.u, p, sizeof v.u);
    }
    return v;
}

/* Stores v, taking its string and freeing the one it replaces. */
static void put_val(struct kvs_config *c, const cfg_field *f, cfg_val *v)
{
    char *p = (char *)c + f->offset;
    if (is_text(f)) {
        char *old;
        memcpy(&old, p, sizeof old);
        kvs__free(old);
        memcpy(p, &v->s, sizeof v->s);
        v->s = NULL;
    } else if (is_real(f)) {
        memcpy(p, &v->d, sizeof v->d);
    } else if (f->size == sizeof(bool)) {
        bool b = v->u != 0;
        memcpy(p, &b, sizeof b);
    } else if (f->size == sizeof(uint32_t)) {
        uint32_t u = (uint32_t)v->u;
        memcpy(p, &u, sizeof u);
    } else {
        memcpy(p, &v->u, sizeof v->u);
    }
}

static bool val_equal(const cfg_field *f, const cfg_val *a, const cfg_val *b)
{
    if (is_text(f))
        return (!a->s && !b->s) || (a->s && b->s && !strcmp(a->s, b->s));
    if (is_real(f))
        return !(a->d < b->d) && !(a->d > b->d);
    return a->u == b->u;
}

static void box_free(cfg_box *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        if (is_text(&fields[i])) {
            cfg_val none = {0, 0, NULL};
            put_val(&b->pub, &fields[i], &none);
        }
        kvs__free(b->origin[i]);
    }
    for (size_t i = 0; i < KVS_MAX_STORE_PATHS; i++)
        kvs__free(b->pub.store_paths[i]);
    kvs__free(b->unknown);
    kvs__free(b);
}

static kvs_status nomem(void)
{
    return kvs__fail(KVS_ERR_NOMEM, "out of memory while reading the configuration");
}

static kvs_status box_copy(const cfg_box *src, cfg_box **out)
{
    cfg_box *b = kvs__malloc(sizeof *b);
    if (!b)
        return nomem();
    *b = *src;
    /* Detach every owned pointer first, so a failure frees only copies. */
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        static char *const none = NULL;
        if (is_text(&fields[i]))
            memcpy((char *)&b->pub + fields[i].offset, &none, sizeof none);
        b->origin[i] = NULL;
    }
    memset(b->pub.store_paths, 0, sizeof b->pub.store_paths);
    b->unknown = NULL;
    if (src->unknown && !(b->unknown = kvs__strdup(src->unknown)))
        goto fail;

    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        const cfg_field *f = &fields[i];
        cfg_val v = get_val(&src->pub, f);
        if (is_text(f) && v.s) {
            v.s = kvs__strdup(v.s);
            if (!v.s)
                goto fail;
            put_val(&b->pub, f, &v);
        }
        if (src->origin[i] && !(b->origin[i] = kvs__strdup(src->origin[i])))
            goto fail;
    }
    for (size_t i = 0; i < KVS_MAX_STORE_PATHS; i++) {
        if (src->pub.store_paths[i] &&
            !(b->pub.store_paths[i] = kvs__strdup(src->pub.store_paths[i])))
            goto fail;
    }
    *out = b;
    return KVS_OK;
fail:
    box_free(b);
    return nomem();
}

/* Replaces dst's contents by scratch's and frees what dst held. */
static void box_commit(cfg_box *dst, cfg_box *scratch)
{
    cfg_box old = *dst;
    *dst = *scratch;
    *scratch = old;
    box_free(scratch);
}

/* ------------------------------------------------------------------------ */
/* Text helpers                                                              */
/* ------------------------------------------------------------------------ */

static bool name_is(const char *lit, const char *s, size_t n)
{
    return strlen(lit) == n && !memcmp(lit, s, n);
}

static bool word_is(const char *lit, const char *s, size_t n)
{
    return strlen(lit) == n && !strncasecmp(lit, s, n);
}

static bool in_list(const char *const *list, const char *s, size_t n)
{
    for (; *list; list++)
        if (name_is(*list, s, n))
            return true;
    return false;
}

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s))
        (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/* s for a message: in double quotes (or bare), escaped, shortened. */
static const char *quote(const char *s, size_t n, bool bare, char *buf, size_t cap)
{
    size_t w = 0;
    if (!bare)
        buf[w++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (w + 10 >= cap) {
            memcpy(buf + w, "...", 3);
            w += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            buf[w++] = '\\';
            buf[w++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            w += (size_t)snprintf(buf + w, cap - w, "\\x%02x", ch);
        } else {
            buf[w++] = (char)ch;
        }
    }
    if (!bare)
        buf[w++] = '"';
    buf[w] = '\0';
    return buf;
}

/* %g text that reads back as v: 15 significant digits (so 0.9 and 3600000
 * print as written), more only where needed. */
static const char *real_text(double v, char *buf, size_t cap)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

/* Levenshtein distance, ASCII case folded; SIZE_MAX for long names. */
static size_t edit_distance(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b), row[64];
    if (an >= KVS_ARRAY_LEN(row) || bn >= KVS_ARRAY_LEN(row))
        return SIZE_MAX;
    for (size_t j = 0; j <= bn; j++)
        row[j] = j;
    for (size_t i = 1; i <= an; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bn; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            row[j] = KVS_MIN(KVS_MIN(row[j] + 1, row[j - 1] + 1), diag + cost);
            diag = up;
        }
    }
    return row[bn];
}

typedef struct suggestion {
    const char *best; /* what to print */
    size_t dist;
} suggestion;

static void consider(suggestion *sg, const char *name, size_t n, const char *cand,
                     const char *show)
{
    size_t d = cand ? edit_distance(name, n, cand) : SIZE_MAX;
    if (d < sg->dist) {
        sg->dist = d;
        sg->best = show;
    }
}

/* " (did you mean "x"?)" when a candidate is close enough, else "". */
static const char *did_you_mean(const suggestion *sg, size_t n, char *buf, size_t cap)
{
    size_t limit = n >= 8 ? 3 : 2;
    if (!sg->best || sg->dist > limit || sg->dist >= n)
        return "";
    snprintf(buf, cap, " (did you mean \"%s\"?)", sg->best);
    return buf;
}

/* The nearest key name: extra_config entries only, or every name. */
static const char *suggest_key(const char *name, size_t n, bool extra_only, char *buf,
                               size_t cap)
{
    suggestion sg = {NULL, SIZE_MAX};
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        if (extra_only && !(fields[i].flags & F_EXTRA))
            continue;
        consider(&sg, name, n, fields[i].name, fields[i].name);
        consider(&sg, name, n, fields[i].alias, fields[i].alias);
    }
    if (!extra_only)
        consider(&sg, name, n, "extra_config", "extra_config");
    return did_you_mean(&sg, n, buf, cap);
}

/* ------------------------------------------------------------------------ */
/* Parsing one value                                                         */
/* ------------------------------------------------------------------------ */

static int parse_bool(const char *s, size_t n)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    trim(&s, &n);
    for (size_t i = 0; i < KVS_ARRAY_LEN(yes); i++) {
        if (word_is(yes[i], s, n))
            return 1;
        if (word_is(no[i], s, n))
            return 0;
    }
    return -1;
}

static bool in_bounds(const cfg_field *f, double v)
{
    if ((f->flags & F_MIN_EXCL) ? !(v > f->min) : !(v >= f->min))
        return false;
    if ((f->flags & F_MAX_EXCL) ? !(v < f->max) : !(v <= f->max))
        return false;
    return true;
}

/* What a key accepts, for messages and the reference page. */
static const char *accepted(const cfg_field *f, char *buf, size_t cap)
{
    char lo[32], hi[32];
    real_text(f->min, lo, sizeof lo);
    real_text(f->max, hi, sizeof hi);
    const char *unit = f->unit ? f->unit : "";
    const char *sp = f->unit ? " " : "";
    switch (f->type) {
    case T_UINT:
        snprintf(buf, cap, "%s..%s%s%s", lo, hi, sp, unit);
        if (!strcmp(unit, "MiB"))
            snprintf(buf + strlen(buf), cap - strlen(buf), " as a size such as 512MiB or 8GiB");
        else if (!strcmp(unit, "seconds"))
            snprintf(buf + strlen(buf), cap - strlen(buf), " as an age such as 90s, 30m or 12h");
        else if (!strcmp(unit, "ms"))
            snprintf(buf + strlen(buf), cap - strlen(buf), " as an age such as 500ms or 2s");
        break;
    case T_GB:
        snprintf(buf, cap, "%s%s%s%s GB as a size such as 500MB, 10GB or 1.5TiB",
                 (f->flags & F_MIN_EXCL) ? "more than " : "", lo,
                 (f->flags & F_MIN_EXCL) ? ", up to " : "..", hi);
        break;
    case T_FRACTION:
        if ((f->flags & F_MIN_EXCL) && (f->flags & F_MAX_EXCL))
            snprintf(buf, cap, "more than %s and less than %s%s%s", lo, hi, sp, unit);
        else if (f->flags & F_MIN_EXCL)
            snprintf(buf, cap, "more than %s, up to %s%s%s", lo, hi, sp, unit);
        else
            snprintf(buf, cap, "%s..%s%s%s", lo, hi, sp, unit);
        break;
    case T_BOOL:
        snprintf(buf, cap, "true, false, 1, 0, yes, no, on, off, in any case");
        break;
    case T_ENUM: {
        size_t w = 0;
        buf[0] = '\0';
        for (const cfg_name *e = f->names; e->name && w < cap; e++)
            if (!e->hidden)
                w += (size_t)snprintf(buf + w, cap - w, "%s%s", w ? ", " : "", e->name);
        break;
    }
    case T_MODE:
        snprintf(buf, cap, "octal permission bits within 0777 that include owner "
                           "read and write (0600), such as 0644");
        break;
    case T_STRING:
        snprintf(buf, cap, "any text without NUL bytes; empty for none");
        break;
    case T_PATHS:
        snprintf(buf, cap, "an absolute path, or a comma-separated list of up to %d; "
                           "~/ and a file:// prefix are allowed", KVS_MAX_STORE_PATHS);
        break;
    }
    return buf;
}

/* Lexically: collapses "//", drops ".", resolves ".." and a trailing '/'. */
static void path_normalize(char *p)
{
    size_t w = 0;
    const char *r = p;
    while (*r) {
        while (*r == '/')
            r++;
        if (!*r)
            break;
        const char *s = r;
        while (*r && *r != '/')
            r++;
        size_t n = (size_t)(r - s);
        if (n == 1 && s[0] == '.')
            continue;
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (w > 0 && p[w - 1] != '/')
                w--;
            if (w > 0)
                w--;
            continue;
        }
        p[w++] = '/';
        memmove(p + w, s, n);
        w += n;
    }
    if (w == 0)
        p[w++] = '/';
    p[w] = '\0';
}

static void free_paths(char **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        kvs__free(v[i]);
        v[i] = NULL;
    }
}

#define REJECT(...)                                                                \
    do {                                                                           \
        snprintf(problem, cap, __VA_ARGS__);                                       \
        st = KVS_ERR_CONFIG;                                                       \
        goto fail;                                                                 \
    } while (0)

/*
 * Splits a path list into cleaned elements: spaces around commas, a file://
 * prefix and trailing slashes dropped, absolute paths normalised, "~" and
 * "~/..." kept for resolution.  KVS_ERR_CONFIG with `problem`, or NOMEM.
 */
static kvs_status split_paths(const char *text, size_t len, char **elems,
                              unsigned *n_out, char *problem, size_t cap)
{
    kvs_status st = KVS_OK;
    unsigned n = 0;
    char q[96];
    if (memchr(text, '\0', len))
        REJECT("contains a NUL byte");
    if (memchr(text, '\n', len) || memchr(text, '\r', len))
        REJECT("contains a line break");
    trim(&text, &len);
    if (len == 0)
        REJECT("is empty");
    for (size_t pos = 0; pos <= len;) {
        const char *comma = memchr(text + pos, ',', len - pos);
        size_t end = comma ? (size_t)(comma - text) : len;
        const char *s = text + pos;
        size_t sn = end - pos;
        pos = end + 1;
        trim(&s, &sn);
        if (sn == 0)
            REJECT("has an empty element");
        if (n == KVS_MAX_STORE_PATHS)
            REJECT("lists more than %d paths", KVS_MAX_STORE_PATHS);
        if (sn >= 7 && !strncasecmp(s, "file://", 7))
            s += 7, sn -= 7;
        else if (sn >= 6 && !strncasecmp(s, "file:/", 6))
            s += 5, sn -= 5;
        if (sn == 0 || (s[0] != '/' && s[0] != '~'))
            REJECT("has a relative path %s (paths must be absolute or start with ~/)",
                   quote(s, sn, false, q, sizeof q));
        if (s[0] == '~' && sn > 1 && s[1] != '/')
            REJECT("has %s: only ~ and ~/ are expanded",
                   quote(s, sn, false, q, sizeof q));
        if (sn >= PATH_MAX)
            REJECT("has a path longer than %d bytes", PATH_MAX - 1);
        if (!(elems[n] = kvs__strndup(s, sn))) {
            st = nomem();
            goto fail;
        }
        if (elems[n][0] == '/') {
            path_normalize(elems[n]);
        } else {
            size_t k = strlen(elems[n]);
            while (k > 1 && elems[n][k - 1] == '/')
                elems[n][--k] = '\0';
        }
        n++;
        /* Control bytes are never meant; and a path whose last folder name
         * ends in a space would lose it when its own printed value is read
         * again (the ends of each element are trimmed), naming another
         * folder: both are refused rather than guessed at. */
        const char *e = elems[n - 1];
        for (const char *c = e; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                REJECT("has a control character in %s", quote(e, strlen(e), false, q, sizeof q));
        if (isspace((unsigned char)e[strlen(e) - 1]))
            REJECT("has a path ending in a space, %s", quote(e, strlen(e), false, q, sizeof q));
        for (unsigned i = 0; i + 1 < n; i++)
            if (!strcmp(elems[i], elems[n - 1]))
                REJECT("lists %s twice", quote(elems[i], strlen(elems[i]), false, q, sizeof q));
    }
    *n_out = n;
    return KVS_OK;
fail:
    free_paths(elems, n);
    return st;
}

/* Parses text as f's type.  KVS_ERR_CONFIG with `problem`, or NOMEM. */
static kvs_status parse_value(const cfg_field *f, const char *text, size_t len,
                              cfg_val *out, char *problem, size_t cap)
{
    kvs_status st = KVS_OK;
    cfg_val v = {0, 0, NULL};

    if (f->type == T_PATHS) {
        char *elems[KVS_MAX_STORE_PATHS];
        unsigned n;
        kvs_buf b = {0};
        st = split_paths(text, len, elems, &n, problem, cap);
        if (st)
            return st;
        for (unsigned i = 0; i < n; i++)
            kvs_buf_printf(&b, "%s%s", i ? "," : "", elems[i]);
        free_paths(elems, n);
        if (kvs_buf_finish(&b, &v.s))
            return nomem();
        *out = v;
        return KVS_OK;
    }
    if (memchr(text, '\0', len))
        REJECT("contains a NUL byte");
    if (f->type == T_STRING) {
        if (len && !(v.s = kvs__strndup(text, len)))
            return nomem();
        *out = v;
        return KVS_OK;
    }

    trim(&text, &len);
    if (len == 0)
        REJECT("is empty");
    switch (f->type) {
    case T_UINT: {
        /* byte and time keys take the size and age grammar (units.h) */
        uint64_t unit_base = 0;
        kvs_quantity kind = KVS_Q_SIZE;
        if (f->unit && !strcmp(f->unit, "MiB"))
            unit_base = 1ull << 20;
        else if (f->unit && !strcmp(f->unit, "seconds"))
            unit_base = 1000, kind = KVS_Q_AGE;
        else if (f->unit && !strcmp(f->unit, "ms"))
            unit_base = 1, kind = KVS_Q_AGE;
        if (unit_base) {
            switch (kvs__parse_quantity(text, len, kind, unit_base, unit_base, false, &v.u)) {
            case KVS_Q_OK: break;
            case KVS_Q_SYNTAX:
                REJECT("is not %s", kind == KVS_Q_SIZE ? "a size" : "an age");
            case KVS_Q_NEGATIVE:
            case KVS_Q_TOO_LARGE: REJECT("is out of range");
            case KVS_Q_INEXACT: REJECT("is not a whole number of %s", f->unit);
            }
            if (!in_bounds(f, (double)v.u))
                REJECT("is out of range");
            break;
        }
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)text[i]))
                REJECT("%s", f->min >= 1 ? "is not a positive integer"
                                         : "is not a non-negative integer");
            unsigned digit = (unsigned)(text[i] - '0');
            if (v.u > (UINT64_MAX - digit) / 10)
                REJECT("is out of range");
            v.u = v.u * 10 + digit;
        }
        if (!in_bounds(f, (double)v.u))
            REJECT("is out of range");
        break;
    }
    case T_GB: {
        uint64_t bytes = 0;
        switch (kvs__parse_quantity(text, len, KVS_Q_SIZE, 1000000000ull, 1, true, &bytes)) {
        case KVS_Q_OK: break;
        case KVS_Q_SYNTAX: REJECT("is not a size");
        case KVS_Q_NEGATIVE:
        case KVS_Q_TOO_LARGE:
        case KVS_Q_INEXACT: REJECT("is out of range");
        }
        v.d = (double)bytes / 1e9;
        if (!in_bounds(f, v.d))
            REJECT("is out of range");
        break;
    }
    case T_FRACTION: {
        char num[64], *end;
        if (len >= sizeof num)
            REJECT("is not a number");
        memcpy(num, text, len);
        num[len] = '\0';
        if (strspn(num, "0123456789.eE+-") != len)
            REJECT("is not a number");
        v.d = strtod(num, &end);
        if (end != num + len)
            REJECT("is not a number");
        if (!isfinite(v.d))
            REJECT("is not a finite number");
        v.d += 0.0; /* -0 reads as 0 */
        if (!in_bounds(f, v.d))
            REJECT("is out of range");
        break;
    }
    case T_BOOL: {
        int b = parse_bool(text, len);
        if (b < 0)
            REJECT("is not a boolean");
        v.u = (uint64_t)b;
        break;
    }
    case T_ENUM: {
        const cfg_name *e = f->names;
        while (e->name && !word_is(e->name, text, len))
            e++;
        if (!e->name)
            REJECT("is not one of the accepted names");
        v.u = e->value;
        break;
    }
    case T_MODE:
        if (len > 2 && text[0] == '0' && (text[1] == 'o' || text[1] == 'O'))
            text += 2, len -= 2;
        if (len > 8)
            REJECT("is out of range");
        for (size_t i = 0; i < len; i++) {
            if (text[i] < '0' || text[i] > '7')
                REJECT("is not an octal number");
            v.u = v.u * 8 + (uint64_t)(text[i] - '0');
        }
        if (v.u > 0777)
            REJECT("is out of range");
        if ((v.u & 0600) != 0600)
            REJECT("lacks owner read and write (0600)");
        break;
    case T_STRING:
    case T_PATHS:
        break;
    }
    *out = v;
    return KVS_OK;
fail:
    return st;
}

#undef REJECT

/* ------------------------------------------------------------------------ */
/* Applying values from one source                                           */
/* ------------------------------------------------------------------------ */

enum { SET_BY_NAME = 1, SET_BY_ALIAS = 2 };

typedef struct applier {
    cfg_box *box;                 /* the scratch configuration written to */
    kvs_config_source kind;
    const char *src_name;         /* file path, variable, or API_SOURCE */
    const char *orig;             /* a file's text before dedenting */
    size_t orig_len, dedent;      /* (for columns in messages) */
    yaml_document_t *doc;
    /* Within one mapping or one group of variables, how each key was set:
     * a key and its alias set to different values there is an error. */
    unsigned char set_by[KVS_CFG_NKEYS];
} applier;

static const char *key_text(const cfg_field *f, bool alias, char *buf, size_t cap)
{
    const char *pre = (f->flags & F_EXTRA) ? "extra_config." : "";
    if (alias)
        snprintf(buf, cap, "%s%s (alias of %s)", pre, f->alias, f->name);
    else
        snprintf(buf, cap, "%s%s", pre, f->name);
    return buf;
}

static const char *where_text(const applier *a, size_t line, size_t col, char *buf,
                              size_t cap)
{
    if (a->kind == KVS_SOURCE_DEFAULT)
        snprintf(buf, cap, "in the built-in defaults");
    else if (line)
        snprintf(buf, cap, "in %s:%zu:%zu", a->src_name, line, col);
    else
        snprintf(buf, cap, "from %s", a->src_name);
    return buf;
}

/* "<key>: <value> <where> <problem> (accepted: ...; environment variable X)" */
static kvs_status bad_value(const applier *a, const cfg_field *f, bool alias,
                            const char *value, size_t line, size_t col,
                            const char *problem)
{
    char key[96], where[384], acc[192];
    const char *env = alias ? f->alias_env : f->env;
    bool env_is_source = a->kind == KVS_SOURCE_ENV && !line && !strcmp(a->src_name, env);
    return kvs__fail(KVS_ERR_CONFIG, "%s: %s %s %s (accepted: %s%s%s)",
                     key_text(f, alias, key, sizeof key), value,
                     where_text(a, line, col, where, sizeof where), problem,
                     accepted(f, acc, sizeof acc),
                     env_is_source ? "" : "; environment variable ",
                     env_is_source ? "" : env);
}

/* The text of a value: strings as they are, others written into buf. */
static const char *val_text(const cfg_field *f, const cfg_val *v, char *buf, size_t cap)
{
    switch (f->type) {
    case T_UINT:
        snprintf(buf, cap, "%" PRIu64, v->u);
        return buf;
    case T_GB:
    case T_FRACTION:
        return real_text(v->d, buf, cap);
    case T_BOOL:
        return v->u ? "true" : "false";
    case T_ENUM:
        for (const cfg_name *e = f->names; e->name; e++)
            if (e->value == v->u)
                return e->name;
        return "?";
    case T_MODE:
        snprintf(buf, cap, "0%03" PRIo64, v->u);
        return buf;
    case T_STRING:
    case T_PATHS:
        return v->s ? v->s : "";
    }
    return "";
}

static const char *value_text(const struct kvs_config *c, const cfg_field *f, char *buf,
                              size_t cap)
{
    cfg_val v = get_val(c, f);
    return val_text(f, &v, buf, cap);
}

/* "the default", "from x.yaml:3", "from LMCACHE_CHUNK_SIZE", "from kvs_config_set()" */
static const char *origin_text(const cfg_box *b, size_t k, char *buf, size_t cap)
{
    switch (b->pub.source[k]) {
    case KVS_SOURCE_DEFAULT: snprintf(buf, cap, "the default"); break;
    case KVS_SOURCE_API: snprintf(buf, cap, "from " API_SOURCE); break;
    default: snprintf(buf, cap, "from %s", b->origin[k] ? b->origin[k] : "?"); break;
    }
    return buf;
}

/* Parses text as f and stores it with this source. */
static kvs_status apply_text(applier *a, const cfg_field *f, bool alias, const char *text,
                             size_t len, size_t line, size_t col, bool bare)
{
    size_t k = (size_t)(f - fields);
    unsigned char by = alias ? SET_BY_ALIAS : SET_BY_NAME;
    char problem[192], q[96];
    cfg_val v = {0, 0, NULL};
    char *origin = NULL;
    kvs_status st = parse_value(f, text, len, &v, problem, sizeof problem);
    if (st == KVS_ERR_CONFIG)
        return bad_value(a, f, alias, quote(text, len, bare, q, sizeof q), line, col, problem);
    if (st)
        return st;

    if (a->set_by[k] && a->set_by[k] != by) {
        cfg_val cur = get_val(&a->box->pub, f);
        if (!val_equal(f, &cur, &v)) {
            char b1[32], b2[32], q2[96], o1[320], w2[384];
            const char *old = val_text(f, &cur, b1, sizeof b1);
            const char *now = val_text(f, &v, b2, sizeof b2);
            st = kvs__fail(KVS_ERR_CONFIG,
                           "%s and %s are the same setting, set to different values: "
                           "%s = %s (%s) and %s = %s (%s); set only one (environment "
                           "variables %s, %s)",
                           f->name, f->alias, alias ? f->name : f->alias,
                           quote(old, strlen(old), false, q, sizeof q),
                           origin_text(a->box, k, o1, sizeof o1),
                           alias ? f->alias : f->name,
                           quote(now, strlen(now), false, q2, sizeof q2),
                           where_text(a, line, col, w2, sizeof w2), f->env, f->alias_env);
            goto out;
        }
    }

    if (a->kind == KVS_SOURCE_FILE)
        origin = kvs__asprintf("%s:%zu", a->src_name, line);
    else if (a->kind == KVS_SOURCE_ENV)
        origin = kvs__strdup(a->src_name);
    if ((a->kind == KVS_SOURCE_FILE || a->kind == KVS_SOURCE_ENV) && !origin) {
        st = nomem();
        goto out;
    }
    put_val(&a->box->pub, f, &v);
    kvs__free(a->box->origin[k]);
    a->box->origin[k] = origin;
    origin = NULL;
    a->box->pub.source[k] = a->kind;
    a->set_by[k] = by;
out:
    kvs__free(v.s);
    kvs__free(origin);
    return st;
}

static const cfg_field *find_field(const char *name, size_t n, bool *alias)
{
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        if (name_is(fields[i].name, name, n)) {
            *alias = false;
            return &fields[i];
        }
        if (fields[i].alias && name_is(fields[i].alias, name, n)) {
            *alias = true;
            return &fields[i];
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* YAML and JSON                                                             */
/* ------------------------------------------------------------------------ */

/* 1-based line and column of a mark in the text as the user wrote it. */
static void mark_pos(const applier *a, yaml_mark_t m, size_t *line, size_t *col)
{
    *line = m.line + 1;
    *col = m.column + 1;
    if (!a->dedent)
        return;
    const char *p = a->orig, *end = a->orig + a->orig_len;
    for (size_t l = 0; l < m.line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    size_t k = 0;
    while (k < a->dedent && p + k < end && p[k] == ' ')
        k++;
    *col += k;
}

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    return len == 0 || name_is("~", s, len) || name_is("null", s, len) ||
           name_is("Null", s, len) || name_is("NULL", s, len);
}

/* A node for a message: a quoted scalar, or what kind of node it is. */
static const char *node_text(const yaml_node_t *n, char *buf, size_t cap)
{
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (is_null(n))
        return "an empty value";
    return quote((const char *)n->data.scalar.value, n->data.scalar.length,
                 n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE, buf, cap);
}

static kvs_status yaml_fail(const applier *a, const yaml_parser_t *p, size_t len,
                            const char *what)
{
    const char *hint = !strcmp(what, "JSON") ? " (accepted: a JSON object such as "
                                               JSON_EXAMPLE ")" : "";
    const char *problem = p->problem ? p->problem : "unknown error";
    char at[32];
    size_t line, col, cline, ccol;
    if (p->error == YAML_MEMORY_ERROR)
        return nomem();
    if (p->error == YAML_READER_ERROR)
        return kvs__fail(KVS_ERR_CONFIG, "malformed %s in %s at byte %zu: %s%s", what,
                         a->src_name, p->problem_offset, problem, hint);
    mark_pos(a, p->problem_mark, &line, &col);
    /* A one-line value ends on a line of its own for libyaml: say "end". */
    if (a->kind != KVS_SOURCE_FILE && p->problem_mark.index >= len)
        snprintf(at, sizeof at, " at its end");
    else
        snprintf(at, sizeof at, ":%zu:%zu", line, col);
    if (p->context) {
        mark_pos(a, p->context_mark, &cline, &ccol);
        return kvs__fail(KVS_ERR_CONFIG,
                         "malformed %s in %s%s: %s (%s at line %zu, column %zu)%s", what,
                         a->src_name, at, problem, p->context, cline, ccol, hint);
    }
    return kvs__fail(KVS_ERR_CONFIG, "malformed %s in %s%s: %s%s", what, a->src_name, at,
                     problem, hint);
}

/* Loads the one document of text into doc (to be deleted by the caller). */
static kvs_status yaml_load(const applier *a, const char *text, size_t len,
                            yaml_document_t *doc, const char *what)
{
    yaml_parser_t p;
    yaml_document_t next;
    kvs_status st = KVS_OK;
    if (!yaml_parser_initialize(&p))
        return nomem();
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, doc)) {
        st = yaml_fail(a, &p, len, what);
        goto out;
    }
    if (!yaml_parser_load(&p, &next)) {
        st = yaml_fail(a, &p, len, what);
        yaml_document_delete(doc);
        goto out;
    }
    if (yaml_document_get_root_node(&next))
        kvs__log(KVS_LOG_WARN, "%s holds more than one YAML document; only the first is read",
                 a->src_name);
    yaml_document_delete(&next);
out:
    yaml_parser_delete(&p);
    return st;
}

/* The key of a pair as text; warns when an earlier pair has the same key. */
static kvs_status pair_key(const applier *a, const yaml_node_t *map,
                           const yaml_node_pair_t *pair, const char *what,
                           const char **name, size_t *n)
{
    yaml_node_t *k = yaml_document_get_node(a->doc, pair->key);
    size_t line, col;
    char q[96];
    mark_pos(a, k->start_mark, &line, &col);
    if (k->type != YAML_SCALAR_NODE)
        return kvs__fail(KVS_ERR_CONFIG, "%s %s in %s:%zu:%zu is not a name (accepted: "
                         "key: value lines)", what, node_text(k, q, sizeof q),
                         a->src_name, line, col);
    *name = (const char *)k->data.scalar.value;
    *n = k->data.scalar.length;
    for (const yaml_node_pair_t *e = map->data.mapping.pairs.start; e < pair; e++) {
        yaml_node_t *ek = yaml_document_get_node(a->doc, e->key);
        if (ek->type == YAML_SCALAR_NODE && ek->data.scalar.length == *n &&
            !memcmp(ek->data.scalar.value, *name, *n)) {
            size_t eline, ecol;
            mark_pos(a, ek->start_mark, &eline, &ecol);
            kvs__log(KVS_LOG_WARN, "duplicate %s %s in %s:%zu:%zu (also at line %zu); "
                     "the last one wins", what, quote(*name, *n, false, q, sizeof q),
                     a->src_name, line, col, eline);
            break;
        }
    }
    return KVS_OK;
}

static kvs_status apply_node(applier *a, const cfg_field *f, bool alias, const yaml_node_t *v)
{
    size_t line, col;
    char q[96];
    mark_pos(a, v->start_mark, &line, &col);
    if (v->type != YAML_SCALAR_NODE)
        return bad_value(a, f, alias, node_text(v, q, sizeof q), line, col,
                         "is the wrong type: one value is needed");
    if (is_null(v))
        return bad_value(a, f, alias, "an empty value", line, col, "is not accepted");
    return apply_text(a, f, alias, (const char *)v->data.scalar.value, v->data.scalar.length,
                      line, col, v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
}

/* Remembers an unknown setting (for strict and kvs_config_unknown). */
static kvs_status note_unknown(cfg_box *b, const char *fmt, ...) KVS_PRINTF(2, 3);
static kvs_status note_unknown(cfg_box *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (b->unknown && strstr(b->unknown, line))
        return KVS_OK;
    char *all = b->unknown ? kvs__asprintf("%s; %s", b->unknown, line) : kvs__strdup(line);
    if (!all)
        return nomem();
    kvs__free(b->unknown);
    b->unknown = all;
    return KVS_OK;
}

/* A key kvstash does not read: a warning, with the nearest known key. */
static kvs_status ignore_key(const applier *a, const yaml_node_t *k, const char *name, size_t n,
                       bool in_extra)
{
    size_t line, col;
    char q[96], hint[96];
    const char *what = in_extra ? "extra_config entry" : "key";
    mark_pos(a, k->start_mark, &line, &col);
    quote(name, n, false, q, sizeof q);
    if (in_list(lmcache_unused, name, n) || in_list(lmcache_unused_extra, name, n))
        kvs__log(KVS_LOG_WARN, "%s %s in %s:%zu:%zu is an LMCache setting kvstash does not "
                 "use; ignored", what, q, a->src_name, line, col);
    else {
        const char *dym = suggest_key(name, n, in_extra, hint, sizeof hint);
        kvs__log(KVS_LOG_WARN, "unknown %s %s in %s:%zu:%zu%s; ignored", what, q,
                 a->src_name, line, col, dym);
        return note_unknown(a->box, "%s %s in %s:%zu:%zu%s", what, q, a->src_name, line,
                            col, dym);
    }
    return KVS_OK;
}

/* The entries of extra_config (a mapping, or null for none). */
static kvs_status walk_extra(applier *a, const yaml_node_t *map)
{
    kvs_status st = KVS_OK;
    memset(a->set_by, 0, sizeof a->set_by);
    if (!map || is_null(map))
        return KVS_OK;
    if (map->type != YAML_MAPPING_NODE) {
        size_t line, col;
        char q[96];
        mark_pos(a, map->start_mark, &line, &col);
        if (a->kind == KVS_SOURCE_FILE)
            return kvs__fail(KVS_ERR_CONFIG, "extra_config in %s:%zu:%zu is %s (accepted: a "
                             "mapping, with entries such as gds_io_threads: 32 indented "
                             "under extra_config:)", a->src_name, line, col,
                             node_text(map, q, sizeof q));
        return kvs__fail(KVS_ERR_CONFIG, "%s is %s (accepted: a JSON object such as "
                         JSON_EXAMPLE ")", a->src_name, node_text(map, q, sizeof q));
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *name;
        size_t n;
        bool alias;
        if ((st = pair_key(a, map, p, "extra_config entry", &name, &n)))
            return st;
        const yaml_node_t *k = yaml_document_get_node(a->doc, p->key);
        const cfg_field *f = find_field(name, n, &alias);
        if (f && (f->flags & F_EXTRA)) {
            if ((st = apply_node(a, f, alias, yaml_document_get_node(a->doc, p->value))))
                return st;
        } else if (f || name_is("extra_config", name, n)) {
            size_t line, col;
            char q[96];
            mark_pos(a, k->start_mark, &line, &col);
            kvs__log(KVS_LOG_WARN, "%s inside extra_config in %s:%zu:%zu is a top-level "
                     "key, not an extra_config entry; ignored (move it out of "
                     "extra_config)", quote(name, n, false, q, sizeof q), a->src_name,
                     line, col);
        } else if ((st = ignore_key(a, k, name, n, true))) {
            return st;
        }
    }
    return KVS_OK;
}

/* The top level of a file; *extra_out gets the (last) extra_config value. */
static kvs_status walk_top(applier *a, const yaml_node_t *map, const yaml_node_t **extra_out)
{
    kvs_status st;
    memset(a->set_by, 0, sizeof a->set_by);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *name;
        size_t n;
        bool alias;
        if ((st = pair_key(a, map, p, "key", &name, &n)))
            return st;
        const yaml_node_t *k = yaml_document_get_node(a->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(a->doc, p->value);
        if (name_is("extra_config", name, n)) {
            *extra_out = v;
            continue;
        }
        const cfg_field *f = find_field(name, n, &alias);
        if (!f) {
            if ((st = ignore_key(a, k, name, n, false)))
                return st;
            continue;
        }
        if (f->flags & F_EXTRA) {
            size_t line, col;
            mark_pos(a, k->start_mark, &line, &col);
            kvs__log(KVS_LOG_WARN, "%s at the top level of %s:%zu is read as "
                     "extra_config.%s; indent it under extra_config:",
                     alias ? f->alias : f->name, a->src_name, line,
                     alias ? f->alias : f->name);
        }
        if ((st = apply_node(a, f, alias, v)))
            return st;
    }
    return KVS_OK;
}

/* Indentation (in spaces) of the first line that is not blank or a comment. */
static size_t first_indent(const char *s, size_t n)
{
    size_t i = (n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) ? 3 : 0;
    while (i < n) {
        size_t sp = 0, j = i;
        while (j < n && s[j] == ' ')
            j++, sp++;
        while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r'))
            j++;
        if (j < n && s[j] != '\n' && s[j] != '#')
            return sp;
        const char *nl = memchr(s + j, '\n', n - j);
        if (!nl)
            break;
        i = (size_t)(nl - s) + 1;
    }
    return 0;
}

/* A copy of s with up to k leading spaces removed from every line. */
static char *dedent(const char *s, size_t n, size_t k, size_t *len_out)
{
    char *out = kvs__malloc(n + 1);
    size_t w = 0, i = 0;
    if (!out)
        return NULL;
    if (n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) {
        memcpy(out, s, 3);
        w = i = 3;
    }
    while (i < n) {
        for (size_t sp = 0; sp < k && i < n && s[i] == ' '; sp++)
            i++;
        while (i < n && s[i] != '\n')
            out[w++] = s[i++];
        if (i < n)
            out[w++] = s[i++];
    }
    out[w] = '\0';
    *len_out = w;
    return out;
}

static kvs_status read_file(const char *path, const char *via, char **text_out,
                            size_t *len_out)
{
    char named[64] = "", q[320];
    kvs_status st = KVS_OK;
    struct stat sb;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int fd;
    if (via)
        snprintf(named, sizeof named, " (named by %s)", via);
    quote(path, strlen(path), false, q, sizeof q);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvs__fail(KVS_ERR_CONFIG, "cannot read configuration file %s%s: %s", q,
                         named, strerror(errno));
    if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        st = kvs__fail(KVS_ERR_CONFIG, "cannot read configuration file %s%s: it is a "
                       "directory", q, named);
        goto out;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nb = kvs__realloc(buf, ncap);
            if (!nb) {
                st = nomem();
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = kvs__fail(KVS_ERR_CONFIG, "cannot read configuration file %s%s: %s", q,
                           named, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > CONFIG_FILE_MAX) {
            st = kvs__fail(KVS_ERR_CONFIG, "configuration file %s%s is larger than %u "
                           "bytes", q, named, CONFIG_FILE_MAX);
            goto out;
        }
    }
    buf[len] = '\0';
    *text_out = buf;
    *len_out = len;
    buf = NULL;
out:
    kvs__free(buf);
    close(fd);
    return st;
}

/* Applies the YAML text of the file named path (read already). */
static kvs_status apply_yaml_into(cfg_box *b, const char *path, const char *text, size_t len)
{
    applier a = {.box = b, .kind = KVS_SOURCE_FILE, .src_name = path};
    yaml_document_t doc;
    bool have_doc = false;
    char *flat = NULL;
    size_t flat_len = 0;
    const yaml_node_t *root, *extra = NULL;
    kvs_status st = KVS_OK;

    a.orig = text;
    a.orig_len = len;
    a.dedent = first_indent(text, len);
    if (a.dedent) {
        kvs__log(KVS_LOG_INFO, "%s: the first key is indented by %zu space%s; reading the "
                 "file with up to that many spaces removed from the start of every line "
                 "(the LMCache Weka docs print their YAML this way)", path, a.dedent,
                 a.dedent == 1 ? "" : "s");
        if (!(flat = dedent(text, len, a.dedent, &flat_len))) {
            st = nomem();
            goto out;
        }
    }
    if ((st = yaml_load(&a, flat ? flat : text, flat ? flat_len : len, &doc, "YAML")))
        goto out;
    have_doc = true;
    a.doc = &doc;
    root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root)) {
        kvs__log(KVS_LOG_INFO, "%s sets nothing", path);
        goto out;
    }
    if (root->type != YAML_MAPPING_NODE) {
        size_t line, col;
        char q[96];
        mark_pos(&a, root->start_mark, &line, &col);
        st = kvs__fail(KVS_ERR_CONFIG, "the top level of %s:%zu:%zu is %s (accepted: a "
                       "mapping of keys, one key: value per line)", path, line, col,
                       node_text(root, q, sizeof q));
        goto out;
    }
    if ((st = walk_top(&a, root, &extra)))
        goto out;
    /* After the top level, so an entry inside extra_config wins over the same
     * entry misplaced at the top level. */
    st = walk_extra(&a, extra);
out:
    if (have_doc)
        yaml_document_delete(&doc);
    kvs__free(flat);
    return st;
}

static kvs_status apply_file_into(cfg_box *b, const char *path, const char *via)
{
    char *text = NULL;
    size_t len = 0;
    kvs_status st = read_file(path, via, &text, &len);
    if (st)
        return st;
    st = apply_yaml_into(b, path, text, len);
    kvs__free(text);
    return st;
}

/* A JSON object of extra_config entries, merged entry by entry. */
static kvs_status apply_json(applier *a, const char *text)
{
    yaml_document_t doc;
    kvs_status st = yaml_load(a, text, strlen(text), &doc, "JSON");
    if (st)
        return st;
    a->doc = &doc;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root) || root->type != YAML_MAPPING_NODE) {
        char q[96];
        st = kvs__fail(KVS_ERR_CONFIG, "%s is %s (accepted: a JSON object such as "
                       JSON_EXAMPLE ")", a->src_name,
                       root ? node_text(root, q, sizeof q) : "empty");
    } else {
        st = walk_extra(a, root);
    }
    a->doc = NULL;
    yaml_document_delete(&doc);
    return st;
}

/* ------------------------------------------------------------------------ */
/* The environment                                                           */
/* ------------------------------------------------------------------------ */

static kvs_status check_experimental(void)
{
    const char *v = getenv(ENV_EXPERIMENTAL);
    char q[96];
    if (!v)
        return KVS_OK;
    int b = parse_bool(v, strlen(v));
    if (b == 1)
        return KVS_OK;
    quote(v, strlen(v), false, q, sizeof q);
    if (b == 0)
        return kvs__fail(KVS_ERR_CONFIG, ENV_EXPERIMENTAL "=%s: kvstash has only the "
                         "experimental (v1) engine, so " ENV_EXPERIMENTAL " must be True "
                         "or unset", q);
    return kvs__fail(KVS_ERR_CONFIG, ENV_EXPERIMENTAL ": %s is not a boolean (accepted: "
                     "True or unset: kvstash has only the experimental (v1) engine)", q);
}

static kvs_status apply_var(applier *a, const cfg_field *f, bool alias)
{
    const char *var = alias ? f->alias_env : f->env;
    const char *v = var ? getenv(var) : NULL;
    if (!v)
        return KVS_OK;
    a->src_name = var;
    return apply_text(a, f, alias, v, strlen(v), 0, 0, false);
}

static bool known_var(const char *name, size_t n)
{
    if (name_is(ENV_CONFIG_FILE, name, n) || name_is(ENV_EXTRA_CONFIG, name, n) ||
        name_is(ENV_EXPERIMENTAL, name, n) || name_is(ENV_LMCACHE_LOG_LEVEL, name, n))
        return true;
    for (size_t i = 0; i < sizeof kvstash_other_vars / sizeof *kvstash_other_vars; i++)
        if (name_is(kvstash_other_vars[i], name, n))
            return true;
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++)
        if (name_is(fields[i].env, name, n) ||
            (fields[i].alias_env && name_is(fields[i].alias_env, name, n)))
            return true;
    return false;
}

/* Warns about LMCACHE_* and KVSTASH_* variables no key reads, suggesting the
 * variable of the key nearest to what follows the prefix. */
static kvs_status warn_unknown_vars(cfg_box *b)
{
    kvs_status st;
    for (char **e = environ; *e; e++) {
        const char *name = *e;
        size_t n = strcspn(name, "="), ln = n - 8;
        char lower[64], hint[96];
        if ((strncmp(name, "LMCACHE_", 8) && strncmp(name, "KVSTASH_", 8)) ||
            known_var(name, n))
            continue;
        if (ln >= sizeof lower) {
            kvs__log(KVS_LOG_WARN, "unknown environment variable %.*s; ignored", (int)n, name);
            if ((st = note_unknown(b, "environment variable %.*s", (int)KVS_MIN(n, 200), name)))
                return st;
            continue;
        }
        for (size_t i = 0; i < ln; i++)
            lower[i] = (char)tolower((unsigned char)name[8 + i]);
        lower[ln] = '\0';
        if (!strncmp(name, "LMCACHE_", 8) && in_list(lmcache_unused, lower, ln)) {
            kvs__log(KVS_LOG_WARN, "%.*s is an LMCache setting kvstash does not use; "
                     "ignored", (int)n, name);
            continue;
        }
        suggestion sg = {NULL, SIZE_MAX};
        for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
            consider(&sg, lower, ln, fields[i].name, fields[i].env);
            consider(&sg, lower, ln, fields[i].alias, fields[i].alias_env);
        }
        consider(&sg, lower, ln, "extra_config", ENV_EXTRA_CONFIG);
        consider(&sg, lower, ln, "config_file", ENV_CONFIG_FILE);
        consider(&sg, lower, ln, "use_experimental", ENV_EXPERIMENTAL);
        consider(&sg, lower, ln, "log_level", ENV_LMCACHE_LOG_LEVEL);
        const char *dym = did_you_mean(&sg, ln, hint, sizeof hint);
        kvs__log(KVS_LOG_WARN, "unknown environment variable %.*s%s; ignored", (int)n, name,
                 dym);
        if ((st = note_unknown(b, "environment variable %.*s%s", (int)n, name, dym)))
            return st;
    }
    return KVS_OK;
}

static kvs_status apply_env_into(cfg_box *b)
{
    applier a = {.box = b, .kind = KVS_SOURCE_ENV};
    kvs_status st = check_experimental();
    const char *json;
    if (st)
        return st;
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        if (fields[i].flags & F_EXTRA)
            continue;
        if ((st = apply_var(&a, &fields[i], false)) || (st = apply_var(&a, &fields[i], true)))
            return st;
    }
    if ((json = getenv(ENV_LMCACHE_LOG_LEVEL))) {
        a.src_name = ENV_LMCACHE_LOG_LEVEL;
        if ((st = apply_text(&a, &fields[KVS_CFG_LOG_LEVEL], false, json, strlen(json), 0, 0,
                             false)))
            return st;
    }
    if ((json = getenv(ENV_EXTRA_CONFIG))) {
        a.src_name = ENV_EXTRA_CONFIG;
        if ((st = apply_json(&a, json)))
            return st;
    }
    memset(a.set_by, 0, sizeof a.set_by);
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        if (!(fields[i].flags & F_EXTRA))
            continue;
        if ((st = apply_var(&a, &fields[i], false)) || (st = apply_var(&a, &fields[i], true)))
            return st;
    }
    return warn_unknown_vars(b);
}

/* ------------------------------------------------------------------------ */
/* Cross-checks and store paths                                              */
/* ------------------------------------------------------------------------ */

static kvs_status check_cross(const cfg_box *b)
{
    const struct kvs_config *c = &b->pub;
    if (c->codec == KVS_CODEC_MODE_ON && c->auth_key_file && c->auth_key_file[0]) {
        char oc[320], oa[320];
        return kvs__fail(KVS_ERR_CONFIG,
                         "extra_config.codec (on, %s) cannot be used with "
                         "extra_config.auth_key_file (%s): authenticated chunks are never "
                         "compressed (docs/codec.md); set codec to auto or off "
                         "(environment variables KVSTASH_CODEC and KVSTASH_AUTH_KEY_FILE)",
                         origin_text(b, KVS_CFG_CODEC, oc, sizeof oc),
                         origin_text(b, KVS_CFG_AUTH_KEY_FILE, oa, sizeof oa));
    }
    if (c->store_low_watermark < c->store_high_watermark)
        return KVS_OK;
    char lo[32], hi[32], olo[320], ohi[320];
    return kvs__fail(KVS_ERR_CONFIG,
                     "extra_config.store_low_watermark (%s, %s) must be less than "
                     "extra_config.store_high_watermark (%s, %s); environment variables "
                     "KVSTASH_STORE_LOW_WATERMARK and KVSTASH_STORE_HIGH_WATERMARK",
                     real_text(c->store_low_watermark, lo, sizeof lo),
                     origin_text(b, KVS_CFG_STORE_LOW_WATERMARK, olo, sizeof olo),
                     real_text(c->store_high_watermark, hi, sizeof hi),
                     origin_text(b, KVS_CFG_STORE_HIGH_WATERMARK, ohi, sizeof ohi));
}

static kvs_status default_path(char **out)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *p;
    if (xdg && xdg[0] == '/') {
        p = kvs__asprintf("%s/kvstash", xdg);
    } else if (home && home[0] == '/') {
        p = kvs__asprintf("%s/.cache/kvstash", home);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            return kvs__fail(KVS_ERR_CONFIG, "weka_path is unset and there is no default "
                             "folder for the store (XDG_CACHE_HOME and HOME are unset and "
                             "the working directory is unknown: %s); set LMCACHE_WEKA_PATH",
                             strerror(errno));
        p = kvs__asprintf("%s/kvstash-cache", cwd);
    }
    if (!p)
        return nomem();
    path_normalize(p);
    *out = p;
    return KVS_OK;
}

char *kvs__config_default_path(void)
{
    char *p = NULL;
    return default_path(&p) ? NULL : p;
}

/* weka_path (or the default folder) into store_paths; "where" names its origin. */
static kvs_status resolve_paths(struct kvs_config *c, const char *where)
{
    const cfg_field *f = &fields[KVS_CFG_WEKA_PATH];
    char *elems[KVS_MAX_STORE_PATHS], *def = NULL, problem[192], q[96], acc[192];
    unsigned n = 0;
    const char *text = c->weka_path;
    kvs_status st;
    if (!text) {
        if ((st = default_path(&def)))
            return st;
        text = def;
    }
    st = split_paths(text, strlen(text), elems, &n, problem, sizeof problem);
    if (st == KVS_ERR_CONFIG)
        st = kvs__fail(KVS_ERR_CONFIG, "weka_path: %s %s %s (accepted: %s; environment "
                       "variable %s)", quote(text, strlen(text), false, q, sizeof q),
                       where, problem, accepted(f, acc, sizeof acc), f->env);
    if (st)
        goto out;
    for (unsigned i = 0; i < n; i++) {
        if (elems[i][0] != '~')
            continue;
        const char *home = getenv("HOME");
        if (!home || home[0] != '/') {
            st = kvs__fail(KVS_ERR_CONFIG, "weka_path: %s %s starts with ~ but HOME is "
                           "not set to an absolute path (accepted: %s; environment "
                           "variable %s)", quote(text, strlen(text), false, q, sizeof q),
                           where, accepted(f, acc, sizeof acc), f->env);
            goto out;
        }
        char *full = kvs__asprintf("%s/%s", home, elems[i] + 1);
        if (!full) {
            st = nomem();
            goto out;
        }
        path_normalize(full);
        kvs__free(elems[i]);
        elems[i] = full;
        for (unsigned j = 0; j < n; j++) {
            if (j != i && !strcmp(elems[j], full)) {
                st = kvs__fail(KVS_ERR_CONFIG, "weka_path: %s %s lists %s twice once ~ is "
                               "expanded (environment variable %s)",
                               quote(text, strlen(text), false, q, sizeof q), where, full,
                               f->env);
                goto out;
            }
        }
    }
    for (unsigned i = 0; i < KVS_MAX_STORE_PATHS; i++) {
        kvs__free(c->store_paths[i]);
        c->store_paths[i] = i < n ? elems[i] : NULL;
    }
    c->num_store_paths = n;
    n = 0;
out:
    free_paths(elems, n);
    kvs__free(def);
    return st;
}

const char *kvs_config_unknown(const kvs_config *cfg)
{
    return cfg ? box_of(cfg)->unknown : NULL;
}

kvs_status kvs__config_resolve_paths(kvs_config *cfg)
{
    if (!cfg)
        return kvs__fail(KVS_ERR_INVALID, "kvs__config_resolve_paths: cfg is NULL");
    return resolve_paths(cfg, cfg->weka_path ? "(set directly)" : "(unset)");
}

/* What every loader does last, on its scratch copy. */
static kvs_status finish(cfg_box *b)
{
    char where[320];
    kvs_status st = check_cross(b);
    if (st)
        return st;
    if (b->pub.strict && b->unknown) {
        char o[320];
        return kvs__fail(KVS_ERR_CONFIG, "unknown settings: %s; strict is on (%s), so they "
                         "are errors: fix or remove them, or turn strict off (environment "
                         "variable KVSTASH_STRICT)", b->unknown,
                         origin_text(b, KVS_CFG_STRICT, o, sizeof o));
    }
    if (b->pub.weka_path)
        origin_text(b, KVS_CFG_WEKA_PATH, where, sizeof where);
    else
        snprintf(where, sizeof where, "(the default folder)");
    return resolve_paths(&b->pub, where);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */
/* ------------------------------------------------------------------------ */

/* A box holding the defaults, store paths not yet resolved. */
static kvs_status box_new(cfg_box **out)
{
    cfg_box *b = kvs__calloc(1, sizeof *b);
    applier a = {.box = b, .kind = KVS_SOURCE_DEFAULT, .src_name = "defaults"};
    if (!b)
        return nomem();
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        const cfg_field *f = &fields[i];
        assert(f->name && f->env);
        if (!f->def)
            continue;
        kvs_status st = apply_text(&a, f, false, f->def, strlen(f->def), 0, 0, false);
        if (st) {
            box_free(b);
            return st == KVS_ERR_NOMEM ? st : KVS_ERR_INTERNAL;
        }
    }
    *out = b;
    return KVS_OK;
}

kvs_status kvs_config_new(kvs_config **cfg_out)
{
    cfg_box *b = NULL;
    kvs_status st;
    if (!cfg_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_new: cfg_out is NULL");
    if ((st = box_new(&b)))
        return st;
    if ((st = finish(b))) {
        box_free(b);
        return st;
    }
    *cfg_out = &b->pub;
    return KVS_OK;
}

kvs_status kvs_config_load(kvs_config **cfg_out)
{
    cfg_box *b = NULL;
    const char *file = getenv(ENV_CONFIG_FILE);
    kvs_status st;
    if (!cfg_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_load: cfg_out is NULL");
    /* checked again by apply_env_into, but first: before any file is read */
    if ((st = check_experimental()) || (st = box_new(&b)))
        return st;
    if (file && *file && (st = apply_file_into(b, file, ENV_CONFIG_FILE)))
        goto fail;
    if ((st = apply_env_into(b)) || (st = finish(b)))
        goto fail;
    *cfg_out = &b->pub;
    return KVS_OK;
fail:
    box_free(b);
    return st;
}

/* Finishes scratch and swaps it into cfg, or drops it. */
static kvs_status commit(kvs_config *cfg, cfg_box *scratch, kvs_status st)
{
    if (!st)
        st = finish(scratch);
    if (st) {
        box_free(scratch);
        return st;
    }
    box_commit(box_of(cfg), scratch);
    return KVS_OK;
}

kvs_status kvs_config_apply_file(kvs_config *cfg, const char *path)
{
    cfg_box *s;
    kvs_status st;
    if (!cfg || !path)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_apply_file: cfg or path is NULL");
    if ((st = box_copy(box_of(cfg), &s)))
        return st;
    return commit(cfg, s, apply_file_into(s, path, NULL));
}

kvs_status kvs__config_apply_yaml(kvs_config *cfg, const char *name, const char *text,
                                  size_t len)
{
    cfg_box *s;
    kvs_status st;
    if (!cfg || !name || (!text && len))
        return kvs__fail(KVS_ERR_INVALID, "kvs__config_apply_yaml: NULL argument");
    if (len > CONFIG_FILE_MAX)
        return kvs__fail(KVS_ERR_CONFIG, "configuration file %s is larger than %u bytes", name,
                         CONFIG_FILE_MAX);
    /* The parser wants the text NUL-terminated, as read_file leaves it. */
    char *copy = kvs__malloc(len + 1);
    if (!copy)
        return nomem();
    if (len)
        memcpy(copy, text, len);
    copy[len] = '\0';
    if ((st = box_copy(box_of(cfg), &s))) {
        kvs__free(copy);
        return st;
    }
    st = commit(cfg, s, apply_yaml_into(s, name, copy, len));
    kvs__free(copy);
    return st;
}

kvs_status kvs_config_apply_env(kvs_config *cfg)
{
    cfg_box *s;
    kvs_status st;
    if (!cfg)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_apply_env: cfg is NULL");
    if ((st = box_copy(box_of(cfg), &s)))
        return st;
    return commit(cfg, s, apply_env_into(s));
}

/* key: a name or alias, "extra_config.<entry>", or "extra_config" (JSON). */
static const cfg_field *lookup_key(const char *key, bool *alias)
{
    bool extra = !strncmp(key, "extra_config.", 13);
    const char *name = extra ? key + 13 : key;
    const cfg_field *f = find_field(name, strlen(name), alias);
    return f && (!extra || (f->flags & F_EXTRA)) ? f : NULL;
}

static kvs_status unknown_key(const char *key)
{
    char q[96], hint[96];
    const char *name = strncmp(key, "extra_config.", 13) ? key : key + 13;
    return kvs__fail(KVS_ERR_NOT_FOUND, "unknown configuration key %s%s",
                     quote(key, strlen(key), false, q, sizeof q),
                     suggest_key(name, strlen(name), name != key, hint, sizeof hint));
}

kvs_status kvs_config_set(kvs_config *cfg, const char *key, const char *value)
{
    applier a = {.kind = KVS_SOURCE_API, .src_name = API_SOURCE};
    const cfg_field *f;
    bool alias;
    kvs_status st;
    if (!cfg || !key || !value)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_set: cfg, key or value is NULL");
    f = lookup_key(key, &alias);
    if (!f && strcmp(key, "extra_config")) {
        const char *name = strncmp(key, "extra_config.", 13) ? key : key + 13;
        if (!in_list(lmcache_unused, name, strlen(name)) &&
            !in_list(lmcache_unused_extra, name, strlen(name)))
            return unknown_key(key);
        kvs__log(KVS_LOG_WARN, "%s is an LMCache setting kvstash does not use; ignored", key);
        return KVS_OK;
    }
    if ((st = box_copy(box_of(cfg), &a.box)))
        return st;
    if (f)
        st = apply_text(&a, f, alias, value, strlen(value), 0, 0, false);
    else
        st = apply_json(&a, value);
    return commit(cfg, a.box, st);
}

/* The one place a setting's unit is turned into the library's units: the
 * table's unit names the scale. */
uint64_t kvs__config_canon(const kvs_config *cfg, kvs_config_key key)
{
    static const struct {
        const char *unit;
        uint64_t scale;
    } scales[] = {
        {"ms", 1000000u}, {"seconds", 1000000000u}, {"MiB", 1u << 20}, {"KiB", 1u << 10},
    };
    const cfg_field *f = &fields[key];
    cfg_val v = get_val(cfg, f);
    if (f->type == T_GB)
        return (uint64_t)(v.d * 1e9);
    for (size_t i = 0; f->unit && i < KVS_ARRAY_LEN(scales); i++)
        if (!strcmp(f->unit, scales[i].unit))
            return v.u * scales[i].scale;
    return v.u;
}

kvs_status kvs_config_get(const kvs_config *cfg, const char *key, char **value_out,
                          kvs_config_source *source_out)
{
    const cfg_field *f;
    bool alias;
    char buf[64], *text;
    if (!cfg || !key || !value_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_get: cfg, key or value_out is NULL");
    if (!strcmp(key, "extra_config"))
        return kvs__fail(KVS_ERR_NOT_FOUND, "extra_config is a mapping, not one value; ask "
                         "for its entries by name (gds_io_threads, ...)");
    if (!(f = lookup_key(key, &alias)))
        return unknown_key(key);
    if (!(text = kvs__strdup(value_text(cfg, f, buf, sizeof buf))))
        return nomem();
    *value_out = text;
    if (source_out)
        *source_out = cfg->source[f - fields];
    return KVS_OK;
}

static const char *source_name(kvs_config_source s)
{
    switch (s) {
    case KVS_SOURCE_DEFAULT: return "default";
    case KVS_SOURCE_FILE: return "file";
    case KVS_SOURCE_ENV: return "env";
    case KVS_SOURCE_API: return "api";
    }
    return "?";
}

kvs_status kvs_config_to_json(const kvs_config *cfg, char **json_out)
{
    kvs_buf b = {0};
    char buf[64];
    if (!cfg || !json_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_to_json: cfg or json_out is NULL");
    kvs_buf_printf(&b, "{\n");
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        const cfg_field *f = &fields[i];
        cfg_val v = get_val(cfg, f);
        kvs_buf_printf(&b, "  \"%s\": {\"value\": ", f->name);
        if (f->type == T_UINT || f->type == T_GB || f->type == T_FRACTION ||
            f->type == T_BOOL)
            kvs_buf_printf(&b, "%s", value_text(cfg, f, buf, sizeof buf));
        else if (is_text(f) && !v.s)
            kvs_buf_printf(&b, "null");
        else
            kvs_buf_json_string(&b, value_text(cfg, f, buf, sizeof buf));
        kvs_buf_printf(&b, ", \"source\": \"%s\"}%s\n", source_name(cfg->source[i]),
                       i + 1 < KVS_CFG_NKEYS ? "," : "");
    }
    kvs_buf_printf(&b, "}\n");
    return kvs_buf_finish(&b, json_out);
}

kvs_status kvs_config_to_text(const kvs_config *cfg, char **text_out)
{
    kvs_buf b = {0};
    char buf[64];
    int kw = 0, vw = 0;
    if (!cfg || !text_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_to_text: cfg or text_out is NULL");
    const cfg_box *box = box_of(cfg);
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        kw = KVS_MAX(kw, (int)strlen(fields[i].name));
        vw = KVS_MAX(vw, (int)strlen(value_text(cfg, &fields[i], buf, sizeof buf)));
    }
    vw = KVS_MIN(vw, 32);
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        const cfg_field *f = &fields[i];
        const char *v = value_text(cfg, f, buf, sizeof buf);
        kvs_buf_printf(&b, "%-*s  %-*s  (%s", kw, f->name, vw, *v ? v : "-",
                       source_name(cfg->source[i]));
        if ((cfg->source[i] == KVS_SOURCE_FILE || cfg->source[i] == KVS_SOURCE_ENV) &&
            box->origin[i])
            kvs_buf_printf(&b, ", from %s", box->origin[i]);
        kvs_buf_printf(&b, ")\n");
    }
    kvs_buf_printf(&b, "%-*s  ", kw, "store paths");
    for (unsigned i = 0; i < cfg->num_store_paths; i++)
        kvs_buf_printf(&b, "%s%s", i ? "," : "", cfg->store_paths[i]);
    kvs_buf_printf(&b, "  (%s)\n", cfg->weka_path ? "from weka_path" : "the default folder");
    return kvs_buf_finish(&b, text_out);
}

static const char *type_text(const cfg_field *f, char *buf, size_t cap)
{
    switch (f->type) {
    case T_UINT:
        if (f->unit && !strcmp(f->unit, "MiB"))
            snprintf(buf, cap, "size (bare number: MiB)");
        else if (f->unit && (!strcmp(f->unit, "seconds") || !strcmp(f->unit, "ms")))
            snprintf(buf, cap, "age (bare number: %s)", f->unit);
        else
            snprintf(buf, cap, "integer (%s)", f->unit);
        break;
    case T_GB: snprintf(buf, cap, "size (bare number: GB, 10^9 bytes)"); break;
    case T_FRACTION: snprintf(buf, cap, "fraction"); break;
    case T_BOOL: snprintf(buf, cap, "boolean"); break;
    case T_ENUM: snprintf(buf, cap, "name"); break;
    case T_MODE: snprintf(buf, cap, "octal mode"); break;
    case T_STRING: snprintf(buf, cap, "text"); break;
    case T_PATHS: snprintf(buf, cap, "path list"); break;
    }
    return buf;
}

static void md_rows(kvs_buf *b, bool extra)
{
    char acc[192], type[48];
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        const cfg_field *f = &fields[i];
        if (!!(f->flags & F_EXTRA) != extra)
            continue;
        kvs_buf_printf(b, "| `%s` | `%s` | %s | ", f->name, f->env,
                       type_text(f, type, sizeof type));
        if (!f->def)
            kvs_buf_printf(b, "unset");
        else if (!*f->def)
            kvs_buf_printf(b, "empty");
        else
            kvs_buf_printf(b, "`%s`", f->def);
        kvs_buf_printf(b, " | %s | %s |\n", accepted(f, acc, sizeof acc), f->doc);
    }
}

static void md_list(kvs_buf *b, const char *const *list)
{
    for (const char *const *p = list; *p; p++)
        kvs_buf_printf(b, "%s`%s`", p == list ? "" : ", ", *p);
    kvs_buf_printf(b, ".\n");
}

kvs_status kvs_config_reference_markdown(char **markdown_out)
{
    kvs_buf b = {0};
    if (!markdown_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_reference_markdown: markdown_out is NULL");
    kvs_buf_printf(&b,
        "# Configuration reference\n"
        "\n"
        "<!-- Generated from the table in src/config.c by kvs_config_reference_markdown()\n"
        "     (`kvstash config --markdown`); tests/unit/test_config.c fails when this file\n"
        "     differs. Edit the table, not this file. -->\n"
        "\n"
        "kvstash reads the configuration of LMCache's WekaFS backend: the same keys, the same\n"
        "`LMCACHE_*` environment variables and the same YAML file, so a deployment written\n"
        "for LMCache works unchanged. `kvstash config` prints the effective value of every key\n"
        "and where it came from.\n"
        "\n"
        "## Sources and precedence\n"
        "\n"
        "Lowest first; each source overrides the ones before it, key by key:\n"
        "\n"
        "1. the defaults below;\n"
        "2. the YAML file named by `" ENV_CONFIG_FILE "` (unset or empty: no file; a missing\n"
        "   or unreadable file is an error);\n"
        "3. the environment: `LMCACHE_<KEY>` for top-level keys, then `" ENV_EXTRA_CONFIG "`\n"
        "   (a JSON object) for `extra_config` entries, then `KVSTASH_<ENTRY>` for single\n"
        "   entries;\n"
        "4. `kvs_config_set()` calls (source `api`).\n"
        "\n"
        "`extra_config` merges entry by entry: an entry in `" ENV_EXTRA_CONFIG "` overrides the\n"
        "same entry from the file and leaves the file's other entries in place. LMCache\n"
        "replaces the whole dictionary instead; kvstash knows every entry, so it merges.\n"
        "\n"
        "`" ENV_EXPERIMENTAL "` is accepted unset or true. kvstash has only the experimental\n"
        "(v1) engine, so a false value (`False`, `0`, `no`, `off`) is an error, and so is\n"
        "anything else.\n"
        "\n"
        "## Values\n"
        "\n"
        "- Booleans: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case (`False`\n"
        "  works).\n"
        "- Numbers are decimal. Trailing text, empty values, signs on integers, fractions for\n"
        "  integers, `inf` and `nan` are rejected.\n"
        "- Sizes and ages (the keys whose type says size or age) take a unit, the same\n"
        "  grammar as the CLI's `gc --to-size` and `--older-than`; see below.\n"
        "- In YAML and JSON a value may be plain or quoted (`8192` and `\"8192\"` are the same)\n"
        "  but must be one value of the key's type: a list, a mapping, an empty value, `true`\n"
        "  or `32.5` for an integer are errors. `" ENV_EXTRA_CONFIG "` is read by the same\n"
        "  YAML parser, so `{gds_io_threads: 32}` works as well as JSON.\n"
        "- `weka_path` is one directory or a comma-separated list of up to 16. Spaces around\n"
        "  commas, a `file://` prefix and trailing slashes are dropped; `~/` is expanded with\n"
        "  `$HOME`; `.` and `..` are resolved in the text (the filesystem is not consulted);\n"
        "  relative paths, empty elements and a path listed twice are rejected.\n"
        "- `file_mode` is octal with or without the leading zero (`0644`, `644`, `0o644`); a\n"
        "  YAML number `644` is read as octal digits too.\n"
        "\n"
        "## Sizes and ages\n"
        "\n"
        "One grammar serves the configuration and the CLI (`kvstash gc --to-size`,\n"
        "`--older-than`, `--wait`); programs get it from `kvs_parse_size()` and\n"
        "`kvs_parse_age()` (kvstash.h):\n"
        "\n"
        "    quantity = number [blanks] [unit]\n"
        "    number   = digits [\".\" digits] [(\"e\" | \"E\") [\"+\" | \"-\"] digits]   (also \".5\", \"5.\")\n"
        "\n"
        "- Size units, in any case: `B`; `kB`, `MB`, `GB`, `TB`, `PB` and `K`, `M`, `G`,\n"
        "  `T`, `P` (powers of 1000); `KiB`, `MiB`, `GiB`, `TiB`, `PiB` (powers of 1024).\n"
        "- Age units, in any case: `ms`, `s` (`sec`), `m` (`min`), `h`, `d`, `w`.\n"
        "- A bare number is in the key's unit: GB for `max_store_size` and its peers, MiB\n"
        "  for `cufile_buffer_size`, seconds for the `*_s` keys, ms for the `*_ms` keys. In\n"
        "  the CLI a bare size is GB and a bare age seconds.\n"
        "- The arithmetic is exact (`0.1` GB is 100000000 bytes). A key in whole units\n"
        "  (MiB, seconds, ms) rejects a value that is not a whole number of them (`1.5s`\n"
        "  for a `*_s` key); a GB key keeps whole bytes.\n"
        "- Signs, `inf`, `nan`, hexadecimal and unknown units are rejected; so is a value\n"
        "  beyond the key's range.\n"
        "\n"
        "Examples: `max_store_size: 2TiB`, `KVSTASH_MIN_FREE_SPACE=500MB`,\n"
        "`collect_interval_s: 5m`, `kvstash gc --to-size 800GB --older-than 7d`.\n"
        "\n"
        "## Errors and warnings\n"
        "\n"
        "A rejected value stops loading with `KVS_ERR_CONFIG` and one message naming the key,\n"
        "the value, where it came from (file:line:column, or the variable), what is accepted\n"
        "and the key's environment variable:\n"
        "\n"
        "    chunk_size: \"abc\" from LMCACHE_CHUNK_SIZE is not a positive integer (accepted: 1..1048576 tokens)\n"
        "\n"
        "A key and its alias set to different values in the same source is an error, and so\n"
        "is `store_low_watermark` not below `store_high_watermark`. Unknown keys and unknown\n"
        "`LMCACHE_*`/`KVSTASH_*` variables are warnings naming the nearest known key; the\n"
        "LMCache settings kvstash does not use (listed at the end) are warnings too. A key\n"
        "given twice in one mapping is a warning, and the last one wins. With `strict` on\n"
        "(`KVSTASH_STRICT=1`, `kvstash --strict`, `kvstash.strict` in the vLLM connector)\n"
        "unknown keys and variables are errors instead, and the vLLM connector refuses a\n"
        "configuration that names no store path while other `LMCACHE_*` settings are set\n"
        "(docs/operator.md).\n"
        "\n"
        "## The example of the LMCache Weka docs\n"
        "\n"
        "The Weka page of the LMCache docs prints its YAML indented by one space, with the\n"
        "entry under `extra_config:` pushed to column 0:\n"
        "\n"
        "```yaml\n"
        " chunk_size: 256\n"
        " local_cpu: false\n"
        " weka_path: \"/mnt/weka/cache\"\n"
        " cufile_buffer_size: 8192\n"
        " extra_config:\n"
        "gds_io_threads: 32\n"
        "```\n"
        "\n"
        "kvstash reads that text as meant. When the first key of a file is indented by k\n"
        "spaces, up to k leading spaces are removed from every line (logged at info level).\n"
        "An `extra_config` entry found at the top level, here `gds_io_threads`, is then read\n"
        "as that entry, with a warning; the same entry inside `extra_config` wins over it.\n"
        "\n"
        "## Top-level keys\n"
        "\n"
        "| key | environment variable | type | default | accepted | description |\n"
        "|---|---|---|---|---|---|\n");
    md_rows(&b, false);
    kvs_buf_printf(&b,
        "| `extra_config` | `" ENV_EXTRA_CONFIG "` | mapping (a JSON object in the "
        "environment) | empty | the entries below | Settings beyond LMCache's top-level "
        "keys; unknown entries are warned about and ignored. |\n"
        "\n"
        "## extra_config entries\n"
        "\n"
        "Set them under `extra_config:` in the file, in `" ENV_EXTRA_CONFIG "`, or one at a\n"
        "time with their own variable.\n"
        "\n"
        "| entry | environment variable | type | default | accepted | description |\n"
        "|---|---|---|---|---|---|\n");
    md_rows(&b, true);
    kvs_buf_printf(&b,
        "\n"
        "## Aliases\n"
        "\n"
        "Later LMCache names, accepted wherever the key is:\n"
        "\n"
        "| alias | environment variable | same as |\n"
        "|---|---|---|\n");
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++)
        if (fields[i].alias)
            kvs_buf_printf(&b, "| `%s` | `%s` | `%s%s` |\n", fields[i].alias,
                           fields[i].alias_env,
                           (fields[i].flags & F_EXTRA) ? "extra_config." : "", fields[i].name);
    kvs_buf_printf(&b,
        "\n"
        "## LMCache settings kvstash does not use\n"
        "\n"
        "Accepted and ignored with a warning. Top-level keys (and their `LMCACHE_*`\n"
        "variables): ");
    md_list(&b, lmcache_unused);
    kvs_buf_printf(&b, "\n`extra_config` entries: ");
    md_list(&b, lmcache_unused_extra);
    return kvs_buf_finish(&b, markdown_out);
}

kvs_status kvs_config_copy(const kvs_config *cfg, kvs_config **copy_out)
{
    cfg_box *b;
    kvs_status st;
    if (!cfg || !copy_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_config_copy: cfg or copy_out is NULL");
    if ((st = box_copy(box_of(cfg), &b)))
        return st;
    *copy_out = &b->pub;
    return KVS_OK;
}

void kvs_config_free(kvs_config *cfg)
{
    if (cfg)
        box_free(box_of(cfg));
}
