/*
 * The QMP commands, with QEMU's names, argument names, types and error
 * classes (qapi/migration.json, qapi/run-state.json, qapi/control.json).
 * Each runs with the server's lock held; a command that does not apply to
 * this side, or to the migration's state, says so instead of doing nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/qmp_internal.h"

typedef json_t *(*qmp_handler)(lm_qmp *q, json_t *args, qmp_error *err);

/* One argument a command takes. */
typedef struct qmp_arg {
    const char *name;
    json_type type; /* JSON_INTEGER, JSON_STRING, JSON_TRUE (a bool), JSON_ARRAY */
    bool required;
} qmp_arg;

#define QMP_MAX_ARGS 16

typedef struct qmp_command {
    const char *name;
    qmp_handler fn;
    qmp_arg args[QMP_MAX_ARGS];
} qmp_command;

static const char *type_name(json_type t)
{
    switch (t) {
    case JSON_INTEGER:
        return "integer";
    case JSON_STRING:
        return "string";
    case JSON_TRUE:
        return "boolean";
    case JSON_ARRAY:
        return "array";
    default:
        return "object";
    }
}

static bool type_ok(const json_t *v, json_type t)
{
    if (t == JSON_TRUE)
        return json_is_boolean(v);
    return json_typeof(v) == t;
}

/* Every argument known, of its type, the required ones present. */
static bool check_args(const qmp_command *cmd, json_t *args, qmp_error *err)
{
    const char *key;
    json_t *val;
    json_object_foreach(args, key, val)
    {
        const qmp_arg *a = NULL;
        for (unsigned i = 0; i < QMP_MAX_ARGS && cmd->args[i].name; i++)
            if (!strcmp(cmd->args[i].name, key))
                a = &cmd->args[i];
        if (!a) {
            lm__qmp_error(err, "GenericError", "Parameter '%s' is unexpected", key);
            return false;
        }
        if (!type_ok(val, a->type)) {
            lm__qmp_error(err, "GenericError", "Invalid parameter type for '%s', expected: %s", key,
                          type_name(a->type));
            return false;
        }
        if (a->type == JSON_INTEGER && json_integer_value(val) < 0) {
            lm__qmp_error(err, "GenericError",
                          "Parameter '%s' expects a non-negative integer, not %lld", key,
                          (long long)json_integer_value(val));
            return false;
        }
    }
    for (unsigned i = 0; i < QMP_MAX_ARGS && cmd->args[i].name; i++)
        if (cmd->args[i].required && !json_object_get(args, cmd->args[i].name)) {
            lm__qmp_error(err, "GenericError", "Parameter '%s' is missing", cmd->args[i].name);
            return false;
        }
    return true;
}

static bool migration_active(lm_status s)
{
    return s != LM_STATUS_NONE && s != LM_STATUS_COMPLETED && s != LM_STATUS_FAILED &&
           s != LM_STATUS_CANCELLED;
}

static bool source_only(lm_qmp *q, const char *cmd, qmp_error *err)
{
    if (q->cfg.source)
        return true;
    lm__qmp_error(err, "GenericError", "%s is a source's command; this is the destination", cmd);
    return false;
}

static bool dest_only(lm_qmp *q, const char *cmd, qmp_error *err)
{
    if (!q->cfg.source)
        return true;
    lm__qmp_error(err, "GenericError", "%s is a destination's command; this is the source", cmd);
    return false;
}

/* QEMU's vcpu-dirty-limit is in MB/s a vCPU; livemig's in pages/s. */
static uint64_t mbps_to_pages(uint64_t mbps)
{
    return mbps * (1u << 20) / 4096;
}

/* The library's parameters from the QMP settings (lock held). */
static void settings_apply(lm_qmp *q)
{
    lm_params *p = q->cfg.params;
    p->multifd_channels = q->cap_multifd ? q->multifd_channels : 0;
    p->dirty_limit = q->cap_dirty_limit ? mbps_to_pages(q->vcpu_dirty_limit) : 0;
}

