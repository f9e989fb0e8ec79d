/*
 * dev_cuda.c - the device data path (see dev.h for the flow).
 *
 * Staging: one VRAM buffer (the arena) of cufile_buffer_size MiB, allocated
 * and, when cuFile is in use, registered with cuFile once.  Its first part
 * is cut into slots, one per I/O worker, each a piece long and paired with
 * a pinned host slice, a stream, events and a few words for checksums; the
 * rest is handed out in 4 KiB-aligned extents to captured store chunks.
 * Slots and extents come from free lists under a mutex: a worker takes a
 * slot for one piece and gives it back, so nothing is allocated per I/O.
 *
 * Retrieve of a piece: the worker reads units (dev_unit_kb) into its pinned slice
 * and queues each unit's copy to VRAM on its own stream as soon as it is
 * read, so the copy of one unit overlaps the read of the next and the
 * workers' copies overlap each other on separate streams.  (Through cuFile
 * the units land in VRAM directly.)  Then, on the same stream: the expected
 * sums go up, a kernel hashes every segment and counts mismatches, and the
 * scatter kernel - ordered after the event recorded on the caller's stream
 * when the op began, and gated on the mismatch count on the device - writes
 * the caller's cache.  One synchronization per piece reads the verdict back.
 * Verifying on the GPU keeps the CPUs, the scarce resource of this path, for
 * system calls; bench/RESULTS.md has the figures behind that choice.
 *
 * Store: kvs__dev_capture queues, per chunk, the gather into its extent, the
 * zeroing of the padding and the segment sums, all on one stream ordered
 * after the caller's stream; capture_end synchronizes once.  Pieces then
 * copy units back to the slot's pinned slice and write each as soon as its
 * copy completes (an event per unit), or hand the extent to cuFileWrite.
 *
 * cuFile: io_path=auto writes and reads a probe file on the store through
 * cuFile at open, and uses cuFile only if that works; io_path=cufile uses it
 * without the probe.  Either way a file cuFile cannot register, or a
 * transfer it fails, is served by the POSIX path, counted and logged once.
 */
#include "dev.h"

#include "chunk_file.h"
#include "codec_fmt.h"
#include "io_cufile.h"
#include "io_ops.h"
#include "kvs_cuda.h"

#include <cuda_runtime_api.h>
#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_UNITS 64             /* per piece */
#define SUMS_MAX (KVS_MAX_SEGMENTS)
/* Per slot, host and device alike: the expected sums, the verdict, and a
 * compressed piece's frame offsets and lengths. */
#define SMALL_BYTES 8192u
#define SMALL_FLAG (SUMS_MAX * 8u)   /* 3584 */
#define SMALL_OFF 4096u
#define SMALL_LEN 6144u
#define PROBE_BYTES (64u * 1024u)
/* Per captured chunk (device, then one copy to pinned memory per capture
 * batch): its plain segment sums, and with the codec the frame sums,
 * offsets and lengths and the frame area's size. */
#define META_PLAIN 0u
#define META_FSUMS (SUMS_MAX * 8u)
#define META_OFF (2u * SUMS_MAX * 8u)
#define META_LEN (META_OFF + SUMS_MAX * 4u)
#define META_STORED (META_LEN + SUMS_MAX * 4u)
#define META_BYTES 12288u

typedef struct dev_slot {
    struct dev_slot *next;      /* free list */
    char *host;                 /* pinned, slot_bytes */
    char *dev;                  /* arena + dev_off */
    uint64_t dev_off;
    cudaStream_t stream;
    cudaEvent_t ev[MAX_UNITS];  /* blocking-sync: a waiting worker sleeps */
    cudaEvent_t done;
    char *sdev;                 /* arena + sdev_off: a compressed piece's
                                   stored bytes, read before decoding */
    uint64_t sdev_off;
    uint64_t *host_sums;        /* pinned */
    uint32_t *host_flag;        /* pinned */
    uint32_t *host_foff, *host_flen;
    uint64_t *dev_sums;
    uint32_t *dev_flag;
    uint32_t *dev_foff, *dev_flen;
    uint8_t *host_digests;      /* auth: pinned, a piece's SHA-256s */
    uint8_t *dev_digests;       /* auth: the same on the device */
} dev_slot;

typedef struct extent {
    uint64_t off, len;
} extent;

typedef struct cap_item {
    uint64_t *dst;
    kvs_dev_stage *stage;
    uint32_t nseg;
    bool codec;                  /* encoded at capture */
} cap_item;

struct kvs_dev {
    int device;
    kvs_dev_params p;
    uint64_t unit;               /* bytes per read/write call and per copy */

    char *arena;                 /* VRAM staging */
    uint64_t arena_bytes;
    bool registered;             /* with cuFile */
    pthread_mutex_t arena_mu;
    extent *free_ext;            /* sorted by offset, coalesced */
    uint32_t nfree, capfree;

    pthread_mutex_t slot_mu;
    dev_slot *slots;
    dev_slot *free_slots;
    uint32_t nslots;
    char *slot_host;             /* pinned, nslots * slot_bytes */
    char *small_host;            /* pinned, nslots * SMALL_BYTES */
    char *small_dev;             /* nslots * SMALL_BYTES */
    uint8_t *dig_host;           /* auth: pinned, nslots * dig_bytes */
    uint8_t *dig_dev;            /* auth: nslots * dig_bytes */
    uint64_t dig_bytes;          /* auth: digests of a slot's bytes */

    pthread_mutex_t cap_mu;      /* one capture at a time */
    cudaStream_t cap_stream;
    char *cap_meta;              /* pinned, cap_max * META_BYTES */
    char *cap_meta_dev;          /* the same on the device */
    cap_item *cap_items;
    uint32_t cap_max, cap_n;
    bool cap_failed;

    cudaStream_t ctl;            /* op tables */

    /* the codec (dev.h: p.codec) */
    uint64_t stored_cap;         /* a slot's room for stored bytes */
    char *gbuf;                  /* arena: a chunk gathered before encoding
                                    (the capture stream's, one at a time) */
    char *scratch;               /* arena: the encoder's scratch */
    int logged_codec;

    bool cufile;                 /* the cuFile path is in use */
    bool host_registered;        /* slot_host is registered, not HostAlloc'd */
    uint32_t ring;               /* units of a slot's pinned slice in flight */
    /* where the time of the pieces went (logged at close) */
    _Atomic uint64_t n_read, ns_pread, ns_ring, ns_tail;
    _Atomic uint64_t n_write, ns_d2h, ns_pwrite;
    char reason[320];            /* why this data path */
    _Atomic uint64_t fallbacks;
    int logged_cuda, logged_fallback;
};

struct kvs_dev_op {
    kvs_dev *d;
    kvs_cuda_chunk proto;        /* everything but t0 and tokens */
    void *tables;                /* device: layer addresses, then slots */
    bool tables_async;
    cudaEvent_t start;           /* on the caller's stream at op start */
};

struct kvs_dev_stage {
    uint64_t off, bytes;         /* the extent in the arena */
    char *dev;                   /* the padded payload (logical bytes); with
                                    the codec and no CPU tier, set at
                                    capture_end only if the chunk stays plain */
    uint8_t *dev_digests;        /* auth: after the payload; else NULL */
    char *enc;                   /* codec: the table block, then the frames
                                    (or the plain payload, see copy_unless) */
    uint64_t padded;
    bool coded;                  /* capture_end: stored compressed */
    bool broken;                 /* capture_end: the encoder's output did not
                                    pass the checks: fail the write */
    uint64_t stored;             /* frame area bytes */
    uint32_t nframes;
    uint32_t foff[SUMS_MAX];     /* the frame table (coded) */
    uint32_t flen[SUMS_MAX];
};

struct kvs_dev_file {
    void *handle;
    int fd;                      /* a second descriptor cuFile accepts, or -1 */
};

bool kvs__dev_built(void)
{
    return true;
}

/* The tuning of this path (dev_piece_mb, dev_unit_kb, dev_ring, dev_pinned)
 * is benchmark configuration, in the one table (config.c). */
uint64_t kvs__dev_piece_bytes(const kvs_config *cfg, uint64_t block_bytes, uint64_t padded,
                              bool store)
{
    /* Stores: one piece per chunk (pieces of one file would contend for its
     * inode lock, and the write ring makes any length fit a slot).
     * Retrieves: pieces of about 8 MiB, so several workers read a chunk. */
    uint64_t want = store ? KVS_MIN(padded, (uint64_t)64 << 20)
                          : KVS_MIN(padded, kvs__config_canon(cfg, KVS_CFG_DEV_PIECE_MB));
    return KVS_ALIGN_UP(KVS_MAX(want, block_bytes), block_bytes);
}

/* ---- helpers ------------------------------------------------------------ */

static kvs_dev_rc cuda_rc(kvs_dev *d, cudaError_t e, const char *what)
{
    kvs__log_once(&d->logged_cuda, KVS_LOG_ERROR,
                  "CUDA %s failed on cuda:%d: %s (error %d); the chunk is a miss or an unstored "
                  "chunk (further CUDA failures are counted, not logged)",
                  what, d->device, cudaGetErrorString(e), (int)e);
    return KVS_DEV_CUDA;
}

static kvs_status cuda_fail(cudaError_t e, const char *what, int device)
{
    return kvs__fail(KVS_ERR_CUDA, "CUDA %s on cuda:%d: %s (error %d)", what, device,
                     cudaGetErrorString(e), (int)e);
}

/* Calls made in the caller's thread leave its CUDA context as they found it.
 * The caller (PyTorch, with a CUDA runtime of its own) may work on another
 * device than this engine, and both runtimes follow the driver's current
 * context, so that is what is saved and restored, through the driver's own
 * entry points (libcuda is loaded by then; the runtime opened it). */
