/* leader_exit - a process whose main thread has exited while another thread works on.
 *
 * The main thread starts a worker and calls pthread_exit: the thread-group leader becomes a zombie
 * (its /proc/PID/maps reads empty) while the process lives on in the worker. The worker says
 * "HL ready", waits for one byte on stdin, then makes N mallocs of SIZE bytes, frees them, maps
 * and unmaps one anonymous region, and reports each fact:
 *   HL pid pid=P
 *   HL ready
 *   HL thread tid=T
 *   HL mallocs n=N size=SIZE
 *   HL mmap addr=... len=... / HL munmap ...
 *   HL done
 * Usage: leader_exit [N [SIZE]]
 */
#include "report.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static unsigned long n_blocks = 1000;
static size_t block_size = 200;

static void *worker(void *arg)
{
    (void)arg;
    usleep(100 * 1000); /* the main thread has exited by now */
    hl_ready();
    char c;
    if (read(0, &c, 1) != 1)
        _exit(3);
    hl_line("HL thread tid=%ld", (long)syscall(SYS_gettid));
    void **blocks = malloc(n_blocks * sizeof *blocks);
    if (!blocks)
        _exit(4);
    for (unsigned long i = 0; i < n_blocks; i++) {
        blocks[i] = malloc(block_size);
        if (!blocks[i])
            _exit(4);
        memset(blocks[i], (int)i, block_size); /* used: the compiler may not drop the pair */
    }
    unsigned long sum = 0;
    for (unsigned long i = 0; i < n_blocks; i++) {
        sum += ((unsigned char *)blocks[i])[block_size - 1];
        free(blocks[i]);
    }
    free(blocks);
    hl_line("HL mallocs n=%lu size=%zu sum=%lu", n_blocks, block_size, sum);
    size_t len = 1 << 20;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        _exit(5);
    hl_mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    memset(p, 1, len);
    munmap(p, len);
    hl_munmap(p, len);
    hl_done();
    exit(0);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        n_blocks = strtoul(argv[1], NULL, 10);
    if (argc > 2)
        block_size = strtoul(argv[2], NULL, 10);
    hl_pid();
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL))
        return 2;
    pthread_exit(NULL);
}
