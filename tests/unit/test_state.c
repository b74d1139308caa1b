/*
 * The state machines (src/migration/state.c, docs/STATE-MACHINE.md): every
 * transition the engine makes is legal, the invariants hold in the tables,
 * the destination's message table lets each message in only where the
 * protocol sends it, and an illegal transition aborts a debug build (and is
 * refused in a release build).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "migration/dest.h"
#include "migration/state.h"

static bool legal(const lm_fsm_def *d, unsigned from, unsigned to)
{
    return d->legal[from] & (1u << to);
}

/* Walks a path; every step must be accepted. */
static void walk(const lm_fsm_def *d, const unsigned *path, unsigned n)
{
    lm_fsm m;
    lm__fsm_init(&m, d, path[0]);
    for (unsigned i = 1; i < n; i++) {
        CHECK(lm__fsm_enter(&m, path[i]) == 0);
        CHECK_EQ_U64(m.state, path[i]);
    }
}

static void source_paths(void)
{
    const unsigned precopy[] = {LM_STATUS_NONE,           LM_STATUS_SETUP,  LM_STATUS_ACTIVE,
                                LM_STATUS_PRE_SWITCHOVER, LM_STATUS_DEVICE, LM_STATUS_COMPLETED};
    const unsigned postcopy[] = {LM_STATUS_NONE,           LM_STATUS_SETUP,
                                 LM_STATUS_ACTIVE,         LM_STATUS_PRE_SWITCHOVER,
                                 LM_STATUS_DEVICE,         LM_STATUS_POSTCOPY_ACTIVE,
                                 LM_STATUS_POSTCOPY_PAUSED};
    const unsigned cancel[] = {LM_STATUS_NONE, LM_STATUS_SETUP, LM_STATUS_ACTIVE,
                               LM_STATUS_CANCELLING, LM_STATUS_CANCELLED};
    /* The commit's answer lost, asked again over a new link. */
    const unsigned lost_answer[] = {LM_STATUS_DEVICE, LM_STATUS_SWITCHOVER_PAUSED,
                                    LM_STATUS_COMPLETED};
    const unsigned recovered[] = {LM_STATUS_DEVICE,           LM_STATUS_POSTCOPY_PAUSED,
                                  LM_STATUS_POSTCOPY_RECOVER, LM_STATUS_POSTCOPY_ACTIVE,
                                  LM_STATUS_POSTCOPY_PAUSED,  LM_STATUS_POSTCOPY_RECOVER,
                                  LM_STATUS_POSTCOPY_ACTIVE,  LM_STATUS_COMPLETED};
    const unsigned resumed[] = {LM_STATUS_ACTIVE, LM_STATUS_PRECOPY_PAUSED, LM_STATUS_ACTIVE,
                                LM_STATUS_PRE_SWITCHOVER, LM_STATUS_PRECOPY_PAUSED,
                                LM_STATUS_ACTIVE, LM_STATUS_PRECOPY_PAUSED, LM_STATUS_CANCELLING};
    walk(&lm_source_fsm, resumed, sizeof(resumed) / sizeof(resumed[0]));
    walk(&lm_source_fsm, lost_answer, sizeof(lost_answer) / sizeof(lost_answer[0]));
    walk(&lm_source_fsm, recovered, sizeof(recovered) / sizeof(recovered[0]));
    walk(&lm_source_fsm, precopy, sizeof(precopy) / sizeof(precopy[0]));
    walk(&lm_source_fsm, postcopy, sizeof(postcopy) / sizeof(postcopy[0]));
    walk(&lm_source_fsm, cancel, sizeof(cancel) / sizeof(cancel[0]));
}

static void dest_paths(void)
{
    const unsigned precopy[] = {LM_DST_SETUP,  LM_DST_ACTIVE,   LM_DST_DEVICE,
                                LM_DST_VERIFY, LM_DST_READY,    LM_DST_SWITCHOVER_PAUSED,
                                LM_DST_READY,  LM_DST_COMPLETED};
    const unsigned postcopy[] = {LM_DST_SETUP,
                                 LM_DST_ACTIVE,
                                 LM_DST_POSTCOPY_SWITCH,
                                 LM_DST_POSTCOPY_READY,
                                 LM_DST_SWITCHOVER_PAUSED,
                                 LM_DST_POSTCOPY_READY,
                                 LM_DST_POSTCOPY_ACTIVE,
                                 LM_DST_POSTCOPY_PAUSED,
                                 LM_DST_POSTCOPY_RECOVER,
                                 LM_DST_POSTCOPY_ACTIVE,
                                 LM_DST_POSTCOPY_VERIFY,
                                 LM_DST_COMPLETED};
    const unsigned resumed[] = {LM_DST_ACTIVE, LM_DST_PRECOPY_PAUSED, LM_DST_ACTIVE,
                                LM_DST_PRECOPY_PAUSED, LM_DST_FAILED};
    walk(&lm_dest_fsm, resumed, sizeof(resumed) / sizeof(resumed[0]));
    walk(&lm_dest_fsm, precopy, sizeof(precopy) / sizeof(precopy[0]));
    walk(&lm_dest_fsm, postcopy, sizeof(postcopy) / sizeof(postcopy[0]));
}

