/*
 * lm-kvm-sync: what one dirty-tracking sync of a running KVM guest costs,
 * per tracker (issue 10), and how long the KVM guest takes to come up.
 *
 *   lm-kvm-sync sync RAM_GIB DIRTY_PERCENT TRACKER
 *       A RAM_GIB KVM guest (the CLI's, src/guest/kvm_*), all of its RAM
 *       populated first, whose stress vCPUs (2) rewrite DIRTY_PERCENT of its
 *       pages every pass. The tracker is armed over all of RAM; then 5 times:
 *       the guest runs until each vCPU has done 2 more passes, is stopped,
 *       and one sync with re-arm is timed (median, min, max). TRACKER is
 *       uffd-async, uffd-sync or kvm-log. kvm-ring: not built yet (exit 77).
 *   lm-kvm-sync up RAM_GIB WORKLOAD PREFAULT
 *       Seconds until the guest is up (every stress vCPU wrote its region
 *       once), with PREFAULT 1 the host populates the regions first
 *       (MADV_POPULATE_WRITE, what the CLI does), 0 not.
 * One JSON object on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dirty/tracker.h"
#include "guest/kvm_vm.h"
#include "util/clock.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static lm_kvm_guest *make_guest(uint8_t *ram, uint64_t len, const char *spec, uint32_t ring,
                                double *up_s)
{
    char why[256];
    lm_workload w;
    if (lm_workload_parse(spec, &w, why, sizeof(why)) < 0) {
        fprintf(stderr, "lm-kvm-sync: %s\n", why);
        exit(2);
    }
    uint64_t t0 = lm_now_ns();
    lm_kvm_guest *g = lm_kvm_guest_create(ram, len, &w, 1, ring, why, sizeof(why));
    if (!g) {
        fprintf(stderr, "lm-kvm-sync: %s\n", why);
        exit(77);
    }
    *up_s = (double)(lm_now_ns() - t0) / 1e9;
    return g;
}

static int up(uint64_t gib, const char *spec, int prefault)
{
    uint64_t len = gib << 30;
    uint8_t *ram = lm_ram_alloc(len);
    lm_workload w;
    char why[256];
    if (!ram || lm_workload_parse(spec, &w, why, sizeof(why)) < 0)
        return 1;
    uint64_t touch = LM_KVM_DATA_GPA + w.bytes * (w.kind == LM_WL_STRESS ? w.threads : 1);
    uint64_t t0 = lm_now_ns();
    if (prefault)
        madvise(ram, touch < len ? touch : len, MADV_POPULATE_WRITE);
    double pre_s = (double)(lm_now_ns() - t0) / 1e9, up_s;
    lm_kvm_guest *g = make_guest(ram, len, spec, 0, &up_s);
    printf("{\"ram_gib\": %llu, \"workload\": \"%s\", \"prefault\": %d, \"prefault_s\": %.3f, "
           "\"up_s\": %.3f, \"touched_mib\": %llu}\n",
           (unsigned long long)gib, spec, prefault, pre_s, up_s, (unsigned long long)(touch >> 20));
    lm_kvm_guest_destroy(g);
    lm_ram_free(ram, len);
    return 0;
}

static int sync_cost(uint64_t gib, double dirty, const char *tracker)
{
    lm_tracker_kind kind;
    if (!strcmp(tracker, "uffd-async"))
        kind = LM_TRACKER_UFFD_ASYNC;
    else if (!strcmp(tracker, "uffd-sync"))
        kind = LM_TRACKER_UFFD_SYNC;
    else if (!strcmp(tracker, "kvm-log"))
        kind = LM_TRACKER_KVM_LOG;
    else if (!strcmp(tracker, "kvm-ring"))
        kind = LM_TRACKER_KVM_RING;
    else {
        fprintf(stderr, "lm-kvm-sync: unknown tracker %s\n", tracker);
        return 2;
    }
    uint64_t len = gib << 30, ps = (uint64_t)sysconf(_SC_PAGESIZE), npages = len / ps;
    uint8_t *ram = lm_ram_alloc(len);
    if (!ram)
        return 1;
    /* Every page populated: the uffd trackers' walk sees a full guest. */
    uint64_t t0 = lm_now_ns();
    madvise(ram, len, MADV_POPULATE_WRITE);
    double populate_s = (double)(lm_now_ns() - t0) / 1e9;
    /* Two stress vCPUs whose regions together are dirty% of RAM. */
    uint64_t region = (uint64_t)((double)len * dirty / 100.0 / 2) / ps * ps;
    char spec[64];
    snprintf(spec, sizeof(spec), "stress:2x%lluK", (unsigned long long)(region >> 10));
    double up_s;
    /* The ring is enabled at VM creation, before the vCPUs (16384 entries,
     * the CLI's default). */
    lm_kvm_guest *g = make_guest(ram, len, spec, kind == LM_TRACKER_KVM_RING ? 16384 : 0, &up_s);

    const lm_kvm_memslot *ms;
    unsigned nslots = lm_kvm_guest_slots(g, &ms);
    lm_track_kvm_slot ks[LM_KVM_MAX_SLOTS];
    for (unsigned i = 0; i < nslots; i++)
        ks[i] = (lm_track_kvm_slot){.slot = ms[i].slot,
                                    .flags = 0,
                                    .range = 0,
                                    .first = ms[i].block_offset / ps,
                                    .npages = ms[i].len / ps,
                                    .guest_phys = ms[i].gpa};
    void *rings[LM_KVM_MAX_VCPUS];
    for (unsigned i = 0; i < g->nvcpus; i++)
        rings[i] = g->vcpus[i].ring;
    lm_track_kvm kvm = {lm_kvm_guest_vm_fd(g), nslots, ks};
    if (kind == LM_TRACKER_KVM_RING)
        kvm = (lm_track_kvm){lm_kvm_guest_vm_fd(g), nslots, ks, g->nvcpus, rings, g->ring_entries};
    lm_track_range range = {ram, len, npages};
    lm_err err;
    lm_err_init(&err);
    lm_tracker *t;
    lm_kvm_guest_callbacks.stop(g);
    if (lm_tracker_create(kind, &range, 1, &kvm, &t, &err) < 0) {
        fprintf(stderr, "lm-kvm-sync: tracker: %s\n", err.msg);
        return 77;
    }
    t0 = lm_now_ns();
    if (lm_tracker_arm(t, 0, 0, npages, NULL, &err) < 0) {
        fprintf(stderr, "lm-kvm-sync: arm: %s\n", err.msg);
        return 1;
    }
    double arm_ms = lm_ns_to_ms(lm_now_ns() - t0);
    lm_word *map = lm_bitmap_new(npages);
    uint64_t times[5], reported[5];
    for (int i = 0; i < 5; i++) {
        uint64_t before[LM_KVM_MAX_VCPUS];
        for (unsigned v = 0; v < g->nvcpus; v++)
            before[v] = atomic_load(&g->vcpus[v].exits);
        lm_kvm_guest_callbacks.resume(g);
        for (unsigned v = 0; v < g->nvcpus; v++)
            while (atomic_load(&g->vcpus[v].exits) < before[v] + 3) {
                struct timespec ts = {0, 200000};
                nanosleep(&ts, NULL);
            }
        lm_kvm_guest_callbacks.stop(g);
        lm_bitmap_clear_all(map, npages);
        t0 = lm_now_ns();
        if (lm_tracker_sync(t, 0, 0, npages, map, true, &err) < 0) {
            fprintf(stderr, "lm-kvm-sync: sync: %s\n", err.msg);
            return 1;
        }
        times[i] = lm_now_ns() - t0;
        reported[i] = lm_bitmap_count(map, npages);
    }
    uint64_t sorted[5];
    memcpy(sorted, times, sizeof(times));
    qsort(sorted, 5, sizeof(sorted[0]), cmp_u64);
    printf(
        "{\"ram_gib\": %llu, \"dirty_percent\": %.2f, \"tracker\": \"%s\", \"workload\": \"%s\", "
        "\"populate_s\": %.2f, \"up_s\": %.2f, \"arm_ms\": %.2f, \"sync_ms_median\": %.3f, "
        "\"sync_ms_min\": %.3f, \"sync_ms_max\": %.3f, \"dirty_pages_reported\": [",
        (unsigned long long)gib, dirty, lm_tracker_name(t), spec, populate_s, up_s, arm_ms,
        lm_ns_to_ms(sorted[2]), lm_ns_to_ms(sorted[0]), lm_ns_to_ms(sorted[4]));
    for (int i = 0; i < 5; i++)
        printf("%s%llu", i ? ", " : "", (unsigned long long)reported[i]);
    printf("], \"dirty_pages_written\": %llu}\n", (unsigned long long)(2 * region / ps));
    lm_tracker_destroy(t);
    lm_kvm_guest_destroy(g);
    lm_bitmap_free(map);
    lm_ram_free(ram, len);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "sync"))
        return sync_cost(strtoull(argv[2], NULL, 10), atof(argv[3]), argv[4]);
    if (argc == 5 && !strcmp(argv[1], "up"))
        return up(strtoull(argv[2], NULL, 10), argv[3], atoi(argv[4]));
    fprintf(stderr, "usage: lm-kvm-sync sync RAM_GIB DIRTY_PERCENT TRACKER\n"
                    "       lm-kvm-sync up RAM_GIB WORKLOAD PREFAULT\n");
    return 2;
}
