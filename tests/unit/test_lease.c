/* test_lease.c - the collector lease on a real folder with real processes:
 * one holder at a time, renewal, takeover after expiry judged by the
 * contender's own clock, immunity to the wall clock written in the file,
 * a SIGKILLed holder of this machine taken over at once, a SIGKILLed
 * holder that cannot be checked (another pid namespace) taken over only
 * after the lease expired, and four processes competing for it. */
#include "test_util.h"

#include "io_ops.h"
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *dir;

static int setup(void **state)
{
    (void)state;
    tu_clear_env();
    dir = tu_mkdtemp("lease");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kvs__lease_test_wall_offset(0);
    tu_rmtree(dir);
    free(dir);
    return 0;
}

static double now_s(void)
{
    return (double)kvs__now_ns() / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Tries every 20 ms until held or `limit` seconds pass; returns the wait. */
static double acquire_within(kvs_lease *l, double limit)
{
    double t0 = now_s();
    while (kvs__lease_try(l) != KVS_OK) {
        if (now_s() - t0 > limit)
            return -1;
        sleep_ms(20);
    }
    return now_s() - t0;
}

static void test_exclusive_and_release(void **state)
{
    (void)state;
    kvs_lease a, b;
    kvs__lease_init(&a, dir, 30, "test a");
    kvs__lease_init(&b, dir, 30, "test b");
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    assert_true(kvs__lease_valid(&a));
    assert_int_equal(kvs__lease_try(&b), KVS_ERR_BUSY);
    assert_non_null(strstr(b.holder, "test a"));
    char *desc = kvs__lease_describe(dir);
    assert_non_null(strstr(desc, "held by"));
    kvs__free(desc);
    kvs__lease_release(&a);
    assert_false(kvs__lease_valid(&a));
    desc = kvs__lease_describe(dir);
    assert_string_equal(desc, "free");
    kvs__free(desc);
    assert_int_equal(kvs__lease_try(&b), KVS_OK);
    kvs__lease_release(&b);
}

/* A holder that renews keeps it for many ttls; a contender never gets it. */
static void test_renewal_keeps_it(void **state)
{
    (void)state;
    kvs_lease a, b;
    kvs__lease_init(&a, dir, 1, "renewer");
    kvs__lease_init(&b, dir, 1, "contender");
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    uint64_t gen0 = a.generation;
    double t0 = now_s();
    while (now_s() - t0 < 3.0) {
        assert_int_equal(kvs__lease_keep(&a), KVS_OK);
        assert_int_equal(kvs__lease_try(&b), KVS_ERR_BUSY);
        sleep_ms(50);
    }
    assert_true(a.generation >= gen0 + 6); /* every ttl/3 */
    kvs__lease_release(&a);
}

/* A holder that stops renewing stops being valid at ttl - grace by its own
 * clock; a contender takes over once it has seen the same content for
 * ttl + 2 * grace by its own clock, never earlier. */
static void test_expiry_by_observation(void **state)
{
    (void)state;
    kvs_lease a, b;
    kvs__lease_init(&a, dir, 1, "staller");
    kvs__lease_init(&b, dir, 1, "contender");
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    double t0 = now_s();
    double waited = acquire_within(&b, 5.0);
    assert_true(waited >= 1.2 - 0.02); /* ttl + 2 * grace (100 ms) */
    assert_true(waited < 2.0);
    /* The staller's holding ran out long before the takeover. */
    assert_false(kvs__lease_valid(&a));
    assert_true(now_s() - t0 > 0.9);
    assert_int_equal(kvs__lease_keep(&a), KVS_ERR_BUSY);
    assert_true(kvs__lease_valid(&b));
    kvs__lease_release(&b);
}

/* The wall clock a holder writes is ignored: a holder whose clock is an
 * hour behind (its file claims it expired long ago) keeps its lease while
 * it renews; one whose clock is an hour ahead loses it ttl + 2 * grace
 * after it stopped, not an hour later. */
static void test_clock_skew_is_harmless(void **state)
{
    (void)state;
    kvs_lease a, b;
    kvs__lease_init(&a, dir, 1, "skewed");
    kvs__lease_init(&b, dir, 1, "contender");
    kvs__lease_test_wall_offset(-3600ll * 1000000000ll);
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    double t0 = now_s();
    while (now_s() - t0 < 2.5) {
        assert_int_equal(kvs__lease_keep(&a), KVS_OK);
        assert_int_equal(kvs__lease_try(&b), KVS_ERR_BUSY);
        sleep_ms(50);
    }
    kvs__lease_release(&a);
    kvs__lease_test_wall_offset(3600ll * 1000000000ll);
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    kvs__lease_test_wall_offset(0);
    double waited = acquire_within(&b, 5.0);
    assert_true(waited >= 1.18 && waited < 2.0);
    kvs__lease_release(&b);
}

/* A lease file untouched for longer than ttl + 5 minutes (by the
 * filesystem's clock) was abandoned: taken at once.  One 10 s old is not. */
static void test_abandoned_file(void **state)
{
    (void)state;
    kvs_lease a, b;
    kvs__lease_init(&a, dir, 1, "gone");
    kvs__lease_init(&b, dir, 1, "contender");
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= 10;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, a.path, ts, 0), 0);
    assert_int_equal(kvs__lease_try(&b), KVS_ERR_BUSY);
    ts[0].tv_sec -= 3600;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, a.path, ts, 0), 0);
    assert_int_equal(kvs__lease_try(&b), KVS_OK);
    kvs__lease_release(&b);
}

