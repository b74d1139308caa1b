/*
 * A receiving channel's whole step (multifd/recv.c) over an in-memory
 * connection: packet header, block and offsets, then the payload read into
 * guest RAM (raw, or through the channel's decompressor) and handed to the
 * page sink, packet after packet until the stream ends or is refused. The
 * same code reads the PAGES frames of the main connection, each multifd
 * channel and the postcopy preempt connection. SYNC packets pass (the
 * barrier is the pool's, not the channel's).
 *
 * Input: an options byte (bits 0-1: compression method; bit 2: a sink that
 * is not in place, so pages go through the bounce buffer as in postcopy;
 * bits 4-7: reads return at most that many bytes, 0: all there is), then
 * the raw packet stream. Every page accepted must be marked received.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "multifd/recv.h"

/* Like postcopy's sink, pages arrive in the bounce buffer; placed by copy. */
static int bounce_place(lm_page_sink *sink, lm_block *b, const uint64_t *offsets,
                        uint8_t *const data[], uint32_t n)
{
    uint64_t ps = sink->ram->page_size;
    for (uint32_t i = 0; i < n; i++) {
        FUZZ_CHECK(offsets[i] % ps == 0 && offsets[i] < b->len && data[i] != b->host + offsets[i]);
        memcpy(b->host + offsets[i], data[i], ps);
        lm_bit_set(b->received, offsets[i] / ps);
    }
    return 0;
}

static int bounce_place_zero(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint32_t n)
{
    uint64_t ps = sink->ram->page_size;
    for (uint32_t i = 0; i < n; i++) {
        FUZZ_CHECK(offsets[i] % ps == 0 && offsets[i] < b->len);
        memset(b->host + offsets[i], 0, ps);
        lm_bit_set(b->received, offsets[i] / ps);
    }
    return 0;
}

static const lm_page_sink_ops bounce_ops = {
    .name = "bounce",
    .in_place = false,
    .place = bounce_place,
    .place_zero = bounce_place_zero,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    lm_compression method = (lm_compression)(data[0] & 3);
    bool bounce = data[0] & 4;
    fuzz_conn_opts o = {.eof_closes = true, .chunk = data[0] >> 4};
    data++, size--;

    static lm_ram ram;
    fuzz_ram_init(&ram);
    lm_err err;
    lm_conn conn;
    fuzz_conn_open(data, size, &o, &conn, "source", &err);
    lm_inplace_sink inplace;
    lm_inplace_sink_init(&inplace, &ram, false, NULL, &err);
    lm_page_sink other = {.ops = &bounce_ops, .ram = &ram, .err = &err};
    static lm_recv_chan c;
    FUZZ_CHECK(lm_recv_chan_init(&c, 0, &conn, &inplace.sink, method, FUZZ_PAGE, &err) == 0);
    if (bounce)
        FUZZ_CHECK(lm_recv_chan_set_sink(&c, &other) == 0);

    for (;;) {
        uint8_t raw[LM_PACKET_HDR_SIZE];
        lm_packet_hdr ph;
        int ret = lm_conn_read_or_eof(&conn, raw, sizeof(raw));
        if (ret != 0 || lm_recv_chan_decode(&c, raw, &ph) < 0)
            break;
        if (ph.flags & LM_PACKET_FLAG_SYNC)
            continue;
        if (lm_recv_chan_body(&c, &ph) < 0)
            break;
        lm_block *b = lm__ram_find(&ram, ph.block_id);
        FUZZ_CHECK(b);
        for (uint32_t i = 0; i < ph.normal_pages + ph.zero_pages; i++)
            FUZZ_CHECK(lm_bit_test(b->received, c.offsets[i] / FUZZ_PAGE));
    }
    lm_recv_chan_cleanup(&c);
    lm_conn_close(&conn);
    fuzz_conn_finish();
    fuzz_ram_free(&ram);
    return 0;
}
