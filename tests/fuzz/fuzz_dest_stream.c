/*
 * A whole destination (lm_incoming) fed from memory: HELLO and the layout
 * check, the [state][message] table and every handler it reaches (pages,
 * rounds, PING, device state, COMPLETE, VERIFY, COMMIT, the postcopy
 * switch up to arming userfaultfd), multifd channels with their
 * CHANNEL_HELLO and receiver threads, ERROR from the source, and the
 * recovery paths that take a reconnecting source back.
 *
 * The destination holds a registered layout (fuzz.h: two small blocks), as
 * an embedder or `incoming --ram` does, so a HELLO can never size its
 * memory. Its guest is the thread guest, which parses the device state but
 * never starts. Connections are in memory (fuzz.h): the first part of the
 * input is the main connection, each FUZZ_STREAM_SEP starts the next
 * connection the listener hands out (channels, reconnections); when none
 * is left, accepting fails at once. userfaultfd is refused (its ioctls
 * fail), so postcopy ends at its start. Timeouts are short: a wait that
 * depends on a channel parked at a barrier costs at most a few tens of ms.
 *
 * Input: an options byte, then the connections.
 *   bit 0: a connection's end is a close (a lost link: recovery paths);
 *          otherwise EIO (a failed read, the migration fails)
 *   bit 1: --recover-timeout (precopy recovery)
 *   bit 2: the guest fails to resume
 *   bit 3: --no-receivedmap
 *   bits 4-7: reads return at most that many bytes (0: all there is)
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "guest/guest.h"
#include "migration/engine.h"
#include "transport/transport.h"

#define MAX_CONNS 70

static bool resume_fails;

static int load_state(void *opaque, const void *buf, size_t len)
{
    return lm_guest_callbacks.load_state(opaque, buf, len);
}

static int resume(void *opaque)
{
    (void)opaque;
    return resume_fails ? -EIO : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    data++, size--;
    resume_fails = opt & 4;
    fuzz_conn_opts o = {.eof_closes = opt & 1, .chunk = opt >> 4, .no_uffd = true};
    fuzz_conn_reset(&o);
    const uint8_t *part[MAX_CONNS];
    size_t len[MAX_CONNS];
    size_t n = fuzz_split(data, size, part, len, MAX_CONNS);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(fuzz_conn_add(part[i], len[i]) >= 0);

    lm_ctx *ctx = lm_ctx_new();
    FUZZ_CHECK(ctx);
    fuzz_ram_init(&ctx->ram);
    static lm_guest guest;
    lm_block *b0 = &ctx->ram.blocks[0];
    lm_guest_init_empty(&guest, b0->host, b0->len);
    lm_guest_ops ops = {.load_state = load_state, .resume = resume};
    lm_set_guest_ops(ctx, &ops, &guest);
    lm_params p;
    lm_params_init(&p);
    p.io_timeout_ms = 20;
    p.accept_timeout_ms = 20;
    p.recover_timeout_ms = opt & 2 ? 20 : 0;
    p.no_receivedmap = opt & 8;
    struct lm_listener l = {.fd = fuzz_conn_listener(), .uri = "fuzz:"};

    int ret = lm_incoming(ctx, &l, &p);
    if (getenv("LM_FUZZ_VERBOSE")) /* what each seed reaches, for whoever writes them */
        fprintf(stderr, "dest_stream: %d %s: %s\n", ret, lm_status_name(lm_status_current(ctx)),
                ret ? lm_last_error(ctx) : "");
    FUZZ_CHECK(ret <= 0 && ret >= -4095);
    FUZZ_CHECK(ret == 0 ? lm_status_current(ctx) == LM_STATUS_COMPLETED : lm_last_error(ctx)[0]);

    lm_guest_destroy(&guest);
    fuzz_ram_free(&ctx->ram);
    lm_ctx_free(ctx);
    fuzz_conn_finish();
    return 0;
}
