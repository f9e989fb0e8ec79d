/* test_chunk_file.c - header encoding, self-checks and request checks. */
#include "test_util.h"

#include "checksum.h"
#include "chunk_file.h"

#include <stdlib.h>
#include <string.h>

static kvs_ns make_ns(const char *model, uint32_t layers)
{
    kvs_namespace n = {.model = model, .dtype = KVS_DTYPE_BF16, .num_layers = layers,
                       .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                       .world_size = 1, .rank = 0};
    kvs_ns ns;
    assert_int_equal(kvs__ns_init(&ns, &n, 256, NULL), KVS_OK);
    return ns;
}

static void test_segments(void **state)
{
    (void)state;
    assert_int_equal(kvs__segment_bytes(1), 64 * 1024);
    assert_int_equal(kvs__segment_count(1, 64 * 1024), 1);
    /* 32 MiB: 64 KiB would need 512 segments, so 128 KiB (256). */
    assert_int_equal(kvs__segment_bytes(32u << 20), 128 * 1024);
    assert_int_equal(kvs__segment_count(32u << 20, 128 * 1024), 256);
    for (uint64_t p = 1; p < (1ull << 36); p = p * 3 + 4093) {
        uint32_t s = kvs__segment_bytes(p);
        assert_true(kvs__segment_count(p, s) <= KVS_MAX_SEGMENTS);
        assert_int_equal(s % 4096, 0);
    }
    assert_int_equal(kvs__file_bytes(100), 8192);
    assert_int_equal(kvs__file_bytes(4096), 8192);
}

static void test_roundtrip(void **state)
{
    (void)state;
    kvs_ns ns = make_ns("m", 4);
    uint8_t key[32];
    memset(key, 0xab, 32);
    kvs_chunk_header h, d;
    kvs__header_init(&h, &ns, key, 256);
    for (uint32_t i = 0; i < h.segment_count; i++)
        h.segment_sums[i] = 0x1111111111111111ull * (i + 1);
    uint8_t buf[KVS_HEADER_BYTES];
    kvs__header_encode(&h, buf);
    assert_memory_equal(buf, "KVSTASH", 7);
    assert_int_equal(kvs__header_decode(buf, sizeof buf, &d), KVS_REJECT_NONE);
    assert_int_equal(kvs__header_matches(&d, &ns, key, 256), KVS_REJECT_NONE);
    assert_int_equal(d.payload_bytes, 4u * 2 * 256 * 2048);
    assert_int_equal(d.segment_count, h.segment_count);
    assert_true(d.segment_sums[h.segment_count - 1] == h.segment_sums[h.segment_count - 1]);
    assert_string_equal(d.model, "m");
    /* Asked for something else: another key, token count, namespace. */
    uint8_t other[32];
    memset(other, 0xac, 32);
    assert_int_equal(kvs__header_matches(&d, &ns, other, 256), KVS_REJECT_FOREIGN);
    assert_int_equal(kvs__header_matches(&d, &ns, key, 255), KVS_REJECT_FOREIGN);
    kvs_ns ns2 = make_ns("m2", 4);
    assert_int_equal(kvs__header_matches(&d, &ns2, key, 256), KVS_REJECT_FOREIGN);
    kvs__ns_clear(&ns2);
    kvs__ns_clear(&ns);
}

/* The one validator (chunk_file.h rules 1-4), as a reader calls it (with
 * its namespace) and as verify does (key and namespace id only). */
