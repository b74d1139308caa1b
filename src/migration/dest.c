/*
 * The destination side: accept one migration, validate every field before
 * it touches memory, place pages, and resume the guest.
 *
 * The main connection is read by one loop: the next frame's type, looked up
 * in a [state][message] table (below), picks the handler; a message that
 * has no handler in the current state is a protocol error naming what was
 * expected. Handlers move the state machine (state.h) forward:
 *
 *   setup -> active -> device -> [verify] -> completed         (precopy)
 *   active -> postcopy-switch -> postcopy-ready -> postcopy-active
 *          -> [postcopy-verify] -> completed                    (postcopy)
 *
 * Any invalid input ends the migration with an ERROR to the source; the
 * guest is never resumed with partial memory, and once it runs here on
 * memory partly still on the source (postcopy) nothing is thrown away.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "migration/dest.h"
#include "migration/section.h"
#include "util/clock.h"

/* The page faults this process took since 'start' (receiving starts), or
 * with start false until now (every page is here): what the report's
 * dest-minor-faults counts is receiving, not verifying or resuming. */
void lm__dest_count_faults(lm_dest *d, bool start)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (start) {
        d->faults0_minor = (uint64_t)ru.ru_minflt;
        d->faults0_major = (uint64_t)ru.ru_majflt;
    } else if (!d->faults_counted) {
        d->st.dest_minor_faults = (uint64_t)ru.ru_minflt - d->faults0_minor;
        d->st.dest_major_faults = (uint64_t)ru.ru_majflt - d->faults0_major;
        d->faults_counted = true;
    }
}

int lm__dest_protocol_error(lm_dest *d, int code, const char *why)
{
    return lm_err_set(&d->ctx->err, code, "invalid migration stream from the source: %s", why);
}

int lm__dest_enter(lm_dest *d, lm_dst_state to)
{
    int ret = lm__fsm_enter(&d->fsm, to);
    if (ret < 0)
        return lm_err_set(&d->ctx->err, ret,
                          "internal error: the destination cannot go from %s to %s",
                          lm__fsm_name(&d->fsm), lm_dest_fsm.names[to]);
    d->st.status = lm__fsm_status(&d->fsm);
    lm__stats_publish(d->ctx, &d->st);
    return 0;
}

int lm__dest_send_locked(lm_dest *d, uint16_t type, const void *body, uint32_t len)
{
    pthread_mutex_lock(&d->conn_lock);
    int ret = lm_conn_send_frame(&d->conn, type, body, len);
    pthread_mutex_unlock(&d->conn_lock);
    return ret;
}

int lm__dest_read_body(lm_dest *d, const lm_frame *f, uint8_t **out)
{
    uint8_t *body = malloc(f->length ? f->length : 1);
    if (!body)
        return lm_err_set(&d->ctx->err, -ENOMEM, "out of memory for a %u-byte %s", f->length,
                          lm_msg_name(f->type));
    int ret = lm_conn_read(&d->conn, body, f->length);
    if (ret < 0) {
        free(body);
        return ret;
    }
    *out = body;
    return 0;
}

int lm__dest_take_verify(lm_dest *d, const lm_frame *f, const uint8_t digest[16], uint64_t pages,
                         lm_resumed *r)
{
    uint8_t body[LM_VERIFY_SIZE];
    lm_verify_msg v;
    char why[256];
    int ret = lm_conn_recv_body(&d->conn, f, body, sizeof(body));
    if (ret < 0)
        return ret;
    if ((ret = lm_verify_decode(body, f->length, &v, why, sizeof(why))) < 0)
        return lm__dest_protocol_error(d, ret, why);
    r->verify_time_us = (lm_now_ns() - d->verify_t0) / 1000;
    lm__digest_hex(digest, d->st.digest, sizeof(d->st.digest));
    d->st.verify_done = true;
    d->st.verify_match = pages == v.pages && !memcmp(digest, v.digest, 16);
    d->st.verify_time_ms = (double)r->verify_time_us / 1000.0;
    r->verified = d->st.verify_match ? 1 : 2;
    if (!d->st.verify_match) {
        char src_hex[40];
        lm__digest_hex(v.digest, src_hex, sizeof(src_hex));
        snprintf(d->source_digest, sizeof(d->source_digest), "%s", src_hex);
    }
    return 0;
}

