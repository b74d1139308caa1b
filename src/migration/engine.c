#include "migration/engine.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/parse.h"

lm_ctx *lm_ctx_new(void)
{
    lm_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    lm__ram_init(&ctx->ram, (uint64_t)sysconf(_SC_PAGESIZE));
    pthread_mutex_init(&ctx->stats_lock, NULL);
    pthread_mutex_init(&ctx->live_lock, NULL);
    pthread_mutex_init(&ctx->event_lock, NULL);
    lm_err_init(&ctx->err);
    atomic_init(&ctx->cancel, 0);
    atomic_init(&ctx->status_now, LM_STATUS_NONE);
    ctx->kvm_fd = -1;
    return ctx;
}

void lm_ctx_free(lm_ctx *ctx)
{
    if (!ctx)
        return;
    lm__ram_release(&ctx->ram);
    lm__kvm_detach(ctx);
    pthread_mutex_destroy(&ctx->stats_lock);
    pthread_mutex_destroy(&ctx->live_lock);
    pthread_mutex_destroy(&ctx->event_lock);
    free(ctx);
}

const char *lm_last_error(const lm_ctx *ctx)
{
    return ctx->err.msg[0] ? ctx->err.msg : "no error";
}

void *lm_ram_alloc(uint64_t len)
{
    void *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void lm_ram_free(void *host, uint64_t len)
{
    if (host)
        munmap(host, len);
}

int lm_ram_block_add(lm_ctx *ctx, uint32_t id, const char *name, void *host, uint64_t len,
                     unsigned flags)
{
    lm_err_reset(&ctx->err); /* lm_last_error() then speaks of this call */
    return lm__ram_add(&ctx->ram, id, name, host, len, flags, &ctx->err);
}

unsigned lm_ram_block_count(const lm_ctx *ctx)
{
    return ctx->ram.nblocks;
}

int lm_ram_block_get(const lm_ctx *ctx, unsigned index, uint32_t *id, const char **name,
                     void **host, uint64_t *len)
{
    if (index >= ctx->ram.nblocks)
        return -ENOENT;
    if (id)
        *id = ctx->ram.blocks[index].id;
    if (name)
        *name = ctx->ram.blocks[index].name;
    if (host)
        *host = ctx->ram.blocks[index].host;
    if (len)
        *len = ctx->ram.blocks[index].len;
    return 0;
}

unsigned lm_version(void)
{
    return LM_VERSION_NUMBER;
}

const char *lm_version_string(void)
{
    return LM_VERSION_STRING;
}

void lm_set_guest_ops_size(lm_ctx *ctx, const lm_guest_ops *ops, size_t size, void *opaque)
{
    /* A program built against an older header hands a shorter table: the
     * callbacks it does not know stay absent. */
    memset(&ctx->gops, 0, sizeof(ctx->gops));
    if (ops)
        memcpy(&ctx->gops, ops, size < sizeof(ctx->gops) ? size : sizeof(ctx->gops));
    ctx->gopaque = opaque;
}

int lm_section_register_size(lm_ctx *ctx, const char *name, uint32_t version,
                             const lm_section_ops *ops, size_t size, void *opaque)
{
    lm_err_reset(&ctx->err);
    char why[96];
    if (lm_name_check(name, LM_SECTION_NAME_MAX, why, sizeof(why)) < 0)
        return lm_err_set(&ctx->err, -EINVAL,
                          "a device-state section %s: give it a name of 1 to %d "
                          "printable bytes",
                          why, LM_SECTION_NAME_MAX - 1);
    lm_section_ops full;
    memset(&full, 0, sizeof(full));
    if (ops)
        memcpy(&full, ops, size < sizeof(full) ? size : sizeof(full));
    if (version == 0 || !full.save_complete || !full.load)
        return lm_err_set(&ctx->err, -EINVAL,
                          "device-state section \"%s\" needs a version of 1 or more, "
                          "save_complete and load",
                          name);
    for (unsigned i = 0; i < ctx->nsections; i++)
        if (!strcmp(ctx->sections[i].name, name))
            return lm_err_set(&ctx->err, -EEXIST,
                              "device-state section \"%s\" is already registered", name);
    if (ctx->nsections >= LM_MAX_SECTIONS)
        return lm_err_set(&ctx->err, -E2BIG, "at most %d device-state sections", LM_MAX_SECTIONS);
    lm_section *sec = &ctx->sections[ctx->nsections++];
    memset(sec, 0, sizeof(*sec));
    memcpy(sec->name, name, strlen(name) + 1);
    sec->version = version;
    sec->ops = full;
    sec->opaque = opaque;
    return 0;
}

int lm_set_dirty_tracker_size(lm_ctx *ctx, const lm_dirty_tracker_ops *ops, size_t size,
                              void *opaque)
{
    lm_dirty_tracker_ops full;
    memset(&full, 0, sizeof(full));
    if (ops)
        memcpy(&full, ops, size < sizeof(full) ? size : sizeof(full));
    lm_err_reset(&ctx->err);
    if (ops && (!full.arm || !full.sync))
        return lm_err_set(&ctx->err, -EINVAL, "a dirty tracker needs arm and sync");
    ctx->ext_tracker = full;
    ctx->ext_tracker_opaque = opaque;
    return 0;
}

void lm_testing_set(lm_ctx *ctx, const lm_testing *t)
{
    if (t)
        ctx->testing = *t;
    else
        memset(&ctx->testing, 0, sizeof(ctx->testing));
}

/* The smallest lm_params a caller may hand in: API 1.0's, which ends
 * with progress_opaque. */
#define LM_PARAMS_SIZE_1_0 (offsetof(lm_params, progress_opaque) + sizeof(void *))

static int params_size_check(size_t size, char *errbuf, size_t errlen)
{
    if (size >= LM_PARAMS_SIZE_1_0 && size <= sizeof(lm_params))
        return 0;
    if (size > sizeof(lm_params))
        snprintf(errbuf, errlen,
                 "lm_params is %zu bytes, this livemig %s knows %zu: the program was built "
                 "against a later livemig.h than the library it runs with; install that "
                 "release's library",
                 size, LM_VERSION_STRING, sizeof(lm_params));
    else
        snprintf(errbuf, errlen,
                 "lm_params.size is %zu, not the size of an lm_params (%zu to %zu bytes): "
                 "fill the parameters with lm_params_init() first",
                 size, LM_PARAMS_SIZE_1_0, sizeof(lm_params));
    return -EINVAL;
}

int lm__params_import(lm_ctx *ctx, const lm_params *in, lm_params *out)
{
    lm_err_reset(&ctx->err); /* a migration begins: its errors are new */
    lm_params_init(out);
    if (!in)
        return 0;
    char why[256];
    if (params_size_check(in->size, why, sizeof(why)) < 0)
        return lm_err_set(&ctx->err, -EINVAL, "%s", why);
    memcpy(out, in, in->size);
    out->size = sizeof(*out);
#ifdef LM_ABI_TEST_APPENDED
    if (out->abi_test_appended != 7)
        return lm_err_set(&ctx->err, -EINVAL,
                          "ABI test: the appended field holds %" PRIu64 ", not its default 7",
                          out->abi_test_appended);
#endif
    return 0;
}

void lm_params_init_size(lm_params *p, size_t size)
{
    lm_params d;
    memset(&d, 0, sizeof(d));
    d.downtime_limit_ms = 300;
    d.max_rounds = 30;
    d.tracker = LM_TRACKER_AUTO;
    d.io_timeout_ms = 10000;
    d.throttle_initial = 20;
    d.track_chunk = 64ull << 20;
    d.throttle_increment = 10;
    d.throttle_max = 99;
    d.dest_thp = 1; /* measured: docs/BENCHMARKS.md, "Destination huge pages" */
#ifdef LM_ABI_TEST_APPENDED
    d.abi_test_appended = 7;
#endif
    if (!p || size < sizeof(size_t))
        return;
    /* Only the caller's bytes are written: a program built against an
     * older header has a shorter struct. One built against a newer header
     * than this library gets zeros past what the library knows, and its
     * lm_migrate/lm_incoming is refused with the reason. */
    size_t known = size < sizeof(d) ? size : sizeof(d);
    memcpy(p, &d, known);
    if (size > known)
        memset((char *)p + known, 0, size - known);
    p->size = size;
}

unsigned lm__recover_timeout_ms(const lm_params *p, bool postcopy)
{
    if (p->recover_timeout_ms)
        return p->recover_timeout_ms;
    return postcopy ? 600000u : p->io_timeout_ms;
}

bool lm__link_lost(int ret)
{
    return ret == -ECONNRESET || ret == -EPIPE || ret == -ETIMEDOUT || ret == -ENOTCONN ||
           ret == -ECONNABORTED || ret == -ENETDOWN || ret == -ENETUNREACH ||
           ret == -EHOSTUNREACH || ret == -ENETRESET || ret == -ECONNREFUSED;
}

void lm_start_postcopy(lm_ctx *ctx)
{
    atomic_store(&ctx->postcopy_requested, 1);
}

int lm_pause(lm_ctx *ctx)
{
    if (lm_status_current(ctx) != LM_STATUS_POSTCOPY_ACTIVE)
        return -EINVAL;
    atomic_store(&ctx->hold_reconnect, 1);
    atomic_store(&ctx->pause_requested, 1);
    return 0;
}

int lm_resume(lm_ctx *ctx)
{
    if (!atomic_load(&ctx->hold_reconnect))
        return -EINVAL;
    atomic_store(&ctx->hold_reconnect, 0);
    return 0;
}

/* lm_cancel() and lm_status_current() are called from signal handlers:
 * plain loads and stores of a lock-free atomic are async-signal-safe. */
static_assert(ATOMIC_INT_LOCK_FREE == 2, "lm_cancel() needs a lock-free atomic int");

bool lm_status_guest_split(lm_status s)
{
    switch (s) {
    case LM_STATUS_POSTCOPY_ACTIVE:
    case LM_STATUS_POSTCOPY_PAUSED:
    case LM_STATUS_POSTCOPY_RECOVER:
    case LM_STATUS_SWITCHOVER_PAUSED:
        return true;
    default:
        return false;
    }
}

lm_status lm_status_current(const lm_ctx *ctx)
{
    return (lm_status)atomic_load(&ctx->status_now);
}

/*
 * Refused where the guest's memory is split (or where it runs is not
 * known): a cancel there would lose the guest, as QEMU refuses
 * migrate_cancel in postcopy. The status may move past the commit point
 * between the check and the store; then either the publish that moved it
 * (lm__stats_publish, after its store of status_now) clears the flag, or the
 * second check here sees the new status and clears it itself. Either way no
 * cancel request outlives the commit point unless the engine acted on it
 * before, as it would have without this check.
 */
int lm_cancel(lm_ctx *ctx)
{
    if (lm_status_guest_split(lm_status_current(ctx)))
        return -EBUSY;
    atomic_store(&ctx->cancel, 1);
    if (lm_status_guest_split(lm_status_current(ctx))) {
        atomic_store(&ctx->cancel, 0);
        return -EBUSY;
    }
    return 0;
}

static void status_publish(lm_ctx *ctx, lm_status status)
{
    atomic_store(&ctx->status_now, (int)status);
    if (lm_status_guest_split(status))
        atomic_store(&ctx->cancel, 0); /* see lm_cancel() */
}

void lm__stats_reset(lm_ctx *ctx, lm_status status)
{
    lm_stats *fresh = calloc(1, sizeof(*fresh));
    if (fresh) {
        fresh->status = status;
        lm__stats_publish(ctx, fresh);
        free(fresh);
        return;
    }
    pthread_mutex_lock(&ctx->stats_lock); /* no event then, but a clean slate */
    memset(&ctx->stats, 0, sizeof(ctx->stats));
    ctx->stats.size = sizeof(ctx->stats);
    ctx->stats.status = status;
    status_publish(ctx, status);
    pthread_mutex_unlock(&ctx->stats_lock);
}

/* A failed or cancelled migration's report says why. */
static void stats_error_desc(lm_ctx *ctx, lm_stats *st)
{
    switch (st->status) {
    case LM_STATUS_FAILED:
    case LM_STATUS_CANCELLING:
    case LM_STATUS_CANCELLED:
    case LM_STATUS_PRECOPY_PAUSED:
    case LM_STATUS_POSTCOPY_PAUSED:
    case LM_STATUS_SWITCHOVER_PAUSED:
        if (!st->error_desc[0])
            lm_err_copy(&ctx->err, st->error_desc, sizeof(st->error_desc));
        break;
    default:
        break;
    }
}

void lm__stats_publish(lm_ctx *ctx, const lm_stats *working)
{
    lm_event ev[2];
    unsigned nev = 0;
    pthread_mutex_lock(&ctx->stats_lock);
    lm_stats old_status = {.status = ctx->stats.status,
                           .dirty_sync_count = ctx->stats.dirty_sync_count};
    ctx->stats = *working;
    ctx->stats.size = sizeof(ctx->stats);
    stats_error_desc(ctx, &ctx->stats);
    status_publish(ctx, working->status);
    if (ctx->event_fn) {
        /* QEMU sends MIGRATION_PASS as a sync begins the pass, before the
         * status it may lead to. */
        if (working->dirty_sync_count > old_status.dirty_sync_count)
            ev[nev++] = (lm_event){.kind = LM_EVENT_PASS, .pass = working->dirty_sync_count};
        if (working->status != old_status.status)
            ev[nev++] = (lm_event){.kind = LM_EVENT_STATUS, .status = working->status};
        if (nev) /* taken before stats_lock is let go: events keep the stats' order */
            pthread_mutex_lock(&ctx->event_lock);
    }
    pthread_mutex_unlock(&ctx->stats_lock);
    if (nev) {
        for (unsigned i = 0; i < nev; i++)
            ctx->event_fn(ctx->event_opaque, &ev[i]);
        pthread_mutex_unlock(&ctx->event_lock);
    }
}

void lm_set_event_callback(lm_ctx *ctx, void (*fn)(void *opaque, const lm_event *ev), void *opaque)
{
    pthread_mutex_lock(&ctx->stats_lock);
    ctx->event_fn = fn;
    ctx->event_opaque = opaque;
    pthread_mutex_unlock(&ctx->stats_lock);
}

/* The live parameters (lm_params_update). */

void lm__params_copy_live(lm_params *dst, const lm_params *src)
{
    dst->max_bandwidth = src->max_bandwidth;
    dst->downtime_limit_ms = src->downtime_limit_ms;
    dst->max_rounds = src->max_rounds;
    dst->throttle_initial = src->throttle_initial;
    dst->throttle_increment = src->throttle_increment;
    dst->throttle_max = src->throttle_max;
    dst->dirty_limit = src->dirty_limit;
}

int lm_params_update(lm_ctx *ctx, const lm_params *in, char *errbuf, size_t errlen)
{
    if (params_size_check(in->size, errbuf, errlen) < 0)
        return -EINVAL;
    lm_params full;
    lm_params_init(&full);
    memcpy(&full, in, in->size);
#ifdef LM_ABI_TEST_APPENDED
    if (full.abi_test_appended != 7) {
        snprintf(errbuf, errlen, "ABI test: the appended field holds %" PRIu64 ", not 7",
                 full.abi_test_appended);
        return -EINVAL;
    }
#endif
    const lm_params *p = &full;
    const char *bad = NULL;
    unsigned v = 0;
    if (p->throttle_initial < 1 || p->throttle_initial > 99)
        bad = "cpu-throttle-initial", v = p->throttle_initial;
    else if (p->throttle_increment < 1 || p->throttle_increment > 99)
        bad = "cpu-throttle-increment", v = p->throttle_increment;
    else if (p->throttle_max < 1 || p->throttle_max > 99)
        bad = "max-cpu-throttle", v = p->throttle_max;
    if (bad) {
        snprintf(errbuf, errlen, "%s must be 1..99 (percent), not %u", bad, v);
        return -EINVAL;
    }
    if (p->downtime_limit_ms > LM_MAX_DOWNTIME_LIMIT_MS) {
        snprintf(errbuf, errlen, "downtime-limit must be 0..%u ms", LM_MAX_DOWNTIME_LIMIT_MS);
        return -EINVAL;
    }
    if (p->max_rounds < 1) {
        snprintf(errbuf, errlen, "the round limit must be at least 1");
        return -EINVAL;
    }
    pthread_mutex_lock(&ctx->live_lock);
    lm__params_copy_live(&ctx->live, p);
    ctx->live_set = true;
    atomic_fetch_add(&ctx->live_gen, 1);
    pthread_mutex_unlock(&ctx->live_lock);
    return 0;
}

void lm__params_begin(lm_ctx *ctx, lm_params *p, unsigned *gen)
{
    pthread_mutex_lock(&ctx->live_lock);
    if (ctx->live_set)
        lm__params_copy_live(p, &ctx->live);
    else
        lm__params_copy_live(&ctx->live, p);
    *gen = atomic_load(&ctx->live_gen);
    pthread_mutex_unlock(&ctx->live_lock);
}

bool lm__params_refresh(lm_ctx *ctx, lm_params *p, unsigned *gen)
{
    if (atomic_load_explicit(&ctx->live_gen, memory_order_acquire) == *gen)
        return false;
    pthread_mutex_lock(&ctx->live_lock);
    lm__params_copy_live(p, &ctx->live);
    *gen = atomic_load(&ctx->live_gen);
    pthread_mutex_unlock(&ctx->live_lock);
    return true;
}

void lm__params_end(lm_ctx *ctx)
{
    pthread_mutex_lock(&ctx->live_lock);
    ctx->live_set = false;
    pthread_mutex_unlock(&ctx->live_lock);
}

void lm_stats_get_size(lm_ctx *ctx, lm_stats *out, size_t size)
{
    if (!out || size < sizeof(size_t))
        return;
    size_t known = size < sizeof(*out) ? size : sizeof(*out);
    pthread_mutex_lock(&ctx->stats_lock);
    memcpy(out, &ctx->stats, known);
    pthread_mutex_unlock(&ctx->stats_lock);
    if (size > known)
        memset((char *)out + known, 0, size - known);
    out->size = known;
}
