/* Single-threaded: every memory syscall with a wide spread of flags, values and failures. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/mman.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MAP_UNINITIALIZED
#define MAP_UNINITIALIZED 0x4000000
#endif

static long sc(long nr, long a, long b, long c, long d, long e, long f) {
    return syscall(nr, a, b, c, d, e, f);
}

int main(void) {
    const long pg = 4096;
    long brk0 = sc(SYS_brk, 0, 0, 0, 0, 0, 0);
    sc(SYS_brk, brk0 + 3 * pg, 0, 0, 0, 0, 0);
    sc(SYS_brk, brk0 + pg, 0, 0, 0, 0, 0);
    sc(SYS_brk, 1, 0, 0, 0, 0, 0); /* below start_brk: returns the current break */

    long a = sc(SYS_mmap, 0, 16 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sc(SYS_mmap, 0, pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    sc(SYS_mmap, 0, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    sc(SYS_mmap, 0, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_GROWSDOWN, -1, 0);
    sc(SYS_mmap, 0, 2 * pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_NONBLOCK, -1, 0);
    sc(SYS_mmap, 0, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    sc(SYS_mmap, 0, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_UNINITIALIZED, -1, 0);
    sc(SYS_mmap, 0, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
    sc(SYS_mmap, 0, 1 << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_1GB, -1, 0);
    sc(SYS_mmap, 0, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_ANONYMOUS | MAP_SYNC, -1, 0);
    sc(SYS_mmap, a, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    sc(SYS_mmap, a + 4 * pg, pg, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    sc(SYS_mmap, 0, 1L << 46, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sc(SYS_mmap, 0, pg, PROT_READ | 0x10, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sc(SYS_mmap, 0, pg, PROT_READ, 0x20, -1, 0);
    sc(SYS_mmap, 0, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | 0x1000000, -1, 0);
    sc(SYS_mmap, 0, pg, PROT_READ, MAP_PRIVATE, 12345, 0);
    sc(SYS_mmap, 0, pg, PROT_READ, 0x5 | MAP_ANONYMOUS, -1, 0);

    int fd = open("/proc/self/exe", O_RDONLY);
    sc(SYS_mmap, 0, 3 * pg, PROT_READ, MAP_PRIVATE | MAP_DENYWRITE | MAP_EXECUTABLE, fd, 0);
    sc(SYS_mmap, 0, pg, PROT_READ, MAP_SHARED, fd, pg);
    sc(SYS_mmap, 0, pg, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FILE, fd, 2 * pg);
    close(fd);

    sc(SYS_mprotect, a, pg, PROT_READ, 0, 0, 0);
    sc(SYS_mprotect, a, pg, PROT_NONE, 0, 0, 0);
    sc(SYS_mprotect, a, pg, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0);
    sc(SYS_mprotect, a, pg, PROT_READ | PROT_SEM, 0, 0, 0);
    sc(SYS_mprotect, a + 1, pg, PROT_READ, 0, 0, 0);
    sc(SYS_mprotect, a, pg, PROT_READ | PROT_GROWSDOWN, 0, 0, 0);
    sc(SYS_mprotect, a, pg, PROT_READ | 0x40, 0, 0, 0);
    sc(SYS_mprotect, a, pg, 0x10, 0, 0, 0);

    for (long adv = 0; adv <= 25; adv++) {
        sc(SYS_madvise, a + 8 * pg, 2 * pg, adv, 0, 0, 0);
    }
    sc(SYS_madvise, a + 1, pg, MADV_HWPOISON, 0, 0, 0);
    sc(SYS_madvise, a + 1, pg, MADV_SOFT_OFFLINE, 0, 0, 0);
    sc(SYS_madvise, a, pg, 99, 0, 0, 0);
    sc(SYS_madvise, a, pg, 102, 0, 0, 0);

    long b = sc(SYS_mremap, a + 8 * pg, 2 * pg, 64 * pg, MREMAP_MAYMOVE, 0, 0);
    sc(SYS_mremap, b, 64 * pg, 32 * pg, 0, 0, 0);
    long dst = sc(SYS_mmap, 0, 8 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sc(SYS_mremap, b, 32 * pg, 8 * pg, MREMAP_MAYMOVE | MREMAP_FIXED, dst, 0);
    long c = sc(SYS_mmap, 0, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sc(SYS_mremap, c, 4 * pg, 4 * pg, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0, 0);
    sc(SYS_mremap, c, 4 * pg, 8 * pg, 0, 0, 0);
    sc(SYS_mremap, c + 1, pg, 2 * pg, MREMAP_MAYMOVE, 0, 0);
    sc(SYS_mremap, c, pg, 2 * pg, 8, 0, 0);
    sc(SYS_mremap, c, pg, 2 * pg, MREMAP_MAYMOVE | 8, 0, 0);

    sc(SYS_munmap, a, 16 * pg, 0, 0, 0, 0);
    sc(SYS_munmap, a + 1, pg, 0, 0, 0, 0);
    sc(SYS_munmap, dst, 8 * pg, 0, 0, 0, 0);
    sc(SYS_munmap, 0, 0, 0, 0, 0, 0);
    sc(SYS_exit_group, 5, 0, 0, 0, 0, 0);
    return 0;
}
