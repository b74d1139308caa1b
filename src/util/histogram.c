#include "util/histogram.h"

static unsigned bucket_of(uint64_t v)
{
    if (v < LM_HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 3 */
    unsigned sub = (unsigned)(v >> (msb - 3)) & (LM_HIST_SUB - 1);
    return (msb - 2) * LM_HIST_SUB + sub;
}

static uint64_t bucket_upper(unsigned b)
{
    if (b < LM_HIST_SUB)
        return b;
    unsigned msb = b / LM_HIST_SUB + 2, sub = b % LM_HIST_SUB;
    uint64_t base = (uint64_t)(LM_HIST_SUB + sub) << (msb - 3);
    return base + ((uint64_t)1 << (msb - 3)) - 1;
}

void lm_hist_record(lm_hist *h, uint64_t value)
{
    h->bucket[bucket_of(value)]++;
    h->count++;
    if (value > h->max)
        h->max = value;
}

void lm_hist_merge(lm_hist *dst, const lm_hist *src)
{
    for (unsigned i = 0; i < LM_HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t lm_hist_quantile(const lm_hist *h, double q)
{
    if (!h->count)
        return 0;
    if (q >= 1.0)
        return h->max;
    uint64_t rank = (uint64_t)(q * (double)h->count), seen = 0;
    for (unsigned i = 0; i < LM_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen > rank) {
            uint64_t up = bucket_upper(i);
            return up < h->max ? up : h->max;
        }
    }
    return h->max;
}
