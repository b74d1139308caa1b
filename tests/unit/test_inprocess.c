/*
 * lm_migrate and lm_incoming in one process, with faults injected at chosen
 * points through the system-call table (util/sys.h).
 *
 * The pair: the destination runs lm_incoming in a thread, the source runs
 * lm_migrate in the main thread. They meet on a unix: listener in a
 * mkdtemp() directory, not a socketpair: the multifd channels and the
 * postcopy preempt connection are opened later by connecting to the
 * destination's listener again, and a socketpair has no address to connect
 * to. Both ends are still in this process, so the hooks see every call.
 *
 * Which connection is which: every connect() in this process is the
 * source's (the destination only accepts), and the source connects in a
 * fixed order from its migration thread: the main connection, then multifd
 * channel 0..N-1, then the postcopy preempt connection. The connect hook
 * records descriptors in that order. The order is checked, not trusted: the
 * first bytes written on each recorded descriptor must be HELLO (main) or a
 * CHANNEL_HELLO naming the expected channel, or the case fails.
 *
 * The source guest: two RAM blocks, half their pages filled with a
 * self-describing pattern (each page says its block, page and generation;
 * the rest of it follows from those), and a writer thread that keeps
 * rewriting random pages with new generations until the stop callback
 * parks it. Its RAM is consistent when every page is either all zero or
 * matches its own header. Device state is a small blob. The destination
 * registers no blocks (lm_incoming allocates them); verify is on.
 *
 * Cases (each asserts exact outcomes; a hang fails it through alarm()):
 *   baseline    completes, verified, destination RAM == source RAM.
 *   short-write multifd with 2 channels whose writes are cut to at most
 *               1000 bytes, with EAGAIN every 7th call: still completes.
 *   reset-round ECONNRESET on the main connection after 1 MiB of it went
 *               out, in the first pass: both sides fail, the source guest
 *               was never stopped and keeps running, its RAM intact.
 *   reset-stop  ECONNRESET on the main connection at the first write after
 *               the guest was stopped for the switchover: the source
 *               resumes it, exactly once.
 *   eexist      postcopy; every second UFFDIO_COPY of the destination is
 *               done and then reported as EEXIST: completes, verified, and
 *               postcopy_eexist counts exactly the injected ones.
 *   lose-done, drop-*, pc-drop-*, pc-cut*, pre-cut*: the commit point and
 *               recovery (docs/RELIABILITY.md has the table): a frame lost
 *               in flight, or every connection cut; no guest ever resumes
 *               while the other side's runs (note_resume), and the case
 *               ends with the expected side running the right memory.
 * After each case nothing is left: as many threads and descriptors as
 * before it, and no page of either side's RAM left registered (the reads
 * of the destination's RAM would block on one).
 * Usage: test_inprocess [CASE...] (all when none is named).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dirty/linux_compat.h"
#include "dirty/uffd.h"
#include "proto/wire.h"
#include "util/clock.h"
#include "util/sys.h"

#define NBLOCKS        2
#define MAX_FDS        16
#define SHORT_WRITE    1000         /* bytes: the most a channel write may carry */
#define EAGAIN_EVERY   7            /* every Nth channel write fails with EAGAIN */
#define RESET_AFTER    (1u << 20)   /* bytes on the main connection before ECONNRESET */
#define GATE_AFTER     (256u << 10) /* postcopy: hold the first pass here until... */
#define GATE_WRITES    32           /* ...the guest wrote this many pages of block 0 */
#define CASE_TIMEOUT_S 60

static const uint64_t block_pages[NBLOCKS] = {2048, 1024};
static uint64_t page_size;
static const char *current_case = "";

/* ---- The source guest ---------------------------------------------------- */

typedef struct src_guest {
    uint8_t *host[NBLOCKS];
    uint64_t len[NBLOCKS];
    pthread_t writer;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop_req; /* park the writer (stop callback, or the test looking) */
    bool parked;
    bool quit;
    _Atomic uint64_t writes, writes_blk0;
    /* Guest callbacks, from the migration thread. */
    _Atomic unsigned stops, resumes;
    _Atomic bool stopped;
    uint8_t state[200];
} src_guest;

static uint64_t mix(uint64_t gen, unsigned block, uint64_t page)
{
    uint64_t x = gen * 0x9E3779B97F4A7C15ull ^ (uint64_t)block << 56 ^ page * 0xC2B2AE3D27D4EB4Full;
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ull;
}

/* A page describes itself: word 0 its generation (never 0), word 1 its
 * block and page, the rest follows from those. Word 0 goes last. */
static void write_page(uint8_t *page, unsigned block, uint64_t p, uint64_t gen)
{
    uint64_t *w = (uint64_t *)page, base = mix(gen, block, p);
    w[1] = (uint64_t)block << 32 | p;
    for (uint64_t i = 2; i < page_size / 8; i++)
        w[i] = base + i;
    w[0] = gen;
}

/* Pages that are neither all zero nor consistent with their own header. */
static uint64_t inconsistent_pages(uint8_t *const host[NBLOCKS])
{
    uint64_t bad = 0;
    for (unsigned b = 0; b < NBLOCKS; b++) {
        for (uint64_t p = 0; p < block_pages[b]; p++) {
            const uint64_t *w = (const uint64_t *)(host[b] + p * page_size);
            bool ok = true;
            if (w[0] == 0) {
                for (uint64_t i = 1; i < page_size / 8 && ok; i++)
                    ok = w[i] == 0;
            } else {
                uint64_t base = mix(w[0], b, p);
                ok = w[1] == ((uint64_t)b << 32 | p);
                for (uint64_t i = 2; i < page_size / 8 && ok; i++)
                    ok = w[i] == base + i;
            }
            bad += !ok;
        }
    }
    return bad;
}

static void *writer_main(void *arg)
{
    src_guest *g = arg;
    unsigned long long rng = 0x5eed;
    uint64_t gen = 1000;
    for (unsigned n = 0;; n++) {
        if (n % 16 == 0) { /* at most some 30000 pages a second */
            struct timespec ts = {0, 500000};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&g->lock);
        while (g->stop_req && !g->quit) {
            g->parked = true;
            pthread_cond_broadcast(&g->cond);
            pthread_cond_wait(&g->cond, &g->lock);
        }
        g->parked = false;
        bool quit = g->quit;
        pthread_mutex_unlock(&g->lock);
        if (quit)
            break;
        unsigned b = (unsigned)(test_rand(&rng) % NBLOCKS);
        uint64_t p = test_rand(&rng) % block_pages[b];
        write_page(g->host[b] + p * page_size, b, p, ++gen);
        atomic_fetch_add(&g->writes, 1);
        if (b == 0)
            atomic_fetch_add(&g->writes_blk0, 1);
    }
    return NULL;
}

