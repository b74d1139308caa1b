/*
 * livemig: live migration of guest memory between processes or hosts.
 *
 * The one public header. An embedding program (a VMM, or any program with a
 * large memory region) creates a context, registers its RAM blocks and guest
 * callbacks, and calls lm_migrate() on the source or lm_incoming() on the
 * destination. Every call returns 0 or a negative errno; lm_last_error()
 * gives a sentence that says what went wrong and what to do.
 *
 * Threads (docs/API.md). lm_migrate() and lm_incoming() block until the
 * migration ends: an event-loop VMM runs each on a thread of its own and
 * hears about it through lm_set_event_callback() (write the event to a pipe
 * or an eventfd the loop polls). The guest callbacks and the progress
 * callback run on that thread or on the migration's own threads, never two
 * at once for one context. From any thread, at any time: lm_cancel(),
 * lm_start_postcopy(), lm_pause(), lm_resume(), lm_params_update(),
 * lm_stats_get(), lm_status_current(). Everything else belongs to the
 * thread that owns the context, while no migration runs. One context per
 * migration at a time; contexts are independent.
 */
#ifndef LIVEMIG_H
#define LIVEMIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * API version 1 (docs/API.md). Within a major version the ABI only grows:
 * functions are added, never changed, and the structures a program hands to
 * the library (lm_params, lm_guest_ops, lm_stats) carry their size, so a
 * program built against 1.0 runs unchanged on 1.x, which appends fields.
 * Structures the library hands to a callback (lm_progress, lm_event) may
 * grow at their end: read only the fields you know. Arrays of structures
 * (lm_kvm_slot, lm_round_stats) never change within a major version.
 */
#define LM_VERSION_MAJOR  1
#define LM_VERSION_MINOR  0
#define LM_VERSION_PATCH  0
#define LM_VERSION_STRING "1.0.0"
/* One number for comparisons: LM_VERSION_NUMBER >= LM_VERSION_AT(1, 1, 0). */
#define LM_VERSION_AT(major, minor, patch) (((major) << 16) | ((minor) << 8) | (patch))
#define LM_VERSION_NUMBER                  LM_VERSION_AT(LM_VERSION_MAJOR, LM_VERSION_MINOR, LM_VERSION_PATCH)

/* The version of the library running, which may be a later minor one than
 * the header a program was built with: LM_VERSION_AT's number, and the
 * string. */
unsigned lm_version(void);
const char *lm_version_string(void);

#define LM_MAX_BLOCKS 64
/* A RAM block's name: 1 to LM_BLOCK_NAME_MAX - 1 printable ASCII bytes. */
#define LM_BLOCK_NAME_MAX 32
/* lm_params.multifd_channels at most. */
#define LM_MAX_MULTIFD_CHANNELS 64
/* lm_params.max_ram's default: 16 TiB, far above any host, so that a sparse
 * guest larger than the host still migrates (memory is committed as data
 * arrives, and checked against what the host can give). */
#define LM_DEFAULT_MAX_RAM (16ull << 40)
/* The largest downtime_limit_ms (QEMU's: 2000 s). */
#define LM_MAX_DOWNTIME_LIMIT_MS 2000000u

typedef struct lm_ctx lm_ctx;
typedef struct lm_listener lm_listener;

/* Flags for lm_ram_block_add(). */
enum {
    /* The block is fresh anonymous memory: a page never written reads as zero,
     * so the destination need not clear it when a zero page arrives. */
    LM_RAM_ZEROED = 1u << 0,
};

/*
 * Guest callbacks, called from the thread running lm_migrate()/lm_incoming().
 * Each returns 0 or a negative errno. lm_set_guest_ops copies the table
 * (with its size: see lm_set_guest_ops below); NULL members are absent.
 *   stop:       park every vCPU; on return guest RAM must not change.
 *   resume:     restart vCPUs (destination after switchover; source when a
 *               switchover fails, so the guest keeps running where it was).
 *   save_state: serialize device state into a malloc()ed buffer; the library
 *               frees it. Called with the guest stopped.
 *   load_state: destination only, before resume.
 */
typedef struct lm_guest_ops {
    int (*stop)(void *opaque);
    int (*resume)(void *opaque);
    int (*save_state)(void *opaque, void **buf, size_t *len);
    int (*load_state)(void *opaque, const void *buf, size_t len);
    /* Optional, for convergence (source): run the vCPUs at (100 - percent)%
     * of their speed (auto-converge); 0 lifts it. */
    int (*throttle)(void *opaque, unsigned percent);
    /* Optional (source): let each vCPU dirty at most pages_per_sec pages a
     * second; 0 lifts the limit. */
    int (*dirty_limit)(void *opaque, uint64_t pages_per_sec);
} lm_guest_ops;

