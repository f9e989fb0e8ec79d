/*
 * doctor.c - `kvstash doctor`: what an engine would find on this machine.
 *
 * For each store path: whether it exists and is writable, the filesystem
 * type (from /proc/self/mountinfo, longest matching mount point, the way
 * LMCache detects wekafs), free space, and whether O_DIRECT works (by
 * writing and reading one aligned block, since filesystems that refuse it
 * do so only at I/O time).  Then the GPUs, cuFile (with a write and read
 * through it when it loads) and the data path an engine would use for GPU
 * and host memory, and why.
 * It touches nothing but one temporary file per path, which it removes.
 */
#include "config.h"
#include "checksum.h"
#include "chunk_file.h"
#include "collector.h"
#include "dev.h"
#include "io_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Unescapes the octal escapes (\040 for space) of mountinfo fields. */
static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' && p[2] && p[3]) {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

static void fs_type(const char *path, char *type, size_t tlen, char *mnt, size_t mlen)
{
    snprintf(type, tlen, "unknown");
    snprintf(mnt, mlen, "?");
    char real[4096];
    if (!realpath(path, real))
        return;
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return;
    char line[8192];
    size_t best = 0;
    while (fgets(line, sizeof line, f)) {
        /* id parent major:minor root mountpoint opts ... - fstype source super */
        char *fields[6] = {0};
        char *save = NULL, *tok = strtok_r(line, " ", &save);
        for (int i = 0; tok && i < 6; i++, tok = strtok_r(NULL, " ", &save))
            fields[i] = tok;
        char *dash = NULL;
        while (tok) {
            if (strcmp(tok, "-") == 0) {
                dash = strtok_r(NULL, " ", &save);
                break;
            }
            tok = strtok_r(NULL, " ", &save);
        }
        if (!fields[4] || !dash)
            continue;
        unescape(fields[4]);
        size_t n = strlen(fields[4]);
        bool under = strncmp(real, fields[4], n) == 0 &&
                     (real[n] == '/' || real[n] == '\0' || (n == 1 && fields[4][0] == '/'));
        if (under && n >= best) {
            best = n;
            snprintf(type, tlen, "%s", dash);
            snprintf(mnt, mlen, "%s", fields[4]);
        }
    }
    fclose(f);
}

/* The engine's own probe (kvs__direct_probe) on the store path, so doctor
 * cannot reach a verdict the engine does not. */
static const char *probe_direct(const char *dir, char *why, size_t wlen)
{
    int rfd = kvs__root_open(dir);
    if (rfd < 0) {
        snprintf(why, wlen, "cannot open the folder: %s", strerror(-rfd));
        return "unknown";
    }
    const char *step = "";
    int err = kvs__direct_probe(rfd, ".kvstash-doctor", &step);
    kvs__io()->close(rfd);
    if (err == 0) {
        snprintf(why, wlen, "a %u-byte write and read passed", (unsigned)KVS_FILE_ALIGN);
        return "supported";
    }
    if (err == ENOMEM) {
        snprintf(why, wlen, "out of memory");
        return "unknown";
    }
    /* A folder we may not write, or a full one, has not said whether it
     * takes O_DIRECT: creating the file failed for a reason of its own. */
    if (!strcmp(step, "create") && (err == EACCES || err == EPERM || err == EROFS ||
                                    err == ENOSPC || err == EDQUOT)) {
        snprintf(why, wlen, "cannot create a file here: %s", strerror(err));
        return "unknown (not writable)";
    }
    snprintf(why, wlen, "%s refused: %s", strcmp(step, "create") ? step : "open", strerror(err));
    return "not supported";
}

/* Filesystems that live on one machine: a store there is not shared
 * between nodes (tmpfs and friends not even across a reboot). */
static bool local_fs(const char *type)
{
    static const char *const local[] = {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs",
        "overlay", "vfat", "exfat", "ntfs", "ntfs3", "reiserfs", "jfs", "bcachefs",
        "squashfs", "devtmpfs", NULL,
    };
    for (const char *const *t = local; *t; t++)
        if (strcmp(type, *t) == 0)
            return true;
    return false;
}

