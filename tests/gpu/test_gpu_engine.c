/* test_gpu_engine.c - the engine on GPU memory, on real files: round trips
 * through paged flash-attention and MLA caches (bf16, fp8, fp32, odd row
 * sizes, partial chunks, negative slots, fresh random data and block tables
 * every run), files written from host memory read into GPU memory and the
 * reverse (the GPU's checksums are the CPU's), a corrupted file that must
 * leave the caller's memory untouched, staging exhaustion, ordering after
 * the caller's stream, layer-by-layer waiting, CPU tier hits, and the
 * every vLLM cache layout (tests/common/kv_layouts.h: per-plane, packed NHD
 * and HND, MLA, padded blocks) stored from each and loaded into each other,
 * on the GPU and across host and GPU, every byte checked by index
 * arithmetic, the cuFile path or its fallback (GT_EXPECT_CUFILE=1 or 0 says which this
 * machine should show; unset: either, reported), and authenticated chunks
 * (auth_key_file: the pieces' SHA-256 computed on the GPU match the host's;
 * a forged payload is a miss), and the codec (issue 13: bf16 KV stored
 * compressed from GPU memory and loaded back bit for bit, random bytes kept
 * plain, compressed files crossing host and GPU memory both ways, damaged
 * frames a miss with nothing written, layer-by-layer delivery).  Exits 77
 * only where there is no GPU. */
#include "gpu_util.h"

#include "checksum.h"
#include "chunk_file.h"
#include "kv_layouts.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

typedef struct fix {
    char *dir;
    kvs_config *cfg;
} fix;

static void fix_open(fix *f, const char *tag, const char *dir)
{
    f->dir = dir ? strdup(dir) : gt_mkdtemp(tag);
    CHECK(kvs_config_new(&f->cfg) == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "weka_path", f->dir) == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "chunk_size", "64") == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "local_cpu", "false") == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "gds_io_threads", "4") == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "io_path", "posix") == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "cufile_buffer_size", "64") == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "use_direct_io", "false") == KVS_OK);
    CHECK(kvs_config_set(f->cfg, "log_level", "info") == KVS_OK);
}

static void fix_close(fix *f, bool keep_dir)
{
    kvs_config_free(f->cfg);
    if (!keep_dir)
        gt_rmtree(f->dir);
    free(f->dir);
}

/* A paged cache: per layer [planes][blocks][block][row], a random block
 * table, its host mirror. */
typedef struct pcache {
    gt_cache c;
    uint32_t planes;
    uint64_t row, block, nblocks;
    int64_t *slots;
    size_t ntok;
    kvs_kv kv;
} pcache;

static uint64_t row_bytes(const kvs_namespace *ns)
{
    return (uint64_t)(ns->layout == KVS_LAYOUT_MLA ? 1 : ns->num_kv_heads) * ns->head_dim *
           kvs_dtype_size(ns->dtype);
}

static void pcache_make(pcache *p, const kvs_namespace *ns, size_t ntok, uint64_t block,
                        cudaStream_t stream)
{
    memset(p, 0, sizeof *p);
    p->planes = ns->layout == KVS_LAYOUT_MLA ? 1 : 2;
    p->row = row_bytes(ns);
    p->block = block;
    p->nblocks = ntok / block + 8;
    p->ntok = ntok;
    uint64_t *table = malloc(p->nblocks * sizeof *table);
    for (uint64_t i = 0; i < p->nblocks; i++)
        table[i] = i;
    for (uint64_t i = p->nblocks - 1; i > 0; i--) {
        uint64_t j = gt_rand() % (i + 1), t = table[i];
        table[i] = table[j];
        table[j] = t;
    }
    p->slots = malloc((ntok ? ntok : 1) * sizeof *p->slots);
    for (size_t i = 0; i < ntok; i++)
        p->slots[i] = (int64_t)(table[i / block] * block + i % block);
    free(table);
    gt_cache_alloc(&p->c, ns->num_layers, p->planes * p->nblocks * block * p->row);
    for (uint32_t l = 0; l < ns->num_layers; l++)
        gt_fill(p->c.host[l], p->c.bytes);
    gt_cache_upload(&p->c);
    p->kv = (kvs_kv){.mem = KVS_MEM_CUDA, .device = 0, .num_layers = ns->num_layers,
                     .layers = p->c.dev, .num_slots = p->nblocks * block, .block_size = block,
                     .slot_mapping = p->slots, .cuda_stream = stream};
}

static void pcache_free(pcache *p)
{
    gt_cache_free(&p->c);
    free(p->slots);
}

/* bf16 values the way KV holds them: random sign and mantissa, an exponent
 * byte spread over a few values around 2^-4 (a binomial spread, about 2.5
 * bits of entropy), so the codec has something to compress; random bytes
 * would not. */
static void fill_bf16(void *p, size_t n)
{
    uint16_t *v = p;
    for (size_t i = 0; i < n / 2; i++) {
        uint64_t r = gt_rand();
        uint32_t e = 119u + (uint32_t)__builtin_popcountll(r & 0xff);
        v[i] = (uint16_t)(((r >> 8) & 0x8000u) | (e << 7) | ((r >> 20) & 0x7fu));
    }
}

static void pcache_fill_bf16(pcache *p)
{
    for (uint32_t l = 0; l < p->c.layers; l++)
        fill_bf16(p->c.host[l], p->c.bytes);
    gt_cache_upload(&p->c);
}

static char *row_at(const pcache *p, void *const *mem, uint32_t l, uint32_t plane, int64_t slot)
{
    return (char *)mem[l] + ((uint64_t)plane * p->nblocks * p->block + (uint64_t)slot) * p->row;
}

/* Downloads b and checks: tokens [0, loaded) equal a's rows, every other row
 * of b (tokens past loaded, negative slots, unused slots) unchanged, except
 * tokens in [either_lo, either_hi), which may also hold a's rows (verified
 * chunks past a failed one may land: the API allows it). */
static void check_loaded_either(const char *what, const pcache *a, const pcache *b, size_t loaded,
                                size_t either_lo, size_t either_hi)
{
    void **after = malloc(b->c.layers * sizeof *after);
    for (uint32_t l = 0; l < b->c.layers; l++)
        after[l] = malloc(b->c.bytes);
    gt_cache_download(&b->c, after);
    size_t wrong = 0, touched = 0;
    for (uint32_t l = 0; l < b->c.layers; l++) {
        for (uint32_t pl = 0; pl < b->planes; pl++) {
            for (size_t t = 0; t < b->ntok; t++) {
                int64_t sb = b->slots[t];
                if (sb < 0)
                    continue;
                const char *got = row_at(b, after, l, pl, sb);
                const char *src = row_at(a, a->c.host, l, pl, a->slots[t]);
                if (t < loaded) {
                    if (memcmp(got, src, b->row) != 0)
                        wrong++;
                    memcpy(row_at(b, b->c.host, l, pl, sb), got, b->row); /* expected now */
                } else if (t >= either_lo && t < either_hi && memcmp(got, src, b->row) == 0) {
                    memcpy(row_at(b, b->c.host, l, pl, sb), got, b->row);
                }
            }
        }
        /* everything else must be as it was */
        if (memcmp(after[l], b->c.host[l], b->c.bytes) != 0)
            touched++;
    }
    CHECK_MSG(wrong == 0, "%s: %zu loaded rows differ", what, wrong);
    CHECK_MSG(touched == 0, "%s: bytes outside the loaded rows changed in %zu layers", what,
              touched);
    for (uint32_t l = 0; l < b->c.layers; l++)
        free(after[l]);
    free(after);
}

