/*
 * The KVM guest's lm_guest_ops (docs/KVM-GUEST.md): creating the guest on
 * the source, stop and resume, the device state (every vCPU's registers
 * and the workload), and loading it on the destination, where the VM is
 * created over the RAM blocks the migration filled and the vCPUs continue
 * from the exact instruction the source stopped at.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "guest/kvm_vm.h"
#include "proto/wire.h"
#include "util/clock.h"

#define KVM_STATE_MAGIC    0x4C4D4B56u /* "LMKV" */
#define THREAD_STATE_MAGIC 0x4C4D4753u /* "LMGS", guest.c's */
#define KVM_STATE_VERSION  1
#define KVM_STATE_HEAD     128
#define KVM_STATE_VCPU     (8 + sizeof(struct kvm_regs) + sizeof(struct kvm_sregs))
#define HOT_BATCH          1024 /* hot: random writes between two exits */

static lm_kvm_guest *guest_alloc(void)
{
    lm_kvm_guest *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->kvm_fd = g->vm_fd = -1;
    for (unsigned i = 0; i < LM_KVM_MAX_VCPUS; i++)
        g->vcpus[i].fd = -1;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    atomic_store(&g->pause, 1); /* nothing runs until resume */
    return g;
}

void lm_kvm_guest_destroy(lm_kvm_guest *g)
{
    if (!g)
        return;
    lm__kvm_vcpus_quit(g);
    lm__kvm_vm_destroy(g);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g);
}

int lm_kvm_workload_check(const lm_workload *w, uint64_t ram_len, char *why, size_t whylen)
{
    uint64_t need = LM_KVM_DATA_GPA + LM_KVM_PAGE;
    switch (w->kind) {
    case LM_WL_IDLE:
    case LM_WL_RANDOM:
        break;
    case LM_WL_FILL:
    case LM_WL_HOT:
        need = LM_KVM_DATA_GPA + w->bytes;
        break;
    case LM_WL_STRESS:
        if (w->bytes > (LM_KVM_MAX_GPA - LM_KVM_DATA_GPA) / w->threads)
            need = LM_KVM_MAX_GPA + 1;
        else
            need = LM_KVM_DATA_GPA + w->bytes / LM_KVM_PAGE * LM_KVM_PAGE * w->threads;
        break;
    default:
        snprintf(why, whylen,
                 "the KVM guest runs idle, fill:SIZE, stress:NxSIZE, hot:NxSIZE and "
                 "random:PAGES_PER_SEC; '%s' needs --guest thread",
                 w->spec);
        return -EINVAL;
    }
    if (need > ram_len || ram_len > LM_KVM_MAX_GPA || ram_len % LM_KVM_PAGE) {
        snprintf(why, whylen,
                 "workload '%s' on the KVM guest needs %llu bytes of RAM (4 MiB of page tables "
                 "and program, then the regions; at most %llu GiB), the guest has %llu: "
                 "change --ram",
                 w->spec, (unsigned long long)need, (unsigned long long)(LM_KVM_MAX_GPA >> 30),
                 (unsigned long long)ram_len);
        return -EINVAL;
    }
    return 0;
}

/* Each vCPU's region and the program's kind, from the workload: the
 * source and the destination compute the same. */
static void layout(lm_kvm_guest *g)
{
    const lm_workload *w = &g->wl;
    g->nvcpus = w->kind == LM_WL_STRESS || w->kind == LM_WL_HOT ? w->threads : 1;
    g->batch = 0;
    for (unsigned i = 0; i < g->nvcpus; i++) {
        g->region_base[i] = LM_KVM_DATA_GPA;
        g->region_pages[i] = 0;
        if (w->kind == LM_WL_STRESS) {
            g->region_pages[i] = w->bytes / LM_KVM_PAGE;
            g->region_base[i] += (uint64_t)i * g->region_pages[i] * LM_KVM_PAGE;
        } else if (w->kind == LM_WL_HOT) {
            g->region_pages[i] = w->bytes / LM_KVM_PAGE;
            g->batch = HOT_BATCH;
        } else if (w->kind == LM_WL_RANDOM) {
            g->region_pages[i] = (g->ram_len - LM_KVM_DATA_GPA) / LM_KVM_PAGE;
            g->batch = w->pages_per_sec >= 1000 ? w->pages_per_sec / 1000 : 1;
        }
    }
}

