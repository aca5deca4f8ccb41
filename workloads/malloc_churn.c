/* malloc_churn - N times: p = malloc(size), write one byte, free(p).
 *
 *   malloc_churn [--wait] [N] [size]      defaults: N=1000000, size=64
 *
 * Benchmark workload for the allocator uprobes: prints "HL pid" (then, with --wait, "HL ready"
 * and blocks until one byte or EOF arrives on stdin), then "HL loop ns=<elapsed>"
 * (CLOCK_MONOTONIC around the loop only) and "HL done". The pointer goes through a global
 * volatile, so the compiler cannot elide the malloc/free pair.
 */
#define _GNU_SOURCE
#include "report.h"

#include <time.h>

static void *volatile cur;

static unsigned long parse_ul(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || end == s || *end != '\0' || s[0] == '-') {
        if (!errno)
            errno = EINVAL;
        hl_die(what);
    }
    return v;
}

int main(int argc, char **argv)
{
    int wait = 0, pos = 0;
    unsigned long n = 1000000UL;
    size_t size = 64;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0)
            wait = 1;
        else if (pos == 0 && ++pos)
            n = parse_ul(argv[i], "parse N");
        else if (pos == 1 && ++pos)
            size = (size_t)parse_ul(argv[i], "parse size");
        else {
            errno = EINVAL;
            hl_die("usage: malloc_churn [--wait] [N] [size]");
        }
    }
    if (size == 0) {
        errno = EINVAL;
        hl_die("size=0");
    }

    hl_pid();
    if (wait) {
        hl_ready();
        hl_stdin_wait();
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned long i = 0; i < n; i++) {
        cur = malloc(size);
        if (!cur)
            hl_die("malloc");
        *(volatile char *)cur = (char)i;
        free(cur);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    hl_loop((long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    hl_done();
    return 0;
}
