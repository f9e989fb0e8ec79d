/*
 * test_config.c - the configuration: defaults, every key from every source,
 * precedence, aliases, both examples of the seed document (extracted from
 * tests/data/seed-weka-backend.md at run time), every rejection with the
 * content of its message, warnings, path lists, the JSON and text forms, the
 * generated docs/config.md, and allocation failures injected at every
 * allocation of a full load.
 */
#include "config.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define HOME_DIR "/home/kvs-tester"

static char *tmp; /* this test's scratch folder */

#define assert_has(hay, needle)                                                     \
    do {                                                                            \
        const char *h_ = (hay), *n_ = (needle);                                     \
        if (!strstr(h_, n_))                                                        \
            fail_msg("expected \"%s\" in:\n%s", n_, h_);                            \
    } while (0)

#define assert_lacks(hay, needle)                                                   \
    do {                                                                            \
        const char *h_ = (hay), *n_ = (needle);                                     \
        if (strstr(h_, n_))                                                         \
            fail_msg("did not expect \"%s\" in:\n%s", n_, h_);                      \
    } while (0)

#define assert_ok(expr)                                                             \
    do {                                                                            \
        kvs_status s_ = (expr);                                                     \
        if (s_ != KVS_OK)                                                           \
            fail_msg("%s: %s: %s", #expr, kvs_strerror(s_), kvs_last_error());      \
    } while (0)

static int setup(void **state)
{
    (void)state;
    tu_clear_env();
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", HOME_DIR, 1);
    tu_capture_logs(1);
    tmp = tu_mkdtemp("config");
    return tmp ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tu_capture_logs(0);
    tu_rmtree(tmp);
    free(tmp);
    tmp = NULL;
    tu_clear_env();
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static const char *data(const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", KVS_TEST_DATA, name);
    return path;
}

/* Writes text to a file in tmp; the path stays valid until the next call. */
static const char *tmp_file(const char *name, const char *text)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    return path;
}

static kvs_config *load_ok(void)
{
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_load(&cfg));
    assert_non_null(cfg);
    return cfg;
}

/* The text of a key; valid until the next call. */
static const char *get(const kvs_config *cfg, const char *key)
{
    static char buf[8192];
    char *v = NULL;
    assert_ok(kvs_config_get(cfg, key, &v, NULL));
    snprintf(buf, sizeof buf, "%s", v);
    kvs_free(v);
    return buf;
}

static kvs_config_source source_of(const kvs_config *cfg, const char *key)
{
    char *v = NULL;
    kvs_config_source src;
    assert_ok(kvs_config_get(cfg, key, &v, &src));
    kvs_free(v);
    return src;
}

static char *json_of(const kvs_config *cfg)
{
    char *j = NULL;
    assert_ok(kvs_config_to_json(cfg, &j));
    return j;
}

/* Loading fails with KVS_ERR_CONFIG, leaves the out-parameter alone, and
 * returns the message. */
static const char *load_fails(void)
{
    kvs_config *sentinel = (kvs_config *)(uintptr_t)0x1, *cfg = sentinel;
    kvs_status st = kvs_config_load(&cfg);
    if (st != KVS_ERR_CONFIG)
        fail_msg("expected a configuration error, got %s (%s)", kvs_strerror(st),
                 kvs_last_error());
    assert_ptr_equal(cfg, sentinel);
    return kvs_last_error();
}

/*
 * The values of a to_json text as "key=value" lines, without sources.  Also
 * proves the text is JSON of the promised shape: parsed back with libyaml,
 * an object of KVS_CFG_NKEYS members, each exactly {"value", "source"}.
 */
static char *json_values(const char *json)
{
    yaml_parser_t p;
    yaml_document_t doc;
    char *out = calloc(1, 65536);
    size_t w = 0, members = 0;
    assert_true(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, (const unsigned char *)json, strlen(json));
    if (!yaml_parser_load(&p, &doc))
        fail_msg("to_json is not parseable: %s\n%s", p.problem, json);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    assert_non_null(root);
    assert_int_equal(root->type, YAML_MAPPING_NODE);
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
         pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
        const char *value = NULL, *source = NULL;
        bool quoted = false;
        assert_int_equal(k->type, YAML_SCALAR_NODE);
        assert_int_equal(v->type, YAML_MAPPING_NODE);
        assert_int_equal(v->data.mapping.pairs.top - v->data.mapping.pairs.start, 2);
        for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top;
             q++) {
            yaml_node_t *qk = yaml_document_get_node(&doc, q->key);
            yaml_node_t *qv = yaml_document_get_node(&doc, q->value);
            assert_int_equal(qv->type, YAML_SCALAR_NODE);
            if (!strcmp((char *)qk->data.scalar.value, "value")) {
                value = (char *)qv->data.scalar.value;
                quoted = qv->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
            } else if (!strcmp((char *)qk->data.scalar.value, "source")) {
                source = (char *)qv->data.scalar.value;
            }
        }
        assert_non_null(value);
        assert_non_null(source);
        assert_true(!strcmp(source, "default") || !strcmp(source, "file") ||
                    !strcmp(source, "env") || !strcmp(source, "api"));
        w += (size_t)snprintf(out + w, 65536 - w, "%s=%s%s\n", (char *)k->data.scalar.value,
                              quoted ? "string:" : "", value);
        members++;
    }
    assert_int_equal(members, KVS_CFG_NKEYS);
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    return out;
}

static void assert_same_json(const char *a, const char *b)
{
    assert_string_equal(a, b);
}

/* ---- the seed document -------------------------------------------------- */

typedef struct block {
    char lang[16];
    char *text;
} block;

/* The fenced code blocks of the seed document (fences of two or more
 * backticks, as printed there), in order. */
static int seed_blocks(block *out, int max)
{
    char *doc = tu_read_file(data("seed-weka-backend.md"), NULL);
    int n = 0;
    bool in = false;
    size_t cap = 0;
    assert_non_null(doc);
    for (char *line = doc, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        size_t len = next ? (size_t)(next - line) : strlen(line);
        if (next)
            next++;
        const char *s = line;
        while (*s == ' ')
            s++;
        bool fence = s[0] == '`' && s[1] == '`';
        if (fence && !in) {
            assert_true(n < max);
            while (*s == '`')
                s++;
            size_t l = strcspn(s, " \n");
            snprintf(out[n].lang, sizeof out[n].lang, "%.*s", (int)l, s);
            out[n].text = calloc(1, len + 1);
            cap = 0;
            in = true;
        } else if (fence && in) {
            in = false;
            n++;
        } else if (in) {
            out[n].text = realloc(out[n].text, cap + len + 2);
            memcpy(out[n].text + cap, line, len);
            cap += len;
            out[n].text[cap++] = '\n';
            out[n].text[cap] = '\0';
        }
    }
    free(doc);
    return n;
}

static void free_blocks(block *b, int n)
{
    for (int i = 0; i < n; i++)
        free(b[i].text);
}

/* The n-th block of a language (0-based). */
static const char *seed_block(block *b, int nb, const char *lang, int nth)
{
    for (int i = 0; i < nb; i++)
        if (!strcmp(b[i].lang, lang) && nth-- == 0)
            return b[i].text;
    fail_msg("no %s block in the seed", lang);
    return NULL;
}

/* Sets NAME=VALUE (VALUE shell-quoted or bare) from one line of shell. */
static void set_shell_assignment(const char *s)
{
    char name[128], value[512];
    size_t n = strcspn(s, "=");
    assert_true(s[n] == '=' && n < sizeof name);
    memcpy(name, s, n);
    name[n] = '\0';
    const char *v = s + n + 1;
    if (*v == '"' || *v == '\'') {
        const char *end = strchr(v + 1, *v);
        assert_non_null(end);
        snprintf(value, sizeof value, "%.*s", (int)(end - v - 1), v + 1);
    } else {
        snprintf(value, sizeof value, "%.*s", (int)strcspn(v, " \t\n"), v);
    }
    setenv(name, value, 1);
}

