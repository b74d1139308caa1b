#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "dirty/linux_compat.h"
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

/* The stream hashed for a block: a header, then per-page hashes in
 * order, except that a maximal run of zero pages (never populated, or
 * hashing as a zero page) is the zero-page hash followed by the run's
 * length. A page that is not zero never hashes as one, so the stream is
 * unambiguous, and it depends on the contents only: each side may learn
 * where nothing is from its own kernel, and an empty terabyte costs a few
 * bitmap words, not a hash a page. */
typedef struct digest_stream {
    XXH3_state_t *st;
    uint64_t zero_hash;
    uint64_t zero_run; /* zero pages pending */
    size_t used;
    uint8_t buf[8 * 256]; /* batched: the update calls stay cheap */
} digest_stream;

static void put_word(digest_stream *d, uint64_t v)
{
    lm_put_be64(d->buf + d->used, v);
    d->used += 8;
    if (d->used == sizeof(d->buf)) {
        XXH3_128bits_update(d->st, d->buf, d->used);
        d->used = 0;
    }
}

static void end_zero_run(digest_stream *d)
{
    if (d->zero_run) {
        put_word(d, d->zero_hash);
        put_word(d, d->zero_run);
        d->zero_run = 0;
    }
}

static void put_page_hash(digest_stream *d, uint64_t h)
{
    if (h == d->zero_hash) {
        d->zero_run++;
        return;
    }
    end_zero_run(d);
    put_word(d, h);
}

/* A populated region [start, end) of the block being hashed, from
 * PAGEMAP_SCAN in ascending order: the gap before it is a zero run. */
struct region_walk {
    digest_stream *d;
    const uint8_t *host;
    uint64_t page_size, next; /* the first page not accounted for yet */
};

static void hash_region(void *opaque, uint64_t start, uint64_t end, uint64_t categories)
{
    struct region_walk *w = opaque;
    (void)categories;
    uint64_t first = (start - (uintptr_t)w->host) / w->page_size;
    uint64_t last = (end - (uintptr_t)w->host) / w->page_size;
    /* A scan that resumes after a full vector may report again the
     * region it stopped in. */
    if (last <= w->next)
        return;
    if (first < w->next)
        first = w->next;
    w->d->zero_run += first - w->next;
    for (uint64_t p = first; p < last; p++)
        put_page_hash(w->d, XXH3_64bits(w->host + p * w->page_size, w->page_size));
    w->next = last;
}

/* Block b's pages into the stream. With PAGEMAP_SCAN the kernel lists the
 * populated regions and everything between them is a zero run, costing no
 * bitmap at all; without it, a bitmap of the populated pages. */
static int block_pages_update(lm_ram *ram, lm_block *b, lm_pagemap *pm, digest_stream *d,
                              lm_err *err)
{
    /* Called with no write-protection armed, so swapped means swapped. */
    if (pm->has_scan) {
        struct region_walk w = {.d = d, .host = b->host, .page_size = ram->page_size};
        int ret = lm_pagemap_scan(pm, (uintptr_t)b->host, (uintptr_t)b->host + b->len, 0, 0,
                                  PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                  PAGE_IS_PRESENT | PAGE_IS_SWAPPED, hash_region, &w);
        if (ret < 0)
            return lm_err_set(err, ret, "pagemap scan for the digest failed: %s", strerror(-ret));
        d->zero_run += b->npages - w.next;
        return 0;
    }
    lm_word *populated = lm_bitmap_new(b->npages);
    if (!populated)
        return lm_err_set(err, -ENOMEM, "out of memory for the digest");
    int ret = lm_pagemap_pages(pm, b->host, b->len, LM_PM_PRESENT | LM_PM_SWAPPED, populated);
    if (ret < 0) {
        lm_bitmap_free(populated);
        return lm_err_set(err, ret, "pagemap scan for the digest failed: %s", strerror(-ret));
    }
    for (uint64_t p = 0; p < b->npages;) {
        uint64_t data = lm_bitmap_next_set(populated, b->npages, p);
        d->zero_run += data - p;
        uint64_t end =
            data < b->npages ? lm_bitmap_next_clear(populated, b->npages, data) : b->npages;
        for (p = data; p < end; p++)
            put_page_hash(d, XXH3_64bits(b->host + p * ram->page_size, ram->page_size));
    }
    lm_bitmap_free(populated);
    return 0;
}

/* Block b into the stream: from hashes (one per page) when given, else
 * from its pages, where those the kernel says were never populated count
 * as zero a run at a time without being read. */
static int block_hashes_update(lm_ram *ram, lm_block *b, const uint64_t *hashes, lm_pagemap *pm,
                               digest_stream *d, lm_err *err)
{
    uint8_t head[12];
    lm_put_be32(head, b->id);
    lm_put_be64(head + 4, b->len);
    XXH3_128bits_update(d->st, head, sizeof(head));
    int ret = 0;
    if (hashes)
        for (uint64_t p = 0; p < b->npages; p++)
            put_page_hash(d, hashes[p]);
    else
        ret = block_pages_update(ram, b, pm, d, err);
    end_zero_run(d); /* a run ends with its block */
    XXH3_128bits_update(d->st, d->buf, d->used);
    d->used = 0;
    return ret;
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
    digest_stream *d = calloc(1, sizeof(*d));
    XXH3_state_t *st = d ? (d->st = XXH3_createState()) : NULL;
    if (!st) {
        ret = lm_err_set(err, -ENOMEM, "out of memory for the digest");
        goto out;
    }
    d->zero_hash = lm__zero_page_hash(ram->page_size);
    XXH3_128bits_reset(st);
    uint64_t n = 0;
    for (unsigned i = 0; i < ram->nblocks; i++) {
        lm_block *b = &ram->blocks[order[i]];
        if ((ret = block_hashes_update(ram, b, hashes ? hashes[order[i]] : NULL, &pm, d, err)) < 0)
            goto out;
        n += b->npages;
    }
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
    memcpy(out, canon.digest, 16);
    *pages = n;
out:
    XXH3_freeState(st);
    free(d);
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
