/* test_engine.c - the engine on host memory, on real files in a temporary
 * folder: round trips through contiguous and paged layouts, partial chunks,
 * negative slots, every kind of bad file on the store, vanished files,
 * layer-by-layer waiting, concurrency, API misuse, stats. */
#include "test_util.h"

#include "chunk_file.h"
#include "config.h"
#include "engine.h"
#include "io_ops.h"
#include "io_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef tu_fixture fixture;

#define LAYERS 3
#define HEADS 2
#define DIM 64
#define CHUNK 16
#define ROW (HEADS * DIM * 2)

static int setup(void **state)
{
    fixture *f = tu_setup(state, "engine");
    f->cfg = tu_config(f->dir, "16", "3", NULL);
    assert_non_null(f->cfg);
    f->ns = tu_mha_ns("test/model", LAYERS, HEADS, DIM);
    return 0;
}

/* A contiguous buffer [layer][plane][token][row] of n tokens. */
typedef struct kvbuf {
    uint8_t *mem;
    size_t n;
    uint32_t planes;
    void *layers[LAYERS];
    kvs_kv kv;
} kvbuf;

static void kvbuf_init(kvbuf *b, size_t n, uint32_t planes)
{
    b->n = n;
    b->planes = planes;
    b->mem = malloc((size_t)LAYERS * planes * n * ROW);
    tu_kv_contiguous(&b->kv, b->mem, b->layers, LAYERS, planes, n, ROW);
}

static uint8_t *row_of(kvbuf *b, int l, int p, size_t t)
{
    return b->mem + (((size_t)l * b->planes + p) * b->n + t) * ROW;
}

/* Content: a function of (token id, position) so equal prompts give equal
 * KV, like a real model. */
static void fill_rows(kvbuf *b, const uint32_t *tokens)
{
    for (int l = 0; l < LAYERS; l++)
        for (uint32_t p = 0; p < b->planes; p++)
            for (size_t t = 0; t < b->n; t++) {
                uint8_t *r = row_of(b, l, (int)p, t);
                for (int i = 0; i < ROW; i++)
                    r[i] = (uint8_t)(tokens[t] * 31 + t * 7 + l * 13 + p * 5 + i);
            }
}

/* A prompt of n tokens (tu_tokens of seed), its KV in src and a buffer of
 * the same shape, dst, to load into. */
typedef struct prompt {
    size_t n;
    uint32_t *t;
    kvbuf src, dst;
} prompt;

static void prompt_init(prompt *p, size_t n, uint32_t seed, uint32_t planes)
{
    p->n = n;
    p->t = malloc(n * sizeof *p->t);
    assert_non_null(p->t);
    tu_tokens(p->t, n, seed);
    kvbuf_init(&p->src, n, planes);
    kvbuf_init(&p->dst, n, planes);
    fill_rows(&p->src, p->t);
}

static void prompt_free(prompt *p)
{
    free(p->t);
    free(p->src.mem);
    free(p->dst.mem);
}

static size_t count_equal_rows(kvbuf *a, kvbuf *b, size_t tokens)
{
    size_t bad = 0;
    for (int l = 0; l < LAYERS; l++)
        for (uint32_t p = 0; p < a->planes; p++)
            for (size_t t = 0; t < tokens; t++)
                bad += memcmp(row_of(a, l, (int)p, t), row_of(b, l, (int)p, t), ROW) != 0;
    return bad;
}


