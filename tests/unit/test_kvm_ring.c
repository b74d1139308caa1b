/*
 * The kvm-ring tracker against a real KVM guest with a dirty ring
 * (tests/unit/kvm_fixture.h): a vCPU that increments one byte in each of a
 * set of pages per pass. Exact counts: after arming, a pass over pages P is
 * reported as exactly P (pages below KVM_FX_DATA are the fixture's own,
 * allowed as noise); a read reports them again (the ring hands a page once:
 * the tracker keeps it pending); a re-arm takes them until written again; a
 * chunked re-arm takes only its chunk, across the slot boundary; a write
 * between a harvest and KVM_RESET_DIRTY_RINGS is reported by that sync or
 * the next; the VMM's own writes are not seen; randomized passes. A ring
 * smaller than a pass: the vCPU exits with KVM_EXIT_DIRTY_RING_FULL, KVM
 * keeps exiting until a harvest, and no page is lost. A guest writing on
 * its own thread (ring-full waits included) while syncs re-arm and a copy
 * follows them. lm_kvm_attach_rings' checks. Timings of protect-all and of
 * a harvest are printed. Exit 77 when /dev/kvm, its dirty ring, or the
 * guest is missing.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dirty/tracker.h"
#include "kvm_fixture.h"
#include "util/sys.h"

#include "kvm_tracker_check.h"

#define RING  4096u /* entries: more than any pass of the exact tests */
#define SMALL 1024u /* entries: less than a pass (KVM keeps 64+ in reserve) */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static lm_tracker *make_tracker(unsigned nslots, bool rings, lm_err *err)
{
    lm_track_range range = {.host = fx.mem, .len = MEM, .npages = NPAGES};
    lm_track_kvm_slot slots[2] = {
        {.slot = 0, .range = 0, .first = 0, .npages = SLOTPGS, .guest_phys = 0},
        {.slot = 1, .range = 0, .first = SLOTPGS, .npages = SLOTPGS, .guest_phys = MEM / 2}};
    void *ring = fx.ring;
    lm_track_kvm kvm = {.vm_fd = fx.vm_fd,
                        .nslots = nslots,
                        .slots = slots,
                        .nrings = rings ? 1 : 0,
                        .rings = &ring,
                        .ring_entries = fx.ring_entries};
    lm_tracker *t = NULL;
    return lm_tracker_create(LM_TRACKER_KVM_RING, &range, 1, &kvm, &t, err) < 0 ? NULL : t;
}

/* A guest pass just before the next KVM_RESET_DIRTY_RINGS: a write between
 * a harvest and the reset. */
static uint64_t inject_first, inject_count;

static int hook_ioctl(int fd, unsigned long request, void *arg)
{
    if (request == KVM_RESET_DIRTY_RINGS && inject_count) {
        uint64_t n = inject_count;
        inject_count = 0;
        CHECK(kvm_fixture_pass(&fx, inject_first * PG, PG, n) == 0);
    }
    return lm__sys_real.ioctl(fd, request, arg);
}