static void check_loaded(const char *what, const pcache *a, const pcache *b, size_t loaded)
{
    check_loaded_either(what, a, b, loaded, 0, 0);
}

static void tokens_of(uint32_t *t, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (uint32_t)(seed >> 33);
    }
}

static kvs_stats stats_of(kvs_engine *e)
{
    kvs_stats s;
    memset(&s, 0, sizeof s);
    CHECK(kvs_engine_stats(e, &s, sizeof s) == KVS_OK);
    return s;
}

static size_t store_wait(kvs_engine *e, const uint32_t *t, size_t n, const kvs_kv *kv,
                         kvs_op_result *r_out)
{
    kvs_op *op = NULL;
    kvs_op_result r = {0};
    kvs_status st = kvs_store(e, t, n, kv, &op);
    CHECK_MSG(st == KVS_OK, "kvs_store: %s", kvs_last_error());
    if (st == KVS_OK)
        CHECK(kvs_op_wait(op, -1, &r) == KVS_OK);
    kvs_op_free(op);
    if (r_out)
        *r_out = r;
    return (size_t)r.tokens;
}

static size_t retrieve(kvs_engine *e, const uint32_t *t, size_t n, const kvs_kv *kv)
{
    size_t loaded = 0;
    kvs_status st = kvs_retrieve(e, t, n, kv, &loaded);
    CHECK_MSG(st == KVS_OK, "kvs_retrieve: %s", kvs_last_error());
    return loaded;
}

/* ---- round trips ----------------------------------------------------------- */

static void roundtrip(const char *name, kvs_namespace ns, size_t ntok, bool unfull, uint64_t block,
                      bool neg)
{
    fix f;
    fix_open(&f, "rt", NULL);
    if (unfull)
        CHECK(kvs_config_set(f.cfg, "save_unfull_chunk", "true") == KVS_OK);
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    uint32_t *t = malloc(ntok * sizeof *t);
    tokens_of(t, ntok, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, ntok, block, NULL);
    pcache_make(&b, &ns, ntok, block, NULL);
    size_t expect = unfull ? ntok : ntok / 64 * 64;
    kvs_op_result r;
    size_t stored = store_wait(e, t, ntok, &a.kv, &r);
    CHECK_MSG(stored == expect, "%s: stored %zu of %zu tokens", name, stored, expect);
    if (neg) /* some tokens have no place in b: never written */
        for (size_t i = 0; i < ntok; i += 1 + gt_rand() % 9)
            b.slots[i] = -1;
    size_t loaded = retrieve(e, t, ntok, &b.kv);
    CHECK_MSG(loaded == expect, "%s: loaded %zu of %zu tokens", name, loaded, expect);
    check_loaded(name, &a, &b, loaded);
    kvs_stats s = stats_of(e);
    CHECK(s.miss_checksum == 0 && s.miss_io == 0);
    printf("roundtrip %-36s %6zu tokens, %.1f MiB: ok\n", name, ntok,
           (double)r.bytes / 1048576.0);
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t);
    fix_close(&f, false);
}

static void test_roundtrips(void)
{
    kvs_namespace mha = {.model = "gpu/mha", .dtype = KVS_DTYPE_BF16, .num_layers = 4,
                         .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                         .world_size = 1, .rank = 0};
    roundtrip("flash-attn bf16 8x128", mha, 64 * 5 + 10, false, 16, false);
    roundtrip("flash-attn bf16, negative slots", mha, 64 * 3, false, 16, true);
    kvs_namespace mla = {.model = "gpu/mla", .dtype = KVS_DTYPE_FP8_E4M3, .num_layers = 3,
                         .num_kv_heads = 1, .head_dim = 576, .layout = KVS_LAYOUT_MLA,
                         .world_size = 1, .rank = 0};
    roundtrip("mla fp8 576, partial chunk", mla, 64 * 3 + 37, true, 64, true);
    kvs_namespace odd = {.model = "gpu/odd", .dtype = KVS_DTYPE_FP32, .num_layers = 2,
                         .num_kv_heads = 3, .head_dim = 5, .layout = KVS_LAYOUT_MHA,
                         .world_size = 1, .rank = 0};
    roundtrip("fp32 3x5 (60-byte rows), block 7", odd, 64 * 4 + 5, true, 7, false);
    kvs_namespace fp16 = {.model = "gpu/fp16", .dtype = KVS_DTYPE_FP16, .num_layers = 2,
                          .num_kv_heads = 1, .head_dim = 3, .layout = KVS_LAYOUT_MHA,
                          .world_size = 1, .rank = 0};
    roundtrip("fp16 1x3 (6-byte rows), block 1", fp16, 64 * 2, false, 1, false);
}

/* ---- every vLLM layout into every other ------------------------------------ */

/* A cache of one layout (tests/common/kv_layouts.h) on the GPU or in host
 * memory (the gt_cache's host mirror is then the memory itself). */
typedef struct lcache {
    const tl_layout *lo;
    tl_geom g;
    bool on_host;
    gt_cache c;
    void **before;   /* the content as filled: c.host, or a copy of it */
    int64_t *slots;
    kvs_kv kv;
} lcache;

static void lcache_make(lcache *p, const tl_layout *lo, const tl_geom *g, uint32_t layers,
                        size_t ntok, bool on_host, unsigned neg_one_in)
{
    memset(p, 0, sizeof *p);
    p->lo = lo;
    p->g = *g;
    p->on_host = on_host;
    const uint64_t nslots = g->blocks * g->block_size;
    uint64_t *perm = malloc(nslots * sizeof *perm);
    for (uint64_t i = 0; i < nslots; i++)
        perm[i] = i;
    p->slots = malloc(ntok * sizeof *p->slots);
    for (size_t i = 0; i < ntok; i++) {
        uint64_t j = i + gt_rand() % (nslots - i), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
        p->slots[i] = neg_one_in && gt_rand() % neg_one_in == 0 ? -1 - (int64_t)(gt_rand() % 4)
                                                                : (int64_t)perm[i];
    }
    free(perm);
    gt_cache_alloc(&p->c, layers, tl_layer_bytes(lo, g));
    for (uint32_t l = 0; l < layers; l++)
        gt_fill(p->c.host[l], p->c.bytes);
    p->before = p->c.host;
    if (!on_host) {
        gt_cache_upload(&p->c);
    } else {
        p->before = malloc(layers * sizeof *p->before);
        for (uint32_t l = 0; l < layers; l++) {
            p->before[l] = malloc(p->c.bytes);
            memcpy(p->before[l], p->c.host[l], p->c.bytes);
        }
    }
    p->kv = (kvs_kv){.mem = on_host ? KVS_MEM_HOST : KVS_MEM_CUDA, .device = 0,
                     .num_layers = layers, .layers = on_host ? p->c.host : p->c.dev,
                     .slot_mapping = p->slots};
    tl_describe(lo, g, &p->kv);
}

