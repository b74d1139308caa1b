#include "transport/conn.h"

#include "util/clock.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void lm_conn_init(lm_conn *c, int fd, unsigned timeout_ms, const _Atomic int *cancel,
                  const char *peer, lm_err *err)
{
    int one = 1;
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->timeout_ms = timeout_ms ? timeout_ms : 10000;
    c->cancel = cancel;
    c->peer = peer;
    c->err = err;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void lm_conn_share_progress(lm_conn *c, _Atomic uint64_t *progress_ns)
{
    c->progress_ns = progress_ns;
}

static void made_progress(lm_conn *c)
{
    if (c->progress_ns)
        atomic_store_explicit(c->progress_ns, lm_now_ns(), memory_order_relaxed);
}

void lm_conn_close(lm_conn *c)
{
    lm_tls_session_free(c->tls);
    c->tls = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int io_failed(lm_conn *c, int code, const char *what)
{
    if (code == -ECANCELED)
        return lm_err_set(c->err, code, "migration cancelled");
    if (code == -ETIMEDOUT)
        return lm_err_set(c->err, code,
                          "no progress %s the %s for %u ms (on any connection): "
                          "it is stuck or unreachable",
                          what, c->peer, c->timeout_ms);
    if (code == -ETIME)
        return lm_err_set(c->err, -ETIMEDOUT,
                          "%s the %s took longer than %u ms for one message: the peer "
                          "or the link is too slow, or the peer is stalling on purpose",
                          what, c->peer, c->timeout_ms);
    if (code == -ECONNRESET || code == -EPIPE || code == -ENOTCONN)
        return lm_err_set(c->err, code,
                          "connection to the %s lost while %s it (%s): "
                          "did the %s exit?",
                          c->peer, what, strerror(-code), c->peer);
    return lm_err_set(c->err, code, "error while %s the %s: %s", what, c->peer, strerror(-code));
}

/* One read or write operation's clock (see conn.h). */
typedef struct op_clock {
    uint64_t start_ns;
    bool moved; /* a byte of this operation has moved */
} op_clock;

static op_clock op_begin(void)
{
    return (op_clock){lm_now_ns(), false};
}

/* Waits until fd is ready for 'events', in 100 ms slices so cancel is
 * seen. -ETIMEDOUT when idle too long, -ETIME past an operation's end. */
static int wait_ready(lm_conn *c, short events, const op_clock *op)
{
    uint64_t limit = (uint64_t)c->timeout_ms * 1000000;
    for (;;) {
        if (c->cancel && atomic_load(c->cancel))
            return -ECANCELED;
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int n = poll(&pfd, 1, 100);
        if (n > 0)
            return 0; /* ready, or an error the next call will report */
        if (n < 0 && errno != EINTR)
            return -errno;
        uint64_t now = lm_now_ns();
        if (op->moved) {
            if (now - op->start_ns >= limit)
                return -ETIME;
            continue;
        }
        uint64_t last = op->start_ns;
        if (c->progress_ns) {
            uint64_t shared = atomic_load_explicit(c->progress_ns, memory_order_relaxed);
            last = shared > last ? shared : last;
        }
        /* Another connection may have moved a byte after 'now' was read. */
        if (last < now && now - last >= limit)
            return -ETIMEDOUT;
    }
}

static void advance(struct iovec **iov, int *iovcnt, size_t done)
{
    while (*iovcnt && done >= (*iov)->iov_len) {
        done -= (*iov)->iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + done;
        (*iov)->iov_len -= done;
    }
}

/* After a step returned code < 0: 0 to try again (interrupted, or the
 * socket became ready within the bounded wait), or the error, named (why:
 * a sentence from the TLS layer, when it has one). */
static int retry_after(lm_conn *c, int code, short events, const char *what, const op_clock *op,
                       const char *why)
{
    if (code == -EINTR)
        return 0;
    if (code != -EAGAIN) {
        if (why && why[0])
            return lm_err_set(c->err, code, "%s", why);
        return io_failed(c, code, what);
    }
    int ret = wait_ready(c, events, op);
    return ret < 0 ? io_failed(c, ret, what) : 0;
}

static int writev_unlocked(lm_conn *c, struct iovec *iov, int iovcnt);

int lm_conn_writev(lm_conn *c, struct iovec *iov, int iovcnt)
{
    if (!c->write_lock)
        return writev_unlocked(c, iov, iovcnt);
    pthread_mutex_lock(c->write_lock);
    int ret = writev_unlocked(c, iov, iovcnt);
    pthread_mutex_unlock(c->write_lock);
    return ret;
}

/* TLS: the iovec goes into records of the largest size (one copy), then
 * out as the socket takes it. */
static int tls_writev(lm_conn *c, struct iovec *iov, int iovcnt)
{
    char why[256] = "";
    op_clock op = op_begin();
    uint64_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (lm_tls_queue(c->tls, iov, iovcnt, why, sizeof(why)) < 0)
        return lm_err_set(c->err, -ENOMEM, "%s", why);
    for (;;) {
        ssize_t n = lm_tls_flush(c->tls, why, sizeof(why));
        if (n >= 0)
            break;
        int ret = retry_after(c, (int)n, POLLOUT, "sending to", &op, why);
        if (ret < 0)
            return ret;
        op.moved = true; /* records are queued: the message has started */
    }
    c->bytes_out += total;
    made_progress(c);
    return 0;
}

static int writev_unlocked(lm_conn *c, struct iovec *iov, int iovcnt)
{
    while (iovcnt && iov->iov_len == 0)
        iov++, iovcnt--;
    if (c->tls)
        return iovcnt ? tls_writev(c, iov, iovcnt) : 0;
    op_clock op = op_begin();
    while (iovcnt > 0) {
        struct msghdr mh = {.msg_iov = iov,
                            .msg_iovlen = (size_t)(iovcnt > IOV_MAX ? IOV_MAX : iovcnt)};
        ssize_t n = lm_sys_sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            int ret = retry_after(c, -errno, POLLOUT, "sending to", &op, NULL);
            if (ret < 0)
                return ret;
            continue;
        }
        op.moved = true;
        c->bytes_out += (uint64_t)n;
        made_progress(c);
        advance(&iov, &iovcnt, (size_t)n);
        while (iovcnt && iov->iov_len == 0)
            iov++, iovcnt--;
    }
    return 0;
}

/* One read step: bytes read (0 at the end of the stream) or -errno. */
static ssize_t read_step(lm_conn *c, struct iovec *iov, int iovcnt, char *why, size_t len)
{
    if (c->tls)
        return lm_tls_recv(c->tls, iov->iov_base, iov->iov_len, why, len);
    ssize_t n = lm_sys_readv(c->fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt);
    return n < 0 ? -errno : n;
}

int lm_conn_readv(lm_conn *c, struct iovec *iov, int iovcnt)
{
    op_clock op = op_begin();
    while (iovcnt && iov->iov_len == 0)
        iov++, iovcnt--;
    while (iovcnt > 0) {
        char why[256] = "";
        ssize_t n = read_step(c, iov, iovcnt, why, sizeof(why));
        if (n == 0)
            return lm_err_set(c->err, -ECONNRESET,
                              "the %s closed the connection in the "
                              "middle of the stream (truncated or aborted migration)",
                              c->peer);
        if (n < 0) {
            int ret = retry_after(c, (int)n, POLLIN, "receiving from", &op, why);
            if (ret < 0)
                return ret;
            continue;
        }
        op.moved = true;
        c->bytes_in += (uint64_t)n;
        made_progress(c);
        advance(&iov, &iovcnt, (size_t)n);
        while (iovcnt && iov->iov_len == 0)
            iov++, iovcnt--;
    }
    return 0;
}

int lm_conn_read(lm_conn *c, void *buf, size_t len)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    return lm_conn_readv(c, &iov, 1);
}

