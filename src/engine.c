/*
 * engine.c - the public engine API, lifetimes and the op/chunk control flow.
 *
 * An engine is one namespace on one store.  Its operations are built from
 * chunks, and each chunk from pieces (tasks of piece_bytes) that the I/O
 * pool runs in parallel:
 *
 *   retrieve: open + header check (one task per chunk), then pieces that
 *             read, verify each segment's checksum, and only then place the
 *             bytes in the caller's KV memory;
 *   store:    probe + create a temporary file (one task per chunk), then
 *             pieces that take the caller's bytes, checksum and write; the
 *             last piece writes the header and publishes the file.
 *
 * How a piece's bytes move (host memory through bounce buffers or in place,
 * GPU memory through staging) is the transfer implementation's business
 * (xfer.h), chosen once per op in op_new; this file never asks which one
 * it has.
 *
 * A retrieve reports the longest prefix of chunks that arrived whole and
 * verified.  The first chunk that fails cuts the op: later chunks stop
 * early, because tokens past a hole are useless to the caller.
 *
 * Lifetimes: an op holds a reference on its engine, and each unresolved
 * chunk holds one on its op, so memory outlives every task that can touch
 * it, including tasks stuck in a hung filesystem call after the caller has
 * given up on them.
 */
#include "engine.h"

#include "checksum.h"
#include "io_ops.h"
#include "xfer.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STAT_OFF(field) offsetof(kvs_stats, field)

/* How long the store stays marked unhealthy after failure_threshold
 * consecutive I/O failures; then one request is let through to test it. */
#define UNHEALTHY_COOLDOWN_NS (5ull * 1000000000ull)

/* The kvs_stats counter of each failure reason. */
static const size_t reason_stat[KVS_REASON_COUNT] = {
    [KVS_MISS_ABSENT] = STAT_OFF(miss_absent),
    [KVS_MISS_VANISHED] = STAT_OFF(miss_vanished),
    [KVS_MISS_NOT_REGULAR] = STAT_OFF(miss_not_regular),
    [KVS_MISS_OWNERSHIP] = STAT_OFF(miss_ownership),
    [KVS_MISS_TRUNCATED] = STAT_OFF(miss_truncated),
    [KVS_MISS_VERSION] = STAT_OFF(miss_version),
    [KVS_MISS_FOREIGN] = STAT_OFF(miss_foreign),
    [KVS_MISS_BAD_HEADER] = STAT_OFF(miss_bad_header),
    [KVS_MISS_CHECKSUM] = STAT_OFF(miss_checksum),
    [KVS_MISS_UNAUTHENTICATED] = STAT_OFF(miss_unauthenticated),
    [KVS_MISS_NOMEM] = STAT_OFF(miss_nomem),
    [KVS_MISS_IO] = STAT_OFF(miss_io),
    [KVS_MISS_TIMEOUT] = STAT_OFF(miss_timeout),
    [KVS_STORE_FAILED_IO] = STAT_OFF(store_failed_io),
    [KVS_STORE_FAILED_NOSPACE] = STAT_OFF(store_failed_nospace),
    [KVS_STORE_FAILED_TIMEOUT] = STAT_OFF(store_failed_timeout),
};

static void count_reason(kvs_engine *e, kvs_reason r)
{
    if (r <= KVS_REASON_NONE || r >= KVS_REASON_COUNT)
        return;
    uint64_t *field = (uint64_t *)(void *)((char *)&e->stats + reason_stat[r]);
    __atomic_fetch_add(field, 1, __ATOMIC_RELAXED);
}

/* ---- lifetimes ----------------------------------------------------------- */

static void free_auth_key(kvs_engine *e);
static bool owned_strictly(const kvs_engine *e, const struct stat *st, bool folder, char *why,
                           size_t len);

static void engine_free(kvs_engine *e)
{
    free_auth_key(e);
    kvs__dev_close(e->dev);
    kvs__cpu_tier_destroy(e->cpu);
    kvs__index_destroy(e->index);
    kvs__store_close(&e->store);
    kvs__ns_clear(&e->ns);
    kvs_config_free(e->cfg);
    pthread_cond_destroy(&e->idle_cv);
    pthread_mutex_destroy(&e->mu);
    kvs__free(e);
}

static void engine_ref(kvs_engine *e)
{
    atomic_fetch_add(&e->refs, 1);
}

static void engine_unref(kvs_engine *e)
{
    if (atomic_fetch_sub(&e->refs, 1) == 1)
        engine_free(e);
}

static void op_destroy(kvs_op *op)
{
    kvs_engine *e = op->engine;
    if (op->xfer && op->xfer->op_end)
        op->xfer->op_end(op);
    kvs__kvmap_clear(&op->map);
    kvs__free(op->layer_left);
    kvs__free(op->auth_mem);
    kvs__free(op->pieces);
    kvs__free(op->chunks);
    pthread_cond_destroy(&op->cv);
    pthread_mutex_destroy(&op->mu);
    kvs__free(op);
    engine_unref(e);
}

static void op_unref(kvs_op *op)
{
    if (atomic_fetch_sub(&op->refs, 1) == 1)
        op_destroy(op);
}

/* ---- health -------------------------------------------------------------- */

static bool store_unhealthy(kvs_engine *e, uint64_t now)
{
    uint64_t until = atomic_load_explicit(&e->unhealthy_until, memory_order_relaxed);
    return until != 0 && now < until;
}

static void note_io_success(kvs_engine *e)
{
    atomic_store_explicit(&e->failures, 0, memory_order_relaxed);
    if (atomic_exchange(&e->unhealthy_until, 0) != 0)
        kvs__log(KVS_LOG_INFO, "store %s answers again; marked healthy", e->store.root[0]);
}

static void note_io_failure(kvs_engine *e, const char *what, int err)
{
    uint32_t n = atomic_fetch_add(&e->failures, 1) + 1;
    uint32_t threshold = e->cfg->failure_threshold;
    if (threshold && n >= threshold) {
        atomic_store(&e->unhealthy_until, kvs__now_ns() + UNHEALTHY_COOLDOWN_NS);
        kvs__log_once(&e->unhealthy_logged, KVS_LOG_ERROR,
                      "store %s: %u I/O failures in a row (last: %s: %s); serving misses for "
                      "%llu s at a time until it answers again",
                      e->store.root[0], n, what, strerror(err),
                      (unsigned long long)(UNHEALTHY_COOLDOWN_NS / 1000000000ull));
    }
}

/* ---- copies into and out of caller memory -------------------------------- */

/* A copy to or from caller memory happens only between kvs__op_copy_begin
 * and kvs__op_copy_end, and never once the op is cancelled; cancelling waits for the
 * copies under way (each a memcpy of one block), so after kvs_op_wait gives
 * up or kvs_op_free returns, the caller's memory is the caller's again. */
bool kvs__op_copy_begin(kvs_op *op)
{
    atomic_fetch_add(&op->copiers, 1);
    if (atomic_load(&op->cancelled)) {
        atomic_fetch_sub(&op->copiers, 1);
        return false;
    }
    return true;
}

void kvs__op_copy_end(kvs_op *op)
{
    atomic_fetch_sub(&op->copiers, 1);
}

static void cancel_copies(kvs_op *op)
{
    atomic_store(&op->cancelled, true);
    while (atomic_load(&op->copiers) > 0)
        sched_yield();
}

/* Zero-copy transfers (KVS_KV_DIRECT) on caller memory are bracketed the
 * same way, but one can last as long as the filesystem takes, so releasing
 * the op sleeps (kvs_op_free) instead of spinning, and only on these: a
 * task stuck opening a file or reading its header into a worker's buffer
 * does not hold the caller's memory, so it does not hold up the caller. */
void kvs__op_direct_end(kvs_op *op)
{
    if (atomic_fetch_sub(&op->direct_io, 1) == 1 && atomic_load(&op->cancelled)) {
        pthread_mutex_lock(&op->mu);
        pthread_cond_broadcast(&op->cv);
        pthread_mutex_unlock(&op->mu);
    }
}

bool kvs__op_direct_begin(kvs_op *op)
{
    atomic_fetch_add(&op->direct_io, 1);
    if (atomic_load(&op->cancelled)) {
        kvs__op_direct_end(op);
        return false;
    }
    return true;
}

/* ---- results --------------------------------------------------------------- */

static bool loaded_state(int s)
{
    return s == KVS_CH_OK || s == KVS_CH_CPU || s == KVS_CH_INPLACE;
}

/* Called with op->mu held. */
static void compute_result(kvs_op *op)
{
    kvs_op_result r = {0};
    r.status = KVS_OK;
    if (op->kind == KVS_OP_RETRIEVE) {
        bool prefix = true;
        for (uint32_t i = 0; i < op->nchunks; i++) {
            kvs_xchunk *c = &op->chunks[i];
            int s = atomic_load(&c->state);
            if (s == KVS_CH_FAILED)
                r.chunks_failed++;
            if (!prefix || !loaded_state(s)) {
                prefix = false;
                continue;
            }
            r.tokens += c->tokens;
            if (s == KVS_CH_INPLACE) {
                r.chunks_present++;
            } else {
                r.chunks_done++;
                r.bytes += c->payload;
            }
        }
    } else {
        for (uint32_t i = 0; i < op->nchunks; i++) {
            kvs_xchunk *c = &op->chunks[i];
            int s = atomic_load(&c->state);
            if (s == KVS_CH_OK) {
                r.chunks_done++;
                r.tokens += c->tokens;
                r.bytes += c->payload;
            } else if (s == KVS_CH_PRESENT) {
                r.chunks_present++;
                r.tokens += c->tokens;
            } else if (s == KVS_CH_FAILED || s == KVS_CH_DROPPED || s == KVS_CH_CANCELLED) {
                r.chunks_failed++;
            }
        }
    }
    op->result = r;
}

/* The line LMCache users know from its retrieves, one per retrieve that
 * loads anything: tokens loaded of those asked for (chunks already in the
 * caller's memory are neither), bytes, time, rate. */
static void log_retrieve(const kvs_op *op, uint64_t ns)
{
    const kvs_op_result *r = &op->result;
    if (r->chunks_done == 0 || !kvs__log_enabled(KVS_LOG_INFO))
        return;
    uint64_t asked = 0, inplace = 0;
    for (uint32_t i = 0; i < op->nchunks; i++) {
        if (atomic_load(&op->chunks[i].state) == KVS_CH_INPLACE)
            inplace += op->chunks[i].tokens;
        else
            asked += op->chunks[i].tokens;
    }
    uint64_t loaded = r->tokens >= inplace ? r->tokens - inplace : 0;
    double ms = (double)ns / 1e6;
    kvs__log(KVS_LOG_INFO,
             "retrieved %llu of %llu tokens to load (%llu already in place), %u chunks, "
             "%.1f MiB in %.1f ms (%.2f GB/s)%s%s",
             (unsigned long long)loaded, (unsigned long long)asked,
             (unsigned long long)inplace, r->chunks_done, (double)r->bytes / 1048576.0, ms,
             ns ? (double)r->bytes / (double)ns : 0.0,
             r->status ? "; ended early: " : "", r->status ? kvs_strerror(r->status) : "");
}

