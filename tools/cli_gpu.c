/*
 * cli_gpu.c - the CLI's GPU buffers (see cli_gpu.h).  Rows move between the
 * contiguous host buffer and the paged device cache one layer at a time
 * through a pinned buffer, so a 4 GiB cache costs one layer of pinned memory.
 */
#include "cli_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KVS_HAVE_CUDA
#include <cuda_runtime_api.h>

int cli_gpu_built(void)
{
    return 1;
}

static int cuda_failed(cudaError_t e, const char *what)
{
    fprintf(stderr, "kvstash: %s: %s\n", what, cudaGetErrorString(e));
    return EXIT_IO;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int cli_gpu_alloc(cli_gpu *g, const cli_kvbuf *like, const cli_geometry *geo, uint64_t seed)
{
    memset(g, 0, sizeof *g);
    const int device = geo->device;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess)
        return cuda_failed(e, "--device: cudaSetDevice");
    g->device = device;
    g->layout = geo->layout;
    g->layers = like->layers;
    g->planes = like->planes;
    g->row = like->row;
    g->heads = geo->ns.layout == KVS_LAYOUT_MLA ? 1 : geo->ns.num_kv_heads;
    g->head = g->row / g->heads;
    g->block = 16;
    g->tokens = like->tokens;
    g->nblocks = (g->tokens + g->block - 1) / g->block;
    g->layer_bytes = (size_t)g->planes * g->nblocks * g->block * g->row;
    g->dev = calloc(g->layers, sizeof *g->dev);
    g->slots = malloc(g->tokens * sizeof *g->slots);
    uint64_t *table = malloc(g->nblocks * sizeof *table);
    if (!g->dev || !g->slots || !table) {
        free(table);
        fprintf(stderr, "kvstash: out of memory\n");
        return EXIT_IO;
    }
    for (uint64_t i = 0; i < g->nblocks; i++)
        table[i] = i;
    for (uint64_t i = g->nblocks; i > 1; i--) {
        uint64_t j = mix(seed + i) % i, t = table[i - 1];
        table[i - 1] = table[j];
        table[j] = t;
    }
    for (size_t t = 0; t < g->tokens; t++)
        g->slots[t] = (int64_t)(table[t / g->block] * g->block + t % g->block);
    free(table);
    for (uint32_t l = 0; l < g->layers; l++)
        if ((e = cudaMalloc(&g->dev[l], g->layer_bytes)) != cudaSuccess)
            return cuda_failed(e, "--device: cudaMalloc of the KV cache");
    if ((e = cudaMallocHost((void **)&g->stage, g->layer_bytes)) != cudaSuccess)
        return cuda_failed(e, "--device: cudaMallocHost");
    g->kv = (kvs_kv){.mem = KVS_MEM_CUDA, .device = device, .num_layers = g->layers,
                     .layers = g->dev, .num_slots = g->nblocks * g->block,
                     .block_size = g->block, .slot_mapping = g->slots};
    const uint64_t H = g->heads, D = g->head, N = g->block; /* D in bytes */
    switch (g->layout) {
    case CLI_LAYOUT_PLANES: break; /* the defaults: [planes][blocks][N][H * D] */
    case CLI_LAYOUT_PACKED_NHD:    /* memory (blocks, N, H, 2D) */
        g->kv.slot_stride = H * 2 * D;
        g->kv.head_stride = 2 * D;
        g->kv.plane_stride = D;
        g->kv.block_stride = N * H * 2 * D;
        break;
    case CLI_LAYOUT_PACKED_HND:    /* memory (blocks, H, N, 2D) */
        g->kv.slot_stride = 2 * D;
        g->kv.head_stride = N * 2 * D;
        g->kv.plane_stride = D;
        g->kv.block_stride = H * N * 2 * D;
        break;
    }
    return EXIT_OK;
}

void cli_gpu_free(cli_gpu *g)
{
    for (uint32_t l = 0; g->dev && l < g->layers; l++)
        cudaFree(g->dev[l]);
    cudaFreeHost(g->stage);
    free(g->dev);
    free(g->slots);
    memset(g, 0, sizeof *g);
}

/* Head row h of (plane, slot) in a layer's memory, by each layout's shape. */
static char *head_row(const cli_gpu *g, char *layer, uint32_t plane, int64_t slot, uint32_t h)
{
    const uint64_t s = (uint64_t)slot, b = s / g->block, n = s % g->block;
    switch (g->layout) {
    case CLI_LAYOUT_PACKED_NHD:
        return layer + ((b * g->block + n) * g->heads + h) * 2 * g->head + plane * g->head;
    case CLI_LAYOUT_PACKED_HND:
        return layer + ((b * g->heads + h) * g->block + n) * 2 * g->head + plane * g->head;
    case CLI_LAYOUT_PLANES: break;
    }
    return layer + ((uint64_t)plane * g->nblocks * g->block + s) * g->row + h * g->head;
}

/* Copies the token's row between the contiguous host buffer and the layer
 * in its layout, head row by head row (one copy where the row is whole). */
