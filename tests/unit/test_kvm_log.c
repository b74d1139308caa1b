/*
 * The kvm-log tracker against a real KVM guest (tests/unit/kvm_fixture.h):
 * a vCPU that increments one byte in each of a set of pages per pass. Exact
 * counts: after arming, a pass over pages P is reported as exactly P (pages
 * below KVM_FX_DATA are the fixture's page tables and code, which KVM may
 * log on its own: allowed, and only those); a read reports them again; a
 * re-arm takes them until they are written again; a chunked re-arm takes
 * only its chunk, including chunks that cut KVM's 64-page words and a slot
 * boundary; a sync never reports pages outside its range; a write the VMM
 * makes itself is not reported (the documented limitation). Then randomized
 * passes and chunked re-arms; a guest writing on its own thread while syncs
 * re-arm and a copy follows what they report (it must end equal to RAM); the attach checks of the
 * public API, and lm_migrate of the running guest with kvm-log and verification, whole and in
 * 700-page chunks. Exit 77 when /dev/kvm is absent, lacks manual protect, or will not run the
 * guest.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dirty/tracker.h"
#include "kvm_fixture.h"
#include "util/sys.h"

#include "kvm_tracker_check.h"

/* A guest pass run just before the next KVM_CLEAR_DIRTY_LOG: a write
 * between a sync's KVM_GET_DIRTY_LOG and its clear. */
static uint64_t inject_first, inject_count;

static int hook_ioctl(int fd, unsigned long request, void *arg)
{
    if (request == KVM_CLEAR_DIRTY_LOG && inject_count) {
        uint64_t n = inject_count;
        inject_count = 0;
        CHECK(kvm_fixture_pass(&fx, inject_first * PG, PG, n) == 0);
    }
    return lm__sys_real.ioctl(fd, request, arg);
}

static lm_tracker *make_tracker(unsigned nslots, lm_err *err)
{
    lm_track_range range = {.host = fx.mem, .len = MEM, .npages = NPAGES};
    lm_track_kvm_slot slots[2] = {
        {.slot = 0, .range = 0, .first = 0, .npages = SLOTPGS, .guest_phys = 0},
        {.slot = 1, .range = 0, .first = SLOTPGS, .npages = SLOTPGS, .guest_phys = MEM / 2}};
    lm_track_kvm kvm = {.vm_fd = fx.vm_fd, .nslots = nslots, .slots = slots};
    lm_tracker *t = NULL;
    return lm_tracker_create(LM_TRACKER_KVM_LOG, &range, 1, &kvm, &t, err) < 0 ? NULL : t;
}

static void exact_counts(void)
{
    lm_err err;
    lm_err_init(&err);
    /* Data before tracking: the guest wrote 100 pages, the VMM one. */
    pass(NOISE, 1, 100);
    fx.mem[3000 * PG] = 1;

    /* A slot short: the second half of RAM is in no slot. */
    CHECK(make_tracker(1, &err) == NULL);
    CHECK(err.code == -EINVAL && strstr(err.msg, "no KVM slot"));
    lm_err_reset(&err);

    lm_tracker *t = make_tracker(2, &err);
    if (!t)
        TEST_SKIP(err.msg);
    fprintf(stderr, "testing %s\n", lm_tracker_name(t));

    /* Arm only [0, 1000): everything else is still 'initially set'. */
    lm_word *pop = lm_bitmap_new(NPAGES), *part = lm_bitmap_new(NPAGES);
    tracker_arm_contract(t, pop, part);

    tracker_contract(t, part);

    /* Written between a re-arming sync's read and its clear: a page the
     * read saw is reported (its new content is read after the sync); a
     * page it did not see stays logged for the next sync. */
    static lm_sys_ops hooks;
    hooks = lm__sys_real;
    hooks.ioctl = hook_ioctl;
    CHECK(lm__sys_set(&hooks) == 0);
    pass(600, 1, 10);
    inject_first = 605;
    inject_count = 10; /* 605..614: half seen by the read */
    sync_into(t, 0, NPAGES, true);
    CHECK_EQ_U64(inject_count, 0);
    lm__sys_reset();
    check_exact("write between read and clear");
    lm_bitmap_clear_all(want, NPAGES);
    for (uint64_t p = 610; p < 615; p++)
        lm_bit_set(want, p);
    sync_into(t, 0, NPAGES, true);
    check_exact("after a write between read and clear");
    lm_bitmap_clear_all(want, NPAGES);

    /* The VMM's own writes are not KVM's: not reported (documented). */
    fx.mem[3000 * PG] += 1;
    fx.mem[3500 * PG] = 1;
    sync_into(t, 0, NPAGES, true);
    check_exact("VMM write not seen");

    /* Randomized: several passes, then a read and chunked re-arms. */
    unsigned long long seed = 0x6b766d;
    for (int round = 0; round < 30; round++) {
        unsigned passes = 1 + (unsigned)(test_rand(&seed) % 3);
        for (unsigned i = 0; i < passes; i++) {
            uint64_t stride = 1 + test_rand(&seed) % 9, count = 1 + test_rand(&seed) % 400;
            uint64_t span = (count - 1) * stride + 1;
            uint64_t first = NOISE + test_rand(&seed) % (NPAGES - NOISE - span);
            pass(first, stride, count);
        }
        sync_into(t, 0, NPAGES, false);
        check_exact("random read");
        uint64_t chunk = 64 + test_rand(&seed) % 1500;
        lm_word *acc = lm_bitmap_new(NPAGES);
        for (uint64_t first = 0; first < NPAGES; first += chunk) {
            uint64_t n = first + chunk > NPAGES ? NPAGES - first : chunk;
            lm_err_reset(&err);
            CHECK(lm_tracker_sync(t, 0, first, n, acc, true, &err) == 0);
        }
        memcpy(got, acc, NPAGES / 8);
        check_exact("random chunked re-arm");
        lm_bitmap_free(acc);
        lm_bitmap_clear_all(want, NPAGES);
        sync_into(t, 0, NPAGES, false);
        check_exact("random after re-arm");
    }
    lm_tracker_destroy(t);
    /* Logging is off again: the slots are as the VMM made them. */
    struct kvm_dirty_log g = {.slot = 0, .dirty_bitmap = got};
    CHECK(ioctl(fx.vm_fd, KVM_GET_DIRTY_LOG, &g) < 0 && errno == ENOENT);
    lm_bitmap_free(pop);
    lm_bitmap_free(part);
}

