/* test_strict.c - strict_ownership with real second users (root only: the
 * test forks and setuid()s to unused uids; exit 77 when not root).  A
 * namespace folder or .kvstash of another user, or writable by others, is
 * an error at open naming it; a chunk file of another user, or writable by
 * others, is a miss (miss_ownership) while an engine without the mode
 * serves it. */
#include "test_util.h"

#include "chunk_file.h"
#include "config.h"
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAYERS 2
#define HEADS 2
#define DIM 64
#define CHUNK 16
#define ROW (HEADS * DIM * 2)
#define NTOK 32
#define OTHER_UID 54322
#define OTHER_GID 54322
#define SHARED_GID 54323 /* the group of a group-shared store */

typedef tu_fixture fixture;

static kvs_config *config(const fixture *f, bool strict);

static kvs_config *config_owner(const fixture *f, const char *uid, const char *gid)
{
    kvs_config *c = config(f, true);
    if (uid)
        assert_int_equal(kvs_config_set(c, "store_uid", uid), KVS_OK);
    if (gid)
        assert_int_equal(kvs_config_set(c, "store_gid", gid), KVS_OK);
    return c;
}

static kvs_config *config(const fixture *f, bool strict)
{
    kvs_config *c = tu_config(f->dir, "16", "2", "negative_cache_ms", "0", "strict_ownership",
                              strict ? "true" : "false", NULL);
    assert_non_null(c);
    return c;
}

static int setup(void **state)
{
    fixture *f = tu_setup(state, "strict");
    /* the temporary folder's parents must let the other user through */
    assert_int_equal(chmod(f->dir, 0755), 0);
    f->ns = tu_mha_ns("test/strict", LAYERS, HEADS, DIM);
    return 0;
}

TU_KV_TYPE(kv, LAYERS, NTOK, ROW);

static void kv_init(kv *b, uint8_t seed)
{
    tu_fill_pattern(b->mem, sizeof b->mem, seed);
    tu_kv_contiguous(&b->kv, b->mem, b->layers, LAYERS, 2, NTOK, ROW);
}

static void tokens(uint32_t *t)
{
    tu_tokens(t, NTOK, 0);
}

static void store_with(const fixture *f, const kvs_config *cfg)
{
    uint32_t t[NTOK];
    tokens(t);
    kv src;
    kv_init(&src, 1);
    tu_store_all(cfg, &f->ns, t, NTOK, &src.kv, NULL);
}

/* Tokens a fresh engine loads; *own_out: its miss_ownership. */
static size_t load(const fixture *f, const kvs_config *cfg, uint64_t *own_out)
{
    uint32_t t[NTOK];
    tokens(t);
    kv dst;
    kv_init(&dst, 0);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &f->ns, &e), KVS_OK);
    size_t n = 99;
    assert_int_equal(kvs_retrieve(e, t, NTOK, &dst.kv, &n), KVS_OK);
    kvs_stats s;
    assert_int_equal(kvs_engine_stats(e, &s, sizeof s), KVS_OK);
    *own_out = s.miss_ownership;
    kvs_engine_close(e);
    return n;
}

static bool other_in_shared_group; /* as_other: SHARED_GID as a supplementary group */

/* Runs fn as uid/gid OTHER in a child; returns its exit status. */
static int as_other(void (*fn)(const fixture *), const fixture *f)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        gid_t extra = SHARED_GID;
        if (setgroups(other_in_shared_group ? 1 : 0, &extra) != 0 || setgid(OTHER_GID) != 0 ||
            setuid(OTHER_UID) != 0)
            _exit(90);
        umask(0);
        fn(f);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void chunk_path(const fixture *f, int idx, char *path)
{
    kvs_config *c = config(f, false);
    uint32_t t[NTOK];
    tokens(t);
    tu_chunk_path(c, &f->ns, t, NTOK, CHUNK, (size_t)idx, path);
    kvs_config_free(c);
}

static const char *planted_path;

/* The other user replaces a chunk file by a copy it owns. */
static void plant_copy(const fixture *f)
{
    (void)f;
    size_t len;
    char *b = tu_read_file(planted_path, &len);
    if (!b || unlink(planted_path) != 0 || tu_write_file(planted_path, b, len) != 0)
        _exit(91);
    chmod(planted_path, 0644);
}

