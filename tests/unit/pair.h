/*
 * Two contexts migrating in one process over a unix socket, for the tests
 * of the library's calls: the destination runs lm_incoming on its own
 * thread, the caller's thread runs lm_migrate. A test embeds an lm_pair,
 * registers what it needs on pair.src and pair.dst between pair_open and
 * pair_migrate, and reads the outcome from it.
 */
#ifndef LM_TEST_PAIR_H
#define LM_TEST_PAIR_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "livemig.h"

typedef struct lm_pair {
    lm_ctx *src, *dst;
    lm_listener *l;
    lm_params sp, dp; /* verify on; the destination waits 20 s for the source */
    int src_ret, dst_ret;
    lm_stats src_st, dst_st; /* as each side ended */
    pthread_t dthread;
    char dir[64];
} lm_pair;

static void *pair_dest_main(void *arg)
{
    lm_pair *p = arg;
    p->dst_ret = lm_incoming(p->dst, p->l, &p->dp);
    lm_stats_get(p->dst, &p->dst_st);
    return NULL;
}

/* Two fresh contexts and a listener in a fresh directory. */
static inline void pair_open(lm_pair *p)
{
    memset(p, 0, sizeof(*p));
    p->src = lm_ctx_new();
    p->dst = lm_ctx_new();
    CHECK(p->src && p->dst);
    lm_params_init(&p->sp);
    p->sp.verify = true;
    p->dp = p->sp;
    p->dp.accept_timeout_ms = 20000;
    snprintf(p->dir, sizeof(p->dir), "/tmp/lm-pair-XXXXXX");
    CHECK(mkdtemp(p->dir) != NULL);
    char uri[128], err[256];
    snprintf(uri, sizeof(uri), "unix:%s/sock", p->dir);
    if (lm_listen(uri, &p->l, err, sizeof(err)) < 0) {
        fprintf(stderr, "lm_listen: %s\n", err);
        exit(1);
    }
}

/* One migration, both sides; returns once both ended. */
static inline void pair_migrate(lm_pair *p)
{
    CHECK(pthread_create(&p->dthread, NULL, pair_dest_main, p) == 0);
    p->src_ret = lm_migrate(p->src, lm_listener_uri(p->l), &p->sp);
    lm_stats_get(p->src, &p->src_st);
    pthread_join(p->dthread, NULL);
}

/* Says why a migration that should have completed did not. */
static inline void pair_report(const lm_pair *p)
{
    if (p->src_ret || p->dst_ret)
        fprintf(stderr, "source %d (%s), destination %d (%s)\n", p->src_ret, lm_last_error(p->src),
                p->dst_ret, lm_last_error(p->dst));
}

static inline void pair_close(lm_pair *p)
{
    lm_listener_close(p->l);
    char path[128];
    snprintf(path, sizeof(path), "%s/sock", p->dir);
    unlink(path);
    rmdir(p->dir);
    lm_ctx_free(p->src);
    lm_ctx_free(p->dst);
}

#endif