static void park(src_guest *g, bool on)
{
    pthread_mutex_lock(&g->lock);
    g->stop_req = on;
    pthread_cond_broadcast(&g->cond);
    while (on && !g->parked)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static int hook_guest_stopped(void);
static void note_resume(bool source);

static int src_stop(void *opaque)
{
    src_guest *g = opaque;
    park(g, true);
    atomic_store(&g->stopped, true);
    atomic_fetch_add(&g->stops, 1);
    return hook_guest_stopped();
}

static int src_resume(void *opaque)
{
    src_guest *g = opaque;
    note_resume(true);
    atomic_fetch_add(&g->resumes, 1);
    atomic_store(&g->stopped, false);
    park(g, false);
    return 0;
}

static int src_save_state(void *opaque, void **buf, size_t *len)
{
    src_guest *g = opaque;
    if (!(*buf = malloc(sizeof(g->state))))
        return -ENOMEM;
    memcpy(*buf, g->state, sizeof(g->state));
    *len = sizeof(g->state);
    return 0;
}

static void src_guest_init(src_guest *g)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        g->len[b] = block_pages[b] * page_size;
        g->host[b] = lm_ram_alloc(g->len[b]);
        if (!g->host[b]) {
            perror("lm_ram_alloc");
            exit(1);
        }
        for (uint64_t p = 0; p < block_pages[b]; p += 2) /* the rest stay never-touched */
            write_page(g->host[b] + p * page_size, b, p, 1);
    }
    for (size_t i = 0; i < sizeof(g->state); i++)
        g->state[i] = (uint8_t)(i * 7 + 3);
    if (pthread_create(&g->writer, NULL, writer_main, g)) {
        fprintf(stderr, "cannot start the writer\n");
        exit(1);
    }
}

static void src_guest_destroy(src_guest *g)
{
    pthread_mutex_lock(&g->lock);
    g->quit = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->writer, NULL);
    for (unsigned b = 0; b < NBLOCKS; b++)
        lm_ram_free(g->host[b], g->len[b]);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
}

/* ---- The destination guest ----------------------------------------------- */

typedef struct dst_guest {
    lm_ctx *ctx;
    bool touch; /* resume starts a vCPU that reads every page (postcopy faults) */
    unsigned nblocks;
    uint8_t *host[LM_MAX_BLOCKS];
    uint64_t len[LM_MAX_BLOCKS];
    pthread_t toucher;
    bool toucher_started;
    _Atomic uint64_t touched;
    _Atomic unsigned resumes, loads;
    uint8_t state[256];
    size_t state_len;
} dst_guest;

/* Reads every page, last first: the background stream of postcopy goes
 * from the front, so the reads meet pages that have not arrived. */
static void *toucher_main(void *arg)
{
    dst_guest *dg = arg;
    volatile uint8_t sink = 0;
    for (unsigned i = dg->nblocks; i-- > 0;)
        for (uint64_t off = dg->len[i]; off >= page_size; off -= page_size) {
            sink ^= dg->host[i][off - page_size];
            atomic_fetch_add(&dg->touched, 1);
        }
    (void)sink;
    return NULL;
}

static int dst_resume(void *opaque)
{
    dst_guest *dg = opaque;
    note_resume(false);
    atomic_fetch_add(&dg->resumes, 1);
    if (!dg->touch)
        return 0;
    /* Called on lm_incoming's thread: the blocks are in place. */
    dg->nblocks = lm_ram_block_count(dg->ctx);
    for (unsigned i = 0; i < dg->nblocks; i++) {
        void *host;
        uint32_t id;
        lm_ram_block_get(dg->ctx, i, &id, NULL, &host, &dg->len[i]);
        dg->host[i] = host;
    }
    if (pthread_create(&dg->toucher, NULL, toucher_main, dg))
        return -EAGAIN;
    dg->toucher_started = true;
    return 0;
}

static int dst_load_state(void *opaque, const void *buf, size_t len)
{
    dst_guest *dg = opaque;
    atomic_fetch_add(&dg->loads, 1);
    if (len > sizeof(dg->state))
        return -E2BIG;
    memcpy(dg->state, buf, len);
    dg->state_len = len;
    return 0;
}

/* ---- The hooks ----------------------------------------------------------- */

typedef enum hook_mode {
    MODE_NONE,        /* observe only */
    MODE_SHORT_WRITE, /* channel writes cut short, some EAGAIN */
    MODE_RESET_ROUND, /* main connection: ECONNRESET after RESET_AFTER bytes */
    MODE_RESET_STOP,  /* main connection: ECONNRESET once the guest is stopped */
    MODE_EEXIST,      /* postcopy placement: every 2nd UFFDIO_COPY reports EEXIST */
    MODE_LOSE_DONE,   /* destination: its POSTCOPY_DONE fails with ECONNRESET */
    MODE_DROP,        /* the first frame of type H.drop_type, either way, is lost in
                         flight: its sender sees a complete write, then the link is cut */
    MODE_CUT,         /* postcopy: every source connection is cut when the destination
                         has sent H.cut_at[i] page requests (the network going away) */
    MODE_CUT_BYTES,   /* precopy: the same when the source has written H.cut_at[i] bytes
                         on all of its connections */
} hook_mode;

/* The hooks have no opaque pointer: their state is this one test's. */
static struct hook_state {
    hook_mode mode;
    unsigned nchannels;       /* the case's multifd channels */
    bool gate;                /* postcopy case: hold the first pass until the guest wrote */
    src_guest *g;             /* the source guest, for the gate and the RAM ranges */
    _Atomic int fds[MAX_FDS]; /* the source's connections, in connect order */
    _Atomic unsigned nfds;
    _Atomic bool first_seen[MAX_FDS];
    _Atomic unsigned identity_errors; /* a first write that did not match its place */
    _Atomic uint64_t main_bytes;
    _Atomic uint64_t channel_writes, truncated, eagain;
    _Atomic bool stopped; /* the source guest was stopped */
    _Atomic bool reset;   /* ECONNRESET on the main connection from now on */
    _Atomic uint64_t resets;
    _Atomic bool gate_done;
    _Atomic unsigned gate_timeouts;
    _Atomic uint64_t copies_ok, injected, natural_eexist;
    _Atomic uint64_t lost_done; /* POSTCOPY_DONE frames the destination could not send */
    uint16_t drop_type;         /* MODE_DROP */
    _Atomic unsigned dropped;
    _Atomic unsigned recover_hellos; /* HELLOs with RECOVER on a later connection */
    _Atomic unsigned main_idx;       /* the latest main connection's index */
    uint64_t cut_at[2];              /* MODE_CUT: after this many requests (0: none) */
    _Atomic uint64_t requests_sent, source_bytes;
    _Atomic unsigned cuts;
    /* Two running copies: a guest resumed while the other side's runs. */
    struct dst_guest *dg;
    _Atomic unsigned two_copies;
} H;

