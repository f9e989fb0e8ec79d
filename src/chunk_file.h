/*
 * chunk_file.h - the on-disk format of one chunk.
 *
 *   [0, 4096)            header (little-endian fields, see chunk_file.c)
 *   [4096, 4096 + P)     payload, layer-major: [layer][plane][token][row]
 *   up to 4096 + pad(P)  zeros, so the file length is a multiple of 4096
 *
 * The payload is checksummed in fixed-size segments of the padded payload
 * (XXH3-64 each), so threads and GPU blocks can verify parts in parallel;
 * the header carries those checksums and a checksum of itself.
 *
 * Authenticated chunks (auth_key_file) add a tag to the header:
 *
 *   tag = HMAC-SHA256(key, header with checksum and tag zero
 *                          || SHA-256(piece 0) || ... || SHA-256(piece n-1))
 *
 * where the pieces are the padded payload cut in KVS_AUTH_SEGMENT_BYTES
 * (16 KiB; the last may be shorter).  The digests are plain SHA-256, so I/O
 * threads or a GPU kernel (one thread per piece) compute them in parallel
 * next to the data; only the short HMAC needs the key.  Small pieces give a
 * GPU enough threads; a checksum segment (64 KiB or more, a power of two)
 * always holds whole pieces.  Readers without a key ignore the tag.
 *
 * Compressed chunks (format_version 2, docs/codec.md, CODEC.md):
 *
 *   [0, 4096)            header; codec, stored_bytes and table_sum set
 *   [4096, 8192)         frame table: {u32 off, u32 len} per segment, rest 0
 *   [8192, 8192 + S)     frame area (S = stored_bytes): frame i, at 8192 +
 *                        off[i], decodes to payload bytes [i*seg, (i+1)*seg)
 *   up to 8192 + pad(S)  zeros
 *
 * payload_bytes, segment_bytes and segment_count keep their meaning (the
 * logical payload), and segment_sums[i] is the XXH3-64 of frame i's stored
 * bytes.  Plain chunks stay format_version 1; readers take both.  The
 * namespace id does not change (a compressed and a plain file of one chunk
 * are the same KV), nor does KVS_FORMAT_VERSION, which names the namespace
 * scheme.
 */
#ifndef KVS_CHUNK_FILE_H
#define KVS_CHUNK_FILE_H

#include "checksum.h"
#include "codec.h"
#include "key.h"

#define KVS_HEADER_BYTES 4096u
#define KVS_PAYLOAD_OFFSET 4096u
#define KVS_MAGIC "KVSTASH\0"
#define KVS_SEGMENT_TABLE_OFFSET 512u
#define KVS_MAX_SEGMENTS ((KVS_HEADER_BYTES - KVS_SEGMENT_TABLE_OFFSET) / 8u) /* 448 */
#define KVS_MIN_SEGMENT_BYTES (64u * 1024u)
#define KVS_FILE_ALIGN 4096u
/* Largest payload of one chunk file (64 GiB): keeps every size in range. */
#define KVS_MAX_PAYLOAD_BYTES (64ull << 30)
#define KVS_AUTH_NONE 0u
#define KVS_AUTH_HMAC_SHA256 1u     /* the tag above */
#define KVS_AUTH_TAG_BYTES 32u
#define KVS_AUTH_KEY_MIN 32u
#define KVS_AUTH_KEY_MAX 4096u
#define KVS_AUTH_SEGMENT_BYTES (16u * 1024u)
/* format_version of a compressed chunk (plain ones: KVS_FORMAT_VERSION) */
#define KVS_FORMAT_VERSION_CODEC 2u
#define KVS_FRAME_TABLE_OFFSET 4096u
#define KVS_FRAME_TABLE_BYTES 4096u
#define KVS_FRAMES_OFFSET 8192u

/* The decoded header. */
typedef struct kvs_chunk_header {
    uint32_t format_version;
    uint8_t namespace_id[32];
    uint8_t key[KVS_KEY_BYTES];
    uint32_t tokens;          /* tokens in this chunk (chunk_size when full) */
    uint32_t chunk_size;
    uint64_t payload_bytes;
    uint32_t num_layers;
    uint32_t num_planes;
    uint32_t row_bytes;
    uint32_t dtype;
    uint32_t layout;
    uint32_t num_kv_heads;
    uint32_t head_dim;
    uint32_t world_size;
    uint32_t rank;
    uint32_t segment_bytes;
    uint32_t segment_count;
    uint32_t checksum_algo;
    uint64_t created_ns;      /* wall clock of the writer */
    uint32_t writer_pid;
    char writer_host[32];     /* NUL-padded, informative */
    char model[128];          /* NUL-padded, informative (truncated) */
    uint32_t auth_algo;       /* KVS_AUTH_*; 0 in files of older writers */
    uint8_t auth_tag[KVS_AUTH_TAG_BYTES];
    /* format_version 2 only (0 in version 1) */
    uint32_t codec;           /* KVS_CODEC_EXP_HUFF */
    uint64_t stored_bytes;    /* bytes of the frame area, not padded */
    uint64_t table_sum;       /* XXH3-64 of the 4096-byte frame table block */
    uint64_t segment_sums[KVS_MAX_SEGMENTS]; /* v2: of each stored frame */
} kvs_chunk_header;

