/*
 * The RAM digest used by --verify: equal content gives equal digests across
 * contexts and allocations, any one-byte change shows, never-populated pages
 * hash as zero pages without being populated, blocks are hashed in id order,
 * and the page count covers every page.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "livemig.h"
#include "migration/engine.h"
#include "ram/ram.h"

static uint64_t ps;

struct blk {
    uint32_t id;
    uint64_t npages;
};

/* The layout used by most tests: odd sizes, ids not in order. */
static const struct blk layout[] = {{5, 37}, {1, 64}, {2, 1}, {9, 130}};
#define NBLK         (sizeof(layout) / sizeof(layout[0]))
#define LAYOUT_PAGES (37 + 64 + 1 + 130)

struct ram {
    lm_ctx *ctx;
    uint8_t *host[NBLK];
};

/* Registers the layout's blocks, in the order given by 'order'. */
/* Block names are unique within a context: "blk0", "blk1", ... */
static const char *blk_name(unsigned i)
{
    static const char *const names[] = {"blk0", "blk1", "blk2", "blk3", "blk4",
                                        "blk5", "blk6", "blk7", "blk8", "blk9"};
    CHECK(i < sizeof(names) / sizeof(names[0]));
    return names[i];
}

static const char *other_name(unsigned i)
{
    static const char *const names[] = {"other0", "other1", "other2", "other3", "other4",
                                        "other5", "other6", "other7", "other8", "other9"};
    CHECK(i < sizeof(names) / sizeof(names[0]));
    return names[i];
}

static void ram_new(struct ram *r, const unsigned order[NBLK])
{
    r->ctx = lm_ctx_new();
    CHECK(r->ctx != NULL);
    for (unsigned i = 0; i < NBLK; i++) {
        r->host[i] = lm_ram_alloc(layout[i].npages * ps);
        CHECK(r->host[i] != NULL);
    }
    for (unsigned k = 0; k < NBLK; k++) {
        unsigned i = order ? order[k] : k;
        CHECK(lm_ram_block_add(r->ctx, layout[i].id, blk_name(i), r->host[i], layout[i].npages * ps,
                               LM_RAM_ZEROED) == 0);
    }
}

static void ram_free(struct ram *r)
{
    lm_ctx_free(r->ctx);
    for (unsigned i = 0; i < NBLK; i++)
        lm_ram_free(r->host[i], layout[i].npages * ps);
}

/* Deterministic content: most pages random, every fourth page never touched
 * (when sparse), a few pages written with zeros. */
static void ram_fill(struct ram *r, unsigned long long seed, bool sparse)
{
    for (unsigned i = 0; i < NBLK; i++) {
        for (uint64_t p = 0; p < layout[i].npages; p++) {
            uint8_t *pg = r->host[i] + p * ps;
            if (sparse && p % 4 == 3)
                continue;
            if (p % 7 == 5) {
                memset(pg, 0, ps);
                continue;
            }
            for (uint64_t o = 0; o < ps; o += 8) {
                uint64_t v = test_rand(&seed);
                memcpy(pg + o, &v, 8);
            }
        }
    }
}

static void digest(lm_ctx *ctx, uint8_t out[16], uint64_t *pages)
{
    memset(out, 0, 16);
    *pages = 0xDEAD;
    int r = lm__ram_digest(&ctx->ram, out, pages, &ctx->err);
    if (r != 0) {
        fprintf(stderr, "lm__ram_digest: %d: %s\n", r, lm_last_error(ctx));
        lm_test_failures++;
    }
}

/* Is the page at addr mapped in memory now? -1 when pagemap is unreadable. */
static int page_present(const void *addr)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    uint64_t ent;
    ssize_t n = pread(fd, &ent, sizeof(ent), (off_t)((uintptr_t)addr / ps * 8));
    close(fd);
    if (n != (ssize_t)sizeof(ent))
        return -1;
    return (int)(ent >> 63);
}

