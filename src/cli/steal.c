#include "cli/steal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

/* Total steal in milliseconds, or -1. */
static double read_steal_ms(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return n == 8 && hz > 0 ? (double)v[7] * 1000.0 / (double)hz : -1;
}

static void sleep_until(uint64_t t)
{
    for (uint64_t now = lm_now_ns(); now < t; now = lm_now_ns()) {
        struct timespec ts = {.tv_sec = (time_t)((t - now) / 1000000000ull),
                              .tv_nsec = (long)((t - now) % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static void *sampler_main(void *arg)
{
    lm_steal_sampler *s = arg;
    double prev = read_steal_ms();
    for (int w = 0; w < LM_STEAL_WINDOWS; w++) {
        sleep_until(s->start_ns + (uint64_t)(w + 1) * s->window_ns);
        double now = read_steal_ms();
        s->steal_ms[w] = prev < 0 || now < 0 ? -1 : now - prev;
        prev = now;
    }
    return NULL;
}

void lm_steal_sampler_start(lm_steal_sampler *s, uint64_t window_ns)
{
    memset(s, 0, sizeof(*s));
    for (int w = 0; w < LM_STEAL_WINDOWS; w++)
        s->steal_ms[w] = -1;
    s->start_ns = lm_now_ns();
    s->window_ns = window_ns;
    s->started = pthread_create(&s->thread, NULL, sampler_main, s) == 0;
}

void lm_steal_sampler_join(lm_steal_sampler *s)
{
    if (s->started)
        pthread_join(s->thread, NULL);
    s->started = false;
}
