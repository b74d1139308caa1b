/*
 * Convergence on the source: what to do when precopy does not converge.
 * Auto-converge slows the vCPUs down, a dirty limit caps their dirty rate,
 * and postcopy finishes the migration anyway; each acts on the last round's
 * numbers (lm_source.last_round), never on the report's history.
 */
#include <stdatomic.h>

#include "migration/source.h"

#define POSTCOPY_STALL_ROUNDS 3

/* Auto-converge and dirty limit: when a round dirtied more than half of what
 * it managed to send, twice in a row, slow the guest down (QEMU's
 * cpu-throttle-initial / -increment), or cap each vCPU's dirty rate. */
void lm__src_converge_policy(lm_source *s, uint64_t dirty_pages)
{
    lm_ctx *ctx = s->ctx;
    const lm_round_stats *r = s->st.nrounds ? &s->last_round : NULL;
    uint64_t dirtied = dirty_pages * ctx->ram.page_size;
    /* A dirty limit changed while applied (lm_params_update) changes now. */
    if (s->dirty_limited && s->st.dirty_limit != s->p->dirty_limit && ctx->gops.dirty_limit &&
        ctx->gops.dirty_limit(ctx->gopaque, s->p->dirty_limit) == 0) {
        s->st.dirty_limit = s->p->dirty_limit;
        s->dirty_limited = s->p->dirty_limit != 0;
    }
    if (!r || !(s->p->auto_converge || s->p->dirty_limit))
        return;
    s->high_dirty_rounds = dirtied * 2 > r->bytes ? s->high_dirty_rounds + 1 : 0;
    if (s->high_dirty_rounds < 2)
        return;
    s->high_dirty_rounds = 0;
    if (s->p->dirty_limit && !s->dirty_limited && ctx->gops.dirty_limit &&
        ctx->gops.dirty_limit(ctx->gopaque, s->p->dirty_limit) == 0) {
        s->dirty_limited = true;
        s->st.dirty_limit = s->p->dirty_limit;
    }
    if (s->p->auto_converge && ctx->gops.throttle) {
        unsigned next =
            s->throttle ? s->throttle + s->p->throttle_increment : s->p->throttle_initial;
        next = next > s->p->throttle_max ? s->p->throttle_max : next;
        if (next != s->throttle && ctx->gops.throttle(ctx->gopaque, next) == 0)
            s->throttle = next;
    }
    s->st.cpu_throttle_percentage = s->throttle;
}

bool lm__src_want_postcopy(lm_source *s, uint64_t dirty_pages)
{
    if (!s->p->postcopy)
        return false;
    /* Not converging: the dirty set has not shrunk for a few rounds. */
    if (s->st.nrounds == 1 || dirty_pages < s->min_dirty) {
        s->min_dirty = dirty_pages;
        s->no_progress_rounds = 0;
    } else {
        s->no_progress_rounds++;
    }
    if (atomic_load(&s->ctx->postcopy_requested))
        return true;
    if (s->p->postcopy_after_rounds && s->st.nrounds >= s->p->postcopy_after_rounds)
        return true;
    return s->no_progress_rounds >= POSTCOPY_STALL_ROUNDS;
}
