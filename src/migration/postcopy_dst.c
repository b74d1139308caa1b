/* The destination's half of postcopy: see postcopy.h. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dirty/linux_compat.h"
#include "dirty/pagemap.h"
#include "dirty/uffd.h"
#include "migration/postcopy.h"
#include "proto/wire.h"
#include "util/clock.h"

size_t lm_postcopy_switch_size(const lm_ram *ram)
{
    size_t n = 0;
    for (unsigned i = 0; i < ram->nblocks; i++)
        n += lm_switch_block_size(ram->blocks[i].npages);
    return n;
}

void lm_postcopy_switch_encode(const lm_ram *ram, lm_word *const needed[], uint8_t *out)
{
    for (unsigned i = 0; i < ram->nblocks; i++)
        out = lm_switch_block_encode(out, ram->blocks[i].id, ram->blocks[i].npages, needed[i]);
}

static void postcopy_sink_init(lm_postcopy_dst *pc);

static int bad_switch(lm_postcopy_dst *pc, const char *why)
{
    return lm_err_set(&pc->ctx->err, -EBADMSG, "invalid POSTCOPY_SWITCH from the source: %s", why);
}

int lm_postcopy_dst_init(lm_postcopy_dst *pc, lm_ctx *ctx, const uint8_t *body, size_t len,
                         bool verify, bool move, lm_conn *conn, pthread_mutex_t *conn_lock)
{
    memset(pc, 0, sizeof(*pc));
    pc->ctx = ctx;
    pc->move = move;
    pc->uffd = -1;
    pc->stop_fd = -1;
    pc->verify = verify;
    pc->conn = conn;
    pc->conn_lock = conn_lock;
    pthread_mutex_init(&pc->lock, NULL);
    pthread_cond_init(&pc->cond, NULL);
    postcopy_sink_init(pc);
    if (len != lm_postcopy_switch_size(&ctx->ram))
        return bad_switch(pc, "its size does not match the RAM layout");
    uint64_t remaining = 0;
    for (unsigned i = 0; i < ctx->ram.nblocks; i++) {
        uint64_t npages = ctx->ram.blocks[i].npages;
        pc->needed[i] = lm_bitmap_new(npages);
        pc->placed[i] = lm_bitmap_new(npages);
        pc->requested[i] = lm_bitmap_new(npages);
        pc->fault_ns[i] = calloc(npages, sizeof(uint64_t));
        if (verify)
            pc->hashes[i] = calloc(npages, sizeof(uint64_t));
        if (!pc->needed[i] || !pc->placed[i] || !pc->requested[i] || !pc->fault_ns[i] ||
            (verify && !pc->hashes[i]))
            return lm_err_set(&ctx->err, -ENOMEM, "out of memory for postcopy bitmaps");
        char why[128];
        long used = lm_switch_block_decode(body, len, ctx->ram.blocks[i].id, npages, pc->needed[i],
                                           why, sizeof(why));
        if (used < 0)
            return bad_switch(pc, why);
        body += used;
        len -= (size_t)used;
        remaining += lm_bitmap_count(pc->needed[i], npages);
    }
    atomic_store(&pc->remaining, remaining);
    return 0;
}

/* Called with the page's 'placed' bit just taken by this thread. */
static void page_done(lm_postcopy_dst *pc, unsigned r, uint64_t page)
{
    if (lm_bit_test(pc->needed[r], page) && atomic_fetch_sub(&pc->remaining, 1) == 1) {
        pthread_mutex_lock(&pc->lock);
        pthread_cond_broadcast(&pc->cond);
        pthread_mutex_unlock(&pc->lock);
    }
    uint64_t waited = __atomic_load_n(&pc->fault_ns[r][page], __ATOMIC_ACQUIRE);
    if (waited) {
        uint64_t ns = lm_now_ns() - waited;
        pthread_mutex_lock(&pc->lock);
        pc->blocktime_ns += ns;
        if (lm_bit_test_atomic(pc->requested[r], page))
            lm_hist_record(&pc->latency_ns, ns);
        pthread_mutex_unlock(&pc->lock);
    }
}

