#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include "dirty/linux_compat.h" /* MADV_POPULATE_WRITE for older headers */
#include "guest/guest.h"

#define POPULATE_STEP (1ull << 30)

int lm_guest_ram_populate(void *ram, uint64_t len, const volatile sig_atomic_t *stop)
{
    /* A gibibyte at a time, so that a stop request is heard. */
    for (uint64_t off = 0; off < len; off += POPULATE_STEP) {
        uint64_t n = len - off < POPULATE_STEP ? len - off : POPULATE_STEP;
        if (stop && *stop)
            return -EINTR;
        if (madvise((uint8_t *)ram + off, n, MADV_POPULATE_WRITE) < 0)
            return -errno;
    }
    return 0;
}
