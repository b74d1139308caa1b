/*
 * `--guest kvm` in the livemig command (docs/KVM-GUEST.md): the source and
 * destination runners for the KVM guest, beside main.c's for the thread
 * guest, and `livemig kvm-check`. The guest itself is guest/kvm_guest.h;
 * here are only its life around lm_migrate()/lm_incoming() and its report,
 * whose continuity check fails the run like a digest mismatch.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cli/options.h"
#include "cli/progress.h"
#include "cli/report.h"
#include "cli/run.h"
#include "cli/steal.h"
#include "guest/kvm_guest.h"
#include "guest/load.h"
#include "livemig.h"

int cli_kvm_check(void)
{
    char why[256];
    if (lm_kvm_probe(why, sizeof(why)) < 0) {
        printf("kvm-check: %s\n", why);
        return 77;
    }
    printf("kvm-check: /dev/kvm runs the KVM guest\n");
    return 0;
}

/* Stops the guest and checks continuity; false (said on stderr) when it
 * does not hold. */
static bool stop_and_check(lm_kvm_guest *g, const char *who)
{
    char why[256];
    lm_kvm_guest_callbacks.stop(g);
    if (lm_kvm_guest_check(g, why, sizeof(why)))
        return true;
    fprintf(stderr, "livemig %s: continuity check failed: %s\n", who, why);
    return false;
}

static void report(const char *path, const lm_stats *st, const char *role, lm_kvm_guest *g,
                   uint64_t start, const char *phase, int *ret)
{
    lm_stats_print(st, role, stdout);
    if (g)
        lm_kvm_guest_report_print(g, start, phase, stdout);
    fflush(stdout);
    if (path &&
        cli_report_json_guest(path, st, role, g ? lm_kvm_guest_report_json(g, start) : NULL) < 0 &&
        *ret == 0)
        *ret = -EIO;
}

/* The baseline window beside as many busy threads as the migration runs
 * (main.c's run_baseline, for the KVM guest); the steal sampler goes on
 * into the tracking-start window. */
static void kvm_baseline(const cli_opts *o, lm_kvm_guest *g, lm_steal_sampler *steal)
{
    unsigned load = o->baseline_load != CLI_LOAD_AUTO
                        ? o->baseline_load
                        : (1 + o->params.multifd_channels) * (o->local_dest ? 2 : 1);
    lm_cpu_load cl;
    lm_kvm_guest_start_windows(g, (uint64_t)o->window_ms * 1000000);
    lm_steal_sampler_start(steal, (uint64_t)o->window_ms * 1000000);
    bool loaded =
        lm_cpu_load_start(&cl, load > LM_LOAD_MAX_THREADS ? LM_LOAD_MAX_THREADS : load) == 0;
    cli_sleep_seconds(o->window_ms / 1000.0);
    if (loaded)
        lm_cpu_load_stop(&cl);
}

