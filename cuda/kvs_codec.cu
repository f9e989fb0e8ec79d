/*
 * kvs_codec.cu - the exp-huff codec (CODEC.md, src/codec_fmt.h) on the GPU:
 * frames bit-identical to the CPU encoder's, and a decoder that is
 * bounds-safe on any input.
 *
 * Encode, three kernels:
 *   encode_kernel  one block of 256 threads per frame: a histogram of the
 *                  symbols in shared memory (one per warp, then summed), the
 *                  code lengths of codec_fmt.h's builder (its leaf sorts done
 *                  by the block, one thread per symbol counting the symbols
 *                  before it; its tree passes by one thread), canonical
 *                  codes, then one thread per 256-symbol sub-block counts its
 *                  bits; a block-wide prefix sum of the word counts gives
 *                  each sub-block's first word, the mode follows from the
 *                  sizes (huff only when strictly shorter than raw, as on the
 *                  CPU) and the frame is written into its worst-case slot of
 *                  the scratch buffer, raw planes coalesced, each sub-block's
 *                  words by its thread.
 *   offsets_kernel one block: the packed offsets (prefix sum of the
 *                  lengths, all multiples of 16) and the stored total.
 *   pack_kernel    one block per frame: copies the slot to its packed place
 *                  and hashes it (XXH3-64, kvs_xxh3.cuh).
 *
 * Decode, one kernel (plus check_kernel first when expected sums are given:
 * XXH3-64 of each stored frame by 128 threads, xxh3_frame): one block of
 * 128 threads per frame loads the header, the lengths, the first word
 * counts and the paddings at once, checks them (lengths 0..12, one at
 * least, Kraft) and builds the 4096-entry decode table in shared memory:
 * each symbol's place in canonical order comes from warp ballots, and each
 * thread fills a run of 32 entries (in code order) from one binary search
 * over the codes' left-justified starts and a walk.  Then the sub-blocks go
 * in rounds of 128: a prefix sum of the u8 word counts gives each one's
 * first word, the round's words are staged in shared memory with cp.async
 * (for E = 2 the round's raw plane bytes load into registers meanwhile),
 * each thread decodes its sub-block's symbols into a row of shared memory,
 * and the block merges them with the raw planes and stores the elements,
 * consecutive threads on consecutive bytes.  Every rule of the format is
 * checked (see decode_kernel); a frame that breaks one adds 1 to *bad and
 * writes only inside its own output range.
 */
#include "kvs_cuda.h"

#include "kvs_xxh3.cuh"

#include <cuda_runtime.h>

#include <atomic>

#include "codec_fmt.h"

namespace {

constexpr int kEncThreads = 256; /* one per symbol value: build_lengths relies on it */
constexpr int kDecThreads = 128;
constexpr int kScanThreads = 1024;
static_assert(kEncThreads == 256, "build_lengths and the lengths take one thread per symbol");
constexpr uint32_t kSub = KVS_CODEC_SUB;
constexpr uint32_t kBits = KVS_CODEC_MAX_BITS;
constexpr uint32_t kTable = KVS_CODEC_TABLE_SIZE;

/* Exclusive prefix sum of v over the block's NT threads (every thread
 * calls); *total receives the sum of all.  Uses and reuses `tmp` (NT/32
 * words + 1). */
template <int NT>
__device__ __forceinline__ uint32_t block_scan(uint32_t v, uint32_t *tmp, uint32_t *total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t x = v;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, x, d);
        if (lane >= d)
            x += y;
    }
    __syncthreads(); /* tmp may still be read by a previous call */
    if (lane == 31)
        tmp[warp] = x;
    __syncthreads();
    if (warp == 0) {
        uint32_t w = lane < NT / 32 ? tmp[lane] : 0;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const uint32_t y = __shfl_up_sync(0xffffffffu, w, d);
            if (lane >= d)
                w += y;
        }
        if (lane < NT / 32)
            tmp[lane] = w; /* inclusive prefix of the warps */
    }
    __syncthreads();
    *total = tmp[NT / 32 - 1];
    return x - v + (warp ? tmp[warp - 1] : 0);
}

/* Canonical order of the 256 code lengths in len[]: for each present symbol
 * its left-justified start (code << (12 - length)) and its position in
 * (length, symbol) order, in start[] and pos[]; returns through the shared
 * words kraft (sum of 2^(12 - length)) and present (symbols of nonzero
 * length), and sets *bad when a length exceeds 12.  blockDim.x is a
 * multiple of 32 and at most 256; every thread calls. */
struct canon_smem {
    uint16_t grp[8][kBits + 1]; /* symbols of each length per group of 32 */
    uint8_t rank[256];          /* rank among the group's symbols of its length */
    uint32_t base_start[kBits + 2];
    uint32_t base_pos[kBits + 2];
};

