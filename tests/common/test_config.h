/* test_config.h - the engine config the tests start from.  Free of cmocka,
 * so programs that are not cmocka suites (tests/fault/test_crash.c,
 * test_soak.c, tests/fuse/test_fuse_hang.c) use it as the suites do. */
#ifndef KVS_TEST_CONFIG_H
#define KVS_TEST_CONFIG_H

#include "kvstash.h"

/* A config of the store in dir, chunk_size tokens a chunk, no CPU tier,
 * io_threads I/O threads and only errors logged, then each further key,
 * value pair up to a NULL key.  NULL where a value is refused, with the key
 * and the reason on stderr: no cmocka assertion, so a forked child may call
 * it too. */
kvs_config *tu_config(const char *dir, const char *chunk_size, const char *io_threads, ...)
    __attribute__((sentinel));

#endif
