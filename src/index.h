/*
 * index.h - what this engine knows about chunks on the store: a cache of
 * the store, never its truth (other instances add and remove files), so
 * PRESENT means "try it" and ABSENT expires after negative_cache_ms.  It
 * saves a metadata call per lookup; index.c says how.
 */
#ifndef KVS_INDEX_H
#define KVS_INDEX_H

#include "internal.h"

typedef struct kvs_index kvs_index;

typedef enum kvs_index_state {
    KVS_IDX_UNKNOWN = 0,  /* ask the store */
    KVS_IDX_PRESENT = 1,  /* a valid-looking file exists */
    KVS_IDX_ABSENT = 2,   /* recently found absent (negative cache) */
    KVS_IDX_WRITING = 3,  /* this engine is writing it now */
} kvs_index_state;

kvs_status kvs__index_create(kvs_index **out);
void kvs__index_destroy(kvs_index *idx);

/* The state of key now (an expired ABSENT entry reads as UNKNOWN). */
kvs_index_state kvs__index_get(kvs_index *idx, const uint8_t *key, uint64_t now_ns);
/* fresh_ns: when the file's access time on the store was last set (now, for
 * a chunk this engine just wrote), or 0 when unknown. */
void kvs__index_set_present(kvs_index *idx, const uint8_t *key, uint64_t fresh_ns);
void kvs__index_set_absent(kvs_index *idx, const uint8_t *key, uint64_t expires_ns);
void kvs__index_forget(kvs_index *idx, const uint8_t *key);

/* Marks key WRITING unless it is PRESENT or WRITING; true when this caller
 * now owns the write.  The owner ends it with set_present or forget. */
bool kvs__index_begin_write(kvs_index *idx, const uint8_t *key, uint64_t now_ns);

/* Records an access; true when the chunk's access time on the store should
 * be refreshed (the last refresh by this engine is older than interval_ns). */
bool kvs__index_touch(kvs_index *idx, const uint8_t *key, uint64_t now_ns, uint64_t interval_ns);

/* Entries in state PRESENT. */
uint64_t kvs__index_present(kvs_index *idx);

#endif
