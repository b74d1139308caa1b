#include "guest/guest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/wire.h"
#include "util/clock.h"
#include "util/parse.h"

#define GUEST_STATE_MAGIC   0x4C4D4753u /* "LMGS" */
#define GUEST_STATE_VERSION 1
#define GUEST_STATE_HEAD    96
#define GUEST_STATE_VCPU    40

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

/* Parks the calling vCPU while the guest is paused. Returns false on quit. */
static bool park_if_paused(lm_vcpu *v)
{
    lm_guest *g = v->g;
    if (!atomic_load_explicit(&g->pause, memory_order_acquire))
        return true;
    v->last_step_ns = 0; /* a pause is not a stall */
    pthread_mutex_lock(&g->lock);
    g->parked++;
    pthread_cond_broadcast(&g->cond);
    while (atomic_load(&g->pause) && !g->quit)
        pthread_cond_wait(&g->cond, &g->lock);
    g->parked--;
    bool go = !g->quit;
    pthread_mutex_unlock(&g->lock);
    return go;
}

/* One timed 8-byte write: the latency the guest feels, faults included. */
/* The window 'now' falls in, or -1. */
static int window_of(lm_guest *g, uint64_t now)
{
    if (!atomic_load_explicit(&g->win_ns[0], memory_order_relaxed))
        return -1;
    for (int w = 0; w < LM_WIN__COUNT; w++)
        if (now >= atomic_load_explicit(&g->win_ns[w], memory_order_relaxed) &&
            now < atomic_load_explicit(&g->win_ns[w + 1], memory_order_relaxed))
            return w;
    return -1;
}

static inline void timed_write(lm_vcpu *v, uint64_t page, uint64_t value)
{
    lm_guest *g = v->g;
    uint64_t t0 = lm_now_ns();
    volatile uint64_t *p = (volatile uint64_t *)(g->ram + page * g->page_size);
    *p = value;
    uint64_t t1 = lm_now_ns();
    lm_hist_record(&v->latency, t1 - t0);
    int w = window_of(g, t1);
    if (w >= 0)
        lm_hist_record(&v->win_latency[w], t1 - t0);
}

static void note_max(_Atomic uint64_t *max, uint64_t value)
{
    if (value > atomic_load_explicit(max, memory_order_relaxed))
        atomic_store_explicit(max, value, memory_order_relaxed);
}

static void note_stall(lm_stall_max *m, uint64_t gap, uint64_t own)
{
    note_max(&m->wall_ns, gap);
    note_max(&m->own_ns, own);
}

/* Run-queue wait is sampled at most this often, and after every stall of
 * at least STALL_SPLIT_NS; the split is exact to within one interval. */
#define SCHEDSTAT_INTERVAL_NS 500000ull
#define STALL_SPLIT_NS        1000000ull

/* Nanoseconds this thread has waited runnable on a run queue
 * (/proc/thread-self/schedstat: run time, run-queue wait, slices). */
static bool read_runqueue_wait(int fd, uint64_t *wait_ns)
{
    char buf[96];
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
    uint64_t run;
    if (n <= 0)
        return false;
    buf[n] = 0;
    return lm_parse_schedstat(buf, &run, wait_ns) == 0;
}

/* The part of a stall of 'gap' ns, ending now, that was not spent waiting
 * for a CPU. Without schedstat, all of it. */
static uint64_t stall_own_part(lm_vcpu *v, uint64_t gap, uint64_t now)
{
    uint64_t wait;
    /* Without an earlier sample the wait would span the thread's life. */
    if (gap < STALL_SPLIT_NS || !v->sample_ns || !read_runqueue_wait(v->schedstat_fd, &wait))
        return gap;
    uint64_t queued = wait - v->sample_wait_ns;
    v->sample_ns = now;
    v->sample_wait_ns = wait;
    return queued < gap ? gap - queued : 0;
}

/* A pacing sleep that a stop cuts short, as QEMU's throttle checks
 * cpu->stop: the migration's stop (and so its downtime) must not wait out
 * a throttle slice of up to a second. Sleeps under 1 ms just sleep. */
