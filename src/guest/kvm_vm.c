/*
 * The KVM guest's virtual machine (docs/KVM-GUEST.md): /dev/kvm, the VM,
 * guest RAM as memory slots, the identity page tables, and each vCPU's
 * first registers, following the recipe that runs a 64-bit CPL3 guest
 * natively on this machine's KVM (the shared design's KVM.md): paging with
 * user pages, a 64-bit user code segment, no IDT, exits by OUT.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guest/kvm_vm.h"

void *lm__kvm_gpa(lm_kvm_guest *g, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < g->nslots; i++) {
        const lm_kvm_memslot *s = &g->slots[i];
        if (gpa >= s->gpa && gpa - s->gpa <= s->len && len <= s->len - (gpa - s->gpa))
            return (uint8_t *)s->host + (gpa - s->gpa);
    }
    return NULL;
}

/* The dirty ring, before any vCPU exists (KVM refuses it after): the
 * acquire/release variant where KVM offers it. */
static int enable_ring(lm_kvm_guest *g, char *why, size_t whylen)
{
    uint64_t bytes = (uint64_t)g->ring_entries * sizeof(struct kvm_dirty_gfn);
    int acq = ioctl(g->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    int plain = ioctl(g->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
    int most = acq > 0 ? acq : plain;
    if (most <= 0) {
        snprintf(why, whylen,
                 "KVM lacks KVM_CAP_DIRTY_LOG_RING (Linux 5.11+): use --dirty-tracker kvm-log or "
                 "uffd-async");
        return -ENOTSUP;
    }
    if (bytes > (uint64_t)most || bytes < 4096 || (bytes & (bytes - 1))) {
        snprintf(why, whylen,
                 "a dirty ring of %u entries (%llu bytes) is not a power of two between a page "
                 "and KVM's %d bytes",
                 g->ring_entries, (unsigned long long)bytes, most);
        return -EINVAL;
    }
    struct kvm_enable_cap cap = {
        .cap = acq > 0 ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL : KVM_CAP_DIRTY_LOG_RING, .args = {bytes}};
    if (ioctl(g->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
        int err = errno;
        snprintf(why, whylen, "KVM_ENABLE_CAP(%s, %llu bytes) failed: %s",
                 acq > 0 ? "DIRTY_LOG_RING_ACQ_REL" : "DIRTY_LOG_RING", (unsigned long long)bytes,
                 strerror(err));
        return -err;
    }
    g->ring_acq_rel = acq > 0;
    return 0;
}

int lm__kvm_vm_create(lm_kvm_guest *g, char *why, size_t whylen)
{
    g->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (g->kvm_fd < 0) {
        int err = errno;
        snprintf(why, whylen, "cannot open /dev/kvm: %s", strerror(err));
        return -err;
    }
    int version = ioctl(g->kvm_fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION) {
        snprintf(why, whylen, "/dev/kvm speaks API version %d, not %d", version, KVM_API_VERSION);
        return -ENOTSUP;
    }
    g->vm_fd = ioctl(g->kvm_fd, KVM_CREATE_VM, 0);
    if (g->vm_fd < 0) {
        int err = errno;
        snprintf(why, whylen, "KVM_CREATE_VM failed: %s", strerror(err));
        return -err;
    }
    if (g->ring_entries) {
        int ret = enable_ring(g, why, whylen);
        if (ret < 0)
            return ret;
    }
    int size = ioctl(g->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size < (int)sizeof(struct kvm_run)) {
        snprintf(why, whylen, "KVM_GET_VCPU_MMAP_SIZE failed");
        return -ENOTSUP;
    }
    g->run_size = (size_t)size;
    return 0;
}

/* The block at the next guest-physical address, one slot per GiB. */
int lm__kvm_slot_add(lm_kvm_guest *g, uint32_t block_id, void *host, uint64_t len, char *why,
                     size_t whylen)
{
    if (len % LM_KVM_PAGE || g->ram_len + len > LM_KVM_MAX_GPA) {
        snprintf(why, whylen, "the KVM guest maps at most %llu GiB of RAM in 4 KiB pages",
                 (unsigned long long)(LM_KVM_MAX_GPA >> 30));
        return -E2BIG;
    }
    for (uint64_t off = 0; off < len; off += LM_KVM_SLOT_MAX) {
        if (g->nslots == LM_KVM_MAX_SLOTS) {
            snprintf(why, whylen, "too many KVM memory slots");
            return -E2BIG;
        }
        lm_kvm_memslot *s = &g->slots[g->nslots];
        s->slot = g->nslots;
        s->block_id = block_id;
        s->block_offset = off;
        s->gpa = g->ram_len + off;
        s->host = (uint8_t *)host + off;
        s->len = len - off < LM_KVM_SLOT_MAX ? len - off : LM_KVM_SLOT_MAX;
        struct kvm_userspace_memory_region r = {.slot = s->slot,
                                                .guest_phys_addr = s->gpa,
                                                .memory_size = s->len,
                                                .userspace_addr = (uintptr_t)s->host};
        if (ioctl(g->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
            int err = errno;
            snprintf(why, whylen, "KVM_SET_USER_MEMORY_REGION (slot %u, %llu bytes) failed: %s",
                     s->slot, (unsigned long long)s->len, strerror(err));
            return -err;
        }
        g->nslots++;
    }
    g->ram_len += len;
    return 0;
}

/* Source only: page tables and program, written into guest RAM once. */
void lm__kvm_build_tables(lm_kvm_guest *g)
{
    uint64_t gibs = (g->ram_len + (1ull << 30) - 1) >> 30;
    uint64_t *pml4 = lm__kvm_gpa(g, LM_KVM_PML4_GPA, LM_KVM_PAGE);
    uint64_t *pdpt = lm__kvm_gpa(g, LM_KVM_PDPT_GPA, LM_KVM_PAGE);
    pml4[0] = LM_KVM_PDPT_GPA | 7; /* present, writable, user */
    for (uint64_t i = 0; i < gibs; i++) {
        uint64_t pd_gpa = LM_KVM_PD_GPA + i * LM_KVM_PAGE;
        uint64_t *pd = lm__kvm_gpa(g, pd_gpa, LM_KVM_PAGE);
        pdpt[i] = pd_gpa | 7;
        for (uint64_t j = 0; j < 512; j++) {
            uint64_t gpa = (i << 30) | (j << 21);
            if (gpa < g->ram_len)
                pd[j] = gpa | 0x87; /* present, writable, user, 2 MiB */
        }
    }
    size_t n = (size_t)(lm_kvm_prog_end - lm_kvm_prog_start);
    memcpy(lm__kvm_gpa(g, LM_KVM_PROG_GPA, n), lm_kvm_prog_start, n);
}

int lm__kvm_vcpu_create(lm_kvm_guest *g, unsigned i, char *why, size_t whylen)
{
    lm_kvm_vcpu *v = &g->vcpus[i];
    v->g = g;
    v->index = i;
    v->fd = ioctl(g->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
    if (v->fd < 0) {
        int err = errno;
        snprintf(why, whylen, "KVM_CREATE_VCPU %u failed: %s", i, strerror(err));
        return -err;
    }
    v->run = mmap(NULL, g->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        int err = errno;
        v->run = NULL;
        snprintf(why, whylen, "mmap of vCPU %u's kvm_run failed: %s", i, strerror(err));
        return -err;
    }
    if (g->ring_entries) {
        void *ring =
            mmap(NULL, g->ring_entries * sizeof(struct kvm_dirty_gfn), PROT_READ | PROT_WRITE,
                 MAP_SHARED, v->fd, KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE));
        if (ring == MAP_FAILED) {
            int err = errno;
            snprintf(why, whylen, "mmap of vCPU %u's dirty ring failed: %s", i, strerror(err));
            return -err;
        }
        v->ring = ring;
    }
    /* Start from KVM's reset values, so fields not set here are sane. */
    if (ioctl(v->fd, KVM_GET_SREGS, &v->sregs) < 0) {
        int err = errno;
        snprintf(why, whylen, "KVM_GET_SREGS failed: %s", strerror(err));
        return -err;
    }
    return 0;
}

static void user_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, bool code)
{
    memset(s, 0, sizeof(*s));
    s->selector = selector;
    s->limit = 0xffffffff;
    s->type = type;
    s->present = 1;
    s->dpl = 3;
    s->s = 1;
    s->g = 1;
    s->l = code;
    s->db = !code;
}

static void unusable_segment(struct kvm_segment *s)
{
    memset(s, 0, sizeof(*s));
    s->unusable = 1;
}

/* Long mode at CPL3 (KVM.md's recipe), entering the program with vCPU i's
 * parameter page in rsi. sregs holds KVM's reset values on entry. */
void lm__kvm_initial_regs(lm_kvm_guest *g, unsigned i, struct kvm_regs *regs,
                          struct kvm_sregs *sregs)
{
    sregs->cr0 = 0x80050033; /* PG, AM, WP, NE, ET, MP, PE */
    sregs->cr3 = LM_KVM_PML4_GPA;
    sregs->cr4 = 0x620;  /* PAE, OSFXSR, OSXMMEXCPT */
    sregs->efer = 0x501; /* LME, LMA, SCE */
    user_segment(&sregs->cs, 0x33, 0xb, true);
    user_segment(&sregs->ss, 0x2b, 0x3, false);
    unusable_segment(&sregs->ds);
    unusable_segment(&sregs->es);
    unusable_segment(&sregs->fs);
    unusable_segment(&sregs->gs);
    unusable_segment(&sregs->ldt);
    sregs->tr.type = 0xb;
    sregs->tr.present = 1;
    sregs->tr.s = 0;
    sregs->tr.unusable = 0;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    memset(regs, 0, sizeof(*regs));
    uint64_t params = LM_KVM_PARAMS_GPA + (uint64_t)i * LM_KVM_PAGE;
    regs->rip = LM_KVM_PROG_GPA;
    regs->rsp = params + LM_KVM_PAGE;
    regs->rflags = 0x2;
    regs->rsi = params;
    regs->r8 = 0;
    regs->r9 = (g->seed + i) * 0x9E3779B97F4A7C15ull | 1; /* xorshift: never 0 */
}

void lm__kvm_vm_destroy(lm_kvm_guest *g)
{
    for (unsigned i = 0; i < LM_KVM_MAX_VCPUS; i++) {
        lm_kvm_vcpu *v = &g->vcpus[i];
        if (v->run)
            munmap(v->run, g->run_size);
        if (v->ring)
            munmap(v->ring, g->ring_entries * sizeof(struct kvm_dirty_gfn));
        v->ring = NULL;
        if (v->fd > 0)
            close(v->fd);
        v->run = NULL;
        v->fd = -1;
    }
    if (g->vm_fd >= 0)
        close(g->vm_fd);
    if (g->kvm_fd >= 0)
        close(g->kvm_fd);
    g->vm_fd = g->kvm_fd = -1;
}
