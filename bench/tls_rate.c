/*
 * The machine's single-core AEAD rate with the library livemig's TLS uses
 * (GnuTLS): 16 KiB records sealed in place, as TLS 1.3 does. The limit the
 * TLS benchmark (bench/tls.py) compares a TLS migration with.
 * Prints one JSON object: {"aes-128-gcm": bytes_per_s, ...}.
 */
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double seal_rate(gnutls_cipher_algorithm_t alg, double seconds)
{
    enum { RECORD = 16384, TAG = 16 };
    static unsigned char key[32], nonce[12], in[RECORD], out[RECORD + TAG];
    gnutls_datum_t k = {key, (unsigned)gnutls_cipher_get_key_size(alg)};
    gnutls_aead_cipher_hd_t h;
    if (gnutls_aead_cipher_init(&h, alg, &k) < 0)
        return 0;
    memset(in, 0x5a, sizeof(in));
    size_t bytes = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < 64; i++) {
            size_t outlen = sizeof(out);
            nonce[0]++;
            if (gnutls_aead_cipher_encrypt(h, nonce, sizeof(nonce), NULL, 0, TAG, in, RECORD, out,
                                           &outlen) < 0) {
                gnutls_aead_cipher_deinit(h);
                return 0;
            }
            bytes += RECORD;
        }
        t = now_s();
    } while (t - t0 < seconds);
    gnutls_aead_cipher_deinit(h);
    return (double)bytes / (t - t0);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    struct {
        const char *name;
        gnutls_cipher_algorithm_t alg;
    } algs[] = {{"aes-128-gcm", GNUTLS_CIPHER_AES_128_GCM},
                {"aes-256-gcm", GNUTLS_CIPHER_AES_256_GCM},
                {"chacha20-poly1305", GNUTLS_CIPHER_CHACHA20_POLY1305}};
    printf("{");
    for (unsigned i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        seal_rate(algs[i].alg, 0.1); /* warm up */
        printf("%s\"%s\": %.0f", i ? ", " : "", algs[i].name, seal_rate(algs[i].alg, seconds));
    }
    printf("}\n");
    return 0;
}
