/* test_auth.c - authenticated chunks (auth_key_file) against someone who can
 * write any file on the mount but has not the key: every forgery that
 * passes the integrity checks (segment and header checksums recomputed) is
 * a miss counted as miss_unauthenticated, never served; unauthenticated
 * files stay readable with auth off; the key file itself is checked. */
#include "test_util.h"

#include "checksum.h"
#include "chunk_file.h"
#include "config.h"
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 8
#define DIM 64
#define CHUNK 16
#define ROW (HEADS * DIM * 2)
#define NTOK 48 /* 3 chunks */

typedef struct fixture {
    char *dir;
    char key1[512], key2[512];
    kvs_config *cfg;        /* auth on, key 1 */
    kvs_namespace ns;
} fixture;

static kvs_config *config_with(const fixture *f, const char *key)
{
    kvs_config *c = tu_config(f->dir, "16", "2", "negative_cache_ms", "0", NULL);
    assert_non_null(c);
    if (key)
        assert_int_equal(kvs_config_set(c, "auth_key_file", key), KVS_OK);
    return c;
}

static void write_key(const char *path, uint8_t fill, size_t n, mode_t mode)
{
    uint8_t k[64];
    memset(k, fill, sizeof k);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, k, n), (ssize_t)n);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char *base = f->dir = tu_fixture_dir("auth");
    snprintf(f->key1, sizeof f->key1, "%s/key1", base);
    snprintf(f->key2, sizeof f->key2, "%s/key2", base);
    write_key(f->key1, 0x11, 32, 0600);
    write_key(f->key2, 0x22, 48, 0400);
    f->cfg = config_with(f, f->key1);
    f->ns = tu_mha_ns("test/auth", LAYERS, HEADS, DIM);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tu_fixture_done(f->dir, f->cfg);
    free(f);
    return 0;
}

TU_KV_TYPE(kv, LAYERS, NTOK, ROW);

static void kv_init(kv *b, uint8_t seed)
{
    tu_fill_pattern(b->mem, sizeof b->mem, seed);
    tu_kv_contiguous(&b->kv, b->mem, b->layers, LAYERS, 2, NTOK, ROW);
}

static void tokens(uint32_t *t, uint32_t seed)
{
    tu_tokens(t, NTOK, seed);
}

static void store(kvs_engine *e, const uint32_t *t, kv *src)
{
    kvs_op_result r;
    tu_store_wait(e, t, NTOK, &src->kv, &r);
    assert_int_equal(r.status, KVS_OK);
    assert_int_equal(r.tokens + 0 * r.chunks_present, NTOK);
}

/* Tokens loaded by a fresh engine of cfg; *unauth_out: its
 * miss_unauthenticated; the bytes it loaded must be the expected ones. */
static size_t load(const fixture *f, const kvs_config *cfg, const uint32_t *t, const kv *want,
                   uint64_t *unauth_out)
{
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &f->ns, &e), KVS_OK);
    kv dst;
    kv_init(&dst, 0);
    memset(dst.mem, 0xee, sizeof dst.mem);
    size_t n = 99;
    assert_int_equal(kvs_retrieve(e, t, NTOK, &dst.kv, &n), KVS_OK);
    for (int l = 0; want && l < LAYERS; l++)
        for (int p = 0; p < 2; p++) {
            size_t o = ((size_t)l * 2 + p) * NTOK * ROW;
            assert_memory_equal(dst.mem + o, want->mem + o, n * ROW);
        }
    kvs_stats s;
    assert_int_equal(kvs_engine_stats(e, &s, sizeof s), KVS_OK);
    if (unauth_out)
        *unauth_out = s.miss_unauthenticated;
    kvs_engine_close(e);
    return n;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    uint8_t *b = (uint8_t *)tu_read_file(path, len);
    assert_non_null(b);
    return b;
}

/* Writes a file back after an edit, with every checksum made right again:
 * what an attacker without the key can do. */
static void reseal(const char *path, uint8_t *b, size_t len)
{
    kvs_chunk_header h;
    /* the header checksum first, so an edited header decodes */
    memset(b + 16, 0, 8);
    uint64_t sum = kvs__checksum(b, KVS_HEADER_BYTES);
    for (int i = 0; i < 8; i++)
        b[16 + i] = (uint8_t)(sum >> (8 * i));
    assert_int_equal(kvs__header_decode(b, len, &h), KVS_REJECT_NONE);
    for (uint32_t i = 0; i < h.segment_count; i++) {
        uint64_t off = (uint64_t)i * h.segment_bytes;
        uint64_t n = KVS_MIN((uint64_t)h.segment_bytes, kvs__padded_payload(h.payload_bytes) - off);
        h.segment_sums[i] = kvs__checksum(b + KVS_PAYLOAD_OFFSET + off, n);
    }
    kvs__header_encode(&h, b);
    unlink(path);
    assert_int_equal(tu_write_file(path, b, len), 0);
}