typedef enum lm_tracker_kind {
    LM_TRACKER_AUTO = 0,   /* uffd-async when the kernel has PAGEMAP_SCAN, else uffd-sync */
    LM_TRACKER_UFFD_ASYNC, /* userfaultfd WP_ASYNC read and re-armed by PAGEMAP_SCAN */
    LM_TRACKER_UFFD_SYNC,  /* userfaultfd write-protect, a thread records each fault */
    LM_TRACKER_KVM_LOG,    /* KVM's dirty bitmap with manual protect (needs lm_kvm_attach);
                              sees only the guest's writes through KVM, see lm_kvm_attach */
    LM_TRACKER_KVM_RING,   /* KVM's per-vCPU dirty rings (needs lm_kvm_attach and
                              lm_kvm_attach_rings); same limits as KVM_LOG */
    LM_TRACKER_EXTERNAL,   /* the embedder's own (needs lm_set_dirty_tracker) */
} lm_tracker_kind;

/* Where zero pages are found (pages the kernel reports as never populated
 * are zero pages in every mode, without being read). */
typedef enum lm_zero_detection {
    LM_ZERO_DETECT_MULTIFD = 0, /* in each channel's sender thread (default) */
    LM_ZERO_DETECT_LEGACY,      /* on the migration thread, before queueing */
    LM_ZERO_DETECT_NONE,        /* every populated page is sent with its data */
} lm_zero_detection;

/* Compression of page payloads (zero pages are never compressed: they have
 * no payload). Numbered as on the wire. */
typedef enum lm_compression {
    LM_COMPRESSION_NONE = 0,
    LM_COMPRESSION_ZLIB = 1,
    LM_COMPRESSION_ZSTD = 2,
    LM_COMPRESSION_LZ4 = 3,
    LM_COMPRESSION__COUNT
} lm_compression;

/* "none", "zlib", "zstd", "lz4"; "unknown" for a value outside the enum. */
const char *lm_compression_name(lm_compression m);
/* The reverse: 0, or -EINVAL for a name that is not a method. */
int lm_compression_parse(const char *name, lm_compression *m);

/* Where a migration stands, with QEMU's query-migrate names (lm_status_name).
 * docs/STATE-MACHINE.md has each side's diagram and invariants. */
typedef enum lm_status {
    LM_STATUS_NONE = 0,          /* "none": nothing started yet */
    LM_STATUS_SETUP,             /* "setup": connecting, handshake, channels */
    LM_STATUS_ACTIVE,            /* "active": precopy rounds; the guest runs on the source */
    LM_STATUS_PRE_SWITCHOVER,    /* "pre-switchover": converged; the destination catches up */
    LM_STATUS_DEVICE,            /* "device": the guest is stopped; last pages, device state */
    LM_STATUS_POSTCOPY_ACTIVE,   /* "postcopy-active": the guest runs on the destination */
    LM_STATUS_POSTCOPY_PAUSED,   /* "postcopy-paused": the link broke in postcopy; each side
                                    keeps its part of the guest and waits for a reconnection */
    LM_STATUS_POSTCOPY_RECOVER,  /* "postcopy-recover": reconnected after a pause; the sides
                                    agree on what is still missing */
    LM_STATUS_PRECOPY_PAUSED,    /* "precopy-paused": the link broke during precopy (with a
                                    recover timeout): the guest runs on the source, tracked,
                                    while it reconnects; the destination keeps what it has */
    LM_STATUS_SWITCHOVER_PAUSED, /* "switchover-paused": the link broke at the commit point,
                                    so this side cannot know which side runs the guest; it
                                    keeps its copy stopped until the other side answers */
    LM_STATUS_COMPLETED,         /* "completed" */
    LM_STATUS_FAILED,            /* "failed": the guest runs on the source, intact */
    LM_STATUS_CANCELLING,        /* "cancelling": lm_cancel() was heard */
    LM_STATUS_CANCELLED,         /* "cancelled": the guest runs on the source, intact */
    LM_STATUS__COUNT
} lm_status;

const char *lm_status_name(lm_status s);

/* A snapshot passed to the progress callback ten times a second (later
 * versions may append fields). */
typedef struct lm_progress {
    unsigned round;            /* the round under way; 1 = the first full pass */
    double pass_percent;       /* of the current round's pages */
    double throughput_bps;     /* bytes per second, now (the last 100 ms or more) */
    double dirty_pages_rate;   /* pages per second, last sync */
    uint64_t remaining_bytes;  /* dirty data still to send */
    double elapsed_ms;         /* since lm_migrate began */
    uint64_t transferred;      /* bytes on the wire so far */
    lm_status status;          /* LM_STATUS_ACTIVE, ... */
    unsigned throttle_percent; /* auto-converge, now */
} lm_progress;