static void op_complete_locked(kvs_op *op)
{
    pthread_cond_broadcast(&op->cv);
    if (op->complete)
        return;
    compute_result(op);
    op->complete = true;
    kvs_engine *e = op->engine;
    if (op->layer_files) {
        atomic_fetch_add(&e->layer_files_left, (int64_t)op->layer_files);
        op->layer_files = 0;
    }
    uint64_t ns = kvs__now_ns() - op->t_start;
    if (op->kind == KVS_OP_RETRIEVE) {
        KVS_STAT_ADD(e, retrieve_hit_tokens, op->result.tokens);
        KVS_STAT_ADD(e, retrieve_ns, ns);
        log_retrieve(op, ns);
    } else {
        KVS_STAT_ADD(e, store_op_ns, ns);
    }
}

static void chunk_resolve(kvs_xchunk *c)
{
    kvs_op *op = c->op;
    if (atomic_fetch_sub(&op->chunks_left, 1) == 1) {
        pthread_mutex_lock(&op->mu);
        op_complete_locked(op);
        pthread_mutex_unlock(&op->mu);
    }
    op_unref(op);
}

/* Moves a pending chunk to `state`; false if it was already resolved (by a
 * failure elsewhere, or by the op's deadline). */
static bool chunk_settle(kvs_xchunk *c, int state)
{
    int expect = KVS_CH_PENDING;
    return atomic_compare_exchange_strong(&c->state, &expect, state);
}

static void cut_at(kvs_op *op, uint32_t idx)
{
    uint32_t cur = atomic_load(&op->cut);
    while (idx < cur && !atomic_compare_exchange_weak(&op->cut, &cur, idx))
        ;
}

/* A chunk failed for a reason, counted in the stats. */
static void chunk_fail(kvs_xchunk *c, kvs_reason reason)
{
    kvs_op *op = c->op;
    if (!chunk_settle(c, KVS_CH_FAILED))
        return;
    c->reason = reason;
    if (op->kind == KVS_OP_RETRIEVE)
        cut_at(op, c->idx);
    count_reason(op->engine, reason);
}

static bool chunk_stopped(const kvs_xchunk *c)
{
    const kvs_op *op = c->op;
    return atomic_load(&c->state) != KVS_CH_PENDING || atomic_load(&op->cancelled) ||
           (op->kind == KVS_OP_RETRIEVE && c->idx > atomic_load(&op->cut));
}

bool kvs__xchunk_stopped(const kvs_xchunk *c)
{
    return chunk_stopped(c);
}

/* Releases the layer counts of a retrieve piece that finished or will never
 * run. */
static void piece_retire(kvs_op *op, const kvs_xpiece *p)
{
    if (!op->layer_left)
        return;
    bool wake = false;
    pthread_mutex_lock(&op->mu);
    for (uint32_t l = p->layer_lo; l <= p->layer_hi; l++)
        wake |= --op->layer_left[l] == 0;
    if (wake)
        pthread_cond_broadcast(&op->cv);
    pthread_mutex_unlock(&op->mu);
}

static void retire_all_pieces(kvs_xchunk *c)
{
    for (uint32_t i = 0; i < c->npieces; i++)
        piece_retire(c->op, &c->pieces[i]);
}

/* ---- verification ---------------------------------------------------------- */

/* auth on: whether the tag of chunk c (header kept at open) verifies over
 * the segment digests its pieces computed. */
static bool chunk_authentic(const kvs_xchunk *c)
{
    const kvs_engine *e = c->op->engine;
    uint8_t tag[KVS_AUTH_TAG_BYTES];
    return kvs__chunk_mac(e->auth_key, e->auth_key_len, c->auth,
                          kvs__auth_segment_count(c->payload), tag) == 0 &&
           CRYPTO_memcmp(tag, c->hdr.auth_tag, sizeof tag) == 0;
}

/* Piece progress counts for wait_layer; with auth on a chunk's layers are
 * reported only once its MAC verified (finish_read_chunk). */
static void piece_done(kvs_op *op, const kvs_xpiece *p)
{
    if (!op->engine->auth_key)
        piece_retire(op, p);
}

/* ---- retrieve ---------------------------------------------------------------- */

static kvs_reason read_errno_reason(int err)
{
    switch (err) {
    case ENOENT:
    case ESTALE: return KVS_MISS_VANISHED;
    case ENODATA: return KVS_MISS_TRUNCATED;
    case ENOMEM: return KVS_MISS_NOMEM;
    default: return KVS_MISS_IO;
    }
}

static kvs_reason reject_reason(kvs_reject r)
{
    switch (r) {
    case KVS_REJECT_VERSION: return KVS_MISS_VERSION;
    case KVS_REJECT_FOREIGN: return KVS_MISS_FOREIGN;
    case KVS_REJECT_TRUNCATED: return KVS_MISS_TRUNCATED;
    case KVS_REJECT_CHECKSUM: return KVS_MISS_CHECKSUM;
    case KVS_REJECT_AUTH: return KVS_MISS_UNAUTHENTICATED;
    case KVS_REJECT_BAD_HEADER:
    case KVS_REJECT_NONE: break;
    }
    return KVS_MISS_BAD_HEADER;
}

/* A file that is provably wrong under its name is removed, so that the next
 * store of that chunk replaces it instead of skipping it as present. */
static void quarantine(kvs_xchunk *c, kvs_reject why)
{
    static int logged;
    kvs_engine *e = c->op->engine;
    char path[KVS_PATH_MAX];
    kvs__store_chunk_path(&e->store, c->key, path);
    kvs__log_once(&logged, KVS_LOG_WARN,
                  "chunk file %s is not valid (%s); removed it, the chunk will be recomputed "
                  "(further cases are counted in kvstash_chunk_misses_total)",
                  path, kvs__reject_name(why));
    /* Only the file examined: a writer may have published a good one under
     * the name since. */
    kvs__store_remove_examined(&e->store, c->key, &c->st);
    kvs__index_forget(e->index, c->key);
}

static void read_fail(kvs_xchunk *c, kvs_reason reason, int err)
{
    kvs_engine *e = c->op->engine;
    if (reason == KVS_MISS_IO) {
        static int logged;
        char path[KVS_PATH_MAX];
        kvs__store_chunk_path(&e->store, c->key, path);
        kvs__log_once(&logged, KVS_LOG_WARN, "reading %s failed: %s (counted from now on)", path,
                      strerror(err));
        /* One file we may not read (mode 000, another owner) is a miss for
         * that chunk, not a sign of a failing store. */
        if (err != EACCES && err != EPERM)
            note_io_failure(e, "read", err);
    } else if (reason == KVS_MISS_VANISHED) {
        kvs__index_forget(e->index, c->key);
    }
    chunk_fail(c, reason);
}

static void finish_read_chunk(kvs_xchunk *c)
{
    kvs_op *op = c->op;
    kvs_engine *e = op->engine;
    if (op->xfer->file_close)
        op->xfer->file_close(c);
    kvs__io()->close(c->fd);
    c->fd = -1;
    if (e->auth_key) {
        if (atomic_load(&c->state) == KVS_CH_PENDING && !chunk_authentic(c)) {
            chunk_fail(c, KVS_MISS_UNAUTHENTICATED);
            quarantine(c, KVS_REJECT_AUTH);
        }
        retire_all_pieces(c);
    }
    if (chunk_settle(c, KVS_CH_OK)) {
        uint64_t now = kvs__now_ns();
        KVS_STAT_ADD(e, hits_store, 1);
        note_io_success(e);
        if (!c->index_said_present)
            kvs__index_set_present(e->index, c->key, 0);
        if (kvs__index_touch(e->index, c->key, now, e->access_interval_ns))
            kvs__store_touch(&e->store, c->key);
    }
    chunk_resolve(c);
}

/* One piece through the op's transfer (xfer.h); its outcome settles the
 * chunk, and the last piece finishes it. */
static void read_piece(kvs_xpiece *p, kvs_worker *w)
{
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    kvs_engine *e = op->engine;
    uint64_t delivered = 0;
    int err = 0;
    uint64_t stored = 0;
    kvs_xfer_rc rc = op->xfer->read_piece(p, w, &delivered, &err);
    KVS_STAT_ADD(e, bytes_read, delivered);
    if (rc == KVS_XFER_OK)
        stored = kvs__xpiece_stored_len(p);
    KVS_STAT_ADD(e, stored_bytes_read, stored);
    switch (rc) {
    case KVS_XFER_OK:
    case KVS_XFER_STOPPED: break;
    case KVS_XFER_IO: read_fail(c, read_errno_reason(err), err); break;
    case KVS_XFER_CHECKSUM:
        chunk_fail(c, KVS_MISS_CHECKSUM);
        quarantine(c, KVS_REJECT_CHECKSUM);
        break;
    case KVS_XFER_NOMEM: chunk_fail(c, KVS_MISS_NOMEM); break;
    case KVS_XFER_DEVICE: chunk_fail(c, KVS_MISS_IO); break;
    }
    /* A piece that stopped early leaves its chunk incomplete: whatever
     * stopped it (a failure elsewhere, the cut, the deadline) has settled
     * the chunk already, or this does. */
    if (rc != KVS_XFER_OK)
        chunk_settle(c, KVS_CH_CANCELLED);
    piece_done(op, p);
    if (atomic_fetch_sub(&c->pieces_left, 1) == 1)
        finish_read_chunk(c);
}

static void read_piece_task(kvs_task *t, kvs_worker *w)
{
    read_piece(KVS_CONTAINER(t, kvs_xpiece, task), w);
}

