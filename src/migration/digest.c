#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "dirty/pagemap.h"
#include "migration/engine.h"
#include "proto/wire.h"

static int cmp_block_id(const void *a, const void *b)
{
    const lm_block *x = *(const lm_block *const *)a, *y = *(const lm_block *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int lm__ram_digest(lm_ctx *ctx, uint8_t out[16], uint64_t *pages)
{
    lm_block *order[LM_MAX_BLOCKS];
    for (unsigned i = 0; i < ctx->nblocks; i++)
        order[i] = &ctx->blocks[i];
    qsort(order, ctx->nblocks, sizeof(order[0]), cmp_block_id);

    lm_pagemap pm;
    int ret = lm_pagemap_open(&pm);
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "cannot open /proc/self/pagemap for the digest: %s",
                          strerror(-ret));
    uint8_t *zero = calloc(1, ctx->page_size);
    XXH3_state_t *st = XXH3_createState();
    if (!zero || !st) {
        ret = lm_err_set(&ctx->err, -ENOMEM, "out of memory for the digest");
        goto out;
    }
    XXH3_128bits_reset(st);
    uint64_t zero_hash = XXH3_64bits(zero, ctx->page_size), n = 0;
    for (unsigned i = 0; i < ctx->nblocks; i++) {
        lm_block *b = order[i];
        lm_word *populated = lm_bitmap_new(b->npages);
        if (!populated) {
            ret = lm_err_set(&ctx->err, -ENOMEM, "out of memory for the digest");
            goto out;
        }
        /* Called with no write-protection armed, so swapped means swapped. */
        ret = lm_pagemap_pages(&pm, b->host, b->len, LM_PM_PRESENT | LM_PM_SWAPPED, populated);
        if (ret < 0) {
            lm_bitmap_free(populated);
            lm_err_set(&ctx->err, ret, "pagemap scan for the digest failed: %s", strerror(-ret));
            goto out;
        }
        uint8_t head[12];
        lm_put_be32(head, b->id);
        lm_put_be64(head + 4, b->len);
        XXH3_128bits_update(st, head, sizeof(head));
        /* Hash per-page hashes in batches to keep the update calls cheap. */
        uint8_t batch[8 * 256];
        size_t used = 0;
        for (uint64_t p = 0; p < b->npages; p++) {
            uint64_t h = lm_bit_test(populated, p)
                             ? XXH3_64bits(b->host + p * ctx->page_size, ctx->page_size)
                             : zero_hash;
            lm_put_be64(batch + used, h);
            used += 8;
            if (used == sizeof(batch)) {
                XXH3_128bits_update(st, batch, used);
                used = 0;
            }
        }
        XXH3_128bits_update(st, batch, used);
        n += b->npages;
        lm_bitmap_free(populated);
    }
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
    memcpy(out, canon.digest, 16);
    *pages = n;
    ret = 0;
out:
    XXH3_freeState(st);
    free(zero);
    lm_pagemap_close(&pm);
    return ret;
}

void lm__digest_hex(const uint8_t d[16], char *out, size_t len)
{
    size_t pos = 0;
    for (int i = 0; i < 16 && pos + 3 <= len; i++)
        pos += (size_t)snprintf(out + pos, len - pos, "%02x", d[i]);
}
