/*
 * codec_fmt.h - the "exp-huff" frame format, shared by the CPU codec
 * (codec.c) and the CUDA kernels (cuda/kvs_codec.cu).  This header is the
 * contract between them: the same functions decide code lengths, codes and
 * the frame layout on both sides, so the two encoders produce bit-identical
 * frames and the two decoders accept the same frames.  Keep its interface
 * stable; docs/codec.md describes the format.
 *
 * Header-only, usable from C and from CUDA device code: every function is
 * KVS_HD (static inline, plus __host__ __device__ under nvcc) and calls
 * nothing from libc.  Scratch arrays are the caller's; the largest is the
 * code-length builder's (kvs_codec_huff_work, a few KiB), which a GPU block
 * keeps in shared memory.
 *
 * Frame body (integers little-endian):
 *   0    mode u8 (0 raw, 1 huff), 1 elem u8 (1, 2, 4), 2 reserved u16 (0),
 *   4    nbytes u32 (logical bytes, a multiple of elem)
 *   raw:  [8, 8 + nbytes) the logical bytes, zeros up to the frame length
 *   huff: 8 lengths[128] (nibbles, symbol s in byte s/2, odd s high),
 *         136 raw planes ((elem - 1) planes of n = nbytes/elem bytes, zeros
 *         to a multiple of 4), R words[nsub] (u8 each, zeros to a multiple
 *         of 4), W bitstream (u32 words LSB-first, codes bit-reversed),
 *         zeros up to the frame length.
 *   The frame length is >= 256 and a multiple of 16.
 */
#ifndef KVS_CODEC_FMT_H
#define KVS_CODEC_FMT_H

#include <stdint.h>

#ifdef __CUDACC__
#define KVS_HD static inline __host__ __device__
#else
#define KVS_HD static inline
#endif

#define KVS_CODEC_NONE 0u
#define KVS_CODEC_EXP_HUFF 1u
#define KVS_CODEC_MAX_BITS 12u
#define KVS_CODEC_TABLE_SIZE (1u << KVS_CODEC_MAX_BITS) /* decode table entries */
#define KVS_CODEC_SUB 256u          /* symbols per sub-block */
#define KVS_CODEC_SUB_MAX_WORDS 96u /* 256 symbols * 12 bits / 32 */
#define KVS_CODEC_FRAME_HDR 8u
#define KVS_CODEC_LENGTHS_OFF 8u
#define KVS_CODEC_PLANES_OFF 136u   /* 8 + 128 bytes of lengths */
#define KVS_CODEC_MIN_FRAME 256u
#define KVS_CODEC_FRAME_ALIGN 16u
#define KVS_CODEC_TABLE_OFFSET 4096u  /* frame table block in a chunk file */
#define KVS_CODEC_TABLE_BYTES 4096u
#define KVS_CODEC_TABLE_ENTRIES (KVS_CODEC_TABLE_BYTES / 8u) /* {u32 off, u32 len} */
#define KVS_CODEC_FRAMES_OFFSET 8192u /* frame area in a chunk file */
#define KVS_CODEC_MODE_RAW 0u
#define KVS_CODEC_MODE_HUFF 1u

/* ---- element split / merge ------------------------------------------------
 * v is the element as a little-endian unsigned integer of elem bytes.  The
 * symbol is returned; raw[0..elem-1) receive the raw bytes (raw plane j holds
 * raw[j] of every element). */
KVS_HD uint32_t kvs__codec_split(uint32_t v, uint32_t elem, uint8_t *raw)
{
    if (elem == 1)
        return v & 0xFFu;
    if (elem == 2) {
        raw[0] = (uint8_t)(((v >> 8) & 0x80u) | (v & 0x7Fu));
        return (v >> 7) & 0xFFu;
    }
    raw[0] = (uint8_t)(v & 0xFFu);
    raw[1] = (uint8_t)((v >> 8) & 0xFFu);
    raw[2] = (uint8_t)(((v >> 24) & 0x80u) | ((v >> 16) & 0x7Fu));
    return (v >> 23) & 0xFFu;
}