/*
 * Migration parameters. Fill them with lm_params_init(&p), which records
 * sizeof(lm_params) as this program was built in p.size, then change what
 * you need. The library reads p.size bytes and takes the defaults for any
 * field a later version appended; a size it does not know is refused with
 * -EINVAL. lm_migrate and lm_incoming copy the parameters when they start:
 * later changes to the caller's struct are not seen (lm_params_update
 * changes the live ones).
 */
typedef struct lm_params {
    size_t size;                /* set by lm_params_init: sizeof(lm_params) */
    uint64_t downtime_limit_ms; /* switch over when the rest fits in this (300) */
    uint64_t max_bandwidth;     /* bytes per second, 0 = unlimited */
    unsigned max_rounds;        /* switch over after this many rounds anyway (30) */
    bool verify;                /* compare digests of all guest RAM */
    lm_tracker_kind tracker;
    unsigned io_timeout_ms;           /* bound on any single network wait (10000) */
    uint64_t track_chunk;             /* bytes write-protected at a time in the first pass,
                                         just before they are sent (64 MiB); 0 protects each
                                         RAM block whole before sending it (for comparison) */
    bool auto_converge;               /* throttle the vCPUs while precopy does not converge */
    unsigned throttle_initial;        /* percent, first step (20); 1..99 with auto_converge, or
                                         lm_migrate fails with -EINVAL */
    unsigned throttle_increment;      /* percent added at each later step (10); 1..99 likewise */
    unsigned throttle_max;            /* percent auto-converge never goes past (99; QEMU's
                                         max-cpu-throttle); 1..99 */
    uint64_t dirty_limit;             /* pages per second per vCPU while precopy does not
                                         converge (0: off) */
    unsigned accept_timeout_ms;       /* destination: wait for the source (0 = forever) */
    unsigned recover_timeout_ms;      /* both sides: how long a side that lost its link after
                                         the commit could have happened (switchover-paused,
                                         postcopy-paused) waits for the other to come back;
                                         0: 600 s with postcopy, else io_timeout_ms */
    bool no_receivedmap;              /* destination: find zero pages by reading them
                                         (the seed's baseline; costs a fault a page) */
    unsigned multifd_channels;        /* source: extra connections for pages (0 = one stream) */
    lm_zero_detection zero_detection; /* source */
    lm_compression compress;          /* source; the destination follows the source */
    bool postcopy;                    /* source: may switch to postcopy (needs the destination's
                                         kernel to have userfaultfd) */
    unsigned postcopy_after_rounds;   /* source: switch after this many rounds (0: only on
                                     lm_start_postcopy() or when precopy stops converging) */
    bool postcopy_no_preempt;         /* source: urgent pages on the main connection, behind
                                         whatever is queued there (for comparison) */
    bool postcopy_move;               /* destination: place received pages with UFFDIO_MOVE
                                         (zero-copy from the receive buffer) instead of
                                         UFFDIO_COPY */
    int dest_thp;                     /* destination, RAM it allocates: 1 backs it with
                                         transparent huge pages (MADV_HUGEPAGE), 0 with 4 KiB
                                         pages; lm_params_init() sets the measured faster one.
                                         Either way a 2 MiB huge page is committed only where
                                         the source filled it densely (docs/SECURITY.md) */
    /* The destination owns its limits (docs/SECURITY.md). */
    uint64_t ram_size; /* destination: the guest's RAM is one block of this size
                          (id 0, "ram"); a source that declares any other layout
                          is refused before anything is allocated. 0: take the
                          source's layout, within max_ram. With RAM registered,
                          that is the layout, and ram_size, if set, must equal
                          its total */
    uint64_t max_ram;  /* destination, with neither ram_size nor RAM registered:
                          the largest guest (all blocks) a source may declare;
                          0 = LM_DEFAULT_MAX_RAM. Sparse guests larger than the
                          host are fine: memory is committed as data arrives, and
                          checked against what the host can give */
    /* TLS 1.3 on every connection (docs/SECURITY.md); NULL for plaintext. Both
     * sides must use it, with one of two kinds of credentials:
     *   tls_creds: X.509, a directory with QEMU's file names: ca-cert.pem, plus
     *              server-cert.pem and server-key.pem (destination) or
     *              client-cert.pem and client-key.pem (source); each side
     *              verifies the other's certificate against ca-cert.pem.
     *   tls_psk:   a pre-shared key file in QEMU's keys.psk format,
     *              "identity:hexkey" lines. */
    const char *tls_creds;
    const char *tls_psk;
    const char *tls_psk_identity; /* source: which identity of tls_psk ("qemu") */
    const char *tls_hostname;     /* source: the name the destination's certificate must
                                     carry (default: the URI's host; needed for unix:) */
    /* Called ten times a second from the migration thread (source). */
    void (*progress)(void *opaque, const lm_progress *p);
    void *progress_opaque;
    /* Fields added in later 1.x versions go here, at the end. */
#ifdef LM_ABI_TEST_APPENDED
    /* Only in the ABI test's library (tests/abi/): a field as a later 1.x
     * would append, whose default (7) the library checks it was given. */
    uint64_t abi_test_appended;
#endif
} lm_params;

