/*
 * test_soak.c - eight processes on one store folder for a bounded time
 * (issue 5, concurrency): each mixes stores, retrieves, lookups, removals
 * (kvs_remove), collections (kvs_admin_gc) and engine restarts, under a
 * max_store_size far below what they store, so the engines' collectors
 * evict all along.  Every byte of every hit is checked.  At the end every
 * chunk file verifies, and the store is back under its cap.
 *
 * KVS_SOAK_SECONDS sets the time (default 10; the long run in
 * docs/reliability.md is 60).
 */
#include "fault_util.h"
#include "test_config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROCS 8
#define CHUNK 32
#define NCH 12
#define NTOK (NCH * CHUNK)
#define PROMPTS 96
#define CAP_GB "0.04"                 /* 40 MB: about 150 chunks of 256 KiB */

static const kvs_namespace ns = {.model = "soak/model", .dtype = KVS_DTYPE_BF16,
                                 .num_layers = 4, .num_kv_heads = 4, .head_dim = 128,
                                 .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};

enum { OP_STORE, OP_RETRIEVE, OP_LOOKUP, OP_REMOVE, OP_GC, OP_RESTART, NOPS };
static const char *op_names[NOPS] = {"store", "retrieve", "lookup", "remove", "gc", "restart"};

typedef struct shared {
    atomic_ullong ops[NOPS];
    atomic_ullong stored_chunks, hit_tokens, removed, evicted, bad_rows, errors;
    /* from the engines' stats */
    atomic_ullong engine_evictions, collections, refused_nospace, miss_vanished, miss_absent;
    char first_error[256];
    atomic_flag error_taken;
} shared;

static char dir[4096];
static shared *sh;

static kvs_config *config(void)
{
    return tu_config(dir, "32", "2", "use_direct_io", "false", "negative_cache_ms", "50",
                     "max_store_size", CAP_GB, "min_free_space", "0", "collect_interval_s", "1",
                     "access_interval_s", "0", "tmp_grace_s", "5", "lease_ttl_s", "2", NULL);
}

static void error(const char *what, kvs_status st)
{
    atomic_fetch_add(&sh->errors, 1);
    if (!atomic_flag_test_and_set(&sh->error_taken))
        snprintf(sh->first_error, sizeof sh->first_error, "%s: %s: %s", what, kvs_strerror(st),
                 kvs_last_error());
}

/* Prompts share prefixes in groups of 8, so removals and evictions of one
 * prompt's chunks cut others' prefixes too. */
static void prompt_tokens(uint32_t *t, unsigned p)
{
    fu_tokens(t, NTOK, 5000 + p, p % 8, (size_t)(p % 3) * 4 * CHUNK);
}

static void close_engine(kvs_engine *e)
{
    kvs_stats s;
    if (kvs_engine_stats(e, &s, sizeof s) == KVS_OK) {
        atomic_fetch_add(&sh->engine_evictions, s.evictions);
        atomic_fetch_add(&sh->collections, s.collections);
        atomic_fetch_add(&sh->refused_nospace, s.store_failed_nospace);
        atomic_fetch_add(&sh->miss_vanished, s.miss_vanished);
        atomic_fetch_add(&sh->miss_absent, s.miss_absent);
    }
    kvs_engine_close(e);
}

static void worker(int id, double seconds)
{
    uint64_t r = (uint64_t)id * 0x9e3779b97f4a7c15ull + (uint64_t)time(NULL);
    kvs_config *cfg = config();
    kvs_engine *e = NULL;
    kvs_status st = kvs_engine_open(cfg, &ns, &e);
    if (st) {
        error("engine open", st);
        exit(1);
    }
    fu_kv kv;
    if (fu_kv_init(&kv, &ns, NTOK))
        exit(1);
    uint32_t t[NTOK];
    double end = fu_now_ms() + seconds * 1e3;
    while (fu_now_ms() < end) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        unsigned p = (unsigned)(r >> 32) % PROMPTS, dice = (unsigned)(r % 100);
        int op = dice < 40 ? OP_STORE : dice < 80 ? OP_RETRIEVE : dice < 90 ? OP_LOOKUP
               : dice < 96 ? OP_REMOVE : dice < 98 ? OP_GC : OP_RESTART;
        prompt_tokens(t, p);
        atomic_fetch_add(&sh->ops[op], 1);
        if (op == OP_STORE) {
            kvs_op_result res;
            st = fu_store(e, &kv, t, &res);
            if (st)
                error("store", st);
            else
                atomic_fetch_add(&sh->stored_chunks, res.chunks_done);
        } else if (op == OP_RETRIEVE) {
            size_t got = 0, bad = 0;
            st = fu_retrieve(e, &kv, t, &got, &bad);
            if (st) {
                error("retrieve", st);
                continue;
            }
            atomic_fetch_add(&sh->hit_tokens, got);
            atomic_fetch_add(&sh->bad_rows, bad);
        } else if (op == OP_LOOKUP) {
            size_t hit;
            if ((st = kvs_lookup(e, t, NTOK, &hit)))
                error("lookup", st);
        } else if (op == OP_REMOVE) {
            size_t removed = 0;
            if ((st = kvs_remove(e, t, NTOK, &removed)))
                error("remove", st);
            atomic_fetch_add(&sh->removed, removed);
        } else if (op == OP_GC) {
            kvs_admin *a;
            if ((st = kvs_admin_open(cfg, &a))) {
                error("admin open", st);
                continue;
            }
            /* Either a collection as the engines run it, or down to a
             * random size; another collector may hold the lease: BUSY. */
            kvs_gc_options o = {.lease_wait_ms = 200};
            if (r & 1) {
                o.flags = KVS_GC_TO_SIZE;
                o.to_bytes = (r >> 8) % 30000000;
            }
            kvs_gc_report g;
            st = kvs_admin_gc(a, &o, &g);
            if (st && st != KVS_ERR_BUSY)
                error("gc", st);
            else if (!st)
                atomic_fetch_add(&sh->evicted, g.files_removed);
            kvs_admin_close(a);
        } else {
            close_engine(e);
            if ((st = kvs_engine_open(cfg, &ns, &e))) {
                error("engine reopen", st);
                exit(1);
            }
        }
    }
    close_engine(e);
    kvs_config_free(cfg);
    fu_kv_free(&kv);
    exit(0);
}

