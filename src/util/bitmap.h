/* Bitmaps of pages: one bit a page, scanned a word at a time. */
#ifndef LM_UTIL_BITMAP_H
#define LM_UTIL_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LM_BITS_PER_WORD       64
#define LM_BITMAP_WORDS(nbits) (((nbits) + LM_BITS_PER_WORD - 1) / LM_BITS_PER_WORD)

typedef uint64_t lm_word;

lm_word *lm_bitmap_new(uint64_t nbits); /* zeroed; NULL on ENOMEM */
void lm_bitmap_free(lm_word *map);

static inline void lm_bit_set(lm_word *map, uint64_t bit)
{
    map[bit / LM_BITS_PER_WORD] |= (lm_word)1 << (bit % LM_BITS_PER_WORD);
}

static inline void lm_bit_clear(lm_word *map, uint64_t bit)
{
    map[bit / LM_BITS_PER_WORD] &= ~((lm_word)1 << (bit % LM_BITS_PER_WORD));
}

static inline bool lm_bit_test(const lm_word *map, uint64_t bit)
{
    return (map[bit / LM_BITS_PER_WORD] >> (bit % LM_BITS_PER_WORD)) & 1;
}

/* Atomic forms, for bitmaps shared with a fault-handling thread. */
static inline void lm_bit_set_atomic(lm_word *map, uint64_t bit)
{
    __atomic_fetch_or(&map[bit / LM_BITS_PER_WORD], (lm_word)1 << (bit % LM_BITS_PER_WORD),
                      __ATOMIC_RELAXED);
}

/* Sets the bit and says whether it was set already: the one thread that
 * gets false owns whatever the bit stands for. */
static inline bool lm_bit_test_and_set_atomic(lm_word *map, uint64_t bit)
{
    lm_word mask = (lm_word)1 << (bit % LM_BITS_PER_WORD);
    return __atomic_fetch_or(&map[bit / LM_BITS_PER_WORD], mask, __ATOMIC_ACQ_REL) & mask;
}

static inline bool lm_bit_test_atomic(const lm_word *map, uint64_t bit)
{
    return (__atomic_load_n(&map[bit / LM_BITS_PER_WORD], __ATOMIC_ACQUIRE) >>
            (bit % LM_BITS_PER_WORD)) &
           1;
}

void lm_bitmap_set_range(lm_word *map, uint64_t start, uint64_t count);
void lm_bitmap_clear_range(lm_word *map, uint64_t start, uint64_t count);
void lm_bitmap_clear_all(lm_word *map, uint64_t nbits);
uint64_t lm_bitmap_count(const lm_word *map, uint64_t nbits);
/* Set bits in [start, end). */
uint64_t lm_bitmap_count_range(const lm_word *map, uint64_t start, uint64_t end);
/* First set bit at or after 'from', or nbits when there is none. */
uint64_t lm_bitmap_next_set(const lm_word *map, uint64_t nbits, uint64_t from);
/* First clear bit at or after 'from', or nbits when there is none. */
uint64_t lm_bitmap_next_clear(const lm_word *map, uint64_t nbits, uint64_t from);
/* lm_bitmap_set_range for a map other threads set bits in at the same time
 * (their bits outside the range), in one pass: calls was_set(opaque, bit)
 * for each bit of the range that was set already. */
void lm_bitmap_set_range_atomic(lm_word *map, uint64_t start, uint64_t count,
                                void (*was_set)(void *opaque, uint64_t bit), void *opaque);
/* dst |= src */
void lm_bitmap_or(lm_word *dst, const lm_word *src, uint64_t nbits);

#endif
