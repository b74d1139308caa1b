/*
 * Postcopy (seed 003): the guest runs on the destination before all of its
 * memory has arrived.
 *
 * At the switch the source stops the guest, takes a last dirty sync (the
 * pages the destination must still receive: "needed") and sends that
 * bitmap, the device state and POSTCOPY_RUN. The destination drops its stale
 * copies of the needed pages, registers guest RAM with userfaultfd (MISSING)
 * and resumes the guest at once. A vCPU touching a page that is not there
 * faults; the fault thread asks the source for it on the return path (once:
 * 'requested'), or, for a page that is known to be zero, places a zero page
 * itself. The source answers requests on a dedicated preempt connection, so
 * an urgent page never waits behind background packets, and moves its
 * background stream to the requested address. Every page is placed exactly
 * once ('placed', test-and-set before UFFDIO_COPY/UFFDIO_ZEROPAGE); a lost
 * race (EEXIST) is counted, not fatal. When nothing is left, userfaultfd is
 * unregistered and the source is told it may release the guest.
 */
#ifndef LM_MIGRATION_POSTCOPY_H
#define LM_MIGRATION_POSTCOPY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/engine.h"
#include "ram/sink.h"
#include "transport/conn.h"
#include "util/histogram.h"

typedef struct lm_postcopy_dst {
    lm_page_sink sink; /* what the channels deliver to while postcopy runs */
    lm_ctx *ctx;
    int uffd;
    int stop_fd;
    pthread_t fault_thread;
    bool fault_thread_started;
    /* Per block, one bit a page; 'placed' and 'requested' are shared. */
    lm_word *needed[LM_MAX_BLOCKS];
    lm_word *placed[LM_MAX_BLOCKS];
    lm_word *requested[LM_MAX_BLOCKS];
    uint64_t *fault_ns[LM_MAX_BLOCKS]; /* when a vCPU first waited on the page (0: never) */
    uint64_t *hashes[LM_MAX_BLOCKS];   /* with --verify: each page's hash as placed */
    bool verify;
    bool move;                  /* place data pages with UFFDIO_MOVE instead of UFFDIO_COPY */
    uint64_t verify_ns;         /* hashing at the switch, kept out of the downtime */
    _Atomic uint64_t remaining; /* needed pages not placed yet */
    _Atomic uint64_t placed_pages, zero_placed, requests, eexist, duplicates, faults, moved;
    /* The return path: the fault thread's requests share the main
     * connection with the main thread's replies. */
    lm_conn *conn;
    pthread_mutex_t *conn_lock;
    /* Under conn_lock: the return path is broken. Faults are still noted
     * ('requested') but not sent; lm_postcopy_dst_link_up sends them all. */
    bool link_down;
    /* Under conn_lock: requests wait (noted, not sent) until the guest's
     * RESUMED went out, so the source reads RESUMED before any request. */
    bool held;
    /* Request latency and vCPU blocktime, under 'lock'. */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when 'remaining' reaches 0 */
    lm_hist latency_ns;
    uint64_t blocktime_ns;
    bool failed;
} lm_postcopy_dst;

/* Reads a POSTCOPY_SWITCH body: the needed bitmap of every block. */
int lm_postcopy_dst_init(lm_postcopy_dst *pc, lm_ctx *ctx, const uint8_t *body, size_t len,
                         bool verify, bool move, lm_conn *conn, pthread_mutex_t *conn_lock);
/* Drops stale copies, registers userfaultfd, hashes what will not change
 * hands (verify), starts the fault thread. After this the guest may run. */
int lm_postcopy_dst_start(lm_postcopy_dst *pc);
/* Places one page (data, or NULL for a zero page) unless it is placed
 * already. Safe from any thread. */
int lm_postcopy_dst_place(lm_postcopy_dst *pc, lm_block *b, uint64_t page, const uint8_t *data);
/* The return path broke: stop sending requests (the fault thread keeps
 * noting them, vCPUs keep waiting). */
void lm_postcopy_dst_link_down(lm_postcopy_dst *pc);
/* A new return path (pc->conn, already replaced): clears the failure and
 * sends again every request whose page has not arrived. */
int lm_postcopy_dst_link_up(lm_postcopy_dst *pc);
/* RESUMED is out: sends the requests noted since the guest started and
 * lets the fault thread send its own from now on. */
int lm_postcopy_dst_release(lm_postcopy_dst *pc);
/* The pages still to come, per block (needed and not placed): fills
 * missing[r] (npages bits each). */
void lm_postcopy_dst_missing(lm_postcopy_dst *pc, lm_word *const missing[]);
/* Waits (bounded) until every needed page is placed. */
int lm_postcopy_dst_wait(lm_postcopy_dst *pc, unsigned timeout_ms);
/* Stops the fault thread. With release, unregisters guest RAM (every page
 * is there; the guest runs on) and frees everything. Without (a failure),
 * guest RAM stays registered: vCPUs keep waiting on the missing pages
 * rather than see zeros, and nothing is thrown away. */
void lm_postcopy_dst_stop(lm_postcopy_dst *pc, bool release);

size_t lm_postcopy_switch_size(const lm_ram *ram);
void lm_postcopy_switch_encode(const lm_ram *ram, lm_word *const needed[], uint8_t *out);

#endif
