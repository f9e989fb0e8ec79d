/*
 * test_security.c - what the store must keep apart and keep inside.
 *
 *   - tenants: two salts storing the same prompts never hit each other's
 *     chunks, even when one tenant's files are copied under the other's
 *     names (the header carries the namespace identity);
 *   - traversal: model names, variants and weka_path spellings with "..",
 *     slashes and odd bytes all land in one folder directly below the root;
 *   - symlinks planted in the store (a fan-out folder, a leaf folder, a
 *     chunk name, NAMESPACE.json, the namespace folder itself) never make
 *     kvstash read, write, rename, touch or remove anything outside it: a
 *     folder next to the store holding valid chunk files is byte-for-byte
 *     and time-for-time unchanged after every scenario;
 *   - files and folders get file_mode, less the process umask.
 */
#include "test_util.h"

#include "fault_util.h"
#include "io_ops.h"
#include "key.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK 16
#define NCH 4
#define NTOK (NCH * CHUNK)

static const kvs_namespace base_ns = {.model = "sec/model", .dtype = KVS_DTYPE_BF16,
                                      .num_layers = 2, .num_kv_heads = 2, .head_dim = 64,
                                      .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};

/* top holds root/ and outside/ only */
typedef fu_fixture fx;

static int setup(void **state)
{
    fu_setup(state, "security", &base_ns, NTOK, 0755);
    return 0;
}

static kvs_config *config(const char *weka_path, const char *salt)
{
    kvs_config *cfg = tu_config(weka_path, "16", "2", "access_interval_s", "0",
                                "negative_cache_ms", "0", NULL);
    assert_non_null(cfg);
    if (salt)
        assert_int_equal(kvs_config_set(cfg, "namespace_salt", salt), KVS_OK);
    return cfg;
}

static kvs_op_result store(kvs_engine *e, fx *f, const uint32_t *t)
{
    kvs_op_result r;
    assert_int_equal(fu_store(e, &f->src, t, &r), KVS_OK);
    return r;
}

/* Retrieves; every loaded byte must be right.  Returns tokens loaded. */
static size_t retrieve(kvs_engine *e, fx *f, const uint32_t *t)
{
    size_t got = 0, bad = 0;
    assert_int_equal(fu_retrieve(e, &f->dst, t, &got, &bad), KVS_OK);
    assert_int_equal(bad, 0);
    return got;
}

/* ---- tenants --------------------------------------------------------------------- */

