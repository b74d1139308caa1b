/*
 * The source side of a precopy migration.
 *
 *   connect -> HELLO/HELLO_ACK -> first pass -> rounds -> switchover
 *
 * First pass: every page once, chunk by chunk; each chunk is armed for dirty
 * tracking just before it is sent, and pages the kernel says were never
 * populated go as zero pages without being read. Rounds: sync the tracker,
 * estimate how long the remaining dirty data would take at the bandwidth
 * measured in the last round, and switch over when that fits in the downtime
 * limit (or after max_rounds). Switchover: stop the guest, last sync, last
 * pages, device state, COMPLETE (with the digest when verifying), then wait
 * for RESUMED. Any failure before RESUMED resumes the guest here, intact.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>

#include "dirty/pagemap.h"
#include "dirty/tracker.h"
#include "migration/engine.h"
#include "migration/source.h"
#include "multifd/send.h"
#include "proto/wire.h"
#include "transport/conn.h"
#include "transport/transport.h"
#include "util/clock.h"
#include "util/zero.h"

#define PROGRESS_INTERVAL_NS    250000000ull
#define RATE_WINDOW_NS          100000000ull
#define MIN_BYTES_FOR_BANDWIDTH (4ull << 20)

uint64_t lm__src_wire_bytes(lm_source *s)
{
    return s->conn.bytes_out + (s->use_pool ? lm_multifd_send_bytes(&s->pool) : 0);
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
    s->st.multifd_bytes = s->use_pool ? lm_multifd_send_bytes(&s->pool) : 0;
    s->st.transferred = lm__src_wire_bytes(s);
}

static void report_progress(lm_source *s, bool force)
{
    uint64_t now = lm_now_ns();
    if (!force && now - s->last_progress_ns < PROGRESS_INTERVAL_NS)
        return;
    s->last_progress_ns = now;
    lm__src_gather_counters(s);
    s->st.precopy_bytes = s->in_downtime ? s->st.precopy_bytes : s->st.transferred;
    s->st.total_time_ms = lm_ns_to_ms(now - s->start_ns);
    lm__stats_publish(s->ctx, &s->st);
    if (s->p->progress) {
        double secs = (double)(now - s->round_start_ns) / 1e9;
        lm_progress pr = {
            .round = s->st.nrounds ? s->st.nrounds : 1,
            .pass_percent =
                s->round_pages ? 100.0 * (double)s->round_done / (double)s->round_pages : 100.0,
            .throughput_bps =
                secs > 0 ? (double)(lm__src_wire_bytes(s) - s->round_bytes0) / secs : 0,
            .dirty_pages_rate = s->dirty_rate,
            .remaining_bytes = s->round_done < s->round_pages
                                   ? (s->round_pages - s->round_done) * s->ctx->ram.page_size
                                   : 0,
        };
        s->p->progress(s->p->progress_opaque, &pr);
    }
}

/* --max-bandwidth: at most max/10 bytes per 100 ms window. */
static void pace(lm_source *s, uint64_t bytes)
{
    if (!s->p->max_bandwidth || s->in_downtime)
        return;
    uint64_t now = lm_now_ns();
    if (now - s->rate_window_ns >= RATE_WINDOW_NS) {
        s->rate_window_ns = now;
        s->rate_window_bytes = 0;
    }
    s->rate_window_bytes += bytes;
    if (s->rate_window_bytes >= s->p->max_bandwidth / 10) {
        uint64_t until = s->rate_window_ns + RATE_WINDOW_NS;
        if (until > now) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(until - now)};
            nanosleep(&ts, NULL);
        }
        s->rate_window_ns = lm_now_ns();
        s->rate_window_bytes = 0;
    }
}

/* Hands a batch to a channel: pages that need reading go to an idle multifd
 * sender thread (or inline on the main connection for a single stream);
 * never-populated pages go inline, since a thread hand-off would cost more
 * than writing their offsets. Safe for ordering: they are only ever sent
 * in the first pass, and every page only once in a round. */
