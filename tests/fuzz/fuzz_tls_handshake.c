/*
 * The TLS wrapper (transport/tls.c) on what a peer sends: the handshake as
 * the destination (server) or the source (client) runs it, with its
 * explanations of failures (a plaintext peer, alerts, a missing identity),
 * then, should a handshake ever complete, the records after it; and the
 * keys.psk parser on arbitrary text. Both sides use PSK credentials from a
 * key file this target writes once (X.509 parsing is GnuTLS's own).
 *
 * Input: a byte (bits 0-1: 0 server, 1 client, 2-3 the keys.psk parser;
 * bits 4-7: reads return at most that many bytes, 0: all there is), then
 * the peer's bytes (or the file's text).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "transport/conn.h"
#include "transport/tls.h"

static char path[64];

static void remove_keys(void)
{
    unlink(path);
}

static lm_tls *make_tls(bool server)
{
    if (!path[0]) {
        snprintf(path, sizeof(path), "/tmp/lm-fuzz-psk.XXXXXX");
        int fd = mkstemp(path);
        FUZZ_CHECK(fd >= 0);
        static const char keys[] = "qemu:00112233445566778899aabbccddeeff\n"
                                   "other:0f1e2d3c4b5a69788796a5b4c3d2e1f0\n";
        FUZZ_CHECK(write(fd, keys, sizeof(keys) - 1) == (ssize_t)(sizeof(keys) - 1));
        close(fd);
        atexit(remove_keys);
    }
    lm_tls_config cfg = {.psk_file = path, .psk_identity = "qemu"};
    lm_err err;
    lm_err_init(&err);
    lm_tls *t = NULL;
    FUZZ_CHECK(lm_tls_new(&t, &cfg, server, &err) == 0);
    return t;
}

static void parse_keys(const uint8_t *data, size_t size)
{
    uint8_t key[256];
    char why[200] = "";
    int n = lm_tls_psk_lookup((const char *)data, size, NULL, key, sizeof(key), why, sizeof(why));
    FUZZ_CHECK(n != 0 && (n > 0 || why[0]));
    why[0] = '\0';
    n = lm_tls_psk_lookup((const char *)data, size, "qemu", key, sizeof(key), why, sizeof(why));
    FUZZ_CHECK(n <= (int)sizeof(key) && (n > 0 || why[0]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0] & 3;
    size_t chunk = data[0] >> 4;
    data++, size--;
    if (mode >= 2) {
        parse_keys(data, size);
        return 0;
    }
    static lm_tls *tls[2];
    if (!tls[mode])
        tls[mode] = make_tls(mode == 0);

    fuzz_conn_opts o = {.eof_closes = true, .chunk = chunk};
    lm_err err;
    lm_conn c;
    fuzz_conn_open(data, size, &o, &c, mode == 0 ? "source" : "destination", &err);
    int ret = lm_conn_start_tls(&c, tls[mode], "127.0.0.1");
    if (ret == 0) {
        /* Records after the handshake, read as frames until the stream ends. */
        uint8_t body[64];
        lm_frame f;
        while (lm_conn_recv_frame(&c, &f) == 0 &&
               lm_conn_recv_body(&c, &f, body, sizeof(body)) == 0)
            ;
    } else {
        /* Every refusal says why, in printable text. */
        FUZZ_CHECK(err.msg[0] != '\0');
        for (const char *p = err.msg; *p; p++)
            FUZZ_CHECK((unsigned char)*p >= 0x20);
    }
    lm_conn_close(&c);
    fuzz_conn_finish();
    return 0;
}