int main(void)
{
    double seconds = getenv("KVS_SOAK_SECONDS") ? atof(getenv("KVS_SOAK_SECONDS")) : 10;
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/kvs-soak-XXXXXX", tmp);
    if (!mkdtemp(dir))
        return 1;
    kvs_set_log_level(KVS_LOG_ERROR);
    printf("soak: %d processes, %.0f s, store %s capped at %s GB\n", PROCS, seconds, dir, CAP_GB);
    fflush(stdout);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    memset(sh, 0, sizeof *sh);
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            worker(i, seconds);
    }
    int failures = 0;
    for (int i = 0; i < PROCS; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) {
            printf("FAIL: process %d ended with status 0x%x\n", i, status);
            failures++;
        }
    }
    printf("ops:");
    for (int i = 0; i < NOPS; i++)
        printf(" %s %llu", op_names[i], (unsigned long long)sh->ops[i]);
    printf("\nchunks stored %llu, removed %llu, evicted by gc calls %llu; tokens hit %llu, wrong "
           "rows %llu, errors %llu %s\n",
           (unsigned long long)sh->stored_chunks, (unsigned long long)sh->removed,
           (unsigned long long)sh->evicted, (unsigned long long)sh->hit_tokens,
           (unsigned long long)sh->bad_rows, (unsigned long long)sh->errors, sh->first_error);
    printf("engines: %llu collections evicted %llu chunks, %llu stores refused at the cap; "
           "misses: %llu vanished (removed or evicted under a reader), %llu absent\n",
           (unsigned long long)sh->collections, (unsigned long long)sh->engine_evictions,
           (unsigned long long)sh->refused_nospace, (unsigned long long)sh->miss_vanished,
           (unsigned long long)sh->miss_absent);
    if (sh->bad_rows || sh->errors) {
        printf("FAIL: wrong bytes or errors\n");
        failures++;
    }
    if (!sh->hit_tokens || !sh->stored_chunks) {
        printf("FAIL: the soak did not exercise anything\n");
        failures++;
    }
    fu_store_report rep;
    fu_check_store(dir, &rep);
    /* Back under the cap after one collection as the engines run it. */
    kvs_config *cfg = config();
    kvs_admin *a;
    kvs_usage u;
    kvs_gc_report g;
    kvs_gc_options o = {.lease_wait_ms = 10000};
    if (kvs_admin_open(cfg, &a) || kvs_admin_gc(a, &o, &g) || kvs_admin_usage(a, 1, &u))
        return 1;
    kvs_admin_close(a);
    kvs_engine *e;
    if (kvs_engine_open(cfg, &ns, &e))
        return 1;
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    kvs_engine_close(e);
    kvs_config_free(cfg);
    printf("store: %zu chunk files (%.1f MB; %zu bad), %zu temporary files; after a "
           "collection %.1f MB (cap %.1f MB, high watermark %.1f MB)\n",
           rep.finals, (double)rep.final_bytes / 1e6, rep.bad_finals, rep.temps,
           (double)u.used_bytes / 1e6, (double)u.max_bytes / 1e6, (double)u.high_bytes / 1e6);
    if (rep.bad_finals || rep.others) {
        printf("FAIL: %s\n", rep.first_bad);
        failures++;
    }
    if (u.used_bytes > u.high_bytes) {
        printf("FAIL: over the high watermark after a collection\n");
        failures++;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!failures)
        (void)!system(cmd);
    printf(failures ? "%d checks failed\n" : "all checks passed\n", failures);
    return failures ? 1 : 0;
}
