/*
 * PAGE_REQUEST on the postcopy return path: the source decodes it and
 * checks block and offset against its RAM before sending that page
 * (lm__src_check_request, called by the request thread), with the body
 * bound the return path reads.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "migration/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4 + LM_ERROR_MAX_TEXT)
        return 0;
    static lm_ram ram;
    static bool ready;
    if (!ready) { /* never written: one layout for every run */
        fuzz_ram_init(&ram);
        ready = true;
    }
    lm_err err;
    lm_err_init(&err);
    lm_block *b = NULL;
    uint64_t off = 0;
    int ret = lm__src_check_request(&ram, data, (uint32_t)size, &b, &off, &err);
    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG && err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(b && b >= ram.blocks && b < ram.blocks + ram.nblocks);
    FUZZ_CHECK(off % ram.page_size == 0 && off + ram.page_size <= b->len);
    FUZZ_CHECK(lm_get_be32(data) == b->id && lm_get_be64(data + 8) == off);
    return 0;
}
