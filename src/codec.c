/*
 * codec.c - the CPU encoder and decoder of the "exp-huff" chunk codec.
 *
 * Each element is split into a symbol byte (the exponent, entropy-coded
 * with a per-frame canonical Huffman code of at most 12 bits) and raw bytes
 * (sign and mantissa, stored as planes).  The code lengths, codes and the
 * frame layout come from codec_fmt.h, shared with the CUDA kernels, so both
 * encoders write the same bytes.
 *
 * The encoder makes up to three passes over a frame: a histogram, then
 * (only when the size estimate cannot decide between raw and huff) an exact
 * count of the bitstream words, then the write.  It needs no scratch
 * memory.  The decoder is table driven (one 4096-entry lookup per symbol)
 * and checks every rule of the format, reading only inside the frame and
 * writing only inside the output: a frame that breaks a rule fails, it is
 * never half-trusted.
 */
#include "codec.h"

#include "checksum.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- encoder -------------------------------------------------------------------- */

static void histogram(const uint8_t *in, uint32_t n, uint32_t elem, uint32_t *hist)
{
    memset(hist, 0, 256 * sizeof *hist);
    uint32_t i;
    if (elem == 1) {
        for (i = 0; i < n; i++)
            hist[in[i]]++;
    } else if (elem == 2) {
        for (i = 0; i < n; i++)
            hist[((uint32_t)in[2 * i] >> 7) | (((uint32_t)in[2 * i + 1] & 0x7Fu) << 1)]++;
    } else {
        for (i = 0; i < n; i++)
            hist[((uint32_t)in[4 * i + 2] >> 7) | (((uint32_t)in[4 * i + 3] & 0x7Fu) << 1)]++;
    }
}

static inline uint32_t symbol_at(const uint8_t *in, uint32_t i, uint32_t elem)
{
    if (elem == 1)
        return in[i];
    const uint8_t *p = in + (size_t)i * elem + (elem - 2);
    return ((uint32_t)p[0] >> 7) | (((uint32_t)p[1] & 0x7Fu) << 1);
}

/* Exact bitstream words of all sub-blocks. */
static uint64_t count_words(const uint8_t *in, const kvs_codec_layout *l, uint32_t elem,
                            const uint8_t *len)
{
    uint64_t words = 0;
    for (uint32_t k = 0; k < l->nsub; k++) {
        uint32_t lo = k * KVS_CODEC_SUB;
        uint32_t hi = lo + KVS_CODEC_SUB < l->n ? lo + KVS_CODEC_SUB : l->n;
        uint32_t bits = 0;
        for (uint32_t i = lo; i < hi; i++)
            bits += len[symbol_at(in, i, elem)];
        words += (bits + 31) / 32;
    }
    return words;
}

static size_t encode_raw(const uint8_t *in, uint32_t nbytes, uint32_t elem, uint8_t *out)
{
    size_t stored = (size_t)kvs__codec_raw_len(nbytes);
    out[0] = KVS_CODEC_MODE_RAW;
    out[1] = (uint8_t)elem;
    out[2] = out[3] = 0;
    kvs__codec_store_u32(out + 4, nbytes);
    if (nbytes)
        memcpy(out + KVS_CODEC_FRAME_HDR, in, nbytes);
    memset(out + KVS_CODEC_FRAME_HDR + nbytes, 0, stored - KVS_CODEC_FRAME_HDR - nbytes);
    return stored;
}