/* Fills *p with the defaults and p->size. Call lm_params_init, compiled
 * into the program with the size of the lm_params it was built with. */
void lm_params_init_size(lm_params *p, size_t size);
static inline void lm_params_init(lm_params *p)
{
    lm_params_init_size(p, sizeof(*p));
}

/* Frozen within a major version (lm_stats holds an array of them). */
typedef struct lm_round_stats {
    unsigned round;
    uint64_t dirty_pages;      /* dirtied during the round: found by its chunk re-arms and the
                                  sync that ended it */
    double dirty_pages_rate;   /* pages dirtied per second during the round */
    unsigned throttle_percent; /* vCPU throttle in force during the round */
    uint64_t bytes;            /* bytes put on the wire during the round */
    double duration_ms;
    double bandwidth_bps;
} lm_round_stats;

#define LM_MAX_ROUND_STATS 256

/* Names follow QEMU's query-migrate; see the JSON report. While a migration
 * runs, mbps and pages_per_second are the current rates (the last 100 ms or
 * more); once it has ended they are averages over the time after setup, as
 * QEMU reports them. */
typedef struct lm_stats {
    size_t size; /* set by lm_stats_get: the bytes it filled */
    lm_status status;
    /* Why a failed or cancelled migration ended (lm_last_error's sentence);
     * "" otherwise. QEMU's error-desc. */
    char error_desc[512];
    double total_time_ms;
    double downtime_ms;
    double setup_time_ms;
    double verify_time_ms; /* digest time while stopped, kept out of downtime */
    /* Why precopy ended: "converged" (the rest fit in the downtime limit),
     * "round-limit" (max_rounds reached without converging), "postcopy"
     * (switched to postcopy), or "" while it runs. */
    char switchover_reason[16];
    double expected_downtime_ms; /* the estimate the decision was based on */
    uint64_t transferred;        /* bytes on the wire, headers included */
    uint64_t total;              /* bytes of guest RAM */
    uint64_t remaining;          /* source: bytes of dirty pages still to send */
    uint64_t page_size;          /* bytes; the unit of duplicate, normal and the rates */
    uint64_t duplicate;          /* zero pages sent without payload */
    uint64_t normal;             /* pages sent with payload */
    uint64_t normal_bytes;
    uint64_t dirty_sync_count;
    uint64_t multifd_bytes;
    uint64_t precopy_bytes;
    uint64_t downtime_bytes;
    uint64_t postcopy_bytes;
    double pages_per_second;
    double mbps;
    double dirty_pages_rate;          /* at the last sync */
    unsigned cpu_throttle_percentage; /* auto-converge, at the end */
    uint64_t dirty_limit;             /* the per-vCPU limit in force at the end (0: none) */
    uint64_t dest_minor_faults;       /* destination: faults taken while receiving */
    uint64_t dest_major_faults;
    bool verify_done;
    bool verify_match;
    char digest[40];  /* hex */
    char tracker[16]; /* dirty tracker used (source); precopy page placement,
                         "uffd-copy" or "in-place" (destination) */
    /* Postcopy. */
    bool postcopy;                  /* the migration switched to postcopy */
    uint64_t postcopy_requests;     /* pages a vCPU waited for, requested on the return path */
    uint64_t postcopy_needed;       /* source: pages still to send at the switch */
    uint64_t postcopy_pages_placed; /* destination: pages placed with data (UFFDIO_COPY) */
    uint64_t postcopy_zero_placed;  /* destination: zero pages placed (UFFDIO_ZEROPAGE) */
    uint64_t postcopy_duplicates;   /* destination: copies that arrived after the page */
    uint64_t postcopy_eexist;       /* destination: placements the kernel had already */
    uint64_t postcopy_moved;        /* destination: pages placed by UFFDIO_MOVE */
    uint64_t postcopy_faults;       /* destination: missing-page faults read */
    double request_latency_p50_us, request_latency_p99_us, request_latency_max_us;
    /* Destination: how many waits for requested pages the latencies above
     * are quantiles of. */
    uint64_t request_latency_count;
    double vcpu_blocktime_ms; /* destination: total time vCPUs waited on missing pages */
    /* Recovery: how often this side reconnected (source) or took a
     * reconnection (destination) after a broken link. */
    uint64_t reconnects;
    double paused_ms; /* total time paused (a link down past the commit point) */
    double resume_ms; /* the last recovery: from the link back to running again */
    /* Source, precopy resume: what the destination lacked at the last
     * reconnection (a page per populated page, 8 bytes an offset otherwise)
     * and the bytes sent from then on. */
    uint64_t resume_lacked_bytes, resume_sent_bytes;
    /* TLS: tls_mode is "" when the migration ran in plaintext. */
    char tls_mode[8];       /* "x509" or "psk" */
    char tls_cipher[48];    /* of the main connection: "TLS1.3/AES-256-GCM" */
    bool tls_ktls;          /* records sealed by the kernel (kTLS) */
    char tls_ktls_why[200]; /* why they are, or are not */
    unsigned nrounds;
    lm_round_stats rounds[LM_MAX_ROUND_STATS];
    /* Fields added in later 1.x versions go here, at the end. */
#ifdef LM_ABI_TEST_APPENDED
    uint64_t abi_test_appended; /* only in the ABI test's library, as above */
#endif
} lm_stats;

