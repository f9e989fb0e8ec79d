/*
 * cli_bench.c - `kvstash bench`: throughput of store and retrieve on host
 * memory beside the memcpy ceiling measured in the same run with the same
 * thread count, lookup latency for a long prompt, and key hashing speed.
 *
 * Each figure is the median of several rounds, rounds of different kinds
 * interleaved, because a shared machine's memory bandwidth drifts.  The
 * chunk files are written to the configured store (a namespace of its own)
 * and removed at the end; a retrieve reads files the store just wrote, so
 * with use_direct_io off they come from the page cache.
 */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROUNDS 32

typedef struct bench_opts {
    cli_geometry geo;
    uint64_t chunks;
    uint64_t threads;
    uint64_t rounds;
    bool direct_io;
} bench_opts;

typedef struct memcpy_job {
    char *dst;
    const char *src;
    size_t chunk_bytes;
    size_t nchunks;
    unsigned nthreads;
    unsigned id;
} memcpy_job;

static void *memcpy_thread(void *arg)
{
    memcpy_job *j = arg;
    for (size_t c = j->id; c < j->nchunks; c += j->nthreads)
        memcpy(j->dst + c * j->chunk_bytes, j->src + c * j->chunk_bytes, j->chunk_bytes);
    return NULL;
}

