/*
 * Dirty tracker correctness, for every backend this kernel supports:
 * randomized writes between syncs; every page written is reported, no page
 * left alone is. Then concurrent writers that keep their own reference
 * bitmap while chunks are armed and synced, whole or chunk by chunk: no
 * write is ever missed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "dirty/tracker.h"

#define NPAGES 4096u

static uint64_t page_size;

static void randomized_rounds(lm_tracker_kind kind, const char *name)
{
    uint64_t len = NPAGES * page_size;
    uint8_t *mem = lm_ram_alloc(len);
    CHECK(mem != NULL);
    /* Populate half the pages before tracking; the rest stay never-touched,
     * so first writes to unpopulated pages are covered too. */
    for (uint64_t p = 0; p < NPAGES; p += 2)
        mem[p * page_size] = 1;

    lm_err err;
    lm_err_init(&err);
    lm_tracker *t = NULL;
    lm_track_range range = {.host = mem, .len = len, .npages = NPAGES};
    int ret = lm_tracker_create(kind, &range, 1, NULL, &t, &err);
    if (ret < 0) {
        fprintf(stderr, "%s unavailable: %s\n", name, err.msg);
        lm_ram_free(mem, len);
        return;
    }
    fprintf(stderr, "testing %s\n", lm_tracker_name(t));
    /* Arm in uneven chunks, as the first pass does. */
    for (uint64_t first = 0; first < NPAGES; first += 1000)
        CHECK(lm_tracker_arm(t, 0, first, first + 1000 > NPAGES ? NPAGES - first : 1000, NULL,
                             &err) == 0);

    lm_word *got = lm_bitmap_new(NPAGES), *want = lm_bitmap_new(NPAGES);
    unsigned long long seed = 0x1234 + (unsigned)kind;
    for (int round = 0; round < 20; round++) {
        lm_bitmap_clear_all(want, NPAGES);
        lm_bitmap_clear_all(got, NPAGES);
        unsigned writes = (unsigned)(test_rand(&seed) % 600);
        for (unsigned i = 0; i < writes; i++) {
            uint64_t p = test_rand(&seed) % NPAGES;
            mem[p * page_size + test_rand(&seed) % page_size] = (uint8_t)round;
            lm_bit_set(want, p);
        }
        /* Reads must not count as writes on populated pages. */
        volatile uint8_t sink = 0;
        for (uint64_t p = 0; p < NPAGES; p += 4)
            sink ^= mem[p * page_size];
        (void)sink;
        CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, true, &err) == 0);
        /* Every written page is reported. Reading a never-populated page
         * may count as a write on some kernels (a fresh page appears), so
         * compare exactly only where the page was populated beforehand. */
        for (uint64_t p = 0; p < NPAGES; p++) {
            if (lm_bit_test(want, p) && !lm_bit_test(got, p)) {
                fprintf(stderr, "%s round %d: write to page %llu missed\n", name, round,
                        (unsigned long long)p);
                lm_test_failures++;
                break;
            }
        }
        uint64_t spurious = 0;
        for (uint64_t p = 0; p < NPAGES; p++)
            if (lm_bit_test(got, p) && !lm_bit_test(want, p))
                spurious++;
        /* After round 0 every page read above is populated. */
        if (round > 0)
            CHECK_EQ_U64(spurious, 0);
    }
    /* The final sync (guest stopped) reads without re-arming. */
    lm_bitmap_clear_all(want, NPAGES);
    lm_bitmap_clear_all(got, NPAGES);
    for (unsigned i = 0; i < 300; i++) {
        uint64_t p = test_rand(&seed) % NPAGES;
        mem[p * page_size] = 0x5a;
        lm_bit_set(want, p);
    }
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
    for (uint64_t i = 0; i < LM_BITMAP_WORDS(NPAGES); i++)
        CHECK_EQ_U64(got[i], want[i]);
    lm_bitmap_free(got);
    lm_bitmap_free(want);
    lm_tracker_destroy(t);
    /* Tracking is gone: writes work and nothing is protected any more. */
    memset(mem, 7, len);
    lm_ram_free(mem, len);
}

/*
 * Concurrent writers. Each writer records every page it wrote in a shared
 * reference bitmap after the write, and counts itself in 'inflight' for the
 * duration of the write + record. Before a sync the test waits for a moment
 * with no write in flight and takes the reference: each of those writes has
 * completed before the sync starts.
 *
 * A write that overlapped the previous sync may legitimately have been
 * reported by it, so a sync run while writers are active is checked against
 * the union of itself and the previous sync. Every third round the writers
 * are held off during two syncs in a row; the writes between those two
 * happened strictly between them, so the second must report exactly them.
 */
