/*
 * kvs_codec_weak.c - stand-ins for the CUDA codec launchers until
 * cuda/kvs_codec.cu (helper codec-cuda) is merged: weak symbols, so the
 * real ones win at link time wherever both are built.  They refuse every
 * call (cudaErrorNotSupported, 801): a store then keeps its chunks plain
 * and a compressed chunk read into CUDA memory is a miss.
 * TODO(codec-dev): delete once kvs_codec.cu is on this branch.
 */
#include "kvs_cuda.h"

__attribute__((weak)) uint64_t kvs_cuda_codec_scratch_bytes(uint64_t total, uint32_t frame_bytes,
                                                            uint32_t elem)
{
    (void)elem;
    return frame_bytes ? (total + frame_bytes - 1) / frame_bytes * (frame_bytes + 256u) : 0;
}

__attribute__((weak)) kvs_cuda_status
kvs_cuda_codec_encode(const void *data, uint64_t total, uint32_t frame_bytes, uint32_t elem,
                      void *out, uint32_t *out_off, uint32_t *lens, uint64_t *stored_total,
                      uint64_t *sums, void *scratch, void *stream)
{
    (void)data, (void)total, (void)frame_bytes, (void)elem, (void)out, (void)out_off;
    (void)lens, (void)stored_total, (void)sums, (void)scratch, (void)stream;
    return 801;
}

__attribute__((weak)) kvs_cuda_status
kvs_cuda_codec_decode(const void *stored, const uint32_t *off, const uint32_t *len,
                      uint32_t nframes, uint32_t frame_bytes, uint64_t total, uint32_t elem,
                      const uint64_t *expected, void *out, uint32_t *bad, void *stream)
{
    (void)stored, (void)off, (void)len, (void)nframes, (void)frame_bytes, (void)total;
    (void)elem, (void)expected, (void)out, (void)bad, (void)stream;
    return 801;
}
