/*
 * The destination after a broken link at or past the commit point
 * (docs/STATE-MACHINE.md): it keeps what it holds, listens on its address
 * again and takes back the one source that names this migration (HELLO
 * with RECOVER and the migration's uuid); anything else that connects is
 * told what this side waits for and dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "migration/dest.h"
#include "util/clock.h"

bool lm__dest_link_lost(int ret)
{
    return ret == -ECONNRESET || ret == -EPIPE || ret == -ETIMEDOUT || ret == -ENOTCONN ||
           ret == -ECONNABORTED || ret == -ENETDOWN || ret == -ENETUNREACH ||
           ret == -EHOSTUNREACH || ret == -ENETRESET;
}

/* The reconnecting HELLO must describe the migration we hold: same uuid,
 * same layout, same options (but RECOVER). */
static bool same_migration(const lm_hello *was, const lm_hello *now)
{
    if (!(now->flags & LM_HELLO_RECOVER) || memcmp(was->uuid, now->uuid, 16) ||
        (was->flags | LM_HELLO_RECOVER) != now->flags || was->nblocks != now->nblocks ||
        was->page_size != now->page_size || was->nchannels != now->nchannels ||
        was->compress != now->compress)
        return false;
    for (unsigned i = 0; i < was->nblocks; i++)
        if (was->blocks[i].id != now->blocks[i].id || was->blocks[i].len != now->blocks[i].len)
            return false;
    return true;
}

/* One candidate connection: 0 when it is our source coming back (the
 * HELLO_ACK is sent), -EAGAIN when it is something else (told and closed). */
static int take_back(lm_dest *d, int fd)
{
    lm_err scratch;
    lm_err_init(&scratch);
    lm_conn c;
    lm_conn_init(&c, fd, d->p->io_timeout_ms, NULL, "source", &scratch);
    lm_frame f;
    uint8_t buf[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    lm_hello h;
    char why[256];
    if (lm_conn_recv_frame(&c, &f) == 0 && f.type == LM_MSG_HELLO &&
        lm_conn_recv_body(&c, &f, buf, sizeof(buf)) == 0 &&
        lm_hello_decode(buf, f.length, &h, why, sizeof(why)) == 0 &&
        same_migration(&d->hello, &h) && lm_conn_send_frame(&c, LM_MSG_HELLO_ACK, NULL, 0) == 0) {
        uint64_t in = d->conn.bytes_in, out = d->conn.bytes_out;
        pthread_mutex_lock(&d->conn_lock);
        lm_conn_close(&d->conn);
        lm_conn_init(&d->conn, fd, d->p->io_timeout_ms, &d->ctx->cancel, "source", &d->ctx->err);
        lm_conn_share_progress(&d->conn, &d->ctx->io_progress_ns);
        d->conn.bytes_in = in + c.bytes_in;
        d->conn.bytes_out = out + c.bytes_out;
        pthread_mutex_unlock(&d->conn_lock);
        d->st.reconnects++;
        return 0;
    }
    lm_conn_send_error(&c, -EBUSY,
                       "this destination is paused in another migration and takes back only "
                       "its own source");
    lm_conn_close(&c);
    return -EAGAIN;
}

int lm__dest_take_back_source(lm_dest *d, uint64_t deadline_ns)
{
    for (;;) {
        uint64_t now = lm_now_ns();
        if (now >= deadline_ns)
            return -ETIMEDOUT;
        lm_err scratch;
        lm_err_init(&scratch);
        int fd, ret = lm_listener_accept(d->listener, (unsigned)((deadline_ns - now) / 1000000) + 1,
                                         NULL, &fd, &scratch);
        if (ret == -ETIMEDOUT)
            return ret;
        if (ret < 0)
            return lm_err_set(&d->ctx->err, ret, "waiting for the source to reconnect: %s",
                              scratch.msg);
        if (take_back(d, fd) == 0)
            return 0;
    }
}

int lm__dest_await_commit(lm_dest *d)
{
    unsigned back = d->fsm.state;
    unsigned wait_ms = lm__recover_timeout_ms(d->p, back == LM_DST_POSTCOPY_READY);
    int ret = lm__dest_enter(d, LM_DST_SWITCHOVER_PAUSED);
    if (ret < 0)
        return ret;
    ret = lm__dest_take_back_source(d, lm_now_ns() + (uint64_t)wait_ms * 1000000);
    if (ret == 0) {
        lm_err_reset(&d->ctx->err);
        return lm__dest_enter(d, back);
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

/* The guest runs here. Until the source says it heard RESUMED (CONFIRMED)
 * it may not have: if anything else comes (a close, a reset, a timeout),
 * take it back when it reconnects and confirm again. A close alone proves
 * nothing: a middlebox that drops a link closes both ends cleanly. */
void lm__dest_linger_for_source(lm_dest *d)
{
    unsigned wait_ms = lm__recover_timeout_ms(d->p, false);
    for (;;) {
        lm_err scratch;
        lm_err_init(&scratch);
        lm_frame f;
        d->conn.err = &scratch;
        int ret = d->conn.fd >= 0 ? lm_conn_recv_frame(&d->conn, &f) : -ENOTCONN;
        if (ret == 0 && f.type == LM_MSG_CONFIRMED && !f.length) {
            d->conn.err = &d->ctx->err;
            return;
        }
        if (ret == 0 && f.type == LM_MSG_COMMIT && !f.length) { /* asked again, same link */
            d->conn.err = &d->ctx->err;
            lm__dest_confirm_commit(d);
            continue;
        }
        d->conn.err = &d->ctx->err;
        if (lm__dest_take_back_source(d, lm_now_ns() + (uint64_t)wait_ms * 1000000) < 0)
            return; /* it never asked again: nothing more to tell */
    }
}
