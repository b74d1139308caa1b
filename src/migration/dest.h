/*
 * The destination's state during one migration, shared by its files:
 *   dest.c           lm_incoming(): the state machine and its message table
 *   dest_setup.c     HELLO, the RAM layout, the channels
 *   dest_postcopy.c  the handlers of the postcopy messages
 * Owned by the thread running lm_incoming(); the channel threads see only
 * their page sink, the fault thread only 'pc' (postcopy.h).
 */
#ifndef LM_MIGRATION_DEST_H
#define LM_MIGRATION_DEST_H

#include <pthread.h>

#include "migration/engine.h"
#include "migration/postcopy.h"
#include "migration/state.h"
#include "multifd/recv.h"
#include "proto/wire.h"
#include "ram/sink.h"
#include "transport/conn.h"
#include "transport/transport.h"

typedef struct lm_dest {
    lm_ctx *ctx;
    lm_params params;   /* the caller's, imported (lm__params_import) */
    const lm_params *p; /* &params */
    lm_listener *listener;
    lm_tls *tls; /* credentials when the migration uses TLS, else NULL */
    lm_fsm fsm;  /* lm_dest_fsm: LM_DST_* */
    lm_conn conn;
    lm_hello hello;
    lm_stats st; /* working copy, published to ctx->stats */
    uint64_t start_ns;
    uint64_t switch_ns; /* PONG sent: the source stops its guest next */
    /* Device-state sections (section.c): which registered sections got
     * their complete part, and which said they are ready to switch over. */
    bool section_complete[LM_MAX_SECTIONS];
    bool section_ready[LM_MAX_SECTIONS];
    /* Pages. */
    lm_inplace_sink inplace; /* precopy: pages land where they live */
    int place_uffd;          /* >= 0: precopy places by UFFDIO_COPY through it */
    lm_ram_budget budget;    /* what they may commit (ram/budget.h) */
    lm_recv_chan main_chan;  /* packets on the main connection */
    lm_multifd_recv pool;    /* multifd channels, when the source asked for them */
    bool use_pool;
    struct { /* channels retired by a recovery: their counts, kept */
        uint64_t normal, zero, normal_bytes, bytes;
    } pool_acc;
    /* Postcopy. */
    lm_recv_chan preempt; /* urgent pages, its own receiver thread */
    bool have_preempt;
    lm_postcopy_dst pc;
    bool pc_init;              /* pc holds its maps (from POSTCOPY_SWITCH until released) */
    pthread_mutex_t conn_lock; /* main-connection writes once the fault thread runs */
    /* Switchover. */
    uint8_t *device_state;
    size_t device_state_len;
    uint8_t digest[16]; /* ours, taken before the source's arrives */
    uint64_t digest_pages, verify_t0;
    char source_digest[40]; /* hex, when it differs from ours */
    bool source_said_error; /* an ERROR came: the source will not commit */
    bool caught_up;         /* PING answered, no page or round since: a switch may follow */
    bool confirm_sent;
    lm_resumed done; /* postcopy: the POSTCOPY_DONE sent, to send again after a reconnect */
    bool source_committed;
    /* the last reconnecting HELLO said COMMITTED */ /* RESUMED after COMMIT went out (it may
                                                        still be lost) */
    uint64_t faults0_minor, faults0_major;
    bool faults_counted;
} lm_dest;

/* dest_accept.c: the listener's lobby (see there). */
#define LM_LOBBY_MAX 16 /* connections waiting to speak at once */

/* A connection that presented its first frame header. */
typedef struct lm_greeting {
    lm_conn conn; /* opened by lm__dest_open_conn, its greeting-time bound */
    lm_frame f;   /* the header, when bad_code is 0 */
    int bad_code; /* a livemig frame header, but invalid (another version) */
    char bad[256];
} lm_greeting;

typedef struct lm_dest_lobby {
    struct lm_dest *d;
    unsigned greet_ms;         /* how long a new connection has to present its first frame */
    const _Atomic int *cancel; /* the context's; NULL where only the source decides (paused) */
    unsigned n;
    struct {
        int fd;
        uint64_t since_ns;
    } wait[LM_LOBBY_MAX];
    uint64_t listener_rest_until; /* out of descriptors: the backlog waits till then */
    unsigned turned_away;         /* closed: silent, garbage, or not the peer wanted */
    char why[200];                /* why the last one was */
    lm_err scratch;               /* a stranger's failure is not the migration's */
} lm_dest_lobby;

/* Called while the lobby waits, when the main connection is readable: 0
 * to go on (*watching false: stop watching it), or -errno to end the wait. */
typedef int (*lm_dest_watch)(struct lm_dest *d, bool *watching);

/* A message handler: 0, or -errno with the reason in ctx->err. */
typedef int (*lm_dest_handler)(lm_dest *d, const lm_frame *f);

/* dest.c */
void lm__dest_count_faults(lm_dest *d, bool start);
/* Whether the [state][message] table lets 'type' arrive in 'state'. */
bool lm__dest_accepts(unsigned state, uint16_t type);
int lm__dest_enter(lm_dest *d, lm_dst_state to);
int lm__dest_protocol_error(lm_dest *d, int code, const char *why);
int lm__dest_send_locked(lm_dest *d, uint16_t type, const void *body, uint32_t len);
/* Reads a body that a handler keeps (device state, the switch map). */
int lm__dest_read_body(lm_dest *d, const lm_frame *f, uint8_t **out);
/* Reads the source's VERIFY and compares it with our digest: the stats and
 * the RESUMED fields (r->verified 1 match, 2 mismatch). */