static void lcache_free(lcache *p)
{
    if (p->on_host) {
        for (uint32_t l = 0; l < p->c.layers; l++)
            free(p->before[l]);
        free(p->before);
    }
    gt_cache_free(&p->c);
    free(p->slots);
}

/* b's memory after loading tokens [0, loaded) of a: a's head rows at b's
 * slots (negative slots: nothing), every other byte as it was. */
static void lcheck(const char *what, const lcache *a, const lcache *b, size_t loaded)
{
    const uint32_t layers = b->c.layers;
    const uint64_t planes = tl_is_mla(b->lo) ? 1 : 2, head = b->g.dim * b->g.esize;
    void **got = malloc(layers * sizeof *got);
    for (uint32_t l = 0; l < layers; l++) {
        got[l] = malloc(b->c.bytes);
        if (b->on_host)
            memcpy(got[l], b->c.host[l], b->c.bytes);
    }
    if (!b->on_host)
        gt_cache_download(&b->c, got);
    size_t wrong = 0;
    for (uint32_t l = 0; l < layers; l++) {
        char *want = b->before[l];
        for (size_t t = 0; t < loaded; t++) {
            if (b->slots[t] < 0)
                continue;
            for (uint64_t p = 0; p < planes; p++)
                for (uint64_t h = 0; h < b->g.heads; h++)
                    memcpy(want + tl_offset(b->lo, &b->g, p, (uint64_t)b->slots[t], h, 0),
                           (const char *)a->c.host[l] +
                               tl_offset(a->lo, &a->g, p, (uint64_t)a->slots[t], h, 0),
                           head);
        }
        if (memcmp(want, got[l], b->c.bytes) != 0) {
            size_t i = 0;
            while (((const char *)want)[i] == ((const char *)got[l])[i])
                i++;
            if (wrong++ == 0)
                fprintf(stderr, "%s: layer %u differs first at byte %zu\n", what, l, i);
        }
    }
    CHECK_MSG(wrong == 0, "%s: %zu layers differ from the reference", what, wrong);
    for (uint32_t l = 0; l < layers; l++)
        free(got[l]);
    free(got);
}

/* One store from a (layout si, host or GPU) and one retrieve into b. */
static void lcase(kvs_engine *e, const tl_layout *los, size_t si, size_t di, const tl_geom *g,
                  uint32_t layers, size_t ntok, bool src_host, bool dst_host)
{
    char what[200];
    snprintf(what, sizeof what, "%s %s %s -> %s %s", g->esize == 1 ? "1-byte" : "", los[si].name,
             src_host ? "(host)" : "(GPU)", los[di].name, dst_host ? "(host)" : "(GPU)");
    uint32_t *t = malloc(ntok * sizeof *t);
    tokens_of(t, ntok, gt_rand());
    lcache a, b;
    lcache_make(&a, &los[si], g, layers, ntok, src_host, 0);
    lcache_make(&b, &los[di], g, layers, ntok, dst_host, 8);
    const size_t whole = ntok / 64 * 64;
    size_t stored = store_wait(e, t, ntok, &a.kv, NULL);
    CHECK_MSG(stored == whole, "%s: stored %zu of %zu tokens", what, stored, whole);
    size_t loaded = retrieve(e, t, ntok, &b.kv);
    CHECK_MSG(loaded == whole, "%s: loaded %zu of %zu tokens", what, loaded, whole);
    lcheck(what, &a, &b, loaded);
    lcache_free(&a);
    lcache_free(&b);
    free(t);
}

static void layout_matrix(const char *name, kvs_namespace ns, const tl_layout *los, size_t n,
                          const tl_geom *g, size_t ntok, bool all_pairs)
{
    fix f;
    fix_open(&f, "layouts", NULL);
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    int before = gt_failures;
    size_t cases = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++)
            if (all_pairs || j == (i + 3) % n) {
                lcase(e, los, i, j, g, ns.num_layers, ntok, false, false);
                cases++;
            }
        /* host <-> GPU: the two memories share one store */
        lcase(e, los, i, (i + 1) % n, g, ns.num_layers, ntok, true, false);
        lcase(e, los, i, (i + 2) % n, g, ns.num_layers, ntok, false, true);
        cases += 2;
    }
    kvs_stats s = stats_of(e);
    CHECK(s.miss_checksum == 0 && s.miss_io == 0);
    printf("layouts %-34s %3zu store/retrieve pairs of %zu layouts: %s\n", name, cases, n,
           gt_failures == before ? "ok" : "FAILED");
    kvs_engine_close(e);
    fix_close(&f, false);
}

static void test_layouts(void)
{
    const size_t ntok = 64 * 3 + 10;
    kvs_namespace mha = {.model = "gpu/layouts", .dtype = KVS_DTYPE_BF16, .num_layers = 3,
                         .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                         .world_size = 1, .rank = 0};
    tl_geom g = {.blocks = ntok / 16 + 8, .block_size = 16, .heads = 8, .dim = 128, .esize = 2,
                 .pad = 64};
    layout_matrix("bf16 8x128, block 16", mha, TL_MHA, TL_NMHA, &g, ntok, true);
    /* narrow accesses: 20-byte and 3-byte head rows, odd padding */
    kvs_namespace odd = mha;
    odd.dtype = KVS_DTYPE_FP32, odd.num_kv_heads = 3, odd.head_dim = 5;
    g = (tl_geom){.blocks = ntok / 8 + 8, .block_size = 8, .heads = 3, .dim = 5, .esize = 4,
                  .pad = 3};
    layout_matrix("fp32 3x5, block 8", odd, TL_MHA, TL_NMHA, &g, ntok, false);
    odd.dtype = KVS_DTYPE_FP8_E4M3, odd.num_kv_heads = 2, odd.head_dim = 3;
    g = (tl_geom){.blocks = ntok / 16 + 8, .block_size = 16, .heads = 2, .dim = 3, .esize = 1,
                  .pad = 5};
    layout_matrix("fp8 2x3, block 16", odd, TL_MHA, TL_NMHA, &g, ntok, false);
    kvs_namespace mla = {.model = "gpu/layouts-mla", .dtype = KVS_DTYPE_BF16, .num_layers = 3,
                         .num_kv_heads = 1, .head_dim = 576, .layout = KVS_LAYOUT_MLA,
                         .world_size = 1, .rank = 0};
    g = (tl_geom){.blocks = ntok / 64 + 8, .block_size = 64, .heads = 1, .dim = 576, .esize = 2,
                  .pad = 8};
    layout_matrix("mla bf16 576, block 64", mla, TL_MLA, TL_NMLA, &g, ntok, true);
    mla.dtype = KVS_DTYPE_FP8_E4M3;
    g.esize = 1, g.pad = 1;
    layout_matrix("mla fp8 576, block 64", mla, TL_MLA, TL_NMLA, &g, ntok, true);
}

