/*
 * store.h - the store's on-disk protocol beyond the chunk payload: every
 * name the library makes on the mount (paths, the fan-out, temporary
 * names, and their parsing), the .kvstash/ files and their
 * write-to-temp-then-rename helper, the O_DIRECT probe, and the life of a
 * chunk file (unique temporary, publication that never replaces, removal
 * of the file examined).  One room, so that writers, the collector, verify
 * and doctor cannot disagree on what lives on the mount; the format inside
 * a chunk file is chunk_file.h's.  See docs/architecture.md.
 */
#ifndef KVS_STORE_H
#define KVS_STORE_H

#include "config.h"
#include "key.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <sys/stat.h>

#define KVS_PATH_MAX PATH_MAX
#define KVS_TMP_SUFFIX ".tmp"
#define KVS_NAMESPACE_FILE "NAMESPACE.json"
/* Per store path: <root>/.kvstash holds the store id, the collector lease,
 * the last usage measurement and the collector's log. */
#define KVS_META_DIR ".kvstash"
#define KVS_STORE_ID_FILE "store-id"

/* ---- names on the mount ---------------------------------------------------
 *
 * The grammar of every name the library makes in a store is written here
 * and parsed here, once.  A temporary file of any kind (a chunk being
 * written, a metadata file being replaced, the lease's private names, the
 * O_DIRECT and cuFile probes) is "<prefix>.<16 hex>.tmp": the orphan
 * collector removes exactly the names kvs__is_temp_name accepts, so a
 * writer that made its own name could leave files nobody ever collects. */

/* snprintf into a KVS_PATH_MAX buffer (the one path builder).  Store paths
 * are refused at open when long enough to make a path overflow. */
void kvs__pathf(char *buf, const char *fmt, ...) KVS_PRINTF(2, 3);

/* 64 random bits for a temporary name (getrandom; the clock and the pid
 * where that fails). */
uint64_t kvs__temp_suffix(void);
/* "<prefix>.<suffix as 16 lowercase hex>.tmp" into buf (cap bytes); false
 * if it did not fit (truncated). */
bool kvs__temp_name(char *buf, size_t cap, const char *prefix, uint64_t suffix);

/* "<anything>.<16 hex>.tmp": a temporary file (see above). */
bool kvs__is_temp_name(const char *name);
/* 64 lowercase hex digits: a chunk file; fills key. */
bool kvs__is_chunk_name(const char *name, uint8_t key[KVS_KEY_BYTES]);
/* "<model>-<16 hex>": a namespace folder. */
bool kvs__is_ns_dir_name(const char *name);

/* The fan-out folder of a key below its namespace folder: "xx/yy", the
 * key's first two bytes in hex (so 65536 leaf folders share the chunks). */
#define KVS_FANOUT_LEN 6
void kvs__fanout(const uint8_t *key, char buf[KVS_FANOUT_LEN]);

/* Does the filesystem of dirfd take O_DIRECT?  Creates a temporary file
 * named from prefix, writes and reads back one aligned block with
 * O_DIRECT, removes it.  The one probe: the engine (kvs__store_open) and
 * `kvstash doctor` both ask it, so they cannot disagree.  Returns 0 (it
 * does) or the errno of the step that failed, named in *step_out ("create",
 * "write", "read"; "create" with ENOSPC or EDQUOT means no answer yet). */
int kvs__direct_probe(int dirfd, const char *prefix, const char **step_out);

/* ---- metadata files -------------------------------------------------------
 *
 * Every file the store keeps beside the chunks (.kvstash/ and what is in
 * it, NAMESPACE.json, the lease, usage.json, collector.log, store-id) is
 * reached through these, never by a path: a store path is resolved once
 * (kvs__root_open; the root itself may be a symlink to the mount), and
 * everything below it is opened relative to a descriptor, following no
 * symlink, without blocking on a FIFO, and accepted only if it is a regular
 * file (or a folder where a folder belongs).  So a symlink, a FIFO, a
 * socket or a device planted by anyone who can write the store leads
 * nowhere and hangs nothing: it is an error that names it. */

/* What kvs__meta_open answers (as -KVS_ENOTREG) for a name that exists but
 * is not a regular file; kvs__meta_strerror says what it is. */
#define KVS_ENOTREG EMEDIUMTYPE

