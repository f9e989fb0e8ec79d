/*
 * admin.c - the public administration API: namespaces and usage of the
 * whole store, verification, garbage collection, removal of a namespace.
 *
 * It is built from the collector's pieces (collector.c): the walk over
 * every file, the usage records, one collection under the lease.  Nothing
 * here locks anything engines use: removing files under them is a miss for
 * them.  Verification reads files in parallel on its own threads, fed by a
 * producer thread that walks the store, while the calling thread reports
 * progress; it checks a file exactly as a reader does (header, namespace
 * identity, key, length, every segment checksum) and also whether the file
 * is where its key maps, since a misplaced file is never read.
 */
#include "collect.h"

#include "checksum.h"
#include "chunk_file.h"
#include "io_ops.h"
#include "io_pool.h"

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

struct kvs_admin {
    kvs_config *cfg;                         /* own copy */
    uint32_t n;
    const char *paths[KVS_MAX_STORE_PATHS];  /* weka_path order */
    uint64_t ids[KVS_MAX_STORE_PATHS];       /* 0: none */
    bool all_ids;                            /* every path has an id (n > 1) */
};

kvs_status kvs_admin_open(const kvs_config *cfg, kvs_admin **admin_out)
{
    if (!cfg || !admin_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_open: NULL argument");
    kvs_admin *a = kvs__calloc(1, sizeof *a);
    if (!a)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory opening the store");
    kvs_status st = kvs_config_copy(cfg, &a->cfg);
    if (st) {
        kvs__free(a);
        return st;
    }
    a->n = a->cfg->num_store_paths;
    a->all_ids = a->n > 1;
    for (uint32_t i = 0; i < a->n; i++) {
        a->paths[i] = a->cfg->store_paths[i];
        struct stat sb;
        int err = stat(a->paths[i], &sb) != 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
        if (err) {
            st = kvs__fail(err == ENOENT ? KVS_ERR_NOT_FOUND : kvs__errno_status(err),
                           "store path %s: %s", a->paths[i], strerror(err));
            kvs_admin_close(a);
            return st;
        }
        if (a->n > 1 && kvs__store_root_id(a->paths[i], false, 0, &a->ids[i]) != KVS_OK) {
            a->ids[i] = 0;
            a->all_ids = false;
        }
    }
    kvs__clear_error();
    *admin_out = a;
    return KVS_OK;
}

void kvs_admin_close(kvs_admin *a)
{
    if (!a)
        return;
    kvs_config_free(a->cfg);
    kvs__free(a);
}

uint32_t kvs_admin_path_count(const kvs_admin *a)
{
    return a ? a->n : 0;
}

const char *kvs_admin_path(const kvs_admin *a, uint32_t index)
{
    return a && index < a->n ? a->paths[index] : NULL;
}

/* ---- listing ------------------------------------------------------------------ */

typedef struct ns_acc {
    uint64_t chunks, bytes, temp_files, temp_bytes;
    int64_t oldest, newest;
    uint64_t logical, compressed;
    int shape;                 /* 0: not looked up; 1: full_file known; -1: unknown */
    uint64_t full_file, full_payload; /* a plain full chunk's file and payload */
} ns_acc;

typedef struct list_ctx {
    kvs_walk w;
    ns_acc *acc;               /* by walk namespace index */
    uint32_t acc_cap;
    uint64_t used[KVS_MAX_STORE_PATHS], chunks[KVS_MAX_STORE_PATHS];
    uint64_t temp_files;
    uint32_t ns_per_path[KVS_MAX_STORE_PATHS];
    uint64_t logical, compressed;
    kvs_admin *admin;
    bool nomem;
} list_ctx;

static char *read_identity(kvs_admin *a, const char *ns);
static uint64_t ident_u64(const char *text, const char *key);

/* The file and payload bytes of a full chunk of namespace folder ns, stored
 * plain, from its NAMESPACE.json (dtype, layout and geometry); false when
 * that is missing or does not parse. */
static bool full_chunk_of(kvs_admin *a, const char *ns, uint64_t *file, uint64_t *payload)
{
    char *text = read_identity(a, ns);
    bool ok = false;
    const char *d = text ? strstr(text, "\"dtype\":\"") : NULL;
    if (d) {
        char name[16] = "";
        d += strlen("\"dtype\":\"");
        size_t n = strcspn(d, "\"");
        kvs_dtype dt;
        if (n < sizeof name) {
            memcpy(name, d, n);
            name[n] = '\0';
        }
        bool mla = strstr(text, "\"layout\":\"mla\"") != NULL;
        uint64_t layers = ident_u64(text, "num_layers"), heads = ident_u64(text, "num_kv_heads"),
                 dim = ident_u64(text, "head_dim"), chunk = ident_u64(text, "chunk_size");
        if (kvs_dtype_parse(name, &dt) == KVS_OK && layers && heads && dim && chunk &&
            layers < (1u << 16) && heads < (1u << 16) && dim < (1u << 20) && chunk < (1u << 24)) {
            uint64_t row = (mla ? 1 : heads) * dim * kvs_dtype_size(dt);
            *payload = (mla ? 1 : 2) * layers * chunk * row;
            *file = kvs__file_bytes(*payload);
            ok = *payload <= KVS_MAX_PAYLOAD_BYTES;
        }
    }
    kvs__free(text);
    return ok;
}

/* The logical (uncompressed payload) bytes of a chunk file of `size` bytes
 * in folder e: a plain full chunk of its namespace by its size alone, else
 * by the first bytes of its header (compressed files and partial chunks);
 * *compressed: it is stored compressed.  0 for what has no valid start. */
static uint64_t logical_of(const ns_acc *a, const kvs_walk_entry *e, uint64_t size,
                           bool *compressed)
{
    *compressed = false;
    if (a && a->shape == 1 && size == a->full_file)
        return a->full_payload;
    const kvs_io_ops *io = kvs__io();
    int fd = io->open_beneath(e->dirfd, e->name,
                              O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOATIME, 0);
    if (fd < 0 && errno == EPERM)
        fd = io->open_beneath(e->dirfd, e->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                              0);
    if (fd < 0)
        return 0;
    uint8_t h[512];
    uint64_t logical = 0;
    uint32_t version;
    if (kvs__pread_full(fd, h, sizeof h, 0) == 0 && kvs__header_peek(h, &version, &logical)) {
        if (version == KVS_FORMAT_VERSION_CODEC)
            *compressed = true;
        else if (version != KVS_FORMAT_VERSION)
            logical = 0;
        if (logical > KVS_MAX_PAYLOAD_BYTES)
            logical = 0;
    }
    io->close(fd);
    return logical;
}


static ns_acc *acc_for(list_ctx *l, uint32_t ns)
{
    if (ns >= l->acc_cap) {
        uint32_t cap = KVS_MAX(ns + 1, l->acc_cap * 2);
        ns_acc *v = kvs__realloc(l->acc, cap * sizeof *v);
        if (!v)
            return NULL;
        memset(v + l->acc_cap, 0, (cap - l->acc_cap) * sizeof *v);
        l->acc = v;
        l->acc_cap = cap;
    }
    return &l->acc[ns];
}

static int list_entry(void *ctx, const kvs_walk_entry *e)
{
    list_ctx *l = ctx;
    if (!S_ISREG(e->st.st_mode))
        return 0;
    uint64_t size = (uint64_t)e->st.st_size;
    l->used[e->root] += size;
    if (e->kind == KVS_ENTRY_TEMP)
        l->temp_files++;
    else
        l->chunks[e->root]++;
    if (e->ns == UINT32_MAX)
        return 0;
    ns_acc *a = acc_for(l, e->ns);
    if (!a) {
        l->nomem = true;
        return 1;
    }
    if (e->kind == KVS_ENTRY_TEMP) {
        a->temp_files++;
        a->temp_bytes += size;
        return 0;
    }
    int64_t t = kvs__access_ns(&e->st);
    if (!a->chunks || t < a->oldest)
        a->oldest = t;
    if (!a->chunks || t > a->newest)
        a->newest = t;
    a->chunks++;
    a->bytes += size;
    if (a->shape == 0)
        a->shape = full_chunk_of(l->admin, l->w.ns_names[e->ns], &a->full_file,
                                 &a->full_payload) ? 1 : -1;
    bool compressed;
    uint64_t logical = logical_of(a, e, size, &compressed);
    a->logical += logical;
    a->compressed += compressed;
    l->logical += logical;
    l->compressed += compressed;
    return 0;
}

static kvs_status list_walk(kvs_admin *a, const char *only_ns, list_ctx *l)
{
    memset(l, 0, sizeof *l);
    l->admin = a;
    l->w = (kvs_walk){.roots = a->paths, .nroots = a->n, .only_ns = only_ns, .stat_files = true,
                      .on_entry = list_entry, .ctx = l};
    kvs_status st = kvs__walk(&l->w);
    if (!st && l->nomem)
        st = kvs__fail(KVS_ERR_NOMEM, "out of memory listing the store");
    /* namespaces per path: folders that exist there */
    for (uint32_t r = 0; r < a->n && !st; r++) {
        for (uint32_t i = 0; i < l->w.nns; i++) {
            char p[KVS_PATH_MAX];
            struct stat sb;
            kvs__pathf(p, "%s/%s", a->paths[r], l->w.ns_names[i]);
            if (kvs__io()->stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                l->ns_per_path[r]++;
        }
    }
    return st;
}

static void list_clear(list_ctx *l)
{
    kvs__walk_clear(&l->w);
    kvs__free(l->acc);
}

/* NAMESPACE.json of a namespace, from the first path that has it (read
 * through descriptors: a FIFO or a symlink there is skipped). */
static char *read_identity(kvs_admin *a, const char *ns)
{
    const kvs_io_ops *io = kvs__io();
    for (uint32_t r = 0; r < a->n; r++) {
        int rfd = kvs__root_open(a->paths[r]);
        if (rfd < 0)
            continue;
        int nfd = io->open_beneath(rfd, ns, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        io->close(rfd);
        if (nfd < 0)
            continue;
        char buf[4096];
        int n = kvs__meta_read(nfd, KVS_NAMESPACE_FILE, buf, sizeof buf);
        io->close(nfd);
        if (n <= 0)
            continue;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        return kvs__strndup(buf, (size_t)n);
    }
    return kvs__strdup("");
}

static int ns_usage_cmp(const void *x, const void *y)
{
    return strcmp(((const kvs_ns_usage *)x)->id, ((const kvs_ns_usage *)y)->id);
}

kvs_status kvs_admin_list(kvs_admin *a, kvs_ns_usage **list_out, size_t *count_out)
{
    if (!a || !list_out || !count_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_list: NULL argument");
    list_ctx l;
    kvs_status st = list_walk(a, NULL, &l);
    if (st) {
        list_clear(&l);
        return st;
    }
    uint32_t n = l.w.nns;
    char **ident = kvs__calloc(n ? n : 1, sizeof *ident);
    size_t strings = 0;
    for (uint32_t i = 0; ident && i < n; i++) {
        ident[i] = read_identity(a, l.w.ns_names[i]);
        if (!ident[i]) {
            st = kvs__fail(KVS_ERR_NOMEM, "out of memory listing the store");
            break;
        }
        strings += strlen(l.w.ns_names[i]) + 1 + strlen(ident[i]) + 1;
    }
    if (!ident)
        st = kvs__fail(KVS_ERR_NOMEM, "out of memory listing the store");
    kvs_ns_usage *out = NULL;
    if (!st) {
        out = kvs__malloc((n ? n : 1) * sizeof *out + strings);
        if (!out)
            st = kvs__fail(KVS_ERR_NOMEM, "out of memory listing the store");
    }
    if (!st) {
        char *pool = (char *)(out + (n ? n : 1));
        for (uint32_t i = 0; i < n; i++) {
            ns_acc zero = {0};
            const ns_acc *acc = i < l.acc_cap ? &l.acc[i] : &zero;
            kvs_ns_usage *u = &out[i];
            size_t k = strlen(l.w.ns_names[i]) + 1;
            memcpy(pool, l.w.ns_names[i], k);
            u->id = pool;
            pool += k;
            k = strlen(ident[i]) + 1;
            memcpy(pool, ident[i], k);
            u->identity = pool;
            pool += k;
            u->chunks = acc->chunks;
            u->bytes = acc->bytes;
            u->temp_files = acc->temp_files;
            u->temp_bytes = acc->temp_bytes;
            u->oldest_access_ns = acc->chunks ? acc->oldest : 0;
            u->newest_access_ns = acc->chunks ? acc->newest : 0;
            u->logical_bytes = acc->logical;
            u->compressed_chunks = acc->compressed;
        }
        qsort(out, n, sizeof *out, ns_usage_cmp);
        *list_out = out;
        *count_out = n;
    }
    for (uint32_t i = 0; ident && i < n; i++)
        kvs__free(ident[i]);
    kvs__free(ident);
    list_clear(&l);
    return st;
}

/* ---- usage ------------------------------------------------------------------------ */

kvs_status kvs_admin_usage(kvs_admin *a, int measure, kvs_usage *usage_out)
{
    if (!a || !usage_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_usage: NULL argument");
    kvs_usage u;
    memset(&u, 0, sizeof u);
    const kvs_config *cfg = a->cfg;
    u.max_bytes = kvs__config_canon(cfg, KVS_CFG_MAX_STORE_SIZE);
    u.high_bytes = (uint64_t)(cfg->store_high_watermark * (double)u.max_bytes);
    u.low_bytes = (uint64_t)(cfg->store_low_watermark * (double)u.max_bytes);
    u.min_free_bytes = kvs__config_canon(cfg, KVS_CFG_MIN_FREE_SPACE);
    u.path_count = a->n;
    bool all_recorded = true;
    for (uint32_t r = 0; r < a->n; r++) {
        kvs_path_usage *p = &u.paths[r];
        p->path = a->paths[r];
        p->store_id = a->ids[r];
        struct statvfs v;
        uint64_t fs_used = 0;
        if (kvs__io()->statvfs(a->paths[r], &v) == 0) {
            p->fs_size_bytes = (uint64_t)v.f_blocks * v.f_frsize;
            p->fs_free_bytes = (uint64_t)v.f_bavail * v.f_frsize;
            fs_used = (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize;
        }
        kvs_usage_record rec;
        int rc = kvs__usage_read(a->paths[r], &rec);
        /* A record the store has outgrown (or shrunk from) since is not its
         * size: measure instead of showing it (a short-lived writer, such as
         * `kvstash store`, may have written gigabytes after the last pass). */
        if (rc != 0 || kvs__usage_stale(&rec, fs_used))
            measure = 1;
        if (rc == 0) {
            if (!u.last_pass_wall_ns || (int64_t)rec.pass_end_wall_ns < u.last_pass_wall_ns)
                u.last_pass_wall_ns = (int64_t)rec.pass_end_wall_ns;
            u.last_pass_seconds = KVS_MAX(u.last_pass_seconds, (double)rec.pass_ns / 1e9);
            if (!measure) {
                p->used_bytes = rec.used_bytes;
                p->chunks = rec.chunks;
                u.temp_files += rec.temp_files;
                u.namespaces = KVS_MAX(u.namespaces, rec.namespaces);
            }
        } else {
            all_recorded = false;
        }
    }
    if (!all_recorded)
        u.last_pass_wall_ns = 0;
    u.measured = measure != 0;
    if (measure) {
        list_ctx l;
        kvs_status st = list_walk(a, NULL, &l);
        if (st) {
            list_clear(&l);
            return st;
        }
        for (uint32_t r = 0; r < a->n; r++) {
            u.paths[r].used_bytes = l.used[r];
            u.paths[r].chunks = l.chunks[r];
            u.namespaces = KVS_MAX(u.namespaces, l.ns_per_path[r]);
        }
        u.temp_files = l.temp_files;
        u.logical_bytes = l.logical;
        u.compressed_chunks = l.compressed;
        /* What later calls (du, doctor, the engines' store_used_bytes) show:
         * this measurement, until a collector's pass replaces it.  Failing
         * to write it (a read-only mount) changes nothing shown now. */
        for (uint32_t r = 0; r < a->n; r++)
            kvs__usage_record_measure(a->paths[r], l.used[r], l.chunks[r],
                                      r == 0 ? l.temp_files : 0, l.ns_per_path[r],
                                      cfg->file_mode);
        list_clear(&l);
    }
    for (uint32_t r = 0; r < a->n; r++) {
        u.used_bytes += u.paths[r].used_bytes;
        u.chunks += u.paths[r].chunks;
    }
    *usage_out = u;
    return KVS_OK;
}

kvs_status kvs_admin_lease(kvs_admin *a, uint32_t index, char **text_out)
{
    if (!a || !text_out || index >= a->n)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_lease: bad argument");
    char *t = kvs__lease_describe(a->paths[index]);
    if (!t)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory");
    *text_out = t;
    return KVS_OK;
}

/* ---- verification ------------------------------------------------------------------ */

/* Files handed to the pool and not yet judged, at most: the walk waits
 * for room, so memory stays bounded however large the store. */
#define VQ_CAP 256
/* Each worker's buffer: a header, and segments up to this size (a chunk of
 * up to 448 MiB); a larger segment gets a buffer of its own. */
#define VERIFY_BUF_BYTES (1u << 20)

typedef struct vitem {
    char *path;
    uint32_t root;
    char ns[KVS_NS_DIR_MAX];
    uint8_t key[KVS_KEY_BYTES];
} vitem;

typedef struct ns_ident {
    char name[KVS_NS_DIR_MAX];
    bool have;                 /* NAMESPACE.json read and it hashes to the
                                  folder's name: full id and shape known */
    uint8_t id[32];
    uint64_t max_payload;      /* bytes of a full chunk of this namespace */
} ns_ident;

/* Most bytes verify reads of one file when the namespace's shape is not
 * known: well above a 256-token chunk of any model served today. */
#define VERIFY_MAX_UNKNOWN (4ull << 30)

typedef struct verify_ctx {
    kvs_admin *a;
    const kvs_verify_options *o;
    int rootfd[KVS_MAX_STORE_PATHS];   /* store paths, resolved once; -errno */
    kvs_pool *pool;            /* the I/O pool's workers judge the files */
    pthread_mutex_t mu;
    pthread_cond_t cv_space;   /* fewer than VQ_CAP files in flight */
    pthread_cond_t cv_done;    /* progress for the caller */
    uint32_t inflight;         /* files submitted and not yet judged */
    bool produced;             /* the walk ended */
    uint64_t total;            /* files found by the walk */
    bool counted;
    ns_ident *idents;          /* under mu */
    uint32_t nidents, idents_cap;
    pthread_mutex_t report_mu; /* one bad_file call at a time */
    kvs_verify_report rep;     /* under mu */
    kvs_status walk_status;
} verify_ctx;

/* One file to judge, as a task of the pool. */
typedef struct vtask {
    kvs_task task;
    verify_ctx *v;
    vitem it;
} vtask;

static void verify_task(kvs_task *t, kvs_worker *w);

static int verify_enqueue(void *ctx, const kvs_walk_entry *e)
{
    verify_ctx *v = ctx;
    if (e->kind != KVS_ENTRY_CHUNK)
        return 0;
    vtask *vt = kvs__calloc(1, sizeof *vt);
    if (!vt)
        return 1;
    vitem it;
    memset(&it, 0, sizeof it);
    it.path = kvs__strdup(e->path);
    if (!it.path) {
        kvs__free(vt);
        return 1;
    }
    it.root = e->root;
    memcpy(it.key, e->key, sizeof it.key);
    /* the namespace is the path component after the root */
    const char *root = v->a->paths[e->root];
    const char *rest = e->path + strlen(root) + 1;
    size_t k = strcspn(rest, "/");
    snprintf(it.ns, sizeof it.ns, "%.*s", (int)KVS_MIN(k, sizeof it.ns - 1), rest);
    vt->v = v;
    vt->it = it;
    vt->task.fn = verify_task;
    pthread_mutex_lock(&v->mu);
    while (v->inflight == VQ_CAP)
        pthread_cond_wait(&v->cv_space, &v->mu);
    v->inflight++;
    v->total++;
    pthread_mutex_unlock(&v->mu);
    kvs__pool_submit(v->pool, &vt->task, KVS_PRIO_READ);
    return 0;
}

static void *verify_producer(void *arg)
{
    verify_ctx *v = arg;
    kvs_walk w = {.roots = v->a->paths, .nroots = v->a->n, .only_ns = v->o->namespace_id,
                  .stat_files = false, .on_entry = verify_enqueue, .ctx = v};
    kvs_status st = kvs__walk(&w);
    kvs__walk_clear(&w);
    pthread_mutex_lock(&v->mu);
    v->walk_status = st;
    v->produced = true;
    v->counted = true;
    pthread_cond_broadcast(&v->cv_done);
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

static uint64_t ident_u64(const char *text, const char *key)
{
    char pat[40];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

/* The full namespace id from NAMESPACE.json (SHA-256 of its canonical
 * text, without the newline), looked up once per namespace. */
static void ident_of(verify_ctx *v, const char *ns, ns_ident *out)
{
    pthread_mutex_lock(&v->mu);
    for (uint32_t i = 0; i < v->nidents; i++) {
        if (!strcmp(v->idents[i].name, ns)) {
            *out = v->idents[i];
            pthread_mutex_unlock(&v->mu);
            return;
        }
    }
    pthread_mutex_unlock(&v->mu);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ns);
    char *text = read_identity(v->a, ns);
    size_t nl = strlen(ns);
    if (text && text[0] && nl >= 16 && kvs__ns_id_of_text(text, out->id) == KVS_OK) {
        char hex[17];
        kvs__hex(out->id, 8, hex);
        out->have = strcmp(ns + nl - 16, hex) == 0;
        if (!out->have)
            kvs__log(KVS_LOG_WARN, "verify: %s/" KVS_NAMESPACE_FILE " does not match the "
                     "folder's namespace id (edited or damaged); ignored: chunks are judged "
                     "by their own headers", ns);
        uint64_t layers = ident_u64(text, "num_layers"), heads = ident_u64(text, "num_kv_heads"),
                 dim = ident_u64(text, "head_dim"), chunk = ident_u64(text, "chunk_size");
        /* 2 planes, 8 bytes an element: above every layout and dtype */
        out->max_payload = layers * 2 * chunk * heads * dim * 8;
        if (!layers || !heads || !dim || !chunk || out->max_payload / 16 / chunk / heads / dim != layers)
            out->have = false;
    }
    kvs__free(text);
    pthread_mutex_lock(&v->mu);
    if (v->nidents == v->idents_cap) {
        uint32_t cap = v->idents_cap ? v->idents_cap * 2 : 16;
        ns_ident *nv = kvs__realloc(v->idents, cap * sizeof *nv);
        if (nv) {
            v->idents = nv;
            v->idents_cap = cap;
        }
    }
    if (v->nidents < v->idents_cap)
        v->idents[v->nidents++] = *out;
    pthread_mutex_unlock(&v->mu);
}

typedef enum vverdict { V_OK, V_BAD, V_UNREADABLE, V_MISPLACED, V_VANISHED } vverdict;

/* A compressed chunk (docs/codec.md) by the readers' rules (chunk_file.h):
 * its frame table, then each frame's stored bytes against its sum, and that
 * every frame decodes to its logical bytes.  tbl: a 4096-byte buffer. */
static vverdict check_frames(int fd, const kvs_chunk_header *h, uint8_t *tbl, uint64_t *bytes,
                             char *why, size_t wlen)
{
    if (kvs__pread_full(fd, tbl, KVS_FRAME_TABLE_BYTES, KVS_FRAME_TABLE_OFFSET) != 0) {
        int err = errno;
        snprintf(why, wlen, "unreadable: frame table read: %s", strerror(err));
        return err == ENODATA ? V_BAD : V_UNREADABLE;
    }
    *bytes += KVS_FRAME_TABLE_BYTES;
    kvs_chunk_frames *fr = kvs__malloc(sizeof *fr);
    uint64_t bound = kvs__codec_frame_bound(h->segment_bytes, 1);
    uint8_t *frame = kvs__malloc(bound + h->segment_bytes);
    vverdict verdict = V_OK;
    if (!fr || !frame) {
        snprintf(why, wlen, "unreadable: out of memory for a %u-byte frame", h->segment_bytes);
        verdict = V_UNREADABLE;
        goto out;
    }
    char what[256];
    if (kvs__chunk_check_table(h, tbl, fr, what, sizeof what) != KVS_REJECT_NONE) {
        snprintf(why, wlen, "%s (frame table: %s)", kvs__reject_name(KVS_REJECT_BAD_HEADER),
                 what);
        verdict = V_BAD;
        goto out;
    }
    uint32_t elem = (uint32_t)kvs_dtype_size((kvs_dtype)h->dtype);
    for (uint32_t i = 0; i < h->segment_count; i++) {
        uint32_t off = fr->f[i].off, len = fr->f[i].len;
        if (kvs__pread_full(fd, frame, len, (off_t)(KVS_FRAMES_OFFSET + (uint64_t)off)) != 0) {
            int err = errno;
            snprintf(why, wlen, "unreadable: frame %u read at stored byte %u: %s", i, off,
                     strerror(err));
            verdict = err == ENODATA ? V_BAD : V_UNREADABLE;
            goto out;
        }
        *bytes += len;
        if (!kvs__segment_ok(h, i, frame, len)) {
            snprintf(why, wlen, "%s (frame %u at stored byte %u)",
                     kvs__reject_name(KVS_REJECT_CHECKSUM), i, off);
            verdict = V_BAD;
            goto out;
        }
        if (kvs__codec_decode_frame(frame, len, kvs__frame_nbytes(h, i), elem, frame + bound) != 0) {
            snprintf(why, wlen, "frame %u does not decode (its stored bytes match their sum: "
                     "written wrong, not damaged since)", i);
            verdict = V_BAD;
            goto out;
        }
    }
out:
    kvs__free(fr);
    kvs__free(frame);
    return verdict;
}

static vverdict check_file(verify_ctx *v, const vitem *it, kvs_worker *w, uint64_t *bytes,
                           char *why, size_t wlen, int *leaf_out, struct stat *examined)
{
    const kvs_io_ops *io = kvs__io();
    uint8_t *buf = w->bounce, *own = NULL; /* the worker's, or one of our own */
    /* The folder the walk found it in, from the root's descriptor without
     * following a symlink (a folder swapped since is refused), then the
     * file by name: what is removed later is exactly what was examined. */
    const char *root = v->a->paths[it->root];
    const char *rel = it->path + strlen(root) + 1;
    const char *slash = strrchr(rel, '/');
    char reldir[KVS_PATH_MAX];
    snprintf(reldir, sizeof reldir, "%.*s", (int)(slash - rel), rel);
    *leaf_out = v->rootfd[it->root] < 0 ? -1
              : io->open_beneath(v->rootfd[it->root], reldir,
                                 O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (*leaf_out < 0) {
        int err = v->rootfd[it->root] < 0 ? -v->rootfd[it->root] : errno;
        if (err == ENOENT || err == ESTALE)
            return V_VANISHED;
        snprintf(why, wlen, "unreadable: its folder: %s", kvs__meta_strerror(err));
        return V_UNREADABLE;
    }
    /* O_NOATIME: reading every file must not make it look recently used
     * (it needs ownership; without it the kernel may refresh atime). */
    int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    int fd = io->open_beneath(*leaf_out, slash + 1, flags | O_NOATIME, 0);
    if (fd < 0 && errno == EPERM)
        fd = io->open_beneath(*leaf_out, slash + 1, flags, 0);
    if (fd < 0) {
        int err = errno == EXDEV ? ELOOP : errno;
        if (err == ENOENT || err == ESTALE)
            return V_VANISHED;
        if (err == ELOOP) {
            snprintf(why, wlen, "not a regular file (a symlink)");
            return V_BAD;
        }
        snprintf(why, wlen, "unreadable: open: %s", strerror(err));
        return V_UNREADABLE;
    }
    vverdict verdict = V_OK;
    struct stat st;
    if (io->fstat(fd, examined) != 0) {
        snprintf(why, wlen, "unreadable: fstat: %s", strerror(errno));
        verdict = V_UNREADABLE;
        goto out;
    }
    st = *examined;
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, wlen, "not a regular file");
        verdict = V_BAD;
        goto out;
    }
    if ((uint64_t)st.st_size < KVS_HEADER_BYTES) {
        snprintf(why, wlen, "truncated (%lld bytes, shorter than a header)",
                 (long long)st.st_size);
        verdict = V_BAD;
        goto out;
    }
    if (kvs__pread_full(fd, buf, KVS_HEADER_BYTES, 0) != 0) {
        snprintf(why, wlen, "unreadable: header read: %s", strerror(errno));
        verdict = errno == ENODATA ? V_BAD : V_UNREADABLE;
        goto out;
    }
    *bytes += KVS_HEADER_BYTES;
    /* Judged by its own header against the folder's name (the namespace id
     * that readers ask for); NAMESPACE.json counts only where it hashes to
     * that name (ident_of): an edited one is ignored, never a reason to
     * condemn chunks that engines would serve.  The rules are the readers'
     * (chunk_file.h). */
    size_t nl = strlen(it->ns);
    ns_ident ni;
    ident_of(v, it->ns, &ni);
    uint8_t folder_id[8];
    kvs_chunk_want wanted = {.key = it->key, .ns_id = ni.have ? ni.id : folder_id,
                           .ns_id_len = ni.have ? sizeof ni.id : sizeof folder_id};
    kvs_chunk_header h;
    kvs_reject rej = nl < 16 || kvs__unhex(it->ns + nl - 16, folder_id, sizeof folder_id) != 0
                         ? KVS_REJECT_FOREIGN
                         : kvs__chunk_check_header(buf, (uint64_t)st.st_size, &wanted, &h);
    if (rej == KVS_REJECT_FOREIGN) {
        snprintf(why, wlen, "%s (the header names another key or namespace)",
                 kvs__reject_name(KVS_REJECT_FOREIGN));
        verdict = V_BAD;
        goto out;
    }
    if (rej == KVS_REJECT_TRUNCATED) {
        snprintf(why, wlen, "%s (%lld bytes, the header says %" PRIu64 ")",
                 kvs__reject_name(KVS_REJECT_TRUNCATED), (long long)st.st_size,
                 kvs__chunk_file_bytes(&h));
        verdict = V_BAD;
        goto out;
    }
    if (rej != KVS_REJECT_NONE) {
        snprintf(why, wlen, "%s", kvs__reject_name(rej));
        verdict = V_BAD;
        goto out;
    }
    /* The cost of checking follows what the namespace allows, not what the
     * header claims: a chunk of this namespace holds at most chunk_size
     * tokens of its shape (known where NAMESPACE.json matches the folder),
     * else at most VERIFY_MAX_UNKNOWN bytes are read for one file. */
    uint64_t limit = ni.have ? ni.max_payload : VERIFY_MAX_UNKNOWN;
    if (h.payload_bytes > limit) {
        if (ni.have) {
            snprintf(why, wlen, "%s (claims a %" PRIu64 "-byte payload; a chunk of this namespace "
                     "holds at most %" PRIu64 ")", kvs__reject_name(KVS_REJECT_FOREIGN),
                     h.payload_bytes, limit);
            verdict = V_BAD;
        } else {
            snprintf(why, wlen, "not checked: claims a %" PRIu64 "-byte payload and the "
                     "namespace's " KVS_NAMESPACE_FILE ", which bounds it, is missing or does "
                     "not match its folder", h.payload_bytes);
            verdict = V_UNREADABLE;
        }
        goto out;
    }
    if (h.codec) {
        verdict = check_frames(fd, &h, buf, bytes, why, wlen);
        if (verdict != V_OK)
            goto out;
        goto placed;
    }
    uint64_t padded = kvs__padded_payload(h.payload_bytes);
    if (w->bounce_bytes < h.segment_bytes) {
        buf = own = kvs__malloc(h.segment_bytes);
        if (!own) {
            snprintf(why, wlen, "unreadable: out of memory for a %u-byte segment",
                     h.segment_bytes);
            verdict = V_UNREADABLE;
            goto out;
        }
    }
    for (uint64_t off = 0, i = 0; off < padded; off += h.segment_bytes, i++) {
        uint64_t n = KVS_MIN((uint64_t)h.segment_bytes, padded - off);
        if (kvs__pread_full(fd, buf, n, (off_t)(KVS_PAYLOAD_OFFSET + off)) != 0) {
            int err = errno;
            snprintf(why, wlen, "unreadable: payload read at %" PRIu64 ": %s", off,
                     strerror(err));
            verdict = err == ENODATA ? V_BAD : V_UNREADABLE;
            goto out;
        }
        *bytes += n;
        if (!kvs__segment_ok(&h, i, buf, n)) {
            snprintf(why, wlen, "%s (segment %" PRIu64 " at payload byte %" PRIu64 ")",
                     kvs__reject_name(KVS_REJECT_CHECKSUM), i, off);
            verdict = V_BAD;
            goto out;
        }
    }
placed:
    /* Valid: but is it where readers look? */
    char fan[KVS_FANOUT_LEN], leaf[KVS_FANOUT_LEN + 2];
    kvs__fanout(it->key, fan);
    snprintf(leaf, sizeof leaf, "/%s/", fan);
    if (!strstr(it->path, leaf)) {
        snprintf(why, wlen, "misplaced (not in the folder its key maps to)");
        verdict = V_MISPLACED;
    } else if (v->a->all_ids) {
        uint32_t want = kvs__store_pick(v->a->ids, v->a->n, it->key);
        if (want != it->root) {
            snprintf(why, wlen, "misplaced (its key maps to store path %s)", v->a->paths[want]);
            verdict = V_MISPLACED;
        }
    }
out:
    io->close(fd);
    kvs__free(own);
    return verdict;
}

/* Judges one file on a worker of the pool, reports it, and lets the walk
 * submit another. */
static void verify_task(kvs_task *t, kvs_worker *w)
{
    vtask *vt = KVS_CONTAINER(t, vtask, task);
    verify_ctx *v = vt->v;
    vitem *it = &vt->it;
    char why[512] = "";
    uint64_t bytes = 0;
    int leaf = -1;
    struct stat examined;
    vverdict vd = check_file(v, it, w, &bytes, why, sizeof why, &leaf, &examined);
    bool removed = false;
    if ((vd == V_BAD || vd == V_MISPLACED) && v->o->remove_bad && leaf >= 0)
        removed = kvs__unlink_examined(leaf, strrchr(it->path, '/') + 1, &examined) == 0;
    if (leaf >= 0)
        kvs__io()->close(leaf);
    if (vd != V_OK && vd != V_VANISHED && v->o->bad_file) {
        if (removed)
            strncat(why, "; removed", sizeof why - strlen(why) - 1);
        pthread_mutex_lock(&v->report_mu);
        v->o->bad_file(v->o->ctx, it->path, why);
        pthread_mutex_unlock(&v->report_mu);
    }
    kvs__free(it->path);
    kvs__free(vt);
    pthread_mutex_lock(&v->mu);
    kvs_verify_report *r = &v->rep;
    r->files++;
    r->bytes += bytes;
    r->removed += removed;
    switch (vd) {
    case V_OK: r->ok++; break;
    case V_BAD: r->bad++; break;
    case V_UNREADABLE: r->unreadable++; break;
    case V_MISPLACED: r->misplaced++; break;
    case V_VANISHED: r->vanished++; break;
    }
    v->inflight--;
    pthread_cond_signal(&v->cv_space);
    pthread_cond_broadcast(&v->cv_done);
    pthread_mutex_unlock(&v->mu);
}

kvs_status kvs_admin_verify(kvs_admin *a, const kvs_verify_options *opts,
                            kvs_verify_report *report_out)
{
    if (!a || !report_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_verify: NULL argument");
    kvs_verify_options none = {0};
    const kvs_verify_options *o = opts ? opts : &none;
    if (o->namespace_id && !kvs__is_ns_dir_name(o->namespace_id))
        return kvs__fail(KVS_ERR_INVALID,
                         "kvs_admin_verify: \"%s\" is not a namespace id (\"<model>-<16 hex>\", "
                         "as kvstash ls shows)",
                         o->namespace_id);
    uint32_t threads = o->threads ? o->threads : a->cfg->gds_io_threads;
    threads = KVS_MAX(1u, KVS_MIN(threads, 256u));
    verify_ctx *v = kvs__calloc(1, sizeof *v);
    if (!v)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory starting a verification");
    v->a = a;
    v->o = o;
    for (uint32_t r = 0; r < KVS_MAX_STORE_PATHS; r++)
        v->rootfd[r] = r < a->n ? kvs__root_open(a->paths[r]) : -ENOENT;
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->report_mu, NULL);
    kvs__cond_init(&v->cv_space);
    kvs__cond_init(&v->cv_done);
    uint64_t t0 = kvs__now_ns();
    kvs_status st = KVS_OK;
    pthread_t producer;
    /* The files are judged on an I/O pool (io_pool.c, the engine's kind):
     * one pool implementation, one stall and stop story. */
    bool have_producer =
        kvs__pool_create(threads, 0, VERIFY_BUF_BYTES, UINT64_MAX, &v->pool) == KVS_OK &&
        pthread_create(&producer, NULL, verify_producer, v) == 0;
    if (!have_producer) {
        st = kvs__fail(KVS_ERR_NOMEM, "cannot start verification threads");
        v->produced = true;
    }
    /* Report progress from this thread until the walk ended and every file
     * handed out is judged. */
    pthread_mutex_lock(&v->mu);
    while (!v->produced || v->inflight > 0) {
        kvs__cond_wait_until(&v->cv_done, &v->mu, kvs__now_ns() + 100000000u);
        if (o->progress) {
            uint64_t done = v->rep.files, total = v->counted ? v->total : 0, b = v->rep.bytes;
            pthread_mutex_unlock(&v->mu);
            o->progress(o->ctx, done, total, b);
            pthread_mutex_lock(&v->mu);
        }
    }
    pthread_mutex_unlock(&v->mu);
    if (have_producer)
        pthread_join(producer, NULL);
    kvs__pool_destroy(v->pool, UINT64_MAX); /* idle: nothing in flight */
    if (o->progress)
        o->progress(o->ctx, v->rep.files, v->total, v->rep.bytes);
    if (!st)
        st = v->walk_status;
    v->rep.seconds = (double)(kvs__now_ns() - t0) / 1e9;
    if (!st)
        *report_out = v->rep;
    pthread_cond_destroy(&v->cv_space);
    pthread_cond_destroy(&v->cv_done);
    pthread_mutex_destroy(&v->report_mu);
    pthread_mutex_destroy(&v->mu);
    kvs__free(v->idents);
    for (uint32_t r = 0; r < KVS_MAX_STORE_PATHS; r++)
        if (v->rootfd[r] >= 0)
            kvs__io()->close(v->rootfd[r]);
    kvs__free(v);
    return st;
}

/* ---- garbage collection ------------------------------------------------------------- */

typedef struct gc_cb {
    const kvs_gc_options *o;
} gc_cb;

static void gc_on_evict(void *ctx, const char *path, uint64_t bytes, int64_t access)
{
    gc_cb *g = ctx;
    g->o->on_file(g->o->ctx, path, bytes, access);
}

kvs_status kvs_admin_gc(kvs_admin *a, const kvs_gc_options *opts, kvs_gc_report *report_out)
{
    if (!a || !opts || !report_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_gc: NULL argument");
    if (opts->namespace_id && !kvs__is_ns_dir_name(opts->namespace_id))
        return kvs__fail(KVS_ERR_INVALID,
                         "kvs_admin_gc: \"%s\" is not a namespace id (\"<model>-<16 hex>\")",
                         opts->namespace_id);
    if (opts->flags & ~(KVS_GC_TO_SIZE | KVS_GC_OLDER_THAN | KVS_GC_DRY_RUN))
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_gc: unknown flags 0x%x", opts->flags);
    const kvs_config *cfg = a->cfg;
    bool explicit_ = opts->flags & (KVS_GC_TO_SIZE | KVS_GC_OLDER_THAN);
    if (!explicit_ && opts->namespace_id)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_gc: a namespace needs a size or an age");
    const char *roots[KVS_MAX_STORE_PATHS];
    kvs_lease *leases = kvs__calloc(a->n, sizeof *leases);
    if (!leases)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory");
    kvs_collect_params p;
    kvs__collect_params_init(&p, cfg, "kvstash gc", roots, leases, NULL);
    /* Wait for the lease: a dead holder's expires after lease_ttl_s. */
    uint64_t deadline = kvs__now_ns() + (uint64_t)opts->lease_wait_ms * 1000000u;
    kvs_status st;
    for (;;) {
        st = kvs__leases_try(leases, a->n);
        if (st != KVS_ERR_BUSY || kvs__now_ns() >= deadline)
            break;
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    if (st == KVS_ERR_BUSY) {
        const char *who = "another collector";
        for (uint32_t i = 0; i < a->n; i++)
            if (leases[i].holder[0])
                who = leases[i].holder;
        st = kvs__fail(KVS_ERR_BUSY,
                       "the collector lease of the store is %s; waited %u ms (a dead holder's "
                       "lease is taken over after lease_ttl_s = %u s)",
                       who, opts->lease_wait_ms, cfg->lease_ttl_s);
    }
    if (st) {
        kvs__free(leases);
        return st;
    }
    gc_cb cb = {.o = opts};
    p.only_ns = opts->namespace_id;
    if (opts->tmp_grace_ms)
        p.tmp_grace_ns = opts->tmp_grace_ms * 1000000u;
    p.dry_run = opts->flags & KVS_GC_DRY_RUN;
    p.urgent = true;
    p.on_evict = opts->on_file ? gc_on_evict : NULL;
    p.on_evict_ctx = &cb;
    if (opts->flags & KVS_GC_DRY_RUN)
        p.max_candidates = 1u << 22;
    if (explicit_) {
        /* An explicit size or age replaces the configured limits. */
        p.cap_bytes = 0;
        p.floor_bytes = 0;
        if (opts->flags & KVS_GC_TO_SIZE)
            p.target_bytes = opts->to_bytes;
        if (opts->flags & KVS_GC_OLDER_THAN)
            p.older_than_ns = opts->older_than_s ? opts->older_than_s * 1000000000u : 1;
    }
    p.record = !p.only_ns;
    kvs_collect_result r;
    st = kvs__collect(&p, &r);
    kvs__leases_release(leases, a->n);
    kvs__free(leases);
    if (st)
        return st;
    if (r.lease_lost)
        return kvs__fail(KVS_ERR_BUSY, "kvs_admin_gc: lost the collector lease (a renewal "
                                       "failed or took too long); stopped early");
    kvs_gc_report g = {
        .used_before = r.used_before, .used_after = r.used_after,
        .chunks_before = r.chunks_before, .chunks_after = r.chunks_after,
        .files_removed = r.evicted_files, .bytes_removed = r.evicted_bytes,
        .orphans_removed = r.orphans_removed, .kept_touched = r.skipped_touched,
        .passes = r.passes, .target_missed = r.starved,
        .scan_seconds = (double)r.scan_ns / 1e9, .evict_seconds = (double)r.evict_ns / 1e9,
    };
    *report_out = g;
    return KVS_OK;
}

/* ---- removing a namespace ----------------------------------------------------------- */

/* Folders of a namespace below its own: <xx>/<yy>. */
#define NS_DEPTH 3

/* Removes the namespace folder `name` of parent: every file and symlink
 * (the link itself) of the store's layout, <ns>/<xx>/<yy>/<file>, then the
 * folders.  Iterative and of fixed depth: a folder deeper than the layout
 * is never entered (counted in *skipped, and its parents stay).  Every step
 * is relative to the descriptor of the folder being emptied, so a folder
 * swapped for a symlink meanwhile is removed as a link, never followed.
 * 0 or -errno (-ENOTEMPTY: something appeared or was left). */
static int remove_tree(int parent, const char *name, uint64_t *files, uint64_t *skipped)
{
    const kvs_io_ops *io = kvs__io();
    struct {
        DIR *d;
        char name[256];
    } lv[NS_DEPTH];
    struct stat st;
    lv[0].d = kvs__open_dir_at(parent, name);
    if (!lv[0].d) {
        int err = errno;
        if (err == ENOENT)
            return 0;
        if (err == ELOOP || err == ENOTDIR) { /* a link or a file planted there */
            if (io->unlinkat(parent, name, 0) == 0)
                (*files)++;
            return 0;
        }
        return -err;
    }
    snprintf(lv[0].name, sizeof lv[0].name, "%s", name);
    int top = 0, rc = 0;
    while (top >= 0) {
        int dfd = dirfd(lv[top].d);
        struct dirent *de = io->readdir(lv[top].d);
        if (!de) {
            io->closedir(lv[top].d);
            int pfd = top ? dirfd(lv[top - 1].d) : parent;
            if (io->unlinkat(pfd, lv[top].name, AT_REMOVEDIR) != 0 && errno != ENOENT && !rc)
                rc = -errno;
            top--;
            continue;
        }
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, ".."))
            continue;
        bool is_dir = de->d_type == DT_DIR ||
                      (de->d_type == DT_UNKNOWN && io->fstatat(dfd, n, &st) == 0 &&
                       S_ISDIR(st.st_mode));
        if (!is_dir) {
            if (io->unlinkat(dfd, n, 0) == 0)
                (*files)++;
            else if (errno != ENOENT && !rc)
                rc = -errno;
            continue;
        }
        if (top + 1 >= NS_DEPTH) {
            (*skipped)++;
            continue;
        }
        DIR *child = kvs__open_dir_at(dfd, n);
        if (!child) {
            if ((errno == ELOOP || errno == ENOTDIR) && io->unlinkat(dfd, n, 0) == 0)
                (*files)++; /* swapped for a link or a file since the listing */
            else if (errno != ENOENT && !rc)
                rc = -errno;
            continue;
        }
        top++;
        lv[top].d = child;
        snprintf(lv[top].name, sizeof lv[top].name, "%s", n);
    }
    return rc;
}

/* Deletes what an earlier removal left in .kvstash (it was interrupted, or
 * it held folders outside the layout: those stay, and cost each later
 * removal one bounded listing). */
static void remove_trash(int mfd, uint64_t *files, uint64_t *skipped)
{
    const kvs_io_ops *io = kvs__io();
    DIR *d = kvs__open_dir_at(mfd, ".");
    if (!d)
        return;
    char names[16][256];
    int n = 0;
    struct dirent *de;
    while ((de = io->readdir(d)) != NULL && n < 16)
        if (!strncmp(de->d_name, "trash-", 6))
            snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    io->closedir(d);
    for (int i = 0; i < n; i++)
        remove_tree(mfd, names[i], files, skipped);
}

kvs_status kvs_admin_remove_namespace(kvs_admin *a, const char *ns, uint64_t *files_removed_out)
{
    if (!a || !ns)
        return kvs__fail(KVS_ERR_INVALID, "kvs_admin_remove_namespace: NULL argument");
    if (!kvs__is_ns_dir_name(ns) || strchr(ns, '/'))
        return kvs__fail(KVS_ERR_INVALID,
                         "\"%s\" is not a namespace id (\"<model>-<16 hex>\", as kvstash ls "
                         "shows)",
                         ns);
    const kvs_io_ops *io = kvs__io();
    uint64_t files = 0, skipped = 0;
    uint32_t found = 0;
    kvs_status st = KVS_OK;
    for (uint32_t r = 0; r < a->n; r++) {
        char from[KVS_PATH_MAX], to[96];
        kvs__pathf(from, "%s/%s", a->paths[r], ns);
        int rfd = kvs__root_open(a->paths[r]);
        if (rfd < 0) {
            st = kvs__fail(kvs__errno_status(-rfd), "cannot open store path %s: %s", a->paths[r],
                           strerror(-rfd));
            break;
        }
        int mfd = kvs__meta_dir_open(rfd, true, a->cfg->file_mode);
        if (mfd < 0) {
            st = kvs__fail(kvs__errno_status(-mfd), "cannot use %s/" KVS_META_DIR ": it %s",
                           a->paths[r], kvs__meta_strerror(-mfd));
            io->close(rfd);
            break;
        }
        uint64_t rnd = 0;
        io->getrandom(&rnd, sizeof rnd);
        snprintf(to, sizeof to, "trash-%.48s.%016" PRIx64, ns, rnd);
        /* One rename makes the whole namespace vanish at once (by name from
         * the two folders' descriptors). */
        struct stat sb;
        int rc = 0;
        if (io->fstatat(rfd, ns, &sb) != 0) {
            rc = -errno;
        } else if (!S_ISDIR(sb.st_mode)) {
            /* a link or a file planted under the name: only it goes */
            rc = io->unlinkat(rfd, ns, 0) == 0 ? 0 : -errno;
            if (rc == 0) {
                files++;
                found++;
            }
            io->close(mfd);
            io->close(rfd);
            if (rc && rc != -ENOENT) {
                st = kvs__fail(kvs__errno_status(-rc), "cannot remove %s: %s", from,
                               strerror(-rc));
                break;
            }
            continue;
        } else if (renameat(rfd, ns, mfd, to) != 0) {
            rc = -errno;
        }
        if (rc) {
            io->close(mfd);
            io->close(rfd);
            if (rc == -ENOENT)
                continue;
            st = kvs__fail(kvs__errno_status(-rc), "cannot move %s out of the way: %s", from,
                           strerror(-rc));
            break;
        }
        found++;
        /* An engine still writing into the namespace holds a descriptor of
         * the folder, so its next files land in the trash until the trash
         * is gone (it then makes the namespace anew): empty it again while
         * that happens, a bounded number of times. */
        uint64_t skip = 0;
        rc = remove_tree(mfd, to, &files, &skip);
        for (int again = 0; rc == -ENOTEMPTY && !skip && again < 50; again++) {
            struct timespec pause = {0, 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
            rc = remove_tree(mfd, to, &files, &skip);
        }
        skipped += skip;
        if (rc && !(rc == -ENOTEMPTY && skip)) {
            st = kvs__fail(kvs__errno_status(-rc), "removing %s/" KVS_META_DIR "/%s (was %s): %s",
                           a->paths[r], to, from, strerror(-rc));
            io->close(mfd);
            io->close(rfd);
            break;
        }
        remove_trash(mfd, &files, &skipped);
        io->close(mfd);
        io->close(rfd);
    }
    if (skipped)
        kvs__log(KVS_LOG_WARN, "rm %s: %" PRIu64 " folders deeper than the store's layout "
                 "(<namespace>/<xx>/<yy>/<chunk>) were not entered; they stay in "
                 KVS_META_DIR "/trash-* (remove them by hand)", ns, skipped);
    if (!st && !found)
        st = kvs__fail(KVS_ERR_NOT_FOUND, "namespace %s is on none of the store paths", ns);
    if (files_removed_out)
        *files_removed_out = files;
    return st;
}
