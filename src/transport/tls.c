#include "transport/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/sys.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define PSK_FILE_MAX         (64 * 1024) /* a keys.psk larger than this is not one */
#define PSK_KEY_MAX          256
#define DEFAULT_PSK_IDENTITY "qemu" /* QEMU's default username */

/* TLS 1.3 only: no downgrade to a version with known weaknesses. AES-GCM
 * only, 128-bit first: with AES-NI it seals 4.7 GB/s a core here, where
 * this GnuTLS's ChaCha20 manages 0.25 GB/s (bench/tls_rate.c). */
#define PRIORITY_COMMON "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM"
#define PRIORITY_X509   PRIORITY_COMMON
#define PRIORITY_PSK    PRIORITY_COMMON ":+ECDHE-PSK:+DHE-PSK:+PSK"

#include "transport/tls_internal.h"

bool lm_tls_wanted(const lm_tls_config *cfg)
{
    return cfg && ((cfg->creds_dir && *cfg->creds_dir) || (cfg->psk_file && *cfg->psk_file));
}

const char *lm_tls_mode(const lm_tls *t)
{
    return t->psk ? "psk" : "x509";
}

bool lm_tls_is_server(const lm_tls *t)
{
    return t->server;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int lm_tls_psk_lookup(const char *text, size_t len, const char *identity, uint8_t *key, size_t cap,
                      char *why, size_t whylen)
{
    size_t pos = 0;
    unsigned line = 0, entries = 0;
    while (pos < len) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n && start[n - 1] == '\r')
            n--;
        if (n == 0)
            continue;
        const char *colon = memchr(start, ':', n);
        size_t idlen = colon ? (size_t)(colon - start) : 0;
        size_t hexlen = colon ? n - idlen - 1 : 0;
        if (!colon || idlen == 0 || hexlen == 0 || hexlen % 2 || hexlen / 2 > PSK_KEY_MAX) {
            snprintf(why, whylen,
                     "line %u is not \"identity:hexkey\" (a non-empty identity, a colon, an "
                     "even number of hex digits, at most %d bytes of key)",
                     line, PSK_KEY_MAX);
            return -EINVAL;
        }
        uint8_t decoded[PSK_KEY_MAX];
        for (size_t i = 0; i < hexlen / 2; i++) {
            int hi = hexval((unsigned char)colon[1 + 2 * i]);
            int lo = hexval((unsigned char)colon[2 + 2 * i]);
            if (hi < 0 || lo < 0) {
                snprintf(why, whylen, "line %u: the key is not hexadecimal", line);
                return -EINVAL;
            }
            decoded[i] = (uint8_t)(hi << 4 | lo);
        }
        entries++;
        if (identity && strlen(identity) == idlen && !memcmp(start, identity, idlen)) {
            if (hexlen / 2 > cap) {
                snprintf(why, whylen, "line %u: key too long", line);
                return -EINVAL;
            }
            memcpy(key, decoded, hexlen / 2);
            return (int)(hexlen / 2);
        }
    }
    if (!identity && entries)
        return (int)entries;
    if (!identity)
        snprintf(why, whylen, "it holds no \"identity:hexkey\" line");
    else
        snprintf(why, whylen, "it has no key for identity '%s'", identity);
    return identity ? -ENOENT : -EINVAL;
}

