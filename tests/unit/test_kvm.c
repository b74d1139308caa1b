/*
 * The KVM guest without a network: a stress guest runs, stops, and its
 * device state and a copy of its RAM bring up a second guest (as a
 * destination would), which continues from the same instruction:
 *
 *  - the continuity check holds on the stopped source and on the copy
 *    before its vCPUs run, and its pass counters go on from the source's;
 *  - stop is prompt (a kick, not a pass) and resume/stop repeat cleanly;
 *  - a copy with one page set back a pass is refused by load_state, and
 *    a copy with one page set back behind the vCPU's position is caught
 *    by the guest's own check once it runs there;
 *  - a thread guest's state is refused by name.
 * Skips (77) when /dev/kvm cannot run the guest.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "guest/kvm_guest.h"
#include "util/clock.h"

#define RAM_LEN (16u << 20)
#define DATA    0x400000u

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A destination: a context with a copy of RAM, loaded from state. */
static lm_kvm_guest *bring_up(const uint8_t *ram, void *state, size_t len, lm_ctx **ctx_out,
                              uint8_t **copy_out, void (*damage)(uint8_t *), int *load_rc)
{
    lm_ctx *ctx = lm_ctx_new();
    uint8_t *copy = lm_ram_alloc(RAM_LEN);
    memcpy(copy, ram, RAM_LEN);
    if (damage)
        damage(copy);
    CHECK(lm_ram_block_add(ctx, 0, "ram", copy, RAM_LEN, LM_RAM_ZEROED) == 0);
    lm_kvm_guest *g = lm_kvm_guest_new_empty(ctx);
    *load_rc = lm_kvm_guest_callbacks.load_state(g, state, len);
    *ctx_out = ctx;
    *copy_out = copy;
    return g;
}

static void set_back_first_page(uint8_t *ram)
{
    ram[DATA]--; /* page 0 of vCPU 0's region: a pass older */
}

static void set_back_last_page(uint8_t *ram)
{
    /* The last page of vCPU 1's region, two passes back: wrong for any
     * position, but only the guest reads it later in its pass. */
    ram[DATA + 2 * (4u << 20) - 4096] -= 2;
}

int main(void)
{
    char why[256];
    if (lm_kvm_probe(why, sizeof(why)) < 0)
        TEST_SKIP(why);
    uint8_t *ram = lm_ram_alloc(RAM_LEN);
    lm_workload w;
    CHECK(lm_workload_parse("stress:2x4M", &w, why, sizeof(why)) == 0);
    lm_kvm_guest *src = lm_kvm_guest_create(ram, RAM_LEN, &w, 7, 0, why, sizeof(why));
    if (!src) {
        fprintf(stderr, "%s\n", why);
        return 1;
    }
    CHECK_EQ_U64(lm_kvm_guest_vcpus(src), 2);
    const lm_kvm_memslot *slots;
    CHECK_EQ_U64(lm_kvm_guest_slots(src, &slots), 1);
    CHECK(lm_kvm_guest_vm_fd(src) >= 0 && slots[0].gpa == 0 && slots[0].host == ram);

    /* Stop and resume a few times: prompt, and each check holds. */
    for (int i = 0; i < 3; i++) {
        sleep_ms(50);
        uint64_t t0 = lm_now_ns();
        CHECK(lm_kvm_guest_callbacks.stop(src) == 0);
        uint64_t stop_us = (lm_now_ns() - t0) / 1000;
        fprintf(stderr, "stop took %llu us, %llu exits, %llu passes\n", (unsigned long long)stop_us,
                (unsigned long long)lm_kvm_guest_exits(src),
                (unsigned long long)lm_kvm_guest_progress(src));
        CHECK(stop_us < 50000);
        CHECK(lm_kvm_guest_check(src, why, sizeof(why)));
        if (why[0])
            fprintf(stderr, "source: %s\n", why);
        if (i < 2)
            CHECK(lm_kvm_guest_callbacks.resume(src) == 0);
    }
    uint64_t passes = lm_kvm_guest_progress(src);
    CHECK(passes > 2);
    void *state;
    size_t len;
    CHECK(lm_kvm_guest_callbacks.save_state(src, &state, &len) == 0);
    CHECK(!strcmp(lm_guest_state_kind(state, len), "kvm"));

    /* A faithful copy continues. */
    lm_ctx *ctx;
    uint8_t *copy;
    int rc;
    lm_kvm_guest *dst = bring_up(ram, state, len, &ctx, &copy, NULL, &rc);
    CHECK(rc == 0);
    CHECK(lm_kvm_guest_continuity(dst, NULL));
    CHECK_EQ_U64(lm_kvm_guest_progress(dst), passes);
    CHECK(lm_kvm_guest_callbacks.resume(dst) == 0);
    sleep_ms(100);
    CHECK(lm_kvm_guest_callbacks.stop(dst) == 0);
    CHECK(lm_kvm_guest_check(dst, why, sizeof(why)));
    CHECK(lm_kvm_guest_progress(dst) > passes);
    CHECK(lm_kvm_guest_exits(dst) > 0);
    lm_kvm_guest_destroy(dst);
    lm_ctx_free(ctx);
    lm_ram_free(copy, RAM_LEN);

    /* A page a pass older: refused before the guest runs. */
    dst = bring_up(ram, state, len, &ctx, &copy, set_back_first_page, &rc);
    CHECK(rc == -EILSEQ);
    fprintf(stderr, "refused as expected: %s\n", lm_kvm_guest_error(dst));
    CHECK(!lm_kvm_guest_continuity(dst, NULL));
    lm_kvm_guest_destroy(dst);
    lm_ctx_free(ctx);
    lm_ram_free(copy, RAM_LEN);

    /* The guest's own check: the same damage found by the vCPU itself
     * (the VMM's check at load is skipped by loading onto a guest whose
     * load check already passed: run the faithful copy, damage it live). */
    dst = bring_up(ram, state, len, &ctx, &copy, NULL, &rc);
    CHECK(rc == 0);
    set_back_last_page(copy);
    CHECK(lm_kvm_guest_callbacks.resume(dst) == 0);
    sleep_ms(100);
    CHECK(lm_kvm_guest_callbacks.stop(dst) == 0);
    CHECK(!lm_kvm_guest_check(dst, why, sizeof(why)));
    fprintf(stderr, "caught as expected: %s\n", why);
    CHECK(strstr(why, "own check") != NULL);
    lm_kvm_guest_destroy(dst);
    lm_ctx_free(ctx);
    lm_ram_free(copy, RAM_LEN);

    /* A thread guest's state, by name. */
    uint8_t thread_state[96] = {'L', 'M', 'G', 'S'};
    CHECK(!strcmp(lm_guest_state_kind(thread_state, sizeof(thread_state)), "thread"));
    lm_kvm_guest *other = lm_kvm_guest_new_empty(NULL);
    CHECK(lm_kvm_guest_callbacks.load_state(other, thread_state, sizeof(thread_state)) < 0);
    CHECK(strstr(lm_kvm_guest_error(other), "--guest thread") != NULL);
    lm_kvm_guest_destroy(other);

    free(state);
    lm_kvm_guest_destroy(src);
    lm_ram_free(ram, RAM_LEN);
    TEST_DONE();
}