/* Path of chunk idx of prompt t (chunk size 64). */
static void chunk_file_path(const fix *f, kvs_engine *e, const uint32_t *t, size_t n, int idx,
                            char *path, size_t len)
{
    uint8_t keys[8][KVS_KEY_BYTES];
    size_t nk = 0;
    CHECK(kvs_chunk_keys(t, n, 64, keys, 8, &nk) == KVS_OK && (size_t)idx < nk);
    char hex[65];
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", keys[idx][i]);
    snprintf(path, len, "%s/%s/%.2s/%.2s/%s", f->dir, kvs_engine_namespace_id(e), hex, hex + 2,
             hex);
}

/* ---- damaged chunks -------------------------------------------------------- */

/* A prompt of three chunks stored from GPU memory (a) into a fresh store,
 * a second cache (b) to load it into, and the second chunk's file open for
 * the test to damage; corrupt_finish then expects the prefix of one chunk
 * loaded and nothing of the damaged chunk written. */
typedef struct corrupt_case {
    fix f;
    kvs_engine *e;
    uint32_t *t;
    size_t n;
    pcache a, b;
    int fd; /* the second chunk's file, read-write */
} corrupt_case;

/* codec: the store's codec setting, and a's rows bf16 that compress; NULL:
 * the default config and random rows. */
static void corrupt_open(corrupt_case *c, const char *tag, const kvs_namespace *ns,
                         const char *codec)
{
    fix_open(&c->f, tag, NULL);
    if (codec)
        CHECK(kvs_config_set(c->f.cfg, "codec", codec) == KVS_OK);
    c->e = NULL;
    CHECK(kvs_engine_open(c->f.cfg, ns, &c->e) == KVS_OK);
    c->n = 64 * 3;
    c->t = malloc(c->n * 4);
    tokens_of(c->t, c->n, gt_rand());
    pcache_make(&c->a, ns, c->n, 16, NULL);
    pcache_make(&c->b, ns, c->n, 16, NULL);
    if (codec)
        pcache_fill_bf16(&c->a);
    CHECK(store_wait(c->e, c->t, c->n, &c->a.kv, NULL) == c->n);
    char path[8192];
    chunk_file_path(&c->f, c->e, c->t, c->n, 1, path, sizeof path);
    c->fd = open(path, O_RDWR);
    CHECK_MSG(c->fd >= 0, "open %s", path);
}

static void flip_byte(int fd, off_t at, uint8_t mask)
{
    uint8_t byte = 0;
    CHECK(pread(fd, &byte, 1, at) == 1);
    byte ^= mask;
    CHECK(pwrite(fd, &byte, 1, at) == 1);
}

/* Loads the prompt into b: the first chunk only, one checksum miss, none
 * of the damaged chunk's rows written (the third chunk's may land). */
static void corrupt_finish(corrupt_case *c, const char *what)
{
    close(c->fd);
    size_t loaded = retrieve(c->e, c->t, c->n, &c->b.kv);
    CHECK_MSG(loaded == 64, "%s: loaded %zu tokens past it", what, loaded);
    check_loaded_either(what, &c->a, &c->b, loaded, 128, c->n);
    kvs_stats s = stats_of(c->e);
    CHECK_MSG(s.miss_checksum == 1, "%s: miss_checksum %llu", what,
              (unsigned long long)s.miss_checksum);
    kvs_engine_close(c->e);
    pcache_free(&c->a);
    pcache_free(&c->b);
    free(c->t);
    fix_close(&c->f, false);
}

/* A damaged payload: the prefix before it loads, and not one byte of the
 * damaged chunk (verified on the GPU before the scatter) reaches memory. */