static void test_salt_separates_tenants(void **state)
{
    fx *f = *state;
    kvs_config *ca = config(f->root, "tenant-a"), *cb = config(f->root, "tenant-b");
    kvs_config *cn = config(f->root, NULL);
    kvs_engine *a, *b, *n;
    assert_int_equal(kvs_engine_open(ca, &base_ns, &a), KVS_OK);
    assert_int_equal(kvs_engine_open(cb, &base_ns, &b), KVS_OK);
    assert_int_equal(kvs_engine_open(cn, &base_ns, &n), KVS_OK);
    assert_string_not_equal(kvs_engine_namespace_id(a), kvs_engine_namespace_id(b));
    /* A per-engine salt overrides the configuration's. */
    kvs_namespace nsb = base_ns;
    nsb.salt = "tenant-b";
    kvs_engine *b2;
    assert_int_equal(kvs_engine_open(ca, &nsb, &b2), KVS_OK);
    assert_string_equal(kvs_engine_namespace_id(b2), kvs_engine_namespace_id(b));

    const int prompts = 32;
    uint32_t t[NTOK];
    size_t cross = 0, own = 0, lookups = 0;
    for (int i = 0; i < prompts; i++) {
        fu_tokens(t, NTOK, (uint32_t)i, 0, 0);
        assert_int_equal(store(a, f, t).chunks_done, NCH);
    }
    for (int i = 0; i < prompts; i++) {
        fu_tokens(t, NTOK, (uint32_t)i, 0, 0);
        size_t hit = 0;
        assert_int_equal(kvs_lookup(b, t, NTOK, &hit), KVS_OK);
        lookups += hit;
        assert_int_equal(kvs_lookup(n, t, NTOK, &hit), KVS_OK);
        lookups += hit;
        cross += retrieve(b, f, t) + retrieve(n, f, t);
        own += retrieve(a, f, t);
    }
    printf("tenant probe: %d prompts stored by tenant a; cross-tenant lookup hits %zu, retrieve "
           "hits %zu; tenant a's own hits %zu tokens\n",
           prompts, lookups, cross, own);
    assert_int_equal(lookups, 0);
    assert_int_equal(cross, 0);
    assert_int_equal(own, (size_t)prompts * NTOK);

    /* Tenant a's files copied under tenant b's names (an attacker with
     * write access to the store, or a confused operator): b never serves
     * them; each is a "foreign" miss and is removed. */
    fu_tokens(t, NTOK, 7, 0, 0);
    uint8_t keys[NCH][KVS_KEY_BYTES];
    size_t nk = 0;
    assert_int_equal(kvs_chunk_keys(t, NTOK, CHUNK, keys, NCH, &nk), KVS_OK);
    char cmd[16384];
    for (size_t k = 0; k < nk; k++) {
        char hex[65];
        kvs__hex(keys[k], 32, hex);
        snprintf(cmd, sizeof cmd,
                 "mkdir -p '%s/%s/%.2s/%.2s' && cp '%s/%s/%.2s/%.2s/%s' '%s/%s/%.2s/%.2s/%s'",
                 f->root, kvs_engine_namespace_id(b), hex, hex + 2, f->root,
                 kvs_engine_namespace_id(a), hex, hex + 2, hex, f->root,
                 kvs_engine_namespace_id(b), hex, hex + 2, hex);
        assert_int_equal(system(cmd), 0);
    }
    kvs_stats st0, st1;
    assert_int_equal(kvs_engine_stats(b, &st0, sizeof st0), KVS_OK);
    assert_int_equal(retrieve(b, f, t), 0);
    assert_int_equal(kvs_engine_stats(b, &st1, sizeof st1), KVS_OK);
    assert_true(st1.miss_foreign - st0.miss_foreign >= 1);
    kvs_engine_close(b2);
    kvs_engine_close(n);
    kvs_engine_close(b);
    kvs_engine_close(a);
    kvs_config_free(ca);
    kvs_config_free(cb);
    kvs_config_free(cn);
}

/* ---- traversal ------------------------------------------------------------------- */

/* Every path below dir, one per line, sorted, with a digest of its bytes
 * and times: what must not change outside the store. */
static char *snapshot(const char *dir)
{
    char cmd[4300];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && find . -printf '%%p %%y %%s %%m %%A@ %%T@ %%l\\n' | sort && "
             "find . -type f -exec md5sum {} + | sort",
             dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, p);
    buf[n] = '\0';
    pclose(p);
    return buf;
}

/* Names of the entries directly in dir, sorted, comma separated. */
static char *entries(const char *dir)
{
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | sort | paste -sd, -", dir);
    FILE *p = popen(cmd, "r");
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, p);
    buf[n] = '\0';
    pclose(p);
    return buf;
}

