/*
 * TLS 1.3 for every connection of a migration (GnuTLS; docs/SECURITY.md
 * says why). One lm_tls holds a side's credentials, loaded and checked once
 * before anything connects; each connection then runs its own handshake
 * (lm_conn_start_tls in conn.h) and keeps a session. The destination is the
 * TLS server, the source the client; both verify the other (mutual X.509),
 * or both prove the same pre-shared key.
 *
 * Credentials follow QEMU's conventions so operators reuse their files:
 * a directory with ca-cert.pem, server-cert.pem, server-key.pem (server)
 * or client-cert.pem, client-key.pem (client); or a keys.psk file of
 * "identity:hexkey" lines.
 */
#ifndef LM_TRANSPORT_TLS_H
#define LM_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "util/error.h"

typedef struct lm_tls lm_tls;
typedef struct lm_tls_session lm_tls_session;

typedef struct lm_tls_config {
    const char *creds_dir;    /* X.509: QEMU's file names in this directory */
    const char *psk_file;     /* or PSK: keys.psk */
    const char *psk_identity; /* client: the identity to use ("qemu" when NULL) */
    const char *hostname;     /* client: the name the server's certificate must carry */
} lm_tls_config;

/* True when cfg asks for TLS at all. */
bool lm_tls_wanted(const lm_tls_config *cfg);
/* Loads and checks the credentials; *out stays NULL on error. */
int lm_tls_new(lm_tls **out, const lm_tls_config *cfg, bool server, lm_err *err);
void lm_tls_free(lm_tls *t);
/* "x509" or "psk". */
const char *lm_tls_mode(const lm_tls *t);
bool lm_tls_is_server(const lm_tls *t);

/* Whether the kernel could take over the record layer (kTLS). livemig does
 * not hand sessions to it yet; why goes to the report either way. */
bool lm_tls_ktls_available(char *why, size_t len);

/* A session on connected, non-blocking fd. host: the name to verify the
 * server's certificate against (client, X.509), unless cfg named one. */
int lm_tls_session_new(lm_tls_session **out, lm_tls *t, int fd, const char *host, lm_err *err);
void lm_tls_session_free(lm_tls_session *s);

/* The steps below return a count of bytes (>= 0; 0 from a read is the
 * end of the stream), -EAGAIN with *want_write telling which readiness to
 * wait for, -EINTR, or another -errno with a sentence in why. */
int lm_tls_handshake_step(lm_tls_session *s, bool *want_write, char *why, size_t len);
ssize_t lm_tls_recv(lm_tls_session *s, void *buf, size_t len, char *why, size_t whylen);
/* Buffers iov (never blocks); lm_tls_flush then sends it as full records. */
int lm_tls_queue(lm_tls_session *s, const struct iovec *iov, int iovcnt, char *why, size_t whylen);
ssize_t lm_tls_flush(lm_tls_session *s, char *why, size_t whylen);
/* Non-blocking look at the next len bytes without consuming them: the
 * count available (up to len), 0 at the end of the stream, or -EAGAIN. */
ssize_t lm_tls_peek(lm_tls_session *s, void *buf, size_t len, char *why, size_t whylen);
/* "TLS1.3/AES-256-GCM" once the handshake is done. */
const char *lm_tls_session_cipher(const lm_tls_session *s, char *buf, size_t len);

/* Recognizes the first bytes of a stream: a TLS record where a livemig
 * frame was expected, or the reverse. */
bool lm_tls_looks_like_record(const uint8_t *b, size_t n);

/* Parses a keys.psk file's text: finds identity's key (hex) and decodes it
 * into key (cap bytes). Returns the key's length, -ENOENT when identity is
 * not there, or -EINVAL with the line that is wrong in why. */
int lm_tls_psk_lookup(const char *text, size_t len, const char *identity, uint8_t *key, size_t cap,
                      char *why, size_t whylen);

#endif
