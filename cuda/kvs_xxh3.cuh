/*
 * kvs_xxh3.cuh - XXH3-64 (seed 0) of one byte range longer than 240 bytes,
 * computed by one whole thread block of kXxhThreads threads: the device code
 * behind kvs_cuda_segment_sums (cuda/kvs_xxh3.cu, which explains the
 * method) and the frame sums of the codec (cuda/kvs_codec.cu).  Included by
 * .cu files only; everything has internal linkage.
 */
#ifndef KVS_XXH3_CUH
#define KVS_XXH3_CUH

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

/* XXH3's default secret (the algorithm's constant, as published). */
__constant__ uint8_t kSecret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

constexpr uint64_t kPrime32_1 = 0x9E3779B1ull;
constexpr uint64_t kPrime32_2 = 0x85EBCA77ull;
constexpr uint64_t kPrime32_3 = 0xC2B2AE3Dull;
constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ull;
constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ull;

constexpr int kXxhThreads = 256;  /* threads of a block that calls xxh3_long */
constexpr int kStripe = 64;
constexpr int kBlock = 1024;          /* 16 stripes */
constexpr int kRound = 32;            /* input blocks per round */
constexpr int kLoadsPerThread = kRound * (kBlock / 16) / kXxhThreads; /* 8 */
constexpr int kScrambleAt = 192 - kStripe;    /* secret offset of the scramble key */
constexpr int kLastStripeAt = 192 - kStripe - 7;
constexpr int kMergeAt = 11;

/* Little-endian 64-bit word at any byte offset of the secret. */
__device__ __forceinline__ uint64_t secret64(int at)
{
    uint64_t v = 0;
#pragma unroll
    for (int i = 7; i >= 0; i--)
        v = v << 8 | kSecret[at + i];
    return v;
}

__device__ __forceinline__ uint64_t load64_any(const uint8_t *p)
{
    uint64_t v = 0;
#pragma unroll
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

__device__ __forceinline__ uint64_t mul32x32(uint64_t x)
{
    return (uint64_t)(uint32_t)x * (uint64_t)(uint32_t)(x >> 32);
}

__device__ __forceinline__ uint64_t scramble(uint64_t acc, uint64_t key)
{
    acc ^= acc >> 47;
    acc ^= key;
    return acc * kPrime32_1;
}

__device__ __forceinline__ uint64_t shfl_xor64(uint64_t v, int mask)
{
    return __shfl_xor_sync(0xffffffffu, v, mask);
}

/* Lane i (0..7) of the long path's accumulator before the first stripe. */
__device__ __forceinline__ uint64_t xxh3_acc_init(int i)
{
    return i == 0 ? kPrime32_3 : i == 1 ? kPrime64_1 : i == 2 ? kPrime64_2
         : i == 3 ? kPrime64_3 : i == 4 ? kPrime64_4 : i == 5 ? kPrime32_2
         : i == 6 ? kPrime64_5 : kPrime32_1;
}

/* The end of the long path, the same for every way of computing the blocks:
 * threads 0..7 hold accumulator lanes 0..7 after the last block; each adds
 * the last stripe (which may overlap the block before it), then thread 0
 * merges the lanes through lanes[8] (shared).  Every thread of the block
 * calls it; thread 0 gets the sum, the others 0. */
__device__ __forceinline__ uint64_t xxh3_long_end(const uint8_t *in, uint64_t L, uint64_t acc,
                                                  uint64_t *lanes)
{
    const int tid = threadIdx.x;
    uint64_t result = 0;
    if (tid < 8) {
        const uint8_t *last = in + L - kStripe;
        const uint64_t d_self = load64_any(last + 8 * tid);
        const uint64_t d_pair = load64_any(last + 8 * (tid ^ 1));
        acc += d_pair + mul32x32(d_self ^ secret64(kLastStripeAt + 8 * tid));
        lanes[tid] = acc;
    }
    __syncthreads();
    if (tid == 0) {
        uint64_t h = L * kPrime64_1;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint64_t a = lanes[2 * i] ^ secret64(kMergeAt + 16 * i);
            const uint64_t b = lanes[2 * i + 1] ^ secret64(kMergeAt + 16 * i + 8);
            h += (a * b) ^ __umul64hi(a, b);
        }
        h ^= h >> 37;
        h *= 0x165667919E3779F9ull;
        h ^= h >> 32;
        result = h;
    }
    return result;
}

