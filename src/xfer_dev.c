/*
 * xfer_dev.c - the transfer implementation for CUDA device memory (xfer.h),
 * over the device path of dev.h (dev_cuda.c, or dev_stub.c in a build
 * without CUDA, where no op ever gets this table).
 *
 * What differs from host memory, and why it lives here rather than in the
 * engine:
 *   - a store captures at call time: a gather kernel copies each chunk
 *     into staging and computes its checksums (and, auth on, the segment
 *     SHA-256) on the GPU, so kvs_store returns with the caller's memory
 *     free; the pieces then write from staging (cuFile, or device-to-host
 *     through the pinned ring and pwrite, which is also the route when a
 *     CPU tier entry is filled, dev_cuda.c says why);
 *   - a retrieve reads into staging (cuFile or the ring), verifies on the
 *     GPU and scatters only when every segment matched;
 *   - CPU tier hits need staging, which can run out, so they are placed
 *     before any read is queued (hits_first);
 *   - the codec (docs/codec.md) runs on the GPU: with it in force (auto or
 *     on, auth off) the capture encodes each gathered chunk and keeps it
 *     plain where it does not compress by the writer's rule; a compressed
 *     chunk's pieces read their frames' stored bytes, and a kernel verifies
 *     and decodes them before the gated scatter, piece by piece as before,
 *     so layers still complete in order.
 * The device code asks the engine whether to stop, and brackets its
 * writes into the caller's memory, through kvs_dev_hooks.
 */
#include "xfer.h"

#include "internal.h"

static bool hook_stopped(void *ctx)
{
    return kvs__xchunk_stopped(ctx);
}

static bool hook_begin(void *ctx)
{
    return kvs__op_copy_begin(((kvs_xchunk *)ctx)->op);
}

static void hook_end(void *ctx)
{
    kvs__op_copy_end(((kvs_xchunk *)ctx)->op);
}

static kvs_dev_chunk dev_chunk(const kvs_xchunk *c)
{
    return (kvs_dev_chunk){c->t0, c->tokens, c->payload, c->padded, c->seg_bytes, NULL, 0};
}

/* A capture that compressed chunk c: its frame table and the header of a
 * compressed file (the engine writes both, xfer.h). */
static void set_coded(kvs_xchunk *c, const kvs_dev_coded *k)
{
    for (uint32_t i = 0; i < k->nframes && i < KVS_MAX_SEGMENTS; i++) {
        c->frames.f[i].off = k->off[i];
        c->frames.f[i].len = k->len[i];
    }
    kvs__header_set_codec(&c->hdr, k->stored_bytes, 0);
}

static kvs_xfer_rc from_dev(kvs_dev_rc rc)
{
    switch (rc) {
    case KVS_DEV_OK: return KVS_XFER_OK;
    case KVS_DEV_IO: return KVS_XFER_IO;
    case KVS_DEV_CHECKSUM: return KVS_XFER_CHECKSUM;
    case KVS_DEV_NOMEM: return KVS_XFER_NOMEM;
    case KVS_DEV_STOPPED: return KVS_XFER_STOPPED;
    case KVS_DEV_CUDA: break;
    }
    return KVS_XFER_DEVICE;
}

static uint64_t dev_piece_bytes(const kvs_engine *e, kvs_op_kind kind)
{
    return KVS_MAX(e->piece_bytes,
                   kvs__dev_piece_bytes(e->cfg, e->block_bytes,
                                        kvs__padded_payload(e->chunk_payload),
                                        kind == KVS_OP_STORE));
}

/* Binds the engine to the CUDA device of its first CUDA operation: staging,
 * streams and the data path choice (dev.h). */
