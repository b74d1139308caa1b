/*
 * `livemig demo`: both ends on loopback. The destination is a child
 * process, as on a real second host, so its page faults and memory are its
 * own.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/options.h"
#include "cli/run.h"
#include "guest/guest.h"
#include "livemig.h"

/* Waits for child (retrying on signals); its wait status. */
static int wait_child(pid_t child)
{
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

/* With --dest-prealloc the destination populates its RAM first; the
 * source's guest starts once that is done, so the two do not overlap.
 * Waits for the child's byte on fd; false (child ended) when none came. */
static bool wait_ready(int fd, pid_t child)
{
    char byte;
    ssize_t got;
    while ((got = read(fd, &byte, 1)) < 0 && errno == EINTR && !cli_interrupted)
        ;
    close(fd);
    if (got == 1)
        return true;
    kill(child, SIGTERM);
    int status = wait_child(child);
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
        fprintf(stderr, "livemig: the destination died (signal %d) while preparing\n",
                WTERMSIG(status));
    else if (!cli_interrupted)
        fprintf(stderr, "livemig: the destination could not get ready (see above)\n");
    return false;
}

int cli_demo(cli_opts *o)
{
    if (!o->ram)
        o->ram = 1ull << 30;
    if (!o->workload)
        o->workload = "stress:2x64M";
    lm_workload wl;
    int rc = cli_check_workload(o, &wl);
    if (rc)
        return rc;
    lm_listener *l;
    char why[512];
    if (lm_listen(o->listen ? o->listen : "tcp:127.0.0.1:0", &l, why, sizeof(why)) < 0) {
        fprintf(stderr, "livemig: %s\n", why);
        return 1;
    }
    int ready[2] = {-1, -1};
    if (o->dest_prealloc && pipe(ready) < 0) {
        fprintf(stderr, "livemig: pipe: %s\n", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "livemig: fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0) {
        cli_opts d = *o;
        d.stats_json = o->dest_stats_json;
        d.params.accept_timeout_ms = 30000;
        if (ready[0] >= 0)
            close(ready[0]);
        d.ready_fd = ready[1];
        _exit(cli_run_incoming(&d, l));
    }
    if (ready[0] >= 0) {
        close(ready[1]);
        if (!wait_ready(ready[0], child)) {
            lm_listener_close(l);
            return 1;
        }
    }
    char uri[256];
    snprintf(uri, sizeof(uri), "%s", lm_listener_uri(l));
    lm_listener_close(l);
    o->to = uri;
    o->local_dest = true;
    printf("== source (pid %d) -> destination (pid %d) on %s ==\n", (int)getpid(), (int)child, uri);
    fflush(stdout);
    rc = cli_run_migrate(o);
    /* A source that failed before connecting leaves the child waiting. */
    if (rc)
        kill(child, SIGTERM);
    int status = wait_child(child);
    int child_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    if (rc == 0 && child_rc == 0)
        printf("== demo: migration completed%s ==\n", o->params.verify ? " and verified" : "");
    return rc ? rc : child_rc;
}