static void test_traversal_in_config_values(void **state)
{
    fx *f = *state;
    static const char *models[] = {
        "../../escape", "/etc/passwd", "..", ".", "a/../../../b", "~root/x", "..\\\\..\\\\win",
        "-rf *", "....//....//", ".hidden", "x/./../../y",
    };
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, 3, 0, 0);
    for (size_t i = 0; i < KVS_ARRAY_LEN(models); i++) {
        kvs_namespace ns = base_ns;
        ns.model = models[i];
        ns.variant = "../../../variant/..";
        kvs_config *cfg = config(f->root, "../salt/..");
        kvs_engine *e;
        assert_int_equal(kvs_engine_open(cfg, &ns, &e), KVS_OK);
        const char *id = kvs_engine_namespace_id(e);
        assert_null(strchr(id, '/'));
        assert_true(id[0] != '.');
        assert_int_equal(store(e, f, t).chunks_done, NCH);
        assert_int_equal(retrieve(e, f, t), NTOK);
        char expect[8192];
        snprintf(expect, sizeof expect, "%s/%s", f->root, id);
        assert_string_equal(kvs_engine_namespace_path(e), expect);
        kvs_engine_close(e);
        kvs_config_free(cfg);
    }
    /* Control bytes are refused outright. */
    kvs_namespace bad = base_ns;
    bad.model = "model\nwith\nnewlines";
    kvs_config *cfg0 = config(f->root, NULL);
    kvs_engine *e0 = NULL;
    assert_int_equal(kvs_engine_open(cfg0, &bad, &e0), KVS_ERR_INVALID);
    kvs_config_free(cfg0);
    /* weka_path spelled with "..", "." and doubled slashes is normalised
     * before use: the store is where the path leads, nothing is created on
     * the way (a/ never exists). */
    char wp[8192];
    snprintf(wp, sizeof wp, "%s/a/../b/./..//root/", f->top);
    kvs_config *cfg = config(wp, NULL);
    char *got = NULL;
    assert_int_equal(kvs_config_get(cfg, "weka_path", &got, NULL), KVS_OK);
    assert_string_equal(got, f->root);
    kvs_free(got);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    assert_int_equal(store(e, f, t).chunks_done, NCH);
    kvs_engine_close(e);
    kvs_config_free(cfg);
    char *top = entries(f->top);
    assert_string_equal(top, "outside,root\n");
    free(top);
    char *out = entries(f->outside);
    assert_string_equal(out, "\n");
    free(out);
    /* Every namespace folder is a direct child of the root. */
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "find '%s' -mindepth 1 -maxdepth 1 ! -type d | grep -q .", f->root);
    assert_int_not_equal(system(cmd), 0);
    fu_store_report r;
    assert_int_equal(fu_check_store(f->root, &r), 0);
    assert_int_equal(r.bad_finals + r.others + r.temps, 0);
    printf("traversal: %zu model names with '..', '/', '~' and control bytes and a weka_path "
           "with '..' all stayed in %zu files below the root\n",
           KVS_ARRAY_LEN(models), r.finals);
}

/* ---- symlinks planted in the store ---------------------------------------------- */

static void run(const char *fmt, ...) KVS_PRINTF(1, 2);
static void run(const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        print_error("command failed: %s\n", cmd);
        fail();
    }
}

/* Fails the test where outside/ changed between the two snapshots, with
 * the difference on stderr (both snapshots are kept next to the store). */
static void check_unchanged(const fx *f, const char *before, const char *after)
{
    if (strcmp(before, after) == 0)
        return;
    char b[4300], a[4300];
    snprintf(b, sizeof b, "%s/../before.txt", f->root);
    snprintf(a, sizeof a, "%s/../after.txt", f->root);
    tu_write_file(b, before, strlen(before));
    tu_write_file(a, after, strlen(after));
    run("diff '%s' '%s' >&2 || true", b, a);
    print_error("outside the store changed (diff above)\n");
    fail();
}

static void planted_symlinks(fx *f);

static void test_planted_symlinks(void **state)
{
    planted_symlinks(*state);
}

/* The same where the kernel has no openat2: the O_NOFOLLOW walk. */
static void test_planted_symlinks_walk(void **state)
{
    kvs__io_test_no_openat2(true);
    planted_symlinks(*state);
    kvs__io_test_no_openat2(false);
}