/* ---- precopy messages ---------------------------------------------------- */

/* PAGES on the main connection: one packet, like a channel's. */
static int on_pages(lm_dest *d, const lm_frame *f)
{
    uint8_t raw[LM_PACKET_HDR_SIZE];
    lm_packet_hdr ph;
    char why[256];
    if (f->length < LM_PACKET_HDR_SIZE)
        return lm__dest_protocol_error(d, -EBADMSG, "PAGES frame shorter than a packet header");
    int ret = lm_conn_read(&d->conn, raw, sizeof(raw));
    if (ret < 0 || (ret = lm_recv_chan_decode(&d->main_chan, raw, &ph)) < 0)
        return ret;
    if (ph.flags & LM_PACKET_FLAG_SYNC)
        return lm__dest_protocol_error(d, -EBADMSG, "SYNC packet on the main connection");
    d->caught_up = false;
    uint64_t expect =
        LM_PACKET_HDR_SIZE + 8ull * (ph.normal_pages + ph.zero_pages) + ph.payload_size;
    if (f->length != expect) {
        snprintf(why, sizeof(why), "PAGES frame of %u bytes, its packet needs %llu", f->length,
                 (unsigned long long)expect);
        return lm__dest_protocol_error(d, -EBADMSG, why);
    }
    return lm_recv_chan_body(&d->main_chan, &ph);
}

#define ZERO_RANGE_SLICE 4096ull      /* pages applied between looks at the clock */
#define BUSY_INTERVAL_NS 100000000ull /* at most 10 BUSY a second */

/* ZERO_RANGES: runs of pages the source knows hold nothing, in precopy
 * only (the sink is the in-place one). Checked whole before any applies. */
static int on_zero_ranges(lm_dest *d, const lm_frame *f)
{
    uint32_t id, count;
    char why[256];
    if (f->length > lm_zero_ranges_size(LM_ZERO_RANGES_MAX))
        return lm__dest_protocol_error(d, -EBADMSG, "ZERO_RANGES frame longer than its limit");
    uint8_t *body;
    int ret = lm__dest_read_body(d, f, &body);
    if (ret < 0)
        return ret;
    lm_zero_range *ranges = NULL;
    lm_block *b = NULL;
    if ((ret = lm_zero_ranges_decode_hdr(body, f->length, &id, &count, why, sizeof(why))) < 0)
        goto bad;
    if (!(b = lm__ram_find(&d->ctx->ram, id))) {
        snprintf(why, sizeof(why), "ZERO_RANGES names unknown RAM block %u", id);
        ret = -EBADMSG;
        goto bad;
    }
    if (!(ranges = malloc(count * sizeof(*ranges)))) {
        free(body);
        return lm_err_set(&d->ctx->err, -ENOMEM, "out of memory for %u zero ranges", count);
    }
    if ((ret = lm_zero_ranges_decode(body, count, b->npages, ranges, why, sizeof(why))) < 0)
        goto bad;
    free(body);
    d->caught_up = false;
    lm_page_sink *sink = &d->inplace.sink;
    uint64_t pages = 0, busy_ns = lm_now_ns();
    /* A slice at a time: where each page costs a read or a clear
     * (--no-receivedmap, RAM the embedder registered), a long run takes
     * seconds while the source, which sent a few bytes, waits; BUSY tells
     * it this side is working, not stuck. */
    for (uint32_t i = 0; i < count && ret == 0; i++)
        for (uint64_t first = ranges[i].first, end = first + ranges[i].npages;
             first < end && ret == 0; first += ZERO_RANGE_SLICE) {
            uint64_t n = end - first < ZERO_RANGE_SLICE ? end - first : ZERO_RANGE_SLICE;
            ret = sink->ops->place_zero_range(sink, b, first, n);
            pages += n;
            if (ret == 0 && lm_now_ns() - busy_ns >= BUSY_INTERVAL_NS) {
                ret = lm__dest_send_locked(d, LM_MSG_BUSY, NULL, 0);
                busy_ns = lm_now_ns();
            }
        }
    free(ranges);
    atomic_fetch_add_explicit(&d->main_chan.zero, pages, memory_order_relaxed);
    return ret;
bad:
    free(body);
    free(ranges);
    return lm__dest_protocol_error(d, ret, why);
}

