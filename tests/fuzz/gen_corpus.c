/*
 * Writes the seed corpus of every fuzz target (tests/fuzz/corpus/<target>/)
 * with the encoders of proto/wire.c and the real compressors, so seeds are
 * valid where validity matters (a digest that matches, a dictionary that
 * carries over) and the fuzzer starts deep in each parser:
 *
 *   build/tests/fuzz/lm-fuzz-corpus tests/fuzz/corpus
 *
 * Deterministic: the same tree writes the same files (compressed seeds may
 * differ with another zlib/zstd/lz4 release, and both are valid).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "guest/guest.h"
#include "migration/postcopy.h"
#include "multifd/compress.h"
#include "proto/wire.h"

/* ---- a growing byte buffer ------------------------------------------------ */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        FUZZ_CHECK(b->p);
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put8(buf *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put32(buf *b, uint32_t v)
{
    uint8_t x[4];
    lm_put_be32(x, v);
    put(b, x, 4);
}

static void put64(buf *b, uint64_t v)
{
    uint8_t x[8];
    lm_put_be64(x, v);
    put(b, x, 8);
}

static void clear(buf *b)
{
    b->n = 0;
}

static const char *root;

static void save(const char *target, const char *name, const buf *b)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->n, f) != b->n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* ---- messages --------------------------------------------------------------- */

static const uint8_t uuid[16] = {0x6c, 0x69, 0x76, 0x65, 0x6d, 0x69, 0x67, 0x2d,
                                 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x30, 0x30, 0x31};

static void frame(buf *b, uint16_t type, const void *body, uint32_t len)
{
    uint8_t h[LM_FRAME_HDR_SIZE];
    lm_frame_encode(h, type, len);
    put(b, h, sizeof(h));
    put(b, body, len);
}

static void empty(buf *b, uint16_t type)
{
    frame(b, type, NULL, 0);
}

/* HELLO for the layout of fuzz.h. */
static void hello_body(buf *b, uint32_t flags, uint32_t nchannels, lm_compression m)
{
    lm_hello h = {.page_size = FUZZ_PAGE,
                  .flags = flags,
                  .nblocks = 2,
                  .nchannels = nchannels,
                  .compress = m,
                  .ram_total = (uint64_t)(FUZZ_BLOCK0_PAGES + FUZZ_BLOCK1_PAGES) * FUZZ_PAGE};
    memcpy(h.uuid, uuid, 16);
    h.blocks[0] = (lm_wire_block){.id = FUZZ_BLOCK0_ID, .len = FUZZ_BLOCK0_PAGES * FUZZ_PAGE};
    h.blocks[1] = (lm_wire_block){.id = FUZZ_BLOCK1_ID, .len = FUZZ_BLOCK1_PAGES * FUZZ_PAGE};
    strcpy(h.blocks[0].name, "pc.ram");
    strcpy(h.blocks[1].name, "vga.vram");
    uint8_t out[LM_HELLO_FIXED_SIZE + 2 * LM_HELLO_BLOCK_SIZE];
    lm_hello_encode(&h, out);
    put(b, out, lm_hello_size(2));
}

static void hello(buf *b, uint32_t flags, uint32_t nchannels, lm_compression m)
{
    buf body = {0};
    hello_body(&body, flags, nchannels, m);
    frame(b, LM_MSG_HELLO, body.p, (uint32_t)body.n);
    free(body.p);
}

static void channel_hello(buf *b, uint32_t channel)
{
    lm_channel_hello c = {.channel = channel};
    memcpy(c.uuid, uuid, 16);
    uint8_t out[LM_CHANNEL_HELLO_SIZE];
    lm_channel_hello_encode(&c, out);
    frame(b, LM_MSG_CHANNEL_HELLO, out, sizeof(out));
}

/* Text-like page data: compressible, different per seed. */
static void page_data(uint8_t *p, unsigned seed)
{
    static const char *const words[] = {"guest ", "page ", "dirty ", "round ", "zero ", "\n"};
    size_t o = (size_t)snprintf((char *)p, FUZZ_PAGE, "page %u: ", seed);
    for (unsigned k = 0; o < FUZZ_PAGE; k++)
        for (const char *w = words[(seed + k % 5) % 6]; *w && o < FUZZ_PAGE; w++)
            p[o++] = (uint8_t)*w;
}

static lm_block *shadow_block(lm_ram *shadow, uint32_t block)
{
    lm_block *b = lm__ram_find(shadow, block);
    FUZZ_CHECK(b);
    return b;
}

/* One packet (header, offsets, payload), raw or compressed with tx; its
 * pages are also written into shadow, the RAM the destination will hold. */