static int read_small_file(const char *path, char **out, size_t *len, lm_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lm_err_set(err, -errno, "TLS: cannot open %s: %s", path, strerror(errno));
    char *buf = malloc(PSK_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, PSK_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!buf)
        return lm_err_set(err, -ENOMEM, "out of memory");
    if (n > PSK_FILE_MAX) {
        free(buf);
        return lm_err_set(err, -EFBIG, "TLS: %s is larger than %d bytes: not a keys.psk file", path,
                          PSK_FILE_MAX);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Server side: the key for the identity the client names, from the file
 * read at start. GnuTLS frees the key. */
static int psk_server_lookup(gnutls_session_t g, const char *username, gnutls_datum_t *key)
{
    lm_tls_session *s = gnutls_session_get_ptr(g);
    uint8_t raw[PSK_KEY_MAX];
    char why[160];
    int n = lm_tls_psk_lookup(s->tls->psk_text, s->tls->psk_len, username, raw, sizeof(raw), why,
                              sizeof(why));
    if (n <= 0) {
        char shown[64];
        size_t i = 0;
        for (; username[i] && i < sizeof(shown) - 1; i++)
            shown[i] = username[i] >= 0x20 && username[i] < 0x7f ? username[i] : '?';
        shown[i] = '\0';
        snprintf(s->psk_why, sizeof(s->psk_why), "%.200s has no key for the %s's identity '%s'",
                 s->tls->source, s->peer, shown);
        return -1;
    }
    key->data = gnutls_malloc((size_t)n);
    if (!key->data)
        return -1;
    memcpy(key->data, raw, (size_t)n);
    key->size = (unsigned)n;
    return 0;
}

static int gnutls_failed(lm_err *err, int code, const char *what, const char *path)
{
    return lm_err_set(err, -EINVAL, "TLS: %s %s: %s", what, path, gnutls_strerror(code));
}

static int load_x509(lm_tls *t, const char *dir, lm_err *err)
{
    const char *role = t->server ? "server" : "client";
    char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
    snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, role);
    snprintf(key, sizeof(key), "%s/%s-key.pem", dir, role);
    const char *files[] = {ca, cert, key};
    for (unsigned i = 0; i < 3; i++)
        if (access(files[i], R_OK) < 0)
            return lm_err_set(err, -errno,
                              "TLS: cannot read %s (%s): the %s needs ca-cert.pem, %s-cert.pem "
                              "and %s-key.pem in its --tls-creds directory",
                              files[i], strerror(errno), t->server ? "destination" : "source", role,
                              role);
    int r = gnutls_certificate_allocate_credentials(&t->x509);
    if (r < 0)
        return gnutls_failed(err, r, "cannot allocate credentials for", dir);
    r = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM);
    if (r < 0)
        return gnutls_failed(err, r, "cannot load the CA certificate", ca);
    if (r == 0)
        return lm_err_set(err, -EINVAL, "TLS: %s holds no CA certificate", ca);
    r = gnutls_certificate_set_x509_key_file(t->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (r < 0)
        return lm_err_set(err, -EINVAL, "TLS: cannot load %s with %s: %s", cert, key,
                          gnutls_strerror(r));
    return 0;
}

static int load_psk(lm_tls *t, const lm_tls_config *cfg, lm_err *err)
{
    int ret = read_small_file(cfg->psk_file, &t->psk_text, &t->psk_len, err);
    if (ret < 0)
        return ret;
    char why[200];
    uint8_t key[PSK_KEY_MAX];
    const char *identity =
        cfg->psk_identity && *cfg->psk_identity ? cfg->psk_identity : DEFAULT_PSK_IDENTITY;
    int n = lm_tls_psk_lookup(t->psk_text, t->psk_len, t->server ? NULL : identity, key,
                              sizeof(key), why, sizeof(why));
    if (n < 0)
        return lm_err_set(err, n == -ENOENT ? -ENOENT : -EINVAL, "TLS: %s: %s%s", cfg->psk_file,
                          why, n == -ENOENT ? " (name it with --tls-psk-identity)" : "");
    int r;
    if (t->server) {
        if ((r = gnutls_psk_allocate_server_credentials(&t->psk_server)) < 0)
            return gnutls_failed(err, r, "cannot allocate credentials for", cfg->psk_file);
        gnutls_psk_set_server_credentials_function(t->psk_server, psk_server_lookup);
        return 0;
    }
    if ((r = gnutls_psk_allocate_client_credentials(&t->psk_client)) < 0)
        return gnutls_failed(err, r, "cannot allocate credentials for", cfg->psk_file);
    gnutls_datum_t datum = {.data = key, .size = (unsigned)n};
    r = gnutls_psk_set_client_credentials(t->psk_client, identity, &datum, GNUTLS_PSK_KEY_RAW);
    explicit_bzero(key, sizeof(key));
    if (r < 0)
        return gnutls_failed(err, r, "cannot use the key in", cfg->psk_file);
    return 0;
}

int lm_tls_new(lm_tls **out, const lm_tls_config *cfg, bool server, lm_err *err)
{
    *out = NULL;
    bool x509 = cfg->creds_dir && *cfg->creds_dir, psk = cfg->psk_file && *cfg->psk_file;
    if (x509 && psk)
        return lm_err_set(err, -EINVAL,
                          "TLS: give either --tls-creds (X.509) or --tls-psk (pre-shared "
                          "keys), not both");
    if (!x509 && !psk)
        return lm_err_set(err, -EINVAL, "TLS: no credentials given");
    lm_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return lm_err_set(err, -ENOMEM, "out of memory");
    t->server = server;
    t->psk = psk;
    snprintf(t->source, sizeof(t->source), "%s", psk ? cfg->psk_file : cfg->creds_dir);
    if (cfg->hostname)
        snprintf(t->hostname, sizeof(t->hostname), "%s", cfg->hostname);
    int ret = psk ? load_psk(t, cfg, err) : load_x509(t, cfg->creds_dir, err);
    if (ret == 0) {
        int r = gnutls_priority_init(&t->priority, psk ? PRIORITY_PSK : PRIORITY_X509, NULL);
        if (r < 0)
            ret = lm_err_set(err, -EINVAL, "TLS: this GnuTLS refuses TLS 1.3 (%s)",
                             gnutls_strerror(r));
    }
    if (ret < 0) {
        lm_tls_free(t);
        return ret;
    }
    *out = t;
    return 0;
}

void lm_tls_free(lm_tls *t)
{
    if (!t)
        return;
    if (t->x509)
        gnutls_certificate_free_credentials(t->x509);
    if (t->psk_client)
        gnutls_psk_free_client_credentials(t->psk_client);
    if (t->psk_server)
        gnutls_psk_free_server_credentials(t->psk_server);
    if (t->priority)
        gnutls_priority_deinit(t->priority);
    if (t->psk_text) {
        explicit_bzero(t->psk_text, t->psk_len);
        free(t->psk_text);
    }
    free(t);
}

bool lm_tls_ktls_available(char *why, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, len, "cannot create a socket to probe for kernel TLS: %s", strerror(errno));
        return false;
    }
    /* An unconnected socket: a kernel with the "tls" upper layer refuses
     * with ENOTCONN, one without it with ENOENT. */
    int r = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"));
    int e = errno;
    close(fd);
    if (r < 0 && e == ENOENT) {
        snprintf(why, len,
                 "the kernel has no TLS offload (CONFIG_TLS unset: setsockopt TCP_ULP \"tls\" "
                 "fails with ENOENT); records are encrypted in user space by GnuTLS");
        return false;
    }
    snprintf(why, len,
             "the kernel offers TLS offload, but livemig does not hand sessions to it yet; "
             "records are encrypted in user space by GnuTLS");
    return false;
}

