/*
 * test_meta.c - the store's metadata and operator walks against what anyone
 * who can write the store may plant there (issue 10, items 1, 2, 5, 6).
 *
 * Each case was reproduced on the code before the fix: a `.kvstash` symlink
 * planted by another uid made root's gc and rm write into the folder it
 * points to; a FIFO in place of a metadata file hung ls/verify/du/gc/doctor
 * and engines; a 1900-level folder chain crashed rm; a one-byte edit of
 * NAMESPACE.json made verify --remove-bad delete valid chunks; .kvstash
 * ignored file_mode; one mode-000 chunk marked the store unhealthy; an empty
 * store-id stopped every engine.  Anything that could hang runs in a forked
 * child under alarm(), so a regression fails the test instead of stalling it.
 */
#include "test_util.h"
#include "fault_util.h"
#include "chunk_file.h"
#include "io_ops.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 16
#define NCH 4
#define NTOK (NCH * CHUNK)
#define OTHER_UID 65534

static const kvs_namespace base_ns = {.model = "meta/model", .dtype = KVS_DTYPE_BF16,
                                      .num_layers = 2, .num_kv_heads = 2, .head_dim = 64,
                                      .layout = KVS_LAYOUT_MHA, .world_size = 1, .rank = 0};

typedef fu_fixture fx;

static int setup(void **state)
{
    fx *f = fu_setup(state, "meta", &base_ns, NTOK, 0700);
    chmod(f->top, 0755);
    assert_int_equal(mkdir(f->root2, 0755), 0);
    return 0;
}

static kvs_config *config(const char *weka_path)
{
    kvs_config *cfg = tu_config(weka_path, "16", "2", "negative_cache_ms", "0", NULL);
    assert_non_null(cfg);
    return cfg;
}

/* Stores prompt seed, or retrieves it and checks every loaded byte: the
 * first failing status, which store and retrieve assert and the forked
 * children's c_store and c_retrieve check. */
static kvs_status try_store(kvs_engine *e, fx *f, uint32_t seed)
{
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, seed, 0, 0);
    kvs_op_result r;
    return fu_store(e, &f->src, t, &r);
}

static kvs_status try_retrieve(kvs_engine *e, fx *f, uint32_t seed, size_t *got)
{
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, seed, 0, 0);
    size_t bad = 0;
    kvs_status st = fu_retrieve(e, &f->dst, t, got, &bad);
    return st != KVS_OK ? st : bad ? KVS_ERR_CORRUPT : KVS_OK;
}

static void store(kvs_engine *e, fx *f, uint32_t seed)
{
    assert_int_equal(try_store(e, f, seed), KVS_OK);
}

static size_t retrieve(kvs_engine *e, fx *f, uint32_t seed)
{
    size_t got = 0;
    assert_int_equal(try_retrieve(e, f, seed, &got), KVS_OK);
    return got;
}

/* Stores prompts 1..n through an engine of its own, closed again before
 * the test goes on to what it plants in the store. */
static void fill_store(kvs_config *cfg, fx *f, uint32_t n)
{
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    for (uint32_t i = 1; i <= n; i++)
        store(e, f, i);
    kvs_engine_close(e);
}

/* The same for a forked child, where a cmocka assert would run the rest of
 * the suite in the child: any failure ends it with a status naming the line. */
#define CHILD_CHECK(x) do { if (!(x)) { fprintf(stderr, "child: %s failed (line %d)\n", #x, __LINE__); _exit(100); } } while (0)

static void c_store(kvs_engine *e, fx *f, uint32_t seed)
{
    CHILD_CHECK(try_store(e, f, seed) == KVS_OK);
}

static size_t c_retrieve(kvs_engine *e, fx *f, uint32_t seed)
{
    size_t got = 0;
    CHILD_CHECK(try_retrieve(e, f, seed, &got) == KVS_OK);
    return got;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

/* The namespace folder the engine made under root (the only one) in out;
 * whether there is one.  ns_dir asserts it, ns_dir_c (forked children)
 * checks it. */
static bool find_ns_dir(const char *root, char *out, size_t cap)
{
    DIR *d = opendir(root);
    out[0] = '\0';
    if (!d)
        return false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, "meta_model-", 11) == 0)
            snprintf(out, cap, "%.3800s/%.255s", root, de->d_name);
    closedir(d);
    return out[0] != '\0';
}

