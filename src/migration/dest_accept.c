/*
 * The destination's listener: who may speak. Anyone can connect to it, so
 * no single connection may stall or end a migration by connecting:
 *
 *   - up to LM_LOBBY_MAX connections wait at once (the lobby); a new one
 *     beyond that closes the oldest, which had the longest to speak, so a
 *     flood costs a bounded number of descriptors and a real source that
 *     speaks at once still gets in;
 *   - each waits without cost until it has something to say, and has the
 *     greeting time (a few seconds) to say its first frame header; silence
 *     and anything that is not a livemig frame close it and are counted;
 *   - the caller (the main connection, the channels, a returning source)
 *     decides about the first frame it gets, and turns away what is not
 *     its peer; waiting goes on until the phase's own deadline.
 *
 * lm__dest_open_conn() is the one place an accepted descriptor becomes a
 * connection on the destination; a transport handshake (TLS) goes there.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/dest.h"
#include "util/clock.h"

/* A peer that connected has this long to present its first frame header;
 * a real source writes it at once. */
#define LM_GREET_MAX_MS 5000u

int lm__dest_open_conn(lm_dest *d, lm_conn *c, int fd, unsigned timeout_ms, const char *peer,
                       lm_err *err)
{
    lm_conn_init(c, fd, timeout_ms, &d->ctx->cancel, peer, err);
    return lm__dest_secure(d, c); /* TLS, within timeout_ms, before any frame */
}

void lm__dest_adopt(lm_dest *d, lm_conn *to, lm_greeting *g, const char *peer)
{
    *to = g->conn;
    to->timeout_ms = d->p->io_timeout_ms ? d->p->io_timeout_ms : 10000;
    to->cancel = &d->ctx->cancel;
    to->err = &d->ctx->err;
    to->peer = peer;
    /* Only now do its bytes count as the migration's progress: a stranger
     * trickling bytes must not keep a stuck migration alive. */
    lm_conn_share_progress(to, &d->ctx->io_progress_ns);
    g->conn.fd = -1;
}

void lm__dest_lobby_init(lm_dest_lobby *lb, lm_dest *d)
{
    memset(lb, 0, sizeof(*lb));
    lb->d = d;
    unsigned io = d->p->io_timeout_ms ? d->p->io_timeout_ms : 10000;
    lb->greet_ms = io < LM_GREET_MAX_MS ? io : LM_GREET_MAX_MS;
    lb->cancel = &d->ctx->cancel;
    lm_err_init(&lb->scratch);
    lm_listener *l = d->listener;
    if (l->single && l->conn_fd >= 0) { /* fd:N, connected: the one connection */
        lb->wait[lb->n].fd = l->conn_fd;
        lb->wait[lb->n].since_ns = lm_now_ns();
        lb->n++;
        l->conn_fd = -1;
    }
}

void lm__dest_lobby_close(lm_dest_lobby *lb)
{
    for (unsigned i = 0; i < lb->n; i++)
        close(lb->wait[i].fd);
    lb->n = 0;
}

void lm__dest_lobby_turn_away(lm_dest_lobby *lb, lm_greeting *g, const char *why)
{
    lm_conn_close(&g->conn);
    lb->turned_away++;
    snprintf(lb->why, sizeof(lb->why), "%s", why);
}

size_t lm__dest_lobby_summary(const lm_dest_lobby *lb, char *out, size_t len)
{
    if (!lb->turned_away) {
        if (len)
            out[0] = '\0';
        return 0;
    }
    /* The last reason came from a stranger's bytes: escaped when it was
     * quoted, and cut to fit. */
    return (size_t)snprintf(out, len, " (%u other connection%s closed; the last: %s)",
                            lb->turned_away, lb->turned_away == 1 ? " was" : "s were", lb->why);
}

static void drop(lm_dest_lobby *lb, unsigned i, const char *why)
{
    close(lb->wait[i].fd);
    lb->wait[i] = lb->wait[--lb->n];
    lb->turned_away++;
    snprintf(lb->why, sizeof(lb->why), "%s", why);
}

