/*
 * chunk_file.c - encoding and validation of chunk file headers.
 *
 * Layout of the 4096-byte header (all integers little-endian):
 *
 *     0  magic "KVSTASH\0"          8    168  writer_pid u32
 *     8  format_version u32         4    172  writer_host char[32]
 *    12  header_bytes u32 (4096)    4    204  model char[128]
 *    16  header_checksum u64        8    332  auth_algo u32 (0: none)
 *                                       336  auth_tag [32]
 *                                       368  codec u32 (v2; 0 in v1)
 *                                       372  reserved u32 (0)
 *                                       376  stored_bytes u64 (v2)
 *                                       384  table_sum u64 (v2)
 *                                       392  reserved (zero) up to 512
 *    24  namespace_id [32]         32    512  segment checksums u64[count]
 *    56  key [32]                  32         then zeros to 4096
 *    88  tokens u32, chunk_size u32
 *    96  payload_bytes u64, payload_offset u64 (4096)
 *   112  num_layers, num_planes, row_bytes, dtype, layout, num_kv_heads,
 *        head_dim, world_size, rank, segment_bytes, segment_count,
 *        checksum_algo (u32 each, to 160)
 *   160  created_ns u64
 *
 * The header checksum is XXH3-64 of the 4096 bytes with its own field zero.
 * A reader trusts nothing: kvs__header_decode() checks the header alone,
 * kvs__header_matches() checks it against the request, and the payload is
 * only served once every segment checksum verifies (engine.c).  Fields are
 * encoded one by one rather than by casting a struct, so the format does not
 * depend on the compiler's padding or the host's byte order.
 */
#include "chunk_file.h"

#include "checksum.h"
#include "codec_fmt.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define AUTH_ALGO_OFF 332
#define AUTH_TAG_OFF 336
#define CODEC_OFF 368
#define CODEC_RESERVED_OFF 372
#define STORED_BYTES_OFF 376
#define TABLE_SUM_OFF 384
#define RESERVED_END 512

_Static_assert(KVS_MAX_SEGMENTS <= KVS_CODEC_TABLE_ENTRIES, "a frame per segment in the table");
_Static_assert(KVS_FRAME_TABLE_OFFSET == KVS_CODEC_TABLE_OFFSET &&
               KVS_FRAMES_OFFSET == KVS_CODEC_FRAMES_OFFSET, "one layout");

const char *kvs__reject_name(kvs_reject r)
{
    switch (r) {
    case KVS_REJECT_NONE: return "ok";
    case KVS_REJECT_BAD_HEADER: return "bad header";
    case KVS_REJECT_VERSION: return "other format version";
    case KVS_REJECT_FOREIGN: return "foreign namespace or key";
    case KVS_REJECT_TRUNCATED: return "truncated";
    case KVS_REJECT_CHECKSUM: return "checksum mismatch";
    case KVS_REJECT_AUTH: return "not authenticated under this key";
    }
    return "?";
}

uint32_t kvs__segment_bytes(uint64_t payload)
{
    uint64_t padded = kvs__padded_payload(payload);
    uint64_t seg = KVS_MIN_SEGMENT_BYTES;
    while ((padded + seg - 1) / seg > KVS_MAX_SEGMENTS)
        seg *= 2;
    return (uint32_t)seg;
}

