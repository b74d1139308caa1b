/*
 * Precopy on the source: a first pass over all RAM, rounds of dirty pages
 * until the rest fits in the downtime limit, and the switchover.
 *
 * First pass: every page once, chunk by chunk; each chunk is armed for dirty
 * tracking just before it is sent, and pages the kernel says were never
 * populated go as zero pages without being read. Rounds: sync the tracker,
 * estimate how long the remaining dirty data would take at the bandwidth
 * measured in the last round, and switch over when that fits in the downtime
 * limit (or after max_rounds; converge.c decides about throttling and
 * postcopy). Switchover: stop the guest, last sync, last pages, device
 * state, COMPLETE (with the digest when verifying), SWITCHOVER_READY from the
 * destination, then the commit (commit.c): COMMIT, answered by RESUMED.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "migration/section.h"
#include "migration/source.h"
#include "util/clock.h"

/* Resumable: s->fp_block/fp_end say how far it armed; after a resume it
 * goes on from there (resume.c). */
static int first_pass(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    uint64_t chunk_pages = lm__src_chunk_pages(s), total = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        total += ctx->ram.blocks[i].npages;
    if (!s->fp_started) {
        lm__src_begin_round(s, total);
        s->last_sync_ns = lm_now_ns(); /* the first sync's dirty rate counts from here */
    }
    s->fp_started = true;
    for (unsigned i = s->fp_block; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        for (uint64_t first = i == s->fp_block ? s->fp_end : 0; first < b->npages;
             first += chunk_pages) {
            uint64_t n = b->npages - first < chunk_pages ? b->npages - first : chunk_pages;
            /* Arm just before sending; the tracker says which pages hold
             * data (the rest are zero pages, sent without being read). */
            lm_bitmap_clear_all(s->populated, n);
            int ret = lm_tracker_arm(s->tracker, i, first, n, s->populated, &ctx->err);
            if (ret < 0)
                return ret;
            s->fp_block = i;
            s->fp_end = first + n;
            /* Runs: what was never populated goes as one range (merged
             * across chunks), what holds data page by page. */
            for (uint64_t p = 0; p < n;) {
                uint64_t data = lm_bitmap_next_set(s->populated, n, p);
                uint64_t end = data < n ? lm_bitmap_next_clear(s->populated, n, data) : n;
                if (data > p && (ret = lm__src_queue_zero_run(s, b, first + p, data - p)) < 0)
                    return ret;
                for (p = data; p < end && !s->pass_cut; p++)
                    if ((ret = lm__src_queue_page(s, b, first + p)) < 0)
                        return ret;
                p = s->pass_cut ? p : end;
                if (s->pass_cut) { /* postcopy sends what the pass had not reached */
                    uint64_t next = first + (p > data ? p : data);
                    lm_bitmap_set_range(s->dirty[i], next, b->npages - next);
                    for (unsigned k = i + 1; k < ctx->ram.nblocks; k++)
                        lm_bitmap_set_range(s->dirty[k], 0, ctx->ram.blocks[k].npages);
                    goto out;
                }
            }
        }
    }
out:;
    int ret = lm__src_end_of_round_barrier(s);
    s->fp_done = ret == 0;
    return ret;
}

/* Re-arming by chunk (--track-chunk smaller than a block): a round's sync
 * only reads the dirty set, to size the round; each chunk is re-armed just
 * before its pages are sent, so the guest meets one chunk of fresh
 * protection at a time instead of all of its working set at once. */
static bool rearm_by_chunk(const lm_source *s)
{
    return lm__src_chunk_pages(s) < lm__ram_max_block_pages(&s->ctx->ram);
}

/* Sends s->dirty. With rearm, each chunk's protection is renewed first and
 * what it reports (written since the round's sync) goes out with it. */
