/*
 * The source's round primitives, shared by precopy (precopy.c) and postcopy
 * (postcopy_src.c): queue pages into batches and hand them to a channel,
 * pace and report, end a round with a barrier, sync the tracker, stop the
 * guest, send the device state and the digest. Nothing here decides when.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migration/section.h"
#include "migration/source.h"
#include "util/clock.h"
#include "util/zero.h"

#define PROGRESS_INTERVAL_NS 100000000ull
#define RATE_WINDOW_NS       100000000ull
/* A dirty rate needs this long a look (the last syncs of a switchover
 * come milliseconds apart: pages over a tiny interval are no rate). */
#define PACE_SLICE_NS           20000000ull
#define MIN_DIRTY_RATE_NS       50000000ull
#define MIN_BYTES_FOR_BANDWIDTH (4ull << 20)

int lm__src_enter(lm_source *s, lm_status to)
{
    int ret = lm__fsm_enter(&s->fsm, to);
    if (ret < 0)
        return lm_err_set(&s->ctx->err, ret, "internal error: the source cannot go from %s to %s",
                          lm__fsm_name(&s->fsm), lm_status_name(to));
    s->st.status = to;
    if (to == LM_STATUS_COMPLETED)
        s->end_ns = lm_now_ns();
    lm__stats_publish(s->ctx, &s->st);
    return 0;
}

uint64_t lm__src_wire_bytes(lm_source *s)
{
    /* The preempt connection's too: QEMU counts every byte it sends. */
    return s->conn.bytes_out + s->pool_acc.bytes + s->pool_acc.preempt_bytes +
           (s->use_pool ? lm_multifd_send_bytes(&s->pool) : 0) +
           (s->preempt_conn.fd >= 0 ? s->preempt_conn.bytes_out : 0);
}

/* Page counters live with the channels that send; gather them. */
void lm__src_gather_counters(lm_source *s)
{
    lm_send_chan *m = &s->main_chan;
    s->st.normal = atomic_load_explicit(&m->normal, memory_order_relaxed);
    s->st.duplicate = atomic_load_explicit(&m->zero, memory_order_relaxed);
    s->st.normal_bytes = atomic_load_explicit(&m->normal_bytes, memory_order_relaxed);
    if (s->use_pool)
        lm_multifd_send_counters(&s->pool, &s->st.normal, &s->st.duplicate, &s->st.normal_bytes);
    s->st.normal += s->pool_acc.normal;
    s->st.duplicate += s->pool_acc.zero + s->zr_pages;
    s->st.normal_bytes += s->pool_acc.normal_bytes;
    s->st.multifd_bytes = s->pool_acc.bytes + (s->use_pool ? lm_multifd_send_bytes(&s->pool) : 0);
    s->st.transferred = lm__src_wire_bytes(s);
}

/* The current rates (QEMU's mbps and pages-per-second while it runs) over
 * a window of at least RATE_WINDOW_NS; averages after setup at the end. */
static void update_rates(lm_source *s, uint64_t now)
{
    uint64_t pages = s->st.normal + s->st.duplicate;
    if (s->ended) {
        double secs = (s->st.total_time_ms - s->st.setup_time_ms) / 1000.0;
        s->st.mbps = secs > 0 ? (double)s->st.transferred * 8 / 1e6 / secs : 0;
        s->st.pages_per_second = secs > 0 ? (double)pages / secs : 0;
        return;
    }
    if (!s->rate_ns) {
        s->rate_ns = now;
        return;
    }
    if (now - s->rate_ns < RATE_WINDOW_NS)
        return;
    double secs = (double)(now - s->rate_ns) / 1e9;
    s->st.mbps = (double)(s->st.transferred - s->rate_bytes) * 8 / 1e6 / secs;
    s->st.pages_per_second = (double)(pages - s->rate_pages) / secs;
    s->rate_ns = now;
    s->rate_bytes = s->st.transferred;
    s->rate_pages = pages;
}

void lm__src_report_progress(lm_source *s, bool force)
{
    uint64_t now = lm_now_ns();
    if (!force && now - s->last_progress_ns < PROGRESS_INTERVAL_NS)
        return;
    s->last_progress_ns = now;
    lm__src_gather_counters(s);
    if (!s->stop_ns) /* precopy bytes: what went out before the guest stopped */
        s->st.precopy_bytes = s->st.transferred;
    s->st.total_time_ms = lm_ns_to_ms((s->end_ns ? s->end_ns : now) - s->start_ns);
    update_rates(s, now);
    lm__stats_publish(s->ctx, &s->st);
    if (s->p->progress) {
        lm_progress pr = {
            /* the round under way: nrounds counts those that ended */
            .round = s->st.nrounds + (s->ended ? 0 : 1),
            .pass_percent =
                s->round_pages ? 100.0 * (double)s->round_done / (double)s->round_pages : 100.0,
            .throughput_bps = s->st.mbps * 1e6 / 8,
            .dirty_pages_rate = s->dirty_rate,
            .remaining_bytes = s->st.remaining,
            .elapsed_ms = s->st.total_time_ms,
            .transferred = s->st.transferred,
            .status = s->st.status,
            .throttle_percent = s->throttle,
        };
        s->p->progress(s->p->progress_opaque, &pr);
    }
}

