/*
 * The synthetic guest's part of a migration report: how it felt (write
 * latency, the longest stalls) and that it ran (its progress counters),
 * for the whole run and, on the source, for the baseline window and the
 * window where tracking starts.
 */
#ifndef LM_GUEST_REPORT_H
#define LM_GUEST_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "guest/guest.h"

/* One stretch of time: write latencies (us) and longest stalls (ms). */
typedef struct lm_guest_span {
    double latency_p50_us, latency_p99_us, latency_max_us;
    uint64_t latency_count; /* writes timed: one per step of a stress or hot vCPU */
    double max_stall_ms;
    double max_stall_own_ms; /* less the run-queue wait */
} lm_guest_span;

typedef struct lm_guest_report {
    char workload[LM_WORKLOAD_SPEC_MAX];
    unsigned vcpus;
    uint64_t progress_start, progress_end;
    lm_guest_span whole;
    bool windows; /* the windows below were measured (source) */
    lm_guest_span window[LM_WIN__COUNT];
    unsigned baseline_load;         /* busy threads beside the guest in the baseline window */
    double steal_ms[LM_WIN__COUNT]; /* host steal during each window; < 0: unknown */
} lm_guest_report;

/* Fills r from the guest (stopped, or approximately while it runs); start is
 * the progress counter sum at the start of what is reported. The steal times
 * are left unknown and baseline_load 0: the caller knows them. */
void lm_guest_report_take(lm_guest *g, uint64_t start, lm_guest_report *r);
/* One human line ("guest: ..."); phase names the stretch of progress. */
void lm_guest_report_print(const lm_guest_report *r, const char *phase, FILE *out);
/* The report as one JSON object (no trailing newline) in a malloc()ed
 * string the caller frees; NULL when out of memory. */
char *lm_guest_report_json(const lm_guest_report *r);

#endif
