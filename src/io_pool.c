/*
 * io_pool.c - a fixed pool of I/O threads with three queues.
 *
 * Chunk reads and writes are split into tasks (see engine.c) that any worker
 * can run, so one large chunk is read by several threads at once.  Reads
 * have their own queue, served first: a retrieve is on an inference
 * request's critical path, a store never is.  Tasks are intrusive (the
 * caller embeds them), so the hot path takes one mutex and allocates
 * nothing.  Each worker owns a page-aligned bounce buffer sized for one I/O
 * block; data read there stays in the core's cache while it is verified and
 * copied out.
 *
 * A worker stuck in a filesystem call cannot be interrupted.  Two things
 * keep that from stalling the engine: spare workers are started when all are
 * stuck and reads wait, and destroy() leaves stuck workers behind instead of
 * joining them forever; the pool is freed by whichever of the owner and
 * those workers lets go last.
 */
#include "io_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct kvs_queue {
    kvs_task *head;
    kvs_task *tail;
} kvs_queue;

typedef struct kvs_pool_thread {
    kvs_worker worker;
    pthread_t thread;
    bool started;
    bool exited;                  /* under pool->mu */
} kvs_pool_thread;

struct kvs_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;      /* workers wait for tasks */
    pthread_cond_t exit_cv;      /* destroy waits for workers */
    kvs_queue queues[4];         /* served in this order (queue_of) */
    uint32_t queued;
    uint32_t running;
    uint32_t alive;              /* worker threads not yet exited */
    uint32_t refs;               /* owner + alive workers */
    bool stopping;
    uint32_t base_threads;
    uint32_t max_threads;
    uint32_t nthreads;           /* started so far */
    size_t bounce_bytes;
    uint64_t stall_ns;
    kvs_pool_thread *threads;    /* max_threads slots */
};

static void pool_free(kvs_pool *p)
{
    for (uint32_t i = 0; i < p->max_threads; i++)
        kvs__free(p->threads[i].worker.bounce);
    kvs__free(p->threads);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->exit_cv);
    pthread_mutex_destroy(&p->mu);
    kvs__free(p);
}

/* Queue index by priority: the rest of open chunks, new reads, pieces in
 * layer order, writes. */
static int queue_of(kvs_prio prio)
{
    switch (prio) {
    case KVS_PRIO_READ_MORE: return 0;
    case KVS_PRIO_READ: return 1;
    case KVS_PRIO_READ_LAYER: return 2;
    case KVS_PRIO_WRITE: break;
    }
    return 3;
}

static kvs_task *pop(kvs_pool *p)
{
    for (int q = 0; q < (int)KVS_ARRAY_LEN(p->queues); q++) {
        kvs_task *t = p->queues[q].head;
        if (t) {
            p->queues[q].head = t->next;
            if (!t->next)
                p->queues[q].tail = NULL;
            p->queued--;
            return t;
        }
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    kvs_pool_thread *self = arg;
    kvs_worker *w = &self->worker;
    kvs_pool *p = w->pool;
    pthread_setname_np(pthread_self(), "kvs-io");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        kvs_task *t = pop(p);
        if (!t) {
            if (p->stopping)
                break;
            pthread_cond_wait(&p->work_cv, &p->mu);
            continue;
        }
        p->running++;
        atomic_store_explicit(&w->busy_since, kvs__now_ns(), memory_order_relaxed);
        pthread_mutex_unlock(&p->mu);
        t->fn(t, w);
        pthread_mutex_lock(&p->mu);
        atomic_store_explicit(&w->busy_since, 0, memory_order_relaxed);
        p->running--;
    }
    self->exited = true;
    p->alive--;
    bool last = --p->refs == 0;
    pthread_cond_broadcast(&p->exit_cv);
    pthread_mutex_unlock(&p->mu);
    if (last)
        pool_free(p);
    return NULL;
}

/* Called with p->mu held. */
static bool start_thread(kvs_pool *p)
{
    if (p->nthreads >= p->max_threads)
        return false;
    kvs_pool_thread *t = &p->threads[p->nthreads];
    if (!t->worker.bounce) {
        t->worker.bounce = kvs__aligned_alloc(4096, p->bounce_bytes);
        if (!t->worker.bounce)
            return false;
    }
    t->worker.pool = p;
    t->worker.bounce_bytes = p->bounce_bytes;
    atomic_init(&t->worker.busy_since, 0);
    if (pthread_create(&t->thread, NULL, worker_main, t) != 0)
        return false;
    t->started = true;
    p->nthreads++;
    p->alive++;
    p->refs++;
    return true;
}

