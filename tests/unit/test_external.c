/*
 * An embedder's own dirty tracker (lm_set_dirty_tracker, LM_TRACKER_EXTERNAL),
 * in one process over a unix socket: the "VMM" writes its guest's RAM from a
 * vCPU thread through one function that logs each page it wrote, as a VMM
 * that emulates every write or harvests KVM's ring would; livemig asks that
 * log instead of tracking, and the migration verifies. Also the refusals:
 * the external kind without a tracker, a tracker without sync.
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

#define RAM_LEN (16u << 20)
#define PAGE    4096u
#define NPAGES  (RAM_LEN / PAGE)

typedef struct vmm {
    uint8_t *ram;
    _Atomic uint64_t log[NPAGES / 64]; /* pages written since the tracker last forgot them */
    atomic_bool armed[NPAGES];
    atomic_bool run, quit, parked;
    pthread_t vcpu;
    unsigned arms, syncs, rearms;
    uint64_t writes;
    bool drop_bits; /* a broken tracker, for the test of the test */
} vmm;

/* Every guest write goes through here: the data, then the log. */
static void guest_write(vmm *v, uint64_t page, uint64_t value)
{
    memcpy(v->ram + page * PAGE + (value % (PAGE / 8)) * 8, &value, 8);
    if (atomic_load(&v->armed[page]))
        atomic_fetch_or(&v->log[page / 64], 1ull << (page % 64));
}

static void *vcpu_main(void *arg)
{
    vmm *v = arg;
    uint64_t rng = 88172645463325252ull;
    while (!atomic_load(&v->quit)) {
        if (!atomic_load(&v->run)) {
            atomic_store(&v->parked, true);
            usleep(100);
            continue;
        }
        atomic_store(&v->parked, false);
        for (int i = 0; i < 256; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            guest_write(v, rng % NPAGES, ++v->writes);
        }
    }
    return NULL;
}

static int stop(void *opaque)
{
    vmm *v = opaque;
    atomic_store(&v->run, false);
    while (!atomic_load(&v->parked))
        usleep(50);
    return 0;
}

static int resume(void *opaque)
{
    vmm *v = opaque;
    atomic_store(&v->parked, false);
    atomic_store(&v->run, true);
    return 0;
}

static int arm(void *opaque, unsigned block, uint64_t first, uint64_t count)
{
    vmm *v = opaque;
    if (block != 0 || first + count > NPAGES)
        return -EINVAL;
    v->arms++;
    for (uint64_t p = first; p < first + count; p++)
        atomic_store(&v->armed[p], true);
    return 0;
}

static int sync_log(void *opaque, unsigned block, uint64_t first, uint64_t count, uint64_t *dirty,
                    bool rearm)
{
    vmm *v = opaque;
    if (block != 0 || first + count > NPAGES)
        return -EINVAL;
    v->syncs++;
    v->rearms += rearm;
    for (uint64_t p = first; p < first + count;) {
        uint64_t w = p / 64, end = (w + 1) * 64 < first + count ? (w + 1) * 64 : first + count;
        uint64_t mask = (end - p == 64) ? ~0ull : ((1ull << (end - p)) - 1) << (p % 64);
        /* Read and forget in one atomic step: a write after it is logged anew. */
        uint64_t bits =
            rearm ? atomic_fetch_and(&v->log[w], ~mask) & mask : atomic_load(&v->log[w]) & mask;
        if (v->drop_bits)
            bits &= 0x5555555555555555ull;
        dirty[w] |= bits;
        p = end;
    }
    return 0;
}

static const lm_dirty_tracker_ops log_tracker = {.arm = arm, .sync = sync_log};

typedef lm_pair run;

