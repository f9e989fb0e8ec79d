/*
 * cli_util.c - option parsing, test prompts and reference KV content for
 * the kvstash command line tool.
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_exit_for(kvs_status st)
{
    switch (st) {
    case KVS_OK: return EXIT_OK;
    case KVS_ERR_INVALID:
    case KVS_ERR_CONFIG: return EXIT_USAGE;
    default: return EXIT_IO;
    }
}

int cli_fail(kvs_status st, const char *what)
{
    fprintf(stderr, "kvstash: %s: %s\n", what,
            kvs_last_error()[0] ? kvs_last_error() : kvs_strerror(st));
    return cli_exit_for(st);
}

const char *cli_command_name;

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kvstash: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see kvstash %s%s--help)\n", cli_command_name ? cli_command_name : "",
            cli_command_name ? " " : "");
    va_end(ap);
    return EXIT_USAGE;
}

size_t cli_utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || (n == 2 && s[0] == 0xc2 && s[1] < 0xa0))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 3 && s[0] == 0xed && s[1] >= 0xa0) ||
        (n == 4 && s[0] == 0xf0 && s[1] < 0x90) || (n == 4 && s[0] == 0xf4 && s[1] >= 0x90))
        return 0; /* overlong, surrogate or past U+10FFFF */
    return n;
}

/* s as a JSON string: quotes, backslashes and control bytes escaped, bytes
 * that are not UTF-8 replaced by U+FFFD, so the output always parses. */
void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = cli_utf8_len(p);
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else if (n == 0)
            fputs("\\ufffd", f);
        else
            fwrite(p, 1, n, f);
        p += n ? n : 1;
    }
    fputc('"', f);
}

const char *cli_layout_name(cli_layout layout)
{
    switch (layout) {
    case CLI_LAYOUT_PLANES: return "planes";
    case CLI_LAYOUT_PACKED_NHD: return "packed-nhd";
    case CLI_LAYOUT_PACKED_HND: return "packed-hnd";
    }
    return "?";
}

