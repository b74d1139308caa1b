/*
 * The destination side: accept one migration, validate every field before
 * it touches memory, place pages, and resume the guest.
 *
 *   accept -> HELLO (check layout) -> HELLO_ACK -> PAGES/ROUND_END ...
 *          -> DEVICE_STATE -> COMPLETE -> verify, load state -> RESUMED -> resume
 *
 * Normal pages are read straight into guest RAM. A zero page needs no work
 * when the block is fresh memory and the page was never received (it reads
 * as zero already, and not touching it saves a page fault); otherwise it is
 * cleared. Any invalid input ends the migration with an ERROR to the source;
 * the guest is never resumed with partial memory.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "migration/engine.h"
#include "migration/postcopy.h"
#include "multifd/recv.h"
#include "proto/wire.h"
#include "transport/conn.h"
#include "transport/transport.h"
#include "util/clock.h"

typedef struct lm_dest {
    lm_ctx *ctx;
    const lm_params *p;
    lm_listener *listener;
    lm_conn conn;
    lm_recv_chan main_chan; /* packets on the main connection */
    lm_multifd_recv pool;   /* multifd channels, when the source asked for them */
    bool use_pool;
    /* Postcopy. */
    lm_recv_chan preempt; /* urgent pages, its own receiver thread */
    bool have_preempt;
    lm_postcopy_dst pc;
    bool pc_init, in_postcopy, postcopy_done;
    pthread_mutex_t conn_lock; /* main-connection writes once the fault thread runs */
    lm_hello hello;
    lm_stats st;
    uint64_t start_ns;
    uint8_t *device_state;
    size_t device_state_len;
    bool have_state;

} lm_dest;

static uint64_t minor_faults(uint64_t *major)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (major)
        *major = (uint64_t)ru.ru_majflt;
    return (uint64_t)ru.ru_minflt;
}

static int protocol_error(lm_dest *d, int code, const char *why)
{
    return lm_err_set(&d->ctx->err, code, "invalid migration stream from the source: %s", why);
}

/* Matches the source's RAM layout with ours, or allocates it when the
 * embedder registered nothing. */