/* The transport callbacks: the connection's own non-blocking socket. */
static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    lm_tls_session *s = p;
    ssize_t n = lm_sys_recv(s->fd, buf, len, 0);
    if (n < 0) {
        gnutls_transport_set_errno(s->g, errno);
        return -1;
    }
    if (s->nfirst < sizeof(s->first)) {
        size_t take = sizeof(s->first) - s->nfirst;
        take = take < (size_t)n ? take : (size_t)n;
        memcpy(s->first + s->nfirst, buf, take);
        s->nfirst += take;
    }
    return n;
}

static ssize_t vec_push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
    lm_tls_session *s = p;
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n = lm_sys_sendmsg(s->fd, &mh, MSG_NOSIGNAL);
    if (n < 0)
        gnutls_transport_set_errno(s->g, errno);
    return n;
}

static int pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
    lm_tls_session *s = p;
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    /* The waits are the connection's (bounded, cancellable): never block here. */
    (void)ms;
    return poll(&pfd, 1, 0);
}

static bool is_ip_address(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

int lm_tls_session_new(lm_tls_session **out, lm_tls *t, int fd, const char *host, lm_err *err)
{
    *out = NULL;
    lm_tls_session *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "out of memory");
    s->tls = t;
    s->fd = fd;
    s->peer = t->server ? "source" : "destination";
    snprintf(s->host, sizeof(s->host), "%s", t->hostname[0] ? t->hostname : host ? host : "");
    if (!t->server && !t->psk && !s->host[0]) {
        free(s);
        return lm_err_set(err, -EINVAL,
                          "TLS: no name to check the destination's certificate against: give "
                          "--tls-hostname NAME");
    }
    unsigned flags = (t->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
                     GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS;
    int r = gnutls_init(&s->g, flags);
    if (r < 0) {
        free(s);
        return lm_err_set(err, -ENOMEM, "TLS: cannot start a session: %s", gnutls_strerror(r));
    }
    if ((r = gnutls_priority_set(s->g, t->priority)) < 0)
        goto fail;
    if (t->psk)
        r = gnutls_credentials_set(s->g, GNUTLS_CRD_PSK,
                                   t->server ? (void *)t->psk_server : (void *)t->psk_client);
    else
        r = gnutls_credentials_set(s->g, GNUTLS_CRD_CERTIFICATE, t->x509);
    if (r < 0)
        goto fail;
    if (!t->psk && t->server) {
        gnutls_certificate_server_set_request(s->g, GNUTLS_CERT_REQUIRE);
        /* No list of acceptable CAs: a client whose certificate comes from
         * another CA still sends it, and the refusal can say why. */
        gnutls_certificate_send_x509_rdn_sequence(s->g, 1);
        gnutls_session_set_verify_cert(s->g, NULL, 0);
    } else if (!t->psk) {
        gnutls_session_set_verify_cert(s->g, s->host, 0);
        if (!is_ip_address(s->host) &&
            (r = gnutls_server_name_set(s->g, GNUTLS_NAME_DNS, s->host, strlen(s->host))) < 0)
            goto fail;
    }
    gnutls_session_set_ptr(s->g, s);
    gnutls_transport_set_ptr(s->g, s);
    gnutls_transport_set_pull_function(s->g, pull);
    gnutls_transport_set_vec_push_function(s->g, vec_push);
    gnutls_transport_set_pull_timeout_function(s->g, pull_timeout);
    gnutls_handshake_set_timeout(s->g, 0); /* the connection bounds the wait */
    *out = s;
    return 0;
fail:
    gnutls_deinit(s->g);
    free(s);
    return lm_err_set(err, -EINVAL, "TLS: cannot set up a session: %s", gnutls_strerror(r));
}

void lm_tls_session_free(lm_tls_session *s)
{
    if (!s)
        return;
    gnutls_deinit(s->g);
    free(s);
}

bool lm_tls_looks_like_record(const uint8_t *b, size_t n)
{
    /* content type handshake/alert/change-cipher/data, then a 3.x version */
    return n >= 2 && b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 0x03;
}

int lm_tls_handshake_step(lm_tls_session *s, bool *want_write, char *why, size_t len)
{
    int r = gnutls_handshake(s->g);
    if (r == 0)
        return 0;
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        *want_write = gnutls_record_get_direction(s->g) == 1;
        return -EAGAIN;
    }
    if (!gnutls_error_is_fatal(r)) {
        *want_write = false;
        return -EINTR; /* a warning: go on */
    }
    lm__tls_explain_handshake(s, r, why, len);
    /* Tell a TLS peer why, in its own terms (best effort, never blocks). */
    if (!lm__tls_peer_spoke_plaintext(s) && r != GNUTLS_E_PREMATURE_TERMINATION &&
        r != GNUTLS_E_PULL_ERROR && r != GNUTLS_E_PUSH_ERROR && r != GNUTLS_E_FATAL_ALERT_RECEIVED)
        (void)gnutls_alert_send_appropriate(s->g, r);
    return r == GNUTLS_E_PREMATURE_TERMINATION ? -ECONNRESET : -EACCES;
}

