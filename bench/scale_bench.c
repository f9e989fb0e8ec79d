/*
 * scale_bench.c - kvstash at fleet scale: a store of up to millions of
 * chunk files, a newly opened engine's first lookup, lookup latency as the
 * store grows, and the time to collect 10% of it.
 *
 * The store is filled by a generator that writes valid chunk files with the
 * library's own store functions (temporary file, publish) on several
 * threads, in a small geometry (1 layer x 1 KV head x 16 dims fp16, 16
 * tokens per chunk: 8 KiB files).  At each size the benchmark opens a new
 * engine and asks it about prompts whose chunks exist (discovered on the
 * store: one stat each) and about absent ones, and prints each figure beside
 * its ceiling measured in the same run: a bare lstat of the same kind of
 * path for a lookup, a bare readdir + fstatat walk for the collector's walk,
 * a bare unlink for its evictions.  It then times a collection of 10% of
 * the store through the public API (kvs_admin_gc).
 *
 *   kvstash_scale_bench --dir DIR [--steps 10000,100000,1000000]
 *                       [--threads N] [--lookups N] [--keep] [--check]
 *
 * --check turns the requirements into an exit status (1 on a
 * violation): the first lookup served within 1 s of open, every stored
 * chunk found, and the collection leaving 90% of the store.  How flat
 * lookups stay is printed, not checked: under a loaded test run the
 * machine's noise is larger than the effect.
 */
#include "chunk_file.h"
#include "checksum.h"
#include "collector.h"
#include "config.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 16
#define MISS_BASE 300000000u

static const kvs_namespace bench_ns = {.model = "bench/scale", .dtype = KVS_DTYPE_FP16,
                                       .num_layers = 1, .num_kv_heads = 1, .head_dim = 16,
                                       .layout = KVS_LAYOUT_MHA, .world_size = 1};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void prompt_tokens(uint64_t i, uint32_t *t)
{
    for (int j = 0; j < CHUNK; j++)
        t[j] = (uint32_t)(i * CHUNK + (uint64_t)j) ^ 0x5bd1e995u;
}

static void prompt_key(uint64_t i, uint8_t *key)
{
    uint32_t t[CHUNK];
    prompt_tokens(i, t);
    kvs__chunk_key(NULL, t, CHUNK, key);
}

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- the generator ------------------------------------------------------- */

typedef struct gen {
    kvs_fstore *store;
    const kvs_ns *ns;
    uint64_t next, end;      /* chunks [next, end) to write (atomic next) */
    uint64_t failed;
} gen;

static void *gen_thread(void *arg)
{
    gen *g = arg;
    uint8_t *buf = aligned_alloc(4096, 8192);
    for (;;) {
        uint64_t i = __atomic_fetch_add(&g->next, 64, __ATOMIC_RELAXED);
        if (i >= g->end)
            break;
        uint64_t stop = i + 64 < g->end ? i + 64 : g->end;
        for (; i < stop; i++) {
            uint8_t key[KVS_KEY_BYTES];
            prompt_key(i, key);
            memset(buf, 0, 8192);
            for (int b = 0; b < 1024; b++)
                buf[4096 + b] = (uint8_t)(i * 31 + (uint64_t)b);
            kvs_chunk_header h;
            kvs__header_init(&h, g->ns, key, CHUNK);
            h.segment_sums[0] = kvs__checksum(buf + 4096, 4096);
            kvs__header_encode(&h, buf);
            uint64_t suffix;
            int fd = kvs__store_create_temp(g->store, key, &suffix, NULL);
            if (fd < 0 || pwrite(fd, buf, 8192, 0) != 8192 || close(fd) != 0 ||
                kvs__store_publish(g->store, key, suffix) < 0) {
                __atomic_fetch_add(&g->failed, 1, __ATOMIC_RELAXED);
                if (fd >= 0)
                    kvs__store_discard(g->store, key, suffix);
            }
        }
    }
    free(buf);
    return NULL;
}

static int generate(kvs_fstore *s, const kvs_ns *ns, uint64_t from, uint64_t to, int threads)
{
    gen g = {.store = s, .ns = ns, .next = from, .end = to};
    pthread_t tid[64];
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, gen_thread, &g);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double dt = now_s() - t0;
    printf("  generated chunks %" PRIu64 "..%" PRIu64 " in %.1f s (%.0f files/s, %d threads)%s\n",
           from, to, dt, (double)(to - from) / dt, threads, g.failed ? " WITH FAILURES" : "");
    fflush(stdout);
    return g.failed ? -1 : 0;
}