ssize_t lm_conn_peek(lm_conn *c, void *buf, size_t len)
{
    char why[256] = "";
    ssize_t n = c->tls ? lm_tls_peek(c->tls, buf, len, why, sizeof(why))
                       : lm_sys_recv(c->fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
    if (!c->tls && n < 0)
        n = -errno;
    if (n == -EINTR)
        n = -EAGAIN;
    if (n < 0 && n != -EAGAIN)
        return why[0] ? lm_err_set(c->err, (int)n, "%s", why)
                      : io_failed(c, (int)n, "receiving from");
    return n;
}

int lm_conn_read_or_eof(lm_conn *c, void *buf, size_t len)
{
    op_clock op = op_begin();
    for (;;) {
        ssize_t n = lm_conn_peek(c, buf, 1);
        if (n == 0)
            return 1;
        if (n > 0)
            return lm_conn_read(c, buf, len);
        if (n != -EAGAIN)
            return (int)n;
        int ret = wait_ready(c, POLLIN, &op);
        if (ret < 0)
            return io_failed(c, ret, "receiving from");
    }
}

int lm_conn_start_tls(lm_conn *c, lm_tls *t, const char *host)
{
    lm_tls_session *s;
    int ret = lm_tls_session_new(&s, t, c->fd, host, c->err);
    if (ret < 0)
        return ret;
    /* The handshake is one operation: a peer that dawdles through it is
     * cut off when the connection's timeout has passed since it began. */
    op_clock op = op_begin();
    op.moved = true;
    for (;;) {
        char why[512] = "";
        bool want_write = false;
        ret = lm_tls_handshake_step(s, &want_write, why, sizeof(why));
        if (ret == 0)
            break;
        if (ret == -EAGAIN || ret == -EINTR) {
            if (ret == -EINTR)
                continue;
            ret = wait_ready(c, want_write ? POLLOUT : POLLIN, &op);
            if (ret == 0)
                continue;
            ret = io_failed(c, ret, "in the TLS handshake with");
        } else {
            lm_err_set(c->err, ret, "%s", why);
        }
        bool plaintext_peer = strstr(why, "speaks plaintext") != NULL;
        lm_tls_session_free(s);
        c->tls_refused = true;
        if (plaintext_peer && lm_tls_is_server(t)) {
            /* It reads frames, so tell it in one. */
            char msg[LM_ERROR_MAX_TEXT];
            snprintf(msg, sizeof(msg),
                     "this destination requires TLS (%s): start the source with --tls-%s",
                     lm_tls_mode(t), strcmp(lm_tls_mode(t), "psk") ? "creds DIR" : "psk FILE");
            c->tls_refused = false;
            lm_conn_send_error(c, EACCES, msg);
            c->tls_refused = true;
        }
        return ret;
    }
    c->tls = s;
    return 0;
}

const char *lm_conn_cipher(const lm_conn *c, char *buf, size_t len)
{
    if (!c->tls) {
        if (len)
            buf[0] = '\0';
        return buf;
    }
    return lm_tls_session_cipher(c->tls, buf, len);
}

int lm_conn_send_frame(lm_conn *c, uint16_t type, const void *body, uint32_t len)
{
    uint8_t hdr[LM_FRAME_HDR_SIZE];
    lm_frame_encode(hdr, type, len);
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)body, len}};
    return lm_conn_writev(c, iov, len ? 2 : 1);
}

