/*
 * cli_table.c - the kvstash commands and their options, in one table.
 *
 * Everything a user reads about the CLI comes from here: `kvstash --help`,
 * `kvstash COMMAND --help` and the man page (`kvstash help --man`, built into
 * build/kvstash.1 and installed by `make install`), and the option parser
 * (cli_getopt) accepts exactly the options listed, so the documentation and
 * the parser cannot drift apart.
 */
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* ---- options ------------------------------------------------------------ */

static const cli_opt json_only[] = {
    {"json", NULL, 'j', "print one JSON object instead of text"},
    {0},
};

static const cli_opt config_opts[] = {
    {"json", NULL, 'j', "the effective configuration as JSON, with each value's source"},
    {"markdown", NULL, 'm', "the reference of every key (docs/config.md)"},
    {0},
};

const cli_opt cli_geometry_opts[] = {
    {"model", "NAME", 1, "model id (default meta-llama/Llama-3.1-8B; bench: kvstash-bench)"},
    {"layers", "L", 1, "attention layers (default 32)"},
    {"kv-heads", "H", 1, "KV heads per rank (default 8)"},
    {"head-dim", "D", 1, "head dimension (default 128)"},
    {"dtype", "T", 1, "bf16, fp16, fp32 or fp8 (default bf16)"},
    {"mla", NULL, 1, "multi-head latent attention layout (one plane)"},
    {"world-size", "W", 1, "tensor-parallel size (default 1)"},
    {"rank", "R", 1, "tensor-parallel rank (default 0)"},
    {"salt", "S", 1, "tenancy salt (default: namespace_salt of the configuration)"},
    {"device", "D", 1, "cpu (default) or cuda:N: where the KV buffer lives"},
    {"content", "C", 1, "payload content: random (default; does not compress) or kv (bf16-like, "
                         "a few exponent values, compresses as trained KV does under codec); "
                         "store and retrieve --verify must use the same"},
    {"layout", "L", 1, "the cuda:N cache's layout: planes (default; vLLM before 0.26, "
                       "[2, blocks, 16, heads, dim]), packed-nhd or packed-hnd (vLLM 0.26 on: "
                       "(blocks, heads, 16, 2 * dim), NHD or HND memory order)"},
    {0},
};

static const cli_opt store_opts[] = {
    {"seed", "S[,S...]", 's', "the prompt's token ids come from seed S; a list of seeds "
                              "handles one prompt per seed in this one process (required)"},
    {"tokens", "N", 'n', "prompt length in tokens, 1..67108864 (required)"},
    {"shared-prefix", "S2:N2", 'p', "the first N2 token ids come from seed S2 instead"},
    {"keep-going", NULL, 'k', "go on with the next seed when chunks failed (exit 3 at the end)"},
    {"interval", "SECONDS", 'i', "pause between prompts (a steady writer), 0..3600"},
    {"linger", "SECONDS", 'l', "keep the engine open this long after the last store, so its "
                               "background collector can work, 0..3600"},
    {"quiet", NULL, 'q', "print only the result lines, not the engine's counters"},
    {"json", NULL, 'j', "print one JSON object: each prompt's result, the totals and the "
                        "engine's counters"},
    {0},
};

static const cli_opt retrieve_opts[] = {
    {"seed", "S[,S...]", 's', "the prompt's token ids come from seed S; a list of seeds "
                              "handles one prompt per seed in this one process (required)"},
    {"tokens", "N", 'n', "prompt length in tokens, 1..67108864 (required)"},
    {"shared-prefix", "S2:N2", 'p', "the first N2 token ids come from seed S2 instead"},
    {"verify", NULL, 'v', "check every restored byte against what store wrote (exit 1 when "
                          "one differs)"},
    {"quiet", NULL, 'q', "print only the result lines, not the engine's counters"},
    {"json", NULL, 'j', "print one JSON object: each prompt's result, the totals, the "
                        "verification and the engine's counters"},
    {0},
};

