/*
 * What the KVM tracker tests (test_kvm_log.c, test_kvm_ring.c) share: a
 * two-slot fixture guest, the pages a test expects ('want') and those the
 * tracker reported ('got'), guest passes that record what they write, and
 * the exact comparison (pages below KVM_FX_DATA are the fixture's own: page
 * tables and code, which KVM may log itself; allowed, and only those).
 * Include once, after check.h and kvm_fixture.h.
 */
#ifndef LM_TEST_KVM_TRACKER_CHECK_H
#define LM_TEST_KVM_TRACKER_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "dirty/tracker.h"

#define MEM     (16u << 20) /* two 8 MiB slots */
#define NPAGES  (MEM / 4096)
#define NOISE   (KVM_FX_DATA / 4096) /* pages below are the fixture's own */
#define PG      4096ull
#define SLOTPGS (NPAGES / 2)

static kvm_fixture fx;
static lm_word *want, *got;

/* Pages the fixture itself may have logged: page tables, code. */
static bool noise_ok(uint64_t p)
{
    return (p >= KVM_FX_PT_FIRST && p < KVM_FX_PT_FIRST + KVM_FX_PT_PAGES) || p == KVM_FX_CODE / PG;
}

/* got == want on the data pages; below them only fixture pages. */
static void check_exact(const char *what)
{
    uint64_t missing = 0, extra = 0, noise = 0;
    for (uint64_t p = 0; p < NPAGES; p++) {
        bool g = lm_bit_test(got, p), w = lm_bit_test(want, p);
        if (p < NOISE) {
            if (g && !noise_ok(p)) {
                fprintf(stderr, "%s: page %llu below the data area reported\n", what,
                        (unsigned long long)p);
                extra++;
            }
            noise += g;
            continue;
        }
        if (g && !w && extra++ < 5)
            fprintf(stderr, "%s: page %llu reported, not written\n", what, (unsigned long long)p);
        if (w && !g && missing++ < 5)
            fprintf(stderr, "%s: page %llu written, not reported\n", what, (unsigned long long)p);
    }
    if (missing || extra)
        fprintf(stderr, "%s: %llu missing, %llu extra (%llu fixture pages)\n", what,
                (unsigned long long)missing, (unsigned long long)extra, (unsigned long long)noise);
    CHECK_EQ_U64(missing, 0);
    CHECK_EQ_U64(extra, 0);
}

/* A guest pass over count pages from page 'first', 'stride' pages apart;
 * adds them to want. */
static void pass(uint64_t first, uint64_t stride, uint64_t count)
{
    CHECK(kvm_fixture_pass(&fx, first * PG, stride * PG, count) == 0);
    for (uint64_t i = 0; i < count; i++)
        lm_bit_set(want, first + i * stride);
}

static void sync_into(lm_tracker *t, uint64_t first, uint64_t count, bool rearm)
{
    lm_err err;
    lm_err_init(&err);
    lm_bitmap_clear_all(got, NPAGES);
    int ret = lm_tracker_sync(t, 0, first, count, got, rearm, &err);
    if (ret < 0)
        fprintf(stderr, "sync: %s\n", err.msg);
    CHECK(ret == 0);
}

/* want restricted to [first, first+count), then cleared there. */
static void want_only(uint64_t first, uint64_t count, lm_word *out)
{
    lm_bitmap_clear_all(out, NPAGES);
    for (uint64_t p = first; p < first + count; p++)
        if (lm_bit_test(want, p))
            lm_bit_set(out, p);
}

/* Arming, on a fresh tracker after the fixture wrote pages NOISE..NOISE+99
 * (guest) and page 3000 (VMM): unarmed pages count as dirty; arming [0,
 * 1000) takes those; arming the rest in uneven chunks across the slot
 * boundary reports as populated exactly what was written; then a read
 * reports nothing. pop and part: scratch maps of NPAGES bits. */
static void tracker_arm_contract(lm_tracker *t, lm_word *pop, lm_word *part)
{
    lm_err err;
    lm_err_init(&err);
    CHECK(lm_tracker_arm(t, 0, 0, 1000, pop, &err) == 0);
    lm_bitmap_clear_all(want, NPAGES);
    sync_into(t, 0, NPAGES, false);
    CHECK_EQ_U64(lm_bitmap_count_range(got, NOISE, 1000), 0);
    CHECK_EQ_U64(lm_bitmap_count_range(got, 1000, NPAGES), NPAGES - 1000);
    for (uint64_t first = 1000; first < NPAGES; first += 700) {
        uint64_t n = first + 700 > NPAGES ? NPAGES - first : 700;
        lm_bitmap_clear_all(part, 700);
        CHECK(lm_tracker_arm(t, 0, first, n, part, &err) == 0);
        for (uint64_t p = 0; p < n; p++)
            if (lm_bit_test(part, p))
                lm_bit_set(pop, first + p);
    }
    /* populated: what the guest and the VMM wrote, nothing else. */
    CHECK_EQ_U64(lm_bitmap_count_range(pop, NOISE, NPAGES), 101);
    CHECK_EQ_U64(lm_bitmap_count_range(pop, NOISE, NOISE + 100), 100);
    CHECK(lm_bit_test(pop, 3000));
    sync_into(t, 0, NPAGES, false);
    check_exact("after arming");
}

/* The contract every KVM tracker keeps (dirty/tracker.h), on a tracker armed
 * over all of the fixture's RAM with nothing written since: a pass across
 * the slot boundary is reported exactly, and again by a read; a re-arm
 * takes it; chunked re-arms (cutting KVM's 64-page words, across the slots)
 * take only their chunk; a read of a range reports nothing outside it; a
 * page written after a re-arm is reported again. part: a scratch map. */
static void tracker_contract(lm_tracker *t, lm_word *part)
{
    pass(1800, 3, 300);
    sync_into(t, 0, NPAGES, false);
    check_exact("read");
    sync_into(t, 0, NPAGES, false);
    check_exact("read again");
    sync_into(t, 0, NPAGES, true);
    check_exact("re-arm");
    lm_bitmap_clear_all(want, NPAGES);
    sync_into(t, 0, NPAGES, false);
    check_exact("after re-arm");

    pass(NOISE + 4, 5, 700);
    static const uint64_t chunks[][2] = {{1000, 700}, {2000, 100}, {NOISE, 1}, {3755, 1}};
    for (unsigned c = 0; c < 4; c++) {
        uint64_t first = chunks[c][0], n = chunks[c][1];
        sync_into(t, first, n, true);
        want_only(first, n, part);
        CHECK(!memcmp(got, part, NPAGES / 8));
        CHECK_EQ_U64(lm_bitmap_count(got, NPAGES), lm_bitmap_count(part, NPAGES));
        for (uint64_t p = first; p < first + n; p++)
            lm_bit_clear(want, p);
        sync_into(t, 0, NPAGES, false);
        check_exact("chunk re-armed");
    }
    sync_into(t, 1500, 1000, false);
    CHECK_EQ_U64(lm_bitmap_count_range(got, 0, 1500) + lm_bitmap_count_range(got, 2500, NPAGES), 0);
    want_only(1500, 1000, part);
    CHECK(!memcmp(got, part, NPAGES / 8));
    sync_into(t, 0, NPAGES, true);
    check_exact("rest re-armed");
    lm_bitmap_clear_all(want, NPAGES);

    pass(2040, 1, 16);
    sync_into(t, 0, NPAGES, true);
    check_exact("written again");
    lm_bitmap_clear_all(want, NPAGES);
}

#endif
