#include "cli/report.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_report_print(const lm_stats *st, const char *role, const lm_guest_report *gr,
                      const char *phase)
{
    lm_stats_print(st, role, stdout);
    if (gr)
        lm_guest_report_print(gr, phase, stdout);
    fflush(stdout);
}

/* The statistics' object with "guest":{...} spliced in before its end;
 * takes guest (may be NULL: no guest object). */
static char *report_json(const lm_stats *st, const char *role, char *guest)
{
    char *stats = lm_stats_json(st, role);
    if (!stats || !guest) {
        free(guest);
        return stats;
    }
    char *end = strrchr(stats, '}');
    char *text = NULL;
    if (guest && end) {
        static const char key[] = ",\"guest\":";
        size_t head = (size_t)(end - stats), len = head + strlen(key) + strlen(guest) + 3;
        text = malloc(len);
        if (text)
            snprintf(text, len, "%.*s%s%s}\n", (int)head, stats, key, guest);
    }
    free(guest);
    free(stats);
    return text;
}

int cli_report_json(const char *path, const lm_stats *st, const char *role,
                    const lm_guest_report *gr)
{
    char *guest = gr ? lm_guest_report_json(gr) : NULL;
    if (gr && !guest) {
        fprintf(stderr, "livemig: cannot write %s: %s\n", path, strerror(ENOMEM));
        return -1;
    }
    return cli_report_json_guest(path, st, role, guest);
}

int cli_report_json_guest(const char *path, const lm_stats *st, const char *role, char *guest)
{
    errno = ENOMEM; /* what a NULL text means */
    char *text = report_json(st, role, guest);
    FILE *f = text ? fopen(path, "w") : NULL;
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    free(text);
    if (!ok) {
        fprintf(stderr, "livemig: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}
