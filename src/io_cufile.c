/*
 * io_cufile.c - the cuFile entry points kvstash uses, through dlopen.
 *
 * The few types needed are declared here from cuFile's documented ABI (its
 * header ships only with the CUDA toolkit of GPU machines): a status is a
 * pair of ints {CUfileOpError, CUresult} returned by value, a file
 * description is {int type; union {int fd; void *handle}; const void *ops}
 * with type 1 for a POSIX descriptor, and the data path calls return the
 * byte count, -1 with errno for system errors, or the negated
 * CUfileOpError.  The driver is opened once for the process and never
 * closed (cuFile keeps per-process state that outlives any one engine).
 */
#include "io_cufile.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cufile_status {
    int err;    /* CUfileOpError */
    int cu_err; /* CUresult when err is 5011 (a CUDA driver error) */
} cufile_status;

typedef struct cufile_descr {
    int type; /* 1: CU_FILE_HANDLE_TYPE_OPAQUE_FD */
    union {
        int fd;
        void *handle;
    } handle;
    const void *fs_ops;
} cufile_descr;

#define CUFILE_TYPE_FD 1

static struct {
    void *lib;
    char path[512];
    cufile_status (*driver_open)(void);
    cufile_status (*handle_register)(void **fh, cufile_descr *d);
    void (*handle_deregister)(void *fh);
    cufile_status (*buf_register)(const void *base, size_t n, int flags);
    cufile_status (*buf_deregister)(const void *base);
    ssize_t (*read)(void *fh, void *base, size_t n, off_t foff, off_t boff);
    ssize_t (*write)(void *fh, const void *base, size_t n, off_t foff, off_t boff);
    int status;
    char why[400];
} cf;

static pthread_once_t cf_once = PTHREAD_ONCE_INIT;

/* The documented CUfileOpError values, named, with what they mean. */
static const struct {
    int code;
    const char *name, *text;
} cf_errors[] = {
    {5001, "CU_FILE_DRIVER_NOT_INITIALIZED", "the nvidia-fs driver is not loaded"},
    {5002, "CU_FILE_DRIVER_INVALID_PROPS", "invalid driver property"},
    {5003, "CU_FILE_DRIVER_UNSUPPORTED_LIMIT", "driver property out of range"},
    {5004, "CU_FILE_DRIVER_VERSION_MISMATCH", "nvidia-fs driver version mismatch"},
    {5005, "CU_FILE_DRIVER_VERSION_READ_ERROR", "cannot read the nvidia-fs driver version"},
    {5006, "CU_FILE_DRIVER_CLOSING", "the driver is shutting down"},
    {5007, "CU_FILE_PLATFORM_NOT_SUPPORTED", "platform not supported"},
    {5008, "CU_FILE_IO_NOT_SUPPORTED", "GPUDirect I/O not supported on this file system"},
    {5009, "CU_FILE_DEVICE_NOT_SUPPORTED", "GPU not supported"},
    {5010, "CU_FILE_NVFS_DRIVER_ERROR", "nvidia-fs driver ioctl failed"},
    {5011, "CU_FILE_CUDA_DRIVER_ERROR", "CUDA driver error"},
    {5012, "CU_FILE_CUDA_POINTER_INVALID", "invalid device pointer"},
    {5013, "CU_FILE_CUDA_MEMORY_TYPE_INVALID", "invalid memory type"},
    {5014, "CU_FILE_CUDA_POINTER_RANGE_ERROR", "device pointer range exceeded"},
    {5015, "CU_FILE_CUDA_CONTEXT_MISMATCH", "CUDA context mismatch"},
    {5016, "CU_FILE_INVALID_MAPPING_SIZE", "access beyond the maximum pinned size"},
    {5017, "CU_FILE_INVALID_MAPPING_RANGE", "access beyond the mapped size"},
    {5018, "CU_FILE_INVALID_FILE_TYPE", "unsupported file type"},
    {5019, "CU_FILE_INVALID_FILE_OPEN_FLAG", "unsupported file open flags"},
    {5020, "CU_FILE_DIO_NOT_SET", "O_DIRECT not set on the file descriptor"},
    {5022, "CU_FILE_INVALID_VALUE", "invalid argument"},
    {5023, "CU_FILE_MEMORY_ALREADY_REGISTERED", "device memory already registered"},
    {5024, "CU_FILE_MEMORY_NOT_REGISTERED", "device memory not registered"},
    {5025, "CU_FILE_PERMISSION_DENIED", "driver or file access denied"},
    {5026, "CU_FILE_DRIVER_ALREADY_OPEN", "driver already open"},
    {5027, "CU_FILE_HANDLE_NOT_REGISTERED", "file descriptor is not registered"},
    {5028, "CU_FILE_HANDLE_ALREADY_REGISTERED", "file descriptor already registered"},
    {5029, "CU_FILE_DEVICE_NOT_FOUND", "GPU not found"},
    {5030, "CU_FILE_INTERNAL_ERROR", "internal error"},
    {5031, "CU_FILE_GETNEWFD_FAILED", "could not obtain a new file descriptor"},
    {5033, "CU_FILE_NVFS_SETUP_ERROR", "nvidia-fs driver initialization failed"},
    {5034, "CU_FILE_IO_DISABLED", "GPUDirect Storage disabled by configuration for this file"},
    {5035, "CU_FILE_BATCH_SUBMIT_FAILED", "batch submit failed"},
    {5036, "CU_FILE_GPU_MEMORY_PINNING_FAILED", "pinning GPU memory failed"},
    {5037, "CU_FILE_BATCH_FULL", "batch queue full"},
    {5038, "CU_FILE_ASYNC_NOT_SUPPORTED", "asynchronous I/O not supported"},
    {5043, "CU_FILE_NOMEM_ERROR", "out of memory"},
    {5044, "CU_FILE_IO_ERROR", "I/O error"},
    {5045, "CU_FILE_INTERNAL_BUF_REGISTER_ERROR", "internal buffer registration failed"},
    {5046, "CU_FILE_HASH_OPR_ERROR", "internal hash table error"},
    {5047, "CU_FILE_INVALID_CONTEXT_ERROR", "invalid CUDA context"},
    {5048, "CU_FILE_NVFS_INTERNAL_DRIVER_ERROR", "nvidia-fs internal driver error"},
    {5049, "CU_FILE_BATCH_NOCOMPAT_ERROR", "batch I/O unavailable in compatibility mode"},
};

