/* test_codec_engine.c - compressed chunks (format version 2, docs/codec.md)
 * through the engine on host memory, with real files: codec on stores
 * bf16-like KV (few exponents) compressed and reads it back bit-identical,
 * through the bounce path and KVS_KV_DIRECT; readers take either version
 * whatever their own setting; data that does not compress is stored plain;
 * every damaged compressed file (a frame, the table, stored_bytes, a short
 * file, a frame that verifies but does not decode) is a miss with its reason
 * and is removed, never wrong data; the stored-byte counters. */
#include "test_util.h"

#include "checksum.h"
#include "chunk_file.h"
#include "codec.h"
#include "config.h"
#include "engine.h"
#include "xfer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 8
#define DIM 64
#define CHUNK 32
#define ROW (HEADS * DIM * 2)
#define NTOK 96 /* 3 chunks of 256 KiB: 4 segments (frames) each */
#define NCHUNK (NTOK / CHUNK)

typedef tu_fixture fixture;

static kvs_config *config(const fixture *f, const char *codec)
{
    kvs_config *c = tu_config(f->dir, "32", "2", "negative_cache_ms", "0", "codec", codec, NULL);
    assert_non_null(c);
    return c;
}

static int setup(void **state)
{
    fixture *f = tu_setup(state, "codec");
    f->ns = tu_mha_ns("test/codec", LAYERS, HEADS, DIM);
    return 0;
}

TU_KV_TYPE(kv, LAYERS, NTOK, ROW);

/* bf16 of trained-KV shape: sign and mantissa random, the exponent one of
 * a few values (most near 1.0); `random_bytes`: nothing to compress. */
static void kv_init(kv *b, uint32_t seed, bool random_bytes)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (size_t i = 0; i < sizeof b->mem; i += 2) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(x >> 33);
        uint16_t v;
        if (random_bytes) {
            v = (uint16_t)r;
        } else {
            static const uint8_t exps[8] = {127, 126, 126, 125, 125, 125, 124, 128};
            v = (uint16_t)(((r >> 16) & 1) << 15 | (uint32_t)exps[(r >> 8) & 7] << 7 | (r & 0x7f));
        }
        b->mem[i] = (uint8_t)v;
        b->mem[i + 1] = (uint8_t)(v >> 8);
    }
    tu_kv_contiguous(&b->kv, b->mem, b->layers, LAYERS, 2, NTOK, ROW);
}

static void tokens(uint32_t *t, uint32_t seed)
{
    tu_tokens(t, NTOK, seed);
}

static void store(const fixture *f, const kvs_config *cfg, const uint32_t *t, kv *src,
                  kvs_stats *s)
{
    tu_store_all(cfg, &f->ns, t, NTOK, &src->kv, s);
}

/* Tokens a fresh engine of cfg loads (flags: kvs_kv flags); the bytes it
 * loaded must be want's; *s: its counters. */
static size_t load(const fixture *f, const kvs_config *cfg, const uint32_t *t, const kv *want,
                   uint32_t flags, kvs_stats *s)
{
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(cfg, &f->ns, &e), KVS_OK);
    kv *dst = malloc(sizeof *dst);
    kv_init(dst, 0, true);
    memset(dst->mem, 0xee, sizeof dst->mem);
    dst->kv.flags |= flags;
    size_t n = 99;
    assert_int_equal(kvs_retrieve(e, t, NTOK, &dst->kv, &n), KVS_OK);
    for (int l = 0; l < LAYERS; l++)
        for (int p = 0; p < 2; p++) {
            size_t o = ((size_t)l * 2 + p) * NTOK * ROW;
            assert_memory_equal(dst->mem + o, want->mem + o, n * ROW);
            /* past the prefix: untouched, or verified bytes of a chunk
             * that failed later (as on the plain path); never other data */
            for (size_t k = n * ROW; k < (size_t)NTOK * ROW; k++)
                if (dst->mem[o + k] != 0xee && dst->mem[o + k] != want->mem[o + k])
                    fail_msg("byte %zu of layer %d plane %d is neither untouched nor the "
                             "stored value", k, l, p);
        }
    free(dst);
    kvs_stats st;
    assert_int_equal(kvs_engine_stats(e, &st, sizeof st), KVS_OK);
    if (s)
        *s = st;
    kvs_engine_close(e);
    return n;
}

static uint32_t file_version(const char *path, uint64_t *size)
{
    size_t len = 0;
    uint8_t *b = (uint8_t *)tu_read_file(path, &len);
    assert_non_null(b);
    uint32_t v = (uint32_t)b[8] | (uint32_t)b[9] << 8;
    *size = len;
    free(b);
    return v;
}

