/*
 * checksum.c - run-time choice of the XXH3 variant.
 *
 * XXH3's speed depends on the vector width it is compiled for (measured on
 * this project's 2-core build machine, 64 KiB segments in L2: SSE2 30 GB/s,
 * AVX2 57 GB/s, AVX-512 71 GB/s), and verification sits on the retrieve
 * path, so the library carries one build per instruction set and picks the
 * widest the processor supports, once.  All variants compute the same
 * function; test_checksum checks that they agree.
 */
#include "checksum.h"

#include <stdatomic.h>

typedef uint64_t (*xxh_fn)(const void *, size_t);

#if defined(__x86_64__) || defined(__i386__)
uint64_t kvs__xxh3_sse2(const void *data, size_t len);
uint64_t kvs__xxh3_avx2(const void *data, size_t len);
uint64_t kvs__xxh3_avx512(const void *data, size_t len);

static xxh_fn choose(const char **name)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
        *name = "avx512";
        return kvs__xxh3_avx512;
    }
    if (__builtin_cpu_supports("avx2")) {
        *name = "avx2";
        return kvs__xxh3_avx2;
    }
    *name = "sse2";
    return kvs__xxh3_sse2;
}
#else
uint64_t kvs__xxh3_generic(const void *data, size_t len);

static xxh_fn choose(const char **name)
{
    *name = "generic";
    return kvs__xxh3_generic;
}
#endif

static _Atomic(xxh_fn) impl;
static const char *_Atomic impl_name;

static xxh_fn get_impl(void)
{
    xxh_fn f = atomic_load_explicit(&impl, memory_order_acquire);
    if (f)
        return f;
    const char *name = "";
    f = choose(&name);
    atomic_store(&impl_name, name);
    atomic_store_explicit(&impl, f, memory_order_release);
    return f;
}

uint64_t kvs__checksum(const void *data, size_t len)
{
    return get_impl()(data, len);
}

const char *kvs__checksum_impl(void)
{
    get_impl();
    return atomic_load(&impl_name);
}