static void test_check_header(void **state)
{
    (void)state;
    kvs_ns ns = make_ns("m", 4);
    uint8_t key[32], other[32];
    memset(key, 0xab, 32);
    memset(other, 0xac, 32);
    kvs_chunk_header h, d;
    kvs__header_init(&h, &ns, key, 256);
    uint8_t buf[KVS_HEADER_BYTES];
    kvs__header_encode(&h, buf);
    uint64_t size = kvs__file_bytes(h.payload_bytes);
    kvs_chunk_want reader = {.key = key, .ns = &ns, .tokens = 256};
    kvs_chunk_want verify8 = {.key = key, .ns_id = ns.id, .ns_id_len = 8};
    kvs_chunk_want verify32 = {.key = key, .ns_id = ns.id, .ns_id_len = 32};
    assert_int_equal(kvs__chunk_check_header(buf, size, &reader, &d), KVS_REJECT_NONE);
    assert_int_equal(kvs__chunk_check_header(buf, size, &verify8, &d), KVS_REJECT_NONE);
    assert_int_equal(kvs__chunk_check_header(buf, size, &verify32, &d), KVS_REJECT_NONE);
    /* rule 3: a file of another length than its header says */
    assert_int_equal(kvs__chunk_check_header(buf, size - 4096, &verify8, &d),
                     KVS_REJECT_TRUNCATED);
    assert_int_equal(kvs__chunk_check_header(buf, size + 1, &reader, &d), KVS_REJECT_TRUNCATED);
    /* rule 2: another key, token count, or namespace id (its first bytes
     * or only its tail) */
    kvs_chunk_want k2 = verify8;
    k2.key = other;
    assert_int_equal(kvs__chunk_check_header(buf, size, &k2, &d), KVS_REJECT_FOREIGN);
    kvs_chunk_want t2 = reader;
    t2.tokens = 255;
    assert_int_equal(kvs__chunk_check_header(buf, size, &t2, &d), KVS_REJECT_FOREIGN);
    uint8_t id[32];
    memcpy(id, ns.id, 32);
    id[31] ^= 1;
    kvs_chunk_want n8 = {.key = key, .ns_id = id, .ns_id_len = 8};
    kvs_chunk_want n32 = {.key = key, .ns_id = id, .ns_id_len = 32};
    assert_int_equal(kvs__chunk_check_header(buf, size, &n8, &d), KVS_REJECT_NONE);
    assert_int_equal(kvs__chunk_check_header(buf, size, &n32, &d), KVS_REJECT_FOREIGN);
    id[0] ^= 1;
    assert_int_equal(kvs__chunk_check_header(buf, size, &n8, &d), KVS_REJECT_FOREIGN);
    /* rule 1 comes first: a damaged header is that, whatever its size */
    buf[100] ^= 1;
    assert_int_equal(kvs__chunk_check_header(buf, size + 1, &reader, &d),
                     KVS_REJECT_BAD_HEADER);
    /* rule 4 */
    uint8_t seg[4096];
    memset(seg, 7, sizeof seg);
    d.segment_sums[3] = kvs__checksum(seg, sizeof seg);
    assert_true(kvs__segment_ok(&d, 3, seg, sizeof seg));
    seg[4095] ^= 1;
    assert_false(kvs__segment_ok(&d, 3, seg, sizeof seg));
    kvs__ns_clear(&ns);
}

static void test_every_bit_flip_is_caught(void **state)
{
    (void)state;
    kvs_ns ns = make_ns("m", 2);
    uint8_t key[32] = {1, 2, 3};
    kvs_chunk_header h, d;
    kvs__header_init(&h, &ns, key, 256);
    uint8_t good[KVS_HEADER_BYTES], bad[KVS_HEADER_BYTES];
    kvs__header_encode(&h, good);
    for (size_t bit = 0; bit < KVS_HEADER_BYTES * 8; bit += 7) {
        memcpy(bad, good, sizeof bad);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        kvs_reject r = kvs__header_decode(bad, sizeof bad, &d);
        assert_int_not_equal(r, KVS_REJECT_NONE);
    }
    kvs__ns_clear(&ns);
}

static void test_version_and_size(void **state)
{
    (void)state;
    kvs_ns ns = make_ns("m", 2);
    uint8_t key[32] = {9};
    kvs_chunk_header h, d;
    kvs__header_init(&h, &ns, key, 256);
    h.format_version = KVS_FORMAT_VERSION_CODEC + 1;
    uint8_t buf[KVS_HEADER_BYTES];
    kvs__header_encode(&h, buf);
    assert_int_equal(kvs__header_decode(buf, sizeof buf, &d), KVS_REJECT_VERSION);
    h.format_version = KVS_FORMAT_VERSION;
    kvs__header_encode(&h, buf);
    assert_int_equal(kvs__header_decode(buf, 100, &d), KVS_REJECT_BAD_HEADER);
    /* A self-consistent checksum over an inconsistent header still fails. */
    h.payload_bytes += 1;
    kvs__header_encode(&h, buf);
    assert_int_equal(kvs__header_decode(buf, sizeof buf, &d), KVS_REJECT_BAD_HEADER);
    kvs__ns_clear(&ns);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_check_header),
        cmocka_unit_test(test_every_bit_flip_is_caught),
        cmocka_unit_test(test_version_and_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
