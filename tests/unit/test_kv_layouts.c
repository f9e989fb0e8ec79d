/* test_kv_layouts.c - every per-layer KV cache vLLM hands a connector
 * (include/kvstash.h's table: per-plane [2,B,N,H,D] and [B,2,N,H,D] in NHD
 * and HND memory order, packed (B,H,N,2D) in NHD and HND order, MLA [B,N,D]
 * and [B,1,N,D], padded blocks, a plain buffer) stored from each layout and
 * retrieved into each other through the engine, with random slot mappings
 * (negative slots included), every byte of the destination checked; also
 * cross-layer tensors.  The reference addresses come from per-layout index
 * arithmetic and the kvs_kv strides are derived separately, from each
 * tensor's physical shape the way a connector reads torch strides
 * (tests/common/kv_layouts.h).  Partial payload ranges go through kvmap
 * directly, and overlapping strides must be refused with a message that
 * names them. */
#include "test_util.h"

#include "kv_layouts.h"
#include "kvmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 2
#define HEADS 4
#define DIM 16
#define ES 2 /* bf16 */
#define N 16 /* slots per block */
#define B 6  /* blocks */
#define SLOTS (B * N)
#define CHUNK 16
#define PROMPT 52 /* three whole chunks and a partial one */
#define WHOLE 48
#define PAD 24 /* elements of padding after each block of a padded layout */

static const tl_geom GEOM = {.blocks = B, .block_size = N, .heads = HEADS, .dim = DIM,
                             .esize = ES, .pad = PAD};
static const tl_geom GEOM_MLA = {.blocks = B, .block_size = N, .heads = 1, .dim = DIM,
                                 .esize = ES, .pad = PAD};
#define NMHA TL_NMHA
#define NMLA TL_NMLA
#define MHA_LAYOUTS TL_MHA
#define MLA_LAYOUTS TL_MLA
typedef tl_layout layout;

/* ---- caches ------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

typedef struct cache {
    const layout *lo;
    const tl_geom *g;
    uint32_t planes, heads;
    size_t bytes;            /* per layer */
    uint8_t *mem[LAYERS];
    void *layers[LAYERS];
    int64_t slots[PROMPT];
    kvs_kv kv;
} cache;

/* Random contents; slots a random choice of distinct slots, one token in
 * `neg_one_in` (0: none) given a negative slot. */