static const uint64_t PAYLOAD = (uint64_t)LAYERS * 2 * CHUNK * ROW;

static void test_roundtrip(void **state)
{
    fixture *f = *state;
    kvs_config *on = config(f, "on"), *off = config(f, "off"), *aut = config(f, "auto");
    uint32_t t[NTOK];
    tokens(t, 1);
    kv *src = malloc(sizeof *src);
    kv_init(src, 1, false);
    kvs_stats s;
    store(f, on, t, src, &s);
    assert_int_equal(s.chunks_stored, NCHUNK);
    assert_int_equal(s.chunks_stored_compressed, NCHUNK);
    assert_int_equal(s.bytes_written, NCHUNK * PAYLOAD);
    /* 8 exponents of bf16: about 9.6 of 16 bits a value */
    assert_true(s.stored_bytes_written < s.bytes_written * 3 / 4);
    assert_true(s.stored_bytes_written > s.bytes_written / 2);
    uint64_t files = 0;
    for (int i = 0; i < NCHUNK; i++) {
        char path[4096];
        uint64_t size;
        tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, i, path);
        assert_int_equal(file_version(path, &size), KVS_FORMAT_VERSION_CODEC);
        assert_true(size < kvs__file_bytes(PAYLOAD));
        assert_int_equal(size % 4096, 0);
        files += size;
    }
    assert_true(files >= s.stored_bytes_written + NCHUNK * 8192);

    /* every reader takes it, bit-identical, whatever its setting and path */
    kvs_stats r;
    assert_int_equal(load(f, off, t, src, 0, &r), NTOK);
    assert_int_equal(r.hits_store, NCHUNK);
    assert_int_equal(r.bytes_read, NCHUNK * PAYLOAD);
    assert_int_equal(r.stored_bytes_read, s.stored_bytes_written);
    assert_int_equal(load(f, on, t, src, KVS_KV_DIRECT, &r), NTOK);
    assert_int_equal(r.hits_store, NCHUNK);
    assert_int_equal(load(f, aut, t, src, 0, NULL), NTOK);

    /* a store of the same chunks finds them present (the probe takes a
     * compressed file's size) rather than rewriting them */
    store(f, off, t, src, &s);
    assert_int_equal(s.chunks_store_present, NCHUNK);
    assert_int_equal(s.chunks_stored, 0);
    free(src);
    kvs_config_free(on);
    kvs_config_free(off);
    kvs_config_free(aut);
}

/* A plain (version 1) file read by codec on; host memory under auto and
 * data that does not compress under on are stored plain. */
static void test_plain_files(void **state)
{
    fixture *f = *state;
    kvs_config *on = config(f, "on"), *aut = config(f, "auto");
    uint32_t t[NTOK];
    kv *src = malloc(sizeof *src);
    kv_init(src, 2, false);
    tokens(t, 2);
    kvs_stats s;
    store(f, aut, t, src, &s);
    assert_int_equal(s.chunks_stored_compressed, 0);
    assert_int_equal(s.stored_bytes_written, s.bytes_written);
    char path[4096];
    uint64_t size;
    tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 0, path);
    assert_int_equal(file_version(path, &size), KVS_FORMAT_VERSION);
    assert_int_equal(size, kvs__file_bytes(PAYLOAD));
    assert_int_equal(load(f, on, t, src, 0, NULL), NTOK);

    kv_init(src, 3, true);
    tokens(t, 3);
    store(f, on, t, src, &s);
    assert_int_equal(s.chunks_stored, NCHUNK);
    assert_int_equal(s.chunks_stored_compressed, 0);
    tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 1, path);
    assert_int_equal(file_version(path, &size), KVS_FORMAT_VERSION);
    assert_int_equal(load(f, on, t, src, 0, NULL), NTOK);
    free(src);
    kvs_config_free(on);
    kvs_config_free(aut);
}

enum damage { FRAME, TABLE, STORED_BYTES, SHORT, UNDECODABLE, ODD_TABLE };

static void put64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Re-encodes an edited header with a right checksum. */
static void reseal_header(uint8_t *b, const kvs_chunk_header *h)
{
    kvs__header_encode(h, b);
}

