/*
 * The livemig command: a thin user of the library with a synthetic guest.
 *   livemig incoming --listen URI [options]       destination
 *   livemig migrate --ram SIZE --workload SPEC --to URI [options]   source
 *   livemig demo [options]                        both, on loopback
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/progress.h"
#include "cli/steal.h"
#include "dirty/linux_compat.h"
#include "guest/guest.h"
#include "guest/load.h"
#include "livemig.h"
#include "migration/stats.h"
#include "util/clock.h"
#include "util/json.h"
#include "util/parse.h"

typedef struct cli_opts {
    const char *cmd;
    uint64_t ram;
    const char *workload;
    const char *to;
    const char *listen;
    lm_params params;
    const char *stats_json;
    const char *dest_stats_json;
    double run_for;
    bool run_forever;
    uint64_t seed;
    bool progress;
    unsigned window_ms; /* baseline and tracking-start windows of the guest stats */
    bool ram_thp;       /* back the source guest's RAM with transparent huge pages */
    int baseline_load;  /* busy threads in the baseline window; -1: as many as migrating uses */
    bool dest_prealloc; /* incoming: populate guest RAM (--ram) before accepting */
    int ready_fd;       /* demo's destination: a byte here once it is listening, ready */
    bool local_dest;    /* demo: the destination's threads share this host */
} cli_opts;

/* The one thing a signal handler must reach: the migration to cancel. */
static lm_ctx *volatile cancel_target;
static volatile sig_atomic_t interrupted;

static void on_start_postcopy(int sig)
{
    (void)sig;
    if (cancel_target)
        lm_start_postcopy(cancel_target);
}

/* Postcopy failed half way: this process holds part of the guest's memory.
 * Keep it (and the guest's vCPUs, waiting on missing pages) until the user
 * decides, then leave without tearing anything down. */
static void hold_paused_state(const char *who)
{
    fprintf(stderr,
            "livemig %s: postcopy is paused; this process keeps its part of the guest's "
            "memory. Stop it with Ctrl-C (SIGINT) or SIGTERM when you have decided.\n",
            who);
    fflush(NULL);
    while (!interrupted)
        pause();
    _exit(1);
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    if (cancel_target)
        lm_cancel(cancel_target);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage:\n"
            "  livemig incoming --listen tcp:HOST:PORT [--run-for SECONDS|inf] [options]\n"
            "  livemig migrate --ram SIZE --workload SPEC --to tcp:HOST:PORT [options]\n"
            "  livemig demo [--ram SIZE] [--workload SPEC] [options]\n"
            "\n"
            "workloads: idle | fill:SIZE | text:SIZE | stress:NxSIZE | hot:NxSIZE |\n"
            "           random:PAGES_PER_SEC\n"
            "options:\n"
            "  --downtime-limit MS       switch over when the rest fits in MS (300)\n"
            "  --max-bandwidth BYTES     cap the rate, e.g. 500M (per second; 0 = none)\n"
            "  --max-rounds N            switch over after N rounds anyway (30)\n"
            "  --auto-converge           throttle the vCPUs while precopy does not converge\n"
            "  --throttle-initial PCT    auto-converge: first throttle step (20)\n"
            "  --throttle-increment PCT  auto-converge: added at each later step (10)\n"
            "  --dirty-limit RATE        cap each vCPU at RATE dirty pages/s while it does not\n"
            "                            converge\n"
            "  --track-chunk SIZE|all    migrate: write-protect this much at a time in the first\n"
            "                            pass (64M), or each block whole before sending it\n"
            "  --ram-thp                 migrate: back guest RAM with transparent huge pages\n"
            "  --stats-window SECONDS    migrate: guest stats also for a baseline window before\n"
            "                            the migration and one as long from its start (0.3)\n"
            "  --baseline-load N|auto    migrate: busy threads beside the guest in the baseline\n"
            "                            window (auto: as many as the migration keeps busy on\n"
            "                            this host, 1 + channels per side)\n"
            "  --verify                  compare RAM digests; a mismatch fails\n"
            "  --postcopy                may switch to postcopy: when precopy stops converging,\n"
            "                            on SIGUSR1 (migrate-start-postcopy), or after\n"
            "  --postcopy-after-rounds N   N rounds\n"
            "  --no-postcopy-preempt     urgent pages on the main connection, not their own\n"
            "  --stats-json FILE         write the report as JSON\n"
            "  --dest-stats-json FILE    demo: the destination's JSON report\n"
            "  --dirty-tracker KIND      auto | uffd-async | uffd-sync\n"
            "  --timeout SECONDS         bound on any network wait (10)\n"
            "  --accept-timeout SECONDS  incoming: wait for a source (0 = forever)\n"
            "  --no-receivedmap          incoming: read zero pages to check them\n"
            "  --dest-thp on|off         incoming: back guest RAM with huge pages\n"
            "  --dest-prealloc           incoming: reserve and populate guest RAM (--ram SIZE)\n"
            "                            before accepting, like QEMU's -mem-prealloc\n"
            "  --postcopy-place copy|move  incoming: place pages with UFFDIO_COPY (default)\n"
            "                            or move them zero-copy with UFFDIO_MOVE\n"
            "  --seed N                  workload random seed (1)\n"
            "  --no-progress             no progress line on stderr\n"
            "  --multifd-channels N      extra connections for pages, each with its own\n"
            "                            sender thread (0 = one stream; default 0)\n"
            "  --zero-page-detection M   multifd (in the channel threads, default) | legacy\n"
            "                            (on the migration thread) | none\n"
            "  --compress METHOD         none | zlib | zstd | lz4 (page payloads)\n");
}

