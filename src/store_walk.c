/*
 * store_walk.c - every file of every store path, visited once (store_walk.h).
 *
 * The walk is the one reader of the store's whole tree: the collector
 * measures and evicts through it, kvstash ls, usage and verify list
 * through it.  It opens each folder relative to its parent's descriptor,
 * follows no symlink, and reports what it cannot read instead of stopping,
 * so a store that anyone can write leads nowhere and hides nothing.  The
 * names it recognizes are store.h's (kvs__is_chunk_name, kvs__is_temp_name,
 * kvs__is_ns_dir_name).
 */
#include "store_walk.h"

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
DIR *kvs__open_dir_at(int parent, const char *name)
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
    DIR *d = kvs__open_dir_at(parent, name);
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
    DIR *d = kvs__open_dir_at(parent, name);
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
        DIR *d = kvs__open_dir_at(rootfd, ".");
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

