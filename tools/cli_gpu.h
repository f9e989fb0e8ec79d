/*
 * cli_gpu.h - GPU buffers for `--device cuda:N`: a paged KV cache in device
 * memory laid out as vLLM's (per layer [planes][blocks][16][row] before vLLM
 * 0.26, or packed (blocks, 16, heads, 2 * dim) / (blocks, heads, 16,
 * 2 * dim) from 0.26 (--layout); blocks in a shuffled order), filled from
 * and checked against the CLI's contiguous host buffer.  Built with CUDA
 * only; elsewhere every call says so.
 */
#ifndef KVS_CLI_GPU_H
#define KVS_CLI_GPU_H

#include "cli.h"

typedef struct cli_gpu {
    int device;
    cli_layout layout;
    uint32_t layers, planes, heads;
    uint64_t row, head, block, nblocks; /* head: bytes of one head row */
    size_t tokens;
    size_t layer_bytes;
    void **dev;          /* per layer */
    int64_t *slots;      /* per token */
    char *stage;         /* pinned, one layer */
    kvs_kv kv;           /* KVS_MEM_CUDA description of the cache */
} cli_gpu;

/* 1 when this CLI was built with CUDA. */
int cli_gpu_built(void);
/* A cache for the tokens of `like` on geo's CUDA device in geo's layout,
 * blocks shuffled by seed.  Prints the reason and returns an exit status on
 * failure. */
int cli_gpu_alloc(cli_gpu *g, const cli_kvbuf *like, const cli_geometry *geo, uint64_t seed);
void cli_gpu_free(cli_gpu *g);
/* Copies the host buffer's rows to their slots on the device, and back. */
int cli_gpu_upload(cli_gpu *g, const cli_kvbuf *src);
int cli_gpu_download(cli_gpu *g, cli_kvbuf *dst);
int cli_gpu_poison(cli_gpu *g, int byte);
/* Pinned host<->device copy rates (GB/s) over `bytes`, median of `reps`. */
int cli_gpu_ceilings(int device, size_t bytes, int reps, double *h2d, double *d2h);
/* "NVIDIA H100 80GB HBM3" */
const char *cli_gpu_name(int device);

#endif