static int fail_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "livemig: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'livemig --help' for usage\n");
    return 2;
}

enum {
    OPT_RAM = 256,
    OPT_WORKLOAD,
    OPT_TO,
    OPT_LISTEN,
    OPT_DOWNTIME,
    OPT_MAXBW,
    OPT_ROUNDS,
    OPT_VERIFY,
    OPT_STATS,
    OPT_DEST_STATS,
    OPT_TRACKER,
    OPT_TIMEOUT,
    OPT_ACCEPT_TIMEOUT,
    OPT_NO_RECVMAP,
    OPT_SEED,
    OPT_NO_PROGRESS,
    OPT_RUN_FOR,
    OPT_MULTIFD,
    OPT_ZERO,
    OPT_COMPRESS,
    OPT_POSTCOPY,
    OPT_HELP,
    OPT_X_SLOW,
    OPT_DEST_THP,
    OPT_DEST_PREALLOC,
    OPT_POSTCOPY_AFTER,
    OPT_X_CUT,
    OPT_POSTCOPY_PLACE,
    OPT_NO_PREEMPT,
    OPT_AUTO_CONVERGE,
    OPT_THROTTLE_INITIAL,
    OPT_THROTTLE_INCREMENT,
    OPT_DIRTY_LIMIT,
    OPT_WINDOW,
    OPT_BASELINE_LOAD,
    OPT_TRACK_CHUNK,
    OPT_RAM_THP,
};

static int parse_ms(const char *arg, unsigned *out)
{
    double secs;
    bool inf;
    if (lm_parse_seconds(arg, &secs, &inf) < 0 || inf || secs > 86400)
        return -EINVAL;
    *out = (unsigned)(secs * 1000.0);
    return 0;
}

