/* The two state machines' tables and the one transition function. */
#include "migration/state.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define BIT(s) (1u << (s))

/* A debug build stops at the bug; a release build fails the migration. */
#ifdef NDEBUG
static const bool abort_on_illegal = false;
#else
static const bool abort_on_illegal = true;
#endif

static const char *const status_names[LM_STATUS__COUNT] = {
    [LM_STATUS_NONE] = "none",
    [LM_STATUS_SETUP] = "setup",
    [LM_STATUS_ACTIVE] = "active",
    [LM_STATUS_PRE_SWITCHOVER] = "pre-switchover",
    [LM_STATUS_DEVICE] = "device",
    [LM_STATUS_POSTCOPY_ACTIVE] = "postcopy-active",
    [LM_STATUS_POSTCOPY_PAUSED] = "postcopy-paused",
    [LM_STATUS_POSTCOPY_RECOVER] = "postcopy-recover",
    [LM_STATUS_SWITCHOVER_PAUSED] = "switchover-paused",
    [LM_STATUS_COMPLETED] = "completed",
    [LM_STATUS_FAILED] = "failed",
    [LM_STATUS_CANCELLING] = "cancelling",
    [LM_STATUS_CANCELLED] = "cancelled",
};

const char *lm_status_name(lm_status s)
{
    return (unsigned)s < LM_STATUS__COUNT ? status_names[s] : "unknown";
}

/* Before the commit point (docs/STATE-MACHINE.md) every state may fail or be
 * cancelled back to a running source; after it, only postcopy-paused. */
#define SRC_ABORT (BIT(LM_STATUS_FAILED) | BIT(LM_STATUS_CANCELLING))

static const uint32_t source_legal[LM_STATUS__COUNT] = {
    [LM_STATUS_NONE] = BIT(LM_STATUS_SETUP),
    [LM_STATUS_SETUP] = BIT(LM_STATUS_ACTIVE) | SRC_ABORT,
    [LM_STATUS_ACTIVE] = BIT(LM_STATUS_PRE_SWITCHOVER) | BIT(LM_STATUS_PRECOPY_PAUSED) | SRC_ABORT,
    [LM_STATUS_PRE_SWITCHOVER] = BIT(LM_STATUS_DEVICE) | BIT(LM_STATUS_PRECOPY_PAUSED) | SRC_ABORT,
    /* Before the commit: the guest runs here all along. */
    [LM_STATUS_PRECOPY_PAUSED] = BIT(LM_STATUS_ACTIVE) | SRC_ABORT,
    /* After the commit was sent, a broken link pauses: switchover-paused
     * (precopy), postcopy-paused (postcopy). */
    [LM_STATUS_DEVICE] = BIT(LM_STATUS_COMPLETED) | BIT(LM_STATUS_POSTCOPY_ACTIVE) |
                         BIT(LM_STATUS_SWITCHOVER_PAUSED) | BIT(LM_STATUS_POSTCOPY_PAUSED) |
                         BIT(LM_STATUS_PRECOPY_PAUSED) | SRC_ABORT,
    /* Reconnected: the destination confirms (completed) or, alive, says it
     * never ran the guest (failed: it runs here again). */
    [LM_STATUS_SWITCHOVER_PAUSED] = BIT(LM_STATUS_COMPLETED) | BIT(LM_STATUS_FAILED),
    [LM_STATUS_POSTCOPY_ACTIVE] = BIT(LM_STATUS_COMPLETED) | BIT(LM_STATUS_POSTCOPY_PAUSED),
    [LM_STATUS_POSTCOPY_PAUSED] = BIT(LM_STATUS_POSTCOPY_RECOVER),
    /* completed: the destination had every page; its answer was lost */
    [LM_STATUS_POSTCOPY_RECOVER] =
        BIT(LM_STATUS_POSTCOPY_ACTIVE) | BIT(LM_STATUS_POSTCOPY_PAUSED) | BIT(LM_STATUS_COMPLETED),
    [LM_STATUS_CANCELLING] = BIT(LM_STATUS_CANCELLED),
    /* completed, failed, cancelled: final; the paused states are final
     * when the other side does not come back in time */
};

