/*
 * multifd compression methods: for zlib, zstd and lz4, long streams of
 * packets (random, text-like, zero and mixed pages, 1..128 pages) compressed
 * in full and then decompressed in order, proof that the dictionary carries
 * over between packets, the ratio and speed on text-like pages, the bound,
 * a guest scribbling on pages while they are compressed, and corrupt
 * payloads (flipped bytes, truncation, appended garbage, random bytes, the
 * wrong page count) fed to a decoder whose pages are surrounded by PROT_NONE
 * guard pages and whose input ends at a PROT_NONE page, so that any write
 * or read out of bounds crashes the test. Then names and parsing.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "multifd/compress.h"

#define PS       4096u /* guest page size used throughout */
#define MAXP     128u  /* max_pages of every state */
#define NPACKETS 200

static size_t sys_page;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- guarded memory --------------------------------------------------------- */

/* n page slots, each one system page (>= PS) between PROT_NONE pages; the PS
 * bytes used sit at the end of the slot, so an overrun faults at once. */
typedef struct guarded {
    uint8_t *base;
    size_t len;
    unsigned n;
} guarded;

static void guarded_init(guarded *g, unsigned n)
{
    g->n = n;
    g->len = (2 * (size_t)n + 1) * sys_page;
    g->base = mmap(NULL, g->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->base == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    for (unsigned i = 0; i < n; i++)
        if (mprotect(g->base + (2 * (size_t)i + 1) * sys_page, sys_page, PROT_READ | PROT_WRITE)) {
            perror("mprotect");
            exit(1);
        }
}

static uint8_t *guarded_page(const guarded *g, unsigned i)
{
    return g->base + (2 * (size_t)i + 2) * sys_page - PS;
}

static void guarded_free(guarded *g)
{
    munmap(g->base, g->len);
}

/* An input buffer whose end touches a PROT_NONE page. */
typedef struct guarded_in {
    uint8_t *base;
    size_t room;
} guarded_in;

static void guarded_in_init(guarded_in *g, size_t room)
{
    g->room = (room + sys_page - 1) / sys_page * sys_page;
    g->base =
        mmap(NULL, g->room + sys_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->base == MAP_FAILED || mprotect(g->base + g->room, sys_page, PROT_NONE)) {
        perror("mmap");
        exit(1);
    }
}

static const uint8_t *guarded_in_put(guarded_in *g, const uint8_t *data, size_t len)
{
    if (len > g->room) {
        fprintf(stderr, "input of %zu bytes too large\n", len);
        exit(1);
    }
    uint8_t *p = g->base + g->room - len;
    memmove(p, data, len);
    return p;
}

static void guarded_in_free(guarded_in *g)
{
    munmap(g->base, g->room + sys_page);
}

/* ---- page contents ---------------------------------------------------------- */

enum { K_RANDOM, K_TEXT, K_ZERO, K_SPARSE, K_REPEAT, K__COUNT };

static void fill_random(uint8_t *p, unsigned long long *rng)
{
    for (size_t i = 0; i < PS; i += 8) {
        unsigned long long v = test_rand(rng);
        memcpy(p + i, &v, 8);
    }
}

/* Log-like lines: a few templates, a small vocabulary, small numbers. */
static void fill_text(uint8_t *p, unsigned long long *rng)
{
    static const char *const words[] = {
        "migration", "page",  "dirty",  "channel", "guest",   "memory", "kernel", "buffer",
        "request",   "error", "value",  "state",   "thread",  "socket", "packet", "stream",
        "window",    "block", "vcpu",   "device",  "timer",   "queue",  "offset", "length",
        "status",    "ok",    "failed", "retry",   "pending", "the",    "of",     "to",
    };
    static const char *const levels[] = {"INFO", "DEBUG", "WARN", "ERROR"};
    char line[160];
    size_t off = 0;
    while (off < PS) {
        unsigned long long r = test_rand(rng);
        int len;
        switch (r % 3) {
        case 0:
            len = snprintf(line, sizeof(line), "2024-06-%02u 12:%02u:%02u %s %s: %s %s %s=%u\n",
                           (unsigned)(r >> 8) % 28 + 1, (unsigned)(r >> 16) % 60,
                           (unsigned)(r >> 24) % 60, levels[(r >> 32) % 4], words[(r >> 34) % 32],
                           words[(r >> 39) % 32], words[(r >> 44) % 32], words[(r >> 49) % 32],
                           (unsigned)(r >> 54) % 1000);
            break;
        case 1:
            len = snprintf(line, sizeof(line), "    <%s id=\"%u\" %s=\"%s\">%s %s</%s>\n",
                           words[(r >> 8) % 32], (unsigned)(r >> 13) % 4096, words[(r >> 25) % 32],
                           words[(r >> 30) % 32], words[(r >> 35) % 32], words[(r >> 40) % 32],
                           words[(r >> 8) % 32]);
            break;
        default:
            len = snprintf(line, sizeof(line), "{\"%s\": %u, \"%s\": \"%s\", \"%s\": %s},\n",
                           words[(r >> 8) % 32], (unsigned)(r >> 13) % 100000,
                           words[(r >> 30) % 32], words[(r >> 35) % 32], words[(r >> 40) % 32],
                           (r >> 45) & 1 ? "true" : "false");
            break;
        }
        size_t n = (size_t)len < PS - off ? (size_t)len : PS - off;
        memcpy(p + off, line, n);
        off += n;
    }
}

/* prev: a page seen earlier in the stream (NULL: none yet). */
static void fill_page(uint8_t *p, int kind, const uint8_t *prev, unsigned long long *rng)
{
    switch (kind) {
    case K_RANDOM:
        fill_random(p, rng);
        break;
    case K_TEXT:
        fill_text(p, rng);
        break;
    case K_ZERO:
        memset(p, 0, PS);
        break;
    case K_SPARSE:
        memset(p, 0, PS);
        for (int i = 0; i < 8; i++) {
            unsigned long long r = test_rand(rng);
            p[r % PS] = (uint8_t)(r >> 32);
        }
        break;
    default: /* K_REPEAT: a recent page with a small change */
        if (prev)
            memcpy(p, prev, PS);
        else
            fill_text(p, rng);
        p[test_rand(rng) % PS] ^= 0x5a;
        break;
    }
}

/* ---- helpers ---------------------------------------------------------------- */

static lm_err err;

static int msg_ok(const lm_compress_ops *ops)
{
    return err.msg[0] && strncmp(err.msg, ops->name, strlen(ops->name)) == 0;
}

static void *send_new(const lm_compress_ops *ops)
{
    void *st = NULL;
    lm_err_reset(&err);
    int r = ops->send_setup(&st, MAXP, PS, &err);
    if (r != 0 || !st) {
        fprintf(stderr, "%s send_setup: %d %s\n", ops->name, r, err.msg);
        exit(1);
    }
    return st;
}

static void *recv_new(const lm_compress_ops *ops)
{
    void *st = NULL;
    lm_err_reset(&err);
    int r = ops->recv_setup(&st, MAXP, PS, &err);
    if (r != 0 || !st) {
        fprintf(stderr, "%s recv_setup: %d %s\n", ops->name, r, err.msg);
        exit(1);
    }
    return st;
}

typedef struct packet {
    unsigned n;
    uint8_t *src; /* n*PS original bytes */
    uint8_t *payload;
    size_t len;
} packet;

static int compress_packet(const lm_compress_ops *ops, void *tx, packet *pk, uint8_t *out,
                           size_t cap)
{
    uint8_t *pages[MAXP];
    for (unsigned i = 0; i < pk->n; i++)
        pages[i] = pk->src + (size_t)i * PS;
    lm_err_reset(&err);
    int r = ops->compress(tx, pages, pk->n, out, cap, &pk->len, &err);
    if (r != 0) {
        fprintf(stderr, "%s compress of %u pages: %d %s\n", ops->name, pk->n, r, err.msg);
        return r;
    }
    pk->payload = malloc(pk->len ? pk->len : 1);
    memcpy(pk->payload, out, pk->len);
    return 0;
}

/* Decompresses into the first n slots of g in a scrambled order; returns the
 * decompress result. Slots are prefilled with 0xa5. */
static int decompress_into(const lm_compress_ops *ops, void *rx, const uint8_t *in, size_t len,
                           unsigned n, const guarded *g, uint8_t *pages[])
{
    for (unsigned i = 0; i < n; i++) {
        pages[i] = guarded_page(g, (i * 37u + 11u) % n);
        memset(pages[i], 0xa5, PS);
    }
    lm_err_reset(&err);
    return ops->decompress(rx, in, len, pages, n, &err);
}

static int pages_equal(uint8_t *const pages[], const uint8_t *src, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (memcmp(pages[i], src + (size_t)i * PS, PS))
            return 0;
    return 1;
}

/* ---- round trips -------------------------------------------------------------- */

/* 200 packets of every kind and size, all compressed first, then all
 * decompressed in order by one receiver: the stream state carries over. */
static void round_trip(const lm_compress_ops *ops, lm_compression m)
{
    size_t cap = lm_compress_bound(m, MAXP, PS);
    uint8_t *out = malloc(cap); /* exact size: ASan sees any overrun */
    packet *pk = calloc(NPACKETS, sizeof(*pk));
    unsigned long long rng = 0x9e3779b97f4a7c15ULL ^ (unsigned)m;
    void *tx = send_new(ops);
    const uint8_t *prev = NULL;
    size_t in_total = 0, out_total = 0;
    for (int k = 0; k < NPACKETS; k++) {
        unsigned n;
        switch (k % 8) {
        case 0:
            n = 1;
            break;
        case 1:
            n = MAXP;
            break;
        case 2:
            n = 2;
            break;
        default:
            n = 1 + (unsigned)(test_rand(&rng) % (k % 8 == 7 ? MAXP : 24));
            break;
        }
        int mode = (k / 8) % 5; /* random, text, zero, mixed (twice) */
        pk[k].n = n;
        pk[k].src = malloc((size_t)n * PS);
        for (unsigned i = 0; i < n; i++) {
            int kind = mode == 0   ? K_RANDOM
                       : mode == 1 ? K_TEXT
                       : mode == 2 ? K_ZERO
                                   : (int)(test_rand(&rng) % K__COUNT);
            uint8_t *p = pk[k].src + (size_t)i * PS;
            fill_page(p, kind, prev, &rng);
            prev = p;
        }
        if (compress_packet(ops, tx, &pk[k], out, cap)) {
            lm_test_failures++;
            break;
        }
        CHECK(pk[k].len > 0 && pk[k].len <= cap);
        in_total += (size_t)n * PS;
        out_total += pk[k].len;
    }
    ops->send_cleanup(tx);

    guarded g;
    guarded_init(&g, MAXP);
    void *rx = recv_new(ops);
    int bad = 0;
    for (int k = 0; k < NPACKETS && pk[k].payload && !bad; k++) {
        uint8_t *pages[MAXP];
        int r = decompress_into(ops, rx, pk[k].payload, pk[k].len, pk[k].n, &g, pages);
        if (r != 0) {
            fprintf(stderr, "%s: packet %d (%u pages) rejected: %d %s\n", ops->name, k, pk[k].n, r,
                    err.msg);
            bad = 1;
        } else if (!pages_equal(pages, pk[k].src, pk[k].n)) {
            fprintf(stderr, "%s: packet %d (%u pages) decodes to other data\n", ops->name, k,
                    pk[k].n);
            bad = 1;
        }
    }
    CHECK(!bad);
    ops->recv_cleanup(rx);
    guarded_free(&g);
    fprintf(stderr, "%s: %d packets, %zu -> %zu bytes (mixed data)\n", ops->name, NPACKETS,
            in_total, out_total);
    for (int k = 0; k < NPACKETS; k++) {
        free(pk[k].src);
        free(pk[k].payload);
    }
    free(pk);
    free(out);
}

/* A page sent again in the next packet costs almost nothing: the receiver
 * must hold the same history as the sender. */
static void dictionary_carries_over(const lm_compress_ops *ops, lm_compression m)
{
    size_t cap = lm_compress_bound(m, MAXP, PS);
    uint8_t *out = malloc(cap);
    unsigned long long rng = 77;
    packet a = {.n = 1, .src = malloc(PS)}, b = {.n = 1, .src = malloc(PS)};
    fill_random(a.src, &rng);
    memcpy(b.src, a.src, PS);
    void *tx = send_new(ops);
    CHECK(compress_packet(ops, tx, &a, out, cap) == 0);
    CHECK(compress_packet(ops, tx, &b, out, cap) == 0);
    ops->send_cleanup(tx);
    CHECK(a.len >= PS);
    CHECK(b.len < 64);

    guarded g;
    guarded_init(&g, 1);
    uint8_t *pages[1];
    void *rx = recv_new(ops);
    CHECK(decompress_into(ops, rx, a.payload, a.len, 1, &g, pages) == 0);
    CHECK(pages_equal(pages, a.src, 1));
    CHECK(decompress_into(ops, rx, b.payload, b.len, 1, &g, pages) == 0);
    CHECK(pages_equal(pages, b.src, 1));
    ops->recv_cleanup(rx);
    /* Without the first packet, the second one cannot be decoded right. */
    rx = recv_new(ops);
    int r = decompress_into(ops, rx, b.payload, b.len, 1, &g, pages);
    CHECK(r < 0 || !pages_equal(pages, b.src, 1));
    ops->recv_cleanup(rx);
    guarded_free(&g);
    free(a.src);
    free(a.payload);
    free(b.src);
    free(b.payload);
    free(out);
}

/* Incompressible 128-page packets fit the bound; a smaller buffer is refused. */
static void bound_holds(const lm_compress_ops *ops, lm_compression m)
{
    size_t cap = lm_compress_bound(m, MAXP, PS);
    CHECK(cap >= (size_t)MAXP * PS);
    CHECK(lm_compress_bound(m, 1, PS) >= PS);
    CHECK(lm_compress_bound(m, 1, PS) < cap);
    uint8_t *out = malloc(cap);
    unsigned long long rng = 4242;
    void *tx = send_new(ops);
    packet pk = {.n = MAXP, .src = malloc((size_t)MAXP * PS)};
    for (int k = 0; k < 4; k++) {
        for (unsigned i = 0; i < MAXP; i++)
            fill_random(pk.src + (size_t)i * PS, &rng);
        CHECK(compress_packet(ops, tx, &pk, out, cap) == 0);
        CHECK(pk.len <= cap);
        free(pk.payload);
        pk.payload = NULL;
    }
    ops->send_cleanup(tx);

    /* Too small an output buffer: -ENOBUFS, nothing written past it. */
    tx = send_new(ops);
    uint8_t *small = malloc(1000);
    uint8_t *pages[MAXP];
    for (unsigned i = 0; i < MAXP; i++)
        pages[i] = pk.src + (size_t)i * PS;
    size_t len = 0;
    lm_err_reset(&err);
    int r = ops->compress(tx, pages, MAXP, small, 1000, &len, &err);
    CHECK(r == -ENOBUFS);
    CHECK(msg_ok(ops));
    ops->send_cleanup(tx);

    /* n out of range. */
    tx = send_new(ops);
    lm_err_reset(&err);
    CHECK(ops->compress(tx, pages, 0, out, cap, &len, &err) == -EINVAL);
    lm_err_reset(&err);
    CHECK(ops->compress(tx, pages, MAXP + 1, out, cap, &len, &err) == -EINVAL);
    CHECK(msg_ok(ops));
    ops->send_cleanup(tx);

    /* Setup with nonsense sizes. */
    void *st = NULL;
    lm_err_reset(&err);
    CHECK(ops->send_setup(&st, 0, PS, &err) == -EINVAL);
    CHECK(msg_ok(ops));
    lm_err_reset(&err);
    CHECK(ops->recv_setup(&st, MAXP, 0, &err) == -EINVAL);
    CHECK(msg_ok(ops));
    ops->send_cleanup(NULL);
    ops->recv_cleanup(NULL);

    free(small);
    free(pk.src);
    free(out);
}

/* ---- ratio and speed ---------------------------------------------------------- */

#define BENCH_PACKETS 32

static void ratio_and_speed(const lm_compress_ops *ops, lm_compression m)
{
    size_t cap = lm_compress_bound(m, MAXP, PS);
    size_t packet_bytes = (size_t)MAXP * PS;
    uint8_t *src = malloc(BENCH_PACKETS * packet_bytes);
    uint8_t *payload = malloc(BENCH_PACKETS * cap);
    size_t lens[BENCH_PACKETS];
    unsigned long long rng = 31337;
    for (size_t i = 0; i < BENCH_PACKETS * (size_t)MAXP; i++)
        fill_text(src + i * PS, &rng);

    void *tx = send_new(ops);
    uint8_t *pages[MAXP];
    double t0 = now();
    for (int k = 0; k < BENCH_PACKETS; k++) {
        for (unsigned i = 0; i < MAXP; i++)
            pages[i] = src + k * packet_bytes + (size_t)i * PS;
        lm_err_reset(&err);
        int r = ops->compress(tx, pages, MAXP, payload + k * cap, cap, &lens[k], &err);
        CHECK(r == 0);
    }
    double t1 = now();
    ops->send_cleanup(tx);

    uint8_t *dst = aligned_alloc(4096, packet_bytes);
    void *rx = recv_new(ops);
    for (unsigned i = 0; i < MAXP; i++)
        pages[i] = dst + (size_t)i * PS;
    int bad = 0;
    double t2 = now(), t3 = 0;
    for (int k = 0; k < BENCH_PACKETS; k++) {
        lm_err_reset(&err);
        int r = ops->decompress(rx, payload + k * cap, lens[k], pages, MAXP, &err);
        double t = now();
        t3 += t - t2;
        if (r != 0 || memcmp(dst, src + k * packet_bytes, packet_bytes))
            bad = 1;
        t2 = now();
    }
    CHECK(!bad);
    ops->recv_cleanup(rx);

    size_t in_total = BENCH_PACKETS * packet_bytes, out_total = 0;
    for (int k = 0; k < BENCH_PACKETS; k++)
        out_total += lens[k];
    double ratio = (double)in_total / (double)out_total;
    fprintf(stderr,
            "%s: text-like %zu MiB in %u-page packets: ratio %.2f, compress %.0f MB/s, "
            "decompress %.0f MB/s (one thread)\n",
            ops->name, in_total >> 20, MAXP, ratio, (double)in_total / (t1 - t0) / 1e6,
            (double)in_total / t3 / 1e6);
    CHECK(ratio > 2.0);
    free(dst);
    free(src);
    free(payload);
}

/* ---- a guest writing while pages are compressed ---------------------------------- */

typedef struct scribbler {
    uint8_t *mem;
    size_t len;
    atomic_int stop;
} scribbler;

static void *scribble(void *arg)
{
    scribbler *s = arg;
    unsigned long long rng = 99;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        unsigned long long r = test_rand(&rng);
        size_t off = (r % (s->len / 8)) * 8;
        /* Relaxed atomic stores: a racing guest, without undefined behaviour. */
        atomic_store_explicit((_Atomic unsigned long long *)(void *)(s->mem + off), r,
                              memory_order_relaxed);
    }
    return NULL;
}