static unsigned program_kind(const lm_workload *w)
{
    if (w->kind == LM_WL_STRESS)
        return LM_KVM_KIND_STRESS;
    if (w->kind == LM_WL_HOT || w->kind == LM_WL_RANDOM)
        return LM_KVM_KIND_RAND;
    return LM_KVM_KIND_IDLE;
}

static void write_params(lm_kvm_guest *g)
{
    for (unsigned i = 0; i < g->nvcpus; i++) {
        uint64_t *p = lm__kvm_gpa(g, LM_KVM_PARAMS_GPA + i * LM_KVM_PAGE, LM_KVM_PAGE);
        p[LM_KVM_P_KIND / 8] = program_kind(&g->wl);
        p[LM_KVM_P_BASE / 8] = g->region_base[i];
        p[LM_KVM_P_PAGES / 8] = g->region_pages[i];
        p[LM_KVM_P_BATCH / 8] = g->batch;
        p[LM_KVM_P_PASS / 8] = 0;
        p[LM_KVM_P_TAG / 8] = (uint64_t)i << 48;
    }
}

static void fill_random(uint8_t *p, uint64_t bytes, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull | 1;
    for (uint64_t i = 0; i + 8 <= bytes; i += 8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        memcpy(p + i, &s, 8);
    }
}

/* Up: every vCPU has exited once, and every stress vCPU has written its
 * whole region once (or died). */
static bool guest_up(lm_kvm_guest *g)
{
    for (unsigned i = 0; i < g->nvcpus; i++) {
        volatile uint64_t *p = lm__kvm_gpa(g, LM_KVM_PARAMS_GPA + i * LM_KVM_PAGE, LM_KVM_PAGE);
        if (g->vcpus[i].dead)
            continue;
        if (!atomic_load(&g->vcpus[i].exits) ||
            (g->wl.kind == LM_WL_STRESS && p[LM_KVM_P_PASS / 8] < 1))
            return false;
    }
    return true;
}

lm_kvm_guest *lm_kvm_guest_create(void *host, uint64_t len, const lm_workload *w, uint64_t seed,
                                  uint32_t dirty_ring, char *why, size_t whylen)
{
    lm_kvm_guest *g = guest_alloc();
    if (!g) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    g->wl = *w;
    g->seed = seed;
    g->ring_entries = dirty_ring;
    if (lm_kvm_workload_check(w, len, why, whylen) < 0 || lm__kvm_vm_create(g, why, whylen) < 0 ||
        lm__kvm_slot_add(g, 0, host, len, why, whylen) < 0)
        goto fail;
    layout(g);
    lm__kvm_build_tables(g);
    write_params(g);
    if (w->kind == LM_WL_FILL)
        fill_random(lm__kvm_gpa(g, LM_KVM_DATA_GPA, w->bytes), w->bytes, seed);
    for (unsigned i = 0; i < g->nvcpus; i++) {
        if (lm__kvm_vcpu_create(g, i, why, whylen) < 0)
            goto fail;
        lm__kvm_initial_regs(g, i, &g->vcpus[i].regs, &g->vcpus[i].sregs);
    }
    if (lm_kvm_guest_callbacks.resume(g) < 0) {
        snprintf(why, whylen, "cannot start vCPU threads");
        goto fail;
    }
    /* Like the thread guest: up once every stress vCPU wrote its region
     * once, so that migrations start from the same state. */
    uint64_t t0 = lm_now_ns();
    while (!guest_up(g) && lm_now_ns() - t0 < 60000000000ull) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (unsigned i = 0; i < g->nvcpus; i++)
        if (g->vcpus[i].dead) {
            snprintf(why, whylen, "the KVM guest does not run: %s", g->vcpus[i].why);
            goto fail;
        }
    return g;
fail:
    lm_kvm_guest_destroy(g);
    return NULL;
}

lm_kvm_guest *lm_kvm_guest_new_empty(lm_ctx *ctx)
{
    lm_kvm_guest *g = guest_alloc();
    if (g)
        g->ctx = ctx;
    return g;
}

static int kvm_stop(void *opaque)
{
    lm_kvm_guest *g = opaque;
    lm__kvm_vcpus_stop(g);
    g->stopped_ns = lm_now_ns();
    return 0;
}

static int kvm_resume(void *opaque)
{
    lm_kvm_guest *g = opaque;
    g->progress_at_resume = lm_kvm_guest_progress(g);
    g->exits_at_resume = lm_kvm_guest_exits(g);
    g->resumed_ns = lm_now_ns();
    lm__kvm_vcpus_resume(g);
    return lm__kvm_vcpus_start(g);
}

