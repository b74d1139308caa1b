#include "multifd/send.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ram/ram.h"
#include "util/clock.h"
#include "util/zero.h"

int lm_send_chan_init(lm_send_chan *c, unsigned id, lm_conn *conn, bool framed, bool detect_zero,
                      lm_compression method, uint64_t page_size, lm_err *err)
{
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->conn = conn;
    c->framed = framed;
    c->detect_zero = detect_zero;
    c->page_size = page_size;
    return lm_codec_init(&c->codec, method, true, LM_PACKET_MAX_PAGES, page_size, id, err);
}

void lm_send_chan_cleanup(lm_send_chan *c)
{
    lm_codec_cleanup(&c->codec);
}

/* Multifd detection: move the normal pages that read as zero to the zero
 * list, keeping offsets in order within each list. */
static void split_zero_pages(lm_send_chan *c, lm_page_batch *b)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < b->nnormal; i++) {
        uint64_t off = b->normal[i];
        if (lm_buffer_is_zero(b->block->host + off, c->page_size))
            b->zero[b->nzero++] = off;
        else
            b->normal[kept++] = off;
    }
    b->nnormal = kept;
}

int lm_send_chan_packet(lm_send_chan *c, lm_page_batch *b, lm_err *err)
{
    uint8_t head[LM_FRAME_HDR_SIZE + LM_PACKET_HDR_SIZE + 8 * LM_PACKET_MAX_PAGES];
    uint8_t *pkt = c->framed ? head + LM_FRAME_HDR_SIZE : head;
    uint8_t *pages[LM_PACKET_MAX_PAGES];
    struct iovec iov[1 + LM_PACKET_MAX_PAGES];
    lm_packet_hdr ph = {.pages_alloc = LM_PACKET_MAX_PAGES};

    if (b->sync) {
        ph.flags = LM_PACKET_FLAG_SYNC;
    } else {
        if (c->detect_zero)
            split_zero_pages(c, b);
        ph.normal_pages = b->nnormal;
        ph.zero_pages = b->nzero;
        ph.block_id = b->block->id;
        ph.packet_num = atomic_load_explicit(&c->packets, memory_order_relaxed);
        ph.payload_size = (uint64_t)b->nnormal * c->page_size;
    }
    uint32_t n = ph.normal_pages + ph.zero_pages;
    uint8_t *offs = pkt + LM_PACKET_HDR_SIZE;
    for (uint32_t i = 0; i < b->nnormal; i++)
        lm_put_be64(offs + 8 * i, b->normal[i]);
    for (uint32_t i = 0; i < b->nzero; i++)
        lm_put_be64(offs + 8 * (b->nnormal + i), b->zero[i]);

    int iovcnt = 1;
    if (b->nnormal && c->codec.ops && !b->sync) {
        for (uint32_t i = 0; i < b->nnormal; i++)
            pages[i] = b->block->host + b->normal[i];
        size_t clen = 0;
        int ret = c->codec.ops->compress(c->codec.state, pages, b->nnormal, c->codec.buf,
                                         c->codec.cap, &clen, err);
        if (ret < 0)
            return ret;
        ph.flags |= LM_PACKET_FLAG_COMPRESSED;
        ph.payload_size = clen;
        iov[iovcnt++] = (struct iovec){c->codec.buf, clen};
    } else {
        /* Straight from guest RAM; adjacent pages share one iovec. */
        for (uint32_t i = 0; i < b->nnormal; i++) {
            uint8_t *page = b->block->host + b->normal[i];
            struct iovec *last = &iov[iovcnt - 1];
            if (iovcnt > 1 && (uint8_t *)last->iov_base + last->iov_len == page)
                last->iov_len += c->page_size;
            else
                iov[iovcnt++] = (struct iovec){page, c->page_size};
        }
    }
    lm_packet_encode(&ph, pkt);
    size_t head_len = (size_t)(offs - head) + 8 * (size_t)n;
    if (c->framed)
        lm_frame_encode(head, LM_MSG_PAGES,
                        (uint32_t)(head_len - LM_FRAME_HDR_SIZE + ph.payload_size));
    iov[0] = (struct iovec){head, head_len};
    int ret = lm_conn_writev(c->conn, iov, iovcnt);
    if (ret < 0)
        return ret;
    atomic_fetch_add_explicit(&c->normal, b->nnormal, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->normal_bytes, (uint64_t)b->nnormal * c->page_size,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&c->zero, b->nzero, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->packets, 1, memory_order_relaxed);
    atomic_store_explicit(&c->wire_bytes, c->conn->bytes_out, memory_order_relaxed);
    lm_batch_reset(b);
    return 0;
}

