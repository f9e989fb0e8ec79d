/*
 * kvstash.h - the one public header of libkvstash.
 *
 * kvstash stores the KV cache of LLM inference engines as immutable,
 * content-addressed chunk files on a filesystem mount (WekaFS first, any
 * POSIX filesystem works) and loads it back, so that a prompt prefix computed
 * once by any instance sharing the mount is loaded instead of recomputed.
 *
 * The objects, in the order a program meets them:
 *
 *   kvs_config    the configuration: defaults, then the YAML file named by
 *                 LMCACHE_CONFIG_FILE, then the environment (LMCACHE_*).
 *   kvs_namespace what must never mix: model, KV dtype and geometry, layout,
 *                 tensor-parallel rank, chunk size, format version and salt.
 *   kvs_engine    one namespace on one store; lookup, store, retrieve, stats.
 *   kvs_kv        a description of KV memory the engine reads or writes: one
 *                 pointer per layer, a slot mapping, strides; host or CUDA.
 *   kvs_op        an asynchronous store or retrieve to wait on.
 *
 * Conventions (every function follows them unless its comment says so):
 *   - A function that can fail returns kvs_status; KVS_OK is 0.  On failure
 *     kvs_last_error() gives a message naming what failed, where and why, and
 *     out-parameters are left untouched.  Out-parameters come last and are
 *     named *_out.
 *   - Every *_free / *_close accepts NULL and does nothing.
 *   - The library never aborts or exits the host process and never reports
 *     KV as loaded unless every byte arrived and its checksum verified.  A
 *     failure inside the cache (I/O error, corrupt or foreign file, timeout,
 *     full disk) is a miss or a skipped store for that chunk, counted in the
 *     stats; the caller recomputes.
 *   - Strings returned as `const char *` belong to the library and live as
 *     long as the object they came from.  Strings and buffers returned through
 *     `char **` belong to the caller, who releases them with kvs_free().
 *   - Engines and configurations may be used from any thread.  An engine's
 *     calls are safe to make concurrently, except kvs_engine_close(), which
 *     must not overlap any other call on that engine.
 */
#ifndef KVSTASH_H
#define KVSTASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KVS_BUILDING_LIBRARY) && defined(__GNUC__)
#define KVS_API __attribute__((visibility("default")))
#else
#define KVS_API
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                  */
/* ------------------------------------------------------------------------ */

#define KVS_VERSION_MAJOR 0
#define KVS_VERSION_MINOR 2
#define KVS_VERSION_PATCH 0
#define KVS_VERSION_NUMBER \
    (KVS_VERSION_MAJOR * 10000 + KVS_VERSION_MINOR * 100 + KVS_VERSION_PATCH)

/* Version of the chunk file format this library writes and reads.  It is part
 * of every namespace, so files of another format version are never read. */
#define KVS_FORMAT_VERSION 1

/* KVS_VERSION_NUMBER of the library actually linked. */
KVS_API unsigned kvs_version_number(void);
/* "0.2.0"; static storage. */
KVS_API const char *kvs_version_string(void);

/* The optional parts this build of the library contains: bits of
 * kvs_build_features(). */
#define KVS_BUILD_CUDA 0x1u   /* CUDA kernels: KV in GPU memory (KVS_MEM_CUDA) */
#define KVS_BUILD_CUFILE 0x2u /* the cuFile (GPUDirect Storage) data path; libcufile
                                 itself is loaded at run time where installed */
KVS_API unsigned kvs_build_features(void);
/* The git commit the library was built from: 12 hex digits, with "-dirty"
 * when tracked files differed from it; "unknown" when built outside a git
 * checkout.  Static storage. */
KVS_API const char *kvs_build_commit(void);


/* ------------------------------------------------------------------------ */
/* Status and errors                                                         */
/* ------------------------------------------------------------------------ */

typedef enum kvs_status {
    KVS_OK = 0,
    KVS_ERR_INVALID,     /* an argument breaks this header's contract */
    KVS_ERR_CONFIG,      /* a configuration value or file was rejected */
    KVS_ERR_NOMEM,       /* an allocation failed */
    KVS_ERR_IO,          /* the filesystem failed an operation */
    KVS_ERR_NOT_FOUND,   /* a path, key or namespace does not exist */
    KVS_ERR_CORRUPT,     /* stored data failed validation */
    KVS_ERR_TIMEOUT,     /* a deadline passed */
    KVS_ERR_BUSY,        /* a bounded queue is full; nothing was done */
    KVS_ERR_NOSPACE,     /* the store or its filesystem is full */
    KVS_ERR_UNSUPPORTED, /* not available in this build or environment */
    KVS_ERR_CUDA,        /* the CUDA runtime failed */
    KVS_ERR_CUFILE,      /* cuFile failed (its code is in the message) */
    KVS_ERR_PERM,        /* permission denied */
    KVS_ERR_INTERNAL,    /* a bug in kvstash; please report it */
} kvs_status;

/* A short fixed text for a status ("I/O error"); static storage. */
KVS_API const char *kvs_strerror(kvs_status status);

/* The message of the last failure of a kvstash call in this thread (""
 * if none).  Valid until the next kvstash call in this thread. */
KVS_API const char *kvs_last_error(void);

/*
 * Sizes and ages, as the configuration and the kvstash CLI read them (one
 * grammar, docs/config.md "Sizes and ages"): a decimal number (a fraction
 * and an exponent allowed), optional blanks, and an optional unit in any
 * case.
 *
 * kvs_parse_size: B; kB, MB, GB, TB, PB (also K, M, G, T, P: powers of
 * 1000); KiB, MiB, GiB, TiB, PiB (powers of 1024).  A bare number is GB.
 * Fractions of a byte are dropped.
 *
 * kvs_parse_age: ms, s (sec), m (min), h, d, w.  A bare number is seconds.
 * The result must be a whole number of seconds.
 *
 * Negative, non-numeric, too large: KVS_ERR_INVALID, with kvs_last_error()
 * naming the text and what is accepted.
 */
KVS_API kvs_status kvs_parse_size(const char *text, uint64_t *bytes_out);
KVS_API kvs_status kvs_parse_age(const char *text, uint64_t *seconds_out);

/* Releases a string or buffer the library returned through a `char **`. */
KVS_API void kvs_free(void *ptr);