/* ---- ceilings ---------------------------------------------------------------- */

typedef struct lat {
    double p50, p99, max, mean;
} lat;

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static lat summarize(double *v, size_t n)
{
    lat l = {0};
    if (!n)
        return l;
    qsort(v, n, sizeof *v, dcmp);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    l.p50 = v[n / 2];
    l.p99 = v[(size_t)((double)n * 0.99)];
    l.max = v[n - 1];
    l.mean = sum / (double)n;
    return l;
}

/* A bare lstat of present (or absent) chunk paths: what one lookup must
 * do at least. */
static lat bare_stat(kvs_fstore *s, uint64_t count, size_t n, bool present, uint64_t seed)
{
    double *v = malloc(n * sizeof *v);
    uint64_t r = seed;
    for (size_t k = 0; k < n; k++) {
        uint64_t i = present ? rng(&r) % count : MISS_BASE + rng(&r) % 100000000u;
        uint8_t key[KVS_KEY_BYTES];
        char path[KVS_PATH_MAX];
        prompt_key(i, key);
        kvs__store_chunk_path(s, key, path);
        struct stat st;
        double t0 = now_s();
        lstat(path, &st);
        v[k] = now_s() - t0;
    }
    lat l = summarize(v, n);
    free(v);
    return l;
}

