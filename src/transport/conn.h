/*
 * A connected stream with bounded waits, plaintext or TLS (tls.h). Every
 * read and write is one operation with its own clock: the wait for its
 * first byte gives up after timeout_ms without progress on any of the
 * migration's connections; once a byte has moved, the whole operation must
 * end within timeout_ms of its start, so a peer that trickles bytes cannot
 * stretch it. *cancel ends any wait at once. Errors become sentences
 * naming the peer. Descriptors are non-blocking.
 */
#ifndef LM_TRANSPORT_CONN_H
#define LM_TRANSPORT_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>

#include "proto/wire.h"
#include "transport/tls.h"
#include "util/error.h"
#include "util/sys.h" /* the system calls a connection makes */

typedef struct lm_conn {
    int fd;
    unsigned timeout_ms;
    const _Atomic int *cancel;
    const char *peer; /* "destination" or "source", for messages */
    lm_err *err;
    uint64_t bytes_out; /* owned by the one thread that writes */
    uint64_t bytes_in;  /* owned by the one thread that reads */
    /* Shared by every connection of one migration: the last time any of
     * them moved a byte. A connection that is idle on purpose (the main
     * one while channels carry a round) times out only when all are. */
    _Atomic uint64_t *progress_ns;
    /* When two threads write (postcopy without a preempt connection):
     * held across each lm_conn_writev, so frames never interleave. */
    pthread_mutex_t *write_lock;
    /* TLS once lm_conn_start_tls succeeded; NULL for plaintext. A struct
     * copy shares it: only lm_conn_close of the owner frees it. */
    lm_tls_session *tls;
    /* The TLS handshake failed: the peer reads no plaintext frames. */
    bool tls_refused;
    /* How long lm_conn_expect may still wait on a peer that says BUSY:
     * grown by the reader for the work it asked of the peer, spent by the
     * waits BUSY kept alive. 0: BUSY is not expected and is refused. */
    uint64_t busy_allow_ns;
} lm_conn;

void lm_conn_init(lm_conn *c, int fd, unsigned timeout_ms, const _Atomic int *cancel,
                  const char *peer, lm_err *err);
void lm_conn_close(lm_conn *c);
/* Runs the TLS handshake (t's role) within timeout_ms; host names the
 * server the client expects. On failure the connection stays plaintext and
 * open, and c->err says which side lacked what; a destination also tells a
 * plaintext source, in a frame it can read, that TLS is required. */
int lm_conn_start_tls(lm_conn *c, lm_tls *t, const char *host);
/* "TLS1.3/AES-256-GCM", or "" for plaintext. */
const char *lm_conn_cipher(const lm_conn *c, char *buf, size_t len);
/* Non-blocking look at up to len bytes without consuming them: the count
 * available, 0 when the peer closed, -EAGAIN when none yet, or an error. */
ssize_t lm_conn_peek(lm_conn *c, void *buf, size_t len);
/* Joins the connection to a migration's shared progress clock. */
void lm_conn_share_progress(lm_conn *c, _Atomic uint64_t *progress_ns);

/* Writes all of iov (modified in place). 0 or -errno. */
int lm_conn_writev(lm_conn *c, struct iovec *iov, int iovcnt);
/* Reads exactly the bytes iov describes (modified in place). */
int lm_conn_readv(lm_conn *c, struct iovec *iov, int iovcnt);
int lm_conn_read(lm_conn *c, void *buf, size_t len);
/* Like lm_conn_read, but a peer that closes before the first byte is a
 * clean end: returns 1. */
int lm_conn_read_or_eof(lm_conn *c, void *buf, size_t len);

int lm_conn_send_frame(lm_conn *c, uint16_t type, const void *body, uint32_t len);
/* Reads and validates a frame header. */
int lm_conn_recv_frame(lm_conn *c, lm_frame *f);
/* Reads a frame body of f->length bytes into buf (at most cap). */
int lm_conn_recv_body(lm_conn *c, const lm_frame *f, void *buf, size_t cap);
/* Receives the one frame that must come next: 'type', with a body of at
 * most cap bytes (its length in *len). An ERROR from the peer becomes its
 * message; any other type is -EPROTO naming both. extra_ms lengthens the
 * wait for this frame only (the peer hashes RAM before it answers). */
int lm_conn_expect(lm_conn *c, uint16_t type, void *body, size_t cap, uint32_t *len,
                   unsigned extra_ms);
/* Best effort: tells the peer why we stop (ERROR frame), never blocks long. */
void lm_conn_send_error(lm_conn *c, int code, const char *msg);
/* Copies len bytes of peer text to out (cap bytes, NUL-terminated) with
 * every control character written as \xNN; returns the length written. */
size_t lm_escape_text(const uint8_t *in, size_t len, char *out, size_t cap);
/* Turns a received ERROR body into a message in c->err. */
int lm_conn_peer_error(lm_conn *c, const uint8_t *body, size_t len);

#endif