static void test_roundtrip_and_format(void **state)
{
    fixture *f = *state;
    uint32_t t[NTOK];
    tokens(t, 1);
    kv src;
    kv_init(&src, 1);
    tu_store_all(f->cfg, &f->ns, t, NTOK, &src.kv, NULL);
    uint64_t unauth = 9;
    assert_int_equal(load(f, f->cfg, t, &src, &unauth), NTOK);
    assert_int_equal(unauth, 0);

    char path[KVS_PATH_MAX];
    tu_chunk_path(f->cfg, &f->ns, t, NTOK, CHUNK, 1, path);
    size_t len;
    uint8_t *b = slurp(path, &len);
    kvs_chunk_header h;
    assert_int_equal(kvs__header_decode(b, len, &h), KVS_REJECT_NONE);
    assert_int_equal(h.auth_algo, KVS_AUTH_HMAC_SHA256);
    /* the tag is HMAC-SHA256(key, header || SHA-256 of each segment),
     * recomputed here from its definition with libcrypto's one-shot calls */
    uint64_t padded = kvs__padded_payload(h.payload_bytes);
    uint32_t nseg = (uint32_t)((padded + 16383) / 16384);
    assert_int_equal(nseg, kvs__auth_segment_count(h.payload_bytes));
    uint8_t *in = calloc(1, KVS_HEADER_BYTES + 32 * (size_t)nseg);
    memcpy(in, b, KVS_HEADER_BYTES);
    for (uint32_t i = 0; i < nseg; i++) {
        uint64_t off = (uint64_t)i * 16384;
        uint64_t n = KVS_MIN((uint64_t)16384, padded - off);
        kvs__segment_sha256(b + KVS_PAYLOAD_OFFSET + off, n, in + KVS_HEADER_BYTES + 32 * i);
    }
    uint8_t key[32], tag[32];
    memset(key, 0x11, sizeof key);
    assert_int_equal(kvs__chunk_mac(key, sizeof key, in, nseg, tag), 0);
    assert_memory_equal(tag, h.auth_tag, 32);
    free(in);
    free(b);

    /* A reader without a key serves the authenticated files. */
    kvs_config *plain = config_with(f, NULL);
    assert_int_equal(load(f, plain, t, &src, NULL), NTOK);
    /* A reader with another key serves none of them. */
    kvs_config *other = config_with(f, f->key2);
    assert_int_equal(load(f, other, t, &src, &unauth), 0);
    assert_true(unauth >= 1); /* chunks are read in parallel: 1 to 3 */
    kvs_config_free(plain);
    kvs_config_free(other);
}

/* Files written without auth (older writers, or auth off) are misses once
 * auth is on, and stay readable with it off. */
static void test_unauthenticated_files(void **state)
{
    fixture *f = *state;
    uint32_t t[NTOK];
    tokens(t, 2);
    kv src;
    kv_init(&src, 2);
    kvs_config *plain = config_with(f, NULL);
    tu_store_all(plain, &f->ns, t, NTOK, &src.kv, NULL);
    assert_int_equal(load(f, plain, t, &src, NULL), NTOK);
    uint64_t unauth = 0;
    assert_int_equal(load(f, f->cfg, t, &src, &unauth), 0);
    assert_true(unauth >= 1);
    /* Refused files are removed, so the next stores write authenticated
     * ones. */
    for (int round = 0; round < 3; round++) {
        tu_store_all(f->cfg, &f->ns, t, NTOK, &src.kv, NULL);
        if (load(f, f->cfg, t, &src, &unauth) == NTOK)
            break;
    }
    assert_int_equal(load(f, f->cfg, t, &src, &unauth), NTOK);
    assert_int_equal(unauth, 0);
    kvs_config_free(plain);
}

enum forgery { PAYLOAD, HEADER_FIELD, NAMESPACE_ID, SWAP_KEYS, OTHER_KEY, TAG_BIT, NFORGERIES };
static const char *const forgery_name[] = {"payload byte", "header field", "namespace id",
                                           "chunk swapped in", "written with another key",
                                           "tag bit"};

