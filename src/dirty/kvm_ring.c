/*
 * kvm-ring: KVM's per-vCPU dirty ring as a tracker, for an embedder that
 * runs its guest on KVM, enabled the ring on its VM before creating the
 * vCPUs, and handed livemig the slots (lm_kvm_attach) and each vCPU's
 * mmapped ring (lm_kvm_attach_rings).
 *
 * With the ring, KVM pushes one entry (slot, page offset) per page the
 * first time the guest writes it after it was protected, and keeps no
 * bitmap: KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG fail with ENXIO, so
 * there is no manual protect and no way to protect a chunk at a time.
 * Turning KVM_MEM_LOG_DIRTY_PAGES on (start) write-protects every slot at
 * once (protect-all: the guest's next write to each page faults once).
 *
 * The migration thread harvests: every ring from its own fetch index, each
 * entry whose flags say dirty (load-acquire) mapped through the slots to
 * (range, page), marked reset (store-release); then one
 * KVM_RESET_DIRTY_RINGS re-protects the pages of the entries marked. A page
 * is handed over once per protection, so the harvested pages wait in a
 * private bitmap per range ('pending'): a sync ORs the pending bits of its
 * range into 'dirty', and with re-arm also clears them; without re-arm they
 * stay and a later sync reports them again. A write between a harvest and
 * the reset is not logged, but the page is pending and is read after the
 * sync that reports it; a write after the reset is logged again.
 *
 * Pending starts all set (unarmed pages count as dirty, as kvm-log's
 * initially-set bitmap); arming a chunk harvests, then clears the chunk's
 * bits. 'populated' comes from the VMM's mapping (PAGEMAP_SCAN), as for
 * kvm-log. A vCPU whose ring fills exits with KVM_EXIT_DIRTY_RING_FULL and
 * must wait for the next harvest (livemig.h, lm_kvm_attach_rings).
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

typedef struct kring {
    int vm_fd;
    unsigned nslots;
    lm_track_kvm_slot *slots; /* sorted by range, then first page */
    bool *logging;            /* KVM_MEM_LOG_DIRTY_PAGES set by us, per slot */
    int32_t *by_id;           /* KVM slot id -> index into slots, -1: not ours */
    uint32_t max_id;
    unsigned nrings;
    struct kvm_dirty_gfn **rings;
    uint32_t entries;
    uint32_t *fetch;                 /* per ring: the next entry to look at */
    bool *located;                   /* per ring: fetch is known */
    lm_word *pending[LM_MAX_BLOCKS]; /* per range: harvested, not yet re-armed */
    uint64_t foreign;                /* entries of slots not attached (ignored) */
    lm_pagemap pm;
} kring;

