/* test_index.c - the engine's index: states, negative-cache expiry, write
 * ownership, access refresh, growth past many entries. */
#include "test_util.h"

#include "index.h"

#include <string.h>

static void key_of(uint64_t i, uint8_t *k)
{
    memset(k, 0, 32);
    uint64_t h = i * 0x9e3779b97f4a7c15ull;
    memcpy(k, &h, 8);
    memcpy(k + 8, &i, 8);
}

static void test_states(void **state)
{
    (void)state;
    kvs_index *idx;
    assert_int_equal(kvs__index_create(&idx), KVS_OK);
    uint8_t k[32];
    key_of(1, k);
    assert_int_equal(kvs__index_get(idx, k, 100), KVS_IDX_UNKNOWN);
    kvs__index_set_absent(idx, k, 200);
    assert_int_equal(kvs__index_get(idx, k, 150), KVS_IDX_ABSENT);
    assert_int_equal(kvs__index_get(idx, k, 200), KVS_IDX_UNKNOWN); /* expired */
    assert_true(kvs__index_begin_write(idx, k, 0));
    assert_false(kvs__index_begin_write(idx, k, 0)); /* one writer */
    kvs__index_set_absent(idx, k, 1000);           /* a reader's miss... */
    assert_int_equal(kvs__index_get(idx, k, 300), KVS_IDX_WRITING); /* ...does not hide it */
    kvs__index_set_present(idx, k, 0);
    assert_int_equal(kvs__index_get(idx, k, 300), KVS_IDX_PRESENT);
    assert_false(kvs__index_begin_write(idx, k, 0));
    assert_int_equal(kvs__index_present(idx), 1);
    /* Access refresh: at most once per interval. */
    assert_true(kvs__index_touch(idx, k, 1000, 500));
    assert_false(kvs__index_touch(idx, k, 1200, 500));
    assert_true(kvs__index_touch(idx, k, 1600, 500));
    kvs__index_forget(idx, k);
    assert_int_equal(kvs__index_get(idx, k, 300), KVS_IDX_UNKNOWN);
    assert_int_equal(kvs__index_present(idx), 0);
    kvs__index_destroy(idx);
}

static void test_many(void **state)
{
    (void)state;
    kvs_index *idx;
    assert_int_equal(kvs__index_create(&idx), KVS_OK);
    uint8_t k[32];
    for (uint64_t i = 0; i < 200000; i++) {
        key_of(i, k);
        if (i % 3 == 0)
            kvs__index_set_absent(idx, k, 10);
        else
            kvs__index_set_present(idx, k, 0);
    }
    for (uint64_t i = 0; i < 200000; i += 7) {
        key_of(i, k);
        kvs_index_state st = kvs__index_get(idx, k, 5);
        assert_int_equal(st, i % 3 == 0 ? KVS_IDX_ABSENT : KVS_IDX_PRESENT);
    }
    /* Expired negatives turn into dead slots; the table stays correct. */
    for (uint64_t i = 0; i < 200000; i += 3) {
        key_of(i, k);
        assert_int_equal(kvs__index_get(idx, k, 11), KVS_IDX_UNKNOWN);
    }
    for (uint64_t i = 200000; i < 300000; i++) {
        key_of(i, k);
        kvs__index_set_present(idx, k, 0);
    }
    key_of(299999, k);
    assert_int_equal(kvs__index_get(idx, k, 0), KVS_IDX_PRESENT);
    key_of(1, k);
    assert_int_equal(kvs__index_get(idx, k, 0), KVS_IDX_PRESENT);
    assert_int_equal(kvs__index_present(idx), 200000 - 66667 + 100000);
    kvs__index_destroy(idx);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    kvs_index *idx = NULL;
    kvs__alloc_fail_at(1, false);
    assert_int_equal(kvs__index_create(&idx), KVS_ERR_NOMEM);
    kvs__alloc_fail_at(2, false);
    assert_int_equal(kvs__index_create(&idx), KVS_ERR_NOMEM);
    kvs__alloc_fail_at(0, false);
    assert_int_equal(kvs__index_create(&idx), KVS_OK);
    /* Growth failing keeps the table usable. */
    uint8_t k[32];
    for (uint64_t i = 0; i < 700; i++) {
        key_of(i, k);
        kvs__index_set_present(idx, k, 0);
    }
    kvs__alloc_fail_at(1, true);
    for (uint64_t i = 700; i < 1100; i++) {
        key_of(i, k);
        kvs__index_set_present(idx, k, 0);
    }
    kvs__alloc_fail_at(0, false);
    key_of(5, k);
    assert_int_equal(kvs__index_get(idx, k, 0), KVS_IDX_PRESENT);
    kvs__index_destroy(idx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