void lm__qmp_settings_init(lm_qmp *q)
{
    const lm_params *p = q->cfg.params;
    q->cap_multifd = p->multifd_channels > 0;
    q->multifd_channels = p->multifd_channels ? p->multifd_channels : 2; /* QEMU's default */
    q->cap_dirty_limit = p->dirty_limit > 0;
    q->vcpu_dirty_limit = p->dirty_limit ? (p->dirty_limit * 4096 + (1u << 20) - 1) >> 20 : 1;
}

static json_t *cmd_query_migrate(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args;
    lm_stats *st = malloc(sizeof(*st));
    if (!st) {
        lm__qmp_error(err, "GenericError", "out of memory");
        return NULL;
    }
    lm_stats_get(q->cfg.ctx, st);
    json_t *info = NULL;
    if (st->status == LM_STATUS_NONE) {
        info = json_object(); /* QEMU: no migration yet, no fields */
    } else {
        char *text = lm_stats_json(st, q->cfg.source ? "source" : "destination");
        info = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        if (info)
            json_object_del(info, "role");
    }
    free(st);
    if (!info)
        lm__qmp_error(err, "GenericError", "out of memory");
    return info;
}

static json_t *cmd_query_parameters(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args, (void)err;
    const lm_params *p = q->cfg.params;
    return json_pack(
        "{s:I,s:I,s:i,s:i,s:i,s:I,s:i,s:s,s:s,s:I,s:s,s:s}", "max-bandwidth",
        (json_int_t)p->max_bandwidth, "downtime-limit", (json_int_t)p->downtime_limit_ms,
        "cpu-throttle-initial", (int)p->throttle_initial, "cpu-throttle-increment",
        (int)p->throttle_increment, "max-cpu-throttle", (int)p->throttle_max, "vcpu-dirty-limit",
        (json_int_t)q->vcpu_dirty_limit, "multifd-channels", (int)q->multifd_channels,
        "multifd-compression", lm_compression_name(p->compress), "zero-page-detection",
        p->zero_detection == LM_ZERO_DETECT_NONE     ? "none"
        : p->zero_detection == LM_ZERO_DETECT_LEGACY ? "legacy"
                                                     : "multifd",
        "x-max-rounds", (json_int_t)p->max_rounds, "tls-creds", p->tls_creds ? p->tls_creds : "",
        "tls-hostname", p->tls_hostname ? p->tls_hostname : "");
}

/* Parameters only a migration's start takes. */
static const char *const start_only[] = {"multifd-channels", "multifd-compression",
                                         "zero-page-detection"};

