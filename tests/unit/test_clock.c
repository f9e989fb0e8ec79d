/*
 * test_clock.c - every deadline of the library waits on the monotonic clock.
 *
 * This machine's real clock is never touched.  Instead the test program
 * defines clock_gettime itself, which the static library's calls reach
 * before libc's: once `skew_ns` is set, CLOCK_REALTIME reads 20 s ahead of
 * the real time, as if the wall clock were stepped back by 20 s right after
 * a deadline was computed from it.  A wait computed from the wall clock
 * then lasts 20.3 s instead of 300 ms; one on the monotonic clock does not
 * notice.  (glibc's own internals keep the real clock: only the library's
 * reading of the time is skewed, which is what a step does to it.)
 */
#include "internal.h"
#include "io_ops.h"
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

static volatile int64_t skew_ns;

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, clk, ts);
    if (rc == 0 && clk == CLOCK_REALTIME && skew_ns) {
        int64_t ns = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec + skew_ns;
        ts->tv_sec = (time_t)(ns / 1000000000);
        ts->tv_nsec = (long)(ns % 1000000000);
    }
    return rc;
}

static uint64_t real_mono_ns(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The hook itself works: without it every test below would pass vacuously. */
static void test_hook_skews_the_wall_clock(void **state)
{
    (void)state;
    uint64_t before = kvs__wall_ns();
    skew_ns = 20000000000;
    uint64_t after = kvs__wall_ns();
    skew_ns = 0;
    assert_true(after > before + 19000000000u);
}

static void test_wait_helper(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    assert_int_equal(kvs__cond_init(&cv), 0);
    skew_ns = 20000000000;
    pthread_mutex_lock(&mu);
    uint64_t t0 = real_mono_ns();
    uint64_t deadline = kvs__now_ns() + 300000000u;
    int rc = 0;
    while (rc == 0)
        rc = kvs__cond_wait_until(&cv, &mu, deadline);
    uint64_t took = real_mono_ns() - t0;
    pthread_mutex_unlock(&mu);
    skew_ns = 0;
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(took >= 290000000u);
    assert_true(took < 5000000000u);
    /* A deadline already past returns at once. */
    pthread_mutex_lock(&mu);
    assert_int_equal(kvs__cond_wait_until(&cv, &mu, kvs__now_ns() - 1), ETIMEDOUT);
    pthread_mutex_unlock(&mu);
    /* kvs__cond_init's clock is the monotonic one: an absolute monotonic
     * time given to plain pthread_cond_timedwait means what it says.  (On
     * the realtime clock it would be decades ago: an immediate timeout,
     * without the 100 ms.) */
    struct timespec ts;
    kvs__mono_timespec_in(100000000u, &ts);
    pthread_mutex_lock(&mu);
    t0 = real_mono_ns();
    do
        rc = pthread_cond_timedwait(&cv, &mu, &ts);
    while (rc == 0);
    took = real_mono_ns() - t0;
    pthread_mutex_unlock(&mu);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(took >= 90000000u);
    pthread_cond_destroy(&cv);
}

/* The store's stat blocks until released: a hung mount at engine open. */
static pthread_mutex_t hang_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hang_cv = PTHREAD_COND_INITIALIZER;
static int hanging;
static const char *hang_dir;

static int hung_stat(const char *path, struct stat *st)
{
    if (strncmp(path, hang_dir, strlen(hang_dir)) == 0) {
        pthread_mutex_lock(&hang_mu);
        while (hanging)
            pthread_cond_wait(&hang_cv, &hang_mu);
        pthread_mutex_unlock(&hang_mu);
    }
    return kvs__io_posix.stat(path, st);
}

static void test_engine_open_deadline(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("clock");
    assert_non_null(dir);
    hang_dir = dir;
    kvs_config *cfg;
    assert_int_equal(kvs_config_new(&cfg), KVS_OK);
    assert_int_equal(kvs_config_set(cfg, "weka_path", dir), KVS_OK);
    assert_int_equal(kvs_config_set(cfg, "chunk_size", "16"), KVS_OK);
    assert_int_equal(kvs_config_set(cfg, "local_cpu", "false"), KVS_OK);
    assert_int_equal(kvs_config_set(cfg, "store_timeout_ms", "300"), KVS_OK);
    assert_int_equal(kvs_config_set(cfg, "log_level", "error"), KVS_OK);
    kvs_namespace ns = {.model = "test/clock", .dtype = KVS_DTYPE_BF16, .num_layers = 2,
                        .num_kv_heads = 2, .head_dim = 8, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    static kvs_io_ops ops;
    ops = kvs__io_posix;
    ops.stat = hung_stat;
    hanging = 1;
    const kvs_io_ops *old = kvs__io_set(&ops);
    skew_ns = 20000000000;
    uint64_t t0 = real_mono_ns();
    kvs_engine *e = NULL;
    kvs_status st = kvs_engine_open(cfg, &ns, &e);
    uint64_t took = real_mono_ns() - t0;
    skew_ns = 0;
    pthread_mutex_lock(&hang_mu);
    hanging = 0;
    pthread_cond_broadcast(&hang_cv);
    pthread_mutex_unlock(&hang_mu);
    printf("engine open on a hung store, wall clock 20 s off: %s in %.3f s\n",
           kvs_strerror(st), (double)took / 1e9);
    assert_int_equal(st, KVS_ERR_TIMEOUT);
    assert_null(e);
    assert_true(took >= 290000000u);
    assert_true(took < 5000000000u);
    /* The opening thread finishes on its own and undoes its work. */
    usleep(200000);
    kvs__io_set(old);
    kvs_config_free(cfg);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_skews_the_wall_clock),
        cmocka_unit_test(test_wait_helper),
        cmocka_unit_test(test_engine_open_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
