/*
 * engine.h - the engine and its operations, shared by engine.c (the public
 * entry points and the op/chunk control flow), stats.c and the transfer
 * implementations (xfer.h).
 */
#ifndef KVS_ENGINE_H
#define KVS_ENGINE_H

#include "chunk_file.h"
#include "collector.h"
#include "config.h"
#include "cpu_tier.h"
#include "dev.h"
#include "index.h"
#include "io_pool.h"
#include "kvmap.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>

/* Adds to a kvs_stats counter of engine e (relaxed: counters, not locks). */
#define KVS_STAT_ADD(e, field, n) \
    __atomic_fetch_add(&(e)->stats.field, (uint64_t)(n), __ATOMIC_RELAXED)

struct kvs_engine {
    kvs_config *cfg;               /* owned copy */
    kvs_ns ns;
    kvs_fstore store;
    kvs_pool *pool;
    kvs_index *index;
    kvs_cpu_tier *cpu;             /* NULL when local_cpu is off */
    kvs_collector *collector;      /* capacity of the shared store */
    kvs_dev *dev;                  /* GPU data path, opened by the first CUDA
                                      op (under mu); NULL until then */
    kvs_stats stats;               /* counters; gauges filled on read */
    uint32_t own_uid;              /* strict_ownership: the owner expected */
    uint32_t own_gid;              /* strict_ownership: store_gid, if set */
    bool own_gid_set;
    uint8_t *auth_key;             /* auth_key_file's bytes; NULL: auth off */
    size_t auth_key_len;

    uint64_t chunk_payload;        /* bytes of a full chunk's payload */
    uint64_t block_bytes;          /* one I/O call of the device path's staging */
    uint64_t host_read_block;      /* one read call of the host path */
    uint64_t host_write_block;     /* one write call of the host path (file-aligned) */
    uint64_t piece_bytes;          /* one task: a multiple of block_bytes */
    uint64_t hit_split_bytes;      /* CPU tier hits of a retrieve that add up
                                      to this many bytes are copied on the I/O
                                      workers, piece by piece (engine.c) */
    uint64_t negative_ns;          /* negative cache lifetime */
    uint64_t io_timeout_ns;
    uint64_t store_timeout_ns;
    uint64_t access_interval_ns;
    uint64_t max_pending_bytes;

    _Atomic uint64_t pending_bytes;    /* stores queued or being written */
    _Atomic uint64_t pending_chunks;
    _Atomic uint32_t failures;         /* consecutive I/O failures */
    _Atomic int64_t layer_files_left;  /* files retrieves in layer order may
                                          still reserve (reserve_layer_files) */
    _Atomic uint64_t unhealthy_until;  /* monotonic ns; 0 when healthy */
    int unhealthy_logged;

    pthread_mutex_t mu;            /* guards the condition below */
    pthread_cond_t idle_cv;        /* signalled when pending_chunks drops */
    _Atomic int refs;              /* 1 for the handle + 1 per live op */
    atomic_bool closing;
};

/* Chunk states within an operation. */
typedef enum kvs_chunk_state {
    KVS_CH_PENDING = 0,  /* scheduled, not resolved */
    KVS_CH_OK,           /* read and verified, or written and published */
    KVS_CH_FAILED,       /* a miss or a failed write (reason in .reason) */
    KVS_CH_INPLACE,      /* retrieve: all slots negative, nothing to do */
    KVS_CH_CPU,          /* retrieve: served by the CPU tier */
    KVS_CH_PRESENT,      /* store: already on the store */
    KVS_CH_SKIPPED,      /* store: some tokens have no slot; not stored */
    KVS_CH_DROPPED,      /* store: queue full or store unhealthy */
    KVS_CH_CANCELLED,    /* after the first missing chunk, or op freed */
} kvs_chunk_state;

/* Why a chunk was a miss (retrieve) or was not stored (store): each reason
 * is counted in one kvs_stats field (engine.c's reason_stat table). */
typedef enum kvs_reason {
    KVS_REASON_NONE = 0,
    KVS_MISS_ABSENT,
    KVS_MISS_VANISHED,
    KVS_MISS_NOT_REGULAR,
    KVS_MISS_OWNERSHIP,
    KVS_MISS_TRUNCATED,
    KVS_MISS_VERSION,
    KVS_MISS_FOREIGN,
    KVS_MISS_BAD_HEADER,
    KVS_MISS_CHECKSUM,
    KVS_MISS_UNAUTHENTICATED,
    KVS_MISS_NOMEM,
    KVS_MISS_IO,
    KVS_MISS_TIMEOUT,
    KVS_STORE_FAILED_IO,
    KVS_STORE_FAILED_NOSPACE,
    KVS_STORE_FAILED_TIMEOUT,
    KVS_REASON_COUNT
} kvs_reason;