static int flush_one(lm_source *s, lm_page_batch **bp, bool via_pool)
{
    lm_page_batch *b = *bp;
    uint32_t n = lm_batch_pages(b);
    if (!n)
        return 0;
    uint64_t bytes = b->nnormal * s->ctx->ram.page_size + 8ull * n;
    int ret = via_pool ? lm_multifd_send_queue(&s->pool, bp)
                       : lm_send_chan_packet(&s->main_chan, b, &s->ctx->err);
    if (ret < 0)
        return ret;
    lm_batch_reset(*bp);
    s->round_done += n;
    pace(s, bytes);
    report_progress(s, false);
    if (atomic_load(&s->ctx->cancel))
        return lm_err_set(&s->ctx->err, -ECANCELED, "migration cancelled");
    return 0;
}

int lm__src_flush_batch(lm_source *s)
{
    int ret = flush_one(s, &s->zbatch, false);
    return ret < 0 ? ret : flush_one(s, &s->batch, s->use_pool);
}

/* Queues one page; 'known_zero' when it is zero without looking (never
 * populated). Legacy detection looks here, on this thread. */
int lm__src_queue_page(lm_source *s, lm_block *b, uint64_t page, bool known_zero)
{
    lm_page_batch **bp = known_zero ? &s->zbatch : &s->batch;
    if ((*bp)->block != b || lm_batch_pages(*bp) == LM_PACKET_MAX_PAGES) {
        int ret = flush_one(s, bp, !known_zero && s->use_pool);
        if (ret < 0)
            return ret;
        (*bp)->block = b;
    }
    lm_page_batch *pk = *bp;
    uint64_t off = page * s->ctx->ram.page_size;
    bool zero = known_zero;
    if (!zero && s->p->zero_detection == LM_ZERO_DETECT_LEGACY)
        zero = lm_buffer_is_zero(b->host + off, s->ctx->ram.page_size);
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
}

/* Ends a round: records its statistics and updates the bandwidth estimate. */
void lm__src_end_round(lm_source *s, uint64_t dirty_pages)
{
    uint64_t ns = lm_now_ns() - s->round_start_ns, bytes = lm__src_wire_bytes(s) - s->round_bytes0;
    double bw = ns ? (double)bytes * 1e9 / (double)ns : 0;
    if (bytes >= MIN_BYTES_FOR_BANDWIDTH || s->bandwidth == 0)
        s->bandwidth = bw;
    if (s->st.nrounds < LM_MAX_ROUND_STATS) {
        lm_round_stats *r = &s->st.rounds[s->st.nrounds];
        r->round = s->st.nrounds + 1;
        r->dirty_pages = dirty_pages;
        r->bytes = bytes;
        r->duration_ms = lm_ns_to_ms(ns);
        r->bandwidth_bps = bw;
        r->dirty_pages_rate = s->dirty_rate;
        r->throttle_percent = s->throttle;
    }
    s->st.nrounds++;
}

static uint64_t max_block_pages(const lm_source *s)
{
    uint64_t max = 1;
    for (unsigned i = 0; i < s->ctx->ram.nblocks; i++)
        max = s->ctx->ram.blocks[i].npages > max ? s->ctx->ram.blocks[i].npages : max;
    return max;
}

/* Pages armed (and re-armed) at a time: --track-chunk, or a whole block. */
static uint64_t chunk_pages_of(const lm_source *s)
{
    uint64_t pages = s->p->track_chunk / s->ctx->ram.page_size, max = max_block_pages(s);
    return pages && pages < max ? pages : max;
}

static int first_pass(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    uint64_t chunk_pages = chunk_pages_of(s), total = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        total += ctx->ram.blocks[i].npages;
    lm__src_begin_round(s, total);
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        for (uint64_t first = 0; first < b->npages; first += chunk_pages) {
            uint64_t n = b->npages - first < chunk_pages ? b->npages - first : chunk_pages;
            /* Arm just before sending; the tracker says which pages hold
             * data (the rest are zero pages, sent without being read). */
            lm_bitmap_clear_all(s->populated, n);
            int ret = lm_tracker_arm(s->tracker, i, first, n, s->populated, &ctx->err);
            if (ret < 0)
                return ret;
            for (uint64_t p = 0; p < n; p++)
                if ((ret = lm__src_queue_page(s, b, first + p, !lm_bit_test(s->populated, p))) < 0)
                    return ret;
        }
    }
    return lm__src_end_of_round_barrier(s);
}

