/* Why a TLS handshake failed, said in terms of what the operator should
 * fix: which side lacked which credential, or that the peer spoke
 * plaintext. */
#include <stdio.h>
#include <string.h>

#include "transport/tls_internal.h"

/* The first bytes of a livemig frame: the peer did not start TLS. */
bool lm__tls_peer_spoke_plaintext(const lm_tls_session *s)
{
    static const uint8_t magic[4] = {'L', 'M', 'I', 'G'};
    return s->nfirst >= 4 && !memcmp(s->first, magic, 4);
}

/* The peer sent an alert: its reason, in terms of what to fix. In TLS 1.3
 * the server checks the client's certificate after the client is done, so
 * the client hears of it at its first read. */
void lm__tls_explain_alert(lm_tls_session *s, char *why, size_t len)
{
    gnutls_alert_description_t a = gnutls_alert_get(s->g);
    const char *name = gnutls_alert_get_name(a);
    const char *hint = "";
    if (a == GNUTLS_A_UNKNOWN_CA || a == GNUTLS_A_BAD_CERTIFICATE ||
        a == GNUTLS_A_CERTIFICATE_UNKNOWN)
        hint = ": it does not trust this side's certificate";
    else if (a == GNUTLS_A_CERTIFICATE_REQUIRED)
        hint = ": it requires a certificate this side did not send";
    else if (a == GNUTLS_A_HANDSHAKE_FAILURE)
        hint = ": do both sides use the same kind of credentials (--tls-creds or --tls-psk)?";
    else if (s->tls->psk)
        hint = ": does its --tls-psk file hold this identity with the same key?";
    snprintf(why, len, "the %s refused the TLS handshake (alert: %s)%s", s->peer,
             name ? name : "unknown", hint);
}

void lm__tls_explain_handshake(lm_tls_session *s, int r, char *why, size_t len)
{
    const char *dir = s->tls->source;
    if (lm__tls_peer_spoke_plaintext(s)) {
        snprintf(why, len,
                 "the %s speaks plaintext: it was started without --tls-creds or --tls-psk, "
                 "and this side requires TLS; give both sides credentials",
                 s->peer);
        return;
    }
    if (s->psk_why[0]) {
        snprintf(why, len, "%s", s->psk_why);
        return;
    }
    switch (r) {
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR: {
        unsigned status = gnutls_session_get_verify_cert_status(s->g);
        gnutls_datum_t text = {0};
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0);
        for (size_t n = text.data ? strlen((char *)text.data) : 0; n && text.data[n - 1] == ' ';)
            text.data[--n] = '\0';
        if (s->tls->server)
            snprintf(why, len,
                     "the source's certificate is not trusted: %s (it must be signed by the CA "
                     "in %s/ca-cert.pem)",
                     text.data ? (char *)text.data : "unknown reason", dir);
        else
            snprintf(why, len,
                     "the destination's certificate is not trusted: %s (checked against the CA "
                     "in %s/ca-cert.pem and the name '%s'; --tls-hostname names another)",
                     text.data ? (char *)text.data : "unknown reason", dir, s->host);
        gnutls_free(text.data);
        return;
    }
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
    case GNUTLS_E_CERTIFICATE_REQUIRED:
        if (!s->tls->server) {
            snprintf(why, len,
                     "the destination requires a client certificate and this source sent none");
            return;
        }
        snprintf(why, len,
                 "the source presented no certificate: it needs client-cert.pem and "
                 "client-key.pem, signed by the CA in %s/ca-cert.pem, in its --tls-creds "
                 "directory",
                 dir);
        return;
    case GNUTLS_E_FATAL_ALERT_RECEIVED:
    case GNUTLS_E_WARNING_ALERT_RECEIVED:
        lm__tls_explain_alert(s, why, len);
        return;
    case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
        if (s->tls->psk && s->tls->server) {
            snprintf(why, len,
                     "the source offered no pre-shared key this side knows: both sides need "
                     "--tls-psk with the same key (or both --tls-creds)");
            return;
        }
        snprintf(why, len,
                 "TLS handshake with the %s failed: %s (do both sides use the same "
                 "kind of credentials, --tls-creds or --tls-psk?)",
                 s->peer, gnutls_strerror(r));
        return;
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PULL_ERROR:
        snprintf(why, len,
                 "the %s closed the connection during the TLS handshake (it refused this "
                 "side's credentials, or does not use TLS)",
                 s->peer);
        return;
    default:
        if (s->nfirst >= 2 && !lm_tls_looks_like_record(s->first, s->nfirst))
            snprintf(why, len, "the %s does not speak TLS (%s)", s->peer, gnutls_strerror(r));
        else if (s->tls->psk)
            snprintf(why, len,
                     "TLS handshake with the %s failed: %s (do both sides hold the same key "
                     "for this identity?)",
                     s->peer, gnutls_strerror(r));
        else
            snprintf(why, len, "TLS handshake with the %s failed: %s", s->peer, gnutls_strerror(r));
    }
}
