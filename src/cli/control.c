#include "cli/control.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/run.h"
#include "control/qmp.h"

struct cli_control {
    cli_opts *o;
    lm_ctx *ctx;
    bool source;
    lm_qmp *qmp;
    /* What QMP asked the main thread for; guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    char uri[1024];
    bool have_uri;         /* source: a migrate to run */
    lm_listener *incoming; /* destination: migrate-incoming's listener */
    bool quit;
    bool first_given;               /* --to/--listen handed out */
    bool migrated;                  /* the guest completed its migration away (source) */
    bool stopped;                   /* the guest's vCPUs were stopped for good here */
    cli_timeline *_Atomic timeline; /* --timeline, while a migration runs */
};

/* The library's events, to QMP's clients and the timeline. */
static void on_lib_event(void *opaque, const lm_event *ev)
{
    cli_control *c = opaque;
    if (c->qmp)
        lm_qmp_event(c->qmp, ev);
    cli_timeline_event(atomic_load(&c->timeline), ev);
}

void cli_control_set_timeline(cli_control *c, cli_timeline *t)
{
    atomic_store(&c->timeline, t);
}

static int on_migrate(void *opaque, const char *uri, char *err, size_t errlen)
{
    cli_control *c = opaque;
    pthread_mutex_lock(&c->mu);
    int ret = 0;
    if (c->migrated) {
        snprintf(err, errlen, "the guest has migrated away already: nothing left to migrate");
        ret = -EALREADY;
    } else if (c->have_uri) {
        snprintf(err, errlen, "There's a migration process in progress");
        ret = -EBUSY;
    } else {
        snprintf(c->uri, sizeof(c->uri), "%s", uri);
        c->have_uri = true;
        lm_qmp_set_busy(c->qmp, true); /* the QMP lock is held by the caller */
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    return ret;
}

static int on_incoming(void *opaque, const char *uri, char *err, size_t errlen)
{
    cli_control *c = opaque;
    pthread_mutex_lock(&c->mu);
    int ret = 0;
    if (c->incoming || c->first_given) {
        snprintf(err, errlen, "The incoming migration has already been started");
        ret = -EALREADY;
    } else if ((ret = lm_listen(uri, &c->incoming, err, errlen)) == 0) {
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    return ret;
}

/* QEMU's RunState names, from where the migration stands. */
static const char *on_run_state(void *opaque, bool *running)
{
    cli_control *c = opaque;
    lm_status s = lm_status_current(c->ctx);
    pthread_mutex_lock(&c->mu);
    bool stopped = c->stopped;
    pthread_mutex_unlock(&c->mu);
    const char *state;
    if (c->source) {
        if (s == LM_STATUS_COMPLETED)
            state = "postmigrate";
        else if (s == LM_STATUS_DEVICE || lm_status_guest_split(s))
            state = "finish-migrate";
        else
            state = stopped ? "paused" : "running";
    } else {
        if (s == LM_STATUS_COMPLETED || s == LM_STATUS_POSTCOPY_ACTIVE)
            state = stopped ? "paused" : "running";
        else
            state = "inmigrate";
    }
    *running = !strcmp(state, "running");
    return state;
}

static void on_quit(void *opaque)
{
    cli_control *c = opaque;
    pthread_mutex_lock(&c->mu);
    c->quit = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    /* A migration that runs stops as a Ctrl-C would stop it. */
    lm_cancel(c->ctx);
}

static const lm_qmp_ops qmp_ops = {
    .migrate = on_migrate,
    .incoming = on_incoming,
    .run_state = on_run_state,
    .quit = on_quit,
};

int cli_control_start(cli_control **out, cli_opts *o, lm_ctx *ctx, bool source)
{
    cli_control *c = calloc(1, sizeof(*c));
    if (!c) {
        fprintf(stderr, "livemig: out of memory\n");
        return 1;
    }
    c->o = o;
    c->ctx = ctx;
    c->source = source;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (o->qmp) {
        char why[512];
        lm_qmp_config cfg = {.uri = o->qmp,
                             .source = source,
                             .ctx = ctx,
                             .params = &o->params,
                             .ops = &qmp_ops,
                             .opaque = c};
        if (lm_qmp_start(&c->qmp, &cfg, why, sizeof(why)) < 0) {
            fprintf(stderr, "livemig: %s\n", why);
            cli_control_free(c);
            return 1;
        }
        fprintf(stderr, "livemig: QMP on %s\n", o->qmp);
    }
    lm_set_event_callback(ctx, on_lib_event, c);
    *out = c;
    return 0;
}

void cli_control_free(cli_control *c)
{
    if (!c)
        return;
    lm_set_event_callback(c->ctx, NULL, NULL);
    lm_qmp_stop(c->qmp);
    if (c->incoming)
        lm_listener_close(c->incoming);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    free(c);
}

bool cli_control_active(const cli_control *c)
{
    return c->qmp != NULL;
}

/* Waits on the condition in 100 ms steps, so that Ctrl-C is heard. */
static void wait_step(cli_control *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&c->cond, &c->mu, &ts);
}

bool cli_control_next_migration(cli_control *c, char *buf, size_t len)
{
    pthread_mutex_lock(&c->mu);
    if (!c->first_given && strcmp(c->o->to, "defer")) {
        c->first_given = true;
        snprintf(buf, len, "%s", c->o->to);
        pthread_mutex_unlock(&c->mu);
        if (c->qmp)
            lm_qmp_set_migration_uri(c->qmp, buf);
        return true;
    }
    c->first_given = true;
    if (!c->qmp) {
        pthread_mutex_unlock(&c->mu);
        return false;
    }
    fprintf(stderr, "livemig migrate: waiting for QMP's migrate on %s\n", c->o->qmp);
    while (!c->have_uri && !c->quit && !cli_interrupted)
        wait_step(c);
    bool go = c->have_uri && !c->quit && !cli_interrupted;
    if (go)
        snprintf(buf, len, "%s", c->uri);
    pthread_mutex_unlock(&c->mu);
    if (go)
        lm_qmp_set_migration_uri(c->qmp, buf);
    return go;
}

lm_listener *cli_control_listener(cli_control *c)
{
    if (strcmp(c->o->listen, "defer")) {
        lm_listener *l;
        char why[512];
        c->first_given = true;
        if (lm_listen(c->o->listen, &l, why, sizeof(why)) < 0) {
            fprintf(stderr, "livemig: %s\n", why);
            return NULL;
        }
        if (c->qmp)
            lm_qmp_set_migration_uri(c->qmp, lm_listener_uri(l));
        return l;
    }
    pthread_mutex_lock(&c->mu);
    fprintf(stderr, "livemig incoming: waiting for QMP's migrate-incoming on %s\n", c->o->qmp);
    while (!c->incoming && !c->quit && !cli_interrupted)
        wait_step(c);
    lm_listener *l = c->quit || cli_interrupted ? NULL : c->incoming;
    if (l)
        c->incoming = NULL; /* the caller's now */
    c->first_given = true;
    pthread_mutex_unlock(&c->mu);
    if (l)
        lm_qmp_set_migration_uri(c->qmp, lm_listener_uri(l));
    return l;
}

void cli_control_begin(cli_control *c, lm_params *run)
{
    if (c->qmp)
        lm_qmp_lock(c->qmp);
    *run = c->o->params;
    if (c->qmp) {
        lm_qmp_set_busy(c->qmp, true);
        lm_qmp_unlock(c->qmp);
    }
}

void cli_control_end(cli_control *c, bool completed)
{
    pthread_mutex_lock(&c->mu);
    c->have_uri = false;
    c->migrated = c->source && completed;
    pthread_mutex_unlock(&c->mu);
    if (c->qmp) {
        lm_qmp_lock(c->qmp);
        lm_qmp_set_busy(c->qmp, false);
        lm_qmp_unlock(c->qmp);
    }
}

void cli_control_guest_stopped(cli_control *c)
{
    pthread_mutex_lock(&c->mu);
    c->stopped = true;
    pthread_mutex_unlock(&c->mu);
}

void cli_control_wait_quit(cli_control *c)
{
    if (!c->qmp)
        return;
    pthread_mutex_lock(&c->mu);
    if (!c->quit && !cli_interrupted)
        fprintf(stderr, "livemig: QMP stays on %s until quit (or Ctrl-C)\n", c->o->qmp);
    while (!c->quit && !cli_interrupted)
        wait_step(c);
    pthread_mutex_unlock(&c->mu);
}
