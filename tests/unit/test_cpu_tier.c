/* test_cpu_tier.c - LRU order, capacity, pinning, invisibility before
 * commit. */
#include "test_util.h"

#include "cpu_tier.h"

#include <string.h>

static void k(uint8_t *key, int i)
{
    memset(key, 0, 32);
    key[0] = (uint8_t)i;
    key[5] = (uint8_t)(i >> 8);
}

static void put(kvs_cpu_tier *t, int i, uint64_t bytes)
{
    uint8_t key[32];
    k(key, i);
    kvs_cpu_entry *e = kvs__cpu_tier_begin(t, key, bytes);
    assert_non_null(e);
    memset(kvs__cpu_entry_data(e), i, bytes);
    kvs__cpu_tier_commit(t, e);
}

static bool has(kvs_cpu_tier *t, int i)
{
    uint8_t key[32];
    k(key, i);
    return kvs__cpu_tier_contains(t, key);
}

static void test_lru(void **state)
{
    (void)state;
    kvs_cpu_tier *t;
    assert_int_equal(kvs__cpu_tier_create(4096 * 3, NULL, &t), KVS_OK);
    put(t, 1, 4096);
    put(t, 2, 4096);
    put(t, 3, 4096);
    uint8_t key[32];
    k(key, 1);
    kvs_cpu_entry *e = kvs__cpu_tier_get(t, key); /* 1 is now most recent */
    assert_non_null(e);
    assert_int_equal(((uint8_t *)kvs__cpu_entry_data(e))[100], 1);
    kvs__cpu_tier_release(t, e);
    put(t, 4, 4096); /* evicts 2, the least recent */
    assert_true(has(t, 1));
    assert_false(has(t, 2));
    assert_true(has(t, 3));
    assert_true(has(t, 4));
    kvs_cpu_tier_stats s;
    kvs__cpu_tier_stats(t, &s);
    assert_int_equal(s.chunks, 3);
    assert_int_equal(s.bytes, 3 * 4096);
    assert_int_equal(s.evictions, 1);
    kvs__cpu_tier_destroy(t);
}

static void test_pins_and_commit(void **state)
{
    (void)state;
    kvs_cpu_tier *t;
    assert_int_equal(kvs__cpu_tier_create(8192, NULL, &t), KVS_OK);
    put(t, 1, 4096);
    put(t, 2, 4096);
    uint8_t key[32];
    k(key, 1);
    kvs_cpu_entry *p1 = kvs__cpu_tier_get(t, key);
    k(key, 2);
    kvs_cpu_entry *p2 = kvs__cpu_tier_get(t, key);
    /* Everything is pinned: no room. */
    k(key, 3);
    assert_null(kvs__cpu_tier_begin(t, key, 4096));
    kvs__cpu_tier_release(t, p1);
    kvs_cpu_entry *e3 = kvs__cpu_tier_begin(t, key, 4096);
    assert_non_null(e3);
    assert_false(has(t, 1));
    assert_false(has(t, 3)); /* not visible before commit */
    assert_null(kvs__cpu_tier_get(t, key));
    kvs__cpu_tier_abort(t, e3);
    assert_false(has(t, 3));
    kvs__cpu_tier_release(t, p2);
    /* Too large for the whole tier, and duplicates, are refused. */
    assert_null(kvs__cpu_tier_begin(t, key, 8193));
    k(key, 2);
    assert_null(kvs__cpu_tier_begin(t, key, 4096));
    kvs__cpu_tier_remove(t, key);
    assert_false(has(t, 2));
    kvs__cpu_tier_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru),
        cmocka_unit_test(test_pins_and_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