/* A real process takes the lease and is killed with SIGKILL.  Its pid is
 * gone from this machine and pid namespace, so the lease is taken at once. */
static void test_sigkilled_holder_same_machine(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        kvs_lease l;
        kvs__lease_init(&l, dir, 30, "victim");
        char ok = kvs__lease_try(&l) == KVS_OK ? 'y' : 'n';
        if (write(p[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char ok = 0;
    assert_int_equal(read(p[0], &ok, 1), 1);
    assert_int_equal(ok, 'y');
    kvs_lease b;
    kvs__lease_init(&b, dir, 30, "survivor");
    assert_int_equal(kvs__lease_try(&b), KVS_ERR_BUSY);
    assert_non_null(strstr(b.holder, "victim"));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* ttl is 30 s: only the liveness check can explain a quick takeover */
    double waited = acquire_within(&b, 2.0);
    assert_true(waited >= 0 && waited < 1.0);
    kvs__lease_release(&b);
    close(p[0]);
    close(p[1]);
}

/* The same with a holder in another pid namespace (a container's view):
 * its pid means nothing here, so the lease is taken only after it expired. */
static void test_sigkilled_holder_elsewhere(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        if (unshare(CLONE_NEWPID) != 0) {
            pid_t none = 0;
            if (write(p[1], &none, sizeof none) != sizeof none)
                _exit(1);
            _exit(0);
        }
        pid_t inner = fork();
        if (inner == 0) {
            kvs_lease l;
            kvs__lease_init(&l, dir, 1, "container");
            if (kvs__lease_try(&l) != KVS_OK)
                _exit(1);
            pid_t me = -1; /* "held": the parent learns our pid from mid */
            if (write(p[1], &me, sizeof me) != sizeof me)
                _exit(1);
            for (;;)
                pause();
        }
        if (write(p[1], &inner, sizeof inner) != sizeof inner)
            _exit(1);
        waitpid(inner, NULL, 0);
        _exit(0);
    }
    pid_t inner = 0, other = 0;
    assert_int_equal(read(p[0], &inner, sizeof inner), sizeof inner);
    if (inner == 0) {
        waitpid(mid, NULL, 0);
        close(p[0]);
        close(p[1]);
        print_message("skipped: no new pid namespace here (unshare: not permitted)\n");
        return;
    }
    /* two messages in either order: the inner pid, and -1 once it holds */
    assert_int_equal(read(p[0], &other, sizeof other), sizeof other);
    if (inner < 0)
        inner = other;
    kvs_lease b;
    kvs__lease_init(&b, dir, 1, "survivor");
    /* The survivor's watch of the lease starts at its first busy answer, so
     * the lower bound counts from there: on a loaded machine the kill and
     * the wait for the holder's parent can take a good part of the ttl. */
    double watch_from = now_s();
    assert_int_equal(kvs__lease_try(&b), KVS_ERR_BUSY);
    kill(inner, SIGKILL);
    waitpid(mid, NULL, 0);
    double waited = acquire_within(&b, 5.0);
    double watched = now_s() - watch_from;
    /* expired: not before ttl + 2 * grace of watching it */
    assert_true(waited >= 0);
    assert_true(watched >= 1.18);
    assert_true(waited < 2.5);
    kvs__lease_release(&b);
    close(p[0]);
    close(p[1]);
}

/* Four processes compete for the lease for three seconds, each holding it
 * for a while (renewing) and giving it back; the intervals in which each
 * believed it held a valid lease never overlap. */
static void test_four_processes_never_overlap(void **state)
{
    (void)state;
    char log[4096];
    snprintf(log, sizeof log, "%s/holds.log", dir);
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            srand((unsigned)getpid());
            kvs_lease l;
            kvs__lease_init(&l, dir, 1, "competitor");
            double end = now_s() + 3.0;
            int fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
            while (now_s() < end) {
                if (kvs__lease_try(&l) != KVS_OK) {
                    sleep_ms(5 + rand() % 20);
                    continue;
                }
                uint64_t t0 = kvs__now_ns(), t1 = t0;
                uint64_t hold = (uint64_t)(50 + rand() % 400) * 1000000u;
                while (kvs__now_ns() - t0 < hold && kvs__lease_keep(&l) == KVS_OK &&
                       kvs__lease_valid(&l)) {
                    t1 = kvs__now_ns();
                    sleep_ms(10);
                }
                kvs__lease_release(&l);
                char line[64];
                int n = snprintf(line, sizeof line, "%llu %llu\n", (unsigned long long)t0,
                                 (unsigned long long)t1);
                if (write(fd, line, (size_t)n) != n)
                    _exit(1);
                sleep_ms(rand() % 30);
            }
            close(fd);
            _exit(0);
        }
    }
    for (int i = 0; i < 4; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    unsigned long long t0[4096], t1[4096];
    int n = 0;
    while (n < 4096 && fscanf(f, "%llu %llu", &t0[n], &t1[n]) == 2)
        n++;
    fclose(f);
    assert_true(n >= 8);
    int overlaps = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j && t0[i] <= t0[j] && t0[j] < t1[i])
                overlaps++;
    print_message("%d holdings by 4 processes, %d overlaps\n", n, overlaps);
    assert_int_equal(overlaps, 0);
}

