/* The overridable system-call table: see sys.h. */
#include "util/sys.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/ioctl.h>

static ssize_t real_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return sendmsg(fd, msg, flags);
}

static ssize_t real_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return readv(fd, iov, iovcnt);
}

static ssize_t real_recv(int fd, void *buf, size_t len, int flags)
{
    return recv(fd, buf, len, flags);
}

static int real_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    return connect(fd, addr, len);
}

static int real_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return accept4(fd, addr, len, flags);
}

static int real_ioctl(int fd, unsigned long request, void *arg)
{
    return ioctl(fd, request, arg);
}

const lm_sys_ops lm__sys_real = {
    .sendmsg = real_sendmsg,
    .readv = real_readv,
    .recv = real_recv,
    .connect = real_connect,
    .accept4 = real_accept4,
    .ioctl = real_ioctl,
};

/* The one process-wide table (see sys.h for why). */
static _Atomic(const lm_sys_ops *) sys_ops = &lm__sys_real;

static const lm_sys_ops *ops(void)
{
    return atomic_load_explicit(&sys_ops, memory_order_acquire);
}

int lm__sys_set(const lm_sys_ops *o)
{
    if (!o || !o->sendmsg || !o->readv || !o->recv || !o->connect || !o->accept4 || !o->ioctl)
        return -EINVAL;
    atomic_store_explicit(&sys_ops, o, memory_order_release);
    return 0;
}

void lm__sys_reset(void)
{
    atomic_store_explicit(&sys_ops, &lm__sys_real, memory_order_release);
}

ssize_t lm_sys_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return ops()->sendmsg(fd, msg, flags);
}

ssize_t lm_sys_readv(int fd, const struct iovec *iov, int iovcnt)
{
    return ops()->readv(fd, iov, iovcnt);
}

ssize_t lm_sys_recv(int fd, void *buf, size_t len, int flags)
{
    return ops()->recv(fd, buf, len, flags);
}

int lm_sys_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    return ops()->connect(fd, addr, len);
}

int lm_sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return ops()->accept4(fd, addr, len, flags);
}

int lm_sys_ioctl(int fd, unsigned long request, void *arg)
{
    return ops()->ioctl(fd, request, arg);
}
