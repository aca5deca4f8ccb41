/* phases - walks the program break and a few mmap'd regions through known phases.
 *
 *   phases [--wait]
 *
 * With --wait it prints "HL ready" after the start brk line and blocks until one byte
 * (or EOF) is read from stdin, so a tracer can attach first.
 */
#define _GNU_SOURCE
#include "report.h"

#include <string.h>
#include <sys/mman.h>

#define NBLOCKS 400
#define BLOCK 1000
#define SBRK_STEP 65536
/* glibc's default tcache keeps up to 7 freed chunks per size class and never merges them
 * into the top chunk. Freed 400 blocks in reverse order would put the 7 top-most blocks
 * in the tcache, pinning the top and the break never falls. So the alloc phase first
 * takes 7 "filler" blocks of the same size (they end up below the 400), and the free
 * phase frees them first: they fill the tcache bin, and every one of the 400 blocks then
 * really merges into the top chunk, which glibc trims (brk shrinks). */
#define TCACHE_FILL 7

/* Pointers live in a global volatile array and every block is written to, so the compiler
 * cannot prove the malloc/free pairs dead and delete them. */
static char *volatile blocks[NBLOCKS];
static char *volatile fillers[TCACHE_FILL];

static void wait_for_stdin(void)
{
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r >= 0) /* one byte, or EOF: go on */
            return;
        if (errno != EINTR)
            hl_die("read(stdin)");
    }
}

static void touch(char *p, size_t len, size_t page)
{
    for (size_t off = 0; off < len; off += page)
        ((volatile char *)p)[off] = (char)(off / page + 1);
}

int main(int argc, char **argv)
{
    int wait = argc > 1 && strcmp(argv[1], "--wait") == 0;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0)
        hl_die("sysconf(_SC_PAGESIZE)");
    size_t page = (size_t)pg;

    hl_pid();
    hl_brk("start");
    if (wait) {
        hl_ready();
        wait_for_stdin();
    }

    /* alloc: 7 tcache fillers, then 400 x 1000 bytes; all far below the mmap threshold, so
     * the break grows via brk. */
    for (int i = 0; i < TCACHE_FILL; i++) {
        char *p = malloc(BLOCK);
        if (!p)
            hl_die("malloc(filler)");
        memset(p, 0xee, BLOCK);
        fillers[i] = p;
    }
    for (int i = 0; i < NBLOCKS; i++) {
        char *p = malloc(BLOCK);
        if (!p)
            hl_die("malloc");
        memset(p, i & 0xff, BLOCK);
        blocks[i] = p;
    }
    hl_brk("alloc");

    /* free: the fillers (they fill the tcache bin), then the 400 in reverse order, top block
     * first: each merges into the top chunk and glibc trims the top (the break falls). */
    for (int i = 0; i < TCACHE_FILL; i++) {
        free(fillers[i]);
        fillers[i] = NULL;
    }
    for (int i = NBLOCKS - 1; i >= 0; i--) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    hl_brk("free");

    /* sbrk-grow / sbrk-shrink: move the break directly. */
    if (sbrk(SBRK_STEP) == (void *)-1)
        hl_die("sbrk(+)");
    hl_brk("sbrk-grow");
    if (sbrk(-SBRK_STEP) == (void *)-1)
        hl_die("sbrk(-)");
    hl_brk("sbrk-shrink");

    /* mmaps */
    const int prot = PROT_READ | PROT_WRITE;
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS;
    size_t len1 = 3 * page, len2 = 5 * page, len3 = 7 * page;

    char *r1 = mmap(NULL, len1, prot, flags, -1, 0);
    if (r1 == MAP_FAILED)
        hl_die("mmap(1)");
    hl_mmap(r1, len1, prot, flags);
    char *r2 = mmap(NULL, len2, prot, flags, -1, 0);
    if (r2 == MAP_FAILED)
        hl_die("mmap(2)");
    hl_mmap(r2, len2, prot, flags);
    char *r3 = mmap(NULL, len3, prot, flags, -1, 0);
    if (r3 == MAP_FAILED)
        hl_die("mmap(3)");
    hl_mmap(r3, len3, prot, flags);

    touch(r1, len1, page);
    touch(r2, len2, page);
    touch(r3, len3, page);

    if (madvise(r1, 2 * page, MADV_DONTNEED) != 0)
        hl_die("madvise(DONTNEED)");
    hl_madvise(r1, 2 * page, MADV_DONTNEED);
    if (madvise(r2, len2, MADV_FREE) != 0)
        hl_die("madvise(FREE)");
    hl_madvise(r2, len2, MADV_FREE);

    if (mprotect(r3, len3, PROT_READ) != 0)
        hl_die("mprotect");
    hl_mprotect(r3, len3, PROT_READ);

    size_t newlen1 = 20 * page;
    char *n1 = mremap(r1, len1, newlen1, MREMAP_MAYMOVE);
    if (n1 == MAP_FAILED)
        hl_die("mremap");
    hl_mremap(r1, len1, n1, newlen1, MREMAP_MAYMOVE);
    r1 = n1;
    len1 = newlen1;

    if (munmap(r1, len1) != 0)
        hl_die("munmap(1)");
    hl_munmap(r1, len1);
    if (munmap(r2, len2) != 0)
        hl_die("munmap(2)");
    hl_munmap(r2, len2);
    if (munmap(r3, len3) != 0)
        hl_die("munmap(3)");
    hl_munmap(r3, len3);

    hl_brk("end");
    hl_rss();
    hl_done();
    return 0;
}