static void ns_dir(const char *root, char *out, size_t cap)
{
    assert_true(find_ns_dir(root, out, cap));
}

static void ns_dir_c(const char *root, char *out, size_t cap)
{
    CHILD_CHECK(find_ns_dir(root, out, cap));
}

/* A store under f->root of prompts 1..n (fill_store), its namespace folder
 * in ns; the config it was made with. */
static kvs_config *filled(fx *f, uint32_t n, char *ns, size_t cap)
{
    kvs_config *cfg = config(f->root);
    fill_store(cfg, f, n);
    ns_dir(f->root, ns, cap);
    return cfg;
}

/* Runs fn in a child under alarm(secs); true if it exited 0 in time. */
static bool in_child(void (*fn)(fx *), fx *f, unsigned secs)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(secs);
        fn(f);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        fprintf(stderr, "child died by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (it hung)" : "");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- item 1: a planted .kvstash symlink, as another uid --------------------------- */

static void test_planted_kvstash_symlink(void **state)
{
    fx *f = *state;
    if (geteuid() != 0)
        skip(); /* needs a second uid to plant, and root to be the victim */
    kvs_config *cfg = config(f->root);
    fill_store(cfg, f, 2);
    /* A world-writable root, and another user plants .kvstash -> a 0700
     * folder of root's. */
    assert_int_equal(chmod(f->root, 01777 & ~01000), 0);
    char meta[4200];
    snprintf(meta, sizeof meta, "%s/.kvstash", f->root);
    tu_rmtree(meta);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(OTHER_UID) != 0 || setuid(OTHER_UID) != 0)
            _exit(3);
        _exit(symlink(f->outside, meta) == 0 ? 0 : 4);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct stat sb;
    assert_int_equal(lstat(meta, &sb), 0);
    assert_int_equal(sb.st_uid, OTHER_UID);

    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 200};
    kvs_gc_report r;
    kvs_status st = kvs_admin_gc(a, &o, &r);
    assert_int_not_equal(st, KVS_OK); /* no lease can be taken there */
    char ns[4200];
    ns_dir(f->root, ns, sizeof ns);
    uint64_t removed = 0;
    st = kvs_admin_remove_namespace(a, strrchr(ns, '/') + 1, &removed);
    assert_int_not_equal(st, KVS_OK); /* no trash can be made there */
    /* The engine's collector too. */
    assert_int_equal(kvs_config_set(cfg, "max_store_size", "0.000001"), KVS_OK);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    store(e, f, 3);
    usleep(400 * 1000);
    kvs_engine_close(e);
    kvs_admin_close(a);
    assert_int_equal(count_entries(f->outside), 0);
    assert_int_equal(lstat(meta, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    kvs_config_free(cfg);
    printf("planted .kvstash symlink (uid %d): gc, rm and the engine's collector refused it; "
           "the 0700 folder it names holds 0 files\n", OTHER_UID);
}

/* ---- item 1: a 1900-level folder chain ------------------------------------------- */

static char chain_ns[4200];

static void rm_chain(fx *f)
{
    kvs_config *cfg = config(f->root);
    kvs_admin *a;
    if (kvs_admin_open(cfg, &a) != KVS_OK)
        _exit(5);
    uint64_t removed = 0;
    kvs_status st = kvs_admin_remove_namespace(a, strrchr(chain_ns, '/') + 1, &removed);
    if (st != KVS_OK && st != KVS_ERR_NOT_FOUND) /* not found: the second run */
        _exit(6);
    /* A later rm (of a namespace that is not there) walks the trash left
     * behind, boundedly. */
    kvs_admin_remove_namespace(a, "other-0123456789abcdef", &removed);
    kvs_admin_close(a);
    kvs_config_free(cfg);
}

static void test_deep_chain_rm(void **state)
{
    fx *f = *state;
    kvs_config_free(filled(f, 1, chain_ns, sizeof chain_ns));
    int fd = open(chain_ns, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    assert_int_equal(mkdirat(fd, "00", 0755), 0);
    int x = openat(fd, "00", O_RDONLY | O_DIRECTORY);
    close(fd);
    fd = x;
    for (int i = 0; i < 1900; i++) {
        assert_int_equal(mkdirat(fd, "d", 0755), 0);
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        assert_true(next >= 0);
        close(fd);
        fd = next;
    }
    close(fd);
    assert_true(in_child(rm_chain, f, 60));
    assert_true(in_child(rm_chain, f, 60)); /* and every later rm */
    printf("1900-level chain: rm returned, twice, without entering it\n");
}

/* ---- item 2: special files where metadata belongs -------------------------------- */

static void ops_on_store(fx *f)
{
    kvs_config *cfg = config(f->root);
    kvs_admin *a;
    if (kvs_admin_open(cfg, &a) != KVS_OK)
        _exit(7);
    kvs_ns_usage *list = NULL;
    size_t n = 0;
    if (kvs_admin_list(a, &list, &n) == KVS_OK)
        kvs_free(list);
    kvs_usage u;
    kvs_admin_usage(a, 0, &u);
    kvs_admin_usage(a, 1, &u);
    kvs_verify_options vo = {.threads = 2};
    kvs_verify_report vr;
    kvs_admin_verify(a, &vo, &vr);
    kvs_gc_options go = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 100};
    kvs_gc_report gr;
    kvs_admin_gc(a, &go, &gr);
    char *text = NULL;
    kvs_admin_lease(a, 0, &text);
    kvs_free(text);
    kvs_admin_close(a);
    int healthy;
    if (kvs_doctor(cfg, &text, &healthy) == KVS_OK)
        kvs_free(text);
    /* An engine, and its collector, on the same store. */
    kvs_config_set(cfg, "max_store_size", "0.000001");
    kvs_engine *e;
    if (kvs_engine_open(cfg, &base_ns, &e) == KVS_OK) {
        c_store(e, f, 9);
        usleep(300 * 1000);
        kvs_engine_close(e);
    }
    kvs_config_free(cfg);
}

static void test_fifos_hang_nothing(void **state)
{
    fx *f = *state;
    char ns[4200], p[4300];
    kvs_config_free(filled(f, 1, ns, sizeof ns));
    const char *names[] = {".kvstash/usage.json", ".kvstash/collector.lease",
                           ".kvstash/collector.log", ".kvstash/store-id"};
    snprintf(p, sizeof p, "%s/.kvstash", f->root);
    mkdir(p, 0755);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", f->root, names[i]);
        unlink(p);
        assert_int_equal(mkfifo(p, 0666), 0);
    }
    snprintf(p, sizeof p, "%s/NAMESPACE.json", ns);
    unlink(p);
    assert_int_equal(mkfifo(p, 0666), 0);
    assert_true(in_child(ops_on_store, f, 30));
    /* The collector works again: the lease, usage.json and the log are
     * regular files now (replaced, never opened), and gc succeeds. */
    const char *fixed[] = {".kvstash/usage.json", ".kvstash/collector.log"};
    for (size_t i = 0; i < 2; i++) {
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", f->root, fixed[i]);
        assert_int_equal(lstat(p, &sb), 0);
        assert_true(S_ISREG(sb.st_mode));
    }
    kvs_config *c2 = config(f->root);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(c2, &a), KVS_OK);
    kvs_gc_options go = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 1000};
    kvs_gc_report gr;
    assert_int_equal(kvs_admin_gc(a, &go, &gr), KVS_OK);
    kvs_admin_close(a);
    kvs_config_free(c2);
    printf("FIFOs at NAMESPACE.json, usage.json, the lease, the log and store-id: ls, du, "
           "verify, gc, lease, doctor and an engine with its collector all returned; the "
           "lease, usage.json and the log replaced, gc works again\n");
}

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void failed_opens(fx *f)
{
    char paths[8300];
    snprintf(paths, sizeof paths, "%s,%s", f->root, f->root2);
    kvs_config *cfg = config(paths);
    kvs_engine *e = NULL;
    if (kvs_engine_open(cfg, &base_ns, &e) == KVS_OK) /* warm up what stays */
        _exit(8);
    usleep(200 * 1000); /* the open's helper thread ends on its own */
    int fds = tu_count_fds(), threads = count_threads();
    for (int i = 0; i < 5; i++)
        if (kvs_engine_open(cfg, &base_ns, &e) == KVS_OK)
            _exit(9);
    usleep(200 * 1000);
    if (strstr(kvs_last_error(), "FIFO") == NULL)
        _exit(10);
    if (tu_count_fds() != fds || count_threads() > threads) {
        fprintf(stderr, "fds %d -> %d, threads %d -> %d\n", fds, tu_count_fds(), threads,
                count_threads());
        _exit(11);
    }
    kvs_config_free(cfg);
}

