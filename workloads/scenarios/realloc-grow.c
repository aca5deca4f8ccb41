/* realloc-grow - one block grown by realloc from 1 MiB to 64 MiB, doubling each time.
 *
 *   realloc-grow
 *
 * 1 MiB is above glibc's default mmap threshold (128 KiB), so the block is its own mmap; a
 * realloc of an mmapped chunk is done with mremap(MREMAP_MAYMOVE) (glibc's mremap_chunk), which
 * moves the pages without copying when it cannot grow in place. After each step the new part
 * is written and the old contents are checked. Sizes: 1, 2, 4, 8, 16, 32, 64 MiB (6 reallocs).
 * The mremap calls are glibc's, not the program's, so there are no HL mremap lines.
 *
 * Output:
 *   HL pid pid=P
 *   HL brk phase=start ...   HL rss anon=...
 *   HL block size=1048576 ptr=0x.. mmapped=1
 *   HL brk phase=alloc ...   HL rss anon=...
 *   HL realloc old=0x.. new=0x.. moved=0|1 size=N     x6, N = 2 MiB .. 64 MiB
 *   HL brk phase=grow ...    HL rss anon=...          (64 MiB resident)
 *   HL brk phase=free ...    HL rss anon=...          free: munmap of the 64 MiB (+4 KiB)
 *   HL done
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#define MIB (1024UL * 1024)

static char *volatile blk;

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        sc_usage("usage: realloc-grow\n");
    hl_pid();
    sc_phase("start");

    size_t size = 1 * MIB;
    char *p = malloc(size);
    if (!p)
        hl_die("malloc");
    sc_fill(p, size, 1);
    blk = p;
    hl_line("HL block size=%zu ptr=0x%lx mmapped=%d", size, HL_PTR(p), sc_glibc_mmapped(p));
    sc_phase("alloc");

    for (int step = 2; size < 64 * MIB; step++) {
        size_t nsize = size * 2;
        char *old = blk;
        uintptr_t olda = (uintptr_t)old; /* printed after realloc: keep it as a number */
        char *n = realloc(old, nsize);
        /* same line as report.h's hl_realloc */
        hl_line("HL realloc old=0x%lx new=0x%lx moved=%d size=%zu", (unsigned long)olda, HL_PTR(n),
                n != NULL && (uintptr_t)n != olda, nsize);
        if (!n)
            hl_die("realloc");
        blk = n;
        /* the old part keeps its contents (each doubling wrote its own byte value) */
        for (size_t off = 0; off < size; off += 4096) {
            int want = 1;
            for (size_t s = MIB; s <= off; s *= 2)
                want++;
            if (((volatile char *)n)[off] != (char)want) {
                errno = 0;
                hl_die("realloc content check");
            }
        }
        sc_fill(n + size, nsize - size, step);
        size = nsize;
    }
    sc_phase("grow");

    free(blk);
    blk = NULL;
    sc_phase("free");

    hl_done();
    return 0;
}