static void pace_sleep(lm_guest *g, uint64_t ns)
{
    if (ns < 1000000) {
        sleep_ns(ns);
        return;
    }
    uint64_t end = lm_now_ns() + ns;
    pthread_mutex_lock(&g->lock);
    while (lm_now_ns() < end && !atomic_load_explicit(&g->pause, memory_order_acquire) && !g->quit)
        lm_cond_wait_until_ns(&g->cond, &g->lock, end); /* exact: the throttle stays exact */
    pthread_mutex_unlock(&g->lock);
}

/* Auto-converge: run 10 ms, then sleep so that the vCPU runs only
 * (100 - pct)% of the time (QEMU's cpu throttle works the same way). */
static void throttle_vcpu(lm_vcpu *v, unsigned pct, uint64_t now)
{
    if (!v->slice_start_ns)
        v->slice_start_ns = now;
    if (now - v->slice_start_ns < 10000000)
        return;
    pace_sleep(v->g, 10000000ull * pct / (100 - pct));
    v->slice_start_ns = lm_now_ns();
}

/* Dirty limit: a token bucket of writes, refilled at the limit. */
static void limit_vcpu(lm_vcpu *v, uint64_t rate, unsigned writes, uint64_t now)
{
    if (!v->tokens_ns)
        v->tokens_ns = now;
    v->tokens += (double)(now - v->tokens_ns) * (double)rate / 1e9;
    if (v->tokens > (double)rate / 100 + writes) /* at most 10 ms of burst */
        v->tokens = (double)rate / 100 + writes;
    v->tokens_ns = now;
    v->tokens -= writes;
    if (v->tokens < 0)
        pace_sleep(v->g, (uint64_t)(-v->tokens * 1e9 / (double)rate));
}

/* After each step: note the longest gap between steps (a stall the guest
 * felt: a fault, a protection change, the scheduler), then pace. */
static void pace_vcpu(lm_vcpu *v, unsigned writes)
{
    lm_guest *g = v->g;
    uint64_t now = lm_now_ns();
    if (v->last_step_ns) {
        uint64_t gap = now - v->last_step_ns, own = stall_own_part(v, gap, now);
        note_stall(&v->stall, gap, own);
        int w = window_of(g, now);
        if (w >= 0)
            note_stall(&v->win_stall[w], gap, own);
    }
    if (now - v->sample_ns >= SCHEDSTAT_INTERVAL_NS &&
        read_runqueue_wait(v->schedstat_fd, &v->sample_wait_ns))
        v->sample_ns = now;
    v->last_step_ns = now;
    unsigned pct = atomic_load_explicit(&g->throttle_pct, memory_order_relaxed);
    uint64_t rate = atomic_load_explicit(&g->dirty_limit, memory_order_relaxed);
    if (!pct && !rate)
        return;
    if (pct)
        throttle_vcpu(v, pct, now);
    if (rate && writes)
        limit_vcpu(v, rate, writes, now);
    v->last_step_ns = lm_now_ns(); /* pacing sleeps are not stalls */
}

static void *vcpu_main(void *arg)
{
    lm_vcpu *v = arg;
    lm_guest *g = v->g;
    double owed = 0; /* random: pages still to write this millisecond */
    v->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);

    while (park_if_paused(v)) {
        uint64_t c = atomic_load_explicit(&v->counter, memory_order_relaxed);
        switch (g->wl.kind) {
        case LM_WL_STRESS:
            /* Like stress --vm-keep: every page of the region, forever; the
             * value changes each pass so every pass really dirties. */
            timed_write(v, v->first_page + v->cursor, c ^ v->prng);
            if (++v->cursor == v->npages)
                v->cursor = 0;
            break;
        case LM_WL_HOT:
            /* Many vCPUs, one shared region: the same pages from all sides. */
            timed_write(v, v->first_page + xorshift(&v->prng) % v->npages, c);
            break;
        case LM_WL_RANDOM:
            owed += (double)g->wl.pages_per_sec / 1000.0;
            while (owed >= 1) {
                timed_write(v, xorshift(&v->prng) % v->npages, c);
                owed -= 1;
            }
            sleep_ns(1000000);
            break;
        default: /* idle and fill: a tick of guest time */
            sleep_ns(1000000);
            break;
        }
        pace_vcpu(v, g->wl.kind == LM_WL_STRESS || g->wl.kind == LM_WL_HOT);
        atomic_store_explicit(&v->counter, c + 1, memory_order_relaxed);
    }
    if (v->schedstat_fd >= 0)
        close(v->schedstat_fd);
    return NULL;
}

