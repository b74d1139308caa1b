/* The destination's setup: HELLO, the RAM layout, HELLO_ACK, channels. */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dirty/uffd.h"
#include "migration/dest.h"
#include "util/clock.h"

void lm__dest_placement_start(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    bool owned = false;
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        owned |= ctx->ram.blocks[i].owned;
    /* Only where nothing reads a page never received before the end of
     * precopy: it would wait for an answer that never comes. A section's
     * load runs during precopy, and --no-receivedmap reads every zero
     * page. Blocks the embedder registered are its own to read. */
    bool want = owned && ctx->testing.place_copy && !d->p->no_receivedmap && !ctx->nsections;
    lm_err scratch;
    lm_err_init(&scratch);
    int uffd = want ? lm_uffd_open(0, &scratch) : -1;
    for (unsigned i = 0; uffd >= 0 && i < ctx->ram.nblocks; i++) {
        lm_block *b = &ctx->ram.blocks[i];
        if (b->owned &&
            lm_uffd_register(uffd, b->host, b->len, UFFDIO_REGISTER_MODE_MISSING, &scratch) < 0) {
            close(uffd); /* unregisters what it had */
            uffd = -1;
        }
    }
    /* The report says which (a kernel without userfaultfd writes in place).
     * Not the default: the copy is fast, but every page it places is a
     * 4 KiB one, and on this machine the first access to each costs more
     * than in-place huge pages saved (docs/BENCHMARKS.md, "Placement"). */
    snprintf(d->st.tracker, sizeof(d->st.tracker), "%s", uffd >= 0 ? "uffd-copy" : "in-place");
    d->place_uffd = uffd;
    lm_inplace_sink_set_copy(&d->inplace, uffd);
}

void lm__dest_placement_end(lm_dest *d)
{
    if (d->place_uffd < 0)
        return;
    lm_inplace_sink_set_copy(&d->inplace, -1);
    close(d->place_uffd); /* unregisters every block: faults are the kernel's again */
    d->place_uffd = -1;
}

/* Watches the main connection while channels connect (the lobby calls it
 * when it is readable): a source that fails before its channels connect
 * says why there (or closes it), and that is the error to report, not a
 * timeout. */
static int wait_for_channel(lm_dest *d, bool *watching)
{
    lm_ctx *ctx = d->ctx;
    /* Page data may already follow (the source connected all its
     * channels before sending it): only an ERROR or a close is
     * news here. Look without consuming. */
    uint8_t hdr[LM_FRAME_HDR_SIZE];
    ssize_t got = lm_conn_peek(&d->conn, hdr, sizeof(hdr));
    if (got == -EAGAIN)
        return 0; /* TLS: a record not complete yet */
    if (got < 0)
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
        *watching = false;
    return 0;
}

/* A greeting that should be one of this migration's n channels: 0 with
 * its id, or -EAGAIN with why it is not. */
static int check_channel(lm_dest *d, lm_greeting *g, unsigned n, const bool *taken, unsigned *id,
                         char *why, size_t whylen)
{
    uint8_t body[LM_CHANNEL_HELLO_SIZE];
    lm_channel_hello ch;
    if (g->bad_code || g->f.type != LM_MSG_CHANNEL_HELLO) {
        snprintf(why, whylen, "a connection began with %s, not a CHANNEL_HELLO",
                 g->bad_code ? "an invalid frame" : lm_msg_name(g->f.type));
        return -EAGAIN;
    }
    if (lm_conn_recv_body(&g->conn, &g->f, body, sizeof(body)) < 0 ||
        lm_channel_hello_decode(body, g->f.length, &ch, why, whylen) < 0) {
        if (g->conn.err->code)
            lm_err_copy(g->conn.err, why, whylen);
        return -EAGAIN;
    }
    if (memcmp(ch.uuid, d->hello.uuid, 16)) {
        snprintf(why, whylen, "a CHANNEL_HELLO named another migration");
        return -EAGAIN;
    }
    if (ch.channel >= n || taken[ch.channel]) {
        snprintf(why, whylen, "a CHANNEL_HELLO named channel %u (%u expected, %s)", ch.channel, n,
                 ch.channel >= n ? "out of range" : "that one is here already");
        return -EAGAIN;
    }
    *id = ch.channel;
    return 0;
}

/* The source's channels connect to our listener after HELLO_ACK and name
 * this migration's uuid and their id. Anything else (silence, garbage,
 * another migration's uuid, a repeated id) is closed and waited past, in
 * the lobby (dest_accept.c), until the I/O timeout. */
