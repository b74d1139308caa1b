/*
 * The wire protocol (docs/PROTOCOL.md). Every integer is big-endian. The
 * main connection carries frames: a 16-byte header, then 'length' bytes of
 * body. Page data travels in packets (a packet header, the offset
 * array with normal pages first and zero pages after, then the payload of the
 * normal pages only); on the main connection a packet is the body of a PAGES
 * frame. Decoders validate every field before anything uses it.
 */
#ifndef LM_PROTO_WIRE_H
#define LM_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "livemig.h"

#define LM_WIRE_MAGIC     0x4C4D4947u /* "LMIG" */
#define LM_WIRE_VERSION   5
#define LM_FRAME_HDR_SIZE 16
#define LM_FRAME_MAX_LEN  (64u << 20)

#define LM_PACKET_MAGIC     0x4C4D504Bu /* "LMPK" */
#define LM_PACKET_VERSION   1
#define LM_PACKET_HDR_SIZE  64
#define LM_PACKET_MAX_PAGES 128

#define LM_HELLO_FIXED_SIZE    48
#define LM_CHANNEL_HELLO_SIZE  24
#define LM_MAX_CHANNELS        LM_MAX_MULTIFD_CHANNELS
#define LM_HELLO_BLOCK_SIZE    48
#define LM_VERIFY_SIZE         32
#define LM_RESUMED_SIZE        16
#define LM_ERROR_MAX_TEXT      1024
#define LM_PAGE_REQUEST_SIZE   16
#define LM_SWITCH_BLOCK_HDR    16
#define LM_SECTION_HDR_SIZE    40
#define LM_SWITCHOVER_ACK_SIZE 4
#define LM_ZERO_RANGES_HDR     8
#define LM_ZERO_RANGE_SIZE     16
#define LM_ZERO_RANGES_MAX     4096 /* ranges in one ZERO_RANGES frame */

typedef enum lm_msg_type {
    LM_MSG_HELLO = 1,        /* source -> destination: version, page size, RAM layout */
    LM_MSG_HELLO_ACK,        /* destination -> source: layout accepted */
    LM_MSG_PAGES,            /* a page packet */
    LM_MSG_ROUND_END,        /* the end of a precopy round */
    LM_MSG_DEVICE_STATE,     /* opaque guest device state */
    LM_MSG_COMPLETE,         /* every page and the device state are sent */
    LM_MSG_RESUMED,          /* destination -> source: outcome of the switchover */
    LM_MSG_ERROR,            /* either way: errno and a sentence, then close */
    LM_MSG_VERIFY,           /* after COMPLETE when verifying: the source's digest */
    LM_MSG_PING,             /* asks the destination to confirm it caught up */
    LM_MSG_PONG,             /* destination -> source: everything before PING is processed */
    LM_MSG_CHANNEL_HELLO,    /* first frame on a multifd channel: migration uuid, channel id */
    LM_MSG_POSTCOPY_SWITCH,  /* the pages the destination must still receive */
    LM_MSG_POSTCOPY_RUN,     /* resume the guest now */
    LM_MSG_PAGE_REQUEST,     /* destination -> source: a vCPU waits on this page */
    LM_MSG_POSTCOPY_END,     /* every needed page has been sent */
    LM_MSG_POSTCOPY_DONE,    /* destination -> source: every page placed (RESUMED body) */
    LM_MSG_SWITCHOVER_READY, /* destination -> source: it can run the guest and waits for the
                                commit (RESUMED body: the verdict; its guest is still stopped) */
    LM_MSG_COMMIT,           /* source -> destination: the commit point; run the guest */
    LM_MSG_CONFIRMED,        /* source -> destination: RESUMED heard; nothing more follows */
    LM_MSG_RECOVER_MAP,      /* destination -> source, postcopy recovery: the pages it still
                                lacks (POSTCOPY_SWITCH's layout) */
    LM_MSG_SECTION,          /* a part of a device-state section (version 4) */
    LM_MSG_SWITCHOVER_QUERY, /* may the source switch over? (switchover-ack, version 4) */
    LM_MSG_SWITCHOVER_ACK,   /* destination -> source: how many sections are not ready */
    LM_MSG_ZERO_RANGES,      /* runs of zero pages of one block, a range each (version 5) */
    LM_MSG_BUSY,             /* destination -> source, empty: still applying what came (a long
                                run of zero pages it must read or clear); resets the wait */
    LM_MSG__COUNT
} lm_msg_type;

