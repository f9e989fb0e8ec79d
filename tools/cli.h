/*
 * cli.h - shared pieces of the kvstash command line tool.  The tool uses
 * only the public API (include/kvstash.h).
 */
#ifndef KVS_CLI_H
#define KVS_CLI_H

#include "kvstash.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses (the CLI's contract). */
enum {
    EXIT_OK = 0,
    EXIT_VERIFY = 1,  /* verification failed */
    EXIT_USAGE = 2,   /* usage or configuration error */
    EXIT_IO = 3,      /* I/O or environment error */
};

/* Maps a library status to an exit status. */
int cli_exit_for(kvs_status st);
/* Prints "kvstash: <what>: <library message>" to stderr; returns the exit. */
int cli_fail(kvs_status st, const char *what);
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The layout of the GPU cache (--layout): vLLM's per-plane
 * [2, blocks, 16, heads, dim] (before 0.26), or its packed
 * (blocks, heads, 16, 2 * dim) in NHD or HND memory order (0.26 on). */
typedef enum cli_layout {
    CLI_LAYOUT_PLANES = 0,
    CLI_LAYOUT_PACKED_NHD = 1,
    CLI_LAYOUT_PACKED_HND = 2,
} cli_layout;

/* Geometry options shared by store, retrieve and bench. */
typedef struct cli_geometry {
    char model[256];
    kvs_namespace ns;
    int device;           /* -1: host memory; else CUDA ordinal (--device cuda:N) */
    cli_layout layout;    /* --layout, for --device cuda:N */
} cli_geometry;

/* "planes", "packed-nhd", "packed-hnd" */
const char *cli_layout_name(cli_layout layout);

void cli_geometry_defaults(cli_geometry *g);
/* Handles one geometry option (long name without dashes, its argument);
 * returns 1 if it was one, 0 if not, -1 on a bad value (message printed). */
int cli_geometry_option(cli_geometry *g, const char *name, const char *arg);
/* Checks the options together once all are parsed; prints the reason and
 * returns EXIT_USAGE, or EXIT_OK. */
int cli_geometry_check(const cli_geometry *g, const char *cmd);

/* Loads the configuration (LMCACHE_CONFIG_FILE and the environment). */
int cli_load_config(kvs_config **cfg_out);

/* Token ids of a prompt: n ids from seed, the first prefix_n from
 * prefix_seed (the shared prefix). */
void cli_make_tokens(uint32_t *tokens, size_t n, uint64_t seed, uint64_t prefix_seed,
                     size_t prefix_n);

/* The reference KV content: 8-byte words that are a function of the chunk's
 * key and the byte position in the chunk's payload. */
void cli_fill_payload(void *dst, uint64_t key64, uint64_t pos, uint64_t len);
/* --content kv: the reference content is bf16-like (few exponents) rather
 * than random bytes, so it compresses (codec: on); store and retrieve must
 * agree. */
extern bool cli_content_kv;
/* Returns the first position in [pos, pos+len) that differs, or UINT64_MAX. */
uint64_t cli_check_payload(const void *src, uint64_t key64, uint64_t pos, uint64_t len);

/* A contiguous host KV buffer [layer][plane][token][row] for n tokens. */
typedef struct cli_kvbuf {
    void *mem;
    size_t bytes;
    size_t tokens;
    uint32_t layers, planes;
    uint64_t row;
    void **layer_ptrs;
    kvs_kv kv;
} cli_kvbuf;

int cli_kvbuf_alloc(cli_kvbuf *b, const kvs_namespace *ns, size_t tokens);
void cli_kvbuf_free(cli_kvbuf *b);
/* Address of the row of (layer, plane, token). */
static inline char *cli_kvbuf_row(const cli_kvbuf *b, uint32_t layer, uint32_t plane, size_t token)
{
    return (char *)b->mem + (((size_t)layer * b->planes + plane) * b->tokens + token) * b->row;
}

/* First 8 bytes of the chunk key of each chunk (full chunks by the chained
 * keys; a partial tail by the key of its tokens alone, xor the last key). */
int cli_chunk_seeds(const uint32_t *tokens, size_t n, uint32_t chunk_size, uint64_t **seeds_out,
                    size_t *nchunks_out);

double cli_now(void);
int cli_parse_u64(const char *s, uint64_t *out);

/* ---- the table of commands and options (cli_table.c) ---- */

typedef struct cli_opt {
    const char *name; /* long name, without the dashes; NULL ends a list */
    const char *arg;  /* its value's name in the help (SIZE), NULL for a flag */
    int val;          /* what cli_getopt returns for it */
    const char *help;
} cli_opt;

typedef struct cli_cmd {
    const char *name;
    const char *synopsis;    /* after "kvstash NAME " */
    const char *summary;     /* one line, for the list of commands */
    const char *description; /* a paragraph */
    const cli_opt *opts;
    const cli_opt *opts2;    /* the geometry options, or NULL */
    int (*run)(int argc, char **argv);
} cli_cmd;

extern const cli_cmd cli_commands[];
extern const cli_opt cli_geometry_opts[];
extern const char cli_exit_text[];
/* The command being run (for messages); NULL before one is chosen. */
extern const char *cli_command_name;

const cli_cmd *cli_find_command(const char *name);
void cli_print_usage(FILE *f);
void cli_print_command_help(FILE *f, const cli_cmd *c);
void cli_print_man(FILE *f);

#define CLI_MAX_OPTS 48

/* getopt_long over exactly the options of a command's table entry, plus
 * --help (which prints the command's help). */
typedef struct cli_args {
    const cli_cmd *cmd;
    int argc;
    char **argv;
    struct option longopts[CLI_MAX_OPTS];
    const cli_opt *map[CLI_MAX_OPTS];
    int exit; /* after -1: the exit status */
} cli_args;

void cli_args_init(cli_args *a, const cli_cmd *c, int argc, char **argv);
/* The next option: its val (*arg its value, *which its entry); 0 at the
 * end; -1 when the command must return a->exit (help printed: 0; a usage
 * error printed: 2). */
int cli_getopt(cli_args *a, const char **arg, const cli_opt **which);
/* cli_getopt for a command that takes the geometry options (store,
 * retrieve, bench): those are applied to *g here, and the command's own come
 * back as cli_getopt returns them (arg and which must not be NULL).  A bad
 * geometry value gives -1 with a->exit EXIT_USAGE.  --help, once printed,
 * ends the process with 0: these commands parse in a function whose 0 means
 * "go on". */
int cli_getopt_geometry(cli_args *a, cli_geometry *g, const char **arg, const cli_opt **which);

/* ---- JSON output ---- */
/* Bytes of the valid UTF-8 sequence at s (1 for ASCII), 0 if it is not one
 * (C1 controls, overlongs and surrogates count as not). */
size_t cli_utf8_len(const unsigned char *s);
/* s as a JSON string: quotes, backslashes and control bytes escaped, bytes
 * that are not UTF-8 replaced by U+FFFD, so the output always parses. */
void cli_json_str(FILE *f, const char *s);

int cmd_config(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_help(int argc, char **argv);
int cmd_store(int argc, char **argv);
int cmd_retrieve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* cli_admin.c: the whole store */
int cmd_ls(int argc, char **argv);
int cmd_du(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_rm(int argc, char **argv);

#endif
