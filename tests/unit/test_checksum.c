/* test_checksum.c - the dispatched XXH3 agrees with a scalar build of the
 * same function from libxxhash's header on every length and alignment, and
 * with the published value for the empty input. */
#include "test_util.h"

#include "checksum.h"

#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_SCALAR
#include <xxhash.h>

static void test_empty_known_answer(void **state)
{
    (void)state;
    assert_true(kvs__checksum("", 0) == 0x2D06800538D394C2ull);
}

static void test_agrees_with_scalar(void **state)
{
    (void)state;
    size_t max = 1 << 20;
    unsigned char *buf = malloc(max + 64);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < max + 64; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    size_t lens[] = {1, 3, 16, 17, 128, 129, 240, 241, 1024, 4096, 65536, 65537, 131072, max};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        for (size_t off = 0; off < 64; off += 13)
            assert_true(kvs__checksum(buf + off, lens[i]) == XXH3_64bits(buf + off, lens[i]));
    /* One flipped bit changes it. */
    uint64_t a = kvs__checksum(buf, 65536);
    buf[40000] ^= 4;
    assert_true(kvs__checksum(buf, 65536) != a);
    const char *impl = kvs__checksum_impl();
    assert_true(!strcmp(impl, "avx512") || !strcmp(impl, "avx2") || !strcmp(impl, "sse2") ||
                !strcmp(impl, "generic"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_known_answer),
        cmocka_unit_test(test_agrees_with_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
