/* Latency histogram: log2 buckets with 8 linear sub-buckets each, so any
 * quantile is within 12.5% of the true value. One per writer thread, no
 * atomics; merged by the reader after the writer stops or approximately
 * while it runs. */
#ifndef LM_UTIL_HISTOGRAM_H
#define LM_UTIL_HISTOGRAM_H

#include <stdint.h>

#define LM_HIST_SUB     8
#define LM_HIST_BUCKETS (64 * LM_HIST_SUB)

typedef struct lm_hist {
    uint64_t count;
    uint64_t max;
    uint64_t bucket[LM_HIST_BUCKETS];
} lm_hist;

void lm_hist_record(lm_hist *h, uint64_t value);
void lm_hist_merge(lm_hist *dst, const lm_hist *src);
/* Upper bound of the bucket holding quantile q (0..1); max for q >= 1. */
uint64_t lm_hist_quantile(const lm_hist *h, double q);

#endif
