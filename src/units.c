/*
 * units.c - sizes and ages: "10GB", "1.5TiB", "500 MB", "7d", "30m".
 *
 * The arithmetic is exact: the number is read as an integer mantissa and a
 * power of ten, multiplied by the unit in 128-bit integers, so "0.1" GB is
 * 100000000 bytes, not a float's neighbour of it.
 */
#include "units.h"
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char kvs__size_grammar[] =
    "a size: a number with an optional unit B, kB, MB, GB, TB, PB (powers of 1000; K, M, "
    "G, T, P too) or KiB, MiB, GiB, TiB, PiB (powers of 1024), in any case, such as 10GB, "
    "500MB or 1.5TiB";
const char kvs__age_grammar[] =
    "an age: a number with an optional unit ms, s, m (or min), h, d, w, such as 90s, 30m, "
    "12h or 7d";

typedef struct unit_def {
    const char *name;
    uint64_t mult; /* base units (bytes, ms) */
} unit_def;

static const unit_def size_units[] = {
    {"b", 1},
    {"k", 1000ull},          {"kb", 1000ull},
    {"m", 1000000ull},       {"mb", 1000000ull},
    {"g", 1000000000ull},    {"gb", 1000000000ull},
    {"t", 1000000000000ull}, {"tb", 1000000000000ull},
    {"p", 1000000000000000ull}, {"pb", 1000000000000000ull},
    {"kib", 1ull << 10},     {"mib", 1ull << 20}, {"gib", 1ull << 30},
    {"tib", 1ull << 40},     {"pib", 1ull << 50},
    {NULL, 0},
};

static const unit_def age_units[] = {
    {"ms", 1},
    {"s", 1000ull},          {"sec", 1000ull},
    {"m", 60000ull},         {"min", 60000ull},
    {"h", 3600000ull},       {"d", 86400000ull},  {"w", 604800000ull},
    {NULL, 0},
};

typedef unsigned __int128 u128;
#define U128_MAX (~(u128)0)

kvs_q_problem kvs__parse_quantity(const char *text, size_t len, kvs_quantity kind,
                                  uint64_t bare_mult, uint64_t unit, bool round_down,
                                  uint64_t *out)
{
    const char *p = text, *end = text + len;
    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    bool negative = false;
    if (p < end && (*p == '-' || *p == '+')) {
        negative = *p == '-';
        p++;
    }
    /* mantissa: significant digits as an integer, exp10 the power of ten */
    u128 mant = 0;
    int exp10 = 0, digits = 0;
    bool overflow = false;
    for (; p < end && isdigit((unsigned char)*p); p++, digits++) {
        if (mant > (U128_MAX - 9) / 10)
            exp10++, overflow = overflow || *p != '0';
        else
            mant = mant * 10 + (unsigned)(*p - '0');
    }
    if (p < end && *p == '.') {
        p++;
        for (; p < end && isdigit((unsigned char)*p); p++, digits++)
            if (mant <= (U128_MAX - 9) / 10) {
                mant = mant * 10 + (unsigned)(*p - '0');
                exp10--;
            } /* digits past 38 significant ones cannot change the result's range */
    }
    if (digits == 0)
        return KVS_Q_SYNTAX;
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        int sign = 1;
        if (q < end && (*q == '+' || *q == '-'))
            sign = *q++ == '-' ? -1 : 1;
        if (q < end && isdigit((unsigned char)*q)) {
            int e = 0;
            for (; q < end && isdigit((unsigned char)*q); q++)
                if (e < 100000)
                    e = e * 10 + (*q - '0');
            exp10 += sign * e;
            p = q;
        }
    }
    while (p < end && isspace((unsigned char)*p))
        p++;
    uint64_t mult = bare_mult;
    if (p < end) {
        size_t ulen = (size_t)(end - p);
        const unit_def *u = kind == KVS_Q_SIZE ? size_units : age_units;
        for (; u->name; u++)
            if (strlen(u->name) == ulen && strncasecmp(u->name, p, ulen) == 0)
                break;
        if (!u->name)
            return KVS_Q_SYNTAX;
        mult = u->mult;
    }
    if (overflow)
        return negative ? KVS_Q_NEGATIVE : KVS_Q_TOO_LARGE;
    /* value = mant * 10^exp10 * mult / unit */
    u128 num = mant, den = unit ? unit : 1;
    if (num != 0) {
        if (num > U128_MAX / mult)
            return negative ? KVS_Q_NEGATIVE : KVS_Q_TOO_LARGE;
        num *= mult;
        for (; exp10 > 0; exp10--) {
            if (num > U128_MAX / 10)
                return negative ? KVS_Q_NEGATIVE : KVS_Q_TOO_LARGE;
            num *= 10;
        }
        for (; exp10 < 0; exp10++) {
            if (den > U128_MAX / 10) {
                num = 0; /* smaller than any unit */
                den = 1;
                break;
            }
            den *= 10;
        }
    }
    if (negative && num != 0)
        return KVS_Q_NEGATIVE;
    u128 q = num / den;
    if (q > UINT64_MAX)
        return KVS_Q_TOO_LARGE;
    if (num % den && !round_down)
        return KVS_Q_INEXACT;
    *out = (uint64_t)q;
    return KVS_Q_OK;
}

static kvs_status parse_public(const char *text, kvs_quantity kind, uint64_t bare, uint64_t unit,
                               bool round_down, uint64_t *out)
{
    if (!text || !out)
        return kvs__fail(KVS_ERR_INVALID, "%s: NULL argument",
                         kind == KVS_Q_SIZE ? "kvs_parse_size" : "kvs_parse_age");
    const char *grammar = kind == KVS_Q_SIZE ? kvs__size_grammar : kvs__age_grammar;
    switch (kvs__parse_quantity(text, strlen(text), kind, bare, unit, round_down, out)) {
    case KVS_Q_OK: return KVS_OK;
    case KVS_Q_SYNTAX:
        return kvs__fail(KVS_ERR_INVALID, "\"%.200s\" is not %s (a bare number is %s)", text,
                         grammar, kind == KVS_Q_SIZE ? "GB" : "seconds");
    case KVS_Q_NEGATIVE:
        return kvs__fail(KVS_ERR_INVALID, "\"%.200s\" is negative", text);
    case KVS_Q_TOO_LARGE:
        return kvs__fail(KVS_ERR_INVALID, "\"%.200s\" is too large", text);
    case KVS_Q_INEXACT:
        return kvs__fail(KVS_ERR_INVALID, "\"%.200s\" is not a whole number of %s", text,
                         kind == KVS_Q_SIZE ? "bytes" : "seconds");
    }
    return KVS_ERR_INTERNAL;
}

kvs_status kvs_parse_size(const char *text, uint64_t *bytes_out)
{
    return parse_public(text, KVS_Q_SIZE, 1000000000ull, 1, true, bytes_out);
}

kvs_status kvs_parse_age(const char *text, uint64_t *seconds_out)
{
    return parse_public(text, KVS_Q_AGE, 1000, 1000, false, seconds_out);
}
