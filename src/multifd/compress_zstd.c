/*
 * zstd for multifd: one zstd frame per channel that never ends. The sender
 * feeds each page with ZSTD_e_continue and closes the packet with
 * ZSTD_e_flush, which ends the current block so the receiver can decode the
 * whole packet, while the window carries over to the next one. Level 1,
 * window fixed at 2^ZSTD_WINDOW_LOG on both sides (the receiver refuses
 * frames asking for more, bounding its memory).
 *
 * Receiver: ZSTD_decompressStream straight into each page in turn, then one
 * more call with a 1-byte spare buffer proves that the payload neither
 * produces more output nor stops in the middle of a block.
 */
#include <zstd.h>
#include <zstd_errors.h>

#include <errno.h>
#include <stdlib.h>

#include "multifd/compress.h"

#define ZSTD_LEVEL            1
#define ZSTD_WINDOW_LOG       20
#define ZSTD_BLOCK_MAX        ((size_t)128 << 10)
#define ZSTD_BLOCK_HEADER     3 /* ZSTD_blockHeaderSize, under ZSTD_STATIC_LINKING_ONLY */
#define ZSTD_FRAME_HEADER_MAX 18

typedef struct zstd_send {
    ZSTD_CCtx *cctx;
    unsigned max_pages;
    size_t page_size;
} zstd_send;

typedef struct zstd_recv {
    ZSTD_DCtx *dctx;
    unsigned max_pages;
    size_t page_size;
} zstd_recv;

static size_t zstd_bound(size_t src_len)
{
    /* ZSTD_compressBound covers one whole frame; streaming with a flush per
     * packet may add the frame header (first packet) and a block header per
     * flush on top of those per 128 KiB block. */
    size_t b = ZSTD_compressBound(src_len);
    if (ZSTD_isError(b) || b == 0 || b > SIZE_MAX / 2)
        return 0;
    return b + ZSTD_FRAME_HEADER_MAX + ZSTD_BLOCK_HEADER * (src_len / ZSTD_BLOCK_MAX + 2) + 64;
}

static int check_sizes(unsigned max_pages, size_t page_size, lm_err *err)
{
    if (!max_pages || !page_size || max_pages > (SIZE_MAX / 4) / page_size ||
        !zstd_bound((size_t)max_pages * page_size))
        return lm_err_set(err, -EINVAL, "zstd: unsupported packet size (%u pages of %zu bytes)",
                          max_pages, page_size);
    return 0;
}

static int zstd_send_setup(void **state, unsigned max_pages, size_t page_size, lm_err *err)
{
    int ret = check_sizes(max_pages, page_size, err);
    if (ret < 0)
        return ret;
    zstd_send *s = calloc(1, sizeof(*s));
    if (!s || !(s->cctx = ZSTD_createCCtx())) {
        free(s);
        return lm_err_set(err, -ENOMEM, "zstd: out of memory for the compressor");
    }
    s->max_pages = max_pages;
    s->page_size = page_size;
    size_t zr = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
    if (!ZSTD_isError(zr))
        zr = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_windowLog, ZSTD_WINDOW_LOG);
    if (ZSTD_isError(zr)) {
        ZSTD_freeCCtx(s->cctx);
        free(s);
        return lm_err_set(err, -EINVAL, "zstd: cannot configure the compressor: %s",
                          ZSTD_getErrorName(zr));
    }
    *state = s;
    return 0;
}

static int zstd_compress(void *state, uint8_t *const pages[], unsigned n, uint8_t *out, size_t cap,
                         size_t *outlen, lm_err *err)
{
    zstd_send *s = state;
    if (n == 0 || n > s->max_pages)
        return lm_err_set(err, -EINVAL, "zstd: %u pages in a packet, expected 1..%u", n,
                          s->max_pages);
    ZSTD_outBuffer ob = {out, cap, 0};
    for (unsigned i = 0; i < n; i++) {
        /* In the default buffered mode zstd copies the input into its own
         * window before compressing: a guest write meanwhile only changes
         * the data. */
        ZSTD_inBuffer ib = {pages[i], s->page_size, 0};
        ZSTD_EndDirective mode = i + 1 == n ? ZSTD_e_flush : ZSTD_e_continue;
        for (;;) {
            size_t left = ZSTD_compressStream2(s->cctx, &ob, &ib, mode);
            if (ZSTD_isError(left))
                return lm_err_set(
                    err, ZSTD_getErrorCode(left) == ZSTD_error_memory_allocation ? -ENOMEM : -EIO,
                    "zstd: compression failed: %s", ZSTD_getErrorName(left));
            if (ib.pos == ib.size && (mode == ZSTD_e_continue || left == 0))
                break;
            if (ob.pos == ob.size)
                return lm_err_set(err, -ENOBUFS,
                                  "zstd: %zu-byte output buffer too small for %u pages", cap, n);
        }
    }
    *outlen = ob.pos;
    return 0;
}