int lm_postcopy_dst_place(lm_postcopy_dst *pc, lm_block *b, uint64_t page, const uint8_t *data)
{
    unsigned r = lm__ram_index(&pc->ctx->ram, b);
    uint64_t ps = pc->ctx->ram.page_size;
    if (lm_bit_test_and_set_atomic(pc->placed[r], page)) {
        atomic_fetch_add_explicit(&pc->duplicates, 1, memory_order_relaxed);
        return 0;
    }
    if (pc->verify)
        pc->hashes[r][page] = lm__page_hash(data, ps);
    uint64_t dst = (uintptr_t)(b->host + page * ps);
    int rc;
    if (data && pc->move) {
        /* Zero-copy: the receive buffer's page itself moves into the guest
         * (the buffer gets a fresh page on its next use). */
        struct uffdio_move mv = {.dst = dst, .src = (uintptr_t)data, .len = ps};
        rc = lm_sys_ioctl(pc->uffd, UFFDIO_MOVE, &mv);
        if (rc == 0)
            atomic_fetch_add_explicit(&pc->moved, 1, memory_order_relaxed);
    } else if (data) {
        struct uffdio_copy copy = {.dst = dst, .src = (uintptr_t)data, .len = ps};
        rc = lm_sys_ioctl(pc->uffd, UFFDIO_COPY, &copy);
    } else {
        struct uffdio_zeropage zp = {.range = {.start = dst, .len = ps}};
        rc = lm_sys_ioctl(pc->uffd, UFFDIO_ZEROPAGE, &zp);
    }
    if (rc < 0 && errno == EEXIST) {
        /* Already there (the kernel raced us): the content is what we
         * placed before, so count it and wake anyone waiting. */
        struct uffdio_range range = {.start = dst, .len = ps};
        (void)lm_sys_ioctl(pc->uffd, UFFDIO_WAKE, &range);
        atomic_fetch_add_explicit(&pc->eexist, 1, memory_order_relaxed);
    } else if (rc < 0) {
        int err = -errno;
        return lm_err_set(&pc->ctx->err, err, "placing page 0x%llx of block %u failed: %s",
                          (unsigned long long)page * ps, b->id, strerror(-err));
    } else {
        atomic_fetch_add_explicit(data ? &pc->placed_pages : &pc->zero_placed, 1,
                                  memory_order_relaxed);
    }
    page_done(pc, r, page);
    return 0;
}

/* Pause: wake the main thread, which reports the error recorded. */
static void postcopy_failed(lm_postcopy_dst *pc)
{
    pthread_mutex_lock(&pc->lock);
    pc->failed = true;
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
}

/* The page sink the channels deliver to once the guest runs here. */
static lm_postcopy_dst *pc_of(lm_page_sink *sink)
{
    return (lm_postcopy_dst *)((char *)sink - offsetof(lm_postcopy_dst, sink));
}

