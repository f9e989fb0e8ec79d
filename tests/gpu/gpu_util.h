/* gpu_util.h - helpers of the GPU tests: skip where there is no GPU, checks
 * that name the failing line, random data, paged KV caches on the device
 * with a host mirror to compute the expected bytes. */
#ifndef KVS_GPU_UTIL_H
#define KVS_GPU_UTIL_H

#include "kvstash.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define GT_SKIP 77

extern int gt_failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            gt_failures++;                                                             \
        }                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                           \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            gt_failures++;                                                             \
        }                                                                              \
    } while (0)

/* A CUDA call that must succeed; the test stops otherwise. */
#define CU(call)                                                                        \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) {                                                        \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,               \
                    cudaGetErrorString(e_));                                            \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* Exits 77 when there is no CUDA driver or no device; only then. */
void gt_require_gpu(void);

/* xorshift64*; seeded from the clock unless GT_SEED is set (printed). */
uint64_t gt_seed(void);
uint64_t gt_rand(void);
void gt_fill(void *p, size_t n);

/* A fresh directory (under $GT_TMP or /tmp) and its removal. */
char *gt_mkdtemp(const char *tag);
void gt_rmtree(const char *path);

/* A paged KV cache of one layout on the device, plus a host mirror kept in
 * sync by the tests, per layer: `bytes` each. */
typedef struct gt_cache {
    uint32_t layers;
    size_t bytes;              /* per layer */
    void **dev;                /* device base per layer */
    void **host;               /* host mirror per layer */
} gt_cache;

void gt_cache_alloc(gt_cache *c, uint32_t layers, size_t bytes);
void gt_cache_free(gt_cache *c);
void gt_cache_upload(gt_cache *c);
/* Copies the device content into out (per layer, `bytes` each). */
void gt_cache_download(const gt_cache *c, void **out);

#endif
