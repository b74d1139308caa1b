/* Parsing of command-line values: sizes, counts, durations. */
#ifndef LM_UTIL_PARSE_H
#define LM_UTIL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "4096", "64K", "256M", "2G", "1T" (binary units). 0 or -EINVAL. */
int lm_parse_size(const char *s, uint64_t *out);
/* A decimal unsigned integer with no suffix. */
int lm_parse_u64(const char *s, uint64_t *out);
/* Seconds as a decimal ("0.5", "10") or "inf" (returns infinite = true). */
int lm_parse_seconds(const char *s, double *out, bool *infinite);
/* /proc/.../schedstat: nanoseconds on a CPU and waiting on a run queue.
 * 0, or -EINVAL when the text is not two numbers and a count. */
int lm_parse_schedstat(const char *text, uint64_t *run_ns, uint64_t *wait_ns);
/* A name that identifies something on both sides of a migration (a RAM
 * block, a device-state section): 1 to max - 1 printable ASCII bytes, never
 * cut. 0, or -EINVAL with the reason in why ("has no name", "is longer
 * than 31 bytes", "has byte 0x09 at 3"), to follow the thing's name. */
int lm_name_check(const char *name, size_t max, char *why, size_t whylen);
/* Human-readable bytes into buf ("1.50 GiB"). */
const char *lm_format_bytes(uint64_t bytes, char *buf, unsigned len);

#endif