static void test_fifo_store_id_no_leak(void **state)
{
    fx *f = *state;
    char p[4300];
    snprintf(p, sizeof p, "%s/.kvstash", f->root2);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/.kvstash/store-id", f->root2);
    assert_int_equal(mkfifo(p, 0666), 0);
    assert_true(in_child(failed_opens, f, 30));
    printf("FIFO store-id: 5 engine opens failed at once, naming it, with no descriptor or "
           "thread left behind\n");
}

/* ---- item 5: verification never destroys good data ----------------------------- */

static void test_namespace_json_edit(void **state)
{
    fx *f = *state;
    char ns[4200], p[4300];
    kvs_config *cfg = filled(f, 2, ns, sizeof ns);
    snprintf(p, sizeof p, "%s/NAMESPACE.json", ns);
    size_t len = 0;
    char *text = tu_read_file(p, &len);
    assert_non_null(text);
    char *c = strstr(text, "\"num_layers\":2");
    assert_non_null(c);
    c[13] = '3'; /* one byte */
    assert_int_equal(tu_write_file(p, text, len), 0);
    free(text);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    kvs_verify_options vo = {.threads = 2, .remove_bad = 1};
    kvs_verify_report vr;
    assert_int_equal(kvs_admin_verify(a, &vo, &vr), KVS_OK);
    kvs_admin_close(a);
    assert_int_equal(vr.files, 2 * NCH);
    assert_int_equal(vr.ok, 2 * NCH);
    assert_int_equal(vr.removed, 0);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    assert_int_equal(retrieve(e, f, 1), NTOK);
    kvs_engine_close(e);
    kvs_config_free(cfg);
    printf("NAMESPACE.json edited by one byte: verify --remove-bad kept all %d chunks\n",
           2 * NCH);
}

