/*
 * io_ops.c - the real filesystem calls, behind a replaceable table.
 *
 * The table is read with one atomic load per call; replacing it is for
 * tests only (fault injection), which swap it while no I/O is in flight.
 * Callers reach it through `retrying`, a table of the same shape whose
 * entries forward to the table in use and retry EINTR (io_ops.h says why
 * and what close() does instead), so an injected EINTR exercises the same
 * retry as a real one.
 */
#include "io_ops.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

/* EINTR and EAGAIN are retried a bounded number of times: a filesystem that
 * keeps interrupting is failing. */
#define KVS_RETRIES 16

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

/* openat2 is Linux 5.6+; older kernels (and some seccomp profiles) say
 * ENOSYS or EPERM, and then every later call takes the walk. */
static atomic_bool no_openat2;

/* The walk: each component but the last opened O_PATH | O_NOFOLLOW |
 * O_DIRECTORY from the one before, so no symlink is followed and ".." is
 * refused by name. */
static int open_walk(int dirfd, const char *path, int flags, mode_t mode)
{
    char comp[NAME_MAX + 1];
    int cur = dirfd;
    const char *p = path;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || n > NAME_MAX || (n == 2 && p[0] == '.' && p[1] == '.')) {
            if (cur != dirfd)
                close(cur);
            errno = n > NAME_MAX ? ENAMETOOLONG : EXDEV;
            return -1;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        int next = slash ? openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                         : openat(cur, comp, flags | O_NOFOLLOW, mode);
        int err = errno;
        struct stat st;
        if (next < 0 && err == ENOTDIR && fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode))
            err = ELOOP; /* a symlink in the way, as openat2 says it */
        if (cur != dirfd)
            close(cur);
        if (next < 0 || !slash) {
            errno = err;
            return next;
        }
        cur = next;
        p = slash + 1;
    }
}

static int posix_open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    if (!atomic_load_explicit(&no_openat2, memory_order_relaxed)) {
        struct open_how how;
        memset(&how, 0, sizeof how);
        how.flags = (uint64_t)(unsigned)(flags | O_NOFOLLOW);
        how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
        int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
            return fd;
        atomic_store_explicit(&no_openat2, true, memory_order_relaxed);
    }
    return open_walk(dirfd, path, flags, mode);
}

void kvs__io_test_no_openat2(bool on)
{
    atomic_store(&no_openat2, on);
}

static int posix_mkdirat(int dirfd, const char *name, mode_t mode)
{
    return mkdirat(dirfd, name, mode);
}

static int posix_unlinkat(int dirfd, const char *name, int flags)
{
    return unlinkat(dirfd, name, flags);
}

static int posix_renameat(int dirfd, const char *from, const char *to, int noreplace)
{
    if (!noreplace)
        return renameat(dirfd, from, dirfd, to);
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, dirfd, from, dirfd, to, 1 /* RENAME_NOREPLACE */);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static int posix_linkat(int dirfd, const char *from, const char *to)
{
    return linkat(dirfd, from, dirfd, to, 0);
}

static int posix_utimensat(int dirfd, const char *name, const struct timespec times[2])
{
    return utimensat(dirfd, name, times, AT_SYMLINK_NOFOLLOW);
}

static int posix_fstatat(int dirfd, const char *name, struct stat *st)
{
    return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW);
}

static int posix_allocate(int fd, off_t off, off_t len)
{
    return fallocate(fd, 0, off, len);
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
    .fallocate = posix_allocate,
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
    .open_beneath = posix_open_beneath,
    .mkdirat = posix_mkdirat,
    .unlinkat = posix_unlinkat,
    .renameat = posix_renameat,
    .linkat = posix_linkat,
    .utimensat = posix_utimensat,
    .fstatat = posix_fstatat,
};

static _Atomic(const kvs_io_ops *) current = &kvs__io_posix;

static const kvs_io_ops *cur(void)
{
    return atomic_load_explicit(&current, memory_order_acquire);
}

/* ---- the EINTR retry layer ------------------------------------------------- */

#define RETRY(type, call)                                                       \
    do {                                                                        \
        type r_;                                                                \
        for (int try_ = 0;; try_++) {                                           \
            r_ = (call);                                                        \
            if (r_ != (type)-1 || errno != EINTR || try_ + 1 >= KVS_RETRIES)    \
                return r_;                                                      \
        }                                                                       \
    } while (0)

static int r_open(const char *path, int flags, mode_t mode)
{
    RETRY(int, cur()->open(path, flags, mode));
}

static int r_close(int fd)
{
    if (cur()->close(fd) == 0 || errno == EINTR)
        return 0;
    return -1;
}

