/* test_collector.c - capacity of the shared store on real files: exact LRU
 * order by last access, bounded memory (many passes), candidates read since
 * the scan kept, orphaned temporary files removed after their grace, a
 * chunk evicted while a reader has it open (still served) or before it
 * opens it (a miss, not an error), ENOSPC on a small tmpfs before the limit
 * starting a collection, the free-space floor, the spread of keys over
 * several store paths, and the admin API's view of it all. */
#include "test_util.h"

#include "collector.h"
#include "config.h"
#include "engine.h"
#include "io_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 16
#define FILE_BYTES 8192 /* 1 layer x 2 planes x 16 tokens x 16 dims fp16, padded */

typedef struct fixture {
    char *dir;
    kvs_config *cfg;
    kvs_namespace ns;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tu_clear_env();
    f->dir = tu_mkdtemp("collector");
    assert_non_null(f->dir);
    assert_int_equal(kvs_config_new(&f->cfg), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "weka_path", f->dir), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "chunk_size", "16"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "local_cpu", "false"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "min_free_space", "0"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "access_interval_s", "0"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "log_level", "error"), KVS_OK);
    f->ns = (kvs_namespace){.model = "test/tiny", .dtype = KVS_DTYPE_FP16, .num_layers = 1,
                            .num_kv_heads = 1, .head_dim = 16, .layout = KVS_LAYOUT_MHA,
                            .world_size = 1, .rank = 0};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kvs__io_set(NULL);
    kvs_config_free(f->cfg);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void make_tokens(uint32_t *t, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        t[i] = (uint32_t)((i + 1) * 2654435761u ^ seed * 40503u);
}

/* Stores `chunks` chunks (one prompt) with content derived from the tokens. */
static void store_prompt(kvs_engine *e, const uint32_t *tokens, size_t chunks, kvs_op_result *r)
{
    size_t n = chunks * CHUNK;
    uint8_t *mem = malloc(n * 2 * 32);
    for (size_t i = 0; i < n * 2 * 32; i++)
        mem[i] = (uint8_t)(tokens[(i / 32) % n] * 7 + i);
    void *layers[1] = {mem};
    kvs_kv kv = {.mem = KVS_MEM_HOST, .num_layers = 1, .layers = layers, .num_slots = n};
    kvs_op *op = NULL;
    assert_int_equal(kvs_store(e, tokens, n, &kv, &op), KVS_OK);
    kvs_op_result res;
    assert_int_equal(kvs_op_wait(op, -1, &res), KVS_OK);
    kvs_op_free(op);
    free(mem);
    if (r)
        *r = res;
}

/* ---- collecting every chunk file of the store --------------------------------- */

typedef struct files {
    char **path;
    size_t n, cap;
} files;

static files *g_files;

static int collect_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    uint8_t key[KVS_KEY_BYTES];
    if (flag == FTW_F && kvs__is_chunk_name(path + ftw->base, key)) {
        if (g_files->n == g_files->cap) {
            g_files->cap = g_files->cap ? g_files->cap * 2 : 256;
            g_files->path = realloc(g_files->path, g_files->cap * sizeof(char *));
        }
        g_files->path[g_files->n++] = strdup(path);
    }
    return 0;
}

static void list_chunks(const char *dir, files *out)
{
    memset(out, 0, sizeof *out);
    g_files = out;
    nftw(dir, collect_one, 32, FTW_PHYS);
}

static void files_free(files *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        free(fs->path[i]);
    free(fs->path);
}