static void test_unlink_examined(void **state)
{
    fx *f = *state;
    int dfd = open(f->root, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/x", f->root);
    snprintf(b, sizeof b, "%s/y", f->root);
    assert_int_equal(tu_write_file(a, "bad", 3), 0);
    struct stat examined;
    assert_int_equal(stat(a, &examined), 0);
    /* a writer publishes a good file under the name in between */
    assert_int_equal(tu_write_file(b, "good", 4), 0);
    assert_int_equal(rename(b, a), 0);
    assert_int_equal(kvs__unlink_examined(dfd, "x", &examined), 1);
    size_t len = 0;
    char *t = tu_read_file(a, &len);
    assert_non_null(t);
    assert_int_equal(len, 4);
    free(t);
    struct stat now;
    assert_int_equal(stat(a, &now), 0);
    assert_int_equal(kvs__unlink_examined(dfd, "x", &now), 0);
    assert_int_equal(count_entries(f->root), 0);
    close(dfd);
}


/* ---- item 1: folders swapped for symlinks under operator walks ---------------- */

/* The folder to swap (its last component) and where the symlink points.  The
 * swap happens once, in the call that is about to open or act on it: for the
 * path-based code before the fix that is opendir/stat/unlink of a path
 * through it, for the descriptor-based code an open of it by name. */
static char swap_name[8];          /* "ab" or "ab/cd": fan-out folders */
static char swap_target[4200];
static int swap_done;
static int swap_stat_skip;         /* path stats to let pass first (the scan's) */

static void swap_path(const char *dirpath)
{
    char moved[4300];
    snprintf(moved, sizeof moved, "%s.moved", dirpath);
    if (rename(dirpath, moved) == 0 && symlink(swap_target, dirpath) == 0)
        swap_done = 1;
}

static void swap_at(int dirfd, const char *name)
{
    char moved[64];
    snprintf(moved, sizeof moved, "%s.moved", name);
    if (renameat(dirfd, name, dirfd, moved) == 0 && symlinkat(swap_target, dirfd, name) == 0)
        swap_done = 1;
}

/* Does path have a component equal to swap_name? Fills its prefix. */
static bool through_swap(const char *path, char *prefix, size_t cap)
{
    size_t k = strlen(swap_name);
    for (const char *p = path; (p = strstr(p, swap_name)) != NULL; p++) {
        bool start = p == path || p[-1] == '/';
        bool end = p[k] == '/' || p[k] == '\0';
        if (start && end) {
            snprintf(prefix, cap, "%.*s", (int)(p - path + k), path);
            return true;
        }
    }
    return false;
}

static DIR *swap_opendir(const char *path)
{
    char pre[4300];
    if (!swap_done && through_swap(path, pre, sizeof pre) && path[strlen(pre)] == '\0')
        swap_path(pre);
    return kvs__io_posix.opendir(path);
}

static int swap_stat(const char *path, struct stat *st)
{
    char pre[4300];
    if (!swap_done && through_swap(path, pre, sizeof pre) && path[strlen(pre)] == '/' &&
        swap_stat_skip-- <= 0)
        swap_path(pre);
    return kvs__io_posix.stat(path, st);
}

static int swap_open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    char pre[4300];
    if (!swap_done && through_swap(path, pre, sizeof pre)) {
        if (strchr(pre, '/')) {
            /* "<ns>/<xx>/<yy>": swap the last folder, from its parent */
            char parent[4300];
            snprintf(parent, sizeof parent, "%.*s", (int)(strrchr(pre, '/') - pre), pre);
            int pfd = openat(dirfd, parent, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (pfd >= 0) {
                swap_at(pfd, strrchr(pre, '/') + 1);
                close(pfd);
            }
        } else if ((flags & O_DIRECTORY) && strcmp(pre, path) == 0) {
            swap_at(dirfd, path);
        }
    }
    return kvs__io_posix.open_beneath(dirfd, path, flags, mode);
}

static void swap_install(const char *name, const char *target, int stat_skip)
{
    static kvs_io_ops ops;
    ops = kvs__io_posix;
    ops.opendir = swap_opendir;
    ops.stat = swap_stat;
    ops.open_beneath = swap_open_beneath;
    snprintf(swap_name, sizeof swap_name, "%s", name);
    snprintf(swap_target, sizeof swap_target, "%s", target);
    swap_done = 0;
    swap_stat_skip = stat_skip;
    kvs__io_set(&ops);
}

/* A folder outside the store holding 20 files of any name, and the names
 * of the chunk files of the store's first fan-out folder copied in. */
static void fill_outside(fx *f, const char *leaf)
{
    char p[4400];
    for (int i = 0; i < 20; i++) {
        snprintf(p, sizeof p, "%s/victim-%02d.txt", f->outside, i);
        assert_int_equal(tu_write_file(p, "keep me", 7), 0);
    }
    if (!leaf)
        return;
    DIR *d = opendir(leaf);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", f->outside, de->d_name);
        assert_int_equal(tu_write_file(p, "not a chunk", 11), 0);
    }
    closedir(d);
}

