/*
 * kvm-log: KVM's own dirty bitmap as a tracker, for an embedder that runs
 * its guest on KVM and attached the VM (lm_kvm_attach).
 *
 * Manual protect with initially-set bits (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
 * + KVM_DIRTY_LOG_INITIALLY_SET): turning logging on marks every page dirty
 * and write-protects nothing, so starting costs the guest no stall. Arming
 * a chunk is a KVM_CLEAR_DIRTY_LOG of just that chunk, which clears its
 * bits and write-protects its pages: the guest meets protection one chunk
 * at a time, as with the uffd trackers. A sync reads the slot's bitmap
 * (KVM_GET_DIRTY_LOG, which in manual mode only copies it) and, to re-arm,
 * clears exactly the pages it reported: KVM clears each word atomically
 * and protects only pages whose bit it took, so a write between the read
 * and the clear is either in the read (and the page is read after this
 * sync) or stays set for the next sync.
 *
 * KVM's log cannot tell which pages hold data, so 'populated' comes from
 * the VMM's mapping (PAGEMAP_SCAN), read after the clear: a page populated
 * by a guest write after that is logged. KVM sees only writes made through
 * KVM: writes the VMM makes to guest RAM itself are not reported (the
 * userfaultfd trackers see both; see lm_kvm_attach in livemig.h).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirty/kvm_slots.h"
#include "dirty/pagemap.h"
#include "dirty/tracker.h"
#include "util/sys.h"

#define MANUAL_MODE (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET)

typedef struct kslot {
    lm_track_kvm_slot k;
    uint64_t *bitmap; /* KVM_GET_DIRTY_LOG's copy: npages bits, whole words */
    bool logging;     /* KVM_MEM_LOG_DIRTY_PAGES set by us */
} kslot;

typedef struct klog {
    int vm_fd;
    unsigned nslots;
    kslot *slots;   /* sorted by range, then first page */
    uint64_t *mask; /* KVM_CLEAR_DIRTY_LOG's bitmap, as large as the largest slot */
    lm_pagemap pm;
} klog;

static int manual_supported(int fd, lm_err *err)
{
    int caps =
        lm_sys_ioctl(fd, KVM_CHECK_EXTENSION, (void *)(uintptr_t)KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (caps < 0)
        return lm_err_set(err, -errno, "KVM_CHECK_EXTENSION failed: %s", strerror(errno));
    if ((caps & MANUAL_MODE) != MANUAL_MODE)
        return lm_err_set(err, -ENOTSUP,
                          "KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with "
                          "KVM_DIRTY_LOG_INITIALLY_SET (Linux 5.8+): use --dirty-tracker "
                          "uffd-async");
    return 0;
}

static int klog_probe(lm_err *err)
{
    int fd = lm__kvm_dev_open("kvm-log", err);
    if (fd < 0)
        return fd;
    int ret = manual_supported(fd, err);
    close(fd);
    return ret;
}

static int set_logging(lm_tracker *t, klog *s, kslot *ks, bool on)
{
    int ret = lm__kvm_slot_logging(t, s->vm_fd, &ks->k, on);
    if (ret == 0)
        ks->logging = on;
    return ret;
}

static void klog_free(klog *s)
{
    for (unsigned i = 0; i < s->nslots; i++)
        free(s->slots[i].bitmap);
    free(s->slots);
    free(s->mask);
    lm_pagemap_close(&s->pm);
    free(s);
}

static void klog_stop(lm_tracker *t)
{
    klog *s = t->priv;
    if (!s)
        return;
    for (unsigned i = 0; i < s->nslots; i++)
        if (s->slots[i].logging)
            set_logging(t, s, &s->slots[i], false);
    struct kvm_enable_cap off = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2};
    lm_sys_ioctl(s->vm_fd, KVM_ENABLE_CAP, &off);
    klog_free(s);
    t->priv = NULL;
}

