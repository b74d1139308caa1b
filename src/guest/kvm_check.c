/*
 * The KVM guest's continuity check and report (docs/KVM-GUEST.md), like
 * QEMU's migration-test: from a stopped guest's RAM and registers, every
 * page of a stress region must be exactly one step between two passes:
 * the pages the vCPU already wrote in its current pass hold (pass + 1),
 * the rest (pass), each as its low byte, and nothing else. The copy of
 * the pass counter the program keeps in guest RAM must agree with the
 * register, and random/hot pages may not carry a pass newer than their
 * writer's. The destination runs it after loading the state, before its
 * vCPUs run (at the end of the run in postcopy, when every page is here);
 * the source runs it on its stopped guest; a failure fails the migration.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "guest/kvm_vm.h"
#include "util/clock.h"
#include "util/json.h"

static uint64_t prog_off(unsigned which)
{
    return LM_KVM_PROG_GPA + lm_kvm_prog_offsets[which];
}

/* Right after the program's `inc %r8`, its copy in RAM is one behind. */
static bool after_inc(uint64_t rip)
{
    return rip == prog_off(LM_KVM_OFF_STRESS_AFTER_INC) ||
           rip == prog_off(LM_KVM_OFF_IDLE_AFTER_INC) || rip == prog_off(LM_KVM_OFF_RAND_AFTER_INC);
}

/* The host address of the slot piece holding gpa, and how many bytes of
 * it follow there (a region may span memory slots). */
static uint8_t *piece_at(lm_kvm_guest *g, uint64_t gpa, uint64_t *len)
{
    for (unsigned i = 0; i < g->nslots; i++) {
        const lm_kvm_memslot *s = &g->slots[i];
        if (gpa >= s->gpa && gpa - s->gpa < s->len) {
            *len = s->len - (gpa - s->gpa);
            return (uint8_t *)s->host + (gpa - s->gpa);
        }
    }
    return NULL;
}

static bool check_stress(lm_kvm_guest *g, unsigned i, const struct kvm_regs *r, char *why,
                         size_t whylen)
{
    uint64_t base = g->region_base[i], n = g->region_pages[i], k = 0;
    /* Inside the page loop the pages below ceil((rdi - base) / 4096) are
     * done; anywhere else a pass has not started (or has just ended and
     * the counter moved on): all pages hold the pass counter. */
    if (r->rip >= prog_off(LM_KVM_OFF_STRESS_PAGE) &&
        r->rip < prog_off(LM_KVM_OFF_STRESS_AFTER_INC)) {
        if (r->rdi < base || r->rdi > base + n * LM_KVM_PAGE) {
            snprintf(why, whylen, "vCPU %u: its page pointer 0x%llx is outside its region", i,
                     (unsigned long long)r->rdi);
            return false;
        }
        k = (r->rdi - base + LM_KVM_PAGE - 1) / LM_KVM_PAGE;
    }
    uint8_t ahead = (uint8_t)(r->r8 + 1), behind = (uint8_t)r->r8;
    for (uint64_t j = 0; j < n;) {
        uint64_t len;
        const volatile uint8_t *host = piece_at(g, base + j * LM_KVM_PAGE, &len);
        if (!host) {
            snprintf(why, whylen, "vCPU %u: its region is outside guest RAM", i);
            return false;
        }
        for (uint64_t end = j + len / LM_KVM_PAGE; j < n && j < end; j++, host += LM_KVM_PAGE) {
            uint8_t want = j < k ? ahead : behind, have = *host;
            if (have != want) {
                snprintf(why, whylen,
                         "vCPU %u: page %llu of %llu (guest 0x%llx) holds pass byte %u, expected "
                         "%u (pass %llu, %llu pages of it written)",
                         i, (unsigned long long)j, (unsigned long long)n,
                         (unsigned long long)(base + j * LM_KVM_PAGE), have, want,
                         (unsigned long long)r->r8, (unsigned long long)k);
                return false;
            }
        }
    }
    return true;
}

/* random, hot: every written page names a vCPU and a pass it has reached.
 * Pages never populated read as zero and are skipped unread. */
