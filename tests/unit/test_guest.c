/*
 * The synthetic guest's own measurements, checked against what it did:
 *
 *  - One latency sample per write: a stress vCPU writes once a step, a
 *    random:3000 vCPU three times, so the samples count the steps (its
 *    progress counter); on a destination guest, the steps since resume.
 *  - Stalls land where they happened: a vCPU held up for a known time in
 *    the baseline window shows that stall (at least that long) in the
 *    baseline window and in the whole run's maximum.
 *  - The run-queue split: a stall that was a sleep is the vCPU's own (the
 *    "excluding run-queue" figure keeps most of it); a stall that was spent
 *    runnable behind a busy thread on the same CPU is not (the figure
 *    drops most of it). Needs /proc/thread-self/schedstat and SCHED_IDLE;
 *    without them that part is skipped.
 *
 * The stalls are made, not waited for: a signal whose handler sleeps in the
 * vCPU thread, then the vCPU at SCHED_IDLE pinned beside a spinning thread.
 * Only lower bounds of what was made are asserted (a sleep is never
 * shorter than asked), and the split as a ratio.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "guest/guest.h"
#include "util/clock.h"

#define RAM_LEN   (4u << 20)
#define WINDOW_NS 500000000ull /* each window */
#define SLEEP_NS  100000000ull /* the stall made in the baseline window */
#define SPIN_NS   200000000ull /* the run-queue stall in the tracking-start window */

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sleep_for(uint64_t ns)
{
    sleep_until(lm_now_ns() + ns);
}

static lm_guest *new_guest(const char *spec, uint8_t **ram)
{
    lm_workload w;
    char why[256];
    lm_guest *g = calloc(1, sizeof(*g));
    *ram = lm_ram_alloc(RAM_LEN);
    if (!g || !*ram || lm_workload_parse(spec, &w, why, sizeof(why)) < 0 ||
        lm_guest_create(g, *ram, RAM_LEN, &w, 7, why, sizeof(why)) < 0) {
        fprintf(stderr, "cannot start a %s guest: %s\n", spec, why);
        exit(1);
    }
    return g;
}

static void free_guest(lm_guest *g, uint8_t *ram)
{
    lm_guest_destroy(g);
    lm_ram_free(ram, RAM_LEN);
    free(g);
}

/* Lets the guest run until its counters reach n (at most 10 s: a loaded
 * machine may not run a vCPU for a while), then a little longer. */
static void run_until(lm_guest *g, uint64_t n)
{
    for (int i = 0; i < 1000 && lm_guest_counter_sum(g) < n; i++)
        sleep_for(10000000);
    sleep_for(20000000);
}

static uint64_t samples(lm_guest *g, int w)
{
    lm_hist lat;
    uint64_t stall, own;
    lm_guest_window(g, w, &lat, &stall, &own);
    return lat.count;
}

/* Latency samples count the writes: stress 1 a step, random:3000 3 a step
 * (3.0 pages owed a millisecond, exactly), and on a destination guest only
 * the steps since it resumed. */
static void check_counts(void)
{
    uint8_t *ram, *ram2;
    lm_guest *g = new_guest("stress:2x256K", &ram);
    run_until(g, 4 * (256 / 4));
    lm_guest_callbacks.stop(g);
    uint64_t steps = lm_guest_counter_sum(g);
    CHECK(steps >= 2 * (256 / 4)); /* each vCPU wrote its region once at least */
    CHECK_EQ_U64(samples(g, -1), steps);
    /* Resumed and stopped again: still one sample a step. */
    lm_guest_callbacks.resume(g);
    run_until(g, steps + 100);
    lm_guest_callbacks.stop(g);
    CHECK(lm_guest_counter_sum(g) > steps);
    CHECK_EQ_U64(samples(g, -1), lm_guest_counter_sum(g));

    /* The same guest continued elsewhere: its counters move, its latency
     * samples start from nothing. */
    lm_guest *d = calloc(1, sizeof(*d));
    ram2 = lm_ram_alloc(RAM_LEN);
    CHECK(d && ram2);
    lm_guest_init_empty(d, ram2, RAM_LEN);
    void *state;
    size_t len;
    CHECK(lm_guest_callbacks.save_state(g, &state, &len) == 0);
    CHECK(lm_guest_callbacks.load_state(d, state, len) == 0);
    free(state);
    CHECK(lm_guest_callbacks.resume(d) == 0);
    run_until(d, d->resumed_counter_sum + 100);
    lm_guest_callbacks.stop(d);
    CHECK_EQ_U64(d->resumed_counter_sum, lm_guest_counter_sum(g));
    CHECK(lm_guest_counter_sum(d) > d->resumed_counter_sum);
    CHECK_EQ_U64(samples(d, -1), lm_guest_counter_sum(d) - d->resumed_counter_sum);
    free_guest(d, ram2);
    free_guest(g, ram);

    g = new_guest("random:3000", &ram);
    run_until(g, 20);
    lm_guest_callbacks.stop(g);
    CHECK(lm_guest_counter_sum(g) > 0);
    CHECK_EQ_U64(samples(g, -1), 3 * lm_guest_counter_sum(g));
    free_guest(g, ram);
}

