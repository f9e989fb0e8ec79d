/*
 * lease.c - the collector lease (see lease.h and docs/capacity.md).
 *
 * The file holds text lines: a nonce naming this holding, a generation that
 * every renewal bumps, and who holds it (host, boot id, pid namespace, pid,
 * process start time, purpose).  It is always LEASE_FILE_BYTES long
 * (padded).  Its inode is made once and then only renamed or rewritten in
 * place, none of which needs a new inode or a new block, so a store whose
 * filesystem ran out of inodes or space can still be collected: the lease
 * is what lets the collector make room (docs/capacity.md).  A collector
 * makes a spare (collector.lease.spare) when it starts, while there is
 * room; a release turns the lease back into the spare.  The protocol:
 *
 *   create   (no lease file: free) rename the spare to a private name (of
 *            several contenders one wins it; without a spare, write a new
 *            temporary file), write our content into it, and rename it to
 *            the lease name with RENAME_NOREPLACE (link() where the
 *            filesystem lacks it): of several creators exactly one succeeds;
 *            the others keep their inode as the spare.
 *   renew    every ttl/3: open the file, check it still carries our nonce,
 *            write the next generation over it through the same descriptor.
 *            The holder acts only until (start of its last renewal) + ttl -
 *            grace by its monotonic clock, and drops the lease if a renewal
 *            took longer than 2 * grace.
 *   observe  a contender hashes the content it reads; when the same content
 *            has been there for ttl + 2 * grace by the contender's own
 *            monotonic clock, the holder stopped renewing before its
 *            holding ran out (a renewal is due every ttl/3).
 *   take     rename the lease to a private name (one contender wins), check
 *            that it is the content observed (a late renewal would differ:
 *            then it is put back), write our content into it, and rename it
 *            back with RENAME_NOREPLACE (if someone created a lease file
 *            while the name was away, theirs wins and ours is removed).
 *   release  (while the holding is good by more than grace) rename the
 *            lease to a private name, check it is ours (else put it back),
 *            rename it to the spare.
 *
 * A renewal writes in place, so a renewal that stalls between its check
 * and its write could land in a file a contender took meanwhile.  It cannot
 * land there unnoticed: the contender takes only ttl + 2 * grace after the
 * content it watched appeared, which is after the holder's renewal started
 * + 3 * grace, so such a renewal took longer than 2 * grace and its holder
 * gives the lease up; the contender then finds a foreign nonce at its next
 * renewal and gives it up too (a lost ttl, never two holders).  A release
 * is not written in place: "free" content landing late in a file a
 * contender took would hand the lease to a third at once.
 *
 * No step compares wall clocks of two hosts, so clock skew cannot make two
 * holders; only the rates of the clocks matter.  Wall times in the file are
 * for people, with one exception: a lease file whose mtime is older than
 * ttl + 5 minutes (a skew no fleet should have) is taken at once, so a
 * short-lived `kvstash gc` need not wait out a lease abandoned long ago.
 * A holder that is a process of this machine and pid namespace is checked
 * directly: if its pid is gone (or now names a process started at another
 * time) the lease is taken at once.
 */
#include "lease.h"

#include "checksum.h"
#include "io_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEASE_MAX_BYTES 2048
#define LEASE_FILE_BYTES 1024 /* every version of the file: rewrites need no block */
#define LEASE_SPARE KVS_LEASE_FILE ".spare"
#define ABANDONED_SKEW_NS (300ull * 1000000000ull)

static int64_t wall_offset;

void kvs__lease_test_wall_offset(int64_t offset_ns)
{
    __atomic_store_n(&wall_offset, offset_ns, __ATOMIC_RELAXED);
}

static uint64_t lease_wall_ns(void)
{
    return kvs__wall_ns() + (uint64_t)__atomic_load_n(&wall_offset, __ATOMIC_RELAXED);
}

/* Paths: kvs__lease_init refuses nothing, but roots were checked for length
 * by the store, so these never truncate. */
/* ---- who we are ----------------------------------------------------------- */

typedef struct identity {
    char host[64];
    char boot_id[40];
    uint64_t pidns;       /* inode of the pid namespace; 0 if unknown */
    uint32_t pid;
    uint64_t start_ticks; /* field 22 of /proc/PID/stat */
} identity;

