/*
 * Device-state sections (lm_section_register), in one process over a unix
 * socket: iterative parts while the guest runs and the complete part while
 * it is stopped, loaded in order on the destination; an older version
 * loaded by a newer destination; switchover-ack holding the switchover
 * until the destination's section is ready; and the refusals: a section
 * the destination does not know, a version it cannot load, one it
 * registered that the source never sends, and the registration rules.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "livemig.h"
#include "pair.h"

#define RAM_LEN   (8u << 20)
#define MAX_LOADS 64

/* A device whose state is a sequence of numbered parts. */
typedef struct device {
    /* Source. */
    unsigned setups, iterations, parts_to_send;
    bool stopped_at_complete;
    atomic_bool *guest_stopped;
    /* Destination. */
    unsigned nloads;
    uint32_t load_version[MAX_LOADS];
    bool load_complete[MAX_LOADS];
    char load_text[MAX_LOADS][32];
    unsigned ready_after; /* switchover_ready: true once this many parts loaded */
    unsigned ready_asks;
    unsigned loads_when_ready; /* parts loaded when it first said ready */
    bool said_ready;
} device;

static int save_setup(void *opaque)
{
    ((device *)opaque)->setups++;
    return 0;
}

static int text_buf(void **buf, size_t *len, const char *fmt, unsigned n)
{
    char *b = malloc(32);
    if (!b)
        return -ENOMEM;
    *len = (size_t)snprintf(b, 32, fmt, n) + 1;
    *buf = b;
    return 0;
}

static int save_iterate(void *opaque, void **buf, size_t *len, bool *done)
{
    device *dev = opaque;
    dev->iterations++;
    *done = dev->iterations >= dev->parts_to_send;
    return text_buf(buf, len, "part %u", dev->iterations);
}

static int save_complete(void *opaque, void **buf, size_t *len)
{
    device *dev = opaque;
    dev->stopped_at_complete = dev->guest_stopped && atomic_load(dev->guest_stopped);
    return text_buf(buf, len, "complete after %u", dev->iterations);
}

static int load(void *opaque, uint32_t version, const void *buf, size_t len, bool complete)
{
    device *dev = opaque;
    if (dev->nloads >= MAX_LOADS || len == 0 || len > 32 || ((const char *)buf)[len - 1])
        return -EINVAL;
    dev->load_version[dev->nloads] = version;
    dev->load_complete[dev->nloads] = complete;
    memcpy(dev->load_text[dev->nloads], buf, len);
    dev->nloads++;
    return 0;
}

static bool switchover_ready(void *opaque)
{
    device *dev = opaque;
    dev->ready_asks++;
    bool ready = dev->nloads >= dev->ready_after;
    if (ready && !dev->said_ready) {
        dev->said_ready = true;
        dev->loads_when_ready = dev->nloads;
    }
    return ready;
}

static const lm_section_ops iterative_ops = {.save_setup = save_setup,
                                             .save_iterate = save_iterate,
                                             .save_complete = save_complete,
                                             .load = load};
static const lm_section_ops acking_ops = {
    .save_complete = save_complete, .load = load, .switchover_ready = switchover_ready};

typedef struct run {
    lm_pair p;
    uint8_t *ram;
    atomic_bool stopped;
} run;

static int guest_stop(void *opaque)
{
    atomic_store((atomic_bool *)opaque, true);
    return 0;
}

static int guest_resume(void *opaque)
{
    atomic_store((atomic_bool *)opaque, false);
    return 0;
}

static void setup(run *r)
{
    memset(r, 0, sizeof(*r));
    r->ram = lm_ram_alloc(RAM_LEN);
    CHECK(r->ram != NULL);
    memset(r->ram, 0x5a, RAM_LEN / 2);
    pair_open(&r->p);
    CHECK(lm_ram_block_add(r->p.src, 0, "ram", r->ram, RAM_LEN, LM_RAM_ZEROED) == 0);
    lm_guest_ops ops = {.stop = guest_stop, .resume = guest_resume};
    lm_set_guest_ops(r->p.src, &ops, &r->stopped);
}

static void migrate(run *r)
{
    pair_migrate(&r->p);
}

static void teardown(run *r)
{
    pair_close(&r->p);
    lm_ram_free(r->ram, RAM_LEN);
}

/* Iterative parts, then the complete one; switchover-ack holds the
 * switchover until the acking section has loaded its first part... which
 * comes only with the switchover: so it waits for the iterative section's
 * parts instead (ready_after counts the other device's loads). */
