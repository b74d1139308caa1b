/* Helpers of the fuzz targets: the small RAM layout and in-memory
 * connections (fuzz.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fuzz.h"
#include "transport/conn.h"
#include "util/sys.h"

/* Block memory is kept for the next run: a fresh allocation each time
 * costs its page faults and an munmap, ten times the run itself. */
#define SPARE_MAX 16
typedef struct spare_block {
    void *host;
    size_t len;
} spare_block;
static spare_block spare[SPARE_MAX];
static unsigned nspare;

static void *block_alloc(size_t len)
{
    for (unsigned i = 0; i < nspare; i++)
        if (spare[i].len == len) {
            void *host = spare[i].host;
            spare[i] = spare[--nspare];
            return host;
        }
    void *host = aligned_alloc(FUZZ_PAGE, len);
    FUZZ_CHECK(host);
    return host;
}

static void block_free(void *host, size_t len)
{
    if (nspare < SPARE_MAX)
        spare[nspare++] = (spare_block){host, len};
    else
        free(host);
}

void fuzz_ram_init(lm_ram *ram)
{
    static const struct {
        uint32_t id, pages;
        const char *name; /* as gen_corpus.c's HELLO names them */
    } layout[] = {{FUZZ_BLOCK0_ID, FUZZ_BLOCK0_PAGES, "pc.ram"},
                  {FUZZ_BLOCK1_ID, FUZZ_BLOCK1_PAGES, "vga.vram"}};
    lm_err err;
    lm_err_init(&err);
    lm__ram_init(ram, FUZZ_PAGE);
    for (size_t i = 0; i < sizeof(layout) / sizeof(layout[0]); i++) {
        size_t len = (size_t)layout[i].pages * FUZZ_PAGE;
        void *host = block_alloc(len);
        memset(host, 0, len);
        FUZZ_CHECK(lm__ram_add(ram, layout[i].id, layout[i].name, host, len, LM_RAM_ZEROED, &err) ==
                   0);
    }
    FUZZ_CHECK(lm__ram_receivedmap_reset(ram, &err) == 0);
}

void fuzz_ram_free(lm_ram *ram)
{
    for (unsigned i = 0; i < ram->nblocks; i++)
        block_free(ram->blocks[i].host, ram->blocks[i].len);
    lm__ram_release(ram);
}

/* ---- in-memory connections ---------------------------------------------- */

/* HELLO's 64 channels, the preempt connection, the main connection and a
 * few reconnections. */
#define MAX_STREAMS 72

typedef struct stream {
    int fd;
    bool taken;
    const uint8_t *data;
    size_t len, pos;
} stream;

static struct {
    pthread_mutex_t lock; /* channel threads read their streams concurrently */
    stream s[MAX_STREAMS];
    unsigned n, next;
    fuzz_conn_opts o;
    uint64_t written;
    int listener;
} mc = {.lock = PTHREAD_MUTEX_INITIALIZER, .listener = -1};

static stream *find(int fd)
{
    for (unsigned i = 0; i < mc.n; i++)
        if (mc.s[i].fd == fd)
            return &mc.s[i];
    return NULL;
}

static ssize_t fake_readv(int fd, const struct iovec *iov, int iovcnt)
{
    pthread_mutex_lock(&mc.lock);
    stream *s = find(fd);
    if (!s) {
        pthread_mutex_unlock(&mc.lock);
        return lm__sys_real.readv(fd, iov, iovcnt);
    }
    size_t avail = s->len - s->pos, done = 0;
    if (mc.o.chunk && avail > mc.o.chunk)
        avail = mc.o.chunk;
    for (int i = 0; i < iovcnt && done < avail; i++) {
        size_t n = iov[i].iov_len < avail - done ? iov[i].iov_len : avail - done;
        memcpy(iov[i].iov_base, s->data + s->pos + done, n);
        done += n;
    }
    s->pos += done;
    bool eof_closes = mc.o.eof_closes;
    pthread_mutex_unlock(&mc.lock);
    if (done || eof_closes)
        return (ssize_t)done;
    errno = EIO;
    return -1;
}

static ssize_t fake_recv(int fd, void *buf, size_t len, int flags)
{
    pthread_mutex_lock(&mc.lock);
    stream *s = find(fd);
    if (!s) {
        pthread_mutex_unlock(&mc.lock);
        return lm__sys_real.recv(fd, buf, len, flags);
    }
    size_t avail = s->len - s->pos;
    size_t n = len < avail ? len : avail;
    memcpy(buf, s->data + s->pos, n);
    if (!(flags & MSG_PEEK))
        s->pos += n;
    bool eof_closes = mc.o.eof_closes;
    pthread_mutex_unlock(&mc.lock);
    if (n || eof_closes)
        return (ssize_t)n;
    errno = EIO;
    return -1;
}

