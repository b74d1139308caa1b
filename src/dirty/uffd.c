#include "dirty/uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dirty/linux_compat.h"

static int open_raw(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    /* Unprivileged processes may only handle user-mode faults unless the
     * vm.unprivileged_userfaultfd sysctl allows more. */
    if (fd < 0 && errno == EPERM)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    return fd < 0 ? -errno : fd;
}

static int describe_open_failure(int ret, lm_err *err)
{
    if (ret == -ENOSYS)
        return lm_err_set(err, ret,
                          "this kernel has no userfaultfd (CONFIG_USERFAULTFD); "
                          "dirty tracking needs it");
    return lm_err_set(err, ret,
                      "userfaultfd() failed: %s (allow it with "
                      "sysctl vm.unprivileged_userfaultfd=1 or run as root)",
                      strerror(-ret));
}

int lm_uffd_probe_features(uint64_t *features, lm_err *err)
{
    int fd = open_raw();
    if (fd < 0)
        return describe_open_failure(fd, err);
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    int ret = lm_sys_ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;
    close(fd);
    if (ret < 0)
        return lm_err_set(err, ret, "UFFDIO_API failed: %s", strerror(-ret));
    *features = api.features;
    return 0;
}

int lm_uffd_open(uint64_t features, lm_err *err)
{
    int fd = open_raw();
    if (fd < 0)
        return describe_open_failure(fd, err);
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    if (lm_sys_ioctl(fd, UFFDIO_API, &api) < 0) {
        int ret = -errno;
        close(fd);
        return lm_err_set(err, ret, "UFFDIO_API with features 0x%llx failed: %s",
                          (unsigned long long)features, strerror(-ret));
    }
    return fd;
}

int lm_uffd_register(int uffd, void *host, uint64_t len, uint64_t mode, lm_err *err)
{
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)host, .len = len},
        .mode = mode,
    };
    if (lm_sys_ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
        int ret = -errno;
        return lm_err_set(err, ret,
                          "UFFDIO_REGISTER of %p+%llu (mode 0x%llx) failed: %s; "
                          "guest RAM must be private anonymous memory",
                          host, (unsigned long long)len, (unsigned long long)mode, strerror(-ret));
    }
    return 0;
}

void lm_uffd_unregister(int uffd, void *host, uint64_t len)
{
    struct uffdio_range range = {.start = (uintptr_t)host, .len = len};
    (void)lm_sys_ioctl(uffd, UFFDIO_UNREGISTER, &range);
}

int lm_uffd_wp(int uffd, void *host, uint64_t len, bool protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = (uintptr_t)host, .len = len},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    return lm_sys_ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

int lm_uffd_fault_loop(int uffd, int stop_fd, uint64_t page_size,
                       int (*on_fault)(void *opaque, uint64_t addr, uint64_t flags), void *opaque)
{
    struct uffd_msg msgs[64];
    for (;;) {
        struct pollfd pfd[2] = {{.fd = uffd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (pfd[1].revents)
            return 0;
        ssize_t n = read(uffd, msgs, sizeof(msgs));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            int ret = on_fault(opaque, msgs[i].arg.pagefault.address & ~(page_size - 1),
                               msgs[i].arg.pagefault.flags);
            if (ret < 0)
                return ret;
        }
    }
}
