/*
 * lease.h - the collector lease: one holder at a time for a store path,
 * across every process and every host that mounts it.
 *
 * A lease is the file <root>/.kvstash/collector.lease.  Its inode is made
 * once (a spare, collector.lease.spare, when a collector starts) and then
 * only renamed or rewritten in place: taken by renaming the spare to a
 * private name, writing it and publishing it with a rename that refuses to
 * replace; renewed by writing the next generation over it; taken over from
 * a holder that stopped renewing by renaming it away first; released by
 * renaming it back to the spare.  No step needs a new inode or block once
 * the spare exists, so a full filesystem does not lock the collector out.  Expiry is
 * judged only by each process's own monotonic clock, never by comparing wall
 * clocks of different hosts; docs/capacity.md gives the argument.
 */
#ifndef KVS_LEASE_H
#define KVS_LEASE_H

#include "store.h"

#define KVS_LEASE_FILE "collector.lease"

typedef struct kvs_lease {
    char path[KVS_PATH_MAX];      /* <root>/.kvstash/collector.lease */
    char dir[KVS_PATH_MAX];       /* <root>/.kvstash (for messages) */
    char root[KVS_PATH_MAX];      /* the store path; .kvstash is reached from
                                     it by descriptor (store.h) */
    uint32_t file_mode;           /* of the lease files (0644 unless set) */
    uint64_t ttl_ns;              /* lease_ttl_s */
    uint64_t grace_ns;            /* safety margin, max(ttl / 10, 100 ms) */
    char purpose[48];             /* shown to operators ("engine", "kvstash gc") */

    /* holder state */
    bool held;
    char nonce[33];               /* 32 hex: identifies this holding */
    uint64_t generation;          /* bumped by every renewal */
    uint64_t acquired_wall_ns;
    uint64_t valid_until;         /* monotonic ns: act only before this */
    uint64_t renew_after;         /* monotonic ns: renew once past this */

    /* contender state: the holder's content as last seen, and since when */
    bool seen;
    uint64_t seen_hash;
    uint64_t seen_since;          /* monotonic ns */
    char holder[256];             /* who holds it (after KVS_ERR_BUSY) */
} kvs_lease;

/* Sets up a lease object for root (not held). */
void kvs__lease_init(kvs_lease *l, const char *root, uint32_t ttl_s, const char *purpose);

/* One attempt: KVS_OK when held (already or now), KVS_ERR_BUSY when another
 * live holder has it (l->holder says who), another status on I/O errors.
 * Takes over a lease whose holder stopped renewing for ttl + 2 * grace as
 * seen by this process's monotonic clock (so call it repeatedly), or at
 * once when the holder is a process of this machine and pid namespace that
 * no longer exists. */
kvs_status kvs__lease_try(kvs_lease *l);

/* Renews when due.  KVS_OK while still held; KVS_ERR_BUSY once lost (then
 * the caller must stop acting as the holder). */
kvs_status kvs__lease_keep(kvs_lease *l);

/* Held, and this process's clock says the holding has not run out. */
bool kvs__lease_valid(const kvs_lease *l);

/* Gives the lease back: the file, if it is still ours, becomes the spare,
 * so taking the lease again needs no new inode. */
void kvs__lease_release(kvs_lease *l);

/* Makes the spare lease file of l's root if there is none (and .kvstash
 * exists): a collector does at start, while the filesystem has room, so
 * that taking the lease later never needs a new inode or block.  Errors are
 * ignored (the first take creates a file, or reports why it cannot). */
void kvs__lease_prepare(kvs_lease *l);

/* The state of the lease of root, one line for operators: "free" or "held
 * by HOST pid N (PURPOSE), renewed S s ago, generation G".  Caller frees. */
char *kvs__lease_describe(const char *root);

/* Test hook: shifts the wall clock this process writes into lease files
 * (simulated clock skew).  The protocol must not care. */
void kvs__lease_test_wall_offset(int64_t offset_ns);

#endif
