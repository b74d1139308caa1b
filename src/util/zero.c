/*
 * Zero-buffer checks: portable scalar, SSE2, AVX2 and AVX-512 versions, with
 * the best one for this CPU picked on first use.
 *
 * Every version follows the same shape, which never touches a byte outside
 * [p, p + len) (a page that ends at an unmapped page must not fault):
 *
 *   - short buffers: two overlapping loads that together cover exactly the
 *     buffer (or, for AVX-512, one masked load of up to 64 bytes, whose
 *     masked-off bytes are not read and do not fault);
 *   - otherwise: an unaligned load of the first vector, returning early if
 *     it is non-zero (a random page almost always is, in its first bytes);
 *     then the aligned vectors that lie wholly inside the buffer, ORed
 *     together and tested once per block (256 bytes; 64 for scalar); then
 *     an unaligned load of the last vector, which covers the unaligned tail.
 *
 * The overlapping head/body/tail loads re-read a few bytes; that is cheaper
 * than byte loops and always stays inside the buffer.
 */
#include "util/zero.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define LM_ZERO_X86 1
#include <immintrin.h>
#else
#define LM_ZERO_X86 0
#endif

static inline uint64_t ld64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t ld32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* First address >= p aligned to a (a power of two); p itself when aligned. */
static inline const unsigned char *align_up(const unsigned char *p, size_t a)
{
    return p + ((a - ((uintptr_t)p & (a - 1))) & (a - 1));
}

/* Last address <= p aligned to a. */
static inline const unsigned char *align_down(const unsigned char *p, size_t a)
{
    return p - ((uintptr_t)p & (a - 1));
}

/* len <= 16: at most two overlapping loads, all inside [p, p + len). */
static inline bool small_is_zero(const unsigned char *p, size_t len)
{
    if (len >= 8)
        return (ld64(p) | ld64(p + len - 8)) == 0;
    if (len >= 4)
        return (ld32(p) | ld32(p + len - 4)) == 0;
    if (len == 0)
        return true;
    return (p[0] | p[len / 2] | p[len - 1]) == 0; /* 1..3 bytes */
}

static bool is_zero_scalar(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len <= 16)
        return small_is_zero(p, len);
    if ((ld64(p) | ld64(p + 8)) != 0)
        return false;

    const unsigned char *end = p + len;
    const unsigned char *w = align_up(p, 8);     /* bytes before w: checked above */
    const unsigned char *e = align_down(end, 8); /* bytes from e: the last word */
    while (e - w >= 64) {
        uint64_t acc = (ld64(w) | ld64(w + 8)) | (ld64(w + 16) | ld64(w + 24)) |
                       (ld64(w + 32) | ld64(w + 40)) | (ld64(w + 48) | ld64(w + 56));
        if (acc)
            return false;
        w += 64;
    }
    uint64_t acc = ld64(end - 8);
    for (; w < e; w += 8)
        acc |= ld64(w);
    return acc == 0;
}

#if LM_ZERO_X86

__attribute__((target("sse2"))) static inline bool sse2_zero(__m128i v)
{
    return _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) == 0xFFFF;
}

__attribute__((target("sse2"))) static bool is_zero_sse2(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len <= 16)
        return small_is_zero(p, len);
    if (!sse2_zero(_mm_loadu_si128((const __m128i *)p)))
        return false;

    const unsigned char *end = p + len;
    const __m128i *v = (const __m128i *)align_up(p, 16);
    const __m128i *e = (const __m128i *)align_down(end, 16);
    while (e - v >= 16) {
        __m128i a = _mm_or_si128(_mm_or_si128(v[0], v[1]), _mm_or_si128(v[2], v[3]));
        __m128i b = _mm_or_si128(_mm_or_si128(v[4], v[5]), _mm_or_si128(v[6], v[7]));
        __m128i c = _mm_or_si128(_mm_or_si128(v[8], v[9]), _mm_or_si128(v[10], v[11]));
        __m128i d = _mm_or_si128(_mm_or_si128(v[12], v[13]), _mm_or_si128(v[14], v[15]));
        if (!sse2_zero(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))))
            return false;
        v += 16;
    }
    __m128i acc = _mm_loadu_si128((const __m128i *)(end - 16));
    for (; v < e; v++)
        acc = _mm_or_si128(acc, _mm_load_si128(v));
    return sse2_zero(acc);
}

