/*
 * The KVM guest: livemig as a minimal VMM (docs/KVM-GUEST.md). It creates
 * a VM over guest RAM (one KVM memory slot per GiB of each RAM block), one
 * vCPU per workload thread, and runs a small 64-bit CPL3 program
 * (kvm_program.S) that implements the workloads. Its vCPU registers are its
 * device state; the destination continues from the exact instruction and
 * checks that the guest's pages and pass counters continued (continuity).
 *
 * The same lm_guest_ops contract as the thread guest (guest.h): stop kicks
 * every vCPU out of KVM_RUN at once, resume restarts them.
 */
#ifndef LM_GUEST_KVM_GUEST_H
#define LM_GUEST_KVM_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "guest/guest.h"
#include "livemig.h"

#define LM_KVM_MAX_VCPUS 64
#define LM_KVM_MAX_SLOTS 512
#define LM_KVM_SLOT_MAX  (1ull << 30) /* bytes of one memory slot */

/* One KVM memory slot: a piece of a RAM block at a guest-physical address.
 * What a KVM dirty tracker needs (KVM_GET_DIRTY_LOG per slot). */
typedef struct lm_kvm_memslot {
    uint32_t slot;     /* KVM's slot number */
    uint32_t block_id; /* the lm_ram_block_add() id it belongs to */
    uint64_t block_offset;
    uint64_t gpa;
    void *host;
    uint64_t len;
} lm_kvm_memslot;

typedef struct lm_kvm_guest lm_kvm_guest;

/* Can this kernel run the guest? Runs a tiny VM to its first exit. 0, or
 * -errno with a sentence in why (no /dev/kvm, or it refused the guest). */
int lm_kvm_probe(char *why, size_t whylen);

/* Does this workload run on the KVM guest in ram_len bytes? 0 or -EINVAL. */
int lm_kvm_workload_check(const lm_workload *w, uint64_t ram_len, char *why, size_t whylen);

/* Source: a VM over the one RAM block (id 0) at host, running w, started.
 * dirty_ring: entries of each vCPU's KVM dirty ring, enabled before the
 * vCPUs exist (for --dirty-tracker kvm-ring; a power of two, at least 256),
 * or 0 for none. NULL with why on failure. */
lm_kvm_guest *lm_kvm_guest_create(void *host, uint64_t len, const lm_workload *w, uint64_t seed,
                                  uint32_t dirty_ring, char *why, size_t whylen);
/* Destination: an empty guest; load_state creates the VM over the RAM
 * blocks registered in ctx (or allocated by lm_incoming) and its vCPUs. */
lm_kvm_guest *lm_kvm_guest_new_empty(lm_ctx *ctx);
void lm_kvm_guest_destroy(lm_kvm_guest *g);

/* Callbacks for lm_set_guest_ops(); opaque is the lm_kvm_guest. */
extern const lm_guest_ops lm_kvm_guest_callbacks;

/* Testing aid (destination): before the check at load, set page `page`
 * of vCPU 0's region back one pass, as a lost page would leave it. */
void lm_kvm_guest_x_damage(lm_kvm_guest *g, uint64_t page);

/* Why load_state failed, in a sentence; NULL when it did not. */
const char *lm_kvm_guest_error(const lm_kvm_guest *g);

/* For a KVM dirty tracker: the VM (-1 before it exists) and its slots. */
int lm_kvm_guest_vm_fd(const lm_kvm_guest *g);
unsigned lm_kvm_guest_slots(const lm_kvm_guest *g, const lm_kvm_memslot **slots);
/* Hands the VM and its slots to the library (lm_kvm_attach), so that
 * --dirty-tracker kvm-log can use KVM's own dirty log, and the vCPUs' dirty
 * rings when it has them (lm_kvm_attach_rings, for kvm-ring); call it after
 * the RAM blocks are registered. 0 or -errno (lm_last_error says why). */
int lm_kvm_guest_attach(const lm_kvm_guest *g, lm_ctx *ctx);

/* "kvm" or "thread" for a device-state blob of either guest, NULL for
 * neither: the destination refuses a mismatch by name. */
const char *lm_guest_state_kind(const void *buf, size_t len);

/* Passes completed by all vCPUs (their r8), and exits taken. */
uint64_t lm_kvm_guest_progress(lm_kvm_guest *g);
uint64_t lm_kvm_guest_exits(lm_kvm_guest *g);
/* KVM_EXIT_DIRTY_RING_FULL exits taken by all vCPUs. */
uint64_t lm_kvm_guest_ring_full_exits(lm_kvm_guest *g);
/* Progress when the guest last resumed (on the destination: the source's). */
uint64_t lm_kvm_guest_resumed_progress(const lm_kvm_guest *g);
unsigned lm_kvm_guest_vcpus(const lm_kvm_guest *g);

/* Stats windows (as the thread guest's): a baseline of len_ns from now,
 * then tracking start; the report gives each vCPU's longest gap between
 * two exits in each, and the host steal the caller measured (ms, < 0
 * unknown). */
void lm_kvm_guest_start_windows(lm_kvm_guest *g, uint64_t len_ns);
void lm_kvm_guest_window_steal(lm_kvm_guest *g, int w, double steal_ms);

/* The continuity check over the stopped guest's RAM and registers (and,
 * on the destination, against the pass counters the source stopped at).
 * Also fails when a vCPU's own check found a page out of step. true when
 * it holds; why says what broke. */
bool lm_kvm_guest_check(lm_kvm_guest *g, char *why, size_t whylen);
/* The result of the last check (false when none ran). */
bool lm_kvm_guest_continuity(const lm_kvm_guest *g, const char **why);

/* The "guest" object of the JSON report (no trailing newline; malloc()ed,
 * NULL when out of memory); progress counts from progress_start. */
char *lm_kvm_guest_report_json(lm_kvm_guest *g, uint64_t progress_start);
/* One human line. */
void lm_kvm_guest_report_print(lm_kvm_guest *g, uint64_t progress_start, const char *phase,
                               FILE *out);

#endif