static int klog_start(lm_tracker *t, lm_err *err)
{
    if (t->kvm.vm_fd < 0 || !t->kvm.nslots)
        return lm_err_set(err, -EINVAL,
                          "the kvm-log tracker needs the guest's KVM VM: the VMM must call "
                          "lm_kvm_attach() first (or use --dirty-tracker uffd-async)");
    klog *s = calloc(1, sizeof(*s));
    if (!s || !(s->slots = calloc(t->kvm.nslots, sizeof(*s->slots)))) {
        free(s);
        return lm_err_set(err, -ENOMEM, "out of memory for the kvm-log tracker");
    }
    s->vm_fd = t->kvm.vm_fd;
    s->pm.fd = -1;
    s->nslots = t->kvm.nslots;
    lm_track_kvm_slot *sorted;
    int ret = lm__kvm_slots_sorted(t, &sorted, err);
    if (ret < 0)
        goto fail;
    uint64_t most = 0;
    for (unsigned i = 0; i < s->nslots; i++) {
        s->slots[i].k = sorted[i];
        most = sorted[i].npages > most ? sorted[i].npages : most;
    }
    free(sorted);
    for (unsigned i = 0; i < s->nslots; i++)
        if (!(s->slots[i].bitmap = calloc((s->slots[i].k.npages + 63) / 64, 8))) {
            ret = lm_err_set(err, -ENOMEM, "out of memory for KVM dirty bitmaps");
            goto fail;
        }
    if (!(s->mask = calloc((most + 63) / 64 + 1, 8))) {
        ret = lm_err_set(err, -ENOMEM, "out of memory for KVM dirty bitmaps");
        goto fail;
    }
    if ((ret = lm_pagemap_open(&s->pm)) < 0) {
        lm_err_set(err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
        goto fail;
    }
    if ((ret = manual_supported(s->vm_fd, err)) < 0)
        goto fail;
    /* Manual protect first: the slot's bitmap starts all set only if the
     * mode is on when logging is turned on. */
    struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {MANUAL_MODE}};
    if (lm_sys_ioctl(s->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
        ret = lm_err_set(err, -errno,
                         "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2) on the VM failed: %s",
                         strerror(errno));
        goto fail;
    }
    t->priv = s;
    for (unsigned i = 0; i < s->nslots; i++)
        if ((ret = set_logging(t, s, &s->slots[i], true)) < 0) {
            lm_err_set(err, ret,
                       "KVM_SET_USER_MEMORY_REGION (slot %u, turning on dirty logging) failed: "
                       "%s; are the slots given to lm_kvm_attach exactly those of the VM?",
                       s->slots[i].k.slot, strerror(-ret));
            klog_stop(t);
            return ret;
        }
    return 0;
fail:
    klog_free(s);
    return ret;
}

/* Clears the log of pages [a, b) of the slot (slot-relative), all of them,
 * or with 'only' just those set in it (a bitmap of the whole slot), and so
 * write-protects them. KVM wants first_page a multiple of 64 and a whole
 * number of words unless the range reaches the end of the slot; the mask
 * keeps pages outside [a, b) untouched. */
static int clear_pages(klog *s, kslot *ks, uint64_t a, uint64_t b, const uint64_t *only,
                       lm_err *err)
{
    uint64_t A = a & ~63ull, B = (b + 63) & ~63ull;
    if (B > ks->k.npages)
        B = ks->k.npages;
    uint64_t nwords = (B - A + 63) / 64, lo = a - A, hi = b - A;
    bool any = false;
    for (uint64_t w = 0; w < nwords; w++) {
        uint64_t m = only ? only[A / 64 + w] : ~0ull, wlo = w * 64;
        if (lo > wlo)
            m &= ~0ull << (lo - wlo);
        if (hi < wlo + 64)
            m &= hi > wlo ? ~0ull >> (64 - (hi - wlo)) : 0;
        s->mask[w] = m;
        any |= m != 0;
    }
    if (!any)
        return 0;
    struct kvm_clear_dirty_log c = {
        .slot = ks->k.slot, .num_pages = B - A, .first_page = A, .dirty_bitmap = s->mask};
    if (lm_sys_ioctl(s->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
        return lm_err_set(err, -errno, "KVM_CLEAR_DIRTY_LOG (slot %u, pages %llu-%llu) failed: %s",
                          ks->k.slot, (unsigned long long)A, (unsigned long long)B,
                          strerror(errno));
    return 0;
}

static int klog_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                    lm_err *err)
{
    klog *s = t->priv;
    uint64_t a, b;
    for (kslot *ks = s->slots; ks < s->slots + s->nslots; ks++) {
        if (!lm__kvm_slot_part(&ks->k, r, first, count, &a, &b))
            continue;
        int ret = clear_pages(s, ks, a, b, NULL, err);
        if (ret < 0)
            return ret;
    }
    /* After the clear: a page the guest populates from now on is logged. */
    return lm_pagemap_populated(&s->pm, t->ranges[r].host + first * t->page_size,
                                count * t->page_size, populated, err);
}

static int klog_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                     bool rearm, lm_err *err)
{
    klog *s = t->priv;
    uint64_t a, b;
    for (kslot *ks = s->slots; ks < s->slots + s->nslots; ks++) {
        if (!lm__kvm_slot_part(&ks->k, r, first, count, &a, &b))
            continue;
        struct kvm_dirty_log g = {.slot = ks->k.slot, .dirty_bitmap = ks->bitmap};
        if (lm_sys_ioctl(s->vm_fd, KVM_GET_DIRTY_LOG, &g) < 0)
            return lm_err_set(err, -errno, "KVM_GET_DIRTY_LOG (slot %u) failed: %s", ks->k.slot,
                              strerror(errno));
        for (uint64_t w = a / 64; w * 64 < b; w++) {
            uint64_t bits = ks->bitmap[w];
            while (bits) {
                uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
                bits &= bits - 1;
                if (p >= a && p < b)
                    lm_bit_set(dirty, ks->k.first + p);
            }
        }
        if (rearm) {
            int ret = clear_pages(s, ks, a, b, ks->bitmap, err);
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

const lm_tracker_ops lm_tracker_kvm_log_ops = {
    .name = "kvm-log",
    .probe = klog_probe,
    .start = klog_start,
    .arm = klog_arm,
    .sync = klog_sync,
    .stop = klog_stop,
};
