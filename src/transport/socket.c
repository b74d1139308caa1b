/* Stream sockets: TCP (IPv4/IPv6, "tcp:HOST:PORT", "[::1]" for literals)
 * and Unix domain sockets ("unix:PATH"). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "transport/transport.h"
#include "util/sys.h"

static int split_host_port(const char *addr, char *host, size_t hostlen, const char **port,
                           lm_err *err)
{
    const char *colon;
    if (!strncmp(addr, "//", 2))
        return lm_err_set(err, -EINVAL,
                          "bad address 'tcp:%s': livemig addresses have no '//': write tcp:%s",
                          addr, addr + 2);
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            goto bad;
        if ((size_t)(close - addr - 1) >= hostlen)
            goto bad;
        memcpy(host, addr + 1, (size_t)(close - addr - 1));
        host[close - addr - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hostlen)
            goto bad;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    *port = colon + 1;
    if (!**port)
        goto bad;
    return 0;
bad:
    return lm_err_set(err, -EINVAL, "bad TCP address '%s': expected HOST:PORT", addr);
}

/* A decimal port: 1..65535, or 0 when listening (the kernel picks one).
 * getaddrinfo would take "99999" modulo 65536 and service names too. */
static int check_port(const char *addr, const char *port, bool passive, lm_err *err)
{
    unsigned long v = 0;
    size_t n = strspn(port, "0123456789");
    if (n && n == strlen(port) && n <= 5)
        v = strtoul(port, NULL, 10);
    if (!n || n != strlen(port) || n > 5 || v > 65535 || (v == 0 && !passive))
        return lm_err_set(err, -EINVAL, "bad port '%s' in '%s': expected a number from %s to 65535",
                          port, addr, passive ? "0 (any free port)" : "1");
    return 0;
}

static int resolve(const char *addr, bool passive, struct addrinfo **res, lm_err *err)
{
    char host[256];
    const char *port = NULL;
    int ret = split_host_port(addr, host, sizeof(host), &port, err);
    if (ret == 0)
        ret = check_port(addr, port, passive, err);
    if (ret < 0)
        return ret;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
    if (gai)
        return lm_err_set(err, -EHOSTUNREACH, "cannot resolve '%s': %s", addr, gai_strerror(gai));
    return 0;
}

static int tcp_check(const char *addr, bool passive, lm_err *err)
{
    char host[256];
    const char *port = NULL;
    int ret = split_host_port(addr, host, sizeof(host), &port, err);
    return ret < 0 ? ret : check_port(addr, port, passive, err);
}

static void tune_stream(int fd)
{
    int one = 1;
    /* Control messages must not wait for Nagle; bulk data is sent in large
     * writes anyway. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tcp_listen(const char *addr, int *out, char *bound, size_t boundlen, lm_err *err)
{
    struct addrinfo *res;
    int ret = resolve(addr, true, &res, err);
    if (ret < 0)
        return ret;
    int fd = -1;
    ret = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0) {
            ret = 0;
            break;
        }
        ret = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (ret < 0)
        return lm_err_set(err, ret, "cannot listen on tcp:%s: %s", addr, strerror(-ret));

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(bound, boundlen, "tcp:%s:%u", host, port);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(bound, boundlen, "tcp:[%s]:%u", host, port);
    }
    *out = fd;
    return 0;
}

/* Non-blocking connect bounded by timeout_ms. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, unsigned timeout_ms)
{
    if (lm_sys_connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return -errno;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int n;
    do {
        n = poll(&pfd, 1, (int)timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        return -ETIMEDOUT;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    return soerr ? -soerr : 0;
}

static int tcp_connect(const char *addr, unsigned timeout_ms, int *out, lm_err *err)
{
    struct addrinfo *res;
    int ret = resolve(addr, false, &res, err);
    if (ret < 0)
        return ret;
    ret = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            ret = -errno;
            continue;
        }
        ret = connect_bounded(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
        if (ret == 0) {
            tune_stream(fd);
            *out = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(res);
    if (ret < 0)
        return lm_err_set(err, ret,
                          "cannot connect to tcp:%s: %s (is `livemig incoming` "
                          "listening there?)",
                          addr, strerror(-ret));
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sun, lm_err *err)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof(sun->sun_path))
        return lm_err_set(err, -ENAMETOOLONG, "bad unix socket path '%s'", path);
    strcpy(sun->sun_path, path);
    return 0;
}

static int unix_check(const char *path, bool passive, lm_err *err)
{
    (void)passive;
    struct sockaddr_un sun;
    return unix_addr(path, &sun, err);
}

static int unix_listen(const char *path, int *out, char *bound, size_t boundlen, lm_err *err)
{
    struct sockaddr_un sun;
    int ret = unix_addr(path, &sun, err);
    if (ret < 0)
        return ret;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return lm_err_set(err, -errno, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 16) < 0) {
        ret = -errno;
        close(fd);
        return lm_err_set(err, ret, "cannot listen on unix:%s: %s", path, strerror(-ret));
    }
    snprintf(bound, boundlen, "unix:%s", path);
    *out = fd;
    return 0;
}

static int unix_connect(const char *path, unsigned timeout_ms, int *out, lm_err *err)
{
    struct sockaddr_un sun;
    int ret = unix_addr(path, &sun, err);
    if (ret < 0)
        return ret;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return lm_err_set(err, -errno, "socket: %s", strerror(errno));
    ret = connect_bounded(fd, (struct sockaddr *)&sun, sizeof(sun), timeout_ms);
    if (ret < 0) {
        close(fd);
        return lm_err_set(err, ret, "cannot connect to unix:%s: %s", path, strerror(-ret));
    }
    *out = fd;
    return 0;
}

const lm_transport_ops lm_transport_tcp_ops = {
    .scheme = "tcp",
    .check = tcp_check,
    .listen = tcp_listen,
    .connect = tcp_connect,
};

const lm_transport_ops lm_transport_unix_ops = {
    .scheme = "unix",
    .check = unix_check,
    .listen = unix_listen,
    .connect = unix_connect,
};
