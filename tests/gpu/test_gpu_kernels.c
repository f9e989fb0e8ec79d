/* test_gpu_kernels.c - the CUDA kernels against CPU references, on fresh
 * random data every run: XXH3 segment sums against libxxhash (and the
 * library's kvs__checksum) on many lengths and offsets; gather and scatter
 * against src/kvmap.c on flash-attention, FlashInfer and MLA layouts with
 * padded rows and on every layout of tests/common/kv_layouts.h (vLLM's
 * per-plane, packed NHD/HND and MLA caches, padded blocks, strided heads:
 * src/kvmap.c is checked on those by index arithmetic in test_kv_layouts),
 * 1-, 2- and 4-byte elements, random slot mappings with
 * negative slots, partial ranges and every access width; outputs poisoned
 * before each run.  Exits 77 only where there is no GPU. */
#include "gpu_util.h"

#include "checksum.h"
#include "kv_layouts.h"
#include "kvmap.h"
#include "kvs_cuda.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- checksums ----------------------------------------------------------- */

static void test_sums_lengths(void)
{
    const size_t max = 4u << 20;
    uint8_t *h = malloc(max + 4096);
    gt_fill(h, max + 4096);
    uint8_t *d;
    CU(cudaMalloc((void **)&d, max + 4096));
    CU(cudaMemcpy(d, h, max + 4096, cudaMemcpyHostToDevice));
    enum { N = 260 };
    size_t lens[N], offs[N];
    const size_t fixed[] = {241,   242,   255,   256,   320,   1023,  1024,  1025,  1087,
                            1088,  1089,  2047,  2048,  2049,  4096,  4097,  16384, 65535,
                            65536, 65537, 131072, 32832, 1048583, 4u << 20};
    size_t n = 0;
    for (; n < sizeof fixed / sizeof *fixed; n++)
        lens[n] = fixed[n], offs[n] = 0;
    for (; n < N; n++) {
        lens[n] = 241 + gt_rand() % (max - 241);
        if (n % 3 == 0)
            lens[n] = 241 + gt_rand() % 8000; /* many short ones */
        offs[n] = (gt_rand() % 256) * 16;
    }
    uint64_t *dsums;
    CU(cudaMalloc((void **)&dsums, N * sizeof(uint64_t)));
    CU(cudaMemset(dsums, 0, N * sizeof(uint64_t)));
    for (size_t i = 0; i < N; i++) {
        uint32_t seg = (uint32_t)((lens[i] + 15) / 16 * 16);
        CHECK(kvs_cuda_segment_sums(d + offs[i], lens[i], seg, dsums + i, NULL, NULL, 0) == 0);
    }
    uint64_t sums[N];
    CU(cudaMemcpy(sums, dsums, sizeof sums, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        uint64_t ref = XXH3_64bits(h + offs[i], lens[i]);
        if (sums[i] != ref || kvs__checksum(h + offs[i], lens[i]) != ref) {
            if (bad++ < 10)
                fprintf(stderr, "length %zu at +%zu: gpu %016llx, xxh3 %016llx\n", lens[i], offs[i],
                        (unsigned long long)sums[i], (unsigned long long)ref);
        }
    }
    CHECK_MSG(bad == 0, "%d of %d lengths differ", bad, N);
    printf("sums: %d lengths from 241 bytes to 4 MiB match libxxhash\n", N);
    cudaFree(dsums);
    cudaFree(d);
    free(h);
}

static void test_sums_segments(void)
{
    const uint32_t segs[] = {64u << 10, 128u << 10, 256u << 10, 4096};
    for (size_t si = 0; si < sizeof segs / sizeof *segs; si++) {
        uint32_t seg = segs[si];
        uint64_t len = (uint64_t)seg * (1 + gt_rand() % 40) + 4096 * (gt_rand() % (seg / 4096));
        uint32_t nseg = (uint32_t)((len + seg - 1) / seg);
        uint8_t *h = malloc(len);
        gt_fill(h, len);
        uint8_t *d;
        uint64_t *dsums, *dexp;
        uint32_t *dbad;
        CU(cudaMalloc((void **)&d, len));
        CU(cudaMalloc((void **)&dsums, nseg * 8));
        CU(cudaMalloc((void **)&dexp, nseg * 8));
        CU(cudaMalloc((void **)&dbad, 4));
        CU(cudaMemcpy(d, h, len, cudaMemcpyHostToDevice));
        CU(cudaMemset(dsums, 0xcd, nseg * 8));
        CHECK(kvs_cuda_segment_sums(d, len, seg, dsums, NULL, NULL, 0) == 0);
        uint64_t *sums = malloc(nseg * 8), *ref = malloc(nseg * 8);
        CU(cudaMemcpy(sums, dsums, nseg * 8, cudaMemcpyDeviceToHost));
        for (uint32_t i = 0; i < nseg; i++) {
            uint64_t n = len - (uint64_t)i * seg < seg ? len - (uint64_t)i * seg : seg;
            ref[i] = kvs__checksum(h + (uint64_t)i * seg, n);
            CHECK_MSG(sums[i] == ref[i], "segment %u of %u (%u bytes each, %llu total)", i, nseg,
                      seg, (unsigned long long)len);
        }
        /* verification: all match, then two corrupted expectations */
        uint32_t bad = 123;
        CU(cudaMemcpy(dexp, ref, nseg * 8, cudaMemcpyHostToDevice));
        CU(cudaMemset(dbad, 0, 4));
        CHECK(kvs_cuda_segment_sums(d, len, seg, NULL, dexp, dbad, 0) == 0);
        CU(cudaMemcpy(&bad, dbad, 4, cudaMemcpyDeviceToHost));
        CHECK_MSG(bad == 0, "%u mismatches on correct sums", bad);
        ref[0] ^= 1;
        ref[nseg - 1] ^= 0x8000000000000000ull;
        CU(cudaMemcpy(dexp, ref, nseg * 8, cudaMemcpyHostToDevice));
        CU(cudaMemset(dbad, 0, 4));
        CHECK(kvs_cuda_segment_sums(d, len, seg, NULL, dexp, dbad, 0) == 0);
        CU(cudaMemcpy(&bad, dbad, 4, cudaMemcpyDeviceToHost));
        CHECK_MSG(bad == (nseg > 1 ? 2u : 1u), "%u mismatches, expected %u", bad, nseg > 1 ? 2 : 1);
        /* a byte flipped in the data */
        ref[0] ^= 1;
        ref[nseg - 1] ^= 0x8000000000000000ull;
        CU(cudaMemcpy(dexp, ref, nseg * 8, cudaMemcpyHostToDevice));
        uint64_t at = gt_rand() % len;
        uint8_t flip = h[at] ^ 0x10;
        CU(cudaMemcpy(d + at, &flip, 1, cudaMemcpyHostToDevice));
        CU(cudaMemset(dbad, 0, 4));
        CHECK(kvs_cuda_segment_sums(d, len, seg, NULL, dexp, dbad, 0) == 0);
        CU(cudaMemcpy(&bad, dbad, 4, cudaMemcpyDeviceToHost));
        CHECK_MSG(bad == 1, "a flipped byte gave %u mismatches", bad);
        CU(cudaDeviceSynchronize());
        free(sums);
        free(ref);
        free(h);
        cudaFree(d);
        cudaFree(dsums);
        cudaFree(dexp);
        cudaFree(dbad);
    }
    /* arguments the launcher refuses */
    void *d;
    CU(cudaMalloc(&d, 8192));
    CHECK(kvs_cuda_segment_sums(d, 240, 256, (uint64_t *)d, NULL, NULL, 0) != 0);
    CHECK(kvs_cuda_segment_sums(d, 4096 + 200, 4096, (uint64_t *)d, NULL, NULL, 0) != 0);
    CHECK(kvs_cuda_segment_sums((char *)d + 8, 4096, 4096, (uint64_t *)d, NULL, NULL, 0) != 0);
    cudaGetLastError();
    cudaFree(d);
    printf("sums: multi-segment ranges, verification and mismatch counts ok\n");
}

static void bench_sums(void)
{
    const uint64_t len = 256ull << 20;
    const uint32_t seg = 128u << 10;
    void *d;
    uint64_t *s;
    CU(cudaMalloc(&d, len));
    CU(cudaMalloc((void **)&s, (len / seg) * 8));
    uint8_t *h = malloc(len);
    gt_fill(h, len);
    CU(cudaMemcpy(d, h, len, cudaMemcpyHostToDevice));
    cudaEvent_t a, b;
    CU(cudaEventCreate(&a));
    CU(cudaEventCreate(&b));
    CHECK(kvs_cuda_segment_sums(d, len, seg, s, NULL, NULL, 0) == 0);
    CU(cudaEventRecord(a, 0));
    for (int i = 0; i < 10; i++)
        kvs_cuda_segment_sums(d, len, seg, s, NULL, NULL, 0);
    CU(cudaEventRecord(b, 0));
    CU(cudaEventSynchronize(b));
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, a, b));
    double t0 = now_s();
    uint64_t x = 0;
    for (uint64_t o = 0; o < len; o += seg)
        x ^= kvs__checksum(h + o, seg);
    double cpu = now_s() - t0;
    printf("sums: GPU %.0f GB/s (128 KiB segments), CPU one core %.1f GB/s (%s) [%llx]\n",
           10.0 * len / (ms / 1e3) / 1e9, len / cpu / 1e9, kvs__checksum_impl(),
           (unsigned long long)(x & 0xf));
    cudaFree(d);
    cudaFree(s);
    free(h);
}

