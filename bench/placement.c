/*
 * lm-placement MIB RUNS: how fast received data lands in fresh memory, by
 * each way a destination can place it. A sender thread writes MIB MiB of
 * random data over loopback TCP in 512 KiB packets (a multifd packet's
 * payload); the receiver puts them into a fresh mapping by:
 *   warm       readv into one reused buffer (the limit: loopback alone)
 *   prealloc   readv into memory populated before the clock starts (the
 *              receiver's cost without first touch, as --dest-prealloc)
 *   inplace-4k readv straight into fresh memory, 4 KiB pages (each page
 *              faulted in and zeroed by the kernel, then overwritten)
 *   inplace-thp the same with huge pages (livemig's default before issue 15)
 *   uffd-copy  readv into a warm buffer, then UFFDIO_COPY into the missing
 *              pages: the kernel allocates each page and copies, never zeroes
 *   populate-ahead a helper thread MADV_POPULATE_WRITEs huge pages 64 MiB
 *              ahead of the receiver, which then writes into present memory
 * Each method runs RUNS times interleaved with the others; the median rate
 * in GB/s and the run's minor faults are printed as one JSON object.
 */

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define PACKET   (512u << 10)
#define HUGE     (2u << 20)
#define AHEAD    (64u << 20)
#define MAX_RUNS 15

enum method { WARM, PREALLOC, INPLACE_4K, INPLACE_THP, UFFD_COPY, POPULATE_AHEAD, NMETHODS };
static const char *const names[NMETHODS] = {"warm",        "prealloc",  "inplace-4k",
                                            "inplace-thp", "uffd-copy", "populate-ahead"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

struct sender {
    int fd;
    size_t bytes;
    uint8_t *data;
};

static void *send_main(void *arg)
{
    struct sender *s = arg;
    for (size_t sent = 0; sent < s->bytes;) {
        ssize_t n = write(s->fd, s->data + sent % PACKET, PACKET - sent % PACKET);
        if (n <= 0)
            die("write");
        sent += (size_t)n;
    }
    return NULL;
}

static void read_full(int fd, uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n <= 0)
            die("read");
        p += n;
        len -= (size_t)n;
    }
}

struct ahead {
    uint8_t *base;
    size_t len;
    _Atomic size_t done;    /* populated up to here */
    _Atomic size_t reached; /* the receiver is here */
};

static void *populate_main(void *arg)
{
    struct ahead *a = arg;
    for (size_t off = 0; off < a->len; off += HUGE) {
        while (off >= a->reached + AHEAD)
            sched_yield();
        if (madvise(a->base + off, HUGE, MADV_POPULATE_WRITE) < 0)
            die("MADV_POPULATE_WRITE");
        a->done = off + HUGE;
    }
    return NULL;
}

static int uffd_for(uint8_t *base, size_t len)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(fd, UFFDIO_API, &api) < 0)
        die("UFFDIO_API");
    struct uffdio_register reg = {.range = {(uintptr_t)base, len},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
        die("UFFDIO_REGISTER");
    return fd;
}