static size_t encode_huff(const uint8_t *in, uint32_t nbytes, uint32_t elem,
                          const kvs_codec_layout *l, const uint8_t *len,
                          const uint16_t *rcode, uint8_t *out)
{
    out[0] = KVS_CODEC_MODE_HUFF;
    out[1] = (uint8_t)elem;
    out[2] = out[3] = 0;
    kvs__codec_store_u32(out + 4, nbytes);
    kvs__codec_pack_lengths(len, out + KVS_CODEC_LENGTHS_OFF);

    /* raw planes */
    uint8_t *pl = out + l->planes_off;
    uint32_t n = l->n, i;
    if (elem == 2) {
        for (i = 0; i < n; i++)
            pl[i] = (uint8_t)((in[2 * i + 1] & 0x80u) | (in[2 * i] & 0x7Fu));
    } else if (elem == 4) {
        for (i = 0; i < n; i++) {
            const uint8_t *p = in + 4 * (size_t)i;
            pl[i] = p[0];
            pl[n + i] = p[1];
            pl[2 * (size_t)n + i] = (uint8_t)((p[3] & 0x80u) | (p[2] & 0x7Fu));
        }
    }
    memset(pl + l->planes_len, 0, l->words_off - l->planes_off - l->planes_len);
    memset(out + l->words_off + l->nsub, 0, l->bits_off - l->words_off - l->nsub);

    /* bitstream, one sub-block after the other */
    uint8_t *w = out + l->bits_off;
    for (uint32_t k = 0; k < l->nsub; k++) {
        uint32_t lo = k * KVS_CODEC_SUB;
        uint32_t hi = lo + KVS_CODEC_SUB < n ? lo + KVS_CODEC_SUB : n;
        uint64_t acc = 0;
        uint32_t cnt = 0, words = 0;
        for (i = lo; i < hi; i++) {
            uint32_t s = symbol_at(in, i, elem);
            acc |= (uint64_t)rcode[s] << cnt;
            cnt += len[s];
            if (cnt >= 32) {
                kvs__codec_store_u32(w, (uint32_t)acc);
                w += 4;
                words++;
                acc >>= 32;
                cnt -= 32;
            }
        }
        if (cnt) {
            kvs__codec_store_u32(w, (uint32_t)acc);
            w += 4;
            words++;
        }
        out[l->words_off + k] = (uint8_t)words;
    }
    size_t end = (size_t)(w - out);
    size_t stored = (size_t)kvs__codec_stored_len(end);
    memset(out + end, 0, stored - end);
    return stored;
}

size_t kvs__codec_encode_frame(const void *in_, uint32_t nbytes, uint32_t elem, void *out_)
{
    const uint8_t *in = in_;
    uint8_t *out = out_;
    kvs_codec_layout l;
    if (kvs__codec_layout_of(nbytes, elem, &l) != 0)
        return 0;
    if (l.n == 0)
        return encode_raw(in, nbytes, elem, out);

    uint32_t hist[256];
    uint8_t len[256];
    uint16_t rcode[256];
    kvs_codec_huff_work wk;
    histogram(in, l.n, elem, hist);
    kvs__codec_build_lengths(hist, len, &wk);
    if (kvs__codec_codes(len, rcode) != 0)
        return encode_raw(in, nbytes, elem, out); /* cannot happen: built lengths are valid */

    /* Bounds on the words from the total bits: each sub-block rounds up by
     * less than one word.  Count exactly only when they do not decide. */
    uint64_t bits = 0;
    for (uint32_t s = 0; s < 256; s++)
        bits += (uint64_t)hist[s] * len[s];
    uint64_t lo_words = (bits + 31) / 32;
    uint64_t hi_words = bits / 32 + l.nsub;
    if (!kvs__codec_use_huff(kvs__codec_huff_len(&l, lo_words), nbytes))
        return encode_raw(in, nbytes, elem, out);
    if (!kvs__codec_use_huff(kvs__codec_huff_len(&l, hi_words), nbytes) &&
        !kvs__codec_use_huff(kvs__codec_huff_len(&l, count_words(in, &l, elem, len)), nbytes))
        return encode_raw(in, nbytes, elem, out);
    return encode_huff(in, nbytes, elem, &l, len, rcode, out);
}

/* ---- decoder -------------------------------------------------------------------- */