static void cache_init(cache *c, const layout *lo, unsigned neg_one_in)
{
    memset(c, 0, sizeof *c);
    c->lo = lo;
    c->g = tl_is_mla(lo) ? &GEOM_MLA : &GEOM;
    c->planes = tl_is_mla(lo) ? 1 : 2;
    c->heads = (uint32_t)c->g->heads;
    c->bytes = tl_layer_bytes(lo, c->g);
    for (int l = 0; l < LAYERS; l++) {
        c->mem[l] = malloc(c->bytes);
        assert_non_null(c->mem[l]);
        for (size_t i = 0; i < c->bytes; i++)
            c->mem[l][i] = (uint8_t)next_rand();
        c->layers[l] = c->mem[l];
    }
    int64_t perm[SLOTS];
    for (int i = 0; i < SLOTS; i++)
        perm[i] = i;
    for (int i = SLOTS - 1; i > 0; i--) {
        int j = (int)(next_rand() % (uint64_t)(i + 1));
        int64_t x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    for (int t = 0; t < PROMPT; t++)
        c->slots[t] = neg_one_in && next_rand() % neg_one_in == 0 ? -1 - (int64_t)(next_rand() % 9)
                                                                  : perm[t];
    c->kv = (kvs_kv){.mem = KVS_MEM_HOST, .num_layers = LAYERS, .layers = c->layers,
                     .slot_mapping = c->slots};
    tl_describe(lo, c->g, &c->kv);
}

static void cache_free(cache *c)
{
    for (int l = 0; l < LAYERS; l++)
        free(c->mem[l]);
}

static size_t heads_of(const cache *c)
{
    return c->heads;
}

static const uint8_t *ref_byte(const cache *c, int l, size_t p, size_t s, size_t h, size_t i)
{
    return c->mem[l] + tl_offset(c->lo, c->g, p, s, h, i);
}

/* dst after loading the first `tokens` tokens of src: dst's prior bytes
 * (before[]) except where a token with a place in dst was loaded. */
static void check_loaded(const cache *src, const cache *dst, uint8_t *const before[LAYERS],
                         size_t tokens, const char *what)
{
    for (int l = 0; l < LAYERS; l++) {
        uint8_t *want = malloc(dst->bytes);
        assert_non_null(want);
        memcpy(want, before[l], dst->bytes);
        for (size_t t = 0; t < tokens; t++) {
            if (dst->slots[t] < 0)
                continue;
            assert_true(src->slots[t] >= 0);
            for (size_t p = 0; p < dst->planes; p++)
                for (size_t h = 0; h < heads_of(dst); h++)
                    for (size_t i = 0; i < DIM * ES; i++)
                        want[ref_byte(dst, l, p, (size_t)dst->slots[t], h, i) - dst->mem[l]] =
                            *ref_byte(src, l, p, (size_t)src->slots[t], h, i);
        }
        for (size_t i = 0; i < dst->bytes; i++)
            if (want[i] != dst->mem[l][i]) {
                fail_msg("%s: layer %d byte %zu is 0x%02x, want 0x%02x", what, l, i,
                         dst->mem[l][i], want[i]);
            }
        free(want);
    }
}

/* ---- engine round trips ------------------------------------------------- */

typedef tu_fixture fixture;

static int setup(void **state)
{
    fixture *f = tu_setup(state, "layouts");
    f->cfg = tu_config(f->dir, "16", "2", NULL);
    assert_non_null(f->cfg);
    return 0;
}

static kvs_namespace ns_of(bool mla)
{
    return (kvs_namespace){.model = mla ? "test/mla" : "test/mha", .dtype = KVS_DTYPE_BF16,
                           .num_layers = LAYERS, .num_kv_heads = mla ? 1 : HEADS,
                           .head_dim = DIM, .layout = mla ? KVS_LAYOUT_MLA : KVS_LAYOUT_MHA,
                           .world_size = 1};
}

static void make_tokens(uint32_t *t, size_t n, uint32_t seed)
{
    tu_tokens(t, n, seed * 40503u + 7);
}

/* Stores from src_lo, retrieves into dst_lo (some of its slots negative),
 * checks every byte of dst. */
static void roundtrip(kvs_engine *e, const layout *src_lo, const layout *dst_lo, uint32_t seed,
                      uint32_t flags)
{
    char what[160];
    snprintf(what, sizeof what, "%s -> %s%s", src_lo->name, dst_lo->name,
             flags & KVS_KV_DIRECT ? " (direct)" : "");
    uint32_t tokens[PROMPT];
    make_tokens(tokens, PROMPT, seed);
    cache src, dst;
    cache_init(&src, src_lo, 0);
    cache_init(&dst, dst_lo, 6);
    src.kv.flags = flags;
    dst.kv.flags = flags;
    uint8_t *src_before[LAYERS], *dst_before[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        src_before[l] = malloc(src.bytes);
        dst_before[l] = malloc(dst.bytes);
        memcpy(src_before[l], src.mem[l], src.bytes);
        memcpy(dst_before[l], dst.mem[l], dst.bytes);
    }

    kvs_op *op = NULL;
    kvs_op_result r;
    if (kvs_store(e, tokens, PROMPT, &src.kv, &op) != KVS_OK)
        fail_msg("%s: store: %s", what, kvs_last_error());
    assert_int_equal(kvs_op_wait(op, -1, &r), KVS_OK);
    kvs_op_free(op);
    if (r.status != KVS_OK || r.chunks_done != WHOLE / CHUNK)
        fail_msg("%s: store wrote %u chunks, status %d", what, r.chunks_done, r.status);
    for (int l = 0; l < LAYERS; l++)
        assert_memory_equal(src.mem[l], src_before[l], src.bytes); /* a store reads only */

    size_t loaded = 0;
    if (kvs_retrieve(e, tokens, PROMPT, &dst.kv, &loaded) != KVS_OK)
        fail_msg("%s: retrieve: %s", what, kvs_last_error());
    if (loaded != WHOLE)
        fail_msg("%s: loaded %zu tokens, want %d", what, loaded, WHOLE);
    check_loaded(&src, &dst, dst_before, WHOLE, what);

    for (int l = 0; l < LAYERS; l++) {
        free(src_before[l]);
        free(dst_before[l]);
    }
    cache_free(&src);
    cache_free(&dst);
}

static void matrix(fixture *f, const layout *los, size_t n, bool mla)
{
    kvs_namespace ns = ns_of(mla);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
    for (size_t i = 0; i < n; i++) { /* each accepted up front, slots not read */
        cache c;
        cache_init(&c, &los[i], 0);
        c.kv.slot_mapping = (const int64_t *)8; /* never dereferenced */
        if (kvs_kv_check(e, &c.kv) != KVS_OK)
            fail_msg("%s: kvs_kv_check: %s", los[i].name, kvs_last_error());
        cache_free(&c);
    }
    uint32_t seed = mla ? 1000 : 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++, seed++)
            roundtrip(e, &los[i], &los[j], seed, seed % 3 == 0 ? KVS_KV_DIRECT : 0);
    kvs_engine_close(e);
}

