/*
 * lm_kvm_attach: an embedding VMM hands livemig its KVM VM and memory slots,
 * so that the kvm-log tracker can use KVM's own dirty log (and, with
 * lm_kvm_attach_rings, kvm-ring its dirty rings). Checked here,
 * once, against the registered RAM blocks; converted to the tracker's terms
 * (range index, pages) when a migration starts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "migration/engine.h"

/* KVM_MEM_LOG_DIRTY_PAGES, without <linux/kvm.h> in this layer. */
#define KVM_LOG_DIRTY_FLAG 1u

static void detach_rings(lm_ctx *ctx)
{
    free(ctx->kvm_rings);
    ctx->kvm_rings = NULL;
    ctx->kvm_nrings = 0;
    ctx->kvm_ring_entries = 0;
}

static void detach_slots(lm_ctx *ctx)
{
    free(ctx->kvm_slots);
    ctx->kvm_slots = NULL;
    ctx->kvm_nslots = 0;
    ctx->kvm_fd = -1;
}

void lm__kvm_detach(lm_ctx *ctx)
{
    detach_rings(ctx);
    detach_slots(ctx);
}

static int by_block_offset(const void *a, const void *b)
{
    const lm_kvm_slot *x = a, *y = b;
    if (x->block_id != y->block_id)
        return x->block_id < y->block_id ? -1 : 1;
    return x->block_offset < y->block_offset ? -1 : x->block_offset > y->block_offset;
}

static int by_guest_phys(const void *a, const void *b)
{
    const lm_kvm_slot *x = a, *y = b;
    return x->guest_phys < y->guest_phys ? -1 : x->guest_phys > y->guest_phys;
}

