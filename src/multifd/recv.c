#include "multifd/recv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

int lm_recv_chan_init(lm_recv_chan *c, unsigned id, lm_conn *conn, lm_page_sink *sink,
                      lm_compression method, uint64_t page_size, lm_err *err)
{
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->conn = conn;
    c->page_size = page_size;
    c->err = err;
    atomic_init(&c->sink, NULL);
    int ret = lm_codec_init(&c->codec, method, false, LM_PACKET_MAX_PAGES, page_size, id, err);
    return ret < 0 ? ret : lm_recv_chan_set_sink(c, sink);
}

int lm_recv_chan_set_sink(lm_recv_chan *c, lm_page_sink *sink)
{
    /* Its own private anonymous mapping: UFFDIO_MOVE can take its pages. */
    if (!sink->ops->in_place && !c->bounce) {
        c->bounce = lm_ram_alloc(LM_PACKET_MAX_PAGES * c->page_size);
        if (!c->bounce)
            return lm_err_set(c->err, -ENOMEM, "out of memory for receive buffers");
    }
    atomic_store_explicit(&c->sink, sink, memory_order_release);
    return 0;
}

void lm_recv_chan_cleanup(lm_recv_chan *c)
{
    if (c->bounce)
        lm_ram_free(c->bounce, LM_PACKET_MAX_PAGES * c->page_size);
    c->bounce = NULL;
    lm_codec_cleanup(&c->codec);
}

static int bad_stream(lm_recv_chan *c, int code, const char *why)
{
    if (c->pool)
        return lm_err_set(c->err, code,
                          "invalid migration stream from the source "
                          "(channel %u): %s",
                          c->id, why);
    return lm_err_set(c->err, code, "invalid migration stream from the source: %s", why);
}

int lm_recv_chan_decode(lm_recv_chan *c, const uint8_t raw[LM_PACKET_HDR_SIZE], lm_packet_hdr *ph)
{
    char why[256];
    int ret = lm_packet_decode(raw, (uint32_t)c->page_size, c->codec.ops ? c->codec.cap : 0, ph,
                               why, sizeof(why));
    return ret < 0 ? bad_stream(c, ret, why) : 0;
}

static void count_packet(lm_recv_chan *c, const lm_packet_hdr *ph)
{
    atomic_fetch_add_explicit(&c->normal, ph->normal_pages, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->normal_bytes, (uint64_t)ph->normal_pages * c->page_size,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&c->zero, ph->zero_pages, memory_order_relaxed);
}

/* Reads the payload of the packet's normal pages into pages[]: raw with one
 * readv (adjacent pages share an iovec), or through the decompressor. */
static int read_payload(lm_recv_chan *c, const lm_packet_hdr *ph, uint8_t *const pages[])
{
    int ret;
    if (ph->flags & LM_PACKET_FLAG_COMPRESSED) {
        if ((ret = lm_conn_read(c->conn, c->codec.buf, ph->payload_size)) < 0)
            return ret;
        lm_err scratch;
        lm_err_init(&scratch);
        ret = c->codec.ops->decompress(c->codec.state, c->codec.buf, ph->payload_size, pages,
                                       ph->normal_pages, &scratch);
        return ret < 0 ? bad_stream(c, ret, scratch.msg) : 0;
    }
    struct iovec iov[LM_PACKET_MAX_PAGES];
    int iovcnt = 0;
    for (uint32_t i = 0; i < ph->normal_pages; i++) {
        if (iovcnt && (uint8_t *)iov[iovcnt - 1].iov_base + iov[iovcnt - 1].iov_len == pages[i])
            iov[iovcnt - 1].iov_len += c->page_size;
        else
            iov[iovcnt++] = (struct iovec){pages[i], c->page_size};
    }
    return lm_conn_readv(c->conn, iov, iovcnt);
}

