/* test_codec.c - the exp-huff codec: frames round-trip bit for bit on every
 * element size and on random, bf16-like, constant, short and skewed data;
 * compressible data gets smaller and random data falls back to raw; the
 * decoder refuses every kind of broken frame without touching memory
 * outside its buffers (each frame sits in a buffer of exactly its length,
 * so the ASan build catches an over-read); the frame table parser refuses
 * broken tables with a message. */
#include "test_util.h"

#include "checksum.h"
#include "codec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static double gauss(void)
{
    double u = (rnd() + 1.0) / 4294967297.0, v = rnd() / 4294967296.0;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static uint32_t f32_bits(float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    return v;
}

/* n elements of KV-like values (normal, scale varying per "channel"). */
static void fill_kv(uint8_t *p, size_t n, uint32_t elem, int fp16)
{
    for (size_t i = 0; i < n; i++) {
        float f = (float)(gauss() * (0.02 + (double)(i % 128) * 0.01));
        uint32_t b = f32_bits(f);
        if (elem == 4) {
            kvs__codec_store_elem(p + 4 * i, b, 4);
        } else if (elem == 2 && !fp16) {
            kvs__codec_store_elem(p + 2 * i, b >> 16, 2);
        } else if (elem == 2) {
            /* fp16 by hand: normal range only (|f| < 65504 here) */
            uint32_t s = (b >> 16) & 0x8000u;
            int e = (int)((b >> 23) & 0xFF) - 127 + 15;
            uint32_t h = e <= 0 ? s : s | ((uint32_t)e << 10) | ((b >> 13) & 0x3FFu);
            kvs__codec_store_elem(p + 2 * i, h, 2);
        } else {
            /* fp8 e4m3-like: sign, 4 exponent bits, 3 mantissa bits */
            int e = (int)((b >> 23) & 0xFF) - 127 + 7;
            uint32_t q = e <= 0 ? 0 : (uint32_t)(e > 15 ? 15 : e) << 3 | ((b >> 20) & 7u);
            p[i] = (uint8_t)(((b >> 24) & 0x80u) | q);
        }
    }
}

/* Encodes in, checks the frame's shape, decodes it from a buffer of exactly
 * its length, checks the bytes come back and that re-encoding gives the
 * same frame.  Returns the stored length. */
static size_t roundtrip(const uint8_t *in, uint32_t nbytes, uint32_t elem)
{
    uint64_t bound = kvs__codec_frame_bound(nbytes, elem);
    uint8_t *out = malloc(bound);
    size_t len = kvs__codec_encode_frame(in, nbytes, elem, out);
    assert_true(len >= KVS_CODEC_MIN_FRAME && len % 16 == 0 && len <= bound);
    assert_true(out[0] == KVS_CODEC_MODE_RAW || len < kvs__codec_raw_len(nbytes));
    uint8_t *exact = malloc(len);
    memcpy(exact, out, len);
    uint8_t *dec = malloc(nbytes + 1);
    assert_int_equal(kvs__codec_decode_frame(exact, (uint32_t)len, nbytes, elem, dec), 0);
    assert_memory_equal(dec, in, nbytes);
    uint8_t *again = malloc(bound);
    assert_int_equal(kvs__codec_encode_frame(dec, nbytes, elem, again), len);
    assert_memory_equal(again, exact, len);
    free(again);
    free(dec);
    free(exact);
    free(out);
    return len;
}

static uint8_t *encode(const uint8_t *in, uint32_t nbytes, uint32_t elem, size_t *len_out)
{
    uint8_t *out = malloc(kvs__codec_frame_bound(nbytes, elem));
    *len_out = kvs__codec_encode_frame(in, nbytes, elem, out);
    uint8_t *exact = malloc(*len_out);
    memcpy(exact, out, *len_out);
    free(out);
    return exact;
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint32_t sizes[] = {0, 4, 8, 12, 252, 256, 1020, 1024, 1028, 4096, 65536, 65540, 200000};
    uint8_t *buf = malloc(200000);
    for (uint32_t e = 1; e <= 4; e *= 2)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            for (uint32_t j = 0; j < sizes[i]; j++)
                buf[j] = (uint8_t)rnd();
            size_t len = roundtrip(buf, sizes[i], e);
            /* uniform bytes do not compress: stored as they are */
            assert_int_equal(len, kvs__codec_raw_len(sizes[i]));
        }
    free(buf);
}