__device__ void canonical(const uint8_t *len, canon_smem &cs, uint16_t *start, uint8_t *pos,
                          int *bad)
{
    const int lane = threadIdx.x & 31;
    for (int s = threadIdx.x; s < 256; s += blockDim.x) {
        const uint32_t l = len[s];
        if (l > kBits)
            *bad = 1;
        for (uint32_t b = 1; b <= kBits; b++) {
            const uint32_t m = __ballot_sync(0xffffffffu, l == b);
            if (lane == 0)
                cs.grp[s >> 5][b] = (uint16_t)__popc(m);
            if (l == b)
                cs.rank[s] = (uint8_t)__popc(m & ((1u << lane) - 1));
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t st = 0, ps = 0;
        for (uint32_t b = 1; b <= kBits; b++) {
            cs.base_start[b] = st;
            cs.base_pos[b] = ps;
            uint32_t c = 0;
            for (int g = 0; g < 8; g++)
                c += cs.grp[g][b];
            st += c << (kBits - b);
            ps += c;
        }
        cs.base_start[kBits + 1] = st; /* the Kraft sum, in units of 2^-12 */
        cs.base_pos[kBits + 1] = ps;   /* symbols present */
    }
    __syncthreads();
    for (int s = threadIdx.x; s < 256; s += blockDim.x) {
        const uint32_t l = len[s];
        if (l == 0 || l > kBits)
            continue;
        uint32_t r = cs.rank[s];
        for (int g = 0; g < (s >> 5); g++)
            r += cs.grp[g][l];
        start[s] = (uint16_t)(cs.base_start[l] + (r << (kBits - l)));
        pos[s] = (uint8_t)(cs.base_pos[l] + r);
    }
    __syncthreads();
}

__device__ __forceinline__ uint32_t brev_bits(uint32_t v, uint32_t bits)
{
    return __brev(v) >> (32 - bits);
}

/* Symbol and raw bytes of element e of a frame (little-endian, elem bytes). */
__device__ __forceinline__ uint32_t sym_of(uint32_t v, uint32_t elem)
{
    return elem == 1 ? v & 0xFFu : elem == 2 ? (v >> 7) & 0xFFu : (v >> 23) & 0xFFu;
}

/* 8 bytes from p: one 8-byte load where aligned, bytes otherwise. */
__device__ __forceinline__ uint64_t load8(const uint8_t *p)
{
    if (((uintptr_t)p & 7) == 0)
        return *(const uint64_t *)p;
    uint64_t v = 0;
#pragma unroll
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

__device__ __forceinline__ void store4(uint8_t *p, uint32_t v)
{
    if (((uintptr_t)p & 3) == 0) {
        *(uint32_t *)p = v;
    } else {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 24);
    }
}

/* ------------------------------------------------------------------------ */
/* encode                                                                     */

struct enc_smem {
    union {
        uint32_t hist[kEncThreads / 32][256];
        kvs_codec_huff_work work;
    } u;
    uint32_t freq[256];
    uint8_t len[256];
    uint16_t start[256];
    uint8_t pos[256];
    uint16_t rcode[256];
    canon_smem cs;
    uint32_t scan[kEncThreads / 32 + 1];
    uint32_t maxlen;
    int bad;
};

/* kvs__codec_sort_leaves by the block (exactly 256 threads, one per
 * symbol): each present symbol's place in (count, symbol) order is the
 * number of present symbols before it in that order, which is the order
 * the insertion sort makes.  Returns the number of present symbols (every
 * thread); wk->order is complete on return.  One thread sorting 256 symbols
 * by insertion took most of an fp8 frame's encode time. */
__device__ uint32_t sort_leaves(kvs_codec_huff_work *wk)
{
    const uint32_t s = threadIdx.x;
    const uint64_t c = wk->cnt[s];
    uint32_t r = 0;
    if (c) {
        for (uint32_t t = 0; t < 256; t++) {
            const uint64_t ct = wk->cnt[t];
            r += ct != 0 && (ct < c || (ct == c && t < s));
        }
    }
    const uint32_t m = (uint32_t)__syncthreads_count(c != 0);
    if (c)
        wk->order[r] = (uint16_t)s;
    __syncthreads();
    return m;
}

/* kvs__codec_build_lengths (same result, byte for byte) with the sorts
 * done by the whole block of 256 threads; the tree passes stay in one
 * thread (they are O(symbols)).  hist and len are shared; every thread
 * calls; len is complete on return. */
__device__ void build_lengths(const uint32_t *hist, uint8_t *len, kvs_codec_huff_work *wk,
                              uint32_t *maxlen)
{
    const uint32_t s = threadIdx.x;
    len[s] = 0;
    wk->cnt[s] = hist[s];
    __syncthreads();
    const uint32_t m = sort_leaves(wk);
    if (m == 1) {
        if (s == 0)
            len[wk->order[0]] = 1;
    } else if (m > 1) {
        for (;;) {
            if (s == 0)
                *maxlen = kvs__codec_huff_pass(wk, m, len);
            __syncthreads();
            if (*maxlen <= KVS_CODEC_MAX_BITS)
                break;
            if (wk->cnt[s])
                wk->cnt[s] = (wk->cnt[s] + 1) >> 1;
            __syncthreads();
            sort_leaves(wk);
        }
    }
    __syncthreads();
}

/* The elements of a frame as symbols, 16 input bytes at a time:
 * f(first element index, symbol) for each. */
__device__ __forceinline__ void symbols16(const uint4 &q, uint32_t elem, uint32_t *sy, int *cnt)
{
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
    if (elem == 1) {
#pragma unroll
        for (int i = 0; i < 16; i++)
            sy[i] = (w[i >> 2] >> (8 * (i & 3))) & 0xFFu;
        *cnt = 16;
    } else if (elem == 2) {
#pragma unroll
        for (int i = 0; i < 8; i++)
            sy[i] = ((w[i >> 1] >> (16 * (i & 1))) >> 7) & 0xFFu;
        *cnt = 8;
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++)
            sy[i] = (w[i] >> 23) & 0xFFu;
        *cnt = 4;
    }
}

/* One element as a word load (the frame's elements are aligned to their
 * size); kvs__codec_load_elem's byte loads measured slower here on the H100
 * (fp8 encode 93 against 120 GB/s, fp16 166 against 210). */
__device__ __forceinline__ uint32_t elem_at(const uint8_t *p, uint32_t elem)
{
    return elem == 1 ? p[0] : elem == 2 ? *(const uint16_t *)p : *(const uint32_t *)p;
}

