/*
 * metrics_doc.c - writes docs/metrics.md from KVS_STATS_FIELDS.
 *
 * The stats struct, its JSON, the Prometheus text and this page all expand
 * the same X-macro in kvstash.h, so the page lists exactly what an engine
 * exports.  Usage:
 *
 *   kvs_metrics_doc            prints the page
 *   kvs_metrics_doc FILE       exits 0 when FILE holds exactly the page, 1
 *                              (naming the first differing line) when not;
 *                              with KVS_WRITE_DOCS=1 in the environment it
 *                              rewrites FILE instead
 *
 * CTest runs the second form on docs/metrics.md, so a new field without a
 * regenerated page fails the build's tests.
 */
#include "kvstash.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct field {
    const char *name, *kind, *metric, *labels, *help;
} field;

static const field fields[] = {
#define KVS_DOC_(name, kind, metric, labels, help) {#name, #kind, metric, labels, help},
    KVS_STATS_FIELDS(KVS_DOC_)
#undef KVS_DOC_
};
#define NFIELDS (sizeof fields / sizeof *fields)

typedef struct text {
    char *s;
    size_t len, cap;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            exit(2);
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
        char *s = realloc(t->s, cap);
        if (!s)
            exit(2);
        t->s = s;
        t->cap = cap;
    }
}

static int is_seconds(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && !strcmp(name + n - 3, "_ns");
}

static void page(text *t)
{
    put(t, "# Metrics reference\n\n"
           "<!-- Generated from KVS_STATS_FIELDS in include/kvstash.h by tools/metrics_doc.c\n"
           "     (`KVS_WRITE_DOCS=1 build/tests/kvs_metrics_doc docs/metrics.md`); the CTest test\n"
           "     test_metrics_doc fails when this file differs. Edit the header, not this "
           "file. -->\n\n");
    put(t, "Every engine counts what it does. The same numbers come in three forms, all\n"
           "generated from one table, so they cannot disagree:\n\n"
           "- C: `kvs_engine_stats()` fills `struct kvs_stats` (one `uint64_t` per field\n"
           "  below); `kvs_engine_stats_json()` gives `{\"field\": value, ...}`;\n"
           "  `kvs_engine_metrics()` gives the Prometheus text exposition format (0.0.4).\n"
           "- Python: `Engine.stats()` (a dict keyed by field) and `Engine.metrics()` (the\n"
           "  Prometheus text); `kvstash.metrics.collect()` merges the text of every engine\n"
           "  of a process and `kvstash.metrics.serve(port)` serves it at `/metrics` (on\n"
           "  127.0.0.1 unless `host=` names another address).\n"
           "- vLLM's own `/metrics`: the connector reports through vLLM's connector stats\n"
           "  interface. Every counter family `kvstash_<name>_total` below appears there as\n"
           "  `vllm:kvstash_<name>_total`, with vLLM's labels (`model_name`, `engine`) and\n"
           "  the family's own, summed over the tensor-parallel workers of an engine (each\n"
           "  rank moves its own chunk files). Four histograms come only from there, one\n"
           "  observation per request and operation, merged over the workers (slowest\n"
           "  rank's time, all ranks' bytes; python/kvstash/vllm_stats.py):\n"
           "  `vllm:kvstash_request_lookup_seconds` (scheduler),\n"
           "  `vllm:kvstash_request_load_seconds`, `vllm:kvstash_request_store_seconds` and\n"
           "  `vllm:kvstash_request_bytes{op=\"load\"|\"store\"}`. Gauges are not sent\n"
           "  through vLLM (a sum over steps or workers would be meaningless).\n"
           "- A separate port, optional: with `KVSTASH_METRICS_PORT=P` (or\n"
           "  `kvstash.metrics_port` in `kv_connector_extra_config`) the connector serves\n"
           "  the scheduler's engines on port P and worker rank r's engines on port\n"
           "  P + 1 + r, on 127.0.0.1 unless `KVSTASH_METRICS_HOST` (or\n"
           "  `kvstash.metrics_host`) names another address (see docs/vllm.md).\n\n"
           "Reading costs no I/O and no directory scan. Every sample carries the label\n"
           "`namespace=\"<model>-<16 hex>\"` (the namespace folder's name), so the engines\n"
           "of several models, ranks or tenants stay apart. The exception is the values\n"
           "of the whole store (`kvstash_store_used_bytes`): every engine on a store\n"
           "reports the same, so they carry `store=\"<first store path>\"` instead and the\n"
           "engines of a process merge into one series; summing them over namespaces\n"
           "would count the store once per engine. Counters only grow while an engine is\n"
           "open; gauges are read when the metrics are.\n\n"
           "Fields whose name ends in `_ns` count nanoseconds; Prometheus gets them in\n"
           "seconds (a float), as its conventions ask.\n\n");
    put(t, "## Families\n\nOne row per Prometheus metric; the fields table below says what each "
           "sample\ncounts.\n\n| metric | type | labels besides namespace | fields |\n"
           "|---|---|---|---|\n");
    for (size_t i = 0; i < NFIELDS; i++) {
        size_t first = i;
        while (i + 1 < NFIELDS && !strcmp(fields[i + 1].metric, fields[first].metric))
            i++;
        put(t, "| `%s` | %s | ", fields[first].metric, fields[first].kind);
        for (size_t k = first; k <= i; k++)
            if (fields[k].labels[0])
                put(t, "%s`%s`", k > first ? ", " : "", fields[k].labels);
        put(t, " | ");
        for (size_t k = first; k <= i; k++)
            put(t, "%s`%s`", k > first ? ", " : "", fields[k].name);
        put(t, " |\n");
    }
    put(t, "\n## Fields\n\nOne row per field of `struct kvs_stats` and key of `Engine.stats()`, in "
           "order (new\nfields are only ever added at the end).\n\n"
           "| field | type | Prometheus sample | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        put(t, "| `%s` | %s | `%s%s%s%s` | %s%s |\n", f->name, f->kind, f->metric,
            f->labels[0] ? "{" : "", f->labels, f->labels[0] ? "}" : "", f->help,
            is_seconds(f->name) ? " (nanoseconds in the struct and JSON; seconds in Prometheus)"
                                : "");
    }
    put(t, "\n## Reading them\n\n"
           "- Hit rate of lookups: `kvstash_lookup_hit_tokens_total / kvstash_lookup_tokens_total`;\n"
           "  of retrieves: `kvstash_retrieve_hit_tokens_total / kvstash_retrieve_tokens_total`.\n"
           "  Lookups say what is there; retrieves what arrived. A gap between the two is\n"
           "  chunks lost between lookup and load (see the miss reasons).\n"
           "- Every miss of a retrieve is counted once under one reason of\n"
           "  `kvstash_chunk_misses_total`; `checksum`, `truncated`, `bad_header`, `foreign`\n"
           "  and `version` are files that were refused, never served.\n"
           "- Bytes written versus bytes requested: `kvstash_bytes_total{op=\"write\"}` counts\n"
           "  what was written; chunks already on the store are counted under\n"
           "  `kvstash_chunks_store_skipped_total`, not written again.\n"
           "- `kvstash_pending_store_chunks` returns to 0 once stores drain;\n"
           "  `kvstash_store_unhealthy` is 1 while repeated I/O failures keep the store off.\n"
           "- Store time, three ways: `kvstash_store_seconds_total` is wall time from each\n"
           "  store call to its last chunk (what a caller waits for); of the chunks' time,\n"
           "  `kvstash_store_queue_seconds_total` is waiting for an I/O worker (it grows\n"
           "  with the backlog) and `kvstash_store_write_seconds_total` is workers writing\n"
           "  (at most gds_io_threads seconds per second). Write throughput is\n"
           "  `rate(kvstash_bytes_total{op=\"write\"}) / rate(kvstash_store_write_seconds_total)`\n"
           "  per worker busy.\n");
}