static int parse_args(int argc, char **argv, cli_opts *o)
{
    static const struct option longopts[] = {
        {"ram", required_argument, 0, OPT_RAM},
        {"workload", required_argument, 0, OPT_WORKLOAD},
        {"to", required_argument, 0, OPT_TO},
        {"listen", required_argument, 0, OPT_LISTEN},
        {"downtime-limit", required_argument, 0, OPT_DOWNTIME},
        {"max-bandwidth", required_argument, 0, OPT_MAXBW},
        {"max-rounds", required_argument, 0, OPT_ROUNDS},
        {"verify", no_argument, 0, OPT_VERIFY},
        {"stats-json", required_argument, 0, OPT_STATS},
        {"dest-stats-json", required_argument, 0, OPT_DEST_STATS},
        {"dirty-tracker", required_argument, 0, OPT_TRACKER},
        {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"accept-timeout", required_argument, 0, OPT_ACCEPT_TIMEOUT},
        {"no-receivedmap", no_argument, 0, OPT_NO_RECVMAP},
        {"seed", required_argument, 0, OPT_SEED},
        {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
        {"run-for", required_argument, 0, OPT_RUN_FOR},
        {"multifd-channels", required_argument, 0, OPT_MULTIFD},
        {"zero-page-detection", required_argument, 0, OPT_ZERO},
        {"compress", required_argument, 0, OPT_COMPRESS},
        {"postcopy", no_argument, 0, OPT_POSTCOPY},
        {"postcopy-after-rounds", required_argument, 0, OPT_POSTCOPY_AFTER},
        {"postcopy-place", required_argument, 0, OPT_POSTCOPY_PLACE},
        {"no-postcopy-preempt", no_argument, 0, OPT_NO_PREEMPT},
        {"auto-converge", no_argument, 0, OPT_AUTO_CONVERGE},
        {"throttle-initial", required_argument, 0, OPT_THROTTLE_INITIAL},
        {"throttle-increment", required_argument, 0, OPT_THROTTLE_INCREMENT},
        {"stats-window", required_argument, 0, OPT_WINDOW},
        {"baseline-load", required_argument, 0, OPT_BASELINE_LOAD},
        {"track-chunk", required_argument, 0, OPT_TRACK_CHUNK},
        {"ram-thp", no_argument, 0, OPT_RAM_THP},
        {"dirty-limit", required_argument, 0, OPT_DIRTY_LIMIT},
        {"help", no_argument, 0, OPT_HELP},
        {"x-slow-channel-us", required_argument, 0, OPT_X_SLOW},
        {"x-postcopy-cut-ms", required_argument, 0, OPT_X_CUT},
        {"dest-thp", required_argument, 0, OPT_DEST_THP},
        {"dest-prealloc", no_argument, 0, OPT_DEST_PREALLOC},
        {0, 0, 0, 0},
    };
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_RAM:
            if (lm_parse_size(optarg, &o->ram) < 0 || !o->ram)
                return fail_usage("bad --ram '%s': use a size such as 512M or 2G", optarg);
            break;
        case OPT_WORKLOAD:
            o->workload = optarg;
            break;
        case OPT_TO:
            o->to = optarg;
            break;
        case OPT_LISTEN:
            o->listen = optarg;
            break;
        case OPT_DOWNTIME:
            if (lm_parse_u64(optarg, &o->params.downtime_limit_ms) < 0)
                return fail_usage("bad --downtime-limit '%s': milliseconds", optarg);
            break;
        case OPT_MAXBW:
            if (lm_parse_size(optarg, &o->params.max_bandwidth) < 0)
                return fail_usage("bad --max-bandwidth '%s': bytes per second, e.g. 500M", optarg);
            break;
        case OPT_ROUNDS:
            if (lm_parse_u64(optarg, &v) < 0 || v == 0 || v > 100000)
                return fail_usage("bad --max-rounds '%s'", optarg);
            o->params.max_rounds = (unsigned)v;
            break;
        case OPT_VERIFY:
            o->params.verify = true;
            break;
        case OPT_STATS:
            o->stats_json = optarg;
            break;
        case OPT_DEST_STATS:
            o->dest_stats_json = optarg;
            break;
        case OPT_TRACKER:
            if (!strcmp(optarg, "auto"))
                o->params.tracker = LM_TRACKER_AUTO;
            else if (!strcmp(optarg, "uffd-async"))
                o->params.tracker = LM_TRACKER_UFFD_ASYNC;
            else if (!strcmp(optarg, "uffd-sync"))
                o->params.tracker = LM_TRACKER_UFFD_SYNC;
            else
                return fail_usage("bad --dirty-tracker '%s': auto, uffd-async or uffd-sync",
                                  optarg);
            break;
        case OPT_TIMEOUT:
            if (parse_ms(optarg, &o->params.io_timeout_ms) < 0 || !o->params.io_timeout_ms)
                return fail_usage("bad --timeout '%s': seconds", optarg);
            break;
        case OPT_ACCEPT_TIMEOUT:
            if (parse_ms(optarg, &o->params.accept_timeout_ms) < 0)
                return fail_usage("bad --accept-timeout '%s': seconds", optarg);
            break;
        case OPT_NO_RECVMAP:
            o->params.no_receivedmap = true;
            break;
        case OPT_SEED:
            if (lm_parse_u64(optarg, &o->seed) < 0)
                return fail_usage("bad --seed '%s'", optarg);
            break;
        case OPT_NO_PROGRESS:
            o->progress = false;
            break;
        case OPT_RUN_FOR:
            if (lm_parse_seconds(optarg, &o->run_for, &o->run_forever) < 0)
                return fail_usage("bad --run-for '%s': seconds or inf", optarg);
            break;
        case OPT_MULTIFD:
            if (lm_parse_u64(optarg, &v) < 0 || v > 64)
                return fail_usage("bad --multifd-channels '%s': 0 (one stream) to 64", optarg);
            o->params.multifd_channels = (unsigned)v;
            break;
        case OPT_ZERO:
            if (!strcmp(optarg, "multifd"))
                o->params.zero_detection = LM_ZERO_DETECT_MULTIFD;
            else if (!strcmp(optarg, "legacy"))
                o->params.zero_detection = LM_ZERO_DETECT_LEGACY;
            else if (!strcmp(optarg, "none"))
                o->params.zero_detection = LM_ZERO_DETECT_NONE;
            else
                return fail_usage("bad --zero-page-detection '%s': none, legacy or multifd",
                                  optarg);
            break;
        case OPT_COMPRESS: {
            static const char *const names[] = {"none", "zlib", "zstd", "lz4"};
            unsigned m = 0;
            while (m < 4 && strcmp(optarg, names[m]))
                m++;
            if (m == 4)
                return fail_usage("bad --compress '%s': none, zlib, zstd or lz4", optarg);
            o->params.compress = (lm_compression)m;
            break;
        }
        case OPT_POSTCOPY:
            o->params.postcopy = true;
            break;
        case OPT_POSTCOPY_AFTER:
            if (lm_parse_u64(optarg, &v) < 0 || v == 0 || v > 100000)
                return fail_usage("bad --postcopy-after-rounds '%s'", optarg);
            o->params.postcopy_after_rounds = (unsigned)v;
            o->params.postcopy = true;
            break;
        case OPT_TRACK_CHUNK:
            if (!strcmp(optarg, "all"))
                o->params.track_chunk = 0;
            else if (lm_parse_size(optarg, &o->params.track_chunk) < 0 ||
                     o->params.track_chunk < 4096)
                return fail_usage("bad --track-chunk '%s': a size such as 2M or 1G, or all",
                                  optarg);
            break;
        case OPT_RAM_THP:
            o->ram_thp = true;
            break;
        case OPT_WINDOW:
            if (parse_ms(optarg, &o->window_ms) < 0 || o->window_ms > 60000)
                return fail_usage("bad --stats-window '%s': seconds (0 = none)", optarg);
            break;
        case OPT_BASELINE_LOAD: {
            uint64_t n;
            if (!strcmp(optarg, "auto"))
                o->baseline_load = -1;
            else if (lm_parse_u64(optarg, &n) == 0 && n <= LM_LOAD_MAX_THREADS)
                o->baseline_load = (int)n;
            else
                return fail_usage("bad --baseline-load '%s': auto or 0..64 threads", optarg);
            break;
        }
        case OPT_THROTTLE_INITIAL:
        case OPT_THROTTLE_INCREMENT: {
            uint64_t pct;
            if (lm_parse_u64(optarg, &pct) < 0 || pct < 1 || pct > 99)
                return fail_usage("bad throttle step '%s': a percentage, 1..99", optarg);
            if (c == OPT_THROTTLE_INITIAL)
                o->params.throttle_initial = (unsigned)pct;
            else
                o->params.throttle_increment = (unsigned)pct;
            break;
        }
        case OPT_AUTO_CONVERGE:
            o->params.auto_converge = true;
            break;
        case OPT_DIRTY_LIMIT:
            if (lm_parse_u64(optarg, &o->params.dirty_limit) < 0 || !o->params.dirty_limit)
                return fail_usage("bad --dirty-limit '%s': pages per second per vCPU", optarg);
            break;
        case OPT_NO_PREEMPT:
            o->params.postcopy_no_preempt = true;
            break;
        case OPT_POSTCOPY_PLACE:
            if (strcmp(optarg, "copy") && strcmp(optarg, "move"))
                return fail_usage("bad --postcopy-place '%s': copy or move", optarg);
            o->params.postcopy_move = !strcmp(optarg, "move");
            break;
        case OPT_DEST_PREALLOC:
            o->dest_prealloc = true;
            break;
        case OPT_DEST_THP:
            if (strcmp(optarg, "on") && strcmp(optarg, "off"))
                return fail_usage("bad --dest-thp '%s': on or off", optarg);
            o->params.dest_thp = !strcmp(optarg, "on");
            break;
        case OPT_X_CUT: /* testing aid, deliberately not in --help */
            if (lm_parse_u64(optarg, &v) < 0 || v == 0 || v > 3600000)
                return fail_usage("bad --x-postcopy-cut-ms '%s'", optarg);
            o->params.x_postcopy_cut_ms = (unsigned)v;
            break;
        case OPT_X_SLOW: /* testing aid, deliberately not in --help */
            if (lm_parse_u64(optarg, &v) < 0 || v > 1000000)
                return fail_usage("bad --x-slow-channel-us '%s'", optarg);
            o->params.x_slow_channel_us = (unsigned)v;
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            exit(0);
        default:
            return 2;
        }
    }
    if (optind < argc)
        return fail_usage("unexpected argument '%s'", argv[optind]);
    return 0;
}

