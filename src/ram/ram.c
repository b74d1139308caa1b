/* The block list and the receivedmap: see ram.h. */
#include "ram/ram.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/parse.h"

void lm__ram_init(lm_ram *ram, uint64_t page_size)
{
    memset(ram, 0, sizeof(*ram));
    ram->page_size = page_size;
}

void lm__ram_release(lm_ram *ram)
{
    for (unsigned i = 0; i < ram->nblocks; i++) {
        lm_block *b = &ram->blocks[i];
        lm_bitmap_free(b->received);
        b->received = NULL;
        if (b->owned)
            lm_ram_free(b->host, b->len);
    }
    ram->nblocks = 0;
}

/* A block's name says which block it is on both sides (the destination
 * matches by it), so it is never cut short or left empty, and it goes to
 * terminals and JSON: printable ASCII only. */
static int name_check(const lm_ram *ram, uint32_t id, const char *name, lm_err *err)
{
    char why[96];
    if (lm_name_check(name, LM_BLOCK_NAME_MAX, why, sizeof(why)) < 0)
        return lm_err_set(err, -EINVAL,
                          "RAM block %u %s: give each block a name of 1 to %d "
                          "printable bytes",
                          id, why, LM_BLOCK_NAME_MAX - 1);
    for (unsigned i = 0; i < ram->nblocks; i++)
        if (!strcmp(ram->blocks[i].name, name))
            return lm_err_set(err, -EEXIST, "RAM block name \"%s\" is already registered (id %u)",
                              name, ram->blocks[i].id);
    return 0;
}

int lm__ram_add(lm_ram *ram, uint32_t id, const char *name, void *host, uint64_t len,
                unsigned flags, lm_err *err)
{
    if (ram->nblocks >= LM_MAX_BLOCKS)
        return lm_err_set(err, -E2BIG, "at most %d RAM blocks", LM_MAX_BLOCKS);
    if (!host || !len || len % ram->page_size || (uintptr_t)host % ram->page_size)
        return lm_err_set(err, -EINVAL,
                          "RAM block %u must be page aligned and a "
                          "non-zero multiple of %llu bytes",
                          id, (unsigned long long)ram->page_size);
    if (lm__ram_find(ram, id))
        return lm_err_set(err, -EEXIST, "RAM block id %u is already registered", id);
    int ret = name_check(ram, id, name, err);
    if (ret < 0)
        return ret;
    lm_block *b = &ram->blocks[ram->nblocks];
    memset(b, 0, sizeof(*b));
    b->id = id;
    memcpy(b->name, name, strlen(name) + 1);
    b->host = host;
    b->len = len;
    b->npages = len / ram->page_size;
    b->flags = flags;
    ram->nblocks++;
    return 0;
}

lm_block *lm__ram_find(lm_ram *ram, uint32_t id)
{
    for (unsigned i = 0; i < ram->nblocks; i++)
        if (ram->blocks[i].id == id)
            return &ram->blocks[i];
    return NULL;
}

uint64_t lm__ram_total(const lm_ram *ram)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < ram->nblocks; i++)
        total += ram->blocks[i].len;
    return total;
}

uint64_t lm__ram_max_block_pages(const lm_ram *ram)
{
    uint64_t max = 1;
    for (unsigned i = 0; i < ram->nblocks; i++)
        max = ram->blocks[i].npages > max ? ram->blocks[i].npages : max;
    return max;
}

int lm__ram_receivedmap_reset(lm_ram *ram, lm_err *err)
{
    for (unsigned i = 0; i < ram->nblocks; i++) {
        lm_block *b = &ram->blocks[i];
        lm_bitmap_free(b->received);
        if (!(b->received = lm_bitmap_new(b->npages)))
            return lm_err_set(err, -ENOMEM, "out of memory for the received map");
    }
    return 0;
}