static void fill_random(lm_guest *g, uint64_t bytes, uint64_t seed)
{
    uint64_t s = seed | 1, *p = (uint64_t *)g->ram;
    for (uint64_t i = 0; i < bytes / 8; i++)
        p[i] = xorshift(&s);
}

/* Text-like data: words from a small vocabulary, as in logs or source code,
 * so compressors have something to find (zlib/zstd reach 3-5x on it). The
 * last quarter of every 64 KiB is written with zeros, as a guest's freed and
 * cleared memory is: populated pages that zero-page detection should find. */
static void fill_text(lm_guest *g, uint64_t bytes, uint64_t seed)
{
    static const char *const words[] = {
        "the",         "guest",   "memory", "page",    "migration",   "dirty",  "round",
        "channel",     "zero",    "packet", "source",  "destination", "kernel", "fault",
        "userfaultfd", "bitmap",  "=",      "{",       "}",           "return", "0;",
        "if",          "(ret",    "<",      "0)",      "static",      "int",    "void",
        "\n",          "INFO:",   "vcpu",   "counter", "throughput",  "MiB/s",  "1024",
        "4096",        "status:", "ok",
    };
    uint64_t s = seed | 1, pos = 0;
    char *p = (char *)g->ram;
    while (pos < bytes) {
        if (pos % 65536 >= 49152) {
            uint64_t end = pos - pos % 65536 + 65536;
            end = end < bytes ? end : bytes;
            memset(p + pos, 0, end - pos);
            pos = end;
            continue;
        }
        const char *w = words[xorshift(&s) % (sizeof(words) / sizeof(words[0]))];
        for (; *w && pos < bytes; w++)
            p[pos++] = *w;
        if (pos < bytes)
            p[pos++] = ' ';
    }
}

static void guest_init_common(lm_guest *g, uint8_t *ram, uint64_t ram_len)
{
    memset(g, 0, sizeof(*g));
    g->ram = ram;
    g->ram_len = ram_len;
    g->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
}

/* Lays out vCPUs for the workload (regions and seeds), not started. */
static void layout_vcpus(lm_guest *g, uint64_t seed)
{
    uint64_t total_pages = g->ram_len / g->page_size;
    g->nvcpus = g->wl.kind == LM_WL_STRESS || g->wl.kind == LM_WL_HOT ? g->wl.threads : 1;
    for (unsigned i = 0; i < g->nvcpus; i++) {
        lm_vcpu *v = &g->vcpus[i];
        v->g = g;
        v->index = i;
        v->prng = (seed + i) * 0x9E3779B97F4A7C15ULL | 1;
        if (g->wl.kind == LM_WL_STRESS) {
            v->npages = g->wl.bytes / g->page_size;
            v->first_page = i * v->npages;
        } else if (g->wl.kind == LM_WL_HOT) {
            v->npages = g->wl.bytes / g->page_size;
            v->first_page = 0;
        } else {
            v->first_page = 0;
            v->npages = total_pages;
        }
    }
}

static int start_vcpus(lm_guest *g)
{
    for (unsigned i = 0; i < g->nvcpus; i++) {
        if (pthread_create(&g->vcpus[i].thread, NULL, vcpu_main, &g->vcpus[i]))
            return -EAGAIN;
        g->vcpus[i].started = true;
    }
    return 0;
}

