/* accounting - glibc's own account of its heap at marked moments, for heapline's accounting tests.
 *
 *   accounting frag        2,000 blocks of 1,100-10,099 B (past the tcache and the fastbins, so
 *                          glibc's mallinfo2 and heapline's chunk model must agree exactly), freed in
 *                          steps that fragment the heap, then all but the highest, then malloc_trim(0)
 *   accounting small       100,000 blocks of 24 B, then every other one freed (tcache and fastbins
 *                          at their defaults; run with GLIBC_TUNABLES=glibc.malloc.tcache_count=0:
 *                          glibc.malloc.mxfast=0 to make them bypass both)
 *   accounting thresholds  glibc's dynamic mmap threshold: 1 MiB mmapped, freed (the threshold
 *                          rises), 1 MiB again (from the heap), 40 MiB freed (no rise), 2 MiB (mmapped)
 *   accounting threads     two threads allocate in their own arenas and free in two steps; each
 *                          mark also prints malloc_info()'s figures per arena (HL arena, below)
 *   accounting pinned      blocks freed below one live block near the top of the heap, then that
 *                          block freed (the heap is trimmed), each state marked
 *   accounting untouched   with the mmap threshold at 64 MiB, 3,000 written blocks of 4,000 B, a
 *                          20 MiB block of which only the first page is written, one block above it;
 *                          every other run of 256 small blocks and the 20 MiB block freed, a pause
 *                          (HL_PAUSE_MS, default 700) for a residency sample, then malloc_trim(0): it
 *                          can give back only the pages that are in RAM
 *
 * Every mark is one line, written without allocating:
 *   HL mark name=<name> ts=<CLOCK_MONOTONIC ns> arena= ordblks= smblks= hblks= hblkhd= fsmblks=
 *      uordblks= fordblks= keepcost= sbrk=0x<hex> rss_anon=<bytes>
 * and where a block went: HL where name=<name> ptr=0x<hex> size=<n> heap=<1 if below sbrk(0)>
 * With HL_SETTLE_MS=<ms> in the environment, each mark is followed by what /proc/self/smaps says
 * (read right after mallinfo2, nothing allocated in between) and then a sleep of that long, so that
 * a recorder's residency sample sees the same state:
 *   HL resident name=<name> heap=<[heap] Anonymous> stack=<[stack] Anonymous> total=<all Anonymous>
 *   HL vma name=<mark> of=<block named by where, still live> start=0x<hex> anon=<its mapping's Anonymous>
 * The marks' times are on the clock heapline's events use, so a test asks for the accounting there.
 */
#include "report.h"

#include <malloc.h>
#include <pthread.h>
#include <time.h>

static void *volatile keep[100000];

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static char smaps[1 << 20];
static struct { const char *name; void *p; } named[16];
static int n_named;

/* The Anonymous bytes of the mapping holding addr (addr 0: the sum of all; heap/stack: by name). */
static long smaps_anon(unsigned long addr, const char *path, unsigned long *start)
{
    long total = 0, anon = -1;
    int mine = 0;
    for (char *line = smaps; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, ':') > strchr(line, ' ')) {
            char *nl = strchr(line, '\n');
            char *name = nl ? nl : line + strlen(line);
            while (name > line && name[-1] != ' ')
                name--;
            mine = path ? (nl && (size_t)(nl - name) == strlen(path) && !strncmp(name, path, strlen(path)))
                        : (addr >= lo && addr < hi);
            if (mine && start)
                *start = lo;
        } else if (!strncmp(line, "Anonymous:", 10)) {
            long kb = strtol(line + 10, NULL, 10) * 1024L;
            total += kb;
            if (mine)
                anon = (anon < 0 ? 0 : anon) + kb;
        }
    }
    return (path || addr) ? (anon < 0 ? 0 : anon) : total;
}

static void read_smaps(void)
{
    int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        hl_die("open smaps");
    size_t off = 0;
    ssize_t n;
    while ((n = read(fd, smaps + off, sizeof smaps - 1 - off)) > 0)
        off += (size_t)n;
    close(fd);
    smaps[off] = '\0';
}

/* malloc_info() of every arena, written to a file opened (and buffered) before the first mark, so
 * that nothing is allocated at a mark; one line per arena:
 *   HL arena name=<mark> nr=<n> system=<system current> rest_count= rest_size= fast_count= fast_size=
 * (rest: the free chunks in the bins and the top; fast: the fastbins) */
static FILE *info;
static char info_buf[1 << 16], info_text[1 << 18];

