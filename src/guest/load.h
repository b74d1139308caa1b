/*
 * Busy threads for the guest's baseline window. On a host with few cores a
 * vCPU stalls whenever another runnable thread takes its core, so the
 * stalls a migration adds are only visible against a window with the same
 * number of busy threads: these do what the migration's sender and
 * receiver threads do (copy memory), without any dirty tracking.
 */
#ifndef LM_GUEST_LOAD_H
#define LM_GUEST_LOAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define LM_LOAD_MAX_THREADS 64

typedef struct lm_cpu_load {
    unsigned nthreads;
    pthread_t threads[LM_LOAD_MAX_THREADS];
    atomic_bool stop;
} lm_cpu_load;

/* Starts n busy threads (at most LM_LOAD_MAX_THREADS). 0 or -errno. */
int lm_cpu_load_start(lm_cpu_load *l, unsigned n);
/* Stops and joins them; safe on a load that started none. */
void lm_cpu_load_stop(lm_cpu_load *l);

#endif
