/*
 * The receiving half of a page channel, and the pool of multifd receiver
 * threads.
 *
 * A channel reads one packet: header (validated), offsets (each checked
 * against the block before any payload is read), then the payload, handed
 * to the channel's page sink (ram/sink.h): read straight into guest RAM
 * when the sink takes pages in place, into a bounce buffer otherwise, and
 * through the channel's decompressor when compressed. The same code serves
 * the main connection's PAGES frames (single stream) and each multifd
 * channel's thread.
 *
 * Round barrier: a SYNC packet parks the channel's thread until the main
 * thread, at the matching ROUND_END, has seen every channel park; only then
 * do they go on. So no packet of round N+1 is placed before every packet of
 * round N: a page resent in a later round can never be overwritten by an
 * older copy that was late on another channel. State under 'lock'.
 */
#ifndef LM_MULTIFD_RECV_H
#define LM_MULTIFD_RECV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "livemig.h"
#include "multifd/compress.h"
#include "ram/sink.h"
#include "transport/conn.h"

typedef struct lm_recv_chan {
    /* Set up once. */
    unsigned id;
    uint64_t page_size;
    lm_err *err;
    unsigned slow_us; /* testing aid: delay before placing each packet */
    lm_conn *conn;
    lm_conn own_conn;
    char peer[40]; /* "source (channel N)", for messages */
    lm_codec codec;
    /* Where pages go; switched by the migration between packets. A sink
     * that is not in place gets them through 'bounce', one packet's worth. */
    lm_page_sink *_Atomic sink;
    uint8_t *bounce;
    /* Owned by the receiving thread. */
    uint64_t offsets[LM_PACKET_MAX_PAGES];
    uint8_t raw[8 * LM_PACKET_MAX_PAGES];
    /* Written by the receiving thread, read by anyone (relaxed). */
    _Atomic uint64_t normal, zero, normal_bytes;
    /* Thread. */
    struct lm_multifd_recv *pool;
    pthread_t thread;
    bool started;
} lm_recv_chan;

int lm_recv_chan_init(lm_recv_chan *c, unsigned id, lm_conn *conn, lm_page_sink *sink,
                      lm_compression method, uint64_t page_size, lm_err *err);
void lm_recv_chan_cleanup(lm_recv_chan *c);
/* Decodes a packet header already read from the connection. */
int lm_recv_chan_decode(lm_recv_chan *c, const uint8_t raw[LM_PACKET_HDR_SIZE], lm_packet_hdr *ph);
/* Reads the offsets and payload of a (non-SYNC) packet and delivers its
 * pages to the channel's sink. */
int lm_recv_chan_body(lm_recv_chan *c, const lm_packet_hdr *ph);
/* Delivers later packets to sink (allocating a bounce buffer when the sink
 * does not take pages in place). */
int lm_recv_chan_set_sink(lm_recv_chan *c, lm_page_sink *sink);
/* A standalone receiver thread (the postcopy preempt connection): packets
 * until the source closes the connection; on an error, the sink's fail(). */
int lm_recv_chan_start_thread(lm_recv_chan *c);
void lm_recv_chan_join(lm_recv_chan *c);

typedef struct lm_multifd_recv {
    unsigned n;
    lm_recv_chan *chans;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned synced; /* channels parked at the current round's SYNC */
    uint64_t go_gen; /* bumped by the main thread to release them */
    unsigned ended;  /* channels whose source closed them */
    bool failed;
    bool stopping;
    lm_err *err;
    const _Atomic int *cancel;
    int main_fd;
    /* Totals of the channels, kept when they are stopped. */
    uint64_t final_normal, final_zero, final_normal_bytes, final_bytes;
} lm_multifd_recv;

/* How a pool's channels are set up. */
typedef struct lm_multifd_recv_cfg {
    lm_page_sink *sink;
    lm_compression method;
    uint64_t page_size;
    unsigned timeout_ms;
    const _Atomic int *cancel;
    unsigned slow_channel_us; /* testing aid for channel 0 */
    int main_fd;              /* shut down for reading when a channel fails */
    _Atomic uint64_t *progress_ns;
} lm_multifd_recv_cfg;

/* Starts a receiver thread on each of the n connections (conns[i] is
 * channel i, opened by the caller and handed over: each is copied, and
 * takes the cfg's timeout, cancel and progress clock). On failure nothing
 * is left running and the connections are closed. */
int lm_multifd_recv_start(lm_multifd_recv *m, unsigned n, const lm_conn *conns,
                          const lm_multifd_recv_cfg *cfg, lm_err *err);
/* Main thread at ROUND_END: waits (bounded by timeout_ms without a channel
 * arriving) until every channel parked at its SYNC, then releases them. */
int lm_multifd_recv_barrier(lm_multifd_recv *m, unsigned timeout_ms);
/* After COMPLETE: waits for every channel to see its source close it. */
int lm_multifd_recv_finish(lm_multifd_recv *m, unsigned timeout_ms);
/* Stops the threads (shutting the channels down) and frees everything. */
void lm_multifd_recv_stop(lm_multifd_recv *m);
/* Every channel delivers its next packets to sink. */
int lm_multifd_recv_set_sink(lm_multifd_recv *m, lm_page_sink *sink);
/* Adds the channels' counters to the arguments (also after stop, exactly). */
void lm_multifd_recv_counters(lm_multifd_recv *m, uint64_t *normal, uint64_t *zero,
                              uint64_t *normal_bytes, uint64_t *bytes);

#endif
