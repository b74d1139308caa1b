#include "cli/options.h"

#include <assert.h>
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "guest/guest.h"
#include "guest/load.h"

#define CLI_ALL    (CLI_MIGRATE | CLI_INCOMING | CLI_DEMO)
#define CLI_SOURCE (CLI_MIGRATE | CLI_DEMO) /* the demo runs both sides */
#define CLI_DEST   (CLI_INCOMING | CLI_DEMO)
#define HELP_COL   28 /* where the help text of an option starts */
#define HELP_WIDTH 80

/* How an option's value is read into its field. */
typedef enum cli_kind {
    CLI_FLAG,    /* no value: sets a bool */
    CLI_STRING,  /* keeps the value (const char *) */
    CLI_COUNT,   /* a decimal count, min..max (max 0: any) */
    CLI_SIZE,    /* bytes with an optional K/M/G/T suffix, min..max (max 0: any) */
    CLI_MILLIS,  /* seconds (at most a day), stored as milliseconds, min..max ms */
    CLI_SECONDS, /* seconds or "inf" (INFINITY), a double */
    CLI_CHOICE,  /* one of choices, stored as its index */
    CLI_METHOD,  /* a compression method, by the library's names */
    CLI_HELP,    /* prints the subcommand's help */
} cli_kind;

typedef struct cli_option {
    const char *name;
    const char *arg; /* the value in the help; NULL: the option takes none */
    cli_kind kind;
    size_t offset;     /* of the field in cli_opts */
    size_t size;       /* of the field: bool, unsigned (or an enum, int) or uint64_t */
    uint64_t min, max; /* COUNT, SIZE, MILLIS */
    const char *word;  /* COUNT, SIZE: a word that stands for word_value */
    uint64_t word_value;
    const char *const *choices; /* CHOICE, NULL-terminated */
    const char *expect;         /* what a bad value should have been */
    const char *help;           /* NULL: a testing aid, not listed */
    unsigned cmds;              /* the subcommands that accept it */
} cli_option;

#define FIELD(member) .offset = offsetof(cli_opts, member), .size = sizeof(((cli_opts *)0)->member)
#define PARAM(member) FIELD(params.member)

/* CHOICE values, in the order of the field's enum (or false, true). */
static const char *const trackers[] = {"auto",    "uffd-async", "uffd-sync",
                                       "kvm-log", "kvm-ring",   NULL};
static const char *const zero_modes[] = {"multifd", "legacy", "none", NULL};
static const char *const off_on[] = {"off", "on", NULL};
static const char *const placements[] = {"copy", "move", NULL};
static const char *const guests[] = {"thread", "kvm", NULL};

