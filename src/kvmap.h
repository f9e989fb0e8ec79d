/*
 * kvmap.h - where each byte of a chunk's payload lives in the caller's KV
 * memory (a kvs_kv), and copies between the two.
 */
#ifndef KVS_KVMAP_H
#define KVS_KVMAP_H

#include "key.h"

#include <sys/uio.h>

typedef struct kvs_kvmap {
    kvs_kv kv;               /* the caller's description, strides resolved */
    void **layers;           /* owned copy of kv.layers */
    uint32_t num_layers;
    uint32_t num_planes;
    uint32_t num_heads;      /* head rows per token row */
    uint64_t row_bytes;      /* num_heads * head_bytes: a payload row */
    uint64_t head_bytes;     /* one head row, contiguous in memory */
    bool rows_contiguous;    /* kv.head_stride == head_bytes (or one head):
                                a token's row is one run of memory */
    size_t num_tokens;       /* tokens of the prompt */
    const int64_t *slots;    /* the caller's slot_mapping, or NULL (identity) */
} kvs_kvmap;

/* Validates kv against the namespace (every field, the strides' overlap as
 * include/kvstash.h states it, every slot the prompt's whole chunks use) and
 * fills *m.  KVS_ERR_INVALID names the bad field, or the strides and what is
 * accepted. */
kvs_status kvs__kvmap_init(kvs_kvmap *m, const kvs_ns *ns, const kvs_kv *kv, size_t num_tokens);
void kvs__kvmap_clear(kvs_kvmap *m);

typedef enum kvs_slot_cover {
    KVS_SLOTS_ALL = 0,   /* every token of the chunk has a slot */
    KVS_SLOTS_SOME = 1,  /* some do, some are negative */
    KVS_SLOTS_NONE = 2,  /* all negative: the chunk is already in place */
} kvs_slot_cover;

kvs_slot_cover kvs__kvmap_cover(const kvs_kvmap *m, size_t t0, uint32_t tokens);

/* Payload range [off, off+len) of the chunk of `tokens` tokens starting at
 * prompt token t0: copy from src into the KV memory (rows with a negative
 * slot are skipped), or from the KV memory into dst.  Host memory only. */
void kvs__kvmap_scatter(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off,
                        const void *src, uint64_t len);
void kvs__kvmap_gather(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off, void *dst,
                       uint64_t len);

/* The same range as at most max_iov contiguous regions of KV memory, each
 * starting on an `align`-byte boundary and a multiple of it long.  Returns
 * the count, or -1 when the range needs more regions, meets a negative slot,
 * is not aligned, or has a region starting inside a checksum segment of
 * seg_bytes (so that each segment can be verified within one region). */
int kvs__kvmap_regions(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off, uint64_t len,
                       uint64_t align, uint64_t seg_bytes, struct iovec *iov, int max_iov);

#endif
