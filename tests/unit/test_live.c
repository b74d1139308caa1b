/*
 * Issue 13's library calls, in one process over a unix socket: the events
 * (every status change and pass, in order), the statistics' meanings
 * (bytes that add up on both sides, remaining, page size, error_desc),
 * lm_params_update's ranges and a cap changed mid-run, and lm_start_postcopy
 * heard in the middle of the first pass.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "livemig.h"
#include "pair.h"

#define RAM_LEN  (32u << 20)
#define MAX_EVTS 256

typedef struct events {
    pthread_mutex_t lock;
    unsigned n;
    lm_event ev[MAX_EVTS];
} events;

static void record(void *opaque, const lm_event *ev)
{
    events *e = opaque;
    pthread_mutex_lock(&e->lock);
    if (e->n < MAX_EVTS)
        e->ev[e->n++] = *ev;
    pthread_mutex_unlock(&e->lock);
}

typedef struct run {
    lm_pair p;
    events se, de;
    uint8_t *ram;
} run;

static void setup(run *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->se.lock, NULL);
    pthread_mutex_init(&r->de.lock, NULL);
    r->ram = lm_ram_alloc(RAM_LEN);
    CHECK(r->ram != NULL);
    for (size_t i = 0; i < RAM_LEN / 2; i += 8) /* half data, half never touched */
        *(uint64_t *)(r->ram + i) = i * 0x9e3779b97f4a7c15ull + 1;
    pair_open(&r->p);
    CHECK(lm_ram_block_add(r->p.src, 0, "ram", r->ram, RAM_LEN, LM_RAM_ZEROED) == 0);
    lm_set_event_callback(r->p.src, record, &r->se);
    lm_set_event_callback(r->p.dst, record, &r->de);
}

static void migrate(run *r)
{
    pair_migrate(&r->p);
    pair_report(&r->p);
}

static void teardown(run *r)
{
    pair_close(&r->p);
    lm_ram_free(r->ram, RAM_LEN);
}

/* The statuses in order, and the passes 1, 2, 3... each once. */
static void check_events(const events *e, const lm_status *want, unsigned nwant, bool passes)
{
    unsigned k = 0;
    uint64_t pass = 0;
    for (unsigned i = 0; i < e->n; i++) {
        if (e->ev[i].kind == LM_EVENT_PASS) {
            CHECK_EQ_U64(e->ev[i].pass, pass + 1);
            pass = e->ev[i].pass;
            continue;
        }
        CHECK(e->ev[i].kind == LM_EVENT_STATUS);
        while (k < nwant && want[k] != e->ev[i].status)
            k++; /* states may be skipped (none between), never reordered */
        if (k == nwant)
            fprintf(stderr, "unexpected status %s (event %u)\n", lm_status_name(e->ev[i].status),
                    i);
        CHECK(k < nwant);
    }
    CHECK(!passes || pass >= 2);
    CHECK(e->n > 0 && e->ev[e->n - 1].kind == LM_EVENT_STATUS &&
          e->ev[e->n - 1].status == want[nwant - 1]);
}

static void check_bytes(const lm_stats *s)
{
    CHECK_EQ_U64(s->precopy_bytes + s->downtime_bytes + s->postcopy_bytes, s->transferred);
    CHECK_EQ_U64(s->page_size, (uint64_t)sysconf(_SC_PAGESIZE));
    CHECK(s->error_desc[0] == '\0');
}

static void test_precopy_events(void)
{
    run r;
    setup(&r);
    migrate(&r);
    CHECK(r.p.src_ret == 0 && r.p.dst_ret == 0);
    static const lm_status src_seq[] = {LM_STATUS_SETUP, LM_STATUS_ACTIVE, LM_STATUS_PRE_SWITCHOVER,
                                        LM_STATUS_DEVICE, LM_STATUS_COMPLETED};
    static const lm_status dst_seq[] = {LM_STATUS_SETUP, LM_STATUS_ACTIVE, LM_STATUS_DEVICE,
                                        LM_STATUS_COMPLETED};
    check_events(&r.se, src_seq, 5, true);
    check_events(&r.de, dst_seq, 4, false);
    check_bytes(&r.p.src_st);
    check_bytes(&r.p.dst_st);
    CHECK_EQ_U64(r.p.src_st.remaining, 0);
    /* The destination saw the switchover: downtime bytes after the PONG. */
    CHECK(r.p.dst_st.precopy_bytes > 0 && r.p.dst_st.precopy_bytes < r.p.dst_st.transferred);
    CHECK(r.p.src_st.verify_match && r.p.dst_st.verify_match);
    teardown(&r);
}

