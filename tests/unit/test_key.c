/* test_key.c - chunk keys and namespaces: known answers computed with
 * Python's hashlib (sha256(parent || tokens as <u4)), chaining, namespace
 * separation and validation. */
#include "test_util.h"

#include "key.h"

#include <string.h>

static void hexkey(const uint8_t *k, char *out)
{
    kvs__hex(k, KVS_KEY_BYTES, out);
}

static void test_known_answers(void **state)
{
    (void)state;
    uint32_t t[512];
    for (uint32_t i = 0; i < 512; i++)
        t[i] = i;
    uint8_t keys[2][KVS_KEY_BYTES];
    size_t n = 0;
    assert_int_equal(kvs_chunk_keys(t, 512, 256, keys, 2, &n), KVS_OK);
    assert_int_equal(n, 2);
    char hex[65];
    hexkey(keys[0], hex);
    assert_string_equal(hex, "8c0f08d32eb37b958aba53c5f2915266a16446412f38aca2eb711c617dd50dc0");
    hexkey(keys[1], hex);
    assert_string_equal(hex, "da9d19aabc427a7f285510ac51659029ad1943a1220294e141c3b13f62f538d0");

    uint32_t s[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(kvs_chunk_keys(s, 8, 4, keys, 2, &n), KVS_OK);
    hexkey(keys[0], hex);
    assert_string_equal(hex, "d8faa8ec8c0500567ca87b56e4bb666d69cb512e638103891defea24e88cbc92");
    hexkey(keys[1], hex);
    assert_string_equal(hex, "d1637bc3762f67abb1ac6b35e87c7ddaee8d04b0c3879d2d3afb2f6dc3f6a56a");

    /* Little-endian encoding of large ids. */
    uint32_t big[4] = {0xffffffffu, 0, 0x80000000u, 7};
    assert_int_equal(kvs_chunk_keys(big, 4, 4, keys, 1, &n), KVS_OK);
    hexkey(keys[0], hex);
    assert_string_equal(hex, "0cf66a402693db365734f7e20d48f82e596f0dcae54863a0e0393c1f87ba4c3e");
}

static void test_chaining_and_limits(void **state)
{
    (void)state;
    uint32_t a[1024], b[1024];
    for (int i = 0; i < 1024; i++)
        a[i] = b[i] = (uint32_t)(i * 7919);
    b[300] ^= 1; /* differs in chunk 1 */
    uint8_t ka[4][KVS_KEY_BYTES], kb[4][KVS_KEY_BYTES];
    size_t n;
    assert_int_equal(kvs_chunk_keys(a, 1024, 256, ka, 4, &n), KVS_OK);
    assert_int_equal(kvs_chunk_keys(b, 1024, 256, kb, 4, &n), KVS_OK);
    assert_memory_equal(ka[0], kb[0], KVS_KEY_BYTES);
    /* A change anywhere in the prefix changes every later key. */
    for (int c = 1; c < 4; c++)
        assert_memory_not_equal(ka[c], kb[c], KVS_KEY_BYTES);
    /* Partial chunks produce no key; max_keys caps the output. */
    assert_int_equal(kvs_chunk_keys(a, 1000, 256, ka, 4, &n), KVS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(kvs_chunk_keys(a, 1024, 256, ka, 2, &n), KVS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(kvs_chunk_keys(a, 1024, 0, ka, 4, &n), KVS_ERR_INVALID);
    assert_int_equal(kvs_chunk_keys(NULL, 10, 4, ka, 4, &n), KVS_ERR_INVALID);
}

static kvs_namespace base_ns(void)
{
    kvs_namespace ns = {.model = "meta-llama/Llama-3.1-8B-Instruct", .dtype = KVS_DTYPE_BF16,
                        .num_layers = 32, .num_kv_heads = 8, .head_dim = 128,
                        .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};
    return ns;
}

static void test_namespace_separates(void **state)
{
    (void)state;
    kvs_ns a, b;
    kvs_namespace ns = base_ns();
    assert_int_equal(kvs__ns_init(&a, &ns, 256, NULL), KVS_OK);
    assert_int_equal(a.row_bytes, 8 * 128 * 2);
    assert_int_equal(a.num_planes, 2);
    assert_int_equal(kvs__ns_payload_bytes(&a, 256), 32u << 20);
    assert_non_null(strstr(a.dir, "meta-llama_Llama-3.1-8B-Instruct-"));

    /* Every identity field changes the id. */
    kvs_namespace variants[12];
    for (int i = 0; i < 12; i++)
        variants[i] = ns;
    variants[0].model = "meta-llama/Llama-3.1-70B-Instruct";
    variants[1].dtype = KVS_DTYPE_FP16;
    variants[2].num_layers = 31;
    variants[3].num_kv_heads = 4;
    variants[4].head_dim = 64;
    variants[5].world_size = 2;
    variants[6].world_size = 2, variants[6].rank = 1;
    variants[7].salt = "tenant-a";
    variants[8].salt = "tenant-b";
    variants[9].variant = "lora:sql-adapter";
    variants[10].layout = KVS_LAYOUT_MLA;
    variants[11].dtype = KVS_DTYPE_FP8_E4M3;
    for (int i = 0; i < 12; i++) {
        assert_int_equal(kvs__ns_init(&b, &variants[i], 256, NULL), KVS_OK);
        assert_memory_not_equal(a.id, b.id, 32);
        assert_string_not_equal(a.dir, b.dir);
        kvs__ns_clear(&b);
    }
    /* The chunk size is part of it too. */
    assert_int_equal(kvs__ns_init(&b, &ns, 128, NULL), KVS_OK);
    assert_memory_not_equal(a.id, b.id, 32);
    kvs__ns_clear(&b);
    /* The configuration's salt applies when the namespace has none, and the
     * same inputs always give the same id. */
    assert_int_equal(kvs__ns_init(&b, &variants[7], 256, NULL), KVS_OK);
    kvs_ns c;
    assert_int_equal(kvs__ns_init(&c, &ns, 256, "tenant-a"), KVS_OK);
    assert_memory_equal(b.id, c.id, 32);
    kvs__ns_clear(&b);
    kvs__ns_clear(&c);
    /* The salt itself appears nowhere. */
    assert_int_equal(kvs__ns_init(&b, &variants[7], 256, NULL), KVS_OK);
    char *desc = kvs__ns_describe_json(&b);
    assert_null(strstr(desc, "tenant-a"));
    assert_null(strstr(b.dir, "tenant"));
    kvs__free(desc);
    kvs__ns_clear(&b);
    kvs__ns_clear(&a);
}

static void test_mla_is_rank_free(void **state)
{
    (void)state;
    kvs_namespace ns = base_ns();
    ns.layout = KVS_LAYOUT_MLA;
    ns.num_kv_heads = 1;
    ns.head_dim = 576;
    ns.world_size = 8;
    ns.rank = 3;
    kvs_ns a, b;
    assert_int_equal(kvs__ns_init(&a, &ns, 256, NULL), KVS_OK);
    ns.rank = 0;
    ns.world_size = 1;
    assert_int_equal(kvs__ns_init(&b, &ns, 256, NULL), KVS_OK);
    assert_memory_equal(a.id, b.id, 32);
    assert_int_equal(a.num_planes, 1);
    kvs__ns_clear(&a);
    kvs__ns_clear(&b);
}

static void test_namespace_rejects(void **state)
{
    (void)state;
    kvs_ns out;
    kvs_namespace bad[9];
    for (int i = 0; i < 9; i++)
        bad[i] = base_ns();
    bad[0].model = NULL;
    bad[1].model = "";
    bad[2].model = "bad\nname";
    bad[3].model = "\xff\xfe";
    bad[4].num_layers = 0;
    bad[5].rank = 1; /* world_size 1 */
    bad[6].dtype = KVS_DTYPE_INVALID;
    bad[7].layout = (kvs_attn_layout)7;
    bad[8].head_dim = 0;
    for (int i = 0; i < 9; i++) {
        assert_int_equal(kvs__ns_init(&out, &bad[i], 256, NULL), KVS_ERR_INVALID);
        assert_true(strlen(kvs_last_error()) > 0);
    }
    kvs_namespace ok = base_ns();
    assert_int_equal(kvs__ns_init(&out, &ok, 0, NULL), KVS_ERR_INVALID);
    /* A model id with path characters becomes a safe folder name. */
    ok.model = "../../etc/passwd";
    assert_int_equal(kvs__ns_init(&out, &ok, 256, NULL), KVS_OK);
    assert_null(strchr(out.dir, '/'));
    assert_true(out.dir[0] != '.');
    kvs__ns_clear(&out);
}

static void test_dtypes(void **state)
{
    (void)state;
    kvs_dtype d;
    assert_int_equal(kvs_dtype_parse("bfloat16", &d), KVS_OK);
    assert_int_equal(d, KVS_DTYPE_BF16);
    assert_int_equal(kvs_dtype_parse("torch.float16", &d), KVS_OK);
    assert_int_equal(d, KVS_DTYPE_FP16);
    assert_int_equal(kvs_dtype_parse("fp8", &d), KVS_OK);
    assert_int_equal(kvs_dtype_size(d), 1);
    assert_int_equal(kvs_dtype_parse("float32", &d), KVS_OK);
    assert_int_equal(kvs_dtype_size(d), 4);
    assert_int_equal(kvs_dtype_parse("int8", &d), KVS_ERR_INVALID);
    assert_non_null(strstr(kvs_last_error(), "accepted"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_chaining_and_limits),
        cmocka_unit_test(test_namespace_separates),
        cmocka_unit_test(test_mla_is_rank_free),
        cmocka_unit_test(test_namespace_rejects),
        cmocka_unit_test(test_dtypes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