/* --max-bandwidth: every batch costs bytes / rate seconds of wire time;
 * the next one may start only when that time has passed. The debt carries
 * over, so the average holds at any rate (a window that lets one batch
 * through whatever its size does not hold for small rates), and idle time
 * is not saved up for a burst of more than one batch. */
static void pace(lm_source *s, uint64_t bytes)
{
    lm__params_refresh(s->ctx, &s->params, &s->params_gen);
    if (!s->p->max_bandwidth || s->fsm.state == LM_STATUS_DEVICE)
        return;
    uint64_t now = lm_now_ns(), rate = s->p->max_bandwidth;
    if (s->pace_next_ns < now)
        s->pace_next_ns = now;
    s->pace_next_ns += (uint64_t)((double)bytes * 1e9 / (double)rate);
    /* In slices, so that a cancel, a postcopy request or a new rate is
     * heard within 20 ms at any rate. */
    while (now < s->pace_next_ns && !atomic_load(&s->ctx->cancel) && !lm__src_postcopy_now(s)) {
        if (lm__params_refresh(s->ctx, &s->params, &s->params_gen)) {
            if (!s->p->max_bandwidth) {
                s->pace_next_ns = now;
                break;
            }
            /* What is still owed, at the new rate. */
            s->pace_next_ns = now + (uint64_t)((double)(s->pace_next_ns - now) * (double)rate /
                                               (double)s->p->max_bandwidth);
            rate = s->p->max_bandwidth;
            continue;
        }
        uint64_t ns = s->pace_next_ns - now < PACE_SLICE_NS ? s->pace_next_ns - now : PACE_SLICE_NS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ns};
        nanosleep(&ts, NULL);
        now = lm_now_ns();
    }
}

bool lm__src_postcopy_now(const lm_source *s)
{
    /* Not before the destination's sections acknowledged the switchover:
     * a pass cut then would only stall the pages (precopy.c asks at each
     * round's end). */
    return s->p->postcopy && s->fsm.state == LM_STATUS_ACTIVE &&
           (s->switchover_acked || !s->ctx->nsections) &&
           atomic_load_explicit(&s->ctx->postcopy_requested, memory_order_relaxed);
}

/* After n pages of bytes on the wire: the round's progress, pacing, and
 * whether to stop the pass (postcopy) or the migration (cancel). */
static int sent(lm_source *s, uint64_t n, uint64_t bytes)
{
    s->round_done += n;
    s->st.remaining = s->round_done < s->round_pages
                          ? (s->round_pages - s->round_done) * s->ctx->ram.page_size
                          : 0;
    pace(s, bytes);
    lm__src_report_progress(s, false);
    if (lm__src_postcopy_now(s))
        s->pass_cut = true; /* the pass stops after the page being queued */
    if (atomic_load(&s->ctx->cancel))
        return lm_err_set(&s->ctx->err, -ECANCELED, "migration cancelled");
    return 0;
}

/* Hands the batch to a channel: an idle multifd sender thread, or inline
 * on the main connection for a single stream. */
static int flush_pages(lm_source *s)
{
    lm_page_batch *b = s->batch;
    uint32_t n = lm_batch_pages(b);
    if (!n)
        return 0;
    uint64_t bytes = b->nnormal * s->ctx->ram.page_size + 8ull * n;
    int ret = s->use_pool ? lm_multifd_send_queue(&s->pool, &s->batch)
                          : lm_send_chan_packet(&s->main_chan, b, &s->ctx->err);
    if (ret < 0)
        return ret;
    lm_batch_reset(s->batch);
    return sent(s, n, bytes);
}

/* The pending runs as one ZERO_RANGES frame, inline: a thread hand-off
 * would cost more than the frame. Safe for ordering with the channels'
 * pages: a page goes once in a round, and rounds end with a barrier. */
static int flush_zero_ranges(lm_source *s)
{
    if (!s->nzr)
        return 0;
    uint64_t pages = 0;
    for (uint32_t i = 0; i < s->nzr; i++)
        pages += s->zr[i].npages;
    size_t len = lm_zero_ranges_size(s->nzr);
    lm_zero_ranges_encode(s->zr_block->id, s->zr, s->nzr, s->zr_buf);
    int ret = lm_conn_send_frame(&s->conn, LM_MSG_ZERO_RANGES, s->zr_buf, (uint32_t)len);
    if (ret < 0)
        return ret;
    s->nzr = 0;
    s->zr_pages += pages;
    /* What the destination may spend on them where it must read or clear
     * each page (it says BUSY meanwhile): 100 us a page, far above a fault. */
    s->conn.busy_allow_ns += pages * 100000;
    return sent(s, pages, LM_FRAME_HDR_SIZE + len);
}

