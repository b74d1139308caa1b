/*
 * The source's half of postcopy (see postcopy.h for the whole picture).
 *
 * After the switch the guest is stopped here for good and its memory does
 * not change, so two threads may read it freely: the migration thread sends
 * the needed pages in the background (through the multifd channels, or the
 * main connection), and the request thread answers the destination's page
 * requests on the preempt connection and moves the background stream to the
 * requested address. 'urgent' (atomic) says which pages the request thread
 * sent, so the background skips them; 'jump' passes the next address.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "migration/postcopy.h"
#include "migration/source.h"
#include "util/clock.h"

typedef struct postcopy_src {
    lm_source *s;
    lm_word *urgent[LM_MAX_BLOCKS];
    _Atomic int64_t jump_block; /* -1: no jump pending */
    _Atomic uint64_t jump_page;
    _Atomic uint64_t requests;
    pthread_t thread;
    /* Once POSTCOPY_END is out every needed page has been sent: later
     * requests are for pages in flight and get no second copy, so nothing
     * follows END on the main connection but VERIFY. */
    pthread_mutex_t end_lock;
    bool ended;
    /* Set by the request thread; 'done' is read after it is joined. */
    _Atomic int result;
    _Atomic bool got_done;
    lm_resumed done;
} postcopy_src;

int lm__src_postcopy_connect(lm_source *s)
{
    if (s->p->postcopy_no_preempt) /* urgent pages share the main connection */
        return lm_send_chan_init(&s->preempt_chan, 0, &s->conn, true, true, LM_COMPRESSION_NONE,
                                 s->ctx->ram.page_size, &s->ctx->err);
    int ret = lm__src_open_conn(s, &s->preempt_conn, s->p->io_timeout_ms, &s->ctx->cancel,
                                "destination (preempt connection)", &s->ctx->err);
    if (ret < 0)
        return ret;
    /* The preempt connection is the channel after the multifd channels. */
    lm_channel_hello ch = {.channel = s->p->multifd_channels};
    uint8_t buf[LM_CHANNEL_HELLO_SIZE];
    memcpy(ch.uuid, s->uuid, 16);
    lm_channel_hello_encode(&ch, buf);
    if ((ret = lm_conn_send_frame(&s->preempt_conn, LM_MSG_CHANNEL_HELLO, buf, sizeof(buf))) < 0)
        return ret;
    return lm_send_chan_init(&s->preempt_chan, s->p->multifd_channels, &s->preempt_conn, false,
                             true, LM_COMPRESSION_NONE, s->ctx->ram.page_size, &s->ctx->err);
}

int lm__src_check_request(lm_ram *ram, const uint8_t *body, uint32_t len, lm_block **block,
                          uint64_t *offset, lm_err *err)
{
    lm_page_request req;
    char why[128];
    if (lm_page_request_decode(body, len, &req, why, sizeof(why)) < 0)
        return lm_err_set(err, -EBADMSG, "invalid PAGE_REQUEST: %s", why);
    lm_block *b = lm__ram_find(ram, req.block_id);
    if (!b)
        return lm_err_set(err, -EBADMSG, "PAGE_REQUEST for unknown block %u", req.block_id);
    if (lm_packet_check_offset(req.offset, b->len, (uint32_t)ram->page_size, why, sizeof(why)) < 0)
        return lm_err_set(err, -EBADMSG, "invalid PAGE_REQUEST: %s", why);
    *block = b;
    *offset = req.offset;
    return 0;
}

