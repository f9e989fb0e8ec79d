/*
 * test_crash.c - writers killed with SIGKILL at random points while readers
 * run (issue 5, crash consistency).
 *
 * Each of ROUNDS rounds starts a writer process that opens an engine and
 * stores prompts of many chunks (sharing prefixes with each other) until it
 * is killed with SIGKILL after a random 0..MAX_DELAY_MS: in engine open, in
 * a probe, while creating, filling, closing or publishing a temporary
 * file, anywhere.  Two reader processes meanwhile retrieve random prompts
 * and check every byte of every hit.  Afterwards:
 *
 *   - no reader ever saw a wrong byte;
 *   - every file under a final name verifies in full (no torn chunk was
 *     published), and a last pass of retrieves over every prompt verifies;
 *   - the temporary files the killed writers left are kept by a collection
 *     while younger than the grace period (they could be live writes), and
 *     all removed by a collection once older; nothing else is removed.
 *
 * KVS_CRASH_ROUNDS and KVS_CRASH_SEED override the defaults (200 rounds, a
 * seed from the clock, printed so a run can be repeated).
 */
#include "fault_util.h"
#include "test_config.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 32
#define NCH 24                     /* chunks per prompt */
#define NTOK (NCH * CHUNK)
#define PROMPTS 48                 /* prompt seeds the writers cycle through */
#define MAX_DELAY_MS 100
#define GRACE_MS 1500

/* 4 layers x 2 planes x 32 tokens x 1 KiB rows: 256 KiB chunks, 6 MiB a
 * prompt, so a writer is always in the middle of something. */
static const kvs_namespace ns = {.model = "crash/model", .dtype = KVS_DTYPE_BF16,
                                 .num_layers = 4, .num_kv_heads = 4, .head_dim = 128,
                                 .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};

typedef struct shared {
    atomic_bool stop;
    atomic_ullong retrieves, hit_tokens, bad_rows, errors;
} shared;

static char dir[4096];

static kvs_config *config(void)
{
    /* Through the page cache: a kill loses nothing written (only a power
     * loss could, which durable_writes covers), and writers get further. */
    return tu_config(dir, "32", "3", "negative_cache_ms", "0", "use_direct_io", "false", NULL);
}

/* Prompt p: its first (p % 4) * 6 chunks are shared with the other prompts
 * of its group, so a torn shared chunk would show in many prompts. */
static void prompt_tokens(uint32_t *t, unsigned p)
{
    fu_tokens(t, NTOK, 1000 + p, p % 7, (size_t)(p % 4) * 6 * CHUNK);
}

static void writer(unsigned first)
{
    kvs_config *cfg = config();
    kvs_engine *e;
    if (kvs_engine_open(cfg, &ns, &e) != KVS_OK)
        _exit(3);
    fu_kv kv;
    if (fu_kv_init(&kv, &ns, NTOK) != 0)
        _exit(3);
    uint32_t t[NTOK];
    for (unsigned i = 0;; i++) {
        prompt_tokens(t, (first + i) % PROMPTS);
        kvs_op_result r;
        fu_store(e, &kv, t, &r);
    }
}

