/* What the kernel knows about our own pages, from /proc/self/pagemap. */
#ifndef LM_DIRTY_PAGEMAP_H
#define LM_DIRTY_PAGEMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "util/bitmap.h"
#include "util/error.h"

typedef struct lm_pagemap {
    int fd;
    bool has_scan; /* the PAGEMAP_SCAN ioctl (Linux 6.7+) */
} lm_pagemap;

int lm_pagemap_open(lm_pagemap *pm);
void lm_pagemap_close(lm_pagemap *pm);

enum {
    LM_PM_PRESENT = 1u << 0, /* mapped in memory now */
    LM_PM_SWAPPED = 1u << 1, /* a swap entry, or a uffd-wp marker on a page
                                never populated while write-protection is armed */
};

/*
 * ORs into 'map' a bit for each page of [host, host+len) in one of the
 * states in 'what'. With no write-protection armed, a page neither present
 * nor swapped was never populated: it is zero without being read. Uses
 * PAGEMAP_SCAN when the kernel has it (cost grows with populated ranges),
 * else reads the pagemap entries.
 */
int lm_pagemap_pages(lm_pagemap *pm, const void *host, uint64_t len, unsigned what, lm_word *map);

/* A tracker's arm: the pages of [host, host+len) that hold data (present
 * or swapped) into 'populated', when it is not NULL; the error says so. */
int lm_pagemap_populated(lm_pagemap *pm, const void *host, uint64_t len, lm_word *populated,
                         lm_err *err);

/*
 * One PAGEMAP_SCAN walk over [start, end); calls fn for each returned region
 * until the whole range is walked. Returns 0 or -errno.
 */
typedef void (*lm_pagemap_region_fn)(void *opaque, uint64_t start, uint64_t end,
                                     uint64_t categories);
int lm_pagemap_scan(lm_pagemap *pm, uint64_t start, uint64_t end, uint64_t flags,
                    uint64_t category_mask, uint64_t anyof_mask, uint64_t return_mask,
                    lm_pagemap_region_fn fn, void *opaque);

#endif