lm_ctx *lm_ctx_new(void);
void lm_ctx_free(lm_ctx *ctx);
const char *lm_last_error(const lm_ctx *ctx);

/* Anonymous memory suitable for guest RAM (page aligned, never-written pages
 * read as zero). Returns NULL and sets errno on failure. */
void *lm_ram_alloc(uint64_t len);
void lm_ram_free(void *host, uint64_t len);

/* Register guest RAM. len must be a multiple of the page size; name is
 * 1 to LM_BLOCK_NAME_MAX - 1 printable ASCII bytes, unique, as is id:
 * -EINVAL (a name too long, empty or unprintable), -EEXIST (taken) with
 * lm_last_error() otherwise. The destination matches its blocks to the
 * source's by name and size (and id, which must agree too), and refuses a
 * source whose layout differs, naming both. Registering nothing on the
 * destination lets lm_incoming() allocate blocks that match the source's
 * layout; lm_ram_block_get() then reports them. */
int lm_ram_block_add(lm_ctx *ctx, uint32_t id, const char *name, void *host, uint64_t len,
                     unsigned flags);
unsigned lm_ram_block_count(const lm_ctx *ctx);
/* Block index (0 .. lm_ram_block_count - 1), in registration order; any
 * out-pointer may be NULL. *name points into ctx, valid until it is freed. */
int lm_ram_block_get(const lm_ctx *ctx, unsigned index, uint32_t *id, const char **name,
                     void **host, uint64_t *len);

/* Copies *ops (its size bytes: call lm_set_guest_ops, which passes the
 * size this program was built with) and keeps opaque. */
void lm_set_guest_ops_size(lm_ctx *ctx, const lm_guest_ops *ops, size_t size, void *opaque);
static inline void lm_set_guest_ops(lm_ctx *ctx, const lm_guest_ops *ops, void *opaque)
{
    lm_set_guest_ops_size(ctx, ops, sizeof(*ops), opaque);
}

/*
 * Device-state sections (QEMU's SaveStateEntry and switchover-ack), for
 * devices whose state is large or changes while the guest runs (VFIO,
 * vhost): each section is registered on both sides under the same name,
 * with a version, and its state travels on the main connection in the
 * order it is saved.
 *
 * Source (all called on the migration thread):
 *   save_setup     optional, once as the migration starts.
 *   save_iterate   optional, while the guest runs, after each precopy round:
 *                  *buf (malloc()ed, the library frees it; NULL with *len 0
 *                  sends nothing this round), *done set once nothing more
 *                  is pending before the stop. A migration does not
 *                  converge while any section is not done; the round limit
 *                  and postcopy switch over anyway.
 *   save_complete  with the guest stopped: the rest of the state (may be
 *                  empty); required.
 * Destination:
 *   load           each part as it arrives, in order; complete is true for
 *                  save_complete's part. version is the source's, never
 *                  above this side's (a newer one is refused, naming the
 *                  section). After a link lost at the switchover and
 *                  recovered, the complete part may come again.
 *   switchover_ready  optional (switchover-ack): the source does not stop
 *                  the guest (nor switch to postcopy) until every section
 *                  that has it returned true once; it is asked at the
 *                  source's convergence points.
 * Each callback returns 0 or a negative errno (which fails the
 * migration, with the section named). The destination refuses a section
 * it has not registered and, at the switchover, a registered one the
 * source sent no complete part for. One part is at most
 * LM_SECTION_MAX_PART bytes. Register before lm_migrate/lm_incoming: 0,
 * -EINVAL (a bad name, version 0, save_complete or load missing), -EEXIST
 * (the name is taken) or -E2BIG (LM_MAX_SECTIONS).
 */