/* The first chunk's folders: <ns>/<xx> and <ns>/<xx>/<yy>. */
static void first_leaf(const char *ns, char *xx, char *leaf, size_t cap)
{
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "cd '%s' && ls -d [0-9a-f][0-9a-f]/[0-9a-f][0-9a-f] | head -1", ns);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char rel[64] = "";
    assert_non_null(fgets(rel, sizeof rel, p));
    pclose(p);
    rel[strcspn(rel, "\n")] = '\0';
    snprintf(xx, 3, "%.2s", rel);
    snprintf(leaf, cap, "%s/%s", ns, rel);
}

/* filled(), and the first chunk's folders (first_leaf). */
static kvs_config *filled_leaf(fx *f, uint32_t n, char *ns, size_t ns_cap, char *xx, char *leaf,
                               size_t leaf_cap)
{
    kvs_config *cfg = filled(f, n, ns, ns_cap);
    first_leaf(ns, xx, leaf, leaf_cap);
    return cfg;
}

static void test_rm_folder_swapped_mid_walk(void **state)
{
    fx *f = *state;
    char ns[4200], xx[3], leaf[4300];
    kvs_config *cfg = filled_leaf(f, 4, ns, sizeof ns, xx, leaf, sizeof leaf);
    fill_outside(f, NULL);
    size_t outside_before = count_entries(f->outside);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    swap_install(xx, f->outside, 0);
    uint64_t removed = 0;
    kvs_status st = kvs_admin_remove_namespace(a, strrchr(ns, '/') + 1, &removed);
    kvs__io_set(NULL);
    kvs_admin_close(a);
    kvs_config_free(cfg);
    assert_true(swap_done);
    (void)st;
    assert_int_equal(count_entries(f->outside), outside_before);
    printf("rm with a fan-out folder swapped for a symlink mid-walk: %zu of %zu files outside "
           "kept (status %d)\n", count_entries(f->outside), outside_before, (int)st);
}

