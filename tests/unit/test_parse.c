/*
 * Command-line values (sizes, counts, seconds, byte formatting), workload
 * specs, the latency histogram and the JSON writer.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "check.h"
#include "guest/guest.h"
#include "util/histogram.h"
#include "util/json.h"
#include "util/parse.h"

/* ---- sizes and numbers ---------------------------------------------------- */

static void size_ok(const char *s, uint64_t want, int line)
{
    uint64_t v = 0xDEAD;
    int r = lm_parse_size(s, &v);
    if (r != 0 || v != want) {
        fprintf(stderr, "%s:%d: lm_parse_size(\"%s\") = %d, %llu; want 0, %llu\n", __FILE__, line,
                s, r, (unsigned long long)v, (unsigned long long)want);
        lm_test_failures++;
    }
}

static void size_bad(const char *s, int line)
{
    uint64_t v = 0xDEAD;
    int r = lm_parse_size(s, &v);
    if (r >= 0 || v != 0xDEAD) {
        fprintf(stderr,
                "%s:%d: lm_parse_size(\"%s\") = %d, %llu; want an error and no "
                "output\n",
                __FILE__, line, s, r, (unsigned long long)v);
        lm_test_failures++;
    }
}

static void u64_ok(const char *s, uint64_t want, int line)
{
    uint64_t v = 0xDEAD;
    int r = lm_parse_u64(s, &v);
    if (r != 0 || v != want) {
        fprintf(stderr, "%s:%d: lm_parse_u64(\"%s\") = %d, %llu; want 0, %llu\n", __FILE__, line, s,
                r, (unsigned long long)v, (unsigned long long)want);
        lm_test_failures++;
    }
}

static void u64_bad(const char *s, int line)
{
    uint64_t v = 0xDEAD;
    int r = lm_parse_u64(s, &v);
    if (r >= 0 || v != 0xDEAD) {
        fprintf(stderr, "%s:%d: lm_parse_u64(\"%s\") = %d, %llu; want an error\n", __FILE__, line,
                s, r, (unsigned long long)v);
        lm_test_failures++;
    }
}

#define SIZE_OK(s, v) size_ok(s, v, __LINE__)
#define SIZE_BAD(s)   size_bad(s, __LINE__)
#define U64_OK(s, v)  u64_ok(s, v, __LINE__)
#define U64_BAD(s)    u64_bad(s, __LINE__)

static void sizes(void)
{
    SIZE_OK("0", 0);
    SIZE_OK("1", 1);
    SIZE_OK("4096", 4096);
    SIZE_OK("64K", 64ull << 10);
    SIZE_OK("64k", 64ull << 10);
    SIZE_OK("256M", 256ull << 20);
    SIZE_OK("256m", 256ull << 20);
    SIZE_OK("2G", 2ull << 30);
    SIZE_OK("2g", 2ull << 30);
    SIZE_OK("1T", 1ull << 40);
    SIZE_OK("1t", 1ull << 40);
    SIZE_OK("2GiB", 2ull << 30);
    SIZE_OK("2gib", 2ull << 30);
    SIZE_OK("2GB", 2ull << 30);
    SIZE_OK("2gb", 2ull << 30);
    SIZE_OK("64KiB", 64ull << 10);
    SIZE_OK("3MB", 3ull << 20);
    SIZE_OK("0G", 0);
    SIZE_OK("007M", 7ull << 20);
    SIZE_OK("18446744073709551615", UINT64_MAX);
    SIZE_OK("16777215T", 16777215ull << 40); /* the largest T that fits */
    SIZE_OK("17179869183G", 17179869183ull << 30);

    SIZE_BAD("");
    SIZE_BAD("-1");
    SIZE_BAD("-0");
    SIZE_BAD("+1");
    SIZE_BAD("12X");
    SIZE_BAD("12 M");
    SIZE_BAD("12M ");
    SIZE_BAD("G");
    SIZE_BAD("GiB");
    SIZE_BAD("1.5G");
    SIZE_BAD("1,5G");
    SIZE_BAD("1GG");
    SIZE_BAD("1Gi");
    SIZE_BAD("1GiBB");
    SIZE_BAD("1iB");
    SIZE_BAD("1B"); /* bytes take no unit */
    SIZE_BAD("1P");
    SIZE_BAD("0x10");
    SIZE_BAD("1e3");
    SIZE_BAD("99999999999999T");
    SIZE_BAD("16777216T"); /* 2^64 */
    SIZE_BAD("17179869184G");
    SIZE_BAD("18014398509481984K");
    SIZE_BAD("18446744073709551616"); /* 2^64 with no unit */
    SIZE_BAD("99999999999999999999999");
    uint64_t v;
    CHECK(lm_parse_size(NULL, &v) < 0);

    U64_OK("0", 0);
    U64_OK("10", 10);
    U64_OK("000123", 123);
    U64_OK("18446744073709551615", UINT64_MAX);
    U64_BAD("");
    U64_BAD("-1");
    U64_BAD("+1");
    U64_BAD("1K");
    U64_BAD("1.0");
    U64_BAD("abc");
    U64_BAD("12abc");
    U64_BAD("0x10");
    U64_BAD("18446744073709551616");
    CHECK(lm_parse_u64(NULL, &v) < 0);
    /* strtoull would skip leading white space and then accept a sign. */
    U64_BAD(" -1");
    SIZE_BAD(" -1");
    SIZE_BAD("\t-5");
}

