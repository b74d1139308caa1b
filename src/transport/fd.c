/* "fd:N": a socket the embedding program opened itself (QEMU's fd: URI),
 * connected or listening, secured or set up however it likes. livemig
 * takes it over and closes it when done. A connected socket is one
 * connection: no multifd channels, no preempt connection, no reconnection;
 * a listening one serves as the destination's listener. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "transport/transport.h"

static int parse_fd(const char *addr, int *fd, lm_err *err)
{
    size_t n = strspn(addr, "0123456789");
    long v = n && n == strlen(addr) && n <= 9 ? strtol(addr, NULL, 10) : -1;
    if (v < 0)
        return lm_err_set(err, -EINVAL, "bad address 'fd:%s': expected fd:N, N a descriptor number",
                          addr);
    struct stat st;
    if (fstat((int)v, &st) < 0)
        return lm_err_set(err, -EBADF, "fd:%ld is not an open descriptor of this process", v);
    if (!S_ISSOCK(st.st_mode))
        return lm_err_set(err, -ENOTSOCK, "fd:%ld is not a socket", v);
    int flags = fcntl((int)v, F_GETFL);
    if (flags < 0 || fcntl((int)v, F_SETFL, flags | O_NONBLOCK) < 0)
        return lm_err_set(err, -errno, "fd:%ld: cannot make it non-blocking: %s", v,
                          strerror(errno));
    (void)fcntl((int)v, F_SETFD, FD_CLOEXEC);
    *fd = (int)v;
    return 0;
}

bool lm_fd_is_listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

static int fd_check(const char *addr, bool passive, lm_err *err)
{
    (void)passive;
    size_t n = strspn(addr, "0123456789");
    if (!n || n != strlen(addr) || n > 9)
        return lm_err_set(err, -EINVAL, "bad address 'fd:%s': expected fd:N, N a descriptor number",
                          addr);
    return 0;
}

static int fd_listen(const char *addr, int *out, char *bound, size_t boundlen, lm_err *err)
{
    int ret = parse_fd(addr, out, err);
    if (ret == 0)
        snprintf(bound, boundlen, "fd:%s", addr);
    return ret;
}

static int fd_connect(const char *addr, unsigned timeout_ms, int *out, lm_err *err)
{
    (void)timeout_ms; /* already connected: nothing to wait for */
    int fd, ret = parse_fd(addr, &fd, err);
    if (ret < 0)
        return ret;
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    if (lm_fd_is_listening(fd) || getpeername(fd, (struct sockaddr *)&peer, &len) < 0)
        return lm_err_set(err, -ENOTCONN, "fd:%s is not a connected socket", addr);
    *out = fd;
    return 0;
}

const lm_transport_ops lm_transport_fd_ops = {
    .scheme = "fd",
    .single_connection = true,
    .check = fd_check,
    .listen = fd_listen,
    .connect = fd_connect,
};
