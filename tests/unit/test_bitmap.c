/*
 * Page bitmaps: single-bit operations, set_range at every head/tail
 * alignment, count and next_set ignoring garbage past nbits, or, clear_all;
 * then a randomized comparison against a plain bool array.
 */
#include <stdbool.h>
#include <string.h>

#include "check.h"
#include "util/bitmap.h"

#define GUARD 0xA5A5A5A5A5A5A5A5ull
#define MAXW  80 /* words in the scratch maps (5120 bits) */

static void single_bits(void)
{
    lm_word m[3] = {0, 0, 0};
    lm_bit_set(m, 0);
    lm_bit_set(m, 63);
    lm_bit_set(m, 64);
    lm_bit_set(m, 127);
    lm_bit_set(m, 128);
    CHECK_EQ_U64(m[0], 0x8000000000000001ull);
    CHECK_EQ_U64(m[1], 0x8000000000000001ull);
    CHECK_EQ_U64(m[2], 1);
    CHECK(lm_bit_test(m, 0) && lm_bit_test(m, 63) && lm_bit_test(m, 64));
    CHECK(lm_bit_test(m, 127) && lm_bit_test(m, 128));
    CHECK(!lm_bit_test(m, 1) && !lm_bit_test(m, 62) && !lm_bit_test(m, 65));
    CHECK(!lm_bit_test(m, 129) && !lm_bit_test(m, 191));
    lm_bit_set(m, 0); /* idempotent */
    CHECK_EQ_U64(m[0], 0x8000000000000001ull);
    lm_bit_clear(m, 63);
    CHECK_EQ_U64(m[0], 1);
    lm_bit_clear(m, 63); /* idempotent */
    CHECK_EQ_U64(m[0], 1);
    lm_bit_clear(m, 64);
    CHECK_EQ_U64(m[1], 0x8000000000000000ull);
    CHECK(!lm_bit_test(m, 64) && lm_bit_test(m, 127));
    lm_bit_set_atomic(m, 65);
    lm_bit_set_atomic(m, 191);
    CHECK_EQ_U64(m[1], 0x8000000000000002ull);
    CHECK_EQ_U64(m[2], 0x8000000000000001ull);

    lm_word *n = lm_bitmap_new(0); /* a valid (one-word) map even for 0 bits */
    CHECK(n != NULL);
    CHECK_EQ_U64(lm_bitmap_count(n, 0), 0);
    CHECK_EQ_U64(lm_bitmap_next_set(n, 0, 0), 0);
    lm_bitmap_free(n);
    n = lm_bitmap_new(4097);
    CHECK(n != NULL);
    for (uint64_t i = 0; i < LM_BITMAP_WORDS(4097); i++)
        CHECK_EQ_U64(n[i], 0);
    lm_bitmap_free(n);
    CHECK_EQ_U64(LM_BITMAP_WORDS(0), 0);
    CHECK_EQ_U64(LM_BITMAP_WORDS(1), 1);
    CHECK_EQ_U64(LM_BITMAP_WORDS(64), 1);
    CHECK_EQ_U64(LM_BITMAP_WORDS(65), 2);
}

/* clear_range, every start in [0, 192) and count in [0, 200) over a full
 * map: exactly [start, start+count) becomes clear, the guard word stays. */
static void clear_range_exhaustive(void)
{
    lm_word m[8];
    for (uint64_t start = 0; start < 192; start++)
        for (uint64_t count = 0; count < 200; count++) {
            memset(m, 0xff, sizeof(m));
            m[7] = GUARD;
            lm_bitmap_clear_range(m, start, count);
            bool ok = m[7] == GUARD;
            for (uint64_t b = 0; b < 7 * 64 && ok; b++)
                ok = lm_bit_test(m, b) == !(b >= start && b < start + count);
            if (!ok) {
                fprintf(stderr, "clear_range(start %llu, count %llu) wrong\n",
                        (unsigned long long)start, (unsigned long long)count);
                lm_test_failures++;
                return;
            }
        }
}

/* Every start in [0, 192) and count in [0, 200): exactly [start, start+count)
 * becomes set, bits already set stay, nothing else (guard words included)
 * changes. */
