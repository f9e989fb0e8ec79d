/*
 * io_ops.h - the table of filesystem calls the library makes.
 *
 * Every call that touches the store goes through kvs__io(), so a test can
 * swap in a table that fails the Nth call with any errno, returns short
 * counts or stalls (tests/fault).  The functions have the system calls'
 * conventions: -1 with errno set on failure.
 *
 * kvs__io() hands out a thin layer over the table in use that retries a
 * call interrupted by a signal (EINTR), a bounded number of times, so no
 * caller has to: NFS mounted "intr", FUSE daemons and some parallel
 * filesystems return EINTR from open, stat, rename and friends.  close() is
 * never retried (Linux has released the descriptor even when it reports
 * EINTR, and a retry could close another thread's new descriptor): its
 * EINTR reads as success.
 */
#ifndef KVS_IO_OPS_H
#define KVS_IO_OPS_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct kvs_io_ops {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    ssize_t (*preadv)(int fd, const struct iovec *iov, int iovcnt, off_t off);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int iovcnt, off_t off);
    int (*fstat)(int fd, struct stat *st);
    int (*stat)(const char *path, struct stat *st);   /* no symlink follow */
    int (*fsync)(int fd);
    /* Allocates [off, off + len) of a file (fallocate mode 0, the size
     * grows to cover it); EOPNOTSUPP where the filesystem cannot. */
    int (*fallocate)(int fd, off_t off, off_t len);
    int (*mkdir)(const char *path, mode_t mode);
    int (*rename)(const char *from, const char *to);
    /* rename that fails with EEXIST instead of replacing (renameat2
     * RENAME_NOREPLACE); EINVAL or ENOSYS where the filesystem lacks it. */
    int (*rename_noreplace)(const char *from, const char *to);
    int (*link)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*rmdir)(const char *path);
    int (*statvfs)(const char *path, struct statvfs *st);
    /* Sets atime and mtime of a path (no symlink follow); NULL: now. */
    int (*utimens)(const char *path, const struct timespec times[2]);
    DIR *(*opendir)(const char *path);
    struct dirent *(*readdir)(DIR *dir);
    int (*closedir)(DIR *dir);
    /* Fills buf with n random bytes from the OS. */
    int (*getrandom)(void *buf, size_t n);

    /* Calls relative to a directory descriptor, none of which follows a
     * symbolic link anywhere in `path`: what keeps a symlink planted in the
     * store from sending a read or a write outside it. */
    /* Opens path (components separated by '/', no "..") below dirfd:
     * openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a walk with
     * O_NOFOLLOW on each component where openat2 is missing.  ELOOP (or
     * EXDEV) when a component is a symlink. */
    int (*open_beneath)(int dirfd, const char *path, int flags, mode_t mode);
    /* The *at calls on one `name` (no '/') in dirfd; no symlink follow. */
    int (*mkdirat)(int dirfd, const char *name, mode_t mode);
    int (*unlinkat)(int dirfd, const char *name, int flags);
    /* Renames within dirfd; `noreplace` as rename_noreplace above. */
    int (*renameat)(int dirfd, const char *from, const char *to, int noreplace);
    int (*linkat)(int dirfd, const char *from, const char *to);
    int (*utimensat)(int dirfd, const char *name, const struct timespec times[2]);
    /* lstat of one `name` in dirfd (fstatat with AT_SYMLINK_NOFOLLOW). */
    int (*fstatat)(int dirfd, const char *name, struct stat *st);
} kvs_io_ops;

/* The table in use (the real one unless a test replaced it), behind the
 * EINTR retry layer described above. */
const kvs_io_ops *kvs__io(void);
/* Replaces the table (NULL restores the real one); returns the old one.
 * Only for tests: the caller makes sure no I/O is in flight. */
const kvs_io_ops *kvs__io_set(const kvs_io_ops *ops);
/* The real system calls, for wrappers that forward to them. */
extern const kvs_io_ops kvs__io_posix;
/* Test hook: open_beneath takes the O_NOFOLLOW walk, as on a kernel
 * without openat2 (on = true), or openat2 again. */
void kvs__io_test_no_openat2(bool on);

/* Helpers with the usual retry rules: EINTR is retried, short transfers are
 * continued; a zero-length read before n bytes gives errno = ENODATA. */
int kvs__pread_full(int fd, void *buf, size_t n, off_t off);
int kvs__pwrite_full(int fd, const void *buf, size_t n, off_t off);

#endif