static bool check_tags(lm_kvm_guest *g, unsigned i, char *why, size_t whylen)
{
    uint64_t base = g->region_base[i], n = g->region_pages[i];
    for (uint64_t j = 0; j < n;) {
        uint64_t len;
        uint8_t *host = piece_at(g, base + j * LM_KVM_PAGE, &len);
        if (!host) {
            snprintf(why, whylen, "vCPU %u: its region is outside guest RAM", i);
            return false;
        }
        uint64_t m = len / LM_KVM_PAGE < n - j ? len / LM_KVM_PAGE : n - j;
        unsigned char *vec = malloc(m);
        if (vec && mincore(host, m * LM_KVM_PAGE, vec) < 0)
            memset(vec, 1, m);
        for (uint64_t x = 0; x < m; x++, j++) {
            if (vec && !(vec[x] & 1))
                continue;
            uint64_t q = *(volatile uint64_t *)(host + x * LM_KVM_PAGE);
            uint64_t who = q >> 48, pass = q & ((1ull << 48) - 1);
            if (q && (who >= g->nvcpus || pass > g->vcpus[who].regs.r8)) {
                snprintf(why, whylen,
                         "page %llu (guest 0x%llx) says vCPU %llu wrote it in pass %llu, newer "
                         "than that vCPU's pass",
                         (unsigned long long)j, (unsigned long long)(base + j * LM_KVM_PAGE),
                         (unsigned long long)who, (unsigned long long)pass);
                free(vec);
                return false;
            }
        }
        free(vec);
    }
    return true;
}

bool lm__kvm_check_vcpu(lm_kvm_guest *g, unsigned i, bool read_ram, char *why, size_t whylen)
{
    lm_kvm_vcpu *v = &g->vcpus[i];
    const struct kvm_regs *r = &v->regs;
    uint64_t params = LM_KVM_PARAMS_GPA + (uint64_t)i * LM_KVM_PAGE;
    uint64_t prog_len = (uint64_t)(lm_kvm_prog_end - lm_kvm_prog_start);
    if (v->dead) {
        snprintf(why, whylen, "%s", v->why);
        return false;
    }
    if (r->rsi != params || r->rip < LM_KVM_PROG_GPA || r->rip >= LM_KVM_PROG_GPA + prog_len ||
        r->rip == prog_off(LM_KVM_OFF_BROKEN)) {
        snprintf(why, whylen, "vCPU %u: registers outside the program (rip 0x%llx, rsi 0x%llx)", i,
                 (unsigned long long)r->rip, (unsigned long long)r->rsi);
        return false;
    }
    if (g->have_source_passes && r->r8 < g->source_passes[i]) {
        snprintf(why, whylen, "vCPU %u: pass counter %llu went back from the source's %llu", i,
                 (unsigned long long)r->r8, (unsigned long long)g->source_passes[i]);
        return false;
    }
    if (!read_ram)
        return true;
    const volatile uint64_t *p = lm__kvm_gpa(g, params, LM_KVM_PAGE);
    uint64_t mem = p[LM_KVM_P_PASS / 8];
    if (mem != r->r8 && !(after_inc(r->rip) && mem + 1 == r->r8)) {
        snprintf(why, whylen,
                 "vCPU %u: pass counter %llu in its registers, %llu in guest RAM (rip 0x%llx)", i,
                 (unsigned long long)r->r8, (unsigned long long)mem, (unsigned long long)r->rip);
        return false;
    }
    if (g->wl.kind == LM_WL_STRESS)
        return check_stress(g, i, r, why, whylen);
    if ((g->wl.kind == LM_WL_HOT && i == 0) || g->wl.kind == LM_WL_RANDOM)
        return check_tags(g, i, why, whylen);
    return true;
}

bool lm__kvm_ram_guarded(lm_kvm_guest *g)
{
    if (!g->nslots)
        return false;
    uintptr_t addr = (uintptr_t)g->slots[0].host;
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return true; /* cannot tell: do not read */
    char line[512];
    bool inside = false, guarded = false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            inside = addr >= lo && addr < hi;
        else if (inside && !strncmp(line, "VmFlags:", 8)) {
            guarded = strstr(line, " um") != NULL; /* userfaultfd missing mode */
            break;
        }
    }
    fclose(f);
    return guarded;
}

bool lm_kvm_guest_check(lm_kvm_guest *g, char *why, size_t whylen)
{
    bool ok = true;
    why[0] = '\0';
    for (unsigned i = 0; ok && i < g->nvcpus; i++)
        ok = lm__kvm_check_vcpu(g, i, true, why, whylen);
    /* A failure found at load stays a failure. */
    if (g->continuity_checked && !g->continuity_ok) {
        snprintf(why, whylen, "%s", g->continuity_why);
        return false;
    }
    g->continuity_checked = true;
    g->continuity_ok = ok;
    snprintf(g->continuity_why, sizeof(g->continuity_why), "%s", why);
    return ok;
}

bool lm_kvm_guest_continuity(const lm_kvm_guest *g, const char **why)
{
    if (why)
        *why = g->continuity_why;
    return g->continuity_checked && g->continuity_ok;
}

