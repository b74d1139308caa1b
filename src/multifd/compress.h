/*
 * Compression methods for the multifd channels. A method is a table of
 * operations (lm_compress_ops); the engine looks it up with lm_compress_get().
 *
 * Each channel thread owns one compressor state on the source and one
 * decompressor state on the destination. Packets on one channel are
 * compressed and decompressed in the same order, so the states are STREAMING
 * contexts: the dictionary (history window) carries over from packet to
 * packet within a channel. Consequences for the engine:
 *   - packet k can only be decompressed after packets 0..k-1 of the same
 *     channel, by the same recv state, in order;
 *   - a payload is self-delimiting only together with its length: the
 *     receiver must pass exactly the payload_size bytes the sender produced;
 *   - after any failed compress or decompress the state is unusable (the
 *     stream is out of step): abort the migration, do not retry the packet.
 *
 * The formats carry no checksum: a payload that is structurally invalid, or
 * that decodes to a size other than n pages, is rejected, but a flipped
 * literal byte may decode "successfully" to wrong page contents. Integrity
 * against corruption is the transport's (TCP) and the RAM digest's job; what
 * decompress does guarantee is that no input, however malformed, makes it
 * write outside pages[0..n) or read outside in[0..len).
 *
 * Threading: the functions of one state are called from one thread at a
 * time; different states are independent. lm_compress_get/parse/name/bound
 * are pure and thread-safe.
 */
#ifndef LM_MULTIFD_COMPRESS_H
#define LM_MULTIFD_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livemig.h"
#include "util/error.h"

typedef struct lm_compress_ops {
    const char *name; /* as the user spells it: lm_compression_name() reads it here */
    /* Largest payload for src_len uncompressed bytes; 0 if src_len is
     * beyond what the method supports. */
    size_t (*bound)(size_t src_len);
    /* Source, once per channel: allocate *state for packets of at most
     * max_pages pages of page_size bytes. 0, or -errno with a message
     * (-EINVAL for sizes the method cannot handle, -ENOMEM). */
    int (*send_setup)(void **state, unsigned max_pages, size_t page_size, lm_err *err);
    /* Compress n (1..max_pages) pages, given as pointers (they are guest RAM,
     * may be concurrently modified by the guest: must not crash or misbehave,
     * the data just ends up whatever was read), into out[0..cap) where
     * cap >= lm_compress_bound(). Sets *outlen. Returns 0 or -errno with a
     * message (-EINVAL for n out of range, -ENOBUFS if cap is too small). */
    int (*compress)(void *state, uint8_t *const pages[], unsigned n, uint8_t *out, size_t cap,
                    size_t *outlen, lm_err *err);
    /* Frees the state; NULL is allowed. */
    void (*send_cleanup)(void *state);
    /* Destination, once per channel. */
    int (*recv_setup)(void **state, unsigned max_pages, size_t page_size, lm_err *err);
    /* Decompress in[0..len) into exactly n pages (pages[i] each page_size
     * bytes, distinct, page aligned). A payload that is corrupt, or decodes to
     * fewer or more than n*page_size bytes, is rejected with -EBADMSG and a
     * message naming the method ("zstd payload corrupt: ..."); it must never
     * write outside pages[0..n) and never read outside in[0..len). On
     * rejection the pages may hold partial output (zlib, zstd decode straight
     * into them; lz4 leaves them untouched). -EINVAL for n out of range,
     * -ENOMEM if the library runs out of memory. */
    int (*decompress)(void *state, const uint8_t *in, size_t len, uint8_t *const pages[],
                      unsigned n, lm_err *err);
    /* Frees the state; NULL is allowed. */
    void (*recv_cleanup)(void *state);
} lm_compress_ops;

/* The table for m, NULL for LM_COMPRESSION_NONE (pages go raw) or an unknown
 * value. Tables are static const, registered in one array indexed by the
 * enum, which also holds every method's name (lm_compression_name() and
 * lm_compression_parse() in the public header read it). */
const lm_compress_ops *lm_compress_get(lm_compression m);
/* Largest compressed payload for max_pages pages: the sender's buffer size
 * and the receiver's limit on payload_size. For NONE: max_pages*page_size.
 * 0 for an unknown method or a size that overflows. */
size_t lm_compress_bound(lm_compression m, unsigned max_pages, size_t page_size);

/* One channel's end of a compressed stream: the method's state and the
 * buffer that holds one packet's payload (LM_PACKET_MAX_PAGES pages). The
 * sending and the receiving channel set it up the same way. */
typedef struct lm_codec {
    const lm_compress_ops *ops; /* NULL: no compression */
    bool send;
    void *state;
    uint8_t *buf;
    size_t cap;
} lm_codec;

/* 0 with *c ready (nothing allocated for NONE), or -errno with a message
 * naming the channel. */
int lm_codec_init(lm_codec *c, lm_compression m, bool send, unsigned max_pages, size_t page_size,
                  unsigned channel, lm_err *err);
void lm_codec_cleanup(lm_codec *c);

/* ---- internal: one table per method (compress_<method>.c) ------ */

extern const lm_compress_ops lm_compress_zlib_ops;
extern const lm_compress_ops lm_compress_zstd_ops;
extern const lm_compress_ops lm_compress_lz4_ops;

#endif
