/*
 * LZ4 for multifd: one raw LZ4 block per packet, compressed with the
 * streaming API so each block may refer back into the previous one (up to
 * 64 KiB). Acceleration 1.
 *
 * LZ4 streaming needs the previous block to stay in memory, unchanged, at
 * the address it was (de)compressed at. Guest pages give no such promise, so
 * both sides work in two staging buffers of max_pages*page_size bytes and
 * alternate between them: packet k is staged in buffer k%2 while packet
 * k-1, the dictionary, stays intact in the other. The buffers are never
 * adjacent, so LZ4 always treats the previous block as an external
 * dictionary (the same on both sides).
 *
 * Source: copy the pages into the staging buffer (one consistent snapshot of
 * guest RAM), compress it. Destination: decompress into the staging buffer
 * with a capacity of max_pages pages, check the size is exactly n pages, and
 * only then copy into the pages: a rejected payload leaves them untouched.
 */
#include <lz4.h>

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "multifd/compress.h"

#define LZ4_ACCELERATION 1
#define STAGING_GAP      4096 /* keeps the two staging buffers apart */

typedef struct lz4_state {
    unsigned max_pages;
    size_t page_size;
    size_t stage_size; /* max_pages * page_size */
    uint8_t *mem;
    uint8_t *stage[2];
    unsigned next; /* staging buffer for the next packet */
    LZ4_stream_t *cs;
    LZ4_streamDecode_t *ds;
} lz4_state;

static size_t lz4_bound(size_t src_len)
{
    if (src_len > LZ4_MAX_INPUT_SIZE)
        return 0;
    return (size_t)LZ4_compressBound((int)src_len);
}

static int state_new(unsigned max_pages, size_t page_size, lz4_state **out, lm_err *err)
{
    if (!max_pages || !page_size || max_pages > LZ4_MAX_INPUT_SIZE / page_size)
        return lm_err_set(err, -EINVAL, "lz4: unsupported packet size (%u pages of %zu bytes)",
                          max_pages, page_size);
    lz4_state *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "lz4: out of memory for the channel state");
    s->max_pages = max_pages;
    s->page_size = page_size;
    s->stage_size = (size_t)max_pages * page_size;
    s->mem = malloc(2 * s->stage_size + STAGING_GAP);
    if (!s->mem) {
        free(s);
        return lm_err_set(err, -ENOMEM, "lz4: out of memory for %zu-byte staging buffers",
                          2 * (size_t)max_pages * page_size);
    }
    s->stage[0] = s->mem;
    s->stage[1] = s->mem + s->stage_size + STAGING_GAP;
    *out = s;
    return 0;
}

static void state_free(lz4_state *s)
{
    if (!s)
        return;
    if (s->cs)
        LZ4_freeStream(s->cs);
    if (s->ds)
        LZ4_freeStreamDecode(s->ds);
    free(s->mem);
    free(s);
}

static int lz4_send_setup(void **state, unsigned max_pages, size_t page_size, lm_err *err)
{
    lz4_state *s;
    int ret = state_new(max_pages, page_size, &s, err);
    if (ret < 0)
        return ret;
    if (!(s->cs = LZ4_createStream())) {
        state_free(s);
        return lm_err_set(err, -ENOMEM, "lz4: out of memory for the compressor");
    }
    *state = s;
    return 0;
}

static int lz4_compress(void *state, uint8_t *const pages[], unsigned n, uint8_t *out, size_t cap,
                        size_t *outlen, lm_err *err)
{
    lz4_state *s = state;
    if (n == 0 || n > s->max_pages)
        return lm_err_set(err, -EINVAL, "lz4: %u pages in a packet, expected 1..%u", n,
                          s->max_pages);
    uint8_t *stage = s->stage[s->next];
    for (unsigned i = 0; i < n; i++)
        memcpy(stage + i * s->page_size, pages[i], s->page_size);
    size_t src = (size_t)n * s->page_size;
    int room = cap > INT_MAX ? INT_MAX : (int)cap;
    int r = LZ4_compress_fast_continue(s->cs, (const char *)stage, (char *)out, (int)src, room,
                                       LZ4_ACCELERATION);
    if (r <= 0)
        return lm_err_set(err, -ENOBUFS, "lz4: %zu-byte output buffer too small for %u pages", cap,
                          n);
    s->next ^= 1;
    *outlen = (size_t)r;
    return 0;
}

static void lz4_send_cleanup(void *state)
{
    state_free(state);
}

static int lz4_recv_setup(void **state, unsigned max_pages, size_t page_size, lm_err *err)
{
    lz4_state *s;
    int ret = state_new(max_pages, page_size, &s, err);
    if (ret < 0)
        return ret;
    if (!(s->ds = LZ4_createStreamDecode())) {
        state_free(s);
        return lm_err_set(err, -ENOMEM, "lz4: out of memory for the decompressor");
    }
    *state = s;
    return 0;
}

static int lz4_decompress(void *state, const uint8_t *in, size_t len, uint8_t *const pages[],
                          unsigned n, lm_err *err)
{
    lz4_state *s = state;
    if (n == 0 || n > s->max_pages)
        return lm_err_set(err, -EINVAL, "lz4: %u pages in a packet, expected 1..%u", n,
                          s->max_pages);
    if (len == 0 || len > INT_MAX)
        return lm_err_set(err, -EBADMSG, "lz4 payload corrupt: %zu bytes", len);
    uint8_t *stage = s->stage[s->next];
    size_t want = (size_t)n * s->page_size;
    /* Capacity max_pages pages: a payload that decodes to more than n pages
     * is seen as such (or as invalid when it exceeds even that). */
    int r = LZ4_decompress_safe_continue(s->ds, (const char *)in, (char *)stage, (int)len,
                                         (int)s->stage_size);
    if (r < 0)
        return lm_err_set(err, -EBADMSG, "lz4 payload corrupt: invalid block at byte %d of %zu",
                          -r - 1, len);
    if ((size_t)r != want)
        return lm_err_set(err, -EBADMSG,
                          "lz4 payload corrupt: decodes to %d bytes, expected %zu (%u pages)", r,
                          want, n);
    for (unsigned i = 0; i < n; i++)
        memcpy(pages[i], stage + i * s->page_size, s->page_size);
    s->next ^= 1;
    return 0;
}

static void lz4_recv_cleanup(void *state)
{
    state_free(state);
}

const lm_compress_ops lm_compress_lz4_ops = {
    .name = "lz4",
    .bound = lz4_bound,
    .send_setup = lz4_send_setup,
    .compress = lz4_compress,
    .send_cleanup = lz4_send_cleanup,
    .recv_setup = lz4_recv_setup,
    .decompress = lz4_decompress,
    .recv_cleanup = lz4_recv_cleanup,
};