static void seconds(void)
{
    double d = -7;
    bool inf = true;
    CHECK(lm_parse_seconds("0.5", &d, &inf) == 0 && d == 0.5 && !inf);
    CHECK(lm_parse_seconds("10", &d, &inf) == 0 && d == 10.0 && !inf);
    CHECK(lm_parse_seconds("0", &d, &inf) == 0 && d == 0.0 && !inf);
    CHECK(lm_parse_seconds("1e2", &d, &inf) == 0 && d == 100.0 && !inf);
    CHECK(lm_parse_seconds("86400", &d, &inf) == 0 && d == 86400.0);
    inf = false;
    CHECK(lm_parse_seconds("inf", &d, &inf) == 0 && inf && isinf(d));
    static const char *const bad[] = {"",   "-1",    "-0.5", "abc",      "nan",  "NaN",   "-nan",
                                      "1s", "1.5.2", "5 ",   "infinity", "-inf", "1e999", "INF"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        d = 42;
        inf = true;
        int r = lm_parse_seconds(bad[i], &d, &inf);
        if (r >= 0 || inf) {
            fprintf(stderr, "lm_parse_seconds(\"%s\") = %d (%g, inf %d): want an error\n", bad[i],
                    r, d, inf);
            lm_test_failures++;
        }
    }
    CHECK(lm_parse_seconds(NULL, &d, &inf) < 0);
}