typedef int (*ctx_get_fn)(void **ctx);
typedef int (*ctx_set_fn)(void *ctx);
static _Atomic(ctx_get_fn) ctx_get;
static _Atomic(ctx_set_fn) ctx_set;

static void *dev_enter(const kvs_dev *d)
{
    ctx_get_fn get = atomic_load(&ctx_get);
    if (!get) {
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (lib) {
            atomic_store(&ctx_set, (ctx_set_fn)dlsym(lib, "cuCtxSetCurrent"));
            atomic_store(&ctx_get, get = (ctx_get_fn)dlsym(lib, "cuCtxGetCurrent"));
            dlclose(lib); /* RTLD_NOLOAD: only a reference was taken */
        }
    }
    void *saved = NULL;
    if (!get || get(&saved) != 0)
        saved = NULL;
    cudaSetDevice(d->device);
    return saved;
}

static void dev_leave(const kvs_dev *d, void *saved)
{
    (void)d;
    ctx_set_fn set = atomic_load(&ctx_set);
    if (saved && set)
        set(saved);
}

/* Whether a CUDA driver is installed at all, asked before the runtime is
 * touched (so machines without one never initialize it). */
static bool driver_present(char *why, size_t wlen)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, wlen, "no CUDA driver (libcuda.so.1: %s)", e ? e : "not found");
        return false;
    }
    dlclose(h);
    return true;
}

static void note_fallback(kvs_dev *d, int status, const char *what)
{
    atomic_fetch_add(&d->fallbacks, 1);
    kvs__log_once(&d->logged_fallback, KVS_LOG_WARN,
                  "cuFile could not serve a chunk file (%s: %s); the POSIX path serves it "
                  "(further cases are counted in kvstash_cufile_fallbacks_total)",
                  what, kvs__cufile_strerror(status));
}

/* Waits for everything queued on the slot's stream.  Through a
 * blocking-sync event rather than cudaStreamSynchronize, which may spin: the
 * waiting worker's core is better spent on another worker's read. */
static cudaError_t slot_wait(dev_slot *s)
{
    cudaError_t e = cudaEventRecord(s->done, s->stream);
    return e != cudaSuccess ? e : cudaEventSynchronize(s->done);
}

/* ---- the arena ---------------------------------------------------------- */

static bool arena_alloc(kvs_dev *d, uint64_t bytes, uint64_t *off_out)
{
    bytes = KVS_ALIGN_UP(bytes, (uint64_t)KVS_FILE_ALIGN);
    bool ok = false;
    pthread_mutex_lock(&d->arena_mu);
    if (d->nfree + 2 > d->capfree) {  /* room for the split a later free may need */
        uint32_t cap = d->capfree ? d->capfree * 2 : 16;
        extent *n = kvs__realloc(d->free_ext, cap * sizeof *n);
        if (!n)
            goto out;
        d->free_ext = n;
        d->capfree = cap;
    }
    for (uint32_t i = 0; i < d->nfree; i++) {
        extent *x = &d->free_ext[i];
        if (x->len < bytes)
            continue;
        *off_out = x->off;
        x->off += bytes;
        x->len -= bytes;
        if (x->len == 0) {
            memmove(x, x + 1, (d->nfree - i - 1) * sizeof *x);
            d->nfree--;
        }
        ok = true;
        break;
    }
out:
    pthread_mutex_unlock(&d->arena_mu);
    return ok;
}

static void arena_free(kvs_dev *d, uint64_t off, uint64_t bytes)
{
    bytes = KVS_ALIGN_UP(bytes, (uint64_t)KVS_FILE_ALIGN);
    pthread_mutex_lock(&d->arena_mu);
    uint32_t i = 0;
    while (i < d->nfree && d->free_ext[i].off < off)
        i++;
    bool merge_prev = i > 0 && d->free_ext[i - 1].off + d->free_ext[i - 1].len == off;
    bool merge_next = i < d->nfree && off + bytes == d->free_ext[i].off;
    if (merge_prev && merge_next) {
        d->free_ext[i - 1].len += bytes + d->free_ext[i].len;
        memmove(&d->free_ext[i], &d->free_ext[i + 1], (d->nfree - i - 1) * sizeof(extent));
        d->nfree--;
    } else if (merge_prev) {
        d->free_ext[i - 1].len += bytes;
    } else if (merge_next) {
        d->free_ext[i].off = off;
        d->free_ext[i].len += bytes;
    } else {
        /* capacity was reserved by the allocation that this frees */
        assert(d->nfree < d->capfree);
        memmove(&d->free_ext[i + 1], &d->free_ext[i], (d->nfree - i) * sizeof(extent));
        d->free_ext[i] = (extent){off, bytes};
        d->nfree++;
    }
    pthread_mutex_unlock(&d->arena_mu);
}

/* ---- slots -------------------------------------------------------------- */

static dev_slot *slot_get(kvs_dev *d)
{
    pthread_mutex_lock(&d->slot_mu);
    dev_slot *s = d->free_slots;
    if (s)
        d->free_slots = s->next;
    pthread_mutex_unlock(&d->slot_mu);
    return s;
}

static void slot_put(kvs_dev *d, dev_slot *s)
{
    pthread_mutex_lock(&d->slot_mu);
    s->next = d->free_slots;
    d->free_slots = s;
    pthread_mutex_unlock(&d->slot_mu);
}

/* ---- cuFile self-test --------------------------------------------------- */

/* Writes PROBE_BYTES from registered memory base+a to a new file in dir and
 * reads them back to base+b through cuFile, then compares on the host.
 * 0 on success, else why[] says which step failed and with what. */
static int cufile_probe(const char *dir, bool direct, char *base, uint64_t a, uint64_t b,
                        char *why, size_t wlen)
{
    const kvs_io_ops *io = kvs__io();
    char path[KVS_PATH_MAX], name[64];
    kvs__temp_name(name, sizeof name, ".kvstash-cufile-probe", kvs__temp_suffix());
    kvs__pathf(path, "%s/%s", dir, name);
    int rc = -1;
    void *fh = NULL;
    char *host = NULL;
    int fd = io->open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
    if (fd < 0) {
        snprintf(why, wlen, "cannot create a probe file in %s: %s", dir, strerror(errno));
        return -1;
    }
    int st = kvs__cufile_handle_register(fd, &fh);
    if (st) {
        snprintf(why, wlen, "cuFileHandleRegister on %s: %s", dir, kvs__cufile_strerror(st));
        goto out;
    }
    if (cudaMemset(base + a, 0xa5, PROBE_BYTES) != cudaSuccess ||
        cudaMemset(base + b, 0x00, PROBE_BYTES) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
        snprintf(why, wlen, "cudaMemset of the probe buffer failed");
        goto out;
    }
    ssize_t n = kvs__cufile_write(fh, base, PROBE_BYTES, 0, (off_t)a);
    if (n != PROBE_BYTES) {
        snprintf(why, wlen, "cuFileWrite on %s: %s", dir,
                 n < 0 ? kvs__cufile_strerror((int)-n) : "short write");
        goto out;
    }
    n = kvs__cufile_read(fh, base, PROBE_BYTES, 0, (off_t)b);
    if (n != PROBE_BYTES) {
        snprintf(why, wlen, "cuFileRead on %s: %s", dir,
                 n < 0 ? kvs__cufile_strerror((int)-n) : "short read");
        goto out;
    }
    host = kvs__malloc(PROBE_BYTES);
    if (!host || cudaMemcpy(host, base + b, PROBE_BYTES, cudaMemcpyDeviceToHost) != cudaSuccess) {
        snprintf(why, wlen, "copying the probe back failed");
        goto out;
    }
    for (uint32_t i = 0; i < PROBE_BYTES; i++) {
        if ((unsigned char)host[i] != 0xa5) {
            snprintf(why, wlen, "cuFile read back different bytes than it wrote (at %u)", i);
            goto out;
        }
    }
    snprintf(why, wlen, "self-test passed: %u KiB written and read back through cuFile in %s",
             PROBE_BYTES / 1024, dir);
    rc = 0;
out:
    kvs__free(host);
    kvs__cufile_handle_deregister(fh);
    io->close(fd);
    io->unlink(path);
    return rc;
}

/* ---- sizes ---------------------------------------------------------------- */

/* A slot's room for the stored bytes of a compressed piece of up to
 * slot_bytes logical bytes: every frame raw (KVS_CODEC_FRAME_HDR and the
 * 16-byte alignment on top, at least KVS_CODEC_MIN_FRAME), a gap of up to
 * 4095 bytes before each frame (CODEC.md lets a writer align frames), and
 * the window's alignment to 4096 at both ends. */
static uint64_t stored_room(uint64_t slot_bytes)
{
    const uint64_t frames = slot_bytes / KVS_MIN_SEGMENT_BYTES + 1;
    return KVS_ALIGN_UP(slot_bytes +
                            frames * (KVS_CODEC_FRAME_HDR + KVS_CODEC_FRAME_ALIGN +
                                      KVS_CODEC_MIN_FRAME + KVS_FILE_ALIGN) +
                            2 * KVS_FILE_ALIGN,
                        (uint64_t)KVS_FILE_ALIGN);
}

/* Room for the encoded frame area of a payload: every frame raw at the
 * bound of a whole frame (kvs__codec_frame_bound), which is what
 * kvs_cuda_codec_encode asks of its output buffer. */
static uint64_t frames_bound(uint64_t payload, uint32_t seg, uint32_t elem)
{
    return (payload + seg - 1) / seg * kvs__codec_frame_bound(seg, elem);
}

