/*
 * The QMP control socket's input (src/control/): whatever a client sends
 * (commands split anywhere, bad JSON, wrong types, huge numbers, unknown
 * members, a command over the 64 KiB bound), the server answers or closes
 * the client; it never crashes, never reads past its buffer, and every
 * reply is one JSON object per line. The source's side, with no migration
 * running, so every command runs through to its refusal or its effect on
 * an idle context (parameters, capabilities, cancel, pause).
 *
 * Input: the bytes one client sends, in two writes split at the first
 * byte's value (so framing across reads is covered).
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/qmp_internal.h"
#include "fuzz.h"

static int fake_migrate(void *opaque, const char *uri, char *err, size_t errlen)
{
    (void)opaque, (void)uri;
    snprintf(err, errlen, "fuzzing: no migration");
    return -EINVAL;
}

static int fake_incoming(void *opaque, const char *uri, char *err, size_t errlen)
{
    return fake_migrate(opaque, uri, err, errlen);
}

static const char *fake_state(void *opaque, bool *running)
{
    (void)opaque;
    *running = true;
    return "running";
}

static void fake_quit(void *opaque)
{
    (void)opaque;
}

static const lm_qmp_ops ops = {fake_migrate, fake_incoming, fake_state, fake_quit};

/* Reads every reply; each line must parse as one JSON object. */
static void *drain(void *arg)
{
    int fd = *(int *)arg;
    static char buf[1 << 16];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0)
            return NULL;
        len += (size_t)n;
        char *nl;
        while ((nl = memchr(buf, '\n', len))) {
            size_t line = (size_t)(nl - buf) + 1;
            json_t *v = json_loadb(buf, line, 0, NULL);
            FUZZ_CHECK(v && json_is_object(v));
            json_decref(v);
            memmove(buf, buf + line, len - line);
            len -= line;
        }
        FUZZ_CHECK(len < sizeof(buf)); /* no reply is 64 KiB long */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 3 * QMP_MAX_INPUT)
        return 0;
    /* The first byte chooses where the input splits and whether the
     * client has negotiated; the rest is what the client sends. */
    size_t split = data[0] < size - 1 ? data[0] : size - 1;
    bool negotiated = data[0] & 1; /* half the inputs skip the negotiation */
    data++, size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    pthread_t t;
    if (pthread_create(&t, NULL, drain, &sv[1]) != 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    lm_ctx *ctx = lm_ctx_new();
    lm_params params;
    lm_params_init(&params);
    lm_qmp_config cfg = {.uri = "unix:/nonexistent",
                         .source = true,
                         .ctx = ctx,
                         .params = &params,
                         .ops = &ops,
                         .opaque = NULL};
    lm_qmp *q = lm__qmp_new(&cfg);
    FUZZ_CHECK(q);
    qmp_client *c = calloc(1, sizeof(*c));
    FUZZ_CHECK(c);
    c->fd = sv[0];
    c->negotiated = negotiated;
    lm__qmp_client_data(q, c, (const char *)data, split);
    lm__qmp_client_data(q, c, (const char *)data + split, size - split);
    FUZZ_CHECK(c->fd < 0 || c->len < QMP_MAX_INPUT);
    /* The parameters stay within what the library accepts. */
    char why[256];
    FUZZ_CHECK(lm_params_update(ctx, &params, why, sizeof(why)) == 0);
    if (c->fd >= 0)
        close(c->fd);
    pthread_join(t, NULL);
    close(sv[1]);
    free(c);
    lm_qmp_stop(q);
    lm_ctx_free(ctx);
    return 0;
}
