/*
 * Zero-buffer checks: every implementation this CPU has (and the dispatcher)
 * against a plain byte loop, for alignments 0..63 x lengths 0..300 and a few
 * page-sized lengths, all-zero and with a single non-zero byte at every
 * position. The bytes around the window are 0xFF, so a read outside it turns
 * a zero answer into a wrong one; and windows that end exactly at, or start
 * exactly after, a PROT_NONE page turn an over- or under-read into a fault.
 * The dispatcher is first used from several threads at once.
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "util/zero.h"

static const char *const names[] = {"avx512", "avx2", "sse2", "scalar"};
#define N_NAMES   (sizeof names / sizeof names[0])
#define MAX_IMPLS (N_NAMES + 1) /* + the dispatcher */

static lm_is_zero_fn fns[MAX_IMPLS];
static const char *fn_names[MAX_IMPLS];
static unsigned long fn_fails[MAX_IMPLS];
static size_t n_fns;
static unsigned long calls;

/* The case being run, for the fault handler: an over- or under-read faults. */
static const char *volatile cur_impl, *volatile cur_where;
static volatile size_t cur_len, cur_pos, cur_align;

static void on_fault(int sig)
{
    char msg[256];
    int n = snprintf(msg, sizeof msg, "signal %d in %s: %s len=%zu addr%%64=%zu nonzero_at=%zd\n",
                     sig, cur_impl ? cur_impl : "?", cur_where ? cur_where : "?", cur_len,
                     cur_align, cur_pos == SIZE_MAX ? (ssize_t)-1 : (ssize_t)cur_pos);
    if (n > 0 && write(2, msg, (size_t)n) < 0)
        _exit(2);
    _exit(1);
}

static bool ref_is_zero(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

static void compare(const unsigned char *win, size_t len, const char *where, size_t pos)
{
    bool want = ref_is_zero(win, len);
    cur_where = where;
    cur_len = len;
    cur_pos = pos;
    cur_align = (uintptr_t)win % 64;
    for (size_t i = 0; i < n_fns; i++) {
        cur_impl = fn_names[i];
        bool got = fns[i](win, len);
        calls++;
        if (got != want && fn_fails[i]++ < 5)
            fprintf(stderr, "%s: %s len=%zu addr%%64=%u nonzero_at=%zd: got %d want %d\n",
                    fn_names[i], where, len, (unsigned)((uintptr_t)win % 64),
                    pos == SIZE_MAX ? (ssize_t)-1 : (ssize_t)pos, got, want);
    }
}

/* win[0..len) must be zero on entry, and is zero again on return. */
static void check_window(unsigned char *win, size_t len, const char *where)
{
    compare(win, len, where, SIZE_MAX);
    for (size_t pos = 0; pos < len; pos++) {
        win[pos] = (unsigned char)(1u << (pos % 8)); /* each bit, 0x80 included */
        compare(win, len, where, pos);
        win[pos] = 0;
    }
}

/* Zero win[0..len) and set `pad` bytes either side (clipped to data) to 0xFF. */
static void prepare(unsigned char *data, size_t data_len, unsigned char *win, size_t len,
                    size_t pad)
{
    unsigned char *lo = win - data >= (ptrdiff_t)pad ? win - pad : data;
    unsigned char *hi =
        (size_t)(data + data_len - (win + len)) >= pad ? win + len + pad : data + data_len;
    memset(lo, 0xFF, (size_t)(hi - lo));
    memset(win, 0, len);
}

struct thread_arg {
    const unsigned char *zero_page, *dirty_page;
    const char *impl;
    bool ok;
};

static void *first_use(void *argp)
{
    struct thread_arg *a = argp;
    a->ok = lm_buffer_is_zero(a->zero_page, 4096) && !lm_buffer_is_zero(a->dirty_page, 4096);
    a->impl = lm_buffer_is_zero_impl();
    return NULL;
}

static void dispatcher(const unsigned char *zero_page, const unsigned char *dirty_page)
{
    enum { T = 4 };
    pthread_t th[T];
    struct thread_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (struct thread_arg){zero_page, dirty_page, NULL, false};
        CHECK(pthread_create(&th[i], NULL, first_use, &args[i]) == 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok);
    }
    const char *impl = lm_buffer_is_zero_impl();
    for (int i = 0; i < T; i++)
        CHECK(args[i].impl == impl);
    CHECK(lm_buffer_is_zero_get(impl) != NULL);
    bool known = false;
    for (size_t i = 0; i < N_NAMES; i++)
        known |= strcmp(impl, names[i]) == 0;
    CHECK(known);
    CHECK(lm_buffer_is_zero_get("scalar") != NULL);
    CHECK(lm_buffer_is_zero_get("avx1024") == NULL);
    CHECK(lm_buffer_is_zero_get("") == NULL);
    CHECK(lm_buffer_is_zero_get(NULL) == NULL);
    CHECK(lm_buffer_is_zero(NULL, 0));
    fprintf(stderr, "dispatch: %s\n", impl);
}