static int send_dirty(lm_source *s, uint64_t count, bool rearm)
{
    lm_ctx *ctx = s->ctx;
    uint64_t chunk_pages = lm__src_chunk_pages(s);
    lm__src_begin_round(s, count);
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        if (s->inflight[i])
            lm_bitmap_clear_all(s->inflight[i], ctx->ram.blocks[i].npages);
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        for (uint64_t first = 0; first < b->npages; first += chunk_pages) {
            uint64_t end = b->npages - first < chunk_pages ? b->npages : first + chunk_pages;
            int ret = 0;
            if (rearm) {
                uint64_t before = lm_bitmap_count_range(s->dirty[i], first, end);
                if ((ret = lm_tracker_sync(s->tracker, i, first, end - first, s->dirty[i], true,
                                           &ctx->err)) < 0)
                    return ret;
                uint64_t found = lm_bitmap_count_range(s->dirty[i], first, end) - before;
                s->rearm_found += found;
                s->round_pages += found;
            }
            for (uint64_t p = lm_bitmap_next_set(s->dirty[i], end, first); p < end;
                 p = lm_bitmap_next_set(s->dirty[i], end, p + 1)) {
                if ((ret = lm__src_queue_page(s, b, p)) < 0)
                    return ret;
                if (s->pass_cut) { /* the pages after p stay dirty, for postcopy */
                    if (s->inflight[i])
                        lm_bitmap_or(s->inflight[i], s->dirty[i], b->npages);
                    lm_bitmap_clear_range(s->dirty[i], 0, p + 1);
                    return lm__src_end_of_round_barrier(s);
                }
            }
        }
        /* A huge block with nothing dirty is read, not rewritten. */
        if (lm_bitmap_next_set(s->dirty[i], b->npages, 0) == b->npages)
            continue;
        if (s->inflight[i]) /* sent, but maybe torn by a cut (resume.c) */
            lm_bitmap_or(s->inflight[i], s->dirty[i], b->npages);
        lm_bitmap_clear_all(s->dirty[i], b->npages);
    }
    return lm__src_end_of_round_barrier(s);
}

/* PING/PONG: returns once the destination has processed everything sent so
 * far, so the switchover does not start with a full pipe to drain. */
static int wait_caught_up(lm_source *s)
{
    int ret = lm__src_enter(s, LM_STATUS_PRE_SWITCHOVER);
    if (ret == 0)
        ret = lm_conn_send_frame(&s->conn, LM_MSG_PING, NULL, 0);
    if (ret < 0)
        return ret;
    return lm_conn_expect(&s->conn, LM_MSG_PONG, NULL, 0, NULL, 0);
}

int lm__src_switchover(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    int ret = lm__src_stop_guest(s, "switchover");
    if (ret < 0)
        return ret;

    uint64_t count;
    /* Final sync: the guest is stopped, so nothing needs protecting again. */
    if ((ret = lm__src_sync_dirty(s, false, &count)) < 0 || (ret = send_dirty(s, count, false)) < 0)
        return ret;
    lm__src_end_round(s, count);
    /* Every page is out: closing the channels tells the destination so. */
    if (s->use_pool)
        lm_multifd_send_stop(&s->pool);

    if ((ret = lm__src_send_device_state(s)) < 0)
        return ret;
    if ((ret = lm_conn_send_frame(&s->conn, LM_MSG_COMPLETE, NULL, 0)) < 0)
        return ret;

    /* The digest while the destination drains the last pages. A tracker
     * whose markers would make never-populated pages look swapped ends
     * first; one that leaves the pagemap clean ends, as without
     * verification, after the destination resumed, outside the downtime
     * (ending it costs in proportion to the populated pages). */
    if (s->p->verify) {
        if (!lm_tracker_pagemap_clean(s->tracker)) {
            lm_tracker_destroy(s->tracker);
            s->tracker = NULL;
        }
        if ((ret = lm__src_send_verify(s)) < 0)
            return ret;
    }

    /* The destination hashes all of its RAM before it answers: allow for
     * that at a pessimistic 1 GB/s on top of the usual bound. */
    lm_resumed r, ack;
    unsigned extra_ms = s->p->verify ? (unsigned)(s->st.total / 1000000) : 0;
    if ((ret = lm__src_await_ready(s, &r, extra_ms)) < 0)
        return ret;
    /* What the destination spent hashing or waiting for our digest is
     * verification, not downtime; our own hashing overlapped its work. */
    s->st.verify_time_ms = (double)r.verify_time_us / 1000.0;
    s->st.verify_done = s->p->verify;
    s->st.verify_match = r.verified == 1;
    if (r.verified == 2)
        return lm_err_set(&ctx->err, -EIO,
                          "verification failed: the destination's RAM "
                          "digest differs from the source's (%s); the guest keeps running "
                          "on the source",
                          s->st.digest);
    if (r.status < 0)
        return lm_err_set(&ctx->err, r.status, "the destination cannot run the guest: %s",
                          strerror(-r.status));
    if ((ret = lm__src_commit(s, LM_MSG_COMMIT, &ack)) < 0)
        return ret;
    double down = lm_ns_to_ms(lm_now_ns() - s->stop_ns) - s->st.verify_time_ms;
    s->st.downtime_ms = down > 0 ? down : 0;
    s->st.downtime_bytes = lm__src_wire_bytes(s) - s->st.precopy_bytes;
    return lm__src_enter(s, LM_STATUS_COMPLETED);
}