static void test_gc_folder_swapped_before_evict(void **state)
{
    fx *f = *state;
    char ns[4200], xx[3], leaf[4300];
    kvs_config *cfg = filled_leaf(f, 4, ns, sizeof ns, xx, leaf, sizeof leaf);
    fill_outside(f, leaf);
    size_t outside_before = count_entries(f->outside);
    size_t in_leaf = count_entries(leaf);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    /* the leaf folder (<xx>/<yy>) swapped after the scan looked at its files */
    swap_install(leaf + strlen(ns) + 1, f->outside, (int)in_leaf);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 0, .lease_wait_ms = 1000};
    kvs_gc_report r;
    kvs_status st = kvs_admin_gc(a, &o, &r);
    kvs__io_set(NULL);
    kvs_admin_close(a);
    kvs_config_free(cfg);
    assert_int_equal(st, KVS_OK);
    assert_true(swap_done);
    assert_int_equal(count_entries(f->outside), outside_before);
    printf("gc with a leaf folder swapped for a symlink between scan and eviction: %zu of %zu "
           "files outside kept, %llu chunks evicted in the store\n", count_entries(f->outside),
           outside_before, (unsigned long long)r.files_removed);
}


/* verify --remove-bad: the bad file's folder swapped for a symlink to a
 * folder holding a file of the same name, right after verify opened it. */
static char vswap_leaf[4300];
static int vswap_armed;

static int vswap_fstat(int fd, struct stat *st)
{
    int rc = kvs__io_posix.fstat(fd, st);
    if (vswap_armed && rc == 0 && S_ISREG(st->st_mode)) {
        vswap_armed = 0;
        swap_path(vswap_leaf);
    }
    return rc;
}

static void test_verify_remove_folder_swapped(void **state)
{
    fx *f = *state;
    char ns[4200], xx[3], leaf[4300], p[4600];
    kvs_config *cfg = filled_leaf(f, 1, ns, sizeof ns, xx, leaf, sizeof leaf);
    fill_outside(f, leaf);
    size_t outside_before = count_entries(f->outside);
    /* Only the file in that leaf is bad (truncated by a byte): the others
     * are left out of the walk by naming the namespace... so make every
     * file of the namespace bad but check only the outside. */
    snprintf(p, sizeof p, "find '%s' -type f -name '[0-9a-f]*' -exec truncate -s -1 {} +", ns);
    assert_int_equal(system(p), 0);
    snprintf(vswap_leaf, sizeof vswap_leaf, "%s", leaf);
    snprintf(swap_target, sizeof swap_target, "%s", f->outside);
    swap_done = 0;
    static kvs_io_ops ops;
    ops = kvs__io_posix;
    ops.fstat = vswap_fstat;
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    kvs_verify_options vo = {.threads = 1, .remove_bad = 1};
    kvs_verify_report vr;
    vswap_armed = 1;
    kvs__io_set(&ops);
    assert_int_equal(kvs_admin_verify(a, &vo, &vr), KVS_OK);
    kvs__io_set(NULL);
    kvs_admin_close(a);
    kvs_config_free(cfg);
    assert_true(swap_done);
    assert_int_equal(vr.bad, NCH);
    assert_int_equal(count_entries(f->outside), outside_before);
    printf("verify --remove-bad with a folder swapped after the open: %zu of %zu files outside "
           "kept, %llu bad chunks removed in the store\n", count_entries(f->outside),
           outside_before, (unsigned long long)vr.removed);
}

/* The engine's quarantine of a bad file: a writer publishes a good one
 * under the name between the reader's check and its removal. */
static char q_leafrel[8];
static char q_good[4300], q_final[4300];
static int q_armed;

