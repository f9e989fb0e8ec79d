/* fuzz_extra_json.c - libFuzzer target for the JSON extra config
 * (LMCACHE_EXTRA_CONFIG, or kvs_config_set(cfg, "extra_config", ...)). */
#include "fuzz_config.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet++)
        kvs_set_log_level(KVS_LOG_ERROR);
    char *text = fz_strndup(data, size);
    kvs_config *cfg = NULL;
    if (kvs_config_new(&cfg) != KVS_OK)
        abort();
    if (kvs_config_set(cfg, "extra_config", text) == KVS_OK)
        fz_check_config(cfg);
    kvs_config_free(cfg);
    free(text);
    return 0;
}
