/* test_gpu_codec.c - the exp-huff codec's CUDA kernels (cuda/kvs_codec.cu)
 * against the CPU codec (src/codec.c): GPU frames byte for byte those of
 * kvs__codec_encode_frame, with packed offsets, lengths, the stored total
 * and XXH3 sums; GPU decode of GPU- and CPU-encoded frames (gaps between
 * frames too); every dtype size (1, 2, 4) on KV-like data (normal values
 * with per-channel scales as bf16, fp16, fp8 e4m3, fp32), constant frames,
 * skewed histograms that hit the 12-bit limit, random bytes (raw
 * fallback), short last frames; corrupted frames (header, lengths, word
 * counts, padding, bitstream) counted bad, the other frames decoded and
 * nothing written outside the bad frame's output range; random garbage
 * frames never crash.  Exits 77 only where there is no GPU.
 *
 *   test_gpu_codec                 the tests
 *   test_gpu_codec bench FILE      encode/decode GB/s of logical bytes on
 *                                  2 GiB (GT_CODEC_MIB) per dtype beside a
 *                                  device-to-device cudaMemcpy of the same
 *                                  bytes, and the compression ratio; one
 *                                  JSON line appended to FILE
 */
#include "gpu_util.h"

#include "checksum.h"
#include "codec.h"
#include "kvs_cuda.h"

#include <math.h>
#include <string.h>

/* ---- KV-like data ------------------------------------------------------------ */

