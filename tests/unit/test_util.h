/* test_util.h - helpers shared by the unit tests. */
#ifndef KVS_TEST_UTIL_H
#define KVS_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kvstash.h"
#include "test_config.h"

/* Describes the contiguous host buffer mem, [layer][plane][token][row] of
 * num_tokens tokens, as *kv (slot i = token i); layers receives the
 * num_layers layer pointers and must outlive kv. */
void tu_kv_contiguous(kvs_kv *kv, uint8_t *mem, void **layers, uint32_t num_layers,
                      uint32_t planes, size_t num_tokens, size_t row_bytes);

/* A fresh directory under $TMPDIR (or /tmp); removed by tu_rmtree. */
char *tu_mkdtemp(const char *tag);
/* rm -rf, refusing anything outside the temporary folder. */
void tu_rmtree(const char *path);
/* Reads a whole file; NULL on failure. *len_out optional. */
char *tu_read_file(const char *path, size_t *len_out);
int tu_write_file(const char *path, const void *data, size_t len);
/* Number of open file descriptors of this process. */
int tu_count_fds(void);
/* Captures library log lines into a buffer (tu_logs()), or stops. */
void tu_capture_logs(int on);
const char *tu_logs(void);
/* Unsets every LMCACHE_* and KVSTASH_* variable. */
void tu_clear_env(void);

/* ---- what the engine tests start from -------------------------------------- */

/* A fixture's folder: the environment cleared (tu_clear_env) and a fresh
 * temporary folder, asserted. */
char *tu_fixture_dir(const char *tag);
/* Undoes a fixture: frees cfg (may be NULL), removes and frees dir. */
void tu_fixture_done(char *dir, kvs_config *cfg);

/* The fixture most engine tests share. */
typedef struct tu_fixture {
    char *dir;       /* the store: a fresh temporary folder */
    kvs_config *cfg; /* the test's config, or NULL where each test makes its own */
    kvs_namespace ns;
} tu_fixture;
/* A cmocka setup's first step: a zeroed tu_fixture in *state, its dir from
 * tu_fixture_dir(tag). */
tu_fixture *tu_setup(void **state, const char *tag);
/* The cmocka teardown of a tu_fixture: tu_fixture_done, then the fixture. */
int tu_teardown(void **state);

/* A bf16 MHA namespace of one rank. */
kvs_namespace tu_mha_ns(const char *model, uint32_t layers, uint32_t heads, uint32_t dim);

/* ---- prompts and their KV ---------------------------------------------------- */

/* Prompt seed: n token ids, (i + 1) * 2654435761 ^ seed. */
void tu_tokens(uint32_t *t, size_t n, uint32_t seed);
/* Byte i of mem[0..n) becomes i * 131 + seed. */
void tu_fill_pattern(uint8_t *mem, size_t n, uint8_t seed);

/* A contiguous host buffer of L layers x 2 planes x T tokens of R-byte rows
 * (tu_kv_contiguous describes it in .kv), as type `name`. */
#define TU_KV_TYPE(name, L, T, R)                                                            \
    typedef struct name {                                                                    \
        uint8_t mem[(size_t)(L) * 2 * (T) * (R)];                                            \
        void *layers[L];                                                                     \
        kvs_kv kv;                                                                           \
    } name

/* kvs_store of n tokens from kv, waited for; asserts both calls succeed
 * and leaves the operation's result in *r. */
void tu_store_wait(kvs_engine *e, const uint32_t *t, size_t n, const kvs_kv *kv,
                   kvs_op_result *r);
/* tu_store_wait through a fresh engine of cfg and ns, closed after; asserts
 * that all n tokens were stored.  *s_out, where not NULL: that engine's
 * counters after the store. */
void tu_store_all(const kvs_config *cfg, const kvs_namespace *ns, const uint32_t *t, size_t n,
                  const kvs_kv *kv, kvs_stats *s_out);
/* The path of chunk idx of the n tokens t (chunk tokens a chunk) in the
 * store of a fresh engine of cfg and ns; path holds KVS_PATH_MAX bytes. */
void tu_chunk_path(const kvs_config *cfg, const kvs_namespace *ns, const uint32_t *t, size_t n,
                   size_t chunk, size_t idx, char *path);

#endif
