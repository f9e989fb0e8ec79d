/*
 * collector.c - capacity of the shared store (see collector.h and
 * docs/capacity.md).
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

#define DEFAULT_MAX_CANDIDATES (1u << 18)
#define EVICT_BATCH 4096
#define MAX_PASSES 64
#define TICK_NS 200000000ull          /* the background thread looks every 200 ms */
#define PACE_SLICE_NS 10000000ull     /* work 10 ms, then rest 30 ms */
#define PACE_REST_FACTOR 3
#define LOG_ROTATE_BYTES (1u << 20)
#define MIN_GAP_NS 250000000ull       /* between passes started by growth */
/* How long a filesystem may take to show the space of removed files as free
 * (ext4 and XFS release it at the journal commit, every 5 s by default). */
#define FREE_LAG_NS 5000000000ull
#define USAGE_FILE "usage.json"
#define LOG_FILE "collector.log"

static bool hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool two_hex(const char *name, unsigned *v)
{
    if (strlen(name) != 2 || !hex_lower(name[0]) || !hex_lower(name[1]))
        return false;
    *v = (unsigned)strtoul(name, NULL, 16);
    return true;
}

int64_t kvs__access_ns(const struct stat *st)
{
    int64_t a = (int64_t)st->st_atim.tv_sec * 1000000000 + st->st_atim.tv_nsec;
    int64_t m = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    return a > m ? a : m;
}

/* ---- the walk -------------------------------------------------------------- */

static int intern_ns(kvs_walk *w, const char *name, uint32_t *idx)
{
    for (uint32_t i = 0; i < w->nns; i++) {
        if (strcmp(w->ns_names[i], name) == 0) {
            *idx = i;
            return 0;
        }
    }
    if (w->nns == w->ns_cap) {
        uint32_t cap = w->ns_cap ? w->ns_cap * 2 : 16;
        char **v = kvs__realloc(w->ns_names, cap * sizeof *v);
        if (!v)
            return -1;
        w->ns_names = v;
        w->ns_cap = cap;
    }
    if (!(w->ns_names[w->nns] = kvs__strdup(name)))
        return -1;
    *idx = w->nns++;
    return 0;
}

void kvs__walk_clear(kvs_walk *w)
{
    for (uint32_t i = 0; i < w->nns; i++)
        kvs__free(w->ns_names[i]);
    kvs__free(w->ns_names);
    w->ns_names = NULL;
    w->nns = w->ns_cap = 0;
}

static void note_error(kvs_walk *w, int err)
{
    if (err != ENOENT && err != ENOTDIR && err != ESTALE && !w->first_error)
        w->first_error = err;
}

/* Calls on_entry for name in the folder dfd (whose path is dir, for
 * messages); 1 when the walk must stop. */
static int emit(kvs_walk *w, kvs_walk_entry *e, int dfd, const char *dir, const char *name,
                kvs_entry_kind kind)
{
    char path[KVS_PATH_MAX];
    kvs__pathf(path, "%s/%s", dir, name);
    e->path = path;
    e->name = path + strlen(dir) + 1;
    e->dirfd = dfd;
    e->kind = kind;
    if (w->stat_files) {
        if (kvs__io()->fstatat(dfd, e->name, &e->st) != 0) {
            note_error(w, errno);
            return 0; /* gone since the listing: nothing to count */
        }
    }
    return w->on_entry(w->ctx, e) != 0;
}

typedef struct bits256 {
    uint8_t b[32];
} bits256;

/* Opens the folder `name` of parent for listing, following no symlink (a
 * folder swapped for a symlink mid-walk is refused, not followed).  NULL
 * with errno set. */
static DIR *open_dir_at(int parent, const char *name)
{
    const kvs_io_ops *io = kvs__io();
    int fd = io->open_beneath(parent, name,
                              O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EXDEV)
            errno = ELOOP;
        return NULL;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        io->close(fd);
        errno = err;
    }
    return d;
}

/* A folder entry (never a symlink to one: d_type, or an lstat where
 * readdir gives no type; opening it refuses a symlink again). */