/* The guest runs on a thread while the main thread re-arms (whole, or in
 * chunks after a read) and copies what each sync reports, as a migration
 * does; after a last read with the guest stopped the copy must equal guest
 * RAM: no write is lost between KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG. */
static _Atomic bool writer_quit;
static _Atomic uint64_t writer_passes;
static _Atomic bool writer_failed;

static void *writer_main(void *arg)
{
    (void)arg;
    for (uint64_t i = 0; !atomic_load(&writer_quit); i++)
        if (kvm_fixture_pass(&fx, (NOISE + (i % 97) * 29) * PG, 3 * PG, 300) < 0) {
            atomic_store(&writer_failed, true);
            return (void *)1;
        } else
            atomic_fetch_add(&writer_passes, 1);
    return NULL;
}

static void copy_reported(uint8_t *copy, const lm_word *map)
{
    for (uint64_t p = lm_bitmap_next_set(map, NPAGES, 0); p < NPAGES;
         p = lm_bitmap_next_set(map, NPAGES, p + 1))
        memcpy(copy + p * PG, fx.mem + p * PG, PG);
}

static void concurrent(void)
{
    lm_err err;
    lm_err_init(&err);
    lm_tracker *t = make_tracker(2, &err);
    CHECK(t != NULL);
    if (!t)
        return;
    uint8_t *copy = malloc(MEM);
    lm_bitmap_clear_all(got, NPAGES);
    for (uint64_t first = 0; first < NPAGES; first += 700) {
        uint64_t n = first + 700 > NPAGES ? NPAGES - first : 700;
        CHECK(lm_tracker_arm(t, 0, first, n, NULL, &err) == 0);
        memcpy(copy + first * PG, fx.mem + first * PG, n * PG);
    }
    pthread_t w;
    atomic_store(&writer_quit, false);
    CHECK(pthread_create(&w, NULL, writer_main, NULL) == 0);
    uint64_t reported = 0;
    int round = 0;
    for (; (round < 400 || atomic_load(&writer_passes) < 300) && !atomic_load(&writer_failed);
         round++) {
        lm_bitmap_clear_all(got, NPAGES);
        if (round % 2) { /* whole */
            CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, true, &err) == 0);
        } else { /* a read, then chunk by chunk */
            CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
            for (uint64_t first = 0; first < NPAGES; first += 500)
                CHECK(lm_tracker_sync(t, 0, first, first + 500 > NPAGES ? NPAGES - first : 500, got,
                                      true, &err) == 0);
        }
        reported += lm_bitmap_count(got, NPAGES);
        copy_reported(copy, got);
        usleep(200); /* let the guest write between rounds */
    }
    atomic_store(&writer_quit, true);
    void *wret;
    pthread_join(w, &wret);
    CHECK(wret == NULL);
    lm_bitmap_clear_all(got, NPAGES);
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
    copy_reported(copy, got);
    uint64_t differ = 0;
    for (uint64_t p = 0; p < NPAGES; p++)
        differ += memcmp(copy + p * PG, fx.mem + p * PG, PG) != 0;
    fprintf(stderr,
            "concurrent: %llu guest passes, %llu pages reported in %d rounds, %llu differ\n",
            (unsigned long long)atomic_load(&writer_passes), (unsigned long long)reported, round,
            (unsigned long long)differ);
    CHECK(reported > 0);
    CHECK_EQ_U64(differ, 0);
    free(copy);
    lm_tracker_destroy(t);
}

