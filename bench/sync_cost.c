/*
 * Cost of one dirty-tracking sync against guest size, populated share and
 * dirty share: reserve RAM (never-populated memory is cheap), populate a
 * share of it, arm tracking, dirty a share, and time lm_tracker_sync (median
 * of 5, each after dirtying the same pages again).
 *   lm-sync-cost [RAM_GIB] [POPULATED_PERCENT] [DIRTY_PERCENT] [TRACKER]
 * defaults: 16 1 1 auto; TRACKER is auto, uffd-async or uffd-sync.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirty/tracker.h"
#include "util/clock.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t gib = argc > 1 ? strtoull(argv[1], NULL, 10) : 16;
    double populated = argc > 2 ? atof(argv[2]) : 1.0, dirty = argc > 3 ? atof(argv[3]) : 1.0;
    lm_tracker_kind kind = LM_TRACKER_AUTO;
    if (argc > 4 && !strcmp(argv[4], "uffd-sync"))
        kind = LM_TRACKER_UFFD_SYNC;
    else if (argc > 4 && !strcmp(argv[4], "uffd-async"))
        kind = LM_TRACKER_UFFD_ASYNC;
    uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE), len = gib << 30, npages = len / ps;
    uint8_t *ram = lm_ram_alloc(len);
    if (!ram) {
        perror("lm_ram_alloc");
        return 1;
    }
    /* Populated and dirty pages spread evenly over all of RAM. */
    uint64_t pop_every = populated > 0 ? (uint64_t)(100.0 / populated) : 0;
    uint64_t dirty_every = dirty > 0 ? (uint64_t)(100.0 / dirty) : 0;
    uint64_t t0 = lm_now_ns();
    for (uint64_t p = 0; pop_every && p < npages; p += pop_every)
        ram[p * ps] = 1;
    double populate_ms = lm_ns_to_ms(lm_now_ns() - t0);

    lm_err err;
    lm_err_init(&err);
    lm_tracker *t;
    lm_track_range range = {ram, len, npages};
    if (lm_tracker_create(kind, &range, 1, NULL, &t, &err) < 0) {
        fprintf(stderr, "tracker: %s\n", err.msg);
        return 77;
    }
    t0 = lm_now_ns();
    if (lm_tracker_arm(t, 0, 0, npages, NULL, &err) < 0) {
        fprintf(stderr, "arm: %s\n", err.msg);
        return 1;
    }
    double arm_ms = lm_ns_to_ms(lm_now_ns() - t0);
    lm_word *map = lm_bitmap_new(npages);
    uint64_t times[5], reported = 0;
    for (int i = 0; i < 5; i++) {
        for (uint64_t p = 0; dirty_every && p < npages; p += dirty_every)
            ram[p * ps] = (uint8_t)(i + 2);
        lm_bitmap_clear_all(map, npages);
        t0 = lm_now_ns();
        if (lm_tracker_sync(t, 0, 0, npages, map, true, &err) < 0) {
            fprintf(stderr, "sync: %s\n", err.msg);
            return 1;
        }
        times[i] = lm_now_ns() - t0;
        reported = lm_bitmap_count(map, npages);
    }
    qsort(times, 5, sizeof(times[0]), cmp_u64);
    printf(
        "{\"ram_gib\": %llu, \"populated_percent\": %.2f, \"dirty_percent\": %.2f, "
        "\"tracker\": \"%s\", \"populate_ms\": %.1f, \"arm_ms\": %.1f, \"sync_ms_median\": %.2f, "
        "\"sync_ms_min\": %.2f, \"sync_ms_max\": %.2f, \"dirty_pages_reported\": %llu}\n",
        (unsigned long long)gib, populated, dirty, lm_tracker_name(t), populate_ms, arm_ms,
        lm_ns_to_ms(times[2]), lm_ns_to_ms(times[0]), lm_ns_to_ms(times[4]),
        (unsigned long long)reported);
    lm_tracker_destroy(t);
    lm_bitmap_free(map);
    lm_ram_free(ram, len);
    return 0;
}
