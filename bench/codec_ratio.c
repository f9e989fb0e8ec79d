/*
 * codec_ratio.c - how well the exp-huff codec compresses a KV dump, beside
 * its entropy bound and general-purpose compressors on the same bytes.
 *
 *   kvs_codec_ratio FILE --dtype bf16|fp16|fp8|fp32 [--frame BYTES] [--repeat N]
 *
 * FILE is a flat array of elements (a raw KV dump).  It is cut in frames of
 * --frame bytes (default 65536, the smallest chunk segment) exactly as a
 * chunk's payload is, and prints one line of JSON:
 *   - our stored bytes (frames as the encoder writes them, headers, code
 *     tables and padding included) and the ratio logical / stored;
 *   - the entropy bound of the scheme: per frame, the raw bytes at 8 bits
 *     plus n * H(symbols), H the frame's empirical symbol entropy, summed.
 *     A per-frame prefix code cannot spend fewer bits than that on the
 *     frame's symbols (Gibbs), and everything else our frame holds is extra,
 *     so ratio <= bound_ratio always holds;
 *   - zstd level 1 and lz4 (default) ratios, each compressing every frame
 *     separately, once on the transposed bytes (the frame's symbol plane
 *     then its raw planes, the same split our codec makes) and once on the
 *     bytes as they are;
 *   - CPU encode and decode throughput of our codec (one thread, logical
 *     MB/s, best of --repeat runs); every frame's decode is checked against
 *     the input.
 * Exit status 0, 1 on a decode mismatch, 2 on bad arguments or input.
 */
#include "codec.h"

#include <errno.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(const char *why)
{
    fprintf(stderr,
            "kvs_codec_ratio: %s\n"
            "usage: kvs_codec_ratio FILE --dtype bf16|fp16|fp8|fp32 [--frame BYTES] "
            "[--repeat N]\n",
            why);
    return 2;
}

/* The frame's symbol plane then its raw planes. */
static void transpose(const uint8_t *in, uint32_t nbytes, uint32_t elem, uint8_t *out)
{
    uint32_t n = nbytes / elem;
    uint8_t raw[3] = {0, 0, 0};
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = kvs__codec_load_elem(in + (size_t)i * elem, elem);
        out[i] = (uint8_t)kvs__codec_split(v, elem, raw);
        for (uint32_t j = 0; j + 1 < elem; j++)
            out[(size_t)(j + 1) * n + i] = raw[j];
    }
}