static void test_parts_and_ack(void)
{
    run r;
    setup(&r);
    device src_iter = {.parts_to_send = 4, .guest_stopped = &r.stopped};
    device src_ack = {.guest_stopped = &r.stopped};
    device dst_iter = {0}, dst_ack = {.ready_after = 0};
    CHECK(lm_section_register(r.p.src, "vfio-net", 2, &iterative_ops, &src_iter) == 0);
    CHECK(lm_section_register(r.p.src, "vhost-blk", 1, &acking_ops, &src_ack) == 0);
    /* The destination is a newer release: vfio-net version 3 loads 2. */
    CHECK(lm_section_register(r.p.dst, "vfio-net", 3, &iterative_ops, &dst_iter) == 0);
    CHECK(lm_section_register(r.p.dst, "vhost-blk", 1, &acking_ops, &dst_ack) == 0);
    /* vhost-blk is ready once vfio-net's iterative parts are all in: its
     * switchover_ready reads the other device's count. */
    dst_ack.ready_after = 0;
    migrate(&r);
    if (r.p.src_ret || r.p.dst_ret)
        fprintf(stderr, "source %d (%s), destination %d (%s)\n", r.p.src_ret,
                lm_last_error(r.p.src), r.p.dst_ret, lm_last_error(r.p.dst));
    CHECK(r.p.src_ret == 0 && r.p.dst_ret == 0);
    CHECK_EQ_U64(src_iter.setups, 1);
    CHECK_EQ_U64(src_iter.iterations, 4);
    CHECK(src_iter.stopped_at_complete && src_ack.stopped_at_complete);
    /* Every part in order, the complete one last, at the source's version. */
    CHECK_EQ_U64(dst_iter.nloads, 5);
    for (unsigned i = 0; i < dst_iter.nloads && i < 4; i++) {
        char want[32];
        snprintf(want, sizeof(want), "part %u", i + 1);
        CHECK(!strcmp(dst_iter.load_text[i], want) && !dst_iter.load_complete[i]);
        CHECK_EQ_U64(dst_iter.load_version[i], 2);
    }
    CHECK(!strcmp(dst_iter.load_text[4], "complete after 4") && dst_iter.load_complete[4]);
    CHECK_EQ_U64(dst_ack.nloads, 1);
    CHECK(dst_ack.load_complete[0] && !strcmp(dst_ack.load_text[0], "complete after 0"));
    /* It was asked, said ready once, before its complete part came. */
    CHECK(dst_ack.said_ready && dst_ack.loads_when_ready == 0);
    teardown(&r);
}

/* The destination's section says "not ready" for its first few questions:
 * the source keeps the guest running (more rounds) until it says ready. */
static unsigned not_ready_for;

static bool ready_after_asks(void *opaque)
{
    device *dev = opaque;
    dev->ready_asks++;
    return dev->ready_asks > not_ready_for;
}

static void test_ack_holds_switchover(void)
{
    run r;
    setup(&r);
    device src_dev = {.guest_stopped = &r.stopped}, dst_dev = {0};
    lm_section_ops dst_ops = acking_ops;
    dst_ops.switchover_ready = ready_after_asks;
    not_ready_for = 3;
    CHECK(lm_section_register(r.p.src, "vhost-blk", 1, &acking_ops, &src_dev) == 0);
    CHECK(lm_section_register(r.p.dst, "vhost-blk", 1, &dst_ops, &dst_dev) == 0);
    migrate(&r);
    CHECK(r.p.src_ret == 0 && r.p.dst_ret == 0);
    CHECK_EQ_U64(dst_dev.ready_asks, 4); /* three "not yet", then ready: never asked again */
    lm_stats st;
    lm_stats_get(r.p.src, &st);
    CHECK(st.nrounds >= 4); /* a round a question, the guest running */
    CHECK_EQ_U64(dst_dev.nloads, 1);
    teardown(&r);
}

/* Postcopy: the complete parts go after the switch map, before the
 * device state, and the destination's guest starts with them loaded. */
static void test_postcopy(void)
{
    run r;
    setup(&r);
    r.p.sp.postcopy = true;
    r.p.sp.postcopy_after_rounds = 1;
    r.p.sp.downtime_limit_ms = 0; /* never converge: switch to postcopy */
    device src_iter = {.parts_to_send = 3, .guest_stopped = &r.stopped}, dst_iter = {0};
    CHECK(lm_section_register(r.p.src, "vfio-net", 1, &iterative_ops, &src_iter) == 0);
    CHECK(lm_section_register(r.p.dst, "vfio-net", 1, &iterative_ops, &dst_iter) == 0);
    migrate(&r);
    if (r.p.src_ret || r.p.dst_ret)
        fprintf(stderr, "source %d (%s), destination %d (%s)\n", r.p.src_ret,
                lm_last_error(r.p.src), r.p.dst_ret, lm_last_error(r.p.dst));
    CHECK(r.p.src_ret == 0 && r.p.dst_ret == 0);
    lm_stats st;
    lm_stats_get(r.p.src, &st);
    CHECK(st.postcopy);
    /* One round ran (one iterative part), then postcopy: the rest in the
     * complete part, saved with the guest stopped. */
    CHECK(src_iter.stopped_at_complete);
    CHECK(dst_iter.nloads >= 2 && dst_iter.load_complete[dst_iter.nloads - 1]);
    CHECK_EQ_U64(dst_iter.nloads, src_iter.iterations + 1);
    teardown(&r);
}