static int q_open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    if (q_armed && strcmp(path, q_leafrel) == 0) {
        q_armed = 0;
        rename(q_good, q_final);
    }
    return kvs__io_posix.open_beneath(dirfd, path, flags, mode);
}

static void test_quarantine_only_examined(void **state)
{
    fx *f = *state;
    kvs_config *cfg = config(f->root);
    assert_int_equal(kvs_config_set(cfg, "gds_io_threads", "1"), KVS_OK);
    fill_store(cfg, f, 1);
    char ns[4200], p[9000];
    ns_dir(f->root, ns, sizeof ns);
    /* Every chunk file of the prompt truncated; one good copy kept aside for
     * the first chunk (the first the reader opens and quarantines). */
    uint32_t t[NTOK];
    fu_tokens(t, NTOK, 1, 0, 0);
    uint8_t keys[NCH][KVS_KEY_BYTES];
    size_t nk = 0;
    assert_int_equal(kvs_chunk_keys(t, NTOK, CHUNK, keys, NCH, &nk), KVS_OK);
    char hex[2 * KVS_KEY_BYTES + 1];
    for (int i = 0; i < KVS_KEY_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", keys[0][i]);
    snprintf(q_leafrel, sizeof q_leafrel, "%.2s/%.2s", hex, hex + 2);
    snprintf(q_final, sizeof q_final, "%s/%s/%s", ns, q_leafrel, hex);
    snprintf(q_good, sizeof q_good, "%s/good-copy", f->root);
    snprintf(p, sizeof p, "cp '%s' '%s'", q_final, q_good);
    assert_int_equal(system(p), 0);
    snprintf(p, sizeof p, "find '%s' -type f -name '[0-9a-f]*' -exec truncate -s -1 {} +", ns);
    assert_int_equal(system(p), 0);
    static kvs_io_ops ops;
    ops = kvs__io_posix;
    ops.open_beneath = q_open_beneath;
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    q_armed = 1;
    kvs__io_set(&ops);
    size_t got = retrieve(e, f, 1);
    kvs__io_set(NULL);
    kvs_engine_close(e);
    kvs_config_free(cfg);
    assert_int_equal(got, 0);
    assert_int_equal(q_armed, 0);
    struct stat sb;
    assert_int_equal(stat(q_final, &sb), 0); /* the good file stays */
    assert_int_equal(fu_verify_chunk_file(q_final), 0);
}

/* ---- item 5: verify's cost follows the namespace, not the header ---------------- */

static void test_verify_bounded_by_namespace(void **state)
{
    fx *f = *state;
    char ns[4200], xx[3], leaf[4300], p[4400];
    kvs_config *cfg = filled_leaf(f, 1, ns, sizeof ns, xx, leaf, sizeof leaf);
    DIR *d = opendir(leaf);
    struct dirent *de;
    p[0] = '\0';
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            snprintf(p, sizeof p, "%.4000s/%.255s", leaf, de->d_name);
    closedir(d);
    /* Its header rewritten to claim a 16 GiB payload (consistent with
     * itself, checksum and all), the file made that long, sparse. */
    size_t len = 0;
    uint8_t *buf = (uint8_t *)tu_read_file(p, &len);
    assert_non_null(buf);
    kvs_chunk_header h;
    assert_int_equal(kvs__header_decode(buf, KVS_HEADER_BYTES, &h), KVS_REJECT_NONE);
    h.num_layers = 4096;
    h.num_planes = 2;
    h.row_bytes = 1u << 17;
    h.payload_bytes = (uint64_t)h.num_layers * h.num_planes * h.tokens * h.row_bytes;
    h.segment_bytes = kvs__segment_bytes(h.payload_bytes);
    h.segment_count = kvs__segment_count(h.payload_bytes, h.segment_bytes);
    kvs__header_encode(&h, buf);
    assert_int_equal(kvs__header_decode(buf, KVS_HEADER_BYTES, &h), KVS_REJECT_NONE);
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, KVS_HEADER_BYTES, 0), KVS_HEADER_BYTES);
    assert_int_equal(ftruncate(fd, (off_t)kvs__file_bytes(h.payload_bytes)), 0);
    close(fd);
    free(buf);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    kvs_verify_options vo = {.threads = 2};
    kvs_verify_report vr;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kvs_admin_verify(a, &vo, &vr), KVS_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    kvs_admin_close(a);
    kvs_config_free(cfg);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_int_equal(vr.bad, 1);
    assert_true(vr.bytes < (1u << 20));
    assert_true(s < 5.0);
    printf("a chunk whose header claims a 16 GiB payload (sparse file): verify judged it in "
           "%.3f s, reading %llu bytes\n", s, (unsigned long long)vr.bytes);
}

