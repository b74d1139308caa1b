/*
 * Fallback tracker for kernels without PAGEMAP_SCAN: userfaultfd
 * write-protect in synchronous mode. A write to a protected page blocks the
 * writer and queues a message; the handler thread sets the page's bit in the
 * live bitmap and only then unprotects the page, which wakes the writer. So a
 * write that has completed is always in the live bitmap already.
 *
 * A re-arming sync takes the live bits of its range and re-protects those
 * pages; a read only copies them (the pages stay writable and their bits
 * stay set until the re-arm). The handler's {set bit, unprotect} and the
 * sync's {take, re-protect} hold
 * one mutex: otherwise a sync could take a bit and re-protect the page before
 * the handler unprotects it, leaving it writable with no bit anywhere.
 *
 * Never-populated pages have no page-table entry to protect, so the range is
 * also registered for MISSING faults: a first write gets a zero page
 * installed and is recorded; a first read gets a zero page installed
 * already write-protected.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dirty/linux_compat.h"
#include "dirty/pagemap.h"
#include "dirty/tracker.h"
#include "dirty/uffd.h"

typedef struct sync_state {
    int uffd;
    int stop_fd; /* eventfd that ends the handler thread */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock; /* orders handler updates against syncs */
    lm_tracker *t;
    lm_word *live[LM_MAX_BLOCKS]; /* written by the handler, exchanged by sync */
    void *zero_page;
    lm_pagemap pm;
} sync_state;

static int sync_probe(lm_err *err)
{
    uint64_t features;
    /* Anonymous write-protect exists in every kernel with userfaultfd WP;
     * UFFDIO_API succeeding with no features is what we need. */
    return lm_uffd_probe_features(&features, err);
}

static int find_range(const lm_tracker *t, uint64_t addr)
{
    for (unsigned i = 0; i < t->nranges; i++) {
        uint64_t base = (uintptr_t)t->ranges[i].host;
        if (addr >= base && addr - base < t->ranges[i].len)
            return (int)i;
    }
    return -1;
}