static void concurrent_writes(const lm_compress_ops *ops, lm_compression m)
{
    size_t cap = lm_compress_bound(m, MAXP, PS);
    uint8_t *out = malloc(cap);
    unsigned npages = 32;
    scribbler s = {.mem = aligned_alloc(4096, (size_t)npages * PS), .len = (size_t)npages * PS};
    unsigned long long rng = 5;
    for (unsigned i = 0; i < npages; i++)
        fill_text(s.mem + (size_t)i * PS, &rng);
    atomic_init(&s.stop, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, scribble, &s) == 0);
    void *tx = send_new(ops), *rx = recv_new(ops);
    guarded g;
    guarded_init(&g, npages);
    uint8_t *src[MAXP], *dst[MAXP];
    for (unsigned i = 0; i < npages; i++)
        src[i] = s.mem + (size_t)i * PS;
    int bad = 0;
    for (int k = 0; k < 40 && !bad; k++) {
        unsigned n = 1 + (unsigned)(test_rand(&rng) % npages);
        size_t len = 0;
        lm_err_reset(&err);
        if (ops->compress(tx, src, n, out, cap, &len, &err) != 0) {
            fprintf(stderr, "%s: compress under writes: %s\n", ops->name, err.msg);
            bad = 1;
        } else if (decompress_into(ops, rx, out, len, n, &g, dst) != 0) {
            fprintf(stderr, "%s: decompress after writes: %s\n", ops->name, err.msg);
            bad = 1;
        }
    }
    CHECK(!bad);
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    ops->send_cleanup(tx);
    ops->recv_cleanup(rx);
    guarded_free(&g);
    free(s.mem);
    free(out);
}

