/*
 * store_walk.h - visiting every file of every store path: chunk files and
 * temporary files, namespace by namespace, without following a symlink.
 * Used by a collection (collect.h) and by the operator API (admin.c).
 */
#ifndef KVS_STORE_WALK_H
#define KVS_STORE_WALK_H

#include "store.h"

#include <dirent.h>
#include <sys/stat.h>

/* Opens the folder `name` of the folder parent for listing, following no
 * symlink (a folder swapped for a symlink is refused, ELOOP, not
 * followed) and never blocking on a FIFO.  NULL with errno set. */
DIR *kvs__open_dir_at(int parent, const char *name);

/* ---- walking every file of the store ------------------------------------ */

typedef enum kvs_entry_kind {
    KVS_ENTRY_CHUNK = 0, /* a chunk file name (st says whether it is a file) */
    KVS_ENTRY_TEMP = 1,  /* a temporary file name */
} kvs_entry_kind;

typedef struct kvs_walk_entry {
    uint32_t root;           /* index of the store path */
    uint32_t ns;             /* index in kvs_walk.ns_names; UINT32_MAX: none */
    const char *path;        /* full path */
    const char *name;        /* its last component */
    int dirfd;               /* its folder, open during the call: act on the
                                file by name from here (never by path) */
    kvs_entry_kind kind;
    uint8_t key[KVS_KEY_BYTES]; /* CHUNK */
    struct stat st;          /* lstat, when kvs_walk.stat_files */
} kvs_walk_entry;

typedef struct kvs_walk {
    const char *const *roots;
    uint32_t nroots;
    const char *only_ns;     /* NULL: every namespace */
    bool stat_files;         /* lstat every file; else st is zero */
    /* Each file; nonzero stops the walk. */
    int (*on_entry)(void *ctx, const kvs_walk_entry *e);
    /* After each leaf folder; nonzero stops the walk. */
    int (*on_dir)(void *ctx);
    void *ctx;
    /* Filled by the walk: namespace folder names seen (index = entry.ns). */
    char **ns_names;
    uint32_t nns, ns_cap;
    uint64_t dirs;           /* leaf folders visited */
    uint64_t skipped;        /* folders outside the layout, not entered */
    int first_error;         /* errno of the first folder that could not be
                                read (ENOENT ignored: removed under us) */
} kvs_walk;

/* KVS_OK (also when a callback stopped it) or NOMEM. */
kvs_status kvs__walk(kvs_walk *w);
void kvs__walk_clear(kvs_walk *w);

/* Last access of a chunk file: the later of atime and mtime (readers set
 * atime at most once per access_interval_s; mtime covers filesystems that
 * never update atime), in wall-clock ns. */
int64_t kvs__access_ns(const struct stat *st);

#endif
