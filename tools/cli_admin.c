/*
 * cli_admin.c - the operator's commands: `kvstash ls`, `du`, `verify`, `gc`
 * and `rm`, on the whole store (every namespace, every store path), all
 * through the public kvs_admin_* API.  Each is safe while instances run:
 * removing files under them makes misses, and gc holds the collector lease
 * like the instances' own collectors.
 */
#include "cli.h"

#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- formatting ---------------------------------------------------------- */

static const char *fmt_bytes(uint64_t b, char *buf, size_t len)
{
    const char *unit[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1000.0 && u < 5) {
        v /= 1000.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", b);
    else
        snprintf(buf, len, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, unit[u]);
    return buf;
}

static const char *fmt_age(double s, char *buf, size_t len)
{
    if (s < 0)
        s = 0;
    if (s < 120)
        snprintf(buf, len, "%.0fs", s);
    else if (s < 7200)
        snprintf(buf, len, "%.0fm", s / 60);
    else if (s < 172800)
        snprintf(buf, len, "%.0fh", s / 3600);
    else
        snprintf(buf, len, "%.0fd", s / 86400);
    return buf;
}

/* "2026-11-24 08:14:03Z (5m ago)"; "-" for 0. */
static const char *fmt_when(int64_t wall_ns, char *buf, size_t len)
{
    if (wall_ns <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t t = (time_t)(wall_ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char day[32], age[16];
    strftime(day, sizeof day, "%Y-%m-%d %H:%M:%SZ", &tm);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double ago = (double)now.tv_sec + now.tv_nsec / 1e9 - (double)wall_ns / 1e9;
    snprintf(buf, len, "%s (%s ago)", day, fmt_age(ago, age, sizeof age));
    return buf;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 if the bytes there
 * are not one.  C1 controls (U+0080..U+009F) count as invalid: a terminal
 * may act on them. */

/* s as a terminal may show it: control bytes and bytes that are not UTF-8
 * become \xNN, so a planted NAMESPACE.json or folder name cannot send escape
 * sequences to the operator's terminal. */
static const char *visible(const char *s, char *out, size_t len)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && o + 5 < len) {
        size_t n = cli_utf8_len(p);
        if (n == 1 && (*p < 0x20 || *p == 0x7f))
            n = 0;
        if (n == 0) {
            o += (size_t)snprintf(out + o, len - o, "\\x%02x", *p);
            p++;
        } else {
            memcpy(out + o, p, n);
            o += n;
            p += n;
        }
    }
    out[o] = '\0';
    return out;
}

/* A member of the flat NAMESPACE.json object ("" if absent): a string's
 * JSON escapes decoded (\u0000 stops it), anything else as its raw text. */
static void json_member(const char *json, const char *key, char *out, size_t len)
{
    out[0] = '\0';
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    if (!p)
        return;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != '"') {
        size_t n = strcspn(p, ",}");
        snprintf(out, len, "%.*s", (int)n, p);
        return;
    }
    size_t o = 0;
    for (p++; *p && *p != '"' && o + 4 < len; p++) {
        if (*p != '\\') {
            out[o++] = *p;
            continue;
        }
        p++;
        const char *esc = strchr("\"\\/bfnrt", *p);
        if (*p && esc) {
            out[o++] = "\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"];
        } else if (*p == 'u' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]) &&
                   isxdigit((unsigned char)p[3]) && isxdigit((unsigned char)p[4])) {
            char hex[5] = {p[1], p[2], p[3], p[4], 0};
            unsigned long c = strtoul(hex, NULL, 16);
            p += 4;
            if (c == 0)
                break;
            if (c >= 0xd800 && c < 0xe000)
                c = 0xfffd; /* a lone half of a pair: not kept */
            if (c < 0x80) {
                out[o++] = (char)c;
            } else if (c < 0x800) {
                out[o++] = (char)(0xc0 | c >> 6);
                out[o++] = (char)(0x80 | (c & 0x3f));
            } else {
                out[o++] = (char)(0xe0 | c >> 12);
                out[o++] = (char)(0x80 | (c >> 6 & 0x3f));
                out[o++] = (char)(0x80 | (c & 0x3f));
            }
        } else {
            break; /* not JSON: keep what came before */
        }
    }
    out[o] = '\0';
}