/* The other user opens the namespace first (a world-writable root). */
static void open_first(const fixture *f)
{
    kvs_config *c = config(f, false);
    kvs_engine *e;
    if (kvs_engine_open(c, &f->ns, &e) != KVS_OK)
        _exit(92);
    kvs_engine_close(e);
}

static void test_chunk_files(void **state)
{
    fixture *f = *state;
    kvs_config *strict = config(f, true), *lax = config(f, false);
    store_with(f, strict);
    uint64_t own = 9;
    assert_int_equal(load(f, strict, &own), NTOK);
    assert_int_equal(own, 0);

    /* chunk 1 replaced by the other user (folders opened to it for that) */
    char p1[KVS_PATH_MAX], dir[KVS_PATH_MAX];
    chunk_path(f, 1, p1);
    snprintf(dir, sizeof dir, "%s", p1);
    *strrchr(dir, '/') = '\0';
    assert_int_equal(chmod(dir, 0777), 0);
    planted_path = p1;
    assert_int_equal(as_other(plant_copy, f), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    struct stat st;
    assert_int_equal(stat(p1, &st), 0);
    assert_int_equal(st.st_uid, OTHER_UID);
    assert_int_equal(load(f, strict, &own), CHUNK);
    assert_int_equal(own, 1);
    assert_int_equal(load(f, lax, &own), NTOK); /* without the mode: served */

    /* chunk 0 ours but writable by others */
    char p0[KVS_PATH_MAX];
    chunk_path(f, 0, p0);
    assert_int_equal(chmod(p0, 0646), 0);
    assert_int_equal(load(f, strict, &own), 0);
    assert_true(own >= 1); /* chunk 1 too, read in parallel */
    kvs_config_free(strict);
    kvs_config_free(lax);
}

static void test_folders(void **state)
{
    fixture *f = *state;
    kvs_config *strict = config(f, true), *lax = config(f, false);
    kvs_engine *e = NULL;

    /* world-writable root: the other user is the first to open the
     * (unsalted) namespace and owns its folder */
    assert_int_equal(chmod(f->dir, 01777), 0);
    assert_int_equal(as_other(open_first, f), 0);
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_ERR_PERM);
    if (!strstr(kvs_last_error(), "owned by uid 54322") ||
        !strstr(kvs_last_error(), "namespace folder"))
        fail_msg("%s", kvs_last_error());
    assert_int_equal(kvs_engine_open(lax, &f->ns, &e), KVS_OK);
    kvs_engine_close(e);

    /* ours again, but writable by others */
    char ns[KVS_PATH_MAX];
    assert_int_equal(kvs_engine_open(lax, &f->ns, &e), KVS_OK);
    snprintf(ns, sizeof ns, "%s", kvs_engine_namespace_path(e));
    kvs_engine_close(e);
    assert_int_equal(chown(ns, 0, 0), 0);
    assert_int_equal(chmod(ns, 0777), 0);
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_ERR_PERM);
    assert_non_null(strstr(kvs_last_error(), "writable by others"));
    assert_int_equal(chmod(ns, 0755), 0);
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_OK);
    kvs_engine_close(e);

    /* .kvstash of the other user, then a symlink in its place */
    char meta[KVS_PATH_MAX];
    snprintf(meta, sizeof meta, "%s/.kvstash", f->dir);
    struct stat st;
    if (stat(meta, &st) != 0)
        assert_int_equal(mkdir(meta, 0755), 0);
    assert_int_equal(chown(meta, OTHER_UID, OTHER_GID), 0);
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_ERR_PERM);
    assert_non_null(strstr(kvs_last_error(), ".kvstash"));
    assert_int_equal(chown(meta, 0, 0), 0);
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_OK);
    kvs_engine_close(e);
    char moved[KVS_PATH_MAX + 8];
    snprintf(moved, sizeof moved, "%s.old", meta);
    assert_int_equal(rename(meta, moved), 0);
    assert_int_equal(symlink(moved, meta), 0);
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_ERR_PERM);
    assert_non_null(strstr(kvs_last_error(), "not a folder"));
    assert_int_equal(unlink(meta), 0);
    assert_int_equal(rename(moved, meta), 0);
    kvs_config_free(strict);
    kvs_config_free(lax);
}

