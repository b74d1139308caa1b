/* Minimal test harness: CHECK fails the test with file:line; SKIP exits 77. */
#ifndef LM_TEST_CHECK_H
#define LM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int lm_test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            lm_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%llu != %llu)\n", __FILE__, __LINE__,  \
                    #a, #b, a_, b_);                                                               \
            lm_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define TEST_SKIP(why)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "SKIP: %s\n", why);                                                        \
        exit(77);                                                                                  \
    } while (0)

#define TEST_DONE()                                                                                \
    do {                                                                                           \
        if (lm_test_failures) {                                                                    \
            fprintf(stderr, "%d check(s) failed\n", lm_test_failures);                             \
            return 1;                                                                              \
        }                                                                                          \
        fprintf(stderr, "ok\n");                                                                   \
        return 0;                                                                                  \
    } while (0)

/* xorshift64*: deterministic per seed, good enough for test patterns. */
static inline unsigned long long test_rand(unsigned long long *state)
{
    unsigned long long x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
