/*
 * kvs_cuda.h - kvstash's CUDA kernels behind a plain-C interface.
 *
 * Four jobs, each a launcher that takes a stream, queues its kernel and
 * returns at once:
 *
 *   gather   rows of a chunk from the caller's (paged) KV memory into a
 *            contiguous, layer-major payload range in a staging buffer;
 *   scatter  the reverse: a verified payload range into the KV memory;
 *   sums     XXH3-64 (seed 0) of each segment of a staging range, the same
 *            function as the CPU's kvs__checksum, optionally compared with
 *            expected sums so that a later scatter can be gated on the result
 *            without a round trip to the host;
 *   sha256   SHA-256 of fixed-size pieces, for the chunk MACs;
 *   codec    the exp-huff codec's frames (CODEC.md, src/codec_fmt.h):
 *            encode, bit-identical to the CPU encoder, and a decoder that
 *            is bounds-safe on any input.
 *
 * The addressing is exactly that of src/kvmap.c: payload row r of a chunk of
 * T tokens is (layer r / (P*T), plane (r / T) % P, token r % T); its head
 * row h (bytes [h * head_bytes, (h + 1) * head_bytes) of the payload row)
 * lives at
 *
 *   layers[layer] + plane * plane_stride + (slot / block_size) * block_stride
 *                 + (slot % block_size) * slot_stride + h * head_stride
 *
 * with slot = slots[t0 + token] (or t0 + token when slots is NULL); rows of
 * negative slots are skipped by scatter and zero-filled by gather.
 *
 * Every launcher returns a kvs_cuda_status: the cudaError_t of the launch
 * (0 on success), or cudaErrorInvalidValue (1) for arguments it rejects.
 * Errors of the kernel itself surface at the stream's next synchronization.
 */
#ifndef KVS_CUDA_H
#define KVS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int kvs_cuda_status; /* a cudaError_t; 0: success */

/* One chunk's place in the caller's KV memory.  Pointers are device
 * pointers except where noted. */
typedef struct kvs_cuda_chunk {
    const uint64_t *layers;  /* num_layers base addresses (device array) */
    const int64_t *slots;    /* slot of each prompt token (device array), or
                                NULL: token i has slot i */
    uint64_t t0;             /* the chunk's first prompt token */
    uint64_t block_size;     /* slots per block, >= 1 */
    uint64_t slot_stride;    /* bytes */
    uint64_t block_stride;   /* bytes */
    uint64_t plane_stride;   /* bytes */
    uint32_t num_layers;
    uint32_t num_planes;     /* 2 (K and V) or 1 (MLA) */
    uint32_t tokens;         /* tokens in the chunk */
    uint32_t row_bytes;      /* bytes of one token's row in one plane */
    uint32_t vec_bytes;      /* access width: 16, 8, 4, 2 or 1; must divide
                                row_bytes, the strides, every layer address,
                                the staging address and the range (see
                                kvs_cuda_vec_bytes), and head_bytes and
                                head_stride when heads are strided */
    uint32_t head_bytes;     /* bytes of one head row; 0 or row_bytes: the
                                row is one run (head_stride unused) */
    uint64_t head_stride;    /* bytes between a token's head rows; equal to
                                head_bytes: the row is one run */
} kvs_cuda_chunk;

/* The widest access (16, 8, 4, 2 or 1 bytes) that every one of the n values
 * (addresses, strides, sizes, offsets) is a multiple of. */
uint32_t kvs_cuda_vec_bytes(const uint64_t *values, size_t n);

/* Copies payload bytes [off, off + len) of the chunk from the KV memory into
 * staging (staging holds payload byte off at its first byte).  off and len
 * are multiples of vec_bytes; off + len <= the chunk's payload. */
kvs_cuda_status kvs_cuda_gather(const kvs_cuda_chunk *c, uint64_t off, uint64_t len, void *staging,
                                void *stream);

/* Copies staging (payload bytes [off, off + len)) into the KV memory.  When
 * gate is not NULL (a device word), nothing is written unless *gate == 0 at
 * the time the kernel runs. */
kvs_cuda_status kvs_cuda_scatter(const kvs_cuda_chunk *c, uint64_t off, uint64_t len,
                                 const void *staging, const uint32_t *gate, void *stream);

/*
 * XXH3-64 (seed 0) of each segment of data[0, len): segment i is bytes
 * [i * seg_bytes, min((i + 1) * seg_bytes, len)).  Every segment must be
 * longer than 240 bytes (XXH3's long-input path; kvstash's segments are at
 * least 4096), data 16-byte aligned.  sums (device, may be NULL) receives
 * the sums; when expected (device, may be NULL) is given, each segment whose
 * sum differs adds 1 to *mismatches (device word, not cleared here).
 */
