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

/* Version 2 (compressed): its fields round-trip; the rules of a valid one
 * (codec, reserved, auth, stored_bytes bounds, file size); version 1 with
 * those fields set is refused; the frame table against its sum. */
static void test_codec_header(void **state)
{
    (void)state;
    kvs_ns ns = make_ns("m", 4); /* 4 MiB: 64 segments of 64 KiB */
    uint8_t key[32] = {7};
    kvs_chunk_header h, d;
    kvs__header_init(&h, &ns, key, 256);
    kvs_chunk_frames fr;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < h.segment_count; i++) {
        fr.f[i].off = (uint32_t)pos;
        fr.f[i].len = 40960;
        pos += 40960 + 16 * (i % 2); /* gaps are allowed */
    }
    uint64_t stored = pos;
    uint8_t table[4096], buf[KVS_HEADER_BYTES];
    kvs__header_set_codec(&h, stored, kvs__chunk_encode_table(&h, &fr, table));
    kvs__header_encode(&h, buf);
    assert_int_equal(kvs__header_decode(buf, sizeof buf, &d), KVS_REJECT_NONE);
    assert_int_equal(d.format_version, KVS_FORMAT_VERSION_CODEC);
    assert_int_equal(d.codec, KVS_CODEC_EXP_HUFF);
    assert_int_equal(d.stored_bytes, stored);
    assert_true(d.table_sum == h.table_sum);
    assert_int_equal(kvs__chunk_file_bytes(&d), 8192 + KVS_ALIGN_UP(stored, 4096));
    kvs_chunk_frames got;
    assert_int_equal(kvs__chunk_check_table(&d, table, &got, NULL, 0), KVS_REJECT_NONE);
    assert_int_equal(got.f[3].off, fr.f[3].off);
    kvs_chunk_want want = {.key = key, .ns = &ns, .tokens = 256};
    assert_int_equal(kvs__chunk_check_header(buf, kvs__chunk_file_bytes(&d), &want, &d),
                     KVS_REJECT_NONE);
    assert_int_equal(kvs__chunk_check_header(buf, kvs__chunk_file_bytes(&d) + 4096, &want, &d),
                     KVS_REJECT_TRUNCATED);
    assert_int_equal(kvs__chunk_check_header(buf, kvs__file_bytes(d.payload_bytes), &want, &d),
                     KVS_REJECT_TRUNCATED);
    /* a probe takes both sizes, and nothing longer than a plain file */
    assert_true(kvs__chunk_size_plausible(d.payload_bytes, kvs__chunk_file_bytes(&d)));
    assert_true(kvs__chunk_size_plausible(d.payload_bytes, kvs__file_bytes(d.payload_bytes)));
    assert_false(kvs__chunk_size_plausible(d.payload_bytes, kvs__file_bytes(d.payload_bytes) + 4096));
    assert_false(kvs__chunk_size_plausible(d.payload_bytes, kvs__chunk_file_bytes(&d) + 100));
    assert_false(kvs__chunk_size_plausible(d.payload_bytes, 8192));

    /* one table byte: its sum no longer matches */
    table[5] ^= 1;
    char why[256];
    assert_int_equal(kvs__chunk_check_table(&d, table, &got, why, sizeof why),
                     KVS_REJECT_BAD_HEADER);
    assert_non_null(strstr(why, "does not match its sum"));
    table[5] ^= 1;
    /* a frame past stored_bytes, the sum made right */
    kvs_chunk_header e = h;
    e.stored_bytes = stored - 32; /* the last frame ends 16 bytes before stored */
    kvs__header_encode(&e, buf);
    assert_int_equal(kvs__header_decode(buf, sizeof buf, &d), KVS_REJECT_NONE);
    assert_int_equal(kvs__chunk_check_table(&d, table, &got, why, sizeof why),
                     KVS_REJECT_BAD_HEADER);

    static const struct {
        const char *what;
        uint32_t codec, auth, version;
        uint64_t stored;
    } bad[] = {
        {"unknown codec", 2, 0, 2, 0},
        {"no codec in version 2", 0, 0, 2, 0},
        {"authenticated", 1, 1, 2, 0},
        {"stored below 256 a frame", 1, 0, 2, 64 * 255},
        {"stored above the bound", 1, 0, 2, 64ull * (65536 + 16 + 4096) + 1},
        {"codec in version 1", 1, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e = h;
        e.codec = bad[i].codec;
        e.auth_algo = bad[i].auth;
        e.format_version = bad[i].version;
        if (bad[i].stored)
            e.stored_bytes = bad[i].stored;
        kvs__header_encode(&e, buf);
        if (kvs__header_decode(buf, sizeof buf, &d) != KVS_REJECT_BAD_HEADER)
            fail_msg("%s: accepted", bad[i].what);
    }
    /* the reserved word beside codec, and the rest of the reserved area */
    for (size_t off = 372; off < 512; off += (off == 372 ? 20 : 60)) {
        kvs__header_encode(&h, buf);
        buf[off] = 1;
        memset(buf + 16, 0, 8);
        uint64_t sum = kvs__checksum(buf, KVS_HEADER_BYTES);
        for (int b = 0; b < 8; b++)
            buf[16 + b] = (uint8_t)(sum >> (8 * b));
        if (kvs__header_decode(buf, sizeof buf, &d) != KVS_REJECT_BAD_HEADER)
            fail_msg("reserved byte %zu set: accepted", off);
    }
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
        cmocka_unit_test(test_codec_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
