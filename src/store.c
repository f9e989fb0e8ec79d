/*
 * store.c - chunk files on the shared mount.
 *
 * Layout: <root>/<namespace>/<xx>/<yy>/<key hex>, where xx and yy are the
 * first two bytes of the key, so 65536 leaf folders share the files and no
 * folder grows past tens of thousands of entries even at a billion chunks.
 * With several roots (weka_path "a,b"), each key lives on one root chosen
 * from its bytes and the roots' store ids (rendezvous hashing, see
 * kvs__store_pick), so every instance looks for it in the same place
 * whatever the order or the names under which it mounts the roots.
 *
 * Files are immutable.  A writer creates a unique temporary name in the
 * chunk's folder (O_CREAT|O_EXCL, a random suffix from the OS), fills it,
 * and publishes it with a rename that refuses to replace (renameat2
 * RENAME_NOREPLACE; link+unlink where the filesystem lacks that; a plain
 * rename as the last resort, harmless because same key means same bytes).
 * So a reader sees either no file or a complete one, the first complete
 * file wins, and no lock is taken on any path.
 *
 * Nothing in the store is trusted to stay where it should: the store is
 * shared, and anyone who can write it can plant a symlink.  The root may be
 * a symlink (a common way to point at the mount), followed once at open;
 * below it, each namespace folder is opened once (O_PATH, O_NOFOLLOW) and
 * every chunk file, temporary file and fan-out folder is reached from that
 * descriptor by calls that follow no symlink in any component (openat2
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or an O_NOFOLLOW walk), so no read,
 * write, rename or removal ever lands outside the store.
 */
#include "store.h"

#include "chunk_file.h"
#include "io_ops.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- names on the mount (store.h) ----------------------------------------- */

/* Every path is built here.  store_open refuses roots long enough to make
 * any of them overflow, so truncation cannot happen. */
void kvs__pathf(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, KVS_PATH_MAX, fmt, ap);
    va_end(ap);
}

uint64_t kvs__temp_suffix(void)
{
    uint64_t r = 0;
    if (kvs__io()->getrandom(&r, sizeof r) != 0)
        r = kvs__now_ns() ^ ((uint64_t)getpid() << 40);
    return r;
}

bool kvs__temp_name(char *buf, size_t cap, const char *prefix, uint64_t suffix)
{
    int n = snprintf(buf, cap, "%s.%016llx" KVS_TMP_SUFFIX, prefix, (unsigned long long)suffix);
    return n >= 0 && (size_t)n < cap;
}

static bool hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!hex_lower(s[i]))
            return false;
    return true;
}

bool kvs__is_temp_name(const char *name)
{
    size_t n = strlen(name);
    const size_t tail = 1 + 16 + 4; /* ".<16 hex>.tmp" */
    if (n < tail + 1 || strcmp(name + n - 4, KVS_TMP_SUFFIX) != 0)
        return false;
    return name[n - tail] == '.' && all_hex(name + n - 20, 16);
}

bool kvs__is_chunk_name(const char *name, uint8_t key[KVS_KEY_BYTES])
{
    if (strlen(name) != 2 * KVS_KEY_BYTES || !all_hex(name, 2 * KVS_KEY_BYTES))
        return false;
    return kvs__unhex(name, key, KVS_KEY_BYTES) == 0;
}

bool kvs__is_ns_dir_name(const char *name)
{
    size_t n = strlen(name);
    return n >= 18 && name[0] != '.' && name[n - 17] == '-' && all_hex(name + n - 16, 16);
}

void kvs__fanout(const uint8_t *key, char buf[KVS_FANOUT_LEN])
{
    snprintf(buf, KVS_FANOUT_LEN, "%02x/%02x", key[0], key[1]);
}

/* Writes and reads back one aligned block with O_DIRECT: the only reliable
 * answer to "does this filesystem take O_DIRECT". */
int kvs__direct_probe(int dirfd, const char *prefix, const char **step_out)
{
    const kvs_io_ops *io = kvs__io();
    char tmp[NAME_MAX + 1];
    kvs__temp_name(tmp, sizeof tmp, prefix, kvs__temp_suffix());
    void *buf = kvs__aligned_alloc(KVS_FILE_ALIGN, KVS_FILE_ALIGN);
    *step_out = "allocate";
    if (!buf)
        return ENOMEM;
    memset(buf, 0x5a, KVS_FILE_ALIGN);
    int fd = io->open_beneath(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT,
                              0600);
    *step_out = "create";
    int err = 0;
    if (fd >= 0) {
        *step_out = "write";
        if (kvs__pwrite_full(fd, buf, KVS_FILE_ALIGN, 0) != 0)
            err = errno;
        io->close(fd);
        if (!err) {
            *step_out = "read";
            fd = io->open_beneath(dirfd, tmp, O_RDONLY | O_CLOEXEC | O_DIRECT, 0);
            if (fd < 0 || kvs__pread_full(fd, buf, KVS_FILE_ALIGN, 0) != 0)
                err = errno;
            if (fd >= 0)
                io->close(fd);
        }
        io->unlinkat(dirfd, tmp, 0);
    } else {
        err = errno;
    }
    kvs__free(buf);
    return err;
}

