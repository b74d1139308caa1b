/*
 * selfmigrate: a small "VMM" that embeds livemig and migrates its guest
 * between two processes. The guest is two RAM blocks this program owns and
 * two "vCPU" threads that keep writing them; its device state is the vCPUs'
 * counters. It uses only the installed header:
 *
 *   cc -o selfmigrate selfmigrate.c $(pkg-config --cflags --libs livemig)
 *   ./selfmigrate incoming unix:/tmp/vm.sock &   # the destination
 *   ./selfmigrate migrate unix:/tmp/vm.sock      # the source
 *
 * The source runs lm_migrate() on a thread of its own and follows the
 * migration from its main loop through an event pipe, as an event-loop VMM
 * would. The destination checks, once the guest runs there, that every page
 * the vCPUs wrote is whole and that the counters went on from where they
 * were.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, with -std=c11 */
#include <errno.h>
#include <livemig.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NVCPUS   2
#define PAGE     4096u
#define LOW_LEN  (32u << 20) /* block 0, "low": each vCPU writes its half */
#define HIGH_LEN (8u << 20)  /* block 1, "high": a log both vCPUs append to */

struct guest {
    uint8_t *low, *high;
    pthread_t vcpu[NVCPUS];
    uint64_t counter[NVCPUS]; /* the vCPUs' "registers": the device state */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool run, quit;
    unsigned parked;
};

/* A page the guest wrote holds its vCPU, its counter, and the counter's low
 * byte everywhere else: a page torn by a bad migration shows. */
static void write_page(uint8_t *page, unsigned vcpu, uint64_t counter)
{
    memset(page + 16, (int)(counter & 0xff), PAGE - 16);
    memcpy(page, &counter, 8);
    uint64_t v = vcpu;
    memcpy(page + 8, &v, 8);
}

static bool page_whole(const uint8_t *page)
{
    uint64_t counter;
    memcpy(&counter, page, 8);
    for (unsigned i = 16; i < PAGE; i++)
        if (page[i] != (uint8_t)(counter & 0xff))
            return false;
    return true;
}

struct vcpu_arg {
    struct guest *g;
    unsigned id;
};

static void *vcpu_loop(void *arg)
{
    struct vcpu_arg *a = arg;
    struct guest *g = a->g;
    unsigned id = a->id, half = LOW_LEN / NVCPUS / PAGE;
    uint64_t rng = 0x9e3779b97f4a7c15ull * (id + 1);
    for (;;) {
        pthread_mutex_lock(&g->lock);
        while (!g->run && !g->quit) { /* stopped: parked until resumed */
            g->parked++;
            pthread_cond_broadcast(&g->cond);
            pthread_cond_wait(&g->cond, &g->lock);
            g->parked--;
        }
        bool quit = g->quit;
        pthread_mutex_unlock(&g->lock);
        if (quit)
            return NULL;
        for (int i = 0; i < 64; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            uint64_t c = ++g->counter[id];
            write_page(g->low + ((uint64_t)id * half + rng % half) * PAGE, id, c);
            if (c % 16 == 0) /* now and then, the shared log */
                write_page(g->high + (c / 16 % (HIGH_LEN / PAGE / NVCPUS) * NVCPUS + id) * PAGE, id,
                           c);
        }
    }
}

/* The guest callbacks livemig calls. */
static int guest_stop(void *opaque)
{
    struct guest *g = opaque;
    pthread_mutex_lock(&g->lock);
    g->run = false;
    while (g->parked < NVCPUS)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static int guest_resume(void *opaque)
{
    struct guest *g = opaque;
    pthread_mutex_lock(&g->lock);
    g->run = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return 0;
}

static int guest_save(void *opaque, void **buf, size_t *len)
{
    struct guest *g = opaque;
    *len = sizeof(g->counter);
    if (!(*buf = malloc(*len)))
        return -ENOMEM;
    memcpy(*buf, g->counter, *len);
    return 0;
}

static int guest_load(void *opaque, const void *buf, size_t len)
{
    struct guest *g = opaque;
    if (len != sizeof(g->counter))
        return -EINVAL;
    memcpy(g->counter, buf, len);
    return 0;
}

static struct vcpu_arg vcpu_args[NVCPUS];

/* Allocates the guest's RAM, registers it, and starts its vCPUs (parked). */
static int guest_init(struct guest *g, lm_ctx *ctx)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->low = lm_ram_alloc(LOW_LEN);
    g->high = lm_ram_alloc(HIGH_LEN);
    if (!g->low || !g->high)
        return -ENOMEM;
    int ret = lm_ram_block_add(ctx, 0, "low", g->low, LOW_LEN, LM_RAM_ZEROED);
    if (ret == 0)
        ret = lm_ram_block_add(ctx, 1, "high", g->high, HIGH_LEN, LM_RAM_ZEROED);
    if (ret < 0)
        return ret;
    lm_guest_ops ops = {.stop = guest_stop,
                        .resume = guest_resume,
                        .save_state = guest_save,
                        .load_state = guest_load};
    lm_set_guest_ops(ctx, &ops, g);
    for (unsigned i = 0; i < NVCPUS; i++) {
        vcpu_args[i] = (struct vcpu_arg){g, i};
        if (pthread_create(&g->vcpu[i], NULL, vcpu_loop, &vcpu_args[i]) != 0)
            return -EAGAIN;
    }
    return 0;
}