static ssize_t r_pread(int fd, void *buf, size_t n, off_t off)
{
    RETRY(ssize_t, cur()->pread(fd, buf, n, off));
}

static ssize_t r_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    RETRY(ssize_t, cur()->pwrite(fd, buf, n, off));
}

static ssize_t r_preadv(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    RETRY(ssize_t, cur()->preadv(fd, iov, iovcnt, off));
}

static ssize_t r_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    RETRY(ssize_t, cur()->pwritev(fd, iov, iovcnt, off));
}

static int r_fstat(int fd, struct stat *st)
{
    RETRY(int, cur()->fstat(fd, st));
}

static int r_stat(const char *path, struct stat *st)
{
    RETRY(int, cur()->stat(path, st));
}

static int r_fsync(int fd)
{
    RETRY(int, cur()->fsync(fd));
}

static int r_fallocate(int fd, off_t off, off_t len)
{
    RETRY(int, cur()->fallocate(fd, off, len));
}

static int r_mkdir(const char *path, mode_t mode)
{
    RETRY(int, cur()->mkdir(path, mode));
}

static int r_rename(const char *from, const char *to)
{
    RETRY(int, cur()->rename(from, to));
}

static int r_rename_noreplace(const char *from, const char *to)
{
    RETRY(int, cur()->rename_noreplace(from, to));
}

static int r_link(const char *from, const char *to)
{
    RETRY(int, cur()->link(from, to));
}

static int r_unlink(const char *path)
{
    RETRY(int, cur()->unlink(path));
}

static int r_rmdir(const char *path)
{
    RETRY(int, cur()->rmdir(path));
}

static int r_statvfs(const char *path, struct statvfs *st)
{
    RETRY(int, cur()->statvfs(path, st));
}

static int r_utimens(const char *path, const struct timespec times[2])
{
    RETRY(int, cur()->utimens(path, times));
}

static DIR *r_opendir(const char *path)
{
    for (int try_ = 0;; try_++) {
        DIR *d = cur()->opendir(path);
        if (d || errno != EINTR || try_ + 1 >= KVS_RETRIES)
            return d;
    }
}

static struct dirent *r_readdir(DIR *dir)
{
    return cur()->readdir(dir);
}

static int r_closedir(DIR *dir)
{
    if (cur()->closedir(dir) == 0 || errno == EINTR)
        return 0;
    return -1;
}

static int r_getrandom(void *buf, size_t n)
{
    RETRY(int, cur()->getrandom(buf, n));
}

static int r_open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    RETRY(int, cur()->open_beneath(dirfd, path, flags, mode));
}

static int r_mkdirat(int dirfd, const char *name, mode_t mode)
{
    RETRY(int, cur()->mkdirat(dirfd, name, mode));
}

static int r_unlinkat(int dirfd, const char *name, int flags)
{
    RETRY(int, cur()->unlinkat(dirfd, name, flags));
}

static int r_renameat(int dirfd, const char *from, const char *to, int noreplace)
{
    RETRY(int, cur()->renameat(dirfd, from, to, noreplace));
}

static int r_linkat(int dirfd, const char *from, const char *to)
{
    RETRY(int, cur()->linkat(dirfd, from, to));
}

static int r_utimensat(int dirfd, const char *name, const struct timespec times[2])
{
    RETRY(int, cur()->utimensat(dirfd, name, times));
}

static int r_fstatat(int dirfd, const char *name, struct stat *st)
{
    RETRY(int, cur()->fstatat(dirfd, name, st));
}

static const kvs_io_ops retrying = {
    .open = r_open,
    .close = r_close,
    .pread = r_pread,
    .pwrite = r_pwrite,
    .preadv = r_preadv,
    .pwritev = r_pwritev,
    .fstat = r_fstat,
    .stat = r_stat,
    .fsync = r_fsync,
    .fallocate = r_fallocate,
    .mkdir = r_mkdir,
    .rename = r_rename,
    .rename_noreplace = r_rename_noreplace,
    .link = r_link,
    .unlink = r_unlink,
    .rmdir = r_rmdir,
    .statvfs = r_statvfs,
    .utimens = r_utimens,
    .opendir = r_opendir,
    .readdir = r_readdir,
    .closedir = r_closedir,
    .getrandom = r_getrandom,
    .open_beneath = r_open_beneath,
    .mkdirat = r_mkdirat,
    .unlinkat = r_unlinkat,
    .renameat = r_renameat,
    .linkat = r_linkat,
    .utimensat = r_utimensat,
    .fstatat = r_fstatat,
};

const kvs_io_ops *kvs__io(void)
{
    return &retrying;
}

const kvs_io_ops *kvs__io_set(const kvs_io_ops *ops)
{
    return atomic_exchange(&current, ops ? ops : &kvs__io_posix);
}

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