/*
 * XXH3-64 (seed 0) of in[0, L), L > 240, in 16-byte aligned.  Every thread
 * of the block (exactly kXxhThreads of them) must call it with the same
 * arguments (it synchronizes the block); thread 0 gets the sum, the others
 * 0.  Calls may follow one another in a loop.
 */
__device__ uint64_t xxh3_long(const uint8_t *__restrict__ in, uint64_t L)
{
    __shared__ uint64_t terms[kRound][2][8]; /* [block in round][half][lane] */
    __shared__ uint64_t lanes[8];

    const uint64_t nb_blocks = (L - 1) / kBlock;   /* full blocks, each scrambled */
    const uint32_t tail_stripes = (uint32_t)(((L - 1) - nb_blocks * kBlock) / kStripe);
    const uint64_t nblk = nb_blocks + (tail_stripes ? 1 : 0);

    const int tid = threadIdx.x;
    const int p = tid & 63;          /* 16-byte slot within an input block */
    const int s = p >> 2;            /* stripe */
    const int m = p & 3;             /* lane pair (2m, 2m+1) */
    const int sub = tid >> 6;        /* which of 4 input blocks per step */
    const int half = (tid >> 5) & 1; /* which half of the input block this warp holds */
    const uint64_t key_even = secret64(8 * (s + 2 * m));
    const uint64_t key_odd = secret64(8 * (s + 2 * m + 1));

    /* lane tid of the accumulator, in threads 0..7 */
    uint64_t acc = xxh3_acc_init(tid);
    const uint64_t scramble_key = tid < 8 ? secret64(kScrambleAt + 8 * tid) : 0;

    for (uint64_t base = 0; base < nblk; base += kRound) {
        uint4 v[kLoadsPerThread];
        bool ok[kLoadsPerThread];
#pragma unroll
        for (int k = 0; k < kLoadsPerThread; k++) {
            const uint64_t b = base + sub + 4 * k;
            ok[k] = b < nb_blocks || (b == nb_blocks && (uint32_t)s < tail_stripes);
            if (ok[k])
                v[k] = *(const uint4 *)(in + b * kBlock + p * 16);
        }
#pragma unroll
        for (int k = 0; k < kLoadsPerThread; k++) {
            uint64_t te = 0, to = 0;
            if (ok[k]) {
                const uint64_t d0 = (uint64_t)v[k].y << 32 | v[k].x; /* lane 2m */
                const uint64_t d1 = (uint64_t)v[k].w << 32 | v[k].z; /* lane 2m+1 */
                te = d1 + mul32x32(d0 ^ key_even);
                to = d0 + mul32x32(d1 ^ key_odd);
            }
            /* fold the 8 stripes of this warp's half block, per lane pair */
            te += shfl_xor64(te, 4);
            to += shfl_xor64(to, 4);
            te += shfl_xor64(te, 8);
            to += shfl_xor64(to, 8);
            te += shfl_xor64(te, 16);
            to += shfl_xor64(to, 16);
            if ((tid & 31) < 4) {
                terms[sub + 4 * k][half][2 * m] = te;
                terms[sub + 4 * k][half][2 * m + 1] = to;
            }
        }
        __syncthreads();
        if (tid < 8) {
            const uint64_t end = nblk - base < kRound ? nblk - base : kRound;
            for (uint64_t j = 0; j < end; j++) {
                acc += terms[j][0][tid] + terms[j][1][tid];
                if (base + j < nb_blocks)
                    acc = scramble(acc, scramble_key);
            }
        }
        __syncthreads();
    }

    return xxh3_long_end(in, L, acc, lanes);
}

} // namespace

#endif /* KVS_XXH3_CUH */
