/* alloc_calls - a known sequence of allocator calls, counted, between two marker mallocs.
 *
 *   alloc_calls [--wait] [--threads N] [--extra]      N defaults to 3 (0..64)
 *
 * Everything the program counts happens between two marker calls that no library makes by
 * itself: malloc(1234567) (start) and malloc(7654321) (end), each freed right away and reported
 * as "HL marker start|end ptr=0x..". The markers are not counted. Threads are created before the
 * start marker and joined after the end marker (pthread_create/join allocate inside glibc);
 * barriers make their counted work run between the markers, and the main thread only emits the
 * end marker after every thread has finished its counted work.
 *
 * --extra also calls reallocarray (once) and pvalloc (once). jemalloc exports neither and
 * tcmalloc no reallocarray: under those preloads the calls resolve to glibc's copies. glibc's
 * reallocarray forwards to the preloaded realloc (fine), but glibc's pvalloc allocates from
 * glibc's own heap: under jemalloc the pvalloc block is glibc's (it is never freed here).
 *
 * Reporting never allocates (see report.h), so between the markers the only allocator calls are
 * the counted ones. See README.md for the lines and the exact expected counts.
 */
#define _GNU_SOURCE
#include "report.h"

#include <malloc.h>
#include <pthread.h>

#define START_MARKER 1234567
#define END_MARKER 7654321

#define MAX_THREADS 64
#define K_PAIRS 100     /* malloc+free pairs per thread */
#define THREAD_LIVE 3   /* blocks each thread leaves live */
#define MAIN_SLOTS 16
#define NSLOTS (MAIN_SLOTS + MAX_THREADS * THREAD_LIVE)

/* Every block the program holds sits in a global volatile array and is written to, so the
 * compiler cannot prove any call dead. size is the requested size; used says the slot holds a
 * live block (a realloc(p, 0) that returns a non-NULL block holds a 0-byte one). */
static void *volatile slot_ptr[NSLOTS];
static size_t slot_size[NSLOTS];
static int slot_used[NSLOTS];

/* realloc(NULL, n) and free(NULL) go through this so gcc cannot fold them (it turns
 * realloc(0, n) into malloc(n) and drops free(0)). */
static void *volatile null_ptr;
/* The pointer of the thread pairs' current block: volatile, so the pair is not elided. */
static void *volatile pair_ptr[MAX_THREADS];
static void *volatile marker_ptr;

struct worker {
    pthread_t th;
    int idx;
    pid_t tid;
    struct hl_alloc_counts c;
};

static struct worker workers[MAX_THREADS];
static pthread_barrier_t b_ready, b_go, b_done, b_exit;

static void touch(void *p, size_t n, int v)
{
    volatile char *q = p;
    for (size_t off = 0; off < n; off += 4096)
        q[off] = (char)v;
    if (n)
        q[n - 1] = (char)v;
}

static void hold(int s, void *p, size_t n)
{
    slot_ptr[s] = p;
    slot_size[s] = n;
    slot_used[s] = 1;
}

static void drop(int s)
{
    slot_ptr[s] = NULL;
    slot_size[s] = 0;
    slot_used[s] = 0;
}

/* ---- counted calls: each bumps the counter of the function it calls, once ---- */

static void *do_malloc(struct hl_alloc_counts *c, int s, size_t n)
{
    c->malloc++;
    void *p = malloc(n);
    if (!p)
        hl_die("malloc");
    touch(p, n, 0x11);
    hold(s, p, n);
    return p;
}

static void do_free(struct hl_alloc_counts *c, int s)
{
    c->free++;
    free(slot_ptr[s]);
    drop(s);
}

