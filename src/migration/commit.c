/*
 * The commit point, source side (docs/STATE-MACHINE.md, "The commit point").
 *
 * The destination first says it can run the guest (SWITCHOVER_READY) and
 * then waits, its copy stopped. The source commits by sending COMMIT (or
 * POSTCOPY_RUN): from the moment it may have left, the source never runs
 * its copy again unless the destination says, over a live link, that it did
 * not and will not run it (RESUMED with an error). A link that breaks in
 * between leaves this side unable to know: it keeps its guest stopped
 * ('switchover-paused'), reconnects, and sends the commit again; the
 * destination answers RESUMED whether it had already run the guest or runs
 * it now. Nothing is decided by a timeout except that the question stays
 * open, and the error says so.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "migration/source.h"
#include "util/clock.h"

int lm__src_await_ready(lm_source *s, lm_resumed *r, unsigned extra_ms)
{
    uint8_t body[LM_RESUMED_SIZE];
    uint32_t len;
    char why[128];
    int ret = lm_conn_expect(&s->conn, LM_MSG_SWITCHOVER_READY, body, sizeof(body), &len, extra_ms);
    if (ret < 0)
        return ret;
    if ((ret = lm_resumed_decode(body, len, r, why, sizeof(why))) < 0)
        return lm_err_set(&s->ctx->err, ret, "invalid SWITCHOVER_READY: %s", why);
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A new main connection that names this migration (HELLO with RECOVER and
 * its uuid), tried with backoff until deadline_ns plus an I/O timeout: the
 * destination may need that long to notice the break and listen again.
 * Each try waits a fraction of the I/O timeout for HELLO_ACK, so that a try
 * that reached a destination not yet listening is followed by others. */
int lm__src_reconnect(lm_source *s, uint64_t deadline_ns)
{
    lm_ctx *ctx = s->ctx;
    uint64_t out = s->conn.bytes_out, in = s->conn.bytes_in;
    unsigned backoff_ms = 20, tries = 0;
    char last[sizeof(ctx->err.msg)] = ""; /* why the last try failed */
    unsigned try_ms = s->p->io_timeout_ms / 3 > 500 ? s->p->io_timeout_ms / 3 : 500;
    deadline_ns += (uint64_t)s->p->io_timeout_ms * 1000000;
    lm_conn_close(&s->conn);
    s->conn.fd = -1;
    for (;;) {
        uint64_t now = lm_now_ns();
        if (now >= deadline_ns)
            break;
        /* Before the commit the guest runs here and a cancel still ends it. */
        if (!s->committed && atomic_load(&ctx->cancel)) {
            s->conn.bytes_out = out;
            s->conn.bytes_in = in;
            return lm_err_set(&ctx->err, -ECANCELED, "migration cancelled");
        }
        unsigned left_ms = (unsigned)((deadline_ns - now) / 1000000) + 1;
        unsigned wait_ms = left_ms < try_ms ? left_ms : try_ms;
        lm_err scratch;
        lm_err_init(&scratch);
        int ret = lm__src_open_conn(s, &s->conn, wait_ms, NULL, "destination", &scratch);
        tries++;
        if (ret == 0) {
            s->conn.err = &ctx->err;
            if ((ret = lm__src_handshake(s, true)) == 0) {
                s->conn.timeout_ms = s->p->io_timeout_ms;
                s->conn.bytes_out += out;
                s->conn.bytes_in += in;
                s->st.reconnects++;
                lm_err_reset(&ctx->err);
                return 0;
            }
            snprintf(last, sizeof(last), "%s", ctx->err.msg);
            lm_conn_close(&s->conn);
            s->conn.fd = -1;
        } else {
            snprintf(last, sizeof(last), "%s", scratch.msg);
        }
        sleep_ms(backoff_ms);
        backoff_ms = backoff_ms < 500 ? backoff_ms * 2 : 1000;
    }
    s->conn.bytes_out = out;
    s->conn.bytes_in = in;
    lm_err_reset(&ctx->err);
    return lm_err_set(&ctx->err, -ETIMEDOUT,
                      "the destination did not come back within %u ms (%u attempts; the "
                      "last: %s)",
                      lm__recover_timeout_ms(s->p, s->p->postcopy) + s->p->io_timeout_ms, tries,
                      last[0] ? last : "no answer");
}

/* Did the peer say, over a live link, that it will not run the guest? */
static bool refused(const lm_resumed *ack)
{
    return ack->status < 0;
}

int lm__src_commit(lm_source *s, uint16_t commit_msg, lm_resumed *ack)
{
    lm_ctx *ctx = s->ctx;
    /* From here a cancel is refused: the guest may already run there. */
    s->committed = true;
    s->conn.cancel = NULL;
    uint64_t deadline = 0;
    for (;;) {
        uint8_t body[LM_RESUMED_SIZE];
        uint32_t len;
        char why[128];
        int ret = lm_conn_send_frame(&s->conn, commit_msg, NULL, 0);
        if (ret == 0)
            ret = lm_conn_expect(&s->conn, LM_MSG_RESUMED, body, sizeof(body), &len, 0);
        if (ret == 0 && (ret = lm_resumed_decode(body, len, ack, why, sizeof(why))) < 0)
            ret = lm_err_set(&ctx->err, ret, "invalid RESUMED: %s", why);
        if (ret == 0 && refused(ack)) {
            /* The destination is alive and says it never ran the guest. */
            s->committed = false;
            return lm_err_set(&ctx->err, ack->status,
                              "the destination could not resume the guest: %s",
                              strerror(-ack->status));
        }
        if (ret == 0 && commit_msg == LM_MSG_COMMIT) {
            /* The destination waits for this before it lets go of the
             * question; lost, it only waits longer. */
            lm_conn_send_frame(&s->conn, LM_MSG_CONFIRMED, NULL, 0);
            lm_err_reset(&ctx->err);
        }
        if (ret == 0)
            return 0;
        if (commit_msg != LM_MSG_COMMIT)
            return ret; /* postcopy: the pause and its recovery take over */
        /* The commit may have arrived: only the destination can say. */
        if (s->fsm.state != LM_STATUS_SWITCHOVER_PAUSED) {
            if ((ret = lm__src_enter(s, LM_STATUS_SWITCHOVER_PAUSED)) < 0)
                return ret;
            deadline = lm_now_ns() + (uint64_t)lm__recover_timeout_ms(s->p, false) * 1000000;
        }
        if ((ret = lm__src_reconnect(s, deadline)) < 0) {
            lm_err_reset(&ctx->err);
            return lm_err_set(&ctx->err, ret,
                              "switchover-paused: the link broke after the commit was sent and "
                              "the destination did not come back within %u ms; the guest stays "
                              "stopped here because it may be running on the destination: "
                              "check the destination's report before starting it anywhere",
                              lm__recover_timeout_ms(s->p, false) + s->p->io_timeout_ms);
        }
    }
}
