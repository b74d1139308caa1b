#ifndef LM_UTIL_CLOCK_H
#define LM_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t lm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double lm_ns_to_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

#endif
