/* tiny-mallocs - many 4-byte mallocs, all freed: the break stays up until malloc_trim.
 *
 *   tiny-mallocs [N [pin]]      N = 1..10000000, default 1000000
 *
 * The first experiment of the background discussion, scaled down: N x malloc(4), each written,
 * then all freed in allocation order. A 4-byte request is a 32-byte chunk on x86_64 glibc:
 * the first 7 frees go to the thread's tcache, the rest to a fastbin. Neither ever merges
 * with its neighbours or with the top chunk on free(), so nothing is given back, however
 * long the program waits. malloc_trim(0) first consolidates the fastbins (now everything
 * above the 7 tcache chunks merges into the top chunk) and then trims.
 *
 * With "pin" the last block (the highest address, right below the top chunk) is not freed.
 * The consolidated free space then cannot reach the top chunk, so malloc_trim cannot lower the
 * break; it madvise(MADV_DONTNEED)s the whole pages inside the free chunk instead (the break
 * stays, RSS falls). The free/idle/trim phases are the same; "HL pin ptr=0x.." names the block.
 *
 * Output:
 *   HL pid pid=P
 *   HL brk phase=start ...   HL rss anon=...
 *   HL brk phase=alloc ...   HL rss anon=...      N x malloc(4), each written
 *   HL pin ptr=0x..                               only with "pin": the block kept
 *   HL brk phase=free ...    HL rss anon=...      all freed, in allocation order
 *   HL brk phase=idle ...    HL rss anon=...      after sleeping 200 ms: unchanged
 *   HL malloc_trim pad=0 ret=R
 *   HL brk phase=trim ...    HL rss anon=...
 *   HL done
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#include <malloc.h>

#define USAGE "usage: tiny-mallocs [N [pin]]   (N = 1..10000000, default 1000000)\n"

static char *volatile *blocks;

int main(int argc, char **argv)
{
    long n = sc_arg(argc, argv, 1, 1000000, 1, 10000000, USAGE);
    int pin = argc > 2 && strcmp(argv[2], "pin") == 0;
    if (argc > 3 || (argc > 2 && !pin))
        sc_usage(USAGE);
    blocks = sc_ptr_array((size_t)n);

    hl_pid();
    sc_phase("start");

    for (long i = 0; i < n; i++) {
        char *p = malloc(4);
        if (!p)
            hl_die("malloc(4)");
        sc_fill(p, 4, (int)(i & 0x7f) + 1);
        blocks[i] = p;
    }
    sc_phase("alloc");

    if (pin)
        hl_line("HL pin ptr=0x%lx", HL_PTR(blocks[n - 1]));
    for (long i = 0; i < n - pin; i++) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
    sc_phase("free");

    sc_sleep_ms(200);
    sc_phase("idle");

    int r = malloc_trim(0);
    hl_malloc_trim(0, r);
    sc_phase("trim");

    hl_done();
    return 0;
}
