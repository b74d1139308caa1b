/*
 * The source side of a migration, top down:
 *
 *   setup (connect, HELLO/HELLO_ACK, channels) -> precopy (precopy.c)
 *     -> switchover (precopy.c)        converged, or out of rounds
 *     -> postcopy (postcopy_src.c)     asked for, or not converging
 *
 * The state machine (state.h, docs/STATE-MACHINE.md) says what a failure
 * leaves: before the commit point the guest runs here again, intact; after
 * it (postcopy) it runs on the destination and this side keeps its pages.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "migration/source.h"
#include "util/clock.h"

int lm__src_handshake(lm_source *s, bool recover)
{
    lm_ctx *ctx = s->ctx;
    lm_hello h = {.page_size = (uint32_t)ctx->ram.page_size,
                  .flags = (s->p->verify ? LM_HELLO_VERIFY : 0) |
                           (s->p->postcopy ? LM_HELLO_POSTCOPY : 0) |
                           (s->p->postcopy && s->p->postcopy_no_preempt ? LM_HELLO_NO_PREEMPT : 0) |
                           (recover ? LM_HELLO_RECOVER : 0) |
                           (recover && s->committed ? LM_HELLO_COMMITTED : 0),
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
    return lm_conn_expect(&s->conn, LM_MSG_HELLO_ACK, NULL, 0, NULL, 0);
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
    /* A failed channel shut the main connection for reading (to wake this
     * thread): a read then ends at once, even as the destination's ERROR
     * is on its way. Give it up to the probe's time to arrive. */
    uint8_t hdr[LM_FRAME_HDR_SIZE];
    uint64_t until = lm_now_ns() + 200 * 1000000ull;
    while (lm_conn_peek(&probe, hdr, sizeof(hdr)) < (ssize_t)sizeof(hdr) && lm_now_ns() < until) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    int got; /* past any BUSY queued ahead of the reason */
    while ((got = lm_conn_recv_frame(&probe, &f)) == 0 && f.type == LM_MSG_BUSY && !f.length)
        ;
    if (got == 0 && f.type == LM_MSG_ERROR &&
        lm_conn_recv_body(&probe, &f, body, sizeof(body)) == 0) {
        lm_err_reset(&s->ctx->err);
        lm_conn_peer_error(&probe, body, f.length);
        memcpy(s->ctx->err.msg, scratch.msg, sizeof(scratch.msg));
        s->ctx->err.code = scratch.code;
    }
}

int lm__src_open_conn(lm_source *s, lm_conn *c, unsigned timeout_ms, const _Atomic int *cancel,
                      const char *peer, lm_err *err)
{
    if (s->transport->single_connection && s->single_used)
        return lm_err_set(err, -ENOTCONN,
                          "fd:%s was this migration's one connection and is gone: a new "
                          "connection needs tcp: or unix:",
                          s->addr);
    int fd, ret = s->transport->connect(s->addr, timeout_ms, &fd, err);
    if (ret < 0)
        return ret;
    s->single_used = s->transport->single_connection;
    lm_conn_init(c, fd, timeout_ms, cancel, peer, err);
    lm_conn_share_progress(c, &s->ctx->io_progress_ns);
    if (s->tls && (ret = lm_conn_start_tls(c, s->tls, s->tls_host)) < 0) {
        lm_conn_close(c);
        return ret;
    }
    return 0;
}

static int connect_channel(void *opaque, lm_conn *conn, const char *peer, lm_err *err)
{
    lm_source *s = opaque;
    return lm__src_open_conn(s, conn, s->p->io_timeout_ms, &s->ctx->cancel, peer, err);
}

/* The host part of a tcp: address, which the destination's certificate
 * must name unless --tls-hostname says otherwise. */
static void uri_host(const lm_transport_ops *t, const char *addr, char *out, size_t len)
{
    out[0] = '\0';
    if (strcmp(t->scheme, "tcp") != 0)
        return;
    const char *end = addr[0] == '[' ? strchr(addr, ']') : strrchr(addr, ':');
    const char *start = addr[0] == '[' ? addr + 1 : addr;
    if (end && end > start)
        snprintf(out, len, "%.*s", (int)(end - start), start);
}

/* Loads the credentials once, before anything connects: a missing file
 * is the user's first error. */
