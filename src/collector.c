/*
 * collector.c - the background collector of an engine (collector.h and
 * docs/capacity.md): a thread that decides when the store needs a
 * collection and runs one (collect.c) while it holds the leases.
 *
 * Only one collector works at a time on a store path: the one holding its
 * lease (lease.c); a collection over several paths holds all their leases.
 * The result of each pass is written to <root>/.kvstash/usage.json, so every
 * instance knows the store's size without scanning it, and a new engine
 * needs no scan at all to start.  Between passes an instance estimates the
 * store's growth from the filesystem's own usage (statvfs): when that
 * estimate crosses the high watermark, or a write fails with ENOSPC, or
 * free space falls below the floor, a collection starts at once; otherwise
 * the store is re-measured every collect_interval_s, at a quarter of one
 * core's time at most.
 */
#include "collector.h"

#include "io_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 200000000ull          /* the background thread looks every 200 ms */
#define MIN_GAP_NS 250000000ull       /* between passes started by growth */
/* How long a filesystem may take to show the space of removed files as free
 * (ext4 and XFS release it at the journal commit, every 5 s by default). */
#define FREE_LAG_NS 5000000000ull

/* ---- the background collector --------------------------------------------- */

struct kvs_collector {
    kvs_config *cfg;                         /* own copy */
    uint32_t nroots;
    const char *roots[KVS_MAX_STORE_PATHS];  /* in store-id order */
    uint32_t map[KVS_MAX_STORE_PATHS];       /* engine path index -> roots index */
    kvs_lease leases[KVS_MAX_STORE_PATHS];
    uint64_t cap, floor;                     /* bytes (of base) */
    kvs_collect_params base;                 /* the configured collection
                                                (kvs__collect_params_init) */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                               /* under mu */
    uint32_t kicks;                          /* under mu: roots with ENOSPC */
    /* Stopping with urgent work (ENOSPC, below the floor, at the cap): the
     * engine asks for one more round first (drain), the thread says when a
     * round that began after the request ended (drained); under mu. */
    bool drain, drain_seen, drained;
    bool exited;                             /* under mu: the thread is done */
    char outcome[320];                       /* under mu: the last round's result */
    uint64_t round_evicted;                  /* under mu: chunks that round evicted */
    /* After a collection for ENOSPC on a path (thread only): until the
     * filesystem shows the space it freed, or FREE_LAG_NS passed, further
     * ENOSPC there is the same shortage, not a new one. */
    uint64_t quiet_until[KVS_MAX_STORE_PATHS];      /* monotonic ns */
    uint64_t quiet_used_start[KVS_MAX_STORE_PATHS]; /* fs usage when it began */
    uint64_t quiet_freed[KVS_MAX_STORE_PATHS];      /* what it removed */
    uint64_t quiet_low[KVS_MAX_STORE_PATHS];        /* least fs usage seen since */
    _Atomic int refs;                        /* the engine + the thread */

    /* what the last look found (thread only) */
    kvs_usage_record rec[KVS_MAX_STORE_PATHS];
    bool have_rec[KVS_MAX_STORE_PATHS];
    struct timespec rec_mtime[KVS_MAX_STORE_PATHS];
    /* When that pass ended, by our monotonic clock: the record's wall time
     * is another host's clock, so it only ever makes the pass look older
     * than when we first saw its record, never newer (a host whose clock is
     * ahead must not stop collection for as long as it is ahead). */
    uint64_t rec_end_mono[KVS_MAX_STORE_PATHS];
    ino_t rec_ino[KVS_MAX_STORE_PATHS];
    uint64_t fs_low[KVS_MAX_STORE_PATHS];    /* least fs usage seen since rec */
    int floor_logged;
    int fail_logged;
    bool urgent_at_start;                    /* look() found urgent work at start */

    atomic_bool refuse;                      /* free space below the floor */
    _Atomic uint64_t evictions, evicted_bytes, orphans_removed, collections, used_bytes;
};

static void collector_unref(kvs_collector *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    kvs__leases_release(c->leases, c->nroots);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    kvs_config_free(c->cfg);
    kvs__free(c);
}

