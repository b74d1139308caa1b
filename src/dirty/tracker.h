/*
 * Dirty tracking on the source: which guest pages were written since the
 * last sync. A backend is a table of operations (lm_tracker_ops); the engine
 * only calls the lm_tracker_* wrappers.
 *
 * Life cycle, all from the migration thread:
 *   create -> (arm chunk)* -> (sync chunk or block)* -> destroy
 * A page is tracked from the moment its chunk is armed. The first pass arms
 * each chunk just before sending it, so the guest never meets a protected
 * range larger than one chunk, and tracking costs nothing before it matters.
 */
#ifndef LM_DIRTY_TRACKER_H
#define LM_DIRTY_TRACKER_H

#include <stdbool.h>
#include <stdint.h>

#include "livemig.h"
#include "util/bitmap.h"
#include "util/error.h"

typedef struct lm_track_range {
    uint8_t *host;
    uint64_t len;
    uint64_t npages;
} lm_track_range;

/*
 * What the KVM backends need: the VM and which KVM memory slot maps which
 * pages of which range (the embedder's lm_kvm_attach, converted by the
 * engine). Other backends ignore it.
 */
typedef struct lm_track_kvm_slot {
    uint32_t slot;       /* KVM slot id, as given to KVM_SET_USER_MEMORY_REGION */
    uint32_t flags;      /* the VMM's flags, without KVM_MEM_LOG_DIRTY_PAGES */
    unsigned range;      /* index into the tracker's ranges */
    uint64_t first;      /* first page of the range it maps */
    uint64_t npages;     /* pages it maps */
    uint64_t guest_phys; /* its guest-physical address */
} lm_track_kvm_slot;

typedef struct lm_track_kvm {
    int vm_fd; /* -1: no VM attached */
    unsigned nslots;
    const lm_track_kvm_slot *slots; /* the backend copies what it keeps */
    /* kvm-ring: each vCPU's mmapped dirty ring (struct kvm_dirty_gfn[]),
     * ring_entries entries each (a power of two); nrings 0: none. The
     * pointer array is the backend's to copy; the rings stay mapped. */
    unsigned nrings;
    void *const *rings;
    uint32_t ring_entries;
} lm_track_kvm;

typedef struct lm_tracker lm_tracker;

typedef struct lm_tracker_ops {
    const char *name;
    /* Arming leaves the page tables as the pagemap reads them (no uffd-wp
     * markers): the digest may run while tracking is still armed, and
     * stop() (whose cost follows the populated pages: hundreds of ms
     * for a GiB on this PVM host) can wait until the switchover is over. */
    bool pagemap_clean;
    /* Does this kernel support the backend? 0, or -errno with a message that
     * names the missing feature. Must not change any state. */
    int (*probe)(lm_err *err);
    /* Set up t->priv and register every range; nothing is tracked yet. */
    int (*start)(lm_tracker *t, lm_err *err);
    /* Begin tracking pages [first, first+count) of range r. When populated
     * is not NULL (bits relative to first, cleared by the caller) it gets
     * every page that held data (present or swapped) when it was armed; a
     * page left out was empty then, and a later write to it is reported by
     * a sync. */
    int (*arm)(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
               lm_err *err);
    /* ORs into 'dirty' (bits relative to the start of range r) every page of
     * [first, first+count) written since it was armed or last re-armed.
     * With rearm, those pages are protected again in the same atomic step
     * per page: a write that completed before the sync started is reported
     * by it (or, if it overlapped an earlier sync, by that one). Without
     * rearm the pages are only read and stay reported: a later sync of the
     * same pages reports them again. That is how a round is chunked: one
     * read of everything to size the round, then each chunk re-armed just
     * before it is sent; and how the final sync (guest stopped) reads. */
    int (*sync)(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                bool rearm, lm_err *err);
    /* Unprotect and unregister everything, free t->priv. Never fails: a
     * guest must keep running whatever happened to the migration. */
    void (*stop)(lm_tracker *t);
} lm_tracker_ops;

struct lm_tracker {
    const lm_tracker_ops *ops;
    unsigned nranges;
    lm_track_range ranges[LM_MAX_BLOCKS];
    lm_track_kvm kvm; /* valid during start only (vm_fd -1 when none) */
    uint64_t page_size;
    void *priv;
};

extern const lm_tracker_ops lm_tracker_uffd_async_ops;
extern const lm_tracker_ops lm_tracker_uffd_sync_ops;
extern const lm_tracker_ops lm_tracker_kvm_log_ops;
extern const lm_tracker_ops lm_tracker_kvm_ring_ops;
extern const lm_tracker_ops lm_tracker_external_ops;

/* Picks the backend for 'kind' (AUTO: the best userfaultfd backend this
 * kernel supports; KVM backends only when asked for by name). kvm may be
 * NULL (no VM attached). */
int lm_tracker_create(lm_tracker_kind kind, const lm_track_range *ranges, unsigned n,
                      const lm_track_kvm *kvm, lm_tracker **out, lm_err *err);
/* A tracker with these operations; priv, when not NULL, is theirs from
 * before start (lm_tracker_create passes NULL: start sets it). */
int lm_tracker_create_ops(const lm_tracker_ops *ops, void *priv, const lm_track_range *ranges,
                          unsigned n, const lm_track_kvm *kvm, lm_tracker **out, lm_err *err);
/* LM_TRACKER_EXTERNAL: the embedder's operations (external.c) behind the
 * same wrappers. */
int lm_tracker_create_external(const lm_dirty_tracker_ops *ops, void *opaque,
                               const lm_track_range *ranges, unsigned n, lm_tracker **out,
                               lm_err *err);
int lm_tracker_arm(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *populated,
                   lm_err *err);
int lm_tracker_sync(lm_tracker *t, unsigned r, uint64_t first, uint64_t count, lm_word *dirty,
                    bool rearm, lm_err *err);
void lm_tracker_destroy(lm_tracker *t);
const char *lm_tracker_name(const lm_tracker *t);
bool lm_tracker_pagemap_clean(const lm_tracker *t);

#endif