static int on_round_end(lm_dest *d, const lm_frame *f)
{
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "ROUND_END carries a body");
    d->caught_up = false;
    /* Every channel finishes this round before any starts the next. */
    int ret = d->use_pool ? lm_multifd_recv_barrier(&d->pool, d->conn.timeout_ms) : 0;
    d->st.dirty_sync_count++;
    lm__dest_count_received(d); /* query-migrate here follows the rounds */
    lm__stats_publish(d->ctx, &d->st);
    return ret;
}

static int on_ping(lm_dest *d, const lm_frame *f)
{
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "PING carries a body");
    d->caught_up = true;
    /* The source stops its guest once it reads the PONG: the start of the
     * downtime as this side can see it. */
    lm__dest_count_received(d);
    d->switch_ns = lm_now_ns();
    d->st.precopy_bytes = d->st.transferred;
    d->st.downtime_bytes = 0;
    return lm__dest_send_locked(d, LM_MSG_PONG, NULL, 0);
}

/* Precopy: the guest is stopped on the source and COMPLETE follows. In
 * postcopy the switch map came first and POSTCOPY_RUN follows. */
static int on_device_state(lm_dest *d, const lm_frame *f)
{
    free(d->device_state); /* one from a switchover that was resumed from */
    d->device_state = NULL;
    /* The sections' complete parts came just before. */
    int ret = lm__dest_sections_check_complete(d);
    if (ret == 0)
        ret = lm__dest_read_body(d, f, &d->device_state);
    if (ret < 0)
        return ret;
    d->device_state_len = f->length;
    if (d->fsm.state == LM_DST_ACTIVE)
        return lm__dest_enter(d, LM_DST_DEVICE);
    return lm__dest_postcopy_ready(d);
}

/* Everything is here (and verified): load the device state and tell the
 * source, which decides. The guest stays stopped until COMMIT; a verdict
 * against running (digests differ, the device state does not load) ends
 * the migration here, and the source, told so, runs its guest again. */
static int ready(lm_dest *d, lm_resumed *r)
{
    lm_ctx *ctx = d->ctx;
    int ret = 0;
    if (r->verified == 2)
        ret = lm_err_set(&ctx->err, -EIO,
                         "verification failed: RAM digest %s here, %s on "
                         "the source; the guest is not resumed here",
                         d->st.digest, d->source_digest);
    if (ret == 0 && ctx->gops.load_state &&
        (ret = ctx->gops.load_state(ctx->gopaque, d->device_state, d->device_state_len)) < 0)
        lm_err_set(&ctx->err, ret, "loading the guest's device state failed");
    r->status = r->verified == 2 ? 0 : ret;
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(r, buf);
    int sent = lm_conn_send_frame(&d->conn, LM_MSG_SWITCHOVER_READY, buf, sizeof(buf));
    if (ret < 0)
        return ret;
    /* Sent or not, the source may have it: from here only its COMMIT, or
     * its word that it will not commit (ERROR), decides; not a cancel. */
    int entered = lm__dest_enter(d, LM_DST_READY);
    d->conn.cancel = NULL;
    return sent < 0 ? sent : entered;
}