static const lm_status source_reported[LM_STATUS__COUNT] = {
    [LM_STATUS_NONE] = LM_STATUS_NONE,
    [LM_STATUS_SETUP] = LM_STATUS_SETUP,
    [LM_STATUS_ACTIVE] = LM_STATUS_ACTIVE,
    [LM_STATUS_PRE_SWITCHOVER] = LM_STATUS_PRE_SWITCHOVER,
    [LM_STATUS_DEVICE] = LM_STATUS_DEVICE,
    [LM_STATUS_POSTCOPY_ACTIVE] = LM_STATUS_POSTCOPY_ACTIVE,
    [LM_STATUS_POSTCOPY_PAUSED] = LM_STATUS_POSTCOPY_PAUSED,
    [LM_STATUS_POSTCOPY_RECOVER] = LM_STATUS_POSTCOPY_RECOVER,
    [LM_STATUS_SWITCHOVER_PAUSED] = LM_STATUS_SWITCHOVER_PAUSED,
    [LM_STATUS_PRECOPY_PAUSED] = LM_STATUS_PRECOPY_PAUSED,
    [LM_STATUS_COMPLETED] = LM_STATUS_COMPLETED,
    [LM_STATUS_FAILED] = LM_STATUS_FAILED,
    [LM_STATUS_CANCELLING] = LM_STATUS_CANCELLING,
    [LM_STATUS_CANCELLED] = LM_STATUS_CANCELLED,
};

const lm_fsm_def lm_source_fsm = {
    .side = "source",
    .nstates = LM_STATUS__COUNT,
    .names = status_names,
    .legal = source_legal,
    .reported = source_reported,
};

static const char *const dest_names[LM_DST__COUNT] = {
    [LM_DST_SETUP] = "setup",
    [LM_DST_ACTIVE] = "active",
    [LM_DST_DEVICE] = "device",
    [LM_DST_VERIFY] = "verify",
    [LM_DST_POSTCOPY_SWITCH] = "postcopy-switch",
    [LM_DST_POSTCOPY_READY] = "postcopy-ready",
    [LM_DST_POSTCOPY_ACTIVE] = "postcopy-active",
    [LM_DST_POSTCOPY_VERIFY] = "postcopy-verify",
    [LM_DST_COMPLETED] = "completed",
    [LM_DST_FAILED] = "failed",
    [LM_DST_POSTCOPY_PAUSED] = "postcopy-paused",
    [LM_DST_CANCELLED] = "cancelled",
    [LM_DST_READY] = "ready",
    [LM_DST_SWITCHOVER_PAUSED] = "switchover-paused",
    [LM_DST_POSTCOPY_RECOVER] = "postcopy-recover",
    [LM_DST_PRECOPY_PAUSED] = "precopy-paused",
};

/* Until the guest runs here, any state may fail or be cancelled; once it
 * runs, only postcopy-paused. */
#define DST_ABORT (BIT(LM_DST_FAILED) | BIT(LM_DST_CANCELLED))