static void exact_counts(void)
{
    lm_err err;
    lm_err_init(&err);
    pass(NOISE, 1, 100);
    fx.mem[3000 * PG] = 1;
    CHECK(make_tracker(1, true, &err) == NULL);
    CHECK(err.code == -EINVAL && strstr(err.msg, "no KVM slot"));
    lm_err_reset(&err);
    CHECK(make_tracker(2, false, &err) == NULL);
    CHECK(err.code == -EINVAL && strstr(err.msg, "lm_kvm_attach_rings"));
    lm_err_reset(&err);
    lm_tracker *t = make_tracker(2, true, &err);
    if (!t)
        TEST_SKIP(err.msg);
    fprintf(stderr, "testing %s\n", lm_tracker_name(t));

    /* Unarmed pages count as dirty; arming [0, 1000) takes those. */
    lm_word *pop = lm_bitmap_new(NPAGES), *part = lm_bitmap_new(NPAGES);
    tracker_arm_contract(t, pop, part);

    tracker_contract(t, part);

    /* Between the harvest and the reset: 605..609 were harvested and still
     * writable (this sync reports them, read after it), 610..614 fault and
     * are logged for the next sync. */
    static lm_sys_ops hooks;
    hooks = lm__sys_real;
    hooks.ioctl = hook_ioctl;
    CHECK(lm__sys_set(&hooks) == 0);
    pass(600, 1, 10);
    inject_first = 605;
    inject_count = 10;
    sync_into(t, 0, NPAGES, true);
    CHECK_EQ_U64(inject_count, 0);
    lm__sys_reset();
    check_exact("write between harvest and reset");
    lm_bitmap_clear_all(want, NPAGES);
    for (uint64_t p = 610; p < 615; p++)
        lm_bit_set(want, p);
    sync_into(t, 0, NPAGES, true);
    check_exact("after a write between harvest and reset");
    lm_bitmap_clear_all(want, NPAGES);

    /* The VMM's own writes are not KVM's: not reported (documented). */
    fx.mem[3000 * PG] += 1;
    sync_into(t, 0, NPAGES, true);
    check_exact("VMM write not seen");

    /* Randomized: passes, then a read and chunked re-arms. */
    unsigned long long seed = 0x72696e67;
    for (int round = 0; round < 30; round++) {
        for (unsigned i = 0, n = 1 + (unsigned)(test_rand(&seed) % 3); i < n; i++) {
            uint64_t stride = 1 + test_rand(&seed) % 9, count = 1 + test_rand(&seed) % 400;
            uint64_t span = (count - 1) * stride + 1;
            pass(NOISE + test_rand(&seed) % (NPAGES - NOISE - span), stride, count);
        }
        sync_into(t, 0, NPAGES, false);
        check_exact("random read");
        lm_word *acc = lm_bitmap_new(NPAGES);
        uint64_t chunk = 1 + test_rand(&seed) % 1500;
        for (uint64_t first = 0; first < NPAGES; first += chunk)
            CHECK(lm_tracker_sync(t, 0, first, first + chunk > NPAGES ? NPAGES - first : chunk, acc,
                                  true, &err) == 0);
        memcpy(got, acc, NPAGES / 8);
        check_exact("random chunked re-arm");
        lm_bitmap_free(acc);
        lm_bitmap_clear_all(want, NPAGES);
        sync_into(t, 0, NPAGES, false);
        check_exact("random after re-arm");
    }
    lm_tracker_destroy(t);
    /* Logging is off again: a pass leaves no entry in the ring. */
    CHECK(kvm_fixture_pass(&fx, KVM_FX_DATA, PG, 50) == 0);
    uint64_t dirty = 0;
    for (uint32_t i = 0; i < fx.ring_entries; i++)
        dirty +=
            (__atomic_load_n(&fx.ring[i].flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY) != 0;
    CHECK_EQ_U64(dirty, 0);
    lm_bitmap_free(pop);
    lm_bitmap_free(part);
}

/* A ring smaller than a pass. On the first full exit KVM is run again
 * without a harvest: it must exit again at once (no page written, none
 * lost). From then on each full exit harvests (a read). */
static lm_tracker *full_t;
static uint64_t full_seen, full_unharvested;

static int harvest_on_full(kvm_fixture *f)
{
    (void)f;
    if (full_seen++ < 3) { /* not harvested: KVM must refuse to run on */
        full_unharvested++;
        return 0;
    }
    lm_err err;
    lm_err_init(&err);
    lm_word *scratch = lm_bitmap_new(NPAGES);
    int ret = lm_tracker_sync(full_t, 0, 0, NPAGES, scratch, false, &err);
    lm_bitmap_free(scratch);
    return ret;
}

static void ring_full(void)
{
    lm_err err;
    lm_err_init(&err);
    full_t = make_tracker(2, true, &err);
    CHECK(full_t != NULL);
    if (!full_t)
        return;
    CHECK(lm_tracker_arm(full_t, 0, 0, NPAGES, NULL, &err) == 0);
    lm_bitmap_clear_all(want, NPAGES);
    fx.on_ring_full = harvest_on_full;
    uint64_t full0 = fx.ring_full;
    pass(NOISE, 1, 3000); /* about three rings' worth */
    pass(NOISE + 1, 2, 400);
    fx.on_ring_full = NULL;
    uint64_t fulls = fx.ring_full - full0;
    fprintf(stderr, "ring full: %llu exits for %u-entry ring, 3 of them without a harvest\n",
            (unsigned long long)fulls, fx.ring_entries);
    CHECK(fulls >= 4 && full_unharvested == 3);
    sync_into(full_t, 0, NPAGES, false);
    check_exact("ring full: every page");
    sync_into(full_t, 0, NPAGES, true);
    check_exact("ring full: re-arm");
    lm_bitmap_clear_all(want, NPAGES);
    sync_into(full_t, 0, NPAGES, false);
    check_exact("ring full: after re-arm");
    lm_tracker_destroy(full_t);
}

/* The guest on a thread (full exits sleep 100 us), the main thread
 * re-arming and copying what each sync reports: the copy must end equal
 * to RAM. */
static _Atomic bool writer_quit, writer_failed;
static _Atomic uint64_t writer_passes;

static void *writer_main(void *arg)
{
    (void)arg;
    for (uint64_t i = 0; !atomic_load(&writer_quit); i++) {
        if (kvm_fixture_pass(&fx, (NOISE + (i % 97) * 29) * PG, 2 * PG, 300 + (i % 3) * 100) < 0) {
            atomic_store(&writer_failed, true);
            return (void *)1;
        }
        atomic_fetch_add(&writer_passes, 1);
    }
    return NULL;
}

static void concurrent(void)
{
    lm_err err;
    lm_err_init(&err);
    lm_tracker *t = make_tracker(2, true, &err);
    CHECK(t != NULL);
    if (!t)
        return;
    uint8_t *copy = malloc(MEM);
    for (uint64_t first = 0; first < NPAGES; first += 700) {
        uint64_t n = first + 700 > NPAGES ? NPAGES - first : 700;
        CHECK(lm_tracker_arm(t, 0, first, n, NULL, &err) == 0);
        memcpy(copy + first * PG, fx.mem + first * PG, n * PG);
    }
    pthread_t w;
    uint64_t full0 = fx.ring_full, reported = 0;
    CHECK(pthread_create(&w, NULL, writer_main, NULL) == 0);
    int round = 0;
    for (; (round < 300 || atomic_load(&writer_passes) < 300) && !atomic_load(&writer_failed);
         round++) {
        lm_bitmap_clear_all(got, NPAGES);
        if (round % 2) {
            CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, true, &err) == 0);
        } else {
            CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
            for (uint64_t first = 0; first < NPAGES; first += 500)
                CHECK(lm_tracker_sync(t, 0, first, first + 500 > NPAGES ? NPAGES - first : 500, got,
                                      true, &err) == 0);
        }
        reported += lm_bitmap_count(got, NPAGES);
        for (uint64_t p = lm_bitmap_next_set(got, NPAGES, 0); p < NPAGES;
             p = lm_bitmap_next_set(got, NPAGES, p + 1))
            memcpy(copy + p * PG, fx.mem + p * PG, PG);
        usleep(round % 7 ? 200 : 3000); /* now and then long enough to fill the ring */
    }
    atomic_store(&writer_quit, true);
    void *wret;
    pthread_join(w, &wret);
    CHECK(wret == NULL);
    lm_bitmap_clear_all(got, NPAGES);
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
    for (uint64_t p = lm_bitmap_next_set(got, NPAGES, 0); p < NPAGES;
         p = lm_bitmap_next_set(got, NPAGES, p + 1))
        memcpy(copy + p * PG, fx.mem + p * PG, PG);
    uint64_t differ = 0;
    for (uint64_t p = 0; p < NPAGES; p++)
        differ += memcmp(copy + p * PG, fx.mem + p * PG, PG) != 0;
    fprintf(stderr,
            "concurrent: %llu guest passes, %llu ring-full exits, %llu pages reported in %d "
            "rounds, %llu differ\n",
            (unsigned long long)atomic_load(&writer_passes),
            (unsigned long long)(fx.ring_full - full0), (unsigned long long)reported, round,
            (unsigned long long)differ);
    CHECK(reported > 0);
    CHECK_EQ_U64(differ, 0);
    free(copy);
    lm_tracker_destroy(t);
}

