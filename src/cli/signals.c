/*
 * SIGINT, SIGTERM, SIGQUIT and SIGUSR1 in the livemig command
 * (docs/STATE-MACHINE.md, "Signals and cancel").
 *
 * SIGINT/SIGTERM cancel the migration (lm_cancel), except in a state where
 * the guest's memory is split between the two sides or where it runs is not
 * known (lm_status_guest_split): there lm_cancel() refuses, the process keeps
 * running so that the migration can complete or recover, and one line on
 * stderr says so and how to force-quit: the same signal again within
 * CLI_FORCE_QUIT_WINDOW_S seconds, or SIGQUIT, which ends the process at once
 * with CLI_EXIT_FORCE_QUIT. SIGQUIT does that in every state.
 *
 * The handlers only read and write atomics, call lm_cancel() and
 * lm_status_current() (both lock-free), clock_gettime() and write(2), and end
 * the process with _exit(): all async-signal-safe. A watcher thread prints a
 * notice when the migration enters such a state, before anyone presses
 * Ctrl-C.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "cli/run.h"
#include "livemig.h"

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the handlers need a lock-free atomic long long");

volatile sig_atomic_t cli_interrupted;

/* What the handlers reach: the migration, and the side named in messages.
 * Written by the main thread only. */
static lm_ctx *volatile target;
static const char *volatile target_who = "livemig";
/* When a SIGINT/SIGTERM was last refused (CLOCK_MONOTONIC ns; -1: never). */
static _Atomic long long refused_ns = -1;

/* The watcher thread (cli_set_cancel_target). */
static pthread_t watcher;
static bool watcher_started;
static atomic_bool watcher_stop;

/* A line built without stdio (not async-signal-safe) and written at once. */
typedef struct sig_line {
    char buf[512];
    size_t len;
} sig_line;

static void put(sig_line *l, const char *s)
{
    while (*s && l->len < sizeof(l->buf))
        l->buf[l->len++] = *s++;
}

static void put_who(sig_line *l)
{
    const char *who = target_who;
    put(l, who);
    put(l, ": ");
}

static void emit(const sig_line *l)
{
    size_t off = 0;
    while (off < l->len) {
        ssize_t w = write(STDERR_FILENO, l->buf + off, l->len - off);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EINTR)
            break;
    }
}

static const char *sig_name(int sig)
{
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGQUIT";
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static const char *why_split(lm_status s)
{
    return s == LM_STATUS_SWITCHOVER_PAUSED ? "it is not known which side runs the guest"
                                            : "the guest's memory is split between the two sides";
}

static _Noreturn void force_quit(int sig, bool again)
{
    lm_ctx *t = target;
    sig_line l = {.len = 0};
    put_who(&l);
    put(&l, sig_name(sig));
    put(&l, again ? " again within 5 s: force-quit" : ": force-quit");
    if (t) {
        lm_status s = lm_status_current(t);
        put(&l, " in state ");
        put(&l, lm_status_name(s));
        if (lm_status_guest_split(s))
            put(&l, "; this side's part of the guest is lost");
    }
    put(&l, " (exit status 3)\n");
    emit(&l);
    _exit(CLI_EXIT_FORCE_QUIT);
}

static void on_quit(int sig)
{
    force_quit(sig, false);
}

static void on_signal(int sig)
{
    int saved = errno;
    lm_ctx *t = target;
    if (!t) {
        cli_interrupted = 1;
        errno = saved;
        return;
    }
    long long now = now_ns(), last = atomic_load(&refused_ns);
    if (last >= 0 && now - last < CLI_FORCE_QUIT_WINDOW_S * 1000000000ll &&
        lm_status_guest_split(lm_status_current(t)))
        force_quit(sig, true);
    if (lm_cancel(t) == 0) {
        cli_interrupted = 1;
        errno = saved;
        return;
    }
    atomic_store(&refused_ns, now);
    lm_status s = lm_status_current(t);
    sig_line l = {.len = 0};
    put_who(&l);
    put(&l, sig_name(sig));
    put(&l, ": not stopping in state ");
    put(&l, lm_status_name(s));
    put(&l, ": ");
    put(&l, why_split(s));
    put(&l, ", so this process keeps running for the migration to complete or recover. "
            "To force-quit and lose the guest: SIGINT or SIGTERM again within 5 s, or "
            "SIGQUIT.\n");
    emit(&l);
    errno = saved;
}

static void on_start_postcopy(int sig)
{
    (void)sig;
    lm_ctx *t = target;
    if (t)
        lm_start_postcopy(t);
}

void cli_signals_install(void)
{
    sigset_t ours;
    sigemptyset(&ours);
    sigaddset(&ours, SIGINT);
    sigaddset(&ours, SIGTERM);
    sigaddset(&ours, SIGQUIT);
    /* One of ours at a time on a thread: no handler interrupts another. */
    struct sigaction sa = {.sa_handler = on_signal, .sa_mask = ours};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct sigaction sq = {.sa_handler = on_quit, .sa_mask = ours};
    sigaction(SIGQUIT, &sq, NULL);
    struct sigaction sp = {.sa_handler = on_start_postcopy};
    sigaction(SIGUSR1, &sp, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Says once per entry that the migration is in a state where Ctrl-C no
 * longer cancels. */
static void *watch(void *arg)
{
    lm_ctx *ctx = arg;
    lm_status said = LM_STATUS_NONE;
    while (!atomic_load(&watcher_stop)) {
        lm_status s = lm_status_current(ctx);
        if (s != said && lm_status_guest_split(s))
            fprintf(stderr,
                    "%s: %s: %s; SIGINT/SIGTERM no longer cancel (twice within 5 s, or SIGQUIT, "
                    "force-quit and lose the guest)\n",
                    target_who, lm_status_name(s), why_split(s));
        said = s;
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

void cli_set_cancel_target(lm_ctx *ctx, const char *who)
{
    if (watcher_started) {
        atomic_store(&watcher_stop, true);
        pthread_join(watcher, NULL);
        watcher_started = false;
    }
    target = ctx;
    if (who)
        target_who = who;
    if (!ctx)
        return;
    /* The watcher takes no signal: the handlers run on the other threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    atomic_store(&watcher_stop, false);
    watcher_started = pthread_create(&watcher, NULL, watch, ctx) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Postcopy failed half way: this process holds part of the guest's memory.
 * Keep it (and the guest's vCPUs, waiting on missing pages) until the user
 * force-quits; a SIGINT/SIGTERM that is not refused (the status is no longer
 * split) ends it with 1, without tearing anything down. */
_Noreturn void cli_hold_paused_state(const char *who, lm_ctx *ctx)
{
    cli_set_cancel_target(NULL, NULL);
    target_who = who;
    fprintf(stderr,
            "%s: postcopy is paused; this process keeps its part of the guest's memory. "
            "To force-quit and lose the guest: SIGINT or SIGTERM twice within 5 s, or "
            "SIGQUIT.\n",
            who);
    fflush(NULL);
    cli_interrupted = 0; /* a cancel taken before the commit point was dropped there */
    target = ctx;
    cli_sleep_seconds(INFINITY);
    _exit(1);
}
