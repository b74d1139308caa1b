/*
 * `livemig plot FILE -o OUT.png|OUT.svg`: draws a --timeline with gnuplot
 * (Debian's gnuplot-nox), three panels over time: the rate and what
 * remains, the dirty rate and the throttle, postcopy's requests and the
 * guest's write latency; rounds, the switchover and postcopy's start are
 * vertical lines across all three.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/plot.h"
#include "cli/timeline.h"

static int plot_usage(FILE *out, int rc)
{
    fprintf(out, "usage: livemig plot FILE -o OUT.png|OUT.svg [--title TEXT]\n\n"
                 "Draws a timeline written by `livemig migrate --timeline FILE` with gnuplot:\n"
                 "the rate and the data remaining, the dirty rate and the vCPU throttle,\n"
                 "postcopy's page requests and the guest's write latency over time, with\n"
                 "rounds, the switchover and the start of postcopy marked.\n");
    return rc;
}

/* The file is a timeline: its second line names the columns. */
static int check_timeline(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "livemig plot: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[512] = "", head[512] = "";
    bool ok = fgets(line, sizeof(line), f) && fgets(head, sizeof(head), f) &&
              !strncmp(head, "# " CLI_TIMELINE_COLUMNS, strlen("# " CLI_TIMELINE_COLUMNS));
    size_t rows = 0;
    while (ok && fgets(line, sizeof(line), f))
        rows++;
    fclose(f);
    if (!ok) {
        fprintf(stderr,
                "livemig plot: %s is not a livemig timeline (write one with "
                "`livemig migrate --timeline FILE`)\n",
                path);
        return -1;
    }
    if (!rows) {
        fprintf(stderr, "livemig plot: %s has no rows: nothing to draw\n", path);
        return -1;
    }
    return 0;
}

/* gnuplot's string syntax: single quotes, a quote doubled. */
static void put_quoted(FILE *s, const char *text)
{
    fputc('\'', s);
    for (; *text; text++) {
        if (*text == '\'')
            fputc('\'', s);
        fputc(*text, s);
    }
    fputc('\'', s);
}

