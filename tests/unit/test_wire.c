/*
 * Wire protocol: round trips of every encoder, rejection of every malformed
 * field (each its own check, with a reason written), offsets, then random
 * input and single-byte corruption of valid encodings fed to every decoder.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "proto/wire.h"
#include "transport/conn.h"

#define PS 4096u

static char why[256];

/* Runs a decoder call expecting rejection with a reason; code 0 = any. */
#define REJECTS(call, code)                                                                        \
    do {                                                                                           \
        memset(why, 0, sizeof(why));                                                               \
        int r_ = (call);                                                                           \
        if (r_ >= 0 || !why[0] || ((code) && r_ != (code))) {                                      \
            fprintf(stderr, "%s:%d: expected rejection (%d) of %s, got %d '%s'\n", __FILE__,       \
                    __LINE__, (code), #call, r_, why);                                             \
            lm_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define ACCEPTS(call)                                                                              \
    do {                                                                                           \
        memset(why, 0, sizeof(why));                                                               \
        int r_ = (call);                                                                           \
        if (r_ != 0) {                                                                             \
            fprintf(stderr, "%s:%d: %s rejected (%d): %s\n", __FILE__, __LINE__, #call, r_, why);  \
            lm_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

/* ---- frames ---------------------------------------------------------------- */

static void frames(void)
{
    uint8_t b[LM_FRAME_HDR_SIZE];
    lm_frame f;
    for (uint16_t t = 1; t < LM_MSG__COUNT; t++) {
        static const uint32_t lens[] = {0, 1, 4096, 0x01020304, LM_FRAME_MAX_LEN};
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            lm_frame_encode(b, t, lens[i]);
            memset(&f, 0xff, sizeof(f));
            ACCEPTS(lm_frame_decode(b, &f, why, sizeof(why)));
            CHECK_EQ_U64(f.type, t);
            CHECK_EQ_U64(f.length, lens[i]);
        }
        CHECK(strcmp(lm_msg_name(t), "UNKNOWN") != 0);
    }
    CHECK(strcmp(lm_msg_name(0), "UNKNOWN") == 0);
    CHECK(strcmp(lm_msg_name(LM_MSG__COUNT), "UNKNOWN") == 0);
    CHECK(strcmp(lm_msg_name(0xffff), "UNKNOWN") == 0);
    CHECK(strcmp(lm_msg_name(LM_MSG_PAGES), "PAGES") == 0);
    /* The exact bytes: "LMIG", version 5, type, length, reserved. */
    lm_frame_encode(b, LM_MSG_PAGES, 0x11223344);
    static const uint8_t want[LM_FRAME_HDR_SIZE] = {'L',  'M',  'I',  'G',  0, 5, 0, 3,
                                                    0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0};
    CHECK(memcmp(b, want, sizeof(want)) == 0);

    uint8_t x[LM_FRAME_HDR_SIZE];
    memcpy(x, b, sizeof(x));
    x[0] ^= 1;
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG); /* magic */
    memcpy(x, b, sizeof(x));
    lm_put_be32(x, 0);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG);
    memcpy(x, b, sizeof(x));
    lm_put_be16(x + 4, 4); /* a peer of the release before zero ranges */
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EPROTO); /* version */
    CHECK(strstr(why, "protocol version 4, this livemig speaks 5") != NULL);
    memcpy(x, b, sizeof(x));
    lm_put_be16(x + 4, 0);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EPROTO);
    memcpy(x, b, sizeof(x));
    lm_put_be16(x + 4, 0x0100);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EPROTO);
    memcpy(x, b, sizeof(x));
    lm_put_be16(x + 6, 0);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG); /* type 0 */
    memcpy(x, b, sizeof(x));
    lm_put_be16(x + 6, LM_MSG__COUNT);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG); /* type too big */
    memcpy(x, b, sizeof(x));
    lm_put_be16(x + 6, 0xffff);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG);
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 8, LM_FRAME_MAX_LEN + 1);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG); /* length */
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 8, UINT32_MAX);
    REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG);
    for (int i = 12; i < 16; i++) { /* reserved */
        memcpy(x, b, sizeof(x));
        x[i] = 0x80;
        REJECTS(lm_frame_decode(x, &f, why, sizeof(why)), -EBADMSG);
    }
    /* A zero-length reason buffer is allowed and never written. */
    memcpy(x, b, sizeof(x));
    x[0] ^= 1;
    char untouched[4] = "abc";
    CHECK(lm_frame_decode(x, &f, untouched, 0) < 0);
    CHECK(strcmp(untouched, "abc") == 0);
}

/* ---- hello ------------------------------------------------------------------ */

static void make_hello(lm_hello *h, uint32_t nblocks, uint32_t page_size)
{
    memset(h, 0, sizeof(*h));
    h->page_size = page_size;
    h->flags = LM_HELLO_VERIFY;
    h->nblocks = nblocks;
    for (uint32_t i = 0; i < nblocks; i++) {
        h->blocks[i].id = i * 7 + 3;
        h->blocks[i].len = (uint64_t)page_size * (1 + i * 13);
        snprintf(h->blocks[i].name, sizeof(h->blocks[i].name), "block-%u", i);
        h->ram_total += h->blocks[i].len;
    }
}

static bool hello_equal(const lm_hello *a, const lm_hello *b)
{
    if (a->page_size != b->page_size || a->flags != b->flags || a->nblocks != b->nblocks ||
        a->ram_total != b->ram_total || a->nchannels != b->nchannels ||
        a->compress != b->compress || memcmp(a->uuid, b->uuid, 16) != 0)
        return false;
    for (uint32_t i = 0; i < a->nblocks; i++)
        if (a->blocks[i].id != b->blocks[i].id || a->blocks[i].len != b->blocks[i].len ||
            strncmp(a->blocks[i].name, b->blocks[i].name, LM_BLOCK_NAME_MAX) != 0)
            return false;
    return true;
}

static uint8_t hbuf[LM_HELLO_FIXED_SIZE + (LM_MAX_BLOCKS + 2) * LM_HELLO_BLOCK_SIZE];
static uint8_t hx[sizeof(hbuf)];