struct writers {
    uint8_t *mem;
    _Atomic lm_word *ref;
    atomic_int inflight;
    atomic_int hold;    /* ask writers to wait at the top of their loop */
    atomic_int holding; /* writers waiting */
    atomic_bool stop;
};

struct writer {
    struct writers *w;
    uint64_t first, count;
    unsigned long long seed;
};

static void *writer_main(void *arg)
{
    struct writer *me = arg;
    struct writers *w = me->w;
    while (!atomic_load(&w->stop)) {
        if (atomic_load(&w->hold)) {
            atomic_fetch_add(&w->holding, 1);
            while (atomic_load(&w->hold) && !atomic_load(&w->stop))
                ;
            atomic_fetch_sub(&w->holding, 1);
            continue;
        }
        uint64_t p = me->first + test_rand(&me->seed) % me->count;
        atomic_fetch_add(&w->inflight, 1);
        if (atomic_load(&w->hold)) { /* raced with a hold: back off */
            atomic_fetch_sub(&w->inflight, 1);
            continue;
        }
        w->mem[p * page_size + 8] += 1;
        atomic_fetch_or(&w->ref[p / 64], (lm_word)1 << (p % 64));
        atomic_fetch_sub(&w->inflight, 1);
    }
    return NULL;
}

static void take_reference(struct writers *w, lm_word *out)
{
    while (atomic_load(&w->inflight))
        ;
    for (uint64_t i = 0; i < LM_BITMAP_WORDS(NPAGES); i++)
        out[i] = atomic_exchange(&w->ref[i], 0);
}

static void hold_writers(struct writers *w, int nw, bool on)
{
    atomic_store(&w->hold, on);
    if (on)
        while (atomic_load(&w->holding) < nw || atomic_load(&w->inflight))
            ;
}

/* Guest memory, a tracker over it, and NW writer threads, each on its own
 * half of the pages. */
enum { NW = 2 };
struct rig {
    uint64_t len;
    uint8_t *mem;
    lm_tracker *t;
    struct writers w;
    struct writer ws[NW];
    pthread_t th[NW];
};

static bool rig_start(struct rig *r, lm_tracker_kind kind, const char *name, unsigned seed)
{
    lm_err err;
    lm_err_init(&err);
    memset(r, 0, sizeof(*r));
    r->len = NPAGES * page_size;
    r->mem = lm_ram_alloc(r->len);
    lm_track_range range = {.host = r->mem, .len = r->len, .npages = NPAGES};
    if (lm_tracker_create(kind, &range, 1, NULL, &r->t, &err) < 0) {
        fprintf(stderr, "%s unavailable: %s\n", name, err.msg);
        lm_ram_free(r->mem, r->len);
        return false;
    }
    r->w.mem = r->mem;
    r->w.ref = calloc(LM_BITMAP_WORDS(NPAGES), sizeof(lm_word));
    for (unsigned i = 0; i < NW; i++) {
        r->ws[i] = (struct writer){&r->w, i * (NPAGES / NW), NPAGES / NW, seed + i};
        pthread_create(&r->th[i], NULL, writer_main, &r->ws[i]);
    }
    return true;
}

static void rig_stop(struct rig *r)
{
    atomic_store(&r->w.stop, true);
    for (unsigned i = 0; i < NW; i++)
        pthread_join(r->th[i], NULL);
    lm_tracker_destroy(r->t);
    free((void *)r->w.ref);
    lm_ram_free(r->mem, r->len);
}