static void read_open_task(kvs_task *t, kvs_worker *w)
{
    kvs_xchunk *c = KVS_CONTAINER(t, kvs_xchunk, task);
    kvs_op *op = c->op;
    kvs_engine *e = op->engine;
    if (chunk_stopped(c)) {
        chunk_settle(c, KVS_CH_CANCELLED);
        goto resolve;
    }
    int fd = kvs__store_open_read(&e->store, c->key, &c->st, &c->fd_direct);
    const struct stat st = c->st;
    if (fd < 0) {
        int err = -fd;
        if (err == ENOENT || err == ENOTDIR || err == ESTALE) {
            if (c->index_said_present) {
                /* Evicted by a collector (or removed by an operator): the
                 * chunks after it most likely went with it; ask the store
                 * about them again rather than trust the index. */
                for (uint32_t k = c->idx; k < op->nchunks; k++)
                    kvs__index_forget(e->index, op->chunks[k].key);
                chunk_fail(c, KVS_MISS_VANISHED);
            } else {
                kvs__index_set_absent(e->index, c->key, kvs__now_ns() + e->negative_ns);
                chunk_fail(c, KVS_MISS_ABSENT);
            }
        } else if (err == ELOOP || err == EISDIR || err == ENXIO || err == ENODEV) {
            chunk_fail(c, KVS_MISS_NOT_REGULAR);
        } else {
            read_fail(c, read_errno_reason(err), err);
        }
        goto resolve;
    }
    c->fd = fd;
    char why[160];
    if (e->cfg->strict_ownership && !owned_strictly(e, &st, false, why, sizeof why)) {
        static int logged;
        char path[KVS_PATH_MAX];
        kvs__store_chunk_path(&e->store, c->key, path);
        kvs__log_once(&logged, KVS_LOG_WARN, "strict_ownership: chunk file %s is %s; not served "
                      "(further cases are counted in kvstash_chunk_misses_total)", path, why);
        chunk_fail(c, KVS_MISS_OWNERSHIP);
        goto close_resolve;
    }
    /* The length a file must have is in its header (a compressed file is
     * shorter than its payload, CODEC.md): only what cannot hold a chunk of
     * this size at all is refused before the header is read. */
    if (!kvs__chunk_size_plausible(c->payload, (uint64_t)st.st_size)) {
        chunk_fail(c, KVS_MISS_TRUNCATED);
        quarantine(c, KVS_REJECT_TRUNCATED);
        goto close_resolve;
    }
    if (kvs__pread_full(fd, w->bounce, KVS_HEADER_BYTES, 0) != 0) {
        read_fail(c, read_errno_reason(errno), errno);
        goto close_resolve;
    }
    kvs_chunk_want want = {.key = c->key, .ns = &e->ns, .tokens = c->tokens};
    kvs_reject rej = kvs__chunk_check_header(w->bounce, (uint64_t)st.st_size, &want, &c->hdr);
    if (rej == KVS_REJECT_NONE && c->hdr.codec) {
        /* the frame table, after the header (the bounce buffer is at least
         * 256 KiB; the header is still needed below with auth on) */
        uint8_t *table = (uint8_t *)w->bounce + KVS_HEADER_BYTES;
        if (kvs__pread_full(fd, table, KVS_FRAME_TABLE_BYTES, KVS_FRAME_TABLE_OFFSET) != 0) {
            read_fail(c, read_errno_reason(errno), errno);
            goto close_resolve;
        }
        rej = kvs__chunk_check_table(&c->hdr, table, &c->frames, NULL, 0);
    }
    if (rej != KVS_REJECT_NONE) {
        chunk_fail(c, reject_reason(rej));
        quarantine(c, rej);
        goto close_resolve;
    }
    if (c->hdr.codec && !op->xfer->reads_codec) {
        /* a good file this data path cannot decode: another reader may */
        chunk_fail(c, KVS_MISS_VERSION);
        goto close_resolve;
    }
    if (e->auth_key) {
        if (c->hdr.auth_algo != KVS_AUTH_HMAC_SHA256) {
            chunk_fail(c, KVS_MISS_UNAUTHENTICATED);
            quarantine(c, KVS_REJECT_AUTH);
            goto close_resolve;
        }
        memcpy(c->auth, w->bounce, KVS_HEADER_BYTES);
    }
    if (op->xfer->file_open)
        op->xfer->file_open(c);
    atomic_store(&c->pieces_left, c->npieces);
    /* The opener reads the first piece itself.  In chunk order the rest
     * come before any other chunk is opened; in layer order after every
     * chunk of the op is open (and its first piece read), by their index
     * in the chunk (io_pool.h). */
    for (uint32_t i = 1; i < c->npieces; i++) {
        c->pieces[i].task.rank = i;
        kvs__pool_submit(w->pool, &c->pieces[i].task,
                         op->layer_order ? KVS_PRIO_READ_LAYER : KVS_PRIO_READ_MORE);
    }
    read_piece(&c->pieces[0], w);
    return;

close_resolve:
    kvs__io()->close(c->fd);
    c->fd = -1;
resolve:
    retire_all_pieces(c);
    chunk_resolve(c);
}

/* ---- store ------------------------------------------------------------------- */

static kvs_reason write_errno_reason(int err)
{
    return err == ENOSPC || err == EDQUOT ? KVS_STORE_FAILED_NOSPACE : KVS_STORE_FAILED_IO;
}

static void write_fail(kvs_xchunk *c, int err, const char *what)
{
    kvs_engine *e = c->op->engine;
    static int logged_io, logged_space;
    bool space = err == ENOSPC || err == EDQUOT;
    char path[KVS_PATH_MAX];
    kvs__store_chunk_path(&e->store, c->key, path);
    kvs__log_once(space ? &logged_space : &logged_io, KVS_LOG_WARN,
                  "storing %s failed at %s: %s; the chunk is not stored (counted from now on)",
                  path, what, strerror(err));
    if (space) /* the filesystem is full before the configured limit: collect now */
        kvs__collector_kick(e->collector, kvs__store_path_index(&e->store, c->key));
    else if (err != ENOENT && err != ESTALE) /* ENOENT: an operator removed the
                                                namespace under the write */
        note_io_failure(e, what, err);
    chunk_fail(c, write_errno_reason(err));
}

/* Worker time on a chunk write: each task adds its own span before it can
 * resolve the chunk (after which the op, and maybe the engine, may go). */
static void busy_since(kvs_engine *e, uint64_t t0)
{
    KVS_STAT_ADD(e, store_ns, kvs__now_ns() - t0);
}

static void end_store_chunk(kvs_xchunk *c)
{
    kvs_engine *e = c->op->engine;
    int s = atomic_load(&c->state);
    if (s != KVS_CH_OK && s != KVS_CH_PRESENT)
        kvs__index_forget(e->index, c->key);
    if (c->op->xfer->chunk_end)
        c->op->xfer->chunk_end(c);
    atomic_fetch_sub(&e->pending_bytes, c->payload);
    if (atomic_fetch_sub(&e->pending_chunks, 1) == 1) {
        pthread_mutex_lock(&e->mu);
        pthread_cond_broadcast(&e->idle_cv);
        pthread_mutex_unlock(&e->mu);
    }
    chunk_resolve(c);
}

static void finish_write_chunk(kvs_xchunk *c, kvs_worker *w, uint64_t t0)
{
    kvs_op *op = c->op;
    kvs_engine *e = op->engine;
    const kvs_io_ops *io = kvs__io();
    bool ok = atomic_load(&c->state) == KVS_CH_PENDING;
    if (c->cpu) {
        if (ok)
            kvs__cpu_tier_commit(e->cpu, c->cpu);
        else
            kvs__cpu_tier_abort(e->cpu, c->cpu);
        c->cpu = NULL;
    }
    /* compressed (xfer.h): the table block the header's sum covers */
    uint8_t *table = (uint8_t *)w->bounce + KVS_HEADER_BYTES;
    if (ok && c->hdr.codec)
        c->hdr.table_sum = kvs__chunk_encode_table(&c->hdr, &c->frames, table);
    if (ok) {
        c->hdr.auth_algo = e->auth_key ? KVS_AUTH_HMAC_SHA256 : KVS_AUTH_NONE;
        kvs__header_encode(&c->hdr, w->bounce);
        if (e->auth_key) {
            uint8_t tag[KVS_AUTH_TAG_BYTES];
            memcpy(c->auth, w->bounce, KVS_HEADER_BYTES);
            /* a transfer whose pieces did not hash (a capture did) */
            if (op->xfer->digests && op->xfer->digests(c) != KVS_XFER_OK) {
                chunk_fail(c, KVS_STORE_FAILED_IO);
                ok = false;
            } else if (kvs__chunk_mac(e->auth_key, e->auth_key_len, c->auth,
                               kvs__auth_segment_count(c->payload), tag) != 0) {
                chunk_fail(c, KVS_STORE_FAILED_IO);
                ok = false;
            } else {
                kvs__header_set_tag(w->bounce, tag);
            }
        }
    }
    if (ok && c->hdr.codec &&
        kvs__pwrite_full(c->fd, table, KVS_FRAME_TABLE_BYTES, KVS_FRAME_TABLE_OFFSET) != 0) {
        write_fail(c, errno, "frame table write");
        ok = false;
    }
    if (ok) {
        if (kvs__pwrite_full(c->fd, w->bounce, KVS_HEADER_BYTES, 0) != 0) {
            write_fail(c, errno, "header write");
            ok = false;
        } else if (e->store.durable && io->fsync(c->fd) != 0) {
            write_fail(c, errno, "fsync");
            ok = false;
        }
    }
    if (op->xfer->file_close)
        op->xfer->file_close(c);
    if (io->close(c->fd) != 0 && ok) {
        /* NFS-like filesystems report deferred write errors at close. */
        write_fail(c, errno, "close");
        ok = false;
    }
    c->fd = -1;
    if (!ok) {
        kvs__store_discard(&e->store, c->key, c->tmp_suffix);
        if (atomic_load(&c->state) == KVS_CH_PENDING)
            chunk_settle(c, KVS_CH_CANCELLED);
        busy_since(e, t0);
        end_store_chunk(c);
        return;
    }
    int rc = kvs__store_publish(&e->store, c->key, c->tmp_suffix);
    if (rc == 0) {
        chunk_settle(c, KVS_CH_OK);
        kvs__index_set_present(e->index, c->key, kvs__now_ns());
        KVS_STAT_ADD(e, chunks_stored, 1);
        KVS_STAT_ADD(e, bytes_written, c->payload);
        KVS_STAT_ADD(e, stored_bytes_written,
                     c->hdr.codec ? c->hdr.stored_bytes : c->payload);
        if (c->hdr.codec)
            KVS_STAT_ADD(e, chunks_stored_compressed, 1);
        note_io_success(e);
    } else if (rc == 1) {
        chunk_settle(c, KVS_CH_PRESENT);
        kvs__index_set_present(e->index, c->key, 0);
        KVS_STAT_ADD(e, chunks_store_lost_race, 1);
    } else {
        write_fail(c, -rc, "publish (rename)");
    }
    busy_since(e, t0);
    end_store_chunk(c);
}

/* One piece through the op's transfer (xfer.h), filling the CPU tier's
 * entry on the way when one is being written; the last piece finishes the
 * chunk. */
static void write_piece(kvs_xpiece *p, kvs_worker *w, uint64_t t0)
{
    kvs_xchunk *c = p->chunk;
    kvs_engine *e = c->op->engine;
    int err = 0;
    void *cpu = c->cpu ? kvs__cpu_entry_data(c->cpu) : NULL;
    kvs_xfer_rc rc = c->op->xfer->write_piece(p, w, cpu, &err);
    if (rc == KVS_XFER_IO)
        write_fail(c, err, "write");
    else if (rc != KVS_XFER_OK && rc != KVS_XFER_STOPPED)
        chunk_fail(c, KVS_STORE_FAILED_IO);
    if (rc != KVS_XFER_OK) /* never publish a chunk with a piece missing */
        chunk_settle(c, KVS_CH_CANCELLED);
    if (atomic_fetch_sub(&c->pieces_left, 1) == 1) {
        finish_write_chunk(c, w, t0);
        return;
    }
    busy_since(e, t0);
}

static void write_piece_task(kvs_task *t, kvs_worker *w)
{
    write_piece(KVS_CONTAINER(t, kvs_xpiece, task), w, kvs__now_ns());
}

