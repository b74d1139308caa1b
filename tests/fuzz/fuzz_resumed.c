/*
 * The destination's verdicts, read by the source: SWITCHOVER_READY,
 * RESUMED and POSTCOPY_DONE share one body (lm_resumed_decode); the
 * return path reads it with the ERROR text's bound.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4 + LM_ERROR_MAX_TEXT)
        return 0;
    lm_resumed r;
    char why[128] = "";
    int ret = lm_resumed_decode(data, size, &r, why, sizeof(why));
    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG && why[0]);
        return 0;
    }
    /* A status the source passes to strerror() and returns as -errno. */
    FUZZ_CHECK(r.status <= 0 && r.status >= -4095 && r.verified <= 2);
    uint8_t again[LM_RESUMED_SIZE];
    lm_resumed_encode(&r, again);
    FUZZ_CHECK(size == LM_RESUMED_SIZE && !memcmp(again, data, size));
    return 0;
}