static void set_range_exhaustive(void)
{
    lm_word m[8];
    for (uint64_t start = 0; start < 192; start++) {
        for (uint64_t count = 0; count < 200; count++) {
            for (int pre = 0; pre < 2; pre++) {
                /* pre = 1: a few bits set beforehand, inside and outside. */
                lm_word init[8] = {0};
                if (pre) {
                    init[0] = 0x8000000000000011ull;
                    init[2] = 0x0000000100000000ull;
                    init[5] = 0x2ull;
                }
                init[7] = GUARD;
                memcpy(m, init, sizeof(m));
                lm_bitmap_set_range(m, start, count);
                bool ok = m[7] == GUARD;
                for (uint64_t b = 0; b < 7 * 64 && ok; b++) {
                    bool want = (b >= start && b < start + count) || lm_bit_test(init, b);
                    ok = lm_bit_test(m, b) == want;
                }
                if (!ok) {
                    fprintf(stderr, "set_range(start %llu, count %llu, pre %d) wrong\n",
                            (unsigned long long)start, (unsigned long long)count, pre);
                    lm_test_failures++;
                    return;
                }
            }
        }
    }
    /* Large aligned and unaligned ranges. */
    lm_word big[MAXW + 1];
    memset(big, 0, sizeof(big));
    big[MAXW] = GUARD;
    lm_bitmap_set_range(big, 0, MAXW * 64);
    for (int i = 0; i < MAXW; i++)
        CHECK_EQ_U64(big[i], ~0ull);
    CHECK_EQ_U64(big[MAXW], GUARD);
    memset(big, 0, sizeof(big));
    big[MAXW] = GUARD;
    lm_bitmap_set_range(big, 63, MAXW * 64 - 64); /* 63 .. MAXW*64-2 */
    CHECK_EQ_U64(big[0], 0x8000000000000000ull);
    for (int i = 1; i < MAXW - 1; i++)
        CHECK_EQ_U64(big[i], ~0ull);
    CHECK_EQ_U64(big[MAXW - 1], 0x7FFFFFFFFFFFFFFFull);
    CHECK_EQ_U64(big[MAXW], GUARD);
    CHECK_EQ_U64(lm_bitmap_count(big, MAXW * 64), MAXW * 64 - 64);
}

/* Bits past nbits in the last word are garbage: count and next_set ignore them. */
static void tail_garbage(void)
{
    static const uint64_t sizes[] = {1, 2, 63, 64, 65, 100, 127, 128, 129, 1000, 4097};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint64_t nbits = sizes[s], words = LM_BITMAP_WORDS(nbits);
        lm_word m[MAXW + 1];
        memset(m, 0, sizeof(m));
        m[words] = ~0ull; /* the word after the map: must never be read as ours */
        if (nbits % 64)
            m[words - 1] = ~0ull << (nbits % 64);
        CHECK_EQ_U64(lm_bitmap_count(m, nbits), 0);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, 0), nbits);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, nbits - 1), nbits);
        lm_bit_set(m, nbits - 1);
        CHECK_EQ_U64(lm_bitmap_count(m, nbits), 1);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, 0), nbits - 1);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, nbits - 1), nbits - 1);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, nbits), nbits);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, nbits + 1), nbits);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, UINT64_MAX), nbits);
        lm_bit_set(m, 0);
        CHECK_EQ_U64(lm_bitmap_count(m, nbits), nbits == 1 ? 1 : 2);
        CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, 0), 0);
        if (nbits > 1)
            CHECK_EQ_U64(lm_bitmap_next_set(m, nbits, 1), nbits - 1);
        /* clear_all clears the map's words and nothing after them. */
        lm_bitmap_clear_all(m, nbits);
        for (uint64_t i = 0; i < words; i++)
            CHECK_EQ_U64(m[i], 0);
        CHECK_EQ_U64(m[words], ~0ull);
    }
}

static void next_set_cases(void)
{
    lm_word m[4] = {0, 0, 0, 0};
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 0), 256); /* empty */
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 255), 256);
    lm_bit_set(m, 5);
    lm_bit_set(m, 70);
    lm_bit_set(m, 255);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 0), 5);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 5), 5);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 6), 70); /* from inside a word */
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 63), 70);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 64), 70);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 70), 70);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 71), 255);  /* across empty words */
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 255), 255); /* last bit */
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 256), 256); /* beyond nbits */
    CHECK_EQ_U64(lm_bitmap_next_set(m, 256, 1000), 256);
    /* A smaller nbits treats later set bits as absent. */
    CHECK_EQ_U64(lm_bitmap_next_set(m, 70, 6), 70);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 71, 6), 70);
    CHECK_EQ_U64(lm_bitmap_next_set(m, 200, 71), 200);
    /* Iterating visits exactly the set bits. */
    uint64_t seen[4], n = 0;
    for (uint64_t b = lm_bitmap_next_set(m, 256, 0); b < 256; b = lm_bitmap_next_set(m, 256, b + 1))
        if (n < 4)
            seen[n++] = b;
    CHECK_EQ_U64(n, 3);
    CHECK(n == 3 && seen[0] == 5 && seen[1] == 70 && seen[2] == 255);
}

struct seen {
    uint64_t bits[256], n;
};

static void note_bit(void *opaque, uint64_t bit)
{
    struct seen *s = opaque;
    if (s->n < 256)
        s->bits[s->n] = bit;
    s->n++;
}