static void format_bytes(void)
{
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {
        {0, "0 B"},
        {1, "1 B"},
        {1023, "1023 B"},
        {1024, "1.00 KiB"},
        {1536, "1.50 KiB"},
        {64ull << 20, "64.00 MiB"},
        {(3ull << 30) / 2, "1.50 GiB"},
        {2ull << 30, "2.00 GiB"},
        {1ull << 40, "1.00 TiB"},
        {5ull << 50, "5120.00 TiB"}, /* no unit past TiB */
        {UINT64_MAX, "16777216.00 TiB"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *r = lm_format_bytes(cases[i].v, buf, sizeof(buf));
        CHECK(r == buf);
        if (strcmp(buf, cases[i].want) != 0) {
            fprintf(stderr, "lm_format_bytes(%llu) = \"%s\", want \"%s\"\n",
                    (unsigned long long)cases[i].v, buf, cases[i].want);
            lm_test_failures++;
        }
    }
    /* A short buffer is truncated and terminated, never overrun. */
    char small[8];
    memset(small, 'x', sizeof(small));
    lm_format_bytes(1536, small, 5);
    CHECK(strcmp(small, "1.50") == 0);
    CHECK(small[5] == 'x' && small[7] == 'x');
    lm_format_bytes(1536, small, 1);
    CHECK(small[0] == '\0' && small[1] == '.');
}

/* ---- workloads ------------------------------------------------------------- */

static void workload_ok(const char *spec, lm_workload_kind kind, unsigned threads, uint64_t bytes,
                        uint64_t pps, int line)
{
    lm_workload w;
    char why[256] = "";
    memset(&w, 0x5a, sizeof(w));
    int r = lm_workload_parse(spec, &w, why, sizeof(why));
    if (r != 0 || w.kind != kind || w.threads != threads || w.bytes != bytes ||
        w.pages_per_sec != pps || strcmp(w.spec, spec) != 0) {
        fprintf(stderr,
                "%s:%d: workload '%s': %d (%s) kind %d threads %u bytes %llu "
                "pps %llu spec '%.64s'\n",
                __FILE__, line, spec, r, why, (int)w.kind, w.threads, (unsigned long long)w.bytes,
                (unsigned long long)w.pages_per_sec, w.spec);
        lm_test_failures++;
    }
}

static void workload_bad(const char *spec, int line)
{
    lm_workload w;
    char why[256] = "";
    int r = lm_workload_parse(spec, &w, why, sizeof(why));
    if (r != -EINVAL || !why[0]) {
        fprintf(stderr, "%s:%d: workload '%s' accepted (%d)\n", __FILE__, line, spec, r);
        lm_test_failures++;
    }
}

#define WL_OK(spec, kind, threads, bytes, pps)                                                     \
    workload_ok(spec, kind, threads, bytes, pps, __LINE__)
#define WL_BAD(spec) workload_bad(spec, __LINE__)

static void workloads(void)
{
    WL_OK("idle", LM_WL_IDLE, 0, 0, 0);
    WL_OK("fill:256M", LM_WL_FILL, 0, 256ull << 20, 0);
    WL_OK("fill:4096", LM_WL_FILL, 0, 4096, 0);
    WL_OK("fill:1GiB", LM_WL_FILL, 0, 1ull << 30, 0);
    WL_OK("stress:2x64M", LM_WL_STRESS, 2, 64ull << 20, 0);
    WL_OK("stress:1x4K", LM_WL_STRESS, 1, 4096, 0);
    WL_OK("stress:64x1M", LM_WL_STRESS, LM_GUEST_MAX_VCPUS, 1ull << 20, 0);
    WL_OK("random:1000", LM_WL_RANDOM, 0, 0, 1000);
    WL_OK("random:1", LM_WL_RANDOM, 0, 0, 1);

    WL_BAD("");
    WL_BAD("bogus");
    WL_BAD("idle:1");
    WL_BAD("Idle");
    WL_BAD("fill:");
    WL_BAD("fill");
    WL_BAD("fill:abc");
    WL_BAD("fill:-1M");
    WL_BAD("fill:1X");
    WL_BAD("stress:0x1M");
    WL_BAD("stress:65x1M");
    WL_BAD("stress:1000x1M");
    WL_BAD("stress:2x");
    WL_BAD("stress:x1M");
    WL_BAD("stress:2");
    WL_BAD("stress:2x0");
    WL_BAD("stress:2x0M");
    WL_BAD("stress:-2x1M");
    WL_BAD("stress:2x1M1");
    WL_BAD("stress:2y1M");
    WL_BAD("stress:99999999999999999999x1M"); /* count longer than its buffer */
    WL_BAD("random:0");
    WL_BAD("random:");
    WL_BAD("random:-5");
    WL_BAD("random:10/s");
    /* Over-long specs are rejected whole. */
    char longspec[200];
    snprintf(longspec, sizeof(longspec), "fill:%0120d", 1);
    WL_BAD(longspec);

    /* Fit in RAM. */
    lm_workload w;
    char why[256];
    CHECK(lm_workload_parse("fill:256M", &w, why, sizeof(why)) == 0);
    CHECK(lm_workload_check(&w, 256ull << 20, why, sizeof(why)) == 0);
    CHECK(lm_workload_check(&w, 1ull << 30, why, sizeof(why)) == 0);
    why[0] = '\0';
    CHECK(lm_workload_check(&w, (256ull << 20) - 1, why, sizeof(why)) == -EINVAL);
    CHECK(why[0] != '\0');
    CHECK(lm_workload_check(&w, 128ull << 20, why, sizeof(why)) < 0);

    CHECK(lm_workload_parse("stress:2x64M", &w, why, sizeof(why)) == 0);
    CHECK(lm_workload_check(&w, 128ull << 20, why, sizeof(why)) == 0);
    why[0] = '\0';
    CHECK(lm_workload_check(&w, (128ull << 20) - 4096, why, sizeof(why)) == -EINVAL);
    CHECK(why[0] != '\0');
    CHECK(lm_workload_check(&w, 64ull << 20, why, sizeof(why)) < 0);
    CHECK(lm_workload_parse("stress:64x1G", &w, why, sizeof(why)) == 0);
    CHECK(lm_workload_check(&w, 63ull << 30, why, sizeof(why)) < 0);
    CHECK(lm_workload_check(&w, 64ull << 30, why, sizeof(why)) == 0);

    CHECK(lm_workload_parse("idle", &w, why, sizeof(why)) == 0);
    CHECK(lm_workload_check(&w, 4096, why, sizeof(why)) == 0);
    CHECK(lm_workload_parse("random:1000", &w, why, sizeof(why)) == 0);
    CHECK(lm_workload_check(&w, 4096, why, sizeof(why)) == 0);

    /* bytes * threads wraps: 2 x 2^63 = 0 fits in any RAM, and the vCPUs
     * then write far past the end of guest RAM (SIGSEGV). */
    CHECK(lm_workload_parse("stress:2x8388608T", &w, why, sizeof(why)) < 0 ||
          lm_workload_check(&w, 1ull << 30, why, sizeof(why)) < 0);
    /* A region smaller than a page gives each vCPU 0 pages; its cursor
     * never wraps and it writes past the end of guest RAM (SIGSEGV). */
    CHECK(lm_workload_parse("stress:4x100", &w, why, sizeof(why)) < 0 ||
          lm_workload_check(&w, 1ull << 30, why, sizeof(why)) < 0);
    /* " -1" parses as UINT64_MAX pages a second. */
    WL_BAD("random: -1");
}

/* ---- histogram ------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Quantiles of the values against the exact ones, under the same rank rule
 * (the value at index floor(q * n) of the sorted values). */
static void check_quantiles(const char *what, uint64_t *vals, size_t n)
{
    static lm_hist h;
    memset(&h, 0, sizeof(h));
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++) {
        lm_hist_record(&h, vals[i]);
        if (vals[i] > max)
            max = vals[i];
    }
    CHECK_EQ_U64(h.count, n);
    CHECK_EQ_U64(h.max, max);
    qsort(vals, n, sizeof(vals[0]), cmp_u64);
    static const double qs[] = {0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        size_t rank = (size_t)(qs[i] * (double)n);
        if (rank >= n)
            rank = n - 1;
        uint64_t truth = vals[rank], got = lm_hist_quantile(&h, qs[i]);
        /* An upper bound, at most 12.5% above the truth (values < 8 exact). */
        if (got < truth || (long double)got > (long double)truth * 1.125L) {
            fprintf(stderr, "%s: q %.4f = %llu, truth %llu\n", what, qs[i], (unsigned long long)got,
                    (unsigned long long)truth);
            lm_test_failures++;
        }
    }
    CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), max);
    CHECK_EQ_U64(lm_hist_quantile(&h, 2.0), max);
}

