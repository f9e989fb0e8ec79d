/*
 * kvs_xxh3.cu - XXH3-64 (seed 0) of fixed-size segments, on the GPU, bit for
 * bit the function libxxhash computes on the CPU (kvs__checksum).
 *
 * XXH3's long-input path keeps 8 64-bit lane accumulators.  Input is cut
 * into blocks of 1024 bytes (16 stripes of 64 bytes with the default
 * 192-byte secret); every stripe adds to each lane a term that depends only
 * on that stripe's bytes and the stripe's position in its block, and after
 * each full block the lanes are scrambled.  Sums commute, so the 16 stripes
 * of a block can be folded in any order: what must stay sequential is only
 * the chain "add the block's total, scramble" from block to block.
 *
 * So one thread block hashes one segment in rounds of 32 input blocks: each
 * thread loads 16 bytes (two lanes of one stripe) of 8 input blocks, forms
 * their lane terms, and the warp folds the terms of its 8 stripes with
 * shuffles; the two half-block totals go to shared memory, and 8 threads
 * (one per lane) then run the add-and-scramble chain over the round's 32
 * blocks.  The partial last block, the overlapping last stripe, the merge
 * of the lanes and the final avalanche follow the reference step by step.
 * That device code is in kvs_xxh3.cuh (the codec's frame sums use it too);
 * this file launches it on fixed-size segments.
 */
#include "kvs_cuda.h"

#include "kvs_xxh3.cuh"

#include <cuda_runtime.h>

namespace {

__global__ void __launch_bounds__(kXxhThreads)
segment_kernel(const uint8_t *__restrict__ data, uint64_t len, uint32_t seg_bytes,
               uint64_t *sums, const uint64_t *expected, uint32_t *mismatches)
{
    const uint64_t seg = blockIdx.x;
    const uint64_t rest = len - seg * seg_bytes;
    const uint64_t h = xxh3_long(data + seg * seg_bytes, rest < seg_bytes ? rest : seg_bytes);
    if (threadIdx.x == 0) {
        if (sums)
            sums[seg] = h;
        if (expected && expected[seg] != h)
            atomicAdd(mismatches, 1u);
    }
}

} // namespace

extern "C" kvs_cuda_status kvs_cuda_segment_sums(const void *data, uint64_t len, uint32_t seg_bytes,
                                                 uint64_t *sums, const uint64_t *expected,
                                                 uint32_t *mismatches, void *stream)
{
    if (!data || (uintptr_t)data % 16 || seg_bytes == 0 || seg_bytes % 16 || len == 0 ||
        (expected && !mismatches))
        return cudaErrorInvalidValue;
    const uint64_t nseg = (len + seg_bytes - 1) / seg_bytes;
    const uint64_t last = len - (nseg - 1) * seg_bytes;
    if (last <= 240 || (nseg > 1 && seg_bytes <= 240) || nseg > 0x7fffffffu)
        return cudaErrorInvalidValue;
    if (!sums && !expected)
        return cudaSuccess;
    segment_kernel<<<(unsigned)nseg, kXxhThreads, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)data, len, seg_bytes, sums, expected, mismatches);
    return (kvs_cuda_status)cudaGetLastError();
}