static void test_kv_like_compresses(void **state)
{
    (void)state;
    const uint32_t n = 32768;
    uint8_t *buf = malloc(4 * (size_t)n);
    struct { uint32_t elem; int fp16; } kinds[] = {{2, 0}, {2, 1}, {4, 0}, {1, 0}};
    for (size_t k = 0; k < 4; k++) {
        uint32_t e = kinds[k].elem, nbytes = n * e;
        fill_kv(buf, n, e, kinds[k].fp16);
        size_t len = roundtrip(buf, nbytes, e);
        size_t flen;
        uint8_t *f = encode(buf, nbytes, e, &flen);
        assert_int_equal(f[0], KVS_CODEC_MODE_HUFF);
        assert_true(len < nbytes);
        /* the frame's content bits are those the bound function reports,
         * and those are at least the entropy bound */
        uint64_t bits = kvs__codec_payload_bits(buf, nbytes, e);
        double h = kvs__codec_entropy_bits(buf, nbytes, e);
        assert_true((double)bits >= h);
        assert_true(8.0 * (double)len >= (double)bits);
        /* a Huffman code is within one bit per symbol of the entropy */
        assert_true((double)bits <= h + (double)(nbytes / e));
        free(f);
    }
    /* bf16 with few exponents: well below 2 bytes per element */
    fill_kv(buf, n, 2, 0);
    size_t len = roundtrip(buf, 2 * n, 2);
    assert_true(len * 4 < 2 * (size_t)n * 3);
    free(buf);
}

static void test_constant_frames(void **state)
{
    (void)state;
    uint8_t *buf = malloc(65536);
    for (uint32_t e = 1; e <= 4; e *= 2) {
        memset(buf, 0x3C, 65536);
        size_t len;
        uint8_t *f = encode(buf, 65536, e, &len);
        assert_int_equal(f[0], KVS_CODEC_MODE_HUFF);
        uint8_t lens[256];
        kvs__codec_unpack_lengths(f + 8, lens);
        int present = 0;
        for (int s = 0; s < 256; s++)
            if (lens[s]) {
                assert_int_equal(lens[s], 1);
                present++;
            }
        assert_int_equal(present, 1);
        /* one bit per symbol, all zero */
        kvs_codec_layout l = {0};
        assert_int_equal(kvs__codec_layout_of(65536, e, &l), 0);
        assert_int_equal(len, kvs__codec_stored_len(l.bits_off + l.n / 8));
        free(f);
        roundtrip(buf, 65536, e);
        roundtrip(buf, 4 * e, e);
    }
    free(buf);
}

static void test_short_frames(void **state)
{
    (void)state;
    uint8_t *buf = malloc(4096);
    fill_kv(buf, 2048, 2, 0);
    for (uint32_t nb = 2; nb <= 4096; nb = nb * 3 + 2)
        roundtrip(buf, nb, 2);
    roundtrip(buf, 512 + 2, 2); /* a last sub-block of one symbol */
    fill_kv(buf, 1024, 4, 0);
    for (uint32_t nb = 4; nb <= 4096; nb = nb * 2 + 4)
        roundtrip(buf, nb, 4);
    /* not a multiple of the element: refused, nothing written */
    uint8_t out[512];
    assert_int_equal(kvs__codec_encode_frame(buf, 3, 2, out), 0);
    assert_int_equal(kvs__codec_encode_frame(buf, 6, 4, out), 0);
    assert_int_equal(kvs__codec_encode_frame(buf, 6, 3, out), 0);
    free(buf);
}