static void packet(buf *out, lm_codec *tx, lm_ram *shadow, uint32_t block, const uint64_t *normal,
                   unsigned nn, const uint64_t *zero, unsigned nz, unsigned seed)
{
    static uint8_t data[LM_PACKET_MAX_PAGES][FUZZ_PAGE];
    uint8_t *pages[LM_PACKET_MAX_PAGES];
    lm_block *b = shadow ? shadow_block(shadow, block) : NULL;
    for (unsigned i = 0; i < nn; i++) {
        page_data(data[i], seed + i);
        pages[i] = data[i];
        if (b)
            memcpy(b->host + normal[i], data[i], FUZZ_PAGE);
    }
    for (unsigned i = 0; b && i < nz; i++)
        memset(b->host + zero[i], 0, FUZZ_PAGE);
    size_t payload = (size_t)nn * FUZZ_PAGE;
    lm_err err;
    lm_err_init(&err);
    if (tx && nn)
        FUZZ_CHECK(tx->ops->compress(tx->state, pages, nn, tx->buf, tx->cap, &payload, &err) == 0);
    lm_packet_hdr h = {.flags = tx && nn ? LM_PACKET_FLAG_COMPRESSED : 0,
                       .pages_alloc = LM_PACKET_MAX_PAGES,
                       .normal_pages = nn,
                       .zero_pages = nz,
                       .block_id = block,
                       .payload_size = payload,
                       .packet_num = seed};
    uint8_t hdr[LM_PACKET_HDR_SIZE];
    lm_packet_encode(&h, hdr);
    put(out, hdr, sizeof(hdr));
    for (unsigned i = 0; i < nn; i++)
        put64(out, normal[i]);
    for (unsigned i = 0; i < nz; i++)
        put64(out, zero[i]);
    if (tx && nn)
        put(out, tx->buf, payload);
    else
        for (unsigned i = 0; i < nn; i++)
            put(out, data[i], FUZZ_PAGE);
}

static void sync_packet(buf *out)
{
    lm_packet_hdr h = {.flags = LM_PACKET_FLAG_SYNC, .pages_alloc = LM_PACKET_MAX_PAGES};
    uint8_t hdr[LM_PACKET_HDR_SIZE];
    lm_packet_encode(&h, hdr);
    put(out, hdr, sizeof(hdr));
}

static void pages_frame(buf *out, lm_codec *tx, lm_ram *shadow, uint32_t block,
                        const uint64_t *normal, unsigned nn, const uint64_t *zero, unsigned nz,
                        unsigned seed)
{
    buf body = {0};
    packet(&body, tx, shadow, block, normal, nn, zero, nz, seed);
    frame(out, LM_MSG_PAGES, body.p, (uint32_t)body.n);
    free(body.p);
}

/* The thread guest's device state (guest.c's layout): one idle vCPU, or
 * stress vCPUs each over its own part of ram_len. */
static void thread_state(buf *b, uint64_t ram_len, unsigned nvcpus)
{
    uint64_t pages = ram_len / FUZZ_PAGE, each = pages / nvcpus;
    put32(b, 0x4C4D4753u); /* "LMGS" */
    put32(b, 1);
    put32(b, nvcpus > 1 ? LM_WL_STRESS : LM_WL_IDLE);
    put32(b, nvcpus);
    put32(b, nvcpus > 1 ? nvcpus : 0);
    put32(b, 0);
    put64(b, nvcpus > 1 ? each * FUZZ_PAGE : 0);
    put64(b, 0);
    put64(b, ram_len);
    char spec[48] = "idle";
    if (nvcpus > 1)
        snprintf(spec, sizeof(spec), "stress:%ux%lluK", nvcpus,
                 (unsigned long long)(each * FUZZ_PAGE >> 10));
    put(b, spec, sizeof(spec));
    for (unsigned i = 0; i < nvcpus; i++) {
        put64(b, 1000 + i);                        /* counter */
        put64(b, 0x9E3779B97F4A7C15ull * (i + 1)); /* prng, never 0 */
        put64(b, i % each);                        /* cursor */
        put64(b, nvcpus > 1 ? i * each : 0);       /* first page */
        put64(b, nvcpus > 1 ? each : pages);       /* pages */
    }
}