static void same_content(void)
{
    static const unsigned reversed[NBLK] = {3, 2, 1, 0}, mixed[NBLK] = {2, 0, 3, 1};
    struct ram a, b, c, d;
    ram_new(&a, NULL);
    ram_new(&b, reversed);
    ram_new(&c, mixed);
    ram_fill(&a, 77, true);
    ram_fill(&b, 77, true);
    ram_fill(&c, 77, false); /* dense: the "untouched" pages get data */
    uint8_t da[16], db[16], dc[16], dd[16], da2[16];
    uint64_t pa, pb, pc, pd;
    digest(a.ctx, da, &pa);
    digest(b.ctx, db, &pb);
    digest(c.ctx, dc, &pc);
    CHECK_EQ_U64(pa, LAYOUT_PAGES);
    CHECK_EQ_U64(pb, LAYOUT_PAGES);
    CHECK_EQ_U64(pc, LAYOUT_PAGES);
    /* Same content, other allocations, other registration order. */
    CHECK(memcmp(da, db, 16) == 0);
    CHECK(memcmp(da, dc, 16) != 0);
    static const uint8_t zero[16];
    CHECK(memcmp(da, zero, 16) != 0);
    /* Stable across calls. */
    digest(a.ctx, da2, &pa);
    CHECK(memcmp(da, da2, 16) == 0);

    /* Other content with the same layout. */
    ram_new(&d, NULL);
    ram_fill(&d, 78, true);
    digest(d.ctx, dd, &pd);
    CHECK(memcmp(da, dd, 16) != 0);

    /* Block ids are part of the digest: same content under other ids. */
    lm_ctx *e = lm_ctx_new();
    for (unsigned i = 0; i < NBLK; i++)
        CHECK(lm_ram_block_add(e, layout[i].id + 100, blk_name(i), a.host[i], layout[i].npages * ps,
                               0) == 0);
    uint8_t de[16];
    uint64_t pe;
    digest(e, de, &pe);
    CHECK_EQ_U64(pe, LAYOUT_PAGES);
    CHECK(memcmp(da, de, 16) != 0);
    lm_ctx_free(e);

    /* Names and flags are not: same blocks registered with other names. */
    e = lm_ctx_new();
    for (unsigned i = 0; i < NBLK; i++)
        CHECK(lm_ram_block_add(e, layout[i].id, i % 2 ? other_name(i) : blk_name(i), a.host[i],
                               layout[i].npages * ps, 0) == 0);
    digest(e, de, &pe);
    CHECK(memcmp(da, de, 16) == 0);
    lm_ctx_free(e);

    /* Which content goes with which id matters: swap two blocks' ids. */
    e = lm_ctx_new();
    for (unsigned i = 0; i < NBLK; i++) {
        uint32_t id = layout[i].id == 5 ? 9 : layout[i].id == 9 ? 5 : layout[i].id;
        CHECK(lm_ram_block_add(e, id, blk_name(i), a.host[i], layout[i].npages * ps, 0) == 0);
    }
    digest(e, de, &pe);
    CHECK(memcmp(da, de, 16) != 0);
    lm_ctx_free(e);

    /* A subset of the blocks: fewer pages, another digest. */
    e = lm_ctx_new();
    CHECK(lm_ram_block_add(e, layout[1].id, blk_name(1), a.host[1], layout[1].npages * ps, 0) == 0);
    CHECK(lm_ram_block_add(e, layout[3].id, blk_name(3), a.host[3], layout[3].npages * ps, 0) == 0);
    digest(e, de, &pe);
    CHECK_EQ_U64(pe, layout[1].npages + layout[3].npages);
    CHECK(memcmp(da, de, 16) != 0);
    lm_ctx_free(e);

    ram_free(&a);
    ram_free(&b);
    ram_free(&c);
    ram_free(&d);
}