/* Fibonacci counts give a Huffman tree as deep as there are symbols: the
 * 12-bit limit must hold, and the code stays complete. */
static void test_length_limit(void **state)
{
    (void)state;
    uint32_t hist[256] = {0};
    uint32_t a = 1, b = 1, total = 0;
    for (int s = 0; s < 24; s++) {
        hist[s * 7] = a;
        total += a;
        uint32_t c = a + b;
        a = b;
        b = c;
    }
    uint8_t len[256];
    kvs_codec_huff_work wk;
    assert_int_equal(kvs__codec_build_lengths(hist, len, &wk), 24);
    uint32_t kraft = 0, max = 0;
    for (int s = 0; s < 256; s++) {
        assert_true((len[s] != 0) == (hist[s] != 0));
        if (len[s])
            kraft += 1u << (12 - len[s]);
        if (len[s] > max)
            max = len[s];
    }
    assert_int_equal(kraft, 4096);
    assert_int_equal(max, 12);
    /* a frame with that histogram round-trips */
    uint8_t *buf = malloc(total);
    uint32_t k = 0;
    for (int s = 0; s < 256; s++)
        for (uint32_t i = 0; i < hist[s]; i++)
            buf[k++] = (uint8_t)s;
    for (uint32_t i = total - 1; i > 0; i--) {
        uint32_t j = rnd() % (i + 1);
        uint8_t t = buf[i];
        buf[i] = buf[j];
        buf[j] = t;
    }
    size_t flen;
    uint8_t *f = encode(buf, total, 1, &flen);
    assert_int_equal(f[0], KVS_CODEC_MODE_HUFF);
    uint8_t fl[256];
    kvs__codec_unpack_lengths(f + 8, fl);
    assert_memory_equal(fl, len, 256);
    free(f);
    roundtrip(buf, total, 1);
    /* all 256 symbols with counts 2^0 .. 2^31-ish: many halvings */
    for (int s = 0; s < 256; s++)
        hist[s] = 1u << (s % 31);
    kvs__codec_build_lengths(hist, len, &wk);
    for (int s = 0; s < 256; s++)
        assert_true(len[s] >= 1 && len[s] <= 12);
    free(buf);
}

static void test_deterministic_ties(void **state)
{
    (void)state;
    /* equal counts: ties broken by symbol value, so lower symbols never get
     * longer codes than higher ones of the same count */
    uint32_t hist[256] = {0};
    for (int s = 0; s < 5; s++)
        hist[s] = 10;
    uint8_t len[256];
    kvs_codec_huff_work wk;
    kvs__codec_build_lengths(hist, len, &wk);
    for (int s = 1; s < 5; s++)
        assert_true(len[s - 1] >= len[s]);
    /* a frame of one symbol gets the code "0" */
    uint16_t rcode[256], table[4096];
    memset(len, 0, sizeof len);
    len[9] = 1;
    assert_int_equal(kvs__codec_codes(len, rcode), 0);
    assert_int_equal(rcode[9], 0);
    assert_int_equal(kvs__codec_decode_table(len, table), 0);
    assert_int_equal(table[0], 9 | 1 << 8);
    assert_int_equal(table[1], 0);
}

/* The rule of docs/codec.md written the slow, literal way: join the two
 * nodes of smallest (weight, id), leaf id = symbol, k-th internal node id =
 * 256 + k; halve the counts (rounding up) while a code passes 12 bits. */