__global__ void __launch_bounds__(kEncThreads)
encode_kernel(const uint8_t *__restrict__ data, uint64_t total, uint32_t frame_bytes,
              uint32_t elem, uint8_t *__restrict__ slots, uint64_t slot_bytes,
              uint32_t *__restrict__ lens)
{
    __shared__ enc_smem sm;
    const int tid = threadIdx.x, warp = tid >> 5;
    const uint64_t f = blockIdx.x;
    const uint8_t *in = data + f * frame_bytes;
    const uint64_t rest = total - f * frame_bytes;
    const uint32_t nbytes = rest < frame_bytes ? (uint32_t)rest : frame_bytes;
    uint8_t *out = slots + f * slot_bytes;
    kvs_codec_layout lay = {};
    kvs__codec_layout_of(nbytes, elem, &lay); /* elem and nbytes checked by the launcher */
    const uint32_t n = lay.n, nsub = lay.nsub;
    const uint32_t nvec = nbytes / 16, vec_elems = 16 / elem;

    /* 1. histogram, one per warp */
    for (int i = tid; i < (kEncThreads / 32) * 256; i += kEncThreads)
        (&sm.u.hist[0][0])[i] = 0;
    __syncthreads();
    for (uint32_t v = tid; v < nvec; v += kEncThreads) {
        const uint4 q = ((const uint4 *)in)[v];
        uint32_t sy[16];
        int c;
        symbols16(q, elem, sy, &c);
#pragma unroll
        for (int i = 0; i < 16; i++)
            if (i < c)
                atomicAdd(&sm.u.hist[warp][sy[i]], 1u);
    }
    for (uint32_t e = nvec * vec_elems + tid; e < n; e += kEncThreads)
        atomicAdd(&sm.u.hist[warp][sym_of(elem_at(in + (uint64_t)e * elem, elem), elem)], 1u);
    __syncthreads();
    {
        uint32_t c = 0;
#pragma unroll
        for (int w = 0; w < kEncThreads / 32; w++)
            c += sm.u.hist[w][tid];
        sm.freq[tid] = c;
    }
    __syncthreads();

    /* 2. code lengths (codec_fmt.h's builder, its sort done by the block),
     * canonical codes */
    build_lengths(sm.freq, sm.len, &sm.u.work, &sm.maxlen);
    if (tid == 0)
        sm.bad = 0;
    __syncthreads();
    canonical(sm.len, sm.cs, sm.start, sm.pos, &sm.bad);
    {
        const uint32_t l = sm.len[tid];
        sm.rcode[tid] = l ? (uint16_t)brev_bits(sm.start[tid] >> (kBits - l), l) : 0;
    }
    __syncthreads();

    /* 3. words of each sub-block; the huff length */
    uint32_t words_total = 0;
    for (uint32_t base = 0; base < nsub; base += kEncThreads) {
        const uint32_t k = base + tid;
        uint32_t bits = 0;
        if (k < nsub) {
            const uint32_t e0 = k * kSub, e1 = min(e0 + kSub, n);
            const uint32_t v1 = min((uint64_t)e1 * elem / 16, (uint64_t)nvec);
            uint32_t e = e0;
            for (uint32_t v = e0 * elem / 16; v < v1; v++, e += vec_elems) {
                uint32_t sy[16];
                int c;
                symbols16(((const uint4 *)in)[v], elem, sy, &c);
#pragma unroll
                for (int i = 0; i < 16; i++)
                    if (i < c)
                        bits += sm.len[sy[i]];
            }
            for (; e < e1; e++)
                bits += sm.len[sym_of(elem_at(in + (uint64_t)e * elem, elem), elem)];
            /* words[k], written now: raw mode overwrites it with data */
            out[lay.words_off + k] = (uint8_t)((bits + 31) / 32);
        }
        uint32_t t;
        block_scan<kEncThreads>((bits + 31) / 32, sm.scan, &t);
        words_total += t;
    }
    const uint64_t huff_len = kvs__codec_huff_len(&lay, words_total);
    const bool huff = kvs__codec_use_huff(huff_len, nbytes);

    if (!huff) {
        /* raw: header, the bytes, zeros */
        const uint64_t len = kvs__codec_raw_len(nbytes);
        if (tid == 0) {
            *(uint32_t *)out = KVS_CODEC_MODE_RAW | elem << 8;
            *(uint32_t *)(out + 4) = nbytes;
            lens[f] = (uint32_t)len;
        }
        const uint32_t n8 = nbytes / 8;
        for (uint32_t i = tid; i < n8; i += kEncThreads)
            *(uint64_t *)(out + 8 + 8 * (uint64_t)i) = *(const uint64_t *)(in + 8 * (uint64_t)i);
        for (uint64_t i = 8 * (uint64_t)n8 + tid; i < nbytes; i += kEncThreads)
            out[8 + i] = in[i];
        for (uint64_t i = 8 + (uint64_t)nbytes + tid; i < len; i += kEncThreads)
            out[i] = 0;
        return;
    }

    /* 4. huff: header and lengths */
    if (tid == 0) {
        *(uint32_t *)out = KVS_CODEC_MODE_HUFF | elem << 8;
        *(uint32_t *)(out + 4) = nbytes;
        lens[f] = (uint32_t)huff_len;
    }
    if (tid < 128)
        out[KVS_CODEC_LENGTHS_OFF + tid] = (uint8_t)(sm.len[2 * tid] | sm.len[2 * tid + 1] << 4);

    /* raw planes, 4 elements per thread and step (coalesced), zero padding */
    if (elem > 1) {
        uint8_t *planes = out + KVS_CODEC_PLANES_OFF;
        const uint32_t n4 = n / 4;
        for (uint32_t g = tid; g < n4; g += kEncThreads) {
            if (elem == 2) {
                const uint2 q = *(const uint2 *)(in + 8 * (uint64_t)g);
                const uint32_t a = q.x, b = q.y;
                const uint32_t r = ((a >> 8) & 0x80u) | (a & 0x7Fu) |
                                   (((a >> 24) & 0x80u) | ((a >> 16) & 0x7Fu)) << 8 |
                                   (((b >> 8) & 0x80u) | (b & 0x7Fu)) << 16 |
                                   (((b >> 24) & 0x80u) | ((b >> 16) & 0x7Fu)) << 24;
                *(uint32_t *)(planes + 4 * (uint64_t)g) = r;
            } else {
                const uint4 q = *(const uint4 *)(in + 16 * (uint64_t)g);
                const uint32_t w[4] = {q.x, q.y, q.z, q.w};
                uint32_t r0 = 0, r1 = 0, r2 = 0;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    r0 |= (w[i] & 0xFFu) << (8 * i);
                    r1 |= ((w[i] >> 8) & 0xFFu) << (8 * i);
                    r2 |= (((w[i] >> 24) & 0x80u) | ((w[i] >> 16) & 0x7Fu)) << (8 * i);
                }
                store4(planes + 4 * (uint64_t)g, r0);
                store4(planes + n + 4 * (uint64_t)g, r1);
                store4(planes + 2 * (uint64_t)n + 4 * (uint64_t)g, r2);
            }
        }
        for (uint32_t e = 4 * n4 + tid; e < n; e += kEncThreads) {
            uint8_t raw[3];
            kvs__codec_split(elem_at(in + (uint64_t)e * elem, elem), elem, raw);
            for (uint32_t j = 0; j + 1 < elem; j++)
                planes[(uint64_t)j * n + e] = raw[j];
        }
    }
    for (uint64_t i = lay.planes_off + lay.planes_len + tid; i < lay.words_off; i += kEncThreads)
        out[i] = 0;
    for (uint64_t i = lay.words_off + nsub + tid; i < lay.bits_off; i += kEncThreads)
        out[i] = 0;

    /* 5. the bitstream: each thread its sub-block's words */
    uint32_t carry = 0;
    for (uint32_t base = 0; base < nsub; base += kEncThreads) {
        const uint32_t k = base + tid;
        const uint32_t wc = k < nsub ? out[lay.words_off + k] : 0;
        uint32_t t;
        const uint32_t first = carry + block_scan<kEncThreads>(wc, sm.scan, &t);
        carry += t;
        if (k >= nsub)
            continue;
        uint32_t *wp = (uint32_t *)(out + lay.bits_off) + first;
        uint64_t acc = 0;
        uint32_t nb = 0;
        const uint32_t e0 = k * kSub, e1 = min(e0 + kSub, n);
        const uint32_t v1 = min((uint64_t)e1 * elem / 16, (uint64_t)nvec);
        uint32_t e = e0;
        for (uint32_t v = e0 * elem / 16; v < v1; v++, e += vec_elems) {
            uint32_t sy[16];
            int c;
            symbols16(((const uint4 *)in)[v], elem, sy, &c);
#pragma unroll
            for (int i = 0; i < 16; i++) {
                if (i < c) {
                    acc |= (uint64_t)sm.rcode[sy[i]] << nb;
                    nb += sm.len[sy[i]];
                    if (nb >= 32) {
                        *wp++ = (uint32_t)acc;
                        acc >>= 32;
                        nb -= 32;
                    }
                }
            }
        }
        for (; e < e1; e++) {
            const uint32_t s = sym_of(elem_at(in + (uint64_t)e * elem, elem), elem);
            acc |= (uint64_t)sm.rcode[s] << nb;
            nb += sm.len[s];
            if (nb >= 32) {
                *wp++ = (uint32_t)acc;
                acc >>= 32;
                nb -= 32;
            }
        }
        if (nb)
            *wp = (uint32_t)acc;
    }
    for (uint64_t i = lay.bits_off + 4 * (uint64_t)words_total + tid; i < huff_len;
         i += kEncThreads)
        out[i] = 0;
}