static int mkdir_p(const char *path, mode_t mode)
{
    const kvs_io_ops *io = kvs__io();
    char buf[KVS_PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (io->mkdir(buf, mode) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (io->mkdir(buf, mode) != 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (io->stat(buf, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

mode_t kvs__dir_mode(uint32_t file_mode)
{
    /* A folder is searchable by whoever may read its files. */
    mode_t m = (mode_t)file_mode | 0700;
    if (file_mode & 0040)
        m |= 0010;
    if (file_mode & 0004)
        m |= 0001;
    return m;
}

#define dir_mode kvs__dir_mode

/* ---- metadata files ------------------------------------------------------- */

/* The type of the last non-regular file kvs__meta_open met on this thread,
 * for kvs__meta_strerror. */
static __thread mode_t last_kind;

static const char *kind_name(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFDIR: return "a folder";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
    }
}

const char *kvs__meta_strerror(int err)
{
    static __thread char text[96];
    if (err < 0)
        err = -err;
    if (err == KVS_ENOTREG) {
        snprintf(text, sizeof text, "is %s, not a regular file", kind_name(last_kind));
        return text;
    }
    if (err == ELOOP || err == EXDEV)
        return "is a symbolic link (not followed)";
    return strerror(err);
}

static int not_regular(mode_t m)
{
    last_kind = m;
    return -KVS_ENOTREG;
}

int kvs__root_open(const char *root)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == EACCES)
        fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int kvs__meta_dir_open(int rootfd, bool create, uint32_t file_mode)
{
    const kvs_io_ops *io = kvs__io();
    if (create && io->mkdirat(rootfd, KVS_META_DIR, dir_mode(file_mode)) != 0 && errno != EEXIST)
        return -errno;
    int fd = io->open_beneath(rootfd, KVS_META_DIR,
                              O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0 && errno == EACCES)
        fd = io->open_beneath(rootfd, KVS_META_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                              0);
    if (fd < 0) {
        int err = errno == EXDEV ? ELOOP : errno;
        struct stat st;
        if (err == ENOTDIR && io->fstatat(rootfd, KVS_META_DIR, &st) == 0) {
            last_kind = st.st_mode;
            return S_ISLNK(st.st_mode) ? -ELOOP : -KVS_ENOTREG;
        }
        return -err;
    }
    return fd;
}

int kvs__meta_open(int dirfd, const char *name, int flags, mode_t mode)
{
    const kvs_io_ops *io = kvs__io();
    int fd = io->open_beneath(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
    if (fd < 0) {
        int err = errno;
        if (err == EXDEV)
            return -ELOOP;
        /* A socket (ENXIO), a FIFO without a reader for a writer (ENXIO),
         * a device without a driver (ENODEV), a folder (EISDIR): say what
         * it is. */
        struct stat st;
        if ((err == ENXIO || err == ENODEV || err == EISDIR || err == EOPNOTSUPP ||
             err == EWOULDBLOCK) &&
            io->fstatat(dirfd, name, &st) == 0 && !S_ISREG(st.st_mode))
            return not_regular(st.st_mode);
        return -err;
    }
    struct stat st;
    if (io->fstat(fd, &st) != 0) {
        int err = errno;
        io->close(fd);
        return -err;
    }
    if (!S_ISREG(st.st_mode)) {
        io->close(fd);
        return not_regular(st.st_mode);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int kvs__meta_read(int dirfd, const char *name, char *buf, size_t cap)
{
    const kvs_io_ops *io = kvs__io();
    int fd = kvs__meta_open(dirfd, name, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    size_t len = 0;
    int rc = 0;
    while (len < cap - 1) {
        ssize_t n = io->pread(fd, buf + len, cap - 1 - len, (off_t)len);
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    io->close(fd);
    buf[len] = '\0';
    return rc ? rc : (int)len;
}


/* A metadata file's temporary name: ".<name>.<16 hex>.tmp"; -ENAMETOOLONG
 * where the name leaves no room for it. */
static int meta_temp_name(const char *name, char *buf, size_t cap)
{
    char prefix[NAME_MAX + 1];
    int n = snprintf(prefix, sizeof prefix, ".%s", name);
    if (n < 0 || (size_t)n >= sizeof prefix ||
        !kvs__temp_name(buf, cap, prefix, kvs__temp_suffix()))
        return -ENAMETOOLONG;
    return 0;
}

int kvs__meta_write(int dirfd, const char *name, const void *data, size_t len,
                    uint32_t file_mode, unsigned flags)
{
    const kvs_io_ops *io = kvs__io();
    char tmp[NAME_MAX + 1];
    int fd = meta_temp_name(name, tmp, sizeof tmp);
    if (fd < 0)
        return fd;
    fd = kvs__meta_open(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL, (mode_t)file_mode);
    if (fd < 0)
        return fd;
    int rc = kvs__pwrite_full(fd, data, len, 0) == 0 ? 0 : -errno;
    if (rc == 0 && (flags & KVS_META_SYNC) && io->fsync(fd) != 0)
        rc = -errno;
    if (io->close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0) {
        if (!(flags & KVS_META_NOREPLACE)) {
            if (io->renameat(dirfd, tmp, name, 0) != 0)
                rc = -errno;
        } else if (io->renameat(dirfd, tmp, name, 1) != 0) {
            rc = -errno;
            if (rc == -EINVAL || rc == -ENOSYS || rc == -ENOTSUP)
                rc = io->linkat(dirfd, tmp, name) == 0 ? 0 : -errno;
            if (rc == -EEXIST)
                rc = 1;
        }
    }
    io->unlinkat(dirfd, tmp, 0); /* ENOENT once renamed */
    if (rc == 0 && (flags & KVS_META_SYNC) && io->fsync(dirfd) != 0 && errno != EBADF &&
        errno != EINVAL)
        rc = -errno; /* EBADF: an O_PATH folder, EINVAL: a filesystem without it */
    return rc;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

int kvs__unlink_examined(int dirfd, const char *name, const struct stat *examined)
{
    const kvs_io_ops *io = kvs__io();
    struct stat now;
    if (io->fstatat(dirfd, name, &now) != 0)
        return errno == ENOENT || errno == ESTALE ? 1 : -errno;
    if (!same_file(&now, examined))
        return 1;
    /* Set it aside under a name only we know, then look again: what we
     * moved is the file examined, or it goes back. */
    char priv[NAME_MAX + 1];
    int rc = meta_temp_name(name, priv, sizeof priv);
    if (rc < 0)
        return rc;
    if (io->renameat(dirfd, name, priv, 0) != 0)
        return errno == ENOENT || errno == ESTALE ? 1 : -errno;
    if (io->fstatat(dirfd, priv, &now) == 0 && same_file(&now, examined)) {
        if (io->unlinkat(dirfd, priv, S_ISDIR(now.st_mode) ? AT_REMOVEDIR : 0) != 0)
            return -errno;
        return 0;
    }
    /* Another file was published under the name in between: put it back
     * (or, if yet another took the name since, drop this copy of the same
     * key). */
    if (io->renameat(dirfd, priv, name, 1) != 0) {
        int err = errno;
        if ((err == EINVAL || err == ENOSYS || err == ENOTSUP) &&
            io->linkat(dirfd, priv, name) == 0)
            err = 0;
        io->unlinkat(dirfd, priv, 0);
        (void)err;
    }
    return 1;
}

static kvs_status write_namespace_file(kvs_fstore *s, uint32_t p, const kvs_ns *ns)
{
    const kvs_io_ops *io = kvs__io();
    int dfd = s->ns_fd[p];
    /* Informative only (engines never read it back): a regular file there
     * stays; a symlink, FIFO or socket planted there is replaced, never
     * written through or opened. */
    struct stat st;
    bool exists = io->fstatat(dfd, KVS_NAMESPACE_FILE, &st) == 0;
    if (exists && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
        return KVS_OK;
    char *desc = kvs__ns_describe_json(ns);
    if (!desc)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory describing the namespace");
    size_t len = strlen(desc);
    desc[len] = '\n';
    int rc = kvs__meta_write(dfd, KVS_NAMESPACE_FILE, desc, len + 1, s->file_mode,
                             exists ? 0 : KVS_META_NOREPLACE);
    kvs__free(desc);
    if (rc < 0)
        return kvs__fail(kvs__errno_status(-rc), "cannot write %s/" KVS_NAMESPACE_FILE ": %s",
                         s->ns_path[p], kvs__meta_strerror(-rc));
    return KVS_OK;
}

/* Asks kvs__direct_probe about the first namespace folder and records the
 * verdict and its reason. */
static void probe_direct(kvs_fstore *s)
{
    const char *step = "";
    int err = kvs__direct_probe(s->ns_fd[0], ".direct-probe", &step);
    if (err == ENOMEM) {
        __atomic_store_n(&s->direct, false, __ATOMIC_RELEASE);
        snprintf(s->direct_reason, sizeof s->direct_reason, "off: out of memory for the probe");
        return;
    }
    /* No room is no answer: the filesystem did not get to say whether it
     * takes O_DIRECT.  Off for now, and asked again once a second from the
     * store path, so an engine opened on a full filesystem does not stay
     * off for life. */
    bool no_room = err == ENOSPC || err == EDQUOT;
    __atomic_store_n(&s->direct_retry_ns, no_room ? kvs__now_ns() + 1000000000u : 0,
                     __ATOMIC_RELAXED);
    if (err == 0)
        snprintf(s->direct_reason, sizeof s->direct_reason, "on: probe write and read passed");
    else if (no_room)
        snprintf(s->direct_reason, sizeof s->direct_reason,
                 "off for now: no room for the probe (%s: %s); probed again when stores find "
                 "room", step, strerror(err));
    else
        snprintf(s->direct_reason, sizeof s->direct_reason,
                 "off: the filesystem refused O_DIRECT (%s: %s)", step, strerror(err));
    __atomic_store_n(&s->direct, err == 0, __ATOMIC_RELEASE);
}

/* ---- store ids ------------------------------------------------------------ */

/* 0, -errno, -EBADMSG (not 16 hex digits), -ENODATA (empty: a crash before
 * the file reached the disk); *st_out is the file read. */
static int read_store_id(int mfd, uint64_t *id_out, struct stat *st_out)
{
    const kvs_io_ops *io = kvs__io();
    char text[64] = "";
    int fd = kvs__meta_open(mfd, KVS_STORE_ID_FILE, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    ssize_t n = io->fstat(fd, st_out) == 0 ? io->pread(fd, text, sizeof text - 1, 0) : -1;
    int err = errno;
    io->close(fd);
    if (n < 0)
        return -err;
    if (n == 0)
        return -ENODATA;
    uint8_t raw[8];
    if (n < 16 || (n > 16 && text[16] != '\n'))
        return -EBADMSG;
    text[16] = '\0';
    if (kvs__unhex(text, raw, sizeof raw) != 0)
        return -EBADMSG;
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | raw[i];
    *id_out = id;
    return 0;
}

kvs_status kvs__store_root_id(const char *root, bool create, uint32_t file_mode, uint64_t *id_out)
{
    kvs_status st = KVS_OK;
    int rfd = kvs__root_open(root);
    if (rfd < 0)
        return kvs__fail(kvs__errno_status(-rfd), "store path %s: %s", root, strerror(-rfd));
    int mfd = kvs__meta_dir_open(rfd, create, file_mode);
    if (mfd < 0) {
        st = kvs__fail(mfd == -ENOENT ? KVS_ERR_NOT_FOUND : kvs__errno_status(-mfd),
                       "%s/" KVS_META_DIR " %s", root, kvs__meta_strerror(-mfd));
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        struct stat sb;
        int rc = read_store_id(mfd, id_out, &sb);
        if (rc == 0)
            break;
        bool empty = rc == -ENODATA;
        if (!create || (rc != -ENOENT && !empty) || attempt == 3) {
            st = kvs__fail(rc == -ENOENT ? KVS_ERR_NOT_FOUND
                           : rc == -EBADMSG || empty ? KVS_ERR_CORRUPT
                                                      : kvs__errno_status(-rc),
                           "store id %s/" KVS_META_DIR "/" KVS_STORE_ID_FILE ": %s", root,
                           rc == -EBADMSG ? "not 16 hex digits"
                           : empty        ? "empty (a crash before it reached the disk; an "
                                            "engine that opens the store repairs it)"
                                          : kvs__meta_strerror(-rc));
            goto out;
        }
        /* An empty id never named anything: remove it (only that very file,
         * so a good id written meanwhile stays) and make one, as the first
         * engine does. */
        if (empty) {
            kvs__log(KVS_LOG_WARN, "store id %s/" KVS_META_DIR "/" KVS_STORE_ID_FILE
                     " is empty (a crash before it reached the disk); making a new one", root);
            kvs__unlink_examined(mfd, KVS_STORE_ID_FILE, &sb);
        }
        uint8_t raw[8];
        if (kvs__io()->getrandom(raw, sizeof raw) != 0) {
            st = kvs__fail(KVS_ERR_IO, "getrandom failed making a store id: %s", strerror(errno));
            goto out;
        }
        char hex[17];
        kvs__hex(raw, sizeof raw, hex);
        hex[16] = '\n';
        /* First writer wins; everyone then reads what won.  On disk before
         * anyone may read it: an id that vanishes in a crash would move
         * every key to another path. */
        rc = kvs__meta_write(mfd, KVS_STORE_ID_FILE, hex, 17, file_mode,
                             KVS_META_SYNC | KVS_META_NOREPLACE);
        if (rc < 0) {
            st = kvs__fail(kvs__errno_status(-rc), "cannot write the store id in %s/" KVS_META_DIR
                           ": %s", root, kvs__meta_strerror(-rc));
            goto out;
        }
    }
out:
    if (mfd >= 0)
        kvs__io()->close(mfd);
    kvs__io()->close(rfd);
    return st;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint32_t kvs__store_pick(const uint64_t *ids, uint32_t n, const uint8_t *key)
{
    if (n <= 1)
        return 0;
    uint64_t k = 0;
    for (int i = 0; i < 8; i++) /* not the bytes that pick the fan-out folders */
        k |= (uint64_t)key[8 + i] << (8 * i);
    uint32_t best = 0;
    uint64_t best_score = 0;
    for (uint32_t p = 0; p < n; p++) {
        uint64_t score = mix64(ids[p] ^ k);
        if (p == 0 || score > best_score) {
            best = p;
            best_score = score;
        }
    }
    return best;
}

kvs_status kvs__store_open(kvs_fstore *s, const kvs_config *cfg, const kvs_ns *ns)
{
    const kvs_io_ops *io = kvs__io();
    memset(s, 0, sizeof *s);
    s->file_mode = cfg->file_mode;
    s->durable = cfg->durable_writes;
    s->noatime = true;
    s->npaths = cfg->num_store_paths;
    s->ns = ns;
    bool configured = cfg->weka_path != NULL;
    kvs_status st = KVS_OK;
    for (uint32_t p = 0; p < s->npaths; p++) {
        const char *root = cfg->store_paths[p];
        struct stat sb;
        if (!configured && mkdir_p(root, 0755) != 0) {
            st = kvs__fail(kvs__errno_status(errno), "cannot create the default store folder %s: %s",
                           root, strerror(errno));
            goto fail;
        }
        if (io->stat(root, &sb) != 0) {
            int err = errno;
            if (err == ENOENT)
                st = kvs__fail(KVS_ERR_CONFIG,
                               "weka_path %s does not exist (set by %s); create it first, "
                               "e.g. mkdir -p %s",
                               root,
                               cfg->source[KVS_CFG_WEKA_PATH] == KVS_SOURCE_ENV
                                   ? "LMCACHE_WEKA_PATH or LMCACHE_GDS_PATH"
                               : cfg->source[KVS_CFG_WEKA_PATH] == KVS_SOURCE_FILE
                                   ? "the file named by LMCACHE_CONFIG_FILE"
                                   : "kvs_config_set",
                               root);
            else
                st = kvs__fail(kvs__errno_status(err), "cannot use store path %s: %s", root,
                               strerror(err));
            goto fail;
        }
        /* The root may itself be a symlink to the mount (a common setup):
         * follow it here, once; nothing below it is followed. */
        if (!S_ISDIR(sb.st_mode) && !(S_ISLNK(sb.st_mode) && stat(root, &sb) == 0 && S_ISDIR(sb.st_mode))) {
            st = kvs__fail(KVS_ERR_CONFIG, "store path %s is not a directory", root);
            goto fail;
        }
        if (strlen(root) + strlen(ns->dir) + 2 * KVS_KEY_BYTES + 64 >= KVS_PATH_MAX) {
            st = kvs__fail(KVS_ERR_CONFIG, "store path %s is too long (limit %d bytes)", root,
                           KVS_PATH_MAX - (int)strlen(ns->dir) - 2 * KVS_KEY_BYTES - 64);
            goto fail;
        }
        s->root[p] = kvs__strdup(root);
        s->ns_path[p] = kvs__asprintf("%s/%s", root, ns->dir);
        if (!s->root[p] || !s->ns_path[p]) {
            st = kvs__fail(KVS_ERR_NOMEM, "out of memory opening the store");
            goto fail;
        }
        int rfd = kvs__root_open(root);
        if (rfd < 0) {
            st = kvs__fail(kvs__errno_status(-rfd), "cannot open store path %s: %s", root,
                           strerror(-rfd));
            goto fail;
        }
        s->root_fd[p] = rfd;
        s->nroot_fds = p + 1;
        if (io->mkdirat(rfd, ns->dir, dir_mode(s->file_mode)) != 0 && errno != EEXIST) {
            st = kvs__fail(kvs__errno_status(errno), "cannot create namespace folder %s: %s",
                           s->ns_path[p], strerror(errno));
            goto fail;
        }
        /* O_NOFOLLOW | O_DIRECTORY: a symlink in its place is refused. */
        int fd = io->open_beneath(rfd, ns->dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd < 0) {
            int err = errno == EXDEV ? ELOOP : errno;
            st = kvs__fail(err == ENOTDIR || err == ELOOP ? KVS_ERR_IO : kvs__errno_status(err),
                           "cannot open namespace folder %s: %s%s", s->ns_path[p], strerror(err),
                           err == ENOTDIR || err == ELOOP
                               ? " (it must be a folder, not a symlink or a file)"
                               : "");
            goto fail;
        }
        s->ns_fd[p] = fd;
        s->nfds = p + 1;
        st = write_namespace_file(s, p, ns);
        if (st)
            goto fail;
        if (s->npaths > 1) {
            st = kvs__store_root_id(root, true, s->file_mode, &s->root_id[p]);
            if (st)
                goto fail;
            for (uint32_t q = 0; q < p; q++) {
                if (s->root_id[q] == s->root_id[p]) {
                    st = kvs__fail(KVS_ERR_CONFIG,
                                   "store paths %s and %s carry the same store id (in "
                                   KVS_META_DIR "/" KVS_STORE_ID_FILE "): they are one folder "
                                   "or one is a copy of the other; list each folder once, or "
                                   "remove the copy's " KVS_META_DIR "/" KVS_STORE_ID_FILE,
                                   s->root[q], root);
                    goto fail;
                }
            }
        }
    }
    if (cfg->use_direct_io == KVS_DIRECT_IO_ON) {
        probe_direct(s);
    } else {
        s->direct = false;
        snprintf(s->direct_reason, sizeof s->direct_reason, "off: use_direct_io is false");
    }
    return KVS_OK;
fail:
    kvs__store_close(s);
    return st;
}

void kvs__store_close(kvs_fstore *s)
{
    for (uint32_t p = 0; p < s->nfds; p++)
        kvs__io()->close(s->ns_fd[p]);
    for (uint32_t p = 0; p < s->nroot_fds; p++)
        kvs__io()->close(s->root_fd[p]);
    for (uint32_t p = 0; p < KVS_MAX_STORE_PATHS; p++) {
        kvs__free(s->root[p]);
        kvs__free(s->ns_path[p]);
    }
    memset(s, 0, sizeof *s);
}

uint32_t kvs__store_path_index(const kvs_fstore *s, const uint8_t *key)
{
    return kvs__store_pick(s->root_id, s->npaths, key);
}

/* A chunk's temporary name in its fan-out folder: ".<key hex>.<suffix>.tmp". */
static void temp_name(const uint8_t *key, uint64_t suffix, char *buf)
{
    char prefix[KVS_KEY_HEX + 1];
    prefix[0] = '.';
    kvs__hex(key, KVS_KEY_BYTES, prefix + 1);
    kvs__temp_name(buf, 2 * KVS_KEY_BYTES + 24, prefix, suffix);
}

static int ns_fd_of(const kvs_fstore *s, const uint8_t *key)
{
    return s->ns_fd[kvs__store_path_index(s, key)];
}

/* The chunk's fan-out folder, opened without following symlinks; -errno. */
static int open_leaf(const kvs_fstore *s, const uint8_t *key)
{
    char rel[8];
    kvs__fanout(key, rel);
    int fd = kvs__io()->open_beneath(ns_fd_of(s, key), rel, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    return fd >= 0 ? fd : -errno;
}

void kvs__store_chunk_path(const kvs_fstore *s, const uint8_t *key, char *buf)
{
    char hex[KVS_KEY_HEX];
    kvs__hex(key, KVS_KEY_BYTES, hex);
    char fan[KVS_FANOUT_LEN];
    kvs__fanout(key, fan);
    kvs__pathf(buf, "%s/%s/%s", s->ns_path[kvs__store_path_index(s, key)], fan, hex);
}

void kvs__store_temp_path(const kvs_fstore *s, const uint8_t *key, uint64_t suffix, char *buf)
{
    char fan[KVS_FANOUT_LEN], name[2 * KVS_KEY_BYTES + 24];
    kvs__fanout(key, fan);
    temp_name(key, suffix, name);
    kvs__pathf(buf, "%s/%s/%s", s->ns_path[kvs__store_path_index(s, key)], fan, name);
}

kvs_probe kvs__store_probe(kvs_fstore *s, const uint8_t *key, uint64_t payload, int *err_out)
{
    char path[KVS_PATH_MAX];
    kvs__store_chunk_path(s, key, path);
    struct stat st;
    if (kvs__io()->stat(path, &st) != 0) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR || err == ESTALE)
            return KVS_PROBE_ABSENT;
        *err_out = err;
        return KVS_PROBE_ERROR;
    }
    if (!S_ISREG(st.st_mode) || !kvs__chunk_size_plausible(payload, (uint64_t)st.st_size))
        return KVS_PROBE_BAD;
    return KVS_PROBE_PRESENT;
}

int kvs__store_open_read(kvs_fstore *s, const uint8_t *key, struct stat *st_out,
                         bool *direct_out)
{
    bool direct = __atomic_load_n(&s->direct, __ATOMIC_ACQUIRE);
    if (direct_out)
        *direct_out = direct;
    const kvs_io_ops *io = kvs__io();
    char rel[8 + KVS_KEY_HEX];
    kvs__fanout(key, rel);
    rel[5] = '/';
    kvs__hex(key, KVS_KEY_BYTES, rel + 6);
    int dfd = ns_fd_of(s, key);
    /* O_NONBLOCK: a FIFO planted under a chunk name must not block us. */
    int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (direct ? O_DIRECT : 0);
    int fd = -1;
    if (__atomic_load_n(&s->noatime, __ATOMIC_RELAXED)) {
        fd = io->open_beneath(dfd, rel, flags | O_NOATIME, 0);
        if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership */
            __atomic_store_n(&s->noatime, false, __ATOMIC_RELAXED);
    }
    if (fd < 0 && !__atomic_load_n(&s->noatime, __ATOMIC_RELAXED))
        fd = io->open_beneath(dfd, rel, flags, 0);
    if (fd < 0) {
        int err = errno;
        if (err == EXDEV) /* a path that would leave the store */
            return -ELOOP;
        /* Some filesystems refuse O_DIRECT on what is not a regular file
         * before they say what it is: ask (metadata only). */
        char path[KVS_PATH_MAX];
        kvs__store_chunk_path(s, key, path);
        struct stat st;
        if (err != ENOENT && err != ESTALE && err != ELOOP && io->stat(path, &st) == 0 &&
            !S_ISREG(st.st_mode))
            return -EISDIR;
        return -err;
    }
    if (io->fstat(fd, st_out) != 0) {
        int err = errno;
        io->close(fd);
        return -err;
    }
    if (!S_ISREG(st_out->st_mode)) {
        io->close(fd);
        return -EISDIR;
    }
    return fd;
}

/* Makes namespace folder p again and opens it under the same descriptor
 * number (dup3), so a thread using the old descriptor meanwhile gets one
 * folder or the other, never a descriptor of something else. */
static int reopen_ns(kvs_fstore *s, uint32_t p)
{
    const kvs_io_ops *io = kvs__io();
    if (io->mkdirat(s->root_fd[p], s->ns->dir, dir_mode(s->file_mode)) != 0 && errno != EEXIST)
        return -errno;
    int fd = io->open_beneath(s->root_fd[p], s->ns->dir,
                              O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == EXDEV ? -ELOOP : -errno;
    int rc = dup3(fd, s->ns_fd[p], O_CLOEXEC) < 0 ? -errno : 0;
    io->close(fd);
    if (rc == 0)
        write_namespace_file(s, p, s->ns);
    return rc;
}

/* Makes <ns>/xx/yy, each level created below a descriptor of the one above
 * opened without following symlinks. */
static int make_leaf(kvs_fstore *s, const uint8_t *key)
{
    const kvs_io_ops *io = kvs__io();
    mode_t mode = dir_mode(s->file_mode);
    char rel[8];
    kvs__fanout(key, rel);
    uint32_t p = kvs__store_path_index(s, key);
    int dfd = s->ns_fd[p];
    rel[2] = '\0';
    int err = io->mkdirat(dfd, rel, mode) == 0 ? 0 : errno;
    if (err == ENOENT && s->ns) {
        /* An operator removed the namespace (kvstash rm) under us. */
        int rc = reopen_ns(s, p);
        if (rc)
            return rc;
        err = io->mkdirat(dfd, rel, mode) == 0 ? 0 : errno;
    }
    if (err && err != EEXIST)
        return -err;
    int xfd = io->open_beneath(dfd, rel, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (xfd < 0)
        return -errno;
    int rc = 0;
    if (io->mkdirat(xfd, rel + 3, mode) != 0 && errno != EEXIST)
        rc = -errno;
    io->close(xfd);
    return rc;
}

int kvs__store_create_temp(kvs_fstore *s, const uint8_t *key, uint64_t *suffix_out,
                           bool *direct_out)
{
    const kvs_io_ops *io = kvs__io();
    uint64_t retry = __atomic_load_n(&s->direct_retry_ns, __ATOMIC_RELAXED);
    if (retry && kvs__now_ns() >= retry &&
        !__atomic_exchange_n(&s->direct_probing, true, __ATOMIC_ACQUIRE)) {
        probe_direct(s);
        __atomic_store_n(&s->direct_probing, false, __ATOMIC_RELEASE);
        if (__atomic_load_n(&s->direct, __ATOMIC_RELAXED))
            kvs__log(KVS_LOG_INFO, "store %s: O_DIRECT %s", s->root[0], s->direct_reason);
    }
    bool direct = __atomic_load_n(&s->direct, __ATOMIC_ACQUIRE);
    if (direct_out)
        *direct_out = direct;
    char rel[8 + 2 * KVS_KEY_BYTES + 24];
    int dfd = ns_fd_of(s, key);
    bool made = false;
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t suffix = 0;
        if (io->getrandom(&suffix, sizeof suffix) != 0)
            return -errno;
        kvs__fanout(key, rel);
        rel[5] = '/';
        temp_name(key, suffix, rel + 6);
        int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0);
        int fd = io->open_beneath(dfd, rel, flags, (mode_t)s->file_mode);
        if (fd >= 0) {
            *suffix_out = suffix;
            return fd;
        }
        if (errno == ENOENT && !made) {
            /* The fan-out folders do not exist yet, or someone (an
             * operator's rm, a collector) removed them: make them once. */
            int rc = make_leaf(s, key);
            if (rc)
                return rc;
            made = true;
            continue;
        }
        if (errno == EXDEV)
            return -ELOOP;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

void kvs__store_discard(kvs_fstore *s, const uint8_t *key, uint64_t suffix)
{
    char name[2 * KVS_KEY_BYTES + 24];
    temp_name(key, suffix, name);
    int leaf = open_leaf(s, key);
    if (leaf < 0)
        return; /* then the collector removes it after tmp_grace_s */
    kvs__io()->unlinkat(leaf, name, 0);
    kvs__io()->close(leaf);
}

int kvs__store_publish(kvs_fstore *s, const uint8_t *key, uint64_t suffix)
{
    const kvs_io_ops *io = kvs__io();
    char tmp[2 * KVS_KEY_BYTES + 24], final[KVS_KEY_HEX];
    temp_name(key, suffix, tmp);
    kvs__hex(key, KVS_KEY_BYTES, final);
    int leaf = open_leaf(s, key);
    if (leaf < 0)
        return leaf;
    int rc = 0;
    if (io->renameat(leaf, tmp, final, 1) == 0)
        goto out;
    int err = errno;
    if (err == EEXIST) {
        io->unlinkat(leaf, tmp, 0);
        rc = 1;
        goto out;
    }
    if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
        if (io->linkat(leaf, tmp, final) == 0) {
            io->unlinkat(leaf, tmp, 0);
            goto out;
        }
        err = errno;
        if (err == EEXIST) {
            io->unlinkat(leaf, tmp, 0);
            rc = 1;
            goto out;
        }
        if (err == EPERM || err == ENOTSUP || err == EOPNOTSUPP || err == EMLINK) {
            if (io->renameat(leaf, tmp, final, 0) == 0)
                goto out;
            err = errno;
        }
    }
    io->unlinkat(leaf, tmp, 0);
    rc = -err;
out:
    io->close(leaf);
    return rc;
}

int kvs__store_remove(kvs_fstore *s, const uint8_t *key)
{
    char name[KVS_KEY_HEX];
    kvs__hex(key, KVS_KEY_BYTES, name);
    int leaf = open_leaf(s, key);
    if (leaf < 0)
        return leaf == -ENOENT || leaf == -ESTALE || leaf == -ENOTDIR ? 1 : leaf;
    int rc = 0;
    if (kvs__io()->unlinkat(leaf, name, 0) != 0)
        rc = errno == ENOENT || errno == ESTALE ? 1 : -errno;
    kvs__io()->close(leaf);
    return rc;
}

int kvs__store_remove_examined(kvs_fstore *s, const uint8_t *key, const struct stat *examined)
{
    char name[KVS_KEY_HEX];
    kvs__hex(key, KVS_KEY_BYTES, name);
    int leaf = open_leaf(s, key);
    if (leaf < 0)
        return leaf == -ENOENT || leaf == -ESTALE || leaf == -ENOTDIR ? 1 : leaf;
    int rc = kvs__unlink_examined(leaf, name, examined);
    kvs__io()->close(leaf);
    return rc;
}

void kvs__store_touch(kvs_fstore *s, const uint8_t *key)
{
    char name[KVS_KEY_HEX];
    kvs__hex(key, KVS_KEY_BYTES, name);
    int leaf = open_leaf(s, key);
    if (leaf < 0)
        return;
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    kvs__io()->utimensat(leaf, name, ts); /* best effort: the clock is advisory */
    kvs__io()->close(leaf);
}

/* ---- opening with a deadline ------------------------------------------------ */

/* kvs__store_open runs on a helper thread with its own copies of the
 * configuration and namespace, so that if the mount hangs the caller gets
 * KVS_ERR_TIMEOUT and the thread, when the filesystem answers at last, closes
 * what it opened and frees everything itself. */
typedef struct open_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;                      /* the caller and the thread (mu) */
    bool done;                     /* (mu) */
    kvs_status st;
    char err[512];                 /* the thread's kvs_last_error() */
    kvs_config *cfg;
    kvs_ns ns;
    kvs_fstore store;              /* handed to the caller, or closed */
} open_job;

static void job_unref(open_job *j)
{
    pthread_mutex_lock(&j->mu);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last)
        return;
    kvs__store_close(&j->store);
    kvs_config_free(j->cfg);
    kvs__ns_clear(&j->ns);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    kvs__free(j);
}

static void *open_thread(void *arg)
{
    open_job *j = arg;
    kvs_status st = kvs__store_open(&j->store, j->cfg, &j->ns);
    if (st)
        snprintf(j->err, sizeof j->err, "%s", kvs_last_error());
    pthread_mutex_lock(&j->mu);
    j->st = st;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    return NULL;
}

kvs_status kvs__store_open_bounded(kvs_fstore *s, const kvs_config *cfg, const kvs_ns *ns,
                                   uint64_t timeout_ns)
{
    open_job *j = kvs__calloc(1, sizeof *j);
    if (!j)
        return kvs__fail(KVS_ERR_NOMEM, "out of memory opening the store");
    pthread_mutex_init(&j->mu, NULL);
    kvs__cond_init(&j->cv);
    j->refs = 2;
    kvs_status st = kvs_config_copy(cfg, &j->cfg);
    j->ns = *ns;
    j->ns.model = kvs__strdup(ns->model);
    j->ns.variant = kvs__strdup(ns->variant ? ns->variant : "");
    if (!st && (!j->ns.model || !j->ns.variant))
        st = kvs__fail(KVS_ERR_NOMEM, "out of memory opening the store");
    pthread_attr_t attr;
    pthread_t th;
    if (!st) {
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, open_thread, j) != 0)
            st = kvs__fail(KVS_ERR_NOMEM, "cannot start a thread to open the store");
        pthread_attr_destroy(&attr);
    }
    if (st) {
        j->refs = 1;
        job_unref(j);
        return st;
    }
    uint64_t deadline = kvs__now_ns() + timeout_ns;
    pthread_mutex_lock(&j->mu);
    while (!j->done && kvs__now_ns() < deadline) {
        kvs__cond_wait_until(&j->cv, &j->mu, deadline);
    }
    if (!j->done) {
        st = kvs__fail(KVS_ERR_TIMEOUT,
                       "the store %s did not answer within %llu ms (a hung mount?); not "
                       "opening an engine on it",
                       cfg->store_paths[0], (unsigned long long)(timeout_ns / 1000000u));
    } else if (j->st) {
        st = kvs__fail(j->st, "%s", j->err);
    } else {
        *s = j->store; /* moved: the job's copy is closed as empty */
        s->ns = ns;    /* the caller's, which outlives the store */
        memset(&j->store, 0, sizeof j->store);
    }
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    return st;
}
