/*
 * fault_io.h - fault injection through the library's I/O table.
 *
 * fault_install() puts a table in front of the real one (kvs__io_set) that
 * counts the calls of a chosen class and, once armed, makes the Nth of them
 * fail with an errno, come back short, or stall before going through.  The
 * tests loop N = 1, 2, ... until an operation runs with the fault never
 * reached (SQLite's malloc loop, on system calls).
 */
#ifndef KVS_FAULT_IO_H
#define KVS_FAULT_IO_H

#include <stdbool.h>
#include <stdint.h>

typedef enum fault_kind {
    FAULT_ERRNO = 0, /* the call fails with `err` and does nothing */
    FAULT_SHORT,     /* a read or write moves half the bytes (at least 1) */
    FAULT_STALL,     /* the call sleeps stall_ms, then goes through */
} fault_kind;

/* Classes of calls a plan counts (fault_plan.calls). */
#define FC_DATA 0x1u  /* pread, pwrite, preadv, pwritev */
#define FC_META 0x2u  /* every other call of the table */
#define FC_ALL (FC_DATA | FC_META)

typedef struct fault_plan {
    fault_kind kind;
    int err;            /* FAULT_ERRNO */
    unsigned calls;     /* FC_*: which calls count */
    uint64_t nth;       /* 1-based; the fault fires on that call only */
    uint32_t stall_ms;  /* FAULT_STALL */
} fault_plan;

void fault_install(void);
void fault_uninstall(void);
/* Starts counting from zero with plan p. */
void fault_arm(const fault_plan *p);
/* Stops injecting (counting goes on). */
void fault_disarm(void);
/* Calls of the plan's class counted since fault_arm. */
uint64_t fault_calls(void);
/* Whether the armed fault fired, and on which call (table entry name). */
bool fault_fired(const char **what_out);
/* A name for the plan, for messages ("EIO", "short", "stall"). */
const char *fault_name(const fault_plan *p);

#endif