static void describe_identity(const char *json, char *out, size_t len)
{
    if (!json || !json[0]) {
        snprintf(out, len, "(no NAMESPACE.json)");
        return;
    }
    char model[256], dtype[16], layout[8], L[16], H[16], D[16], W[16], R[16], C[16], variant[128],
        salt[80];
    json_member(json, "model", model, sizeof model);
    json_member(json, "dtype", dtype, sizeof dtype);
    json_member(json, "layout", layout, sizeof layout);
    json_member(json, "num_layers", L, sizeof L);
    json_member(json, "num_kv_heads", H, sizeof H);
    json_member(json, "head_dim", D, sizeof D);
    json_member(json, "world_size", W, sizeof W);
    json_member(json, "rank", R, sizeof R);
    json_member(json, "chunk_size", C, sizeof C);
    json_member(json, "variant", variant, sizeof variant);
    json_member(json, "salt_sha256", salt, sizeof salt);
    if (!strcmp(variant, "null"))
        variant[0] = '\0';
    char raw[1024];
    if (snprintf(raw, sizeof raw, "%s %s %s %sx%sx%s tp%s/%s chunk %s%s%s%s", model, dtype, layout,
                 L, H, D, W, R, C, variant[0] ? " variant " : "", variant,
                 salt[0] ? " salted" : "") >= (int)sizeof raw)
        raw[sizeof raw - 2] = '~';
    if (strlen(visible(raw, out, len)) + 6 >= len)
        out[len - 2] = '~'; /* truncated: say so */
}

/* The identity of a namespace as a JSON object rebuilt member by member from
 * NAMESPACE.json (text anyone who can write the folder controls): strings
 * re-escaped, numbers only if they are plain digits, else null. */
static void json_identity(FILE *f, const char *json)
{
    if (!json || !json[0]) {
        fputs("null", f);
        return;
    }
    static const char *const strs[] = {"model", "dtype", "layout", "variant", "salt_sha256"};
    static const char *const nums[] = {"format",     "num_layers", "num_kv_heads", "head_dim",
                                       "world_size", "rank",       "chunk_size"};
    char v[512];
    fputc('{', f);
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        json_member(json, nums[i], v, sizeof v);
        bool digits = v[0] && strlen(v) < 20 && strspn(v, "0123456789") == strlen(v);
        fprintf(f, "%s\"%s\": %s", i ? ", " : "", nums[i], digits ? v : "null");
    }
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        json_member(json, strs[i], v, sizeof v);
        fprintf(f, ", \"%s\": ", strs[i]);
        if (!strcmp(strs[i], "variant") && (!v[0] || !strcmp(v, "null")))
            fputs("null", f);
        else
            cli_json_str(f, v);
    }
    fputc('}', f);
}

static int open_admin(kvs_admin **a)
{
    kvs_config *cfg = NULL;
    int rc = cli_load_config(&cfg);
    if (rc)
        return rc;
    kvs_status st = kvs_admin_open(cfg, a);
    kvs_config_free(cfg);
    if (st)
        return cli_fail(st, "cannot open the store");
    return EXIT_OK;
}

/* ---- ls -------------------------------------------------------------------- */

/* logical/stored as "1.42x"; "-" without stored bytes. */
static const char *fmt_ratio(uint64_t logical, uint64_t stored, char *buf, size_t len)
{
    if (!stored || !logical)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.2fx", (double)logical / (double)stored);
    return buf;
}