/* The codec's part of a stage: the frames or the plain padded payload,
 * whichever can be larger, padded to the file alignment. */
static uint64_t enc_bytes(const kvs_dev_params *p, uint64_t payload, uint64_t padded)
{
    uint32_t seg = kvs__segment_bytes(payload);
    uint64_t frames = KVS_ALIGN_UP(frames_bound(payload, seg, p->elem), (uint64_t)KVS_FILE_ALIGN);
    return KVS_MAX(frames, padded);
}

/* A captured chunk's extent: without the codec (codec: this chunk is
 * encoded) the padded payload and the auth digests; with it the encoded
 * area, after the logical payload when a CPU tier needs that too. */
static uint64_t stage_bytes(const kvs_dev_params *p, bool codec, uint64_t payload,
                            uint64_t padded)
{
    if (!codec) {
        uint64_t ndig = p->auth ? kvs__auth_segment_count(payload) : 0;
        return padded + KVS_ALIGN_UP(ndig * 32, (uint64_t)KVS_FILE_ALIGN);
    }
    return (p->cpu_tier ? padded : 0) + enc_bytes(p, payload, padded);
}

/* The writer's rule (kvs__codec_worth) as a bound the device can test: a
 * frame area of at most this many bytes is stored compressed, above it the
 * chunk stays plain.  0: never.  padded is a multiple of 4096, so it stands
 * for the payload. */
static uint64_t coded_limit(uint64_t padded)
{
    return kvs__codec_worth_limit(padded);
}

/* ---- open and close ------------------------------------------------------- */

/* The pinned host slices.  Ordinary memory pinned with cudaHostRegister
 * measured faster on the GPU test machine than cudaHostAlloc's for the
 * CPU's side of the copies (pread into it, pwrite out of it), at the same
 * DMA speed (bench/RESULTS.md). */
static cudaError_t pinned_alloc(kvs_dev *d, void **p, size_t bytes)
{
    if (!d->host_registered)
        return cudaHostAlloc(p, bytes, cudaHostAllocPortable);
    const size_t huge = (size_t)2 << 20;
    size_t n = KVS_ALIGN_UP(bytes, huge);
    void *m = kvs__aligned_alloc(huge, n);
    if (!m)
        return cudaErrorMemoryAllocation;
    madvise(m, n, MADV_HUGEPAGE);
    memset(m, 0, n); /* fault the pages in before pinning them */
    cudaError_t e = cudaHostRegister(m, n, cudaHostRegisterPortable);
    if (e != cudaSuccess) {
        kvs__free(m);
        cudaGetLastError();
        kvs__log(KVS_LOG_INFO, "cudaHostRegister of the staging failed (%s); using cudaHostAlloc",
                 cudaGetErrorString(e));
        d->host_registered = false;
        return cudaHostAlloc(p, bytes, cudaHostAllocPortable);
    }
    *p = m;
    return cudaSuccess;
}

static void pinned_free(kvs_dev *d, void *p)
{
    if (!p)
        return;
    if (!d->host_registered) {
        cudaFreeHost(p);
        return;
    }
    cudaHostUnregister(p);
    kvs__free(p);
}

static void dev_destroy(kvs_dev *d)
{
    if (!d)
        return;
    if (atomic_load(&d->n_read) || atomic_load(&d->n_write))
        kvs__log(KVS_LOG_INFO,
                 "GPU data path on cuda:%d: %llu pieces read: %.0f ms in pread, %.0f ms waiting "
                 "for copies, %.0f ms verify+scatter; %llu pieces written: %.0f ms waiting for "
                 "copies, %.0f ms in pwrite (thread time; unit %llu KiB, ring %u)",
                 d->device, (unsigned long long)d->n_read, d->ns_pread / 1e6, d->ns_ring / 1e6,
                 d->ns_tail / 1e6, (unsigned long long)d->n_write, d->ns_d2h / 1e6,
                 d->ns_pwrite / 1e6, (unsigned long long)(d->unit >> 10), d->ring);
    void *prev = dev_enter(d);
    cudaDeviceSynchronize();
    if (d->registered)
        kvs__cufile_buf_deregister(d->arena);
    for (uint32_t i = 0; d->slots && i < d->nslots; i++) {
        dev_slot *s = &d->slots[i];
        for (int k = 0; k < MAX_UNITS; k++)
            if (s->ev[k])
                cudaEventDestroy(s->ev[k]);
        if (s->done)
            cudaEventDestroy(s->done);
        if (s->stream)
            cudaStreamDestroy(s->stream);
    }
    if (d->cap_stream)
        cudaStreamDestroy(d->cap_stream);
    if (d->ctl)
        cudaStreamDestroy(d->ctl);
    cudaFree(d->arena);
    cudaFree(d->small_dev);
    cudaFree(d->dig_dev);
    cudaFreeHost(d->dig_host);
    pinned_free(d, d->slot_host);
    cudaFreeHost(d->small_host);
    cudaFreeHost(d->cap_meta);
    cudaFree(d->cap_meta_dev);
    dev_leave(d, prev);
    kvs__free(d->cap_items);
    kvs__free(d->slots);
    kvs__free(d->free_ext);
    pthread_mutex_destroy(&d->arena_mu);
    pthread_mutex_destroy(&d->slot_mu);
    pthread_mutex_destroy(&d->cap_mu);
    kvs__free(d);
}

/* Chooses cuFile or POSIX; fails only when io_path=cufile cannot have it. */
static kvs_status choose_path(kvs_dev *d)
{
    const kvs_config *cfg = d->p.cfg;
    if (cfg->io_path == KVS_IO_PATH_POSIX) {
        snprintf(d->reason, sizeof d->reason, "posix (io_path is posix)");
        return KVS_OK;
    }
    char why[256] = "";
    int st = kvs__cufile_init(why, sizeof why);
    if (st == 0) {
        st = kvs__cufile_buf_register(d->arena, d->arena_bytes);
        if (st)
            snprintf(why, sizeof why, "cuFileBufRegister of %llu MiB: %s",
                     (unsigned long long)(d->arena_bytes >> 20), kvs__cufile_strerror(st));
        else
            d->registered = true;
    }
    if (st == 0 && cfg->io_path == KVS_IO_PATH_AUTO) {
        dev_slot *s0 = &d->slots[0];
        st = cufile_probe(d->p.store->ns_path[0], d->p.store->direct, d->arena, s0->dev_off,
                          s0->dev_off + PROBE_BYTES, why, sizeof why);
        if (st) {
            kvs__cufile_buf_deregister(d->arena);
            d->registered = false;
        }
    }
    if (st == 0) {
        d->cufile = true;
        snprintf(d->reason, sizeof d->reason, "cufile (%s; %s)", kvs__cufile_library(),
                 cfg->io_path == KVS_IO_PATH_CUFILE ? "io_path is cufile" : why);
        return KVS_OK;
    }
    if (cfg->io_path == KVS_IO_PATH_CUFILE)
        return kvs__fail(KVS_ERR_CUFILE, "io_path is cufile, but cuFile cannot be used: %s", why);
    snprintf(d->reason, sizeof d->reason, "posix (cuFile not usable: %s)", why);
    return KVS_OK;
}

