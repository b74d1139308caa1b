#ifndef LM_UTIL_CLOCK_H
#define LM_UTIL_CLOCK_H

#include <pthread.h>
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

/* Waits on cond for at most ms milliseconds (callers loop on their own
 * predicate and check cancellation between slices). Lock held. */
static inline void lm_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *lock, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cond, lock, &ts);
}

/* Waits on cond until the monotonic time end_ns at the latest, to the
 * nanosecond: the condition variable's clock is CLOCK_REALTIME, so the wait
 * ends the same distance from its now. Lock held; callers loop on their
 * own predicate. */
static inline void lm_cond_wait_until_ns(pthread_cond_t *cond, pthread_mutex_t *lock,
                                         uint64_t end_ns)
{
    uint64_t now = lm_now_ns();
    if (now >= end_ns)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t at = (uint64_t)ts.tv_nsec + (end_ns - now);
    ts.tv_sec += (time_t)(at / 1000000000ull);
    ts.tv_nsec = (long)(at % 1000000000ull);
    pthread_cond_timedwait(cond, lock, &ts);
}

#endif