static void damage(const char *path, enum damage d)
{
    size_t len = 0;
    uint8_t *b = (uint8_t *)tu_read_file(path, &len);
    assert_non_null(b);
    kvs_chunk_header h;
    assert_int_equal(kvs__header_decode(b, len, &h), KVS_REJECT_NONE);
    assert_int_equal(h.format_version, KVS_FORMAT_VERSION_CODEC);
    kvs_chunk_frames fr;
    assert_int_equal(kvs__chunk_check_table(&h, b + KVS_FRAME_TABLE_OFFSET, &fr, NULL, 0),
                     KVS_REJECT_NONE);
    uint8_t *frame1 = b + KVS_FRAMES_OFFSET + fr.f[1].off;
    switch (d) {
    case FRAME: frame1[fr.f[1].len / 2] ^= 0x10; break;
    case TABLE: b[KVS_FRAME_TABLE_OFFSET + 8 + 4] ^= 0x10; break;
    case STORED_BYTES:
        h.stored_bytes += 4096;
        reseal_header(b, &h);
        break;
    case SHORT: len -= 4096; break;
    case UNDECODABLE:
        /* a frame whose stored bytes hash to the sum the header gives, but
         * that breaks the format (an unknown mode) */
        frame1[0] = 7;
        h.segment_sums[1] = kvs__checksum(frame1, fr.f[1].len);
        reseal_header(b, &h);
        break;
    case ODD_TABLE: {
        /* a table that matches its sum but whose frame 1 overlaps frame 0 */
        uint8_t *e1 = b + KVS_FRAME_TABLE_OFFSET + 8;
        uint32_t off = fr.f[0].off + 16;
        for (int i = 0; i < 4; i++)
            e1[i] = (uint8_t)(off >> (8 * i));
        h.table_sum = kvs__checksum(b + KVS_FRAME_TABLE_OFFSET, 4096);
        reseal_header(b, &h);
        break;
    }
    }
    (void)put64le;
    unlink(path);
    assert_int_equal(tu_write_file(path, b, len), 0);
    free(b);
}

static void test_damaged_files(void **state)
{
    fixture *f = *state;
    kvs_config *on = config(f, "on");
    kv *src = malloc(sizeof *src);
    kv_init(src, 4, false);
    static const struct {
        enum damage d;
        size_t stat;
    } cases[] = {
        {FRAME, offsetof(kvs_stats, miss_checksum)},
        {TABLE, offsetof(kvs_stats, miss_bad_header)},
        {STORED_BYTES, offsetof(kvs_stats, miss_truncated)},
        {SHORT, offsetof(kvs_stats, miss_truncated)},
        {UNDECODABLE, offsetof(kvs_stats, miss_checksum)},
        {ODD_TABLE, offsetof(kvs_stats, miss_bad_header)},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint32_t t[NTOK];
        tokens(t, 100 + (uint32_t)k);
        store(f, on, t, src, NULL);
        char path[4096];
        tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 1, path);
        damage(path, cases[k].d);
        kvs_stats r;
        /* the first chunk only: the second is a miss, the rest cut */
        assert_int_equal(load(f, on, t, src, 0, &r), CHUNK);
        uint64_t v;
        memcpy(&v, (char *)&r + cases[k].stat, sizeof v);
        if (v != 1)
            fail_msg("damage %zu: the expected reason counted %llu", k, (unsigned long long)v);
        assert_true(r.hits_store >= 1); /* chunk 2 may have arrived before the cut */
        /* removed like any bad file, so the next store rewrites it */
        assert_int_equal(access(path, F_OK), -1);
        store(f, on, t, src, NULL);
        assert_int_equal(load(f, on, t, src, KVS_KV_DIRECT, NULL), NTOK);
    }
    free(src);
    kvs_config_free(on);
}

static uint64_t files_bytes(const fixture *f, const kvs_config *cfg, const uint32_t *t)
{
    uint64_t sum = 0;
    for (int i = 0; i < NCHUNK; i++) {
        char path[4096];
        struct stat sb;
        tu_chunk_path(cfg, &f->ns, t, NTOK, CHUNK, i, path);
        assert_int_equal(stat(path, &sb), 0);
        sum += (uint64_t)sb.st_size;
    }
    return sum;
}

static void bad_file(void *ctx, const char *path, const char *reason)
{
    (void)path;
    char *out = ctx;
    snprintf(out + strlen(out), 4096 - strlen(out), "%s\n", reason);
}

/* What operators see: ls and du give stored (file) and logical (KV) bytes;
 * the capacity limit counts stored bytes; verify judges compressed files by
 * the readers' rules, every frame decoded. */
