/*
 * Testing aids: knobs that make a migration misbehave on purpose, for the
 * tests and benchmarks in this repository. Not part of the API: this header
 * is not installed and the shared library does not export lm_testing_set.
 * The command (which links the static library) sets them from its hidden
 * --x-* options.
 */
#ifndef LIVEMIG_TESTING_H
#define LIVEMIG_TESTING_H

#include "livemig.h"

typedef struct lm_testing {
    unsigned postcopy_cut_ms; /* source: cut every connection this long after the
                                 guest started on the destination (once) */
    unsigned slow_channel_us; /* destination: multifd channel 0 waits this long
                                 before placing each packet, so packets of a round
                                 arrive late against the next round's */
    uint64_t host_available;  /* destination: pretend the host can give guest RAM
                                 this many bytes (less what this migration
                                 committed); 0: read MemAvailable and the cgroup */
    bool place_copy;          /* destination: place precopy pages never received
                                 with UFFDIO_COPY instead of writing them in place
                                 (measured in docs/BENCHMARKS.md, "Placement":
                                 not the default on this machine) */
} lm_testing;

/* Copies *t into ctx for the migrations that follow; NULL clears it. */
void lm_testing_set(lm_ctx *ctx, const lm_testing *t);

#endif