static void barrier(pthread_barrier_t *b)
{
    int r = pthread_barrier_wait(b);
    if (r != 0 && r != PTHREAD_BARRIER_SERIAL_THREAD) {
        errno = r;
        hl_die("pthread_barrier_wait");
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->tid = gettid();
    hl_thread(w->tid);
    /* Warm-up, not counted, before the start marker: glibc makes this thread's arena and
     * tcache here (an mmap of a new heap), other allocators their thread caches. */
    void *warm = malloc(32);
    if (!warm)
        hl_die("malloc(warm-up)");
    touch(warm, 32, 1);
    pair_ptr[w->idx] = warm;
    free(pair_ptr[w->idx]);
    pair_ptr[w->idx] = NULL;

    barrier(&b_ready); /* main emits the start marker after this */
    barrier(&b_go);    /* ... and releases us after it */

    for (int i = 0; i < K_PAIRS; i++) {
        size_t n = 16 + (size_t)(i % 8) * 16;
        w->c.malloc++;
        void *p = malloc(n);
        if (!p)
            hl_die("malloc(pair)");
        pair_ptr[w->idx] = p;
        touch(p, n, i + 1);
        w->c.free++;
        free(pair_ptr[w->idx]);
        pair_ptr[w->idx] = NULL;
    }
    for (int j = 0; j < THREAD_LIVE; j++)
        do_malloc(&w->c, MAIN_SLOTS + w->idx * THREAD_LIVE + j, 1000 + (size_t)w->idx * 100 + (size_t)j * 8);

    barrier(&b_done); /* counted work finished; main reports and emits the end marker */
    barrier(&b_exit); /* after the end marker: now the thread may exit (glibc frees its tcache) */
    return NULL;
}

static void marker(const char *which, size_t n)
{
    void *p = malloc(n);
    if (!p)
        hl_die("malloc(marker)");
    *(volatile char *)p = 1;
    marker_ptr = p; /* through a volatile, so the compiler keeps the pair */
    free(marker_ptr);
    marker_ptr = NULL;
    hl_marker(which, p);
}

/* Main-thread slot numbers. */
enum {
    S_SMALL,   /* malloc(24), freed */
    S_MED,     /* malloc(100); --extra: reallocarray(p, 20, 50) */
    S_PAGE,    /* malloc(4096), realloc shrink to 4000 (in place) */
    S_BIG,     /* malloc(200 KiB) (glibc: mmap), freed */
    S_CALLOC,  /* calloc(10, 100) */
    S_MOVE,    /* malloc(64), realloc grow to 1000 (moves) */
    S_BLOCKER, /* malloc(64) right behind S_MOVE, freed after the move */
    S_RNULL,   /* realloc(NULL, 300) */
    S_RZERO,   /* malloc(50), realloc(p, 0): glibc frees p and returns NULL */
    S_PM64,    /* posix_memalign(64, 1000) */
    S_PM4K,    /* posix_memalign(4096, 10000), freed */
    S_AALLOC,  /* aligned_alloc(256, 512) */
    S_MEMALIGN,/* memalign(128, 300), freed */
    S_VALLOC,  /* valloc(1000) */
    S_PVALLOC, /* --extra: pvalloc(5000) */
    S_COUNT
};
_Static_assert(S_COUNT <= MAIN_SLOTS, "main slots");

static void do_realloc(struct hl_alloc_counts *c, int s, void *old, size_t n)
{
    /* the old address is only printed; keep it as a number so gcc sees no use after realloc */
    volatile uintptr_t oldv = (uintptr_t)old;
    c->realloc++;
    void *p = realloc(old, n);
    if (!p && n != 0)
        hl_die("realloc");
    hl_realloc((const void *)oldv, p, n);
    if (p) {
        touch(p, n, 0x22);
        hold(s, p, n);
    } else {
        drop(s);
    }
}

static void do_posix_memalign(struct hl_alloc_counts *c, int s, size_t align, size_t n)
{
    void *p = NULL;
    c->posix_memalign++;
    int r = posix_memalign(&p, align, n);
    if (r != 0) {
        errno = r;
        hl_die("posix_memalign");
    }
    hl_posix_memalign(p, align, n);
    touch(p, n, 0x33);
    hold(s, p, n);
}

static void main_work(struct hl_alloc_counts *c, int extra)
{
    do_malloc(c, S_SMALL, 24);
    do_malloc(c, S_MED, 100);
    do_malloc(c, S_PAGE, 4096);
    do_malloc(c, S_BIG, 200 * 1024);

    c->calloc++;
    char *z = calloc(10, 100);
    if (!z)
        hl_die("calloc");
    for (int i = 0; i < 1000; i++)
        if (((volatile char *)z)[i] != 0)
            hl_die("calloc not zeroed");
    touch(z, 1000, 0x44);
    hold(S_CALLOC, z, 1000);

    /* shrink within the block's size class: stays in place on glibc, jemalloc, tcmalloc, mimalloc */
    do_realloc(c, S_PAGE, slot_ptr[S_PAGE], 4000);

    /* grow a small block with another one allocated right behind it: must move */
    do_malloc(c, S_MOVE, 64);
    do_malloc(c, S_BLOCKER, 64);
    do_realloc(c, S_MOVE, slot_ptr[S_MOVE], 1000);

    do_realloc(c, S_RNULL, null_ptr, 300); /* realloc(NULL, n): one realloc */

    do_malloc(c, S_RZERO, 50);
    do_realloc(c, S_RZERO, slot_ptr[S_RZERO], 0); /* glibc: frees p, returns NULL */

    do_posix_memalign(c, S_PM64, 64, 1000);
    do_posix_memalign(c, S_PM4K, 4096, 10000);

    c->aligned_alloc++;
    void *p = aligned_alloc(256, 512);
    if (!p)
        hl_die("aligned_alloc");
    touch(p, 512, 0x55);
    hold(S_AALLOC, p, 512);

    c->memalign++;
    p = memalign(128, 300);
    if (!p)
        hl_die("memalign");
    touch(p, 300, 0x66);
    hold(S_MEMALIGN, p, 300);

    c->valloc++;
    p = valloc(1000);
    if (!p)
        hl_die("valloc");
    touch(p, 1000, 0x77);
    hold(S_VALLOC, p, 1000);

    if (extra) {
        c->reallocarray++;
        void *old = slot_ptr[S_MED];
        p = reallocarray(old, 20, 50);
        if (!p)
            hl_die("reallocarray");
        touch(p, 1000, 0x88);
        hold(S_MED, p, 1000);

        c->pvalloc++;
        p = pvalloc(5000);
        if (!p)
            hl_die("pvalloc");
        touch(p, 5000, 0x99);
        hold(S_PVALLOC, p, 5000);
    }

    do_free(c, S_SMALL);
    do_free(c, S_BIG);
    do_free(c, S_BLOCKER);
    do_free(c, S_MEMALIGN);
    do_free(c, S_PM4K);
    c->free++;
    free(null_ptr); /* free(NULL): one free */

    c->mallopt++;
    int r = mallopt(M_TRIM_THRESHOLD, 256 * 1024);
    hl_mallopt(M_TRIM_THRESHOLD, 256 * 1024, r);

    c->malloc_trim++;
    r = malloc_trim(0);
    hl_malloc_trim(0, r);
}

static void add_counts(struct hl_alloc_counts *t, const struct hl_alloc_counts *c)
{
    t->malloc += c->malloc;
    t->calloc += c->calloc;
    t->realloc += c->realloc;
    t->reallocarray += c->reallocarray;
    t->free += c->free;
    t->posix_memalign += c->posix_memalign;
    t->aligned_alloc += c->aligned_alloc;
    t->memalign += c->memalign;
    t->valloc += c->valloc;
    t->pvalloc += c->pvalloc;
    t->malloc_trim += c->malloc_trim;
    t->mallopt += c->mallopt;
}

int main(int argc, char **argv)
{
    int wait = 0, extra = 0;
    long nthreads = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0) {
            wait = 1;
        } else if (strcmp(argv[i], "--extra") == 0) {
            extra = 1;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            nthreads = strtol(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] || nthreads < 0 || nthreads > MAX_THREADS) {
                errno = EINVAL;
                hl_die("parse --threads (0..64)");
            }
        } else {
            errno = EINVAL;
            hl_die("usage: alloc_calls [--wait] [--threads N] [--extra]");
        }
    }

    hl_pid();
    if (wait) {
        hl_ready();
        hl_stdin_wait();
    }

    /* Setup, not counted: a fixed mmap threshold. glibc raises its threshold dynamically when
     * an mmapped chunk is freed (the start marker is one), after which the 200 KiB malloc would
     * come from the heap instead of mmap. Under a preload this is glibc's (or tcmalloc's no-op)
     * mallopt and changes nothing. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    unsigned parties = (unsigned)nthreads + 1;
    if (pthread_barrier_init(&b_ready, NULL, parties) || pthread_barrier_init(&b_go, NULL, parties) ||
        pthread_barrier_init(&b_done, NULL, parties) || pthread_barrier_init(&b_exit, NULL, parties))
        hl_die("pthread_barrier_init");
    for (long t = 0; t < nthreads; t++) {
        workers[t].idx = (int)t;
        int r = pthread_create(&workers[t].th, NULL, worker_main, &workers[t]);
        if (r) {
            errno = r;
            hl_die("pthread_create");
        }
    }
    barrier(&b_ready);

    marker("start", START_MARKER);
    barrier(&b_go);

    struct hl_alloc_counts mc = {0};
    main_work(&mc, extra);

    barrier(&b_done); /* every thread has finished its counted work */

    struct hl_alloc_counts total = {0};
    hl_calls(gettid(), &mc);
    add_counts(&total, &mc);
    for (long t = 0; t < nthreads; t++) {
        hl_calls(workers[t].tid, &workers[t].c);
        add_counts(&total, &workers[t].c);
    }
    hl_alloc(&total);

    size_t bytes = 0, nblocks = 0;
    for (int s = 0; s < NSLOTS; s++) {
        if (!slot_used[s])
            continue;
        bytes += slot_size[s];
        nblocks++;
    }
    hl_live(bytes, nblocks);
    for (int s = 0; s < NSLOTS; s++)
        if (slot_used[s])
            hl_block(slot_ptr[s], slot_size[s]);

    marker("end", END_MARKER);

    barrier(&b_exit);
    for (long t = 0; t < nthreads; t++) {
        int r = pthread_join(workers[t].th, NULL);
        if (r) {
            errno = r;
            hl_die("pthread_join");
        }
    }
    /* The live blocks are deliberately never freed: they are what a tracer should see as
     * still allocated at exit (next to whatever libc and the loader keep). */
    hl_done();
    return 0;
}