/* One run: returns GB/s, *faults the minor faults it took. */
static double run(enum method m, size_t bytes, uint8_t *data, long *faults)
{
    int sv[2];
    {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(a);
        if (l < 0 || bind(l, (void *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
            getsockname(l, (void *)&a, &al) < 0)
            die("listen");
        sv[0] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(sv[0], (void *)&a, sizeof(a)) < 0)
            die("connect");
        sv[1] = accept(l, NULL, NULL);
        close(l);
    }
    uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint8_t *bounce = malloc(PACKET);
    if (mem == MAP_FAILED || !bounce)
        die("mmap");
    memset(bounce, 1, PACKET);
    bool thp = m == INPLACE_THP || m == POPULATE_AHEAD || m == PREALLOC;
    madvise(mem, bytes, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    if (m == PREALLOC && madvise(mem, bytes, MADV_POPULATE_WRITE) < 0)
        die("populate");
    int uffd = m == UFFD_COPY ? uffd_for(mem, bytes) : -1;
    struct ahead ah = {.base = mem, .len = bytes};
    pthread_t pop;
    struct sender s = {.fd = sv[0], .bytes = bytes, .data = data};
    pthread_t snd;
    /* Cold: give the host time to take back what the last run freed. */
    const char *pause = getenv("LM_PLACEMENT_PAUSE_S");
    if (pause)
        sleep((unsigned)atoi(pause));
    long f0 = minor_faults();
    double t0 = now_s();
    if (m == POPULATE_AHEAD && pthread_create(&pop, NULL, populate_main, &ah))
        die("pthread_create");
    if (pthread_create(&snd, NULL, send_main, &s))
        die("pthread_create");
    for (size_t off = 0; off < bytes; off += PACKET) {
        switch (m) {
        case WARM:
            read_full(sv[1], bounce, PACKET);
            break;
        case UFFD_COPY: {
            read_full(sv[1], bounce, PACKET);
            struct uffdio_copy c = {
                .dst = (uintptr_t)(mem + off), .src = (uintptr_t)bounce, .len = PACKET};
            if (ioctl(uffd, UFFDIO_COPY, &c) < 0)
                die("UFFDIO_COPY");
            break;
        }
        case POPULATE_AHEAD:
            ah.reached = off;
            read_full(sv[1], mem + off, PACKET);
            break;
        default:
            read_full(sv[1], mem + off, PACKET);
        }
    }
    pthread_join(snd, NULL);
    if (m == POPULATE_AHEAD)
        pthread_join(pop, NULL);
    double secs = now_s() - t0;
    *faults = minor_faults() - f0;
    if (getenv("LM_PLACEMENT_READ")) { /* how fast the placed memory reads back */
        double r0 = now_s();
        uint64_t sum = 0;
        for (size_t off = 0; off < bytes; off += 64)
            sum += *(volatile uint64_t *)(mem + off);
        fprintf(stderr, "%s: read back at %.2f GB/s (%llu)\n", names[m],
                (double)bytes / (now_s() - r0) / 1e9, (unsigned long long)(sum & 1));
    }
    if (uffd >= 0)
        close(uffd);
    munmap(mem, bytes);
    free(bounce);
    close(sv[0]);
    close(sv[1]);
    return (double)bytes / secs / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 512;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (runs < 1 || runs > MAX_RUNS || !mib)
        return fprintf(stderr, "usage: lm-placement MIB RUNS (1..%d)\n", MAX_RUNS), 2;
    size_t bytes = (mib << 20) / PACKET * PACKET;
    uint8_t *data = malloc(PACKET);
    if (!data)
        die("malloc");
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < PACKET / 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(data + 8 * i, &x, 8);
    }
    double rate[NMETHODS][MAX_RUNS];
    long faults[NMETHODS][MAX_RUNS];
    long dummy;
    run(INPLACE_THP, bytes, data, &dummy); /* warm-up */
    for (int r = 0; r < runs; r++)
        for (int m = 0; m < NMETHODS; m++)
            rate[m][r] = run((enum method)m, bytes, data, &faults[m][r]);
    printf("{\"mib\": %zu, \"runs\": %d", mib, runs);
    for (int m = 0; m < NMETHODS; m++) {
        double sorted[MAX_RUNS];
        memcpy(sorted, rate[m], sizeof(double) * (size_t)runs);
        qsort(sorted, (size_t)runs, sizeof(double), cmp);
        printf(", \"%s\": {\"gbps_median\": %.3f, \"gbps\": [", names[m], sorted[runs / 2]);
        for (int r = 0; r < runs; r++)
            printf("%s%.3f", r ? ", " : "", rate[m][r]);
        printf("], \"minor_faults\": %ld}", faults[m][runs / 2]);
    }
    printf("}\n");
    free(data);
    return 0;
}