static void guest_quit(struct guest *g)
{
    pthread_mutex_lock(&g->lock);
    g->quit = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    for (unsigned i = 0; i < NVCPUS; i++)
        pthread_join(g->vcpu[i], NULL);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* The event callback only writes the event to a pipe: it runs on one of
 * livemig's threads and must not call into the library. */
static void on_event(void *opaque, const lm_event *ev)
{
    int fd = *(int *)opaque;
    if (write(fd, ev, sizeof(*ev)) != (ssize_t)sizeof(*ev))
        return; /* the loop is gone; nothing to tell */
}

struct migration {
    lm_ctx *ctx;
    const char *uri;
    lm_params params;
    int ret;
    int done_fd; /* written when lm_migrate returns */
};

static void *migration_thread(void *arg)
{
    struct migration *m = arg;
    m->ret = lm_migrate(m->ctx, m->uri, &m->params);
    char byte = 1;
    if (write(m->done_fd, &byte, 1) != 1)
        m->ret = m->ret ? m->ret : -EPIPE;
    return NULL;
}

static int run_source(const char *uri)
{
    lm_ctx *ctx = lm_ctx_new();
    struct guest g;
    int events[2], done[2];
    if (!ctx || pipe(events) < 0 || pipe(done) < 0 || guest_init(&g, ctx) < 0) {
        fprintf(stderr, "selfmigrate: setup failed: %s\n", ctx ? lm_last_error(ctx) : "no memory");
        return 1;
    }
    guest_resume(&g);
    sleep_ms(200); /* let the guest dirty some memory first */
    lm_set_event_callback(ctx, on_event, &events[1]);

    struct migration m = {.ctx = ctx, .uri = uri, .done_fd = done[1]};
    lm_params_init(&m.params);
    m.params.verify = true;
    m.params.max_bandwidth = 512ull << 20; /* a few rounds while the guest runs */
    pthread_t t;
    if (pthread_create(&t, NULL, migration_thread, &m) != 0)
        return 1;

    /* The VMM's event loop: the migration's events and its end. */
    struct pollfd fds[2] = {{.fd = events[0], .events = POLLIN}, {.fd = done[0], .events = POLLIN}};
    unsigned passes = 0;
    for (bool finished = false; !finished;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        lm_event ev;
        if ((fds[0].revents & POLLIN) && read(events[0], &ev, sizeof(ev)) == (ssize_t)sizeof(ev)) {
            if (ev.kind == LM_EVENT_STATUS)
                printf("selfmigrate: source status %s\n", lm_status_name(ev.status));
            else
                passes++;
            continue; /* drain the events before noticing the end */
        }
        finished = fds[1].revents & POLLIN;
    }
    pthread_join(t, NULL);
    lm_stats *st = calloc(1, sizeof(*st));
    if (st)
        lm_stats_get(ctx, st);
    int ok = m.ret == 0 && st && st->status == LM_STATUS_COMPLETED && st->verify_match;
    if (ok)
        printf("selfmigrate: migrated with livemig %s in %.0f ms (downtime %.1f ms), %u passes, "
               "digest %s\n",
               lm_version_string(), st->total_time_ms, st->downtime_ms, passes, st->digest);
    else
        fprintf(stderr, "selfmigrate: migration failed: %s\n", lm_last_error(ctx));
    /* Completed: the guest runs on the destination now; this copy stays
     * stopped. Failed: livemig resumed it here. */
    guest_quit(&g);
    free(st);
    lm_ctx_free(ctx);
    return ok ? 0 : 1;
}

static int run_destination(const char *uri)
{
    lm_ctx *ctx = lm_ctx_new();
    struct guest g;
    char why[256];
    lm_listener *l = NULL;
    if (!ctx || guest_init(&g, ctx) < 0 || lm_listen(uri, &l, why, sizeof(why)) < 0) {
        fprintf(stderr, "selfmigrate: setup failed: %s\n", l ? "" : why);
        return 1;
    }
    printf("selfmigrate: listening on %s\n", lm_listener_uri(l));
    fflush(stdout);
    lm_params p;
    lm_params_init(&p);
    p.verify = true;
    int ret = lm_incoming(ctx, l, &p); /* returns once the guest runs here */
    lm_listener_close(l);
    if (ret < 0) {
        fprintf(stderr, "selfmigrate: incoming migration failed: %s\n", lm_last_error(ctx));
        guest_quit(&g);
        return 1;
    }
    uint64_t arrived[NVCPUS];
    memcpy(arrived, g.counter, sizeof(arrived)); /* as the device state brought them */
    sleep_ms(200);
    guest_stop(&g);
    /* Every page the vCPUs wrote, before and after the migration, is whole. */
    unsigned written = 0, torn = 0;
    for (uint64_t off = 0; off < LOW_LEN; off += PAGE) {
        uint64_t counter;
        memcpy(&counter, g.low + off, 8);
        if (counter) {
            written++;
            torn += !page_whole(g.low + off);
        }
    }
    bool went_on = true;
    for (unsigned i = 0; i < NVCPUS; i++)
        went_on = went_on && arrived[i] > 0 && g.counter[i] > arrived[i];
    printf("selfmigrate: guest ran here: vCPU counters %llu -> %llu and %llu -> %llu; "
           "%u pages written, %u torn\n",
           (unsigned long long)arrived[0], (unsigned long long)g.counter[0],
           (unsigned long long)arrived[1], (unsigned long long)g.counter[1], written, torn);
    guest_quit(&g);
    lm_ctx_free(ctx);
    return torn == 0 && written > 0 && went_on ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "migrate") && strcmp(argv[1], "incoming"))) {
        fprintf(stderr, "usage: %s migrate|incoming unix:PATH|tcp:HOST:PORT\n", argv[0]);
        return 2;
    }
    if (lm_version() < LM_VERSION_AT(1, 0, 0)) {
        fprintf(stderr, "selfmigrate: needs livemig 1.0 or later, not %s\n", lm_version_string());
        return 1;
    }
    return !strcmp(argv[1], "migrate") ? run_source(argv[2]) : run_destination(argv[2]);
}