/* The frame table of a compressed chunk: frame i's stored bytes are at file
 * offset KVS_FRAMES_OFFSET + f[i].off, f[i].len of them (codec.h). */
typedef struct kvs_chunk_frames {
    kvs_codec_frame f[KVS_MAX_SEGMENTS];
} kvs_chunk_frames;

/* Why a file is not served (each maps to a miss counter). */
typedef enum kvs_reject {
    KVS_REJECT_NONE = 0,
    KVS_REJECT_BAD_HEADER,   /* magic, size, checksum or a field is wrong */
    KVS_REJECT_VERSION,      /* another format version */
    KVS_REJECT_FOREIGN,      /* another namespace, key or geometry */
    KVS_REJECT_TRUNCATED,    /* file length does not match the header */
    KVS_REJECT_CHECKSUM,     /* a payload segment does not verify */
    KVS_REJECT_AUTH,         /* auth on: no tag, or a tag that does not verify */
} kvs_reject;

const char *kvs__reject_name(kvs_reject r);

/* Payload rounded up to the file alignment. */
static inline uint64_t kvs__padded_payload(uint64_t payload)
{
    return KVS_ALIGN_UP(payload, (uint64_t)KVS_FILE_ALIGN);
}

static inline uint64_t kvs__file_bytes(uint64_t payload)
{
    return KVS_PAYLOAD_OFFSET + kvs__padded_payload(payload);
}

/* The length of a compressed file whose frame area is stored bytes. */
static inline uint64_t kvs__file_bytes_codec(uint64_t stored)
{
    return KVS_FRAMES_OFFSET + KVS_ALIGN_UP(stored, (uint64_t)KVS_FILE_ALIGN);
}

/* The file length a decoded header says (either version). */
static inline uint64_t kvs__chunk_file_bytes(const kvs_chunk_header *h)
{
    return h->codec ? kvs__file_bytes_codec(h->stored_bytes) : kvs__file_bytes(h->payload_bytes);
}

/* Whether a file of `size` bytes can be a chunk of `payload` logical bytes,
 * plain or compressed: the cheap test of a probe (metadata only), before any
 * header is read.  A compressed file is never longer than a plain one (the
 * writer's rule), and holds at least one 4096-byte block of frames. */
static inline bool kvs__chunk_size_plausible(uint64_t payload, uint64_t size)
{
    return size == kvs__file_bytes(payload) ||
           (size % KVS_FILE_ALIGN == 0 && size >= KVS_FRAMES_OFFSET + KVS_FILE_ALIGN &&
            size < kvs__file_bytes(payload));
}

/* Logical payload bytes of segment (frame) i. */
static inline uint32_t kvs__frame_nbytes(const kvs_chunk_header *h, uint32_t i)
{
    return kvs__codec_frame_nbytes(h->payload_bytes, h->segment_bytes, i);
}

/* The stored range [*lo, *hi) (relative to KVS_FRAMES_OFFSET) of frames
 * [first, first + n), n >= 1: from the first one's start to the last one's
 * end (frames are in order; gaps between them are read too). */
static inline void kvs__frames_range(const kvs_chunk_frames *f, uint32_t first, uint32_t n,
                                     uint64_t *lo, uint64_t *hi)
{
    kvs__codec_frame_range(f->f, first, n, lo, hi);
}

/* A compressed chunk's frame table: checks the 4096-byte block at `block`
 * against h (decoded, version 2): its sum (table_sum), then every entry by
 * kvs__codec_table_parse (offsets multiples of 16 in increasing order
 * without overlap, lengths of at least 256, multiples of 16 and at most
 * what the encoder can produce for the frame's logical bytes, everything
 * inside stored_bytes, the entries past segment_count zero).  Fills *f;
 * why (may be NULL) receives what is wrong.  KVS_REJECT_NONE or
 * KVS_REJECT_BAD_HEADER. */
kvs_reject kvs__chunk_check_table(const kvs_chunk_header *h, const uint8_t *block,
                                  kvs_chunk_frames *f, char *why, size_t why_len);

/* Encodes f's first h->segment_count entries into block[4096]; returns the
 * block's sum (for h->table_sum). */
uint64_t kvs__chunk_encode_table(const kvs_chunk_header *h, const kvs_chunk_frames *f,
                                 uint8_t *block);

/* Turns an initialized header (kvs__header_init) into a compressed chunk's:
 * version 2, codec, stored_bytes; table_sum from kvs__chunk_encode_table. */