static void histogram(void)
{
    static lm_hist h, a, b, all;
    memset(&h, 0, sizeof(h));
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.0), 0);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), 0);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.99), 0);
    CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), 0);

    /* Small values are exact. */
    for (uint64_t v = 0; v < 8; v++) {
        memset(&h, 0, sizeof(h));
        lm_hist_record(&h, v);
        CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), v);
        CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), v);
    }
    /* One value: every quantile is capped at the (exact) max. */
    static const uint64_t singles[] = {
        8, 9, 15, 16, 17, 1000, 123456789, 1ull << 40, (1ull << 63) + 12345, UINT64_MAX};
    for (size_t i = 0; i < sizeof(singles) / sizeof(singles[0]); i++) {
        memset(&h, 0, sizeof(h));
        lm_hist_record(&h, singles[i]);
        CHECK_EQ_U64(lm_hist_quantile(&h, 0.0), singles[i]);
        CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), singles[i]);
        CHECK_EQ_U64(lm_hist_quantile(&h, 1.0), singles[i]);
    }

    enum { N = 100000 };
    static uint64_t vals[N];
    unsigned long long seed = 0x4157;
    for (size_t i = 0; i < N; i++) /* uniform 1..100000 */
        vals[i] = i + 1;
    check_quantiles("uniform", vals, N);
    for (size_t i = 0; i < N; i++) /* random over a wide range */
        vals[i] = test_rand(&seed) % 10000000;
    check_quantiles("random", vals, N);
    for (size_t i = 0; i < N; i++) /* log-uniform: every magnitude up to 2^50 */
        vals[i] = test_rand(&seed) >> (14 + test_rand(&seed) % 50);
    check_quantiles("log-uniform", vals, N);
    for (size_t i = 0; i < N; i++) /* skewed: product of two uniforms */
        vals[i] = (test_rand(&seed) % 3000) * (test_rand(&seed) % 3000);
    check_quantiles("skewed", vals, N);
    for (size_t i = 0; i < N; i++) /* bimodal with a far tail */
        vals[i] = i % 100 == 0 ? 5000000 + test_rand(&seed) % 1000 : 300 + test_rand(&seed) % 50;
    check_quantiles("bimodal", vals, N);
    for (size_t i = 0; i < 1000; i++) /* near the top of the range */
        vals[i] = UINT64_MAX - test_rand(&seed) % (1ull << 60);
    check_quantiles("huge", vals, 1000);

    /* Merge adds counts and buckets: same quantiles as one histogram of all. */
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&all, 0, sizeof(all));
    for (size_t i = 0; i < 30000; i++) {
        uint64_t v = test_rand(&seed) % 50000;
        lm_hist_record(i % 3 ? &a : &b, v);
        lm_hist_record(&all, v);
    }
    lm_hist_record(&b, 9999999);
    lm_hist_record(&all, 9999999);
    uint64_t ca = a.count, cb = b.count, amax = a.max;
    CHECK(amax < 9999999);
    lm_hist_merge(&a, &b);
    CHECK_EQ_U64(a.count, ca + cb);
    CHECK_EQ_U64(a.count, 30001);
    CHECK_EQ_U64(a.max, 9999999);
    CHECK(memcmp(a.bucket, all.bucket, sizeof(a.bucket)) == 0);
    for (double q = 0; q <= 1.0; q += 0.05)
        CHECK_EQ_U64(lm_hist_quantile(&a, q), lm_hist_quantile(&all, q));
    /* Merging an empty one changes nothing; merging into an empty one copies. */
    memset(&h, 0, sizeof(h));
    lm_hist_merge(&a, &h);
    CHECK_EQ_U64(a.count, 30001);
    CHECK_EQ_U64(a.max, 9999999);
    lm_hist_merge(&h, &all);
    CHECK_EQ_U64(h.count, all.count);
    CHECK_EQ_U64(h.max, all.max);
    CHECK_EQ_U64(lm_hist_quantile(&h, 0.5), lm_hist_quantile(&all, 0.5));
    /* The smaller max does not win. */
    memset(&b, 0, sizeof(b));
    lm_hist_record(&b, 1);
    lm_hist_merge(&h, &b);
    CHECK_EQ_U64(h.max, 9999999);
    CHECK_EQ_U64(h.count, all.count + 1);
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_expect(char *got, const char *want, int line)
{
    if (!got || strcmp(got, want) != 0) {
        fprintf(stderr, "%s:%d: JSON\n  got  %s\n  want %s\n", __FILE__, line, got ? got : "(null)",
                want);
        lm_test_failures++;
    }
    free(got);
}

