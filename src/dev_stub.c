/*
 * dev_stub.c - the device data path of a build without CUDA: every entry
 * point reports that GPU memory is not supported by this build.
 */
#include "dev.h"

bool kvs__dev_built(void)
{
    return false;
}

uint64_t kvs__dev_piece_bytes(const kvs_config *cfg, uint64_t block_bytes, uint64_t padded,
                              bool store)
{
    (void)cfg, (void)padded, (void)store;
    return block_bytes;
}

kvs_status kvs__dev_open(const kvs_dev_params *p, int device, kvs_dev **out)
{
    (void)p;
    (void)out;
    return kvs__fail(KVS_ERR_UNSUPPORTED,
                     "kv is CUDA memory (cuda:%d), but this libkvstash was built without CUDA "
                     "support",
                     device);
}

void kvs__dev_close(kvs_dev *d)
{
    (void)d;
}

int kvs__dev_device(const kvs_dev *d)
{
    (void)d;
    return -1;
}

bool kvs__dev_cufile_active(const kvs_dev *d)
{
    (void)d;
    return false;
}

uint64_t kvs__dev_cufile_fallbacks(const kvs_dev *d)
{
    (void)d;
    return 0;
}

kvs_status kvs__dev_op_begin(kvs_dev *d, const kvs_kvmap *m, kvs_dev_op **out)
{
    (void)d;
    (void)m;
    (void)out;
    return kvs__fail(KVS_ERR_UNSUPPORTED, "this libkvstash was built without CUDA support");
}

void kvs__dev_op_end(kvs_dev_op *o)
{
    (void)o;
}

kvs_dev_file *kvs__dev_file_open(kvs_dev *d, int fd)
{
    (void)d;
    (void)fd;
    return NULL;
}

void kvs__dev_file_close(kvs_dev *d, kvs_dev_file *f)
{
    (void)d;
    (void)f;
}

kvs_dev_rc kvs__dev_read_piece(kvs_dev_op *o, const kvs_dev_chunk *c, int fd, kvs_dev_file *f,
                               const uint64_t *sums, uint64_t off, uint64_t len,
                               uint8_t *digests_out, const kvs_dev_hooks *h, int *err_out)
{
    (void)o, (void)c, (void)fd, (void)f, (void)sums, (void)off, (void)len, (void)h, (void)err_out;
    (void)digests_out;
    return KVS_DEV_CUDA;
}

kvs_dev_rc kvs__dev_put_host(kvs_dev_op *o, const kvs_dev_chunk *c, const void *payload,
                             const kvs_dev_hooks *h)
{
    (void)o, (void)c, (void)payload, (void)h;
    return KVS_DEV_CUDA;
}

kvs_dev_rc kvs__dev_capture_begin(kvs_dev_op *o, uint32_t max_chunks)
{
    (void)o, (void)max_chunks;
    return KVS_DEV_CUDA;
}

kvs_dev_rc kvs__dev_capture(kvs_dev_op *o, const kvs_dev_chunk *c, uint64_t *sums_out,
                            kvs_dev_stage **stage_out)
{
    (void)o, (void)c, (void)sums_out, (void)stage_out;
    return KVS_DEV_CUDA;
}

kvs_dev_rc kvs__dev_capture_end(kvs_dev_op *o)
{
    (void)o;
    return KVS_DEV_CUDA;
}

kvs_dev_rc kvs__dev_write_piece(kvs_dev *d, kvs_dev_stage *s, int fd, kvs_dev_file *f,
                                uint64_t off, uint64_t len, uint64_t data_len, void *cpu_copy,
                                int *err_out)
{
    (void)d, (void)s, (void)fd, (void)f, (void)off, (void)len, (void)data_len, (void)cpu_copy,
        (void)err_out;
    return KVS_DEV_CUDA;
}

void kvs__dev_stage_coded(const kvs_dev_stage *s, kvs_dev_coded *out)
{
    (void)s;
    *out = (kvs_dev_coded){0};
}

void kvs__dev_stage_free(kvs_dev *d, kvs_dev_stage *s)
{
    (void)d;
    (void)s;
}

kvs_dev_rc kvs__dev_stage_digests(kvs_dev *d, const kvs_dev_stage *s, uint8_t *out, uint32_t n)
{
    (void)d, (void)s, (void)out, (void)n;
    return KVS_DEV_CUDA;
}

void kvs__dev_doctor(const kvs_config *cfg, kvs_buf *b)
{
    (void)cfg;
    kvs_buf_printf(b, "gpu: not supported (this libkvstash was built without CUDA)\n");
    kvs_buf_printf(b, "cuFile: not available (this libkvstash was built without CUDA)\n");
}
