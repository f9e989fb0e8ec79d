/*
 * kvstash.c - the kvstash command line tool: configuration, diagnosis,
 * test stores and retrieves, benchmarks, administration of the store.  It
 * is a client of the public API and nothing else, so everything it does a
 * program linking libkvstash can do too.  The commands and their options
 * are the table of cli_table.c.
 *
 * Exit statuses: 0 ok, 1 verification failed, 2 usage or configuration
 * error, 3 I/O or environment error.
 */
#include "cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_config(int argc, char **argv)
{
    enum { TEXT, JSON, MARKDOWN } form = TEXT;
    cli_args a;
    cli_args_init(&a, cli_find_command("config"), argc, argv);
    int c;
    while ((c = cli_getopt(&a, NULL, NULL)) > 0)
        form = c == 'j' ? JSON : MARKDOWN;
    if (c < 0)
        return a.exit;
    char *text = NULL;
    kvs_status st;
    if (form == MARKDOWN) {
        st = kvs_config_reference_markdown(&text);
    } else {
        kvs_config *cfg = NULL;
        int rc = cli_load_config(&cfg);
        if (rc)
            return rc;
        st = form == JSON ? kvs_config_to_json(cfg, &text) : kvs_config_to_text(cfg, &text);
        kvs_config_free(cfg);
    }
    if (st)
        return cli_fail(st, "config");
    fputs(text, stdout);
    if (text[0] && text[strlen(text) - 1] != '\n')
        fputc('\n', stdout);
    kvs_free(text);
    return EXIT_OK;
}

/* ---- doctor --json: the report's "name: value" lines as JSON ---------------- */

typedef struct doc_line {
    int obj;     /* 0: top level; n: the nth store path */
    char key[64];
    const char *value;
} doc_line;

static void doc_key(const char *name, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w + 1 < cap; i++) {
        unsigned char ch = (unsigned char)name[i];
        out[w++] = isalnum(ch) ? (char)tolower(ch) : '_';
    }
    out[w] = '\0';
}

static void doc_object(const doc_line *l, size_t n, int obj, const char *indent)
{
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (l[i].obj != obj)
            continue;
        bool seen = false, repeated = false;
        for (size_t j = 0; j < n; j++)
            if (l[j].obj == obj && !strcmp(l[j].key, l[i].key)) {
                if (j < i)
                    seen = true;
                else if (j > i)
                    repeated = true;
            }
        if (seen)
            continue; /* printed with the first one */
        printf("%s\n%s", first ? "" : ",", indent);
        first = false;
        cli_json_str(stdout, l[i].key);
        printf(": ");
        if (!repeated) {
            cli_json_str(stdout, l[i].value);
            continue;
        }
        printf("[");
        bool f2 = true;
        for (size_t j = i; j < n; j++)
            if (l[j].obj == obj && !strcmp(l[j].key, l[i].key)) {
                printf("%s", f2 ? "" : ", ");
                cli_json_str(stdout, l[j].value);
                f2 = false;
            }
        printf("]");
    }
}

/* The report is "name: value" lines, each store path's indented under its
 * "store path N: PATH" line; warnings and problems may repeat (arrays). */
static int doctor_json(char *report, int healthy)
{
    size_t cap = 16, n = 0;
    doc_line *l = malloc(cap * sizeof *l);
    int paths = 0;
    for (char *save = NULL, *line = strtok_r(report, "\n", &save); l && line;
         line = strtok_r(NULL, "\n", &save)) {
        bool sub = line[0] == ' ';
        while (*line == ' ')
            line++;
        char *colon = strstr(line, ": ");
        if (!colon)
            colon = line + strlen(line);
        if (n == cap) {
            doc_line *nl = realloc(l, (cap *= 2) * sizeof *l);
            if (!nl) {
                free(l);
                l = NULL;
                break;
            }
            l = nl;
        }
        doc_line *d = &l[n];
        if (!sub && !strncmp(line, "store path ", 11) && isdigit((unsigned char)line[11])) {
            paths++;
            d->obj = paths;
            snprintf(d->key, sizeof d->key, "path");
        } else {
            d->obj = sub ? paths : 0;
            doc_key(line, (size_t)(colon - line), d->key, sizeof d->key);
            if (!strcmp(d->key, "healthy"))
                continue; /* from the call's result, as a boolean */
            if (!d->obj && !strcmp(d->key, "store_paths")) /* "store paths: N" */
                snprintf(d->key, sizeof d->key, "store_path_count");
        }
        d->value = *colon ? colon + 2 : "";
        n++;
    }
    if (!l) {
        fprintf(stderr, "kvstash: doctor: out of memory\n");
        return EXIT_IO;
    }
    printf("{\"healthy\": %s,", healthy ? "true" : "false");
    doc_object(l, n, 0, "  ");
    printf(",\n  \"store_paths\": [");
    for (int p = 1; p <= paths; p++) {
        printf("%s{", p > 1 ? ", " : "");
        doc_object(l, n, p, "    ");
        printf("}");
    }
    printf("]\n}\n");
    free(l);
    return EXIT_OK;
}

