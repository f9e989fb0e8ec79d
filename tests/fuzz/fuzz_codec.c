/* fuzz_codec.c - libFuzzer target for the exp-huff codec.  Any bytes of a
 * chunk file's frame area reach kvs__codec_decode_frame (the checksums only
 * protect against damage, not against a hostile writer), so it must never
 * crash, read outside the frame or write outside the output; and every
 * input the encoder takes must come back bit for bit.
 *
 * Input: byte 0 chooses the direction.
 *   even: the rest is a stored frame (its length cut to a multiple of 16);
 *         elem and nbytes are taken from the frame's own header (so the
 *         fuzzer reaches the body), nbytes capped at 64 KiB (a frame of
 *         libFuzzer's 8 KiB inputs cannot hold more symbols).  A frame that
 *         decodes is re-encoded and the result must decode to the same
 *         bytes.
 *   odd:  the rest is logical data of elements of 1, 2 or 4 bytes ((byte 0
 *         >> 1) % 3); encode, decode, compare. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const uint8_t *in, uint32_t nbytes, uint32_t elem)
{
    uint64_t bound = kvs__codec_frame_bound(nbytes, elem);
    uint8_t *frame = malloc(bound);
    uint8_t *back = malloc(nbytes ? nbytes : 1);
    size_t len = kvs__codec_encode_frame(in, nbytes, elem, frame);
    if (len < KVS_CODEC_MIN_FRAME || len > bound || len % KVS_CODEC_FRAME_ALIGN)
        abort();
    /* the frame in a buffer of exactly its length */
    uint8_t *exact = malloc(len);
    memcpy(exact, frame, len);
    if (kvs__codec_decode_frame(exact, (uint32_t)len, nbytes, elem, back) != 0 ||
        memcmp(back, in, nbytes) != 0)
        abort();
    free(exact);
    free(back);
    free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        static const uint32_t elems[3] = {1, 2, 4};
        uint32_t elem = elems[(data[0] >> 1) % 3];
        n -= n % elem;
        roundtrip(body, (uint32_t)n, elem);
        return 0;
    }
    n -= n % KVS_CODEC_FRAME_ALIGN;
    if (n < KVS_CODEC_FRAME_HDR)
        return 0;
    uint32_t elem = body[1];
    uint32_t nbytes = kvs__codec_load_u32(body + 4);
    if (nbytes > (1u << 16))
        return 0;
    uint8_t *frame = malloc(n);
    memcpy(frame, body, n);
    uint8_t *out = malloc(nbytes ? nbytes : 1);
    if (kvs__codec_decode_frame(frame, (uint32_t)n, nbytes, elem, out) == 0)
        roundtrip(out, nbytes, elem);
    /* the same bytes as another element size: refused or decoded, no crash */
    (void)kvs__codec_decode_frame(frame, (uint32_t)n, nbytes, elem == 2 ? 4 : 2, out);
    free(out);
    free(frame);
    return 0;
}
