/*
 * CHANNEL_HELLO, the only frame on a multifd channel or the postcopy
 * preempt connection: the migration's uuid and the channel id
 * (lm_channel_hello_decode), at most the body size the destination reads.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > LM_CHANNEL_HELLO_SIZE) /* refused by lm_conn_recv_body */
        return 0;
    lm_channel_hello ch;
    char why[128] = "";
    int ret = lm_channel_hello_decode(data, size, &ch, why, sizeof(why));
    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG && why[0]);
        return 0;
    }
    uint8_t again[LM_CHANNEL_HELLO_SIZE];
    lm_channel_hello_encode(&ch, again);
    FUZZ_CHECK(size == LM_CHANNEL_HELLO_SIZE && !memcmp(again, data, size));
    return 0;
}