/* ------------------------------------------------------------------------ */
/* Logging                                                                   */
/* ------------------------------------------------------------------------ */

typedef enum kvs_log_level {
    KVS_LOG_ERROR = 0,
    KVS_LOG_WARN = 1,
    KVS_LOG_INFO = 2,
    KVS_LOG_DEBUG = 3,
} kvs_log_level;

/* Receives each log line (no trailing newline).  Called from any thread,
 * possibly concurrently; it must not call back into kvstash. */
typedef void (*kvs_log_fn)(void *ctx, kvs_log_level level, const char *msg);

/* Process-wide: routes log lines to fn (NULL: standard error, the default,
 * as "kvstash <level> <UTC ISO 8601 time>: <line>")
 * and drops lines above max_level (default KVS_LOG_INFO, or the level set by
 * the log_level configuration key when an engine opens). */
KVS_API void kvs_set_log_handler(kvs_log_fn fn, void *ctx);
KVS_API void kvs_set_log_level(kvs_log_level max_level);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

/*
 * Every key, its environment variable, type, unit, default and bounds are in
 * docs/config.md, generated from the same table the parser uses
 * (`kvstash config --markdown`).  Precedence, lowest first:
 *
 *   1. defaults;
 *   2. the YAML file named by LMCACHE_CONFIG_FILE;
 *   3. the environment: LMCACHE_<KEY> for top-level keys,
 *      LMCACHE_EXTRA_CONFIG (a JSON object) for extra_config entries, then
 *      KVSTASH_<ENTRY> for single extra_config entries;
 *   4. kvs_config_set() calls.
 *
 * Aliases from later LMCache releases are accepted (gds_path for weka_path,
 * gds_buffer_size for cufile_buffer_size, disk_io_threads for
 * gds_io_threads).  Unknown keys are warned about, naming the nearest known
 * key.  A bad value is rejected with a message naming the key, its
 * environment variable, its source, the value and what is accepted.
 */
typedef struct kvs_config kvs_config;

typedef enum kvs_config_source {
    KVS_SOURCE_DEFAULT = 0,
    KVS_SOURCE_FILE = 1,
    KVS_SOURCE_ENV = 2,
    KVS_SOURCE_API = 3,
} kvs_config_source;

/* A configuration holding the defaults only. */
KVS_API kvs_status kvs_config_new(kvs_config **cfg_out);

/* Defaults, then LMCACHE_CONFIG_FILE if set, then the environment; checks
 * LMCACHE_USE_EXPERIMENTAL.  This is what engines and the CLI use. */
KVS_API kvs_status kvs_config_load(kvs_config **cfg_out);

/* Applies one YAML file on top of cfg (as if named by LMCACHE_CONFIG_FILE). */
KVS_API kvs_status kvs_config_apply_file(kvs_config *cfg, const char *path);

/* Applies the process environment on top of cfg. */
KVS_API kvs_status kvs_config_apply_env(kvs_config *cfg);

/* Sets one key (or extra_config entry, by its own name) from its text form,
 * as an environment variable would give it; the source becomes "api". */
KVS_API kvs_status kvs_config_set(kvs_config *cfg, const char *key,
                                  const char *value);

/* The effective value of key as text, and where it came from.  *value_out
 * is owned by the caller (kvs_free).  KVS_ERR_NOT_FOUND for unknown keys. */
KVS_API kvs_status kvs_config_get(const kvs_config *cfg, const char *key,
                                  char **value_out,
                                  kvs_config_source *source_out);

/* One JSON object with a member per key (extra_config entries under their
 * own names), each {"value": ..., "source": "default"|"file"|"env"|"api"}. */
KVS_API kvs_status kvs_config_to_json(const kvs_config *cfg, char **json_out);

/* Human-readable forms: one line per key with value and source, or the
 * Markdown reference page (docs/config.md). */
KVS_API kvs_status kvs_config_to_text(const kvs_config *cfg, char **text_out);
KVS_API kvs_status kvs_config_reference_markdown(char **markdown_out);

/* The unknown settings the loaders met and warned about (keys and
 * extra_config entries of files, LMCACHE_* and KVSTASH_* variables), each
 * with the nearest known name where one is close, separated by "; "; NULL
 * when there were none.  Owned by cfg: valid until cfg is changed or freed.
 * With the key strict on, any of them makes the load fail instead. */
KVS_API const char *kvs_config_unknown(const kvs_config *cfg);

KVS_API kvs_status kvs_config_copy(const kvs_config *cfg,
                                   kvs_config **copy_out);
KVS_API void kvs_config_free(kvs_config *cfg);

/* ------------------------------------------------------------------------ */
/* Namespaces and keys                                                       */
/* ------------------------------------------------------------------------ */

typedef enum kvs_dtype {
    KVS_DTYPE_INVALID = 0,
    KVS_DTYPE_FP8_E4M3 = 1, /* 1 byte */
    KVS_DTYPE_FP8_E5M2 = 2, /* 1 byte */
    KVS_DTYPE_FP16 = 3,     /* 2 bytes */
    KVS_DTYPE_BF16 = 4,     /* 2 bytes */
    KVS_DTYPE_FP32 = 5,     /* 4 bytes */
} kvs_dtype;

/* Bytes per element; 0 for an invalid dtype. */
KVS_API size_t kvs_dtype_size(kvs_dtype dtype);
/* "bf16", "fp16", "fp32", "fp8" (e4m3), "fp8_e5m2". */
KVS_API const char *kvs_dtype_name(kvs_dtype dtype);
/* Parses the names above and the torch spellings ("bfloat16", "float16",
 * "half", "float32", "float", "float8_e4m3fn", "float8_e5m2"). */
KVS_API kvs_status kvs_dtype_parse(const char *name, kvs_dtype *dtype_out);

typedef enum kvs_attn_layout {
    /* Separate K and V: two planes per layer, rows of kv_heads * head_dim. */
    KVS_LAYOUT_MHA = 0,
    /* Multi-head latent attention: one plane per layer, rows of head_dim;
     * identical on every tensor-parallel rank, so world_size and rank are
     * not part of an MLA namespace and any rank reads what one rank stored. */
    KVS_LAYOUT_MLA = 1,
} kvs_attn_layout;

