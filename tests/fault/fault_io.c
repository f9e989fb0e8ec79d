/*
 * fault_io.c - a kvs_io_ops table that forwards to the real one and injects
 * the planned fault on the Nth counted call (see fault_io.h).  The counter
 * is atomic: the calls come from the engine's I/O threads.
 */
#include "fault_io.h"

#include "io_ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The plan, field by field, so the I/O threads read it race-free. */
static _Atomic int p_kind, p_err;
static _Atomic unsigned p_calls;
static atomic_uint_fast64_t p_nth;
static _Atomic uint32_t p_stall_ms;
static atomic_bool armed;
static atomic_uint_fast64_t count;
static atomic_bool fired;
static _Atomic(const char *) fired_what;

static const kvs_io_ops *real(void)
{
    return &kvs__io_posix;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The engine's collector thread does I/O of its own at times of its
 * choosing; counting it would make the Nth call of an operation vary from
 * run to run, so its calls pass untouched. */
static bool collector_thread(void)
{
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    return !strcmp(name, "kvs-collector");
}

/* Counts the call; true when it is the one to fault. */
static bool hit(unsigned cls, const char *name)
{
    if (!(atomic_load(&p_calls) & cls) || collector_thread())
        return false;
    uint64_t n = atomic_fetch_add(&count, 1) + 1;
    if (!atomic_load(&armed) || n != atomic_load(&p_nth))
        return false;
    if (atomic_exchange(&fired, true))
        return false;
    atomic_store(&fired_what, name);
    return true;
}

/* The fault for a call that is not a data transfer: an errno, or a stall;
 * "short" does not apply and lets the call through. */
#define META(name, fail_value, call)                          \
    do {                                                      \
        if (hit(FC_META, name)) {                             \
            if (atomic_load(&p_kind) == FAULT_ERRNO) {                   \
                errno = atomic_load(&p_err);                             \
                return fail_value;                            \
            }                                                 \
            if (atomic_load(&p_kind) == FAULT_STALL)                     \
                sleep_ms(atomic_load(&p_stall_ms));                      \
        }                                                     \
        return call;                                          \
    } while (0)

static int f_open(const char *path, int flags, mode_t mode)
{
    META("open", -1, real()->open(path, flags, mode));
}

/* close and closedir: true where the plan fails this call.  Linux releases
 * the descriptor even when close fails, so the real call is made either way
 * and planned_errno() gives the failure after it. */
static bool release_fails(const char *name)
{
    if (!hit(FC_META, name))
        return false;
    if (atomic_load(&p_kind) == FAULT_ERRNO)
        return true;
    if (atomic_load(&p_kind) == FAULT_STALL)
        sleep_ms(atomic_load(&p_stall_ms));
    return false;
}

static int planned_errno(void)
{
    errno = atomic_load(&p_err);
    return -1;
}

static int f_close(int fd)
{
    bool fail = release_fails("close");
    int rc = real()->close(fd);
    return fail ? planned_errno() : rc;
}

static size_t half(size_t n)
{
    return n > 1 ? n / 2 : n;
}

/* Counts a data transfer and applies the plan's fault to it: -1 (errno
 * set) to fail it, 1 to make it short, 0 to let it through (after the
 * stall, where that is the plan). */
static int data_fault(const char *name)
{
    if (!hit(FC_DATA, name))
        return 0;
    switch ((fault_kind)atomic_load(&p_kind)) {
    case FAULT_ERRNO: return planned_errno();
    case FAULT_SHORT: return 1;
    case FAULT_STALL: sleep_ms(atomic_load(&p_stall_ms)); break;
    }
    return 0;
}

static ssize_t f_pread(int fd, void *buf, size_t n, off_t off)
{
    int fault = data_fault("pread");
    return fault < 0 ? -1 : real()->pread(fd, buf, fault ? half(n) : n, off);
}

static ssize_t f_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    int fault = data_fault("pwrite");
    return fault < 0 ? -1 : real()->pwrite(fd, buf, fault ? half(n) : n, off);
}

/* A copy of iov cut to half its total length. */
static int cut_iov(const struct iovec *iov, int n, struct iovec *out)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    size_t want = half(total);
    int k = 0;
    for (; k < n && want > 0; k++) {
        out[k] = iov[k];
        if (out[k].iov_len > want)
            out[k].iov_len = want;
        want -= out[k].iov_len;
    }
    return k;
}

typedef ssize_t (*iov_call)(int fd, const struct iovec *iov, int iovcnt, off_t off);

/* preadv and pwritev: a short one transfers half of iov. */
static ssize_t iov_transfer(const char *name, iov_call call, int fd, const struct iovec *iov,
                            int n, off_t off)
{
    int fault = data_fault(name);
    if (fault <= 0)
        return fault < 0 ? -1 : call(fd, iov, n, off);
    struct iovec *c = malloc((size_t)n * sizeof *c);
    if (!c)
        abort();
    int k = cut_iov(iov, n, c);
    ssize_t r = call(fd, c, k, off);
    free(c);
    return r;
}

static ssize_t f_preadv(int fd, const struct iovec *iov, int n, off_t off)
{
    return iov_transfer("preadv", real()->preadv, fd, iov, n, off);
}

static ssize_t f_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    return iov_transfer("pwritev", real()->pwritev, fd, iov, n, off);
}

static int f_fstat(int fd, struct stat *st)
{
    META("fstat", -1, real()->fstat(fd, st));
}

