/*
 * ERROR, which either side may send: an errno and a sentence that the
 * other side prints (lm_conn_peer_error, lm_escape_text). Whatever the
 * bytes, the message must hold no control character (no escape sequence,
 * no forged line) and the code must be a negative errno.
 *
 * Input: one byte that sizes an lm_escape_text output buffer, then the body.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "transport/conn.h"

static void no_control(const char *s)
{
    for (; *s; s++)
        FUZZ_CHECK((unsigned char)*s >= 0x20 && *s != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size - 1 > 4 + LM_ERROR_MAX_TEXT) /* the body's bound */
        return 0;
    size_t cap = data[0];
    data++, size--;

    lm_err err;
    lm_err_init(&err);
    lm_conn c;
    lm_conn_init(&c, -1, 1000, NULL, "source", &err);
    int ret = lm_conn_peer_error(&c, data, size);
    FUZZ_CHECK(ret < 0 && ret >= -4095 && ret == err.code);
    no_control(err.msg);

    /* A buffer of exactly cap bytes, so that ASan sees any write past it. */
    char *out = malloc(cap ? cap : 1);
    FUZZ_CHECK(out);
    size_t n = lm_escape_text(data, size, out, cap);
    if (cap) {
        FUZZ_CHECK(n < cap && strlen(out) == n);
        no_control(out);
    }
    free(out);
    return 0;
}
