/* mmap_churn - N times: mmap an anonymous RW region, write one byte, munmap it.
 *
 *   mmap_churn [N] [len]      defaults: N=200000, len=4096
 *
 * Benchmark workload: prints "HL pid", then "HL loop ns=<elapsed>" (CLOCK_MONOTONIC around the
 * loop, so a benchmark can time the traced work without the tracer's start-up) and "HL done".
 */
#define _GNU_SOURCE
#include "report.h"

#include <sys/mman.h>
#include <time.h>

static unsigned long parse_ul(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 0);
    if (errno || end == s || *end != '\0' || s[0] == '-')
        hl_die(what);
    return v;
}

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? parse_ul(argv[1], "parse N") : 200000UL;
    size_t len = argc > 2 ? (size_t)parse_ul(argv[2], "parse len") : 4096;
    if (len == 0)
        hl_die("len=0");

    hl_pid();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned long i = 0; i < n; i++) {
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            hl_die("mmap");
        *(volatile char *)p = (char)i;
        if (munmap(p, len) != 0)
            hl_die("munmap");
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    hl_line("HL loop ns=%lld", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    hl_done();
    return 0;
}
