/*
 * A minimal KVM guest for tests (docs: /work/shared/design/KVM.md recipe):
 * one vCPU in 64-bit mode at CPL3 (the only mode that runs natively under
 * nested PVM), identity-mapped with 2 MiB pages, running a hand-assembled
 * loop that increments one byte in each of 'count' pages 'stride' bytes
 * apart and exits with OUT once per pass. Guest RAM is one anonymous
 * mapping, split into 'nslots' equal KVM memory slots at guest-physical 0.
 *
 * Layout: page-table pages at 0x1000-0x3fff (KVM_FX_PT_*), code at
 * 0x10000, everything from KVM_FX_DATA on is free for the loop to write.
 * The page tables carry the accessed and dirty bits already, so KVM has no
 * reason to write them; tests still treat those three pages as noise.
 *
 * kvm_fixture_open_ring also enables KVM's dirty ring (before the vCPU, as
 * KVM requires) and maps the vCPU's ring; a run that exits with
 * KVM_EXIT_DIRTY_RING_FULL calls on_ring_full (a test harvests there), or
 * sleeps 100 us, and runs again.
 */
#ifndef LM_TEST_KVM_FIXTURE_H
#define LM_TEST_KVM_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVM_FX_PT_FIRST  1u /* first page-table page (PML4 at 0x1000) */
#define KVM_FX_PT_PAGES  3u /* PML4, PDPT, PD */
#define KVM_FX_CODE      0x10000u
#define KVM_FX_DATA      0x100000u /* first byte the loop may write */
#define KVM_FX_MAX_SLOTS 8u

typedef struct kvm_fixture {
    int kvm_fd, vm_fd, vcpu_fd;
    struct kvm_run *run;
    size_t run_size;
    uint8_t *mem;
    uint64_t mem_size;
    unsigned nslots;
    uint32_t slot_flags;
    struct kvm_dirty_gfn *ring; /* the vCPU's dirty ring, NULL: none */
    uint32_t ring_entries;
    uint64_t ring_full; /* KVM_EXIT_DIRTY_RING_FULL exits */
    int (*on_ring_full)(struct kvm_fixture *fx);
} kvm_fixture;

/* The loop, at KVM_FX_CODE: r8 = first address, r9 = count, rdx = stride.
 *   0: mov %r8,%rbx; 3: mov %r9,%rcx; 6: incb (%rbx); 8: add %rdx,%rbx;
 *   b: dec %rcx; e: jnz 6; 10: out %al,$0x10; 12: jmp 0 */
static const uint8_t kvm_fx_code[] = {0x4c, 0x89, 0xc3, 0x4c, 0x89, 0xc9, 0xfe, 0x03, 0x48, 0x01,
                                      0xd3, 0x48, 0xff, 0xc9, 0x75, 0xf6, 0xe6, 0x10, 0xeb, 0xec};

static inline void kvm_fixture_close(kvm_fixture *fx)
{
    if (fx->run)
        munmap(fx->run, fx->run_size);
    if (fx->ring)
        munmap(fx->ring, fx->ring_entries * sizeof(struct kvm_dirty_gfn));
    if (fx->vcpu_fd >= 0)
        close(fx->vcpu_fd);
    if (fx->vm_fd >= 0)
        close(fx->vm_fd);
    if (fx->kvm_fd >= 0)
        close(fx->kvm_fd);
    if (fx->mem)
        munmap(fx->mem, fx->mem_size);
    memset(fx, 0, sizeof(*fx));
    fx->kvm_fd = fx->vm_fd = fx->vcpu_fd = -1;
}

static inline uint64_t kvm_fixture_slot_bytes(const kvm_fixture *fx)
{
    return fx->mem_size / fx->nslots;
}

/* 0, or -errno with a sentence in why (the caller skips the test). mem_size
 * must be a multiple of nslots * 2 MiB, at most 1 GiB. ring_entries: the
 * vCPU's dirty ring (acquire/release variant where offered), 0 for none;
 * -ENOTSUP when KVM has no ring. */