/* The KVM guest's device state (kvm_guest.c's layout), registers zero. */
static void kvm_state(buf *b, unsigned nvcpus, lm_workload_kind kind, uint64_t bytes,
                      const char *spec)
{
    uint8_t head[128] = {0};
    lm_put_be32(head, 0x4C4D4B56u); /* "LMKV" */
    lm_put_be32(head + 4, 1);
    lm_put_be32(head + 8, nvcpus);
    lm_put_be32(head + 12, kind);
    lm_put_be32(head + 16, nvcpus);
    lm_put_be32(head + 20, (uint32_t)sizeof(struct kvm_regs));
    lm_put_be64(head + 24, bytes);
    lm_put_be64(head + 40, 64ull << 20);
    lm_put_be64(head + 48, 42);
    lm_put_be32(head + 56, (uint32_t)sizeof(struct kvm_sregs));
    memcpy(head + 64, spec, strlen(spec));
    put(b, head, sizeof(head));
    static uint8_t vcpu[8 + sizeof(struct kvm_regs) + sizeof(struct kvm_sregs)];
    for (unsigned i = 0; i < nvcpus; i++)
        put(b, vcpu, sizeof(vcpu));
}

static void device_state_frame(buf *b)
{
    buf s = {0};
    thread_state(&s, (uint64_t)FUZZ_BLOCK0_PAGES * FUZZ_PAGE, 1);
    frame(b, LM_MSG_DEVICE_STATE, s.p, (uint32_t)s.n);
    free(s.p);
}

static void verify_frame(buf *b, lm_ram *shadow)
{
    lm_verify_msg v;
    lm_err err;
    lm_err_init(&err);
    FUZZ_CHECK(lm__ram_digest(shadow, v.digest, &v.pages, &err) == 0);
    uint8_t out[LM_VERIFY_SIZE];
    lm_verify_encode(&v, out);
    frame(b, LM_MSG_VERIFY, out, sizeof(out));
}

static void resumed_body(uint8_t out[LM_RESUMED_SIZE], int32_t status, uint32_t verified)
{
    lm_resumed r = {.status = status, .verified = verified, .verify_time_us = 1234};
    lm_resumed_encode(&r, out);
}

static void error_frame(buf *b, uint32_t code, const char *text)
{
    buf body = {0};
    put32(&body, code);
    put(&body, text, strlen(text));
    frame(b, LM_MSG_ERROR, body.p, (uint32_t)body.n);
    free(body.p);
}

/* A POSTCOPY_SWITCH / RECOVER_MAP body for the layout, pages p with p % k == r. */
static void switch_map(buf *b, lm_ram *ram, unsigned k, unsigned r)
{
    lm_word *maps[LM_MAX_BLOCKS] = {0};
    for (unsigned i = 0; i < ram->nblocks; i++) {
        FUZZ_CHECK((maps[i] = lm_bitmap_new(ram->blocks[i].npages)));
        for (uint64_t p = 0; p < ram->blocks[i].npages; p++)
            if (p % k == r)
                lm_bit_set(maps[i], p);
    }
    size_t n = lm_postcopy_switch_size(ram);
    uint8_t *out = malloc(n);
    FUZZ_CHECK(out);
    lm_postcopy_switch_encode(ram, maps, out);
    put(b, out, n);
    free(out);
    for (unsigned i = 0; i < ram->nblocks; i++)
        lm_bitmap_free(maps[i]);
}

/* ---- the targets' seeds ----------------------------------------------------- */

static void seeds_frame(void)
{
    buf b = {0};
    hello(&b, 0, 0, LM_COMPRESSION_NONE);
    save("frame", "hello", &b);
    clear(&b);
    empty(&b, LM_MSG_HELLO_ACK);
    empty(&b, LM_MSG_PONG);
    uint8_t r[LM_RESUMED_SIZE];
    resumed_body(r, 0, 1);
    frame(&b, LM_MSG_SWITCHOVER_READY, r, sizeof(r));
    error_frame(&b, EIO, "the destination failed");
    save("frame", "replies", &b);
    clear(&b);
    uint8_t h[LM_FRAME_HDR_SIZE];
    lm_frame_encode(h, LM_MSG_PAGES, LM_FRAME_MAX_LEN);
    put(&b, h, sizeof(h));
    save("frame", "pages-max", &b);
    clear(&b);
    lm_frame_encode(h, LM_MSG_RECOVER_MAP, 48);
    lm_put_be16(h + 4, 1); /* version 1 */
    put(&b, h, sizeof(h));
    save("frame", "version1", &b);
    free(b.p);
}

