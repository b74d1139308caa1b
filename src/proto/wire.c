#include "proto/wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int reject(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int reject(char *why, size_t whylen, int code, const char *fmt, ...)
{
    if (whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *lm_msg_name(uint16_t type)
{
    static const char *const names[LM_MSG__COUNT] = {
        [LM_MSG_HELLO] = "HELLO",
        [LM_MSG_HELLO_ACK] = "HELLO_ACK",
        [LM_MSG_PAGES] = "PAGES",
        [LM_MSG_ROUND_END] = "ROUND_END",
        [LM_MSG_DEVICE_STATE] = "DEVICE_STATE",
        [LM_MSG_COMPLETE] = "COMPLETE",
        [LM_MSG_RESUMED] = "RESUMED",
        [LM_MSG_ERROR] = "ERROR",
        [LM_MSG_VERIFY] = "VERIFY",
        [LM_MSG_PING] = "PING",
        [LM_MSG_PONG] = "PONG",
        [LM_MSG_CHANNEL_HELLO] = "CHANNEL_HELLO",
        [LM_MSG_POSTCOPY_SWITCH] = "POSTCOPY_SWITCH",
        [LM_MSG_POSTCOPY_RUN] = "POSTCOPY_RUN",
        [LM_MSG_PAGE_REQUEST] = "PAGE_REQUEST",
        [LM_MSG_POSTCOPY_END] = "POSTCOPY_END",
        [LM_MSG_POSTCOPY_DONE] = "POSTCOPY_DONE",
        [LM_MSG_SWITCHOVER_READY] = "SWITCHOVER_READY",
        [LM_MSG_COMMIT] = "COMMIT",
        [LM_MSG_CONFIRMED] = "CONFIRMED",
        [LM_MSG_RECOVER_MAP] = "RECOVER_MAP",
        [LM_MSG_SECTION] = "SECTION",
        [LM_MSG_SWITCHOVER_QUERY] = "SWITCHOVER_QUERY",
        [LM_MSG_SWITCHOVER_ACK] = "SWITCHOVER_ACK",
        [LM_MSG_ZERO_RANGES] = "ZERO_RANGES",
        [LM_MSG_BUSY] = "BUSY",
    };
    return type < LM_MSG__COUNT && names[type] ? names[type] : "UNKNOWN";
}

/* Frame: magic u32 | version u16 | type u16 | length u32 | reserved u32 */
void lm_frame_encode(uint8_t out[LM_FRAME_HDR_SIZE], uint16_t type, uint32_t length)
{
    lm_put_be32(out, LM_WIRE_MAGIC);
    lm_put_be16(out + 4, LM_WIRE_VERSION);
    lm_put_be16(out + 6, type);
    lm_put_be32(out + 8, length);
    lm_put_be32(out + 12, 0);
}

int lm_frame_decode(const uint8_t in[LM_FRAME_HDR_SIZE], lm_frame *f, char *why, size_t whylen)
{
    uint32_t magic = lm_get_be32(in);
    if (magic != LM_WIRE_MAGIC)
        return reject(why, whylen, -EBADMSG,
                      "bad frame magic 0x%08x (expected 0x%08x): the peer is not livemig "
                      "or the stream is corrupt",
                      magic, LM_WIRE_MAGIC);
    uint16_t version = lm_get_be16(in + 4);
    if (version != LM_WIRE_VERSION)
        return reject(why, whylen, -EPROTO,
                      "protocol version %u, this livemig speaks %u: use the same "
                      "livemig release on both ends",
                      version, LM_WIRE_VERSION);
    uint16_t type = lm_get_be16(in + 6);
    if (type == 0 || type >= LM_MSG__COUNT)
        return reject(why, whylen, -EBADMSG, "unknown message type %u", type);
    uint32_t length = lm_get_be32(in + 8);
    if (length > LM_FRAME_MAX_LEN)
        return reject(why, whylen, -EBADMSG, "frame length %u exceeds the limit %u", length,
                      LM_FRAME_MAX_LEN);
    uint32_t reserved = lm_get_be32(in + 12);
    if (reserved)
        return reject(why, whylen, -EBADMSG, "reserved frame field is 0x%08x, must be 0", reserved);
    f->type = type;
    f->length = length;
    return 0;
}

/* Hello: page_size u32 | flags u32 | nblocks u32 | nchannels u32 |
 *        ram_total u64 | compress u32 | reserved u32 | uuid[16], then per
 *        block: id u32 | reserved u32 | len u64 | name[32], NUL-padded. */
size_t lm_hello_size(uint32_t nblocks)
{
    return LM_HELLO_FIXED_SIZE + (size_t)nblocks * LM_HELLO_BLOCK_SIZE;
}

void lm_hello_encode(const lm_hello *h, uint8_t *out)
{
    memset(out, 0, lm_hello_size(h->nblocks));
    lm_put_be32(out, h->page_size);
    lm_put_be32(out + 4, h->flags);
    lm_put_be32(out + 8, h->nblocks);
    lm_put_be32(out + 12, h->nchannels);
    lm_put_be64(out + 16, h->ram_total);
    lm_put_be32(out + 24, h->compress);
    memcpy(out + 32, h->uuid, 16);
    for (uint32_t i = 0; i < h->nblocks; i++) {
        uint8_t *b = out + LM_HELLO_FIXED_SIZE + (size_t)i * LM_HELLO_BLOCK_SIZE;
        lm_put_be32(b, h->blocks[i].id);
        lm_put_be64(b + 8, h->blocks[i].len);
        memcpy(b + 16, h->blocks[i].name, strnlen(h->blocks[i].name, LM_BLOCK_NAME_MAX - 1));
    }
}

int lm_hello_decode(const uint8_t *in, size_t len, lm_hello *h, char *why, size_t whylen)
{
    if (len < LM_HELLO_FIXED_SIZE)
        return reject(why, whylen, -EBADMSG, "HELLO of %zu bytes is truncated", len);
    memset(h, 0, sizeof(*h));
    h->page_size = lm_get_be32(in);
    h->flags = lm_get_be32(in + 4);
    h->nblocks = lm_get_be32(in + 8);
    h->nchannels = lm_get_be32(in + 12);
    h->ram_total = lm_get_be64(in + 16);
    h->compress = lm_get_be32(in + 24);
    memcpy(h->uuid, in + 32, 16);
    if (h->page_size < 4096 || h->page_size > (1u << 21) || (h->page_size & (h->page_size - 1)))
        return reject(why, whylen, -EBADMSG,
                      "HELLO page size %u is not a power of two "
                      "between 4 KiB and 2 MiB",
                      h->page_size);
    if (h->flags & ~LM_HELLO_KNOWN_FLAGS)
        return reject(why, whylen, -EBADMSG, "HELLO has unknown flags 0x%x", h->flags);
    if ((h->flags & LM_HELLO_NO_PREEMPT) && !(h->flags & LM_HELLO_POSTCOPY))
        return reject(why, whylen, -EBADMSG, "HELLO flag NO_PREEMPT without POSTCOPY");
    if ((h->flags & LM_HELLO_COMMITTED) && !(h->flags & LM_HELLO_RECOVER))
        return reject(why, whylen, -EBADMSG, "HELLO flag COMMITTED without RECOVER");
    if (lm_get_be32(in + 28))
        return reject(why, whylen, -EBADMSG, "HELLO reserved field is not zero");
    if (h->nchannels > LM_MAX_CHANNELS)
        return reject(why, whylen, -EBADMSG, "HELLO announces %u channels (at most %d)",
                      h->nchannels, LM_MAX_CHANNELS);
    if (h->compress >= LM_COMPRESSION__COUNT)
        return reject(why, whylen, -EBADMSG, "HELLO names unknown compression method %u",
                      h->compress);
    if (h->nblocks == 0 || h->nblocks > LM_MAX_BLOCKS)
        return reject(why, whylen, -EBADMSG, "HELLO announces %u RAM blocks (1..%d allowed)",
                      h->nblocks, LM_MAX_BLOCKS);
    if (len != lm_hello_size(h->nblocks))
        return reject(why, whylen, -EBADMSG, "HELLO is %zu bytes, %zu expected for %u blocks", len,
                      lm_hello_size(h->nblocks), h->nblocks);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < h->nblocks; i++) {
        const uint8_t *b = in + LM_HELLO_FIXED_SIZE + (size_t)i * LM_HELLO_BLOCK_SIZE;
        lm_wire_block *blk = &h->blocks[i];
        blk->id = lm_get_be32(b);
        blk->len = lm_get_be64(b + 8);
        if (lm_get_be32(b + 4))
            return reject(why, whylen, -EBADMSG, "HELLO block %u reserved field not zero", i);
        if (!blk->len || blk->len % h->page_size || blk->len > (1ull << 46))
            return reject(why, whylen, -EBADMSG, "HELLO block %u has invalid length %llu", i,
                          (unsigned long long)blk->len);
        if (!memchr(b + 16, '\0', LM_BLOCK_NAME_MAX))
            return reject(why, whylen, -EBADMSG, "HELLO block %u name is not terminated", i);
        memcpy(blk->name, b + 16, LM_BLOCK_NAME_MAX);
        /* Names as lm_ram_block_add takes them: 1-31 printable bytes, unique. */
        if (!blk->name[0])
            return reject(why, whylen, -EBADMSG, "HELLO block %u has no name", i);
        for (const char *c = blk->name; *c; c++)
            if (*c < 0x20 || *c > 0x7e)
                return reject(why, whylen, -EBADMSG, "HELLO block %u name has byte 0x%02x", i,
                              (unsigned char)*c);
        for (uint32_t j = 0; j < i; j++) {
            if (h->blocks[j].id == blk->id)
                return reject(why, whylen, -EBADMSG, "HELLO repeats block id %u", blk->id);
            if (!strcmp(h->blocks[j].name, blk->name))
                return reject(why, whylen, -EBADMSG, "HELLO repeats block name \"%s\"", blk->name);
        }
        sum += blk->len;
    }
    if (sum != h->ram_total)
        return reject(why, whylen, -EBADMSG, "HELLO RAM total %llu != sum of blocks %llu",
                      (unsigned long long)h->ram_total, (unsigned long long)sum);
    return 0;
}

/* Packet: magic u32 | version u32 | flags u32 | pages_alloc u32 | normal u32 |
 *         zero u32 | block u32 | reserved u32 | payload_size u64 |
 *         packet_num u64 | reserved u64 | reserved u64 */
void lm_packet_encode(const lm_packet_hdr *h, uint8_t out[LM_PACKET_HDR_SIZE])
{
    memset(out, 0, LM_PACKET_HDR_SIZE);
    lm_put_be32(out, LM_PACKET_MAGIC);
    lm_put_be32(out + 4, LM_PACKET_VERSION);
    lm_put_be32(out + 8, h->flags);
    lm_put_be32(out + 12, h->pages_alloc);
    lm_put_be32(out + 16, h->normal_pages);
    lm_put_be32(out + 20, h->zero_pages);
    lm_put_be32(out + 24, h->block_id);
    lm_put_be64(out + 32, h->payload_size);
    lm_put_be64(out + 40, h->packet_num);
}

int lm_packet_decode(const uint8_t in[LM_PACKET_HDR_SIZE], uint32_t page_size,
                     uint64_t compress_bound, lm_packet_hdr *h, char *why, size_t whylen)
{
    uint32_t magic = lm_get_be32(in), version = lm_get_be32(in + 4);
    if (magic != LM_PACKET_MAGIC)
        return reject(why, whylen, -EBADMSG, "bad packet magic 0x%08x", magic);
    if (version != LM_PACKET_VERSION)
        return reject(why, whylen, -EPROTO, "packet version %u, expected %u", version,
                      LM_PACKET_VERSION);
    h->flags = lm_get_be32(in + 8);
    h->pages_alloc = lm_get_be32(in + 12);
    h->normal_pages = lm_get_be32(in + 16);
    h->zero_pages = lm_get_be32(in + 20);
    h->block_id = lm_get_be32(in + 24);
    h->payload_size = lm_get_be64(in + 32);
    h->packet_num = lm_get_be64(in + 40);
    if (h->flags & ~LM_PACKET_KNOWN_FLAGS)
        return reject(why, whylen, -EBADMSG, "packet has unknown flags 0x%x", h->flags);
    if (lm_get_be32(in + 28) || lm_get_be64(in + 48) || lm_get_be64(in + 56))
        return reject(why, whylen, -EBADMSG, "packet reserved fields are not zero");
    if (h->pages_alloc == 0 || h->pages_alloc > LM_PACKET_MAX_PAGES)
        return reject(why, whylen, -EBADMSG, "packet pages_alloc %u (1..%d allowed)",
                      h->pages_alloc, LM_PACKET_MAX_PAGES);
    /* Compared in 64 bits so that two large counts cannot wrap. */
    if ((uint64_t)h->normal_pages + h->zero_pages > h->pages_alloc)
        return reject(why, whylen, -EBADMSG,
                      "packet counts %u normal + %u zero exceed "
                      "pages_alloc %u",
                      h->normal_pages, h->zero_pages, h->pages_alloc);
    if (h->flags & LM_PACKET_FLAG_SYNC) {
        if (h->flags != LM_PACKET_FLAG_SYNC || h->normal_pages || h->zero_pages || h->payload_size)
            return reject(why, whylen, -EBADMSG, "SYNC packet carries pages or flags");
        return 0;
    }
    if (h->flags & LM_PACKET_FLAG_COMPRESSED) {
        if (!compress_bound)
            return reject(why, whylen, -EBADMSG,
                          "compressed packet, but no compression was "
                          "negotiated");
        if (!h->normal_pages || !h->payload_size || h->payload_size > compress_bound)
            return reject(why, whylen, -EBADMSG,
                          "compressed payload of %llu bytes for %u "
                          "pages (1..%llu allowed)",
                          (unsigned long long)h->payload_size, h->normal_pages,
                          (unsigned long long)compress_bound);
        return 0;
    }
    if (h->payload_size != (uint64_t)h->normal_pages * page_size)
        return reject(why, whylen, -EBADMSG,
                      "packet payload %llu bytes, %u normal pages "
                      "need %llu",
                      (unsigned long long)h->payload_size, h->normal_pages,
                      (unsigned long long)h->normal_pages * page_size);
    return 0;
}

int lm_packet_check_offset(uint64_t offset, uint64_t block_len, uint32_t page_size, char *why,
                           size_t whylen)
{
    if (offset % page_size)
        return reject(why, whylen, -EBADMSG, "page offset 0x%llx is not page aligned",
                      (unsigned long long)offset);
    if (offset >= block_len)
        return reject(why, whylen, -EBADMSG,
                      "page offset 0x%llx is outside the block "
                      "(%llu bytes)",
                      (unsigned long long)offset, (unsigned long long)block_len);
    return 0;
}

/* Channel hello: uuid[16] | channel u32 | reserved u32 */
void lm_channel_hello_encode(const lm_channel_hello *c, uint8_t out[LM_CHANNEL_HELLO_SIZE])
{
    memset(out, 0, LM_CHANNEL_HELLO_SIZE);
    memcpy(out, c->uuid, 16);
    lm_put_be32(out + 16, c->channel);
}

int lm_channel_hello_decode(const uint8_t *in, size_t len, lm_channel_hello *c, char *why,
                            size_t whylen)
{
    if (len != LM_CHANNEL_HELLO_SIZE)
        return reject(why, whylen, -EBADMSG, "CHANNEL_HELLO is %zu bytes, expected %d", len,
                      LM_CHANNEL_HELLO_SIZE);
    if (lm_get_be32(in + 20))
        return reject(why, whylen, -EBADMSG, "CHANNEL_HELLO reserved field is not zero");
    memcpy(c->uuid, in, 16);
    c->channel = lm_get_be32(in + 16);
    return 0;
}

/* Verify: pages u64 | digest[16] | reserved u64 */
void lm_verify_encode(const lm_verify_msg *v, uint8_t out[LM_VERIFY_SIZE])
{
    memset(out, 0, LM_VERIFY_SIZE);
    lm_put_be64(out, v->pages);
    memcpy(out + 8, v->digest, 16);
}

int lm_verify_decode(const uint8_t *in, size_t len, lm_verify_msg *v, char *why, size_t whylen)
{
    if (len != LM_VERIFY_SIZE)
        return reject(why, whylen, -EBADMSG, "VERIFY is %zu bytes, expected %d", len,
                      LM_VERIFY_SIZE);
    if (lm_get_be64(in + 24))
        return reject(why, whylen, -EBADMSG, "VERIFY reserved field is not zero");
    v->pages = lm_get_be64(in);
    memcpy(v->digest, in + 8, 16);
    return 0;
}

/* Resumed: status i32 | verified u32 | verify_time_us u64 */
void lm_resumed_encode(const lm_resumed *r, uint8_t out[LM_RESUMED_SIZE])
{
    lm_put_be32(out, (uint32_t)r->status);
    lm_put_be32(out + 4, r->verified);
    lm_put_be64(out + 8, r->verify_time_us);
}

int lm_resumed_decode(const uint8_t *in, size_t len, lm_resumed *r, char *why, size_t whylen)
{
    if (len != LM_RESUMED_SIZE)
        return reject(why, whylen, -EBADMSG, "RESUMED is %zu bytes, expected %d", len,
                      LM_RESUMED_SIZE);
    r->status = (int32_t)lm_get_be32(in);
    r->verified = lm_get_be32(in + 4);
    r->verify_time_us = lm_get_be64(in + 8);
    if (r->verified > 2 || r->status > 0 || r->status < -4095)
        return reject(why, whylen, -EBADMSG, "RESUMED has invalid fields");
    return 0;
}

void lm_section_hdr_encode(const lm_section_hdr *h, uint8_t out[LM_SECTION_HDR_SIZE])
{
    memset(out, 0, LM_SECTION_NAME_MAX);
    memcpy(out, h->name, strnlen(h->name, LM_SECTION_NAME_MAX - 1));
    lm_put_be32(out + 32, h->version);
    lm_put_be32(out + 36, h->flags);
}

int lm_section_hdr_decode(const uint8_t *in, size_t len, lm_section_hdr *h, char *why,
                          size_t whylen)
{
    if (len < LM_SECTION_HDR_SIZE)
        return reject(why, whylen, -EBADMSG,
                      "SECTION is %zu bytes, shorter than its %d-byte header", len,
                      LM_SECTION_HDR_SIZE);
    size_t n = strnlen((const char *)in, LM_SECTION_NAME_MAX);
    if (n == 0 || n == LM_SECTION_NAME_MAX)
        return reject(why, whylen, -EBADMSG, "SECTION's name is %s",
                      n ? "not terminated" : "empty");
    for (size_t i = n; i < LM_SECTION_NAME_MAX; i++)
        if (in[i])
            return reject(why, whylen, -EBADMSG, "SECTION's name is not NUL-padded");
    for (size_t i = 0; i < n; i++)
        if (in[i] < 0x20 || in[i] > 0x7e)
            return reject(why, whylen, -EBADMSG, "SECTION's name has byte 0x%02x", in[i]);
    memcpy(h->name, in, LM_SECTION_NAME_MAX);
    h->version = lm_get_be32(in + 32);
    h->flags = lm_get_be32(in + 36);
    if (h->version == 0)
        return reject(why, whylen, -EBADMSG, "SECTION \"%s\" has version 0", h->name);
    if (h->flags & ~(uint32_t)LM_SECTION_COMPLETE)
        return reject(why, whylen, -EBADMSG, "SECTION \"%s\" has unknown flags 0x%x", h->name,
                      h->flags);
    if (len - LM_SECTION_HDR_SIZE > LM_SECTION_MAX_PART)
        return reject(why, whylen, -EBADMSG,
                      "SECTION \"%s\" carries %zu bytes, more than a part may (%u)", h->name,
                      len - LM_SECTION_HDR_SIZE, LM_SECTION_MAX_PART);
    return 0;
}

/* Page request: block u32 | reserved u32 | offset u64 */
void lm_page_request_encode(const lm_page_request *r, uint8_t out[LM_PAGE_REQUEST_SIZE])
{
    lm_put_be32(out, r->block_id);
    lm_put_be32(out + 4, 0);
    lm_put_be64(out + 8, r->offset);
}

int lm_page_request_decode(const uint8_t *in, size_t len, lm_page_request *r, char *why,
                           size_t whylen)
{
    if (len != LM_PAGE_REQUEST_SIZE)
        return reject(why, whylen, -EBADMSG, "PAGE_REQUEST of %zu bytes, expected %d", len,
                      LM_PAGE_REQUEST_SIZE);
    if (lm_get_be32(in + 4))
        return reject(why, whylen, -EBADMSG, "PAGE_REQUEST with reserved bits set");
    r->block_id = lm_get_be32(in);
    r->offset = lm_get_be64(in + 8);
    return 0;
}

size_t lm_switch_block_size(uint64_t npages)
{
    return LM_SWITCH_BLOCK_HDR + 8 * (size_t)((npages + 63) / 64);
}

uint8_t *lm_switch_block_encode(uint8_t *out, uint32_t id, uint64_t npages, const uint64_t *words)
{
    lm_put_be32(out, id);
    lm_put_be32(out + 4, 0);
    lm_put_be64(out + 8, npages);
    out += LM_SWITCH_BLOCK_HDR;
    for (uint64_t w = 0; w < (npages + 63) / 64; w++, out += 8)
        lm_put_be64(out, words[w]);
    return out;
}

long lm_switch_block_decode(const uint8_t *in, size_t len, uint32_t id, uint64_t npages,
                            uint64_t *words, char *why, size_t whylen)
{
    size_t need = lm_switch_block_size(npages);
    if (len < need)
        return reject(why, whylen, -EBADMSG, "its size does not match the RAM layout");
    if (lm_get_be32(in) != id || lm_get_be64(in + 8) != npages || lm_get_be32(in + 4))
        return reject(why, whylen, -EBADMSG, "a block does not match the RAM layout");
    uint64_t nwords = (npages + 63) / 64;
    for (uint64_t w = 0; w < nwords; w++)
        words[w] = lm_get_be64(in + LM_SWITCH_BLOCK_HDR + 8 * w);
    if (npages % 64 && words[nwords - 1] >> (npages % 64))
        return reject(why, whylen, -EBADMSG, "bits beyond the end of a block are set");
    return (long)need;
}

size_t lm_zero_ranges_size(uint32_t count)
{
    return LM_ZERO_RANGES_HDR + (size_t)count * LM_ZERO_RANGE_SIZE;
}

void lm_zero_ranges_encode(uint32_t block_id, const lm_zero_range *r, uint32_t count, uint8_t *out)
{
    lm_put_be32(out, block_id);
    lm_put_be32(out + 4, count);
    out += LM_ZERO_RANGES_HDR;
    for (uint32_t i = 0; i < count; i++, out += LM_ZERO_RANGE_SIZE) {
        lm_put_be64(out, r[i].first);
        lm_put_be64(out + 8, r[i].npages);
    }
}

int lm_zero_ranges_decode_hdr(const uint8_t *in, size_t len, uint32_t *block_id, uint32_t *count,
                              char *why, size_t whylen)
{
    if (len < LM_ZERO_RANGES_HDR)
        return reject(why, whylen, -EBADMSG, "ZERO_RANGES of %zu bytes, shorter than its header",
                      len);
    uint32_t n = lm_get_be32(in + 4);
    if (n == 0 || n > LM_ZERO_RANGES_MAX)
        return reject(why, whylen, -EBADMSG, "ZERO_RANGES with %u ranges (1 to %d allowed)", n,
                      LM_ZERO_RANGES_MAX);
    if (len != lm_zero_ranges_size(n))
        return reject(why, whylen, -EBADMSG, "ZERO_RANGES of %zu bytes, its %u ranges need %zu",
                      len, n, lm_zero_ranges_size(n));
    *block_id = lm_get_be32(in);
    *count = n;
    return 0;
}

int lm_zero_ranges_decode(const uint8_t *in, uint32_t count, uint64_t npages, lm_zero_range *out,
                          char *why, size_t whylen)
{
    uint64_t end = 0;
    in += LM_ZERO_RANGES_HDR;
    for (uint32_t i = 0; i < count; i++, in += LM_ZERO_RANGE_SIZE) {
        uint64_t first = lm_get_be64(in), n = lm_get_be64(in + 8);
        if (n == 0)
            return reject(why, whylen, -EBADMSG, "ZERO_RANGES range %u is empty", i);
        /* Written so that no sum can wrap. */
        if (first >= npages || n > npages - first)
            return reject(why, whylen, -EBADMSG,
                          "ZERO_RANGES range %u (pages %llu+%llu) is outside the block's %llu "
                          "pages",
                          i, (unsigned long long)first, (unsigned long long)n,
                          (unsigned long long)npages);
        if (i && first < end)
            return reject(why, whylen, -EBADMSG,
                          "ZERO_RANGES range %u starts at page %llu, before the end of the one "
                          "before it",
                          i, (unsigned long long)first);
        out[i] = (lm_zero_range){first, n};
        end = first + n;
    }
    return 0;
}
