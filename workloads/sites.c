/* sites - allocations from known call sites, with what each site leaves live and freed.
 *
 *   sites [--wait]
 *
 * Each site is a function of its own (never inlined), so an allocation's stack names it:
 *
 *   keep_site    KEEP blocks of KEEP_SIZE bytes, left live to the end
 *   churn_site   CHURN malloc+free pairs of CHURN_SIZE bytes (one chunk, reused: it ends in the tcache)
 *   spill_site   SPILL blocks of SPILL_SIZE bytes (above the tcache's sizes), all freed at the end
 *   pin_site     one PIN_SIZE block made after the spill (above it in the heap), left live: it keeps the
 *                spilled chunks, merged into one free chunk, below the break
 *   big_site     one BIG_SIZE block (above the mmap threshold: a mapping of its own), freed
 *
 * Each site reports, after its work, "HL site name=<site> allocs=<n> bytes=<requested> live=<n>
 * live_bytes=<requested, still live> freed_chunks=<chunk bytes of the freed blocks, from
 * malloc_usable_size + 8>". The process stays 0.3 s after "HL done" so that its code mappings can
 * be read while it lives (allocation stacks are symbolized against them).
 */
#define _GNU_SOURCE
#include "report.h"

#include <malloc.h>
#include <time.h>

#define KEEP 10
#define KEEP_SIZE 1000
#define CHURN 50
#define CHURN_SIZE 200
#define SPILL 100
#define SPILL_SIZE 4000
#define PIN_SIZE 100
#define BIG_SIZE (1 << 20)

static void *volatile keep[KEEP];
static void *volatile spill[SPILL];
static void *volatile pin;

static void touch(void *p, size_t n)
{
    volatile char *q = p;
    for (size_t off = 0; off < n; off += 4096)
        q[off] = 1;
    q[n - 1] = 1;
}

static void *checked(void *p)
{
    if (!p)
        hl_die("malloc");
    return p;
}

static void site(const char *name, int allocs, size_t bytes, int live, size_t live_bytes, size_t freed_chunks)
{
    hl_line("HL site name=%s allocs=%d bytes=%zu live=%d live_bytes=%zu freed_chunks=%zu", name, allocs, bytes,
            live, live_bytes, freed_chunks);
}

__attribute__((noinline)) static void keep_site(void)
{
    for (int i = 0; i < KEEP; i++) {
        keep[i] = checked(malloc(KEEP_SIZE));
        touch(keep[i], KEEP_SIZE);
    }
    site("keep_site", KEEP, (size_t)KEEP * KEEP_SIZE, KEEP, (size_t)KEEP * KEEP_SIZE, 0);
}

__attribute__((noinline)) static void churn_site(void)
{
    size_t chunk = 0;
    for (int i = 0; i < CHURN; i++) {
        void *volatile p = checked(malloc(CHURN_SIZE));
        touch(p, CHURN_SIZE);
        chunk = malloc_usable_size(p) + 8;
        free(p);
    }
    /* every pair reuses one chunk: the bytes the allocator holds for this site are that chunk */
    site("churn_site", CHURN, (size_t)CHURN * CHURN_SIZE, 0, 0, chunk);
}

__attribute__((noinline)) static void spill_site(void)
{
    for (int i = 0; i < SPILL; i++) {
        spill[i] = checked(malloc(SPILL_SIZE));
        touch(spill[i], SPILL_SIZE);
    }
}

__attribute__((noinline)) static void pin_site(void)
{
    pin = checked(malloc(PIN_SIZE));
    touch(pin, PIN_SIZE);
    site("pin_site", 1, PIN_SIZE, 1, PIN_SIZE, 0);
}

__attribute__((noinline)) static void spill_free(void)
{
    size_t chunks = 0;
    for (int i = 0; i < SPILL; i++) {
        chunks += malloc_usable_size(spill[i]) + 8;
        free(spill[i]);
        spill[i] = NULL;
    }
    site("spill_site", SPILL, (size_t)SPILL * SPILL_SIZE, 0, 0, chunks);
}

__attribute__((noinline)) static void big_site(void)
{
    void *volatile p = checked(malloc(BIG_SIZE));
    touch(p, BIG_SIZE);
    free(p);
    site("big_site", 1, BIG_SIZE, 0, 0, 0);
}

int main(int argc, char **argv)
{
    hl_pid();
    if (argc > 1 && strcmp(argv[1], "--wait") == 0)
        hl_stdin_wait();
    keep_site();
    churn_site();
    spill_site();
    pin_site();
    spill_free();
    big_site();
    hl_done();
    struct timespec linger = {0, 300 * 1000 * 1000};
    nanosleep(&linger, NULL);
    return 0;
}
