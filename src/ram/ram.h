/*
 * Guest RAM as the engine sees it: the registered blocks, the destination's
 * receivedmap, and the digest over all of it. This layer sits below the
 * channels (multifd) and above nothing but util/: it knows pages and
 * blocks, not connections, rounds or migration states.
 */
#ifndef LM_RAM_RAM_H
#define LM_RAM_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include "livemig.h"
#include "util/bitmap.h"
#include "util/error.h"

typedef struct lm_block {
    uint32_t id;
    char name[LM_BLOCK_NAME_MAX];
    uint8_t *host;
    uint64_t len;
    uint64_t npages;
    unsigned flags;    /* LM_RAM_* */
    bool owned;        /* allocated by the engine (destination), freed with the RAM */
    lm_word *received; /* destination: pages received at least once */
} lm_block;

typedef struct lm_ram {
    lm_block blocks[LM_MAX_BLOCKS];
    unsigned nblocks;
    uint64_t page_size;
} lm_ram;

void lm__ram_init(lm_ram *ram, uint64_t page_size);
/* Frees the receivedmaps and the blocks the engine allocated. */
void lm__ram_release(lm_ram *ram);
/* Registers a block (checked: alignment, size, unique id, room). */
int lm__ram_add(lm_ram *ram, uint32_t id, const char *name, void *host, uint64_t len,
                unsigned flags, lm_err *err);
lm_block *lm__ram_find(lm_ram *ram, uint32_t id);
static inline unsigned lm__ram_index(const lm_ram *ram, const lm_block *b)
{
    return (unsigned)(b - ram->blocks);
}
uint64_t lm__ram_total(const lm_ram *ram);
uint64_t lm__ram_max_block_pages(const lm_ram *ram);
/* Destination: a fresh, empty receivedmap for every block. */
int lm__ram_receivedmap_reset(lm_ram *ram, lm_err *err);

/* 128-bit digest of all guest RAM, block by block in ascending id order,
 * defined over per-page hashes so that a page the kernel says was never
 * populated contributes the zero-page hash without being read. */
int lm__ram_digest(lm_ram *ram, uint8_t out[16], uint64_t *pages, lm_err *err);
/* The same digest from per-page hashes already known (hashes[i] for
 * ram->blocks[i], one per page): postcopy hashes each page as it is placed. */
int lm__ram_digest_of(lm_ram *ram, uint64_t *const hashes[], uint8_t out[16], uint64_t *pages,
                      lm_err *err);
uint64_t lm__page_hash(const void *page, uint64_t page_size); /* NULL: a zero page */
uint64_t lm__zero_page_hash(uint64_t page_size);
void lm__digest_hex(const uint8_t d[16], char *out, size_t len);

#endif
