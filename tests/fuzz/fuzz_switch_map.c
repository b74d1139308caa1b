/*
 * POSTCOPY_SWITCH on the destination: for each block of the layout, its
 * bitmap of the pages still to come (lm_switch_block_decode through
 * lm_postcopy_dst_init, which also sizes postcopy's per-page state from
 * the layout the destination holds, not from the message).
 *
 * Input: an options byte (bit 0: verify, which adds per-page hashes), then
 * the body. An accepted map must encode back to the same bytes.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "migration/engine.h"
#include "migration/postcopy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool verify = data[0] & 1;
    data++, size--;
    static lm_ctx *ctx;
    if (!ctx) { /* the layout is only read */
        FUZZ_CHECK((ctx = lm_ctx_new()));
        fuzz_ram_init(&ctx->ram);
    }
    lm_err_reset(&ctx->err);
    static lm_postcopy_dst pc;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int ret = lm_postcopy_dst_init(&pc, ctx, data, size, verify, false, NULL, &lock);
    if (ret == 0) {
        size_t n = lm_postcopy_switch_size(&ctx->ram);
        FUZZ_CHECK(n == size);
        uint8_t *again = malloc(n);
        FUZZ_CHECK(again);
        lm_postcopy_switch_encode(&ctx->ram, pc.needed, again);
        FUZZ_CHECK(!memcmp(again, data, n));
        free(again);
    } else {
        FUZZ_CHECK((ret == -EBADMSG || ret == -EPROTO) && ctx->err.msg[0]);
    }
    lm_postcopy_dst_stop(&pc, true); /* frees whatever init allocated */
    pthread_mutex_destroy(&pc.lock);
    pthread_cond_destroy(&pc.cond);
    return 0;
}
