/* Thin, errno-returning wrappers over the userfaultfd ioctls. */
#ifndef LM_DIRTY_UFFD_H
#define LM_DIRTY_UFFD_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"
#include "util/sys.h" /* lm_sys_ioctl: every userfaultfd ioctl, here and in callers */

/* Features the running kernel offers (probed on a throwaway descriptor). */
int lm_uffd_probe_features(uint64_t *features, lm_err *err);
/* A non-blocking, close-on-exec userfaultfd with 'features' enabled. */
int lm_uffd_open(uint64_t features, lm_err *err);
int lm_uffd_register(int uffd, void *host, uint64_t len, uint64_t mode, lm_err *err);
void lm_uffd_unregister(int uffd, void *host, uint64_t len);
/* Write-protect (or unprotect) a range; unprotecting wakes blocked writers. */
int lm_uffd_wp(int uffd, void *host, uint64_t len, bool protect);

/* A fault-handling thread's loop: reads page-fault messages from uffd and
 * calls on_fault(opaque, page-aligned address, fault flags) for each, until
 * stop_fd (an eventfd) becomes readable or on_fault returns < 0 (returned). */
int lm_uffd_fault_loop(int uffd, int stop_fd, uint64_t page_size,
                       int (*on_fault)(void *opaque, uint64_t addr, uint64_t flags), void *opaque);

#endif