static void handle_fault(sync_state *s, uint64_t addr, uint64_t flags)
{
    lm_tracker *t = s->t;
    int r = find_range(t, addr);
    if (r < 0)
        return;
    uint64_t page = (addr - (uintptr_t)t->ranges[r].host) / t->page_size;

    pthread_mutex_lock(&s->lock);
    if (flags & UFFD_PAGEFAULT_FLAG_WP) {
        lm_bit_set_atomic(s->live[r], page);
        lm_uffd_wp(s->uffd, (void *)(uintptr_t)addr, t->page_size, false);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    /* MISSING: install a zero page; a reader gets it protected. */
    bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;
    if (write)
        lm_bit_set_atomic(s->live[r], page);
    struct uffdio_copy copy = {
        .dst = addr,
        .src = (uintptr_t)s->zero_page,
        .len = t->page_size,
        .mode = write ? 0 : UFFDIO_COPY_MODE_WP,
    };
    if (lm_sys_ioctl(s->uffd, UFFDIO_COPY, &copy) < 0 && errno == EEXIST) {
        /* Someone placed it first; just wake the faulting thread. */
        struct uffdio_range range = {.start = addr, .len = t->page_size};
        (void)lm_sys_ioctl(s->uffd, UFFDIO_WAKE, &range);
    }
    pthread_mutex_unlock(&s->lock);
}

static int on_fault(void *opaque, uint64_t addr, uint64_t flags)
{
    handle_fault(opaque, addr, flags);
    return 0;
}

static void *handler_main(void *arg)
{
    sync_state *s = arg;
    (void)lm_uffd_fault_loop(s->uffd, s->stop_fd, s->t->page_size, on_fault, s);
    return NULL;
}

static void sync_stop(lm_tracker *t);

static int sync_start(lm_tracker *t, lm_err *err)
{
    sync_state *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "out of memory");
    s->t = t;
    pthread_mutex_init(&s->lock, NULL);
    s->uffd = -1;
    s->stop_fd = -1;
    s->pm.fd = -1;
    t->priv = s;
    int ret;

    s->zero_page = mmap(NULL, t->page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->zero_page == MAP_FAILED) {
        s->zero_page = NULL;
        ret = lm_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (unsigned i = 0; i < t->nranges; i++) {
        if (!(s->live[i] = lm_bitmap_new(t->ranges[i].npages))) {
            ret = lm_err_set(err, -ENOMEM, "out of memory for dirty bitmaps");
            goto fail;
        }
    }
    if ((ret = lm_pagemap_open(&s->pm)) < 0) {
        lm_err_set(err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
        goto fail;
    }
    if ((s->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
        ret = lm_err_set(err, -errno, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if ((s->uffd = lm_uffd_open(0, err)) < 0) {
        ret = s->uffd;
        goto fail;
    }
    for (unsigned i = 0; i < t->nranges; i++) {
        ret = lm_uffd_register(s->uffd, t->ranges[i].host, t->ranges[i].len,
                               UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MISSING, err);
        if (ret < 0)
            goto fail;
    }
    if ((ret = -pthread_create(&s->thread, NULL, handler_main, s)) < 0) {
        lm_err_set(err, ret, "cannot start the fault-handling thread");
        goto fail;
    }
    s->thread_started = true;
    return 0;
fail:
    sync_stop(t);
    return ret;
}

static int protect(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_err *err)
{
    sync_state *s = t->priv;
    int ret =
        lm_uffd_wp(s->uffd, t->ranges[r].host + first * t->page_size, count * t->page_size, true);
    if (ret < 0)
        return lm_err_set(err, ret, "UFFDIO_WRITEPROTECT failed: %s", strerror(-ret));
    return 0;
}

/* Which pages hold data: those populated before protecting (present or
 * swapped; protecting may mark empty entries, which then read as swapped),
 * plus those present after. A write in between is caught by the MISSING
 * or write-protect handler, so nothing is lost. */
static int sync_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                    lm_err *err)
{
    sync_state *s = t->priv;
    const uint8_t *host = t->ranges[r].host + first * t->page_size;
    uint64_t len = count * t->page_size;
    int ret = populated
                  ? lm_pagemap_pages(&s->pm, host, len, LM_PM_PRESENT | LM_PM_SWAPPED, populated)
                  : 0;
    if (ret == 0)
        ret = protect(t, r, first, count, err);
    else
        return lm_err_set(err, ret, "pagemap read failed: %s", strerror(-ret));
    if (ret == 0 && populated &&
        (ret = lm_pagemap_pages(&s->pm, host, len, LM_PM_PRESENT, populated)) < 0)
        return lm_err_set(err, ret, "pagemap read failed: %s", strerror(-ret));
    return ret;
}

/* Bits of word i that lie inside [first, first+count). */
static lm_word range_mask(uint64_t i, uint64_t first, uint64_t count)
{
    uint64_t lo = i * LM_BITS_PER_WORD, hi = lo + LM_BITS_PER_WORD, end = first + count;
    lm_word m = ~(lm_word)0;
    if (first > lo)
        m &= ~(lm_word)0 << (first - lo);
    if (end < hi)
        m &= ~(lm_word)0 >> (hi - end);
    return m;
}

static int sync_sync_locked(lm_tracker *t, unsigned r, uint64_t first, uint64_t count,
                            lm_word *dirty, bool rearm, lm_err *err)
{
    sync_state *s = t->priv;
    uint64_t run_start = 0, run_len = 0;
    if (!count)
        return 0;

    for (uint64_t i = first / LM_BITS_PER_WORD; i <= (first + count - 1) / LM_BITS_PER_WORD; i++) {
        lm_word m = range_mask(i, first, count);
        /* A read leaves the live bits (and the pages unprotected) for the
         * re-arm that follows; a re-arm takes them. */
        lm_word w = rearm ? __atomic_fetch_and(&s->live[r][i], ~m, __ATOMIC_SEQ_CST) & m
                          : __atomic_load_n(&s->live[r][i], __ATOMIC_SEQ_CST) & m;
        if (!w)
            continue;
        dirty[i] |= w;
        if (!rearm)
            continue;
        /* Re-protect the taken pages, one ioctl per run of adjacent pages. */
        for (unsigned b = 0; b < LM_BITS_PER_WORD; b++) {
            uint64_t page = i * LM_BITS_PER_WORD + b;
            if ((w >> b) & 1) {
                if (run_len && run_start + run_len == page) {
                    run_len++;
                    continue;
                }
                if (run_len) {
                    int ret = protect(t, r, run_start, run_len, err);
                    if (ret < 0)
                        return ret;
                }
                run_start = page;
                run_len = 1;
            }
        }
    }
    return run_len ? protect(t, r, run_start, run_len, err) : 0;
}

static int sync_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                     bool rearm, lm_err *err)
{
    sync_state *s = t->priv;
    pthread_mutex_lock(&s->lock);
    int ret = sync_sync_locked(t, r, first, count, dirty, rearm, err);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static void sync_stop(lm_tracker *t)
{
    sync_state *s = t->priv;
    if (!s)
        return;
    if (s->uffd >= 0) {
        /* Unprotecting and unregistering wakes any writer still blocked. */
        for (unsigned i = 0; i < t->nranges; i++) {
            lm_uffd_wp(s->uffd, t->ranges[i].host, t->ranges[i].len, false);
            lm_uffd_unregister(s->uffd, t->ranges[i].host, t->ranges[i].len);
        }
    }
    if (s->thread_started) {
        uint64_t one = 1;
        if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
            abort(); /* an eventfd write of 1 cannot fail */
        pthread_join(s->thread, NULL);
    }
    if (s->uffd >= 0)
        close(s->uffd);
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    for (unsigned i = 0; i < t->nranges; i++)
        lm_bitmap_free(s->live[i]);
    if (s->zero_page)
        munmap(s->zero_page, t->page_size);
    lm_pagemap_close(&s->pm);
    pthread_mutex_destroy(&s->lock);
    free(s);
    t->priv = NULL;
}

const lm_tracker_ops lm_tracker_uffd_sync_ops = {
    .name = "uffd-sync",
    .probe = sync_probe,
    .start = sync_start,
    .arm = sync_arm,
    .sync = sync_sync,
    .stop = sync_stop,
};