static int ring_supported(int fd, lm_err *err)
{
    int bytes =
        lm_sys_ioctl(fd, KVM_CHECK_EXTENSION, (void *)(uintptr_t)KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    if (bytes <= 0)
        bytes = lm_sys_ioctl(fd, KVM_CHECK_EXTENSION, (void *)(uintptr_t)KVM_CAP_DIRTY_LOG_RING);
    if (bytes < 0)
        return lm_err_set(err, -errno, "KVM_CHECK_EXTENSION failed: %s", strerror(errno));
    if (bytes == 0)
        return lm_err_set(err, -ENOTSUP,
                          "KVM lacks KVM_CAP_DIRTY_LOG_RING (Linux 5.11+): use --dirty-tracker "
                          "kvm-log or uffd-async");
    return 0;
}

static int kring_probe(lm_err *err)
{
    int fd = lm__kvm_dev_open("kvm-ring", err);
    if (fd < 0)
        return fd;
    int ret = ring_supported(fd, err);
    close(fd);
    return ret;
}

static bool is_dirty(const struct kvm_dirty_gfn *e)
{
    return __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY;
}

/* Where KVM's next entry is, for a ring an earlier tracker (or none) left:
 * KVM keeps its index to itself, and an empty ring does not tell. Once any
 * entry is dirty, the dirty entries run on from the ring's reset index: walk
 * back from one to the first (seeing an entry dirty, with acquire, means
 * every earlier one is visible as dirty too). False while the ring is
 * empty. */
static bool locate(kring *s, unsigned i)
{
    struct kvm_dirty_gfn *ring = s->rings[i];
    uint32_t mask = s->entries - 1;
    for (uint32_t j = 0; j < s->entries; j++) {
        if (!is_dirty(&ring[j]))
            continue;
        uint32_t back = 0;
        while (back < s->entries && is_dirty(&ring[(j - back - 1) & mask]))
            back++;
        s->fetch[i] = j - back;
        s->located[i] = true;
        return true;
    }
    return false;
}

/* One harvest of every ring, then one reset: the harvested pages are
 * pending and write-protected again. */
static int harvest(kring *s, lm_err *err)
{
    uint64_t taken = 0;
    for (unsigned i = 0; i < s->nrings; i++) {
        struct kvm_dirty_gfn *ring = s->rings[i];
        if (!s->located[i] && !locate(s, i))
            continue;
        for (uint32_t n = 0; n < s->entries; n++) {
            struct kvm_dirty_gfn *e = &ring[s->fetch[i] & (s->entries - 1)];
            if (!is_dirty(e))
                break;
            uint32_t as_id = e->slot >> 16, id = e->slot & 0xffff;
            int32_t k = as_id == 0 && id <= s->max_id ? s->by_id[id] : -1;
            if (k >= 0 && e->offset < s->slots[k].npages)
                lm_bit_set(s->pending[s->slots[k].range], s->slots[k].first + e->offset);
            else
                s->foreign++;
            __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
            s->fetch[i]++;
            taken++;
        }
    }
    if (taken && lm_sys_ioctl(s->vm_fd, KVM_RESET_DIRTY_RINGS, NULL) < 0)
        return lm_err_set(err, -errno, "KVM_RESET_DIRTY_RINGS failed: %s", strerror(errno));
    return 0;
}

static void kring_free(lm_tracker *t, kring *s)
{
    for (unsigned r = 0; r < t->nranges; r++)
        lm_bitmap_free(s->pending[r]);
    free(s->slots);
    free(s->logging);
    free(s->by_id);
    free(s->rings);
    free(s->fetch);
    free(s->located);
    lm_pagemap_close(&s->pm);
    free(s);
}

static void kring_stop(lm_tracker *t)
{
    kring *s = t->priv;
    if (!s)
        return;
    for (unsigned i = 0; i < s->nslots; i++)
        if (s->logging[i])
            lm__kvm_slot_logging(t, s->vm_fd, &s->slots[i], false);
    /* Empty the rings: a vCPU waiting for room runs again, and a later
     * migration starts from empty rings. */
    lm_err quiet;
    lm_err_init(&quiet);
    harvest(s, &quiet);
    kring_free(t, s);
    t->priv = NULL;
}

static int check_attached(const lm_tracker *t, lm_err *err)
{
    if (t->kvm.vm_fd < 0 || !t->kvm.nslots)
        return lm_err_set(err, -EINVAL,
                          "the kvm-ring tracker needs the guest's KVM VM: the VMM must call "
                          "lm_kvm_attach() first (or use --dirty-tracker uffd-async)");
    if (!t->kvm.nrings || !t->kvm.rings)
        return lm_err_set(err, -EINVAL,
                          "the kvm-ring tracker needs each vCPU's dirty ring: the VMM must enable "
                          "KVM_CAP_DIRTY_LOG_RING before creating its vCPUs and call "
                          "lm_kvm_attach_rings() (or use --dirty-tracker kvm-log)");
    uint32_t n = t->kvm.ring_entries;
    if (!n || (n & (n - 1)))
        return lm_err_set(err, -EINVAL, "kvm-ring: %u ring entries is not a power of two", n);
    return 0;
}

static int kring_start(lm_tracker *t, lm_err *err)
{
    int ret = check_attached(t, err);
    if (ret < 0)
        return ret;
    kring *s = calloc(1, sizeof(*s));
    if (!s)
        return lm_err_set(err, -ENOMEM, "out of memory for the kvm-ring tracker");
    s->vm_fd = t->kvm.vm_fd;
    s->pm.fd = -1;
    s->nslots = t->kvm.nslots;
    s->nrings = t->kvm.nrings;
    s->entries = t->kvm.ring_entries;
    if ((ret = lm__kvm_slots_sorted(t, &s->slots, err)) < 0)
        goto fail;
    for (unsigned i = 0; i < s->nslots; i++)
        s->max_id = s->slots[i].slot > s->max_id ? s->slots[i].slot : s->max_id;
    if (s->max_id > 0xffff) {
        ret = lm_err_set(err, -EINVAL, "kvm-ring: KVM slot id %u is above 65535", s->max_id);
        goto fail;
    }
    s->logging = calloc(s->nslots, sizeof(*s->logging));
    s->by_id = malloc((s->max_id + 1) * sizeof(*s->by_id));
    s->rings = malloc(s->nrings * sizeof(*s->rings));
    s->fetch = calloc(s->nrings, sizeof(*s->fetch));
    s->located = calloc(s->nrings, sizeof(*s->located));
    bool ok = s->logging && s->by_id && s->rings && s->fetch && s->located;
    for (unsigned r = 0; ok && r < t->nranges; r++)
        if ((ok = (s->pending[r] = lm_bitmap_new(t->ranges[r].npages)) != NULL))
            lm_bitmap_set_range(s->pending[r], 0, t->ranges[r].npages); /* not armed: dirty */
    if (!ok) {
        ret = lm_err_set(err, -ENOMEM, "out of memory for the kvm-ring tracker");
        goto fail;
    }
    for (uint32_t id = 0; id <= s->max_id; id++)
        s->by_id[id] = -1;
    for (unsigned i = 0; i < s->nslots; i++)
        s->by_id[s->slots[i].slot] = (int32_t)i;
    for (unsigned i = 0; i < s->nrings; i++)
        if (!(s->rings[i] = t->kvm.rings[i])) {
            ret = lm_err_set(err, -EINVAL, "kvm-ring: vCPU %u's ring is NULL", i);
            goto fail;
        }
    if ((ret = lm_pagemap_open(&s->pm)) < 0) {
        lm_err_set(err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
        goto fail;
    }
    if ((ret = ring_supported(s->vm_fd, err)) < 0)
        goto fail;
    /* Manual protect with initially-set bits would leave the slots
     * unprotected when logging starts, and the ring empty: make sure it is
     * off (kvm-log turns it off too when it stops). */
    struct kvm_enable_cap manual_off = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2};
    lm_sys_ioctl(s->vm_fd, KVM_ENABLE_CAP, &manual_off);
    t->priv = s;
    /* Entries left from an earlier migration: all pages are pending anyway. */
    if ((ret = harvest(s, err)) < 0) {
        kring_stop(t);
        return ret;
    }
    for (unsigned i = 0; i < s->nslots; i++) {
        if ((ret = lm__kvm_slot_logging(t, s->vm_fd, &s->slots[i], true)) < 0) {
            lm_err_set(err, ret,
                       "KVM_SET_USER_MEMORY_REGION (slot %u, turning on dirty logging) failed: "
                       "%s; are the slots given to lm_kvm_attach exactly those of the VM?",
                       s->slots[i].slot, strerror(-ret));
            kring_stop(t);
            return ret;
        }
        s->logging[i] = true;
    }
    return 0;
fail:
    kring_free(t, s);
    return ret;
}

static int kring_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                     lm_err *err)
{
    kring *s = t->priv;
    int ret = harvest(s, err);
    if (ret < 0)
        return ret;
    lm_bitmap_clear_range(s->pending[r], first, count);
    /* After the harvest: a page the guest populates from now on is logged. */
    return lm_pagemap_populated(&s->pm, t->ranges[r].host + first * t->page_size,
                                count * t->page_size, populated, err);
}

static int kring_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                      bool rearm, lm_err *err)
{
    kring *s = t->priv;
    int ret = harvest(s, err);
    if (ret < 0)
        return ret;
    lm_word *pend = s->pending[r];
    for (uint64_t p = lm_bitmap_next_set(pend, first + count, first); p < first + count;
         p = lm_bitmap_next_set(pend, first + count, p + 1)) {
        lm_bit_set(dirty, p);
        if (rearm)
            lm_bit_clear(pend, p);
    }
    return 0;
}

const lm_tracker_ops lm_tracker_kvm_ring_ops = {
    .name = "kvm-ring",
    .probe = kring_probe,
    .start = kring_start,
    .arm = kring_arm,
    .sync = kring_sync,
    .stop = kring_stop,
};