__global__ void __launch_bounds__(kScanThreads)
offsets_kernel(const uint32_t *__restrict__ lens, uint32_t nframes, uint32_t *__restrict__ off,
               uint64_t *__restrict__ stored_total)
{
    __shared__ uint32_t tmp[kScanThreads / 32 + 1];
    uint32_t carry = 0;
    for (uint32_t base = 0; base < nframes; base += kScanThreads) {
        const uint32_t i = base + threadIdx.x;
        const uint32_t l = i < nframes ? lens[i] : 0;
        uint32_t t;
        const uint32_t o = carry + block_scan<kScanThreads>(l, tmp, &t);
        if (i < nframes)
            off[i] = o;
        carry += t;
    }
    if (threadIdx.x == 0)
        *stored_total = carry;
}

__global__ void __launch_bounds__(kXxhThreads)
pack_kernel(const uint8_t *__restrict__ slots, uint64_t slot_bytes,
            const uint32_t *__restrict__ lens, const uint32_t *__restrict__ off,
            uint8_t *__restrict__ out, uint64_t *__restrict__ sums)
{
    const uint64_t f = blockIdx.x;
    const uint8_t *src = slots + f * slot_bytes;
    const uint32_t len = lens[f];
    uint4 *dst = (uint4 *)(out + off[f]);
    for (uint32_t i = threadIdx.x; i < len / 16; i += kXxhThreads)
        dst[i] = ((const uint4 *)src)[i];
    const uint64_t h = xxh3_long(src, len);
    if (threadIdx.x == 0 && sums)
        sums[f] = h;
}

/* ------------------------------------------------------------------------ */
/* decode                                                                     */

/*
 * XXH3-64 (seed 0) of in[0, L), L > 240, in 16-byte aligned, by a block of
 * kChkThreads threads, for the decoder's sum check: the same function as
 * xxh3_long (kvs_xxh3.cuh), computed another way.  Four threads share each
 * 1 KiB input block, one lane pair each, and add up the block's 16 stripes
 * in registers (the 16 loads of a thread in flight at once, every 64 bytes
 * of a stripe read by four neighbouring threads); threads 0..7 then fold the
 * blocks' sums into the accumulator in order, scrambling after each full
 * block.  No shuffles: about 8 instructions per 16 bytes, so that the check
 * runs near memory speed.  Every thread calls; thread 0 gets the sum.
 */
constexpr int kChkThreads = 128;
constexpr int kChkBlocks = kChkThreads / 4; /* 1 KiB input blocks per round */