/* Refusals: each fails the migration with the section named, and the
 * source's guest runs on. */
static void expect_refused(const char *src_name, uint32_t src_version, const char *dst_name,
                           uint32_t dst_version, const char *why)
{
    run r;
    setup(&r);
    device s = {.guest_stopped = &r.stopped}, d = {0};
    CHECK(lm_section_register(r.p.src, src_name, src_version, &acking_ops, &s) == 0);
    CHECK(lm_section_register(r.p.dst, dst_name, dst_version, &acking_ops, &d) == 0);
    migrate(&r);
    CHECK(r.p.src_ret < 0 && r.p.dst_ret < 0);
    if (!strstr(lm_last_error(r.p.dst), why) || !strstr(lm_last_error(r.p.src), why))
        fprintf(stderr, "want \"%s\": source: %s; destination: %s\n", why, lm_last_error(r.p.src),
                lm_last_error(r.p.dst));
    CHECK(strstr(lm_last_error(r.p.dst), why) != NULL);
    CHECK(strstr(lm_last_error(r.p.src), why) != NULL); /* the destination told it */
    CHECK(!atomic_load(&r.stopped));                    /* the guest runs on the source */
    CHECK_EQ_U64(d.nloads, 0);
    teardown(&r);
}

/* The destination registered a section the source does not have: its
 * device would start without state, so the switchover is refused. */
static void test_missing_on_source(void)
{
    run r;
    setup(&r);
    device s = {.guest_stopped = &r.stopped}, d = {0}, d2 = {0};
    CHECK(lm_section_register(r.p.src, "vfio-net", 1, &acking_ops, &s) == 0);
    CHECK(lm_section_register(r.p.dst, "vfio-net", 1, &acking_ops, &d) == 0);
    CHECK(lm_section_register(r.p.dst, "vhost-blk", 1, &acking_ops, &d2) == 0);
    migrate(&r);
    CHECK(r.p.src_ret < 0 && r.p.dst_ret < 0);
    CHECK(strstr(lm_last_error(r.p.dst), "\"vhost-blk\" is registered here but the source") !=
          NULL);
    CHECK(strstr(lm_last_error(r.p.src), "\"vhost-blk\" is registered here but the source") !=
          NULL);
    CHECK(!atomic_load(&r.stopped));
    teardown(&r);
}

static void test_registration(void)
{
    lm_ctx *ctx = lm_ctx_new();
    device dev = {0};
    lm_section_ops no_load = {.save_complete = save_complete};
    CHECK(lm_section_register(ctx, "dev", 1, &acking_ops, &dev) == 0);
    CHECK(lm_section_register(ctx, "dev", 2, &acking_ops, &dev) == -EEXIST);
    CHECK(lm_section_register(ctx, "other", 0, &acking_ops, &dev) == -EINVAL);
    CHECK(lm_section_register(ctx, "other", 1, &no_load, &dev) == -EINVAL);
    CHECK(lm_section_register(ctx, "", 1, &acking_ops, &dev) == -EINVAL);
    CHECK(lm_section_register(ctx, "a-section-name-of-32-bytes-long!", 1, &acking_ops, &dev) ==
          -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "longer than 31 bytes") != NULL);
    char name[16];
    for (unsigned i = 1; i < LM_MAX_SECTIONS; i++) {
        snprintf(name, sizeof(name), "dev%u", i);
        CHECK(lm_section_register(ctx, name, 1, &acking_ops, &dev) == 0);
    }
    CHECK(lm_section_register(ctx, "one-too-many", 1, &acking_ops, &dev) == -E2BIG);
    lm_ctx_free(ctx);
}

int main(void)
{
    test_registration();
    test_parts_and_ack();
    test_ack_holds_switchover();
    test_postcopy();
    expect_refused("vfio-net", 1, "vhost-blk", 1, "section \"vfio-net\", which this destination");
    expect_refused("vfio-net", 3, "vfio-net", 2, "is version 3 on the source");
    test_missing_on_source();
    TEST_DONE();
}