int main(void)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct sigaction sa = {.sa_handler = on_fault};
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (8192 + 1024 + ps - 1) / ps;
    size_t data_len = data_pages * ps;
    unsigned char *map = mmap(NULL, (data_pages + 2) * ps, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        TEST_SKIP("mmap failed");
    unsigned char *data = map + ps, *guard_hi = data + data_len;
    CHECK(mprotect(map, ps, PROT_NONE) == 0);
    CHECK(mprotect(guard_hi, ps, PROT_NONE) == 0);

    /* The dispatcher's first use, from several threads at once. */
    memset(data, 0, 2 * 4096);
    data[4096] = 1;
    dispatcher(data, data + 4096);

    fprintf(stderr, "implementations:");
    for (size_t i = 0; i < N_NAMES; i++) {
        lm_is_zero_fn fn = lm_buffer_is_zero_get(names[i]);
        fprintf(stderr, " %s=%s", names[i], fn ? "run" : "absent");
        if (fn) {
            fn_names[n_fns] = names[i];
            fns[n_fns++] = fn;
        }
    }
    fprintf(stderr, "\n");
    fn_names[n_fns] = "dispatch";
    fns[n_fns++] = lm_buffer_is_zero;
    CHECK(n_fns >= 2);

    /* Every alignment 0..63 x every length 0..300, 0xFF around the window. */
    for (size_t align = 0; align < 64; align++)
        for (size_t len = 0; len <= 300; len++) {
            unsigned char *win = data + 128 + align;
            prepare(data, data_len, win, len, 64);
            check_window(win, len, "small");
        }

    /* Page-sized lengths at a few alignments. */
    static const size_t big[] = {4095, 4096, 4097, 8192};
    static const size_t big_align[] = {0, 1, 63};
    for (size_t a = 0; a < sizeof big_align / sizeof big_align[0]; a++)
        for (size_t b = 0; b < sizeof big / sizeof big[0]; b++) {
            unsigned char *win = data + 128 + big_align[a];
            prepare(data, data_len, win, big[b], 128);
            check_window(win, big[b], "big");
        }

    /* Windows ending exactly at, and starting exactly after, a guard page. */
    for (size_t len = 0; len <= 300 + sizeof big / sizeof big[0]; len++) {
        size_t n = len <= 300 ? len : big[len - 301];
        prepare(data, data_len, guard_hi - n, n, 256);
        check_window(guard_hi - n, n, "ends-at-guard");
        prepare(data, data_len, data, n, 256);
        check_window(data, n, "starts-after-guard");
    }

    for (size_t i = 0; i < n_fns; i++)
        if (fn_fails[i]) {
            fprintf(stderr, "%s: %lu wrong answer(s)\n", fn_names[i], fn_fails[i]);
            CHECK(fn_fails[i] == 0);
        }
    munmap(map, (data_pages + 2) * ps);

    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "%lu calls in %.2f s\n", calls,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    TEST_DONE();
}