static void concurrent_writers(lm_tracker_kind kind, const char *name)
{
    struct rig rig;
    if (!rig_start(&rig, kind, name, 99))
        return;
    lm_tracker *t = rig.t;
    struct writers *w = &rig.w;
    lm_err err;
    lm_err_init(&err);
    /* Arm chunk by chunk while the writers run. */
    for (uint64_t first = 0; first < NPAGES; first += 512)
        CHECK(lm_tracker_arm(t, 0, first, 512, NULL, &err) == 0);
    lm_word *ref = lm_bitmap_new(NPAGES), *got = lm_bitmap_new(NPAGES);
    lm_word *prev = lm_bitmap_new(NPAGES);
    /* Writes before arming are not tracked by design: start from a sync. */
    take_reference(w, ref);
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, prev, true, &err) == 0);
    uint64_t strict_rounds = 0, checked = 0;
    for (int round = 0; round < 60; round++) {
        bool quiet = round % 3 == 2; /* this sync and the previous one held */
        usleep(1000);
        if (quiet)
            hold_writers(w, NW, true);
        take_reference(w, ref);
        lm_bitmap_clear_all(got, NPAGES);
        CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, true, &err) == 0);
        uint64_t missed = 0, extra = 0;
        for (uint64_t i = 0; i < LM_BITMAP_WORDS(NPAGES); i++) {
            lm_word allowed = quiet ? got[i] : got[i] | prev[i];
            missed += (uint64_t)__builtin_popcountll(ref[i] & ~allowed);
            if (quiet)
                extra += (uint64_t)__builtin_popcountll(got[i] & ~ref[i]);
            checked += (uint64_t)__builtin_popcountll(ref[i]);
        }
        if (missed || extra) {
            fprintf(stderr,
                    "%s concurrent round %d (%s): %llu writes missed, %llu pages "
                    "reported but not written\n",
                    name, round, quiet ? "strict" : "overlapping", (unsigned long long)missed,
                    (unsigned long long)extra);
            lm_test_failures++;
        }
        strict_rounds += quiet;
        memcpy(prev, got, LM_BITMAP_WORDS(NPAGES) * sizeof(lm_word));
        /* Hold across the next sync too when it is the first of a strict pair. */
        bool next_quiet = (round + 1) % 3 == 2;
        if (next_quiet) {
            hold_writers(w, NW, true);
            take_reference(w, ref);
            CHECK(lm_tracker_sync(t, 0, 0, NPAGES, prev, true, &err) == 0);
            hold_writers(w, NW, false);
        } else if (quiet) {
            hold_writers(w, NW, false);
        }
    }
    fprintf(stderr, "%s: %llu writes checked, %llu strict rounds\n", name,
            (unsigned long long)checked, (unsigned long long)strict_rounds);
    CHECK(checked > 1000);
    rig_stop(&rig);
    lm_bitmap_free(prev);
    lm_bitmap_free(ref);
    lm_bitmap_free(got);
}

/* The reference bits of pages [first, first+n), taken (cleared) atomically
 * once no write is in flight. */
static void take_reference_range(struct writers *w, uint64_t first, uint64_t n, lm_word *out)
{
    while (atomic_load(&w->inflight))
        ;
    for (uint64_t p = first; p < first + n; p++) {
        lm_word bit = (lm_word)1 << (p % 64);
        if (atomic_fetch_and(&w->ref[p / 64], ~bit) & bit)
            lm_bit_set(out, p);
    }
}

static uint64_t count_missed(const lm_word *ref, const lm_word *got, const lm_word *prev,
                             uint64_t first, uint64_t n)
{
    uint64_t missed = 0;
    for (uint64_t p = first; p < first + n; p++)
        missed += lm_bit_test(ref, p) && !lm_bit_test(got, p) && !lm_bit_test(prev, p);
    return missed;
}

/*
 * Rounds as the engine runs them with --track-chunk: one read of everything
 * (no re-arm) to size the round, then each chunk re-armed just before it
 * would be sent, while the writers run. A write that completed before its
 * chunk's re-arm is reported by this round (the read or the re-arm) or, if
 * it overlapped the previous round's re-arm of that chunk, by that one.
 * Chunks of 700 pages cut bitmap words, so partial words are covered. Then,
 * with the writers held: a read reports exactly the pages written, reads
 * again the same (it takes nothing), and the re-arms leave nothing behind.
 */
