/*
 * kvs_sha256.cu - SHA-256 (FIPS 180-4) of fixed-size pieces of a buffer on
 * the GPU: the keyless half of the authenticated chunks' MAC (see
 * src/chunk_file.h), so the payload need not come back to the host to be
 * authenticated.
 *
 * SHA-256 is a chain over 64-byte blocks, so the parallelism is across
 * pieces: one thread hashes one piece (16 KiB in kvstash: 2048 threads for a
 * 32 MiB chunk).  A thread reads its piece 16 bytes at a time through the
 * read-only cache; the message schedule lives in a 16-word ring in
 * registers.  The padding (0x80, zeros, the bit length) is generated for the
 * piece's tail, so any length is accepted.
 */
#include "kvs_cuda.h"

#include <cuda_runtime.h>

namespace {

__constant__ uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

constexpr int kThreads = 128;

__device__ __forceinline__ uint32_t rotr(uint32_t x, int n)
{
    return __funnelshift_r(x, x, n);
}

__device__ __forceinline__ uint32_t bswap(uint32_t x)
{
    return __byte_perm(x, 0, 0x0123);
}

/* One 64-byte block, w[16] already big-endian words. */
__device__ __forceinline__ void compress(uint32_t st[8], uint32_t w[16])
{
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    uint32_t e = st[4], f = st[5], g = st[6], h = st[7];
#pragma unroll
    for (int i = 0; i < 64; i++) {
        uint32_t wi;
        if (i < 16) {
            wi = w[i];
        } else {
            uint32_t w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
            wi = w[i & 15] = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
        }
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + wi;
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
    st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

__global__ void sha256_pieces(const uint8_t *data, uint64_t len, uint32_t piece, uint64_t n,
                              uint8_t *digests)
{
    uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    const uint64_t start = i * piece;
    const uint64_t bytes = len - start < piece ? len - start : piece;
    const uint8_t *p = data + start;
    uint32_t st[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint32_t w[16];
    const uint64_t full = bytes / 64;
    const bool vec = ((uintptr_t)p & 15) == 0;
    for (uint64_t b = 0; b < full; b++) {
        if (vec) {
            const uint4 *q = (const uint4 *)(p + 64 * b);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint4 v = __ldg(q + k);
                w[4 * k] = bswap(v.x);
                w[4 * k + 1] = bswap(v.y);
                w[4 * k + 2] = bswap(v.z);
                w[4 * k + 3] = bswap(v.w);
            }
        } else {
#pragma unroll
            for (int k = 0; k < 16; k++) {
                const uint8_t *r = p + 64 * b + 4 * k;
                w[k] = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3];
            }
        }
        compress(st, w);
    }
    /* the tail: rest bytes, 0x80, zeros, the length in bits (big-endian);
     * one block, or two when the tail leaves less than 9 bytes of room */
    const uint32_t rest = (uint32_t)(bytes - 64 * full);
    const uint8_t *t = p + 64 * full;
    const uint64_t bits = bytes * 8;
    const int blocks = rest + 9 <= 64 ? 1 : 2;
    for (int blk = 0; blk < blocks; blk++) {
#pragma unroll
        for (int k = 0; k < 16; k++) {
            uint32_t word = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t pos = (uint32_t)blk * 64 + 4 * k + j;
                uint32_t byte = pos < rest ? t[pos] : pos == rest ? 0x80u : 0u;
                word = word << 8 | byte;
            }
            w[k] = word;
        }
        if (blk == blocks - 1) {
            w[14] = (uint32_t)(bits >> 32);
            w[15] = (uint32_t)bits;
        }
        compress(st, w);
    }
    uint8_t *out = digests + 32 * i;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        out[4 * k] = (uint8_t)(st[k] >> 24);
        out[4 * k + 1] = (uint8_t)(st[k] >> 16);
        out[4 * k + 2] = (uint8_t)(st[k] >> 8);
        out[4 * k + 3] = (uint8_t)st[k];
    }
}

} // namespace

extern "C" kvs_cuda_status kvs_cuda_sha256_pieces(const void *data, uint64_t len,
                                                  uint32_t piece_bytes, uint8_t *digests,
                                                  void *stream)
{
    if (!data || !digests || piece_bytes == 0 || len == 0)
        return (kvs_cuda_status)cudaErrorInvalidValue;
    uint64_t n = (len + piece_bytes - 1) / piece_bytes;
    uint64_t grid = (n + kThreads - 1) / kThreads;
    if (grid > 0x7fffffffull)
        return (kvs_cuda_status)cudaErrorInvalidValue;
    sha256_pieces<<<(unsigned)grid, kThreads, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)data, len, piece_bytes, n, digests);
    return (kvs_cuda_status)cudaGetLastError();
}
