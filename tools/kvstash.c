/*
 * kvstash.c - the kvstash command line tool: configuration, diagnosis,
 * test stores and retrieves, benchmarks.  It is a client of the public API
 * and nothing else, so everything it does a program linking libkvstash can
 * do too.
 *
 * Exit statuses: 0 ok, 1 verification failed, 2 usage or configuration
 * error, 3 I/O or environment error.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvstash [--strict] COMMAND [options]\n\n"
            "--strict: unknown configuration keys and LMCACHE_*/KVSTASH_* variables are\n"
            "errors, not warnings.\n\n"
            "commands:\n"
            "  config [--json|--markdown]   print the effective configuration and sources\n"
            "  doctor                       check the store path, filesystem and data path\n"
            "  store    --seed S --tokens N [--shared-prefix S2:N2] [geometry]\n"
            "  retrieve --seed S --tokens N [--shared-prefix S2:N2] [geometry] [--verify]\n"
            "  bench    [geometry] [--chunks N] [--threads T]\n"
            "  ls [--json]                  namespaces on the store: chunks, size, last access\n"
            "  du [--measure] [--json]      how full the store is, per path, against the limits\n"
            "  verify [--namespace ID|--all] [--remove-bad]  check every chunk file's checksums\n"
            "  gc [--to-size SIZE] [--older-than AGE] [--dry-run]  evict least recently used\n"
            "  rm --namespace ID            remove a namespace from every store path\n"
            "  version\n\n"
            "Configuration comes from LMCACHE_CONFIG_FILE (YAML) and LMCACHE_* variables;\n"
            "see docs/config.md or `kvstash config --markdown`.\n"
            "Exit status: 0 ok, 1 verification failed, 2 usage or configuration error,\n"
            "3 I/O or environment error.\n");
}

static int cmd_config(int argc, char **argv)
{
    enum { TEXT, JSON, MARKDOWN } form = TEXT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            form = JSON;
        else if (!strcmp(argv[i], "--markdown"))
            form = MARKDOWN;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvstash config [--json|--markdown]\n");
            return EXIT_OK;
        } else
            return cli_usage_error("config: unknown option \"%s\"", argv[i]);
    }
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

static int cmd_doctor(int argc, char **argv)
{
    if (argc > 1)
        return cli_usage_error("doctor takes no arguments");
    (void)argv;
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
    fputs(report, stdout);
    kvs_free(report);
    return healthy ? EXIT_OK : EXIT_IO;
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
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    if (!strcmp(cmd, "config"))
        return cmd_config(argc, argv);
    if (!strcmp(cmd, "doctor"))
        return cmd_doctor(argc, argv);
    if (!strcmp(cmd, "store"))
        return cmd_store(argc, argv);
    if (!strcmp(cmd, "retrieve"))
        return cmd_retrieve(argc, argv);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc, argv);
    if (!strcmp(cmd, "ls"))
        return cmd_ls(argc, argv);
    if (!strcmp(cmd, "du"))
        return cmd_du(argc, argv);
    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc, argv);
    if (!strcmp(cmd, "gc"))
        return cmd_gc(argc, argv);
    if (!strcmp(cmd, "rm"))
        return cmd_rm(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("kvstash %s\n", kvs_version_string());
        return EXIT_OK;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    fprintf(stderr, "kvstash: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
