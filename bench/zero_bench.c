/*
 * lm-zero-bench: throughput of each zero-page check implementation this CPU
 * has (src/util/zero.c), called once per 4 KiB page as the multifd channels
 * do:
 *
 *   zero, 256 MiB     every page of an already-populated zero buffer
 *                     (memory-bound), GB/s (1e9 bytes per second)
 *   zero, 256 KiB     the same over a cache-resident buffer, 1024 times
 *                     (compute-bound), GB/s
 *   non-zero page     one page whose first byte is non-zero, again and again
 *                     (the early exit), millions of pages per second
 *
 * Each figure is the median of 5 runs after one warm-up run. A markdown
 * table goes to stdout. This is a benchmark, not a test; it runs in a few
 * seconds. Usage: lm-zero-bench [MiB] (default 256).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "util/zero.h"

#define PAGE          4096u
#define RUNS          5
#define CACHE_BYTES   (256u * 1024)
#define NONZERO_CALLS 2000000u

static volatile size_t sink;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds for `reps` passes over buf[0..len) in page calls; median of RUNS after a warm-up. */
static double time_pages(lm_is_zero_fn fn, const unsigned char *buf, size_t len, unsigned reps,
                         size_t *zero_pages)
{
    double t[RUNS];
    for (int r = -1; r < RUNS; r++) {
        size_t zeros = 0;
        double t0 = now_s();
        for (unsigned k = 0; k < reps; k++)
            for (size_t off = 0; off < len; off += PAGE)
                zeros += fn(buf + off, PAGE);
        double dt = now_s() - t0;
        if (r >= 0)
            t[r] = dt;
        *zero_pages = zeros;
    }
    qsort(t, RUNS, sizeof t[0], cmp_double);
    return t[RUNS / 2];
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    if (mib == 0) {
        fprintf(stderr, "usage: %s [MiB]\n", argv[0]);
        return 2;
    }
    size_t big_len = mib << 20;
    unsigned char *big =
        mmap(NULL, big_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *small = aligned_alloc(PAGE, CACHE_BYTES);
    unsigned char *dirty = aligned_alloc(PAGE, PAGE);
    if (big == MAP_FAILED || !small || !dirty) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    memset(big, 0, big_len); /* populate: untouched pages would all map the shared zero page */
    memset(small, 0, CACHE_BYTES);
    memset(dirty, 0, PAGE);
    dirty[0] = 1;

    static const char *const names[] = {"avx512", "avx2", "sse2", "scalar"};
    printf("| impl | zero, %zu MiB (GB/s) | zero, 256 KiB cached (GB/s) | non-zero page (Mpages/s) "
           "|\n",
           mib);
    printf("|---|---:|---:|---:|\n");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        lm_is_zero_fn fn = lm_buffer_is_zero_get(names[i]);
        if (!fn) {
            printf("| %s | n/a | n/a | n/a |\n", names[i]);
            continue;
        }
        size_t zeros;
        double t_big = time_pages(fn, big, big_len, 1, &zeros);
        bool ok = zeros == big_len / PAGE;
        unsigned reps = (unsigned)(big_len / CACHE_BYTES);
        double t_small = time_pages(fn, small, CACHE_BYTES, reps, &zeros);
        ok &= zeros == (size_t)reps * (CACHE_BYTES / PAGE);
        double t_dirty = time_pages(fn, dirty, PAGE, NONZERO_CALLS, &zeros);
        ok &= zeros == 0;
        sink += zeros;
        printf("| %s | %.1f | %.1f | %.0f |%s\n", names[i], (double)big_len / t_big / 1e9,
               (double)big_len / t_small / 1e9, NONZERO_CALLS / t_dirty / 1e6,
               ok ? "" : " WRONG ANSWERS");
    }
    printf("\ndispatch: lm_buffer_is_zero uses %s\n", lm_buffer_is_zero_impl());
    munmap(big, big_len);
    free(small);
    free(dirty);
    return 0;
}