static ssize_t fake_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    pthread_mutex_lock(&mc.lock);
    stream *s = find(fd);
    size_t n = 0;
    for (size_t i = 0; s && i < msg->msg_iovlen; i++)
        n += msg->msg_iov[i].iov_len;
    mc.written += n;
    pthread_mutex_unlock(&mc.lock);
    return s ? (ssize_t)n : lm__sys_real.sendmsg(fd, msg, flags);
}

static int fake_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    if (fd != mc.listener)
        return lm__sys_real.accept4(fd, addr, len, flags);
    pthread_mutex_lock(&mc.lock);
    int got = -1;
    if (mc.next < mc.n) {
        mc.s[mc.next].taken = true;
        got = mc.s[mc.next++].fd;
    }
    pthread_mutex_unlock(&mc.lock);
    if (got < 0)
        errno = EMFILE; /* not a reason to wait: whoever accepts gives up now */
    return got;
}

static int fake_ioctl(int fd, unsigned long request, void *arg)
{
    if (!mc.o.no_uffd || _IOC_TYPE(request) != UFFDIO)
        return lm__sys_real.ioctl(fd, request, arg);
    errno = ENOSYS;
    return -1;
}

static const lm_sys_ops fake_ops = {
    .sendmsg = fake_sendmsg,
    .readv = fake_readv,
    .recv = fake_recv,
    .connect = NULL, /* set from lm__sys_real below */
    .accept4 = fake_accept4,
    .ioctl = fake_ioctl,
};

static void install(void)
{
    static lm_sys_ops ops;
    if (ops.readv)
        return;
    ops = fake_ops;
    ops.connect = lm__sys_real.connect;
    FUZZ_CHECK(lm__sys_set(&ops) == 0);
    mc.listener = eventfd(1, EFD_CLOEXEC); /* always readable, never read */
    FUZZ_CHECK(mc.listener >= 0);
}

void fuzz_conn_reset(const fuzz_conn_opts *o)
{
    install();
    pthread_mutex_lock(&mc.lock);
    for (unsigned i = 0; i < mc.n; i++)
        if (!mc.s[i].taken)
            close(mc.s[i].fd);
    mc.n = mc.next = 0;
    mc.written = 0;
    mc.o = *o;
    pthread_mutex_unlock(&mc.lock);
}

int fuzz_conn_add(const uint8_t *data, size_t len)
{
    pthread_mutex_lock(&mc.lock);
    int fd = -1;
    if (mc.n < MAX_STREAMS && (fd = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0) {
        stream *old = find(fd); /* a number the code under test closed */
        if (old)
            old->fd = -1;
        mc.s[mc.n++] = (stream){.fd = fd, .data = data, .len = len};
    }
    pthread_mutex_unlock(&mc.lock);
    return fd;
}

void fuzz_conn_take(int fd)
{
    pthread_mutex_lock(&mc.lock);
    stream *s = find(fd);
    if (s)
        s->taken = true;
    pthread_mutex_unlock(&mc.lock);
}

int fuzz_conn_listener(void)
{
    install();
    return mc.listener;
}

uint64_t fuzz_conn_written(void)
{
    pthread_mutex_lock(&mc.lock);
    uint64_t n = mc.written;
    pthread_mutex_unlock(&mc.lock);
    return n;
}

void fuzz_conn_finish(void)
{
    pthread_mutex_lock(&mc.lock);
    for (unsigned i = 0; i < mc.n; i++) {
        stream *s = &mc.s[i];
        if (s->fd < 0)
            continue;
        if (s->taken) {
            /* Whoever took a connection closes it: nothing else opened
             * since may still hold its number once the run is over. */
            if (fcntl(s->fd, F_GETFD) != -1) {
                fprintf(stderr, "fuzz: descriptor %d of connection %u left open\n", s->fd, i);
                abort();
            }
        } else {
            close(s->fd);
        }
    }
    mc.n = mc.next = 0;
    pthread_mutex_unlock(&mc.lock);
}

size_t fuzz_split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len, size_t max)
{
    size_t n = 0;
    while (n < max) {
        const uint8_t *sep = memmem(data, size, FUZZ_STREAM_SEP, FUZZ_STREAM_SEP_LEN);
        part[n] = data;
        len[n] = sep ? (size_t)(sep - data) : size;
        n++;
        if (!sep)
            break;
        size -= len[n - 1] + FUZZ_STREAM_SEP_LEN;
        data = sep + FUZZ_STREAM_SEP_LEN;
    }
    return n;
}

void fuzz_conn_open(const uint8_t *data, size_t size, const fuzz_conn_opts *o, lm_conn *c,
                    const char *peer, lm_err *err)
{
    fuzz_conn_reset(o);
    int fd = fuzz_conn_add(data, size);
    FUZZ_CHECK(fd >= 0);
    fuzz_conn_take(fd);
    lm_err_init(err);
    lm_conn_init(c, fd, 1000, NULL, peer, err);
}
