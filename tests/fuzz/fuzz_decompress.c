/*
 * Compressed payloads, one target per method (FUZZ_METHOD: zlib, zstd,
 * lz4): a channel's stream of packets decompressed in order by one
 * receiving codec set up exactly as a receiving channel does (lm_codec_init
 * for 128 pages of 4 KiB), into distinct page-aligned pages of a buffer
 * that ASan watches. The payload passes through the codec's own buffer, as
 * recv.c reads it there, and only lengths the packet decoder lets through
 * (1 .. the bound) reach the decompressor.
 *
 * Input: a mode byte, then records. Mode bit 7 clear: each record is
 *   npages-1 (u8) | stride (u8, which pages) | length (u32, clipped to what
 *   is left) | payload
 * and the first rejected payload ends the stream, as it ends a migration.
 * Mode bit 7 set: the rest is page data, compressed by a sending codec and
 * decompressed by a receiving one, which must give it back.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "multifd/compress.h"
#include "proto/wire.h"

#define NPAGES LM_PACKET_MAX_PAGES

static uint8_t *pages_mem(void)
{
    static uint8_t *mem;
    if (!mem)
        FUZZ_CHECK((mem = aligned_alloc(FUZZ_PAGE, (size_t)NPAGES * FUZZ_PAGE)));
    return mem;
}

/* n distinct pages: an odd stride walks all 128 without repeating. */
static void pick_pages(uint8_t *mem, unsigned n, unsigned stride, uint8_t *pages[])
{
    for (unsigned i = 0; i < n; i++)
        pages[i] = mem + (size_t)((i * (stride | 1)) % NPAGES) * FUZZ_PAGE;
}

static void stream(const uint8_t *data, size_t size)
{
    lm_err err;
    lm_err_init(&err);
    lm_codec c;
    FUZZ_CHECK(lm_codec_init(&c, FUZZ_METHOD, false, NPAGES, FUZZ_PAGE, 0, &err) == 0);
    uint8_t *mem = pages_mem(), *pages[NPAGES];
    while (size >= 6) {
        unsigned n = 1 + data[0] % NPAGES, stride = data[1];
        size_t len = lm_get_be32(data + 2);
        data += 6, size -= 6;
        if (len > size)
            len = size;
        if (len == 0 || len > c.cap) /* lm_packet_decode's bound */
            break;
        memcpy(c.buf, data, len);
        data += len, size -= len;
        pick_pages(mem, n, stride, pages);
        lm_err_reset(&err);
        int ret = c.ops->decompress(c.state, c.buf, len, pages, n, &err);
        if (ret < 0) {
            FUZZ_CHECK((ret == -EBADMSG || ret == -ENOMEM) && err.msg[0]);
            break; /* the stream is out of step: the migration ends */
        }
    }
    lm_codec_cleanup(&c);
}

static void round_trip(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    unsigned n = (unsigned)((size + FUZZ_PAGE - 1) / FUZZ_PAGE);
    if (n > NPAGES)
        n = NPAGES;
    static uint8_t *src;
    if (!src)
        FUZZ_CHECK((src = aligned_alloc(FUZZ_PAGE, (size_t)NPAGES * FUZZ_PAGE)));
    /* The input repeated over the pages: compressible, with some variety. */
    for (size_t i = 0; i < (size_t)n * FUZZ_PAGE; i++)
        src[i] = data[i % size];
    uint8_t *in[NPAGES], *out[NPAGES], *mem = pages_mem();
    for (unsigned i = 0; i < n; i++)
        in[i] = src + (size_t)i * FUZZ_PAGE;
    pick_pages(mem, n, data[0], out);
    lm_err err;
    lm_err_init(&err);
    lm_codec tx, rx;
    FUZZ_CHECK(lm_codec_init(&tx, FUZZ_METHOD, true, NPAGES, FUZZ_PAGE, 0, &err) == 0);
    FUZZ_CHECK(lm_codec_init(&rx, FUZZ_METHOD, false, NPAGES, FUZZ_PAGE, 0, &err) == 0);
    /* Twice: the second packet leans on the first as its dictionary. */
    for (int k = 0; k < 2; k++) {
        size_t len = 0;
        FUZZ_CHECK(tx.ops->compress(tx.state, in, n, tx.buf, tx.cap, &len, &err) == 0);
        FUZZ_CHECK(len >= 1 && len <= tx.cap);
        FUZZ_CHECK(rx.ops->decompress(rx.state, tx.buf, len, out, n, &err) == 0);
        for (unsigned i = 0; i < n; i++)
            FUZZ_CHECK(memcmp(in[i], out[i], FUZZ_PAGE) == 0);
    }
    lm_codec_cleanup(&tx);
    lm_codec_cleanup(&rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 0x80)
        round_trip(data + 1, size - 1);
    else
        stream(data + 1, size - 1);
    return 0;
}
