/* fuzz_config.h - what the configuration fuzz targets share: the keys, and
 * the checks made on every configuration a fuzzed input produced. */
#ifndef KVS_FUZZ_CONFIG_H
#define KVS_FUZZ_CONFIG_H

#include "kvstash.h"

#include <stddef.h>

extern const char *const fz_keys[];
extern const size_t fz_nkeys;

/* Checks a configuration that was accepted: every key reads back, its text
 * form set again gives the same text (so `kvstash config` output can be
 * fed back), JSON and text forms and a copy can be made.  Aborts on a
 * violation, so libFuzzer reports it. */
void fz_check_config(const kvs_config *cfg);

/* A NUL-terminated copy of data (malloc). */
char *fz_strndup(const uint8_t *data, size_t size);

#endif
