/*
 * --timeline FILE: a picture of a migration in numbers. A thread samples
 * the migration's statistics and the guest every 100 ms; round ends,
 * status changes (the switchover, postcopy) add a row when they happen.
 * The file is text, one row per line, columns separated by spaces, with a
 * header line: what `livemig plot` (plot.c) and gnuplot read.
 */
#ifndef LM_CLI_TIMELINE_H
#define LM_CLI_TIMELINE_H

#include "guest/guest.h"
#include "livemig.h"

typedef struct cli_timeline cli_timeline;

/* Opens path and starts sampling ctx (and the guest g, may be NULL). 0, or
 * -1 after saying why. */
int cli_timeline_start(cli_timeline **out, const char *path, lm_ctx *ctx, lm_guest *g);
/* Writes the last row and closes the file (NULL: nothing). */
void cli_timeline_stop(cli_timeline *t);
/* A migration event (from the CLI's event callback): a row at once. */
void cli_timeline_event(cli_timeline *t, const lm_event *ev);

/* The columns, in order (the second line of the file, after a "# "). */
#define CLI_TIMELINE_COLUMNS                                                                       \
    "time-ms kind status round transferred mbps remaining dirty-pages-rate throttle "              \
    "postcopy-requests write-p99-us write-max-us"

#endif
