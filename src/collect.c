/*
 * collect.c - one collection of the shared store (collect.h and
 * docs/capacity.md), and the store's last measurement (usage.json).
 *
 * A collection is a pass over every file of every store path: it adds up
 * the bytes of chunk files and live temporary files, removes temporary
 * files older than tmp_grace_s (writers that crashed), and keeps the oldest
 * chunks by last access in a bounded max-heap per path.  When a limit is
 * exceeded it then evicts from those heaps, oldest first: exact LRU among
 * the candidates, with memory bounded however many files there are (a
 * pass that runs out of candidates before reaching its target simply makes
 * another pass).  Before removing a candidate it looks at it once more and
 * keeps it if a reader touched it since the scan.
 *
 * Readers record access cheaply: an engine sets a chunk's atime at most once
 * per access_interval_s (engine.c); the collector reads max(atime, mtime).
 * No lock is taken on the data path: removing a file under a reader is a
 * miss for that reader (an open descriptor keeps reading the old bytes on
 * POSIX; a later open gets ENOENT, counted as miss_vanished).
 *
 * The caller holds the lease of every store path (lease.c; the order in
 * which every instance takes them is kvs__roots_order's).  The result of a
 * full pass is written to <root>/.kvstash/usage.json, so every instance
 * knows the store's size without scanning it.  kvs__collect_params_init
 * builds a collection from the configuration for both callers, the
 * engines' background collector (collector.c) and kvstash gc (admin.c).
 */
#include "collect.h"

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

#define DEFAULT_MAX_CANDIDATES (1u << 18)
#define EVICT_BATCH 4096
#define MAX_PASSES 64
#define LOG_ROTATE_BYTES (1u << 20)
#define USAGE_FILE "usage.json"
#define LOG_FILE "collector.log"

/* ---- usage.json ------------------------------------------------------------ */

/* <root>/.kvstash, reached without following a symlink below the root;
 * -errno. */
static int meta_dir(const char *root, bool create, uint32_t file_mode)
{
    int rfd = kvs__root_open(root);
    if (rfd < 0)
        return rfd;
    int dfd = kvs__meta_dir_open(rfd, create, file_mode ? file_mode : 0644);
    kvs__io()->close(rfd);
    return dfd;
}

int kvs__usage_stat(const char *root, struct stat *st)
{
    int dfd = meta_dir(root, false, 0);
    if (dfd < 0)
        return dfd;
    int rc = kvs__io()->fstatat(dfd, USAGE_FILE, st) == 0 ? 0 : -errno;
    kvs__io()->close(dfd);
    return rc;
}

int kvs__usage_write(const char *root, const kvs_usage_record *u, uint32_t file_mode)
{
    kvs_buf b = {0};
    kvs_buf_printf(&b,
                   "{\"version\": 1, \"used_bytes\": %" PRIu64 ", \"chunks\": %" PRIu64
                   ", \"temp_files\": %" PRIu64 ", \"namespaces\": %" PRIu64
                   ", \"fs_used_baseline\": %" PRIu64 ", \"pass_end_wall_ns\": %" PRIu64
                   ", \"pass_ns\": %" PRIu64 ", \"evicted_files\": %" PRIu64
                   ", \"evicted_bytes\": %" PRIu64 ", \"orphans_removed\": %" PRIu64
                   ", \"starved\": %" PRIu64 ", \"pid\": %" PRIu64 ", \"host\": ",
                   u->used_bytes, u->chunks, u->temp_files, u->namespaces, u->fs_used_baseline,
                   u->pass_end_wall_ns, u->pass_ns, u->evicted_files, u->evicted_bytes,
                   u->orphans_removed, u->starved, u->pid);
    kvs_buf_json_string(&b, u->host);
    kvs_buf_printf(&b, "}\n");
    if (b.failed) {
        kvs_buf_reset(&b);
        return -ENOMEM;
    }
    int dfd = meta_dir(root, true, file_mode);
    int rc = dfd < 0 ? dfd
                     : kvs__meta_write(dfd, USAGE_FILE, b.data, b.len, file_mode ? file_mode : 0644,
                                       0);
    if (dfd >= 0)
        kvs__io()->close(dfd);
    kvs_buf_reset(&b);
    return rc;
}

