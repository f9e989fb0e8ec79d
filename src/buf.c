/*
 * buf.c - a growable text buffer for reports, JSON and metrics.  An
 * allocation failure is remembered and reported once by kvs_buf_finish(),
 * so builders need not check every append.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static bool reserve(kvs_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = kvs__realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void kvs_buf_append(kvs_buf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void kvs_buf_printf(kvs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kvs_buf_json_string(kvs_buf *b, const char *s)
{
    kvs_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': kvs_buf_append(b, "\\\"", 2); break;
        case '\\': kvs_buf_append(b, "\\\\", 2); break;
        case '\n': kvs_buf_append(b, "\\n", 2); break;
        case '\r': kvs_buf_append(b, "\\r", 2); break;
        case '\t': kvs_buf_append(b, "\\t", 2); break;
        default:
            if (*p < 0x20)
                kvs_buf_printf(b, "\\u%04x", *p);
            else
                kvs_buf_append(b, (const char *)p, 1);
        }
    }
    kvs_buf_append(b, "\"", 1);
}

void kvs_buf_reset(kvs_buf *b)
{
    kvs__free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

kvs_status kvs_buf_finish(kvs_buf *b, char **out)
{
    if (b->failed || !reserve(b, 0)) {
        kvs_buf_reset(b);
        return kvs__fail(KVS_ERR_NOMEM, "out of memory while building text");
    }
    if (b->len == 0)
        b->data[0] = '\0';
    *out = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return KVS_OK;
}