static void write_create_task(kvs_task *t, kvs_worker *w)
{
    kvs_xchunk *c = KVS_CONTAINER(t, kvs_xchunk, task);
    kvs_op *op = c->op;
    kvs_engine *e = op->engine;
    uint64_t t0 = kvs__now_ns();
    KVS_STAT_ADD(e, store_queue_ns, t0 - c->t_start);
    if (chunk_stopped(c)) {
        chunk_settle(c, KVS_CH_CANCELLED);
        busy_since(e, t0);
        end_store_chunk(c);
        return;
    }
    /* Another instance may have stored it since: one metadata call saves a
     * whole chunk of writing. */
    int err = 0;
    kvs_probe pr = kvs__store_probe(&e->store, c->key, c->payload, &err);
    if (pr == KVS_PROBE_PRESENT) {
        chunk_settle(c, KVS_CH_PRESENT);
        kvs__index_set_present(e->index, c->key, 0);
        KVS_STAT_ADD(e, chunks_store_present, 1);
        busy_since(e, t0);
        end_store_chunk(c);
        return;
    }
    if (pr == KVS_PROBE_BAD)
        kvs__store_remove(&e->store, c->key);
    int fd = kvs__store_create_temp(&e->store, c->key, &c->tmp_suffix, &c->fd_direct);
    if (fd < 0) {
        write_fail(c, -fd, "create");
        busy_since(e, t0);
        end_store_chunk(c);
        return;
    }
    c->fd = fd;
    if (e->cpu)
        c->cpu = kvs__cpu_tier_begin(e->cpu, c->key, c->payload);
    if (op->xfer->file_open)
        op->xfer->file_open(c);
    if (!op->xfer->capture) /* a capture set the header up with its sums */
        kvs__header_init(&c->hdr, &e->ns, c->key, c->tokens);
    atomic_store(&c->pieces_left, c->npieces);
    for (uint32_t i = 1; i < c->npieces; i++)
        kvs__pool_submit(w->pool, &c->pieces[i].task, KVS_PRIO_WRITE);
    write_piece(&c->pieces[0], w, t0);
}

/* ---- operation setup ----------------------------------------------------------- */

static kvs_status check_engine_call(kvs_engine *e, const uint32_t *tokens, size_t num_tokens,
                                    const char *fn)
{
    if (!e)
        return kvs__fail(KVS_ERR_INVALID, "%s: engine is NULL", fn);
    if (!tokens && num_tokens)
        return kvs__fail(KVS_ERR_INVALID, "%s: tokens is NULL", fn);
    if (atomic_load(&e->closing))
        return kvs__fail(KVS_ERR_INVALID, "%s: the engine is being closed", fn);
    return KVS_OK;
}

/* Chunks an op covers: whole chunks, plus a partial last one when
 * save_unfull_chunk is on. */
static uint32_t op_chunk_count(const kvs_engine *e, size_t num_tokens)
{
    size_t T = e->ns.chunk_size;
    size_t n = num_tokens / T;
    if (e->cfg->save_unfull_chunk && num_tokens % T)
        n++;
    return (uint32_t)n;
}

static kvs_status op_new(kvs_engine *e, kvs_op_kind kind, const uint32_t *tokens,
                         size_t num_tokens, const kvs_kv *kv, kvs_op **out)
{
    uint32_t n = op_chunk_count(e, num_tokens);
    kvs_op *op = kvs__calloc(1, sizeof *op);
    if (!op)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting an operation");
    kvs_status st = kvs__kvmap_init(&op->map, &e->ns, kv, num_tokens);
    if (st) {
        kvs__free(op);
        return st;
    }
    op->kind = kind;
    op->engine = e;
    op->nchunks = n;
    op->direct = kv->mem == KVS_MEM_HOST && (kv->flags & KVS_KV_DIRECT);
    /* the one place that looks at where the caller's memory is */
    op->xfer = kv->mem == KVS_MEM_CUDA ? &kvs__xfer_dev : &kvs__xfer_host;
    op->t_start = kvs__now_ns();
    op->deadline_ns = op->t_start + (kind == KVS_OP_RETRIEVE ? e->io_timeout_ns
                                                             : e->store_timeout_ns);
    atomic_init(&op->refs, 1);
    atomic_init(&op->cut, n);
    pthread_mutex_init(&op->mu, NULL);
    kvs__cond_init(&op->cv);
    engine_ref(e);

    size_t T = e->ns.chunk_size;
    uint64_t total_pieces = 0;
    /* each transfer sizes its pieces (the device path larger ones) */
    const uint64_t piece_bytes = op->xfer->piece_bytes(e, kind);
    op->chunks = kvs__calloc(n ? n : 1, sizeof *op->chunks);
    if (!op->chunks)
        goto nomem;
    for (uint32_t i = 0; i < n; i++) {
        kvs_xchunk *c = &op->chunks[i];
        c->op = op;
        c->idx = i;
        c->t0 = (size_t)i * T;
        c->tokens = (uint32_t)KVS_MIN(T, num_tokens - c->t0);
        c->payload = kvs__ns_payload_bytes(&e->ns, c->tokens);
        c->padded = kvs__padded_payload(c->payload);
        c->seg_bytes = kvs__segment_bytes(c->payload);
        c->npieces = (uint32_t)((c->padded + piece_bytes - 1) / piece_bytes);
        c->fd = -1;
        atomic_init(&c->state, KVS_CH_PENDING);
        st = kvs__chunk_key(i ? op->chunks[i - 1].key : NULL, tokens + c->t0, c->tokens, c->key);
        if (st)
            goto fail;
        c->cover = kvs__kvmap_cover(&op->map, c->t0, c->tokens);
        total_pieces += c->npieces;
    }
    op->pieces = kvs__calloc(total_pieces ? total_pieces : 1, sizeof *op->pieces);
    if (!op->pieces)
        goto nomem;
    uint64_t layer_bytes = (uint64_t)e->ns.num_planes * e->ns.row_bytes;
    kvs_xpiece *p = op->pieces;
    for (uint32_t i = 0; i < n; i++) {
        kvs_xchunk *c = &op->chunks[i];
        c->pieces = p;
        c->task.fn = kind == KVS_OP_RETRIEVE ? read_open_task : write_create_task;
        for (uint32_t k = 0; k < c->npieces; k++, p++) {
            p->chunk = c;
            p->task.fn = kind == KVS_OP_RETRIEVE ? read_piece_task : write_piece_task;
            p->off = (uint64_t)k * piece_bytes;
            p->len = KVS_MIN(piece_bytes, c->padded - p->off);
            uint64_t lb = layer_bytes * c->tokens;
            uint64_t last = KVS_MIN(p->off + p->len, c->payload);
            p->layer_lo = (uint32_t)KVS_MIN(p->off / lb, (uint64_t)e->ns.num_layers - 1);
            p->layer_hi = last > p->off ? (uint32_t)((last - 1) / lb) : p->layer_lo;
        }
    }
    if (kind == KVS_OP_RETRIEVE) {
        op->layer_left = kvs__calloc(e->ns.num_layers, sizeof *op->layer_left);
        if (!op->layer_left)
            goto nomem;
    }
    if (e->auth_key && n) {
        /* per chunk: the header, then a SHA-256 per segment */
        size_t total = 0;
        for (uint32_t i = 0; i < n; i++)
            total += KVS_HEADER_BYTES + 32 * (size_t)kvs__auth_segment_count(op->chunks[i].payload);
        op->auth_mem = kvs__calloc(1, total);
        if (!op->auth_mem)
            goto nomem;
        uint8_t *a = op->auth_mem;
        for (uint32_t i = 0; i < n; i++) {
            kvs_xchunk *c = &op->chunks[i];
            c->auth = a;
            a += KVS_HEADER_BYTES + 32 * (size_t)kvs__auth_segment_count(c->payload);
        }
    }
    if (op->xfer->op_begin && (st = op->xfer->op_begin(op, kv)))
        goto fail;
    *out = op;
    return KVS_OK;
nomem:
    st = kvs__fail(KVS_ERR_NOMEM, "out of memory starting an operation on %zu tokens", num_tokens);
fail:
    op_destroy(op);
    return st;
}

static kvs_status check_kv_mem(const kvs_kv *kv, const char *fn)
{
    if (!kv)
        return kvs__fail(KVS_ERR_INVALID, "%s: kv is NULL", fn);
    if (kv->mem == KVS_MEM_CUDA && !kvs__dev_built())
        return kvs__fail(KVS_ERR_UNSUPPORTED,
                         "%s: kv is CUDA memory, but this libkvstash was built without CUDA "
                         "support",
                         fn);
    return KVS_OK;
}

kvs_status kvs_kv_check(kvs_engine *e, const kvs_kv *kv)
{
    kvs_status st = check_engine_call(e, NULL, 0, "kvs_kv_check");
    if (!st)
        st = check_kv_mem(kv, "kvs_kv_check");
    if (st)
        return st;
    kvs_kvmap m;
    kvs_kv desc = *kv;
    desc.slot_mapping = NULL; /* the layout alone: no prompt yet */
    if ((st = kvs__kvmap_init(&m, &e->ns, &desc, 0)))
        return st;
    kvs__kvmap_clear(&m);
    return KVS_OK;
}

/* The last piece of a CPU tier hit copied on the workers: the entry's pin
 * goes, and the chunk is loaded unless something stopped it (the cut, the
 * deadline, the op released). */
static void finish_hit_chunk(kvs_xchunk *c)
{
    kvs_engine *e = c->op->engine;
    kvs__cpu_tier_release(e->cpu, c->cpu);
    c->cpu = NULL;
    if (chunk_settle(c, KVS_CH_CPU)) {
        KVS_STAT_ADD(e, hits_cpu, 1);
        KVS_STAT_ADD(e, bytes_cpu_hit, c->payload);
    }
    chunk_resolve(c);
}

static void hit_piece_task(kvs_task *t, kvs_worker *w)
{
    (void)w;
    kvs_xpiece *p = KVS_CONTAINER(t, kvs_xpiece, task);
    kvs_xchunk *c = p->chunk;
    kvs_op *op = c->op;
    if (op->xfer->put_piece(p, kvs__cpu_entry_data(c->cpu)) != KVS_XFER_OK)
        chunk_settle(c, KVS_CH_CANCELLED);
    piece_retire(op, p); /* no MAC to wait for: the entry is this process's */
    if (atomic_fetch_sub(&c->pieces_left, 1) == 1)
        finish_hit_chunk(c);
}

/* Whether the CPU tier hits among chunks 0..n-1 go to the workers: a copy
 * on the caller's thread alone runs at one core's speed, below what the
 * same threads reach on a store's file (bench/RESULTS.md: 17.5 GB/s against
 * a four-thread memcpy of 20-22 on the build VM).  Small hits stay on the
 * caller's thread, where they cost no hand-over. */
static bool hits_on_workers(const kvs_op *op, kvs_cpu_entry *const *hits, uint32_t n)
{
    const kvs_engine *e = op->engine;
    if (!op->xfer->put_piece || op->xfer->hits_first || kvs__pool_threads(e->pool) < 2)
        return false;
    uint64_t bytes = 0;
    for (uint32_t k = 0; k < n; k++)
        bytes += hits[k] ? op->chunks[k].payload : 0;
    return bytes > 0 && bytes >= e->hit_split_bytes;
}

/* CPU tier hits 0..n-1 into the caller's memory, through the transfer.
 * One that cannot be placed (no staging) is a miss that cuts the prefix;
 * with hits_first this runs before any read is queued, so such a cut
 * happens before any task can complete the op.  Hits handed to the workers
 * (kvs_retrieve_start) are NULL here. */
