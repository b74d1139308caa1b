/*
 * lm_migrate of a running KVM guest with the kvm-log tracker, both sides in
 * this process over a unix: listener (as test_inprocess does). The guest
 * (tests/unit/kvm_fixture.h) runs in a vCPU thread and keeps incrementing
 * bytes in a moving set of pages, so every pass and round has pages it
 * wrote after they were sent; only KVM's log can tell the source about them.
 * The source attaches the VM with lm_kvm_attach (two slots over one block).
 * Cases: chunks as large as the block (whole re-arms), and 700-page chunks
 * (arms and re-arms that cut KVM's 64-page words), each with a downtime
 * limit low enough to force re-arming rounds. Each must complete with
 * matching digests, destination RAM equal to the stopped source's, and the
 * guest having run during the migration.
 * With the argument "ring" the same runs with the kvm-ring tracker: the VM
 * gets a 1024-entry dirty ring (smaller than two passes, so the vCPU takes
 * KVM_EXIT_DIRTY_RING_FULL exits and sleeps 100 us until the migration
 * thread harvests) handed over with lm_kvm_attach_rings.
 * Exit 77 when /dev/kvm (or its dirty ring) is absent or will not run the
 * guest.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "kvm_fixture.h"
#include "livemig.h"

#define MEM   (64u << 20) /* two 32 MiB slots */
#define PG    4096ull
#define NOISE (KVM_FX_DATA / PG)

static kvm_fixture fx;
static bool use_ring;
#define RING_ENTRIES 1024u

typedef struct vcpu {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop_req, parked, quit;
    _Atomic uint64_t passes;
    int error;
} vcpu;

static vcpu V = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* Between passes: park while asked to; each pass aims at other pages. */
static void *vcpu_main(void *arg)
{
    (void)arg;
    for (uint64_t i = 0;; i++) {
        pthread_mutex_lock(&V.lock);
        while (V.stop_req && !V.quit) {
            V.parked = true;
            pthread_cond_broadcast(&V.cond);
            pthread_cond_wait(&V.cond, &V.lock);
        }
        V.parked = false;
        bool quit = V.quit;
        pthread_mutex_unlock(&V.lock);
        if (quit)
            return NULL;
        uint64_t first = NOISE + (i % 64) * 113;
        int ret = kvm_fixture_pass(&fx, first * PG, 7 * PG, 512);
        if (ret < 0) {
            V.error = ret;
            return NULL;
        }
        atomic_fetch_add(&V.passes, 1);
    }
}

static void park(bool on)
{
    pthread_mutex_lock(&V.lock);
    V.stop_req = on;
    pthread_cond_broadcast(&V.cond);
    while (on && !V.parked && !V.error)
        pthread_cond_wait(&V.cond, &V.lock);
    pthread_mutex_unlock(&V.lock);
}

static uint64_t passes_at_stop;

static int src_stop(void *opaque)
{
    (void)opaque;
    park(true);
    passes_at_stop = atomic_load(&V.passes);
    return 0;
}

static int src_resume(void *opaque)
{
    (void)opaque;
    park(false);
    return 0;
}

static int src_save_state(void *opaque, void **buf, size_t *len)
{
    (void)opaque;
    if (!(*buf = malloc(8)))
        return -ENOMEM;
    memcpy(*buf, "kvmstate", 8);
    *len = 8;
    return 0;
}

static int dst_resume(void *opaque)
{
    (void)opaque;
    return 0;
}

static int dst_load_state(void *opaque, const void *buf, size_t len)
{
    (void)opaque;
    return len == 8 && !memcmp(buf, "kvmstate", 8) ? 0 : -EINVAL;
}

typedef struct dest_run {
    lm_ctx *ctx;
    lm_listener *l;
    lm_params p;
    int ret;
} dest_run;

static void *dest_main(void *arg)
{
    dest_run *d = arg;
    d->ret = lm_incoming(d->ctx, d->l, &d->p);
    return NULL;
}