static int serve_request(postcopy_src *pc, const uint8_t *body, uint32_t len)
{
    lm_source *s = pc->s;
    lm_block *b;
    uint64_t off;
    int ret = lm__src_check_request(&s->ctx->ram, body, len, &b, &off, &s->ctx->err);
    if (ret < 0)
        return ret;
    unsigned r = lm__ram_index(&s->ctx->ram, b);
    uint64_t page = off / s->ctx->ram.page_size;
    atomic_fetch_add(&pc->requests, 1);
    /* Locality: the background stream continues after this page. */
    atomic_store(&pc->jump_page, page + 1);
    atomic_store(&pc->jump_block, (int64_t)r);
    if (lm_bit_test_and_set_atomic(pc->urgent[r], page))
        return 0; /* already sent urgently */
    lm_page_batch one = {.block = b, .nnormal = 1, .normal = {off}};
    pthread_mutex_lock(&pc->end_lock);
    ret = pc->ended ? 0 : lm_send_chan_packet(&s->preempt_chan, &one, &s->ctx->err);
    pthread_mutex_unlock(&pc->end_lock);
    return ret;
}

/* Reads the return path until POSTCOPY_DONE or an error. */
static void *request_main(void *arg)
{
    postcopy_src *pc = arg;
    lm_source *s = pc->s;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    for (;;) {
        lm_frame f;
        int ret = lm_conn_recv_frame(&s->conn, &f);
        if (ret == 0)
            ret = lm_conn_recv_body(&s->conn, &f, body, sizeof(body));
        if (ret == 0 && f.type == LM_MSG_PAGE_REQUEST) {
            ret = serve_request(pc, body, f.length);
        } else if (ret == 0 && f.type == LM_MSG_POSTCOPY_DONE) {
            char why[128];
            ret = lm_resumed_decode(body, f.length, &pc->done, why, sizeof(why));
            if (ret < 0)
                lm_err_set(&s->ctx->err, ret, "invalid POSTCOPY_DONE: %s", why);
            pc->got_done = ret == 0;
        } else if (ret == 0 && f.type == LM_MSG_ERROR) {
            ret = lm_conn_peer_error(&s->conn, body, f.length);
        } else if (ret == 0) {
            ret = lm_err_set(&s->ctx->err, -EPROTO, "unexpected %s during postcopy",
                             lm_msg_name(f.type));
        }
        if (ret < 0 || pc->got_done) {
            pc->result = ret;
            if (ret < 0) /* wake the migration thread if it is sending */
                shutdown(s->conn.fd, SHUT_RDWR);
            return NULL;
        }
    }
}

/* The switch: everything up to the guest running on the destination. */
static int switch_over(lm_source *s, uint64_t *needed)
{
    lm_ctx *ctx = s->ctx;
    s->postcopy_switch = true;
    int ret = lm__src_stop_guest(s, "postcopy");
    if (ret < 0)
        return ret;
    /* The pages the destination must still receive: a last read-only sync. */
    if ((ret = lm__src_sync_dirty(s, false, needed)) < 0)
        return ret;
    lm_tracker_destroy(s->tracker);
    s->tracker = NULL;

    size_t n = lm_postcopy_switch_size(&ctx->ram);
    uint8_t *body = malloc(n);
    if (!body)
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    lm_postcopy_switch_encode(&ctx->ram, s->dirty, body);
    ret = n > LM_FRAME_MAX_LEN
              ? lm_err_set(&ctx->err, -E2BIG, "RAM too large for one switch")
              : lm_conn_send_frame(&s->conn, LM_MSG_POSTCOPY_SWITCH, body, (uint32_t)n);
    free(body);
    if (ret == 0)
        ret = lm__src_send_device_state(s);
    /* The destination is set up (userfaultfd armed, device state loaded)
     * and says so; POSTCOPY_RUN is the commit. */
    lm_resumed ready = {0}, ack;
    if (ret == 0)
        ret = lm__src_await_ready(s, &ready, 0);
    if (ret == 0 && ready.status < 0)
        ret = lm_err_set(&ctx->err, ready.status, "the destination could not start postcopy: %s",
                         strerror(-ready.status));
    if (ret == 0)
        ret = lm__src_commit(s, LM_MSG_POSTCOPY_RUN, &ack);
    uint64_t verify_us = ready.verify_time_us;
    if (ret == 0) {
        /* From here on the guest's newest state is on the destination; it
         * runs again, so --max-bandwidth applies again. */
        s->st.postcopy = true;
        s->st.postcopy_needed = *needed;
        /* The destination's hashing at the switch is verification. */
        s->st.downtime_ms = lm_ns_to_ms(lm_now_ns() - s->stop_ns) - (double)verify_us / 1000.0;
        s->st.verify_time_ms = (double)verify_us / 1000.0;
        s->st.downtime_bytes = lm__src_wire_bytes(s) - s->st.precopy_bytes;
        ret = lm__src_enter(s, LM_STATUS_POSTCOPY_ACTIVE);
    }
    return ret;
}