static void seeds_hello(void)
{
    buf b = {0};
    hello_body(&b, 0, 0, LM_COMPRESSION_NONE);
    save("hello", "plain", &b);
    clear(&b);
    hello_body(&b, LM_HELLO_VERIFY | LM_HELLO_POSTCOPY, 4, LM_COMPRESSION_ZSTD);
    save("hello", "postcopy-zstd", &b);
    clear(&b);
    hello_body(&b, LM_HELLO_RECOVER | LM_HELLO_COMMITTED | LM_HELLO_POSTCOPY | LM_HELLO_NO_PREEMPT,
               LM_MAX_CHANNELS, LM_COMPRESSION_LZ4);
    save("hello", "recover", &b);
    clear(&b);
    /* 64 blocks, the most a HELLO may hold. */
    static lm_hello h = {.page_size = 1u << 21, .nblocks = LM_MAX_BLOCKS};
    static uint8_t out[LM_HELLO_FIXED_SIZE + LM_MAX_BLOCKS * LM_HELLO_BLOCK_SIZE];
    for (uint32_t i = 0; i < LM_MAX_BLOCKS; i++) {
        h.blocks[i] = (lm_wire_block){.id = 1000 + i, .len = (uint64_t)(i + 1) << 21};
        snprintf(h.blocks[i].name, sizeof(h.blocks[i].name), "block%u", i);
        h.ram_total += h.blocks[i].len;
    }
    lm_hello_encode(&h, out);
    put(&b, out, lm_hello_size(LM_MAX_BLOCKS));
    save("hello", "64-blocks", &b);
    free(b.p);
}

static void seeds_channel_hello(void)
{
    for (uint32_t ch = 0; ch < 65; ch += 64) {
        lm_channel_hello c = {.channel = ch};
        memcpy(c.uuid, uuid, 16);
        buf b = {0};
        uint8_t out[LM_CHANNEL_HELLO_SIZE];
        lm_channel_hello_encode(&c, out);
        put(&b, out, sizeof(out));
        save("channel_hello", ch ? "preempt" : "channel0", &b);
        free(b.p);
    }
}

static void seeds_packet(void)
{
    buf b = {0};
    const uint64_t normal[] = {0, 3 * FUZZ_PAGE, 31 * FUZZ_PAGE},
                   zero[] = {FUZZ_PAGE, 2 * FUZZ_PAGE};
    put8(&b, 0); /* 4 KiB, no compression */
    packet(&b, NULL, NULL, FUZZ_BLOCK0_ID, normal, 3, zero, 2, 1);
    b.n = 1 + LM_PACKET_HDR_SIZE + 5 * 8; /* the data is not read here */
    save("packet", "normal", &b);
    clear(&b);
    put8(&b, 0);
    packet(&b, NULL, NULL, FUZZ_BLOCK1_ID, NULL, 0, zero, 2, 2);
    save("packet", "zero", &b);
    clear(&b);
    put8(&b, 0);
    sync_packet(&b);
    save("packet", "sync", &b);
    clear(&b);
    /* zstd, 4 KiB pages: a compressed header (its payload size is made up). */
    put8(&b, (uint8_t)(LM_COMPRESSION_ZSTD << 4));
    lm_packet_hdr h = {.flags = LM_PACKET_FLAG_COMPRESSED,
                       .pages_alloc = 128,
                       .normal_pages = 3,
                       .block_id = FUZZ_BLOCK0_ID,
                       .payload_size = 777};
    uint8_t hdr[LM_PACKET_HDR_SIZE];
    lm_packet_encode(&h, hdr);
    put(&b, hdr, sizeof(hdr));
    for (unsigned i = 0; i < 3; i++)
        put64(&b, normal[i]);
    save("packet", "compressed", &b);
    clear(&b);
    /* 2 MiB pages (options 9): 128 pages of it. */
    put8(&b, 9);
    h = (lm_packet_hdr){.pages_alloc = 128, .zero_pages = 128, .block_id = FUZZ_BLOCK0_ID};
    lm_packet_encode(&h, hdr);
    put(&b, hdr, sizeof(hdr));
    for (unsigned i = 0; i < 128; i++)
        put64(&b, (uint64_t)(i % FUZZ_BLOCK0_PAGES) << 21);
    save("packet", "huge-pages", &b);
    free(b.p);
}

