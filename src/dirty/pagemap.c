#include "dirty/pagemap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirty/linux_compat.h"
#include "util/sys.h"

#define PM_VEC_LEN       4096
#define PM_ENTRY_PRESENT (1ull << 63)
#define PM_ENTRY_SWAPPED (1ull << 62)

int lm_pagemap_open(lm_pagemap *pm)
{
    pm->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm->fd < 0)
        return -errno;
    /* An empty scan tells whether the ioctl exists (ENOTTY when it does not). */
    struct pm_scan_arg arg = {.size = sizeof(arg), .return_mask = PAGE_IS_PRESENT};
    pm->has_scan = lm_sys_ioctl(pm->fd, PAGEMAP_SCAN, &arg) >= 0 || errno != ENOTTY;
    return 0;
}

void lm_pagemap_close(lm_pagemap *pm)
{
    if (pm->fd >= 0)
        close(pm->fd);
    pm->fd = -1;
}

int lm_pagemap_scan(lm_pagemap *pm, uint64_t start, uint64_t end, uint64_t flags,
                    uint64_t category_mask, uint64_t anyof_mask, uint64_t return_mask,
                    lm_pagemap_region_fn fn, void *opaque)
{
    struct page_region *vec = malloc(PM_VEC_LEN * sizeof(*vec));
    if (!vec)
        return -ENOMEM;
    int ret = 0;
    uint64_t pos = start;

    while (pos < end) {
        struct pm_scan_arg arg = {
            .size = sizeof(arg),
            .flags = flags,
            .start = pos,
            .end = end,
            .vec = (uintptr_t)vec,
            .vec_len = PM_VEC_LEN,
            .category_mask = category_mask,
            .category_anyof_mask = anyof_mask,
            .return_mask = return_mask,
        };
        long n = lm_sys_ioctl(pm->fd, PAGEMAP_SCAN, &arg);
        if (n < 0) {
            ret = -errno;
            break;
        }
        for (long i = 0; i < n; i++)
            fn(opaque, vec[i].start, vec[i].end, vec[i].categories);
        /* walk_end says how far the kernel got; it stops early when vec fills. */
        if (arg.walk_end <= pos) {
            ret = -EIO;
            break;
        }
        pos = arg.walk_end;
    }
    free(vec);
    return ret;
}

struct pages_ctx {
    uint64_t base;
    uint64_t page;
    lm_word *map;
};

static void mark_pages(void *opaque, uint64_t start, uint64_t end, uint64_t categories)
{
    struct pages_ctx *c = opaque;
    (void)categories;
    lm_bitmap_set_range(c->map, (start - c->base) / c->page, (end - start) / c->page);
}

static int pages_by_entries(lm_pagemap *pm, const void *host, uint64_t len, uint64_t mask,
                            lm_word *map)
{
    enum { CHUNK = 4096 };
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), npages = len / page;
    uint64_t *ent = malloc(CHUNK * sizeof(*ent));
    if (!ent)
        return -ENOMEM;
    int ret = 0;
    for (uint64_t first = 0; first < npages; first += CHUNK) {
        uint64_t n = npages - first < CHUNK ? npages - first : CHUNK;
        off_t off = (off_t)(((uintptr_t)host / page + first) * sizeof(uint64_t));
        ssize_t got = pread(pm->fd, ent, n * sizeof(uint64_t), off);
        if (got != (ssize_t)(n * sizeof(uint64_t))) {
            ret = got < 0 ? -errno : -EIO;
            break;
        }
        for (uint64_t i = 0; i < n; i++)
            if (ent[i] & mask)
                lm_bit_set(map, first + i);
    }
    free(ent);
    return ret;
}

int lm_pagemap_pages(lm_pagemap *pm, const void *host, uint64_t len, unsigned what, lm_word *map)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (!pm->has_scan)
        return pages_by_entries(pm, host, len,
                                ((what & LM_PM_PRESENT) ? PM_ENTRY_PRESENT : 0) |
                                    ((what & LM_PM_SWAPPED) ? PM_ENTRY_SWAPPED : 0),
                                map);
    uint64_t cats = ((what & LM_PM_PRESENT) ? PAGE_IS_PRESENT : 0) |
                    ((what & LM_PM_SWAPPED) ? PAGE_IS_SWAPPED : 0);
    struct pages_ctx c = {.base = (uintptr_t)host, .page = page, .map = map};
    return lm_pagemap_scan(pm, (uintptr_t)host, (uintptr_t)host + len, 0, 0, cats, cats, mark_pages,
                           &c);
}

int lm_pagemap_populated(lm_pagemap *pm, const void *host, uint64_t len, lm_word *populated,
                         lm_err *err)
{
    if (!populated)
        return 0;
    int ret = lm_pagemap_pages(pm, host, len, LM_PM_PRESENT | LM_PM_SWAPPED, populated);
    if (ret < 0)
        return lm_err_set(err, ret, "reading /proc/self/pagemap (arming) failed: %s",
                          strerror(-ret));
    return 0;
}
