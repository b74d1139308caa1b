/*
 * Zero ranges on the wire (protocol 5): memory that holds nothing goes as
 * ranges that merge across the first pass's chunks and across pages legacy
 * detection found zero, split where a frame is full, and never cross a
 * block. Each case migrates in one process over one stream, verified, and
 * checks the bytes on the wire against what the ranges should cost: the
 * layouts are compared in pairs that differ only in how their empty memory
 * is cut, so every other byte cancels out.
 */
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "livemig_testing.h"
#include "pair.h"

#define FRAME_HDR  16 /* LM_FRAME_HDR_SIZE */
#define RANGES_HDR 8  /* block, count */
#define RANGE_SIZE 16 /* first, npages */

static uint64_t ps;

typedef enum { HOLE, DATA, ZEROED } page_kind;

typedef struct block_spec {
    uint64_t npages;
    page_kind (*kind)(uint64_t page);
} block_spec;

typedef struct outcome {
    uint64_t transferred, dst_duplicate, src_duplicate;
    bool ok;
    char placement[16];
} outcome;

static bool place_copy; /* the destination places with UFFDIO_COPY */

/* Migrates blocks made as the specs say; returns the wire bytes. */
static outcome migrate(const block_spec *specs, unsigned n, uint64_t chunk_pages,
                       lm_zero_detection detect)
{
    lm_pair p;
    pair_open(&p);
    uint8_t *host[4];
    static const char *const names[] = {"pc.ram", "vga.vram", "rom", "extra"};
    for (unsigned b = 0; b < n; b++) {
        uint64_t len = specs[b].npages * ps;
        host[b] = lm_ram_alloc(len);
        CHECK(host[b] != NULL);
        for (uint64_t pg = 0; pg < specs[b].npages; pg++) {
            page_kind k = specs[b].kind(pg);
            if (k != HOLE)
                memset(host[b] + pg * ps, k == DATA ? (int)(pg % 251 + 1) : 0, ps);
        }
        CHECK(lm_ram_block_add(p.src, b, names[b], host[b], len, 0) == 0);
    }
    p.sp.track_chunk = chunk_pages * ps;
    p.sp.zero_detection = detect;
    lm_testing t = {.place_copy = place_copy};
    lm_testing_set(p.dst, &t);
    pair_migrate(&p);
    pair_report(&p);
    outcome o = {.transferred = p.src_st.transferred,
                 .dst_duplicate = p.dst_st.duplicate,
                 .src_duplicate = p.src_st.duplicate,
                 .ok = p.src_ret == 0 && p.dst_ret == 0 && p.src_st.verify_match};
    snprintf(o.placement, sizeof(o.placement), "%s", p.dst_st.tracker);
    pair_close(&p);
    for (unsigned b = 0; b < n; b++)
        lm_ram_free(host[b], specs[b].npages * ps);
    return o;
}

/* Data at both ends, one hole between them across many 16-page chunks. */
static page_kind two_islands(uint64_t pg)
{
    return pg < 100 || (pg >= 3000 && pg < 3100) ? DATA : HOLE;
}

/* The same with the middle's first 500 pages populated with zeros. */
static page_kind two_islands_zeroed(uint64_t pg)
{
    return pg >= 100 && pg < 600 ? ZEROED : two_islands(pg);
}

/* Every other page: 5000 holes, more than one frame's 4096 ranges. */
static page_kind alternate(uint64_t pg)
{
    return pg % 2 ? HOLE : DATA;
}

/* The same data pages together, then one hole of the same size. */
static page_kind data_first(uint64_t pg)
{
    return pg < 5000 ? DATA : HOLE;
}

static page_kind data_then_hole(uint64_t pg)
{
    return pg < 50 ? DATA : HOLE;
}

static page_kind hundred_then_hole(uint64_t pg)
{
    return pg < 100 ? DATA : HOLE;
}