static inline int kvm_fixture_open_ring(kvm_fixture *fx, uint64_t mem_size, unsigned nslots,
                                        uint32_t ring_entries, char *why, size_t whylen)
{
    memset(fx, 0, sizeof(*fx));
    fx->kvm_fd = fx->vm_fd = fx->vcpu_fd = -1;
    fx->mem_size = mem_size;
    fx->nslots = nslots;
    const char *what = "open /dev/kvm";
    if ((fx->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)
        goto fail;
    what = "KVM_CREATE_VM";
    if ((fx->vm_fd = ioctl(fx->kvm_fd, KVM_CREATE_VM, 0)) < 0)
        goto fail;
    if (ring_entries) {
        int acq = ioctl(fx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
        int plain = ioctl(fx->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
        if (acq <= 0 && plain <= 0) {
            snprintf(why, whylen, "KVM test guest: KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
            kvm_fixture_close(fx);
            return -ENOTSUP;
        }
        struct kvm_enable_cap cap = {.cap = acq > 0 ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                                                    : KVM_CAP_DIRTY_LOG_RING,
                                     .args = {ring_entries * sizeof(struct kvm_dirty_gfn)}};
        what = "KVM_ENABLE_CAP(DIRTY_LOG_RING)";
        if (ioctl(fx->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
            goto fail;
    }
    what = "mmap guest RAM";
    void *m = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        goto fail;
    fx->mem = m;
    madvise(m, mem_size, MADV_NOHUGEPAGE);
    uint64_t *pml4 = (uint64_t *)(fx->mem + 0x1000), *pdpt = (uint64_t *)(fx->mem + 0x2000),
             *pd = (uint64_t *)(fx->mem + 0x3000);
    pml4[0] = 0x2000 | 0x27; /* P|RW|US|A */
    pdpt[0] = 0x3000 | 0x27;
    for (uint64_t i = 0; i < 512; i++)
        pd[i] = (i << 21) | 0xe7; /* P|RW|US|A|D|PS */
    memcpy(fx->mem + KVM_FX_CODE, kvm_fx_code, sizeof(kvm_fx_code));
    what = "KVM_SET_USER_MEMORY_REGION";
    uint64_t per = mem_size / nslots;
    for (unsigned i = 0; i < nslots; i++) {
        struct kvm_userspace_memory_region r = {.slot = i,
                                                .guest_phys_addr = i * per,
                                                .memory_size = per,
                                                .userspace_addr = (uintptr_t)fx->mem + i * per};
        if (ioctl(fx->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            goto fail;
    }
    what = "KVM_CREATE_VCPU";
    if ((fx->vcpu_fd = ioctl(fx->vm_fd, KVM_CREATE_VCPU, 0)) < 0)
        goto fail;
    what = "mmap kvm_run";
    int sz = ioctl(fx->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0)
        goto fail;
    fx->run_size = (size_t)sz;
    m = mmap(NULL, fx->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fx->vcpu_fd, 0);
    if (m == MAP_FAILED)
        goto fail;
    fx->run = m;
    if (ring_entries) {
        what = "mmap the dirty ring";
        m = mmap(NULL, ring_entries * sizeof(struct kvm_dirty_gfn), PROT_READ | PROT_WRITE,
                 MAP_SHARED, fx->vcpu_fd, KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
        if (m == MAP_FAILED)
            goto fail;
        fx->ring = m;
        fx->ring_entries = ring_entries;
    }
    what = "KVM_GET_SREGS";
    struct kvm_sregs sr;
    if (ioctl(fx->vcpu_fd, KVM_GET_SREGS, &sr) < 0)
        goto fail;
    sr.cr0 = 0x80050033;
    sr.cr3 = 0x1000;
    sr.cr4 = 0x620;
    sr.efer = 0x501;
    struct kvm_segment cs = {.base = 0,
                             .limit = 0xffffffff,
                             .selector = 0x33,
                             .type = 0xb,
                             .present = 1,
                             .dpl = 3,
                             .db = 0,
                             .s = 1,
                             .l = 1,
                             .g = 1};
    struct kvm_segment ss = {.base = 0,
                             .limit = 0xffffffff,
                             .selector = 0x2b,
                             .type = 3,
                             .present = 1,
                             .dpl = 3,
                             .db = 1,
                             .s = 1,
                             .g = 1};
    struct kvm_segment none = {.unusable = 1};
    sr.cs = cs;
    sr.ss = ss;
    sr.ds = sr.es = sr.fs = sr.gs = none;
    sr.ldt = none;
    sr.tr = (struct kvm_segment){.limit = 0xffff, .type = 0xb, .present = 1};
    sr.idt = (struct kvm_dtable){0, 0};
    what = "KVM_SET_SREGS";
    if (ioctl(fx->vcpu_fd, KVM_SET_SREGS, &sr) < 0)
        goto fail;
    return 0;
fail:;
    int e = errno ? errno : EIO;
    snprintf(why, whylen, "KVM test guest: %s failed: %s", what, strerror(e));
    kvm_fixture_close(fx);
    return -e;
}

static inline int kvm_fixture_open(kvm_fixture *fx, uint64_t mem_size, unsigned nslots, char *why,
                                   size_t whylen)
{
    return kvm_fixture_open_ring(fx, mem_size, nslots, 0, why, whylen);
}

/* Points the loop at [gpa, gpa + count * stride) for the following runs. */
static inline int kvm_fixture_aim(kvm_fixture *fx, uint64_t gpa, uint64_t stride, uint64_t count)
{
    struct kvm_regs r = {.rip = KVM_FX_CODE,
                         .rflags = 0x2,
                         .rsp = KVM_FX_DATA,
                         .r8 = gpa,
                         .r9 = count,
                         .rdx = stride};
    return ioctl(fx->vcpu_fd, KVM_SET_REGS, &r) < 0 ? -errno : 0;
}

/* Runs the guest until its next OUT: one pass of the loop. */
static inline int kvm_fixture_run(kvm_fixture *fx)
{
    for (;;) {
        if (ioctl(fx->vcpu_fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (fx->run->exit_reason == KVM_EXIT_IO)
            return 0;
        if (fx->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
            fx->ring_full++;
            int ret = fx->on_ring_full ? fx->on_ring_full(fx) : usleep(100);
            if (ret < 0)
                return ret;
            continue;
        }
        fprintf(stderr, "KVM test guest: unexpected exit %u\n", fx->run->exit_reason);
        return -EIO;
    }
}

/* One pass over 'count' pages from gpa, 'stride' bytes apart. */
static inline int kvm_fixture_pass(kvm_fixture *fx, uint64_t gpa, uint64_t stride, uint64_t count)
{
    int ret = kvm_fixture_aim(fx, gpa, stride, count);
    return ret < 0 ? ret : kvm_fixture_run(fx);
}

#endif
