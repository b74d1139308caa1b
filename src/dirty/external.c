/*
 * LM_TRACKER_EXTERNAL: the embedder's dirty tracker (lm_set_dirty_tracker)
 * behind lm_tracker_ops. Its arm and sync map one to one onto the
 * embedder's; which pages held data when armed comes from the pagemap, as
 * for the KVM trackers, since the embedder's tracker cannot know.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dirty/pagemap.h"
#include "dirty/tracker.h"

typedef struct external {
    lm_dirty_tracker_ops ops;
    void *opaque;
    lm_pagemap pm;
} external;

static int ext_probe(lm_err *err)
{
    (void)err;
    return 0;
}

static int ext_start(lm_tracker *t, lm_err *err)
{
    external *x = t->priv;
    int ret = lm_pagemap_open(&x->pm);
    if (ret < 0)
        return lm_err_set(err, ret, "opening /proc/self/pagemap failed: %s", strerror(-ret));
    if (x->ops.start && (ret = x->ops.start(x->opaque)) < 0) {
        lm_pagemap_close(&x->pm);
        return lm_err_set(err, ret, "the embedder's dirty tracker did not start: %s",
                          strerror(-ret));
    }
    return 0;
}

static int ext_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                   lm_err *err)
{
    external *x = t->priv;
    int ret = x->ops.arm(x->opaque, r, first, count);
    if (ret < 0)
        return lm_err_set(
            err, ret, "the embedder's dirty tracker could not arm block %u pages %llu-%llu: %s", r,
            (unsigned long long)first, (unsigned long long)(first + count), strerror(-ret));
    /* After arming: a page populated from now on is reported by a sync. */
    return lm_pagemap_populated(&x->pm, t->ranges[r].host + first * t->page_size,
                                count * t->page_size, populated, err);
}

static int ext_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                    bool rearm, lm_err *err)
{
    external *x = t->priv;
    int ret = x->ops.sync(x->opaque, r, first, count, dirty, rearm);
    if (ret < 0)
        return lm_err_set(err, ret, "the embedder's dirty tracker failed to sync block %u: %s", r,
                          strerror(-ret));
    return 0;
}

static void ext_stop(lm_tracker *t)
{
    external *x = t->priv;
    if (x->ops.stop)
        x->ops.stop(x->opaque);
    lm_pagemap_close(&x->pm);
    free(x);
    t->priv = NULL;
}

const lm_tracker_ops lm_tracker_external_ops = {
    .name = "external",
    .probe = ext_probe,
    .start = ext_start,
    .arm = ext_arm,
    .sync = ext_sync,
    .stop = ext_stop,
};

int lm_tracker_create_external(const lm_dirty_tracker_ops *ops, void *opaque,
                               const lm_track_range *ranges, unsigned n, lm_tracker **out,
                               lm_err *err)
{
    external *x = calloc(1, sizeof(*x));
    if (!x)
        return lm_err_set(err, -ENOMEM, "out of memory for the dirty tracker");
    x->ops = *ops;
    x->opaque = opaque;
    x->pm.fd = -1;
    int ret = lm_tracker_create_ops(&lm_tracker_external_ops, x, ranges, n, NULL, out, err);
    if (ret < 0)
        free(x);
    return ret;
}