/* A one-byte change anywhere changes the digest; undoing it restores it. */
static void one_byte_changes(void)
{
    struct ram a;
    ram_new(&a, NULL);
    ram_fill(&a, 1234, true);
    uint8_t base[16], got[16];
    uint64_t pages;
    digest(a.ctx, base, &pages);
    unsigned long long seed = 99;
    unsigned tried = 0;
    for (unsigned i = 0; i < NBLK; i++) {
        uint64_t len = layout[i].npages * ps;
        uint64_t where[8] = {0,
                             1,
                             ps - 1,
                             len - 1,
                             len - ps,
                             len / 2,
                             test_rand(&seed) % len,
                             test_rand(&seed) % len};
        for (unsigned k = 0; k < 8; k++) {
            for (unsigned bit = 0; bit < 8; bit += 7) {
                uint8_t *at = a.host[i] + where[k];
                uint8_t old = *at;
                *at ^= (uint8_t)(1u << bit);
                digest(a.ctx, got, &pages);
                if (!memcmp(got, base, 16)) {
                    fprintf(stderr,
                            "flipping bit %u of byte %llu of block %u does not "
                            "change the digest\n",
                            bit, (unsigned long long)where[k], layout[i].id);
                    lm_test_failures++;
                }
                *at = old;
                /* A page that was never touched is now a populated zero page. */
                digest(a.ctx, got, &pages);
                CHECK(memcmp(got, base, 16) == 0);
                tried++;
            }
        }
    }
    CHECK_EQ_U64(tried, NBLK * 16);
    /* The same byte value moved to the next byte position also shows. */
    a.host[1][100] = 0x42;
    uint8_t d1[16], d2[16];
    digest(a.ctx, d1, &pages);
    a.host[1][100] = 0;
    a.host[1][101] = 0x42;
    digest(a.ctx, d2, &pages);
    CHECK(memcmp(d1, d2, 16) != 0);
    ram_free(&a);
}

/* Never touched, written with zeros, read only, or discarded: all zero pages. */
static void zero_pages(void)
{
    enum { NP = 48 };
    uint64_t len = NP * ps;
    uint8_t *untouched = lm_ram_alloc(len), *zeroed = lm_ram_alloc(len);
    uint8_t *readonly = lm_ram_alloc(len), *discarded = lm_ram_alloc(len);
    CHECK(untouched && zeroed && readonly && discarded);
    memset(zeroed, 0, len);
    volatile uint8_t sink = 0;
    for (uint64_t p = 0; p < NP; p++)
        sink ^= readonly[p * ps + 5];
    (void)sink;
    memset(discarded, 0xAB, len);
    CHECK(madvise(discarded, len, MADV_DONTNEED) == 0);

    uint8_t *hosts[4] = {untouched, zeroed, readonly, discarded};
    uint8_t d[4][16];
    for (int i = 0; i < 4; i++) {
        lm_ctx *ctx = lm_ctx_new();
        CHECK(lm_ram_block_add(ctx, 3, "ram", hosts[i], len, 0) == 0);
        uint64_t pages;
        digest(ctx, d[i], &pages);
        CHECK_EQ_U64(pages, NP);
        lm_ctx_free(ctx);
    }
    CHECK(memcmp(d[0], d[1], 16) == 0);
    CHECK(memcmp(d[0], d[2], 16) == 0);
    CHECK(memcmp(d[0], d[3], 16) == 0);

    /* Half populated with zeros, half untouched: the same again. */
    memset(untouched, 0, len / 2);
    lm_ctx *ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 3, "ram", untouched, len, 0) == 0);
    uint8_t dh[16];
    uint64_t pages;
    digest(ctx, dh, &pages);
    CHECK(memcmp(d[0], dh, 16) == 0);
    lm_ctx_free(ctx);

    /* Length is hashed: zero blocks of other sizes or splits differ. */
    ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 3, "ram", zeroed, len - ps, 0) == 0);
    digest(ctx, dh, &pages);
    CHECK_EQ_U64(pages, NP - 1);
    CHECK(memcmp(d[0], dh, 16) != 0);
    lm_ctx_free(ctx);
    ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 3, "ram", zeroed, len / 2, 0) == 0);
    CHECK(lm_ram_block_add(ctx, 4, "ram2", zeroed + len / 2, len / 2, 0) == 0);
    digest(ctx, dh, &pages);
    CHECK_EQ_U64(pages, NP);
    CHECK(memcmp(d[0], dh, 16) != 0);
    lm_ctx_free(ctx);

    lm_ram_free(untouched, len);
    lm_ram_free(zeroed, len);
    lm_ram_free(readonly, len);
    lm_ram_free(discarded, len);
}

