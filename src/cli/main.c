/*
 * The livemig command: a thin user of the library with a synthetic guest.
 *   livemig incoming --listen URI [options]       destination
 *   livemig migrate --ram SIZE --workload SPEC --to URI [options]   source
 *   livemig demo [options]                        both, on loopback (demo.c)
 * Options are the table in options.c; reports are written by report.c.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cli/control.h"
#include "cli/options.h"
#include "cli/plot.h"
#include "cli/progress.h"
#include "cli/report.h"
#include "cli/run.h"
#include "cli/steal.h"
#include "cli/timeline.h"
#include "guest/guest.h"
#include "guest/kvm_guest.h"
#include "guest/load.h"
#include "guest/report.h"
#include "livemig.h"

/* Sleeps for secs (INFINITY: until interrupted), or less when interrupted. */
void cli_sleep_seconds(double secs)
{
    uint64_t end = isinf(secs) ? UINT64_MAX : lm_guest_now_ns() + (uint64_t)(secs * 1e9);
    while (!cli_interrupted && lm_guest_now_ns() < end) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
}

/* Destination: waits on an open listener, runs the guest afterwards. */
typedef struct dest_guest {
    lm_guest g;
    lm_ctx *ctx;
} dest_guest;

static int dest_load_state(void *opaque, const void *buf, size_t len)
{
    dest_guest *dg = opaque;
    const char *kind = lm_guest_state_kind(buf, len);
    if (kind && strcmp(kind, "thread")) {
        fprintf(stderr,
                "livemig incoming: the source runs the %s guest and this side the thread guest: "
                "start incoming with --guest %s\n",
                kind, kind);
        return -EPROTOTYPE;
    }
    void *host;
    uint64_t len0;
    if (lm_ram_block_get(dg->ctx, 0, NULL, NULL, &host, &len0) < 0)
        return -ENOENT;
    lm_guest_init_empty(&dg->g, host, len0);
    return lm_guest_callbacks.load_state(&dg->g, buf, len);
}

static int dest_resume(void *opaque)
{
    return lm_guest_callbacks.resume(&((dest_guest *)opaque)->g);
}

/* --dest-prealloc: guest RAM reserved and populated before the source
 * connects (QEMU's -mem-prealloc), so that receiving takes no first-touch
 * fault and no page is zeroed inside the migration. */
