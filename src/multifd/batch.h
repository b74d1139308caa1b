/* A batch of pages of one RAM block: what becomes one page packet. The
 * scheduler fills it; a channel sends it and hands back an empty one. */
#ifndef LM_MULTIFD_BATCH_H
#define LM_MULTIFD_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/wire.h"

struct lm_block;

typedef struct lm_page_batch {
    struct lm_block *block;
    bool sync;        /* a round barrier instead of pages */
    uint32_t nnormal; /* pages to send with their data (may still turn out zero) */
    uint32_t nzero;   /* pages known to be zero: sent without payload */
    uint64_t normal[LM_PACKET_MAX_PAGES]; /* byte offsets in the block */
    uint64_t zero[LM_PACKET_MAX_PAGES];
} lm_page_batch;

static inline uint32_t lm_batch_pages(const lm_page_batch *b)
{
    return b->nnormal + b->nzero;
}

static inline void lm_batch_reset(lm_page_batch *b)
{
    b->block = 0;
    b->sync = false;
    b->nnormal = b->nzero = 0;
}

#endif