/* Everything that must match for stored KV to be reused.  Strings are
 * copied by kvs_engine_open. */
typedef struct kvs_namespace {
    const char *model;      /* model id or path, 1..255 bytes, required */
    kvs_dtype dtype;        /* KV cache element type */
    uint32_t num_layers;    /* attention layers, 1..4096 */
    uint32_t num_kv_heads;  /* KV heads per rank (1 for MLA) */
    uint32_t head_dim;      /* elements per head row */
    kvs_attn_layout layout; /* MHA or MLA */
    uint32_t world_size;    /* tensor-parallel size, >= 1 */
    uint32_t rank;          /* tensor-parallel rank, < world_size */
    /* Free-form identity that also must match (LoRA adapter, weight
     * revision, engine version); NULL or "" for none. */
    const char *variant;
    /* Tenancy salt; NULL: the configuration's namespace_salt.  Only its
     * SHA-256 is stored, never the salt itself. */
    const char *salt;
} kvs_namespace;

#define KVS_KEY_BYTES 32

/*
 * The chained chunk keys of a token sequence: for chunk i (chunk_size tokens
 * each), key[i] = SHA-256(key[i-1] || tokens of chunk i as little-endian
 * u32), with key[-1] = 32 zero bytes.  The same in every process, on every
 * machine and from every language, with nothing to seed.  Writes
 * min(num_tokens / chunk_size, max_keys) keys and their count.
 */
KVS_API kvs_status kvs_chunk_keys(const uint32_t *tokens, size_t num_tokens,
                                  uint32_t chunk_size,
                                  uint8_t (*keys_out)[KVS_KEY_BYTES],
                                  size_t max_keys, size_t *num_keys_out);

/* ------------------------------------------------------------------------ */
/* KV memory descriptions                                                    */
/* ------------------------------------------------------------------------ */

typedef enum kvs_mem {
    KVS_MEM_HOST = 0, /* ordinary or pinned host memory */
    KVS_MEM_CUDA = 1, /* CUDA device memory of `device` */
} kvs_mem;

/* kvs_kv.flags */
/* Host memory only: the engine may read files straight into (and write them
 * straight out of) this memory instead of through its own buffers.  Faster,
 * but a transfer into or out of this memory that is stuck in the filesystem
 * keeps it borrowed: kvs_op_free() (and so kvs_retrieve) waits for such
 * transfers still in flight, even past the deadline.  (Opening a file or
 * reading its header does not touch this memory and holds nothing up.) */
#define KVS_KV_DIRECT 0x1u

/*
 * Where the KV of a prompt's tokens lives.  The canonical unit is a head
 * row: head_dim * dtype size contiguous bytes, the KV of one head of one
 * token in one plane (K or V; MLA has one plane and one "head", its latent
 * vector) of one layer.  The head row of (layer l, plane p, head h) of the
 * token whose slot is s is at
 *
 *   layers[l] + p * plane_stride
 *             + (s / block_size) * block_stride
 *             + (s % block_size) * slot_stride
 *             + h * head_stride
 *
 * where s = slot_mapping[token index in the prompt].  With head_stride 0 (=
 * head_dim * dtype size) the num_kv_heads head rows of a token are one
 * contiguous row of row_bytes = num_kv_heads * head_dim * dtype size, and
 * the engine copies whole rows; with heads strided it copies head row by
 * head row.  Chunk files hold one canonical layout whatever the memory's
 * ([layer][plane][token][head][dim]), so KV stored from any layout below
 * reads back into any other.
 *
 * vLLM's per-layer caches (B blocks, N = block_size slots, H = KV heads per
 * rank, D = head_dim, E = dtype size; num_slots = B * N; every stride is the
 * tensor's element stride times E, which is what to pass when blocks are
 * padded or the tensor is a view):
 *
 *   memory order, as vLLM shapes it      slot_stride head_stride plane_stride block_stride
 *   [2,B,N,H,D]                 (a)       H*D*E       D*E         B*N*H*D*E    N*H*D*E
 *   [2,B,H,N,D] = [2,B,N,H,D]   (a) HND   D*E         N*D*E       B*H*N*D*E    H*N*D*E
 *   [B,2,N,H,D]                 (b)       H*D*E       D*E         N*H*D*E      2*N*H*D*E
 *   [B,2,H,N,D] = [B,2,N,H,D]   (b) HND   D*E         N*D*E       H*N*D*E      2*H*N*D*E
 *   (B,N,H,2D)  = (B,H,N,2D)    (c) NHD   H*2D*E      2D*E        D*E          N*H*2D*E
 *   (B,H,N,2D)  = (B,H,N,2D)    (c) HND   2D*E        N*2D*E      D*E          H*N*2D*E
 *   [B,N,D] or [B,1,N,D]        (d) MLA   D*E         -           -            N*D*E
 *
 * (a) FlashAttention up to vLLM 0.22; (b) FlashInfer and Triton up to 0.25,
 * FlashAttention 0.23-0.25; (c) every non-MLA backend from 0.26: K in the
 * first D and V in the second D of the last dimension, hence plane_stride =
 * D*E; (d) MLA backends, every version, with num_kv_heads 1 and D the
 * latent width.  A cross-layer cache (one tensor with a layers dimension,
 * e.g. memory [B, layers, 2, N, H, D]) is layers[l] = layer l's first
 * element and the strides of that tensor (block_stride then spans every
 * layer of a block); overlap is checked within a layer only.  A plain
 * contiguous buffer [layer][plane][token][row] is slot_mapping NULL,
 * num_slots = its token capacity, every stride 0.
 *
 * Accepted strides: no two head rows may overlap.  kvstash checks this as
 * nesting: take the dimensions with more than one element among heads
 * (num_kv_heads, head_stride), slots of a block (block_size, slot_stride),
 * planes (2, plane_stride) and blocks (ceil(num_slots / block_size),
 * block_stride); ordered by stride, each stride must be at least the span
 * of the ones before it (a head row's span is its own length).  Any
 * permutation of a dense or padded tensor passes; an operation on memory
 * that does not is KVS_ERR_INVALID, and the message names every stride and
 * the dimension that overlaps.  Strides must leave each head row aligned as
 * its dtype needs only for speed: the CUDA kernels use the widest access
 * (16 bytes down to 1) that every address, stride and head row divides.
 *
 * A negative slot means "this token has no place here": a store skips every
 * chunk holding one, a retrieve neither reads nor writes such tokens, and a
 * chunk whose tokens all have negative slots is taken as already in place.
 *
 * CUDA memory (KVS_MEM_CUDA): layers are device pointers of `device` (host
 * memory here is KVS_ERR_INVALID); slot_mapping stays in host memory.  The
 * first CUDA operation binds the engine to `device` and allocates its GPU
 * staging (cufile_buffer_size MiB); operations on another device are
 * KVS_ERR_INVALID.  kvstash's kernels that read or write this memory run
 * after the work queued on cuda_stream when the call was made.  A store has
 * read the memory when kvs_store returns; the tokens a retrieve reports
 * loaded are in GPU memory when it reports them (not merely queued).  The
 * caller's current CUDA device and context are left as they were.
 *
 * head_stride came in 0.2 (KVS_VERSION_NUMBER 200) at the end of the struct:
 * this library reads it, so programs built against an older header must be
 * rebuilt, and a language that declares the struct itself checks
 * kvs_version_number() >= 200.
 */
