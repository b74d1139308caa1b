/*
 * zlib for multifd: one raw deflate stream per channel (no zlib header or
 * adler32 trailer: the stream never ends), level 1, each packet closed with
 * Z_SYNC_FLUSH so it ends on a byte-aligned block boundary and the receiver
 * can decode it fully while the window carries over to the next packet.
 *
 * Receiver: inflate straight into each page in turn (next_out/avail_out),
 * then one more call with a 1-byte spare buffer proves that the payload
 * neither produces more output nor carries bytes past the flush point.
 */
#define ZLIB_CONST
#include <zlib.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>

#include "multifd/compress.h"

#define ZLIB_LEVEL       1
#define ZLIB_WINDOW_BITS (-15) /* raw deflate, 32 KiB window */
#define ZLIB_MEM_LEVEL   8

typedef struct zlib_state {
    z_stream zs;
    unsigned max_pages;
    size_t page_size;
} zlib_state;

static size_t zlib_bound(size_t src_len)
{
    /* deflateBound() for the default window and memLevel is
     * src + src/4096 + src/16384 + src/2^25 + 7 (stored blocks being the
     * worst case); a sync flush adds an empty stored block (5 bytes). This is
     * looser than both. avail_in/avail_out are 32-bit. */
    if (src_len > UINT_MAX / 2)
        return 0;
    return src_len + (src_len >> 10) + 64;
}

static int check_sizes(unsigned max_pages, size_t page_size, lm_err *err)
{
    if (!max_pages || !page_size || page_size > UINT_MAX || max_pages > (UINT_MAX / 2) / page_size)
        return lm_err_set(err, -EINVAL, "zlib: unsupported packet size (%u pages of %zu bytes)",
                          max_pages, page_size);
    return 0;
}

static int zlib_send_setup(void **state, unsigned max_pages, size_t page_size, lm_err *err)
{
    int ret = check_sizes(max_pages, page_size, err);
    if (ret < 0)
        return ret;
    zlib_state *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "zlib: out of memory for the compressor");
    s->max_pages = max_pages;
    s->page_size = page_size;
    int zr = deflateInit2(&s->zs, ZLIB_LEVEL, Z_DEFLATED, ZLIB_WINDOW_BITS, ZLIB_MEM_LEVEL,
                          Z_DEFAULT_STRATEGY);
    if (zr != Z_OK) {
        free(s);
        if (zr == Z_MEM_ERROR)
            return lm_err_set(err, -ENOMEM, "zlib: out of memory for the compressor");
        return lm_err_set(err, -EINVAL, "zlib: deflateInit2 failed (%d)", zr);
    }
    *state = s;
    return 0;
}

static int zlib_compress(void *state, uint8_t *const pages[], unsigned n, uint8_t *out, size_t cap,
                         size_t *outlen, lm_err *err)
{
    zlib_state *s = state;
    if (n == 0 || n > s->max_pages)
        return lm_err_set(err, -EINVAL, "zlib: %u pages in a packet, expected 1..%u", n,
                          s->max_pages);
    z_stream *zs = &s->zs;
    uInt avail = cap > UINT_MAX ? UINT_MAX : (uInt)cap;
    zs->next_out = out;
    zs->avail_out = avail;
    for (unsigned i = 0; i < n; i++) {
        bool last = i + 1 == n;
        /* deflate copies its input into its own window before looking at
         * it, so a guest writing the page meanwhile only changes the data. */
        zs->next_in = pages[i];
        zs->avail_in = (uInt)s->page_size;
        int zr = deflate(zs, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
        if (zr == Z_STREAM_ERROR)
            return lm_err_set(err, -EIO, "zlib: deflate failed: %s",
                              zs->msg ? zs->msg : "stream error");
        /* With room to spare, one call consumes the page (and completes the
         * flush); a full output buffer means cap was below the bound. */
        if (zs->avail_in != 0 || zs->avail_out == 0)
            return lm_err_set(err, -ENOBUFS, "zlib: %zu-byte output buffer too small for %u pages",
                              cap, n);
    }
    *outlen = avail - zs->avail_out;
    return 0;
}

static void zlib_send_cleanup(void *state)
{
    zlib_state *s = state;
    if (!s)
        return;
    deflateEnd(&s->zs);
    free(s);
}

static int zlib_recv_setup(void **state, unsigned max_pages, size_t page_size, lm_err *err)
{
    int ret = check_sizes(max_pages, page_size, err);
    if (ret < 0)
        return ret;
    zlib_state *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "zlib: out of memory for the decompressor");
    s->max_pages = max_pages;
    s->page_size = page_size;
    int zr = inflateInit2(&s->zs, ZLIB_WINDOW_BITS);
    if (zr != Z_OK) {
        free(s);
        if (zr == Z_MEM_ERROR)
            return lm_err_set(err, -ENOMEM, "zlib: out of memory for the decompressor");
        return lm_err_set(err, -EINVAL, "zlib: inflateInit2 failed (%d)", zr);
    }
    *state = s;
    return 0;
}