static void sleep_seconds(double secs)
{
    uint64_t end = lm_now_ns() + (uint64_t)(secs * 1e9);
    while (!interrupted && lm_now_ns() < end) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
}

/* The synthetic guest's part of the report: how it felt and that it ran. */
typedef struct guest_report {
    unsigned vcpus;
    uint64_t counter_start, counter_end;
    uint64_t max_stall_ns, max_stall_own_ns;
    lm_hist latency;
    bool windows;
    lm_hist win_latency[LM_WIN__COUNT];
    uint64_t win_stall_ns[LM_WIN__COUNT], win_stall_own_ns[LM_WIN__COUNT];
    unsigned baseline_load;             /* busy threads beside the guest in the baseline window */
    double win_steal_ms[LM_WIN__COUNT]; /* host steal during each window, -1: unknown */
    char workload[LM_WORKLOAD_SPEC_MAX];
} guest_report;

static void guest_report_take(lm_guest *g, uint64_t start, guest_report *r)
{
    r->vcpus = g->nvcpus;
    r->counter_start = start;
    r->counter_end = lm_guest_counter_sum(g);
    lm_guest_window(g, -1, &r->latency, &r->max_stall_ns, &r->max_stall_own_ns);
    r->windows = atomic_load(&g->win_ns[0]) != 0;
    for (int w = 0; w < LM_WIN__COUNT; w++)
        lm_guest_window(g, w, &r->win_latency[w], &r->win_stall_ns[w], &r->win_stall_own_ns[w]);
    snprintf(r->workload, sizeof(r->workload), "%s", g->wl.spec);
}