typedef struct kvs_kv {
    kvs_mem mem;               /* HOST or CUDA */
    int device;                /* CUDA device ordinal (KVS_MEM_CUDA) */
    uint32_t flags;            /* KVS_KV_* */
    uint32_t num_layers;       /* must equal the namespace's num_layers */
    void *const *layers;       /* num_layers base pointers (host array) */
    uint64_t num_slots;        /* slots per plane; every slot < num_slots */
    uint64_t block_size;       /* slots per block; 0: one block of num_slots */
    uint64_t slot_stride;      /* bytes; 0: num_kv_heads * head_stride */
    uint64_t block_stride;     /* bytes; 0: block_size * slot_stride */
    uint64_t plane_stride;     /* bytes; 0: ceil(num_slots / block_size) *
                                  block_stride */
    const int64_t *slot_mapping; /* one per prompt token, host memory; NULL:
                                    token i -> slot i */
    void *cuda_stream;         /* cudaStream_t the caller's work is ordered on
                                  (NULL: the legacy default stream) */
    uint64_t head_stride;      /* bytes between one head's row and the next
                                  within a token; 0: head_dim * dtype size
                                  (the token's row is contiguous) */
} kvs_kv;

/* ------------------------------------------------------------------------ */
/* Engines                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct kvs_engine kvs_engine;
typedef struct kvs_op kvs_op;

/*
 * Opens an engine for one namespace on the store of cfg (weka_path, or the
 * local default folder).  Validates everything, creates the namespace folder,
 * probes the filesystem (O_DIRECT, cuFile) and logs the chosen data path once.
 * cfg is copied; the caller may free it after this returns.
 *   KVS_ERR_INVALID  ns is incomplete or inconsistent;
 *   KVS_ERR_CONFIG   the configuration cannot serve (e.g. weka_path missing);
 *   KVS_ERR_IO / KVS_ERR_PERM  the store cannot be used;
 *   KVS_ERR_TIMEOUT  the store did not answer within store_timeout_ms (a
 *                    hung mount): the open gives up instead of hanging.
 */
KVS_API kvs_status kvs_engine_open(const kvs_config *cfg,
                                   const kvs_namespace *ns,
                                   kvs_engine **engine_out);

/* Waits for stores in flight (up to the store timeout), then releases
 * everything.  Ops not yet freed become invalid. */
KVS_API void kvs_engine_close(kvs_engine *engine);

/* The namespace folder's name ("<model>-<16 hex>") and the full path of the
 * folder on the first store path. */
KVS_API const char *kvs_engine_namespace_id(const kvs_engine *engine);
KVS_API const char *kvs_engine_namespace_path(const kvs_engine *engine);

/* Tokens per chunk, and payload bytes of one full chunk. */
KVS_API uint32_t kvs_engine_chunk_size(const kvs_engine *engine);
KVS_API uint64_t kvs_engine_chunk_bytes(const kvs_engine *engine);

/*
 * Checks a KV description against the engine's namespace as kvs_store and
 * kvs_retrieve would (layer count, pointers not NULL, strides, overlap;
 * slot_mapping is not read), without touching the memory, so that a
 * connector can refuse a cache it cannot serve when the cache is handed to
 * it rather than at the first request.  CUDA pointers are checked to be
 * device memory at the first operation.  (Since 0.2.)
 *   KVS_ERR_INVALID      the description breaks the contract above kvs_kv;
 *                        the message names the field or the strides;
 *   KVS_ERR_UNSUPPORTED  CUDA memory, and this library was built without it.
 */
KVS_API kvs_status kvs_kv_check(kvs_engine *engine, const kvs_kv *kv);

/*
 * How many leading tokens of the prompt are available: whole chunks present
 * in the CPU tier or on the store, in order, stopping at the first absent
 * one.  Looks in memory first; on a miss, asks the store with one metadata
 * call, so chunks written by other instances are found.
 */
KVS_API kvs_status kvs_lookup(kvs_engine *engine, const uint32_t *tokens,
                              size_t num_tokens, size_t *hit_tokens_out);

/*
 * Stores the KV of every whole chunk of the prompt that the store does not
 * hold yet.  Returns once the source has been captured: for CUDA memory the
 * gather into the engine's staging buffer has run, so the caller may reuse
 * its memory; host memory stays borrowed until the op completes or is freed.
 * The writes go on in the background.  When the bounded store queue is full
 * the chunks that do not fit are dropped and counted, never waited for.
 * *op_out (optional; NULL to fire and forget) is freed with kvs_op_free().
 */
KVS_API kvs_status kvs_store(kvs_engine *engine, const uint32_t *tokens,
                             size_t num_tokens, const kvs_kv *kv,
                             kvs_op **op_out);

/*
 * Loads the longest available prefix of whole chunks into kv and returns the
 * number of tokens loaded: exactly those whose every byte is in place and
 * verified, never more.  Tokens past that were not loaded (some of their
 * memory may have been written); the caller recomputes them.  Waits at most
 * the configured io_timeout_ms.
 */
KVS_API kvs_status kvs_retrieve(kvs_engine *engine, const uint32_t *tokens,
                                size_t num_tokens, const kvs_kv *kv,
                                size_t *loaded_tokens_out);

