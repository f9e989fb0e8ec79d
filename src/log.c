/*
 * log.c - the library's log lines.
 *
 * Lines go to a process-wide handler (the one set with kvs_set_log_handler)
 * or, by default, to standard error as "kvstash <level> <UTC time>: <line>".  The
 * handler and level are read with relaxed atomics: setting them races with
 * logging only in which of two valid handlers gets a line.  kvs__log_once()
 * is for failures that can repeat per chunk: the first is logged with its
 * cause, the rest are counted in the engine's stats.  kvs__log_limited() is
 * for lines an operator needs to see more than once (dropped stores): one
 * per interval, carrying the count of those held back, so a storm of them
 * costs one line per 10 s rather than one per chunk.
 *
 * A handler may run in a foreign runtime (the Python package routes lines
 * into Python's logging through one): lines are formatted into a stack
 * buffer first and the handler is called with no kvstash lock held by this
 * file.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic(kvs_log_fn) log_fn;
static _Atomic(void *) log_ctx;
static atomic_int log_level = KVS_LOG_INFO;

void kvs_set_log_handler(kvs_log_fn fn, void *ctx)
{
    atomic_store(&log_ctx, ctx);
    atomic_store(&log_fn, fn);
}

void kvs_set_log_level(kvs_log_level max_level)
{
    atomic_store(&log_level, (int)max_level);
}

bool kvs__log_enabled(kvs_log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *level_name(kvs_log_level level)
{
    switch (level) {
    case KVS_LOG_ERROR: return "error";
    case KVS_LOG_WARN: return "warning";
    case KVS_LOG_INFO: return "info";
    case KVS_LOG_DEBUG: return "debug";
    }
    return "?";
}

/* Checks the level itself, so that each variadic entry below is only its
 * own rule around va_start and va_end. */
static void vlog(kvs_log_level level, const char *fmt, va_list ap) KVS_PRINTF(2, 0);
static void vlog(kvs_log_level level, const char *fmt, va_list ap)
{
    if (!kvs__log_enabled(level))
        return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    kvs_log_fn fn = atomic_load(&log_fn);
    if (fn) {
        fn(atomic_load(&log_ctx), level, msg);
        return;
    }
    /* "kvstash <level> <UTC time>: ", so lines read alone in a log file say
     * when, and filters on "^kvstash <level>" keep working */
    struct timespec ts;
    struct tm tm;
    char when[96] = "";
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm))
        snprintf(when, sizeof when, " %04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (long)(ts.tv_nsec / 1000000) % 1000);
    fprintf(stderr, "kvstash %s%s: %s\n", level_name(level), when, msg);
}

void kvs__log(kvs_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void kvs__log_once(int *once, kvs_log_level level, const char *fmt, ...)
{
    if (__atomic_exchange_n(once, 1, __ATOMIC_RELAXED))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

bool kvs__log_limited(kvs_log_limit *lim, kvs_log_level level, const char *fmt, ...)
{
    if (!kvs__log_enabled(level))
        return false;
    uint64_t now = kvs__now_ns();
    uint64_t next = atomic_load_explicit(&lim->next_ns, memory_order_relaxed);
    if (now < next || !atomic_compare_exchange_strong(&lim->next_ns, &next,
                                                      now + KVS_LOG_INTERVAL_NS)) {
        atomic_fetch_add_explicit(&lim->suppressed, 1, memory_order_relaxed);
        return false;
    }
    uint64_t held = atomic_exchange(&lim->suppressed, 0);
    char msg[1800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (held)
        kvs__log(level, "%s (%llu similar lines held back in the last %llu s)", msg,
                 (unsigned long long)held,
                 (unsigned long long)(KVS_LOG_INTERVAL_NS / 1000000000ull));
    else
        kvs__log(level, "%s", msg);
    return true;
}
