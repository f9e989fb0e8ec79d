/*
 * xfer.h - moving a piece of a chunk between the caller's KV memory and a
 * chunk file: the one interface between the engine's control flow and a
 * data path.
 *
 * engine.c decides which chunks move, opens and checks the files, splits
 * chunks into pieces for the I/O pool, settles chunks and publishes them.
 * A transfer implementation moves the bytes of one piece and checks them:
 * on retrieve it reads the piece, verifies every segment against the
 * header's sums and only then delivers it into the caller's memory (or,
 * where the caller allowed it with KVS_KV_DIRECT, reads in place and
 * verifies there); on store it takes the bytes from the caller (or from a
 * copy captured at call time), computes the sums into the header and writes
 * the piece.  The engine picks one table per op (op_new) and never asks
 * which one it has.
 *
 * Two implementations: host memory (xfer_host.c, the POSIX path through
 * io_posix.c) and CUDA device memory (xfer_dev.c over dev.h: cuFile or the
 * pinned bounce ring, kernels for checksums, gather and scatter).
 *
 * Compressed chunks (docs/codec.md; format in chunk_file.h and CODEC.md) go
 * through the same two implementations:
 *   retrieve: read_open_task checks the header (the file's length against
 *     the stored size the header gives) and, when c->hdr.codec != 0, reads
 *     and checks the frame table into c->frames before any piece runs.
 *     Pieces stay in logical terms: p->off and p->len are payload bytes and
 *     always cover whole segments, and segment i is frame i; the piece's
 *     frames are kvs__xpiece_frames(), their bytes in the file
 *     kvs__xchunk_file_range().  read_piece reads that range, verifies each
 *     frame's stored bytes against c->hdr.segment_sums[i], decodes, and only
 *     then delivers; a frame that does not decode is KVS_XFER_CHECKSUM (a
 *     miss counted as a checksum failure, the file quarantined), never
 *     delivered.  *delivered stays logical bytes (kvstash_bytes_total); the
 *     engine counts the file bytes (kvstash_stored_bytes_total) itself.  An
 *     implementation declares that it decodes with reads_codec; without it a
 *     compressed file is a miss (reason version) left in place.
 *   store: kvs__xfer_compress() says whether this store should compress.
 *     An implementation that compresses a chunk sets c->frames (off, len of
 *     each frame from KVS_FRAMES_OFFSET), c->hdr.segment_sums[i] (XXH3 of
 *     frame i's stored bytes) and kvs__header_set_codec(&c->hdr, stored, 0),
 *     and writes the frame area at KVS_FRAMES_OFFSET padded with zeros to a
 *     multiple of 4096; finish_write_chunk then writes the table block and
 *     the header (table_sum filled there; with a capture, the header the
 *     capture set up is kept, so capture may make these settings).  A
 *     chunk that does not compress
 *     enough (kvs__codec_worth) is written plain as always.  Authenticated
 *     chunks are never compressed.  The CPU tier always holds logical bytes.
 *
 * Threads: read_piece, write_piece and put_piece run on I/O workers, several
 * pieces of one chunk at once; put_host and capture run on the caller's
 * thread.
 * Every implementation brackets its accesses to the caller's memory with
 * kvs__op_copy_begin/end (copies that take a block's time) or
 * kvs__op_direct_begin/end (system calls on that memory), and stops when
 * kvs__xchunk_stopped says so.
 */
#ifndef KVS_XFER_H
#define KVS_XFER_H

#include "engine.h"

/* How a transfer step ended; the engine turns it into a counted reason. */
typedef enum kvs_xfer_rc {
    KVS_XFER_OK = 0,
    KVS_XFER_STOPPED,  /* the chunk stopped (a failure elsewhere, the cut, the
                          deadline) or the op was cancelled: count nothing */
    KVS_XFER_IO,       /* a read or write failed; errno in *err */
    KVS_XFER_CHECKSUM, /* a segment read did not verify */
    KVS_XFER_NOMEM,    /* no memory or staging for it */
    KVS_XFER_DEVICE,   /* the device failed (logged by the implementation) */
} kvs_xfer_rc;