/* ORs the tracker's dirty pages into s->dirty (which may still hold pages
 * a converged round left for the switchover); returns how many are set.
 * Also ends the accounting of what the round dirtied (s->round_dirtied),
 * from which the dirty rate comes. */
int lm__src_sync_dirty(lm_source *s, bool rearm, uint64_t *count)
{
    lm_ctx *ctx = s->ctx;
    uint64_t n = 0, now = lm_now_ns();
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        int ret = lm_tracker_sync(s->tracker, i, 0, ctx->ram.blocks[i].npages, s->dirty[i], rearm,
                                  &ctx->err);
        if (ret < 0)
            return ret;
        n += lm_bitmap_count(s->dirty[i], ctx->ram.blocks[i].npages);
    }
    s->round_dirtied = n + s->rearm_found;
    s->rearm_found = 0;
    if (s->last_sync_ns && now > s->last_sync_ns)
        s->dirty_rate = (double)s->round_dirtied * 1e9 / (double)(now - s->last_sync_ns);
    s->last_sync_ns = now;
    s->st.dirty_sync_count++;
    *count = n;
    return 0;
}

/* Re-arming by chunk (--track-chunk smaller than a block): a round's sync
 * only reads the dirty set, to size the round; each chunk is re-armed just
 * before its pages are sent, so the guest meets one chunk of fresh
 * protection at a time instead of all of its working set at once. */
static bool rearm_by_chunk(const lm_source *s)
{
    return chunk_pages_of(s) < max_block_pages(s);
}

/* Sends s->dirty. With rearm, each chunk's protection is renewed first and
 * what it reports (written since the round's sync) goes out with it. */
static int send_dirty(lm_source *s, uint64_t count, bool rearm)
{
    lm_ctx *ctx = s->ctx;
    uint64_t chunk_pages = chunk_pages_of(s);
    lm__src_begin_round(s, count);
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
                 p = lm_bitmap_next_set(s->dirty[i], end, p + 1))
                if ((ret = lm__src_queue_page(s, b, p, false)) < 0)
                    return ret;
        }
        lm_bitmap_clear_all(s->dirty[i], b->npages);
    }
    return lm__src_end_of_round_barrier(s);
}

static int handshake(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    lm_hello h = {.page_size = (uint32_t)ctx->ram.page_size,
                  .flags = (s->p->verify ? LM_HELLO_VERIFY : 0) |
                           (s->p->postcopy ? LM_HELLO_POSTCOPY : 0) |
                           (s->p->postcopy && s->p->postcopy_no_preempt ? LM_HELLO_NO_PREEMPT : 0),
                  .nblocks = ctx->ram.nblocks,
                  .nchannels = s->p->multifd_channels,
                  .compress = (uint32_t)s->p->compress};
    memcpy(h.uuid, s->uuid, sizeof(h.uuid));
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        h.blocks[i].id = ctx->ram.blocks[i].id;
        h.blocks[i].len = ctx->ram.blocks[i].len;
        memcpy(h.blocks[i].name, ctx->ram.blocks[i].name, LM_BLOCK_NAME_MAX);
        h.ram_total += ctx->ram.blocks[i].len;
    }
    uint8_t buf[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    lm_hello_encode(&h, buf);
    int ret = lm_conn_send_frame(&s->conn, LM_MSG_HELLO, buf, (uint32_t)lm_hello_size(h.nblocks));
    if (ret < 0)
        return ret;
    lm_frame f;
    if ((ret = lm_conn_recv_frame(&s->conn, &f)) < 0)
        return ret;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    if ((ret = lm_conn_recv_body(&s->conn, &f, body, sizeof(body))) < 0)
        return ret;
    if (f.type == LM_MSG_ERROR)
        return lm_conn_peer_error(&s->conn, body, f.length);
    if (f.type != LM_MSG_HELLO_ACK || f.length)
        return lm_err_set(&ctx->err, -EPROTO, "the destination answered HELLO with %s",
                          lm_msg_name(f.type));
    return 0;
}

