/*
 * lm-limits: measures the physical limits that bound a live migration on this
 * machine, so that benchmark results can be stated as ratios to them.
 *
 *   loopback TCP, one stream     1 GiB from one thread to another, 1 MiB writes
 *   memcpy                       256 MiB between already-populated buffers
 *   first-touch fault, 4 KiB     one byte written per page of a fresh 256 MiB mmap
 *   first-touch fault, THP       the same with MADV_HUGEPAGE
 *   XXH3_64bits                  over 256 MiB populated
 *
 * Each probe runs once to warm up (discarded) and then several times; the
 * median is reported. One JSON object goes to stdout, a summary to stderr.
 * Fresh memory is expensive here (the host reclaims freed memory within
 * seconds), so the sizes and repetitions keep the whole run well under 30 s.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define MIB     (1024ull * 1024)
#define GIB     (1024ull * MIB)
#define PAGE_4K 4096ull
#define HUGE_2M (2 * MIB)

#define TCP_BYTES (1 * GIB)
#define TCP_CHUNK (1 * MIB)
#define BUF_BYTES (256 * MIB)
#define MAX_RUNS  16

static int runs_tcp = 5, runs_mem = 7, runs_fault = 3;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[MAX_RUNS];
    memcpy(s, v, (size_t)n * sizeof(*s));
    qsort(s, (size_t)n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double gbps(uint64_t bytes, double secs)
{
    return secs > 0 ? (double)bytes / secs / 1e9 : 0;
}

static void die(const char *what)
{
    fprintf(stderr, "lm-limits: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    return p;
}

/* Populated memory: written once so that no later probe pays for faults. */
static uint8_t *map_populated(size_t len, uint8_t seed)
{
    uint8_t *p = map_anon(len);
    for (size_t i = 0; i < len; i += PAGE_4K)
        memset(p + i, (int)(seed + i / PAGE_4K), PAGE_4K);
    return p;
}

/* ---- (a) loopback TCP, one stream ---- */

typedef struct tcp_job {
    int port;
    uint64_t bytes;
    int err;
} tcp_job;

static void *tcp_sender(void *arg)
{
    tcp_job *j = arg;
    uint8_t *buf = malloc(TCP_CHUNK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)j->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!buf || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        j->err = errno ? errno : ENOMEM;
        goto out;
    }
    memset(buf, 0xa5, TCP_CHUNK);
    for (uint64_t left = j->bytes; left;) {
        size_t n = left < TCP_CHUNK ? (size_t)left : TCP_CHUNK;
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            j->err = errno;
            break;
        }
        left -= (uint64_t)w;
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

/* Seconds for the receiver to get 1 GiB, from connect to the last byte. */
static double tcp_once(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0)
        die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
        die("bind/listen");
    tcp_job job = {.port = ntohs(sa.sin_port), .bytes = TCP_BYTES};
    uint8_t *buf = malloc(TCP_CHUNK);
    if (!buf)
        die("malloc");
    memset(buf, 0, TCP_CHUNK);
    pthread_t th;
    double t0 = now_s();
    if (pthread_create(&th, NULL, tcp_sender, &job) != 0)
        die("pthread_create");
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        die("accept");
    uint64_t got = 0;
    while (got < TCP_BYTES) {
        ssize_t r = read(fd, buf, TCP_CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (uint64_t)r;
    }
    double t = now_s() - t0;
    pthread_join(th, NULL);
    close(fd);
    close(lfd);
    free(buf);
    if (got != TCP_BYTES || job.err) {
        errno = job.err ? job.err : EPIPE;
        die("loopback transfer");
    }
    return t;
}

/* ---- (c, d) first touch of fresh anonymous memory ---- */

typedef struct fault_result {
    double secs;
    long minflt;
    double huge_fraction; /* of the range backed by huge pages after the touch */
} fault_result;