#define LM_MAX_SECTIONS     32
#define LM_SECTION_NAME_MAX 32
#define LM_SECTION_MAX_PART (32u << 20)

typedef struct lm_section_ops {
    int (*save_setup)(void *opaque);
    int (*save_iterate)(void *opaque, void **buf, size_t *len, bool *done);
    int (*save_complete)(void *opaque, void **buf, size_t *len);
    int (*load)(void *opaque, uint32_t version, const void *buf, size_t len, bool complete);
    bool (*switchover_ready)(void *opaque);
} lm_section_ops;

int lm_section_register_size(lm_ctx *ctx, const char *name, uint32_t version,
                             const lm_section_ops *ops, size_t size, void *opaque);
static inline int lm_section_register(lm_ctx *ctx, const char *name, uint32_t version,
                                      const lm_section_ops *ops, void *opaque)
{
    return lm_section_register_size(ctx, name, version, ops, sizeof(*ops), opaque);
}

/*
 * A dirty tracker the embedder supplies (params.tracker =
 * LM_TRACKER_EXTERNAL), for a VMM that already knows which pages its guest
 * wrote (it harvests KVM's dirty ring itself, or emulates every write):
 * livemig asks it instead of tracking. These are the operations the
 * built-in trackers implement (src/dirty/tracker.h); which pages held data
 * when armed livemig reads itself (/proc/self/pagemap). All are called on
 * the migration thread; block is the RAM block's index (lm_ram_block_get),
 * pages count from the block's start, and a bitmap holds 64 pages a word,
 * page p at bit p % 64 of word p / 64.
 *   start  optional, as the migration starts.
 *   arm    from now on, report every write to pages [first, first+count).
 *          The first pass arms each chunk just before sending it.
 *   sync   set in dirty every page of [first, first+count) written since
 *          it was armed or last re-armed (never clear a bit). With rearm,
 *          forget what this reported, atomically with reading it: a write
 *          that lands after the read must be reported by a later sync.
 *          Without, report the same pages again next time (the final sync,
 *          with the guest stopped, reads without rearm).
 *   stop   optional, when tracking ends (the migration ended, or tracking
 *          is no longer needed); must not fail.
 * A missed write is a corrupt guest on the destination: run with
 * params.verify while bringing a tracker up.
 */
typedef struct lm_dirty_tracker_ops {
    int (*start)(void *opaque);
    int (*arm)(void *opaque, unsigned block, uint64_t first, uint64_t count);
    int (*sync)(void *opaque, unsigned block, uint64_t first, uint64_t count, uint64_t *dirty,
                bool rearm);
    void (*stop)(void *opaque);
} lm_dirty_tracker_ops;

/* Copies *ops (size bytes of it; call lm_set_dirty_tracker) and keeps
 * opaque: 0, or -EINVAL without arm or sync. NULL ops removes it. */
int lm_set_dirty_tracker_size(lm_ctx *ctx, const lm_dirty_tracker_ops *ops, size_t size,
                              void *opaque);
static inline int lm_set_dirty_tracker(lm_ctx *ctx, const lm_dirty_tracker_ops *ops, void *opaque)
{
    return lm_set_dirty_tracker_size(ctx, ops, sizeof(*ops), opaque);
}

/*
 * KVM guests: hand livemig the VM so that it can use KVM's own dirty log
 * (params.tracker = LM_TRACKER_KVM_LOG, `--dirty-tracker kvm-log`) or, with
 * lm_kvm_attach_rings below, its dirty rings (LM_TRACKER_KVM_RING). Each
 * lm_kvm_slot describes one memory slot the VMM created with
 * KVM_SET_USER_MEMORY_REGION, and which registered RAM block it maps
 * (userspace_addr must be the block's host address + block_offset). A
 * block may be covered by several slots; a block with pages no slot covers
 * cannot be tracked by KVM, and lm_migrate with LM_TRACKER_KVM_LOG then
 * fails with -EINVAL.
 *
 * While tracking, livemig enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (with
 * KVM_DIRTY_LOG_INITIALLY_SET) on the VM and re-sets each slot with
 * KVM_MEM_LOG_DIRTY_PAGES added to 'flags'; when tracking ends it re-sets
 * each slot with 'flags' alone and turns manual protect off again. The
 * VMM must not change these slots while lm_migrate runs.
 *
 * KVM logs only what the guest writes through KVM (vCPUs, and KVM itself on
 * the guest's behalf, e.g. page-table accessed/dirty bits). Writes the VMM
 * makes to guest RAM itself (device emulation, virtio, DMA) are NOT seen:
 * a VMM that writes guest RAM while the guest runs must use a userfaultfd
 * tracker (the default), which sees every write.
 */
