/*
 * HELLO, the first frame of a migration and of every reconnection: page
 * size, flags, channels, compression and the RAM layout (lm_hello_decode),
 * at most the body size the destination reads.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "proto/wire.h"

#define HELLO_CAP (LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE)

static void same(const lm_hello *a, const lm_hello *b)
{
    FUZZ_CHECK(a->page_size == b->page_size && a->flags == b->flags && a->nblocks == b->nblocks &&
               a->nchannels == b->nchannels && a->compress == b->compress &&
               a->ram_total == b->ram_total && !memcmp(a->uuid, b->uuid, 16));
    for (uint32_t i = 0; i < a->nblocks; i++)
        FUZZ_CHECK(a->blocks[i].id == b->blocks[i].id && a->blocks[i].len == b->blocks[i].len &&
                   !strcmp(a->blocks[i].name, b->blocks[i].name));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > HELLO_CAP) /* lm_conn_recv_body refuses it before decoding */
        return 0;
    static lm_hello h, again;
    char why[256] = "";
    int ret = lm_hello_decode(data, size, &h, why, sizeof(why));
    if (ret < 0) {
        FUZZ_CHECK(ret == -EBADMSG && why[0]);
        return 0;
    }
    FUZZ_CHECK(h.page_size >= 4096 && h.page_size <= (1u << 21) &&
               !(h.page_size & (h.page_size - 1)));
    FUZZ_CHECK(h.nblocks >= 1 && h.nblocks <= LM_MAX_BLOCKS && h.nchannels <= LM_MAX_CHANNELS);
    FUZZ_CHECK(h.compress < LM_COMPRESSION__COUNT && !(h.flags & ~LM_HELLO_KNOWN_FLAGS));
    FUZZ_CHECK(size == lm_hello_size(h.nblocks));
    uint64_t sum = 0;
    for (uint32_t i = 0; i < h.nblocks; i++) {
        const lm_wire_block *b = &h.blocks[i];
        FUZZ_CHECK(b->len && b->len % h.page_size == 0 && b->len <= (1ull << 46));
        FUZZ_CHECK(memchr(b->name, '\0', sizeof(b->name)));
        for (uint32_t j = 0; j < i; j++)
            FUZZ_CHECK(h.blocks[j].id != b->id);
        sum += b->len;
    }
    FUZZ_CHECK(sum == h.ram_total);
    /* What was accepted encodes to something accepted as the same. */
    static uint8_t buf[HELLO_CAP];
    lm_hello_encode(&h, buf);
    FUZZ_CHECK(lm_hello_decode(buf, lm_hello_size(h.nblocks), &again, why, sizeof(why)) == 0);
    same(&h, &again);
    return 0;
}