static const uint32_t dest_legal[LM_DST__COUNT] = {
    [LM_DST_SETUP] = BIT(LM_DST_ACTIVE) | DST_ABORT,
    [LM_DST_ACTIVE] =
        BIT(LM_DST_DEVICE) | BIT(LM_DST_POSTCOPY_SWITCH) | BIT(LM_DST_PRECOPY_PAUSED) | DST_ABORT,
    [LM_DST_PRECOPY_PAUSED] = BIT(LM_DST_ACTIVE) | DST_ABORT,
    [LM_DST_DEVICE] =
        BIT(LM_DST_VERIFY) | BIT(LM_DST_READY) | BIT(LM_DST_PRECOPY_PAUSED) | DST_ABORT,
    [LM_DST_VERIFY] = BIT(LM_DST_READY) | BIT(LM_DST_PRECOPY_PAUSED) | DST_ABORT,
    /* SWITCHOVER_READY sent: a broken link leaves the commit unknown. */
    [LM_DST_READY] = BIT(LM_DST_COMPLETED) | BIT(LM_DST_SWITCHOVER_PAUSED) | DST_ABORT,
    [LM_DST_POSTCOPY_SWITCH] = BIT(LM_DST_POSTCOPY_READY) | DST_ABORT,
    [LM_DST_POSTCOPY_READY] =
        BIT(LM_DST_POSTCOPY_ACTIVE) | BIT(LM_DST_SWITCHOVER_PAUSED) | DST_ABORT,
    /* The source came back: the state it left, the commit still to come. */
    /* ...or, in precopy, the source did not commit and resumes precopy. */
    [LM_DST_SWITCHOVER_PAUSED] =
        BIT(LM_DST_READY) | BIT(LM_DST_POSTCOPY_READY) | BIT(LM_DST_PRECOPY_PAUSED),
    [LM_DST_POSTCOPY_ACTIVE] =
        BIT(LM_DST_POSTCOPY_VERIFY) | BIT(LM_DST_COMPLETED) | BIT(LM_DST_POSTCOPY_PAUSED),
    [LM_DST_POSTCOPY_PAUSED] = BIT(LM_DST_POSTCOPY_RECOVER),
    [LM_DST_POSTCOPY_RECOVER] = BIT(LM_DST_POSTCOPY_ACTIVE) | BIT(LM_DST_POSTCOPY_PAUSED),
    /* failed: the digests differ after postcopy (the guest runs here; there
     * is no copy left to go back to, and the report says so) */
    [LM_DST_POSTCOPY_VERIFY] =
        BIT(LM_DST_COMPLETED) | BIT(LM_DST_POSTCOPY_PAUSED) | BIT(LM_DST_FAILED),
};

static const lm_status dest_reported[LM_DST__COUNT] = {
    [LM_DST_SETUP] = LM_STATUS_SETUP,
    [LM_DST_ACTIVE] = LM_STATUS_ACTIVE,
    [LM_DST_DEVICE] = LM_STATUS_DEVICE,
    [LM_DST_VERIFY] = LM_STATUS_DEVICE,
    [LM_DST_POSTCOPY_SWITCH] = LM_STATUS_DEVICE,
    [LM_DST_POSTCOPY_READY] = LM_STATUS_DEVICE,
    [LM_DST_POSTCOPY_ACTIVE] = LM_STATUS_POSTCOPY_ACTIVE,
    [LM_DST_POSTCOPY_VERIFY] = LM_STATUS_POSTCOPY_ACTIVE,
    [LM_DST_COMPLETED] = LM_STATUS_COMPLETED,
    [LM_DST_FAILED] = LM_STATUS_FAILED,
    [LM_DST_POSTCOPY_PAUSED] = LM_STATUS_POSTCOPY_PAUSED,
    [LM_DST_CANCELLED] = LM_STATUS_CANCELLED,
    [LM_DST_READY] = LM_STATUS_DEVICE,
    [LM_DST_SWITCHOVER_PAUSED] = LM_STATUS_SWITCHOVER_PAUSED,
    [LM_DST_POSTCOPY_RECOVER] = LM_STATUS_POSTCOPY_RECOVER,
    [LM_DST_PRECOPY_PAUSED] = LM_STATUS_PRECOPY_PAUSED,
};

const lm_fsm_def lm_dest_fsm = {
    .side = "destination",
    .nstates = LM_DST__COUNT,
    .names = dest_names,
    .legal = dest_legal,
    .reported = dest_reported,
};

void lm__fsm_init(lm_fsm *m, const lm_fsm_def *def, unsigned initial)
{
    m->def = def;
    m->state = initial;
}

int lm__fsm_enter(lm_fsm *m, unsigned to)
{
    const lm_fsm_def *d = m->def;
    if (to < d->nstates && (d->legal[m->state] & BIT(to))) {
        m->state = to;
        return 0;
    }
    if (abort_on_illegal) {
        fprintf(stderr, "livemig: illegal %s state transition %s -> %s\n", d->side,
                d->names[m->state], to < d->nstates ? d->names[to] : "(out of range)");
        abort();
    }
    return -EINVAL;
}
