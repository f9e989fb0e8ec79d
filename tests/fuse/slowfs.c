/*
 * slowfs.c - a FUSE filesystem for tests: it passes every call through to
 * a backing folder, and delays or blocks calls on command, to play a slow
 * or hung network mount.
 *
 *   slowfs BACKING MOUNTPOINT CONTROL_FIFO [fuse options]
 *
 * Commands, one per line written to CONTROL_FIFO (a thread of its own reads
 * it, so commands work while every FUSE thread is blocked):
 *
 *   pass                 no delay, nothing blocked (the start state)
 *   delay MS [CLASS]     every call of CLASS sleeps MS milliseconds first
 *   block [CLASS]        every call of CLASS waits until "pass"
 *
 * CLASS is all (the default), data (read, write), open (open, create) or
 * meta (everything else: lookups, getattr, mkdir, rename, unlink, ...).
 * The daemon appends "ok <command>" to CONTROL_FIFO.ack (a plain file) once
 * a command is in force.  Attribute and entry caching are off and files are
 * opened direct_io, so every call of the test reaches the daemon.  It ends
 * when the mount is unmounted, releasing whatever is still blocked.
 */
#define FUSE_USE_VERSION 312
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <fuse.h>
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { C_DATA = 1, C_OPEN = 2, C_META = 4, C_ALL = 7 };

static int backing = -1;              /* the backing folder */
static const char *ctl_path;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned block_mask;           /* under mu */
static unsigned delay_mask;
static unsigned delay_ms;
static unsigned long generation;      /* bumped by every command */

