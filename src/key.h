/*
 * key.h - chunk keys and namespace identity: a key is SHA-256 over its
 * parent's key and its tokens, the same on every machine; a namespace id
 * is SHA-256 over everything that must match for KV to be reusable, so a
 * file of one namespace is never a hit in another (key.c says more).
 */
#ifndef KVS_KEY_H
#define KVS_KEY_H

#include "internal.h"

#define KVS_KEY_HEX (2 * KVS_KEY_BYTES + 1)
#define KVS_NS_DIR_MAX 96

/* The parsed, owned copy of a kvs_namespace plus what is derived from it. */
typedef struct kvs_ns {
    char *model;
    char *variant;               /* "" when none */
    kvs_dtype dtype;
    uint32_t num_layers;
    uint32_t num_kv_heads;
    uint32_t head_dim;
    kvs_attn_layout layout;
    uint32_t world_size;         /* 1 for MLA */
    uint32_t rank;               /* 0 for MLA */
    uint32_t chunk_size;
    uint8_t salt_hash[32];       /* SHA-256 of the salt; zero when none */
    bool salted;
    /* derived */
    uint32_t num_planes;         /* 2 for MHA, 1 for MLA */
    uint32_t row_bytes;          /* bytes of one token's row in one plane */
    uint8_t id[32];              /* SHA-256 of the canonical identity */
    char dir[KVS_NS_DIR_MAX];    /* "<model>-<16 hex>" */
} kvs_ns;

/* Validates *ns and fills *out (which the caller releases with
 * kvs__ns_clear).  config_salt is used when ns->salt is NULL. */
kvs_status kvs__ns_init(kvs_ns *out, const kvs_namespace *ns, uint32_t chunk_size,
                        const char *config_salt);
void kvs__ns_clear(kvs_ns *ns);

/* The canonical identity text hashed into ns->id (for NAMESPACE files and
 * `kvstash ls`); caller frees. */
char *kvs__ns_describe_json(const kvs_ns *ns);

/* Payload bytes of a chunk of `tokens` tokens. */
uint64_t kvs__ns_payload_bytes(const kvs_ns *ns, uint32_t tokens);

/* key = SHA-256(parent || tokens as LE u32).  parent may be NULL (zeros). */
/* The namespace id of an identity text (NAMESPACE.json without its
 * newline): its SHA-256, as kvs__ns_init computes it. */
kvs_status kvs__ns_id_of_text(const char *text, uint8_t id_out[32]);

kvs_status kvs__chunk_key(const uint8_t parent[KVS_KEY_BYTES], const uint32_t *tokens,
                          size_t n, uint8_t key_out[KVS_KEY_BYTES]);

void kvs__hex(const uint8_t *bytes, size_t n, char *out);
/* 0 on success; -1 when the text is not 2n hex digits. */
int kvs__unhex(const char *hex, uint8_t *out, size_t n);

#endif