static void hook_arm(hook_mode mode, unsigned nchannels, src_guest *g, bool gate)
{
    H.mode = mode;
    H.nchannels = nchannels;
    H.g = g;
    H.gate = gate;
    atomic_store(&H.nfds, 0);
    for (unsigned i = 0; i < MAX_FDS; i++) {
        atomic_store(&H.fds[i], -1);
        atomic_store(&H.first_seen[i], false);
    }
    atomic_store(&H.identity_errors, 0);
    atomic_store(&H.main_bytes, 0);
    atomic_store(&H.channel_writes, 0);
    atomic_store(&H.truncated, 0);
    atomic_store(&H.eagain, 0);
    atomic_store(&H.stopped, false);
    atomic_store(&H.reset, false);
    atomic_store(&H.resets, 0);
    atomic_store(&H.gate_done, false);
    atomic_store(&H.gate_timeouts, 0);
    atomic_store(&H.copies_ok, 0);
    atomic_store(&H.injected, 0);
    atomic_store(&H.natural_eexist, 0);
    atomic_store(&H.lost_done, 0);
    atomic_store(&H.dropped, 0);
    H.drop_type = 0;
    atomic_store(&H.recover_hellos, 0);
    atomic_store(&H.main_idx, 0);
    H.cut_at[0] = H.cut_at[1] = 0;
    atomic_store(&H.requests_sent, 0);
    atomic_store(&H.source_bytes, 0);
    atomic_store(&H.cuts, 0);
    atomic_store(&H.two_copies, 0);
}

/* A guest about to run while the other side's copy runs or ran. */
static void note_resume(bool source)
{
    bool other_runs =
        source ? H.dg && atomic_load(&H.dg->resumes) > 0 : H.g && !atomic_load(&H.g->stopped);
    if (other_runs) {
        fprintf(stderr, "[%s] TWO RUNNING COPIES: the %s resumes while the other side runs\n",
                current_case, source ? "source" : "destination");
        atomic_fetch_add(&H.two_copies, 1);
    }
}

static int hook_guest_stopped(void)
{
    atomic_store(&H.stopped, true);
    return 0;
}

/* The source connection fd is (0: main, 1..N: channels, N+1: preempt;
 * after a recovery the same again from the new main connection's index),
 * or -1 when it is none of them (the destination's side, for one). */
static int fd_index(int fd)
{
    /* Only the latest generation (since the last main connection): the
     * numbers of connections closed by a recovery are reused, also by the
     * destination's sockets. */
    unsigned n = atomic_load(&H.nfds), first = atomic_load(&H.main_idx);
    for (unsigned i = n < MAX_FDS ? n : MAX_FDS; i-- > first;)
        if (atomic_load(&H.fds[i]) == fd)
            return (int)i; /* the newest connection with that number */
    return -1;
}

static int hook_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    int rc = lm__sys_real.connect(fd, addr, len);
    int saved = errno;
    if (rc == 0 || saved == EINPROGRESS) {
        unsigned i = atomic_load(&H.nfds);
        if (i < MAX_FDS) {
            atomic_store(&H.fds[i], fd);
            atomic_store(&H.nfds, i + 1);
        }
    }
    errno = saved;
    return rc;
}

static size_t msg_bytes(const struct msghdr *msg)
{
    size_t n = 0;
    for (size_t i = 0; i < msg->msg_iovlen; i++)
        n += msg->msg_iov[i].iov_len;
    return n;
}

/* The first write on each connection must be what its place in the
 * connect order says: HELLO on the main one, CHANNEL_HELLO with the right
 * channel id on the others. */
static void check_identity(int idx, const struct msghdr *msg)
{
    uint8_t buf[LM_FRAME_HDR_SIZE + LM_CHANNEL_HELLO_SIZE];
    size_t got = 0;
    for (size_t i = 0; i < msg->msg_iovlen && got < sizeof(buf); i++) {
        size_t n = msg->msg_iov[i].iov_len;
        n = n < sizeof(buf) - got ? n : sizeof(buf) - got;
        memcpy(buf + got, msg->msg_iov[i].iov_base, n);
        got += n;
    }
    lm_frame f;
    lm_channel_hello ch;
    char why[256];
    bool ok = got >= LM_FRAME_HDR_SIZE && lm_frame_decode(buf, &f, why, sizeof(why)) == 0;
    if (ok && idx == 0) {
        ok = f.type == LM_MSG_HELLO;
    } else if (ok && f.type == LM_MSG_HELLO) {
        ok = got >= LM_FRAME_HDR_SIZE + 8 &&
             (lm_get_be32(buf + LM_FRAME_HDR_SIZE + 4) & LM_HELLO_RECOVER);
        atomic_fetch_add(&H.recover_hellos, ok);
        atomic_store(&H.main_idx, (unsigned)idx);
    } else if (ok) {
        /* After the latest main connection, in channel order; the preempt
         * connection is channel N. */
        unsigned want = (unsigned)idx - atomic_load(&H.main_idx) - 1;
        ok = f.type == LM_MSG_CHANNEL_HELLO && got == sizeof(buf) &&
             lm_channel_hello_decode(buf + LM_FRAME_HDR_SIZE, LM_CHANNEL_HELLO_SIZE, &ch, why,
                                     sizeof(why)) == 0 &&
             ch.channel == want && want <= H.nchannels;
    }
    if (!ok) {
        fprintf(stderr, "[%s] connection %d: its first write is not what the connect order says\n",
                current_case, idx);
        atomic_fetch_add(&H.identity_errors, 1);
    }
}

/* Postcopy case: pages must still be needed at the switch whatever the
 * scheduler does, so the first pass waits here (block 0 is armed by then)
 * until the guest has written some of block 0's pages. */