static void test_corrupt(void)
{
    kvs_namespace ns = {.model = "gpu/corrupt", .dtype = KVS_DTYPE_BF16, .num_layers = 2,
                        .num_kv_heads = 4, .head_dim = 64, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    corrupt_case c;
    corrupt_open(&c, "corrupt", &ns, NULL);
    uint64_t payload = kvs_engine_chunk_bytes(c.e);
    flip_byte(c.fd, (off_t)(KVS_PAYLOAD_OFFSET + gt_rand() % payload), 0x01);
    corrupt_finish(&c, "corrupt second chunk");
    printf("corrupt: one flipped byte: prefix of 64 tokens loaded, nothing else written: ok\n");
}

/* Authenticated chunks on GPU memory: the GPU's piece digests (capture and
 * retrieve) are the host's, in both directions; a payload edit with every
 * checksum made right again is a miss (miss_unauthenticated), and the
 * prefix before it loads. */
static void test_auth(void)
{
    fix f;
    fix_open(&f, "auth", NULL);
    char key[8192];
    snprintf(key, sizeof key, "%s.key", f.dir);
    int kfd = open(key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(kfd >= 0);
    uint8_t kb[32];
    gt_fill(kb, sizeof kb);
    CHECK(write(kfd, kb, sizeof kb) == (ssize_t)sizeof kb);
    close(kfd);
    CHECK(kvs_config_set(f.cfg, "auth_key_file", key) == KVS_OK);
    kvs_namespace ns = {.model = "gpu/auth", .dtype = KVS_DTYPE_BF16, .num_layers = 3,
                        .num_kv_heads = 2, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    kvs_engine *e = NULL;
    CHECK_MSG(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK, "%s", kvs_last_error());
    const size_t n = 64 * 4;
    uint32_t *t1 = malloc(n * 4), *t2 = malloc(n * 4);
    tokens_of(t1, n, gt_rand());
    tokens_of(t2, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    kvs_kv hkv = a.kv;
    hkv.mem = KVS_MEM_HOST;
    hkv.layers = a.c.host;
    CHECK(store_wait(e, t1, n, &hkv, NULL) == n);
    CHECK(retrieve(e, t1, n, &b.kv) == n);
    check_loaded("auth: host store, GPU retrieve", &a, &b, n);
    CHECK(store_wait(e, t2, n, &a.kv, NULL) == n);
    CHECK(retrieve(e, t2, n, &b.kv) == n);
    check_loaded("auth: GPU store, GPU retrieve", &a, &b, n);
    void **hb = malloc(ns.num_layers * sizeof *hb);
    for (uint32_t l = 0; l < ns.num_layers; l++)
        hb[l] = calloc(1, b.c.bytes);
    kvs_kv hkv2 = b.kv;
    hkv2.mem = KVS_MEM_HOST;
    hkv2.layers = hb;
    CHECK(retrieve(e, t2, n, &hkv2) == n);
    kvs_stats s = stats_of(e);
    CHECK_MSG(s.miss_unauthenticated == 0, "%llu unauthenticated",
              (unsigned long long)s.miss_unauthenticated);

    /* forge chunk 1 of t2: one payload byte, sums and header checksum redone */
    char path[8192];
    chunk_file_path(&f, e, t2, n, 1, path, sizeof path);
    int fd = open(path, O_RDWR);
    CHECK_MSG(fd >= 0, "open %s", path);
    uint64_t payload = kvs_engine_chunk_bytes(e);
    uint64_t padded = kvs__padded_payload(payload);
    uint8_t *file = malloc(KVS_PAYLOAD_OFFSET + padded);
    CHECK(pread(fd, file, KVS_PAYLOAD_OFFSET + padded, 0) == (ssize_t)(KVS_PAYLOAD_OFFSET + padded));
    file[KVS_PAYLOAD_OFFSET + gt_rand() % payload] ^= 0x10;
    kvs_chunk_header h;
    CHECK(kvs__header_decode(file, KVS_HEADER_BYTES, &h) == KVS_REJECT_NONE);
    for (uint32_t i = 0; i < h.segment_count; i++) {
        uint64_t o = (uint64_t)i * h.segment_bytes;
        uint64_t m = padded - o < h.segment_bytes ? padded - o : h.segment_bytes;
        h.segment_sums[i] = kvs__checksum(file + KVS_PAYLOAD_OFFSET + o, m);
    }
    kvs__header_encode(&h, file);
    CHECK(pwrite(fd, file, KVS_PAYLOAD_OFFSET + padded, 0) == (ssize_t)(KVS_PAYLOAD_OFFSET + padded));
    close(fd);
    free(file);
    kvs_engine_close(e);
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    size_t loaded = retrieve(e, t2, n, &b.kv);
    CHECK_MSG(loaded == 64, "loaded %zu tokens past a forged chunk", loaded);
    s = stats_of(e);
    CHECK(s.miss_unauthenticated >= 1 && s.miss_checksum == 0);
    printf("auth: GPU digests match the host's both ways; a forged payload is a miss: ok\n");
    for (uint32_t l = 0; l < ns.num_layers; l++)
        free(hb[l]);
    free(hb);
    kvs_engine_close(e);
    unlink(key);
    pcache_free(&a);
    pcache_free(&b);
    free(t1);
    free(t2);
    fix_close(&f, false);
}

/* Staging full: chunks that do not fit are dropped and counted; the call
 * succeeds and what was stored loads. */
static void test_staging_exhaustion(void)
{
    fix f;
    fix_open(&f, "exhaust", NULL);
    CHECK(kvs_config_set(f.cfg, "cufile_buffer_size", "1") == KVS_OK);
    CHECK(kvs_config_set(f.cfg, "gds_io_threads", "2") == KVS_OK);
    kvs_namespace ns = {.model = "gpu/exhaust", .dtype = KVS_DTYPE_BF16, .num_layers = 8,
                        .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    const size_t n = 64 * 24; /* 24 chunks of 2 MiB; staging holds about 2 */
    uint32_t *t = malloc(n * 4);
    tokens_of(t, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    kvs_op_result r;
    size_t stored = store_wait(e, t, n, &a.kv, &r);
    kvs_stats s = stats_of(e);
    CHECK_MSG(stored > 0 && stored < n, "stored %zu of %zu with tiny staging", stored, n);
    CHECK(s.store_dropped == (n - stored) / 64);
    size_t loaded = retrieve(e, t, n, &b.kv);
    CHECK_MSG(loaded == stored, "loaded %zu, stored %zu", loaded, stored);
    check_loaded("after staging exhaustion", &a, &b, loaded);
    /* and the next store of the rest works once staging is free again */
    size_t more = store_wait(e, t, n, &a.kv, NULL);
    CHECK(more > stored);
    printf("exhaustion: %zu of %zu tokens stored, %llu chunks dropped and counted, prefix loads: "
           "ok\n",
           stored, n, (unsigned long long)s.store_dropped);
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t);
    fix_close(&f, false);
}

/* ---- ordering after the caller's stream ------------------------------------- */

static void CUDART_CB sleep_fn(void *arg)
{
    usleep((useconds_t)(uintptr_t)arg);
}

static void test_stream_order(void)
{
    fix f;
    fix_open(&f, "stream", NULL);
    kvs_namespace ns = {.model = "gpu/stream", .dtype = KVS_DTYPE_BF16, .num_layers = 2,
                        .num_kv_heads = 4, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const size_t n = 64 * 2;
    uint32_t *t = malloc(n * 4);
    tokens_of(t, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, st);
    pcache_make(&b, &ns, n, 16, st);
    /* the caller's stream: sleep, then write new content into a; kvs_store
     * is called at once and must capture the new content */
    char *pinned; /* pinned: a pageable copy would wait for the stream */
    CU(cudaMallocHost((void **)&pinned, a.c.layers * a.c.bytes));
    for (uint32_t l = 0; l < a.c.layers; l++) {
        gt_fill(a.c.host[l], a.c.bytes);
        memcpy(pinned + l * a.c.bytes, a.c.host[l], a.c.bytes);
    }
    CU(cudaLaunchHostFunc(st, sleep_fn, (void *)(uintptr_t)100000));
    for (uint32_t l = 0; l < a.c.layers; l++)
        CU(cudaMemcpyAsync(a.c.dev[l], pinned + l * a.c.bytes, a.c.bytes, cudaMemcpyHostToDevice,
                           st));
    CHECK(store_wait(e, t, n, &a.kv, NULL) == n);
    /* the caller's stream: sleep, then clear b; the retrieve must land after */
    CU(cudaLaunchHostFunc(st, sleep_fn, (void *)(uintptr_t)100000));
    for (uint32_t l = 0; l < b.c.layers; l++)
        CU(cudaMemsetAsync(b.c.dev[l], 0, b.c.bytes, st));
    for (uint32_t l = 0; l < b.c.layers; l++)
        memset(b.c.host[l], 0, b.c.bytes);
    CHECK(retrieve(e, t, n, &b.kv) == n);
    CU(cudaStreamSynchronize(st));
    check_loaded("ordered after the caller's stream", &a, &b, n);
    printf("stream order: store captures and retrieve lands after the caller's queued work: ok\n");
    cudaFreeHost(pinned);
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    cudaStreamDestroy(st);
    free(t);
    fix_close(&f, false);
}

/* Layers are in place in order; the CPU tier serves GPU retrieves too. */
static void test_layers_and_cpu_tier(void)
{
    fix f;
    fix_open(&f, "layers", NULL);
    kvs_namespace ns = {.model = "gpu/layers", .dtype = KVS_DTYPE_BF16, .num_layers = 6,
                        .num_kv_heads = 4, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    const size_t n = 64 * 6;
    uint32_t *t = malloc(n * 4);
    tokens_of(t, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    CHECK(store_wait(e, t, n, &a.kv, NULL) == n);
    kvs_op *op = NULL;
    CHECK(kvs_retrieve_start(e, t, n, &b.kv, &op) == KVS_OK);
    size_t prev = n;
    for (uint32_t l = 0; l < ns.num_layers; l++) {
        size_t got = 0;
        CHECK(kvs_op_wait_layer(op, l, &got) == KVS_OK);
        CHECK(got <= prev);
        prev = got;
    }
    kvs_op_result r;
    CHECK(kvs_op_wait(op, -1, &r) == KVS_OK);
    CHECK(r.tokens == n);
    kvs_op_free(op);
    check_loaded("layer by layer", &a, &b, n);
    kvs_engine_close(e);

    /* CPU tier on: a GPU store fills it, a GPU retrieve is served from it */
    CHECK(kvs_config_set(f.cfg, "local_cpu", "true") == KVS_OK);
    CHECK(kvs_config_set(f.cfg, "max_local_cpu_size", "1") == KVS_OK);
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    uint32_t *t2 = malloc(n * 4);
    tokens_of(t2, n, gt_rand());
    for (uint32_t l = 0; l < b.c.layers; l++)
        gt_fill(b.c.host[l], b.c.bytes);
    gt_cache_upload(&b.c);
    CHECK(store_wait(e, t2, n, &a.kv, NULL) == n);
    CHECK(retrieve(e, t2, n, &b.kv) == n);
    check_loaded("from the CPU tier", &a, &b, n);
    kvs_stats s = stats_of(e);
    CHECK_MSG(s.hits_cpu == n / 64, "hits_cpu %llu", (unsigned long long)s.hits_cpu);
    printf("layers and CPU tier: ok\n");
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t);
    free(t2);
    fix_close(&f, false);
}

/* ---- the codec on GPU memory (issue 13) ------------------------------------- */

/* The header of chunk idx's file and the file's length; false if absent. */
static bool chunk_header(const fix *f, kvs_engine *e, const uint32_t *t, size_t n, int idx,
                         kvs_chunk_header *h, uint64_t *size)
{
    char path[8192];
    chunk_file_path(f, e, t, n, idx, path, sizeof path);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    uint8_t raw[KVS_HEADER_BYTES];
    bool ok = pread(fd, raw, sizeof raw, 0) == (ssize_t)sizeof raw &&
              kvs__header_decode(raw, sizeof raw, h) == KVS_REJECT_NONE;
    *size = (uint64_t)lseek(fd, 0, SEEK_END);
    close(fd);
    return ok;
}

/* How many of the first nchunks chunk files are compressed (version 2,
 * shorter than a plain file); -1 if one is missing or broken. */
static int count_compressed(const fix *f, kvs_engine *e, const uint32_t *t, size_t n,
                            int nchunks)
{
    int coded = 0;
    for (int i = 0; i < nchunks; i++) {
        kvs_chunk_header h;
        uint64_t size = 0;
        if (!chunk_header(f, e, t, n, i, &h, &size))
            return -1;
        if (h.codec) {
            CHECK_MSG(h.format_version == KVS_FORMAT_VERSION_CODEC &&
                          size < kvs__file_bytes(h.payload_bytes) &&
                          size == kvs__chunk_file_bytes(&h),
                      "chunk %d: version %u, %llu bytes for a payload of %llu", i,
                      h.format_version, (unsigned long long)size,
                      (unsigned long long)h.payload_bytes);
            coded++;
        } else {
            CHECK(h.format_version != KVS_FORMAT_VERSION_CODEC &&
                  size == kvs__file_bytes(h.payload_bytes));
        }
    }
    return coded;
}

static const kvs_namespace codec_ns = {.model = "gpu/codec", .dtype = KVS_DTYPE_BF16,
                                       .num_layers = 4, .num_kv_heads = 8, .head_dim = 128,
                                       .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};

/* Store from CUDA memory with the codec in force: the files are version 2
 * and smaller, and they load back into CUDA memory bit for bit; the same
 * with random bytes, which do not compress: plain files.  With a CPU tier
 * the tier holds logical bytes and serves GPU hits. */
static void codec_roundtrip(const char *mode, bool cpu_tier)
{
    fix f;
    fix_open(&f, "codec", NULL);
    CHECK(kvs_config_set(f.cfg, "codec", mode) == KVS_OK);
    if (cpu_tier)
        CHECK(kvs_config_set(f.cfg, "local_cpu", "true") == KVS_OK &&
              kvs_config_set(f.cfg, "max_local_cpu_size", "1") == KVS_OK);
    kvs_namespace ns = codec_ns;
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    const size_t n = 64 * 5 + 10, whole = 64 * 5;
    uint32_t *t = malloc(n * 4), *t2 = malloc(n * 4);
    tokens_of(t, n, gt_rand());
    tokens_of(t2, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    pcache_fill_bf16(&a);
    CHECK(store_wait(e, t, n, &a.kv, NULL) == whole);
    kvs_stats s = stats_of(e);
    int coded = count_compressed(&f, e, t, n, 5);
    CHECK_MSG(coded == 5, "codec %s: %d of 5 chunks stored compressed", mode, coded);
    CHECK(s.chunks_stored_compressed == 5);
    CHECK_MSG(s.stored_bytes_written < s.bytes_written * 15 / 16,
              "codec %s: %llu stored bytes for %llu logical", mode,
              (unsigned long long)s.stored_bytes_written, (unsigned long long)s.bytes_written);
    if (cpu_tier) { /* the tier serves this one; the files the next engine */
        CHECK(retrieve(e, t, n, &b.kv) == whole);
        check_loaded("codec, CPU tier hit", &a, &b, whole);
        CHECK(stats_of(e).hits_cpu == 5);
        kvs_engine_close(e);
        CHECK(kvs_config_set(f.cfg, "local_cpu", "false") == KVS_OK);
        CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
        pcache_fill_bf16(&b); /* b's rows as they were: fresh content */
    }
    size_t loaded = retrieve(e, t, n, &b.kv);
    CHECK_MSG(loaded == whole, "codec %s: loaded %zu of %zu", mode, loaded, whole);
    check_loaded("codec, GPU store -> GPU retrieve", &a, &b, loaded);
    s = stats_of(e);
    CHECK(s.miss_checksum == 0 && s.miss_io == 0 && s.miss_version == 0);
    CHECK_MSG(s.stored_bytes_read < s.bytes_read, "read %llu stored for %llu logical",
              (unsigned long long)s.stored_bytes_read, (unsigned long long)s.bytes_read);
    double ratio = (double)s.bytes_read / (double)(s.stored_bytes_read ? s.stored_bytes_read : 1);
    /* random bytes: stored plain, and still loaded */
    for (uint32_t l = 0; l < a.c.layers; l++)
        gt_fill(a.c.host[l], a.c.bytes);
    gt_cache_upload(&a.c);
    CHECK(store_wait(e, t2, n, &a.kv, NULL) == whole);
    CHECK_MSG(count_compressed(&f, e, t2, n, 5) == 0, "random bytes were stored compressed");
    CHECK(retrieve(e, t2, n, &b.kv) == whole);
    check_loaded("codec, incompressible chunks stay plain", &a, &b, whole);
    printf("codec %-4s%s: bf16 KV stored compressed (%.2fx), loaded bit-identical; random bytes "
           "stored plain: ok\n", mode, cpu_tier ? " + CPU tier" : "", ratio);
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t);
    free(t2);
    fix_close(&f, false);
}

/* Files written from host memory load into GPU memory and the reverse: the
 * GPU's checksums and layout are the CPU's; with the codec on, frames the CPU
 * encoded decode on the GPU and frames the GPU encoded decode on the CPU. */
static void host_interop(bool codec)
{
    fix f;
    fix_open(&f, codec ? "codec-interop" : "interop", NULL);
    kvs_namespace ns = {.model = "gpu/interop", .dtype = KVS_DTYPE_BF16, .num_layers = 3,
                        .num_kv_heads = 2, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    if (codec) {
        CHECK(kvs_config_set(f.cfg, "codec", "on") == KVS_OK);
        ns = codec_ns;
    }
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    const size_t n = 64 * 4;
    uint32_t *t1 = malloc(n * 4), *t2 = malloc(n * 4);
    tokens_of(t1, n, gt_rand());
    tokens_of(t2, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    if (codec)
        pcache_fill_bf16(&a);
    /* host -> file -> GPU: a's host mirror as a host paged cache */
    kvs_kv hkv = a.kv;
    hkv.mem = KVS_MEM_HOST;
    hkv.layers = a.c.host;
    CHECK(store_wait(e, t1, n, &hkv, NULL) == n);
    CHECK_MSG(!codec || count_compressed(&f, e, t1, n, 4) == 4,
              "host store: not every chunk compressed");
    CHECK(retrieve(e, t1, n, &b.kv) == n);
    check_loaded(codec ? "codec: host store (CPU encoder), GPU retrieve" : "host store, GPU retrieve",
                 &a, &b, n);
    /* GPU -> file -> host */
    CHECK(store_wait(e, t2, n, &a.kv, NULL) == n);
    CHECK_MSG(!codec || count_compressed(&f, e, t2, n, 4) == 4,
              "GPU store: not every chunk compressed");
    void **hb = malloc(ns.num_layers * sizeof *hb);
    for (uint32_t l = 0; l < ns.num_layers; l++) {
        hb[l] = malloc(b.c.bytes);
        memset(hb[l], 0xee, b.c.bytes);
    }
    kvs_kv hkv2 = b.kv;
    hkv2.mem = KVS_MEM_HOST;
    hkv2.layers = hb;
    CHECK(retrieve(e, t2, n, &hkv2) == n);
    size_t wrong = 0;
    for (uint32_t l = 0; l < ns.num_layers; l++)
        for (uint32_t pl = 0; pl < 2; pl++)
            for (size_t i = 0; i < n; i++)
                wrong += memcmp(row_at(&b, hb, l, pl, b.slots[i]),
                                row_at(&a, a.c.host, l, pl, a.slots[i]), b.row) != 0;
    CHECK_MSG(wrong == 0, "%sGPU store, host retrieve: %zu rows differ", codec ? "codec: " : "",
              wrong);
    kvs_stats s = stats_of(e);
    CHECK(s.miss_checksum == 0 && s.miss_version == 0);
    printf(codec ? "codec interop: CPU-encoded -> GPU decode and GPU-encoded -> CPU decode: ok\n"
                 : "interop: host store -> GPU retrieve and GPU store -> host retrieve: ok\n");
    for (uint32_t l = 0; l < ns.num_layers; l++)
        free(hb[l]);
    free(hb);
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t1);
    free(t2);
    fix_close(&f, false);
}

/* A damaged compressed chunk is a miss and writes nothing: once a flipped
 * byte in a frame (its sum fails), once a frame that breaks the format
 * behind a sum that matches (the decoder must refuse it). */
static void codec_corrupt_case(bool keep_sum)
{
    corrupt_case c;
    corrupt_open(&c, "codec-corrupt", &codec_ns, "auto");
    CHECK(count_compressed(&c.f, c.e, c.t, c.n, 3) == 3);
    uint8_t raw[KVS_HEADER_BYTES], table[KVS_FRAME_TABLE_BYTES];
    kvs_chunk_header h;
    CHECK(pread(c.fd, raw, sizeof raw, 0) == (ssize_t)sizeof raw &&
          kvs__header_decode(raw, sizeof raw, &h) == KVS_REJECT_NONE && h.codec);
    CHECK(pread(c.fd, table, sizeof table, KVS_FRAME_TABLE_OFFSET) == (ssize_t)sizeof table);
    uint32_t fi = (uint32_t)(gt_rand() % h.segment_count), foff, flen;
    memcpy(&foff, table + 8 * fi, 4);
    memcpy(&flen, table + 8 * fi + 4, 4);
    if (keep_sum) {
        uint8_t *frame = malloc(flen);
        CHECK(pread(c.fd, frame, flen, KVS_FRAMES_OFFSET + foff) == (ssize_t)flen);
        frame[0] = 7; /* no such mode */
        h.segment_sums[fi] = kvs__checksum(frame, flen);
        kvs__header_encode(&h, raw);
        CHECK(pwrite(c.fd, raw, sizeof raw, 0) == (ssize_t)sizeof raw);
        CHECK(pwrite(c.fd, frame, flen, KVS_FRAMES_OFFSET + foff) == (ssize_t)flen);
        free(frame);
    } else {
        flip_byte(c.fd, (off_t)(KVS_FRAMES_OFFSET + foff + gt_rand() % flen), 0x20);
    }
    corrupt_finish(&c, "codec: damaged second chunk");
    printf("codec corrupt: %s in frame %u: a miss, nothing of it written: ok\n",
           keep_sum ? "an undecodable frame behind a good sum" : "a flipped bit", fi);
}

/* Layer by layer with compressed chunks: chunks of 512 tokens (2 MiB a
 * layer) read in pieces of 2 MiB, so each piece is one layer's frames, and
 * each layer's wait returns once its pieces are decoded and in place. */
static void codec_layers(void)
{
    fix f;
    fix_open(&f, "codec-layers", NULL);
    CHECK(kvs_config_set(f.cfg, "codec", "on") == KVS_OK);
    CHECK(kvs_config_set(f.cfg, "chunk_size", "512") == KVS_OK);
    CHECK(kvs_config_set(f.cfg, "dev_piece_mb", "2") == KVS_OK);
    /* three 12 MiB chunks, each staged gathered and encoded: more than the
     * default 64 MiB of staging, which would drop one (by design) */
    CHECK(kvs_config_set(f.cfg, "cufile_buffer_size", "512") == KVS_OK);
    kvs_namespace ns = codec_ns;
    ns.num_layers = 6;
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    const size_t n = 512 * 3;
    uint32_t *t = malloc(n * 4);
    tokens_of(t, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    pcache_fill_bf16(&a);
    CHECK(store_wait(e, t, n, &a.kv, NULL) == n);
    CHECK(stats_of(e).chunks_stored_compressed == 3);
    kvs_op *op = NULL;
    CHECK(kvs_retrieve_start(e, t, n, &b.kv, &op) == KVS_OK);
    size_t prev = n;
    for (uint32_t l = 0; l < ns.num_layers; l++) {
        size_t got = 0;
        CHECK(kvs_op_wait_layer(op, l, &got) == KVS_OK);
        CHECK_MSG(got == n, "layer %u: %zu tokens", l, got);
        CHECK(got <= prev);
        prev = got;
    }
    kvs_op_result r;
    CHECK(kvs_op_wait(op, -1, &r) == KVS_OK);
    CHECK(r.tokens == n);
    kvs_op_free(op);
    check_loaded("codec, layer by layer", &a, &b, n);
    CHECK(stats_of(e).miss_checksum == 0);
    printf("codec layers: compressed chunks delivered layer by layer: ok\n");
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t);
    fix_close(&f, false);
}

static void test_codec(void)
{
    codec_roundtrip("auto", false);
    codec_roundtrip("on", true);
    host_interop(true);
    codec_corrupt_case(false);
    codec_corrupt_case(true);
    codec_layers();
}

/* ---- cuFile ----------------------------------------------------------------------- */

static void cufile_case(const char *io_path)
{
    const char *dir = getenv("GT_CUFILE_DIR");
    const char *expect = getenv("GT_EXPECT_CUFILE");
    fix f;
    char *d = NULL;
    if (dir && *dir) {
        char tmpl[4096];
        snprintf(tmpl, sizeof tmpl, "%s/kvs-gpu-cufile-XXXXXX", dir);
        d = mkdtemp(tmpl) ? strdup(tmpl) : NULL;
    }
    fix_open(&f, "cufile", d);
    free(d);
    CHECK(kvs_config_set(f.cfg, "io_path", io_path) == KVS_OK);
    kvs_namespace ns = {.model = "gpu/cufile", .dtype = KVS_DTYPE_BF16, .num_layers = 4,
                        .num_kv_heads = 8, .head_dim = 128, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    char *report = NULL;
    int healthy = 0;
    CHECK(kvs_doctor(f.cfg, &report, &healthy) == KVS_OK);
    const char *line = report ? strstr(report, "data path for GPU memory") : NULL;
    printf("cufile (io_path %s) doctor: %.*s\n", io_path,
           line ? (int)strcspn(line, "\n") : 4, line ? line : "none");
    kvs_engine *e = NULL;
    CHECK(kvs_engine_open(f.cfg, &ns, &e) == KVS_OK);
    const size_t n = 64 * 6;
    uint32_t *t = malloc(n * 4);
    tokens_of(t, n, gt_rand());
    pcache a, b;
    pcache_make(&a, &ns, n, 16, NULL);
    pcache_make(&b, &ns, n, 16, NULL);
    kvs_op *op = NULL;
    kvs_status st = kvs_store(e, t, n, &a.kv, &op);
    if (st == KVS_ERR_CUFILE) {
        printf("cufile (io_path %s): cuFile not usable here: %s\n", io_path, kvs_last_error());
        CHECK_MSG(!expect || strcmp(expect, "1") != 0, "cuFile expected to work");
        goto out;
    }
    CHECK_MSG(st == KVS_OK, "kvs_store: %s", kvs_last_error());
    kvs_op_result r = {0};
    CHECK(kvs_op_wait(op, -1, &r) == KVS_OK);
    kvs_op_free(op);
    CHECK(r.tokens == n);
    size_t loaded = retrieve(e, t, n, &b.kv);
    CHECK(loaded == n);
    check_loaded(io_path, &a, &b, loaded);
    kvs_stats s = stats_of(e);
    printf("cufile (io_path %s): round trip ok; cufile_active %llu, cufile_fallbacks %llu\n",
           io_path, (unsigned long long)s.cufile_active, (unsigned long long)s.cufile_fallbacks);
    if (expect && strcmp(expect, "1") == 0) {
        CHECK(s.cufile_active == 1);
        CHECK(s.cufile_fallbacks == 0);
        CHECK(line && strstr(line, "cufile"));
    } else if (expect && strcmp(expect, "0") == 0) {
        if (strcmp(io_path, "auto") == 0) {
            CHECK(s.cufile_active == 0);
            CHECK(line && strstr(line, "posix"));
        } else {
            /* every file: 6 stored + 6 read, each registration refused */
            CHECK_MSG(s.cufile_fallbacks >= 12, "fallbacks %llu",
                      (unsigned long long)s.cufile_fallbacks);
        }
    }
out:
    kvs_free(report);
    kvs_engine_close(e);
    pcache_free(&a);
    pcache_free(&b);
    free(t);
    fix_close(&f, false);
}

int main(int argc, char **argv)
{
    gt_require_gpu();
    gt_seed();
    const char *only = argc > 1 ? argv[1] : "";
    if (!*only || strstr(only, "roundtrip"))
        test_roundtrips();
    if (!*only || strstr(only, "interop"))
        host_interop(false);
    if (!*only || strstr(only, "layouts"))
        test_layouts();
    if (!*only || strstr(only, "corrupt"))
        test_corrupt();
    if (!*only || strstr(only, "auth"))
        test_auth();
    if (!*only || strstr(only, "exhaust"))
        test_staging_exhaustion();
    if (!*only || strstr(only, "stream"))
        test_stream_order();
    if (!*only || strstr(only, "layers"))
        test_layers_and_cpu_tier();
    if (!*only || strstr(only, "codec"))
        test_codec();
    if (!*only || strstr(only, "cufile")) {
        cufile_case("cufile");
        cufile_case("auto");
    }
    if (gt_failures) {
        printf("FAILED: %d checks\n", gt_failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
