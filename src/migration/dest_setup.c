/* The destination's setup: HELLO, the RAM layout, HELLO_ACK, channels. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/dest.h"
#include "util/clock.h"

/* Matches the source's RAM layout with ours, or allocates it when the
 * embedder registered nothing. */
static int accept_layout(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    const lm_hello *h = &d->hello;
    if (h->page_size != ctx->ram.page_size)
        return lm_err_set(&ctx->err, -EINVAL,
                          "the source uses %u-byte pages, this host %llu: "
                          "migrate between hosts with the same page size",
                          h->page_size, (unsigned long long)ctx->ram.page_size);
    if (ctx->ram.nblocks == 0) {
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
            ctx->ram.blocks[ctx->ram.nblocks - 1].owned = true; /* freed with the context */
        }
    } else if (ctx->ram.nblocks != h->nblocks) {
        return lm_err_set(&ctx->err, -EINVAL, "the source has %u RAM blocks, this side %u",
                          h->nblocks, ctx->ram.nblocks);
    }
    for (uint32_t i = 0; i < h->nblocks; i++) {
        lm_block *b = lm__ram_find(&ctx->ram, h->blocks[i].id);
        if (!b || b->len != h->blocks[i].len)
            return lm_err_set(&ctx->err, -EINVAL,
                              "RAM block %u (%llu bytes) on the source "
                              "has no same-sized block here",
                              h->blocks[i].id, (unsigned long long)h->blocks[i].len);
    }
    d->st.total = lm__ram_total(&ctx->ram);
    return lm__ram_receivedmap_reset(&ctx->ram, &ctx->err);
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
        /* TLS may hold decrypted bytes the socket no longer shows: look
         * on every slice, not only when poll says so. */
        if (watch_main && (d->conn.tls || (n > 0 && pfd[1].revents))) {
            /* Page data may already follow (the source connected all its
             * channels before sending it): only an ERROR or a close is
             * news here. Look without consuming. */
            uint8_t hdr[LM_FRAME_HDR_SIZE];
            ssize_t got = lm_conn_peek(&d->conn, hdr, sizeof(hdr));
            if (got < 0 && got != -EAGAIN)
                return (int)got;
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
int lm__dest_accept_channels(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    bool postcopy = (d->hello.flags & LM_HELLO_POSTCOPY) && !(d->hello.flags & LM_HELLO_NO_PREEMPT);
    unsigned nch = d->hello.nchannels, n = nch + postcopy, got = 0, attempts = 0;
    int fds[LM_MAX_CHANNELS + 1];
    lm_tls_session *tls[LM_MAX_CHANNELS + 1];
    for (unsigned i = 0; i < n; i++) {
        fds[i] = -1;
        tls[i] = NULL;
    }
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
        if (lm__dest_secure(d, &c) == 0 && lm_conn_recv_frame(&c, &f) == 0 &&
            f.type == LM_MSG_CHANNEL_HELLO && lm_conn_recv_body(&c, &f, body, sizeof(body)) == 0 &&
            lm_channel_hello_decode(body, f.length, &ch, why, sizeof(why)) == 0 &&
            !memcmp(ch.uuid, d->hello.uuid, 16) && ch.channel < n && fds[ch.channel] < 0) {
            fds[ch.channel] = fd;
            tls[ch.channel] = c.tls; /* the session goes with the descriptor */
            got++;
        } else {
            lm_conn_close(&c);
        }
    }
    if (ret < 0) {
        for (unsigned i = 0; i < n; i++) {
            lm_tls_session_free(tls[i]);
            if (fds[i] >= 0)
                close(fds[i]);
        }
        return ret;
    }
    if (postcopy) { /* the last one is the preempt connection */
        lm_recv_chan *c = &d->preempt;
        ret = lm_recv_chan_init(c, nch, &c->own_conn, &d->inplace.sink,
                                (lm_compression)d->hello.compress, ctx->ram.page_size, &ctx->err);
        lm_conn_init(&c->own_conn, fds[nch], d->conn.timeout_ms, &ctx->cancel,
                     "source (preempt connection)", &ctx->err);
        c->own_conn.tls = tls[nch];
        lm_conn_share_progress(&c->own_conn, &ctx->io_progress_ns);
        d->have_preempt = true;
        if (ret < 0) {
            for (unsigned i = 0; i < nch; i++) {
                lm_tls_session_free(tls[i]);
                close(fds[i]);
            }
            return ret;
        }
    }
    if (!nch)
        return 0;
    lm_multifd_recv_cfg cfg = {.sink = &d->inplace.sink,
                               .method = (lm_compression)d->hello.compress,
                               .page_size = ctx->ram.page_size,
                               .timeout_ms = d->conn.timeout_ms,
                               .cancel = &ctx->cancel,
                               .slow_channel_us = d->p->x_slow_channel_us,
                               .main_fd = d->conn.fd,
                               .tls = tls,
                               .progress_ns = &ctx->io_progress_ns};
    ret = lm_multifd_recv_start(&d->pool, nch, fds, &cfg, &ctx->err);
    d->use_pool = ret == 0;
    return ret;
}

int lm__dest_handshake(lm_dest *d)
{
    lm_frame f;
    int ret = lm_conn_recv_frame(&d->conn, &f);
    if (ret < 0)
        return ret;
    if (f.type != LM_MSG_HELLO)
        return lm__dest_protocol_error(d, -EPROTO, "the stream must start with HELLO");
    uint8_t buf[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    if ((ret = lm_conn_recv_body(&d->conn, &f, buf, sizeof(buf))) < 0)
        return ret;
    char why[256];
    if ((ret = lm_hello_decode(buf, f.length, &d->hello, why, sizeof(why))) < 0)
        return lm__dest_protocol_error(d, ret, why);
    bool wants_more = d->hello.nchannels || ((d->hello.flags & LM_HELLO_POSTCOPY) &&
                                             !(d->hello.flags & LM_HELLO_NO_PREEMPT));
    if (d->listener->single && wants_more)
        return lm__dest_protocol_error(d, -EINVAL,
                                       "this destination was given one connection (fd:N): "
                                       "migrate with --multifd-channels 0 and "
                                       "--no-postcopy-preempt, or give it a listening socket");
    if ((ret = accept_layout(d)) < 0)
        return ret;
    lm_compression method = (lm_compression)d->hello.compress;
    lm_inplace_sink_init(&d->inplace, &d->ctx->ram, d->p->no_receivedmap, &d->ctx->err);
    if ((ret = lm_recv_chan_init(&d->main_chan, 0, &d->conn, &d->inplace.sink, method,
                                 d->ctx->ram.page_size, &d->ctx->err)) < 0)
        return ret;
    if ((ret = lm_conn_send_frame(&d->conn, LM_MSG_HELLO_ACK, NULL, 0)) < 0)
        return ret;
    bool preempt = (d->hello.flags & LM_HELLO_POSTCOPY) && !(d->hello.flags & LM_HELLO_NO_PREEMPT);
    return d->hello.nchannels || preempt ? lm__dest_accept_channels(d) : 0;
}