static const cli_option options[] = {
    {"ram", "SIZE", CLI_SIZE, FIELD(ram), .min = 1, .expect = "use a size such as 512M or 2G",
     .help = "guest RAM (demo: 1G); incoming: the guest's RAM is one block of SIZE and a source "
             "that declares any other layout is refused (default: the source's layout, within "
             "--max-ram); also what --dest-prealloc populates",
     .cmds = CLI_ALL},
    {"max-ram", "SIZE", CLI_SIZE, PARAM(max_ram), .min = 1, .expect = "a size such as 64G or 16T",
     .help = "without --ram: the largest guest a source may declare (16T; memory is committed "
             "only as data arrives, and checked against what this host can give)",
     .cmds = CLI_INCOMING},
    {"guest", "thread|kvm", CLI_CHOICE, FIELD(guest), .choices = guests, .expect = "thread or kvm",
     .help = "the guest: vCPU threads writing guest RAM (thread, default) or a KVM VM whose vCPUs "
             "run a small guest program (kvm; both sides must agree)",
     .cmds = CLI_ALL},
    {"workload", "SPEC", CLI_STRING, FIELD(workload),
     .help = "what the guest's vCPUs do (see workloads; demo: stress:2x64M)", .cmds = CLI_SOURCE},
    {"to", "URI", CLI_STRING, FIELD(to),
     .help = "the destination: tcp:HOST:PORT, unix:PATH, or fd:N (a connected socket "
             "this process inherited; one connection: no channels); defer: wait for QMP's "
             "migrate (needs --qmp)",
     .cmds = CLI_MIGRATE},
    {"listen", "URI", CLI_STRING, FIELD(listen),
     .help = "where to wait for the source: tcp:HOST:PORT (port 0 picks a free one) or "
             "unix:PATH (demo: tcp:127.0.0.1:0), or fd:N (an inherited socket, listening or "
             "connected); defer: wait for QMP's migrate-incoming (needs --qmp)",
     .cmds = CLI_DEST},
    {"qmp", "URI", CLI_STRING, FIELD(qmp),
     .help = "a QMP control socket (QEMU's protocol and command names) on unix:PATH or "
             "tcp:HOST:PORT; the process then stays until QMP's quit (docs/QMP.md)",
     .cmds = CLI_MIGRATE | CLI_INCOMING},
    {"timeline", "FILE", CLI_STRING, FIELD(timeline),
     .help = "record a sample every 100 ms and at each round, switchover and postcopy event "
             "(draw it with `livemig plot FILE -o OUT.png`)",
     .cmds = CLI_SOURCE},
    {"run-for", "SECONDS|inf", CLI_SECONDS, FIELD(run_for), .expect = "seconds or inf",
     .help = "let the guest run on the destination this long before the report (1)",
     .cmds = CLI_DEST},
    {"seed", "N", CLI_COUNT, FIELD(seed), .help = "workload random seed (1)", .cmds = CLI_SOURCE},
    {"downtime-limit", "MS", CLI_COUNT, PARAM(downtime_limit_ms), .expect = "milliseconds",
     .help = "switch over when the rest fits in MS (300)", .cmds = CLI_ALL},
    {"max-bandwidth", "BYTES", CLI_SIZE, PARAM(max_bandwidth),
     .expect = "bytes per second, e.g. 500M",
     .help = "cap the rate, e.g. 500M (per second; 0 = none)", .cmds = CLI_ALL},
    {"max-rounds", "N", CLI_COUNT, PARAM(max_rounds), .min = 1, .max = 100000,
     .expect = "1..100000", .help = "switch over after N rounds anyway (30)", .cmds = CLI_SOURCE},
    {"multifd-channels", "N", CLI_COUNT, PARAM(multifd_channels), .max = 64,
     .expect = "0 (one stream) to 64",
     .help = "extra connections for pages, each with its own sender thread (0 = one stream; "
             "default 0; the destination follows the source)",
     .cmds = CLI_ALL},
    {"zero-page-detection", "MODE", CLI_CHOICE, PARAM(zero_detection), .choices = zero_modes,
     .expect = "none, legacy or multifd",
     .help = "multifd (in the channel threads, default) | legacy (on the migration thread) | "
             "none",
     .cmds = CLI_ALL},
    {"compress", "METHOD", CLI_METHOD, PARAM(compress), .help = "page payloads:", .cmds = CLI_ALL},
    {"dirty-tracker", "KIND", CLI_CHOICE, PARAM(tracker), .choices = trackers,
     .expect = "auto, uffd-async, uffd-sync, kvm-log or kvm-ring",
     .help = "auto | uffd-async | uffd-sync | kvm-log | kvm-ring (the last two: KVM guests only)",
     .cmds = CLI_SOURCE},
    {"track-chunk", "SIZE|all", CLI_SIZE, PARAM(track_chunk), .min = 4096, .word = "all",
     .word_value = 0, .expect = "a size such as 2M or 1G, or all",
     .help = "write-protect this much at a time in the first pass (64M), or each block whole "
             "before sending it",
     .cmds = CLI_SOURCE},
    {"dirty-ring", "ENTRIES", CLI_COUNT, FIELD(dirty_ring), .min = 256, .max = 65536,
     .expect = "a power of two from 256 to 65536",
     .help = "kvm-ring: entries of each vCPU's KVM dirty ring (16384); a vCPU whose ring fills "
             "waits for the migration thread to harvest it",
     .cmds = CLI_SOURCE},
    {"ram-thp", NULL, CLI_FLAG, FIELD(ram_thp),
     .help = "back guest RAM with transparent huge pages", .cmds = CLI_SOURCE},
    {"auto-converge", NULL, CLI_FLAG, PARAM(auto_converge),
     .help = "throttle the vCPUs while precopy does not converge", .cmds = CLI_SOURCE},
    {"throttle-initial", "PCT", CLI_COUNT, PARAM(throttle_initial), .min = 1, .max = 99,
     .expect = "a percentage, 1..99", .help = "auto-converge: first throttle step (20)",
     .cmds = CLI_SOURCE},
    {"throttle-increment", "PCT", CLI_COUNT, PARAM(throttle_increment), .min = 1, .max = 99,
     .expect = "a percentage, 1..99", .help = "auto-converge: added at each later step (10)",
     .cmds = CLI_SOURCE},
    {"dirty-limit", "RATE", CLI_COUNT, PARAM(dirty_limit), .min = 1,
     .expect = "pages per second per vCPU",
     .help = "cap each vCPU at RATE dirty pages/s while precopy does not converge",
     .cmds = CLI_SOURCE},
    {"postcopy", NULL, CLI_FLAG, PARAM(postcopy),
     .help = "may switch to postcopy: when precopy stops converging, on SIGUSR1 "
             "(migrate-start-postcopy), or after --postcopy-after-rounds",
     .cmds = CLI_ALL},
    {"postcopy-after-rounds", "N", CLI_COUNT, PARAM(postcopy_after_rounds), .min = 1, .max = 100000,
     .expect = "1..100000", .help = "switch to postcopy after N rounds (implies --postcopy)",
     .cmds = CLI_SOURCE},
    {"no-postcopy-preempt", NULL, CLI_FLAG, PARAM(postcopy_no_preempt),
     .help = "urgent pages on the main connection, not their own", .cmds = CLI_SOURCE},
    {"verify", NULL, CLI_FLAG, PARAM(verify),
     .help = "compare digests of all guest RAM; a mismatch fails", .cmds = CLI_ALL},
    {"timeout", "SECONDS", CLI_MILLIS, PARAM(io_timeout_ms), .min = 1, .expect = "seconds",
     .help = "bound on any network wait (10)", .cmds = CLI_ALL},
    {"accept-timeout", "SECONDS", CLI_MILLIS, PARAM(accept_timeout_ms), .expect = "seconds",
     .help = "wait this long for a source (0 = forever)", .cmds = CLI_INCOMING},
    {"recover-timeout", "SECONDS", CLI_MILLIS, PARAM(recover_timeout_ms), .expect = "seconds",
     .help = "after a broken link at or past the switchover, wait this long for the other "
             "side to come back (600 with postcopy, else --timeout)",
     .cmds = CLI_ALL},
    {"no-receivedmap", NULL, CLI_FLAG, PARAM(no_receivedmap),
     .help = "read zero pages to check them (the seed's baseline)", .cmds = CLI_DEST},
    {"dest-thp", "on|off", CLI_CHOICE, PARAM(dest_thp), .choices = off_on, .expect = "on or off",
     .help = "back the destination's guest RAM with transparent huge pages (on)", .cmds = CLI_DEST},
    {"dest-prealloc", NULL, CLI_FLAG, FIELD(dest_prealloc),
     .help = "reserve and populate guest RAM (--ram SIZE) before accepting, like QEMU's "
             "-mem-prealloc",
     .cmds = CLI_DEST},
    {"postcopy-place", "copy|move", CLI_CHOICE, PARAM(postcopy_move), .choices = placements,
     .expect = "copy or move",
     .help = "place pages with UFFDIO_COPY (default) or move them zero-copy with UFFDIO_MOVE",
     .cmds = CLI_DEST},
    {"stats-window", "SECONDS", CLI_MILLIS, FIELD(window_ms), .max = 60000,
     .expect = "seconds (0 = none)",
     .help = "guest stats also for a baseline window before the migration and one as long "
             "from its start (0.3)",
     .cmds = CLI_SOURCE},
    {"baseline-load", "N|auto", CLI_COUNT, FIELD(baseline_load), .max = LM_LOAD_MAX_THREADS,
     .word = "auto", .word_value = CLI_LOAD_AUTO, .expect = "auto or 0..64 threads",
     .help = "busy threads beside the guest in the baseline window (auto: as many as the "
             "migration keeps busy on this host, 1 + channels per side)",
     .cmds = CLI_SOURCE},
    {"tls-creds", "DIR", CLI_STRING, PARAM(tls_creds),
     .help = "TLS 1.3 with X.509, both sides verified: DIR holds ca-cert.pem and "
             "server-cert.pem, server-key.pem (incoming) or client-cert.pem, client-key.pem "
             "(migrate), as QEMU's tls-creds-x509",
     .cmds = CLI_ALL},
    {"tls-psk", "FILE", CLI_STRING, PARAM(tls_psk),
     .help = "TLS 1.3 with a pre-shared key: FILE in QEMU's keys.psk format "
             "(identity:hexkey lines)",
     .cmds = CLI_ALL},
    {"tls-psk-identity", "NAME", CLI_STRING, PARAM(tls_psk_identity),
     .help = "which identity of --tls-psk to use (qemu)", .cmds = CLI_SOURCE},
    {"tls-hostname", "NAME", CLI_STRING, PARAM(tls_hostname),
     .help = "the name the destination's certificate must carry (default: the host in --to)",
     .cmds = CLI_SOURCE},
    {"stats-json", "FILE", CLI_STRING, FIELD(stats_json),
     .help = "write the report as JSON (demo: the source's)", .cmds = CLI_ALL},
    {"dest-stats-json", "FILE", CLI_STRING, FIELD(dest_stats_json),
     .help = "the destination's JSON report", .cmds = CLI_DEMO},
    {"no-progress", NULL, CLI_FLAG, FIELD(no_progress), .help = "no progress line on stderr",
     .cmds = CLI_SOURCE},
    /* Testing aids, deliberately not in the help. */
    {"x-postcopy-cut-ms", "MS", CLI_COUNT, FIELD(testing.postcopy_cut_ms), .min = 1, .max = 3600000,
     .cmds = CLI_SOURCE},
    {"x-slow-channel-us", "US", CLI_COUNT, FIELD(testing.slow_channel_us), .max = 1000000,
     .cmds = CLI_DEST},
    {"x-kvm-damage-page", "N", CLI_COUNT, FIELD(x_kvm_damage), .min = 1, .cmds = CLI_DEST},
    {"x-place-copy", NULL, CLI_FLAG, FIELD(testing.place_copy), .cmds = CLI_DEST},
    {"x-host-available", "SIZE", CLI_SIZE, FIELD(testing.host_available), .min = 1,
     .expect = "a size such as 256M", .cmds = CLI_DEST},
    /* Benchmark aid (bench/kvm.py): the KVM guest runs this long before the
     * baseline window, so that both windows see it warm. */
    {"x-warmup", "SECONDS", CLI_MILLIS, FIELD(x_warmup_ms), .max = 600000, .expect = "seconds",
     .cmds = CLI_SOURCE},
    {"help", NULL, CLI_HELP, .help = "this help", .cmds = CLI_ALL | CLI_KVM_CHECK},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

typedef struct cli_command {
    const char *name;
    unsigned bit;
    const char *synopsis; /* after the name */
    const char *what;
} cli_command;

static const cli_command commands[] = {
    {"incoming", CLI_INCOMING, "--listen tcp:HOST:PORT [--run-for SECONDS|inf] [options]",
     "The destination: accepts one migration, resumes the guest, lets it run, prints its "
     "report and exits. It follows the source's choice of channels and compression."},
    {"migrate", CLI_MIGRATE, "--ram SIZE --workload SPEC --to tcp:HOST:PORT [options]",
     "The source: a synthetic guest running SPEC, migrated while it runs."},
    {"demo", CLI_DEMO, "[--ram SIZE] [--workload SPEC] [options]",
     "Both ends on loopback, the destination in a child process; takes the options of both."},
    {"kvm-check", CLI_KVM_CHECK, "",
     "Runs a tiny KVM guest: exit 0 when this host's /dev/kvm can run --guest kvm, 77 and one "
     "line saying why not."},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char workloads_help[] =
    "workloads: idle | fill:SIZE | text:SIZE | stress:NxSIZE | hot:NxSIZE |\n"
    "           random:PAGES_PER_SEC\n";

int cli_fail_usage(const cli_opts *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "livemig: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (o && o->cmd_name)
        fprintf(stderr, "\nrun 'livemig %s --help' for its options\n", o->cmd_name);
    else
        fprintf(stderr, "\nrun 'livemig --help' for usage\n");
    return 2;
}

/* text from column col to HELP_WIDTH, continued lines indented to col. */
static void print_wrapped(FILE *out, const char *text, size_t col)
{
    size_t pos = col;
    bool line_empty = true;
    while (*text) {
        size_t n = strcspn(text, " ");
        if (!line_empty && pos + 1 + n > HELP_WIDTH) {
            fprintf(out, "\n%*s", (int)col, "");
            pos = col;
            line_empty = true;
        }
        if (!line_empty) {
            fputc(' ', out);
            pos++;
        }
        fwrite(text, 1, n, out);
        pos += n;
        line_empty = false;
        text += n;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

/* The compression methods, named by the library's one table. */
static void method_names(const char *lead, const char *sep, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "%s", lead);
    for (unsigned m = 0; m < LM_COMPRESSION__COUNT && n < len; m++)
        n += (size_t)snprintf(buf + n, len - n, "%s%s", m ? sep : " ",
                              lm_compression_name((lm_compression)m));
}

static void print_option(FILE *out, const cli_option *opt)
{
    char head[64];
    snprintf(head, sizeof(head), "--%s%s%s", opt->name, opt->arg ? " " : "",
             opt->arg ? opt->arg : "");
    if (strlen(head) + 4 > HELP_COL) /* no room for two spaces and the help */
        fprintf(out, "  %s\n%*s", head, HELP_COL, "");
    else
        fprintf(out, "  %-*s", HELP_COL - 2, head);
    if (opt->kind != CLI_METHOD) {
        print_wrapped(out, opt->help, HELP_COL);
        return;
    }
    char text[256];
    method_names(opt->help, " | ", text, sizeof(text));
    print_wrapped(out, text, HELP_COL);
}

/* The options whose mask is exactly cmds (or, with exact false, includes
 * cmds), under a heading; nothing when there are none. */
static void print_options(FILE *out, unsigned cmds, bool exact, const char *heading)
{
    bool any = false;
    for (size_t i = 0; i < NOPTIONS; i++) {
        const cli_option *opt = &options[i];
        if (!opt->help || (exact ? opt->cmds != cmds : !(opt->cmds & cmds)))
            continue;
        if (!any)
            fprintf(out, "\n%s:\n", heading);
        any = true;
        print_option(out, opt);
    }
}

static void print_usage(FILE *out)
{
    static const struct {
        unsigned cmds;
        const char *heading;
    } groups[] = {
        {CLI_ALL, "options (every command)"},
        {CLI_SOURCE, "source options (migrate, demo)"},
        {CLI_MIGRATE, "migrate only"},
        {CLI_DEST, "destination options (incoming, demo)"},
        {CLI_INCOMING, "incoming only"},
        {CLI_DEMO, "demo only"},
        {CLI_MIGRATE | CLI_INCOMING, "migrate and incoming"},
    };
    fprintf(out, "usage:\n");
    for (size_t c = 0; c < NCOMMANDS; c++)
        fprintf(out, "  livemig %s %s\n", commands[c].name, commands[c].synopsis);
    fprintf(out, "  livemig plot FILE -o OUT.png|OUT.svg   (draws a --timeline)\n");
    fprintf(out, "\n%s", workloads_help);
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
        print_options(out, groups[g].cmds, true, groups[g].heading);
    fprintf(out, "\n'livemig COMMAND --help' lists the options of one command.\n");
}

static void print_command_help(FILE *out, const cli_command *c)
{
    fprintf(out, "usage: livemig %s %s\n\n", c->name, c->synopsis);
    print_wrapped(out, c->what, 0);
    if (c->bit & CLI_SOURCE)
        fprintf(out, "\n%s", workloads_help);
    print_options(out, c->bit, false, "options");
}

static void store(void *field, size_t size, uint64_t v)
{
    if (size == sizeof(bool)) {
        *(bool *)field = v != 0;
    } else if (size == sizeof(unsigned)) { /* unsigned, int and enum fields */
        *(unsigned *)field = (unsigned)v;
    } else {
        assert(size == sizeof(uint64_t));
        *(uint64_t *)field = v;
    }
}

/* Reads value into the option's field: 0, or -1 when it is not valid. */
static int parse_value(const cli_option *opt, const char *value, cli_opts *o)
{
    void *field = (char *)o + opt->offset;
    uint64_t v = 0;
    double secs;
    bool inf;
    switch (opt->kind) {
    case CLI_FLAG:
        *(bool *)field = true;
        return 0;
    case CLI_STRING:
        *(const char **)field = value;
        return 0;
    case CLI_SECONDS:
        return lm_guest_parse_seconds(value, (double *)field, &inf) < 0 ? -1 : 0;
    case CLI_CHOICE:
        while (opt->choices[v] && strcmp(value, opt->choices[v]))
            v++;
        if (!opt->choices[v])
            return -1;
        store(field, opt->size, v);
        return 0;
    case CLI_METHOD:
        return lm_compression_parse(value, (lm_compression *)field) < 0 ? -1 : 0;
    case CLI_MILLIS:
        if (lm_guest_parse_seconds(value, &secs, &inf) < 0 || inf || secs > 86400)
            return -1;
        v = (uint64_t)(secs * 1000.0);
        break;
    case CLI_COUNT:
    case CLI_SIZE:
        if (opt->word && !strcmp(value, opt->word)) {
            store(field, opt->size, opt->word_value);
            return 0;
        }
        if ((opt->kind == CLI_SIZE ? lm_guest_parse_size(value, &v)
                                   : lm_guest_parse_count(value, &v)) < 0)
            return -1;
        break;
    case CLI_HELP:
        return -1;
    }
    if (v < opt->min || (opt->max && v > opt->max))
        return -1;
    store(field, opt->size, v);
    return 0;
}

static const cli_option *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
            return &options[i];
    return NULL;
}

/* "migrate, incoming or demo": the subcommands in mask cmds. */
static const char *command_list(unsigned cmds, char *buf, size_t len)
{
    size_t n = 0, left = (size_t)__builtin_popcount(cmds);
    buf[0] = '\0';
    for (size_t c = 0; c < NCOMMANDS; c++) {
        if (!(cmds & commands[c].bit))
            continue;
        left--;
        n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", commands[c].name,
                              left > 1 ? ", "
                              : left   ? " or "
                                       : "");
    }
    return buf;
}

/* An option getopt_long did not accept: unknown, ambiguous, or given a value
 * it does not take. */
static int fail_option(const cli_opts *o, const char *text)
{
    if (!strncmp(text, "--", 2)) {
        size_t len = strcspn(text + 2, "=");
        const cli_option *opt = find_option(text + 2, len);
        if (opt && !opt->arg && strchr(text, '='))
            return cli_fail_usage(o, "option --%s takes no value", opt->name);
        unsigned matches = 0;
        for (size_t i = 0; i < NOPTIONS; i++)
            matches += !strncmp(options[i].name, text + 2, len);
        if (matches > 1)
            return cli_fail_usage(o, "option '%.*s' is ambiguous: write it out", (int)len + 2,
                                  text);
    }
    return cli_fail_usage(o, "unknown option '%s'", text);
}

static void init_opts(cli_opts *o)
{
    memset(o, 0, sizeof(*o));
    lm_params_init(&o->params);
    o->seed = 1;
    o->dirty_ring = 16384;
    o->run_for = 1.0;
    o->window_ms = 300;
    o->baseline_load = CLI_LOAD_AUTO;
    o->ready_fd = -1;
}

int cli_parse(int argc, char **argv, cli_opts *o)
{
    init_opts(o);
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        printf("livemig %s\n", LM_VERSION_STRING);
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const cli_command *cmd = NULL;
    for (size_t c = 0; c < NCOMMANDS && !cmd; c++)
        if (!strcmp(argv[1], commands[c].name))
            cmd = &commands[c];
    if (!cmd)
        return cli_fail_usage(
            NULL, "unknown command '%s': use incoming, migrate, demo, plot or kvm-check", argv[1]);
    o->cmd = cmd->bit;
    o->cmd_name = cmd->name;

    struct option longopts[NOPTIONS + 1];
    for (size_t i = 0; i < NOPTIONS; i++)
        longopts[i] = (struct option){
            options[i].name, options[i].arg ? required_argument : no_argument, NULL, 256 + (int)i};
    longopts[NOPTIONS] = (struct option){0};
    argc--, argv++; /* getopt_long starts after the subcommand */
    opterr = 0;     /* the messages are ours */
    int c;
    char names[64];
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == 'h') {
            print_command_help(stdout, cmd);
            return 0;
        }
        if (c == ':' && optopt >= 256) /* the value is missing at the end */
            return cli_fail_usage(o, "option --%s needs a value", options[optopt - 256].name);
        if (c == '?' || c == ':' || c < 256)
            return optopt > 0 && optopt < 256 ? cli_fail_usage(o, "unknown option '-%c'", optopt)
                                              : fail_option(o, argv[optind - 1]);
        const cli_option *opt = &options[c - 256];
        if (!(opt->cmds & o->cmd))
            return cli_fail_usage(o, "%s does not take --%s (an option of %s)", cmd->name,
                                  opt->name, command_list(opt->cmds, names, sizeof(names)));
        if (opt->kind == CLI_HELP) {
            print_command_help(stdout, cmd);
            return 0;
        }
        /* A missing value must not swallow the next option. */
        if (opt->arg && !strncmp(optarg, "--", 2))
            return cli_fail_usage(o, "option --%s needs a value", opt->name);
        char methods[128];
        if (opt->kind == CLI_METHOD)
            method_names("one of", ", ", methods, sizeof(methods));
        const char *expect = opt->kind == CLI_METHOD ? methods : opt->expect;
        if (parse_value(opt, optarg, o) < 0)
            return cli_fail_usage(o, "bad --%s '%s'%s%s", opt->name, optarg, expect ? ": " : "",
                                  expect ? expect : "");
    }
    if (optind < argc)
        return cli_fail_usage(o, "unexpected argument '%s'", argv[optind]);
    if (o->params.postcopy_after_rounds)
        o->params.postcopy = true;
    return -1;
}

lm_ctx *cli_ctx_new(const cli_opts *o)
{
    lm_ctx *ctx = lm_ctx_new();
    if (ctx)
        lm_testing_set(ctx, &o->testing);
    return ctx;
}