/* The digest from per-page hashes (postcopy's) equals the one read from
 * memory, where runs of zero pages, populated or not, are collapsed; and
 * where a run sits changes the digest. */
static void runs_and_hashes(void)
{
    enum { NP = 300 };
    uint64_t len = NP * ps;
    uint8_t *host = lm_ram_alloc(len);
    CHECK(host != NULL);
    /* data, zeros (populated), untouched, data, untouched to the end */
    memset(host, 0x11, 3 * ps);
    memset(host + 3 * ps, 0, 40 * ps);
    memset(host + 100 * ps, 0x22, ps);
    lm_ctx *ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 3, "ram", host, len, 0) == 0);
    uint8_t a[16], b[16];
    uint64_t pages, hpages;
    digest(ctx, a, &pages);
    uint64_t *hashes = calloc(NP, sizeof(*hashes));
    CHECK(hashes != NULL);
    for (uint64_t p = 0; p < NP; p++)
        hashes[p] = lm__page_hash(p < 3 || p == 100 ? host + p * ps : NULL, ps);
    uint64_t *const all[1] = {hashes};
    lm_err err;
    lm_err_init(&err);
    CHECK(lm__ram_digest_of(&ctx->ram, all, b, &hpages, &err) == 0);
    CHECK(pages == hpages && memcmp(a, b, 16) == 0);
    /* The same data one page later: the runs around it change length. */
    memset(host + 100 * ps, 0, ps);
    memset(host + 101 * ps, 0x22, ps);
    digest(ctx, b, &pages);
    CHECK(memcmp(a, b, 16) != 0);
    lm_ctx_free(ctx);
    free(hashes);
    lm_ram_free(host, len);

    /* More populated regions than one PAGEMAP_SCAN returns (4096): the
     * scan resumes, and may report the region it stopped in again. */
    enum { ALT = 12000 };
    len = ALT * ps;
    host = lm_ram_alloc(len);
    hashes = calloc(ALT, sizeof(*hashes));
    CHECK(host != NULL && hashes != NULL);
    for (uint64_t p = 0; p < ALT; p += 2)
        memset(host + p * ps, (int)(p % 200 + 1), ps);
    for (uint64_t p = 0; p < ALT; p++)
        hashes[p] = lm__page_hash(p % 2 ? NULL : host + p * ps, ps);
    ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 3, "ram", host, len, 0) == 0);
    digest(ctx, a, &pages);
    uint64_t *const alt[1] = {hashes};
    CHECK(lm__ram_digest_of(&ctx->ram, alt, b, &hpages, &err) == 0);
    CHECK(pages == hpages && memcmp(a, b, 16) == 0);
    lm_ctx_free(ctx);
    free(hashes);
    lm_ram_free(host, len);
}

/* The digest must not populate never-touched pages (it would fault in every
 * page of a huge sparse guest, and on the destination defeat zero pages). */
