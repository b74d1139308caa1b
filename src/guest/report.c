#include "guest/report.h"

#include <string.h>

#include "util/histogram.h"
#include "util/json.h"

static void span_take(lm_guest *g, int w, lm_guest_span *s)
{
    lm_hist latency;
    uint64_t stall_ns, stall_own_ns;
    lm_guest_window(g, w, &latency, &stall_ns, &stall_own_ns);
    s->latency_p50_us = (double)lm_hist_quantile(&latency, 0.5) / 1000.0;
    s->latency_p99_us = (double)lm_hist_quantile(&latency, 0.99) / 1000.0;
    s->latency_max_us = (double)lm_hist_quantile(&latency, 1.0) / 1000.0;
    s->latency_count = latency.count;
    s->max_stall_ms = (double)stall_ns / 1e6;
    s->max_stall_own_ms = (double)stall_own_ns / 1e6;
}

void lm_guest_report_take(lm_guest *g, uint64_t start, lm_guest_report *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->workload, sizeof(r->workload), "%s", g->wl.spec);
    r->vcpus = g->nvcpus;
    r->progress_start = start;
    r->progress_end = lm_guest_counter_sum(g);
    span_take(g, -1, &r->whole);
    r->windows = atomic_load(&g->win_ns[0]) != 0;
    for (int w = 0; w < LM_WIN__COUNT; w++) {
        span_take(g, w, &r->window[w]);
        r->steal_ms[w] = -1;
    }
}

void lm_guest_report_print(const lm_guest_report *r, const char *phase, FILE *out)
{
    fprintf(out,
            "guest: %s, %u vCPU(s), progress %llu -> %llu (%s), write latency p50 %.1f us, "
            "p99 %.1f us, max %.1f us\n",
            r->workload, r->vcpus, (unsigned long long)r->progress_start,
            (unsigned long long)r->progress_end, phase, r->whole.latency_p50_us,
            r->whole.latency_p99_us, r->whole.latency_max_us);
}

static void span_json(lm_json *j, const lm_guest_span *s)
{
    lm_json_double(j, "write-latency-p50-us", s->latency_p50_us);
    lm_json_double(j, "write-latency-p99-us", s->latency_p99_us);
    lm_json_double(j, "write-latency-max-us", s->latency_max_us);
    lm_json_u64(j, "write-latency-count", s->latency_count);
    lm_json_double(j, "max-stall-ms", s->max_stall_ms);
    lm_json_double(j, "max-stall-excl-runqueue-ms", s->max_stall_own_ms);
}

char *lm_guest_report_json(const lm_guest_report *r)
{
    static const char *const names[LM_WIN__COUNT] = {"baseline", "tracking-start"};
    lm_json j;
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    lm_json_str(&j, "kind", "thread");
    lm_json_str(&j, "workload", r->workload);
    lm_json_u64(&j, "vcpus", r->vcpus);
    lm_json_u64(&j, "progress-start", r->progress_start);
    lm_json_u64(&j, "progress-end", r->progress_end);
    span_json(&j, &r->whole);
    for (unsigned w = 0; r->windows && w < LM_WIN__COUNT; w++) {
        lm_json_object_begin(&j, names[w]);
        span_json(&j, &r->window[w]);
        if (r->steal_ms[w] >= 0)
            lm_json_double(&j, "host-steal-ms", r->steal_ms[w]);
        if (w == LM_WIN_BASELINE)
            lm_json_u64(&j, "load-threads", r->baseline_load);
        lm_json_object_end(&j);
    }
    lm_json_object_end(&j);
    char *text = lm_json_finish(&j);
    size_t len = text ? strlen(text) : 0;
    if (len && text[len - 1] == '\n') /* a fragment to splice, not a document */
        text[len - 1] = '\0';
    return text;
}
