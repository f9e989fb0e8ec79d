/*
 * test_fuse_hang.c - kvstash on a mount that turns slow, then hangs.
 *
 * A real FUSE filesystem (slowfs, in this folder) passes through to a
 * backing folder and delays or blocks calls on command.  With io_timeout_ms
 * 300 and store_timeout_ms 800, on that mount:
 *
 *   - while every call hangs: retrieves and lookups come back by their
 *     deadline as misses, stores by theirs; a CPU-tier hit is still served
 *     in full; an engine on a healthy folder works; after failure_threshold
 *     deadlines the store is marked unhealthy and requests stop waiting at
 *     all; an engine open on the hung mount fails by its deadline; closing
 *     an engine with workers stuck in the mount completes;
 *   - while calls are slow: a retrieve returns the verified prefix that
 *     arrived by its deadline;
 *   - once the mount answers again: the stuck workers drain, a new engine
 *     hits in full, and the engine that was marked unhealthy serves hits
 *     again after its cool-down.
 *
 * Every loaded byte is verified.  Skips (77) only where FUSE cannot run: no
 * /dev/fuse, or not root.
 */
#include "fault_util.h"
#include "test_config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 300
#define STORE_TIMEOUT_MS 800
#define SLACK_MS 250
#define CHUNK 256
#define NCH 4
#define NTOK (NCH * CHUNK)

static int failures;
static char base[4096], backing[4200], mnt[4200], ctl[4200], healthy[4200];
static pid_t daemon_pid = -1;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            failures++;                                                     \
        }                                                                   \
    } while (0)

/* 1 MiB chunks: 4 layers x 2 planes x 256 tokens x 512-byte rows. */
static const kvs_namespace ns = {.model = "fuse/model", .dtype = KVS_DTYPE_BF16,
                                 .num_layers = 4, .num_kv_heads = 2, .head_dim = 128,
                                 .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};

static void skip(const char *why)
{
    printf("SKIP: %s\n", why);
    exit(77);
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Sends a command to slowfs and waits until it is in force. */
static void control(const char *cmd)
{
    char ack[4300];
    snprintf(ack, sizeof ack, "%s.ack", ctl);
    int before = count_lines(ack);
    int fd = open(ctl, O_WRONLY);
    if (fd < 0 || write(fd, cmd, strlen(cmd)) < 0 || write(fd, "\n", 1) < 0) {
        fprintf(stderr, "cannot send \"%s\" to slowfs: %s\n", cmd, strerror(errno));
        exit(1);
    }
    close(fd);
    double until = fu_now_ms() + 5000;
    while (count_lines(ack) == before && fu_now_ms() < until)
        usleep(2000);
    if (count_lines(ack) == before) {
        fprintf(stderr, "slowfs did not acknowledge \"%s\"\n", cmd);
        exit(1);
    }
    printf("slowfs: %s\n", cmd);
}

static bool mounted(void)
{
    struct statfs st;
    return statfs(mnt, &st) == 0 && st.f_type == 0x65735546; /* FUSE_SUPER_MAGIC */
}

static void cleanup(void)
{
    if (daemon_pid > 0) {
        int fd = open(ctl, O_WRONLY | O_NONBLOCK);
        if (fd >= 0) {
            (void)!write(fd, "pass\n", 5);
            close(fd);
        }
        umount2(mnt, MNT_DETACH);
        int status;
        for (int i = 0; i < 200 && waitpid(daemon_pid, &status, WNOHANG) == 0; i++)
            usleep(10000);
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, &status, 0);
        daemon_pid = -1;
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (base[0])
        (void)!system(cmd);
}

static kvs_config *config(const char *path, bool cpu)
{
    return tu_config(path, "256", "2", "local_cpu", cpu ? "true" : "false", "io_timeout_ms", "300",
                     "store_timeout_ms", "800", "failure_threshold", "4", "negative_cache_ms", "0",
                     NULL);
}

static kvs_engine *open_engine(const char *path, bool cpu)
{
    kvs_config *cfg = config(path, cpu);
    kvs_engine *e = NULL;
    kvs_status st = kvs_engine_open(cfg, &ns, &e);
    kvs_config_free(cfg);
    if (st) {
        fprintf(stderr, "engine open on %s: %s\n", path, kvs_last_error());
        cleanup();
        exit(1);
    }
    return e;
}

static fu_kv kvbuf;

/* Retrieves prompt `seed`; checks every loaded byte; returns the tokens
 * loaded and the time taken (ms). */
static size_t retrieve(kvs_engine *e, uint32_t seed, double *ms)
{
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, seed, 0, 0);
    fu_kv_poison(&kvbuf);
    size_t got = 0;
    double t0 = fu_now_ms();
    kvs_status st = kvs_retrieve(e, t, NTOK, &kvbuf.kv, &got);
    *ms = fu_now_ms() - t0;
    CHECK(st == KVS_OK, "retrieve: %s", kvs_last_error());
    CHECK(got % CHUNK == 0, "%zu tokens is not whole chunks", got);
    CHECK(fu_kv_bad_rows(&kvbuf, t, got) == 0, "WRONG BYTES among %zu tokens", got);
    return got;
}

