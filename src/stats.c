/*
 * stats.c - an engine's counters as a struct, JSON and Prometheus text.
 *
 * Counters live in the engine and are bumped with relaxed atomics on the
 * data path; gauges are computed when read.  All three forms are generated
 * from KVS_STATS_FIELDS in kvstash.h, so they cannot disagree.  Reading
 * costs no I/O (no directory scans: the store's size is whatever the
 * collector last measured).  Values of the whole store (KVS_STATS_STORE_WIDE)
 * are labelled with the store rather than the namespace, so that several
 * engines of one store give one series, not one per namespace.
 */
#include "engine.h"

#include <string.h>

static void snapshot(kvs_engine *e, kvs_stats *s)
{
#define KVS_LOAD_(name, kind, metric, labels, help) \
    s->name = __atomic_load_n(&e->stats.name, __ATOMIC_RELAXED);
    KVS_STATS_FIELDS(KVS_LOAD_)
#undef KVS_LOAD_
    kvs_cpu_tier_stats cs;
    kvs__cpu_tier_stats(e->cpu, &cs);
    s->cpu_bytes = cs.bytes;
    s->cpu_chunks = cs.chunks;
    s->cpu_inserts = cs.inserts;
    s->cpu_evictions = cs.evictions;
    s->index_entries = kvs__index_present(e->index);
    s->pending_stores = atomic_load(&e->pending_chunks);
    s->pending_store_bytes = atomic_load(&e->pending_bytes);
    s->direct_io = __atomic_load_n(&e->store.direct, __ATOMIC_RELAXED);
    kvs__collector_stats(e->collector, s);
    kvs_dev *dev = __atomic_load_n(&e->dev, __ATOMIC_ACQUIRE);
    s->cufile_active = kvs__dev_cufile_active(dev);
    s->cufile_fallbacks += kvs__dev_cufile_fallbacks(dev);
    uint64_t until = atomic_load(&e->unhealthy_until);
    s->store_unhealthy = until != 0 && kvs__now_ns() < until;
}

kvs_status kvs_engine_stats(kvs_engine *e, kvs_stats *stats_out, size_t size)
{
    if (!e || !stats_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_engine_stats: NULL argument");
    kvs_stats s;
    snapshot(e, &s);
    memcpy(stats_out, &s, KVS_MIN(size, sizeof s));
    return KVS_OK;
}

kvs_status kvs_engine_stats_json(kvs_engine *e, char **json_out)
{
    if (!e || !json_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_engine_stats_json: NULL argument");
    kvs_stats s;
    snapshot(e, &s);
    kvs_buf b = {0};
    const char *sep = "{";
#define KVS_JSON_(name, kind, metric, labels, help)                             \
    kvs_buf_printf(&b, "%s\"" #name "\": %llu", sep, (unsigned long long)s.name); \
    sep = ", ";
    KVS_STATS_FIELDS(KVS_JSON_)
#undef KVS_JSON_
    kvs_buf_printf(&b, "}");
    return kvs_buf_finish(&b, json_out);
}

static bool is_ns_field(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, "_ns") == 0;
}

static bool store_wide(const char *name)
{
#define KVS_WIDE_(field) if (strcmp(name, #field) == 0) return true;
    KVS_STATS_STORE_WIDE(KVS_WIDE_)
#undef KVS_WIDE_
    return false;
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void label_escape(const char *s, char *out, size_t cap)
{
    size_t w = 0;
    for (; *s && w + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[w++] = '\\';
            out[w++] = *s;
        } else if (*s == '\n') {
            out[w++] = '\\';
            out[w++] = 'n';
        } else {
            out[w++] = *s;
        }
    }
    out[w] = '\0';
}

kvs_status kvs_engine_metrics(kvs_engine *e, char **text_out)
{
    if (!e || !text_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_engine_metrics: NULL argument");
    kvs_stats s;
    snapshot(e, &s);
    kvs_buf b = {0};
    const char *last_metric = "";
    const char *ns = e->ns.dir;
    char store[3 * KVS_PATH_MAX];
    label_escape(e->store.root[0], store, sizeof store);
#define KVS_PROM_(name, kind, metric, labels, help)                                        \
    if (strcmp(last_metric, metric) != 0) {                                                \
        kvs_buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, #kind);     \
        last_metric = metric;                                                              \
    }                                                                                      \
    if (store_wide(#name))                                                                 \
        kvs_buf_printf(&b, "%s{store=\"%s\"%s%s} ", metric, store, labels[0] ? "," : "",     \
                       labels);                                                            \
    else                                                                                   \
        kvs_buf_printf(&b, "%s{namespace=\"%s\"%s%s} ", metric, ns, labels[0] ? "," : "",    \
                       labels);                                                            \
    if (is_ns_field(#name))                                                                \
        kvs_buf_printf(&b, "%.9f\n", (double)s.name / 1e9);                                 \
    else                                                                                   \
        kvs_buf_printf(&b, "%llu\n", (unsigned long long)s.name);
    KVS_STATS_FIELDS(KVS_PROM_)
#undef KVS_PROM_
    return kvs_buf_finish(&b, text_out);
}
