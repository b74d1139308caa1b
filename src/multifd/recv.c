#include "multifd/recv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "migration/engine.h"
#include "migration/postcopy.h"
#include "util/clock.h"
#include "util/zero.h"

int lm_recv_chan_init(lm_recv_chan *c, unsigned id, struct lm_ctx *ctx, lm_conn *conn,
                      lm_compression method, bool no_receivedmap, lm_err *err)
{
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->ctx = ctx;
    c->conn = conn;
    c->no_receivedmap = no_receivedmap;
    c->comp = lm_compress_get((lm_compress_method)method);
    if (!c->comp)
        return 0;
    c->comp_bound =
        lm_compress_bound((lm_compress_method)method, LM_PACKET_MAX_PAGES, ctx->page_size);
    if (!(c->comp_buf = malloc(c->comp_bound)))
        return lm_err_set(err, -ENOMEM, "out of memory for channel %u", id);
    int ret = c->comp->recv_setup(&c->comp_state, LM_PACKET_MAX_PAGES, ctx->page_size, err);
    if (ret < 0) {
        free(c->comp_buf);
        c->comp_buf = NULL;
        c->comp = NULL;
    }
    return ret;
}

int lm_recv_chan_postcopy(lm_recv_chan *c, struct lm_postcopy_dst *pc, lm_err *err)
{
    /* Its own private anonymous mapping: UFFDIO_MOVE can take its pages. */
    if (!c->bounce) {
        c->bounce = lm_ram_alloc(LM_PACKET_MAX_PAGES * c->ctx->page_size);
        if (!c->bounce)
            return lm_err_set(err, -ENOMEM, "out of memory for postcopy buffers");
    }
    atomic_store_explicit(&c->postcopy, pc, memory_order_release);
    return 0;
}

void lm_recv_chan_cleanup(lm_recv_chan *c)
{
    if (c->bounce)
        lm_ram_free(c->bounce, LM_PACKET_MAX_PAGES * c->ctx->page_size);
    c->bounce = NULL;
    if (c->comp)
        c->comp->recv_cleanup(c->comp_state);
    c->comp = NULL;
    free(c->comp_buf);
    c->comp_buf = NULL;
}

static int bad_stream(lm_recv_chan *c, int code, const char *why)
{
    if (c->pool)
        return lm_err_set(&c->ctx->err, code,
                          "invalid migration stream from the source "
                          "(channel %u): %s",
                          c->id, why);
    return lm_err_set(&c->ctx->err, code, "invalid migration stream from the source: %s", why);
}

int lm_recv_chan_decode(lm_recv_chan *c, const uint8_t raw[LM_PACKET_HDR_SIZE], lm_packet_hdr *ph)
{
    char why[256];
    int ret = lm_packet_decode(raw, (uint32_t)c->ctx->page_size, c->comp ? c->comp_bound : 0, ph,
                               why, sizeof(why));
    return ret < 0 ? bad_stream(c, ret, why) : 0;
}

/* A zero page: fresh memory already reads as zero, so only a page that held
 * data before is cleared (seed 000's receivedmap); the baseline reads it. */
static void place_zero(lm_recv_chan *c, lm_block *b, uint64_t off)
{
    uint64_t ps = c->ctx->page_size, page = off / ps;
    uint8_t *dst = b->host + off;
    if (c->no_receivedmap) {
        if (!lm_buffer_is_zero(dst, ps))
            memset(dst, 0, ps);
    } else if (lm_bit_test_atomic(b->received, page) || !(b->flags & LM_RAM_ZEROED)) {
        memset(dst, 0, ps);
    }
    lm_bit_set_atomic(b->received, page);
}

static void count_packet(lm_recv_chan *c, const lm_packet_hdr *ph)
{
    atomic_fetch_add_explicit(&c->normal, ph->normal_pages, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->normal_bytes, (uint64_t)ph->normal_pages * c->ctx->page_size,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&c->zero, ph->zero_pages, memory_order_relaxed);
}

/* Reads a compressed payload and decodes it into exactly the packet's
 * normal pages (guest RAM in place, or the postcopy bounce buffer). */
static int read_compressed(lm_recv_chan *c, const lm_packet_hdr *ph, uint8_t *const pages[])
{
    int ret = lm_conn_read(c->conn, c->comp_buf, ph->payload_size);
    if (ret < 0)
        return ret;
    lm_err scratch;
    lm_err_init(&scratch);
    ret = c->comp->decompress(c->comp_state, c->comp_buf, ph->payload_size, pages, ph->normal_pages,
                              &scratch);
    return ret < 0 ? bad_stream(c, ret, scratch.msg) : 0;
}