static void test_roundtrip_contiguous(void **state)
{
    fixture *f = *state;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    prompt pr; /* 6 whole chunks + 4 tokens */
    prompt_init(&pr, 100, 1, 2);

    size_t hit = 99;
    assert_int_equal(kvs_lookup(e, pr.t, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 0);
    kvs_op_result r;
    tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
    assert_int_equal(r.status, KVS_OK);
    assert_int_equal(r.chunks_done, 6);
    assert_int_equal(r.tokens, 96);
    assert_int_equal(r.bytes, 6ull * LAYERS * 2 * CHUNK * ROW);
    /* Storing again writes nothing. */
    tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
    assert_int_equal(r.chunks_done, 0);
    assert_int_equal(r.chunks_present, 6);

    assert_int_equal(kvs_lookup(e, pr.t, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 96);
    memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
    size_t loaded = 0;
    assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 96);
    assert_int_equal(count_equal_rows(&pr.src, &pr.dst, 96), 0);
    /* Tokens past the loaded prefix were not touched. */
    assert_int_equal(row_of(&pr.dst, 0, 0, 97)[0], 0xee);

    /* A second engine (another instance) finds the files through the store. */
    kvs_engine *e2;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e2), KVS_OK);
    assert_int_equal(kvs_lookup(e2, pr.t, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 96);
    memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
    assert_int_equal(kvs_retrieve(e2, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 96);
    assert_int_equal(count_equal_rows(&pr.src, &pr.dst, 96), 0);
    kvs_stats s;
    assert_int_equal(kvs_engine_stats(e2, &s, sizeof s), KVS_OK);
    assert_int_equal(s.hits_store, 6);
    assert_true(s.store_probes >= 1);
    assert_int_equal(s.retrieve_hit_tokens, 96);

    /* A prompt sharing only the first 40 tokens hits 2 chunks. */
    uint32_t u[100];
    memcpy(u, pr.t, sizeof u);
    u[40] ^= 0x55;
    assert_int_equal(kvs_lookup(e2, u, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 32);
    assert_int_equal(kvs_retrieve(e2, u, pr.n, &pr.dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 32);
    kvs_engine_close(e2);
    kvs_engine_close(e);
    prompt_free(&pr);
}

/* vLLM-style paged caches: [2][num_blocks][block_size][row] per layer, a
 * random slot for each token; stored from one cache, loaded into another
 * with different slots. */
static void test_paged_layout(void **state)
{
    fixture *f = *state;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    const size_t n = 64, blocks = 32, bs = 4, slots = blocks * bs;
    uint32_t t[64];
    tu_tokens(t, n, 2);
    uint8_t *cache_a[LAYERS], *cache_b[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        cache_a[l] = malloc(2 * slots * ROW);
        cache_b[l] = malloc(2 * slots * ROW);
        for (size_t i = 0; i < 2 * slots * ROW; i++)
            cache_a[l][i] = (uint8_t)(rand());
        memset(cache_b[l], 0xee, 2 * slots * ROW);
    }
    /* Blocks assigned in a scrambled order, as a block manager would. */
    int64_t map_a[64], map_b[64];
    for (size_t i = 0; i < n; i++) {
        map_a[i] = (int64_t)((((i / bs) * 7) % blocks) * bs + i % bs);
        map_b[i] = (int64_t)((((i / bs) * 11 + 3) % blocks) * bs + i % bs);
    }
    kvs_kv a = {.mem = KVS_MEM_HOST, .num_layers = LAYERS, .layers = (void *const *)cache_a,
                .num_slots = slots, .block_size = bs, .slot_mapping = map_a};
    kvs_kv b = a;
    b.layers = (void *const *)cache_b;
    b.slot_mapping = map_b;
    kvs_op_result r;
    tu_store_wait(e, t, n, &a, &r);
    assert_int_equal(r.chunks_done, 4);
    size_t loaded;
    assert_int_equal(kvs_retrieve(e, t, n, &b, &loaded), KVS_OK);
    assert_int_equal(loaded, 64);
    for (int l = 0; l < LAYERS; l++)
        for (int p = 0; p < 2; p++)
            for (size_t i = 0; i < n; i++)
                assert_memory_equal(cache_a[l] + ((size_t)p * slots + (size_t)map_a[i]) * ROW,
                                    cache_b[l] + ((size_t)p * slots + (size_t)map_b[i]) * ROW, ROW);
    /* Slots not in the mapping stay untouched. */
    size_t untouched = 0;
    for (size_t s = 0; s < slots; s++) {
        bool used = false;
        for (size_t i = 0; i < n; i++)
            used |= (size_t)map_b[i] == s;
        if (!used)
            untouched += cache_b[0][s * ROW] == 0xee;
        else
            continue;
    }
    assert_int_equal(untouched, slots - n);

    /* Negative slots: the first chunk "already computed" (all -1) is taken
     * as in place; a chunk with some -1 is not stored. */
    int64_t map_c[64];
    memcpy(map_c, map_b, sizeof map_c);
    for (int i = 0; i < 16; i++)
        map_c[i] = -1;
    b.slot_mapping = map_c;
    memset(cache_b[0], 0xee, 2 * slots * ROW);
    assert_int_equal(kvs_retrieve(e, t, n, &b, &loaded), KVS_OK);
    assert_int_equal(loaded, 64);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    uint32_t u[64];
    tu_tokens(u, n, 3);
    int64_t map_d[64];
    memcpy(map_d, map_a, sizeof map_d);
    map_d[20] = -1; /* chunk 1 has a hole */
    a.slot_mapping = map_d;
    tu_store_wait(e, u, n, &a, &r);
    assert_int_equal(r.chunks_done, 3);
    size_t hit;
    assert_int_equal(kvs_lookup(e, u, n, &hit), KVS_OK);
    assert_int_equal(hit, 16); /* chunk 1 missing ends the prefix */
    for (int l = 0; l < LAYERS; l++) {
        free(cache_a[l]);
        free(cache_b[l]);
    }
    kvs_engine_close(e);
}

static void test_partial_chunks_and_mla(void **state)
{
    fixture *f = *state;
    assert_int_equal(kvs_config_set(f->cfg, "save_unfull_chunk", "true"), KVS_OK);
    f->ns.layout = KVS_LAYOUT_MLA;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    prompt pr;
    prompt_init(&pr, 40, 4, 1);
    kvs_op_result r;
    tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
    assert_int_equal(r.chunks_done, 3);
    assert_int_equal(r.tokens, 40);
    size_t loaded, hit;
    assert_int_equal(kvs_lookup(e, pr.t, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 40);
    memset(pr.dst.mem, 0xee, LAYERS * pr.n * ROW);
    assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 40);
    assert_int_equal(count_equal_rows(&pr.src, &pr.dst, 40), 0);
    /* A longer prompt does not match the partial chunk: its third chunk has
     * other tokens. */
    uint32_t longer[48];
    memcpy(longer, pr.t, pr.n * sizeof *pr.t);
    tu_tokens(longer + 40, 8, 5);
    assert_int_equal(kvs_lookup(e, longer, 48, &hit), KVS_OK);
    assert_int_equal(hit, 32);
    kvs_engine_close(e);
    prompt_free(&pr);
}

/* Every file of the test namespace under f->dir, in order of listing. */
static int list_chunk_files(const char *dir, char paths[][4096], int max)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "find %s -type f -regextype posix-extended -regex '.*/[0-9a-f]{64}' | sort", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    while (n < max && fgets(paths[n], 4096, p)) {
        paths[n][strcspn(paths[n], "\n")] = '\0';
        n++;
    }
    pclose(p);
    return n;
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* Each corruption of the one stored chunk must be a miss with its reason
 * counted, never a hit, and the bad file must go away. */
static void test_bad_files_are_misses(void **state)
{
    fixture *f = *state;
    prompt pr;
    prompt_init(&pr, 16, 6, 2);
    const size_t payload = (size_t)LAYERS * 2 * CHUNK * ROW;
    enum { TRUNCATE, EXTEND, FLIP_PAYLOAD, FLIP_HEADER, VERSION, SWAP, DIRECTORY, FIFO, SYMLINK,
           EMPTY, NCASES };
    size_t reasons[NCASES] = {
        offsetof(kvs_stats, miss_truncated), offsetof(kvs_stats, miss_truncated),
        offsetof(kvs_stats, miss_checksum), offsetof(kvs_stats, miss_bad_header),
        offsetof(kvs_stats, miss_version), offsetof(kvs_stats, miss_foreign),
        offsetof(kvs_stats, miss_not_regular), offsetof(kvs_stats, miss_not_regular),
        offsetof(kvs_stats, miss_not_regular), offsetof(kvs_stats, miss_truncated),
    };
    uint32_t other[16];
    tu_tokens(other, pr.n, 99);
    for (int c = 0; c < NCASES; c++) {
        kvs_engine *e;
        assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
        kvs_op_result r;
        size_t removed;
        kvs_remove(e, pr.t, pr.n, &removed);
        kvs_remove(e, other, pr.n, &removed);
        tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
        assert_int_equal(r.chunks_done, 1);
        char files[4][4096];
        assert_int_equal(list_chunk_files(f->dir, files, 4), 1);
        const char *path = files[0];
        char tmp[4200];
        switch (c) {
        case TRUNCATE: assert_int_equal(truncate(path, 4096 + payload / 2), 0); break;
        case EXTEND: assert_int_equal(truncate(path, 4096 + payload + 8192), 0); break;
        case FLIP_PAYLOAD: flip_byte(path, 4096 + (off_t)payload - 3); break;
        case FLIP_HEADER: flip_byte(path, 100); break;
        case VERSION: {
            /* A well-formed header of another format version. */
            int fd = open(path, O_RDWR);
            uint8_t h[KVS_HEADER_BYTES];
            assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
            h[8] = KVS_FORMAT_VERSION_CODEC + 1;
            assert_int_equal(pwrite(fd, h, sizeof h, 0), (ssize_t)sizeof h);
            close(fd);
            break;
        }
        case SWAP: {
            /* Another chunk's valid file moved under this chunk's name. */
            tu_store_wait(e, other, pr.n, &pr.src.kv, &r);
            char all[4][4096];
            assert_int_equal(list_chunk_files(f->dir, all, 4), 2);
            const char *mine = strcmp(all[0], path) == 0 ? all[0] : all[1];
            const char *theirs = strcmp(all[0], path) == 0 ? all[1] : all[0];
            assert_int_equal(rename(theirs, mine), 0);
            break;
        }
        case DIRECTORY:
            assert_int_equal(unlink(path), 0);
            assert_int_equal(mkdir(path, 0755), 0);
            break;
        case FIFO:
            assert_int_equal(unlink(path), 0);
            assert_int_equal(mkfifo(path, 0644), 0);
            break;
        case SYMLINK:
            snprintf(tmp, sizeof tmp, "%s.target", path);
            assert_int_equal(rename(path, tmp), 0);
            assert_int_equal(symlink(tmp, path), 0);
            break;
        case EMPTY: assert_int_equal(truncate(path, 0), 0); break;
        }
        kvs_engine_close(e);
        /* A fresh engine: no index, so only the file decides. */
        assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
        memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
        size_t loaded = 7;
        assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
        assert_int_equal(loaded, 0);
        kvs_stats s;
        kvs_engine_stats(e, &s, sizeof s);
        uint64_t count = *(uint64_t *)((char *)&s + reasons[c]);
        if (count != 1)
            fail_msg("case %d: reason counter is %llu", c, (unsigned long long)count);
        assert_int_equal(s.hits_store, 0);
        /* Nothing unverified reached the caller's memory. */
        for (size_t i = 0; i < (size_t)LAYERS * 2 * pr.n * ROW; i++)
            if (pr.dst.mem[i] != 0xee)
                fail_msg("case %d: byte %zu was written", c, i);
        if (c <= VERSION || c == SWAP || c == EMPTY) {
            /* Provably bad files are removed, so a store can replace them. */
            struct stat st;
            assert_int_not_equal(lstat(path, &st), 0);
            tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
            assert_int_equal(r.chunks_done, 1);
            assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
            assert_int_equal(loaded, 16);
        } else if (c == DIRECTORY) {
            rmdir(path);
        } else {
            unlink(path);
            if (c == SYMLINK)
                unlink(tmp);
        }
        kvs_engine_close(e);
    }
    prompt_free(&pr);
}

static void test_vanished_file(void **state)
{
    fixture *f = *state;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    prompt pr;
    prompt_init(&pr, 48, 7, 2);
    kvs_op_result r;
    tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
    size_t hit, loaded;
    assert_int_equal(kvs_lookup(e, pr.t, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 48);
    /* Another instance evicts chunk 1 between lookup and retrieve. */
    char files[4][4096];
    assert_int_equal(list_chunk_files(f->dir, files, 4), 3);
    uint8_t key[3][32];
    size_t nk;
    kvs_chunk_keys(pr.t, pr.n, CHUNK, key, 3, &nk);
    char hex[65];
    kvs__hex(key[1], 32, hex);
    for (int i = 0; i < 3; i++)
        if (strstr(files[i], hex))
            assert_int_equal(unlink(files[i]), 0);
    assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 16);
    assert_int_equal(count_equal_rows(&pr.src, &pr.dst, 16), 0);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    assert_int_equal(s.miss_vanished, 1);
    assert_int_equal(kvs_lookup(e, pr.t, pr.n, &hit), KVS_OK);
    assert_int_equal(hit, 16);
    kvs_engine_close(e);
    prompt_free(&pr);
}

static void test_layers_and_direct(void **state)
{
    fixture *f = *state;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    prompt pr;
    prompt_init(&pr, 64, 8, 2);
    pr.src.kv.flags = KVS_KV_DIRECT;
    kvs_op_result r;
    tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
    assert_int_equal(r.chunks_done, 4);
    for (int direct = 0; direct < 2; direct++) {
        memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
        pr.dst.kv.flags = direct ? KVS_KV_DIRECT : 0;
        kvs_op *op;
        assert_int_equal(kvs_retrieve_start(e, pr.t, pr.n, &pr.dst.kv, &op), KVS_OK);
        size_t prev = pr.n;
        for (uint32_t l = 0; l < LAYERS; l++) {
            size_t got;
            assert_int_equal(kvs_op_wait_layer(op, l, &got), KVS_OK);
            assert_true(got <= prev);
            prev = got;
            /* Layer l of every loaded chunk is in place now. */
            for (int p = 0; p < 2; p++)
                for (size_t tk = 0; tk < got; tk++)
                    assert_memory_equal(row_of(&pr.src, (int)l, p, tk),
                                        row_of(&pr.dst, (int)l, p, tk), ROW);
        }
        assert_int_equal(kvs_op_wait(op, -1, &r), KVS_OK);
        assert_int_equal(r.tokens, 64);
        kvs_op_free(op);
        assert_int_equal(count_equal_rows(&pr.src, &pr.dst, pr.n), 0);
    }
    assert_int_equal(kvs_op_wait_layer(NULL, 0, NULL), KVS_ERR_INVALID);
    kvs_engine_close(e);
    prompt_free(&pr);
}

typedef struct worker_arg {
    fixture *f;
    kvs_engine *e;
    int id;
    int errors;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    const size_t n = 80;
    uint32_t t[80];
    kvbuf src, dst;
    kvbuf_init(&src, n, 2);
    kvbuf_init(&dst, n, 2);
    for (int round = 0; round < 20; round++) {
        /* Prompts share prefixes across threads: seeds repeat. */
        tu_tokens(t, n, (uint32_t)((a->id + round) % 5));
        fill_rows(&src, t);
        kvs_op *op = NULL;
        if (kvs_store(a->e, t, n, &src.kv, &op) != KVS_OK) {
            a->errors++;
            continue;
        }
        kvs_op_result r;
        kvs_op_wait(op, -1, &r);
        kvs_op_free(op);
        size_t loaded = 0;
        memset(dst.mem, 0, LAYERS * 2 * n * ROW);
        if (kvs_retrieve(a->e, t, n, &dst.kv, &loaded) != KVS_OK)
            a->errors++;
        if (count_equal_rows(&src, &dst, loaded) != 0)
            a->errors += 1000;
    }
    free(src.mem);
    free(dst.mem);
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    fixture *f = *state;
    kvs_engine *e[2];
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e[0]), KVS_OK);
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e[1]), KVS_OK);
    pthread_t th[6];
    worker_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (worker_arg){f, e[i % 2], i, 0};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].errors, 0);
    }
    kvs_engine_close(e[0]);
    kvs_engine_close(e[1]);
    /* No temporary file is left behind. */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "find %s -name '*.tmp' | wc -l", f->dir);
    FILE *p = popen(cmd, "r");
    int tmps = -1;
    assert_int_equal(fscanf(p, "%d", &tmps), 1);
    pclose(p);
    assert_int_equal(tmps, 0);
}

