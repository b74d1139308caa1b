/* Thin, errno-returning wrappers over the userfaultfd ioctls. */
#ifndef LM_DIRTY_UFFD_H
#define LM_DIRTY_UFFD_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

/* Features the running kernel offers (probed on a throwaway descriptor). */
int lm_uffd_probe_features(uint64_t *features, lm_err *err);
/* A non-blocking, close-on-exec userfaultfd with 'features' enabled. */
int lm_uffd_open(uint64_t features, lm_err *err);
int lm_uffd_register(int uffd, void *host, uint64_t len, uint64_t mode, lm_err *err);
void lm_uffd_unregister(int uffd, void *host, uint64_t len);
/* Write-protect (or unprotect) a range; unprotecting wakes blocked writers. */
int lm_uffd_wp(int uffd, void *host, uint64_t len, bool protect);

#endif