/* Postcopy: the guest runs, so a page must appear whole and at once: read
 * (or decompress) into the bounce buffer, then place each page atomically. */
static int place_postcopy(lm_recv_chan *c, lm_postcopy_dst *pc, lm_block *b,
                          const lm_packet_hdr *ph)
{
    uint64_t ps = c->ctx->page_size;
    uint8_t *pages[LM_PACKET_MAX_PAGES];
    int ret;
    for (uint32_t i = 0; i < ph->normal_pages; i++)
        pages[i] = c->bounce + i * ps;
    if (ph->flags & LM_PACKET_FLAG_COMPRESSED) {
        if ((ret = read_compressed(c, ph, pages)) < 0)
            return ret;
    } else if ((ret = lm_conn_read(c->conn, c->bounce, ph->payload_size)) < 0) {
        return ret;
    }
    uint32_t n = ph->normal_pages + ph->zero_pages;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *data = i < ph->normal_pages ? pages[i] : NULL;
        if ((ret = lm_postcopy_dst_place(pc, b, c->offsets[i] / ps, data)) < 0)
            return ret;
    }
    count_packet(c, ph);
    return 0;
}

int lm_recv_chan_body(lm_recv_chan *c, const lm_packet_hdr *ph)
{
    uint64_t ps = c->ctx->page_size;
    char why[256];
    lm_block *b = lm__block_by_id(c->ctx, ph->block_id);
    if (!b) {
        snprintf(why, sizeof(why), "packet names unknown RAM block %u", ph->block_id);
        return bad_stream(c, -EBADMSG, why);
    }
    uint32_t n = ph->normal_pages + ph->zero_pages;
    lm_postcopy_dst *pc = atomic_load_explicit(&c->postcopy, memory_order_acquire);
    int ret = lm_conn_read(c->conn, c->raw, 8ull * n);
    if (ret < 0)
        return ret;
    /* Every offset is checked before any byte of payload lands. */
    for (uint32_t i = 0; i < n; i++) {
        c->offsets[i] = lm_get_be64(c->raw + 8 * i);
        if ((ret = lm_packet_check_offset(c->offsets[i], b->len, (uint32_t)ps, why, sizeof(why))) <
            0)
            return bad_stream(c, ret, why);
    }
    if (pc)
        return place_postcopy(c, pc, b, ph);
    if (ph->flags & LM_PACKET_FLAG_COMPRESSED) {
        uint8_t *pages[LM_PACKET_MAX_PAGES];
        for (uint32_t i = 0; i < ph->normal_pages; i++)
            pages[i] = b->host + c->offsets[i];
        if ((ret = read_compressed(c, ph, pages)) < 0)
            return ret;
    } else {
        struct iovec iov[LM_PACKET_MAX_PAGES];
        int iovcnt = 0;
        for (uint32_t i = 0; i < ph->normal_pages; i++) {
            uint8_t *page = b->host + c->offsets[i];
            if (iovcnt && (uint8_t *)iov[iovcnt - 1].iov_base + iov[iovcnt - 1].iov_len == page)
                iov[iovcnt - 1].iov_len += ps;
            else
                iov[iovcnt++] = (struct iovec){page, ps};
        }
        if ((ret = lm_conn_readv(c->conn, iov, iovcnt)) < 0)
            return ret;
    }
    for (uint32_t i = 0; i < ph->normal_pages; i++)
        lm_bit_set_atomic(b->received, c->offsets[i] / ps);
    for (uint32_t i = ph->normal_pages; i < n; i++)
        place_zero(c, b, c->offsets[i]);
    count_packet(c, ph);
    return 0;
}

/* The preempt connection's receiver: packets until the source closes it. */
static void *preempt_main(void *arg)
{
    lm_recv_chan *c = arg;
    for (;;) {
        uint8_t raw[LM_PACKET_HDR_SIZE];
        lm_packet_hdr ph;
        int ret = lm_conn_read_or_eof(c->conn, raw, sizeof(raw));
        if (ret == 1)
            return NULL;
        if (ret < 0 || (ret = lm_recv_chan_decode(c, raw, &ph)) < 0)
            break;
        if ((ph.flags & LM_PACKET_FLAG_SYNC) || !atomic_load(&c->postcopy)) {
            bad_stream(c, -EBADMSG, "unexpected packet on the postcopy preempt connection");
            break;
        }
        if ((ret = lm_recv_chan_body(c, &ph)) < 0)
            break;
    }
    /* Wake the main thread: it reports the error we recorded. */
    lm_postcopy_dst *pc = atomic_load(&c->postcopy);
    if (pc) {
        pthread_mutex_lock(&pc->lock);
        pc->failed = true;
        pthread_cond_broadcast(&pc->cond);
        pthread_mutex_unlock(&pc->lock);
    }
    return NULL;
}

