/*
 * Default tracker: userfaultfd write-protect in asynchronous mode. A write to
 * a protected page is resolved by the kernel itself (no thread, no message):
 * it just clears the page's uffd-wp bit. PAGEMAP_SCAN with
 * PM_SCAN_WP_MATCHING then reports the pages whose bit is clear
 * (PAGE_IS_WRITTEN) and sets it again in the same page-table walk, which is
 * the atomic get-and-clear a sync needs. A page never populated reads as not
 * written; its first write populates it unprotected, so it reads as written.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirty/linux_compat.h"
#include "dirty/pagemap.h"
#include "dirty/tracker.h"
#include "dirty/uffd.h"

typedef struct async_state {
    int uffd;
    lm_pagemap pm;
} async_state;

static int async_probe(lm_err *err)
{
    uint64_t features;
    int ret = lm_uffd_probe_features(&features, err);
    if (ret < 0)
        return ret;
    if (!(features & UFFD_FEATURE_WP_ASYNC))
        return lm_err_set(err, -ENOTSUP,
                          "the kernel lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7+); "
                          "use --dirty-tracker uffd-sync");
    lm_pagemap pm;
    if ((ret = lm_pagemap_open(&pm)) < 0)
        return lm_err_set(err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
    bool has_scan = pm.has_scan;
    lm_pagemap_close(&pm);
    if (!has_scan)
        return lm_err_set(err, -ENOTSUP,
                          "the kernel lacks the PAGEMAP_SCAN ioctl (Linux 6.7+); "
                          "use --dirty-tracker uffd-sync");
    return 0;
}

static int async_start(lm_tracker *t, lm_err *err)
{
    async_state *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "out of memory");
    s->pm.fd = -1;
    int ret = lm_pagemap_open(&s->pm);
    if (ret < 0) {
        lm_err_set(err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
        goto fail;
    }
    s->uffd = lm_uffd_open(UFFD_FEATURE_WP_ASYNC, err);
    if (s->uffd < 0) {
        ret = s->uffd;
        goto fail;
    }
    for (unsigned i = 0; i < t->nranges; i++) {
        ret = lm_uffd_register(s->uffd, t->ranges[i].host, t->ranges[i].len,
                               UFFDIO_REGISTER_MODE_WP, err);
        if (ret < 0) {
            for (unsigned j = 0; j < i; j++)
                lm_uffd_unregister(s->uffd, t->ranges[j].host, t->ranges[j].len);
            close(s->uffd);
            goto fail;
        }
    }
    t->priv = s;
    return 0;
fail:
    lm_pagemap_close(&s->pm);
    free(s);
    return ret;
}

struct collect {
    uint64_t base, page;
    lm_word *dirty;
};

static void collect_pages(void *opaque, uint64_t start, uint64_t end, uint64_t categories)
{
    struct collect *c = opaque;
    (void)categories;
    if (c->dirty)
        lm_bitmap_set_range(c->dirty, (start - c->base) / c->page, (end - start) / c->page);
}

/* Arming is one PAGEMAP_SCAN that write-protects the pages holding data
 * and reports them in the same walk. Empty page-table entries are left
 * alone: no uffd-wp markers, so no page tables are built for memory the
 * guest never touched, and later syncs skip it (their cost follows the
 * populated memory, not the size of RAM). A page populated after the walk
 * is present and unprotected: the next sync reports it as written. */
static int async_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                     lm_err *err)
{
    async_state *s = t->priv;
    uint64_t start = (uintptr_t)t->ranges[r].host + first * t->page_size;
    struct collect c = {.base = start, .page = t->page_size, .dirty = populated};
    int ret = lm_pagemap_scan(
        &s->pm, start, start + count * t->page_size, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, 0,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, collect_pages, &c);
    if (ret < 0)
        return lm_err_set(err, ret, "PAGEMAP_SCAN (arming write-protection) failed: %s",
                          strerror(-ret));
    return 0;
}

static int async_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                      bool rearm, lm_err *err)
{
    async_state *s = t->priv;
    uint64_t base = (uintptr_t)t->ranges[r].host, start = base + first * t->page_size;
    struct collect c = {.base = base, .page = t->page_size, .dirty = dirty};
    /* Written and holding data: a never-populated page carries a uffd-wp
     * marker (not written), or on kernels without markers no entry at all,
     * which must not count as a write either. */
    int ret =
        lm_pagemap_scan(&s->pm, start, start + count * t->page_size,
                        rearm ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : 0, PAGE_IS_WRITTEN,
                        PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_WRITTEN, collect_pages, &c);
    if (ret < 0)
        return lm_err_set(err, ret, "PAGEMAP_SCAN (write-protect matching) failed: %s",
                          strerror(-ret));
    return 0;
}

struct unprotect {
    int uffd;
};

static void unprotect_region(void *opaque, uint64_t start, uint64_t end, uint64_t categories)
{
    struct unprotect *u = opaque;
    (void)categories;
    lm_uffd_wp(u->uffd, (void *)(uintptr_t)start, end - start, false);
}

static void async_stop(lm_tracker *t)
{
    async_state *s = t->priv;
    if (!s)
        return;
    for (unsigned i = 0; i < t->nranges; i++) {
        /* Only pages holding data carry the bit (arming leaves empty
         * entries alone): unprotecting region by region costs what is
         * populated, not the whole range's page-table walk (300 ms for an
         * empty terabyte). A failed scan unprotects everything. */
        uintptr_t start = (uintptr_t)t->ranges[i].host;
        struct unprotect u = {s->uffd};
        if (lm_pagemap_scan(&s->pm, start, start + t->ranges[i].len, 0, 0,
                            PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                            unprotect_region, &u) < 0)
            lm_uffd_wp(s->uffd, t->ranges[i].host, t->ranges[i].len, false);
        lm_uffd_unregister(s->uffd, t->ranges[i].host, t->ranges[i].len);
    }
    close(s->uffd);
    lm_pagemap_close(&s->pm);
    free(s);
    t->priv = NULL;
}

const lm_tracker_ops lm_tracker_uffd_async_ops = {
    .name = "uffd-async",
    .pagemap_clean = true,
    .probe = async_probe,
    .start = async_start,
    .arm = async_arm,
    .sync = async_sync,
    .stop = async_stop,
};
