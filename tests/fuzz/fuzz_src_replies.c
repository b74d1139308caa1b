/*
 * The source reading the destination's replies on the main connection, in
 * the order a migration meets them: HELLO_ACK and PONG (lm_conn_expect,
 * which also turns an ERROR into its message), the SWITCHOVER_READY
 * verdict (lm__src_await_ready), RESUMED (as lm__src_commit reads it),
 * then the postcopy return path (PAGE_REQUEST, POSTCOPY_DONE or ERROR, as
 * the request thread dispatches them) until the stream ends.
 *
 * Input: a byte that says at which of those steps to start, then the
 * stream.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "migration/source.h"

static int return_path(lm_source *s)
{
    uint8_t body[4 + LM_ERROR_MAX_TEXT];
    for (;;) {
        lm_frame f;
        char why[128];
        int ret = lm_conn_recv_frame(&s->conn, &f);
        if (ret == 0)
            ret = lm_conn_recv_body(&s->conn, &f, body, sizeof(body));
        if (ret < 0)
            return ret;
        if (f.type == LM_MSG_PAGE_REQUEST) {
            lm_block *b;
            uint64_t off;
            if ((ret = lm__src_check_request(&s->ctx->ram, body, f.length, &b, &off,
                                             &s->ctx->err)) < 0)
                return ret;
            FUZZ_CHECK(off < b->len);
        } else if (f.type == LM_MSG_POSTCOPY_DONE) {
            lm_resumed r;
            return lm_resumed_decode(body, f.length, &r, why, sizeof(why));
        } else if (f.type == LM_MSG_ERROR) {
            return lm_conn_peer_error(&s->conn, body, f.length);
        } else {
            return -EPROTO;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned step = data[0] % 5;
    data++, size--;
    static lm_ctx *ctx;
    static lm_source s;
    if (!ctx) { /* the layout is only read */
        FUZZ_CHECK((ctx = lm_ctx_new()));
        fuzz_ram_init(&ctx->ram);
    }
    lm_err_reset(&ctx->err);
    fuzz_conn_opts o = {.eof_closes = true};
    fuzz_conn_reset(&o);
    int fd = fuzz_conn_add(data, size);
    FUZZ_CHECK(fd >= 0);
    fuzz_conn_take(fd);
    memset(&s, 0, sizeof(s));
    s.ctx = ctx;
    lm_conn_init(&s.conn, fd, 1000, NULL, "destination", &ctx->err);

    int ret = 0;
    uint8_t body[LM_RESUMED_SIZE];
    uint32_t len;
    char why[128];
    lm_resumed r;
    switch (step) {
    case 0:
        if ((ret = lm_conn_expect(&s.conn, LM_MSG_HELLO_ACK, NULL, 0, NULL, 0)) < 0)
            break;
        /* fall through */
    case 1:
        if ((ret = lm_conn_expect(&s.conn, LM_MSG_PONG, NULL, 0, NULL, 0)) < 0)
            break;
        /* fall through */
    case 2:
        if ((ret = lm__src_await_ready(&s, &r, 0)) < 0)
            break;
        FUZZ_CHECK(r.status <= 0 && r.verified <= 2);
        /* fall through */
    case 3:
        if ((ret = lm_conn_expect(&s.conn, LM_MSG_RESUMED, body, sizeof(body), &len, 0)) < 0 ||
            (ret = lm_resumed_decode(body, len, &r, why, sizeof(why))) < 0)
            break;
        /* fall through */
    default:
        ret = return_path(&s);
    }
    FUZZ_CHECK(ret <= 0);
    lm_conn_close(&s.conn);
    fuzz_conn_finish();
    return 0;
}