/* Called at the start of each operation of class cls. */
static void gate(unsigned cls)
{
    pthread_mutex_lock(&mu);
    unsigned d = (delay_mask & cls) ? delay_ms : 0;
    unsigned long gen = generation;
    while ((block_mask & cls) && generation == gen)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (d) {
        struct timespec ts = {d / 1000, (long)(d % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

/* "/a/b" -> "a/b"; "/" -> "." */
static const char *rel(const char *path)
{
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    gate(C_META);
    int r = fi ? fstat((int)fi->fh, st) : fstatat(backing, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return r == 0 ? 0 : -errno;
}

static int fs_readlink(const char *path, char *buf, size_t size)
{
    gate(C_META);
    ssize_t n = readlinkat(backing, rel(path), buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static int fs_mkdir(const char *path, mode_t mode)
{
    gate(C_META);
    return mkdirat(backing, rel(path), mode) == 0 ? 0 : -errno;
}

static int fs_unlink(const char *path)
{
    gate(C_META);
    return unlinkat(backing, rel(path), 0) == 0 ? 0 : -errno;
}

static int fs_rmdir(const char *path)
{
    gate(C_META);
    return unlinkat(backing, rel(path), AT_REMOVEDIR) == 0 ? 0 : -errno;
}

static int fs_symlink(const char *target, const char *path)
{
    gate(C_META);
    return symlinkat(target, backing, rel(path)) == 0 ? 0 : -errno;
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
    gate(C_META);
    long r = syscall(SYS_renameat2, backing, rel(from), backing, rel(to), flags);
    return r == 0 ? 0 : -errno;
}

static int fs_link(const char *from, const char *to)
{
    gate(C_META);
    return linkat(backing, rel(from), backing, rel(to), 0) == 0 ? 0 : -errno;
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    gate(C_META);
    int r = fi ? fchmod((int)fi->fh, mode) : fchmodat(backing, rel(path), mode, 0);
    return r == 0 ? 0 : -errno;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    gate(C_META);
    if (fi)
        return ftruncate((int)fi->fh, size) == 0 ? 0 : -errno;
    int fd = openat(backing, rel(path), O_WRONLY | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    int r = ftruncate(fd, size) == 0 ? 0 : -errno;
    close(fd);
    return r;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
    gate(C_OPEN);
    int fd = openat(backing, rel(path), (fi->flags & ~(O_DIRECT | O_NOATIME)) | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t)fd;
    fi->direct_io = 1;
    return 0;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    gate(C_OPEN);
    int fd = openat(backing, rel(path), (fi->flags & ~(O_DIRECT | O_NOATIME)) | O_CREAT | O_NOFOLLOW,
                    mode);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t)fd;
    fi->direct_io = 1;
    return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    gate(C_DATA);
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    gate(C_DATA);
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int fs_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    gate(C_META);
    return fstatvfs(backing, st) == 0 ? 0 : -errno;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    close((int)fi->fh); /* never blocked: the kernel does not wait for it */
    return 0;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    gate(C_DATA);
    int r = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);
    return r == 0 ? 0 : -errno;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
    gate(C_META);
    int fd = openat(backing, rel(path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path;
    (void)off;
    (void)flags;
    gate(C_META);
    DIR *d = (DIR *)(uintptr_t)fi->fh;
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_ino = e->d_ino;
        st.st_mode = (mode_t)DTTOIF(e->d_type);
        if (fill(buf, e->d_name, &st, 0, 0))
            break;
    }
    return 0;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    closedir((DIR *)(uintptr_t)fi->fh);
    return 0;
}

static int fs_access(const char *path, int mask)
{
    gate(C_META);
    return faccessat(backing, rel(path), mask, 0) == 0 ? 0 : -errno;
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    gate(C_META);
    int r = fi ? futimens((int)fi->fh, tv) : utimensat(backing, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return r == 0 ? 0 : -errno;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->direct_io = 1;
    return NULL;
}

static const struct fuse_operations ops = {
    .init = fs_init,
    .getattr = fs_getattr,
    .readlink = fs_readlink,
    .mkdir = fs_mkdir,
    .unlink = fs_unlink,
    .rmdir = fs_rmdir,
    .symlink = fs_symlink,
    .rename = fs_rename,
    .link = fs_link,
    .chmod = fs_chmod,
    .truncate = fs_truncate,
    .open = fs_open,
    .create = fs_create,
    .read = fs_read,
    .write = fs_write,
    .statfs = fs_statfs,
    .release = fs_release,
    .fsync = fs_fsync,
    .opendir = fs_opendir,
    .readdir = fs_readdir,
    .releasedir = fs_releasedir,
    .access = fs_access,
    .utimens = fs_utimens,
};

static unsigned parse_class(const char *s)
{
    if (!s || !*s || !strcmp(s, "all"))
        return C_ALL;
    if (!strcmp(s, "data"))
        return C_DATA;
    if (!strcmp(s, "open"))
        return C_OPEN;
    if (!strcmp(s, "meta"))
        return C_META;
    return 0;
}

static void ack(const char *line)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.ack", ctl_path);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "ok %s\n", line);
        fclose(f);
    }
}

static void *control(void *arg)
{
    (void)arg;
    for (;;) {
        FILE *f = fopen(ctl_path, "r"); /* blocks until a writer opens it */
        if (!f)
            return NULL;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            char cmd[32] = "", a1[32] = "", a2[32] = "";
            sscanf(line, "%31s %31s %31s", cmd, a1, a2);
            pthread_mutex_lock(&mu);
            generation++;
            if (!strcmp(cmd, "pass")) {
                block_mask = delay_mask = 0;
            } else if (!strcmp(cmd, "delay")) {
                delay_ms = (unsigned)atoi(a1);
                delay_mask = parse_class(a2);
            } else if (!strcmp(cmd, "block")) {
                block_mask = parse_class(a1);
            }
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
            ack(line);
        }
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: slowfs BACKING MOUNTPOINT CONTROL_FIFO [fuse options]\n");
        return 2;
    }
    backing = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (backing < 0) {
        perror(argv[1]);
        return 2;
    }
    ctl_path = argv[3];
    /* fuse args: progname, mountpoint, -f, then the caller's extras. */
    char *fargv[64];
    int fargc = 0;
    fargv[fargc++] = argv[0];
    fargv[fargc++] = argv[2];
    fargv[fargc++] = "-f";
    fargv[fargc++] = "-o";
    fargv[fargc++] = "max_threads=256,default_permissions,allow_other,fsname=slowfs";
    for (int i = 4; i < argc && fargc < 63; i++)
        fargv[fargc++] = argv[i];
    fargv[fargc] = NULL;
    struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);
    struct fuse_cmdline_opts opts;
    if (fuse_parse_cmdline(&args, &opts) != 0)
        return 2;
    struct fuse *fuse = fuse_new(&args, &ops, sizeof ops, NULL);
    if (!fuse)
        return 2;
    if (fuse_mount(fuse, opts.mountpoint) != 0)
        return 3;
    pthread_t th;
    pthread_create(&th, NULL, control, NULL);
    pthread_detach(th);
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(lc, 256);
    fuse_loop_cfg_set_idle_threads(lc, 8);
    int rc = fuse_loop_mt(fuse, lc);
    fuse_loop_cfg_destroy(lc);
    /* Release anything still blocked so the kernel's requests end. */
    pthread_mutex_lock(&mu);
    block_mask = delay_mask = 0;
    generation++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    fuse_unmount(fuse);
    fuse_destroy(fuse);
    free(opts.mountpoint);
    fuse_opt_free_args(&args);
    return rc ? 1 : 0;
}