static void put_cpu_hits(kvs_op *op, kvs_cpu_entry **hits, uint32_t n)
{
    kvs_engine *e = op->engine;
    for (uint32_t k = 0; k < n; k++) {
        if (!hits[k])
            continue;
        kvs_xchunk *c = &op->chunks[k];
        kvs_xfer_rc rc = !op->xfer->hits_first || k < atomic_load(&op->cut)
                             ? op->xfer->put_host(c, kvs__cpu_entry_data(hits[k]))
                             : KVS_XFER_STOPPED;
        kvs__cpu_tier_release(e->cpu, hits[k]);
        hits[k] = NULL;
        if (rc == KVS_XFER_OK) {
            KVS_STAT_ADD(e, hits_cpu, 1);
            KVS_STAT_ADD(e, bytes_cpu_hit, c->payload);
            continue;
        }
        atomic_store(&c->state, KVS_CH_FAILED);
        c->reason = KVS_MISS_NOMEM;
        KVS_STAT_ADD(e, miss_nomem, 1);
        cut_at(op, k);
    }
}

/* retrieve_order layer keeps every chunk file of a retrieve open until its
 * last piece is read: the files come from a budget (engine open), so a batch
 * of long prompts cannot run the process out of descriptors; a retrieve
 * that does not fit reads in chunk order.  Returns the files reserved. */
static uint32_t reserve_layer_files(kvs_engine *e, uint32_t n)
{
    int64_t left = atomic_load(&e->layer_files_left);
    while (left >= (int64_t)n)
        if (atomic_compare_exchange_weak(&e->layer_files_left, &left, left - (int64_t)n))
            return n;
    return 0;
}

kvs_status kvs_retrieve_start(kvs_engine *e, const uint32_t *tokens, size_t num_tokens,
                              const kvs_kv *kv, kvs_op **op_out)
{
    kvs_status st = check_engine_call(e, tokens, num_tokens, "kvs_retrieve_start");
    if (!st && !op_out)
        st = kvs__fail(KVS_ERR_INVALID, "kvs_retrieve_start: op_out is NULL");
    if (!st)
        st = check_kv_mem(kv, "kvs_retrieve_start");
    if (st)
        return st;
    kvs_op *op;
    st = op_new(e, KVS_OP_RETRIEVE, tokens, num_tokens, kv, &op);
    if (st)
        return st;
    KVS_STAT_ADD(e, retrieves, 1);
    KVS_STAT_ADD(e, retrieve_tokens, num_tokens);

    /* Decide each chunk in order: in place, CPU tier, the store, or the end
     * of the prefix.  CPU hits are copied after the reads are queued, so the
     * copies overlap the I/O. */
    uint64_t now = kvs__now_ns();
    bool unhealthy = store_unhealthy(e, now);
    uint32_t nread = 0;
    kvs_cpu_entry **cpu_hits = kvs__calloc(op->nchunks ? op->nchunks : 1, sizeof *cpu_hits);
    if (!cpu_hits) {
        op_destroy(op);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting a retrieve");
    }
    uint32_t i = 0;
    for (; i < op->nchunks; i++) {
        kvs_xchunk *c = &op->chunks[i];
        if (c->cover == KVS_SLOTS_NONE) {
            atomic_store(&c->state, KVS_CH_INPLACE);
            continue;
        }
        if ((cpu_hits[i] = kvs__cpu_tier_get(e->cpu, c->key)) != NULL) {
            atomic_store(&c->state, KVS_CH_CPU);
            continue;
        }
        if (unhealthy) {
            KVS_STAT_ADD(e, miss_unhealthy, 1);
            break;
        }
        kvs_index_state is = kvs__index_get(e->index, c->key, now);
        if (is == KVS_IDX_ABSENT || is == KVS_IDX_WRITING) {
            KVS_STAT_ADD(e, negative_cache_hits, is == KVS_IDX_ABSENT);
            KVS_STAT_ADD(e, miss_absent, 1);
            break;
        }
        c->index_said_present = is == KVS_IDX_PRESENT;
        nread++;
    }
    for (uint32_t k = i; k < op->nchunks; k++)
        atomic_store(&op->chunks[k].state, KVS_CH_CANCELLED);
    atomic_store(&op->cut, i);

    if (op->xfer->hits_first)
        put_cpu_hits(op, cpu_hits, i);

    /* Large hits: each chunk pending, pinned entry in c->cpu, its pieces
     * queued after the reads' opens (idle workers take those first), then
     * as the reads' pieces go: in chunk order ahead of the opens still
     * queued, like the rest of an open chunk (a hit is usually the prompt's
     * first chunks, so chunks still complete in order); in layer order by
     * their index in the chunk, among the reads' pieces of that index. */
    uint32_t nhit = 0;
    if (hits_on_workers(op, cpu_hits, i)) {
        for (uint32_t k = 0; k < i; k++) {
            if (!cpu_hits[k])
                continue;
            kvs_xchunk *c = &op->chunks[k];
            c->cpu = cpu_hits[k];
            c->tier_hit = true;
            cpu_hits[k] = NULL;
            atomic_store(&c->pieces_left, c->npieces);
            for (uint32_t q = 0; q < c->npieces; q++)
                c->pieces[q].task.fn = hit_piece_task;
            atomic_store(&c->state, KVS_CH_PENDING);
            nhit++;
        }
    }
    if (e->cfg->retrieve_order == KVS_RETRIEVE_ORDER_LAYER && nread > 1) {
        op->layer_files = reserve_layer_files(e, nread);
        op->layer_order = op->layer_files != 0;
    }

    /* Layer counts and references before any task can run. */
    atomic_store(&op->chunks_left, nread + nhit);
    atomic_fetch_add(&op->refs, (int)(nread + nhit));
    for (uint32_t k = 0; k < i; k++) {
        kvs_xchunk *c = &op->chunks[k];
        if (atomic_load(&c->state) != KVS_CH_PENDING)
            continue;
        for (uint32_t q = 0; q < c->npieces; q++)
            for (uint32_t l = c->pieces[q].layer_lo; l <= c->pieces[q].layer_hi; l++)
                op->layer_left[l]++;
    }
    for (uint32_t k = 0; k < i; k++)
        if (atomic_load(&op->chunks[k].state) == KVS_CH_PENDING && !op->chunks[k].tier_hit)
            kvs__pool_submit(e->pool, &op->chunks[k].task, KVS_PRIO_READ);
    for (uint32_t k = 0; nhit && k < i; k++) {
        kvs_xchunk *c = &op->chunks[k];
        if (!c->tier_hit)
            continue;
        for (uint32_t q = 0; q < c->npieces; q++) {
            c->pieces[q].task.rank = q;
            kvs__pool_submit(e->pool, &c->pieces[q].task,
                             op->layer_order ? KVS_PRIO_READ_LAYER : KVS_PRIO_READ_MORE);
        }
    }

    put_cpu_hits(op, cpu_hits, i); /* those left, overlapping the reads */
    kvs__free(cpu_hits);
    if (nread + nhit == 0) {
        pthread_mutex_lock(&op->mu);
        op_complete_locked(op);
        pthread_mutex_unlock(&op->mu);
    }
    *op_out = op;
    return KVS_OK;
}

/* Gives up on an op at its deadline (count_timeout) or because its handle
 * is released: no more copies to or from caller memory, every unresolved
 * chunk is a miss (retrieve) or a failed write (store), and the op is
 * complete with what arrived.  Tasks stuck in the filesystem finish later
 * on their own and find their chunk settled: a late write is discarded or,
 * if it was already publishing, leaves a complete file that is simply not
 * counted.  A deadline that passes with a file read or write unresolved
 * counts as one I/O failure towards failure_threshold, so a hung store gets
 * marked unhealthy and later requests stop waiting on it; CPU tier hits
 * still waiting for a worker are misses too, but say nothing of the store. */
static void op_abandon(kvs_op *op, bool count_timeout)
{
    kvs_engine *e = op->engine;
    kvs_reason reason = op->kind == KVS_OP_RETRIEVE ? KVS_MISS_TIMEOUT : KVS_STORE_FAILED_TIMEOUT;
    uint32_t timed_out = 0; /* chunks of the store's files */
    cancel_copies(op);
    pthread_mutex_lock(&op->mu);
    if (!op->complete) {
        for (uint32_t i = 0; i < op->nchunks; i++) {
            kvs_xchunk *c = &op->chunks[i];
            if (chunk_settle(c, count_timeout ? KVS_CH_FAILED : KVS_CH_CANCELLED) &&
                count_timeout) {
                c->reason = reason;
                count_reason(e, reason);
                timed_out += !c->tier_hit;
            }
        }
        op_complete_locked(op);
        if (count_timeout)
            op->result.status = KVS_ERR_TIMEOUT;
    }
    pthread_cond_broadcast(&op->cv);
    pthread_mutex_unlock(&op->mu);
    if (timed_out)
        note_io_failure(e, op->kind == KVS_OP_RETRIEVE ? "read (deadline)" : "write (deadline)",
                        ETIMEDOUT);
}

kvs_status kvs_op_wait(kvs_op *op, int64_t timeout_ms, kvs_op_result *result_out)
{
    if (!op)
        return kvs__fail(KVS_ERR_INVALID, "kvs_op_wait: op is NULL");
    /* Never past the op's own deadline (io_timeout_ms for a retrieve,
     * store_timeout_ms for a store): a hung filesystem must not hang the
     * caller. */
    uint64_t deadline = op->deadline_ns;
    if (timeout_ms >= 0 && (uint64_t)timeout_ms < UINT64_MAX / 2000000u) {
        uint64_t d = kvs__now_ns() + (uint64_t)timeout_ms * 1000000u;
        if (d < deadline)
            deadline = d;
    }
    pthread_mutex_lock(&op->mu);
    while (!op->complete) {
        if (kvs__now_ns() >= deadline)
            break;
        kvs__cond_wait_until(&op->cv, &op->mu, deadline);
    }
    if (!op->complete) {
        pthread_mutex_unlock(&op->mu);
        if (deadline < op->deadline_ns)
            return kvs__fail(KVS_ERR_TIMEOUT, "kvs_op_wait: not complete after %lld ms",
                             (long long)timeout_ms);
        op_abandon(op, true);
        pthread_mutex_lock(&op->mu);
    }
    if (result_out)
        *result_out = op->result;
    pthread_mutex_unlock(&op->mu);
    return KVS_OK;
}

/* Called with op->mu held. */
static bool layers_ready(const kvs_op *op, uint32_t layer)
{
    for (uint32_t l = 0; l <= layer; l++)
        if (op->layer_left[l] != 0)
            return false;
    return true;
}