/* Opens a store path (following it if it is a symlink, once) as a
 * directory descriptor (O_RDONLY, or O_PATH where it cannot be read).
 * Returns fd >= 0 or -errno. */
int kvs__root_open(const char *root);

/* Opens <rootfd>/.kvstash with O_DIRECTORY | O_NOFOLLOW (a symlink there is
 * -ELOOP, anything but a folder -ENOTDIR); with create, makes it first with
 * the folder mode for file_mode (kvs__dir_mode; the umask applies, as to
 * every folder of the store), so every user who may write chunks may also
 * take the lease and collect.  Returns fd >= 0 or -errno. */
int kvs__meta_dir_open(int rootfd, bool create, uint32_t file_mode);

/* Opens `name` (no '/') in dirfd with flags | O_NOFOLLOW | O_NONBLOCK |
 * O_CLOEXEC, checks with fstat that it is a regular file, then clears
 * O_NONBLOCK.  Returns fd >= 0 or -errno: -ELOOP for a symlink,
 * -KVS_ENOTREG for anything else that is not a regular file. */
int kvs__meta_open(int dirfd, const char *name, int flags, mode_t mode);

/* Text for an error of kvs__meta_open/read/write: "is a FIFO, not a regular
 * file", "is a symbolic link (not followed)", or strerror. */
const char *kvs__meta_strerror(int err);

/* Reads a small metadata file whole into buf (NUL-terminated, at most
 * cap - 1 bytes).  Returns its length or -errno (as kvs__meta_open). */
int kvs__meta_read(int dirfd, const char *name, char *buf, size_t cap);

#define KVS_META_SYNC 1u      /* fsync the file before and the folder after */
#define KVS_META_NOREPLACE 2u /* keep an existing file (returns 1) */

/* Writes `name` in dirfd whole, atomically: a unique temporary file
 * (".<name>.<16 hex>.tmp", mode file_mode), then renameat over the name.
 * With KVS_META_SYNC the data is on disk before the rename and the rename
 * before the return, so a crash leaves the old file or the new one, never
 * an empty one.  Returns 0, 1 (NOREPLACE and the name existed), -errno. */
int kvs__meta_write(int dirfd, const char *name, const void *data, size_t len,
                    uint32_t file_mode, unsigned flags);

/* Removes `name` from dirfd only if it is still the file examined (same
 * st_dev and st_ino as *examined): it is first renamed to a private
 * temporary name, checked there, and put back if another file took its
 * place in between.  Returns 0 removed, 1 not there or not the same file
 * (nothing removed), -errno. */
int kvs__unlink_examined(int dirfd, const char *name, const struct stat *examined);

/* The mode of a store folder whose files get file_mode. */
mode_t kvs__dir_mode(uint32_t file_mode);

typedef struct kvs_fstore {
    uint32_t npaths;
    char *root[KVS_MAX_STORE_PATHS];       /* store paths, absolute */
    char *ns_path[KVS_MAX_STORE_PATHS];    /* <root>/<namespace dir> */
    /* The namespace folders, opened once (O_PATH): every chunk file is
     * reached from here without following a symlink (io_ops open_beneath),
     * so nothing planted in the store leads outside it. */
    int ns_fd[KVS_MAX_STORE_PATHS];
    uint32_t nfds;                         /* ns_fd[0..nfds) are open */
    /* The store paths, resolved once at open (kvs__root_open): the
     * namespace folders are made and reopened from these, by name. */
    int root_fd[KVS_MAX_STORE_PATHS];
    uint32_t nroot_fds;                    /* root_fd[0..nroot_fds) are open */
    uint64_t root_id[KVS_MAX_STORE_PATHS]; /* store ids: which root holds a key */
    const kvs_ns *ns;                      /* the engine's, to remake its folder */
    bool direct;                           /* O_DIRECT in use (__atomic: a
                                              re-probe may turn it on) */
    char direct_reason[160];               /* why O_DIRECT is on or off */
    uint64_t direct_retry_ns;              /* __atomic, monotonic ns: probe
                                              again after this (the last probe
                                              found no room); 0: decided */
    bool direct_probing;                   /* __atomic: a re-probe runs */
    uint32_t file_mode;
    bool durable;
    bool noatime;                          /* O_NOATIME accepted so far */
} kvs_fstore;

/* Checks the store paths (a configured weka_path must exist; the default
 * folder is created), creates the namespace folders and their NAMESPACE.json
 * and probes O_DIRECT when use_direct_io asks for it. */