int lm_recv_chan_start_thread(lm_recv_chan *c, lm_err *err)
{
    int ret = -pthread_create(&c->thread, NULL, preempt_main, c);
    if (ret < 0)
        return lm_err_set(err, ret, "cannot start the postcopy preempt receiver");
    c->started = true;
    return 0;
}

void lm_recv_chan_join(lm_recv_chan *c)
{
    if (c->started) {
        shutdown(c->conn->fd, SHUT_RDWR);
        pthread_join(c->thread, NULL);
        c->started = false;
    }
}

static void fail_pool(lm_multifd_recv *m)
{
    /* Lock held. Shutting the main connection down for reading wakes the
     * main thread; it can still send the source an ERROR saying why. A
     * receiver woken by lm_multifd_recv_stop() is not a failure. */
    if (m->stopping)
        return;
    m->failed = true;
    if (m->main_fd >= 0)
        shutdown(m->main_fd, SHUT_RD);
    pthread_cond_broadcast(&m->cond);
}

static void *receiver_main(void *arg)
{
    lm_recv_chan *c = arg;
    lm_multifd_recv *m = c->pool;
    int ret;

    for (;;) {
        uint8_t raw[LM_PACKET_HDR_SIZE];
        lm_packet_hdr ph;
        ret = lm_conn_read_or_eof(c->conn, raw, sizeof(raw));
        if (ret == 1) { /* the source closed the channel between packets */
            pthread_mutex_lock(&m->lock);
            m->ended++;
            pthread_cond_broadcast(&m->cond);
            pthread_mutex_unlock(&m->lock);
            return NULL;
        }
        if (ret < 0 || (ret = lm_recv_chan_decode(c, raw, &ph)) < 0)
            break;
        if (ph.flags & LM_PACKET_FLAG_SYNC) {
            pthread_mutex_lock(&m->lock);
            uint64_t gen = m->go_gen;
            m->synced++;
            pthread_cond_broadcast(&m->cond);
            while (m->go_gen == gen && !m->failed)
                pthread_cond_wait(&m->cond, &m->lock);
            bool failed = m->failed;
            pthread_mutex_unlock(&m->lock);
            if (failed)
                return NULL;
            continue;
        }
        if (c->slow_us) {
            struct timespec ts = {0, (long)c->slow_us * 1000};
            nanosleep(&ts, NULL);
        }
        if ((ret = lm_recv_chan_body(c, &ph)) < 0)
            break;
    }
    pthread_mutex_lock(&m->lock);
    fail_pool(m);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int lm_multifd_recv_start(lm_multifd_recv *m, unsigned n, const int *fds, struct lm_ctx *ctx,
                          unsigned timeout_ms, const _Atomic int *cancel, lm_compression method,
                          bool no_receivedmap, unsigned slow_channel_us, int main_fd,
                          _Atomic uint64_t *progress_ns, lm_err *err)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    m->err = err;
    m->cancel = cancel;
    m->main_fd = main_fd;
    m->n = n;
    m->chans = calloc(n, sizeof(*m->chans));
    if (!m->chans) {
        for (unsigned i = 0; i < n; i++)
            close(fds[i]);
        m->n = 0;
        return lm_err_set(err, -ENOMEM, "out of memory for %u channels", n);
    }
    int ret = 0;
    for (unsigned i = 0; i < n; i++) {
        lm_recv_chan *c = &m->chans[i];
        int r = lm_recv_chan_init(c, i, ctx, &c->own_conn, method, no_receivedmap, err);
        snprintf(c->peer, sizeof(c->peer), "source (channel %u)", i);
        lm_conn_init(&c->own_conn, fds[i], timeout_ms, cancel, c->peer, err);
        lm_conn_share_progress(&c->own_conn, progress_ns);
        c->pool = m;
        c->slow_us = i == 0 ? slow_channel_us : 0;
        if (ret == 0)
            ret = r;
    }
    for (unsigned i = 0; i < n && ret == 0; i++) {
        lm_recv_chan *c = &m->chans[i];
        if ((ret = -pthread_create(&c->thread, NULL, receiver_main, c)) < 0)
            lm_err_set(err, ret, "cannot start the receiver thread of channel %u", i);
        c->started = ret == 0;
    }
    if (ret < 0)
        lm_multifd_recv_stop(m);
    return ret;
}