const char *kvs__cufile_strerror(int status)
{
    static _Thread_local char buf[160];
    if (status < 0)
        status = -status;
    if (status < 5000) {
        snprintf(buf, sizeof buf, "errno %d (%s)", status, strerror(status));
        return buf;
    }
    for (size_t i = 0; i < KVS_ARRAY_LEN(cf_errors); i++) {
        if (cf_errors[i].code == status) {
            snprintf(buf, sizeof buf, "%d (%s: %s)", status, cf_errors[i].name, cf_errors[i].text);
            return buf;
        }
    }
    snprintf(buf, sizeof buf, "%d (unknown cuFile status)", status);
    return buf;
}

/* A status pair as one int: the CUfileOpError (5011 for CUDA errors). */
static int code_of(cufile_status s)
{
    return s.err;
}

static void *sym(const char *name, bool *missing)
{
    void *p = dlsym(cf.lib, name);
    if (!p && !*missing) {
        *missing = true;
        snprintf(cf.why, sizeof cf.why, "%.200s has no symbol %.64s", cf.path, name);
    }
    return p;
}

static void init_once(void)
{
    static const char *const names[] = {
        "libcufile.so.0",
        "libcufile.so",
        "/usr/local/cuda/lib64/libcufile.so.0",
        "/usr/local/cuda/targets/x86_64-linux/lib/libcufile.so.0",
    };
    char first_err[160] = "";
    const char *home = getenv("CUDA_HOME");
    char home_path[400] = "";
    if (home && *home)
        snprintf(home_path, sizeof home_path, "%.360s/lib64/libcufile.so.0", home);
    for (size_t i = 0; i <= KVS_ARRAY_LEN(names) && !cf.lib; i++) {
        const char *n = i < KVS_ARRAY_LEN(names) ? names[i] : home_path;
        if (!*n)
            continue;
        cf.lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
        if (cf.lib)
            snprintf(cf.path, sizeof cf.path, "%s", n);
        else if (!first_err[0])
            snprintf(first_err, sizeof first_err, "%s", dlerror());
    }
    if (!cf.lib) {
        snprintf(cf.why, sizeof cf.why, "libcufile not found (dlopen: %s)", first_err);
        cf.status = -ENOENT;
        return;
    }
    bool missing = false;
    *(void **)&cf.driver_open = sym("cuFileDriverOpen", &missing);
    *(void **)&cf.handle_register = sym("cuFileHandleRegister", &missing);
    *(void **)&cf.handle_deregister = sym("cuFileHandleDeregister", &missing);
    *(void **)&cf.buf_register = sym("cuFileBufRegister", &missing);
    *(void **)&cf.buf_deregister = sym("cuFileBufDeregister", &missing);
    *(void **)&cf.read = sym("cuFileRead", &missing);
    *(void **)&cf.write = sym("cuFileWrite", &missing);
    if (missing) {
        cf.status = -ENOSYS;
        return;
    }
    cufile_status s = cf.driver_open();
    if (s.err != 0) {
        cf.status = code_of(s);
        snprintf(cf.why, sizeof cf.why, "cuFileDriverOpen: %s%s", kvs__cufile_strerror(s.err),
                 s.err == 5011 ? " (CUDA driver error)" : "");
        return;
    }
    cf.status = 0;
}

int kvs__cufile_init(char *why, size_t why_len)
{
    pthread_once(&cf_once, init_once);
    if (cf.status && why)
        snprintf(why, why_len, "%s", cf.why);
    return cf.status;
}

const char *kvs__cufile_library(void)
{
    return cf.status == 0 ? cf.path : "";
}

int kvs__cufile_buf_register(void *base, size_t bytes)
{
    return code_of(cf.buf_register(base, bytes, 0));
}

void kvs__cufile_buf_deregister(void *base)
{
    cf.buf_deregister(base);
}

int kvs__cufile_handle_register(int fd, void **handle_out)
{
    cufile_descr d;
    memset(&d, 0, sizeof d);
    d.type = CUFILE_TYPE_FD;
    d.handle.fd = fd;
    void *h = NULL;
    cufile_status s = cf.handle_register(&h, &d);
    if (s.err != 0)
        return code_of(s);
    *handle_out = h;
    return 0;
}

void kvs__cufile_handle_deregister(void *handle)
{
    if (handle)
        cf.handle_deregister(handle);
}

/* cuFile returns -1 with errno, or the negated CUfileOpError: both become
 * -(status) here, status being an errno below 5000 or a cuFile code. */
static ssize_t io_result(ssize_t r)
{
    if (r >= 0 || r != -1)
        return r;
    return errno ? -(ssize_t)errno : -(ssize_t)EIO;
}

ssize_t kvs__cufile_read(void *handle, void *base, size_t n, off_t file_off, off_t base_off)
{
    errno = 0;
    return io_result(cf.read(handle, base, n, file_off, base_off));
}

ssize_t kvs__cufile_write(void *handle, const void *base, size_t n, off_t file_off,
                          off_t base_off)
{
    errno = 0;
    return io_result(cf.write(handle, base, n, file_off, base_off));
}