/* ---- corrupt payloads --------------------------------------------------------- */

#define CORRUPT_PACKETS 4
static const unsigned corrupt_n[CORRUPT_PACKETS] = {4, 8, 3, 6};

typedef struct corrupt_ctx {
    const lm_compress_ops *ops;
    packet pk[CORRUPT_PACKETS];
    guarded g;      /* MAXP guarded page slots */
    guarded_in gin; /* input ending at a guard page */
    uint8_t *buf;   /* scratch for building a corrupt payload */
    size_t buf_room;
    int rejected, accepted;
} corrupt_ctx;

/* Fresh receiver fed packets 0..t-1, then 'in' as packet t, decoded as n
 * pages. Returns the result; a rejection must be -EBADMSG with a message
 * naming the method. */
static int try_corrupt(corrupt_ctx *c, unsigned t, const uint8_t *in, size_t len, unsigned n)
{
    const lm_compress_ops *ops = c->ops;
    void *rx = recv_new(ops);
    uint8_t *pages[MAXP + 1];
    for (unsigned k = 0; k < t; k++) {
        int r = decompress_into(ops, rx, c->pk[k].payload, c->pk[k].len, c->pk[k].n, &c->g, pages);
        CHECK(r == 0);
    }
    const uint8_t *gi = guarded_in_put(&c->gin, in, len);
    int r = decompress_into(ops, rx, gi, len, n, &c->g, pages);
    ops->recv_cleanup(rx);
    if (r < 0) {
        c->rejected++;
        if (r != -EBADMSG || !msg_ok(ops) || !strstr(err.msg, "payload corrupt")) {
            fprintf(stderr, "%s: rejection %d with message '%s'\n", ops->name, r, err.msg);
            lm_test_failures++;
        }
    } else {
        c->accepted++;
        CHECK(r == 0);
    }
    return r;
}

