/*
 * internal.h - declarations shared by the modules of libkvstash, never
 * installed.  Each module's own interface is in its header (config.h,
 * chunk_file.h, ...); this one holds what nearly all of them need: errors,
 * logging, allocation and time.
 *
 * Rules every module follows:
 *   - record a failure once, where it is first seen, with kvs__fail(); it
 *     sets the thread's last error message and returns the status, so the
 *     idiom is `return kvs__fail(KVS_ERR_IO, "open %s: %s", path, ...)`;
 *   - allocate through kvs__malloc() and friends, so tests can fail the Nth
 *     allocation;
 *   - never abort: assert() only guards internal invariants.
 */
#ifndef KVS_INTERNAL_H
#define KVS_INTERNAL_H

#include "kvstash.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#if defined(__GNUC__)
#define KVS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KVS_UNUSED __attribute__((unused))
#define KVS_LIKELY(x) __builtin_expect(!!(x), 1)
#define KVS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define KVS_PRINTF(a, b)
#define KVS_UNUSED
#define KVS_LIKELY(x) (x)
#define KVS_UNLIKELY(x) (x)
#endif

#define KVS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define KVS_MIN(a, b) ((a) < (b) ? (a) : (b))
/* The structure that embeds *ptr as its member (intrusive tasks, io_pool.h). */
#define KVS_CONTAINER(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define KVS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define KVS_ALIGN_UP(x, a) (((x) + ((a) - 1)) / (a) * (a))

/* ---- status.c ---------------------------------------------------------- */

/* Sets this thread's last error message and returns st. */
kvs_status kvs__fail(kvs_status st, const char *fmt, ...) KVS_PRINTF(2, 3);
kvs_status kvs__vfail(kvs_status st, const char *fmt, va_list ap) KVS_PRINTF(2, 0);
/* Clears the last error (calls that succeed need not). */
void kvs__clear_error(void);
/* Maps an errno to the closest status (ENOSPC -> NOSPACE, EACCES -> PERM...). */
kvs_status kvs__errno_status(int err);

/* ---- log.c -------------------------------------------------------------- */

void kvs__log(kvs_log_level level, const char *fmt, ...) KVS_PRINTF(2, 3);
/* Logs only the first time `once` (a static flag of the caller) is seen
 * unset; later calls are counted by the caller's stats, not logged. */
void kvs__log_once(int *once, kvs_log_level level, const char *fmt, ...)
    KVS_PRINTF(3, 4);
bool kvs__log_enabled(kvs_log_level level);

/* A rate limit for lines that can repeat per request: at most one line per
 * interval, the next one saying how many were held back meanwhile.  Zero-
 * initialized static storage is a valid limiter. */
typedef struct kvs_log_limit {
    _Atomic uint64_t next_ns;     /* monotonic; no line before it */
    _Atomic uint64_t suppressed;  /* lines held back since the last one */
} kvs_log_limit;
#define KVS_LOG_INTERVAL_NS (10ull * 1000000000ull)
/* Logs when `lim` lets a line through, appending "(N similar lines held
 * back in the last 10 s)" when some were; returns whether it logged. */
bool kvs__log_limited(kvs_log_limit *lim, kvs_log_level level, const char *fmt, ...)
    KVS_PRINTF(3, 4);

/* ---- alloc.c ------------------------------------------------------------ */

void *kvs__malloc(size_t size);
void *kvs__calloc(size_t n, size_t size);
void *kvs__realloc(void *p, size_t size);
/* Alignment must be a power of two; size need not be a multiple of it. */
void *kvs__aligned_alloc(size_t alignment, size_t size);
char *kvs__strdup(const char *s);
char *kvs__strndup(const char *s, size_t n);
char *kvs__asprintf(const char *fmt, ...) KVS_PRINTF(1, 2);
void kvs__free(void *p);

/* Test hook: the Nth allocation from now fails (1 = the next one), and every
 * allocation after it too when `sticky`; 0 turns injection off.  Returns the
 * number of allocations made since the last call. */
uint64_t kvs__alloc_fail_at(uint64_t nth, bool sticky);

/* ---- time --------------------------------------------------------------- */

uint64_t kvs__now_ns(void);      /* CLOCK_MONOTONIC */
uint64_t kvs__wall_ns(void);     /* CLOCK_REALTIME */

/* Every deadline of the library is a kvs__now_ns() value and every timed
 * wait goes through these two, so a wall clock stepped (NTP, an operator)
 * neither stretches nor cuts a wait: a deadline of 300 ms stays 300 ms when
 * the wall clock goes back 20 s.  kvs__cond_init makes the condition
 * variable's timed waits use CLOCK_MONOTONIC; kvs__cond_wait_until waits
 * until it is signalled or the monotonic deadline passed (0 or ETIMEDOUT;
 * spurious wake-ups return 0 as pthread_cond_wait's do). */
int kvs__cond_init(pthread_cond_t *cv);
int kvs__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ns);
/* The same deadline for pthread_clockjoin_np and friends: an absolute
 * CLOCK_MONOTONIC time ns from now (capped at an hour). */
void kvs__mono_timespec_in(uint64_t ns, struct timespec *ts);

/* ---- a growable string, for reports and JSON ---------------------------- */

typedef struct kvs_buf {
    char *data; /* NUL-terminated while len > 0 */
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; further appends are dropped */
} kvs_buf;

void kvs_buf_printf(kvs_buf *b, const char *fmt, ...) KVS_PRINTF(2, 3);
void kvs_buf_append(kvs_buf *b, const char *s, size_t n);
/* Appends s as a JSON string literal, quotes included. */
void kvs_buf_json_string(kvs_buf *b, const char *s);
/* Hands the text to the caller (kvs_free) or fails with KVS_ERR_NOMEM. */
kvs_status kvs_buf_finish(kvs_buf *b, char **out);
void kvs_buf_reset(kvs_buf *b);

#endif /* KVS_INTERNAL_H */