int cli_prealloc_ram(cli_opts *o, lm_ctx *ctx, uint8_t **out)
{
    uint8_t *ram = lm_ram_alloc(o->ram);
    *out = NULL;
    if (!ram) {
        fprintf(stderr, "livemig: cannot reserve %llu bytes of guest RAM\n",
                (unsigned long long)o->ram);
        return -1;
    }
    (void)madvise(ram, o->ram, o->params.dest_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    /* Registered first: a size the engine refuses costs nothing. */
    if (lm_ram_block_add(ctx, 0, "ram", ram, o->ram, LM_RAM_ZEROED) < 0) {
        fprintf(stderr, "livemig: %s\n", lm_last_error(ctx));
        lm_ram_free(ram, o->ram);
        return -1;
    }
    *out = ram; /* registered: the caller frees it after the context */
    int rc = lm_guest_ram_populate(ram, o->ram, &cli_interrupted);
    if (rc == -EINTR)
        fprintf(stderr, "livemig: interrupted while preallocating guest RAM\n");
    else if (rc < 0)
        fprintf(stderr,
                "livemig: cannot preallocate %llu bytes of guest RAM: %s "
                "(MADV_POPULATE_WRITE needs Linux 5.14 and enough free memory)\n",
                (unsigned long long)o->ram, strerror(-rc));
    return rc < 0 ? -1 : 0;
}

/* Demo's destination: tells the source it may start its guest. False when
 * the source is gone (nobody will connect). */
bool cli_tell_ready(cli_opts *o)
{
    if (o->ready_fd < 0)
        return true;
    bool told = write(o->ready_fd, "r", 1) == 1;
    close(o->ready_fd);
    return told;
}

int cli_run_incoming(cli_opts *o, lm_listener *l)
{
    o->params.ram_size = o->ram; /* --ram: this side owns the layout */
    if (o->guest == CLI_GUEST_KVM)
        return cli_run_incoming_kvm(o, l);
    lm_ctx *ctx = cli_ctx_new(o);
    dest_guest *dg = calloc(1, sizeof(*dg));
    cli_control *ctl = NULL;
    if (!ctx || !dg) {
        fprintf(stderr, "livemig: out of memory\n");
        return 1;
    }
    if (cli_control_start(&ctl, o, ctx, false)) {
        lm_ctx_free(ctx);
        free(dg);
        return 1;
    }
    /* No listener given: --listen, or QMP's migrate-incoming for defer. */
    lm_listener *own = l ? NULL : cli_control_listener(ctl);
    if (!l && !(l = own)) {
        cli_control_free(ctl);
        lm_ctx_free(ctx);
        free(dg);
        return 1;
    }
    cli_set_cancel_target(ctx, "livemig incoming"); /* a Ctrl-C from here on cancels */
    uint8_t *ram = NULL;
    if ((o->dest_prealloc && cli_prealloc_ram(o, ctx, &ram) < 0) || !cli_tell_ready(o)) {
        cli_set_cancel_target(NULL, NULL);
        cli_control_free(ctl);
        lm_listener_close(own);
        lm_ctx_free(ctx);
        lm_ram_free(ram, o->ram);
        free(dg);
        return 1;
    }
    dg->ctx = ctx;
    lm_guest_ops ops = {.load_state = dest_load_state, .resume = dest_resume};
    lm_set_guest_ops(ctx, &ops, dg);
    fprintf(stderr, "livemig: waiting for a migration on %s\n", lm_listener_uri(l));
    lm_params run;
    cli_control_begin(ctl, &run);
    int ret = lm_incoming(ctx, l, &run);
    cli_control_end(ctl, ret == 0);
    lm_stats st;
    lm_stats_get(ctx, &st);
    lm_guest_report gr;
    bool have_guest = false;
    if (ret == 0) {
        uint64_t start = dg->g.resumed_counter_sum;
        if (isinf(o->run_for))
            fprintf(stderr, "livemig: guest running on the destination; Ctrl-C stops it\n");
        cli_sleep_seconds(o->run_for);
        lm_guest_callbacks.stop(&dg->g);
        cli_control_guest_stopped(ctl);
        lm_guest_report_take(&dg->g, start, &gr);
        have_guest = true;
    }
    cli_report_print(&st, "destination", have_guest ? &gr : NULL, "resumed -> end of run");
    if (ret < 0)
        fprintf(stderr, "livemig incoming: %s\n", lm_last_error(ctx));
    else if (st.verify_done)
        printf("verify: digests match\n");
    fflush(stdout);
    if (o->stats_json &&
        cli_report_json(o->stats_json, &st, "destination", have_guest ? &gr : NULL) < 0)
        ret = -EIO;
    if (ret < 0 && st.status == LM_STATUS_POSTCOPY_PAUSED)
        cli_hold_paused_state("livemig incoming", ctx);
    cli_set_cancel_target(NULL, NULL);
    cli_control_wait_quit(ctl);
    cli_control_free(ctl);
    lm_listener_close(own);
    if (have_guest || dg->g.nvcpus)
        lm_guest_destroy(&dg->g);
    lm_ctx_free(ctx);
    lm_ram_free(ram, o->ram);
    free(dg);
    return ret < 0 ? 1 : 0;
}

int cli_check_workload(const cli_opts *o, lm_workload *wl)
{
    char why[256];
    if (lm_workload_parse(o->workload, wl, why, sizeof(why)) < 0 ||
        lm_workload_check(wl, o->ram, why, sizeof(why)) < 0 ||
        (o->guest == CLI_GUEST_KVM && lm_kvm_workload_check(wl, o->ram, why, sizeof(why)) < 0)) {
        fprintf(stderr, "livemig: %s\n", why);
        return 2;
    }
    return 0;
}

/* A baseline window of the running guest beside load busy threads (as many
 * as the migration will run), then the guest's and the host's stats go on
 * into an equal window from the start of the migration (tracking starts
 * with its first pass). Returns the threads that really ran. */
static unsigned run_baseline(const cli_opts *o, lm_guest *g, lm_steal_sampler *steal, unsigned load)
{
    lm_cpu_load cl;
    lm_guest_start_windows(g, (uint64_t)o->window_ms * 1000000);
    lm_steal_sampler_start(steal, (uint64_t)o->window_ms * 1000000);
    /* The load only calibrates the stats: without it, say so and go on. */
    int rc = lm_cpu_load_start(&cl, load);
    if (rc < 0) {
        fprintf(stderr,
                "livemig: cannot start %u baseline load threads (%s); the baseline window "
                "runs without them\n",
                load, strerror(-rc));
        load = 0;
    }
    cli_sleep_seconds(o->window_ms / 1000.0);
    lm_cpu_load_stop(&cl);
    return load;
}

/* The migration failed: show that the guest survived (it runs on, its
 * memory untouched), then stop it. */
static void report_survival(lm_ctx *ctx, lm_guest *g, bool keep_running)
{
    uint64_t before = lm_guest_counter_sum(g);
    cli_sleep_seconds(0.2);
    fprintf(stderr, "livemig migrate: %s\n", lm_last_error(ctx));
    fprintf(stderr,
            "livemig migrate: the guest keeps running on the source (progress %llu -> %llu)\n",
            (unsigned long long)before, (unsigned long long)lm_guest_counter_sum(g));
    if (!keep_running) /* with QMP it may be migrated again */
        lm_guest_callbacks.stop(g);
}

/* Migrates the running guest g (RAM registered in ctx); returns the exit
 * status. */
static int migrate_guest(cli_opts *o, lm_ctx *ctx, lm_guest *g, cli_control *ctl, const char *to)
{
    lm_cli_progress_state prog;
    lm_cli_progress_init(&prog);
    if (!o->no_progress) {
        o->params.progress = lm_cli_progress;
        o->params.progress_opaque = &prog;
    }
    unsigned load = o->baseline_load != CLI_LOAD_AUTO
                        ? o->baseline_load
                        : (1 + o->params.multifd_channels) * (o->local_dest ? 2 : 1);
    if (load > LM_LOAD_MAX_THREADS)
        load = LM_LOAD_MAX_THREADS;
    lm_steal_sampler steal = {0};
    if (o->window_ms)
        load = run_baseline(o, g, &steal, load);
    cli_set_cancel_target(ctx, "livemig migrate");
    uint64_t start = lm_guest_counter_sum(g);
    int ret_early = 0;
    lm_params run;
    cli_control_begin(ctl, &run);
    cli_timeline *tl = NULL;
    if (o->timeline && cli_timeline_start(&tl, o->timeline, ctx, g) < 0)
        ret_early = -EIO;
    cli_control_set_timeline(ctl, tl);
    int ret = ret_early ? ret_early : lm_migrate(ctx, to, &run);
    cli_control_set_timeline(ctl, NULL);
    cli_timeline_stop(tl);
    if (tl)
        fprintf(stderr, "livemig migrate: timeline in %s (draw it: livemig plot %s -o %s.png)\n",
                o->timeline, o->timeline, o->timeline);
    cli_control_end(ctl, ret == 0);
    cli_set_cancel_target(NULL, NULL);
    lm_cli_progress_done(&prog);

    lm_stats st;
    lm_stats_get(ctx, &st);
    if (ret < 0 && st.status == LM_STATUS_POSTCOPY_PAUSED) {
        fprintf(stderr, "livemig migrate: %s\n", lm_last_error(ctx));
        cli_report_print(&st, "source", NULL, NULL);
        if (o->stats_json)
            cli_report_json(o->stats_json, &st, "source", NULL);
        cli_hold_paused_state("livemig migrate", ctx);
    }
    if (ret < 0)
        report_survival(ctx, g, cli_control_active(ctl));
    lm_guest_report gr;
    lm_guest_report_take(g, start, &gr);
    gr.baseline_load = load;
    lm_steal_sampler_join(&steal, ret < 0);
    for (int w = 0; o->window_ms && w < LM_WIN__COUNT && w < LM_STEAL_WINDOWS; w++)
        gr.steal_ms[w] = steal.steal_ms[w];
    cli_report_print(&st, "source", &gr, ret == 0 ? "start -> switchover" : "start -> end");
    if (o->stats_json && cli_report_json(o->stats_json, &st, "source", &gr) < 0 && ret == 0)
        ret = -EIO;
    return ret < 0 ? 1 : 0;
}

int cli_run_migrate(cli_opts *o)
{
    char why[256];
    lm_workload wl;
    int rc = cli_check_workload(o, &wl);
    if (rc)
        return rc;
    if (o->guest == CLI_GUEST_KVM)
        return cli_run_migrate_kvm(o, &wl);
    uint8_t *ram = lm_ram_alloc(o->ram);
    if (ram && o->ram_thp && madvise(ram, o->ram, MADV_HUGEPAGE) < 0) {
        fprintf(stderr,
                "livemig: madvise(MADV_HUGEPAGE) failed: %s (is THP disabled in "
                "/sys/kernel/mm/transparent_hugepage/enabled?)\n",
                strerror(errno));
        return 1;
    }
    lm_ctx *ctx = cli_ctx_new(o);
    lm_guest *g = calloc(1, sizeof(*g));
    if (!ram || !ctx || !g) {
        fprintf(stderr, "livemig: cannot allocate %llu bytes of guest RAM\n",
                (unsigned long long)o->ram);
        return 1;
    }
    if (lm_guest_create(g, ram, o->ram, &wl, o->seed, why, sizeof(why)) < 0) {
        fprintf(stderr, "livemig: %s\n", why);
        return 1;
    }
    if (lm_ram_block_add(ctx, 0, "ram", ram, o->ram, LM_RAM_ZEROED) < 0) {
        fprintf(stderr, "livemig: %s\n", lm_last_error(ctx));
        return 1;
    }
    lm_set_guest_ops(ctx, &lm_guest_callbacks, g);
    cli_control *ctl;
    if ((rc = cli_control_start(&ctl, o, ctx, true)) == 0) {
        /* --to, or (with QMP) each migrate until one completes or quit. */
        char to[1024];
        rc = 1;
        while (cli_control_next_migration(ctl, to, sizeof(to))) {
            rc = migrate_guest(o, ctx, g, ctl, to);
            if (rc == 0 || !cli_control_active(ctl))
                break;
        }
        if (rc == 0)
            cli_control_guest_stopped(ctl);
        cli_control_wait_quit(ctl);
        if (!cli_control_active(ctl) || rc != 0)
            lm_guest_callbacks.stop(g); /* a failed run left it going */
        cli_control_free(ctl);
    }
    lm_guest_destroy(g);
    lm_ctx_free(ctx);
    lm_ram_free(ram, o->ram);
    free(g);
    return rc;
}

/* --qmp's address and what needs it: usage errors before anything starts. */
static int check_qmp(cli_opts *o, const char *addr_opt, const char *addr)
{
    char bad[512];
    if (o->qmp && lm_uri_check(o->qmp, true, bad, sizeof(bad)) < 0)
        return cli_fail_usage(o, "--qmp: %s", bad);
    if (o->qmp && !strncmp(o->qmp, "fd:", 3))
        return cli_fail_usage(o, "--qmp takes unix:PATH or tcp:HOST:PORT");
    if (o->qmp && o->guest == CLI_GUEST_KVM)
        return cli_fail_usage(o, "--qmp works with the thread guest; --guest kvm has no QMP yet");
    if (!strcmp(addr, "defer") && !o->qmp)
        return cli_fail_usage(o, "%s defer waits for a QMP command: add --qmp unix:PATH", addr_opt);
    return 0;
}

static int cmd_incoming(cli_opts *o)
{
    char bad[512];
    if (!o->listen)
        return cli_fail_usage(o, "incoming needs --listen tcp:HOST:PORT");
    if (strcmp(o->listen, "defer") && lm_uri_check(o->listen, true, bad, sizeof(bad)) < 0)
        return cli_fail_usage(o, "--listen: %s", bad);
    if (o->dest_prealloc && !o->ram)
        return cli_fail_usage(o, "--dest-prealloc needs --ram SIZE, the guest's RAM size");
    int rc = check_qmp(o, "--listen", o->listen);
    if (rc)
        return rc;
    if (o->guest != CLI_GUEST_KVM)
        return cli_run_incoming(o, NULL);
    lm_listener *l;
    char why[512];
    if (lm_listen(o->listen, &l, why, sizeof(why)) < 0) {
        fprintf(stderr, "livemig: %s\n", why);
        return 1;
    }
    rc = cli_run_incoming(o, l);
    lm_listener_close(l);
    return rc;
}

static int cmd_migrate(cli_opts *o)
{
    if (!o->to || !o->ram || !o->workload)
        return cli_fail_usage(o, "migrate needs --ram SIZE --workload SPEC --to tcp:HOST:PORT");
    /* Before the guest starts: a mistyped address is a usage error. */
    char bad[512];
    if (strcmp(o->to, "defer") && lm_uri_check(o->to, false, bad, sizeof(bad)) < 0)
        return cli_fail_usage(o, "--to: %s", bad);
    int rc = check_qmp(o, "--to", o->to);
    return rc ? rc : cli_run_migrate(o);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "plot")) /* its own arguments */
        return cli_plot(argc, argv);
    cli_opts o;
    int rc = cli_parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    cli_signals_install();
    setvbuf(stdout, NULL, _IOLBF, 0);

    switch (o.cmd) {
    case CLI_INCOMING:
        return cmd_incoming(&o);
    case CLI_MIGRATE:
        return cmd_migrate(&o);
    case CLI_KVM_CHECK:
        return cli_kvm_check();
    default:
        return cli_demo(&o);
    }
}