kvs_cuda_status kvs_cuda_segment_sums(const void *data, uint64_t len, uint32_t seg_bytes,
                                      uint64_t *sums, const uint64_t *expected,
                                      uint32_t *mismatches, void *stream);

/*
 * SHA-256 (FIPS 180-4) of each piece of data[0, len): piece i is bytes
 * [i * piece_bytes, min((i + 1) * piece_bytes, len)); its 32-byte digest
 * goes to digests + 32 * i (device).  Any length; one thread per piece.
 * The keyless part of the authenticated chunks' MAC (src/chunk_file.h).
 */
kvs_cuda_status kvs_cuda_sha256_pieces(const void *data, uint64_t len, uint32_t piece_bytes,
                                       uint8_t *digests, void *stream);

/*
 * The exp-huff codec.  Frame i of a logical range of total bytes is bytes
 * [i * frame_bytes, min((i + 1) * frame_bytes, total)); nframes =
 * ceil(total / frame_bytes).  frame_bytes is a multiple of 16 and at most
 * KVS_CUDA_CODEC_MAX_FRAME, total a multiple of elem (1, 2 or 4); every
 * device buffer of data, stored bytes or output is 16-byte aligned.
 */
#define KVS_CUDA_CODEC_MAX_FRAME (1u << 30)

/* Bytes of the scratch buffer kvs_cuda_codec_encode needs for these
 * arguments (a worst-case slot per frame), or 0 when they are invalid. */
uint64_t kvs_cuda_codec_scratch_bytes(uint64_t total, uint32_t frame_bytes, uint32_t elem);

/*
 * Encodes the frames of data (device) into out (device): frame i's stored
 * bytes go to out + out_off[i], lens[i] bytes (>= 256, a multiple of 16),
 * packed in order without gaps; *stored_total receives their sum; sums[i]
 * (may be NULL) the XXH3-64 of frame i's stored bytes.  out_off, lens,
 * stored_total and sums are device memory written by the launcher's own
 * kernels.  out needs room for the worst case, nframes *
 * kvs__codec_frame_bound(frame_bytes, elem) bytes; scratch (device) is
 * kvs_cuda_codec_scratch_bytes bytes.  The stored frames are bit-identical
 * to kvs__codec_encode_frame's.  Rejected (cudaErrorInvalidValue): the
 * worst case over 4 GiB (offsets are u32).
 */
kvs_cuda_status kvs_cuda_codec_encode(const void *data, uint64_t total, uint32_t frame_bytes,
                                      uint32_t elem, void *out, uint32_t *out_off, uint32_t *lens,
                                      uint64_t *stored_total, uint64_t *sums, void *scratch,
                                      void *stream);

/*
 * Decodes nframes stored frames (frame i at stored + off[i], len[i] bytes;
 * off and len device arrays that the caller has checked to lie inside its
 * buffer, e.g. with the CPU's frame-table check) into out (device; frame
 * i's logical bytes at out + i * frame_bytes, total bytes in all).  A frame
 * that breaks any rule of the format adds 1 to *bad (device word, not
 * cleared here) and writes nothing outside its own output range (which may
 * hold garbage then).  When expected (device, may be NULL) is given, the
 * XXH3-64 of each stored frame is checked first and each mismatch adds 1
 * to *bad too (a corrupted frame may thus count twice): a scatter gated on
 * *bad == 0 sees only verified, decodable frames.
 */
kvs_cuda_status kvs_cuda_codec_decode(const void *stored, const uint32_t *off, const uint32_t *len,
                                      uint32_t nframes, uint32_t frame_bytes, uint64_t total,
                                      uint32_t elem, const uint64_t *expected, void *out,
                                      uint32_t *bad, void *stream);

/*
 * The store capture's codec step (cuda/kvs_stage.cu): copies src to dst
 * (len bytes, a multiple of 16, both 16-aligned) only when *stored (device)
 * > limit, that is when the encoded frames are not small enough to be
 * stored and the plain payload must take their place.
 */
kvs_cuda_status kvs_cuda_copy_unless_within(void *dst, const void *src, uint64_t len,
                                            const uint64_t *stored, uint64_t limit, void *stream);

/* The text of a kvs_cuda_status (cudaGetErrorString). */
const char *kvs_cuda_strerror(kvs_cuda_status st);

#ifdef __cplusplus
}
#endif

#endif /* KVS_CUDA_H */