static void hello_roundtrip(void)
{
    static lm_hello h, d;
    CHECK_EQ_U64(lm_hello_size(1), LM_HELLO_FIXED_SIZE + LM_HELLO_BLOCK_SIZE);
    CHECK_EQ_U64(lm_hello_size(LM_MAX_BLOCKS), 48 + 48 * LM_MAX_BLOCKS);

    make_hello(&h, 1, PS);
    lm_hello_encode(&h, hbuf);
    ACCEPTS(lm_hello_decode(hbuf, lm_hello_size(1), &d, why, sizeof(why)));
    CHECK(hello_equal(&h, &d));

    make_hello(&h, LM_MAX_BLOCKS, PS);
    h.flags = 0;
    lm_hello_encode(&h, hbuf);
    ACCEPTS(lm_hello_decode(hbuf, lm_hello_size(LM_MAX_BLOCKS), &d, why, sizeof(why)));
    CHECK(hello_equal(&h, &d));
    CHECK_EQ_U64(d.nblocks, LM_MAX_BLOCKS);
    CHECK_EQ_U64(d.blocks[LM_MAX_BLOCKS - 1].id, (LM_MAX_BLOCKS - 1) * 7 + 3);

    /* Every legal page size, big block lengths, names of 1 and 31 chars
     * (an empty name is refused: hello_rejects). */
    for (uint32_t ps = 4096; ps <= (1u << 21); ps <<= 1) {
        make_hello(&h, 3, ps);
        snprintf(h.blocks[0].name, sizeof(h.blocks[0].name), "a");
        memset(h.blocks[1].name, 'n', LM_BLOCK_NAME_MAX - 1);
        h.blocks[1].name[LM_BLOCK_NAME_MAX - 1] = '\0';
        h.ram_total -= h.blocks[2].len;
        h.blocks[2].len = 1ull << 46; /* the largest accepted */
        h.ram_total += h.blocks[2].len;
        lm_hello_encode(&h, hbuf);
        ACCEPTS(lm_hello_decode(hbuf, lm_hello_size(3), &d, why, sizeof(why)));
        CHECK(hello_equal(&h, &d));
        CHECK(!strcmp(d.blocks[0].name, "a"));
        CHECK_EQ_U64(strlen(d.blocks[1].name), LM_BLOCK_NAME_MAX - 1);
    }
    /* A name filling all 32 bytes (no NUL) is encoded truncated to 31. */
    make_hello(&h, 1, PS);
    memset(h.blocks[0].name, 'z', LM_BLOCK_NAME_MAX);
    lm_hello_encode(&h, hbuf);
    ACCEPTS(lm_hello_decode(hbuf, lm_hello_size(1), &d, why, sizeof(why)));
    CHECK_EQ_U64(strnlen(d.blocks[0].name, LM_BLOCK_NAME_MAX), LM_BLOCK_NAME_MAX - 1);
    /* The encoder writes zeros in every reserved field and the name padding. */
    make_hello(&h, 2, PS);
    memset(hbuf, 0xee, sizeof(hbuf));
    lm_hello_encode(&h, hbuf);
    CHECK_EQ_U64(lm_get_be32(hbuf + 12), 0);
    CHECK_EQ_U64(lm_get_be64(hbuf + 24), 0);
    for (int i = 0; i < 2; i++) {
        const uint8_t *b = hbuf + LM_HELLO_FIXED_SIZE + i * LM_HELLO_BLOCK_SIZE;
        CHECK_EQ_U64(lm_get_be32(b + 4), 0);
        for (size_t k = strlen(h.blocks[i].name); k < LM_BLOCK_NAME_MAX; k++)
            CHECK_EQ_U64(b[16 + k], 0);
    }
    CHECK_EQ_U64(hbuf[lm_hello_size(2)], 0xee); /* nothing written past the end */
}

/* Encodes a 2-block hello into hbuf and copies it to hx for corruption. */
static size_t hello_base(void)
{
    static lm_hello h;
    make_hello(&h, 2, PS);
    lm_hello_encode(&h, hbuf);
    memcpy(hx, hbuf, lm_hello_size(2));
    return lm_hello_size(2);
}

#define HB(i) (hx + LM_HELLO_FIXED_SIZE + (i)*LM_HELLO_BLOCK_SIZE)