kvs_status kvs_doctor(const kvs_config *cfg, char **report_out, int *healthy_out)
{
    if (!cfg || !report_out)
        return kvs__fail(KVS_ERR_INVALID, "kvs_doctor: NULL argument");
    kvs_buf b = {0};
    bool healthy = true;
    bool direct_everywhere = true;
    bool direct_unknown = false;  /* a folder an engine would create */
    kvs_buf_printf(&b, "kvstash: %s\n", kvs_version_string());
    kvs_buf_printf(&b, "store paths: %u%s\n", cfg->num_store_paths,
                   cfg->weka_path ? "" : " (weka_path unset: the local default folder)");
    for (uint32_t p = 0; p < cfg->num_store_paths; p++) {
        const char *path = cfg->store_paths[p];
        kvs_buf_printf(&b, "store path %u: %s\n", p + 1, path);
        struct stat st;
        if (stat(path, &st) != 0) {
            kvs_buf_printf(&b, "  exists: no (%s)%s\n", strerror(errno),
                           cfg->weka_path ? "" : "; an engine creates it");
            healthy &= !cfg->weka_path;
            direct_unknown = !cfg->weka_path;
            direct_everywhere &= !cfg->weka_path;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            kvs_buf_printf(&b, "  exists: yes, but not a directory\n");
            healthy = false;
            continue;
        }
        bool writable = access(path, W_OK | X_OK) == 0;
        kvs_buf_printf(&b, "  exists: yes, %s\n", writable ? "writable" : "NOT writable");
        healthy &= writable;
        char type[64], mnt[1024];
        fs_type(path, type, sizeof type, mnt, sizeof mnt);
        kvs_buf_printf(&b, "  filesystem: %s (mounted at %s)%s\n", type, mnt,
                       strcmp(type, "wekafs") == 0 ? " - WekaFS" : "");
        if (local_fs(type))
            kvs_buf_printf(&b, "  warning: %s is a local filesystem, not a shared one: only "
                           "processes on this machine share this store; other nodes "
                           "recompute what this one stored (point weka_path at the shared "
                           "mount, e.g. WekaFS, NFS, Lustre, GPFS, CephFS)\n", type);
        struct statvfs vfs;
        if (statvfs(path, &vfs) == 0) {
            double freeb = (double)vfs.f_bavail * vfs.f_frsize, total = (double)vfs.f_blocks * vfs.f_frsize;
            kvs_buf_printf(&b, "  free space: %.1f GB of %.1f GB; free inodes: %llu\n", freeb / 1e9,
                           total / 1e9, (unsigned long long)vfs.f_favail);
            if (cfg->min_free_space > 0 && freeb / 1e9 < cfg->min_free_space)
                kvs_buf_printf(&b, "  warning: below min_free_space (%.1f GB): stores will be "
                                   "refused\n",
                               cfg->min_free_space);
        }
        uint64_t id = 0;
        if (kvs__store_root_id(path, false, 0, &id) == KVS_OK) {
            kvs_buf_printf(&b, "  store id: %016llx%s\n", (unsigned long long)id,
                           cfg->num_store_paths > 1 ? " (picks which keys live here)" : "");
            for (uint32_t q = 0; q < p; q++) {
                uint64_t other = 0;
                if (kvs__store_root_id(cfg->store_paths[q], false, 0, &other) == KVS_OK &&
                    other == id) {
                    kvs_buf_printf(&b, "  problem: store path %u has the same store id: one "
                                       "folder listed twice, or a copy; engines refuse this\n",
                                   q + 1);
                    healthy = false;
                }
            }
        } else {
            kvs_buf_printf(&b, "  store id: none yet%s\n",
                           cfg->num_store_paths > 1 ? " (the first engine makes it)" : "");
        }
        kvs_usage_record rec;
        if (kvs__usage_read(path, &rec) == 0) {
            uint64_t now = kvs__wall_ns();
            struct statvfs v;
            uint64_t fs_used = 0;
            if (kvs__io()->statvfs(path, &v) == 0)
                fs_used = (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize;
            double ago = now > rec.pass_end_wall_ns
                             ? (double)(now - rec.pass_end_wall_ns) / 1e9
                             : 0.0;
            uint64_t grew = kvs__usage_growth(&rec, fs_used);
            uint64_t fell = fs_used < rec.fs_used_baseline ? rec.fs_used_baseline - fs_used : 0;
            if (kvs__usage_stale(&rec, fs_used))
                /* The record is behind the store: say so, with the change,
                 * rather than show an old size as the store's. */
                kvs_buf_printf(&b,
                               "  store usage: about %.3f GB: %.3f GB in %llu chunks measured "
                               "%.0f s ago by %s, and the filesystem's usage %s %.3f GB since "
                               "(this store's writes or removals, or another tenant's; `kvstash "
                               "du` measures it now)\n",
                               (double)(rec.used_bytes + grew - KVS_MIN(fell, rec.used_bytes)) /
                                   1e9,
                               (double)rec.used_bytes / 1e9, (unsigned long long)rec.chunks, ago,
                               rec.host[0] ? rec.host : "?", grew ? "grew" : "fell",
                               (double)(grew ? grew : fell) / 1e9);
            else
                kvs_buf_printf(&b,
                               "  store usage: %.3f GB in %llu chunks, measured %.0f s ago by %s\n",
                               (double)rec.used_bytes / 1e9, (unsigned long long)rec.chunks, ago,
                               rec.host[0] ? rec.host : "?");
        } else {
            kvs_buf_printf(&b, "  store usage: not measured yet (an engine's collector does)\n");
        }
        char *lease = kvs__lease_describe(path);
        kvs_buf_printf(&b, "  collector lease: %s\n", lease ? lease : "unknown");
        kvs__free(lease);
        char why[256] = "";
        const char *verdict = writable ? probe_direct(path, why, sizeof why) : "unknown";
        kvs_buf_printf(&b, "  O_DIRECT: %s%s%s%s\n", verdict, why[0] ? " (" : "", why,
                       why[0] ? ")" : "");
        direct_everywhere &= strcmp(verdict, "supported") == 0;
    }
    /* GPU, cuFile and its self-test on the first store path (dev_cuda.c) */
    kvs__dev_doctor(cfg, &b);
    const char *direct = cfg->use_direct_io == KVS_DIRECT_IO_OFF
                             ? "off (use_direct_io is false)"
                         : !direct_everywhere ? "off (a store path is missing or refused it)"
                         : direct_unknown     ? "probed when an engine creates the folder"
                                              : "on (the filesystem supports it)";
    kvs_buf_printf(&b, "data path: posix, O_DIRECT %s, %u I/O threads\n", direct,
                   cfg->gds_io_threads);
    kvs_buf_printf(&b, "checksums: xxh3-64 (%s)\n", kvs__checksum_impl());
    if (cfg->auth_key_file && cfg->auth_key_file[0])
        kvs_buf_printf(&b, "trust: chunks authenticated (HMAC-SHA256, key %s)", cfg->auth_key_file);
    else
        kvs_buf_printf(&b, "trust: chunks not authenticated (whoever can write a namespace folder "
                           "decides what engines load; see auth_key_file)");
    kvs_buf_printf(&b, "; strict_ownership %s\n", cfg->strict_ownership ? "on" : "off");
    kvs_buf_printf(&b, "cpu tier: %s\n",
                   cfg->local_cpu && cfg->max_local_cpu_size > 0 ? "on" : "off");
    if (cfg->max_store_size > 0)
        kvs_buf_printf(&b, "capacity: max_store_size %.3f GB for all %u store path%s together, "
                           "evicting above %.0f%% down to %.0f%%; min_free_space %.3f GB per "
                           "filesystem\n",
                       cfg->max_store_size, cfg->num_store_paths,
                       cfg->num_store_paths == 1 ? "" : "s", 100 * cfg->store_high_watermark,
                       100 * cfg->store_low_watermark, cfg->min_free_space);
    else
        kvs_buf_printf(&b, "capacity: no max_store_size; min_free_space %.3f GB per filesystem\n",
                       cfg->min_free_space);
    kvs_buf_printf(&b, "healthy: %s\n", healthy ? "yes" : "no");
    if (healthy_out)
        *healthy_out = healthy;
    return kvs_buf_finish(&b, report_out);
}