kvs_status kvs_op_wait_layer(kvs_op *op, uint32_t layer, size_t *loaded_tokens_out)
{
    if (!op || op->kind != KVS_OP_RETRIEVE)
        return kvs__fail(KVS_ERR_INVALID, "kvs_op_wait_layer: not a retrieve op");
    if (layer >= op->engine->ns.num_layers)
        return kvs__fail(KVS_ERR_INVALID, "kvs_op_wait_layer: layer %u >= num_layers %u", layer,
                         op->engine->ns.num_layers);
    pthread_mutex_lock(&op->mu);
    while (!op->complete && !layers_ready(op, layer)) {
        if (kvs__now_ns() >= op->deadline_ns) {
            pthread_mutex_unlock(&op->mu);
            op_abandon(op, true);
            pthread_mutex_lock(&op->mu);
            continue;
        }
        kvs__cond_wait_until(&op->cv, &op->mu, op->deadline_ns);
    }
    size_t tokens = 0;
    for (uint32_t i = 0; i < op->nchunks; i++) {
        int s = atomic_load(&op->chunks[i].state);
        if (!(loaded_state(s) || (s == KVS_CH_PENDING && !op->complete)))
            break;
        tokens += op->chunks[i].tokens;
    }
    pthread_mutex_unlock(&op->mu);
    if (loaded_tokens_out)
        *loaded_tokens_out = tokens;
    return KVS_OK;
}

void kvs_op_free(kvs_op *op)
{
    if (!op)
        return;
    pthread_mutex_lock(&op->mu);
    bool complete = op->complete;
    pthread_mutex_unlock(&op->mu);
    if (!complete) {
        if (op->kind == KVS_OP_RETRIEVE)
            op_abandon(op, false);
        else if (!op->xfer->capture) /* captured stores go on on their own */
            cancel_copies(op);         /* host memory is the caller's again */
    }
    if (op->direct) {
        /* Zero-copy I/O may still be in flight on the caller's memory. */
        pthread_mutex_lock(&op->mu);
        while (atomic_load(&op->direct_io) > 0) {
            kvs__cond_wait_until(&op->cv, &op->mu, kvs__now_ns() + 10000000u);
        }
        pthread_mutex_unlock(&op->mu);
    }
    op_unref(op);
}

kvs_status kvs_retrieve(kvs_engine *e, const uint32_t *tokens, size_t num_tokens,
                        const kvs_kv *kv, size_t *loaded_tokens_out)
{
    if (!loaded_tokens_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_retrieve: loaded_tokens_out is NULL");
    kvs_op *op;
    kvs_status st = kvs_retrieve_start(e, tokens, num_tokens, kv, &op);
    if (st)
        return st;
    kvs_op_result r;
    st = kvs_op_wait(op, -1, &r);
    kvs_op_free(op);
    if (st)
        return st;
    *loaded_tokens_out = (size_t)r.tokens;
    return KVS_OK;
}

/* Transfers that capture (xfer.h) take each chunk to be written before
 * kvs_store returns, so the caller's memory is free at once.  A chunk that
 * finds no room is dropped and counted like one the store queue has no
 * room for; a capture that fails as a whole fails its chunks.  Returns how
 * many were dropped or failed. */
static uint32_t capture(kvs_op *op, uint32_t nwrite)
{
    const kvs_xfer_ops *x = op->xfer;
    kvs_engine *e = op->engine;
    uint32_t dropped = 0;
    kvs_xfer_rc rc = x->capture_begin(op, nwrite);
    bool begun = rc == KVS_XFER_OK;
    for (uint32_t i = 0; i < op->nchunks; i++) {
        kvs_xchunk *c = &op->chunks[i];
        if (atomic_load(&c->state) != KVS_CH_PENDING)
            continue;
        kvs__header_init(&c->hdr, &e->ns, c->key, c->tokens);
        if (rc == KVS_XFER_OK) {
            kvs_xfer_rc r = x->capture(c);
            if (r == KVS_XFER_OK)
                continue;
            if (r != KVS_XFER_NOMEM)
                rc = r;
        }
        atomic_store(&c->state, KVS_CH_DROPPED);
        atomic_fetch_sub(&e->pending_bytes, c->payload);
        atomic_fetch_sub(&e->pending_chunks, 1);
        kvs__index_forget(e->index, c->key);
        KVS_STAT_ADD(e, store_dropped, 1);
        dropped++;
    }
    if (begun && x->capture_end(op) != KVS_XFER_OK) {
        for (uint32_t i = 0; i < op->nchunks; i++) {
            kvs_xchunk *c = &op->chunks[i];
            if (atomic_load(&c->state) != KVS_CH_PENDING)
                continue;
            if (x->chunk_end)
                x->chunk_end(c);
            atomic_store(&c->state, KVS_CH_FAILED);
            atomic_fetch_sub(&e->pending_bytes, c->payload);
            atomic_fetch_sub(&e->pending_chunks, 1);
            kvs__index_forget(e->index, c->key);
            KVS_STAT_ADD(e, store_failed_io, 1);
            dropped++;
        }
    }
    return dropped;
}

/* Chunks a store call did not queue, with the reason and what to change;
 * rate-limited, since a backlog drops chunks of every store that follows. */
static void log_dropped(kvs_engine *e, uint32_t nchunks, uint32_t full, uint32_t unhealthy,
                        uint32_t floor, uint32_t staging)
{
    static kvs_log_limit limit;
    char why[768];
    size_t w = 0;
    if (full)
        w += (size_t)snprintf(why + w, sizeof why - w,
                              "%s%u: store queue full (%.3g GB pending of "
                              "max_pending_store_size %.3g GB; the store writes slower "
                              "than chunks arrive)", w ? "; " : "", full,
                              (double)atomic_load(&e->pending_bytes) / 1e9,
                              e->cfg->max_pending_store_size);
    if (unhealthy && w < sizeof why)
        w += (size_t)snprintf(why + w, sizeof why - w,
                              "%s%u: store marked unhealthy after repeated I/O failures",
                              w ? "; " : "", unhealthy);
    if (floor && w < sizeof why)
        w += (size_t)snprintf(why + w, sizeof why - w,
                              "%s%u: store full (max_store_size or min_free_space) until "
                              "the collector makes room", w ? "; " : "", floor);
    if (staging && w < sizeof why)
        snprintf(why + w, sizeof why - w,
                 "%s%u: GPU staging full or failed (cufile_buffer_size %llu MiB)",
                 w ? "; " : "", staging, (unsigned long long)e->cfg->cufile_buffer_size);
    kvs__log_limited(&limit, KVS_LOG_WARN,
                     "store: %u of %u chunks not stored (%s); counted in "
                     "kvstash_store_failures_total", full + unhealthy + floor + staging,
                     nchunks, why);
}

kvs_status kvs_store(kvs_engine *e, const uint32_t *tokens, size_t num_tokens, const kvs_kv *kv,
                     kvs_op **op_out)
{
    kvs_status st = check_engine_call(e, tokens, num_tokens, "kvs_store");
    if (!st)
        st = check_kv_mem(kv, "kvs_store");
    if (!st && !op_out && kv->mem == KVS_MEM_HOST)
        st = kvs__fail(KVS_ERR_INVALID,
                       "kvs_store: op_out is NULL, but host memory stays borrowed until the "
                       "store completes, so it must be waited for");
    if (st)
        return st;
    kvs_op *op;
    st = op_new(e, KVS_OP_STORE, tokens, num_tokens, kv, &op);
    if (st)
        return st;
    KVS_STAT_ADD(e, stores, 1);
    uint64_t now = kvs__now_ns();
    bool unhealthy = store_unhealthy(e, now);
    bool below_floor = kvs__collector_refuse_stores(e->collector);
    if (below_floor) {
        static int logged;
        kvs__log_once(&logged, KVS_LOG_WARN,
                      "the store is full (at max_store_size, or free space below "
                      "min_free_space): new chunks are not stored until the collector makes "
                      "room (counted in kvstash_store_failures_total{reason=\"nospace\"})");
    }
    uint32_t nwrite = 0, n_full = 0, n_unhealthy = 0, n_floor = 0;
    for (uint32_t i = 0; i < op->nchunks; i++) {
        kvs_xchunk *c = &op->chunks[i];
        c->t_start = now;
        if (c->cover != KVS_SLOTS_ALL) {
            atomic_store(&c->state, KVS_CH_SKIPPED);
            continue;
        }
        if (!kvs__index_begin_write(e->index, c->key, now)) {
            atomic_store(&c->state, KVS_CH_PRESENT);
            KVS_STAT_ADD(e, chunks_store_present, 1);
            continue;
        }
        uint64_t pending = atomic_fetch_add(&e->pending_bytes, c->payload);
        if (unhealthy || pending + c->payload > e->max_pending_bytes || below_floor) {
            atomic_fetch_sub(&e->pending_bytes, c->payload);
            kvs__index_forget(e->index, c->key);
            atomic_store(&c->state, KVS_CH_DROPPED);
            if (below_floor && !unhealthy) {
                KVS_STAT_ADD(e, store_failed_nospace, 1);
                n_floor++;
            } else {
                KVS_STAT_ADD(e, store_dropped, 1);
                if (unhealthy)
                    n_unhealthy++;
                else
                    n_full++;
            }
            continue;
        }
        atomic_fetch_add(&e->pending_chunks, 1);
        nwrite++;
    }
    uint32_t n_staging = 0;
    if (op->xfer->capture && nwrite) {
        n_staging = capture(op, nwrite);
        nwrite -= n_staging;
    }
    if (n_full || n_unhealthy || n_floor || n_staging)
        log_dropped(e, op->nchunks, n_full, n_unhealthy, n_floor, n_staging);
    atomic_store(&op->chunks_left, nwrite);
    atomic_fetch_add(&op->refs, (int)nwrite);
    for (uint32_t i = 0; i < op->nchunks; i++)
        if (atomic_load(&op->chunks[i].state) == KVS_CH_PENDING)
            kvs__pool_submit(e->pool, &op->chunks[i].task, KVS_PRIO_WRITE);
    if (nwrite == 0) {
        pthread_mutex_lock(&op->mu);
        op_complete_locked(op);
        pthread_mutex_unlock(&op->mu);
    }
    if (op_out)
        *op_out = op;
    else
        op_unref(op);
    return KVS_OK;
}

/* ---- lookup -------------------------------------------------------------------- */

/* Lookups ask the store about unknown chunks through the pool, so a hung
 * mount costs a lookup its deadline, not the caller's thread. */
typedef struct probe_item {
    kvs_task task;
    struct probe_batch *batch;
    uint8_t key[KVS_KEY_BYTES];
    uint64_t payload;
    int result;                /* kvs_probe; valid when done */
    bool done;
} probe_item;

typedef struct probe_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kvs_engine *engine;
    int refs;                  /* caller + unfinished items */
    uint32_t n;
    uint32_t ndone;
    probe_item items[];
} probe_batch;

static void probe_batch_unref(probe_batch *b)
{
    pthread_mutex_lock(&b->mu);
    bool last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (last) {
        kvs_engine *e = b->engine;
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        kvs__free(b);
        engine_unref(e);
    }
}

static void probe_task(kvs_task *t, kvs_worker *w)
{
    (void)w;
    probe_item *it = KVS_CONTAINER(t, probe_item, task);
    probe_batch *b = it->batch;
    kvs_engine *e = b->engine;
    int err = 0;
    kvs_probe r = kvs__store_probe(&e->store, it->key, it->payload, &err);
    KVS_STAT_ADD(e, store_probes, 1);
    uint64_t now = kvs__now_ns();
    if (r == KVS_PROBE_PRESENT) {
        kvs__index_set_present(e->index, it->key, 0);
        note_io_success(e);
    } else if (r == KVS_PROBE_ABSENT) {
        kvs__index_set_absent(e->index, it->key, now + e->negative_ns);
        note_io_success(e);
    } else if (r == KVS_PROBE_ERROR) {
        note_io_failure(e, "stat", err);
    }
    pthread_mutex_lock(&b->mu);
    it->result = (int)r;
    it->done = true;
    if (++b->ndone == b->n)
        pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    probe_batch_unref(b);
}