static ssize_t record_error(lm_tls_session *s, ssize_t r, char *why, size_t whylen)
{
    if (r == GNUTLS_E_AGAIN)
        return -EAGAIN;
    if (r == GNUTLS_E_INTERRUPTED)
        return -EINTR;
    if (r == GNUTLS_E_PREMATURE_TERMINATION)
        return 0; /* like a plain close: the caller decides if it came too early */
    if (r == GNUTLS_E_DECRYPTION_FAILED) {
        snprintf(why, whylen,
                 "a TLS record from the %s failed authentication: the stream was altered "
                 "or corrupted in transit",
                 s->peer);
        return -EBADMSG;
    }
    if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        lm__tls_explain_alert(s, why, whylen);
        return -EACCES;
    }
    if (r == GNUTLS_E_PUSH_ERROR)
        return -EPIPE;
    if (r == GNUTLS_E_PULL_ERROR)
        return -ECONNRESET;
    snprintf(why, whylen, "TLS error on the connection to the %s: %s", s->peer,
             gnutls_strerror((int)r));
    return -EPROTO;
}

ssize_t lm_tls_recv(lm_tls_session *s, void *buf, size_t len, char *why, size_t whylen)
{
    if (s->npeek) {
        size_t n = s->npeek < len ? s->npeek : len;
        memcpy(buf, s->peek, n);
        memmove(s->peek, s->peek + n, s->npeek - n);
        s->npeek -= n;
        return (ssize_t)n;
    }
    ssize_t r = gnutls_record_recv(s->g, buf, len);
    return r >= 0 ? r : record_error(s, r, why, whylen);
}

