/*
 * read_paths.c - how fast can chunk files reach GPU memory on this machine,
 * by each way a POSIX path could take?  The ceilings behind kvstash's
 * choice of data path (bench/RESULTS.md):
 *
 *   pread pageable   T threads pread 1 MiB units into ordinary memory
 *   pread pinned     the same into cudaHostAlloc'd memory
 *   pread+H2D        the same, each unit copied to VRAM as soon as it is read
 *                    (per-thread stream, a ring of units)
 *   pread registered the same into ordinary (huge-page) memory pinned with
 *                    cudaHostRegister, without and with the copies to VRAM
 *   register+H2D     mmap the file, cudaHostRegister it read-only, one copy
 *                    to VRAM straight from the page cache, unregister
 *   mmap+pageable    mmap, cudaMemcpy from the mapping (LMCache's fallback)
 *
 * usage: read_paths DIR [files=64] [MiB per file=32] [threads=16]
 * Build: nvcc -O2 -o read_paths read_paths.c -lpthread
 */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define UNIT (1u << 20)
#define RING 8

static char dir[4096];
static int nfiles, nthreads;
static size_t fbytes;
static int mode;
static char *dev_all;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CK(x)                                                                       \
    do {                                                                            \
        cudaError_t e_ = (x);                                                       \
        if (e_) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,               \
                    cudaGetErrorString(e_));                                        \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    CK(cudaSetDevice(0));
    char *buf = NULL;
    cudaStream_t st;
    cudaEvent_t ev[RING];
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (int i = 0; i < RING; i++)
        CK(cudaEventCreateWithFlags(&ev[i], cudaEventDisableTiming | cudaEventBlockingSync));
    if (mode == 0) {
        buf = aligned_alloc(4096, (size_t)RING * UNIT);
    } else if (mode <= 2) {
        CK(cudaHostAlloc((void **)&buf, (size_t)RING * UNIT, 0));
    } else if (mode >= 5) {
        buf = aligned_alloc(2u << 20, (size_t)RING * UNIT);
        madvise(buf, (size_t)RING * UNIT, MADV_HUGEPAGE);
        memset(buf, 0, (size_t)RING * UNIT);
        CK(cudaHostRegister(buf, (size_t)RING * UNIT, cudaHostRegisterPortable));
    }
    char *dev = dev_all + (size_t)id * fbytes;
    for (int f = id; f < nfiles; f += nthreads) {
        char path[4200];
        snprintf(path, sizeof path, "%s/f%03d", dir, f);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            perror(path);
            exit(1);
        }
        if (mode <= 2 || mode >= 5) {
            int h2d = mode == 2 || mode == 6;
            size_t k = 0;
            for (size_t o = 0; o < fbytes; o += UNIT, k++) {
                char *b = buf + (k % RING) * UNIT;
                if (h2d && k >= RING)
                    CK(cudaEventSynchronize(ev[k % RING]));
                if (pread(fd, b, UNIT, (off_t)o) != UNIT) {
                    perror("pread");
                    exit(1);
                }
                if (h2d) {
                    CK(cudaMemcpyAsync(dev + o, b, UNIT, cudaMemcpyHostToDevice, st));
                    CK(cudaEventRecord(ev[k % RING], st));
                }
            }
            CK(cudaStreamSynchronize(st));
        } else {
            void *m = mmap(NULL, fbytes, PROT_READ, MAP_SHARED | (mode == 3 ? MAP_POPULATE : 0),
                           fd, 0);
            if (m == MAP_FAILED) {
                perror("mmap");
                exit(1);
            }
            if (mode == 3) {
                cudaError_t e = cudaHostRegister(m, fbytes, cudaHostRegisterReadOnly);
                if (e) {
                    fprintf(stderr, "cudaHostRegister: %s\n", cudaGetErrorString(e));
                    exit(1);
                }
                CK(cudaMemcpyAsync(dev, m, fbytes, cudaMemcpyHostToDevice, st));
                CK(cudaStreamSynchronize(st));
                CK(cudaHostUnregister(m));
            } else {
                CK(cudaMemcpy(dev, m, fbytes, cudaMemcpyHostToDevice));
            }
            munmap(m, fbytes);
        }
        close(fd);
    }
    if (mode == 0) {
        free(buf);
    } else if (mode >= 5) {
        cudaHostUnregister(buf);
        free(buf);
    } else if (buf) {
        cudaFreeHost(buf);
    }
    for (int i = 0; i < RING; i++)
        cudaEventDestroy(ev[i]);
    cudaStreamDestroy(st);
    return NULL;
}

static double run(int m, int threads)
{
    mode = m;
    nthreads = threads;
    pthread_t th[256];
    double t0 = now();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    return (double)fbytes * nfiles / (now() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [files] [MiB] [threads]\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    nfiles = argc > 2 ? atoi(argv[2]) : 64;
    fbytes = (size_t)(argc > 3 ? atoi(argv[3]) : 32) << 20;
    int threads = argc > 4 ? atoi(argv[4]) : 16;
    char *src = malloc(fbytes);
    for (size_t i = 0; i < fbytes; i++)
        src[i] = (char)(i * 131 + (i >> 12));
    for (int f = 0; f < nfiles; f++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/f%03d", dir, f);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, src, fbytes) != (ssize_t)fbytes) {
            perror(path);
            return 1;
        }
        close(fd);
    }
    free(src);
    CK(cudaSetDevice(0));
    CK(cudaMalloc((void **)&dev_all, fbytes * (size_t)(threads > 16 ? threads : 16)));
    static const char *names[] = {"pread pageable",      "pread pinned (HostAlloc)",
                                  "pread pinned+H2D",    "register file+H2D",
                                  "mmap+pageable cudaMemcpy", "pread registered",
                                  "pread registered+H2D"};
    const char *only = getenv("READ_PATHS_MODES"); /* e.g. "0156" */
    int ts[] = {4, 8, threads};
    for (int m = 0; m < 7; m++) {
        if (only && !strchr(only, '0' + m))
            continue;
        printf("%-26s", names[m]);
        for (int i = 0; i < 3; i++) {
            run(m, ts[i]); /* warm */
            printf("  %2d thr %6.2f GB/s", ts[i], run(m, ts[i]));
        }
        printf("\n");
        fflush(stdout);
    }
    for (int f = 0; f < nfiles; f++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/f%03d", dir, f);
        unlink(path);
    }
    return 0;
}