typedef struct lm_frame {
    uint16_t type;
    uint32_t length;
} lm_frame;

/* Hello flags. */
enum {
    LM_HELLO_VERIFY = 1u << 0,
    LM_HELLO_POSTCOPY = 1u << 1,   /* a preempt connection follows the channels */
    LM_HELLO_NO_PREEMPT = 1u << 2, /* with POSTCOPY: urgent pages on the main connection */
    LM_HELLO_RECOVER = 1u << 3,    /* reconnects the paused migration named by the uuid */
    LM_HELLO_COMMITTED = 1u << 4,  /* with RECOVER: the source sent its commit (COMMIT or
                                      POSTCOPY_RUN) and will never run its copy again */
};
#define LM_HELLO_KNOWN_FLAGS                                                                       \
    (LM_HELLO_VERIFY | LM_HELLO_POSTCOPY | LM_HELLO_NO_PREEMPT | LM_HELLO_RECOVER |                \
     LM_HELLO_COMMITTED)

typedef struct lm_wire_block {
    uint32_t id;
    uint64_t len;
    char name[LM_BLOCK_NAME_MAX];
} lm_wire_block;

typedef struct lm_hello {
    uint32_t page_size;
    uint32_t flags;
    uint32_t nblocks;
    uint32_t nchannels; /* multifd channels that will connect (0: one stream) */
    uint32_t compress;  /* compression method for page payloads */
    uint8_t uuid[16];   /* names this migration to its channels */
    uint64_t ram_total;
    lm_wire_block blocks[LM_MAX_BLOCKS];
} lm_hello;

/* Packet flags. */
enum {
    LM_PACKET_FLAG_SYNC = 1u << 0,       /* no pages: the end of a round on this channel */
    LM_PACKET_FLAG_COMPRESSED = 1u << 1, /* payload compressed with the HELLO's method */
};
#define LM_PACKET_KNOWN_FLAGS (LM_PACKET_FLAG_SYNC | LM_PACKET_FLAG_COMPRESSED)

typedef struct lm_channel_hello {
    uint8_t uuid[16];
    uint32_t channel;
} lm_channel_hello;

typedef struct lm_packet_hdr {
    uint32_t flags;
    uint32_t pages_alloc;
    uint32_t normal_pages;
    uint32_t zero_pages;
    uint32_t block_id;
    uint64_t payload_size;
    uint64_t packet_num;
} lm_packet_hdr;

typedef struct lm_verify_msg {
    uint64_t pages; /* pages hashed into the digest */
    uint8_t digest[16];
} lm_verify_msg;

typedef struct lm_resumed {
    int32_t status;    /* 0, or an errno when the destination refused */
    uint32_t verified; /* 0 not asked, 1 match, 2 mismatch */
    uint64_t verify_time_us;
} lm_resumed;

/* SECTION flags. */
enum {
    LM_SECTION_COMPLETE = 1u << 0, /* save_complete's part, sent with the guest stopped */
};

/* SECTION body: name[32] (NUL-padded, terminated) | version u32 | flags
 * u32, then the part's bytes. */
typedef struct lm_section_hdr {
    char name[LM_SECTION_NAME_MAX];
    uint32_t version;
    uint32_t flags;
} lm_section_hdr;

/* A run of zero pages: npages pages from page index first. */
typedef struct lm_zero_range {
    uint64_t first;
    uint64_t npages;
} lm_zero_range;

typedef struct lm_page_request {
    uint32_t block_id;
    uint64_t offset; /* byte offset of the page in the block */
} lm_page_request;

static inline void lm_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void lm_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline void lm_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint16_t lm_get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t lm_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t lm_get_be64(const uint8_t *p)
{
    return (uint64_t)lm_get_be32(p) << 32 | lm_get_be32(p + 4);
}

const char *lm_msg_name(uint16_t type);

/* Each decoder returns 0, or -EBADMSG (-EPROTO for a version mismatch) with
 * a sentence in why. */