/* The commit point on this side: the guest runs here from now on. */
static int on_commit(lm_dest *d, const lm_frame *f)
{
    lm_ctx *ctx = d->ctx;
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "COMMIT carries a body");
    lm_resumed r = {0};
    if (ctx->gops.resume && (r.status = ctx->gops.resume(ctx->gopaque)) < 0) {
        /* Said over a live link: the source runs its copy again. */
        uint8_t buf[LM_RESUMED_SIZE];
        lm_resumed_encode(&r, buf);
        lm_conn_send_frame(&d->conn, LM_MSG_RESUMED, buf, sizeof(buf));
        return lm_err_set(&ctx->err, r.status, "the guest could not be resumed");
    }
    lm__dest_mark_resumed(d);
    int ret = lm__dest_enter(d, LM_DST_COMPLETED);
    if (ret == 0)
        lm__dest_confirm_commit(d);
    return ret;
}

void lm__dest_confirm_commit(lm_dest *d)
{
    lm_resumed r = {0};
    uint8_t buf[LM_RESUMED_SIZE];
    lm_resumed_encode(&r, buf);
    /* Lost or not, the guest runs here: a source that did not hear it
     * reconnects and asks again (linger_for_source). */
    d->confirm_sent = lm__dest_send_locked(d, LM_MSG_RESUMED, buf, sizeof(buf)) == 0;
}

/* Every page is sent: wait for the channels to drain. With verification,
 * hash our RAM while the source hashes its own, then expect its digest. */
static int on_complete(lm_dest *d, const lm_frame *f)
{
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "COMPLETE carries a body");
    int ret = d->use_pool ? lm_multifd_recv_finish(&d->pool, d->conn.timeout_ms) : 0;
    if (ret < 0)
        return ret;
    lm__dest_placement_end(d); /* every page is in: RAM may be read */
    lm__dest_count_faults(d, false);
    lm_resumed r = {0};
    if (!(d->hello.flags & LM_HELLO_VERIFY))
        return ready(d, &r);
    d->verify_t0 = lm_now_ns();
    if ((ret = lm__ram_digest(&d->ctx->ram, d->digest, &d->digest_pages, &d->ctx->err)) < 0)
        return ret;
    return lm__dest_enter(d, LM_DST_VERIFY);
}

static int on_verify(lm_dest *d, const lm_frame *f)
{
    lm_resumed r = {0};
    int ret = lm__dest_take_verify(d, f, d->digest, d->digest_pages, &r);
    return ret < 0 ? ret : ready(d, &r);
}

/* Which message may arrive in which state; everything else is refused.
 * ERROR is read in every state before this table is consulted. */
static const lm_dest_handler handlers[LM_DST__COUNT][LM_MSG__COUNT] = {
    [LM_DST_ACTIVE] =
        {
            [LM_MSG_PAGES] = on_pages,
            [LM_MSG_ZERO_RANGES] = on_zero_ranges,
            [LM_MSG_ROUND_END] = on_round_end,
            [LM_MSG_PING] = on_ping,
            [LM_MSG_DEVICE_STATE] = on_device_state,
            [LM_MSG_POSTCOPY_SWITCH] = lm__dest_on_postcopy_switch,
            [LM_MSG_SECTION] = lm__dest_on_section,
            [LM_MSG_SWITCHOVER_QUERY] = lm__dest_on_switchover_query,
        },
    [LM_DST_DEVICE] = {[LM_MSG_COMPLETE] = on_complete},
    [LM_DST_VERIFY] = {[LM_MSG_VERIFY] = on_verify},
    [LM_DST_READY] = {[LM_MSG_COMMIT] = on_commit},
    [LM_DST_POSTCOPY_SWITCH] =
        {[LM_MSG_DEVICE_STATE] = on_device_state, [LM_MSG_SECTION] = lm__dest_on_section},
    [LM_DST_POSTCOPY_READY] = {[LM_MSG_POSTCOPY_RUN] = lm__dest_on_postcopy_run},
    [LM_DST_POSTCOPY_ACTIVE] =
        {
            /* the background stream, when there are no channels */
            [LM_MSG_PAGES] = on_pages,
            [LM_MSG_ROUND_END] = on_round_end,
            [LM_MSG_POSTCOPY_END] = lm__dest_on_postcopy_end,
        },
    [LM_DST_POSTCOPY_VERIFY] = {[LM_MSG_VERIFY] = lm__dest_on_postcopy_verify},
};

