/*
 * alloc.c - every allocation of the library goes through here, so that a
 * test can make the Nth one fail (SQLite's test_malloc idea) and prove that
 * each failure path ends cleanly, and so that nothing calls abort() on
 * exhaustion: callers see NULL and return KVS_ERR_NOMEM.
 */
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_uint_fast64_t alloc_count;   /* allocations since last reset */
static atomic_uint_fast64_t fail_at;       /* 0: injection off */
static atomic_bool fail_sticky;

uint64_t kvs__alloc_fail_at(uint64_t nth, bool sticky)
{
    uint64_t n = atomic_exchange(&alloc_count, 0);
    atomic_store(&fail_sticky, sticky);
    atomic_store(&fail_at, nth);
    return n;
}

static bool should_fail(void)
{
    uint64_t target = atomic_load_explicit(&fail_at, memory_order_relaxed);
    uint64_t n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    if (KVS_LIKELY(target == 0))
        return false;
    return n == target || (n > target && atomic_load(&fail_sticky));
}

void *kvs__malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *kvs__calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *kvs__realloc(void *p, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(p, size ? size : 1);
}

void *kvs__aligned_alloc(size_t alignment, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = NULL;
    if (alignment < sizeof(void *))
        alignment = sizeof(void *);
    if (posix_memalign(&p, alignment, size ? KVS_ALIGN_UP(size, alignment) : alignment))
        return NULL;
    return p;
}

char *kvs__strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = kvs__malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

char *kvs__strdup(const char *s)
{
    return kvs__strndup(s, (size_t)-1);
}

char *kvs__asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = kvs__malloc((size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void kvs__free(void *p)
{
    free(p);
}

void kvs_free(void *ptr)
{
    free(ptr);
}

uint64_t kvs__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int kvs__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

static void mono_abs(uint64_t deadline_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ns / 1000000000u);
    ts->tv_nsec = (long)(deadline_ns % 1000000000u);
}

void kvs__mono_timespec_in(uint64_t ns, struct timespec *ts)
{
    mono_abs(kvs__now_ns() + KVS_MIN(ns, 3600ull * 1000000000u), ts);
}

int kvs__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ns)
{
    if (kvs__now_ns() >= deadline_ns)
        return ETIMEDOUT;
    struct timespec ts;
    /* Far deadlines (UINT64_MAX: "none") are capped so tv_sec cannot wrap;
     * the callers loop on their condition and wait again. */
    mono_abs(KVS_MIN(deadline_ns, kvs__now_ns() + 3600ull * 1000000000u), &ts);
    /* pthread_cond_clockwait names the clock itself, so even a condition
     * variable initialised without kvs__cond_init waits on the monotonic
     * clock. */
    return pthread_cond_clockwait(cv, mu, CLOCK_MONOTONIC, &ts);
}

uint64_t kvs__wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