/* next_clear mirrors next_set; set_range_atomic sets exactly the range,
 * keeping bits around it, whatever its alignment. */
static void next_clear_and_atomic_ranges(void)
{
    lm_word m[4];
    memset(m, 0xff, sizeof(m));
    CHECK_EQ_U64(lm_bitmap_next_clear(m, 256, 0), 256); /* full */
    lm_bit_clear(m, 5);
    lm_bit_clear(m, 70);
    lm_bit_clear(m, 255);
    CHECK_EQ_U64(lm_bitmap_next_clear(m, 256, 0), 5);
    CHECK_EQ_U64(lm_bitmap_next_clear(m, 256, 6), 70);
    CHECK_EQ_U64(lm_bitmap_next_clear(m, 256, 71), 255);
    CHECK_EQ_U64(lm_bitmap_next_clear(m, 200, 71), 200); /* clear bits past nbits do not count */
    CHECK_EQ_U64(lm_bitmap_next_clear(m, 256, 256), 256);
    for (uint64_t start = 0; start < 200; start += 7)
        for (uint64_t count = 0; start + count <= 256; count += 13) {
            lm_word a[4] = {0x5555555555555555ull, 0, 0x8000000000000001ull, 0};
            lm_word b[4];
            memcpy(b, a, sizeof(a));
            lm_word before[4];
            memcpy(before, a, sizeof(a));
            lm_bitmap_set_range(a, start, count);
            struct seen s = {0};
            lm_bitmap_set_range_atomic(b, start, count, note_bit, &s);
            CHECK(memcmp(a, b, sizeof(a)) == 0);
            /* Exactly the range's bits that were set, in order. */
            uint64_t expect = 0;
            for (uint64_t bit = start; bit < start + count; bit++)
                if (lm_bit_test(before, bit)) {
                    CHECK(expect < s.n && s.bits[expect] == bit);
                    expect++;
                }
            CHECK_EQ_U64(s.n, expect);
        }
}

static void or_cases(void)
{
    lm_word a[3] = {0x1, 0x0, 0xF0}, b[3] = {0x2, 0x8000000000000000ull, 0x0F};
    lm_word guard_a[4] = {0x1, 0, 0, GUARD};
    lm_bitmap_or(a, b, 192);
    CHECK_EQ_U64(a[0], 0x3);
    CHECK_EQ_U64(a[1], 0x8000000000000000ull);
    CHECK_EQ_U64(a[2], 0xFF);
    CHECK_EQ_U64(b[0], 0x2); /* src untouched */
    lm_word src[4] = {~0ull, ~0ull, ~0ull, ~0ull};
    lm_bitmap_or(guard_a, src, 65); /* two words, not three */
    CHECK_EQ_U64(guard_a[0], ~0ull);
    CHECK_EQ_U64(guard_a[1], ~0ull);
    CHECK_EQ_U64(guard_a[2], 0);
    CHECK_EQ_U64(guard_a[3], GUARD);
    CHECK_EQ_U64(lm_bitmap_count(guard_a, 65), 65);
}