static void arenas_open(void)
{
    char path[] = "/tmp/hl-malloc-info-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        hl_die("mkstemp");
    unlink(path);
    info = fdopen(fd, "w+");
    if (!info || setvbuf(info, info_buf, _IOFBF, sizeof info_buf))
        hl_die("fdopen");
}

static void arenas_print(const char *name)
{
    rewind(info);
    if (ftruncate(fileno(info), 0) || malloc_info(0, info) || fflush(info))
        hl_die("malloc_info");
    ssize_t n = pread(fileno(info), info_text, sizeof info_text - 1, 0);
    if (n < 0)
        hl_die("pread");
    info_text[n] = '\0';
    for (char *h = strstr(info_text, "<heap nr=\""); h; h = strstr(h + 1, "<heap nr=\"")) {
        int nr = atoi(h + 10);
        size_t fc = 0, fs = 0, rc = 0, rs = 0, sys = 0;
        char *end = strstr(h, "</heap>"), *f = strstr(h, "<total type=\"fast\""), *r = strstr(h, "<total type=\"rest\""),
             *sy = strstr(h, "<system type=\"current\"");
        if (!end || !f || !r || !sy || f > end || r > end || sy > end ||
            sscanf(f, "<total type=\"fast\" count=\"%zu\" size=\"%zu\"", &fc, &fs) != 2 ||
            sscanf(r, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"", &rc, &rs) != 2 ||
            sscanf(sy, "<system type=\"current\" size=\"%zu\"", &sys) != 1)
            hl_die("malloc_info parse");
        hl_line("HL arena name=%s nr=%d system=%zu rest_count=%zu rest_size=%zu fast_count=%zu fast_size=%zu", name, nr,
                sys, rc, rs, fc, fs);
    }
}

static void mark(const char *name)
{
    struct mallinfo2 m = mallinfo2();
    long long ts = now_ns();
    const char *settle = getenv("HL_SETTLE_MS");
    if (settle)
        read_smaps();
    hl_line("HL mark name=%s ts=%lld arena=%zu ordblks=%zu smblks=%zu hblks=%zu hblkhd=%zu fsmblks=%zu "
            "uordblks=%zu fordblks=%zu keepcost=%zu sbrk=0x%lx rss_anon=%ld",
            name, ts, m.arena, m.ordblks, m.smblks, m.hblks, m.hblkhd, m.fsmblks, m.uordblks, m.fordblks,
            m.keepcost, HL_PTR(sbrk(0)), hl_rss_anon());
    if (info)
        arenas_print(name);
    if (!settle)
        return;
    hl_line("HL resident name=%s heap=%ld stack=%ld total=%ld", name, smaps_anon(0, "[heap]", NULL),
            smaps_anon(0, "[stack]", NULL), smaps_anon(0, NULL, NULL));
    for (int i = 0; i < n_named; i++) {
        unsigned long start = 0;
        long anon = smaps_anon(HL_PTR(named[i].p), NULL, &start);
        hl_line("HL vma name=%s of=%s start=0x%lx anon=%ld", name, named[i].name, start, anon);
    }
    usleep((useconds_t)atoi(settle) * 1000);
}

/* Forget a block named by where() before it is freed. */
static void forget(void *p)
{
    for (int i = 0; i < n_named; i++)
        if (named[i].p == p)
            named[i] = named[--n_named];
}

static void *block(size_t n)
{
    char *p = malloc(n);
    if (!p)
        hl_die("malloc");
    memset(p, 0x5a, n); /* resident, and the compiler cannot drop the pair */
    return p;
}

static void where(const char *name, void *p, size_t n)
{
    hl_line("HL where name=%s ptr=0x%lx size=%zu heap=%d", name, HL_PTR(p), n,
            (char *)p < (char *)sbrk(0) ? 1 : 0);
    if (n_named < 16)
        named[n_named++] = (typeof(named[0])){name, p};
}