static void hello_rejects(void)
{
    static lm_hello d;
    size_t n = hello_base();
    ACCEPTS(lm_hello_decode(hx, n, &d, why, sizeof(why)));

    /* Block names: empty, unprintable, or the same twice. */
    n = hello_base();
    HB(1)[16] = 0;
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    n = hello_base();
    HB(1)[17] = '\t';
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    n = hello_base();
    memcpy(HB(1) + 16, HB(0) + 16, LM_BLOCK_NAME_MAX);
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    CHECK(strstr(why, "repeats block name") != NULL);
    n = hello_base();

    /* Truncated: every length below the fixed part, and a partial block. */
    for (size_t l = 0; l < LM_HELLO_FIXED_SIZE; l++)
        REJECTS(lm_hello_decode(hx, l, &d, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_hello_decode(hx, n - 1, &d, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_hello_decode(hx, n - LM_HELLO_BLOCK_SIZE, &d, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_hello_decode(hx, n + 1, &d, why, sizeof(why)), -EBADMSG); /* too long */
    REJECTS(lm_hello_decode(hx, n + LM_HELLO_BLOCK_SIZE, &d, why, sizeof(why)), -EBADMSG);

    /* Page size. */
    static const uint32_t bad_ps[] = {
        0, 1, 2048, 4095, 4097, 12288, 3u << 12, 1u << 22, (1u << 21) + 4096, 1u << 31, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_ps) / sizeof(bad_ps[0]); i++) {
        n = hello_base();
        lm_put_be32(hx, bad_ps[i]);
        REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    }
    /* Flags: RECOVER is known (version 2), every bit above it is not. */
    n = hello_base();
    lm_put_be32(hx + 4, LM_HELLO_VERIFY | LM_HELLO_RECOVER);
    CHECK(lm_hello_decode(hx, n, &d, why, sizeof(why)) == 0 && d.flags & LM_HELLO_RECOVER);
    n = hello_base();
    lm_put_be32(hx + 4, LM_HELLO_COMMITTED);
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    n = hello_base();
    lm_put_be32(hx + 4, LM_HELLO_RECOVER | LM_HELLO_COMMITTED);
    CHECK(lm_hello_decode(hx, n, &d, why, sizeof(why)) == 0);
    for (int bit = 5; bit < 32; bit++) {
        n = hello_base();
        lm_put_be32(hx + 4, LM_HELLO_VERIFY | 1u << bit);
        REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    }
    /* Channels: 0..LM_MAX_CHANNELS accepted, more rejected. */
    static const uint32_t bad_ch[] = {LM_MAX_CHANNELS + 1, 1000, 1u << 24, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_ch) / sizeof(bad_ch[0]); i++) {
        n = hello_base();
        lm_put_be32(hx + 12, bad_ch[i]);
        REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    }
    n = hello_base();
    lm_put_be32(hx + 12, LM_MAX_CHANNELS);
    ACCEPTS(lm_hello_decode(hx, n, &d, why, sizeof(why)));
    CHECK_EQ_U64(d.nchannels, LM_MAX_CHANNELS);
    /* Compression method: 0..3 accepted, unknown rejected. */
    for (uint32_t m = 0; m < 8; m++) {
        n = hello_base();
        lm_put_be32(hx + 24, m);
        if (m < LM_COMPRESSION__COUNT)
            ACCEPTS(lm_hello_decode(hx, n, &d, why, sizeof(why)));
        else
            REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    }
    /* Reserved u32 at 28, every byte. */
    for (int off = 28; off < 32; off++) {
        n = hello_base();
        hx[off] = 0x40;
        REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    }
    /* The uuid is carried as is. */
    n = hello_base();
    for (int i = 0; i < 16; i++)
        hx[32 + i] = (uint8_t)(0xc0 + i);
    ACCEPTS(lm_hello_decode(hx, n, &d, why, sizeof(why)));
    CHECK(d.uuid[0] == 0xc0 && d.uuid[15] == 0xcf);
    /* nblocks 0, LM_MAX_BLOCKS + 1 and huge, with a length that would match. */
    n = hello_base();
    lm_put_be32(hx + 8, 0);
    REJECTS(lm_hello_decode(hx, LM_HELLO_FIXED_SIZE, &d, why, sizeof(why)), -EBADMSG);
    {
        static lm_hello big;
        make_hello(&big, LM_MAX_BLOCKS, PS);
        lm_hello_encode(&big, hx);
        /* Append a 65th valid block and fix the count and the total. */
        uint8_t *b = hx + lm_hello_size(LM_MAX_BLOCKS);
        memset(b, 0, LM_HELLO_BLOCK_SIZE);
        lm_put_be32(b, 9999);
        lm_put_be64(b + 8, PS);
        lm_put_be32(hx + 8, LM_MAX_BLOCKS + 1);
        lm_put_be64(hx + 16, big.ram_total + PS);
        REJECTS(lm_hello_decode(hx, lm_hello_size(LM_MAX_BLOCKS + 1), &d, why, sizeof(why)),
                -EBADMSG);
        lm_put_be32(hx + 8, UINT32_MAX);
        REJECTS(lm_hello_decode(hx, lm_hello_size(LM_MAX_BLOCKS + 1), &d, why, sizeof(why)),
                -EBADMSG);
    }
    /* Length not matching nblocks: says 3, carries 2; says 1, carries 2. */
    n = hello_base();
    lm_put_be32(hx + 8, 3);
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    n = hello_base();
    lm_put_be32(hx + 8, 1);
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);

    for (int blk = 0; blk < 2; blk++) {
        /* Block length 0, not a page multiple, over 2^46, huge. */
        static const uint64_t bad_len[] = {
            0, 1, PS - 1, PS + 1, PS * 3 + 512, (1ull << 46) + PS, UINT64_MAX};
        for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
            n = hello_base();
            uint64_t old = lm_get_be64(HB(blk) + 8);
            lm_put_be64(HB(blk) + 8, bad_len[i]);
            /* Keep the total consistent so only the length is wrong. */
            lm_put_be64(hx + 16, lm_get_be64(hx + 16) - old + bad_len[i]);
            REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
        }
        /* Block reserved field. */
        for (int off = 4; off < 8; off++) {
            n = hello_base();
            HB(blk)[off] = 0x10;
            REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
        }
        /* Name with no NUL in its 32 bytes. */
        n = hello_base();
        memset(HB(blk) + 16, 'A', LM_BLOCK_NAME_MAX);
        REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
        /* A NUL only in the last byte is fine. */
        n = hello_base();
        memset(HB(blk) + 16, 'A', LM_BLOCK_NAME_MAX - 1);
        ACCEPTS(lm_hello_decode(hx, n, &d, why, sizeof(why)));
        CHECK_EQ_U64(strlen(d.blocks[blk].name), LM_BLOCK_NAME_MAX - 1);
    }
    /* Duplicate block id. */
    n = hello_base();
    lm_put_be32(HB(1), lm_get_be32(HB(0)));
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    {
        /* Duplicate far apart in a full hello. */
        static lm_hello big;
        make_hello(&big, LM_MAX_BLOCKS, PS);
        big.blocks[LM_MAX_BLOCKS - 1].id = big.blocks[0].id;
        lm_hello_encode(&big, hx);
        REJECTS(lm_hello_decode(hx, lm_hello_size(LM_MAX_BLOCKS), &d, why, sizeof(why)), -EBADMSG);
    }
    /* ram_total != sum of the block lengths: off by a page, by one, zero. */
    static const int64_t delta[] = {PS, -(int64_t)PS, 1, -1};
    for (size_t i = 0; i < sizeof(delta) / sizeof(delta[0]); i++) {
        n = hello_base();
        lm_put_be64(hx + 16, lm_get_be64(hx + 16) + (uint64_t)delta[i]);
        REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
    }
    n = hello_base();
    lm_put_be64(hx + 16, 0);
    REJECTS(lm_hello_decode(hx, n, &d, why, sizeof(why)), -EBADMSG);
}

/* ---- packets ---------------------------------------------------------------- */

static lm_packet_hdr make_packet(uint32_t normal, uint32_t zero, uint32_t alloc)
{
    lm_packet_hdr p = {.flags = 0,
                       .pages_alloc = alloc,
                       .normal_pages = normal,
                       .zero_pages = zero,
                       .block_id = 0xC0FFEE,
                       .payload_size = (uint64_t)normal * PS,
                       .packet_num = 0x0102030405060708ull};
    return p;
}

static bool packet_equal(const lm_packet_hdr *a, const lm_packet_hdr *b)
{
    return a->flags == b->flags && a->pages_alloc == b->pages_alloc &&
           a->normal_pages == b->normal_pages && a->zero_pages == b->zero_pages &&
           a->block_id == b->block_id && a->payload_size == b->payload_size &&
           a->packet_num == b->packet_num;
}