static void gate(void)
{
    src_guest *g = H.g;
    uint64_t w0 = atomic_load(&g->writes_blk0), start = lm_now_ns();
    while (atomic_load(&g->writes_blk0) < w0 + GATE_WRITES) {
        if (lm_now_ns() - start > 10000000000ull) {
            atomic_fetch_add(&H.gate_timeouts, 1);
            break;
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

/* A frame header opens the destination's message: its type is at byte 6. */
static bool is_frame(const struct msghdr *msg, uint16_t type)
{
    const struct iovec *v = &msg->msg_iov[0];
    return msg->msg_iovlen && v->iov_len >= LM_FRAME_HDR_SIZE &&
           lm_get_be16((const uint8_t *)v->iov_base + 6) == type;
}

static ssize_t hook_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    int idx = fd_index(fd);
    if (idx < 0 && H.mode == MODE_CUT && is_frame(msg, LM_MSG_PAGE_REQUEST)) {
        uint64_t n = atomic_fetch_add(&H.requests_sent, 1) + 1;
        unsigned c = atomic_load(&H.cuts);
        if (c < 2 && n == H.cut_at[c] && atomic_compare_exchange_strong(&H.cuts, &c, c + 1)) {
            /* This generation of the source's connections: older numbers
             * are closed and may name something else by now. */
            for (unsigned i = atomic_load(&H.main_idx); i < atomic_load(&H.nfds); i++)
                shutdown(atomic_load(&H.fds[i]), SHUT_RDWR);
        }
    }
    if (idx >= 0 && H.mode == MODE_CUT_BYTES) {
        uint64_t n = atomic_fetch_add(&H.source_bytes, msg_bytes(msg)) + msg_bytes(msg);
        unsigned c = atomic_load(&H.cuts);
        if (c < 2 && H.cut_at[c] && n >= H.cut_at[c] &&
            atomic_compare_exchange_strong(&H.cuts, &c, c + 1)) {
            for (unsigned i = atomic_load(&H.main_idx); i < atomic_load(&H.nfds); i++)
                shutdown(atomic_load(&H.fds[i]), SHUT_RDWR);
            errno = EPIPE;
            return -1;
        }
    }
    if (H.drop_type && is_frame(msg, H.drop_type) && !atomic_exchange(&H.dropped, 1)) {
        shutdown(fd, SHUT_RDWR); /* both ends see the link go, the frame never arrives */
        return (ssize_t)msg_bytes(msg);
    }
    if (idx < 0 && H.mode == MODE_LOSE_DONE && is_frame(msg, LM_MSG_POSTCOPY_DONE) &&
        !atomic_load(&H.lost_done)) {
        atomic_fetch_add(&H.lost_done, 1);
        errno = ECONNRESET;
        return -1;
    }
    if (idx < 0)
        return lm__sys_real.sendmsg(fd, msg, flags);
    bool channel = idx >= 1 && (unsigned)idx <= H.nchannels;

    if (idx == 0 && H.mode == MODE_RESET_STOP && atomic_load(&H.stopped))
        atomic_store(&H.reset, true); /* the first write after the stop fails */
    if (idx == 0 && atomic_load(&H.reset)) {
        atomic_fetch_add(&H.resets, 1);
        errno = ECONNRESET;
        return -1;
    }
    if (channel && H.mode == MODE_SHORT_WRITE &&
        atomic_fetch_add(&H.channel_writes, 1) % EAGAIN_EVERY == EAGAIN_EVERY - 1) {
        atomic_fetch_add(&H.eagain, 1);
        errno = EAGAIN;
        return -1;
    }
    if (!atomic_exchange(&H.first_seen[idx], true))
        check_identity(idx, msg);

    ssize_t n;
    if (channel && H.mode == MODE_SHORT_WRITE && msg_bytes(msg) > SHORT_WRITE) {
        /* The same bytes, fewer of them: the real call on a cut-down iovec. */
        struct iovec iov[64];
        size_t left = SHORT_WRITE, k = 0;
        for (size_t i = 0; i < msg->msg_iovlen && left && k < 64; i++) {
            size_t len = msg->msg_iov[i].iov_len < left ? msg->msg_iov[i].iov_len : left;
            iov[k++] = (struct iovec){msg->msg_iov[i].iov_base, len};
            left -= len;
        }
        struct msghdr cut = *msg;
        cut.msg_iov = iov;
        cut.msg_iovlen = k;
        n = lm__sys_real.sendmsg(fd, &cut, flags);
        if (n > 0)
            atomic_fetch_add(&H.truncated, 1);
    } else {
        n = lm__sys_real.sendmsg(fd, msg, flags);
    }
    if (idx == 0 && n > 0) {
        int saved = errno;
        uint64_t total = atomic_fetch_add(&H.main_bytes, (uint64_t)n) + (uint64_t)n;
        if (H.mode == MODE_RESET_ROUND && total >= RESET_AFTER)
            atomic_store(&H.reset, true);
        if (H.gate && total >= GATE_AFTER && !atomic_exchange(&H.gate_done, true))
            gate();
        errno = saved;
    }
    return n;
}

static bool in_source_ram(uint64_t addr)
{
    for (unsigned b = 0; H.g && b < NBLOCKS; b++)
        if (addr >= (uintptr_t)H.g->host[b] && addr - (uintptr_t)H.g->host[b] < H.g->len[b])
            return true;
    return false;
}

/* Placement on the destination (its addresses are not the source's; the
 * source's own tracker may place zero pages in its RAM): every second
 * UFFDIO_COPY that the kernel did is reported as EEXIST, as if the page
 * had been there already. Real EEXISTs are counted too. */
static int hook_ioctl(int fd, unsigned long request, void *arg)
{
    int rc = lm__sys_real.ioctl(fd, request, arg);
    int saved = errno;
    if (H.mode == MODE_EEXIST && (request == UFFDIO_COPY || request == UFFDIO_ZEROPAGE)) {
        struct uffdio_copy *copy = arg;
        struct uffdio_zeropage *zp = arg;
        uint64_t dst = request == UFFDIO_COPY ? copy->dst : zp->range.start;
        if (!in_source_ram(dst)) {
            if (rc < 0 && saved == EEXIST)
                atomic_fetch_add(&H.natural_eexist, 1);
            if (rc == 0 && request == UFFDIO_COPY && atomic_fetch_add(&H.copies_ok, 1) % 2 == 1) {
                atomic_fetch_add(&H.injected, 1);
                copy->copy = -EEXIST;
                rc = -1;
                saved = EEXIST;
            }
        }
    }
    errno = saved;
    return rc;
}

/* The real calls but for these three (set up in main()). */
static lm_sys_ops hooks;

/* ---- Running one migration ----------------------------------------------- */

typedef struct run {
    lm_params sp, dp;
    src_guest g;
    dst_guest dg;
    lm_ctx *sctx, *dctx;
    lm_listener *l;
    char dir[64];
    /* Results. */
    int src_ret, dst_ret;
    char src_err[512], dst_err[512];
    lm_stats src_st, dst_st;
    uint64_t src_end_ns, dst_end_ns;
    pthread_t dest_thread;
    unsigned fds0, threads0;
} run;

static unsigned count_dir(const char *path)
{
    DIR *d = opendir(path);
    unsigned n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void *dest_main(void *arg)
{
    run *r = arg;
    r->dst_ret = lm_incoming(r->dctx, r->l, &r->dp);
    r->dst_end_ns = lm_now_ns();
    snprintf(r->dst_err, sizeof(r->dst_err), "%s", lm_last_error(r->dctx));
    lm_stats_get(r->dctx, &r->dst_st);
    return NULL;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_inprocess: a case ran past its time limit (hang)\n";
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(2);
    _exit(1);
}

static void run_setup(run *r, hook_mode mode, unsigned nchannels, bool gate_first_pass)
{
    memset(r, 0, sizeof(*r));
    alarm(CASE_TIMEOUT_S);
    r->fds0 = count_dir("/proc/self/fd");
    r->threads0 = count_dir("/proc/self/task");
    lm_params_init(&r->sp);
    r->sp.verify = true;
    r->sp.io_timeout_ms = 10000;
    r->sp.multifd_channels = nchannels;
    r->dp = r->sp;
    r->dp.accept_timeout_ms = 20000;

    snprintf(r->dir, sizeof(r->dir), "/tmp/lm-inproc-XXXXXX");
    if (!mkdtemp(r->dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char uri[128], err[256];
    snprintf(uri, sizeof(uri), "unix:%s/sock", r->dir);
    if (lm_listen(uri, &r->l, err, sizeof(err)) < 0) {
        fprintf(stderr, "lm_listen: %s\n", err);
        exit(1);
    }

    src_guest_init(&r->g);
    r->sctx = lm_ctx_new();
    r->dctx = lm_ctx_new();
    for (unsigned b = 0; b < NBLOCKS; b++)
        CHECK(lm_ram_block_add(r->sctx, b + 1, b ? "ram1" : "ram0", r->g.host[b], r->g.len[b],
                               LM_RAM_ZEROED) == 0);
    lm_guest_ops sops = {.stop = src_stop, .resume = src_resume, .save_state = src_save_state};
    lm_set_guest_ops(r->sctx, &sops, &r->g);
    r->dg.ctx = r->dctx;
    lm_guest_ops dops = {.resume = dst_resume, .load_state = dst_load_state};
    lm_set_guest_ops(r->dctx, &dops, &r->dg);
    hook_arm(mode, nchannels, &r->g, gate_first_pass);
    H.dg = &r->dg;
}

/* Both sides, the destination on its own thread; returns once both did. */
static void run_migrate(run *r)
{
    CHECK(lm__sys_set(&hooks) == 0);
    if (pthread_create(&r->dest_thread, NULL, dest_main, r)) {
        fprintf(stderr, "cannot start the destination thread\n");
        exit(1);
    }
    r->src_ret = lm_migrate(r->sctx, lm_listener_uri(r->l), &r->sp);
    r->src_end_ns = lm_now_ns();
    snprintf(r->src_err, sizeof(r->src_err), "%s", lm_last_error(r->sctx));
    lm_stats_get(r->sctx, &r->src_st);
}

static void run_join_dest(run *r)
{
    pthread_join(r->dest_thread, NULL);
    lm__sys_reset();
    fprintf(stderr, "[%s] source %d (%s), destination %d (%s)\n", current_case, r->src_ret,
            r->src_ret ? r->src_err : "ok", r->dst_ret, r->dst_ret ? r->dst_err : "ok");
}

/* Destination RAM equals source RAM, block by block. */
static void check_same_ram(run *r)
{
    CHECK_EQ_U64(lm_ram_block_count(r->dctx), NBLOCKS);
    for (unsigned i = 0; i < lm_ram_block_count(r->dctx) && i < NBLOCKS; i++) {
        uint32_t id;
        void *host;
        uint64_t len;
        CHECK(lm_ram_block_get(r->dctx, i, &id, NULL, &host, &len) == 0);
        CHECK(id >= 1 && id <= NBLOCKS);
        if (id < 1 || id > NBLOCKS)
            continue;
        CHECK_EQ_U64(len, r->g.len[id - 1]);
        CHECK(len == r->g.len[id - 1] && memcmp(host, r->g.host[id - 1], len) == 0);
    }
}

/* A completed, verified migration, the same on both sides. */
static void check_completed(run *r)
{
    CHECK(r->src_ret == 0);
    CHECK(r->dst_ret == 0);
    CHECK(r->src_st.status == LM_STATUS_COMPLETED);
    CHECK(r->dst_st.status == LM_STATUS_COMPLETED);
    CHECK(r->src_st.verify_done && r->src_st.verify_match);
    CHECK(r->dst_st.verify_done && r->dst_st.verify_match);
    CHECK(!strcmp(r->src_st.digest, r->dst_st.digest));
    CHECK_EQ_U64(atomic_load(&r->g.stops), 1);
    CHECK_EQ_U64(atomic_load(&r->g.resumes), 0); /* it moved: the source stays stopped */
    CHECK_EQ_U64(atomic_load(&r->dg.loads), 1);
    CHECK_EQ_U64(atomic_load(&r->dg.resumes), 1);
    CHECK(r->dg.state_len == sizeof(r->g.state) &&
          !memcmp(r->dg.state, r->g.state, sizeof(r->g.state)));
    CHECK_EQ_U64(inconsistent_pages(r->g.host), 0);
    check_same_ram(r);
    CHECK_EQ_U64(atomic_load(&H.identity_errors), 0);
}

/* A migration that failed before the switch completed: both sides failed,
 * the source guest runs (stopped as often as resumed), keeps writing, and
 * its RAM is intact. */
static void check_failed_source_intact(run *r)
{
    CHECK(r->src_ret < 0);
    CHECK(r->src_st.status == LM_STATUS_FAILED);
    CHECK(!atomic_load(&r->g.stopped));
    CHECK_EQ_U64(atomic_load(&r->g.resumes), atomic_load(&r->g.stops));
    CHECK_EQ_U64(atomic_load(&r->dg.resumes), 0); /* never ran on the destination */
    uint64_t w0 = atomic_load(&r->g.writes), start = lm_now_ns();
    while (atomic_load(&r->g.writes) < w0 + 100 && lm_now_ns() - start < 10000000000ull) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK(atomic_load(&r->g.writes) >= w0 + 100); /* the guest still runs */
    park(&r->g, true);
    CHECK_EQ_U64(inconsistent_pages(r->g.host), 0);
    park(&r->g, false);
}

/* The destination's toucher has read every page: lm_incoming returns once
 * the pages are placed, while the toucher may still be reading them. */
static uint64_t touched_all(run *r)
{
    if (r->dg.toucher_started) {
        pthread_join(r->dg.toucher, NULL);
        r->dg.toucher_started = false;
    }
    return atomic_load(&r->dg.touched);
}

/* Everything the case started is gone: threads joined, descriptors closed
 * (connections, userfaultfds, eventfds), nothing left registered (the
 * memcmp above would have hung on a page left missing). */
static void run_teardown(run *r)
{
    src_guest_destroy(&r->g);
    if (r->dg.toucher_started)
        pthread_join(r->dg.toucher, NULL);
    lm_ctx_free(r->sctx);
    lm_ctx_free(r->dctx);
    lm_listener_close(r->l);
    rmdir(r->dir);
    CHECK_EQ_U64(count_dir("/proc/self/fd"), r->fds0);
    CHECK_EQ_U64(count_dir("/proc/self/task"), r->threads0);
    alarm(0);
}

/* ---- The cases ----------------------------------------------------------- */

static void case_baseline(void)
{
    run r;
    run_setup(&r, MODE_NONE, 0, false);
    run_migrate(&r);
    run_join_dest(&r);
    check_completed(&r);
    CHECK_EQ_U64(atomic_load(&H.nfds), 1); /* one stream, no postcopy */
    run_teardown(&r);
}

static void case_short_write(void)
{
    run r;
    run_setup(&r, MODE_SHORT_WRITE, 2, false);
    run_migrate(&r);
    run_join_dest(&r);
    check_completed(&r);
    CHECK_EQ_U64(atomic_load(&H.nfds), 1 + 2);
    CHECK(r.src_st.multifd_bytes > 0);
    CHECK(atomic_load(&H.truncated) > 0);
    CHECK(atomic_load(&H.eagain) > 0);
    fprintf(stderr, "[%s] %llu channel writes cut short, %llu EAGAIN\n", current_case,
            (unsigned long long)atomic_load(&H.truncated),
            (unsigned long long)atomic_load(&H.eagain));
    run_teardown(&r);
}

static void check_reset(run *r)
{
    CHECK(r->src_ret == -ECONNRESET);
    CHECK(strstr(r->src_err, "connection to the destination lost") != NULL);
    CHECK(atomic_load(&H.resets) >= 1);
    CHECK_EQ_U64(atomic_load(&H.nfds), 1);
    CHECK_EQ_U64(atomic_load(&H.identity_errors), 0);
    check_failed_source_intact(r);
    pthread_join(r->dest_thread, NULL);
    lm__sys_reset();
    fprintf(stderr, "[%s] source %d (%s), destination %d (%s) %.0f ms after the source\n",
            current_case, r->src_ret, r->src_err, r->dst_ret, r->dst_err,
            ((double)r->dst_end_ns - (double)r->src_end_ns) / 1e6);
    /* The source closed its end: the destination sees the stream cut, not
     * a timeout, and fails at once. */
    CHECK(r->dst_ret == -ECONNRESET);
    CHECK(r->dst_st.status == LM_STATUS_FAILED);
    CHECK(r->dst_end_ns < r->src_end_ns + (uint64_t)r->dp.io_timeout_ms * 1000000);
}

static void case_reset_round(void)
{
    run r;
    run_setup(&r, MODE_RESET_ROUND, 0, false);
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 2000;
    run_migrate(&r);
    check_reset(&r);
    /* Mid-round: pages went out, the first pass never ended, and the guest
     * was never stopped. */
    CHECK(r.src_st.normal > 0);
    CHECK_EQ_U64(r.src_st.nrounds, 0);
    CHECK_EQ_U64(atomic_load(&r.g.stops), 0);
    CHECK(atomic_load(&H.main_bytes) >= RESET_AFTER);
    run_teardown(&r);
}

static void case_reset_stop(void)
{
    run r;
    run_setup(&r, MODE_RESET_STOP, 0, false);
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 2000;
    run_migrate(&r);
    check_reset(&r);
    /* Stopped for the switchover, then resumed when it failed: once each. */
    CHECK_EQ_U64(atomic_load(&r.g.stops), 1);
    CHECK_EQ_U64(atomic_load(&r.g.resumes), 1);
    run_teardown(&r);
}

/* A destination that failed in postcopy keeps its guest's missing pages
 * registered (by design: the vCPUs wait rather than read zeros), so the
 * toucher and any read of that RAM would block for good. Nothing more can
 * be checked or cleaned up in this process. */
static void postcopy_must_complete(run *r)
{
    if (!r->src_ret && !r->dst_ret)
        return;
    CHECK(r->src_ret == 0);
    CHECK(r->dst_ret == 0);
    fprintf(stderr, "[%s] postcopy did not complete: stopping here\n", current_case);
    exit(1);
}

static void case_eexist(void)
{
    run r;
    run_setup(&r, MODE_EEXIST, 0, true);
    r.sp.postcopy = true;
    r.sp.postcopy_after_rounds = 1;
    r.sp.downtime_limit_ms = 0; /* never converge: pages written in round 1 go by postcopy */
    /* Slow enough that the destination's reads overtake the background
     * stream (faults, requests, the preempt connection); counts do not
     * depend on it. */
    r.sp.max_bandwidth = 8u << 20;
    r.dg.touch = true;
    run_migrate(&r);
    run_join_dest(&r);
    postcopy_must_complete(&r);
    check_completed(&r);
    CHECK_EQ_U64(atomic_load(&H.gate_timeouts), 0);
    CHECK_EQ_U64(atomic_load(&H.nfds), 2); /* main and preempt */
    CHECK(r.src_st.postcopy && r.dst_st.postcopy);
    CHECK(!strcmp(r.src_st.switchover_reason, "postcopy"));
    CHECK(r.src_st.postcopy_needed > 0);
    CHECK(atomic_load(&H.injected) > 0);
    /* Exact: every EEXIST the placement saw is one we injected or one the
     * kernel really returned; every other UFFDIO_COPY counts as placed. */
    CHECK_EQ_U64(r.dst_st.postcopy_eexist,
                 atomic_load(&H.injected) + atomic_load(&H.natural_eexist));
    CHECK_EQ_U64(r.dst_st.postcopy_pages_placed,
                 atomic_load(&H.copies_ok) - atomic_load(&H.injected));
    CHECK_EQ_U64(touched_all(&r), block_pages[0] + block_pages[1]);
    fprintf(
        stderr,
        "[%s] needed %llu, copies %llu, EEXIST injected %llu (real %llu), counted %llu; "
        "faults %llu, requests %llu\n",
        current_case, (unsigned long long)r.src_st.postcopy_needed,
        (unsigned long long)atomic_load(&H.copies_ok), (unsigned long long)atomic_load(&H.injected),
        (unsigned long long)atomic_load(&H.natural_eexist),
        (unsigned long long)r.dst_st.postcopy_eexist, (unsigned long long)r.dst_st.postcopy_faults,
        (unsigned long long)r.dst_st.postcopy_requests);
    run_teardown(&r);
}

/* The destination has every page and its guest runs, but its POSTCOPY_DONE
 * is lost (the send fails, the link stays up): the source, past the commit
 * point, never runs its copy again; it times out, pauses, reconnects, and
 * hears POSTCOPY_DONE again instead of a map of missing pages. */
static void case_lose_done(void)
{
    run r;
    run_setup(&r, MODE_LOSE_DONE, 0, true);
    r.sp.postcopy = true;
    r.sp.postcopy_after_rounds = 1;
    r.sp.downtime_limit_ms = 0;
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 2000;
    r.sp.recover_timeout_ms = r.dp.recover_timeout_ms = 10000;
    r.dg.touch = true;
    run_migrate(&r);
    run_join_dest(&r);
    CHECK_EQ_U64(atomic_load(&H.lost_done), 1);
    check_completed(&r);
    CHECK_EQ_U64(r.src_st.reconnects, 1);
    CHECK_EQ_U64(r.dst_st.reconnects, 1);
    CHECK_EQ_U64(atomic_load(&H.two_copies), 0);
    CHECK_EQ_U64(touched_all(&r), block_pages[0] + block_pages[1]);
    run_teardown(&r);
}

/* ---- The commit point: each switchover frame lost in turn ---------------- */

typedef enum drop_outcome {
    SOURCE_RUNS, /* lost before the commit: the source's guest runs again */
    DEST_RUNS,   /* lost at or after it: asked again over a new link, completed */
    RESUMED,     /* lost before the precopy commit, with --recover-timeout: the
                    source runs its guest again, resumes precopy, and completes */
} drop_outcome;

static void drop_case(uint16_t type, bool postcopy, bool src_recover, drop_outcome want)
{
    run r;
    run_setup(&r, MODE_DROP, 0, postcopy);
    H.drop_type = type;
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 2000;
    /* The side that cannot know waits this long for the other. */
    r.sp.recover_timeout_ms = src_recover ? 1500 : 0;
    r.dp.recover_timeout_ms = 1500;
    if (postcopy) {
        r.sp.postcopy = true;
        r.sp.postcopy_after_rounds = 1;
        r.sp.downtime_limit_ms = 0;
    }
    run_migrate(&r);
    if (want == SOURCE_RUNS)
        check_failed_source_intact(&r);
    run_join_dest(&r);
    fprintf(stderr, "[%s] source %s, destination %s; reconnects %llu/%llu\n", current_case,
            lm_status_name(r.src_st.status), lm_status_name(r.dst_st.status),
            (unsigned long long)r.src_st.reconnects, (unsigned long long)r.dst_st.reconnects);
    CHECK_EQ_U64(atomic_load(&H.dropped), 1);
    CHECK_EQ_U64(atomic_load(&H.two_copies), 0);
    CHECK_EQ_U64(atomic_load(&H.identity_errors), 0);
    CHECK_EQ_U64(atomic_load(&r.g.stops), want == RESUMED ? 2 : 1);
    switch (want) {
    case SOURCE_RUNS:
        CHECK(r.dst_ret < 0);
        CHECK(r.dst_st.status == LM_STATUS_FAILED ||
              r.dst_st.status == LM_STATUS_SWITCHOVER_PAUSED);
        CHECK_EQ_U64(atomic_load(&r.dg.resumes), 0);
        CHECK_EQ_U64(atomic_load(&H.recover_hellos), 0);
        break;
    case DEST_RUNS:
        check_completed(&r);
        CHECK_EQ_U64(atomic_load(&H.recover_hellos), 1);
        CHECK_EQ_U64(r.src_st.reconnects, 1);
        CHECK_EQ_U64(r.dst_st.reconnects, 1);
        break;
    case RESUMED:
        /* Stopped, run again for the resume, stopped again, moved. */
        CHECK(r.src_ret == 0 && r.dst_ret == 0);
        CHECK(r.src_st.status == LM_STATUS_COMPLETED && r.dst_st.status == LM_STATUS_COMPLETED);
        CHECK(r.src_st.verify_match && r.dst_st.verify_match);
        CHECK(!strcmp(r.src_st.digest, r.dst_st.digest));
        CHECK_EQ_U64(atomic_load(&r.g.resumes), 1);
        CHECK_EQ_U64(atomic_load(&r.dg.resumes), 1);
        CHECK_EQ_U64(atomic_load(&H.recover_hellos), 1);
        CHECK_EQ_U64(r.src_st.reconnects, 1);
        CHECK_EQ_U64(r.dst_st.reconnects, 1);
        CHECK_EQ_U64(inconsistent_pages(r.g.host), 0);
        check_same_ram(&r);
        break;
    }
    run_teardown(&r);
}

static void case_drop_confirmed(void)
{
    /* The source heard RESUMED; the destination waits in vain, then ends
     * completed all the same. */
    run r;
    run_setup(&r, MODE_DROP, 0, false);
    H.drop_type = LM_MSG_CONFIRMED;
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 2000;
    r.sp.recover_timeout_ms = r.dp.recover_timeout_ms = 1000;
    run_migrate(&r);
    run_join_dest(&r);
    CHECK_EQ_U64(atomic_load(&H.dropped), 1);
    CHECK_EQ_U64(atomic_load(&H.two_copies), 0);
    check_completed(&r);
    CHECK_EQ_U64(r.src_st.reconnects, 0);
    run_teardown(&r);
}
/* Each frame of both switchovers, lost in turn, and what must follow. */
/* Each frame of both switchovers, lost in turn, and what must follow
 * (src_recover: the source has --recover-timeout; the destination always). */
static const struct drop_spec {
    const char *name;
    uint16_t type;
    bool postcopy, src_recover;
    drop_outcome want;
} drops[] = {
    {"drop-complete", LM_MSG_COMPLETE, false, false, SOURCE_RUNS},
    {"drop-verify", LM_MSG_VERIFY, false, false, SOURCE_RUNS},
    {"drop-ready", LM_MSG_SWITCHOVER_READY, false, false, SOURCE_RUNS},
    {"resume-complete", LM_MSG_COMPLETE, false, true, RESUMED},
    {"resume-verify", LM_MSG_VERIFY, false, true, RESUMED},
    {"resume-ready", LM_MSG_SWITCHOVER_READY, false, true, RESUMED},
    {"drop-commit", LM_MSG_COMMIT, false, true, DEST_RUNS},
    {"drop-resumed", LM_MSG_RESUMED, false, true, DEST_RUNS},
    {"pc-drop-switch", LM_MSG_POSTCOPY_SWITCH, true, true, SOURCE_RUNS},
    {"pc-drop-device", LM_MSG_DEVICE_STATE, true, true, SOURCE_RUNS},
    {"pc-drop-ready", LM_MSG_SWITCHOVER_READY, true, true, SOURCE_RUNS},
    /* The source committed and reconnects saying so: that is the commit. */
    {"pc-drop-run", LM_MSG_POSTCOPY_RUN, true, true, DEST_RUNS},
    {"pc-drop-resumed", LM_MSG_RESUMED, true, true, DEST_RUNS},
};

/* Postcopy recovery: every connection cut while the guest runs on the
 * destination and reads its pages (requests outstanding, packets in
 * flight), once or twice; both sides pause, the source reconnects, the
 * destination sends what it still lacks and its requests again, and the
 * migration completes verified with every page read. */
static void pc_cut(unsigned ncuts, uint16_t drop_in_recovery)
{
    run r;
    run_setup(&r, MODE_CUT, 2, true);
    H.cut_at[0] = 100;
    H.cut_at[1] = ncuts > 1 ? 400 : 0;
    /* A frame of the recovery itself lost: the link breaks again while
     * recovering, and the next reconnection must still make it. */
    H.drop_type = drop_in_recovery;
    ncuts += drop_in_recovery != 0;
    r.sp.postcopy = true;
    r.sp.postcopy_after_rounds = 1;
    r.sp.downtime_limit_ms = 0;
    r.sp.max_bandwidth = 4u << 20;
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 3000;
    r.sp.recover_timeout_ms = r.dp.recover_timeout_ms = 10000;
    r.dg.touch = true;
    run_migrate(&r);
    run_join_dest(&r);
    postcopy_must_complete(&r);
    fprintf(stderr, "[%s] cuts %u, reconnects %llu/%llu, requests %llu, connections %u\n",
            current_case, atomic_load(&H.cuts), (unsigned long long)r.src_st.reconnects,
            (unsigned long long)r.dst_st.reconnects, (unsigned long long)r.dst_st.postcopy_requests,
            atomic_load(&H.nfds));
    check_completed(&r);
    CHECK_EQ_U64(atomic_load(&H.two_copies), 0);
    CHECK_EQ_U64(atomic_load(&H.cuts) + atomic_load(&H.dropped), ncuts);
    CHECK_EQ_U64(r.src_st.reconnects, ncuts);
    CHECK_EQ_U64(r.dst_st.reconnects, ncuts);
    CHECK_EQ_U64(atomic_load(&H.recover_hellos), ncuts);
    /* main, 2 channels, preempt; again after each cut */
    CHECK_EQ_U64(atomic_load(&H.nfds), (ncuts + 1) * (1 + 2 + 1));
    CHECK_EQ_U64(touched_all(&r), block_pages[0] + block_pages[1]);
    run_teardown(&r);
}

/* Precopy resume: every connection cut during the first pass (and, for
 * twice, again after the first resume): the guest runs on at the source,
 * both sides pause, the source reconnects and sends what the destination
 * lacks plus what was written since, and the migration completes verified
 * without starting over. */
static void pre_cut(unsigned nchannels, unsigned ncuts)
{
    run r;
    run_setup(&r, MODE_CUT_BYTES, nchannels, false);
    H.cut_at[0] = 2u << 20;
    H.cut_at[1] = ncuts > 1 ? 4u << 20 : 0;
    r.sp.io_timeout_ms = r.dp.io_timeout_ms = 3000;
    r.sp.recover_timeout_ms = r.dp.recover_timeout_ms = 10000;
    r.sp.max_bandwidth = 16u << 20; /* the cuts land in the first pass */
    r.sp.max_rounds = 3;            /* the writer never lets it converge */
    run_migrate(&r);
    run_join_dest(&r);
    fprintf(
        stderr,
        "[%s] cuts %u, reconnects %llu/%llu, lacked %llu bytes, sent after %llu, total "
        "%llu\n",
        current_case, atomic_load(&H.cuts), (unsigned long long)r.src_st.reconnects,
        (unsigned long long)r.dst_st.reconnects, (unsigned long long)r.src_st.resume_lacked_bytes,
        (unsigned long long)r.src_st.resume_sent_bytes, (unsigned long long)r.src_st.transferred);
    check_completed(&r);
    CHECK_EQ_U64(atomic_load(&H.two_copies), 0);
    CHECK_EQ_U64(atomic_load(&H.cuts), ncuts);
    CHECK_EQ_U64(r.src_st.reconnects, ncuts);
    CHECK_EQ_U64(r.dst_st.reconnects, ncuts);
    CHECK_EQ_U64(atomic_load(&H.recover_hellos), ncuts);
    CHECK_EQ_U64(atomic_load(&H.nfds), (ncuts + 1) * (1 + nchannels));
    /* Not started over: what the destination lacked, plus what the guest
     * wrote since, is less than the whole. */
    CHECK(r.src_st.resume_lacked_bytes > 0);
    CHECK(r.src_st.resume_sent_bytes < r.src_st.transferred);
    run_teardown(&r);
}

static void case_pre_cut(void)
{
    pre_cut(0, 1);
}
static void case_pre_cut_multifd(void)
{
    pre_cut(2, 1);
}
static void case_pre_cut_twice(void)
{
    pre_cut(2, 2);
}

static void case_pc_cut(void)
{
    pc_cut(1, 0);
}
static void case_pc_cut_twice(void)
{
    pc_cut(2, 0);
}
static void case_pc_cut_in_recovery(void)
{
    pc_cut(1, LM_MSG_RECOVER_MAP);
}

static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    {"baseline", case_baseline},
    {"short-write", case_short_write},
    {"reset-round", case_reset_round},
    {"reset-stop", case_reset_stop},
    {"eexist", case_eexist},
    {"lose-done", case_lose_done},
    {"drop-confirmed", case_drop_confirmed},
    {"pc-cut", case_pc_cut},
    {"pc-cut-twice", case_pc_cut_twice},
    {"pc-cut-in-recovery", case_pc_cut_in_recovery},
    {"pre-cut", case_pre_cut},
    {"pre-cut-multifd", case_pre_cut_multifd},
    {"pre-cut-twice", case_pre_cut_twice},
};

/* Named on the command line (or nothing named); makes it the current case. */
static bool selected(int argc, char **argv, const char *name)
{
    bool yes = argc < 2;
    for (int a = 1; a < argc; a++)
        yes |= !strcmp(argv[a], name);
    if (yes) {
        current_case = name;
        fprintf(stderr, "--- %s\n", name);
    }
    return yes;
}

int main(int argc, char **argv)
{
    page_size = (uint64_t)sysconf(_SC_PAGESIZE);
    lm_err err;
    lm_err_init(&err);
    uint64_t features;
    if (lm_uffd_probe_features(&features, &err) < 0) {
        fprintf(stderr, "userfaultfd unavailable: %s\n", err.msg);
        TEST_SKIP("dirty tracking and postcopy need userfaultfd");
    }
    hooks = lm__sys_real;
    hooks.sendmsg = hook_sendmsg;
    hooks.connect = hook_connect;
    hooks.ioctl = hook_ioctl;
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (selected(argc, argv, cases[i].name)) {
            int before = lm_test_failures;
            cases[i].fn();
            fprintf(stderr, "--- %s: %s\n", current_case,
                    lm_test_failures == before ? "ok" : "FAILED");
        }
    for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
        if (selected(argc, argv, drops[i].name)) {
            int before = lm_test_failures;
            drop_case(drops[i].type, drops[i].postcopy, drops[i].src_recover, drops[i].want);
            fprintf(stderr, "--- %s: %s\n", current_case,
                    lm_test_failures == before ? "ok" : "FAILED");
        }
    TEST_DONE();
}
