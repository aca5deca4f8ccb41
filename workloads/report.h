/* report.h - heapline workload report lines, without stdio and without malloc.
 *
 * Every line is formatted with vsnprintf into a buffer on the stack and written to fd 1
 * with a single write(2), so lines from different threads/processes never interleave and
 * the heap (and therefore the program break) is never touched by reporting.
 *
 * Grammar (one fact per line, parsed by the tests with a regex):
 *   line   := "HL " verb { " " key "=" value } "\n"
 *   address values are "0x" + lowercase hex, sizes/ints are decimal.
 */
#ifndef HEAPLINE_REPORT_H
#define HEAPLINE_REPORT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* vsnprintf only: it formats into our buffer and never allocates here */
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define HL_LINE_MAX 256

__attribute__((format(printf, 1, 2))) static inline void hl_line(const char *fmt, ...)
{
    char buf[HL_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        _exit(120);
    if ((size_t)n > sizeof buf - 2)
        n = (int)(sizeof buf - 2);
    buf[n++] = '\n';
    size_t off = 0;
    while (off < (size_t)n) { /* a pipe write of < PIPE_BUF bytes is atomic; loop is for EINTR */
        ssize_t w = write(1, buf + off, (size_t)n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(121);
        }
        off += (size_t)w;
    }
}

#define HL_PTR(p) ((unsigned long)(uintptr_t)(p))

static inline void hl_pid(void) { hl_line("HL pid pid=%ld", (long)getpid()); }
static inline void hl_ready(void) { hl_line("HL ready"); }
static inline void hl_done(void) { hl_line("HL done"); }

/* The break right now; sbrk(0) reads glibc's cached break and makes no syscall. */
static inline void hl_brk(const char *phase)
{
    hl_line("HL brk phase=%s sbrk=0x%lx", phase, HL_PTR(sbrk(0)));
}

static inline void hl_mmap(const void *addr, size_t len, int prot, int flags)
{
    hl_line("HL mmap addr=0x%lx len=%zu prot=%d flags=%d", HL_PTR(addr), len, prot, flags);
}

static inline void hl_munmap(const void *addr, size_t len)
{
    hl_line("HL munmap addr=0x%lx len=%zu", HL_PTR(addr), len);
}

static inline void hl_madvise(const void *addr, size_t len, int advice)
{
    hl_line("HL madvise addr=0x%lx len=%zu advice=%d", HL_PTR(addr), len, advice);
}

static inline void hl_mprotect(const void *addr, size_t len, int prot)
{
    hl_line("HL mprotect addr=0x%lx len=%zu prot=%d", HL_PTR(addr), len, prot);
}

static inline void hl_mremap(const void *old, size_t oldlen, const void *new_, size_t newlen, int flags)
{
    hl_line("HL mremap old=0x%lx oldlen=%zu new=0x%lx newlen=%zu flags=%d", HL_PTR(old), oldlen,
            HL_PTR(new_), newlen, flags);
}

static inline void hl_fork(pid_t child) { hl_line("HL fork child=%ld", (long)child); }
static inline void hl_thread(pid_t tid) { hl_line("HL thread tid=%ld", (long)tid); }
static inline void hl_wait(int status) { hl_line("HL wait status=%d", status); }
static inline void hl_exit(int code) { hl_line("HL exit code=%d", code); }

/* Report a failed call on fd 2 (no stdio) and exit with a distinctive code. */
static inline void hl_die(const char *what)
{
    char buf[HL_LINE_MAX];
    int n = snprintf(buf, sizeof buf, "heapline workload: %s failed: errno=%d\n", what, errno);
    if (n > 0) {
        ssize_t w = write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        (void)w;
    }
    _exit(125);
}

/* fork(); the child runs child() (which must not return) only once the parent has printed
 * "HL fork", so the report lists the fork before anything the child says. Returns the child's pid. */
static inline pid_t hl_fork_gated(void (*child)(void))
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        hl_die("pipe2");
    pid_t pid = fork();
    if (pid < 0)
        hl_die("fork");
    if (pid == 0) {
        close(fds[1]);
        char c;
        ssize_t r;
        do
            r = read(fds[0], &c, 1);
        while (r < 0 && errno == EINTR);
        close(fds[0]);
        child();
        _exit(0);
    }
    close(fds[0]);
    hl_fork(pid);
    if (write(fds[1], "g", 1) != 1)
        hl_die("write(pipe)");
    close(fds[1]);
    return pid;
}

