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
    if (!st->tty && now - st->last_line_ns < 1000000000ull)
        return;
    st->last_line_ns = now;
    fprintf(stderr,
            "%sround %u: %5.1f%% of pass, %8.1f MB/s, dirty %9.0f pages/s, "
            "remaining %8.1f MiB%s",
            st->tty ? "\r" : "", p->round, p->pass_percent, p->throughput_bps / 1e6,
            p->dirty_pages_rate, (double)p->remaining_bytes / (1 << 20), st->tty ? "  " : "\n");
    st->drawn = st->tty;
}

void lm_cli_progress_done(lm_cli_progress_state *st)
{
    if (st->drawn)
        fputc('\n', stderr);
    st->drawn = false;
}