int cmd_ls(int argc, char **argv)
{
    bool json = false;
    cli_args args;
    cli_args_init(&args, cli_find_command("ls"), argc, argv);
    int c;
    while ((c = cli_getopt(&args, NULL, NULL)) > 0)
        json = true;
    if (c < 0)
        return args.exit;
    kvs_admin *a = NULL;
    int rc = open_admin(&a);
    if (rc)
        return rc;
    kvs_ns_usage *list = NULL;
    size_t n = 0;
    kvs_status st = kvs_admin_list(a, &list, &n);
    kvs_admin_close(a);
    if (st)
        return cli_fail(st, "ls");
    uint64_t chunks = 0, bytes = 0;
    if (json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            const kvs_ns_usage *u = &list[i];
            printf("%s\n  {\"id\": ", i ? "," : "");
            cli_json_str(stdout, u->id);
            printf(", \"chunks\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"logical_bytes\": %" PRIu64
                   ", \"compressed_chunks\": %" PRIu64 ", \"temp_files\": %" PRIu64
                   ", \"temp_bytes\": %" PRIu64 ", \"oldest_access_ns\": %" PRId64
                   ", \"newest_access_ns\": %" PRId64 ", \"identity\": ",
                   u->chunks, u->bytes, u->logical_bytes, u->compressed_chunks, u->temp_files,
                   u->temp_bytes, u->oldest_access_ns, u->newest_access_ns);
            json_identity(stdout, u->identity);
            printf("}");
        }
        printf("%s]\n", n ? "\n" : "");
    } else {
        printf("%-48s %10s %10s %10s %6s  %-31s  %-31s  %s\n", "NAMESPACE", "CHUNKS", "STORED",
               "LOGICAL", "RATIO", "OLDEST ACCESS", "NEWEST ACCESS", "MODEL AND GEOMETRY");
        uint64_t logical = 0, compressed = 0;
        for (size_t i = 0; i < n; i++) {
            const kvs_ns_usage *u = &list[i];
            char b[32], lb[32], r[16], o[64], w[64], d[512], id[256];
            describe_identity(u->identity, d, sizeof d);
            printf("%-48s %10" PRIu64 " %10s %10s %6s  %-31s  %-31s  %s%s\n",
                   visible(u->id, id, sizeof id), u->chunks, fmt_bytes(u->bytes, b, sizeof b),
                   fmt_bytes(u->logical_bytes, lb, sizeof lb),
                   fmt_ratio(u->logical_bytes, u->bytes, r, sizeof r),
                   fmt_when(u->oldest_access_ns, o, sizeof o),
                   fmt_when(u->newest_access_ns, w, sizeof w), d,
                   u->temp_files ? " (+temporary files)" : "");
            chunks += u->chunks;
            bytes += u->bytes;
            logical += u->logical_bytes;
            compressed += u->compressed_chunks;
        }
        char b[32], lb[32], r[16];
        printf("%zu namespace%s, %" PRIu64 " chunks (%" PRIu64 " compressed), %s stored, %s "
               "logical, ratio %s\n", n, n == 1 ? "" : "s", chunks, compressed,
               fmt_bytes(bytes, b, sizeof b), fmt_bytes(logical, lb, sizeof lb),
               fmt_ratio(logical, bytes, r, sizeof r));
    }
    kvs_free(list);
    return EXIT_OK;
}

/* ---- du -------------------------------------------------------------------- */