static int accept_layout(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    const lm_hello *h = &d->hello;
    if (h->page_size != ctx->page_size)
        return lm_err_set(&ctx->err, -EINVAL,
                          "the source uses %u-byte pages, this host %llu: "
                          "migrate between hosts with the same page size",
                          h->page_size, (unsigned long long)ctx->page_size);
    if (ctx->nblocks == 0) {
        for (uint32_t i = 0; i < h->nblocks; i++) {
            void *host = lm_ram_alloc(h->blocks[i].len);
            /* Huge pages: one fault (and one zeroing) per 2 MiB instead of
             * 512; see docs/BENCHMARKS.md for the measurement. */
            if (host) /* off means off, also where THP is "always" */
                (void)madvise(host, h->blocks[i].len,
                              d->p->dest_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
            if (!host)
                return lm_err_set(&ctx->err, -ENOMEM,
                                  "cannot reserve %llu bytes for RAM "
                                  "block %u",
                                  (unsigned long long)h->blocks[i].len, h->blocks[i].id);
            int ret = lm_ram_block_add(ctx, h->blocks[i].id, h->blocks[i].name, host,
                                       h->blocks[i].len, LM_RAM_ZEROED);
            if (ret < 0) {
                lm_ram_free(host, h->blocks[i].len);
                return ret;
            }
            ctx->blocks[ctx->nblocks - 1].owned = true;
        }
    } else if (ctx->nblocks != h->nblocks) {
        return lm_err_set(&ctx->err, -EINVAL, "the source has %u RAM blocks, this side %u",
                          h->nblocks, ctx->nblocks);
    }
    for (uint32_t i = 0; i < h->nblocks; i++) {
        lm_block *b = lm__block_by_id(ctx, h->blocks[i].id);
        if (!b || b->len != h->blocks[i].len)
            return lm_err_set(&ctx->err, -EINVAL,
                              "RAM block %u (%llu bytes) on the source "
                              "has no same-sized block here",
                              h->blocks[i].id, (unsigned long long)h->blocks[i].len);
        lm_bitmap_free(b->received);
        if (!(b->received = lm_bitmap_new(b->npages)))
            return lm_err_set(&ctx->err, -ENOMEM, "out of memory for the received map");
    }
    for (unsigned i = 0; i < ctx->nblocks; i++)
        d->st.total += ctx->blocks[i].len;
    return 0;
}

/* Waits until a channel connects, watching the main connection too: a
 * source that fails before its channels connect says why there (or
 * closes it), and that is the error to report, not a timeout. */
static int wait_for_channel(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    uint64_t start = lm_now_ns();
    bool watch_main = true;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = d->listener->fd, .events = POLLIN},
                                {.fd = d->conn.fd, .events = POLLIN}};
        int n = poll(pfd, watch_main ? 2 : 1, 100);
        if (n < 0 && errno != EINTR)
            return lm_err_set(&ctx->err, -errno, "poll: %s", strerror(errno));
        if (n > 0 && pfd[0].revents)
            return 0;
        if (n > 0 && watch_main && pfd[1].revents) {
            /* Page data may already follow (the source connected all its
             * channels before sending it): only an ERROR or a close is
             * news here. Look without consuming. */
            uint8_t hdr[LM_FRAME_HDR_SIZE];
            ssize_t got = lm_sys_recv(d->conn.fd, hdr, sizeof(hdr), MSG_PEEK);
            if (got == 0)
                return lm_err_set(&ctx->err, -ECONNRESET,
                                  "the source closed the connection "
                                  "before its multifd channels connected");
            if (got == (ssize_t)sizeof(hdr) && lm_get_be16(hdr + 6) == LM_MSG_ERROR) {
                lm_frame f;
                uint8_t body[4 + LM_ERROR_MAX_TEXT];
                int ret = lm_conn_recv_frame(&d->conn, &f);
                if (ret == 0 && (ret = lm_conn_recv_body(&d->conn, &f, body, sizeof(body))) == 0)
                    ret = lm_conn_peer_error(&d->conn, body, f.length);
                return ret;
            }
            if (got == (ssize_t)sizeof(hdr))
                watch_main = false;
        }
        if (atomic_load(&ctx->cancel))
            return lm_err_set(&ctx->err, -ECANCELED, "cancelled while waiting for channels");
        if (lm_now_ns() - start > (uint64_t)d->conn.timeout_ms * 1000000)
            return lm_err_set(&ctx->err, -ETIMEDOUT,
                              "the source's multifd channels did not "
                              "connect within %u ms",
                              d->conn.timeout_ms);
    }
}

/* The source's channels connect to our listener after HELLO_ACK and name
 * this migration's uuid and their id. A stray connection is dropped and
 * waited past; too many of them fail the migration. */