int lm_recv_chan_body(lm_recv_chan *c, const lm_packet_hdr *ph)
{
    uint64_t ps = c->page_size;
    char why[256];
    lm_page_sink *sink = atomic_load_explicit(&c->sink, memory_order_acquire);
    lm_block *b = lm__ram_find(sink->ram, ph->block_id);
    if (!b) {
        snprintf(why, sizeof(why), "packet names unknown RAM block %u", ph->block_id);
        return bad_stream(c, -EBADMSG, why);
    }
    uint32_t n = ph->normal_pages + ph->zero_pages;
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
    /* In place, pages land where they live; otherwise (postcopy: the guest
     * runs, so a page must appear whole and at once) in the bounce buffer,
     * and the sink places them. */
    if (ph->normal_pages && sink->ops->admit &&
        (ret = sink->ops->admit(sink, b, c->offsets, ph->normal_pages)) < 0)
        return ret;
    uint8_t *pages[LM_PACKET_MAX_PAGES];
    for (uint32_t i = 0; i < ph->normal_pages; i++)
        pages[i] = sink->ops->in_place ? b->host + c->offsets[i] : c->bounce + i * ps;
    if ((ret = read_payload(c, ph, pages)) < 0)
        return ret;
    if (ph->normal_pages &&
        (ret = sink->ops->place(sink, b, c->offsets, pages, ph->normal_pages)) < 0)
        return ret;
    if (ph->zero_pages &&
        (ret = sink->ops->place_zero(sink, b, c->offsets + ph->normal_pages, ph->zero_pages)) < 0)
        return ret;
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
        if (ph.flags & LM_PACKET_FLAG_SYNC) {
            bad_stream(c, -EBADMSG, "SYNC packet on the postcopy preempt connection");
            break;
        }
        if ((ret = lm_recv_chan_body(c, &ph)) < 0)
            break;
    }
    /* Wake whoever waits on the sink: it reports the error we recorded. */
    lm_page_sink *sink = atomic_load(&c->sink);
    if (sink->ops->fail)
        sink->ops->fail(sink);
    return NULL;
}

int lm_recv_chan_start_thread(lm_recv_chan *c)
{
    int ret = -pthread_create(&c->thread, NULL, preempt_main, c);
    if (ret < 0)
        return lm_err_set(c->err, ret, "cannot start the postcopy preempt receiver");
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

int lm_multifd_recv_start(lm_multifd_recv *m, unsigned n, const lm_conn *conns,
                          const lm_multifd_recv_cfg *cfg, lm_err *err)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    m->err = err;
    m->cancel = cfg->cancel;
    m->main_fd = cfg->main_fd;
    m->n = n;
    m->chans = calloc(n, sizeof(*m->chans));
    if (!m->chans) {
        for (unsigned i = 0; i < n; i++) {
            lm_conn c = conns[i]; /* handed over: ours to close, TLS session and all */
            lm_conn_close(&c);
        }
        m->n = 0;
        return lm_err_set(err, -ENOMEM, "out of memory for %u channels", n);
    }
    int ret = 0;
    for (unsigned i = 0; i < n; i++) {
        lm_recv_chan *c = &m->chans[i];
        int r = lm_recv_chan_init(c, i, &c->own_conn, cfg->sink, cfg->method, cfg->page_size, err);
        snprintf(c->peer, sizeof(c->peer), "source (channel %u)", i);
        c->own_conn = conns[i];
        c->own_conn.timeout_ms = cfg->timeout_ms;
        c->own_conn.cancel = cfg->cancel;
        c->own_conn.peer = c->peer;
        c->own_conn.err = err;
        lm_conn_share_progress(&c->own_conn, cfg->progress_ns);
        c->pool = m;
        c->slow_us = i == 0 ? cfg->slow_channel_us : 0;
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
            /* A link cut mid-round looks like this too: a lost link. */
            ret = lm_err_set(m->err, -ECONNRESET,
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

int lm_multifd_recv_set_sink(lm_multifd_recv *m, lm_page_sink *sink)
{
    for (unsigned i = 0; m->chans && i < m->n; i++) {
        int ret = lm_recv_chan_set_sink(&m->chans[i], sink);
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