static void reference_lengths(const uint32_t *hist, uint8_t *len)
{
    uint64_t cnt[256];
    for (int s = 0; s < 256; s++)
        cnt[s] = hist[s];
    for (;;) {
        uint64_t w[512];
        int id[512], parent[512], alive[512], nodes = 0, live = 0;
        int leaf_node[256];
        for (int s = 0; s < 256; s++) {
            leaf_node[s] = -1;
            if (cnt[s]) {
                w[nodes] = cnt[s], id[nodes] = s, alive[nodes] = 1, parent[nodes] = -1;
                leaf_node[s] = nodes++;
                live++;
            }
        }
        memset(len, 0, 256);
        if (live == 0)
            return;
        if (live == 1) {
            for (int s = 0; s < 256; s++)
                if (cnt[s])
                    len[s] = 1;
            return;
        }
        for (int k = 0; live > 1; k++) {
            int pick[2];
            for (int j = 0; j < 2; j++) {
                int best = -1;
                for (int i = 0; i < nodes; i++)
                    if (alive[i] && (best < 0 || w[i] < w[best] ||
                                     (w[i] == w[best] && id[i] < id[best])))
                        best = i;
                alive[best] = 0;
                pick[j] = best;
            }
            w[nodes] = w[pick[0]] + w[pick[1]], id[nodes] = 256 + k, alive[nodes] = 1;
            parent[nodes] = -1;
            parent[pick[0]] = parent[pick[1]] = nodes++;
            live--;
        }
        int max = 0;
        for (int s = 0; s < 256; s++) {
            if (leaf_node[s] < 0)
                continue;
            int d = 0;
            for (int i = leaf_node[s]; parent[i] >= 0; i = parent[i])
                d++;
            len[s] = (uint8_t)d;
            if (d > max)
                max = d;
        }
        if (max <= 12)
            return;
        for (int s = 0; s < 256; s++)
            cnt[s] = (cnt[s] + 1) / 2;
    }
}

static void test_builder_follows_the_rule(void **state)
{
    (void)state;
    uint32_t hist[256];
    uint8_t a[256], b[256];
    kvs_codec_huff_work wk;
    for (int t = 0; t < 300; t++) {
        int kind = t % 4;
        for (int s = 0; s < 256; s++) {
            uint32_t r = rnd();
            hist[s] = kind == 0 ? r % 8                        /* many ties */
                    : kind == 1 ? (r % 3 ? 0 : r % 1000)       /* sparse */
                    : kind == 2 ? (r % 2 ? 0 : 1u << (r % 28)) /* forces the limit */
                    : (s < 2 + t % 7 ? r % 5 + 1 : 0);         /* few symbols */
        }
        kvs__codec_build_lengths(hist, a, &wk);
        reference_lengths(hist, b);
        assert_memory_equal(a, b, 256);
    }
}

/* ---- corruption ---------------------------------------------------------------- */

static int decode_copy(const uint8_t *f, size_t len, uint32_t nbytes, uint32_t elem)
{
    uint8_t *copy = malloc(len);
    memcpy(copy, f, len);
    uint8_t *out = malloc(nbytes ? nbytes : 1);
    int rc = kvs__codec_decode_frame(copy, (uint32_t)len, nbytes, elem, out);
    free(out);
    free(copy);
    return rc;
}

/* Applies one change to a copy of f and expects the decoder to refuse it. */
#define EXPECT_BAD(f, len, nbytes, elem, change)                                           \
    do {                                                                                     \
        uint8_t *g_ = malloc(len);                                                           \
        memcpy(g_, f, len);                                                                  \
        uint8_t *g = g_;                                                                     \
        change;                                                                              \
        assert_int_equal(decode_copy(g, len, nbytes, elem), -1);                             \
        free(g_);                                                                            \
    } while (0)

