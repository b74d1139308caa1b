/*
 * What the KVM trackers (kvm-log, kvm-ring) share: the attached memory
 * slots, sorted and checked to cover every tracked range exactly once, the
 * part of a chunk a slot maps, and turning KVM's dirty logging on and off
 * per slot (KVM_MEM_LOG_DIRTY_PAGES).
 */
#ifndef LM_DIRTY_KVM_SLOTS_H
#define LM_DIRTY_KVM_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#include "dirty/tracker.h"

/* Opens /dev/kvm for a probe; -errno with a sentence naming 'tracker'. */
int lm__kvm_dev_open(const char *tracker, lm_err *err);

/* t->kvm.slots copied into a malloc()ed array (*out), sorted by range then
 * first page, checked to map every page of every range once. */
int lm__kvm_slots_sorted(const lm_tracker *t, lm_track_kvm_slot **out, lm_err *err);

/* Re-sets slot k with its own flags, plus KVM_MEM_LOG_DIRTY_PAGES when on.
 * 0 or -errno. */
int lm__kvm_slot_logging(const lm_tracker *t, int vm_fd, const lm_track_kvm_slot *k, bool on);

/* Does slot k map part of pages [first, first+count) of range r? Then
 * [*a, *b) is that part, in slot-relative pages. */
bool lm__kvm_slot_part(const lm_track_kvm_slot *k, unsigned r, uint64_t first, uint64_t count,
                       uint64_t *a, uint64_t *b);

#endif