static void seeds_decompress(void)
{
    for (lm_compression m = LM_COMPRESSION_ZLIB; m < LM_COMPRESSION__COUNT; m++) {
        char target[64];
        snprintf(target, sizeof(target), "decompress_%s", lm_compression_name(m));
        lm_err err;
        lm_err_init(&err);
        lm_codec tx;
        FUZZ_CHECK(lm_codec_init(&tx, m, true, LM_PACKET_MAX_PAGES, FUZZ_PAGE, 0, &err) == 0);
        static uint8_t data[LM_PACKET_MAX_PAGES][FUZZ_PAGE];
        uint8_t *pages[LM_PACKET_MAX_PAGES];
        buf b = {0};
        put8(&b, 0);
        /* Three packets on one stream: 1 page, 5 pages, 2 pages (zeros). */
        const unsigned counts[] = {1, 5, 2};
        for (unsigned k = 0; k < 3; k++) {
            for (unsigned i = 0; i < counts[k]; i++) {
                if (k == 2)
                    memset(data[i], 0, FUZZ_PAGE);
                else
                    page_data(data[i], k * 10 + i);
                pages[i] = data[i];
            }
            size_t len = 0;
            FUZZ_CHECK(tx.ops->compress(tx.state, pages, counts[k], tx.buf, tx.cap, &len, &err) ==
                       0);
            put8(&b, (uint8_t)(counts[k] - 1));
            put8(&b, (uint8_t)(2 * k + 1));
            put32(&b, (uint32_t)len);
            put(&b, tx.buf, len);
            if (k == 0) {
                buf one = {0};
                put(&one, b.p, b.n);
                save(target, "one-packet", &one);
                free(one.p);
            }
        }
        save(target, "stream", &b);
        lm_codec_cleanup(&tx);
        /* A full packet, 128 pages: text, and one page of noise that
         * does not compress. */
        FUZZ_CHECK(lm_codec_init(&tx, m, true, LM_PACKET_MAX_PAGES, FUZZ_PAGE, 0, &err) == 0);
        uint64_t x = 88172645463325252ull;
        for (unsigned i = 0; i < LM_PACKET_MAX_PAGES; i++) {
            page_data(data[i], i);
            for (unsigned j = 0; i == 77 && j < FUZZ_PAGE; j++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                data[i][j] = (uint8_t)x;
            }
            pages[i] = data[i];
        }
        size_t len = 0;
        FUZZ_CHECK(tx.ops->compress(tx.state, pages, LM_PACKET_MAX_PAGES, tx.buf, tx.cap, &len,
                                    &err) == 0);
        clear(&b);
        put8(&b, 0);
        put8(&b, LM_PACKET_MAX_PAGES - 1);
        put8(&b, 1);
        put32(&b, (uint32_t)len);
        put(&b, tx.buf, len);
        save(target, "full-packet", &b);
        lm_codec_cleanup(&tx);
        /* Round trip mode. */
        clear(&b);
        put8(&b, 0x80);
        const char *text = "migration round 7: 4096 dirty pages, 12 zero, channel 3\n";
        for (int i = 0; i < 40; i++)
            put(&b, text, strlen(text));
        save(target, "round-trip", &b);
        free(b.p);
    }
}

static void seeds_device_state(void)
{
    buf b = {0};
    thread_state(&b, 64 * FUZZ_PAGE, 1);
    save("device_state", "thread-idle", &b);
    clear(&b);
    thread_state(&b, 64 * FUZZ_PAGE, 4);
    save("device_state", "thread-stress", &b);
    clear(&b);
    kvm_state(&b, 1, LM_WL_IDLE, 0, "idle");
    save("device_state", "kvm-idle", &b);
    clear(&b);
    kvm_state(&b, 2, LM_WL_HOT, 16ull << 20, "hot:2x16M");
    save("device_state", "kvm-hot", &b);
    free(b.p);
}

static void seeds_small(void)
{
    buf b = {0};
    lm_verify_msg v = {.pages = 40};
    memset(v.digest, 0xa5, sizeof(v.digest));
    uint8_t out[LM_VERIFY_SIZE];
    lm_verify_encode(&v, out);
    put(&b, out, sizeof(out));
    save("verify", "digest", &b);

    uint8_t r[LM_RESUMED_SIZE];
    clear(&b);
    resumed_body(r, 0, 1);
    put(&b, r, sizeof(r));
    save("resumed", "verified", &b);
    clear(&b);
    resumed_body(r, -EIO, 2);
    put(&b, r, sizeof(r));
    save("resumed", "mismatch", &b);

    uint8_t req[LM_PAGE_REQUEST_SIZE];
    lm_page_request pr = {.block_id = FUZZ_BLOCK0_ID, .offset = 31 * FUZZ_PAGE};
    clear(&b);
    lm_page_request_encode(&pr, req);
    put(&b, req, sizeof(req));
    save("page_request", "block0", &b);
    pr = (lm_page_request){.block_id = FUZZ_BLOCK1_ID, .offset = 7 * FUZZ_PAGE};
    clear(&b);
    lm_page_request_encode(&pr, req);
    put(&b, req, sizeof(req));
    save("page_request", "block7", &b);

    clear(&b);
    put8(&b, 255);
    put32(&b, EIO);
    const char *text =
        "cannot place page 0x4000: \x1b[31mred\x1b[0m\r\nlivemig: migration completed";
    put(&b, text, strlen(text));
    save("error_text", "escapes", &b);
    clear(&b);
    put8(&b, 7);
    put32(&b, 0);
    put(&b, "\x7f\x01ok", 4);
    save("error_text", "small-buffer", &b);
    free(b.p);
}

