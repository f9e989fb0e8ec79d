/*
 * dev.h - the device data path: KV caches in CUDA memory.
 *
 * The engine keeps the control flow (chunks, pieces, deadlines, the verified
 * prefix, stats); this module moves the bytes of one piece between a chunk
 * file and the caller's GPU memory, and knows nothing of ops or engines:
 *
 *   retrieve: file -> pinned host slice (pread) -> VRAM staging slice
 *             (asynchronous copies, several in flight) -- or file -> VRAM
 *             directly through cuFile -- then a kernel verifies every
 *             segment's XXH3 on the GPU and the scatter kernel, gated on
 *             that result, writes the caller's paged cache: an unverified
 *             byte never lands there;
 *   store:    kvs__dev_capture gathers each chunk into its own VRAM staging
 *             area and computes its segment sums (so kvs_store can return and
 *             the caller reuse its memory); pieces then go VRAM -> pinned
 *             host -> pwrite, or VRAM -> file through cuFile.
 *
 * Staging (one VRAM buffer of cufile_buffer_size MiB, registered with cuFile
 * when cuFile is in use, plus pinned host slices) is allocated when the first
 * CUDA operation binds the engine to its device.  When it runs out, pieces
 * and chunks report KVS_DEV_NOMEM and the engine turns that into a miss or a
 * dropped store: exhaustion degrades, it never fails a request.
 *
 * The build without CUDA links dev_stub.c, whose kvs__dev_open reports
 * KVS_ERR_UNSUPPORTED.
 */
#ifndef KVS_DEV_H
#define KVS_DEV_H

#include "codec.h"
#include "config.h"
#include "kvmap.h"
#include "store.h"

typedef struct kvs_dev kvs_dev;             /* one engine's device state */
typedef struct kvs_dev_op kvs_dev_op;       /* one op's device tables */
typedef struct kvs_dev_stage kvs_dev_stage; /* a captured chunk (store) */
typedef struct kvs_dev_file kvs_dev_file;   /* a file registered with cuFile */

typedef enum kvs_dev_rc {
    KVS_DEV_OK = 0,
    KVS_DEV_IO,       /* a read or write failed; errno in *err_out */
    KVS_DEV_CHECKSUM, /* a segment did not verify; nothing was written */
    KVS_DEV_NOMEM,    /* no staging free */
    KVS_DEV_STOPPED,  /* the hooks said stop */
    KVS_DEV_CUDA,     /* the CUDA runtime failed (logged once) */
} kvs_dev_rc;

/* What the device path needs to know of its engine. */
typedef struct kvs_dev_params {
    const kvs_config *cfg;
    const kvs_fstore *store;  /* the self-test writes its probe file here */
    uint32_t slots;           /* staging slots: one per I/O worker */
    uint64_t slot_bytes;      /* the engine's piece size */
    uint64_t block_bytes;     /* the engine's I/O block */
    uint64_t chunk_padded;    /* padded payload of a full chunk */
    bool auth;                /* authenticated chunks: SHA-256 of every
                                 KVS_AUTH_SEGMENT_BYTES piece on the GPU */
    bool codec;               /* stores compress (codec auto or on, auth
                                 off): GPU encode at capture */
    bool cpu_tier;            /* stores also fill a CPU tier entry, which
                                 takes the logical bytes from staging */
    uint32_t elem;            /* dtype size: the codec's element */
} kvs_dev_params;

/* True when this build has the CUDA data path. */
bool kvs__dev_built(void);

/* Piece size of CUDA ops (a multiple of block_bytes): stores write a chunk
 * per piece, retrieves read about cfg->dev_piece_mb per piece. */
uint64_t kvs__dev_piece_bytes(const kvs_config *cfg, uint64_t block_bytes, uint64_t padded,
                              bool store);

/* Binds to CUDA device `device`: staging, streams, and the data path choice
 * (io_path: auto runs the cuFile self-test, logged with its reason). */
kvs_status kvs__dev_open(const kvs_dev_params *p, int device, kvs_dev **out);
void kvs__dev_close(kvs_dev *d);
int kvs__dev_device(const kvs_dev *d);
/* NULL-safe readers for the stats. */
bool kvs__dev_cufile_active(const kvs_dev *d);
uint64_t kvs__dev_cufile_fallbacks(const kvs_dev *d);

/* An op's view of the caller's memory: device copies of the layer pointers
 * and the slot mapping, and an event on kv.cuda_stream at the time the op
 * started, after which every kernel that touches the caller's memory runs. */
kvs_status kvs__dev_op_begin(kvs_dev *d, const kvs_kvmap *m, kvs_dev_op **out);
void kvs__dev_op_end(kvs_dev_op *o);

/* A chunk file opened for a piece's I/O: registered with cuFile when it is
 * active (NULL when cuFile is off or cannot serve this file; the latter is
 * counted as a fallback and logged once with the cuFile error). */
kvs_dev_file *kvs__dev_file_open(kvs_dev *d, int fd);
void kvs__dev_file_close(kvs_dev *d, kvs_dev_file *f);

