/*
 * The source's state during one migration, shared by its files, top down:
 *   source.c        lm_migrate(): setup, then precopy or postcopy, cleanup
 *   precopy.c       first pass, rounds, the precopy switchover
 *   postcopy_src.c  the postcopy switch, background and page requests
 *   converge.c      throttle, dirty limit, when to go to postcopy
 *   source_round.c  the primitives the others share: batches, rounds, sync
 * Owned by the migration thread; the postcopy request thread uses only what
 * postcopy_src.c says.
 */
#ifndef LM_MIGRATION_SOURCE_H
#define LM_MIGRATION_SOURCE_H

#include "dirty/pagemap.h"
#include "dirty/tracker.h"
#include "migration/engine.h"
#include "migration/state.h"
#include "multifd/send.h"
#include "transport/conn.h"
#include "transport/transport.h"

typedef struct lm_source {
    lm_ctx *ctx;
    const lm_params *p; /* &params */
    lm_params params;   /* the caller's, with lm_params_update's live fields taken in */
    unsigned params_gen;
    lm_fsm fsm; /* lm_source_fsm: the public LM_STATUS_* */
    lm_conn conn;
    lm_tracker *tracker;
    lm_pagemap pm;
    lm_word *dirty[LM_MAX_BLOCKS];
    lm_word *populated;   /* one chunk's worth, reused */
    lm_stats st;          /* working copy, published to ctx->stats */
    lm_page_batch *batch; /* being filled by the scheduler */
    /* Runs of zero pages for one ZERO_RANGES frame on the main connection
     * (precopy only): never-populated memory, and pages legacy detection
     * found zero. zr_pages counts the pages of every frame sent. */
    lm_block *zr_block;
    lm_zero_range *zr; /* LM_ZERO_RANGES_MAX */
    uint8_t *zr_buf;   /* its encoding */
    uint32_t nzr;
    uint64_t zr_pages;
    lm_send_chan main_chan; /* single stream: packets inline on the main connection */
    lm_multifd_send pool;   /* multifd: sender threads, one connection each */
    lm_conn preempt_conn;   /* postcopy: urgent pages, written by the request thread */
    lm_send_chan preempt_chan;
    bool use_pool;
    /* Channels retired by a recovery: their counts, kept. */
    struct {
        uint64_t normal, zero, normal_bytes, bytes, preempt_bytes;
    } pool_acc;
    uint8_t uuid[16]; /* names this migration to the destination's channels */
    const char *addr; /* the destination, for the channels' connections */
    const lm_transport_ops *transport;
    bool single_used;   /* fd:N: its one connection was opened */
    lm_tls *tls;        /* credentials when the migration uses TLS, else NULL */
    char tls_host[256]; /* the name the destination's certificate must carry */
    uint64_t start_ns, stop_ns;
    uint64_t end_ns;       /* entered 'completed': the end of total-time, as QEMU's */
    uint64_t pace_next_ns; /* --max-bandwidth: when the next batch may go */
    uint64_t round_pages, round_done, round_start_ns, round_bytes0;
    uint64_t last_progress_ns, last_sync_ns;
    /* The current rates (lm_stats.mbps, pages_per_second): counters at
     * the start of the window, at least RATE_WINDOW_NS long. */
    uint64_t rate_ns, rate_bytes, rate_pages;
    bool ended; /* lm_migrate is returning: the rates become averages */
    /* lm_start_postcopy heard in the middle of a pass: the pass stopped
     * there, its unsent pages are in s->dirty (precopy.c). */
    bool pass_cut;
    /* Chunked re-arming: pages a round's chunk re-arms found beyond what its
     * sync had read (written during the round too), and the pages written
     * during the last round: those plus what the sync that ended it found. */
    uint64_t rearm_found, round_dirtied;
    uint64_t rate_found; /* pages found since last_sync_ns, for the dirty rate */
    /* Device-state sections (section.c): save_setup called, which sections
     * said their iterative state is done, and whether the destination
     * acknowledged the switchover (once is enough, as in QEMU). */
    bool sections_set_up;
    bool section_done[LM_MAX_SECTIONS];
    bool switchover_acked;
    uint64_t switchover_query_ns; /* when the destination was last asked */
    double bandwidth;             /* bytes per second, from the last round that sent enough */
    double dirty_rate;            /* pages per second */
    bool stopped; /* the guest is stopped by us (resumed here on a failure before the commit) */
    /* The commit (COMMIT or POSTCOPY_RUN) may have reached the destination:
     * from then on this side never resumes its copy (commit.c). */
    bool committed;
    bool postcopy_switch; /* the switchover is postcopy's (its commit is POSTCOPY_RUN) */
    /* Precopy resume (resume.c): how far the first pass armed (every block
     * before fp_block whole, fp_block up to page fp_end), whether it is
     * over, and the pages of the round being sent (a resend may have been
     * torn by the cut: the destination's map cannot tell). */
    unsigned fp_block;
    uint64_t fp_end;
    bool fp_started, fp_done;
    lm_word *inflight[LM_MAX_BLOCKS];
    uint64_t resume_wire0;       /* wire bytes when the last resume reconnected */
    lm_round_stats last_round;   /* every round, also past LM_MAX_ROUND_STATS */
    unsigned no_progress_rounds; /* syncs in a row where the dirty set did not shrink */
    unsigned high_dirty_rounds;  /* rounds in a row that dirtied over half what they sent */
    unsigned throttle;           /* auto-converge: percent now applied to the guest */
    bool dirty_limited;          /* --dirty-limit applied to the guest */
    uint64_t min_dirty;          /* smallest dirty set seen so far */
} lm_source;