/* Probes keys[0..n) in parallel; returns how many leading ones are present
 * (stopping at the first that is not, or not answered by the deadline). */
static kvs_status probe_prefix(kvs_engine *e, uint8_t (*keys)[KVS_KEY_BYTES], const uint32_t *ntok,
                               uint32_t n, uint64_t deadline, uint32_t *present_out)
{
    probe_batch *b = kvs__calloc(1, sizeof *b + n * sizeof(probe_item));
    if (!b)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory probing the store");
    pthread_mutex_init(&b->mu, NULL);
    kvs__cond_init(&b->cv);
    b->engine = e;
    b->n = n;
    b->refs = 1 + (int)n;
    engine_ref(e);
    for (uint32_t i = 0; i < n; i++) {
        probe_item *it = &b->items[i];
        it->batch = b;
        it->task.fn = probe_task;
        memcpy(it->key, keys[i], KVS_KEY_BYTES);
        it->payload = kvs__ns_payload_bytes(&e->ns, ntok[i]);
    }
    for (uint32_t i = 0; i < n; i++)
        kvs__pool_submit(e->pool, &b->items[i].task, KVS_PRIO_READ);
    pthread_mutex_lock(&b->mu);
    while (b->ndone < b->n && kvs__now_ns() < deadline) {
        kvs__cond_wait_until(&b->cv, &b->mu, deadline);
    }
    uint32_t present = 0;
    while (present < n && b->items[present].done && b->items[present].result == KVS_PROBE_PRESENT)
        present++;
    bool timed_out = present < n && !b->items[present].done;
    if (timed_out)
        KVS_STAT_ADD(e, miss_timeout, 1);
    pthread_mutex_unlock(&b->mu);
    if (timed_out) /* as for reads: a hung store gets marked unhealthy */
        note_io_failure(e, "stat (deadline)", ETIMEDOUT);
    probe_batch_unref(b);
    *present_out = present;
    return KVS_OK;
}

#define PROBE_BATCH_MAX 64u

/* Tokens of chunk i of a prompt of num_tokens (T per chunk; the last may
 * be partial). */
static inline uint32_t chunk_tokens(size_t T, size_t num_tokens, uint32_t i)
{
    return (uint32_t)KVS_MIN(T, num_tokens - (size_t)i * T);
}

/* Extends the prompt's key chain: keys[*hashed..upto) and their token
 * counts, each key over its parent's. */
static kvs_status hash_chunks(const kvs_engine *e, const uint32_t *tokens, size_t num_tokens,
                              uint32_t upto, uint8_t (*keys)[KVS_KEY_BYTES], uint32_t *ntok,
                              uint32_t *hashed)
{
    const size_t T = e->ns.chunk_size;
    for (; *hashed < upto; (*hashed)++) {
        uint32_t i = *hashed;
        ntok[i] = chunk_tokens(T, num_tokens, i);
        kvs_status st = kvs__chunk_key(i ? keys[i - 1] : NULL, tokens + (size_t)i * T, ntok[i],
                                       keys[i]);
        if (st)
            return st;
    }
    return KVS_OK;
}

kvs_status kvs_lookup(kvs_engine *e, const uint32_t *tokens, size_t num_tokens,
                      size_t *hit_tokens_out)
{
    kvs_status st = check_engine_call(e, tokens, num_tokens, "kvs_lookup");
    if (!st && !hit_tokens_out)
        st = kvs__fail(KVS_ERR_INVALID, "kvs_lookup: hit_tokens_out is NULL");
    if (st)
        return st;
    KVS_STAT_ADD(e, lookups, 1);
    KVS_STAT_ADD(e, lookup_tokens, num_tokens);
    uint32_t n = op_chunk_count(e, num_tokens);
    size_t T = e->ns.chunk_size;
    uint64_t now = kvs__now_ns();
    uint64_t deadline = now + e->io_timeout_ns;
    bool unhealthy = store_unhealthy(e, now);
    uint8_t (*keys)[KVS_KEY_BYTES] = kvs__malloc((n ? n : 1) * sizeof *keys);
    uint32_t *ntok = kvs__malloc((n ? n : 1) * sizeof *ntok);
    if (!keys || !ntok) {
        kvs__free(keys);
        kvs__free(ntok);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory in kvs_lookup");
    }
    uint32_t hashed = 0;  /* keys[0..hashed) are computed */
    uint32_t hit = 0;     /* chunks[0..hit) are available */
    uint32_t batch = 1;
    while (hit < n) {
        st = hash_chunks(e, tokens, num_tokens, hit + 1, keys, ntok, &hashed);
        if (st)
            goto out;
        if (kvs__cpu_tier_contains(e->cpu, keys[hit])) {
            hit++;
            continue;
        }
        if (unhealthy)
            break;
        kvs_index_state is = kvs__index_get(e->index, keys[hit], now);
        if (is == KVS_IDX_PRESENT) {
            hit++;
            continue;
        }
        if (is == KVS_IDX_ABSENT) {
            KVS_STAT_ADD(e, negative_cache_hits, 1);
            break;
        }
        if (is == KVS_IDX_WRITING)
            break;
        /* Unknown: ask the store about this chunk and, if the prefix keeps
         * going, about twice as many next time. */
        uint32_t m = KVS_MIN(batch, n - hit);
        st = hash_chunks(e, tokens, num_tokens, hit + m, keys, ntok, &hashed);
        if (st)
            goto out;
        uint32_t present = 0;
        st = probe_prefix(e, keys + hit, ntok + hit, m, deadline, &present);
        if (st)
            goto out;
        hit += present;
        if (present < m)
            break;
        batch = KVS_MIN(batch * 2, PROBE_BATCH_MAX);
    }
    size_t hit_tokens = 0;
    for (uint32_t i = 0; i < hit; i++)
        hit_tokens += chunk_tokens(T, num_tokens, i);
    KVS_STAT_ADD(e, lookup_hit_tokens, hit_tokens);
    *hit_tokens_out = hit_tokens;
out:
    kvs__free(keys);
    kvs__free(ntok);
    return st;
}

kvs_status kvs_remove(kvs_engine *e, const uint32_t *tokens, size_t num_tokens,
                      size_t *removed_out)
{
    kvs_status st = check_engine_call(e, tokens, num_tokens, "kvs_remove");
    if (st)
        return st;
    uint32_t n = op_chunk_count(e, num_tokens);
    size_t T = e->ns.chunk_size;
    uint8_t key[KVS_KEY_BYTES], parent[KVS_KEY_BYTES];
    size_t removed = 0;
    int first_err = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t nt = chunk_tokens(T, num_tokens, i);
        st = kvs__chunk_key(i ? parent : NULL, tokens + (size_t)i * T, nt, key);
        if (st)
            return st;
        memcpy(parent, key, sizeof key);
        kvs__cpu_tier_remove(e->cpu, key);
        kvs__index_forget(e->index, key);
        int rc = kvs__store_remove(&e->store, key);
        if (rc == 0)
            removed++;
        else if (rc < 0 && !first_err)
            first_err = -rc;
    }
    if (first_err)
        return kvs__fail(kvs__errno_status(first_err), "kvs_remove: removing a chunk failed: %s",
                         strerror(first_err));
    if (removed_out)
        *removed_out = removed;
    return KVS_OK;
}

/* ---- open and close -------------------------------------------------------------- */

/* Reads auth_key_file, which must hold the key alone: a regular file (no
 * symlink), owned by this user or root, with no permission for group or
 * others, of KVS_AUTH_KEY_MIN to KVS_AUTH_KEY_MAX bytes. */
