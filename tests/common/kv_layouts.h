/* kv_layouts.h - the per-layer KV caches vLLM hands a connector, for the
 * tests (host: tests/unit/test_kv_layouts.c; GPU: tests/gpu/): each layout's
 * size and the offset of every element by the index arithmetic of its
 * shape (the reference), and, separately, the kvs_kv strides a connector
 * would read off the tensor's physical shape (the description under test).
 * Header-only: each test program includes it once. */
#ifndef KVS_TEST_KV_LAYOUTS_H
#define KVS_TEST_KV_LAYOUTS_H

#include "kvstash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum tl_kind {
    TL_PLAIN,      /* [2][S][H][D], every stride 0 (the defaults) */
    TL_2BNHD,      /* [2,B,N,H,D] */
    TL_2BHND,      /* [2,B,N,H,D] in HND order: memory [2,B,H,N,D] */
    TL_B2NHD,      /* [B,2,N,H,D] */
    TL_B2HND,      /* memory [B,2,H,N,D] */
    TL_PACKED_NHD, /* (B,H,N,2D) in NHD order: memory (B,N,H,2D) */
    TL_PACKED_HND, /* memory (B,H,N,2D) */
    TL_MLA_BND,    /* [B,N,D] */
    TL_MLA_B1ND,   /* [B,1,N,D] */
} tl_kind;

typedef struct tl_layout {
    tl_kind k;
    bool padded; /* `pad` elements after every block */
    const char *name;
} tl_layout;

/* B blocks of N slots, H heads of D elements of esize bytes. */
typedef struct tl_geom {
    uint64_t blocks, block_size, heads, dim, esize, pad;
} tl_geom;

static const tl_layout TL_MHA[] = {
    {TL_PLAIN, false, "plain"},
    {TL_2BNHD, false, "[2,B,N,H,D]"},
    {TL_2BHND, false, "[2,B,H,N,D]"},
    {TL_B2NHD, false, "[B,2,N,H,D]"},
    {TL_B2HND, false, "[B,2,H,N,D]"},
    {TL_PACKED_NHD, false, "packed NHD (B,N,H,2D)"},
    {TL_PACKED_HND, false, "packed HND (B,H,N,2D)"},
    {TL_2BNHD, true, "[2,B,N,H,D] padded"},
    {TL_B2HND, true, "[B,2,H,N,D] padded"},
    {TL_PACKED_NHD, true, "packed NHD padded"},
    {TL_PACKED_HND, true, "packed HND padded"},
};
#define TL_NMHA (sizeof TL_MHA / sizeof TL_MHA[0])

static const tl_layout TL_MLA[] = {
    {TL_MLA_BND, false, "MLA [B,N,D]"},
    {TL_MLA_B1ND, false, "MLA [B,1,N,D]"},
    {TL_MLA_BND, true, "MLA [B,N,D] padded"},
    {TL_MLA_B1ND, true, "MLA [B,1,N,D] padded"},
};
#define TL_NMLA (sizeof TL_MLA / sizeof TL_MLA[0])

static inline bool tl_is_mla(const tl_layout *lo)
{
    return lo->k == TL_MLA_BND || lo->k == TL_MLA_B1ND;
}

/* ---- the reference: element offsets by index arithmetic ------------------ */

static inline uint64_t tl_block_elems(const tl_layout *lo, const tl_geom *g)
{
    const uint64_t pad = lo->padded ? g->pad : 0, N = g->block_size, H = g->heads, D = g->dim;
    switch (lo->k) {
    case TL_2BNHD:
    case TL_2BHND: return N * H * D + pad;
    case TL_B2NHD:
    case TL_B2HND:
    case TL_PACKED_NHD:
    case TL_PACKED_HND: return 2 * N * H * D + pad;
    case TL_MLA_BND:
    case TL_MLA_B1ND: return N * D + pad;
    case TL_PLAIN: break;
    }
    return 0;
}

/* Bytes of one layer's tensor. */
static inline uint64_t tl_layer_bytes(const tl_layout *lo, const tl_geom *g)
{
    uint64_t e;
    switch (lo->k) {
    case TL_PLAIN: e = 2 * g->blocks * g->block_size * g->heads * g->dim; break;
    case TL_2BNHD:
    case TL_2BHND: e = 2 * g->blocks * tl_block_elems(lo, g); break;
    default: e = g->blocks * tl_block_elems(lo, g); break;
    }
    return e * g->esize;
}

/* Byte offset of byte i (0 .. dim * esize - 1) of head h of slot s in plane
 * p.  MLA layouts have one plane and one head. */
