#include "cli/steal.h"

#include <stdio.h>
#include <string.h>
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

/* Sleeps until t (monotonic ns); false when asked to stop first. */
static bool sleep_until(lm_steal_sampler *s, uint64_t t)
{
    pthread_mutex_lock(&s->lock);
    while (!s->stop && lm_now_ns() < t)
        lm_cond_wait_ms(&s->cond, &s->lock, 10);
    bool go = !s->stop;
    pthread_mutex_unlock(&s->lock);
    return go;
}

static void *sampler_main(void *arg)
{
    lm_steal_sampler *s = arg;
    double prev = read_steal_ms();
    for (int w = 0; w < LM_STEAL_WINDOWS; w++) {
        if (!sleep_until(s, s->start_ns + (uint64_t)(w + 1) * s->window_ns))
            break;
        double now = read_steal_ms();
        /* The counter never goes back; if it seems to, say unknown. */
        s->steal_ms[w] = prev < 0 || now < prev ? -1 : now - prev;
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
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->started = pthread_create(&s->thread, NULL, sampler_main, s) == 0;
    if (!s->started) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
    }
}

void lm_steal_sampler_join(lm_steal_sampler *s, bool stop)
{
    if (!s->started)
        return;
    if (stop) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    s->started = false;
}