static void write_script(FILE *s, const char *in, const char *out, bool svg, const char *title)
{
    fprintf(s, "set terminal %s size 1000,900 font 'sans,10'\n", svg ? "svg dynamic" : "pngcairo");
    fputs("set output ", s);
    put_quoted(s, out);
    fputs("\nD = ", s);
    put_quoted(s, in);
    fputs("\nT = ", s);
    put_quoted(s, title);
    /* Columns: 1 time-ms, 2 kind, 3 status, 4 round, 5 transferred, 6 mbps,
     * 7 remaining, 8 dirty-pages-rate, 9 throttle, 10 postcopy-requests,
     * 11 write-p99-us, 12 write-max-us. */
    fputs("\n"
          "set datafile commentschars '#'\n"
          "set grid\n"
          "set key outside top center horizontal\n"
          "set autoscale xfix\n"
          "set xlabel 'time (s)'\n"
          /* Markers: vertical lines up to each panel's top (its y2 maximum). */
          "mark(k, top) = (strcol(2) eq k ? top : NaN)\n"
          "stats D using 7 nooutput\n"
          "RTOP = STATS_max > 0 ? STATS_max / 1048576.0 : 1\n"
          "stats D using 12 nooutput\n"
          "LTOP = STATS_max > 0 ? STATS_max : 1\n"
          "set multiplot layout 3,1 title T\n"
          "set ytics nomirror\n"
          "set y2tics\n"
          "set yrange [0:*]\n"
          "set title 'rate and data remaining'\n"
          "set ylabel 'MB/s'\n"
          "set y2label 'remaining (MiB)'\n"
          "set y2range [0:RTOP * 1.05]\n"
          "plot D using ($1/1000):($6/8) with lines lw 2 title 'rate (MB/s)', "
          "D using ($1/1000):($7/1048576) axes x1y2 with lines lw 2 title 'remaining (MiB)', "
          "D using ($1/1000):(mark('round', RTOP)) axes x1y2 with impulses lc rgb '#b0b0b0' "
          "title 'round', "
          "D using ($1/1000):(mark('switchover', RTOP)) axes x1y2 with impulses lw 2 "
          "lc rgb 'red' title 'switchover', "
          "D using ($1/1000):(mark('postcopy', RTOP)) axes x1y2 with impulses lw 2 "
          "lc rgb 'blue' title 'postcopy starts'\n"
          "set title 'dirty rate and vCPU throttle'\n"
          "set ylabel 'dirty pages/s'\n"
          "set y2label 'throttle (%)'\n"
          "set y2range [0:100]\n"
          "plot D using ($1/1000):8 with lines lw 2 title 'dirty pages/s', "
          "D using ($1/1000):9 axes x1y2 with steps lw 2 title 'throttle (%)', "
          "D using ($1/1000):(mark('round', 100)) axes x1y2 with impulses lc rgb '#b0b0b0' "
          "notitle, "
          "D using ($1/1000):(mark('switchover', 100)) axes x1y2 with impulses lw 2 "
          "lc rgb 'red' notitle, "
          "D using ($1/1000):(mark('postcopy', 100)) axes x1y2 with impulses lw 2 "
          "lc rgb 'blue' notitle\n"
          "set title 'postcopy page requests and guest write latency (per 100 ms)'\n"
          "set ylabel 'requests'\n"
          "set y2label 'write latency (us)'\n"
          "set y2range [0:LTOP * 1.05]\n"
          "plot D using ($1/1000):10 with steps lw 2 title 'postcopy requests', "
          "D using ($1/1000):11 axes x1y2 with lines title 'write p99 (us)', "
          "D using ($1/1000):12 axes x1y2 with lines title 'write max (us)', "
          "D using ($1/1000):(mark('switchover', LTOP)) axes x1y2 with impulses lw 2 "
          "lc rgb 'red' notitle, "
          "D using ($1/1000):(mark('postcopy', LTOP)) axes x1y2 with impulses lw 2 "
          "lc rgb 'blue' notitle\n"
          "unset multiplot\n",
          s);
}

int cli_plot(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *title = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return plot_usage(stdout, 0);
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--title") && i + 1 < argc)
            title = argv[++i];
        else if (argv[i][0] == '-' || in) {
            fprintf(stderr, "livemig plot: unexpected argument '%s'\n", argv[i]);
            return plot_usage(stderr, 2);
        } else
            in = argv[i];
    }
    if (!in || !out) {
        fprintf(stderr, "livemig plot: needs a timeline FILE and -o OUT\n");
        return plot_usage(stderr, 2);
    }
    size_t n = strlen(out);
    bool svg = n > 4 && !strcmp(out + n - 4, ".svg"), png = n > 4 && !strcmp(out + n - 4, ".png");
    if (!svg && !png) {
        fprintf(stderr, "livemig plot: -o names a .png or an .svg file, not '%s'\n", out);
        return 2;
    }
    if (check_timeline(in) < 0)
        return 1;
    int pipefd[2];
    if (pipe(pipefd) < 0) {
        fprintf(stderr, "livemig plot: pipe: %s\n", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[0], STDIN_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execlp("gnuplot", "gnuplot", (char *)NULL);
        fprintf(stderr, "livemig plot: cannot run gnuplot: %s (install Debian's gnuplot-nox)\n",
                strerror(errno));
        _exit(127);
    }
    close(pipefd[0]);
    if (pid < 0) {
        close(pipefd[1]);
        fprintf(stderr, "livemig plot: fork: %s\n", strerror(errno));
        return 1;
    }
    FILE *s = fdopen(pipefd[1], "w");
    if (s) {
        write_script(s, in, out, svg, title ? title : in);
        fclose(s);
    } else {
        close(pipefd[1]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 127)
            fprintf(stderr, "livemig plot: gnuplot failed (status %d) drawing %s\n",
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
        return 1;
    }
    printf("livemig plot: %s drawn from %s\n", out, in);
    return 0;
}