static kvs_status engine_dev(kvs_engine *e, int device)
{
    kvs_status st = KVS_OK;
    pthread_mutex_lock(&e->mu);
    if (!e->dev) {
        kvs_dev_params p = {
            .cfg = e->cfg,
            .store = &e->store,
            .slots = e->cfg->gds_io_threads + 2,
            .slot_bytes = KVS_MAX(e->piece_bytes,
                                  kvs__dev_piece_bytes(e->cfg, e->block_bytes,
                                                       kvs__padded_payload(e->chunk_payload),
                                                       false)),
            .block_bytes = e->block_bytes,
            .chunk_padded = kvs__padded_payload(e->chunk_payload),
            .auth = e->auth_key != NULL,
            .codec = kvs__xfer_compress(e, true),
            .cpu_tier = e->cpu != NULL,
            .elem = (uint32_t)kvs_dtype_size(e->ns.dtype),
        };
        kvs_dev *d = NULL;
        st = kvs__dev_open(&p, device, &d);
        if (!st)
            __atomic_store_n(&e->dev, d, __ATOMIC_RELEASE);
    } else if (kvs__dev_device(e->dev) != device) {
        st = kvs__fail(KVS_ERR_INVALID,
                       "kv.device %d: this engine works on cuda:%d, the device of its first GPU "
                       "operation",
                       device, kvs__dev_device(e->dev));
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

static kvs_status dev_op_begin(kvs_op *op, const kvs_kv *kv)
{
    kvs_status st = engine_dev(op->engine, kv->device);
    if (!st)
        st = kvs__dev_op_begin(op->engine->dev, &op->map, &op->dev);
    return st;
}

static void dev_op_end(kvs_op *op)
{
    kvs__dev_op_end(op->dev);
    op->dev = NULL;
}

static void dev_file_open(kvs_xchunk *c)
{
    c->dfile = kvs__dev_file_open(c->op->engine->dev, c->fd);
}

static void dev_file_close(kvs_xchunk *c)
{
    kvs__dev_file_close(c->op->engine->dev, c->dfile);
    c->dfile = NULL;
}

static kvs_xfer_rc dev_read_piece(kvs_xpiece *p, kvs_worker *w, uint64_t *delivered, int *err)
{
    (void)w;
    kvs_xchunk *c = p->chunk;
    if (kvs__xchunk_stopped(c))
        return KVS_XFER_STOPPED;
    kvs_dev_hooks h = {hook_stopped, hook_begin, hook_end, c};
    kvs_dev_chunk dc = dev_chunk(c);
    if (c->hdr.codec) {
        dc.frames = c->frames.f;
        dc.stored = c->hdr.stored_bytes;
    }
    kvs_xfer_rc rc = from_dev(kvs__dev_read_piece(c->op->dev, &dc, c->fd, c->dfile,
                                                  c->hdr.segment_sums, p->off, p->len,
                                                  c->auth ? kvs__xchunk_seg_digest(c, p->off)
                                                          : NULL,
                                                  &h, err));
    if (rc == KVS_XFER_OK)
        *delivered += kvs__xchunk_data_len(c, p->off, p->len);
    return rc;
}

static kvs_xfer_rc dev_put_host(kvs_xchunk *c, const void *payload)
{
    kvs_dev_chunk dc = dev_chunk(c);
    kvs_dev_hooks h = {hook_stopped, hook_begin, hook_end, c};
    return from_dev(kvs__dev_put_host(c->op->dev, &dc, payload, &h));
}

static kvs_xfer_rc dev_capture_begin(kvs_op *op, uint32_t nchunks)
{
    return from_dev(kvs__dev_capture_begin(op->dev, nchunks));
}

static kvs_xfer_rc dev_capture(kvs_xchunk *c)
{
    static int logged;
    kvs_dev_chunk dc = dev_chunk(c);
    kvs_xfer_rc rc = from_dev(kvs__dev_capture(c->op->dev, &dc, c->hdr.segment_sums, &c->stage));
    if (rc != KVS_XFER_OK)
        kvs__log_once(&logged, KVS_LOG_WARN,
                      "GPU staging is full (cufile_buffer_size %llu MiB); chunks that do not "
                      "fit are not stored (counted in kvstash_store_failures_total)",
                      (unsigned long long)c->op->engine->cfg->cufile_buffer_size);
    return rc;
}

static kvs_xfer_rc dev_capture_end(kvs_op *op)
{
    kvs_xfer_rc rc = from_dev(kvs__dev_capture_end(op->dev));
    for (uint32_t i = 0; rc == KVS_XFER_OK && i < op->nchunks; i++) {
        kvs_xchunk *c = &op->chunks[i];
        kvs_dev_coded k;
        if (atomic_load(&c->state) != KVS_CH_PENDING || !c->stage)
            continue;
        kvs__dev_stage_coded(c->stage, &k);
        if (k.codec)
            set_coded(c, &k);
    }
    return rc;
}

static kvs_xfer_rc dev_write_piece(kvs_xpiece *p, kvs_worker *w, void *cpu_copy, int *err)
{
    (void)w;
    kvs_xchunk *c = p->chunk;
    if (kvs__xchunk_stopped(c))
        return KVS_XFER_STOPPED;
    return from_dev(kvs__dev_write_piece(c->op->engine->dev, c->stage, c->fd, c->dfile, p->off,
                                         p->len, kvs__xchunk_data_len(c, p->off, p->len),
                                         cpu_copy ? (char *)cpu_copy + p->off : NULL, err));
}

/* The capture hashed the pieces on the GPU. */
static kvs_xfer_rc dev_digests(kvs_xchunk *c)
{
    if (!c->stage)
        return KVS_XFER_OK;
    return from_dev(kvs__dev_stage_digests(c->op->engine->dev, c->stage,
                                           c->auth + KVS_HEADER_BYTES,
                                           kvs__auth_segment_count(c->payload)));
}

static void dev_chunk_end(kvs_xchunk *c)
{
    kvs__dev_stage_free(c->op->engine->dev, c->stage);
    c->stage = NULL;
}

const kvs_xfer_ops kvs__xfer_dev = {
    .name = "cuda",
    .piece_bytes = dev_piece_bytes,
    .op_begin = dev_op_begin,
    .op_end = dev_op_end,
    .file_open = dev_file_open,
    .reads_codec = true,
    .read_piece = dev_read_piece,
    .put_host = dev_put_host,
    .hits_first = true,
    .capture_begin = dev_capture_begin,
    .capture = dev_capture,
    .capture_end = dev_capture_end,
    .write_piece = dev_write_piece,
    .digests = dev_digests,
    .chunk_end = dev_chunk_end,
    .file_close = dev_file_close,
};