int lm_conn_recv_frame(lm_conn *c, lm_frame *f)
{
    uint8_t hdr[LM_FRAME_HDR_SIZE];
    int ret = lm_conn_read(c, hdr, sizeof(hdr));
    if (ret < 0)
        return ret;
    char why[256];
    ret = lm_frame_decode(hdr, f, why, sizeof(why));
    if (ret < 0 && !c->tls && lm_tls_looks_like_record(hdr, sizeof(hdr)))
        return lm_err_set(c->err, -EACCES,
                          "the %s speaks TLS and this side was started without it: give both "
                          "sides --tls-creds DIR (or --tls-psk FILE), or neither",
                          c->peer);
    if (ret < 0)
        return lm_err_set(c->err, ret, "invalid stream from the %s: %s", c->peer, why);
    return 0;
}

int lm_conn_recv_body(lm_conn *c, const lm_frame *f, void *buf, size_t cap)
{
    if (f->length > cap)
        return lm_err_set(c->err, -EBADMSG,
                          "invalid stream from the %s: %s message of %u "
                          "bytes, at most %zu expected",
                          c->peer, lm_msg_name(f->type), f->length, cap);
    return lm_conn_read(c, buf, f->length);
}

int lm_conn_expect(lm_conn *c, uint16_t type, void *body, size_t cap, uint32_t *len,
                   unsigned extra_ms)
{
    lm_frame f;
    unsigned io_timeout = c->timeout_ms;
    c->timeout_ms += extra_ms;
    int ret;
    /* BUSY: the peer is working through what it was sent; its arrival is
     * the progress the wait needed, and the wait goes on, for as long as
     * the work asked of it allows (busy_allow_ns), never longer. */
    uint64_t since = lm_now_ns();
    while ((ret = lm_conn_recv_frame(c, &f)) == 0 && f.type == LM_MSG_BUSY && !f.length) {
        uint64_t now = lm_now_ns(), spent = now - since;
        since = now;
        if (spent > c->busy_allow_ns) {
            ret = lm_err_set(c->err, -ETIMEDOUT,
                             "the %s kept saying it is busy longer than the work it was sent "
                             "can take",
                             c->peer);
            break;
        }
        c->busy_allow_ns -= spent;
    }
    c->timeout_ms = io_timeout;
    if (ret < 0)
        return ret;
    /* Any other frame comes after the peer applied everything before it:
     * the work granted so far is done. */
    c->busy_allow_ns = 0;
    if (f.type == LM_MSG_ERROR) {
        uint8_t text[4 + LM_ERROR_MAX_TEXT];
        if ((ret = lm_conn_recv_body(c, &f, text, sizeof(text))) < 0)
            return ret;
        return lm_conn_peer_error(c, text, f.length);
    }
    if (f.type != type)
        return lm_err_set(c->err, -EPROTO, "invalid stream from the %s: expected %s, got %s",
                          c->peer, lm_msg_name(type), lm_msg_name(f.type));
    if ((ret = lm_conn_recv_body(c, &f, body, cap)) < 0)
        return ret;
    if (len)
        *len = f.length;
    return 0;
}