/* The same, asynchronous: layers can be waited for one at a time. */
KVS_API kvs_status kvs_retrieve_start(kvs_engine *engine,
                                      const uint32_t *tokens,
                                      size_t num_tokens, const kvs_kv *kv,
                                      kvs_op **op_out);

/* Removes the stored chunks of a prompt's whole chunks (all instances will
 * miss them from then on) and reports how many files were removed.  The
 * removals run on the calling thread, with no deadline: on a hung mount
 * this call waits for the mount. */
KVS_API kvs_status kvs_remove(kvs_engine *engine, const uint32_t *tokens,
                              size_t num_tokens, size_t *removed_out);

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

typedef struct kvs_op_result {
    kvs_status status;       /* KVS_OK, or why the op ended early */
    uint64_t tokens;         /* retrieve: tokens loaded (a prefix);
                                store: tokens of chunks now on the store */
    uint32_t chunks_done;    /* chunks read, or written by this op */
    uint32_t chunks_present; /* store: chunks the store already had;
                                retrieve: chunks already in place */
    uint32_t chunks_failed;  /* missed, dropped or failed chunks */
    uint64_t bytes;          /* payload bytes moved */
} kvs_op_result;

/*
 * Waits until the op completes or timeout_ms passes (negative: the op's own
 * deadline; 0: poll).  Returns KVS_OK with *result_out filled when the op is
 * complete, KVS_ERR_TIMEOUT when it is not (the op stays valid).  It never
 * waits past the op's own deadline, io_timeout_ms for a retrieve and
 * store_timeout_ms for a store: there the op is completed with what arrived
 * (result.status KVS_ERR_TIMEOUT), the chunks not done are misses or failed
 * writes, counted, and host memory is the caller's again (but see
 * KVS_KV_DIRECT).
 */
KVS_API kvs_status kvs_op_wait(kvs_op *op, int64_t timeout_ms,
                               kvs_op_result *result_out);

/* Retrieve only: waits until layer `layer` of every loaded chunk is in
 * place (layers arrive in order).  *loaded_tokens_out is the prefix whose
 * layers 0..layer are in place; it never grows between layers. */
KVS_API kvs_status kvs_op_wait_layer(kvs_op *op, uint32_t layer,
                                     size_t *loaded_tokens_out);

/* Releases an op.  An incomplete store goes on in the background; an
 * incomplete retrieve is cancelled first (see KVS_KV_DIRECT). */
KVS_API void kvs_op_free(kvs_op *op);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

/*
 * The counters and gauges of an engine.  Each X(name, kind, metric, labels,
 * help) names a field of kvs_stats, whether it is a "counter" or a "gauge",
 * its Prometheus metric name and labels.  Fields are only ever added at the
 * end.
 */