bool lm__dest_accepts(unsigned state, uint16_t type)
{
    return state < LM_DST__COUNT && type < LM_MSG__COUNT && handlers[state][type];
}

static bool is_final(unsigned state)
{
    return state == LM_DST_COMPLETED || state == LM_DST_FAILED || state == LM_DST_POSTCOPY_PAUSED ||
           state == LM_DST_CANCELLED || state == LM_DST_SWITCHOVER_PAUSED;
}

static int refuse(lm_dest *d, uint16_t type)
{
    char expected[256] = "", why[384];
    size_t n = 0;
    for (unsigned m = 0; m < LM_MSG__COUNT && n < sizeof(expected); m++)
        if (handlers[d->fsm.state][m])
            n += (size_t)snprintf(expected + n, sizeof(expected) - n, "%s%s", n ? ", " : "",
                                  lm_msg_name((uint16_t)m));
    snprintf(why, sizeof(why), "%s is not allowed in state %s (expected %s)", lm_msg_name(type),
             lm__fsm_name(&d->fsm), expected);
    return lm__dest_protocol_error(d, -EPROTO, why);
}

/* The source hashes all of its RAM before its digest comes. The wait for
 * it is lengthened by what arrived here, page data and offsets at 1 GB/s
 * (what the source paid to send, and about what hashing it costs it),
 * never by the size the source declared: a peer that declares 4 TiB and
 * sends nothing must not buy itself hours. */
static unsigned verify_allowance_ms(lm_dest *d)
{
    uint64_t normal = 0, zero = 0, bytes = 0;
    uint64_t data = atomic_load(&d->main_chan.normal_bytes) + d->pool_acc.normal_bytes;
    zero = atomic_load(&d->main_chan.zero) + d->pool_acc.zero;
    if (d->use_pool)
        lm_multifd_recv_counters(&d->pool, &normal, &zero, &data, &bytes);
    uint64_t ms = (data + 8 * zero) / 1000000;
    return ms > UINT32_MAX / 2 ? UINT32_MAX / 2 : (unsigned)ms;
}

static int receive_stream(lm_dest *d)
{
    while (!is_final(d->fsm.state)) {
        bool verifying = d->fsm.state == LM_DST_VERIFY || d->fsm.state == LM_DST_POSTCOPY_VERIFY;
        unsigned io_timeout = d->conn.timeout_ms;
        if (verifying) {
            unsigned extra = verify_allowance_ms(d);
            d->conn.timeout_ms = extra > UINT32_MAX - io_timeout ? UINT32_MAX : io_timeout + extra;
        }
        lm_frame f;
        int ret = lm_conn_recv_frame(&d->conn, &f);
        d->conn.timeout_ms = io_timeout;
        if (ret < 0)
            return ret;
        if (f.type == LM_MSG_ERROR) {
            uint8_t body[4 + LM_ERROR_MAX_TEXT];
            if ((ret = lm_conn_recv_body(&d->conn, &f, body, sizeof(body))) < 0)
                return ret;
            d->source_said_error = true;
            return lm_conn_peer_error(&d->conn, body, f.length);
        }
        lm_dest_handler h = f.type < LM_MSG__COUNT ? handlers[d->fsm.state][f.type] : NULL;
        if (!h)
            return refuse(d, f.type);
        if ((ret = h(d, &f)) < 0)
            return ret;
    }
    return 0;
}

/* A channel that fails shuts the main connection down to wake the main
 * thread, which then reads a closed stream: the cause is the first error
 * recorded (a bad packet, a refused page), not the close it caused. */
static int first_cause(const lm_dest *d, int ret)
{
    int first = d->ctx->err.code;
    return ret < 0 && first < 0 ? first : ret;
}

static bool commit_unknown(const lm_dest *d, int ret)
{
    unsigned st = d->fsm.state;
    return (st == LM_DST_READY || st == LM_DST_POSTCOPY_READY) && !d->source_said_error &&
           lm__link_lost(ret);
}

/* The guest runs here on partial memory and the link went: pause, and
 * take the source back when it reconnects. */
