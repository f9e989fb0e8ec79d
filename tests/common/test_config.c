/* test_config.c - see test_config.h. */
#include "test_config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

/* kvs_config_set, saying on stderr what was refused. */
static bool set(kvs_config *cfg, const char *key, const char *value)
{
    if (kvs_config_set(cfg, key, value) == KVS_OK)
        return true;
    fprintf(stderr, "tu_config: %s = %s refused: %s\n", key, value ? value : "(null)",
            kvs_last_error());
    return false;
}

kvs_config *tu_config(const char *dir, const char *chunk_size, const char *io_threads, ...)
{
    kvs_config *cfg = NULL;
    if (kvs_config_new(&cfg) != KVS_OK)
        return NULL;
    bool ok = set(cfg, "weka_path", dir) && set(cfg, "chunk_size", chunk_size) &&
              set(cfg, "local_cpu", "false") && set(cfg, "gds_io_threads", io_threads) &&
              set(cfg, "log_level", "error");
    va_list ap;
    va_start(ap, io_threads);
    for (const char *key; ok && (key = va_arg(ap, const char *)) != NULL;)
        ok = set(cfg, key, va_arg(ap, const char *));
    va_end(ap);
    if (!ok) {
        kvs_config_free(cfg);
        return NULL;
    }
    return cfg;
}
