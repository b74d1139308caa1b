#include "util/parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lm_parse_u64(const char *s, uint64_t *out)
{
    char *end;

    /* strtoull would skip white space and accept a sign: digits only. */
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

int lm_parse_size(const char *s, uint64_t *out)
{
    char *end;

    /* strtoull would skip white space and accept a sign: digits only. */
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        return -EINVAL;
    }
    if (*end) {
        end++;
        if ((*end == 'i' || *end == 'I') && (end[1] == 'B' || end[1] == 'b'))
            end += 2;
        else if (*end == 'B' || *end == 'b')
            end++;
    }
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = (uint64_t)v << shift;
    return 0;
}

int lm_parse_seconds(const char *s, double *out, bool *infinite)
{
    char *end;

    *infinite = false;
    if (!s || !*s)
        return -EINVAL;
    if (!strcmp(s, "inf")) {
        *infinite = true;
        *out = INFINITY;
        return 0;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0) || isinf(v))
        return -EINVAL;
    *out = v;
    return 0;
}

const char *lm_format_bytes(uint64_t bytes, char *buf, unsigned len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    unsigned u = 0;

    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", v, units[u]);
    return buf;
}

int lm_parse_schedstat(const char *text, uint64_t *run_ns, uint64_t *wait_ns)
{
    unsigned long long run, wait, slices;
    char extra;
    if (sscanf(text, "%llu %llu %llu %c", &run, &wait, &slices, &extra) != 3)
        return -EINVAL;
    *run_ns = run;
    *wait_ns = wait;
    return 0;
}

int lm_name_check(const char *name, size_t max, char *why, size_t whylen)
{
    if (!name || !name[0]) {
        snprintf(why, whylen, "has no name");
        return -EINVAL;
    }
    size_t len = strnlen(name, max);
    if (len >= max) {
        snprintf(why, whylen, "has a name longer than %zu bytes", max - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x20 || name[i] > 0x7e) {
            snprintf(why, whylen, "has byte 0x%02x at %zu of its name (printable ASCII only)",
                     (unsigned char)name[i], i);
            return -EINVAL;
        }
    return 0;
}