static const cli_opt bench_opts[] = {
    {"chunks", "N", 'c', "chunks per round, 1..100000 (default 32)"},
    {"threads", "T", 't', "I/O threads and memcpy threads, 1..256 (default: gds_io_threads)"},
    {"rounds", "R", 'r', "rounds per figure; medians are printed (default 5)"},
    {"direct-io", NULL, 'd', "also retrieve with O_DIRECT (from the disk)"},
    {"auth", NULL, 'a', "also measure authenticated chunks (auth_key_file, a random key in a "
                         "temporary file), same run"},
    {"data", "KIND", 'D', "payload: random (default; does not compress) or bf16 (synthetic bf16 "
                          "KV; with --device also measures codec off and on, same run)"},
    {"per-round", NULL, 'P', "also print each round's figures as measured, with the seconds "
                             "since the run began"},
    {0},
};

static const cli_opt ls_opts[] = {
    {"json", NULL, 'j', "a JSON array, one object per namespace"},
    {0},
};

static const cli_opt du_opts[] = {
    {"measure", NULL, 'm', "walk the store now instead of reading the collector's last "
                           "measurement"},
    {"json", NULL, 'j', "print one JSON object"},
    {0},
};

static const cli_opt verify_opts[] = {
    {"namespace", "ID", 'n', "only this namespace (its id as kvstash ls shows it)"},
    {"all", NULL, 'a', "every namespace (the default)"},
    {"threads", "N", 't', "parallel readers, 1..256 (default: gds_io_threads)"},
    {"remove-bad", NULL, 'r', "remove the bad files (never one that merely could not be read)"},
    {"quiet", NULL, 'q', "no progress bar"},
    {"json", NULL, 'j', "print one JSON object: the counts and every bad file with its reason"},
    {0},
};

static const cli_opt gc_opts[] = {
    {"to-size", "SIZE", 's', "evict until the store (or the namespace) holds at most SIZE, "
                             "such as 800GB or 1.5TiB (a bare number is GB)"},
    {"older-than", "AGE", 'o', "evict every chunk not accessed for AGE, such as 7d or 12h (a "
                               "bare number is seconds)"},
    {"namespace", "ID", 'n', "only this namespace (needs --to-size or --older-than)"},
    {"dry-run", NULL, 'd', "remove nothing; list what would go"},
    {"wait", "AGE", 'w', "how long to wait for the collector lease (default: twice "
                         "lease_ttl_s)"},
    {"verbose", NULL, 'v', "list every file removed"},
    {"json", NULL, 'j', "print one JSON object: the report and, with --dry-run or --verbose, "
                        "the files"},
    {0},
};

static const cli_opt rm_opts[] = {
    {"namespace", "ID", 'n', "the namespace to remove, its id as kvstash ls shows it "
                             "(required)"},
    {"dry-run", NULL, 'd', "remove nothing; say what would go (files and bytes per the "
                           "walk of kvstash ls)"},
    {"json", NULL, 'j', "print one JSON object"},
    {0},
};

static const cli_opt help_opts[] = {
    {"man", NULL, 'm', "print the manual page (troff) instead"},
    {0},
};

/* ---- commands ----------------------------------------------------------- */