static void guest_report_print(const guest_report *r, const char *phase)
{
    printf("guest: %s, %u vCPU(s), progress %llu -> %llu (%s), write latency p50 %.1f us, "
           "p99 %.1f us, max %.1f us\n",
           r->workload, r->vcpus, (unsigned long long)r->counter_start,
           (unsigned long long)r->counter_end, phase,
           (double)lm_hist_quantile(&r->latency, 0.5) / 1000.0,
           (double)lm_hist_quantile(&r->latency, 0.99) / 1000.0,
           (double)lm_hist_quantile(&r->latency, 1.0) / 1000.0);
}

static int write_json(const char *path, const lm_stats *s, const char *role, const guest_report *g)
{
    lm_json j;
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    lm__stats_json_fields(&j, s, role);
    if (g) {
        lm_json_object_begin(&j, "guest");
        lm_json_str(&j, "workload", g->workload);
        lm_json_u64(&j, "vcpus", g->vcpus);
        lm_json_u64(&j, "progress-start", g->counter_start);
        lm_json_u64(&j, "progress-end", g->counter_end);
        lm_json_double(&j, "write-latency-p50-us",
                       (double)lm_hist_quantile(&g->latency, 0.5) / 1000.0);
        lm_json_double(&j, "write-latency-p99-us",
                       (double)lm_hist_quantile(&g->latency, 0.99) / 1000.0);
        lm_json_double(&j, "write-latency-max-us",
                       (double)lm_hist_quantile(&g->latency, 1.0) / 1000.0);
        lm_json_u64(&j, "write-latency-count", g->latency.count);
        lm_json_double(&j, "max-stall-ms", (double)g->max_stall_ns / 1e6);
        lm_json_double(&j, "max-stall-excl-runqueue-ms", (double)g->max_stall_own_ns / 1e6);
        static const char *const names[LM_WIN__COUNT] = {"baseline", "tracking-start"};
        for (unsigned w = 0; g->windows && w < LM_WIN__COUNT; w++) {
            lm_json_object_begin(&j, names[w]);
            lm_json_double(&j, "write-latency-p50-us",
                           (double)lm_hist_quantile(&g->win_latency[w], 0.5) / 1000.0);
            lm_json_double(&j, "write-latency-p99-us",
                           (double)lm_hist_quantile(&g->win_latency[w], 0.99) / 1000.0);
            lm_json_double(&j, "write-latency-max-us",
                           (double)lm_hist_quantile(&g->win_latency[w], 1.0) / 1000.0);
            lm_json_u64(&j, "write-latency-count", g->win_latency[w].count);
            lm_json_double(&j, "max-stall-ms", (double)g->win_stall_ns[w] / 1e6);
            lm_json_double(&j, "max-stall-excl-runqueue-ms", (double)g->win_stall_own_ns[w] / 1e6);
            if (g->win_steal_ms[w] >= 0)
                lm_json_double(&j, "host-steal-ms", g->win_steal_ms[w]);
            if (w == LM_WIN_BASELINE)
                lm_json_u64(&j, "load-threads", g->baseline_load);
            lm_json_object_end(&j);
        }
        lm_json_object_end(&j);
    }
    lm_json_object_end(&j);
    char *text = lm_json_finish(&j);
    FILE *f = text ? fopen(path, "w") : NULL;
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "livemig: cannot write %s: %s\n", path, strerror(errno));
        free(text);
        return -1;
    }
    free(text);
    return 0;
}