static void move_row(const cli_gpu *g, char *layer, uint32_t plane, int64_t slot, char *row,
                     bool to_layer)
{
    const uint32_t parts = g->layout == CLI_LAYOUT_PLANES ? 1 : g->heads;
    const uint64_t len = g->row / parts;
    for (uint32_t h = 0; h < parts; h++) {
        char *m = head_row(g, layer, plane, slot, h);
        if (to_layer)
            memcpy(m, row + h * len, len);
        else
            memcpy(row + h * len, m, len);
    }
}

int cli_gpu_upload(cli_gpu *g, const cli_kvbuf *src)
{
    for (uint32_t l = 0; l < g->layers; l++) {
        memset(g->stage, 0, g->layer_bytes);
        for (uint32_t p = 0; p < g->planes; p++)
            for (size_t t = 0; t < g->tokens; t++)
                move_row(g, g->stage, p, g->slots[t], cli_kvbuf_row(src, l, p, t), true);
        cudaError_t e = cudaMemcpy(g->dev[l], g->stage, g->layer_bytes, cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            return cuda_failed(e, "copying the KV cache to the GPU");
    }
    return EXIT_OK;
}

int cli_gpu_download(cli_gpu *g, cli_kvbuf *dst)
{
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        return cuda_failed(e, "cudaDeviceSynchronize");
    for (uint32_t l = 0; l < g->layers; l++) {
        e = cudaMemcpy(g->stage, g->dev[l], g->layer_bytes, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess)
            return cuda_failed(e, "copying the KV cache back from the GPU");
        for (uint32_t p = 0; p < g->planes; p++)
            for (size_t t = 0; t < g->tokens; t++)
                move_row(g, g->stage, p, g->slots[t], cli_kvbuf_row(dst, l, p, t), false);
    }
    return EXIT_OK;
}

int cli_gpu_poison(cli_gpu *g, int byte)
{
    for (uint32_t l = 0; l < g->layers; l++) {
        cudaError_t e = cudaMemset(g->dev[l], byte, g->layer_bytes);
        if (e != cudaSuccess)
            return cuda_failed(e, "cudaMemset");
    }
    cudaError_t e = cudaDeviceSynchronize();
    return e == cudaSuccess ? EXIT_OK : cuda_failed(e, "cudaDeviceSynchronize");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cli_gpu_ceilings(int device, size_t bytes, int reps, double *h2d, double *d2h)
{
    void *h = NULL, *d = NULL;
    cudaEvent_t a, b;
    double up[64], down[64];
    if (reps > 64)
        reps = 64;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaMallocHost(&h, bytes);
    if (e == cudaSuccess)
        e = cudaMalloc(&d, bytes);
    if (e != cudaSuccess) {
        cudaFreeHost(h);
        return cuda_failed(e, "allocating the copy-ceiling buffers");
    }
    memset(h, 0x5a, bytes);
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice); /* warm up */
    for (int r = 0; r < reps; r++) {
        float ms = 0;
        cudaEventRecord(a, 0);
        cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, 0);
        cudaEventRecord(b, 0);
        cudaEventSynchronize(b);
        cudaEventElapsedTime(&ms, a, b);
        up[r] = (double)bytes / (ms / 1e3) / 1e9;
        cudaEventRecord(a, 0);
        cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, 0);
        cudaEventRecord(b, 0);
        cudaEventSynchronize(b);
        cudaEventElapsedTime(&ms, a, b);
        down[r] = (double)bytes / (ms / 1e3) / 1e9;
    }
    e = cudaGetLastError();
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaFree(d);
    cudaFreeHost(h);
    if (e != cudaSuccess)
        return cuda_failed(e, "measuring the copy ceilings");
    qsort(up, (size_t)reps, sizeof *up, cmp_double);
    qsort(down, (size_t)reps, sizeof *down, cmp_double);
    *h2d = up[reps / 2];
    *d2h = down[reps / 2];
    return EXIT_OK;
}

const char *cli_gpu_name(int device)
{
    static struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess)
        return "?";
    return p.name;
}

#else /* no CUDA */

static int no_cuda(void)
{
    fprintf(stderr, "kvstash: --device cuda:N: this kvstash was built without CUDA support\n");
    return EXIT_USAGE;
}

int cli_gpu_built(void)
{
    return 0;
}

int cli_gpu_alloc(cli_gpu *g, const cli_kvbuf *like, const cli_geometry *geo, uint64_t seed)
{
    (void)like, (void)geo, (void)seed;
    memset(g, 0, sizeof *g);
    return no_cuda();
}

void cli_gpu_free(cli_gpu *g)
{
    (void)g;
}

int cli_gpu_upload(cli_gpu *g, const cli_kvbuf *src)
{
    (void)g, (void)src;
    return no_cuda();
}

int cli_gpu_download(cli_gpu *g, cli_kvbuf *dst)
{
    (void)g, (void)dst;
    return no_cuda();
}

int cli_gpu_poison(cli_gpu *g, int byte)
{
    (void)g, (void)byte;
    return no_cuda();
}

int cli_gpu_ceilings(int device, size_t bytes, int reps, double *h2d, double *d2h)
{
    (void)device, (void)bytes, (void)reps, (void)h2d, (void)d2h;
    return no_cuda();
}

const char *cli_gpu_name(int device)
{
    (void)device;
    return "none";
}

#endif
