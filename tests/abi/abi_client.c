/*
 * A program built against the installed livemig.h, run by t_install.sh
 * against the library it was built with and against the ABI test's library
 * (the same API with a field appended to lm_params and lm_stats, as a later
 * 1.x would): the library reads and writes exactly this program's structs,
 * gives an appended field its default, and refuses a struct larger than it
 * knows with a sentence that says why.
 */
#include <errno.h>
#include <livemig.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CANARY 0x5a5aa5a5deadbeefull

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "abi_client: %s:%d: %s failed\n", __FILE__, __LINE__, #cond);          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

int main(void)
{
    /* lm_params_init writes this program's bytes and no more. */
    struct {
        lm_params p;
        uint64_t canary;
    } a;
    a.canary = CANARY;
    lm_params_init(&a.p);
    CHECK(a.canary == CANARY);
    CHECK(a.p.size == sizeof(lm_params));
    CHECK(a.p.downtime_limit_ms == 300);

    lm_ctx *ctx = lm_ctx_new();
    CHECK(ctx != NULL);
    char why[512];
    /* The live update takes these parameters; a field this program does not
     * know takes its default (the ABI test's library checks it). */
    a.p.max_bandwidth = 100 << 20;
    CHECK(lm_params_update(ctx, &a.p, why, sizeof(why)) == 0);

    /* lm_migrate takes them too: it fails here for want of a destination,
     * not over the parameters (the ABI test's library would say so). */
    CHECK(lm_migrate(ctx, "unix:/nonexistent/abi", &a.p) < 0);
    CHECK(strstr(lm_last_error(ctx), "ABI") == NULL &&
          strstr(lm_last_error(ctx), "lm_params") == NULL);
    if (failures)
        fprintf(stderr, "abi_client: lm_migrate said: %s\n", lm_last_error(ctx));

    /* lm_stats_get fills this program's lm_stats and no more. */
    struct {
        lm_stats s;
        uint64_t canary;
    } *b = malloc(sizeof(*b));
    CHECK(b != NULL);
    memset(b, 0xff, sizeof(*b));
    b->canary = CANARY;
    lm_stats_get(ctx, &b->s);
    CHECK(b->canary == CANARY);
    CHECK(b->s.size == sizeof(lm_stats));
    CHECK(b->s.status == LM_STATUS_FAILED); /* the lm_migrate above */
    char *json = lm_stats_json(&b->s, "source");
    CHECK(json && strstr(json, "\"status\":\"failed\""));
    free(json);

    /* A program built against a newer header than the library: refused. */
    struct {
        lm_params p;
        char later_fields[64];
    } big;
    lm_params_init(&big.p);
    big.p.size = sizeof(big);
    why[0] = 0;
    CHECK(lm_params_update(ctx, &big.p, why, sizeof(why)) == -EINVAL);
    CHECK(strstr(why, "later livemig.h") != NULL);
    CHECK(lm_migrate(ctx, "unix:/nonexistent/abi", &big.p) == -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "later livemig.h") != NULL);
    /* And parameters never initialized. */
    lm_params raw;
    memset(&raw, 0, sizeof(raw));
    CHECK(lm_migrate(ctx, "unix:/nonexistent/abi", &raw) == -EINVAL);
    CHECK(strstr(lm_last_error(ctx), "lm_params_init") != NULL);

    CHECK(lm_version() >= LM_VERSION_AT(1, 0, 0));
    printf("abi_client: built against livemig %s (lm_params %zu bytes, lm_stats %zu), "
           "running on %s: %s\n",
           LM_VERSION_STRING, sizeof(lm_params), sizeof(lm_stats), lm_version_string(),
           failures ? "FAILED" : "ok");
    free(b);
    lm_ctx_free(ctx);
    return failures ? 1 : 0;
}