ssize_t lm_tls_peek(lm_tls_session *s, void *buf, size_t len, char *why, size_t whylen)
{
    if (len > sizeof(s->peek))
        len = sizeof(s->peek);
    while (s->npeek < len) {
        ssize_t r = gnutls_record_recv(s->g, s->peek + s->npeek, len - s->npeek);
        if (r > 0) {
            s->npeek += (size_t)r;
            continue;
        }
        r = r == 0 ? 0 : record_error(s, r, why, whylen);
        if (s->npeek)
            break; /* what is there is news; the rest comes later */
        return r;
    }
    size_t n = s->npeek < len ? s->npeek : len;
    memcpy(buf, s->peek, n);
    return (ssize_t)n;
}

int lm_tls_queue(lm_tls_session *s, const struct iovec *iov, int iovcnt, char *why, size_t whylen)
{
    gnutls_record_cork(s->g);
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_len)
            continue;
        ssize_t r = gnutls_record_send(s->g, iov[i].iov_base, iov[i].iov_len);
        if (r < 0) {
            snprintf(why, whylen, "TLS: cannot queue data for the %s: %s", s->peer,
                     gnutls_strerror((int)r));
            return -ENOMEM;
        }
    }
    return 0;
}

ssize_t lm_tls_flush(lm_tls_session *s, char *why, size_t whylen)
{
    ssize_t r = gnutls_record_uncork(s->g, 0);
    return r >= 0 ? r : record_error(s, r, why, whylen);
}

const char *lm_tls_session_cipher(const lm_tls_session *s, char *buf, size_t len)
{
    const char *version = gnutls_protocol_get_name(gnutls_protocol_get_version(s->g));
    const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(s->g));
    snprintf(buf, len, "%s/%s", version ? version : "?", cipher ? cipher : "?");
    return buf;
}