/* SYNC and COMPRESSED packets, and the channel hello. */
static void packet_flags(void)
{
    uint8_t b[LM_PACKET_HDR_SIZE];
    lm_packet_hdr p, d;
    /* SYNC: no pages, no payload, no other flag. */
    p = make_packet(0, 0, LM_PACKET_MAX_PAGES);
    p.flags = LM_PACKET_FLAG_SYNC;
    lm_packet_encode(&p, b);
    ACCEPTS(lm_packet_decode(b, PS, 0, &d, why, sizeof(why)));
    CHECK_EQ_U64(d.flags, LM_PACKET_FLAG_SYNC);
    p = make_packet(1, 0, 4);
    p.flags = LM_PACKET_FLAG_SYNC;
    lm_packet_encode(&p, b);
    REJECTS(lm_packet_decode(b, PS, 0, &d, why, sizeof(why)), -EBADMSG);
    p = make_packet(0, 1, 4);
    p.flags = LM_PACKET_FLAG_SYNC;
    lm_packet_encode(&p, b);
    REJECTS(lm_packet_decode(b, PS, 0, &d, why, sizeof(why)), -EBADMSG);
    p = make_packet(0, 0, 4);
    p.flags = LM_PACKET_FLAG_SYNC | LM_PACKET_FLAG_COMPRESSED;
    lm_packet_encode(&p, b);
    REJECTS(lm_packet_decode(b, PS, 1 << 20, &d, why, sizeof(why)), -EBADMSG);

    /* COMPRESSED: only when negotiated, 1..bound bytes, at least one normal page. */
    p = make_packet(8, 2, 16);
    p.flags = LM_PACKET_FLAG_COMPRESSED;
    p.payload_size = 1234;
    lm_packet_encode(&p, b);
    REJECTS(lm_packet_decode(b, PS, 0, &d, why, sizeof(why)), -EBADMSG);
    ACCEPTS(lm_packet_decode(b, PS, 1 << 20, &d, why, sizeof(why)));
    CHECK_EQ_U64(d.payload_size, 1234);
    REJECTS(lm_packet_decode(b, PS, 1233, &d, why, sizeof(why)), -EBADMSG);
    p.payload_size = 0;
    lm_packet_encode(&p, b);
    REJECTS(lm_packet_decode(b, PS, 1 << 20, &d, why, sizeof(why)), -EBADMSG);
    p = make_packet(0, 3, 16);
    p.flags = LM_PACKET_FLAG_COMPRESSED;
    p.payload_size = 10;
    lm_packet_encode(&p, b);
    REJECTS(lm_packet_decode(b, PS, 1 << 20, &d, why, sizeof(why)), -EBADMSG);
    for (int bit = 2; bit < 32; bit++) {
        p = make_packet(1, 0, 4);
        p.flags = 1u << bit;
        lm_packet_encode(&p, b);
        REJECTS(lm_packet_decode(b, PS, 1 << 20, &d, why, sizeof(why)), -EBADMSG);
    }

    uint8_t cb[LM_CHANNEL_HELLO_SIZE + 4];
    lm_channel_hello ch = {.channel = 63}, dc;
    memset(ch.uuid, 0x5a, 16);
    lm_channel_hello_encode(&ch, cb);
    ACCEPTS(lm_channel_hello_decode(cb, LM_CHANNEL_HELLO_SIZE, &dc, why, sizeof(why)));
    CHECK_EQ_U64(dc.channel, 63);
    CHECK(memcmp(dc.uuid, ch.uuid, 16) == 0);
    REJECTS(lm_channel_hello_decode(cb, LM_CHANNEL_HELLO_SIZE - 1, &dc, why, sizeof(why)),
            -EBADMSG);
    REJECTS(lm_channel_hello_decode(cb, LM_CHANNEL_HELLO_SIZE + 1, &dc, why, sizeof(why)),
            -EBADMSG);
    cb[23] = 1;
    REJECTS(lm_channel_hello_decode(cb, LM_CHANNEL_HELLO_SIZE, &dc, why, sizeof(why)), -EBADMSG);
}

static void packets(void)
{
    uint8_t b[LM_PACKET_HDR_SIZE], x[LM_PACKET_HDR_SIZE];
    lm_packet_hdr p, d;
    static const uint32_t cases[][3] = {
        {0, 0, 1},     {1, 0, 1},     {0, 1, 1},   {64, 64, 128},
        {128, 0, 128}, {0, 128, 128}, {3, 5, 100}, {0, 0, LM_PACKET_MAX_PAGES},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p = make_packet(cases[i][0], cases[i][1], cases[i][2]);
        p.packet_num = i == 0 ? UINT64_MAX : i;
        p.block_id = i == 1 ? UINT32_MAX : (uint32_t)i;
        memset(b, 0xee, sizeof(b));
        lm_packet_encode(&p, b);
        memset(&d, 0, sizeof(d));
        ACCEPTS(lm_packet_decode(b, PS, 0, &d, why, sizeof(why)));
        CHECK(packet_equal(&p, &d));
        CHECK_EQ_U64(lm_get_be32(b), LM_PACKET_MAGIC);
        CHECK_EQ_U64(lm_get_be32(b + 4), LM_PACKET_VERSION);
        CHECK_EQ_U64(lm_get_be32(b + 28), 0);
        CHECK_EQ_U64(lm_get_be64(b + 48), 0);
        CHECK_EQ_U64(lm_get_be64(b + 56), 0);
    }
    /* Another page size: payload is counted in that page size. */
    p = make_packet(2, 1, 4);
    p.payload_size = 2ull << 21;
    lm_packet_encode(&p, b);
    ACCEPTS(lm_packet_decode(b, 1u << 21, 0, &d, why, sizeof(why)));
    CHECK(packet_equal(&p, &d));
    REJECTS(lm_packet_decode(b, PS, 0, &d, why, sizeof(why)), -EBADMSG);

    p = make_packet(10, 20, 100);
    lm_packet_encode(&p, b);
#define PKT_REJECT(code) REJECTS(lm_packet_decode(x, PS, 0, &d, why, sizeof(why)), code)
    memcpy(x, b, sizeof(x));
    x[3] ^= 0x20; /* magic */
    PKT_REJECT(-EBADMSG);
    memcpy(x, b, sizeof(x));
    lm_put_be32(x, LM_WIRE_MAGIC); /* frame magic is not packet magic */
    PKT_REJECT(-EBADMSG);
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 4, 2); /* version */
    PKT_REJECT(-EPROTO);
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 4, 0);
    PKT_REJECT(-EPROTO);
    for (int bit = 0; bit < 32; bit++) { /* flags (none negotiated) */
        memcpy(x, b, sizeof(x));
        lm_put_be32(x + 8, 1u << bit);
        PKT_REJECT(-EBADMSG);
    }
    for (int off = 28; off < 32; off++) { /* reserved u32 at 28 */
        memcpy(x, b, sizeof(x));
        x[off] = 1;
        PKT_REJECT(-EBADMSG);
    }
    for (int off = 48; off < 64; off++) { /* reserved u64 at 48, 56 */
        memcpy(x, b, sizeof(x));
        x[off] = 0x80;
        PKT_REJECT(-EBADMSG);
    }
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 12, 0); /* pages_alloc 0 */
    PKT_REJECT(-EBADMSG);
    {
        uint8_t z[LM_PACKET_HDR_SIZE];
        p = make_packet(0, 0, 0);
        lm_packet_encode(&p, z);
        REJECTS(lm_packet_decode(z, PS, 0, &d, why, sizeof(why)), -EBADMSG);
    }
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 12, LM_PACKET_MAX_PAGES + 1);
    PKT_REJECT(-EBADMSG);
    memcpy(x, b, sizeof(x));
    lm_put_be32(x + 12, UINT32_MAX);
    PKT_REJECT(-EBADMSG);
    /* normal + zero > pages_alloc, including sums that wrap in 32 bits. */
    static const uint32_t over[][3] = {
        {51, 50, 100},
        {0, 101, 100},
        {101, 0, 100},
        {128, 1, 128},
        {UINT32_MAX, 1, 128},
        {1, UINT32_MAX, 128},
        {UINT32_MAX, UINT32_MAX, 128},
        {0x80000000u, 0x80000000u, 128},
        {0x80000001u, 0x7FFFFFFFu, 1},
        {2, UINT32_MAX - 1, 4},
        {0, UINT32_MAX, 128},
        {UINT32_MAX, 0, 128},
    };
    for (size_t i = 0; i < sizeof(over) / sizeof(over[0]); i++) {
        p = make_packet(over[i][0], over[i][1], over[i][2]);
        lm_packet_encode(&p, x); /* payload matches normal * PS (in 64 bits) */
        PKT_REJECT(-EBADMSG);
    }
    /* payload_size != normal * page_size. */
    static const uint64_t bad_payload[] = {
        0,         10ull * PS - 1, 10ull * PS + 1,           11ull * PS,
        9ull * PS, UINT64_MAX,     10ull * PS + (1ull << 32)};
    for (size_t i = 0; i < sizeof(bad_payload) / sizeof(bad_payload[0]); i++) {
        memcpy(x, b, sizeof(x));
        lm_put_be64(x + 32, bad_payload[i]);
        PKT_REJECT(-EBADMSG);
    }
    /* A payload that is right only modulo 2^32 (normal * page_size wrapping). */
    {
        lm_packet_hdr q = make_packet(0, 0, 1);
        q.payload_size = 1ull << 32;
        lm_packet_encode(&q, x);
        PKT_REJECT(-EBADMSG);
    }
    /* Zero pages carry no payload. */
    p = make_packet(0, 5, 5);
    p.payload_size = PS;
    lm_packet_encode(&p, x);
    PKT_REJECT(-EBADMSG);