/* Randomized operations against a bool array, several sizes. */
static void randomized(void)
{
    static const uint64_t sizes[] = {1, 63, 64, 65, 1000, 4097};
    unsigned long long seed = 0xB17B17;
    static bool ref[MAXW * 64], ref2[MAXW * 64];
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint64_t nbits = sizes[s], words = LM_BITMAP_WORDS(nbits);
        lm_word *m = lm_bitmap_new(nbits), *m2 = lm_bitmap_new(nbits);
        CHECK(m && m2);
        if (!m || !m2)
            return;
        memset(ref, 0, sizeof(ref));
        memset(ref2, 0, sizeof(ref2));
        unsigned iters = nbits >= 1000 ? 2000 : 800;
        bool failed = false;
        for (unsigned it = 0; it < iters && !failed; it++) {
            unsigned op = (unsigned)(test_rand(&seed) % 10);
            uint64_t a = test_rand(&seed) % nbits;
            switch (op) {
            case 0:
            case 1:
                lm_bit_set(m, a);
                ref[a] = true;
                break;
            case 2:
            case 3:
                lm_bit_clear(m, a);
                ref[a] = false;
                break;
            case 4: {
                uint64_t max = nbits - a, c = test_rand(&seed) % (max + 1);
                if (test_rand(&seed) % 4 == 0) /* short ranges often */
                    c = c % 70 < max ? c % 70 : max;
                lm_bitmap_set_range(m, a, c);
                for (uint64_t i = a; i < a + c; i++)
                    ref[i] = true;
                break;
            }
            case 5: /* garbage past nbits in the last word */
                if (nbits % 64)
                    m[words - 1] |= test_rand(&seed) << (nbits % 64);
                break;
            case 6: /* build m2 and or it in */
                for (unsigned k = 0; k < 5; k++) {
                    uint64_t b = test_rand(&seed) % nbits;
                    lm_bit_set(m2, b);
                    ref2[b] = true;
                }
                if (nbits % 64 && test_rand(&seed) % 2)
                    m2[words - 1] |= test_rand(&seed) << (nbits % 64);
                lm_bitmap_or(m, m2, nbits);
                for (uint64_t i = 0; i < nbits; i++)
                    ref[i] = ref[i] || ref2[i];
                break;
            case 7:
                if (test_rand(&seed) % 8 == 0) {
                    lm_bitmap_clear_all(m, nbits);
                    memset(ref, 0, sizeof(ref));
                }
                if (test_rand(&seed) % 8 == 0) {
                    lm_bitmap_clear_all(m2, nbits);
                    memset(ref2, 0, sizeof(ref2));
                }
                break;
            default: /* a sweep of the other clears */
                for (uint64_t i = a; i < nbits && i < a + 40; i++) {
                    lm_bit_clear(m, i);
                    ref[i] = false;
                }
                break;
            }
            /* Compare everything. */
            uint64_t want_count = 0;
            for (uint64_t i = 0; i < nbits; i++) {
                want_count += ref[i];
                if (lm_bit_test(m, i) != ref[i]) {
                    fprintf(stderr, "size %llu iter %u op %u: bit %llu is %d, want %d\n",
                            (unsigned long long)nbits, it, op, (unsigned long long)i,
                            lm_bit_test(m, i), ref[i]);
                    failed = true;
                    break;
                }
            }
            if (lm_bitmap_count(m, nbits) != want_count) {
                fprintf(stderr, "size %llu iter %u: count %llu, want %llu\n",
                        (unsigned long long)nbits, it,
                        (unsigned long long)lm_bitmap_count(m, nbits),
                        (unsigned long long)want_count);
                failed = true;
            }
            /* next_set from a few random points and a full walk now and then. */
            for (unsigned k = 0; k < 4 && !failed; k++) {
                uint64_t from = test_rand(&seed) % (nbits + 3), want = from;
                while (want < nbits && !ref[want])
                    want++;
                if (want > nbits)
                    want = nbits;
                uint64_t got = lm_bitmap_next_set(m, nbits, from);
                if (got != want) {
                    fprintf(stderr, "size %llu iter %u: next_set(%llu) = %llu, want %llu\n",
                            (unsigned long long)nbits, it, (unsigned long long)from,
                            (unsigned long long)got, (unsigned long long)want);
                    failed = true;
                }
            }
            if (it % 50 == 0 && !failed) {
                uint64_t walked = 0;
                for (uint64_t b = lm_bitmap_next_set(m, nbits, 0); b < nbits;
                     b = lm_bitmap_next_set(m, nbits, b + 1)) {
                    if (!ref[b]) {
                        failed = true;
                        break;
                    }
                    walked++;
                }
                if (walked != want_count) {
                    fprintf(stderr, "size %llu iter %u: walk found %llu bits, want %llu\n",
                            (unsigned long long)nbits, it, (unsigned long long)walked,
                            (unsigned long long)want_count);
                    failed = true;
                }
            }
        }
        if (failed)
            lm_test_failures++;
        lm_bitmap_free(m);
        lm_bitmap_free(m2);
    }
}

/* Range counts against a plain loop, for every range of a bitmap with
 * bits set in a pattern that crosses word boundaries. */
static void count_range_exhaustive(void)
{
    enum { NBITS = 200 };
    lm_word *m = lm_bitmap_new(NBITS);
    CHECK(m != NULL);
    if (!m)
        return;
    unsigned long long seed = 0xC0C0;
    for (uint64_t i = 0; i < NBITS; i++)
        if (test_rand(&seed) % 3)
            lm_bit_set(m, i);
    uint64_t bad = 0;
    for (uint64_t a = 0; a <= NBITS; a++)
        for (uint64_t b = a; b <= NBITS; b++) {
            uint64_t want = 0;
            for (uint64_t i = a; i < b; i++)
                want += lm_bit_test(m, i);
            bad += lm_bitmap_count_range(m, a, b) != want;
        }
    CHECK_EQ_U64(bad, 0);
    CHECK_EQ_U64(lm_bitmap_count_range(m, 0, NBITS), lm_bitmap_count(m, NBITS));
    CHECK_EQ_U64(lm_bitmap_count_range(m, 5, 3), 0);
    lm_bitmap_free(m);
}

int main(void)
{
    single_bits();
    set_range_exhaustive();
    clear_range_exhaustive();
    tail_garbage();
    next_set_cases();
    next_clear_and_atomic_ranges();
    or_cases();
    randomized();
    count_range_exhaustive();
    TEST_DONE();
}
