/*
 * xfer_host.c - the transfer implementation for host memory (xfer.h).
 *
 * Each piece moves a block per system call through the worker's own
 * bounce buffer (1 MiB reads, 2 MiB writes: engine.c):
 *
 *   retrieve: pread into the bounce buffer, verify each segment's checksum
 *             there while the block is in the core's cache, and only then
 *             scatter it into the caller's rows;
 *   store:    gather the caller's rows into the bounce buffer, checksum
 *             them there, copy them into the CPU tier's entry if one is
 *             being filled, and pwrite, each write ending on a multiple of
 *             the block in the file (see write_blocks).
 *
 * Why the bounce buffer rather than the caller's memory: a read that hangs
 * on a sick filesystem can only ever write the worker's buffer, so a
 * retrieve can give up at its deadline and return what it has, and nothing
 * unverified ever lands in the caller's KV cache.  Callers who accept the
 * borrowing rules (KVS_KV_DIRECT) get the zero-copy path: the block's rows
 * are read into (written from) their memory with one preadv (pwritev) and
 * checksummed there, one copy per byte.
 *
 * Compressed chunks (docs/codec.md) take neither: a retrieve reads the
 * piece's frames into a buffer of the piece, verifies each frame's stored
 * bytes, decodes it on the CPU and scatters its logical bytes (decoding
 * cannot land in place, KVS_KV_DIRECT or not); a store with codec on
 * gathers each segment into the bounce buffer, encodes it into a buffer of
 * the chunk's frame area and writes that once, or writes the chunk plain
 * when it does not compress (kvs__codec_worth).
 */
#include "xfer.h"

#include "checksum.h"
#include "io_ops.h"
#include "io_posix.h"

#include <errno.h>
#include <string.h>

/* Regions of the caller's memory one zero-copy call may take: a 2 MiB
 * block of a paged cache with 16-token pages of 2 KiB rows is 64 of them;
 * a block with more goes through the bounce buffer. */
#define MAX_DIRECT_IOV 256
/* Stored bytes read per system call on the compressed path. */
#define CODEC_READ_BYTES (4u << 20)

/* Where a piece's worker time goes (kvs_stats xfer_io_ns, _checksum_ns,
 * _copy_ns): a lap per phase, added to the engine once per piece.  Two
 * clock reads per phase per block (1 MiB or more) cost nothing
 * measurable. */
typedef struct laps {
    uint64_t t, io, sum, copy, codec;
} laps;

static void lap(laps *l, uint64_t *phase)
{
    uint64_t now = kvs__now_ns();
    *phase += now - l->t;
    l->t = now;
}

static void laps_add(kvs_engine *e, const laps *l)
{
    KVS_STAT_ADD(e, xfer_io_ns, l->io);
    KVS_STAT_ADD(e, xfer_checksum_ns, l->sum);
    KVS_STAT_ADD(e, xfer_copy_ns, l->copy);
    KVS_STAT_ADD(e, xfer_codec_ns, l->codec);
}

/* SHA-256 of every auth piece of [off, off + len), a whole number of them
 * or the payload's tail. */
static void digest_range(const kvs_xchunk *c, uint64_t off, const char *data, uint64_t len)
{
    for (uint64_t o = 0; o < len; o += KVS_AUTH_SEGMENT_BYTES)
        kvs__segment_sha256(data + o, KVS_MIN((uint64_t)KVS_AUTH_SEGMENT_BYTES, len - o),
                            kvs__xchunk_seg_digest(c, off + o));
}

/* Verifies the segments of payload range [off, off+len) held at data; with
 * auth on, also keeps their SHA-256 for the chunk's MAC. */
static bool verify_segments(const kvs_xchunk *c, uint64_t off, const char *data, uint64_t len)
{
    for (uint64_t o = 0; o < len; o += c->seg_bytes) {
        uint64_t n = KVS_MIN((uint64_t)c->seg_bytes, len - o);
        uint64_t i = (off + o) / c->seg_bytes;
        if (!kvs__segment_ok(&c->hdr, i, data + o, n))
            return false;
        if (c->auth)
            digest_range(c, off + o, data + o, n);
    }
    return true;
}