static void zstd_send_cleanup(void *state)
{
    zstd_send *s = state;
    if (!s)
        return;
    ZSTD_freeCCtx(s->cctx);
    free(s);
}

static int zstd_recv_setup(void **state, unsigned max_pages, size_t page_size, lm_err *err)
{
    int ret = check_sizes(max_pages, page_size, err);
    if (ret < 0)
        return ret;
    zstd_recv *s = calloc(1, sizeof(*s));
    if (!s || !(s->dctx = ZSTD_createDCtx())) {
        free(s);
        return lm_err_set(err, -ENOMEM, "zstd: out of memory for the decompressor");
    }
    s->max_pages = max_pages;
    s->page_size = page_size;
    size_t zr = ZSTD_DCtx_setParameter(s->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG);
    if (ZSTD_isError(zr)) {
        ZSTD_freeDCtx(s->dctx);
        free(s);
        return lm_err_set(err, -EINVAL, "zstd: cannot configure the decompressor: %s",
                          ZSTD_getErrorName(zr));
    }
    *state = s;
    return 0;
}

static int dstream_error(size_t zr, lm_err *err)
{
    if (ZSTD_getErrorCode(zr) == ZSTD_error_memory_allocation)
        return lm_err_set(err, -ENOMEM, "zstd: out of memory while decompressing");
    return lm_err_set(err, -EBADMSG, "zstd payload corrupt: %s", ZSTD_getErrorName(zr));
}

static int zstd_decompress(void *state, const uint8_t *in, size_t len, uint8_t *const pages[],
                           unsigned n, lm_err *err)
{
    zstd_recv *s = state;
    if (n == 0 || n > s->max_pages)
        return lm_err_set(err, -EINVAL, "zstd: %u pages in a packet, expected 1..%u", n,
                          s->max_pages);
    if (len == 0)
        return lm_err_set(err, -EBADMSG, "zstd payload corrupt: empty");
    ZSTD_inBuffer ib = {in, len, 0};
    for (unsigned i = 0; i < n; i++) {
        /* The decoder keeps its window in its own buffer (buffered output
         * mode), so the pages are only ever written, never referenced later. */
        ZSTD_outBuffer ob = {pages[i], s->page_size, 0};
        while (ob.pos < ob.size) {
            size_t in_before = ib.pos, out_before = ob.pos;
            size_t zr = ZSTD_decompressStream(s->dctx, &ob, &ib);
            if (ZSTD_isError(zr))
                return dstream_error(zr, err);
            if (ib.pos == in_before && ob.pos == out_before)
                return lm_err_set(err, -EBADMSG,
                                  "zstd payload corrupt: decodes to fewer than %u pages "
                                  "(%zu bytes short)",
                                  n, (ob.size - ob.pos) + (n - 1 - i) * s->page_size);
        }
    }
    /* All pages full. Whatever input is left must decode to nothing, and the
     * decoder must stand at a block boundary inside the frame, as the
     * sender's flush leaves it: the next input it wants is then exactly one
     * block header. A frame end (0) never comes from our sender. */
    uint8_t spare;
    ZSTD_outBuffer ob = {&spare, 1, 0};
    size_t zr = ZSTD_decompressStream(s->dctx, &ob, &ib);
    if (ZSTD_isError(zr))
        return dstream_error(zr, err);
    if (ob.pos != 0)
        return lm_err_set(err, -EBADMSG, "zstd payload corrupt: decodes to more than %u pages", n);
    if (ib.pos != ib.size || zr != ZSTD_BLOCK_HEADER)
        return lm_err_set(err, -EBADMSG,
                          "zstd payload corrupt: does not end at a flush point after %u pages", n);
    return 0;
}

static void zstd_recv_cleanup(void *state)
{
    zstd_recv *s = state;
    if (!s)
        return;
    ZSTD_freeDCtx(s->dctx);
    free(s);
}

const lm_compress_ops lm_compress_zstd_ops = {
    .name = "zstd",
    .bound = zstd_bound,
    .send_setup = zstd_send_setup,
    .compress = zstd_compress,
    .send_cleanup = zstd_send_cleanup,
    .recv_setup = zstd_recv_setup,
    .decompress = zstd_decompress,
    .recv_cleanup = zstd_recv_cleanup,
};