/* After a send failed, the destination may have said why: prefer its words. */
static void read_peer_reason(lm_source *s)
{
    lm_frame f;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    lm_err scratch;
    lm_err_init(&scratch);
    lm_conn probe = s->conn;
    probe.err = &scratch;
    probe.timeout_ms = 200;
    if (lm_conn_recv_frame(&probe, &f) == 0 && f.type == LM_MSG_ERROR &&
        lm_conn_recv_body(&probe, &f, body, sizeof(body)) == 0) {
        lm_err_reset(&s->ctx->err);
        lm_conn_peer_error(&probe, body, f.length);
        memcpy(s->ctx->err.msg, scratch.msg, sizeof(scratch.msg));
        s->ctx->err.code = scratch.code;
    }
}

int lm__src_stop_guest(lm_source *s, const char *why)
{
    lm_ctx *ctx = s->ctx;
    s->stop_ns = lm_now_ns();
    s->st.precopy_bytes = lm__src_wire_bytes(s);
    s->in_downtime = true;
    int ret = ctx->gops.stop ? ctx->gops.stop(ctx->gopaque) : 0;
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "the guest could not be stopped for %s", why);
    s->stopped = true;
    return 0;
}

static int switchover(lm_source *s)
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

    void *state = NULL;
    size_t state_len = 0;
    if (ctx->gops.save_state && (ret = ctx->gops.save_state(ctx->gopaque, &state, &state_len)) < 0)
        return lm_err_set(&ctx->err, ret, "saving the guest's device state failed");
    if (state_len > LM_FRAME_MAX_LEN) {
        free(state);
        return lm_err_set(&ctx->err, -E2BIG, "device state of %zu bytes exceeds %u", state_len,
                          LM_FRAME_MAX_LEN);
    }
    ret = lm_conn_send_frame(&s->conn, LM_MSG_DEVICE_STATE, state, (uint32_t)state_len);
    free(state);
    if (ret < 0)
        return ret;

    if ((ret = lm_conn_send_frame(&s->conn, LM_MSG_COMPLETE, NULL, 0)) < 0)
        return ret;

    /* The digest while the destination drains the last pages. It needs
     * tracking ended first (its markers would make never-populated pages
     * look swapped). Without verification tracking ends after the
     * destination resumed, outside the downtime. */
    if (s->p->verify) {
        lm_verify_msg v;
        lm_tracker_destroy(s->tracker);
        s->tracker = NULL;
        if ((ret = lm__ram_digest(&ctx->ram, v.digest, &v.pages, &ctx->err)) < 0)
            return ret;
        lm__digest_hex(v.digest, s->st.digest, sizeof(s->st.digest));
        uint8_t vbuf[LM_VERIFY_SIZE];
        lm_verify_encode(&v, vbuf);
        if ((ret = lm_conn_send_frame(&s->conn, LM_MSG_VERIFY, vbuf, sizeof(vbuf))) < 0)
            return ret;
    }

    /* The destination hashes all of its RAM before it answers: allow for
     * that at a pessimistic 1 GB/s on top of the usual bound. */
    lm_frame f;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    unsigned io_timeout = s->conn.timeout_ms;
    if (s->p->verify)
        s->conn.timeout_ms += (unsigned)(s->st.total / 1000000);
    ret = lm_conn_recv_frame(&s->conn, &f);
    s->conn.timeout_ms = io_timeout;
    if (ret < 0 || (ret = lm_conn_recv_body(&s->conn, &f, body, sizeof(body))) < 0)
        return ret;
    if (f.type == LM_MSG_ERROR)
        return lm_conn_peer_error(&s->conn, body, f.length);
    lm_resumed r;
    char why[256];
    if (f.type != LM_MSG_RESUMED)
        return lm_err_set(&ctx->err, -EPROTO, "expected RESUMED, got %s", lm_msg_name(f.type));
    if ((ret = lm_resumed_decode(body, f.length, &r, why, sizeof(why))) < 0)
        return lm_err_set(&ctx->err, ret, "invalid RESUMED: %s", why);
    uint64_t end = lm_now_ns();
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
        return lm_err_set(&ctx->err, r.status, "the destination could not resume the guest: %s",
                          strerror(-r.status));
    double down = lm_ns_to_ms(end - s->stop_ns) - s->st.verify_time_ms;
    s->st.downtime_ms = down > 0 ? down : 0;
    s->st.downtime_bytes = lm__src_wire_bytes(s) - s->st.precopy_bytes;
    return 0;
}

