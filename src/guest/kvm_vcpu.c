/*
 * The KVM guest's vCPU threads (docs/KVM-GUEST.md): each runs KVM_RUN in a
 * loop, counts the program's exits (one per pass), paces the vCPU after an
 * exit (random's rate, the throttle, the dirty limit), and parks when the
 * guest is stopped.
 *
 * Stop must not wait for a pass: it sets every vCPU's kvm_run
 * immediate_exit and sends each thread SIGUSR2 (an empty handler). A
 * thread inside KVM_RUN leaves it with EINTR at once; one outside finds
 * immediate_exit set when it next enters. Before parking, a thread enters
 * KVM_RUN once more with immediate_exit set: KVM then completes an OUT it
 * had exited for without running anything else, so the registers it saves
 * are the guest's whole state. Resume clears immediate_exit with every
 * thread parked.
 *
 * With a dirty ring (--dirty-tracker kvm-ring), a vCPU whose ring is full
 * exits with KVM_EXIT_DIRTY_RING_FULL; it sleeps 100 us (or until a stop)
 * before it runs again, until the migration thread harvests the ring.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "guest/kvm_vm.h"
#include "util/clock.h"

#define KICK_SIGNAL       SIGUSR2
#define RING_FULL_WAIT_NS 100000 /* a full dirty ring: wait, then run again */

static void on_kick(int sig)
{
    (void)sig; /* only to make KVM_RUN return EINTR */
}

/* Installs the kick handler unless the program has its own. */
static void install_kick_handler(void)
{
    struct sigaction old;
    if (sigaction(KICK_SIGNAL, NULL, &old) == 0 && old.sa_handler != SIG_DFL &&
        old.sa_handler != SIG_IGN)
        return;
    struct sigaction sa = {.sa_handler = on_kick}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(KICK_SIGNAL, &sa, NULL);
}

/* Sleeps ns, cut short by a stop (a throttle slice must not add to the
 * migration's downtime). */
static void pace_sleep(lm_kvm_guest *g, uint64_t ns)
{
    uint64_t end = lm_now_ns() + ns;
    pthread_mutex_lock(&g->lock);
    while (lm_now_ns() < end && !atomic_load_explicit(&g->pause, memory_order_acquire) && !g->quit)
        lm_cond_wait_until_ns(&g->cond, &g->lock, end); /* exact: the throttle stays exact */
    pthread_mutex_unlock(&g->lock);
}

/* After a pass: the workload's own rate, then auto-converge's throttle
 * (run 10 ms, sleep pct of the time) and the dirty limit (a token bucket
 * of pages), as the thread guest does. */
static void pace(lm_kvm_vcpu *v)
{
    lm_kvm_guest *g = v->g;
    uint64_t now = lm_now_ns(), pages = 0;
    switch (g->wl.kind) {
    case LM_WL_STRESS:
        pages = g->region_pages[v->index];
        break;
    case LM_WL_HOT:
        pages = g->batch;
        break;
    case LM_WL_RANDOM: {
        pages = g->batch;
        uint64_t step = g->batch * 1000000000ull / g->wl.pages_per_sec;
        if (!v->next_ns || now > v->next_ns + 100000000ull) /* a pause is not owed */
            v->next_ns = now;
        v->next_ns += step;
        if (v->next_ns > now)
            pace_sleep(g, v->next_ns - now);
        break;
    }
    default: /* idle, fill: a tick of guest time */
        pace_sleep(g, 1000000);
        break;
    }
    unsigned pct = atomic_load_explicit(&g->throttle_pct, memory_order_relaxed);
    uint64_t rate = atomic_load_explicit(&g->dirty_limit, memory_order_relaxed);
    now = lm_now_ns();
    if (pct) {
        if (!v->slice_start_ns)
            v->slice_start_ns = now;
        if (now - v->slice_start_ns >= 10000000) {
            pace_sleep(g, 10000000ull * pct / (100 - pct));
            v->slice_start_ns = lm_now_ns();
        }
    }
    if (rate && pages) {
        if (!v->tokens_ns)
            v->tokens_ns = now;
        v->tokens += (double)(now - v->tokens_ns) * (double)rate / 1e9;
        if (v->tokens > (double)rate / 100 + (double)pages)
            v->tokens = (double)rate / 100 + (double)pages;
        v->tokens_ns = now;
        v->tokens -= (double)pages;
        if (v->tokens < 0)
            pace_sleep(g, (uint64_t)(-v->tokens * 1e9 / (double)rate));
    }
}

/* Completes a pending OUT (immediate_exit set: nothing else runs), saves
 * the registers and waits while the guest is stopped, or for good when
 * the vCPU is dead. False on quit. */
static bool park(lm_kvm_vcpu *v)
{
    lm_kvm_guest *g = v->g;
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (!v->dead)
        while (ioctl(v->fd, KVM_RUN, 0) == 0) /* an exit it had to finish first */
            atomic_fetch_add(&v->exits, 1);
    if (ioctl(v->fd, KVM_GET_REGS, &v->regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &v->sregs) < 0)
        snprintf(v->why, sizeof(v->why), "vCPU %u: KVM_GET_REGS failed: %s", v->index,
                 strerror(errno));
    pthread_mutex_lock(&g->lock);
    g->parked++;
    pthread_cond_broadcast(&g->cond);
    while ((atomic_load(&g->pause) || v->dead) && !g->quit)
        pthread_cond_wait(&g->cond, &g->lock);
    g->parked--;
    bool go = !g->quit;
    pthread_mutex_unlock(&g->lock);
    v->slice_start_ns = v->tokens_ns = v->next_ns = v->last_exit_ns = 0;
    return go;
}