/* lm_kvm_attach_rings' checks, through the public API. */
static void attach_checks(void)
{
    lm_ctx *ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 7, "ram", fx.mem, MEM, 0) == 0);
    lm_kvm_slot ok[2] = {{.slot = 0, .block_id = 7, .size = MEM / 2},
                         {.slot = 1,
                          .block_id = 7,
                          .block_offset = MEM / 2,
                          .size = MEM / 2,
                          .guest_phys = MEM / 2}};
    void *rings[2] = {fx.ring, NULL};
    CHECK(lm_kvm_attach_rings(ctx, rings, 1, fx.ring_entries) == 0);
    CHECK(lm_kvm_attach(ctx, fx.vm_fd, ok, 2) == 0); /* keeps the rings */
    CHECK(lm_kvm_attach_rings(ctx, rings, 2, fx.ring_entries) == -EINVAL &&
          strstr(lm_last_error(ctx), "vCPU 1's ring is NULL"));
    CHECK(lm_kvm_attach_rings(ctx, rings, 1, 1000) == -EINVAL &&
          strstr(lm_last_error(ctx), "power of two"));
    CHECK(lm_kvm_attach_rings(ctx, rings, 1, 128) == -EINVAL);
    CHECK(lm_kvm_attach_rings(ctx, rings, 1, 131072) == -EINVAL);
    CHECK(lm_kvm_attach_rings(ctx, NULL, 1, 4096) == -EINVAL);
    CHECK(lm_kvm_attach_rings(ctx, rings, 0, 4096) == -EINVAL);
    CHECK(lm_kvm_attach_rings(ctx, NULL, 0, 0) == 0); /* detached */
    lm_params p;
    lm_params_init(&p);
    p.tracker = LM_TRACKER_KVM_RING;
    CHECK(lm_migrate(ctx, "unix:/nonexistent/sock", &p) == -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "lm_kvm_attach_rings") != NULL);
    lm_ctx_free(ctx);
}

