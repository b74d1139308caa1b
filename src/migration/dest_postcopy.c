/* The destination's postcopy messages (the mechanism is postcopy_dst.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/dest.h"
#include "util/clock.h"

/* A source starts postcopy only as its precopy handshake says: postcopy
 * announced in HELLO and the pipe drained (PING answered, nothing since).
 * A switch out of that order is forged or broken. */
static int check_switch_order(lm_dest *d)
{
    if (!(d->hello.flags & LM_HELLO_POSTCOPY))
        return lm__dest_protocol_error(d, -EPROTO,
                                       "POSTCOPY_SWITCH, but the source did not announce postcopy");
    if (!d->caught_up)
        return lm__dest_protocol_error(d, -EPROTO,
                                       "POSTCOPY_SWITCH without the PING that drains the pipe "
                                       "before it");
    return 0;
}

/* The switch may come in the middle of the first pass (postcopy started
 * at once): every page this side has not received must then be in the
 * map of pages to come. A page in neither would run the guest here on
 * memory nobody sent. */
static int check_switch_covers(lm_dest *d)
{
    lm_ram *ram = &d->ctx->ram;
    uint64_t missing = 0, all = 0;
    for (unsigned i = 0; i < ram->nblocks; i++) {
        const lm_block *b = &ram->blocks[i];
        uint64_t words = LM_BITMAP_WORDS(b->npages);
        for (uint64_t w = 0; w < words; w++) {
            lm_word hole = ~(b->received[w] | d->pc.needed[i][w]);
            if (w == words - 1 && b->npages % 64)
                hole &= ((lm_word)1 << (b->npages % 64)) - 1;
            missing += (uint64_t)__builtin_popcountll(hole);
        }
        all += b->npages;
    }
    if (!missing)
        return 0;
    char why[256];
    snprintf(why, sizeof(why),
             "POSTCOPY_SWITCH leaves %llu of %llu pages neither received nor in its map of "
             "pages to come",
             (unsigned long long)missing, (unsigned long long)all);
    return lm__dest_protocol_error(d, -EPROTO, why);
}

/* Every needed page is placed after the commit, where nothing can be
 * refused any more (its stale copy is dropped first, but a page that came
 * as a zero page had none); with verification a hash is kept for every
 * page. The host must be able to give that now, while the source can still
 * run its guest. */
static int reserve_for_postcopy(lm_dest *d)
{
    lm_ram *ram = &d->ctx->ram;
    uint64_t pages = 0, all = 0;
    for (unsigned i = 0; i < ram->nblocks; i++) {
        const lm_block *b = &ram->blocks[i];
        all += b->npages;
        if (!b->owned)
            continue;
        for (uint64_t w = 0; w < LM_BITMAP_WORDS(b->npages); w++)
            pages += (uint64_t)__builtin_popcountll(d->pc.needed[i][w]);
    }
    uint64_t bytes = pages * ram->page_size;
    if (d->hello.flags & LM_HELLO_VERIFY)
        bytes += all * sizeof(uint64_t);
    return lm_ram_budget_reserve(&d->budget, bytes, "postcopy");
}

/* POSTCOPY_SWITCH: the pages still to come; the device state follows. */
int lm__dest_on_postcopy_switch(lm_dest *d, const lm_frame *f)
{
    int ret = check_switch_order(d);
    if (ret < 0)
        return ret;
    uint8_t *body;
    if ((ret = lm__dest_read_body(d, f, &body)) < 0)
        return ret;
    lm__dest_placement_end(d); /* postcopy registers the blocks with its own */
    ret = lm_postcopy_dst_init(&d->pc, d->ctx, body, f->length, d->hello.flags & LM_HELLO_VERIFY,
                               d->p->postcopy_move, &d->conn, &d->conn_lock);
    d->pc_init = true; /* whatever init allocated is freed by stop */
    free(body);
    if (ret == 0)
        ret = check_switch_covers(d);
    if (ret == 0)
        ret = reserve_for_postcopy(d);
    return ret < 0 ? ret : lm__dest_enter(d, LM_DST_POSTCOPY_SWITCH);
}

/* Everything but running: userfaultfd guards the missing pages, received
 * pages go through it, the device state is loaded. The guest stays stopped
 * until POSTCOPY_RUN, the commit. */
int lm__dest_postcopy_sinks(lm_dest *d)
{
    int ret = lm_recv_chan_set_sink(&d->main_chan, &d->pc.sink);
    if (ret == 0 && d->use_pool)
        ret = lm_multifd_recv_set_sink(&d->pool, &d->pc.sink);
    if (ret == 0 && d->have_preempt && (ret = lm_recv_chan_set_sink(&d->preempt, &d->pc.sink)) == 0)
        ret = lm_recv_chan_start_thread(&d->preempt);
    return ret;
}

int lm__dest_postcopy_ready(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    int ret = lm_postcopy_dst_start(&d->pc);
    if (ret == 0)
        ret = lm__dest_postcopy_sinks(d);
    if (ret == 0 && ctx->gops.load_state &&
        (ret = ctx->gops.load_state(ctx->gopaque, d->device_state, d->device_state_len)) < 0)
        lm_err_set(&ctx->err, ret, "loading the guest's device state failed");
    lm_resumed r = {.status = ret, .verify_time_us = d->pc.verify_ns / 1000};
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(&r, buf);
    int sent = lm__dest_send_locked(d, LM_MSG_SWITCHOVER_READY, buf, sizeof(buf));
    if (ret < 0)
        return ret;
    int entered = lm__dest_enter(d, LM_DST_POSTCOPY_READY);
    d->conn.cancel = NULL; /* only the source's word decides now */
    return sent < 0 ? sent : entered;
}