int cli_run_migrate_kvm(cli_opts *o, const lm_workload *wl)
{
    char why[256];
    uint8_t *ram = lm_ram_alloc(o->ram);
    if (ram && o->ram_thp && madvise(ram, o->ram, MADV_HUGEPAGE) < 0) {
        fprintf(stderr, "livemig: madvise(MADV_HUGEPAGE) failed: %s\n", strerror(errno));
        return 1;
    }
    /* The guest's first touch of a page through KVM costs ~75 us here
     * (nested paging), a host-side populate ~1 us: populate what the
     * workload will touch anyway (program, tables, regions) first. */
    uint64_t touch = 0x400000 + (wl->kind == LM_WL_STRESS ? wl->bytes * wl->threads
                                 : wl->kind == LM_WL_HOT  ? wl->bytes
                                                          : 0);
    if (ram && !o->ram_thp)
        (void)madvise(ram, touch < o->ram ? touch : o->ram, 23 /* MADV_POPULATE_WRITE */);
    lm_ctx *ctx = cli_ctx_new(o);
    if (!ram || !ctx) {
        fprintf(stderr, "livemig: cannot allocate %llu bytes of guest RAM\n",
                (unsigned long long)o->ram);
        return 1;
    }
    /* The dirty ring must exist before the vCPUs: decided here, once. */
    uint32_t ring = o->params.tracker == LM_TRACKER_KVM_RING ? o->dirty_ring : 0;
    lm_kvm_guest *g = lm_kvm_guest_create(ram, o->ram, wl, o->seed, ring, why, sizeof(why));
    if (!g) {
        fprintf(stderr, "livemig: %s\n", why);
        return 1;
    }
    if (lm_ram_block_add(ctx, 0, "ram", ram, o->ram, LM_RAM_ZEROED) < 0 ||
        lm_kvm_guest_attach(g, ctx) < 0) {
        fprintf(stderr, "livemig: %s\n", lm_last_error(ctx));
        return 1;
    }
    lm_set_guest_ops(ctx, &lm_kvm_guest_callbacks, g);
    lm_cli_progress_state prog;
    lm_cli_progress_init(&prog);
    if (!o->no_progress) {
        o->params.progress = lm_cli_progress;
        o->params.progress_opaque = &prog;
    }
    lm_steal_sampler steal = {0};
    cli_sleep_seconds(o->x_warmup_ms / 1000.0);
    if (o->window_ms)
        kvm_baseline(o, g, &steal);
    uint64_t start = lm_kvm_guest_progress(g);
    cli_set_cancel_target(ctx, "livemig migrate");
    int ret = lm_migrate(ctx, o->to, &o->params);
    cli_set_cancel_target(NULL, NULL);
    lm_cli_progress_done(&prog);
    lm_stats st;
    lm_stats_get(ctx, &st);
    if (ret < 0 && st.status == LM_STATUS_POSTCOPY_PAUSED) {
        fprintf(stderr, "livemig migrate: %s\n", lm_last_error(ctx));
        report(o->stats_json, &st, "source", NULL, 0, NULL, &ret);
        cli_hold_paused_state("livemig migrate", ctx);
    }
    if (ret < 0) {
        uint64_t before = lm_kvm_guest_progress(g);
        cli_sleep_seconds(0.2);
        fprintf(stderr, "livemig migrate: %s\n", lm_last_error(ctx));
        fprintf(stderr,
                "livemig migrate: the guest keeps running on the source (passes %llu -> %llu)\n",
                (unsigned long long)before, (unsigned long long)lm_kvm_guest_progress(g));
    }
    if (o->window_ms) {
        lm_steal_sampler_join(&steal, ret < 0);
        for (int w = 0; w < LM_STEAL_WINDOWS; w++)
            lm_kvm_guest_window_steal(g, w, steal.steal_ms[w]);
    }
    /* The source's own view: its guest as it stopped (or now, after a
     * failure). */
    stop_and_check(g, "migrate");
    report(o->stats_json, &st, "source", g, start,
           ret == 0 ? "start -> switchover" : "start -> end", &ret);
    lm_kvm_guest_destroy(g);
    lm_ctx_free(ctx);
    lm_ram_free(ram, o->ram);
    return ret < 0 ? 1 : 0;
}

int cli_run_incoming_kvm(cli_opts *o, lm_listener *l)
{
    lm_ctx *ctx = cli_ctx_new(o);
    lm_kvm_guest *g = ctx ? lm_kvm_guest_new_empty(ctx) : NULL;
    if (!g) {
        fprintf(stderr, "livemig: out of memory\n");
        return 1;
    }
    cli_set_cancel_target(ctx, "livemig incoming");
    uint8_t *ram = NULL;
    if ((o->dest_prealloc && cli_prealloc_ram(o, ctx, &ram) < 0) || !cli_tell_ready(o)) {
        cli_set_cancel_target(NULL, NULL);
        lm_kvm_guest_destroy(g);
        lm_ctx_free(ctx);
        lm_ram_free(ram, o->ram);
        return 1;
    }
    if (o->x_kvm_damage)
        lm_kvm_guest_x_damage(g, o->x_kvm_damage - 1);
    lm_set_guest_ops(ctx, &lm_kvm_guest_callbacks, g);
    fprintf(stderr, "livemig: waiting for a migration on %s\n", lm_listener_uri(l));
    int ret = lm_incoming(ctx, l, &o->params);
    lm_stats st;
    lm_stats_get(ctx, &st);
    const char *why = lm_kvm_guest_error(g);
    if (ret < 0)
        fprintf(stderr, "livemig incoming: %s%s%s\n", lm_last_error(ctx), why ? ": " : "",
                why ? why : "");
    if (ret == 0) {
        if (isinf(o->run_for))
            fprintf(stderr, "livemig: guest running on the destination; Ctrl-C stops it\n");
        cli_sleep_seconds(o->run_for);
        if (!stop_and_check(g, "incoming"))
            ret = -EILSEQ;
    }
    /* Paused in postcopy, the guest's missing pages are still on the source:
     * reading its RAM for the report would wait on them for good. */
    bool have_guest = lm_kvm_guest_vcpus(g) > 0 && st.status != LM_STATUS_POSTCOPY_PAUSED;
    report(o->stats_json, &st, "destination", have_guest ? g : NULL,
           lm_kvm_guest_resumed_progress(g), "resumed -> end of run", &ret);
    if (ret == 0 && st.verify_done)
        printf("verify: digests match\n");
    fflush(stdout);
    if (ret < 0 && st.status == LM_STATUS_POSTCOPY_PAUSED)
        cli_hold_paused_state("livemig incoming", ctx);
    cli_set_cancel_target(NULL, NULL);
    lm_kvm_guest_destroy(g);
    lm_ctx_free(ctx);
    lm_ram_free(ram, o->ram);
    return ret < 0 ? 1 : 0;
}