kvs_status kvs__dev_open(const kvs_dev_params *p, int device, kvs_dev **out)
{
    char why[256];
    if (!driver_present(why, sizeof why))
        return kvs__fail(KVS_ERR_UNSUPPORTED, "kv is CUDA memory, but %s", why);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaGetDeviceCount", device);
    if (device < 0 || device >= count)
        return kvs__fail(KVS_ERR_INVALID, "kv.device %d: this machine has %d CUDA device(s)", device,
                         count);
    kvs_dev *d = kvs__calloc(1, sizeof *d);
    if (!d)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory opening the GPU data path");
    d->device = device;
    d->p = *p;
    pthread_mutex_init(&d->arena_mu, NULL);
    pthread_mutex_init(&d->slot_mu, NULL);
    pthread_mutex_init(&d->cap_mu, NULL);
    void *prev = dev_enter(d);
    kvs_status st = KVS_OK;
    const char *what = "cudaFree(0) (context)";
    if ((e = cudaFree(NULL)) != cudaSuccess)
        goto cuda;

    uint64_t blk = p->block_bytes;
    d->unit = KVS_ALIGN_UP(KVS_MAX(kvs__config_canon(p->cfg, KVS_CFG_DEV_UNIT_KB), blk), blk);
    d->unit = KVS_MAX(d->unit, KVS_ALIGN_UP((p->slot_bytes + MAX_UNITS - 1) / MAX_UNITS, blk));
    d->unit = KVS_MIN(d->unit, p->slot_bytes); /* both multiples of blk */
    d->ring = (uint32_t)KVS_MIN(KVS_MIN((uint64_t)p->cfg->dev_ring, (uint64_t)MAX_UNITS),
                                p->slot_bytes / d->unit);
    d->host_registered = p->cfg->dev_pinned == KVS_DEV_PINNED_REGISTER;
    d->nslots = p->slots;
    d->stored_cap = stored_room(p->slot_bytes);
    const uint64_t slot_span = p->slot_bytes + d->stored_cap;
    uint64_t slots_bytes = (uint64_t)d->nslots * slot_span;
    /* The codec's gather buffer and encoder scratch, one of each (captures
     * run one at a time on one stream), after the slots. */
    uint64_t codec_bytes = 0;
    if (p->codec) {
        uint32_t seg = kvs__segment_bytes(p->chunk_padded);
        uint64_t scratch = KVS_ALIGN_UP(kvs_cuda_codec_scratch_bytes(p->chunk_padded, seg, p->elem),
                                        (uint64_t)KVS_FILE_ALIGN);
        codec_bytes = p->chunk_padded + scratch;
    }
    uint64_t want = kvs__config_canon(p->cfg, KVS_CFG_CUFILE_BUFFER_SIZE);
    /* Room for the slots and at least two captured chunks whatever the
     * configured size; say so when that makes the buffer larger. */
    uint64_t need = slots_bytes + codec_bytes +
                    2 * stage_bytes(p, p->codec, p->chunk_padded, p->chunk_padded);
    d->arena_bytes = KVS_ALIGN_UP(KVS_MAX(want, need), (uint64_t)2 << 20);
    if (d->arena_bytes > want)
        kvs__log(KVS_LOG_INFO,
                 "GPU staging: cufile_buffer_size %llu MiB is less than %u I/O slots and two "
                 "chunks need; using %llu MiB",
                 (unsigned long long)p->cfg->cufile_buffer_size, d->nslots,
                 (unsigned long long)(d->arena_bytes >> 20));
    what = "cudaMalloc of the staging buffer";
    if ((e = cudaMalloc((void **)&d->arena, d->arena_bytes)) != cudaSuccess)
        goto cuda;
    what = "cudaMalloc";
    if ((e = cudaMalloc((void **)&d->small_dev, (size_t)d->nslots * SMALL_BYTES)) != cudaSuccess)
        goto cuda;
    what = "pinning the host staging";
    if ((e = pinned_alloc(d, (void **)&d->slot_host, slots_bytes)) != cudaSuccess ||
        (e = cudaHostAlloc((void **)&d->small_host, (size_t)d->nslots * SMALL_BYTES,
                           cudaHostAllocPortable)) != cudaSuccess)
        goto cuda;
    if (p->auth) {
        d->dig_bytes = KVS_ALIGN_UP((p->slot_bytes / KVS_AUTH_SEGMENT_BYTES + 1) * 32, (uint64_t)256);
        what = "allocating the digest buffers";
        if ((e = cudaMalloc((void **)&d->dig_dev, d->nslots * d->dig_bytes)) != cudaSuccess ||
            (e = cudaHostAlloc((void **)&d->dig_host, d->nslots * d->dig_bytes,
                               cudaHostAllocPortable)) != cudaSuccess)
            goto cuda;
    }
    d->slots = kvs__calloc(d->nslots, sizeof *d->slots);
    d->free_ext = kvs__calloc(16, sizeof *d->free_ext);
    if (!d->slots || !d->free_ext) {
        st = kvs__fail(KVS_ERR_NOMEM, "out of memory opening the GPU data path");
        goto fail;
    }
    d->capfree = 16;
    d->nfree = 1;
    d->free_ext[0] = (extent){slots_bytes + codec_bytes,
                              d->arena_bytes - slots_bytes - codec_bytes};
    if (p->codec) {
        d->gbuf = d->arena + slots_bytes;
        d->scratch = d->gbuf + p->chunk_padded;
    }
    what = "creating streams and events";
    /* The slots' streams get the device's highest priority: a retrieve's
     * decode and scatter are what a forward waiting layer by layer stands
     * on, and a store's gather is what the caller of kvs_store waits for;
     * at default priority they queued behind the forward's GEMM blocks and
     * a layer-pipelined load of 4 GiB finished about 5 % later than alone
     * (docs/gpu.md). */
    int least_prio = 0, high_prio = 0;
    if (cudaDeviceGetStreamPriorityRange(&least_prio, &high_prio) != cudaSuccess)
        high_prio = 0;
    for (uint32_t i = 0; i < d->nslots; i++) {
        dev_slot *s = &d->slots[i];
        s->dev_off = (uint64_t)i * slot_span;
        s->dev = d->arena + s->dev_off;
        s->sdev_off = s->dev_off + p->slot_bytes;
        s->sdev = d->arena + s->sdev_off;
        s->host = d->slot_host + (uint64_t)i * p->slot_bytes;
        char *sh = d->small_host + (size_t)i * SMALL_BYTES;
        char *sd = d->small_dev + (size_t)i * SMALL_BYTES;
        s->host_sums = (uint64_t *)sh;
        s->host_flag = (uint32_t *)(sh + SMALL_FLAG);
        s->host_foff = (uint32_t *)(sh + SMALL_OFF);
        s->host_flen = (uint32_t *)(sh + SMALL_LEN);
        s->dev_sums = (uint64_t *)sd;
        s->dev_flag = (uint32_t *)(sd + SMALL_FLAG);
        s->dev_foff = (uint32_t *)(sd + SMALL_OFF);
        s->dev_flen = (uint32_t *)(sd + SMALL_LEN);
        if (p->auth) {
            s->host_digests = d->dig_host + (size_t)i * d->dig_bytes;
            s->dev_digests = d->dig_dev + (size_t)i * d->dig_bytes;
        }
        if ((e = cudaStreamCreateWithPriority(&s->stream, cudaStreamNonBlocking, high_prio)) !=
            cudaSuccess)
            goto cuda;
        const unsigned evf = cudaEventDisableTiming | cudaEventBlockingSync;
        for (int k = 0; k < MAX_UNITS; k++)
            if ((e = cudaEventCreateWithFlags(&s->ev[k], evf)) != cudaSuccess)
                goto cuda;
        if ((e = cudaEventCreateWithFlags(&s->done, evf)) != cudaSuccess)
            goto cuda;
        s->next = d->free_slots;
        d->free_slots = s;
    }
    if ((e = cudaStreamCreateWithPriority(&d->cap_stream, cudaStreamNonBlocking, high_prio)) !=
            cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&d->ctl, cudaStreamNonBlocking)) != cudaSuccess)
        goto cuda;

    st = choose_path(d);
    if (st)
        goto fail;
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess)
        snprintf(prop.name, sizeof prop.name, "?");
    kvs__log(KVS_LOG_INFO,
             "GPU data path on cuda:%d (%s): %s; %llu MiB VRAM staging, %u slots of %llu KiB "
             "(+%llu KiB for compressed reads), %llu KiB per transfer, checksums verified on "
             "the GPU; stores %s",
             device, prop.name, d->reason, (unsigned long long)(d->arena_bytes >> 20), d->nslots,
             (unsigned long long)(p->slot_bytes >> 10), (unsigned long long)(d->stored_cap >> 10),
             (unsigned long long)(d->unit >> 10),
             p->codec ? "compressed on the GPU where it pays (codec)" : "plain (codec off)");
    dev_leave(d, prev);
    *out = d;
    return KVS_OK;
cuda:
    st = cuda_fail(e, what, device);
fail:
    dev_leave(d, prev);
    dev_destroy(d);
    return st;
}

void kvs__dev_close(kvs_dev *d)
{
    dev_destroy(d);
}

int kvs__dev_device(const kvs_dev *d)
{
    return d->device;
}

bool kvs__dev_cufile_active(const kvs_dev *d)
{
    return d && d->cufile;
}

uint64_t kvs__dev_cufile_fallbacks(const kvs_dev *d)
{
    return d ? atomic_load(&((kvs_dev *)d)->fallbacks) : 0;
}

/* ---- ops -------------------------------------------------------------------- */