static uint64_t json_u64(const char *text, const char *key, bool *found)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    if (!p)
        return 0;
    *found = true;
    return strtoull(p + strlen(pat), NULL, 10);
}


uint64_t kvs__usage_growth(const kvs_usage_record *r, uint64_t fs_used_now)
{
    return fs_used_now > r->fs_used_baseline ? fs_used_now - r->fs_used_baseline : 0;
}

bool kvs__usage_stale(const kvs_usage_record *r, uint64_t fs_used_now)
{
    uint64_t moved = fs_used_now > r->fs_used_baseline ? fs_used_now - r->fs_used_baseline
                                                       : r->fs_used_baseline - fs_used_now;
    return r->fs_used_baseline && moved > KVS_MAX(r->used_bytes / 8, KVS_STALE_MIN_BYTES);
}

int kvs__usage_record_measure(const char *root, uint64_t used, uint64_t chunks, uint64_t temps,
                              uint64_t namespaces, uint32_t file_mode)
{
    kvs_usage_record u;
    memset(&u, 0, sizeof u);
    struct statvfs v;
    if (kvs__io()->statvfs(root, &v) == 0)
        u.fs_used_baseline = (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize;
    u.used_bytes = used;
    u.chunks = chunks;
    u.temp_files = temps;
    u.namespaces = namespaces;
    u.pass_end_wall_ns = kvs__wall_ns();
    u.pid = (uint64_t)getpid();
    gethostname(u.host, sizeof u.host - 1);
    return kvs__usage_write(root, &u, file_mode);
}

int kvs__usage_read(const char *root, kvs_usage_record *u)
{
    char text[1024];
    int dfd = meta_dir(root, false, 0);
    if (dfd < 0)
        return dfd;
    int n = kvs__meta_read(dfd, USAGE_FILE, text, sizeof text);
    kvs__io()->close(dfd);
    if (n < 0)
        return n;
    memset(u, 0, sizeof *u);
    bool ok = false;
#define RD_(f) u->f = json_u64(text, #f, &ok);
    RD_(used_bytes) RD_(chunks) RD_(temp_files) RD_(namespaces) RD_(fs_used_baseline)
    RD_(pass_end_wall_ns) RD_(pass_ns) RD_(evicted_files) RD_(evicted_bytes)
    RD_(orphans_removed) RD_(starved) RD_(pid)
#undef RD_
    const char *h = strstr(text, "\"host\": \"");
    if (h) {
        h += 9;
        size_t k = strcspn(h, "\"");
        snprintf(u->host, sizeof u->host, "%.*s", (int)KVS_MIN(k, sizeof u->host - 1), h);
    }
    bool have = false;
    json_u64(text, "pass_end_wall_ns", &have);
    return ok && have ? 0 : -EBADMSG;
}

/* ---- one collection ----------------------------------------------------------- */

typedef struct cand {
    int64_t access;        /* wall ns */
    uint64_t dev, ino;     /* the file the scan saw: only that one goes */
    uint64_t bytes;
    uint32_t ns;
    uint8_t key[KVS_KEY_BYTES];
} cand;

/* The oldest `max` chunks seen: a max-heap on access (top = newest kept). */
typedef struct cand_heap {
    cand *v;
    uint32_t n, cap, max;
    bool truncated;        /* a chunk was left out for lack of room */
    uint32_t next;         /* after sorting: the next candidate to evict */
} cand_heap;

static void sift_down(cand *v, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && v[l].access > v[m].access)
            m = l;
        if (r < n && v[r].access > v[m].access)
            m = r;
        if (m == i)
            return;
        cand t = v[i];
        v[i] = v[m];
        v[m] = t;
        i = m;
    }
}