static int setup_tls(lm_source *s, const lm_transport_ops *t, const char *addr)
{
    lm_tls_config cfg = {.creds_dir = s->p->tls_creds,
                         .psk_file = s->p->tls_psk,
                         .psk_identity = s->p->tls_psk_identity,
                         .hostname = s->p->tls_hostname};
    if (!lm_tls_wanted(&cfg))
        return 0;
    uri_host(t, addr, s->tls_host, sizeof(s->tls_host));
    int ret = lm_tls_new(&s->tls, &cfg, false, &s->ctx->err);
    if (ret < 0)
        return ret;
    snprintf(s->st.tls_mode, sizeof(s->st.tls_mode), "%s", lm_tls_mode(s->tls));
    s->st.tls_ktls = lm_tls_ktls_available(s->st.tls_ktls_why, sizeof(s->st.tls_ktls_why));
    return 0;
}

int lm__src_create_tracker(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    lm_track_range ranges[LM_MAX_BLOCKS];
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        ranges[i] = (lm_track_range){b->host, b->len, b->npages};
    }
    if (s->p->tracker == LM_TRACKER_EXTERNAL) {
        if (!ctx->ext_tracker.sync)
            return lm_err_set(&ctx->err, -EINVAL,
                              "the external dirty tracker needs lm_set_dirty_tracker() first");
        return lm_tracker_create_external(&ctx->ext_tracker, ctx->ext_tracker_opaque, ranges,
                                          ctx->ram.nblocks, &s->tracker, &ctx->err);
    }
    lm_track_kvm kvm;
    lm_track_kvm_slot *kslots;
    int ret = lm__kvm_track_slots(ctx, &kvm, &kslots);
    if (ret < 0)
        return ret;
    ret = lm_tracker_create(s->p->tracker, ranges, ctx->ram.nblocks, &kvm, &s->tracker, &ctx->err);
    free(kslots);
    return ret;
}

static int check_params(lm_ctx *ctx, const lm_params *p)
{
    if (p->tracker == LM_TRACKER_EXTERNAL && !ctx->ext_tracker.sync)
        return lm_err_set(&ctx->err, -EINVAL,
                          "the external dirty tracker needs lm_set_dirty_tracker() first");
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

    if (t->single_connection && s->p->multifd_channels)
        return lm_err_set(&ctx->err, -EINVAL,
                          "%s is one connection: multifd channels need their own (use "
                          "--multifd-channels 0, or tcp:/unix:)",
                          uri);
    if (t->single_connection && s->p->postcopy && !s->p->postcopy_no_preempt)
        return lm_err_set(&ctx->err, -EINVAL,
                          "%s is one connection: postcopy's preempt connection needs its own "
                          "(add --no-postcopy-preempt, or use tcp:/unix:)",
                          uri);

    s->st.total = lm__ram_total(&ctx->ram);
    s->st.page_size = ctx->ram.page_size;
    s->st.remaining = s->st.total; /* every page is still to send */
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        if (!(s->dirty[i] = lm_bitmap_new(b->npages)))
            return lm_err_set(&ctx->err, -ENOMEM, "out of memory for dirty bitmaps");
        if (s->p->recover_timeout_ms && !(s->inflight[i] = lm_bitmap_new(b->npages)))
            return lm_err_set(&ctx->err, -ENOMEM, "out of memory for dirty bitmaps");
    }
    uint64_t chunk = lm__src_chunk_pages(s);
    if (!(s->populated = lm_bitmap_new(chunk)))
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    ret = lm_pagemap_open(&s->pm);
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
    /* Probe tracking before touching the network: a missing kernel feature
     * is the user's first error, not a half-made connection. */
    if ((ret = lm__src_create_tracker(s)) < 0)
        return ret;
    snprintf(s->st.tracker, sizeof(s->st.tracker), "%s", lm_tracker_name(s->tracker));

    if (!(s->batch = calloc(1, sizeof(*s->batch))) ||
        !(s->zr = calloc(LM_ZERO_RANGES_MAX, sizeof(*s->zr))) ||
        !(s->zr_buf = malloc(lm_zero_ranges_size(LM_ZERO_RANGES_MAX))))
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    if (getrandom(s->uuid, sizeof(s->uuid), 0) != sizeof(s->uuid))
        return lm_err_set(&ctx->err, -EIO, "getrandom failed: %s", strerror(errno));

    s->transport = t;
    s->addr = addr;
    if ((ret = setup_tls(s, t, addr)) < 0 ||
        (ret = lm__src_open_conn(s, &s->conn, s->p->io_timeout_ms, &ctx->cancel, "destination",
                                 &ctx->err)) < 0)
        return ret;
    lm_conn_cipher(&s->conn, s->st.tls_cipher, sizeof(s->st.tls_cipher));
    /* Single stream: zero detection (multifd mode) happens inline. */
    bool inline_detect = s->p->zero_detection == LM_ZERO_DETECT_MULTIFD;
    if ((ret = lm_send_chan_init(&s->main_chan, 0, &s->conn, true, inline_detect, s->p->compress,
                                 ctx->ram.page_size, &ctx->err)) < 0)
        return ret;
    if ((ret = lm__src_handshake(s, false)) < 0)
        return ret;
    return lm__src_connect_channels(s);
}

