/*
 * The synthetic guest behind the `livemig` command: vCPU threads running a
 * write pattern over guest RAM, measuring their own write latency. Each
 * vCPU's progress counter and PRNG state are the guest's device state: they
 * move at switchover and the destination's vCPUs continue from them.
 */
#ifndef LM_GUEST_GUEST_H
#define LM_GUEST_GUEST_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livemig.h"
#include "util/histogram.h"

#define LM_GUEST_MAX_VCPUS 64

/* Windows the guest's own measurements are also kept for, to compare the
 * stalls migration adds with what the machine does anyway. */
enum { LM_WIN_BASELINE, LM_WIN_TRACK_START, LM_WIN__COUNT };
#define LM_WORKLOAD_SPEC_MAX 64

typedef enum lm_workload_kind {
    LM_WL_IDLE,   /* one vCPU that only ticks */
    LM_WL_FILL,   /* random data written once before migration, then idle */
    LM_WL_STRESS, /* N vCPUs, each rewriting its own region in a loop */
    LM_WL_RANDOM, /* one vCPU writing random pages at a fixed rate */
    LM_WL_TEXT,   /* like fill, with compressible text-like data */
    LM_WL_HOT,    /* N vCPUs all writing random pages of one shared SIZE region */
} lm_workload_kind;

typedef struct lm_workload {
    lm_workload_kind kind;
    unsigned threads;       /* stress */
    uint64_t bytes;         /* fill, text: data size; stress: region per thread */
    uint64_t pages_per_sec; /* random */
    char spec[LM_WORKLOAD_SPEC_MAX];
} lm_workload;

/* "idle", "fill:SIZE", "text:SIZE", "stress:NxSIZE", "hot:NxSIZE",
 * "random:PAGES_PER_SEC". */
int lm_workload_parse(const char *spec, lm_workload *w, char *why, size_t whylen);
/* Does it fit in ram_len bytes? */
int lm_workload_check(const lm_workload *w, uint64_t ram_len, char *why, size_t whylen);

/* Values as workload specs write them, for a command line that takes the
 * same: sizes with binary suffixes ("4096", "64K", "2G", "1T"), decimal
 * counts with no suffix, seconds as a decimal ("0.5") or "inf" (*infinite
 * set, *out INFINITY). 0 or -EINVAL (-ERANGE for a size that overflows). */
int lm_guest_parse_size(const char *s, uint64_t *out);
int lm_guest_parse_count(const char *s, uint64_t *out);
int lm_guest_parse_seconds(const char *s, double *out, bool *infinite);

/* The longest stalls one vCPU saw: gaps between two of its steps while the
 * guest ran. 'own' leaves out the time the vCPU sat runnable waiting for a
 * CPU (the scheduler's share, from /proc/thread-self/schedstat): what is
 * left is time spent in faults, page-table locks and blocking. */
typedef struct lm_stall_max {
    _Atomic uint64_t wall_ns;
    _Atomic uint64_t own_ns;
} lm_stall_max;

typedef struct lm_vcpu {
    struct lm_guest *g;
    unsigned index;
    pthread_t thread;
    bool started;
    /* Region of guest RAM this vCPU writes, in pages. */
    uint64_t first_page, npages;
    /* Device state: written by the vCPU, read by others only while parked. */
    _Atomic uint64_t counter;
    uint64_t prng;
    uint64_t cursor;
    lm_hist latency; /* nanoseconds a write took */
    /* Pacing state, the vCPU's own. */
    uint64_t slice_start_ns; /* throttle: start of the current 10 ms run slice */
    double tokens;           /* dirty limit: writes this vCPU may still do */
    uint64_t tokens_ns;      /* when tokens were last refilled */
    uint64_t last_step_ns;   /* end of the previous step (0 after a pause) */
    /* Run-queue accounting: this thread's schedstat, sampled now and then. */
    int schedstat_fd;
    uint64_t sample_ns, sample_wait_ns;
    lm_stall_max stall;
    lm_hist win_latency[LM_WIN__COUNT];
    lm_stall_max win_stall[LM_WIN__COUNT];
} lm_vcpu;

typedef struct lm_guest {
    uint8_t *ram;
    uint64_t ram_len, page_size;
    lm_workload wl;
    unsigned nvcpus;
    lm_vcpu vcpus[LM_GUEST_MAX_VCPUS];
    /* Run control: 'pause' is read by vCPUs on every step; parking and
     * waking go through lock/cond. */
    _Atomic int pause;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned parked;
    bool quit;
    uint64_t resumed_counter_sum; /* counters when the guest last resumed */
    /* Set by the migration thread, read by the vCPUs. */
    _Atomic unsigned throttle_pct;
    _Atomic uint64_t dirty_limit; /* pages per second per vCPU, 0: none */
    /* Window w is [win_ns[w], win_ns[w + 1]); all 0: no windows. */
    _Atomic uint64_t win_ns[LM_WIN__COUNT + 1];
} lm_guest;

/* Source: a guest over ram running workload w (fills first), started. */
int lm_guest_create(lm_guest *g, uint8_t *ram, uint64_t ram_len, const lm_workload *w,
                    uint64_t seed, char *why, size_t whylen);
/* Destination: an empty guest over ram; load_state gives it vCPUs. */
void lm_guest_init_empty(lm_guest *g, uint8_t *ram, uint64_t ram_len);
void lm_guest_destroy(lm_guest *g);

/* Faults every page of guest RAM in before a migration arrives (QEMU's
 * -mem-prealloc), with MADV_POPULATE_WRITE (Linux 5.14), a gibibyte at a
 * time; checks *stop (may be NULL) between gibibytes. 0, -EINTR when
 * stopped, or the -errno of madvise (-ENOMEM: not enough free memory). */
int lm_guest_ram_populate(void *ram, uint64_t len, const volatile sig_atomic_t *stop);

/* Callbacks for lm_set_guest_ops(); opaque is the lm_guest. */
extern const lm_guest_ops lm_guest_callbacks;

uint64_t lm_guest_counter_sum(lm_guest *g);
/* The clock of the guest's measurements and windows: CLOCK_MONOTONIC in
 * nanoseconds. */
uint64_t lm_guest_now_ns(void);
/* Marks the windows: baseline from now for len_ns, then tracking start. */
void lm_guest_start_windows(lm_guest *g, uint64_t len_ns);
/* Write latencies and the longest stalls of any vCPU, for window w or, with
 * w < 0, for the whole time the guest ran. */
void lm_guest_window(lm_guest *g, int w, lm_hist *latency, uint64_t *stall_ns,
                     uint64_t *stall_own_ns);

#endif