static bool postcopy_recoverable(const lm_dest *d, int ret)
{
    unsigned st = d->fsm.state;
    return (st == LM_DST_POSTCOPY_ACTIVE || st == LM_DST_POSTCOPY_VERIFY) &&
           !d->source_said_error && lm__link_lost(ret);
}

/* Precopy, with --recover-timeout: nothing ran here yet; keep what came
 * and wait for the source to resume. */
static bool precopy_recoverable(const lm_dest *d, int ret)
{
    unsigned st = d->fsm.state;
    return (st == LM_DST_ACTIVE || st == LM_DST_DEVICE || st == LM_DST_VERIFY ||
            st == LM_DST_PRECOPY_PAUSED) &&
           d->p->recover_timeout_ms && !d->source_said_error && lm__link_lost(ret);
}

/* The state a failure leaves: the guest runs here only in postcopy. */
static lm_dst_state failed_state(const lm_dest *d, int ret)
{
    if (d->fsm.state == LM_DST_POSTCOPY_ACTIVE || d->fsm.state == LM_DST_POSTCOPY_VERIFY)
        /* released only after a digest mismatch in postcopy-verify */
        return d->pc_init ? LM_DST_POSTCOPY_PAUSED : LM_DST_FAILED;
    return ret == -ECANCELED ? LM_DST_CANCELLED : LM_DST_FAILED;
}

void lm__dest_count_received(lm_dest *d)
{
    d->st.normal = atomic_load(&d->main_chan.normal);
    d->st.duplicate = atomic_load(&d->main_chan.zero);
    d->st.normal_bytes = atomic_load(&d->main_chan.normal_bytes);
    d->st.multifd_bytes = 0;
    if (d->use_pool)
        lm_multifd_recv_counters(&d->pool, &d->st.normal, &d->st.duplicate, &d->st.normal_bytes,
                                 &d->st.multifd_bytes);
    d->st.normal += d->pool_acc.normal;
    d->st.duplicate += d->pool_acc.zero;
    d->st.normal_bytes += d->pool_acc.normal_bytes;
    d->st.multifd_bytes += d->pool_acc.bytes;
    d->st.transferred = d->conn.bytes_in + d->st.multifd_bytes;
    if (d->start_ns)
        d->st.total_time_ms = lm_ns_to_ms(lm_now_ns() - d->start_ns);
}

void lm__dest_mark_resumed(lm_dest *d)
{
    lm__dest_count_received(d);
    if (!d->switch_ns) /* no PONG: everything came before the guest stopped */
        return;
    d->st.downtime_ms = lm_ns_to_ms(lm_now_ns() - d->switch_ns);
    d->st.downtime_bytes = d->st.transferred - d->st.precopy_bytes;
}

/* The end: the channels stop, the counters are final, the rates averages
 * over the time after setup (as QEMU's). */
static void gather_counters(lm_dest *d)
{
    if (d->use_pool)
        lm_multifd_recv_stop(&d->pool);
    lm__dest_count_received(d);
    /* The last phase takes the bytes after it too (the goodbyes): the
     * three add up to transferred. */
    if (!d->switch_ns)
        d->st.precopy_bytes = d->st.transferred;
    else if (d->st.postcopy)
        d->st.postcopy_bytes = d->st.transferred - d->st.precopy_bytes - d->st.downtime_bytes;
    else
        d->st.downtime_bytes = d->st.transferred - d->st.precopy_bytes;
    double secs = (d->st.total_time_ms - d->st.setup_time_ms) / 1000.0;
    d->st.mbps = secs > 0 ? (double)d->st.transferred * 8 / 1e6 / secs : 0;
    d->st.pages_per_second = secs > 0 ? (double)(d->st.normal + d->st.duplicate) / secs : 0;
}

/* Loads the credentials before accepting anyone. */
static int setup_tls(lm_dest *d)
{
    lm_tls_config cfg = {.creds_dir = d->p->tls_creds, .psk_file = d->p->tls_psk};
    if (!lm_tls_wanted(&cfg))
        return 0;
    int ret = lm_tls_new(&d->tls, &cfg, true, &d->ctx->err);
    if (ret < 0)
        return ret;
    snprintf(d->st.tls_mode, sizeof(d->st.tls_mode), "%s", lm_tls_mode(d->tls));
    d->st.tls_ktls = lm_tls_ktls_available(d->st.tls_ktls_why, sizeof(d->st.tls_ktls_why));
    return 0;
}

