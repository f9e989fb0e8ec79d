/*
 * kvs_copy.cu - gather and scatter between a chunk's layer-major payload and
 * vLLM's paged KV layouts (per-plane [2, blocks, block_size, heads, dim] and
 * [blocks, 2, ...], packed (blocks, heads, block_size, 2 * dim) in NHD or
 * HND order, MLA [blocks, block_size, dim], or anything else the strides
 * describe: include/kvstash.h has the table).
 *
 * One warp per payload row: the row's address is computed once (the slot
 * look-up and the divisions), then the warp's lanes move the row in
 * vec_bytes-wide accesses, coalesced on both sides because a row is
 * contiguous in the payload and in the cache.  When a token's heads are
 * strided (vLLM 0.26+'s packed K|V caches, HND orders) each access finds
 * its head with one 32-bit division; a head row stays contiguous, so lanes
 * still read whole 32-byte sectors as long as a head row is at least one
 * sector, which every real head size is.  The access width is a
 * template parameter chosen on the host from the alignment of everything
 * involved, so bf16 rows of 128-dim heads move in 16-byte vectors and odd
 * geometries still work byte by byte.  A grid-stride loop over rows keeps
 * the grid small for large ranges.
 */
#include "kvs_cuda.h"

#include <cuda_runtime.h>