/* AnonHugePages of the whole process, in bytes (0 if unknown). */
static uint64_t anon_huge_bytes(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    unsigned long long kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static fault_result fault_once(int huge)
{
    fault_result r = {0};
    /* Over-map by 2 MiB so the range can start on a huge page boundary. */
    size_t maplen = BUF_BYTES + HUGE_2M;
    uint8_t *map = map_anon(maplen);
    uint8_t *p = (uint8_t *)(((uintptr_t)map + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
    if (madvise(p, BUF_BYTES, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0 && huge)
        fprintf(stderr, "lm-limits: madvise(MADV_HUGEPAGE): %s\n", strerror(errno));
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now_s();
    for (size_t i = 0; i < BUF_BYTES; i += PAGE_4K)
        ((volatile uint8_t *)p)[i] = 1;
    r.secs = now_s() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    r.minflt = ru1.ru_minflt - ru0.ru_minflt;
    r.huge_fraction = (double)anon_huge_bytes() / (double)BUF_BYTES;
    if (r.huge_fraction > 1)
        r.huge_fraction = 1;
    munmap(map, maplen);
    return r;
}

/* ---- reporting ---- */

static void json_num(const char *key, double v, int prec, int *first)
{
    printf("%s\n  \"%s\": %.*f", *first ? "" : ",", key, prec, v);
    *first = 0;
}

static void json_str(const char *key, const char *v, int *first)
{
    printf("%s\n  \"%s\": \"", *first ? "" : ",", key);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            putchar('\\');
        if ((unsigned char)*v >= 0x20)
            putchar(*v);
    }
    putchar('"');
    *first = 0;
}

static void read_first_line(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (!f)
        return;
    if (fgets(out, (int)len, f))
        out[strcspn(out, "\n")] = 0;
    fclose(f);
}

static void usage(void)
{
    fprintf(stderr, "usage: lm-limits [--quick]\n"
                    "  measures loopback TCP, memcpy, first-touch fault and XXH3 limits;\n"
                    "  JSON on stdout, summary on stderr. --quick: fewer repetitions.\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            runs_tcp = 3;
            runs_mem = 3;
            runs_fault = 1;
        } else {
            usage();
            return strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? 2 : 0;
        }
    }
    double t_start = now_s();
    double v[MAX_RUNS];

    /* (c) first touch, 4 KiB pages. Measured first, before this process has
     * freed anything, so that the warm-up run meets memory the host may have
     * reclaimed: it is reported on its own (cold), the median of the later runs
     * (memory just freed by this process) is the main number. */
    fault_result fr = fault_once(0);
    double fault_cold_s = fr.secs;
    long minflt_per_run = fr.minflt;
    double us[MAX_RUNS];
    for (int i = 0; i < runs_fault; i++) {
        fr = fault_once(0);
        v[i] = gbps(BUF_BYTES, fr.secs);
        us[i] = fr.secs * 1e6 / (double)(BUF_BYTES / PAGE_4K);
        minflt_per_run = fr.minflt;
    }
    double fault_4k_gbps = median(v, runs_fault), fault_4k_us = median(us, runs_fault);
    double fault_4k_cold_us = fault_cold_s * 1e6 / (double)(BUF_BYTES / PAGE_4K);

    /* (d) first touch with MADV_HUGEPAGE. */
    fr = fault_once(1);
    double thp_cold_gbps = gbps(BUF_BYTES, fr.secs);
    double huge_frac[MAX_RUNS];
    for (int i = 0; i < runs_fault; i++) {
        fr = fault_once(1);
        v[i] = gbps(BUF_BYTES, fr.secs);
        huge_frac[i] = fr.huge_fraction;
    }
    double thp_gbps = median(v, runs_fault), thp_frac = median(huge_frac, runs_fault);

    /* (a) loopback TCP. */
    tcp_once();
    for (int i = 0; i < runs_tcp; i++)
        v[i] = gbps(TCP_BYTES, tcp_once());
    double tcp_gbps = median(v, runs_tcp);

    /* (b) memcpy and (e) XXH3 share two populated buffers. */
    uint8_t *a = map_populated(BUF_BYTES, 1), *b = map_populated(BUF_BYTES, 2);
    memcpy(b, a, BUF_BYTES);
    for (int i = 0; i < runs_mem; i++) {
        double t0 = now_s();
        memcpy(i % 2 ? a : b, i % 2 ? b : a, BUF_BYTES);
        v[i] = gbps(BUF_BYTES, now_s() - t0);
    }
    double memcpy_gbps = median(v, runs_mem);

    volatile XXH64_hash_t sink = XXH3_64bits(a, BUF_BYTES);
    for (int i = 0; i < runs_mem; i++) {
        double t0 = now_s();
        sink ^= XXH3_64bits(i % 2 ? a : b, BUF_BYTES);
        v[i] = gbps(BUF_BYTES, now_s() - t0);
    }
    (void)sink;
    double xxh3_gbps = median(v, runs_mem);
    munmap(a, BUF_BYTES);
    munmap(b, BUF_BYTES);

    double elapsed = now_s() - t_start;

    char thp_mode[128], model[256] = "";
    read_first_line("/sys/kernel/mm/transparent_hugepage/enabled", thp_mode, sizeof(thp_mode));
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[512];
        while (fgets(line, sizeof(line), ci)) {
            char *c = strchr(line, ':');
            if (!strncmp(line, "model name", 10) && c) {
                snprintf(model, sizeof(model), "%s", c + 2);
                model[strcspn(model, "\n")] = 0;
                break;
            }
        }
        fclose(ci);
    }
    struct utsname un;
    uname(&un);

    int first = 1;
    printf("{");
    json_num("loopback_tcp_gbps", tcp_gbps, 3, &first);
    json_num("memcpy_gbps", memcpy_gbps, 3, &first);
    json_num("fault_4k_us", fault_4k_us, 3, &first);
    json_num("fault_4k_gbps", fault_4k_gbps, 3, &first);
    json_num("fault_4k_cold_us", fault_4k_cold_us, 3, &first);
    json_num("fault_4k_minflt_per_run", (double)minflt_per_run, 0, &first);
    json_num("fault_thp_gbps", thp_gbps, 3, &first);
    json_num("fault_thp_cold_gbps", thp_cold_gbps, 3, &first);
    json_num("fault_thp_huge_fraction", thp_frac, 3, &first);
    json_num("xxh3_gbps", xxh3_gbps, 3, &first);
    json_num("runs_tcp", runs_tcp, 0, &first);
    json_num("runs_mem", runs_mem, 0, &first);
    json_num("runs_fault", runs_fault, 0, &first);
    json_num("elapsed_s", elapsed, 2, &first);
    json_num("nproc", (double)sysconf(_SC_NPROCESSORS_ONLN), 0, &first);
    json_str("cpu_model", model, &first);
    json_str("kernel", un.release, &first);
    json_str("thp_enabled", thp_mode, &first);
    printf("\n}\n");
    fflush(stdout);

    fprintf(stderr,
            "lm-limits (median of %d/%d/%d runs after a warm-up, %.1f s in all):\n"
            "  loopback TCP, one stream   %7.2f GB/s\n"
            "  memcpy                     %7.2f GB/s\n"
            "  first touch, 4 KiB pages   %7.2f GB/s  %6.2f us/fault (cold first run %.2f us)\n"
            "  first touch, MADV_HUGEPAGE %7.2f GB/s  (cold first run %.2f GB/s, %.0f%% huge)\n"
            "  XXH3_64bits                %7.2f GB/s\n",
            runs_tcp, runs_mem, runs_fault, elapsed, tcp_gbps, memcpy_gbps, fault_4k_gbps,
            fault_4k_us, fault_4k_cold_us, thp_gbps, thp_cold_gbps, thp_frac * 100, xxh3_gbps);
    return 0;
}
