/* forker - a fork whose child grows its own heap and exits 3, then a thread that maps and
 * unmaps a region.
 *
 * Output order is fixed: the child waits on a pipe until the parent has printed
 * "HL fork", and the parent prints nothing else until the child has been reaped.
 *
 *   HL pid pid=P
 *   HL brk phase=start sbrk=...            parent
 *   HL fork child=C                        parent
 *   HL brk phase=child-alloc sbrk=...      child (after 1 MiB in 1000-byte mallocs)
 *   HL mmap addr=... len=65536 prot=3 flags=34   child
 *   HL exit code=3                         child, then _exit(3)
 *   HL wait status=3                       parent (the child's exit code)
 *   HL thread tid=T                        thread
 *   HL mmap addr=... len=16384 ...         thread
 *   HL munmap addr=... len=16384           thread
 *   HL brk phase=end sbrk=...              parent, after join
 *   HL done
 */
#define _GNU_SOURCE
#include "report.h"

#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define CHILD_BYTES (1024 * 1024)
#define BLOCK 1000
#define NBLOCKS ((CHILD_BYTES + BLOCK - 1) / BLOCK) /* 1049 blocks >= 1 MiB */
#define CHILD_MAP (64 * 1024)
#define CHILD_CODE 3

static char *volatile blocks[NBLOCKS];

static void child(void)
{
    for (int i = 0; i < NBLOCKS; i++) {
        char *p = malloc(BLOCK);
        if (!p)
            hl_die("malloc");
        memset(p, i & 0xff, BLOCK);
        blocks[i] = p;
    }
    hl_brk("child-alloc");

    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    char *m = mmap(NULL, CHILD_MAP, prot, flags, -1, 0);
    if (m == MAP_FAILED)
        hl_die("mmap(child)");
    hl_mmap(m, CHILD_MAP, prot, flags);
    *(volatile char *)m = 1;

    hl_exit(CHILD_CODE);
    _exit(CHILD_CODE);
}

static void *thread_main(void *arg)
{
    (void)arg;
    hl_thread(gettid());
    size_t len = 4 * (size_t)sysconf(_SC_PAGESIZE);
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    char *m = mmap(NULL, len, prot, flags, -1, 0);
    if (m == MAP_FAILED)
        hl_die("mmap(thread)");
    hl_mmap(m, len, prot, flags);
    *(volatile char *)m = 1;
    if (munmap(m, len) != 0)
        hl_die("munmap(thread)");
    hl_munmap(m, len);
    return NULL;
}

int main(void)
{
    hl_pid();
    hl_brk("start");

    hl_reap(hl_fork_gated(child));

    pthread_t t;
    int err = pthread_create(&t, NULL, thread_main, NULL);
    if (err) {
        errno = err;
        hl_die("pthread_create");
    }
    err = pthread_join(t, NULL);
    if (err) {
        errno = err;
        hl_die("pthread_join");
    }

    hl_brk("end");
    hl_done();
    return 0;
}