/* After an exit: the gap since the previous one, into the whole run's and
 * its window's longest (a gap across a park does not count). */
static void note_exit(lm_kvm_vcpu *v)
{
    uint64_t now = lm_now_ns(), gap = v->last_exit_ns ? now - v->last_exit_ns : 0;
    v->last_exit_ns = now;
    int w = 0;
    while (w < LM_WIN__COUNT &&
           !(now >= atomic_load(&v->g->win_ns[w]) && now < atomic_load(&v->g->win_ns[w + 1])))
        w++;
    if (gap > atomic_load(&v->max_gap_ns[0]))
        atomic_store(&v->max_gap_ns[0], gap);
    if (w < LM_WIN__COUNT && gap > atomic_load(&v->max_gap_ns[1 + w]))
        atomic_store(&v->max_gap_ns[1 + w], gap);
}

/* Stops v for good, saying why (printf-style). */
__attribute__((format(printf, 2, 3))) static void die(lm_kvm_vcpu *v, const char *fmt, ...)
{
    char what[120];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(v->why, sizeof(v->why), "vCPU %u: %s", v->index, what);
    v->dead = true;
}

static void *vcpu_main(void *arg)
{
    lm_kvm_vcpu *v = arg;
    if (ioctl(v->fd, KVM_SET_SREGS, &v->sregs) < 0 || ioctl(v->fd, KVM_SET_REGS, &v->regs) < 0)
        die(v, "KVM refused its registers: %s", strerror(errno));
    for (;;) {
        if ((v->dead || atomic_load_explicit(&v->g->pause, memory_order_acquire)) && !park(v))
            break;
        if (v->dead)
            continue;
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno != EINTR && errno != EAGAIN)
                die(v, "KVM_RUN failed: %s", strerror(errno));
            continue;
        }
        atomic_fetch_add_explicit(&v->exits, 1, memory_order_relaxed);
        note_exit(v);
        struct kvm_run *r = v->run;
        if (r->exit_reason == KVM_EXIT_IO && r->io.port == LM_KVM_PORT_PASS) {
            pace(v);
        } else if (r->exit_reason == KVM_EXIT_IO && r->io.port == LM_KVM_PORT_BROKEN) {
            struct kvm_regs regs = {0};
            (void)ioctl(v->fd, KVM_GET_REGS, &regs);
            atomic_store(&v->broken, true);
            die(v, "its own check found the page at guest address 0x%llx out of step in pass %llu",
                (unsigned long long)regs.rdi, (unsigned long long)regs.r8);
        } else if (r->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
            /* KVM exits again at once until the migration thread has
             * harvested the ring: wait for it (a stop cuts this short). */
            atomic_fetch_add_explicit(&v->ring_full, 1, memory_order_relaxed);
            pace_sleep(v->g, RING_FULL_WAIT_NS);
        } else if (r->exit_reason != KVM_EXIT_INTR) {
            die(v, "unexpected KVM exit reason %u (internal-error suberror %u)", r->exit_reason,
                r->exit_reason == KVM_EXIT_INTERNAL_ERROR ? r->internal.suberror : 0);
        }
    }
    return NULL;
}

int lm__kvm_vcpus_start(lm_kvm_guest *g)
{
    install_kick_handler();
    for (unsigned i = 0; i < g->nvcpus; i++) {
        lm_kvm_vcpu *v = &g->vcpus[i];
        if (v->started)
            continue;
        if (pthread_create(&v->thread, NULL, vcpu_main, v))
            return -EAGAIN;
        v->started = true;
    }
    return 0;
}

void lm__kvm_vcpus_stop(lm_kvm_guest *g)
{
    unsigned running = 0;
    pthread_mutex_lock(&g->lock);
    atomic_store(&g->pause, 1);
    pthread_cond_broadcast(&g->cond); /* ends pacing sleeps */
    for (;;) {
        running = 0;
        for (unsigned i = 0; i < g->nvcpus; i++) {
            lm_kvm_vcpu *v = &g->vcpus[i];
            if (!v->started)
                continue;
            running++;
            __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
            pthread_kill(v->thread, KICK_SIGNAL);
        }
        if (g->parked >= running)
            break;
        /* Kicked; a thread blocked elsewhere is kicked again in 20 ms. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
        if (g->parked >= running)
            break;
    }
    pthread_mutex_unlock(&g->lock);
}

void lm__kvm_vcpus_resume(lm_kvm_guest *g)
{
    pthread_mutex_lock(&g->lock);
    for (unsigned i = 0; i < g->nvcpus; i++)
        if (g->vcpus[i].run)
            __atomic_store_n(&g->vcpus[i].run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    atomic_store(&g->pause, 0);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

void lm__kvm_vcpus_quit(lm_kvm_guest *g)
{
    pthread_mutex_lock(&g->lock);
    g->quit = true;
    atomic_store(&g->pause, 1);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    for (unsigned i = 0; i < g->nvcpus; i++) {
        lm_kvm_vcpu *v = &g->vcpus[i];
        if (!v->started)
            continue;
        __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        pthread_kill(v->thread, KICK_SIGNAL);
        pthread_join(v->thread, NULL);
        v->started = false;
    }
}
