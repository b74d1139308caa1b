/*
 * Inside the KVM guest backend (docs/KVM-GUEST.md): the structures that
 * kvm_vm.c (the VM, memory slots, page tables, vCPU registers),
 * kvm_vcpu.c (vCPU threads, exits, kick and park) and kvm_guest.c (the
 * lm_guest_ops, device state, continuity) share. The CLI sees only
 * kvm_guest.h.
 *
 * Guest-physical layout (identity-mapped with 2 MiB user pages):
 *   0x1000 PML4, 0x2000 PDPT, 0x10000 the program (kvm_program.S),
 *   0x20000 + i * 4 KiB vCPU i's parameter page (its stack at the top),
 *   0x100000 the page directories (4 KiB per GiB), 0x400000 the workload
 *   regions. Everything lives in guest RAM and migrates with it.
 */
#ifndef LM_GUEST_KVM_VM_H
#define LM_GUEST_KVM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "guest/guest.h"
#include "guest/kvm_guest.h"

#define LM_KVM_PML4_GPA   0x1000ull
#define LM_KVM_PDPT_GPA   0x2000ull
#define LM_KVM_PROG_GPA   0x10000ull
#define LM_KVM_PARAMS_GPA 0x20000ull
#define LM_KVM_PD_GPA     0x100000ull
#define LM_KVM_DATA_GPA   0x400000ull
#define LM_KVM_MAX_GPA    (512ull << 30) /* one PDPT */
#define LM_KVM_PAGE       4096ull

/* The parameter page of one vCPU (offsets as kvm_program.S reads them). */
enum {
    LM_KVM_P_KIND = 0,
    LM_KVM_P_BASE = 8,
    LM_KVM_P_PAGES = 16,
    LM_KVM_P_BATCH = 24,
    LM_KVM_P_PASS = 32,
    LM_KVM_P_TAG = 40,
};
enum { LM_KVM_KIND_IDLE = 0, LM_KVM_KIND_STRESS = 1, LM_KVM_KIND_RAND = 2 };

/* Ports of the program's OUT instructions. */
#define LM_KVM_PORT_PASS   0x10
#define LM_KVM_PORT_BROKEN 0x11

/* Offsets into the program (lm_kvm_prog_offsets in kvm_program.S). */
enum {
    LM_KVM_OFF_STRESS_PAGE,
    LM_KVM_OFF_STRESS_DONE,
    LM_KVM_OFF_STRESS_AFTER_INC,
    LM_KVM_OFF_IDLE_AFTER_INC,
    LM_KVM_OFF_RAND_AFTER_INC,
    LM_KVM_OFF_BROKEN,
    LM_KVM_OFF__COUNT
};
extern const uint8_t lm_kvm_prog_start[], lm_kvm_prog_end[];
extern const uint64_t lm_kvm_prog_offsets[LM_KVM_OFF__COUNT];

typedef struct lm_kvm_vcpu {
    struct lm_kvm_guest *g;
    unsigned index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    /* Set by the vCPU thread, read by anyone. */
    _Atomic uint64_t exits;
    _Atomic bool broken;        /* the program's self-check failed (port 0x11) */
    _Atomic uint64_t ring_full; /* KVM_EXIT_DIRTY_RING_FULL exits taken */
    struct kvm_dirty_gfn *ring; /* its dirty ring, mmapped (NULL: no ring) */
    bool dead;                  /* stopped for good: broken, or KVM refused to run it */
    char why[160];              /* what stopped it, when dead */
    /* Registers: set by the thread when it starts, taken when it parks. */
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    /* Pacing, the vCPU thread's own. */
    uint64_t slice_start_ns;
    double tokens;
    uint64_t tokens_ns;
    uint64_t next_ns; /* random: when the next batch is due */
    /* The longest time between two exits (whole run, then each window of
     * lm_kvm_guest_start_windows): the vCPU's stalls, as the VMM sees them. */
    uint64_t last_exit_ns;
    _Atomic uint64_t max_gap_ns[1 + LM_WIN__COUNT];
} lm_kvm_vcpu;

