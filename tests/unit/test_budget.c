/*
 * The destination's memory budget (ram/budget.h), without a migration: a
 * dense fill keeps its huge pages, a scattered one falls back to 4 KiB
 * pages once past the allowance, pages already resident cost nothing,
 * embedder RAM is not accounted, and the host check refuses (with its
 * message) what a host that has little cannot give. No page is written:
 * admit() only accounts.
 */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "livemig.h"
#include "ram/budget.h"

#define PS    4096ull
#define HUGE  (2ull << 20)
#define BLOCK (1ull << 30)

typedef struct fixture {
    lm_ram ram;
    lm_err err;
    lm_ram_budget b;
    void *host;
} fixture;

static void setup(fixture *f, bool owned, bool thp, uint64_t fake_available)
{
    lm__ram_init(&f->ram, PS);
    lm_err_init(&f->err);
    f->host = lm_ram_alloc(BLOCK);
    CHECK(f->host != NULL);
    CHECK(lm__ram_add(&f->ram, 0, "ram", f->host, BLOCK, LM_RAM_ZEROED, &f->err) == 0);
    f->ram.blocks[0].owned = owned; /* freed by lm__ram_release */
    CHECK(lm__ram_receivedmap_reset(&f->ram, &f->err) == 0);
    CHECK(lm_ram_budget_init(&f->b, &f->ram, thp, fake_available, &f->err) == 0);
}

static void teardown(fixture *f)
{
    lm_ram_budget_free(&f->b);
    bool owned = f->ram.blocks[0].owned;
    lm__ram_release(&f->ram);
    if (!owned)
        lm_ram_free(f->host, BLOCK);
}

/* n pages from 'first', 'stride' bytes apart. */
static int admit(fixture *f, uint64_t first, uint64_t stride, uint32_t n)
{
    uint64_t off[128];
    for (uint32_t i = 0; i < n; i++)
        off[i] = first + i * stride;
    return lm_ram_budget_admit(&f->b, &f->ram.blocks[0], off, n);
}

static void mark_received(fixture *f, uint64_t first, uint64_t stride, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        lm_bit_set(f->ram.blocks[0].received, (first + i * stride) / PS);
}

int main(void)
{
    fixture f;
    bool thp = lm_hostmem_thp_possible();

    /* Dense: 64 MiB in packets of 128 consecutive pages, huge pages kept. */
    setup(&f, true, true, 0);
    for (uint64_t off = 0; off < (64ull << 20); off += 128 * PS)
        CHECK(admit(&f, off, PS, 128) == 0);
    CHECK(!atomic_load(&f.b.thp_off));
    CHECK_EQ_U64(atomic_load(&f.b.committed), 64ull << 20);
    CHECK_EQ_U64(atomic_load(&f.b.received), 64ull << 20);
    teardown(&f);

    if (thp) {
        /* Scattered: one page per 2 MiB region. The first packet would
         * commit 256 MiB for 512 KiB: 4 KiB pages from then on. */
        setup(&f, true, true, 0);
        CHECK(admit(&f, 0, HUGE, 128) == 0);
        CHECK(atomic_load(&f.b.thp_off));
        CHECK_EQ_U64(atomic_load(&f.b.committed), 128 * PS);
        teardown(&f);

        /* The allowance: 16 regions (32 MiB) pass, the next 16 do not. */
        setup(&f, true, true, 0);
        CHECK(admit(&f, 0, HUGE, 16) == 0);
        CHECK(!atomic_load(&f.b.thp_off));
        CHECK_EQ_U64(atomic_load(&f.b.committed), 16 * HUGE);
        CHECK(admit(&f, 16 * HUGE, HUGE, 16) == 0);
        CHECK(atomic_load(&f.b.thp_off));
        CHECK_EQ_U64(atomic_load(&f.b.committed), 16 * HUGE + 16 * PS);
        /* A page inside a huge page already committed costs nothing. */
        CHECK(admit(&f, PS, PS, 8) == 0);
        CHECK_EQ_U64(atomic_load(&f.b.committed), 16 * HUGE + 16 * PS);
        teardown(&f);
    }

    /* 4 KiB pages: a page received before is resident already. */
    setup(&f, true, false, 0);
    CHECK(admit(&f, 0, PS, 64) == 0);
    CHECK_EQ_U64(atomic_load(&f.b.committed), 64 * PS);
    mark_received(&f, 0, PS, 64);
    CHECK(admit(&f, 0, PS, 128) == 0);
    CHECK_EQ_U64(atomic_load(&f.b.committed), 128 * PS);
    teardown(&f);

    /* RAM the embedder registered is its own to provision. */
    setup(&f, false, true, 1);
    CHECK(admit(&f, 0, HUGE, 128) == 0);
    CHECK_EQ_U64(atomic_load(&f.b.committed), 0);
    teardown(&f);

    /* A host that can give 160 MiB: refused before 96 MiB are committed
     * (64 MiB stay spare, a step of 32 MiB is checked ahead), with the
     * message that says what to do. */
    setup(&f, true, false, 160ull << 20);
    int ret = 0;
    uint64_t off = 0;
    while (ret == 0 && off < BLOCK) {
        ret = admit(&f, off, PS, 128);
        off += 128 * PS;
    }
    CHECK(ret == -ENOMEM);
    CHECK(atomic_load(&f.b.committed) <= (160ull - 64 - 32 + 32) << 20);
    CHECK(atomic_load(&f.b.committed) >= (160ull - 64 - 32) << 20);
    CHECK(strstr(f.err.msg, "this host has") && strstr(f.err.msg, "migrate to a bigger host"));
    teardown(&f);

    /* reserve(): what cannot be refused later must fit now. */
    setup(&f, true, false, 100ull << 20);
    CHECK(lm_ram_budget_reserve(&f.b, 20ull << 20, "postcopy") == 0);
    CHECK(lm_ram_budget_reserve(&f.b, 50ull << 20, "postcopy") == -ENOMEM);
    CHECK(strstr(f.err.msg, "postcopy needs 50.00 MiB more here") != NULL);
    teardown(&f);

    /* The real host: something is available, and named. */
    lm_hostmem h;
    lm_hostmem_init(&h);
    uint64_t avail = 0;
    const char *what = NULL;
    CHECK(lm_hostmem_available(&h, &avail, &what) == 0);
    CHECK(avail > 0 && what != NULL);
    fprintf(stderr, "host: %llu MiB available (%s), THP %s\n", (unsigned long long)(avail >> 20),
            what ? what : "?", thp ? "possible" : "never");
    TEST_DONE();
}