static inline uint64_t tl_offset(const tl_layout *lo, const tl_geom *g, uint64_t p, uint64_t s,
                                 uint64_t h, uint64_t i)
{
    const uint64_t N = g->block_size, H = g->heads, D = g->dim, B = g->blocks;
    const uint64_t b = s / N, n = s % N, blk = tl_block_elems(lo, g), d = i / g->esize;
    uint64_t e = 0;
    switch (lo->k) {
    case TL_PLAIN: e = ((p * B * N + s) * H + h) * D + d; break;
    case TL_2BNHD: e = p * B * blk + b * blk + (n * H + h) * D + d; break;
    case TL_2BHND: e = p * B * blk + b * blk + (h * N + n) * D + d; break;
    case TL_B2NHD: e = b * blk + p * N * H * D + (n * H + h) * D + d; break;
    case TL_B2HND: e = b * blk + p * H * N * D + (h * N + n) * D + d; break;
    case TL_PACKED_NHD: e = b * blk + (n * H + h) * 2 * D + p * D + d; break;
    case TL_PACKED_HND: e = b * blk + (h * N + n) * 2 * D + p * D + d; break;
    case TL_MLA_BND:
    case TL_MLA_B1ND: e = b * blk + n * D + d; break;
    }
    return e * g->esize + i % g->esize;
}

/* ---- the description: strides read off the physical shape ---------------- */

typedef enum tl_role { TL_R_PLANE, TL_R_BLOCK, TL_R_ONE, TL_R_SLOT, TL_R_HEAD, TL_R_DIM,
                       TL_R_KV2D } tl_role;

/* Fills kv's num_slots, block_size and strides as a connector does: each
 * dimension's element stride (torch's .stride()) times the element size,
 * the block dimension's including the padding; packed caches have planes
 * D elements apart.  Other fields are left alone. */
static inline void tl_describe(const tl_layout *lo, const tl_geom *g, kvs_kv *kv)
{
    const uint64_t B = g->blocks, N = g->block_size, H = g->heads, D = g->dim;
    kv->num_slots = B * N;
    kv->block_size = 0;
    kv->slot_stride = kv->block_stride = kv->plane_stride = kv->head_stride = 0;
    struct {
        tl_role r;
        uint64_t size;
    } d[6];
    int n = 0;
#define TL_D_(role_, size_) (d[n].r = (role_), d[n++].size = (size_))
    switch (lo->k) {
    case TL_PLAIN: return; /* the defaults describe this buffer */
    case TL_2BNHD:
        TL_D_(TL_R_PLANE, 2), TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_SLOT, N), TL_D_(TL_R_HEAD, H);
        TL_D_(TL_R_DIM, D);
        break;
    case TL_2BHND:
        TL_D_(TL_R_PLANE, 2), TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_HEAD, H), TL_D_(TL_R_SLOT, N);
        TL_D_(TL_R_DIM, D);
        break;
    case TL_B2NHD:
        TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_PLANE, 2), TL_D_(TL_R_SLOT, N), TL_D_(TL_R_HEAD, H);
        TL_D_(TL_R_DIM, D);
        break;
    case TL_B2HND:
        TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_PLANE, 2), TL_D_(TL_R_HEAD, H), TL_D_(TL_R_SLOT, N);
        TL_D_(TL_R_DIM, D);
        break;
    case TL_PACKED_NHD:
        TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_SLOT, N), TL_D_(TL_R_HEAD, H), TL_D_(TL_R_KV2D, 2 * D);
        break;
    case TL_PACKED_HND:
        TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_HEAD, H), TL_D_(TL_R_SLOT, N), TL_D_(TL_R_KV2D, 2 * D);
        break;
    case TL_MLA_BND: TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_SLOT, N), TL_D_(TL_R_DIM, D); break;
    case TL_MLA_B1ND:
        TL_D_(TL_R_BLOCK, B), TL_D_(TL_R_ONE, 1), TL_D_(TL_R_SLOT, N), TL_D_(TL_R_DIM, D);
        break;
    }
#undef TL_D_
    uint64_t acc = 1;
    for (int i = n - 1; i >= 0; i--) {
        uint64_t stride = acc + (d[i].r == TL_R_BLOCK && lo->padded ? g->pad : 0);
        uint64_t bytes = stride * g->esize;
        switch (d[i].r) {
        case TL_R_PLANE: kv->plane_stride = bytes; break;
        case TL_R_BLOCK: kv->block_stride = bytes; break;
        case TL_R_SLOT: kv->slot_stride = bytes; break;
        case TL_R_HEAD: kv->head_stride = bytes; break;
        case TL_R_KV2D: kv->plane_stride = D * g->esize; break;
        case TL_R_ONE:
        case TL_R_DIM: break;
        }
        acc = stride * d[i].size;
    }
    kv->block_size = N;
}

#endif
