/*
 * What tls.c and tls_explain.c share: the credentials and the session.
 * Internal to the transport layer.
 */
#ifndef LM_TRANSPORT_TLS_INTERNAL_H
#define LM_TRANSPORT_TLS_INTERNAL_H

#include <gnutls/gnutls.h>
#include <limits.h>

#include "transport/tls.h"

struct lm_tls {
    bool server;
    bool psk;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_priority_t priority;
    char *psk_text; /* server: the keys.psk contents, looked up per handshake */
    size_t psk_len;
    char source[PATH_MAX]; /* the directory or file, for messages */
    char hostname[256];    /* client: --tls-hostname, or "" */
};

struct lm_tls_session {
    gnutls_session_t g;
    lm_tls *tls;
    int fd;
    const char *peer;
    char host[256];   /* the name the server's certificate must carry */
    uint8_t first[8]; /* the first bytes the peer sent: a plaintext peer shows here */
    size_t nfirst;
    uint8_t peek[32]; /* read ahead by lm_tls_peek, handed out first */
    size_t npeek;
    char psk_why[400]; /* server: why an identity was refused */
};

/* tls_explain.c: why a handshake failed, in terms of what to fix. */
bool lm__tls_peer_spoke_plaintext(const lm_tls_session *s);
void lm__tls_explain_alert(lm_tls_session *s, char *why, size_t len);
void lm__tls_explain_handshake(lm_tls_session *s, int r, char *why, size_t len);

#endif