/* POSTCOPY_RUN, the commit: the guest runs here, its missing pages fault. */
int lm__dest_on_postcopy_run(lm_dest *d, const lm_frame *f)
{
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "POSTCOPY_RUN carries a body");
    return lm__dest_postcopy_run(d, true);
}

int lm__dest_postcopy_run(lm_dest *d, bool confirm)
{
    lm_ctx *ctx = d->ctx;
    lm_resumed r = {0};
    if (ctx->gops.resume && (r.status = ctx->gops.resume(ctx->gopaque)) < 0) {
        uint8_t buf[LM_RESUMED_SIZE];
        lm_resumed_encode(&r, buf);
        lm__dest_send_locked(d, LM_MSG_RESUMED, buf, sizeof(buf));
        return lm_err_set(&ctx->err, r.status, "the guest could not be resumed");
    }
    d->st.postcopy = true;
    lm__dest_mark_resumed(d);
    int ret = lm__dest_enter(d, LM_DST_POSTCOPY_ACTIVE);
    if (ret == 0 && confirm)
        lm__dest_confirm_commit(d);
    /* The vCPUs may have faulted already: their requests follow RESUMED,
     * which the source reads first. */
    lm_postcopy_dst_release(&d->pc);
    return ret;
}

static void postcopy_stats(lm_dest *d)
{
    lm_postcopy_dst *pc = &d->pc;
    d->st.postcopy_requests = atomic_load(&pc->requests);
    d->st.postcopy_pages_placed = atomic_load(&pc->placed_pages);
    d->st.postcopy_zero_placed = atomic_load(&pc->zero_placed);
    d->st.postcopy_duplicates = atomic_load(&pc->duplicates);
    d->st.postcopy_eexist = atomic_load(&pc->eexist);
    d->st.postcopy_moved = atomic_load(&pc->moved);
    d->st.postcopy_faults = atomic_load(&pc->faults);
    pthread_mutex_lock(&pc->lock);
    d->st.request_latency_p50_us = (double)lm_hist_quantile(&pc->latency_ns, 0.5) / 1000.0;
    d->st.request_latency_p99_us = (double)lm_hist_quantile(&pc->latency_ns, 0.99) / 1000.0;
    d->st.request_latency_max_us = (double)lm_hist_quantile(&pc->latency_ns, 1.0) / 1000.0;
    d->st.request_latency_count = pc->latency_ns.count;
    d->st.vcpu_blocktime_ms = (double)pc->blocktime_ns / 1e6;
    pthread_mutex_unlock(&pc->lock);
}

void lm__dest_postcopy_pause(lm_dest *d)
{
    /* The guest runs here on memory that is partly still on the source:
     * keep everything (vCPUs wait on their missing pages) for a later
     * recovery; never let it see zeros where its data should be. */
    postcopy_stats(d);
    if (d->have_preempt)
        lm_recv_chan_join(&d->preempt);
    lm_postcopy_dst_stop(&d->pc, false);
    d->pc_init = false;
}

/* Every page is here: give the memory back to the guest for good and tell
 * the source it may let go. The guest has all of its memory here from the
 * release on, so that is 'completed' even if the source cannot be told now
 * (lm__dest_linger_for_source tells it when it reconnects). */
static int postcopy_complete(lm_dest *d, lm_resumed *r)
{
    postcopy_stats(d);
    if (d->have_preempt)
        lm_recv_chan_join(&d->preempt);
    lm_postcopy_dst_stop(&d->pc, true);
    d->pc_init = false;
    d->done = *r;
    lm__dest_confirm_done(d);
    if (r->verified == 2) /* postcopy-verify -> failed: there is no copy to go back to */
        return lm_err_set(&d->ctx->err, -EIO,
                          "verification failed after postcopy: RAM digest %s "
                          "here differs from the source's %s; the guest runs here",
                          d->st.digest, d->source_digest);
    return lm__dest_enter(d, LM_DST_COMPLETED);
}

void lm__dest_confirm_done(lm_dest *d)
{
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(&d->done, buf);
    d->confirm_sent = lm__dest_send_locked(d, LM_MSG_POSTCOPY_DONE, buf, sizeof(buf)) == 0;
}

/* POSTCOPY_END: the source sent every needed page; wait until all are
 * placed, then the source's digest (when verifying) or the end. */
int lm__dest_on_postcopy_end(lm_dest *d, const lm_frame *f)
{
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "POSTCOPY_END carries a body");
    int ret = d->use_pool ? lm_multifd_recv_finish(&d->pool, d->conn.timeout_ms) : 0;
    if (ret == 0)
        ret = lm_postcopy_dst_wait(&d->pc, d->conn.timeout_ms);
    if (ret < 0)
        return ret;
    lm__dest_count_faults(d, false);
    lm_resumed r = {0};
    if (!(d->hello.flags & LM_HELLO_VERIFY))
        return postcopy_complete(d, &r);
    d->verify_t0 = lm_now_ns();
    return lm__dest_enter(d, LM_DST_POSTCOPY_VERIFY);
}

/* The digest comes from the hashes taken as each page was placed. */
int lm__dest_on_postcopy_verify(lm_dest *d, const lm_frame *f)
{
    lm_resumed r = {0};
    int ret =
        lm__ram_digest_of(&d->ctx->ram, d->pc.hashes, d->digest, &d->digest_pages, &d->ctx->err);
    if (ret == 0)
        ret = lm__dest_take_verify(d, f, d->digest, d->digest_pages, &r);
    return ret < 0 ? ret : postcopy_complete(d, &r);
}