int lm__src_connect_channels(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    if (!s->p->multifd_channels)
        return s->p->postcopy ? lm__src_postcopy_connect(s) : 0;
    int ret = lm_multifd_send_start(&s->pool, s->p->multifd_channels, connect_channel, s, s->uuid,
                                    &ctx->cancel, s->p->zero_detection == LM_ZERO_DETECT_MULTIFD,
                                    s->p->compress, ctx->ram.page_size, s->conn.fd, &ctx->err);
    s->use_pool = ret == 0;
    if (ret == 0 && s->p->postcopy)
        ret = lm__src_postcopy_connect(s);
    return ret;
}

void lm__src_retire_channels(lm_source *s)
{
    if (s->use_pool) {
        lm_multifd_send_stop(&s->pool);
        lm_multifd_send_counters(&s->pool, &s->pool_acc.normal, &s->pool_acc.zero,
                                 &s->pool_acc.normal_bytes);
        s->pool_acc.bytes += lm_multifd_send_bytes(&s->pool);
        s->use_pool = false;
    }
    if (s->preempt_conn.fd >= 0) {
        s->pool_acc.preempt_bytes += s->preempt_conn.bytes_out;
        lm_conn_close(&s->preempt_conn);
        s->preempt_conn.fd = -1;
        s->preempt_conn.bytes_out = 0;
    }
    lm_send_chan_cleanup(&s->preempt_chan);
    memset(&s->preempt_chan, 0, sizeof(s->preempt_chan));
}

/* What a failure leaves: before the commit the guest runs here again; in
 * postcopy it runs on the destination and this side keeps its pages. */
static int enter_failed(lm_source *s, int ret)
{
    unsigned st = s->fsm.state;
    if (st == LM_STATUS_SWITCHOVER_PAUSED || st == LM_STATUS_POSTCOPY_PAUSED)
        return 0; /* the question stays open; the error says so */
    if (st == LM_STATUS_POSTCOPY_ACTIVE || (s->committed && s->postcopy_switch))
        return lm__src_enter(s, LM_STATUS_POSTCOPY_PAUSED);
    if (s->committed)
        return lm__src_enter(s, LM_STATUS_SWITCHOVER_PAUSED);
    if (ret == -ECANCELED) /* the cause, whatever the threads tripped over on the way out */
        snprintf(s->st.error_desc, sizeof(s->st.error_desc), "migration cancelled");
    return lm__src_enter(s, ret == -ECANCELED ? LM_STATUS_CANCELLING : LM_STATUS_FAILED);
}

