/*
 * Host steal time over the guest-stats windows. In a virtual machine the
 * host can take a CPU away from this whole kernel; a vCPU thread then
 * neither runs nor waits on a run queue, so its stall shows up as its own
 * time. /proc/stat's steal counter (all CPUs, 10 ms ticks) tells when that
 * happened, so a window's stalls can be read with it.
 */
#ifndef LM_CLI_STEAL_H
#define LM_CLI_STEAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define LM_STEAL_WINDOWS 2

typedef struct lm_steal_sampler {
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop; /* under lock: end now, windows not finished stay unknown */
    uint64_t start_ns, window_ns;
    /* Steal in milliseconds (summed over CPUs) during each window; -1 when
     * /proc/stat has no steal counter. */
    double steal_ms[LM_STEAL_WINDOWS];
} lm_steal_sampler;

/* Samples at now, now + window, now + 2 * window (from its own thread). */
void lm_steal_sampler_start(lm_steal_sampler *s, uint64_t window_ns);
/* Waits for the last sample (stop: end now instead). Safe on a sampler
 * never started (zeroed). */
void lm_steal_sampler_join(lm_steal_sampler *s, bool stop);

#endif