int lm__dest_take_verify(lm_dest *d, const lm_frame *f, const uint8_t digest[16], uint64_t pages,
                         lm_resumed *r);

/* dest_layout.c: the source's declared layout against what this side
 * owns (registered RAM, ram_size) or allows (max_ram); allocates it when
 * nothing is registered. Refusals name both layouts. */
int lm__dest_accept_layout(lm_dest *d);

/* dest_accept.c. The one place an accepted descriptor becomes a connection
 * (a transport handshake belongs here), bounded by timeout_ms. */
int lm__dest_open_conn(lm_dest *d, lm_conn *c, int fd, unsigned timeout_ms, const char *peer,
                       lm_err *err);
void lm__dest_lobby_init(lm_dest_lobby *lb, lm_dest *d);
/* Closes every connection still waiting. */
void lm__dest_lobby_close(lm_dest_lobby *lb);
/* Waits (until deadline_ns; 0: no deadline, only a cancel) for the next
 * connection to present a livemig frame header: 0 with *g, -ETIMEDOUT
 * (no message set: the caller says what it waited for), or -errno. */
int lm__dest_lobby_next(lm_dest_lobby *lb, uint64_t deadline_ns, lm_dest_watch watch,
                        lm_greeting *g);
/* Not the peer wanted: closed, counted, why kept for the timeout message. */
void lm__dest_lobby_turn_away(lm_dest_lobby *lb, lm_greeting *g, const char *why);
/* " (N other connections were closed; the last: WHY)", or "" when none. */
size_t lm__dest_lobby_summary(const lm_dest_lobby *lb, char *out, size_t len);
/* The greeting's connection becomes the migration's 'to': its I/O timeout,
 * the context's cancel and error, the shared progress clock. */
void lm__dest_adopt(lm_dest *d, lm_conn *to, lm_greeting *g, const char *peer);
/* The main connection (until accept_timeout_ms): *first is its first
 * frame header, read; d->conn is set. */
int lm__dest_accept_source(lm_dest *d, lm_frame *first);

/* dest_setup.c: HELLO (its header read), layout, HELLO_ACK, the channels. */
int lm__dest_handshake(lm_dest *d, const lm_frame *first);
/* Starts TLS on a connection the listener gave us, when this destination
 * uses it: before any of the peer's bytes are read as frames. */
int lm__dest_secure(lm_dest *d, lm_conn *c);
/* The channels the HELLO announced (multifd, preempt), pages in place. */
int lm__dest_accept_channels(lm_dest *d);
/* Precopy placement by UFFDIO_COPY (ram/sink.h), when it can be had: the
 * blocks this side allocated registered for MISSING faults. No one answers
 * those faults, so it ends before anything reads guest RAM or runs the
 * guest (the digest, the switchover, postcopy's own userfaultfd). */
void lm__dest_placement_start(lm_dest *d);
void lm__dest_placement_end(lm_dest *d);

/* RESUMED after the commit: the guest runs here. */
void lm__dest_confirm_commit(lm_dest *d);
/* The byte and page counters, read from the running channels too. */
void lm__dest_count_received(lm_dest *d);
/* The guest runs here from now: the downtime as this side saw it (from
 * the PONG after which the source stopped the guest) and its bytes. */
void lm__dest_mark_resumed(lm_dest *d);

/* dest_recover.c: after a broken link. */
/* Accepts connections until the source of this migration reconnects (0,
 * d->conn replaced) or deadline_ns passes (-ETIMEDOUT). */
int lm__dest_take_back_source(lm_dest *d, uint64_t deadline_ns);
/* 'ready' or 'postcopy-ready' lost its link: switchover-paused until the
 * source is back (0, the state restored) or the recover timeout. */
int lm__dest_await_commit(lm_dest *d);
/* postcopy-active lost its link: postcopy-paused, everything kept, until
 * the source is back; then the channels, the map of missing pages and the
 * outstanding requests again (0, postcopy-active), or -errno (still
 * postcopy-paused, final). */
int lm__dest_postcopy_recover(lm_dest *d);
/* precopy (active) lost its link, with --recover-timeout: keep what
 * arrived, take the source back, tell it what is missing (0: active
 * again), or -errno (failed: the guest never ran here). */
int lm__dest_precopy_recover(lm_dest *d);
/* Completed: wait for the source's CONFIRMED, answering again (RESUMED, or
 * POSTCOPY_DONE) if it reconnects to ask. */
int lm__dest_linger_for_source(lm_dest *d);

/* dest_postcopy.c */
int lm__dest_on_postcopy_switch(lm_dest *d, const lm_frame *f);
/* The device state is here: arm userfaultfd, load it, SWITCHOVER_READY. */
int lm__dest_postcopy_ready(lm_dest *d);
int lm__dest_on_postcopy_run(lm_dest *d, const lm_frame *f);
/* Runs the guest (the commit was heard); confirm: answer RESUMED. */
int lm__dest_postcopy_run(lm_dest *d, bool confirm);
/* Every receiver delivers to userfaultfd; the preempt thread starts. */
int lm__dest_postcopy_sinks(lm_dest *d);
int lm__dest_on_postcopy_end(lm_dest *d, const lm_frame *f);
int lm__dest_on_postcopy_verify(lm_dest *d, const lm_frame *f);
/* POSTCOPY_DONE (d->done) to the source. */
void lm__dest_confirm_done(lm_dest *d);
/* After a failure while the guest runs here: keep everything for later. */
void lm__dest_postcopy_pause(lm_dest *d);

#endif
