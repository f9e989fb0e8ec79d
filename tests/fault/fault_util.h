/*
 * fault_util.h - what the fault, crash and concurrency tests share: KV
 * buffers whose content is a known function of the prompt, so every loaded
 * byte can be checked, and a walk of the store that verifies every file.
 */
#ifndef KVS_FAULT_UTIL_H
#define KVS_FAULT_UTIL_H

#include "kvstash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A contiguous host buffer [layer][plane][token][row]. */
typedef struct fu_kv {
    uint8_t *mem;
    size_t tokens;
    uint32_t layers, planes, row;
    void **layer_ptrs;
    kvs_kv kv;
} fu_kv;

int fu_kv_init(fu_kv *b, const kvs_namespace *ns, size_t tokens);
void fu_kv_free(fu_kv *b);
/* Fills the rows of tokens[0..n) with their content: a function of the
 * token id, its position, layer, plane and byte, as a model's KV is a
 * function of the prefix (equal prompts give equal bytes). */
void fu_kv_fill(fu_kv *b, const uint32_t *tokens, size_t n);
/* Poisons every byte. */
void fu_kv_poison(fu_kv *b);
/* Number of rows among the first n tokens that differ from their content. */
size_t fu_kv_bad_rows(const fu_kv *b, const uint32_t *tokens, size_t n);

/* Fills kv with the content of the tokens t (kv->tokens of them), stores
 * them through e and waits: the status of the first call that fails, else
 * KVS_OK with the operation's result in *r.  No cmocka assertion, so a
 * forked child may call it too. */
kvs_status fu_store(kvs_engine *e, fu_kv *kv, const uint32_t *t, kvs_op_result *r);
/* Poisons kv and retrieves the tokens t (kv->tokens of them) into it: the
 * status of kvs_retrieve, *got the tokens loaded and *bad_rows the rows
 * among them that differ from their content. */
kvs_status fu_retrieve(kvs_engine *e, fu_kv *kv, const uint32_t *t, size_t *got,
                       size_t *bad_rows);

/* The fixture of the store-safety tests (test_meta, test_security): below
 * a fresh temporary folder top, the store root/ and outside/, a folder next
 * to it that nothing may touch; src and dst hold `tokens` tokens of ns. */
typedef struct fu_fixture {
    char *top;
    char root[4096];
    char root2[4096]; /* a second store, made by the tests that want one */
    char outside[4096];
    fu_kv src, dst;
} fu_fixture;
/* A cmocka setup's work: the environment cleared, the folders made
 * (outside/ with mode outside_mode) and the KV buffers; in *state. */
fu_fixture *fu_setup(void **state, const char *tag, const kvs_namespace *ns, size_t tokens,
                     mode_t outside_mode);
/* Removes and frees a fixture's temporary folder dir, frees src and dst. */
void fu_release(char *dir, fu_kv *src, fu_kv *dst);
/* The cmocka teardown of a fu_fixture. */
int fu_teardown(void **state);

/* Token ids of a prompt: the first `shared` come from seed `shared_seed`,
 * the rest from `seed`. */
void fu_tokens(uint32_t *t, size_t n, uint32_t seed, uint32_t shared_seed, size_t shared);

/* What a walk of a store folder found. */
typedef struct fu_store_report {
    size_t finals;      /* files under a final (64 hex) name */
    size_t bad_finals;  /* of which do not verify */
    size_t temps;       /* temporary files (".<...>.tmp", and "*.tmp" in
                           .kvstash) */
    size_t others;      /* anything else but NAMESPACE.json and folders */
    uint64_t final_bytes;
    char first_bad[512];  /* the first bad final or unexpected path */
} fu_store_report;

/* Walks root (every namespace below it), verifying every final file in
 * full: header, key equal to the name, size, every segment checksum. */
int fu_check_store(const char *root, fu_store_report *r);

/* Runs the collector (kvs_admin_gc) on root with a 1 ms grace for
 * temporary files and no chunk eviction; 0 on success. */
int fu_collect_temps(const char *root, uint64_t *removed_out);

/* Verifies one chunk file fully; 0 when it is valid. */
int fu_verify_chunk_file(const char *path);

/* Whether a file name is one of the library's temporary names, which the
 * collector reclaims after tmp_grace_s. */
bool fu_is_temp_name(const char *name);

/* Monotonic milliseconds. */
double fu_now_ms(void);

#endif