static void test_cpu_tier_hits(void **state)
{
    fixture *f = *state;
    assert_int_equal(kvs_config_set(f->cfg, "local_cpu", "true"), KVS_OK);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    prompt pr;
    prompt_init(&pr, 32, 9, 2);
    kvs_op_result r;
    tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
    /* Remove the files: the CPU tier still serves this instance. */
    char files[4][4096];
    int nf = list_chunk_files(f->dir, files, 4);
    for (int i = 0; i < nf; i++)
        unlink(files[i]);
    size_t loaded;
    assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 32);
    assert_int_equal(count_equal_rows(&pr.src, &pr.dst, pr.n), 0);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    assert_int_equal(s.hits_cpu, 2);
    assert_int_equal(s.cpu_chunks, 2);
    kvs_engine_close(e);
    prompt_free(&pr);
}

/* Large CPU tier hits are copied on the I/O workers (engine.c,
 * hits_on_workers); here every hit goes there (hit_split_bytes 1). */
static kvs_engine *open_hits_engine(fixture *f, uint64_t split)
{
    assert_int_equal(kvs_config_set(f->cfg, "local_cpu", "true"), KVS_OK);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    e->hit_split_bytes = split;
    return e;
}

/* Waits for a retrieve of n tokens layer by layer, checking that each
 * layer of every token is in place (equal to src) when its wait returns;
 * then the op's result, and the op is freed. */