void kvs__header_set_codec(kvs_chunk_header *h, uint64_t stored_bytes, uint64_t table_sum);

/* The segment size for a payload: 64 KiB doubled until at most
 * KVS_MAX_SEGMENTS segments cover the padded payload. */
uint32_t kvs__segment_bytes(uint64_t payload);
uint32_t kvs__segment_count(uint64_t payload, uint32_t segment_bytes);

/* Fills everything but the segment sums from the namespace and key. */
void kvs__header_init(kvs_chunk_header *h, const kvs_ns *ns, const uint8_t key[KVS_KEY_BYTES],
                      uint32_t tokens);

/* Encodes h into out[KVS_HEADER_BYTES], checksum included. */
void kvs__header_encode(const kvs_chunk_header *h, uint8_t *out);

/* Decodes and checks a header's own consistency (magic, version, header
 * checksum, field bounds) without knowing what was asked for. */
kvs_reject kvs__header_decode(const uint8_t *in, size_t len, kvs_chunk_header *h);

/* The format version and payload_bytes of the header at in (its first 104
 * bytes), nothing else checked: for tallies that open every file (kvstash
 * ls, du).  false when the magic is not there. */
bool kvs__header_peek(const uint8_t *in, uint32_t *version, uint64_t *payload);

/* Checks a decoded header against what a reader asked for. */
kvs_reject kvs__header_matches(const kvs_chunk_header *h, const kvs_ns *ns,
                               const uint8_t key[KVS_KEY_BYTES], uint32_t tokens);

/* ---- the rules for a valid chunk file --------------------------------------
 *
 * Written here once; a reader (engine.c and the transfer implementations)
 * and kvs_admin_verify judge every file by them, so verify can never call
 * a file good that a reader refuses, or the other way round:
 *   1. its header decodes (kvs__header_decode);
 *   2. it is the chunk wanted: its key and namespace id, and the geometry
 *      and token count where the caller knows them (kvs__header_matches);
 *   3. the file is as long as its header says (kvs__chunk_file_bytes);
 *   4. every payload segment hashes to its sum (kvs__segment_ok);
 * and for a compressed file (version 2):
 *   5. its frame table verifies (kvs__chunk_check_table), each stored frame
 *      hashes to its segment's sum (rule 4 on the frame's stored bytes), and
 *      every frame decodes (kvs__codec_decode_frame) to its logical bytes.
 * With auth_key_file, a reader also checks the MAC (kvs__chunk_mac). */

typedef struct kvs_chunk_want {
    const uint8_t *key;      /* KVS_KEY_BYTES */
    /* A reader knows its namespace: id, geometry and the chunk's tokens. */
    const kvs_ns *ns;        /* NULL: only the id below is known */
    uint32_t tokens;         /* with ns */
    /* Without ns (verify): the first ns_id_len bytes of the namespace id
     * (8, from the folder's name; 32 where NAMESPACE.json matches it). */
    const uint8_t *ns_id;
    size_t ns_id_len;
} kvs_chunk_want;

/* Rules 1 to 3 on a file's raw header (KVS_HEADER_BYTES) and its length;
 * fills *h (decoded) when rule 1 holds. */
kvs_reject kvs__chunk_check_header(const uint8_t *raw, uint64_t file_size,
                                   const kvs_chunk_want *want, kvs_chunk_header *h);

/* Rule 4 for segment i, whose n bytes are at data. */
static inline bool kvs__segment_ok(const kvs_chunk_header *h, uint64_t i, const void *data,
                                   size_t n)
{
    return kvs__checksum(data, n) == h->segment_sums[i];
}

/* Number of KVS_AUTH_SEGMENT_BYTES pieces of a payload's padded bytes. */
static inline uint32_t kvs__auth_segment_count(uint64_t payload)
{
    return (uint32_t)((kvs__padded_payload(payload) + KVS_AUTH_SEGMENT_BYTES - 1) /
                      KVS_AUTH_SEGMENT_BYTES);
}

/* The MAC of a chunk: in = the encoded header (KVS_HEADER_BYTES) followed
 * by the piece digests (32 bytes each, segment_count of them), as the
 * writer or reader assembled them; the header's checksum and tag fields in
 * `in` are zeroed here first.  Returns 0, or -1 if libcrypto failed. */
int kvs__chunk_mac(const uint8_t *key, size_t key_len, uint8_t *in, uint32_t segment_count,
                   uint8_t tag_out[KVS_AUTH_TAG_BYTES]);

/* Writes tag into an encoded header and updates its checksum. */
void kvs__header_set_tag(uint8_t *hdr, const uint8_t tag[KVS_AUTH_TAG_BYTES]);

/* SHA-256 of one segment (digest_out: 32 bytes). */
void kvs__segment_sha256(const void *data, size_t len, uint8_t *digest_out);

#endif
