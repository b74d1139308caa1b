/*
 * The TLS layer's own parsing: QEMU's keys.psk format ("identity:hexkey"
 * lines) and the recognition of a TLS record where a frame was expected
 * (and the reverse), which the refusal messages rely on.
 */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "transport/tls.h"

static int lookup(const char *text, const char *identity, uint8_t *key, char *why)
{
    return lm_tls_psk_lookup(text, strlen(text), identity, key, 64, why, 200);
}

int main(void)
{
    uint8_t key[64];
    char why[200];

    /* Found, in any line, with CRLF endings and blank lines around. */
    const char *file = "\nqemu:00112233\r\nother:a0B1c2D3e4\n\n";
    CHECK_EQ_U64(lookup(file, "qemu", key, why), 4);
    CHECK(key[0] == 0x00 && key[3] == 0x33);
    CHECK_EQ_U64(lookup(file, "other", key, why), 5);
    CHECK(key[0] == 0xa0 && key[1] == 0xb1 && key[4] == 0xe4);
    /* Validation of the whole file (the server's case): the entry count. */
    CHECK_EQ_U64(lookup(file, NULL, key, why), 2);

    /* An identity that is a prefix of another is not that one. */
    CHECK(lookup("qemu2:0011\n", "qemu", key, why) == -ENOENT);
    CHECK(strstr(why, "no key for identity 'qemu'") != NULL);

    /* Malformed lines are refused with their number. */
    CHECK(lookup("qemu:0011\nbroken\n", NULL, key, why) == -EINVAL);
    CHECK(strstr(why, "line 2") != NULL);
    CHECK(lookup("qemu:001\n", "qemu", key, why) == -EINVAL);  /* odd digits */
    CHECK(lookup("qemu:zz11\n", "qemu", key, why) == -EINVAL); /* not hex */
    CHECK(lookup(":0011\n", NULL, key, why) == -EINVAL);       /* no identity */
    CHECK(lookup("qemu:\n", NULL, key, why) == -EINVAL);       /* no key */
    CHECK(lookup("", NULL, key, why) == -EINVAL);              /* nothing at all */
    CHECK(strstr(why, "no \"identity:hexkey\" line") != NULL);

    /* A key longer than the caller's buffer is refused, not cut. */
    char longkey[600] = "qemu:";
    for (int i = 0; i < 2 * 100; i++)
        strcat(longkey, "ab");
    CHECK(lookup(longkey, "qemu", key, why) == -EINVAL);

    /* Records and frames. */
    const uint8_t client_hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
    const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02};
    const uint8_t frame[] = {'L', 'M', 'I', 'G', 0, 2};
    CHECK(lm_tls_looks_like_record(client_hello, sizeof(client_hello)));
    CHECK(lm_tls_looks_like_record(alert, sizeof(alert)));
    CHECK(!lm_tls_looks_like_record(frame, sizeof(frame)));
    CHECK(!lm_tls_looks_like_record(client_hello, 1));

    /* The kTLS probe always explains itself. */
    char ktls[200] = "";
    (void)lm_tls_ktls_available(ktls, sizeof(ktls));
    CHECK(strlen(ktls) > 20);
    TEST_DONE();
}