static void frag(void)
{
    enum { N = 2000 };
    for (int i = 0; i < N; i++)
        keep[i] = block(1100 + (size_t)(i * 7919) % 9000);
    mark("allocated");
    for (int i = 1; i < N - 1; i += 2) { /* every other block: free runs between live ones */
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("every_other_freed");
    for (int i = 0; i < N / 2; i++) { /* the lower half: its runs merge */
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("lower_half_freed");
    for (int i = N / 2; i < N - 1; i++) { /* all but the highest */
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("all_but_last_freed");
    malloc_trim(0);
    mark("trimmed");
    free(keep[N - 1]);
    keep[N - 1] = NULL;
    mark("all_freed");
}

static void small(void)
{
    enum { N = 100000 };
    for (int i = 0; i < N; i++)
        keep[i] = block(24);
    mark("allocated");
    for (int i = 0; i < N; i += 2) {
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("every_other_freed");
    for (int i = 1; i < N; i += 2) {
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("all_freed");
    malloc_trim(0);
    mark("trimmed");
}

static void thresholds(void)
{
    size_t mib = 1 << 20;
    void *a = block(mib);
    where("first_1mib", a, mib);
    mark("first_1mib");
    forget(a);
    free(a); /* an mmapped chunk of at most 32 MiB: the mmap threshold rises to its size */
    mark("first_1mib_freed");
    void *b = block(mib);
    where("second_1mib", b, mib);
    mark("second_1mib");
    void *c = block(40 * mib);
    where("forty_mib", c, 40 * mib);
    forget(c);
    free(c); /* past 32 MiB: no rise */
    mark("forty_mib_freed");
    void *d = block(2 * mib);
    where("two_mib", d, 2 * mib);
    mark("two_mib");
    forget(d);
    free(d);
    forget(b);
    free(b);
    mark("all_freed");
}

static pthread_barrier_t parked, resumed;

static void *arena_thread(void *arg)
{
    long t = (long)arg;
    enum { N = 300 };
    void *mine[N];
    for (int i = 0; i < N; i++)
        mine[i] = block(2000 + (size_t)((i + t) * 7919) % 20000);
    for (int i = 0; i < N - 1; i += 2) /* every other: free runs in the thread's heap */
        free(mine[i]);
    pthread_barrier_wait(&parked); /* the main thread marks now */
    pthread_barrier_wait(&resumed);
    for (int i = 1; i < N; i += 2)
        free(mine[i]);
    pthread_barrier_wait(&parked);
    pthread_barrier_wait(&resumed);
    return NULL;
}

static void threads(void)
{
    enum { T = 2 };
    pthread_t th[T];
    void *mine = block(50000);
    arenas_open();
    pthread_barrier_init(&parked, NULL, T + 1);
    pthread_barrier_init(&resumed, NULL, T + 1);
    for (long t = 0; t < T; t++)
        if (pthread_create(&th[t], NULL, arena_thread, (void *)t))
            hl_die("pthread_create");
    pthread_barrier_wait(&parked);
    mark("threads_half_freed");
    pthread_barrier_wait(&resumed);
    pthread_barrier_wait(&parked);
    mark("threads_all_freed");
    pthread_barrier_wait(&resumed);
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    mark("threads_joined");
    free(mine);
    mark("all_freed");
}

static void pinned(void)
{
    enum { N = 600 };
    for (int i = 0; i < N; i++)
        keep[i] = block(4000 + (size_t)(i % 5) * 1000);
    void *top = block(9000);
    mark("allocated");
    for (int i = 0; i < N; i++) {
        free(keep[i]);
        keep[i] = NULL;
    }
    mark("pinned");
    free(top);
    mark("unpinned");
}

static void untouched(void)
{
    enum { N = 3000, RUN = 256 };
    size_t big = 20 << 20;
    if (!mallopt(M_MMAP_THRESHOLD, 64 << 20))
        hl_die("mallopt");
    for (int i = 0; i < N; i++)
        keep[i] = block(4000);
    char *p = malloc(big);
    if (!p)
        hl_die("malloc");
    memset(p, 0x5a, 4096); /* its first page only: the rest is never in RAM */
    where("big", p, big);
    void *above = block(9000);
    mark("allocated");
    for (int i = 0; i < N; i++)
        if ((i / RUN) % 2 == 0) {
            free(keep[i]);
            keep[i] = NULL;
        }
    forget(p);
    free(p);
    const char *pause = getenv("HL_PAUSE_MS");
    usleep((useconds_t)(pause ? atoi(pause) : 700) * 1000);
    mark("freed");
    malloc_trim(0);
    mark("trimmed");
    free(above);
    for (int i = 0; i < N; i++)
        free(keep[i]);
    mark("all_freed");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "frag";
    hl_pid();
    if (!strcmp(mode, "frag"))
        frag();
    else if (!strcmp(mode, "small"))
        small();
    else if (!strcmp(mode, "thresholds"))
        thresholds();
    else if (!strcmp(mode, "threads"))
        threads();
    else if (!strcmp(mode, "pinned"))
        pinned();
    else if (!strcmp(mode, "untouched"))
        untouched();
    else
        hl_die("mode");
    hl_done();
    return 0;
}
