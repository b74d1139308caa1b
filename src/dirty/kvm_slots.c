/*
 * The memory-slot helpers of the KVM trackers (kvm_slots.h).
 */
#include "dirty/kvm_slots.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>

#include "util/sys.h"

int lm__kvm_dev_open(const char *tracker, lm_err *err)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return lm_err_set(err, -errno,
                          "cannot open /dev/kvm (%s): the %s tracker needs KVM; use "
                          "--dirty-tracker uffd-async",
                          strerror(errno), tracker);
    return fd;
}

static int by_range(const void *a, const void *b)
{
    const lm_track_kvm_slot *x = a, *y = b;
    if (x->range != y->range)
        return x->range < y->range ? -1 : 1;
    return x->first < y->first ? -1 : x->first > y->first;
}

int lm__kvm_slots_sorted(const lm_tracker *t, lm_track_kvm_slot **out, lm_err *err)
{
    unsigned n = t->kvm.nslots;
    lm_track_kvm_slot *v = malloc((n ? n : 1) * sizeof(*v));
    if (!v)
        return lm_err_set(err, -ENOMEM, "out of memory for the KVM slots");
    memcpy(v, t->kvm.slots, n * sizeof(*v));
    qsort(v, n, sizeof(*v), by_range);
    unsigned i = 0;
    for (unsigned r = 0; r < t->nranges; r++) {
        uint64_t next = 0;
        for (; i < n && v[i].range == r; i++) {
            if (v[i].first != next)
                break;
            next = v[i].first + v[i].npages;
        }
        if (next != t->ranges[r].npages || (i < n && v[i].range == r)) {
            free(v);
            return lm_err_set(err, -EINVAL,
                              "RAM block #%u has pages from %llu on (of %llu) that no KVM slot "
                              "given to lm_kvm_attach maps one-to-one: KVM cannot track them; "
                              "attach slots that cover every block, or use --dirty-tracker "
                              "uffd-async",
                              r, (unsigned long long)next, (unsigned long long)t->ranges[r].npages);
        }
    }
    if (i < n) {
        unsigned r = v[i].range;
        free(v);
        return lm_err_set(err, -EINVAL, "a KVM slot maps RAM range %u, which is not tracked", r);
    }
    *out = v;
    return 0;
}

int lm__kvm_slot_logging(const lm_tracker *t, int vm_fd, const lm_track_kvm_slot *k, bool on)
{
    struct kvm_userspace_memory_region m = {.slot = k->slot,
                                            .flags = k->flags | (on ? KVM_MEM_LOG_DIRTY_PAGES : 0),
                                            .guest_phys_addr = k->guest_phys,
                                            .memory_size = k->npages * t->page_size,
                                            .userspace_addr = (uintptr_t)t->ranges[k->range].host +
                                                              k->first * t->page_size};
    return lm_sys_ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &m) < 0 ? -errno : 0;
}

bool lm__kvm_slot_part(const lm_track_kvm_slot *k, unsigned r, uint64_t first, uint64_t count,
                       uint64_t *a, uint64_t *b)
{
    if (k->range != r || k->first >= first + count || k->first + k->npages <= first)
        return false;
    *a = k->first > first ? 0 : first - k->first;
    *b = k->first + k->npages < first + count ? k->npages : first + count - k->first;
    return true;
}
