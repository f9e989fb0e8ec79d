/*
 * kvmap.c - the map between a chunk's layer-major payload and the caller's
 * KV memory.
 *
 * The payload of a chunk of T tokens is rows in the order
 * [layer][plane][token]; the caller's memory is described by a kvs_kv
 * (per-layer base pointers, a slot per token, strides).  Walking a payload
 * range row by row and merging rows whose addresses are consecutive turns a
 * contiguous buffer into one memcpy per (layer, plane) and a paged cache
 * into one per block, which is what keeps host copies at memory speed.
 */
#include "kvmap.h"

#include <string.h>

static uint64_t slot_of(const kvs_kvmap *m, size_t token)
{
    return m->slots ? (uint64_t)m->slots[token] : (uint64_t)token;
}

static bool slot_negative(const kvs_kvmap *m, size_t token)
{
    return m->slots && m->slots[token] < 0;
}

static char *row_addr(const kvs_kvmap *m, uint32_t layer, uint32_t plane, uint64_t slot)
{
    const kvs_kv *kv = &m->kv;
    return (char *)m->layers[layer] + plane * kv->plane_stride +
           (slot / kv->block_size) * kv->block_stride + (slot % kv->block_size) * kv->slot_stride;
}

kvs_status kvs__kvmap_init(kvs_kvmap *m, const kvs_ns *ns, const kvs_kv *kv, size_t num_tokens)
{
    if (!kv)
        return kvs__fail(KVS_ERR_INVALID, "kv: NULL");
    if (kv->mem != KVS_MEM_HOST && kv->mem != KVS_MEM_CUDA)
        return kvs__fail(KVS_ERR_INVALID, "kv.mem %d is neither HOST (0) nor CUDA (1)", (int)kv->mem);
    if (kv->num_layers != ns->num_layers)
        return kvs__fail(KVS_ERR_INVALID, "kv.num_layers %u does not match the namespace's %u",
                         kv->num_layers, ns->num_layers);
    if (!kv->layers)
        return kvs__fail(KVS_ERR_INVALID, "kv.layers: NULL");
    for (uint32_t l = 0; l < kv->num_layers; l++)
        if (!kv->layers[l])
            return kvs__fail(KVS_ERR_INVALID, "kv.layers[%u]: NULL", l);
    if (kv->num_slots == 0)
        return kvs__fail(KVS_ERR_INVALID, "kv.num_slots: 0");
    if (kv->flags & ~(uint32_t)KVS_KV_DIRECT)
        return kvs__fail(KVS_ERR_INVALID, "kv.flags 0x%x has unknown bits", kv->flags);

    kvs_kv r = *kv;
    uint64_t row = ns->row_bytes;
    if (r.block_size == 0)
        r.block_size = r.num_slots;
    if (r.slot_stride == 0)
        r.slot_stride = row;
    if (r.block_stride == 0)
        r.block_stride = r.block_size * r.slot_stride;
    uint64_t nblocks = (r.num_slots + r.block_size - 1) / r.block_size;
    if (r.plane_stride == 0)
        r.plane_stride = nblocks * r.block_stride;
    if (r.slot_stride < row)
        return kvs__fail(KVS_ERR_INVALID,
                         "kv.slot_stride %llu is smaller than a token row (%llu bytes)",
                         (unsigned long long)r.slot_stride, (unsigned long long)row);
    if (nblocks > 1 && r.block_stride < r.block_size * r.slot_stride)
        return kvs__fail(KVS_ERR_INVALID, "kv.block_stride %llu overlaps the slots of a block",
                         (unsigned long long)r.block_stride);
    if (ns->num_planes == 2 && r.plane_stride < row)
        return kvs__fail(KVS_ERR_INVALID, "kv.plane_stride %llu is smaller than a token row",
                         (unsigned long long)r.plane_stride);

    /* Every slot the whole chunks of the prompt use must be in range. */
    size_t used = num_tokens;
    if (kv->slot_mapping) {
        for (size_t t = 0; t < used; t++) {
            int64_t s = kv->slot_mapping[t];
            if (s >= 0 && (uint64_t)s >= r.num_slots)
                return kvs__fail(KVS_ERR_INVALID,
                                 "kv.slot_mapping[%zu] = %lld is outside 0..%llu (num_slots)", t,
                                 (long long)s, (unsigned long long)r.num_slots - 1);
        }
    } else if (used > r.num_slots) {
        return kvs__fail(KVS_ERR_INVALID,
                         "the prompt has %zu tokens but kv holds %llu slots and no slot_mapping",
                         used, (unsigned long long)r.num_slots);
    }

    memset(m, 0, sizeof *m);
    m->layers = kvs__malloc(kv->num_layers * sizeof(void *));
    if (!m->layers)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory copying kv.layers");
    memcpy(m->layers, kv->layers, kv->num_layers * sizeof(void *));
    r.layers = m->layers;
    m->kv = r;
    m->num_layers = kv->num_layers;
    m->num_planes = ns->num_planes;
    m->row_bytes = row;
    m->num_tokens = num_tokens;
    m->slots = kv->slot_mapping;
    return KVS_OK;
}