static void fill_segments(kvs_xchunk *c, uint64_t off, const char *data, uint64_t len)
{
    for (uint64_t o = 0; o < len; o += c->seg_bytes) {
        uint64_t n = KVS_MIN((uint64_t)c->seg_bytes, len - o);
        uint64_t i = (off + o) / c->seg_bytes;
        c->hdr.segment_sums[i] = kvs__checksum(data + o, n);
        if (c->auth)
            digest_range(c, off + o, data + o, n);
    }
}

static bool verify_regions(const kvs_xchunk *c, uint64_t off, const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++) {
        if (!verify_segments(c, off, iov[i].iov_base, iov[i].iov_len))
            return false;
        off += iov[i].iov_len;
    }
    return true;
}

static void fill_regions(kvs_xchunk *c, uint64_t off, const struct iovec *iov, int n)
{
    for (int i = 0; i < n; i++) {
        fill_segments(c, off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
}

/* One block of a piece: a bounce buffer's worth of the payload, how much of
 * it the chunk's tokens fill, and, for the zero-copy path, the regions of
 * the caller's memory it maps to (niov 0: it cannot go that way). */
typedef struct hblock {
    uint64_t off;      /* bytes into the payload */
    uint64_t len;      /* bytes, at most block_bytes */
    uint64_t data_len; /* of len, the bytes of the chunk's tokens */
    off_t foff;        /* its offset in the file */
    int niov;
    struct iovec iov[MAX_DIRECT_IOV];
} hblock;

/* The block of piece p at payload offset off, mapped for the zero-copy path
 * when `direct` and the tokens fill it; KVS_XFER_STOPPED once the chunk is. */
static kvs_xfer_rc block_at(const kvs_xpiece *p, uint64_t off, uint64_t block, bool direct,
                            hblock *b)
{
    const kvs_xchunk *c = p->chunk;
    if (kvs__xchunk_stopped(c))
        return KVS_XFER_STOPPED;
    b->off = off;
    b->len = KVS_MIN(block, p->off + p->len - off);
    b->data_len = kvs__xchunk_data_len(c, off, b->len);
    b->foff = (off_t)(KVS_PAYLOAD_OFFSET + off);
    b->niov = 0;
    if (direct && b->data_len == b->len)
        b->niov = kvs__kvmap_regions(&c->op->map, c->t0, c->tokens, off, b->len,
                                     c->fd_direct ? KVS_FILE_ALIGN : 1, c->seg_bytes, b->iov,
                                     MAX_DIRECT_IOV);
    return KVS_XFER_OK;
}

/* A store writes a chunk per piece: buffered writes to one file take the
 * file's lock (ext4, XFS and most others hold the inode lock for the whole
 * write), so pieces of one chunk on several workers wait for each other,
 * while workers on different chunks' files do not.  A retrieve splits
 * chunks: reads share the lock, and smaller pieces let layers arrive in
 * order. */
static uint64_t host_piece_bytes(const kvs_engine *e, kvs_op_kind kind)
{
    if (kind == KVS_OP_STORE)
        return KVS_MAX(e->piece_bytes,
                       KVS_ALIGN_UP(kvs__padded_payload(e->chunk_payload), e->block_bytes));
    return e->piece_bytes;
}

static kvs_xfer_rc read_blocks(kvs_xpiece *p, kvs_worker *w, uint64_t *delivered, int *err,
                               laps *l)
{
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    char *bounce = w->bounce;
    const bool direct = op->direct && c->cover == KVS_SLOTS_ALL;
    hblock b;
    for (uint64_t at = p->off; at < p->off + p->len; at += b.len) {
        kvs_xfer_rc st = block_at(p, at, op->engine->host_read_block, direct, &b);
        if (st != KVS_XFER_OK)
            return st;
        if (b.niov > 0) {
            if (!kvs__op_direct_begin(op))
                return KVS_XFER_STOPPED;
            struct iovec v[MAX_DIRECT_IOV];
            memcpy(v, b.iov, (size_t)b.niov * sizeof *b.iov);
            l->t = kvs__now_ns();
            int rc = kvs__posix_rw_full(c->fd, v, b.niov, b.foff, false);
            *err = errno;
            lap(l, &l->io);
            bool good = rc == 0 && verify_regions(c, b.off, b.iov, b.niov);
            lap(l, &l->sum);
            kvs__op_direct_end(op);
            if (rc != 0)
                return KVS_XFER_IO;
            if (!good)
                return KVS_XFER_CHECKSUM;
        } else {
            l->t = kvs__now_ns();
            if (kvs__pread_full(c->fd, bounce, b.len, b.foff) != 0) {
                *err = errno;
                return KVS_XFER_IO;
            }
            lap(l, &l->io);
            bool good = verify_segments(c, b.off, bounce, b.len);
            lap(l, &l->sum);
            if (!good)
                return KVS_XFER_CHECKSUM;
            if (b.data_len) {
                if (!kvs__op_copy_begin(op))
                    return KVS_XFER_STOPPED;
                kvs__kvmap_scatter(&op->map, c->t0, c->tokens, b.off, bounce, b.data_len);
                kvs__op_copy_end(op);
                lap(l, &l->copy);
            }
        }
        *delivered += b.data_len;
    }
    return KVS_XFER_OK;
}

/* Adds a piece's laps to the engine's timers and passes its outcome on. */
static kvs_xfer_rc piece_done(const kvs_xpiece *p, const laps *l, kvs_xfer_rc rc)
{
    laps_add(p->chunk->op->engine, l);
    return rc;
}

/* A compressed chunk's piece: its frames' stored range read into a buffer
 * of its own (block-aligned, for O_DIRECT), in calls of CODEC_READ_BYTES;
 * then frame by frame: verify the stored bytes, decode into the bounce
 * buffer (a frame's logical bytes are a segment, at most block_bytes), and
 * scatter.  A frame that does not verify or decode fails the piece as a
 * checksum failure before any of its bytes reach the caller. */
static kvs_xfer_rc read_frames(kvs_xpiece *p, kvs_worker *w, uint64_t *delivered, int *err,
                               laps *l)
{
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    const kvs_chunk_header *h = &c->hdr;
    uint32_t first, n;
    kvs__xpiece_frames(p, &first, &n);
    if (n == 0)
        return KVS_XFER_OK;
    uint64_t foff, flen;
    kvs__xchunk_file_range(c, first, n, &foff, &flen);
    uint64_t lo = foff / KVS_FILE_ALIGN * KVS_FILE_ALIGN;
    uint64_t hi = KVS_ALIGN_UP(foff + flen, (uint64_t)KVS_FILE_ALIGN);
    char *buf = kvs__aligned_alloc(KVS_FILE_ALIGN, hi - lo);
    if (!buf)
        return KVS_XFER_NOMEM;
    kvs_xfer_rc rc = KVS_XFER_OK;
    l->t = kvs__now_ns();
    for (uint64_t at = lo; at < hi; at += CODEC_READ_BYTES) {
        if (kvs__xchunk_stopped(c)) {
            rc = KVS_XFER_STOPPED;
            goto out;
        }
        if (kvs__pread_full(c->fd, buf + (at - lo), KVS_MIN((uint64_t)CODEC_READ_BYTES, hi - at),
                            (off_t)at) != 0) {
            *err = errno;
            rc = KVS_XFER_IO;
            goto out;
        }
    }
    lap(l, &l->io);
    uint32_t elem = (uint32_t)kvs_dtype_size((kvs_dtype)h->dtype);
    char *plain = w->bounce;
    for (uint32_t i = first; i < first + n; i++) {
        if (kvs__xchunk_stopped(c)) {
            rc = KVS_XFER_STOPPED;
            goto out;
        }
        const char *frame = buf + (KVS_FRAMES_OFFSET + c->frames.f[i].off - lo);
        uint32_t len = c->frames.f[i].len, nbytes = kvs__frame_nbytes(h, i);
        bool good = kvs__segment_ok(h, i, frame, len);
        lap(l, &l->sum);
        good = good && nbytes <= w->bounce_bytes &&
               kvs__codec_decode_frame(frame, len, nbytes, elem, plain) == 0;
        lap(l, &l->codec);
        if (!good) {
            rc = KVS_XFER_CHECKSUM;
            goto out;
        }
        if (!kvs__op_copy_begin(op)) {
            rc = KVS_XFER_STOPPED;
            goto out;
        }
        kvs__kvmap_scatter(&op->map, c->t0, c->tokens, (uint64_t)i * h->segment_bytes, plain,
                           nbytes);
        kvs__op_copy_end(op);
        lap(l, &l->copy);
        *delivered += nbytes;
    }
out:
    kvs__free(buf);
    return rc;
}

static kvs_xfer_rc host_read_piece(kvs_xpiece *p, kvs_worker *w, uint64_t *delivered, int *err)
{
    laps l = {0};
    if (p->chunk->hdr.codec)
        return piece_done(p, &l, read_frames(p, w, delivered, err, &l));
    return piece_done(p, &l, read_blocks(p, w, delivered, err, &l));
}

/* The caller's thread, which owns its memory: nothing to bracket. */
static kvs_xfer_rc host_put_host(kvs_xchunk *c, const void *payload)
{
    laps l = {.t = kvs__now_ns()};
    kvs__kvmap_scatter(&c->op->map, c->t0, c->tokens, 0, payload, c->payload);
    lap(&l, &l.copy);
    laps_add(c->op->engine, &l);
    return KVS_XFER_OK;
}

/* A piece of a CPU tier hit on a worker, a read block's worth per copy so
 * that cancelling waits for one block at most. */
static kvs_xfer_rc host_put_piece(kvs_xpiece *p, const void *payload)
{
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    const uint64_t end = KVS_MIN(p->off + p->len, c->payload), block = op->engine->host_read_block;
    laps l = {.t = kvs__now_ns()};
    kvs_xfer_rc rc = KVS_XFER_OK;
    for (uint64_t at = p->off; at < end; at += block) {
        if (kvs__xchunk_stopped(c) || !kvs__op_copy_begin(op)) {
            rc = KVS_XFER_STOPPED;
            break;
        }
        kvs__kvmap_scatter(&op->map, c->t0, c->tokens, at, (const char *)payload + at,
                           KVS_MIN(block, end - at));
        kvs__op_copy_end(op);
    }
    lap(&l, &l.copy);
    laps_add(op->engine, &l);
    return rc;
}

/* A store's writes end at file offsets that are multiples of the write
 * block, not payload offsets: the page cache gives a buffered write folios
 * as large as the write and as aligned as its file offset, and the payload
 * starts KVS_PAYLOAD_OFFSET into the file, so payload-aligned writes of any
 * size would leave every file in small folios (and reads of small folios
 * run at two thirds of the speed of reads of 2 MiB ones on the build VM,
 * docs/design.md).  So the worker's buffer is [carry][block]: each block
 * is gathered and hashed after a carry of KVS_PAYLOAD_OFFSET bytes, and all
 * but its last KVS_PAYLOAD_OFFSET bytes are written together with the
 * carry; those stay behind as the next block's carry.  A zero-copy block
 * (KVS_KV_DIRECT) is written the same way from the caller's rows, with the
 * carry as its first region and its own tail copied into the carry. */
#define CARRY ((uint64_t)KVS_PAYLOAD_OFFSET)

/* Allocates the piece's range of the file before it is written.  On the
 * build VM's ext4 that takes a store from 0.38-0.51 to 0.60-0.62 of memcpy
 * (docs/design.md): the buffered writes then fill blocks that exist instead
 * of reserving delayed allocations folio by folio.  A filesystem that
 * cannot (EOPNOTSUPP, or anything else but a full store) still takes the
 * writes; a full one fails the chunk before any byte is copied. */
static kvs_xfer_rc reserve(const kvs_xpiece *p, int *err)
{
    const kvs_xchunk *c = p->chunk;
    if (kvs__io()->fallocate(c->fd, (off_t)(KVS_PAYLOAD_OFFSET + p->off), (off_t)p->len) == 0)
        return KVS_XFER_OK;
    if (errno != ENOSPC && errno != EDQUOT)
        return KVS_XFER_OK;
    *err = errno;
    return KVS_XFER_IO;
}

static kvs_xfer_rc write_blocks(kvs_xpiece *p, kvs_worker *w, void *cpu_copy, int *err, laps *l)
{
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    char *carry = w->bounce, *blk = carry + CARRY;
    uint64_t held = 0; /* bytes in carry, the file's bytes just before the block */
    /* With a CPU tier entry to fill, the bounce path copies into it from
     * the cache-hot block. */
    const bool direct = op->direct && !cpu_copy;
    const uint64_t end = p->off + p->len;
    l->t = kvs__now_ns();
    kvs_xfer_rc got = reserve(p, err);
    lap(l, &l->io);
    if (got != KVS_XFER_OK)
        return got;
    hblock b;
    for (uint64_t at = p->off; at < end; at += b.len) {
        kvs_xfer_rc st = block_at(p, at, op->engine->host_write_block, direct, &b);
        if (st != KVS_XFER_OK)
            return st;
        if (b.niov > 0) {
            if (!kvs__op_direct_begin(op))
                return KVS_XFER_STOPPED;
            l->t = kvs__now_ns();
            fill_regions(c, b.off, b.iov, b.niov);
            lap(l, &l->sum);
            /* The same shape from the caller's rows: the carry, then the
             * block but its tail, whose 4 KiB are copied into the carry. */
            uint64_t keep = b.off + b.len == end ? 0 : KVS_MIN(CARRY, b.len);
            struct iovec v[MAX_DIRECT_IOV + 1];
            int n = 0;
            if (held)
                v[n++] = (struct iovec){carry + CARRY - held, held};
            int k = keep ? kvs__kvmap_regions(&op->map, c->t0, c->tokens, b.off, b.len - keep,
                                              c->fd_direct ? KVS_FILE_ALIGN : 1, 1, v + n,
                                              MAX_DIRECT_IOV)
                         : -1;
            if (k <= 0) { /* the whole block, as block_at mapped it */
                keep = 0;
                memcpy(v + n, b.iov, (size_t)b.niov * sizeof *b.iov);
                k = b.niov;
            }
            int rc = kvs__posix_rw_full(c->fd, v, n + k, b.foff - (off_t)held, true);
            *err = errno;
            if (rc == 0 && keep)
                kvs__kvmap_gather(&op->map, c->t0, c->tokens, b.off + b.len - keep,
                                  carry + CARRY - keep, keep);
            held = rc == 0 ? keep : 0;
            lap(l, &l->io);
            kvs__op_direct_end(op);
            if (rc != 0)
                return KVS_XFER_IO;
        } else {
            if (!kvs__op_copy_begin(op))
                return KVS_XFER_STOPPED;
            l->t = kvs__now_ns();
            kvs__kvmap_gather(&op->map, c->t0, c->tokens, b.off, blk, b.data_len);
            kvs__op_copy_end(op);
            memset(blk + b.data_len, 0, b.len - b.data_len);
            lap(l, &l->copy);
            fill_segments(c, b.off, blk, b.len);
            lap(l, &l->sum);
            if (cpu_copy && b.data_len) {
                memcpy((char *)cpu_copy + b.off, blk, b.data_len);
                lap(l, &l->copy);
            }
            /* the last block writes all it has; any other keeps its tail */
            uint64_t keep = b.off + b.len == end ? 0 : KVS_MIN(CARRY, b.len);
            uint64_t n = held + b.len - keep;
            if (n && kvs__pwrite_full(c->fd, blk - held, n, b.foff - (off_t)held) != 0) {
                *err = errno;
                return KVS_XFER_IO;
            }
            memcpy(carry + CARRY - keep, blk + b.len - keep, keep);
            held = keep;
            lap(l, &l->io);
        }
    }
    return KVS_XFER_OK;
}

/* codec on, a chunk in one piece: each segment gathered into the bounce
 * buffer (and copied into the CPU tier's entry: it holds logical bytes),
 * encoded into the frame area, whose frames are summed; then, when the
 * area is worth it, written at KVS_FRAMES_OFFSET with the header set up for
 * finish_write_chunk (xfer.h).  *written: false when nothing was written
 * because the chunk does not compress (or no buffer): write it plain. */
static kvs_xfer_rc write_frames(kvs_xpiece *p, kvs_worker *w, void *cpu_copy, int *err, laps *l,
                                bool *written)
{
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    kvs_chunk_header *h = &c->hdr;
    *written = false;
    uint32_t elem = (uint32_t)kvs_dtype_size((kvs_dtype)h->dtype);
    uint64_t cap = KVS_ALIGN_UP(kvs__codec_area_bound(c->payload, h->segment_bytes),
                                (uint64_t)KVS_FILE_ALIGN);
    /* frame offsets are 32-bit: a chunk whose frames could pass 4 GiB is
     * stored plain */
    if (cap == 0 || cap > UINT32_MAX || h->segment_bytes > w->bounce_bytes)
        return KVS_XFER_OK;
    char *area = kvs__aligned_alloc(KVS_FILE_ALIGN, cap);
    if (!area)
        return KVS_XFER_OK;
    char *bounce = w->bounce;
    kvs_xfer_rc rc = KVS_XFER_OK;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < h->segment_count; i++) {
        if (kvs__xchunk_stopped(c) || !kvs__op_copy_begin(op)) {
            rc = KVS_XFER_STOPPED;
            goto out;
        }
        uint64_t off = (uint64_t)i * h->segment_bytes;
        uint32_t nbytes = kvs__frame_nbytes(h, i);
        l->t = kvs__now_ns();
        kvs__kvmap_gather(&op->map, c->t0, c->tokens, off, bounce, nbytes);
        kvs__op_copy_end(op);
        if (cpu_copy)
            memcpy((char *)cpu_copy + off, bounce, nbytes);
        lap(l, &l->copy);
        size_t len = kvs__codec_encode_frame(bounce, nbytes, elem, area + pos);
        lap(l, &l->codec);
        if (len == 0) /* not a size the codec takes: plain */
            goto out;
        c->frames.f[i].off = (uint32_t)pos;
        c->frames.f[i].len = (uint32_t)len;
        h->segment_sums[i] = kvs__checksum(area + pos, len);
        lap(l, &l->sum);
        pos += len;
    }
    if (!kvs__codec_worth(pos, c->payload))
        goto out;
    uint64_t padded = KVS_ALIGN_UP(pos, (uint64_t)KVS_FILE_ALIGN);
    memset(area + pos, 0, padded - pos);
    *written = true;
    if (kvs__pwrite_full(c->fd, area, padded, KVS_FRAMES_OFFSET) != 0) {
        *err = errno;
        rc = KVS_XFER_IO;
        goto out;
    }
    lap(l, &l->io);
    kvs__header_set_codec(h, pos, 0);
out:
    kvs__free(area);
    return rc;
}

static kvs_xfer_rc host_write_piece(kvs_xpiece *p, kvs_worker *w, void *cpu_copy, int *err)
{
    laps l = {0};
    kvs_xchunk *c = p->chunk;
    /* host memory compresses only under codec: on, and a chunk is one piece
     * here (host_piece_bytes) */
    if (kvs__xfer_compress(c->op->engine, false) && p->off == 0 && p->len >= c->padded) {
        bool written;
        kvs_xfer_rc rc = write_frames(p, w, cpu_copy, err, &l, &written);
        if (rc != KVS_XFER_OK || written)
            return piece_done(p, &l, rc);
        /* the CPU tier's copy is complete already when every frame was
         * gathered; copying it again costs less than tracking how far */
    }
    return piece_done(p, &l, write_blocks(p, w, cpu_copy, err, &l));
}

const kvs_xfer_ops kvs__xfer_host = {
    .name = "host",
    .piece_bytes = host_piece_bytes,
    .reads_codec = true,
    .read_piece = host_read_piece,
    .put_host = host_put_host,
    .hits_first = false,
    .put_piece = host_put_piece,
    .write_piece = host_write_piece,
};