uint32_t kvs__segment_count(uint64_t payload, uint32_t segment_bytes)
{
    uint64_t padded = kvs__padded_payload(payload);
    return (uint32_t)((padded + segment_bytes - 1) / segment_bytes);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void copy_padded(char *dst, size_t cap, const char *src)
{
    memset(dst, 0, cap);
    if (src)
        memcpy(dst, src, strnlen(src, cap - 1));
}

void kvs__header_init(kvs_chunk_header *h, const kvs_ns *ns, const uint8_t key[KVS_KEY_BYTES],
                      uint32_t tokens)
{
    memset(h, 0, sizeof *h);
    h->format_version = KVS_FORMAT_VERSION;
    memcpy(h->namespace_id, ns->id, 32);
    memcpy(h->key, key, KVS_KEY_BYTES);
    h->tokens = tokens;
    h->chunk_size = ns->chunk_size;
    h->payload_bytes = kvs__ns_payload_bytes(ns, tokens);
    h->num_layers = ns->num_layers;
    h->num_planes = ns->num_planes;
    h->row_bytes = ns->row_bytes;
    h->dtype = (uint32_t)ns->dtype;
    h->layout = (uint32_t)ns->layout;
    h->num_kv_heads = ns->num_kv_heads;
    h->head_dim = ns->head_dim;
    h->world_size = ns->world_size;
    h->rank = ns->rank;
    h->segment_bytes = kvs__segment_bytes(h->payload_bytes);
    h->segment_count = kvs__segment_count(h->payload_bytes, h->segment_bytes);
    h->checksum_algo = KVS_CHECKSUM_XXH3_64;
    h->created_ns = kvs__wall_ns();
    h->writer_pid = (uint32_t)getpid();
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    copy_padded(h->writer_host, sizeof h->writer_host, host);
    copy_padded(h->model, sizeof h->model, ns->model);
}

void kvs__header_encode(const kvs_chunk_header *h, uint8_t *out)
{
    memset(out, 0, KVS_HEADER_BYTES);
    memcpy(out, KVS_MAGIC, 8);
    put32(out + 8, h->format_version);
    put32(out + 12, KVS_HEADER_BYTES);
    memcpy(out + 24, h->namespace_id, 32);
    memcpy(out + 56, h->key, 32);
    put32(out + 88, h->tokens);
    put32(out + 92, h->chunk_size);
    put64(out + 96, h->payload_bytes);
    put64(out + 104, KVS_PAYLOAD_OFFSET);
    const uint32_t fields[] = {h->num_layers, h->num_planes,    h->row_bytes,    h->dtype,
                               h->layout,     h->num_kv_heads,  h->head_dim,     h->world_size,
                               h->rank,       h->segment_bytes, h->segment_count, h->checksum_algo};
    for (size_t i = 0; i < KVS_ARRAY_LEN(fields); i++)
        put32(out + 112 + 4 * i, fields[i]);
    put64(out + 160, h->created_ns);
    put32(out + 168, h->writer_pid);
    memcpy(out + 172, h->writer_host, 32);
    memcpy(out + 204, h->model, 128);
    put32(out + AUTH_ALGO_OFF, h->auth_algo);
    memcpy(out + AUTH_TAG_OFF, h->auth_tag, KVS_AUTH_TAG_BYTES);
    put32(out + CODEC_OFF, h->codec);
    put64(out + STORED_BYTES_OFF, h->stored_bytes);
    put64(out + TABLE_SUM_OFF, h->table_sum);
    uint32_t n = KVS_MIN(h->segment_count, KVS_MAX_SEGMENTS);
    for (uint32_t i = 0; i < n; i++)
        put64(out + KVS_SEGMENT_TABLE_OFFSET + 8 * i, h->segment_sums[i]);
    put64(out + 16, kvs__checksum(out, KVS_HEADER_BYTES));
}

kvs_reject kvs__header_decode(const uint8_t *in, size_t len, kvs_chunk_header *h)
{
    if (len < KVS_HEADER_BYTES || memcmp(in, KVS_MAGIC, 8) != 0)
        return KVS_REJECT_BAD_HEADER;
    uint32_t version = get32(in + 8);
    if (version != KVS_FORMAT_VERSION && version != KVS_FORMAT_VERSION_CODEC)
        return KVS_REJECT_VERSION;
    if (get32(in + 12) != KVS_HEADER_BYTES || get64(in + 104) != KVS_PAYLOAD_OFFSET)
        return KVS_REJECT_BAD_HEADER;

    /* The checksum covers the header with its own field zero.  Copy once so
     * the caller's buffer stays untouched. */
    uint8_t tmp[KVS_HEADER_BYTES];
    memcpy(tmp, in, KVS_HEADER_BYTES);
    memset(tmp + 16, 0, 8);
    if (kvs__checksum(tmp, KVS_HEADER_BYTES) != get64(in + 16))
        return KVS_REJECT_BAD_HEADER;

    memset(h, 0, sizeof *h);
    h->format_version = version;
    memcpy(h->namespace_id, in + 24, 32);
    memcpy(h->key, in + 56, 32);
    h->tokens = get32(in + 88);
    h->chunk_size = get32(in + 92);
    h->payload_bytes = get64(in + 96);
    uint32_t *fields[] = {&h->num_layers, &h->num_planes,    &h->row_bytes,    &h->dtype,
                          &h->layout,     &h->num_kv_heads,  &h->head_dim,     &h->world_size,
                          &h->rank,       &h->segment_bytes, &h->segment_count, &h->checksum_algo};
    for (size_t i = 0; i < KVS_ARRAY_LEN(fields); i++)
        *fields[i] = get32(in + 112 + 4 * i);
    h->created_ns = get64(in + 160);
    h->writer_pid = get32(in + 168);
    memcpy(h->writer_host, in + 172, 32);
    h->writer_host[31] = '\0';
    memcpy(h->model, in + 204, 128);
    h->model[127] = '\0';
    h->auth_algo = get32(in + AUTH_ALGO_OFF);
    memcpy(h->auth_tag, in + AUTH_TAG_OFF, KVS_AUTH_TAG_BYTES);
    h->codec = get32(in + CODEC_OFF);
    h->stored_bytes = get64(in + STORED_BYTES_OFF);
    h->table_sum = get64(in + TABLE_SUM_OFF);
    for (size_t i = CODEC_RESERVED_OFF; i < STORED_BYTES_OFF; i++)
        if (in[i])
            return KVS_REJECT_BAD_HEADER;
    for (size_t i = TABLE_SUM_OFF + 8; i < RESERVED_END; i++)
        if (in[i])
            return KVS_REJECT_BAD_HEADER;

    /* The header must describe itself consistently before anything in it is
     * used to size a read. */
    if (h->row_bytes > (1u << 30) || h->num_layers > 4096 || h->tokens > (1u << 20))
        return KVS_REJECT_BAD_HEADER;
    uint64_t expect = (uint64_t)h->num_layers * h->num_planes * h->tokens * h->row_bytes;
    if (expect > KVS_MAX_PAYLOAD_BYTES || h->checksum_algo != KVS_CHECKSUM_XXH3_64 || h->tokens == 0 || h->num_layers == 0 ||
        h->row_bytes == 0 || (h->num_planes != 1 && h->num_planes != 2) ||
        h->payload_bytes != expect ||
        h->segment_bytes != kvs__segment_bytes(h->payload_bytes) ||
        h->segment_count != kvs__segment_count(h->payload_bytes, h->segment_bytes))
        return KVS_REJECT_BAD_HEADER;
    if (version == KVS_FORMAT_VERSION) {
        if (h->codec != KVS_CODEC_NONE || h->stored_bytes || h->table_sum)
            return KVS_REJECT_BAD_HEADER;
    } else {
        /* Compressed: one codec, never authenticated (docs/codec.md), an
         * element size the codec knows, and a frame area that can hold the
         * frames: at least the smallest frame each, at most the largest the
         * encoder makes each plus a block's alignment gap. */
        size_t elem = kvs_dtype_size((kvs_dtype)h->dtype);
        uint64_t most = (uint64_t)h->segment_count *
                        (kvs__codec_frame_bound(h->segment_bytes, (uint32_t)elem) +
                         KVS_FILE_ALIGN);
        if (h->codec != KVS_CODEC_EXP_HUFF || h->auth_algo != KVS_AUTH_NONE ||
            !kvs__codec_elem_ok((uint32_t)elem) || h->row_bytes % elem ||
            h->stored_bytes < (uint64_t)h->segment_count * KVS_CODEC_MIN_FRAME ||
            h->stored_bytes > most)
            return KVS_REJECT_BAD_HEADER;
    }
    for (uint32_t i = 0; i < h->segment_count; i++)
        h->segment_sums[i] = get64(in + KVS_SEGMENT_TABLE_OFFSET + 8 * i);
    return KVS_REJECT_NONE;
}

kvs_reject kvs__header_matches(const kvs_chunk_header *h, const kvs_ns *ns,
                               const uint8_t key[KVS_KEY_BYTES], uint32_t tokens)
{
    if (memcmp(h->namespace_id, ns->id, 32) != 0 || memcmp(h->key, key, KVS_KEY_BYTES) != 0)
        return KVS_REJECT_FOREIGN;
    if (h->tokens != tokens || h->chunk_size != ns->chunk_size ||
        h->num_layers != ns->num_layers || h->num_planes != ns->num_planes ||
        h->row_bytes != ns->row_bytes || h->dtype != (uint32_t)ns->dtype ||
        h->layout != (uint32_t)ns->layout || h->num_kv_heads != ns->num_kv_heads ||
        h->head_dim != ns->head_dim || h->world_size != ns->world_size || h->rank != ns->rank)
        return KVS_REJECT_FOREIGN;
    return KVS_REJECT_NONE;
}

bool kvs__header_peek(const uint8_t *in, uint32_t *version, uint64_t *payload)
{
    if (memcmp(in, KVS_MAGIC, 8) != 0)
        return false;
    *version = get32(in + 8);
    *payload = get64(in + 96);
    return true;
}

kvs_reject kvs__chunk_check_header(const uint8_t *raw, uint64_t file_size,
                                   const kvs_chunk_want *want, kvs_chunk_header *h)
{
    kvs_reject r = kvs__header_decode(raw, KVS_HEADER_BYTES, h);
    if (r != KVS_REJECT_NONE)
        return r;
    if (want->ns)
        r = kvs__header_matches(h, want->ns, want->key, want->tokens);
    else if (memcmp(h->key, want->key, KVS_KEY_BYTES) != 0 ||
             memcmp(h->namespace_id, want->ns_id, KVS_MIN(want->ns_id_len, (size_t)32)) != 0)
        r = KVS_REJECT_FOREIGN;
    if (r != KVS_REJECT_NONE)
        return r;
    if (file_size != kvs__chunk_file_bytes(h))
        return KVS_REJECT_TRUNCATED;
    return KVS_REJECT_NONE;
}

kvs_reject kvs__chunk_check_table(const kvs_chunk_header *h, const uint8_t *block,
                                  kvs_chunk_frames *f, char *why, size_t why_len)
{
    char scratch[8];
    if (!why) {
        why = scratch;
        why_len = sizeof scratch;
    }
    if (h->format_version != KVS_FORMAT_VERSION_CODEC || h->segment_count > KVS_MAX_SEGMENTS) {
        snprintf(why, why_len, "not a compressed chunk");
        return KVS_REJECT_BAD_HEADER;
    }
    if (kvs__checksum(block, KVS_CODEC_TABLE_BYTES) != h->table_sum) {
        snprintf(why, why_len, "the frame table does not match its sum in the header");
        return KVS_REJECT_BAD_HEADER;
    }
    if (kvs__codec_table_parse(block, h->stored_bytes, h->segment_count, h->payload_bytes,
                               h->segment_bytes, f->f, why, why_len) != 0)
        return KVS_REJECT_BAD_HEADER;
    return KVS_REJECT_NONE;
}

uint64_t kvs__chunk_encode_table(const kvs_chunk_header *h, const kvs_chunk_frames *f,
                                 uint8_t *block)
{
    memset(block, 0, KVS_CODEC_TABLE_BYTES);
    uint32_t n = KVS_MIN(h->segment_count, KVS_MAX_SEGMENTS);
    for (uint32_t i = 0; i < n; i++) {
        put32(block + 8 * i, f->f[i].off);
        put32(block + 8 * i + 4, f->f[i].len);
    }
    return kvs__checksum(block, KVS_CODEC_TABLE_BYTES);
}

void kvs__header_set_codec(kvs_chunk_header *h, uint64_t stored_bytes, uint64_t table_sum)
{
    h->format_version = KVS_FORMAT_VERSION_CODEC;
    h->codec = KVS_CODEC_EXP_HUFF;
    h->stored_bytes = stored_bytes;
    h->table_sum = table_sum;
}

int kvs__chunk_mac(const uint8_t *key, size_t key_len, uint8_t *in, uint32_t segment_count,
                   uint8_t tag_out[KVS_AUTH_TAG_BYTES])
{
    memset(in + 16, 0, 8);
    memset(in + AUTH_TAG_OFF, 0, KVS_AUTH_TAG_BYTES);
    unsigned int n = 0;
    size_t len = KVS_HEADER_BYTES + (size_t)segment_count * SHA256_DIGEST_LENGTH;
    if (!HMAC(EVP_sha256(), key, (int)key_len, in, len, tag_out, &n) ||
        n != KVS_AUTH_TAG_BYTES)
        return -1;
    return 0;
}

void kvs__header_set_tag(uint8_t *hdr, const uint8_t tag[KVS_AUTH_TAG_BYTES])
{
    memcpy(hdr + AUTH_TAG_OFF, tag, KVS_AUTH_TAG_BYTES);
    memset(hdr + 16, 0, 8);
    put64(hdr + 16, kvs__checksum(hdr, KVS_HEADER_BYTES));
}

void kvs__segment_sha256(const void *data, size_t len, uint8_t *digest_out)
{
    SHA256(data, len, digest_out);
}