kvs_status kvs__dev_op_begin(kvs_dev *d, const kvs_kvmap *m, kvs_dev_op **out)
{
    kvs_dev_op *o = kvs__calloc(1, sizeof *o);
    uint64_t *addr = kvs__malloc((m->num_layers + 6) * sizeof *addr);
    if (!o || !addr) {
        kvs__free(o);
        kvs__free(addr);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting a GPU operation");
    }
    o->d = d;
    const kvs_kv *kv = &m->kv;
    for (uint32_t l = 0; l < m->num_layers; l++)
        addr[l] = (uint64_t)(uintptr_t)m->layers[l];
    addr[m->num_layers] = m->row_bytes;
    addr[m->num_layers + 1] = kv->slot_stride;
    addr[m->num_layers + 2] = kv->block_stride;
    addr[m->num_layers + 3] = kv->plane_stride;
    /* Strided heads: every access stays inside one head row, so the head
     * row and its stride bound the width too; contiguous rows keep the
     * width of the whole row. */
    addr[m->num_layers + 4] = m->head_bytes;
    addr[m->num_layers + 5] = kv->head_stride;
    uint32_t vec = kvs_cuda_vec_bytes(addr, m->num_layers + (m->rows_contiguous ? 4 : 6));
    /* Host memory flagged as CUDA would make the kernels fault and poison the
     * caller's CUDA context: check every layer pointer first. */
    void *prev0 = dev_enter(d);
    for (uint32_t l = 0; l < m->num_layers; l++) {
        struct cudaPointerAttributes a;
        cudaError_t pe = cudaPointerGetAttributes(&a, m->layers[l]);
        if (pe != cudaSuccess || (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged) ||
            a.device != d->device) {
            cudaGetLastError();
            dev_leave(d, prev0);
            kvs__free(o);
            kvs__free(addr);
            return kvs__fail(KVS_ERR_INVALID, "kv.layers[%u] (%p) is not CUDA memory of cuda:%d",
                             l, m->layers[l], d->device);
        }
    }
    dev_leave(d, prev0);
    size_t layer_bytes = KVS_ALIGN_UP(m->num_layers * sizeof(uint64_t), 256);
    size_t slot_bytes = m->slots ? m->num_tokens * sizeof(int64_t) : 0;
    void *prev = dev_enter(d);
    kvs_status st = KVS_OK;
    const char *what = "cudaMallocAsync of the op's tables";
    cudaError_t e = cudaMallocAsync(&o->tables, layer_bytes + slot_bytes, d->ctl);
    o->tables_async = e == cudaSuccess;
    if (e == cudaErrorNotSupported)
        e = cudaMalloc(&o->tables, layer_bytes + slot_bytes);
    if (e != cudaSuccess)
        goto cuda;
    what = "copying the op's tables";
    if ((e = cudaMemcpyAsync(o->tables, addr, m->num_layers * sizeof(uint64_t),
                             cudaMemcpyHostToDevice, d->ctl)) != cudaSuccess)
        goto cuda;
    if (slot_bytes && (e = cudaMemcpyAsync((char *)o->tables + layer_bytes, m->slots, slot_bytes,
                                           cudaMemcpyHostToDevice, d->ctl)) != cudaSuccess)
        goto cuda;
    what = "recording an event on kv.cuda_stream";
    if ((e = cudaEventCreateWithFlags(&o->start, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventRecord(o->start, (cudaStream_t)kv->cuda_stream)) != cudaSuccess)
        goto cuda;
    what = "cudaStreamSynchronize";
    if ((e = cudaStreamSynchronize(d->ctl)) != cudaSuccess)
        goto cuda;
    o->proto = (kvs_cuda_chunk){
        .layers = o->tables,
        .slots = slot_bytes ? (const int64_t *)((char *)o->tables + layer_bytes) : NULL,
        .block_size = kv->block_size,
        .slot_stride = kv->slot_stride,
        .block_stride = kv->block_stride,
        .plane_stride = kv->plane_stride,
        .num_layers = m->num_layers,
        .num_planes = m->num_planes,
        .row_bytes = (uint32_t)m->row_bytes,
        .vec_bytes = vec,
        .head_bytes = (uint32_t)m->head_bytes,
        .head_stride = m->rows_contiguous ? m->head_bytes : kv->head_stride,
    };
    dev_leave(d, prev);
    kvs__free(addr);
    *out = o;
    return KVS_OK;
cuda:
    st = cuda_fail(e, what, d->device);
    if (o->tables)
        o->tables_async ? cudaFreeAsync(o->tables, d->ctl) : cudaFree(o->tables);
    if (o->start)
        cudaEventDestroy(o->start);
    dev_leave(d, prev);
    kvs__free(addr);
    kvs__free(o);
    return st;
}

void kvs__dev_op_end(kvs_dev_op *o)
{
    if (!o)
        return;
    kvs_dev *d = o->d;
    void *prev = dev_enter(d);
    if (o->tables_async)
        cudaFreeAsync(o->tables, d->ctl);
    else
        cudaFree(o->tables);
    cudaEventDestroy(o->start);
    dev_leave(d, prev);
    kvs__free(o);
}

static kvs_cuda_chunk chunk_of(const kvs_dev_op *o, const kvs_dev_chunk *c)
{
    kvs_cuda_chunk ch = o->proto;
    ch.t0 = c->t0;
    ch.tokens = c->tokens;
    return ch;
}

/* ---- files ---------------------------------------------------------------- */

/* cuFile refuses descriptors opened write-only or non-blocking (5019,
 * CU_FILE_INVALID_FILE_OPEN_FLAG), which is how the store opens chunk files
 * (O_NONBLOCK so a planted FIFO cannot hang a read).  The same file is then
 * opened again through /proc/self/fd with flags cuFile takes. */
static int reopen_for_cufile(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int acc = fl & O_ACCMODE;
    int flags = (acc == O_RDONLY ? O_RDONLY : O_RDWR) | (fl & O_DIRECT) | O_CLOEXEC;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return kvs__io()->open(path, flags, 0);
}

kvs_dev_file *kvs__dev_file_open(kvs_dev *d, int fd)
{
    if (!d->cufile)
        return NULL;
    void *h = NULL;
    int fd2 = -1;
    int st = kvs__cufile_handle_register(fd, &h);
    if (st == 5019) {
        fd2 = reopen_for_cufile(fd);
        st = fd2 < 0 ? errno : kvs__cufile_handle_register(fd2, &h);
    }
    kvs_dev_file *f = st ? NULL : kvs__malloc(sizeof *f);
    if (!f) {
        if (st)
            note_fallback(d, st, "cuFileHandleRegister");
        kvs__cufile_handle_deregister(st ? NULL : h);
        if (fd2 >= 0)
            kvs__io()->close(fd2);
        return NULL;
    }
    f->handle = h;
    f->fd = fd2;
    return f;
}

void kvs__dev_file_close(kvs_dev *d, kvs_dev_file *f)
{
    (void)d;
    if (!f)
        return;
    kvs__cufile_handle_deregister(f->handle);
    if (f->fd >= 0)
        kvs__io()->close(f->fd);
    kvs__free(f);
}

/* ---- retrieve --------------------------------------------------------------- */

/* Queues on the slot's stream the check of a plain piece: the expected sums
 * go up and a kernel counts the segments of the slot's [0, len) that do not
 * match them into the slot's flag. */
static cudaError_t queue_verify(dev_slot *s, const kvs_dev_chunk *c, const uint64_t *sums,
                                uint64_t off, uint64_t len)
{
    const uint32_t seg = c->seg_bytes;
    const uint32_t nseg = (uint32_t)((len + seg - 1) / seg);
    memcpy(s->host_sums, sums + off / seg, nseg * sizeof(uint64_t));
    cudaError_t e = cudaMemcpyAsync(s->dev_sums, s->host_sums, nseg * sizeof(uint64_t),
                                    cudaMemcpyHostToDevice, s->stream);
    if (e == cudaSuccess)
        e = cudaMemsetAsync(s->dev_flag, 0, sizeof(uint32_t), s->stream);
    if (e == cudaSuccess)
        e = (cudaError_t)kvs_cuda_segment_sums(s->dev, len, seg, NULL, s->dev_sums, s->dev_flag,
                                               s->stream);
    return e;
}

/* Queues the decode of a compressed piece: nf frames from frame i0, their
 * stored bytes in the slot's stored area at offsets relative to wlo, into
 * the slot's logical area (data_len bytes); frames that fail their sum or
 * any rule of the format count into the flag. */
static cudaError_t queue_decode(kvs_dev *d, dev_slot *s, const kvs_dev_chunk *c,
                                const uint64_t *sums, uint32_t i0, uint32_t nf, uint64_t wlo,
                                uint64_t data_len)
{
    memcpy(s->host_sums, sums + i0, nf * sizeof(uint64_t));
    for (uint32_t k = 0; k < nf; k++) {
        s->host_foff[k] = (uint32_t)(c->frames[i0 + k].off - wlo);
        s->host_flen[k] = c->frames[i0 + k].len;
    }
    /* sums, offsets and lengths are one range of the small area (the flag
     * inside it is cleared after) */
    cudaError_t e = cudaMemcpyAsync(s->dev_sums, s->host_sums, SMALL_BYTES,
                                    cudaMemcpyHostToDevice, s->stream);
    if (e == cudaSuccess)
        e = cudaMemsetAsync(s->dev_flag, 0, sizeof(uint32_t), s->stream);
    if (e == cudaSuccess)
        e = (cudaError_t)kvs_cuda_codec_decode(s->sdev, s->dev_foff, s->dev_flen, nf,
                                               c->seg_bytes, data_len, d->p.elem, s->dev_sums,
                                               s->dev, s->dev_flag, s->stream);
    return e;
}

/* After queue_verify or queue_decode: on the device, only if the flag is
 * still 0, scatters the slot's payload part into the caller's memory
 * (ordered after the op's start on the caller's stream); reads the verdict
 * back and waits. */
static kvs_dev_rc scatter_gated(kvs_dev_op *o, dev_slot *s, const kvs_dev_chunk *c, uint64_t off,
                                uint64_t len, uint8_t *digests_out, const kvs_dev_hooks *h)
{
    kvs_dev *d = o->d;
    cudaError_t e = cudaStreamWaitEvent(s->stream, o->start, 0);
    const char *what = "queuing the verification";
    if (e != cudaSuccess)
        return cuda_rc(d, e, what);
    /* auth: the pieces' SHA-256 from the same staging bytes, back to the
     * host with the verdict (the MAC itself is checked there, per chunk) */
    const uint64_t ndig = (len + KVS_AUTH_SEGMENT_BYTES - 1) / KVS_AUTH_SEGMENT_BYTES;
    if (digests_out) {
        if (!s->dev_digests || ndig * 32 > d->dig_bytes)
            return KVS_DEV_NOMEM;
        what = "the SHA-256 kernel";
        if ((e = (cudaError_t)kvs_cuda_sha256_pieces(s->dev, len, KVS_AUTH_SEGMENT_BYTES,
                                                     s->dev_digests, s->stream)) != cudaSuccess ||
            (e = cudaMemcpyAsync(s->host_digests, s->dev_digests, ndig * 32,
                                 cudaMemcpyDeviceToHost, s->stream)) != cudaSuccess)
            return cuda_rc(d, e, what);
    }
    uint64_t data_len = off < c->payload ? KVS_MIN(len, c->payload - off) : 0;
    if (!h->copy_begin(h->ctx))
        return KVS_DEV_STOPPED;
    kvs_cuda_chunk ch = chunk_of(o, c);
    what = "the scatter kernel";
    e = data_len ? (cudaError_t)kvs_cuda_scatter(&ch, off, data_len, s->dev, s->dev_flag, s->stream)
                 : cudaSuccess;
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(s->host_flag, s->dev_flag, sizeof(uint32_t), cudaMemcpyDeviceToHost,
                            s->stream);
    if (e == cudaSuccess) {
        what = "waiting for the scatter";
        e = slot_wait(s);
    }
    h->copy_end(h->ctx);
    if (e != cudaSuccess)
        return cuda_rc(d, e, what);
    if (*s->host_flag)
        return KVS_DEV_CHECKSUM;
    if (digests_out)
        memcpy(digests_out, s->host_digests, ndig * 32);
    return KVS_DEV_OK;
}

/* Reads file bytes [foff, foff + len) into VRAM at arena offset dst_off:
 * through cuFile when f is given (falling back for good on a failure), else
 * units (dev_unit_kb) pread into the slot's pinned ring, each copied up on the
 * slot's stream as soon as it is read. */
static kvs_dev_rc read_range(kvs_dev *d, dev_slot *s, int fd, kvs_dev_file *f, uint64_t foff,
                             uint64_t dst_off, uint64_t len, const kvs_dev_hooks *h,
                             uint64_t *t_pread, uint64_t *t_ring, int *err_out)
{
    bool use_cufile = f != NULL;
    /* Host side: a ring of `ring` units, reused as soon as its copy to VRAM
     * is done, so what the CPU writes is still in cache when the copy engine
     * reads it; VRAM side: the whole range. */
    const uint32_t ring = d->ring;
    uint64_t k = 0, t0;
    for (uint64_t u = 0; u < len; u += d->unit) {
        if (h->stopped(h->ctx))
            return KVS_DEV_STOPPED;
        uint64_t n = KVS_MIN(d->unit, len - u);
        off_t fo = (off_t)(foff + u);
        if (use_cufile) {
            ssize_t r = kvs__cufile_read(f->handle, d->arena, n, fo, (off_t)(dst_off + u));
            if (r == (ssize_t)n)
                continue;
            note_fallback(d, r < 0 ? (int)-r : ENODATA, "cuFileRead");
            use_cufile = false;
        }
        char *hbuf = s->host + (k % ring) * d->unit;
        t0 = kvs__now_ns();
        if (k >= ring) {
            cudaError_t e = cudaEventSynchronize(s->ev[k % ring]);
            if (e != cudaSuccess)
                return cuda_rc(d, e, "waiting for a copy to the staging buffer");
        }
        uint64_t t1 = kvs__now_ns();
        *t_ring += t1 - t0;
        if (kvs__pread_full(fd, hbuf, n, fo) != 0) {
            *err_out = errno;
            return KVS_DEV_IO;
        }
        *t_pread += kvs__now_ns() - t1;
        cudaError_t e = cudaMemcpyAsync(d->arena + dst_off + u, hbuf, n, cudaMemcpyHostToDevice,
                                        s->stream);
        if (e == cudaSuccess)
            e = cudaEventRecord(s->ev[k % ring], s->stream);
        if (e != cudaSuccess)
            return cuda_rc(d, e, "cudaMemcpyAsync to the staging buffer");
        k++;
    }
    return KVS_DEV_OK;
}

/* The frames of a compressed piece and the window of the file that holds
 * them: frames [*i0, *i0 + *nf), stored bytes [*wlo, *wlo + *wlen) of the
 * frame area (4096-aligned).  KVS_DEV_CHECKSUM when the table breaks the
 * format's rules for these frames (the engine checked the table's sum, so
 * only a writer's bug gets here), KVS_DEV_NOMEM when they do not fit the
 * slot. */
static kvs_dev_rc coded_window(const kvs_dev *d, const kvs_dev_chunk *c, uint64_t off,
                               uint64_t data_len, uint32_t *i0, uint32_t *nf, uint64_t *wlo,
                               uint64_t *wlen)
{
    const uint32_t seg = c->seg_bytes;
    *i0 = (uint32_t)(off / seg);
    *nf = (uint32_t)((data_len + seg - 1) / seg);
    if (*nf == 0 || *nf > SUMS_MAX)
        return KVS_DEV_NOMEM;
    uint64_t end = 0;
    for (uint32_t k = 0; k < *nf; k++) {
        uint64_t fo = c->frames[*i0 + k].off, fl = c->frames[*i0 + k].len;
        if ((k && fo < end) || fo % KVS_CODEC_FRAME_ALIGN || fl < KVS_CODEC_MIN_FRAME ||
            fl % KVS_CODEC_FRAME_ALIGN || fo + fl > c->stored)
            return KVS_DEV_CHECKSUM;
        end = fo + fl;
    }
    uint64_t lo = c->frames[*i0].off;
    *wlo = lo / KVS_FILE_ALIGN * KVS_FILE_ALIGN;
    *wlen = KVS_ALIGN_UP(end, (uint64_t)KVS_FILE_ALIGN) - *wlo;
    return *wlen > d->stored_cap ? KVS_DEV_NOMEM : KVS_DEV_OK;
}

kvs_dev_rc kvs__dev_read_piece(kvs_dev_op *o, const kvs_dev_chunk *c, int fd, kvs_dev_file *f,
                               const uint64_t *sums, uint64_t off, uint64_t len,
                               uint8_t *digests_out, const kvs_dev_hooks *h, int *err_out)
{
    kvs_dev *d = o->d;
    if (len > d->p.slot_bytes || off % c->seg_bytes || off % KVS_AUTH_SEGMENT_BYTES)
        return KVS_DEV_NOMEM; /* a piece the slots were not sized for */
    const uint64_t data_len = off < c->payload ? KVS_MIN(len, c->payload - off) : 0;
    uint32_t i0 = 0, nf = 0;
    uint64_t wlo = 0, wlen = 0;
    if (c->frames) {
        /* authenticated chunks are never compressed; a reader with a key
         * refuses version 2 before any piece */
        if (digests_out || data_len == 0)
            return KVS_DEV_CHECKSUM;
        kvs_dev_rc wr = coded_window(d, c, off, data_len, &i0, &nf, &wlo, &wlen);
        if (wr != KVS_DEV_OK)
            return wr;
    }
    dev_slot *s = slot_get(d);
    if (!s)
        return KVS_DEV_NOMEM;
    cudaSetDevice(d->device);
    uint64_t t_pread = 0, t_ring = 0;
    kvs_dev_rc rc;
    if (!c->frames)
        rc = read_range(d, s, fd, f, KVS_PAYLOAD_OFFSET + off, s->dev_off, len, h, &t_pread,
                        &t_ring, err_out);
    else
        rc = read_range(d, s, fd, f, KVS_CODEC_FRAMES_OFFSET + wlo, s->sdev_off, wlen, h,
                        &t_pread, &t_ring, err_out);
    uint64_t t0 = kvs__now_ns();
    if (rc == KVS_DEV_OK) {
        cudaError_t e = c->frames ? queue_decode(d, s, c, sums, i0, nf, wlo, data_len)
                                  : queue_verify(s, c, sums, off, len);
        rc = e != cudaSuccess ? cuda_rc(d, e, c->frames ? "queuing the decode"
                                                         : "queuing the verification")
                              : scatter_gated(o, s, c, off, len, digests_out, h);
    }
    atomic_fetch_add(&d->n_read, 1);
    atomic_fetch_add(&d->ns_pread, t_pread);
    atomic_fetch_add(&d->ns_ring, t_ring);
    atomic_fetch_add(&d->ns_tail, kvs__now_ns() - t0);
    /* the slot's copies must be over before another piece reuses it */
    cudaError_t e = slot_wait(s);
    if (e != cudaSuccess && rc == KVS_DEV_OK)
        rc = cuda_rc(d, e, "waiting for the staging copies");
    slot_put(d, s);
    return rc;
}

kvs_dev_rc kvs__dev_put_host(kvs_dev_op *o, const kvs_dev_chunk *c, const void *payload,
                             const kvs_dev_hooks *h)
{
    kvs_dev *d = o->d;
    dev_slot *s = slot_get(d);
    if (!s)
        return KVS_DEV_NOMEM;
    void *prev = dev_enter(d);
    kvs_dev_rc rc = KVS_DEV_OK;
    kvs_cuda_chunk ch = chunk_of(o, c);
    for (uint64_t u = 0; u < c->payload && rc == KVS_DEV_OK; u += d->p.slot_bytes) {
        uint64_t n = KVS_MIN(d->p.slot_bytes, c->payload - u);
        memcpy(s->host, (const char *)payload + u, n);
        cudaError_t e = cudaMemcpyAsync(s->dev, s->host, n, cudaMemcpyHostToDevice, s->stream);
        if (e == cudaSuccess)
            e = cudaStreamWaitEvent(s->stream, o->start, 0);
        if (e != cudaSuccess) {
            rc = cuda_rc(d, e, "copying a CPU tier hit");
            break;
        }
        if (!h->copy_begin(h->ctx)) {
            rc = KVS_DEV_STOPPED;
            break;
        }
        e = (cudaError_t)kvs_cuda_scatter(&ch, u, n, s->dev, NULL, s->stream);
        if (e == cudaSuccess)
            e = slot_wait(s);
        h->copy_end(h->ctx);
        if (e != cudaSuccess)
            rc = cuda_rc(d, e, "scattering a CPU tier hit");
    }
    slot_wait(s);
    slot_put(d, s);
    dev_leave(d, prev);
    return rc;
}

/* ---- store ------------------------------------------------------------------- */

kvs_dev_rc kvs__dev_capture_begin(kvs_dev_op *o, uint32_t max_chunks)
{
    kvs_dev *d = o->d;
    pthread_mutex_lock(&d->cap_mu);
    void *prev = dev_enter(d);
    kvs_dev_rc rc = KVS_DEV_OK;
    if (max_chunks > d->cap_max) {
        cudaFreeHost(d->cap_meta);
        cudaFree(d->cap_meta_dev);
        d->cap_meta = d->cap_meta_dev = NULL;
        kvs__free(d->cap_items);
        d->cap_items = kvs__malloc(max_chunks * sizeof *d->cap_items);
        size_t bytes = (size_t)max_chunks * META_BYTES;
        cudaError_t e = cudaHostAlloc((void **)&d->cap_meta, bytes, cudaHostAllocPortable);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&d->cap_meta_dev, bytes);
        if (e != cudaSuccess || !d->cap_items) {
            cudaGetLastError();
            cudaFreeHost(d->cap_meta);
            d->cap_meta = d->cap_meta_dev = NULL;
            d->cap_max = 0;
            rc = KVS_DEV_NOMEM;
        } else {
            d->cap_max = max_chunks;
        }
    }
    d->cap_n = 0;
    d->cap_failed = false;
    if (rc == KVS_DEV_OK) {
        cudaError_t e = cudaStreamWaitEvent(d->cap_stream, o->start, 0);
        if (e != cudaSuccess)
            rc = cuda_rc(d, e, "cudaStreamWaitEvent");
    }
    dev_leave(d, prev);
    if (rc != KVS_DEV_OK)
        pthread_mutex_unlock(&d->cap_mu);
    return rc;
}