static json_t *cmd_set_parameters(lm_qmp *q, json_t *args, qmp_error *err)
{
    if (q->busy)
        for (unsigned i = 0; i < sizeof(start_only) / sizeof(start_only[0]); i++)
            if (json_object_get(args, start_only[i])) {
                lm__qmp_error(err, "GenericError",
                              "Parameter '%s' applies when a migration starts: a migration "
                              "is in progress",
                              start_only[i]);
                return NULL;
            }
    lm_params next = *q->cfg.params;
    unsigned channels = q->multifd_channels;
    uint64_t dirty_mbps = q->vcpu_dirty_limit;
    json_t *v;
    /* Each number within its field before it is stored (check_args saw it
     * is a non-negative integer). */
    static const struct {
        const char *name;
        uint64_t max;
    } bounds[] = {{"max-bandwidth", UINT64_MAX >> 1}, {"downtime-limit", LM_MAX_DOWNTIME_LIMIT_MS},
                  {"cpu-throttle-initial", 99},       {"cpu-throttle-increment", 99},
                  {"max-cpu-throttle", 99},           {"x-max-rounds", 1u << 20},
                  {"vcpu-dirty-limit", 1u << 30}};
    for (unsigned i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
        if ((v = json_object_get(args, bounds[i].name)) &&
            (uint64_t)json_integer_value(v) > bounds[i].max) {
            lm__qmp_error(err, "GenericError", "Parameter '%s' expects a value of at most %llu",
                          bounds[i].name, (unsigned long long)bounds[i].max);
            return NULL;
        }
    if ((v = json_object_get(args, "max-bandwidth")))
        next.max_bandwidth = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(args, "downtime-limit")))
        next.downtime_limit_ms = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(args, "cpu-throttle-initial")))
        next.throttle_initial = (unsigned)json_integer_value(v);
    if ((v = json_object_get(args, "cpu-throttle-increment")))
        next.throttle_increment = (unsigned)json_integer_value(v);
    if ((v = json_object_get(args, "max-cpu-throttle")))
        next.throttle_max = (unsigned)json_integer_value(v);
    if ((v = json_object_get(args, "x-max-rounds")))
        next.max_rounds = (unsigned)json_integer_value(v);
    if ((v = json_object_get(args, "vcpu-dirty-limit"))) {
        dirty_mbps = (uint64_t)json_integer_value(v);
        if (dirty_mbps < 1) {
            lm__qmp_error(err, "GenericError",
                          "Parameter 'vcpu-dirty-limit' expects a value of at least 1 (MB/s)");
            return NULL;
        }
    }
    if ((v = json_object_get(args, "multifd-channels"))) {
        json_int_t n = json_integer_value(v);
        if (n < 1 || n > LM_MAX_MULTIFD_CHANNELS) {
            lm__qmp_error(err, "GenericError",
                          "Parameter 'multifd-channels' expects a value between 1 and %d",
                          LM_MAX_MULTIFD_CHANNELS);
            return NULL;
        }
        channels = (unsigned)n;
    }
    if ((v = json_object_get(args, "multifd-compression")) &&
        lm_compression_parse(json_string_value(v), &next.compress) < 0) {
        lm__qmp_error(err, "GenericError",
                      "Parameter 'multifd-compression' does not accept value '%s' (none, "
                      "zlib, zstd, lz4)",
                      json_string_value(v));
        return NULL;
    }
    if ((v = json_object_get(args, "zero-page-detection"))) {
        const char *m = json_string_value(v);
        if (!strcmp(m, "none"))
            next.zero_detection = LM_ZERO_DETECT_NONE;
        else if (!strcmp(m, "legacy"))
            next.zero_detection = LM_ZERO_DETECT_LEGACY;
        else if (!strcmp(m, "multifd"))
            next.zero_detection = LM_ZERO_DETECT_MULTIFD;
        else {
            lm__qmp_error(err, "GenericError",
                          "Parameter 'zero-page-detection' does not accept value '%s'", m);
            return NULL;
        }
    }
    next.dirty_limit = q->cap_dirty_limit ? mbps_to_pages(dirty_mbps) : 0;
    /* All checked (by the library, which owns the ranges) before any is
     * taken: a refused command changes nothing. */
    char why[256];
    if (lm_params_update(q->cfg.ctx, &next, why, sizeof(why)) < 0) {
        lm__qmp_error(err, "GenericError", "%s", why);
        return NULL;
    }
    *q->cfg.params = next;
    q->multifd_channels = channels;
    q->vcpu_dirty_limit = dirty_mbps;
    settings_apply(q);
    return json_object();
}

/* The capabilities livemig has; the rest of QEMU's are refused by name. */
enum {
    CAP_POSTCOPY,
    CAP_PREEMPT,
    CAP_AUTO_CONVERGE,
    CAP_DIRTY_LIMIT,
    CAP_MULTIFD,
    CAP_RETURN_PATH,
    CAP_EVENTS,
    CAP__COUNT
};
static const char *const cap_names[CAP__COUNT] = {
    "postcopy-ram", "postcopy-preempt", "auto-converge", "dirty-limit",
    "multifd",      "return-path",      "events",
};

