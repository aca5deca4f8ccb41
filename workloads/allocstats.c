/* allocstats - what jemalloc, tcmalloc and mimalloc say of their own memory, at marked moments.
 *
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 allocstats
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 allocstats
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 allocstats
 *
 * 40,000 blocks of 64-8,192 B (cycling), each written; then 3 of every 4 freed; then the rest.
 * At each mark, one line with the allocator's own figures, read through its C API found with
 * dlsym (nothing allocated by the program in between), and the process's RssAnon:
 *   HL stats name=<mark> ts=<CLOCK_MONOTONIC ns> allocator=<name> rss_anon=<bytes> <key>=<bytes>...
 * jemalloc (mallctl after "epoch"): allocated active resident mapped retained metadata;
 * tcmalloc (MallocExtension_GetNumericProperty): allocated (generic.current_allocated_bytes),
 *   heap_size (generic.heap_size), pageheap_free, pageheap_unmapped;
 * mimalloc (mi_process_info): current_commit peak_commit current_rss.
 * With HL_PAUSE_MS (default 300) the program sleeps after each mark (a recorder's residency
 * sample then sees the state of the mark).
 */
#include "report.h"

#include <dlfcn.h>
#include <time.h>

static void *volatile keep[40000];

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef int (*tc_prop_fn)(const char *, size_t *);
typedef void (*mi_info_fn)(size_t *, size_t *, size_t *, size_t *, size_t *, size_t *, size_t *, size_t *);

static size_t je(mallctl_fn f, const char *name)
{
    size_t v = 0, n = sizeof v;
    if (f(name, &v, &n, NULL, 0))
        hl_die("mallctl");
    return v;
}

static size_t tc(tc_prop_fn f, const char *name)
{
    size_t v = 0;
    if (!f(name, &v))
        hl_die("MallocExtension_GetNumericProperty");
    return v;
}

static void mark(const char *name)
{
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    tc_prop_fn tcprop = (tc_prop_fn)dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty");
    mi_info_fn mi = (mi_info_fn)dlsym(RTLD_DEFAULT, "mi_process_info");
    if (mallctl) {
        uint64_t epoch = 1;
        size_t n = sizeof epoch;
        mallctl("epoch", &epoch, &n, &epoch, n);
    }
    long long ts = now_ns(); /* after the lookups: they may allocate */
    if (mallctl) {
        hl_line("HL stats name=%s ts=%lld allocator=jemalloc rss_anon=%ld allocated=%zu active=%zu resident=%zu "
                "mapped=%zu retained=%zu metadata=%zu",
                name, ts, hl_rss_anon(), je(mallctl, "stats.allocated"), je(mallctl, "stats.active"),
                je(mallctl, "stats.resident"), je(mallctl, "stats.mapped"), je(mallctl, "stats.retained"),
                je(mallctl, "stats.metadata"));
    } else if (tcprop) {
        hl_line("HL stats name=%s ts=%lld allocator=tcmalloc rss_anon=%ld allocated=%zu heap_size=%zu "
                "pageheap_free=%zu pageheap_unmapped=%zu",
                name, ts, hl_rss_anon(), tc(tcprop, "generic.current_allocated_bytes"),
                tc(tcprop, "generic.heap_size"), tc(tcprop, "tcmalloc.pageheap_free_bytes"),
                tc(tcprop, "tcmalloc.pageheap_unmapped_bytes"));
    } else if (mi) {
        size_t el, us, sy, rss, peak_rss, commit, peak_commit, faults;
        mi(&el, &us, &sy, &rss, &peak_rss, &commit, &peak_commit, &faults);
        hl_line("HL stats name=%s ts=%lld allocator=mimalloc rss_anon=%ld current_commit=%zu peak_commit=%zu "
                "current_rss=%zu", name, ts, hl_rss_anon(), commit, peak_commit, rss);
    } else {
        hl_line("HL stats name=%s ts=%lld allocator=glibc rss_anon=%ld", name, ts, hl_rss_anon());
    }
    const char *pause = getenv("HL_PAUSE_MS");
    usleep((useconds_t)(pause ? atoi(pause) : 300) * 1000);
}

int main(void)
{
    enum { N = 40000 };
    hl_pid();
    mark("start");
    for (int i = 0; i < N; i++) {
        size_t n = 64 + (size_t)(i % 128) * 64;
        char *p = malloc(n);
        if (!p)
            hl_die("malloc");
        memset(p, 0x5a, n);
        keep[i] = p;
    }
    mark("allocated");
    for (int i = 0; i < N; i++)
        if (i % 4) {
            free(keep[i]);
            keep[i] = NULL;
        }
    mark("most_freed");
    for (int i = 0; i < N; i += 4) {
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("all_freed");
    hl_done();
    return 0;
}
