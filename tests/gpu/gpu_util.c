/* gpu_util.c - helpers of the GPU tests. */
#include "gpu_util.h"

#include <dlfcn.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int gt_failures;

void gt_require_gpu(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive a crash */
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("SKIP: no CUDA driver on this machine\n");
        exit(GT_SKIP);
    }
    dlclose(h);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || (e == cudaSuccess && n == 0)) {
        printf("SKIP: no CUDA device (%s)\n", cudaGetErrorString(e));
        exit(GT_SKIP);
    }
    if (e != cudaSuccess) {
        fprintf(stderr, "cudaGetDeviceCount: %s\n", cudaGetErrorString(e));
        exit(1);
    }
    struct cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    printf("device 0: %s (sm_%d%d), %d device(s)\n", p.name, p.major, p.minor, n);
}

static uint64_t state;

uint64_t gt_seed(void)
{
    const char *s = getenv("GT_SEED");
    if (s && *s) {
        state = strtoull(s, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
    }
    if (!state)
        state = 1;
    printf("seed: GT_SEED=%llu\n", (unsigned long long)state);
    return state;
}

uint64_t gt_rand(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Dull;
}

void gt_fill(void *p, size_t n)
{
    uint8_t *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = gt_rand();
        memcpy(b + i, &v, 8);
    }
    for (; i < n; i++)
        b[i] = (uint8_t)gt_rand();
}

char *gt_mkdtemp(const char *tag)
{
    const char *root = getenv("GT_TMP");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/kvs-gpu-%s-XXXXXX", root && *root ? root : "/tmp", tag);
    if (!mkdtemp(p)) {
        perror(p);
        exit(1);
    }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void gt_rmtree(const char *path)
{
    if (path && strstr(path, "kvs-gpu-"))
        nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

void gt_cache_alloc(gt_cache *c, uint32_t layers, size_t bytes)
{
    c->layers = layers;
    c->bytes = bytes;
    c->dev = calloc(layers, sizeof *c->dev);
    c->host = calloc(layers, sizeof *c->host);
    for (uint32_t l = 0; l < layers; l++) {
        CU(cudaMalloc(&c->dev[l], bytes));
        c->host[l] = malloc(bytes);
        if (!c->host[l]) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
}

void gt_cache_free(gt_cache *c)
{
    for (uint32_t l = 0; l < c->layers; l++) {
        cudaFree(c->dev[l]);
        free(c->host[l]);
    }
    free(c->dev);
    free(c->host);
}

void gt_cache_upload(gt_cache *c)
{
    for (uint32_t l = 0; l < c->layers; l++)
        CU(cudaMemcpy(c->dev[l], c->host[l], c->bytes, cudaMemcpyHostToDevice));
}

void gt_cache_download(const gt_cache *c, void **out)
{
    for (uint32_t l = 0; l < c->layers; l++)
        CU(cudaMemcpy(out[l], c->dev[l], c->bytes, cudaMemcpyDeviceToHost));
}