/* Background: every needed page not sent urgently, in address order from
 * wherever the last request pointed. */
static int background(postcopy_src *pc, uint64_t needed)
{
    lm_source *s = pc->s;
    lm_ctx *ctx = s->ctx;
    lm__src_begin_round(s, needed);
    unsigned r = 0;
    uint64_t page = 0, left = needed, cut_at = 0;
    if (s->ctx->testing.postcopy_cut_ms && !s->st.reconnects) /* once: the first background */
        cut_at = lm_now_ns() + (uint64_t)s->ctx->testing.postcopy_cut_ms * 1000000;
    while (left) {
        /* lm_pause: the network goes away, as the testing aid does it. */
        if (atomic_exchange(&ctx->pause_requested, 0))
            cut_at = lm_now_ns();
        if (cut_at && lm_now_ns() >= cut_at) {
            /* Testing aid: the network goes away under both sides. */
            shutdown(s->conn.fd, SHUT_RDWR);
            shutdown(s->preempt_conn.fd, SHUT_RDWR);
            for (unsigned i = 0; s->use_pool && i < s->pool.n; i++)
                shutdown(s->pool.chans[i].own_conn.fd, SHUT_RDWR);
            cut_at = 0;
        }
        int64_t jb = atomic_exchange(&pc->jump_block, -1);
        if (jb >= 0) {
            int ret = lm__src_flush_batch(s); /* keep batches within one block */
            if (ret < 0)
                return ret;
            r = (unsigned)jb;
            page = atomic_load(&pc->jump_page);
        }
        lm_block *b = &ctx->ram.blocks[r];
        page = lm_bitmap_next_set(s->dirty[r], b->npages, page);
        if (page >= b->npages) { /* next block, wrapping around */
            r = (r + 1) % ctx->ram.nblocks;
            page = 0;
            continue;
        }
        lm_bit_clear(s->dirty[r], page);
        left--;
        /* query-migrate follows the requests as they come */
        s->st.postcopy_requests = atomic_load_explicit(&pc->requests, memory_order_relaxed);
        if (lm_bit_test_atomic(pc->urgent[r], page))
            continue;
        int ret = lm__src_queue_page(s, b, page);
        if (ret < 0)
            return ret;
        if (pc->result < 0 || pc->got_done)
            break;
    }
    int ret = lm__src_end_of_round_barrier(s);
    lm__src_end_round(s, needed);
    return ret;
}

/* RECOVER_MAP: the pages the destination still lacks become the set to
 * send (in the POSTCOPY_SWITCH layout, checked against ours). Or
 * POSTCOPY_DONE: it had them all already (its answer was what got lost):
 * returns 1. */