static int accept_channels(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    bool postcopy = (d->hello.flags & LM_HELLO_POSTCOPY) && !(d->hello.flags & LM_HELLO_NO_PREEMPT);
    unsigned nch = d->hello.nchannels, n = nch + postcopy, got = 0, attempts = 0;
    int fds[LM_MAX_CHANNELS + 1];
    for (unsigned i = 0; i < n; i++)
        fds[i] = -1;
    int ret = 0;
    while (got < n) {
        if (++attempts > 2 * n + 8) {
            ret = lm_err_set(&ctx->err, -EPROTO,
                             "too many connections that are not this "
                             "migration's channels (%u of %u channels arrived)",
                             got, n);
            break;
        }
        int fd;
        if ((ret = wait_for_channel(d)) < 0 ||
            (ret = lm_listener_accept(d->listener, d->conn.timeout_ms, &ctx->cancel, &fd,
                                      &ctx->err)) < 0)
            break;
        lm_err scratch;
        lm_err_init(&scratch);
        lm_conn c;
        lm_conn_init(&c, fd, d->conn.timeout_ms, &ctx->cancel, "source", &scratch);
        lm_frame f;
        uint8_t body[LM_CHANNEL_HELLO_SIZE];
        lm_channel_hello ch;
        char why[128];
        if (lm_conn_recv_frame(&c, &f) == 0 && f.type == LM_MSG_CHANNEL_HELLO &&
            lm_conn_recv_body(&c, &f, body, sizeof(body)) == 0 &&
            lm_channel_hello_decode(body, f.length, &ch, why, sizeof(why)) == 0 &&
            !memcmp(ch.uuid, d->hello.uuid, 16) && ch.channel < n && fds[ch.channel] < 0) {
            fds[ch.channel] = fd;
            got++;
        } else {
            lm_conn_close(&c);
        }
    }
    if (ret < 0) {
        for (unsigned i = 0; i < n; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return ret;
    }
    if (postcopy) { /* the last one is the preempt connection */
        lm_recv_chan *c = &d->preempt;
        ret = lm_recv_chan_init(c, nch, ctx, &c->own_conn, (lm_compression)d->hello.compress, false,
                                &ctx->err);
        lm_conn_init(&c->own_conn, fds[nch], d->conn.timeout_ms, &ctx->cancel,
                     "source (preempt connection)", &ctx->err);
        lm_conn_share_progress(&c->own_conn, &ctx->io_progress_ns);
        d->have_preempt = true;
        if (ret < 0) {
            for (unsigned i = 0; i < nch; i++)
                close(fds[i]);
            return ret;
        }
    }
    if (!nch)
        return 0;
    ret =
        lm_multifd_recv_start(&d->pool, nch, fds, ctx, d->conn.timeout_ms, &ctx->cancel,
                              (lm_compression)d->hello.compress, d->p->no_receivedmap,
                              d->p->x_slow_channel_us, d->conn.fd, &ctx->io_progress_ns, &ctx->err);
    d->use_pool = ret == 0;
    return ret;
}

static int handshake(lm_dest *d)
{
    lm_frame f;
    int ret = lm_conn_recv_frame(&d->conn, &f);
    if (ret < 0)
        return ret;
    if (f.type != LM_MSG_HELLO)
        return protocol_error(d, -EPROTO, "the stream must start with HELLO");
    uint8_t buf[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    if ((ret = lm_conn_recv_body(&d->conn, &f, buf, sizeof(buf))) < 0)
        return ret;
    char why[256];
    if ((ret = lm_hello_decode(buf, f.length, &d->hello, why, sizeof(why))) < 0)
        return protocol_error(d, ret, why);
    if ((ret = accept_layout(d)) < 0)
        return ret;
    lm_compression method = (lm_compression)d->hello.compress;
    if ((ret = lm_recv_chan_init(&d->main_chan, 0, d->ctx, &d->conn, method, d->p->no_receivedmap,
                                 &d->ctx->err)) < 0)
        return ret;
    if ((ret = lm_conn_send_frame(&d->conn, LM_MSG_HELLO_ACK, NULL, 0)) < 0)
        return ret;
    bool preempt = (d->hello.flags & LM_HELLO_POSTCOPY) && !(d->hello.flags & LM_HELLO_NO_PREEMPT);
    return d->hello.nchannels || preempt ? accept_channels(d) : 0;
}

/* A PAGES frame on the main connection: one packet, like a channel's. */
static int receive_pages(lm_dest *d, const lm_frame *f)
{
    uint8_t raw[LM_PACKET_HDR_SIZE];
    lm_packet_hdr ph;
    char why[256];
    if (f->length < LM_PACKET_HDR_SIZE)
        return protocol_error(d, -EBADMSG, "PAGES frame shorter than a packet header");
    int ret = lm_conn_read(&d->conn, raw, sizeof(raw));
    if (ret < 0 || (ret = lm_recv_chan_decode(&d->main_chan, raw, &ph)) < 0)
        return ret;
    if (ph.flags & LM_PACKET_FLAG_SYNC)
        return protocol_error(d, -EBADMSG, "SYNC packet on the main connection");
    uint64_t expect =
        LM_PACKET_HDR_SIZE + 8ull * (ph.normal_pages + ph.zero_pages) + ph.payload_size;
    if (f->length != expect) {
        snprintf(why, sizeof(why), "PAGES frame of %u bytes, its packet needs %llu", f->length,
                 (unsigned long long)expect);
        return protocol_error(d, -EBADMSG, why);
    }
    return lm_recv_chan_body(&d->main_chan, &ph);
}

static int send_locked(lm_dest *d, uint16_t type, const void *body, uint32_t len)
{
    pthread_mutex_lock(&d->conn_lock);
    int ret = lm_conn_send_frame(&d->conn, type, body, len);
    pthread_mutex_unlock(&d->conn_lock);
    return ret;
}

static int receive_verify(lm_dest *d, lm_verify_msg *v);

/* Our digest against the source's: the stats and the RESUMED fields. */
static void record_verify(lm_dest *d, const uint8_t digest[16], uint64_t pages,
                          const lm_verify_msg *v, uint64_t t0, lm_resumed *r)
{
    r->verify_time_us = (lm_now_ns() - t0) / 1000;
    lm__digest_hex(digest, d->st.digest, sizeof(d->st.digest));
    d->st.verify_done = true;
    d->st.verify_match = pages == v->pages && !memcmp(digest, v->digest, 16);
    d->st.verify_time_ms = (double)r->verify_time_us / 1000.0;
    r->verified = d->st.verify_match ? 1 : 2;
}

/* POSTCOPY_RUN: from here the guest runs here, its missing pages fault. */
static int postcopy_start(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    int ret = lm_postcopy_dst_start(&d->pc);
    if (ret == 0)
        ret = lm_recv_chan_postcopy(&d->main_chan, &d->pc, &ctx->err);
    if (ret == 0 && d->use_pool)
        ret = lm_multifd_recv_postcopy(&d->pool, &d->pc, &ctx->err);
    if (ret == 0 && d->have_preempt &&
        (ret = lm_recv_chan_postcopy(&d->preempt, &d->pc, &ctx->err)) == 0)
        ret = lm_recv_chan_start_thread(&d->preempt, &ctx->err);
    if (ret == 0 && ctx->gops.load_state &&
        (ret = ctx->gops.load_state(ctx->gopaque, d->device_state, d->device_state_len)) < 0)
        lm_err_set(&ctx->err, ret, "loading the guest's device state failed");
    lm_resumed r = {.status = ret, .verify_time_us = d->pc.verify_ns / 1000};
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(&r, buf);
    int sent = send_locked(d, LM_MSG_RESUMED, buf, sizeof(buf));
    if (ret < 0)
        return ret;
    if (sent < 0)
        return sent;
    if (ctx->gops.resume && (ret = ctx->gops.resume(ctx->gopaque)) < 0)
        return lm_err_set(&ctx->err, ret, "the guest could not be resumed");
    d->in_postcopy = true;
    d->st.postcopy = true;
    return 0;
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
    d->st.vcpu_blocktime_ms = (double)pc->blocktime_ns / 1e6;
    pthread_mutex_unlock(&pc->lock);
}

/* POSTCOPY_END: wait for the last pages, verify, give the memory back to
 * the guest for good and tell the source it may let go. */
static int postcopy_finish(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    int ret = d->use_pool ? lm_multifd_recv_finish(&d->pool, d->conn.timeout_ms) : 0;
    if (ret == 0)
        ret = lm_postcopy_dst_wait(&d->pc, d->conn.timeout_ms);
    if (ret < 0)
        return ret;
    lm_resumed r = {0};
    if (d->hello.flags & LM_HELLO_VERIFY) {
        uint64_t t0 = lm_now_ns(), pages;
        uint8_t digest[16];
        lm_verify_msg v;
        if ((ret = receive_verify(d, &v)) < 0 ||
            (ret = lm__digest(ctx, d->pc.hashes, digest, &pages)) < 0)
            return ret;
        record_verify(d, digest, pages, &v, t0, &r);
    }
    postcopy_stats(d);
    if (d->have_preempt)
        lm_recv_chan_join(&d->preempt);
    lm_postcopy_dst_stop(&d->pc, true); /* every page is here: the guest owns its RAM again */
    d->pc_init = false;
    d->postcopy_done = true;
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(&r, buf);
    ret = send_locked(d, LM_MSG_POSTCOPY_DONE, buf, sizeof(buf));
    if (ret == 0 && r.verified == 2)
        ret = lm_err_set(&ctx->err, -EIO,
                         "verification failed after postcopy: RAM digest %s "
                         "here differs from the source's",
                         d->st.digest);
    return ret;
}

static int receive_stream(lm_dest *d)
{
    for (;;) {
        lm_frame f;
        int ret = lm_conn_recv_frame(&d->conn, &f);
        if (ret < 0)
            return ret;
        switch (f.type) {
        case LM_MSG_PAGES:
            ret = receive_pages(d, &f);
            break;
        case LM_MSG_ROUND_END:
            if (f.length)
                return protocol_error(d, -EBADMSG, "ROUND_END carries a body");
            /* Every channel finishes this round before any starts the next. */
            if (d->use_pool)
                ret = lm_multifd_recv_barrier(&d->pool, d->conn.timeout_ms);
            d->st.dirty_sync_count++;
            break;
        case LM_MSG_DEVICE_STATE:
            if (d->have_state)
                return protocol_error(d, -EBADMSG, "DEVICE_STATE sent twice");
            d->device_state = malloc(f.length ? f.length : 1);
            if (!d->device_state)
                return lm_err_set(&d->ctx->err, -ENOMEM, "out of memory for device state");
            d->device_state_len = f.length;
            d->have_state = true;
            ret = lm_conn_read(&d->conn, d->device_state, f.length);
            break;
        case LM_MSG_PING:
            if (f.length)
                return protocol_error(d, -EBADMSG, "PING carries a body");
            ret = send_locked(d, LM_MSG_PONG, NULL, 0);
            break;
        case LM_MSG_POSTCOPY_SWITCH: {
            if (!(d->hello.flags & LM_HELLO_POSTCOPY) || d->pc_init)
                return protocol_error(d, -EPROTO, "unexpected POSTCOPY_SWITCH");
            uint8_t *body = malloc(f.length ? f.length : 1);
            if (!body)
                return lm_err_set(&d->ctx->err, -ENOMEM, "out of memory");
            ret = lm_conn_read(&d->conn, body, f.length);
            if (ret == 0)
                ret = lm_postcopy_dst_init(&d->pc, d->ctx, body, f.length,
                                           d->hello.flags & LM_HELLO_VERIFY, d->p->postcopy_move,
                                           &d->conn, &d->conn_lock);
            d->pc_init = true;
            free(body);
            break;
        }
        case LM_MSG_POSTCOPY_RUN:
            if (f.length || !d->pc_init || !d->have_state || d->in_postcopy)
                return protocol_error(d, -EPROTO,
                                      "POSTCOPY_RUN before POSTCOPY_SWITCH and "
                                      "DEVICE_STATE");
            ret = postcopy_start(d);
            break;
        case LM_MSG_POSTCOPY_END:
            if (f.length || !d->in_postcopy)
                return protocol_error(d, -EPROTO, "unexpected POSTCOPY_END");
            return postcopy_finish(d);
        case LM_MSG_COMPLETE:
            if (f.length)
                return protocol_error(d, -EBADMSG, "COMPLETE carries a body");
            if (d->in_postcopy)
                return protocol_error(d, -EPROTO, "COMPLETE during postcopy");
            if (!d->have_state)
                return protocol_error(d, -EBADMSG, "COMPLETE before DEVICE_STATE");
            return d->use_pool ? lm_multifd_recv_finish(&d->pool, d->conn.timeout_ms) : 0;
        case LM_MSG_ERROR: {
            uint8_t body[4 + LM_ERROR_MAX_TEXT];
            if ((ret = lm_conn_recv_body(&d->conn, &f, body, sizeof(body))) < 0)
                return ret;
            return lm_conn_peer_error(&d->conn, body, f.length);
        }
        default: {
            char why[128];
            snprintf(why, sizeof(why), "unexpected %s message during precopy", lm_msg_name(f.type));
            return protocol_error(d, -EPROTO, why);
        }
        }
        if (ret < 0)
            return ret;
    }
}

static int receive_verify(lm_dest *d, lm_verify_msg *v)
{
    lm_frame f;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    char why[256];
    /* The source hashes all of its RAM first: allow 1 GB/s on top. */
    unsigned io_timeout = d->conn.timeout_ms;
    d->conn.timeout_ms += (unsigned)(d->st.total / 1000000);
    int ret = lm_conn_recv_frame(&d->conn, &f);
    d->conn.timeout_ms = io_timeout;
    if (ret < 0 || (ret = lm_conn_recv_body(&d->conn, &f, body, sizeof(body))) < 0)
        return ret;
    if (f.type == LM_MSG_ERROR)
        return lm_conn_peer_error(&d->conn, body, f.length);
    if (f.type != LM_MSG_VERIFY)
        return protocol_error(d, -EPROTO, "expected VERIFY after COMPLETE");
    if ((ret = lm_verify_decode(body, f.length, v, why, sizeof(why))) < 0)
        return protocol_error(d, ret, why);
    return 0;
}

/* Verify, load device state, tell the source, then resume. The source hears
 * RESUMED before the guest runs here, so a guest never runs on both sides
 * unless that last message is lost in flight. */
static int finish(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    lm_resumed r = {0};
    int ret = 0;
    if (d->hello.flags & LM_HELLO_VERIFY) {
        /* Our digest, then the source's (it hashed while we drained). */
        uint64_t t0 = lm_now_ns(), pages;
        uint8_t digest[16];
        lm_verify_msg v;
        if ((ret = lm__ram_digest(ctx, digest, &pages)) < 0 || (ret = receive_verify(d, &v)) < 0)
            return ret;
        record_verify(d, digest, pages, &v, t0, &r);
        if (!d->st.verify_match) {
            char src_hex[40];
            lm__digest_hex(v.digest, src_hex, sizeof(src_hex));
            ret = lm_err_set(&ctx->err, -EIO,
                             "verification failed: RAM digest %s here, %s on "
                             "the source; the guest is not resumed here",
                             d->st.digest, src_hex);
        }
    }
    if (ret == 0 && ctx->gops.load_state &&
        (ret = ctx->gops.load_state(ctx->gopaque, d->device_state, d->device_state_len)) < 0)
        lm_err_set(&ctx->err, ret, "loading the guest's device state failed");
    r.status = r.verified == 2 ? 0 : ret;
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(&r, buf);
    int sent = lm_conn_send_frame(&d->conn, LM_MSG_RESUMED, buf, sizeof(buf));
    if (ret < 0)
        return ret;
    if (sent < 0)
        return lm_err_set(&ctx->err, sent,
                          "could not confirm the switchover to the source; "
                          "the guest is not resumed here");
    if (ctx->gops.resume && (ret = ctx->gops.resume(ctx->gopaque)) < 0)
        return lm_err_set(&ctx->err, ret, "the guest could not be resumed");
    return 0;
}

int lm_incoming(lm_ctx *ctx, lm_listener *l, const lm_params *params)
{
    lm_params defaults;
    if (!params) {
        lm_params_init(&defaults);
        params = &defaults;
    }
    lm_dest *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->ctx = ctx;
    d->p = params;
    d->conn.fd = -1;
    d->listener = l;
    pthread_mutex_init(&d->conn_lock, NULL);
    lm_err_reset(&ctx->err);
    lm__stats_reset(ctx, "setup");
    snprintf(d->st.status, sizeof(d->st.status), "setup");

    int fd, ret = lm_listener_accept(l, params->accept_timeout_ms, &ctx->cancel, &fd, &ctx->err);
    if (ret == 0) {
        d->start_ns = lm_now_ns();
        lm_conn_init(&d->conn, fd, params->io_timeout_ms, &ctx->cancel, "source", &ctx->err);
        lm_conn_share_progress(&d->conn, &ctx->io_progress_ns);
        ret = handshake(d);
        d->st.setup_time_ms = lm_ns_to_ms(lm_now_ns() - d->start_ns);
    }
    if (ret == 0) {
        snprintf(d->st.status, sizeof(d->st.status), "active");
        lm__stats_publish(ctx, &d->st);
        uint64_t maj0, maj1, min0 = minor_faults(&maj0);
        ret = receive_stream(d);
        uint64_t min1 = minor_faults(&maj1);
        d->st.dest_minor_faults = min1 - min0;
        d->st.dest_major_faults = maj1 - maj0;
    }
    /* Page counters live with the channels that received them. */
    d->st.normal = atomic_load(&d->main_chan.normal);
    d->st.duplicate = atomic_load(&d->main_chan.zero);
    d->st.normal_bytes = atomic_load(&d->main_chan.normal_bytes);
    if (d->use_pool) {
        lm_multifd_recv_stop(&d->pool);
        lm_multifd_recv_counters(&d->pool, &d->st.normal, &d->st.duplicate, &d->st.normal_bytes,
                                 &d->st.multifd_bytes);
    }
    if (ret < 0 && d->in_postcopy && !d->postcopy_done) {
        /* The guest runs here on memory that is partly still on the source:
         * keep everything (vCPUs wait on their missing pages) for a later
         * recovery; never let it see zeros where its data should be. */
        postcopy_stats(d);
        if (d->have_preempt)
            lm_recv_chan_join(&d->preempt);
        lm_postcopy_dst_stop(&d->pc, false);
        d->pc_init = false;
    } else if (d->pc_init) {
        lm_postcopy_dst_stop(&d->pc, true); /* switch announced, guest never ran here */
    }
    if (d->have_preempt) {
        lm_recv_chan_join(&d->preempt);
        lm_recv_chan_cleanup(&d->preempt);
        lm_conn_close(&d->preempt.own_conn);
    }
    lm_recv_chan_cleanup(&d->main_chan);
    if (ret == 0 && !d->postcopy_done)
        ret = finish(d);
    if (ret < 0 && d->conn.fd >= 0 && ret != -ECONNRESET && ret != -EPIPE)
        lm_conn_send_error(&d->conn, ret, ctx->err.msg);

    d->st.transferred = d->conn.bytes_in + d->st.multifd_bytes;
    if (d->start_ns) {
        d->st.total_time_ms = lm_ns_to_ms(lm_now_ns() - d->start_ns);
        double secs = d->st.total_time_ms / 1000.0;
        d->st.mbps = secs > 0 ? (double)d->st.transferred * 8 / 1e6 / secs : 0;
        d->st.pages_per_second = secs > 0 ? (double)(d->st.normal + d->st.duplicate) / secs : 0;
    }
    snprintf(d->st.status, sizeof(d->st.status), "%s",
             ret == 0         ? "completed"
             : d->in_postcopy ? "postcopy-paused"
                              : "failed");
    lm__stats_publish(ctx, &d->st);
    lm_conn_close(&d->conn);
    free(d->device_state);
    free(d);
    return ret;
}
