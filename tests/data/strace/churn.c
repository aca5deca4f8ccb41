/* Runs until killed: three threads map, advise and unmap 64 KiB; main maps one page at a time.
 * Used for attach mode (strace -p, then SIGINT to strace, which detaches). */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

static void *churn(void *arg) {
    (void)arg;
    for (;;) {
        void *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        madvise(p, 65536, MADV_DONTNEED);
        munmap(p, 65536);
        usleep(2000);
    }
    return NULL;
}

int main(void) {
    pthread_t t;
    for (int i = 0; i < 3; i++) pthread_create(&t, NULL, churn, NULL);
    for (;;) {
        void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(p, 4096);
        usleep(1000);
    }
}
