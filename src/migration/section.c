/* Device-state sections on both sides: see section.h. */
#include "migration/section.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

#define SWITCHOVER_QUERY_NS 10000000ull

/* Source. */

int lm__src_sections_setup(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    if (s->sections_set_up)
        return 0;
    s->sections_set_up = true;
    for (unsigned i = 0; i < ctx->nsections; i++) {
        lm_section *sec = &ctx->sections[i];
        int ret = sec->ops.save_setup ? sec->ops.save_setup(sec->opaque) : 0;
        if (ret < 0)
            return lm_err_set(&ctx->err, ret, "device-state section \"%s\": save_setup failed",
                              sec->name);
        /* A section without iterative state has nothing pending. */
        s->section_done[i] = !sec->ops.save_iterate;
    }
    return 0;
}

/* One part on the main connection: the header, then the bytes. */
static int send_part(lm_source *s, const lm_section *sec, uint32_t flags, const void *buf,
                     size_t len)
{
    if (len > LM_SECTION_MAX_PART)
        return lm_err_set(&s->ctx->err, -E2BIG,
                          "device-state section \"%s\" saved %zu bytes at once, more than a "
                          "part may carry (%u): %s",
                          sec->name, len, LM_SECTION_MAX_PART,
                          flags & LM_SECTION_COMPLETE
                              ? "send the bulk of it from save_iterate while the guest runs"
                              : "save it over more rounds");
    lm_section_hdr h = {.version = sec->version, .flags = flags};
    memcpy(h.name, sec->name, sizeof(h.name));
    size_t total = LM_SECTION_HDR_SIZE + len;
    uint8_t *body = malloc(total);
    if (!body)
        return lm_err_set(&s->ctx->err, -ENOMEM, "out of memory for section \"%s\"", sec->name);
    lm_section_hdr_encode(&h, body);
    if (len)
        memcpy(body + LM_SECTION_HDR_SIZE, buf, len);
    int ret = lm_conn_send_frame(&s->conn, LM_MSG_SECTION, body, (uint32_t)total);
    free(body);
    return ret;
}

int lm__src_sections_iterate(lm_source *s, bool *all_done)
{
    lm_ctx *ctx = s->ctx;
    *all_done = true;
    for (unsigned i = 0; i < ctx->nsections; i++) {
        lm_section *sec = &ctx->sections[i];
        if (s->section_done[i])
            continue;
        void *buf = NULL;
        size_t len = 0;
        bool done = false;
        int ret = sec->ops.save_iterate(sec->opaque, &buf, &len, &done);
        if (ret < 0) {
            free(buf);
            return lm_err_set(&ctx->err, ret, "device-state section \"%s\": save_iterate failed",
                              sec->name);
        }
        if (buf && len)
            ret = send_part(s, sec, 0, buf, len);
        free(buf);
        if (ret < 0)
            return ret;
        s->section_done[i] = done;
        *all_done = *all_done && done;
    }
    return 0;
}