__attribute__((target("avx2"))) static bool is_zero_avx2(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len <= 16)
        return small_is_zero(p, len);
    const unsigned char *end = p + len;
    if (len <= 32) {
        __m128i x = _mm_or_si128(_mm_loadu_si128((const __m128i *)p),
                                 _mm_loadu_si128((const __m128i *)(end - 16)));
        return _mm_testz_si128(x, x);
    }
    __m256i head = _mm256_loadu_si256((const __m256i *)p);
    if (!_mm256_testz_si256(head, head))
        return false;

    const __m256i *v = (const __m256i *)align_up(p, 32);
    const __m256i *e = (const __m256i *)align_down(end, 32);
    while (e - v >= 8) {
        __m256i a = _mm256_or_si256(_mm256_or_si256(v[0], v[1]), _mm256_or_si256(v[2], v[3]));
        __m256i b = _mm256_or_si256(_mm256_or_si256(v[4], v[5]), _mm256_or_si256(v[6], v[7]));
        a = _mm256_or_si256(a, b);
        if (!_mm256_testz_si256(a, a))
            return false;
        v += 8;
    }
    __m256i acc = _mm256_loadu_si256((const __m256i *)(end - 32));
    for (; v < e; v++)
        acc = _mm256_or_si256(acc, _mm256_load_si256(v));
    return _mm256_testz_si256(acc, acc);
}

/*
 * AVX-512 (F + BW): one masked load covers any buffer of up to 64 bytes, and
 * one 64-byte load is the early-exit check. The body deliberately uses
 * 256-bit loads: on the machine this was measured on (AMD EPYC, Zen 4),
 * 512-bit loads checked DRAM-resident pages about 10% slower than 256-bit
 * ones (26 vs 29 GB/s) and were no faster from cache, which is bound by
 * cache bandwidth, not by instruction count.
 */
__attribute__((target("avx512f,avx512bw,avx2"))) static bool is_zero_avx512(const void *buf,
                                                                            size_t len)
{
    const unsigned char *p = buf;
    if (len <= 64) {
        if (len == 0)
            return true;
        /* Masked-off bytes are neither read nor able to fault. */
        __m512i x = _mm512_maskz_loadu_epi8(~0ull >> (64 - len), p);
        return _mm512_test_epi64_mask(x, x) == 0;
    }
    __m512i head = _mm512_loadu_si512(p);
    if (_mm512_test_epi64_mask(head, head))
        return false;

    const unsigned char *end = p + len;
    const __m256i *v = (const __m256i *)align_up(p, 32);
    const __m256i *e = (const __m256i *)align_down(end, 32);
    while (e - v >= 8) {
        __m256i a = _mm256_or_si256(_mm256_or_si256(v[0], v[1]), _mm256_or_si256(v[2], v[3]));
        __m256i b = _mm256_or_si256(_mm256_or_si256(v[4], v[5]), _mm256_or_si256(v[6], v[7]));
        a = _mm256_or_si256(a, b);
        if (!_mm256_testz_si256(a, a))
            return false;
        v += 8;
    }
    __m256i acc = _mm256_loadu_si256((const __m256i *)(end - 32));
    for (; v < e; v++)
        acc = _mm256_or_si256(acc, _mm256_load_si256(v));
    return _mm256_testz_si256(acc, acc);
}

static bool have_sse2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse2") != 0;
}

static bool have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
}

static bool have_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx2");
}

#endif /* LM_ZERO_X86 */

static bool have_always(void)
{
    return true;
}

static const struct {
    const char *name;
    lm_is_zero_fn fn;
    bool (*available)(void);
} impls[] = {
/* Best first: the dispatcher takes the first one available. */
#if LM_ZERO_X86
    {"avx512", is_zero_avx512, have_avx512},
    {"avx2", is_zero_avx2, have_avx2},
    {"sse2", is_zero_sse2, have_sse2},
#endif
    {"scalar", is_zero_scalar, have_always},
};
#define N_IMPLS (sizeof impls / sizeof impls[0])

/*
 * Lazy dispatch without locks: `active` starts at a resolver that picks the
 * implementation, publishes it, and runs it. Threads racing through the
 * resolver all compute and store the same values, so the race is harmless.
 */
static bool resolve_and_run(const void *p, size_t len);

static _Atomic(lm_is_zero_fn) active = resolve_and_run;
static atomic_int chosen = -1;

static int resolve(void)
{
    int i = atomic_load_explicit(&chosen, memory_order_acquire);
    if (i >= 0)
        return i;
    for (i = 0; i < (int)N_IMPLS - 1 && !impls[i].available(); i++)
        ;
    atomic_store_explicit(&chosen, i, memory_order_release);
    atomic_store_explicit(&active, impls[i].fn, memory_order_release);
    return i;
}

static bool resolve_and_run(const void *p, size_t len)
{
    return impls[resolve()].fn(p, len);
}

bool lm_buffer_is_zero(const void *p, size_t len)
{
    return atomic_load_explicit(&active, memory_order_relaxed)(p, len);
}

const char *lm_buffer_is_zero_impl(void)
{
    return impls[resolve()].name;
}

lm_is_zero_fn lm_buffer_is_zero_get(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N_IMPLS; i++)
        if (strcmp(impls[i].name, name) == 0)
            return impls[i].available() ? impls[i].fn : NULL;
    return NULL;
}