#undef PKT_REJECT

    /* Offsets. */
    const uint64_t blen = 64ull * PS;
    ACCEPTS(lm_packet_check_offset(0, blen, PS, why, sizeof(why)));
    ACCEPTS(lm_packet_check_offset(PS, blen, PS, why, sizeof(why)));
    ACCEPTS(lm_packet_check_offset(blen - PS, blen, PS, why, sizeof(why)));
    ACCEPTS(lm_packet_check_offset(0, PS, PS, why, sizeof(why)));
    REJECTS(lm_packet_check_offset(1, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(PS - 1, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(PS + 8, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(blen - 1, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(blen, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(blen + PS, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(UINT64_MAX - (PS - 1), blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(UINT64_MAX, blen, PS, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_packet_check_offset(0, 0, PS, why, sizeof(why)), -EBADMSG);
    ACCEPTS(lm_packet_check_offset(3ull << 21, 4ull << 21, 1u << 21, why, sizeof(why)));
    REJECTS(lm_packet_check_offset(PS, 4ull << 21, 1u << 21, why, sizeof(why)), -EBADMSG);
}

/* ---- verify, resumed -------------------------------------------------------- */

static void verify_resumed(void)
{
    uint8_t b[LM_VERIFY_SIZE + 8] = {0}, x[LM_VERIFY_SIZE + 8];
    lm_verify_msg c = {.pages = 0x1122334455667788ull}, dc;
    for (int i = 0; i < 16; i++)
        c.digest[i] = (uint8_t)(0xA0 + i);
    lm_verify_encode(&c, b);
    memset(&dc, 0, sizeof(dc));
    ACCEPTS(lm_verify_decode(b, LM_VERIFY_SIZE, &dc, why, sizeof(why)));
    CHECK_EQ_U64(dc.pages, c.pages);
    CHECK(memcmp(dc.digest, c.digest, 16) == 0);
    lm_verify_msg c0 = {.pages = 0};
    lm_verify_encode(&c0, b);
    ACCEPTS(lm_verify_decode(b, LM_VERIFY_SIZE, &dc, why, sizeof(why)));
    CHECK_EQ_U64(dc.pages, 0);

    lm_verify_encode(&c, b);
    static const size_t bad_len[] = {0, 1, LM_VERIFY_SIZE - 1, LM_VERIFY_SIZE + 1,
                                     LM_VERIFY_SIZE + 8};
    for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++)
        REJECTS(lm_verify_decode(b, bad_len[i], &dc, why, sizeof(why)), -EBADMSG);
    for (int off = 24; off < 32; off++) {
        memcpy(x, b, sizeof(x));
        x[off] = 1;
        REJECTS(lm_verify_decode(x, LM_VERIFY_SIZE, &dc, why, sizeof(why)), -EBADMSG);
    }

    uint8_t r[LM_RESUMED_SIZE + 4] = {0}, y[LM_RESUMED_SIZE + 4];
    static const lm_resumed good[] = {
        {0, 0, 0},       {0, 1, 123456789}, {0, 2, UINT64_MAX},
        {-EINVAL, 0, 5}, {-4095, 2, 1},     {-1, 1, 0},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        lm_resumed dr;
        memset(&dr, 0x55, sizeof(dr));
        lm_resumed_encode(&good[i], r);
        ACCEPTS(lm_resumed_decode(r, LM_RESUMED_SIZE, &dr, why, sizeof(why)));
        CHECK_EQ_U64((uint64_t)(int64_t)dr.status, (uint64_t)(int64_t)good[i].status);
        CHECK_EQ_U64(dr.verified, good[i].verified);
        CHECK_EQ_U64(dr.verify_time_us, good[i].verify_time_us);
    }
    lm_resumed dr, rr = {0, 1, 77};
    lm_resumed_encode(&rr, r);
    static const size_t bad_rlen[] = {0, LM_RESUMED_SIZE - 1, LM_RESUMED_SIZE + 1,
                                      LM_RESUMED_SIZE + 4};
    for (size_t i = 0; i < sizeof(bad_rlen) / sizeof(bad_rlen[0]); i++)
        REJECTS(lm_resumed_decode(r, bad_rlen[i], &dr, why, sizeof(why)), -EBADMSG);
    static const uint32_t bad_verified[] = {3, 4, 0x100, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_verified) / sizeof(bad_verified[0]); i++) {
        memcpy(y, r, sizeof(y));
        lm_put_be32(y + 4, bad_verified[i]);
        REJECTS(lm_resumed_decode(y, LM_RESUMED_SIZE, &dr, why, sizeof(why)), -EBADMSG);
    }
    static const int32_t bad_status[] = {1, EINVAL, INT32_MAX, -4096, INT32_MIN};
    for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++) {
        memcpy(y, r, sizeof(y));
        lm_put_be32(y, (uint32_t)bad_status[i]);
        REJECTS(lm_resumed_decode(y, LM_RESUMED_SIZE, &dr, why, sizeof(why)), -EBADMSG);
    }
}

/* ---- random input --------------------------------------------------------------- */

static void random_input(void)
{
    enum { BUF = 8192 };
    static uint8_t buf[BUF];
    static lm_hello h;
    unsigned long long seed = 0xF022;
    for (size_t i = 0; i < BUF; i += 8) {
        uint64_t v = test_rand(&seed);
        memcpy(buf + i, &v, 8);
    }
    unsigned accepted[6] = {0};
    for (unsigned it = 0; it < 300000; it++) {
        /* Stir a few bytes; sometimes plant a valid magic/version/size. */
        for (int k = 0; k < 4; k++) {
            uint64_t v = test_rand(&seed);
            memcpy(buf + (v >> 32) % (BUF - 8), &v, 8);
        }
        uint64_t v = test_rand(&seed);
        size_t off = (size_t)(v % (BUF - 4096));
        uint8_t *in = buf + off;
        switch ((v >> 20) % 8) {
        case 0:
            lm_put_be32(in, LM_WIRE_MAGIC);
            lm_put_be16(in + 4, LM_WIRE_VERSION);
            break;
        case 1:
            lm_put_be32(in, LM_PACKET_MAGIC);
            lm_put_be32(in + 4, LM_PACKET_VERSION);
            break;
        case 2:
            lm_put_be32(in, 1u << (12 + (v >> 40) % 10));
            lm_put_be32(in + 4, (v >> 50) & 1);
            lm_put_be32(in + 8, 1 + (uint32_t)((v >> 52) % LM_MAX_BLOCKS));
            break;
        case 3:
        case 4: { /* a valid packet or hello with 1-3 random bytes changed */
            if ((v >> 20) % 8 == 3) {
                lm_packet_hdr vp =
                    make_packet((uint32_t)(v >> 40) % 8, (uint32_t)(v >> 44) % 8, 16);
                lm_packet_encode(&vp, in);
            } else {
                make_hello(&h, 1 + (uint32_t)((v >> 40) % 4), PS);
                lm_hello_encode(&h, in);
            }
            for (unsigned k = 0; k < 1 + (v >> 48) % 3; k++) {
                uint64_t m = test_rand(&seed);
                in[(m >> 8) % ((v >> 20) % 8 == 3 ? LM_PACKET_HDR_SIZE
                                                  : lm_hello_size(h.nblocks))] = (uint8_t)m;
            }
            break;
        }
        default:
            break;
        }
        char w[64];
        lm_frame f;
        lm_packet_hdr p;
        lm_verify_msg c;
        lm_resumed r;
        accepted[0] += lm_frame_decode(in, &f, w, sizeof(w)) == 0;
        /* Packet decode against random page sizes, including 0 and odd ones. */
        uint32_t ps = (v >> 33) % 4 ? PS : (uint32_t)(v >> 36);
        if (lm_packet_decode(in, ps, 0, &p, w, sizeof(w)) == 0) {
            accepted[1]++;
            CHECK(p.pages_alloc >= 1 && p.pages_alloc <= LM_PACKET_MAX_PAGES);
            CHECK((uint64_t)p.normal_pages + p.zero_pages <= p.pages_alloc);
            CHECK(p.payload_size == (uint64_t)p.normal_pages * ps);
        } else {
            CHECK(w[0] != '\0');
        }
        size_t hlen;
        if ((v >> 60) % 2)
            hlen = lm_hello_size(lm_get_be32(in + 8) % (LM_MAX_BLOCKS + 2));
        else
            hlen = (size_t)((v >> 24) % 4000);
        if (hlen > BUF - off)
            hlen = BUF - off;
        w[0] = '\0';
        if (lm_hello_decode(in, hlen, &h, w, sizeof(w)) == 0) {
            accepted[2]++;
            CHECK(h.nblocks >= 1 && h.nblocks <= LM_MAX_BLOCKS);
            CHECK(hlen == lm_hello_size(h.nblocks));
        } else {
            CHECK(w[0] != '\0');
        }
        accepted[3] += lm_verify_decode(in, (v >> 8) % 2 ? LM_VERIFY_SIZE : (v >> 9) % 40, &c, w,
                                        sizeof(w)) == 0;
        accepted[4] += lm_resumed_decode(in, (v >> 10) % 2 ? LM_RESUMED_SIZE : (v >> 11) % 40, &r,
                                         w, sizeof(w)) == 0;
        if (ps)
            accepted[5] +=
                lm_packet_check_offset(lm_get_be64(in), lm_get_be64(in + 8), ps, w, sizeof(w)) == 0;
        /* The reason never overflows, even with a one-byte buffer. */
        char tiny[2] = {'x', 'Y'};
        if (lm_frame_decode(in, &f, tiny, 1) < 0)
            CHECK(tiny[0] == '\0' && tiny[1] == 'Y');
    }
    fprintf(stderr,
            "random input accepted: frame %u packet %u hello %u verify %u "
            "resumed %u offset %u\n",
            accepted[0], accepted[1], accepted[2], accepted[3], accepted[4], accepted[5]);
}

/* ---- single-byte corruption ------------------------------------------------------ */

/*
 * Every byte of a valid encoding, every possible value: the decoder either
 * rejects it, or accepts it and re-encoding what it decoded gives the same
 * bytes back, so no field is ignored (except a hello name's bytes after its
 * first NUL, which carry no meaning).
 */
static void byte_flips(void)
{
    unsigned accepted = 0, rejected = 0;
    uint8_t b[LM_FRAME_HDR_SIZE], x[LM_FRAME_HDR_SIZE], re[LM_FRAME_HDR_SIZE];
    lm_frame_encode(b, LM_MSG_HELLO, 1000);
    for (int i = 0; i < LM_FRAME_HDR_SIZE; i++) {
        for (int val = 0; val < 256; val++) {
            memcpy(x, b, sizeof(x));
            x[i] = (uint8_t)val;
            lm_frame f;
            why[0] = '\0';
            if (lm_frame_decode(x, &f, why, sizeof(why)) == 0) {
                lm_frame_encode(re, f.type, f.length);
                CHECK(memcmp(re, x, sizeof(x)) == 0);
                accepted++;
            } else {
                CHECK(why[0] != '\0');
                rejected++;
            }
        }
    }

    uint8_t pb[LM_PACKET_HDR_SIZE], px[LM_PACKET_HDR_SIZE], pre[LM_PACKET_HDR_SIZE];
    lm_packet_hdr p = make_packet(3, 4, 64);
    lm_packet_encode(&p, pb);
    for (int i = 0; i < LM_PACKET_HDR_SIZE; i++) {
        for (int val = 0; val < 256; val++) {
            memcpy(px, pb, sizeof(px));
            px[i] = (uint8_t)val;
            lm_packet_hdr d;
            why[0] = '\0';
            if (lm_packet_decode(px, PS, 0, &d, why, sizeof(why)) == 0) {
                lm_packet_encode(&d, pre);
                CHECK(memcmp(pre, px, sizeof(px)) == 0);
                CHECK((uint64_t)d.normal_pages + d.zero_pages <= d.pages_alloc);
                CHECK(d.pages_alloc >= 1 && d.pages_alloc <= LM_PACKET_MAX_PAGES);
                CHECK_EQ_U64(d.payload_size, (uint64_t)d.normal_pages * PS);
                accepted++;
            } else {
                CHECK(why[0] != '\0');
                rejected++;
            }
        }
    }

    static lm_hello h, d;
    static uint8_t hre[sizeof(hbuf)];
    make_hello(&h, 3, PS);
    lm_hello_encode(&h, hbuf);
    size_t n = lm_hello_size(3);
    for (size_t i = 0; i < n; i++) {
        for (int val = 0; val < 256; val++) {
            memcpy(hx, hbuf, n);
            hx[i] = (uint8_t)val;
            why[0] = '\0';
            if (lm_hello_decode(hx, n, &d, why, sizeof(why)) == 0) {
                lm_hello_encode(&d, hre);
                for (size_t k = 0; k < n; k++) {
                    if (hre[k] == hx[k])
                        continue;
                    /* Allowed: a name byte after that name's first NUL. */
                    bool pad = false;
                    if (k >= LM_HELLO_FIXED_SIZE) {
                        size_t blk = (k - LM_HELLO_FIXED_SIZE) / LM_HELLO_BLOCK_SIZE;
                        size_t in = (k - LM_HELLO_FIXED_SIZE) % LM_HELLO_BLOCK_SIZE;
                        const uint8_t *name =
                            hx + LM_HELLO_FIXED_SIZE + blk * LM_HELLO_BLOCK_SIZE + 16;
                        pad = in >= 16 && in - 16 > strnlen((const char *)name, LM_BLOCK_NAME_MAX);
                    }
                    if (!pad) {
                        fprintf(stderr,
                                "hello byte %zu = %d accepted but re-encodes "
                                "differently at %zu\n",
                                i, val, k);
                        lm_test_failures++;
                        break;
                    }
                }
                /* Whatever was accepted is self-consistent. */
                uint64_t sum = 0;
                for (uint32_t k = 0; k < d.nblocks; k++) {
                    CHECK(d.blocks[k].len && d.blocks[k].len % d.page_size == 0);
                    CHECK(memchr(d.blocks[k].name, '\0', LM_BLOCK_NAME_MAX) != NULL);
                    sum += d.blocks[k].len;
                }
                CHECK_EQ_U64(sum, d.ram_total);
                accepted++;
            } else {
                CHECK(why[0] != '\0');
                rejected++;
            }
        }
    }

    uint8_t cb[LM_VERIFY_SIZE], cx[LM_VERIFY_SIZE], cre[LM_VERIFY_SIZE];
    lm_verify_msg c = {.pages = 12345};
    memset(c.digest, 0x3c, 16);
    lm_verify_encode(&c, cb);
    uint8_t rb[LM_RESUMED_SIZE], rx[LM_RESUMED_SIZE], rre[LM_RESUMED_SIZE];
    lm_resumed r = {.status = 0, .verified = 1, .verify_time_us = 999};
    lm_resumed_encode(&r, rb);
    for (int i = 0; i < LM_VERIFY_SIZE; i++) {
        for (int val = 0; val < 256; val++) {
            memcpy(cx, cb, sizeof(cx));
            cx[i] = (uint8_t)val;
            lm_verify_msg dc;
            if (lm_verify_decode(cx, sizeof(cx), &dc, why, sizeof(why)) == 0) {
                lm_verify_encode(&dc, cre);
                CHECK(memcmp(cre, cx, sizeof(cx)) == 0);
            }
            if (i < LM_RESUMED_SIZE) {
                memcpy(rx, rb, sizeof(rx));
                rx[i] = (uint8_t)val;
                lm_resumed dr;
                if (lm_resumed_decode(rx, sizeof(rx), &dr, why, sizeof(why)) == 0) {
                    lm_resumed_encode(&dr, rre);
                    CHECK(memcmp(rre, rx, sizeof(rx)) == 0);
                    CHECK(dr.status <= 0 && dr.verified <= 2);
                }
            }
        }
    }
    fprintf(stderr, "byte flips: %u accepted, %u rejected\n", accepted, rejected);
}

/* An ERROR from the peer is shown with its control characters escaped: a
 * forged "migration completed" line or a terminal escape cannot pass. */
static void peer_error_text(void)
{
    static const char forged[] = "bad\r\nlivemig: migration completed\x1b[2J\x7f end";
    uint8_t body[4 + sizeof(forged)];
    lm_put_be32(body, 5);
    memcpy(body + 4, forged, sizeof(forged) - 1);
    lm_err err;
    lm_err_init(&err);
    lm_conn c;
    lm_conn_init(&c, -1, 1000, NULL, "source", &err);
    CHECK(lm_conn_peer_error(&c, body, 4 + sizeof(forged) - 1) == -5);
    CHECK(!strcmp(err.msg, "the source failed: bad\\x0d\\x0alivemig: migration "
                           "completed\\x1b[2J\\x7f end"));
    CHECK(strchr(err.msg, '\n') == NULL && strchr(err.msg, '\r') == NULL &&
          strchr(err.msg, 0x1b) == NULL);
    char small[9];
    CHECK_EQ_U64(lm_escape_text((const uint8_t *)"a\nbcdef", 7, small, sizeof(small)), 5);
    CHECK(!strcmp(small, "a\\x0a"));
}

/* SECTION's header: the exact bytes, and every field checked. */
static void section_header(void)
{
    lm_section_hdr h = {.name = "vfio-net", .version = 7, .flags = LM_SECTION_COMPLETE}, d;
    uint8_t b[LM_SECTION_HDR_SIZE + 4] = {0};
    lm_section_hdr_encode(&h, b);
    CHECK(!memcmp(b, "vfio-net\0", 9) && b[31] == 0);
    CHECK(lm_get_be32(b + 32) == 7 && lm_get_be32(b + 36) == LM_SECTION_COMPLETE);
    char reason[160];
    CHECK(lm_section_hdr_decode(b, sizeof(b), &d, reason, sizeof(reason)) == 0);
    CHECK(!strcmp(d.name, "vfio-net") && d.version == 7 && d.flags == LM_SECTION_COMPLETE);
    uint8_t x[sizeof(b)];
    memcpy(x, b, sizeof(b));
    CHECK(lm_section_hdr_decode(x, LM_SECTION_HDR_SIZE - 1, &d, reason, sizeof(reason)) ==
          -EBADMSG);
    x[0] = 0; /* empty name */
    CHECK(lm_section_hdr_decode(x, sizeof(x), &d, reason, sizeof(reason)) == -EBADMSG);
    memset(x, 'a', LM_SECTION_NAME_MAX); /* not terminated */
    CHECK(lm_section_hdr_decode(x, sizeof(x), &d, reason, sizeof(reason)) == -EBADMSG);
    CHECK(strstr(reason, "not terminated") != NULL);
    memcpy(x, b, sizeof(b));
    x[20] = 'z'; /* bytes after the terminator */
    CHECK(lm_section_hdr_decode(x, sizeof(x), &d, reason, sizeof(reason)) == -EBADMSG);
    memcpy(x, b, sizeof(b));
    x[2] = '\n';
    CHECK(lm_section_hdr_decode(x, sizeof(x), &d, reason, sizeof(reason)) == -EBADMSG);
    memcpy(x, b, sizeof(b));
    lm_put_be32(x + 32, 0);
    CHECK(lm_section_hdr_decode(x, sizeof(x), &d, reason, sizeof(reason)) == -EBADMSG);
    memcpy(x, b, sizeof(b));
    lm_put_be32(x + 36, 2);
    CHECK(lm_section_hdr_decode(x, sizeof(x), &d, reason, sizeof(reason)) == -EBADMSG);
    CHECK(lm_section_hdr_decode(b, LM_SECTION_HDR_SIZE + LM_SECTION_MAX_PART + 1, &d, reason,
                                sizeof(reason)) == -EBADMSG);
}

/* ZERO_RANGES: the exact bytes, and every field checked. */
static void zero_ranges(void)
{
    lm_zero_range r[3] = {{0, 5}, {5, 1}, {100, 28}}, d[LM_ZERO_RANGES_MAX];
    uint8_t b[LM_ZERO_RANGES_HDR + 3 * LM_ZERO_RANGE_SIZE];
    CHECK_EQ_U64(lm_zero_ranges_size(3), sizeof(b));
    lm_zero_ranges_encode(7, r, 3, b);
    CHECK(lm_get_be32(b) == 7 && lm_get_be32(b + 4) == 3);
    CHECK(lm_get_be64(b + 8 + 32) == 100 && lm_get_be64(b + 8 + 40) == 28);
    uint32_t id, n;
    ACCEPTS(lm_zero_ranges_decode_hdr(b, sizeof(b), &id, &n, why, sizeof(why)));
    CHECK(id == 7 && n == 3);
    ACCEPTS(lm_zero_ranges_decode(b, n, 128, d, why, sizeof(why)));
    CHECK(!memcmp(d, r, sizeof(r)));
    /* The range that ends at the block's last page is inside it. */
    REJECTS(lm_zero_ranges_decode(b, n, 127, d, why, sizeof(why)), -EBADMSG);
    CHECK(strstr(why, "outside the block") != NULL);
    REJECTS(lm_zero_ranges_decode_hdr(b, sizeof(b) - 1, &id, &n, why, sizeof(why)), -EBADMSG);
    REJECTS(lm_zero_ranges_decode_hdr(b, 4, &id, &n, why, sizeof(why)), -EBADMSG);
    uint8_t x[sizeof(b)];
    memcpy(x, b, sizeof(b));
    lm_put_be32(x + 4, 0); /* no ranges */
    REJECTS(lm_zero_ranges_decode_hdr(x, LM_ZERO_RANGES_HDR, &id, &n, why, sizeof(why)), -EBADMSG);
    lm_put_be32(x + 4, LM_ZERO_RANGES_MAX + 1);
    REJECTS(lm_zero_ranges_decode_hdr(x, lm_zero_ranges_size(LM_ZERO_RANGES_MAX + 1), &id, &n, why,
                                      sizeof(why)),
            -EBADMSG);
    memcpy(x, b, sizeof(b));
    lm_put_be64(x + 8 + 8, 0); /* an empty range */
    REJECTS(lm_zero_ranges_decode(x, 3, 128, d, why, sizeof(why)), -EBADMSG);
    memcpy(x, b, sizeof(b));
    lm_put_be64(x + 8 + 16, 4); /* overlaps the range before */
    REJECTS(lm_zero_ranges_decode(x, 3, 128, d, why, sizeof(why)), -EBADMSG);
    memcpy(x, b, sizeof(b));
    lm_put_be64(x + 8 + 32, UINT64_MAX - 1); /* first + npages would wrap */
    REJECTS(lm_zero_ranges_decode(x, 3, 128, d, why, sizeof(why)), -EBADMSG);
    memcpy(x, b, sizeof(b));
    lm_put_be64(x + 8 + 40, UINT64_MAX); /* npages would wrap */
    REJECTS(lm_zero_ranges_decode(x, 3, 128, d, why, sizeof(why)), -EBADMSG);

    /* Random small numbers: whatever is accepted keeps every range inside
     * the block, in order, apart, and re-encodes to the same bytes. */
    unsigned long long seed = 0x2E50;
    unsigned accepted = 0;
    for (int it = 0; it < 20000; it++) {
        for (int k = 0; k < 3; k++) {
            lm_put_be64(x + 8 + 16 * k, test_rand(&seed) % 160);
            lm_put_be64(x + 16 + 16 * k, test_rand(&seed) % 64);
        }
        if (lm_zero_ranges_decode(x, 3, 128, d, why, sizeof(why)) < 0)
            continue;
        accepted++;
        for (int k = 0; k < 3; k++) {
            CHECK(d[k].npages >= 1 && d[k].first + d[k].npages <= 128);
            CHECK(k == 0 || d[k].first >= d[k - 1].first + d[k - 1].npages);
        }
        uint8_t re[sizeof(b)];
        lm_zero_ranges_encode(7, d, 3, re);
        CHECK(memcmp(re + 8, x + 8, sizeof(b) - 8) == 0);
    }
    CHECK(accepted > 10);
}

/* BUSY keeps a wait alive only within the allowance the reader granted. */
static void busy_frames(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    lm_err err;
    lm_err_init(&err);
    lm_conn r;
    lm_conn_init(&r, sv[0], 1000, NULL, "destination", &err);
    uint8_t f[3][LM_FRAME_HDR_SIZE];
    lm_frame_encode(f[0], LM_MSG_BUSY, 0);
    lm_frame_encode(f[1], LM_MSG_BUSY, 0);
    lm_frame_encode(f[2], LM_MSG_PONG, 0);
    CHECK(write(sv[1], f, sizeof(f)) == (ssize_t)sizeof(f));
    r.busy_allow_ns = 1000000000ull;
    CHECK(lm_conn_expect(&r, LM_MSG_PONG, NULL, 0, NULL, 0) == 0);
    /* Not expected (no allowance): refused once it made the reader wait. */
    r.busy_allow_ns = 0;
    CHECK(write(sv[1], f[0], LM_FRAME_HDR_SIZE) == LM_FRAME_HDR_SIZE);
    usleep(2000);
    CHECK(write(sv[1], f[2], LM_FRAME_HDR_SIZE) == LM_FRAME_HDR_SIZE);
    CHECK(lm_conn_expect(&r, LM_MSG_PONG, NULL, 0, NULL, 0) == -ETIMEDOUT);
    CHECK(strstr(err.msg, "busy") != NULL);
    lm_conn_close(&r);
    close(sv[1]);
}

int main(void)
{
    busy_frames();
    zero_ranges();
    section_header();
    peer_error_text();
    frames();
    hello_roundtrip();
    hello_rejects();
    packets();
    packet_flags();
    verify_resumed();
    random_input();
    byte_flips();
    TEST_DONE();
}
