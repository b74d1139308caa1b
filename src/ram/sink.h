/*
 * A page sink: where a receiving channel delivers the pages of a packet.
 *
 * The channel owns the wire: it validates the packet header, looks the block
 * up in sink->ram and checks every offset against it before a byte of
 * payload lands. Then, for a sink that is 'in_place', it reads the payload
 * straight into guest RAM at b->host + offset and calls place() with those
 * addresses; for any other sink it reads the payload into its own buffer
 * and calls place() with the buffer's pages. Zero pages (no payload) go to
 * place_zero(). The migration decides which sink a channel delivers to and
 * may switch it between packets (precopy in place, then postcopy placement
 * with userfaultfd); the channel never knows more than this table.
 *
 * Threading: place() and place_zero() are called from every receiving
 * channel's thread at once, for disjoint packets; fail() from a channel
 * thread that stops on an error it has already recorded in sink->err.
 */
#ifndef LM_RAM_SINK_H
#define LM_RAM_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include "ram/budget.h"
#include "ram/ram.h"
#include "util/error.h"

typedef struct lm_page_sink lm_page_sink;

typedef struct lm_page_sink_ops {
    const char *name;
    /* The channel may read payload straight into guest RAM. */
    bool in_place;
    /* n pages of block b now hold data[i] (page_size bytes each): for an
     * in-place sink data[i] is b->host + offsets[i] already. Offsets are
     * validated. 0 or -errno with a message in sink->err. */
    int (*place)(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint8_t *const data[],
                 uint32_t n);
    /* n pages of block b are zero. */
    int (*place_zero)(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint32_t n);
    /* Pages [first, first + npages) of block b (validated) are zero: a
     * run the source knows holds nothing. Only precopy sinks take it. */
    int (*place_zero_range)(lm_page_sink *sink, lm_block *b, uint64_t first, uint64_t npages);
    /* Optional: the n normal pages at offsets (validated) are about to be
     * written, before any of their payload is read: the sink may refuse
     * them (0, or -errno with a message in sink->err), e.g. when this host
     * cannot give the memory they would commit. */
    int (*admit)(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint32_t n);
    /* Optional: a channel delivering here gave up; wake anyone waiting. */
    void (*fail)(lm_page_sink *sink);
} lm_page_sink_ops;

struct lm_page_sink {
    const lm_page_sink_ops *ops;
    lm_ram *ram;
    lm_err *err;
};

/* Precopy: pages land in place; a zero page costs nothing where the block
 * is fresh memory and the page was never received (seed 000's receivedmap),
 * unless no_receivedmap asks for the baseline that reads each one.
 *
 * With a userfaultfd (lm_inplace_sink_set_copy), a page never received is
 * not written where it lives: the channel reads it into its own buffer and
 * UFFDIO_COPY puts it into the missing page, which the kernel allocates
 * and fills without zeroing it first and without a page fault (measured in
 * docs/BENCHMARKS.md, "Placement"). Pages received before are present and
 * are copied over. */
typedef struct lm_inplace_sink {
    lm_page_sink sink;
    bool no_receivedmap;
    lm_ram_budget *budget; /* what receiving may commit (budget.h); NULL: no bound */
    int uffd;              /* >= 0: placement by UFFDIO_COPY through it */
} lm_inplace_sink;

void lm_inplace_sink_init(lm_inplace_sink *s, lm_ram *ram, bool no_receivedmap,
                          lm_ram_budget *budget, lm_err *err);
/* Places never-received pages of engine-allocated (LM_RAM_ZEROED, owned)
 * blocks with UFFDIO_COPY through uffd, which has them registered for
 * MISSING faults; -1 goes back to writing in place. Only while no channel
 * is inside a packet. */
void lm_inplace_sink_set_copy(lm_inplace_sink *s, int uffd);

#endif