static void wait_layers_in_place(kvs_op *op, kvbuf *src, kvbuf *dst, size_t n,
                                 kvs_op_result *r)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        size_t got = 0;
        assert_int_equal(kvs_op_wait_layer(op, l, &got), KVS_OK);
        assert_int_equal(got, n);
        for (int p = 0; p < 2; p++)
            for (size_t tk = 0; tk < n; tk++)
                assert_memory_equal(row_of(src, (int)l, p, tk), row_of(dst, (int)l, p, tk), ROW);
    }
    assert_int_equal(kvs_op_wait(op, -1, r), KVS_OK);
    kvs_op_free(op);
}

static void test_cpu_hits_on_workers(void **state)
{
    fixture *f = *state;
    prompt pr; /* 4 chunks */
    prompt_init(&pr, 64, 21, 2);
    uint8_t keys[4][KVS_KEY_BYTES];
    size_t nkeys = 0;
    assert_int_equal(kvs_chunk_keys(pr.t, pr.n, CHUNK, keys, 4, &nkeys), KVS_OK);
    assert_int_equal(nkeys, 4);
    /* on the workers; on the caller's thread; on the workers, reads in layer
     * order */
    for (int mode = 0; mode < 3; mode++) {
        assert_int_equal(kvs_config_set(f->cfg, "retrieve_order", mode == 2 ? "layer" : "chunk"),
                         KVS_OK);
        kvs_engine *e = open_hits_engine(f, mode == 1 ? UINT64_MAX : 1);
        kvs_op_result r;
        tu_store_wait(e, pr.t, pr.n, &pr.src.kv, &r);
        assert_int_equal(r.chunks_done, 4);
        for (int k = 0; k < 4; k++)
            assert_true(kvs__cpu_tier_contains(e->cpu, keys[k]));
        /* Every chunk from the tier, layer by layer: each layer of every
         * loaded chunk is in place when its wait returns. */
        memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
        kvs_op *op;
        assert_int_equal(kvs_retrieve_start(e, pr.t, pr.n, &pr.dst.kv, &op), KVS_OK);
        wait_layers_in_place(op, &pr.src, &pr.dst, pr.n, &r);
        assert_int_equal(r.tokens, pr.n);
        assert_int_equal(r.bytes, 4ull * LAYERS * 2 * CHUNK * ROW);
        kvs_stats s;
        kvs_engine_stats(e, &s, sizeof s);
        assert_int_equal(s.hits_cpu, 4);
        assert_int_equal(s.hits_store, 0);

        /* Chunk 1 only on the store (and chunk 2 too in layer order, which
         * takes two reads): hits and reads in one retrieve, layer by layer. */
        const int nread = mode == 2 ? 2 : 1;
        for (int k = 1; k <= nread; k++) {
            kvs__cpu_tier_remove(e->cpu, keys[k]);
            assert_false(kvs__cpu_tier_contains(e->cpu, keys[k]));
        }
        memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
        assert_int_equal(kvs_retrieve_start(e, pr.t, pr.n, &pr.dst.kv, &op), KVS_OK);
        assert_int_equal(op->layer_order, mode == 2);
        wait_layers_in_place(op, &pr.src, &pr.dst, pr.n, &r);
        assert_int_equal(r.tokens, pr.n);
        size_t loaded = 0;
        assert_int_equal(count_equal_rows(&pr.src, &pr.dst, pr.n), 0);
        kvs_engine_stats(e, &s, sizeof s);
        assert_int_equal(s.hits_cpu, 8 - (uint64_t)nread);
        assert_int_equal(s.hits_store, (uint64_t)nread);

        /* Chunk 2 nowhere: the prefix ends before it, whatever chunk 3's
         * hit does. */
        char path[KVS_PATH_MAX];
        kvs__store_chunk_path(&e->store, keys[2], path);
        assert_int_equal(unlink(path), 0);
        kvs__cpu_tier_remove(e->cpu, keys[2]);
        kvs__index_forget(e->index, keys[2]);
        memset(pr.dst.mem, 0xee, LAYERS * 2 * pr.n * ROW);
        assert_int_equal(kvs_retrieve(e, pr.t, pr.n, &pr.dst.kv, &loaded), KVS_OK);
        assert_int_equal(loaded, 2 * CHUNK);
        assert_int_equal(count_equal_rows(&pr.src, &pr.dst, 2 * CHUNK), 0);
        kvs_remove(e, pr.t, pr.n, &nkeys);
        kvs_engine_close(e);
    }
    assert_int_equal(kvs_config_set(f->cfg, "retrieve_order", "chunk"), KVS_OK);
    prompt_free(&pr);
}

/* Holds an I/O worker until released. */
typedef struct blocker {
    kvs_task task;
    _Atomic int *running;
    _Atomic int *release;
} blocker;