/* Invariants 1-3 of docs/STATE-MACHINE.md, read off the tables. */
static void invariants(void)
{
    const lm_fsm_def *s = &lm_source_fsm, *d = &lm_dest_fsm;
    /* 1: after the commit the source never goes back to a running guest. */
    CHECK(!legal(s, LM_STATUS_POSTCOPY_ACTIVE, LM_STATUS_FAILED));
    CHECK(!legal(s, LM_STATUS_POSTCOPY_ACTIVE, LM_STATUS_CANCELLING));
    CHECK(!legal(s, LM_STATUS_COMPLETED, LM_STATUS_FAILED));
    /* 2: the destination's guest, once it runs, is never given up. */
    CHECK(!legal(d, LM_DST_POSTCOPY_ACTIVE, LM_DST_FAILED));
    CHECK(!legal(d, LM_DST_POSTCOPY_ACTIVE, LM_DST_CANCELLED));
    /* 3: final states are final; every other state can fail safely, to a
     * running source (failed) or, past the commit, to a pause. */
    const unsigned src_final[] = {LM_STATUS_COMPLETED, LM_STATUS_FAILED, LM_STATUS_CANCELLED};
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ_U64(s->legal[src_final[i]], 0);
    for (unsigned st = LM_STATUS_SETUP; st < LM_STATUS__COUNT; st++)
        if (s->legal[st] && st != LM_STATUS_CANCELLING && st != LM_STATUS_POSTCOPY_PAUSED &&
            st != LM_STATUS_SWITCHOVER_PAUSED)
            CHECK(legal(s, st, LM_STATUS_FAILED) || legal(s, st, LM_STATUS_POSTCOPY_PAUSED));
    for (unsigned st = 0; st < LM_DST__COUNT; st++)
        if (d->legal[st] && st != LM_DST_POSTCOPY_PAUSED && st != LM_DST_SWITCHOVER_PAUSED)
            CHECK(legal(d, st, LM_DST_FAILED) || legal(d, st, LM_DST_POSTCOPY_PAUSED) ||
                  legal(d, st, LM_DST_SWITCHOVER_PAUSED));
    CHECK_EQ_U64(d->legal[LM_DST_COMPLETED] | d->legal[LM_DST_FAILED] | d->legal[LM_DST_CANCELLED],
                 0);
    /* 8: the commit. The destination runs the guest only from a state where
     * it said it was ready (the COMMIT or POSTCOPY_RUN handler), or after a
     * recovery; a side that cannot know is never cancelled or failed. */
    for (unsigned st = 0; st < LM_DST__COUNT; st++) {
        if (legal(d, st, LM_DST_COMPLETED))
            CHECK(st == LM_DST_READY || st == LM_DST_POSTCOPY_ACTIVE ||
                  st == LM_DST_POSTCOPY_VERIFY);
        if (legal(d, st, LM_DST_POSTCOPY_ACTIVE))
            CHECK(st == LM_DST_POSTCOPY_READY || st == LM_DST_POSTCOPY_RECOVER);
    }
    CHECK(!legal(d, LM_DST_SWITCHOVER_PAUSED, LM_DST_FAILED));
    CHECK(!legal(d, LM_DST_SWITCHOVER_PAUSED, LM_DST_CANCELLED));
    CHECK(!legal(s, LM_STATUS_SWITCHOVER_PAUSED, LM_STATUS_CANCELLING));
    CHECK(!legal(s, LM_STATUS_POSTCOPY_PAUSED, LM_STATUS_FAILED));
    CHECK(!legal(s, LM_STATUS_POSTCOPY_RECOVER, LM_STATUS_FAILED));
    /* Reported statuses carry QEMU's names. */
    CHECK(!strcmp(lm_status_name(d->reported[LM_DST_VERIFY]), "device"));
    CHECK(!strcmp(lm_status_name(d->reported[LM_DST_POSTCOPY_VERIFY]), "postcopy-active"));
    CHECK(!strcmp(lm_status_name(LM_STATUS_PRE_SWITCHOVER), "pre-switchover"));
    CHECK(!strcmp(lm_status_name(LM_STATUS__COUNT), "unknown"));
}