static void test_mha_every_pair(void **state)
{
    matrix(*state, MHA_LAYOUTS, NMHA, false);
}

static void test_mla_every_pair(void **state)
{
    matrix(*state, MLA_LAYOUTS, NMLA, true);
}

/* Through the CPU tier: its hits are scattered from memory, not files. */
static void test_cpu_tier(void **state)
{
    fixture *f = *state;
    assert_int_equal(kvs_config_set(f->cfg, "local_cpu", "true"), KVS_OK);
    assert_int_equal(kvs_config_set(f->cfg, "max_local_cpu_size", "1"), KVS_OK);
    kvs_namespace ns = ns_of(false);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
    for (size_t i = 0; i < NMHA; i++)
        roundtrip(e, &MHA_LAYOUTS[i], &MHA_LAYOUTS[(i + 5) % NMHA], 5000 + (uint32_t)i, 0);
    kvs_engine_close(e);
}

/* A store from memory with a negative slot in the third chunk stores the
 * first two chunks only, and a retrieve then loads those. */
static void test_store_negative_slot(void **state)
{
    fixture *f = *state;
    kvs_namespace ns = ns_of(false);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
    uint32_t tokens[PROMPT];
    make_tokens(tokens, PROMPT, 777);
    cache src, dst;
    cache_init(&src, &MHA_LAYOUTS[5], 0);
    cache_init(&dst, &MHA_LAYOUTS[6], 0);
    src.slots[2 * CHUNK + 3] = -1;
    kvs_op_result r;
    tu_store_wait(e, tokens, PROMPT, &src.kv, &r);
    assert_int_equal(r.chunks_done, 2);
    uint8_t *before[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        before[l] = malloc(dst.bytes);
        memcpy(before[l], dst.mem[l], dst.bytes);
    }
    size_t loaded = 0;
    assert_int_equal(kvs_retrieve(e, tokens, PROMPT, &dst.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, 2 * CHUNK);
    check_loaded(&src, &dst, before, 2 * CHUNK, "negative store slot");
    for (int l = 0; l < LAYERS; l++)
        free(before[l]);
    cache_free(&src);
    cache_free(&dst);
    kvs_engine_close(e);
}

/* ---- cross-layer caches ---------------------------------------------------- */

/* One tensor for every layer: memory [B, L, 2, N, H, D] (NHD) or
 * [B, H, L, 2, N, D] (HND); byte offset of byte i of a head row. */
static size_t xl_offset(bool hnd, size_t l, size_t p, size_t s, size_t h, size_t i)
{
    const size_t b = s / N, n = s % N;
    size_t e = hnd ? ((((b * HEADS + h) * LAYERS + l) * 2 + p) * N + n) * DIM
                   : ((((b * LAYERS + l) * 2 + p) * N + n) * HEADS + h) * DIM;
    return e * ES + i;
}

static void xl_roundtrip(fixture *f, bool hnd)
{
    kvs_namespace ns = ns_of(false);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
    const size_t bytes = (size_t)B * LAYERS * 2 * N * HEADS * DIM * ES;
    uint8_t *xl = malloc(bytes), *before = malloc(bytes);
    for (size_t i = 0; i < bytes; i++)
        xl[i] = (uint8_t)next_rand();
    memcpy(before, xl, bytes);
    void *bases[LAYERS];
    for (int l = 0; l < LAYERS; l++)
        bases[l] = xl + xl_offset(hnd, (size_t)l, 0, 0, 0, 0);
    cache plain;
    cache_init(&plain, &MHA_LAYOUTS[0], 0);
    int64_t slots[PROMPT];
    for (int t = 0; t < PROMPT; t++) /* a different spread than plain's */
        slots[t] = (int64_t)((t * 37 + 11) % SLOTS);
    slots[5] = -1;
    const size_t E = ES, D = DIM, H = HEADS;
    kvs_kv kv = {.mem = KVS_MEM_HOST, .num_layers = LAYERS, .layers = bases,
                 .num_slots = SLOTS, .block_size = N, .slot_mapping = slots};
    if (hnd) {
        kv.slot_stride = D * E, kv.head_stride = LAYERS * 2 * N * D * E;
        kv.plane_stride = N * D * E, kv.block_stride = H * LAYERS * 2 * N * D * E;
    } else {
        kv.slot_stride = H * D * E, kv.head_stride = D * E;
        kv.plane_stride = N * H * D * E, kv.block_stride = LAYERS * 2 * N * H * D * E;
    }
    if (kvs_kv_check(e, &kv) != KVS_OK)
        fail_msg("cross-layer: %s", kvs_last_error());
    uint32_t tokens[PROMPT];
    make_tokens(tokens, PROMPT, hnd ? 9100 : 9000);
    kvs_op_result r;
    tu_store_wait(e, tokens, PROMPT, &plain.kv, &r);
    size_t loaded = 0;
    assert_int_equal(kvs_retrieve(e, tokens, PROMPT, &kv, &loaded), KVS_OK);
    assert_int_equal(loaded, WHOLE);
    for (size_t tk = 0; tk < WHOLE; tk++)
        for (size_t l = 0; l < LAYERS; l++)
            for (size_t p = 0; p < 2; p++)
                for (size_t h = 0; h < HEADS; h++)
                    if (slots[tk] >= 0)
                        memcpy(before + xl_offset(hnd, l, p, (size_t)slots[tk], h, 0),
                               ref_byte(&plain, (int)l, p, (size_t)plain.slots[tk], h, 0),
                               DIM * ES);
    if (memcmp(before, xl, bytes) != 0)
        fail_msg("cross-layer %s: retrieved memory differs from the reference", hnd ? "HND" : "NHD");
    /* and back: stored from the cross-layer cache, read into a plain one */
    slots[5] = (5 * 37 + 11) % SLOTS;
    make_tokens(tokens, PROMPT, hnd ? 9200 : 9300);
    tu_store_wait(e, tokens, PROMPT, &kv, &r);
    assert_int_equal(r.chunks_done, WHOLE / CHUNK);
    assert_int_equal(kvs_retrieve(e, tokens, PROMPT, &plain.kv, &loaded), KVS_OK);
    assert_int_equal(loaded, WHOLE);
    for (size_t tk = 0; tk < WHOLE; tk++)
        for (size_t l = 0; l < LAYERS; l++)
            for (size_t p = 0; p < 2; p++)
                for (size_t h = 0; h < HEADS; h++)
                    assert_memory_equal(ref_byte(&plain, (int)l, p, (size_t)plain.slots[tk], h, 0),
                                        xl + xl_offset(hnd, l, p, (size_t)slots[tk], h, 0),
                                        DIM * ES);
    cache_free(&plain);
    free(xl);
    free(before);
    kvs_engine_close(e);
}

static void test_cross_layer(void **state)
{
    xl_roundtrip(*state, false);
    xl_roundtrip(*state, true);
}

/* ---- kvmap on partial payload ranges ------------------------------------ */

/* The payload of the chunk at token t0: [layer][plane][token][head][dim]. */
static void ref_payload(const cache *c, size_t t0, uint8_t *out)
{
    size_t k = 0;
    for (int l = 0; l < LAYERS; l++)
        for (size_t p = 0; p < c->planes; p++)
            for (size_t t = t0; t < t0 + CHUNK; t++)
                for (size_t h = 0; h < heads_of(c); h++)
                    for (size_t i = 0; i < DIM * ES; i++, k++)
                        out[k] = c->slots[t] < 0 ? 0
                                                 : *ref_byte(c, l, p, (size_t)c->slots[t], h, i);
}

static void partial_ranges(const layout *lo)
{
    bool mla = tl_is_mla(lo);
    kvs_namespace nsd = ns_of(mla);
    kvs_ns ns;
    assert_int_equal(kvs__ns_init(&ns, &nsd, CHUNK, NULL), KVS_OK);
    cache c, d;
    cache_init(&c, lo, 5);
    cache_init(&d, lo, 0);
    memcpy(d.slots, c.slots, sizeof c.slots);
    kvs_kvmap m, md;
    assert_int_equal(kvs__kvmap_init(&m, &ns, &c.kv, PROMPT), KVS_OK);
    assert_int_equal(kvs__kvmap_init(&md, &ns, &d.kv, PROMPT), KVS_OK);
    const size_t payload = (size_t)LAYERS * c.planes * CHUNK * ns.row_bytes;
    uint8_t *want = malloc(payload), *got = malloc(payload);
    const size_t t0 = CHUNK;
    ref_payload(&c, t0, want);
    kvs__kvmap_gather(&m, t0, CHUNK, 0, got, payload);
    assert_memory_equal(got, want, payload);
    /* random pieces, cut anywhere (mid head, mid element) */
    for (size_t off = 0; off < payload;) {
        size_t len = 1 + next_rand() % (3 * ns.row_bytes);
        len = KVS_MIN(len, payload - off);
        memset(got, 0xa5, len);
        kvs__kvmap_gather(&m, t0, CHUNK, off, got, len);
        if (memcmp(got, want + off, len) != 0)
            fail_msg("%s: gather [%zu, +%zu) differs", lo->name, off, len);
        kvs__kvmap_scatter(&md, t0, CHUNK, off, want + off, len);
        off += len;
    }
    /* d got c's rows (negative slots: nothing written, so gather gives 0) */
    kvs__kvmap_gather(&md, t0, CHUNK, 0, got, payload);
    assert_memory_equal(got, want, payload);
    free(want);
    free(got);
    kvs__kvmap_clear(&m);
    kvs__kvmap_clear(&md);
    cache_free(&c);
    cache_free(&d);
    kvs__ns_clear(&ns);
}

static void test_partial_ranges(void **state)
{
    (void)state;
    for (size_t i = 0; i < NMHA; i++)
        partial_ranges(&MHA_LAYOUTS[i]);
    for (size_t i = 0; i < NMLA; i++)
        partial_ranges(&MLA_LAYOUTS[i]);
}

/* Long runs are scattered with streamed (non-temporal) stores from the
 * destination's first 16-byte boundary on: every misalignment of the
 * caller's memory and every length around the threshold lands exactly the
 * bytes of its range, and nothing next to it. */
static void test_streamed_scatter(void **state)
{
    (void)state;
    const uint32_t heads = 8, dim = 128, tokens = 16; /* 2 KiB rows, 32 KiB planes */
    kvs_namespace nsd = {.model = "test/stream", .dtype = KVS_DTYPE_BF16, .num_layers = 1,
                         .num_kv_heads = heads, .head_dim = dim, .layout = KVS_LAYOUT_MHA,
                         .world_size = 1};
    kvs_ns ns;
    assert_int_equal(kvs__ns_init(&ns, &nsd, tokens, NULL), KVS_OK);
    const size_t payload = 2 * (size_t)tokens * ns.row_bytes, guard = 64;
    uint8_t *want = malloc(payload), *got = malloc(payload);
    uint8_t *mem = malloc(payload + 2 * guard + 16);
    assert_non_null(want);
    assert_non_null(got);
    assert_non_null(mem);
    for (size_t i = 0; i < payload; i++)
        want[i] = (uint8_t)next_rand();
    for (size_t mis = 0; mis < 16; mis++) {
        uint8_t *base = mem + guard + mis;
        void *layers[1] = {base};
        kvs_kv kv = {.mem = KVS_MEM_HOST, .num_layers = 1, .layers = layers,
                     .num_slots = tokens};
        kvs_kvmap m;
        assert_int_equal(kvs__kvmap_init(&m, &ns, &kv, tokens), KVS_OK);
        memset(mem, 0x5c, payload + 2 * guard + 16);
        /* lengths around the threshold and odd ones, cut anywhere */
        static const size_t lens[] = {4095, 4096, 4097, 1, 8191, 12345, 64, 4111, 20000};
        size_t off = 0;
        for (size_t k = 0; off < payload; k++) {
            size_t len = KVS_MIN(lens[k % (sizeof lens / sizeof *lens)], payload - off);
            kvs__kvmap_scatter(&m, 0, tokens, off, want + off, len);
            off += len;
        }
        kvs__kvmap_gather(&m, 0, tokens, 0, got, payload);
        if (memcmp(got, want, payload) != 0)
            fail_msg("misalignment %zu: scattered bytes differ", mis);
        for (size_t i = 0; i < guard + mis; i++)
            if (mem[i] != 0x5c)
                fail_msg("misalignment %zu: byte %zu before the KV written", mis, i);
        for (size_t i = guard + mis + payload; i < payload + 2 * guard + 16; i++)
            if (mem[i] != 0x5c)
                fail_msg("misalignment %zu: byte %zu after the KV written", mis, i);
        kvs__kvmap_clear(&m);
    }
    free(want);
    free(got);
    free(mem);
    kvs__ns_clear(&ns);
}

/* ---- refusals ----------------------------------------------------------- */

/* kvs_kv_check, kvs_store and kvs_retrieve all refuse kv, naming each of
 * `words`. */
static void refused(kvs_engine *e, const kvs_kv *kv, const char *const *words, int nwords)
{
    uint32_t tokens[PROMPT];
    make_tokens(tokens, PROMPT, 4242);
    kvs_op *op = NULL;
    size_t loaded = 99;
    for (int pass = 0; pass < 3; pass++) {
        kvs_status st = pass == 0   ? kvs_store(e, tokens, PROMPT, kv, &op)
                        : pass == 1 ? kvs_retrieve(e, tokens, PROMPT, kv, &loaded)
                                    : kvs_kv_check(e, kv);
        assert_int_equal(st, KVS_ERR_INVALID);
        for (int w = 0; w < nwords; w++)
            if (!strstr(kvs_last_error(), words[w]))
                fail_msg("the refusal \"%s\" does not name \"%s\"", kvs_last_error(), words[w]);
    }
    assert_null(op);
    assert_int_equal(loaded, 99);
}

static void test_refusals(void **state)
{
    fixture *f = *state;
    kvs_namespace ns = ns_of(false);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(f->cfg, &ns, &e), KVS_OK);
    cache c;
    cache_init(&c, &MHA_LAYOUTS[5], 0); /* packed NHD */
    const kvs_kv good = c.kv;
    const char *accepted = "accepted: ordered by stride";

    /* K and V of a head on top of each other's neighbours: heads every D
     * elements while the planes are D apart. */
    kvs_kv kv = good;
    kv.head_stride = DIM * ES;
    const char *w1[] = {"kv.plane_stride 32 makes head rows overlap", "head_stride 32",
                        "slot_stride 256", "block_stride 4096", accepted};
    refused(e, &kv, w1, 5);

    /* a head row longer than the head stride */
    kv = good;
    kv.head_stride = DIM * ES - 2;
    const char *w2[] = {"kv.head_stride 30", "less than the 32 bytes spanned by a head row",
                        accepted};
    refused(e, &kv, w2, 3);

    /* slots closer than a token's heads span */
    kv = good;
    kv.slot_stride = (HEADS - 1) * 2 * DIM * ES;
    const char *w3[] = {"kv.slot_stride 192", "less than the 256 bytes", accepted};
    refused(e, &kv, w3, 3);

    /* blocks overlapping the last slots of the block before */
    kv = good;
    kv.block_stride = (N - 1) * HEADS * 2 * DIM * ES;
    const char *w4[] = {"kv.block_stride 3840", accepted};
    refused(e, &kv, w4, 2);

    /* per-plane layout whose planes overlap a block: [B,2,N,H,D] with a
     * plane stride of one slot */
    cache p;
    cache_init(&p, &MHA_LAYOUTS[3], 0);
    kv = p.kv;
    kv.plane_stride = HEADS * DIM * ES;
    const char *w5[] = {"kv.plane_stride 128", "head_stride 32", accepted};
    refused(e, &kv, w5, 3);

    /* strides whose span overflows 64 bits */
    kv = good;
    kv.block_stride = UINT64_MAX / 2;
    const char *w6[] = {"kv.block_stride", "64 bits", accepted};
    refused(e, &kv, w6, 3);

    /* the old contract still holds: a token row of contiguous heads with a
     * slot stride shorter than the row is refused (head_stride 0) */
    kv = p.kv;
    kv.head_stride = 0;
    kv.slot_stride = HEADS * DIM * ES - 2;
    const char *w7[] = {"kv.slot_stride 126", accepted};
    refused(e, &kv, w7, 2);

    /* kvs_kv_check on the rest of the contract */
    assert_int_equal(kvs_kv_check(NULL, &good), KVS_ERR_INVALID);
    assert_int_equal(kvs_kv_check(e, NULL), KVS_ERR_INVALID);
    kv = good;
    kv.num_layers = LAYERS + 1;
    assert_int_equal(kvs_kv_check(e, &kv), KVS_ERR_INVALID);
    assert_non_null(strstr(kvs_last_error(), "kv.num_layers 3 does not match"));
    assert_int_equal(kvs_kv_check(e, &good), KVS_OK);

    /* and the description that was refused above works once fixed */
    uint32_t tokens[PROMPT];
    make_tokens(tokens, PROMPT, 4242);
    size_t loaded = 99;
    assert_int_equal(kvs_retrieve(e, tokens, PROMPT, &good, &loaded), KVS_OK);
    assert_int_equal(loaded, 0);
    cache_free(&c);
    cache_free(&p);
    kvs_engine_close(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partial_ranges),
        cmocka_unit_test(test_streamed_scatter),
        cmocka_unit_test_setup_teardown(test_mha_every_pair, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_mla_every_pair, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cpu_tier, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_store_negative_slot, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cross_layer, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
