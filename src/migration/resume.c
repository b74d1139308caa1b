/*
 * Precopy resume, source side: a link broken during precopy does not throw
 * the work away (with --recover-timeout on both sides).
 *
 * Before the guest stops nothing is at stake: the guest runs here and the
 * tracker keeps recording its writes. The source pauses ('precopy-paused'),
 * reconnects, and the destination answers with the map of pages it never
 * received (RECOVER_MAP). What must still be sent is then:
 *   - the pages it lacks in the part of RAM the first pass has armed (the
 *     rest is still ahead of the first pass, which goes on from where it
 *     stopped and arms it as usual);
 *   - the pages of the round that was being sent when the link broke: a page
 *     sent in an earlier round and being overwritten when the cut came may
 *     be torn on the destination although its map says received;
 *   - whatever the guest wrote meanwhile, which the next sync reports.
 * Past the timeout the migration fails as before: the guest runs here.
 */
#include <errno.h>
#include <stdlib.h>

#include "migration/postcopy.h"
#include "migration/section.h"
#include "migration/source.h"
#include "util/clock.h"

bool lm__src_can_resume(const lm_source *s, int ret)
{
    unsigned st = s->fsm.state;
    bool switchover = st == LM_STATUS_DEVICE && !s->postcopy_switch;
    /* A section's iterative part lost with the link cannot be told apart
     * from one that arrived: such a migration fails rather than resume. */
    return s->p->recover_timeout_ms && !s->committed && lm__link_lost(ret) &&
           !lm__sections_iterative(s->ctx) &&
           (st == LM_STATUS_ACTIVE || st == LM_STATUS_PRE_SWITCHOVER ||
            st == LM_STATUS_PRECOPY_PAUSED || switchover) &&
           !atomic_load(&s->ctx->cancel);
}

/* The link broke in the precopy switchover, before the commit: the guest
 * is stopped and tracking may be over (it ends before the digest). Arm
 * every page again while the guest is still stopped, so that nothing it
 * writes from now on is missed, then let it run. The destination holds
 * what was sent up to the stop, except what its map will say it lacks and
 * the final round's pages (maybe torn): both go again. */
static int rearm_and_run(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    int ret = 0;
    if (!s->tracker && (ret = lm__src_create_tracker(s)) < 0)
        return ret;
    uint64_t chunk = lm__src_chunk_pages(s);
    for (unsigned i = 0; i < ctx->ram.nblocks && ret == 0; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        for (uint64_t first = 0; first < b->npages && ret == 0; first += chunk) {
            uint64_t n = b->npages - first < chunk ? b->npages - first : chunk;
            ret = lm_tracker_arm(s->tracker, i, first, n, s->populated, &ctx->err);
        }
    }
    if (ret < 0)
        return ret;
    s->stopped = false;
    if (ctx->gops.resume && (ret = ctx->gops.resume(ctx->gopaque)) < 0)
        return lm_err_set(&ctx->err, ret, "the guest could not be resumed");
    s->stop_ns = 0;
    return 0;
}

/* The map of what the destination lacks: the first-pass part goes to the
 * first pass, the rest (and the torn round) into s->dirty. */
static int take_map(lm_source *s, lm_word *const lacks[])
{
    lm_ctx *ctx = s->ctx;
    size_t n = lm_postcopy_switch_size(&ctx->ram);
    uint8_t *body = malloc(n ? n : 1);
    if (!body)
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    uint32_t len;
    uint64_t count;
    int ret = lm_conn_expect(&s->conn, LM_MSG_RECOVER_MAP, body, n, &len, 0);
    if (ret == 0 && len != n)
        ret = lm_err_set(&ctx->err, -EBADMSG, "RECOVER_MAP of %u bytes, the RAM layout needs %zu",
                         len, n);
    if (ret == 0)
        ret = lm__src_decode_map(s, body, n, lacks, &count);
    free(body);
    if (ret < 0)
        return ret;
    /* What it lacked in data (this time): populated pages cost a page,
     * others an offset. */
    s->st.resume_lacked_bytes = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks && ret == 0; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        lm_word *present = lm_bitmap_new(b->npages);
        if (!present)
            return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
        ret = lm_pagemap_pages(&s->pm, b->host, b->len, LM_PM_PRESENT | LM_PM_SWAPPED, present);
        for (uint64_t p = lm_bitmap_next_set(lacks[i], b->npages, 0); ret == 0 && p < b->npages;
             p = lm_bitmap_next_set(lacks[i], b->npages, p + 1)) {
            s->st.resume_lacked_bytes += 8 + (lm_bit_test(present, p) ? ctx->ram.page_size : 0);
            bool ahead = !s->fp_done && (i > s->fp_block || (i == s->fp_block && p >= s->fp_end));
            if (!ahead)
                lm_bit_set(s->dirty[i], p);
        }
        lm_bitmap_free(present);
        if (ret < 0)
            return lm_err_set(&ctx->err, ret, "pagemap scan failed");
        if (s->fp_done)
            lm_bitmap_or(s->dirty[i], s->inflight[i], b->npages);
    }
    return 0;
}

int lm__src_precopy_resume(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    unsigned wait_ms = s->p->recover_timeout_ms;
    lm_word *lacks[LM_MAX_BLOCKS] = {0};
    int ret = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks && ret == 0; i++)
        if (!(lacks[i] = lm_bitmap_new(ctx->ram.blocks[i].npages)))
            ret = lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    if (ret == 0 && s->fsm.state == LM_STATUS_DEVICE)
        ret = rearm_and_run(s);
    uint64_t paused_at = lm_now_ns();
    while (ret == 0) {
        if (s->fsm.state != LM_STATUS_PRECOPY_PAUSED &&
            (ret = lm__src_enter(s, LM_STATUS_PRECOPY_PAUSED)) < 0)
            break;
        lm__src_retire_channels(s);
        lm_batch_reset(s->batch);
        s->nzr = 0; /* what they held is not received: the map says so */
        /* The guest runs on meanwhile; a cancel still works here. */
        s->conn.cancel = &ctx->cancel;
        if ((ret = lm__src_reconnect(s, lm_now_ns() + (uint64_t)wait_ms * 1000000)) < 0) {
            lm_err_reset(&ctx->err);
            ret = lm_err_set(&ctx->err, ret,
                             "the link to the destination broke during precopy and it did not "
                             "come back within %u ms; the guest keeps running here",
                             wait_ms + s->p->io_timeout_ms);
            break;
        }
        s->conn.cancel = &ctx->cancel;
        uint64_t back_at = lm_now_ns();
        s->st.paused_ms += lm_ns_to_ms(back_at - paused_at);
        s->resume_wire0 = lm__src_wire_bytes(s);
        if ((ret = lm__src_connect_channels(s)) == 0 && (ret = take_map(s, lacks)) == 0) {
            s->st.resume_ms = lm_ns_to_ms(lm_now_ns() - back_at);
            ret = lm__src_enter(s, LM_STATUS_ACTIVE);
            break;
        }
        if (!lm__src_can_resume(s, ret))
            break;
        paused_at = lm_now_ns(); /* cut again while resuming: pause again */
        ret = 0;
    }
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        lm_bitmap_free(lacks[i]);
    return ret;
}
