/* common.h - helpers shared by the scenario programs (on top of ../report.h).
 *
 * Nothing here calls malloc or stdio: pointer arrays are mmap'd, numbers are parsed with
 * strtol, sleeps are nanosleep. So the only heap activity of a scenario is the one it is about.
 */
#ifndef HEAPLINE_SCENARIO_COMMON_H
#define HEAPLINE_SCENARIO_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "../report.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* After each phase: "HL brk phase=<name> sbrk=0x.." then "HL rss anon=<bytes>". */
static inline void sc_phase(const char *name)
{
    hl_brk(name);
    hl_rss();
}

/* Usage error: message on fd 2, exit 2 (not 125: nothing failed, the command line was wrong). */
static inline void sc_usage(const char *msg)
{
    size_t n = strlen(msg);
    ssize_t w = write(2, msg, n);
    (void)w;
    _exit(2);
}

/* A decimal argument in [lo, hi], or the default when the argument is absent. */
static inline long sc_arg(int argc, char **argv, int i, long def, long lo, long hi, const char *usage)
{
    if (i >= argc)
        return def;
    char *end;
    errno = 0;
    long v = strtol(argv[i], &end, 10);
    if (errno != 0 || end == argv[i] || *end != '\0' || v < lo || v > hi)
        sc_usage(usage);
    return v;
}

/* Write every byte of a block so it is really used (and its pages are resident). */
static inline void sc_fill(void *p, size_t n, int byte)
{
    memset(p, byte, n);
    __asm__ volatile("" : : "r"(p) : "memory"); /* the stores are observable */
}

/* An array of n pointers outside the malloc heap (mmap), so it never moves the break.
 * Elements are volatile: the compiler cannot drop the malloc/free pairs they hold. */
static inline char *volatile *sc_ptr_array(size_t n)
{
    size_t len = n * sizeof(char *);
    if (len == 0)
        len = sizeof(char *);
    void *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        hl_die("mmap(pointer array)");
    return (char *volatile *)a;
}

/* Sleep ms milliseconds (nanosleep, resumed after signals; usleep may refuse >= 1 s). */
static inline void sc_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        if (errno != EINTR)
            hl_die("nanosleep");
}

/* glibc keeps the chunk's size word just before the pointer; bit 1 (IS_MMAPPED) is set when
 * the chunk is its own mmap. Only meaningful under glibc's malloc. */
static inline int sc_glibc_mmapped(const void *p)
{
    return (int)((((const size_t *)p)[-1] >> 1) & 1);
}

#endif