static void set_times(const char *path, time_t when)
{
    struct timespec ts[2] = {{when, 0}, {when, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- names ------------------------------------------------------------------------ */

static void test_names(void **state)
{
    (void)state;
    uint8_t key[KVS_KEY_BYTES];
    char hex[65];
    memset(hex, 'a', 64);
    hex[64] = '\0';
    assert_true(kvs__is_chunk_name(hex, key));
    assert_int_equal(key[0], 0xaa);
    hex[3] = 'A';
    assert_false(kvs__is_chunk_name(hex, key));
    assert_false(kvs__is_chunk_name("abc", key));
    assert_true(kvs__is_temp_name(".aaaa.0123456789abcdef.tmp"));
    assert_true(kvs__is_temp_name("NAMESPACE.json.0123456789abcdef.tmp"));
    assert_true(kvs__is_temp_name(".kvstash-doctor.0123456789abcdef.tmp"));
    assert_false(kvs__is_temp_name(".0123456789abcdef.tmp"));
    assert_false(kvs__is_temp_name("x.0123456789abcdeg.tmp"));
    assert_false(kvs__is_temp_name("x.0123456789abcdef.tm"));
    assert_true(kvs__is_ns_dir_name("meta-llama_Llama-3.1-8B-9c326c0d90ffc29b"));
    assert_false(kvs__is_ns_dir_name(".kvstash"));
    assert_false(kvs__is_ns_dir_name("-9c326c0d90ffc29b"));
    assert_false(kvs__is_ns_dir_name("model_9c326c0d90ffc29b"));
}

/* ---- LRU order ---------------------------------------------------------------------- */

static kvs_admin *admin_of(fixture *f)
{
    kvs_admin *a = NULL;
    assert_int_equal(kvs_admin_open(f->cfg, &a), KVS_OK);
    return a;
}

/* 200 chunks with distinct last accesses in shuffled order: a gc to the
 * size of 50 removes exactly the 150 least recently accessed. */
static void test_lru_order_exact(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[200 * CHUNK];
    make_tokens(tokens, 200 * CHUNK, 1);
    store_prompt(e, tokens, 200, NULL);
    kvs_engine_close(e);
    files fs;
    list_chunks(f->dir, &fs);
    assert_int_equal(fs.n, 200);
    /* access time of file i: base + perm[i] s */
    int perm[200];
    for (int i = 0; i < 200; i++)
        perm[i] = i;
    srand(7);
    for (int i = 199; i > 0; i--) {
        int j = rand() % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    time_t base = time(NULL) - 10000;
    for (size_t i = 0; i < fs.n; i++)
        set_times(fs.path[i], base + 10 * perm[i]);
    kvs_admin *a = admin_of(f);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 50 * FILE_BYTES,
                        .lease_wait_ms = 5000};
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(a, &o, &r), KVS_OK);
    assert_int_equal(r.used_before, 200 * FILE_BYTES);
    assert_int_equal(r.files_removed, 150);
    assert_int_equal(r.used_after, 50 * FILE_BYTES);
    assert_int_equal(r.chunks_after, 50);
    for (size_t i = 0; i < fs.n; i++)
        assert_int_equal(exists(fs.path[i]), perm[i] >= 150);
    /* by age: everything last accessed before base + 1795 s goes */
    kvs_gc_options age = {.flags = KVS_GC_OLDER_THAN,
                          .older_than_s = (uint64_t)(time(NULL) - (base + 1795)),
                          .lease_wait_ms = 5000};
    assert_int_equal(kvs_admin_gc(a, &age, &r), KVS_OK);
    assert_int_equal(r.files_removed, 30);
    for (size_t i = 0; i < fs.n; i++)
        assert_int_equal(exists(fs.path[i]), perm[i] >= 180);
    kvs_admin_close(a);
    files_free(&fs);
}

/* With room for 1024 candidates per pass, evicting 2500 of 3000 chunks
 * takes several passes and is still exact LRU. */
static void test_bounded_candidates(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    static uint32_t tokens[3000 * CHUNK];
    make_tokens(tokens, 3000 * CHUNK, 2);
    store_prompt(e, tokens, 3000, NULL);
    kvs_engine_close(e);
    files fs;
    list_chunks(f->dir, &fs);
    assert_int_equal(fs.n, 3000);
    time_t base = time(NULL) - 100000;
    for (size_t i = 0; i < fs.n; i++)
        set_times(fs.path[i], base + (time_t)((i * 7919) % 3000));
    const char *roots[1] = {f->dir};
    kvs_lease lease;
    kvs__lease_init(&lease, f->dir, 30, "test");
    assert_int_equal(kvs__lease_try(&lease), KVS_OK);
    kvs_collect_params p = {.roots = roots, .nroots = 1, .leases = &lease,
                            .target_bytes = 500 * FILE_BYTES, .tmp_grace_ns = 600000000000ull,
                            .record = true, .max_candidates = 1024, .purpose = "test"};
    kvs_collect_result r;
    assert_int_equal(kvs__collect(&p, &r), KVS_OK);
    kvs__lease_release(&lease);
    assert_true(r.passes >= 3);
    assert_int_equal(r.evicted_files, 2500);
    assert_int_equal(r.used_after, 500 * FILE_BYTES);
    for (size_t i = 0; i < fs.n; i++)
        assert_int_equal(exists(fs.path[i]), (i * 7919) % 3000 >= 2500);
    kvs_usage_record u;
    assert_int_equal(kvs__usage_read(f->dir, &u), 0);
    assert_int_equal(u.used_bytes, 500 * FILE_BYTES);
    assert_int_equal(u.chunks, 500);
    assert_int_equal(u.evicted_files, 2500);
    files_free(&fs);
}

/* A candidate read between the scan and its eviction stays. */
static const char *touch_target;
static int touch_stats;
static int touching_fstatat(int dirfd, const char *name, struct stat *st)
{
    const char *base = touch_target ? strrchr(touch_target, '/') + 1 : NULL;
    if (base && strcmp(name, base) == 0 && ++touch_stats == 2) {
        /* the second look is the eviction's: a reader got there first */
        struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
        utimensat(dirfd, name, now, AT_SYMLINK_NOFOLLOW);
    }
    return kvs__io_posix.fstatat(dirfd, name, st);
}

static void test_touched_candidate_kept(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[10 * CHUNK];
    make_tokens(tokens, 10 * CHUNK, 3);
    store_prompt(e, tokens, 10, NULL);
    kvs_engine_close(e);
    files fs;
    list_chunks(f->dir, &fs);
    assert_int_equal(fs.n, 10);
    time_t base = time(NULL) - 1000;
    for (size_t i = 0; i < fs.n; i++)
        set_times(fs.path[i], base + (time_t)i);
    touch_target = fs.path[0]; /* the oldest */
    touch_stats = 0;
    kvs_io_ops ops = kvs__io_posix;
    ops.fstatat = touching_fstatat;
    kvs__io_set(&ops);
    kvs_admin *a = admin_of(f);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 7 * FILE_BYTES,
                        .lease_wait_ms = 5000};
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(a, &o, &r), KVS_OK);
    kvs__io_set(NULL);
    touch_target = NULL;
    assert_int_equal(r.kept_touched, 1);
    assert_true(exists(fs.path[0]));
    assert_int_equal(r.files_removed, 3); /* the next oldest instead */
    assert_false(exists(fs.path[1]));
    assert_false(exists(fs.path[2]));
    assert_false(exists(fs.path[3]));
    kvs_admin_close(a);
    files_free(&fs);
}