static void test_operator_view(void **state)
{
    fixture *f = *state;
    kvs_config *on = config(f, "on"), *off = config(f, "off");
    kv *src = malloc(sizeof *src);
    kv_init(src, 5, false);
    uint32_t t[NTOK], t2[NTOK];
    tokens(t, 5);
    tokens(t2, 6);
    store(f, on, t, src, NULL);
    uint64_t stored = files_bytes(f, on, t);
    assert_true(stored < NCHUNK * PAYLOAD * 3 / 4);

    kvs_admin *a;
    assert_int_equal(kvs_admin_open(on, &a), KVS_OK);
    kvs_ns_usage *list = NULL;
    size_t n = 0;
    assert_int_equal(kvs_admin_list(a, &list, &n), KVS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(list[0].chunks, NCHUNK);
    assert_int_equal(list[0].bytes, stored);
    assert_int_equal(list[0].logical_bytes, NCHUNK * PAYLOAD);
    assert_int_equal(list[0].compressed_chunks, NCHUNK);
    kvs_free(list);
    kvs_usage u;
    assert_int_equal(kvs_admin_usage(a, 1, &u), KVS_OK);
    assert_int_equal(u.used_bytes, stored);
    assert_int_equal(u.logical_bytes, NCHUNK * PAYLOAD);
    assert_int_equal(u.compressed_chunks, NCHUNK);

    /* verify: good compressed files pass, every frame decoded */
    char why[4096] = "";
    kvs_verify_options vo = {.bad_file = bad_file, .ctx = why};
    kvs_verify_report vr;
    assert_int_equal(kvs_admin_verify(a, &vo, &vr), KVS_OK);
    assert_int_equal(vr.files, NCHUNK);
    assert_int_equal(vr.ok, NCHUNK);
    assert_true(vr.bytes >= stored - NCHUNK * 4096);
    kvs_admin_close(a);

    /* plain chunks beside them: logical from the size, no header read */
    store(f, off, t2, src, NULL);
    uint64_t plain = files_bytes(f, off, t2);
    assert_int_equal(plain, NCHUNK * kvs__file_bytes(PAYLOAD));
    assert_int_equal(kvs_admin_open(on, &a), KVS_OK);
    assert_int_equal(kvs_admin_usage(a, 1, &u), KVS_OK);
    assert_int_equal(u.used_bytes, stored + plain);
    assert_int_equal(u.logical_bytes, 2 * NCHUNK * PAYLOAD);
    assert_int_equal(u.compressed_chunks, NCHUNK);
    kvs_admin_close(a);

    /* a damaged frame, a frame that verifies but does not decode, a table
     * that does not match its sum: bad, each with what is wrong */
    char path[4096];
    tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 0, path);
    damage(path, FRAME);
    tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 1, path);
    damage(path, UNDECODABLE);
    tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 2, path);
    damage(path, TABLE);
    assert_int_equal(kvs_admin_open(on, &a), KVS_OK);
    why[0] = '\0';
    assert_int_equal(kvs_admin_verify(a, &vo, &vr), KVS_OK);
    assert_int_equal(vr.files, 2 * NCHUNK);
    assert_int_equal(vr.ok, NCHUNK);
    assert_int_equal(vr.bad, NCHUNK);
    if (!strstr(why, "checksum mismatch (frame 1 at stored byte ") ||
        !strstr(why, "frame 1 does not decode") ||
        !strstr(why, "bad header (frame table: the frame table does not match its sum"))
        fail_msg("verify said:\n%s", why);
    kvs_admin_close(a);
    free(src);
    kvs_config_free(on);
    kvs_config_free(off);
}

/* The capacity limit counts what the files take: compressed chunks whose
 * logical bytes are above the high watermark but whose files are below it
 * are not evicted. */
static void test_capacity_counts_stored(void **state)
{
    fixture *f = *state;
    kvs_config *on = config(f, "on");
    kv *src = malloc(sizeof *src);
    kv_init(src, 7, false);
    uint32_t t[NTOK];
    tokens(t, 7);
    store(f, on, t, src, NULL);
    uint64_t stored = files_bytes(f, on, t), logical = NCHUNK * kvs__file_bytes(PAYLOAD);
    assert_true(stored * 5 < logical * 4);
    /* high watermark (0.9 of the limit) halfway between the two */
    char max[64];
    snprintf(max, sizeof max, "%.9f", (double)(stored + logical) / 2 / 0.9 / 1e9);
    assert_int_equal(kvs_config_set(on, "max_store_size", max), KVS_OK);
    kvs_admin *a;
    assert_int_equal(kvs_admin_open(on, &a), KVS_OK);
    kvs_gc_options go = {0};
    kvs_gc_report gr;
    assert_int_equal(kvs_admin_gc(a, &go, &gr), KVS_OK);
    assert_int_equal(gr.used_before, stored);
    assert_int_equal(gr.files_removed, 0);
    kvs_admin_close(a);
    /* the same KV stored plain is above the watermark: the collection evicts */
    kvs_config *off = config(f, "off");
    uint32_t t2[NTOK];
    tokens(t2, 8);
    /* stored before the limit is set: an engine over its watermark may drop
     * stores, and whether it does depends on when its collector runs */
    store(f, off, t2, src, NULL);
    assert_int_equal(kvs_config_set(off, "max_store_size", max), KVS_OK);
    assert_int_equal(kvs_admin_open(off, &a), KVS_OK);
    assert_int_equal(kvs_admin_gc(a, &go, &gr), KVS_OK);
    assert_true(gr.files_removed > 0);
    kvs_admin_close(a);
    free(src);
    kvs_config_free(on);
    kvs_config_free(off);
}

