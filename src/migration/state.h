/*
 * The migration state machines, one per side (docs/STATE-MACHINE.md has the
 * diagrams and the numbered invariants they keep).
 *
 * A side's machine is a table: state names and, for each state, the set of
 * states it may move to. Every state change goes through lm__fsm_enter(),
 * which checks that set: an illegal transition is a bug in the engine, so a
 * debug build aborts on it with both names; a release build refuses it and
 * returns -EINVAL, and the caller fails the migration the safe way.
 */
#ifndef LM_MIGRATION_STATE_H
#define LM_MIGRATION_STATE_H

#include <stdint.h>

#include "livemig.h"

typedef struct lm_fsm_def {
    const char *side;          /* "source", "destination": for the abort message */
    unsigned nstates;          /* at most 32 */
    const char *const *names;  /* names[state] */
    const uint32_t *legal;     /* legal[from]: bit 'to' set when from -> to is allowed */
    const lm_status *reported; /* reported[state]: the status the stats show */
} lm_fsm_def;

typedef struct lm_fsm {
    const lm_fsm_def *def;
    unsigned state;
} lm_fsm;

void lm__fsm_init(lm_fsm *m, const lm_fsm_def *def, unsigned initial);
/* Moves to 'to' if the table allows it: 0; otherwise aborts (debug build)
 * or returns -EINVAL and stays (release build). */
int lm__fsm_enter(lm_fsm *m, unsigned to);
static inline lm_status lm__fsm_status(const lm_fsm *m)
{
    return m->def->reported[m->state];
}
static inline const char *lm__fsm_name(const lm_fsm *m)
{
    return m->def->names[m->state];
}

/* The source's states are exactly the public ones. */
extern const lm_fsm_def lm_source_fsm;

/* The destination's: finer than the public ones, because which message may
 * arrive next depends on them (dest.c's [state][message] table). */
typedef enum lm_dst_state {
    LM_DST_SETUP,             /* setup: HELLO, layout, channels */
    LM_DST_ACTIVE,            /* active: precopy pages and rounds */
    LM_DST_DEVICE,            /* device: the device state is here; COMPLETE next */
    LM_DST_VERIFY,            /* device: every page is here; the source's digest next */
    LM_DST_POSTCOPY_SWITCH,   /* device: the needed-pages map is here; device state next */
    LM_DST_POSTCOPY_READY,    /* device: set up, SWITCHOVER_READY sent; POSTCOPY_RUN next */
    LM_DST_POSTCOPY_ACTIVE,   /* postcopy-active: the guest runs here */
    LM_DST_POSTCOPY_VERIFY,   /* postcopy-active: every page placed; the digest next */
    LM_DST_COMPLETED,         /* completed: the guest runs here */
    LM_DST_FAILED,            /* failed: the guest never ran here */
    LM_DST_POSTCOPY_PAUSED,   /* postcopy-paused: the guest runs here on partial memory */
    LM_DST_CANCELLED,         /* cancelled: the guest never ran here */
    LM_DST_READY,             /* device: SWITCHOVER_READY sent; the commit (COMMIT) next */
    LM_DST_SWITCHOVER_PAUSED, /* switchover-paused: the link broke in 'ready' or
                                 'postcopy-ready'; the guest stays stopped until the
                                 source reconnects and commits */
    LM_DST_POSTCOPY_RECOVER,  /* postcopy-recover: reconnected after a pause */
    LM_DST_PRECOPY_PAUSED,    /* precopy-paused: the link broke during precopy; keep what
                                 arrived and wait for the source (--recover-timeout) */
    LM_DST__COUNT
} lm_dst_state;

extern const lm_fsm_def lm_dest_fsm;

#endif
