/*
 * The QMP server: a listening socket, up to QMP_MAX_CLIENTS clients, one
 * thread polling them all. Each client gets QEMU's greeting, must send
 * qmp_capabilities first, then sends commands as JSON objects
 * ({"execute", "arguments", "id"}) and reads one reply per command, in
 * order, with the migration's events in between. The migration's threads
 * hand events over through a pipe, so they never wait on a client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/qmp_internal.h"

/* A client that does not read its replies for this long is dropped. */
#define QMP_WRITE_TIMEOUT_MS 2000

typedef struct qmp_event_rec {
    lm_event ev;
    struct timespec when;
} qmp_event_rec;

void lm__qmp_error(qmp_error *err, const char *cls, const char *fmt, ...)
{
    va_list ap;
    err->cls = cls;
    va_start(ap, fmt);
    vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
    va_end(ap);
}

/* Whole writes, bounded: a client that stops reading is dropped, not
 * waited on. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, QMP_WRITE_TIMEOUT_MS) <= 0)
                return -ETIMEDOUT;
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

static void client_close(qmp_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->len = 0;
    c->negotiated = false;
}

/* Sends v (stolen) and a CRLF, as QEMU ends each message. */
static int client_send(qmp_client *c, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    int ret = send_all(c->fd, text, n);
    if (ret == 0)
        ret = send_all(c->fd, "\r\n", 2);
    free(text);
    if (ret < 0)
        client_close(c);
    return ret;
}

static json_t *greeting(void)
{
    unsigned major = LM_VERSION_MAJOR, minor = LM_VERSION_MINOR, micro = LM_VERSION_PATCH;
    return json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version", "qemu", "micro",
                     (int)micro, "minor", (int)minor, "major", (int)major, "package",
                     "livemig " LM_VERSION_STRING, "capabilities");
}

static void reply_error(qmp_client *c, json_t *id, const qmp_error *err)
{
    json_t *r = json_pack("{s:{s:s,s:s}}", "error", "class", err->cls, "desc", err->desc);
    if (r && id)
        json_object_set(r, "id", id);
    if (r)
        client_send(c, r);
}

/* One command object from client c. */
static void handle_command(lm_qmp *q, qmp_client *c, const char *text, size_t len)
{
    json_error_t jerr;
    qmp_error err = {0};
    json_t *msg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr), *id = NULL;
    if (!msg) {
        lm__qmp_error(&err, "GenericError", "JSON parse error, %s", jerr.text);
        reply_error(c, NULL, &err);
        return;
    }
    id = json_object_get(msg, "id");
    json_t *exec = json_object_get(msg, "execute"), *args = json_object_get(msg, "arguments");
    const char *key;
    json_t *val;
    if (!json_is_object(msg)) {
        lm__qmp_error(&err, "GenericError", "QMP input must be a JSON object");
    } else if (!exec) {
        lm__qmp_error(&err, "GenericError", "QMP input lacks member 'execute'");
    } else if (!json_is_string(exec)) {
        lm__qmp_error(&err, "GenericError", "QMP input member 'execute' must be a string");
    } else if (args && !json_is_object(args)) {
        lm__qmp_error(&err, "GenericError", "QMP input member 'arguments' must be an object");
    } else {
        json_object_foreach(msg, key, val)
        {
            if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
                lm__qmp_error(&err, "GenericError", "QMP input member '%s' is unexpected", key);
                break;
            }
        }
    }
    const char *name = exec && json_is_string(exec) ? json_string_value(exec) : NULL;
    if (!err.cls && !c->negotiated && strcmp(name, "qmp_capabilities"))
        lm__qmp_error(&err, "CommandNotFound",
                      "Expecting capabilities negotiation with 'qmp_capabilities'");
    if (!err.cls && c->negotiated && !strcmp(name, "qmp_capabilities"))
        lm__qmp_error(&err, "CommandNotFound",
                      "Capabilities negotiation is already complete, command ignored");
    if (err.cls) {
        reply_error(c, id, &err);
        json_decref(msg);
        return;
    }
    json_t *ret;
    if (!strcmp(name, "qmp_capabilities")) {
        /* No optional capability is offered ("oob" is not). */
        json_t *enable = args ? json_object_get(args, "enable") : NULL;
        if (enable && (!json_is_array(enable) || json_array_size(enable))) {
            lm__qmp_error(&err, "GenericError", "Capability '%s' not available",
                          json_is_array(enable) && json_is_string(json_array_get(enable, 0))
                              ? json_string_value(json_array_get(enable, 0))
                              : "?");
            ret = NULL;
        } else {
            c->negotiated = true;
            ret = json_object();
        }
    } else {
        json_t *empty = json_object();
        ret = lm__qmp_dispatch(q, name, args ? args : empty, &err);
        json_decref(empty);
    }
    if (ret) {
        json_t *r = json_pack("{s:o}", "return", ret);
        if (r && id)
            json_object_set(r, "id", id);
        if (r)
            client_send(c, r);
    } else {
        reply_error(c, id, &err);
    }
    json_decref(msg);
}