/* ---- orphans ------------------------------------------------------------------------- */

static void make_file(const char *path, time_t mtime)
{
    assert_int_equal(tu_write_file(path, "partial", 7), 0);
    if (mtime)
        set_times(path, mtime);
}

static void test_orphans_removed_after_grace(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[2 * CHUNK];
    make_tokens(tokens, 2 * CHUNK, 4);
    store_prompt(e, tokens, 2, NULL);
    char nsdir[4096];
    snprintf(nsdir, sizeof nsdir, "%s", kvs_engine_namespace_path(e));
    kvs_engine_close(e);
    files fs;
    list_chunks(f->dir, &fs);
    assert_int_equal(fs.n, 2);
    char leaf[4096], p[4200];
    snprintf(leaf, sizeof leaf, "%s", fs.path[0]);
    *strrchr(leaf, '/') = '\0';
    time_t old = time(NULL) - 3600;
    char chunk_tmp[4200], ns_tmp[4200], probe_tmp[4200], doctor_tmp[4200], fresh[4200];
    snprintf(chunk_tmp, sizeof chunk_tmp, "%s/.%s.00112233aabbccdd.tmp", leaf,
             strrchr(fs.path[0], '/') + 1);
    snprintf(ns_tmp, sizeof ns_tmp, "%s/NAMESPACE.json.0123456789abcdef.tmp", nsdir);
    snprintf(probe_tmp, sizeof probe_tmp, "%s/.direct-probe.0123456789abcdef.tmp", nsdir);
    snprintf(doctor_tmp, sizeof doctor_tmp, "%s/.kvstash-doctor.0123456789abcdef.tmp", f->dir);
    snprintf(fresh, sizeof fresh, "%s/.%s.99112233aabbccdd.tmp", leaf,
             strrchr(fs.path[1], '/') + 1);
    make_file(chunk_tmp, old);
    make_file(ns_tmp, old);
    make_file(probe_tmp, old);
    make_file(doctor_tmp, old);
    make_file(fresh, 0);
    snprintf(p, sizeof p, "%s/not-ours.tmp", leaf); /* not a kvstash name */
    make_file(p, old);
    kvs_admin *a = admin_of(f);
    kvs_gc_options o = {.lease_wait_ms = 5000}; /* a collection as configured */
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(a, &o, &r), KVS_OK);
    assert_int_equal(r.orphans_removed, 4);
    assert_int_equal(r.files_removed, 0);
    assert_false(exists(chunk_tmp));
    assert_false(exists(ns_tmp));
    assert_false(exists(probe_tmp));
    assert_false(exists(doctor_tmp));
    assert_true(exists(fresh)); /* a writer may still be filling it */
    assert_true(exists(p));
    assert_true(exists(fs.path[0]) && exists(fs.path[1]));
    /* with a grace of 1 ms (a crash test's setting) the fresh one goes too */
    kvs_gc_options now = {.tmp_grace_ms = 1, .lease_wait_ms = 5000};
    usleep(5000);
    assert_int_equal(kvs_admin_gc(a, &now, &r), KVS_OK);
    assert_int_equal(r.orphans_removed, 1);
    assert_false(exists(fresh));
    kvs_admin_close(a);
    files_free(&fs);
}

/* ---- eviction under readers --------------------------------------------------------- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_closed;
static int gate_reached;

static ssize_t gated_pread(int fd, void *buf, size_t n, off_t off)
{
    if (off >= 4096) { /* payload reads: the file is open and its header checked */
        pthread_mutex_lock(&gate_mu);
        gate_reached++;
        pthread_cond_broadcast(&gate_cv);
        while (gate_closed)
            pthread_cond_wait(&gate_cv, &gate_mu);
        pthread_mutex_unlock(&gate_mu);
    }
    return kvs__io_posix.pread(fd, buf, n, off);
}

typedef struct retrieve_job {
    kvs_engine *e;
    const uint32_t *tokens;
    size_t n;
    uint8_t *mem;
    size_t loaded;
    kvs_status st;
} retrieve_job;

static void *retrieve_thread(void *arg)
{
    retrieve_job *j = arg;
    void *layers[1] = {j->mem};
    kvs_kv kv = {.mem = KVS_MEM_HOST, .num_layers = 1, .layers = layers, .num_slots = j->n};
    j->st = kvs_retrieve(j->e, j->tokens, j->n, &kv, &j->loaded);
    return NULL;
}

/* The reader has opened the file when the collector removes it: on POSIX
 * the open descriptor still reads every byte, so the chunk is served, whole
 * and verified; never an error. */