/* s as the body of a JSON string: quotes, backslashes and control bytes escaped */
static void print_json_string(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL, *dtype = NULL;
    unsigned long long frame = 65536, repeat = 1;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--dtype") && a + 1 < argc) {
            dtype = argv[++a];
        } else if (!strcmp(argv[a], "--frame") && a + 1 < argc) {
            char *end;
            frame = strtoull(argv[++a], &end, 10);
            if (*end || frame == 0 || frame > (1u << 30))
                return usage("--frame takes a byte count from 1 to 1073741824");
        } else if (!strcmp(argv[a], "--repeat") && a + 1 < argc) {
            char *end;
            repeat = strtoull(argv[++a], &end, 10);
            if (*end || repeat == 0 || repeat > 1000)
                return usage("--repeat takes a count from 1 to 1000");
        } else if (argv[a][0] != '-' && !path) {
            path = argv[a];
        } else {
            fprintf(stderr, "kvs_codec_ratio: unknown argument '%s'\n", argv[a]);
            return usage("see usage");
        }
    }
    if (!path || !dtype)
        return usage("FILE and --dtype are required");
    uint32_t elem;
    if (!strcmp(dtype, "bf16") || !strcmp(dtype, "fp16"))
        elem = 2;
    else if (!strcmp(dtype, "fp8"))
        elem = 1;
    else if (!strcmp(dtype, "fp32"))
        elem = 4;
    else
        return usage("--dtype takes bf16, fp16, fp8 or fp32");
    if (frame % elem)
        return usage("--frame must be a multiple of the element size");

    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "kvs_codec_ratio: cannot open %s: %s\n", path, strerror(errno));
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (fsize <= 0 || (unsigned long)fsize % elem) {
        fprintf(stderr, "kvs_codec_ratio: %s has %ld bytes: not a nonempty array of %u-byte "
                        "elements\n", path, fsize, elem);
        fclose(f);
        return 2;
    }
    uint64_t total = (uint64_t)fsize;
    uint8_t *in = malloc(total);
    if (!in || fread(in, 1, total, f) != total) {
        fprintf(stderr, "kvs_codec_ratio: cannot read %s\n", path);
        fclose(f);
        return 2;
    }
    fclose(f);

    uint32_t fb = (uint32_t)frame;
    uint64_t nframes = (total + fb - 1) / fb;
    size_t zcap = ZSTD_compressBound(fb);
    size_t lcap = (size_t)LZ4_compressBound((int)fb);
    uint8_t *frames = malloc(nframes * kvs__codec_frame_bound(fb, elem));
    uint32_t *lens = malloc(nframes * sizeof *lens);
    uint8_t *back = malloc(fb), *tr = malloc(fb);
    uint8_t *cbuf = malloc(zcap > lcap ? zcap : lcap);
    ZSTD_CCtx *zc = ZSTD_createCCtx();
    if (!frames || !lens || !back || !tr || !cbuf || !zc) {
        fprintf(stderr, "kvs_codec_ratio: out of memory\n");
        return 2;
    }
    uint64_t stored = 0, huff = 0, pbits = 0;
    uint64_t z_tr = 0, z_plain = 0, l_tr = 0, l_plain = 0;
    double hbits = 0, enc_best = 1e30, dec_best = 1e30;
    int mismatch = 0;
    uint64_t fbound = kvs__codec_frame_bound(fb, elem);

    for (unsigned long long r = 0; r < repeat; r++) {
        double t0 = now_s();
        stored = 0;
        for (uint64_t i = 0; i < nframes; i++) {
            uint64_t lo = i * fb;
            uint32_t nb = total - lo < fb ? (uint32_t)(total - lo) : fb;
            lens[i] = (uint32_t)kvs__codec_encode_frame(in + lo, nb, elem, frames + i * fbound);
            stored += lens[i];
        }
        double t1 = now_s();
        for (uint64_t i = 0; i < nframes; i++) {
            uint64_t lo = i * fb;
            uint32_t nb = total - lo < fb ? (uint32_t)(total - lo) : fb;
            if (kvs__codec_decode_frame(frames + i * fbound, lens[i], nb, elem, back) != 0 ||
                memcmp(back, in + lo, nb) != 0)
                mismatch = 1;
        }
        double t2 = now_s();
        if (t1 - t0 < enc_best)
            enc_best = t1 - t0;
        if (t2 - t1 < dec_best)
            dec_best = t2 - t1;
    }
    for (uint64_t i = 0; i < nframes; i++) {
        uint64_t lo = i * fb;
        uint32_t nb = total - lo < fb ? (uint32_t)(total - lo) : fb;
        huff += frames[i * fbound] == KVS_CODEC_MODE_HUFF;
        hbits += kvs__codec_entropy_bits(in + lo, nb, elem);
        pbits += kvs__codec_payload_bits(in + lo, nb, elem);
        transpose(in + lo, nb, elem, tr);
        const uint8_t *srcs[2] = {tr, in + lo};
        uint64_t *zs[2] = {&z_tr, &z_plain}, *ls[2] = {&l_tr, &l_plain};
        for (int k = 0; k < 2; k++) {
            size_t z = ZSTD_compressCCtx(zc, cbuf, zcap, srcs[k], nb, 1);
            int l = LZ4_compress_default((const char *)srcs[k], (char *)cbuf, (int)nb, (int)lcap);
            if (ZSTD_isError(z) || l <= 0) {
                fprintf(stderr, "kvs_codec_ratio: zstd or lz4 failed on frame %" PRIu64 "\n", i);
                return 2;
            }
            *zs[k] += z;
            *ls[k] += (uint64_t)l;
        }
    }
    double bound_bytes = hbits / 8;
    double lb = (double)total;
    printf("{\"file\": \"");
    print_json_string(path);
    printf("\", \"dtype\": \"%s\", \"elem\": %u, \"frame_bytes\": %u, "
           "\"frames\": %" PRIu64 ", \"huff_frames\": %" PRIu64 ", "
           "\"logical_bytes\": %" PRIu64 ", \"stored_bytes\": %" PRIu64 ", \"ratio\": %.4f, "
           "\"payload_bytes\": %.1f, \"entropy_bound_bytes\": %.1f, \"bound_ratio\": %.4f, "
           "\"zstd1_transposed_ratio\": %.4f, \"lz4_transposed_ratio\": %.4f, "
           "\"zstd1_plain_ratio\": %.4f, \"lz4_plain_ratio\": %.4f, "
           "\"encode_mb_s\": %.1f, \"decode_mb_s\": %.1f, \"repeat\": %llu, "
           "\"decode_ok\": %s}\n",
           dtype, elem, fb, nframes, huff, total, stored, lb / (double)stored,
           (double)pbits / 8, bound_bytes, lb / bound_bytes, lb / (double)z_tr,
           lb / (double)l_tr, lb / (double)z_plain, lb / (double)l_plain,
           lb / enc_best / 1e6, lb / dec_best / 1e6, repeat, mismatch ? "false" : "true");
    ZSTD_freeCCtx(zc);
    free(cbuf);
    free(tr);
    free(back);
    free(lens);
    free(frames);
    free(in);
    return mismatch ? 1 : 0;
}