#define KVS_STATS_FIELDS(X)                                                          \
    X(lookups, counter, "kvstash_lookups_total", "", "lookup calls")                 \
    X(lookup_tokens, counter, "kvstash_lookup_tokens_total", "",                     \
      "tokens asked about by lookups")                                               \
    X(lookup_hit_tokens, counter, "kvstash_lookup_hit_tokens_total", "",             \
      "tokens lookups found available")                                              \
    X(store_probes, counter, "kvstash_store_probes_total", "",                       \
      "metadata calls made on the store to discover chunks")                         \
    X(negative_cache_hits, counter, "kvstash_negative_cache_hits_total", "",         \
      "lookups answered by the short-lived miss cache")                              \
    X(retrieves, counter, "kvstash_retrieves_total", "", "retrieve calls")           \
    X(retrieve_tokens, counter, "kvstash_retrieve_tokens_total", "",                 \
      "tokens asked for by retrieves")                                               \
    X(retrieve_hit_tokens, counter, "kvstash_retrieve_hit_tokens_total", "",         \
      "tokens retrieves loaded")                                                     \
    X(hits_cpu, counter, "kvstash_chunk_hits_total", "tier=\"cpu\"",                 \
      "chunks loaded from the CPU tier")                                             \
    X(hits_store, counter, "kvstash_chunk_hits_total", "tier=\"store\"",             \
      "chunks loaded from the shared store")                                         \
    X(miss_absent, counter, "kvstash_chunk_misses_total", "reason=\"absent\"",       \
      "chunks not on the store")                                                     \
    X(miss_vanished, counter, "kvstash_chunk_misses_total", "reason=\"vanished\"",   \
      "chunks gone between lookup and read (ENOENT, ESTALE)")                        \
    X(miss_io, counter, "kvstash_chunk_misses_total", "reason=\"io\"",               \
      "chunks whose read failed")                                                    \
    X(miss_timeout, counter, "kvstash_chunk_misses_total", "reason=\"timeout\"",     \
      "chunks not read before the deadline")                                         \
    X(miss_truncated, counter, "kvstash_chunk_misses_total",                         \
      "reason=\"truncated\"", "files shorter or longer than their header says")      \
    X(miss_bad_header, counter, "kvstash_chunk_misses_total",                        \
      "reason=\"bad_header\"", "files with a damaged or unreadable header")          \
    X(miss_version, counter, "kvstash_chunk_misses_total", "reason=\"version\"",     \
      "files of another format version")                                             \
    X(miss_foreign, counter, "kvstash_chunk_misses_total", "reason=\"foreign\"",     \
      "files of another namespace or key")                                           \
    X(miss_checksum, counter, "kvstash_chunk_misses_total", "reason=\"checksum\"",   \
      "files whose payload failed its checksum")                                     \
    X(miss_not_regular, counter, "kvstash_chunk_misses_total",                       \
      "reason=\"not_regular\"", "paths that are not regular files")                  \
    X(miss_nomem, counter, "kvstash_chunk_misses_total", "reason=\"nomem\"",         \
      "chunks skipped for lack of memory or staging space")                          \
    X(miss_unhealthy, counter, "kvstash_chunk_misses_total",                         \
      "reason=\"unhealthy\"", "chunks skipped while the store is unhealthy")         \
    X(miss_unauthenticated, counter, "kvstash_chunk_misses_total",                   \
      "reason=\"unauthenticated\"",                                                  \
      "files without a valid MAC under auth_key_file (auth on)")                     \
    X(miss_ownership, counter, "kvstash_chunk_misses_total", "reason=\"ownership\"", \
      "files of another owner or writable by others (strict_ownership)")             \
    X(stores, counter, "kvstash_stores_total", "", "store calls")                    \
    X(chunks_stored, counter, "kvstash_chunks_stored_total", "",                     \
      "chunk files this engine published")                                           \
    X(chunks_store_present, counter, "kvstash_chunks_store_skipped_total",           \
      "reason=\"present\"", "chunks not written: already stored")                    \
    X(chunks_store_lost_race, counter, "kvstash_chunks_store_skipped_total",         \
      "reason=\"lost_race\"", "chunks another instance published first")            \
    X(store_dropped, counter, "kvstash_store_failures_total", "reason=\"queue_full\"",\
      "chunks dropped because the store queue was full")                             \
    X(store_failed_io, counter, "kvstash_store_failures_total", "reason=\"io\"",     \
      "chunk writes that failed")                                                    \
    X(store_failed_nospace, counter, "kvstash_store_failures_total",                 \
      "reason=\"nospace\"", "chunk writes refused for lack of space")                \
    X(store_failed_timeout, counter, "kvstash_store_failures_total",                 \
      "reason=\"timeout\"", "chunk writes past their deadline")                      \
    X(bytes_read, counter, "kvstash_bytes_total", "op=\"read\"",                     \
      "payload bytes read from the store (logical: as delivered, decompressed)")     \
    X(bytes_written, counter, "kvstash_bytes_total", "op=\"write\"",                 \
      "payload bytes written to the store (logical: before compression)")            \
    X(bytes_cpu_hit, counter, "kvstash_bytes_total", "op=\"cpu_hit\"",               \
      "payload bytes served from the CPU tier")                                      \
    X(retrieve_ns, counter, "kvstash_retrieve_seconds_total", "",                    \
      "nanoseconds from each retrieve call to its completion, summed over "          \
      "retrieves (exported in seconds)")                                             \
    X(store_ns, counter, "kvstash_store_write_seconds_total", "",                    \
      "nanoseconds I/O workers spent on chunk writes, from taking a chunk off the "  \
      "queue to publishing it, summed over chunks (exported in seconds)")            \
    X(cpu_inserts, counter, "kvstash_cpu_tier_inserts_total", "",                    \
      "chunks put in the CPU tier")                                                  \
    X(cpu_evictions, counter, "kvstash_cpu_tier_evictions_total", "",                \
      "chunks evicted from the CPU tier")                                            \
    X(cpu_bytes, gauge, "kvstash_cpu_tier_bytes", "", "bytes held by the CPU tier")  \
    X(cpu_chunks, gauge, "kvstash_cpu_tier_chunks", "", "chunks held by the CPU tier")\
    X(index_entries, gauge, "kvstash_index_entries", "",                             \
      "chunks this engine knows are on the store")                                   \
    X(pending_stores, gauge, "kvstash_pending_store_chunks", "",                     \
      "chunks queued or being written")                                              \
    X(pending_store_bytes, gauge, "kvstash_pending_store_bytes", "",                 \
      "bytes queued or being written")                                               \
    X(direct_io, gauge, "kvstash_direct_io", "", "1 when O_DIRECT is in use")        \
    X(cufile_active, gauge, "kvstash_cufile_active", "",                             \
      "1 when the cuFile data path is in use")                                       \
    X(cufile_fallbacks, counter, "kvstash_cufile_fallbacks_total", "",               \
      "requests cuFile could not serve that went to the POSIX path")                 \
    X(store_unhealthy, gauge, "kvstash_store_unhealthy", "",                         \
      "1 while the store is marked unhealthy after repeated failures")               \
    X(evictions, counter, "kvstash_evictions_total", "",                             \
      "chunk files this engine's collector removed")                                 \
    X(evicted_bytes, counter, "kvstash_evicted_bytes_total", "",                     \
      "bytes this engine's collector removed")                                       \
    X(orphans_removed, counter, "kvstash_orphan_temp_files_removed_total", "",       \
      "temporary files of crashed writers removed")                                  \
    X(collections, counter, "kvstash_collections_total", "",                         \
      "collector runs this engine made")                                             \
    X(store_used_bytes, gauge, "kvstash_store_used_bytes", "",                       \
      "bytes of chunk files on the store: the last measurement plus the "            \
      "filesystem's growth since")                                                   \
    X(store_queue_ns, counter, "kvstash_store_queue_seconds_total", "",              \
      "nanoseconds chunks waited in the store queue before an I/O worker took "      \
      "them, summed over chunks (exported in seconds)")                              \
    X(store_op_ns, counter, "kvstash_store_seconds_total", "",                       \
      "nanoseconds from each store call to the end of its last chunk, summed over "  \
      "stores (exported in seconds)")                                                \
    X(xfer_io_ns, counter, "kvstash_transfer_seconds_total", "phase=\"io\"",         \
      "nanoseconds host-memory pieces spent in read and write system calls on "      \
      "chunk payloads, summed over I/O workers (exported in seconds)")               \
    X(xfer_checksum_ns, counter, "kvstash_transfer_seconds_total",                   \
      "phase=\"checksum\"", "nanoseconds host-memory pieces spent computing and "    \
      "verifying payload checksums (and auth digests), summed over I/O workers "     \
      "(exported in seconds)")                                                       \
    X(xfer_copy_ns, counter, "kvstash_transfer_seconds_total", "phase=\"copy\"",     \
      "nanoseconds host-memory transfers spent copying between buffers and KV "      \
      "memory (scatter, gather, CPU tier), summed over threads (exported in "        \
      "seconds)")                                                                    \
    X(stored_bytes_read, counter, "kvstash_stored_bytes_total", "op=\"read\"",        \
      "chunk file bytes read from the store as stored: compressed frames where "     \
      "chunks are compressed (docs/codec.md), the payload otherwise")                \
    X(stored_bytes_written, counter, "kvstash_stored_bytes_total", "op=\"write\"",    \
      "chunk file bytes written to the store as stored: compressed frames where "    \
      "chunks are compressed, the payload otherwise")                                \
    X(chunks_stored_compressed, counter, "kvstash_chunks_stored_compressed_total",   \
      "", "chunk files this engine published compressed (a subset of "               \
      "kvstash_chunks_stored_total)")                                                \
    X(xfer_codec_ns, counter, "kvstash_codec_seconds_total", "",                     \
      "nanoseconds host-memory transfers spent encoding and decoding compressed "    \
      "chunks on the CPU, summed over I/O workers (exported in seconds)")