static void test_evicted_while_open(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_config_set(f->cfg, "gds_io_threads", "4"), KVS_OK);
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[4 * CHUNK];
    make_tokens(tokens, 4 * CHUNK, 5);
    store_prompt(e, tokens, 4, NULL);
    kvs_io_ops ops = kvs__io_posix;
    ops.pread = gated_pread;
    gate_closed = true;
    gate_reached = 0;
    kvs__io_set(&ops);
    retrieve_job j = {.e = e, .tokens = tokens, .n = 4 * CHUNK, .mem = calloc(4 * CHUNK, 64)};
    pthread_t t;
    pthread_create(&t, NULL, retrieve_thread, &j);
    pthread_mutex_lock(&gate_mu);
    while (gate_reached < 4) /* every chunk open, one per worker */
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    /* every chunk file goes while the reads wait */
    kvs__io_set(NULL);
    kvs_admin *a = admin_of(f);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 5000};
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(a, &o, &r), KVS_OK);
    assert_int_equal(r.files_removed, 4);
    kvs__io_set(&ops);
    pthread_mutex_lock(&gate_mu);
    gate_closed = false;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    pthread_join(t, NULL);
    kvs__io_set(NULL);
    assert_int_equal(j.st, KVS_OK);
    /* the opened chunks were read to the end and verified */
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    assert_int_equal(j.loaded, 4 * CHUNK);
    assert_int_equal(s.miss_io + s.miss_checksum + s.miss_truncated, 0);
    assert_int_equal(s.hits_store * CHUNK, j.loaded);
    uint8_t *want = malloc(4 * CHUNK * 64);
    for (size_t i = 0; i < 4 * CHUNK * 64; i++)
        want[i] = (uint8_t)(tokens[(i / 32) % (4 * CHUNK)] * 7 + i);
    /* contiguous [layer][plane][token][row]: compare per plane */
    for (size_t pl = 0; pl < 2; pl++)
        assert_memory_equal(j.mem + pl * 4 * CHUNK * 32, want + pl * 4 * CHUNK * 32,
                            j.loaded * 32);
    free(want);
    free(j.mem);
    kvs_admin_close(a);
    kvs_engine_close(e);
}

/* The collector removes the files after a lookup said they are there and
 * before the reader opens them: the retrieve loads nothing, returns
 * KVS_OK, and counts the chunk as vanished. */
static void test_evicted_before_open(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[4 * CHUNK];
    make_tokens(tokens, 4 * CHUNK, 6);
    store_prompt(e, tokens, 4, NULL);
    size_t hit = 0;
    assert_int_equal(kvs_lookup(e, tokens, 4 * CHUNK, &hit), KVS_OK);
    assert_int_equal(hit, 4 * CHUNK);
    kvs_admin *a = admin_of(f);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 5000};
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(a, &o, &r), KVS_OK);
    assert_int_equal(r.files_removed, 4);
    uint8_t *mem = calloc(4 * CHUNK, 64);
    void *layers[1] = {mem};
    kvs_kv kv = {.mem = KVS_MEM_HOST, .num_layers = 1, .layers = layers, .num_slots = 4 * CHUNK};
    size_t loaded = 99;
    assert_int_equal(kvs_retrieve(e, tokens, 4 * CHUNK, &kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 0);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    assert_true(s.miss_vanished >= 1);
    assert_int_equal(s.miss_io, 0);
    /* and the engine stores it again */
    kvs_op_result res;
    store_prompt(e, tokens, 4, &res);
    assert_int_equal(res.chunks_done, 4);
    free(mem);
    kvs_admin_close(a);
    kvs_engine_close(e);
}

/* ---- a small real filesystem: ENOSPC before the limit, and the floor ---------------- */

static bool mount_tmpfs(const char *dir, const char *size)
{
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
    return mount("tmpfs", dir, "tmpfs", 0, opts) == 0;
}

static uint64_t free_bytes(const char *dir)
{
    struct statvfs v;
    statvfs(dir, &v);
    return (uint64_t)v.f_bavail * v.f_frsize;
}

static kvs_stats wait_stats(kvs_engine *e, double seconds, bool (*done)(const kvs_stats *))
{
    kvs_stats s;
    double t0 = (double)kvs__now_ns() / 1e9;
    do {
        kvs_engine_stats(e, &s, sizeof s);
        if (done(&s))
            break;
        usleep(20000);
    } while ((double)kvs__now_ns() / 1e9 - t0 < seconds);
    return s;
}

static bool evicted(const kvs_stats *s)
{
    return s->evictions > 0;
}

/* Bigger chunks for the filesystem tests: 1 layer x 2 x 16 x 16384 fp16 x
 * 16 tokens = 1 MiB. */
static const kvs_namespace big_ns = {.model = "test/big", .dtype = KVS_DTYPE_FP16,
                                     .num_layers = 1, .num_kv_heads = 16, .head_dim = 1024,
                                     .layout = KVS_LAYOUT_MHA, .world_size = 1};

static size_t store_big(kvs_engine *e, uint32_t seed, size_t chunks)
{
    size_t n = chunks * CHUNK;
    uint32_t *tokens = malloc(n * sizeof *tokens);
    make_tokens(tokens, n, seed);
    size_t row = 16 * 1024 * 2;
    uint8_t *mem = calloc(2 * n, row);
    void *layers[1] = {mem};
    kvs_kv kv = {.mem = KVS_MEM_HOST, .num_layers = 1, .layers = layers, .num_slots = n};
    kvs_op *op = NULL;
    kvs_op_result r = {0};
    assert_int_equal(kvs_store(e, tokens, n, &kv, &op), KVS_OK);
    assert_int_equal(kvs_op_wait(op, -1, &r), KVS_OK);
    kvs_op_free(op);
    free(mem);
    free(tokens);
    return r.chunks_done + r.chunks_present;
}

/* A 24 MB filesystem and a limit of 1 GB: the filesystem fills first.  The
 * failed writes (ENOSPC) start a collection that evicts the path down to
 * low/high of its size, and later stores succeed. */