/* State: magic u32 | version u32 | nvcpus u32 | kind u32 | threads u32 |
 * regs size u32 | bytes u64 | pages_per_sec u64 | ram_len u64 | seed u64 |
 * sregs size u32 | reserved to 64 | spec[48] | reserved to 128; then per
 * vCPU: exits u64 | struct kvm_regs | struct kvm_sregs (x86-64 layout). */
static int kvm_save(void *opaque, void **buf, size_t *len)
{
    lm_kvm_guest *g = opaque;
    size_t n = KVM_STATE_HEAD + (size_t)g->nvcpus * KVM_STATE_VCPU;
    uint8_t *b = calloc(1, n);
    if (!b)
        return -ENOMEM;
    lm_put_be32(b, KVM_STATE_MAGIC);
    lm_put_be32(b + 4, KVM_STATE_VERSION);
    lm_put_be32(b + 8, g->nvcpus);
    lm_put_be32(b + 12, (uint32_t)g->wl.kind);
    lm_put_be32(b + 16, g->wl.threads);
    lm_put_be32(b + 20, (uint32_t)sizeof(struct kvm_regs));
    lm_put_be64(b + 24, g->wl.bytes);
    lm_put_be64(b + 32, g->wl.pages_per_sec);
    lm_put_be64(b + 40, g->ram_len);
    lm_put_be64(b + 48, g->seed);
    lm_put_be32(b + 56, (uint32_t)sizeof(struct kvm_sregs));
    memcpy(b + 64, g->wl.spec, strnlen(g->wl.spec, 47));
    for (unsigned i = 0; i < g->nvcpus; i++) {
        uint8_t *p = b + KVM_STATE_HEAD + (size_t)i * KVM_STATE_VCPU;
        lm_put_be64(p, atomic_load(&g->vcpus[i].exits));
        memcpy(p + 8, &g->vcpus[i].regs, sizeof(struct kvm_regs));
        memcpy(p + 8 + sizeof(struct kvm_regs), &g->vcpus[i].sregs, sizeof(struct kvm_sregs));
    }
    *buf = b;
    *len = n;
    return 0;
}

const char *lm_guest_state_kind(const void *buf, size_t len)
{
    if (len < 4)
        return NULL;
    uint32_t magic = lm_get_be32(buf);
    return magic == KVM_STATE_MAGIC ? "kvm" : magic == THREAD_STATE_MAGIC ? "thread" : NULL;
}

static int load_fail(lm_kvm_guest *g, int err, const char *what)
{
    snprintf(g->error, sizeof(g->error), "%s", what);
    return err;
}

/* The VM over the RAM blocks lm_incoming filled, in their order. */
static int create_vm_here(lm_kvm_guest *g)
{
    char why[200];
    if (lm__kvm_vm_create(g, why, sizeof(why)) < 0)
        return load_fail(g, -ENOTSUP, why);
    for (unsigned i = 0; i < lm_ram_block_count(g->ctx); i++) {
        uint32_t id;
        void *host;
        uint64_t len;
        if (lm_ram_block_get(g->ctx, i, &id, NULL, &host, &len) < 0 ||
            lm__kvm_slot_add(g, id, host, len, why, sizeof(why)) < 0)
            return load_fail(g, -EINVAL, why);
    }
    return 0;
}

int lm__kvm_state_parse(const void *buf, size_t len, lm_kvm_state_hdr *h, const char **why)
{
    const uint8_t *b = buf;
    const char *kind = lm_guest_state_kind(buf, len);
    if (kind && !strcmp(kind, "thread")) {
        *why = "the source runs the thread guest and this side the KVM guest: start "
               "incoming with --guest thread";
        return -EPROTOTYPE;
    }
    if (!kind || len < KVM_STATE_HEAD || lm_get_be32(b + 4) != KVM_STATE_VERSION) {
        *why = "the KVM guest's device state is not one this side reads";
        return -EBADMSG;
    }
    uint32_t nvcpus = lm_get_be32(b + 8), wkind = lm_get_be32(b + 12);
    if (nvcpus == 0 || nvcpus > LM_KVM_MAX_VCPUS || wkind > LM_WL_HOT ||
        len != KVM_STATE_HEAD + (size_t)nvcpus * KVM_STATE_VCPU ||
        lm_get_be32(b + 20) != sizeof(struct kvm_regs) ||
        lm_get_be32(b + 56) != sizeof(struct kvm_sregs) || memchr(b + 64, 0, 48) == NULL) {
        *why = "the KVM guest's device state is malformed";
        return -EBADMSG;
    }
    memset(h, 0, sizeof(*h));
    h->nvcpus = nvcpus;
    h->wl.kind = (lm_workload_kind)wkind;
    h->wl.threads = lm_get_be32(b + 16);
    h->wl.bytes = lm_get_be64(b + 24);
    h->wl.pages_per_sec = lm_get_be64(b + 32);
    h->ram_len = lm_get_be64(b + 40);
    h->seed = lm_get_be64(b + 48);
    memcpy(h->wl.spec, b + 64, 48);
    return 0;
}