typedef struct kvs_xfer_ops {
    const char *name;
    /* Bytes of one piece of op kind `kind` (a multiple of block_bytes). */
    uint64_t (*piece_bytes)(const kvs_engine *e, kvs_op_kind kind);
    /* Per-op state (op_new, caller's thread) and its release (op_destroy).
     * Optional. */
    kvs_status (*op_begin)(kvs_op *op, const kvs_kv *kv);
    void (*op_end)(kvs_op *op);

    /* Retrieve.  file_open: the chunk file c->fd passed its header checks
     * (worker); optional.  read_piece: read, verify and deliver piece p;
     * *delivered: payload bytes that reached the caller's memory verified.
     * put_host: a CPU tier hit's payload into the caller's memory (caller's
     * thread).  hits_first: put_host can fail (staging), so CPU tier hits
     * are placed before any read is queued and a failure cuts the prefix
     * before a read can complete the op; otherwise they are copied after
     * the reads are queued, overlapping them. */
    void (*file_open)(kvs_xchunk *c);
    /* read_piece takes compressed chunks (hdr.codec != 0); without it such
     * a file is a miss counted as another format version, left in place. */
    bool reads_codec;
    kvs_xfer_rc (*read_piece)(kvs_xpiece *p, kvs_worker *w, uint64_t *delivered, int *err);
    kvs_xfer_rc (*put_host)(kvs_xchunk *c, const void *payload);
    bool hits_first;
    /* put_piece (optional, not with hits_first): piece p of a CPU tier hit,
     * payload + p->off on, into the caller's memory, on a worker: each
     * block's copy bracketed by kvs__op_copy_begin/end, KVS_XFER_STOPPED
     * once kvs__xchunk_stopped says so.  With it, a retrieve whose hits are
     * large spreads them over the workers (engine.c, hits_on_workers). */
    kvs_xfer_rc (*put_piece)(kvs_xpiece *p, const void *payload);

    /* Store.  capture_begin/capture/capture_end (optional, caller's
     * thread): take a copy of each chunk to be written before kvs_store
     * returns (computing c->hdr.segment_sums), so the caller's memory is
     * free at once; capture returns KVS_XFER_NOMEM for a chunk that has no
     * room (dropped), and a failed capture_end fails every captured chunk.
     * Without capture the caller's memory stays borrowed until the op
     * completes.  write_piece: the piece's bytes to c->fd at their offset,
     * sums into c->hdr (unless captured), and a copy of the payload bytes
     * into cpu_copy + p->off when cpu_copy is not NULL (the CPU tier's
     * write-through, from wherever the bytes are hot).  digests (auth on,
     * optional): the per-segment SHA-256 into c->auth after the header,
     * for an implementation whose pieces did not compute them.  chunk_end:
     * the chunk's store is over, whatever happened (release a capture). */
    kvs_xfer_rc (*capture_begin)(kvs_op *op, uint32_t nchunks);
    kvs_xfer_rc (*capture)(kvs_xchunk *c);
    kvs_xfer_rc (*capture_end)(kvs_op *op);
    kvs_xfer_rc (*write_piece)(kvs_xpiece *p, kvs_worker *w, void *cpu_copy, int *err);
    kvs_xfer_rc (*digests)(kvs_xchunk *c);
    void (*chunk_end)(kvs_xchunk *c);

    /* Either direction: c->fd is about to be closed; optional. */
    void (*file_close)(kvs_xchunk *c);
} kvs_xfer_ops;

extern const kvs_xfer_ops kvs__xfer_host;
extern const kvs_xfer_ops kvs__xfer_dev;

/* ---- what the engine offers implementations (engine.c) ------------------ */

/* Whether chunk c should stop moving bytes (settled, cut, or cancelled). */
bool kvs__xchunk_stopped(const kvs_xchunk *c);
/* A copy of one block to or from caller memory; false: cancelled, do not. */
bool kvs__op_copy_begin(kvs_op *op);
void kvs__op_copy_end(kvs_op *op);
/* A system call on caller memory (KVS_KV_DIRECT); false: cancelled. */
bool kvs__op_direct_begin(kvs_op *op);
void kvs__op_direct_end(kvs_op *op);

/* Where the SHA-256 of the auth piece at payload offset off goes in the
 * MAC's input (auth on). */
static inline uint8_t *kvs__xchunk_seg_digest(const kvs_xchunk *c, uint64_t off)
{
    return c->auth + KVS_HEADER_BYTES + 32 * (off / KVS_AUTH_SEGMENT_BYTES);
}

/* Whether a store from `device` memory (true: CUDA) compresses its chunks
 * under the engine's codec setting: on: both; auto: device memory only;
 * off, or auth on (authenticated chunks are never compressed): never. */
static inline bool kvs__xfer_compress(const kvs_engine *e, bool device)
{
    if (e->auth_key)
        return false;
    switch (e->cfg->codec) {
    case KVS_CODEC_MODE_ON: return true;
    case KVS_CODEC_MODE_AUTO: return device;
    case KVS_CODEC_MODE_OFF: break;
    }
    return false;
}

/* Retrieve of a compressed chunk: the frames [*first, *first + *n) of piece
 * p (its segments, whole ones, stopping at the last frame). */
static inline void kvs__xpiece_frames(const kvs_xpiece *p, uint32_t *first, uint32_t *n)
{
    const kvs_xchunk *c = p->chunk;
    uint32_t seg = c->hdr.segment_bytes;
    uint64_t lo = p->off / seg, hi = (p->off + p->len + seg - 1) / seg;
    if (hi > c->hdr.segment_count)
        hi = c->hdr.segment_count;
    *first = (uint32_t)lo;
    *n = hi > lo ? (uint32_t)(hi - lo) : 0;
}

/* The file offset and length of frames [first, first + n) of a compressed
 * chunk, n >= 1 (from the first one's start to the last one's end). */
static inline void kvs__xchunk_file_range(const kvs_xchunk *c, uint32_t first, uint32_t n,
                                          uint64_t *foff, uint64_t *flen)
{
    uint64_t lo, hi;
    kvs__frames_range(&c->frames, first, n, &lo, &hi);
    *foff = KVS_FRAMES_OFFSET + lo;
    *flen = hi - lo;
}

/* Bytes of the file a piece reads: its frames' stored range (compressed)
 * or its padded payload bytes (plain). */
static inline uint64_t kvs__xpiece_stored_len(const kvs_xpiece *p)
{
    const kvs_xchunk *c = p->chunk;
    if (!c->hdr.codec)
        return p->len;
    uint32_t first, n;
    kvs__xpiece_frames(p, &first, &n);
    if (!n)
        return 0;
    uint64_t foff, flen;
    kvs__xchunk_file_range(c, first, n, &foff, &flen);
    return flen;
}

/* Payload bytes (not padding) in [off, off + len) of chunk c. */
static inline uint64_t kvs__xchunk_data_len(const kvs_xchunk *c, uint64_t off, uint64_t len)
{
    return off >= c->payload ? 0 : KVS_MIN(len, c->payload - off);
}

#endif
