/*
 * kvmap.c - the map between a chunk's layer-major payload and the caller's
 * KV memory.
 *
 * The payload of a chunk of T tokens is rows in the order
 * [layer][plane][token], each row the token's head rows in head order; the
 * caller's memory is described by a kvs_kv (per-layer base pointers, a slot
 * per token, strides down to the head).  Walking a payload range row by row
 * and merging pieces whose addresses are consecutive turns a contiguous
 * buffer into one memcpy per (layer, plane) and a paged cache into one per
 * block, which is what keeps host copies at memory speed.  When a token's
 * heads are strided (vLLM's packed K|V caches, HND orders) a row is walked
 * head row by head row, its address computed once per row.
 *
 * Validation proves that no two head rows overlap by nesting: the
 * dimensions (heads, slots of a block, planes, blocks), ordered by stride,
 * each stride at least the span of the smaller ones.  That admits every
 * permutation of a dense or padded tensor, which is all vLLM allocates,
 * and a scatter can then never write one token's KV over another's.
 *
 * A scatter writes the caller's KV memory, which nobody reads again before
 * the next layer's attention (or a copy to the GPU), so long runs go with
 * non-temporal stores: without them each destination line is first read
 * into the cache (a write-allocate) and then written back, a third memory
 * pass that made the copy half of a retrieve, and of a CPU tier hit, run
 * well below memcpy, whose large copies stream the same way.
 */
#include "kvmap.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

/* Runs at least this long are streamed (a short run's partial lines would
 * cost more in write-combining flushes than they save). */
#define STREAM_MIN_BYTES 4096u

/* memcpy into memory that will not be read soon: 16-byte non-temporal
 * stores from the first 16-byte boundary of dst on (SSE2, in every x86-64);
 * elsewhere plain memcpy.  The caller fences (kvs__kvmap_scatter). */
static void copy_stream(char *dst, const char *src, uint64_t n)
{
#if defined(__x86_64__)
    if (n >= STREAM_MIN_BYTES) {
        uint64_t head = (16 - ((uintptr_t)dst & 15)) & 15;
        memcpy(dst, src, head);
        dst += head;
        src += head;
        n -= head;
        for (; n >= 64; n -= 64, dst += 64, src += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(const void *)src);
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(src + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(src + 48));
            _mm_stream_si128((__m128i *)(void *)dst, a);
            _mm_stream_si128((__m128i *)(void *)(dst + 16), b);
            _mm_stream_si128((__m128i *)(void *)(dst + 32), c);
            _mm_stream_si128((__m128i *)(void *)(dst + 48), d);
        }
    }
#endif
    memcpy(dst, src, n);
}

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

typedef struct kv_dim {
    const char *name;   /* as the message names the dimension */
    uint64_t count;
    uint64_t stride;    /* bytes */
} kv_dim;

