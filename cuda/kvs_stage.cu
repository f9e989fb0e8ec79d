/*
 * kvs_stage.cu - a kernel of the store capture with the codec
 * (src/dev_cuda.c): a copy that runs only when the encoded frame area is
 * not small enough (the writer's 1/32 rule), so that the plain payload then
 * takes the place of the frames in the same staging extent.  The choice is
 * made on the device, and a whole capture batch is queued with one
 * synchronization at its end rather than one per chunk.
 */
#include "kvs_cuda.h"

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
copy_unless_kernel(uint4 *dst, const uint4 *src, uint64_t n16, const uint64_t *stored,
                   uint64_t limit)
{
    if (*(volatile const uint64_t *)stored <= limit)
        return;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16;
         i += (uint64_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

} // namespace

extern "C" kvs_cuda_status kvs_cuda_copy_unless_within(void *dst, const void *src, uint64_t len,
                                                       const uint64_t *stored, uint64_t limit,
                                                       void *stream)
{
    if (len == 0)
        return 0;
    if (!dst || !src || !stored || len % 16 || (uintptr_t)dst % 16 || (uintptr_t)src % 16)
        return (kvs_cuda_status)cudaErrorInvalidValue;
    const uint64_t n16 = len / 16;
    uint64_t blocks = (n16 + kThreads - 1) / kThreads;
    if (blocks > 4096)
        blocks = 4096;
    copy_unless_kernel<<<(unsigned)blocks, kThreads, 0, (cudaStream_t)stream>>>(
        (uint4 *)dst, (const uint4 *)src, n16, stored, limit);
    return (kvs_cuda_status)cudaGetLastError();
}