/* The codec steps of a capture, on the capture stream after the gather of
 * the chunk into L (padded, sums computed): encode L into the stage's
 * frame area (zeroed first: the file's padding after the frames) and,
 * where the stage keeps no logical copy, the plain payload over the frames
 * when they are not small enough (decided on the device, so nothing waits
 * here). */
static cudaError_t capture_encode(kvs_dev *d, kvs_dev_stage *s, const kvs_dev_chunk *c,
                                  const char *L, char *meta, uint64_t enc_len)
{
    uint32_t *off = (uint32_t *)(meta + META_OFF), *len = (uint32_t *)(meta + META_LEN);
    uint64_t *stored = (uint64_t *)(meta + META_STORED);
    cudaError_t e = cudaMemsetAsync(s->enc, 0, enc_len, d->cap_stream);
    if (e == cudaSuccess)
        e = (cudaError_t)kvs_cuda_codec_encode(L, c->payload, c->seg_bytes, d->p.elem, s->enc, off,
                                               len, stored, (uint64_t *)(meta + META_FSUMS),
                                               d->scratch, d->cap_stream);
    if (e == cudaSuccess && L != s->dev)
        e = (cudaError_t)kvs_cuda_copy_unless_within(s->enc, L, c->padded, stored,
                                                     coded_limit(c->padded), d->cap_stream);
    return e;
}