int lm_guest_create(lm_guest *g, uint8_t *ram, uint64_t ram_len, const lm_workload *w,
                    uint64_t seed, char *why, size_t whylen)
{
    guest_init_common(g, ram, ram_len);
    g->wl = *w;
    int ret = lm_workload_check(w, ram_len, why, whylen);
    if (ret < 0)
        return ret;
    if (w->kind == LM_WL_FILL)
        fill_random(g, w->bytes, seed);
    else if (w->kind == LM_WL_TEXT)
        fill_text(g, w->bytes, seed);
    layout_vcpus(g, seed);
    g->resumed_counter_sum = 0;
    if ((ret = start_vcpus(g)) < 0) {
        snprintf(why, whylen, "cannot start vCPU threads");
        return ret;
    }
    /* Like `stress --vm-keep`, whose workers allocate and touch their whole
     * region before the steady state: the guest is up once every stress
     * vCPU has written its region once, so migrations start from the same
     * state every time. */
    for (unsigned i = 0; g->wl.kind == LM_WL_STRESS && i < g->nvcpus; i++)
        while (atomic_load(&g->vcpus[i].counter) < g->vcpus[i].npages)
            sleep_ns(1000000);
    /* A hot set is touched once up front too, so the measurements see a
     * running guest rather than one still faulting its memory in. */
    if (g->wl.kind == LM_WL_HOT)
        for (uint64_t off = 0; off < g->wl.bytes; off += g->page_size)
            ((volatile uint8_t *)g->ram)[off] = 1;
    return 0;
}

void lm_guest_init_empty(lm_guest *g, uint8_t *ram, uint64_t ram_len)
{
    guest_init_common(g, ram, ram_len);
    atomic_store(&g->pause, 1); /* nothing runs until resume */
}

void lm_guest_destroy(lm_guest *g)
{
    pthread_mutex_lock(&g->lock);
    g->quit = true;
    atomic_store(&g->pause, 1);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    for (unsigned i = 0; i < g->nvcpus; i++)
        if (g->vcpus[i].started)
            pthread_join(g->vcpus[i].thread, NULL);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
}