void lm_frame_encode(uint8_t out[LM_FRAME_HDR_SIZE], uint16_t type, uint32_t length);
int lm_frame_decode(const uint8_t in[LM_FRAME_HDR_SIZE], lm_frame *f, char *why, size_t whylen);

/* Returns the encoded size (LM_HELLO_FIXED_SIZE + nblocks * LM_HELLO_BLOCK_SIZE). */
size_t lm_hello_size(uint32_t nblocks);
void lm_hello_encode(const lm_hello *h, uint8_t *out);
int lm_hello_decode(const uint8_t *in, size_t len, lm_hello *h, char *why, size_t whylen);

void lm_packet_encode(const lm_packet_hdr *h, uint8_t out[LM_PACKET_HDR_SIZE]);
/* Checks the header against itself and the page size; the caller checks
 * the block id and the offsets (lm_packet_check_offset). compress_bound is
 * the largest compressed payload accepted, 0 when no compression was
 * negotiated (then a compressed packet is rejected). */
int lm_packet_decode(const uint8_t in[LM_PACKET_HDR_SIZE], uint32_t page_size,
                     uint64_t compress_bound, lm_packet_hdr *h, char *why, size_t whylen);
int lm_packet_check_offset(uint64_t offset, uint64_t block_len, uint32_t page_size, char *why,
                           size_t whylen);

void lm_channel_hello_encode(const lm_channel_hello *c, uint8_t out[LM_CHANNEL_HELLO_SIZE]);
int lm_channel_hello_decode(const uint8_t *in, size_t len, lm_channel_hello *c, char *why,
                            size_t whylen);
void lm_verify_encode(const lm_verify_msg *v, uint8_t out[LM_VERIFY_SIZE]);
int lm_verify_decode(const uint8_t *in, size_t len, lm_verify_msg *v, char *why, size_t whylen);
void lm_page_request_encode(const lm_page_request *r, uint8_t out[LM_PAGE_REQUEST_SIZE]);
/* Checks the layout only; the caller checks block and offset. */
int lm_page_request_decode(const uint8_t *in, size_t len, lm_page_request *r, char *why,
                           size_t whylen);

/* POSTCOPY_SWITCH body: for each block in the sender's order, a header (id
 * u32 | reserved u32 | npages u64) and ceil(npages / 64) bitmap words. */
size_t lm_switch_block_size(uint64_t npages);
/* Writes one block's part at out; returns the byte after it. */
uint8_t *lm_switch_block_encode(uint8_t *out, uint32_t id, uint64_t npages, const uint64_t *words);
/* Reads one block's part from in[0..len), which must name block id with
 * npages pages; fills words. Returns the bytes consumed, or -EBADMSG. */
long lm_switch_block_decode(const uint8_t *in, size_t len, uint32_t id, uint64_t npages,
                            uint64_t *words, char *why, size_t whylen);

void lm_section_hdr_encode(const lm_section_hdr *h, uint8_t out[LM_SECTION_HDR_SIZE]);
/* Checks the header (a terminated, printable name, a version, known flags)
 * of a body of len bytes. */
int lm_section_hdr_decode(const uint8_t *in, size_t len, lm_section_hdr *h, char *why,
                          size_t whylen);

/* ZERO_RANGES body: block_id u32 | count u32, then count ranges of
 * first u64 | npages u64, ascending and apart. */
size_t lm_zero_ranges_size(uint32_t count);
void lm_zero_ranges_encode(uint32_t block_id, const lm_zero_range *r, uint32_t count, uint8_t *out);
/* Reads the header of a body of len bytes: the block and how many ranges
 * follow (1..LM_ZERO_RANGES_MAX, exactly filling len). */
int lm_zero_ranges_decode_hdr(const uint8_t *in, size_t len, uint32_t *block_id, uint32_t *count,
                              char *why, size_t whylen);
/* Reads the count ranges after the header into out, each checked against
 * a block of npages pages: not empty, inside it, after the one before. */
int lm_zero_ranges_decode(const uint8_t *in, uint32_t count, uint64_t npages, lm_zero_range *out,
                          char *why, size_t whylen);

void lm_resumed_encode(const lm_resumed *r, uint8_t out[LM_RESUMED_SIZE]);
int lm_resumed_decode(const uint8_t *in, size_t len, lm_resumed *r, char *why, size_t whylen);

#endif
