#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "dirty/pagemap.h"
#include "proto/wire.h"
#include "ram/ram.h"

uint64_t lm__page_hash(const void *page, uint64_t page_size)
{
    return page ? XXH3_64bits(page, page_size) : lm__zero_page_hash(page_size);
}

uint64_t lm__zero_page_hash(uint64_t page_size)
{
    static const uint8_t zero[1 << 16]; /* read-only: large enough for 64 KiB pages */
    return XXH3_64bits(zero, page_size <= sizeof(zero) ? page_size : sizeof(zero));
}

/* Per-page hash of block b, given or computed: hashes (if not NULL) holds
 * one per page; otherwise pages the kernel says were never populated hash
 * as zero without being read. */
static int block_hashes_update(lm_ram *ram, lm_block *b, const uint64_t *hashes, lm_pagemap *pm,
                               XXH3_state_t *st, lm_err *err)
{
    lm_word *populated = NULL;
    uint64_t zero_hash = lm__zero_page_hash(ram->page_size);
    if (!hashes) {
        if (!(populated = lm_bitmap_new(b->npages)))
            return lm_err_set(err, -ENOMEM, "out of memory for the digest");
        /* Called with no write-protection armed, so swapped means swapped. */
        int ret = lm_pagemap_pages(pm, b->host, b->len, LM_PM_PRESENT | LM_PM_SWAPPED, populated);
        if (ret < 0) {
            lm_bitmap_free(populated);
            return lm_err_set(err, ret, "pagemap scan for the digest failed: %s", strerror(-ret));
        }
    }
    uint8_t head[12];
    lm_put_be32(head, b->id);
    lm_put_be64(head + 4, b->len);
    XXH3_128bits_update(st, head, sizeof(head));
    /* Hash per-page hashes in batches to keep the update calls cheap. */
    uint8_t batch[8 * 256];
    size_t used = 0;
    for (uint64_t p = 0; p < b->npages; p++) {
        uint64_t h = hashes ? hashes[p]
                     : lm_bit_test(populated, p)
                         ? XXH3_64bits(b->host + p * ram->page_size, ram->page_size)
                         : zero_hash;
        lm_put_be64(batch + used, h);
        used += 8;
        if (used == sizeof(batch)) {
            XXH3_128bits_update(st, batch, used);
            used = 0;
        }
    }
    XXH3_128bits_update(st, batch, used);
    lm_bitmap_free(populated);
    return 0;
}

int lm__ram_digest_of(lm_ram *ram, uint64_t *const hashes[], uint8_t out[16], uint64_t *pages,
                      lm_err *err)
{
    unsigned order[LM_MAX_BLOCKS];
    for (unsigned i = 0; i < ram->nblocks; i++)
        order[i] = i;
    /* Ascending block id, so both sides agree whatever their registration order. */
    for (unsigned i = 1; i < ram->nblocks; i++)
        for (unsigned k = i; k > 0 && ram->blocks[order[k]].id < ram->blocks[order[k - 1]].id;
             k--) {
            unsigned t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    lm_pagemap pm = {.fd = -1};
    int ret = hashes ? 0 : lm_pagemap_open(&pm);
    if (ret < 0)
        return lm_err_set(err, ret, "cannot open /proc/self/pagemap for the digest: %s",
                          strerror(-ret));
    XXH3_state_t *st = XXH3_createState();
    if (!st) {
        ret = lm_err_set(err, -ENOMEM, "out of memory for the digest");
        goto out;
    }
    XXH3_128bits_reset(st);
    uint64_t n = 0;
    for (unsigned i = 0; i < ram->nblocks; i++) {
        lm_block *b = &ram->blocks[order[i]];
        if ((ret = block_hashes_update(ram, b, hashes ? hashes[order[i]] : NULL, &pm, st, err)) < 0)
            goto out;
        n += b->npages;
    }
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
    memcpy(out, canon.digest, 16);
    *pages = n;
out:
    XXH3_freeState(st);
    lm_pagemap_close(&pm);
    return ret;
}

int lm__ram_digest(lm_ram *ram, uint8_t out[16], uint64_t *pages, lm_err *err)
{
    return lm__ram_digest_of(ram, NULL, out, pages, err);
}

void lm__digest_hex(const uint8_t d[16], char *out, size_t len)
{
    size_t pos = 0;
    for (int i = 0; i < 16 && pos + 3 <= len; i++)
        pos += (size_t)snprintf(out + pos, len - pos, "%02x", d[i]);
}
