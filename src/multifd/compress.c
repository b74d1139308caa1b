/* Registry of the multifd compression methods: lookup, names, bounds, and
 * the per-channel setup both directions share. */
#include "multifd/compress.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Pages go raw: a name and a bound, no hooks. */
static size_t none_bound(size_t src_len)
{
    return src_len;
}
static const lm_compress_ops none_ops = {.name = "none", .bound = none_bound};

/* Indexed by lm_compression, the wire's numbering. */
static const lm_compress_ops *const methods[LM_COMPRESSION__COUNT] = {
    [LM_COMPRESSION_NONE] = &none_ops,
    [LM_COMPRESSION_ZLIB] = &lm_compress_zlib_ops,
    [LM_COMPRESSION_ZSTD] = &lm_compress_zstd_ops,
    [LM_COMPRESSION_LZ4] = &lm_compress_lz4_ops,
};

const lm_compress_ops *lm_compress_get(lm_compression m)
{
    if ((unsigned)m >= LM_COMPRESSION__COUNT || m == LM_COMPRESSION_NONE)
        return NULL;
    return methods[m];
}

int lm_compression_parse(const char *name, lm_compression *m)
{
    if (!name)
        return -EINVAL;
    for (unsigned i = 0; i < LM_COMPRESSION__COUNT; i++) {
        if (strcmp(name, methods[i]->name) == 0) {
            *m = (lm_compression)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *lm_compression_name(lm_compression m)
{
    if ((unsigned)m >= LM_COMPRESSION__COUNT)
        return "unknown";
    return methods[m]->name;
}

size_t lm_compress_bound(lm_compression m, unsigned max_pages, size_t page_size)
{
    if ((unsigned)m >= LM_COMPRESSION__COUNT || (page_size && max_pages > SIZE_MAX / page_size))
        return 0;
    return methods[m]->bound((size_t)max_pages * page_size);
}

int lm_codec_init(lm_codec *c, lm_compression m, bool send, unsigned max_pages, size_t page_size,
                  unsigned channel, lm_err *err)
{
    memset(c, 0, sizeof(*c));
    c->send = send;
    const lm_compress_ops *ops = lm_compress_get(m);
    if (!ops)
        return 0;
    c->cap = lm_compress_bound(m, max_pages, page_size);
    if (!c->cap)
        return lm_err_set(err, -EINVAL, "%s cannot compress packets of %u pages", ops->name,
                          max_pages);
    if (!(c->buf = malloc(c->cap)))
        return lm_err_set(err, -ENOMEM, "out of memory for channel %u", channel);
    int ret = send ? ops->send_setup(&c->state, max_pages, page_size, err)
                   : ops->recv_setup(&c->state, max_pages, page_size, err);
    if (ret < 0) {
        free(c->buf);
        c->buf = NULL;
        return ret;
    }
    c->ops = ops;
    return 0;
}

void lm_codec_cleanup(lm_codec *c)
{
    if (c->ops)
        (c->send ? c->ops->send_cleanup : c->ops->recv_cleanup)(c->state);
    free(c->buf);
    memset(c, 0, sizeof(*c));
}