const cli_cmd cli_commands[] = {
    {"config", "[--json | --markdown]",
     "print the effective configuration and where each value came from",
     "The configuration is read as an engine reads it: defaults, then the YAML file named "
     "by LMCACHE_CONFIG_FILE, then LMCACHE_* and KVSTASH_* variables.",
     config_opts, NULL, cmd_config},
    {"doctor", "[--json]", "check the store paths, their filesystems and the data path",
     "For each store path: whether it exists and is writable, the filesystem, free space, "
     "O_DIRECT, the store's usage and collector lease; then the GPUs, cuFile and the data "
     "path an engine would choose, and why. Exit status 3 when an engine could not open.",
     json_only, NULL, cmd_doctor},
    {"store", "--seed S --tokens N [options] [geometry]",
     "store a test prompt's KV (content known from each chunk's key)",
     "Stores the KV of a made-up prompt whose bytes are a function of each chunk's key and "
     "position, so that retrieve --verify can check every byte. Exit status 3 when chunks "
     "failed.",
     store_opts, cli_geometry_opts, cmd_store},
    {"retrieve", "--seed S --tokens N [--verify] [options] [geometry]",
     "restore a test prompt's KV, optionally checking every byte",
     "Looks the prompt up and loads what the store has of it, as an engine does before "
     "prefill. Exit status 1 when --verify finds a byte that differs.",
     retrieve_opts, cli_geometry_opts, cmd_retrieve},
    {"bench", "[options] [geometry]", "measure store and retrieve throughput",
     "Store and retrieve throughput on host memory beside the memcpy ceiling measured in the "
     "same run with the same threads, lookup latency for a long prompt and key hashing "
     "speed; with --device cuda:N, on GPU memory beside the copy ceilings. Files go to a "
     "namespace of their own and are removed at the end.",
     bench_opts, cli_geometry_opts, cmd_bench},
    {"ls", "[--json]", "list the namespaces on the store",
     "Every namespace on every store path: chunk files, their size, the oldest and newest "
     "last access, and the model and geometry from its NAMESPACE.json. Walks the store: one "
     "metadata call per file.",
     ls_opts, NULL, cmd_ls},
    {"du", "[--measure] [--json]", "how full the store is, per path, against its limits",
     "The store's usage against max_store_size, its watermarks and min_free_space, per "
     "store path. By default the collector's last measurement (no walk, fast at any size); "
     "a store never measured is walked.",
     du_opts, NULL, cmd_du},
    {"verify", "[--namespace ID | --all] [--remove-bad] [options]",
     "check every chunk file's header and checksums",
     "Reads every chunk file in parallel and checks it as a reader would: header, "
     "namespace, key, length, every checksum. A progress bar shows on a terminal. Exit "
     "status 1 when a file is bad or unreadable.",
     verify_opts, NULL, cmd_verify},
    {"gc", "[--to-size SIZE] [--older-than AGE] [options]",
     "evict the least recently used chunks",
     "Evicts the least recently accessed chunks until the store (or the namespace) holds at "
     "most SIZE, and/or every chunk not accessed for AGE; without either, runs one "
     "collection as the instances do (max_store_size, watermarks, min_free_space). Orphaned "
     "temporary files older than tmp_grace_s go too. It holds the collector lease, so it "
     "never runs beside an instance's collector. Exit status 3 when the lease stays taken.",
     gc_opts, NULL, cmd_gc},
    {"rm", "--namespace ID [--dry-run]", "remove a namespace from every store path",
     "Removes a namespace from every store path. Instances using it miss from then on and "
     "store it again. Exit status 3 when no store path has it.",
     rm_opts, NULL, cmd_rm},
    {"version", "[--json]", "print the version, the git commit and the optional parts built in",
     "The version and git commit of the library (\"unknown\" when built outside a git "
     "checkout), and whether CUDA (GPU memory) and cuFile (GPUDirect Storage) are built in. "
     "Also kvstash --version.",
     json_only, NULL, cmd_version},
    {"help", "[COMMAND] [--man]", "print the help of kvstash or of a command",
     "Without a command, the list of commands; --man prints the manual page in troff "
     "(man -l <(kvstash help --man)).",
     help_opts, NULL, cmd_help},
    {0},
};

const char cli_exit_text[] =
    "0 ok; 1 verification failed (verify, retrieve --verify); 2 usage or configuration "
    "error; 3 I/O or environment error.";

const cli_cmd *cli_find_command(const char *name)
{
    for (const cli_cmd *c = cli_commands; c->name; c++)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}

/* ---- help ---------------------------------------------------------------- */

