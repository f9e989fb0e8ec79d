/* fuzz_env.c - libFuzzer target for the values of the environment
 * variables: the first byte picks a key and how the value arrives (through
 * kvs_config_set, or as LMCACHE_<KEY> / KVSTASH_<ENTRY> read by
 * kvs_config_apply_env), the rest is the value. */
#include "fuzz_config.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Top-level keys are LMCACHE_<KEY>; extra_config entries KVSTASH_<ENTRY>. */
static const char *const top_level[] = {"chunk_size",  "local_cpu",         "max_local_cpu_size",
                                        "weka_path",   "cufile_buffer_size", "save_unfull_chunk",
                                        "gds_path",    "gds_buffer_size"};

static void env_name(const char *key, char *out, size_t cap)
{
    const char *prefix = "KVSTASH_";
    for (size_t i = 0; i < sizeof top_level / sizeof top_level[0]; i++)
        if (!strcmp(key, top_level[i]))
            prefix = "LMCACHE_";
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (const char *k = key; *k && n + 1 < cap; k++)
        out[n++] = (char)toupper((unsigned char)*k);
    out[n] = '\0';
}

extern char **environ;

static void clear_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, "LMCACHE_", 8) || !strncmp(*e, "KVSTASH_", 8)) {
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                break;
            }
        if (!name[0])
            return;
        unsetenv(name);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet++) {
        kvs_set_log_level(KVS_LOG_ERROR);
        clear_env(); /* only the variable under test is set */
    }
    if (size < 1)
        return 0;
    /* One extra slot: the whole LMCACHE_EXTRA_CONFIG variable. */
    size_t k = (size_t)(data[0] & 0x7f) % (fz_nkeys + 1);
    bool via_env = data[0] & 0x80;
    char *value = fz_strndup(data + 1, size - 1);
    const char *key = k < fz_nkeys ? fz_keys[k] : "extra_config";
    kvs_config *cfg = NULL;
    if (kvs_config_new(&cfg) != KVS_OK)
        abort();
    kvs_status st;
    if (via_env) {
        char name[96];
        if (k < fz_nkeys)
            env_name(key, name, sizeof name);
        else
            snprintf(name, sizeof name, "LMCACHE_EXTRA_CONFIG");
        setenv(name, value, 1);
        st = kvs_config_apply_env(cfg);
        unsetenv(name);
    } else {
        st = kvs_config_set(cfg, key, value);
    }
    if (st == KVS_OK)
        fz_check_config(cfg);
    kvs_config_free(cfg);
    free(value);
    return 0;
}