/* The end of the first complete JSON value in buf (its length), or 0 when
 * more input is needed. Strings and escapes are skipped, so braces inside
 * them do not count. Input that is not an object or array up to its end
 * (a stray word) is returned whole up to the next newline, for the parser
 * to refuse. */
static size_t json_value_end(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
        i++;
    if (i == len)
        return 0;
    if (buf[i] != '{' && buf[i] != '[') {
        const char *nl = memchr(buf + i, '\n', len - i);
        return nl ? (size_t)(nl - buf) + 1 : 0;
    }
    unsigned depth = 0;
    bool in_string = false;
    for (; i < len; i++) {
        char ch = buf[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if ((ch == '}' || ch == ']') && --depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

/* Every complete command in c's buffer, in order. */
static void client_process(lm_qmp *q, qmp_client *c)
{
    size_t end;
    while (c->fd >= 0 && (end = json_value_end(c->in, c->len)) > 0) {
        handle_command(q, c, c->in, end);
        if (c->fd < 0)
            return;
        memmove(c->in, c->in + end, c->len - end);
        c->len -= end;
        if (q->quit_requested)
            return;
    }
    if (c->fd >= 0 && c->len == sizeof(c->in)) {
        qmp_error err;
        lm__qmp_error(&err, "GenericError", "JSON parse error, a command over %d bytes",
                      QMP_MAX_INPUT);
        reply_error(c, NULL, &err);
        client_close(c);
    }
}

static void client_read(lm_qmp *q, qmp_client *c)
{
    ssize_t n = recv(c->fd, c->in + c->len, sizeof(c->in) - c->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        client_close(c);
        return;
    }
    c->len += (size_t)n;
    client_process(q, c);
}

void lm__qmp_client_data(lm_qmp *q, qmp_client *c, const char *data, size_t len)
{
    while (len && c->fd >= 0 && !q->quit_requested) {
        size_t n = sizeof(c->in) - c->len < len ? sizeof(c->in) - c->len : len;
        memcpy(c->in + c->len, data, n);
        c->len += n;
        data += n;
        len -= n;
        client_process(q, c);
    }
}

static void client_accept(lm_qmp *q)
{
    int fd = accept4(q->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
        qmp_client *c = &q->clients[i];
        if (c->fd < 0) {
            c->fd = fd;
            c->len = 0;
            c->negotiated = false;
            client_send(c, greeting());
            return;
        }
    }
    /* Full: say why before closing, as a QMP error. */
    static const char busy[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"too many QMP "
                               "clients (at most 8)\"}}\r\n";
    (void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

/* The migration's events, to every negotiated client, with QEMU's
 * timestamp. MIGRATION_PASS is a source's event only, as in QEMU. */
static void forward_events(lm_qmp *q)
{
    qmp_event_rec rec;
    while (read(q->event_pipe[0], &rec, sizeof(rec)) == (ssize_t)sizeof(rec)) {
        json_t *data;
        const char *name;
        if (rec.ev.kind == LM_EVENT_STATUS) {
            name = "MIGRATION";
            data = json_pack("{s:s}", "status", lm_status_name(rec.ev.status));
        } else if (rec.ev.kind == LM_EVENT_PASS && q->cfg.source) {
            name = "MIGRATION_PASS";
            data = json_pack("{s:I}", "pass", (json_int_t)rec.ev.pass);
        } else {
            continue;
        }
        for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
            qmp_client *c = &q->clients[i];
            if (c->fd < 0 || !c->negotiated)
                continue;
            json_t *e = json_pack(
                "{s:{s:I,s:I},s:s,s:O}", "timestamp", "seconds", (json_int_t)rec.when.tv_sec,
                "microseconds", (json_int_t)(rec.when.tv_nsec / 1000), "event", name, "data", data);
            if (e)
                client_send(c, e);
        }
        json_decref(data);
    }
}

void lm_qmp_event(lm_qmp *q, const lm_event *ev)
{
    qmp_event_rec rec = {.ev = *ev};
    clock_gettime(CLOCK_REALTIME, &rec.when);
    /* A record is smaller than PIPE_BUF: written whole or not at all. A
     * full pipe (no reader for thousands of events) drops it. */
    (void)!write(q->event_pipe[1], &rec, sizeof(rec));
}

static void *server_main(void *arg)
{
    lm_qmp *q = arg;
    for (;;) {
        struct pollfd fds[3 + QMP_MAX_CLIENTS];
        unsigned n = 0;
        fds[n++] = (struct pollfd){.fd = q->stop_pipe[0], .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = q->event_pipe[0], .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = q->listen_fd, .events = POLLIN};
        for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
            fds[n++] = (struct pollfd){.fd = q->clients[i].fd, .events = POLLIN};
        if (poll(fds, n, -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if (fds[1].revents)
            forward_events(q);
        if (fds[2].revents)
            client_accept(q);
        for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
            if (fds[3 + i].revents && q->clients[i].fd >= 0)
                client_read(q, &q->clients[i]);
            if (q->quit_requested) {
                q->quit_requested = false;
                q->cfg.ops->quit(q->cfg.opaque);
            }
        }
    }
    forward_events(q); /* the last ones (a final status) */
    return NULL;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* unix:PATH or tcp:HOST:PORT, listening. */
static int listen_on(lm_qmp *q, const char *uri, char *err, size_t errlen)
{
    char bad[256];
    if (lm_uri_check(uri, true, bad, sizeof(bad)) < 0) {
        snprintf(err, errlen, "--qmp: %s", bad);
        return -EINVAL;
    }
    if (!strncmp(uri, "unix:", 5)) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *path = uri + 5;
        if (strlen(path) >= sizeof(sa.sun_path)) {
            snprintf(err, errlen, "--qmp: the socket path is too long (at most %zu bytes)",
                     sizeof(sa.sun_path) - 1);
            return -ENAMETOOLONG;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
            int e = errno;
            snprintf(err, errlen, "--qmp: cannot listen on %s: %s%s", path, strerror(e),
                     e == EADDRINUSE ? " (remove the stale socket file, or choose another path)"
                                     : "");
            if (fd >= 0)
                close(fd);
            return -e;
        }
        q->listen_fd = fd;
        snprintf(q->unix_path, sizeof(q->unix_path), "%s", path);
        /* QMP has no authentication: the file's permissions are its lock. */
        if (chmod(path, 0600) < 0) {
            snprintf(err, errlen, "--qmp: cannot restrict %s to its owner: %s", path,
                     strerror(errno));
            return -errno;
        }
        return 0;
    }
    if (strncmp(uri, "tcp:", 4)) {
        snprintf(err, errlen, "--qmp takes unix:PATH or tcp:HOST:PORT, not '%s'", uri);
        return -EINVAL;
    }
    char host[256];
    const char *hp = uri + 4, *colon = strrchr(hp, ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - hp), hp);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
    if (rc) {
        snprintf(err, errlen, "--qmp: cannot resolve '%s': %s", host, gai_strerror(rc));
        return -EINVAL;
    }
    if (!is_loopback(ai->ai_addr)) {
        snprintf(err, errlen,
                 "--qmp %s: QMP has no authentication, so a tcp: control socket listens only "
                 "on a loopback address (127.0.0.1, ::1); use unix:PATH (owner-only), or an "
                 "SSH tunnel to reach it from elsewhere",
                 uri);
        freeaddrinfo(ai);
        return -EACCES;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 8) < 0) {
        int e = errno;
        snprintf(err, errlen, "--qmp: cannot listen on %s: %s", uri + 4, strerror(e));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -e;
    }
    freeaddrinfo(ai);
    q->listen_fd = fd;
    return 0;
}

lm_qmp *lm__qmp_new(const lm_qmp_config *cfg)
{
    lm_qmp *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->cfg = *cfg;
    q->listen_fd = q->event_pipe[0] = q->event_pipe[1] = q->stop_pipe[0] = q->stop_pipe[1] = -1;
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
        q->clients[i].fd = -1;
    pthread_mutex_init(&q->lock, NULL);
    lm__qmp_settings_init(q);
    return q;
}

int lm_qmp_start(lm_qmp **out, const lm_qmp_config *cfg, char *err, size_t errlen)
{
    lm_qmp *q = lm__qmp_new(cfg);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int ret = listen_on(q, cfg->uri, err, errlen);
    if (ret == 0 &&
        (pipe2(q->event_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(q->stop_pipe, O_CLOEXEC) < 0)) {
        ret = -errno;
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
    }
    if (ret == 0 && (ret = -pthread_create(&q->thread, NULL, server_main, q)) < 0)
        snprintf(err, errlen, "cannot start the QMP thread: %s", strerror(-ret));
    if (ret < 0) {
        q->thread = 0;
        lm_qmp_stop(q);
        return ret;
    }
    *out = q;
    return 0;
}

void lm_qmp_stop(lm_qmp *q)
{
    if (!q)
        return;
    if (q->thread) {
        (void)!write(q->stop_pipe[1], "x", 1);
        pthread_join(q->thread, NULL);
    }
    for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
        client_close(&q->clients[i]);
    int fds[] = {q->listen_fd, q->event_pipe[0], q->event_pipe[1], q->stop_pipe[0],
                 q->stop_pipe[1]};
    for (unsigned i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (q->unix_path[0])
        unlink(q->unix_path);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

void lm_qmp_lock(lm_qmp *q)
{
    pthread_mutex_lock(&q->lock);
}

void lm_qmp_unlock(lm_qmp *q)
{
    pthread_mutex_unlock(&q->lock);
}

void lm_qmp_set_migration_uri(lm_qmp *q, const char *uri)
{
    pthread_mutex_lock(&q->lock);
    snprintf(q->migration_uri, sizeof(q->migration_uri), "%s", uri);
    pthread_mutex_unlock(&q->lock);
}

void lm_qmp_set_busy(lm_qmp *q, bool busy)
{
    q->busy = busy;
}