/* Prints text wrapped at width, each line after the first indented. */
static void wrap(FILE *f, const char *text, int col, int indent, int width)
{
    const char *p = text;
    while (*p) {
        size_t w = strcspn(p, " ");
        if (col > indent && col + 1 + (int)w > width) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, w, f);
        col += (int)w;
        p += w;
        while (*p == ' ')
            p++;
    }
    fputc('\n', f);
}

static void opt_lines(FILE *f, const cli_opt *o)
{
    for (; o && o->name; o++) {
        char head[64];
        snprintf(head, sizeof head, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "%-24s", head);
        int col = (int)strlen(head) < 24 ? 24 : (int)strlen(head);
        if (col > 24) {
            fprintf(f, "\n%24s", "");
            col = 24;
        }
        wrap(f, o->help, col, 24, 79);
    }
}

void cli_print_usage(FILE *f)
{
    fprintf(f, "usage: kvstash [--strict] COMMAND [options]\n"
               "       kvstash COMMAND --help\n"
               "       kvstash --version\n\n"
               "--strict: unknown configuration keys and LMCACHE_*/KVSTASH_* variables are\n"
               "errors (exit 2), not warnings.\n\n"
               "commands:\n");
    for (const cli_cmd *c = cli_commands; c->name; c++) {
        fprintf(f, "  %-10s", c->name);
        wrap(f, c->summary, 12, 12, 79);
    }
    fputc('\n', f);
    wrap(f, "Configuration comes from LMCACHE_CONFIG_FILE (YAML) and LMCACHE_* and KVSTASH_* "
            "variables; see docs/config.md or kvstash config --markdown. Sizes (10GB, 1.5TiB) "
            "and ages (90s, 7d) are written the same way in the configuration and on the "
            "command line.", 0, 0, 79);
    fputs("Exit status:", f);
    wrap(f, cli_exit_text, 12, 0, 79);
}

void cli_print_command_help(FILE *f, const cli_cmd *c)
{
    fprintf(f, "usage: kvstash %s %s\n\n", c->name, c->synopsis);
    wrap(f, c->description, 0, 0, 79);
    fputs("\noptions:\n", f);
    opt_lines(f, c->opts);
    opt_lines(f, (const cli_opt[]){{"help", NULL, 'h', "print this help"}, {0}});
    if (c->opts2) {
        fputs("\ngeometry (the namespace's model and KV shape):\n", f);
        opt_lines(f, c->opts2);
    }
    fputs("\nExit status:", f);
    wrap(f, cli_exit_text, 12, 0, 79);
}

/* ---- the manual page ------------------------------------------------------- */

/* Text for troff: backslashes doubled, '-' as \-, a leading . or ' escaped. */
static void roff(FILE *f, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", f);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
    }
}

static void man_opts(FILE *f, const cli_opt *o)
{
    for (; o && o->name; o++) {
        fputs(".TP\n\\fB", f);
        roff(f, "--");
        roff(f, o->name);
        fputs("\\fR", f);
        if (o->arg) {
            fputs(" \\fI", f);
            roff(f, o->arg);
            fputs("\\fR", f);
        }
        fputc('\n', f);
        roff(f, o->help);
        fputc('\n', f);
    }
}