static void seeds_maps(void)
{
    lm_ram ram;
    fuzz_ram_init(&ram);
    buf b = {0};
    put8(&b, 0);
    switch_map(&b, &ram, 3, 1);
    save("switch_map", "every-third", &b);
    clear(&b);
    put8(&b, 1); /* with verification */
    switch_map(&b, &ram, 1, 0);
    save("switch_map", "all-verify", &b);
    clear(&b);
    switch_map(&b, &ram, 5, 2);
    save("recover_map", "every-fifth", &b);
    clear(&b);
    switch_map(&b, &ram, 1, 0);
    save("recover_map", "all", &b);
    free(b.p);
    fuzz_ram_free(&ram);
}

static void seeds_src_replies(void)
{
    buf b = {0};
    uint8_t r[LM_RESUMED_SIZE], req[LM_PAGE_REQUEST_SIZE];
    put8(&b, 0);
    empty(&b, LM_MSG_HELLO_ACK);
    empty(&b, LM_MSG_PONG);
    resumed_body(r, 0, 1);
    frame(&b, LM_MSG_SWITCHOVER_READY, r, sizeof(r));
    resumed_body(r, 0, 0);
    frame(&b, LM_MSG_RESUMED, r, sizeof(r));
    lm_page_request pr = {.block_id = FUZZ_BLOCK1_ID, .offset = 2 * FUZZ_PAGE};
    lm_page_request_encode(&pr, req);
    frame(&b, LM_MSG_PAGE_REQUEST, req, sizeof(req));
    resumed_body(r, 0, 1);
    frame(&b, LM_MSG_POSTCOPY_DONE, r, sizeof(r));
    save("src_replies", "migration", &b);
    clear(&b);
    put8(&b, 2);
    resumed_body(r, -EIO, 2);
    frame(&b, LM_MSG_SWITCHOVER_READY, r, sizeof(r));
    save("src_replies", "refused", &b);
    clear(&b);
    put8(&b, 0);
    error_frame(&b, 22, "the source uses 4096-byte pages, this host \x1b]0;x\x07");
    save("src_replies", "error", &b);
    clear(&b);
    put8(&b, 4);
    frame(&b, LM_MSG_PAGE_REQUEST, req, sizeof(req));
    error_frame(&b, 5, "fault thread died");
    save("src_replies", "return-path", &b);
    free(b.p);
}

static void seeds_recv_chan(void)
{
    const uint64_t n0[] = {0, FUZZ_PAGE, 2 * FUZZ_PAGE, 9 * FUZZ_PAGE}, z0[] = {5 * FUZZ_PAGE};
    const uint64_t n1[] = {7 * FUZZ_PAGE}, z1[] = {0, FUZZ_PAGE};
    for (lm_compression m = 0; m < LM_COMPRESSION__COUNT; m++) {
        lm_err err;
        lm_err_init(&err);
        lm_codec tx = {0};
        if (m)
            FUZZ_CHECK(lm_codec_init(&tx, m, true, LM_PACKET_MAX_PAGES, FUZZ_PAGE, 0, &err) == 0);
        buf b = {0};
        put8(&b, (uint8_t)m);
        packet(&b, m ? &tx : NULL, NULL, FUZZ_BLOCK0_ID, n0, 4, z0, 1, 1);
        packet(&b, m ? &tx : NULL, NULL, FUZZ_BLOCK1_ID, n1, 1, z1, 2, 9);
        sync_packet(&b);
        packet(&b, m ? &tx : NULL, NULL, FUZZ_BLOCK0_ID, n0 + 1, 2, NULL, 0, 3);
        save("recv_chan", lm_compression_name(m), &b);
        b.p[0] |= 4; /* through the bounce buffer, as in postcopy */
        char name[32];
        snprintf(name, sizeof(name), "%s-bounce", lm_compression_name(m));
        save("recv_chan", name, &b);
        free(b.p);
        lm_codec_cleanup(&tx);
    }
}

