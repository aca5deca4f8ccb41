/* allocators - one small-block workload, to be run under glibc and LD_PRELOADed allocators.
 *
 *   allocators [idle_ms [rounds]]   idle_ms = 0..60000 (default 300): the length of each sleep;
 *                                   rounds = 1..100 (default 1): see below
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 allocators
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 allocators
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 allocators
 *
 * Workload: 20000 blocks of 16, 32, ..., 4096 bytes (cycling; ~41 MB requested), each written;
 * free 3 of every 4 (all but i % 4 == 0; as 256 sizes are cycled, this frees every block of
 * the sizes 32, 48, 64, 96, ... and keeps every block of 16, 80, 144, ..., 4048: in a
 * sequential heap (glibc) each freed run of 3 blocks is pinned by a live neighbour);
 * sleep idle_ms (300 ms); allocate 1000 more blocks (same size cycle), written; sleep idle_ms.
 * The sleeps give time-based release (jemalloc's 10 s decay, mimalloc's decommit delays) a
 * chance; glibc and tcmalloc have no timers, and jemalloc without a background thread purges
 * only from inside an allocator call. (What was observed: README.md.)
 *
 * With rounds > 1 the "more" step is repeated: each later round first frees the previous
 * round's 1000 blocks, then allocates 1000 again and sleeps; each round prints its own "more"
 * and "idle-more" lines. This keeps the allocator busy once per idle_ms, which is what
 * jemalloc's decay (without a background thread) needs before it purges anything, e.g.
 * `allocators 1000 12` (12 s).
 *
 * The allocator is found with dlsym(RTLD_DEFAULT, ...): "mallocx" -> jemalloc,
 * "tc_malloc" -> tcmalloc, "mi_malloc" -> mimalloc, none -> glibc.
 *
 * Output:
 *   HL pid pid=P
 *   HL allocator name=glibc|jemalloc|tcmalloc|mimalloc
 *   HL brk phase=start ...   HL rss anon=...
 *   HL brk phase=alloc ...   HL rss anon=...
 *   HL brk phase=free ...    HL rss anon=...
 *   HL brk phase=idle ...    HL rss anon=...      after sleeping idle_ms
 *   HL brk phase=more ...    HL rss anon=...      1000 more blocks
 *   HL brk phase=idle-more ...  HL rss anon=...   after sleeping idle_ms
 *   HL done
 * ("more" and "idle-more" once per round.) The 5000 live + 1000 more blocks are never freed.
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#include <dlfcn.h>

#define NBLOCKS 20000
#define NMORE 1000
#define USAGE "usage: allocators [idle_ms [rounds]]   (idle_ms 0..60000, default 300; rounds 1..100, default 1)\n"

static char *volatile blocks[NBLOCKS];
static char *volatile more[NMORE];

static size_t size_of(int i) { return 16 + (size_t)(i % 256) * 16; } /* 16 .. 4096 */

static const char *allocator_name(void)
{
    if (dlsym(RTLD_DEFAULT, "mallocx"))
        return "jemalloc";
    if (dlsym(RTLD_DEFAULT, "tc_malloc"))
        return "tcmalloc";
    if (dlsym(RTLD_DEFAULT, "mi_malloc"))
        return "mimalloc";
    return "glibc";
}

int main(int argc, char **argv)
{
    long idle_ms = sc_arg(argc, argv, 1, 300, 0, 60000, USAGE);
    long rounds = sc_arg(argc, argv, 2, 1, 1, 100, USAGE);
    if (argc > 3)
        sc_usage(USAGE);
    hl_pid();
    hl_line("HL allocator name=%s", allocator_name());
    sc_phase("start");

    for (int i = 0; i < NBLOCKS; i++) {
        size_t n = size_of(i);
        char *p = malloc(n);
        if (!p)
            hl_die("malloc");
        sc_fill(p, n, (i & 0x7f) + 1);
        blocks[i] = p;
    }
    sc_phase("alloc");

    for (int i = 0; i < NBLOCKS; i++) {
        if (i % 4 == 0)
            continue;
        free(blocks[i]);
        blocks[i] = NULL;
    }
    sc_phase("free");

    sc_sleep_ms((unsigned)idle_ms);
    sc_phase("idle");

    for (long r = 0; r < rounds; r++) {
        if (r > 0)
            for (int i = 0; i < NMORE; i++) {
                free(more[i]);
                more[i] = NULL;
            }
        for (int i = 0; i < NMORE; i++) {
            size_t n = size_of(i);
            char *p = malloc(n);
            if (!p)
                hl_die("malloc(more)");
            sc_fill(p, n, (i & 0x7f) + 1);
            more[i] = p;
        }
        sc_phase("more");

        sc_sleep_ms((unsigned)idle_ms);
        sc_phase("idle-more");
    }

    hl_done();
    return 0;
}