typedef struct lm_kvm_slot {
    uint32_t slot;         /* KVM slot id, as given to KVM_SET_USER_MEMORY_REGION */
    uint32_t block_id;     /* the RAM block (lm_ram_block_add id) it maps */
    uint64_t block_offset; /* where in the block it starts, page aligned */
    uint64_t size;         /* bytes, page aligned */
    uint64_t guest_phys;   /* its guest-physical address */
    uint32_t flags;        /* the slot's flags as the VMM set them, without
                              KVM_MEM_LOG_DIRTY_PAGES */
} lm_kvm_slot;

/* Registers vm_fd (a KVM_CREATE_VM descriptor, still owned by the caller)
 * and copies the n slots. Register the RAM blocks first. Validates that
 * each slot lies inside its block, page aligned, and that slots overlap
 * neither in their blocks, nor in guest-physical space, nor by id:
 * -EINVAL with lm_last_error() otherwise. Replaces an earlier attach;
 * vm_fd -1 with n 0 detaches. */
int lm_kvm_attach(lm_ctx *ctx, int vm_fd, const lm_kvm_slot *slots, unsigned n);

/*
 * KVM's dirty ring (params.tracker = LM_TRACKER_KVM_RING, `--dirty-tracker
 * kvm-ring`), in addition to lm_kvm_attach. The VMM enables the ring on
 * the VM before it creates any vCPU: KVM_ENABLE_CAP with
 * KVM_CAP_DIRTY_LOG_RING_ACQ_REL where KVM_CHECK_EXTENSION offers it, else
 * KVM_CAP_DIRTY_LOG_RING, args[0] = entries * sizeof(struct
 * kvm_dirty_gfn) bytes (a power of two, at least a page). rings[i] is vCPU
 * i's ring as mmapped from its vCPU descriptor at offset
 * KVM_DIRTY_LOG_PAGE_OFFSET * page size (PROT_READ|PROT_WRITE,
 * MAP_SHARED): an array of 'entries' struct kvm_dirty_gfn. The pointers
 * are copied; the VMM keeps the rings mapped and does not read or reset
 * them itself until lm_migrate returns.
 *
 * While tracking, livemig turns manual protect off and logging on for each
 * slot (as for kvm-log; this write-protects all guest RAM at once), and
 * the migration thread harvests every ring (entries marked dirty become
 * pending pages, marked reset) and calls KVM_RESET_DIRTY_RINGS on vm_fd at
 * each arm and sync. A vCPU whose ring is full exits with
 * KVM_EXIT_DIRTY_RING_FULL: its loop must not spin on KVM_RUN (KVM exits
 * again at once while the ring is full) but wait briefly, e.g. 100 us or
 * until the guest is stopped, and re-enter KVM_RUN; the ring empties at
 * the next harvest. A full ring thus throttles that vCPU to the harvests.
 *
 * Returns 0, or -EINVAL (lm_last_error) for NULL rings, nvcpus 0 or above
 * 4096, or entries not a power of two in [256, 65536]. Replaces earlier
 * rings; NULL with 0 detaches them (lm_kvm_attach with vm_fd -1 too).
 */
int lm_kvm_attach_rings(lm_ctx *ctx, void *const rings[], unsigned nvcpus, uint32_t entries);

/* Source: precopy to uri ("tcp:HOST:PORT" or "unix:PATH"). Blocks until the
 * migration completes or fails. On failure the guest keeps running on the
 * source with its memory intact. */
int lm_migrate(lm_ctx *ctx, const char *uri, const lm_params *params);

/* Destination: listen first (so a port of 0 can be resolved and reported),
 * then accept exactly one migration. lm_incoming() returns once the guest
 * has been resumed on this side. */
int lm_listen(const char *uri, lm_listener **out, char *errbuf, size_t errlen);
/* Checks an address's syntax (tcp:HOST:PORT, unix:PATH, fd:N; listen: as
 * lm_listen takes it, where port 0 is allowed) without touching the network:
 * 0, or -EINVAL with a sentence in errbuf. */