__device__ uint64_t xxh3_frame(const uint8_t *__restrict__ in, uint64_t L)
{
    __shared__ uint64_t sums[kChkBlocks][8];
    __shared__ uint64_t sec[24]; /* the secret as 64-bit words */
    __shared__ uint64_t lanes[8];
    const int tid = threadIdx.x, m = tid & 3, bi = tid >> 2;
    if (tid < 24)
        sec[tid] = secret64(8 * tid);
    const uint64_t nb_blocks = (L - 1) / kBlock; /* full blocks, each scrambled */
    const uint32_t tail_stripes = (uint32_t)(((L - 1) - nb_blocks * kBlock) / kStripe);
    const uint64_t nblk = nb_blocks + (tail_stripes ? 1 : 0);
    uint64_t acc = xxh3_acc_init(tid);
    const uint64_t scramble_key = tid < 8 ? secret64(kScrambleAt + 8 * tid) : 0;
    __syncthreads();
    for (uint64_t base = 0; base < nblk; base += kChkBlocks) {
        const uint64_t b = base + bi;
        const uint32_t ns = b < nb_blocks ? 16u : b == nb_blocks ? tail_stripes : 0u;
        const uint8_t *p = in + b * kBlock + 16 * m;
        uint4 v[16];
#pragma unroll
        for (int s = 0; s < 16; s++)
            if ((uint32_t)s < ns)
                v[s] = *(const uint4 *)(p + s * kStripe);
        uint64_t te = 0, to = 0; /* lanes 2m and 2m + 1 */
#pragma unroll
        for (int s = 0; s < 16; s++) {
            if ((uint32_t)s < ns) {
                const uint64_t d0 = (uint64_t)v[s].y << 32 | v[s].x;
                const uint64_t d1 = (uint64_t)v[s].w << 32 | v[s].z;
                te += d1 + mul32x32(d0 ^ sec[s + 2 * m]);
                to += d0 + mul32x32(d1 ^ sec[s + 2 * m + 1]);
            }
        }
        sums[bi][2 * m] = te;
        sums[bi][2 * m + 1] = to;
        __syncthreads();
        if (tid < 8) {
            const uint64_t end = nblk - base < kChkBlocks ? nblk - base : kChkBlocks;
            for (uint64_t j = 0; j < end; j++) {
                acc += sums[j][tid];
                if (base + j < nb_blocks)
                    acc = scramble(acc, scramble_key);
            }
        }
        __syncthreads();
    }
    return xxh3_long_end(in, L, acc, lanes);
}

__global__ void __launch_bounds__(kChkThreads)
check_kernel(const uint8_t *__restrict__ stored, const uint32_t *__restrict__ off,
             const uint32_t *__restrict__ len, const uint64_t *__restrict__ expected,
             uint32_t *bad)
{
    const uint64_t f = blockIdx.x;
    const uint32_t o = off[f], l = len[f];
    /* a frame too short or misaligned for the hash fails in decode_kernel */
    if (l < KVS_CODEC_MIN_FRAME || l % 16 || o % 16)
        return;
    const uint64_t h = xxh3_frame(stored + o, l);
    if (threadIdx.x == 0 && h != expected[f])
        atomicAdd(bad, 1u);
}

constexpr uint32_t kSymStride = kSub + 8; /* a sub-block's row of decoded symbols */
constexpr uint32_t kWbuf = 8192;          /* staged bitstream words of one round */
constexpr int kPre = kSub / 16;           /* E = 2: 16-element steps of a thread's merge */
static_assert(kDecThreads == 128, "decode_kernel loads the 128 bytes of lengths one a thread");

/* 16 bytes from global to shared memory without going through registers
 * (cp.async on sm_80 and later), so that a whole round's words are in
 * flight at once; copy_async_wait waits for this thread's copies. */
__device__ __forceinline__ void copy16_async(void *smem, const void *gmem)
{
#if __CUDA_ARCH__ >= 800
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#else
    *(uint4 *)smem = *(const uint4 *)gmem;
#endif
}

__device__ __forceinline__ void copy_async_wait()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

/* Work areas of the table build, dead once the sub-blocks start (they share
 * memory with the staged words). */
struct dec_build {
    uint16_t start[256];
    uint8_t pos[256];
    uint16_t sorted_start[256];
    uint16_t sorted_entry[256];
    canon_smem cs;
};

/* Dynamic shared memory of decode_kernel (about 75 KiB: three blocks per
 * SM on an H100). */
struct dec_smem {
    uint16_t table[kTable];
    uint8_t sym[kDecThreads * kSymStride]; /* the round's symbols, one row per sub-block */
    union {
        uint32_t wbuf[kWbuf]; /* the round's bitstream words */
        dec_build b;
    } u;
    uint8_t len[256];
    uint32_t scan[kDecThreads / 32 + 1];
    int bad;
};

/* 8 elements of elem bytes from 8 symbols (byte i of s8 is element i's) and
 * raw plane bytes r0..r2 (likewise), stored at dst (aligned to 8 * elem). */
__device__ __forceinline__ void store8(uint8_t *dst, uint64_t s8, uint32_t elem, uint64_t r0,
                                       uint64_t r1, uint64_t r2)
{
    if (elem == 1) {
        *(uint64_t *)dst = s8;
    } else if (elem == 2) {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t a = (uint32_t)(r0 >> (16 * i)) & 0xFFu;
            const uint32_t b = (uint32_t)(r0 >> (16 * i + 8)) & 0xFFu;
            const uint32_t sa = (uint32_t)(s8 >> (16 * i)) & 0xFFu;
            const uint32_t sb = (uint32_t)(s8 >> (16 * i + 8)) & 0xFFu;
            const uint32_t ea = (a & 0x80u) << 8 | sa << 7 | (a & 0x7Fu);
            const uint32_t eb = (b & 0x80u) << 8 | sb << 7 | (b & 0x7Fu);
            w[i] = ea | eb << 16;
        }
        *(uint4 *)dst = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
        uint32_t w[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t a = (uint32_t)(r0 >> (8 * i)) & 0xFFu;
            const uint32_t b = (uint32_t)(r1 >> (8 * i)) & 0xFFu;
            const uint32_t c = (uint32_t)(r2 >> (8 * i)) & 0xFFu;
            const uint32_t s = (uint32_t)(s8 >> (8 * i)) & 0xFFu;
            w[i] = (c & 0x80u) << 24 | s << 23 | (c & 0x7Fu) << 16 | b << 8 | a;
        }
        *(uint4 *)dst = make_uint4(w[0], w[1], w[2], w[3]);
        *(uint4 *)(dst + 16) = make_uint4(w[4], w[5], w[6], w[7]);
    }
}

/* Nonzero when any byte of p[a, b) is nonzero; the block's threads share
 * the range. */
__device__ __forceinline__ bool any_nonzero(const uint8_t *p, uint64_t a, uint64_t b)
{
    bool nz = false;
    for (uint64_t i = a + threadIdx.x; i < b; i += blockDim.x)
        nz |= p[i] != 0;
    return nz;
}