void kvs__kvmap_clear(kvs_kvmap *m)
{
    if (m) {
        kvs__free(m->layers);
        m->layers = NULL;
    }
}

kvs_slot_cover kvs__kvmap_cover(const kvs_kvmap *m, size_t t0, uint32_t tokens)
{
    if (!m->slots)
        return KVS_SLOTS_ALL;
    size_t neg = 0;
    for (uint32_t i = 0; i < tokens; i++)
        neg += m->slots[t0 + i] < 0;
    return neg == 0 ? KVS_SLOTS_ALL : neg == tokens ? KVS_SLOTS_NONE : KVS_SLOTS_SOME;
}

/* Calls fn(addr, payload_pos, n) for each maximal run of consecutive memory
 * covering payload [off, off+len); rows of tokens with negative slots are
 * passed with addr NULL. */
typedef void (*run_fn)(void *ctx, char *addr, uint64_t pos, uint64_t n);

static void walk(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off, uint64_t len,
                 run_fn fn, void *ctx)
{
    const uint64_t row = m->row_bytes;
    uint64_t end = off + len;
    char *run_addr = NULL;
    uint64_t run_pos = off, run_len = 0;
    bool run_null = false;
    for (uint64_t pos = off; pos < end;) {
        uint64_t r = pos / row, in_row = pos % row;
        uint32_t layer = (uint32_t)(r / ((uint64_t)m->num_planes * tokens));
        uint32_t plane = (uint32_t)((r / tokens) % m->num_planes);
        size_t token = t0 + (size_t)(r % tokens);
        uint64_t n = KVS_MIN(row - in_row, end - pos);
        bool neg = slot_negative(m, token);
        char *addr = neg ? NULL : row_addr(m, layer, plane, slot_of(m, token)) + in_row;
        bool extends = run_len > 0 && neg == run_null &&
                       (neg || addr == run_addr + run_len);
        if (!extends) {
            if (run_len)
                fn(ctx, run_null ? NULL : run_addr, run_pos, run_len);
            run_addr = addr;
            run_pos = pos;
            run_len = 0;
            run_null = neg;
        }
        run_len += n;
        pos += n;
    }
    if (run_len)
        fn(ctx, run_null ? NULL : run_addr, run_pos, run_len);
}

typedef struct copy_ctx {
    char *buf;       /* the contiguous side, at payload offset base */
    uint64_t base;
} copy_ctx;

static void scatter_run(void *ctx, char *addr, uint64_t pos, uint64_t n)
{
    copy_ctx *c = ctx;
    if (addr)
        memcpy(addr, c->buf + (pos - c->base), n);
}

static void gather_run(void *ctx, char *addr, uint64_t pos, uint64_t n)
{
    copy_ctx *c = ctx;
    if (addr)
        memcpy(c->buf + (pos - c->base), addr, n);
    else
        memset(c->buf + (pos - c->base), 0, n);
}

void kvs__kvmap_scatter(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off,
                        const void *src, uint64_t len)
{
    copy_ctx c = {(char *)src, off};
    walk(m, t0, tokens, off, len, scatter_run, &c);
}

void kvs__kvmap_gather(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off, void *dst,
                       uint64_t len)
{
    copy_ctx c = {dst, off};
    walk(m, t0, tokens, off, len, gather_run, &c);
}

typedef struct region_ctx {
    struct iovec *iov;
    int max, n;
    uint64_t align, seg;
    bool bad;
} region_ctx;

static void region_run(void *ctx, char *addr, uint64_t pos, uint64_t n)
{
    region_ctx *c = ctx;
    if (c->bad)
        return;
    if (!addr || c->n == c->max || (uintptr_t)addr % c->align || n % c->align || pos % c->seg) {
        c->bad = true;
        return;
    }
    c->iov[c->n].iov_base = addr;
    c->iov[c->n].iov_len = n;
    c->n++;
}

int kvs__kvmap_regions(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off, uint64_t len,
                       uint64_t align, uint64_t seg_bytes, struct iovec *iov, int max_iov)
{
    region_ctx c = {iov, max_iov, 0, align ? align : 1, seg_bytes ? seg_bytes : 1, false};
    walk(m, t0, tokens, off, len, region_run, &c);
    return c.bad ? -1 : c.n;
}