int lm__src_flush_batch(lm_source *s)
{
    int ret = flush_zero_ranges(s);
    return ret < 0 ? ret : flush_pages(s);
}

int lm__src_queue_zero_run(lm_source *s, lm_block *b, uint64_t first, uint64_t n)
{
    /* The destination takes ranges in precopy only: in postcopy a page
     * goes in a packet, whose placement the fault handler knows. */
    if (s->postcopy_switch) {
        for (uint64_t p = first; p < first + n; p++) {
            int ret = lm__src_queue_page(s, b, p);
            if (ret < 0)
                return ret;
        }
        return 0;
    }
    lm_zero_range *last = s->nzr ? &s->zr[s->nzr - 1] : NULL;
    if (last && s->zr_block == b && last->first + last->npages == first) {
        last->npages += n;
        return 0;
    }
    if (s->nzr && (s->zr_block != b || s->nzr == LM_ZERO_RANGES_MAX)) {
        int ret = flush_zero_ranges(s);
        if (ret < 0)
            return ret;
    }
    s->zr_block = b;
    s->zr[s->nzr++] = (lm_zero_range){first, n};
    return 0;
}

/* Queues one page to be read and sent. Legacy detection looks here, on
 * this thread: a zero page joins the zero runs. */
int lm__src_queue_page(lm_source *s, lm_block *b, uint64_t page)
{
    uint64_t off = page * s->ctx->ram.page_size;
    bool zero = s->p->zero_detection == LM_ZERO_DETECT_LEGACY &&
                lm_buffer_is_zero(b->host + off, s->ctx->ram.page_size);
    if (zero && !s->postcopy_switch)
        return lm__src_queue_zero_run(s, b, page, 1);
    if (s->batch->block != b || lm_batch_pages(s->batch) == LM_PACKET_MAX_PAGES) {
        int ret = flush_pages(s); /* hands s->batch over and takes an empty one */
        if (ret < 0)
            return ret;
        s->batch->block = b;
    }
    lm_page_batch *pk = s->batch;
    if (zero)
        pk->zero[pk->nzero++] = off;
    else
        pk->normal[pk->nnormal++] = off;
    return 0;
}

/* The end of a round: everything queued is on the wire, every channel has
 * sent its SYNC, then ROUND_END on the main connection. */
int lm__src_end_of_round_barrier(lm_source *s)
{
    int ret = lm__src_flush_batch(s);
    if (ret == 0 && s->use_pool)
        ret = lm_multifd_send_sync(&s->pool);
    if (ret == 0)
        ret = lm_conn_send_frame(&s->conn, LM_MSG_ROUND_END, NULL, 0);
    return ret;
}

void lm__src_begin_round(lm_source *s, uint64_t pages)
{
    s->round_pages = pages;
    s->round_done = 0;
    s->round_start_ns = lm_now_ns();
    s->round_bytes0 = lm__src_wire_bytes(s);
    s->st.remaining = pages * s->ctx->ram.page_size;
}

/* Ends a round: records its statistics and updates the bandwidth estimate. */
void lm__src_end_round(lm_source *s, uint64_t dirty_pages)
{
    uint64_t ns = lm_now_ns() - s->round_start_ns, bytes = lm__src_wire_bytes(s) - s->round_bytes0;
    double bw = ns ? (double)bytes * 1e9 / (double)ns : 0;
    if (bytes >= MIN_BYTES_FOR_BANDWIDTH || s->bandwidth == 0)
        s->bandwidth = bw;
    /* The policies read last_round, which holds every round; the report
     * keeps the first LM_MAX_ROUND_STATS. */
    s->last_round = (lm_round_stats){
        .round = s->st.nrounds + 1,
        .dirty_pages = dirty_pages,
        .bytes = bytes,
        .duration_ms = lm_ns_to_ms(ns),
        .bandwidth_bps = bw,
        .dirty_pages_rate = s->dirty_rate,
        .throttle_percent = s->throttle,
    };
    if (s->st.nrounds < LM_MAX_ROUND_STATS)
        s->st.rounds[s->st.nrounds] = s->last_round;
    s->st.nrounds++;
}

uint64_t lm__src_chunk_pages(const lm_source *s)
{
    uint64_t pages = s->p->track_chunk / s->ctx->ram.page_size,
             max = lm__ram_max_block_pages(&s->ctx->ram);
    return pages && pages < max ? pages : max;
}

