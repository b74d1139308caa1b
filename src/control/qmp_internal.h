/* What the QMP server's two files share: the server (qmp_server.c: sockets,
 * framing, negotiation, events) and its commands (qmp_commands.c). */
#ifndef LM_CONTROL_QMP_INTERNAL_H
#define LM_CONTROL_QMP_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <sys/un.h>

#include "control/qmp.h"

#define QMP_MAX_CLIENTS 8
/* One command may take this much; a client that sends more is told so and
 * closed (nothing a client sends makes the server allocate more). */
#define QMP_MAX_INPUT (64 * 1024)

typedef struct qmp_client {
    int fd; /* -1: free */
    bool negotiated;
    size_t len;
    char in[QMP_MAX_INPUT];
} qmp_client;

/* A command's failure: QEMU's error class and a sentence. */
typedef struct qmp_error {
    const char *cls; /* "GenericError", "CommandNotFound" */
    char desc[512];
} qmp_error;

struct lm_qmp {
    lm_qmp_config cfg;
    pthread_t thread;
    pthread_mutex_t lock; /* cfg.params, busy, the settings below */
    bool busy;
    /* QEMU keeps a parameter for what a capability switches on: the
     * channels of multifd, the rate of dirty-limit (MB/s per vCPU). */
    bool cap_multifd, cap_dirty_limit;
    unsigned multifd_channels;
    uint64_t vcpu_dirty_limit;
    char migration_uri[1024]; /* lm_qmp_set_migration_uri */
    int listen_fd;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int event_pipe[2]; /* the event callback writes, the thread reads */
    int stop_pipe[2];
    bool quit_requested; /* QMP quit: ops->quit once the reply is out */
    qmp_client clients[QMP_MAX_CLIENTS];
};

/* qmp_commands.c: runs one command; returns its "return" value (new
 * reference), or NULL with *err filled. */
json_t *lm__qmp_dispatch(lm_qmp *q, const char *name, json_t *args, qmp_error *err);
/* Whether a command by that name exists (for the negotiation errors). */
bool lm__qmp_command_exists(const char *name);
/* The settings QEMU keeps beside the parameters, read from cfg.params. */
void lm__qmp_settings_init(lm_qmp *q);

/* qmp_server.c */
/* For tests and fuzzing: a server with neither socket nor thread, and the
 * input path of one of its clients (c->fd receives the replies). */
lm_qmp *lm__qmp_new(const lm_qmp_config *cfg);
void lm__qmp_client_data(lm_qmp *q, qmp_client *c, const char *data, size_t len);
void lm__qmp_error(qmp_error *err, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