namespace {

template <int W> struct vec;
template <> struct vec<16> { typedef uint4 t; };
template <> struct vec<8> { typedef uint2 t; };
template <> struct vec<4> { typedef uint32_t t; };
template <> struct vec<2> { typedef uint16_t t; };
template <> struct vec<1> { typedef uint8_t t; };

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

/* Address of the row of payload row r, or nullptr for a negative slot. */
__device__ __forceinline__ char *row_address(const kvs_cuda_chunk &c, uint64_t r)
{
    const uint64_t T = c.tokens;
    const uint64_t token = r % T;
    const uint64_t lp = r / T; /* layer * planes + plane */
    const uint32_t layer = (uint32_t)(lp / c.num_planes);
    const uint32_t plane = (uint32_t)(lp % c.num_planes);
    const uint64_t t = c.t0 + token;
    int64_t slot = c.slots ? c.slots[t] : (int64_t)t;
    if (slot < 0)
        return nullptr;
    const uint64_t s = (uint64_t)slot;
    return (char *)(uintptr_t)c.layers[layer] + plane * c.plane_stride +
           (s / c.block_size) * c.block_stride + (s % c.block_size) * c.slot_stride;
}

/* Byte b of a payload row, in the KV memory of the row at mem. */
template <bool kStrided>
__device__ __forceinline__ char *at(const kvs_cuda_chunk &c, char *mem, uint64_t b)
{
    if (!kStrided)
        return mem + b;
    const uint32_t h = (uint32_t)b / c.head_bytes;
    return mem + h * c.head_stride + ((uint32_t)b - h * c.head_bytes);
}

template <int W, bool kScatter, bool kStrided>
__global__ void __launch_bounds__(kThreads)
copy_kernel(const kvs_cuda_chunk c, uint64_t off, uint64_t len, char *staging,
            const uint32_t *gate)
{
    typedef typename vec<W>::t V;
    if (kScatter && gate && *(volatile const uint32_t *)gate != 0)
        return;
    const uint64_t row = c.row_bytes;
    const uint64_t end = off + len;
    const uint64_t r_first = off / row;
    const uint64_t r_last = (end - 1) / row;
    const unsigned lane = threadIdx.x & 31;
    const uint64_t warp = (uint64_t)blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
    const uint64_t nwarps = (uint64_t)gridDim.x * kWarpsPerBlock;
    for (uint64_t r = r_first + warp; r <= r_last; r += nwarps) {
        const uint64_t rs = r * row;
        const uint64_t b0 = (rs > off ? rs : off) - rs;         /* first byte of the row */
        const uint64_t b1 = (rs + row < end ? rs + row : end) - rs; /* past the last */
        char *mem = row_address(c, r);
        char *stg = staging + (rs + b0 - off);
        if (kScatter) {
            if (!mem)
                continue;
            for (uint64_t b = b0 + (uint64_t)lane * W; b < b1; b += 32 * W)
                *(V *)at<kStrided>(c, mem, b) = *(const V *)(stg + (b - b0));
        } else if (mem) {
            for (uint64_t b = b0 + (uint64_t)lane * W; b < b1; b += 32 * W)
                *(V *)(stg + (b - b0)) = *(const V *)at<kStrided>(c, mem, b);
        } else {
            V zero;
            memset(&zero, 0, sizeof zero);
            for (uint64_t b = b0 + (uint64_t)lane * W; b < b1; b += 32 * W)
                *(V *)(stg + (b - b0)) = zero;
        }
    }
}

bool strided(const kvs_cuda_chunk *c)
{
    return c->head_bytes != 0 && c->head_bytes != c->row_bytes && c->head_stride != c->head_bytes;
}

bool chunk_ok(const kvs_cuda_chunk *c, uint64_t off, uint64_t len, const void *staging)
{
    if (!c || !c->layers || !staging || c->num_layers == 0 || c->tokens == 0 ||
        c->row_bytes == 0 || c->block_size == 0 || (c->num_planes != 1 && c->num_planes != 2))
        return false;
    const uint32_t w = c->vec_bytes;
    if (w != 1 && w != 2 && w != 4 && w != 8 && w != 16)
        return false;
    const uint64_t payload = (uint64_t)c->num_layers * c->num_planes * c->tokens * c->row_bytes;
    if (off % w || len % w || off > payload || len > payload - off)
        return false;
    if (c->row_bytes % w || c->slot_stride % w || c->block_stride % w || c->plane_stride % w ||
        (uintptr_t)staging % w)
        return false;
    if (strided(c) && (c->row_bytes % c->head_bytes || c->head_bytes % w || c->head_stride % w))
        return false;
    return true;
}

template <int W, bool kScatter>
void start(const kvs_cuda_chunk *c, dim3 grid, cudaStream_t s, uint64_t off, uint64_t len,
           char *stg, const uint32_t *gate)
{
    if (strided(c))
        copy_kernel<W, kScatter, true><<<grid, kThreads, 0, s>>>(*c, off, len, stg, gate);
    else
        copy_kernel<W, kScatter, false><<<grid, kThreads, 0, s>>>(*c, off, len, stg, gate);
}

template <bool kScatter>
kvs_cuda_status launch(const kvs_cuda_chunk *c, uint64_t off, uint64_t len, void *staging,
                       const uint32_t *gate, void *stream)
{
    if (!chunk_ok(c, off, len, staging))
        return cudaErrorInvalidValue;
    if (len == 0)
        return cudaSuccess;
    const uint64_t rows = (off + len - 1) / c->row_bytes - off / c->row_bytes + 1;
    uint64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
    if (blocks > 8192)
        blocks = 8192;
    dim3 grid((unsigned)blocks);
    cudaStream_t s = (cudaStream_t)stream;
    char *stg = (char *)staging;
    switch (c->vec_bytes) {
    case 16: start<16, kScatter>(c, grid, s, off, len, stg, gate); break;
    case 8: start<8, kScatter>(c, grid, s, off, len, stg, gate); break;
    case 4: start<4, kScatter>(c, grid, s, off, len, stg, gate); break;
    case 2: start<2, kScatter>(c, grid, s, off, len, stg, gate); break;
    default: start<1, kScatter>(c, grid, s, off, len, stg, gate); break;
    }
    return (kvs_cuda_status)cudaGetLastError();
}

} // namespace

extern "C" uint32_t kvs_cuda_vec_bytes(const uint64_t *values, size_t n)
{
    uint64_t all = 16;
    for (size_t i = 0; i < n; i++)
        all |= values[i];
    /* the lowest set bit of the OR is the largest power of two dividing all */
    return (uint32_t)(all & (~all + 1));
}

extern "C" kvs_cuda_status kvs_cuda_gather(const kvs_cuda_chunk *c, uint64_t off, uint64_t len,
                                           void *staging, void *stream)
{
    return launch<false>(c, off, len, staging, nullptr, stream);
}

extern "C" kvs_cuda_status kvs_cuda_scatter(const kvs_cuda_chunk *c, uint64_t off, uint64_t len,
                                            const void *staging, const uint32_t *gate,
                                            void *stream)
{
    return launch<true>(c, off, len, const_cast<void *>(staging), gate, stream);
}

extern "C" const char *kvs_cuda_strerror(kvs_cuda_status st)
{
    return cudaGetErrorString((cudaError_t)st);
}