static void test_failure_desc(void)
{
    run r;
    setup(&r);
    lm_params p;
    lm_params_init(&p);
    p.io_timeout_ms = 2000;
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s/nobody", r.p.dir);
    CHECK(lm_migrate(r.p.src, uri, &p) < 0);
    lm_stats st;
    lm_stats_get(r.p.src, &st);
    CHECK(st.status == LM_STATUS_FAILED);
    CHECK(st.error_desc[0] != '\0' && !strcmp(st.error_desc, lm_last_error(r.p.src)));
    char *json = lm_stats_json(&st, "source");
    CHECK(json && strstr(json, "\"error-desc\":"));
    /* QEMU's integers: no fraction in total-time. */
    char *t = json ? strstr(json, "\"total-time\":") : NULL;
    CHECK(t && strcspn(t + 13, ".,") == strcspn(t + 13, ","));
    free(json);
    static const lm_status seq[] = {LM_STATUS_SETUP, LM_STATUS_FAILED};
    check_events(&r.se, seq, 2, false);
    teardown(&r);
}

static void test_params_update(void)
{
    lm_ctx *ctx = lm_ctx_new();
    lm_params p;
    char why[256];
    lm_params_init(&p);
    CHECK(p.throttle_max == 99);
    CHECK(lm_params_update(ctx, &p, why, sizeof(why)) == 0);
    p.throttle_initial = 0;
    CHECK(lm_params_update(ctx, &p, why, sizeof(why)) == -EINVAL && strstr(why, "initial"));
    lm_params_init(&p);
    p.throttle_max = 100;
    CHECK(lm_params_update(ctx, &p, why, sizeof(why)) == -EINVAL && strstr(why, "max-cpu"));
    lm_params_init(&p);
    p.downtime_limit_ms = LM_MAX_DOWNTIME_LIMIT_MS + 1;
    CHECK(lm_params_update(ctx, &p, why, sizeof(why)) == -EINVAL && strstr(why, "downtime"));
    lm_ctx_free(ctx);
}

/* A cap of 4 MiB/s, lifted by another thread 300 ms into the first pass:
 * the pass as a whole then runs at many times the cap (a ratio of rates,
 * not a time). */
static void *lift_cap(void *arg)
{
    run *r = arg;
    usleep(300000);
    lm_params p = r->p.sp;
    p.max_bandwidth = 0;
    char why[128];
    CHECK(lm_params_update(r->p.src, &p, why, sizeof(why)) == 0);
    return NULL;
}

static void test_cap_lifted(void)
{
    run r;
    setup(&r);
    r.p.sp.max_bandwidth = 4u << 20;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lift_cap, &r) == 0);
    migrate(&r);
    pthread_join(t, NULL);
    CHECK(r.p.src_ret == 0 && r.p.dst_ret == 0);
    CHECK(r.p.src_st.nrounds > 0 && r.p.src_st.rounds[0].bandwidth_bps > 2.0 * (4u << 20));
    fprintf(stderr, "cap of 4 MiB/s lifted after 300 ms: the first pass at %.1f MiB/s\n",
            r.p.src_st.nrounds ? r.p.src_st.rounds[0].bandwidth_bps / (1 << 20) : 0.0);
    teardown(&r);
}

/* Postcopy asked for before the first batch is out: the first pass stops
 * there, and what it had not sent goes in postcopy. */
static void *ask_postcopy(void *arg)
{
    run *r = arg;
    while (lm_status_current(r->p.src) != LM_STATUS_ACTIVE)
        usleep(1000);
    lm_start_postcopy(r->p.src);
    return NULL;
}

static void test_postcopy_at_once(void)
{
    run r;
    setup(&r);
    r.p.sp.postcopy = true;
    r.p.sp.max_bandwidth = 8u << 20; /* the first pass would take 2 s */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, ask_postcopy, &r) == 0);
    migrate(&r);
    pthread_join(t, NULL);
    CHECK(r.p.src_ret == 0 && r.p.dst_ret == 0);
    CHECK(r.p.src_st.postcopy && !strcmp(r.p.src_st.switchover_reason, "postcopy"));
    /* Most of the 16 MiB of data went in postcopy. */
    CHECK(r.p.src_st.precopy_bytes < (8u << 20));
    CHECK(r.p.src_st.postcopy_bytes > (8u << 20));
    check_bytes(&r.p.src_st);
    check_bytes(&r.p.dst_st);
    CHECK(r.p.src_st.verify_match && r.p.dst_st.verify_match);
    fprintf(stderr, "postcopy at once: %llu bytes before the switch, %llu after\n",
            (unsigned long long)r.p.src_st.precopy_bytes,
            (unsigned long long)r.p.src_st.postcopy_bytes);
    teardown(&r);
}

int main(void)
{
    test_params_update();
    test_failure_desc();
    test_precopy_events();
    test_cap_lifted();
    test_postcopy_at_once();
    TEST_DONE();
}