static int guest_stop(void *opaque)
{
    lm_guest *g = opaque;
    unsigned running = 0;
    for (unsigned i = 0; i < g->nvcpus; i++)
        running += g->vcpus[i].started;
    pthread_mutex_lock(&g->lock);
    atomic_store_explicit(&g->pause, 1, memory_order_release);
    pthread_cond_broadcast(&g->cond); /* ends pacing sleeps */
    while (g->parked < running)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static int guest_resume(void *opaque)
{
    lm_guest *g = opaque;
    g->resumed_counter_sum = lm_guest_counter_sum(g);
    pthread_mutex_lock(&g->lock);
    atomic_store_explicit(&g->pause, 0, memory_order_release);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    for (unsigned i = 0; i < g->nvcpus; i++)
        if (!g->vcpus[i].started) {
            if (pthread_create(&g->vcpus[i].thread, NULL, vcpu_main, &g->vcpus[i]))
                return -EAGAIN;
            g->vcpus[i].started = true;
        }
    return 0;
}

/* State: magic u32 | version u32 | kind u32 | nvcpus u32 | threads u32 |
 * reserved u32 | bytes u64 | pages_per_sec u64 | ram_len u64 | spec[48],
 * then per vCPU: counter | prng | cursor | first_page | npages (u64 each). */
static int guest_save(void *opaque, void **buf, size_t *len)
{
    lm_guest *g = opaque;
    size_t n = GUEST_STATE_HEAD + (size_t)g->nvcpus * GUEST_STATE_VCPU;
    uint8_t *b = calloc(1, n);
    if (!b)
        return -ENOMEM;
    lm_put_be32(b, GUEST_STATE_MAGIC);
    lm_put_be32(b + 4, GUEST_STATE_VERSION);
    lm_put_be32(b + 8, (uint32_t)g->wl.kind);
    lm_put_be32(b + 12, g->nvcpus);
    lm_put_be32(b + 16, g->wl.threads);
    lm_put_be64(b + 24, g->wl.bytes);
    lm_put_be64(b + 32, g->wl.pages_per_sec);
    lm_put_be64(b + 40, g->ram_len);
    memcpy(b + 48, g->wl.spec, strnlen(g->wl.spec, 47));
    for (unsigned i = 0; i < g->nvcpus; i++) {
        uint8_t *p = b + GUEST_STATE_HEAD + (size_t)i * GUEST_STATE_VCPU;
        const lm_vcpu *v = &g->vcpus[i];
        lm_put_be64(p, atomic_load(&v->counter));
        lm_put_be64(p + 8, v->prng);
        lm_put_be64(p + 16, v->cursor);
        lm_put_be64(p + 24, v->first_page);
        lm_put_be64(p + 32, v->npages);
    }
    *buf = b;
    *len = n;
    return 0;
}

static int guest_load(void *opaque, const void *buf, size_t len)
{
    lm_guest *g = opaque;
    const uint8_t *b = buf;
    if (len < GUEST_STATE_HEAD || lm_get_be32(b) != GUEST_STATE_MAGIC ||
        lm_get_be32(b + 4) != GUEST_STATE_VERSION)
        return -EBADMSG;
    uint32_t kind = lm_get_be32(b + 8), nvcpus = lm_get_be32(b + 12);
    if (kind > LM_WL_HOT || nvcpus == 0 || nvcpus > LM_GUEST_MAX_VCPUS ||
        len != GUEST_STATE_HEAD + (size_t)nvcpus * GUEST_STATE_VCPU ||
        lm_get_be64(b + 40) != g->ram_len || memchr(b + 48, 0, 48) == NULL)
        return -EBADMSG;
    g->wl.kind = (lm_workload_kind)kind;
    g->wl.threads = lm_get_be32(b + 16);
    g->wl.bytes = lm_get_be64(b + 24);
    g->wl.pages_per_sec = lm_get_be64(b + 32);
    memcpy(g->wl.spec, b + 48, 48);
    uint64_t total_pages = g->ram_len / g->page_size;
    for (unsigned i = 0; i < nvcpus; i++) {
        const uint8_t *p = b + GUEST_STATE_HEAD + (size_t)i * GUEST_STATE_VCPU;
        lm_vcpu *v = &g->vcpus[i];
        memset(v, 0, sizeof(*v));
        v->g = g;
        v->index = i;
        atomic_store(&v->counter, lm_get_be64(p));
        v->prng = lm_get_be64(p + 8);
        v->cursor = lm_get_be64(p + 16);
        v->first_page = lm_get_be64(p + 24);
        v->npages = lm_get_be64(p + 32);
        /* Never let a state blob point a vCPU outside guest RAM. */
        if (!v->npages || v->first_page > total_pages || v->npages > total_pages - v->first_page ||
            v->cursor >= v->npages || !v->prng)
            return -EBADMSG;
    }
    g->nvcpus = nvcpus;
    return 0;
}

static int guest_throttle(void *opaque, unsigned percent)
{
    lm_guest *g = opaque;
    if (percent > 99)
        return -EINVAL;
    atomic_store(&g->throttle_pct, percent);
    return 0;
}

static int guest_dirty_limit(void *opaque, uint64_t pages_per_sec)
{
    lm_guest *g = opaque;
    atomic_store(&g->dirty_limit, pages_per_sec);
    return 0;
}

const lm_guest_ops lm_guest_callbacks = {
    .stop = guest_stop,
    .resume = guest_resume,
    .save_state = guest_save,
    .load_state = guest_load,
    .throttle = guest_throttle,
    .dirty_limit = guest_dirty_limit,
};

uint64_t lm_guest_counter_sum(lm_guest *g)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < g->nvcpus; i++)
        sum += atomic_load(&g->vcpus[i].counter);
    return sum;
}

uint64_t lm_guest_now_ns(void)
{
    return lm_now_ns();
}

void lm_guest_start_windows(lm_guest *g, uint64_t len_ns)
{
    uint64_t now = lm_now_ns();
    for (int w = LM_WIN__COUNT; w >= 0; w--)
        atomic_store(&g->win_ns[w], now + (uint64_t)w * len_ns);
}

void lm_guest_window(lm_guest *g, int w, lm_hist *latency, uint64_t *stall_ns,
                     uint64_t *stall_own_ns)
{
    memset(latency, 0, sizeof(*latency));
    *stall_ns = *stall_own_ns = 0;
    if (w >= LM_WIN__COUNT)
        return;
    for (unsigned i = 0; i < g->nvcpus; i++) {
        lm_vcpu *v = &g->vcpus[i];
        lm_hist_merge(latency, w < 0 ? &v->latency : &v->win_latency[w]);
        lm_stall_max *m = w < 0 ? &v->stall : &v->win_stall[w];
        uint64_t wall = atomic_load(&m->wall_ns), own = atomic_load(&m->own_ns);
        *stall_ns = wall > *stall_ns ? wall : *stall_ns;
        *stall_own_ns = own > *stall_own_ns ? own : *stall_own_ns;
    }
}