static void fail_pool(lm_multifd_send *m)
{
    /* Called with the lock held. The main connection is shut down so a
     * migration thread blocked on it wakes up and sees the failure. */
    m->failed = true;
    if (m->main_fd >= 0)
        shutdown(m->main_fd, SHUT_RD); /* wakes a reader; an ERROR can still go out */
    pthread_cond_broadcast(&m->cond);
}

static void *sender_main(void *arg)
{
    lm_send_chan *c = arg;
    lm_multifd_send *m = c->pool;

    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (!c->busy && !m->quit)
            pthread_cond_wait(&m->cond, &m->lock);
        if (m->quit)
            break;
        pthread_mutex_unlock(&m->lock);
        int ret = lm_send_chan_packet(c, c->job, m->err);
        pthread_mutex_lock(&m->lock);
        c->busy = false;
        if (ret < 0) {
            fail_pool(m);
            break;
        }
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* Waits on the pool's condition in 100 ms slices so cancel is noticed. */
static int pool_wait(lm_multifd_send *m)
{
    lm_cond_wait_ms(&m->cond, &m->lock, 100);
    if (m->cancel && atomic_load(m->cancel))
        return lm_err_set(m->err, -ECANCELED, "migration cancelled");
    return 0;
}

static int send_channel_hello(lm_send_chan *c, const uint8_t uuid[16])
{
    lm_channel_hello ch = {.channel = c->id};
    uint8_t buf[LM_CHANNEL_HELLO_SIZE];
    memcpy(ch.uuid, uuid, 16);
    lm_channel_hello_encode(&ch, buf);
    return lm_conn_send_frame(c->conn, LM_MSG_CHANNEL_HELLO, buf, sizeof(buf));
}

int lm_multifd_send_start(lm_multifd_send *m, unsigned n, lm_connect_fn connect, void *opaque,
                          const uint8_t uuid[16], const _Atomic int *cancel, bool detect_zero,
                          lm_compression method, uint64_t page_size, int main_fd, lm_err *err)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    m->err = err;
    m->cancel = cancel;
    m->main_fd = main_fd;
    m->chans = calloc(n, sizeof(*m->chans));
    if (!m->chans)
        return lm_err_set(err, -ENOMEM, "out of memory for %u channels", n);
    int ret = 0;
    for (unsigned i = 0; i < n && ret == 0; i++) {
        lm_send_chan *c = &m->chans[i];
        ret = lm_send_chan_init(c, i, &c->own_conn, false, detect_zero, method, page_size, err);
        c->own_conn.fd = -1;
        m->n = i + 1; /* from here on, stop() cleans this channel up */
        snprintf(c->peer, sizeof(c->peer), "destination (channel %u)", i);
        if (ret == 0)
            ret = connect(opaque, &c->own_conn, c->peer, err);
        c->conn = &c->own_conn;
        c->pool = m;
        if (ret == 0 && !(c->job = calloc(1, sizeof(*c->job))))
            ret = lm_err_set(err, -ENOMEM, "out of memory");
        if (ret == 0)
            ret = send_channel_hello(c, uuid);
        if (ret == 0 && (ret = -pthread_create(&c->thread, NULL, sender_main, c)) < 0)
            lm_err_set(err, ret, "cannot start the sender thread of channel %u", i);
        c->started = ret == 0;
    }
    if (ret < 0)
        lm_multifd_send_stop(m);
    return ret;
}

