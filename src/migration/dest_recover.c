/*
 * The destination after a broken link at or past the commit point
 * (docs/STATE-MACHINE.md): it keeps what it holds, listens on its address
 * again and takes back the one source that names this migration (HELLO
 * with RECOVER and the migration's uuid); anything else that connects is
 * told what this side waits for and dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "migration/dest.h"
#include "util/clock.h"

/* The reconnecting HELLO must describe the migration we hold: same uuid,
 * same layout, same options (but RECOVER). */
static bool same_migration(const lm_hello *was, const lm_hello *now)
{
    uint32_t how = LM_HELLO_RECOVER | LM_HELLO_COMMITTED;
    if (!(now->flags & LM_HELLO_RECOVER) || memcmp(was->uuid, now->uuid, 16) ||
        (was->flags & ~how) != (now->flags & ~how) || was->nblocks != now->nblocks ||
        was->page_size != now->page_size || was->nchannels != now->nchannels ||
        was->compress != now->compress)
        return false;
    for (unsigned i = 0; i < was->nblocks; i++)
        if (was->blocks[i].id != now->blocks[i].id || was->blocks[i].len != now->blocks[i].len)
            return false;
    return true;
}

/* One greeting: 0 when it is our source coming back (the HELLO_ACK is
 * sent, d->conn replaced), -EAGAIN when it is something else (told what
 * this side waits for, and turned away). */