static void test_forgeries_are_misses(void **state)
{
    fixture *f = *state;
    for (int which = 0; which < NFORGERIES; which++) {
        uint32_t t[NTOK];
        tokens(t, 100 + (uint32_t)which);
        kv src, evil;
        kv_init(&src, 3);
        kv_init(&evil, 77);
        kvs_engine *e;
        assert_int_equal(kvs_engine_open(f->cfg, &f->ns, &e), KVS_OK);
        store(e, t, &src);
        kvs_engine_close(e);
        char p0[KVS_PATH_MAX], p1[KVS_PATH_MAX];
        tu_chunk_path(f->cfg, &f->ns, t, NTOK, CHUNK, 0, p0);
        tu_chunk_path(f->cfg, &f->ns, t, NTOK, CHUNK, 1, p1);
        size_t len;
        uint8_t *b = slurp(p1, &len);
        switch (which) {
        case PAYLOAD:
            b[KVS_PAYLOAD_OFFSET + 100000] ^= 1; /* in the 7th of 8 auth pieces */
            reseal(p1, b, len);
            break;
        case HEADER_FIELD:
            b[168] ^= 1; /* writer_pid: informative, still covered */
            reseal(p1, b, len);
            break;
        case NAMESPACE_ID: {
            /* a chunk of this key from another namespace (salted) under the
             * same auth key, its namespace id edited to this one */
            kvs_namespace o = f->ns;
            o.salt = "other";
            assert_int_equal(kvs_engine_open(f->cfg, &o, &e), KVS_OK);
            store(e, t, &evil);
            char q[KVS_PATH_MAX];
            uint8_t keys[3][32];
            size_t nk;
            assert_int_equal(kvs_chunk_keys(t, NTOK, CHUNK, keys, 3, &nk), KVS_OK);
            kvs__store_chunk_path(&e->store, keys[1], q);
            kvs_engine_close(e);
            size_t ql;
            uint8_t *c = slurp(q, &ql);
            assert_int_equal(ql, len);
            memcpy(c + 24, b + 24, 32);
            reseal(p1, c, ql);
            free(c);
            break;
        }
        case SWAP_KEYS: {
            /* chunk 0's file (valid tag) with chunk 1's key written in */
            size_t l0;
            uint8_t *c = slurp(p0, &l0);
            memcpy(c + 56, b + 56, 32);
            reseal(p1, c, l0);
            free(c);
            break;
        }
        case OTHER_KEY: {
            kvs_config *k2 = config_with(f, f->key2);
            unlink(p0);
            unlink(p1);
            assert_int_equal(kvs_engine_open(k2, &f->ns, &e), KVS_OK);
            store(e, t, &evil);
            kvs_engine_close(e);
            kvs_config_free(k2);
            /* chunk 0 back as key 1 wrote it: only chunk 1 is foreign */
            kvs_engine_open(f->cfg, &f->ns, &e);
            unlink(p0);
            store(e, t, &src);
            kvs_engine_close(e);
            break;
        }
        case TAG_BIT:
            b[336 + 7] ^= 0x80;
            reseal(p1, b, len);
            break;
        }
        free(b);
        if (which == PAYLOAD) {
            /* the threat is real: without a key the forgery is served */
            kvs_config *plain = config_with(f, NULL);
            assert_int_equal(load(f, plain, t, NULL, NULL), NTOK);
            kvs_config_free(plain);
        }
        uint64_t unauth = 0;
        size_t n = load(f, f->cfg, t, &src, &unauth);
        if (n != CHUNK || unauth != 1)
            fail_msg("forgery \"%s\": %zu tokens loaded (want %d), %llu unauthenticated",
                     forgery_name[which], n, CHUNK, (unsigned long long)unauth);
    }
}

/* The key file: a regular file, no access for group or others, 32..4096
 * bytes; anything else refuses the open with the reason. */
static void test_key_file_checks(void **state)
{
    fixture *f = *state;
    char path[600], link[600];
    snprintf(path, sizeof path, "%s/badkey", f->dir);
    snprintf(link, sizeof link, "%s/keylink", f->dir);
    struct {
        size_t n;
        mode_t mode;
        const char *why;
    } cases[] = {
        {32, 0640, "chmod 600"}, {32, 0604, "chmod 600"}, {31, 0600, "holds 31 bytes"},
    };
    kvs_engine *e = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_key(path, 0x33, cases[i].n, cases[i].mode);
        kvs_config *c = config_with(f, path);
        assert_int_equal(kvs_engine_open(c, &f->ns, &e), KVS_ERR_CONFIG);
        if (!strstr(kvs_last_error(), cases[i].why) || !strstr(kvs_last_error(), "auth_key_file"))
            fail_msg("case %zu: %s", i, kvs_last_error());
        kvs_config_free(c);
    }
    assert_int_equal(symlink(f->key1, link), 0);
    kvs_config *c = config_with(f, link);
    assert_int_equal(kvs_engine_open(c, &f->ns, &e), KVS_ERR_CONFIG);
    assert_non_null(strstr(kvs_last_error(), "symlink"));
    kvs_config_free(c);
    c = config_with(f, f->dir);
    assert_int_equal(kvs_engine_open(c, &f->ns, &e), KVS_ERR_CONFIG);
    kvs_config_free(c);
    snprintf(path, sizeof path, "%s/missing", f->dir);
    c = config_with(f, path);
    assert_int_equal(kvs_engine_open(c, &f->ns, &e), KVS_ERR_CONFIG);
    kvs_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_and_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unauthenticated_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forgeries_are_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