static kvs_status load_auth_key(kvs_engine *e)
{
    const char *path = e->cfg->auth_key_file;
    const char *src = "auth_key_file (KVSTASH_AUTH_KEY_FILE)";
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return kvs__fail(KVS_ERR_CONFIG, "%s: cannot open \"%s\": %s (a regular file, not a "
                         "symlink, is accepted)", src, path, strerror(errno));
    struct stat st;
    kvs_status rc = KVS_OK;
    if (fstat(fd, &st) != 0) {
        rc = kvs__fail(KVS_ERR_CONFIG, "%s: cannot stat \"%s\": %s", src, path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = kvs__fail(KVS_ERR_CONFIG, "%s: \"%s\" is not a regular file", src, path);
    } else if (st.st_mode & 077) {
        rc = kvs__fail(KVS_ERR_CONFIG, "%s: \"%s\" has mode %04o; a key file must not be "
                       "accessible to group or others (chmod 600)", src, path,
                       (unsigned)(st.st_mode & 07777));
    } else if (st.st_uid != geteuid() && st.st_uid != 0) {
        rc = kvs__fail(KVS_ERR_CONFIG, "%s: \"%s\" is owned by uid %u; accepted: this user "
                       "(uid %u) or root", src, path, (unsigned)st.st_uid, (unsigned)geteuid());
    } else if (st.st_size < KVS_AUTH_KEY_MIN || st.st_size > KVS_AUTH_KEY_MAX) {
        rc = kvs__fail(KVS_ERR_CONFIG, "%s: \"%s\" holds %lld bytes; accepted: %u to %u "
                       "secret bytes (e.g. head -c 32 /dev/urandom)", src, path,
                       (long long)st.st_size, KVS_AUTH_KEY_MIN, KVS_AUTH_KEY_MAX);
    } else {
        e->auth_key_len = (size_t)st.st_size;
        e->auth_key = kvs__malloc(e->auth_key_len);
        if (!e->auth_key)
            rc = kvs__fail(KVS_ERR_NOMEM, "out of memory reading %s", src);
        else if (kvs__pread_full(fd, e->auth_key, e->auth_key_len, 0) != 0)
            rc = kvs__fail(KVS_ERR_CONFIG, "%s: reading \"%s\" failed: %s", src, path,
                           errno ? strerror(errno) : "short read");
    }
    close(fd);
    return rc;
}

/* strict_ownership: whether a folder or file of the store is trusted, like
 * ssh's StrictModes: writable by no "other", and either of store_gid's group
 * (a group-shared store) or owned by the expected user (folders: or root)
 * and not writable by its group.  why says what is wrong. */
static bool owned_strictly(const kvs_engine *e, const struct stat *st, bool folder, char *why,
                           size_t len)
{
    const unsigned mode = (unsigned)(st->st_mode & 07777);
    if (st->st_mode & 002) {
        snprintf(why, len, "mode %04o is writable by others", mode);
        return false;
    }
    if (e->own_gid_set && st->st_gid == e->own_gid)
        return true;
    if (st->st_uid != e->own_uid && !(folder && st->st_uid == 0)) {
        snprintf(why, len, "owned by uid %u (group %u), not by uid %u%s%s", (unsigned)st->st_uid,
                 (unsigned)st->st_gid, (unsigned)e->own_uid, folder ? " or root" : "",
                 e->own_gid_set ? " nor of store_gid's group" : "");
        return false;
    }
    if (st->st_mode & 020) {
        snprintf(why, len, "mode %04o is writable by its group (gid %u%s)", mode,
                 (unsigned)st->st_gid, e->own_gid_set ? ", not store_gid" : "; set store_gid "
                                                                           "for a group store");
        return false;
    }
    return true;
}

/* A user or group given by name or number. */
static kvs_status resolve_id(const char *key, const char *text, bool group, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (text[0] >= '0' && text[0] <= '9' && !*end && !errno && v < 0xffffffffUL) {
        *out = (uint32_t)v;
        return KVS_OK;
    }
    char buf[4096];
    if (group) {
        struct group g, *r = NULL;
        if (getgrnam_r(text, &g, buf, sizeof buf, &r) == 0 && r) {
            *out = (uint32_t)r->gr_gid;
            return KVS_OK;
        }
    } else {
        struct passwd p, *r = NULL;
        if (getpwnam_r(text, &p, buf, sizeof buf, &r) == 0 && r) {
            *out = (uint32_t)r->pw_uid;
            return KVS_OK;
        }
    }
    return kvs__fail(KVS_ERR_CONFIG, "%s: no %s \"%s\" on this machine; accepted: a %s name "
                     "or number", key, group ? "group" : "user", text, group ? "group" : "user");
}

static kvs_status check_ownership(kvs_engine *e)
{
    char why[160];
    e->own_uid = (uint32_t)geteuid();
    if (e->cfg->store_uid && e->cfg->store_uid[0]) {
        kvs_status st = resolve_id("store_uid", e->cfg->store_uid, false, &e->own_uid);
        if (st)
            return st;
    }
    if (e->cfg->store_gid && e->cfg->store_gid[0]) {
        kvs_status st = resolve_id("store_gid", e->cfg->store_gid, true, &e->own_gid);
        if (st)
            return st;
        e->own_gid_set = true;
    }
    for (uint32_t i = 0; i < e->store.nfds; i++) {
        struct stat st;
        if (fstat(e->store.ns_fd[i], &st) != 0)
            return kvs__fail(KVS_ERR_IO, "strict_ownership: cannot stat the namespace folder "
                             "%s: %s", e->store.ns_path[i], strerror(errno));
        if (!owned_strictly(e, &st, true, why, sizeof why))
            return kvs__fail(KVS_ERR_PERM, "strict_ownership: the namespace folder %s is %s; "
                             "accepted: owned by this user (or store_uid) or root and writable "
                             "by no one else, or of store_gid's group and not writable by "
                             "others (chown/chmod it, or turn strict_ownership off)",
                             e->store.ns_path[i], why);
    }
    for (uint32_t i = 0; i < e->store.nroot_fds; i++) {
        char meta[KVS_PATH_MAX];
        snprintf(meta, sizeof meta, "%s/%s", e->store.root[i], KVS_META_DIR);
        struct stat st; /* from the root's descriptor, as every use of it */
        if (fstatat(e->store.root_fd[i], KVS_META_DIR, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue; /* made later by this user: then it is ours */
            return kvs__fail(KVS_ERR_IO, "strict_ownership: cannot stat %s: %s", meta,
                             strerror(errno));
        }
        if (!S_ISDIR(st.st_mode))
            return kvs__fail(KVS_ERR_PERM, "strict_ownership: %s is not a folder (a symlink or "
                             "file planted there); accepted: a folder owned by this user or "
                             "root", meta);
        if (!owned_strictly(e, &st, true, why, sizeof why))
            return kvs__fail(KVS_ERR_PERM, "strict_ownership: %s is %s; accepted: owned by "
                             "this user (or store_uid) or root and writable by no one else, or "
                             "of store_gid's group and not writable by others", meta, why);
    }
    return KVS_OK;
}

static void free_auth_key(kvs_engine *e)
{
    if (e->auth_key)
        OPENSSL_cleanse(e->auth_key, e->auth_key_len);
    kvs__free(e->auth_key);
    e->auth_key = NULL;
}

kvs_status kvs_engine_open(const kvs_config *cfg, const kvs_namespace *ns, kvs_engine **engine_out)
{
    if (!cfg || !ns || !engine_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_engine_open: NULL argument");
    kvs_engine *e = kvs__calloc(1, sizeof *e);
    if (!e)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory opening an engine");
    pthread_mutex_init(&e->mu, NULL);
    kvs__cond_init(&e->idle_cv);
    atomic_init(&e->refs, 1);
    kvs_status st = kvs_config_copy(cfg, &e->cfg);
    if (st)
        goto fail;
    kvs_set_log_level(e->cfg->log_level);
    st = kvs__ns_init(&e->ns, ns, e->cfg->chunk_size, e->cfg->namespace_salt);
    if (st)
        goto fail;
    if (e->cfg->auth_key_file && e->cfg->auth_key_file[0]) {
        st = load_auth_key(e);
        if (st)
            goto fail;
    }
    /* Bounded: a hung mount fails the open instead of hanging the caller. */
    st = kvs__store_open_bounded(&e->store, e->cfg, &e->ns,
                                 kvs__config_canon(e->cfg, KVS_CFG_STORE_TIMEOUT_MS));
    if (st)
        goto fail;
    if (e->cfg->strict_ownership) {
        st = check_ownership(e);
        if (st)
            goto fail;
    }
    st = kvs__index_create(&e->index);
    if (st)
        goto fail;
    if (e->cfg->local_cpu && e->cfg->max_local_cpu_size > 0) {
        st = kvs__cpu_tier_create(kvs__config_canon(e->cfg, KVS_CFG_MAX_LOCAL_CPU_SIZE), NULL, &e->cpu);
        if (st)
            goto fail;
    }

    e->chunk_payload = kvs__ns_payload_bytes(&e->ns, e->ns.chunk_size);
    uint32_t seg = kvs__segment_bytes(e->chunk_payload);
    uint32_t threads = e->cfg->gds_io_threads;
    /* A block: one system call of the device path's staging, and the unit
     * that pieces are multiples of. */
    e->block_bytes = KVS_MAX((uint64_t)256 * 1024, (uint64_t)seg);
    uint64_t padded = kvs__padded_payload(e->chunk_payload);
    uint64_t piece = KVS_ALIGN_UP((padded + threads - 1) / threads, e->block_bytes);
    e->piece_bytes = KVS_MIN(KVS_MAX(piece, e->block_bytes),
                             KVS_ALIGN_UP((uint64_t)16 << 20, e->block_bytes));
    /* A hand-over to the workers costs a wake-up (tens of microseconds);
     * 4 MiB take a core about 0.3 ms to copy. */
    e->hit_split_bytes = (uint64_t)4 << 20;
    e->negative_ns = kvs__config_canon(e->cfg, KVS_CFG_NEGATIVE_CACHE_MS);
    e->io_timeout_ns = kvs__config_canon(e->cfg, KVS_CFG_IO_TIMEOUT_MS);
    e->store_timeout_ns = kvs__config_canon(e->cfg, KVS_CFG_STORE_TIMEOUT_MS);
    e->access_interval_ns = kvs__config_canon(e->cfg, KVS_CFG_ACCESS_INTERVAL_S);
    e->max_pending_bytes = kvs__config_canon(e->cfg, KVS_CFG_MAX_PENDING_STORE_SIZE);
    if (e->max_pending_bytes < e->chunk_payload)
        e->max_pending_bytes = e->chunk_payload;

    /* The host path's calls are larger: the kernel's cost per call and per
     * page-cache folio falls with their size, and a store's writes, ending
     * on 2 MiB file offsets, leave files in 2 MiB folios that reads copy
     * out fastest (xfer_host.c; measured in docs/design.md). */
    e->host_read_block = KVS_MAX((uint64_t)1 << 20, (uint64_t)seg);
    e->host_write_block = KVS_MAX((uint64_t)2 << 20, (uint64_t)seg);
    /* room for either, after the write path's carry (xfer_host.c) */
    uint64_t bounce = KVS_MAX(e->block_bytes, KVS_MAX(e->host_read_block, e->host_write_block));
    /* Layer order holds every chunk file of a retrieve open at once: at
     * most a quarter of the descriptors the process may open, and 512. */
    struct rlimit nofile;
    int64_t files = 512;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        (int64_t)(nofile.rlim_cur / 4) < files)
        files = (int64_t)(nofile.rlim_cur / 4);
    atomic_store(&e->layer_files_left, files);
    st = kvs__pool_create(threads, threads, bounce + KVS_PAYLOAD_OFFSET, e->io_timeout_ns,
                          &e->pool);
    if (st)
        goto fail;
    st = kvs__collector_start(e->cfg, &e->collector);
    if (st) {
        kvs__pool_destroy(e->pool, 0);
        goto fail;
    }
    e->stats.direct_io = __atomic_load_n(&e->store.direct, __ATOMIC_RELAXED);
    kvs__log(KVS_LOG_INFO,
             "engine open: store %s%s%s, namespace %s, data path posix (O_DIRECT %s), %u I/O "
             "threads, %llu-byte chunks, CPU tier %s, checksums xxh3/%s%s%s",
             e->store.root[0], e->store.npaths > 1 ? " (+more)" : "",
             e->cfg->weka_path ? "" : " (weka_path unset: the local default folder, shared "
                                     "with no other machine)",
             e->ns.dir,
             e->store.direct_reason, threads, (unsigned long long)e->chunk_payload,
             e->cpu ? "on" : "off", kvs__checksum_impl(),
             e->auth_key ? ", chunks authenticated (HMAC-SHA256, auth_key_file)" : "",
             e->cfg->strict_ownership ? ", strict_ownership on" : "");
    *engine_out = e;
    return KVS_OK;
fail:
    engine_free(e); /* one teardown list: what was not made yet is NULL */
    return st;
}

void kvs_engine_close(kvs_engine *e)
{
    if (!e)
        return;
    atomic_store(&e->closing, true);
    kvs__collector_stop(e->collector);
    e->collector = NULL;
    uint64_t deadline = kvs__now_ns() + e->store_timeout_ns;
    pthread_mutex_lock(&e->mu);
    while (atomic_load(&e->pending_chunks) > 0 && kvs__now_ns() < deadline) {
        kvs__cond_wait_until(&e->idle_cv, &e->mu, deadline);
    }
    uint64_t left = atomic_load(&e->pending_chunks);
    pthread_mutex_unlock(&e->mu);
    if (left)
        kvs__log(KVS_LOG_WARN, "closing with %llu chunk stores unfinished after %u ms; they are "
                               "abandoned (their temporary files are collected later)",
                 (unsigned long long)left, e->cfg->store_timeout_ms);
    kvs__pool_destroy(e->pool, left ? 1000000000ull : e->store_timeout_ns);
    e->pool = NULL;
    engine_unref(e);
}

const char *kvs_engine_namespace_id(const kvs_engine *e)
{
    return e ? e->ns.dir : "";
}

const char *kvs_engine_namespace_path(const kvs_engine *e)
{
    return e ? e->store.ns_path[0] : "";
}

uint32_t kvs_engine_chunk_size(const kvs_engine *e)
{
    return e ? e->ns.chunk_size : 0;
}

uint64_t kvs_engine_chunk_bytes(const kvs_engine *e)
{
    return e ? e->chunk_payload : 0;
}