/*
 * Rules checked (CODEC.md), any failure = the frame adds 1 to *bad:
 * length >= 256, a multiple of 16, offset a multiple of 16; mode 0 or 1;
 * elem as given; reserved 0; nbytes what the frame index implies.  Raw: the
 * bytes and zero padding inside len.  Huff: lengths 0..12, one at least,
 * Kraft sum <= 1; raw-plane and words padding zero; W inside len; each
 * sub-block's words inside len, each symbol's code valid and inside the
 * sub-block's words, all words used, the last word's unused bits zero; the
 * bytes after the bitstream up to len zero.
 *
 * The sub-blocks go in rounds of kDecThreads, so that every global access
 * is coalesced: the round's bitstream words are staged in shared memory
 * with 16-byte loads (when they fit, else each thread reads its own words
 * from global memory), each thread decodes its sub-block into a row of
 * symbols in shared memory, then the block merges the symbols with the raw
 * planes and stores the elements, consecutive threads on consecutive bytes.
 */
__global__ void __launch_bounds__(kDecThreads, 3)
decode_kernel(const uint8_t *__restrict__ stored, const uint32_t *__restrict__ offs,
              const uint32_t *__restrict__ lens, uint32_t frame_bytes, uint64_t total,
              uint32_t elem, uint8_t *__restrict__ out, uint32_t *bad)
{
    extern __shared__ __align__(16) unsigned char dec_dyn[];
    dec_smem &sm = *reinterpret_cast<dec_smem *>(dec_dyn);
    const int tid = threadIdx.x;
    const uint64_t f = blockIdx.x;
    const uint64_t rest = total - f * frame_bytes;
    const uint32_t nbytes = rest < frame_bytes ? (uint32_t)rest : frame_bytes;
    uint8_t *dst = out + f * frame_bytes;
    const uint32_t o = offs[f], L = lens[f];
    const uint8_t *fr = stored + o;

    if (L < KVS_CODEC_MIN_FRAME || L % 16 || o % 16) {
        if (tid == 0)
            atomicAdd(bad, 1u);
        return;
    }
    /* The huff layout follows from nbytes and elem, which the frame index
     * gives: load the header, the code lengths, the first round's word
     * counts and the two paddings before R and W at once (all inside len),
     * so that their latencies overlap; they are checked below. */
    kvs_codec_layout lay = {};
    kvs__codec_layout_of(nbytes, elem, &lay); /* elem and nbytes checked by the launcher */
    const uint32_t n = lay.n, nsub = lay.nsub;
    const bool fits = lay.bits_off <= L;
    const uint32_t h0 = *(const uint32_t *)fr, h1 = *(const uint32_t *)(fr + 4);
    const uint32_t lbyte = fr[KVS_CODEC_LENGTHS_OFF + tid]; /* tid < 128 < L */
    uint32_t wc = 0, pad = 0;
    if (fits) {
        const uint64_t p0 = lay.planes_off + lay.planes_len, r1 = lay.words_off + nsub;
        if (tid < nsub)
            wc = fr[lay.words_off + tid];
        if (tid < 4 && p0 + tid < lay.words_off)
            pad = fr[p0 + tid];
        else if (tid >= 4 && tid < 8 && r1 + (tid - 4) < lay.bits_off)
            pad = fr[r1 + (tid - 4)];
    }
    const uint32_t mode = h0 & 0xFFu;
    if ((mode != KVS_CODEC_MODE_RAW && mode != KVS_CODEC_MODE_HUFF) || (h0 >> 8 & 0xFFu) != elem ||
        (h0 >> 16) != 0 || h1 != nbytes) {
        if (tid == 0)
            atomicAdd(bad, 1u);
        return;
    }
    if (tid == 0)
        sm.bad = 0;
    __syncthreads();

    if (mode == KVS_CODEC_MODE_RAW) {
        const uint64_t end = 8 + (uint64_t)nbytes;
        if (end > L) {
            if (tid == 0)
                atomicAdd(bad, 1u);
            return;
        }
        const uint32_t n8 = nbytes / 8;
        for (uint32_t i = tid; i < n8; i += kDecThreads)
            *(uint64_t *)(dst + 8 * (uint64_t)i) = *(const uint64_t *)(fr + 8 + 8 * (uint64_t)i);
        for (uint64_t i = 8 * (uint64_t)n8 + tid; i < nbytes; i += kDecThreads)
            dst[i] = fr[8 + i];
        if (any_nonzero(fr, end, L))
            sm.bad = 1;
        __syncthreads();
        if (tid == 0 && sm.bad)
            atomicAdd(bad, 1u);
        return;
    }

    if (!fits) {
        if (tid == 0)
            atomicAdd(bad, 1u);
        return;
    }

    /* the code: lengths, their checks, the decode table */
    dec_build &b = sm.u.b;
    sm.len[2 * tid] = lbyte & 0x0Fu;
    sm.len[2 * tid + 1] = lbyte >> 4;
    __syncthreads();
    canonical(sm.len, b.cs, b.start, b.pos, &sm.bad);
    const uint32_t kraft = b.cs.base_start[kBits + 1], present = b.cs.base_pos[kBits + 1];
    if (sm.bad || present == 0 || kraft > kTable) {
        if (tid == 0)
            atomicAdd(bad, 1u);
        return;
    }
    for (int s = tid; s < 256; s += kDecThreads) {
        const uint32_t l = sm.len[s];
        if (l) {
            b.sorted_start[b.pos[s]] = b.start[s];
            b.sorted_entry[b.pos[s]] = (uint16_t)(s | l << 8);
        }
    }
    __syncthreads();
    /* v: the next 12 bits read with the first bit as MSB, the entry's index
     * bit-reversed; each thread fills a run of kRun values of v, finding the
     * code of the first by binary search and walking on from there */
    constexpr uint32_t kRun = kTable / kDecThreads;
    for (uint32_t v0 = tid * kRun; v0 < kTable; v0 += kDecThreads * kRun) {
        uint32_t lo = 0, hi = present; /* last position with start <= v0 */
        while (hi - lo > 1) {
            const uint32_t mid = (lo + hi) / 2;
            if (b.sorted_start[mid] <= v0)
                lo = mid;
            else
                hi = mid;
        }
        for (uint32_t v = v0; v < v0 + kRun; v++) {
            while (lo + 1 < present && b.sorted_start[lo + 1] <= v)
                lo++;
            sm.table[brev_bits(v, kBits)] = v < kraft ? b.sorted_entry[lo] : 0;
        }
    }
    bool fail = pad != 0; /* the paddings before R and W */
    /* (block_scan's first barrier ends the table build before the staged
     * words overwrite its work areas) */

    /* the sub-blocks, in rounds */
    const uint8_t *planes = fr + KVS_CODEC_PLANES_OFF;
    const uint32_t bits_off = (uint32_t)lay.bits_off;
    const uint32_t *bits = (const uint32_t *)(fr + bits_off);
    const uint32_t words_in_len = (L - bits_off) / 4; /* words that lie inside len */
    uint32_t carry = 0;
    bool any_fail = false;
    for (uint32_t base = 0; base < nsub; base += kDecThreads) {
        const uint32_t k = base + tid; /* wc: its word count, 0 past the end */
        uint32_t t;
        const uint32_t first = carry + block_scan<kDecThreads>(wc, sm.scan, &t);
        const uint32_t rfirst = carry;
        carry += t;
        /* stage the round's words [rfirst, rfirst + t), as the 16-byte
         * chunks of the frame that hold them, when they fit and lie inside
         * len (uniform over the block) */
        const uint64_t a0 = bits_off + 4 * (uint64_t)rfirst, a0r = a0 & ~15ull;
        const uint64_t a1 = a0 + 4 * (uint64_t)t;
        const uint32_t nch = (uint32_t)((a1 + 15 - a0r) / 16);
        const bool staged = a1 <= L && 4 * (uint64_t)nch <= kWbuf;
        if (staged)
            for (uint32_t c = tid; c < nch; c += kDecThreads)
                copy16_async(&sm.u.wbuf[4 * c], fr + a0r + 16 * c);
        /* the next round's word counts and, for E = 2, this round's raw
         * plane bytes of the elements this thread merges: in flight while
         * the words arrive and the sub-blocks decode */
        const uint32_t kn = k + kDecThreads;
        const uint32_t wc_next = kn < nsub ? fr[lay.words_off + kn] : 0;
        const uint32_t e_lo = base * kSub;
        const uint32_t e_hi = (uint64_t)e_lo + kDecThreads * kSub < n ? e_lo + kDecThreads * kSub
                                                                       : n;
        uint2 pre[kPre][2];
        if (elem == 2) {
#pragma unroll
            for (int i = 0; i < kPre; i++) {
                const uint32_t e = e_lo + 16 * (tid + kDecThreads * i);
                if (e + 16 <= e_hi) {
                    pre[i][0] = *(const uint2 *)(planes + e);
                    pre[i][1] = *(const uint2 *)(planes + e + 8);
                } else {
                    pre[i][0] = pre[i][1] = make_uint2(0, 0);
                }
            }
        }
        copy_async_wait();
        __syncthreads();
        if (k < nsub && !fail) {
            if (wc > KVS_CODEC_SUB_MAX_WORDS || (uint64_t)first + wc > words_in_len)
                fail = true;
        }
        if (k < nsub && !fail) {
            const uint32_t *wp =
                staged ? sm.u.wbuf + (a0 - a0r) / 4 + (first - rfirst) : bits + first;
            uint8_t *sp = sm.sym + tid * kSymStride;
            const uint32_t cnt = min(kSub, n - k * kSub);
            uint64_t buf = 0;
            uint32_t avail = 0, idx = 0;    /* bits in buf; words moved into buf */
            uint32_t next = wc ? wp[0] : 0; /* word idx, loaded ahead of its use */
            for (uint32_t g = 0; g < cnt; g += 8) {
                const uint32_t m = min(8u, cnt - g);
                uint64_t s8 = 0;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if ((uint32_t)j < m) {
                        if (avail < kBits && idx < wc) {
                            buf |= (uint64_t)next << avail;
                            avail += 32;
                            idx++;
                            next = idx < wc ? wp[idx] : 0;
                        }
                        const uint32_t ent = sm.table[buf & (kTable - 1)];
                        uint32_t l = ent >> 8;
                        if (ent == 0 || l > avail) {
                            fail = true;
                            l = 0;
                        }
                        s8 |= (uint64_t)(ent & 0xFFu) << (8 * j);
                        buf >>= l;
                        avail -= l;
                    }
                }
                if (fail)
                    break;
                *(uint64_t *)(sp + g) = s8;
            }
            if (!fail && (idx != wc || avail >= 32 || buf != 0))
                fail = true;
        }
        wc = wc_next;
        if (__syncthreads_or(fail)) {
            any_fail = true; /* uniform: the frame is bad, nothing more to store */
            break;
        }
        /* merge the round's symbols with the raw planes */
        if (elem == 2) {
            /* 16 elements a thread and step, from the prefetched planes */
#pragma unroll
            for (int i = 0; i < kPre; i++) {
                const uint32_t e = e_lo + 16 * (tid + kDecThreads * i);
                const uint32_t r = e - e_lo;
                const uint8_t *sp = sm.sym + (r / kSub) * kSymStride + r % kSub;
                if (e + 16 <= e_hi) {
                    const uint64_t p0 = (uint64_t)pre[i][0].y << 32 | pre[i][0].x;
                    const uint64_t p1 = (uint64_t)pre[i][1].y << 32 | pre[i][1].x;
                    store8(dst + 2 * (uint64_t)e, *(const uint64_t *)sp, 2, p0, 0, 0);
                    store8(dst + 2 * (uint64_t)e + 16, *(const uint64_t *)(sp + 8), 2, p1, 0, 0);
                } else {
                    for (uint32_t j = 0; e + j < e_hi; j++) {
                        const uint8_t raw[3] = {planes[e + j], 0, 0};
                        kvs__codec_store_elem(dst + 2 * ((uint64_t)e + j),
                                              kvs__codec_merge(sp[j], raw, 2), 2);
                    }
                }
            }
            continue;
        }
        /* E = 1 and 4: 8 elements a thread and step */
#pragma unroll 4
        for (uint32_t e = e_lo + 8 * tid; e < e_hi; e += 8 * kDecThreads) {
            const uint32_t r = e - e_lo;
            const uint8_t *sp = sm.sym + (r / kSub) * kSymStride + r % kSub;
            if (e + 8 <= e_hi) {
                uint64_t r0 = 0, r1 = 0, r2 = 0;
                if (elem == 4) {
                    r0 = load8(planes + e);
                    r1 = load8(planes + n + e);
                    r2 = load8(planes + 2 * (uint64_t)n + e);
                }
                store8(dst + (uint64_t)e * elem, *(const uint64_t *)sp, elem, r0, r1, r2);
            } else {
                for (uint32_t j = 0; e + j < e_hi; j++) {
                    uint8_t raw[3] = {0, 0, 0};
                    for (uint32_t p = 0; p + 1 < elem; p++)
                        raw[p] = planes[(uint64_t)p * n + e + j];
                    kvs__codec_store_elem(dst + ((uint64_t)e + j) * elem,
                                          kvs__codec_merge(sp[j], raw, elem), elem);
                }
            }
        }
    }
    if (any_fail || fail || any_nonzero(fr, (uint64_t)bits_off + 4 * (uint64_t)carry, L))
        sm.bad = 1;
    __syncthreads();
    if (tid == 0 && sm.bad)
        atomicAdd(bad, 1u);
}