static int check(const char *path, const text *t, const char *argv0)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 1;
    }
    char *have = malloc(t->len + 2);
    size_t n = have ? fread(have, 1, t->len + 1, f) : 0;
    fclose(f);
    int rc = 0;
    if (have && n == t->len && !memcmp(have, t->s, t->len)) {
        printf("%s is current (%zu fields)\n", path, NFIELDS);
    } else {
        size_t line = 1;
        for (size_t i = 0; have && i < n && i < t->len && have[i] == t->s[i]; i++)
            line += t->s[i] == '\n';
        fprintf(stderr,
                "%s differs from what KVS_STATS_FIELDS generates (first at line %zu); "
                "regenerate it: KVS_WRITE_DOCS=1 %s %s\n",
                path, line, argv0, path);
        rc = 1;
    }
    free(have);
    return rc;
}

int main(int argc, char **argv)
{
    text t = {0};
    page(&t);
    int rc = 0;
    const char *w = getenv("KVS_WRITE_DOCS");
    if (argc < 2) {
        fwrite(t.s, 1, t.len, stdout);
    } else if (w && !strcmp(w, "1")) {
        FILE *f = fopen(argv[1], "w");
        if (!f || fwrite(t.s, 1, t.len, f) != t.len || fclose(f) != 0) {
            perror(argv[1]);
            rc = 2;
        } else {
            printf("wrote %s\n", argv[1]);
        }
    } else {
        rc = check(argv[1], &t, argv[0]);
    }
    free(t.s);
    return rc;
}