static int connect_channel(void *opaque, int *fd, lm_err *err)
{
    lm_source *s = opaque;
    return s->transport->connect(s->addr, s->p->io_timeout_ms, fd, err);
}

static int check_params(lm_ctx *ctx, const lm_params *p)
{
    if (p->multifd_channels > LM_MAX_CHANNELS)
        return lm_err_set(&ctx->err, -EINVAL, "at most %d multifd channels", LM_MAX_CHANNELS);
    if ((unsigned)p->zero_detection > LM_ZERO_DETECT_NONE)
        return lm_err_set(&ctx->err, -EINVAL, "unknown zero-page detection mode %d",
                          (int)p->zero_detection);
    if ((unsigned)p->compress >= LM_COMPRESSION__COUNT)
        return lm_err_set(&ctx->err, -EINVAL, "unknown compression method %d", (int)p->compress);
    /* A step of 0 would never throttle (or never throttle more). */
    if (p->auto_converge && (p->throttle_initial < 1 || p->throttle_initial > 99 ||
                             p->throttle_increment < 1 || p->throttle_increment > 99))
        return lm_err_set(&ctx->err, -EINVAL,
                          "auto-converge throttle steps must be 1..99%% (initial %u, increment %u)",
                          p->throttle_initial, p->throttle_increment);
    return 0;
}

static int setup(lm_source *s, const char *uri)
{
    lm_ctx *ctx = s->ctx;
    if (!ctx->ram.nblocks)
        return lm_err_set(&ctx->err, -EINVAL, "no RAM blocks registered: nothing to migrate");
    int ret = check_params(ctx, s->p);
    if (ret < 0)
        return ret;
    const char *addr;
    const lm_transport_ops *t = lm_transport_for(uri, &addr, &ctx->err);
    if (!t)
        return -EINVAL;

    lm_track_range ranges[LM_MAX_BLOCKS];
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        ranges[i] = (lm_track_range){b->host, b->len, b->npages};
        s->st.total += b->len;
        if (!(s->dirty[i] = lm_bitmap_new(b->npages)))
            return lm_err_set(&ctx->err, -ENOMEM, "out of memory for dirty bitmaps");
    }
    uint64_t chunk = chunk_pages_of(s);
    if (!(s->populated = lm_bitmap_new(chunk)))
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    ret = lm_pagemap_open(&s->pm);
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
    /* Probe tracking before touching the network: a missing kernel feature
     * is the user's first error, not a half-made connection. */
    if ((ret = lm_tracker_create(s->p->tracker, ranges, ctx->ram.nblocks, &s->tracker, &ctx->err)) <
        0)
        return ret;
    snprintf(s->st.tracker, sizeof(s->st.tracker), "%s", lm_tracker_name(s->tracker));

    if (!(s->batch = calloc(1, sizeof(*s->batch))) || !(s->zbatch = calloc(1, sizeof(*s->zbatch))))
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    if (getrandom(s->uuid, sizeof(s->uuid), 0) != sizeof(s->uuid))
        return lm_err_set(&ctx->err, -EIO, "getrandom failed: %s", strerror(errno));

    int fd;
    s->transport = t;
    s->addr = addr;
    if ((ret = t->connect(addr, s->p->io_timeout_ms, &fd, &ctx->err)) < 0)
        return ret;
    lm_conn_init(&s->conn, fd, s->p->io_timeout_ms, &ctx->cancel, "destination", &ctx->err);
    lm_conn_share_progress(&s->conn, &ctx->io_progress_ns);
    /* Single stream: zero detection (multifd mode) happens inline. */
    bool inline_detect = s->p->zero_detection == LM_ZERO_DETECT_MULTIFD;
    if ((ret = lm_send_chan_init(&s->main_chan, 0, &s->conn, true, inline_detect, s->p->compress,
                                 ctx->ram.page_size, &ctx->err)) < 0)
        return ret;
    if ((ret = handshake(s)) < 0)
        return ret;
    if (!s->p->multifd_channels)
        return s->p->postcopy ? lm__src_postcopy_connect(s) : 0;
    ret = lm_multifd_send_start(&s->pool, s->p->multifd_channels, connect_channel, s, s->uuid,
                                s->p->io_timeout_ms, &ctx->cancel,
                                s->p->zero_detection == LM_ZERO_DETECT_MULTIFD, s->p->compress,
                                ctx->ram.page_size, s->conn.fd, &ctx->io_progress_ns, &ctx->err);
    s->use_pool = ret == 0;
    if (ret == 0 && s->p->postcopy)
        ret = lm__src_postcopy_connect(s);
    return ret;
}

