/*
 * The destination's memory budget: what receiving may commit, accounted
 * before a packet's payload lands (the in-place sink's admit hook).
 *
 * Only blocks the destination allocated itself (owned: fresh, empty
 * memory) are accounted; RAM an embedder registered is its own to
 * provision. Two bounds, docs/SECURITY.md:
 *
 *   1. Bounded by what was received. With transparent huge pages the first
 *      page written in a 2 MiB region commits all of it: one 4 KiB page
 *      from a stranger, 2 MiB here. Committed huge regions are counted
 *      against the page data received; once they exceed
 *      LM_BUDGET_THP_ALLOWANCE + LM_BUDGET_THP_RATIO x received, the owned
 *      blocks fall back to 4 KiB pages (MADV_NOHUGEPAGE) for the rest of
 *      the migration. A dense fill (the usual first pass) stays on huge
 *      pages; a sparse one costs what it sends.
 *   2. Checked against what the host can give (util/hostmem.h), every
 *      LM_BUDGET_CHECK_STEP of growth and before any larger packet, with
 *      LM_BUDGET_MARGIN kept spare: refused with a message instead of an
 *      OOM kill. The source, told, keeps its guest.
 *
 * Threading: admit() runs on every receiving channel at once; the counters
 * are atomics, and 'lock' serializes the host check and the THP switch.
 */
#ifndef LM_RAM_BUDGET_H
#define LM_RAM_BUDGET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ram/ram.h"
#include "util/error.h"
#include "util/hostmem.h"

#define LM_BUDGET_HUGE          (2ull << 20)  /* a transparent huge page (x86-64, arm64 4K) */
#define LM_BUDGET_THP_ALLOWANCE (32ull << 20) /* huge pages committed before any is judged */
#define LM_BUDGET_THP_RATIO     2             /* then: at most twice the page data received */
#define LM_BUDGET_CHECK_STEP    (32ull << 20) /* host checked every this much growth */
#define LM_BUDGET_MARGIN        (64ull << 20) /* kept spare for everything else */

typedef struct lm_ram_budget {
    /* Set up before receiving. */
    lm_ram *ram;
    lm_err *err;
    bool thp;                /* owned blocks were given MADV_HUGEPAGE, and THP can back them */
    uint64_t fake_available; /* testing aid (lm_testing.host_available); 0: the host's */
    lm_hostmem host;
    lm_word *huge[LM_MAX_BLOCKS]; /* per owned block: 2 MiB regions committed as huge pages */
    /* Shared by the receiving threads. */
    _Atomic uint64_t committed;  /* estimate of what receiving made resident (never less) */
    _Atomic uint64_t received;   /* page data admitted into owned blocks */
    _Atomic uint64_t next_check; /* committed at which the host is read again */
    _Atomic bool thp_off;        /* fell back to 4 KiB pages */
    pthread_mutex_t lock;
} lm_ram_budget;

/* thp: the owned blocks were madvised MADV_HUGEPAGE. */
int lm_ram_budget_init(lm_ram_budget *b, lm_ram *ram, bool thp, uint64_t fake_available,
                       lm_err *err);
void lm_ram_budget_free(lm_ram_budget *b);
/* The n normal pages at offsets of block blk are about to be written:
 * account what they commit (falling back to 4 KiB pages when huge ones
 * outgrow what arrived) and check the host when due. 0, or -ENOMEM with
 * the reason in b->err: this host cannot take them. */
int lm_ram_budget_admit(lm_ram_budget *b, lm_block *blk, const uint64_t *offsets, uint32_t n);
/* Before a commitment of 'bytes' more that cannot be refused later (the
 * postcopy switch): 0 when the host can give them, -ENOMEM otherwise. */
int lm_ram_budget_reserve(lm_ram_budget *b, uint64_t bytes, const char *what);

#endif