static int read_map(postcopy_src *pc, uint64_t *needed)
{
    lm_source *s = pc->s;
    lm_ctx *ctx = s->ctx;
    size_t n = lm_postcopy_switch_size(&ctx->ram);
    lm_frame f;
    int ret = lm_conn_recv_frame(&s->conn, &f);
    if (ret < 0)
        return ret;
    if (f.type == LM_MSG_POSTCOPY_DONE || f.type == LM_MSG_ERROR) {
        uint8_t body[4 + LM_ERROR_MAX_TEXT];
        char why[128];
        if ((ret = lm_conn_recv_body(&s->conn, &f, body, sizeof(body))) < 0)
            return ret;
        if (f.type == LM_MSG_ERROR)
            return lm_conn_peer_error(&s->conn, body, f.length);
        if ((ret = lm_resumed_decode(body, f.length, &pc->done, why, sizeof(why))) < 0)
            return lm_err_set(&ctx->err, ret, "invalid POSTCOPY_DONE: %s", why);
        pc->got_done = true;
        return 1;
    }
    if (f.type != LM_MSG_RECOVER_MAP || f.length != n)
        return lm_err_set(&ctx->err, -EPROTO,
                          "expected RECOVER_MAP of %zu bytes after reconnecting, got %s (%u bytes)",
                          n, lm_msg_name(f.type), f.length);
    uint8_t *body = malloc(n ? n : 1);
    if (!body)
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    if ((ret = lm_conn_read(&s->conn, body, n)) == 0)
        ret = lm__src_decode_map(s, body, n, s->dirty, needed);
    free(body);
    return ret;
}

/* Past the commit a broken link pauses; the destination keeps running the
 * guest on what it has. Reconnect (retrying until the recover timeout, a
 * fresh one after every new cut), reopen the channels, take the map of
 * what is still missing, and go on from there. */
static int recover(postcopy_src *pc, uint64_t *needed)
{
    lm_source *s = pc->s;
    lm_ctx *ctx = s->ctx;
    unsigned wait_ms = lm__recover_timeout_ms(s->p, true);
    uint64_t paused_at = lm_now_ns(), back_at = 0;
    int ret = 0;
    for (;;) {
        if (s->fsm.state != LM_STATUS_POSTCOPY_PAUSED &&
            (ret = lm__src_enter(s, LM_STATUS_POSTCOPY_PAUSED)) < 0)
            return ret;
        lm__src_retire_channels(s);
        uint64_t deadline = lm_now_ns() + (uint64_t)wait_ms * 1000000;
        /* Paused on purpose (lm_pause): no reconnection until lm_resume. */
        while (atomic_load(&ctx->hold_reconnect) && lm_now_ns() < deadline) {
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        ret = lm__src_reconnect(s, deadline);
        back_at = lm_now_ns();
        s->st.paused_ms += lm_ns_to_ms(back_at - paused_at);
        paused_at = back_at;
        if (ret < 0) {
            lm_err_reset(&ctx->err);
            return lm_err_set(&ctx->err, ret,
                              "postcopy-paused: the link to the destination broke and it did not "
                              "come back within %u ms; the guest runs there on the pages it has, "
                              "and the pages it still lacks exist only here",
                              wait_ms + s->p->io_timeout_ms);
        }
        if ((ret = lm__src_enter(s, LM_STATUS_POSTCOPY_RECOVER)) < 0)
            return ret;
        ret = lm__src_connect_channels(s);
        if (ret == 0)
            ret = read_map(pc, needed);
        if (ret == 1) { /* it was over: the answer is in pc->done */
            lm__src_retire_channels(s);
            return 1;
        }
        if (ret == 0)
            break;
        if (!lm__link_lost(ret))
            return ret;
    }
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) /* sent before the cut: maybe lost */
        lm_bitmap_clear_all(pc->urgent[i], ctx->ram.blocks[i].npages);
    atomic_store(&pc->jump_block, -1);
    pc->ended = false;
    pc->result = 0;
    s->st.resume_ms = lm_ns_to_ms(lm_now_ns() - back_at);
    return lm__src_enter(s, LM_STATUS_POSTCOPY_ACTIVE);
}

/* The guest runs on the destination: requests and background until it has
 * every page (and, verifying, compared digests). */