/* Released, the lease's inode waits as the spare and the next taker reuses
 * it (no new inode); a FIFO planted as the spare is removed, not waited on. */
static void test_spare_reused(void **state)
{
    (void)state;
    kvs_lease a, b;
    kvs__lease_init(&a, dir, 30, "a");
    kvs__lease_init(&b, dir, 30, "b");
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    char lease[4200], spare[4200];
    snprintf(lease, sizeof lease, "%s/.kvstash/collector.lease", dir);
    snprintf(spare, sizeof spare, "%s/.kvstash/collector.lease.spare", dir);
    struct stat held;
    assert_int_equal(stat(lease, &held), 0);
    kvs__lease_release(&a);
    struct stat st;
    assert_int_equal(stat(spare, &st), 0);
    assert_int_equal(st.st_ino, held.st_ino);
    assert_int_equal(kvs__lease_try(&b), KVS_OK);
    assert_int_equal(stat(lease, &st), 0);
    assert_int_equal(st.st_ino, held.st_ino); /* the same inode, again */
    kvs__lease_release(&b);
    unlink(spare);
    assert_int_equal(mkfifo(spare, 0644), 0);
    assert_int_equal(kvs__lease_try(&a), KVS_OK);
    kvs__lease_release(&a);
    assert_int_equal(stat(spare, &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exclusive_and_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewal_keeps_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_by_observation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_skew_is_harmless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandoned_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkilled_holder_same_machine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkilled_holder_elsewhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_four_processes_never_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spare_reused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
