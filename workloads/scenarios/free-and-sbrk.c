/* free-and-sbrk - The Linux Programming Interface, section 7.1 (free_and_sbrk), rewritten
 * from the book's description with heapline report lines.
 *
 *   free-and-sbrk numAllocs blockSize [freeStep [freeMin [freeMax]]]
 *
 * Allocates numAllocs blocks of blockSize bytes (each written), then frees every freeStep-th
 * block from freeMin to freeMax (1-based, inclusive; defaults 1, 1, numAllocs).
 * numAllocs = 1..1000000, blockSize = 1..16777216, numAllocs * blockSize <= 512 MiB,
 * 1 <= freeMin <= freeMax <= numAllocs, freeStep >= 1.
 *
 * Output:
 *   HL pid pid=P
 *   HL args n=.. size=.. step=.. min=.. max=..
 *   HL brk phase=start ...   HL rss anon=...    "Initial program break"
 *   HL brk phase=alloc ...   HL rss anon=...    "Program break is now"
 *   HL brk phase=free ...    HL rss anon=...    "After free(), program break is"
 *   HL done
 *
 * Try (as in the book): `1000 10240 2` and `1000 10240 1 1 999`: the break stays;
 * `1000 10240 1 500 1000`: it falls (the freed range reaches the top chunk).
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#define MAX_ALLOCS 1000000
#define MAX_BYTES (512L * 1024 * 1024)
#define USAGE "usage: free-and-sbrk numAllocs blockSize [freeStep [freeMin [freeMax]]]\n"

static char *volatile ptr[MAX_ALLOCS];

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 6)
        sc_usage(USAGE);
    long n = sc_arg(argc, argv, 1, 0, 1, MAX_ALLOCS, USAGE);
    long size = sc_arg(argc, argv, 2, 0, 1, 16L * 1024 * 1024, USAGE);
    long step = sc_arg(argc, argv, 3, 1, 1, LONG_MAX, USAGE);
    long min = sc_arg(argc, argv, 4, 1, 1, n, USAGE);
    long max = sc_arg(argc, argv, 5, n, min, n, USAGE);
    if (n * size > MAX_BYTES)
        sc_usage(USAGE);

    hl_pid();
    hl_line("HL args n=%ld size=%ld step=%ld min=%ld max=%ld", n, size, step, min, max);
    sc_phase("start");

    for (long j = 0; j < n; j++) {
        char *p = malloc((size_t)size);
        if (!p)
            hl_die("malloc");
        sc_fill(p, (size_t)size, (int)(j & 0x7f) + 1);
        ptr[j] = p;
    }
    sc_phase("alloc");

    for (long j = min - 1; j < max; j += step) {
        free(ptr[j]);
        ptr[j] = NULL;
    }
    sc_phase("free");

    hl_done();
    return 0;
}