void lm_conn_send_error(lm_conn *c, int code, const char *msg)
{
    if (c->tls_refused)
        return;
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    size_t n = strnlen(msg, LM_ERROR_MAX_TEXT);
    lm_put_be32(body, (uint32_t)(code < 0 ? -code : code));
    memcpy(body + 4, msg, n);
    unsigned saved = c->timeout_ms;
    lm_err scratch; /* a failure here must not replace the real error */
    lm_err *real = c->err;
    lm_err_init(&scratch);
    c->err = &scratch;
    c->timeout_ms = 1000;
    (void)lm_conn_send_frame(c, LM_MSG_ERROR, body, (uint32_t)(4 + n));
    c->timeout_ms = saved;
    c->err = real;
}

int lm_conn_peer_error(lm_conn *c, const uint8_t *body, size_t len)
{
    if (len < 4)
        return lm_err_set(c->err, -EBADMSG, "the %s reported an error without a code", c->peer);
    int code = (int)lm_get_be32(body);
    if (code <= 0 || code > 4095)
        code = EPROTO;
    /* The peer's words go to a terminal and logs: control characters (an
     * escape sequence, a CR/LF that forges a line) are shown as \xNN. */
    char text[4 * LM_ERROR_MAX_TEXT + 1];
    lm_escape_text(body + 4, len - 4, text, sizeof(text));
    return lm_err_set(c->err, -code, "the %s failed: %s", c->peer, text);
}

size_t lm_escape_text(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 <= cap; i++) {
        uint8_t b = in[i];
        if (b < 0x20 || b == 0x7f)
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b);
        else
            out[o++] = (char)b;
    }
    if (cap)
        out[o < cap ? o : cap - 1] = '\0';
    return o;
}