int lm__src_sections_complete(lm_source *s)
{
    lm_ctx *ctx = s->ctx;
    for (unsigned i = 0; i < ctx->nsections; i++) {
        lm_section *sec = &ctx->sections[i];
        void *buf = NULL;
        size_t len = 0;
        int ret = sec->ops.save_complete(sec->opaque, &buf, &len);
        if (ret < 0) {
            free(buf);
            return lm_err_set(&ctx->err, ret, "device-state section \"%s\": save_complete failed",
                              sec->name);
        }
        ret = send_part(s, sec, LM_SECTION_COMPLETE, buf, buf ? len : 0);
        free(buf);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int lm__src_switchover_acked(lm_source *s, bool *ok)
{
    if (s->switchover_acked || !s->ctx->nsections) {
        *ok = true;
        return 0;
    }
    /* Rounds may be short while the destination is not ready: ask at most
     * every SWITCHOVER_QUERY_NS, not at the round trip's rate. */
    uint64_t now = lm_now_ns();
    *ok = false;
    if (now < s->switchover_query_ns + SWITCHOVER_QUERY_NS)
        return 0;
    s->switchover_query_ns = now;
    uint8_t body[LM_SWITCHOVER_ACK_SIZE];
    uint32_t len = 0;
    int ret = lm_conn_send_frame(&s->conn, LM_MSG_SWITCHOVER_QUERY, NULL, 0);
    if (ret == 0)
        ret = lm_conn_expect(&s->conn, LM_MSG_SWITCHOVER_ACK, body, sizeof(body), &len, 0);
    if (ret < 0)
        return ret;
    if (len != LM_SWITCHOVER_ACK_SIZE)
        return lm_err_set(&s->ctx->err, -EBADMSG, "SWITCHOVER_ACK is %u bytes, expected %d", len,
                          LM_SWITCHOVER_ACK_SIZE);
    uint32_t pending = lm_get_be32(body);
    if (pending > LM_MAX_SECTIONS)
        return lm_err_set(&s->ctx->err, -EBADMSG,
                          "SWITCHOVER_ACK says %u sections are not ready; there are at most %d",
                          pending, LM_MAX_SECTIONS);
    s->switchover_acked = pending == 0;
    *ok = s->switchover_acked;
    return 0;
}

bool lm__sections_iterative(const lm_ctx *ctx)
{
    for (unsigned i = 0; i < ctx->nsections; i++)
        if (ctx->sections[i].ops.save_iterate)
            return true;
    return false;
}

/* Destination. */

static lm_section *find_section(lm_ctx *ctx, const char *name, unsigned *index)
{
    for (unsigned i = 0; i < ctx->nsections; i++)
        if (!strncmp(ctx->sections[i].name, name, LM_SECTION_NAME_MAX)) {
            *index = i;
            return &ctx->sections[i];
        }
    return NULL;
}

int lm__dest_on_section(lm_dest *d, const lm_frame *f)
{
    lm_ctx *ctx = d->ctx;
    /* Nothing larger than a part is read, and nothing at all for a
     * destination without sections. */
    if (f->length < LM_SECTION_HDR_SIZE || f->length - LM_SECTION_HDR_SIZE > LM_SECTION_MAX_PART) {
        char why[128];
        snprintf(why, sizeof(why), "SECTION is %u bytes: a %d-byte header and at most %u more",
                 f->length, LM_SECTION_HDR_SIZE, LM_SECTION_MAX_PART);
        return lm__dest_protocol_error(d, -EBADMSG, why);
    }
    if (!ctx->nsections)
        return lm_err_set(&ctx->err, -EPROTO,
                          "the source sends device-state sections, and this destination "
                          "registered none: register the same sections on both sides");
    uint8_t *body = NULL;
    int ret = lm__dest_read_body(d, f, &body);
    if (ret < 0)
        return ret;
    lm_section_hdr h;
    char why[160];
    unsigned i = 0;
    lm_section *sec = NULL;
    if ((ret = lm_section_hdr_decode(body, f->length, &h, why, sizeof(why))) < 0) {
        ret = lm__dest_protocol_error(d, ret, why);
    } else if (!(sec = find_section(ctx, h.name, &i))) {
        ret = lm_err_set(&ctx->err, -EPROTO,
                         "the source sends device-state section \"%s\", which this destination "
                         "has not registered: register the same sections on both sides",
                         h.name);
    } else if (h.version > sec->version) {
        ret = lm_err_set(&ctx->err, -EPROTO,
                         "device-state section \"%s\" is version %u on the source; this "
                         "destination loads up to version %u: upgrade it first",
                         h.name, h.version, sec->version);
    } else if (d->section_complete[i] && !(h.flags & LM_SECTION_COMPLETE)) {
        snprintf(why, sizeof(why), "device-state section \"%s\" sends a part after its last",
                 h.name);
        ret = lm__dest_protocol_error(d, -EPROTO, why);
    } else {
        bool complete = h.flags & LM_SECTION_COMPLETE;
        ret = sec->ops.load(sec->opaque, h.version, body + LM_SECTION_HDR_SIZE,
                            f->length - LM_SECTION_HDR_SIZE, complete);
        if (ret < 0)
            lm_err_set(&ctx->err, ret, "device-state section \"%s\": load failed", sec->name);
        else
            d->section_complete[i] = d->section_complete[i] || complete;
    }
    free(body);
    return ret;
}

int lm__dest_on_switchover_query(lm_dest *d, const lm_frame *f)
{
    if (f->length)
        return lm__dest_protocol_error(d, -EBADMSG, "SWITCHOVER_QUERY carries a body");
    lm_ctx *ctx = d->ctx;
    uint32_t pending = 0;
    for (unsigned i = 0; i < ctx->nsections; i++) {
        lm_section *sec = &ctx->sections[i];
        /* Ready once is ready (QEMU's switchover-ack is sent once). */
        if (sec->ops.switchover_ready && !d->section_ready[i])
            d->section_ready[i] = sec->ops.switchover_ready(sec->opaque);
        pending += sec->ops.switchover_ready && !d->section_ready[i];
    }
    uint8_t body[LM_SWITCHOVER_ACK_SIZE];
    lm_put_be32(body, pending);
    return lm__dest_send_locked(d, LM_MSG_SWITCHOVER_ACK, body, sizeof(body));
}

int lm__dest_sections_check_complete(lm_dest *d)
{
    lm_ctx *ctx = d->ctx;
    for (unsigned i = 0; i < ctx->nsections; i++)
        if (!d->section_complete[i])
            return lm_err_set(&ctx->err, -EPROTO,
                              "device-state section \"%s\" is registered here but the source "
                              "sent no state for it: register the same sections on both sides",
                              ctx->sections[i].name);
    return 0;
}
