/*
 * io_ops.c - the real filesystem calls, behind a replaceable table.
 *
 * The table is read with one atomic load per call; replacing it is for
 * tests only (fault injection), which swap it while no I/O is in flight.
 */
#include "io_ops.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

static int posix_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static int posix_stat(const char *path, struct stat *st)
{
    return lstat(path, st);
}

static int posix_rename_noreplace(const char *from, const char *to)
{
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */);
#else
    (void)from;
    (void)to;
    errno = ENOSYS;
    return -1;
#endif
}

static int posix_mkdir(const char *path, mode_t mode)
{
    return mkdir(path, mode);
}

static int posix_utimens(const char *path, const struct timespec times[2])
{
    return utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW);
}

static int posix_getrandom(void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = getrandom((char *)buf + done, n - done, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

const kvs_io_ops kvs__io_posix = {
    .open = posix_open,
    .close = close,
    .pread = pread,
    .pwrite = pwrite,
    .preadv = preadv,
    .pwritev = pwritev,
    .fstat = fstat,
    .stat = posix_stat,
    .fsync = fsync,
    .mkdir = posix_mkdir,
    .rename = rename,
    .rename_noreplace = posix_rename_noreplace,
    .link = link,
    .unlink = unlink,
    .rmdir = rmdir,
    .statvfs = statvfs,
    .utimens = posix_utimens,
    .opendir = opendir,
    .readdir = readdir,
    .closedir = closedir,
    .getrandom = posix_getrandom,
};

static _Atomic(const kvs_io_ops *) current = &kvs__io_posix;

const kvs_io_ops *kvs__io(void)
{
    return atomic_load_explicit(&current, memory_order_acquire);
}

const kvs_io_ops *kvs__io_set(const kvs_io_ops *ops)
{
    return atomic_exchange(&current, ops ? ops : &kvs__io_posix);
}

/* EINTR and EAGAIN are retried a bounded number of times: a filesystem that
 * keeps interrupting is failing. */
#define KVS_RETRIES 16

int kvs__pread_full(int fd, void *buf, size_t n, off_t off)
{
    const kvs_io_ops *io = kvs__io();
    size_t done = 0;
    int retries = 0;
    while (done < n) {
        ssize_t r = io->pread(fd, (char *)buf + done, n - done, off + (off_t)done);
        if (r < 0) {
            if ((errno == EINTR || errno == EAGAIN) && ++retries < KVS_RETRIES)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = ENODATA;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

int kvs__pwrite_full(int fd, const void *buf, size_t n, off_t off)
{
    const kvs_io_ops *io = kvs__io();
    size_t done = 0;
    int retries = 0;
    while (done < n) {
        ssize_t r = io->pwrite(fd, (const char *)buf + done, n - done, off + (off_t)done);
        if (r < 0) {
            if ((errno == EINTR || errno == EAGAIN) && ++retries < KVS_RETRIES)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}