/* Takes every connection pending on the listener (none blocks). */
static int accept_pending(lm_dest_lobby *lb)
{
    for (unsigned taken = 0; taken < LM_LOBBY_MAX; taken++) {
        int fd = lm_sys_accept4(lb->d->listener->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return 0;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: leave the rest in the backlog for a
                 * while rather than spin on a listener that stays ready. */
                lb->listener_rest_until = lm_now_ns() + 100000000ull;
                return 0;
            }
            return lm_err_set(&lb->d->ctx->err, -errno, "accept: %s", strerror(errno));
        }
        if (lb->n == LM_LOBBY_MAX) {
            unsigned oldest = 0;
            for (unsigned i = 1; i < lb->n; i++)
                if (lb->wait[i].since_ns < lb->wait[oldest].since_ns)
                    oldest = i;
            drop(lb, oldest,
                 "more connections waited at once than the lobby holds; the oldest was closed");
        }
        lb->wait[lb->n].fd = fd;
        lb->wait[lb->n].since_ns = lm_now_ns();
        lb->n++;
    }
    return 0;
}

static void expire(lm_dest_lobby *lb, uint64_t now)
{
    char why[96];
    for (unsigned i = 0; i < lb->n;)
        if (now - lb->wait[i].since_ns > (uint64_t)lb->greet_ms * 1000000) {
            snprintf(why, sizeof(why), "a connection said nothing within %u ms", lb->greet_ms);
            drop(lb, i, why);
        } else {
            i++;
        }
}

/* A waiting connection has bytes (or closed): read its first frame header
 * within the greeting time. 0: a frame header (valid, or livemig's but
 * invalid: g->bad_code); -EAGAIN: it was turned away. */
static int greet(lm_dest_lobby *lb, int fd, lm_greeting *g)
{
    memset(g, 0, sizeof(*g));
    lm_err_reset(&lb->scratch);
    int ret =
        lm__dest_open_conn(lb->d, &g->conn, fd, lb->greet_ms, "connecting peer", &lb->scratch);
    g->conn.cancel = lb->cancel;
    uint8_t hdr[LM_FRAME_HDR_SIZE];
    if (ret == 0)
        ret = lm_conn_read(&g->conn, hdr, sizeof(hdr));
    if (ret < 0) {
        char why[sizeof(lb->why)];
        lm_err_copy(&lb->scratch, why, sizeof(why));
        lm__dest_lobby_turn_away(lb, g, why);
        return -EAGAIN;
    }
    if (!g->conn.tls && lm_tls_looks_like_record(hdr, sizeof(hdr))) {
        /* Tell it in a frame: its TLS layer recognizes one and says so. */
        const char *why = "a peer speaks TLS and this destination was started without it: give "
                          "both sides --tls-creds DIR (or --tls-psk FILE), or neither";
        lm_conn_send_error(&g->conn, EACCES, why);
        lm__dest_lobby_turn_away(lb, g, why);
        return -EAGAIN;
    }
    if (lm_get_be32(hdr) != LM_WIRE_MAGIC) {
        char why[96];
        snprintf(why, sizeof(why), "bad frame magic 0x%08x: not a livemig peer", lm_get_be32(hdr));
        lm__dest_lobby_turn_away(lb, g, why);
        return -EAGAIN;
    }
    /* It speaks livemig: an invalid header (another version) is for the
     * caller to answer. */
    g->bad_code = lm_frame_decode(hdr, &g->f, g->bad, sizeof(g->bad));
    if (g->bad_code == 0)
        g->bad[0] = '\0';
    return 0;
}