static void no_populate(void)
{
    /* Large enough that its middle is far from any neighbour's huge page. */
    uint64_t np = (16ull << 20) / ps, len = np * ps;
    uint8_t *sparse = lm_ram_alloc(len), *dense = lm_ram_alloc(4 * ps);
    CHECK(sparse && dense);
    if (!sparse || !dense)
        return;
    /* Sanity: pagemap works here and tells a written page from an untouched one. */
    dense[0] = 1;
    int pres_w = page_present(dense), pres_u = page_present(sparse + len / 2);
    if (pres_w < 0 || pres_u < 0) {
        fprintf(stderr, "cannot read /proc/self/pagemap: population check skipped\n");
    } else if (pres_w != 1 || pres_u != 0) {
        fprintf(stderr,
                "pagemap does not report presence here (%d, %d): population check "
                "skipped\n",
                pres_w, pres_u);
    }
    bool can_check = pres_w == 1 && pres_u == 0;
    /* A few written pages near the ends, the middle never touched. */
    sparse[0] = 7;
    sparse[len - 1] = 9;
    const uint64_t probe[] = {np / 4, np / 2 - 1, np / 2, np / 2 + 1, 3 * np / 4};
    if (can_check)
        for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++)
            CHECK_EQ_U64(page_present(sparse + probe[i] * ps), 0);
    /* Which pages are in memory before (a huge page may cover the written ends). */
    bool *before = calloc(np, sizeof(bool));
    CHECK(before != NULL);
    if (!before)
        can_check = false;
    for (uint64_t p = 0; can_check && p < np; p++)
        before[p] = page_present(sparse + p * ps) == 1;

    lm_ctx *ctx = lm_ctx_new();
    CHECK(lm_ram_block_add(ctx, 0, "sparse", sparse, len, LM_RAM_ZEROED) == 0);
    CHECK(lm_ram_block_add(ctx, 1, "dense", dense, 4 * ps, LM_RAM_ZEROED) == 0);
    uint8_t d1[16], d2[16];
    uint64_t pages;
    digest(ctx, d1, &pages);
    CHECK_EQ_U64(pages, np + 4);
    if (can_check) {
        uint64_t populated = 0;
        for (uint64_t p = 0; p < np; p++) /* every untouched page, not only the probes */
            populated += !before[p] && page_present(sparse + p * ps) == 1;
        for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++)
            CHECK_EQ_U64(page_present(sparse + probe[i] * ps), 0);
        if (populated) {
            fprintf(stderr, "the digest populated %llu never-touched pages\n",
                    (unsigned long long)populated);
            lm_test_failures++;
        }
        CHECK_EQ_U64(page_present(sparse), 1);
    }
    /* Still equal to the digest of the same data fully populated. */
    uint8_t *full = lm_ram_alloc(len);
    CHECK(full != NULL);
    if (full) {
        memset(full, 0, len);
        full[0] = 7;
        full[len - 1] = 9;
        lm_ctx *c2 = lm_ctx_new();
        CHECK(lm_ram_block_add(c2, 1, "dense", dense, 4 * ps, 0) == 0);
        CHECK(lm_ram_block_add(c2, 0, "full", full, len, 0) == 0);
        digest(c2, d2, &pages);
        CHECK(memcmp(d1, d2, 16) == 0);
        lm_ctx_free(c2);
        lm_ram_free(full, len);
    }
    free(before);
    lm_ctx_free(ctx);
    lm_ram_free(sparse, len);
    lm_ram_free(dense, 4 * ps);
}

static void empty_and_hex(void)
{
    lm_ctx *a = lm_ctx_new(), *b = lm_ctx_new();
    uint8_t da[16], db[16];
    uint64_t pa, pb;
    digest(a, da, &pa);
    digest(b, db, &pb);
    CHECK_EQ_U64(pa, 0);
    CHECK(memcmp(da, db, 16) == 0);
    lm_ctx_free(a);
    lm_ctx_free(b);

    uint8_t d[16];
    for (int i = 0; i < 16; i++)
        d[i] = (uint8_t)(i * 17 + 0x0f); /* 0f 20 31 ... ff-ish */
    d[0] = 0x00;
    d[15] = 0xff;
    char hex[48];
    memset(hex, 'Z', sizeof(hex));
    lm__digest_hex(d, hex, 33);
    CHECK_EQ_U64(strlen(hex), 32);
    CHECK(hex[33] == 'Z');
    bool ok = strlen(hex) == 32;
    for (int i = 0; i < 32 && ok; i++)
        ok = isxdigit((unsigned char)hex[i]) && !isupper((unsigned char)hex[i]);
    CHECK(ok);
    for (int i = 0; i < 16 && ok; i++) {
        unsigned v;
        char two[3] = {hex[2 * i], hex[2 * i + 1], 0};
        CHECK(sscanf(two, "%x", &v) == 1 && v == d[i]);
    }
    CHECK(strncmp(hex, "00", 2) == 0 && strcmp(hex + 30, "ff") == 0);
    /* lm_stats.digest is 40 bytes: plenty of room. */
    memset(hex, 'Z', sizeof(hex));
    lm__digest_hex(d, hex, 40);
    CHECK_EQ_U64(strlen(hex), 32);
    /* A short buffer holds whole bytes only and is never overrun. */
    memset(hex, 'Z', sizeof(hex));
    lm__digest_hex(d, hex, 10);
    CHECK_EQ_U64(strlen(hex), 8);
    CHECK(hex[10] == 'Z');
    memset(hex, 'Z', sizeof(hex));
    lm__digest_hex(d, hex, 32); /* one short of room for the NUL: 15 bytes */
    CHECK_EQ_U64(strlen(hex), 30);
}