int lm_migrate(lm_ctx *ctx, const char *uri, const lm_params *params)
{
    lm_source *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->ctx = ctx;
    int ret = lm__params_import(ctx, params, &s->params);
    if (ret < 0) {
        free(s);
        return ret;
    }
    s->p = &s->params;
    lm__params_begin(ctx, &s->params, &s->params_gen);
    s->conn.fd = -1;
    s->preempt_conn.fd = -1;
    s->pm.fd = -1;
    lm_err_reset(&ctx->err);
    /* A cancel or postcopy request heard while no migration ran was for
     * none (QEMU's migrate_cancel is a no-op then): this one starts clean. */
    atomic_store(&ctx->cancel, 0);
    atomic_store(&ctx->postcopy_requested, 0);
    atomic_store(&ctx->pause_requested, 0);
    atomic_store(&ctx->hold_reconnect, 0);
    lm__stats_reset(ctx, LM_STATUS_NONE);
    lm__fsm_init(&s->fsm, &lm_source_fsm, LM_STATUS_NONE);
    s->start_ns = lm_now_ns();

    ret = lm__src_enter(s, LM_STATUS_SETUP);
    if (ret == 0)
        ret = setup(s, uri);
    s->st.setup_time_ms = lm_ns_to_ms(lm_now_ns() - s->start_ns);
    bool to_postcopy = false;
    if (ret == 0 && (ret = lm__src_enter(s, LM_STATUS_ACTIVE)) == 0) {
        for (;;) {
            ret = lm__src_precopy(s, &to_postcopy);
            if (ret == 0)
                ret = to_postcopy ? lm__src_postcopy(s) : lm__src_switchover(s);
            /* The link broke with the guest stopped but before the commit:
             * run it again here and resume precopy (resume.c). */
            if (ret < 0 && lm__src_can_resume(s, ret) && s->fsm.state == LM_STATUS_DEVICE &&
                (ret = lm__src_precopy_resume(s)) == 0)
                continue;
            break;
        }
    }
    if (ret < 0)
        enter_failed(s, ret);

    /* Tracking ends before the guest runs again: nothing stays protected.
     * The guest comes back first, the slower goodbyes after. */
    lm_tracker_destroy(s->tracker);
    s->tracker = NULL;
    if (s->use_pool)
        lm_multifd_send_stop(&s->pool);
    /* Before the commit the guest's newest state is here: run it again. In
     * postcopy it ran on the destination; resuming here would fork it. */
    bool runs_here = s->fsm.state == LM_STATUS_FAILED || s->fsm.state == LM_STATUS_CANCELLING;
    if (runs_here && s->stopped && ctx->gops.resume)
        ctx->gops.resume(ctx->gopaque);
    /* A guest that keeps running here runs at full speed again. */
    if (runs_here && s->throttle && ctx->gops.throttle)
        ctx->gops.throttle(ctx->gopaque, 0);
    if (runs_here && s->dirty_limited && ctx->gops.dirty_limit)
        ctx->gops.dirty_limit(ctx->gopaque, 0);
    if (ret < 0 && s->conn.fd >= 0) {
        if (ret != -ECONNRESET && ret != -EPIPE)
            lm_conn_send_error(&s->conn, ret, ctx->err.msg);
        read_peer_reason(s);
    }
    if (s->fsm.state == LM_STATUS_CANCELLING)
        lm__src_enter(s, LM_STATUS_CANCELLED);

    lm__src_gather_counters(s);
    /* The last phase takes the bytes after it too (the goodbyes): the
     * three add up to transferred. */
    if (s->st.postcopy)
        s->st.postcopy_bytes = s->st.transferred - s->st.precopy_bytes - s->st.downtime_bytes;
    else if (s->stop_ns)
        s->st.downtime_bytes = s->st.transferred - s->st.precopy_bytes;
    else
        s->st.precopy_bytes = s->st.transferred;
    if (s->resume_wire0)
        s->st.resume_sent_bytes = lm__src_wire_bytes(s) - s->resume_wire0;
    /* Completed: the time until the destination ran the guest; what is
     * torn down after (tracking, channels) is not the migration's. */
    s->st.total_time_ms = lm_ns_to_ms((s->end_ns ? s->end_ns : lm_now_ns()) - s->start_ns);
    if (s->fsm.state == LM_STATUS_COMPLETED)
        s->st.remaining = 0;
    s->ended = true; /* the rates become averages (lm_stats) */
    lm__src_report_progress(s, true);
    lm__params_end(ctx);

    lm_send_chan_cleanup(&s->main_chan);
    free(s->batch);
    free(s->zr);
    free(s->zr_buf);
    lm_conn_close(&s->conn);
    if (s->preempt_conn.fd >= 0)
        lm_conn_close(&s->preempt_conn);
    lm_pagemap_close(&s->pm);
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        lm_bitmap_free(s->dirty[i]);
        lm_bitmap_free(s->inflight[i]);
    }
    lm_bitmap_free(s->populated);
    lm_tls_free(s->tls);
    free(s);
    return ret;
}