static void chunked_rearm(lm_tracker_kind kind, const char *name)
{
    enum { CHUNK = 700 };
    struct rig rig;
    if (!rig_start(&rig, kind, name, 7))
        return;
    lm_tracker *t = rig.t;
    struct writers *w = &rig.w;
    uint8_t *mem = rig.mem;
    lm_err err;
    lm_err_init(&err);
    for (uint64_t first = 0; first < NPAGES; first += CHUNK)
        CHECK(lm_tracker_arm(t, 0, first, NPAGES - first < CHUNK ? NPAGES - first : CHUNK, NULL,
                             &err) == 0);
    lm_word *ref = lm_bitmap_new(NPAGES), *got = lm_bitmap_new(NPAGES);
    lm_word *prev = lm_bitmap_new(NPAGES);
    take_reference(w, ref); /* writes before arming are not tracked by design */
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, prev, true, &err) == 0);
    uint64_t checked = 0, missed = 0;
    for (int round = 0; round < 40; round++) {
        usleep(500);
        lm_bitmap_clear_all(got, NPAGES);
        lm_bitmap_clear_all(ref, NPAGES);
        CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
        for (uint64_t first = 0; first < NPAGES; first += CHUNK) {
            uint64_t n = NPAGES - first < CHUNK ? NPAGES - first : CHUNK;
            take_reference_range(w, first, n, ref);
            CHECK(lm_tracker_sync(t, 0, first, n, got, true, &err) == 0);
            missed += count_missed(ref, got, prev, first, n);
        }
        checked += lm_bitmap_count(ref, NPAGES);
        memcpy(prev, got, LM_BITMAP_WORDS(NPAGES) * sizeof(lm_word));
    }
    fprintf(stderr, "%s chunked re-arm: %llu writes checked, %llu missed\n", name,
            (unsigned long long)checked, (unsigned long long)missed);
    CHECK_EQ_U64(missed, 0);
    CHECK(checked > 1000);

    /* Quiet: drain with one round, then known writes only. */
    hold_writers(w, NW, true);
    lm_bitmap_clear_all(got, NPAGES);
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, true, &err) == 0);
    lm_word *want = lm_bitmap_new(NPAGES);
    unsigned long long seed = 0xc0ffee;
    for (unsigned i = 0; i < 200; i++) {
        uint64_t p = test_rand(&seed) % NPAGES;
        mem[p * page_size + 16] += 1;
        lm_bit_set(want, p);
    }
    /* Both sides of every chunk boundary, and the first and last page. */
    for (uint64_t b = 0; b <= NPAGES; b += CHUNK)
        for (uint64_t p = b ? b - 1 : 0; p <= b && p < NPAGES; p++) {
            mem[p * page_size + 16] += 1;
            lm_bit_set(want, p);
        }
    mem[(NPAGES - 1) * page_size + 16] += 1;
    lm_bit_set(want, NPAGES - 1);
    for (int pass = 0; pass < 2; pass++) { /* a read takes nothing: twice the same */
        lm_bitmap_clear_all(got, NPAGES);
        CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
        for (uint64_t i = 0; i < LM_BITMAP_WORDS(NPAGES); i++)
            CHECK_EQ_U64(got[i], want[i]);
    }
    lm_bitmap_clear_all(got, NPAGES);
    for (uint64_t first = 0; first < NPAGES; first += CHUNK)
        CHECK(lm_tracker_sync(t, 0, first, NPAGES - first < CHUNK ? NPAGES - first : CHUNK, got,
                              true, &err) == 0);
    for (uint64_t i = 0; i < LM_BITMAP_WORDS(NPAGES); i++)
        CHECK_EQ_U64(got[i], want[i]);
    lm_bitmap_clear_all(got, NPAGES);
    CHECK(lm_tracker_sync(t, 0, 0, NPAGES, got, false, &err) == 0);
    CHECK_EQ_U64(lm_bitmap_count(got, NPAGES), 0);
    hold_writers(w, NW, false);
    rig_stop(&rig);
    lm_bitmap_free(want);
    lm_bitmap_free(prev);
    lm_bitmap_free(ref);
    lm_bitmap_free(got);
}

int main(void)
{
    page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    lm_err err;
    lm_err_init(&err);
    lm_tracker *probe = NULL;
    if (lm_tracker_create(LM_TRACKER_AUTO, NULL, 0, NULL, &probe, &err) < 0)
        TEST_SKIP(err.msg);
    lm_tracker_destroy(probe);

    randomized_rounds(LM_TRACKER_UFFD_ASYNC, "uffd-async");
    randomized_rounds(LM_TRACKER_UFFD_SYNC, "uffd-sync");
    concurrent_writers(LM_TRACKER_UFFD_ASYNC, "uffd-async");
    concurrent_writers(LM_TRACKER_UFFD_SYNC, "uffd-sync");
    chunked_rearm(LM_TRACKER_UFFD_ASYNC, "uffd-async");
    chunked_rearm(LM_TRACKER_UFFD_SYNC, "uffd-sync");
    TEST_DONE();
}