static void sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void reader(shared *sh, unsigned seed)
{
    kvs_config *cfg = config();
    kvs_engine *e;
    if (kvs_engine_open(cfg, &ns, &e) != KVS_OK)
        exit(3);
    fu_kv kv;
    if (fu_kv_init(&kv, &ns, NTOK) != 0)
        exit(3);
    uint32_t t[NTOK];
    while (!atomic_load(&sh->stop)) {
        seed = seed * 1103515245u + 12345u;
        prompt_tokens(t, (seed >> 8) % PROMPTS);
        size_t got = 0, bad = 0;
        if (fu_retrieve(e, &kv, t, &got, &bad) != KVS_OK) {
            atomic_fetch_add(&sh->errors, 1);
            continue;
        }
        atomic_fetch_add(&sh->retrieves, 1);
        atomic_fetch_add(&sh->hit_tokens, got);
        atomic_fetch_add(&sh->bad_rows, bad);
        sleep_us(3000); /* leave the writers some of the machine's cores */
    }
    kvs_engine_close(e);
    kvs_config_free(cfg);
    fu_kv_free(&kv);
    exit(0);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

int main(void)
{
    int rounds = getenv("KVS_CRASH_ROUNDS") ? atoi(getenv("KVS_CRASH_ROUNDS")) : 200;
    rng_state = getenv("KVS_CRASH_SEED") ? strtoull(getenv("KVS_CRASH_SEED"), NULL, 0)
                                         : (uint64_t)time(NULL) * 2654435761u | 1;
    uint64_t seed0 = rng_state;
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/kvs-crash-XXXXXX", tmp);
    if (!mkdtemp(dir))
        return 1;
    kvs_set_log_level(KVS_LOG_ERROR);
    printf("crash test: %d rounds, seed 0x%llx, store %s\n", rounds, (unsigned long long)seed0,
           dir);
    fflush(stdout); /* before any fork */
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    memset(sh, 0, sizeof *sh);
    pid_t readers[2];
    for (int i = 0; i < 2; i++) {
        readers[i] = fork();
        if (readers[i] == 0)
            reader(sh, (unsigned)rnd());
    }
    int killed = 0, exited_early = 0;
    double delays = 0;
    double t0 = fu_now_ms();
    for (int r = 0; r < rounds; r++) {
        unsigned first = (unsigned)(rnd() % PROMPTS);
        uint64_t delay_us = rnd() % (MAX_DELAY_MS * 1000);
        pid_t w = fork();
        if (w == 0)
            writer(first);
        sleep_us(delay_us);
        delays += (double)delay_us / 1000.0;
        kill(w, SIGKILL);
        int status;
        waitpid(w, &status, 0);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            killed++;
        else
            exited_early++;
    }
    double dt = fu_now_ms() - t0;
    atomic_store(&sh->stop, true);
    int failures = 0;
    for (int i = 0; i < 2; i++) {
        int status;
        waitpid(readers[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("FAIL: reader %d ended with status 0x%x\n", i, status);
            failures++;
        }
    }
    printf("%d writers killed (mean delay %.1f ms, %d ended otherwise) in %.1f s; readers: %llu "
           "retrieves, %llu tokens hit, %llu wrong rows, %llu errors\n",
           killed, delays / rounds, exited_early, dt / 1e3,
           (unsigned long long)sh->retrieves, (unsigned long long)sh->hit_tokens,
           (unsigned long long)sh->bad_rows, (unsigned long long)sh->errors);
    if (sh->bad_rows || sh->errors || exited_early) {
        printf("FAIL: wrong bytes, errors, or a writer that did not die by SIGKILL\n");
        failures++;
    }
    /* Every published file verifies, and a last pass over every prompt. */
    fu_store_report rep;
    fu_check_store(dir, &rep);
    printf("store: %zu chunk files (%.1f MiB), %zu bad, %zu temporary files, %zu other files\n",
           rep.finals, (double)rep.final_bytes / 1048576.0, rep.bad_finals, rep.temps,
           rep.others);
    if (rep.bad_finals || rep.others) {
        printf("FAIL: %s\n", rep.first_bad);
        failures++;
    }
    kvs_config *cfg = config();
    kvs_engine *e;
    if (kvs_engine_open(cfg, &ns, &e) != KVS_OK)
        return 1;
    fu_kv kv;
    fu_kv_init(&kv, &ns, NTOK);
    uint32_t t[NTOK];
    size_t total = 0, bad = 0;
    for (unsigned p = 0; p < PROMPTS; p++) {
        prompt_tokens(t, p);
        size_t got = 0, wrong = 0;
        fu_retrieve(e, &kv, t, &got, &wrong);
        total += got;
        bad += wrong;
    }
    kvs_engine_close(e);
    printf("after the kills: %zu tokens of %d prompts load, %zu wrong rows\n", total, PROMPTS,
           bad);
    if (bad) {
        printf("FAIL: wrong bytes after the kills\n");
        failures++;
    }
    /* The collector: orphans younger than the grace period stay (they could
     * be writes under way), older ones all go, chunk files stay. */
    kvs_admin *a;
    if (kvs_admin_open(cfg, &a) != KVS_OK)
        return 1;
    kvs_gc_options o = {.flags = KVS_GC_OLDER_THAN, .older_than_s = 1u << 30,
                        .tmp_grace_ms = 3600 * 1000, .lease_wait_ms = 10000};
    kvs_gc_report g1, g2;
    kvs_admin_gc(a, &o, &g1);
    sleep_us(GRACE_MS * 1000 + 100000);
    o.tmp_grace_ms = GRACE_MS;
    kvs_admin_gc(a, &o, &g2);
    kvs_admin_close(a);
    fu_store_report after;
    fu_check_store(dir, &after);
    printf("collector: with a 1 h grace it removed %llu of %zu orphans; after %d ms with a "
           "%d ms grace, %llu; %zu temporary files left, %zu of %zu chunk files kept\n",
           (unsigned long long)g1.orphans_removed, rep.temps, GRACE_MS + 100, GRACE_MS,
           (unsigned long long)g2.orphans_removed, after.temps, after.finals, rep.finals);
    if (g1.orphans_removed || g1.files_removed || after.temps ||
        g2.orphans_removed != rep.temps || after.finals != rep.finals || after.bad_finals) {
        printf("FAIL: the collector did not remove exactly the old orphans\n");
        failures++;
    }
    kvs_config_free(cfg);
    fu_kv_free(&kv);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!failures)
        (void)!system(cmd);
    printf(failures ? "%d checks failed (store kept at %s)\n" : "all checks passed\n", failures,
           dir);
    return failures ? 1 : 0;
}