static int take_back(lm_dest *d, lm_dest_lobby *lb, lm_greeting *g)
{
    uint8_t buf[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    lm_hello h;
    char why[256] = "a connection that is not this migration's source";
    if (!g->bad_code && g->f.type == LM_MSG_HELLO &&
        lm_conn_recv_body(&g->conn, &g->f, buf, sizeof(buf)) == 0 &&
        lm_hello_decode(buf, g->f.length, &h, why, sizeof(why)) == 0 &&
        same_migration(&d->hello, &h) &&
        lm_conn_send_frame(&g->conn, LM_MSG_HELLO_ACK, NULL, 0) == 0) {
        uint64_t in = d->conn.bytes_in, out = d->conn.bytes_out;
        pthread_mutex_lock(&d->conn_lock);
        lm_conn_close(&d->conn);
        lm__dest_adopt(d, &d->conn, g, "source");
        d->conn.bytes_in += in;
        d->conn.bytes_out += out;
        pthread_mutex_unlock(&d->conn_lock);
        d->st.reconnects++;
        d->source_committed = h.flags & LM_HELLO_COMMITTED;
        d->source_said_error = false;
        return 0;
    }
    lm_conn_send_error(&g->conn, -EBUSY,
                       "this destination is paused in another migration and takes back only "
                       "its own source");
    lm__dest_lobby_turn_away(lb, g, why);
    return -EAGAIN;
}

int lm__dest_take_back_source(lm_dest *d, uint64_t deadline_ns)
{
    lm_dest_lobby lb;
    lm__dest_lobby_init(&lb, d);
    lb.cancel = NULL; /* paused: only the source's word decides, not a cancel */
    int ret;
    for (;;) {
        lm_greeting g;
        ret = lm__dest_lobby_next(&lb, deadline_ns, NULL, &g);
        if (ret < 0 || take_back(d, &lb, &g) == 0)
            break;
    }
    if (ret < 0 && ret != -ETIMEDOUT)
        lm_err_set(&d->ctx->err, ret, "waiting for the source to reconnect failed");
    lm__dest_lobby_close(&lb);
    return ret;
}

/* Stops what read the broken link: the multifd channels (their counts
 * kept) and the preempt receiver. The fault thread keeps running: vCPUs'
 * faults are noted and asked for again once the source is back. */
static void retire_receivers(lm_dest *d)
{
    lm__dest_placement_end(d); /* none may wait on a missing page; in place from here */
    if (d->pc_init)
        lm_postcopy_dst_link_down(&d->pc);
    if (d->use_pool) {
        lm_multifd_recv_stop(&d->pool);
        lm_multifd_recv_counters(&d->pool, &d->pool_acc.normal, &d->pool_acc.zero,
                                 &d->pool_acc.normal_bytes, &d->pool_acc.bytes);
        d->use_pool = false;
    }
    if (d->have_preempt) {
        shutdown(d->preempt.own_conn.fd, SHUT_RDWR);
        lm_recv_chan_join(&d->preempt);
        lm_recv_chan_cleanup(&d->preempt);
        lm_conn_close(&d->preempt.own_conn);
        d->have_preempt = false;
    }
}

/* RECOVER_MAP: what this side still lacks, in POSTCOPY_SWITCH's layout:
 * in postcopy the needed pages not placed yet, in precopy the pages never
 * received. */
static int send_map(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    lm_word *missing[LM_MAX_BLOCKS] = {0};
    size_t n = lm_postcopy_switch_size(&ctx->ram);
    uint8_t *body = malloc(n ? n : 1);
    int ret = body ? 0 : -ENOMEM;
    for (unsigned r = 0; r < ctx->ram.nblocks && ret == 0; r++)
        if (!(missing[r] = lm_bitmap_new(ctx->ram.blocks[r].npages)))
            ret = -ENOMEM;
    if (ret == 0) {
        if (d->pc_init) {
            lm_postcopy_dst_missing(&d->pc, missing);
        } else {
            for (unsigned r = 0; r < ctx->ram.nblocks; r++) {
                lm_block *b = &ctx->ram.blocks[r];
                lm_bitmap_set_range(missing[r], 0, b->npages);
                for (uint64_t p = lm_bitmap_next_set(b->received, b->npages, 0); p < b->npages;
                     p = lm_bitmap_next_set(b->received, b->npages, p + 1))
                    lm_bit_clear(missing[r], p);
            }
        }
        lm_postcopy_switch_encode(&ctx->ram, missing, body);
        ret = n > LM_FRAME_MAX_LEN ? lm_err_set(&ctx->err, -E2BIG, "RAM too large for one map")
                                   : lm__dest_send_locked(d, LM_MSG_RECOVER_MAP, body, (uint32_t)n);
    } else {
        lm_err_set(&ctx->err, ret, "out of memory for the recovery map");
    }
    for (unsigned r = 0; r < ctx->ram.nblocks; r++)
        lm_bitmap_free(missing[r]);
    free(body);
    return ret;
}

/* The source is back on the main connection: its channels, the map, and
 * every request still unanswered. */
static int reattach(lm_dest *d)
{
    int ret = lm__dest_accept_channels(d);
    if (ret == 0)
        ret = lm__dest_postcopy_sinks(d);
    if (ret == 0)
        ret = send_map(d);
    if (ret == 0)
        ret = lm_postcopy_dst_link_up(&d->pc);
    return ret;
}

/* How long to wait for the source: its recover timeout starts only when it
 * notices the break, which may take it an I/O timeout (a link that goes
 * silent rather than reset), so the destination's window is that much
 * longer and the two always overlap. */
static unsigned source_window_ms(const lm_dest *d, unsigned recover_ms)
{
    uint64_t ms = (uint64_t)recover_ms + d->p->io_timeout_ms;
    return ms > UINT32_MAX ? UINT32_MAX : (unsigned)ms;
}

/* Enters 'paused' (once), stops the broken link's receivers and waits for
 * the source until wait_ms from now; the wait counts as paused time.
 * Returns lm__dest_take_back_source()'s result, or -EINVAL when the state
 * machine refuses (a bug). */
static int pause_and_take_back(lm_dest *d, unsigned paused, unsigned wait_ms, uint64_t *back_at)
{
    int ret = d->fsm.state == paused ? 0 : lm__dest_enter(d, paused);
    if (ret < 0)
        return ret;
    retire_receivers(d);
    uint64_t paused_at = lm_now_ns();
    ret = lm__dest_take_back_source(d, paused_at + (uint64_t)wait_ms * 1000000);
    *back_at = lm_now_ns();
    d->st.paused_ms += lm_ns_to_ms(*back_at - paused_at);
    return ret;
}

int lm__dest_postcopy_recover(lm_dest *d)
{
    unsigned wait_ms = source_window_ms(d, lm__recover_timeout_ms(d->p, true));
    int ret = 0;
    for (;;) {
        uint64_t back_at;
        ret = pause_and_take_back(d, LM_DST_POSTCOPY_PAUSED, wait_ms, &back_at);
        if (ret == -ETIMEDOUT) {
            lm_err_reset(&d->ctx->err);
            lm_err_set(&d->ctx->err, ret,
                       "postcopy-paused: the link to the source broke and it did not come back "
                       "within %u ms; the guest stays here, its vCPUs waiting on the pages still "
                       "on the source",
                       wait_ms);
            break;
        }
        if (ret == 0 && !d->source_committed)
            ret = lm__dest_protocol_error(d, -EPROTO,
                                          "the source reconnected to a running postcopy "
                                          "without having committed");
        if (ret == 0 && (ret = lm__dest_enter(d, LM_DST_POSTCOPY_RECOVER)) == 0 &&
            (ret = reattach(d)) == 0) {
            lm_err_reset(&d->ctx->err);
            d->st.resume_ms = lm_ns_to_ms(lm_now_ns() - back_at);
            return lm__dest_enter(d, LM_DST_POSTCOPY_ACTIVE);
        }
        if (!lm__link_lost(ret))
            break;
        /* cut again while recovering: pause again */
    }
    if (d->fsm.state != LM_DST_POSTCOPY_PAUSED)
        lm__dest_enter(d, LM_DST_POSTCOPY_PAUSED);
    retire_receivers(d);
    lm__dest_postcopy_pause(d);
    return ret;
}

/* The source is back, precopy goes on: its channels, and the map of what
 * never arrived here. */
static int resume_precopy(lm_dest *d, uint64_t back_at)
{
    retire_receivers(d);
    int ret = lm__dest_accept_channels(d);
    if (ret == 0)
        ret = send_map(d);
    if (ret < 0)
        return ret;
    lm_err_reset(&d->ctx->err);
    d->st.resume_ms = lm_ns_to_ms(lm_now_ns() - back_at);
    return lm__dest_enter(d, LM_DST_ACTIVE);
}

int lm__dest_precopy_recover(lm_dest *d)
{
    unsigned wait_ms = source_window_ms(d, d->p->recover_timeout_ms);
    int ret = 0;
    for (;;) {
        uint64_t back_at;
        ret = pause_and_take_back(d, LM_DST_PRECOPY_PAUSED, wait_ms, &back_at);
        if (ret == -EINVAL)
            return ret;
        if (ret == -ETIMEDOUT) {
            lm_err_reset(&d->ctx->err);
            return lm_err_set(&d->ctx->err, ret,
                              "the link to the source broke during precopy and it did not come "
                              "back within %u ms; the guest never ran here",
                              wait_ms);
        }
        if (ret == 0 && d->source_committed)
            return lm__dest_protocol_error(d, -EPROTO,
                                           "the source reconnected to a precopy as if it had "
                                           "committed");
        if (ret == 0 && (ret = resume_precopy(d, back_at)) == 0)
            return 0;
        if (!lm__link_lost(ret))
            return ret;
    }
}

int lm__dest_await_commit(lm_dest *d)
{
    unsigned back = d->fsm.state;
    bool postcopy = back == LM_DST_POSTCOPY_READY;
    unsigned wait_ms = source_window_ms(d, lm__recover_timeout_ms(d->p, postcopy));
    int ret = lm__dest_enter(d, LM_DST_SWITCHOVER_PAUSED);
    if (ret < 0)
        return ret;
    if (postcopy)
        retire_receivers(d);
    ret = lm__dest_take_back_source(d, lm_now_ns() + (uint64_t)wait_ms * 1000000);
    if (ret == 0) {
        lm_err_reset(&d->ctx->err);
        if (!postcopy && !d->source_committed) {
            /* It did not commit: its guest runs again and precopy goes on
             * from what arrived here (resume.c). */
            if ((ret = lm__dest_enter(d, LM_DST_PRECOPY_PAUSED)) < 0)
                return ret;
            return resume_precopy(d, lm_now_ns());
        }
        if ((ret = lm__dest_enter(d, back)) < 0 || !postcopy)
            return ret;
        /* Postcopy's source reconnects only once it has sent POSTCOPY_RUN
         * (its HELLO says COMMITTED): that is the commit heard. */
        if (!d->source_committed)
            return lm__dest_protocol_error(d, -EPROTO,
                                           "the source reconnected at the postcopy switch "
                                           "without having committed");
        if ((ret = lm__dest_postcopy_run(d, false)) < 0)
            return ret;
        ret = reattach(d);
        return ret < 0 && lm__link_lost(ret) ? lm__dest_postcopy_recover(d) : ret;
    }
    if (ret != -ETIMEDOUT)
        return ret;
    lm_conn_close(&d->conn);
    d->conn.fd = -1;
    lm_err_reset(&d->ctx->err);
    return lm_err_set(&d->ctx->err, -ETIMEDOUT,
                      "switchover-paused: the link broke before the source's commit arrived and "
                      "the source did not come back within %u ms; the guest was never started "
                      "here, so the source's copy is the newest: it may be started there",
                      wait_ms);
}

/* The guest runs here. Until the source says it heard us (CONFIRMED) it
 * may not have: if anything else comes (a close, a reset, a timeout), take
 * it back when it reconnects and answer again. A close alone proves
 * nothing: a middlebox that drops a link closes both ends cleanly. */
int lm__dest_linger_for_source(lm_dest *d)
{
    /* The guest is safe here whatever happens: only the source's knowing
     * is at stake, so this waits no longer than two I/O timeouts. */
    unsigned wait_ms = lm__recover_timeout_ms(d->p, d->st.postcopy);
    if (wait_ms > d->p->io_timeout_ms)
        wait_ms = d->p->io_timeout_ms;
    wait_ms = source_window_ms(d, wait_ms);
    lm_err scratch;
    for (;;) {
        lm_err_init(&scratch);
        lm_frame f;
        d->conn.err = &scratch;
        int ret = d->conn.fd >= 0 ? lm_conn_recv_frame(&d->conn, &f) : -ENOTCONN;
        d->conn.err = &d->ctx->err;
        if (ret == 0 && f.type == LM_MSG_CONFIRMED && !f.length)
            return 0;
        if (ret == 0 && f.type == LM_MSG_COMMIT && !f.length && !d->st.postcopy) {
            lm__dest_confirm_commit(d); /* asked again */
            continue;
        }
        if (lm__dest_take_back_source(d, lm_now_ns() + (uint64_t)wait_ms * 1000000) < 0)
            break; /* it never asked again */
        if (d->st.postcopy) {
            /* It comes back to recover postcopy: its channels connect as
             * usual; the answer is that postcopy is over. */
            retire_receivers(d);
            if (lm__dest_accept_channels(d) == 0)
                lm__dest_confirm_done(d);
            retire_receivers(d);
        }
    }
    if (d->confirm_sent)
        return 0; /* sent; only its receipt is unconfirmed */
    lm_err_reset(&d->ctx->err);
    return lm_err_set(&d->ctx->err, -ECONNRESET,
                      "the guest runs here with all of its memory, but the source was not told "
                      "(the link broke and it did not come back within %u ms): it keeps its "
                      "stopped copy until you stop it",
                      wait_ms);
}