static bool cap_get(const lm_qmp *q, unsigned cap)
{
    const lm_params *p = q->cfg.params;
    switch (cap) {
    case CAP_POSTCOPY:
        return p->postcopy;
    case CAP_PREEMPT:
        return !p->postcopy_no_preempt;
    case CAP_AUTO_CONVERGE:
        return p->auto_converge;
    case CAP_DIRTY_LIMIT:
        return q->cap_dirty_limit;
    case CAP_MULTIFD:
        return q->cap_multifd;
    default: /* return-path, events: always on */
        return true;
    }
}

static json_t *cmd_query_capabilities(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args, (void)err;
    json_t *list = json_array();
    for (unsigned i = 0; i < CAP__COUNT; i++)
        json_array_append_new(
            list, json_pack("{s:s,s:b}", "capability", cap_names[i], "state", cap_get(q, i)));
    return list;
}

static json_t *cmd_set_capabilities(lm_qmp *q, json_t *args, qmp_error *err)
{
    if (q->busy) {
        lm__qmp_error(err, "GenericError", "There's a migration process in progress");
        return NULL;
    }
    json_t *list = json_object_get(args, "capabilities"), *item;
    size_t i;
    int want[CAP__COUNT];
    for (unsigned c = 0; c < CAP__COUNT; c++)
        want[c] = -1;
    json_array_foreach(list, i, item)
    {
        json_t *name = json_object_get(item, "capability"), *state = json_object_get(item, "state");
        if (!json_is_object(item) || !json_is_string(name) || !json_is_boolean(state)) {
            lm__qmp_error(err, "GenericError",
                          "Parameter 'capabilities' expects {\"capability\": string, \"state\": "
                          "boolean} objects");
            return NULL;
        }
        unsigned c = 0;
        while (c < CAP__COUNT && strcmp(cap_names[c], json_string_value(name)))
            c++;
        if (c == CAP__COUNT) {
            lm__qmp_error(err, "GenericError",
                          "Capability '%s' is not supported by livemig (it has postcopy-ram, "
                          "postcopy-preempt, auto-converge, dirty-limit, multifd, return-path, "
                          "events)",
                          json_string_value(name));
            return NULL;
        }
        if ((c == CAP_RETURN_PATH || c == CAP_EVENTS) && !json_is_true(state)) {
            lm__qmp_error(err, "GenericError", "Capability '%s' is always on in livemig",
                          cap_names[c]);
            return NULL;
        }
        want[c] = json_is_true(state);
    }
    lm_params *p = q->cfg.params;
    if (want[CAP_POSTCOPY] >= 0)
        p->postcopy = want[CAP_POSTCOPY];
    if (want[CAP_PREEMPT] >= 0)
        p->postcopy_no_preempt = !want[CAP_PREEMPT];
    if (want[CAP_AUTO_CONVERGE] >= 0)
        p->auto_converge = want[CAP_AUTO_CONVERGE];
    if (want[CAP_DIRTY_LIMIT] >= 0)
        q->cap_dirty_limit = want[CAP_DIRTY_LIMIT];
    if (want[CAP_MULTIFD] >= 0)
        q->cap_multifd = want[CAP_MULTIFD];
    settings_apply(q);
    return json_object();
}

static json_t *cmd_migrate(lm_qmp *q, json_t *args, qmp_error *err)
{
    if (!source_only(q, "migrate", err))
        return NULL;
    const char *uri = json_string_value(json_object_get(args, "uri"));
    json_t *resume = json_object_get(args, "resume");
    if (resume && json_is_true(resume)) {
        if (lm_status_current(q->cfg.ctx) != LM_STATUS_POSTCOPY_PAUSED) {
            lm__qmp_error(err, "GenericError", "Cannot resume if there is no paused migration");
            return NULL;
        }
        if (strcmp(uri, q->migration_uri)) {
            lm__qmp_error(err, "GenericError",
                          "livemig reconnects to the address the migration started with (%s)",
                          q->migration_uri);
            return NULL;
        }
        /* Held by migrate-pause: let it go. Paused by the network: it is
         * reconnecting already, and this asks for nothing more. */
        lm_resume(q->cfg.ctx);
        return json_object();
    }
    if (q->busy || migration_active(lm_status_current(q->cfg.ctx))) {
        lm__qmp_error(err, "GenericError", "There's a migration process in progress");
        return NULL;
    }
    char why[512];
    if (lm_uri_check(uri, false, why, sizeof(why)) < 0) {
        lm__qmp_error(err, "GenericError", "%s", why);
        return NULL;
    }
    if (q->cfg.ops->migrate(q->cfg.opaque, uri, why, sizeof(why)) < 0) {
        lm__qmp_error(err, "GenericError", "%s", why);
        return NULL;
    }
    return json_object();
}