int cmd_du(int argc, char **argv)
{
    bool json = false, measure = false;
    cli_args args;
    cli_args_init(&args, cli_find_command("du"), argc, argv);
    int c;
    while ((c = cli_getopt(&args, NULL, NULL)) > 0) {
        if (c == 'j')
            json = true;
        else
            measure = true;
    }
    if (c < 0)
        return args.exit;
    kvs_admin *a = NULL;
    int rc = open_admin(&a);
    if (rc)
        return rc;
    kvs_usage u;
    kvs_status st = kvs_admin_usage(a, measure, &u);
    if (!st && !measure && !u.last_pass_wall_ns)
        st = kvs_admin_usage(a, 1, &u); /* never measured: measure now */
    if (st) {
        kvs_admin_close(a);
        return cli_fail(st, "du");
    }
    char *lease[KVS_ADMIN_MAX_PATHS] = {0};
    for (uint32_t p = 0; p < u.path_count; p++)
        if (kvs_admin_lease(a, p, &lease[p]) != KVS_OK)
            lease[p] = NULL;
    char b1[32], b2[32], b3[32], w[64];
    if (json) {
        printf("{\"used_bytes\": %" PRIu64 ", \"chunks\": %" PRIu64 ", \"temp_files\": %" PRIu64
               ", \"namespaces\": %" PRIu64 ", \"max_bytes\": %" PRIu64 ", \"high_bytes\": %" PRIu64
               ", \"low_bytes\": %" PRIu64 ", \"min_free_bytes\": %" PRIu64 ", \"measured\": %s"
               ", \"last_pass_wall_ns\": %" PRId64 ", \"last_pass_seconds\": %.3f",
               u.used_bytes, u.chunks, u.temp_files, u.namespaces, u.max_bytes, u.high_bytes,
               u.low_bytes, u.min_free_bytes, u.measured ? "true" : "false", u.last_pass_wall_ns,
               u.last_pass_seconds);
        if (u.measured)
            printf(", \"logical_bytes\": %" PRIu64 ", \"compressed_chunks\": %" PRIu64,
                   u.logical_bytes, u.compressed_chunks);
        else /* the collector's record has stored bytes only */
            printf(", \"logical_bytes\": null, \"compressed_chunks\": null");
        printf(", \"paths\": [");
        for (uint32_t p = 0; p < u.path_count; p++) {
            const kvs_path_usage *q = &u.paths[p];
            printf("%s{\"path\": ", p ? ", " : "");
            cli_json_str(stdout, q->path);
            printf(", \"store_id\": \"%016" PRIx64 "\", \"used_bytes\": %" PRIu64
                   ", \"chunks\": %" PRIu64 ", \"fs_size_bytes\": %" PRIu64
                   ", \"fs_free_bytes\": %" PRIu64 ", \"lease\": ",
                   q->store_id, q->used_bytes, q->chunks, q->fs_size_bytes, q->fs_free_bytes);
            cli_json_str(stdout, lease[p] ? lease[p] : "unknown");
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("store: %u path%s, %s in %" PRIu64 " chunks (%" PRIu64 " namespaces, %" PRIu64
               " temporary files)%s\n",
               u.path_count, u.path_count == 1 ? "" : "s", fmt_bytes(u.used_bytes, b1, sizeof b1),
               u.chunks, u.namespaces, u.temp_files,
               u.measured ? ", measured now" : ", as the collector last measured");
        if (u.measured) {
            char r[16];
            printf("logical: %s of KV in those chunks (%" PRIu64 " compressed); logical/stored "
                   "ratio %s\n", fmt_bytes(u.logical_bytes, b1, sizeof b1), u.compressed_chunks,
                   fmt_ratio(u.logical_bytes, u.used_bytes, r, sizeof r));
        } else {
            printf("logical: not in the collector's record (kvstash du --measure reads it)\n");
        }
        if (u.max_bytes)
            printf("limit: max_store_size %s for the whole store: eviction above %s down to %s; "
                   "%.0f%% used\n",
                   fmt_bytes(u.max_bytes, b1, sizeof b1), fmt_bytes(u.high_bytes, b2, sizeof b2),
                   fmt_bytes(u.low_bytes, b3, sizeof b3),
                   100.0 * (double)u.used_bytes / (double)u.max_bytes);
        else
            printf("limit: none (max_store_size 0)\n");
        printf("floor: min_free_space %s on each filesystem\n",
               fmt_bytes(u.min_free_bytes, b1, sizeof b1));
        for (uint32_t p = 0; p < u.path_count; p++) {
            const kvs_path_usage *q = &u.paths[p];
            printf("path %s: %s in %" PRIu64 " chunks; filesystem %s, %s free", q->path,
                   fmt_bytes(q->used_bytes, b1, sizeof b1), q->chunks,
                   fmt_bytes(q->fs_size_bytes, b2, sizeof b2),
                   fmt_bytes(q->fs_free_bytes, b3, sizeof b3));
            if (q->store_id)
                printf("; store id %016" PRIx64, q->store_id);
            printf("; collector lease: %s\n", lease[p] ? lease[p] : "unknown");
        }
        if (u.last_pass_wall_ns)
            printf("last collector pass: %s, took %.3f s\n",
                   fmt_when(u.last_pass_wall_ns, w, sizeof w), u.last_pass_seconds);
        else
            printf("last collector pass: none recorded on every path\n");
    }
    for (uint32_t p = 0; p < u.path_count; p++)
        kvs_free(lease[p]);
    kvs_admin_close(a); /* the path strings were its */
    return EXIT_OK;
}

/* ---- verify ------------------------------------------------------------------ */

typedef struct verify_ui {
    bool tty;
    bool quiet;
    double t0;
    uint64_t bad_seen;
    FILE *json; /* --json: the bad files, as JSON array members */
} verify_ui;

static void verify_progress(void *ctx, uint64_t done, uint64_t total, uint64_t bytes)
{
    verify_ui *ui = ctx;
    if (!ui->tty)
        return;
    double dt = cli_now() - ui->t0;
    char b[32];
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : 0;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[width] = '\0';
    if (total)
        fprintf(stderr, "\rverify [%s] %3.0f%% %" PRIu64 "/%" PRIu64 " files, %s/s, %" PRIu64
                        " bad  ",
                bar, 100.0 * (double)done / (double)total, done, total,
                fmt_bytes(dt > 0 ? (uint64_t)((double)bytes / dt) : 0, b, sizeof b),
                ui->bad_seen);
    else
        fprintf(stderr, "\rverify [counting files] %" PRIu64 " files checked  ", done);
    fflush(stderr);
}

static void verify_bad(void *ctx, const char *path, const char *reason)
{
    verify_ui *ui = ctx;
    if (ui->json) {
        fprintf(ui->json, "%s\n    {\"path\": ", ui->bad_seen ? "," : "");
        cli_json_str(ui->json, path);
        fprintf(ui->json, ", \"reason\": ");
        cli_json_str(ui->json, reason);
        fprintf(ui->json, "}");
        ui->bad_seen++;
        return;
    }
    ui->bad_seen++;
    if (ui->tty)
        fprintf(stderr, "\r\033[K");
    printf("BAD %s: %s\n", path, reason);
    fflush(stdout);
}

int cmd_verify(int argc, char **argv)
{
    kvs_verify_options o = {0};
    verify_ui ui = {.tty = isatty(STDERR_FILENO) != 0};
    bool json = false;
    cli_args args;
    cli_args_init(&args, cli_find_command("verify"), argc, argv);
    const char *arg = NULL;
    int c;
    uint64_t threads = 0;
    while ((c = cli_getopt(&args, &arg, NULL)) > 0) {
        switch (c) {
        case 'n': o.namespace_id = arg; break;
        case 'a': o.namespace_id = NULL; break;
        case 't':
            if (cli_parse_u64(arg, &threads) || threads < 1 || threads > 256)
                return cli_usage_error("--threads \"%s\" is not in 1..256", arg);
            o.threads = (uint32_t)threads;
            break;
        case 'r': o.remove_bad = 1; break;
        case 'q': ui.quiet = true; ui.tty = false; break;
        case 'j': json = true; break;
        }
    }
    if (c < 0)
        return args.exit;
    kvs_admin *a = NULL;
    int rc = open_admin(&a);
    if (rc)
        return rc;
    char *jbuf = NULL;
    size_t jlen = 0;
    if (json && !(ui.json = open_memstream(&jbuf, &jlen))) {
        kvs_admin_close(a);
        fprintf(stderr, "kvstash: verify: out of memory\n");
        return EXIT_IO;
    }
    o.progress = verify_progress;
    o.bad_file = verify_bad;
    o.ctx = &ui;
    ui.t0 = cli_now();
    kvs_verify_report r;
    kvs_status st = kvs_admin_verify(a, &o, &r);
    kvs_admin_close(a);
    if (ui.tty)
        fprintf(stderr, "\r\033[K");
    if (ui.json)
        fclose(ui.json);
    if (st) {
        free(jbuf);
        return cli_fail(st, "verify");
    }
    rc = r.bad || r.unreadable ? EXIT_VERIFY : EXIT_OK;
    if (json) {
        printf("{\"exit_status\": %d, \"files\": %" PRIu64 ", \"bytes\": %" PRIu64
               ", \"seconds\": %.6f, \"ok\": %" PRIu64 ", \"bad\": %" PRIu64
               ", \"unreadable\": %" PRIu64 ", \"misplaced\": %" PRIu64 ", \"vanished\": %" PRIu64
               ", \"removed\": %" PRIu64 ",\n  \"bad_files\": [%s%s]}\n",
               rc, r.files, r.bytes, r.seconds, r.ok, r.bad, r.unreadable, r.misplaced,
               r.vanished, o.remove_bad ? r.removed : 0, jbuf ? jbuf : "",
               ui.bad_seen ? "\n  " : "");
        free(jbuf);
        return rc;
    }
    char b[32], sp[32];
    printf("verify: %" PRIu64 " files, %s in %.2f s (%s/s): %" PRIu64 " ok, %" PRIu64
           " bad, %" PRIu64 " unreadable, %" PRIu64 " misplaced, %" PRIu64
           " vanished while checking%s",
           r.files, fmt_bytes(r.bytes, b, sizeof b), r.seconds,
           fmt_bytes(r.seconds > 0 ? (uint64_t)((double)r.bytes / r.seconds) : 0, sp, sizeof sp),
           r.ok, r.bad, r.unreadable, r.misplaced, r.vanished, o.remove_bad ? "" : "\n");
    if (o.remove_bad)
        printf(", %" PRIu64 " removed\n", r.removed);
    return rc;
}

/* ---- gc ------------------------------------------------------------------------ */

typedef struct gc_ui {
    bool list;
    FILE *json; /* --json: the files, as JSON array members */
    uint64_t listed;
} gc_ui;

static void gc_file(void *ctx, const char *path, uint64_t bytes, int64_t access)
{
    gc_ui *ui = ctx;
    if (!ui->list)
        return;
    if (ui->json) {
        fprintf(ui->json, "%s\n    {\"path\": ", ui->listed++ ? "," : "");
        cli_json_str(ui->json, path);
        fprintf(ui->json, ", \"bytes\": %" PRIu64 ", \"last_access_ns\": %" PRId64 "}", bytes,
                access);
        return;
    }
    char b[32], w[64];
    printf("%s %s, last access %s\n", path, fmt_bytes(bytes, b, sizeof b),
           fmt_when(access, w, sizeof w));
}

/* A --to-size or --older-than value, in the grammar of the configuration. */
static int size_arg(const char *opt, const char *arg, uint64_t *out)
{
    if (kvs_parse_size(arg, out) != KVS_OK)
        return cli_usage_error("--%s: %s", opt, kvs_last_error());
    return EXIT_OK;
}

static int age_arg(const char *opt, const char *arg, uint64_t *out)
{
    if (kvs_parse_age(arg, out) != KVS_OK)
        return cli_usage_error("--%s: %s", opt, kvs_last_error());
    return EXIT_OK;
}

int cmd_gc(int argc, char **argv)
{
    kvs_gc_options o = {0};
    gc_ui ui = {0};
    bool json = false;
    uint64_t wait_s = UINT64_MAX;
    cli_args args;
    cli_args_init(&args, cli_find_command("gc"), argc, argv);
    const char *arg = NULL;
    int c, rc;
    while ((c = cli_getopt(&args, &arg, NULL)) > 0) {
        switch (c) {
        case 's':
            if ((rc = size_arg("to-size", arg, &o.to_bytes)))
                return rc;
            o.flags |= KVS_GC_TO_SIZE;
            break;
        case 'o':
            if ((rc = age_arg("older-than", arg, &o.older_than_s)))
                return rc;
            o.flags |= KVS_GC_OLDER_THAN;
            break;
        case 'n': o.namespace_id = arg; break;
        case 'd': o.flags |= KVS_GC_DRY_RUN; break;
        case 'w':
            if ((rc = age_arg("wait", arg, &wait_s)))
                return rc;
            break;
        case 'v': ui.list = true; break;
        case 'j': json = true; break;
        }
    }
    if (c < 0)
        return args.exit;
    if (o.namespace_id && !(o.flags & (KVS_GC_TO_SIZE | KVS_GC_OLDER_THAN)))
        return cli_usage_error("gc --namespace needs --to-size or --older-than");
    if (o.flags & KVS_GC_DRY_RUN)
        ui.list = true;
    kvs_config *cfg = NULL;
    rc = cli_load_config(&cfg);
    if (rc)
        return rc;
    char *ttl = NULL;
    uint64_t ttl_s = 30;
    if (kvs_config_get(cfg, "lease_ttl_s", &ttl, NULL) == KVS_OK) {
        cli_parse_u64(ttl, &ttl_s);
        kvs_free(ttl);
    }
    if (wait_s == UINT64_MAX)
        wait_s = 2 * ttl_s;
    o.lease_wait_ms = (uint32_t)(wait_s < 3600 ? wait_s * 1000 : 3600000u);
    kvs_admin *a = NULL;
    kvs_status st = kvs_admin_open(cfg, &a);
    kvs_config_free(cfg);
    if (st)
        return cli_fail(st, "cannot open the store");
    char *jbuf = NULL;
    size_t jlen = 0;
    if (json && !(ui.json = open_memstream(&jbuf, &jlen))) {
        kvs_admin_close(a);
        fprintf(stderr, "kvstash: gc: out of memory\n");
        return EXIT_IO;
    }
    o.on_file = gc_file;
    o.ctx = &ui;
    kvs_gc_report r;
    st = kvs_admin_gc(a, &o, &r);
    kvs_admin_close(a);
    if (ui.json)
        fclose(ui.json);
    if (st) {
        free(jbuf);
        return cli_fail(st, "gc");
    }
    bool dry = o.flags & KVS_GC_DRY_RUN;
    if (json) {
        printf("{\"exit_status\": 0, \"dry_run\": %s, \"used_before\": %" PRIu64
               ", \"chunks_before\": %" PRIu64 ", \"files_removed\": %" PRIu64
               ", \"bytes_removed\": %" PRIu64 ", \"orphans_removed\": %" PRIu64
               ", \"used_after\": %" PRIu64 ", \"chunks_after\": %" PRIu64 ", \"passes\": %u"
               ", \"scan_seconds\": %.6f, \"evict_seconds\": %.6f, \"kept_touched\": %s"
               ", \"target_missed\": %s",
               dry ? "true" : "false", r.used_before, r.chunks_before, r.files_removed,
               r.bytes_removed, r.orphans_removed, r.used_after, r.chunks_after, r.passes,
               r.scan_seconds, r.evict_seconds, r.kept_touched ? "true" : "false",
               r.target_missed ? "true" : "false");
        if (ui.list)
            printf(",\n  \"files\": [%s%s]", jbuf ? jbuf : "", ui.listed ? "\n  " : "");
        printf("}\n");
        free(jbuf);
        return EXIT_OK;
    }
    char b1[32], b2[32], b3[32];
    printf("gc%s: %s in %" PRIu64 " chunks before; %s %" PRIu64 " chunks (%s) and %" PRIu64
           " orphaned temporary files; %s in %" PRIu64 " chunks after; %u pass%s, walk %.2f s, "
           "eviction %.2f s%s%s\n",
           dry ? " (dry run)" : "", fmt_bytes(r.used_before, b1, sizeof b1), r.chunks_before,
           dry ? "would remove" : "removed", r.files_removed,
           fmt_bytes(r.bytes_removed, b2, sizeof b2), r.orphans_removed,
           fmt_bytes(r.used_after, b3, sizeof b3), r.chunks_after, r.passes,
           r.passes == 1 ? "" : "es", r.scan_seconds, r.evict_seconds,
           r.kept_touched ? "; kept candidates read meanwhile" : "",
           r.target_missed ? "; the target was not reached: nothing more to evict" : "");
    return EXIT_OK;
}

/* ---- rm ------------------------------------------------------------------------- */

/* rm --dry-run: what the store holds of the namespace, from the walk ls
 * makes; nothing is removed. */
static int rm_dry_run(kvs_admin *a, const char *ns, bool json)
{
    kvs_ns_usage *list = NULL;
    size_t n = 0;
    kvs_status st = kvs_admin_list(a, &list, &n);
    if (st)
        return cli_fail(st, "rm --dry-run");
    const kvs_ns_usage *u = NULL;
    for (size_t i = 0; i < n && !u; i++)
        if (!strcmp(list[i].id, ns))
            u = &list[i];
    int rc = EXIT_OK;
    if (!u) {
        fprintf(stderr, "kvstash: rm --dry-run: no store path has namespace \"%s\" (kvstash ls "
                        "lists them)\n", ns);
        rc = EXIT_IO; /* as rm itself: KVS_ERR_NOT_FOUND */
    } else if (json) {
        printf("{\"exit_status\": 0, \"dry_run\": true, \"namespace\": ");
        cli_json_str(stdout, ns);
        printf(", \"chunks\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"temp_files\": %" PRIu64
               ", \"temp_bytes\": %" PRIu64 ", \"files\": %" PRIu64 "}\n",
               u->chunks, u->bytes, u->temp_files, u->temp_bytes, u->chunks + u->temp_files);
    } else {
        char b[32];
        printf("rm (dry run): would remove namespace %s: %" PRIu64 " chunk files (%s) and %" PRIu64
               " temporary files\n",
               ns, u->chunks, fmt_bytes(u->bytes + u->temp_bytes, b, sizeof b), u->temp_files);
    }
    kvs_free(list);
    return rc;
}

int cmd_rm(int argc, char **argv)
{
    const char *ns = NULL;
    bool dry = false, json = false;
    cli_args args;
    cli_args_init(&args, cli_find_command("rm"), argc, argv);
    const char *arg = NULL;
    int c;
    while ((c = cli_getopt(&args, &arg, NULL)) > 0) {
        if (c == 'n')
            ns = arg;
        else if (c == 'd')
            dry = true;
        else
            json = true;
    }
    if (c < 0)
        return args.exit;
    if (!ns)
        return cli_usage_error("rm needs --namespace ID (see kvstash ls)");
    kvs_admin *a = NULL;
    int rc = open_admin(&a);
    if (rc)
        return rc;
    if (dry) {
        rc = rm_dry_run(a, ns, json);
        kvs_admin_close(a);
        return rc;
    }
    uint64_t files = 0;
    kvs_status st = kvs_admin_remove_namespace(a, ns, &files);
    kvs_admin_close(a);
    if (st)
        return cli_fail(st, "rm");
    if (json) {
        printf("{\"exit_status\": 0, \"dry_run\": false, \"namespace\": ");
        cli_json_str(stdout, ns);
        printf(", \"files\": %" PRIu64 "}\n", files);
    } else {
        printf("removed namespace %s: %" PRIu64 " files\n", ns, files);
    }
    return EXIT_OK;
}