static void test_corrupt_frames(void **state)
{
    (void)state;
    /* 12 sub-blocks, the last one short; n chosen so that the bitstream
     * does not end exactly at the frame length (there is padding to damage) */
    uint32_t n = 3000, nbytes = 2 * n;
    uint8_t *buf = malloc(2 * 3100);
    size_t len;
    uint8_t *f = NULL;
    for (;; n++) {
        nbytes = 2 * n;
        fill_kv(buf, n, 2, 0);
        f = encode(buf, nbytes, 2, &len);
        kvs_codec_layout l0 = {0};
        assert_int_equal(kvs__codec_layout_of(nbytes, 2, &l0), 0);
        uint64_t w0 = 0;
        for (uint32_t k = 0; k < l0.nsub; k++)
            w0 += f[l0.words_off + k];
        if (f[0] == KVS_CODEC_MODE_HUFF && l0.bits_off + 4 * w0 < len)
            break;
        assert_true(n < 3100);
        free(f);
    }
    assert_int_equal(f[0], KVS_CODEC_MODE_HUFF);
    assert_int_equal(decode_copy(f, len, nbytes, 2), 0);
    kvs_codec_layout l = {0};
    assert_int_equal(kvs__codec_layout_of(nbytes, 2, &l), 0);
    uint8_t lens[256];
    kvs__codec_unpack_lengths(f + 8, lens);
    int absent = -1, present = -1;
    for (int s = 0; s < 256; s++) {
        if (!lens[s] && absent < 0)
            absent = s;
        if (lens[s] && present < 0)
            present = s;
    }
    assert_true(absent >= 0 && present >= 0);
    uint64_t words = 0;
    for (uint32_t k = 0; k < l.nsub; k++)
        words += f[l.words_off + k];
    uint64_t end = l.bits_off + 4 * words;
    assert_true(end < len); /* there is padding to corrupt */

    /* header */
    EXPECT_BAD(f, len, nbytes, 2, g[0] = 2);
    EXPECT_BAD(f, len, nbytes, 2, g[1] = 4);
    EXPECT_BAD(f, len, nbytes, 2, g[1] = 3);
    EXPECT_BAD(f, len, nbytes, 2, g[2] = 1);
    EXPECT_BAD(f, len, nbytes, 2, g[3] = 0x80);
    EXPECT_BAD(f, len, nbytes, 2, g[4] ^= 2);
    assert_int_equal(decode_copy(f, len, nbytes + 2, 2), -1);
    assert_int_equal(decode_copy(f, len, nbytes - 2, 2), -1);
    assert_int_equal(decode_copy(f, len, nbytes, 4), -1);
    assert_int_equal(decode_copy(f, len, nbytes, 3), -1);
    /* truncated or misaligned lengths */
    assert_int_equal(decode_copy(f, len - 16, nbytes, 2), -1);
    assert_int_equal(decode_copy(f, len - 1, nbytes, 2), -1);
    assert_int_equal(decode_copy(f, 240, nbytes, 2), -1);
    /* code lengths: > 12, Kraft > 1, none */
    for (uint8_t bad = 13; bad <= 15; bad++)
        EXPECT_BAD(f, len, nbytes, 2,
                   g[8 + present / 2] = (uint8_t)(present % 2 ? (g[8 + present / 2] & 0x0F) | bad << 4
                                                              : (g[8 + present / 2] & 0xF0) | bad));
    EXPECT_BAD(f, len, nbytes, 2,
               g[8 + absent / 2] |= (uint8_t)(absent % 2 ? 0x10 : 0x01));
    EXPECT_BAD(f, len, nbytes, 2, memset(g + 8, 0, 128));
    /* nonzero padding: after the bitstream, in the words array, last byte */
    EXPECT_BAD(f, len, nbytes, 2, g[end] = 1);
    EXPECT_BAD(f, len, nbytes, 2, g[len - 1] = 0x80);
    EXPECT_BAD(f, len, nbytes, 2, g[l.words_off + l.nsub] = 1);
    /* word counts: above 96, past the frame, one more or one fewer */
    EXPECT_BAD(f, len, nbytes, 2, g[l.words_off] = 97);
    EXPECT_BAD(f, len, nbytes, 2, g[l.words_off] = 255);
    EXPECT_BAD(f, len, nbytes, 2, g[l.words_off] = (uint8_t)(g[l.words_off] + 1));
    EXPECT_BAD(f, len, nbytes, 2, g[l.words_off] = (uint8_t)(g[l.words_off] - 1));
    EXPECT_BAD(f, len, nbytes, 2, g[l.words_off + l.nsub - 1] = 0);
    /* nonzero unused bits of a sub-block's last word: find a sub-block
     * whose bits do not fill its last word, set that word's top bit */
    uint64_t wpos = l.bits_off;
    int found = 0;
    for (uint32_t k = 0; k < l.nsub; k++) {
        uint32_t bits = 0;
        for (uint32_t i = k * 256; i < n && i < (k + 1) * 256; i++)
            bits += lens[((uint32_t)buf[2 * i] >> 7) | ((uint32_t)(buf[2 * i + 1] & 0x7F) << 1)];
        wpos += 4 * (uint64_t)f[l.words_off + k];
        if (bits % 32) {
            EXPECT_BAD(f, len, nbytes, 2, g[wpos - 1] |= 0x80);
            found++;
        }
    }
    assert_true(found > 0);
    free(f);

    /* a frame of one symbol: its code is "0", a 1 bit hits an invalid slot */
    memset(buf, 0, nbytes);
    f = encode(buf, nbytes, 2, &len);
    assert_int_equal(kvs__codec_layout_of(nbytes, 2, &l), 0);
    assert_int_equal(f[0], KVS_CODEC_MODE_HUFF);
    assert_int_equal(decode_copy(f, len, nbytes, 2), 0);
    EXPECT_BAD(f, len, nbytes, 2, g[l.bits_off] |= 1);
    EXPECT_BAD(f, len, nbytes, 2, g[l.bits_off + 3] |= 0x40);

    /* raw frames: padding and size */
    for (uint32_t i = 0; i < nbytes; i++)
        buf[i] = (uint8_t)rnd();
    free(f);
    f = encode(buf, nbytes, 2, &len);
    assert_int_equal(f[0], KVS_CODEC_MODE_RAW);
    assert_true(8 + nbytes < len);
    EXPECT_BAD(f, len, nbytes, 2, g[8 + nbytes] = 1);
    EXPECT_BAD(f, len, nbytes, 2, g[0] = 1);
    assert_int_equal(decode_copy(f, len, nbytes + 256, 2), -1);
    free(f);

    /* random damage anywhere: refused or decoded, never a crash */
    fill_kv(buf, n, 2, 0);
    f = encode(buf, nbytes, 2, &len);
    for (int t = 0; t < 3000; t++) {
        uint8_t *g = malloc(len);
        memcpy(g, f, len);
        int flips = 1 + (int)(rnd() % 4);
        for (int i = 0; i < flips; i++)
            g[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        (void)decode_copy(g, len, nbytes, 2);
        free(g);
    }
    free(f);
    free(buf);
}

/* A hand-made frame whose code has 12-bit codes and an incomplete Kraft sum
 * decodes; a stream that reaches an unused slot fails. */
static void test_hand_made_frame(void **state)
{
    (void)state;
    uint8_t len[256] = {0};
    for (int s = 0; s < 11; s++)
        len[s] = (uint8_t)(s + 1); /* 1..11: Kraft 1 - 2^-11 */
    len[200] = 12;                 /* Kraft 1 - 2^-12: one slot unused */
    uint16_t rcode[256];
    assert_int_equal(kvs__codec_codes(len, rcode), 0);
    uint8_t syms[256];
    for (int i = 0; i < 256; i++)
        syms[i] = i % 3 == 0 ? 200 : (uint8_t)(i % 11);
    /* E = 1: lengths, no planes, words[1], bitstream */
    uint8_t f[1024];
    memset(f, 0, sizeof f);
    f[0] = 1, f[1] = 1;
    kvs__codec_store_u32(f + 4, 256);
    kvs__codec_pack_lengths(len, f + 8);
    kvs_codec_layout l = {0};
    assert_int_equal(kvs__codec_layout_of(256, 1, &l), 0);
    uint64_t acc = 0;
    uint32_t cnt = 0, w = 0;
    for (int i = 0; i < 256; i++) {
        acc |= (uint64_t)rcode[syms[i]] << cnt;
        cnt += len[syms[i]];
        while (cnt >= 32) {
            kvs__codec_store_u32(f + l.bits_off + 4 * w++, (uint32_t)acc);
            acc >>= 32;
            cnt -= 32;
        }
    }
    uint32_t used_bits = 32 * w + cnt;
    if (cnt)
        kvs__codec_store_u32(f + l.bits_off + 4 * w++, (uint32_t)acc);
    f[l.words_off] = (uint8_t)w;
    size_t flen = kvs__codec_stored_len(l.bits_off + 4 * w);
    uint8_t out[256];
    assert_int_equal(decode_copy(f, flen, 256, 1), 0);
    assert_int_equal(kvs__codec_decode_frame(f, (uint32_t)flen, 256, 1, out), 0);
    assert_memory_equal(out, syms, 256);
    /* the unused 12-bit slot: all ones (code 111111111111 is unassigned) */
    uint8_t g[1024];
    memcpy(g, f, sizeof g);
    kvs__codec_store_u32(g + l.bits_off, 0xFFFu);
    assert_int_equal(decode_copy(g, flen, 256, 1), -1);
    (void)used_bits;
}

/* ---- chunks ------------------------------------------------------------------ */

static void test_chunk(void **state)
{
    (void)state;
    const uint32_t seg = 65536;
    const uint64_t payload = 3 * (uint64_t)seg + 12346; /* a short last frame */
    uint8_t *in = malloc(payload);
    fill_kv(in, payload / 2, 2, 0);
    uint32_t frames = kvs__codec_frame_count(payload, seg);
    assert_int_equal(frames, 4);
    uint64_t bound = kvs__codec_area_bound(payload, seg);
    uint8_t table[4096], *area = malloc(bound);
    uint64_t sums[4], stored;
    bool worth;
    assert_int_equal(kvs__codec_encode_chunk(in, payload, seg, 2, table, area, sums, &stored,
                                             &worth), 0);
    assert_true(worth);
    assert_true(stored < payload);
    kvs_codec_frame fr[4];
    char why[256];
    assert_int_equal(kvs__codec_table_parse(table, stored, frames, payload, seg, fr, why,
                                            sizeof why), 0);
    for (uint32_t i = 0; i < frames; i++)
        assert_true(sums[i] == kvs__checksum(area + fr[i].off, fr[i].len));
    uint64_t a, b;
    kvs__codec_frame_range(fr, 0, frames, &a, &b);
    assert_true(a == 0 && b == stored);
    kvs__codec_frame_range(fr, 1, 2, &a, &b);
    assert_true(a == fr[1].off && b == (uint64_t)fr[2].off + fr[2].len);
    /* decode all, then frames 2..3 from their range alone */
    uint8_t *out = malloc(payload);
    assert_int_equal(kvs__codec_decode_frames(area, stored, fr, 0, frames, payload, seg, 2, sums,
                                              out, NULL), 0);
    assert_memory_equal(out, in, payload);
    kvs__codec_frame_range(fr, 2, 2, &a, &b);
    memset(out, 0, payload);
    assert_int_equal(kvs__codec_decode_frames(area + a, b - a, fr, 2, 2, payload, seg, 2, sums,
                                              out, NULL), 0);
    assert_memory_equal(out, in + 2 * (uint64_t)seg, payload - 2 * (uint64_t)seg);
    /* a damaged frame is caught by its sum and named */
    area[fr[1].off + 300] ^= 1;
    uint32_t bad = 99;
    assert_int_equal(kvs__codec_decode_frames(area, stored, fr, 0, frames, payload, seg, 2, sums,
                                              out, &bad), -1);
    assert_int_equal(bad, 1);
    area[fr[1].off + 300] ^= 1;
    /* an area shorter than the frames claim */
    assert_int_equal(kvs__codec_decode_frames(area, stored - 16, fr, 0, frames, payload, seg, 2,
                                              NULL, out, &bad), -1);
    assert_int_equal(bad, 3);

    /* broken tables, each refused with a message */
    struct { uint32_t entry, field, value; } cases[] = {
        {0, 0, 8},                 /* misaligned offset */
        {1, 1, 240},               /* length under 256 */
        {1, 1, 65536 + 512},       /* length over the frame bound */
        {2, 0, 0},                 /* overlaps frame 0 */
        {3, 1, 0x7FFFFFF0},        /* past the frame area */
        {4, 0, 16},                /* an unused entry not zero */
        {511, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t t[4096];
        memcpy(t, table, sizeof t);
        kvs__codec_store_u32(t + 8 * cases[c].entry + 4 * cases[c].field, cases[c].value);
        why[0] = 0;
        assert_int_equal(kvs__codec_table_parse(t, stored, frames, payload, seg, fr, why,
                                                sizeof why), -1);
        assert_true(strstr(why, "frame table") != NULL);
    }
    assert_int_equal(kvs__codec_table_parse(table, stored, frames + 1, payload, seg, fr, why,
                                            sizeof why), -1);
    assert_int_equal(kvs__codec_table_parse(table, stored - 16, frames, payload, seg, fr, why,
                                            sizeof why), -1);
    /* a gap is allowed */
    uint8_t t[4096];
    memcpy(t, table, sizeof t);
    kvs__codec_store_u32(t + 8 * 3, fr[3].off + 4096);
    assert_int_equal(kvs__codec_table_parse(t, stored + 4096, frames, payload, seg, fr, why,
                                            sizeof why), 0);

    /* random payload: not worth it */
    for (uint64_t i = 0; i < payload; i++)
        in[i] = (uint8_t)rnd();
    assert_int_equal(kvs__codec_encode_chunk(in, payload, seg, 2, table, area, sums, &stored,
                                             &worth), 0);
    assert_false(worth);
    /* unusable arguments */
    assert_int_equal(kvs__codec_encode_chunk(in, payload + 1, seg, 2, table, area, sums, &stored,
                                             &worth), -1);
    assert_int_equal(kvs__codec_encode_chunk(in, payload, seg, 3, table, area, sums, &stored,
                                             &worth), -1);
    free(out);
    free(area);
    free(in);
}

static void test_worth(void **state)
{
    (void)state;
    /* plain 1 MiB; compressed file part = 4096 + align(stored): must save >= 32 KiB */
    uint64_t p = 1 << 20;
    assert_true(kvs__codec_worth(p - 32768 - 4096, p));
    assert_false(kvs__codec_worth(p - 32768 - 4096 + 1, p));
    assert_false(kvs__codec_worth(0, 0));
    /* the bound the GPU path tests agrees with the rule for every area a
     * writer can produce (frames are at least 256 bytes) */
    for (uint64_t plain = 0; plain <= (uint64_t)1 << 20; plain += plain < 65536 ? 4096 : 61440) {
        uint64_t lim = kvs__codec_worth_limit(plain);
        for (uint64_t stored = 256; stored <= plain + 8192; stored += 256)
            assert_int_equal(kvs__codec_worth(stored, plain), stored <= lim);
        assert_true(lim == 0 || kvs__codec_worth(lim, plain));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_kv_like_compresses),
        cmocka_unit_test(test_constant_frames),
        cmocka_unit_test(test_short_frames),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_deterministic_ties),
        cmocka_unit_test(test_builder_follows_the_rule),
        cmocka_unit_test(test_corrupt_frames),
        cmocka_unit_test(test_hand_made_frame),
        cmocka_unit_test(test_chunk),
        cmocka_unit_test(test_worth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