static void test_enospc_before_limit(void **state)
{
    fixture *f = *state;
    if (!mount_tmpfs(f->dir, "24m")) {
        print_message("skipped: cannot mount a tmpfs here (%s); needs root\n", strerror(errno));
        skip();
    }
    assert_int_equal(kvs_config_set(f->cfg, "max_store_size", "1"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "use_direct_io", "false"), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &big_ns, &e), KVS_OK);
    size_t stored = 0;
    for (uint32_t seed = 1; seed <= 60; seed++) { /* a steady writer: 50 prompts/s */
        stored += store_big(e, seed, 2);
        usleep(20000);
    }
    kvs_stats s = wait_stats(e, 5.0, evicted);
    print_message("stored %zu chunks of 1 MiB on a 24 MB filesystem; %llu writes failed for "
                  "space, %llu collections evicted %llu chunks\n",
                  stored, (unsigned long long)s.store_failed_nospace,
                  (unsigned long long)s.collections, (unsigned long long)s.evictions);
    assert_true(s.store_failed_nospace > 0);
    assert_true(s.collections > 0);
    assert_true(s.evictions > 0);
    assert_true(stored > 40); /* far more than fits: eviction made room, again and again */
    /* the store never dead-ends: a new prompt stores once room is made */
    size_t again = 0;
    for (int attempt = 0; attempt < 25 && again < 2; attempt++) { /* > FREE_LAG_NS */
        usleep(300000);
        again = store_big(e, 1000, 2);
    }
    assert_int_equal(again, 2);
    kvs_engine_close(e);
    umount2(f->dir, MNT_DETACH);
}

/* Another tenant fills the filesystem below min_free_space: stores are
 * refused and chunks evicted until free space is back above the floor. */
static void test_free_space_floor(void **state)
{
    fixture *f = *state;
    if (!mount_tmpfs(f->dir, "32m")) {
        print_message("skipped: cannot mount a tmpfs here (%s); needs root\n", strerror(errno));
        skip();
    }
    assert_int_equal(kvs_config_set(f->cfg, "min_free_space", "0.008"), KVS_OK); /* 8 MB */
    assert_int_equal(kvs_config_set(f->cfg, "use_direct_io", "false"), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &big_ns, &e), KVS_OK);
    assert_int_equal(store_big(e, 1, 10), 10);
    char filler[4200];
    snprintf(filler, sizeof filler, "%s/other-tenant", f->dir);
    size_t fill = 16u << 20;
    uint64_t before = free_bytes(f->dir);
    assert_true(before > 8000000 + 1000000);
    assert_true(before < fill + 8000000); /* the filler takes it below the floor */
    char *junk = calloc(1, fill);
    assert_int_equal(tu_write_file(filler, junk, fill), 0);
    free(junk);
    kvs_stats s = wait_stats(e, 5.0, evicted);
    /* The pass that started evicting may take a while to finish on a busy
     * machine (make test runs two tests at a time): wait for its result. */
    for (int i = 0; i < 100 && free_bytes(f->dir) < 8000000; i++)
        usleep(50000);
    kvs_engine_stats(e, &s, sizeof s);
    print_message("free space %llu bytes after %llu evictions\n",
                  (unsigned long long)free_bytes(f->dir), (unsigned long long)s.evictions);
    assert_true(s.evictions > 0);
    assert_true(free_bytes(f->dir) >= 8000000);
    /* the filler is not ours: never touched */
    struct stat st;
    assert_int_equal(stat(filler, &st), 0);
    kvs_engine_close(e);
    umount2(f->dir, MNT_DETACH);
}

/* ---- a filesystem out of inodes: the capacity system must not lock itself out ----- */

static bool mount_tmpfs_opts(const char *dir, const char *opts)
{
    return mount("tmpfs", dir, "tmpfs", 0, opts) == 0;
}

static uint64_t free_inodes(const char *dir)
{
    struct statvfs v;
    statvfs(dir, &v);
    return (uint64_t)v.f_favail;
}

/* Another tenant takes inodes (empty files in <dir>/tenant) until `leave`
 * are left, or every last one (leave 0: until creating fails). */
static int fill_inodes(const char *dir, uint64_t leave)
{
    char sub[4200], path[4300];
    snprintf(sub, sizeof sub, "%s/tenant", dir);
    mkdir(sub, 0755);
    int n = 0;
    while (free_inodes(dir) > leave) {
        snprintf(path, sizeof path, "%s/f%d", sub, n);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0)
            break;
        close(fd);
        n++;
    }
    return n;
}

static void empty_tenant(const char *dir, int n)
{
    char path[4300];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/tenant/f%d", dir, i);
        unlink(path);
    }
}

/* Stores `prompts` prompts of 2 tiny chunks; returns the chunks stored. */
static size_t store_tiny(kvs_engine *e, uint32_t seed0, int prompts)
{
    size_t stored = 0;
    for (int i = 0; i < prompts; i++) {
        uint32_t tokens[2 * CHUNK];
        make_tokens(tokens, 2 * CHUNK, seed0 + (uint32_t)i);
        kvs_op_result r;
        store_prompt(e, tokens, 2, &r);
        stored += r.chunks_done + r.chunks_present;
    }
    return stored;
}

/* Gives the collector a moment to start (it makes the spare lease file
 * then, while there is room); not an assertion: the test is about what happens
 * once the inodes are gone. */
static void let_collector_start(const char *dir)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/.kvstash/collector.lease.spare", dir);
    for (int i = 0; i < 200 && !exists(path); i++)
        usleep(10000);
}

/* Every inode taken (chunks of the store, then another tenant's files): the
 * engine's writes fail with ENOSPC and its collector must take the lease
 * without creating a file, evict, and let stores succeed again.  On main
 * taking the lease created a file, so nothing was ever evicted. */
