/* fork-exit - do the big allocation in a child process that exits: the parent stays small.
 *
 *   fork-exit
 *
 * The background discussion's advice ("if your program relies on this memory being recycled,
 * fork() and let the child run and exit"). The parent mallocs 100 x 1000 bytes, forks; the
 * child mallocs 50 MiB as 51200 blocks of 1 KiB (from the heap: its break grows), writes
 * them all, reports its break and RSS, and exits 0 without freeing anything. The parent waits
 * and reports its own break and RSS again: both are what they were before the fork.
 *
 * Output order is fixed (a pipe holds the child until the parent has printed "HL fork"):
 *   HL pid pid=P
 *   HL brk phase=start ...         HL rss anon=...     parent
 *   HL brk phase=before-fork ...   HL rss anon=...     parent, after its 100 x 1000 bytes
 *   HL fork child=C                                     parent
 *   HL brk phase=child-alloc ...                        child: its own break
 *   HL child rss anon=<bytes>                           child: its RssAnon
 *   HL exit code=0                                      child, then exit(0)
 *   HL wait status=0                                    parent
 *   HL brk phase=after-child ...   HL rss anon=...     parent: unchanged
 *   HL done
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#include <sys/wait.h>

#define PARENT_BLOCKS 100
#define PARENT_BLOCK 1000
#define CHILD_BLOCK 1024
#define CHILD_BLOCKS (50 * 1024 * 1024 / CHILD_BLOCK) /* 51200 */

static char *volatile parent_blocks[PARENT_BLOCKS];
static char *volatile child_blocks[CHILD_BLOCKS];

/* "HL child rss anon=<bytes>" (hl_rss() prints "HL rss"). */
static void child_rss(void) { hl_line("HL child rss anon=%ld", hl_rss_anon()); }

static void child(void)
{
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        char *p = malloc(CHILD_BLOCK);
        if (!p)
            hl_die("malloc(child)");
        sc_fill(p, CHILD_BLOCK, (i & 0x7f) + 1);
        child_blocks[i] = p;
    }
    hl_brk("child-alloc");
    child_rss();
    hl_exit(0);
    exit(0);
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        sc_usage("usage: fork-exit\n");
    hl_pid();
    sc_phase("start");

    for (int i = 0; i < PARENT_BLOCKS; i++) {
        char *p = malloc(PARENT_BLOCK);
        if (!p)
            hl_die("malloc");
        sc_fill(p, PARENT_BLOCK, i + 1);
        parent_blocks[i] = p;
    }
    sc_phase("before-fork");

    hl_reap(hl_fork_gated(child));
    sc_phase("after-child");

    hl_done();
    return 0;
}
