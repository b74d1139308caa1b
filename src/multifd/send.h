/*
 * The sending half of a page channel, and the pool of multifd sender threads.
 *
 * A channel turns a batch into one packet: it checks the batch's pages for
 * zeros (multifd detection), compresses the normal pages (when a method is
 * set), and writes header, offsets and payload with one writev, the payload
 * straight from guest RAM when uncompressed. The same code runs inline on
 * the migration thread for a single stream (framed in PAGES frames on the
 * main connection) and on one thread per multifd channel (raw packets on the
 * channel's own connection).
 *
 * Hand-off (lm_multifd_send): each channel owns one batch buffer. The
 * scheduler fills its own buffer, then swaps it with an idle channel's
 * (which is empty) and marks the channel busy; the channel sends, empties
 * it and marks itself idle. 'busy', 'quit' and 'failed' are under 'lock';
 * the batch belongs to whoever the 'busy' flag says.
 */
#ifndef LM_MULTIFD_SEND_H
#define LM_MULTIFD_SEND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "livemig.h"
#include "multifd/batch.h"
#include "multifd/compress.h"
#include "transport/conn.h"

typedef struct lm_send_chan {
    /* Set up once. */
    unsigned id;
    bool framed;      /* packets go in PAGES frames (single stream) */
    bool detect_zero; /* multifd zero detection here */
    uint64_t page_size;
    lm_conn *conn;
    lm_conn own_conn; /* a multifd channel's connection */
    char peer[40];    /* "destination (channel N)", for messages */
    lm_codec codec;
    /* Written by the sending thread, read by anyone (relaxed). */
    _Atomic uint64_t normal, zero, normal_bytes, packets, wire_bytes;
    /* Thread state, under the pool's lock. */
    struct lm_multifd_send *pool;
    pthread_t thread;
    bool started;
    bool busy;
    lm_page_batch *job;
} lm_send_chan;

/* Inline use: framed channel on conn (zero detection and compression as asked). */
int lm_send_chan_init(lm_send_chan *c, unsigned id, lm_conn *conn, bool framed, bool detect_zero,
                      lm_compression method, uint64_t page_size, lm_err *err);
void lm_send_chan_cleanup(lm_send_chan *c);
/* Sends one batch as one packet; leaves the batch reset. 0 or -errno. */
int lm_send_chan_packet(lm_send_chan *c, lm_page_batch *b, lm_err *err);

typedef struct lm_multifd_send {
    unsigned n;
    lm_send_chan *chans;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool quit, failed;
    unsigned next;
    lm_err *err;
    const _Atomic int *cancel;
    int main_fd; /* shut down when a channel fails, so the main thread wakes */
    /* Totals of the channels, kept when they are stopped. */
    uint64_t final_normal, final_zero, final_normal_bytes, final_bytes;
} lm_multifd_send;

/* Opens a channel's connection into *conn (connected, initialized, TLS
 * started where the migration uses it); peer names it in messages. */
typedef int (*lm_connect_fn)(void *opaque, lm_conn *conn, const char *peer, lm_err *err);
/* Connects n channels with connect(), sends each its CHANNEL_HELLO, starts
 * their threads. On failure everything started is stopped. */
int lm_multifd_send_start(lm_multifd_send *m, unsigned n, lm_connect_fn connect, void *opaque,
                          const uint8_t uuid[16], const _Atomic int *cancel, bool detect_zero,
                          lm_compression method, uint64_t page_size, int main_fd, lm_err *err);
/* Hands *batch to an idle channel (waiting for one) and gives back an
 * empty batch in its place. */
int lm_multifd_send_queue(lm_multifd_send *m, lm_page_batch **batch);
/* Waits until every channel has sent everything queued, then sends a SYNC
 * packet on each and waits for those too. */
int lm_multifd_send_sync(lm_multifd_send *m);
/* Stops the threads and closes the channels (idempotent). */
void lm_multifd_send_stop(lm_multifd_send *m);
/* Bytes written on all channels so far (also after stop). */
uint64_t lm_multifd_send_bytes(lm_multifd_send *m);
/* Adds the channels' page counters to the arguments (also after stop). */
void lm_multifd_send_counters(lm_multifd_send *m, uint64_t *normal, uint64_t *zero,
                              uint64_t *normal_bytes);

#endif