/* Which message the destination lets in where (dest.c's table). */
static void message_table(void)
{
    static const struct {
        unsigned state;
        uint16_t type;
        bool ok;
    } cases[] = {
        {LM_DST_ACTIVE, LM_MSG_PAGES, true},
        {LM_DST_ACTIVE, LM_MSG_PING, true},
        {LM_DST_ACTIVE, LM_MSG_DEVICE_STATE, true},
        {LM_DST_ACTIVE, LM_MSG_COMPLETE, false}, /* COMPLETE before DEVICE_STATE */
        {LM_DST_ACTIVE, LM_MSG_POSTCOPY_RUN, false},
        {LM_DST_ACTIVE, LM_MSG_HELLO, false},
        {LM_DST_ACTIVE, LM_MSG_VERIFY, false},
        {LM_DST_DEVICE, LM_MSG_DEVICE_STATE, false}, /* DEVICE_STATE twice */
        {LM_DST_DEVICE, LM_MSG_PAGES, false},
        {LM_DST_DEVICE, LM_MSG_COMPLETE, true},
        {LM_DST_VERIFY, LM_MSG_VERIFY, true},
        {LM_DST_VERIFY, LM_MSG_COMPLETE, false},
        {LM_DST_POSTCOPY_SWITCH, LM_MSG_POSTCOPY_RUN, false}, /* RUN before the state */
        {LM_DST_POSTCOPY_SWITCH, LM_MSG_DEVICE_STATE, true},
        {LM_DST_POSTCOPY_READY, LM_MSG_POSTCOPY_RUN, true},
        {LM_DST_READY, LM_MSG_COMMIT, true},
        {LM_DST_VERIFY, LM_MSG_COMMIT, false}, /* COMMIT before the verdict */
        {LM_DST_DEVICE, LM_MSG_COMMIT, false},
        {LM_DST_ACTIVE, LM_MSG_COMMIT, false},
        {LM_DST_READY, LM_MSG_PAGES, false},
        {LM_DST_POSTCOPY_READY, LM_MSG_COMMIT, false}, /* postcopy commits with RUN */
        {LM_DST_POSTCOPY_ACTIVE, LM_MSG_POSTCOPY_SWITCH, false},
        {LM_DST_POSTCOPY_ACTIVE, LM_MSG_COMPLETE, false},
        {LM_DST_POSTCOPY_ACTIVE, LM_MSG_PAGES, true},
        {LM_DST_POSTCOPY_ACTIVE, LM_MSG_POSTCOPY_END, true},
        {LM_DST_COMPLETED, LM_MSG_PAGES, false},
        {LM_DST_ACTIVE, LM_MSG__COUNT, false},
        {LM_DST__COUNT, LM_MSG_PAGES, false},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = lm__dest_accepts(cases[i].state, cases[i].type);
        if (got != cases[i].ok)
            fprintf(stderr, "case %u: state %u message %u\n", i, cases[i].state, cases[i].type);
        CHECK(got == cases[i].ok);
    }
    /* Nothing is accepted in a final state, nor PONG/RESUMED anywhere. */
    for (uint16_t t = 0; t < LM_MSG__COUNT; t++) {
        CHECK(!lm__dest_accepts(LM_DST_FAILED, t));
        CHECK(!lm__dest_accepts(LM_DST_POSTCOPY_PAUSED, t));
        CHECK(!lm__dest_accepts(LM_DST_SWITCHOVER_PAUSED, t));
        for (unsigned st = 0; st < LM_DST__COUNT; st++)
            CHECK(!(t == LM_MSG_PONG || t == LM_MSG_RESUMED || t == LM_MSG_SWITCHOVER_READY) ||
                  !lm__dest_accepts(st, t));
    }
}

/* An illegal transition: a debug build aborts, a release build refuses. */
static void illegal_transition(void)
{
    lm_fsm m;
    lm__fsm_init(&m, &lm_source_fsm, LM_STATUS_POSTCOPY_ACTIVE);
#ifdef NDEBUG
    CHECK(lm__fsm_enter(&m, LM_STATUS_FAILED) == -EINVAL);
    CHECK_EQ_U64(m.state, LM_STATUS_POSTCOPY_ACTIVE);
    CHECK(lm__fsm_enter(&m, 40) == -EINVAL);
#else
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        (void)lm__fsm_enter(&m, LM_STATUS_FAILED); /* a guest that runs on both sides */
        _exit(0);                                  /* not reached when it aborts */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
#endif
}

int main(void)
{
    source_paths();
    dest_paths();
    invariants();
    message_table();
    illegal_transition();
    TEST_DONE();
}
