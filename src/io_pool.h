/*
 * io_pool.h - the I/O worker threads (gds_io_threads of them): intrusive
 * tasks in three queues (reads first), a bounce buffer per worker, spare
 * workers when all are stuck in a filesystem call.  The one pool of the
 * library: the engine's chunk transfers and lookups, and kvstash verify,
 * run on it (io_pool.c says why it is built so).
 */
#ifndef KVS_IO_POOL_H
#define KVS_IO_POOL_H

#include "internal.h"

#include <stdatomic.h>

typedef struct kvs_pool kvs_pool;
typedef struct kvs_worker kvs_worker;
typedef struct kvs_task kvs_task;

typedef void (*kvs_task_fn)(kvs_task *task, kvs_worker *worker);

/* A unit of work, embedded in the structure it works on: submitting one
 * allocates nothing. */
struct kvs_task {
    kvs_task *next;
    kvs_task_fn fn;
    uint32_t rank; /* KVS_PRIO_READ_LAYER: served lowest rank first */
};

struct kvs_worker {
    kvs_pool *pool;
    void *bounce;                 /* bounce_bytes, 4096-aligned, this worker's */
    size_t bounce_bytes;
    _Atomic uint64_t busy_since;  /* monotonic ns the current task began; 0 idle */
};

typedef enum kvs_prio {
    KVS_PRIO_READ = 0,  /* retrieves: served first */
    KVS_PRIO_WRITE = 1, /* stores */
    /* The rest of a chunk whose file is open: served before new reads, so
     * a retrieve's chunks complete in order and a slow store yields the
     * longest prefix by the deadline, not a little of every chunk. */
    KVS_PRIO_READ_MORE = 2,
    /* Pieces of a retrieve read in layer order (retrieve_order layer):
     * after new reads, so every chunk of the op is opened (and its first
     * piece read) first, then by task->rank (the piece's index in its
     * chunk), first come first served within a rank. */
    KVS_PRIO_READ_LAYER = 3,
} kvs_prio;

/* Starts `threads` workers, each with a bounce buffer.  When every worker
 * has been busy on one task for longer than stall_ns and a read is waiting,
 * up to `spare` more workers are started, so a hung filesystem call does not
 * stop reads that could be served. */
kvs_status kvs__pool_create(uint32_t threads, uint32_t spare, size_t bounce_bytes,
                            uint64_t stall_ns, kvs_pool **pool_out);

/* A task that submits follow-up tasks gives its own worker's pool
 * (worker->pool): the owner's handle may be gone by then (a destroy that
 * left the worker stuck in a filesystem call), the worker's pool is not. */
void kvs__pool_submit(kvs_pool *pool, kvs_task *task, kvs_prio prio);

/* Lets the workers finish what is queued and stop, waiting at most
 * timeout_ns; workers still stuck after that are left running detached and
 * the pool's memory goes with the last of them.  Returns how many were
 * left. */
uint32_t kvs__pool_destroy(kvs_pool *pool, uint64_t timeout_ns);

/* Tasks queued plus tasks running. */
uint32_t kvs__pool_load(kvs_pool *pool);
uint32_t kvs__pool_threads(kvs_pool *pool);

#endif
