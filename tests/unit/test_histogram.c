/*
 * Latency histogram: exact bucket bounds, and quantiles of known samples
 * where the answer is a bucket's upper bound (not the maximum seen), so a
 * wrong bucket, a wrong bound or a wrong rank shows as a wrong number. The
 * clamp to the maximum is checked on its own: it only applies when the
 * bucket holding the quantile also holds the maximum.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "util/histogram.h"

static lm_hist h, h2;

/* Far above everything the bound checks record, in a bucket of its own, so
 * the quantile of rank 0 is the bound of the other value's bucket. */
#define SENTINEL (UINT64_C(1) << 62)

/* The upper bound of the bucket holding v, read through the quantile. */
static uint64_t upper_of(uint64_t v)
{
    memset(&h, 0, sizeof(h));
    lm_hist_record(&h, v);
    lm_hist_record(&h, SENTINEL);
    return lm_hist_quantile(&h, 0.0);
}

/* Every value in [v, upper] shares one bucket, upper + 1 starts the next,
 * and the bucket is at most 1/8 of its lower end wide (12.5%). */
static void check_bucket(uint64_t v)
{
    uint64_t up = upper_of(v);
    CHECK(up >= v);
    if (up < v)
        return;
    CHECK_EQ_U64(upper_of(up), up);
    if (up + 1 < SENTINEL / 2)
        CHECK(upper_of(up + 1) > up);
    if (v >= LM_HIST_SUB)
        CHECK((up - v) * LM_HIST_SUB < v);
    else
        CHECK_EQ_U64(up, v); /* the small values have a bucket each */
}

static void record_range(lm_hist *x, uint64_t from, uint64_t to)
{
    for (uint64_t v = from; v <= to; v++)
        lm_hist_record(x, v);
}

int main(void)
{
    /* Empty: nothing to report. */
    memset(&h, 0, sizeof(h));
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 0);
    CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), 0);

    /* Exact bucket bounds, by hand. */
    CHECK_EQ_U64(upper_of(0), 0);
    CHECK_EQ_U64(upper_of(7), 7);
    CHECK_EQ_U64(upper_of(8), 8);
    CHECK_EQ_U64(upper_of(15), 15);
    CHECK_EQ_U64(upper_of(16), 17); /* [16, 17] */
    CHECK_EQ_U64(upper_of(17), 17);
    CHECK_EQ_U64(upper_of(18), 19);
    CHECK_EQ_U64(upper_of(501), 511);         /* [480, 511] */
    CHECK_EQ_U64(upper_of(512), 575);         /* [512, 575] */
    CHECK_EQ_U64(upper_of(1000), 1023);       /* [960, 1023] */
    CHECK_EQ_U64(upper_of(1024), 1151);       /* [1024, 1151] */
    CHECK_EQ_U64(upper_of(1000000), 1048575); /* [983040, 1048575] */
    /* And the same properties everywhere: every value up to 2^16, and both
     * sides of every power of two and of every sub-bucket edge above. */
    for (uint64_t v = 0; v <= 65536; v++)
        check_bucket(v);
    for (unsigned b = 17; b < 61; b++)
        for (uint64_t s = 0; s < LM_HIST_SUB; s++) {
            uint64_t edge = (UINT64_C(1) << b) + (s << (b - 3));
            check_bucket(edge - 1);
            check_bucket(edge);
            check_bucket(edge + 1);
        }

    /* 0..7 once each: every sample has its own bucket. rank = floor(q * n);
     * the quantile is the first bucket holding more than rank samples. */
    memset(&h, 0, sizeof(h));
    record_range(&h, 0, 7);
    CHECK_EQ_U64(h.count, 8);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.0), 0);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 4);  /* rank 4: the 5th sample */
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.99), 7); /* rank 7 */
    CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), 7);

    /* 1..1024 once each. p50: rank 512, the 513th sample (513), bucket
     * [512, 575]. p99: rank 1013, sample 1014, bucket [960, 1023], below
     * the maximum 1024 (bucket [1024, 1151]) so nothing is clamped. */
    memset(&h, 0, sizeof(h));
    record_range(&h, 1, 1024);
    CHECK_EQ_U64(h.count, 1024);
    CHECK_EQ_U64(h.max, 1024);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 575);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.99), 1023);
    CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), 1024);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.25), 287); /* rank 256: sample 257, [256, 287] */

    /* A skewed mix: 985 x 10 us, 10 x 1 ms, 5 x 2 ms (in ns). p50 in the
     * bucket of 10 (exact below 16); p99 (rank 990) in the 1 ms bucket,
     * [983040, 1048575], whose bound is below the 2 ms maximum. */
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 985; i++)
        lm_hist_record(&h, 10);
    for (int i = 0; i < 10; i++)
        lm_hist_record(&h, 1000000);
    for (int i = 0; i < 5; i++)
        lm_hist_record(&h, 2000000);
    CHECK_EQ_U64(h.count, 1000);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 10);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.98), 10);       /* rank 980 */
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.99), 1048575);  /* rank 990 */
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.996), 2000000); /* rank 996: 2 ms bucket, clamped */
    CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), 2000000);

    /* The clamp: a bucket's bound can lie above every sample in it; then
     * the quantile is the maximum seen, never more. */
    memset(&h, 0, sizeof(h));
    lm_hist_record(&h, 1000); /* bucket [960, 1023] */
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 1000);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.99), 1000);

    /* Merge: the same answers as recording everything in one histogram. */
    memset(&h, 0, sizeof(h));
    memset(&h2, 0, sizeof(h2));
    record_range(&h, 1, 500);
    record_range(&h2, 501, 1024);
    lm_hist_merge(&h, &h2);
    CHECK_EQ_U64(h.count, 1024);
    CHECK_EQ_U64(h.max, 1024);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 575);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.99), 1023);
    /* Merging into an empty one takes the other's maximum too. */
    memset(&h2, 0, sizeof(h2));
    lm_hist_merge(&h2, &h);
    CHECK_EQ_U64(h2.count, 1024);
    CHECK_EQ_U64(lm_hist_quantile(&h2, 1.0), 1024);
    CHECK_EQ_U64(lm_hist_quantile(&h2, 0.99), 1023);
    TEST_DONE();
}