void cli_geometry_defaults(cli_geometry *g)
{
    memset(g, 0, sizeof *g);
    snprintf(g->model, sizeof g->model, "meta-llama/Llama-3.1-8B");
    g->ns.model = g->model;
    g->ns.dtype = KVS_DTYPE_BF16;
    g->ns.num_layers = 32;
    g->ns.num_kv_heads = 8;
    g->ns.head_dim = 128;
    g->ns.layout = KVS_LAYOUT_MHA;
    g->ns.world_size = 1;
    g->ns.rank = 0;
    g->device = -1;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int u32_opt(const char *name, const char *arg, uint32_t *out, uint32_t min)
{
    uint64_t v;
    if (cli_parse_u64(arg, &v) || v < min || v > UINT32_MAX) {
        cli_usage_error("--%s \"%s\" is not an integer >= %u", name, arg ? arg : "", min);
        return -1;
    }
    *out = (uint32_t)v;
    return 1;
}

int cli_geometry_option(cli_geometry *g, const char *name, const char *arg)
{
    if (!strcmp(name, "model")) {
        if (!arg || !*arg || strlen(arg) >= sizeof g->model) {
            cli_usage_error("--model needs a name of 1..255 bytes");
            return -1;
        }
        snprintf(g->model, sizeof g->model, "%s", arg);
        return 1;
    }
    if (!strcmp(name, "layers"))
        return u32_opt(name, arg, &g->ns.num_layers, 1);
    if (!strcmp(name, "kv-heads"))
        return u32_opt(name, arg, &g->ns.num_kv_heads, 1);
    if (!strcmp(name, "head-dim"))
        return u32_opt(name, arg, &g->ns.head_dim, 1);
    if (!strcmp(name, "world-size"))
        return u32_opt(name, arg, &g->ns.world_size, 1);
    if (!strcmp(name, "rank"))
        return u32_opt(name, arg, &g->ns.rank, 0);
    if (!strcmp(name, "dtype")) {
        if (kvs_dtype_parse(arg ? arg : "", &g->ns.dtype) != KVS_OK) {
            cli_usage_error("--dtype: %s", kvs_last_error());
            return -1;
        }
        return 1;
    }
    if (!strcmp(name, "content")) {
        if (arg && (!strcmp(arg, "kv") || !strcmp(arg, "random"))) {
            cli_content_kv = !strcmp(arg, "kv");
            return 1;
        }
        cli_usage_error("--content \"%s\" is not random or kv", arg ? arg : "");
        return -1;
    }
    if (!strcmp(name, "mla")) {
        g->ns.layout = KVS_LAYOUT_MLA;
        return 1;
    }
    if (!strcmp(name, "salt")) {
        g->ns.salt = arg;
        return 1;
    }
    if (!strcmp(name, "device")) {
        if (arg && !strcmp(arg, "cpu")) {
            g->device = -1;
            return 1;
        }
        uint64_t d;
        if (!arg || strncmp(arg, "cuda:", 5) || cli_parse_u64(arg + 5, &d) || d > 1024) {
            cli_usage_error("--device \"%s\" is not cpu or cuda:N", arg ? arg : "");
            return -1;
        }
        g->device = (int)d;
        return 1;
    }
    if (!strcmp(name, "layout")) {
        for (int l = CLI_LAYOUT_PLANES; l <= CLI_LAYOUT_PACKED_HND; l++)
            if (arg && !strcmp(arg, cli_layout_name((cli_layout)l))) {
                g->layout = (cli_layout)l;
                return 1;
            }
        cli_usage_error("--layout \"%s\" is not planes, packed-nhd or packed-hnd", arg ? arg : "");
        return -1;
    }
    return 0;
}

int cli_getopt_geometry(cli_args *a, cli_geometry *g, const char **arg, const cli_opt **which)
{
    int c;
    while ((c = cli_getopt(a, arg, which)) > 0) {
        int r = cli_geometry_option(g, (*which)->name, *arg);
        if (r == 0)
            return c;
        if (r < 0) {
            a->exit = EXIT_USAGE;
            return -1;
        }
    }
    if (c < 0 && a->exit == EXIT_OK)
        exit(EXIT_OK);
    return c;
}

int cli_geometry_check(const cli_geometry *g, const char *cmd)
{
    if (g->layout != CLI_LAYOUT_PLANES && g->device < 0)
        return cli_usage_error("%s --layout %s: layouts are for GPU caches (--device cuda:N); "
                               "host memory is a contiguous buffer",
                               cmd, cli_layout_name(g->layout));
    if (g->layout != CLI_LAYOUT_PLANES && g->ns.layout == KVS_LAYOUT_MLA)
        return cli_usage_error("%s --layout %s with --mla: an MLA cache has one plane and is "
                               "[blocks, 16, dim] in every vLLM (use planes)",
                               cmd, cli_layout_name(g->layout));
    return EXIT_OK;
}

int cli_load_config(kvs_config **cfg_out)
{
    kvs_status st = kvs_config_load(cfg_out);
    if (st) {
        fprintf(stderr, "kvstash: configuration error: %s\n", kvs_last_error());
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void cli_make_tokens(uint32_t *tokens, size_t n, uint64_t seed, uint64_t prefix_seed,
                     size_t prefix_n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t s = i < prefix_n ? prefix_seed : seed;
        /* Vocabulary of Llama 3: 128256 ids. */
        tokens[i] = (uint32_t)(splitmix64(s * 0x100000001b3ull + i) % 128256u);
    }
}

bool cli_content_kv;

/* --content kv: each 16-bit lane keeps its sign and low 7 bits and takes
 * one of 8 exponent bytes (bf16 of trained KV spans a few exponents), so
 * the codec compresses it as it would real KV (docs/codec.md). */
static inline uint64_t kv_like(uint64_t w)
{
    static const uint16_t exps[8] = {127, 126, 126, 125, 125, 125, 124, 128};
    uint64_t out = 0;
    for (int i = 0; i < 4; i++) {
        uint16_t v = (uint16_t)(w >> (16 * i));
        v = (uint16_t)((v & 0x807f) | exps[(v >> 7) & 7] << 7);
        out |= (uint64_t)v << (16 * i);
    }
    return out;
}

static inline uint64_t content_word(uint64_t key64, uint64_t word)
{
    uint64_t w = splitmix64(key64 ^ (word * 0xd6e8feb86659fd93ull));
    return cli_content_kv ? kv_like(w) : w;
}

void cli_fill_payload(void *dst, uint64_t key64, uint64_t pos, uint64_t len)
{
    unsigned char *d = dst;
    for (uint64_t i = 0; i < len;) {
        uint64_t p = pos + i;
        uint64_t w = content_word(key64, p / 8);
        uint64_t in = p % 8, n = 8 - in < len - i ? 8 - in : len - i;
        memcpy(d + i, (unsigned char *)&w + in, n);
        i += n;
    }
}

uint64_t cli_check_payload(const void *src, uint64_t key64, uint64_t pos, uint64_t len)
{
    const unsigned char *s = src;
    for (uint64_t i = 0; i < len;) {
        uint64_t p = pos + i;
        uint64_t w = content_word(key64, p / 8);
        uint64_t in = p % 8, n = 8 - in < len - i ? 8 - in : len - i;
        if (memcmp(s + i, (unsigned char *)&w + in, n) != 0)
            return p;
        i += n;
    }
    return UINT64_MAX;
}

int cli_kvbuf_alloc(cli_kvbuf *b, const kvs_namespace *ns, size_t tokens)
{
    memset(b, 0, sizeof *b);
    b->layers = ns->num_layers;
    b->planes = ns->layout == KVS_LAYOUT_MLA ? 1 : 2;
    b->row = (uint64_t)ns->num_kv_heads * ns->head_dim * kvs_dtype_size(ns->dtype);
    b->tokens = tokens ? tokens : 1;
    b->bytes = (size_t)b->layers * b->planes * b->tokens * b->row;
    if (posix_memalign(&b->mem, 4096, (b->bytes + 4095) / 4096 * 4096))
        return -1;
    b->layer_ptrs = calloc(b->layers, sizeof(void *));
    if (!b->layer_ptrs)
        return -1;
    for (uint32_t l = 0; l < b->layers; l++)
        b->layer_ptrs[l] = cli_kvbuf_row(b, l, 0, 0);
    b->kv.mem = KVS_MEM_HOST;
    b->kv.num_layers = b->layers;
    b->kv.layers = b->layer_ptrs;
    b->kv.num_slots = b->tokens;
    return 0;
}

void cli_kvbuf_free(cli_kvbuf *b)
{
    free(b->mem);
    free(b->layer_ptrs);
    memset(b, 0, sizeof *b);
}

int cli_chunk_seeds(const uint32_t *tokens, size_t n, uint32_t chunk_size, uint64_t **seeds_out,
                    size_t *nchunks_out)
{
    size_t full = n / chunk_size, total = full + (n % chunk_size ? 1 : 0);
    uint8_t (*keys)[KVS_KEY_BYTES] = malloc((full ? full : 1) * KVS_KEY_BYTES);
    uint64_t *seeds = calloc(total ? total : 1, sizeof *seeds);
    size_t got = 0;
    if (!keys || !seeds || kvs_chunk_keys(tokens, n, chunk_size, keys, full, &got) != KVS_OK) {
        free(keys);
        free(seeds);
        return -1;
    }
    for (size_t i = 0; i < full; i++)
        memcpy(&seeds[i], keys[i], 8);
    if (total > full) {
        uint8_t tail[1][KVS_KEY_BYTES];
        size_t rem = n % chunk_size, one = 0;
        kvs_chunk_keys(tokens + full * chunk_size, rem, (uint32_t)rem, tail, 1, &one);
        uint64_t t;
        memcpy(&t, tail[0], 8);
        seeds[full] = t ^ (full ? seeds[full - 1] : 0);
    }
    free(keys);
    *seeds_out = seeds;
    *nchunks_out = total;
    return 0;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
