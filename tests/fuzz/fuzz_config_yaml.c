/* fuzz_config_yaml.c - libFuzzer target for the YAML configuration file
 * (LMCACHE_CONFIG_FILE): any bytes are applied as the file's text; the
 * parser must never crash, leak or accept what it cannot print back. */
#include "config.h"
#include "fuzz_config.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet++)
        kvs_set_log_level(KVS_LOG_ERROR);
    kvs_config *cfg = NULL;
    if (kvs_config_new(&cfg) != KVS_OK)
        abort();
    if (kvs__config_apply_yaml(cfg, "fuzz.yaml", (const char *)data, size) == KVS_OK)
        fz_check_config(cfg);
    kvs_config_free(cfg);
    return 0;
}