int lm_uri_check(const char *uri, bool listen, char *errbuf, size_t errlen);
const char *lm_listener_uri(const lm_listener *l);
void lm_listener_close(lm_listener *l);
int lm_incoming(lm_ctx *ctx, lm_listener *l, const lm_params *params);

/* Source: switch to postcopy (QEMU's migrate-start-postcopy); needs
 * params.postcopy. Heard between two batches, within a few milliseconds
 * (the middle of a pass too: the pages the pass had not reached go in
 * postcopy), so a migration may start postcopy right away. Safe from a
 * signal handler. */
void lm_start_postcopy(lm_ctx *ctx);

/* Source, postcopy (QEMU's migrate-pause): cut the migration's links as a
 * network failure would; both sides go to postcopy-paused, and this side
 * does not reconnect until lm_resume() (or the recover timeout, which then
 * fails it as any lost link does). 0, or -EINVAL outside postcopy-active. */
int lm_pause(lm_ctx *ctx);
/* Lets a source paused by lm_pause() reconnect (QEMU's migrate with
 * resume: true): 0, or -EINVAL when no pause holds it. */
int lm_resume(lm_ctx *ctx);

/*
 * Parameters that may change while a migration runs (QEMU's
 * migrate-set-parameters): max_bandwidth (heard within 20 ms),
 * downtime_limit_ms and max_rounds (at the next round's end),
 * throttle_initial, throttle_increment, throttle_max and dirty_limit (at
 * the next convergence step). Those fields of *p are taken, the others
 * ignored. Applies to the running migration, or to the next one when none
 * runs (then over the values lm_migrate is given). 0, or -EINVAL with a
 * sentence in errbuf for a value out of range. Safe from any thread.
 */
int lm_params_update(lm_ctx *ctx, const lm_params *p, char *errbuf, size_t errlen);

/* What lm_set_event_callback reports, as QEMU's MIGRATION and
 * MIGRATION_PASS events. */
typedef enum lm_event_kind {
    LM_EVENT_STATUS = 1, /* the status changed: ev->status */
    LM_EVENT_PASS,       /* a dirty-page sync began pass ev->pass (QEMU's dirty-sync-count) */
} lm_event_kind;

/* Later versions may append fields. */
typedef struct lm_event {
    lm_event_kind kind;
    lm_status status;
    uint64_t pass;
} lm_event;

/* fn is called on every status change and every pass, in order, from the
 * thread that made the change (one of the migration's threads) while the
 * library holds its event lock: it should only record the event (queue it,
 * write it to a pipe) and must not call into the library. NULL removes
 * it. Set it before lm_migrate/lm_incoming. */
void lm_set_event_callback(lm_ctx *ctx, void (*fn)(void *opaque, const lm_event *ev), void *opaque);

/* Ask a running lm_migrate()/lm_incoming() to stop: 0 when the request is
 * taken (the guest then stays on, or goes back to, the source), or -EBUSY,
 * changing nothing, while the migration's status is one where the guest's
 * memory is split between the two sides or where it runs is not known
 * (lm_status_guest_split: postcopy-active, postcopy-paused, postcopy-recover,
 * switchover-paused): cancelling there would lose the guest, so, as QEMU
 * refuses migrate_cancel in postcopy, the migration goes on (or stays paused
 * until it can recover). A request taken just before the commit point that
 * the migration had not acted on yet is dropped once it passes it. Only
 * atomic loads and stores: safe from any thread and from a signal handler. */
int lm_cancel(lm_ctx *ctx);
/* True for the statuses where lm_cancel() is refused. Safe anywhere. */
bool lm_status_guest_split(lm_status s);
/* The migration's current status (lm_stats.status) without taking the stats
 * lock: safe from any thread and from a signal handler (as is
 * lm_status_name(), a table lookup). */
lm_status lm_status_current(const lm_ctx *ctx);

/* A consistent copy of the current statistics, as much as this program's
 * lm_stats holds (lm_stats_get passes its size); safe from any thread. */
void lm_stats_get_size(lm_ctx *ctx, lm_stats *out, size_t size);
static inline void lm_stats_get(lm_ctx *ctx, lm_stats *out)
{
    lm_stats_get_size(ctx, out, sizeof(*out));
}
/* The statistics as one JSON object (README.md, "The JSON report"), in a
 * malloc()ed string the caller frees; role is "source" or "destination".
 * Fields beyond s->size are reported as zero. */
char *lm_stats_json(const lm_stats *s, const char *role);
/* A human report in the style of QEMU's `info migrate`. */
void lm_stats_print(const lm_stats *s, const char *role, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