/* PING/PONG: returns once the destination has processed everything sent so
 * far, so the switchover does not start with a full pipe to drain. */
static int wait_caught_up(lm_source *s)
{
    int ret = lm_conn_send_frame(&s->conn, LM_MSG_PING, NULL, 0);
    if (ret < 0)
        return ret;
    lm_frame f;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    if ((ret = lm_conn_recv_frame(&s->conn, &f)) < 0 ||
        (ret = lm_conn_recv_body(&s->conn, &f, body, sizeof(body))) < 0)
        return ret;
    if (f.type == LM_MSG_ERROR)
        return lm_conn_peer_error(&s->conn, body, f.length);
    if (f.type != LM_MSG_PONG || f.length)
        return lm_err_set(&s->ctx->err, -EPROTO, "expected PONG, got %s", lm_msg_name(f.type));
    return 0;
}

/* Auto-converge and dirty limit: when a round dirtied more than half of what
 * it managed to send, twice in a row, slow the guest down (QEMU's
 * cpu-throttle-initial / -increment), or cap each vCPU's dirty rate. */
static void converge_policy(lm_source *s, uint64_t dirty_pages)
{
    lm_ctx *ctx = s->ctx;
    const lm_round_stats *r =
        s->st.nrounds ? &s->st.rounds[(s->st.nrounds - 1) % LM_MAX_ROUND_STATS] : NULL;
    uint64_t dirtied = dirty_pages * ctx->ram.page_size;
    if (!r || !(s->p->auto_converge || s->p->dirty_limit))
        return;
    s->high_dirty_rounds = dirtied * 2 > r->bytes ? s->high_dirty_rounds + 1 : 0;
    if (s->high_dirty_rounds < 2)
        return;
    s->high_dirty_rounds = 0;
    if (s->p->dirty_limit && !s->dirty_limited && ctx->gops.dirty_limit &&
        ctx->gops.dirty_limit(ctx->gopaque, s->p->dirty_limit) == 0) {
        s->dirty_limited = true;
        s->st.dirty_limit = s->p->dirty_limit;
    }
    if (s->p->auto_converge && ctx->gops.throttle) {
        unsigned next =
            s->throttle ? s->throttle + s->p->throttle_increment : s->p->throttle_initial;
        next = next > 99 ? 99 : next;
        if (next != s->throttle && ctx->gops.throttle(ctx->gopaque, next) == 0)
            s->throttle = next;
    }
    s->st.cpu_throttle_percentage = s->throttle;
}

/* Rounds until the rest fits in the downtime limit. Returns 0 for a
 * precopy switchover, 1 to switch to postcopy, or -errno. The pages found
 * by the last sync stay in s->dirty for whichever comes next. */