KVS_HD uint32_t kvs__codec_merge(uint32_t sym, const uint8_t *raw, uint32_t elem)
{
    if (elem == 1)
        return sym & 0xFFu;
    if (elem == 2)
        return ((uint32_t)(raw[0] & 0x80u) << 8) | ((sym & 0xFFu) << 7) | (raw[0] & 0x7Fu);
    return ((uint32_t)(raw[2] & 0x80u) << 24) | ((sym & 0xFFu) << 23) |
           ((uint32_t)(raw[2] & 0x7Fu) << 16) | ((uint32_t)raw[1] << 8) | raw[0];
}

/* Symbol of the element at p (elem bytes, little-endian). */
KVS_HD uint32_t kvs__codec_load_elem(const uint8_t *p, uint32_t elem)
{
    if (elem == 1)
        return p[0];
    if (elem == 2)
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

KVS_HD void kvs__codec_store_elem(uint8_t *p, uint32_t v, uint32_t elem)
{
    p[0] = (uint8_t)v;
    if (elem >= 2)
        p[1] = (uint8_t)(v >> 8);
    if (elem == 4) {
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 24);
    }
}

KVS_HD uint32_t kvs__codec_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

KVS_HD void kvs__codec_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

KVS_HD uint64_t kvs__codec_align(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* ---- frame layout -----------------------------------------------------------
 * Offsets of a huff frame's parts, from nbytes and elem alone (W is where
 * the bitstream starts; its length comes from the words[] array). */
typedef struct kvs_codec_layout {
    uint32_t n;          /* symbols */
    uint32_t nsub;       /* sub-blocks of KVS_CODEC_SUB symbols, the last shorter */
    uint64_t planes_off; /* 136 */
    uint64_t planes_len; /* (elem - 1) * n */
    uint64_t words_off;  /* R */
    uint64_t bits_off;   /* W */
} kvs_codec_layout;

KVS_HD int kvs__codec_elem_ok(uint32_t elem)
{
    return elem == 1 || elem == 2 || elem == 4;
}

/* 0, or -1 when elem is not 1/2/4 or nbytes is not a multiple of it. */
KVS_HD int kvs__codec_layout_of(uint32_t nbytes, uint32_t elem, kvs_codec_layout *l)
{
    if (!kvs__codec_elem_ok(elem) || nbytes % elem != 0)
        return -1;
    l->n = nbytes / elem;
    l->nsub = (l->n + KVS_CODEC_SUB - 1) / KVS_CODEC_SUB;
    l->planes_off = KVS_CODEC_PLANES_OFF;
    l->planes_len = (uint64_t)(elem - 1) * l->n;
    l->words_off = l->planes_off + kvs__codec_align(l->planes_len, 4);
    l->bits_off = l->words_off + kvs__codec_align(l->nsub, 4);
    return 0;
}

/* Stored length of a frame whose content ends at `end`. */
KVS_HD uint64_t kvs__codec_stored_len(uint64_t end)
{
    if (end < KVS_CODEC_MIN_FRAME)
        end = KVS_CODEC_MIN_FRAME;
    return kvs__codec_align(end, KVS_CODEC_FRAME_ALIGN);
}

/* Stored length of a raw frame of nbytes. */
KVS_HD uint64_t kvs__codec_raw_len(uint32_t nbytes)
{
    return kvs__codec_stored_len((uint64_t)KVS_CODEC_FRAME_HDR + nbytes);
}

/* Stored length of a huff frame with total_words bitstream words. */
KVS_HD uint64_t kvs__codec_huff_len(const kvs_codec_layout *l, uint64_t total_words)
{
    return kvs__codec_stored_len(l->bits_off + 4 * total_words);
}

/* Largest stored frame the encoder may produce for nbytes: the encoder
 * writes huff only when it is strictly shorter than raw, so this is the raw
 * length.  (A huff attempt never needs more room than this either: the
 * encoder sizes it before writing.) */
KVS_HD uint64_t kvs__codec_frame_bound(uint32_t nbytes, uint32_t elem)
{
    (void)elem;
    return kvs__codec_raw_len(nbytes);
}

/* The mode rule both encoders follow: huff iff its stored length is strictly
 * smaller than the raw stored length. */
KVS_HD int kvs__codec_use_huff(uint64_t huff_len, uint32_t nbytes)
{
    return huff_len < kvs__codec_raw_len(nbytes);
}