/* Runs the `export NAME=value` lines of a shell block. */
static int run_exports(const char *text)
{
    int count = 0;
    for (const char *line = text; line && *line;) {
        const char *s = line;
        while (*s == ' ')
            s++;
        if (!strncmp(s, "export ", 7)) {
            set_shell_assignment(s + 7);
            count++;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return count;
}

static void assert_seed_values(const kvs_config *cfg)
{
    assert_string_equal(get(cfg, "chunk_size"), "256");
    assert_string_equal(get(cfg, "local_cpu"), "false");
    assert_string_equal(get(cfg, "weka_path"), "/mnt/weka/cache");
    assert_string_equal(get(cfg, "cufile_buffer_size"), "8192");
    assert_string_equal(get(cfg, "gds_io_threads"), "32");
    assert_int_equal(cfg->chunk_size, 256);
    assert_false(cfg->local_cpu);
    assert_int_equal(cfg->cufile_buffer_size, 8192);
    assert_int_equal(cfg->gds_io_threads, 32);
    assert_int_equal(cfg->num_store_paths, 1);
    assert_string_equal(cfg->store_paths[0], "/mnt/weka/cache");
}

static char *seed_env_values(void)
{
    block b[16];
    int nb = seed_blocks(b, 16);
    assert_int_equal(run_exports(seed_block(b, nb, "bash", 0)), 6);
    free_blocks(b, nb);
    kvs_config *cfg = load_ok();
    assert_seed_values(cfg);
    char *j = json_of(cfg), *v = json_values(j);
    kvs_free(j);
    kvs_config_free(cfg);
    return v;
}

static void test_seed_env_example(void **state)
{
    (void)state;
    char *v = seed_env_values();
    assert_lacks(tu_logs(), "warning");
    assert_lacks(tu_logs(), "unknown");
    free(v);
}

/* Both YAML examples of the seed, as printed, through LMCACHE_CONFIG_FILE. */
static void test_seed_yaml_examples(void **state)
{
    (void)state;
    char *from_env = seed_env_values();
    block b[16];
    int nb = seed_blocks(b, 16);
    static const char *const names[] = {"config.yaml", "weka-offload.yaml"};
    for (int i = 0; i < 2; i++) {
        tu_clear_env();
        tu_capture_logs(1);
        const char *text = seed_block(b, nb, "yaml", i);
        assert_has(text, "\ngds_io_threads: 32\n"); /* the quirk is there */
        setenv("LMCACHE_CONFIG_FILE", tmp_file(names[i], text), 1);
        setenv("LMCACHE_USE_EXPERIMENTAL", "True", 1);
        kvs_config *cfg = load_ok();
        assert_seed_values(cfg);
        assert_int_equal(source_of(cfg, "gds_io_threads"), KVS_SOURCE_FILE);
        char *j = json_of(cfg), *v = json_values(j);
        assert_string_equal(v, from_env);
        assert_has(tu_logs(), "is indented by 1 space");
        assert_has(tu_logs(), "gds_io_threads at the top level of ");
        assert_has(tu_logs(), "is read as extra_config.gds_io_threads; indent it under "
                              "extra_config:");
        assert_lacks(tu_logs(), "unknown");
        free(v);
        kvs_free(j);
        kvs_config_free(cfg);
    }
    free_blocks(b, nb);
    free(from_env);
}

/* The same YAML, indented as meant: same values, no warning at all. */
static void test_seed_yaml_indented_properly(void **state)
{
    (void)state;
    block b[16];
    int nb = seed_blocks(b, 16);
    const char *text = seed_block(b, nb, "yaml", 1);
    char fixed[4096];
    size_t w = 0;
    for (const char *s = text; *s;) {
        if (*s == ' ')
            s++;
        else
            w += (size_t)snprintf(fixed + w, sizeof fixed - w, "  ");
        size_t l = strcspn(s, "\n");
        w += (size_t)snprintf(fixed + w, sizeof fixed - w, "%.*s\n", (int)l, s);
        s += l + (s[l] == '\n');
    }
    assert_has(fixed, "extra_config:\n  gds_io_threads: 32\n");
    setenv("LMCACHE_CONFIG_FILE", tmp_file("fixed.yaml", fixed), 1);
    kvs_config *cfg = load_ok();
    assert_seed_values(cfg);
    assert_string_equal(tu_logs(), "");
    kvs_config_free(cfg);
    free_blocks(b, nb);
}

/* The commented variant in the vllm command: uncomment the variables and
 * drop LMCACHE_CONFIG_FILE, as the seed says. */
static void test_seed_commented_env(void **state)
{
    (void)state;
    block b[16];
    int nb = seed_blocks(b, 16);
    const char *text = NULL;
    for (int i = 0; i < nb && !text; i++)
        if (strstr(b[i].text, "vllm serve"))
            text = b[i].text;
    assert_non_null(text);
    int count = 0;
    for (const char *line = text; line && *line;) {
        const char *s = line;
        while (*s == ' ' || *s == '#')
            s++;
        if (!strncmp(s, "LMCACHE_", 8) && strncmp(s, "LMCACHE_CONFIG_FILE", 19)) {
            set_shell_assignment(s);
            count++;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    assert_int_equal(count, 6);
    kvs_config *cfg = load_ok();
    assert_seed_values(cfg);
    kvs_config_free(cfg);
    free_blocks(b, nb);
}

/* ---- defaults and every key --------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    assert_int_equal(cfg->chunk_size, 256);
    assert_true(cfg->local_cpu);
    assert_true(cfg->max_local_cpu_size == 5.0);
    assert_null(cfg->weka_path);
    assert_int_equal(cfg->cufile_buffer_size, 1024);
    assert_false(cfg->save_unfull_chunk);
    assert_int_equal(cfg->gds_io_threads, 4);
    assert_int_equal(cfg->use_direct_io, KVS_DIRECT_IO_ON);
    assert_int_equal(cfg->io_path, KVS_IO_PATH_AUTO);
    assert_int_equal(cfg->io_timeout_ms, 5000);
    assert_int_equal(cfg->store_timeout_ms, 30000);
    assert_int_equal(cfg->negative_cache_ms, 1000);
    assert_true(cfg->max_pending_store_size == 20.0);
    /* a 65536-token prompt of Llama-3.1-8B in bf16 (32 layers x K,V x 8 heads
     * x 128 x 2 bytes = 128 KiB a token) fits, twice (issue 11) */
    assert_true(cfg->max_pending_store_size * 1e9 >= 2.0 * 65536 * 32 * 2 * 8 * 128 * 2);
    assert_true(cfg->max_store_size == 0.0);
    assert_true(cfg->store_high_watermark == 0.90);
    assert_true(cfg->store_low_watermark == 0.80);
    assert_true(cfg->min_free_space == 1.0);
    assert_int_equal(cfg->access_interval_s, 60);
    assert_int_equal(cfg->tmp_grace_s, 600);
    assert_int_equal(cfg->lease_ttl_s, 30);
    assert_int_equal(cfg->collect_interval_s, 300);
    assert_int_equal(cfg->failure_threshold, 8);
    assert_int_equal(cfg->file_mode, 0644);
    assert_false(cfg->durable_writes);
    assert_null(cfg->namespace_salt);
    assert_null(cfg->auth_key_file);
    assert_false(cfg->strict_ownership);
    assert_null(cfg->store_uid);
    assert_null(cfg->store_gid);
    assert_int_equal(cfg->log_level, KVS_LOG_INFO);
    for (int i = 0; i < KVS_CFG_NKEYS; i++)
        assert_int_equal(cfg->source[i], KVS_SOURCE_DEFAULT);
    assert_int_equal(cfg->num_store_paths, 1);
    assert_string_equal(cfg->store_paths[0], HOME_DIR "/.cache/kvstash");
    assert_string_equal(get(cfg, "weka_path"), "");
    assert_string_equal(get(cfg, "file_mode"), "0644");
    assert_string_equal(get(cfg, "store_high_watermark"), "0.9");
    kvs_config_free(cfg);

    /* load with nothing set is the same */
    cfg = load_ok();
    char *j = json_of(cfg);
    assert_has(j, "\"chunk_size\": {\"value\": 256, \"source\": \"default\"}");
    assert_has(j, "\"weka_path\": {\"value\": null, \"source\": \"default\"}");
    kvs_free(j);
    kvs_config_free(cfg);
    assert_string_equal(tu_logs(), "");
}

/* One value for every key, away from its default. */
static const struct every {
    const char *key, *env, *value, *expect;
} every[] = {
    {"chunk_size", "LMCACHE_CHUNK_SIZE", "512", "512"},
    {"local_cpu", "LMCACHE_LOCAL_CPU", "False", "false"},
    {"max_local_cpu_size", "LMCACHE_MAX_LOCAL_CPU_SIZE", "2.5", "2.5"},
    {"weka_path", "LMCACHE_WEKA_PATH", "file:///mnt/a/, /mnt/b", "/mnt/a,/mnt/b"},
    {"cufile_buffer_size", "LMCACHE_CUFILE_BUFFER_SIZE", "8192", "8192"},
    {"save_unfull_chunk", "LMCACHE_SAVE_UNFULL_CHUNK", "yes", "true"},
    {"lookup_timeout_ms", "LMCACHE_LOOKUP_TIMEOUT_MS", "20", "20"},
    {"gds_io_threads", "KVSTASH_GDS_IO_THREADS", "32", "32"},
    {"use_direct_io", "KVSTASH_USE_DIRECT_IO", "off", "false"},
    {"io_path", "KVSTASH_IO_PATH", "POSIX", "posix"},
    {"io_timeout_ms", "KVSTASH_IO_TIMEOUT_MS", "250", "250"},
    {"store_timeout_ms", "KVSTASH_STORE_TIMEOUT_MS", "1000", "1000"},
    {"negative_cache_ms", "KVSTASH_NEGATIVE_CACHE_MS", "0", "0"},
    {"max_pending_store_size", "KVSTASH_MAX_PENDING_STORE_SIZE", "0.5", "0.5"},
    {"max_store_size", "KVSTASH_MAX_STORE_SIZE", "1000", "1000"},
    {"store_high_watermark", "KVSTASH_STORE_HIGH_WATERMARK", "1", "1"},
    {"store_low_watermark", "KVSTASH_STORE_LOW_WATERMARK", "0.5", "0.5"},
    {"min_free_space", "KVSTASH_MIN_FREE_SPACE", "0", "0"},
    {"access_interval_s", "KVSTASH_ACCESS_INTERVAL_S", "0", "0"},
    {"tmp_grace_s", "KVSTASH_TMP_GRACE_S", "3600", "3600"},
    {"lease_ttl_s", "KVSTASH_LEASE_TTL_S", "10", "10"},
    {"collect_interval_s", "KVSTASH_COLLECT_INTERVAL_S", "5", "5"},
    {"failure_threshold", "KVSTASH_FAILURE_THRESHOLD", "0", "0"},
    {"file_mode", "KVSTASH_FILE_MODE", "600", "0600"},
    {"durable_writes", "KVSTASH_DURABLE_WRITES", "TRUE", "true"},
    {"namespace_salt", "KVSTASH_NAMESPACE_SALT", "tenant-a", "tenant-a"},
    {"auth_key_file", "KVSTASH_AUTH_KEY_FILE", "/etc/kvstash/key", "/etc/kvstash/key"},
    {"strict_ownership", "KVSTASH_STRICT_OWNERSHIP", "on", "true"},
    {"store_uid", "KVSTASH_STORE_UID", "kvstash", "kvstash"},
    {"store_gid", "KVSTASH_STORE_GID", "1001", "1001"},
    {"log_level", "KVSTASH_LOG_LEVEL", "warn", "warning"},
    {"strict", "KVSTASH_STRICT", "on", "true"},
    {"dev_piece_mb", "KVSTASH_DEV_PIECE_MB", "16", "16"},
    {"dev_unit_kb", "KVSTASH_DEV_UNIT_KB", "512", "512"},
    {"dev_ring", "KVSTASH_DEV_RING", "8", "8"},
    {"dev_pinned", "KVSTASH_DEV_PINNED", "alloc", "alloc"},
    {"codec", "KVSTASH_CODEC", "OFF", "off"},
    {"retrieve_order", "KVSTASH_RETRIEVE_ORDER", "LAYER", "layer"},
};

_Static_assert(sizeof every / sizeof every[0] == KVS_CFG_NKEYS, "a row per key");

static void assert_every(const kvs_config *cfg, kvs_config_source src)
{
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        if (strcmp(get(cfg, every[i].key), every[i].expect))
            fail_msg("%s: expected %s, got %s", every[i].key, every[i].expect,
                     get(cfg, every[i].key));
        assert_int_equal(source_of(cfg, every[i].key), src);
        assert_int_equal(cfg->source[i], src);
    }
    assert_int_equal(cfg->chunk_size, 512);
    assert_false(cfg->local_cpu);
    assert_true(cfg->max_local_cpu_size == 2.5);
    assert_int_equal(cfg->num_store_paths, 2);
    assert_string_equal(cfg->store_paths[0], "/mnt/a");
    assert_string_equal(cfg->store_paths[1], "/mnt/b");
    assert_true(cfg->save_unfull_chunk);
    assert_int_equal(cfg->use_direct_io, KVS_DIRECT_IO_OFF);
    assert_int_equal(cfg->io_path, KVS_IO_PATH_POSIX);
    assert_true(cfg->store_high_watermark == 1.0);
    assert_int_equal(cfg->file_mode, 0600);
    assert_true(cfg->durable_writes);
    assert_string_equal(cfg->namespace_salt, "tenant-a");
    assert_int_equal(cfg->log_level, KVS_LOG_WARN);
}

static void test_every_key_from_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++)
        setenv(every[i].env, every[i].value, 1);
    kvs_config *cfg = load_ok();
    assert_every(cfg, KVS_SOURCE_ENV);
    assert_string_equal(tu_logs(), "");
    kvs_config_free(cfg);
}

