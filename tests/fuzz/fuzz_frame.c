/*
 * Frame headers: the 16 bytes that start every message on the main
 * connection, in both directions (lm_frame_decode through
 * lm_conn_recv_frame), then the body read with the bound the return path
 * uses (lm_conn_recv_body). The input is a sequence of frames.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proto/wire.h"
#include "transport/conn.h"

/* The largest body a reader of control messages takes (an ERROR). */
#define BODY_CAP (4 + LM_ERROR_MAX_TEXT)

static void one_header(const uint8_t *in)
{
    lm_frame f;
    char why[256] = "";
    int ret = lm_frame_decode(in, &f, why, sizeof(why));
    if (ret < 0) {
        FUZZ_CHECK((ret == -EBADMSG || ret == -EPROTO) && why[0]);
        return;
    }
    FUZZ_CHECK(f.type > 0 && f.type < LM_MSG__COUNT && f.length <= LM_FRAME_MAX_LEN);
    FUZZ_CHECK(strcmp(lm_msg_name(f.type), "UNKNOWN") != 0);
    /* Only the canonical encoding is accepted: reserved bits are zero. */
    uint8_t again[LM_FRAME_HDR_SIZE];
    lm_frame_encode(again, f.type, f.length);
    FUZZ_CHECK(memcmp(again, in, LM_FRAME_HDR_SIZE) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= LM_FRAME_HDR_SIZE)
        one_header(data);

    fuzz_conn_opts o = {.eof_closes = true};
    lm_err err;
    lm_conn c;
    fuzz_conn_open(data, size, &o, &c, "peer", &err);
    static uint8_t body[BODY_CAP];
    for (;;) {
        lm_frame f;
        if (lm_conn_recv_frame(&c, &f) < 0 || lm_conn_recv_body(&c, &f, body, sizeof(body)) < 0)
            break;
        FUZZ_CHECK(f.length <= BODY_CAP);
    }
    FUZZ_CHECK(err.code < 0 && err.msg[0]); /* the stream always ends in an error */
    lm_conn_close(&c);
    fuzz_conn_finish();
    return 0;
}
