/*
 * The convergence policy acts on the round that just ended, however many
 * rounds came before: the report keeps only the first LM_MAX_ROUND_STATS,
 * and an earlier version read its stale slot past round 256.
 */
#include <string.h>

#include "check.h"
#include "migration/source.h"

typedef struct guest {
    unsigned throttle, calls;
} guest;

static int set_throttle(void *opaque, unsigned percent)
{
    guest *g = opaque;
    g->throttle = percent;
    g->calls++;
    return 0;
}

/* One round that put 'sent' bytes on the wire and left 'dirty' pages. */
static void round_of(lm_source *s, uint64_t sent, uint64_t dirty)
{
    lm__src_begin_round(s, dirty);
    s->conn.bytes_out += sent;
    lm__src_end_round(s, dirty);
    lm__src_converge_policy(s, dirty);
}

static void policy_after(unsigned quiet_rounds)
{
    lm_ctx *ctx = lm_ctx_new();
    guest g = {0};
    lm_guest_ops ops = {.throttle = set_throttle};
    lm_set_guest_ops(ctx, &ops, &g);
    lm_params p;
    lm_params_init(&p);
    p.auto_converge = true;
    lm_source s;
    memset(&s, 0, sizeof(s));
    s.ctx = ctx;
    s.p = &p;
    s.conn.fd = -1;
    uint64_t ps = ctx->ram.page_size;
    /* Rounds that converge nicely: 64 MiB sent, one page left dirty. */
    for (unsigned i = 0; i < quiet_rounds; i++)
        round_of(&s, 64ull << 20, 1);
    CHECK_EQ_U64(g.calls, 0);
    /* Then two rounds that dirty far more than half of what they send. */
    round_of(&s, 1ull << 20, (4ull << 20) / ps);
    CHECK_EQ_U64(g.calls, 0); /* one such round is not a trend */
    round_of(&s, 1ull << 20, (4ull << 20) / ps);
    CHECK_EQ_U64(g.calls, 1);
    CHECK_EQ_U64(g.throttle, p.throttle_initial);
    CHECK_EQ_U64(s.st.cpu_throttle_percentage, p.throttle_initial);
    CHECK_EQ_U64(s.st.nrounds, quiet_rounds + 2);
    CHECK_EQ_U64(s.last_round.round, quiet_rounds + 2);
    CHECK_EQ_U64(s.last_round.bytes, 1ull << 20);
    lm_ctx_free(ctx);
}

int main(void)
{
    policy_after(10);
    policy_after(LM_MAX_ROUND_STATS + 40); /* past the report's history */
    TEST_DONE();
}
