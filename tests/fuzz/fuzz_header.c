/* fuzz_header.c - libFuzzer target for the chunk header parser: any bytes
 * in a file on the mount reach kvs__header_decode, so it must never crash,
 * read out of bounds or accept a header whose sizes are inconsistent. */
#include "checksum.h"
#include "chunk_file.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The reader always hands the parser a full header buffer. */
    uint8_t buf[KVS_HEADER_BYTES];
    memset(buf, 0, sizeof buf);
    memcpy(buf, data, size < sizeof buf ? size : sizeof buf);
    /* A random header almost never carries a valid checksum, which would
     * keep the fuzzer at the door: an odd byte after the header asks for
     * the checksum to be made valid, so the field checks behind it are
     * explored too. */
    if (size > sizeof buf && (data[sizeof buf] & 1)) {
        memset(buf + 16, 0, 8);
        uint64_t sum = kvs__checksum(buf, sizeof buf);
        for (int i = 0; i < 8; i++)
            buf[16 + i] = (uint8_t)(sum >> (8 * i));
    }
    kvs_chunk_header h;
    kvs_reject r = kvs__header_decode(buf, size < sizeof buf ? size : sizeof buf, &h);
    if (r == KVS_REJECT_NONE) {
        uint64_t expect = (uint64_t)h.num_layers * h.num_planes * h.tokens * h.row_bytes;
        if (h.payload_bytes != expect || h.segment_count > KVS_MAX_SEGMENTS ||
            h.segment_count * (uint64_t)h.segment_bytes < kvs__padded_payload(h.payload_bytes))
            abort();
        /* the auth fields survive a re-encode, and the MAC's input (the
         * header and one digest per 16 KiB piece) is computed without
         * trouble for any header that decodes (small payloads: the fuzzer
         * must stay fast) */
        uint8_t again[KVS_HEADER_BYTES];
        kvs_chunk_header h2;
        kvs__header_encode(&h, again);
        if (kvs__header_decode(again, sizeof again, &h2) != KVS_REJECT_NONE ||
            h2.auth_algo != h.auth_algo || memcmp(h2.auth_tag, h.auth_tag, sizeof h.auth_tag))
            abort();
        uint32_t n = kvs__auth_segment_count(h.payload_bytes);
        if (n <= 4096) {
            uint8_t *in = calloc(1, KVS_HEADER_BYTES + 32 * (size_t)n);
            static const uint8_t key[32] = {1};
            uint8_t tag[KVS_AUTH_TAG_BYTES];
            if (!in)
                return 0;
            memcpy(in, buf, KVS_HEADER_BYTES);
            if (kvs__chunk_mac(key, sizeof key, in, n, tag) != 0)
                abort();
            free(in);
        }
    }
    return 0;
}
