/* test_gpu_sha256.c - the SHA-256 kernel (cuda/kvs_sha256.cu) against
 * OpenSSL's SHA256 on random data: piece sizes of the format (16 KiB) and
 * odd ones, every tail length around the padding boundaries (0..130 bytes
 * past a block), unaligned starts, and one 256 MiB buffer timed to print the
 * kernel's GB/s beside the XXH3 sums kernel's on the same data.  Exits 77
 * only where there is no GPU. */
#include "gpu_util.h"

#include "kvs_cuda.h"

#include <openssl/sha.h>
#include <string.h>


static int check(const uint8_t *h, uint8_t *d_data, uint64_t off, uint64_t len, uint32_t piece)
{
    uint64_t n = (len + piece - 1) / piece;
    uint8_t *d_dig, *got = malloc(32 * n);
    CU(cudaMalloc((void **)&d_dig, 32 * n));
    CU((cudaError_t)kvs_cuda_sha256_pieces(d_data + off, len, piece, d_dig, NULL));
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(got, d_dig, 32 * n, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t b = i * piece, m = len - b < piece ? len - b : piece;
        uint8_t want[32];
        SHA256(h + off + b, m, want);
        if (memcmp(want, got + 32 * i, 32)) {
            if (!bad)
                fprintf(stderr, "digest of piece %llu (%llu bytes at offset %llu of a %llu-byte "
                        "range at +%llu, pieces of %u) differs from OpenSSL's\n",
                        (unsigned long long)i, (unsigned long long)m, (unsigned long long)b,
                        (unsigned long long)len, (unsigned long long)off, piece);
            bad++;
        }
    }
    CU(cudaFree(d_dig));
    free(got);
    return bad;
}

int main(void)
{
    gt_require_gpu();
    gt_seed();
    const size_t max = 8u << 20;
    uint8_t *h = malloc(max + 64), *d;
    gt_fill(h, max + 64);
    CU(cudaMalloc((void **)&d, max + 64));
    CU(cudaMemcpy(d, h, max + 64, cudaMemcpyHostToDevice));

    /* empty-ish and boundary lengths in one piece each */
    for (uint64_t len = 1; len <= 200; len++)
        CHECK_MSG(check(h, d, 0, len, 1u << 20) == 0, "length %llu", (unsigned long long)len);
    /* the format's pieces over padded payloads, and a short last piece */
    const uint64_t lens[] = {16384, 4096, 20480, 1u << 20, (1u << 20) + 4096, max};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        CHECK_MSG(check(h, d, 0, lens[i], 16384) == 0, "len %llu", (unsigned long long)lens[i]);
    /* odd pieces, unaligned starts, every tail 0..130 past a block */
    for (int r = 0; r < 40; r++) {
        uint32_t piece = 64 + (uint32_t)(gt_rand() % 5000);
        uint64_t off = gt_rand() % 64, len = 1 + gt_rand() % (1u << 18);
        CHECK_MSG(check(h, d, off, len, piece) == 0, "piece %u off %llu len %llu", piece,
                  (unsigned long long)off, (unsigned long long)len);
    }
    for (uint32_t tail = 0; tail <= 130; tail++)
        CHECK_MSG(check(h, d, 16, 3 * 16384 + tail, 16384) == 0, "tail %u", tail);

    /* throughput: 256 MiB in 16 KiB pieces, beside the XXH3 sums kernel */
    const uint64_t big = 256ull << 20;
    uint8_t *db, *dd;
    uint64_t *ds;
    CU(cudaMalloc((void **)&db, big));
    CU(cudaMalloc((void **)&dd, 32 * (big / 16384)));
    CU(cudaMalloc((void **)&ds, 8 * (big / 65536)));
    CU(cudaMemset(db, 0x5a, big));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    float ms_sha = 0, ms_xxh = 0;
    for (int rep = 0; rep < 2; rep++) { /* the first run warms up */
        CU(cudaEventRecord(e0, NULL));
        CU((cudaError_t)kvs_cuda_sha256_pieces(db, big, 16384, dd, NULL));
        CU(cudaEventRecord(e1, NULL));
        CU(cudaEventSynchronize(e1));
        CU(cudaEventElapsedTime(&ms_sha, e0, e1));
        CU(cudaEventRecord(e0, NULL));
        CU((cudaError_t)kvs_cuda_segment_sums(db, big, 65536, ds, NULL, NULL, NULL));
        CU(cudaEventRecord(e1, NULL));
        CU(cudaEventSynchronize(e1));
        CU(cudaEventElapsedTime(&ms_xxh, e0, e1));
    }
    printf("gpu sha256 (16 KiB pieces, auth digests): %.1f GB/s; xxh3 segment sums: %.1f GB/s "
           "(256 MiB in VRAM)\n", big / (ms_sha * 1e6), big / (ms_xxh * 1e6));
    CU(cudaFree(db));
    CU(cudaFree(dd));
    CU(cudaFree(ds));
    CU(cudaFree(d));
    free(h);
    if (gt_failures) {
        fprintf(stderr, "%d failures\n", gt_failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
