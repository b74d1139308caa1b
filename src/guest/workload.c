#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest/guest.h"
#include "util/parse.h"

static int bad(char *why, size_t whylen, const char *spec)
{
    snprintf(why, whylen,
             "bad workload '%s': use idle, fill:SIZE, text:SIZE, stress:NxSIZE, "
             "hot:NxSIZE or random:PAGES_PER_SEC",
             spec);
    return -EINVAL;
}

int lm_workload_parse(const char *spec, lm_workload *w, char *why, size_t whylen)
{
    memset(w, 0, sizeof(*w));
    if (strlen(spec) >= sizeof(w->spec))
        return bad(why, whylen, spec);
    snprintf(w->spec, sizeof(w->spec), "%s", spec);
    if (!strcmp(spec, "idle")) {
        w->kind = LM_WL_IDLE;
        return 0;
    }
    if (!strncmp(spec, "fill:", 5)) {
        w->kind = LM_WL_FILL;
        return lm_parse_size(spec + 5, &w->bytes) < 0 ? bad(why, whylen, spec) : 0;
    }
    if (!strncmp(spec, "text:", 5)) {
        w->kind = LM_WL_TEXT;
        return lm_parse_size(spec + 5, &w->bytes) < 0 ? bad(why, whylen, spec) : 0;
    }
    if (!strncmp(spec, "random:", 7)) {
        w->kind = LM_WL_RANDOM;
        if (lm_parse_u64(spec + 7, &w->pages_per_sec) < 0 || !w->pages_per_sec)
            return bad(why, whylen, spec);
        return 0;
    }
    if (!strncmp(spec, "stress:", 7) || !strncmp(spec, "hot:", 4)) {
        bool hot = spec[0] == 'h';
        w->kind = hot ? LM_WL_HOT : LM_WL_STRESS;
        spec += hot ? 4 : 7;
        char num[16];
        const char *x = strchr(spec, 'x');
        uint64_t n;
        if (!x || (size_t)(x - spec) >= sizeof(num))
            return bad(why, whylen, w->spec);
        memcpy(num, spec, (size_t)(x - spec));
        num[x - spec] = '\0';
        /* A region holds whole pages: at least one. */
        if (lm_parse_u64(num, &n) < 0 || n == 0 || n > LM_GUEST_MAX_VCPUS ||
            lm_parse_size(x + 1, &w->bytes) < 0 || w->bytes < 4096)
            return bad(why, whylen, w->spec);
        w->threads = (unsigned)n;
        return 0;
    }
    return bad(why, whylen, spec);
}

int lm_workload_check(const lm_workload *w, uint64_t ram_len, char *why, size_t whylen)
{
    bool too_big = false;
    if (w->kind == LM_WL_FILL || w->kind == LM_WL_TEXT)
        too_big = w->bytes > ram_len;
    else if (w->kind == LM_WL_STRESS) /* divide: bytes * threads could wrap */
        too_big = w->bytes > ram_len / w->threads;
    else if (w->kind == LM_WL_HOT)
        too_big = w->bytes > ram_len;
    if (too_big) {
        snprintf(why, whylen,
                 "workload '%s' needs more RAM than the guest's %llu bytes: "
                 "raise --ram",
                 w->spec, (unsigned long long)ram_len);
        return -EINVAL;
    }
    return 0;
}

int lm_guest_parse_size(const char *s, uint64_t *out)
{
    return lm_parse_size(s, out);
}

int lm_guest_parse_count(const char *s, uint64_t *out)
{
    return lm_parse_u64(s, out);
}

int lm_guest_parse_seconds(const char *s, double *out, bool *infinite)
{
    return lm_parse_seconds(s, out, infinite);
}