static int heap_push(cand_heap *h, const cand *c)
{
    if (h->n == h->max) {
        h->truncated = true;
        if (h->max == 0 || c->access >= h->v[0].access)
            return 0;
        h->v[0] = *c;
        sift_down(h->v, h->n, 0);
        return 0;
    }
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? KVS_MIN(h->cap * 2, h->max) : KVS_MIN(1024u, h->max);
        cand *v = kvs__realloc(h->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    uint32_t i = h->n++;
    h->v[i] = *c;
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->v[parent].access >= h->v[i].access)
            break;
        cand t = h->v[parent];
        h->v[parent] = h->v[i];
        h->v[i] = t;
        i = parent;
    }
    return 0;
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return x->access < y->access ? -1 : x->access > y->access;
}


uint64_t kvs__inode_floor(const kvs_fs_info *f, uint64_t floor_bytes)
{
    if (!f->files || !f->size)
        return 0;
    return (uint64_t)((double)f->files * (double)floor_bytes / (double)f->size);
}

void kvs__fs_query(const char *root, kvs_fs_info *f)
{
    struct statvfs v;
    memset(f, 0, sizeof *f);
    if (kvs__io()->statvfs(root, &v) != 0)
        return;
    f->size = (uint64_t)v.f_blocks * v.f_frsize;
    f->free = (uint64_t)v.f_bavail * v.f_frsize;
    f->used = (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize;
    f->id = (uint64_t)v.f_fsid;
    f->files = (uint64_t)v.f_files;
    f->ifree = (uint64_t)v.f_favail;
}

typedef struct run {
    const kvs_collect_params *p;
    kvs_collect_result *r;
    kvs_walk w;
    cand_heap heap[KVS_MAX_STORE_PATHS];
    uint64_t used[KVS_MAX_STORE_PATHS];      /* this pass */
    uint64_t chunks[KVS_MAX_STORE_PATHS];
    uint64_t temps[KVS_MAX_STORE_PATHS];
    uint64_t freed[KVS_MAX_STORE_PATHS];     /* this pass */
    uint64_t freed_files[KVS_MAX_STORE_PATHS];
    int64_t now_wall;
    int64_t age_cutoff;                      /* evict chunks accessed before; 0: none */
    uint64_t slice_start;
    bool urgent;
    bool stop;
    bool nomem;
    int unlink_logged;
    struct victim *batch;                    /* EVICT_BATCH entries */
    int rootfd[KVS_MAX_STORE_PATHS];         /* store paths, resolved once */
} run;

static bool leases_ok(run *x)
{
    const kvs_collect_params *p = x->p;
    if (!p->leases)
        return true;
    for (uint32_t i = 0; i < p->nroots; i++) {
        if (kvs__lease_keep(&p->leases[i]) != KVS_OK) {
            x->r->lease_lost = true;
            x->stop = true;
            return false;
        }
    }
    return true;
}

/* Removes one chunk if it is still the one seen by the scan; true if the
 * collection may go on. */
static bool evict(run *x, uint32_t root, const char *ns, const uint8_t *key, int64_t access,
                  uint64_t bytes, uint64_t dev, uint64_t ino)
{
    const kvs_collect_params *p = x->p;
    if (x->stop || !leases_ok(x))
        return false;
    if (p->tick && kvs__now_ns() - x->slice_start >= KVS_PACE_SLICE_NS) {
        bool urgent = true; /* evicting is never paced */
        if (p->tick(p->tick_ctx, &urgent)) {
            x->stop = true;
            return false;
        }
        x->slice_start = kvs__now_ns();
    }
    char path[KVS_PATH_MAX], hex[KVS_KEY_HEX], rel[KVS_PATH_MAX];
    kvs__hex(key, KVS_KEY_BYTES, hex);
    char fan[KVS_FANOUT_LEN];
    kvs__fanout(key, fan);
    kvs__pathf(path, "%s/%s/%s/%s", p->roots[root], ns, fan, hex);
    if (!p->dry_run) {
        /* Through the folders' descriptors, no symlink followed, and only
         * the very file the scan saw (a swapped folder or a file published
         * again since is left alone). */
        const kvs_io_ops *io = kvs__io();
        if (x->rootfd[root] < 0)
            return true;
        kvs__pathf(rel, "%s/%s", ns, fan);
        int leaf = io->open_beneath(x->rootfd[root], rel,
                                    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (leaf < 0)
            return true; /* gone, or not the store's any more */
        struct stat st;
        if (io->fstatat(leaf, hex, &st) != 0 || !S_ISREG(st.st_mode) ||
            (uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino) {
            io->close(leaf);
            return true; /* gone already, or another file now */
        }
        if (kvs__access_ns(&st) > access) {
            io->close(leaf);
            x->r->skipped_touched++; /* read since the scan: keep it */
            return true;
        }
        int rc = kvs__unlink_examined(leaf, hex, &st);
        io->close(leaf);
        if (rc != 0) {
            if (rc < 0 && rc != -ENOENT && rc != -ESTALE)
                kvs__log_once(&x->unlink_logged, KVS_LOG_WARN,
                              "collector: cannot remove %s: %s (further failures not logged)",
                              path, strerror(-rc));
            return true;
        }
    }
    x->freed[root] += bytes;
    x->freed_files[root]++;
    x->r->evicted_files++;
    x->r->evicted_bytes += bytes;
    if (p->on_evict)
        p->on_evict(p->on_evict_ctx, path, bytes, access);
    return true;
}

static int on_entry(void *ctx, const kvs_walk_entry *e)
{
    run *x = ctx;
    const kvs_collect_params *p = x->p;
    if (!S_ISREG(e->st.st_mode))
        return 0;
    uint64_t size = (uint64_t)e->st.st_size;
    if (e->kind == KVS_ENTRY_TEMP) {
        int64_t mt = (int64_t)e->st.st_mtim.tv_sec * 1000000000 + e->st.st_mtim.tv_nsec;
        if (x->now_wall - mt > (int64_t)p->tmp_grace_ns) {
            if (p->dry_run || kvs__unlink_examined(e->dirfd, e->name, &e->st) == 0) {
                x->r->orphans_removed++;
                x->r->orphan_bytes += size;
            }
            return 0;
        }
        x->used[e->root] += size;
        x->temps[e->root]++;
        return 0;
    }
    x->used[e->root] += size;
    x->chunks[e->root]++;
    x->r->scanned_files++;
    int64_t access = kvs__access_ns(&e->st);
    if (x->age_cutoff && access < x->age_cutoff) {
        if (!evict(x, e->root, x->w.ns_names[e->ns], e->key, access, size,
                   (uint64_t)e->st.st_dev, (uint64_t)e->st.st_ino))
            return 1;
        return 0;
    }
    cand c = {.access = access, .bytes = size, .ns = e->ns, .dev = e->st.st_dev,
              .ino = e->st.st_ino};
    memcpy(c.key, e->key, KVS_KEY_BYTES);
    if (heap_push(&x->heap[e->root], &c) != 0) {
        x->nomem = true;
        return 1;
    }
    return 0;
}

static int on_dir(void *ctx)
{
    run *x = ctx;
    const kvs_collect_params *p = x->p;
    if (x->stop || !leases_ok(x))
        return 1;
    uint64_t now = kvs__now_ns();
    if (p->tick && now - x->slice_start >= KVS_PACE_SLICE_NS) {
        if (p->tick(p->tick_ctx, &x->urgent)) {
            x->stop = true;
            return 1;
        }
        x->slice_start = kvs__now_ns();
    }
    return 0;
}

typedef struct victim {
    uint32_t root;
    const cand *c;
} victim;

/* Folder order: root, namespace, then the key (its first two bytes name
 * the fan-out folders). */
static int victim_cmp(const void *a, const void *b)
{
    const victim *x = a, *y = b;
    if (x->root != y->root)
        return x->root < y->root ? -1 : 1;
    if (x->c->ns != y->c->ns)
        return x->c->ns < y->c->ns ? -1 : 1;
    return memcmp(x->c->key, y->c->key, KVS_KEY_BYTES);
}

/* Evicts the oldest candidates of the roots in mask until `need` bytes are
 * freed; returns what was freed.  Victims are chosen in LRU order, a batch
 * at a time, then removed in folder order: the same files, with far fewer
 * scattered metadata reads on a filesystem whose cache is cold. */
static uint64_t evict_from(run *x, uint32_t mask, uint64_t need)
{
    const kvs_collect_params *p = x->p;
    uint64_t freed = 0;
    while (freed < need && !x->stop) {
        uint32_t n = 0;
        uint64_t planned = 0;
        while (n < EVICT_BATCH && freed + planned < need) {
            int best = -1;
            for (uint32_t r = 0; r < p->nroots; r++) {
                cand_heap *h = &x->heap[r];
                if (!(mask & (1u << r)) || h->next >= h->n)
                    continue;
                if (best < 0 ||
                    h->v[h->next].access < x->heap[best].v[x->heap[best].next].access)
                    best = (int)r;
            }
            if (best < 0)
                break;
            const cand *c = &x->heap[best].v[x->heap[best].next++];
            x->batch[n++] = (victim){.root = (uint32_t)best, .c = c};
            planned += c->bytes;
        }
        if (n == 0)
            break;
        if (!p->dry_run) /* a dry run lists them oldest first */
            qsort(x->batch, n, sizeof *x->batch, victim_cmp);
        for (uint32_t i = 0; i < n; i++) {
            const victim *v = &x->batch[i];
            uint64_t before = x->freed[v->root];
            if (!evict(x, v->root, x->w.ns_names[v->c->ns], v->c->key, v->c->access,
                       v->c->bytes, v->c->dev, v->c->ino))
                return freed;
            freed += x->freed[v->root] - before;
        }
    }
    return freed;
}

static bool more_candidates(const run *x, uint32_t mask)
{
    for (uint32_t r = 0; r < x->p->nroots; r++)
        if ((mask & (1u << r)) && x->heap[r].truncated)
            return true;
    return false;
}

static void append_log(const kvs_collect_params *p, const kvs_collect_result *r,
                       uint64_t t0_mono, uint64_t t1_mono)
{
    const kvs_io_ops *io = kvs__io();
    char line[768], host[64] = "";
    gethostname(host, sizeof host - 1);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(line, sizeof line,
                     "%s host=%s pid=%d purpose=%s used_before=%" PRIu64 " used_after=%" PRIu64
                     " evicted_files=%" PRIu64 " evicted_bytes=%" PRIu64 " orphans=%" PRIu64
                     " passes=%u seconds=%.3f mono_start=%" PRIu64 " mono_end=%" PRIu64 "%s\n",
                     when, host, (int)getpid(), p->purpose ? p->purpose : "collector",
                     r->used_before, r->used_after, r->evicted_files, r->evicted_bytes,
                     r->orphans_removed, r->passes, (double)(t1_mono - t0_mono) / 1e9, t0_mono,
                     t1_mono, r->starved ? " starved=1" : "");
    /* The first path's log speaks for the collection (the lease of every
     * path is held, so one writer at a time appends). */
    int dfd = meta_dir(p->roots[0], true, p->file_mode);
    if (dfd < 0)
        return;
    struct stat st;
    if (io->fstatat(dfd, LOG_FILE, &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_size > LOG_ROTATE_BYTES)
        io->renameat(dfd, LOG_FILE, LOG_FILE ".1", 0);
    int fd = kvs__meta_open(dfd, LOG_FILE, O_WRONLY | O_CREAT | O_APPEND,
                            p->file_mode ? p->file_mode : 0644);
    if ((fd == -KVS_ENOTREG || fd == -ELOOP) && io->fstatat(dfd, LOG_FILE, &st) == 0 &&
        !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
        /* not a log: move it out of the way (only that entry), start anew */
        kvs__unlink_examined(dfd, LOG_FILE, &st);
        fd = kvs__meta_open(dfd, LOG_FILE, O_WRONLY | O_CREAT | O_APPEND,
                            p->file_mode ? p->file_mode : 0644);
    }
    io->close(dfd);
    if (fd < 0) {
        static int logged;
        kvs__log_once(&logged, KVS_LOG_WARN, "cannot append to %s/" KVS_META_DIR "/" LOG_FILE
                      ": it %s", p->roots[0], kvs__meta_strerror(-fd));
        return;
    }
    if (io->pwrite(fd, line, (size_t)n, 0) < 0) {
        /* informative only */
    }
    io->close(fd);
}

void kvs__collect_params_init(kvs_collect_params *p, const kvs_config *cfg,
                              const char *purpose, const char **roots, kvs_lease *leases,
                              uint32_t *map)
{
    uint32_t n = cfg->num_store_paths, order[KVS_MAX_STORE_PATHS];
    kvs__roots_order(cfg->store_paths, n, order);
    for (uint32_t i = 0; i < n; i++) {
        roots[i] = cfg->store_paths[order[i]];
        if (map)
            map[order[i]] = i;
        kvs__lease_init(&leases[i], roots[i], cfg->lease_ttl_s, purpose);
        leases[i].file_mode = cfg->file_mode;
    }
    *p = (kvs_collect_params){
        .roots = roots, .nroots = n, .leases = leases,
        .cap_bytes = kvs__config_canon(cfg, KVS_CFG_MAX_STORE_SIZE),
        .high = cfg->store_high_watermark, .low = cfg->store_low_watermark,
        .floor_bytes = kvs__config_canon(cfg, KVS_CFG_MIN_FREE_SPACE),
        .target_bytes = KVS_NO_TARGET,
        .tmp_grace_ns = kvs__config_canon(cfg, KVS_CFG_TMP_GRACE_S),
        .purpose = purpose, .file_mode = cfg->file_mode,
    };
}

kvs_status kvs__collect(const kvs_collect_params *p, kvs_collect_result *r)
{
    if (!p->nroots || p->nroots > KVS_MAX_STORE_PATHS)
        return kvs__fail(KVS_ERR_INVALID, "kvs__collect: %u store paths", p->nroots);
    memset(r, 0, sizeof *r);
    run *x = kvs__calloc(1, sizeof *x);
    if (!x)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting a collection");
    x->p = p;
    x->r = r;
    x->urgent = p->urgent;
    x->batch = kvs__malloc(EVICT_BATCH * sizeof *x->batch);
    if (!x->batch) {
        kvs__free(x);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting a collection");
    }
    for (uint32_t i = 0; i < KVS_MAX_STORE_PATHS; i++)
        x->rootfd[i] = i < p->nroots ? kvs__root_open(p->roots[i]) : -1;
    uint32_t all = (1u << p->nroots) - 1;
    uint32_t max_cand = p->max_candidates ? p->max_candidates : DEFAULT_MAX_CANDIDATES;
    uint64_t t0 = kvs__now_ns();
    kvs_fs_info fs0[KVS_MAX_STORE_PATHS];
    uint32_t group[KVS_MAX_STORE_PATHS]; /* first root on the same filesystem */
    for (uint32_t i = 0; i < p->nroots; i++) {
        kvs__fs_query(p->roots[i], &fs0[i]);
        group[i] = i;
        for (uint32_t j = 0; j < i; j++) {
            if (fs0[j].size && fs0[j].id == fs0[i].id && fs0[j].size == fs0[i].size) {
                group[i] = group[j];
                break;
            }
        }
    }
    uint64_t nospace_goal[KVS_MAX_STORE_PATHS] = {0};
    kvs_status st = KVS_OK;
    uint64_t total_freed[KVS_MAX_STORE_PATHS] = {0};
    uint64_t total_freed_files[KVS_MAX_STORE_PATHS] = {0};
    bool again = true;
    while (again && r->passes < MAX_PASSES) {
        again = false;
        r->passes++;
        kvs__walk_clear(&x->w);
        for (uint32_t i = 0; i < p->nroots; i++) {
            x->heap[i].n = x->heap[i].next = 0;
            x->heap[i].truncated = false;
            x->heap[i].max = KVS_MAX(max_cand / p->nroots, 1024u);
            x->used[i] = x->chunks[i] = x->temps[i] = x->freed[i] = x->freed_files[i] = 0;
        }
        x->now_wall = (int64_t)kvs__wall_ns();
        x->age_cutoff = p->older_than_ns ? x->now_wall - (int64_t)p->older_than_ns : 0;
        x->slice_start = kvs__now_ns();
        x->w = (kvs_walk){.roots = p->roots, .nroots = p->nroots, .only_ns = p->only_ns,
                          .stat_files = true, .on_entry = on_entry, .on_dir = on_dir, .ctx = x};
        uint64_t ts = kvs__now_ns();
        st = kvs__walk(&x->w);
        r->scan_ns += kvs__now_ns() - ts;
        if (!st && x->nomem)
            st = kvs__fail(KVS_ERR_NOMEM, "out of memory keeping eviction candidates");
        if (st || x->stop)
            break;
        uint64_t total = 0;
        for (uint32_t i = 0; i < p->nroots; i++) {
            total += x->used[i];
            if (x->heap[i].n) /* v is NULL when nothing was kept: qsort(NULL) is UB */
                qsort(x->heap[i].v, x->heap[i].n, sizeof(cand), cand_cmp);
        }
        if (r->passes == 1) {
            r->used_before = total;
            for (uint32_t i = 0; i < p->nroots; i++) {
                r->chunks_before += x->chunks[i];
                if (p->nospace_mask & (1u << i) && p->high > 0)
                    nospace_goal[i] = (uint64_t)((double)x->used[i] * p->low / p->high);
            }
        }
        /* Each path whose write hit ENOSPC: down to low/high of its size. */
        ts = kvs__now_ns();
        bool missed = false;
        for (uint32_t i = 0; i < p->nroots && !x->stop; i++) {
            if (!(p->nospace_mask & (1u << i)) || x->used[i] <= nospace_goal[i] + x->freed[i])
                continue;
            uint64_t need = x->used[i] - x->freed[i] - nospace_goal[i];
            if (evict_from(x, 1u << i, need) < need) {
                if (more_candidates(x, 1u << i))
                    again = true;
                else
                    missed = true;
            }
        }
        /* Each filesystem below the floor: back above it, with the same
         * margin as the watermarks'. */
        for (uint32_t g = 0; g < p->nroots && p->floor_bytes && !x->stop; g++) {
            if (group[g] != g || !fs0[g].size)
                continue;
            uint64_t floor = KVS_MIN(p->floor_bytes, fs0[g].size / 2);
            uint32_t mask = 0;
            uint64_t freed_here = 0, freed_files_here = 0;
            for (uint32_t i = 0; i < p->nroots; i++) {
                if (group[i] == g) {
                    mask |= 1u << i;
                    freed_here += total_freed[i] + x->freed[i];
                    freed_files_here += total_freed_files[i] + x->freed_files[i];
                }
            }
            /* What this collection removed counts as free even before the
             * filesystem shows it (see FREE_LAG_NS). */
            kvs_fs_info now;
            kvs__fs_query(p->roots[g], &now);
            uint64_t free_now = KVS_MAX(now.free, fs0[g].free + freed_here);
            double margin = 1.0 + KVS_MAX(p->high - p->low, 0.05);
            uint64_t need = 0;
            if (free_now < floor)
                need = (uint64_t)((double)floor * margin) - free_now;
            /* Inodes: files to remove, at the average size of a chunk here. */
            uint64_t ifloor = kvs__inode_floor(&now, floor);
            uint64_t ifree_now = KVS_MAX(now.ifree, fs0[g].ifree + freed_files_here);
            if (ifree_now < ifloor) {
                uint64_t bytes = 0, files = 0;
                for (uint32_t i = 0; i < p->nroots; i++) {
                    if (group[i] == g) {
                        bytes += x->used[i];
                        files += x->chunks[i];
                    }
                }
                uint64_t avg = files ? KVS_MAX(bytes / files, (uint64_t)1) : 1;
                uint64_t ineed = (uint64_t)((double)ifloor * margin) - ifree_now;
                need = KVS_MAX(need, ineed * avg);
            }
            if (!need)
                continue;
            if (evict_from(x, mask, need) < need) {
                if (more_candidates(x, mask))
                    again = true;
                else
                    missed = true;
            }
        }
        /* The whole store: an explicit size, else the cap's watermarks. */
        uint64_t freed = 0;
        for (uint32_t i = 0; i < p->nroots; i++)
            freed += x->freed[i];
        uint64_t goal = UINT64_MAX;
        if (p->target_bytes != KVS_NO_TARGET)
            goal = p->target_bytes;
        else if (p->cap_bytes && (double)total > p->high * (double)p->cap_bytes)
            goal = (uint64_t)(p->low * (double)p->cap_bytes);
        else if (p->cap_bytes && r->passes > 1 && (double)total > p->low * (double)p->cap_bytes)
            goal = (uint64_t)(p->low * (double)p->cap_bytes); /* finishing a long eviction */
        if (goal != UINT64_MAX && total - freed > goal && !x->stop) {
            uint64_t need = total - freed - goal;
            if (evict_from(x, all, need) < need) {
                if (more_candidates(x, all))
                    again = true;
                else
                    missed = true;
            }
        }
        r->evict_ns += kvs__now_ns() - ts;
        for (uint32_t i = 0; i < p->nroots; i++) {
            /* right after the removals, before writers fill the room */
            kvs_fs_info low;
            kvs__fs_query(p->roots[i], &low);
            if (r->passes == 1 || low.used < r->fs_used_low[i])
                r->fs_used_low[i] = low.used;
        }
        if (p->dry_run && again) {
            again = false; /* nothing was removed: another pass finds the same */
            missed = true;
        }
        r->starved = missed && !again;
        r->used_after = 0;
        r->chunks_after = 0;
        r->temp_files = 0;
        for (uint32_t i = 0; i < p->nroots; i++) {
            r->used_path[i] = x->used[i] - x->freed[i];
            r->used_after += r->used_path[i];
            r->chunks_after += x->chunks[i] - x->freed_files[i];
            r->temp_files += x->temps[i];
            total_freed[i] += x->freed[i];
            total_freed_files[i] += x->freed_files[i];
            r->freed_path[i] = total_freed[i];
            r->fs_used_start[i] = fs0[i].used;
        }
    }
    uint64_t t1 = kvs__now_ns();
    if (!st && !x->stop && p->record && !p->dry_run && !p->only_ns) {
        kvs_usage_record u;
        memset(&u, 0, sizeof u);
        u.namespaces = x->w.nns;
        u.pass_end_wall_ns = kvs__wall_ns();
        u.pass_ns = t1 - t0;
        u.pid = (uint64_t)getpid();
        gethostname(u.host, sizeof u.host - 1);
        u.starved = r->starved;
        for (uint32_t i = 0; i < p->nroots; i++) {
            kvs_fs_info end;
            kvs__fs_query(p->roots[i], &end);
            u.used_bytes = r->used_path[i];
            u.chunks = x->chunks[i] - x->freed_files[i];
            u.temp_files = x->temps[i];
            u.fs_used_baseline = end.used;
            u.evicted_files = total_freed_files[i];
            u.evicted_bytes = total_freed[i];
            u.orphans_removed = r->orphans_removed;
            kvs__usage_write(p->roots[i], &u, p->file_mode);
        }
        append_log(p, r, t0, t1);
    }
    kvs__walk_clear(&x->w);
    for (uint32_t i = 0; i < KVS_MAX_STORE_PATHS; i++) {
        kvs__free(x->heap[i].v);
        if (x->rootfd[i] >= 0)
            kvs__io()->close(x->rootfd[i]);
    }
    kvs__free(x->batch);
    kvs__free(x);
    return st;
}

/* ---- leases of several paths ------------------------------------------------- */

void kvs__roots_order(char *const *paths, uint32_t n, uint32_t *order)
{
    uint64_t ids[KVS_MAX_STORE_PATHS] = {0};
    for (uint32_t i = 0; i < n; i++) {
        order[i] = i;
        if (n > 1 && kvs__store_root_id(paths[i], false, 0, &ids[i]) != KVS_OK)
            ids[i] = 0;
    }
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = i; j > 0 && ids[order[j]] < ids[order[j - 1]]; j--) {
            uint32_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

kvs_status kvs__leases_try(kvs_lease *leases, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        kvs_status st = kvs__lease_try(&leases[i]);
        if (st) {
            for (uint32_t j = 0; j < i; j++)
                kvs__lease_release(&leases[j]);
            return st;
        }
    }
    return KVS_OK;
}

void kvs__leases_release(kvs_lease *leases, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        kvs__lease_release(&leases[i]);
}