kvs_dev_rc kvs__dev_capture(kvs_dev_op *o, const kvs_dev_chunk *c, uint64_t *sums_out,
                            kvs_dev_stage **stage_out)
{
    kvs_dev *d = o->d;
    if (d->cap_n >= d->cap_max)
        return KVS_DEV_NOMEM;
    uint32_t nseg = kvs__segment_count(c->payload, c->seg_bytes);
    const bool codec = d->p.codec && c->padded <= d->p.chunk_padded && nseg <= SUMS_MAX &&
                       coded_limit(c->padded) > 0;
    uint64_t bytes = stage_bytes(&d->p, codec, c->payload, c->padded);
    uint64_t off;
    if (!arena_alloc(d, bytes, &off))
        return KVS_DEV_NOMEM;
    kvs_dev_stage *s = kvs__calloc(1, sizeof *s);
    if (!s) {
        arena_free(d, off, bytes);
        return KVS_DEV_NOMEM;
    }
    s->off = off;
    s->bytes = bytes;
    s->padded = c->padded;
    char *base = d->arena + off;
    uint64_t ndig = !codec && d->p.auth ? kvs__auth_segment_count(c->payload) : 0;
    /* where the chunk is gathered: its own logical area, or with the codec
     * and no CPU tier the shared gather buffer (the stage then holds only
     * what is written) */
    char *L;
    if (!codec) {
        s->dev = L = base;
        s->dev_digests = ndig ? (uint8_t *)base + c->padded : NULL;
    } else if (d->p.cpu_tier) {
        s->dev = L = base;
        s->enc = base + c->padded;
    } else {
        s->enc = base;
        L = d->gbuf;
    }
    char *meta = d->cap_meta_dev + (size_t)d->cap_n * META_BYTES;
    void *prev = dev_enter(d);
    kvs_cuda_chunk ch = chunk_of(o, c);
    const char *what = "the gather kernel";
    cudaError_t e = (cudaError_t)kvs_cuda_gather(&ch, 0, c->payload, L, d->cap_stream);
    if (e == cudaSuccess && c->padded > c->payload)
        e = cudaMemsetAsync(L + c->payload, 0, c->padded - c->payload, d->cap_stream);
    if (e == cudaSuccess)
        e = (cudaError_t)kvs_cuda_segment_sums(L, c->padded, c->seg_bytes,
                                               (uint64_t *)(meta + META_PLAIN), NULL, NULL,
                                               d->cap_stream);
    if (e == cudaSuccess && ndig)
        e = (cudaError_t)kvs_cuda_sha256_pieces(s->dev, c->padded, KVS_AUTH_SEGMENT_BYTES,
                                                s->dev_digests, d->cap_stream);
    bool coded = codec;
    if (e == cudaSuccess && codec) {
        what = "the encoder";
        e = capture_encode(d, s, c, L, meta, bytes - (uint64_t)(s->enc - base));
        if (e != cudaSuccess) {
            /* a launch refused (an error of the kernel itself would show at
             * the synchronization and fail the batch): keep the chunk
             * plain, copied into the stage where the stage has no logical
             * area of its own (the copy is ordered after whatever ran) */
            kvs__log_once(&d->logged_codec, KVS_LOG_WARN,
                          "the GPU encoder failed on cuda:%d (%s, error %d); chunks are "
                          "stored uncompressed",
                          d->device, cudaGetErrorString(e), (int)e);
            cudaGetLastError();
            coded = false;
            e = L == s->dev ? cudaSuccess
                            : cudaMemcpyAsync(s->enc, L, c->padded, cudaMemcpyDeviceToDevice,
                                              d->cap_stream);
            what = "copying a chunk to staging";
        }
    }
    dev_leave(d, prev);
    if (e != cudaSuccess) {
        d->cap_failed = true;
        kvs__dev_stage_free(d, s);
        return cuda_rc(d, e, what);
    }
    d->cap_items[d->cap_n++] = (cap_item){sums_out, s, nseg, coded};
    if (codec && !coded && !s->dev)
        s->dev = s->enc;
    *stage_out = s;
    return KVS_DEV_OK;
}

/* Whether the encoder's offsets and lengths of a chunk obey the format
 * (CODEC.md) and fit its stage: checked before a table built from them is
 * trusted, so an encoder's bug is a failed store, never a bad file. */
static bool frames_sane(const uint32_t *off, const uint32_t *len, uint32_t n, uint64_t stored,
                        uint64_t room)
{
    uint64_t end = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (off[i] != end || len[i] < KVS_CODEC_MIN_FRAME || len[i] % KVS_CODEC_FRAME_ALIGN)
            return false;
        end += len[i];
    }
    return end == stored && stored <= room;
}

/* A captured chunk's verdict, once its meta data is on the host. */
static void capture_settle(kvs_dev *d, const cap_item *it, const char *meta)
{
    kvs_dev_stage *s = it->stage;
    const uint64_t *plain = (const uint64_t *)(meta + META_PLAIN);
    if (!it->codec) {
        memcpy(it->dst, plain, it->nseg * sizeof(uint64_t));
        return;
    }
    const uint32_t *off = (const uint32_t *)(meta + META_OFF);
    const uint32_t *len = (const uint32_t *)(meta + META_LEN);
    uint64_t stored;
    memcpy(&stored, meta + META_STORED, sizeof stored);
    const bool has_logical = s->dev != NULL; /* a CPU tier's copy */
    const uint64_t room = s->bytes - (uint64_t)(s->enc - (d->arena + s->off));
    if (stored > coded_limit(s->padded)) {
        /* not small enough: plain, from the logical copy or from what the
         * device copied over the frames */
        memcpy(it->dst, plain, it->nseg * sizeof(uint64_t));
        if (!has_logical)
            s->dev = s->enc;
        return;
    }
    if (!frames_sane(off, len, it->nseg, stored, room)) {
        kvs__log_once(&d->logged_codec, KVS_LOG_ERROR,
                      "the GPU encoder on cuda:%d gave a frame table that breaks the format "
                      "(frame area %llu bytes); the chunk is not stored",
                      d->device, (unsigned long long)stored);
        s->broken = true;
        return;
    }
    s->coded = true;
    s->stored = stored;
    s->nframes = it->nseg;
    memcpy(s->foff, off, it->nseg * sizeof(uint32_t));
    memcpy(s->flen, len, it->nseg * sizeof(uint32_t));
    memcpy(it->dst, meta + META_FSUMS, it->nseg * sizeof(uint64_t));
}

kvs_dev_rc kvs__dev_capture_end(kvs_dev_op *o)
{
    kvs_dev *d = o->d;
    void *prev = dev_enter(d);
    /* one copy of the whole batch's sums (and frame tables) to the host */
    cudaError_t e = d->cap_n ? cudaMemcpyAsync(d->cap_meta, d->cap_meta_dev,
                                               (size_t)d->cap_n * META_BYTES,
                                               cudaMemcpyDeviceToHost, d->cap_stream)
                             : cudaSuccess;
    cudaError_t e2 = cudaStreamSynchronize(d->cap_stream);
    if (e == cudaSuccess)
        e = e2;
    dev_leave(d, prev);
    kvs_dev_rc rc = KVS_DEV_OK;
    if (e != cudaSuccess)
        rc = cuda_rc(d, e, "cudaStreamSynchronize after the gathers");
    else if (d->cap_failed)
        rc = KVS_DEV_CUDA;
    for (uint32_t i = 0; rc == KVS_DEV_OK && i < d->cap_n; i++)
        capture_settle(d, &d->cap_items[i], d->cap_meta + (size_t)i * META_BYTES);
    pthread_mutex_unlock(&d->cap_mu);
    return rc;
}

