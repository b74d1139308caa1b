/*
 * RECOVER_MAP, read by a source that reconnected (postcopy, or precopy
 * resume): the pages the destination still lacks, in POSTCOPY_SWITCH's
 * layout, checked against the source's RAM (lm__src_decode_map). An
 * accepted map must encode back to the same bytes, and its count must be
 * the pages it sets.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "migration/postcopy.h"
#include "migration/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lm_ctx *ctx;
    static lm_source s;
    static lm_word *out[LM_MAX_BLOCKS];
    if (!ctx) { /* one layout for every run; only out[] is written */
        FUZZ_CHECK((ctx = lm_ctx_new()));
        fuzz_ram_init(&ctx->ram);
        s.ctx = ctx;
        for (unsigned i = 0; i < ctx->ram.nblocks; i++)
            FUZZ_CHECK((out[i] = lm_bitmap_new(ctx->ram.blocks[i].npages)));
    }
    /* The frame must have exactly the layout's size (resume.c, postcopy_src.c). */
    size_t n = lm_postcopy_switch_size(&ctx->ram);
    if (size != n)
        return 0;
    lm_err_reset(&ctx->err);
    uint64_t count = 0;
    int ret = lm__src_decode_map(&s, data, size, out, &count);
    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG && ctx->err.msg[0]);
        return 0;
    }
    uint64_t bits = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks; i++)
        bits += lm_bitmap_count(out[i], ctx->ram.blocks[i].npages);
    FUZZ_CHECK(bits == count);
    uint8_t again[256];
    FUZZ_CHECK(n <= sizeof(again));
    lm_postcopy_switch_encode(&ctx->ram, out, again);
    FUZZ_CHECK(!memcmp(again, data, n));
    return 0;
}