/* ---- gather / scatter -------------------------------------------------------- */

typedef enum { L_FLASH, L_FLASHINFER, L_MLA, L_PADDED } layout_kind;

typedef struct cfg {
    const char *name;
    layout_kind kind;
    uint32_t layers, heads, dim, esize, block, tokens;
    const tl_layout *tl; /* when set: this vLLM layout (kind unused), blocks */
    uint32_t pad;        /* padded by pad elements */
} cfg;

static kvs_dtype dtype_of(uint32_t esize)
{
    return esize == 1 ? KVS_DTYPE_FP8_E4M3 : esize == 2 ? KVS_DTYPE_BF16 : KVS_DTYPE_FP32;
}

static void run_copy_case(const cfg *c)
{
    const bool mla = c->tl ? tl_is_mla(c->tl) : c->kind == L_MLA;
    kvs_namespace nsd = {.model = "gpu-test", .dtype = dtype_of(c->esize),
                         .num_layers = c->layers, .num_kv_heads = mla ? 1 : c->heads,
                         .head_dim = c->dim, .layout = mla ? KVS_LAYOUT_MLA : KVS_LAYOUT_MHA,
                         .world_size = 1, .rank = 0};
    kvs_ns ns;
    if (kvs__ns_init(&ns, &nsd, c->tokens, NULL) != KVS_OK) {
        fprintf(stderr, "%s: ns: %s\n", c->name, kvs_last_error());
        gt_failures++;
        return;
    }
    const uint64_t row = ns.row_bytes, P = ns.num_planes, T = c->tokens, B = c->block;
    const uint64_t t0 = T * (1 + gt_rand() % 3); /* the chunk is not the prompt's first */
    const uint64_t prompt = t0 + T;
    const uint64_t nblocks = (prompt + T) / B + 3;
    const uint64_t num_slots = nblocks * B;
    uint64_t slot_stride = row, block_stride, plane_stride;
    if (c->kind == L_PADDED)
        slot_stride = row + 16 * (1 + gt_rand() % 3);
    if (c->kind == L_FLASHINFER) {
        block_stride = P * B * row;
        plane_stride = B * row;
    } else {
        block_stride = B * slot_stride;
        plane_stride = nblocks * block_stride;
    }
    uint64_t layer_bytes = (P - 1) * plane_stride + nblocks * block_stride;
    kvs_kv desc = {.num_slots = num_slots, .block_size = B, .slot_stride = slot_stride,
                   .block_stride = block_stride, .plane_stride = plane_stride};
    if (c->tl) {
        const tl_geom g = {.blocks = nblocks, .block_size = B, .heads = mla ? 1 : c->heads,
                           .dim = c->dim, .esize = c->esize, .pad = c->pad};
        tl_describe(c->tl, &g, &desc);
        layer_bytes = tl_layer_bytes(c->tl, &g);
    }

    /* slots: distinct, random, about 1 in 8 negative */
    int64_t *slots = malloc(prompt * sizeof *slots);
    uint64_t *perm = malloc(num_slots * sizeof *perm);
    for (uint64_t i = 0; i < num_slots; i++)
        perm[i] = i;
    for (uint64_t i = 0; i < prompt; i++) {
        uint64_t j = i + gt_rand() % (num_slots - i);
        uint64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        slots[i] = gt_rand() % 8 == 0 ? -1 - (int64_t)(gt_rand() % 5) : (int64_t)perm[i];
    }
    gt_cache cache;
    gt_cache_alloc(&cache, c->layers, layer_bytes);
    void **after = malloc(c->layers * sizeof *after);
    for (uint32_t l = 0; l < c->layers; l++)
        after[l] = malloc(layer_bytes);
    kvs_kv hkv = desc;
    hkv.mem = KVS_MEM_HOST;
    hkv.num_layers = c->layers;
    hkv.layers = cache.host;
    hkv.slot_mapping = slots;
    kvs_kvmap m;
    if (kvs__kvmap_init(&m, &ns, &hkv, prompt) != KVS_OK) {
        fprintf(stderr, "%s: kvmap: %s\n", c->name, kvs_last_error());
        gt_failures++;
        goto out;
    }
    /* the strides as the engine resolves them (defaults filled in) */
    slot_stride = m.kv.slot_stride;
    block_stride = m.kv.block_stride;
    plane_stride = m.kv.plane_stride;
    const uint64_t head_bytes = m.head_bytes, head_stride = m.kv.head_stride;
    const uint64_t bsz = m.kv.block_size;
    uint64_t *dlayers;
    int64_t *dslots;
    CU(cudaMalloc((void **)&dlayers, c->layers * 8));
    CU(cudaMalloc((void **)&dslots, prompt * 8));
    uint64_t *addrs = malloc((c->layers + 6) * 8);
    for (uint32_t l = 0; l < c->layers; l++)
        addrs[l] = (uint64_t)(uintptr_t)cache.dev[l];
    CU(cudaMemcpy(dlayers, addrs, c->layers * 8, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dslots, slots, prompt * 8, cudaMemcpyHostToDevice));
    addrs[c->layers] = row;
    addrs[c->layers + 1] = slot_stride;
    addrs[c->layers + 2] = block_stride;
    addrs[c->layers + 3] = plane_stride;
    addrs[c->layers + 4] = head_bytes;
    addrs[c->layers + 5] = head_stride;
    const uint32_t vec = kvs_cuda_vec_bytes(addrs, c->layers + (m.rows_contiguous ? 4 : 6));
    const uint64_t payload = kvs__ns_payload_bytes(&ns, (uint32_t)T);
    char *dstage, *hstage = malloc(payload + 4096), *ref = malloc(payload + 4096);
    CU(cudaMalloc((void **)&dstage, payload + 4096));
    uint32_t *dgate;
    CU(cudaMalloc((void **)&dgate, 4));

    for (uint32_t w = vec; w >= 1; w /= 2) {
        for (int rep = 0; rep < 3; rep++) {
            kvs_cuda_chunk ch = {.layers = dlayers, .slots = dslots, .t0 = t0, .block_size = bsz,
                                 .slot_stride = slot_stride, .block_stride = block_stride,
                                 .plane_stride = plane_stride, .num_layers = c->layers,
                                 .num_planes = (uint32_t)P, .tokens = (uint32_t)T,
                                 .row_bytes = (uint32_t)row, .vec_bytes = w,
                                 .head_bytes = (uint32_t)head_bytes, .head_stride = head_stride};
            if (rep == 2)
                ch.slots = NULL; /* identity: token i in slot i */
            uint64_t off = 0, len = payload;
            if (rep == 1) { /* a piece-like sub-range: 4096-aligned start */
                off = (gt_rand() % (payload / 4096 + 1)) * 4096;
                if (off >= payload)
                    off = 0;
                uint64_t want = 4096 * (1 + gt_rand() % 64);
                len = payload - off < want ? payload - off : want;
            }
            kvs_kv hkv2 = hkv;
            hkv2.slot_mapping = ch.slots ? slots : NULL;
            kvs_kvmap m2;
            if (kvs__kvmap_init(&m2, &ns, &hkv2, prompt) != KVS_OK) {
                gt_failures++;
                continue;
            }
            /* gather: fresh cache content, poisoned staging */
            for (uint32_t l = 0; l < c->layers; l++)
                gt_fill(cache.host[l], layer_bytes);
            gt_cache_upload(&cache);
            CU(cudaMemset(dstage, 0xcd, payload + 4096));
            CHECK(kvs_cuda_gather(&ch, off, len, dstage, 0) == 0);
            CU(cudaDeviceSynchronize());
            CU(cudaMemcpy(hstage, dstage, payload + 4096, cudaMemcpyDeviceToHost));
            memset(ref, 0xcd, payload + 4096);
            kvs__kvmap_gather(&m2, t0, (uint32_t)T, off, ref, len);
            CHECK_MSG(memcmp(hstage, ref, payload + 4096) == 0, "%s: gather w=%u rep=%d off=%llu len=%llu",
                      c->name, w, rep, (unsigned long long)off, (unsigned long long)len);
            /* scatter: fresh payload into a fresh cache */
            for (uint32_t l = 0; l < c->layers; l++)
                gt_fill(cache.host[l], layer_bytes);
            gt_cache_upload(&cache);
            gt_fill(hstage, len);
            CU(cudaMemcpy(dstage, hstage, len, cudaMemcpyHostToDevice));
            /* gated: nothing may change */
            uint32_t one = 1;
            CU(cudaMemcpy(dgate, &one, 4, cudaMemcpyHostToDevice));
            CHECK(kvs_cuda_scatter(&ch, off, len, dstage, dgate, 0) == 0);
            CU(cudaDeviceSynchronize());
            gt_cache_download(&cache, after);
            for (uint32_t l = 0; l < c->layers; l++)
                CHECK_MSG(memcmp(after[l], cache.host[l], layer_bytes) == 0,
                          "%s: a gated scatter wrote layer %u", c->name, l);
            CU(cudaMemset(dgate, 0, 4));
            CHECK(kvs_cuda_scatter(&ch, off, len, dstage, rep ? dgate : NULL, 0) == 0);
            CU(cudaDeviceSynchronize());
            gt_cache_download(&cache, after);
            kvs__kvmap_scatter(&m2, t0, (uint32_t)T, off, hstage, len);
            for (uint32_t l = 0; l < c->layers; l++)
                CHECK_MSG(memcmp(after[l], cache.host[l], layer_bytes) == 0,
                          "%s: scatter w=%u rep=%d layer %u off=%llu len=%llu", c->name, w, rep, l,
                          (unsigned long long)off, (unsigned long long)len);
            kvs__kvmap_clear(&m2);
        }
        if (w == 1)
            break;
    }
    /* arguments the launcher refuses */
    kvs_cuda_chunk bad = {.layers = dlayers, .block_size = bsz, .slot_stride = slot_stride,
                          .block_stride = block_stride, .plane_stride = plane_stride,
                          .num_layers = c->layers, .num_planes = (uint32_t)P,
                          .tokens = (uint32_t)T, .row_bytes = (uint32_t)row, .vec_bytes = 3,
                          .head_bytes = (uint32_t)head_bytes, .head_stride = head_stride};
    CHECK(kvs_cuda_gather(&bad, 0, payload, dstage, 0) != 0);
    bad.vec_bytes = 1;
    CHECK(kvs_cuda_gather(&bad, 0, payload + 1, dstage, 0) != 0);
    if (!m.rows_contiguous && vec < 16) {
        /* strided heads: a width the head rows do not allow is refused */
        bad.vec_bytes = vec * 2;
        CHECK(kvs_cuda_gather(&bad, 0, payload - payload % (vec * 2), dstage, 0) != 0);
    }
    if (!c->tl) /* the layout matrix prints one line per geometry */
        printf("copy: %-28s rows of %4llu bytes, widths %2u..1, ok\n", c->name,
               (unsigned long long)row, vec);
    cudaFree(dgate);
    cudaFree(dstage);
    cudaFree(dlayers);
    cudaFree(dslots);
    free(addrs);
    free(hstage);
    free(ref);
    kvs__kvmap_clear(&m);
out:
    for (uint32_t l = 0; l < c->layers; l++)
        free(after[l]);
    free(after);
    gt_cache_free(&cache);
    free(slots);
    free(perm);
    kvs__ns_clear(&ns);
}