kvs_status kvs__pool_create(uint32_t threads, uint32_t spare, size_t bounce_bytes,
                            uint64_t stall_ns, kvs_pool **pool_out)
{
    if (threads == 0)
        return kvs__fail(KVS_ERR_INVALID, "I/O pool: 0 threads");
    kvs_pool *p = kvs__calloc(1, sizeof *p);
    if (!p)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory creating the I/O pool");
    p->base_threads = threads;
    p->max_threads = threads + spare;
    p->bounce_bytes = bounce_bytes;
    p->stall_ns = stall_ns;
    p->refs = 1;
    p->threads = kvs__calloc(p->max_threads, sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->mu, NULL) != 0) {
        kvs__free(p->threads);
        kvs__free(p);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory creating the I/O pool");
    }
    pthread_cond_init(&p->work_cv, NULL);
    kvs__cond_init(&p->exit_cv);
    pthread_mutex_lock(&p->mu);
    for (uint32_t i = 0; i < threads; i++) {
        if (!start_thread(p)) {
            pthread_mutex_unlock(&p->mu);
            kvs__pool_destroy(p, UINT64_MAX);
            return kvs__fail(KVS_ERR_NOMEM,
                             "cannot start I/O thread %u of %u (threads or %zu-byte buffers)",
                             i + 1, threads, bounce_bytes);
        }
    }
    pthread_mutex_unlock(&p->mu);
    *pool_out = p;
    return KVS_OK;
}

/* Called with p->mu held: are all workers stuck on old tasks? */
static bool all_stalled(kvs_pool *p, uint64_t now)
{
    if (p->running < p->nthreads)
        return false;
    for (uint32_t i = 0; i < p->nthreads; i++) {
        uint64_t since = atomic_load_explicit(&p->threads[i].worker.busy_since,
                                              memory_order_relaxed);
        if (since == 0 || now - since < p->stall_ns)
            return false;
    }
    return true;
}

void kvs__pool_submit(kvs_pool *pool, kvs_task *task, kvs_prio prio)
{
    kvs_pool *p = pool;
    task->next = NULL;
    pthread_mutex_lock(&p->mu);
    kvs_queue *q = &p->queues[queue_of(prio)];
    if (prio == KVS_PRIO_READ_LAYER && q->tail && q->tail->rank > task->rank) {
        /* after the last task of a rank <= this one's: a walk over at
         * most the op's queued pieces */
        kvs_task **at = &q->head;
        while (*at && (*at)->rank <= task->rank)
            at = &(*at)->next;
        task->next = *at;
        *at = task;
    } else {
        if (q->tail)
            q->tail->next = task;
        else
            q->head = task;
        q->tail = task;
    }
    p->queued++;
    if (prio != KVS_PRIO_WRITE && !p->stopping && p->nthreads < p->max_threads &&
        all_stalled(p, kvs__now_ns())) {
        if (start_thread(p))
            kvs__log(KVS_LOG_WARN,
                     "all %u I/O threads have been busy for over %llu ms (a slow or hung "
                     "filesystem?); started another",
                     p->nthreads - 1, (unsigned long long)(p->stall_ns / 1000000));
    }
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

uint32_t kvs__pool_load(kvs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    uint32_t n = p->queued + p->running;
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint32_t kvs__pool_threads(kvs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    uint32_t n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint32_t kvs__pool_destroy(kvs_pool *p, uint64_t timeout_ns)
{
    if (!p)
        return 0;
    uint64_t deadline = kvs__now_ns() + KVS_MIN(timeout_ns, 3600ull * 1000000000u);
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->work_cv);
    while (p->alive > 0) {
        if (timeout_ns == UINT64_MAX)
            pthread_cond_wait(&p->exit_cv, &p->mu);
        else if (kvs__cond_wait_until(&p->exit_cv, &p->mu, deadline) == ETIMEDOUT)
            break;
    }
    uint32_t stuck = p->alive;
    for (uint32_t i = 0; i < p->nthreads; i++) {
        kvs_pool_thread *t = &p->threads[i];
        if (!t->started)
            continue;
        if (t->exited) {
            pthread_mutex_unlock(&p->mu);
            pthread_join(t->thread, NULL);
            pthread_mutex_lock(&p->mu);
        } else {
            pthread_detach(t->thread);
        }
        t->started = false;
    }
    if (stuck)
        kvs__log(KVS_LOG_WARN,
                 "%u I/O threads are still inside filesystem calls; leaving them behind", stuck);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        pool_free(p);
    return stuck;
}
