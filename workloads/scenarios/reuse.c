/* reuse - the same allocation twice: the second round is served from the freed chunks.
 *
 *   reuse [N [size]]            N = 1..10000000 (default 1000000), size = 1..4096 (default 4)
 *
 * The background's second experiment, scaled down: N x malloc(size), each written; free them
 * all in allocation order; N x malloc(size) again. With the default 4-byte blocks the freed
 * chunks sit in the tcache and fastbins (they never merge into the top chunk), so the break
 * stays where alloc1 left it and alloc2 takes every chunk back without growing it.
 *
 * With a non-fastbin size (> 120 bytes) freed in order, consecutive free chunks merge and the
 * last one merges into the top chunk, which glibc then trims: the break falls at "free" and
 * grows again at "alloc2" (e.g. `reuse 20000 1000`). That contrast is the point of the size
 * argument; the defaults show the discussion's case.
 *
 * Output:
 *   HL pid pid=P
 *   HL brk phase=start ...   HL rss anon=...
 *   HL brk phase=alloc1 ...  HL rss anon=...
 *   HL brk phase=free ...    HL rss anon=...
 *   HL brk phase=alloc2 ...  HL rss anon=...
 *   HL reuse blocks=N inside=M    M of the N alloc2 blocks lie within [lowest, highest]
 *                                 alloc1 block (M = N: nothing new was carved)
 *   HL done
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#define USAGE "usage: reuse [N [size]]   (N = 1..10000000, default 1000000; size = 1..4096, default 4)\n"

static char *volatile *blocks;

static void alloc_all(long n, size_t size, int byte)
{
    for (long i = 0; i < n; i++) {
        char *p = malloc(size);
        if (!p)
            hl_die("malloc");
        sc_fill(p, size, byte);
        blocks[i] = p;
    }
}

int main(int argc, char **argv)
{
    long n = sc_arg(argc, argv, 1, 1000000, 1, 10000000, USAGE);
    long size = sc_arg(argc, argv, 2, 4, 1, 4096, USAGE);
    if (argc > 3)
        sc_usage(USAGE);
    blocks = sc_ptr_array((size_t)n);

    hl_pid();
    sc_phase("start");

    alloc_all(n, (size_t)size, 0x11);
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (long i = 0; i < n; i++) {
        uintptr_t a = (uintptr_t)blocks[i];
        if (a < lo)
            lo = a;
        if (a > hi)
            hi = a;
    }
    sc_phase("alloc1");

    for (long i = 0; i < n; i++) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    sc_phase("free");

    alloc_all(n, (size_t)size, 0x22);
    sc_phase("alloc2");

    long inside = 0;
    for (long i = 0; i < n; i++) {
        uintptr_t a = (uintptr_t)blocks[i];
        if (a >= lo && a <= hi)
            inside++;
    }
    hl_line("HL reuse blocks=%ld inside=%ld", n, inside);

    hl_done();
    return 0;
}