/* lm_kvm_attach's checks, through the public API. */
static void attach_checks(void)
{
    lm_ctx *ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 7, "ram", fx.mem, MEM, 0) == 0);
    lm_kvm_slot ok[2] = {{.slot = 0, .block_id = 7, .block_offset = 0, .size = MEM / 2},
                         {.slot = 1,
                          .block_id = 7,
                          .block_offset = MEM / 2,
                          .size = MEM / 2,
                          .guest_phys = MEM / 2}};
    CHECK(lm_kvm_attach(ctx, fx.vm_fd, ok, 2) == 0);
    struct {
        lm_kvm_slot s[2];
        const char *msg;
    } bad[] = {
        {{ok[0], {.slot = 1, .block_id = 8, .size = PG, .guest_phys = MEM}}, "not registered"},
        {{ok[0], {.slot = 1, .block_id = 7, .block_offset = 100, .size = PG, .guest_phys = MEM}},
         "multiples of the page size"},
        {{ok[0],
          {.slot = 1, .block_id = 7, .block_offset = MEM - PG, .size = 2 * PG, .guest_phys = MEM}},
         "past the end"},
        {{ok[0],
          {.slot = 1, .block_id = 7, .block_offset = MEM / 2 - PG, .size = PG, .guest_phys = MEM}},
         "overlapping parts"},
        {{ok[0], {.slot = 1, .block_id = 7, .block_offset = MEM / 2, .size = PG, .guest_phys = PG}},
         "overlap in guest-physical"},
        {{ok[0],
          {.slot = 0, .block_id = 7, .block_offset = MEM / 2, .size = PG, .guest_phys = MEM}},
         "given twice"},
        {{ok[0],
          {.slot = 1,
           .block_id = 7,
           .block_offset = MEM / 2,
           .size = PG,
           .guest_phys = MEM,
           .flags = 1}},
         "KVM_MEM_LOG_DIRTY_PAGES"},
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int ret = lm_kvm_attach(ctx, fx.vm_fd, bad[i].s, 2);
        if (ret != -EINVAL || !strstr(lm_last_error(ctx), bad[i].msg))
            fprintf(stderr, "bad attach %u: %d, %s\n", i, ret, lm_last_error(ctx));
        CHECK(ret == -EINVAL && strstr(lm_last_error(ctx), bad[i].msg));
    }
    CHECK(lm_kvm_attach(ctx, -1, NULL, 0) == 0);
    /* kvm-log without a VM: a clear error before any connection. */
    lm_params p;
    lm_params_init(&p);
    p.tracker = LM_TRACKER_KVM_LOG;
    CHECK(lm_migrate(ctx, "unix:/nonexistent/sock", &p) == -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "lm_kvm_attach") != NULL);
    /* Half the block in a slot: kvm-log refuses it. */
    CHECK(lm_kvm_attach(ctx, fx.vm_fd, ok, 1) == 0);
    CHECK(lm_migrate(ctx, "unix:/nonexistent/sock", &p) == -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "no KVM slot") != NULL);
    lm_ctx_free(ctx);
}

int main(void)
{
    char why[256];
    if (kvm_fixture_open(&fx, MEM, 2, why, sizeof(why)) < 0)
        TEST_SKIP(why);
    if (kvm_fixture_pass(&fx, KVM_FX_DATA, PG, 1) < 0 || fx.mem[KVM_FX_DATA] != 1)
        TEST_SKIP("KVM does not run the test guest (see docs/DIRTY-TRACKING.md)");
    fx.mem[KVM_FX_DATA] = 0;
    lm_err err;
    lm_err_init(&err);
    if (lm_tracker_kvm_log_ops.probe(&err) < 0)
        TEST_SKIP(err.msg);
    want = lm_bitmap_new(NPAGES);
    got = lm_bitmap_new(NPAGES);
    exact_counts();
    concurrent();
    attach_checks();
    kvm_fixture_close(&fx);
    lm_bitmap_free(want);
    lm_bitmap_free(got);
    TEST_DONE();
}