static void planted_symlinks(fx *f)
{
    kvs_config *cfg = config(f->root, NULL);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    char nsdir[4096];
    snprintf(nsdir, sizeof nsdir, "%s", kvs_engine_namespace_path(e));
    uint32_t t[NTOK], u[NTOK];
    fu_tokens(t, NTOK, 11, 0, 0);
    fu_tokens(u, NTOK, 12, 0, 0);
    uint8_t kt[NCH][KVS_KEY_BYTES], ku[NCH][KVS_KEY_BYTES];
    size_t nk;
    assert_int_equal(kvs_chunk_keys(t, NTOK, CHUNK, kt, NCH, &nk), KVS_OK);
    assert_int_equal(kvs_chunk_keys(u, NTOK, CHUNK, ku, NCH, &nk), KVS_OK);
    char ht[NCH][65], hu[NCH][65];
    for (int k = 0; k < NCH; k++) {
        kvs__hex(kt[k], 32, ht[k]);
        kvs__hex(ku[k], 32, hu[k]);
    }

    /* Valid chunk files of both prompts, stored, then moved outside: the
     * bait.  Reading them would even give right bytes, so a hit below
     * means kvstash read outside its store. */
    assert_int_equal(store(e, f, t).chunks_done, NCH);
    assert_int_equal(store(e, f, u).chunks_done, NCH);
    run("cd '%s' && find . -type f -name '[0-9a-f]*' | while read p; do mkdir -p "
        "'%s'/$(dirname $p) && mv $p '%s'/$p; done",
        nsdir, f->outside, f->outside);
    run("cp -a '%s/NAMESPACE.json' '%s/NAMESPACE.json'", nsdir, f->outside);
    run("mkdir -p '%s/dst' && chmod 755 '%s/dst'", f->outside, f->outside);
    kvs_engine_close(e);
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);

    /* Plants: chunk 0 of t under a symlinked fan-out folder <ns>/xx;
     * chunk 0 of u under a symlinked leaf <ns>/xx/yy; chunk 1 of t as a
     * symlink under its own name; chunk 1 of u's leaf symlinked to an
     * empty folder outside where a store would write. */
    run("rm -rf '%s/%.2s' && ln -s '%s/%.2s' '%s/%.2s'", nsdir, ht[0], f->outside, ht[0], nsdir,
        ht[0]);
    run("rm -rf '%s/%.2s/%.2s' && mkdir -p '%s/%.2s' && ln -s '%s/%.2s/%.2s' '%s/%.2s/%.2s'",
        nsdir, hu[0], hu[0] + 2, nsdir, hu[0], f->outside, hu[0], hu[0] + 2, nsdir, hu[0],
        hu[0] + 2);
    run("mkdir -p '%s/%.2s/%.2s' && ln -sf '%s/%.2s/%.2s/%s' '%s/%.2s/%.2s/%s'", nsdir, ht[1],
        ht[1] + 2, f->outside, ht[1], ht[1] + 2, ht[1], nsdir, ht[1], ht[1] + 2, ht[1]);
    run("rm -rf '%s/%.2s/%.2s' && mkdir -p '%s/%.2s' && ln -s '%s/dst' '%s/%.2s/%.2s'", nsdir,
        hu[1], hu[1] + 2, nsdir, hu[1], f->outside, nsdir, hu[1], hu[1] + 2);
    /* Old times on the bait, so a touch through a symlink would show. */
    run("find '%s' -exec touch -h -d '2001-01-01 00:00:00' {} +", f->outside);
    /* (The first snapshot's own reads move the access times once, under
     * relatime; from then on only a write or an explicit touch would.) */
    free(snapshot(f->outside));
    char *before = snapshot(f->outside);

    kvs_stats s0, s1;
    assert_int_equal(kvs_engine_stats(e, &s0, sizeof s0), KVS_OK);
    size_t hit = 0;
    /* Lookups may see through a folder symlink (an lstat), reads never. */
    assert_int_equal(kvs_lookup(e, t, NTOK, &hit), KVS_OK);
    assert_int_equal(retrieve(e, f, t), 0);
    assert_int_equal(retrieve(e, f, u), 0);
    /* Stores of both prompts: chunks under planted folders fail, nothing
     * is created, renamed or written outside. */
    kvs_op_result rt = store(e, f, t), ru = store(e, f, u);
    /* Removing the prompts removes nothing outside (unlinkat of the
     * planted symlink itself at most). */
    size_t removed = 0;
    kvs_remove(e, t, NTOK, &removed);
    kvs_remove(e, u, NTOK, &removed);
    assert_int_equal(kvs_engine_stats(e, &s1, sizeof s1), KVS_OK);
    kvs_engine_close(e);

    /* The namespace folder itself replaced by a symlink to outside, and
     * NAMESPACE.json a symlink to a file outside: the engine refuses the
     * first, and replaces the second link rather than writing through it. */
    run("mv '%s' '%s.real' && ln -s '%s' '%s'", nsdir, nsdir, f->outside, nsdir);
    kvs_engine *e2 = NULL;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e2), KVS_ERR_IO);
    assert_non_null(strstr(kvs_last_error(), "symlink"));
    run("rm '%s' && mv '%s.real' '%s' && ln -sf '%s/NAMESPACE.json' '%s/NAMESPACE.json'", nsdir,
        nsdir, nsdir, f->outside, nsdir);
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e2), KVS_OK);
    kvs_engine_close(e2);
    struct stat sb;
    char nsfile[4200];
    snprintf(nsfile, sizeof nsfile, "%s/NAMESPACE.json", nsdir);
    assert_int_equal(lstat(nsfile, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));

    char *after = snapshot(f->outside);
    check_unchanged(f, before, after);
    printf("symlinks: retrieves hit 0 of %d planted chunks (not_regular misses %llu, lookup "
           "said %zu tokens), stores wrote %u+%u chunks and failed %u+%u, nothing outside "
           "changed\n",
           2 * NCH, (unsigned long long)(s1.miss_not_regular - s0.miss_not_regular), hit,
           rt.chunks_done, ru.chunks_done, rt.chunks_failed, ru.chunks_failed);
    /* (t's chunk 0 looks present through the planted folder, so it is not
     * rewritten; its symlinked chunk 1 is replaced by a real file; u's
     * chunk 1 cannot be created below the symlinked leaf.) */
    assert_true(ru.chunks_failed >= 1);
    free(before);
    free(after);
    kvs_config_free(cfg);
}

