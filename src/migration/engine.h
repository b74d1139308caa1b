/*
 * The engine context shared by the source and destination code. Fields are
 * grouped by who owns them:
 *   - set up before a migration by the embedding thread (blocks, guest ops),
 *   - owned by the migration thread while it runs (everything else),
 *   - shared with other threads: 'cancel' and 'status_now' (atomic) and
 *     'stats' (stats_lock).
 */
#ifndef LM_MIGRATION_ENGINE_H
#define LM_MIGRATION_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>

#include "dirty/tracker.h"
#include "livemig.h"
#include "livemig_testing.h"
#include "ram/ram.h"
#include "util/error.h"

typedef struct lm_section {
    char name[LM_SECTION_NAME_MAX];
    uint32_t version;
    lm_section_ops ops;
    void *opaque;
} lm_section;

struct lm_ctx {
    /* Set up by the embedder before a migration. */
    lm_ram ram;
    lm_guest_ops gops;
    void *gopaque;
    /* lm_kvm_attach: the VM and its slots, by block id (vm_fd -1: none). */
    int kvm_fd;
    unsigned kvm_nslots;
    lm_kvm_slot *kvm_slots;
    /* lm_kvm_attach_rings: each vCPU's dirty ring (nrings 0: none). */
    unsigned kvm_nrings;
    void **kvm_rings;
    uint32_t kvm_ring_entries;

    /* Shared. */
    _Atomic int cancel;
    /* The last published stats.status (an lm_status), written by
     * lm__stats_reset()/lm__stats_publish(): lm_cancel() and
     * lm_status_current() read it without a lock, from signal handlers too. */
    _Atomic int status_now;
    _Atomic int postcopy_requested;
    /* lm_pause: cut the links (pause_requested, taken by the background
     * loop) and hold the reconnection (hold_reconnect) until lm_resume. */
    _Atomic int pause_requested;
    _Atomic int hold_reconnect;
    _Atomic uint64_t io_progress_ns; /* shared by the migration's connections */
    pthread_mutex_t stats_lock;
    lm_stats stats;
    /* lm_params_update: the live fields, and whether they were set since
     * the last migration began (live_lock); live_gen counts updates so
     * that the migration thread can notice one with an atomic load. */
    pthread_mutex_t live_lock;
    lm_params live;
    bool live_set;
    _Atomic unsigned live_gen;
    /* lm_set_event_callback; event_lock keeps the events in order. */
    void (*event_fn)(void *opaque, const lm_event *ev);
    void *event_opaque;
    pthread_mutex_t event_lock;

    /* lm_section_register: the device-state sections, in registration
     * order (the order the source saves them in). */
    lm_section sections[LM_MAX_SECTIONS];
    unsigned nsections;
    /* lm_set_dirty_tracker: the embedder's tracker (ext_tracker.sync NULL:
     * none). */
    lm_dirty_tracker_ops ext_tracker;
    void *ext_tracker_opaque;
    /* lm_testing_set: the testing aids (zero: none). */
    lm_testing testing;

    lm_err err;
};

/* At a migration's start: clears ctx->err, then takes the caller's
 * parameters (in->size bytes of them, checked) over the defaults into
 * *out, a full-size copy the library owns: 0, or -EINVAL with the reason
 * in ctx->err. NULL in: the defaults. */
int lm__params_import(lm_ctx *ctx, const lm_params *in, lm_params *out);

/* The attached KVM slots as the tracker wants them (range = block index);
 * *out is malloc()ed (NULL when nothing is attached). */
int lm__kvm_track_slots(lm_ctx *ctx, lm_track_kvm *kvm, lm_track_kvm_slot **out);
void lm__kvm_detach(lm_ctx *ctx);

/* How long a paused side waits for the other (lm_params.recover_timeout_ms). */
unsigned lm__recover_timeout_ms(const lm_params *p, bool postcopy);

/* A failure that is the link's (reset, closed, timed out), not the peer's
 * word or a bad stream: what a paused side may recover from. */
bool lm__link_lost(int ret);

/* The live fields of lm_params (lm_params_update) from src into dst. */
void lm__params_copy_live(lm_params *dst, const lm_params *src);
/* At a migration's start: a pending update goes over *p (and the live
 * copy starts from *p otherwise); *gen is the generation taken. */
void lm__params_begin(lm_ctx *ctx, lm_params *p, unsigned *gen);
/* During it: when an update came since *gen, takes it into *p; true if so. */
bool lm__params_refresh(lm_ctx *ctx, lm_params *p, unsigned *gen);
/* At its end: later updates are for the next migration. */
void lm__params_end(lm_ctx *ctx);

/* Called with stats_lock held by the helpers below. */
void lm__stats_reset(lm_ctx *ctx, lm_status status);
/* Publish a copy of the migration thread's working stats. Every state
 * change goes through one of these two; publishing a state where the
 * guest's memory is split (lm_status_guest_split) drops a cancel request
 * heard before the commit point but not acted on (lm_cancel()). */
void lm__stats_publish(lm_ctx *ctx, const lm_stats *working);

#endif