static void json(void)
{
    lm_json j;
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    lm_json_str(&j, "name", "a\"b\\c\nd\te\x01\x1f/\x7f");
    lm_json_u64(&j, "n", 42);
    lm_json_u64(&j, "big", UINT64_MAX);
    lm_json_double(&j, "d", 1.5);
    lm_json_double(&j, "neg", -0.25);
    lm_json_double(&j, "nan", NAN);
    lm_json_double(&j, "inf", INFINITY);
    lm_json_bool(&j, "t", true);
    lm_json_bool(&j, "f", false);
    lm_json_str(&j, "null_str", NULL);
    lm_json_object_begin(&j, "inner");
    lm_json_u64(&j, "x", 1);
    lm_json_array_begin(&j, "arr");
    lm_json_u64(&j, NULL, 1);
    lm_json_str(&j, NULL, "s");
    lm_json_bool(&j, NULL, false);
    lm_json_object_begin(&j, NULL);
    lm_json_double(&j, "y", 2.0);
    lm_json_object_end(&j);
    lm_json_array_begin(&j, NULL);
    lm_json_array_end(&j);
    lm_json_array_end(&j);
    lm_json_object_begin(&j, "empty");
    lm_json_object_end(&j);
    lm_json_object_end(&j);
    lm_json_str(&j, "k\"ey", "v");
    lm_json_array_begin(&j, "last");
    lm_json_array_end(&j);
    lm_json_object_end(&j);
    json_expect(lm_json_finish(&j),
                "{\"name\":\"a\\\"b\\\\c\\u000ad\\u0009e\\u0001\\u001f/\x7f\","
                "\"n\":42,\"big\":18446744073709551615,\"d\":1.500,\"neg\":-0.250,"
                "\"nan\":null,\"inf\":null,\"t\":true,\"f\":false,\"null_str\":\"\","
                "\"inner\":{\"x\":1,\"arr\":[1,\"s\",false,{\"y\":2.000},[]],\"empty\":{}},"
                "\"k\\\"ey\":\"v\",\"last\":[]}\n",
                __LINE__);

    /* A top-level array. */
    lm_json_init(&j);
    lm_json_array_begin(&j, NULL);
    for (unsigned i = 0; i < 3; i++)
        lm_json_u64(&j, NULL, i);
    lm_json_array_end(&j);
    json_expect(lm_json_finish(&j), "[0,1,2]\n", __LINE__);

    /* Growth well past the first allocation. */
    enum { LONG = 10000 };
    char *s = malloc(LONG + 1), *want = malloc(LONG + 64);
    CHECK(s && want);
    if (s && want) {
        for (size_t i = 0; i < LONG; i++)
            s[i] = (char)('a' + i % 26);
        s[LONG] = '\0';
        lm_json_init(&j);
        lm_json_object_begin(&j, NULL);
        lm_json_str(&j, "s", s);
        for (unsigned i = 0; i < 500; i++)
            lm_json_u64(&j, "k", i);
        lm_json_object_end(&j);
        char *out = lm_json_finish(&j);
        CHECK(out != NULL);
        if (out) {
            snprintf(want, LONG + 64, "{\"s\":\"%s\",\"k\":0,", s);
            CHECK(strncmp(out, want, strlen(want)) == 0);
            size_t len = strlen(out);
            CHECK(len > 9 && strcmp(out + len - 9, "\"k\":499}\n") == 0);
            CHECK(strstr(out, "\"k\":250,\"k\":251,") != NULL);
        }
        free(out);
    }
    free(s);
    free(want);

    /* Unbalanced documents fail. */
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    CHECK(lm_json_finish(&j) == NULL); /* not closed */
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    lm_json_object_end(&j);
    lm_json_object_end(&j); /* one too many */
    CHECK(lm_json_finish(&j) == NULL);
    /* Nesting deeper than LM_JSON_MAX_DEPTH fails; exactly that deep works. */
    lm_json_init(&j);
    for (int i = 0; i < LM_JSON_MAX_DEPTH; i++)
        lm_json_array_begin(&j, NULL);
    for (int i = 0; i < LM_JSON_MAX_DEPTH; i++)
        lm_json_array_end(&j);
    char *deep = lm_json_finish(&j);
    CHECK(deep != NULL && strlen(deep) == 2 * LM_JSON_MAX_DEPTH + 1);
    free(deep);
    lm_json_init(&j);
    for (int i = 0; i < LM_JSON_MAX_DEPTH + 1; i++)
        lm_json_array_begin(&j, NULL);
    for (int i = 0; i < LM_JSON_MAX_DEPTH + 1; i++)
        lm_json_array_end(&j);
    CHECK(lm_json_finish(&j) == NULL);
}

/* /proc/thread-self/schedstat as the kernel writes it, and what is not. */
static void schedstat(void)
{
    uint64_t run = 7, wait = 7;
    CHECK(lm_parse_schedstat("94040 53218 2\n", &run, &wait) == 0);
    CHECK_EQ_U64(run, 94040);
    CHECK_EQ_U64(wait, 53218);
    CHECK(lm_parse_schedstat("18446744073709551615 0 1", &run, &wait) == 0);
    CHECK_EQ_U64(run, UINT64_MAX);
    CHECK_EQ_U64(wait, 0);
    static const char *const bad[] = {"", "1 2", "1 2 x", "a b c", "1 2 3 4", "1,2,3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run = wait = 7;
        CHECK(lm_parse_schedstat(bad[i], &run, &wait) == -EINVAL);
        CHECK(run == 7 && wait == 7);
    }
}

int main(void)
{
    sizes();
    schedstat();
    seconds();
    format_bytes();
    workloads();
    histogram();
    json();
    TEST_DONE();
}