static kvs_op_result store(kvs_engine *e, uint32_t seed, double *ms)
{
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, seed, 0, 0);
    fu_kv_fill(&kvbuf, t, NTOK);
    kvs_op *op = NULL;
    kvs_op_result r = {0};
    double t0 = fu_now_ms();
    kvs_status st = kvs_store(e, t, NTOK, &kvbuf.kv, &op);
    if (!st)
        st = kvs_op_wait(op, -1, &r);
    kvs_op_free(op);
    *ms = fu_now_ms() - t0;
    CHECK(st == KVS_OK, "store: %s", kvs_last_error());
    return r;
}

static size_t lookup(kvs_engine *e, uint32_t seed, double *ms)
{
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, seed, 0, 0);
    size_t hit = 0;
    double t0 = fu_now_ms();
    kvs_status st = kvs_lookup(e, t, NTOK, &hit);
    *ms = fu_now_ms() - t0;
    CHECK(st == KVS_OK, "lookup: %s", kvs_last_error());
    return hit;
}

static kvs_stats stats(kvs_engine *e)
{
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    return s;
}

int main(int argc, char **argv)
{
    const char *slowfs = argc > 1 ? argv[1] : KVS_SLOWFS;
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        skip("no usable /dev/fuse here (the fuse module is not loaded, or this container "
             "has no FUSE device)");
    if (geteuid() != 0)
        skip("not root: mounting the test filesystem needs root (or a setuid fusermount3 "
             "with user_allow_other)");
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(base, sizeof base, "%s/kvs-fuse-XXXXXX", tmp);
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(backing, sizeof backing, "%s/backing", base);
    snprintf(mnt, sizeof mnt, "%s/mnt", base);
    snprintf(ctl, sizeof ctl, "%s/ctl", base);
    snprintf(healthy, sizeof healthy, "%s/healthy", base);
    mkdir(backing, 0755);
    mkdir(mnt, 0755);
    mkdir(healthy, 0755);
    mkfifo(ctl, 0600);
    char log[4300];
    snprintf(log, sizeof log, "%s/slowfs.log", base);
    daemon_pid = fork();
    if (daemon_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(slowfs, slowfs, backing, mnt, ctl, (char *)NULL);
        _exit(127);
    }
    double until = fu_now_ms() + 10000;
    while (!mounted() && fu_now_ms() < until && waitpid(daemon_pid, NULL, WNOHANG) == 0)
        usleep(10000);
    if (!mounted()) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "cat '%s' >&2", log);
        (void)!system(cmd);
        fprintf(stderr, "FAIL: slowfs did not mount %s (FUSE should work here: /dev/fuse "
                        "exists and we are root)\n", mnt);
        daemon_pid = -1;
        cleanup();
        return 1;
    }
    printf("slowfs mounted at %s over %s\n", mnt, backing);
    if (fu_kv_init(&kvbuf, &ns, NTOK) != 0)
        return 1;

    double ms;
    uint32_t t5[NTOK];
    kvs_engine *a = open_engine(mnt, true);   /* CPU tier on */
    kvs_engine *b = open_engine(mnt, false);  /* store only */
    kvs_engine *h = open_engine(healthy, false);
    kvs_engine *d = open_engine(mnt, false);  /* to be closed while hung */

    /* Healthy: a stores prompt 1 (kept in its CPU tier too); b reads it. */
    kvs_op_result r = store(a, 1, &ms);
    CHECK(r.chunks_done == NCH, "store on the healthy mount wrote %u chunks", r.chunks_done);
    size_t got = retrieve(b, 1, &ms);
    CHECK(got == NTOK, "healthy retrieve loaded %zu tokens", got);
    printf("healthy mount: store %u chunks, retrieve %zu tokens in %.0f ms\n", r.chunks_done, got,
           ms);

    /* Slow: every data call waits; a retrieve returns the verified prefix
     * that arrived by its deadline.  A chunk here (1 MiB) is a header read
     * and one read per piece (host reads take up to 1 MiB a call), so on two
     * workers the four chunks take about six delays: 70 ms a call brings the
     * first chunk in about 140 ms and the last well after the 300 ms
     * deadline. */
    int delay = getenv("KVS_FUSE_DELAY_MS") ? atoi(getenv("KVS_FUSE_DELAY_MS")) : 70;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "delay %d data", delay);
    control(cmd);
    kvs_engine *b2 = open_engine(mnt, false);
    got = retrieve(b2, 1, &ms);
    printf("slow mount (%d ms per read): retrieve loaded %zu of %d tokens in %.0f ms "
           "(deadline %d ms)\n", delay, got, NTOK, ms, IO_TIMEOUT_MS);
    CHECK(ms < IO_TIMEOUT_MS + SLACK_MS, "slow retrieve took %.0f ms", ms);
    CHECK(got < NTOK, "%d ms per read: the whole prompt arrived", delay);