/*
 * The fields of KVS_STATS_FIELDS that describe the whole store rather than
 * one engine: every engine on a store reports the same value, so the
 * Prometheus text labels them store="<first store path>" instead of
 * namespace="...", and engines of one process merge into one series (a sum
 * over namespaces would count the store once per engine).
 */
#define KVS_STATS_STORE_WIDE(X) X(store_used_bytes)

typedef struct kvs_stats {
#define KVS_STATS_FIELD_(name, kind, metric, labels, help) uint64_t name;
    KVS_STATS_FIELDS(KVS_STATS_FIELD_)
#undef KVS_STATS_FIELD_
} kvs_stats;

/* Copies min(size, sizeof(kvs_stats)) bytes of the current values (pass
 * sizeof(kvs_stats)); reading them costs no I/O. */
KVS_API kvs_status kvs_engine_stats(kvs_engine *engine, kvs_stats *stats_out,
                                    size_t size);
/* The same as one JSON object {"name": value, ...}. */
KVS_API kvs_status kvs_engine_stats_json(kvs_engine *engine, char **json_out);
/* The same in the Prometheus text exposition format (version 0.0.4), with
 * the label namespace="<id>" added to every sample, except those of
 * KVS_STATS_STORE_WIDE, which carry store="<first store path>" instead. */
KVS_API kvs_status kvs_engine_metrics(kvs_engine *engine, char **text_out);

/* ------------------------------------------------------------------------ */
/* Diagnostics                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Examines the store of cfg without opening a namespace: each store path,
 * its filesystem type, free space, O_DIRECT support, cuFile status, and the
 * data path an engine would choose and why.  *report_out is text, one
 * "name: value" line each; *healthy_out is 1 when an engine could open.
 */
KVS_API kvs_status kvs_doctor(const kvs_config *cfg, char **report_out,
                              int *healthy_out);

/* ------------------------------------------------------------------------ */
/* Administration of the whole store                                        */
/* ------------------------------------------------------------------------ */

/*
 * A kvs_admin examines and manages everything on the store paths of a
 * configuration (its weka_path list): every namespace, whoever wrote it.  The
 * kvstash CLI's ls, du, verify, gc and rm are made of these calls.
 *
 * Every call is safe while engines run on the store.  Nothing on the data
 * path takes a lock: a file removed under a running engine is a miss there
 * (an engine that already opened it reads it to the end), never an error or
 * wrong data.  Calls that evict (kvs_admin_gc) hold the collector lease, so
 * they never run at the same time as an engine's collector or another gc.
 * Calls that walk the store cost one metadata operation per file; engines
 * never make them.
 *
 * Capacity: max_store_size and its watermarks count every namespace on every
 * path of weka_path and are enforced by all instances configured with those
 * paths together, one collector at a time: the limit is per store, not per
 * instance, rank or namespace.  min_free_space is kept on each filesystem.
 * A chunk's last access is the later of its atime (readers refresh it at
 * most once per access_interval_s) and its mtime.  docs/capacity.md tells
 * the whole design.
 *
 * A kvs_admin may be used by one thread at a time.
 */
typedef struct kvs_admin kvs_admin;

/* Opens the store of cfg without creating anything.  KVS_ERR_NOT_FOUND when
 * a store path does not exist. */
KVS_API kvs_status kvs_admin_open(const kvs_config *cfg, kvs_admin **admin_out);
KVS_API void kvs_admin_close(kvs_admin *admin);

/* The store paths in weka_path order; the strings live as long as admin. */
KVS_API uint32_t kvs_admin_path_count(const kvs_admin *admin);
KVS_API const char *kvs_admin_path(const kvs_admin *admin, uint32_t index);

typedef struct kvs_ns_usage {
    const char *id;             /* namespace folder name, "<model>-<16 hex>" */
    const char *identity;       /* its NAMESPACE.json: a JSON object with the
                                   model, dtype, layout, geometry, rank, chunk
                                   size; "" when the file is missing */
    uint64_t chunks;            /* chunk files, on every store path */
    uint64_t bytes;             /* their bytes */
    uint64_t temp_files;        /* temporary files: writes under way, orphans */
    uint64_t temp_bytes;
    int64_t oldest_access_ns;   /* last access of the least recently used
                                   chunk, wall clock ns; 0 without chunks */
    int64_t newest_access_ns;   /* ... of the most recently used chunk */
    /* bytes is what the files take (stored: compressed chunks count their
     * compressed size); logical_bytes is the KV they hold (the payloads,
     * uncompressed), from the file's size where it is a plain full chunk of
     * the namespace, else from its header (docs/capacity.md) */
    uint64_t logical_bytes;
    uint64_t compressed_chunks; /* chunk files stored compressed (format 2) */
} kvs_ns_usage;

/* Walks the store and describes each namespace, sorted by id.  *list_out is
 * one allocation, strings included, released with kvs_free(). */
KVS_API kvs_status kvs_admin_list(kvs_admin *admin, kvs_ns_usage **list_out,
                                  size_t *count_out);

#define KVS_ADMIN_MAX_PATHS 16

typedef struct kvs_path_usage {
    const char *path;           /* lives as long as the kvs_admin */
    uint64_t store_id;          /* picks which keys live here; 0: none yet (a
                                   single path needs none) */
    uint64_t used_bytes;        /* chunk and temporary files on this path */
    uint64_t chunks;
    uint64_t fs_size_bytes;     /* its filesystem (statvfs) */
    uint64_t fs_free_bytes;     /* free for unprivileged writers */
} kvs_path_usage;