int lm__dest_secure(lm_dest *d, lm_conn *c)
{
    if (!d->tls)
        return 0;
    int ret = lm_conn_start_tls(c, d->tls, NULL);
    if (ret == 0 && !d->st.tls_cipher[0])
        lm_conn_cipher(c, d->st.tls_cipher, sizeof(d->st.tls_cipher));
    return ret;
}

int lm_incoming(lm_ctx *ctx, lm_listener *l, const lm_params *params)
{
    lm_dest *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->ctx = ctx;
    int ret = lm__params_import(ctx, params, &d->params);
    if (ret < 0) {
        free(d);
        return ret;
    }
    d->p = &d->params;
    d->conn.fd = -1;
    d->place_uffd = -1;
    d->listener = l;
    pthread_mutex_init(&d->conn_lock, NULL);
    lm_err_reset(&ctx->err);
    lm__fsm_init(&d->fsm, &lm_dest_fsm, LM_DST_SETUP);
    lm__stats_reset(ctx, LM_STATUS_SETUP);
    d->st.status = LM_STATUS_SETUP;

    lm_frame first;
    ret = setup_tls(d);
    if (ret == 0)
        ret = lm__dest_accept_source(d, &first);
    if (ret == 0) {
        d->start_ns = lm_now_ns();
        ret = lm__dest_handshake(d, &first);
        d->st.setup_time_ms = lm_ns_to_ms(lm_now_ns() - d->start_ns);
    }
    if (ret == 0 && (ret = lm__dest_enter(d, LM_DST_ACTIVE)) == 0) {
        lm__dest_count_faults(d, true);
        ret = first_cause(d, receive_stream(d));
        /* Ready and waiting for the commit, the link went: only the source
         * knows whether it committed, so wait for it to say so. */
        for (;;) {
            if (ret < 0 && commit_unknown(d, ret))
                ret = lm__dest_await_commit(d);
            else if (ret < 0 && postcopy_recoverable(d, ret))
                ret = lm__dest_postcopy_recover(d);
            else if (ret < 0 && precopy_recoverable(d, ret))
                ret = lm__dest_precopy_recover(d);
            else
                break;
            if (ret < 0)
                break;
            ret = first_cause(d, receive_stream(d));
        }
        lm__dest_count_faults(d, false); /* unless every page arrived before */
    }
    if (d->fsm.state == LM_DST_COMPLETED) {
        int told = lm__dest_linger_for_source(d);
        ret = ret < 0 ? ret : told;
    }
    if (ret < 0 && !is_final(d->fsm.state)) {
        lm_dst_state to = failed_state(d, ret);
        if (to == LM_DST_POSTCOPY_PAUSED)
            lm__dest_postcopy_pause(d);
        lm__dest_enter(d, to);
    }
    if (d->pc_init) /* the switch was announced but the guest never ran here */
        lm_postcopy_dst_stop(&d->pc, true);
    if (d->have_preempt) {
        lm_recv_chan_join(&d->preempt);
        lm_recv_chan_cleanup(&d->preempt);
        lm_conn_close(&d->preempt.own_conn);
    }
    /* Before the receivers are joined: none may wait on a missing page. */
    lm__dest_placement_end(d);
    gather_counters(d);
    lm_recv_chan_cleanup(&d->main_chan);
    if (ret < 0 && d->conn.fd >= 0 && ret != -ECONNRESET && ret != -EPIPE)
        lm_conn_send_error(&d->conn, ret, ctx->err.msg);
    lm__stats_publish(ctx, &d->st);
    lm_conn_close(&d->conn);
    lm_ram_budget_free(&d->budget);
    lm_tls_free(d->tls);
    free(d->device_state);
    free(d);
    return ret;
}
