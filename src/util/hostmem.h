/*
 * What this host can still give a process: MemAvailable from /proc/meminfo,
 * and below it the headroom of every memory cgroup the process is in
 * (v2 memory.max - memory.current; v1 memory.limit_in_bytes -
 * memory.usage_in_bytes), whichever is least. Reading it costs a few small
 * file reads: callers sample it every few tens of MiB, not per page.
 */
#ifndef LM_UTIL_HOSTMEM_H
#define LM_UTIL_HOSTMEM_H

#include <stdbool.h>
#include <stdint.h>

typedef struct lm_hostmem {
    /* The cgroup directories of this process (empty: none found), found
     * once; limits are read from them and each parent up to the root. */
    char v2[256], v2_root[64];
    char v1[256], v1_root[64];
} lm_hostmem;

void lm_hostmem_init(lm_hostmem *h);
/* Bytes available now; *what names the tightest limit ("MemAvailable",
 * "the cgroup's memory.max"). -errno when /proc/meminfo cannot be read. */
int lm_hostmem_available(const lm_hostmem *h, uint64_t *bytes, const char **what);
/* Whether transparent huge pages can back a MADV_HUGEPAGE region here
 * (/sys/kernel/mm/transparent_hugepage/enabled is not "never"). */
bool lm_hostmem_thp_possible(void);

#endif