static json_t *cmd_migrate_incoming(lm_qmp *q, json_t *args, qmp_error *err)
{
    if (!dest_only(q, "migrate-incoming", err))
        return NULL;
    const char *uri = json_string_value(json_object_get(args, "uri"));
    char why[512];
    if (lm_uri_check(uri, true, why, sizeof(why)) < 0) {
        lm__qmp_error(err, "GenericError", "%s", why);
        return NULL;
    }
    if (q->cfg.ops->incoming(q->cfg.opaque, uri, why, sizeof(why)) < 0) {
        lm__qmp_error(err, "GenericError", "%s", why);
        return NULL;
    }
    return json_object();
}

static json_t *cmd_migrate_cancel(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args;
    lm_status s = lm_status_current(q->cfg.ctx);
    if (lm_cancel(q->cfg.ctx) == -EBUSY) {
        lm__qmp_error(err, "GenericError",
                      "the guest's memory is split between the two sides (%s): cancelling "
                      "would lose it, so the migration goes on",
                      lm_status_name(s));
        return NULL;
    }
    return json_object(); /* as QEMU: nothing running is not an error */
}

static json_t *cmd_start_postcopy(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args;
    if (!source_only(q, "migrate-start-postcopy", err))
        return NULL;
    if (!q->cfg.params->postcopy) {
        lm__qmp_error(err, "GenericError",
                      "Enable postcopy with migrate_set_capability before the start of "
                      "migration");
        return NULL;
    }
    if (!q->busy && !migration_active(lm_status_current(q->cfg.ctx))) {
        lm__qmp_error(err, "GenericError",
                      "Postcopy must be started after migration has been started");
        return NULL;
    }
    lm_start_postcopy(q->cfg.ctx);
    return json_object();
}

static json_t *cmd_migrate_pause(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args;
    if (!q->cfg.source) {
        lm__qmp_error(err, "GenericError",
                      "livemig pauses a migration from its source (migrate-pause there); the "
                      "destination then waits for the source to come back");
        return NULL;
    }
    if (lm_pause(q->cfg.ctx) < 0) {
        lm__qmp_error(err, "GenericError",
                      "migrate-pause is currently only supported during postcopy-active state");
        return NULL;
    }
    return json_object();
}

static json_t *cmd_migrate_recover(lm_qmp *q, json_t *args, qmp_error *err)
{
    if (!dest_only(q, "migrate-recover", err))
        return NULL;
    if (lm_status_current(q->cfg.ctx) != LM_STATUS_POSTCOPY_PAUSED) {
        lm__qmp_error(err, "GenericError",
                      "Migrate recover can only be run when postcopy is paused.");
        return NULL;
    }
    const char *uri = json_string_value(json_object_get(args, "uri"));
    if (strcmp(uri, q->migration_uri)) {
        lm__qmp_error(err, "GenericError",
                      "livemig's destination takes the source back on the address it listens "
                      "on (%s), not on another",
                      q->migration_uri);
        return NULL;
    }
    return json_object(); /* it listens there already */
}

static json_t *cmd_query_status(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args, (void)err;
    bool running = false;
    const char *state = q->cfg.ops->run_state(q->cfg.opaque, &running);
    return json_pack("{s:s,s:b,s:b}", "status", state, "singlestep", 0, "running", running);
}

