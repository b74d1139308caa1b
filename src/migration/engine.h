/*
 * The engine context shared by the source and destination code. Fields are
 * grouped by who owns them:
 *   - set up before a migration by the embedding thread (blocks, guest ops),
 *   - owned by the migration thread while it runs (everything else),
 *   - shared with other threads: 'cancel' (atomic) and 'stats' (stats_lock).
 */
#ifndef LM_MIGRATION_ENGINE_H
#define LM_MIGRATION_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>

#include "livemig.h"
#include "util/bitmap.h"
#include "util/error.h"

typedef struct lm_block {
    uint32_t id;
    char name[LM_BLOCK_NAME_MAX];
    uint8_t *host;
    uint64_t len;
    uint64_t npages;
    unsigned flags;    /* LM_RAM_* */
    bool owned;        /* allocated by lm_incoming(), freed with the context */
    lm_word *received; /* destination: pages received at least once */
} lm_block;

struct lm_ctx {
    /* Set up by the embedder before a migration. */
    lm_block blocks[LM_MAX_BLOCKS];
    unsigned nblocks;
    lm_guest_ops gops;
    void *gopaque;
    uint64_t page_size;

    /* Shared. */
    _Atomic int cancel;
    _Atomic int postcopy_requested;
    _Atomic uint64_t io_progress_ns; /* shared by the migration's connections */
    pthread_mutex_t stats_lock;
    lm_stats stats;

    lm_err err;
};

/* Called with stats_lock held by the helpers below. */
void lm__stats_reset(lm_ctx *ctx, const char *status);
void lm__stats_set_status(lm_ctx *ctx, const char *status);
/* Publish a copy of the migration thread's working stats. */
void lm__stats_publish(lm_ctx *ctx, const lm_stats *working);

lm_block *lm__block_by_id(lm_ctx *ctx, uint32_t id);

/* 128-bit digest of all guest RAM, block by block in ascending id order,
 * defined over per-page hashes so that a page the kernel says was never
 * populated contributes the zero-page hash without being read. */
int lm__ram_digest(lm_ctx *ctx, uint8_t out[16], uint64_t *pages);
/* The same digest from per-page hashes already known (hashes[i] for
 * ctx->blocks[i], one per page): postcopy hashes each page as it is placed. */
int lm__digest(lm_ctx *ctx, uint64_t *const hashes[], uint8_t out[16], uint64_t *pages);
uint64_t lm__page_hash(const void *page, uint64_t page_size); /* NULL: a zero page */
uint64_t lm__zero_page_hash(uint64_t page_size);
void lm__digest_hex(const uint8_t d[16], char *out, size_t len);

#endif
