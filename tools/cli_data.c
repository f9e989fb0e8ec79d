/*
 * cli_data.c - `kvstash store` and `kvstash retrieve`: store a test prompt's
 * KV and restore it, with content that is a known function of each chunk's
 * key and position, so that every restored byte can be checked.
 */
#include "cli.h"
#include "cli_gpu.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SEEDS 64

typedef struct prompt_opts {
    cli_geometry geo;
    uint64_t seeds[MAX_SEEDS]; /* one prompt per seed, all in this process */
    size_t nseeds;
    uint64_t tokens;
    uint64_t prefix_seed;
    uint64_t prefix_tokens;
    bool have_seed, have_tokens, verify, quiet, json;
    bool keep_going;           /* store: go on after a prompt with failed chunks */
    double linger_s;           /* store: keep the engine open this long after */
    double interval_s;         /* store: pause between prompts */
} prompt_opts;

static int parse_prompt(int argc, char **argv, const char *cmd, prompt_opts *o)
{
    memset(o, 0, sizeof *o);
    cli_geometry_defaults(&o->geo);
    cli_args a;
    cli_args_init(&a, cli_find_command(cmd), argc, argv);
    const char *optarg_ = NULL;
    const cli_opt *opt = NULL;
    int c;
    while ((c = cli_getopt_geometry(&a, &o->geo, &optarg_, &opt)) > 0) {
        char *arg = (char *)optarg_;
        switch (c) {
        case 's': {
            o->nseeds = 0;
            char *save = NULL;
            for (char *tok = strtok_r(arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (o->nseeds == MAX_SEEDS || cli_parse_u64(tok, &o->seeds[o->nseeds]))
                    return cli_usage_error("--seed \"%s\" is not a list of up to %d "
                                           "non-negative integers",
                                           tok, MAX_SEEDS);
                o->nseeds++;
            }
            o->have_seed = o->nseeds > 0;
            break;
        }
        case 'n':
            if (cli_parse_u64(arg, &o->tokens) || o->tokens == 0 || o->tokens > (1u << 26))
                return cli_usage_error("--tokens \"%s\" is not an integer in 1..67108864", arg);
            o->have_tokens = true;
            break;
        case 'p': {
            char *colon = strchr(arg, ':');
            if (!colon)
                return cli_usage_error("--shared-prefix \"%s\" is not SEED:TOKENS", arg);
            *colon = '\0';
            if (cli_parse_u64(arg, &o->prefix_seed) || cli_parse_u64(colon + 1, &o->prefix_tokens))
                return cli_usage_error("--shared-prefix needs SEED:TOKENS, two integers");
            break;
        }
        case 'v': o->verify = true; break;
        case 'q': o->quiet = true; break;
        case 'j': o->json = true; break;
        case 'k': o->keep_going = true; break;
        case 'l':
        case 'i': {
            char *end;
            double v = strtod(arg, &end);
            if (end == arg || *end || v < 0 || v > 3600)
                return cli_usage_error("--%s \"%s\" is not a number of seconds in 0..3600",
                                       opt->name, arg);
            *(c == 'l' ? &o->linger_s : &o->interval_s) = v;
            break;
        }
        }
    }
    if (c < 0)
        return a.exit;
    if (!o->have_seed || !o->have_tokens)
        return cli_usage_error("%s needs --seed and --tokens", cmd);
    if (o->prefix_tokens > o->tokens)
        return cli_usage_error("--shared-prefix: %" PRIu64 " prefix tokens exceed --tokens %" PRIu64,
                               o->prefix_tokens, o->tokens);
    if (o->geo.device >= 0 && !cli_gpu_built())
        return cli_usage_error("--device cuda:%d: this kvstash was built without CUDA support",
                               o->geo.device);
    return cli_geometry_check(&o->geo, cmd);
}

typedef struct prompt {
    kvs_config *cfg;
    kvs_engine *engine;
    uint32_t *tokens;
    size_t n;
    uint32_t chunk;
    uint64_t *seeds;
    size_t nchunks;
    cli_kvbuf buf;
    bool on_gpu;        /* --device cuda:N: the KV lives in gpu, buf checks it */
    cli_gpu gpu;
} prompt;

/* The KV description store and retrieve use. */
static const kvs_kv *prompt_kv(const prompt *p)
{
    return p->on_gpu ? &p->gpu.kv : &p->buf.kv;
}

static void prompt_free(prompt *p)
{
    kvs_engine_close(p->engine);
    kvs_config_free(p->cfg);
    free(p->tokens);
    free(p->seeds);
    cli_kvbuf_free(&p->buf);
    if (p->on_gpu)
        cli_gpu_free(&p->gpu);
}

static int prompt_open(prompt *p, const prompt_opts *o)
{
    int rc = cli_load_config(&p->cfg);
    if (rc)
        return rc;
    kvs_status st = kvs_engine_open(p->cfg, &o->geo.ns, &p->engine);
    if (st)
        return cli_fail(st, "cannot open the store");
    p->n = (size_t)o->tokens;
    p->chunk = kvs_engine_chunk_size(p->engine);
    p->tokens = malloc(p->n * sizeof *p->tokens);
    if (!p->tokens || cli_kvbuf_alloc(&p->buf, &o->geo.ns, p->n) != 0) {
        fprintf(stderr, "kvstash: out of memory for a %zu-token prompt\n", p->n);
        return EXIT_IO;
    }
    if (o->geo.device >= 0) {
        p->on_gpu = true;
        return cli_gpu_alloc(&p->gpu, &p->buf, &o->geo, o->seeds[0]);
    }
    return EXIT_OK;
}

/* The options of store or retrieve (cmd) and the engine, buffers and
 * prompt they ask for.  Whatever it returns, p is for prompt_free. */
static int prompt_start(prompt *p, prompt_opts *o, int argc, char **argv, const char *cmd)
{
    memset(p, 0, sizeof *p);
    int rc = parse_prompt(argc, argv, cmd, o);
    return rc ? rc : prompt_open(p, o);
}

/* What store and retrieve add up over their prompts; with --json, each
 * prompt's object as it is written. */
typedef struct tally {
    uint64_t bytes, tokens;
    double seconds;
    size_t prompts;  /* finished */
    FILE *js;        /* --json: the prompts' objects go here; NULL: text */
    char *json;      /* what js wrote, once it is closed */
    size_t json_len;
} tally;

static void tally_open(tally *t, bool json)
{
    memset(t, 0, sizeof *t);
    if (json)
        t->js = open_memstream(&t->json, &t->json_len);
}

static void tally_add(tally *t, uint64_t tokens, uint64_t bytes, double seconds)
{
    t->tokens += tokens;
    t->bytes += bytes;
    t->seconds += seconds;
}

/* Makes the prompt of one seed: its tokens and its chunks' content seeds. */
static int prompt_make(prompt *p, const prompt_opts *o, uint64_t seed)
{
    cli_make_tokens(p->tokens, p->n, seed, o->prefix_seed, (size_t)o->prefix_tokens);
    free(p->seeds);
    p->seeds = NULL;
    if (cli_chunk_seeds(p->tokens, p->n, p->chunk, &p->seeds, &p->nchunks) != 0) {
        fprintf(stderr, "kvstash: cannot compute chunk keys\n");
        return EXIT_IO;
    }
    return EXIT_OK;
}

/* Calls fn on each (layer, plane) run of chunk c: its bytes in the buffer
 * and their position in the chunk's payload. */
static uint64_t for_chunk_rows(prompt *p, size_t c, uint64_t (*fn)(void *, uint64_t, uint64_t, uint64_t),
                               uint64_t stop)
{
    size_t t0 = c * p->chunk;
    size_t tc = p->n - t0 < p->chunk ? p->n - t0 : p->chunk;
    uint64_t run = tc * p->buf.row;
    for (uint32_t l = 0; l < p->buf.layers; l++) {
        for (uint32_t pl = 0; pl < p->buf.planes; pl++) {
            uint64_t pos = ((uint64_t)l * p->buf.planes + pl) * run;
            uint64_t r = fn(cli_kvbuf_row(&p->buf, l, pl, t0), p->seeds[c], pos, run);
            if (r != stop)
                return r;
        }
    }
    return stop;
}

static uint64_t fill_fn(void *mem, uint64_t seed, uint64_t pos, uint64_t len)
{
    cli_fill_payload(mem, seed, pos, len);
    return 0;
}

static uint64_t check_fn(void *mem, uint64_t seed, uint64_t pos, uint64_t len)
{
    return cli_check_payload(mem, seed, pos, len);
}

/* One command's JSON: {"command", "exit_status", "prompts": [...], "total",
 * "verify" (retrieve --verify), "stats": the engine's counters}. */
static void print_json(const char *cmd, int rc, const tally *t, const char *verify,
                       kvs_engine *e)
{
    char *stats = NULL;
    if (!e || kvs_engine_stats_json(e, &stats) != KVS_OK)
        stats = NULL;
    printf("{\"command\": \"%s\", \"exit_status\": %d,\n \"prompts\": [%s],\n"
           " \"total\": {\"prompts\": %zu, \"tokens\": %" PRIu64 ", \"bytes\": %" PRIu64
           ", \"seconds\": %.6f},\n",
           cmd, rc, t->json ? t->json : "", t->prompts, t->tokens, t->bytes, t->seconds);
    if (verify)
        printf(" \"verify\": %s,\n", verify);
    printf(" \"stats\": %s}\n", stats ? stats : "null");
    kvs_free(stats);
}

static void print_stats(kvs_engine *e)
{
    char *json = NULL;
    if (kvs_engine_stats_json(e, &json) == KVS_OK) {
        fprintf(stderr, "stats: %s\n", json);
        kvs_free(json);
    }
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int cmd_store(int argc, char **argv)
{
    prompt_opts o;
    prompt p;
    int rc = prompt_start(&p, &o, argc, argv, "store");
    tally t;
    tally_open(&t, o.json);
    bool failed = false;
    for (size_t i = 0; !rc && i < o.nseeds; i++) {
        if ((rc = prompt_make(&p, &o, o.seeds[i])))
            break;
        for (size_t c = 0; c < p.nchunks; c++)
            for_chunk_rows(&p, c, fill_fn, 0);
        if (p.on_gpu && (rc = cli_gpu_upload(&p.gpu, &p.buf)))
            break;
        double t0 = cli_now();
        kvs_op *op = NULL;
        kvs_status st = kvs_store(p.engine, p.tokens, p.n, prompt_kv(&p), &op);
        kvs_op_result r = {0};
        if (!st)
            st = kvs_op_wait(op, -1, &r);
        kvs_op_free(op);
        if (st) {
            rc = cli_fail(st, "store");
            break;
        }
        double dt = cli_now() - t0;
        tally_add(&t, r.tokens, r.bytes, dt);
        if (t.js)
            fprintf(t.js, "%s\n  {\"seed\": %" PRIu64 ", \"tokens\": %zu, \"stored_tokens\": "
                    "%" PRIu64 ", \"chunks_written\": %u, \"chunks_present\": %u, "
                    "\"chunks_failed\": %u, \"bytes\": %" PRIu64 ", \"seconds\": %.6f}",
                    t.prompts ? "," : "", o.seeds[i], p.n, r.tokens, r.chunks_done,
                    r.chunks_present, r.chunks_failed, r.bytes, dt);
        else
            printf("seed %" PRIu64 ": stored %" PRIu64 " tokens of %zu (%u chunks written, %u "
                   "already present, %u failed), %.1f MiB in %.3f s, %.2f GB/s\n",
                   o.seeds[i], r.tokens, p.n, r.chunks_done, r.chunks_present, r.chunks_failed,
                   (double)r.bytes / 1048576.0, dt, dt > 0 ? (double)r.bytes / dt / 1e9 : 0.0);
        t.prompts++;
        if (i + 1 < o.nseeds)
            sleep_s(o.interval_s);
        if (r.chunks_failed) {
            failed = true;
            if (!o.keep_going)
                rc = EXIT_IO;
        }
    }
    if (!rc && failed)
        rc = EXIT_IO;
    if (p.engine)
        sleep_s(o.linger_s);
    if (t.js) {
        fclose(t.js);
        if (p.engine)
            print_json("store", rc, &t, NULL, p.engine);
        free(t.json);
    } else {
        if (!rc && o.nseeds > 1)
            printf("total: %zu prompts, %" PRIu64 " tokens on the store, %.1f MiB written in "
                   "%.3f s, %.2f GB/s\n",
                   o.nseeds, t.tokens, (double)t.bytes / 1048576.0, t.seconds,
                   t.seconds > 0 ? (double)t.bytes / t.seconds / 1e9 : 0.0);
        if (p.engine && !o.quiet)
            print_stats(p.engine);
    }
    prompt_free(&p);
    return rc;
}

/* Checks every byte of the loaded chunks; returns how many chunks differ. */
static size_t verify_loaded(prompt *p, size_t loaded)
{
    size_t bad = 0;
    for (size_t c = 0; c * p->chunk < loaded; c++) {
        uint64_t at = for_chunk_rows(p, c, check_fn, UINT64_MAX);
        if (at != UINT64_MAX) {
            fprintf(stderr, "kvstash: verify: chunk %zu differs at payload byte %" PRIu64 "\n", c,
                    at);
            bad++;
        }
    }
    return bad;
}

int cmd_retrieve(int argc, char **argv)
{
    prompt_opts o;
    prompt p;
    int rc = prompt_start(&p, &o, argc, argv, "retrieve");
    tally t;
    tally_open(&t, o.json);
    size_t bad = 0;
    for (size_t i = 0; !rc && i < o.nseeds; i++) {
        if ((rc = prompt_make(&p, &o, o.seeds[i])))
            break;
        memset(p.buf.mem, 0xee, p.buf.bytes); /* poison: nothing passes by accident */
        if (p.on_gpu && (rc = cli_gpu_poison(&p.gpu, 0xee)))
            break;
        size_t avail = 0, loaded = 0;
        kvs_status st = kvs_lookup(p.engine, p.tokens, p.n, &avail);
        double t0 = cli_now();
        if (!st)
            st = kvs_retrieve(p.engine, p.tokens, p.n, prompt_kv(&p), &loaded);
        double dt = cli_now() - t0;
        if (st) {
            rc = cli_fail(st, "retrieve");
            break;
        }
        uint64_t bytes = (uint64_t)loaded * p.buf.layers * p.buf.planes * p.buf.row;
        tally_add(&t, loaded, bytes, dt);
        if (!t.js)
            printf("seed %" PRIu64 ": hit %zu tokens of %zu (lookup said %zu), %.1f MiB in "
                   "%.3f s, %.2f GB/s\n",
                   o.seeds[i], loaded, p.n, avail, (double)bytes / 1048576.0, dt,
                   dt > 0 ? (double)bytes / dt / 1e9 : 0.0);
        size_t b = 0;
        if (o.verify) {
            /* GPU: the bytes that landed in device memory, copied back */
            if (p.on_gpu && (rc = cli_gpu_download(&p.gpu, &p.buf)))
                break;
            b = verify_loaded(&p, loaded);
            bad += b;
            if (b && !t.js)
                printf("seed %" PRIu64 ": verify: FAILED, %zu loaded chunks differ\n", o.seeds[i], b);
        }
        if (t.js) {
            fprintf(t.js, "%s\n  {\"seed\": %" PRIu64 ", \"tokens\": %zu, \"hit_tokens\": %zu"
                    ", \"lookup_tokens\": %zu, \"bytes\": %" PRIu64 ", \"seconds\": %.6f",
                    t.prompts ? "," : "", o.seeds[i], p.n, loaded, avail, bytes, dt);
            if (o.verify)
                fprintf(t.js, ", \"chunks_differing\": %zu", b);
            fprintf(t.js, "}");
        }
        t.prompts++;
    }
    if (!rc && o.nseeds > 1 && !t.js)
        printf("total: %zu prompts, hit %" PRIu64 " tokens, %.1f MiB in %.3f s, %.2f GB/s\n",
               o.nseeds, t.tokens, (double)t.bytes / 1048576.0, t.seconds,
               t.seconds > 0 ? (double)t.bytes / t.seconds / 1e9 : 0.0);
    if (!rc && o.verify) {
        if (bad)
            rc = EXIT_VERIFY;
        if (!t.js && bad)
            printf("verify: FAILED\n");
        else if (!t.js)
            printf("verify: ok, every byte of %" PRIu64 " loaded tokens checked\n", t.tokens);
    }
    if (t.js) {
        fclose(t.js);
        char verify[96];
        snprintf(verify, sizeof verify, "{\"checked_tokens\": %" PRIu64 ", \"ok\": %s}",
                 t.tokens, bad ? "false" : "true");
        if (p.engine)
            print_json("retrieve", rc, &t,
                       o.verify && (rc == EXIT_OK || rc == EXIT_VERIFY) ? verify : NULL, p.engine);
        free(t.json);
    } else if (p.engine && !o.quiet) {
        print_stats(p.engine);
    }
    prompt_free(&p);
    return rc;
}