/* SIGUSR1 in a vCPU thread: that vCPU sleeps SLEEP_NS between two steps. */
static void on_usr1(int sig)
{
    (void)sig;
    int saved = errno;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)SLEEP_NS};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    errno = saved;
}

static _Atomic bool spin_stop;
static int spin_cpu;

static bool pin_to(pthread_t t, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(t, sizeof(set), &set) == 0;
}

static void *spin_main(void *arg)
{
    (void)arg;
    if (!pin_to(pthread_self(), spin_cpu))
        return NULL;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        ;
    return NULL;
}

static bool have_schedstat(void)
{
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Puts vCPU thread t at SCHED_IDLE on one CPU and spins a normal thread on
 * that CPU for SPIN_NS: the vCPU waits runnable for most of that time. */
static bool runqueue_stall(pthread_t t)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
        return false;
    spin_cpu = -1;
    for (int c = 0; c < CPU_SETSIZE && spin_cpu < 0; c++)
        if (CPU_ISSET(c, &allowed))
            spin_cpu = c;
    struct sched_param sp = {.sched_priority = 0};
    if (spin_cpu < 0 || !pin_to(t, spin_cpu) || pthread_setschedparam(t, SCHED_IDLE, &sp) != 0) {
        fprintf(stderr, "cannot pin the vCPU or make it SCHED_IDLE: run-queue split not checked\n");
        return false;
    }
    pthread_t spinner;
    atomic_store(&spin_stop, false);
    if (pthread_create(&spinner, NULL, spin_main, NULL) != 0)
        return false;
    sleep_for(SPIN_NS);
    atomic_store(&spin_stop, true);
    pthread_join(spinner, NULL);
    /* Back to normal, so the rest of the window is not starved by whatever
     * else runs on that CPU (root may; others may lack RLIMIT_NICE). */
    (void)pthread_setschedparam(t, SCHED_OTHER, &sp);
    (void)pthread_setaffinity_np(t, sizeof(allowed), &allowed);
    return true;
}

static void check_stalls(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);

    uint8_t *ram;
    lm_guest *g = new_guest("stress:1x256K", &ram);
    lm_guest_start_windows(g, WINDOW_NS);
    uint64_t t0 = atomic_load(&g->win_ns[LM_WIN_BASELINE]);
    /* Baseline: a sleep of SLEEP_NS, over well before the window ends. */
    sleep_until(t0 + WINDOW_NS / 10);
    CHECK(pthread_kill(g->vcpus[0].thread, SIGUSR1) == 0);
    /* Tracking-start: a wait behind a busy thread. */
    sleep_until(t0 + WINDOW_NS + WINDOW_NS / 10);
    bool split = have_schedstat() && runqueue_stall(g->vcpus[0].thread);
    sleep_until(t0 + 2 * WINDOW_NS + WINDOW_NS / 10);
    lm_guest_callbacks.stop(g);

    lm_hist lat[LM_WIN__COUNT], all;
    uint64_t stall[LM_WIN__COUNT], own[LM_WIN__COUNT], all_stall, all_own;
    for (int w = 0; w < LM_WIN__COUNT; w++)
        lm_guest_window(g, w, &lat[w], &stall[w], &own[w]);
    lm_guest_window(g, -1, &all, &all_stall, &all_own);
    fprintf(stderr,
            "stalls (ms, own in brackets): baseline %.1f (%.1f), tracking-start %.1f (%.1f), "
            "whole run %.1f (%.1f); samples %llu + %llu of %llu\n",
            stall[0] / 1e6, own[0] / 1e6, stall[1] / 1e6, own[1] / 1e6, all_stall / 1e6,
            all_own / 1e6, (unsigned long long)lat[0].count, (unsigned long long)lat[1].count,
            (unsigned long long)all.count);

    /* Both windows saw the guest write, and their samples are the whole
     * run's, each at most once. */
    CHECK(lat[LM_WIN_BASELINE].count > 0);
    CHECK(lat[LM_WIN_TRACK_START].count > 0);
    CHECK(lat[LM_WIN_BASELINE].count + lat[LM_WIN_TRACK_START].count <= all.count);
    CHECK_EQ_U64(all.count, lm_guest_counter_sum(g));
    /* The sleep: in the baseline window, where it ended, and in the whole
     * run; none of it was run-queue wait, so most of it stays. */
    CHECK(stall[LM_WIN_BASELINE] >= SLEEP_NS);
    CHECK(all_stall >= SLEEP_NS);
    if (have_schedstat()) {
        CHECK(own[LM_WIN_BASELINE] * 2 >= stall[LM_WIN_BASELINE]);
        CHECK(all_own * 2 >= SLEEP_NS);
    }
    /* The run-queue wait: a stall of the tracking-start window, mostly not
     * the vCPU's own. */
    if (split) {
        CHECK(stall[LM_WIN_TRACK_START] >= 1000000); /* the split applies from 1 ms */
        CHECK(own[LM_WIN_TRACK_START] * 2 < stall[LM_WIN_TRACK_START]);
    }
    free_guest(g, ram);
}

int main(void)
{
    check_counts();
    check_stalls();
    TEST_DONE();
}