/* source_round.c */
int lm__src_enter(lm_source *s, lm_status to); /* the state machine, and the stats */
uint64_t lm__src_wire_bytes(lm_source *s);
void lm__src_gather_counters(lm_source *s);
void lm__src_report_progress(lm_source *s, bool force);
int lm__src_flush_batch(lm_source *s);
int lm__src_queue_page(lm_source *s, lm_block *b, uint64_t page);
/* Queues pages [first, first + n) of b as known to be zero (never
 * populated): in precopy a range, merged with the run before it. */
int lm__src_queue_zero_run(lm_source *s, lm_block *b, uint64_t first, uint64_t n);
int lm__src_end_of_round_barrier(lm_source *s);
int lm__src_sync_dirty(lm_source *s, bool rearm, uint64_t *count);
void lm__src_begin_round(lm_source *s, uint64_t pages);
/* lm_start_postcopy was heard and may be acted on now (precopy.c). */
bool lm__src_postcopy_now(const lm_source *s);
void lm__src_end_round(lm_source *s, uint64_t dirty_pages);
/* Pages armed (and re-armed) at a time: --track-chunk, or a whole block. */
uint64_t lm__src_chunk_pages(const lm_source *s);
/* The start of downtime: enter 'device', stop the guest, remember when. */
int lm__src_stop_guest(lm_source *s, const char *why);
int lm__src_send_device_state(lm_source *s);
/* Digest of all guest RAM (tracking must have ended), sent as VERIFY. */
int lm__src_send_verify(lm_source *s);

/* source.c: the tracker the parameters ask for, over every block. */
int lm__src_create_tracker(lm_source *s);
/* HELLO/HELLO_ACK on s->conn; recover names the paused migration. */
int lm__src_handshake(lm_source *s, bool recover);
/* The multifd channels and the postcopy preempt connection, after HELLO. */
/* Opens a connection to the destination into *c: connect within
 * timeout_ms, bounded waits, the shared progress clock, and TLS where the
 * migration uses it. On failure *c is closed. */
int lm__src_open_conn(lm_source *s, lm_conn *c, unsigned timeout_ms, const _Atomic int *cancel,
                      const char *peer, lm_err *err);
int lm__src_connect_channels(lm_source *s);
/* Closes them after a broken link, keeping their counts. */
void lm__src_retire_channels(lm_source *s);

/* commit.c: the commit point. */
/* Reads SWITCHOVER_READY: the destination's verdict, its guest stopped. */
int lm__src_await_ready(lm_source *s, lm_resumed *r, unsigned extra_ms);
/* Sends commit_msg (COMMIT, POSTCOPY_RUN) and reads RESUMED into *ack. For
 * COMMIT a broken link means 'switchover-paused': reconnect and ask again
 * until the recover timeout. 0, or -errno: ack->status < 0 (the
 * destination refused: s->committed is false again) or the question is
 * still open (s->committed stays true). */
int lm__src_commit(lm_source *s, uint16_t commit_msg, lm_resumed *ack);
/* A new main connection for this migration, retried until deadline_ns. */
int lm__src_reconnect(lm_source *s, uint64_t deadline_ns);

/* source_round.c: a RECOVER_MAP body (POSTCOPY_SWITCH's layout) into
 * out[] (one bitmap a block); *count: the pages set. */
int lm__src_decode_map(lm_source *s, const uint8_t *body, size_t len, lm_word *const out[],
                       uint64_t *count);

/* postcopy_src.c: a PAGE_REQUEST body from the return path, checked
 * against our RAM: the block and the page offset a vCPU waits on. 0, or
 * -EBADMSG with a message in err. */
int lm__src_check_request(lm_ram *ram, const uint8_t *body, uint32_t len, lm_block **block,
                          uint64_t *offset, lm_err *err);

/* resume.c: precopy resume. */
/* Whether a failure in precopy may be resumed (--recover-timeout, the
 * link's failure, before the guest stopped). */
bool lm__src_can_resume(const lm_source *s, int ret);
/* precopy-paused: the guest runs on, tracked; reconnect, take the
 * destination's map of what it lacks into s->dirty, back to 'active'. */
int lm__src_precopy_resume(lm_source *s);

/* precopy.c: rounds until the rest fits in the downtime limit (or out of
 * rounds, or postcopy is chosen: *to_postcopy), ending in pre-switchover.
 * 0 or -errno. */
int lm__src_precopy(lm_source *s, bool *to_postcopy);
/* Stop, last pages, device state, COMPLETE, RESUMED: 'completed'. */
int lm__src_switchover(lm_source *s);

/* converge.c */
void lm__src_converge_policy(lm_source *s, uint64_t dirty_pages);
/* Should precopy give way to postcopy now? (enabled, and asked for by
 * command or after N rounds, or not converging). */
bool lm__src_want_postcopy(lm_source *s, uint64_t dirty_pages);

/* postcopy_src.c */
/* Stop, switch, run the guest on the destination, send the rest. */
int lm__src_postcopy(lm_source *s);
/* Opens the preempt connection (after the multifd channels). */
int lm__src_postcopy_connect(lm_source *s);

#endif