static void corrupt_payloads(const lm_compress_ops *ops, lm_compression m)
{
    corrupt_ctx c = {.ops = ops};
    size_t cap = lm_compress_bound(m, MAXP, PS);
    uint8_t *out = malloc(cap);
    unsigned long long rng = 2024 + (unsigned)m;
    void *tx = send_new(ops);
    const uint8_t *prev = NULL;
    for (unsigned k = 0; k < CORRUPT_PACKETS; k++) {
        c.pk[k].n = corrupt_n[k];
        c.pk[k].src = malloc((size_t)corrupt_n[k] * PS);
        for (unsigned i = 0; i < corrupt_n[k]; i++) {
            uint8_t *p = c.pk[k].src + (size_t)i * PS;
            fill_page(p, i % 2 ? K_TEXT : (int)(test_rand(&rng) % K__COUNT), prev, &rng);
            prev = p;
        }
        CHECK(compress_packet(ops, tx, &c.pk[k], out, cap) == 0);
    }
    ops->send_cleanup(tx);
    guarded_init(&c.g, MAXP + 1);
    c.buf_room = cap + 4096;
    c.buf = malloc(c.buf_room);
    guarded_in_init(&c.gin, c.buf_room);

    /* The valid stream decodes, through the same helper. */
    for (unsigned t = 0; t < CORRUPT_PACKETS; t++)
        CHECK(try_corrupt(&c, t, c.pk[t].payload, c.pk[t].len, c.pk[t].n) == 0);
    c.rejected = c.accepted = 0;

    int must_reject = 0, must_rejected = 0;
#define MUST_REJECT(t, in, len, n)                                                                 \
    do {                                                                                           \
        must_reject++;                                                                             \
        if (try_corrupt(&c, (t), (in), (len), (n)) < 0)                                            \
            must_rejected++;                                                                       \
        else                                                                                       \
            fprintf(stderr, "%s:%d: %s accepted a corrupt payload (packet %u)\n", __FILE__,        \
                    __LINE__, ops->name, (t));                                                     \
    } while (0)

    static const unsigned targets[] = {0, CORRUPT_PACKETS - 1};
    for (unsigned ti = 0; ti < 2; ti++) {
        unsigned t = targets[ti];
        const packet *p = &c.pk[t];

        /* Truncation: always detectable (too little output or a cut block). */
        size_t cuts[] = {1, 2, 3, 4, 5, 8, p->len / 2, p->len - 1};
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
            if (cuts[i] < p->len)
                MUST_REJECT(t, p->payload, p->len - cuts[i], p->n);
        MUST_REJECT(t, p->payload, 1, p->n);

        /* Appended garbage: output past n pages, or a stream that does not
         * end at the packet boundary. */
        for (int i = 0; i < 20; i++) {
            size_t extra = 1 + (size_t)(test_rand(&rng) % 64);
            memcpy(c.buf, p->payload, p->len);
            for (size_t j = 0; j < extra; j++)
                c.buf[p->len + j] = (uint8_t)test_rand(&rng);
            MUST_REJECT(t, c.buf, p->len + extra, p->n);
        }

        /* Random bytes instead of a payload. */
        for (int i = 0; i < 20; i++) {
            size_t len = 1 + (size_t)(test_rand(&rng) % (2 * p->len));
            for (size_t j = 0; j < len; j++)
                c.buf[j] = (uint8_t)test_rand(&rng);
            MUST_REJECT(t, c.buf, len, p->n);
        }

        /* A valid payload for n pages decoded as n+1 or n-1. */
        MUST_REJECT(t, p->payload, p->len, p->n + 1);
        if (p->n > 1)
            MUST_REJECT(t, p->payload, p->len, p->n - 1);

        /* Flipped bytes: without a checksum a flipped literal can decode to
         * other page contents, so either outcome is allowed here, but a
         * rejection must be -EBADMSG with a message, nothing may be touched
         * out of bounds, and most flips must be caught somewhere. */
        for (int i = 0; i < 60; i++) {
            memcpy(c.buf, p->payload, p->len);
            int flips = 1 + (int)(test_rand(&rng) % 3);
            for (int f = 0; f < flips; f++) {
                unsigned long long r = test_rand(&rng);
                /* Half the flips in the first 16 bytes, where the headers are. */
                size_t at = (r & 1) && p->len > 16 ? (r >> 8) % 16 : (r >> 8) % p->len;
                c.buf[at] ^= (uint8_t)(1 + (r >> 40) % 255);
            }
            try_corrupt(&c, t, c.buf, p->len, p->n);
        }
    }
#undef MUST_REJECT
    CHECK_EQ_U64(must_rejected, must_reject);
    fprintf(stderr,
            "%s: %d/%d must-reject payloads rejected; byte flips: %d rejected, %d "
            "decoded (no checksum)\n",
            ops->name, must_rejected, must_reject, c.rejected - must_rejected,
            c.accepted - (must_reject - must_rejected));

    /* n out of range on the receiver. */
    void *rx = recv_new(ops);
    uint8_t *pages[MAXP + 1];
    for (unsigned i = 0; i <= MAXP; i++)
        pages[i] = guarded_page(&c.g, i);
    lm_err_reset(&err);
    CHECK(ops->decompress(rx, c.pk[0].payload, c.pk[0].len, pages, 0, &err) == -EINVAL);
    lm_err_reset(&err);
    CHECK(ops->decompress(rx, c.pk[0].payload, c.pk[0].len, pages, MAXP + 1, &err) == -EINVAL);
    CHECK(msg_ok(ops));
    lm_err_reset(&err);
    CHECK(ops->decompress(rx, c.pk[0].payload, 0, pages, 1, &err) == -EBADMSG);
    CHECK(msg_ok(ops));
    ops->recv_cleanup(rx);

    for (unsigned k = 0; k < CORRUPT_PACKETS; k++) {
        free(c.pk[k].src);
        free(c.pk[k].payload);
    }
    guarded_free(&c.g);
    guarded_in_free(&c.gin);
    free(c.buf);
    free(out);
}

