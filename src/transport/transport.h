/*
 * Transports: how a URI becomes a connected socket. A table per scheme
 * ("tcp:HOST:PORT", "unix:PATH"); the engine sees only file descriptors
 * wrapped in an lm_conn (conn.h), so adding a scheme touches nothing else.
 */
#ifndef LM_TRANSPORT_TRANSPORT_H
#define LM_TRANSPORT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"

#define LM_URI_MAX 256

typedef struct lm_transport_ops {
    const char *scheme; /* the URI prefix before ':' */
    /* The address names one connection, which connect() hands out (fd:N):
     * no other connection can be opened to the same peer. */
    bool single_connection;
    /* Checks addr's syntax (passive: to listen on) without touching the
     * network or any descriptor. */
    int (*check)(const char *addr, bool passive, lm_err *err);
    /* Bind and listen on addr (the URI without the scheme). Writes the URI a
     * source should use (the port resolved when 0 was asked) into bound. */
    int (*listen)(const char *addr, int *fd, char *bound, size_t boundlen, lm_err *err);
    /* Connect within timeout_ms. The returned descriptor is non-blocking. */
    int (*connect)(const char *addr, unsigned timeout_ms, int *fd, lm_err *err);
} lm_transport_ops;

extern const lm_transport_ops lm_transport_tcp_ops;
extern const lm_transport_ops lm_transport_unix_ops;
extern const lm_transport_ops lm_transport_fd_ops;

/* Whether fd is a listening socket (fd:N may be either kind). */
bool lm_fd_is_listening(int fd);

/* Finds the table for uri's scheme; *addr points past "scheme:". */
const lm_transport_ops *lm_transport_for(const char *uri, const char **addr, lm_err *err);

struct lm_listener {
    const lm_transport_ops *ops;
    int fd;      /* listening socket, or -1 */
    int conn_fd; /* fd:N of a connected socket: the one connection, handed
                    out by the first accept (then -1) */
    bool single; /* the listener was one connection: nothing else arrives */
    char uri[LM_URI_MAX];
};

/* Waits up to timeout_ms (0 = forever, still checking *cancel) for one
 * connection; the result is non-blocking. */
int lm_listener_accept(struct lm_listener *l, unsigned timeout_ms, const _Atomic int *cancel,
                       int *fd, lm_err *err);

#endif