typedef struct kvs_usage {
    uint64_t used_bytes;        /* all paths */
    uint64_t chunks;
    uint64_t temp_files;
    uint64_t namespaces;        /* namespace folders (the most on one path) */
    uint64_t max_bytes;         /* max_store_size; 0: no cap */
    uint64_t high_bytes;        /* eviction starts above this ... */
    uint64_t low_bytes;         /* ... and goes down to this */
    uint64_t min_free_bytes;    /* min_free_space, per filesystem */
    int measured;               /* 1: walked now (asked, or the record was
                                   missing or outgrown); 0: the record */
    int64_t last_pass_wall_ns;  /* when a collector last measured every path
                                   (the oldest path's time); 0: never */
    double last_pass_seconds;   /* how long that pass took */
    uint32_t path_count;
    kvs_path_usage paths[KVS_ADMIN_MAX_PATHS];
    /* measured = 1 only (a walk; the collector's record has stored bytes
     * alone): the KV the chunk files hold, uncompressed, and how many of
     * them are compressed (docs/capacity.md); 0 otherwise */
    uint64_t logical_bytes;
    uint64_t compressed_chunks;
} kvs_usage;

/* How full the store is.  measure = 0: what the collector last recorded
 * (.kvstash/usage.json on each path; no walk, fast at any size), unless a
 * path was never measured or its filesystem's usage moved by more than an
 * eighth of the record (at least 16 MiB) since: then it walks, as with
 * measure = 1 (usage_out->measured says which).  measure = 1: walks the
 * store now.  A walk is recorded in usage.json, so later calls and the
 * engines' store_used_bytes show it. */
KVS_API kvs_status kvs_admin_usage(kvs_admin *admin, int measure, kvs_usage *usage_out);

/* Who holds the collector lease of store path `index`, one line: "free" or
 * "held by HOST pid N (PURPOSE), renewed S s ago, ...".  Caller frees. */
KVS_API kvs_status kvs_admin_lease(kvs_admin *admin, uint32_t index, char **text_out);

typedef struct kvs_verify_options {
    const char *namespace_id;   /* NULL: every namespace */
    uint32_t threads;           /* reader threads; 0: gds_io_threads */
    int remove_bad;             /* remove files that failed a check or can
                                   never be read (misplaced); never a file
                                   that merely could not be read (EIO) */
    /* About ten times a second, from the calling thread.  files_total is 0
     * until the files are counted.  NULL: no progress. */
    void (*progress)(void *ctx, uint64_t files_done, uint64_t files_total,
                     uint64_t bytes_done);
    /* Each bad, unreadable or misplaced file and why; from any thread, one
     * call at a time.  NULL: not reported. */
    void (*bad_file)(void *ctx, const char *path, const char *reason);
    void *ctx;
} kvs_verify_options;

typedef struct kvs_verify_report {
    uint64_t files;             /* chunk files examined */
    uint64_t bytes;             /* bytes read */
    uint64_t ok;                /* every check passed */
    uint64_t bad;               /* failed a check: bad header, other format
                                   version, foreign namespace or key,
                                   truncated, checksum mismatch, not a
                                   regular file */
    uint64_t unreadable;        /* an I/O error kept it from being checked */
    uint64_t misplaced;         /* valid, but not where its key maps (another
                                   store path or folder): never read */
    uint64_t vanished;          /* removed while verify ran (evicted): fine */
    uint64_t removed;           /* with remove_bad */
    double seconds;
} kvs_verify_report;

/*
 * Reads every chunk file (of one namespace or all) in parallel and checks
 * it as a reader would: header, namespace identity, key, length and every
 * segment checksum.  KVS_OK whatever it finds: the report counts it.
 */
KVS_API kvs_status kvs_admin_verify(kvs_admin *admin, const kvs_verify_options *opts,
                                    kvs_verify_report *report_out);

/* kvs_gc_options.flags */
#define KVS_GC_TO_SIZE 0x1u    /* evict least recently accessed chunks until
                                  at most to_bytes remain */
#define KVS_GC_OLDER_THAN 0x2u /* evict chunks not accessed for older_than_s */
#define KVS_GC_DRY_RUN 0x4u    /* remove nothing; report what would go */

typedef struct kvs_gc_options {
    uint32_t flags;             /* KVS_GC_*; without TO_SIZE or OLDER_THAN:
                                   one collection as the engines run it (the
                                   configured limits) */
    uint64_t to_bytes;          /* with KVS_GC_TO_SIZE */
    uint64_t older_than_s;      /* with KVS_GC_OLDER_THAN */
    const char *namespace_id;   /* NULL: the whole store; else only this
                                   namespace's chunks go, and to_bytes is its
                                   size */
    uint64_t tmp_grace_ms;      /* temporary files older than this are
                                   removed; 0: tmp_grace_s */
    uint32_t lease_wait_ms;     /* how long to wait for the collector lease */
    /* Each chunk evicted (or, dry run, that would be), from the calling
     * thread.  access_ns: its last access, wall clock ns. */
    void (*on_file)(void *ctx, const char *path, uint64_t bytes, int64_t access_ns);
    void *ctx;
} kvs_gc_options;

typedef struct kvs_gc_report {
    uint64_t used_before;       /* bytes when the walk began */
    uint64_t used_after;
    uint64_t chunks_before;
    uint64_t chunks_after;
    uint64_t files_removed;     /* chunks evicted (dry run: would be) */
    uint64_t bytes_removed;
    uint64_t orphans_removed;   /* temporary files older than the grace */
    uint64_t kept_touched;      /* candidates read since the walk: kept */
    uint32_t passes;            /* walks made */
    int target_missed;          /* nothing was left to evict before the
                                   target was reached */
    double scan_seconds;
    double evict_seconds;
} kvs_gc_report;

/*
 * Evicts chunks by size, by age, or as the configured limits say, oldest
 * last access first, and removes orphaned temporary files, holding the
 * collector lease of every store path.  KVS_ERR_BUSY when a live collector
 * held the lease for all of lease_wait_ms (kvs_last_error() names it).
 */
KVS_API kvs_status kvs_admin_gc(kvs_admin *admin, const kvs_gc_options *opts,
                                kvs_gc_report *report_out);

/*
 * Removes a namespace from every store path.  Its folder is first renamed
 * out of sight (engines of that namespace miss from then on, and recreate it
 * when they store again), then deleted.  KVS_ERR_NOT_FOUND when no path has
 * it.  *files_removed_out (optional): files deleted.
 */
KVS_API kvs_status kvs_admin_remove_namespace(kvs_admin *admin, const char *namespace_id,
                                              uint64_t *files_removed_out);

#ifdef __cplusplus
}
#endif

#endif /* KVSTASH_H */