/* One chunk of the prompt. */
typedef struct kvs_dev_chunk {
    size_t t0;          /* first prompt token */
    uint32_t tokens;
    uint64_t payload;   /* payload bytes */
    uint64_t padded;    /* payload rounded up to 4096 */
    uint32_t seg_bytes; /* checksum segment (a codec frame) */
    /* Retrieve of a compressed chunk (format version 2): the parsed frame
     * table (host, segment_count entries, offsets from the frame area's
     * start); NULL for a plain chunk. */
    const kvs_codec_frame *frames;
    uint64_t stored;    /* the frame area's bytes (with frames) */
} kvs_dev_chunk;

/* How a piece asks its op whether to go on, and brackets its writes into the
 * caller's memory (engine.c's copy_begin/copy_end). */
typedef struct kvs_dev_hooks {
    bool (*stopped)(void *ctx);
    bool (*copy_begin)(void *ctx);
    void (*copy_end)(void *ctx);
    void *ctx;
} kvs_dev_hooks;

/* Reads padded payload [off, off + len) of chunk c from fd (f: its cuFile
 * registration or NULL), verifies it against sums (the chunk's segment
 * sums) and scatters the payload part into the op's KV memory.  Returns when
 * the bytes are in place (or were never written).  digests_out (host, NULL
 * when auth is off): receives the SHA-256 of each KVS_AUTH_SEGMENT_BYTES
 * piece of the range, computed on the GPU from the bytes verified.
 * A compressed chunk (c->frames): off is a multiple of seg_bytes; the
 * stored bytes of the range's frames are read, verified against sums (the
 * frame sums) and decoded on the GPU, and the scatter is gated on both; a
 * frame that fails either is KVS_DEV_CHECKSUM, nothing written. */
kvs_dev_rc kvs__dev_read_piece(kvs_dev_op *o, const kvs_dev_chunk *c, int fd, kvs_dev_file *f,
                               const uint64_t *sums, uint64_t off, uint64_t len,
                               uint8_t *digests_out, const kvs_dev_hooks *h, int *err_out);

/* Scatters a chunk's payload held in host memory (a CPU tier hit). */
kvs_dev_rc kvs__dev_put_host(kvs_dev_op *o, const kvs_dev_chunk *c, const void *payload,
                             const kvs_dev_hooks *h);

/* Store capture, in the caller's thread: begin, one capture per chunk
 * (KVS_DEV_NOMEM: no staging for it), end.  After end returns KVS_DEV_OK
 * the caller's memory has been read and each chunk's sums are in its
 * sums_out array; on failure every stage of this capture is unusable (the
 * caller frees them). */
kvs_dev_rc kvs__dev_capture_begin(kvs_dev_op *o, uint32_t max_chunks);
kvs_dev_rc kvs__dev_capture(kvs_dev_op *o, const kvs_dev_chunk *c, uint64_t *sums_out,
                            kvs_dev_stage **stage_out);
kvs_dev_rc kvs__dev_capture_end(kvs_dev_op *o);

/* How a captured chunk is stored, known after capture_end: plain (codec
 * KVS_CODEC_NONE: its sums are the segment sums of the padded payload) or
 * compressed (the sums are the frame sums; the pieces write the frame
 * area, stored_bytes padded with zeros to 4096, at KVS_FRAMES_OFFSET; the
 * caller writes the header and the frame table, from off and len: nframes
 * entries, offsets from the frame area's start; valid as long as the
 * stage). */
typedef struct kvs_dev_coded {
    uint32_t codec;
    uint64_t stored_bytes;
    uint32_t nframes;
    const uint32_t *off;
    const uint32_t *len;
} kvs_dev_coded;
void kvs__dev_stage_coded(const kvs_dev_stage *s, kvs_dev_coded *out);

/* Writes padded payload [off, off + len) of a captured chunk to fd; when
 * cpu_copy is not NULL, also copies the payload part (data_len bytes) there
 * (the CPU tier's entry at off: logical bytes, compressed or not).  A
 * compressed chunk's table block and frames are written, whole, by the
 * piece at off 0 (the file's layout is not the payload's); every piece
 * copies its own logical bytes to cpu_copy. */
kvs_dev_rc kvs__dev_write_piece(kvs_dev *d, kvs_dev_stage *s, int fd, kvs_dev_file *f,
                                uint64_t off, uint64_t len, uint64_t data_len, void *cpu_copy,
                                int *err_out);
void kvs__dev_stage_free(kvs_dev *d, kvs_dev_stage *s);
/* auth on: copies the n piece digests a capture computed on the GPU to out
 * (host); waits for them. */
kvs_dev_rc kvs__dev_stage_digests(kvs_dev *d, const kvs_dev_stage *s, uint8_t *out, uint32_t n);

/* `kvstash doctor`: the GPU, cuFile and the data path GPU memory would take
 * on this configuration's first store path, with the reason. */
void kvs__dev_doctor(const kvs_config *cfg, kvs_buf *b);

#endif
