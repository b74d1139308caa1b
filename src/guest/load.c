#include "guest/load.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Each thread copies within its own 8 MiB buffer, 64 KiB at a time: memory
 * traffic and CPU time like a receiver placing pages, and out of the
 * guest's RAM so the baseline never touches what will be migrated. */
#define LOAD_BUFFER (8u << 20)
#define LOAD_PIECE  (64u << 10)

static void *load_main(void *arg)
{
    lm_cpu_load *l = arg;
    uint8_t *buf = malloc(LOAD_BUFFER);
    if (!buf)
        return NULL;
    memset(buf, 0x5a, LOAD_BUFFER);
    size_t half = LOAD_BUFFER / 2, off = 0;
    while (!atomic_load_explicit(&l->stop, memory_order_relaxed)) {
        memcpy(buf + half + off, buf + off, LOAD_PIECE);
        off = (off + LOAD_PIECE) % half;
        /* Keep the copy from being optimized away. */
        __asm__ volatile("" : : "r"(buf) : "memory");
    }
    free(buf);
    return NULL;
}

int lm_cpu_load_start(lm_cpu_load *l, unsigned n)
{
    memset(l, 0, sizeof(*l));
    atomic_store(&l->stop, false);
    if (n > LM_LOAD_MAX_THREADS)
        return -E2BIG;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&l->threads[i], NULL, load_main, l)) {
            lm_cpu_load_stop(l);
            return -EAGAIN;
        }
        l->nthreads++;
    }
    return 0;
}

void lm_cpu_load_stop(lm_cpu_load *l)
{
    atomic_store(&l->stop, true);
    for (unsigned i = 0; i < l->nthreads; i++)
        pthread_join(l->threads[i], NULL);
    l->nthreads = 0;
}
