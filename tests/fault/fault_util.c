/* fault_util.c - see fault_util.h. */
#include "fault_util.h"
#include "test_util.h"

#include "checksum.h"
#include "chunk_file.h"
#include "collector.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fu_kv_init(fu_kv *b, const kvs_namespace *ns, size_t tokens)
{
    memset(b, 0, sizeof *b);
    b->tokens = tokens;
    b->layers = ns->num_layers;
    b->planes = ns->layout == KVS_LAYOUT_MLA ? 1 : 2;
    b->row = (uint32_t)(ns->num_kv_heads * ns->head_dim * kvs_dtype_size(ns->dtype));
    /* Page-aligned, so KVS_KV_DIRECT can take its zero-copy path even
     * where the store uses O_DIRECT. */
    if (posix_memalign((void **)&b->mem, 4096, (size_t)b->layers * b->planes * tokens * b->row))
        b->mem = NULL;
    b->layer_ptrs = calloc(b->layers, sizeof *b->layer_ptrs);
    if (!b->mem || !b->layer_ptrs)
        return -1;
    for (uint32_t l = 0; l < b->layers; l++)
        b->layer_ptrs[l] = b->mem + (size_t)l * b->planes * tokens * b->row;
    b->kv.mem = KVS_MEM_HOST;
    b->kv.num_layers = b->layers;
    b->kv.layers = b->layer_ptrs;
    b->kv.num_slots = tokens;
    return 0;
}

void fu_kv_free(fu_kv *b)
{
    free(b->mem);
    free(b->layer_ptrs);
    memset(b, 0, sizeof *b);
}

static uint8_t *row_of(const fu_kv *b, uint32_t l, uint32_t p, size_t t)
{
    return b->mem + (((size_t)l * b->planes + p) * b->tokens + t) * b->row;
}

/* The content of one row: 64-bit words of a mix of its coordinates. */
static void row_content(uint8_t *out, uint32_t row, uint32_t token, size_t pos, uint32_t l,
                        uint32_t p)
{
    uint64_t x = (uint64_t)token * 0x9e3779b97f4a7c15ull ^ (uint64_t)pos << 20 ^ (uint64_t)l << 8 ^ p;
    for (uint32_t i = 0; i < row; i += 8) {
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 29;
        memcpy(out + i, &x, row - i < 8 ? row - i : 8);
    }
}

void fu_kv_fill(fu_kv *b, const uint32_t *tokens, size_t n)
{
    for (uint32_t l = 0; l < b->layers; l++)
        for (uint32_t p = 0; p < b->planes; p++)
            for (size_t t = 0; t < n; t++)
                row_content(row_of(b, l, p, t), b->row, tokens[t], t, l, p);
}

void fu_kv_poison(fu_kv *b)
{
    memset(b->mem, 0xa5, (size_t)b->layers * b->planes * b->tokens * b->row);
}

size_t fu_kv_bad_rows(const fu_kv *b, const uint32_t *tokens, size_t n)
{
    uint8_t want[4096];
    size_t bad = 0;
    if (b->row > sizeof want)
        return (size_t)-1;
    for (uint32_t l = 0; l < b->layers; l++)
        for (uint32_t p = 0; p < b->planes; p++)
            for (size_t t = 0; t < n; t++) {
                row_content(want, b->row, tokens[t], t, l, p);
                bad += memcmp(row_of(b, l, p, t), want, b->row) != 0;
            }
    return bad;
}

void fu_tokens(uint32_t *t, size_t n, uint32_t seed, uint32_t shared_seed, size_t shared)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t s = i < shared ? shared_seed : seed;
        t[i] = (uint32_t)((i + 1) * 2654435761u ^ (s * 0x85ebca6bu + 0x27d4eb2fu));
    }
}

bool fu_is_temp_name(const char *name)
{
    return kvs__is_temp_name(name); /* the collector's own test */
}

static bool is_final_name(const char *name)
{
    if (strlen(name) != 2 * KVS_KEY_BYTES)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int fu_verify_chunk_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    uint8_t *buf = NULL;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < KVS_HEADER_BYTES)
        goto out;
    buf = malloc((size_t)st.st_size);
    if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
        goto out;
    kvs_chunk_header h;
    if (kvs__header_decode(buf, KVS_HEADER_BYTES, &h) != KVS_REJECT_NONE)
        goto out;
    if ((uint64_t)st.st_size != kvs__file_bytes(h.payload_bytes))
        goto out;
    char hex[KVS_KEY_HEX];
    kvs__hex(h.key, KVS_KEY_BYTES, hex);
    const char *name = strrchr(path, '/');
    if (strcmp(name ? name + 1 : path, hex) != 0)
        goto out;
    uint64_t padded = kvs__padded_payload(h.payload_bytes);
    for (uint64_t o = 0, i = 0; o < padded; o += h.segment_bytes, i++) {
        uint64_t n = padded - o < h.segment_bytes ? padded - o : h.segment_bytes;
        if (kvs__checksum(buf + KVS_PAYLOAD_OFFSET + o, n) != h.segment_sums[i])
            goto out;
    }
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