static void block_add_rules(void)
{
    lm_ctx *ctx = lm_ctx_new();
    uint8_t *m = lm_ram_alloc(4 * ps);
    CHECK(lm_ram_block_add(ctx, 1, "a", m, 2 * ps, 0) == 0);
    CHECK(lm_ram_block_add(ctx, 1, "dup", m + 2 * ps, ps, 0) == -EEXIST);
    CHECK(lm_ram_block_add(ctx, 2, "len", m + 2 * ps, ps + 1, 0) == -EINVAL);
    CHECK(lm_ram_block_add(ctx, 2, "zero", m + 2 * ps, 0, 0) == -EINVAL);
    CHECK(lm_ram_block_add(ctx, 2, "unaligned", m + 1, ps, 0) == -EINVAL);
    CHECK(lm_ram_block_add(ctx, 2, "null", NULL, ps, 0) == -EINVAL);
    /* Names: never cut, never empty, printable, unique. */
    CHECK(lm_ram_block_add(ctx, 2, "a-name-of-thirty-two-bytes-long!", m + 2 * ps, ps, 0) ==
          -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "longer than 31 bytes") != NULL);
    CHECK(lm_ram_block_add(ctx, 2, "", m + 2 * ps, ps, 0) == -EINVAL);
    CHECK(lm_ram_block_add(ctx, 2, NULL, m + 2 * ps, ps, 0) == -EINVAL);
    CHECK(lm_ram_block_add(ctx, 2, "tab\there", m + 2 * ps, ps, 0) == -EINVAL);
    CHECK(lm_ram_block_add(ctx, 2, "a", m + 2 * ps, ps, 0) == -EEXIST);
    CHECK(strstr(lm_last_error(ctx), "name \"a\" is already registered") != NULL);
    CHECK_EQ_U64(lm_ram_block_count(ctx), 1);
    /* Thirty-one bytes is the longest, and lm_ram_block_get gives it back. */
    CHECK(lm_ram_block_add(ctx, 2, "a-name-of-thirty-one-bytes-long", m + 2 * ps, ps, 0) == 0);
    const char *name = NULL;
    uint32_t id = 0;
    CHECK(lm_ram_block_get(ctx, 1, &id, &name, NULL, NULL) == 0);
    CHECK(id == 2 && name && !strcmp(name, "a-name-of-thirty-one-bytes-long"));
    CHECK(lm_ram_block_get(ctx, 2, NULL, NULL, NULL, NULL) == -ENOENT);
    uint8_t d[16];
    uint64_t pages;
    digest(ctx, d, &pages);
    CHECK_EQ_U64(pages, 3);
    lm_ctx_free(ctx);
    lm_ram_free(m, 4 * ps);
}

int main(void)
{
    ps = (uint64_t)sysconf(_SC_PAGESIZE);
    runs_and_hashes();
    same_content();
    one_byte_changes();
    zero_pages();
    no_populate();
    empty_and_hex();
    block_add_rules();
    TEST_DONE();
}