static void test_every_key_from_file(void **state)
{
    (void)state;
    setenv("LMCACHE_CONFIG_FILE", data("good-full.yaml"), 1);
    kvs_config *cfg = load_ok();
    assert_every(cfg, KVS_SOURCE_FILE);
    assert_string_equal(tu_logs(), "");
    kvs_config_free(cfg);

    /* and through kvs_config_apply_file on a new configuration */
    assert_ok(kvs_config_new(&cfg));
    assert_ok(kvs_config_apply_file(cfg, data("good-full.yaml")));
    assert_every(cfg, KVS_SOURCE_FILE);
    kvs_config_free(cfg);
}

/* Every numeric setting reaches the library in bytes or nanoseconds through
 * kvs__config_canon, converted from the unit of its row. */
static void test_canonical_units(void **state)
{
    (void)state;
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    assert_true(kvs__config_canon(cfg, KVS_CFG_IO_TIMEOUT_MS) == 5000ull * 1000000u);
    assert_true(kvs__config_canon(cfg, KVS_CFG_TMP_GRACE_S) == 600ull * 1000000000u);
    assert_true(kvs__config_canon(cfg, KVS_CFG_MAX_STORE_SIZE) == 0);
    assert_true(kvs__config_canon(cfg, KVS_CFG_CUFILE_BUFFER_SIZE) == 1024ull << 20);
    assert_true(kvs__config_canon(cfg, KVS_CFG_DEV_UNIT_KB) == 2048ull << 10);
    assert_true(kvs__config_canon(cfg, KVS_CFG_GDS_IO_THREADS) == 4);
    assert_ok(kvs_config_set(cfg, "max_store_size", "20"));
    assert_ok(kvs_config_set(cfg, "min_free_space", "2.5"));
    assert_ok(kvs_config_set(cfg, "lease_ttl_s", "7"));
    assert_ok(kvs_config_set(cfg, "max_local_cpu_size", "0.001"));
    assert_true(kvs__config_canon(cfg, KVS_CFG_MAX_STORE_SIZE) == 20000000000ull);
    assert_true(kvs__config_canon(cfg, KVS_CFG_MIN_FREE_SPACE) == 2500000000ull);
    assert_true(kvs__config_canon(cfg, KVS_CFG_LEASE_TTL_S) == 7000000000ull);
    assert_true(kvs__config_canon(cfg, KVS_CFG_MAX_LOCAL_CPU_SIZE) == 1000000ull);
    kvs_config_free(cfg);
}

static void test_every_key_from_api(void **state)
{
    (void)state;
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    /* high before low, so the cross-check holds after each call */
    assert_ok(kvs_config_set(cfg, "store_low_watermark", "0.5"));
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++)
        assert_ok(kvs_config_set(cfg, every[i].key, every[i].value));
    assert_every(cfg, KVS_SOURCE_API);
    kvs_config_free(cfg);
}

/* ---- precedence and aliases --------------------------------------------- */

static void test_precedence(void **state)
{
    (void)state;
    const char *file = tmp_file("p.yaml",
                                "chunk_size: 128\n"
                                "local_cpu: false\n"
                                "extra_config:\n"
                                "  gds_io_threads: 8\n"
                                "  io_timeout_ms: 100\n"
                                "  store_timeout_ms: 200\n");
    setenv("LMCACHE_CONFIG_FILE", file, 1);
    kvs_config *cfg = load_ok();
    assert_string_equal(get(cfg, "chunk_size"), "128");
    assert_int_equal(source_of(cfg, "chunk_size"), KVS_SOURCE_FILE);
    kvs_config_free(cfg);

    setenv("LMCACHE_CHUNK_SIZE", "512", 1);
    setenv("LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": 16, \"store_timeout_ms\": 300}", 1);
    setenv("KVSTASH_STORE_TIMEOUT_MS", "400", 1);
    cfg = load_ok();
    assert_string_equal(get(cfg, "chunk_size"), "512");
    assert_int_equal(source_of(cfg, "chunk_size"), KVS_SOURCE_ENV);
    assert_string_equal(get(cfg, "local_cpu"), "false");
    assert_int_equal(source_of(cfg, "local_cpu"), KVS_SOURCE_FILE);
    /* extra_config merges entry by entry */
    assert_string_equal(get(cfg, "gds_io_threads"), "16");
    assert_int_equal(source_of(cfg, "gds_io_threads"), KVS_SOURCE_ENV);
    assert_string_equal(get(cfg, "io_timeout_ms"), "100");
    assert_int_equal(source_of(cfg, "io_timeout_ms"), KVS_SOURCE_FILE);
    assert_string_equal(get(cfg, "store_timeout_ms"), "400");

    char *text = NULL;
    assert_ok(kvs_config_to_text(cfg, &text));
    assert_has(text, "(env, from LMCACHE_CHUNK_SIZE)");
    assert_has(text, "(env, from LMCACHE_EXTRA_CONFIG)");
    assert_has(text, "(env, from KVSTASH_STORE_TIMEOUT_MS)");
    assert_has(text, "(file, from ");
    assert_has(text, "p.yaml:5)");
    assert_has(text, "(default)");
    kvs_free(text);

    assert_ok(kvs_config_set(cfg, "chunk_size", "64"));
    assert_string_equal(get(cfg, "chunk_size"), "64");
    assert_int_equal(source_of(cfg, "chunk_size"), KVS_SOURCE_API);
    assert_ok(kvs_config_to_text(cfg, &text));
    assert_has(text, "(api)");
    kvs_free(text);

    /* a later apply_env brings the environment back over the api value */
    assert_ok(kvs_config_apply_env(cfg));
    assert_string_equal(get(cfg, "chunk_size"), "512");
    kvs_config_free(cfg);
}

static void test_aliases(void **state)
{
    (void)state;
    setenv("LMCACHE_GDS_PATH", "/mnt/gds/", 1);
    setenv("LMCACHE_GDS_BUFFER_SIZE", "64", 1);
    setenv("KVSTASH_DISK_IO_THREADS", "7", 1);
    kvs_config *cfg = load_ok();
    assert_string_equal(get(cfg, "weka_path"), "/mnt/gds");
    assert_string_equal(get(cfg, "gds_path"), "/mnt/gds");
    assert_string_equal(get(cfg, "gds_buffer_size"), "64");
    assert_int_equal(cfg->cufile_buffer_size, 64);
    assert_string_equal(get(cfg, "disk_io_threads"), "7");
    assert_string_equal(get(cfg, "extra_config.disk_io_threads"), "7");
    assert_int_equal(cfg->gds_io_threads, 7);
    assert_string_equal(tu_logs(), "");
    kvs_config_free(cfg);
    tu_clear_env();

    /* in a file; the same value under both names is fine */
    setenv("LMCACHE_CONFIG_FILE", tmp_file("a.yaml", "gds_path: /x\n"
                                                     "weka_path: /x/\n"
                                                     "gds_buffer_size: 32\n"
                                                     "extra_config:\n"
                                                     "  disk_io_threads: 9\n"),
           1);
    cfg = load_ok();
    assert_string_equal(get(cfg, "weka_path"), "/x");
    assert_string_equal(get(cfg, "cufile_buffer_size"), "32");
    assert_string_equal(get(cfg, "gds_io_threads"), "9");
    assert_ok(kvs_config_set(cfg, "extra_config.disk_io_threads", "11"));
    assert_int_equal(cfg->gds_io_threads, 11);
    assert_ok(kvs_config_set(cfg, "gds_path", "/y"));
    assert_string_equal(cfg->store_paths[0], "/y");
    kvs_config_free(cfg);
    tu_clear_env();

    /* different values under both names, in one source: an error naming both */
    setenv("LMCACHE_WEKA_PATH", "/mnt/a", 1);
    setenv("LMCACHE_GDS_PATH", "/mnt/b", 1);
    const char *msg = load_fails();
    assert_has(msg, "weka_path and gds_path are the same setting, set to different values");
    assert_has(msg, "\"/mnt/a\" (from LMCACHE_WEKA_PATH)");
    assert_has(msg, "\"/mnt/b\" (from LMCACHE_GDS_PATH)");
    tu_clear_env();

    setenv("LMCACHE_CONFIG_FILE", data("bad-alias-conflict.yaml"), 1);
    msg = load_fails();
    assert_has(msg, "weka_path and gds_path are the same setting");
    assert_has(msg, "bad-alias-conflict.yaml:1)");
    assert_has(msg, "bad-alias-conflict.yaml:2:11)");
    assert_has(msg, "LMCACHE_WEKA_PATH, LMCACHE_GDS_PATH");
    tu_clear_env();

    setenv("LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": 4, \"disk_io_threads\": 8}", 1);
    msg = load_fails();
    assert_has(msg, "gds_io_threads and disk_io_threads");
    tu_clear_env();

    /* across sources the later one simply wins */
    setenv("LMCACHE_CONFIG_FILE", tmp_file("b.yaml", "weka_path: /mnt/a\n"), 1);
    setenv("LMCACHE_GDS_PATH", "/mnt/b", 1);
    cfg = load_ok();
    assert_string_equal(get(cfg, "weka_path"), "/mnt/b");
    kvs_config_free(cfg);
}