/* Maps an inflate() failure to -errno and a message; 0 for Z_OK. */
static int inflate_error(z_stream *zs, int zr, lm_err *err)
{
    switch (zr) {
    case Z_OK:
    case Z_BUF_ERROR:
        return 0;
    case Z_MEM_ERROR:
        return lm_err_set(err, -ENOMEM, "zlib: out of memory while decompressing");
    case Z_STREAM_END:
        return lm_err_set(err, -EBADMSG, "zlib payload corrupt: final deflate block");
    case Z_NEED_DICT:
        return lm_err_set(err, -EBADMSG, "zlib payload corrupt: asks for a dictionary");
    default:
        return lm_err_set(err, -EBADMSG, "zlib payload corrupt: %s",
                          zs->msg ? zs->msg : "invalid deflate data");
    }
}

static int zlib_decompress(void *state, const uint8_t *in, size_t len, uint8_t *const pages[],
                           unsigned n, lm_err *err)
{
    zlib_state *s = state;
    if (n == 0 || n > s->max_pages)
        return lm_err_set(err, -EINVAL, "zlib: %u pages in a packet, expected 1..%u", n,
                          s->max_pages);
    if (len == 0 || len > UINT_MAX)
        return lm_err_set(err, -EBADMSG, "zlib payload corrupt: %zu bytes", len);
    z_stream *zs = &s->zs;
    zs->next_in = in;
    zs->avail_in = (uInt)len;
    for (unsigned i = 0; i < n; i++) {
        zs->next_out = pages[i];
        zs->avail_out = (uInt)s->page_size;
        while (zs->avail_out) {
            int zr = inflate(zs, Z_SYNC_FLUSH);
            int ret = inflate_error(zs, zr, err);
            if (ret < 0)
                return ret;
            if (zr == Z_BUF_ERROR) /* no progress possible: input exhausted */
                return lm_err_set(err, -EBADMSG,
                                  "zlib payload corrupt: decodes to fewer than %u pages "
                                  "(%zu bytes short)",
                                  n, (size_t)zs->avail_out + (n - 1 - i) * s->page_size);
        }
    }
    /* All pages full. Whatever input is left must decode to nothing, and the
     * stream must stop at a block boundary on a whole byte, as the sender's
     * sync flush leaves it. data_type says where the last call stopped:
     * unused bits + 64 in the last block + 128 at a block boundary, so
     * exactly 128 is the flush point. Z_BLOCK makes inflate stop at each
     * boundary (on entry it leaves that state, hence the saved value), and a
     * 1-byte spare buffer catches any further output. */
    int at = zs->data_type;
    while (zs->avail_in) {
        uint8_t spare;
        zs->next_out = &spare;
        zs->avail_out = 1;
        int zr = inflate(zs, Z_BLOCK);
        int ret = inflate_error(zs, zr, err);
        if (ret < 0)
            return ret;
        if (zs->avail_out == 0)
            return lm_err_set(err, -EBADMSG, "zlib payload corrupt: decodes to more than %u pages",
                              n);
        if (zr == Z_BUF_ERROR) /* no progress */
            break;
        at = zs->data_type;
    }
    if (zs->avail_in != 0 || at != 128)
        return lm_err_set(err, -EBADMSG,
                          "zlib payload corrupt: does not end at a flush point after %u pages", n);
    return 0;
}

static void zlib_recv_cleanup(void *state)
{
    zlib_state *s = state;
    if (!s)
        return;
    inflateEnd(&s->zs);
    free(s);
}

const lm_compress_ops lm_compress_zlib_ops = {
    .name = "zlib",
    .bound = zlib_bound,
    .send_setup = zlib_send_setup,
    .compress = zlib_compress,
    .send_cleanup = zlib_send_cleanup,
    .recv_setup = zlib_recv_setup,
    .decompress = zlib_decompress,
    .recv_cleanup = zlib_recv_cleanup,
};
