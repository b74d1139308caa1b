/* What the subcommands share: each side's runner and the signal state. */
#ifndef LM_CLI_RUN_H
#define LM_CLI_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli/options.h"
#include "guest/guest.h"
#include "livemig.h"

/* Set once SIGINT or SIGTERM arrived. */
extern volatile sig_atomic_t cli_interrupted;

/* The destination on an open listener: accepts one migration, runs the
 * guest for o->run_for, reports. Returns the exit status. */
int cli_run_incoming(cli_opts *o, lm_listener *l);
/* The source: a guest running o->workload, migrated to o->to, reported.
 * Returns the exit status. */
int cli_run_migrate(cli_opts *o);
/* Reads o->workload and checks that it fits o->ram: 0, or 2 (a usage
 * error) after saying why. */
int cli_check_workload(const cli_opts *o, lm_workload *wl);
/* `livemig demo`: both ends on loopback (demo.c). Returns the exit status. */
int cli_demo(cli_opts *o);

/* Shared by the runners (main.c). */
void cli_set_cancel_target(lm_ctx *ctx); /* what SIGINT/SIGTERM cancel (NULL: nothing) */
void cli_hold_paused_state(const char *who);
void cli_sleep_seconds(double secs); /* INFINITY: until interrupted */
int cli_prealloc_ram(cli_opts *o, lm_ctx *ctx, uint8_t **out);
bool cli_tell_ready(cli_opts *o);

/* --guest kvm (kvm.c): the same runners for the KVM guest, and
 * `livemig kvm-check` (exit 0, or 77 with a line saying why). */
int cli_run_incoming_kvm(cli_opts *o, lm_listener *l);
int cli_run_migrate_kvm(cli_opts *o, const lm_workload *wl);
int cli_kvm_check(void);

#endif
