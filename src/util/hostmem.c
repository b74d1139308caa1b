/* What this host can still give: see hostmem.h. Linux only. */
#include "util/hostmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads a small file into buf (NUL-terminated); its length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* A number in a file, or false ("max", missing, unreadable). */
static bool read_u64(const char *dir, const char *name, uint64_t *out)
{
    char path[384], buf[64], *end;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (read_small(path, buf, sizeof(buf)) <= 0 || buf[0] < '0' || buf[0] > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || (*end && *end != '\n'))
        return false;
    *out = v;
    return true;
}

static bool is_dir_with(const char *dir, const char *file)
{
    char path[384];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return access(path, R_OK) == 0;
}

void lm_hostmem_init(lm_hostmem *h)
{
    memset(h, 0, sizeof(*h));
    char text[4096];
    if (read_small("/proc/self/cgroup", text, sizeof(text)) <= 0)
        return;
    /* v2 is mounted at /sys/fs/cgroup, or beside v1 at .../unified. */
    const char *v2_root = is_dir_with("/sys/fs/cgroup", "cgroup.controllers")
                              ? "/sys/fs/cgroup"
                              : "/sys/fs/cgroup/unified";
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        const char *path = c2 + 1;
        *c2 = '\0';
        const char *controllers = c1 + 1;
        if (!strcmp(line, "0") && !*controllers) {
            snprintf(h->v2_root, sizeof(h->v2_root), "%s", v2_root);
            snprintf(h->v2, sizeof(h->v2), "%s%s", v2_root, path);
        } else {
            /* "memory", or a list such as "cpu,memory" */
            for (const char *p = controllers; p && *p;) {
                size_t n = strcspn(p, ",");
                if (n == 6 && !strncmp(p, "memory", 6)) {
                    snprintf(h->v1_root, sizeof(h->v1_root), "/sys/fs/cgroup/memory");
                    snprintf(h->v1, sizeof(h->v1), "/sys/fs/cgroup/memory%s", path);
                }
                p = p[n] ? p + n + 1 : NULL;
            }
        }
    }
}

/* The least headroom of dir and its parents up to root (UINT64_MAX when no
 * level has a limit). */
static uint64_t cgroup_headroom(const char *dir, const char *root, const char *limit_file,
                                const char *usage_file)
{
    char level[256];
    uint64_t least = UINT64_MAX;
    snprintf(level, sizeof(level), "%s", dir);
    size_t root_len = strlen(root);
    for (;;) {
        uint64_t limit, usage;
        /* v1 says "no limit" with a page-rounded LONG_MAX */
        if (read_u64(level, limit_file, &limit) && limit < (1ull << 62) &&
            read_u64(level, usage_file, &usage)) {
            uint64_t room = limit > usage ? limit - usage : 0;
            least = room < least ? room : least;
        }
        char *slash = strrchr(level, '/');
        if (!slash || (size_t)(slash - level) < root_len)
            break;
        *slash = '\0';
    }
    return least;
}

int lm_hostmem_available(const lm_hostmem *h, uint64_t *bytes, const char **what)
{
    char text[8192];
    ssize_t n = read_small("/proc/meminfo", text, sizeof(text));
    if (n < 0)
        return (int)n;
    const char *line = strstr(text, "MemAvailable:");
    unsigned long long kib;
    if (!line || sscanf(line, "MemAvailable: %llu kB", &kib) != 1)
        return -ENODATA;
    *bytes = (uint64_t)kib * 1024;
    *what = "MemAvailable";
    uint64_t room = UINT64_MAX;
    if (h->v2[0])
        room = cgroup_headroom(h->v2, h->v2_root, "memory.max", "memory.current");
    if (h->v1[0]) {
        uint64_t v1 =
            cgroup_headroom(h->v1, h->v1_root, "memory.limit_in_bytes", "memory.usage_in_bytes");
        room = v1 < room ? v1 : room;
    }
    if (room < *bytes) {
        *bytes = room;
        *what = "the memory cgroup's limit";
    }
    return 0;
}

bool lm_hostmem_thp_possible(void)
{
    char buf[128];
    if (read_small("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)) <= 0)
        return false;
    return !strstr(buf, "[never]");
}