/* The collector and the admin calls walk the whole store: a namespace
 * folder or a fan-out folder that is a symlink to a folder of chunk files
 * and stale temporary files must not be walked, so nothing there is
 * evicted, removed as an orphan, or verified-and-removed. */
static void test_collector_ignores_symlinks(void **state)
{
    fx *f = *state;
    kvs_config *cfg = config(f->root, NULL);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    char nsdir[4096];
    snprintf(nsdir, sizeof nsdir, "%s", kvs_engine_namespace_path(e));
    char id[256];
    snprintf(id, sizeof id, "%s", kvs_engine_namespace_id(e));
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, 21, 0, 0);
    assert_int_equal(store(e, f, t).chunks_done, NCH);
    kvs_engine_close(e);
    /* The bait: a copy of the namespace outside, with an old temp file in
     * a leaf; then a second namespace name and a fan-out folder of the real
     * namespace pointing at it. */
    run("cp -a '%s' '%s/ns' && for d in '%s'/ns/[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]; do touch -d '2001-01-01' "
        "\"$d/.%064d.0123456789abcdef.tmp\"; done",
        nsdir, f->outside, f->outside, 0);
    run("ln -s '%s/ns' '%s/%.*s-0123456789abcdef'", f->outside, f->root,
        (int)(strlen(id) - 17), id);
    run("cd '%s' && x=$(ls -d [0-9a-f][0-9a-f] | head -1) && mv $x ../x-real && ln -s '%s/ns/'$x $x", nsdir,
        f->outside);
    run("find '%s' -exec touch -h -d '2001-01-01 00:00:00' {} +", f->outside);
    free(snapshot(f->outside));
    char *before = snapshot(f->outside);

    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    kvs_verify_options vo = {.remove_bad = 1};
    kvs_verify_report vr;
    assert_int_equal(kvs_admin_verify(a, &vo, &vr), KVS_OK);
    kvs_gc_options go = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .tmp_grace_ms = 1,
                         .lease_wait_ms = 5000};
    kvs_gc_report gr;
    assert_int_equal(kvs_admin_gc(a, &go, &gr), KVS_OK);
    /* Removing the planted namespace removes the symlink, not its target. */
    char planted[300];
    snprintf(planted, sizeof planted, "%.*s-0123456789abcdef", (int)(strlen(id) - 17), id);
    uint64_t files = 0;
    assert_int_equal(kvs_admin_remove_namespace(a, planted, &files), KVS_OK);
    kvs_admin_close(a);
    char *after = snapshot(f->outside);
    printf("collector: verify saw %llu files, gc removed %llu chunks and %llu orphans, rm of "
           "the planted namespace removed %llu file; outside %s\n",
           (unsigned long long)vr.files, (unsigned long long)gr.files_removed,
           (unsigned long long)gr.orphans_removed, (unsigned long long)files,
           strcmp(before, after) ? "CHANGED" : "unchanged");
    check_unchanged(f, before, after);
    free(before);
    free(after);
    kvs_config_free(cfg);
}