static void test_out_of_inodes_engine(void **state)
{
    fixture *f = *state;
    if (!mount_tmpfs_opts(f->dir, "size=64m,nr_inodes=600,mode=0755")) {
        print_message("skipped: cannot mount a tmpfs here (%s); needs root\n", strerror(errno));
        skip();
    }
    assert_int_equal(kvs_config_set(f->cfg, "max_store_size", "1"), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    let_collector_start(f->dir);
    size_t stored = store_tiny(e, 1, 60);
    int tenant = fill_inodes(f->dir, 0);
    assert_int_equal(free_inodes(f->dir), 0);
    /* A write now fails for lack of an inode: that starts a collection. */
    size_t failed_store = store_tiny(e, 5000, 1);
    kvs_stats s = wait_stats(e, 10.0, evicted);
    print_message("%zu chunks stored, then %d tenant files took every inode; a store got %zu "
                  "chunks in; %llu writes failed for space, %llu evicted, %llu free inodes\n",
                  stored, tenant, failed_store, (unsigned long long)s.store_failed_nospace,
                  (unsigned long long)s.evictions, (unsigned long long)free_inodes(f->dir));
    assert_true(stored >= 100);
    assert_true(s.store_failed_nospace > 0);
    assert_true(s.evictions > 0);
    /* and stores work again */
    size_t again = 0;
    for (int attempt = 0; attempt < 25 && again < 2; attempt++) {
        again = store_tiny(e, 9000 + (uint32_t)attempt, 1);
        if (again < 2)
            usleep(300000);
    }
    assert_int_equal(again, 2);
    kvs_engine_close(e);
    empty_tenant(f->dir, tenant);
    umount2(f->dir, MNT_DETACH);
}

/* The same for `kvstash gc` (kvs_admin_gc) on a filesystem with no inode
 * left: it takes the lease in place and evicts. */
static void test_out_of_inodes_gc(void **state)
{
    fixture *f = *state;
    if (!mount_tmpfs_opts(f->dir, "size=64m,nr_inodes=400,mode=0755")) {
        print_message("skipped: cannot mount a tmpfs here (%s); needs root\n", strerror(errno));
        skip();
    }
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    let_collector_start(f->dir);
    size_t stored = store_tiny(e, 1, 40);
    kvs_engine_close(e);
    int tenant = fill_inodes(f->dir, 0);
    assert_int_equal(free_inodes(f->dir), 0);
    kvs_admin *a = admin_of(f);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 5000};
    kvs_gc_report rep;
    kvs_status st = kvs_admin_gc(a, &o, &rep);
    print_message("gc to 0 on a filesystem with no free inode: %s (%s); %llu of %zu chunks "
                  "removed\n",
                  kvs_strerror(st), st ? kvs_last_error() : "-",
                  (unsigned long long)(st ? 0 : rep.files_removed), stored);
    assert_int_equal(st, KVS_OK);
    assert_int_equal(rep.files_removed, stored);
    kvs_admin_close(a);
    empty_tenant(f->dir, tenant);
    umount2(f->dir, MNT_DETACH);
}

/* Plenty of bytes free but few inodes: below min_free_space as far as
 * inodes go (the same fraction), so stores are refused and chunks evicted
 * until the inodes are back above it. */