/* Refuses strides under which two head rows overlap (see the file comment). */
static kvs_status check_nesting(const kvs_kv *r, uint32_t heads, uint32_t planes, uint64_t head,
                                uint64_t nblocks)
{
    kv_dim d[4] = {
        {"head_stride", heads, r->head_stride},
        {"slot_stride", KVS_MIN(r->block_size, r->num_slots), r->slot_stride},
        {"plane_stride", planes, r->plane_stride},
        {"block_stride", nblocks, r->block_stride},
    };
    /* stable insertion sort by stride: ties keep the order above */
    for (int i = 1; i < 4; i++)
        for (int j = i; j > 0 && d[j].stride < d[j - 1].stride; j--) {
            kv_dim x = d[j];
            d[j] = d[j - 1];
            d[j - 1] = x;
        }
    uint64_t span = head;
    char inner[96] = "a head row";
    for (int i = 0; i < 4; i++) {
        if (d[i].count <= 1)
            continue;
        uint64_t s;
        if (__builtin_mul_overflow(d[i].count - 1, d[i].stride, &s) ||
            __builtin_add_overflow(s, span, &s))
            return kvs__fail(KVS_ERR_INVALID,
                             "kv.%s %llu over %llu elements overflows 64 bits; accepted: ordered "
                             "by stride, each stride at least the span of the smaller ones",
                             d[i].name, (unsigned long long)d[i].stride,
                             (unsigned long long)d[i].count);
        if (d[i].stride < span)
            return kvs__fail(
                KVS_ERR_INVALID,
                "kv.%s %llu makes head rows overlap: it is less than the %llu bytes spanned by %s "
                "(kv: heads %u x head_stride %llu, slots %llu x slot_stride %llu, planes %u x "
                "plane_stride %llu, blocks %llu x block_stride %llu, head rows of %llu bytes); "
                "accepted: ordered by stride, each of these strides at least the span of the "
                "smaller ones, as in any permutation of a dense or padded "
                "[blocks, planes, block_size, heads, head_dim] tensor (include/kvstash.h lists "
                "vLLM's caches)",
                d[i].name, (unsigned long long)d[i].stride, (unsigned long long)span, inner,
                heads, (unsigned long long)r->head_stride,
                (unsigned long long)KVS_MIN(r->block_size, r->num_slots),
                (unsigned long long)r->slot_stride, planes, (unsigned long long)r->plane_stride,
                (unsigned long long)nblocks, (unsigned long long)r->block_stride,
                (unsigned long long)head);
        span = s;
        snprintf(inner, sizeof inner, "%llu x %s %llu and what each holds",
                 (unsigned long long)d[i].count, d[i].name, (unsigned long long)d[i].stride);
    }
    return KVS_OK;
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
    const uint64_t row = ns->row_bytes;
    const uint32_t heads = ns->num_kv_heads;
    const uint64_t head = row / heads;
    if (r.head_stride == 0 || heads == 1)
        r.head_stride = head;
    if (r.block_size == 0)
        r.block_size = r.num_slots;
    if (r.slot_stride == 0 && __builtin_mul_overflow(heads, r.head_stride, &r.slot_stride))
        return kvs__fail(KVS_ERR_INVALID, "kv.head_stride %llu overflows 64 bits",
                         (unsigned long long)r.head_stride);
    if (r.block_stride == 0 &&
        __builtin_mul_overflow(r.block_size, r.slot_stride, &r.block_stride))
        return kvs__fail(KVS_ERR_INVALID, "kv.slot_stride %llu x block_size %llu overflows",
                         (unsigned long long)r.slot_stride, (unsigned long long)r.block_size);
    uint64_t nblocks = (r.num_slots - 1) / r.block_size + 1;
    if (r.plane_stride == 0 && __builtin_mul_overflow(nblocks, r.block_stride, &r.plane_stride))
        return kvs__fail(KVS_ERR_INVALID, "kv.block_stride %llu x %llu blocks overflows",
                         (unsigned long long)r.block_stride, (unsigned long long)nblocks);
    kvs_status st = check_nesting(&r, heads, ns->num_planes, head, nblocks);
    if (st)
        return st;

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
    m->num_heads = heads;
    m->row_bytes = row;
    m->head_bytes = head;
    m->rows_contiguous = r.head_stride == head;
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

typedef struct run {
    run_fn fn;
    void *ctx;
    char *addr;
    uint64_t pos, len;
    bool null;
} run;

/* Adds piece [pos, pos+n) at addr (NULL: no place) to the current run, or
 * flushes the run and starts a new one. */
static inline void run_add(run *u, char *addr, uint64_t pos, uint64_t n)
{
    bool null = addr == NULL;
    if (u->len > 0 && null == u->null && (null || addr == u->addr + u->len)) {
        u->len += n;
        return;
    }
    if (u->len)
        u->fn(u->ctx, u->null ? NULL : u->addr, u->pos, u->len);
    *u = (run){u->fn, u->ctx, addr, pos, n, null};
}

static void walk(const kvs_kvmap *m, size_t t0, uint32_t tokens, uint64_t off, uint64_t len,
                 run_fn fn, void *ctx)
{
    const uint64_t row = m->row_bytes, head = m->head_bytes, hs = m->kv.head_stride;
    const uint64_t end = off + len;
    run u = {fn, ctx, NULL, off, 0, false};
    for (uint64_t pos = off; pos < end;) {
        uint64_t r = pos / row, in_row = pos % row;
        uint32_t layer = (uint32_t)(r / ((uint64_t)m->num_planes * tokens));
        uint32_t plane = (uint32_t)((r / tokens) % m->num_planes);
        size_t token = t0 + (size_t)(r % tokens);
        uint64_t n = KVS_MIN(row - in_row, end - pos);
        char *base = slot_negative(m, token) ? NULL
                                             : row_addr(m, layer, plane, slot_of(m, token));
        if (m->rows_contiguous || !base) {
            run_add(&u, base ? base + in_row : NULL, pos, n);
        } else {
            uint64_t h = in_row / head, in_head = in_row % head;
            for (uint64_t done = 0; done < n; h++, in_head = 0) {
                uint64_t k = KVS_MIN(head - in_head, n - done);
                run_add(&u, base + h * hs + in_head, pos + done, k);
                done += k;
            }
        }
        pos += n;
    }
    if (u.len)
        fn(ctx, u.null ? NULL : u.addr, u.pos, u.len);
}

typedef struct copy_ctx {
    char *buf;       /* the contiguous side, at payload offset base */
    uint64_t base;
} copy_ctx;

static void scatter_run(void *ctx, char *addr, uint64_t pos, uint64_t n)
{
    copy_ctx *c = ctx;
    if (addr)
        copy_stream(addr, c->buf + (pos - c->base), n);
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
#if defined(__x86_64__)
    _mm_sfence(); /* the streamed stores are visible before anyone is told */
#endif
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