/* ---- registry ------------------------------------------------------------------ */

static void registry(void)
{
    for (unsigned i = 0; i < LM_COMPRESSION__COUNT; i++) {
        lm_compression m = (lm_compression)i, back = LM_COMPRESSION__COUNT;
        const char *name = lm_compression_name(m);
        CHECK(lm_compression_parse(name, &back) == 0);
        CHECK_EQ_U64(back, m);
        const lm_compress_ops *ops = lm_compress_get(m);
        if (m == LM_COMPRESSION_NONE) {
            CHECK(ops == NULL);
            CHECK(strcmp(name, "none") == 0);
        } else {
            CHECK(ops && strcmp(ops->name, name) == 0);
            CHECK(ops && ops->send_setup && ops->compress && ops->send_cleanup && ops->recv_setup &&
                  ops->decompress && ops->recv_cleanup);
        }
    }
    static const char *const bad[] = {"gzip", "", "ZSTD", "zstd ", "lz4hc", "nonee", "zlib1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lm_compression m = LM_COMPRESSION_ZSTD;
        CHECK(lm_compression_parse(bad[i], &m) == -EINVAL);
        CHECK(m == LM_COMPRESSION_ZSTD);
    }
    lm_compression m;
    CHECK(lm_compression_parse(NULL, &m) == -EINVAL);
    CHECK(lm_compress_get(LM_COMPRESSION__COUNT) == NULL);
    CHECK(lm_compress_get((lm_compression)-1) == NULL);
    CHECK(strcmp(lm_compression_name(LM_COMPRESSION__COUNT), "unknown") == 0);
    CHECK_EQ_U64(lm_compress_bound(LM_COMPRESSION_NONE, MAXP, PS), (size_t)MAXP * PS);
    CHECK_EQ_U64(lm_compress_bound(LM_COMPRESSION__COUNT, MAXP, PS), 0);
    CHECK_EQ_U64(lm_compress_bound(LM_COMPRESSION_LZ4, 1u << 31, PS), 0);
}

int main(void)
{
    long sp = sysconf(_SC_PAGESIZE);
    sys_page = sp >= (long)PS ? (size_t)sp : PS;
    lm_err_init(&err);
    double t0 = now();
    registry();
    static const lm_compression methods[] = {LM_COMPRESSION_ZLIB, LM_COMPRESSION_ZSTD,
                                             LM_COMPRESSION_LZ4};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        lm_compression m = methods[i];
        const lm_compress_ops *ops = lm_compress_get(m);
        CHECK(ops != NULL);
        if (!ops)
            continue;
        round_trip(ops, m);
        dictionary_carries_over(ops, m);
        bound_holds(ops, m);
        ratio_and_speed(ops, m);
        concurrent_writes(ops, m);
        corrupt_payloads(ops, m);
    }
    fprintf(stderr, "total %.2f s\n", now() - t0);
    TEST_DONE();
}
