/*
 * lm-cold-touch GIB THREADS: writes one byte per 4 KiB page of a fresh
 * GIB-GiB mapping (MADV_HUGEPAGE) from THREADS threads, and reports the rate
 * and the host's steal time meanwhile (/proc/stat, all CPUs). On a virtual
 * machine whose host takes back freed memory, touching fresh memory fast
 * makes the host steal CPU from this VM; the tracking benchmark's
 * destination does exactly that while it receives. One JSON object on stdout.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

struct part {
    volatile uint8_t *p;
    size_t len;
};

/* Steal time so far, in milliseconds summed over CPUs; -1 if unknown. */
static double steal_ms(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8];
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7])
              : 0;
    if (f)
        fclose(f);
    return n == 8 ? (double)v[7] * 1000.0 / (double)sysconf(_SC_CLK_TCK) : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *touch(void *arg)
{
    struct part *pt = arg;
    for (size_t off = 0; off < pt->len; off += 4096)
        pt->p[off] = 1;
    return NULL;
}

int main(int argc, char **argv)
{
    long gib = argc > 2 ? atol(argv[1]) : 0, nthreads = argc > 2 ? atol(argv[2]) : 0;
    if (gib < 1 || nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "usage: lm-cold-touch GIB THREADS (1..%d)\n", MAX_THREADS);
        return 2;
    }
    size_t len = (size_t)gib << 30;
    uint8_t *mem =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    (void)madvise(mem, len, MADV_HUGEPAGE);
    pthread_t th[MAX_THREADS];
    struct part parts[MAX_THREADS];
    double steal0 = steal_ms(), t0 = now_s();
    for (long i = 0; i < nthreads; i++) {
        parts[i] = (struct part){mem + len / (size_t)nthreads * (size_t)i, len / (size_t)nthreads};
        if (pthread_create(&th[i], NULL, touch, &parts[i])) {
            fprintf(stderr, "cannot start thread %ld\n", i);
            return 1;
        }
    }
    for (long i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    double secs = now_s() - t0, steal1 = steal_ms();
    printf("{\"gib\":%ld,\"threads\":%ld,\"seconds\":%.3f,\"gbps\":%.3f,\"steal_ms\":%.0f}\n", gib,
           nthreads, secs, (double)len / secs / 1e9,
           steal0 < 0 || steal1 < 0 ? -1.0 : steal1 - steal0);
    munmap(mem, len);
    return 0;
}
