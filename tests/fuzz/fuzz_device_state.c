/*
 * DEVICE_STATE: the guest's opaque state, which the destination hands to
 * its guest's load_state. Both guests of this tree parse it:
 *   - the thread guest (guest.c), loaded into an empty guest over a small
 *     RAM exactly as `livemig incoming --guest thread` does;
 *   - the KVM guest: its header check (lm__kvm_state_parse) and the
 *     workload check it runs against the destination's RAM size. What
 *     follows in kvm_load needs /dev/kvm (creating the VM and vCPUs) and
 *     only copies the register records.
 * The destination reads the body whole, up to LM_FRAME_MAX_LEN.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "guest/guest.h"
#include "guest/kvm_vm.h"

#define GUEST_PAGES 64
#define KVM_RAM     (64ull << 20) /* the size the KVM seeds name */

static void thread_guest(const uint8_t *data, size_t size)
{
    static uint8_t *ram;
    static lm_guest g;
    uint64_t len = (uint64_t)GUEST_PAGES * FUZZ_PAGE;
    if (!ram)
        FUZZ_CHECK((ram = aligned_alloc(FUZZ_PAGE, len)));
    lm_guest_init_empty(&g, ram, len);
    int ret = lm_guest_callbacks.load_state(&g, data, size);
    if (ret == 0) {
        /* Loaded vCPUs stay inside guest RAM, whatever the state said. */
        uint64_t total = g.ram_len / g.page_size;
        FUZZ_CHECK(g.nvcpus >= 1 && g.nvcpus <= LM_GUEST_MAX_VCPUS);
        for (unsigned i = 0; i < g.nvcpus; i++) {
            const lm_vcpu *v = &g.vcpus[i];
            FUZZ_CHECK(v->npages && v->first_page + v->npages <= total && v->cursor < v->npages);
        }
        FUZZ_CHECK(memchr(g.wl.spec, '\0', sizeof(g.wl.spec)));
    } else {
        FUZZ_CHECK(ret == -EBADMSG);
    }
    lm_guest_destroy(&g);
}

static void kvm_guest(const uint8_t *data, size_t size)
{
    lm_kvm_state_hdr h;
    const char *why = NULL;
    int ret = lm__kvm_state_parse(data, size, &h, &why);
    if (ret < 0) {
        FUZZ_CHECK((ret == -EBADMSG || ret == -EPROTOTYPE) && why && why[0]);
        return;
    }
    FUZZ_CHECK(h.nvcpus >= 1 && h.nvcpus <= LM_KVM_MAX_VCPUS && h.wl.kind <= LM_WL_HOT);
    FUZZ_CHECK(memchr(h.wl.spec, '\0', sizeof(h.wl.spec)));
    char text[256];
    if (h.ram_len == KVM_RAM)
        (void)lm_kvm_workload_check(&h.wl, h.ram_len, text, sizeof(text));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *kind = lm_guest_state_kind(data, size);
    FUZZ_CHECK(!kind || !strcmp(kind, "kvm") || !strcmp(kind, "thread"));
    thread_guest(data, size);
    kvm_guest(data, size);
    return 0;
}