void kvs__dev_stage_coded(const kvs_dev_stage *s, kvs_dev_coded *out)
{
    *out = (kvs_dev_coded){0};
    if (s && s->coded) {
        out->codec = KVS_CODEC_EXP_HUFF;
        out->stored_bytes = s->stored;
        out->nframes = s->nframes;
        out->off = s->foff;
        out->len = s->flen;
    }
}

/* Device bytes [src, src + len) of the arena to the file at foff
 * and/or to cpu_copy (fd < 0: no file): through cuFile when f is given and
 * there is no CPU copy, else units (dev_unit_kb) through the slot's pinned ring,
 * each written as soon as its copy is over (copies run up to a ring ahead,
 * so any length fits). */
static kvs_dev_rc write_range(kvs_dev *d, const char *src, uint64_t len, int fd, kvs_dev_file *f,
                              uint64_t foff, void *cpu_copy, uint64_t data_len, int *err_out)
{
    const uint64_t src_off = (uint64_t)(src - d->arena); /* cuFile's buffer offset */
    uint64_t u0 = 0;
    if (f && !cpu_copy && fd >= 0) {
        for (; u0 < len; u0 += d->unit) {
            uint64_t n = KVS_MIN(d->unit, len - u0);
            ssize_t r = kvs__cufile_write(f->handle, d->arena, n, (off_t)(foff + u0),
                                          (off_t)(src_off + u0));
            if (r != (ssize_t)n) {
                note_fallback(d, r < 0 ? (int)-r : EIO, "cuFileWrite");
                break;
            }
        }
        if (u0 >= len)
            return KVS_DEV_OK;
    }
    dev_slot *s = slot_get(d);
    if (!s)
        return KVS_DEV_NOMEM;
    const uint64_t unit = d->unit;
    const uint32_t ring = d->ring;
    uint64_t t_d2h = 0, t_pwrite = 0;
    const uint64_t nunits = (len - u0 + unit - 1) / unit;
    kvs_dev_rc rc = KVS_DEV_OK;
    uint64_t queued = 0;
    for (uint64_t k = 0; k < nunits && rc == KVS_DEV_OK; k++) {
        while (queued < nunits && queued < k + ring) {
            uint64_t u = u0 + queued * unit, n = KVS_MIN(unit, len - u);
            char *h = s->host + (queued % ring) * unit;
            cudaError_t e = cudaMemcpyAsync(h, src + u, n, cudaMemcpyDeviceToHost, s->stream);
            if (e == cudaSuccess)
                e = cudaEventRecord(s->ev[queued % ring], s->stream);
            if (e != cudaSuccess) {
                rc = cuda_rc(d, e, "copying a captured chunk to pinned memory");
                break;
            }
            queued++;
        }
        if (rc != KVS_DEV_OK)
            break;
        uint64_t u = u0 + k * unit, n = KVS_MIN(unit, len - u);
        char *h = s->host + (k % ring) * unit;
        uint64_t t0 = kvs__now_ns();
        cudaError_t e = cudaEventSynchronize(s->ev[k % ring]);
        if (e != cudaSuccess) {
            rc = cuda_rc(d, e, "waiting for a copy to pinned memory");
            break;
        }
        uint64_t t1 = kvs__now_ns();
        t_d2h += t1 - t0;
        if (cpu_copy && u < data_len)
            memcpy((char *)cpu_copy + u, h, KVS_MIN(n, data_len - u));
        if (fd >= 0 && kvs__pwrite_full(fd, h, n, (off_t)(foff + u)) != 0) {
            *err_out = errno;
            rc = KVS_DEV_IO;
        }
        t_pwrite += kvs__now_ns() - t1;
    }
    atomic_fetch_add(&d->n_write, 1);
    atomic_fetch_add(&d->ns_d2h, t_d2h);
    atomic_fetch_add(&d->ns_pwrite, t_pwrite);
    slot_wait(s);
    slot_put(d, s);
    return rc;
}

kvs_dev_rc kvs__dev_write_piece(kvs_dev *d, kvs_dev_stage *st, int fd, kvs_dev_file *f,
                                uint64_t off, uint64_t len, uint64_t data_len, void *cpu_copy,
                                int *err_out)
{
    cudaSetDevice(d->device);
    if (st->broken || (!st->dev && !st->coded))
        return KVS_DEV_CUDA;
    if (!st->coded)
        return write_range(d, st->dev + off, len, fd, f, KVS_PAYLOAD_OFFSET + off, cpu_copy,
                           data_len, err_out);
    /* compressed: the CPU tier takes this piece's logical bytes (the stage
     * keeps them when there is a tier); the piece at 0 writes every frame,
     * padded with zeros to the file alignment (the engine writes the table
     * block and the header) */
    kvs_dev_rc rc = KVS_DEV_OK;
    if (cpu_copy && data_len) {
        if (!st->dev)
            return KVS_DEV_CUDA;
        rc = write_range(d, st->dev + off, data_len, -1, NULL, 0, (char *)cpu_copy, data_len,
                         err_out);
    }
    if (rc == KVS_DEV_OK && off == 0)
        rc = write_range(d, st->enc, KVS_ALIGN_UP(st->stored, (uint64_t)KVS_FILE_ALIGN), fd, f,
                         KVS_FRAMES_OFFSET, NULL, 0, err_out);
    return rc;
}

kvs_dev_rc kvs__dev_stage_digests(kvs_dev *d, const kvs_dev_stage *s, uint8_t *out, uint32_t n)
{
    if (!s->dev_digests)
        return KVS_DEV_CUDA;
    void *prev = dev_enter(d);
    /* the capture stream computed them and was synchronized at capture_end */
    cudaError_t e = cudaMemcpy(out, s->dev_digests, (size_t)n * 32, cudaMemcpyDeviceToHost);
    dev_leave(d, prev);
    return e == cudaSuccess ? KVS_DEV_OK : cuda_rc(d, e, "copying the chunk digests");
}

void kvs__dev_stage_free(kvs_dev *d, kvs_dev_stage *s)
{
    if (!s)
        return;
    arena_free(d, s->off, s->bytes);
    kvs__free(s);
}

/* ---- doctor ----------------------------------------------------------------------- */

void kvs__dev_doctor(const kvs_config *cfg, kvs_buf *b)
{
    char why[320];
    if (!driver_present(why, sizeof why)) {
        kvs_buf_printf(b, "gpu: none (%s)\n", why);
        kvs_buf_printf(b, "cuFile: not checked (no GPU)\n");
        kvs_buf_printf(b, "data path for GPU memory: none on this machine (no GPU)\n");
        return;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        kvs_buf_printf(b, "gpu: none (cudaGetDeviceCount: %s)\n",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        kvs_buf_printf(b, "data path for GPU memory: none on this machine (no GPU)\n");
        return;
    }
    for (int i = 0; i < count; i++) {
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) == cudaSuccess)
            kvs_buf_printf(b, "gpu %d: %s, %.1f GiB, compute capability %d.%d\n", i, prop.name,
                           (double)prop.totalGlobalMem / 1073741824.0, prop.major, prop.minor);
    }
    if (cfg->io_path == KVS_IO_PATH_POSIX) {
        kvs_buf_printf(b, "cuFile: not used (io_path is posix)\n");
        kvs_buf_printf(b, "data path for GPU memory: posix (io_path is posix): pinned staging, "
                          "copies overlapped with I/O\n");
        return;
    }
    if (kvs__cufile_init(why, sizeof why) != 0) {
        kvs_buf_printf(b, "cuFile: not usable (%s)\n", why);
        kvs_buf_printf(b, "data path for GPU memory: %s\n",
                       cfg->io_path == KVS_IO_PATH_CUFILE
                           ? "none: io_path is cufile but cuFile is not usable (an engine fails "
                             "its first GPU operation)"
                           : "posix (cuFile not usable)");
        return;
    }
    kvs_buf_printf(b, "cuFile: %s loaded, driver open\n", kvs__cufile_library());
    const char *dir = cfg->store_paths[0];
    char *buf = NULL;
    int rc = -1;
    cudaSetDevice(0);
    if (cudaMalloc((void **)&buf, 2 * PROBE_BYTES) != cudaSuccess) {
        snprintf(why, sizeof why, "cudaMalloc of a probe buffer failed");
    } else {
        int st = kvs__cufile_buf_register(buf, 2 * PROBE_BYTES);
        if (st) {
            snprintf(why, sizeof why, "cuFileBufRegister: %s", kvs__cufile_strerror(st));
        } else {
            struct stat sb;
            if (stat(dir, &sb) != 0)
                snprintf(why, sizeof why, "store path %s does not exist yet", dir);
            else
                rc = cufile_probe(dir, false, buf, 0, PROBE_BYTES, why, sizeof why);
            kvs__cufile_buf_deregister(buf);
        }
        cudaFree(buf);
    }
    kvs_buf_printf(b, "cuFile self-test on %s: %s\n", dir, rc == 0 ? "passed" : "failed");
    if (cfg->io_path == KVS_IO_PATH_CUFILE)
        kvs_buf_printf(b, "data path for GPU memory: cufile (io_path is cufile; files cuFile "
                          "cannot serve go to posix: %s)\n",
                       why);
    else
        kvs_buf_printf(b, "data path for GPU memory: %s (%s)\n", rc == 0 ? "cufile" : "posix",
                       why);
}