static int all_zero(const uint8_t *p, uint64_t n)
{
    uint8_t acc = 0;
    for (uint64_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* Decodes the m symbols of one sub-block from words[0, nw) into sym[].
 * Bits past the last word read as zero (nothing outside is touched); the
 * checks after the loop refuse a sub-block that needed them. */
static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static int decode_sub(const uint8_t *words, uint32_t nw, uint32_t m, const uint16_t *table,
                      uint8_t *sym)
{
    /* The sub-block's words in a zero-padded copy: m symbols of at most 12
     * bits never reach past byte 384, and an 8-byte load from there stays
     * inside, so the loop needs no bounds checks. */
    uint8_t local[4 * KVS_CODEC_SUB_MAX_WORDS + 16];
    memcpy(local, words, 4 * (size_t)nw);
    memset(local + 4 * (size_t)nw, 0, sizeof local - 4 * (size_t)nw);
    uint32_t pos = 0, i = 0;
    /* one 64-bit load serves four symbols (>= 57 bits after the shift) */
    for (; i + 4 <= m; i += 4) {
        uint64_t v = load_le64(local + (pos >> 3)) >> (pos & 7);
        for (int k = 0; k < 4; k++) {
            uint16_t e = table[v & (KVS_CODEC_TABLE_SIZE - 1)];
            if (!e)
                return -1;
            uint32_t bl = (uint32_t)e >> 8;
            sym[i + k] = (uint8_t)e;
            v >>= bl;
            pos += bl;
        }
    }
    for (; i < m; i++) {
        uint64_t v = load_le64(local + (pos >> 3)) >> (pos & 7);
        uint16_t e = table[v & (KVS_CODEC_TABLE_SIZE - 1)];
        if (!e)
            return -1;
        sym[i] = (uint8_t)e;
        pos += (uint32_t)e >> 8;
    }
    /* exactly ceil(pos / 32) words, the unused bits of the last one zero */
    if (pos > 32 * nw || pos + 32 <= 32 * nw)
        return -1;
    if (pos % 32 && kvs__codec_load_u32(local + 4 * (pos / 32)) >> (pos % 32))
        return -1;
    return 0;
}

static int decode_huff(const uint8_t *in, uint32_t len, const kvs_codec_layout *l,
                       uint32_t elem, uint8_t *out)
{
    uint8_t lens[256];
    uint16_t table[KVS_CODEC_TABLE_SIZE];
    if (l->bits_off > len)
        return -1;
    kvs__codec_unpack_lengths(in + KVS_CODEC_LENGTHS_OFF, lens);
    if (kvs__codec_decode_table(lens, table) != 0)
        return -1;
    const uint8_t *pl = in + l->planes_off;
    const uint8_t *wc = in + l->words_off;
    if (!all_zero(pl + l->planes_len, l->words_off - l->planes_off - l->planes_len) ||
        !all_zero(wc + l->nsub, l->bits_off - l->words_off - l->nsub))
        return -1;
    uint64_t total = 0;
    for (uint32_t k = 0; k < l->nsub; k++) {
        if (wc[k] > KVS_CODEC_SUB_MAX_WORDS)
            return -1;
        total += wc[k];
    }
    uint64_t end = l->bits_off + 4 * total;
    if (end > len || !all_zero(in + end, len - end))
        return -1;

    const uint8_t *w = in + l->bits_off;
    uint8_t sym[KVS_CODEC_SUB];
    uint32_t n = l->n;
    for (uint32_t k = 0; k < l->nsub; k++) {
        uint32_t lo = k * KVS_CODEC_SUB;
        uint32_t m = n - lo < KVS_CODEC_SUB ? n - lo : KVS_CODEC_SUB;
        if (decode_sub(w, wc[k], m, table, elem == 1 ? out + lo : sym) != 0)
            return -1;
        w += 4 * (size_t)wc[k];
        if (elem == 2) {
            uint8_t *o = out + 2 * (size_t)lo;
            const uint8_t *r = pl + lo;
            for (uint32_t i = 0; i < m; i++) {
                o[2 * i] = (uint8_t)((sym[i] << 7) | (r[i] & 0x7Fu));
                o[2 * i + 1] = (uint8_t)((r[i] & 0x80u) | (sym[i] >> 1));
            }
        } else if (elem == 4) {
            uint8_t *o = out + 4 * (size_t)lo;
            for (uint32_t i = 0; i < m; i++) {
                uint8_t r2 = pl[2 * (size_t)n + lo + i];
                o[4 * i] = pl[lo + i];
                o[4 * i + 1] = pl[n + lo + i];
                o[4 * i + 2] = (uint8_t)((sym[i] << 7) | (r2 & 0x7Fu));
                o[4 * i + 3] = (uint8_t)((r2 & 0x80u) | (sym[i] >> 1));
            }
        }
    }
    return 0;
}

int kvs__codec_decode_frame(const void *in_, uint32_t len, uint32_t nbytes, uint32_t elem,
                            void *out_)
{
    const uint8_t *in = in_;
    uint8_t *out = out_;
    kvs_codec_layout l;
    if (len < KVS_CODEC_MIN_FRAME || len % KVS_CODEC_FRAME_ALIGN != 0)
        return -1;
    if (kvs__codec_layout_of(nbytes, elem, &l) != 0)
        return -1;
    if (in[1] != elem || in[2] != 0 || in[3] != 0 || kvs__codec_load_u32(in + 4) != nbytes)
        return -1;
    if (in[0] == KVS_CODEC_MODE_RAW) {
        uint64_t end = (uint64_t)KVS_CODEC_FRAME_HDR + nbytes;
        if (end > len || !all_zero(in + end, len - end))
            return -1;
        if (nbytes)
            memcpy(out, in + KVS_CODEC_FRAME_HDR, nbytes);
        return 0;
    }
    if (in[0] == KVS_CODEC_MODE_HUFF)
        return decode_huff(in, len, &l, elem, out);
    return -1;
}

/* ---- a chunk ------------------------------------------------------------------ */

uint32_t kvs__codec_frame_count(uint64_t payload_bytes, uint32_t segment_bytes)
{
    if (segment_bytes == 0)
        return 0;
    return (uint32_t)((payload_bytes + segment_bytes - 1) / segment_bytes);
}

uint32_t kvs__codec_frame_nbytes(uint64_t payload_bytes, uint32_t segment_bytes, uint32_t i)
{
    uint64_t lo = (uint64_t)i * segment_bytes;
    if (lo >= payload_bytes)
        return 0;
    uint64_t left = payload_bytes - lo;
    return left < segment_bytes ? (uint32_t)left : segment_bytes;
}

uint64_t kvs__codec_area_bound(uint64_t payload_bytes, uint32_t segment_bytes)
{
    uint32_t frames = kvs__codec_frame_count(payload_bytes, segment_bytes);
    if (segment_bytes == 0 || frames > KVS_CODEC_TABLE_ENTRIES)
        return 0;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < frames; i++)
        sum += kvs__codec_frame_bound(kvs__codec_frame_nbytes(payload_bytes, segment_bytes, i), 1);
    return sum;
}

bool kvs__codec_worth(uint64_t stored_bytes, uint64_t payload_bytes)
{
    uint64_t plain = kvs__codec_align(payload_bytes, 4096);
    uint64_t packed = KVS_CODEC_TABLE_BYTES + kvs__codec_align(stored_bytes, 4096);
    return packed < plain && (plain - packed) * 32 >= plain;
}

uint64_t kvs__codec_worth_limit(uint64_t payload_bytes)
{
    /* packed = table + align(stored) <= plain - ceil(plain / 32), and the
     * aligned area is a multiple of 4096, so align down what is left */
    uint64_t plain = kvs__codec_align(payload_bytes, 4096);
    uint64_t spend = KVS_CODEC_TABLE_BYTES + (plain + 31) / 32;
    return plain > spend ? (plain - spend) / 4096 * 4096 : 0;
}

int kvs__codec_encode_chunk(const void *payload, uint64_t payload_bytes,
                            uint32_t segment_bytes, uint32_t elem, uint8_t *table_out,
                            void *area_out, uint64_t *sums_out, uint64_t *stored_out,
                            bool *worth_out)
{
    const uint8_t *in = payload;
    uint8_t *area = area_out;
    uint32_t frames = kvs__codec_frame_count(payload_bytes, segment_bytes);
    if (!kvs__codec_elem_ok(elem) || segment_bytes == 0 || segment_bytes % elem != 0 ||
        payload_bytes % elem != 0 || frames > KVS_CODEC_TABLE_ENTRIES)
        return -1;
    /* every frame offset must fit the table's u32 */
    if (frames && kvs__codec_area_bound(payload_bytes, segment_bytes) -
                          kvs__codec_frame_bound(kvs__codec_frame_nbytes(payload_bytes,
                                                                         segment_bytes,
                                                                         frames - 1), 1) >
                      UINT32_MAX)
        return -1;
    memset(table_out, 0, KVS_CODEC_TABLE_BYTES);
    uint64_t off = 0;
    for (uint32_t i = 0; i < frames; i++) {
        uint32_t nb = kvs__codec_frame_nbytes(payload_bytes, segment_bytes, i);
        size_t len = kvs__codec_encode_frame(in + (uint64_t)i * segment_bytes, nb, elem,
                                             area + off);
        kvs__codec_store_u32(table_out + 8 * i, (uint32_t)off);
        kvs__codec_store_u32(table_out + 8 * i + 4, (uint32_t)len);
        sums_out[i] = kvs__checksum(area + off, len);
        off += len;
    }
    *stored_out = off;
    *worth_out = kvs__codec_worth(off, payload_bytes);
    return 0;
}

int kvs__codec_table_parse(const uint8_t *table, uint64_t stored_bytes,
                           uint32_t segment_count, uint64_t payload_bytes,
                           uint32_t segment_bytes, kvs_codec_frame *frames_out, char *why,
                           size_t why_len)
{
    uint32_t frames = kvs__codec_frame_count(payload_bytes, segment_bytes);
    if (segment_bytes == 0 || segment_count != frames || frames > KVS_CODEC_TABLE_ENTRIES) {
        snprintf(why, why_len,
                 "frame table: segment_count %" PRIu32 " for a payload of %" PRIu64
                 " bytes in segments of %" PRIu32 " (expected %" PRIu32 ", at most %u)",
                 segment_count, payload_bytes, segment_bytes, frames, KVS_CODEC_TABLE_ENTRIES);
        return -1;
    }
    uint64_t prev_end = 0;
    for (uint32_t i = 0; i < frames; i++) {
        uint32_t off = kvs__codec_load_u32(table + 8 * i);
        uint32_t len = kvs__codec_load_u32(table + 8 * i + 4);
        uint64_t bound =
            kvs__codec_frame_bound(kvs__codec_frame_nbytes(payload_bytes, segment_bytes, i), 1);
        if (off % KVS_CODEC_FRAME_ALIGN || len % KVS_CODEC_FRAME_ALIGN ||
            len < KVS_CODEC_MIN_FRAME || len > bound) {
            snprintf(why, why_len,
                     "frame table: frame %" PRIu32 " has offset %" PRIu32 " and length %" PRIu32
                     " (accepted: multiples of 16, length 256..%" PRIu64 ")",
                     i, off, len, bound);
            return -1;
        }
        if (off < prev_end || (uint64_t)off + len > stored_bytes) {
            snprintf(why, why_len,
                     "frame table: frame %" PRIu32 " at [%" PRIu32 ", %" PRIu64
                     ") overlaps the previous frame (ending at %" PRIu64
                     ") or passes the frame area's %" PRIu64 " bytes",
                     i, off, (uint64_t)off + len, prev_end, stored_bytes);
            return -1;
        }
        prev_end = (uint64_t)off + len;
        frames_out[i].off = off;
        frames_out[i].len = len;
    }
    if (!all_zero(table + 8 * (size_t)frames, KVS_CODEC_TABLE_BYTES - 8 * (size_t)frames)) {
        snprintf(why, why_len,
                 "frame table: nonzero bytes after the %" PRIu32 " entries (must be zero)",
                 frames);
        return -1;
    }
    return 0;
}

void kvs__codec_frame_range(const kvs_codec_frame *frames, uint32_t first, uint32_t count,
                            uint64_t *start_out, uint64_t *end_out)
{
    const kvs_codec_frame *last = &frames[first + count - 1];
    *start_out = frames[first].off;
    *end_out = (uint64_t)last->off + last->len;
}

int kvs__codec_decode_frames(const void *area, uint64_t area_len, const kvs_codec_frame *frames,
                             uint32_t first, uint32_t count, uint64_t payload_bytes,
                             uint32_t segment_bytes, uint32_t elem, const uint64_t *sums,
                             void *out, uint32_t *bad_out)
{
    const uint8_t *a = area;
    uint8_t *o = out;
    uint64_t base = count ? frames[first].off : 0;
    for (uint32_t i = first; i < first + count; i++) {
        uint32_t nb = kvs__codec_frame_nbytes(payload_bytes, segment_bytes, i);
        const kvs_codec_frame *f = &frames[i];
        int ok = f->off >= base && (uint64_t)f->off - base + f->len <= area_len;
        if (ok && sums)
            ok = kvs__checksum(a + (f->off - base), f->len) == sums[i];
        if (ok)
            ok = kvs__codec_decode_frame(a + (f->off - base), f->len, nb, elem,
                                         o + (uint64_t)(i - first) * segment_bytes) == 0;
        if (!ok) {
            if (bad_out)
                *bad_out = i;
            return -1;
        }
    }
    return 0;
}

/* ---- measurement ---------------------------------------------------------------- */

double kvs__codec_entropy_bits(const void *in, uint32_t nbytes, uint32_t elem)
{
    kvs_codec_layout l;
    uint32_t hist[256];
    if (kvs__codec_layout_of(nbytes, elem, &l) != 0 || l.n == 0)
        return 0;
    histogram(in, l.n, elem, hist);
    double h = 0;
    for (uint32_t s = 0; s < 256; s++)
        if (hist[s])
            h -= (double)hist[s] * log2((double)hist[s] / l.n);
    return h + 8.0 * (double)l.planes_len;
}

uint64_t kvs__codec_payload_bits(const void *in, uint32_t nbytes, uint32_t elem)
{
    kvs_codec_layout l;
    uint32_t hist[256];
    uint8_t len[256];
    kvs_codec_huff_work wk;
    if (kvs__codec_layout_of(nbytes, elem, &l) != 0 || l.n == 0)
        return 0;
    histogram(in, l.n, elem, hist);
    kvs__codec_build_lengths(hist, len, &wk);
    uint64_t bits = 8 * l.planes_len;
    for (uint32_t s = 0; s < 256; s++)
        bits += (uint64_t)hist[s] * len[s];
    return bits;
}
