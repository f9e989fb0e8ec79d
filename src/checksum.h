/*
 * checksum.h - the payload and header checksum: XXH3-64 (seed 0) from
 * libxxhash, the same function the CUDA kernels compute, dispatched at run
 * time to the widest vector unit the processor has.
 */
#ifndef KVS_CHECKSUM_H
#define KVS_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#define KVS_CHECKSUM_XXH3_64 1u

uint64_t kvs__checksum(const void *data, size_t len);
/* "avx512", "avx2", "sse2" or "generic": which variant runs. */
const char *kvs__checksum_impl(void);

#endif
