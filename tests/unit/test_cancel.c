/*
 * lm_cancel() (src/migration/engine.c, docs/STATE-MACHINE.md "Signals and
 * cancel"): taken in every status where the guest's newest state is whole on
 * one side, refused with -EBUSY (and nothing changed) where its memory is
 * split between the sides or where it runs is not known; a request taken just
 * before the commit point is dropped when the split status is published; and
 * it takes no lock, so a signal handler may call it while the interrupted
 * thread holds the stats lock.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "livemig.h"
#include "migration/engine.h"

static bool expect_split(lm_status s)
{
    return s == LM_STATUS_POSTCOPY_ACTIVE || s == LM_STATUS_POSTCOPY_PAUSED ||
           s == LM_STATUS_POSTCOPY_RECOVER || s == LM_STATUS_SWITCHOVER_PAUSED;
}

/* Every status, entered both ways the engine publishes one. */
static void every_status(void)
{
    lm_ctx *ctx = lm_ctx_new();
    CHECK(ctx);
    CHECK_EQ_U64(lm_status_current(ctx), LM_STATUS_NONE);
    for (int via_publish = 0; via_publish < 2; via_publish++) {
        for (unsigned s = 0; s < LM_STATUS__COUNT; s++) {
            atomic_store(&ctx->cancel, 0);
            if (via_publish) {
                lm_stats st;
                memset(&st, 0, sizeof(st));
                st.status = (lm_status)s;
                lm__stats_publish(ctx, &st);
            } else {
                lm__stats_reset(ctx, (lm_status)s);
            }
            CHECK_EQ_U64(lm_status_current(ctx), s);
            CHECK(lm_status_guest_split((lm_status)s) == expect_split((lm_status)s));
            int ret = lm_cancel(ctx);
            if (expect_split((lm_status)s)) {
                if (ret != -EBUSY)
                    fprintf(stderr, "lm_cancel in %s: %d, expected -EBUSY\n",
                            lm_status_name((lm_status)s), ret);
                CHECK(ret == -EBUSY);
                CHECK_EQ_U64(atomic_load(&ctx->cancel), 0);
            } else {
                if (ret != 0)
                    fprintf(stderr, "lm_cancel in %s: %d, expected 0\n",
                            lm_status_name((lm_status)s), ret);
                CHECK(ret == 0);
                CHECK_EQ_U64(atomic_load(&ctx->cancel), 1);
            }
        }
    }
    CHECK(!lm_status_guest_split(LM_STATUS__COUNT));
    lm_ctx_free(ctx);
}

/* A cancel taken in device state, then the commit: the request is dropped,
 * and a later one is refused. */
static void dropped_at_commit(void)
{
    lm_ctx *ctx = lm_ctx_new();
    lm_stats st;
    memset(&st, 0, sizeof(st));
    st.status = LM_STATUS_DEVICE;
    lm__stats_publish(ctx, &st);
    CHECK(lm_cancel(ctx) == 0);
    CHECK_EQ_U64(atomic_load(&ctx->cancel), 1);
    st.status = LM_STATUS_POSTCOPY_ACTIVE;
    lm__stats_publish(ctx, &st);
    CHECK_EQ_U64(atomic_load(&ctx->cancel), 0);
    CHECK(lm_cancel(ctx) == -EBUSY);
    CHECK_EQ_U64(atomic_load(&ctx->cancel), 0);
    /* Out of the split state again (completed): taken, as before. */
    st.status = LM_STATUS_COMPLETED;
    lm__stats_publish(ctx, &st);
    CHECK(lm_cancel(ctx) == 0);
    lm_ctx_free(ctx);
}

static lm_ctx *handler_ctx;
static volatile sig_atomic_t handler_ret = 1;

static void on_usr1(int sig)
{
    (void)sig;
    handler_ret = lm_cancel(handler_ctx);
}

/* lm_cancel() from a signal handler that interrupted the holder of the
 * stats lock: it must not wait for it. In a child with an alarm, so a
 * deadlock fails the test instead of hanging it. */
static void from_signal_handler(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        handler_ctx = lm_ctx_new();
        lm__stats_reset(handler_ctx, LM_STATUS_POSTCOPY_ACTIVE);
        struct sigaction sa = {.sa_handler = on_usr1};
        sigaction(SIGUSR1, &sa, NULL);
        pthread_mutex_lock(&handler_ctx->stats_lock);
        raise(SIGUSR1);
        pthread_mutex_unlock(&handler_ctx->stats_lock);
        _exit(handler_ret == -EBUSY ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "lm_cancel from a signal handler: wait status %#x\n", status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    every_status();
    dropped_at_commit();
    from_signal_handler();
    TEST_DONE();
}
