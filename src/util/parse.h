/* Parsing of command-line values: sizes, counts, durations. */
#ifndef LM_UTIL_PARSE_H
#define LM_UTIL_PARSE_H

#include <stdbool.h>
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
/* Human-readable bytes into buf ("1.50 GiB"). */
const char *lm_format_bytes(uint64_t bytes, char *buf, unsigned len);

#endif