static void test_copies(void)
{
    static const cfg cases[] = {
        {"flash-attn bf16 8x128", L_FLASH, 4, 8, 128, 2, 16, 64, NULL, 0},
        {"flash-attn fp8 2x64", L_FLASH, 3, 2, 64, 1, 16, 48, NULL, 0},
        {"flash-attn fp32 3x5", L_FLASH, 2, 3, 5, 4, 8, 33, NULL, 0},
        {"flash-attn bf16 1x3 block 1", L_FLASH, 2, 1, 3, 2, 1, 20, NULL, 0},
        {"flash-attn fp8 1x1 block 7", L_FLASH, 2, 1, 1, 1, 7, 29, NULL, 0},
        {"flashinfer bf16 4x64", L_FLASHINFER, 3, 4, 64, 2, 16, 40, NULL, 0},
        {"mla bf16 576", L_MLA, 3, 1, 576, 2, 64, 100, NULL, 0},
        {"mla fp8 576", L_MLA, 2, 1, 576, 1, 16, 64, NULL, 0},
        {"mla fp32 7", L_MLA, 2, 1, 7, 4, 5, 17, NULL, 0},
        {"padded slots bf16 2x64", L_PADDED, 2, 2, 64, 2, 16, 50, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_copy_case(&cases[i]);
    /* every layout of vLLM 0.11.1..0.33 (tests/common/kv_layouts.h), in
     * geometries whose head rows allow 16-, 8-, 4-, 2- and 1-byte accesses,
     * padded by amounts that lower the width of the block stride */
    static const struct {
        const char *what;
        uint32_t layers, heads, dim, esize, block, tokens, pad;
    } geoms[] = {
        {"bf16 8x128", 3, 8, 128, 2, 16, 64, 64},
        {"fp8 4x64", 2, 4, 64, 1, 16, 48, 5},
        {"bf16 2x4", 2, 2, 4, 2, 8, 40, 2},
        {"fp32 3x5", 2, 3, 5, 4, 4, 33, 1},
        {"fp8 2x3", 2, 2, 3, 1, 16, 20, 7},
    };
    char name[128];
    for (size_t gi = 0; gi < sizeof geoms / sizeof *geoms; gi++) {
        int before = gt_failures;
        for (size_t li = 0; li < TL_NMHA + TL_NMLA; li++) {
            const tl_layout *tl = li < TL_NMHA ? &TL_MHA[li] : &TL_MLA[li - TL_NMHA];
            snprintf(name, sizeof name, "%s %s", tl->name, geoms[gi].what);
            cfg c = {name, L_FLASH, geoms[gi].layers, geoms[gi].heads, geoms[gi].dim,
                     geoms[gi].esize, geoms[gi].block, geoms[gi].tokens, tl, geoms[gi].pad};
            run_copy_case(&c);
        }
        printf("copy: %zu vLLM layouts (per-plane, packed NHD/HND, MLA, padded), %s: %s\n",
               TL_NMHA + TL_NMLA, geoms[gi].what, gt_failures == before ? "ok" : "FAILED");
    }
}

int main(void)
{
    gt_require_gpu();
    gt_seed();
    test_sums_lengths();
    test_sums_segments();
    test_copies();
    bench_sums();
    CU(cudaDeviceSynchronize());
    if (gt_failures) {
        printf("FAILED: %d checks\n", gt_failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