static int timed_wait(lm_multifd_recv *m)
{
    lm_cond_wait_ms(&m->cond, &m->lock, 100);
    if (m->cancel && atomic_load(m->cancel))
        return lm_err_set(m->err, -ECANCELED, "migration cancelled");
    return 0;
}

int lm_multifd_recv_barrier(lm_multifd_recv *m, unsigned timeout_ms)
{
    int ret = 0;
    pthread_mutex_lock(&m->lock);
    unsigned last = m->synced;
    uint64_t since = lm_now_ns();
    while (m->synced < m->n) {
        if (m->failed) {
            ret = m->err->code ? m->err->code : -EIO;
            break;
        }
        if (m->ended) {
            ret = lm_err_set(m->err, -EPROTO,
                             "a multifd channel was closed by the source "
                             "before the end of the round");
            break;
        }
        if ((ret = timed_wait(m)) < 0)
            break;
        if (m->synced != last) {
            last = m->synced;
            since = lm_now_ns();
        } else if (lm_now_ns() - since > (uint64_t)timeout_ms * 1000000) {
            ret = lm_err_set(m->err, -ETIMEDOUT,
                             "%u of %u multifd channels reached the end "
                             "of the round within %u ms",
                             m->synced, m->n, timeout_ms);
            break;
        }
    }
    if (ret == 0) {
        m->synced = 0;
        m->go_gen++;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

int lm_multifd_recv_finish(lm_multifd_recv *m, unsigned timeout_ms)
{
    int ret = 0;
    uint64_t start = lm_now_ns();
    pthread_mutex_lock(&m->lock);
    while (m->ended < m->n && !m->failed) {
        if ((ret = timed_wait(m)) < 0)
            break;
        if (lm_now_ns() - start > (uint64_t)timeout_ms * 1000000) {
            ret = lm_err_set(m->err, -ETIMEDOUT,
                             "the source did not close its multifd "
                             "channels after the last round");
            break;
        }
    }
    if (ret == 0 && m->failed)
        ret = m->err->code ? m->err->code : -EIO;
    pthread_mutex_unlock(&m->lock);
    return ret;
}

void lm_multifd_recv_stop(lm_multifd_recv *m)
{
    if (!m->chans)
        return;
    pthread_mutex_lock(&m->lock);
    m->failed = m->failed || m->ended < m->n; /* release anyone parked at a barrier */
    m->stopping = true;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < m->n; i++)
        shutdown(m->chans[i].own_conn.fd, SHUT_RDWR);
    for (unsigned i = 0; i < m->n; i++)
        if (m->chans[i].started)
            pthread_join(m->chans[i].thread, NULL);
    /* Keep the totals: the report wants them whatever happened. */
    lm_multifd_recv_counters(m, &m->final_normal, &m->final_zero, &m->final_normal_bytes,
                             &m->final_bytes);
    for (unsigned i = 0; i < m->n; i++) {
        lm_recv_chan *c = &m->chans[i];
        lm_recv_chan_cleanup(c);
        lm_conn_close(&c->own_conn);
    }
    free(m->chans);
    m->chans = NULL;
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
}

int lm_multifd_recv_postcopy(lm_multifd_recv *m, struct lm_postcopy_dst *pc, lm_err *err)
{
    for (unsigned i = 0; m->chans && i < m->n; i++) {
        int ret = lm_recv_chan_postcopy(&m->chans[i], pc, err);
        if (ret < 0)
            return ret;
    }
    return 0;
}

void lm_multifd_recv_counters(lm_multifd_recv *m, uint64_t *normal, uint64_t *zero,
                              uint64_t *normal_bytes, uint64_t *bytes)
{
    if (!m->chans) {
        *normal += m->final_normal;
        *zero += m->final_zero;
        *normal_bytes += m->final_normal_bytes;
        *bytes += m->final_bytes;
        return;
    }
    for (unsigned i = 0; i < m->n; i++) {
        lm_recv_chan *c = &m->chans[i];
        *normal += atomic_load_explicit(&c->normal, memory_order_relaxed);
        *zero += atomic_load_explicit(&c->zero, memory_order_relaxed);
        *normal_bytes += atomic_load_explicit(&c->normal_bytes, memory_order_relaxed);
        *bytes += c->own_conn.bytes_in; /* exact once the threads are joined */
    }
}
