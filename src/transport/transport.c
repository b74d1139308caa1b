#include "transport/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "livemig.h"
#include "util/sys.h"

static const lm_transport_ops *const transports[] = {
    &lm_transport_tcp_ops,
    &lm_transport_unix_ops,
    &lm_transport_fd_ops,
};

const lm_transport_ops *lm_transport_for(const char *uri, const char **addr, lm_err *err)
{
    const char *colon = uri ? strchr(uri, ':') : NULL;
    if (colon) {
        size_t n = (size_t)(colon - uri);
        for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++) {
            if (strlen(transports[i]->scheme) == n && !strncmp(uri, transports[i]->scheme, n)) {
                *addr = colon + 1;
                return transports[i];
            }
        }
    }
    /* "127.0.0.1:4444" or "host:4444": a TCP address without its scheme. */
    if (colon && strspn(colon + 1, "0123456789") == strlen(colon + 1) && colon[1])
        lm_err_set(err, -EINVAL, "address '%s' has no scheme: write tcp:%s (or unix:PATH, fd:N)",
                   uri, uri);
    else
        lm_err_set(err, -EINVAL, "unsupported address '%s': use tcp:HOST:PORT, unix:PATH or fd:N",
                   uri ? uri : "");
    return NULL;
}

int lm_uri_check(const char *uri, bool listen, char *errbuf, size_t errlen)
{
    lm_err err;
    lm_err_init(&err);
    const char *addr;
    const lm_transport_ops *ops = lm_transport_for(uri, &addr, &err);
    int ret = ops ? ops->check(addr, listen, &err) : -EINVAL;
    if (ret < 0)
        lm_err_copy(&err, errbuf, errlen);
    return ret;
}

int lm_listen(const char *uri, lm_listener **out, char *errbuf, size_t errlen)
{
    lm_err err;
    lm_err_init(&err);
    const char *addr;
    const lm_transport_ops *ops = lm_transport_for(uri, &addr, &err);
    int ret = -EINVAL;
    if (ops) {
        lm_listener *l = calloc(1, sizeof(*l));
        if (!l) {
            ret = lm_err_set(&err, -ENOMEM, "out of memory");
        } else {
            l->ops = ops;
            l->conn_fd = -1;
            ret = ops->listen(addr, &l->fd, l->uri, sizeof(l->uri), &err);
            if (ret == 0 && ops->single_connection && !lm_fd_is_listening(l->fd)) {
                l->conn_fd = l->fd; /* already connected: the source's one connection */
                l->fd = -1;
                l->single = true;
            }
            if (ret == 0)
                *out = l;
            else
                free(l);
        }
    }
    if (ret < 0)
        lm_err_copy(&err, errbuf, errlen);
    return ret;
}

const char *lm_listener_uri(const lm_listener *l)
{
    return l->uri;
}

void lm_listener_close(lm_listener *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    if (l->conn_fd >= 0)
        close(l->conn_fd);
    if (!strncmp(l->uri, "unix:", 5))
        unlink(l->uri + 5);
    free(l);
}

int lm_listener_accept(struct lm_listener *l, unsigned timeout_ms, const _Atomic int *cancel,
                       int *fd, lm_err *err)
{
    unsigned waited = 0;
    if (l->single) {
        if (l->conn_fd < 0)
            return lm_err_set(err, -ENOTCONN,
                              "%s was one connection, already taken: channels, a preempt "
                              "connection or a reconnection need a listening socket "
                              "(tcp:, unix:, or a listening fd:N)",
                              l->uri);
        *fd = l->conn_fd;
        l->conn_fd = -1;
        return 0;
    }
    for (;;) {
        if (cancel && atomic_load(cancel))
            return lm_err_set(err, -ECANCELED, "cancelled while waiting for the source");
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        int n = poll(&pfd, 1, 100);
        if (n < 0 && errno != EINTR)
            return lm_err_set(err, -errno, "poll on the listening socket: %s", strerror(errno));
        if (n > 0) {
            int c = lm_sys_accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0) {
                *fd = c;
                return 0;
            }
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                return lm_err_set(err, -errno, "accept: %s", strerror(errno));
        }
        waited += 100;
        if (timeout_ms && waited >= timeout_ms)
            return lm_err_set(err, -ETIMEDOUT, "no source connected to %s within %u ms", l->uri,
                              timeout_ms);
    }
}
