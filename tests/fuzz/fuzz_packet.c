/*
 * Page packet headers and their offset arrays, as a receiving channel
 * checks them before any payload lands (multifd/recv.c): lm_packet_decode
 * with the page size and compression bound of the migration, the block
 * looked up in a RAM layout, every offset checked against it.
 *
 * Input: one options byte (page size 4 KiB .. 2 MiB, compression method),
 * the 64-byte header, then the offsets. The layout is FUZZ_BLOCK* scaled
 * to the page size; its memory is never touched here (recv_chan reads
 * payloads into real memory).
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "multifd/compress.h"
#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 + LM_PACKET_HDR_SIZE)
        return 0;
    uint32_t ps = 4096u << ((data[0] & 15) % 10);
    lm_compression method = (lm_compression)((data[0] >> 4) % LM_COMPRESSION__COUNT);
    /* What lm_recv_chan_decode passes: the codec's buffer size, or 0. */
    uint64_t bound = method ? lm_compress_bound(method, LM_PACKET_MAX_PAGES, ps) : 0;
    data++, size--;

    lm_packet_hdr ph;
    char why[256] = "";
    int ret = lm_packet_decode(data, ps, bound, &ph, why, sizeof(why));
    if (ret < 0) {
        FUZZ_CHECK((ret == -EBADMSG || ret == -EPROTO) && why[0]);
        return 0;
    }
    uint64_t n = (uint64_t)ph.normal_pages + ph.zero_pages;
    FUZZ_CHECK(ph.pages_alloc >= 1 && ph.pages_alloc <= LM_PACKET_MAX_PAGES && n <= ph.pages_alloc);
    if (ph.flags & LM_PACKET_FLAG_SYNC) {
        FUZZ_CHECK(ph.flags == LM_PACKET_FLAG_SYNC && n == 0 && ph.payload_size == 0);
        return 0;
    }
    if (ph.flags & LM_PACKET_FLAG_COMPRESSED)
        FUZZ_CHECK(bound && ph.normal_pages && ph.payload_size >= 1 && ph.payload_size <= bound);
    else
        FUZZ_CHECK(ph.payload_size == (uint64_t)ph.normal_pages * ps);
    /* The PAGES frame length a packet needs (dest.c) cannot wrap. */
    uint64_t frame = LM_PACKET_HDR_SIZE + 8 * n + ph.payload_size;
    FUZZ_CHECK(frame >= ph.payload_size &&
               frame <= LM_PACKET_HDR_SIZE + 8 * 128 + (bound > 128ull * ps ? bound : 128ull * ps));

    static lm_ram ram;
    lm_err err;
    lm_err_init(&err);
    lm__ram_init(&ram, ps);
    void *never_touched = (void *)(uintptr_t)(1ull << 40); /* aligned to any page size */
    FUZZ_CHECK(lm__ram_add(&ram, FUZZ_BLOCK0_ID, "a", never_touched,
                           (uint64_t)FUZZ_BLOCK0_PAGES * ps, 0, &err) == 0);
    FUZZ_CHECK(lm__ram_add(&ram, FUZZ_BLOCK1_ID, "b", never_touched,
                           (uint64_t)FUZZ_BLOCK1_PAGES * ps, 0, &err) == 0);
    lm_block *b = lm__ram_find(&ram, ph.block_id);
    if (!b)
        return 0;
    FUZZ_CHECK(b->id == ph.block_id);
    const uint8_t *off = data + LM_PACKET_HDR_SIZE;
    size_t have = (size - LM_PACKET_HDR_SIZE) / 8;
    for (uint64_t i = 0; i < n && i < have; i++) {
        uint64_t o = lm_get_be64(off + 8 * i);
        if (lm_packet_check_offset(o, b->len, ps, why, sizeof(why)) < 0)
            break;
        FUZZ_CHECK(o % ps == 0 && o + ps <= b->len);
    }
    return 0;
}
