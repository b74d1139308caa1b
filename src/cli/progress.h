#ifndef LM_CLI_PROGRESS_H
#define LM_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "livemig.h"

/* The live progress line on stderr: redrawn in place on a terminal, one line
 * a second otherwise (logs stay readable). */
typedef struct lm_cli_progress_state {
    bool tty;
    bool drawn;
    uint64_t last_line_ns;
} lm_cli_progress_state;

void lm_cli_progress_init(lm_cli_progress_state *st);
/* An lm_params progress callback; opaque is an lm_cli_progress_state. */
void lm_cli_progress(void *opaque, const lm_progress *p);
/* Ends the in-place line so the report starts on a fresh one. */
void lm_cli_progress_done(lm_cli_progress_state *st);

#endif