static fu_store_report *walk_report;

static int walk_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    fu_store_report *r = walk_report;
    if (flag == FTW_D || flag == FTW_DP)
        return 0;
    const char *name = path + ftw->base;
    if (strstr(path, "/.kvstash/")) {
        /* The collector's lease, log, usage, store id; a temporary file
         * there (".tmp" ending: the lease or usage.json being rewritten) is
         * a write a killed process left, an orphan like any other. */
        size_t n = strlen(name);
        if (flag == FTW_F && n > 4 && strcmp(name + n - 4, ".tmp") == 0)
            r->temps++;
        return 0;
    }
    if (flag == FTW_F && is_final_name(name)) {
        r->finals++;
        r->final_bytes += (uint64_t)st->st_size;
        if (fu_verify_chunk_file(path) != 0) {
            if (!r->bad_finals++)
                snprintf(r->first_bad, sizeof r->first_bad, "bad final file %s", path);
        }
        return 0;
    }
    if (fu_is_temp_name(name)) {
        r->temps++;
        return 0;
    }
    if (!strcmp(name, "NAMESPACE.json") && flag == FTW_F)
        return 0;
    if (!r->others++ && !r->bad_finals)
        snprintf(r->first_bad, sizeof r->first_bad, "unexpected %s", path);
    return 0;
}

int fu_collect_temps(const char *root, uint64_t *removed_out)
{
    kvs_config *cfg = NULL;
    kvs_admin *a = NULL;
    int rc = -1;
    if (kvs_config_new(&cfg) || kvs_config_set(cfg, "weka_path", root) ||
        kvs_admin_open(cfg, &a))
        goto out;
    /* No chunk goes: only the temporary files, older than 1 ms. */
    kvs_gc_options o = {.flags = KVS_GC_OLDER_THAN, .older_than_s = 1u << 30,
                        .tmp_grace_ms = 1, .lease_wait_ms = 10000};
    kvs_gc_report r;
    usleep(2000);
    if (kvs_admin_gc(a, &o, &r) == KVS_OK) {
        *removed_out = r.orphans_removed;
        rc = 0;
    }
out:
    kvs_admin_close(a);
    kvs_config_free(cfg);
    return rc;
}

int fu_check_store(const char *root, fu_store_report *r)
{
    memset(r, 0, sizeof *r);
    walk_report = r;
    return nftw(root, walk_one, 32, FTW_PHYS);
}

double fu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

kvs_status fu_store(kvs_engine *e, fu_kv *kv, const uint32_t *t, kvs_op_result *r)
{
    fu_kv_fill(kv, t, kv->tokens);
    kvs_op *op = NULL;
    kvs_status st = kvs_store(e, t, kv->tokens, &kv->kv, &op);
    if (st == KVS_OK)
        st = kvs_op_wait(op, -1, r);
    kvs_op_free(op);
    return st;
}

kvs_status fu_retrieve(kvs_engine *e, fu_kv *kv, const uint32_t *t, size_t *got,
                       size_t *bad_rows)
{
    fu_kv_poison(kv);
    *got = 0;
    kvs_status st = kvs_retrieve(e, t, kv->tokens, &kv->kv, got);
    *bad_rows = fu_kv_bad_rows(kv, t, *got);
    return st;
}

fu_fixture *fu_setup(void **state, const char *tag, const kvs_namespace *ns, size_t tokens,
                     mode_t outside_mode)
{
    tu_clear_env();
    fu_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->top = tu_mkdtemp(tag);
    assert_non_null(f->top);
    snprintf(f->root, sizeof f->root, "%s/root", f->top);
    snprintf(f->root2, sizeof f->root2, "%s/root2", f->top);
    snprintf(f->outside, sizeof f->outside, "%s/outside", f->top);
    assert_int_equal(mkdir(f->root, 0755), 0);
    assert_int_equal(mkdir(f->outside, outside_mode), 0);
    assert_int_equal(fu_kv_init(&f->src, ns, tokens), 0);
    assert_int_equal(fu_kv_init(&f->dst, ns, tokens), 0);
    *state = f;
    return f;
}

void fu_release(char *dir, fu_kv *src, fu_kv *dst)
{
    tu_rmtree(dir);
    free(dir);
    fu_kv_free(src);
    fu_kv_free(dst);
}

int fu_teardown(void **state)
{
    fu_fixture *f = *state;
    fu_release(f->top, &f->src, &f->dst);
    free(f);
    return 0;
}