/* A misplaced entry at the top level is read, but the one inside extra_config wins. */
static void test_stray_entry(void **state)
{
    (void)state;
    setenv("LMCACHE_CONFIG_FILE", tmp_file("s.yaml", "gds_io_threads: 8\n"
                                                     "disk_io_threads: 8\n"
                                                     "extra_config:\n"
                                                     "  gds_io_threads: 16\n"),
           1);
    kvs_config *cfg = load_ok();
    assert_int_equal(cfg->gds_io_threads, 16);
    assert_has(tu_logs(), "gds_io_threads at the top level of ");
    assert_has(tu_logs(), "s.yaml:1 is read as extra_config.gds_io_threads");
    assert_has(tu_logs(), "disk_io_threads at the top level of ");
    kvs_config_free(cfg);
}

/* ---- sizes and ages: one grammar with the CLI ------------------------------- */

static void test_sizes_and_ages(void **state)
{
    (void)state;
    /* in the configuration, from a file and from the environment */
    setenv("LMCACHE_CONFIG_FILE", tmp_file("u.yaml", "cufile_buffer_size: 8GiB\n"
                                                     "extra_config:\n"
                                                     "  max_store_size: 2TiB\n"
                                                     "  collect_interval_s: 5m\n"
                                                     "  io_timeout_ms: 2.5s\n"),
           1);
    setenv("KVSTASH_MIN_FREE_SPACE", "500 MB", 1);
    setenv("KVSTASH_MAX_PENDING_STORE_SIZE", "0.1", 1);
    setenv("KVSTASH_TMP_GRACE_S", "1d", 1);
    kvs_config *cfg = load_ok();
    assert_int_equal(cfg->cufile_buffer_size, 8192);
    assert_true(cfg->max_store_size == 2199.023255552);
    assert_int_equal(cfg->collect_interval_s, 300);
    assert_int_equal(cfg->io_timeout_ms, 2500);
    assert_true(cfg->min_free_space == 0.5);
    assert_true(cfg->max_pending_store_size == 0.1); /* exact decimal, one rounding */
    assert_int_equal(cfg->tmp_grace_s, 86400);
    assert_string_equal(get(cfg, "collect_interval_s"), "300");
    kvs_config_free(cfg);

    /* the same grammar through the API the CLI uses */
    static const struct {
        const char *text;
        uint64_t bytes;
    } sizes[] = {
        {"10GB", 10000000000ull}, {"10", 10000000000ull}, {"1.5TiB", 1649267441664ull},
        {"500 MB", 500000000ull}, {"2k", 2000},           {"1kib", 1024},
        {" 7B ", 7},              {".5G", 500000000ull},  {"1e3", 1000000000000ull},
        {"0", 0},                 {"-0", 0},              {"16EiB", 0},
    };
    for (size_t i = 0; i < KVS_ARRAY_LEN(sizes); i++) {
        uint64_t v = 12345;
        if (sizes[i].bytes == 0 && strcmp(sizes[i].text, "0") && strcmp(sizes[i].text, "-0")) {
            assert_int_equal(kvs_parse_size(sizes[i].text, &v), KVS_ERR_INVALID);
            assert_has(kvs_last_error(), "is not a size");
            assert_int_equal(v, 12345);
            continue;
        }
        assert_ok(kvs_parse_size(sizes[i].text, &v));
        assert_int_equal(v, sizes[i].bytes);
    }
    static const struct {
        const char *text;
        uint64_t seconds;
    } ages[] = {
        {"90", 90}, {"90s", 90}, {"30m", 1800}, {"30min", 1800}, {"12h", 43200},
        {"7d", 604800}, {"2w", 1209600}, {"1.5m", 90}, {"2000ms", 2}, {"0", 0},
    };
    for (size_t i = 0; i < KVS_ARRAY_LEN(ages); i++) {
        uint64_t v = 0;
        assert_ok(kvs_parse_age(ages[i].text, &v));
        assert_int_equal(v, ages[i].seconds);
    }
    static const struct {
        const char *text, *needle;
        int age;
    } bad[] = {
        {"", "is not a size", 0},          {"GB", "is not a size", 0},
        {"-1GB", "is negative", 0},        {"nan", "is not a size", 0},
        {"inf", "is not a size", 0},       {"0x10", "is not a size", 0},
        {"1e30GB", "is too large", 0},     {"18446744073709551616B", "is too large", 0},
        {"10 GB extra", "is not a size", 0}, {"7 days", "is not an age", 1},
        {"1.5s", "is not a whole number of seconds", 1}, {"-1s", "is negative", 1},
        {"10GB", "is not an age", 1},
    };
    for (size_t i = 0; i < KVS_ARRAY_LEN(bad); i++) {
        uint64_t v = 777;
        kvs_status st = bad[i].age ? kvs_parse_age(bad[i].text, &v)
                                   : kvs_parse_size(bad[i].text, &v);
        assert_int_equal(st, KVS_ERR_INVALID);
        assert_has(kvs_last_error(), bad[i].needle);
        assert_int_equal(v, 777);
    }
    assert_int_equal(kvs_parse_size(NULL, NULL), KVS_ERR_INVALID);
}

/* ---- rejections ------------------------------------------------------------ */

