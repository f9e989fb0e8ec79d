/* test_util.c - helpers shared by the unit tests. */
#include "test_util.h"

#include "engine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static const char *tmp_root(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

char *tu_mkdtemp(const char *tag)
{
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/kvs-test-%s-XXXXXX", tmp_root(), tag);
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        chmod(path, 0700), rmdir(path);
    else
        unlink(path);
    return 0;
}

void tu_rmtree(const char *path)
{
    if (!path || strncmp(path, tmp_root(), strlen(tmp_root())) != 0 || !strstr(path, "kvs-test-"))
        return;
    /* make every directory writable so read-only test folders go too */
    nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

char *tu_read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = n < 0 ? NULL : malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(p);
        return NULL;
    }
    p[n] = '\0';
    fclose(f);
    if (len_out)
        *len_out = (size_t)n;
    return p;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    return w == len ? 0 : -1;
}

int tu_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ., .. and the DIR's own descriptor */
}

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char *log_text;
static size_t log_len;

static void capture(void *ctx, kvs_log_level level, const char *msg)
{
    (void)ctx;
    (void)level;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(msg);
    log_text = realloc(log_text, log_len + n + 2);
    memcpy(log_text + log_len, msg, n);
    log_len += n;
    log_text[log_len++] = '\n';
    log_text[log_len] = '\0';
    pthread_mutex_unlock(&log_mu);
}

void tu_capture_logs(int on)
{
    pthread_mutex_lock(&log_mu);
    free(log_text);
    log_text = NULL;
    log_len = 0;
    pthread_mutex_unlock(&log_mu);
    kvs_set_log_handler(on ? capture : NULL, NULL);
    kvs_set_log_level(on ? KVS_LOG_DEBUG : KVS_LOG_INFO);
}

const char *tu_logs(void)
{
    return log_text ? log_text : "";
}

void tu_kv_contiguous(kvs_kv *kv, uint8_t *mem, void **layers, uint32_t num_layers,
                      uint32_t planes, size_t num_tokens, size_t row_bytes)
{
    for (uint32_t l = 0; l < num_layers; l++)
        layers[l] = mem + (size_t)l * planes * num_tokens * row_bytes;
    memset(kv, 0, sizeof *kv);
    kv->mem = KVS_MEM_HOST;
    kv->num_layers = num_layers;
    kv->layers = layers;
    kv->num_slots = num_tokens;
}

void tu_clear_env(void)
{
    for (;;) {
        char *victim = NULL;
        for (char **e = environ; *e; e++) {
            if (!strncmp(*e, "LMCACHE_", 8) || !strncmp(*e, "KVSTASH_", 8)) {
                victim = *e;
                break;
            }
        }
        if (!victim)
            return;
        char name[256];
        size_t n = strcspn(victim, "=");
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, victim, n);
        name[n] = '\0';
        unsetenv(name);
    }
}

char *tu_fixture_dir(const char *tag)
{
    tu_clear_env();
    char *dir = tu_mkdtemp(tag);
    assert_non_null(dir);
    return dir;
}

void tu_fixture_done(char *dir, kvs_config *cfg)
{
    kvs_config_free(cfg);
    tu_rmtree(dir);
    free(dir);
}

tu_fixture *tu_setup(void **state, const char *tag)
{
    tu_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = tu_fixture_dir(tag);
    *state = f;
    return f;
}

int tu_teardown(void **state)
{
    tu_fixture *f = *state;
    tu_fixture_done(f->dir, f->cfg);
    free(f);
    return 0;
}

kvs_namespace tu_mha_ns(const char *model, uint32_t layers, uint32_t heads, uint32_t dim)
{
    return (kvs_namespace){.model = model, .dtype = KVS_DTYPE_BF16, .num_layers = layers,
                           .num_kv_heads = heads, .head_dim = dim, .layout = KVS_LAYOUT_MHA,
                           .world_size = 1, .rank = 0};
}

void tu_tokens(uint32_t *t, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        t[i] = (uint32_t)((i + 1) * 2654435761u ^ seed);
}

void tu_fill_pattern(uint8_t *mem, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        mem[i] = (uint8_t)(i * 131 + seed);
}

void tu_store_wait(kvs_engine *e, const uint32_t *t, size_t n, const kvs_kv *kv,
                   kvs_op_result *r)
{
    kvs_op *op = NULL;
    assert_int_equal(kvs_store(e, t, n, kv, &op), KVS_OK);
    assert_int_equal(kvs_op_wait(op, -1, r), KVS_OK);
    kvs_op_free(op);
}

void tu_store_all(const kvs_config *cfg, const kvs_namespace *ns, const uint32_t *t, size_t n,
                  const kvs_kv *kv, kvs_stats *s_out)
{
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, ns, &e), KVS_OK);
    kvs_op_result r;
    tu_store_wait(e, t, n, kv, &r);
    assert_int_equal(r.status, KVS_OK);
    assert_int_equal(r.tokens, n);
    if (s_out)
        assert_int_equal(kvs_engine_stats(e, s_out, sizeof *s_out), KVS_OK);
    kvs_engine_close(e);
}

void tu_chunk_path(const kvs_config *cfg, const kvs_namespace *ns, const uint32_t *t, size_t n,
                   size_t chunk, size_t idx, char *path)
{
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, ns, &e), KVS_OK);
    size_t max = n / chunk + 1, got = 0;
    uint8_t(*keys)[32] = calloc(max, sizeof *keys);
    assert_non_null(keys);
    assert_int_equal(kvs_chunk_keys(t, n, chunk, keys, max, &got), KVS_OK);
    assert_true(idx < got);
    kvs__store_chunk_path(&e->store, keys[idx], path);
    free(keys);
    kvs_engine_close(e);
}
