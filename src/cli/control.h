/*
 * The command's side of the QMP control socket (--qmp): which migration to
 * run next (--to/--listen, or QMP's migrate/migrate-incoming with defer),
 * the parameters a migration starts with, the guest's run state, quit.
 * Without --qmp it only hands out --to/--listen once.
 */
#ifndef LM_CLI_CONTROL_H
#define LM_CLI_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include "cli/options.h"
#include "cli/timeline.h"
#include "livemig.h"

typedef struct cli_control cli_control;

/* Starts QMP on o->qmp when given (source: the side that runs lm_migrate).
 * 0, or 1 (the exit status) after saying why. */
int cli_control_start(cli_control **out, cli_opts *o, lm_ctx *ctx, bool source);
void cli_control_free(cli_control *c);

/* Source: the next destination (o->to, unless "defer"; then each QMP
 * migrate) into buf; false on quit or Ctrl-C. */
bool cli_control_next_migration(cli_control *c, char *buf, size_t len);
/* Destination: the listener (o->listen, unless "defer"; then QMP's
 * migrate-incoming); NULL on quit, Ctrl-C or a failure it reported. */
lm_listener *cli_control_listener(cli_control *c);

/* A migration starts with *run (the parameters, QMP's changes included)
 * and ends; between the two, parameters QMP changes go to it live. */
void cli_control_begin(cli_control *c, lm_params *run);
void cli_control_end(cli_control *c, bool completed);
/* The guest's vCPUs were stopped for good on this side (query-status). */
void cli_control_guest_stopped(cli_control *c);
/* With QMP: waits for quit (or Ctrl-C), saying so once. */
void cli_control_wait_quit(cli_control *c);
bool cli_control_active(const cli_control *c); /* --qmp given */
/* The timeline that takes the migration's events (NULL: none). */
void cli_control_set_timeline(cli_control *c, cli_timeline *t);

#endif