static int f_stat(const char *path, struct stat *st)
{
    META("stat", -1, real()->stat(path, st));
}

static int f_fsync(int fd)
{
    META("fsync", -1, real()->fsync(fd));
}

static int f_fallocate(int fd, off_t off, off_t len)
{
    META("fallocate", -1, real()->fallocate(fd, off, len));
}

static int f_mkdir(const char *path, mode_t mode)
{
    META("mkdir", -1, real()->mkdir(path, mode));
}

static int f_rename(const char *from, const char *to)
{
    META("rename", -1, real()->rename(from, to));
}

static int f_rename_noreplace(const char *from, const char *to)
{
    META("rename_noreplace", -1, real()->rename_noreplace(from, to));
}

static int f_link(const char *from, const char *to)
{
    META("link", -1, real()->link(from, to));
}

static int f_unlink(const char *path)
{
    META("unlink", -1, real()->unlink(path));
}

static int f_rmdir(const char *path)
{
    META("rmdir", -1, real()->rmdir(path));
}

static int f_statvfs(const char *path, struct statvfs *st)
{
    META("statvfs", -1, real()->statvfs(path, st));
}

static int f_utimens(const char *path, const struct timespec times[2])
{
    META("utimens", -1, real()->utimens(path, times));
}

static DIR *f_opendir(const char *path)
{
    META("opendir", NULL, real()->opendir(path));
}

static struct dirent *f_readdir(DIR *dir)
{
    META("readdir", NULL, real()->readdir(dir));
}

static int f_closedir(DIR *dir)
{
    bool fail = release_fails("closedir");
    int rc = real()->closedir(dir);
    return fail ? planned_errno() : rc;
}

static int f_getrandom(void *buf, size_t n)
{
    META("getrandom", -1, real()->getrandom(buf, n));
}

static int f_open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    META("open_beneath", -1, real()->open_beneath(dirfd, path, flags, mode));
}

static int f_mkdirat(int dirfd, const char *name, mode_t mode)
{
    META("mkdirat", -1, real()->mkdirat(dirfd, name, mode));
}

static int f_unlinkat(int dirfd, const char *name, int flags)
{
    META("unlinkat", -1, real()->unlinkat(dirfd, name, flags));
}

static int f_renameat(int dirfd, const char *from, const char *to, int noreplace)
{
    META("renameat", -1, real()->renameat(dirfd, from, to, noreplace));
}

static int f_linkat(int dirfd, const char *from, const char *to)
{
    META("linkat", -1, real()->linkat(dirfd, from, to));
}

static int f_utimensat(int dirfd, const char *name, const struct timespec times[2])
{
    META("utimensat", -1, real()->utimensat(dirfd, name, times));
}

static int f_fstatat(int dirfd, const char *name, struct stat *st)
{
    META("fstatat", -1, real()->fstatat(dirfd, name, st));
}

static const kvs_io_ops fault_ops = {
    .open = f_open,
    .close = f_close,
    .pread = f_pread,
    .pwrite = f_pwrite,
    .preadv = f_preadv,
    .pwritev = f_pwritev,
    .fstat = f_fstat,
    .stat = f_stat,
    .fsync = f_fsync,
    .fallocate = f_fallocate,
    .mkdir = f_mkdir,
    .rename = f_rename,
    .rename_noreplace = f_rename_noreplace,
    .link = f_link,
    .unlink = f_unlink,
    .rmdir = f_rmdir,
    .statvfs = f_statvfs,
    .utimens = f_utimens,
    .opendir = f_opendir,
    .readdir = f_readdir,
    .closedir = f_closedir,
    .getrandom = f_getrandom,
    .open_beneath = f_open_beneath,
    .mkdirat = f_mkdirat,
    .unlinkat = f_unlinkat,
    .renameat = f_renameat,
    .linkat = f_linkat,
    .utimensat = f_utimensat,
    .fstatat = f_fstatat,
};

void fault_install(void)
{
    atomic_store(&armed, false);
    kvs__io_set(&fault_ops);
}

void fault_uninstall(void)
{
    atomic_store(&armed, false);
    kvs__io_set(NULL);
}

void fault_arm(const fault_plan *p)
{
    atomic_store(&armed, false);
    atomic_store(&p_kind, (int)p->kind);
    atomic_store(&p_err, p->err);
    atomic_store(&p_calls, p->calls);
    atomic_store(&p_nth, p->nth);
    atomic_store(&p_stall_ms, p->stall_ms);
    atomic_store(&count, 0);
    atomic_store(&fired, false);
    atomic_store(&fired_what, NULL);
    atomic_store(&armed, true);
}

void fault_disarm(void)
{
    atomic_store(&armed, false);
}

uint64_t fault_calls(void)
{
    return atomic_load(&count);
}

bool fault_fired(const char **what_out)
{
    bool f = atomic_load(&fired);
    if (what_out)
        *what_out = f ? atomic_load(&fired_what) : "";
    return f;
}

const char *fault_name(const fault_plan *p)
{
    switch (p->kind) {
    case FAULT_SHORT: return "short transfer";
    case FAULT_STALL: return "stall";
    case FAULT_ERRNO: break;
    }
    switch (p->err) {
    case ENOSPC: return "ENOSPC";
    case EIO: return "EIO";
    case EINTR: return "EINTR";
    case ESTALE: return "ESTALE";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EDQUOT: return "EDQUOT";
    case ENOMEM: return "ENOMEM";
    default: return strerror(p->err);
    }
}