typedef struct kvs_op kvs_op;
typedef struct kvs_xchunk kvs_xchunk;
struct kvs_xfer_ops;

typedef struct kvs_xpiece {
    kvs_task task;
    kvs_xchunk *chunk;
    uint64_t off;                  /* payload offset (multiple of block_bytes) */
    uint64_t len;                  /* bytes of padded payload */
    uint32_t layer_lo, layer_hi;   /* layers this piece touches */
} kvs_xpiece;

struct kvs_xchunk {
    kvs_task task;                 /* the open (retrieve) or create (store) step */
    kvs_op *op;
    uint32_t idx;                  /* chunk number in the prompt */
    size_t t0;                     /* its first token */
    uint32_t tokens;
    uint8_t key[KVS_KEY_BYTES];
    uint64_t payload;
    uint64_t padded;
    uint32_t seg_bytes;
    uint32_t npieces;
    kvs_xpiece *pieces;
    kvs_slot_cover cover;
    int fd;
    bool fd_direct;                /* fd has O_DIRECT: align zero-copy transfers */
    struct stat st;                /* retrieve: the file opened (quarantine
                                      removes only that one) */
    uint64_t tmp_suffix;           /* store: temporary file name */
    bool index_said_present;       /* retrieve: for "vanished" vs "absent" */
    _Atomic uint32_t pieces_left;
    _Atomic int state;             /* kvs_chunk_state */
    kvs_reason reason;             /* why it failed (KVS_CH_FAILED) */
    kvs_chunk_header hdr;          /* retrieve: expected sums; store: sums */
    kvs_chunk_frames frames;       /* hdr.codec != 0: the frame table (xfer.h) */
    kvs_cpu_entry *cpu;            /* store: CPU tier entry being filled;
                                      retrieve: the hit being copied on the
                                      workers (pinned until its last piece) */
    bool tier_hit;                 /* retrieve: copied from the CPU tier on
                                      the workers, no file read (set before
                                      any task runs, never changed) */
    uint64_t t_start;              /* monotonic ns: the op's start */
    kvs_dev_stage *stage;          /* store, CUDA: the captured chunk */
    kvs_dev_file *dfile;           /* CUDA: cuFile registration of fd */
    uint8_t *auth;                 /* auth on: the MAC's input, the header
                                      then one SHA-256 per segment (op's) */
};

typedef enum kvs_op_kind { KVS_OP_STORE, KVS_OP_RETRIEVE } kvs_op_kind;

struct kvs_op {
    kvs_op_kind kind;
    kvs_engine *engine;
    pthread_mutex_t mu;
    pthread_cond_t cv;             /* completion and layer progress */
    _Atomic int refs;              /* 1 for the handle + 1 per unresolved chunk */
    kvs_kvmap map;
    const struct kvs_xfer_ops *xfer; /* moves its pieces (xfer.h) */
    kvs_dev_op *dev;               /* CUDA memory: the op's device tables */
    bool direct;                   /* KVS_KV_DIRECT on host memory */
    uint32_t nchunks;
    kvs_xchunk *chunks;
    kvs_xpiece *pieces;
    _Atomic uint32_t chunks_left;  /* scheduled chunks not yet resolved */
    _Atomic uint32_t cut;          /* retrieve: first failed chunk; nchunks if none */
    _Atomic bool cancelled;        /* no more copies to or from caller memory */
    _Atomic int copiers;           /* copies to or from caller memory under way */
    _Atomic int direct_io;         /* KVS_KV_DIRECT transfers on caller memory
                                      under way (including their checksums) */
    uint32_t *layer_left;          /* retrieve: unfinished pieces per layer (mu) */
    bool layer_order;              /* retrieve_order layer (set before any task) */
    uint32_t layer_files;          /* files it reserved from layer_files_left,
                                      given back on completion (mu) */
    uint8_t *auth_mem;             /* the chunks' auth buffers (auth on) */
    uint64_t deadline_ns;          /* io_timeout (retrieve) or store_timeout
                                      (store) after start, monotonic ns */
    uint64_t t_start;
    bool complete;                 /* under mu */
    bool freed;                    /* the handle was released (mu) */
    kvs_op_result result;          /* valid once complete */
};

#endif