#ifndef __SANITIZE_THREAD__ /* ThreadSanitizer slows the reads down to nothing by then */
    CHECK(got > 0, "%d ms per read: nothing arrived by the deadline", delay);
#endif
    kvs_engine_close(b2);

    /* Hung. */
    control("block all");
    got = retrieve(b, 1, &ms);
    printf("hung mount: retrieve loaded %zu tokens in %.0f ms\n", got, ms);
    CHECK(got == 0, "hung retrieve loaded %zu", got);
    CHECK(ms < IO_TIMEOUT_MS + SLACK_MS, "hung retrieve took %.0f ms", ms);
    got = lookup(b, 2, &ms);
    printf("hung mount: lookup of an unknown prompt said %zu tokens in %.0f ms\n", got, ms);
    CHECK(got == 0 && ms < IO_TIMEOUT_MS + SLACK_MS, "hung lookup: %zu tokens, %.0f ms", got, ms);
    got = retrieve(a, 1, &ms);
    printf("hung mount: CPU-tier retrieve loaded %zu tokens in %.0f ms\n", got, ms);
    CHECK(got == NTOK && ms < 100, "CPU-tier hit on a hung mount: %zu tokens, %.0f ms", got, ms);
    r = store(h, 3, &ms);
    size_t hgot = retrieve(h, 3, &ms);
    printf("hung mount: an engine on a healthy folder stored %u chunks and loaded %zu tokens "
           "(%.0f ms)\n", r.chunks_done, hgot, ms);
    CHECK(r.chunks_done == NCH && hgot == NTOK, "healthy engine beside a hung one");
    r = store(b, 4, &ms);
    printf("hung mount: store waited %.0f ms (deadline %d ms): %u written, %u failed\n", ms,
           STORE_TIMEOUT_MS, r.chunks_done, r.chunks_failed);
    CHECK(ms < STORE_TIMEOUT_MS + SLACK_MS && r.chunks_done == 0, "hung store");
    /* Deadlines count as failures: after failure_threshold (4) the store is
     * marked unhealthy and requests stop waiting. */
    int tries = 0;
    double fast = 1e9;
    for (; tries < 10; tries++) {
        got = retrieve(b, 1, &ms);
        CHECK(got == 0 && ms < IO_TIMEOUT_MS + SLACK_MS, "hung retrieve %d: %zu, %.0f ms", tries,
              got, ms);
        if (ms < 50) {
            fast = ms;
            break;
        }
    }
    kvs_stats sb = stats(b);
    printf("hung mount: marked unhealthy after %d more retrieves; then a retrieve took %.1f ms "
           "(store_unhealthy %llu, miss_timeout %llu, miss_unhealthy %llu, "
           "store_failed_timeout %llu)\n",
           tries, fast, (unsigned long long)sb.store_unhealthy,
           (unsigned long long)sb.miss_timeout, (unsigned long long)sb.miss_unhealthy,
           (unsigned long long)sb.store_failed_timeout);
    CHECK(fast < 50 && sb.store_unhealthy == 1 && sb.miss_unhealthy > 0,
          "the hung store was never marked unhealthy");
    got = lookup(b, 1, &ms);
    CHECK(got == 0 && ms < 50, "unhealthy lookup: %zu tokens in %.0f ms", got, ms);
    /* Opening an engine on the hung mount fails by its deadline. */
    kvs_config *cfg = config(mnt, false);
    kvs_engine *c = NULL;
    double t0 = fu_now_ms();
    kvs_status st = kvs_engine_open(cfg, &ns, &c);
    ms = fu_now_ms() - t0;
    kvs_config_free(cfg);
    printf("hung mount: engine open returned %s in %.0f ms: %s\n", kvs_strerror(st), ms,
           kvs_last_error());
    CHECK(st == KVS_ERR_TIMEOUT && ms < STORE_TIMEOUT_MS + SLACK_MS, "engine open on a hung mount");
    if (st == KVS_OK)
        kvs_engine_close(c);
    /* Closing an engine whose workers are stuck, with a store pending,
     * completes: it waits store_timeout_ms for the stores, then 1 s for the
     * workers and 2 s for the collector, and leaves them behind. */
    fu_tokens(t5, NTOK, 5, 0, 0);
    fu_kv_fill(&kvbuf, t5, NTOK);
    kvs_op *op5 = NULL;
    CHECK(kvs_store(d, t5, NTOK, &kvbuf.kv, &op5) == KVS_OK, "store");
    kvs_op_free(op5);
    got = retrieve(d, 1, &ms);
    t0 = fu_now_ms();
    kvs_engine_close(d);
    ms = fu_now_ms() - t0;
    printf("hung mount: closing an engine with workers stuck in the mount took %.0f ms\n", ms);
    /* (store_timeout_ms for the stores, 1 s for the I/O threads, and up to
     * 2 s for the collector thread, also stuck in the mount.) */
    CHECK(ms < STORE_TIMEOUT_MS + 1000 + 2000 + SLACK_MS, "close took %.0f ms", ms);

    /* The mount answers again. */
    control("pass");
    kvs_engine *n = open_engine(mnt, false);
    got = retrieve(n, 1, &ms);
    printf("mount back: a new engine loaded %zu tokens in %.0f ms\n", got, ms);
    CHECK(got == NTOK, "after the hang: %zu tokens", got);
    /* b was marked unhealthy: after the cool-down (5 s) it tries again. */
    t0 = fu_now_ms();
    got = 0;
    while (got != NTOK && fu_now_ms() - t0 < 8000) {
        usleep(250000);
        got = retrieve(b, 1, &ms);
    }
    sb = stats(b);
    printf("mount back: the engine marked unhealthy loads %zu tokens again after %.1f s "
           "(store_unhealthy %llu)\n", got, (fu_now_ms() - t0) / 1e3,
           (unsigned long long)sb.store_unhealthy);
    CHECK(got == NTOK && sb.store_unhealthy == 0, "unhealthy engine never recovered");
    fu_store_report rep;
    fu_check_store(backing, &rep);
    printf("store after the run: %zu chunk files, all verified: %s; %zu temporary files\n",
           rep.finals, rep.bad_finals ? "NO" : "yes", rep.temps);
    CHECK(rep.bad_finals == 0 && rep.others == 0, "%s", rep.first_bad);
    kvs_engine_close(n);
    kvs_engine_close(b);
    kvs_engine_close(h);
    kvs_engine_close(a);
    fu_kv_free(&kvbuf);
    cleanup();
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