static double normal(void)
{
    double u = ((gt_rand() >> 11) + 1) * (1.0 / 9007199254740993.0);
    double v = (gt_rand() >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static uint16_t to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

static uint16_t to_fp16(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, m = x & 0x7FFFFFu;
    int e = (int)((x >> 23) & 0xFFu) - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7C00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        m |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e), r = m >> shift, rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

/* fp8 e4m3 (bias 7, largest 448, no infinities), round to nearest even */
static uint8_t to_e4m3(float f)
{
    uint8_t sign = f < 0 ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f)
        return sign | 0x7E;
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    long code;
    if (a == 0.0f || e - 1 < -6) {
        code = lrintf(ldexpf(a, 9)); /* subnormal: units of 2^-9 */
    } else {
        long mant = lrintf((2.0f * m - 1.0f) * 8.0f);
        code = ((long)(e - 1 + 7) << 3) + mant; /* mant 8 carries into the exponent */
    }
    if (code > 0x7E)
        code = 0x7E;
    return (uint8_t)(sign | code);
}

enum kind { K_BF16, K_FP16, K_FP8, K_FP32, K_CONST, K_RANDOM, K_SKEW, K_LOPSIDED };
static const char *kind_name[] = {"bf16",   "fp16",   "fp8",   "fp32",
                                  "constant", "random", "skewed", "lopsided"};

/* n bytes of data of a kind; elements of 128 channels, each with its own
 * scale (2^-6 .. 2^2), as attention K/V heads have. */
static void fill(uint8_t *p, size_t n, enum kind k, uint32_t elem)
{
    float scale[128];
    for (int c = 0; c < 128; c++)
        scale[c] = ldexpf(1.0f, (int)(gt_rand() % 9) - 6) * (float)(1.0 + 0.5 * normal());
    size_t ne = n / elem;
    switch (k) {
    case K_BF16:
    case K_FP16:
        for (size_t i = 0; i < ne; i++) {
            float v = (float)normal() * scale[i % 128];
            uint16_t h = k == K_BF16 ? to_bf16(v) : to_fp16(v);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case K_FP8:
        for (size_t i = 0; i < ne; i++)
            p[i] = to_e4m3((float)normal() * scale[i % 128] * 16.0f);
        break;
    case K_FP32:
        for (size_t i = 0; i < ne; i++) {
            float v = (float)normal() * scale[i % 128];
            memcpy(p + 4 * i, &v, 4);
        }
        break;
    case K_CONST:
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)(0x3F80u >> (8 * (i % 2))); /* bf16 1.0 repeated */
        break;
    case K_RANDOM:
        gt_fill(p, n);
        break;
    case K_LOPSIDED:
        /* each 64 KiB: 32 KiB of random bytes, then zeros.  As fp8 in
         * frames of 64 KiB or more, huff wins, and the GPU decoder's first
         * round of 128 sub-blocks has more bitstream words than it stages
         * in shared memory (~9 bits a symbol), so it reads them from global
         * memory; the next round is staged. */
        gt_fill(p, n);
        for (size_t i = 0; i < n; i++)
            if (i % 65536 >= 32768)
                p[i] = 0;
        break;
    case K_SKEW: {
        /* symbol counts near a Fibonacci sequence: a Huffman tree far
         * deeper than 12 levels, so the builder must halve */
        uint64_t a = 1, b = 1;
        size_t i = 0;
        for (uint32_t s = 0; i < ne; s = (s + 1) % 40) {
            for (uint64_t j = 0; j < a && i < ne; j++, i++) {
                uint32_t v = (uint32_t)(gt_rand() & 0xFFFFFFFFu);
                if (elem == 1)
                    v = s;
                else if (elem == 2)
                    v = (v & 0x807Fu) | (s << 7);
                else
                    v = (v & 0x807FFFFFu) | (s << 23);
                memcpy(p + i * elem, &v, elem);
            }
            uint64_t c = a + b;
            a = b;
            b = c > (1u << 20) ? 1 : c;
        }
        break;
    }
    }
}

/* ---- encode on the GPU, check against the CPU --------------------------------- */

typedef struct enc {
    uint32_t nframes;
    uint64_t stored;
    uint8_t *frames;   /* host copy of the packed frames */
    uint32_t *off, *len;
    uint64_t *sums;
    uint8_t *d_frames; /* device */
    uint32_t *d_off, *d_len;
    uint64_t *d_sums;
    uint32_t huff;     /* frames in huff mode */
} enc;

static void enc_free(enc *e)
{
    free(e->frames);
    free(e->off);
    free(e->len);
    free(e->sums);
    CU(cudaFree(e->d_frames));
    CU(cudaFree(e->d_off));
    CU(cudaFree(e->d_len));
    CU(cudaFree(e->d_sums));
}

static uint32_t nbytes_of(uint64_t total, uint32_t fb, uint32_t i)
{
    uint64_t rest = total - (uint64_t)i * fb;
    return rest < fb ? (uint32_t)rest : fb;
}

static void gpu_encode(const uint8_t *d_in, uint64_t total, uint32_t fb, uint32_t elem, enc *e)
{
    memset(e, 0, sizeof *e);
    e->nframes = (uint32_t)((total + fb - 1) / fb);
    uint64_t bound = (uint64_t)e->nframes * kvs__codec_frame_bound(fb, elem);
    uint64_t scratch_bytes = kvs_cuda_codec_scratch_bytes(total, fb, elem);
    void *d_scratch;
    uint64_t *d_total;
    CU(cudaMalloc((void **)&e->d_frames, bound));
    CU(cudaMalloc((void **)&e->d_off, 4 * e->nframes));
    CU(cudaMalloc((void **)&e->d_len, 4 * e->nframes));
    CU(cudaMalloc((void **)&e->d_sums, 8 * e->nframes));
    CU(cudaMalloc((void **)&d_total, 8));
    CU(cudaMalloc(&d_scratch, scratch_bytes));
    CHECK(scratch_bytes > 0);
    CU((cudaError_t)kvs_cuda_codec_encode(d_in, total, fb, elem, e->d_frames, e->d_off, e->d_len,
                                          d_total, e->d_sums, d_scratch, NULL));
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(&e->stored, d_total, 8, cudaMemcpyDeviceToHost));
    e->off = malloc(4 * e->nframes);
    e->len = malloc(4 * e->nframes);
    e->sums = malloc(8 * e->nframes);
    e->frames = malloc(e->stored ? e->stored : 1);
    CU(cudaMemcpy(e->off, e->d_off, 4 * e->nframes, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(e->len, e->d_len, 4 * e->nframes, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(e->sums, e->d_sums, 8 * e->nframes, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(e->frames, e->d_frames, e->stored, cudaMemcpyDeviceToHost));
    CU(cudaFree(d_scratch));
    CU(cudaFree(d_total));
}

/* Decodes on the GPU into a buffer with guard bytes on both sides; returns
 * *bad; out (host, total bytes) receives the output. */
static uint32_t gpu_decode(const uint8_t *d_frames, const uint32_t *d_off, const uint32_t *d_len,
                           uint32_t nframes, uint32_t fb, uint64_t total, uint32_t elem,
                           const uint64_t *d_expected, uint8_t *out)
{
    const uint64_t guard = 4096;
    uint8_t *d_out, *h = malloc(total + 2 * guard);
    uint32_t *d_bad, bad = 0;
    CU(cudaMalloc((void **)&d_out, total + 2 * guard));
    CU(cudaMemset(d_out, 0xA5, total + 2 * guard));
    CU(cudaMalloc((void **)&d_bad, 4));
    CU(cudaMemset(d_bad, 0, 4));
    CU((cudaError_t)kvs_cuda_codec_decode(d_frames, d_off, d_len, nframes, fb, total, elem,
                                          d_expected, d_out + guard, d_bad, NULL));
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(&bad, d_bad, 4, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(h, d_out, total + 2 * guard, cudaMemcpyDeviceToHost));
    for (uint64_t i = 0; i < guard; i++) {
        if (h[i] != 0xA5 || h[guard + total + i] != 0xA5) {
            CHECK_MSG(0, "decode wrote outside its output (guard byte %llu)", (unsigned long long)i);
            break;
        }
    }
    memcpy(out, h + guard, total);
    free(h);
    CU(cudaFree(d_out));
    CU(cudaFree(d_bad));
    return bad;
}

/* One case: GPU encode == CPU encode, packed layout, sums, both decoders.
 * Returns the stored bytes. */
static uint64_t check_case(enum kind k, uint64_t total, uint32_t fb, uint32_t elem)
{
    uint8_t *h = malloc(total), *d, *cpu = malloc(kvs__codec_frame_bound(fb, elem));
    uint8_t *dec = malloc(total), *cdec = malloc(fb);
    fill(h, total, k, elem);
    CU(cudaMalloc((void **)&d, total));
    CU(cudaMemcpy(d, h, total, cudaMemcpyHostToDevice));
    enc e;
    gpu_encode(d, total, fb, elem, &e);
    uint64_t sum = 0;
    uint32_t big = 0; /* frames of 1 KiB or more */
    int diff = 0;
    for (uint32_t i = 0; i < e.nframes; i++) {
        uint32_t nb = nbytes_of(total, fb, i);
        CHECK_MSG(e.off[i] == sum, "%s: frame %u at %u, packed would be %llu", kind_name[k], i,
                  e.off[i], (unsigned long long)sum);
        CHECK_MSG(e.len[i] >= 256 && e.len[i] % 16 == 0 &&
                      e.len[i] <= kvs__codec_frame_bound(nb, elem),
                  "%s: frame %u length %u", kind_name[k], i, e.len[i]);
        if (e.off[i] != sum || e.off[i] + (uint64_t)e.len[i] > e.stored)
            break;
        size_t cl = kvs__codec_encode_frame(h + (uint64_t)i * fb, nb, elem, cpu);
        if (!diff && (cl != e.len[i] || memcmp(cpu, e.frames + e.off[i], cl))) {
            size_t at = 0;
            while (at < cl && at < e.len[i] && cpu[at] == e.frames[e.off[i] + at])
                at++;
            CHECK_MSG(0, "%s E=%u frame %u (%u bytes): GPU frame of %u bytes differs from the "
                      "CPU's of %zu bytes at byte %zu (modes %u/%u)", kind_name[k], elem, i, nb,
                      e.len[i], cl, at, e.frames[e.off[i]], cpu[0]);
            diff = 1;
        }
        CHECK_MSG(e.sums[i] == kvs__checksum(e.frames + e.off[i], e.len[i]),
                  "%s: sum of frame %u", kind_name[k], i);
        CHECK_MSG(kvs__codec_decode_frame(e.frames + e.off[i], e.len[i], nb, elem, cdec) == 0 &&
                      memcmp(cdec, h + (uint64_t)i * fb, nb) == 0,
                  "%s: the CPU decoder on GPU frame %u", kind_name[k], i);
        e.huff += e.frames[e.off[i]] == KVS_CODEC_MODE_HUFF && nb >= 1024;
        big += nb >= 1024;
        sum += e.len[i];
    }
    CHECK_MSG(e.stored == sum, "%s: stored total %llu, frames sum to %llu", kind_name[k],
              (unsigned long long)e.stored, (unsigned long long)sum);
    uint32_t bad = gpu_decode(e.d_frames, e.d_off, e.d_len, e.nframes, fb, total, elem,
                              e.d_sums, dec);
    CHECK_MSG(bad == 0 && memcmp(dec, h, total) == 0, "%s E=%u: GPU round trip (%u bad)",
              kind_name[k], elem, bad);
    printf("%-8s E=%u %9llu bytes in %4u frames of %7u: stored %9llu (%.3fx), %u of %u "
           "frames of 1 KiB+ huff\n", kind_name[k], elem, (unsigned long long)total, e.nframes,
           fb, (unsigned long long)e.stored, (double)total / (double)e.stored, e.huff, big);
    if (k == K_RANDOM)
        CHECK_MSG(e.huff == 0, "random bytes: %u frames in huff mode", e.huff);
    if (k == K_CONST || k == K_BF16)
        CHECK_MSG(e.huff == big, "%s: only %u of %u frames of 1 KiB or more huff",
                  kind_name[k], e.huff, big);
    enc_free(&e);
    CU(cudaFree(d));
    free(h);
    free(cpu);
    free(dec);
    free(cdec);
    return sum;
}

/* CPU-encoded frames, placed with gaps (every other frame aligned to 4096),
 * decoded on the GPU. */
static void check_cpu_frames(uint32_t elem)
{
    const uint32_t fb = 65536;
    const uint64_t total = 5 * (uint64_t)fb + 4096 + 2 * elem;
    uint32_t n = (uint32_t)((total + fb - 1) / fb);
    uint8_t *h = malloc(total), *area = calloc(1, n * (kvs__codec_frame_bound(fb, elem) + 4096));
    uint8_t *dec = malloc(total), *d_area;
    uint32_t off[8], len[8], *d_off, *d_len;
    uint64_t sums[8], *d_sums, at = 0;
    fill(h, total, elem == 1 ? K_FP8 : elem == 2 ? K_BF16 : K_FP32, elem);
    for (uint32_t i = 0; i < n; i++) {
        if (i % 2)
            at = (at + 4095) / 4096 * 4096;
        off[i] = (uint32_t)at;
        len[i] = (uint32_t)kvs__codec_encode_frame(h + (uint64_t)i * fb, nbytes_of(total, fb, i),
                                                   elem, area + at);
        sums[i] = kvs__checksum(area + at, len[i]);
        at += len[i];
    }
    CU(cudaMalloc((void **)&d_area, at));
    CU(cudaMalloc((void **)&d_off, sizeof off));
    CU(cudaMalloc((void **)&d_len, sizeof len));
    CU(cudaMalloc((void **)&d_sums, sizeof sums));
    CU(cudaMemcpy(d_area, area, at, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d_off, off, sizeof off, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d_len, len, sizeof len, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d_sums, sums, sizeof sums, cudaMemcpyHostToDevice));
    uint32_t bad = gpu_decode(d_area, d_off, d_len, n, fb, total, elem, d_sums, dec);
    CHECK_MSG(bad == 0 && memcmp(dec, h, total) == 0,
              "E=%u: CPU-encoded frames with gaps decoded on the GPU (%u bad)", elem, bad);
    CU(cudaFree(d_area));
    CU(cudaFree(d_off));
    CU(cudaFree(d_len));
    CU(cudaFree(d_sums));
    free(h);
    free(area);
    free(dec);
}

/* ---- corrupted frames ------------------------------------------------------------ */

/* Which byte of frame f to damage, and how. */
enum damage { D_MODE, D_ELEM, D_RESERVED, D_NBYTES, D_LENGTH_15, D_LENGTHS_ZERO, D_KRAFT,
              D_WORDS_PLUS, D_WORDS_MINUS, D_WORDS_PAD, D_TAIL_PAD, D_RAW_PAD, D_RAW_SHORT,
              D_LEN_SHORT, D_BITS_FLIP, D_ANY_FLIP, D_COUNT };
static const char *damage_name[] = {
    "mode 2", "elem", "reserved", "nbytes", "a length of 15", "all lengths 0", "Kraft sum > 1",
    "words[k] + 1", "words[k] - 1", "words padding", "padding after the bitstream",
    "raw frame padding", "raw frame shorter than nbytes", "len < 256", "bitstream bit flip",
    "any byte flipped (with sums)"};

/* Applies damage d to frame f (in fr, frame lengths len[]); returns 0 when
 * the damage does not apply to this frame (e.g. no padding to flip), 1 when
 * the frame must be counted bad, 2 when it may decode (bitstream flips
 * without sums). */
static int damage(uint8_t *fr, uint32_t *len, uint32_t elem, uint32_t nbytes, enum damage d)
{
    kvs_codec_layout l = {0};
    kvs__codec_layout_of(nbytes, elem, &l);
    int huff = fr[0] == KVS_CODEC_MODE_HUFF;
    uint64_t words = 0;
    if (huff)
        for (uint32_t k = 0; k < l.nsub; k++)
            words += fr[l.words_off + k];
    uint64_t end = huff ? l.bits_off + 4 * words : 8 + (uint64_t)nbytes;
    uint32_t k = (uint32_t)(gt_rand() % (l.nsub ? l.nsub : 1));
    switch (d) {
    case D_MODE: fr[0] = 2; return 1;
    case D_ELEM: fr[1] = (uint8_t)(elem == 2 ? 4 : 2); return 1;
    case D_RESERVED: fr[2 + gt_rand() % 2] = 1; return 1;
    case D_NBYTES: fr[4 + gt_rand() % 4] ^= 1u << (gt_rand() % 8); return 1;
    case D_LENGTH_15:
        if (!huff)
            return 0;
        fr[8 + gt_rand() % 128] |= gt_rand() % 2 ? 0xF0 : 0x0F;
        return 1;
    case D_LENGTHS_ZERO:
        if (!huff)
            return 0;
        memset(fr + 8, 0, 128);
        return 1;
    case D_KRAFT:
        if (!huff)
            return 0;
        for (int i = 0; i < 128; i++)
            if (fr[8 + i] == 0) { /* two more codes of length 1 on top of any code */
                fr[8 + i] = 0x11;
                return 1;
            }
        return 0;
    case D_WORDS_PLUS:
        if (!huff || fr[l.words_off + k] >= 96 || end + 4 > len[0])
            return 0;
        fr[l.words_off + k]++;
        return 1;
    case D_WORDS_MINUS:
        if (!huff || fr[l.words_off + k] == 0)
            return 0;
        fr[l.words_off + k]--;
        return 1;
    case D_WORDS_PAD:
        if (!huff || l.words_off + l.nsub == l.bits_off)
            return 0;
        fr[l.bits_off - 1] = 1;
        return 1;
    case D_TAIL_PAD:
        if (end == len[0])
            return 0;
        fr[end + gt_rand() % (len[0] - end)] = 0x40;
        return 1;
    case D_RAW_PAD:
        if (huff || 8 + (uint64_t)nbytes == len[0])
            return 0;
        fr[len[0] - 1] = 1;
        return 1;
    case D_RAW_SHORT:
        if (huff || 8 + (uint64_t)nbytes < len[0])
            return 0;
        len[0] -= 16;
        return len[0] >= 256 ? 1 : 0;
    case D_LEN_SHORT:
        len[0] = 240;
        return 1;
    case D_BITS_FLIP:
        if (!huff || words == 0)
            return 0;
        fr[l.bits_off + gt_rand() % (4 * words)] ^= (uint8_t)(1u << (gt_rand() % 8));
        return 2;
    case D_ANY_FLIP:
        fr[gt_rand() % len[0]] ^= (uint8_t)(1u << (gt_rand() % 8));
        return 3;
    default: return 0;
    }
}

static void check_corruption(enum kind kd, uint32_t elem)
{
    const uint32_t fb = 65536;
    const uint64_t total = 4 * (uint64_t)fb + 1000 * elem;
    uint8_t *h = malloc(total), *d, *dec = malloc(total), *cdec = malloc(fb), *fr;
    fill(h, total, kd, elem);
    CU(cudaMalloc((void **)&d, total));
    CU(cudaMemcpy(d, h, total, cudaMemcpyHostToDevice));
    enc e;
    gpu_encode(d, total, fb, elem, &e);
    uint8_t *d_fr;
    uint32_t *d_len, *len = malloc(4 * e.nframes);
    fr = malloc(e.stored);
    CU(cudaMalloc((void **)&d_fr, e.stored));
    CU(cudaMalloc((void **)&d_len, 4 * e.nframes));
    int tried = 0;
    for (int d_ = 0; d_ < D_COUNT; d_++) {
        for (int rep = 0; rep < 6; rep++) {
            uint32_t f = (uint32_t)(gt_rand() % e.nframes);
            memcpy(fr, e.frames, e.stored);
            memcpy(len, e.len, 4 * e.nframes);
            uint32_t nb = nbytes_of(total, fb, f);
            int want = damage(fr + e.off[f], &len[f], elem, nb, (enum damage)d_);
            if (!want)
                continue;
            tried++;
            CU(cudaMemcpy(d_fr, fr, e.stored, cudaMemcpyHostToDevice));
            CU(cudaMemcpy(d_len, len, 4 * e.nframes, cudaMemcpyHostToDevice));
            int sums = want == 3 || rep % 2;
            uint32_t bad = gpu_decode(d_fr, e.d_off, d_len, e.nframes, fb, total, elem,
                                      sums ? e.d_sums : NULL, dec);
            int cpu_ok = kvs__codec_decode_frame(fr + e.off[f], len[f], nb, elem, cdec) == 0;
            if (want == 1)
                CHECK_MSG(bad >= 1 && !cpu_ok, "%s E=%u: %s in frame %u: %u bad (CPU %s)",
                          kind_name[kd], elem, damage_name[d_], f, bad,
                          cpu_ok ? "accepts" : "rejects");
            else if (sums)
                CHECK_MSG(bad >= 1, "%s E=%u: %s in frame %u with sums: not counted",
                          kind_name[kd], elem, damage_name[d_], f);
            else
                CHECK_MSG((bad == 0) == cpu_ok, "%s E=%u: %s in frame %u: GPU %u bad, CPU %s",
                          kind_name[kd], elem, damage_name[d_], f, bad,
                          cpu_ok ? "accepts" : "rejects");
            /* the other frames decode as before */
            for (uint32_t i = 0; i < e.nframes; i++) {
                if (i == f)
                    continue;
                uint64_t a = (uint64_t)i * fb;
                if (memcmp(dec + a, h + a, nbytes_of(total, fb, i))) {
                    CHECK_MSG(0, "%s E=%u: %s in frame %u changed frame %u's output",
                              kind_name[kd], elem, damage_name[d_], f, i);
                    break;
                }
            }
        }
    }
    CHECK(tried > 20);
    enc_free(&e);
    CU(cudaFree(d));
    CU(cudaFree(d_fr));
    CU(cudaFree(d_len));
    free(h);
    free(dec);
    free(cdec);
    free(fr);
    free(len);
}

/* Garbage: random bytes behind plausible headers, random lengths; the
 * decoder must count them and stay inside its buffers. */
static void check_garbage(void)
{
    const uint32_t fb = 16384, nframes = 64;
    const uint64_t total = (uint64_t)fb * nframes, area = 2 * total;
    uint8_t *h = malloc(area), *dec = malloc(total), *d;
    uint32_t off[64], len[64], *d_off, *d_len;
    CU(cudaMalloc((void **)&d, area));
    CU(cudaMalloc((void **)&d_off, sizeof off));
    CU(cudaMalloc((void **)&d_len, sizeof len));
    for (int round = 0; round < 8; round++) {
        uint32_t elem = round % 3 == 0 ? 1 : round % 3 == 1 ? 2 : 4;
        gt_fill(h, area);
        uint64_t at = 0;
        for (uint32_t i = 0; i < nframes; i++) {
            uint32_t l = 256 + 16 * (uint32_t)(gt_rand() % ((2 * fb) / 16));
            if (at + l > area)
                l = 256;
            off[i] = (uint32_t)at;
            len[i] = l;
            uint8_t *p = h + at;
            p[0] = (uint8_t)(gt_rand() % 3 ? 1 : 0);
            p[1] = (uint8_t)elem;
            p[2] = p[3] = 0;
            uint32_t nb = fb;
            memcpy(p + 4, &nb, 4);
            if (round >= 4) /* lengths that form a valid code: 8 bits each */
                memset(p + 8, 0x88, 128);
            at += l;
            if (at + 256 > area)
                at = 0;
        }
        CU(cudaMemcpy(d, h, area, cudaMemcpyHostToDevice));
        CU(cudaMemcpy(d_off, off, sizeof off, cudaMemcpyHostToDevice));
        CU(cudaMemcpy(d_len, len, sizeof len, cudaMemcpyHostToDevice));
        uint32_t bad = gpu_decode(d, d_off, d_len, nframes, fb, total, elem, NULL, dec);
        uint32_t cpu_bad = 0;
        for (uint32_t i = 0; i < nframes; i++)
            cpu_bad += kvs__codec_decode_frame(h + off[i], len[i], fb, elem, dec) != 0;
        CHECK_MSG(bad == cpu_bad && bad == nframes, "garbage round %d: GPU %u bad, CPU %u of %u",
                  round, bad, cpu_bad, nframes);
    }
    CU(cudaFree(d));
    CU(cudaFree(d_off));
    CU(cudaFree(d_len));
    free(h);
    free(dec);
}

static void check_args(void)
{
    uint8_t *d;
    uint32_t *w;
    uint64_t *q;
    CU(cudaMalloc((void **)&d, 1 << 20));
    CU(cudaMalloc((void **)&w, 4096));
    CU(cudaMalloc((void **)&q, 4096));
    /* misaligned data, frame size not a multiple of 16, total not of elem */
    CHECK(kvs_cuda_codec_encode(d + 1, 4096, 4096, 1, d, w, w, q, q, d, NULL) != 0);
    CHECK(kvs_cuda_codec_encode(d, 4096, 4100, 1, d, w, w, q, q, d, NULL) != 0);
    CHECK(kvs_cuda_codec_encode(d, 4097, 4096, 2, d, w, w, q, q, d, NULL) != 0);
    CHECK(kvs_cuda_codec_encode(d, 4096, 4096, 3, d, w, w, q, q, d, NULL) != 0);
    CHECK(kvs_cuda_codec_decode(d, w, w, 2, 4096, 4096, 1, NULL, d, w, NULL) != 0);
    CHECK(kvs_cuda_codec_decode(d, w, w, 1, 4096, 4096, 1, NULL, d + 8, w, NULL) != 0);
    CHECK(kvs_cuda_codec_scratch_bytes(4096, 0, 2) == 0);
    CU(cudaFree(d));
    CU(cudaFree(w));
    CU(cudaFree(q));
}

/* ---- the benchmark --------------------------------------------------------------- */

/* The benchmark's device buffers, one set for every dtype. */
typedef struct codec_bench {
    uint64_t total; /* logical bytes */
    uint32_t fb, nframes;
    uint8_t *d_in, *d_out, *d_dec, *d_scratch;
    uint32_t *d_off, *d_len, *d_bad;
    uint64_t *d_total, *d_sums;
    cudaEvent_t e0, e1;
} codec_bench;

enum bench_op { B_COPY, B_ENCODE, B_DECODE, B_DECODE_VERIFY };

/* Milliseconds of one op over all of b's bytes, on the null stream:
 * d_in copied to d_dec, encoded to d_out, or d_out decoded to d_dec (with
 * B_DECODE_VERIFY, each frame checked against its sum first). */
static float bench_ms(const codec_bench *b, enum bench_op op, uint32_t elem)
{
    CU(cudaEventRecord(b->e0, NULL));
    switch (op) {
    case B_COPY:
        CU(cudaMemcpyAsync(b->d_dec, b->d_in, b->total, cudaMemcpyDeviceToDevice, NULL));
        break;
    case B_ENCODE:
        CU((cudaError_t)kvs_cuda_codec_encode(b->d_in, b->total, b->fb, elem, b->d_out,
                                              b->d_off, b->d_len, b->d_total, b->d_sums,
                                              b->d_scratch, NULL));
        break;
    case B_DECODE:
    case B_DECODE_VERIFY:
        CU((cudaError_t)kvs_cuda_codec_decode(b->d_out, b->d_off, b->d_len, b->nframes, b->fb,
                                              b->total, elem,
                                              op == B_DECODE_VERIFY ? b->d_sums : NULL, b->d_dec,
                                              b->d_bad, NULL));
        break;
    }
    CU(cudaEventRecord(b->e1, NULL));
    float ms = 0;
    CU(cudaEventSynchronize(b->e1));
    CU(cudaEventElapsedTime(&ms, b->e0, b->e1));
    return ms;
}

static int bench(const char *path)
{
    const char *mib_env = getenv("GT_CODEC_MIB");
    const uint64_t total = (mib_env ? strtoull(mib_env, NULL, 10) : 2048) << 20;
    const uint32_t fb = 65536;
    const uint64_t pattern = 64u << 20; /* generated on the host, repeated on the device */
    const uint32_t nframes = (uint32_t)((total + fb - 1) / fb);
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    uint8_t *h = malloc(pattern);
    codec_bench b = {.total = total, .fb = fb, .nframes = nframes};
    uint64_t out_bytes = (uint64_t)nframes * kvs__codec_frame_bound(fb, 1);
    CU(cudaMalloc((void **)&b.d_in, total));
    CU(cudaMalloc((void **)&b.d_dec, total));
    CU(cudaMalloc((void **)&b.d_out, out_bytes));
    uint64_t scratch = 0;
    for (uint32_t elem = 1; elem <= 4; elem *= 2)
        if (kvs_cuda_codec_scratch_bytes(total, fb, elem) > scratch)
            scratch = kvs_cuda_codec_scratch_bytes(total, fb, elem);
    CU(cudaMalloc((void **)&b.d_scratch, scratch));
    CU(cudaMalloc((void **)&b.d_off, 4 * nframes));
    CU(cudaMalloc((void **)&b.d_len, 4 * nframes));
    CU(cudaMalloc((void **)&b.d_sums, 8 * nframes));
    CU(cudaMalloc((void **)&b.d_total, 8));
    CU(cudaMalloc((void **)&b.d_bad, 4));
    CU(cudaEventCreate(&b.e0));
    CU(cudaEventCreate(&b.e1));
    FILE *js = fopen(path, "a");
    if (!js) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    fprintf(js, "{\"bench\":\"gpu_codec\",\"device\":\"%s\",\"bytes\":%llu,\"frame_bytes\":%u",
            prop.name, (unsigned long long)total, fb);
    const enum kind kinds[] = {K_BF16, K_FP16, K_FP8};
    const int reps = 10;
    for (int ki = 0; ki < 3; ki++) {
        enum kind k = kinds[ki];
        uint32_t elem = k == K_FP8 ? 1 : 2;
        fill(h, pattern, k, elem);
        for (uint64_t at = 0; at < total; at += pattern)
            CU(cudaMemcpy(b.d_in + at, h, total - at < pattern ? total - at : pattern,
                          cudaMemcpyHostToDevice));
        float best_copy = 1e30f, best_enc = 1e30f, best_dec = 1e30f, best_decv = 1e30f;
        for (int r = 0; r < reps; r++) {
            best_copy = fminf(best_copy, bench_ms(&b, B_COPY, elem));
            best_enc = fminf(best_enc, bench_ms(&b, B_ENCODE, elem));
            CU(cudaMemset(b.d_bad, 0, 4));
            best_dec = fminf(best_dec, bench_ms(&b, B_DECODE, elem));
            best_decv = fminf(best_decv, bench_ms(&b, B_DECODE_VERIFY, elem));
        }
        CU(cudaDeviceSynchronize());
        uint64_t stored = 0;
        uint32_t bad = 0;
        CU(cudaMemcpy(&stored, b.d_total, 8, cudaMemcpyDeviceToHost));
        CU(cudaMemcpy(&bad, b.d_bad, 4, cudaMemcpyDeviceToHost));
        /* the output is the input again (the last pattern copy compared) */
        uint8_t *back = malloc(pattern);
        CU(cudaMemcpy(back, b.d_dec, pattern, cudaMemcpyDeviceToHost));
        CHECK_MSG(bad == 0 && memcmp(back, h, pattern) == 0, "bench %s: round trip (%u bad)",
                  kind_name[k], bad);
        free(back);
        double gb = (double)total / 1e9;
        double copy = gb / (best_copy / 1e3), encs = gb / (best_enc / 1e3),
               decs = gb / (best_dec / 1e3), decv = gb / (best_decv / 1e3);
        double ratio = (double)total / (double)stored;
        printf("codec %-4s %.2f GiB, frames of 64 KiB, %s: encode %.1f GB/s, decode %.1f GB/s, "
               "decode+verify %.1f GB/s; cudaMemcpy D2D %.1f GB/s (encode %.3f, decode %.3f of "
               "it); ratio %.3fx\n", kind_name[k], (double)total / (1u << 30), prop.name, encs,
               decs, decv, copy, encs / copy, decs / copy, ratio);
        fprintf(js, ",\"%s\":{\"encode_gbs\":%.1f,\"decode_gbs\":%.1f,\"decode_verify_gbs\":%.1f,"
                "\"memcpy_d2d_gbs\":%.1f,\"encode_vs_memcpy\":%.3f,\"decode_vs_memcpy\":%.3f,"
                "\"ratio\":%.4f,\"stored_bytes\":%llu}", kind_name[k], encs, decs, decv, copy,
                encs / copy, decs / copy, ratio, (unsigned long long)stored);
    }
    fprintf(js, "}\n");
    fclose(js);
    CU(cudaFree(b.d_in));
    CU(cudaFree(b.d_dec));
    CU(cudaFree(b.d_out));
    CU(cudaFree(b.d_scratch));
    CU(cudaFree(b.d_off));
    CU(cudaFree(b.d_len));
    CU(cudaFree(b.d_sums));
    CU(cudaFree(b.d_total));
    CU(cudaFree(b.d_bad));
    free(h);
    return gt_failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    gt_require_gpu();
    gt_seed();
    if (argc == 3 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2]);

    check_args();
    /* every dtype size on KV-like data, full and short last frames */
    const uint32_t fbs[] = {65536, 4096, 16384};
    for (int fi = 0; fi < 3; fi++) {
        uint32_t fb = fbs[fi];
        check_case(K_BF16, 6 * (uint64_t)fb, fb, 2);
        check_case(K_BF16, 6 * (uint64_t)fb + 2 * 37, fb, 2); /* short, odd last frame */
        check_case(K_FP16, 3 * (uint64_t)fb + 2 * 300, fb, 2);
        check_case(K_FP8, 3 * (uint64_t)fb + 333, fb, 1);
        check_case(K_FP32, 3 * (uint64_t)fb + 4 * 129, fb, 4);
        check_case(K_CONST, 2 * (uint64_t)fb + 2 * 1000, fb, 2);
        check_case(K_RANDOM, 3 * (uint64_t)fb + 2 * 5, fb, 2);
        check_case(K_RANDOM, 2 * (uint64_t)fb + 7, fb, 1);
        check_case(K_SKEW, 3 * (uint64_t)fb + 1, fb, 1);
        check_case(K_SKEW, 3 * (uint64_t)fb + 2 * 3, fb, 2);
        check_case(K_SKEW, 3 * (uint64_t)fb + 4 * 3, fb, 4);
    }
    /* tiny frames, last frames of one element, a larger frame */
    check_case(K_BF16, 2, 65536, 2);
    check_case(K_FP8, 65536 + 1, 65536, 1);
    check_case(K_FP32, 4, 4096, 4);
    check_case(K_BF16, 4u << 20, 1u << 20, 2);
    check_case(K_FP8, 2u << 20, 256u << 10, 1);
    CHECK_MSG(check_case(K_LOPSIDED, 3 * 65536 + 100, 65536, 1) < 3 * 65536,
              "lopsided: frames not in huff mode");
    check_case(K_LOPSIDED, 1u << 20, 256u << 10, 1);
    for (uint32_t elem = 1; elem <= 4; elem *= 2)
        check_cpu_frames(elem);
    check_corruption(K_BF16, 2);
    check_corruption(K_FP8, 1);
    check_corruption(K_FP32, 4);
    check_corruption(K_RANDOM, 2);
    check_garbage();
    if (gt_failures) {
        fprintf(stderr, "%d failures\n", gt_failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
