/*
 * A standalone driver for the fuzz targets, for builds without libFuzzer
 * (gcc, `make check`): replays every corpus file, then runs deterministic
 * mutations of them. It takes libFuzzer's spelling of what it shares:
 *
 *   fuzz_TARGET [-runs=N] [-seed=S] [-max_len=L] DIR_OR_FILE...
 *
 * and ignores libFuzzer's other -flags. Each input is passed in a buffer of
 * exactly its size, so a sanitizer build (make check-asan) sees any read
 * past its end. Same seed, same inputs: a failure here reproduces.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

typedef struct input {
    uint8_t *data;
    size_t len;
} input;

static input *seeds;
static size_t nseeds, capseeds;

static void add_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    input in = {NULL, 0};
    size_t cap = 0;
    for (;;) {
        if (in.len == cap) {
            cap = cap ? 2 * cap : 4096;
            in.data = realloc(in.data, cap);
            if (!in.data)
                exit(2);
        }
        size_t n = fread(in.data + in.len, 1, cap - in.len, f);
        if (n == 0)
            break;
        in.len += n;
    }
    fclose(f);
    if (nseeds == capseeds) {
        capseeds = capseeds ? 2 * capseeds : 64;
        seeds = realloc(seeds, capseeds * sizeof(*seeds));
        if (!seeds)
            exit(2);
    }
    seeds[nseeds++] = in;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A directory's files in name order, so every run sees the same sequence. */
static void add_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "cannot stat %s: %s\n", path, strerror(errno));
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d)
        exit(2);
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        if (!names || asprintf(&names[n], "%s/%s", path, e->d_name) < 0)
            exit(2);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n; i++) {
        add_file(names[i]);
        free(names[i]);
    }
    free(names);
}

static uint64_t rng;

static uint64_t next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1DULL;
}

static uint64_t below(uint64_t n)
{
    return n ? next() % n : 0;
}

/* Values that sit on the boundaries a wire decoder checks. */
static uint64_t interesting(void)
{
    static const uint64_t v[] = {0,
                                 1,
                                 2,
                                 7,
                                 8,
                                 16,
                                 64,
                                 127,
                                 128,
                                 129,
                                 255,
                                 256,
                                 4095,
                                 4096,
                                 4097,
                                 65535,
                                 65536,
                                 1u << 21,
                                 (1u << 21) + 1,
                                 64u << 20,
                                 (64u << 20) + 1,
                                 0x7fffffff,
                                 0x80000000,
                                 0xffffffff,
                                 1ull << 46,
                                 (1ull << 46) + 4096,
                                 UINT64_MAX,
                                 UINT64_MAX - 4095};
    return v[below(sizeof(v) / sizeof(v[0]))];
}

/* One mutation of buf[0..*len) (capacity cap), in place. */
static void mutate(uint8_t *buf, size_t *len, size_t cap)
{
    size_t n = *len;
    switch (below(9)) {
    case 0: /* flip a bit */
        if (n)
            buf[below(n)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* a random byte */
        if (n)
            buf[below(n)] = (uint8_t)next();
        break;
    case 2: { /* a big-endian field set to a boundary value */
        size_t w = below(2) ? 4 : 8;
        if (n >= w) {
            size_t at = below(n - w + 1) & ~(size_t)3; /* fields are aligned */
            uint64_t v = interesting();
            for (size_t i = 0; i < w; i++)
                buf[at + i] = (uint8_t)(v >> (8 * (w - 1 - i)));
        }
        break;
    }
    case 3: /* a field plus or minus a little */
        if (n >= 4) {
            size_t at = below(n - 3);
            buf[at + 3] = (uint8_t)(buf[at + 3] + (below(2) ? 1 : -1));
        }
        break;
    case 4: /* cut the end */
        *len = below(n + 1);
        break;
    case 5: { /* delete a range */
        if (!n)
            break;
        size_t at = below(n), k = 1 + below(n - at < 64 ? n - at : 64);
        memmove(buf + at, buf + at + k, n - at - k);
        *len = n - k;
        break;
    }
    case 6: { /* insert random bytes */
        size_t k = 1 + below(16);
        if (n + k > cap)
            break;
        size_t at = below(n + 1);
        memmove(buf + at + k, buf + at, n - at);
        for (size_t i = 0; i < k; i++)
            buf[at + i] = (uint8_t)next();
        *len = n + k;
        break;
    }
    case 7: { /* repeat a range (a frame or packet twice) */
        if (!n)
            break;
        size_t at = below(n), k = 1 + below(n - at);
        if (n + k > cap)
            k = cap - n;
        memmove(buf + at + k, buf + at, n - at);
        *len = n + k;
        break;
    }
    default: { /* the tail of another seed */
        const input *o = &seeds[below(nseeds)];
        size_t at = below(n + 1), from = below(o->len + 1), k = o->len - from;
        if (at + k > cap)
            k = cap - at;
        memcpy(buf + at, o->data + from, k);
        *len = at + k;
        break;
    }
    }
}

static void run_one(const uint8_t *data, size_t len)
{
    /* A buffer of exactly len bytes: reading past it is an error ASan sees. */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        exit(2);
    memcpy(copy, data, len);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
}

int main(int argc, char **argv)
{
    unsigned long long runs = 1000, seed = 1;
    size_t max_len = 1 << 20;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-runs=", 6))
            runs = strtoull(argv[i] + 6, NULL, 0);
        else if (!strncmp(argv[i], "-seed=", 6))
            seed = strtoull(argv[i] + 6, NULL, 0);
        else if (!strncmp(argv[i], "-max_len=", 9))
            max_len = strtoull(argv[i] + 9, NULL, 0);
        else if (argv[i][0] != '-')
            add_path(argv[i]);
    }
    size_t replayed = nseeds;
    for (size_t i = 0; i < nseeds; i++)
        run_one(seeds[i].data, seeds[i].len);
    if (!nseeds) {
        static uint8_t empty[1];
        seeds = malloc(sizeof(*seeds));
        seeds[nseeds++] = (input){empty, 0};
    }
    rng = seed * 0x9E3779B97F4A7C15ULL | 1;
    uint8_t *buf = malloc(max_len ? max_len : 1);
    if (!buf)
        exit(2);
    for (unsigned long long r = 0; r < runs; r++) {
        const input *s = &seeds[below(nseeds)];
        size_t len = s->len < max_len ? s->len : max_len;
        memcpy(buf, s->data, len);
        for (uint64_t k = 1 + below(4); k; k--)
            mutate(buf, &len, max_len);
        run_one(buf, len);
    }
    fprintf(stderr, "%s: %zu corpus inputs replayed, %llu mutations run (seed %llu): no failure\n",
            argv[0], replayed, runs, seed);
    free(buf);
    return 0;
}