/* ---- code lengths -------------------------------------------------------------
 * Huffman over the 256-bin histogram: repeatedly join the two nodes of
 * smallest (weight, id), where a leaf's id is its symbol (0..255) and the
 * k-th internal node made has id 256 + k.  Internal nodes are made in
 * nondecreasing weight order, so two queues (leaves sorted by (count,
 * symbol), internal nodes in creation order; a leaf wins a weight tie) give
 * exactly that order in O(n) after the sort.  While the longest code exceeds
 * KVS_CODEC_MAX_BITS, every nonzero count is halved rounding up and the code
 * rebuilt.  One distinct symbol gets length 1; none gives all zeros. */
typedef struct kvs_codec_huff_work {
    uint64_t w[512];       /* weights: leaves in sorted order [0, m), internal [m, 2m-1) */
    uint16_t parent[512];  /* parent node index */
    uint8_t depth[512];
    uint16_t order[256];   /* sorted leaf -> symbol */
    uint64_t cnt[256];     /* working counts (halved while too deep) */
} kvs_codec_huff_work;

/* Builds the tree once from wk->cnt; returns the longest code length. */
KVS_HD uint32_t kvs__codec_huff_pass(kvs_codec_huff_work *wk, uint32_t m, uint8_t *len)
{
    uint32_t i;
    for (i = 0; i < m; i++)
        wk->w[i] = wk->cnt[wk->order[i]];
    /* Two queues: leaves [li, m), internal [m + ii, m + made). */
    uint32_t li = 0, ii = 0, made = 0;
    for (made = 0; made < m - 1; made++) {
        uint32_t pick[2];
        for (int k = 0; k < 2; k++) {
            int take_leaf;
            if (li >= m)
                take_leaf = 0;
            else if (ii >= made)
                take_leaf = 1;
            else
                take_leaf = wk->w[li] <= wk->w[m + ii];
            pick[k] = take_leaf ? li++ : m + ii++;
        }
        uint32_t node = m + made;
        wk->w[node] = wk->w[pick[0]] + wk->w[pick[1]];
        wk->parent[pick[0]] = (uint16_t)node;
        wk->parent[pick[1]] = (uint16_t)node;
    }
    uint32_t root = 2 * m - 2;
    wk->depth[root] = 0;
    for (i = root; i-- > m;)
        wk->depth[i] = (uint8_t)(wk->depth[wk->parent[i]] + 1);
    uint32_t maxlen = 0;
    for (i = 0; i < m; i++) {
        uint32_t d = (uint32_t)wk->depth[wk->parent[i]] + 1;
        len[wk->order[i]] = (uint8_t)d;
        if (d > maxlen)
            maxlen = d;
    }
    return maxlen;
}

/* Sorts the present symbols of wk->cnt by (count, symbol) into wk->order;
 * returns how many there are.  Insertion sort: scanning symbols in
 * increasing order and inserting after equal counts keeps ties in symbol
 * order. */
KVS_HD uint32_t kvs__codec_sort_leaves(kvs_codec_huff_work *wk)
{
    uint32_t m = 0, s, i;
    for (s = 0; s < 256; s++) {
        uint64_t c = wk->cnt[s];
        if (c == 0)
            continue;
        i = m++;
        while (i > 0 && wk->cnt[wk->order[i - 1]] > c) {
            wk->order[i] = wk->order[i - 1];
            i--;
        }
        wk->order[i] = (uint16_t)s;
    }
    return m;
}

/* hist: count of each symbol; len[256] receives the code lengths (0 for
 * absent symbols).  Returns the number of distinct symbols. */
KVS_HD uint32_t kvs__codec_build_lengths(const uint32_t *hist, uint8_t *len,
                                         kvs_codec_huff_work *wk)
{
    uint32_t m, s, i;
    for (s = 0; s < 256; s++) {
        len[s] = 0;
        wk->cnt[s] = hist[s];
    }
    m = kvs__codec_sort_leaves(wk);
    if (m == 0)
        return 0;
    if (m == 1) {
        len[wk->order[0]] = 1;
        return 1;
    }
    while (kvs__codec_huff_pass(wk, m, len) > KVS_CODEC_MAX_BITS) {
        for (i = 0; i < m; i++) {
            uint32_t sym = wk->order[i];
            wk->cnt[sym] = (wk->cnt[sym] + 1) >> 1;
        }
        /* Sort again: halving keeps the order of counts but can make two
         * different counts equal (3 and 4 both give 2), and equal counts
         * must then be ordered by symbol. */
        kvs__codec_sort_leaves(wk);
    }
    return m;
}