static void blocker_fn(kvs_task *task, kvs_worker *w)
{
    (void)w;
    blocker *b = (blocker *)task;
    atomic_fetch_add(b->running, 1);
    while (!atomic_load(b->release))
        usleep(1000);
}

/* Holds every I/O worker of e with blockers b until *release is set. */
static void block_workers(kvs_engine *e, blocker *b, _Atomic int *running, _Atomic int *release)
{
    const uint32_t threads = kvs__pool_threads(e->pool);
    assert_true(threads <= 16);
    atomic_store(running, 0);
    atomic_store(release, 0);
    for (uint32_t i = 0; i < threads; i++) {
        b[i] = (blocker){.task.fn = blocker_fn, .running = running, .release = release};
        kvs__pool_submit(e->pool, &b[i].task, KVS_PRIO_READ);
    }
    while (atomic_load(running) < (int)threads)
        usleep(1000);
}

/* The four chunks of a 64-token prompt stored by an engine whose CPU tier
 * hits all go to the workers: on the store and in the tier. */
typedef struct hits_case {
    kvs_engine *e;
    uint32_t t[64];
    uint8_t keys[4][KVS_KEY_BYTES];
    kvbuf src, dst;
} hits_case;

static void hits_case_open(fixture *f, hits_case *h, uint32_t seed)
{
    h->e = open_hits_engine(f, 1);
    tu_tokens(h->t, 64, seed);
    size_t nkeys = 0;
    assert_int_equal(kvs_chunk_keys(h->t, 64, CHUNK, h->keys, 4, &nkeys), KVS_OK);
    kvbuf_init(&h->src, 64, 2);
    kvbuf_init(&h->dst, 64, 2);
    fill_rows(&h->src, h->t);
    kvs_op_result r;
    tu_store_wait(h->e, h->t, 64, &h->src.kv, &r);
    assert_int_equal(r.chunks_done, 4);
}

static void hits_case_close(hits_case *h)
{
    kvs_engine_close(h->e);
    free(h->src.mem);
    free(h->dst.mem);
}

/* Lets the blocked workers go and waits until the pool is idle. */
static void release_workers(kvs_engine *e, _Atomic int *release)
{
    atomic_store(release, 1);
    for (int i = 0; i < 5000 && kvs__pool_load(e->pool) > 0; i++)
        usleep(1000);
    assert_int_equal(kvs__pool_load(e->pool), 0);
}

/* A retrieve released while its hits wait for a worker: nothing is copied
 * into the caller's memory after kvs_op_free returns, nothing is counted as
 * loaded, and the tier entries are unpinned. */
static void test_cpu_hits_on_workers_cancel(void **state)
{
    fixture *f = *state;
    hits_case h;
    hits_case_open(f, &h, 22);
    kvs_engine *e = h.e;
    const size_t n = 64;
    kvs_op_result r;
    _Atomic int running, release;
    blocker b[16];
    block_workers(e, b, &running, &release);
    memset(h.dst.mem, 0xee, LAYERS * 2 * n * ROW);
    kvs_op *op;
    assert_int_equal(kvs_retrieve_start(e, h.t, n, &h.dst.kv, &op), KVS_OK);
    assert_int_equal(kvs_op_wait(op, 0, &r), KVS_ERR_TIMEOUT); /* queued, not run */
    kvs_op_free(op);
    memset(h.dst.mem, 0x5a, LAYERS * 2 * n * ROW); /* the caller's again */
    release_workers(e, &release);
    for (size_t i = 0; i < (size_t)LAYERS * 2 * n * ROW; i++)
        if (h.dst.mem[i] != 0x5a)
            fail_msg("byte %zu of the caller's memory written after kvs_op_free", i);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    assert_int_equal(s.hits_cpu, 0);
    for (int k = 0; k < 4; k++) { /* a pinned entry would stay */
        kvs__cpu_tier_remove(e->cpu, h.keys[k]);
        assert_false(kvs__cpu_tier_contains(e->cpu, h.keys[k]));
    }
    hits_case_close(&h);
}

/* A retrieve whose deadline passes while its chunks wait for a worker:
 * every chunk is a timed-out miss either way, but only chunks that are file
 * reads say something about the store (one I/O failure towards
 * failure_threshold); CPU tier hits copied on the workers do not. */
static void test_deadline_counts_store_failures(void **state)
{
    fixture *f = *state;
    assert_int_equal(kvs_config_set(f->cfg, "io_timeout_ms", "100"), KVS_OK);
    hits_case h;
    hits_case_open(f, &h, 23);
    kvs_engine *e = h.e;
    kvs_op_result r;

    blocker b[16];
    _Atomic int running, release;
    for (int from_files = 0; from_files < 2; from_files++) {
        if (from_files)
            for (int k = 0; k < 4; k++)
                kvs__cpu_tier_remove(e->cpu, h.keys[k]);
        for (int k = 0; k < 4; k++)
            assert_true(kvs__cpu_tier_contains(e->cpu, h.keys[k]) == !from_files);
        atomic_store(&e->failures, 0);
        kvs_stats before, after;
        kvs_engine_stats(e, &before, sizeof before);
        block_workers(e, b, &running, &release);
        kvs_op *op;
        kvs_status started = kvs_retrieve_start(e, h.t, 64, &h.dst.kv, &op);
        kvs_status waited = started ? started : kvs_op_wait(op, -1, &r); /* at the deadline */
        uint32_t failures = atomic_load(&e->failures);
        kvs_engine_stats(e, &after, sizeof after);
        if (!started)
            kvs_op_free(op);
        /* the workers go back before any check can end the test */
        release_workers(e, &release);
        assert_int_equal(waited, KVS_OK);
        assert_int_equal(r.status, KVS_ERR_TIMEOUT);
        assert_int_equal(r.tokens, 0);
        assert_int_equal(after.miss_timeout - before.miss_timeout, 4);
        assert_int_equal(after.hits_cpu, before.hits_cpu);
        assert_int_equal(failures, from_files ? 1 : 0);
    }
    hits_case_close(&h);
}