/* A ZERO_RANGES frame; the shadow's pages in the ranges become zero. */
static void zero_ranges_frame(buf *out, lm_ram *shadow, uint32_t block, const lm_zero_range *r,
                              uint32_t n)
{
    uint8_t body[LM_ZERO_RANGES_HDR + 4 * LM_ZERO_RANGE_SIZE];
    FUZZ_CHECK(n <= 4);
    lm_zero_ranges_encode(block, r, n, body);
    frame(out, LM_MSG_ZERO_RANGES, body, (uint32_t)lm_zero_ranges_size(n));
    lm_block *b = shadow_block(shadow, block);
    for (uint32_t i = 0; i < n; i++)
        memset(b->host + r[i].first * FUZZ_PAGE, 0, r[i].npages * FUZZ_PAGE);
}

/* Precopy with everything a destination reads, for the layout of fuzz.h.
 * flags: HELLO flags (with verify: a matching digest). */
static void precopy_stream(buf *b, uint32_t flags, lm_compression m, unsigned chunk_opt)
{
    lm_ram shadow;
    fuzz_ram_init(&shadow);
    lm_err err;
    lm_err_init(&err);
    lm_codec tx = {0};
    if (m)
        FUZZ_CHECK(lm_codec_init(&tx, m, true, LM_PACKET_MAX_PAGES, FUZZ_PAGE, 0, &err) == 0);
    const uint64_t n0[] = {0, 3 * FUZZ_PAGE, 4 * FUZZ_PAGE}, z0[] = {5 * FUZZ_PAGE};
    const uint64_t n1[] = {FUZZ_PAGE}, z1[] = {3 * FUZZ_PAGE, 4 * FUZZ_PAGE};
    put8(b, (uint8_t)(chunk_opt << 4));
    hello(b, flags, 0, m);
    pages_frame(b, m ? &tx : NULL, &shadow, FUZZ_BLOCK0_ID, n0, 3, z0, 1, 1);
    pages_frame(b, m ? &tx : NULL, &shadow, FUZZ_BLOCK1_ID, n1, 1, z1, 2, 2);
    const lm_zero_range r1[] = {{5, 2}, {7, 1}}, r0[] = {{0, 1}, {6, 26}};
    zero_ranges_frame(b, &shadow, FUZZ_BLOCK1_ID, r1, 2);
    empty(b, LM_MSG_ROUND_END);
    empty(b, LM_MSG_PING);
    pages_frame(b, m ? &tx : NULL, &shadow, FUZZ_BLOCK0_ID, n0 + 1, 1, NULL, 0, 3);
    zero_ranges_frame(b, &shadow, FUZZ_BLOCK0_ID, r0, 2); /* page 0 held data: cleared */
    empty(b, LM_MSG_ROUND_END);
    device_state_frame(b);
    empty(b, LM_MSG_COMPLETE);
    if (flags & LM_HELLO_VERIFY)
        verify_frame(b, &shadow);
    empty(b, LM_MSG_COMMIT);
    empty(b, LM_MSG_CONFIRMED);
    lm_codec_cleanup(&tx);
    fuzz_ram_free(&shadow);
}

