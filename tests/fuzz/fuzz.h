/*
 * What the fuzz targets share (docs/FUZZING.md).
 *
 * Each fuzz_*.c defines LLVMFuzzerTestOneInput and is linked either with
 * libFuzzer (clang, -DLM_FUZZ=ON: `make fuzz`, bench/fuzz.sh) or with
 * driver.c, a small standalone replayer that `make check` runs (the corpus,
 * then deterministic mutations of it).
 *
 * A target must be deterministic, free everything it allocated before it
 * returns, and never let the input size an allocation beyond what the
 * destination itself would allow. FUZZ_CHECK states a property the code
 * under test promises (a round trip, a bound): a violation aborts, which
 * both drivers report as a crash.
 */
#ifndef LM_FUZZ_FUZZ_H
#define LM_FUZZ_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ram/ram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz property violated: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- a small RAM layout, as a destination would hold ------------------- */

#define FUZZ_PAGE 4096u

/* The layout every target that needs one uses (the seeds are made for it):
 * block 0 of 32 pages, block 7 of 8 pages, 4 KiB pages. */
#define FUZZ_BLOCK0_ID    0u
#define FUZZ_BLOCK0_PAGES 32u
#define FUZZ_BLOCK1_ID    7u
#define FUZZ_BLOCK1_PAGES 8u

/* Fills ram with that layout over memory from aligned_alloc (so that ASan
 * sees a write past a block as the overflow it is), zeroed, with fresh
 * receivedmaps. */
void fuzz_ram_init(lm_ram *ram);
/* Frees what fuzz_ram_init allocated. */
void fuzz_ram_free(lm_ram *ram);

/* ---- in-memory connections ---------------------------------------------- */
/*
 * Streams of bytes that lm_conn reads as if a peer sent them: installed
 * through lm_sys's test hooks (util/sys.h), so the code under test runs its
 * real socket paths. Each stream gets a real descriptor (/dev/null) that
 * the code may close as it would a socket. Writes to it are counted and
 * dropped. The listener (fuzz_conn_listener) is always readable and hands
 * out the streams not yet taken, in order, then fails with EMFILE, so that
 * no wait in the code under test lasts.
 */
typedef struct fuzz_conn_opts {
    bool eof_closes; /* end of a stream: the peer closed (else EIO, not a lost link) */
    size_t chunk;    /* at most this many bytes per read (0: all there is) */
    bool no_uffd;    /* userfaultfd's ioctls fail with ENOSYS */
} fuzz_conn_opts;

/* Forgets every stream (closing those nobody took) and sets the options. */
void fuzz_conn_reset(const fuzz_conn_opts *o);
/* A new stream over data[0..len) (not copied: it must outlive the run);
 * returns its descriptor, or -1. */
int fuzz_conn_add(const uint8_t *data, size_t len);
/* Takes the stream with this descriptor now (the caller owns and closes
 * it), as the listener would have handed it out. */
void fuzz_conn_take(int fd);
/* A listening descriptor for struct lm_listener. */
int fuzz_conn_listener(void);
/* Bytes written to all streams since the last reset. */
uint64_t fuzz_conn_written(void);
/* Checks that every stream handed out was closed by its taker (an fd leak
 * otherwise), then forgets them all. */
void fuzz_conn_finish(void);

/* The common case: forgets every stream (with options o), then opens one
 * over data[0..size) as connection c (a 1 s bound, no cancel), its errors
 * in err (initialized here). */
struct lm_conn;
void fuzz_conn_open(const uint8_t *data, size_t size, const fuzz_conn_opts *o, struct lm_conn *c,
                    const char *peer, lm_err *err);

/* Splits data at each FUZZ_STREAM_SEP into at most max parts; returns how
 * many. Used to give one input several connections. */
#define FUZZ_STREAM_SEP     "LMFZNEXT"
#define FUZZ_STREAM_SEP_LEN 8
size_t fuzz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len, size_t max);

#endif