static int precopy(lm_source *s)
{
    int ret = first_pass(s);
    if (ret < 0)
        return ret;
    for (;;) {
        uint64_t count;
        if ((ret = lm__src_sync_dirty(s, !rearm_by_chunk(s), &count)) < 0)
            return ret;
        /* Converged is about what is left to send (count); the policies
         * are about how much the guest dirtied in the round. */
        lm__src_end_round(s, s->round_dirtied);
        double remaining = (double)(count * (s->ctx->ram.page_size + 8));
        double expect_ms = s->bandwidth > 0 ? remaining * 1000.0 / s->bandwidth : 0;
        bool converged = expect_ms <= (double)s->p->downtime_limit_ms;
        bool postcopy = lm__src_want_postcopy(s, s->round_dirtied);
        s->st.dirty_pages_rate = s->dirty_rate;
        if (!converged)
            converge_policy(s, s->round_dirtied);
        if (converged || s->st.nrounds >= s->p->max_rounds || postcopy) {
            bool to_postcopy = !converged && (postcopy || s->p->postcopy);
            snprintf(s->st.switchover_reason, sizeof(s->st.switchover_reason), "%s",
                     converged     ? "converged"
                     : to_postcopy ? "postcopy"
                                   : "round-limit");
            s->st.expected_downtime_ms = expect_ms;
            if ((ret = wait_caught_up(s)) < 0)
                return ret;
            return to_postcopy;
        }
        if ((ret = send_dirty(s, count, rearm_by_chunk(s))) < 0)
            return ret;
    }
}

int lm_migrate(lm_ctx *ctx, const char *uri, const lm_params *params)
{
    lm_params defaults;
    if (!params) {
        lm_params_init(&defaults);
        params = &defaults;
    }
    lm_source *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->ctx = ctx;
    s->p = params;
    s->conn.fd = -1;
    s->preempt_conn.fd = -1;
    s->pm.fd = -1;
    lm_err_reset(&ctx->err);
    lm__stats_reset(ctx, "setup");
    s->start_ns = lm_now_ns();
    snprintf(s->st.status, sizeof(s->st.status), "setup");

    int ret = setup(s, uri);
    s->st.setup_time_ms = lm_ns_to_ms(lm_now_ns() - s->start_ns);
    if (ret == 0) {
        snprintf(s->st.status, sizeof(s->st.status), "active");
        lm__stats_publish(ctx, &s->st);
        ret = precopy(s);
    }
    if (ret == 1)
        ret = lm__src_postcopy(s);
    else if (ret == 0)
        ret = switchover(s);

    /* Tracking ends before the guest runs again: nothing stays protected.
     * The guest comes back first, the slower goodbyes after. */
    lm_tracker_destroy(s->tracker);
    s->tracker = NULL;
    if (s->use_pool)
        lm_multifd_send_stop(&s->pool);
    /* Before postcopy the guest's newest state is here: run it again. In
     * postcopy it ran on the destination; resuming here would fork it. */
    if (ret < 0 && s->stopped && !s->in_postcopy && ctx->gops.resume)
        ctx->gops.resume(ctx->gopaque);
    /* A guest that keeps running here runs at full speed again. */
    if (ret < 0 && s->throttle && ctx->gops.throttle)
        ctx->gops.throttle(ctx->gopaque, 0);
    if (ret < 0 && s->dirty_limited && ctx->gops.dirty_limit)
        ctx->gops.dirty_limit(ctx->gopaque, 0);
    if (ret < 0 && s->conn.fd >= 0) {
        if (ret != -ECONNRESET && ret != -EPIPE)
            lm_conn_send_error(&s->conn, ret, ctx->err.msg);
        read_peer_reason(s);
    }

    lm__src_gather_counters(s);
    s->st.total_time_ms = lm_ns_to_ms(lm_now_ns() - s->start_ns);
    double secs = s->st.total_time_ms / 1000.0;
    s->st.mbps = secs > 0 ? (double)s->st.transferred * 8 / 1e6 / secs : 0;
    s->st.pages_per_second = secs > 0 ? (double)(s->st.normal + s->st.duplicate) / secs : 0;
    snprintf(s->st.status, sizeof(s->st.status), "%s",
             ret == 0         ? "completed"
             : s->in_postcopy ? "postcopy-paused"
                              : "failed");
    report_progress(s, true);

    lm_send_chan_cleanup(&s->main_chan);
    free(s->batch);
    free(s->zbatch);
    lm_conn_close(&s->conn);
    if (s->preempt_conn.fd >= 0)
        lm_conn_close(&s->preempt_conn);
    lm_pagemap_close(&s->pm);
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        lm_bitmap_free(s->dirty[i]);
    lm_bitmap_free(s->populated);
    free(s);
    return ret;
}