static int kvm_load(void *opaque, const void *buf, size_t len)
{
    lm_kvm_guest *g = opaque;
    const uint8_t *b = buf;
    lm_kvm_state_hdr h;
    const char *what;
    int ret = lm__kvm_state_parse(buf, len, &h, &what);
    if (ret < 0)
        return load_fail(g, ret, what);
    uint32_t nvcpus = h.nvcpus;
    /* A second device state (the source resumed precopy after a broken
     * switchover, then stopped again): the VM and its vCPUs exist, only
     * their registers are new. */
    bool again = g->kvm_fd >= 0 && g->nvcpus > 0;
    if (again && (g->nvcpus != nvcpus || h.wl.kind != g->wl.kind))
        return load_fail(g, -EBADMSG,
                         "the KVM guest's second device state does not match its first");
    g->wl.kind = h.wl.kind;
    g->wl.threads = h.wl.threads;
    g->wl.bytes = h.wl.bytes;
    g->wl.pages_per_sec = h.wl.pages_per_sec;
    g->seed = h.seed;
    memcpy(g->wl.spec, h.wl.spec, 48);
    if (!again && (ret = create_vm_here(g)) < 0)
        return ret;
    char why[256];
    if (g->ram_len != h.ram_len || lm_kvm_workload_check(&g->wl, g->ram_len, why, sizeof(why)) < 0)
        return load_fail(g, -EBADMSG,
                         "the KVM guest's RAM or workload does not match the source's");
    layout(g);
    if (g->nvcpus != nvcpus)
        return load_fail(g, -EBADMSG, "the KVM guest's vCPU count does not match its workload");
    for (unsigned i = 0; i < nvcpus; i++) {
        const uint8_t *p = b + KVM_STATE_HEAD + (size_t)i * KVM_STATE_VCPU;
        lm_kvm_vcpu *v = &g->vcpus[i];
        if (!again && lm__kvm_vcpu_create(g, i, why, sizeof(why)) < 0)
            return load_fail(g, -ENOTSUP, why);
        atomic_store(&v->exits, 0); /* this side's exits */
        memcpy(&v->regs, p + 8, sizeof(struct kvm_regs));
        memcpy(&v->sregs, p + 8 + sizeof(struct kvm_regs), sizeof(struct kvm_sregs));
        g->source_passes[i] = v->regs.r8;
    }
    g->have_source_passes = true;
    uint64_t dp = g->x_damage_page - 1;
    uint8_t *damaged = g->x_damage_page && dp < g->region_pages[0]
                           ? lm__kvm_gpa(g, g->region_base[0] + dp * LM_KVM_PAGE, 1)
                           : NULL;
    if (damaged)
        (*damaged)--;
    /* Continuity before the guest runs here. In postcopy the RAM is not all
     * here yet: registers now, the pages at the end of the run. */
    bool read_ram = !lm__kvm_ram_guarded(g);
    uint64_t t0 = lm_now_ns();
    for (unsigned i = 0; i < nvcpus; i++)
        if (!lm__kvm_check_vcpu(g, i, read_ram, why, sizeof(why))) {
            g->continuity_checked = true;
            g->continuity_ok = false;
            snprintf(g->continuity_why, sizeof(g->continuity_why), "%s", why);
            char msg[300];
            snprintf(msg, sizeof(msg), "continuity check failed: %s", why);
            return load_fail(g, -EILSEQ, msg);
        }
    g->continuity_checked = read_ram;
    g->continuity_ok = true;
    g->load_check_ms = (double)(lm_now_ns() - t0) / 1e6;
    return 0;
}

static int kvm_throttle(void *opaque, unsigned percent)
{
    lm_kvm_guest *g = opaque;
    if (percent > 99)
        return -EINVAL;
    atomic_store(&g->throttle_pct, percent);
    return 0;
}

static int kvm_dirty_limit(void *opaque, uint64_t pages_per_sec)
{
    lm_kvm_guest *g = opaque;
    atomic_store(&g->dirty_limit, pages_per_sec);
    return 0;
}