int cmd_doctor(int argc, char **argv)
{
    bool json = false;
    cli_args a;
    cli_args_init(&a, cli_find_command("doctor"), argc, argv);
    int c;
    while ((c = cli_getopt(&a, NULL, NULL)) > 0)
        json = true;
    if (c < 0)
        return a.exit;
    kvs_config *cfg = NULL;
    int rc = cli_load_config(&cfg);
    if (rc)
        return rc;
    char *report = NULL;
    int healthy = 0;
    kvs_status st = kvs_doctor(cfg, &report, &healthy);
    kvs_config_free(cfg);
    if (st)
        return cli_fail(st, "doctor");
    if (json)
        rc = doctor_json(report, healthy);
    else
        fputs(report, stdout);
    kvs_free(report);
    if (rc)
        return rc;
    return healthy ? EXIT_OK : EXIT_IO;
}

/* ---- version and help ------------------------------------------------------ */

int cmd_version(int argc, char **argv)
{
    bool json = false;
    cli_args a;
    cli_args_init(&a, cli_find_command("version"), argc, argv);
    int c;
    while ((c = cli_getopt(&a, NULL, NULL)) > 0)
        json = true;
    if (c < 0)
        return a.exit;
    unsigned f = kvs_build_features();
    bool cuda = f & KVS_BUILD_CUDA, cufile = f & KVS_BUILD_CUFILE;
    if (json) {
        printf("{\"version\": ");
        cli_json_str(stdout, kvs_version_string());
        printf(", \"commit\": ");
        cli_json_str(stdout, kvs_build_commit());
        printf(", \"cuda\": %s, \"cufile\": %s}\n", cuda ? "true" : "false",
               cufile ? "true" : "false");
        return EXIT_OK;
    }
    printf("kvstash %s\n"
           "commit: %s\n"
           "cuda: %s\n"
           "cufile: %s\n",
           kvs_version_string(), kvs_build_commit(),
           cuda ? "built in (KV in GPU memory; --device cuda:N)" : "not built in",
           cufile ? "built in (libcufile is loaded at run time where installed)"
                  : "not built in");
    return EXIT_OK;
}

int cmd_help(int argc, char **argv)
{
    bool man = false;
    const char *topic = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--man"))
            man = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            topic = "help";
        else if (argv[i][0] != '-' && !topic)
            topic = argv[i];
        else if (argv[i][0] == '-')
            return cli_usage_error("help: unknown option \"%s\"", argv[i]);
        else
            return cli_usage_error("help: unexpected argument \"%s\"", argv[i]);
    }
    if (man) {
        if (topic)
            return cli_usage_error("help --man prints the whole manual; it takes no command");
        cli_print_man(stdout);
        return EXIT_OK;
    }
    if (!topic) {
        cli_print_usage(stdout);
        return EXIT_OK;
    }
    const cli_cmd *c = cli_find_command(topic);
    if (!c)
        return cli_usage_error("help: unknown command \"%s\"", topic);
    cli_print_command_help(stdout, c);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    /* --strict before the command: unknown settings are errors (the key
     * strict, set the way KVSTASH_STRICT would, so every command loads it) */
    if (argc > 1 && !strcmp(argv[1], "--strict")) {
        setenv("KVSTASH_STRICT", "1", 1);
        argc--;
        argv++;
    }
    if (argc < 2) {
        cli_print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--version") || !strcmp(name, "-V"))
        name = "version";
    else if (!strcmp(name, "--help") || !strcmp(name, "-h"))
        name = "help";
    const cli_cmd *c = cli_find_command(name);
    if (!c) {
        fprintf(stderr, "kvstash: unknown command \"%s\"\n\n", name);
        cli_print_usage(stderr);
        return EXIT_USAGE;
    }
    cli_command_name = c->name;
    return c->run(argc - 1, argv + 1);
}