/* ---- item 6: shared stores -------------------------------------------------------- */

static void test_group_shared_modes(void **state)
{
    fx *f = *state;
    mode_t old = umask(002);
    kvs_config *cfg = config(f->root);
    assert_int_equal(kvs_config_set(cfg, "file_mode", "0660"), KVS_OK);
    fill_store(cfg, f, 1);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(cfg, &a), KVS_OK);
    kvs_gc_options o = {.flags = KVS_GC_TO_SIZE, .to_bytes = 1ull << 40, .lease_wait_ms = 1000};
    kvs_gc_report r;
    assert_int_equal(kvs_admin_gc(a, &o, &r), KVS_OK);
    kvs_admin_close(a);
    umask(old);
    char p[4300];
    struct stat sb;
    snprintf(p, sizeof p, "%s/.kvstash", f->root);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0770);
    snprintf(p, sizeof p, "%s/.kvstash/usage.json", f->root);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0660);
    kvs_config_free(cfg);
}

static void unreadable_chunk(fx *f)
{
    if (setgid(OTHER_UID) != 0 || setuid(OTHER_UID) != 0)
        _exit(3);
    kvs_config *cfg = config(f->root2);
    kvs_config_set(cfg, "failure_threshold", "2");
    kvs_engine *e;
    if (kvs_engine_open(cfg, &base_ns, &e) != KVS_OK)
        _exit(4);
    c_store(e, f, 1);
    /* every chunk of prompt 1 unreadable (mode 000); prompt 2 fine */
    char ns[4200];
    ns_dir_c(f->root2, ns, sizeof ns);
    char cmd[8600];
    snprintf(cmd, sizeof cmd, "find '%s' -type f -name '[0-9a-f]*' -exec chmod 000 {} +", ns);
    if (system(cmd) != 0)
        _exit(5);
    c_store(e, f, 2);
    kvs_engine_close(e);
    if (kvs_engine_open(cfg, &base_ns, &e) != KVS_OK)
        _exit(6);
    for (int i = 0; i < 6; i++)
        if (c_retrieve(e, f, 1) != 0)
            _exit(9);
    kvs_stats s;
    kvs_engine_stats(e, &s, sizeof s);
    if (s.store_unhealthy)
        _exit(7);
    if (c_retrieve(e, f, 2) != NTOK) /* the other prompt still served */
        _exit(8);
    kvs_engine_close(e);
    kvs_config_free(cfg);
}

static void test_unreadable_chunk_is_a_miss(void **state)
{
    fx *f = *state;
    if (geteuid() != 0)
        skip(); /* needs root to become another uid (root reads mode-000 files) */
    assert_int_equal(chown(f->root2, OTHER_UID, OTHER_UID), 0);
    assert_true(in_child(unreadable_chunk, f, 60));
}

static void test_empty_store_id_repaired(void **state)
{
    fx *f = *state;
    char paths[8300], p[4300];
    snprintf(paths, sizeof paths, "%s,%s", f->root, f->root2);
    snprintf(p, sizeof p, "%s/.kvstash", f->root2);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/.kvstash/store-id", f->root2);
    assert_int_equal(tu_write_file(p, "", 0), 0);
    kvs_config *cfg = config(paths);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &base_ns, &e), KVS_OK);
    store(e, f, 1);
    assert_int_equal(retrieve(e, f, 1), NTOK);
    kvs_engine_close(e);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, 17);
    kvs_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_planted_kvstash_symlink, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_deep_chain_rm, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_fifos_hang_nothing, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_fifo_store_id_no_leak, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_rm_folder_swapped_mid_walk, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_gc_folder_swapped_before_evict, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_verify_remove_folder_swapped, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_only_examined, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_namespace_json_edit, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_verify_bounded_by_namespace, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_unlink_examined, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_group_shared_modes, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_chunk_is_a_miss, setup, fu_teardown),
        cmocka_unit_test_setup_teardown(test_empty_store_id_repaired, setup, fu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
