/*
 * The destination's RAM layout, and whose it is. The source declares its
 * layout in HELLO; the destination decides whether to take it:
 *   - RAM registered by the embedder (or lm_params.ram_size, `incoming
 *     --ram SIZE`): that is the layout, and any other is refused;
 *   - otherwise the source's layout is allocated, if its total is within
 *     lm_params.max_ram (`--max-ram`, 16 TiB by default).
 * Every refusal happens before anything is allocated and names both
 * layouts. Allocation only reserves address space (MAP_NORESERVE): memory
 * is committed as pages arrive, and checked then (ram/budget.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "migration/dest.h"

/* "512 MiB", "1 TiB", or "12288 bytes" when no unit divides it. */
static const char *exact_size(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (unsigned u = 0; u < 4; u++) {
        uint64_t unit = 1ull << (40 - 10 * u);
        if (n && n % unit == 0) {
            snprintf(buf, len, "%" PRIu64 " %s", n / unit, units[u]);
            return buf;
        }
    }
    snprintf(buf, len, "%" PRIu64 " bytes", n);
    return buf;
}

/* "2 blocks: 0 "ram" 1 GiB, 1 "vga" 16 MiB" (the first few blocks). */
static void describe(const lm_wire_block *b, unsigned n, char *out, size_t len)
{
    size_t o = (size_t)snprintf(out, len, "%u block%s:", n, n == 1 ? "" : "s");
    for (unsigned i = 0; i < n && o < len; i++) {
        char size[32], name[4 * LM_BLOCK_NAME_MAX + 1];
        if (i == 4) {
            snprintf(out + o, len - o, " ...");
            return;
        }
        /* A name from the wire goes to a terminal: escaped. */
        lm_escape_text((const uint8_t *)b[i].name, strnlen(b[i].name, LM_BLOCK_NAME_MAX), name,
                       sizeof(name));
        o += (size_t)snprintf(out + o, len - o, "%s %u \"%s\" %s", i ? "," : "", b[i].id, name,
                              exact_size(b[i].len, size, sizeof(size)));
    }
}

static bool same_layout(const lm_hello *h, const lm_wire_block *ours, unsigned n)
{
    if (h->nblocks != n)
        return false;
    for (unsigned i = 0; i < n; i++) {
        const lm_wire_block *theirs = NULL;
        /* Matched by name, as QEMU matches RAMBlocks by idstr; the id, which
         * the wire's page addresses carry, must agree as well. */
        for (unsigned j = 0; j < h->nblocks && !theirs; j++)
            if (!strncmp(h->blocks[j].name, ours[i].name, LM_BLOCK_NAME_MAX))
                theirs = &h->blocks[j];
        if (!theirs || theirs->len != ours[i].len || theirs->id != ours[i].id)
            return false;
    }
    return true;
}

/* The layout this side owns, if any: 0 with *n blocks (0: none, take the
 * source's), or -EINVAL when ram_size and the registered RAM disagree. */
static int own_layout(lm_dest *d, lm_wire_block *ours, unsigned *n, const char **whose)
{
    lm_ctx *ctx = d->ctx;
    *n = 0;
    if (ctx->ram.nblocks) {
        for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
            ours[i].id = ctx->ram.blocks[i].id;
            ours[i].len = ctx->ram.blocks[i].len;
            memcpy(ours[i].name, ctx->ram.blocks[i].name, LM_BLOCK_NAME_MAX);
        }
        *n = ctx->ram.nblocks;
        *whose = "the RAM registered here";
        uint64_t total = lm__ram_total(&ctx->ram);
        if (d->p->ram_size && d->p->ram_size != total)
            return lm_err_set(&ctx->err, -EINVAL,
                              "the RAM registered on the destination is %" PRIu64
                              " bytes but its ram_size (--ram) says %" PRIu64
                              ": give the same size to both",
                              total, d->p->ram_size);
        return 0;
    }
    if (d->p->ram_size) {
        if (d->p->ram_size % ctx->ram.page_size)
            return lm_err_set(&ctx->err, -EINVAL,
                              "--ram %" PRIu64 " is not a multiple of the %" PRIu64
                              "-byte page size",
                              d->p->ram_size, (uint64_t)ctx->ram.page_size);
        ours[0] = (lm_wire_block){.id = 0, .len = d->p->ram_size, .name = "ram"};
        *n = 1;
        *whose = "its --ram";
    }
    return 0;
}

