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

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef enum lm_compress_method {
    LM_COMPRESS_NONE = 0,
    LM_COMPRESS_ZLIB = 1,
    LM_COMPRESS_ZSTD = 2,
    LM_COMPRESS_LZ4 = 3,
    LM_COMPRESS__COUNT
} lm_compress_method;

typedef struct lm_compress_ops {
    const char *name;
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

/* The table for m, NULL for LM_COMPRESS_NONE or an unknown value. Tables are
 * static const, registered in a fixed array indexed by the enum. */
const lm_compress_ops *lm_compress_get(lm_compress_method m);
/* "none", "zlib", "zstd", "lz4" -> method; -EINVAL otherwise. */
int lm_compress_parse(const char *name, lm_compress_method *m);
/* The name parse accepts; "unknown" for a value outside the enum. */
const char *lm_compress_name(lm_compress_method m);
/* Largest compressed payload for max_pages pages: the sender's buffer size
 * and the receiver's limit on payload_size. For NONE: max_pages*page_size.
 * 0 for an unknown method or a size that overflows. */
size_t lm_compress_bound(lm_compress_method m, unsigned max_pages, size_t page_size);

/* ---- internal: one table and bound per method (compress_<method>.c) ------ */

extern const lm_compress_ops lm_compress_zlib_ops;
extern const lm_compress_ops lm_compress_zstd_ops;
extern const lm_compress_ops lm_compress_lz4_ops;

/* Bound on one packet's payload for src_len uncompressed bytes; 0 if src_len
 * is beyond what the method supports. */
size_t lm__compress_zlib_bound(size_t src_len);
size_t lm__compress_zstd_bound(size_t src_len);
size_t lm__compress_lz4_bound(size_t src_len);

#endif