/* Wait for a child and report how it ended ("HL wait", 128 + signal when killed). */
static inline void hl_reap(pid_t pid)
{
    int st;
    pid_t w;
    do
        w = waitpid(pid, &st, 0);
    while (w < 0 && errno == EINTR);
    if (w != pid)
        hl_die("waitpid");
    hl_wait(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* RssAnon of /proc/self/status in bytes, read with read(2) into the stack (no stdio, no malloc). */
static inline long hl_rss_anon(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        hl_die("open /proc/self/status");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        hl_die("read /proc/self/status");
    buf[n] = '\0';
    const char *p = strstr(buf, "RssAnon:");
    if (!p)
        hl_die("no RssAnon");
    return strtol(p + 8, NULL, 10) * 1024L;
}

/* "HL rss anon=<bytes>" */
static inline void hl_rss(void) { hl_line("HL rss anon=%ld", hl_rss_anon()); }



/* ---- allocator workloads (alloc_calls, malloc_churn) ---- */

/* Block until one byte (or EOF) arrives on stdin, so a tracer can attach first. */
static inline void hl_stdin_wait(void)
{
    char c;
    for (;;) {
        ssize_t r = read(0, &c, 1);
        if (r >= 0)
            return;
        if (errno != EINTR)
            hl_die("read(stdin)");
    }
}

/* "HL loop ns=<dec>": CLOCK_MONOTONIC nanoseconds spent in a benchmark loop. */
static inline void hl_loop(long long ns) { hl_line("HL loop ns=%lld", ns); }

/* "HL marker start|end ptr=0x..": the marker malloc (already freed) returned ptr. */
static inline void hl_marker(const char *which, const void *ptr)
{
    hl_line("HL marker %s ptr=0x%lx", which, HL_PTR(ptr));
}

/* "HL realloc old=0x.. new=0x.. moved=0|1 size=N": realloc(old, size) returned new.
 * moved=1 iff old and new are both non-NULL and differ. */
static inline void hl_realloc(const void *old, const void *new_, size_t size)
{
    int moved = old != NULL && new_ != NULL && old != new_;
    hl_line("HL realloc old=0x%lx new=0x%lx moved=%d size=%zu", HL_PTR(old), HL_PTR(new_), moved, size);
}

static inline void hl_posix_memalign(const void *ptr, size_t align, size_t size)
{
    hl_line("HL posix_memalign ptr=0x%lx align=%zu size=%zu", HL_PTR(ptr), align, size);
}

static inline void hl_malloc_trim(size_t pad, int ret) { hl_line("HL malloc_trim pad=%zu ret=%d", pad, ret); }

static inline void hl_mallopt(int param, int value, int ret)
{
    hl_line("HL mallopt param=%d value=%d ret=%d", param, value, ret);
}

/* "HL block ptr=0x.. size=N": one block the program still holds (requested size). */
static inline void hl_block(const void *ptr, size_t size)
{
    hl_line("HL block ptr=0x%lx size=%zu", HL_PTR(ptr), size);
}

static inline void hl_live(size_t bytes, size_t blocks)
{
    hl_line("HL live bytes=%zu blocks=%zu", bytes, blocks);
}

/* Allocator call counts, one field per function the program called itself. */
struct hl_alloc_counts {
    unsigned long malloc, calloc, realloc, reallocarray, free, posix_memalign, aligned_alloc, memalign,
        valloc, pvalloc, malloc_trim, mallopt;
};

#define HL_ALLOC_FMT                                                                                   \
    "malloc=%lu calloc=%lu realloc=%lu reallocarray=%lu free=%lu posix_memalign=%lu "                  \
    "aligned_alloc=%lu memalign=%lu valloc=%lu pvalloc=%lu malloc_trim=%lu mallopt=%lu"
#define HL_ALLOC_ARGS(c)                                                                               \
    (c)->malloc, (c)->calloc, (c)->realloc, (c)->reallocarray, (c)->free, (c)->posix_memalign,         \
        (c)->aligned_alloc, (c)->memalign, (c)->valloc, (c)->pvalloc, (c)->malloc_trim, (c)->mallopt

/* "HL alloc malloc=N ... mallopt=N": totals over all tasks. */
static inline void hl_alloc(const struct hl_alloc_counts *c) { hl_line("HL alloc " HL_ALLOC_FMT, HL_ALLOC_ARGS(c)); }

/* "HL calls tid=N malloc=N ... mallopt=N": the same counts for one task (thread). */
static inline void hl_calls(pid_t tid, const struct hl_alloc_counts *c)
{
    hl_line("HL calls tid=%ld " HL_ALLOC_FMT, (long)tid, HL_ALLOC_ARGS(c));
}


#endif