static json_t *cmd_query_version(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)q, (void)args, (void)err;
    unsigned major = LM_VERSION_MAJOR, minor = LM_VERSION_MINOR, micro = LM_VERSION_PATCH;
    return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", (int)micro, "minor", (int)minor,
                     "major", (int)major, "package", "livemig " LM_VERSION_STRING);
}

static json_t *cmd_quit(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)args, (void)err;
    q->quit_requested = true;
    return json_object();
}

static json_t *cmd_query_commands(lm_qmp *q, json_t *args, qmp_error *err);

static const qmp_command commands[] = {
    {"query-migrate", cmd_query_migrate, {{0}}},
    {"query-migrate-parameters", cmd_query_parameters, {{0}}},
    {"migrate-set-parameters",
     cmd_set_parameters,
     {{"max-bandwidth", JSON_INTEGER, false},
      {"downtime-limit", JSON_INTEGER, false},
      {"cpu-throttle-initial", JSON_INTEGER, false},
      {"cpu-throttle-increment", JSON_INTEGER, false},
      {"max-cpu-throttle", JSON_INTEGER, false},
      {"vcpu-dirty-limit", JSON_INTEGER, false},
      {"multifd-channels", JSON_INTEGER, false},
      {"multifd-compression", JSON_STRING, false},
      {"zero-page-detection", JSON_STRING, false},
      {"x-max-rounds", JSON_INTEGER, false}}},
    {"query-migrate-capabilities", cmd_query_capabilities, {{0}}},
    {"migrate-set-capabilities", cmd_set_capabilities, {{"capabilities", JSON_ARRAY, true}}},
    {"migrate",
     cmd_migrate,
     {{"uri", JSON_STRING, true}, {"resume", JSON_TRUE, false}, {"detach", JSON_TRUE, false}}},
    {"migrate-incoming", cmd_migrate_incoming, {{"uri", JSON_STRING, true}}},
    {"migrate_cancel", cmd_migrate_cancel, {{0}}},
    {"migrate-cancel", cmd_migrate_cancel, {{0}}},
    {"migrate-start-postcopy", cmd_start_postcopy, {{0}}},
    {"migrate-pause", cmd_migrate_pause, {{0}}},
    {"migrate-recover", cmd_migrate_recover, {{"uri", JSON_STRING, true}}},
    {"query-status", cmd_query_status, {{0}}},
    {"query-version", cmd_query_version, {{0}}},
    {"query-commands", cmd_query_commands, {{0}}},
    {"quit", cmd_quit, {{0}}},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static json_t *cmd_query_commands(lm_qmp *q, json_t *args, qmp_error *err)
{
    (void)q, (void)args, (void)err;
    json_t *list = json_array();
    json_array_append_new(list, json_pack("{s:s}", "name", "qmp_capabilities"));
    for (size_t i = 0; i < NCOMMANDS; i++)
        json_array_append_new(list, json_pack("{s:s}", "name", commands[i].name));
    return list;
}

bool lm__qmp_command_exists(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return true;
    return !strcmp(name, "qmp_capabilities");
}

json_t *lm__qmp_dispatch(lm_qmp *q, const char *name, json_t *args, qmp_error *err)
{
    const qmp_command *cmd = NULL;
    for (size_t i = 0; i < NCOMMANDS && !cmd; i++)
        if (!strcmp(commands[i].name, name))
            cmd = &commands[i];
    if (!cmd) {
        lm__qmp_error(err, "CommandNotFound", "The command %s has not been found", name);
        return NULL;
    }
    if (!check_args(cmd, args, err))
        return NULL;
    pthread_mutex_lock(&q->lock);
    json_t *ret = cmd->fn(q, args, err);
    pthread_mutex_unlock(&q->lock);
    if (!ret && !err->cls)
        lm__qmp_error(err, "GenericError", "out of memory");
    return ret;
}