static int by_id(const void *a, const void *b)
{
    const lm_kvm_slot *x = a, *y = b;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static int check_slots(lm_ctx *ctx, lm_kvm_slot *v, unsigned n)
{
    uint64_t ps = ctx->ram.page_size;
    for (unsigned i = 0; i < n; i++) {
        const lm_kvm_slot *k = &v[i];
        lm_block *b = lm__ram_find(&ctx->ram, k->block_id);
        if (!b)
            return lm_err_set(&ctx->err, -EINVAL,
                              "lm_kvm_attach: KVM slot %u maps RAM block %u, which is not "
                              "registered: call lm_ram_block_add first",
                              k->slot, k->block_id);
        if (!k->size || k->size % ps || k->block_offset % ps || k->guest_phys % ps)
            return lm_err_set(&ctx->err, -EINVAL,
                              "lm_kvm_attach: KVM slot %u: offset, size and guest-physical "
                              "address must be multiples of the page size (%llu) and the size "
                              "not 0",
                              k->slot, (unsigned long long)ps);
        if (k->block_offset > b->len || k->size > b->len - k->block_offset)
            return lm_err_set(&ctx->err, -EINVAL,
                              "lm_kvm_attach: KVM slot %u ends past the end of RAM block %u "
                              "(offset %llu + size %llu > %llu)",
                              k->slot, k->block_id, (unsigned long long)k->block_offset,
                              (unsigned long long)k->size, (unsigned long long)b->len);
        if (k->flags & KVM_LOG_DIRTY_FLAG)
            return lm_err_set(&ctx->err, -EINVAL,
                              "lm_kvm_attach: KVM slot %u: pass its flags without "
                              "KVM_MEM_LOG_DIRTY_PAGES (livemig sets it while tracking)",
                              k->slot);
    }
    qsort(v, n, sizeof(*v), by_id);
    for (unsigned i = 1; i < n; i++)
        if (v[i].slot == v[i - 1].slot)
            return lm_err_set(&ctx->err, -EINVAL, "lm_kvm_attach: KVM slot %u is given twice",
                              v[i].slot);
    qsort(v, n, sizeof(*v), by_guest_phys);
    for (unsigned i = 1; i < n; i++)
        if (v[i].guest_phys - v[i - 1].guest_phys < v[i - 1].size)
            return lm_err_set(&ctx->err, -EINVAL,
                              "lm_kvm_attach: KVM slots %u and %u overlap in guest-physical "
                              "memory",
                              v[i - 1].slot, v[i].slot);
    qsort(v, n, sizeof(*v), by_block_offset);
    for (unsigned i = 1; i < n; i++)
        if (v[i].block_id == v[i - 1].block_id &&
            v[i].block_offset - v[i - 1].block_offset < v[i - 1].size)
            return lm_err_set(&ctx->err, -EINVAL,
                              "lm_kvm_attach: KVM slots %u and %u map overlapping parts of RAM "
                              "block %u",
                              v[i - 1].slot, v[i].slot, v[i].block_id);
    return 0;
}

int lm_kvm_attach(lm_ctx *ctx, int vm_fd, const lm_kvm_slot *slots, unsigned n)
{
    lm_err_reset(&ctx->err);
    if (vm_fd < 0 && n == 0) {
        lm__kvm_detach(ctx);
        return 0;
    }
    if (vm_fd < 0 || n == 0 || !slots)
        return lm_err_set(&ctx->err, -EINVAL,
                          "lm_kvm_attach: give a KVM VM descriptor and at least one slot "
                          "(vm_fd -1 with no slots detaches)");
    if (n > 32768)
        return lm_err_set(&ctx->err, -EINVAL, "lm_kvm_attach: %u slots is more than KVM allows", n);
    lm_kvm_slot *v = malloc(n * sizeof(*v));
    if (!v)
        return lm_err_set(&ctx->err, -ENOMEM, "lm_kvm_attach: out of memory");
    memcpy(v, slots, n * sizeof(*v));
    int ret = check_slots(ctx, v, n);
    if (ret < 0) {
        free(v);
        return ret;
    }
    detach_slots(ctx);
    ctx->kvm_fd = vm_fd;
    ctx->kvm_slots = v;
    ctx->kvm_nslots = n;
    return 0;
}

int lm_kvm_attach_rings(lm_ctx *ctx, void *const rings[], unsigned nvcpus, uint32_t entries)
{
    lm_err_reset(&ctx->err);
    if (!rings && nvcpus == 0) {
        detach_rings(ctx);
        return 0;
    }
    if (!rings || nvcpus == 0 || nvcpus > 4096)
        return lm_err_set(&ctx->err, -EINVAL,
                          "lm_kvm_attach_rings: give 1 to 4096 vCPU rings (NULL with 0 "
                          "detaches)");
    if (entries < 256 || entries > 65536 || (entries & (entries - 1)))
        return lm_err_set(&ctx->err, -EINVAL,
                          "lm_kvm_attach_rings: %u entries: a KVM dirty ring has a power of two "
                          "from 256 (a page) to 65536 entries",
                          entries);
    for (unsigned i = 0; i < nvcpus; i++)
        if (!rings[i])
            return lm_err_set(&ctx->err, -EINVAL, "lm_kvm_attach_rings: vCPU %u's ring is NULL", i);
    void **v = malloc(nvcpus * sizeof(*v));
    if (!v)
        return lm_err_set(&ctx->err, -ENOMEM, "lm_kvm_attach_rings: out of memory");
    memcpy(v, rings, nvcpus * sizeof(*v));
    detach_rings(ctx);
    ctx->kvm_rings = v;
    ctx->kvm_nrings = nvcpus;
    ctx->kvm_ring_entries = entries;
    return 0;
}

int lm__kvm_track_slots(lm_ctx *ctx, lm_track_kvm *kvm, lm_track_kvm_slot **out)
{
    *kvm = (lm_track_kvm){.vm_fd = ctx->kvm_fd,
                          .nrings = ctx->kvm_nrings,
                          .rings = (void *const *)ctx->kvm_rings,
                          .ring_entries = ctx->kvm_ring_entries};
    *out = NULL;
    if (ctx->kvm_fd < 0)
        return 0;
    lm_track_kvm_slot *v = calloc(ctx->kvm_nslots, sizeof(*v));
    if (!v)
        return lm_err_set(&ctx->err, -ENOMEM, "out of memory for the KVM slots");
    uint64_t ps = ctx->ram.page_size;
    for (unsigned i = 0; i < ctx->kvm_nslots; i++) {
        const lm_kvm_slot *k = &ctx->kvm_slots[i];
        lm_block *b = lm__ram_find(&ctx->ram, k->block_id);
        if (!b) { /* checked by lm_kvm_attach; blocks are never removed */
            free(v);
            return lm_err_set(&ctx->err, -EINVAL, "KVM slot %u maps RAM block %u, now unknown",
                              k->slot, k->block_id);
        }
        v[i] = (lm_track_kvm_slot){.slot = k->slot,
                                   .flags = k->flags,
                                   .range = lm__ram_index(&ctx->ram, b),
                                   .first = k->block_offset / ps,
                                   .npages = k->size / ps,
                                   .guest_phys = k->guest_phys};
    }
    kvm->nslots = ctx->kvm_nslots;
    kvm->slots = v;
    *out = v;
    return 0;
}
