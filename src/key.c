/*
 * key.c - chunk keys and namespace identity.
 *
 * A chunk's key is SHA-256 over its parent's key and its token ids as
 * little-endian u32, so each key stands for the whole prefix up to the end
 * of its chunk and is the same in every process and on every machine with
 * nothing to seed (LMCache's builtin hash needs PYTHONHASHSEED for that).
 *
 * A namespace is everything that must match for KV to be reusable.  Its id
 * is SHA-256 over a canonical text of those fields; the id goes into every
 * chunk header and, shortened, into the folder name, so a file of one
 * namespace can never be read as a hit in another.  The salt is hashed
 * before it goes in, so neither files nor folder names reveal it.
 */
#include "key.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The digest is fetched once per process and each thread keeps one context,
 * so hashing a chunk allocates nothing. */
static EVP_MD *sha256_md;
static pthread_key_t ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static bool ctx_key_ok;

static void free_ctx(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void init_sha256(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ctx_key_ok = pthread_key_create(&ctx_key, free_ctx) == 0;
}

static kvs_status sha256_parts(const void *a, size_t alen, const void *b, size_t blen,
                               uint8_t out[32])
{
    pthread_once(&sha256_once, init_sha256);
    if (!sha256_md || !ctx_key_ok)
        return kvs__fail(KVS_ERR_INTERNAL, "OpenSSL has no SHA-256 implementation");
    EVP_MD_CTX *ctx = pthread_getspecific(ctx_key);
    if (!ctx) {
        ctx = EVP_MD_CTX_new();
        if (!ctx || pthread_setspecific(ctx_key, ctx)) {
            EVP_MD_CTX_free(ctx);
            return kvs__fail(KVS_ERR_NOMEM, "out of memory creating a SHA-256 context");
        }
    }
    unsigned len = 0;
    int ok = EVP_DigestInit_ex2(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, a, alen) &&
             (blen == 0 || EVP_DigestUpdate(ctx, b, blen)) && EVP_DigestFinal_ex(ctx, out, &len);
    if (!ok || len != 32)
        return kvs__fail(KVS_ERR_INTERNAL, "SHA-256 failed in OpenSSL");
    return KVS_OK;
}

kvs_status kvs__ns_id_of_text(const char *text, uint8_t id_out[32])
{
    return sha256_parts(text, strlen(text), NULL, 0, id_out);
}

kvs_status kvs__chunk_key(const uint8_t parent[KVS_KEY_BYTES], const uint32_t *tokens,
                          size_t n, uint8_t key_out[KVS_KEY_BYTES])
{
    static const uint8_t zeros[KVS_KEY_BYTES];
    const uint8_t *p = parent ? parent : zeros;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return sha256_parts(p, KVS_KEY_BYTES, tokens, n * sizeof(uint32_t), key_out);
#else
    uint8_t *le = kvs__malloc(n * 4 + 1);
    if (!le)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory hashing %zu tokens", n);
    for (size_t i = 0; i < n; i++) {
        le[4 * i] = (uint8_t)tokens[i];
        le[4 * i + 1] = (uint8_t)(tokens[i] >> 8);
        le[4 * i + 2] = (uint8_t)(tokens[i] >> 16);
        le[4 * i + 3] = (uint8_t)(tokens[i] >> 24);
    }
    kvs_status st = sha256_parts(p, KVS_KEY_BYTES, le, n * 4, key_out);
    kvs__free(le);
    return st;
#endif
}

kvs_status kvs_chunk_keys(const uint32_t *tokens, size_t num_tokens, uint32_t chunk_size,
                          uint8_t (*keys_out)[KVS_KEY_BYTES], size_t max_keys,
                          size_t *num_keys_out)
{
    if (chunk_size == 0)
        return kvs__fail(KVS_ERR_INVALID, "kvs_chunk_keys: chunk_size is 0");
    if ((!tokens && num_tokens) || (!keys_out && max_keys) || !num_keys_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_chunk_keys: NULL argument");
    size_t n = KVS_MIN(num_tokens / chunk_size, max_keys);
    for (size_t i = 0; i < n; i++) {
        kvs_status st = kvs__chunk_key(i ? keys_out[i - 1] : NULL, tokens + i * chunk_size,
                                       chunk_size, keys_out[i]);
        if (st)
            return st;
    }
    *num_keys_out = n;
    return KVS_OK;
}

void kvs__hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kvs__unhex(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[2 * n] == '\0' ? 0 : -1;
}

size_t kvs_dtype_size(kvs_dtype dtype)
{
    switch (dtype) {
    case KVS_DTYPE_FP8_E4M3:
    case KVS_DTYPE_FP8_E5M2: return 1;
    case KVS_DTYPE_FP16:
    case KVS_DTYPE_BF16: return 2;
    case KVS_DTYPE_FP32: return 4;
    case KVS_DTYPE_INVALID: break;
    }
    return 0;
}

const char *kvs_dtype_name(kvs_dtype dtype)
{
    switch (dtype) {
    case KVS_DTYPE_FP8_E4M3: return "fp8";
    case KVS_DTYPE_FP8_E5M2: return "fp8_e5m2";
    case KVS_DTYPE_FP16: return "fp16";
    case KVS_DTYPE_BF16: return "bf16";
    case KVS_DTYPE_FP32: return "fp32";
    case KVS_DTYPE_INVALID: break;
    }
    return "invalid";
}

kvs_status kvs_dtype_parse(const char *name, kvs_dtype *dtype_out)
{
    static const struct {
        const char *name;
        kvs_dtype dtype;
    } names[] = {
        {"bf16", KVS_DTYPE_BF16},          {"bfloat16", KVS_DTYPE_BF16},
        {"fp16", KVS_DTYPE_FP16},          {"float16", KVS_DTYPE_FP16},
        {"half", KVS_DTYPE_FP16},          {"fp32", KVS_DTYPE_FP32},
        {"float32", KVS_DTYPE_FP32},       {"float", KVS_DTYPE_FP32},
        {"fp8", KVS_DTYPE_FP8_E4M3},       {"fp8_e4m3", KVS_DTYPE_FP8_E4M3},
        {"float8_e4m3fn", KVS_DTYPE_FP8_E4M3}, {"fp8_e5m2", KVS_DTYPE_FP8_E5M2},
        {"float8_e5m2", KVS_DTYPE_FP8_E5M2},
    };
    if (!name || !dtype_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_dtype_parse: NULL argument");
    const char *n = strncmp(name, "torch.", 6) == 0 ? name + 6 : name;
    for (size_t i = 0; i < KVS_ARRAY_LEN(names); i++) {
        if (strcasecmp(n, names[i].name) == 0) {
            *dtype_out = names[i].dtype;
            return KVS_OK;
        }
    }
    return kvs__fail(KVS_ERR_INVALID,
                     "unknown KV dtype \"%s\" (accepted: bf16, fp16, fp32, fp8, fp8_e5m2 "
                     "and the torch names bfloat16, float16, half, float32, float, "
                     "float8_e4m3fn, float8_e5m2)",
                     name);
}

/* 1..max bytes of UTF-8 without control characters. */
static bool valid_utf8_text(const char *s, size_t max)
{
    size_t len = strnlen(s, max + 1);
    if (len == 0 || len > max)
        return false;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        size_t extra;
        if (c < 0x80)
            extra = 0;
        else if ((c & 0xe0) == 0xc0)
            extra = 1;
        else if ((c & 0xf0) == 0xe0)
            extra = 2;
        else if ((c & 0xf8) == 0xf0)
            extra = 3;
        else
            return false;
        if (c < 0x20 || c == 0x7f || i + extra >= len)
            return false;
        for (size_t k = 1; k <= extra; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
        i += extra + 1;
    }
    return true;
}

/* The folder name keeps the model readable for operators: characters that
 * are not [A-Za-z0-9._-] become '_', no leading dot, at most 48 of them. */
static void make_dir_name(kvs_ns *ns)
{
    char model[49];
    size_t j = 0;
    for (const char *p = ns->model; *p && j < sizeof model - 1; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && j > 0);
        model[j++] = ok ? c : '_';
    }
    model[j] = '\0';
    char hex[65];
    kvs__hex(ns->id, 32, hex);
    snprintf(ns->dir, sizeof ns->dir, "%s-%.16s", model, hex);
}

static char *canonical_identity(const kvs_ns *ns)
{
    char salt_hex[65] = "";
    if (ns->salted)
        kvs__hex(ns->salt_hash, 32, salt_hex);
    kvs_buf b = {0};
    kvs_buf_printf(&b,
                   "{\"format\":%d,\"model\":",
                   KVS_FORMAT_VERSION);
    kvs_buf_json_string(&b, ns->model);
    kvs_buf_printf(&b,
                   ",\"dtype\":\"%s\",\"layout\":\"%s\",\"num_layers\":%u,"
                   "\"num_kv_heads\":%u,\"head_dim\":%u,\"world_size\":%u,\"rank\":%u,"
                   "\"chunk_size\":%u,\"variant\":",
                   kvs_dtype_name(ns->dtype), ns->layout == KVS_LAYOUT_MLA ? "mla" : "mha",
                   ns->num_layers, ns->num_kv_heads, ns->head_dim, ns->world_size, ns->rank,
                   ns->chunk_size);
    kvs_buf_json_string(&b, ns->variant);
    kvs_buf_printf(&b, ",\"salt_sha256\":\"%s\"}", salt_hex);
    char *out = NULL;
    if (kvs_buf_finish(&b, &out))
        return NULL;
    return out;
}

char *kvs__ns_describe_json(const kvs_ns *ns)
{
    return canonical_identity(ns);
}

uint64_t kvs__ns_payload_bytes(const kvs_ns *ns, uint32_t tokens)
{
    return (uint64_t)ns->num_layers * ns->num_planes * tokens * ns->row_bytes;
}

void kvs__ns_clear(kvs_ns *ns)
{
    if (!ns)
        return;
    kvs__free(ns->model);
    kvs__free(ns->variant);
    memset(ns, 0, sizeof *ns);
}

kvs_status kvs__ns_init(kvs_ns *out, const kvs_namespace *ns, uint32_t chunk_size,
                        const char *config_salt)
{
    if (!ns)
        return kvs__fail(KVS_ERR_INVALID, "namespace: NULL");
    if (!ns->model || !valid_utf8_text(ns->model, 255))
        return kvs__fail(KVS_ERR_INVALID,
                         "namespace.model must be 1..255 bytes of printable UTF-8 (got %s)",
                         ns->model ? "an empty, too long or non-UTF-8 string" : "NULL");
    if (ns->variant && ns->variant[0] && !valid_utf8_text(ns->variant, 255))
        return kvs__fail(KVS_ERR_INVALID,
                         "namespace.variant must be at most 255 bytes of printable UTF-8");
    if (kvs_dtype_size(ns->dtype) == 0)
        return kvs__fail(KVS_ERR_INVALID, "namespace.dtype %d is not a kvs_dtype", (int)ns->dtype);
    if (ns->layout != KVS_LAYOUT_MHA && ns->layout != KVS_LAYOUT_MLA)
        return kvs__fail(KVS_ERR_INVALID, "namespace.layout %d is neither MHA (0) nor MLA (1)",
                         (int)ns->layout);
    if (ns->num_layers < 1 || ns->num_layers > 4096)
        return kvs__fail(KVS_ERR_INVALID, "namespace.num_layers %u is outside 1..4096",
                         ns->num_layers);
    if (ns->num_kv_heads < 1 || ns->num_kv_heads > 65536)
        return kvs__fail(KVS_ERR_INVALID, "namespace.num_kv_heads %u is outside 1..65536",
                         ns->num_kv_heads);
    if (ns->head_dim < 1 || ns->head_dim > 65536)
        return kvs__fail(KVS_ERR_INVALID, "namespace.head_dim %u is outside 1..65536",
                         ns->head_dim);
    if (ns->world_size < 1 || ns->rank >= ns->world_size)
        return kvs__fail(KVS_ERR_INVALID,
                         "namespace: rank %u must be below world_size %u (world_size >= 1)",
                         ns->rank, ns->world_size);
    uint64_t row = (uint64_t)ns->num_kv_heads * ns->head_dim * kvs_dtype_size(ns->dtype);
    if (row > (1u << 30))
        return kvs__fail(KVS_ERR_INVALID, "namespace: a token row of %llu bytes is too large",
                         (unsigned long long)row);
    if (chunk_size == 0 || chunk_size > (1u << 20))
        return kvs__fail(KVS_ERR_INVALID, "namespace: chunk_size %u is outside 1..1048576",
                         chunk_size);
    uint64_t planes = ns->layout == KVS_LAYOUT_MLA ? 1 : 2;
    if (planes * ns->num_layers * chunk_size * row > (64ull << 30))
        return kvs__fail(KVS_ERR_INVALID,
                         "namespace: one chunk would hold %llu bytes; the limit is 64 GiB "
                         "(lower chunk_size)",
                         (unsigned long long)(planes * ns->num_layers * chunk_size * row));

    kvs_ns n = {0};
    n.model = kvs__strdup(ns->model);
    n.variant = kvs__strdup(ns->variant ? ns->variant : "");
    if (!n.model || !n.variant) {
        kvs__ns_clear(&n);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory copying the namespace");
    }
    n.dtype = ns->dtype;
    n.num_layers = ns->num_layers;
    n.num_kv_heads = ns->num_kv_heads;
    n.head_dim = ns->head_dim;
    n.layout = ns->layout;
    bool mla = ns->layout == KVS_LAYOUT_MLA;
    n.world_size = mla ? 1 : ns->world_size;
    n.rank = mla ? 0 : ns->rank;
    n.chunk_size = chunk_size;
    n.num_planes = mla ? 1 : 2;
    n.row_bytes = (uint32_t)row;
    const char *salt = ns->salt ? ns->salt : config_salt;
    if (salt && salt[0]) {
        kvs_status st = sha256_parts(salt, strlen(salt), NULL, 0, n.salt_hash);
        if (st) {
            kvs__ns_clear(&n);
            return st;
        }
        n.salted = true;
    }
    char *canon = canonical_identity(&n);
    if (!canon) {
        kvs__ns_clear(&n);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory describing the namespace");
    }
    kvs_status st = kvs__ns_id_of_text(canon, n.id);
    kvs__free(canon);
    if (st) {
        kvs__ns_clear(&n);
        return st;
    }
    make_dir_name(&n);
    *out = n;
    return KVS_OK;
}