/* Destination: waits on an open listener, runs the guest afterwards. */
typedef struct dest_guest {
    lm_guest g;
    lm_ctx *ctx;
} dest_guest;

static int dest_load_state(void *opaque, const void *buf, size_t len)
{
    dest_guest *dg = opaque;
    void *host;
    uint64_t len0;
    if (lm_ram_block_get(dg->ctx, 0, NULL, &host, &len0) < 0)
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
static int prealloc_ram(cli_opts *o, lm_ctx *ctx, uint8_t **out)
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
    /* A gibibyte at a time, so that Ctrl-C is heard. */
    for (uint64_t off = 0; off < o->ram; off += 1ull << 30) {
        uint64_t len = o->ram - off < (1ull << 30) ? o->ram - off : 1ull << 30;
        if (interrupted || madvise(ram + off, len, MADV_POPULATE_WRITE) < 0) {
            if (interrupted)
                fprintf(stderr, "livemig: interrupted while preallocating guest RAM\n");
            else
                fprintf(stderr,
                        "livemig: cannot preallocate %llu bytes of guest RAM: %s "
                        "(MADV_POPULATE_WRITE needs Linux 5.14 and enough free memory)\n",
                        (unsigned long long)o->ram, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int run_incoming(cli_opts *o, lm_listener *l)
{
    lm_ctx *ctx = lm_ctx_new();
    dest_guest *dg = calloc(1, sizeof(*dg));
    if (!ctx || !dg) {
        fprintf(stderr, "livemig: out of memory\n");
        return 1;
    }
    cancel_target = ctx; /* a Ctrl-C from here on cancels */
    uint8_t *ram = NULL;
    if (o->dest_prealloc && prealloc_ram(o, ctx, &ram) < 0) {
        cancel_target = NULL;
        lm_ctx_free(ctx);
        lm_ram_free(ram, o->ram);
        free(dg);
        return 1;
    }
    if (o->ready_fd >= 0) { /* demo: the source may start its guest now */
        bool told = write(o->ready_fd, "r", 1) == 1;
        close(o->ready_fd);
        if (!told) { /* the source is gone: nobody will connect */
            cancel_target = NULL;
            lm_ctx_free(ctx);
            lm_ram_free(ram, o->ram);
            free(dg);
            return 1;
        }
    }
    dg->ctx = ctx;
    lm_guest_ops ops = {.load_state = dest_load_state, .resume = dest_resume};
    lm_set_guest_ops(ctx, &ops, dg);
    fprintf(stderr, "livemig: waiting for a migration on %s\n", lm_listener_uri(l));
    int ret = lm_incoming(ctx, l, &o->params);
    lm_stats st;
    lm_stats_get(ctx, &st);
    guest_report gr = {0};
    bool have_guest = false;
    if (ret == 0) {
        uint64_t start = dg->g.resumed_counter_sum;
        if (o->run_forever)
            fprintf(stderr, "livemig: guest running on the destination; Ctrl-C stops it\n");
        sleep_seconds(o->run_forever ? INFINITY : o->run_for);
        lm_guest_callbacks.stop(&dg->g);
        guest_report_take(&dg->g, start, &gr);
        have_guest = true;
    }
    lm_stats_print(&st, "destination", stdout);
    if (have_guest)
        guest_report_print(&gr, "resumed -> end of run");
    if (ret < 0)
        fprintf(stderr, "livemig incoming: %s\n", lm_last_error(ctx));
    else if (st.verify_done)
        printf("verify: digests match\n");
    fflush(stdout);
    if (o->stats_json && write_json(o->stats_json, &st, "destination", have_guest ? &gr : NULL) < 0)
        ret = -EIO;
    if (ret < 0 && !strcmp(st.status, "postcopy-paused"))
        hold_paused_state("incoming");
    cancel_target = NULL;
    if (have_guest || dg->g.nvcpus)
        lm_guest_destroy(&dg->g);
    lm_ctx_free(ctx);
    lm_ram_free(ram, o->ram);
    free(dg);
    return ret < 0 ? 1 : 0;
}

static int check_workload(const cli_opts *o, lm_workload *wl)
{
    char why[256];
    if (lm_workload_parse(o->workload, wl, why, sizeof(why)) < 0 ||
        lm_workload_check(wl, o->ram, why, sizeof(why)) < 0) {
        fprintf(stderr, "livemig: %s\n", why);
        return 2;
    }
    return 0;
}

static int run_migrate(cli_opts *o)
{
    char why[256];
    lm_workload wl;
    int rc = check_workload(o, &wl);
    if (rc)
        return rc;
    uint8_t *ram = lm_ram_alloc(o->ram);
    if (ram && o->ram_thp && madvise(ram, o->ram, MADV_HUGEPAGE) < 0) {
        fprintf(stderr,
                "livemig: madvise(MADV_HUGEPAGE) failed: %s (is THP disabled in "
                "/sys/kernel/mm/transparent_hugepage/enabled?)\n",
                strerror(errno));
        return 1;
    }
    lm_ctx *ctx = lm_ctx_new();
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
    int ret = lm_ram_block_add(ctx, 0, "ram", ram, o->ram, LM_RAM_ZEROED);
    if (ret < 0) {
        fprintf(stderr, "livemig: %s\n", lm_last_error(ctx));
        return 1;
    }
    lm_set_guest_ops(ctx, &lm_guest_callbacks, g);
    lm_cli_progress_state prog;
    lm_cli_progress_init(&prog);
    if (o->progress) {
        o->params.progress = lm_cli_progress;
        o->params.progress_opaque = &prog;
    }
    /* A baseline window of the running guest beside as many busy threads as
     * the migration will run, then an equal window from the start of the
     * migration (tracking starts with its first pass). */
    unsigned load = o->baseline_load >= 0
                        ? (unsigned)o->baseline_load
                        : (1 + o->params.multifd_channels) * (o->local_dest ? 2 : 1);
    if (load > LM_LOAD_MAX_THREADS)
        load = LM_LOAD_MAX_THREADS;
    lm_steal_sampler steal = {0};
    if (o->window_ms) {
        lm_cpu_load cl;
        lm_guest_start_windows(g, (uint64_t)o->window_ms * 1000000);
        lm_steal_sampler_start(&steal, (uint64_t)o->window_ms * 1000000);
        /* The load only calibrates the stats: without it, say so and go on. */
        if ((ret = lm_cpu_load_start(&cl, load)) < 0) {
            fprintf(stderr,
                    "livemig: cannot start %u baseline load threads (%s); the baseline window "
                    "runs without them\n",
                    load, strerror(-ret));
            load = 0;
        }
        sleep_seconds(o->window_ms / 1000.0);
        lm_cpu_load_stop(&cl);
    }
    cancel_target = ctx;
    uint64_t start = lm_guest_counter_sum(g);
    ret = lm_migrate(ctx, o->to, &o->params);
    cancel_target = NULL;
    lm_cli_progress_done(&prog);

    lm_stats st;
    lm_stats_get(ctx, &st);
    guest_report gr;
    if (ret < 0 && !strcmp(st.status, "postcopy-paused")) {
        fprintf(stderr, "livemig migrate: %s\n", lm_last_error(ctx));
        lm_stats_print(&st, "source", stdout);
        if (o->stats_json)
            write_json(o->stats_json, &st, "source", NULL);
        hold_paused_state("migrate");
    }
    if (ret < 0) {
        /* Show that the guest survived: it runs on, its memory untouched. */
        uint64_t before = lm_guest_counter_sum(g);
        sleep_seconds(0.2);
        fprintf(stderr, "livemig migrate: %s\n", lm_last_error(ctx));
        fprintf(stderr,
                "livemig migrate: the guest keeps running on the source (progress %llu -> %llu)\n",
                (unsigned long long)before, (unsigned long long)lm_guest_counter_sum(g));
        lm_guest_callbacks.stop(g);
    }
    guest_report_take(g, start, &gr);
    gr.baseline_load = load;
    lm_steal_sampler_join(&steal, ret < 0);
    for (int w = 0; w < LM_WIN__COUNT; w++)
        gr.win_steal_ms[w] = o->window_ms && w < LM_STEAL_WINDOWS ? steal.steal_ms[w] : -1;
    lm_stats_print(&st, "source", stdout);
    guest_report_print(&gr, ret == 0 ? "start -> switchover" : "start -> end");
    fflush(stdout);
    if (o->stats_json && write_json(o->stats_json, &st, "source", &gr) < 0 && ret == 0)
        ret = -EIO;
    lm_guest_destroy(g);
    lm_ctx_free(ctx);
    lm_ram_free(ram, o->ram);
    free(g);
    return ret < 0 ? 1 : 0;
}

static int cmd_incoming(cli_opts *o)
{
    if (!o->listen)
        return fail_usage("%s needs --listen tcp:HOST:PORT", "incoming");
    if (o->dest_prealloc && !o->ram)
        return fail_usage("%s needs --ram SIZE, the guest's RAM size", "--dest-prealloc");
    lm_listener *l;
    char why[512];
    if (lm_listen(o->listen, &l, why, sizeof(why)) < 0) {
        fprintf(stderr, "livemig: %s\n", why);
        return 1;
    }
    int rc = run_incoming(o, l);
    lm_listener_close(l);
    return rc;
}

static int cmd_migrate(cli_opts *o)
{
    if (!o->to || !o->ram || !o->workload)
        return fail_usage("%s needs --ram SIZE --workload SPEC --to tcp:HOST:PORT", "migrate");
    if (o->dest_prealloc)
        return fail_usage("%s is an option of incoming (and demo)", "--dest-prealloc");
    return run_migrate(o);
}

/* Both ends on loopback: the destination is a child process, as on a real
 * second host, so its page faults and memory are its own. */
static int cmd_demo(cli_opts *o)
{
    if (!o->ram)
        o->ram = 1ull << 30;
    if (!o->workload)
        o->workload = "stress:2x64M";
    lm_workload wl;
    int rc = check_workload(o, &wl);
    if (rc)
        return rc;
    lm_listener *l;
    char why[512];
    if (lm_listen(o->listen ? o->listen : "tcp:127.0.0.1:0", &l, why, sizeof(why)) < 0) {
        fprintf(stderr, "livemig: %s\n", why);
        return 1;
    }
    /* With --dest-prealloc the destination populates its RAM first; the
     * source's guest starts once that is done, so the two do not overlap. */
    int ready[2] = {-1, -1};
    if (o->dest_prealloc && pipe(ready) < 0) {
        fprintf(stderr, "livemig: pipe: %s\n", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "livemig: fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0) {
        cli_opts d = *o;
        d.stats_json = o->dest_stats_json;
        d.params.accept_timeout_ms = 30000;
        if (ready[0] >= 0)
            close(ready[0]);
        d.ready_fd = ready[1];
        _exit(run_incoming(&d, l));
    }
    if (ready[0] >= 0) {
        char byte;
        ssize_t got;
        close(ready[1]);
        while ((got = read(ready[0], &byte, 1)) < 0 && errno == EINTR && !interrupted)
            ;
        close(ready[0]);
        if (got != 1) {
            lm_listener_close(l);
            kill(child, SIGTERM);
            int status = 0;
            while (waitpid(child, &status, 0) < 0 && errno == EINTR)
                ;
            if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
                fprintf(stderr, "livemig: the destination died (signal %d) while preparing\n",
                        WTERMSIG(status));
            else if (!interrupted)
                fprintf(stderr, "livemig: the destination could not get ready (see above)\n");
            return 1;
        }
    }
    char uri[256];
    snprintf(uri, sizeof(uri), "%s", lm_listener_uri(l));
    lm_listener_close(l);
    o->to = uri;
    o->local_dest = true;
    printf("== source (pid %d) -> destination (pid %d) on %s ==\n", (int)getpid(), (int)child, uri);
    fflush(stdout);
    rc = run_migrate(o);
    /* A source that failed before connecting leaves the child waiting. */
    if (rc)
        kill(child, SIGTERM);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    int child_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    if (rc == 0 && child_rc == 0)
        printf("== demo: migration completed%s ==\n", o->params.verify ? " and verified" : "");
    return rc ? rc : child_rc;
}

int main(int argc, char **argv)
{
    cli_opts o = {.seed = 1,
                  .run_for = 1.0,
                  .progress = true,
                  .window_ms = 300,
                  .baseline_load = -1,
                  .ready_fd = -1};
    lm_params_init(&o.params);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    o.cmd = argv[1];
    int rc = parse_args(argc - 1, argv + 1, &o);
    if (rc)
        return rc;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct sigaction sp = {.sa_handler = on_start_postcopy};
    sigaction(SIGUSR1, &sp, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(o.cmd, "incoming"))
        return cmd_incoming(&o);
    if (!strcmp(o.cmd, "migrate"))
        return cmd_migrate(&o);
    if (!strcmp(o.cmd, "demo"))
        return cmd_demo(&o);
    return fail_usage("unknown command '%s': use incoming, migrate or demo", o.cmd);
}