/* Refuses a declared guest over max_ram: what the source says costs this
 * host nothing until data comes, but a bound keeps the receivedmap and the
 * digest's walk (one bit, one hash a page) proportionate. */
static int check_max_ram(lm_dest *d)
{
    uint64_t max = d->p->max_ram ? d->p->max_ram : LM_DEFAULT_MAX_RAM;
    if (d->hello.ram_total <= max)
        return 0;
    char declared[32], cap[32];
    return lm_err_set(&d->ctx->err, -EFBIG,
                      "the source declares a guest of %s, more than this destination's --max-ram "
                      "of %s: raise --max-ram (lm_params.max_ram) to at least the guest's size, "
                      "or give incoming --ram SIZE",
                      exact_size(d->hello.ram_total, declared, sizeof(declared)),
                      exact_size(max, cap, sizeof(cap)));
}

/* Allocates the (accepted) declared layout: address space only. */
static int allocate(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    const lm_hello *h = &d->hello;
    for (uint32_t i = 0; i < h->nblocks; i++) {
        void *host = lm_ram_alloc(h->blocks[i].len);
        if (!host)
            return lm_err_set(&ctx->err, -ENOMEM,
                              "cannot reserve %llu bytes of address space for RAM block %u "
                              "(vm.overcommit_memory=2 counts it all: lower --max-ram or "
                              "allow overcommit)",
                              (unsigned long long)h->blocks[i].len, h->blocks[i].id);
        /* Huge pages: one fault (and one zeroing) per 2 MiB instead of 512;
         * see docs/BENCHMARKS.md. The budget takes them back where the
         * source fills sparsely (ram/budget.c). Off means off, also where
         * THP is "always". */
        (void)madvise(host, h->blocks[i].len, d->p->dest_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        int ret = lm__ram_add(&ctx->ram, h->blocks[i].id, h->blocks[i].name, host, h->blocks[i].len,
                              LM_RAM_ZEROED, &ctx->err);
        if (ret < 0) {
            lm_ram_free(host, h->blocks[i].len);
            return ret;
        }
        ctx->ram.blocks[ctx->ram.nblocks - 1].owned = true; /* freed with the context */
    }
    return 0;
}

int lm__dest_accept_layout(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    const lm_hello *h = &d->hello;
    if (h->page_size != ctx->ram.page_size)
        return lm_err_set(&ctx->err, -EINVAL,
                          "the source uses %u-byte pages, this host %llu: "
                          "migrate between hosts with the same page size",
                          h->page_size, (unsigned long long)ctx->ram.page_size);
    lm_wire_block ours[LM_MAX_BLOCKS];
    unsigned n;
    const char *whose = NULL;
    bool registered = ctx->ram.nblocks > 0;
    int ret = own_layout(d, ours, &n, &whose);
    if (ret < 0)
        return ret;
    if (n && !same_layout(h, ours, n)) {
        char theirs_text[160], ours_text[160];
        describe(h->blocks, h->nblocks, theirs_text, sizeof(theirs_text));
        describe(ours, n, ours_text, sizeof(ours_text));
        return lm_err_set(&ctx->err, -EINVAL,
                          "the source declares a RAM layout of %s, but this destination takes "
                          "only %s (%s): %s",
                          theirs_text, ours_text, whose,
                          registered ? "register the source's layout on the destination"
                                     : "start incoming with the source's --ram size, or without "
                                       "--ram to take the source's layout");
    }
    if (!n && (ret = check_max_ram(d)) < 0)
        return ret;
    if (!registered && (ret = allocate(d)) < 0)
        return ret;
    d->st.total = lm__ram_total(&ctx->ram);
    d->st.page_size = ctx->ram.page_size;
    return lm__ram_receivedmap_reset(&ctx->ram, &ctx->err);
}