static int sink_place(lm_page_sink *sink, lm_block *b, const uint64_t *offsets,
                      uint8_t *const data[], uint32_t n)
{
    lm_postcopy_dst *pc = pc_of(sink);
    for (uint32_t i = 0; i < n; i++) {
        int ret = lm_postcopy_dst_place(pc, b, offsets[i] / sink->ram->page_size, data[i]);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int sink_place_zero(lm_page_sink *sink, lm_block *b, const uint64_t *offsets, uint32_t n)
{
    lm_postcopy_dst *pc = pc_of(sink);
    for (uint32_t i = 0; i < n; i++) {
        int ret = lm_postcopy_dst_place(pc, b, offsets[i] / sink->ram->page_size, NULL);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static void sink_fail(lm_page_sink *sink)
{
    postcopy_failed(pc_of(sink));
}

static const lm_page_sink_ops postcopy_sink_ops = {
    .name = "userfaultfd",
    .in_place = false,
    .place = sink_place,
    .place_zero = sink_place_zero,
    .fail = sink_fail,
};

static void postcopy_sink_init(lm_postcopy_dst *pc)
{
    pc->sink =
        (lm_page_sink){.ops = &postcopy_sink_ops, .ram = &pc->ctx->ram, .err = &pc->ctx->err};
}

/* Called with conn_lock held. */
static int send_request_locked(lm_postcopy_dst *pc, const lm_block *b, uint64_t page)
{
    uint8_t body[LM_PAGE_REQUEST_SIZE];
    lm_page_request req = {.block_id = b->id, .offset = page * pc->ctx->ram.page_size};
    lm_page_request_encode(&req, body);
    return lm_conn_send_frame(pc->conn, LM_MSG_PAGE_REQUEST, body, sizeof(body));
}

/* A lost return path does not end the fault thread: the request is noted
 * and sent again after a recovery; the main thread is woken to pause. */
static int send_request(lm_postcopy_dst *pc, const lm_block *b, uint64_t page)
{
    atomic_fetch_add_explicit(&pc->requests, 1, memory_order_relaxed);
    pthread_mutex_lock(pc->conn_lock);
    bool down = pc->link_down;
    if (pc->held) { /* noted in 'requested': lm_postcopy_dst_release sends it */
        pthread_mutex_unlock(pc->conn_lock);
        return 0;
    }
    if (!down && send_request_locked(pc, b, page) < 0)
        down = pc->link_down = true;
    pthread_mutex_unlock(pc->conn_lock);
    if (down)
        postcopy_failed(pc);
    return 0;
}

void lm_postcopy_dst_link_down(lm_postcopy_dst *pc)
{
    pthread_mutex_lock(pc->conn_lock);
    pc->link_down = true;
    pthread_mutex_unlock(pc->conn_lock);
}

/* Sends every noted request whose page has not arrived; conn_lock held. */
static int resend_requests_locked(lm_postcopy_dst *pc)
{
    lm_ctx *ctx = pc->ctx;
    int ret = 0;
    for (unsigned r = 0; r < ctx->ram.nblocks && ret == 0; r++) {
        lm_block *b = &ctx->ram.blocks[r];
        for (uint64_t p = lm_bitmap_next_set(pc->requested[r], b->npages, 0);
             ret == 0 && p < b->npages; p = lm_bitmap_next_set(pc->requested[r], b->npages, p + 1))
            if (!lm_bit_test_atomic(pc->placed[r], p))
                ret = send_request_locked(pc, b, p);
    }
    if (ret < 0)
        pc->link_down = true;
    return ret;
}

int lm_postcopy_dst_link_up(lm_postcopy_dst *pc)
{
    pthread_mutex_lock(&pc->lock);
    pc->failed = false;
    pthread_mutex_unlock(&pc->lock);
    pthread_mutex_lock(pc->conn_lock);
    pc->link_down = false;
    pc->held = false;
    int ret = resend_requests_locked(pc);
    pthread_mutex_unlock(pc->conn_lock);
    return ret;
}

int lm_postcopy_dst_release(lm_postcopy_dst *pc)
{
    pthread_mutex_lock(pc->conn_lock);
    int ret = 0;
    if (pc->held) {
        pc->held = false;
        ret = pc->link_down ? 0 : resend_requests_locked(pc);
    }
    pthread_mutex_unlock(pc->conn_lock);
    if (ret < 0)
        postcopy_failed(pc);
    return 0;
}

void lm_postcopy_dst_missing(lm_postcopy_dst *pc, lm_word *const missing[])
{
    lm_ctx *ctx = pc->ctx;
    for (unsigned r = 0; r < ctx->ram.nblocks; r++) {
        uint64_t npages = ctx->ram.blocks[r].npages;
        lm_bitmap_clear_all(missing[r], npages);
        for (uint64_t p = lm_bitmap_next_set(pc->needed[r], npages, 0); p < npages;
             p = lm_bitmap_next_set(pc->needed[r], npages, p + 1))
            if (!lm_bit_test_atomic(pc->placed[r], p))
                lm_bit_set(missing[r], p);
    }
}

static int handle_fault(lm_postcopy_dst *pc, uint64_t addr)
{
    lm_ctx *ctx = pc->ctx;
    for (unsigned r = 0; r < ctx->ram.nblocks; r++) {
        lm_block *b = &ctx->ram.blocks[r];
        uint64_t base = (uintptr_t)b->host;
        if (addr < base || addr - base >= b->len)
            continue;
        uint64_t page = (addr - base) / ctx->ram.page_size;
        atomic_fetch_add_explicit(&pc->faults, 1, memory_order_relaxed);
        if (lm_bit_test_atomic(pc->placed[r], page))
            return 0; /* placed meanwhile; the placement woke the vCPU */
        uint64_t zero = 0;
        __atomic_compare_exchange_n(&pc->fault_ns[r][page], &zero, lm_now_ns(), false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        if (!lm_bit_test(pc->needed[r], page))
            return lm_postcopy_dst_place(pc, b, page, NULL); /* zero, never sent */
        if (!lm_bit_test_and_set_atomic(pc->requested[r], page))
            return send_request(pc, b, page);
        return 0;
    }
    return 0; /* not guest RAM: not ours to resolve */
}

static int on_fault(void *opaque, uint64_t addr, uint64_t flags)
{
    (void)flags;
    return handle_fault(opaque, addr);
}

static void *fault_main(void *arg)
{
    lm_postcopy_dst *pc = arg;
    if (lm_uffd_fault_loop(pc->uffd, pc->stop_fd, pc->ctx->ram.page_size, on_fault, pc) < 0) {
        /* The return path is gone: pause (vCPUs keep waiting for their
         * pages, nothing is thrown away) and let the main thread report it. */
        postcopy_failed(pc);
    }
    return NULL;
}

/* Drops the destination's stale copies of the needed pages, one madvise
 * per run of adjacent pages, so that touching them faults. */
static int discard_needed(lm_postcopy_dst *pc, unsigned r)
{
    lm_block *b = &pc->ctx->ram.blocks[r];
    uint64_t ps = pc->ctx->ram.page_size;
    for (uint64_t p = lm_bitmap_next_set(pc->needed[r], b->npages, 0); p < b->npages;) {
        uint64_t end = p;
        while (end < b->npages && lm_bit_test(pc->needed[r], end))
            end++;
        if (madvise(b->host + p * ps, (end - p) * ps, MADV_DONTNEED) < 0)
            return lm_err_set(&pc->ctx->err, -errno, "discarding stale pages failed: %s",
                              strerror(errno));
        p = lm_bitmap_next_set(pc->needed[r], b->npages, end);
    }
    return 0;
}

int lm_postcopy_dst_start(lm_postcopy_dst *pc)
{
    lm_ctx *ctx = pc->ctx;
    lm_pagemap pm = {.fd = -1};
    int ret = lm_pagemap_open(&pm);
    if (ret < 0)
        return lm_err_set(&ctx->err, ret, "cannot open /proc/self/pagemap: %s", strerror(-ret));
    if ((pc->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
        ret = lm_err_set(&ctx->err, -errno, "eventfd: %s", strerror(errno));
        goto out;
    }
    uint64_t features = 0;
    if (pc->move) {
        if ((ret = lm_uffd_probe_features(&features, &ctx->err)) < 0)
            goto out;
        if (!(features & UFFD_FEATURE_MOVE)) {
            ret = lm_err_set(&ctx->err, -ENOTSUP,
                             "this kernel has no UFFDIO_MOVE (Linux 6.8+): "
                             "drop --postcopy-place move");
            goto out;
        }
        features = UFFD_FEATURE_MOVE;
    }
    if ((pc->uffd = lm_uffd_open(features, &ctx->err)) < 0) {
        ret = pc->uffd;
        goto out;
    }
    uint64_t zero_hash = lm__zero_page_hash(ctx->ram.page_size);
    for (unsigned r = 0; r < ctx->ram.nblocks && ret == 0; r++) {
        lm_block *b = &ctx->ram.blocks[r];
        if ((ret = discard_needed(pc, r)) < 0)
            break;
        /* Pages present and not needed are final: mark them placed (and
         * hash them now, before the guest can change them). Pages neither
         * present nor needed are zero: placed on their first fault. */
        lm_word *present = lm_bitmap_new(b->npages);
        if (!present) {
            ret = lm_err_set(&ctx->err, -ENOMEM, "out of memory");
            break;
        }
        ret = lm_pagemap_pages(&pm, b->host, b->len, LM_PM_PRESENT | LM_PM_SWAPPED, present);
        for (uint64_t p = 0; ret == 0 && p < b->npages; p++)
            if (lm_bit_test(present, p) && !lm_bit_test(pc->needed[r], p))
                lm_bit_set(pc->placed[r], p);
        /* Verification's share of the switch, reported apart from downtime. */
        uint64_t t0 = lm_now_ns();
        for (uint64_t p = 0; ret == 0 && pc->verify && p < b->npages; p++)
            if (!lm_bit_test(pc->needed[r], p))
                pc->hashes[r][p] =
                    lm_bit_test(pc->placed[r], p)
                        ? lm__page_hash(b->host + p * ctx->ram.page_size, ctx->ram.page_size)
                        : zero_hash;
        pc->verify_ns += lm_now_ns() - t0;
        lm_bitmap_free(present);
        if (ret < 0) {
            lm_err_set(&ctx->err, ret, "pagemap scan failed: %s", strerror(-ret));
            break;
        }
        if (ret == 0)
            ret = lm_uffd_register(pc->uffd, b->host, b->len, UFFDIO_REGISTER_MODE_MISSING,
                                   &ctx->err);
    }
    pc->held = true; /* until RESUMED is out: lm_postcopy_dst_release */
    if (ret == 0 && (ret = -pthread_create(&pc->fault_thread, NULL, fault_main, pc)) < 0)
        lm_err_set(&ctx->err, ret, "cannot start the postcopy fault thread");
    pc->fault_thread_started = ret == 0;
out:
    lm_pagemap_close(&pm);
    return ret;
}

int lm_postcopy_dst_wait(lm_postcopy_dst *pc, unsigned timeout_ms)
{
    int ret = 0;
    uint64_t last = atomic_load(&pc->remaining), since = lm_now_ns();
    pthread_mutex_lock(&pc->lock);
    while (atomic_load(&pc->remaining) && !pc->failed) {
        lm_cond_wait_ms(&pc->cond, &pc->lock, 100);
        uint64_t now_left = atomic_load(&pc->remaining);
        if (now_left != last) {
            last = now_left;
            since = lm_now_ns();
        } else if (lm_now_ns() - since > (uint64_t)timeout_ms * 1000000) {
            ret = lm_err_set(&pc->ctx->err, -ETIMEDOUT,
                             "%llu pages still missing on the "
                             "destination after the source finished sending",
                             (unsigned long long)now_left);
            break;
        }
        if (atomic_load(&pc->ctx->cancel)) {
            ret = lm_err_set(&pc->ctx->err, -ECANCELED, "migration cancelled");
            break;
        }
    }
    if (ret == 0 && pc->failed)
        ret = pc->ctx->err.code ? pc->ctx->err.code : -EIO;
    pthread_mutex_unlock(&pc->lock);
    return ret;
}

void lm_postcopy_dst_stop(lm_postcopy_dst *pc, bool release)
{
    if (pc->fault_thread_started) {
        uint64_t one = 1;
        if (write(pc->stop_fd, &one, sizeof(one)) != sizeof(one))
            abort(); /* an eventfd write of 1 cannot fail */
        pthread_join(pc->fault_thread, NULL);
        pc->fault_thread_started = false;
    }
    if (!release)
        return;
    if (pc->uffd >= 0) {
        for (unsigned r = 0; r < pc->ctx->ram.nblocks; r++)
            lm_uffd_unregister(pc->uffd, pc->ctx->ram.blocks[r].host, pc->ctx->ram.blocks[r].len);
        close(pc->uffd);
        pc->uffd = -1;
    }
    if (pc->stop_fd >= 0)
        close(pc->stop_fd);
    pc->stop_fd = -1;
    for (unsigned r = 0; r < LM_MAX_BLOCKS; r++) {
        lm_bitmap_free(pc->needed[r]);
        lm_bitmap_free(pc->placed[r]);
        lm_bitmap_free(pc->requested[r]);
        free(pc->fault_ns[r]);
        free(pc->hashes[r]);
        pc->needed[r] = pc->placed[r] = pc->requested[r] = NULL;
        pc->fault_ns[r] = pc->hashes[r] = NULL;
    }
}