/* A hole that goes on into the next chunk is one range, not one a chunk. */
static void merge_across_chunks(void)
{
    block_spec b = {4096, two_islands};
    outcome small = migrate(&b, 1, 16, LM_ZERO_DETECT_MULTIFD),
            whole = migrate(&b, 1, 0, LM_ZERO_DETECT_MULTIFD);
    CHECK(small.ok && whole.ok);
    CHECK_EQ_U64(small.transferred, whole.transferred);
    CHECK_EQ_U64(small.dst_duplicate, 4096 - 200);
    CHECK_EQ_U64(whole.src_duplicate, 4096 - 200);
}

/* Pages legacy detection finds zero join the never-populated run after
 * them: the same bytes as if they had never been populated. */
static void merge_with_detected(void)
{
    block_spec holes = {4096, two_islands}, zeroed = {4096, two_islands_zeroed};
    outcome a = migrate(&holes, 1, 16, LM_ZERO_DETECT_LEGACY),
            b = migrate(&zeroed, 1, 16, LM_ZERO_DETECT_LEGACY);
    CHECK(a.ok && b.ok);
    CHECK_EQ_U64(a.transferred, b.transferred);
    CHECK_EQ_U64(b.dst_duplicate, 4096 - 200);
    /* Without detection the zeroed pages travel with their data. */
    outcome c = migrate(&zeroed, 1, 16, LM_ZERO_DETECT_NONE);
    CHECK(c.ok);
    CHECK(c.transferred >= b.transferred + 500 * ps);
}

/* 5000 one-page ranges take two frames; one 5000-page range takes one. */
static void split_when_full(void)
{
    block_spec alt = {10000, alternate}, first = {10000, data_first};
    outcome a = migrate(&alt, 1, 0, LM_ZERO_DETECT_MULTIFD),
            f = migrate(&first, 1, 0, LM_ZERO_DETECT_MULTIFD);
    CHECK(a.ok && f.ok);
    CHECK_EQ_U64(a.dst_duplicate, 5000);
    CHECK_EQ_U64(f.dst_duplicate, 5000);
    CHECK_EQ_U64(a.transferred - f.transferred,
                 (2 - 1) * (FRAME_HDR + RANGES_HDR) + (5000 - 1) * RANGE_SIZE);
}

/* A hole at the end of one block and one in the next block that starts at
 * the page number where the first ended: never one range, which the
 * destination would refuse as running past the first block's end. */
static void split_at_blocks(void)
{
    block_spec across[2] = {{100, data_then_hole}, {200, hundred_then_hole}};
    outcome a = migrate(across, 2, 16, LM_ZERO_DETECT_MULTIFD);
    CHECK(a.ok);
    CHECK_EQ_U64(a.dst_duplicate, 50 + 100);
}

/* A destination that reads every zero page (--no-receivedmap, 4 KiB
 * pages) spends seconds on one frame of ranges while the source, which
 * sent a few bytes, waits for it with a short timeout: BUSY keeps the wait
 * alive. 1 GiB empty is 262144 page faults: seconds here, so the 1 s
 * timeout would fire without BUSY (a host with sub-4-us faults passes
 * either way). */
static void busy_destination(void)
{
    lm_pair p;
    pair_open(&p);
    uint64_t len = 1ull << 30;
    uint8_t *host = lm_ram_alloc(len);
    CHECK(host != NULL);
    memset(host, 7, 16 * ps);
    CHECK(lm_ram_block_add(p.src, 0, "pc.ram", host, len, 0) == 0);
    p.sp.io_timeout_ms = 1000;
    p.dp.no_receivedmap = true;
    p.dp.dest_thp = false;
    pair_migrate(&p);
    pair_report(&p);
    CHECK(p.src_ret == 0 && p.dst_ret == 0 && p.src_st.verify_match);
    CHECK_EQ_U64(p.dst_st.duplicate, len / ps - 16);
    pair_close(&p);
    lm_ram_free(host, len);
}

