/* threads - four threads, four glibc arenas: allocate, free, and a kept block that pins.
 *
 *   threads
 *
 * Four threads start and wait on a barrier until all four exist, so none can inherit an arena
 * a finished thread left on glibc's free list: each one's first malloc creates a new arena
 * (a 64 MiB-aligned heap reserved with mmap PROT_NONE and made usable with mprotect as it
 * grows). Each thread allocates 2000 blocks of 1 KiB, writes them, and reports its first
 * block (the arena's heap is the 64 MiB-aligned region containing it). Then each frees its
 * blocks in allocation order, except threads 0 and 2, which keep their last block (the
 * highest address in their heap, right below the top chunk). In threads 1 and 3 the freed
 * blocks merge into the top chunk and glibc shrinks the heap with madvise(MADV_DONTNEED) (or
 * mmap PROT_NONE when vm.overcommit_memory=2); in threads 0 and 2 the ~2 MiB of free space
 * sits below the kept block and is not returned. The program never mallocs in the main
 * thread; the break moves once (+132 KiB) only because pthread_create callocs the new threads'
 * DTVs from the main arena, and never again.
 *
 * The main thread prints the phase lines while the threads wait on barriers:
 *   HL pid pid=P
 *   HL brk phase=start ...    HL rss anon=...
 *   HL thread tid=T           x4 (any order)
 *   HL arena tid=T ptr=0x..   x4 (any order): the thread's first block
 *   HL brk phase=alloc ...    HL rss anon=...
 *   HL keep tid=T ptr=0x.. size=1024    x2 (threads 0 and 2, any order)
 *   HL brk phase=free ...     HL rss anon=...
 *   HL brk phase=join ...     HL rss anon=...   all four threads have exited and been joined
 *   HL done
 * The kept blocks are never freed.
 */
#define _GNU_SOURCE
#include "../report.h"
#include "common.h"

#include <pthread.h>

#define NTHREADS 4
#define NBLOCKS 2000
#define BLOCK 1024

static pthread_barrier_t bar;
static char *volatile blocks[NTHREADS][NBLOCKS];
static char *volatile kept[NTHREADS];

static void wait_bar(void)
{
    int r = pthread_barrier_wait(&bar);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD) {
        errno = r;
        hl_die("pthread_barrier_wait");
    }
}

static void *thread_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    pid_t tid = gettid();
    hl_thread(tid);
    wait_bar(); /* 1: all four threads exist */

    for (int i = 0; i < NBLOCKS; i++) {
        char *p = malloc(BLOCK);
        if (!p)
            hl_die("malloc");
        sc_fill(p, BLOCK, t * 16 + (i & 15) + 1);
        blocks[t][i] = p;
    }
    hl_line("HL arena tid=%ld ptr=0x%lx", (long)tid, HL_PTR(blocks[t][0]));
    wait_bar(); /* 2: allocated */
    wait_bar(); /* 3: main printed "alloc" */

    int keep = t % 2 == 0;
    for (int i = 0; i < NBLOCKS - keep; i++) {
        free(blocks[t][i]);
        blocks[t][i] = NULL;
    }
    if (keep) {
        kept[t] = blocks[t][NBLOCKS - 1];
        hl_line("HL keep tid=%ld ptr=0x%lx size=%d", (long)tid, HL_PTR(kept[t]), BLOCK);
    }
    wait_bar(); /* 4: freed */
    wait_bar(); /* 5: main printed "free" */
    return NULL;
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        sc_usage("usage: threads\n");
    hl_pid();
    sc_phase("start");

    int r = pthread_barrier_init(&bar, NULL, NTHREADS + 1);
    if (r != 0) {
        errno = r;
        hl_die("pthread_barrier_init");
    }
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        r = pthread_create(&th[t], NULL, thread_main, (void *)(intptr_t)t);
        if (r != 0) {
            errno = r;
            hl_die("pthread_create");
        }
    }
    wait_bar(); /* 1 */
    wait_bar(); /* 2 */
    sc_phase("alloc");
    wait_bar(); /* 3 */
    wait_bar(); /* 4 */
    sc_phase("free");
    wait_bar(); /* 5 */
    for (int t = 0; t < NTHREADS; t++) {
        r = pthread_join(th[t], NULL);
        if (r != 0) {
            errno = r;
            hl_die("pthread_join");
        }
    }
    sc_phase("join");
    hl_done();
    return 0;
}