static void seeds_dest_stream(void)
{
    buf b = {0};
    precopy_stream(&b, 0, LM_COMPRESSION_NONE, 0);
    save("dest_stream", "precopy", &b);
    clear(&b);
    precopy_stream(&b, LM_HELLO_VERIFY, LM_COMPRESSION_NONE, 0);
    save("dest_stream", "precopy-verify", &b);
    b.p[0] = 4; /* the guest does not resume */
    save("dest_stream", "resume-fails", &b);
    clear(&b);
    precopy_stream(&b, LM_HELLO_VERIFY, LM_COMPRESSION_NONE, 7);
    save("dest_stream", "short-reads", &b);
    for (lm_compression m = LM_COMPRESSION_ZLIB; m < LM_COMPRESSION__COUNT; m++) {
        clear(&b);
        precopy_stream(&b, LM_HELLO_VERIFY, m, 0);
        save("dest_stream", lm_compression_name(m), &b);
    }

    /* Two multifd channels, each with one round's packets and its SYNC;
     * a connection's end is a close (option bit 0), as a source ends them. */
    lm_ram shadow;
    fuzz_ram_init(&shadow);
    const uint64_t n0[] = {0, 8 * FUZZ_PAGE}, n1[] = {2 * FUZZ_PAGE}, z[] = {9 * FUZZ_PAGE};
    clear(&b);
    put8(&b, 1);
    hello(&b, LM_HELLO_VERIFY, 2, LM_COMPRESSION_NONE);
    empty(&b, LM_MSG_ROUND_END);
    device_state_frame(&b);
    empty(&b, LM_MSG_COMPLETE);
    buf ch0 = {0}, ch1 = {0};
    channel_hello(&ch0, 0);
    packet(&ch0, NULL, &shadow, FUZZ_BLOCK0_ID, n0, 2, z, 1, 11);
    sync_packet(&ch0);
    channel_hello(&ch1, 1);
    packet(&ch1, NULL, &shadow, FUZZ_BLOCK1_ID, n1, 1, NULL, 0, 12);
    sync_packet(&ch1);
    verify_frame(&b, &shadow);
    empty(&b, LM_MSG_COMMIT);
    empty(&b, LM_MSG_CONFIRMED);
    put(&b, FUZZ_STREAM_SEP, FUZZ_STREAM_SEP_LEN);
    put(&b, ch0.p, ch0.n);
    put(&b, FUZZ_STREAM_SEP, FUZZ_STREAM_SEP_LEN);
    put(&b, ch1.p, ch1.n);
    save("dest_stream", "multifd", &b);
    free(ch0.p);
    free(ch1.p);
    fuzz_ram_free(&shadow);

    /* Postcopy without a preempt connection: the switch map, the device
     * state, then userfaultfd (refused here). */
    fuzz_ram_init(&shadow);
    clear(&b);
    put8(&b, 0);
    hello(&b, LM_HELLO_POSTCOPY | LM_HELLO_NO_PREEMPT, 0, LM_COMPRESSION_NONE);
    pages_frame(&b, NULL, &shadow, FUZZ_BLOCK0_ID, n0, 2, z, 1, 1);
    empty(&b, LM_MSG_ROUND_END);
    buf map = {0};
    switch_map(&map, &shadow, 4, 1);
    frame(&b, LM_MSG_POSTCOPY_SWITCH, map.p, (uint32_t)map.n);
    free(map.p);
    device_state_frame(&b);
    empty(&b, LM_MSG_POSTCOPY_RUN);
    empty(&b, LM_MSG_POSTCOPY_END);
    save("dest_stream", "postcopy", &b);
    fuzz_ram_free(&shadow);

    /* Precopy resumed after a cut (options: close, --recover-timeout). */
    fuzz_ram_init(&shadow);
    clear(&b);
    put8(&b, 3);
    hello(&b, LM_HELLO_VERIFY, 0, LM_COMPRESSION_NONE);
    pages_frame(&b, NULL, &shadow, FUZZ_BLOCK0_ID, n0, 2, z, 1, 1);
    put(&b, FUZZ_STREAM_SEP, FUZZ_STREAM_SEP_LEN);
    hello(&b, LM_HELLO_VERIFY | LM_HELLO_RECOVER, 0, LM_COMPRESSION_NONE);
    pages_frame(&b, NULL, &shadow, FUZZ_BLOCK1_ID, n1, 1, NULL, 0, 2);
    empty(&b, LM_MSG_ROUND_END);
    device_state_frame(&b);
    empty(&b, LM_MSG_COMPLETE);
    verify_frame(&b, &shadow);
    empty(&b, LM_MSG_COMMIT);
    empty(&b, LM_MSG_CONFIRMED);
    save("dest_stream", "precopy-resume", &b);
    fuzz_ram_free(&shadow);

    /* The link breaks while the destination waits for the commit: the
     * source comes back having committed, and says so again. */
    fuzz_ram_init(&shadow);
    clear(&b);
    put8(&b, 1);
    hello(&b, 0, 0, LM_COMPRESSION_NONE);
    pages_frame(&b, NULL, &shadow, FUZZ_BLOCK0_ID, n0, 2, z, 1, 1);
    empty(&b, LM_MSG_ROUND_END);
    device_state_frame(&b);
    empty(&b, LM_MSG_COMPLETE);
    put(&b, FUZZ_STREAM_SEP, FUZZ_STREAM_SEP_LEN);
    hello(&b, LM_HELLO_RECOVER | LM_HELLO_COMMITTED, 0, LM_COMPRESSION_NONE);
    empty(&b, LM_MSG_COMMIT);
    empty(&b, LM_MSG_CONFIRMED);
    save("dest_stream", "commit-unknown", &b);
    fuzz_ram_free(&shadow);

    clear(&b);
    put8(&b, 0);
    hello(&b, 0, 0, LM_COMPRESSION_NONE);
    error_frame(&b, 28, "no space left \x1b[2J on the source");
    save("dest_stream", "source-error", &b);
    free(b.p);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) < 0 && errno != EEXIST) {
        perror(root);
        return 1;
    }
    seeds_frame();
    seeds_hello();
    seeds_channel_hello();
    seeds_packet();
    seeds_decompress();
    seeds_device_state();
    seeds_small();
    seeds_maps();
    seeds_src_replies();
    seeds_recv_chan();
    seeds_dest_stream();
    return 0;
}