/* Rounds until the rest fits in the downtime limit. Returns 0 for a
 * precopy switchover, 1 to switch to postcopy, or -errno. The pages found
 * by the last sync stay in s->dirty for whichever comes next. */
int lm__src_precopy(lm_source *s, bool *to_postcopy)
{
    int ret = lm__src_sections_setup(s);
    if (ret < 0)
        return ret;
    /* A broken link with --recover-timeout pauses and resumes from what
     * the destination has (resume.c); otherwise it fails the migration. */
    while (!s->fp_done && (ret = first_pass(s)) < 0)
        if (!lm__src_can_resume(s, ret) || (ret = lm__src_precopy_resume(s)) < 0)
            return ret;
    for (;;) {
        uint64_t count;
        if ((ret = lm__src_sync_dirty(s, !rearm_by_chunk(s), &count)) < 0)
            return ret;
        /* Converged is about what is left to send (count); the policies
         * are about how much the guest dirtied in the round. */
        lm__src_end_round(s, s->round_dirtied);
        lm__params_refresh(s->ctx, &s->params, &s->params_gen);
        /* Device sections send their part of the round while the guest
         * runs; pending iterative state keeps precopy going. */
        bool sections_done = true;
        if ((ret = lm__src_sections_iterate(s, &sections_done)) < 0)
            return ret;
        double remaining = (double)(count * (s->ctx->ram.page_size + 8));
        double expect_ms = s->bandwidth > 0 ? remaining * 1000.0 / s->bandwidth : 0;
        /* A pass cut short for postcopy measured no bandwidth to judge by. */
        bool ram_converged = expect_ms <= (double)s->p->downtime_limit_ms && !s->pass_cut;
        bool converged = ram_converged && sections_done;
        bool postcopy = lm__src_want_postcopy(s, s->round_dirtied);
        s->pass_cut = false;
        s->st.expected_downtime_ms = expect_ms;
        /* Throttling the vCPUs helps RAM converge, never a device section. */
        if (!ram_converged)
            lm__src_converge_policy(s, s->round_dirtied);
        /* No switchover, precopy's or postcopy's, before the destination's
         * sections said they are ready (switchover-ack). */
        bool switching = converged || s->st.nrounds >= s->p->max_rounds || postcopy;
        bool acked = true;
        if (switching && (ret = lm__src_switchover_acked(s, &acked)) < 0) {
            if (!lm__src_can_resume(s, ret) || (ret = lm__src_precopy_resume(s)) < 0)
                return ret;
            continue;
        }
        if (switching && acked) {
            *to_postcopy = !converged && (postcopy || s->p->postcopy);
            snprintf(s->st.switchover_reason, sizeof(s->st.switchover_reason), "%s",
                     converged      ? "converged"
                     : *to_postcopy ? "postcopy"
                                    : "round-limit");
            if ((ret = wait_caught_up(s)) == 0)
                return 0;
        } else {
            ret = send_dirty(s, count, rearm_by_chunk(s));
        }
        if (ret < 0 && (!lm__src_can_resume(s, ret) || (ret = lm__src_precopy_resume(s)) < 0))
            return ret;
    }
}