/* Which stores compress, as the device path asks (xfer.h): auto on GPU
 * memory only, on on both, off never, and never with auth_key_file. */
static void test_compress_rule(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *codec;
        bool key, host, device;
    } rule[] = {
        {"auto", false, false, true}, {"on", false, true, true},  {"off", false, false, false},
        {"auto", true, false, false}, {"off", true, false, false},
    };
    char key[4200];
    snprintf(key, sizeof key, "%s/key", f->dir);
    int fd = open(key, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "0123456789abcdef0123456789abcdef", 32), 32);
    close(fd);
    for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++) {
        kvs_config *c = config(f, rule[i].codec);
        if (rule[i].key)
            assert_int_equal(kvs_config_set(c, "auth_key_file", key), KVS_OK);
        kvs_engine *e;
        assert_int_equal(kvs_engine_open(c, &f->ns, &e), KVS_OK);
        assert_int_equal(kvs__xfer_compress(e, false), rule[i].host);
        assert_int_equal(kvs__xfer_compress(e, true), rule[i].device);
        kvs_engine_close(e);
        kvs_config_free(c);
    }
    /* a reader with a key: a compressed file is unauthenticated, removed */
    kvs_config *on = config(f, "on"), *keyed = config(f, "auto");
    assert_int_equal(kvs_config_set(keyed, "auth_key_file", key), KVS_OK);
    kv *src = malloc(sizeof *src);
    kv_init(src, 9, false);
    uint32_t t[NTOK];
    tokens(t, 9);
    store(f, on, t, src, NULL);
    kvs_stats r;
    assert_int_equal(load(f, keyed, t, src, 0, &r), 0);
    assert_true(r.miss_unauthenticated >= 1); /* later chunks may be read before the cut */
    char path[4096];
    tu_chunk_path(on, &f->ns, t, NTOK, CHUNK, 0, path);
    assert_int_equal(access(path, F_OK), -1);
    free(src);
    kvs_config_free(on);
    kvs_config_free(keyed);
}

/* codec on with the CPU tier: the tier's copy (filled while encoding) holds
 * the logical bytes, and a hit from it is bit-identical. */
static void test_cpu_tier_holds_logical(void **state)
{
    fixture *f = *state;
    kvs_config *on = config(f, "on");
    assert_int_equal(kvs_config_set(on, "local_cpu", "true"), KVS_OK);
    assert_int_equal(kvs_config_set(on, "max_local_cpu_size", "0.1"), KVS_OK);
    kv *src = malloc(sizeof *src), *dst = malloc(sizeof *dst);
    kv_init(src, 11, false);
    uint32_t t[NTOK];
    tokens(t, 11);
    kvs_engine *e;
    assert_int_equal(kvs_engine_open(on, &f->ns, &e), KVS_OK);
    kvs_op_result r;
    tu_store_wait(e, t, NTOK, &src->kv, &r);
    assert_int_equal(r.tokens, NTOK);
    kv_init(dst, 0, true);
    memset(dst->mem, 0xee, sizeof dst->mem);
    size_t n = 0;
    assert_int_equal(kvs_retrieve(e, t, NTOK, &dst->kv, &n), KVS_OK);
    assert_int_equal(n, NTOK);
    assert_memory_equal(dst->mem, src->mem, sizeof src->mem);
    kvs_stats s;
    assert_int_equal(kvs_engine_stats(e, &s, sizeof s), KVS_OK);
    assert_int_equal(s.chunks_stored_compressed, NCHUNK);
    assert_int_equal(s.hits_cpu, NCHUNK);
    kvs_engine_close(e);
    free(src);
    free(dst);
    kvs_config_free(on);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_compress_rule, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_plain_files, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_cpu_tier_holds_logical, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_files, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_operator_view, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_capacity_counts_stored, setup, tu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