/* The other user plants a copy of chunk 1 with its own primary group. */
static void plant_own_group(const fixture *f)
{
    plant_copy(f);
    if (chown(planted_path, (uid_t)-1, OTHER_GID) != 0)
        _exit(93);
}

/* A group-shared store (store_gid): group-writable setgid folders, files of
 * other members; a file of the member's own group is still refused.  Then
 * store_uid: a store owned by a service user. */
static void test_group_store_and_store_uid(void **state)
{
    fixture *f = *state;
    kvs_config *lax = config(f, false), *strict = config(f, true);
    char gid[16], uid[16];
    snprintf(gid, sizeof gid, "%d", SHARED_GID);
    snprintf(uid, sizeof uid, "%d", OTHER_UID);
    kvs_config *group = config_owner(f, NULL, gid);
    store_with(f, lax);
    char p0[KVS_PATH_MAX], p1[KVS_PATH_MAX], ns[KVS_PATH_MAX], leaf[KVS_PATH_MAX];
    chunk_path(f, 0, p0);
    chunk_path(f, 1, p1);
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_open(lax, &f->ns, &e), KVS_OK);
    snprintf(ns, sizeof ns, "%s", kvs_engine_namespace_path(e));
    kvs_engine_close(e);
    snprintf(leaf, sizeof leaf, "%s", p1);
    *strrchr(leaf, '/') = '\0';
    /* the folders as a group store has them */
    const char *dirs[] = {ns, leaf};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(chown(dirs[i], 0, SHARED_GID), 0);
        assert_int_equal(chmod(dirs[i], 02775), 0);
    }
    assert_int_equal(kvs_engine_open(strict, &f->ns, &e), KVS_ERR_PERM);
    if (!strstr(kvs_last_error(), "writable by its group") ||
        !strstr(kvs_last_error(), "store_gid"))
        fail_msg("%s", kvs_last_error());
    assert_int_equal(kvs_engine_open(group, &f->ns, &e), KVS_OK);
    kvs_engine_close(e);

    /* another member replaces chunk 1: its file has the store's group */
    other_in_shared_group = true;
    planted_path = p1;
    assert_int_equal(as_other(plant_copy, f), 0);
    struct stat st;
    assert_int_equal(stat(p1, &st), 0);
    assert_int_equal(st.st_uid, OTHER_UID);
    assert_int_equal(st.st_gid, SHARED_GID);
    uint64_t own = 9;
    assert_int_equal(load(f, group, &own), NTOK);
    assert_int_equal(own, 0);
    /* the same member's file of its own group: refused */
    assert_int_equal(as_other(plant_own_group, f), 0);
    assert_int_equal(load(f, group, &own), CHUNK);
    assert_int_equal(own, 1);
    other_in_shared_group = false;

    /* store_uid: the files of a service user are the trusted ones */
    for (int i = 0; i < 2; i++)
        assert_int_equal(chmod(dirs[i], 0755), 0);
    const char *files[] = {p0, p1};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(chown(files[i], OTHER_UID, OTHER_GID), 0);
        assert_int_equal(chmod(files[i], 0644), 0);
    }
    kvs_config *svc = config_owner(f, uid, NULL);
    assert_int_equal(load(f, svc, &own), NTOK);
    assert_int_equal(own, 0);
    assert_int_equal(load(f, strict, &own), 0);
    assert_true(own >= 1);
    kvs_config *bad = config_owner(f, "no-such-user-kvstash", NULL);
    assert_int_equal(kvs_engine_open(bad, &f->ns, &e), KVS_ERR_CONFIG);
    assert_non_null(strstr(kvs_last_error(), "store_uid"));
    kvs_config_free(bad);
    kvs_config_free(svc);
    kvs_config_free(group);
    kvs_config_free(strict);
    kvs_config_free(lax);
}

int main(void)
{
    if (geteuid() != 0) {
        printf("skip: needs root (setuid to a second user)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chunk_files, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_folders, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_group_store_and_store_uid, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
