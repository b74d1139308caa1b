/*
 * A QMP control socket (docs/QMP.md): QEMU's Machine Protocol, so that
 * QEMU's own clients and libvirt-style tooling can drive a livemig
 * migration. The server runs on its own thread; it reads the migration's
 * state through the library's thread-safe calls and acts on it with
 * lm_cancel, lm_start_postcopy and lm_params_update. What only the program
 * that embeds it can do (start a migration, report the guest's run state,
 * quit) goes through lm_qmp_ops.
 */
#ifndef LM_CONTROL_QMP_H
#define LM_CONTROL_QMP_H

#include <stdbool.h>
#include <stddef.h>

#include "livemig.h"

typedef struct lm_qmp lm_qmp;

typedef struct lm_qmp_ops {
    /* Source: start a migration to uri (QMP migrate). Called on the QMP
     * thread with the QMP lock held; returns 0 once the request is taken,
     * or -errno with a sentence in err. */
    int (*migrate)(void *opaque, const char *uri, char *err, size_t errlen);
    /* Destination: listen on uri (QMP migrate-incoming), likewise. */
    int (*incoming)(void *opaque, const char *uri, char *err, size_t errlen);
    /* The guest's run state, with QEMU's RunState names ("running",
     * "inmigrate", "finish-migrate", "postmigrate", "paused"); *running
     * says whether its vCPUs run. */
    const char *(*run_state)(void *opaque, bool *running);
    /* QMP quit: the program ends (after the reply is out). */
    void (*quit)(void *opaque);
} lm_qmp_ops;

typedef struct lm_qmp_config {
    const char *uri; /* unix:PATH or tcp:HOST:PORT */
    bool source;
    lm_ctx *ctx;
    /* The parameters (and capabilities) of the next migration, and of the
     * running one; the server reads and changes them with the QMP lock
     * held, so the program copies them with it held too (lm_qmp_lock). */
    lm_params *params;
    const lm_qmp_ops *ops;
    void *opaque;
} lm_qmp_config;

/* Listens on cfg->uri and starts the server thread. 0, or -errno with a
 * sentence in err. */
int lm_qmp_start(lm_qmp **out, const lm_qmp_config *cfg, char *err, size_t errlen);
/* Stops the thread, closes every client and removes a unix: socket file. */
void lm_qmp_stop(lm_qmp *q);

/* A migration event, to send to the clients as MIGRATION or
 * MIGRATION_PASS: call it from the lm_set_event_callback callback. It
 * never blocks (a pipe hands the event to the server thread). */
void lm_qmp_event(lm_qmp *q, const lm_event *ev);

/* The address of the migration that runs (source: where it goes;
 * destination: where it listens), for migrate's resume and
 * migrate-recover. Takes the lock. */
void lm_qmp_set_migration_uri(lm_qmp *q, const char *uri);

void lm_qmp_lock(lm_qmp *q);
void lm_qmp_unlock(lm_qmp *q);
/* Whether a migration runs (set by the program, with the lock held):
 * parameters that only apply at the start are refused while it does. */
void lm_qmp_set_busy(lm_qmp *q, bool busy);

#endif