const lm_guest_ops lm_kvm_guest_callbacks = {
    .stop = kvm_stop,
    .resume = kvm_resume,
    .save_state = kvm_save,
    .load_state = kvm_load,
    .throttle = kvm_throttle,
    .dirty_limit = kvm_dirty_limit,
};

int lm_kvm_guest_vm_fd(const lm_kvm_guest *g)
{
    return g->vm_fd;
}

unsigned lm_kvm_guest_slots(const lm_kvm_guest *g, const lm_kvm_memslot **slots)
{
    *slots = g->slots;
    return g->nslots;
}

int lm_kvm_guest_attach(const lm_kvm_guest *g, lm_ctx *ctx)
{
    lm_kvm_slot slots[LM_KVM_MAX_SLOTS];
    for (unsigned i = 0; i < g->nslots; i++)
        slots[i] = (lm_kvm_slot){.slot = g->slots[i].slot,
                                 .block_id = g->slots[i].block_id,
                                 .block_offset = g->slots[i].block_offset,
                                 .size = g->slots[i].len,
                                 .guest_phys = g->slots[i].gpa,
                                 .flags = 0}; /* as kvm_vm.c registers them */
    int ret = lm_kvm_attach(ctx, g->vm_fd, slots, g->nslots);
    if (ret < 0 || !g->ring_entries)
        return ret;
    void *rings[LM_KVM_MAX_VCPUS];
    for (unsigned i = 0; i < g->nvcpus; i++)
        rings[i] = g->vcpus[i].ring;
    return lm_kvm_attach_rings(ctx, rings, g->nvcpus, g->ring_entries);
}

unsigned lm_kvm_guest_vcpus(const lm_kvm_guest *g)
{
    return g->nvcpus;
}

const char *lm_kvm_guest_error(const lm_kvm_guest *g)
{
    return g->error[0] ? g->error : NULL;
}

void lm_kvm_guest_x_damage(lm_kvm_guest *g, uint64_t page)
{
    g->x_damage_page = page + 1;
}

uint64_t lm_kvm_guest_resumed_progress(const lm_kvm_guest *g)
{
    return g->progress_at_resume;
}

uint64_t lm_kvm_guest_exits(lm_kvm_guest *g)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < g->nvcpus; i++)
        n += atomic_load(&g->vcpus[i].exits);
    return n;
}

uint64_t lm_kvm_guest_ring_full_exits(lm_kvm_guest *g)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < g->nvcpus; i++)
        n += atomic_load(&g->vcpus[i].ring_full);
    return n;
}

/* From the registers while stopped; from the parameter pages (the copy
 * the program writes after each pass) while it runs. */
uint64_t lm_kvm_guest_progress(lm_kvm_guest *g)
{
    bool stopped = atomic_load(&g->pause);
    uint64_t n = 0;
    for (unsigned i = 0; i < g->nvcpus; i++) {
        volatile uint64_t *p = stopped || g->vm_fd < 0
                                   ? NULL
                                   : lm__kvm_gpa(g, LM_KVM_PARAMS_GPA + i * LM_KVM_PAGE, 64);
        n += p ? p[LM_KVM_P_PASS / 8] : g->vcpus[i].regs.r8;
    }
    return n;
}

int lm_kvm_probe(char *why, size_t whylen)
{
    uint64_t len = LM_KVM_DATA_GPA + (1ull << 20);
    void *ram = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED) {
        snprintf(why, whylen, "cannot map memory for a probe guest");
        return -ENOMEM;
    }
    lm_workload w = {.kind = LM_WL_STRESS, .threads = 1, .bytes = 1ull << 20};
    snprintf(w.spec, sizeof(w.spec), "stress:1x1M");
    char inner[200];
    lm_kvm_guest *g = lm_kvm_guest_create(ram, len, &w, 1, 0, inner, sizeof(inner));
    int ret = 0;
    if (!g) {
        snprintf(why, whylen, "/dev/kvm cannot run the KVM guest: %s", inner);
        ret = -ENOTSUP;
    } else {
        lm_kvm_guest_callbacks.stop(g);
        if (!lm_kvm_guest_check(g, inner, sizeof(inner))) {
            snprintf(why, whylen, "the probe guest ran but its pages are out of step: %s", inner);
            ret = -EILSEQ;
        }
    }
    lm_kvm_guest_destroy(g);
    munmap(ram, len);
    return ret;
}
