/* Registry of the multifd compression methods: lookup, names, bounds. */
#include "multifd/compress.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* Indexed by lm_compress_method; NONE has no table (pages go raw). */
static const lm_compress_ops *const methods[LM_COMPRESS__COUNT] = {
    [LM_COMPRESS_NONE] = NULL,
    [LM_COMPRESS_ZLIB] = &lm_compress_zlib_ops,
    [LM_COMPRESS_ZSTD] = &lm_compress_zstd_ops,
    [LM_COMPRESS_LZ4] = &lm_compress_lz4_ops,
};

static const char *const names[LM_COMPRESS__COUNT] = {
    [LM_COMPRESS_NONE] = "none",
    [LM_COMPRESS_ZLIB] = "zlib",
    [LM_COMPRESS_ZSTD] = "zstd",
    [LM_COMPRESS_LZ4] = "lz4",
};

const lm_compress_ops *lm_compress_get(lm_compress_method m)
{
    if ((unsigned)m >= LM_COMPRESS__COUNT)
        return NULL;
    return methods[m];
}

int lm_compress_parse(const char *name, lm_compress_method *m)
{
    if (!name)
        return -EINVAL;
    for (unsigned i = 0; i < LM_COMPRESS__COUNT; i++) {
        if (strcmp(name, names[i]) == 0) {
            *m = (lm_compress_method)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *lm_compress_name(lm_compress_method m)
{
    if ((unsigned)m >= LM_COMPRESS__COUNT)
        return "unknown";
    return names[m];
}

size_t lm_compress_bound(lm_compress_method m, unsigned max_pages, size_t page_size)
{
    if (page_size && max_pages > SIZE_MAX / page_size)
        return 0;
    size_t src = (size_t)max_pages * page_size;
    switch (m) {
    case LM_COMPRESS_NONE:
        return src;
    case LM_COMPRESS_ZLIB:
        return lm__compress_zlib_bound(src);
    case LM_COMPRESS_ZSTD:
        return lm__compress_zstd_bound(src);
    case LM_COMPRESS_LZ4:
        return lm__compress_lz4_bound(src);
    default:
        return 0;
    }
}