static const struct reject {
    const char *var, *value;
    const char *needle[3];
} rejects[] = {
    {"LMCACHE_CHUNK_SIZE", "abc",
     {"chunk_size: \"abc\" from LMCACHE_CHUNK_SIZE is not a positive integer (accepted: "
      "1..1048576 tokens)"}},
    {"LMCACHE_CHUNK_SIZE", "0",
     {"chunk_size: \"0\" from LMCACHE_CHUNK_SIZE is out of range (accepted: 1..1048576 "
      "tokens)"}},
    {"LMCACHE_CHUNK_SIZE", "-1", {"\"-1\"", "is not a positive integer"}},
    {"LMCACHE_CHUNK_SIZE", "", {"chunk_size: \"\" from LMCACHE_CHUNK_SIZE is empty"}},
    {"LMCACHE_CHUNK_SIZE", "256 tokens", {"\"256 tokens\"", "not a positive integer"}},
    {"LMCACHE_CHUNK_SIZE", "0x100", {"not a positive integer"}},
    {"LMCACHE_CHUNK_SIZE", "25.6", {"\"25.6\"", "not a positive integer"}},
    {"LMCACHE_CHUNK_SIZE", "2097152", {"out of range", "1..1048576 tokens"}},
    {"LMCACHE_CHUNK_SIZE", "99999999999999999999999", {"out of range"}},
    {"LMCACHE_LOCAL_CPU", "maybe",
     {"local_cpu: \"maybe\" from LMCACHE_LOCAL_CPU is not a boolean",
      "true, false, 1, 0, yes, no, on, off"}},
    {"LMCACHE_LOCAL_CPU", "", {"local_cpu", "is empty"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "-1", {"max_local_cpu_size: \"-1\"", "out of range",
                                          "0..65536 GB"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "nan", {"\"nan\"", "is not a size", "such as 500MB"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "inf", {"is not a size"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "1e999", {"is out of range"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "5 parsecs", {"\"5 parsecs\"", "is not a size"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "0x10", {"is not a size"}},
    {"LMCACHE_MAX_LOCAL_CPU_SIZE", "65537GB", {"is out of range", "0..65536 GB"}},
    {"LMCACHE_CUFILE_BUFFER_SIZE", "0",
     {"cufile_buffer_size: \"0\" from LMCACHE_CUFILE_BUFFER_SIZE", "1..1048576 MiB"}},
    {"LMCACHE_CUFILE_BUFFER_SIZE", "-8192", {"is out of range"}},
    {"LMCACHE_CUFILE_BUFFER_SIZE", "8GB", {"is not a whole number of MiB"}},
    {"LMCACHE_CUFILE_BUFFER_SIZE", "2TiB", {"is out of range", "1..1048576 MiB"}},
    {"KVSTASH_LEASE_TTL_S", "1.5s", {"lease_ttl_s", "is not a whole number of seconds"}},
    {"KVSTASH_TMP_GRACE_S", "10 fortnights", {"tmp_grace_s", "is not an age", "such as 90s"}},
    {"KVSTASH_IO_TIMEOUT_MS", "0.5ms", {"is not a whole number of ms"}},
    {"LMCACHE_GDS_BUFFER_SIZE", "0",
     {"gds_buffer_size (alias of cufile_buffer_size): \"0\" from LMCACHE_GDS_BUFFER_SIZE"}},
    {"LMCACHE_SAVE_UNFULL_CHUNK", "2", {"save_unfull_chunk", "not a boolean"}},
    {"LMCACHE_WEKA_PATH", "relative/dir",
     {"weka_path: \"relative/dir\" from LMCACHE_WEKA_PATH has a relative path",
      "accepted: an absolute path"}},
    {"LMCACHE_WEKA_PATH", "./cache", {"relative path \"./cache\""}},
    {"LMCACHE_WEKA_PATH", "", {"weka_path: \"\" from LMCACHE_WEKA_PATH is empty"}},
    {"LMCACHE_WEKA_PATH", "/a,,/b", {"has an empty element"}},
    {"LMCACHE_WEKA_PATH", "/a,", {"has an empty element"}},
    {"LMCACHE_WEKA_PATH", "/a\n/b", {"\"/a\\x0a/b\"", "contains a line break"}},
    {"LMCACHE_WEKA_PATH", "~user/x", {"only ~ and ~/ are expanded"}},
    {"LMCACHE_WEKA_PATH", "/a,/a/", {"lists \"/a\" twice"}},
    {"LMCACHE_WEKA_PATH", "file://mnt/x", {"relative path \"mnt/x\""}},
    {"LMCACHE_GDS_PATH", "x", {"gds_path (alias of weka_path): \"x\" from LMCACHE_GDS_PATH"}},
    {"KVSTASH_GDS_IO_THREADS", "0",
     {"extra_config.gds_io_threads: \"0\" from KVSTASH_GDS_IO_THREADS is out of range "
      "(accepted: 1..1024 threads)"}},
    {"KVSTASH_GDS_IO_THREADS", "many", {"\"many\"", "not a positive integer"}},
    {"KVSTASH_DISK_IO_THREADS", "2000",
     {"extra_config.disk_io_threads (alias of gds_io_threads)", "1..1024 threads"}},
    {"KVSTASH_USE_DIRECT_IO", "auto", {"extra_config.use_direct_io", "not a boolean"}},
    {"KVSTASH_IO_PATH", "gds",
     {"extra_config.io_path: \"gds\" from KVSTASH_IO_PATH is not one of the accepted names "
      "(accepted: auto, cufile, posix)"}},
    {"KVSTASH_IO_TIMEOUT_MS", "0", {"1..3600000 ms"}},
    {"KVSTASH_STORE_TIMEOUT_MS", "3600001", {"store_timeout_ms", "out of range"}},
    {"KVSTASH_NEGATIVE_CACHE_MS", "600001", {"0..600000 ms"}},
    {"KVSTASH_NEGATIVE_CACHE_MS", "-1", {"is out of range"}},
    {"KVSTASH_MAX_PENDING_STORE_SIZE", "0", {"more than 0, up to 65536 GB"}},
    {"KVSTASH_MAX_STORE_SIZE", "-1", {"max_store_size", "0..1000000000 GB"}},
    {"KVSTASH_STORE_HIGH_WATERMARK", "0", {"store_high_watermark", "more than 0, up to 1)"}},
    {"KVSTASH_STORE_HIGH_WATERMARK", "1.5", {"out of range"}},
    {"KVSTASH_STORE_LOW_WATERMARK", "1", {"more than 0 and less than 1"}},
    {"KVSTASH_MIN_FREE_SPACE", "-0.5", {"min_free_space", "out of range"}},
    {"KVSTASH_ACCESS_INTERVAL_S", "86401", {"0..86400 seconds"}},
    {"KVSTASH_TMP_GRACE_S", "0", {"1..2592000 seconds"}},
    {"KVSTASH_LEASE_TTL_S", "0", {"lease_ttl_s", "out of range"}},
    {"KVSTASH_COLLECT_INTERVAL_S", "0", {"collect_interval_s", "out of range"}},
    {"KVSTASH_FAILURE_THRESHOLD", "x", {"failure_threshold", "not a non-negative integer"}},
    {"KVSTASH_FILE_MODE", "0400", {"extra_config.file_mode: \"0400\"",
                                   "lacks owner read and write (0600)"}},
    {"KVSTASH_FILE_MODE", "0888", {"is not an octal number"}},
    {"KVSTASH_FILE_MODE", "01777", {"is out of range"}},
    {"KVSTASH_FILE_MODE", "0x1a4", {"is not an octal number"}},
    {"KVSTASH_DURABLE_WRITES", "sometimes", {"durable_writes", "not a boolean"}},
    {"KVSTASH_LOG_LEVEL", "verbose", {"log_level", "error, warning, info, debug"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": 32",
     {"malformed JSON in LMCACHE_EXTRA_CONFIG at its end: did not find expected ',' or '}' "
      "(while parsing a flow mapping at line 1, column 1)", "accepted: a JSON object such as"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": 32]",
     {"malformed JSON in LMCACHE_EXTRA_CONFIG:1:"}},
    {"LMCACHE_EXTRA_CONFIG", "[1, 2]",
     {"LMCACHE_EXTRA_CONFIG is a sequence (accepted: a JSON object"}},
    {"LMCACHE_EXTRA_CONFIG", "\"gds_io_threads\"",
     {"LMCACHE_EXTRA_CONFIG is \"gds_io_threads\""}},
    {"LMCACHE_EXTRA_CONFIG", "", {"LMCACHE_EXTRA_CONFIG is empty"}},
    {"LMCACHE_EXTRA_CONFIG", "null", {"LMCACHE_EXTRA_CONFIG is an empty value"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": \"many\"}",
     {"extra_config.gds_io_threads: \"many\" in LMCACHE_EXTRA_CONFIG:1:20 is not a positive "
      "integer (accepted: 1..1024 threads; environment variable KVSTASH_GDS_IO_THREADS)"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": true}",
     {"extra_config.gds_io_threads: true in LMCACHE_EXTRA_CONFIG", "not a positive integer"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": 32.5}",
     {"extra_config.gds_io_threads: 32.5 in", "not a positive integer"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": [32]}",
     {"extra_config.gds_io_threads: a sequence in LMCACHE_EXTRA_CONFIG:1:20 is the wrong "
      "type"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": {\"n\": 32}}", {"a mapping", "wrong type"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": null}",
     {"extra_config.gds_io_threads: an empty value in LMCACHE_EXTRA_CONFIG:1:20"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"use_direct_io\": 2}", {"use_direct_io: 2 in", "boolean"}},
    {"LMCACHE_EXTRA_CONFIG", "{\"namespace_salt\": [1]}", {"namespace_salt", "wrong type"}},
    {"LMCACHE_USE_EXPERIMENTAL", "False",
     {"LMCACHE_USE_EXPERIMENTAL=\"False\"", "only the experimental (v1) engine",
      "must be True or unset"}},
    {"LMCACHE_USE_EXPERIMENTAL", "0", {"must be True or unset"}},
    {"LMCACHE_USE_EXPERIMENTAL", "off", {"must be True or unset"}},
    {"LMCACHE_USE_EXPERIMENTAL", "v1",
     {"LMCACHE_USE_EXPERIMENTAL: \"v1\" is not a boolean", "experimental (v1) engine"}},
};

static void test_rejections(void **state)
{
    (void)state;
    kvs_config *base = NULL;
    assert_ok(kvs_config_new(&base));
    char *before = json_of(base);
    for (size_t i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
        const struct reject *r = &rejects[i];
        tu_clear_env();
        setenv(r->var, r->value, 1);
        const char *msg = load_fails();
        for (int k = 0; k < 3 && r->needle[k]; k++) {
            if (!strstr(msg, r->needle[k]))
                fail_msg("%s=%s: expected \"%s\" in:\n%s", r->var, r->value, r->needle[k],
                         msg);
        }
        /* apply_env on an existing configuration fails and leaves it alone */
        assert_int_equal(kvs_config_apply_env(base), KVS_ERR_CONFIG);
        char *after = json_of(base);
        assert_string_equal(before, after);
        kvs_free(after);
    }
    kvs_free(before);
    kvs_config_free(base);
}

/* The same rejections reach kvs_config_set, named as the api's. */
static void test_set_rejections(void **state)
{
    (void)state;
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    char *before = json_of(cfg);
    assert_int_equal(kvs_config_set(cfg, "chunk_size", "abc"), KVS_ERR_CONFIG);
    assert_string_equal(kvs_last_error(),
                        "chunk_size: \"abc\" from kvs_config_set() is not a positive integer "
                        "(accepted: 1..1048576 tokens; environment variable "
                        "LMCACHE_CHUNK_SIZE)");
    assert_int_equal(kvs_config_set(cfg, "extra_config.gds_io_threads", "0"), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "KVSTASH_GDS_IO_THREADS");
    assert_int_equal(kvs_config_set(cfg, "store_low_watermark", "0.95"), KVS_ERR_CONFIG);
    assert_int_equal(kvs_config_set(cfg, "weka_path", "~/x,~/x/"), KVS_ERR_CONFIG);
    assert_int_equal(kvs_config_set(cfg, "extra_config", "{\"io_path\": \"nfs\"}"),
                     KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "extra_config.io_path: \"nfs\" in kvs_config_set():1:13");
    char *after = json_of(cfg);
    assert_string_equal(before, after);
    kvs_free(before);
    kvs_free(after);

    assert_int_equal(kvs_config_set(cfg, "chunk_sise", "1"), KVS_ERR_NOT_FOUND);
    assert_has(kvs_last_error(), "unknown configuration key \"chunk_sise\" (did you mean "
                                 "\"chunk_size\"?)");
    assert_int_equal(kvs_config_set(cfg, "extra_config.chunk_size", "1"), KVS_ERR_NOT_FOUND);
    assert_int_equal(kvs_config_set(NULL, "chunk_size", "1"), KVS_ERR_INVALID);
    assert_int_equal(kvs_config_set(cfg, NULL, "1"), KVS_ERR_INVALID);
    assert_int_equal(kvs_config_set(cfg, "chunk_size", NULL), KVS_ERR_INVALID);
    /* an LMCache setting kvstash ignores: a warning, not an error */
    assert_ok(kvs_config_set(cfg, "local_disk", "file:///tmp/x"));
    assert_has(tu_logs(), "local_disk is an LMCache setting kvstash does not use; ignored");
    kvs_config_free(cfg);
}

static const struct file_reject {
    const char *file;
    const char *needle[3];
} file_rejects[] = {
    {"bad-syntax.yaml", {"malformed YAML in ", "bad-syntax.yaml:3:10: did not find expected",
                         "(while parsing a flow sequence at line 2, column 12)"}},
    {"bad-not-mapping.yaml",
     {"the top level of ", "bad-not-mapping.yaml:1:1 is a sequence (accepted: a mapping"}},
    {"bad-type-extra.yaml",
     {"extra_config.gds_io_threads: \"many\" in ",
      "bad-type-extra.yaml:4:19 is not a positive integer (accepted: 1..1024 threads; "
      "environment variable KVSTASH_GDS_IO_THREADS)"}},
    {"bad-bool-for-int.yaml",
     {"extra_config.gds_io_threads: true in ", "bad-bool-for-int.yaml:2:19",
      "not a positive integer"}},
    {"bad-fraction-for-int.yaml",
     {"extra_config.gds_io_threads: 32.5 in ", "bad-fraction-for-int.yaml:2:19"}},
    {"bad-sequence.yaml",
     {"chunk_size: a sequence in ", "bad-sequence.yaml:1:13 is the wrong type",
      "environment variable LMCACHE_CHUNK_SIZE"}},
    {"bad-null.yaml", {"chunk_size: an empty value in ", "bad-null.yaml:2:"}},
    {"bad-extra-not-mapping.yaml",
     {"extra_config in ", "bad-extra-not-mapping.yaml:2:15 is 32", "accepted: a mapping"}},
    {"bad-watermarks.yaml",
     {"extra_config.store_low_watermark (0.6, from ",
      "must be less than extra_config.store_high_watermark (0.5, from ",
      "KVSTASH_STORE_LOW_WATERMARK and KVSTASH_STORE_HIGH_WATERMARK"}},
    {"bad-codec-auth.yaml",
     {"extra_config.codec (on, from ", "bad-codec-auth.yaml:2) cannot be used with "
      "extra_config.auth_key_file (from ", "bad-codec-auth.yaml:3): authenticated"}},
    {"bad-relative-path.yaml",
     {"weka_path: cache/kv in ", "bad-relative-path.yaml:2:12 has a relative path",
      "LMCACHE_WEKA_PATH"}},
    {"bad-file-mode.yaml", {"extra_config.file_mode: 0444 in ", "bad-file-mode.yaml:2:14"}},
    /* columns count the spaces removed by the dedent */
    {"bad-indented.yaml",
     {"local_cpu: perhaps in ", "bad-indented.yaml:3:13 is not a boolean"}},
};

static void test_file_rejections(void **state)
{
    (void)state;
    kvs_config *base = NULL;
    assert_ok(kvs_config_new(&base));
    char *before = json_of(base);
    for (size_t i = 0; i < sizeof file_rejects / sizeof file_rejects[0]; i++) {
        const struct file_reject *r = &file_rejects[i];
        setenv("LMCACHE_CONFIG_FILE", data(r->file), 1);
        const char *msg = load_fails();
        for (int k = 0; k < 3 && r->needle[k]; k++)
            if (!strstr(msg, r->needle[k]))
                fail_msg("%s: expected \"%s\" in:\n%s", r->file, r->needle[k], msg);
        assert_int_equal(kvs_config_apply_file(base, data(r->file)), KVS_ERR_CONFIG);
        char *after = json_of(base);
        assert_string_equal(before, after);
        kvs_free(after);
    }
    kvs_free(before);
    kvs_config_free(base);
}

static void test_missing_and_unreadable_files(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/nope.yaml", tmp);
    setenv("LMCACHE_CONFIG_FILE", path, 1);
    const char *msg = load_fails();
    assert_has(msg, "cannot read configuration file \"");
    assert_has(msg, "nope.yaml\" (named by LMCACHE_CONFIG_FILE): No such file or directory");

    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    assert_int_equal(kvs_config_apply_file(cfg, path), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "nope.yaml\": No such file");
    assert_lacks(kvs_last_error(), "named by");

    /* a directory is not a file */
    setenv("LMCACHE_CONFIG_FILE", tmp, 1);
    msg = load_fails();
    assert_has(msg, "(named by LMCACHE_CONFIG_FILE): it is a directory");

    /* no permission (root reads anything, so only as another user) */
    const char *locked = tmp_file("locked.yaml", "chunk_size: 1\n");
    chmod(locked, 0);
    if (geteuid() != 0) {
        setenv("LMCACHE_CONFIG_FILE", locked, 1);
        msg = load_fails();
        assert_has(msg, "locked.yaml\" (named by LMCACHE_CONFIG_FILE): Permission denied");
    }

    /* empty or unset: no file */
    setenv("LMCACHE_CONFIG_FILE", "", 1);
    kvs_config *c2 = load_ok();
    kvs_config_free(c2);
    kvs_config_free(cfg);
}

static void test_use_experimental(void **state)
{
    (void)state;
    static const char *const ok[] = {"True", "true", "1", "yes", "ON"};
    kvs_config *cfg;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        setenv("LMCACHE_USE_EXPERIMENTAL", ok[i], 1);
        cfg = load_ok();
        kvs_config_free(cfg);
    }
    unsetenv("LMCACHE_USE_EXPERIMENTAL");
    cfg = load_ok();
    setenv("LMCACHE_USE_EXPERIMENTAL", "False", 1);
    assert_int_equal(kvs_config_apply_env(cfg), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "only the experimental (v1) engine");
    kvs_config_free(cfg);
    /* not a key: never printed */
    unsetenv("LMCACHE_USE_EXPERIMENTAL");
    cfg = load_ok();
    char *j = json_of(cfg);
    assert_lacks(j, "experimental");
    kvs_free(j);
    kvs_config_free(cfg);
}

/* ---- warnings ------------------------------------------------------------- */

static void test_unknown_keys(void **state)
{
    (void)state;
    setenv("LMCACHE_CONFIG_FILE", data("warn-unknown.yaml"), 1);
    kvs_config *cfg = load_ok();
    const char *logs = tu_logs();
    assert_has(logs, "unknown key \"chunk_sise\" in ");
    assert_has(logs, "warn-unknown.yaml:1:1 (did you mean \"chunk_size\"?); ignored");
    assert_has(logs, "key \"local_disk\" in ");
    assert_has(logs, "warn-unknown.yaml:2:1 is an LMCache setting kvstash does not use; "
                     "ignored");
    assert_has(logs, "duplicate key \"chunk_size\" in ");
    assert_has(logs, "warn-unknown.yaml:4:1 (also at line 3); the last one wins");
    assert_has(logs, "unknown extra_config entry \"gds_io_thread\" in ");
    assert_has(logs, "(did you mean \"gds_io_threads\"?); ignored");
    assert_has(logs, "extra_config entry \"use_cufile\" in ");
    assert_has(logs, "\"chunk_size\" inside extra_config in ");
    assert_has(logs, "is a top-level key, not an extra_config entry; ignored");
    assert_has(logs, "duplicate extra_config entry \"gds_io_threads\"");
    assert_has(logs, "unknown key \"frobnicate\" in ");
    const char *fr = strstr(logs, "\"frobnicate\"");
    assert_true(strcspn(fr, "\n") < strcspn(fr, "(")); /* nothing near it to suggest */
    assert_int_equal(cfg->chunk_size, 512);
    assert_int_equal(cfg->gds_io_threads, 6);
    kvs_config_free(cfg);
}

static void test_unknown_variables(void **state)
{
    (void)state;
    setenv("LMCACHE_CHUNK_SISE", "1", 1);
    setenv("LMCACHE_LOCAL_DISK", "file:///tmp", 1);
    setenv("KVSTASH_GDS_IO_THREAD", "1", 1);
    setenv("KVSTASH_CHUNK_SIZE", "1", 1);
    kvs_config *cfg = load_ok();
    const char *logs = tu_logs();
    assert_has(logs, "unknown environment variable LMCACHE_CHUNK_SISE (did you mean "
                     "\"LMCACHE_CHUNK_SIZE\"?); ignored");
    assert_has(logs, "LMCACHE_LOCAL_DISK is an LMCache setting kvstash does not use");
    assert_has(logs, "KVSTASH_GDS_IO_THREAD (did you mean \"KVSTASH_GDS_IO_THREADS\"?)");
    assert_has(logs, "KVSTASH_CHUNK_SIZE (did you mean \"LMCACHE_CHUNK_SIZE\"?)");
    assert_int_equal(cfg->chunk_size, 256);
    kvs_config_free(cfg);
}

/* LMCache's LMCACHE_LOG_LEVEL sets log_level; KVSTASH_LOG_LEVEL wins. */
static void test_lmcache_log_level(void **state)
{
    (void)state;
    setenv("LMCACHE_LOG_LEVEL", "DEBUG", 1);
    kvs_config *cfg = load_ok();
    assert_int_equal(cfg->log_level, KVS_LOG_DEBUG);
    assert_int_equal(source_of(cfg, "log_level"), KVS_SOURCE_ENV);
    assert_null(kvs_config_unknown(cfg));
    kvs_config_free(cfg);
    setenv("KVSTASH_LOG_LEVEL", "error", 1);
    cfg = load_ok();
    assert_int_equal(cfg->log_level, KVS_LOG_ERROR);
    kvs_config_free(cfg);
    assert_string_equal(tu_logs(), "");
    setenv("LMCACHE_LOG_LEVEL", "LOUD", 1);
    const char *msg = load_fails();
    assert_has(msg, "LMCACHE_LOG_LEVEL");
    assert_has(msg, "debug");
}

/* A misspelt store path variable is remembered with the nearest known
 * name, and strict turns it into an error (issue 11: it used to send the
 * cache silently to the home folder). */
static void test_unknown_remembered_and_strict(void **state)
{
    (void)state;
    setenv("LMCACHE_WEKA_PAHT", "/mnt/weka/cache", 1);
    kvs_config *cfg = load_ok();
    assert_null(cfg->weka_path);
    const char *u = kvs_config_unknown(cfg);
    assert_non_null(u);
    assert_has(u, "LMCACHE_WEKA_PAHT (did you mean \"LMCACHE_WEKA_PATH\"?)");
    /* turning strict on afterwards fails and leaves cfg as it was */
    assert_int_equal(kvs_config_set(cfg, "strict", "true"), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "LMCACHE_WEKA_PAHT");
    assert_false(cfg->strict);
    kvs_config_free(cfg);

    setenv("KVSTASH_STRICT", "1", 1);
    const char *msg = load_fails();
    assert_has(msg, "unknown settings: environment variable LMCACHE_WEKA_PAHT (did you mean "
                    "\"LMCACHE_WEKA_PATH\"?)");
    assert_has(msg, "strict is on (from KVSTASH_STRICT)");

    /* an unknown key of a file too */
    unsetenv("LMCACHE_WEKA_PAHT");
    setenv("LMCACHE_CONFIG_FILE", tmp_file("typo.yaml", "weka_pth: /mnt/weka\n"), 1);
    msg = load_fails();
    assert_has(msg, "key \"weka_pth\" in ");
    assert_has(msg, "(did you mean \"weka_path\"?)");
    unsetenv("KVSTASH_STRICT");
    cfg = load_ok();
    assert_has(kvs_config_unknown(cfg), "weka_pth");
    kvs_config_free(cfg);
}

static void test_file_forms(void **state)
{
    (void)state;
    kvs_config *cfg;
    /* empty, comments only, null document: nothing set */
    static const char *const empty[] = {"", "# nothing\n\n", "---\n", "~\n"};
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        setenv("LMCACHE_CONFIG_FILE", tmp_file("e.yaml", empty[i]), 1);
        cfg = load_ok();
        assert_int_equal(cfg->chunk_size, 256);
        kvs_config_free(cfg);
    }
    /* quoted scalars, CRLF, extra_config: with nothing */
    setenv("LMCACHE_CONFIG_FILE",
           tmp_file("q.yaml", "chunk_size: '128'\r\nlocal_cpu: \"off\"\r\nextra_config:\r\n"), 1);
    cfg = load_ok();
    assert_int_equal(cfg->chunk_size, 128);
    assert_false(cfg->local_cpu);
    kvs_config_free(cfg);
    /* a second document is ignored with a warning */
    setenv("LMCACHE_CONFIG_FILE", tmp_file("d.yaml", "chunk_size: 1\n---\nchunk_size: 2\n"), 1);
    cfg = load_ok();
    assert_int_equal(cfg->chunk_size, 1);
    assert_has(tu_logs(), "holds more than one YAML document; only the first is read");
    kvs_config_free(cfg);
    /* LMCACHE_EXTRA_CONFIG also takes YAML flow syntax */
    unsetenv("LMCACHE_CONFIG_FILE");
    setenv("LMCACHE_EXTRA_CONFIG", "{gds_io_threads: 12, io_path: posix}", 1);
    cfg = load_ok();
    assert_int_equal(cfg->gds_io_threads, 12);
    assert_int_equal(cfg->io_path, KVS_IO_PATH_POSIX);
    kvs_config_free(cfg);
}

/* ---- single types ------------------------------------------------------------ */

static void test_file_mode(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        unsigned mode;
    } good[] = {{"0644", 0644}, {"644", 0644}, {"0o600", 0600}, {"0755", 0755},
                {"777", 0777},  {" 0640 ", 0640}, {"00660", 0660}};
    static const char *const bad[] = {"0400", "0o", "8", "", "-644", "0x1a4", "1000",
                                      "0644x", "06 44"};
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_ok(kvs_config_set(cfg, "file_mode", good[i].in));
        assert_int_equal(cfg->file_mode, good[i].mode);
    }
    assert_string_equal(get(cfg, "file_mode"), "0660");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (kvs_config_set(cfg, "file_mode", bad[i]) != KVS_ERR_CONFIG)
            fail_msg("file_mode %s accepted", bad[i]);
    kvs_config_free(cfg);

    /* YAML integers are read as octal digits */
    static const char *const yaml[] = {"  file_mode: 644\n", "  file_mode: 0644\n",
                                       "  file_mode: \"0644\"\n"};
    for (size_t i = 0; i < 3; i++) {
        char text[128];
        snprintf(text, sizeof text, "extra_config:\n%s", yaml[i]);
        setenv("LMCACHE_CONFIG_FILE", tmp_file("m.yaml", text), 1);
        cfg = load_ok();
        assert_int_equal(cfg->file_mode, 0644);
        kvs_config_free(cfg);
    }
}

static void test_watermarks(void **state)
{
    (void)state;
    setenv("KVSTASH_STORE_HIGH_WATERMARK", "0.5", 1);
    const char *msg = load_fails();
    assert_has(msg, "extra_config.store_low_watermark (0.8, the default) must be less than "
                    "extra_config.store_high_watermark (0.5, from "
                    "KVSTASH_STORE_HIGH_WATERMARK)");
    setenv("KVSTASH_STORE_LOW_WATERMARK", "0.5", 1);
    msg = load_fails(); /* equal is not below */
    assert_has(msg, "(0.5, from KVSTASH_STORE_LOW_WATERMARK)");
    setenv("KVSTASH_STORE_LOW_WATERMARK", "0.4", 1);
    kvs_config *cfg = load_ok();
    assert_true(cfg->store_low_watermark == 0.4);

    /* through the api: one call at a time, each checked */
    assert_ok(kvs_config_set(cfg, "store_high_watermark", "0.95"));
    assert_ok(kvs_config_set(cfg, "store_low_watermark", "0.9"));
    assert_int_equal(kvs_config_set(cfg, "store_low_watermark", "0.96"), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "(0.96, from kvs_config_set()) must be less than");
    assert_true(cfg->store_low_watermark == 0.9);
    kvs_config_free(cfg);
}

/* codec: on with auth_key_file is an error naming both keys (authenticated
 * chunks are never compressed); auto with a key is accepted (it means off). */
static void test_codec(void **state)
{
    (void)state;
    kvs_config *cfg = load_ok();
    assert_int_equal(cfg->codec, KVS_CODEC_MODE_AUTO);
    kvs_config_free(cfg);
    setenv("KVSTASH_CODEC", "maybe", 1);
    const char *msg = load_fails();
    assert_has(msg, "codec: \"maybe\" from KVSTASH_CODEC");
    assert_has(msg, "auto, on, off");
    setenv("KVSTASH_CODEC", "on", 1);
    cfg = load_ok();
    assert_int_equal(cfg->codec, KVS_CODEC_MODE_ON);
    kvs_config_free(cfg);
    setenv("KVSTASH_AUTH_KEY_FILE", "/etc/kvstash/key", 1);
    msg = load_fails();
    assert_has(msg, "extra_config.codec (on, from KVSTASH_CODEC) cannot be used with "
                    "extra_config.auth_key_file (from KVSTASH_AUTH_KEY_FILE)");
    setenv("KVSTASH_CODEC", "auto", 1);
    cfg = load_ok();
    assert_int_equal(cfg->codec, KVS_CODEC_MODE_AUTO);
    /* through the api: the second key of the pair is refused, the first kept */
    assert_int_equal(kvs_config_set(cfg, "extra_config.codec", "on"), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "(on, from kvs_config_set()) cannot be used with");
    assert_int_equal(cfg->codec, KVS_CODEC_MODE_AUTO);
    assert_ok(kvs_config_set(cfg, "codec", "off"));
    assert_int_equal(cfg->codec, KVS_CODEC_MODE_OFF);
    kvs_config_free(cfg);
}

static void test_paths(void **state)
{
    (void)state;
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));

    assert_ok(kvs_config_set(cfg, "weka_path", "file:///mnt/weka/cache/"));
    assert_string_equal(get(cfg, "weka_path"), "/mnt/weka/cache");
    assert_int_equal(cfg->num_store_paths, 1);
    assert_string_equal(cfg->store_paths[0], "/mnt/weka/cache");

    assert_ok(kvs_config_set(cfg, "weka_path", " /a/ , file:///b//c/./d/../e ,~/kv/,~"));
    assert_string_equal(get(cfg, "weka_path"), "/a,/b/c/e,~/kv,~");
    assert_int_equal(cfg->num_store_paths, 4);
    assert_string_equal(cfg->store_paths[0], "/a");
    assert_string_equal(cfg->store_paths[1], "/b/c/e");
    assert_string_equal(cfg->store_paths[2], HOME_DIR "/kv");
    assert_string_equal(cfg->store_paths[3], HOME_DIR);
    assert_null(cfg->store_paths[4]);

    assert_ok(kvs_config_set(cfg, "weka_path", "file:/x//"));
    assert_string_equal(cfg->store_paths[0], "/x");
    assert_ok(kvs_config_set(cfg, "weka_path", "/"));
    assert_string_equal(cfg->store_paths[0], "/");
    assert_ok(kvs_config_set(cfg, "weka_path", "/../.."));
    assert_string_equal(cfg->store_paths[0], "/");

    /* 16 is the most */
    char list[1024] = "";
    for (int i = 0; i < 16; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s/p%d", i ? "," : "", i);
    assert_ok(kvs_config_set(cfg, "weka_path", list));
    assert_int_equal(cfg->num_store_paths, 16);
    assert_string_equal(cfg->store_paths[15], "/p15");
    strcat(list, ",/p16");
    assert_int_equal(kvs_config_set(cfg, "weka_path", list), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "lists more than 16 paths");
    assert_int_equal(cfg->num_store_paths, 16);

    /* ~ needs HOME; the same path twice once expanded */
    assert_int_equal(kvs_config_set(cfg, "weka_path", "~/kv," HOME_DIR "/kv"), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "lists " HOME_DIR "/kv twice once ~ is expanded");
    unsetenv("HOME");
    assert_int_equal(kvs_config_set(cfg, "weka_path", "~/kv"), KVS_ERR_CONFIG);
    assert_has(kvs_last_error(), "weka_path: \"~/kv\" from kvs_config_set() starts with ~ "
                                 "but HOME is not set");
    setenv("LMCACHE_WEKA_PATH", "~/kv", 1);
    const char *msg = load_fails();
    assert_has(msg, "from LMCACHE_WEKA_PATH starts with ~ but HOME is not set");
    setenv("HOME", HOME_DIR, 1);

    /* resolution straight from the struct */
    kvs__free(cfg->weka_path);
    cfg->weka_path = kvs__strdup("/q/,/r");
    assert_ok(kvs__config_resolve_paths(cfg));
    assert_int_equal(cfg->num_store_paths, 2);
    assert_string_equal(cfg->store_paths[1], "/r");
    assert_null(cfg->store_paths[2]);
    kvs__free(cfg->weka_path);
    cfg->weka_path = kvs__strdup("relative");
    assert_int_equal(kvs__config_resolve_paths(cfg), KVS_ERR_CONFIG);
    assert_int_equal(cfg->num_store_paths, 2);
    kvs__free(cfg->weka_path);
    cfg->weka_path = NULL;
    assert_ok(kvs__config_resolve_paths(cfg));
    assert_string_equal(cfg->store_paths[0], HOME_DIR "/.cache/kvstash");
    kvs_config_free(cfg);
}

static void test_default_path(void **state)
{
    (void)state;
    char *p = kvs__config_default_path();
    assert_string_equal(p, HOME_DIR "/.cache/kvstash");
    kvs__free(p);
    setenv("XDG_CACHE_HOME", "/xdg//cache/", 1);
    p = kvs__config_default_path();
    assert_string_equal(p, "/xdg/cache/kvstash");
    kvs__free(p);
    setenv("XDG_CACHE_HOME", "relative", 1); /* ignored, as the XDG spec says */
    p = kvs__config_default_path();
    assert_string_equal(p, HOME_DIR "/.cache/kvstash");
    kvs__free(p);
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    char cwd[4096], expect[4200];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(expect, sizeof expect, "%s/kvstash-cache", strcmp(cwd, "/") ? cwd : "");
    p = kvs__config_default_path();
    assert_string_equal(p, expect);
    kvs__free(p);
    kvs_config *cfg = load_ok();
    assert_string_equal(cfg->store_paths[0], expect);
    kvs_config_free(cfg);
    setenv("HOME", HOME_DIR, 1);
}

/* ---- output forms ---------------------------------------------------------- */

static void test_json(void **state)
{
    (void)state;
    kvs_config *cfg = NULL;
    assert_ok(kvs_config_new(&cfg));
    assert_ok(kvs_config_set(cfg, "namespace_salt", "a\"b\\c\nd\te"));
    assert_ok(kvs_config_set(cfg, "max_local_cpu_size", "0.1"));
    char *j = json_of(cfg), *v = json_values(j);
    assert_has(v, "chunk_size=256\n");
    assert_has(v, "local_cpu=true\n");
    assert_has(v, "max_local_cpu_size=0.1\n");
    assert_has(v, "weka_path=null\n");
    assert_has(v, "io_path=string:auto\n");
    assert_has(v, "file_mode=string:0644\n");
    assert_has(v, "namespace_salt=string:a\"b\\c\nd\te\n");
    assert_has(j, "\"namespace_salt\": {\"value\": \"a\\\"b\\\\c\\nd\\te\", \"source\": \"api\"}");
    /* members in table order */
    assert_true(strstr(j, "\"chunk_size\"") < strstr(j, "\"weka_path\""));
    assert_true(strstr(j, "\"weka_path\"") < strstr(j, "\"gds_io_threads\""));
    assert_true(strstr(j, "\"gds_io_threads\"") < strstr(j, "\"log_level\""));
    free(v);
    kvs_free(j);
    assert_int_equal(kvs_config_to_json(cfg, NULL), KVS_ERR_INVALID);
    kvs_config_free(cfg);
}

static void test_get(void **state)
{
    (void)state;
    setenv("KVSTASH_GDS_IO_THREADS", "5", 1);
    kvs_config *cfg = load_ok();
    char *v = NULL;
    kvs_config_source src = KVS_SOURCE_DEFAULT;
    static const char *const same[] = {"gds_io_threads", "extra_config.gds_io_threads",
                                       "disk_io_threads", "extra_config.disk_io_threads"};
    for (size_t i = 0; i < 4; i++) {
        assert_ok(kvs_config_get(cfg, same[i], &v, &src));
        assert_string_equal(v, "5");
        assert_int_equal(src, KVS_SOURCE_ENV);
        kvs_free(v);
    }
    v = (char *)(uintptr_t)0x1;
    assert_int_equal(kvs_config_get(cfg, "extra_config.chunk_size", &v, NULL),
                     KVS_ERR_NOT_FOUND);
    assert_int_equal(kvs_config_get(cfg, "extra_config", &v, NULL), KVS_ERR_NOT_FOUND);
    assert_has(kvs_last_error(), "extra_config is a mapping, not one value");
    assert_int_equal(kvs_config_get(cfg, "gds_io_thread", &v, NULL), KVS_ERR_NOT_FOUND);
    assert_has(kvs_last_error(), "(did you mean \"gds_io_threads\"?)");
    assert_ptr_equal(v, (char *)(uintptr_t)0x1);
    assert_string_equal(get(cfg, "max_pending_store_size"), "20");
    assert_string_equal(get(cfg, "log_level"), "info");
    assert_string_equal(get(cfg, "use_direct_io"), "true");
    kvs_config_free(cfg);
}

static void test_text(void **state)
{
    (void)state;
    setenv("LMCACHE_CONFIG_FILE", tmp_file("t.yaml", "local_cpu: false\n"), 1);
    setenv("LMCACHE_WEKA_PATH", "/mnt/weka/cache", 1);
    kvs_config *cfg = load_ok();
    char *t = NULL;
    assert_ok(kvs_config_to_text(cfg, &t));
    assert_has(t, "chunk_size              256              (default)\n");
    assert_has(t, "weka_path               /mnt/weka/cache  (env, from LMCACHE_WEKA_PATH)\n");
    assert_has(t, "local_cpu               false            (file, from ");
    assert_has(t, "t.yaml:1)\n");
    assert_has(t, "namespace_salt          -                (default)\n");
    assert_has(t, "store paths             /mnt/weka/cache  (from weka_path)\n");
    kvs_free(t);
    kvs_config_free(cfg);
}

static void test_copy(void **state)
{
    (void)state;
    setenv("LMCACHE_CONFIG_FILE", data("good-full.yaml"), 1);
    kvs_config *cfg = load_ok(), *copy = NULL;
    assert_ok(kvs_config_copy(cfg, &copy));
    char *a = json_of(cfg), *b = json_of(copy), *ta = NULL, *tb = NULL;
    assert_same_json(a, b);
    assert_ok(kvs_config_to_text(cfg, &ta));
    assert_ok(kvs_config_to_text(copy, &tb));
    assert_string_equal(ta, tb);
    assert_ptr_not_equal(cfg->store_paths[0], copy->store_paths[0]);
    assert_ok(kvs_config_set(copy, "weka_path", "/other"));
    assert_string_equal(cfg->store_paths[0], "/mnt/a");
    kvs_config_free(cfg); /* the copy outlives its source */
    assert_string_equal(get(copy, "namespace_salt"), "tenant-a");
    kvs_config_free(copy);
    kvs_config_free(NULL);
    kvs_free(a);
    kvs_free(b);
    kvs_free(ta);
    kvs_free(tb);
}

/* docs/config.md is the function's output, byte for byte.  Run with
 * KVS_WRITE_DOCS=1 to regenerate it after changing the table. */
static void test_docs_match(void **state)
{
    (void)state;
    char *md = NULL, path[4096];
    assert_ok(kvs_config_reference_markdown(&md));
    snprintf(path, sizeof path, "%s/docs/config.md", KVS_SOURCE_DIR);
    if (getenv("KVS_WRITE_DOCS"))
        assert_int_equal(tu_write_file(path, md, strlen(md)), 0);
    char *file = tu_read_file(path, NULL);
    if (!file)
        fail_msg("%s is missing; run this test with KVS_WRITE_DOCS=1", path);
    if (strcmp(file, md))
        fail_msg("%s differs from kvs_config_reference_markdown(); run this test with "
                 "KVS_WRITE_DOCS=1 and commit the result", path);
    for (size_t i = 0; i < KVS_CFG_NKEYS; i++) {
        char cell[96];
        snprintf(cell, sizeof cell, "| `%s` | `%s` |", every[i].key, every[i].env);
        assert_has(md, cell);
    }
    assert_has(md, "| `gds_path` | `LMCACHE_GDS_PATH` | `weka_path` |");
    assert_has(md, "| `disk_io_threads` | `KVSTASH_DISK_IO_THREADS` | "
                   "`extra_config.gds_io_threads` |");
    assert_has(md, "`LMCACHE_EXTRA_CONFIG`");
    assert_has(md, "`LMCACHE_USE_EXPERIMENTAL`");
    free(file);
    kvs_free(md);
}

/* ---- allocation failures ---------------------------------------------------- */

static void set_full_env(void)
{
    setenv("LMCACHE_CONFIG_FILE", data("good-full.yaml"), 1);
    setenv("LMCACHE_USE_EXPERIMENTAL", "True", 1);
    setenv("LMCACHE_CHUNK_SIZE", "128", 1);
    setenv("LMCACHE_WEKA_PATH", "~/a,/b,file:///c/", 1);
    setenv("LMCACHE_EXTRA_CONFIG", "{\"gds_io_threads\": 16, \"namespace_salt\": \"s\"}", 1);
    setenv("KVSTASH_LOG_LEVEL", "debug", 1);
    setenv("LMCACHE_CHUNK_SISE", "1", 1); /* and a warning */
    setenv("KVSTASH_STRICT", "off", 1);       /* good-full.yaml turns it on */
}

/* Fails allocation n = 1, 2, ... of op until a run makes fewer than n: each
 * run must fail with KVS_ERR_NOMEM exactly when an allocation failed. */
#define ALLOC_LOOP(op, on_ok, on_fail)                                              \
    do {                                                                            \
        for (uint64_t n_ = 1;; n_++) {                                              \
            kvs__alloc_fail_at(n_, false);                                          \
            kvs_status st_ = (op);                                                  \
            uint64_t made_ = kvs__alloc_fail_at(0, false);                          \
            if (made_ < n_) {                                                       \
                if (st_ != KVS_OK)                                                  \
                    fail_msg("%s: %s", #op, kvs_last_error());                      \
                on_ok;                                                              \
                break;                                                              \
            }                                                                       \
            if (st_ != KVS_ERR_NOMEM)                                               \
                fail_msg("%s with allocation %llu failing: %s (%s)", #op,           \
                         (unsigned long long)n_, kvs_strerror(st_), kvs_last_error()); \
            on_fail;                                                                \
        }                                                                           \
    } while (0)

static void test_alloc_failures(void **state)
{
    (void)state;
    set_full_env();
    kvs_config *cfg = NULL, *base = NULL;
    char *s = NULL, *before;

#define DROP_CFG (kvs_config_free(cfg), cfg = NULL)
#define DROP_STR (kvs_free(s), s = NULL)
    ALLOC_LOOP(kvs_config_load(&cfg), DROP_CFG, assert_null(cfg));
    ALLOC_LOOP(kvs_config_new(&cfg), DROP_CFG, assert_null(cfg));

    /* good-full.yaml turns strict on: applying it below would fail on the
     * unknown variable, which has served its purpose in the loads above */
    unsetenv("LMCACHE_CHUNK_SISE");
    assert_ok(kvs_config_load(&base));
    before = json_of(base);
#define UNCHANGED                                                                   \
    do {                                                                            \
        char *now_ = json_of(base);                                                 \
        assert_string_equal(before, now_);                                          \
        kvs_free(now_);                                                             \
    } while (0)
    ALLOC_LOOP(kvs_config_copy(base, &cfg), DROP_CFG, assert_null(cfg));
    ALLOC_LOOP(kvs_config_to_json(base, &s), DROP_STR, assert_null(s));
    ALLOC_LOOP(kvs_config_to_text(base, &s), DROP_STR, assert_null(s));
    ALLOC_LOOP(kvs_config_reference_markdown(&s), DROP_STR, assert_null(s));
    ALLOC_LOOP(kvs_config_get(base, "weka_path", &s, NULL), DROP_STR, assert_null(s));
    ALLOC_LOOP(kvs_config_apply_file(base, data("good-full.yaml")), (void)0, UNCHANGED);
    kvs_free(before);
    before = json_of(base);
    ALLOC_LOOP(kvs_config_apply_env(base), (void)0, UNCHANGED);
    kvs_free(before);
    before = json_of(base);
    ALLOC_LOOP(kvs_config_set(base, "weka_path", "/x,~/y"), (void)0, UNCHANGED);
    kvs_free(before);
    before = json_of(base);
    ALLOC_LOOP(kvs_config_set(base, "extra_config", "{\"io_path\": \"posix\"}"), (void)0,
               UNCHANGED);
#undef UNCHANGED
#undef DROP_CFG
#undef DROP_STR
    kvs_free(before);
    kvs_config_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sizes_and_ages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_env_example, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_yaml_examples, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_yaml_indented_properly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_commented_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key_from_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key_from_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key_from_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_canonical_units, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stray_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_unreadable_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_use_experimental, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_variables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lmcache_log_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_remembered_and_strict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watermarks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_codec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docs_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