/* The lease's folder, <root>/.kvstash, reached from the root without
 * following a symlink (store.h); -errno. */
static int lease_dir(const kvs_lease *l, bool create)
{
    int rfd = kvs__root_open(l->root);
    if (rfd < 0)
        return rfd;
    int dfd = kvs__meta_dir_open(rfd, create, l->file_mode);
    kvs__io()->close(rfd);
    return dfd;
}

/* Process start time of pid in clock ticks since boot; 0 when unknown. */
static uint64_t proc_start_ticks(uint32_t pid, bool *gone)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *f = fopen(path, "re"); /* /proc, not the store: no io table */
    *gone = false;
    if (!f) {
        *gone = errno == ENOENT;
        return 0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    /* after ')' come fields 3, 4, ...; starttime is field 22 */
    p++;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p + 1, ' ');
    }
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void self_identity(identity *id)
{
    memset(id, 0, sizeof *id);
    gethostname(id->host, sizeof id->host - 1);
    for (char *p = id->host; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) {
        if (fgets(id->boot_id, sizeof id->boot_id, f))
            id->boot_id[strcspn(id->boot_id, "\n")] = '\0';
        fclose(f);
    }
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) == 0)
        id->pidns = (uint64_t)st.st_ino;
    id->pid = (uint32_t)getpid();
    bool gone;
    id->start_ticks = proc_start_ticks(id->pid, &gone);
}

/* ---- the file ------------------------------------------------------------- */

typedef struct lease_text {
    bool free;            /* released: take at once */
    char nonce[33];
    uint64_t generation;
    identity owner;
    char purpose[48];
    uint64_t ttl_ms;
    uint64_t acquired_wall_ns;
    uint64_t renewed_wall_ns;
    bool parsed;
} lease_text;

static void word(const char *line, const char *key, char *out, size_t cap)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0 || line[k] != ' ')
        return;
    const char *v = line + k + 1;
    size_t n = strcspn(v, "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static void number(const char *line, const char *key, uint64_t *out)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) == 0 && line[k] == ' ')
        *out = strtoull(line + k + 1, NULL, 10);
}

static void parse(const char *text, lease_text *t)
{
    memset(t, 0, sizeof *t);
    if (strncmp(text, "kvstash-lease 1\n", 16) != 0)
        return;
    for (const char *line = text; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        char state[16] = "";
        word(line, "state", state, sizeof state);
        if (strcmp(state, "free") == 0)
            t->free = true;
        word(line, "nonce", t->nonce, sizeof t->nonce);
        word(line, "host", t->owner.host, sizeof t->owner.host);
        word(line, "boot_id", t->owner.boot_id, sizeof t->owner.boot_id);
        word(line, "purpose", t->purpose, sizeof t->purpose);
        number(line, "generation", &t->generation);
        number(line, "pidns", &t->owner.pidns);
        uint64_t pid = 0;
        number(line, "pid", &pid);
        if (pid)
            t->owner.pid = (uint32_t)pid;
        number(line, "start_ticks", &t->owner.start_ticks);
        number(line, "ttl_ms", &t->ttl_ms);
        number(line, "acquired_wall_ns", &t->acquired_wall_ns);
        number(line, "renewed_wall_ns", &t->renewed_wall_ns);
    }
    t->parsed = strlen(t->nonce) == 32 || t->free;
}

static int format_held(const kvs_lease *l, char *buf, size_t cap);

/* The content of the file, padded with newlines to LEASE_FILE_BYTES: ours
 * while held, or (free) the free state this holding leaves behind (its
 * nonce and generation keep each free content distinct). */
static int format(const kvs_lease *l, bool free_state, char *buf, size_t cap)
{
    int n;
    if (free_state) {
        n = snprintf(buf, cap,
                     "kvstash-lease 1\nstate free\nreleased %s %" PRIu64 "\nrenewed_wall_ns %" PRIu64
                     "\n",
                     l->nonce, l->generation, lease_wall_ns());
    } else {
        n = format_held(l, buf, cap);
    }
    if (n < 0 || (size_t)n >= cap)
        return n;
    if ((size_t)n < LEASE_FILE_BYTES && cap > LEASE_FILE_BYTES) {
        memset(buf + n, '\n', LEASE_FILE_BYTES - (size_t)n);
        n = LEASE_FILE_BYTES;
        buf[n] = '\0';
    }
    return n;
}

