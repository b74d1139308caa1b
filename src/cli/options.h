/*
 * The command line of `livemig`: every option is one row of a table (name,
 * argument, field, how its value is read, help line, which subcommands
 * accept it), from which getopt_long's list, the usage text and each
 * subcommand's --help are generated.
 */
#ifndef LM_CLI_OPTIONS_H
#define LM_CLI_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "livemig.h"
#include "livemig_testing.h"

/* The subcommands, as bits of an option's mask. */
enum {
    CLI_MIGRATE = 1u << 0,
    CLI_INCOMING = 1u << 1,
    CLI_DEMO = 1u << 2,
    CLI_KVM_CHECK = 1u << 3,
};

/* --guest: which guest runs (and migrates). */
enum { CLI_GUEST_THREAD = 0, CLI_GUEST_KVM = 1 };

/* --baseline-load auto: as many busy threads as the migration keeps busy. */
#define CLI_LOAD_AUTO (~0u)

typedef struct cli_opts {
    unsigned cmd;         /* CLI_MIGRATE, CLI_INCOMING, CLI_DEMO or CLI_KVM_CHECK */
    const char *cmd_name; /* as typed */
    uint64_t ram;
    const char *workload;
    const char *to;
    const char *listen;
    const char *qmp;      /* --qmp URI: a QMP control socket */
    const char *timeline; /* --timeline FILE */
    lm_params params;
    const char *stats_json;
    const char *dest_stats_json;
    double run_for; /* seconds the destination's guest runs; INFINITY: until interrupted */
    uint64_t seed;
    bool no_progress;
    unsigned window_ms;     /* baseline and tracking-start windows of the guest stats */
    bool ram_thp;           /* back the source guest's RAM with transparent huge pages */
    unsigned baseline_load; /* busy threads in the baseline window, or CLI_LOAD_AUTO */
    bool dest_prealloc;     /* incoming: populate guest RAM (--ram) before accepting */
    int ready_fd;           /* demo's destination: a byte here once it is listening, ready */
    bool local_dest;        /* demo: the destination's threads share this host */
    unsigned guest;         /* CLI_GUEST_THREAD or CLI_GUEST_KVM */
    unsigned x_warmup_ms;   /* bench aid: the KVM guest runs this long before the baseline */
    uint64_t x_kvm_damage;  /* testing aid: 1 + a page the KVM destination sets back, 0: none */
    uint32_t dirty_ring;    /* --guest kvm --dirty-tracker kvm-ring: entries per vCPU ring */
    lm_testing testing;     /* the hidden --x-* testing aids */
} cli_opts;

/* A context with the options' testing aids set; NULL when out of memory. */
lm_ctx *cli_ctx_new(const cli_opts *o);

/* Parses argv (argv[1] names the subcommand) into o, which it initializes
 * first. Returns -1 when the command should run, or the exit status to end
 * with: 0 after printing help, 2 after a usage error (said on stderr). */
int cli_parse(int argc, char **argv, cli_opts *o);

/* Says "livemig: <message>" on stderr, and where to find help (the
 * subcommand's when o names one; o may be NULL). Returns 2, the exit status
 * of a usage error. */
int cli_fail_usage(const cli_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
