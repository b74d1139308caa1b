#include "dirty/tracker.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* Indexed by lm_tracker_kind. AUTO tries only the userfaultfd backends: they
 * see every write, the VMM's own included, which KVM's log and ring do not. */
static const lm_tracker_ops *const tracker_table[] = {
    [LM_TRACKER_UFFD_ASYNC] = &lm_tracker_uffd_async_ops,
    [LM_TRACKER_UFFD_SYNC] = &lm_tracker_uffd_sync_ops,
    [LM_TRACKER_KVM_LOG] = &lm_tracker_kvm_log_ops,
    [LM_TRACKER_KVM_RING] = &lm_tracker_kvm_ring_ops,
};

static const lm_tracker_ops *choose(lm_tracker_kind kind, lm_err *err)
{
    if (kind != LM_TRACKER_AUTO) {
        if ((unsigned)kind >= sizeof(tracker_table) / sizeof(tracker_table[0]) ||
            !tracker_table[kind]) {
            lm_err_set(err, -EINVAL, "unknown dirty tracker %d", (int)kind);
            return NULL;
        }
        return tracker_table[kind]->probe(err) == 0 ? tracker_table[kind] : NULL;
    }
    /* AUTO: the first backend that probes fine; keep only the last error. */
    lm_err quiet;
    lm_err_init(&quiet);
    if (lm_tracker_uffd_async_ops.probe(&quiet) == 0)
        return &lm_tracker_uffd_async_ops;
    lm_err_reset(&quiet);
    if (lm_tracker_uffd_sync_ops.probe(&quiet) == 0)
        return &lm_tracker_uffd_sync_ops;
    lm_err_set(err, quiet.code, "no dirty tracker works on this kernel: %s", quiet.msg);
    return NULL;
}

int lm_tracker_create(lm_tracker_kind kind, const lm_track_range *ranges, unsigned n,
                      const lm_track_kvm *kvm, lm_tracker **out, lm_err *err)
{
    if (kind == LM_TRACKER_EXTERNAL)
        return lm_err_set(err, -EINVAL,
                          "the external dirty tracker needs lm_set_dirty_tracker() first");
    const lm_tracker_ops *ops = choose(kind, err);
    if (!ops)
        return err->code ? err->code : -ENOTSUP;
    return lm_tracker_create_ops(ops, NULL, ranges, n, kvm, out, err);
}

int lm_tracker_create_ops(const lm_tracker_ops *ops, void *priv, const lm_track_range *ranges,
                          unsigned n, const lm_track_kvm *kvm, lm_tracker **out, lm_err *err)
{
    if (n > LM_MAX_BLOCKS)
        return lm_err_set(err, -E2BIG, "too many ranges to track (%u)", n);
    lm_tracker *t = calloc(1, sizeof(*t));
    if (!t)
        return lm_err_set(err, -ENOMEM, "out of memory for the dirty tracker");
    t->ops = ops;
    t->priv = priv;
    t->nranges = n;
    t->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    for (unsigned i = 0; i < n; i++)
        t->ranges[i] = ranges[i];
    t->kvm = kvm ? *kvm : (lm_track_kvm){.vm_fd = -1};
    int ret = ops->start(t, err);
    t->kvm = (lm_track_kvm){.vm_fd = -1};
    if (ret < 0) {
        free(t);
        return ret;
    }
    *out = t;
    return 0;
}

int lm_tracker_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                   lm_err *err)
{
    if (r >= t->nranges || first > t->ranges[r].npages || count > t->ranges[r].npages - first)
        return lm_err_set(err, -EINVAL, "arm outside tracked range %u", r);
    return t->ops->arm(t, r, first, count, populated, err);
}

int lm_tracker_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                    bool rearm, lm_err *err)
{
    if (r >= t->nranges || first > t->ranges[r].npages || count > t->ranges[r].npages - first)
        return lm_err_set(err, -EINVAL, "sync outside tracked range %u", r);
    return t->ops->sync(t, r, first, count, dirty, rearm, err);
}

void lm_tracker_destroy(lm_tracker *t)
{
    if (!t)
        return;
    t->ops->stop(t);
    free(t);
}

bool lm_tracker_pagemap_clean(const lm_tracker *t)
{
    return t && t->ops->pagemap_clean;
}

const char *lm_tracker_name(const lm_tracker *t)
{
    return t->ops->name;
}