static void test_misuse(void **state)
{
    fixture *f = *state;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(NULL, &f->ns, &e), KVS_ERR_INVALID);
    assert_int_equal(kvs_engine_open(f->cfg, NULL, &e), KVS_ERR_INVALID);
    kvs_namespace bad = f->ns;
    bad.num_layers = 0;
    assert_int_equal(kvs_engine_open(f->cfg, &bad, &e), KVS_ERR_INVALID);
    /* A configured weka_path that does not exist is a configuration error
     * that says what to do. */
    kvs_config *c2;
    kvs_config_copy(f->cfg, &c2);
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/not-there", f->dir);
    assert_int_equal(kvs_config_set(c2, "weka_path", missing), KVS_OK);
    assert_int_equal(kvs_engine_open(c2, &f->ns, &e), KVS_ERR_CONFIG);
    assert_non_null(strstr(kvs_last_error(), "mkdir"));
    kvs_config_free(c2);

    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t t[32] = {0};
    kvbuf b;
    kvbuf_init(&b, 32, 2);
    size_t out;
    kvs_op *op;
    assert_int_equal(kvs_lookup(NULL, t, 32, &out), KVS_ERR_INVALID);
    assert_int_equal(kvs_lookup(e, NULL, 32, &out), KVS_ERR_INVALID);
    assert_int_equal(kvs_lookup(e, t, 32, NULL), KVS_ERR_INVALID);
    assert_int_equal(kvs_retrieve(e, t, 32, NULL, &out), KVS_ERR_INVALID);
    assert_int_equal(kvs_store(e, t, 32, &b.kv, NULL), KVS_ERR_INVALID);
    kvs_kv k = b.kv;
    k.num_layers = LAYERS + 1;
    assert_int_equal(kvs_store(e, t, 32, &k, &op), KVS_ERR_INVALID);
    assert_non_null(strstr(kvs_last_error(), "num_layers"));
    k = b.kv;
    k.num_slots = 10; /* too small for 32 tokens */
    assert_int_equal(kvs_retrieve(e, t, 32, &k, &out), KVS_ERR_INVALID);
    int64_t slots[32];
    for (int i = 0; i < 32; i++)
        slots[i] = i;
    slots[31] = 32; /* out of range */
    k = b.kv;
    k.slot_mapping = slots;
    assert_int_equal(kvs_retrieve(e, t, 32, &k, &out), KVS_ERR_INVALID);
    assert_non_null(strstr(kvs_last_error(), "slot_mapping[31]"));
    k = b.kv;
    k.mem = KVS_MEM_CUDA;
    /* host memory flagged as CUDA: unsupported without CUDA or a GPU, and
     * rejected as "not CUDA memory" where there is one */
    kvs_status cuda_st = kvs_retrieve(e, t, 32, &k, &out);
    assert_true(cuda_st == KVS_ERR_UNSUPPORTED || cuda_st == KVS_ERR_INVALID);
    k = b.kv;
    k.flags = 0x80;
    assert_int_equal(kvs_retrieve(e, t, 32, &k, &out), KVS_ERR_INVALID);
    assert_int_equal(kvs_op_wait(NULL, 0, NULL), KVS_ERR_INVALID);
    kvs_op_free(NULL);
    kvs_engine_close(NULL);
    /* Zero tokens is fine and does nothing. */
    assert_int_equal(kvs_lookup(e, t, 0, &out), KVS_OK);
    assert_int_equal(out, 0);
    assert_int_equal(kvs_retrieve(e, t, 0, &b.kv, &out), KVS_OK);
    assert_int_equal(out, 0);
    kvs_engine_close(e);
    free(b.mem);
}

static void test_stats_forms(void **state)
{
    fixture *f = *state;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t t[16];
    tu_tokens(t, 16, 10);
    size_t hit;
    kvs_lookup(e, t, 16, &hit);
    char *json = NULL, *prom = NULL;
    assert_int_equal(kvs_engine_stats_json(e, &json), KVS_OK);
    assert_non_null(strstr(json, "\"lookups\": 1"));
    assert_non_null(strstr(json, "\"miss_checksum\": 0"));
    assert_int_equal(kvs_engine_metrics(e, &prom), KVS_OK);
    assert_non_null(strstr(prom, "# TYPE kvstash_chunk_misses_total counter"));
    assert_non_null(strstr(prom, "reason=\"checksum\"} 0"));
    assert_non_null(strstr(prom, "kvstash_lookups_total{namespace=\"test_model-"));
    /* Each metric family is described once. */
    char *first = strstr(prom, "# HELP kvstash_chunk_misses_total");
    assert_non_null(first);
    assert_null(strstr(first + 1, "# HELP kvstash_chunk_misses_total"));
    kvs_free(json);
    kvs_free(prom);
    kvs_engine_close(e);
}

/* Issue 11: dropped stores are logged with their reason (rate-limited), a
 * retrieve that loads says so in one line, the store time counters mean
 * what their names say, and the store-wide gauge is not per namespace. */
static void test_ops_logs_and_times(void **state)
{
    fixture *f = *state;
    const uint64_t chunk = (uint64_t)LAYERS * 2 * 16 * ROW;
    char gb[64];
    snprintf(gb, sizeof gb, "%.12g", (double)chunk * 2.5 / 1e9);
    assert_int_equal(kvs_config_set(f->cfg, "extra_config.max_pending_store_size", gb), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "log_level", "info"), KVS_OK);
    tu_capture_logs(1);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
    uint32_t t[256];
    tu_tokens(t, 256, 11);
    kvbuf b;
    kvbuf_init(&b, 256, 2);
    fill_rows(&b, t);
    kvs_op_result r;
    tu_store_wait(e, t, 256, &b.kv, &r);
    assert_int_equal(r.chunks_done, 2);
    assert_int_equal(r.chunks_failed, 14);
    tu_store_wait(e, t + 32, 224, &b.kv, &r); /* more drops, inside the 10 s window */
    const char *logs = tu_logs();
    const char *line = strstr(logs, "store: 14 of 16 chunks not stored (14: store queue full");
    assert_non_null(line);
    assert_non_null(strstr(line, "max_pending_store_size"));
    if (strstr(strchr(line, '\n'), "chunks not stored")) /* the second store: held back */
        fail_msg("logs: %s", logs);

    kvs_stats s;
    assert_int_equal(kvs_engine_stats(e, &s, sizeof s), KVS_OK);
    assert_int_equal(s.store_dropped, 14 + 12);
    assert_true(s.store_op_ns > 0);
    assert_true(s.store_ns > 0);
    /* worker time: never more than the workers (3) for as long as the stores ran */
    assert_true(s.store_ns <= 3 * s.store_op_ns + 1000000);

    size_t got = 0;
    assert_int_equal(kvs_retrieve(e, t, 256, &b.kv, &got), KVS_OK);
    assert_int_equal(got, 32);
    assert_non_null(strstr(tu_logs(), "retrieved 32 of 256 tokens to load (0 already in "
                                      "place), 2 chunks, "));
    char *prom = NULL;
    assert_int_equal(kvs_engine_metrics(e, &prom), KVS_OK);
    assert_non_null(strstr(prom, "kvstash_store_used_bytes{store=\""));
    assert_null(strstr(prom, "kvstash_store_used_bytes{namespace="));
    assert_non_null(strstr(prom, "kvstash_store_seconds_total{namespace="));
    kvs_free(prom);
    kvs_engine_close(e);
    tu_capture_logs(0);
    free(b.mem);
}

