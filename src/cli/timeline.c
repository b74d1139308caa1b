#include "cli/timeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SAMPLE_NS 100000000ull

struct cli_timeline {
    FILE *f;
    lm_ctx *ctx;
    lm_guest *g;
    pthread_t thread;
    pthread_mutex_t lock; /* the file, the stats buffer and prev */
    atomic_bool stop;
    uint64_t start_ns;
    lm_stats st;  /* a buffer for lm_stats_get (large: not on a stack) */
    lm_hist prev; /* the guest's write latencies up to the last sample */
    lm_hist cur, delta;
};

/* The guest's write latencies since the last sample: p99 and max, in us
 * (cumulative per-vCPU histograms, read while they run: approximate). */
static void guest_latency(cli_timeline *t, double *p99_us, double *max_us)
{
    *p99_us = *max_us = 0;
    if (!t->g)
        return;
    memset(&t->cur, 0, sizeof(t->cur));
    for (unsigned i = 0; i < t->g->nvcpus; i++)
        lm_hist_merge(&t->cur, &t->g->vcpus[i].latency);
    memset(&t->delta, 0, sizeof(t->delta));
    for (unsigned b = 0; b < LM_HIST_BUCKETS; b++) {
        uint64_t n =
            t->cur.bucket[b] >= t->prev.bucket[b] ? t->cur.bucket[b] - t->prev.bucket[b] : 0;
        t->delta.bucket[b] = n;
        t->delta.count += n;
    }
    /* The interval's own max is not in the histograms: quantiles are
     * bounded by the buckets' upper bounds instead (within 12.5%). */
    t->delta.max = UINT64_MAX;
    if (t->delta.count) {
        *p99_us = (double)lm_hist_quantile(&t->delta, 0.99) / 1000.0;
        *max_us =
            (double)lm_hist_quantile(&t->delta, 1.0 - 1.0 / (double)(2 * t->delta.count)) / 1000.0;
    }
    t->prev = t->cur;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One row; kind says why it was written. Lock held. An event's row (ev)
 * is written from inside the library's event callback, where it may not
 * call into the library: it repeats the last sample's numbers with the
 * event's own time, status and round. */
static void write_row(cli_timeline *t, const char *kind, const lm_event *ev)
{
    double p99 = 0, max = 0;
    unsigned round;
    lm_status status;
    if (!ev) {
        lm_stats_get(t->ctx, &t->st);
        guest_latency(t, &p99, &max);
    }
    const lm_stats *s = &t->st;
    round = ev && ev->kind == LM_EVENT_PASS ? (unsigned)ev->pass + 1 : s->nrounds + 1;
    status = ev && ev->kind == LM_EVENT_STATUS ? ev->status : s->status;
    fprintf(t->f, "%.1f %s %s %u %llu %.1f %llu %.0f %u %llu %.3f %.3f\n",
            (double)(now_ns() - t->start_ns) / 1e6, kind, lm_status_name(status), round,
            (unsigned long long)s->transferred, s->mbps, (unsigned long long)s->remaining,
            s->dirty_pages_rate, s->cpu_throttle_percentage,
            (unsigned long long)s->postcopy_requests, p99, max);
}

static void *sampler_main(void *arg)
{
    cli_timeline *t = arg;
    uint64_t next = now_ns();
    while (!atomic_load(&t->stop)) {
        pthread_mutex_lock(&t->lock);
        write_row(t, "sample", NULL);
        pthread_mutex_unlock(&t->lock);
        next += SAMPLE_NS;
        uint64_t now = now_ns();
        if (next > now) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(next - now)};
            nanosleep(&ts, NULL);
        } else {
            next = now;
        }
    }
    return NULL;
}

int cli_timeline_start(cli_timeline **out, const char *path, lm_ctx *ctx, lm_guest *g)
{
    cli_timeline *t = calloc(1, sizeof(*t));
    FILE *f = t ? fopen(path, "w") : NULL;
    if (!f) {
        fprintf(stderr, "livemig: cannot write the timeline %s: %s\n", path,
                strerror(t ? errno : ENOMEM));
        free(t);
        return -1;
    }
    t->f = f;
    t->ctx = ctx;
    t->g = g;
    t->start_ns = now_ns();
    pthread_mutex_init(&t->lock, NULL);
    fprintf(f, "# livemig timeline: one row per 100 ms sample and per event\n# %s\n",
            CLI_TIMELINE_COLUMNS);
    for (unsigned i = 0; g && i < g->nvcpus; i++)
        lm_hist_merge(&t->prev, &g->vcpus[i].latency);
    if (pthread_create(&t->thread, NULL, sampler_main, t) != 0) {
        fprintf(stderr, "livemig: cannot start the timeline's thread\n");
        fclose(f);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void cli_timeline_event(cli_timeline *t, const lm_event *ev)
{
    if (!t)
        return;
    /* A pass begins at each sync: the boundary between two rounds. */
    const char *kind = ev->kind == LM_EVENT_PASS ? "round" : NULL;
    if (ev->kind == LM_EVENT_STATUS)
        kind = ev->status == LM_STATUS_DEVICE            ? "switchover"
               : ev->status == LM_STATUS_POSTCOPY_ACTIVE ? "postcopy"
                                                         : "status";
    pthread_mutex_lock(&t->lock);
    write_row(t, kind, ev);
    pthread_mutex_unlock(&t->lock);
}

void cli_timeline_stop(cli_timeline *t)
{
    if (!t)
        return;
    atomic_store(&t->stop, true);
    pthread_join(t->thread, NULL);
    write_row(t, "end", NULL);
    fclose(t->f);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