kvs_status kvs__store_open(kvs_fstore *s, const kvs_config *cfg, const kvs_ns *ns);
void kvs__store_close(kvs_fstore *s);
/* The same, but gives up with KVS_ERR_TIMEOUT after timeout_ns (a hung
 * mount must not hang the caller); the work then finishes, and is undone,
 * on a thread of its own. */
kvs_status kvs__store_open_bounded(kvs_fstore *s, const kvs_config *cfg, const kvs_ns *ns,
                                   uint64_t timeout_ns);

/* Which store path holds key (spread by key across several mounts). */
uint32_t kvs__store_path_index(const kvs_fstore *s, const uint8_t *key);

/* The id of a store path: 64 random bits kept in <root>/.kvstash/store-id,
 * made by the first engine that opens the path (create) and the same for
 * every host that mounts it, whatever path it mounts it at.  Written
 * durably; an empty one (a crash before it reached the disk) is replaced
 * when create is set. */
kvs_status kvs__store_root_id(const char *root, bool create, uint32_t file_mode,
                              uint64_t *id_out);

/* Which of n store paths with these ids holds key: rendezvous (highest
 * random weight) hashing of the key's bytes 8..15 with each id.  It depends
 * on the set of ids only, not on the order or the names of the paths, and
 * adding or removing one path moves only the keys that path gains or
 * loses. */
uint32_t kvs__store_pick(const uint64_t *ids, uint32_t n, const uint8_t *key);
/* <ns_path>/<xx>/<yy>/<64 hex>; buf of KVS_PATH_MAX. */
void kvs__store_chunk_path(const kvs_fstore *s, const uint8_t *key, char *buf);

typedef enum kvs_probe {
    KVS_PROBE_PRESENT = 0,
    KVS_PROBE_ABSENT = 1,
    KVS_PROBE_BAD = 2,     /* exists but is not a regular file of the right size */
    KVS_PROBE_ERROR = 3,   /* the call failed; errno kept in *err_out */
} kvs_probe;

/* One metadata call: is a plausible chunk file of `payload` logical bytes
 * there (the size of a plain or a compressed file, kvs__chunk_size_plausible)?  (An lstat of the
 * path: a symlinked fan-out folder planted in the store can make a chunk
 * look present, never readable: the read refuses the path.) */
kvs_probe kvs__store_probe(kvs_fstore *s, const uint8_t *key, uint64_t payload, int *err_out);

/* Opens a chunk for reading: no symlink anywhere below the namespace
 * folder (-ELOOP), no FIFOs or directories (-EISDIR).  Returns fd >= 0 or
 * -errno; *direct_out (may be NULL) says whether fd has O_DIRECT (then
 * transfers to caller memory must be aligned). */
int kvs__store_open_read(kvs_fstore *s, const uint8_t *key, struct stat *st_out,
                         bool *direct_out);

/* Creates a unique temporary file next to the chunk's final name, making
 * the fan-out folders as needed.  Returns fd >= 0 (and *suffix_out names
 * it, *direct_out says whether it has O_DIRECT) or -errno.  An O_DIRECT
 * probe that found no room (ENOSPC, EDQUOT) at open is repeated here, at
 * most once a second, until it can decide. */
int kvs__store_create_temp(kvs_fstore *s, const uint8_t *key, uint64_t *suffix_out,
                           bool *direct_out);
void kvs__store_temp_path(const kvs_fstore *s, const uint8_t *key, uint64_t suffix, char *buf);

/* Publishes a complete temporary file under the final name.  0: published;
 * 1: another writer published first (ours is removed); -errno: failed (ours
 * is removed). */
int kvs__store_publish(kvs_fstore *s, const uint8_t *key, uint64_t suffix);
void kvs__store_discard(kvs_fstore *s, const uint8_t *key, uint64_t suffix);

/* Removes a chunk only if it is still the file examined (same st_dev and
 * st_ino): 0 removed, 1 not there or another file now, -errno. */
int kvs__store_remove_examined(kvs_fstore *s, const uint8_t *key, const struct stat *examined);

/* Removes a published chunk: 0 removed, 1 was not there, -errno. */
int kvs__store_remove(kvs_fstore *s, const uint8_t *key);

/* Sets the chunk's access time to now (its eviction clock). */
void kvs__store_touch(kvs_fstore *s, const uint8_t *key);

#endif