int lm__dest_accept_channels(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    bool postcopy = (d->hello.flags & LM_HELLO_POSTCOPY) && !(d->hello.flags & LM_HELLO_NO_PREEMPT);
    unsigned nch = d->hello.nchannels, n = nch + postcopy, got = 0;
    lm_conn conns[LM_MAX_CHANNELS + 1];
    bool taken[LM_MAX_CHANNELS + 1] = {false};
    lm_dest_lobby lb;
    lm__dest_lobby_init(&lb, d);
    uint64_t deadline = lm_now_ns() + (uint64_t)d->conn.timeout_ms * 1000000;
    int ret = 0;
    while (got < n) {
        lm_greeting g;
        if ((ret = lm__dest_lobby_next(&lb, deadline, wait_for_channel, &g)) < 0)
            break;
        char why[256];
        unsigned id;
        if (check_channel(d, &g, n, taken, &id, why, sizeof(why)) < 0) {
            lm__dest_lobby_turn_away(&lb, &g, why);
            continue;
        }
        lm__dest_adopt(d, &conns[id], &g, "source");
        taken[id] = true;
        got++;
    }
    if (ret == -ETIMEDOUT) {
        char summary[256];
        lm__dest_lobby_summary(&lb, summary, sizeof(summary));
        ret = lm_err_set(&ctx->err, -ETIMEDOUT,
                         "the source's multifd channels did not connect within %u ms (%u of %u "
                         "arrived)%s",
                         d->conn.timeout_ms, got, n, summary);
    }
    lm__dest_lobby_close(&lb);
    if (ret < 0) {
        for (unsigned i = 0; i < n; i++)
            if (taken[i])
                lm_conn_close(&conns[i]);
        return ret;
    }
    if (postcopy) { /* the last one is the preempt connection */
        lm_recv_chan *c = &d->preempt;
        ret = lm_recv_chan_init(c, nch, &c->own_conn, &d->inplace.sink,
                                (lm_compression)d->hello.compress, ctx->ram.page_size, &ctx->err);
        c->own_conn = conns[nch];
        c->own_conn.peer = "source (preempt connection)";
        d->have_preempt = true;
        if (ret < 0) {
            for (unsigned i = 0; i < nch; i++)
                lm_conn_close(&conns[i]);
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
                               .slow_channel_us = d->ctx->testing.slow_channel_us,
                               .main_fd = d->conn.fd,
                               .progress_ns = &ctx->io_progress_ns};
    ret = lm_multifd_recv_start(&d->pool, nch, conns, &cfg, &ctx->err);
    d->use_pool = ret == 0;
    return ret;
}

int lm__dest_handshake(lm_dest *d, const lm_frame *first)
{
    int ret;
    if (first->type != LM_MSG_HELLO)
        return lm__dest_protocol_error(d, -EPROTO, "the stream must start with HELLO");
    uint8_t buf[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    if ((ret = lm_conn_recv_body(&d->conn, first, buf, sizeof(buf))) < 0)
        return ret;
    char why[256];
    if ((ret = lm_hello_decode(buf, first->length, &d->hello, why, sizeof(why))) < 0)
        return lm__dest_protocol_error(d, ret, why);
    /* RECOVER names a paused migration; a fresh one has none to resume. */
    if (d->hello.flags & LM_HELLO_RECOVER)
        return lm__dest_protocol_error(d, -EPROTO,
                                       "HELLO asks to recover a paused migration, but this "
                                       "destination holds none: start the migration anew");
    bool wants_more = d->hello.nchannels || ((d->hello.flags & LM_HELLO_POSTCOPY) &&
                                             !(d->hello.flags & LM_HELLO_NO_PREEMPT));
    if (d->listener->single && wants_more)
        return lm__dest_protocol_error(d, -EINVAL,
                                       "this destination was given one connection (fd:N): "
                                       "migrate with --multifd-channels 0 and "
                                       "--no-postcopy-preempt, or give it a listening socket");
    if ((ret = lm__dest_accept_layout(d)) < 0)
        return ret;
    lm_compression method = (lm_compression)d->hello.compress;
    lm_inplace_sink_init(&d->inplace, &d->ctx->ram, d->p->no_receivedmap, &d->budget, &d->ctx->err);
    lm__dest_placement_start(d);
    /* Copied pages are 4 KiB ones: no huge page commits more than it holds. */
    bool thp = d->p->dest_thp && d->place_uffd < 0;
    if ((ret = lm_ram_budget_init(&d->budget, &d->ctx->ram, thp, d->ctx->testing.host_available,
                                  &d->ctx->err)) < 0)
        return ret;
    if ((ret = lm_recv_chan_init(&d->main_chan, 0, &d->conn, &d->inplace.sink, method,
                                 d->ctx->ram.page_size, &d->ctx->err)) < 0)
        return ret;
    if ((ret = lm_conn_send_frame(&d->conn, LM_MSG_HELLO_ACK, NULL, 0)) < 0)
        return ret;
    bool preempt = (d->hello.flags & LM_HELLO_POSTCOPY) && !(d->hello.flags & LM_HELLO_NO_PREEMPT);
    return d->hello.nchannels || preempt ? lm__dest_accept_channels(d) : 0;
}