/* What protect-all and a harvest cost (printed, not checked): 256 MiB,
 * one slot, populated by the guest first. */
static void timings(void)
{
    kvm_fixture big;
    char why[256];
    const uint64_t mem = 256u << 20, pages = mem / PG - NOISE;
    if (kvm_fixture_open_ring(&big, mem, 1, 16384, why, sizeof(why)) < 0)
        return;
    double t0 = now_ms();
    CHECK(kvm_fixture_pass(&big, KVM_FX_DATA, PG, pages) == 0);
    double t1 = now_ms();
    CHECK(kvm_fixture_pass(&big, KVM_FX_DATA, PG, 2600) == 0);
    double t2 = now_ms();
    lm_track_range range = {.host = big.mem, .len = mem, .npages = mem / PG};
    lm_track_kvm_slot slot = {.npages = mem / PG};
    void *ring = big.ring;
    lm_track_kvm kvm = {.vm_fd = big.vm_fd,
                        .nslots = 1,
                        .slots = &slot,
                        .nrings = 1,
                        .rings = &ring,
                        .ring_entries = big.ring_entries};
    lm_tracker *t = NULL;
    lm_err err;
    lm_err_init(&err);
    CHECK(lm_tracker_create(LM_TRACKER_KVM_RING, &range, 1, &kvm, &t, &err) == 0);
    double t3 = now_ms();
    CHECK(t && lm_tracker_arm(t, 0, 0, mem / PG, NULL, &err) == 0);
    double t4 = now_ms();
    CHECK(kvm_fixture_pass(&big, KVM_FX_DATA, PG, 2600) == 0);
    double t5 = now_ms();
    lm_word *map = lm_bitmap_new(mem / PG);
    CHECK(t && lm_tracker_sync(t, 0, 0, mem / PG, map, true, &err) == 0);
    double t6 = now_ms();
    uint64_t n = lm_bitmap_count(map, mem / PG);
    fprintf(stderr,
            "timings (256 MiB): first touch %.1f ms for %llu pages; a pass of 2600 mapped pages "
            "%.2f ms untracked; start (protect-all) %.2f ms; arm all %.2f ms; the pass after "
            "protect %.2f ms; harvest+reset %.3f ms for %llu pages\n",
            t1 - t0, (unsigned long long)pages, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5,
            (unsigned long long)n);
    lm_bitmap_free(map);
    lm_tracker_destroy(t);
    kvm_fixture_close(&big);
}

int main(void)
{
    char why[256];
    lm_err err;
    lm_err_init(&err);
    if (lm_tracker_kvm_ring_ops.probe(&err) < 0)
        TEST_SKIP(err.msg);
    if (kvm_fixture_open_ring(&fx, MEM, 2, RING, why, sizeof(why)) < 0)
        TEST_SKIP(why);
    if (kvm_fixture_pass(&fx, KVM_FX_DATA, PG, 1) < 0 || fx.mem[KVM_FX_DATA] != 1)
        TEST_SKIP("KVM does not run the test guest (see docs/DIRTY-TRACKING.md)");
    fx.mem[KVM_FX_DATA] = 0;
    alarm(240); /* a ring never harvested would keep the vCPU waiting */
    want = lm_bitmap_new(NPAGES);
    got = lm_bitmap_new(NPAGES);
    exact_counts();
    attach_checks();
    kvm_fixture_close(&fx);
    /* A small ring: full exits. */
    if (kvm_fixture_open_ring(&fx, MEM, 2, SMALL, why, sizeof(why)) < 0) {
        fprintf(stderr, "%s\n", why);
        CHECK(!"a 1024-entry ring");
    } else {
        ring_full();
        concurrent();
        kvm_fixture_close(&fx);
    }
    timings();
    lm_bitmap_free(want);
    lm_bitmap_free(got);
    TEST_DONE();
}