/* ---- lengths on the wire --------------------------------------------------- */
KVS_HD void kvs__codec_pack_lengths(const uint8_t *len, uint8_t *packed)
{
    for (uint32_t i = 0; i < 128; i++)
        packed[i] = (uint8_t)((len[2 * i] & 0x0Fu) | ((len[2 * i + 1] & 0x0Fu) << 4));
}

KVS_HD void kvs__codec_unpack_lengths(const uint8_t *packed, uint8_t *len)
{
    for (uint32_t i = 0; i < 128; i++) {
        len[2 * i] = (uint8_t)(packed[i] & 0x0Fu);
        len[2 * i + 1] = (uint8_t)(packed[i] >> 4);
    }
}

/* 0 when the lengths are a usable code: each 0..12, at least one nonzero,
 * Kraft sum <= 1; -1 otherwise. */
KVS_HD int kvs__codec_lengths_ok(const uint8_t *len)
{
    uint32_t kraft = 0, present = 0;
    for (uint32_t s = 0; s < 256; s++) {
        if (len[s] > KVS_CODEC_MAX_BITS)
            return -1;
        if (len[s]) {
            present++;
            kraft += 1u << (KVS_CODEC_MAX_BITS - len[s]);
        }
    }
    return present && kraft <= KVS_CODEC_TABLE_SIZE ? 0 : -1;
}

KVS_HD uint32_t kvs__codec_reverse(uint32_t code, uint32_t bits)
{
    uint32_t r = 0;
    for (uint32_t i = 0; i < bits; i++) {
        r = (r << 1) | (code & 1u);
        code >>= 1;
    }
    return r;
}

/* Canonical codes (DEFLATE order: by (length, symbol), counting up from 0),
 * stored bit-reversed in rcode[256] so that writing them LSB-first puts the
 * code's first bit first.  Absent symbols get 0.  Returns -1 when the
 * lengths are not usable (kvs__codec_lengths_ok). */
KVS_HD int kvs__codec_codes(const uint8_t *len, uint16_t *rcode)
{
    uint32_t bl_count[KVS_CODEC_MAX_BITS + 1];
    uint32_t next[KVS_CODEC_MAX_BITS + 1];
    uint32_t s, b, code = 0;
    if (kvs__codec_lengths_ok(len) != 0)
        return -1;
    for (b = 0; b <= KVS_CODEC_MAX_BITS; b++)
        bl_count[b] = 0;
    for (s = 0; s < 256; s++)
        bl_count[len[s]]++;
    bl_count[0] = 0;
    for (b = 1; b <= KVS_CODEC_MAX_BITS; b++) {
        code = (code + bl_count[b - 1]) << 1;
        next[b] = code;
    }
    for (s = 0; s < 256; s++) {
        rcode[s] = 0;
        if (len[s])
            rcode[s] = (uint16_t)kvs__codec_reverse(next[len[s]]++, len[s]);
    }
    return 0;
}

/* Decode table: entry i (the next 12 bits of the stream, first bit in bit 0)
 * is symbol | length << 8 of the code that is a prefix of i, or 0 where no
 * code is (an invalid slot: decoding it fails).  Returns -1 when the
 * lengths are not usable. */
KVS_HD int kvs__codec_decode_table(const uint8_t *len, uint16_t *table)
{
    uint16_t rcode[256];
    uint32_t i, s;
    if (kvs__codec_codes(len, rcode) != 0)
        return -1;
    for (i = 0; i < KVS_CODEC_TABLE_SIZE; i++)
        table[i] = 0;
    for (s = 0; s < 256; s++) {
        if (!len[s])
            continue;
        uint16_t e = (uint16_t)(s | ((uint32_t)len[s] << 8));
        for (i = rcode[s]; i < KVS_CODEC_TABLE_SIZE; i += 1u << len[s])
            table[i] = e;
    }
    return 0;
}

#endif