struct lm_kvm_guest {
    /* Fixed once the VM exists. */
    int kvm_fd, vm_fd;
    size_t run_size;
    uint32_t ring_entries; /* each vCPU's dirty ring (0: none; source, kvm-ring) */
    bool ring_acq_rel;     /* enabled as KVM_CAP_DIRTY_LOG_RING_ACQ_REL */
    unsigned nslots;
    lm_kvm_memslot slots[LM_KVM_MAX_SLOTS];
    uint64_t ram_len; /* guest-physical bytes: the blocks end to end */
    lm_workload wl;
    uint64_t seed;
    unsigned nvcpus;
    lm_kvm_vcpu vcpus[LM_KVM_MAX_VCPUS];
    uint64_t region_base[LM_KVM_MAX_VCPUS], region_pages[LM_KVM_MAX_VCPUS];
    uint64_t batch; /* random, hot: pages a vCPU writes between two exits */
    lm_ctx *ctx;    /* destination: where load_state finds the RAM blocks */
    /* Run control: pause is read by vCPU threads; parking goes through
     * lock/cond; stop sets each kvm_run's immediate_exit and kicks. */
    _Atomic int pause;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned parked;
    bool quit;
    _Atomic unsigned throttle_pct;
    _Atomic uint64_t dirty_limit;
    _Atomic uint64_t win_ns[LM_WIN__COUNT + 1]; /* window w: [win_ns[w], win_ns[w + 1]) */
    double win_steal_ms[LM_WIN__COUNT];         /* host steal in each window, < 0 unknown */
    /* Progress and the continuity check. */
    uint64_t progress_at_resume;
    uint64_t exits_at_resume;
    uint64_t resumed_ns, stopped_ns;
    uint64_t source_passes[LM_KVM_MAX_VCPUS]; /* destination: as the source stopped */
    bool have_source_passes;
    bool continuity_checked, continuity_ok;
    double load_check_ms; /* destination: the check in load_state (in the downtime) */
    char continuity_why[256];
    char error[320];        /* why load_state failed */
    uint64_t x_damage_page; /* testing aid: 1 + the page to set back at load, 0: none */
};

/* kvm_guest.c: a device state's header, checked before anything acts on
 * it (the vCPU records that follow are only copied). 0, or -EPROTOTYPE (a
 * thread guest's state) / -EBADMSG, with *why a sentence. */
typedef struct lm_kvm_state_hdr {
    uint32_t nvcpus;
    lm_workload wl;
    uint64_t ram_len, seed;
} lm_kvm_state_hdr;
int lm__kvm_state_parse(const void *buf, size_t len, lm_kvm_state_hdr *h, const char **why);

/* kvm_vm.c */
void *lm__kvm_gpa(lm_kvm_guest *g, uint64_t gpa, uint64_t len);
int lm__kvm_vm_create(lm_kvm_guest *g, char *why, size_t whylen);
int lm__kvm_slot_add(lm_kvm_guest *g, uint32_t block_id, void *host, uint64_t len, char *why,
                     size_t whylen);
void lm__kvm_build_tables(lm_kvm_guest *g);
int lm__kvm_vcpu_create(lm_kvm_guest *g, unsigned i, char *why, size_t whylen);
void lm__kvm_initial_regs(lm_kvm_guest *g, unsigned i, struct kvm_regs *regs,
                          struct kvm_sregs *sregs);
void lm__kvm_vm_destroy(lm_kvm_guest *g);

/* kvm_check.c: the continuity check of vCPU i (read_ram false: registers
 * only); false with why when it fails. */
bool lm__kvm_check_vcpu(lm_kvm_guest *g, unsigned i, bool read_ram, char *why, size_t whylen);
/* Is guest RAM registered with userfaultfd for missing pages (postcopy)?
 * Then reading a page not yet here would wait for it. */
bool lm__kvm_ram_guarded(lm_kvm_guest *g);

/* kvm_vcpu.c */
int lm__kvm_vcpus_start(lm_kvm_guest *g);
void lm__kvm_vcpus_stop(lm_kvm_guest *g);
void lm__kvm_vcpus_resume(lm_kvm_guest *g);
void lm__kvm_vcpus_quit(lm_kvm_guest *g);

#endif
