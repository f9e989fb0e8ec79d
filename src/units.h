/*
 * units.h - the one grammar of sizes and ages, shared by the configuration
 * (max_store_size, lease_ttl_s, ...) and the CLI (gc --to-size,
 * --older-than) through kvs_parse_size() and kvs_parse_age().
 */
#ifndef KVS_UNITS_H
#define KVS_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kvs_quantity {
    KVS_Q_SIZE, /* bytes */
    KVS_Q_AGE,  /* milliseconds */
} kvs_quantity;

typedef enum kvs_q_problem {
    KVS_Q_OK = 0,
    KVS_Q_SYNTAX,    /* not a number with an accepted unit */
    KVS_Q_NEGATIVE,  /* a valid quantity with a minus sign */
    KVS_Q_TOO_LARGE, /* more than 2^64-1 of the result's unit */
    KVS_Q_INEXACT,   /* not a whole number of the result's unit */
} kvs_q_problem;

/*
 * Parses text[0..len) (blanks around it are ignored) as a quantity of kind:
 * a decimal number (digits, an optional fraction, an optional exponent
 * e[+-]N), optional blanks, and an optional unit (any case).  A bare number
 * counts bare_mult base units (bytes, or milliseconds).  *out is the value
 * in multiples of unit base units; a remainder is KVS_Q_INEXACT unless
 * round_down, which drops it.
 */
kvs_q_problem kvs__parse_quantity(const char *text, size_t len, kvs_quantity kind,
                                  uint64_t bare_mult, uint64_t unit, bool round_down,
                                  uint64_t *out);

/* The grammars in words, for messages and the reference page. */
extern const char kvs__size_grammar[];
extern const char kvs__age_grammar[];

#endif