/* A frame's slot in the encoder's scratch: room for its raw form and for
 * everything before the bitstream (the word counts are written there
 * before the mode is decided). */
uint64_t slot_bytes_of(uint32_t frame_bytes, uint32_t elem)
{
    kvs_codec_layout lay = {};
    kvs__codec_layout_of(frame_bytes, elem, &lay);
    const uint64_t raw = kvs__codec_frame_bound(frame_bytes, elem);
    return kvs__codec_align(raw > lay.bits_off ? raw : lay.bits_off, 16);
}

/* decode_kernel's two attributes (dynamic shared memory past the default
 * 48 KiB, and the carveout to hold it) stay set on the device once set, so
 * the first decode call on each device sets them instead of every call.
 * Concurrent first calls may both set them (the same values; harmless);
 * the flag goes up only after both succeeded, so a failure is returned as
 * before and the next call tries again.  A device ordinal past the array,
 * or a failed cudaGetDevice, sets them on every call.  They would be lost
 * with the device's context (cudaDeviceReset), as would every buffer and
 * stream of an engine on it. */
constexpr int kAttrDevices = 64;
std::atomic<bool> g_decode_attrs_set[kAttrDevices] = {};

cudaError_t decode_attrs()
{
    int dev = -1;
    const bool flagged = cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < kAttrDevices;
    if (flagged && g_decode_attrs_set[dev].load(std::memory_order_acquire))
        return cudaSuccess;
    cudaError_t e = cudaFuncSetAttribute(decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)sizeof(dec_smem));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(decode_kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 cudaSharedmemCarveoutMaxShared);
    if (e == cudaSuccess && flagged)
        g_decode_attrs_set[dev].store(true, std::memory_order_release);
    return e;
}

} // namespace