/* The payload writes of one store, as the I/O table saw them. */
#define MAX_WRITES 4096
static struct wrec {
    int fd;
    off_t off;
    size_t n;
} wlog[MAX_WRITES];
static size_t nwlog;
static pthread_mutex_t wlog_mu = PTHREAD_MUTEX_INITIALIZER;

static void wlog_add(int fd, off_t off, size_t n)
{
    pthread_mutex_lock(&wlog_mu);
    if (off >= (off_t)KVS_PAYLOAD_OFFSET && nwlog < MAX_WRITES)
        wlog[nwlog++] = (struct wrec){fd, off, n};
    pthread_mutex_unlock(&wlog_mu);
}

static ssize_t logged_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ssize_t r = kvs__io_posix.pwrite(fd, buf, n, off);
    if (r > 0)
        wlog_add(fd, off, (size_t)r);
    return r;
}

static ssize_t logged_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    ssize_t r = kvs__io_posix.pwritev(fd, iov, iovcnt, off);
    if (r > 0)
        wlog_add(fd, off, (size_t)r);
    return r;
}

/* Chunk files whose payload was written front to back with every write
 * but a file's last ending on a multiple of `block` in the file;
 * -1 when a write broke that. */
static int files_written_aligned(uint64_t file_bytes, uint64_t block)
{
    off_t next[1024] = {0};
    int done = 0;
    for (size_t i = 0; i < nwlog; i++) {
        const struct wrec *w = &wlog[i];
        if (w->fd < 0 || w->fd >= 1024)
            return -1;
        if (w->off == (off_t)KVS_PAYLOAD_OFFSET)
            next[w->fd] = w->off;
        uint64_t end = (uint64_t)w->off + w->n;
        if (w->off != next[w->fd] || (end != file_bytes && end % block != 0)) {
            print_error("write of %zu bytes at %lld (expected at %lld, ending on a multiple of "
                        "%llu or at %llu)\n", w->n, (long long)w->off, (long long)next[w->fd],
                        (unsigned long long)block, (unsigned long long)file_bytes);
            return -1;
        }
        next[w->fd] = (off_t)end;
        done += end == file_bytes;
    }
    return done;
}

/* A host store writes chunk files in calls that end on file offsets that
 * are multiples of the write block (the payload starts 4 KiB into the
 * file), so that the page cache can fill a file with folios as large as
 * the block, which later reads copy out at up to half again the speed of
 * small ones (docs/design.md); from the worker's buffer (with and without
 * the CPU tier filling), from the caller's rows (KVS_KV_DIRECT) and from
 * both in one chunk, and every byte lands where a retrieve verifies it. */
