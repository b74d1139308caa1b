#include "util/bitmap.h"

#include <stdlib.h>
#include <string.h>

lm_word *lm_bitmap_new(uint64_t nbits)
{
    return calloc(LM_BITMAP_WORDS(nbits) ? LM_BITMAP_WORDS(nbits) : 1, sizeof(lm_word));
}

void lm_bitmap_free(lm_word *map)
{
    free(map);
}

void lm_bitmap_set_range(lm_word *map, uint64_t start, uint64_t count)
{
    uint64_t bit = start, end = start + count;

    /* Head bits up to a word boundary, whole words, then tail bits. */
    while (bit < end && bit % LM_BITS_PER_WORD)
        lm_bit_set(map, bit++);
    while (end - bit >= LM_BITS_PER_WORD) {
        map[bit / LM_BITS_PER_WORD] = ~(lm_word)0;
        bit += LM_BITS_PER_WORD;
    }
    while (bit < end)
        lm_bit_set(map, bit++);
}

void lm_bitmap_clear_range(lm_word *map, uint64_t start, uint64_t count)
{
    uint64_t bit = start, end = start + count;

    while (bit < end && bit % LM_BITS_PER_WORD)
        lm_bit_clear(map, bit++);
    while (end - bit >= LM_BITS_PER_WORD) {
        map[bit / LM_BITS_PER_WORD] = 0;
        bit += LM_BITS_PER_WORD;
    }
    while (bit < end)
        lm_bit_clear(map, bit++);
}

void lm_bitmap_clear_all(lm_word *map, uint64_t nbits)
{
    memset(map, 0, LM_BITMAP_WORDS(nbits) * sizeof(lm_word));
}

/* POPCNT where the CPU has it (the baseline x86-64 build would call
 * libgcc's bit-twiddling popcount for every word of a 32 MiB map). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LM_POPCNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define LM_POPCNT_CLONES
#endif

LM_POPCNT_CLONES uint64_t lm_bitmap_count(const lm_word *map, uint64_t nbits)
{
    uint64_t n = 0, words = nbits / LM_BITS_PER_WORD;

    for (uint64_t i = 0; i < words; i++)
        n += (uint64_t)__builtin_popcountll(map[i]);
    if (nbits % LM_BITS_PER_WORD) {
        lm_word tail_mask = ((lm_word)1 << (nbits % LM_BITS_PER_WORD)) - 1;
        n += (uint64_t)__builtin_popcountll(map[words] & tail_mask);
    }
    return n;
}

LM_POPCNT_CLONES uint64_t lm_bitmap_count_range(const lm_word *map, uint64_t start, uint64_t end)
{
    uint64_t n = 0;
    if (start >= end)
        return 0;
    uint64_t first = start / LM_BITS_PER_WORD, last = (end - 1) / LM_BITS_PER_WORD;
    for (uint64_t i = first; i <= last; i++) {
        lm_word w = map[i];
        if (i == first)
            w &= ~(lm_word)0 << (start % LM_BITS_PER_WORD);
        if (i == last && end % LM_BITS_PER_WORD)
            w &= ~(lm_word)0 >> (LM_BITS_PER_WORD - end % LM_BITS_PER_WORD);
        n += (uint64_t)__builtin_popcountll(w);
    }
    return n;
}

uint64_t lm_bitmap_next_set(const lm_word *map, uint64_t nbits, uint64_t from)
{
    if (from >= nbits)
        return nbits;
    uint64_t idx = from / LM_BITS_PER_WORD;
    lm_word w = map[idx] & (~(lm_word)0 << (from % LM_BITS_PER_WORD));
    uint64_t words = LM_BITMAP_WORDS(nbits);

    while (!w) {
        if (++idx >= words)
            return nbits;
        w = map[idx];
    }
    uint64_t bit = idx * LM_BITS_PER_WORD + (uint64_t)__builtin_ctzll(w);
    return bit < nbits ? bit : nbits;
}

uint64_t lm_bitmap_next_clear(const lm_word *map, uint64_t nbits, uint64_t from)
{
    if (from >= nbits)
        return nbits;
    uint64_t idx = from / LM_BITS_PER_WORD;
    lm_word w = ~map[idx] & (~(lm_word)0 << (from % LM_BITS_PER_WORD));
    uint64_t words = LM_BITMAP_WORDS(nbits);

    while (!w) {
        if (++idx >= words)
            return nbits;
        w = ~map[idx];
    }
    uint64_t bit = idx * LM_BITS_PER_WORD + (uint64_t)__builtin_ctzll(w);
    return bit < nbits ? bit : nbits;
}

/* Bits [lo, hi) of one word, lo < hi <= 64. */
static lm_word word_mask(uint64_t lo, uint64_t hi)
{
    lm_word high = hi == LM_BITS_PER_WORD ? ~(lm_word)0 : ((lm_word)1 << hi) - 1;
    return high & (~(lm_word)0 << lo);
}

void lm_bitmap_set_range_atomic(lm_word *map, uint64_t start, uint64_t count,
                                void (*was_set)(void *opaque, uint64_t bit), void *opaque)
{
    uint64_t bit = start, end = start + count;
    while (bit < end) {
        uint64_t idx = bit / LM_BITS_PER_WORD, lo = bit % LM_BITS_PER_WORD;
        uint64_t hi = end - idx * LM_BITS_PER_WORD;
        if (hi > LM_BITS_PER_WORD)
            hi = LM_BITS_PER_WORD;
        lm_word mask = word_mask(lo, hi);
        lm_word old = __atomic_fetch_or(&map[idx], mask, __ATOMIC_RELAXED) & mask;
        for (; old && was_set; old &= old - 1)
            was_set(opaque, idx * LM_BITS_PER_WORD + (uint64_t)__builtin_ctzll(old));
        bit = (idx + 1) * LM_BITS_PER_WORD;
    }
}

void lm_bitmap_or(lm_word *dst, const lm_word *src, uint64_t nbits)
{
    for (uint64_t i = 0; i < LM_BITMAP_WORDS(nbits); i++)
        dst[i] |= src[i];
}