int lm_multifd_send_queue(lm_multifd_send *m, lm_page_batch **batch)
{
    int ret = 0;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        if (m->failed) {
            ret = m->err->code ? m->err->code : -EIO;
            break;
        }
        lm_send_chan *idle = NULL;
        for (unsigned k = 0; k < m->n && !idle; k++) {
            lm_send_chan *c = &m->chans[(m->next + k) % m->n];
            if (!c->busy)
                idle = c;
        }
        if (idle) {
            lm_page_batch *empty = idle->job;
            idle->job = *batch;
            idle->busy = true;
            *batch = empty;
            m->next = (idle->id + 1) % m->n;
            pthread_cond_broadcast(&m->cond);
            break;
        }
        if ((ret = pool_wait(m)) < 0)
            break;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

static int wait_all_idle(lm_multifd_send *m)
{
    int ret = 0;
    for (;;) {
        if (m->failed)
            return m->err->code ? m->err->code : -EIO;
        bool busy = false;
        for (unsigned i = 0; i < m->n; i++)
            busy |= m->chans[i].busy;
        if (!busy)
            return 0;
        if ((ret = pool_wait(m)) < 0)
            return ret;
    }
}

int lm_multifd_send_sync(lm_multifd_send *m)
{
    pthread_mutex_lock(&m->lock);
    int ret = wait_all_idle(m);
    if (ret == 0) {
        for (unsigned i = 0; i < m->n; i++) {
            lm_batch_reset(m->chans[i].job);
            m->chans[i].job->sync = true;
            m->chans[i].busy = true;
        }
        pthread_cond_broadcast(&m->cond);
        ret = wait_all_idle(m);
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

void lm_multifd_send_stop(lm_multifd_send *m)
{
    if (!m->chans)
        return;
    pthread_mutex_lock(&m->lock);
    m->quit = true;
    /* A sender still blocked in a write would only notice after its
     * timeout: after a failure, cut its connection so it returns now. */
    bool cut = m->failed;
    for (unsigned i = 0; i < m->n; i++)
        cut |= m->chans[i].busy;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; cut && i < m->n; i++)
        shutdown(m->chans[i].own_conn.fd, SHUT_RDWR);
    for (unsigned i = 0; i < m->n; i++)
        if (m->chans[i].started)
            pthread_join(m->chans[i].thread, NULL);
    uint64_t normal = 0, zero = 0, normal_bytes = 0;
    lm_multifd_send_counters(m, &normal, &zero, &normal_bytes);
    m->final_bytes = lm_multifd_send_bytes(m);
    m->final_normal = normal;
    m->final_zero = zero;
    m->final_normal_bytes = normal_bytes;
    for (unsigned i = 0; i < m->n; i++) {
        lm_send_chan *c = &m->chans[i];
        lm_send_chan_cleanup(c);
        lm_conn_close(&c->own_conn);
        free(c->job);
    }
    free(m->chans);
    m->chans = NULL;
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
}

void lm_multifd_send_counters(lm_multifd_send *m, uint64_t *normal, uint64_t *zero,
                              uint64_t *normal_bytes)
{
    if (!m->chans) {
        *normal += m->final_normal;
        *zero += m->final_zero;
        *normal_bytes += m->final_normal_bytes;
        return;
    }
    for (unsigned i = 0; i < m->n; i++) {
        lm_send_chan *c = &m->chans[i];
        *normal += atomic_load_explicit(&c->normal, memory_order_relaxed);
        *zero += atomic_load_explicit(&c->zero, memory_order_relaxed);
        *normal_bytes += atomic_load_explicit(&c->normal_bytes, memory_order_relaxed);
    }
}

uint64_t lm_multifd_send_bytes(lm_multifd_send *m)
{
    if (!m->chans)
        return m->final_bytes;
    uint64_t sum = 0;
    for (unsigned i = 0; i < m->n; i++)
        sum += atomic_load_explicit(&m->chans[i].wire_bytes, memory_order_relaxed);
    return sum;
}
