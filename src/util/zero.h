/*
 * Zero-page detection: is a buffer all zero bytes? Used by the multifd
 * channel threads to skip sending zero pages. The implementation (AVX-512,
 * AVX2, SSE2 or portable scalar) is picked once per process from the CPU's
 * features; every implementation reads only the bytes in [p, p + len).
 */
#ifndef LM_UTIL_ZERO_H
#define LM_UTIL_ZERO_H

#include <stdbool.h>
#include <stddef.h>

typedef bool (*lm_is_zero_fn)(const void *p, size_t len);

/* True when the len bytes at p are all zero; any alignment, any length (0 is zero). Uses the best
 * implementation for this CPU, chosen once (pthread_once or a constructor-free lazy init that is
 * thread-safe). */
bool lm_buffer_is_zero(const void *p, size_t len);
/* Name of the implementation lm_buffer_is_zero uses: "avx512", "avx2", "sse2" or "scalar". */
const char *lm_buffer_is_zero_impl(void);
/* A specific implementation by name, or NULL when this CPU lacks it (for tests and benchmarks; no
 * global state is changed). */
lm_is_zero_fn lm_buffer_is_zero_get(const char *name);

#endif
