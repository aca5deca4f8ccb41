/* mmap-threshold - which blocks glibc mmaps, and the dynamic mmap threshold rising on free.
 *
 *   mmap-threshold
 *
 * glibc serves a request of at least M_MMAP_THRESHOLD bytes (default 128 KiB) with its own
 * mmap, and munmaps it on free. Unless the threshold was set with mallopt/tunables/env,
 * freeing an mmapped chunk larger than the current threshold (and <= 32 MiB) raises the
 * threshold to that chunk's size and the trim threshold to twice that. Later requests of the
 * same size then come from the heap (brk), and freeing them no longer returns memory
 * immediately. Whether a block is mmapped is read from glibc's chunk header: bit 1 of the size
 * word just before the pointer.
 *
 * Every block is written in full. Output (M = mmapped bit):
 *   HL pid pid=P
 *   HL brk phase=start ...      HL rss anon=...
 *   HL block size=65536 ptr=0x.. mmapped=0      64 KiB: heap
 *   HL block size=262144 ptr=0x.. mmapped=1     256 KiB: own mmap
 *   HL block size=1048576 ptr=0x.. mmapped=1    1 MiB: own mmap
 *   HL brk phase=alloc ...      HL rss anon=...
 *   HL brk phase=mid-freed ...  HL rss anon=... free(256 KiB): munmap; threshold -> 260 KiB
 *   HL block size=262144 ptr=0x.. mmapped=0     the same request again: heap now
 *   HL brk phase=mid-again ...  HL rss anon=...
 *   HL brk phase=big-freed ...  HL rss anon=... free(1 MiB): munmap; threshold -> 1 MiB + 4 KiB
 *   HL block size=1048576 ptr=0x.. mmapped=0    the same request again: heap now
 *   HL brk phase=big-again ...  HL rss anon=...
 *   HL brk phase=free ...       HL rss anon=... free the three heap blocks: the break stays,
 *                                               the top chunk is below the raised trim threshold
 *   HL done
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#define KIB 1024UL

static char *volatile small_blk, *volatile mid_blk, *volatile big_blk;

static char *take(size_t size, int byte)
{
    char *p = malloc(size);
    if (!p)
        hl_die("malloc");
    sc_fill(p, size, byte);
    hl_line("HL block size=%zu ptr=0x%lx mmapped=%d", size, HL_PTR(p), sc_glibc_mmapped(p));
    return p;
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        sc_usage("usage: mmap-threshold\n");

    hl_pid();
    sc_phase("start");

    small_blk = take(64 * KIB, 0x11);
    mid_blk = take(256 * KIB, 0x22);
    big_blk = take(1024 * KIB, 0x33);
    sc_phase("alloc");

    free(mid_blk);
    mid_blk = NULL;
    sc_phase("mid-freed");
    mid_blk = take(256 * KIB, 0x44);
    sc_phase("mid-again");

    free(big_blk);
    big_blk = NULL;
    sc_phase("big-freed");
    big_blk = take(1024 * KIB, 0x55);
    sc_phase("big-again");

    free(small_blk);
    small_blk = NULL;
    free(mid_blk);
    mid_blk = NULL;
    free(big_blk);
    big_blk = NULL;
    sc_phase("free");

    hl_done();
    return 0;
}