static void migrate_with(vmm *v, bool drop_bits, run *r)
{
    memset(v, 0, sizeof(*v));
    v->drop_bits = drop_bits;
    v->ram = lm_ram_alloc(RAM_LEN);
    CHECK(v->ram != NULL);
    memset(v->ram, 1, RAM_LEN / 2);
    pair_open(r);
    CHECK(lm_ram_block_add(r->src, 0, "ram", v->ram, RAM_LEN, LM_RAM_ZEROED) == 0);
    lm_guest_ops ops = {.stop = stop, .resume = resume};
    lm_set_guest_ops(r->src, &ops, v);
    CHECK(lm_set_dirty_tracker(r->src, &log_tracker, v) == 0);
    r->sp.tracker = LM_TRACKER_EXTERNAL;
    r->sp.max_bandwidth = 64ull << 20; /* rounds long enough for the vCPU to dirty pages */
    r->sp.track_chunk = 4u << 20;      /* the first pass arms in chunks */
    /* Never converged (the vCPU keeps dirtying): four rounds, each re-arming
     * what it sends, then the round limit switches over. */
    r->sp.downtime_limit_ms = 1;
    r->sp.max_rounds = 4;
    atomic_store(&v->run, true);
    CHECK(pthread_create(&v->vcpu, NULL, vcpu_main, v) == 0);
    usleep(20000);
    pair_migrate(r);
    atomic_store(&v->quit, true);
    pthread_join(v->vcpu, NULL);
}

static void cleanup(vmm *v, run *r)
{
    pair_close(r);
    lm_ram_free(v->ram, RAM_LEN);
}

static void test_migrates(void)
{
    static vmm v;
    run r;
    migrate_with(&v, false, &r);
    if (r.src_ret)
        fprintf(stderr, "source: %s\n", lm_last_error(r.src));
    CHECK(r.src_ret == 0 && r.dst_ret == 0);
    lm_stats st;
    lm_stats_get(r.src, &st);
    CHECK(!strcmp(st.tracker, "external"));
    CHECK(st.verify_done && st.verify_match);
    CHECK(v.arms >= RAM_LEN / (4u << 20)); /* a chunk at a time */
    CHECK_EQ_U64(st.nrounds, 5);           /* four while running, one stopped */
    CHECK(!strcmp(st.switchover_reason, "round-limit"));
    CHECK(v.syncs > 0 && v.rearms > 0 && v.rearms < v.syncs); /* the final sync reads only */
    CHECK(v.writes > 0);
    fprintf(stderr, "external tracker: %u arms, %u syncs, %llu guest writes, %u rounds\n", v.arms,
            v.syncs, (unsigned long long)v.writes, st.nrounds);
    cleanup(&v, &r);
}

/* The test of the test: a tracker that misses writes fails verification,
 * and the guest runs on, on the source. */
static void test_missed_writes_caught(void)
{
    static vmm v;
    run r;
    migrate_with(&v, true, &r);
    CHECK(r.src_ret < 0);
    CHECK(strstr(lm_last_error(r.src), "verification failed") != NULL);
    cleanup(&v, &r);
}

static void test_refusals(void)
{
    lm_ctx *ctx = lm_ctx_new();
    lm_dirty_tracker_ops no_sync = {.arm = arm};
    CHECK(lm_set_dirty_tracker(ctx, &no_sync, NULL) == -EINVAL);
    uint8_t *ram = lm_ram_alloc(1 << 20);
    CHECK(lm_ram_block_add(ctx, 0, "ram", ram, 1 << 20, LM_RAM_ZEROED) == 0);
    lm_params p;
    lm_params_init(&p);
    p.tracker = LM_TRACKER_EXTERNAL;
    p.io_timeout_ms = 2000;
    char dir[64] = "/tmp/lm-external-XXXXXX", uri[128], err[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(uri, sizeof(uri), "unix:%s/sock", dir);
    lm_listener *l;
    CHECK(lm_listen(uri, &l, err, sizeof(err)) == 0);
    /* Refused before anything connects, saying what is missing. */
    CHECK(lm_migrate(ctx, uri, &p) == -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "lm_set_dirty_tracker") != NULL);
    lm_listener_close(l);
    snprintf(uri, sizeof(uri), "%s/sock", dir);
    unlink(uri);
    rmdir(dir);
    lm_ctx_free(ctx);
    lm_ram_free(ram, 1 << 20);
}

int main(void)
{
    test_refusals();
    test_migrates();
    test_missed_writes_caught();
    TEST_DONE();
}
