/* test_util.h - helpers shared by the unit tests. */
#ifndef KVS_TEST_UTIL_H
#define KVS_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kvstash.h"

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

#endif
