/*
 * codec.h - the CPU side of the "exp-huff" chunk codec: one frame at a time,
 * and the whole-chunk pieces a writer and a reader of a format-version-2
 * chunk file need (frame table, frame area, per-frame checksums).  The
 * format is in codec_fmt.h and docs/codec.md; this encoder is the
 * reference the CUDA encoder matches bit for bit.
 *
 * A chunk file with a codec:
 *   [0, 4096)               header (codec, stored_bytes, table_sum)
 *   [4096, 8192)            frame table: {u32 off, u32 len} per frame, rest 0
 *   [8192, 8192 + stored)   frame area; frame i holds logical payload bytes
 *                           [i*S, min((i+1)*S, payload)), S = segment_bytes
 * All functions are pure computations on caller-owned buffers and may be
 * called from any thread.
 */
#ifndef KVS_CODEC_H
#define KVS_CODEC_H

#include "codec_fmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- one frame -------------------------------------------------------------- */

/* Encodes nbytes logical bytes (elements of elem bytes) into out, which has
 * room for kvs__codec_frame_bound(nbytes, elem) bytes.  Returns the stored
 * length (>= 256, a multiple of 16, padding zeroed), choosing raw mode when
 * huff is not strictly smaller; 0 when elem is not 1, 2 or 4 or nbytes is
 * not a multiple of it (nothing written). */
size_t kvs__codec_encode_frame(const void *in, uint32_t nbytes, uint32_t elem, void *out);

/* Decodes one stored frame of len bytes into out (exactly nbytes bytes; elem
 * as the chunk's dtype size).  0 on success; -1 when the frame breaks any
 * rule of the format (out may then hold partial data).  Never reads outside
 * in[0, len) nor writes outside out[0, nbytes), whatever the bytes. */
int kvs__codec_decode_frame(const void *in, uint32_t len, uint32_t nbytes, uint32_t elem,
                            void *out);

/* ---- a chunk ------------------------------------------------------------------ */

typedef struct kvs_codec_frame {
    uint32_t off; /* from the start of the frame area, a multiple of 16 */
    uint32_t len; /* stored bytes, >= 256, a multiple of 16 */
} kvs_codec_frame;

/* Frames of a payload: ceil(payload / segment_bytes) (segments of the
 * logical payload; the same number kvs__segment_count gives). */
uint32_t kvs__codec_frame_count(uint64_t payload_bytes, uint32_t segment_bytes);

/* Logical bytes of frame i. */
uint32_t kvs__codec_frame_nbytes(uint64_t payload_bytes, uint32_t segment_bytes, uint32_t i);

/* Largest frame area kvs__codec_encode_chunk may write (the sum of the frame
 * bounds); 0 when the arguments are unusable. */
uint64_t kvs__codec_area_bound(uint64_t payload_bytes, uint32_t segment_bytes);

/* Whether a frame area of stored_bytes is worth a version-2 file: the
 * compressed file (frame table block + frame area padded to 4096) must be
 * smaller than the plain payload padded to 4096 by at least 1/32 of it.
 * Writers on every path (CPU or GPU encode) decide with this. */
bool kvs__codec_worth(uint64_t stored_bytes, uint64_t payload_bytes);

/* The same rule as a bound: a frame area of 1 to this many bytes is worth a
 * version-2 file for payload_bytes, a larger one is not; 0 where none is.
 * For a writer that can only compare (the GPU path decides on the device). */
uint64_t kvs__codec_worth_limit(uint64_t payload_bytes);

/* Encodes a whole payload as packed frames (each directly after the
 * previous one): writes the frame table block table_out[4096] (unused
 * entries zero), the frame area area_out (room for kvs__codec_area_bound
 * bytes), sums_out[i] = kvs__checksum of frame i's stored bytes,
 * *stored_out (frame area bytes) and *worth_out (kvs__codec_worth).
 * Returns 0, or -1 on unusable arguments (elem not 1/2/4, a frame not a
 * multiple of elem, more frames than the table holds, a frame area that
 * could pass 4 GiB before its last frame), writing nothing then. */
int kvs__codec_encode_chunk(const void *payload, uint64_t payload_bytes,
                            uint32_t segment_bytes, uint32_t elem, uint8_t *table_out,
                            void *area_out, uint64_t *sums_out, uint64_t *stored_out,
                            bool *worth_out);

/* Parses and checks a frame table block (4096 bytes, as read from a file):
 * segment_count must be the payload's frame count; every frame 16-aligned,
 * len >= 256, a multiple of 16 and at most kvs__codec_frame_bound of its
 * logical size; frames in increasing order without overlap, off + len <=
 * stored_bytes; the unused entries zero.  Fills frames_out[segment_count]
 * and returns 0, or returns -1 and writes what is wrong (which frame, what
 * was found, what is accepted) into why[why_len]. */
int kvs__codec_table_parse(const uint8_t *table, uint64_t stored_bytes,
                           uint32_t segment_count, uint64_t payload_bytes,
                           uint32_t segment_bytes, kvs_codec_frame *frames_out, char *why,
                           size_t why_len);

/* The stored byte range [*start_out, *end_out) of frames [first, first +
 * count) of a parsed table, relative to the frame area (file offset
 * KVS_CODEC_FRAMES_OFFSET); count >= 1. */
void kvs__codec_frame_range(const kvs_codec_frame *frames, uint32_t first, uint32_t count,
                            uint64_t *start_out, uint64_t *end_out);

/* Decodes frames [first, first + count) whose stored bytes start at area
 * (area holds the frame area from frames[first].off on, area_len bytes)
 * into out (frame first's logical bytes at out[0]).  With sums (the
 * header's segment_sums, indexed by frame), each frame's stored bytes are
 * verified before decoding.  0 on success; -1 on the first frame that
 * fails (its index in *bad_out when bad_out is not NULL). */
int kvs__codec_decode_frames(const void *area, uint64_t area_len, const kvs_codec_frame *frames,
                             uint32_t first, uint32_t count, uint64_t payload_bytes,
                             uint32_t segment_bytes, uint32_t elem, const uint64_t *sums,
                             void *out, uint32_t *bad_out);

/* ---- measurement (bench/codec_ratio.c) ---------------------------------------- */

/* The entropy bound of one frame in bits: raw bytes at 8 bits each plus
 * n * H(symbols) (the empirical Shannon entropy of the frame's symbols).
 * No code for the symbols alone can be shorter on average, so our frame's
 * payload bits (bitstream + raw planes, without table and padding) are
 * never below it. */
double kvs__codec_entropy_bits(const void *in, uint32_t nbytes, uint32_t elem);

/* Payload bits our encoder spends on a frame of these symbols (raw planes
 * plus Huffman bits, no header, table, word counts or padding); 0 for an
 * unusable frame. */
uint64_t kvs__codec_payload_bits(const void *in, uint32_t nbytes, uint32_t elem);

#endif