static void test_inode_floor(void **state)
{
    fixture *f = *state;
    if (!mount_tmpfs_opts(f->dir, "size=64m,nr_inodes=800,mode=0755")) {
        print_message("skipped: cannot mount a tmpfs here (%s); needs root\n", strerror(errno));
        skip();
    }
    /* 16 MB of 64 MB: a quarter, so 200 of the 800 inodes are the floor */
    assert_int_equal(kvs_config_set(f->cfg, "min_free_space", "0.016"), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    size_t stored = store_tiny(e, 1, 60);
    int tenant = fill_inodes(f->dir, 100);
    uint64_t low = free_inodes(f->dir);
    assert_true(free_bytes(f->dir) > 40000000); /* bytes are not the problem */
    kvs_stats s = wait_stats(e, 10.0, evicted);
    for (int i = 0; i < 100 && free_inodes(f->dir) < 200; i++)
        usleep(50000);
    kvs_engine_stats(e, &s, sizeof s);
    print_message("%zu chunks stored; a tenant left %llu of 800 inodes free (floor 200); "
                  "%llu evictions, %llu free inodes after\n",
                  stored, (unsigned long long)low, (unsigned long long)s.evictions,
                  (unsigned long long)free_inodes(f->dir));
    assert_true(s.evictions > 0);
    assert_true(free_inodes(f->dir) >= 200);
    kvs_engine_close(e);
    empty_tenant(f->dir, tenant);
    umount2(f->dir, MNT_DETACH);
}

/* An engine opened while the filesystem had no inode for the O_DIRECT
 * probe turns O_DIRECT on once there is room again. */
static void test_direct_probe_recovers(void **state)
{
    fixture *f = *state;
    if (!mount_tmpfs_opts(f->dir, "size=64m,nr_inodes=200,mode=0755")) {
        print_message("skipped: cannot mount a tmpfs here (%s); needs root\n", strerror(errno));
        skip();
    }
    assert_int_equal(kvs_config_set(f->cfg, "use_direct_io", "true"), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    kvs_engine_close(e);
    if (!s.direct_io) {
        print_message("skipped: this tmpfs does not take O_DIRECT\n");
        skip();
    }
    int tenant = fill_inodes(f->dir, 0);
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    kvs_engine_stats(e, &s, sizeof s);
    assert_int_equal(s.direct_io, 0); /* no room for the probe */
    empty_tenant(f->dir, tenant);
    size_t stored = 0;
    for (int i = 0; i < 30 && !s.direct_io; i++) {
        usleep(100000);
        stored += store_tiny(e, 100 + (uint32_t)i, 1);
        kvs_engine_stats(e, &s, sizeof s);
    }
    print_message("O_DIRECT after room came back: %s (%zu chunks stored meanwhile)\n",
                  s.direct_io ? "on" : "off", stored);
    assert_int_equal(s.direct_io, 1);
    /* and chunks written either way read back */
    uint32_t tokens[2 * CHUNK];
    make_tokens(tokens, 2 * CHUNK, 100);
    size_t hit = 0;
    assert_int_equal(kvs_lookup(e, tokens, 2 * CHUNK, &hit), KVS_OK);
    assert_int_equal(hit, 2 * CHUNK);
    kvs_engine_close(e);
    umount2(f->dir, MNT_DETACH);
}

/* ---- clocks -------------------------------------------------------------------------- */

/* A usage.json written by a host whose wall clock is an hour ahead: its
 * pass "ended" in the future.  Collection must go on as if it ended when
 * this instance first saw it (on main nothing was collected for the
 * hour). */
static void test_usage_from_future_host(void **state)
{
    fixture *f = *state;
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    size_t stored = store_tiny(e, 1, 20);
    kvs_engine_close(e);
    assert_int_equal(stored, 40);
    struct statvfs v;
    statvfs(f->dir, &v);
    kvs_usage_record u = {.used_bytes = 40 * FILE_BYTES, .chunks = 40, .namespaces = 1,
                          .fs_used_baseline = (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize,
                          .pass_end_wall_ns = kvs__wall_ns() + 3600ull * 1000000000u,
                          .pass_ns = 1000000, .evicted_files = 1, .pid = 1};
    snprintf(u.host, sizeof u.host, "ahead-by-an-hour");
    assert_int_equal(kvs__usage_write(f->dir, &u, 0644), 0);
    /* a cap of 200 KB: 320 KB stored is over it */
    assert_int_equal(kvs_config_set(f->cfg, "max_store_size", "0.0002"), KVS_OK);
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    kvs_stats s = wait_stats(e, 10.0, evicted);
    print_message("usage.json from a host an hour ahead, store over its cap: %llu evictions\n",
                  (unsigned long long)s.evictions);
    assert_true(s.evictions > 0);
    kvs_engine_close(e);
}

/* ---- several store paths -------------------------------------------------------------- */

static void test_rendezvous_mapping(void **state)
{
    (void)state;
    uint64_t ids[4] = {0x1111, 0xdeadbeef12345678ull, 0x0123456789abcdefull, 0x42};
    uint64_t perm[4] = {ids[2], ids[0], ids[3], ids[1]};
    uint32_t count[4] = {0};
    uint32_t moved_between_old = 0, moved_to_new = 0;
    for (uint32_t k = 0; k < 20000; k++) {
        uint8_t key[KVS_KEY_BYTES] = {0};
        uint64_t x = k * 0x9e3779b97f4a7c15ull;
        x ^= x >> 29;
        memcpy(key + 8, &x, 8);
        uint32_t a = kvs__store_pick(ids, 4, key);
        uint32_t b = kvs__store_pick(perm, 4, key);
        assert_int_equal(ids[a], perm[b]); /* the order of the list does not matter */
        count[a]++;
        /* a fifth path takes only its own share */
        uint64_t five[5] = {ids[0], ids[1], ids[2], ids[3], 0x5555aaaa5555aaaaull};
        uint32_t c = kvs__store_pick(five, 5, key);
        if (c == 4)
            moved_to_new++;
        else if (c != a)
            moved_between_old++;
    }
    for (int i = 0; i < 4; i++)
        assert_true(count[i] > 4000 && count[i] < 6000);
    assert_int_equal(moved_between_old, 0);
    assert_true(moved_to_new > 3000 && moved_to_new < 5000);
}

/* Two folders: every key is on the path it maps to, the collector and the
 * admin see both, and a configuration listing them in the other order
 * finds every chunk. */
static void test_two_paths(void **state)
{
    fixture *f = *state;
    char a[4200], b[4200], list[8500];
    snprintf(a, sizeof a, "%s/a", f->dir);
    snprintf(b, sizeof b, "%s/b", f->dir);
    mkdir(a, 0755);
    mkdir(b, 0755);
    snprintf(list, sizeof list, "%s,%s", a, b);
    assert_int_equal(kvs_config_set(f->cfg, "weka_path", list), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[100 * CHUNK];
    make_tokens(tokens, 100 * CHUNK, 8);
    store_prompt(e, tokens, 100, NULL);
    kvs_engine_close(e);
    files fa, fb;
    list_chunks(a, &fa);
    list_chunks(b, &fb);
    print_message("100 chunks: %zu on a, %zu on b\n", fa.n, fb.n);
    assert_int_equal(fa.n + fb.n, 100);
    assert_true(fa.n > 25 && fb.n > 25);
    snprintf(list, sizeof list, "%s,%s", b, a);
    kvs_config *rev = NULL;
    assert_int_equal(kvs_config_copy(f->cfg, &rev), KVS_OK);
    assert_int_equal(kvs_config_set(rev, "weka_path", list), KVS_OK);
    assert_int_equal(kvs_engine_open(rev, &f->ns, &e), KVS_OK);
    size_t hit = 0;
    assert_int_equal(kvs_lookup(e, tokens, 100 * CHUNK, &hit), KVS_OK);
    assert_int_equal(hit, 100 * CHUNK);
    kvs_engine_close(e);
    kvs_admin *ad = NULL;
    assert_int_equal(kvs_admin_open(rev, &ad), KVS_OK);
    kvs_usage u;
    assert_int_equal(kvs_admin_usage(ad, 1, &u), KVS_OK);
    assert_int_equal(u.path_count, 2);
    assert_int_equal(u.chunks, 100);
    assert_int_equal(u.paths[0].chunks, fb.n);
    assert_int_equal(u.paths[1].chunks, fa.n);
    assert_true(u.paths[0].store_id != 0 && u.paths[1].store_id != 0);
    kvs_verify_report vr;
    assert_int_equal(kvs_admin_verify(ad, NULL, &vr), KVS_OK);
    assert_int_equal(vr.ok, 100);
    assert_int_equal(vr.misplaced, 0);
    /* a file moved to the other path is valid but never read: misplaced */
    char moved[4200];
    snprintf(moved, sizeof moved, "%s%s", b, fa.path[0] + strlen(a));
    char leafdir[4200];
    snprintf(leafdir, sizeof leafdir, "%s", moved);
    *strrchr(leafdir, '/') = '\0';
    *strrchr(leafdir, '/') = '\0';
    mkdir(leafdir, 0755);
    snprintf(leafdir, sizeof leafdir, "%s", moved);
    *strrchr(leafdir, '/') = '\0';
    mkdir(leafdir, 0755);
    assert_int_equal(rename(fa.path[0], moved), 0);
    assert_int_equal(kvs_admin_verify(ad, NULL, &vr), KVS_OK);
    assert_int_equal(vr.misplaced, 1);
    assert_int_equal(vr.bad, 0);
    /* a collection covers both paths */
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 10 * FILE_BYTES,
                        .lease_wait_ms = 5000};
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(ad, &o, &r), KVS_OK);
    assert_int_equal(r.chunks_after, 10);
    kvs_admin_close(ad);
    kvs_config_free(rev);
    files_free(&fa);
    files_free(&fb);
}

/* ---- the engine's collector against the configured limit ----------------------------- */

static bool below_cap(const kvs_stats *s)
{
    return s->evictions > 0 && s->store_used_bytes > 0;
}

/* Passes in the collector log of dir that evicted, and how many of those
 * ended at or above `low` bytes. */
static void evicting_passes(const char *dir, uint64_t low, int *passes_out, int *above_out)
{
    char path[4200], line[1024];
    snprintf(path, sizeof path, "%s/.kvstash/collector.log", dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    *passes_out = *above_out = 0;
    while (fgets(line, sizeof line, fp)) {
        const char *ev = strstr(line, " evicted_files="), *after = strstr(line, " used_after=");
        if (!ev || !after || strtoull(ev + 15, NULL, 10) == 0)
            continue;
        (*passes_out)++;
        *above_out += strtoull(after + 12, NULL, 10) >= low;
    }
    fclose(fp);
}

static void test_engine_collector_enforces_cap(void **state)
{
    fixture *f = *state;
    /* 100 chunks of 8 KiB = 819 kB against a cap of 400 kB (high watermark
     * 360 kB, low 320 kB).  The growth estimate (statvfs) sees other
     * tenants of /tmp too, whose deletions can hide ours for a while; the
     * periodic measurement bounds that. */
    assert_int_equal(kvs_config_set(f->cfg, "max_store_size", "0.0004"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "collect_interval_s", "1"), KVS_OK);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t tokens[100 * CHUNK];
    make_tokens(tokens, 100 * CHUNK, 9);
    store_prompt(e, tokens, 100, NULL);
    kvs_stats s = wait_stats(e, 5.0, below_cap);
    /* Chunks stored after the last pass that evicted can leave the store
     * between the watermarks, where by design no pass evicts: what holds is
     * that it comes back under the high watermark (by the next periodic
     * pass at the latest) and that every pass that evicted went below the
     * low one. */
    files fs = {0};
    for (int i = 0; i < 200; i++) { /* its passes may have begun during the store */
        files_free(&fs);
        list_chunks(f->dir, &fs);
        if (fs.n * FILE_BYTES <= 360000)
            break;
        usleep(50000);
    }
    kvs_engine_stats(e, &s, sizeof s);
    assert_true(s.collections > 0);
    assert_true(s.evictions > 0);
    assert_true(fs.n * FILE_BYTES <= 360000); /* the high watermark, 0.9 x 400 kB */
    assert_true(s.store_used_bytes <= 360000);
    int passes, above;
    evicting_passes(f->dir, 320000, &passes, &above);
    assert_true(passes > 0);
    assert_int_equal(above, 0); /* each went down below the low watermark, 0.8 x 400 kB */
    files_free(&fs);
    char *prom = NULL;
    assert_int_equal(kvs_engine_metrics(e, &prom), KVS_OK);
    assert_non_null(strstr(prom, "kvstash_evictions_total"));
    kvs_free(prom);
    kvs_engine_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_lru_order_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded_candidates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_touched_candidate_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphans_removed_after_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evicted_while_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evicted_before_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enospc_before_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_space_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_inodes_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_inodes_gc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inode_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct_probe_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_from_future_host, setup, teardown),
        cmocka_unit_test(test_rendezvous_mapping),
        cmocka_unit_test_setup_teardown(test_two_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_collector_enforces_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
