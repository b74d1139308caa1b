/* The destination's memory budget: see budget.h. */
#include "ram/budget.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "util/parse.h"

int lm_ram_budget_init(lm_ram_budget *b, lm_ram *ram, bool thp, uint64_t fake_available,
                       lm_err *err)
{
    memset(b, 0, sizeof(*b));
    b->ram = ram;
    b->err = err;
    b->thp = thp && lm_hostmem_thp_possible();
    b->fake_available = fake_available;
    lm_hostmem_init(&b->host);
    pthread_mutex_init(&b->lock, NULL);
    for (unsigned i = 0; i < ram->nblocks && b->thp; i++) {
        const lm_block *blk = &ram->blocks[i];
        if (blk->owned && !(b->huge[i] = lm_bitmap_new(blk->len / LM_BUDGET_HUGE + 2)))
            return lm_err_set(err, -ENOMEM, "out of memory for the huge page map");
    }
    return 0;
}

void lm_ram_budget_free(lm_ram_budget *b)
{
    if (!b->ram)
        return;
    for (unsigned i = 0; i < LM_MAX_BLOCKS; i++)
        lm_bitmap_free(b->huge[i]);
    pthread_mutex_destroy(&b->lock);
    memset(b, 0, sizeof(*b));
}

/* The 2 MiB region of the block that byte 'off' is in (the block need not
 * be 2 MiB aligned). */
static uint64_t region_of(const lm_block *blk, uint64_t off)
{
    return ((uintptr_t)blk->host + off) / LM_BUDGET_HUGE - (uintptr_t)blk->host / LM_BUDGET_HUGE;
}

/* Pages of the packet that commit memory: new 2 MiB regions when huge is
 * true (consecutive pages of one region counted once), else new pages. */
static uint64_t count_new(const lm_ram_budget *b, const lm_block *blk, unsigned idx,
                          const uint64_t *offsets, uint32_t n, bool huge)
{
    uint64_t ps = b->ram->page_size, count = 0, last = UINT64_MAX;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t region = region_of(blk, offsets[i]);
        if (b->huge[idx] && lm_bit_test_atomic(b->huge[idx], region))
            continue; /* inside a huge page committed already */
        if (lm_bit_test_atomic(blk->received, offsets[i] / ps))
            continue; /* written before: resident already */
        if (huge && region == last)
            continue;
        last = region;
        count++;
    }
    return count;
}

/* Huge pages outgrew what arrived: 4 KiB pages from here on, in every
 * owned block (what was committed stays; nothing more is). Lock held. */
static void thp_fall_back(lm_ram_budget *b)
{
    if (atomic_load(&b->thp_off))
        return;
    for (unsigned i = 0; i < b->ram->nblocks; i++) {
        lm_block *blk = &b->ram->blocks[i];
        if (blk->owned)
            (void)madvise(blk->host, blk->len, MADV_NOHUGEPAGE);
    }
    atomic_store(&b->thp_off, true);
}

/* What the host can give now. */
static int available(lm_ram_budget *b, uint64_t *bytes, const char **what)
{
    if (b->fake_available) {
        uint64_t used = atomic_load(&b->committed);
        *bytes = b->fake_available > used ? b->fake_available - used : 0;
        *what = "x-host-available";
        return 0;
    }
    return lm_hostmem_available(&b->host, bytes, what);
}

/* Whether the host can give 'more' bytes beyond what is committed and
 * keep the margin; *avail and *what say what it has. Lock held. */
static bool host_can_give(lm_ram_budget *b, uint64_t more, uint64_t *avail, const char **what)
{
    if (available(b, avail, what) < 0)
        return true; /* cannot tell: no refusal on a guess */
    return *avail >= LM_BUDGET_MARGIN + more;
}

static int check_host(lm_ram_budget *b, uint64_t more)
{
    uint64_t avail;
    const char *what;
    if (host_can_give(b, more, &avail, &what))
        return 0;
    char have[32], spare[32], sent[32], guest[32];
    return lm_err_set(b->err, -ENOMEM,
                      "this host has %s available (%s) and keeps %s spare; the source has sent "
                      "%s so far for a guest of %s: raise the destination's memory (or its "
                      "cgroup's limit), free memory there, or migrate to a bigger host",
                      lm_format_bytes(avail, have, sizeof(have)), what,
                      lm_format_bytes(LM_BUDGET_MARGIN, spare, sizeof(spare)),
                      lm_format_bytes(atomic_load(&b->received), sent, sizeof(sent)),
                      lm_format_bytes(lm__ram_total(b->ram), guest, sizeof(guest)));
}

int lm_ram_budget_admit(lm_ram_budget *b, lm_block *blk, const uint64_t *offsets, uint32_t n)
{
    if (!b->ram || !blk->owned || !n)
        return 0;
    unsigned idx = lm__ram_index(b->ram, blk);
    uint64_t ps = b->ram->page_size, cost;
    uint64_t received = atomic_fetch_add(&b->received, (uint64_t)n * ps) + (uint64_t)n * ps;
    bool huge = b->thp && !atomic_load(&b->thp_off);
    if (huge) {
        cost = count_new(b, blk, idx, offsets, n, true) * LM_BUDGET_HUGE;
        if (atomic_load(&b->committed) + cost >
            LM_BUDGET_THP_ALLOWANCE + LM_BUDGET_THP_RATIO * received) {
            pthread_mutex_lock(&b->lock);
            thp_fall_back(b);
            pthread_mutex_unlock(&b->lock);
            huge = false;
        }
    }
    if (huge) {
        /* Claim each region once; another channel may be claiming it too. */
        cost = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t region = region_of(blk, offsets[i]);
            if (!lm_bit_test_atomic(blk->received, offsets[i] / ps) &&
                !lm_bit_test_and_set_atomic(b->huge[idx], region))
                cost += LM_BUDGET_HUGE;
        }
    } else {
        cost = count_new(b, blk, idx, offsets, n, false) * ps;
    }
    uint64_t committed = atomic_fetch_add(&b->committed, cost) + cost;
    if (committed < atomic_load(&b->next_check) && cost <= LM_BUDGET_CHECK_STEP)
        return 0;
    pthread_mutex_lock(&b->lock);
    int ret = 0;
    if (committed >= atomic_load(&b->next_check) || cost > LM_BUDGET_CHECK_STEP) {
        /* What may be committed before the next check: a step, or this
         * packet (already counted in 'committed', not yet written). */
        ret = check_host(b, cost > LM_BUDGET_CHECK_STEP ? cost : LM_BUDGET_CHECK_STEP);
        atomic_store(&b->next_check, committed + LM_BUDGET_CHECK_STEP);
    }
    pthread_mutex_unlock(&b->lock);
    return ret;
}

int lm_ram_budget_reserve(lm_ram_budget *b, uint64_t bytes, const char *what)
{
    if (!b->ram || !bytes)
        return 0;
    uint64_t avail;
    const char *limit;
    pthread_mutex_lock(&b->lock);
    bool ok = host_can_give(b, bytes, &avail, &limit);
    pthread_mutex_unlock(&b->lock);
    if (ok)
        return 0;
    char need[32], have[32], spare[32];
    return lm_err_set(b->err, -ENOMEM,
                      "%s needs %s more here, but this host has %s available (%s) and keeps %s "
                      "spare: raise the destination's memory (or its cgroup's limit), free "
                      "memory there, or migrate to a bigger host",
                      what, lm_format_bytes(bytes, need, sizeof(need)),
                      lm_format_bytes(avail, have, sizeof(have)), limit,
                      lm_format_bytes(LM_BUDGET_MARGIN, spare, sizeof(spare)));
}