/* A writer that fills the empty second half of a block page by page while
 * the migration runs: pages the first pass sent as zero ranges come back
 * as data in later rounds. Stopped and resumed as the guest. */
typedef struct writer {
    pthread_mutex_t lock;
    bool stopped, quit;
    uint8_t *host;
    uint64_t first, npages, next;
    pthread_t thread;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        bool quit = w->quit;
        if (!w->stopped && w->next < w->npages) {
            memset(w->host + (w->first + w->next) * ps, (int)(w->next % 250 + 1), ps);
            w->next++;
        }
        pthread_mutex_unlock(&w->lock);
        if (quit)
            return NULL;
        usleep(50);
    }
}

static int writer_stop(void *opaque)
{
    writer *w = opaque;
    pthread_mutex_lock(&w->lock);
    w->stopped = true;
    pthread_mutex_unlock(&w->lock);
    return 0;
}

static int writer_resume(void *opaque)
{
    writer *w = opaque;
    pthread_mutex_lock(&w->lock);
    w->stopped = false;
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* With placement by copy, a page first sent in a zero range (its bit set,
 * the page still missing) and later as data must be copied in, not
 * written through a fault no one answers; a zero page for it must not
 * touch it either. Several rounds, verified. */
static void copy_placement_rounds(void)
{
    lm_pair p;
    pair_open(&p);
    uint64_t npages = 8192, len = npages * ps;
    writer w = {.first = npages / 2, .npages = npages / 2};
    pthread_mutex_init(&w.lock, NULL);
    w.host = lm_ram_alloc(len);
    CHECK(w.host != NULL);
    memset(w.host, 3, len / 2);
    CHECK(lm_ram_block_add(p.src, 0, "pc.ram", w.host, len, 0) == 0);
    lm_guest_ops ops = {.stop = writer_stop, .resume = writer_resume};
    lm_set_guest_ops(p.src, &ops, &w);
    lm_testing t = {.place_copy = true};
    lm_testing_set(p.dst, &t);
    p.sp.track_chunk = 64 * ps;
    p.sp.max_rounds = 4;
    p.sp.downtime_limit_ms = 1;
    p.sp.max_bandwidth = 64ull << 20; /* the first pass takes a while */
    CHECK(pthread_create(&w.thread, NULL, writer_main, &w) == 0);
    pair_migrate(&p);
    pair_report(&p);
    pthread_mutex_lock(&w.lock);
    w.quit = true;
    uint64_t written = w.next;
    pthread_mutex_unlock(&w.lock);
    pthread_join(w.thread, NULL);
    CHECK(p.src_ret == 0 && p.dst_ret == 0 && p.src_st.verify_match);
    CHECK(!strcmp(p.dst_st.tracker, "uffd-copy"));
    CHECK(p.src_st.nrounds >= 2);
    CHECK(written > 0);
    pair_close(&p);
    lm_ram_free(w.host, len);
    pthread_mutex_destroy(&w.lock);
}

/* Placement by UFFDIO_COPY lands the same bytes as writing in place. */
static void copy_placement(void)
{
    block_spec b[2] = {{4096, two_islands}, {10000, alternate}};
    outcome in_place = migrate(b, 2, 16, LM_ZERO_DETECT_MULTIFD);
    place_copy = true;
    outcome copied = migrate(b, 2, 16, LM_ZERO_DETECT_MULTIFD);
    place_copy = false;
    CHECK(in_place.ok && copied.ok);
    CHECK(!strcmp(in_place.placement, "in-place"));
    CHECK(!strcmp(copied.placement, "uffd-copy"));
    CHECK_EQ_U64(copied.transferred, in_place.transferred);
}

int main(void)
{
    ps = (uint64_t)sysconf(_SC_PAGESIZE);
    merge_across_chunks();
    merge_with_detected();
    split_when_full();
    split_at_blocks();
    copy_placement();
    copy_placement_rounds();
    busy_destination();
    TEST_DONE();
}
