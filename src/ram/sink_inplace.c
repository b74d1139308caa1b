/* The precopy page sink: pages are written where they live, or copied into
 * missing pages by userfaultfd (sink.h). */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "ram/sink.h"
#include "util/sys.h"
#include "util/zero.h"

static int inplace_place(lm_page_sink *sink, lm_block *b, const uint64_t *offsets,
                         uint8_t *const data[], uint32_t n)
{
    uint64_t ps = sink->ram->page_size;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *dst = b->host + offsets[i];
        if (data[i] != dst)
            memcpy(dst, data[i], ps);
        lm_bit_set_atomic(b->received, offsets[i] / ps);
    }
    return 0;
}

/* Clears a page received before. With placement by copy its bit may be
 * set while the page is still missing (a zero range marks pages without
 * touching them), and writing a missing page would wait on a fault no one
 * answers: UFFDIO_ZEROPAGE says EEXIST for a present page, which is then
 * cleared, and leaves a missing one reading as zero, which it is. */
static void clear_received_page(lm_inplace_sink *s, lm_block *b, uint8_t *dst)
{
    uint64_t ps = s->sink.ram->page_size;
    if (s->uffd >= 0 && b->owned) {
        struct uffdio_zeropage z = {.range = {.start = (uintptr_t)dst, .len = ps}};
        int ret;
        while ((ret = lm_sys_ioctl(s->uffd, UFFDIO_ZEROPAGE, &z)) < 0 && errno == EAGAIN)
            ;
        if (ret == 0 || errno != EEXIST)
            return;
    }
    memset(dst, 0, ps);
}

/* Fresh memory already reads as zero, so only a page that held data
 * before is cleared; the baseline reads every page to find out. */
static int inplace_place_zero(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint32_t n)
{
    lm_inplace_sink *s = (lm_inplace_sink *)sink;
    uint64_t ps = sink->ram->page_size;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t page = offsets[i] / ps;
        uint8_t *dst = b->host + offsets[i];
        if (s->no_receivedmap) {
            if (!lm_buffer_is_zero(dst, ps))
                memset(dst, 0, ps);
        } else if (lm_bit_test_atomic(b->received, page) || !(b->flags & LM_RAM_ZEROED)) {
            clear_received_page(s, b, dst);
        }
        lm_bit_set_atomic(b->received, page);
    }
    return 0;
}

struct clear_received {
    lm_inplace_sink *s;
    lm_block *b;
};

static void clear_page(void *opaque, uint64_t page)
{
    struct clear_received *c = opaque;
    clear_received_page(c->s, c->b, c->b->host + page * c->s->sink.ram->page_size);
}

/* A run of zero pages: in fresh memory only the pages received before need
 * clearing. One pass over the run's receivedmap words marks the run and
 * finds them; the rest of the run costs one bit each. */
static int inplace_place_zero_range(lm_page_sink *sink, lm_block *b, uint64_t first,
                                    uint64_t npages)
{
    lm_inplace_sink *s = (lm_inplace_sink *)sink;
    uint64_t ps = sink->ram->page_size;
    if (s->no_receivedmap || !(b->flags & LM_RAM_ZEROED)) {
        for (uint64_t p = first; p < first + npages; p++) {
            uint64_t off = p * ps;
            if (inplace_place_zero(sink, b, &off, 1) < 0)
                return -1;
        }
        return 0;
    }
    struct clear_received c = {s, b};
    lm_bitmap_set_range_atomic(b->received, first, npages, clear_page, &c);
    return 0;
}

/* UFFDIO_COPY of len bytes at dst from src. A page already present
 * (EEXIST: populated since, e.g. by a zero page's clearing) is copied
 * over instead, and the rest of the run goes on. */
static int copy_run(lm_page_sink *sink, int uffd, uint8_t *dst, const uint8_t *src, uint64_t len)
{
    uint64_t ps = sink->ram->page_size;
    while (len) {
        struct uffdio_copy c = {.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len};
        int ret = lm_sys_ioctl(uffd, UFFDIO_COPY, &c);
        uint64_t done = c.copy > 0 ? (uint64_t)c.copy : 0;
        if (ret == 0)
            done = len;
        else if (errno == EEXIST && done == 0) {
            memcpy(dst, src, ps);
            done = ps;
        } else if (errno != EAGAIN && done == 0)
            return lm_err_set(sink->err, -errno, "UFFDIO_COPY into guest RAM at %p failed: %s",
                              (void *)dst, strerror(errno));
        dst += done;
        src += done;
        len -= done;
    }
    return 0;
}

/* Pages arrive in the channel's buffer; runs adjacent in the block and in
 * the buffer go with one UFFDIO_COPY each. Whether a page is present is
 * the kernel's word (EEXIST: copied over), never the receivedmap's: a bit
 * set by a zero range stands for a page that may still be missing. */
static int copy_place(lm_page_sink *sink, lm_block *b, const uint64_t *offsets,
                      uint8_t *const data[], uint32_t n)
{
    lm_inplace_sink *s = (lm_inplace_sink *)sink;
    uint64_t ps = sink->ram->page_size;
    if (!b->owned)
        return inplace_place(sink, b, offsets, data, n);
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i + 1;
        while (j < n && offsets[j] == offsets[j - 1] + ps && data[j] == data[j - 1] + ps)
            j++;
        int ret = copy_run(sink, s->uffd, b->host + offsets[i], data[i], (uint64_t)(j - i) * ps);
        if (ret < 0)
            return ret;
        for (; i < j; i++)
            lm_bit_set_atomic(b->received, offsets[i] / ps);
    }
    return 0;
}

/* Before the payload lands: what it commits is the budget's to allow. */
static int inplace_admit(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint32_t n)
{
    lm_inplace_sink *s = (lm_inplace_sink *)sink;
    return s->budget ? lm_ram_budget_admit(s->budget, b, offsets, n) : 0;
}

static const lm_page_sink_ops inplace_ops = {
    .name = "in place",
    .in_place = true,
    .place = inplace_place,
    .place_zero = inplace_place_zero,
    .place_zero_range = inplace_place_zero_range,
    .admit = inplace_admit,
};

static const lm_page_sink_ops copy_ops = {
    .name = "userfaultfd copy",
    .in_place = false,
    .place = copy_place,
    .place_zero = inplace_place_zero,
    .place_zero_range = inplace_place_zero_range,
    .admit = inplace_admit,
};

void lm_inplace_sink_set_copy(lm_inplace_sink *s, int uffd)
{
    s->uffd = uffd;
    s->sink.ops = uffd >= 0 ? &copy_ops : &inplace_ops;
}

void lm_inplace_sink_init(lm_inplace_sink *s, lm_ram *ram, bool no_receivedmap,
                          lm_ram_budget *budget, lm_err *err)
{
    s->sink = (lm_page_sink){.ops = &inplace_ops, .ram = ram, .err = err};
    s->no_receivedmap = no_receivedmap;
    s->budget = budget;
    s->uffd = -1;
}
