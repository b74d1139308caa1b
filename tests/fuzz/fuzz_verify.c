/*
 * VERIFY, the source's digest of its RAM, read by the destination after
 * COMPLETE or POSTCOPY_END (lm_verify_decode), at most its fixed size.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > LM_VERIFY_SIZE) /* lm_conn_recv_body's cap in lm__dest_take_verify */
        return 0;
    lm_verify_msg v;
    char why[128] = "";
    int ret = lm_verify_decode(data, size, &v, why, sizeof(why));
    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG && why[0]);
        return 0;
    }
    uint8_t again[LM_VERIFY_SIZE];
    lm_verify_encode(&v, again);
    FUZZ_CHECK(size == LM_VERIFY_SIZE && !memcmp(again, data, size));
    return 0;
}