static void test_store_writes_file_aligned(void **state)
{
    fixture *f = *state;
    assert_int_equal(kvs_config_set(f->cfg, "chunk_size", "256"), KVS_OK);
    kvs_namespace ns = {.model = "test/blocks", .dtype = KVS_DTYPE_BF16, .num_layers = 5,
                        .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    const uint64_t row = 8 * 128 * 2, T = 256, n = 2 * T + 20;
    const uint64_t payload = 5 * 2 * T * row; /* 5 MiB: 2.5 write blocks */
    uint32_t t[2 * 256 + 20];
    /* page-aligned, so that zero-copy blocks qualify under O_DIRECT too */
    uint8_t *src = aligned_alloc(4096, 5 * 2 * n * row), *dst = aligned_alloc(4096, 5 * 2 * n * row);
    void *sl[5], *dl[5];
    kvs_kv skv, dkv;
    tu_kv_contiguous(&skv, src, sl, 5, 2, n, row);
    tu_kv_contiguous(&dkv, dst, dl, 5, 2, n, row);
    for (uint64_t i = 0; i < 5 * 2 * n * row; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    kvs_io_ops ops = kvs__io_posix;
    ops.pwrite = logged_pwrite;
    ops.pwritev = logged_pwritev;
    /* Layers 0 and 4 again, 16 bytes off a page: with O_DIRECT (where the
     * test folder takes it) zero-copy blocks need page-aligned memory, so a
     * KVS_KV_DIRECT store sends the first block (layers 0-1) through the
     * bounce buffer, the second (layers 2-3) straight from the rows and the
     * last (layer 4) through the bounce buffer again, the carry passing
     * from one kind of block to the other both ways. */
    const uint64_t lbytes = 2 * n * row;
    uint8_t *odd = malloc(2 * lbytes + 4096 + 16);
    uint8_t *odd0 = (uint8_t *)(((uintptr_t)odd + 4095) / 4096 * 4096 + 16);
    memcpy(odd0, src, lbytes);
    memcpy(odd0 + lbytes, sl[4], lbytes);
    void *ol[5] = {odd0, sl[1], sl[2], sl[3], odd0 + lbytes};
    for (int mode = 0; mode < 4; mode++) { /* bounce, + CPU tier, KVS_KV_DIRECT, mixed */
        assert_int_equal(kvs_config_set(f->cfg, "local_cpu", mode == 1 ? "true" : "false"),
                         KVS_OK);
        kvs_engine *e;
        assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
        assert_true(payload > 2 * e->host_write_block);
        tu_tokens(t, n, 40 + (uint32_t)mode);
        skv.flags = mode >= 2 ? KVS_KV_DIRECT : 0;
        skv.layers = mode == 3 ? ol : sl;
        nwlog = 0;
        const kvs_io_ops *old = kvs__io_set(&ops);
        kvs_op_result r;
        tu_store_wait(e, t, n, &skv, &r);
        kvs__io_set(old);
        assert_int_equal(r.chunks_done, 2);
        assert_int_equal(files_written_aligned(KVS_PAYLOAD_OFFSET + payload,
                                               e->host_write_block), 2);
        kvs_engine_close(e);
        /* A fresh engine: no CPU tier entry, the bytes come from the files. */
        assert_int_equal(kvs_config_set(f->cfg, "local_cpu", "false"), KVS_OK);
        assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
        for (int direct = 0; direct < 2; direct++) {
            memset(dst, 0xee, 5 * 2 * n * row);
            dkv.flags = direct ? KVS_KV_DIRECT : 0;
            size_t loaded = 0;
            assert_int_equal(kvs_retrieve(e, t, n, &dkv, &loaded), KVS_OK);
            assert_int_equal(loaded, 2 * T);
            for (int l = 0; l < 5; l++)
                for (int p = 0; p < 2; p++) {
                    uint64_t at = ((uint64_t)l * 2 + (uint64_t)p) * n * row;
                    assert_memory_equal(src + at, dst + at, 2 * T * row);
                }
        }
        kvs_stats s;
        kvs_engine_stats(e, &s, sizeof s);
        assert_int_equal(s.miss_checksum, 0);
        kvs_engine_close(e);
    }
    free(odd);
    free(src);
    free(dst);
}

/* ---- retrieve_order layer ------------------------------------------------- */

/* The pool serves the rest of open chunks first, then new reads, then
 * pieces in layer order by rank (first come first served within a rank),
 * then writes: one worker, held on a first task while the others queue. */
typedef struct order_task {
    kvs_task task;
    char name;
} order_task;

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t order_cv = PTHREAD_COND_INITIALIZER;
static char order_seen[16];
static int order_n;
static bool gate_open, gate_entered;

static void order_run(kvs_task *t, kvs_worker *w)
{
    (void)w;
    order_task *o = KVS_CONTAINER(t, order_task, task);
    pthread_mutex_lock(&order_mu);
    if (o->name == '0') {
        gate_entered = true;
        pthread_cond_broadcast(&order_cv);
        while (!gate_open)
            pthread_cond_wait(&order_cv, &order_mu);
    } else {
        order_seen[order_n++] = o->name;
        pthread_cond_broadcast(&order_cv);
    }
    pthread_mutex_unlock(&order_mu);
}

static void test_pool_layer_order(void **state)
{
    (void)state;
    kvs_pool *pool;
    assert_int_equal(kvs__pool_create(1, 0, 4096, UINT64_MAX / 2, &pool), KVS_OK);
    static order_task t[9];
    static const struct {
        char name;
        kvs_prio prio;
        uint32_t rank;
    } plan[9] = {
        {'0', KVS_PRIO_READ, 0},       {'A', KVS_PRIO_READ_LAYER, 2},
        {'B', KVS_PRIO_READ_LAYER, 0}, {'C', KVS_PRIO_READ_LAYER, 1},
        {'D', KVS_PRIO_READ_LAYER, 0}, {'E', KVS_PRIO_READ, 0},
        {'F', KVS_PRIO_READ_MORE, 0},  {'G', KVS_PRIO_WRITE, 0},
        {'H', KVS_PRIO_READ_LAYER, 1},
    };
    order_n = 0;
    gate_open = gate_entered = false;
    for (int i = 0; i < 9; i++) {
        t[i] = (order_task){.task = {.fn = order_run, .rank = plan[i].rank}, .name = plan[i].name};
        kvs__pool_submit(pool, &t[i].task, plan[i].prio);
        if (i == 0) {
            pthread_mutex_lock(&order_mu);
            while (!gate_entered)
                pthread_cond_wait(&order_cv, &order_mu);
            pthread_mutex_unlock(&order_mu);
        }
    }
    pthread_mutex_lock(&order_mu);
    gate_open = true;
    pthread_cond_broadcast(&order_cv);
    while (order_n < 8)
        pthread_cond_wait(&order_cv, &order_mu);
    pthread_mutex_unlock(&order_mu);
    assert_memory_equal(order_seen, "FEBDCHAG", 8);
    assert_int_equal(kvs__pool_destroy(pool, 10ull * 1000000000u), 0);
}

/* A retrieve in layer order (chunks of several pieces, four workers)
 * delivers the same bytes, layer by layer, as one in chunk order; and one
 * that the engine's budget of open files cannot hold reads in chunk order
 * and delivers them too. */
static void test_retrieve_order_layer(void **state)
{
    fixture *f = *state;
    assert_int_equal(kvs_config_set(f->cfg, "chunk_size", "256"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "gds_io_threads", "4"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "retrieve_order", "layer"), KVS_OK);
    kvs_namespace ns = {.model = "test/order", .dtype = KVS_DTYPE_BF16, .num_layers = 8,
                        .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    enum { NL = 8, T = 256, NT = 5 * T };
    const uint64_t row = 8 * 128 * 2, bytes = (uint64_t)NL * 2 * NT * row;
    uint8_t *src = malloc(bytes), *dst = malloc(bytes);
    assert_non_null(src);
    assert_non_null(dst);
    void *sl[NL], *dl[NL];
    kvs_kv skv, dkv;
    tu_kv_contiguous(&skv, src, sl, NL, 2, NT, row);
    tu_kv_contiguous(&dkv, dst, dl, NL, 2, NT, row);
    for (uint64_t i = 0; i < bytes; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    static uint32_t tok[NT];
    tu_tokens(tok, NT, 77);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
    kvs_op_result r;
    tu_store_wait(e, tok, NT, &skv, &r);
    assert_int_equal(r.chunks_done, 5);
    assert_true(e->piece_bytes < kvs__padded_payload(e->chunk_payload)); /* several pieces */
    const int64_t files = atomic_load(&e->layer_files_left);
    assert_true(files >= 5);
    for (int budget = 0; budget < 2; budget++) {
        if (budget)
            atomic_store(&e->layer_files_left, 4); /* fewer than the 5 chunks */
        memset(dst, 0xee, bytes);
        kvs_op *op;
        assert_int_equal(kvs_retrieve_start(e, tok, NT, &dkv, &op), KVS_OK);
        assert_int_equal(op->layer_order, !budget);
        for (uint32_t l = 0; l < NL; l++) {
            size_t got;
            assert_int_equal(kvs_op_wait_layer(op, l, &got), KVS_OK);
            assert_int_equal(got, NT);
            for (int p = 0; p < 2; p++)
                assert_memory_equal((uint8_t *)sl[l] + (uint64_t)p * NT * row,
                                    (uint8_t *)dl[l] + (uint64_t)p * NT * row, NT * row);
        }
        assert_int_equal(kvs_op_wait(op, -1, &r), KVS_OK);
        assert_int_equal(r.tokens, NT);
        kvs_op_free(op);
        assert_memory_equal(src, dst, bytes);
        /* the files a layer-order retrieve held are back in the budget */
        assert_int_equal(atomic_load(&e->layer_files_left), budget ? 4 : files);
    }
    kvs_engine_close(e);
    free(src);
    free(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_contiguous, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_paged_layout, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_partial_chunks_and_mla, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_files_are_misses, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_vanished_file, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_layers_and_direct, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_callers, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cpu_tier_hits, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cpu_hits_on_workers, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cpu_hits_on_workers_cancel, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_counts_store_failures, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_misuse, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_stats_forms, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ops_logs_and_times, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_store_writes_file_aligned, setup, tu_teardown),
        cmocka_unit_test(test_pool_layer_order),
        cmocka_unit_test_setup_teardown(test_retrieve_order_layer, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