static int format_held(const kvs_lease *l, char *buf, size_t cap)
{
    identity me;
    self_identity(&me);
    return snprintf(buf, cap,
                    "kvstash-lease 1\nnonce %s\ngeneration %" PRIu64 "\nhost %s\nboot_id %s\n"
                    "pidns %" PRIu64 "\npid %u\nstart_ticks %" PRIu64 "\npurpose %s\n"
                    "ttl_ms %" PRIu64 "\nacquired_wall_ns %" PRIu64 "\nrenewed_wall_ns %" PRIu64
                    "\n",
                    l->nonce, l->generation, me.host, me.boot_id[0] ? me.boot_id : "-", me.pidns,
                    me.pid, me.start_ticks, l->purpose, l->ttl_ns / 1000000u, l->acquired_wall_ns,
                    lease_wall_ns());
}

static void random_hex(char *out, size_t bytes)
{
    uint8_t r[32] = {0};
    if (kvs__io()->getrandom(r, bytes) != 0) {
        uint64_t x = kvs__now_ns() ^ ((uint64_t)getpid() << 32);
        memcpy(r, &x, KVS_MIN(bytes, sizeof x));
    }
    kvs__hex(r, bytes, out);
}

/* Opens the lease file (or our private name for it) in dfd for reading and
 * writing: a regular file only, no symlink, never blocking on a FIFO. */
static int open_file(int dfd, const char *name)
{
    return kvs__meta_open(dfd, name, O_RDWR, 0);
}

/* Reads through fd; length or -errno. */
static int read_fd(int fd, char *buf, size_t cap)
{
    const kvs_io_ops *io = kvs__io();
    size_t len = 0;
    while (len < cap - 1) {
        ssize_t n = io->pread(fd, buf + len, cap - 1 - len, (off_t)len);
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return (int)len;
}

/* The whole file named `name` in dfd; length or -errno. */
static int read_name(int dfd, const char *name, char *buf, size_t cap)
{
    return kvs__meta_read(dfd, name, buf, cap);
}

/* Writes content over the file through fd, in place; 0 or -errno. */
static int write_fd(const kvs_lease *l, int fd, bool free_state)
{
    char text[LEASE_MAX_BYTES];
    int len = format(l, free_state, text, sizeof text);
    if (kvs__pwrite_full(fd, text, (size_t)len, 0) != 0)
        return -errno;
    return 0;
}

/* Writes content to a fresh temporary file in dfd; 0 or -errno.  The only
 * step that needs a new inode: used where no lease file exists yet. */
static int write_temp(const kvs_lease *l, int dfd, bool free_state, char *tmp, size_t cap)
{
    const kvs_io_ops *io = kvs__io();
    char text[LEASE_MAX_BYTES];
    kvs__temp_name(tmp, cap, KVS_LEASE_FILE, kvs__temp_suffix());
    int len = format(l, free_state, text, sizeof text);
    int fd = kvs__meta_open(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL, (mode_t)l->file_mode);
    if (fd < 0)
        return fd;
    int rc = kvs__pwrite_full(fd, text, (size_t)len, 0);
    int err = errno;
    if (io->close(fd) != 0 && rc == 0) {
        rc = -1;
        err = errno;
    }
    if (rc != 0) {
        io->unlinkat(dfd, tmp, 0);
        return -err;
    }
    return 0;
}

/* Puts `from` at the lease name unless a lease file is there: 0, or
 * -EEXIST, or another -errno. */
static int publish(int dfd, const char *from)
{
    const kvs_io_ops *io = kvs__io();
    if (io->renameat(dfd, from, KVS_LEASE_FILE, 1) == 0)
        return 0;
    int err = errno;
    if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
        if (io->linkat(dfd, from, KVS_LEASE_FILE) != 0)
            return -errno;
        io->unlinkat(dfd, from, 0);
        return 0;
    }
    return -err;
}

/* ---- the protocol --------------------------------------------------------- */

