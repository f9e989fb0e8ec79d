/*
 * store.h - chunk files on the shared mount: paths, publishing, probing.
 */
#ifndef KVS_STORE_H
#define KVS_STORE_H

#include "config.h"
#include "key.h"

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

typedef struct kvs_fstore {
    uint32_t npaths;
    char *root[KVS_MAX_STORE_PATHS];       /* store paths, absolute */
    char *ns_path[KVS_MAX_STORE_PATHS];    /* <root>/<namespace dir> */
    /* The namespace folders, opened once (O_PATH): every chunk file is
     * reached from here without following a symlink (io_ops open_beneath),
     * so nothing planted in the store leads outside it. */
    int ns_fd[KVS_MAX_STORE_PATHS];
    uint32_t nfds;                         /* ns_fd[0..nfds) are open */
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
 * every host that mounts it, whatever path it mounts it at. */
kvs_status kvs__store_root_id(const char *root, bool create, uint64_t *id_out);

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

/* One metadata call: is a plausible chunk file there?  (An lstat of the
 * path: a symlinked fan-out folder planted in the store can make a chunk
 * look present, never readable: the read refuses the path.) */
kvs_probe kvs__store_probe(kvs_fstore *s, const uint8_t *key, uint64_t file_bytes, int *err_out);

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

/* Removes a published chunk: 0 removed, 1 was not there, -errno. */
int kvs__store_remove(kvs_fstore *s, const uint8_t *key);

/* Sets the chunk's access time to now (its eviction clock). */
void kvs__store_touch(kvs_fstore *s, const uint8_t *key);

#endif