/* ORs the tracker's dirty pages into s->dirty (which may still hold pages
 * a converged round left for the switchover); returns how many are set.
 * Also ends the accounting of what the round dirtied (s->round_dirtied),
 * from which the dirty rate comes. */
int lm__src_sync_dirty(lm_source *s, bool rearm, uint64_t *count)
{
    lm_ctx *ctx = s->ctx;
    uint64_t n = 0, before = 0, now = lm_now_ns();
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        before += lm_bitmap_count(s->dirty[i], ctx->ram.blocks[i].npages);
        int ret = lm_tracker_sync(s->tracker, i, 0, ctx->ram.blocks[i].npages, s->dirty[i], rearm,
                                  &ctx->err);
        if (ret < 0)
            return ret;
        n += lm_bitmap_count(s->dirty[i], ctx->ram.blocks[i].npages);
    }
    s->round_dirtied = n + s->rearm_found;
    /* The rate: pages this sync found new (not those a converged round
     * left for the switchover), over the time the guest ran since the
     * last sync. */
    uint64_t found = n - before + s->rearm_found, until = s->stopped ? s->stop_ns : now;
    s->rearm_found = 0;
    /* A window shorter than MIN_DIRTY_RATE_NS says little about a rate (a
     * few pages over microseconds reads as millions a second), so short
     * syncs add to the window rather than replace the estimate, with two
     * exceptions: a running guest that dirtied nothing is an exact zero at
     * any length, and pages found replace an estimate of zero. The sync
     * while stopped keeps the estimate the guest's running made. */
    s->rate_found += found;
    if (s->last_sync_ns && until > s->last_sync_ns) {
        uint64_t window = until - s->last_sync_ns;
        if (window >= MIN_DIRTY_RATE_NS || (s->rate_found == 0 && !s->stopped) ||
            (s->rate_found > 0 && s->dirty_rate == 0)) {
            s->dirty_rate = (double)s->rate_found * 1e9 / (double)window;
            s->rate_found = 0;
            s->last_sync_ns = now;
        }
    } else {
        s->rate_found = 0;
        s->last_sync_ns = now;
    }
    s->st.dirty_sync_count++;
    s->st.dirty_pages_rate = s->dirty_rate;
    s->st.remaining = n * ctx->ram.page_size;
    *count = n;
    return 0;
}

int lm__src_stop_guest(lm_source *s, const char *why)
{
    lm_ctx *ctx = s->ctx;
    s->stop_ns = lm_now_ns();
    s->st.precopy_bytes = lm__src_wire_bytes(s);
    int ret = lm__src_enter(s, LM_STATUS_DEVICE);
    if (ret < 0)
        return ret;
    ret = ctx->gops.stop ? ctx->gops.stop(ctx->gopaque) : 0;
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "the guest could not be stopped for %s", why);
    s->stopped = true;
    return 0;
}

int lm__src_send_device_state(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    void *state = NULL;
    size_t len = 0;
    /* The sections' complete parts first: DEVICE_STATE closes them. */
    int ret = lm__src_sections_complete(s);
    if (ret < 0)
        return ret;
    ret = ctx->gops.save_state ? ctx->gops.save_state(ctx->gopaque, &state, &len) : 0;
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "saving the guest's device state failed");
    if (len > LM_FRAME_MAX_LEN)
        ret = lm_err_set(&ctx->err, -E2BIG, "device state of %zu bytes exceeds %u", len,
                         LM_FRAME_MAX_LEN);
    else
        ret = lm_conn_send_frame(&s->conn, LM_MSG_DEVICE_STATE, state, (uint32_t)len);
    free(state);
    return ret;
}

int lm__src_send_verify(lm_source *s)
{
    lm_verify_msg v;
    int ret = lm__ram_digest(&s->ctx->ram, v.digest, &v.pages, &s->ctx->err);
    if (ret < 0)
        return ret;
    lm__digest_hex(v.digest, s->st.digest, sizeof(s->st.digest));
    uint8_t buf[LM_VERIFY_SIZE];
    lm_verify_encode(&v, buf);
    return lm_conn_send_frame(&s->conn, LM_MSG_VERIFY, buf, sizeof(buf));
}

int lm__src_decode_map(lm_source *s, const uint8_t *body, size_t len, lm_word *const out[],
                       uint64_t *count)
{
    lm_ctx *ctx = s->ctx;
    const uint8_t *in = body;
    *count = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        char why[128];
        long used = lm_switch_block_decode(in, (size_t)(body + len - in), b->id, b->npages, out[i],
                                           why, sizeof(why));
        if (used < 0)
            return lm_err_set(&ctx->err, -EBADMSG, "invalid RECOVER_MAP: %s", why);
        in += used;
        *count += lm_bitmap_count(out[i], b->npages);
    }
    return 0;
}