extern "C" uint64_t kvs_cuda_codec_scratch_bytes(uint64_t total, uint32_t frame_bytes,
                                                 uint32_t elem)
{
    if (frame_bytes == 0 || !kvs__codec_elem_ok(elem) || frame_bytes % elem)
        return 0;
    return (total + frame_bytes - 1) / frame_bytes * slot_bytes_of(frame_bytes, elem);
}

extern "C" kvs_cuda_status kvs_cuda_codec_encode(const void *data, uint64_t total,
                                                 uint32_t frame_bytes, uint32_t elem, void *out,
                                                 uint32_t *out_off, uint32_t *lens,
                                                 uint64_t *stored_total, uint64_t *sums,
                                                 void *scratch, void *stream)
{
    if (!data || !out || !out_off || !lens || !stored_total || !scratch || total == 0 ||
        !kvs__codec_elem_ok(elem) || total % elem || frame_bytes == 0 || frame_bytes % 16 ||
        frame_bytes > KVS_CUDA_CODEC_MAX_FRAME || (uintptr_t)data % 16 || (uintptr_t)out % 16 ||
        (uintptr_t)scratch % 16)
        return cudaErrorInvalidValue;
    const uint64_t nframes = (total + frame_bytes - 1) / frame_bytes;
    const uint64_t slot = slot_bytes_of(frame_bytes, elem);
    if (nframes * slot > UINT32_MAX)
        return cudaErrorInvalidValue; /* offsets are u32 */
    cudaStream_t s = (cudaStream_t)stream;
    encode_kernel<<<(unsigned)nframes, kEncThreads, 0, s>>>(
        (const uint8_t *)data, total, frame_bytes, elem, (uint8_t *)scratch, slot, lens);
    offsets_kernel<<<1, kScanThreads, 0, s>>>(lens, (uint32_t)nframes, out_off, stored_total);
    pack_kernel<<<(unsigned)nframes, kXxhThreads, 0, s>>>((const uint8_t *)scratch, slot, lens,
                                                          out_off, (uint8_t *)out, sums);
    return (kvs_cuda_status)cudaGetLastError();
}

extern "C" kvs_cuda_status kvs_cuda_codec_decode(const void *stored, const uint32_t *off,
                                                 const uint32_t *len, uint32_t nframes,
                                                 uint32_t frame_bytes, uint64_t total,
                                                 uint32_t elem, const uint64_t *expected,
                                                 void *out, uint32_t *bad, void *stream)
{
    if (!stored || !off || !len || !out || !bad || total == 0 || !kvs__codec_elem_ok(elem) ||
        total % elem || frame_bytes == 0 || frame_bytes % 16 ||
        frame_bytes > KVS_CUDA_CODEC_MAX_FRAME || (uintptr_t)stored % 16 ||
        (uintptr_t)out % 16 || (total + frame_bytes - 1) / frame_bytes != nframes ||
        nframes > 0x7fffffffu)
        return cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    if (expected)
        check_kernel<<<nframes, kChkThreads, 0, s>>>((const uint8_t *)stored, off, len, expected,
                                                    bad);
    cudaError_t e = decode_attrs();
    if (e != cudaSuccess)
        return (kvs_cuda_status)e;
    decode_kernel<<<nframes, kDecThreads, sizeof(dec_smem), s>>>((const uint8_t *)stored, off, len, frame_bytes,
                                                  total, elem, (uint8_t *)out, bad);
    return (kvs_cuda_status)cudaGetLastError();
}