static int serve(postcopy_src *pc, uint64_t needed)
{
    lm_source *s = pc->s;
    lm_ctx *ctx = s->ctx;
    int ret = -pthread_create(&pc->thread, NULL, request_main, pc);
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "cannot start the postcopy request thread");
    ret = background(pc, needed);
    /* Every page is out: closing the channels tells the destination so. */
    if (s->use_pool)
        lm_multifd_send_stop(&s->pool);
    pthread_mutex_lock(&pc->end_lock);
    pc->ended = true;
    if (ret == 0)
        ret = lm_conn_send_frame(&s->conn, LM_MSG_POSTCOPY_END, NULL, 0);
    pthread_mutex_unlock(&pc->end_lock);
    if (ret == 0 && s->p->verify)
        ret = lm__src_send_verify(s);
    if (ret < 0)
        shutdown(s->conn.fd, SHUT_RDWR); /* wake the request thread */
    pthread_join(pc->thread, NULL);
    if (ret == 0)
        ret = pc->result;
    if (ret == 0 && !pc->got_done)
        ret = lm_err_set(&ctx->err, -EPROTO, "the destination did not confirm postcopy");
    return ret;
}

int lm__src_postcopy(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    postcopy_src pc = {.s = s, .jump_block = -1, .end_lock = PTHREAD_MUTEX_INITIALIZER};
    int ret = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks && ret == 0; i++)
        if (!(pc.urgent[i] = lm_bitmap_new(ctx->ram.blocks[i].npages)))
            ret = lm_err_set(&ctx->err, -ENOMEM, "out of memory");
    uint64_t needed = 0;
    if (ret == 0)
        ret = switch_over(s, &needed);
    uint64_t switch_needed = needed;
    /* Without a preempt connection two threads write the main one. */
    pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
    if (s->p->postcopy_no_preempt)
        s->conn.write_lock = &write_lock;
    for (;;) {
        /* Only past the commit, and only for the link's failures. */
        if (ret < 0 && s->committed && lm__link_lost(ret)) {
            ret = recover(&pc, &needed);
            if (s->p->postcopy_no_preempt)
                s->conn.write_lock = &write_lock;
            if (ret == 0 && !s->st.postcopy) { /* the switch's RESUMED was what got lost */
                s->st.postcopy = true;
                s->st.postcopy_needed = switch_needed;
                s->st.downtime_ms = lm_ns_to_ms(lm_now_ns() - s->stop_ns);
                s->st.downtime_bytes = lm__src_wire_bytes(s) - s->st.precopy_bytes;
            }
        }
        if (ret < 0)
            break;
        if (ret == 1) { /* over before the link broke */
            ret = 0;
            break;
        }
        if ((ret = serve(&pc, needed)) == 0)
            break;
    }
    if (ret == 0) /* it may let go of the question now */
        lm_conn_send_frame(&s->conn, LM_MSG_CONFIRMED, NULL, 0);
    if (ret == 0 && pc.done.status < 0)
        ret = lm_err_set(&ctx->err, pc.done.status, "the destination failed to finish postcopy");
    if (ret == 0 && s->p->verify) {
        s->st.verify_done = true;
        s->st.verify_match = pc.done.verified == 1;
        s->st.verify_time_ms += (double)pc.done.verify_time_us / 1000.0;
        if (pc.done.verified != 1)
            ret = lm_err_set(&ctx->err, -EIO,
                             "verification failed: the destination's RAM "
                             "digest differs from the source's (%s)",
                             s->st.digest);
    }
    s->conn.write_lock = NULL;
    s->st.postcopy_requests = atomic_load(&pc.requests);
    /* precopy + downtime + postcopy = transferred */
    s->st.postcopy_bytes = lm__src_wire_bytes(s) - s->st.precopy_bytes - s->st.downtime_bytes;
    lm_send_chan_cleanup(&s->preempt_chan);
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        lm_bitmap_free(pc.urgent[i]);
    return ret < 0 ? ret : lm__src_enter(s, LM_STATUS_COMPLETED);
}
