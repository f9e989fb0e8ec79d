/* fuzz_config.c - see fuzz_config.h. */
#include "fuzz_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fz_keys[] = {
    "chunk_size", "local_cpu", "max_local_cpu_size", "weka_path", "cufile_buffer_size",
    "save_unfull_chunk", "gds_io_threads", "use_direct_io", "io_path", "io_timeout_ms",
    "store_timeout_ms", "negative_cache_ms", "max_pending_store_size", "max_store_size",
    "store_high_watermark", "store_low_watermark", "min_free_space", "access_interval_s",
    "tmp_grace_s", "lease_ttl_s", "collect_interval_s", "failure_threshold", "file_mode", "durable_writes",
    "namespace_salt", "log_level",
    /* aliases */
    "gds_path", "gds_buffer_size", "disk_io_threads",
};
const size_t fz_nkeys = sizeof fz_keys / sizeof fz_keys[0];

char *fz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static void violation(const char *what, const char *key, const char *a, const char *b)
{
    fprintf(stderr, "fuzz: %s for %s: \"%s\" vs \"%s\"\n", what, key, a ? a : "(null)",
            b ? b : "(null)");
    abort();
}

void fz_check_config(const kvs_config *cfg)
{
    kvs_config *copy = NULL;
    if (kvs_config_copy(cfg, &copy) != KVS_OK)
        violation("copy failed", "", kvs_last_error(), "");
    for (size_t i = 0; i < fz_nkeys; i++) {
        char *v = NULL, *v2 = NULL;
        kvs_config_source src;
        if (kvs_config_get(cfg, fz_keys[i], &v, &src) != KVS_OK)
            violation("get failed", fz_keys[i], kvs_last_error(), "");
        /* A value that came from somewhere must read back the same after
         * going round its text form (defaults may be unset, like
         * weka_path, which has no text form to set). */
        if (src != KVS_SOURCE_DEFAULT) {
            if (kvs_config_set(copy, fz_keys[i], v) != KVS_OK)
                violation("its own text is rejected", fz_keys[i], v, kvs_last_error());
            if (kvs_config_get(copy, fz_keys[i], &v2, NULL) != KVS_OK)
                violation("get after set failed", fz_keys[i], v, "");
            if (strcmp(v, v2) != 0)
                violation("text form does not round-trip", fz_keys[i], v, v2);
        }
        kvs_free(v);
        kvs_free(v2);
    }
    char *text = NULL;
    if (kvs_config_to_json(cfg, &text) != KVS_OK || !text || text[0] != '{')
        violation("to_json failed", "", kvs_last_error(), "");
    kvs_free(text);
    if (kvs_config_to_text(cfg, &text) != KVS_OK)
        violation("to_text failed", "", kvs_last_error(), "");
    kvs_free(text);
    kvs_config_free(copy);
}
