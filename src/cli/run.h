/* What the subcommands share: each side's runner and the signal state. */
#ifndef LM_CLI_RUN_H
#define LM_CLI_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli/options.h"
#include "guest/guest.h"
#include "livemig.h"

/* Set once a SIGINT or SIGTERM was taken (not one refused because the
 * guest's memory is split: signals.c). */
extern volatile sig_atomic_t cli_interrupted;

/* The exit status of a force-quit: SIGQUIT, or a second SIGINT/SIGTERM
 * within CLI_FORCE_QUIT_WINDOW_S seconds of one refused (signals.c). */
#define CLI_EXIT_FORCE_QUIT     3
#define CLI_FORCE_QUIT_WINDOW_S 5

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

/* Signals (signals.c). */
void cli_signals_install(void);
/* What SIGINT/SIGTERM cancel (NULL: nothing) and the side's name in
 * messages ("livemig incoming"; NULL: unchanged); while set, a thread says
 * when the migration enters a state where they no longer cancel. */
void cli_set_cancel_target(lm_ctx *ctx, const char *who);
/* Postcopy is paused: keeps this process and its part of the guest until a
 * force-quit; never returns. */
_Noreturn void cli_hold_paused_state(const char *who, lm_ctx *ctx);

/* Shared by the runners (main.c). */
void cli_sleep_seconds(double secs); /* INFINITY: until interrupted */
int cli_prealloc_ram(cli_opts *o, lm_ctx *ctx, uint8_t **out);
bool cli_tell_ready(cli_opts *o);

/* --guest kvm (kvm.c): the same runners for the KVM guest, and
 * `livemig kvm-check` (exit 0, or 77 with a line saying why). */
int cli_run_incoming_kvm(cli_opts *o, lm_listener *l);
int cli_run_migrate_kvm(cli_opts *o, const lm_workload *wl);
int cli_kvm_check(void);

#endif
