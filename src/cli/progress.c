#include "cli/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "guest/guest.h"

void lm_cli_progress_init(lm_cli_progress_state *st)
{
    st->tty = isatty(STDERR_FILENO);
    st->drawn = false;
    st->last_line_ns = 0;
}

void lm_cli_progress(void *opaque, const lm_progress *p)
{
    lm_cli_progress_state *st = opaque;
    uint64_t now = lm_guest_now_ns();
    /* A terminal line is redrawn 4 times a second; a log gets one a second. */
    if (now - st->last_line_ns < (st->tty ? 250000000ull : 1000000000ull))
        return;
    st->last_line_ns = now;
    char dirty[32], eta[32];
    /* No sync has measured a dirty rate during the first pass. */
    if (p->round <= 1 && p->dirty_pages_rate == 0)
        snprintf(dirty, sizeof(dirty), "-");
    else
        snprintf(dirty, sizeof(dirty), "%.0f pages/s", p->dirty_pages_rate);
    if (p->throughput_bps > 0)
        snprintf(eta, sizeof(eta), "%.1f s", (double)p->remaining_bytes / p->throughput_bps);
    else
        snprintf(eta, sizeof(eta), "-");
    fprintf(stderr,
            "%s%6.1f s  %s round %u: %5.1f%% of pass, sent %8.1f MiB, %7.1f MB/s, remaining "
            "%7.1f MiB, dirty %s, ETA %s%s",
            st->tty ? "\r" : "", p->elapsed_ms / 1000.0, lm_status_name(p->status), p->round,
            p->pass_percent, (double)p->transferred / (1 << 20), p->throughput_bps / 1e6,
            (double)p->remaining_bytes / (1 << 20), dirty, eta, st->tty ? "    " : "\n");
    st->drawn = st->tty;
}

void lm_cli_progress_done(lm_cli_progress_state *st)
{
    if (st->drawn)
        fputc('\n', stderr);
    st->drawn = false;
}