void cli_print_man(FILE *f)
{
    fprintf(f, ".\\\" Generated by `kvstash help --man` from tools/cli_table.c; do not edit.\n"
               ".TH KVSTASH 1 \"\" \"kvstash %s\" \"User Commands\"\n"
               ".SH NAME\nkvstash \\- KV cache of LLM inference engines on a shared "
               "filesystem: configuration, diagnosis, store administration\n"
               ".SH SYNOPSIS\n.B kvstash\n[\\fB\\-\\-strict\\fR]\n.I COMMAND\n"
               "[\\fIoptions\\fR]\n.br\n"
               ".B kvstash\n.I COMMAND\n.B \\-\\-help\n.br\n.B kvstash \\-\\-version\n"
               ".SH DESCRIPTION\n",
            kvs_version_string());
    roff(f, "kvstash is the command line tool of libkvstash, which offloads the KV cache of "
            "LLM inference engines (vLLM) to a shared filesystem. It reads the same "
            "configuration as the engines and uses only the library's public API. With "
            "--strict before the command, unknown configuration keys and LMCACHE_*/KVSTASH_* "
            "variables are errors (exit status 2) rather than warnings.");
    fputs("\n.SH COMMANDS\n", f);
    for (const cli_cmd *c = cli_commands; c->name; c++) {
        fputs(".SS \"", f);
        roff(f, c->name);
        fputs("\"\n.B kvstash ", f);
        roff(f, c->name);
        fputc(' ', f);
        roff(f, c->synopsis);
        fputs("\n.PP\n", f);
        fputc(toupper((unsigned char)c->summary[0]), f);
        roff(f, c->summary + 1);
        fputs(".\n", f);
        roff(f, c->description);
        fputc('\n', f);
        man_opts(f, c->opts);
        if (c->opts2) {
            fputs(".PP\nGeometry (the namespace's model and KV shape):\n", f);
            man_opts(f, c->opts2);
        }
    }
    fputs(".SH CONFIGURATION\n", f);
    roff(f, "The YAML file named by LMCACHE_CONFIG_FILE, then LMCACHE_* and KVSTASH_* "
            "environment variables; kvstash config --markdown prints the reference of every "
            "key.");
    fputs("\n.SH SIZES AND AGES\n", f);
    roff(f, "Sizes and ages are written the same way on the command line and in the "
            "configuration: a decimal number, then optionally a unit in any case. Sizes: B; "
            "kB, MB, GB, TB, PB and K, M, G, T, P (powers of 1000); KiB, MiB, GiB, TiB, PiB "
            "(powers of 1024). Ages: ms, s, m (min), h, d, w. On the command line a bare size "
            "is GB and a bare age seconds; in the configuration a bare number is in the "
            "key's unit.");
    fputs("\n.SH EXIT STATUS\n", f);
    roff(f, cli_exit_text);
    fputs("\n.SH SEE ALSO\n", f);
    roff(f, "docs/config.md, docs/operations.md and include/kvstash.h of the kvstash sources.");
    fputc('\n', f);
}

/* ---- the option parser ------------------------------------------------------- */

void cli_args_init(cli_args *a, const cli_cmd *c, int argc, char **argv)
{
    memset(a, 0, sizeof *a);
    a->cmd = c;
    a->argc = argc;
    a->argv = argv;
    size_t n = 0;
    const cli_opt *lists[2] = {c->opts, c->opts2};
    for (int l = 0; l < 2; l++)
        for (const cli_opt *o = lists[l]; o && o->name && n + 2 < CLI_MAX_OPTS; o++) {
            a->map[n] = o;
            a->longopts[n] = (struct option){o->name, o->arg ? required_argument : no_argument,
                                             NULL, (int)(256 + n)};
            n++;
        }
    a->longopts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    a->longopts[n] = (struct option){0, 0, 0, 0};
    optind = 1;
    opterr = 0;
}

int cli_getopt(cli_args *a, const char **arg, const cli_opt **which)
{
    int c = getopt_long(a->argc, a->argv, ":h", a->longopts, NULL);
    if (c == -1) {
        if (optind < a->argc) {
            a->exit = cli_usage_error("%s: unexpected argument \"%s\"", a->cmd->name,
                                      a->argv[optind]);
            return -1;
        }
        return 0;
    }
    if (c == 'h') {
        cli_print_command_help(stdout, a->cmd);
        a->exit = EXIT_OK;
        return -1;
    }
    if (c == ':' || c == '?') {
        const char *bad = a->argv[optind - 1 < a->argc ? optind - 1 : a->argc - 1];
        a->exit = cli_usage_error(c == ':' ? "%s: option %s needs a value"
                                           : "%s: unknown option \"%s\"",
                                  a->cmd->name, bad);
        return -1;
    }
    const cli_opt *o = a->map[c - 256];
    if (arg)
        *arg = optarg;
    if (which)
        *which = o;
    return o->val;
}