static double running_seconds(const lm_kvm_guest *g)
{
    uint64_t end = g->stopped_ns > g->resumed_ns ? g->stopped_ns : 0;
    return end && g->resumed_ns ? (double)(end - g->resumed_ns) / 1e9 : 0;
}

void lm_kvm_guest_start_windows(lm_kvm_guest *g, uint64_t len_ns)
{
    uint64_t now = lm_now_ns();
    for (int w = LM_WIN__COUNT; w >= 0; w--)
        atomic_store(&g->win_ns[w], now + (uint64_t)w * len_ns);
    for (int w = 0; w < LM_WIN__COUNT; w++)
        g->win_steal_ms[w] = -1;
}

void lm_kvm_guest_window_steal(lm_kvm_guest *g, int w, double steal_ms)
{
    if (w >= 0 && w < LM_WIN__COUNT)
        g->win_steal_ms[w] = steal_ms;
}

/* The longest gap between two exits of any vCPU: k 0 the whole run, 1 + w
 * window w. */
static double max_gap_ms(lm_kvm_guest *g, int k)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < g->nvcpus; i++)
        if (atomic_load(&g->vcpus[i].max_gap_ns[k]) > m)
            m = atomic_load(&g->vcpus[i].max_gap_ns[k]);
    return (double)m / 1e6;
}

char *lm_kvm_guest_report_json(lm_kvm_guest *g, uint64_t progress_start)
{
    lm_json j;
    lm_json_init(&j);
    lm_json_object_begin(&j, NULL);
    lm_json_str(&j, "kind", "kvm");
    lm_json_str(&j, "workload", g->wl.spec);
    lm_json_u64(&j, "vcpus", g->nvcpus);
    lm_json_u64(&j, "progress-start", progress_start);
    lm_json_u64(&j, "progress-end", lm_kvm_guest_progress(g));
    uint64_t exits = lm_kvm_guest_exits(g);
    lm_json_u64(&j, "vcpu-exits", exits);
    double secs = running_seconds(g);
    if (secs > 0)
        lm_json_double(&j, "vcpu-exits-per-second", (double)(exits - g->exits_at_resume) / secs);
    lm_json_u64(&j, "memory-slots", g->nslots);
    if (g->ring_entries) {
        lm_json_u64(&j, "dirty-ring-entries", g->ring_entries);
        lm_json_u64(&j, "dirty-ring-full-exits", lm_kvm_guest_ring_full_exits(g));
    }
    lm_json_bool(&j, "continuity", lm_kvm_guest_continuity(g, NULL));
    if (g->continuity_why[0])
        lm_json_str(&j, "continuity-error", g->continuity_why);
    if (g->have_source_passes)
        lm_json_double(&j, "load-check-ms", g->load_check_ms);
    lm_json_array_begin(&j, "vcpu-passes");
    for (unsigned i = 0; i < g->nvcpus; i++)
        lm_json_u64(&j, NULL, g->vcpus[i].regs.r8);
    lm_json_array_end(&j);
    lm_json_double(&j, "max-exit-gap-ms", max_gap_ms(g, 0));
    static const char *const names[LM_WIN__COUNT] = {"baseline", "tracking-start"};
    for (int w = 0; atomic_load(&g->win_ns[0]) && w < LM_WIN__COUNT; w++) {
        lm_json_object_begin(&j, names[w]);
        lm_json_double(&j, "max-exit-gap-ms", max_gap_ms(g, 1 + w));
        if (g->win_steal_ms[w] >= 0)
            lm_json_double(&j, "host-steal-ms", g->win_steal_ms[w]);
        lm_json_object_end(&j);
    }
    lm_json_object_end(&j);
    char *text = lm_json_finish(&j);
    size_t len = text ? strlen(text) : 0;
    if (len && text[len - 1] == '\n')
        text[len - 1] = '\0';
    return text;
}

void lm_kvm_guest_report_print(lm_kvm_guest *g, uint64_t progress_start, const char *phase,
                               FILE *out)
{
    const char *why;
    bool ok = lm_kvm_guest_continuity(g, &why);
    fprintf(out,
            "guest: kvm, %s, %u vCPU(s), passes %llu -> %llu (%s), %llu exits, continuity %s%s%s\n",
            g->wl.spec, g->nvcpus, (unsigned long long)progress_start,
            (unsigned long long)lm_kvm_guest_progress(g), phase,
            (unsigned long long)lm_kvm_guest_exits(g),
            ok                      ? "ok"
            : g->continuity_checked ? "FAILED"
                                    : "not checked",
            why[0] ? ": " : "", why);
}
