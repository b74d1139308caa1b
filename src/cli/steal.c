#include "cli/steal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guest/guest.h"

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

/* Sleeps until t (the guest's clock, CLOCK_MONOTONIC ns, which the
 * condition variable waits on); false when asked to stop first. */
static bool sleep_until(lm_steal_sampler *s, uint64_t t)
{
    struct timespec deadline = {.tv_sec = (time_t)(t / 1000000000ull),
                                .tv_nsec = (long)(t % 1000000000ull)};
    pthread_mutex_lock(&s->lock);
    while (!s->stop && lm_guest_now_ns() < t)
        pthread_cond_timedwait(&s->cond, &s->lock, &deadline);
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
    s->start_ns = lm_guest_now_ns();
    s->window_ns = window_ns;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, &attr);
    pthread_condattr_destroy(&attr);
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