static void migrate_case(const char *name, uint64_t track_chunk)
{
    char dir[] = "/tmp/lm-kvm-XXXXXX", uri[128], err[256];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(uri, sizeof(uri), "unix:%s/sock", dir);
    dest_run d = {.ctx = lm_ctx_new()};
    CHECK(lm_listen(uri, &d.l, err, sizeof(err)) == 0);
    lm_guest_ops dops = {.resume = dst_resume, .load_state = dst_load_state};
    lm_set_guest_ops(d.ctx, &dops, NULL);

    lm_ctx *s = lm_ctx_new();
    CHECK(lm_ram_block_add(s, 1, "kvm-ram", fx.mem, MEM, 0) == 0);
    lm_kvm_slot slots[2] = {
        {.slot = 0, .block_id = 1, .block_offset = 0, .size = MEM / 2, .guest_phys = 0},
        {.slot = 1,
         .block_id = 1,
         .block_offset = MEM / 2,
         .size = MEM / 2,
         .guest_phys = MEM / 2}};
    CHECK(lm_kvm_attach(s, fx.vm_fd, slots, 2) == 0);
    void *rings[1] = {fx.ring};
    if (use_ring)
        CHECK(lm_kvm_attach_rings(s, rings, 1, fx.ring_entries) == 0);
    lm_guest_ops sops = {.stop = src_stop, .resume = src_resume, .save_state = src_save_state};
    lm_set_guest_ops(s, &sops, NULL);

    lm_params p;
    lm_params_init(&p);
    p.verify = true;
    p.tracker = use_ring ? LM_TRACKER_KVM_RING : LM_TRACKER_KVM_LOG;
    p.track_chunk = track_chunk;
    p.downtime_limit_ms = 1; /* rounds until the round limit: re-arms */
    p.max_rounds = 4;
    p.max_bandwidth = 100ull << 20; /* long enough for the guest to write a lot */
    d.p = p;
    d.p.accept_timeout_ms = 20000;

    pthread_t dt;
    CHECK(pthread_create(&dt, NULL, dest_main, &d) == 0);
    uint64_t before = atomic_load(&V.passes), full0 = fx.ring_full;
    int ret = lm_migrate(s, lm_listener_uri(d.l), &p);
    if (ret < 0)
        fprintf(stderr, "[%s] lm_migrate: %s\n", name, lm_last_error(s));
    pthread_join(dt, NULL);
    if (d.ret < 0)
        fprintf(stderr, "[%s] lm_incoming: %s\n", name, lm_last_error(d.ctx));
    lm_stats ss, ds;
    lm_stats_get(s, &ss);
    lm_stats_get(d.ctx, &ds);
    fprintf(stderr,
            "[%s] source %d, destination %d, tracker %s, %u rounds, %llu guest passes during "
            "the migration (%llu ring-full exits), digests %s / %s\n",
            name, ret, d.ret, ss.tracker, ss.nrounds, (unsigned long long)(passes_at_stop - before),
            (unsigned long long)(fx.ring_full - full0), ss.digest, ds.digest);
    CHECK(ret == 0 && d.ret == 0);
    CHECK(!strcmp(ss.tracker, use_ring ? "kvm-ring" : "kvm-log"));
    if (use_ring)
        CHECK(fx.ring_full > full0); /* the ring filled, and nothing was lost */
    CHECK(ss.verify_done && ss.verify_match && ds.verify_done && ds.verify_match);
    CHECK(!strcmp(ss.digest, ds.digest));
    CHECK(ss.nrounds >= 3);
    /* The guest wrote while it moved (with the small ring it waits for the
     * harvests: a full ring throttles it). */
    CHECK(passes_at_stop - before >= (use_ring ? 2u : 10u));
    CHECK(V.error == 0);
    /* The source stays stopped: its RAM must equal the destination's. */
    void *host = NULL;
    uint64_t len = 0;
    CHECK(lm_ram_block_get(d.ctx, 0, NULL, NULL, &host, &len) == 0);
    CHECK(len == MEM && host && memcmp(host, fx.mem, MEM) == 0);
    if (len == MEM && host) {
        uint64_t diff = 0;
        for (uint64_t pg = 0; pg < MEM / PG; pg++)
            diff += memcmp((uint8_t *)host + pg * PG, fx.mem + pg * PG, PG) != 0;
        if (diff)
            fprintf(stderr, "[%s] %llu pages differ\n", name, (unsigned long long)diff);
    }
    lm_ctx_free(s);
    lm_ctx_free(d.ctx);
    lm_listener_close(d.l);
    rmdir(dir);
    park(false); /* the next case starts from a running guest */
}

int main(int argc, char **argv)
{
    char why[256];
    use_ring = argc > 1 && !strcmp(argv[1], "ring");
    if (kvm_fixture_open_ring(&fx, MEM, 2, use_ring ? RING_ENTRIES : 0, why, sizeof(why)) < 0)
        TEST_SKIP(why);
    if (kvm_fixture_pass(&fx, KVM_FX_DATA, PG, 1) < 0 || fx.mem[KVM_FX_DATA] != 1)
        TEST_SKIP("KVM does not run the test guest");
    /* Data the VMM wrote before the migration, in every third page. */
    for (uint64_t pg = NOISE; pg < MEM / PG; pg += 3)
        memset(fx.mem + pg * PG + 64, (int)(pg & 0xff), 64);
    alarm(120);
    CHECK(pthread_create(&V.thread, NULL, vcpu_main, NULL) == 0);
    while (atomic_load(&V.passes) < 20 && !V.error)
        usleep(1000);
    if (V.error)
        TEST_SKIP("KVM stopped running the test guest");
    migrate_case("whole", 64ull << 20);
    migrate_case("chunk-700", 700 * PG);
    pthread_mutex_lock(&V.lock);
    V.quit = true;
    pthread_cond_broadcast(&V.cond);
    pthread_mutex_unlock(&V.lock);
    pthread_join(V.thread, NULL);
    kvm_fixture_close(&fx);
    TEST_DONE();
}