/* readdir + fstatat of every file, one thread: the least a walk costs. */
static uint64_t bare_walk_dir(int dfd, int depth)
{
    DIR *d = fdopendir(dfd);
    if (!d)
        return 0;
    uint64_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 3) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY);
            if (sub >= 0)
                n += bare_walk_dir(sub, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static double bare_walk(const char *dir, uint64_t *files)
{
    double t0 = now_s();
    *files = bare_walk_dir(open(dir, O_RDONLY | O_DIRECTORY), 0);
    return now_s() - t0;
}

/* Seconds per lstat + unlink of a chunk file of the store, on n files at
 * random among the newest 90% (the ones a 10% collection leaves). */
static double bare_unlink_chunks(kvs_fstore *s, uint64_t count, int n)
{
    uint64_t r = 0xfeedfacecafebeefull;
    double total = 0;
    int done = 0;
    for (int k = 0; k < n; k++) {
        uint64_t i = count / 10 + rng(&r) % (count - count / 10);
        uint8_t key[KVS_KEY_BYTES];
        char path[KVS_PATH_MAX];
        prompt_key(i, key);
        kvs__store_chunk_path(s, key, path);
        struct stat st;
        double t0 = now_s();
        if (lstat(path, &st) == 0 && unlink(path) == 0) {
            total += now_s() - t0;
            done++;
        }
    }
    return done ? total / done : 0;
}

/* ---- the engine's side ---------------------------------------------------------- */

typedef struct lookups {
    double open_s, first_s;   /* open; open until the first lookup returned */
    lat hit, miss;
    uint64_t found, asked;
} lookups;

static int measure_lookups(const kvs_config *cfg, uint64_t count, size_t n, uint64_t seed,
                           double settle_s, lookups *out)
{
    memset(out, 0, sizeof *out);
    uint32_t t[CHUNK];
    uint64_t r = seed;
    uint64_t first = rng(&r) % count;
    prompt_tokens(first, t);
    double t0 = now_s();
    kvs_engine *e = NULL;
    if (kvs_engine_open(cfg, &bench_ns, &e) != KVS_OK) {
        fprintf(stderr, "engine open: %s\n", kvs_last_error());
        return -1;
    }
    out->open_s = now_s() - t0;
    size_t hit = 0;
    kvs_lookup(e, t, CHUNK, &hit);
    out->first_s = now_s() - t0;
    out->found += hit == CHUNK;
    out->asked++;
    if (settle_s > 0) { /* let the engine's background collector start */
        struct timespec ts = {(time_t)settle_s, (long)((settle_s - (double)(time_t)settle_s) * 1e9)};
        nanosleep(&ts, NULL);
    }
    double *vh = malloc(n * sizeof *vh), *vm = malloc(n * sizeof *vm);
    for (size_t k = 0; k < n; k++) {
        prompt_tokens(rng(&r) % count, t);
        double a = now_s();
        kvs_lookup(e, t, CHUNK, &hit);
        vh[k] = now_s() - a;
        out->found += hit == CHUNK;
        out->asked++;
        prompt_tokens(MISS_BASE + rng(&r) % 100000000u, t);
        a = now_s();
        kvs_lookup(e, t, CHUNK, &hit);
        vm[k] = now_s() - a;
    }
    out->hit = summarize(vh, n);
    out->miss = summarize(vm, n);
    free(vh);
    free(vm);
    kvs_engine_close(e);
    return 0;
}

static void usage_path(const char *dir, char *buf, size_t len)
{
    snprintf(buf, len, "%s/.kvstash/usage.json", dir);
}

static int parse_steps(const char *s, uint64_t *steps, int max)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save))
        steps[n++] = strtoull(tok, NULL, 10);
    free(copy);
    return n;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *steps_arg = "10000,100000,1000000";
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    size_t nlookups = 2000;
    bool keep = false, check = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps_arg = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lookups") && i + 1 < argc)
            nlookups = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--keep"))
            keep = true;
        else if (!strcmp(argv[i], "--check"))
            check = true;
        else {
            fprintf(stderr, "usage: %s --dir DIR [--steps 10000,100000,1000000] [--threads N] "
                            "[--lookups N] [--keep] [--check]\n", argv[0]);
            return 2;
        }
    }
    if (!dir || threads < 1 || threads > 64 || nlookups < 10) {
        fprintf(stderr, "%s: --dir is required (threads 1..64, lookups >= 10)\n", argv[0]);
        return 2;
    }
    uint64_t steps[16];
    int nsteps = parse_steps(steps_arg, steps, 16);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        perror(dir);
        return 2;
    }
    kvs_config *cfg = NULL;
    kvs_config_new(&cfg);
    kvs_config_set(cfg, "weka_path", dir);
    kvs_config_set(cfg, "chunk_size", "16");
    kvs_config_set(cfg, "local_cpu", "false");
    kvs_config_set(cfg, "use_direct_io", "false");
    kvs_config_set(cfg, "min_free_space", "0");
    kvs_config_set(cfg, "log_level", "warning");
    kvs_ns ns;
    kvs_fstore store;
    if (kvs__ns_init(&ns, &bench_ns, 16, NULL) || kvs__store_open(&store, cfg, &ns)) {
        fprintf(stderr, "cannot open the store in %s: %s\n", dir, kvs_last_error());
        return 3;
    }
    printf("kvstash scale benchmark: %s, 8 KiB chunk files (1 layer x 1 head x 16 dims fp16, "
           "16 tokens), %zu lookups per size\n", dir, nlookups);
    int bad = 0;
    uint64_t have = 0;
    lat first_hit = {0}, last_hit = {0};
    for (int s = 0; s < nsteps; s++) {
        uint64_t n = steps[s];
        printf("\n== %" PRIu64 " chunk files\n", n);
        if (n > have && generate(&store, &ns, have, n, threads) != 0)
            bad = 1;
        have = n > have ? n : have;

        /* The collector's measurement pass, and a bare walk as its ceiling. */
        kvs_admin *admin = NULL;
        kvs_admin_open(cfg, &admin);
        uint64_t walked = 0;
        double bw = bare_walk(dir, &walked);
        bw = fmin(bw, bare_walk(dir, &walked)); /* warm, like the pass after it */
        kvs_gc_options measure = {.lease_wait_ms = 60000};
        kvs_gc_report mr;
        double t0 = now_s();
        if (kvs_admin_gc(admin, &measure, &mr) != KVS_OK) {
            fprintf(stderr, "gc: %s\n", kvs_last_error());
            return 3;
        }
        double mt = now_s() - t0;
        printf("  collector measurement pass: %.2f s for %" PRIu64 " chunks | ceiling: bare "
               "readdir+fstatat walk %.2f s (%" PRIu64 " files) | ratio %.2f\n",
               mt, mr.chunks_before, bw, walked, mt / bw);

        /* A restart: a new engine on a measured store. */
        lookups L;
        if (measure_lookups(cfg, n, nlookups, 0x9e3779b97f4a7c15ull ^ n, 0, &L) != 0)
            return 3;
        lat sh = bare_stat(&store, n, nlookups, true, 77 + n);
        lat sm = bare_stat(&store, n, nlookups, false, 99 + n);
        printf("  restart: engine open %.1f ms, first lookup served %.1f ms after open "
               "(target 1000 ms)\n", L.open_s * 1e3, L.first_s * 1e3);
        printf("  lookup, chunk present: p50 %.1f us, p99 %.1f us, mean %.1f us | ceiling: "
               "bare lstat p50 %.1f us, p99 %.1f us | ratio p50 %.2f\n",
               L.hit.p50 * 1e6, L.hit.p99 * 1e6, L.hit.mean * 1e6, sh.p50 * 1e6, sh.p99 * 1e6,
               L.hit.p50 / sh.p50);
        printf("  lookup, chunk absent:  p50 %.1f us, p99 %.1f us, mean %.1f us | ceiling: "
               "bare lstat p50 %.1f us, p99 %.1f us | ratio p50 %.2f\n",
               L.miss.p50 * 1e6, L.miss.p99 * 1e6, L.miss.mean * 1e6, sm.p50 * 1e6,
               sm.p99 * 1e6, L.miss.p50 / sm.p50);
        printf("  found %" PRIu64 " of %" PRIu64 " stored chunks asked for\n", L.found, L.asked);
        if (L.found != L.asked || L.first_s > 1.0)
            bad |= check;
        if (s == 0)
            first_hit = L.hit;
        last_hit = L.hit;

        /* The worst restart: no measurement on the store, so the new
         * engine's collector walks it in the background while it serves. */
        char up[4200];
        usage_path(dir, up, sizeof up);
        unlink(up);
        lookups B;
        measure_lookups(cfg, n, nlookups, 0x1234567ull ^ n, 0.5, &B);
        struct stat st;
        bool measured = stat(up, &st) == 0;
        printf("  restart on an unmeasured store, lookups 0.5 s after open while the engine's "
               "collector walks it in the background (walk %s by the end): first lookup %.1f ms; "
               "present p50 %.1f us, p99 %.1f us; absent p50 %.1f us, p99 %.1f us\n",
               measured ? "finished" : "still running", B.first_s * 1e3,
               B.hit.p50 * 1e6, B.hit.p99 * 1e6, B.miss.p50 * 1e6, B.miss.p99 * 1e6);
        if (B.found != B.asked || B.first_s > 1.0)
            bad |= check;
        if (!measured)
            kvs_admin_gc(admin, &measure, &mr); /* leave it measured */
        kvs_admin_close(admin);
        fflush(stdout);
    }

    /* Collecting 10% of the largest store: the least recently used go. */
    kvs_admin *admin = NULL;
    kvs_admin_open(cfg, &admin);
    kvs_usage u;
    kvs_admin_usage(admin, 0, &u);
    /* Let the generator's writeback finish first: the collection should
     * not be timed against a disk still busy with it. */
    double ts0 = now_s();
    sync();
    printf("\n  (sync of the generated store: %.1f s)\n", now_s() - ts0);
    uint64_t walked = 0;
    double bw = bare_walk(dir, &walked);
    bw = fmin(bw, bare_walk(dir, &walked));
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = u.used_bytes / 10 * 9,
                        .lease_wait_ms = 60000};
    kvs_gc_report r;
    double t0 = now_s();
    kvs_status st = kvs_admin_gc(admin, &o, &r);
    double dt = now_s() - t0;
    kvs_admin_close(admin);
    if (st) {
        fprintf(stderr, "gc: %s\n", kvs_last_error());
        return 3;
    }
    /* The ceiling of an eviction: lstat + unlink of chunk files of this
     * store in the same state, chosen at random (the newest 90% remain). */
    double per_unlink = bare_unlink_chunks(&store, have, 2000);
    double ceiling = bw + per_unlink * (double)r.files_removed;
    printf("\n== collecting 10%% of %" PRIu64 " chunks (%.2f GB)\n", r.chunks_before,
           (double)r.used_before / 1e9);
    printf("  evicted %" PRIu64 " least recently used chunks (%.3f GB) in %.2f s: walk %.2f s, "
           "eviction %.2f s (%u pass%s)\n",
           r.files_removed, (double)r.bytes_removed / 1e9, dt, r.scan_seconds, r.evict_seconds,
           r.passes, r.passes == 1 ? "" : "es");
    printf("  ceiling: bare walk %.2f s + bare lstat+unlink of a chunk file %.1f us x %" PRIu64
           " = %.2f s | ratio %.2f\n",
           bw, per_unlink * 1e6, r.files_removed, ceiling, dt / ceiling);
    double kept = (double)r.used_after / (double)r.used_before;
    printf("  the store now holds %.1f%% of what it held\n", 100 * kept);
    if (nsteps > 1)
        printf("  lookup p50 from the smallest store to the largest: x%.2f\n",
               last_hit.p50 / first_hit.p50);
    if (check) {
        if (kept < 0.89 || kept > 0.901)
            bad = 1;
        printf("\ncheck: %s\n", bad ? "FAILED" : "ok");
    }
    kvs__store_close(&store);
    kvs__ns_clear(&ns);
    kvs_config_free(cfg);
    fflush(stdout);
    if (!keep) {
        char cmd[4300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    return bad;
}