int lm__dest_lobby_next(lm_dest_lobby *lb, uint64_t deadline_ns, lm_dest_watch watch,
                        lm_greeting *g)
{
    lm_dest *d = lb->d;
    bool watching = watch != NULL;
    for (;;) {
        uint64_t now = lm_now_ns();
        expire(lb, now);
        if (deadline_ns && now >= deadline_ns)
            return -ETIMEDOUT;
        if (d->listener->single && lb->n == 0) {
            /* fd:N was one connection: nothing else can arrive. */
            lb->turned_away++;
            snprintf(lb->why, sizeof(lb->why),
                     "%.40s was one connection, already taken: channels, a preempt connection "
                     "or a reconnection need a listening socket",
                     d->listener->uri);
            return -ETIMEDOUT;
        }
        if (lb->cancel && atomic_load(lb->cancel))
            return lm_err_set(&d->ctx->err, -ECANCELED, "cancelled while waiting for the source");
        struct pollfd pfd[LM_LOBBY_MAX + 2];
        unsigned n = 0, first_wait, main_at = 0;
        pfd[n++] = (struct pollfd){.fd = now < lb->listener_rest_until ? -1 : d->listener->fd,
                                   .events = POLLIN};
        first_wait = n;
        for (unsigned i = 0; i < lb->n; i++)
            pfd[n++] = (struct pollfd){.fd = lb->wait[i].fd, .events = POLLIN};
        if (watching) {
            main_at = n;
            pfd[n++] = (struct pollfd){.fd = d->conn.fd, .events = POLLIN};
        }
        int ready = poll(pfd, n, 100);
        if (ready < 0 && errno != EINTR)
            return lm_err_set(&d->ctx->err, -errno, "poll: %s", strerror(errno));
        if (ready <= 0)
            continue;
        if (watching && pfd[main_at].revents) {
            int ret = watch(d, &watching);
            if (ret < 0)
                return ret;
        }
        /* One greeting per call; the others stay readable for the next. */
        for (unsigned i = first_wait; i < first_wait + lb->n; i++) {
            if (!pfd[i].revents)
                continue;
            unsigned at = i - first_wait;
            int fd = lb->wait[at].fd;
            lb->wait[at] = lb->wait[--lb->n];
            if (greet(lb, fd, g) == 0)
                return 0;
            break; /* the list moved: poll again */
        }
        if (pfd[0].revents) {
            int ret = accept_pending(lb);
            if (ret < 0)
                return ret;
        }
    }
}

/* The main connection: the first peer whose first frame is a livemig
 * frame. What is not (silence, garbage, a stray channel) is closed and
 * waited past, until accept_timeout_ms. */
int lm__dest_accept_source(lm_dest *d, lm_frame *first)
{
    lm_ctx *ctx = d->ctx;
    lm_dest_lobby lb;
    lm__dest_lobby_init(&lb, d);
    unsigned limit = d->p->accept_timeout_ms;
    uint64_t deadline = limit ? lm_now_ns() + (uint64_t)limit * 1000000 : 0;
    lm_greeting g;
    int ret;
    for (;;) {
        if ((ret = lm__dest_lobby_next(&lb, deadline, NULL, &g)) < 0)
            break;
        if (g.bad_code == 0 && g.f.type == LM_MSG_CHANNEL_HELLO) {
            lm__dest_lobby_turn_away(&lb, &g,
                                     "a multifd channel connected with no migration under way "
                                     "(one of an earlier attempt?)");
            continue;
        }
        /* A livemig peer: the source, whatever it says next (an invalid
         * header ends the migration with its reason, as any bad stream). */
        lm__dest_adopt(d, &d->conn, &g, "source");
        *first = g.f;
        if (g.bad_code)
            ret = lm_err_set(&ctx->err, g.bad_code, "invalid stream from the source: %s", g.bad);
        break;
    }
    if (ret == -ETIMEDOUT) {
        char summary[256];
        lm__dest_lobby_summary(&lb, summary, sizeof(summary));
        ret = lm_err_set(&ctx->err, -ETIMEDOUT, "no source connected to %s within %u ms%s",
                         d->listener->uri, limit, summary);
    }
    lm__dest_lobby_close(&lb);
    return ret;
}