/* ---- file modes ------------------------------------------------------------------ */

static void check_modes(const char *root, mode_t fmode, mode_t dmode, const char *what)
{
    char cmd[8400];
    /* Files and folders below the root whose mode differs. */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && { find . -mindepth 1 -type f ! -perm %04o; "
             "find . -mindepth 1 -type d ! -perm %04o; } | head -3",
             root, (unsigned)fmode, (unsigned)dmode);
    FILE *p = popen(cmd, "r");
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    pclose(p);
    if (n) {
        print_error("%s: files should be %04o and folders %04o, but:\n%s", what, (unsigned)fmode,
                    (unsigned)dmode, buf);
        fail();
    }
}

static void test_file_mode(void **state)
{
    fx *f = *state;
    static const struct {
        const char *file_mode;
        mode_t umask;
        mode_t fmode, dmode;
    } cases[] = {
        {"0644", 022, 0644, 0755}, {"0640", 022, 0640, 0750}, {"0600", 022, 0600, 0700},
        {"0664", 002, 0664, 0775}, {"0664", 022, 0644, 0755}, {"0666", 077, 0600, 0700},
    };
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, 5, 0, 0);
    mode_t old = umask(022);
    for (size_t i = 0; i < KVS_ARRAY_LEN(cases); i++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/m%zu", f->root, i);
        assert_int_equal(mkdir(dir, 0755), 0);
        kvs_config *cfg = config(dir, NULL);
        assert_int_equal(kvs_config_set(cfg, "file_mode", cases[i].file_mode), KVS_OK);
        umask(cases[i].umask);
        kvs_engine *e;
        assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
        assert_int_equal(store(e, f, t).chunks_done, NCH);
        kvs_engine_close(e);
        umask(022);
        kvs_config_free(cfg);
        char what[64];
        snprintf(what, sizeof what, "file_mode %s, umask %03o", cases[i].file_mode,
                 (unsigned)cases[i].umask);
        check_modes(dir, cases[i].fmode, cases[i].dmode, what);
    }
    umask(old);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_salt_separates_tenants, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_traversal_in_config_values, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_planted_symlinks, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_planted_symlinks_walk, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_collector_ignores_symlinks, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_file_mode, setup, fu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