void kvs__lease_init(kvs_lease *l, const char *root, uint32_t ttl_s, const char *purpose)
{
    memset(l, 0, sizeof *l);
    kvs__pathf(l->root, "%s", root);
    l->file_mode = 0644;
    kvs__pathf(l->dir, "%s/" KVS_META_DIR, root);
    kvs__pathf(l->path, "%s/" KVS_META_DIR "/" KVS_LEASE_FILE, root);
    l->ttl_ns = (uint64_t)(ttl_s ? ttl_s : 1) * 1000000000u;
    l->grace_ns = KVS_MAX(l->ttl_ns / 10, (uint64_t)100000000u);
    snprintf(l->purpose, sizeof l->purpose, "%s", purpose ? purpose : "collector");
    for (char *p = l->purpose; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

static void start_holding(kvs_lease *l, uint64_t t_start)
{
    l->held = true;
    l->seen = false;
    l->valid_until = t_start + l->ttl_ns - l->grace_ns;
    l->renew_after = t_start + l->ttl_ns / 3;
}

static void new_holding(kvs_lease *l)
{
    random_hex(l->nonce, 16);
    l->generation = 1;
    l->acquired_wall_ns = lease_wall_ns();
}

/* KVS_OK created; KVS_ERR_BUSY someone else did; else an I/O error.  The
 * spare file (collector.lease.spare, left by the last release or made when a
 * collector started) is used when there is one: renamed to a private name
 * (one contender wins it), written in place, published.  Only without a
 * spare is a new file (a new inode) created. */
static kvs_status create(kvs_lease *l, int dfd)
{
    const kvs_io_ops *io = kvs__io();
    uint64_t t_start = kvs__now_ns();
    new_holding(l);
    char tmp[64];
    int rc;
    kvs__temp_name(tmp, sizeof tmp, KVS_LEASE_FILE, kvs__temp_suffix());
    int fd = -ENOENT;
    if (io->renameat(dfd, LEASE_SPARE, tmp, 0) == 0) {
        fd = open_file(dfd, tmp);
        if (fd == -KVS_ENOTREG || fd == -ELOOP || fd == -EISDIR) {
            /* Not a spare anyone made (a FIFO, a symlink, a folder planted
             * there): it is under our private name now, removed (a folder
             * is left there), and a file made instead. */
            io->unlinkat(dfd, tmp, 0);
            fd = -ENOENT;
        }
    }
    if (fd != -ENOENT) {
        rc = fd < 0 ? fd : write_fd(l, fd, false);
        if (fd >= 0 && io->close(fd) != 0 && rc == 0)
            rc = -errno;
        if (rc) {
            io->renameat(dfd, tmp, LEASE_SPARE, 0);
            return kvs__fail(kvs__errno_status(-rc), "cannot write the lease %s: it %s",
                             l->path, kvs__meta_strerror(-rc));
        }
    } else {
        rc = write_temp(l, dfd, false, tmp, sizeof tmp);
        if (rc)
            return kvs__fail(kvs__errno_status(-rc),
                             "cannot write a lease file in %s: it %s (there is no lease file "
                             "to reuse: a collector makes one when it starts with room to "
                             "spare)",
                             l->dir, kvs__meta_strerror(-rc));
    }
    rc = publish(dfd, tmp);
    if (rc == 0) {
        start_holding(l, t_start);
        return KVS_OK;
    }
    /* Keep the inode for the next taker rather than give it back. */
    if (io->renameat(dfd, tmp, LEASE_SPARE, 0) != 0)
        io->unlinkat(dfd, tmp, 0);
    if (rc == -EEXIST) {
        snprintf(l->holder, sizeof l->holder, "another process created it first");
        return KVS_ERR_BUSY;
    }
    return kvs__fail(kvs__errno_status(-rc), "cannot create the lease %s: %s", l->path,
                     strerror(-rc));
}

/* The lease file's mtime in wall-clock ns (when it was last written), 0 if
 * it cannot be read. */
static uint64_t lease_mtime(int dfd)
{
    struct stat st;
    if (kvs__io()->fstatat(dfd, KVS_LEASE_FILE, &st) != 0)
        return 0;
    return (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
}

static void describe(const lease_text *t, uint64_t mtime_wall, char *out, size_t cap)
{
    if (t->free) {
        snprintf(out, cap, "free");
        return;
    }
    if (!t->parsed) {
        snprintf(out, cap, "held (unreadable lease file)");
        return;
    }
    uint64_t now = lease_wall_ns();
    double ago = mtime_wall && now > mtime_wall ? (double)(now - mtime_wall) / 1e9 : 0.0;
    snprintf(out, cap, "held by %s pid %u (%s), renewed %.1f s ago, generation %" PRIu64,
             t->owner.host, t->owner.pid, t->purpose[0] ? t->purpose : "?", ago, t->generation);
}

/* A holder of this machine and pid namespace whose process is gone. */
static bool holder_gone(const lease_text *t)
{
    if (!t->parsed)
        return false;
    identity me;
    self_identity(&me);
    if (!me.pidns || !me.boot_id[0] || t->owner.pidns != me.pidns ||
        strcmp(t->owner.boot_id, me.boot_id) != 0 || t->owner.pid == 0)
        return false;
    if (t->owner.pid == me.pid && t->owner.start_ticks == me.start_ticks)
        return false; /* ours: another lease object of this process */
    bool gone = false;
    uint64_t start = proc_start_ticks(t->owner.pid, &gone);
    if (gone)
        return true;
    return start && t->owner.start_ticks && start != t->owner.start_ticks;
}

static kvs_status take_over(kvs_lease *l, int dfd, uint64_t observed, const char *why)
{
    const kvs_io_ops *io = kvs__io();
    char priv[64], text[LEASE_MAX_BYTES];
    uint64_t t_start = kvs__now_ns();
    kvs__temp_name(priv, sizeof priv, KVS_LEASE_FILE, kvs__temp_suffix());
    if (io->renameat(dfd, KVS_LEASE_FILE, priv, 0) != 0) {
        if (errno == ENOENT)
            return KVS_ERR_BUSY; /* another contender moved first */
        return kvs__fail(kvs__errno_status(errno), "cannot take over the lease %s: %s", l->path,
                         strerror(errno));
    }
    /* The file is ours alone under this name: check it, then write into the
     * same inode (no new inode or block, so this works on a full
     * filesystem) and put it back. */
    int fd = open_file(dfd, priv);
    int n = fd < 0 ? fd : read_fd(fd, text, sizeof text);
    if (n < 0 || kvs__checksum(text, (size_t)n) != observed) {
        /* It changed after we looked: the holder renewed late, it is alive. */
        if (fd >= 0)
            io->close(fd);
        if (publish(dfd, priv) != 0)
            io->unlinkat(dfd, priv, 0);
        l->seen = false;
        return KVS_ERR_BUSY;
    }
    new_holding(l);
    int rc = write_fd(l, fd, false);
    if (io->close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        /* Back under the lease name whatever it now says: a torn content
         * is a new content, taken ttl + 2 * grace from now at the latest. */
        if (publish(dfd, priv) != 0)
            io->unlinkat(dfd, priv, 0);
        l->seen = false;
        return kvs__fail(kvs__errno_status(-rc), "cannot write the lease %s: %s", l->path,
                         strerror(-rc));
    }
    rc = publish(dfd, priv);
    if (rc != 0) {
        /* Someone created a new lease file while ours was away: theirs. */
        io->unlinkat(dfd, priv, 0);
        if (rc == -EEXIST)
            return KVS_ERR_BUSY;
        return kvs__fail(kvs__errno_status(-rc), "cannot put back the lease %s: %s", l->path,
                         strerror(-rc));
    }
    start_holding(l, t_start);
    if (why)
        kvs__log(KVS_LOG_INFO, "took over the collector lease %s (%s)", l->path, why);
    return KVS_OK;
}

static kvs_status lease_try_in(kvs_lease *l, int dfd)
{
    char text[LEASE_MAX_BYTES];
    int n = read_name(dfd, KVS_LEASE_FILE, text, sizeof text);
    if (n == -KVS_ENOTREG || n == -ELOOP) {
        /* A FIFO, socket or symlink is no holder's lease (a holder writes a
         * regular file): remove that entry, only it, and take the lease. */
        struct stat st;
        if (kvs__io()->fstatat(dfd, KVS_LEASE_FILE, &st) == 0 && !S_ISREG(st.st_mode) &&
            !S_ISDIR(st.st_mode)) {
            kvs__log(KVS_LOG_WARN, "the lease %s %s; removed it", l->path,
                     kvs__meta_strerror(-n));
            kvs__unlink_examined(dfd, KVS_LEASE_FILE, &st);
            n = read_name(dfd, KVS_LEASE_FILE, text, sizeof text);
        }
    }
    if (n == -ENOENT)
        return create(l, dfd);
    if (n < 0)
        return kvs__fail(kvs__errno_status(-n), "cannot read the lease %s: it %s", l->path,
                         kvs__meta_strerror(-n));
    uint64_t now = kvs__now_ns();
    uint64_t h = kvs__checksum(text, (size_t)n);
    if (!l->seen || h != l->seen_hash) {
        l->seen = true;
        l->seen_hash = h;
        l->seen_since = now;
    }
    lease_text t;
    parse(text, &t);
    uint64_t mtime = lease_mtime(dfd);
    describe(&t, mtime, l->holder, sizeof l->holder);
    /* The longer of our ttl and the holder's decides. */
    uint64_t ttl = KVS_MAX(l->ttl_ns, t.ttl_ms * 1000000u);
    uint64_t grace = KVS_MAX(ttl / 10, (uint64_t)100000000u);
    char why[384];
    if (holder_gone(&t)) {
        snprintf(why, sizeof why, "its holder, pid %u of this machine, is gone", t.owner.pid);
        return take_over(l, dfd, h, why);
    }
    if (now - l->seen_since >= ttl + 2 * grace) {
        snprintf(why, sizeof why, "%s; not renewed for %.1f s", l->holder,
                 (double)(now - l->seen_since) / 1e9);
        return take_over(l, dfd, h, why);
    }
    uint64_t wall = kvs__wall_ns();
    if (mtime && wall > mtime && wall - mtime > ttl + ABANDONED_SKEW_NS) {
        snprintf(why, sizeof why, "abandoned %.0f s ago", (double)(wall - mtime) / 1e9);
        return take_over(l, dfd, h, why);
    }
    return KVS_ERR_BUSY;
}

kvs_status kvs__lease_try(kvs_lease *l)
{
    if (l->held) {
        if (kvs__lease_keep(l) == KVS_OK)
            return KVS_OK;
    }
    int dfd = lease_dir(l, true);
    if (dfd < 0)
        return kvs__fail(kvs__errno_status(-dfd), "cannot open %s: it %s", l->dir,
                         kvs__meta_strerror(-dfd));
    kvs_status st = lease_try_in(l, dfd);
    kvs__io()->close(dfd);
    return st;
}

bool kvs__lease_valid(const kvs_lease *l)
{
    return l->held && kvs__now_ns() < l->valid_until;
}

static kvs_status lose(kvs_lease *l, const char *why)
{
    l->held = false;
    l->seen = false;
    kvs__log(KVS_LOG_WARN, "gave up the collector lease %s: %s", l->path, why);
    return KVS_ERR_BUSY;
}

/* Opens the lease file itself (through its folder); fd or -errno. */
static int open_lease(const kvs_lease *l)
{
    int dfd = lease_dir(l, false);
    if (dfd < 0)
        return dfd;
    int fd = open_file(dfd, KVS_LEASE_FILE);
    kvs__io()->close(dfd);
    return fd;
}

kvs_status kvs__lease_keep(kvs_lease *l)
{
    if (!l->held)
        return KVS_ERR_BUSY;
    uint64_t t_start = kvs__now_ns();
    if (t_start >= l->valid_until)
        return lose(l, "it ran out before it could be renewed");
    if (t_start < l->renew_after)
        return KVS_OK;
    const kvs_io_ops *io = kvs__io();
    char text[LEASE_MAX_BYTES];
    int fd = open_lease(l);
    int n = fd < 0 ? fd : read_fd(fd, text, sizeof text);
    lease_text t;
    if (n >= 0)
        parse(text, &t);
    if (n == -ENOENT || (n >= 0 && strcmp(t.nonce, l->nonce) != 0)) {
        if (fd >= 0)
            io->close(fd);
        return lose(l, "another process holds it now");
    }
    int rc = n < 0 ? n : 0;
    /* Write only while the check is fresh (see the top of this file). */
    if (rc == 0 && kvs__now_ns() - t_start > l->grace_ns)
        rc = -ETIMEDOUT;
    if (rc == 0) {
        l->generation++;
        rc = write_fd(l, fd, false);
    }
    if (fd >= 0 && io->close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc) {
        /* Try again soon; the holding stays good until valid_until. */
        l->renew_after = t_start + l->grace_ns / 4;
        return KVS_OK;
    }
    if (kvs__now_ns() - t_start > 2 * l->grace_ns)
        return lose(l, "a renewal took longer than the safety margin");
    l->valid_until = t_start + l->ttl_ns - l->grace_ns;
    l->renew_after = t_start + l->ttl_ns / 3;
    return KVS_OK;
}

void kvs__lease_release(kvs_lease *l)
{
    if (!l->held)
        return;
    l->held = false;
    /* Past valid_until (or nearly) it may be someone else's by now: leave
     * it, to be taken over as a silent holder's. */
    if (kvs__now_ns() + l->grace_ns >= l->valid_until)
        return;
    int dfd = lease_dir(l, false);
    if (dfd < 0)
        return;
    const kvs_io_ops *io = kvs__io();
    char priv[64], text[LEASE_MAX_BYTES];
    kvs__temp_name(priv, sizeof priv, KVS_LEASE_FILE, kvs__temp_suffix());
    /* Renamed away first, so it is ours alone while we look at it; then
     * kept as the spare: the next taker needs no new inode. */
    if (io->renameat(dfd, KVS_LEASE_FILE, priv, 0) == 0) {
        int n = read_name(dfd, priv, text, sizeof text);
        lease_text t;
        if (n >= 0)
            parse(text, &t);
        if (n >= 0 && strcmp(t.nonce, l->nonce) == 0) {
            if (io->renameat(dfd, priv, LEASE_SPARE, 0) != 0)
                io->unlinkat(dfd, priv, 0);
        } else if (publish(dfd, priv) != 0) {
            /* Not ours (taken over meanwhile): back, unless a new one is
             * there already. */
            io->unlinkat(dfd, priv, 0);
        }
    }
    io->close(dfd);
}

/* Makes the spare lease file if there is none: a collector does at start,
 * while the filesystem has room, so that taking the lease later never
 * needs a new inode. */
void kvs__lease_prepare(kvs_lease *l)
{
    char text[LEASE_MAX_BYTES], tmp[64];
    /* Only where .kvstash exists: its first maker is the first collection
     * (whose release leaves the spare), not whoever opens the store first
     * (strict_ownership judges .kvstash by its owner). */
    int dfd = lease_dir(l, false);
    if (dfd < 0)
        return;
    if (read_name(dfd, LEASE_SPARE, text, sizeof text) == -ENOENT) {
        kvs_lease blank = *l;
        random_hex(blank.nonce, 16);
        blank.generation = 0;
        /* No room: the first take creates one, or says why it cannot. */
        if (write_temp(&blank, dfd, true, tmp, sizeof tmp) == 0 &&
            kvs__io()->renameat(dfd, tmp, LEASE_SPARE, 1) != 0)
            kvs__io()->unlinkat(dfd, tmp, 0);
    }
    kvs__io()->close(dfd);
}

char *kvs__lease_describe(const char *root)
{
    char text[LEASE_MAX_BYTES], desc[256];
    kvs_lease l;
    kvs__lease_init(&l, root, 1, NULL);
    int dfd = lease_dir(&l, false);
    if (dfd == -ENOENT)
        return kvs__strdup("free");
    if (dfd < 0)
        return kvs__asprintf("unknown (%s " KVS_META_DIR " %s)", root, kvs__meta_strerror(-dfd));
    int n = read_name(dfd, KVS_LEASE_FILE, text, sizeof text);
    char *out = NULL;
    if (n == -ENOENT) {
        out = kvs__strdup("free");
    } else if (n < 0) {
        out = kvs__asprintf("unknown (" KVS_LEASE_FILE " %s)", kvs__meta_strerror(-n));
    } else {
        lease_text t;
        parse(text, &t);
        describe(&t, lease_mtime(dfd), desc, sizeof desc);
        out = kvs__strdup(desc);
    }
    kvs__io()->close(dfd);
    return out;
}