static double memcpy_gbps(char *dst, const char *src, size_t chunk_bytes, size_t nchunks,
                          unsigned threads)
{
    pthread_t th[256];
    memcpy_job jobs[256];
    double t0 = cli_now();
    for (unsigned i = 0; i < threads; i++) {
        jobs[i] = (memcpy_job){dst, src, chunk_bytes, nchunks, threads, i};
        pthread_create(&th[i], NULL, memcpy_thread, &jobs[i]);
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    return (double)chunk_bytes * (double)nchunks / (cli_now() - t0) / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static const struct option bench_options[] = {
    {"chunks", required_argument, 0, 'c'},
    {"threads", required_argument, 0, 't'},
    {"rounds", required_argument, 0, 'r'},
    {"direct-io", no_argument, 0, 'd'},
    {"help", no_argument, 0, 'h'},
    {"model", required_argument, 0, 1},
    {"layers", required_argument, 0, 1},
    {"kv-heads", required_argument, 0, 1},
    {"head-dim", required_argument, 0, 1},
    {"dtype", required_argument, 0, 1},
    {"mla", no_argument, 0, 1},
    {"world-size", required_argument, 0, 1},
    {"rank", required_argument, 0, 1},
    {"device", required_argument, 0, 1},
    {0, 0, 0, 0},
};

static int parse_bench(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    cli_geometry_defaults(&o->geo);
    snprintf(o->geo.model, sizeof o->geo.model, "kvstash-bench");
    o->chunks = 32;
    o->rounds = 5;
    optind = 1;
    int idx = 0, c;
    while ((c = getopt_long(argc, argv, "", bench_options, &idx)) != -1) {
        switch (c) {
        case 'c':
            if (cli_parse_u64(optarg, &o->chunks) || o->chunks == 0 || o->chunks > 100000)
                return cli_usage_error("--chunks \"%s\" is not an integer in 1..100000", optarg);
            break;
        case 't':
            if (cli_parse_u64(optarg, &o->threads) || o->threads == 0 || o->threads > 256)
                return cli_usage_error("--threads \"%s\" is not an integer in 1..256", optarg);
            break;
        case 'r':
            if (cli_parse_u64(optarg, &o->rounds) || o->rounds == 0 || o->rounds > MAX_ROUNDS)
                return cli_usage_error("--rounds \"%s\" is not an integer in 1..%d", optarg,
                                       MAX_ROUNDS);
            break;
        case 'd':
            o->direct_io = true;
            break;
        case 'h':
            printf("usage: kvstash bench [geometry] [--chunks N] [--threads T] [--rounds R] "
                   "[--direct-io]\n\n"
                   "  --chunks N    chunks per round (default 32)\n"
                   "  --threads T   I/O threads and memcpy threads (default: gds_io_threads)\n"
                   "  --rounds R    rounds per figure; medians are printed (default 5)\n"
                   "  --direct-io   also retrieve with O_DIRECT (from the disk)\n%s",
                   cli_geometry_help);
            exit(EXIT_OK);
        case 1:
            if (cli_geometry_option(&o->geo, bench_options[idx].name, optarg) < 0)
                return EXIT_USAGE;
            break;
        default:
            return cli_usage_error("bench: unknown option");
        }
    }
    if (optind < argc)
        return cli_usage_error("bench: unexpected argument \"%s\"", argv[optind]);
    if (o->geo.device >= 0)
        return cli_usage_error("bench --device cuda:%d: this kvstash was built without CUDA",
                               o->geo.device);
    return EXIT_OK;
}

static int set_cfg(kvs_config *cfg, const char *key, const char *value)
{
    if (kvs_config_set(cfg, key, value) != KVS_OK) {
        fprintf(stderr, "kvstash: bench: %s\n", kvs_last_error());
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

typedef struct row {
    const char *name;
    double value, ceiling;
    const char *unit;
} row;

static void print_row(const row *r)
{
    if (r->ceiling > 0)
        printf("%-44s %10.2f %-6s %10.2f %-6s %6.2f\n", r->name, r->value, r->unit, r->ceiling,
               r->unit, r->value / r->ceiling);
    else
        printf("%-44s %10.2f %-6s\n", r->name, r->value, r->unit);
}

/* Times store and retrieve of `n` tokens through engine e, `rounds` times
 * each, interleaved with memcpy rounds. */
static int run_throughput(kvs_engine *e, cli_kvbuf *src, cli_kvbuf *dst, const uint32_t *tokens,
                          size_t n, unsigned threads, uint64_t rounds, uint64_t chunk_bytes,
                          size_t nchunks, double *mc, double *st, double *rt, double *rd)
{
    for (uint64_t r = 0; r < rounds; r++) {
        mc[r] = memcpy_gbps(dst->mem, src->mem, chunk_bytes, nchunks, threads);
        size_t removed;
        kvs_remove(e, tokens, n, &removed);
        double t0 = cli_now();
        kvs_op *op;
        kvs_status s = kvs_store(e, tokens, n, &src->kv, &op);
        kvs_op_result res = {0};
        if (!s)
            s = kvs_op_wait(op, -1, &res);
        kvs_op_free(op);
        if (s || res.tokens != n) {
            fprintf(stderr, "kvstash: bench: store stored %" PRIu64 " of %zu tokens: %s\n",
                    res.tokens, n, kvs_last_error());
            return EXIT_IO;
        }
        st[r] = (double)res.bytes / (cli_now() - t0) / 1e9;
        for (int mode = 0; mode < 2; mode++) {
            memset(dst->mem, 0xee, dst->bytes);
            dst->kv.flags = mode ? KVS_KV_DIRECT : 0;
            size_t loaded = 0;
            t0 = cli_now();
            s = kvs_retrieve(e, tokens, n, &dst->kv, &loaded);
            double dt = cli_now() - t0;
            if (s || loaded != n) {
                fprintf(stderr, "kvstash: bench: retrieve loaded %zu of %zu tokens: %s\n", loaded,
                        n, kvs_last_error());
                return EXIT_IO;
            }
            if (memcmp(dst->mem, src->mem, src->bytes) != 0) {
                fprintf(stderr, "kvstash: bench: retrieved bytes differ from stored ones\n");
                return EXIT_VERIFY;
            }
            (mode ? rd : rt)[r] = (double)chunk_bytes * (double)nchunks / dt / 1e9;
        }
        dst->kv.flags = 0;
    }
    return EXIT_OK;
}

/* Microseconds per lookup of a 131072-token prompt. */
static int run_lookups(kvs_config *cfg, const bench_opts *o, row *rows, size_t *nrows)
{
    const size_t n = 131072;
    kvs_namespace ns = {.model = "kvstash-bench-lookup", .dtype = KVS_DTYPE_FP16, .num_layers = 1,
                        .num_kv_heads = 1, .head_dim = 64, .layout = KVS_LAYOUT_MHA,
                        .world_size = 1, .rank = 0};
    (void)o;
    uint32_t *hit = malloc(n * sizeof *hit), *miss = malloc(n * sizeof *miss);
    cli_kvbuf buf;
    if (!hit || !miss || cli_kvbuf_alloc(&buf, &ns, n)) {
        free(hit);
        free(miss);
        return EXIT_IO;
    }
    cli_make_tokens(hit, n, 1234, 0, 0);
    cli_make_tokens(miss, n, 5678, 0, 0);
    memset(buf.mem, 0x5a, buf.bytes);
    kvs_engine *e = NULL;
    int rc = EXIT_OK;
    kvs_status s = kvs_engine_open(cfg, &ns, &e);
    kvs_op *op = NULL;
    if (!s)
        s = kvs_store(e, hit, n, &buf.kv, &op);
    if (!s)
        s = kvs_op_wait(op, -1, NULL);
    kvs_op_free(op);
    kvs_engine_close(e);
    e = NULL;
    if (s) {
        rc = cli_fail(s, "bench: storing the lookup prompt");
        goto out;
    }
    static const char *names[4] = {
        "lookup 131072 tokens, all hit, cold index",
        "lookup 131072 tokens, all hit, warm index",
        "lookup 131072 tokens, all miss, cold",
        "lookup 131072 tokens, all miss, negative cache",
    };
    double us[4][MAX_ROUNDS];
    size_t got[4] = {0};
    for (uint64_t r = 0; r < o->rounds; r++) {
        s = kvs_engine_open(cfg, &ns, &e); /* a fresh engine: a cold index */
        if (s) {
            rc = cli_fail(s, "bench: reopening");
            goto out;
        }
        for (int k = 0; k < 4; k++) {
            const uint32_t *t = k < 2 ? hit : miss;
            size_t h = 0;
            double t0 = cli_now();
            s = kvs_lookup(e, t, n, &h);
            us[k][r] = (cli_now() - t0) * 1e6;
            if (s || h != (k < 2 ? n : 0)) {
                fprintf(stderr, "kvstash: bench: lookup found %zu tokens, expected %zu\n", h,
                        k < 2 ? n : 0);
                rc = EXIT_IO;
                kvs_engine_close(e);
                goto out;
            }
            got[k]++;
        }
        kvs_engine_close(e);
    }
    for (int k = 0; k < 4; k++)
        rows[(*nrows)++] = (row){names[k], median(us[k], got[k]), 0, "us"};
    s = kvs_engine_open(cfg, &ns, &e);
    if (!s) {
        size_t removed;
        kvs_remove(e, hit, n, &removed);
        kvs_engine_close(e);
    }
out:
    cli_kvbuf_free(&buf);
    free(hit);
    free(miss);
    return rc;
}

static void hash_speed(row *rows, size_t *nrows, uint64_t rounds)
{
    const size_t n = 131072;
    uint32_t *t = malloc(n * sizeof *t);
    uint8_t (*keys)[KVS_KEY_BYTES] = malloc(n / 256 * KVS_KEY_BYTES);
    double v[MAX_ROUNDS];
    cli_make_tokens(t, n, 99, 0, 0);
    for (uint64_t r = 0; r < rounds; r++) {
        size_t got;
        double t0 = cli_now();
        for (int i = 0; i < 10; i++)
            kvs_chunk_keys(t, n, 256, keys, n / 256, &got);
        v[r] = 10.0 * n / (cli_now() - t0) / 1e6;
    }
    double m = median(v, rounds);
    rows[(*nrows)++] = (row){"key hashing (SHA-256, 256-token chunks)", m, 0, "Mtok/s"};
    rows[(*nrows)++] = (row){"key hashing, input bytes", m * 4 / 1e3, 0, "GB/s"};
    free(t);
    free(keys);
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_bench(argc, argv, &o);
    if (rc)
        return rc;
    kvs_config *cfg = NULL;
    if ((rc = cli_load_config(&cfg)))
        return rc;
    char threads_text[32];
    if (o.threads) {
        snprintf(threads_text, sizeof threads_text, "%" PRIu64, o.threads);
        if ((rc = set_cfg(cfg, "gds_io_threads", threads_text)))
            goto out_cfg;
    }
    char *tv = NULL;
    kvs_config_get(cfg, "gds_io_threads", &tv, NULL);
    unsigned threads = (unsigned)strtoul(tv ? tv : "4", NULL, 10);
    kvs_free(tv);
    /* The store is measured, not the CPU tier in front of it; engines are
     * opened many times, so their info lines are left out. */
    if ((rc = set_cfg(cfg, "local_cpu", "false")) || (rc = set_cfg(cfg, "use_direct_io", "false")) ||
        (rc = set_cfg(cfg, "log_level", "warning")))
        goto out_cfg;

    kvs_engine *e = NULL;
    kvs_status s = kvs_engine_open(cfg, &o.geo.ns, &e);
    if (s) {
        rc = cli_fail(s, "bench: cannot open the store");
        goto out_cfg;
    }
    uint32_t T = kvs_engine_chunk_size(e);
    uint64_t chunk_bytes = kvs_engine_chunk_bytes(e);
    size_t nchunks = (size_t)o.chunks, n = nchunks * T;
    uint32_t *tokens = malloc(n * sizeof *tokens);
    cli_kvbuf src = {0}, dst = {0};
    if (!tokens || cli_kvbuf_alloc(&src, &o.geo.ns, n) || cli_kvbuf_alloc(&dst, &o.geo.ns, n)) {
        fprintf(stderr, "kvstash: bench: out of memory for %zu chunks\n", nchunks);
        rc = EXIT_IO;
        goto out;
    }
    cli_make_tokens(tokens, n, (uint64_t)cli_now(), 0, 0);
    cli_fill_payload(src.mem, 42, 0, src.bytes);
    memset(dst.mem, 0, dst.bytes);

    printf("kvstash bench: %u layers x %u planes x %u tokens x %" PRIu64 "-byte rows = %.1f MiB "
           "chunks, %zu chunks (%.2f GiB), %u threads, %" PRIu64 " rounds (medians)\n",
           o.geo.ns.num_layers, src.planes, T, src.row, (double)chunk_bytes / 1048576.0, nchunks,
           (double)chunk_bytes * (double)nchunks / 1073741824.0, threads, o.rounds);
    printf("store: %s (files in the page cache: use_direct_io off, CPU tier off)\n\n",
           kvs_engine_namespace_path(e));

    double mc[MAX_ROUNDS], st[MAX_ROUNDS], rt[MAX_ROUNDS], rd[MAX_ROUNDS];
    rc = run_throughput(e, &src, &dst, tokens, n, threads, o.rounds, chunk_bytes, nchunks, mc, st,
                        rt, rd);
    if (rc)
        goto out;
    row rows[32];
    size_t nrows = 0;
    double ceiling = median(mc, o.rounds);
    char mname[64];
    snprintf(mname, sizeof mname, "memcpy ceiling (%u threads)", threads);
    rows[nrows++] = (row){mname, ceiling, 0, "GB/s"};
    rows[nrows++] = (row){"store (verified write, page cache)", median(st, o.rounds), ceiling, "GB/s"};
    rows[nrows++] = (row){"retrieve (verified, via bounce buffers)", median(rt, o.rounds), ceiling,
                          "GB/s"};
    rows[nrows++] = (row){"retrieve (verified, zero-copy KVS_KV_DIRECT)", median(rd, o.rounds),
                          ceiling, "GB/s"};
    size_t removed;
    kvs_remove(e, tokens, n, &removed);
    kvs_engine_close(e);
    e = NULL;

    if (o.direct_io) {
        if ((rc = set_cfg(cfg, "use_direct_io", "true")))
            goto out;
        s = kvs_engine_open(cfg, &o.geo.ns, &e);
        if (s) {
            rc = cli_fail(s, "bench: cannot open the store");
            goto out;
        }
        double mc2[MAX_ROUNDS], st2[MAX_ROUNDS], rt2[MAX_ROUNDS], rd2[MAX_ROUNDS];
        rc = run_throughput(e, &src, &dst, tokens, n, threads, o.rounds, chunk_bytes, nchunks, mc2,
                            st2, rt2, rd2);
        kvs_remove(e, tokens, n, &removed);
        kvs_engine_close(e);
        e = NULL;
        if (rc)
            goto out;
        rows[nrows++] = (row){"store, O_DIRECT", median(st2, o.rounds), ceiling, "GB/s"};
        rows[nrows++] = (row){"retrieve, O_DIRECT (from the device)", median(rt2, o.rounds),
                              ceiling, "GB/s"};
        rows[nrows++] = (row){"retrieve, O_DIRECT, zero-copy", median(rd2, o.rounds), ceiling,
                              "GB/s"};
    }
    if ((rc = run_lookups(cfg, &o, rows, &nrows)))
        goto out;
    hash_speed(rows, &nrows, o.rounds);

    printf("%-44s %17s %17s %6s\n", "figure", "value", "ceiling", "ratio");
    for (size_t i = 0; i < nrows; i++)
        print_row(&rows[i]);
    double ratio = median(rt, o.rounds) / ceiling;
    printf("\ngoal: retrieve >= 0.70 of the memcpy ceiling: %.2f, %s\n", ratio,
           ratio >= 0.70 ? "met" : "NOT met");
out:
    kvs_engine_close(e);
    free(tokens);
    cli_kvbuf_free(&src);
    cli_kvbuf_free(&dst);
out_cfg:
    kvs_config_free(cfg);
    return rc;
}