static bool real_dir(int dfd, const char *name, unsigned char d_type)
{
    if (d_type != DT_UNKNOWN)
        return d_type == DT_DIR;
    struct stat st;
    return kvs__io()->fstatat(dfd, name, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Lists the two-hex-digit subfolders of folder `name` of parent into *out;
 * emits temp files; counts anything else that is a folder as skipped (the
 * store's layout has nothing else there).  *dfd_out: the folder, open. */
static int list_hex_dirs(kvs_walk *w, kvs_walk_entry *e, int parent, const char *name,
                         const char *dir, bits256 *out, DIR **d_out)
{
    const kvs_io_ops *io = kvs__io();
    memset(out, 0, sizeof *out);
    *d_out = NULL;
    DIR *d = open_dir_at(parent, name);
    if (!d) {
        note_error(w, errno);
        return 0;
    }
    int dfd = dirfd(d);
    int stop = 0;
    struct dirent *de;
    while (!stop && (de = io->readdir(d)) != NULL) {
        unsigned v;
        if (two_hex(de->d_name, &v) && real_dir(dfd, de->d_name, de->d_type))
            out->b[v / 8] |= (uint8_t)(1u << (v % 8));
        else if (kvs__is_temp_name(de->d_name))
            stop = emit(w, e, dfd, dir, de->d_name, KVS_ENTRY_TEMP);
        else if (de->d_type == DT_DIR && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            w->skipped++;
    }
    *d_out = d;
    return stop;
}

static int walk_leaf(kvs_walk *w, kvs_walk_entry *e, int parent, const char *name,
                     const char *dir)
{
    const kvs_io_ops *io = kvs__io();
    DIR *d = open_dir_at(parent, name);
    if (!d) {
        note_error(w, errno);
        return 0;
    }
    int dfd = dirfd(d);
    int stop = 0;
    struct dirent *de;
    while (!stop && (de = io->readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (n[0] != '.' && kvs__is_chunk_name(n, e->key))
            stop = emit(w, e, dfd, dir, n, KVS_ENTRY_CHUNK);
        else if (n[0] == '.' && kvs__is_temp_name(n))
            stop = emit(w, e, dfd, dir, n, KVS_ENTRY_TEMP);
        else if (de->d_type == DT_DIR && strcmp(n, ".") && strcmp(n, ".."))
            w->skipped++; /* deeper than the layout: never entered */
    }
    io->closedir(d);
    w->dirs++;
    if (!stop && w->on_dir)
        stop = w->on_dir(w->ctx) != 0;
    return stop;
}

/* <root>/<ns>/<xx>/<yy>/<file>: a fixed depth, each level opened from the
 * one above without following symlinks, so the walk is iterative, bounded
 * and never leaves the store whatever is planted or swapped in it. */
static int walk_ns(kvs_walk *w, kvs_walk_entry *e, int rootfd, const char *root, const char *ns)
{
    const kvs_io_ops *io = kvs__io();
    char nsdir[KVS_PATH_MAX], xdir[KVS_PATH_MAX], leaf[KVS_PATH_MAX], name[3];
    if (intern_ns(w, ns, &e->ns) != 0)
        return -1;
    kvs__pathf(nsdir, "%s/%s", root, ns);
    bits256 xs, ys;
    DIR *nd, *xd;
    int stop = list_hex_dirs(w, e, rootfd, ns, nsdir, &xs, &nd);
    for (unsigned x = 0; !stop && nd && x < 256; x++) {
        if (!(xs.b[x / 8] & (1u << (x % 8))))
            continue;
        snprintf(name, sizeof name, "%02x", x);
        kvs__pathf(xdir, "%s/%s", nsdir, name);
        stop = list_hex_dirs(w, e, dirfd(nd), name, xdir, &ys, &xd);
        for (unsigned y = 0; !stop && xd && y < 256; y++) {
            if (!(ys.b[y / 8] & (1u << (y % 8))))
                continue;
            snprintf(name, sizeof name, "%02x", y);
            kvs__pathf(leaf, "%s/%s", xdir, name);
            stop = walk_leaf(w, e, dirfd(xd), name, leaf);
        }
        if (xd)
            io->closedir(xd);
    }
    if (nd)
        io->closedir(nd);
    return stop;
}

kvs_status kvs__walk(kvs_walk *w)
{
    const kvs_io_ops *io = kvs__io();
    for (uint32_t r = 0; r < w->nroots; r++) {
        const char *root = w->roots[r];
        kvs_walk_entry e;
        memset(&e, 0, sizeof e);
        e.root = r;
        e.ns = UINT32_MAX;
        char **names = NULL;
        size_t n = 0, cap = 0;
        bool meta = false;
        int stop = 0;
        int rootfd = kvs__root_open(root);
        if (rootfd < 0) {
            note_error(w, -rootfd);
            continue;
        }
        DIR *d = open_dir_at(rootfd, ".");
        if (!d) {
            note_error(w, errno);
            io->close(rootfd);
            continue;
        }
        struct dirent *de;
        while (!stop && (de = io->readdir(d)) != NULL) {
            const char *name = de->d_name;
            if (strcmp(name, KVS_META_DIR) == 0) {
                meta = true;
            } else if (kvs__is_temp_name(name)) {
                stop = emit(w, &e, rootfd, root, name, KVS_ENTRY_TEMP);
            } else if (kvs__is_ns_dir_name(name) && (!w->only_ns || !strcmp(name, w->only_ns)) &&
                       real_dir(rootfd, name, de->d_type)) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    char **v = kvs__realloc(names, cap * sizeof *v);
                    if (!v) {
                        stop = -1;
                        break;
                    }
                    names = v;
                }
                if (!(names[n] = kvs__strdup(name))) {
                    stop = -1;
                    break;
                }
                n++;
            }
        }
        io->closedir(d);
        if (!stop && meta && !w->only_ns) {
            /* .kvstash: only its temporary files (a symlink there is not
             * entered: open_dir_at refuses it). */
            char mdir[KVS_PATH_MAX];
            kvs__pathf(mdir, "%s/" KVS_META_DIR, root);
            bits256 unused;
            DIR *md;
            stop = list_hex_dirs(w, &e, rootfd, KVS_META_DIR, mdir, &unused, &md);
            if (md)
                io->closedir(md);
        }
        for (size_t i = 0; i < n; i++) {
            if (!stop)
                stop = walk_ns(w, &e, rootfd, root, names[i]);
            kvs__free(names[i]);
        }
        kvs__free(names);
        io->close(rootfd);
        if (stop < 0)
            return kvs__fail(KVS_ERR_NOMEM, "out of memory walking the store");
        if (stop)
            break;
    }
    static int skipped_logged;
    if (w->skipped)
        kvs__log_once(&skipped_logged, KVS_LOG_WARN,
                      "store walk: skipped %" PRIu64 " folders that are not part of the store's "
                      "layout (<namespace>/<xx>/<yy>/<chunk>); they are never entered (logged "
                      "once)", w->skipped);
    return KVS_OK;
}

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

#define STALE_MIN_BYTES (16ull << 20)

uint64_t kvs__usage_growth(const kvs_usage_record *r, uint64_t fs_used_now)
{
    return fs_used_now > r->fs_used_baseline ? fs_used_now - r->fs_used_baseline : 0;
}

bool kvs__usage_stale(const kvs_usage_record *r, uint64_t fs_used_now)
{
    uint64_t moved = fs_used_now > r->fs_used_baseline ? fs_used_now - r->fs_used_baseline
                                                       : r->fs_used_baseline - fs_used_now;
    return r->fs_used_baseline && moved > KVS_MAX(r->used_bytes / 8, STALE_MIN_BYTES);
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

typedef struct fs_info {
    uint64_t size, free, used;
    uint64_t id;           /* f_fsid; 0 with size 0: unknown */
    uint64_t files, ifree; /* inodes in all and free (f_files 0: unlimited, as
                              on btrfs: no inode floor) */
} fs_info;

/* The free-space floor holds for inodes as for bytes: a filesystem with
 * floor/size of its bytes free but fewer of its inodes is below the floor
 * too (a store of small chunks runs out of inodes first, and then no write
 * succeeds however many bytes are free).  The inode floor is the same
 * fraction of the inodes. */
static uint64_t inode_floor(const fs_info *f, uint64_t floor_bytes)
{
    if (!f->files || !f->size)
        return 0;
    return (uint64_t)((double)f->files * (double)floor_bytes / (double)f->size);
}

static void fs_query(const char *root, fs_info *f)
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
    if (p->tick && kvs__now_ns() - x->slice_start >= PACE_SLICE_NS) {
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
    if (p->tick && now - x->slice_start >= PACE_SLICE_NS) {
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
    fs_info fs0[KVS_MAX_STORE_PATHS];
    uint32_t group[KVS_MAX_STORE_PATHS]; /* first root on the same filesystem */
    for (uint32_t i = 0; i < p->nroots; i++) {
        fs_query(p->roots[i], &fs0[i]);
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
            fs_info now;
            fs_query(p->roots[g], &now);
            uint64_t free_now = KVS_MAX(now.free, fs0[g].free + freed_here);
            double margin = 1.0 + KVS_MAX(p->high - p->low, 0.05);
            uint64_t need = 0;
            if (free_now < floor)
                need = (uint64_t)((double)floor * margin) - free_now;
            /* Inodes: files to remove, at the average size of a chunk here. */
            uint64_t ifloor = inode_floor(&now, floor);
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
            fs_info low;
            fs_query(p->roots[i], &low);
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
            fs_info end;
            fs_query(p->roots[i], &end);
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
    return collector_wait(c, PACE_SLICE_NS * PACE_REST_FACTOR, true);
}

typedef enum due { DUE_NO = 0, DUE_BACKGROUND, DUE_URGENT } due;

/* Reads usage.json of each path when it changed and asks the filesystems
 * how full they are; decides whether a collection is due. */
static due look(kvs_collector *c, uint32_t kicks, const char **why)
{
    const kvs_config *cfg = c->cfg;
    fs_info fs[KVS_MAX_STORE_PATHS];
    uint64_t now_wall = kvs__wall_ns(), now = kvs__now_ns();
    bool have_all = true, starved = false, refuse = false, evicted_last = false;
    uint64_t last_end = UINT64_MAX, last_dur = 0, used = 0;
    for (uint32_t i = 0; i < c->nroots; i++) {
        fs_query(c->roots[i], &fs[i]);
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
            refuse |= fs[i].free < floor || fs[i].ifree < inode_floor(&fs[i], floor);
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
    if (!recent && !settling && est - used > KVS_MAX(used / 8, STALE_MIN_BYTES)) {
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
            fs_info now;
            fs_query(c->roots[i], &now);
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