/* Waits up to ns or until stopped or kicked; true when stopped. */
static bool collector_wait(kvs_collector *c, uint64_t ns, bool wake_on_kick)
{
    uint64_t deadline = kvs__now_ns() + ns;
    pthread_mutex_lock(&c->mu);
    while (!c->stop && !(wake_on_kick && (c->kicks || c->drain))) {
        if (kvs__cond_wait_until(&c->cv, &c->mu, deadline) != 0)
            break;
    }
    bool stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

/* Between folders of a background pass: rest so the pass takes at most a
 * quarter of a core; a kick makes the rest of the pass urgent. */
static int collector_tick(void *ctx, bool *urgent)
{
    kvs_collector *c = ctx;
    pthread_mutex_lock(&c->mu);
    bool stop = c->stop;
    if (c->kicks || c->drain)
        *urgent = true;
    if (c->drain && !c->drain_seen) { /* responsive: worth waiting for */
        c->drain_seen = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    if (stop)
        return 1;
    if (*urgent)
        return 0;
    return collector_wait(c, KVS_PACE_SLICE_NS * KVS_PACE_REST_FACTOR, true);
}

typedef enum due { DUE_NO = 0, DUE_BACKGROUND, DUE_URGENT } due;

/* Reads usage.json of each path when it changed and asks the filesystems
 * how full they are; decides whether a collection is due. */
static due look(kvs_collector *c, uint32_t kicks, const char **why)
{
    const kvs_config *cfg = c->cfg;
    kvs_fs_info fs[KVS_MAX_STORE_PATHS];
    uint64_t now_wall = kvs__wall_ns(), now = kvs__now_ns();
    bool have_all = true, starved = false, refuse = false, evicted_last = false;
    uint64_t last_end = UINT64_MAX, last_dur = 0, used = 0;
    for (uint32_t i = 0; i < c->nroots; i++) {
        kvs__fs_query(c->roots[i], &fs[i]);
        c->quiet_low[i] = KVS_MIN(c->quiet_low[i], fs[i].used);
        struct stat st;
        if (kvs__usage_stat(c->roots[i], &st) == 0) {
            if (!c->have_rec[i] || st.st_ino != c->rec_ino[i] ||
                st.st_mtim.tv_sec != c->rec_mtime[i].tv_sec ||
                st.st_mtim.tv_nsec != c->rec_mtime[i].tv_nsec) {
                c->have_rec[i] = kvs__usage_read(c->roots[i], &c->rec[i]) == 0;
                uint64_t age = now_wall > c->rec[i].pass_end_wall_ns
                                   ? now_wall - c->rec[i].pass_end_wall_ns
                                   : 0;
                c->rec_end_mono[i] = now - KVS_MIN(age, now);
                c->rec_ino[i] = st.st_ino;
                c->rec_mtime[i] = st.st_mtim;
                c->fs_low[i] = c->rec[i].fs_used_baseline;
            }
        } else {
            c->have_rec[i] = false;
        }
        if (!c->have_rec[i]) {
            have_all = false;
            continue;
        }
        used += c->rec[i].used_bytes;
        last_end = KVS_MIN(last_end, c->rec_end_mono[i]);
        last_dur = KVS_MAX(last_dur, c->rec[i].pass_ns);
        starved |= c->rec[i].starved != 0;
        evicted_last |= c->rec[i].evicted_files != 0;
    }
    /* Growth since the last pass, once per filesystem. */
    uint64_t est = used;
    for (uint32_t i = 0; i < c->nroots; i++) {
        bool first = true;
        for (uint32_t j = 0; j < i; j++)
            if (fs[j].size && fs[j].id == fs[i].id && fs[j].size == fs[i].size)
                first = false;
        if (c->have_rec[i] && fs[i].size) {
            c->fs_low[i] = KVS_MIN(c->fs_low[i], fs[i].used);
            if (first && fs[i].used > c->fs_low[i])
                est += fs[i].used - c->fs_low[i];
        }
        if (c->floor && fs[i].size) {
            uint64_t floor = KVS_MIN(c->floor, fs[i].size / 2);
            if (floor < c->floor)
                kvs__log_once(&c->floor_logged, KVS_LOG_WARN,
                              "min_free_space (%.3f GB) is more than half of the filesystem of "
                              "%s (%.3f GB); keeping half of it free instead",
                              (double)c->floor / 1e9, c->roots[i], (double)fs[i].size / 1e9);
            refuse |= fs[i].free < floor || fs[i].ifree < kvs__inode_floor(&fs[i], floor);
        }
    }
    /* At the cap itself the collector is not keeping up: stop adding until
     * it makes room, so the store overshoots by what is in flight only. */
    if (c->cap && est > c->cap) {
        if (!atomic_load(&c->refuse))
            kvs__log(KVS_LOG_DEBUG, "collector: the store (about %.3f GB) is at max_store_size; "
                                    "refusing new chunks until it is collected",
                     (double)est / 1e9);
        refuse = true;
    }
    atomic_store(&c->refuse, refuse);
    /* store_used_bytes: the last measurement plus what the filesystem grew
     * since, the figure the cap is enforced on (a measurement alone can be
     * far behind: taken before a short-lived writer stored gigabytes). */
    if (have_all)
        atomic_store(&c->used_bytes, est);
    uint64_t interval = kvs__config_canon(cfg, KVS_CFG_COLLECT_INTERVAL_S);
    /* Collect at most a third of the time, even when something (another
     * tenant of the filesystem) keeps the estimate above the watermark. */
    bool recent = have_all && now < last_end + KVS_MAX(MIN_GAP_NS, 2 * last_dur);
    if (kicks) {
        *why = "a write failed for lack of space";
        return DUE_URGENT;
    }
    if (c->cap && (double)est > cfg->store_high_watermark * (double)c->cap && !recent) {
        *why = "the store grew past the high watermark";
        return DUE_URGENT;
    }
    bool settling = have_all && evicted_last &&
                    now < last_end + KVS_MAX(FREE_LAG_NS, 2 * last_dur);
    if (refuse && !settling && !(starved && now < last_end + interval)) {
        *why = "free space is below min_free_space";
        return DUE_URGENT;
    }
    if (!have_all || now >= last_end + interval) {
        *why = "periodic measurement";
        return DUE_BACKGROUND;
    }
    if (!recent && !settling && est - used > KVS_MAX(used / 8, KVS_STALE_MIN_BYTES)) {
        *why = "the store grew by an eighth since it was measured";
        return DUE_BACKGROUND;
    }
    return DUE_NO;
}

static void *collector_main(void *arg)
{
    kvs_collector *c = arg;
    /* Named, for top -H and for tests that fault the engine's own calls. */
    pthread_setname_np(pthread_self(), "kvs-collector");
    /* A little jitter so that instances started together do not all look
     * at the same moment. */
    uint64_t jitter = 0;
    kvs__io()->getrandom(&jitter, sizeof jitter);
    /* The lease file is made now, while there is room: taking it later
     * needs no inode or block, so a full filesystem can still be collected. */
    for (uint32_t i = 0; i < c->nroots; i++)
        kvs__lease_prepare(&c->leases[i]);
    /* Urgent work found at start (below the floor, at the cap) is not
     * postponed: a short-lived process may not be there later. */
    bool stopped = c->urgent_at_start ? false
                                      : collector_wait(c, TICK_NS / 2 + jitter % TICK_NS, false);
    while (!stopped) {
        pthread_mutex_lock(&c->mu);
        uint32_t kicks = c->kicks;
        bool drain_req = c->drain;
        if (drain_req) {
            c->drain_seen = true;
            pthread_cond_broadcast(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
        char outcome[sizeof c->outcome] = "";
        uint64_t evicted_now = 0;
        /* Right after a collection made room on a path, writes can still
         * fail for a few seconds: ext4 and XFS release the blocks of removed
         * files at their next journal commit.  Those failures are not a new
         * shortage and must not evict again. */
        for (uint32_t i = 0; i < c->nroots; i++) {
            if (!(kicks & (1u << i)) || kvs__now_ns() >= c->quiet_until[i])
                continue;
            kvs_fs_info now;
            kvs__fs_query(c->roots[i], &now);
            c->quiet_low[i] = KVS_MIN(c->quiet_low[i], now.used);
            if (c->quiet_low[i] + c->quiet_freed[i] / 2 > c->quiet_used_start[i]) {
                kicks &= ~(1u << i);
                pthread_mutex_lock(&c->mu);
                c->kicks &= ~(1u << i);
                pthread_mutex_unlock(&c->mu);
            } else {
                c->quiet_until[i] = 0; /* the space showed up and was used */
            }
        }
        const char *why = NULL;
        due d = look(c, kicks, &why);
        kvs_status lst = d != DUE_NO ? kvs__leases_try(c->leases, c->nroots) : KVS_ERR_BUSY;
        if (d != DUE_NO && lst != KVS_OK) {
            if (lst == KVS_ERR_BUSY)
                snprintf(outcome, sizeof outcome,
                         "another instance holds the collector lease (%s); it collects",
                         c->leases[0].holder);
            else
                snprintf(outcome, sizeof outcome, "cannot take the collector lease: %s",
                         kvs_last_error());
            if (lst != KVS_ERR_BUSY)
                kvs__log_once(&c->fail_logged, KVS_LOG_WARN, "collector: %s", outcome);
        }
        if (d != DUE_NO && lst == KVS_OK) {
            pthread_mutex_lock(&c->mu);
            kicks = c->kicks;
            c->kicks = 0;
            pthread_mutex_unlock(&c->mu);
            kvs_collect_params p = c->base;
            p.nospace_mask = kicks;
            p.record = true;
            p.tick = collector_tick;
            p.tick_ctx = c;
            p.urgent = d == DUE_URGENT || kicks;
            kvs_collect_result r;
            kvs_status st = kvs__collect(&p, &r);
            kvs__leases_release(c->leases, c->nroots);
            for (uint32_t i = 0; i < c->nroots; i++) {
                if (kicks & (1u << i)) {
                    c->quiet_until[i] = kvs__now_ns() + FREE_LAG_NS;
                    c->quiet_used_start[i] = r.fs_used_start[i];
                    c->quiet_freed[i] = r.freed_path[i];
                    c->quiet_low[i] = r.fs_used_low[i];
                }
            }
            evicted_now = st ? 0 : r.evicted_files;
            if (st)
                snprintf(outcome, sizeof outcome, "collection failed: %s", kvs_last_error());
            else
                snprintf(outcome, sizeof outcome,
                         "evicted %" PRIu64 " chunks (%.3f GB)%s; the store holds %.3f GB",
                         r.evicted_files, (double)r.evicted_bytes / 1e9,
                         r.starved ? ", and nothing more of the store is left to evict" : "",
                         (double)r.used_after / 1e9);
            if (st) {
                kvs__log_once(&c->fail_logged, KVS_LOG_WARN, "collector: %s", kvs_last_error());
            } else if (!r.lease_lost && r.passes) {
                atomic_fetch_add(&c->collections, 1);
                atomic_fetch_add(&c->evictions, r.evicted_files);
                atomic_fetch_add(&c->evicted_bytes, r.evicted_bytes);
                atomic_fetch_add(&c->orphans_removed, r.orphans_removed);
                atomic_store(&c->used_bytes, r.used_after);
                kvs__log(r.evicted_files ? KVS_LOG_INFO : KVS_LOG_DEBUG,
                         "collector (%s): the store held %.3f GB in %" PRIu64
                         " chunks; evicted %" PRIu64 " chunks (%.3f GB), removed %" PRIu64
                         " orphaned temporary files; now %.3f GB; %.3f s",
                         why, (double)r.used_before / 1e9, r.chunks_before, r.evicted_files,
                         (double)r.evicted_bytes / 1e9, r.orphans_removed,
                         (double)r.used_after / 1e9, (double)(r.scan_ns + r.evict_ns) / 1e9);
            }
        } else if (d != DUE_NO && kicks) {
            /* Another instance is collecting: its pass will make room. */
            pthread_mutex_lock(&c->mu);
            c->kicks = 0;
            pthread_mutex_unlock(&c->mu);
        }
        pthread_mutex_lock(&c->mu);
        if (outcome[0]) {
            memcpy(c->outcome, outcome, sizeof outcome);
            c->round_evicted = evicted_now;
        }
        if (drain_req) {
            c->drain = false;
            c->drained = true;
            pthread_cond_broadcast(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
        stopped = collector_wait(c, TICK_NS, true);
    }
    pthread_mutex_lock(&c->mu);
    c->exited = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    collector_unref(c);
    return NULL;
}

kvs_status kvs__collector_start(const kvs_config *cfg, kvs_collector **out)
{
    kvs_collector *c = kvs__calloc(1, sizeof *c);
    if (!c)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting the collector");
    kvs_status st = kvs_config_copy(cfg, &c->cfg);
    if (st) {
        kvs__free(c);
        return st;
    }
    c->nroots = c->cfg->num_store_paths;
    kvs__collect_params_init(&c->base, c->cfg, "engine", c->roots, c->leases, c->map);
    c->cap = c->base.cap_bytes;
    c->floor = c->base.floor_bytes;
    pthread_mutex_init(&c->mu, NULL);
    kvs__cond_init(&c->cv);
    /* One look now, before the thread exists: stores are refused from the
     * first one when the filesystem is below the floor or the store at its
     * cap (a short-lived `kvstash store` would otherwise fill it before the
     * collector's first tick), and urgent work starts without the jitter. */
    const char *why = NULL;
    c->urgent_at_start = look(c, 0, &why) == DUE_URGENT;
    atomic_init(&c->refs, 2);
    if (pthread_create(&c->thread, NULL, collector_main, c) != 0) {
        atomic_store(&c->refs, 1);
        collector_unref(c);
        return kvs__fail(KVS_ERR_NOMEM, "cannot start the collector thread");
    }
    *out = c;
    return KVS_OK;
}

#define DRAIN_NS (10ull * 1000000000u)
#define DRAIN_START_NS (2000000000u)

void kvs__collector_stop(kvs_collector *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    /* A process that exits right after its writes failed for lack of space,
     * or while below the floor or at the cap (a `kvstash store` on a nearly
     * full filesystem), lets its collector make room first, for at most
     * DRAIN_NS, and says what came of it. */
    bool pending = c->kicks || atomic_load(&c->refuse);
    if (pending) {
        c->drain = true;
        c->drain_seen = c->drained = false;
        pthread_cond_broadcast(&c->cv);
        /* A thread that shows no sign of life within 2 s is stuck
         * in a filesystem call (a hung mount): no waiting on it. */
        uint64_t t0 = kvs__now_ns();
        while (!c->drained && !c->drain_seen &&
               kvs__cond_wait_until(&c->cv, &c->mu, t0 + DRAIN_START_NS) == 0) {
        }
        while (c->drain_seen && !c->drained &&
               kvs__cond_wait_until(&c->cv, &c->mu, t0 + DRAIN_NS) == 0) {
        }
        bool still = atomic_load(&c->refuse) && !c->round_evicted;
        if (still || !c->drained)
            kvs__log(KVS_LOG_WARN,
                     "collector: closing while %s on %s%s: %s%s",
                     c->kicks ? "writes fail for lack of space" : "the store is at its limits",
                     c->roots[0], c->nroots > 1 ? " and its other paths" : "",
                     c->drained ? (c->outcome[0] ? c->outcome : "nothing collected")
                                : "the collection did not finish in 10 s",
                     still ? "; stores stay refused until an instance or `kvstash gc` makes "
                             "room (see min_free_space and max_store_size)"
                           : "");
        else if (c->outcome[0])
            kvs__log(KVS_LOG_INFO, "collector: before closing: %s", c->outcome);
    }
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    /* A pass notices between folders; a filesystem call that hangs keeps
     * the thread, which then cleans up after itself. */
    /* The bounded join, on the monotonic clock: the thread says it is done
     * under mu (pthread_timedjoin_np waits on the wall clock, and
     * ThreadSanitizer does not know pthread_clockjoin_np). */
    uint64_t deadline = kvs__now_ns() + 2000000000u;
    pthread_mutex_lock(&c->mu);
    while (!c->exited && kvs__cond_wait_until(&c->cv, &c->mu, deadline) == 0) {
    }
    bool exited = c->exited;
    pthread_mutex_unlock(&c->mu);
    if (exited)
        pthread_join(c->thread, NULL); /* it only has to return */
    else
        pthread_detach(c->thread);
    collector_unref(c);
}

void kvs__collector_kick(kvs_collector *c, uint32_t root)
{
    if (!c || root >= c->nroots)
        return;
    pthread_mutex_lock(&c->mu);
    c->kicks |= 1u << c->map[root];
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

bool kvs__collector_refuse_stores(kvs_collector *c)
{
    return c && atomic_load_explicit(&c->refuse, memory_order_relaxed);
}

void kvs__collector_stats(kvs_collector *c, kvs_stats *s)
{
    if (!c)
        return;
    s->evictions = atomic_load(&c->evictions);
    s->evicted_bytes = atomic_load(&c->evicted_bytes);
    s->orphans_removed = atomic_load(&c->orphans_removed);
    s->collections = atomic_load(&c->collections);
    s->store_used_bytes = atomic_load(&c->used_bytes);
}
