/*
 * status.c - status texts and the per-thread last error message.
 *
 * A failure is described once, where it is first seen, by kvs__fail(); the
 * message stays in thread-local storage until the thread's next failure, so
 * the public entry points only pass the status up and a caller (the CLI, the
 * Python layer) reads the full text with kvs_last_error().
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define KVS_ERRMSG_MAX 1024

static _Thread_local char last_error[KVS_ERRMSG_MAX];

const char *kvs_strerror(kvs_status status)
{
    switch (status) {
    case KVS_OK: return "success";
    case KVS_ERR_INVALID: return "invalid argument";
    case KVS_ERR_CONFIG: return "configuration error";
    case KVS_ERR_NOMEM: return "out of memory";
    case KVS_ERR_IO: return "I/O error";
    case KVS_ERR_NOT_FOUND: return "not found";
    case KVS_ERR_CORRUPT: return "corrupt data";
    case KVS_ERR_TIMEOUT: return "timed out";
    case KVS_ERR_BUSY: return "busy";
    case KVS_ERR_NOSPACE: return "no space left";
    case KVS_ERR_UNSUPPORTED: return "not supported";
    case KVS_ERR_CUDA: return "CUDA error";
    case KVS_ERR_CUFILE: return "cuFile error";
    case KVS_ERR_PERM: return "permission denied";
    case KVS_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *kvs_last_error(void)
{
    return last_error;
}

kvs_status kvs__vfail(kvs_status st, const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    return st;
}

kvs_status kvs__fail(kvs_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kvs__vfail(st, fmt, ap);
    va_end(ap);
    return st;
}

void kvs__clear_error(void)
{
    last_error[0] = '\0';
}

kvs_status kvs__errno_status(int err)
{
    switch (err) {
    case 0: return KVS_OK;
    case ENOMEM: return KVS_ERR_NOMEM;
    case ENOENT:
    case ESTALE:
    case ENOTDIR: return KVS_ERR_NOT_FOUND;
    case ENOSPC:
    case EDQUOT: return KVS_ERR_NOSPACE;
    case EACCES:
    case EPERM:
    case EROFS: return KVS_ERR_PERM;
    case ETIMEDOUT: return KVS_ERR_TIMEOUT;
    case EAGAIN:
    case EBUSY: return KVS_ERR_BUSY;
    case EINVAL: return KVS_ERR_INVALID;
    case ENOTSUP: return KVS_ERR_UNSUPPORTED;
    default: return KVS_ERR_IO;
    }
}

unsigned kvs_version_number(void)
{
    return KVS_VERSION_NUMBER;
}

const char *kvs_version_string(void)
{
#define KVS_STR2_(x) #x
#define KVS_STR_(x) KVS_STR2_(x)
    return KVS_STR_(KVS_VERSION_MAJOR) "." KVS_STR_(KVS_VERSION_MINOR) "." KVS_STR_(
        KVS_VERSION_PATCH);
}
